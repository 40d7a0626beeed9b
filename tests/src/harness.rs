//! The lab on local AWS and Kubernetes, with a headroom [`Context`] pointed
//! at it: what the integration tests, the benchmarks and the demo share.

use std::collections::BTreeSet;
use std::path::PathBuf;

use aws_sdk_ec2::types::Filter;

use headroom::aws::AwsClients;
use headroom::cluster::ClusterAccess;
use headroom::{Config, Context};

use crate::admission::AdmissionPolicy;
use crate::lab::{self, ClusterVpc, Exhaustion, Lab};
use crate::{FakeKube, LocalAws, TestbedError, ec2_status_resolver};

/// `scripts/rbac.sh` flags for the lab: the template's names and group, the
/// lab cluster's node role.
pub fn lab_rbac_args() -> [&'static str; 8] {
    ["--nodeclass", "headroom", "--nodepool", "headroom", "--group", "headroom", "--node-role", lab::NODE_ROLE]
}

pub struct Harness {
    // Drop order: the API server and proxy stop before moto.
    pub kube: FakeKube,
    pub aws: LocalAws,
    pub lab: Lab,
    /// EC2 straight to moto: for seeding and assertions, never faulted or counted.
    pub direct_ec2: aws_sdk_ec2::Client,
    kubeconfig_dir: tempfile::TempDir,
}

impl Harness {
    /// moto + proxy + fake API server, seeded with the lab's scenario.
    pub async fn start(exhaustion: Exhaustion) -> Result<Self, TestbedError> {
        Self::start_with(exhaustion, ClusterVpc::Reported).await
    }

    /// [`Harness::start`], choosing what DescribeCluster says about the VPC.
    pub async fn start_with(exhaustion: Exhaustion, cluster_vpc: ClusterVpc) -> Result<Self, TestbedError> {
        let aws = LocalAws::start().await?;
        let direct = aws.direct_sdk_config(lab::REGION).await;
        let direct_ec2 = aws_sdk_ec2::Client::new(&direct);
        let kube = FakeKube::start().await?;
        kube.set_status_resolver(Some(ec2_status_resolver(direct_ec2.clone())));
        // headroom runs under the admission policy it ships, rendered for the lab.
        kube.set_admission_policy(Some(AdmissionPolicy::rendered(&lab_rbac_args())?));
        let eks = aws_sdk_eks::Client::new(&direct);
        let lab = lab::seed_with(&direct_ec2, &eks, &kube.handle(), exhaustion, cluster_vpc).await?;
        lab::seed_auto_mode(&aws.proxy().handle());
        let kubeconfig_dir = tempfile::tempdir()
            .map_err(|source| TestbedError::Io { context: "creating a kubeconfig dir".into(), source })?;
        kube.write_kubeconfig(&kubeconfig_dir.path().join("config"))?;
        Ok(Harness { kube, aws, lab, direct_ec2, kubeconfig_dir })
    }

    /// Wipes moto, the proxy's state and the API server, and seeds the lab
    /// again, keeping the processes: several times faster than a new harness.
    pub async fn reseed(&mut self, exhaustion: Exhaustion) -> Result<(), TestbedError> {
        self.aws.reset().await?;
        self.kube.reset();
        let eks = aws_sdk_eks::Client::new(&self.aws.direct_sdk_config(lab::REGION).await);
        self.lab = lab::seed(&self.direct_ec2, &eks, &self.kube.handle(), exhaustion).await?;
        lab::seed_auto_mode(&self.aws.proxy().handle());
        Ok(())
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.kubeconfig_dir.path().join("config")
    }

    /// headroom's settings for the lab: `CLUSTER_NAME=demo-cluster` plus `overrides`.
    pub fn config(&self, overrides: &[(&str, &str)]) -> Config {
        let lookup = |key: &str| {
            overrides
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
                .or_else(|| (key == "CLUSTER_NAME").then(|| lab::CLUSTER.to_string()))
                .or_else(|| (key == "NODECLASS_READY_TIMEOUT_SECONDS").then(|| "5".to_string()))
        };
        Config::from_lookup(lookup).expect("valid test settings")
    }

    /// `<cidr>=<state>` of every CIDR association of the lab's VPC, read
    /// straight from moto.
    pub async fn vpc_cidr_states(&self) -> BTreeSet<String> {
        let out = self.direct_ec2.describe_vpcs().vpc_ids(&self.lab.vpc_id).send().await.expect("DescribeVpcs");
        out.vpcs()[0]
            .cidr_block_association_set()
            .iter()
            .map(|a| {
                let state = a.cidr_block_state().and_then(|s| s.state()).map_or("?", |s| s.as_str());
                format!("{}={state}", a.cidr_block().unwrap_or_default())
            })
            .collect()
    }

    /// (AZ, CIDR, route table) of every subnet headroom manages in the lab's
    /// VPC, sorted, read straight from moto.
    pub async fn managed_subnets(&self) -> Vec<(String, String, Option<String>)> {
        let subnets = lab::subnets_tagged(&self.direct_ec2, &self.lab.vpc_id, "headroom.io/cluster", lab::CLUSTER)
            .await
            .expect("DescribeSubnets");
        let mut rows = Vec::new();
        for s in subnets {
            let tables = self
                .direct_ec2
                .describe_route_tables()
                .filters(
                    Filter::builder().name("association.subnet-id").values(s.subnet_id().unwrap_or_default()).build(),
                )
                .send()
                .await
                .expect("DescribeRouteTables");
            let table = tables.route_tables().first().and_then(|t| t.route_table_id()).map(String::from);
            rows.push((
                s.availability_zone().unwrap_or_default().to_string(),
                s.cidr_block().unwrap_or_default().to_string(),
                table,
            ));
        }
        rows.sort();
        rows
    }

    /// A context as a Lambda would build it, but through the fault proxy and
    /// the fake API server.
    pub async fn context(&self, config: Config) -> Context {
        let sdk = self.aws.sdk_config_with_retry(lab::REGION, headroom::aws::clients::retry_config()).await;
        let clusters = ClusterAccess::with_kubeconfig(&sdk, Some(self.kubeconfig_path().as_os_str()));
        Context::new(config, AwsClients::new(sdk), clusters)
    }
}

/// An SNS topic with an SQS queue subscribed, in moto: what headroom tells
/// the operators arrives in the queue, in SNS's envelope.
pub struct Notifications {
    pub topic_arn: String,
    queue_url: String,
    sqs: aws_sdk_sqs::Client,
}

/// One message as a subscriber gets it.
#[derive(Debug, Clone)]
pub struct Received {
    pub subject: String,
    /// The message headroom published (JSON).
    pub message: serde_json::Value,
    /// SNS message attributes: name → string value.
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl Harness {
    /// Creates the topic and the subscribed queue (straight in moto).
    pub async fn notifications(&self) -> Result<Notifications, TestbedError> {
        let direct = self.aws.direct_sdk_config(lab::REGION).await;
        let sns = aws_sdk_sns::Client::new(&direct);
        let sqs = aws_sdk_sqs::Client::new(&direct);
        let fail = |what: &str, e: String| TestbedError::Invalid(format!("notification topic: {what}: {e}"));
        let topic = sns.create_topic().name("headroom").send().await.map_err(|e| fail("CreateTopic", e.to_string()))?;
        let topic_arn = topic.topic_arn().unwrap_or_default().to_string();
        let queue =
            sqs.create_queue().queue_name("operators").send().await.map_err(|e| fail("CreateQueue", e.to_string()))?;
        let queue_url = queue.queue_url().unwrap_or_default().to_string();
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| fail("GetQueueAttributes", e.to_string()))?;
        let queue_arn = attributes
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .cloned()
            .unwrap_or_default();
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .send()
            .await
            .map_err(|e| fail("Subscribe", e.to_string()))?;
        Ok(Notifications { topic_arn, queue_url, sqs })
    }
}

impl Notifications {
    /// Every message waiting in the queue, removed from it.
    pub async fn drain(&self) -> Result<Vec<Received>, TestbedError> {
        let mut received = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .map_err(|e| TestbedError::Invalid(format!("ReceiveMessage: {e}")))?;
            if out.messages().is_empty() {
                return Ok(received);
            }
            for message in out.messages() {
                let envelope: serde_json::Value = serde_json::from_str(message.body().unwrap_or_default())
                    .map_err(|e| TestbedError::Invalid(format!("not an SNS envelope: {e}")))?;
                let published = envelope["Message"].as_str().unwrap_or_default();
                let attributes = envelope["MessageAttributes"]
                    .as_object()
                    .map(|attributes| {
                        attributes
                            .iter()
                            .map(|(k, v)| (k.clone(), v["Value"].as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                received.push(Received {
                    subject: envelope["Subject"].as_str().unwrap_or_default().to_string(),
                    message: serde_json::from_str(published).unwrap_or(serde_json::Value::String(published.into())),
                    attributes,
                });
                if let Some(handle) = message.receipt_handle() {
                    let _ = self.sqs.delete_message().queue_url(&self.queue_url).receipt_handle(handle).send().await;
                }
            }
        }
    }
}
