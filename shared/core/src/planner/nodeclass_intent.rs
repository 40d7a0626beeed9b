//! What the NodeClass and NodePool must become so that nodes use the new
//! subnets: extend, create or refuse, and the node role they launch with.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::Ipv4Net;

use crate::model::AutoModeObjects;
use crate::nodeclass::{self, Extension, NewNodeClassSources, SelectorTarget};
use crate::plan::{NodeClassIntent, Refusal, RefusalCode, Step};

use super::{Planner, refuse};

impl Planner<'_> {
    pub(super) fn nodeclass_steps(
        &self,
        objects: &AutoModeObjects,
        placements: &[(String, Ipv4Net)],
    ) -> Result<Vec<Step>, Refusal> {
        let config = self.config;
        let cluster = &self.snapshot.cluster.name;
        let managed_tags: BTreeMap<String, String> = [(config.managed_tag_key.clone(), cluster.clone())].into();
        let mut targets: Vec<SelectorTarget> = self
            .managed_subnets
            .iter()
            .map(|s| SelectorTarget { id: Some(s.id.clone()), tags: s.tags.clone() })
            .collect();
        targets.extend(placements.iter().map(|_| SelectorTarget { id: None, tags: managed_tags.clone() }));
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let intent = NodeClassIntent {
            mode: config.subnet_mode,
            term: nodeclass::managed_term(&config.managed_tag_key, cluster),
            managed_tags,
        };
        let name = &config.nodeclass_name;
        // Config refuses it too; this keeps the planner safe on its own.
        if name == nodeclass::DEFAULT_NODECLASS {
            return Err(refuse(
                RefusalCode::NodeClassUnextendable,
                "the `default` NodeClass is managed by EKS and never modified",
            ));
        }

        let mut steps = Vec::new();
        let node_terms = match objects.nodeclass(name) {
            Some(current) => {
                match nodeclass::extension(current, &intent, &targets) {
                    Extension::AlreadySelected => {}
                    Extension::Patch(patch) => {
                        steps.push(Step::PatchNodeClass { name: name.clone(), patch, intent: intent.clone() })
                    }
                    Extension::Unextendable(why) => {
                        return Err(refuse(RefusalCode::NodeClassUnextendable, format!("NodeClass {name}: {why}")));
                    }
                }
                current.pointer("/spec/subnetSelectorTerms").cloned()
            }
            None => {
                let cluster_subnet_ids: Vec<String> = self.route_sources.iter().map(|s| s.id.clone()).collect();
                let sources = NewNodeClassSources {
                    default_nodeclass: objects.nodeclass(nodeclass::DEFAULT_NODECLASS),
                    configured_role: config.node_role.as_deref(),
                    configured_security_groups: &config.security_group_ids,
                    cluster_security_group: self.snapshot.cluster.cluster_security_group_id.as_deref(),
                    cluster_subnet_ids: &cluster_subnet_ids,
                };
                let object = nodeclass::new_nodeclass(name, &intent, &sources)
                    .map_err(|why| refuse(RefusalCode::NoNodeRole, format!("NodeClass {name}: {why}")))?;
                let terms = object.pointer("/spec/subnetSelectorTerms").cloned();
                steps.push(Step::CreateNodeClass { name: name.clone(), object, intent: intent.clone() });
                terms
            }
        };

        // Auto Mode rejects a pod subnet in an AZ with no node subnet.
        if config.subnet_mode == crate::config::SubnetMode::Pods {
            let node_azs: BTreeSet<&str> = self
                .snapshot
                .subnets
                .iter()
                .filter(|s| {
                    nodeclass::terms_select(
                        node_terms.as_ref(),
                        &SelectorTarget { id: Some(s.id.clone()), tags: s.tags.clone() },
                    )
                })
                .map(|s| s.availability_zone.as_str())
                .collect();
            let pod_azs = self
                .managed_subnets
                .iter()
                .map(|s| s.availability_zone.as_str())
                .chain(placements.iter().map(|(az, _)| az.as_str()));
            let orphaned: BTreeSet<&str> = pod_azs.filter(|az| !node_azs.contains(az)).collect();
            if !orphaned.is_empty() {
                return Err(refuse(
                    RefusalCode::NodeClassUnextendable,
                    format!(
                        "NodeClass {name}: pod subnets in {} would have no node subnet in the same AZ; select node subnets there first",
                        orphaned.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }

        // A NodeClass that no NodePool references launches nothing: create
        // the configured NodePool, unless one by that name exists already
        // (headroom never modifies a NodePool).
        let pool = &config.nodepool_name;
        if config.create_nodepool && objects.nodepools_using(name).is_empty() && objects.nodepool(pool).is_none() {
            steps.push(Step::CreateNodePool { name: pool.clone(), object: nodeclass::new_nodepool(pool, name) });
        }
        Ok(steps)
    }

    /// Why nothing would use new subnets, and what to set.
    pub(super) fn no_nodepool_refusal(&self, objects: &AutoModeObjects) -> Refusal {
        let config = self.config;
        let (name, pool) = (&config.nodeclass_name, &config.nodepool_name);
        let message = match objects.nodepool(pool).map(nodeclass::nodeclass_ref) {
            Some(other) if config.create_nodepool => format!(
                "no NodePool references NodeClass {name}, so Auto Mode would launch no node into new subnets; NodePool \
                 {pool} exists but launches from NodeClass {}, and headroom never modifies a NodePool: set NODEPOOL_NAME \
                 (template parameter NodePoolName) to an unused name, or point a NodePool at NodeClass {name}",
                other.unwrap_or("(none)")
            ),
            _ => format!(
                "no NodePool references NodeClass {name} (spec.template.spec.nodeClassRef.name), so Auto Mode would \
                 launch no node into new subnets and the addresses would be counted without being usable; set \
                 CREATE_NODEPOOL=true (template parameter CreateNodePool) so that headroom creates NodePool {pool}, \
                 or create a NodePool that references NodeClass {name}"
            ),
        };
        refuse(RefusalCode::NoNodePool, message)
    }

    /// Nodes join only with the cluster's Auto Mode node role, or with a role
    /// that has an EKS access entry of type EC2 (docs/aws-rules.md, "Node roles").
    pub(super) fn check_node_role(&self, steps: &[Step]) -> Result<(), Refusal> {
        let role = steps.iter().find_map(|s| match s {
            Step::CreateNodeClass { object, .. } => nodeclass::role_of(object),
            _ => None,
        });
        let role = match role.or_else(|| {
            self.snapshot
                .cluster_api
                .objects()
                .and_then(|o| o.nodeclass(&self.config.nodeclass_name))
                .and_then(nodeclass::role_of)
        }) {
            Some(role) => role,
            None => return Ok(()),
        };
        let cluster_role = self.snapshot.cluster.node_role_arn.as_deref();
        if !nodeclass::needs_access_entry(role, cluster_role) {
            return Ok(());
        }
        let name = &self.config.nodeclass_name;
        let entries = self.snapshot.node_role_access_entries.as_deref().unwrap_or_default();
        let has_entry = entries
            .iter()
            .any(|e| nodeclass::role_name(&e.principal_arn) == nodeclass::role_name(role) && e.kind == "EC2");
        if has_entry {
            return Ok(());
        }
        let cluster_role =
            cluster_role.map_or("none reported".to_string(), |arn| nodeclass::role_name(arn).to_string());
        Err(refuse(
            RefusalCode::NodeRoleNotAuthorized,
            format!(
                "NodeClass {name} launches nodes with role {role}, which is not the cluster's Auto Mode node role \
                 ({cluster_role}) and has no EKS access entry of type EC2, so its nodes could not join cluster {}; \
                 create one: aws eks create-access-entry --cluster-name {} --principal-arn <arn of {role}> --type EC2, \
                 then associate the AmazonEKSAutoNodePolicy access policy with it (docs/deploy.md)",
                self.snapshot.cluster.name, self.snapshot.cluster.name
            ),
        ))
    }
}
