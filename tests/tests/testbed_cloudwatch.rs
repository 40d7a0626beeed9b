//! CloudWatch through the fault proxy: aws-sdk-cloudwatch speaks Smithy
//! RPCv2-CBOR, moto only awsQuery, and the proxy translates both ways
//! (tests/src/fault_proxy/cloudwatch_cbor.rs). These tests drive the real
//! SDK against a real moto server.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_config::retry::RetryConfig;
use aws_sdk_cloudwatch::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_cloudwatch::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_cloudwatch::error::{BoxError, ProvideErrorMetadata};
use aws_sdk_cloudwatch::operation::list_metrics::ListMetricsError;
use aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataError;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    Dimension, DimensionFilter, Metric, MetricDataQuery, MetricDatum, MetricStat, ScanBy, StandardUnit, StatusCode,
};
use headroom_testbed::{DEFAULT_REGION, Fault, LocalAws, init_test_tracing};

const NAMESPACE: &str = "Headroom/Testbed";

async fn start() -> LocalAws {
    init_test_tracing();
    LocalAws::start().await.expect("local AWS starts (run scripts/setup-moto.sh)")
}

/// The `Content-Encoding` of each request the SDK sent.
#[derive(Debug, Default, Clone)]
struct Sent(Arc<Mutex<Vec<Option<String>>>>);

impl Intercept for Sent {
    fn name(&self) -> &'static str {
        "testbed::Sent"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let encoding = context.request().headers().get("content-encoding").map(str::to_owned);
        self.0.lock().unwrap().push(encoding);
        Ok(())
    }
}

async fn cloudwatch_with(aws: &LocalAws, retry: RetryConfig, sent: &Sent) -> aws_sdk_cloudwatch::Client {
    let config = aws.sdk_config_with_retry(DEFAULT_REGION, retry).await;
    let config = aws_sdk_cloudwatch::config::Builder::from(&config).interceptor(sent.clone()).build();
    aws_sdk_cloudwatch::Client::from_conf(config)
}

async fn cloudwatch(aws: &LocalAws) -> aws_sdk_cloudwatch::Client {
    cloudwatch_with(aws, headroom_testbed::test_retry_config(), &Sent::default()).await
}

fn dimensions(pairs: &[(&str, &str)]) -> Vec<Dimension> {
    pairs.iter().map(|(name, value)| Dimension::builder().name(*name).value(*value).build()).collect()
}

fn metric(name: &str, dims: &[(&str, &str)]) -> Metric {
    Metric::builder().namespace(NAMESPACE).metric_name(name).set_dimensions(Some(dimensions(dims))).build()
}

fn query(id: &str, metric: Metric, stat: &str) -> MetricDataQuery {
    MetricDataQuery::builder()
        .id(id)
        .label(format!("{id} label"))
        .metric_stat(MetricStat::builder().metric(metric).period(60).stat(stat).build())
        .return_data(true)
        .build()
}

/// Whole seconds, a few minutes ago, on a minute boundary: moto buckets
/// GetMetricData by period from the start time.
fn minute_ago(minutes: u64) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    now / 60 * 60 - minutes * 60
}

fn at(secs: u64) -> DateTime {
    DateTime::from_secs(secs as i64)
}

const LAB_A: &[(&str, &str)] = &[("ClusterName", "lab"), ("AvailabilityZone", "us-west-2a")];
const LAB_B: &[(&str, &str)] = &[("ClusterName", "lab"), ("AvailabilityZone", "us-west-2b")];

#[tokio::test]
async fn put_metric_data_reads_back_through_get_metric_data() {
    let aws = start().await;
    let sent = Sent::default();
    let client = cloudwatch_with(&aws, headroom_testbed::test_retry_config(), &sent).await;
    let base = minute_ago(10);
    let datum = |dims: &[(&str, &str)], secs: u64| {
        MetricDatum::builder()
            .metric_name("FreeIpAddresses")
            .set_dimensions(Some(dimensions(dims)))
            .timestamp(at(secs))
            .unit(StandardUnit::Count)
    };
    let data = vec![
        // Two points in the minute after `base` ...
        datum(LAB_A, base + 67).value(12.5).storage_resolution(60).build(),
        datum(LAB_A, base + 89).value(7.25).build(),
        // ... and a value distribution two minutes later: 2 × 1 + 4 × 2.5.
        datum(LAB_A, base + 185).values(1.0).values(2.5).counts(2.0).counts(4.0).build(),
        // The other AZ, which the first query must not see.
        datum(LAB_B, base + 70).value(100.0).build(),
    ];
    client.put_metric_data().namespace(NAMESPACE).set_metric_data(Some(data)).send().await.expect("PutMetricData");

    // Large enough for the SDK to gzip it (10 KiB by default).
    let many: Vec<MetricDatum> = (0..200)
        .map(|i| {
            MetricDatum::builder()
                .metric_name("FreePrefixes")
                .dimensions(Dimension::builder().name("SubnetId").value(format!("subnet-{i:017x}")).build())
                .timestamp(at(base + 130))
                .value(f64::from(i))
                .build()
        })
        .collect();
    client.put_metric_data().namespace(NAMESPACE).set_metric_data(Some(many)).send().await.expect("big PutMetricData");
    let sent = sent.0.lock().unwrap().clone();
    assert_eq!(sent, [None, Some("gzip".to_owned())], "only the big body is compressed");

    let out = client
        .get_metric_data()
        .metric_data_queries(query("a", metric("FreeIpAddresses", LAB_A), "Sum"))
        .metric_data_queries(query("b", metric("FreeIpAddresses", LAB_B), "Maximum"))
        .metric_data_queries(query(
            "p",
            metric("FreePrefixes", &[("SubnetId", &format!("subnet-{:017x}", 150))]),
            "Sum",
        ))
        .start_time(at(base))
        .end_time(at(base + 600))
        .scan_by(ScanBy::TimestampAscending)
        .max_datapoints(100)
        .send()
        .await
        .expect("GetMetricData");
    let result = |id: &str| {
        out.metric_data_results().iter().find(|r| r.id() == Some(id)).unwrap_or_else(|| panic!("{id} in {out:?}"))
    };
    let a = result("a");
    assert_eq!(a.label(), Some("a label"));
    assert_eq!(a.status_code(), Some(&StatusCode::Complete));
    assert_eq!(a.values(), [19.75, 12.0]);
    assert_eq!(a.timestamps(), [at(base + 60), at(base + 180)]);
    let b = result("b");
    assert_eq!((b.values(), b.timestamps()), (&[100.0][..], &[at(base + 60)][..]));
    assert_eq!(result("p").values(), [150.0], "the gzipped call reached moto whole");

    let log = aws.proxy().call_log();
    let seen: Vec<_> = log.iter().map(|r| (r.service.as_str(), r.action.as_str(), r.status, r.forwarded)).collect();
    assert_eq!(
        seen,
        [
            ("monitoring", "PutMetricData", Some(200), true),
            ("monitoring", "PutMetricData", Some(200), true),
            ("monitoring", "GetMetricData", Some(200), true),
        ]
    );
    assert!(log[0].is_reporting() && !log[0].changes_state());
}

#[tokio::test]
async fn list_metrics_filters_by_namespace_name_and_dimension() {
    let aws = start().await;
    let client = cloudwatch(&aws).await;
    let point = |name: &str, dims: &[(&str, &str)]| {
        MetricDatum::builder().metric_name(name).set_dimensions(Some(dimensions(dims))).value(1.0).build()
    };
    let data = vec![
        point("FreeIpAddresses", LAB_A),
        point("FreeIpAddresses", LAB_B),
        point("FreePrefixes", LAB_A),
        point("MinAzFreeIpAddresses", &[("ClusterName", "lab")]),
    ];
    client.put_metric_data().namespace(NAMESPACE).set_metric_data(Some(data)).send().await.unwrap();
    client.put_metric_data().namespace("Elsewhere").metric_data(point("FreeIpAddresses", LAB_A)).send().await.unwrap();

    let listed = |out: &aws_sdk_cloudwatch::operation::list_metrics::ListMetricsOutput| {
        let mut names: Vec<String> = out
            .metrics()
            .iter()
            .map(|m| {
                let dims: Vec<String> =
                    m.dimensions().iter().map(|d| format!("{}={}", d.name().unwrap(), d.value().unwrap())).collect();
                format!("{}/{} {}", m.namespace().unwrap(), m.metric_name().unwrap(), dims.join(","))
            })
            .collect();
        names.sort();
        names
    };
    let in_a = DimensionFilter::builder().name("AvailabilityZone").value("us-west-2a").build();
    let out = client.list_metrics().namespace(NAMESPACE).dimensions(in_a.clone()).send().await.unwrap();
    assert_eq!(
        listed(&out),
        [
            "Headroom/Testbed/FreeIpAddresses ClusterName=lab,AvailabilityZone=us-west-2a",
            "Headroom/Testbed/FreePrefixes ClusterName=lab,AvailabilityZone=us-west-2a",
        ]
    );
    assert_eq!(out.next_token(), None);
    let out = client.list_metrics().metric_name("FreeIpAddresses").dimensions(in_a).send().await.unwrap();
    assert_eq!(
        listed(&out),
        [
            "Elsewhere/FreeIpAddresses ClusterName=lab,AvailabilityZone=us-west-2a",
            "Headroom/Testbed/FreeIpAddresses ClusterName=lab,AvailabilityZone=us-west-2a",
        ]
    );
    // A filter by name alone matches any value.
    let any_az = DimensionFilter::builder().name("AvailabilityZone").build();
    let out = client.list_metrics().namespace(NAMESPACE).dimensions(any_az).send().await.unwrap();
    assert_eq!(listed(&out).len(), 3, "{:?}", listed(&out));
    assert_eq!(aws.proxy().call_count("ListMetrics"), 3);
}

#[tokio::test]
async fn moto_errors_come_back_as_typed_sdk_errors() {
    let aws = start().await;
    let client = cloudwatch_with(&aws, RetryConfig::disabled(), &Sent::default()).await;

    let error = client.list_metrics().next_token("no-such-token").send().await.expect_err("moto refuses");
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(400));
    let service_error = error.into_service_error();
    assert!(matches!(service_error, ListMetricsError::InvalidParameterValueException(_)), "{service_error:?}");
    assert_eq!(service_error.code(), Some("InvalidParameterValue"));
    assert_eq!(service_error.message(), Some("Request parameter NextToken is invalid"));

    let bad = MetricDatum::builder().metric_name("M").values(1.0).values(2.0).counts(1.0).build();
    let error = client.put_metric_data().namespace(NAMESPACE).metric_data(bad).send().await.expect_err("refused");
    let service_error = error.into_service_error();
    assert!(matches!(service_error, PutMetricDataError::InvalidParameterValueException(_)), "{service_error:?}");
    assert!(service_error.message().is_some_and(|m| m.contains("must be of the same size")), "{service_error:?}");

    let log = aws.proxy().call_log();
    assert!(log.iter().all(|r| r.forwarded && r.status == Some(400)), "{log:?}");
}

#[tokio::test]
async fn injected_faults_take_cloudwatch_shapes_and_the_sdk_retries_a_throttle() {
    let aws = start().await;
    let client = cloudwatch(&aws).await;
    let proxy = aws.proxy();
    let base = minute_ago(5);

    // Throttled once, retried by the SDK's standard retries: one data point.
    proxy.fail_nth("PutMetricData", 1, Fault::Throttle);
    let datum = MetricDatum::builder()
        .metric_name("Remediations")
        .set_dimensions(Some(dimensions(&[("ClusterName", "lab")])))
        .timestamp(at(base + 30))
        .value(1.0)
        .build();
    client.put_metric_data().namespace(NAMESPACE).metric_data(datum).send().await.expect("retried");
    assert_eq!((proxy.call_count("PutMetricData"), proxy.forwarded_count("PutMetricData")), (2, 1));
    let log = proxy.call_log();
    assert_eq!((log[0].injected, log[0].status), (Some(Fault::Throttle), Some(400)));

    // A 500 is retried too.
    proxy.fail_nth("GetMetricData", 1, Fault::ServerError);
    let out = client
        .get_metric_data()
        .metric_data_queries(query("r", metric("Remediations", &[("ClusterName", "lab")]), "Sum"))
        .start_time(at(base))
        .end_time(at(base + 300))
        .send()
        .await
        .expect("retried");
    assert_eq!(out.metric_data_results()[0].values(), [1.0], "counted once: {out:?}");
    assert_eq!(proxy.call_count("GetMetricData"), 2);

    // Without retries each shape reaches the SDK with its code.
    let once = cloudwatch_with(&aws, RetryConfig::disabled(), &Sent::default()).await;
    proxy.fail_nth("PutMetricData", 1, Fault::Throttle);
    let error = once.put_metric_data().namespace(NAMESPACE).send().await.expect_err("throttled");
    assert_eq!(error.as_service_error().and_then(|e| e.code()), Some("Throttling"));
    let raw = error.raw_response().expect("a response");
    assert_eq!(raw.headers().get("x-amzn-query-error"), Some("Throttling;Sender"));
    assert_eq!(raw.headers().get("smithy-protocol"), Some("rpc-v2-cbor"));

    proxy.fail_nth("ListMetrics", 1, Fault::ServerError);
    let error = once.list_metrics().send().await.expect_err("500");
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(500));
    assert_eq!(error.as_service_error().and_then(|e| e.code()), Some("InternalFailure"));

    proxy.fail_nth("ListMetrics", 1, Fault::Reject { status: 403, code: "AccessDenied" });
    let error = once.list_metrics().send().await.expect_err("denied");
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(403));
    assert_eq!(error.as_service_error().and_then(|e| e.code()), Some("AccessDenied"));

    proxy.fail_nth("ListMetrics", 1, Fault::Reject { status: 400, code: "InvalidParameterValue" });
    let error = once.list_metrics().send().await.expect_err("rejected");
    assert!(matches!(error.as_service_error(), Some(ListMetricsError::InvalidParameterValueException(_))), "{error:?}");

    proxy.fail_nth("ListMetrics", 1, Fault::DropAfterForward);
    once.list_metrics().send().await.expect_err("dropped");
    assert!(once.list_metrics().send().await.is_ok(), "one-shot faults");
}
