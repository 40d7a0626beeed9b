//! Reads one cluster's world into a [`NetworkSnapshot`]: its description
//! (DescribeCluster, once per run, through [`ClusterAccess`]), its network
//! ([`aws::inventory`]), its NodeClasses and NodePools ([`cluster`]), and,
//! when a custom node role is in play, that role's EKS access entries.
//!
//! After the description, the network and the Kubernetes API are read side
//! by side. What depends
//! on both comes after: the CIDR reservations of node subnets the first
//! round did not cover (usually none: they are the cluster's subnets or
//! headroom's), and the access entries of the NodeClass's role.
//!
//! [`aws::inventory`]: crate::aws::inventory
//! [`cluster`]: crate::cluster
//! [`ClusterAccess`]: crate::cluster::ClusterAccess

use std::sync::Arc;

use futures::future;

use crate::aws::inventory::{self, Depth};
use crate::cluster::ClusterDescription;
use crate::error::{Error, Result};
use crate::model::{ClusterApi, NetworkSnapshot};
use crate::node_subnets::node_subnets;
use crate::nodeclass;
use crate::run::context::Context;

/// A snapshot, and why the cluster's API could not be read if it could not.
pub struct Reading {
    pub description: Arc<ClusterDescription>,
    pub snapshot: NetworkSnapshot,
    /// The cluster's API failed: capacity fell back to the cluster's own
    /// subnets (the snapshot says so), and nothing may be planned from it.
    pub cluster_api_error: Option<Error>,
}

/// Reads the cluster: its description (cached by the process), then
/// everything else.
pub async fn read(ctx: &Context, cluster: &str, depth: Depth) -> Result<Reading> {
    let description = ctx.clusters.describe(cluster).await?;
    let info = &*description;
    let network = inventory::read_network(&ctx.aws.ec2, info, &ctx.config, depth);
    let objects = ctx.clusters.with_api(cluster, |api| async move { api.read().await });
    let (network, objects) = future::join(network, objects).await;
    let (network, mut occupancy) = network?;
    if info.vpc_id.is_none() {
        ctx.clusters.learn_vpc(cluster, &network.vpc.id).await;
    }

    let (cluster_api, cluster_api_error) = match objects {
        Ok(objects) => (ClusterApi::Read(objects), None),
        Err(error) => {
            tracing::warn!(error = %error, "the cluster's API could not be read");
            (ClusterApi::Unreadable { reason: error.to_string() }, Some(Error::from(error)))
        }
    };
    let role = cluster_api
        .objects()
        .and_then(|objects| nodeclass::managed_node_role(objects, &ctx.config))
        .filter(|role| nodeclass::needs_access_entry(role, info.node_role_arn.as_deref()))
        .map(str::to_owned);
    let region = ctx.aws.region();
    let mut snapshot = network.into_snapshot(&region, info, cluster_api, None);

    let access_entries = async {
        match &role {
            Some(role) => inventory::read_access_entries_for(&ctx.aws.eks, cluster, role).await.map(Some),
            None => Ok(None),
        }
    };
    let reservations = async {
        if depth == Depth::WithCapacity {
            let needed = node_subnets(&snapshot, &ctx.config).ids();
            occupancy.read_reservations(&ctx.aws.ec2, needed.iter().map(String::as_str)).await?;
        }
        Ok::<_, Error>(())
    };
    let (access_entries, ()) = future::try_join(access_entries, reservations).await?;
    occupancy.apply(&mut snapshot.subnets);
    snapshot.node_role_access_entries = access_entries;
    Ok(Reading { description, snapshot, cluster_api_error })
}
