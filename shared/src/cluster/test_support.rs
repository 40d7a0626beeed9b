//! Test helpers of the cluster code: a one-thread HTTP server on loopback
//! that plays EKS and the API server, an SDK configuration for it, a test CA.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A self-signed test CA (EC P-256, CN=headroom-test-ca, valid to 2126),
/// made with `openssl req -x509 -newkey ec ...`; its key was discarded.
pub const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBnjCCAUOgAwIBAgIUevlOx9KLE4SN6dIydSfaxcKcxm0wCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQaGVhZHJvb20tdGVzdC1jYTAgFw0yNjExMjgxNjI1MTlaGA8y
MTI2MTEwNDE2MjUxOVowGzEZMBcGA1UEAwwQaGVhZHJvb20tdGVzdC1jYTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABJaZcFVfIH2CyTb2x32I7NHtQbnX4ZzEA8XE
+b/+oGFlIvH5oEimW4UplUF85NPgM7e/wuHOZ3b0msZy97FRt2WjYzBhMB0GA1Ud
DgQWBBQzCoXUhVIaJXOc6ONS0URKdWouLjAfBgNVHSMEGDAWgBQzCoXUhVIaJXOc
6ONS0URKdWouLjAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwIBBjAKBggq
hkjOPQQDAgNJADBGAiEA24VNebWoW9IbWPiJd1ohn9ONbPh77mK/TR5ZW8H0C7AC
IQD1LOpDU4hfjbM6X79bYXJlW82XUAH7G6tCYbPZBngsXg==
-----END CERTIFICATE-----
";

pub const VERSION_JSON: &str = r#"{"major":"1","minor":"33","gitVersion":"v1.33.0-eks-test","gitCommit":"0","gitTreeState":"clean","buildDate":"2025-01-01T00:00:00Z","goVersion":"go1.24","compiler":"gc","platform":"linux/amd64"}"#;

pub fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_705_322_096)
}

#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "kubeconfig"), allow(dead_code))]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub type Handler = Box<dyn Fn(&Seen) -> (u16, Vec<(String, String)>, String) + Send>;

/// A one-thread HTTP/1.1 server on 127.0.0.1 that records requests and
/// answers each with `handler`, one request per connection.
pub fn serve(handler: impl FnOnce(String) -> Handler) -> (String, Arc<StdMutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handler = handler(base.clone());
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_owned();
            let path = parts.next().unwrap_or_default().to_owned();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((n, v)) = h.trim_end().split_once(':') {
                    headers.push((n.trim().to_owned(), v.trim().to_owned()));
                }
            }
            let seen = Seen { method, path, headers };
            if let Some(len) = seen.header("content-length").and_then(|l| l.parse().ok()) {
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
            }
            let (status, extra, body) = handler(&seen);
            log.lock().unwrap().push(seen);
            let mut response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (n, v) in extra {
                response.push_str(&format!("{n}: {v}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(&body);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (base, seen)
}

/// Fake EKS + API server: DescribeCluster points back at itself.
pub fn fake_eks(cluster_status: &'static str) -> (String, Arc<StdMutex<Vec<Seen>>>) {
    serve(move |base| {
        Box::new(move |req: &Seen| {
            if req.path.starts_with("/clusters/") {
                let name = req.path.trim_start_matches("/clusters/");
                let endpoint = if cluster_status == "CREATING" { serde_json::Value::Null } else { base.clone().into() };
                let body = serde_json::json!({"cluster": {
                    "name": name,
                    "status": cluster_status,
                    "endpoint": endpoint,
                    "certificateAuthority": {"data": STANDARD.encode(TEST_CA_PEM)},
                }});
                (200, vec![], body.to_string())
            } else if req.path == "/version" {
                (200, vec![], VERSION_JSON.to_owned())
            } else {
                (404, vec![], "{}".to_owned())
            }
        })
    })
}

pub fn sdk_config(endpoint_url: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            Some("session-token".into()),
            None,
            "test",
        )))
        .endpoint_url(endpoint_url)
        .retry_config(RetryConfig::disabled())
        .build()
}

#[cfg_attr(not(feature = "kubeconfig"), allow(dead_code))]
pub fn write_kubeconfig(dir: &tempfile::TempDir, name: &str, server: &str, token: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server}
users:
- name: fake
  user:
    token: {token}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: kube-system
current-context: fake
"
        ),
    )
    .unwrap();
    path
}
