//! Self-tests of the fake Kubernetes API server, driven by a real kube-rs
//! client through a generated kubeconfig.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use futures::StreamExt;
use headroom_testbed::fake_kube::{
    NODECLASSES, NODEPOOLS, WATCH_HISTORY, nodeclass_api_resource, nodepool_api_resource,
};
use headroom_testbed::{DEFAULT_REGION, FakeKube, LocalAws, StatusResolver, ec2_status_resolver, init_test_tracing};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};

async fn start() -> (FakeKube, Api<DynamicObject>) {
    init_test_tracing();
    let kube = FakeKube::start().await.expect("fake kube starts");
    let client = kube.kube_client().await.expect("kube client from kubeconfig");
    let api = Api::all_with(client, &nodeclass_api_resource());
    (kube, api)
}

fn nodeclass(name: &str) -> Value {
    json!({
        "apiVersion": "eks.amazonaws.com/v1",
        "kind": "NodeClass",
        "metadata": {"name": name},
        "spec": {
            "role": "AmazonEKSAutoNodeRole",
            "subnetSelectorTerms": [{"id": "subnet-0aaa"}, {"tags": {"headroom.io/cluster": "lab"}}],
            "securityGroupSelectorTerms": [{"id": "sg-0abc"}],
        }
    })
}

/// kube 5's `Patch::Json` holds a json-patch 4 `Patch`; building it through
/// serde keeps the test independent of that crate version.
fn json_patch(operations: Value) -> Patch<()> {
    Patch::Json(serde_json::from_value(operations).expect("valid JSON patch"))
}

fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("valid DynamicObject")
}

fn api_error(error: kube::Error) -> (u16, String, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason.clone(), status.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A client of the fake that presents the wrong bearer token.
async fn intruder(kube: &FakeKube) -> Api<DynamicObject> {
    let wrong = kube.kubeconfig().replace(kube.token(), "wrong-token");
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&wrong).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Api::all_with(kube::Client::try_from(config).unwrap(), &nodeclass_api_resource())
}

fn rv(object: &DynamicObject) -> String {
    object.metadata.resource_version.clone().expect("resourceVersion")
}

#[tokio::test]
async fn get_list_create_and_already_exists() {
    let (kube, api) = start().await;
    kube.put_object(NODECLASSES, nodeclass("default")).expect("seed default");

    let default = api.get("default").await.expect("get default");
    assert_eq!(default.data["spec"]["role"], "AmazonEKSAutoNodeRole");
    assert_eq!(default.metadata.generation, Some(1));
    assert!(default.metadata.uid.is_some());

    let created = api.create(&PostParams::default(), &dynamic(nodeclass("headroom"))).await.expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.creation_timestamp.is_some());
    assert_ne!(created.metadata.uid, default.metadata.uid);
    assert!(rv(&created).parse::<u64>().unwrap() > rv(&default).parse::<u64>().unwrap());

    let list = api.list(&ListParams::default()).await.expect("list");
    let names: Vec<_> = list.items.iter().filter_map(|o| o.metadata.name.clone()).collect();
    assert_eq!(names, ["default", "headroom"]);
    assert_eq!(list.metadata.resource_version, Some(kube.resource_version().to_string()));

    let (code, reason, message) =
        api_error(api.create(&PostParams::default(), &dynamic(nodeclass("headroom"))).await.expect_err("duplicate"));
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    assert!(message.contains("\"headroom\" already exists"), "{message}");

    let (code, reason, _) = api_error(api.get("missing").await.expect_err("404"));
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert!(api.get_opt("missing").await.expect("get_opt").is_none());

    // Creating from an object that still carries a resourceVersion is a
    // classic copy-from-default bug; the real server answers 500.
    let mut copied = kube.get_object(NODECLASSES, "default").unwrap();
    copied["metadata"]["name"] = json!("copy");
    let (code, _, message) = api_error(api.create(&PostParams::default(), &dynamic(copied)).await.expect_err("rv set"));
    assert_eq!(code, 500);
    assert!(message.contains("resourceVersion should not be set"), "{message}");

    // None of that wrote to `default`.
    assert_eq!(kube.writes_to(NODECLASSES, "default"), 0);
    assert_eq!(kube.writes_to(NODECLASSES, "headroom"), 2, "create + duplicate create");
}

#[tokio::test]
async fn validation_rejects_bad_nodeclasses_with_422() {
    let (kube, api) = start().await;
    type Edit = fn(&mut Value);
    let cases: [(Edit, &str); 6] = [
        (|spec| drop(spec.as_object_mut().unwrap().remove("role")), "spec.role"),
        (|spec| spec["subnetSelectorTerms"] = json!([]), "spec.subnetSelectorTerms"),
        (
            |spec| spec["subnetSelectorTerms"] = json!([{"id": "subnet-1", "tags": {"a": "b"}}]),
            "spec.subnetSelectorTerms[0]",
        ),
        (|spec| spec["subnetSelectorTerms"] = json!([{"tags": {"a": ""}}]), "spec.subnetSelectorTerms[0].tags"),
        (
            |spec| drop(spec.as_object_mut().unwrap().remove("securityGroupSelectorTerms")),
            "spec.securityGroupSelectorTerms",
        ),
        (
            |spec| spec["podSubnetSelectorTerms"] = json!([{"tags": {"pods": "yes"}}]),
            "spec.podSecurityGroupSelectorTerms",
        ),
    ];
    for (edit, field) in cases {
        let mut object = nodeclass("bad");
        edit(&mut object["spec"]);
        let (code, reason, message) =
            api_error(api.create(&PostParams::default(), &dynamic(object)).await.expect_err(field));
        assert_eq!((code, reason.as_str()), (422, "Invalid"), "{field}");
        assert!(message.contains(field), "{field} not named in: {message}");
    }
    assert!(kube.list_objects(NODECLASSES).is_empty(), "nothing invalid was stored");
    let terms: Vec<Value> = (0..31).map(|i| json!({"id": format!("subnet-{i:04}")})).collect();
    let mut object = nodeclass("too-many");
    object["spec"]["subnetSelectorTerms"] = json!(terms);
    let (code, _, message) =
        api_error(api.create(&PostParams::default(), &dynamic(object)).await.expect_err("31 terms"));
    assert_eq!(code, 422);
    assert!(message.contains("at most 30"), "{message}");
}

#[tokio::test]
async fn json_patch_with_test_op_and_merge_patch() {
    let (kube, api) = start().await;
    api.create(&PostParams::default(), &dynamic(nodeclass("headroom"))).await.unwrap();
    let current = kube.get_object(NODECLASSES, "headroom").unwrap();
    let terms = current["spec"]["subnetSelectorTerms"].clone();

    // Test-and-append: the guarded append the remediation should use.
    let patch = json_patch(json!([
        {"op": "test", "path": "/spec/subnetSelectorTerms", "value": terms},
        {"op": "add", "path": "/spec/subnetSelectorTerms/-", "value": {"id": "subnet-0new"}},
    ]));
    let patched = api.patch("headroom", &PatchParams::default(), &patch).await.expect("json patch");
    assert_eq!(patched.data["spec"]["subnetSelectorTerms"].as_array().unwrap().len(), 3);
    assert_eq!(patched.metadata.generation, Some(2), "spec change bumps generation");

    // The same patch again: its test op now fails.
    let (code, reason, _) =
        api_error(api.patch("headroom", &PatchParams::default(), &patch).await.expect_err("stale test op"));
    assert_eq!((code, reason.as_str()), (422, "Invalid"));

    // Merge patch replaces lists whole.
    let merged = api
        .patch(
            "headroom",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"subnetSelectorTerms": [{"id": "subnet-0only"}]}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(merged.data["spec"]["subnetSelectorTerms"], json!([{"id": "subnet-0only"}]));
    assert_eq!(merged.metadata.generation, Some(3));

    // A metadata-only change bumps resourceVersion but not generation.
    let labelled = api
        .patch("headroom", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})))
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(3));
    assert_ne!(rv(&labelled), rv(&merged));

    // A no-op patch changes nothing, not even the resourceVersion.
    let same = api
        .patch("headroom", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})))
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&labelled));

    // A merge patch carrying a stale resourceVersion conflicts.
    let (code, reason, _) = api_error(
        api.patch(
            "headroom",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"resourceVersion": rv(&merged)}, "spec": {"role": "AmazonEKSAutoNodeRole"}}),
            ),
        )
        .await
        .expect_err("stale rv"),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    // Strategic merge patch is not for custom resources.
    let (code, reason, message) = api_error(
        api.patch("headroom", &PatchParams::default(), &Patch::Strategic(json!({"spec": {}}))).await.expect_err("415"),
    );
    assert_eq!((code, reason.as_str()), (415, "UnsupportedMediaType"));
    assert!(message.contains("application/merge-patch+json"), "{message}");

    // Server-side apply is not implemented by the fake: 415 too.
    let (code, _, _) = api_error(
        api.patch("headroom", &PatchParams::apply("headroom"), &Patch::Apply(nodeclass("headroom")))
            .await
            .expect_err("415"),
    );
    assert_eq!(code, 415);

    // role is immutable.
    let (code, _, message) = api_error(
        api.patch("headroom", &PatchParams::default(), &Patch::Merge(json!({"spec": {"role": "Other"}})))
            .await
            .expect_err("immutable"),
    );
    assert_eq!(code, 422);
    assert!(message.contains("spec.role"), "{message}");

    let (code, _, _) =
        api_error(api.patch("missing", &PatchParams::default(), &Patch::Merge(json!({}))).await.expect_err("404"));
    assert_eq!(code, 404);
}

#[tokio::test]
async fn replace_needs_the_current_resource_version() {
    let (_kube, api) = start().await;
    let created = api.create(&PostParams::default(), &dynamic(nodeclass("headroom"))).await.unwrap();

    let mut next = created.clone();
    next.data["spec"]["subnetSelectorTerms"] = json!([{"id": "subnet-0b"}]);
    let replaced = api.replace("headroom", &PostParams::default(), &next).await.expect("replace");
    assert_eq!(replaced.metadata.generation, Some(2));

    // `next` still carries the old resourceVersion.
    let (code, reason, message) =
        api_error(api.replace("headroom", &PostParams::default(), &next).await.expect_err("stale"));
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(message.contains("the object has been modified"), "{message}");

    let mut unconditional = replaced.clone();
    unconditional.metadata.resource_version = None;
    let (code, reason, message) =
        api_error(api.replace("headroom", &PostParams::default(), &unconditional).await.expect_err("no rv"));
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(message.contains("must be specified for an update"), "{message}");
}

#[tokio::test]
async fn concurrent_writer_on_next_get_makes_the_write_race() {
    let (kube, api) = start().await;
    api.create(&PostParams::default(), &dynamic(nodeclass("headroom"))).await.unwrap();

    // Read-modify-write loses to the concurrent writer with a 409.
    kube.on_next_get(NODECLASSES, "headroom", |object| {
        object["spec"]["subnetSelectorTerms"].as_array_mut().unwrap().push(json!({"id": "subnet-0other"}));
    });
    let mut read = api.get("headroom").await.unwrap();
    assert_eq!(read.data["spec"]["subnetSelectorTerms"].as_array().unwrap().len(), 2, "served before the race");
    read.data["spec"]["subnetSelectorTerms"].as_array_mut().unwrap().push(json!({"id": "subnet-0mine"}));
    let (code, _, _) = api_error(api.replace("headroom", &PostParams::default(), &read).await.expect_err("409"));
    assert_eq!(code, 409);
    let stored = kube.get_object(NODECLASSES, "headroom").unwrap();
    assert_eq!(stored["spec"]["subnetSelectorTerms"][2], json!({"id": "subnet-0other"}));
    assert_eq!(stored["metadata"]["generation"], 2);

    // A JSON patch guarded by a test op fails with 422 instead.
    kube.on_next_get(NODECLASSES, "headroom", |object| {
        object["spec"]["subnetSelectorTerms"] = json!([{"id": "subnet-0replaced"}]);
    });
    let read = api.get("headroom").await.unwrap();
    let patch = json_patch(json!([
        {"op": "test", "path": "/spec/subnetSelectorTerms", "value": read.data["spec"]["subnetSelectorTerms"]},
        {"op": "add", "path": "/spec/subnetSelectorTerms/-", "value": {"id": "subnet-0mine"}},
    ]));
    let (code, _, _) = api_error(api.patch("headroom", &PatchParams::default(), &patch).await.expect_err("422"));
    assert_eq!(code, 422);
    // Hooks are one-shot: the next GET is plain.
    let before = kube.resource_version();
    api.get("headroom").await.unwrap();
    assert_eq!(kube.resource_version(), before);
}

#[tokio::test]
async fn status_is_a_subresource_and_the_resolver_fills_it() {
    let (kube, api) = start().await;
    let resolver: StatusResolver = Arc::new(|nodeclass: Value| {
        Box::pin(async move {
            let terms = nodeclass["spec"]["subnetSelectorTerms"].as_array()?.len();
            Some(json!({"resolvedTerms": terms, "generation": nodeclass["metadata"]["generation"]}))
        })
    });
    kube.set_status_resolver(Some(resolver));
    kube.set_status_delay(Duration::from_millis(100));

    let mut object = nodeclass("headroom");
    object["status"] = json!({"forged": true});
    let created = api.create(&PostParams::default(), &dynamic(object)).await.unwrap();
    assert!(created.data.get("status").is_none(), "create cannot set status");
    assert!(kube.get_object(NODECLASSES, "headroom").unwrap().get("status").is_none(), "delayed");

    let resolved = kube
        .wait_for(NODECLASSES, "headroom", Duration::from_secs(5), |o| o.get("status").is_some())
        .await
        .expect("status resolved");
    assert_eq!(resolved["status"], json!({"resolvedTerms": 2, "generation": 1}));

    // Writing status through the main resource is ignored.
    let patched = api
        .patch("headroom", &PatchParams::default(), &Patch::Merge(json!({"status": {"forged": true}})))
        .await
        .unwrap();
    assert_eq!(patched.data["status"], json!({"resolvedTerms": 2, "generation": 1}));

    // A spec change triggers a new resolution for the new generation.
    api.patch(
        "headroom",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"subnetSelectorTerms": [{"id": "subnet-0x"}]}})),
    )
    .await
    .unwrap();
    kube.wait_for(NODECLASSES, "headroom", Duration::from_secs(5), |o| {
        o["status"] == json!({"resolvedTerms": 1, "generation": 2})
    })
    .await
    .expect("re-resolved");

    // The status subresource itself is writable.
    let status_api: Api<DynamicObject> = api.clone();
    let written = status_api
        .patch_status("headroom", &PatchParams::default(), &Patch::Merge(json!({"status": {"by": "controller"}})))
        .await
        .expect("patch status");
    // A merge patch merges into the existing status.
    assert_eq!(written.data["status"], json!({"by": "controller", "resolvedTerms": 1, "generation": 2}));
    assert_eq!(written.metadata.generation, Some(2), "status writes keep the generation");
}

#[tokio::test]
async fn bearer_token_is_required() {
    let (kube, api) = start().await;
    kube.put_object(NODECLASSES, nodeclass("default")).unwrap();
    api.get("default").await.expect("authorized");

    let intruder = intruder(&kube).await;
    let (code, reason, _) = api_error(intruder.get("default").await.expect_err("401"));
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));

    // No Authorization header at all.
    let raw = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("{}/apis/eks.amazonaws.com/v1/nodeclasses", kube.url()).parse().unwrap();
    let response = raw.get(uri).await.unwrap();
    assert_eq!(response.status(), 401);
    let requests = kube.requests();
    assert_eq!(requests.iter().filter(|r| r.status == 401).count(), 2);
}

#[tokio::test]
async fn kubeconfig_file_and_discovery_work_with_kube_rs() {
    let (kube, _) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), kube.url());
    let client = kube::Client::try_from(config).unwrap();

    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.major, "1");

    let gvk = kube::core::GroupVersionKind::gvk("eks.amazonaws.com", "v1", "NodeClass");
    let (resource, capabilities) = kube::discovery::pinned_kind(&client, &gvk).await.expect("discovery");
    assert_eq!(resource.plural, "nodeclasses");
    assert_eq!(capabilities.scope, kube::discovery::Scope::Cluster);

    // NodePools: validated for a nodeClassRef, deletable.
    let pools: Api<DynamicObject> = Api::all_with(client, &nodepool_api_resource());
    let pool = json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "general"},
        "spec": {"template": {"spec": {"nodeClassRef": {"group": "eks.amazonaws.com", "kind": "NodeClass", "name": "headroom"}}}},
    });
    pools.create(&PostParams::default(), &dynamic(pool)).await.expect("create NodePool");
    let bad = json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "bad"}, "spec": {}});
    let (code, _, message) = api_error(pools.create(&PostParams::default(), &dynamic(bad)).await.expect_err("422"));
    assert_eq!(code, 422);
    assert!(message.contains("nodeClassRef"), "{message}");
    pools.delete("general", &DeleteParams::default()).await.expect("delete");
    assert!(kube.get_object(NODEPOOLS, "general").is_none());
}

#[tokio::test]
async fn ec2_status_resolver_emulates_auto_mode_against_moto() {
    init_test_tracing();
    let aws = LocalAws::start().await.expect("local AWS");
    let ec2 = aws.direct_ec2(DEFAULT_REGION).await;
    let vpc = ec2.create_vpc().cidr_block("10.20.0.0/16").send().await.unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    let mut tagged = Vec::new();
    for (cidr, zone) in [("10.20.0.0/20", "us-east-1a"), ("10.20.16.0/20", "us-east-1b")] {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(cidr)
            .availability_zone(zone)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Subnet)
                    .tags(Tag::builder().key("headroom.io/cluster").value("lab").build())
                    .build(),
            )
            .send()
            .await
            .unwrap();
        tagged.push(subnet.subnet().unwrap().subnet_id().unwrap().to_owned());
    }
    let untagged = ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.20.32.0/20")
        .availability_zone("us-east-1c")
        .send()
        .await
        .unwrap();
    let untagged_id = untagged.subnet().unwrap().subnet_id().unwrap().to_owned();
    let groups = ec2
        .describe_security_groups()
        .filters(Filter::builder().name("vpc-id").values(&vpc_id).build())
        .send()
        .await
        .unwrap();
    let sg = groups.security_groups()[0].group_id().unwrap().to_owned();

    let kube = FakeKube::start().await.unwrap();
    kube.set_status_resolver(Some(ec2_status_resolver(ec2.clone())));
    let api: Api<DynamicObject> = Api::all_with(kube.kube_client().await.unwrap(), &nodeclass_api_resource());
    let mut object = nodeclass("headroom");
    object["spec"]["subnetSelectorTerms"] = json!([{"tags": {"headroom.io/cluster": "*"}}, {"id": untagged_id}]);
    object["spec"]["securityGroupSelectorTerms"] = json!([{"id": sg}]);
    api.create(&PostParams::default(), &dynamic(object)).await.unwrap();

    let resolved = kube
        .wait_for(NODECLASSES, "headroom", Duration::from_secs(10), |o| o.get("status").is_some())
        .await
        .expect("status resolved");
    let status = &resolved["status"];
    let mut ids: Vec<String> =
        status["subnets"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    let mut expected = tagged.clone();
    expected.push(untagged_id.clone());
    expected.sort();
    assert_eq!(ids, expected);
    let zones: Vec<&str> = status["subnets"].as_array().unwrap().iter().map(|s| s["zone"].as_str().unwrap()).collect();
    assert!(zones.contains(&"us-east-1a") && zones.contains(&"us-east-1c"), "{zones:?}");
    assert!(status["subnets"][0]["zoneID"].as_str().is_some_and(|z| !z.is_empty()));
    assert_eq!(status["securityGroups"][0]["id"], json!(sg));
    let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "True");

    // A selector that matches nothing leaves the NodeClass not Ready.
    api.patch(
        "headroom",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"subnetSelectorTerms": [{"tags": {"nothing": "matches"}}]}})),
    )
    .await
    .unwrap();
    let resolved = kube
        .wait_for(NODECLASSES, "headroom", Duration::from_secs(10), |o| {
            o["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["observedGeneration"] == 2))
        })
        .await
        .expect("re-resolved");
    assert_eq!(resolved["status"]["subnets"], json!([]));
    let ready = resolved["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "False");
}

#[tokio::test]
async fn lists_are_paged_by_limit_and_continue() {
    let (kube, api) = start().await;
    for name in ["a", "b", "c", "d", "e"] {
        kube.put_object(NODECLASSES, nodeclass(name)).expect("seed");
    }
    let first = api.list(&ListParams::default().limit(2)).await.expect("page 1");
    let names = |l: &kube::api::ObjectList<DynamicObject>| {
        l.items.iter().filter_map(|o| o.metadata.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&first), ["a", "b"]);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let second = api.list(&ListParams::default().limit(2).continue_token(&token)).await.expect("page 2");
    assert_eq!(names(&second), ["c", "d"]);
    let last = api
        .list(&ListParams::default().limit(2).continue_token(second.metadata.continue_.as_deref().unwrap()))
        .await
        .expect("page 3");
    assert_eq!(names(&last), ["e"]);
    assert!(last.metadata.continue_.as_deref().is_none_or(str::is_empty), "the last page has no token");

    // The server may return fewer than the limit; clients must follow the token.
    kube.set_max_list_page(Some(1));
    let capped = api.list(&ListParams::default().limit(100)).await.expect("capped");
    assert_eq!(names(&capped), ["a"]);
    assert!(capped.metadata.continue_.is_some());
    // A token the server never issued is 410 Gone, as an expired one is.
    let (code, reason, _) = api_error(api.list(&ListParams::default().continue_token("bogus")).await.expect_err("410"));
    assert_eq!((code, reason.as_str()), (410, "Expired"));
}

// ---------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------

type Events = std::pin::Pin<Box<dyn futures::Stream<Item = Result<WatchEvent<DynamicObject>, kube::Error>> + Send>>;

async fn watch(api: &Api<DynamicObject>, params: &WatchParams, version: &str) -> Events {
    Box::pin(api.watch(params, version).await.expect("watch starts"))
}

/// The next event as (type, object); an ERROR event's object is its
/// `Status` as JSON. Panics if the stream ends or stays silent for 10 s.
async fn next_event(events: &mut Events) -> (&'static str, Value) {
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s")
        .expect("the watch goes on")
        .expect("a well-formed event");
    match event {
        WatchEvent::Added(object) => ("ADDED", serde_json::to_value(object).unwrap()),
        WatchEvent::Modified(object) => ("MODIFIED", serde_json::to_value(object).unwrap()),
        WatchEvent::Deleted(object) => ("DELETED", serde_json::to_value(object).unwrap()),
        WatchEvent::Bookmark(bookmark) => ("BOOKMARK", serde_json::to_value(bookmark).unwrap()),
        WatchEvent::Error(status) => ("ERROR", serde_json::to_value(*status).unwrap()),
    }
}

/// Waits (up to 30 s) for the server to end the watch; returns what came.
async fn until_end(events: Events) -> Vec<Result<WatchEvent<DynamicObject>, kube::Error>> {
    tokio::time::timeout(Duration::from_secs(30), events.collect::<Vec<_>>()).await.expect("the server ends the watch")
}

fn name_and_rv(object: &Value) -> (&str, &str) {
    (object["metadata"]["name"].as_str().unwrap(), object["metadata"]["resourceVersion"].as_str().unwrap())
}

fn named(name: &str) -> WatchParams {
    WatchParams::default().fields(&format!("metadata.name={name}"))
}

#[tokio::test]
async fn watch_sees_added_then_modified_when_the_controller_fills_status() {
    let (kube, api) = start().await;
    let resolver: StatusResolver =
        Arc::new(|_| Box::pin(async { Some(json!({"subnets": [{"id": "subnet-0aaa", "zone": "us-east-1a"}]})) }));
    kube.set_status_resolver(Some(resolver));
    kube.set_status_delay(Duration::from_millis(50));

    let mut events = watch(&api, &named("headroom"), "0").await;
    let created = api.create(&PostParams::default(), &dynamic(nodeclass("headroom"))).await.unwrap();

    let (kind, added) = next_event(&mut events).await;
    assert_eq!(kind, "ADDED");
    assert_eq!(name_and_rv(&added), ("headroom", rv(&created).as_str()));
    assert!(added.get("status").is_none(), "created without status: {added}");

    // The controller's status write reaches the watcher as MODIFIED.
    let (kind, modified) = next_event(&mut events).await;
    assert_eq!(kind, "MODIFIED");
    assert_eq!(modified["status"]["subnets"][0]["id"], "subnet-0aaa");
    let stored = kube.get_object(NODECLASSES, "headroom").unwrap();
    assert_eq!(modified["metadata"]["resourceVersion"], stored["metadata"]["resourceVersion"]);
    assert_eq!(modified["metadata"]["generation"], 1, "a status write keeps the generation");

    // A watch from "0" starts with the current state, status included.
    let mut fresh = watch(&api, &named("headroom"), "0").await;
    let (kind, current) = next_event(&mut fresh).await;
    assert_eq!(kind, "ADDED");
    assert_eq!(current, stored);
}

#[tokio::test]
async fn watch_from_a_resource_version_replays_the_changes_missed() {
    let (kube, api) = start().await;
    let created = api.create(&PostParams::default(), &dynamic(nodeclass("headroom"))).await.unwrap();
    let labelled = api
        .patch("headroom", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "1"}}})))
        .await
        .unwrap();
    let respecced = api
        .patch(
            "headroom",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"subnetSelectorTerms": [{"id": "subnet-0b"}]}})),
        )
        .await
        .unwrap();

    // Resuming from the created object's version: both patches, in order.
    let mut events = watch(&api, &named("headroom"), &rv(&created)).await;
    let (kind, first) = next_event(&mut events).await;
    assert_eq!((kind, name_and_rv(&first).1), ("MODIFIED", rv(&labelled).as_str()));
    assert_eq!(first["metadata"]["labels"], json!({"a": "1"}));
    let (kind, second) = next_event(&mut events).await;
    assert_eq!((kind, name_and_rv(&second).1), ("MODIFIED", rv(&respecced).as_str()));
    assert_eq!(second["metadata"]["generation"], 2);

    // Then live changes; a deletion carries the deletion's version.
    api.delete("headroom", &DeleteParams::default()).await.unwrap();
    let (kind, deleted) = next_event(&mut events).await;
    assert_eq!(kind, "DELETED");
    assert_eq!(name_and_rv(&deleted), ("headroom", kube.resource_version().to_string().as_str()));

    // Resuming from the last version seen replays only what came after.
    let mut resumed = watch(&api, &named("headroom"), &rv(&respecced)).await;
    let (kind, _) = next_event(&mut resumed).await;
    assert_eq!(kind, "DELETED");
}

#[tokio::test]
async fn watch_from_a_too_old_resource_version_gets_410_expired() {
    let (kube, api) = start().await;
    let first = kube.put_object(NODECLASSES, nodeclass("headroom")).unwrap()["metadata"]["resourceVersion"].clone();

    // Older than anything the server remembers: one ERROR event, then the end.
    let events = watch(&api, &WatchParams::default(), "1").await;
    let mut all = until_end(events).await.into_iter();
    match all.next() {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(status.message.contains("too old resource version"), "{}", status.message);
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(all.next().is_none(), "the stream ends after the error");

    // The history is bounded: once WATCH_HISTORY more changes are kept, the
    // one after `first` is forgotten and `first` is too old to resume from;
    // the oldest change kept can still be resumed from.
    let mut versions = Vec::new();
    for i in 0..=WATCH_HISTORY {
        let mut object = nodeclass("headroom");
        object["metadata"]["labels"] = json!({"i": i.to_string()});
        versions.push(kube.put_object(NODECLASSES, object).unwrap()["metadata"]["resourceVersion"].clone());
    }
    let (kind, status) = next_event(&mut watch(&api, &named("headroom"), first.as_str().unwrap()).await).await;
    assert_eq!((kind, status["code"].as_u64(), status["reason"].as_str()), ("ERROR", Some(410), Some("Expired")));
    let mut oldest = watch(&api, &named("headroom"), versions[0].as_str().unwrap()).await;
    let (kind, replayed) = next_event(&mut oldest).await;
    assert_eq!(kind, "MODIFIED");
    assert_eq!(replayed["metadata"]["resourceVersion"], versions[1]);
}

#[tokio::test]
async fn watch_selectors_filter_other_objects() {
    let (kube, api) = start().await;
    for name in ["a", "b"] {
        let mut object = nodeclass(name);
        object["metadata"]["labels"] = json!({"team": "x"});
        kube.put_object(NODECLASSES, object).unwrap();
    }
    let terms = |id: &str| Patch::Merge(json!({"spec": {"subnetSelectorTerms": [{"id": id}]}}));

    let mut only_b = watch(&api, &named("b"), "0").await;
    let (kind, object) = next_event(&mut only_b).await;
    assert_eq!((kind, name_and_rv(&object).0), ("ADDED", "b"), "no initial event for a");
    api.patch("a", &PatchParams::default(), &terms("subnet-0a")).await.unwrap();
    api.patch("b", &PatchParams::default(), &terms("subnet-0b")).await.unwrap();
    let (kind, object) = next_event(&mut only_b).await;
    assert_eq!((kind, name_and_rv(&object).0), ("MODIFIED", "b"), "a's change is filtered out");

    // Label selectors: an object leaving the selection is DELETED for the
    // watcher, one entering it ADDED, as the real watch cache reports them.
    let mut team_x = watch(&api, &WatchParams::default().labels("team=x"), "0").await;
    assert_eq!(name_and_rv(&next_event(&mut team_x).await.1).0, "a");
    assert_eq!(name_and_rv(&next_event(&mut team_x).await.1).0, "b");
    let relabel = |team: &str| Patch::Merge(json!({"metadata": {"labels": {"team": team}}}));
    api.patch("b", &PatchParams::default(), &relabel("y")).await.unwrap();
    let (kind, object) = next_event(&mut team_x).await;
    assert_eq!((kind, name_and_rv(&object).0), ("DELETED", "b"));
    api.patch("b", &PatchParams::default(), &relabel("x")).await.unwrap();
    let (kind, object) = next_event(&mut team_x).await;
    assert_eq!((kind, name_and_rv(&object).0), ("ADDED", "b"));

    // Streaming lists: the initial events end with a marked bookmark.
    let mut streaming = watch(&api, &WatchParams::streaming_lists(), "").await;
    assert_eq!(next_event(&mut streaming).await.0, "ADDED");
    assert_eq!(next_event(&mut streaming).await.0, "ADDED");
    let (kind, bookmark) = next_event(&mut streaming).await;
    assert_eq!(kind, "BOOKMARK");
    assert_eq!(bookmark["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    assert_eq!(bookmark["metadata"]["resourceVersion"], kube.resource_version().to_string());
}

#[tokio::test]
async fn watch_ends_at_timeout_seconds() {
    let (kube, api) = start().await;
    kube.put_object(NODECLASSES, nodeclass("headroom")).unwrap();
    let started = std::time::Instant::now();
    let events = watch(&api, &named("headroom").timeout(1), "0").await;
    let all = until_end(events).await;
    assert!(started.elapsed() >= Duration::from_secs(1), "ended after {:?}", started.elapsed());
    assert_eq!(all.len(), 1, "the initial ADDED event only");

    // On the wire: 200, JSON, chunked, one event a line; `watch=1` works too.
    let raw = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let request =
        http::Request::get(format!("{}/apis/eks.amazonaws.com/v1/nodeclasses?watch=1&timeoutSeconds=1", kube.url()))
            .header(http::header::AUTHORIZATION, format!("Bearer {}", kube.token()))
            .body(http_body_util::Empty::new())
            .unwrap();
    let response = raw.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[http::header::CONTENT_TYPE], "application/json");
    assert_eq!(response.headers()[http::header::TRANSFER_ENCODING], "chunked");
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    let lines: Vec<Value> =
        std::str::from_utf8(&body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "ADDED");
    assert_eq!(lines[0]["object"]["metadata"]["name"], "headroom");

    // Stopping the server ends open watches.
    let mut events = watch(&api, &named("headroom"), "0").await;
    assert_eq!(next_event(&mut events).await.0, "ADDED");
    drop(kube);
    until_end(events).await;
}

#[tokio::test]
async fn a_watch_is_recorded_faults_apply_and_it_is_never_a_write() {
    let (kube, api) = start().await;
    kube.put_object(NODECLASSES, nodeclass("headroom")).unwrap();
    until_end(watch(&api, &named("headroom").timeout(1), "0").await).await;

    let requests = kube.requests();
    let watched: Vec<_> = requests.iter().filter(|r| r.watch).collect();
    assert_eq!(watched.len(), 1, "{requests:?}");
    let request = watched[0];
    assert_eq!((request.method.as_str(), request.status), ("GET", 200));
    assert_eq!((request.plural.as_deref(), request.name.as_deref()), (Some(NODECLASSES), Some("headroom")));
    assert!(request.query.as_deref().unwrap().contains("watch=true"));
    assert!(!request.is_write() && !request.asks_to_write());
    assert_eq!(kube.writes_to(NODECLASSES, "headroom"), 0);

    // Write faults are for writes: a watch passes, and the fault waits.
    kube.fail_next_writes(1, 500);
    let mut events = watch(&api, &named("headroom"), "0").await;
    assert_eq!(next_event(&mut events).await.0, "ADDED");
    let (code, _, _) = api_error(
        api.patch("headroom", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})))
            .await
            .expect_err("the queued fault"),
    );
    assert_eq!(code, 500);

    // A watch's initial read fires a concurrent-writer hook, whose change
    // then reaches the watcher.
    kube.on_next_get(NODECLASSES, "headroom", |object| object["metadata"]["labels"] = json!({"by": "someone"}));
    let mut events = watch(&api, &named("headroom"), "0").await;
    let (kind, added) = next_event(&mut events).await;
    assert!(kind == "ADDED" && added["metadata"].get("labels").is_none(), "{added}");
    let (kind, raced) = next_event(&mut events).await;
    assert_eq!((kind, &raced["metadata"]["labels"]), ("MODIFIED", &json!({"by": "someone"})));

    // Without the token: 401 before any stream.
    let intruder = intruder(&kube).await;
    let refused = intruder.watch(&named("headroom"), "0").await.err().expect("401");
    assert_eq!(api_error(refused).0, 401);
    assert!(kube.requests().iter().any(|r| r.watch && r.status == 401));
}

#[tokio::test]
async fn latency_delays_every_answer_and_each_round_trip_pays_it() {
    let (kube, api) = start().await;
    kube.put_object(NODECLASSES, nodeclass("headroom")).unwrap();
    let latency = Duration::from_millis(150);
    kube.set_latency(Some(latency));

    let started = std::time::Instant::now();
    api.get("headroom").await.unwrap();
    assert!(started.elapsed() >= latency, "GET answered after {:?}", started.elapsed());

    // Sequential round trips add up, errors included.
    let started = std::time::Instant::now();
    api.patch("headroom", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})))
        .await
        .unwrap();
    api.get("missing").await.expect_err("404");
    assert!(started.elapsed() >= 2 * latency, "two round trips took {:?}", started.elapsed());

    // A watch pays it once, to start.
    let started = std::time::Instant::now();
    let mut events = watch(&api, &named("headroom"), "0").await;
    assert!(started.elapsed() >= latency, "watch started after {:?}", started.elapsed());
    assert_eq!(next_event(&mut events).await.0, "ADDED");

    kube.set_latency(None);
    api.get("headroom").await.expect("answered without latency");
    assert_eq!(kube.requests().len(), 5);
}

/// The status of a refused write, `None` when it was accepted.
fn write_code(result: Result<DynamicObject, kube::Error>) -> Option<u16> {
    result.err().map(|e| api_error(e).0)
}

#[tokio::test]
async fn write_faults_refuse_or_lose_the_answer_and_spare_reads() {
    let (kube, api) = start().await;
    let post = PostParams::default();
    let object = |name| dynamic(nodeclass(name));

    kube.fail_next_writes(2, 500);
    assert_eq!(write_code(api.create(&post, &object("a")).await), Some(500));
    assert!(api.get_opt("a").await.unwrap().is_none(), "reads pass and nothing was created");
    assert_eq!(write_code(api.create(&post, &object("a")).await), Some(500));
    assert_eq!(write_code(api.create(&post, &object("a")).await), None, "two only");
    assert_eq!(kube.writes_to(NODECLASSES, "a"), 3);

    // The second write from now lands, but its answer is a 500.
    kube.fail_nth_write(2, 500, true);
    assert_eq!(write_code(api.create(&post, &object("b")).await), None);
    assert_eq!(write_code(api.create(&post, &object("c")).await), Some(500));
    assert!(kube.get_object(NODECLASSES, "c").is_some(), "applied despite the error");
    assert_eq!(write_code(api.create(&post, &object("c")).await), Some(409), "and a retry conflicts");

    kube.fail_next_writes(1, 500);
    kube.clear_write_faults();
    assert_eq!(write_code(api.create(&post, &object("d")).await), None);

    kube.reset();
    assert!(kube.list_objects(NODECLASSES).is_empty());
    assert!(kube.requests().is_empty());
}
