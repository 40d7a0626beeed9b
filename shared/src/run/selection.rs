//! Which clusters an event concerns. A deployment manages the clusters
//! CLUSTER_NAME lists and, with CLUSTER_OPT_IN_TAG, every cluster in its
//! account and Region that carries that tag (docs/deploy.md, "Many
//! clusters"). A scheduled check covers them all; an alarm or a manual event
//! names one, which must be managed; an allocation failure is traced to the
//! cluster in the failing ENI's VPC.

use futures::{StreamExt, TryStreamExt, stream};

use crate::aws::inventory;
use crate::cluster::ClusterError;
use crate::error::{Error, Result};
use crate::run::context::Context;
use crate::trigger::{Trigger, TriggerKind};

/// How the deployment's settings judge a cluster an event names, before any
/// tag is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// Listed in CLUSTER_NAME, or no list and no opt-in tag (any named cluster).
    Managed,
    /// Managed only if it carries CLUSTER_OPT_IN_TAG.
    IfTagged,
    /// Not listed, and there is no tag that could opt it in.
    Unmanaged,
}

pub fn judge_named(config: &crate::config::Config, cluster: &str) -> Named {
    if config.clusters.iter().any(|c| c == cluster) {
        Named::Managed
    } else if config.cluster_opt_in_tag.is_some() {
        Named::IfTagged
    } else if config.clusters.is_empty() {
        Named::Managed
    } else {
        Named::Unmanaged
    }
}

/// What an event concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These clusters, sorted.
    Clusters(Vec<String>),
    /// None of this deployment's clusters, and that is normal: no cluster
    /// opts in yet (a StackSet reaches accounts before their clusters opt
    /// in), or an allocation failure happened in another VPC (the CloudTrail
    /// rule sees the whole account). A quiet no-op, not a failure to tell.
    Nothing(String),
}

/// The clusters `trigger` concerns.
pub async fn clusters_for(ctx: &Context, trigger: &Trigger) -> Result<Selection> {
    if let Some(named) = &trigger.cluster {
        return Ok(Selection::Clusters(vec![accept_named(ctx, named).await?]));
    }
    if trigger.kind == TriggerKind::Schedule {
        let managed = managed_clusters(ctx).await?;
        return match (&ctx.config.cluster_opt_in_tag, managed.is_empty()) {
            (Some(tag), true) => Ok(Selection::Nothing(format!("no cluster is listed or tagged {tag} yet"))),
            (None, true) => Err(Error::NoCluster),
            (_, false) => Ok(Selection::Clusters(managed)),
        };
    }
    if let [only] = ctx.config.clusters.as_slice()
        && ctx.config.cluster_opt_in_tag.is_none()
    {
        return Ok(Selection::Clusters(vec![only.clone()]));
    }
    let managed = managed_clusters(ctx).await?;
    // The failing ENI's VPC tells which cluster, if any, is concerned.
    if let Some(eni) = &trigger.network_interface_id
        && let Some((_, vpc_id)) = inventory::locate_interface(&ctx.aws.ec2, eni).await?
    {
        for cluster in &managed {
            let description = ctx.clusters.describe(cluster).await?;
            if description.vpc_id.as_deref() == Some(vpc_id.as_str()) {
                return Ok(Selection::Clusters(vec![cluster.clone()]));
            }
        }
        if ctx.config.cluster_opt_in_tag.is_some() {
            return Ok(Selection::Nothing(format!(
                "the failing interface {eni} is in {vpc_id}, where no cluster this deployment manages is"
            )));
        }
    }
    if let [only] = managed.as_slice() {
        return Ok(Selection::Clusters(vec![only.clone()]));
    }
    if managed.is_empty() {
        return Err(no_cluster(ctx));
    }
    Err(Error::invalid_event(format!(
        "the event names no cluster and this deployment manages several ({}); pass \"clusterName\"",
        managed.join(", ")
    )))
}

fn no_cluster(ctx: &Context) -> Error {
    match &ctx.config.cluster_opt_in_tag {
        Some(tag) => Error::invalid_event(format!(
            "the event names no cluster and no cluster in the account and Region is listed or tagged {tag}; pass \"clusterName\""
        )),
        None => Error::NoCluster,
    }
}

/// The cluster an event names, if this deployment manages it.
async fn accept_named(ctx: &Context, cluster: &str) -> Result<String> {
    let managed = match judge_named(&ctx.config, cluster) {
        Named::Managed => true,
        Named::Unmanaged => false,
        Named::IfTagged => {
            let description = ctx.clusters.describe(cluster).await?;
            opts_in(ctx, &description.tags)
        }
    };
    if managed {
        Ok(cluster.to_string())
    } else {
        Err(Error::UnmanagedCluster { cluster: cluster.to_string(), how: ctx.config.how_to_manage() })
    }
}

fn opts_in(ctx: &Context, tags: &std::collections::BTreeMap<String, String>) -> bool {
    ctx.config
        .cluster_opt_in_tag
        .as_ref()
        .is_some_and(|tag| tag.is_on(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
}

/// Every managed cluster: the listed ones and those that carry the opt-in
/// tag, sorted. Each unlisted cluster is described (at most
/// MAX_CONCURRENT_CLUSTERS at once; the answers are cached for the run).
/// A cluster that cannot be described is kept, so that its run fails with
/// the reason and reaches the report; one deleted meanwhile is skipped.
pub async fn managed_clusters(ctx: &Context) -> Result<Vec<String>> {
    let mut managed = ctx.config.clusters.clone();
    if ctx.config.cluster_opt_in_tag.is_some() {
        let names = ctx.clusters.list_cluster_names().await?;
        let unlisted: Vec<String> = names.into_iter().filter(|n| !managed.contains(n)).collect();
        let tagged: Vec<Option<String>> = stream::iter(unlisted)
            .map(|name| async move {
                match ctx.clusters.describe(&name).await {
                    Ok(description) => Ok(opts_in(ctx, &description.tags).then_some(name)),
                    Err(ClusterError::NoSuchCluster { .. }) => Ok(None),
                    Err(error) if error.is_retryable() => Err(error),
                    Err(error) => {
                        tracing::warn!(cluster = %name, %error, "cannot tell whether the cluster opts in");
                        Ok(Some(name))
                    }
                }
            })
            .buffer_unordered(ctx.config.max_concurrent_clusters)
            .try_collect()
            .await?;
        managed.extend(tagged.into_iter().flatten());
    }
    managed.sort();
    managed.dedup();
    Ok(managed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::from_pairs(pairs).unwrap()
    }

    #[test]
    fn a_named_cluster_is_judged_by_list_then_tag() {
        let open = config(&[]);
        assert_eq!(judge_named(&open, "any"), Named::Managed, "no list, no tag: whatever the event names");

        let listed = config(&[("CLUSTER_NAME", "a,b")]);
        assert_eq!(judge_named(&listed, "b"), Named::Managed);
        assert_eq!(judge_named(&listed, "c"), Named::Unmanaged);

        let tagged = config(&[("CLUSTER_NAME", "a"), ("CLUSTER_OPT_IN_TAG", "headroom.io/enabled=true")]);
        assert_eq!(judge_named(&tagged, "a"), Named::Managed, "listed clusters need no tag");
        assert_eq!(judge_named(&tagged, "c"), Named::IfTagged);

        let only_tag = config(&[("CLUSTER_OPT_IN_TAG", "headroom.io/enabled=true")]);
        assert_eq!(judge_named(&only_tag, "c"), Named::IfTagged, "a tag setting closes the open door");
    }
}
