//! The VPC's route tables, their routes and subnet associations.

use super::{ROUTE_TABLE_PAGE, filter};
use crate::aws::errors::aws_error;
use crate::error::Result;
use crate::model::{Route, RouteTable};

pub(crate) async fn read_route_tables(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<Vec<RouteTable>> {
    let tables: Vec<aws_sdk_ec2::types::RouteTable> = ec2
        .describe_route_tables()
        .filters(filter("vpc-id", vpc_id))
        .into_paginator()
        .page_size(ROUTE_TABLE_PAGE)
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| aws_error("DescribeRouteTables", e))?;
    Ok(tables
        .into_iter()
        .map(|t| {
            let associations = t.associations();
            RouteTable {
                id: t.route_table_id().unwrap_or_default().to_string(),
                is_main: associations.iter().any(|a| a.main() == Some(true)),
                subnet_ids: associations.iter().filter_map(|a| a.subnet_id()).map(String::from).collect(),
                routes: t
                    .routes()
                    .iter()
                    .map(|r| Route {
                        destination: r.destination_cidr_block().and_then(|d| d.parse().ok()),
                        target: [
                            r.gateway_id(),
                            r.nat_gateway_id(),
                            r.transit_gateway_id(),
                            r.vpc_peering_connection_id(),
                            r.network_interface_id(),
                            r.instance_id(),
                            r.local_gateway_id(),
                            r.carrier_gateway_id(),
                            r.egress_only_internet_gateway_id(),
                            r.core_network_arn(),
                        ]
                        .into_iter()
                        .flatten()
                        .next()
                        .unwrap_or("unknown")
                        .to_string(),
                    })
                    .collect(),
            }
        })
        .collect())
}
