//! The ValidatingAdmissionPolicy `scripts/rbac.sh` renders: its CEL judged
//! on allowed and denied requests, then enforced by the fake API server,
//! which answers a denial as the real one does.

use headroom::nodeclass::{new_nodepool, role_of};
use headroom_testbed::FakeKube;
use headroom_testbed::admission::{Admission, AdmissionPolicy, AdmissionRequest, UserInfo};
use headroom_testbed::fake_kube::{HEADROOM_GROUP, HEADROOM_USERNAME, NODECLASSES, nodeclass_api_resource};
use headroom_testbed::harness::lab_rbac_args;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const ROLE: &str = "AmazonEKSAutoNodeRole";

fn headroom() -> UserInfo {
    UserInfo { username: HEADROOM_USERNAME.into(), groups: vec![HEADROOM_GROUP.into(), "system:authenticated".into()] }
}

fn admin() -> UserInfo {
    UserInfo { username: "kubernetes-admin".into(), groups: vec!["system:masters".into()] }
}

fn nodeclass(name: &str, role: &str) -> Value {
    json!({
        "apiVersion": "eks.amazonaws.com/v1",
        "kind": "NodeClass",
        "metadata": {"name": name},
        "spec": {
            "role": role,
            "subnetSelectorTerms": [{"tags": {"headroom.io/cluster": "demo-cluster"}}],
            "securityGroupSelectorTerms": [{"id": "sg-1"}]
        }
    })
}

/// The policy's decision on `operation` of `object` (a NodeClass or
/// NodePool, by its kind) by `user`.
fn judge(policy: &AdmissionPolicy, user: &UserInfo, operation: &str, object: &Value, old: Option<&Value>) -> Admission {
    let nodeclass = object["kind"] == "NodeClass";
    let request = AdmissionRequest {
        operation,
        group: if nodeclass { "eks.amazonaws.com" } else { "karpenter.sh" },
        version: "v1",
        resource: if nodeclass { "nodeclasses" } else { "nodepools" },
        kind: object["kind"].as_str().unwrap(),
        subresource: None,
        name: object["metadata"]["name"].as_str().unwrap(),
        user,
        object,
        old_object: old,
        dry_run: false,
    };
    policy.admit(&request)
}

fn denial(admission: Admission) -> String {
    match admission {
        Admission::Denied { reason, message } => {
            assert_eq!(reason, "Forbidden", "{message}");
            assert!(
                message.starts_with("ValidatingAdmissionPolicy 'headroom' with binding 'headroom' denied request: ")
            );
            message
        }
        Admission::Allowed => panic!("allowed"),
    }
}

#[test]
fn headroom_may_write_only_its_own_nodeclass_with_the_clusters_node_role() {
    let policy = AdmissionPolicy::rendered(&[]).unwrap();
    let me = headroom();
    let create = |object: &Value| judge(&policy, &me, "CREATE", object, None);

    assert_eq!(create(&nodeclass("headroom", ROLE)), Admission::Allowed);
    let other = denial(create(&nodeclass("extra-ips", ROLE)));
    assert!(other.ends_with("headroom may create or change only the NodeClass headroom (scripts/rbac.sh --nodeclass)"));
    denial(create(&nodeclass("default", ROLE)));
    let role = denial(create(&nodeclass("headroom", "ClusterAdminRole")));
    assert!(role.contains("must have spec.role AmazonEKSAutoNodeRole"), "{role}");
    let mut no_role = nodeclass("headroom", ROLE);
    no_role["spec"].as_object_mut().unwrap().remove("role");
    denial(create(&no_role));

    // An update (the JSON Patch result that extends the selector terms)
    // passes, even on a NodeClass someone created with another role, as long
    // as the role stays; changing it, or updating `default`, does not.
    let stored = nodeclass("headroom", "TeamNodeRole");
    let mut extended = stored.clone();
    extended["spec"]["subnetSelectorTerms"].as_array_mut().unwrap().push(json!({"id": "subnet-new"}));
    assert_eq!(judge(&policy, &me, "UPDATE", &extended, Some(&stored)), Admission::Allowed);
    let mut role_changed = extended.clone();
    role_changed["spec"]["role"] = json!("ClusterAdminRole");
    denial(judge(&policy, &me, "UPDATE", &role_changed, Some(&stored)));
    let default = nodeclass("default", ROLE);
    denial(judge(&policy, &me, "UPDATE", &default, Some(&default)));

    // Others are untouched, including a group that merely looks alike.
    let lookalike = UserInfo { username: "dev".into(), groups: vec!["headroom-admins".into()] };
    for user in [admin(), lookalike] {
        assert_eq!(judge(&policy, &user, "CREATE", &nodeclass("anything", "AnyRole"), None), Admission::Allowed);
    }
    // Deletes and the status subresource are outside the policy's rules.
    assert_eq!(judge(&policy, &me, "DELETE", &nodeclass("other", ROLE), None), Admission::Allowed);
    let status = AdmissionRequest {
        operation: "UPDATE",
        group: "eks.amazonaws.com",
        version: "v1",
        resource: "nodeclasses",
        kind: "NodeClass",
        subresource: Some("status"),
        name: "other",
        user: &me,
        object: &nodeclass("other", ROLE),
        old_object: None,
        dry_run: false,
    };
    assert_eq!(policy.admit(&status), Admission::Allowed);
}

#[test]
fn headroom_may_create_only_its_nodepool_on_its_nodeclass() {
    let policy = AdmissionPolicy::rendered(&[]).unwrap();
    let me = headroom();
    let create = |object: &Value| judge(&policy, &me, "CREATE", object, None);

    // The NodePool headroom really creates.
    assert_eq!(create(&new_nodepool("headroom", "headroom")), Admission::Allowed);
    let name = denial(create(&new_nodepool("general-purpose", "headroom")));
    assert!(name.ends_with("headroom may create or change only the NodePool headroom (scripts/rbac.sh --nodepool)"));
    let elsewhere = denial(create(&new_nodepool("headroom", "default")));
    assert!(elsewhere.contains("must launch from the NodeClass headroom"), "{elsewhere}");
    let mut foreign_group = new_nodepool("headroom", "headroom");
    foreign_group["spec"]["template"]["spec"]["nodeClassRef"]["group"] = json!("karpenter.k8s.aws");
    denial(create(&foreign_group));
    let mut no_template = new_nodepool("headroom", "headroom");
    no_template["spec"].as_object_mut().unwrap().remove("template");
    denial(create(&no_template));
    assert_eq!(judge(&policy, &admin(), "CREATE", &new_nodepool("x", "default"), None), Admission::Allowed);
}

#[test]
fn every_configured_name_and_role_is_allowed_and_arns_become_names() {
    let policy = AdmissionPolicy::rendered(&[
        "--nodeclass",
        "team-a,team-b",
        "--nodepool",
        "pool-a",
        "--nodepool",
        "pool-b",
        "--node-role",
        "arn:aws:iam::123456789012:role/eks/TeamANodes,TeamBNodes",
        "--group",
        "platform:headroom",
        "--name",
        "headroom-prod",
    ])
    .unwrap();
    assert_eq!(policy.name(), "headroom-prod");
    let me = UserInfo { username: "u".into(), groups: vec!["platform:headroom".into()] };
    for (class, role) in [("team-a", "TeamANodes"), ("team-b", "TeamBNodes"), ("team-a", "TeamBNodes")] {
        assert_eq!(judge(&policy, &me, "CREATE", &nodeclass(class, role), None), Admission::Allowed, "{class} {role}");
    }
    for (pool, class) in [("pool-a", "team-a"), ("pool-b", "team-b")] {
        assert_eq!(judge(&policy, &me, "CREATE", &new_nodepool(pool, class), None), Admission::Allowed);
    }
    let full_arn = nodeclass("team-a", "arn:aws:iam::123456789012:role/eks/TeamANodes");
    assert!(matches!(judge(&policy, &me, "CREATE", &full_arn, None), Admission::Denied { .. }));
    assert!(matches!(
        judge(&policy, &me, "CREATE", &nodeclass("headroom", "TeamANodes"), None),
        Admission::Denied { .. }
    ));
    // The group is the rendered one: the template default no longer matches.
    assert_eq!(judge(&policy, &headroom(), "CREATE", &nodeclass("x", "y"), None), Admission::Allowed);
}

/// The fake API server enforces the policy for headroom's token only, with
/// the real denial: 403 Forbidden, the policy and binding named, nothing
/// stored, dry runs judged alike.
#[tokio::test]
async fn the_fake_api_server_enforces_the_policy_for_headroom_only() {
    let kube = FakeKube::start().await.unwrap();
    kube.set_admission_policy(Some(AdmissionPolicy::rendered(&lab_rbac_args()).unwrap()));
    let as_headroom: Api<DynamicObject> = Api::all_with(kube.kube_client().await.unwrap(), &nodeclass_api_resource());
    let as_admin: Api<DynamicObject> =
        Api::all_with(kube.admin_kube_client().await.unwrap(), &nodeclass_api_resource());
    let object = |value: Value| serde_json::from_value::<DynamicObject>(value).unwrap();

    for dry_run in [true, false] {
        let params = PostParams { dry_run, ..PostParams::default() };
        let Err(kube::Error::Api(status)) = as_headroom.create(&params, &object(nodeclass("extra-ips", ROLE))).await
        else {
            panic!("created");
        };
        assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
        assert_eq!(
            status.message,
            "nodeclasses.eks.amazonaws.com \"extra-ips\" is forbidden: ValidatingAdmissionPolicy 'headroom' with \
             binding 'headroom' denied request: headroom may create or change only the NodeClass headroom \
             (scripts/rbac.sh --nodeclass)"
        );
    }
    assert!(kube.get_object(NODECLASSES, "extra-ips").is_none());

    // An administrator creates what it likes, e.g. headroom's NodeClass with
    // a team's role; headroom may then extend it, but not another one.
    as_admin.create(&PostParams::default(), &object(nodeclass("extra-ips", "TeamRole"))).await.unwrap();
    as_admin.create(&PostParams::default(), &object(nodeclass("headroom", "TeamRole"))).await.unwrap();
    let extend = json!([{"op": "add", "path": "/spec/subnetSelectorTerms/-", "value": {"id": "subnet-new"}}]);
    let patch = Patch::Json::<()>(serde_json::from_value(extend).unwrap());
    let extended = as_headroom.patch("headroom", &PatchParams::default(), &patch).await.unwrap();
    assert_eq!(role_of(&serde_json::to_value(&extended).unwrap()), Some("TeamRole"));
    let Err(kube::Error::Api(status)) = as_headroom.patch("extra-ips", &PatchParams::default(), &patch).await else {
        panic!("patched another NodeClass");
    };
    assert_eq!(status.code, 403, "{status:?}");
    assert_eq!(
        kube.get_object(NODECLASSES, "extra-ips").unwrap()["spec"]["subnetSelectorTerms"].as_array().unwrap().len(),
        1
    );

    // Without a policy, headroom's token may create anything (as before).
    kube.set_admission_policy(None);
    as_headroom.create(&PostParams::default(), &object(nodeclass("another", "AnyRole"))).await.unwrap();
}
