//! EKS access entries of a role: whether a custom node role may join.

use futures::future;

use super::ACCESS_ENTRY_PAGE;
use crate::aws::errors::aws_error;
use crate::error::{Error, Result};
use crate::model::AccessEntry;

/// The access entries of the cluster whose principal is the IAM role
/// `role` (a name or an ARN; matched by name, since entries carry the
/// role's ARN without its path), each with its type.
pub async fn read_access_entries_for(eks: &aws_sdk_eks::Client, cluster: &str, role: &str) -> Result<Vec<AccessEntry>> {
    let principals: Vec<String> = eks
        .list_access_entries()
        .cluster_name(cluster)
        .into_paginator()
        .page_size(ACCESS_ENTRY_PAGE)
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| aws_error("ListAccessEntries", e))?;
    let wanted = crate::nodeclass::role_name(role);
    let matching =
        principals.into_iter().filter(|arn| arn.contains(":role/") && crate::nodeclass::role_name(arn) == wanted);
    let described = matching.map(|arn| async move {
        let out = eks
            .describe_access_entry()
            .cluster_name(cluster)
            .principal_arn(&arn)
            .send()
            .await
            .map_err(|e| aws_error("DescribeAccessEntry", e))?;
        let kind = out.access_entry().and_then(|e| e.r#type()).unwrap_or_default().to_string();
        Ok::<_, Error>(AccessEntry { principal_arn: arn, kind })
    });
    future::try_join_all(described).await
}
