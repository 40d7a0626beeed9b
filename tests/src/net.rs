//! Small HTTP plumbing shared by the proxy, the fake API server and moto's
//! readiness probe: an accept loop that dies with its owner, and a plain-HTTP
//! client.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::TestbedError;

/// Plain-HTTP client used to talk to local servers.
pub(crate) type PlainClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn plain_client() -> PlainClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        // moto's werkzeug server may close idle keep-alive connections at any
        // time; a short idle timeout keeps stale sockets out of the pool.
        .pool_idle_timeout(Duration::from_secs(5))
        .build(connector)
}

/// Binds 127.0.0.1 on an OS-chosen port.
pub(crate) async fn bind_loopback(what: &str) -> Result<(TcpListener, SocketAddr), TestbedError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| TestbedError::io(format!("binding 127.0.0.1:0 for the {what}"), e))?;
    let addr = listener.local_addr().map_err(|e| TestbedError::io(format!("reading the {what}'s local address"), e))?;
    Ok((listener, addr))
}

/// An accept loop running as a task. Dropping it aborts the loop and, through
/// the `JoinSet` it owns, every connection task it spawned, so no server
/// outlives the value that owns it.
pub(crate) struct ServerTask {
    handle: JoinHandle<()>,
}

impl ServerTask {
    pub(crate) fn spawn<F, Fut>(listener: TcpListener, name: &'static str, on_conn: F) -> Self
    where
        F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            conns.spawn(on_conn(stream, peer));
                        }
                        Err(error) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(server = name, %error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Self { handle }
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// One request with a buffered body; returns the status and the whole body.
pub(crate) async fn simple_request(
    client: &PlainClient,
    method: http::Method,
    url: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<(http::StatusCode, Bytes), TestbedError> {
    let err = |message: String| TestbedError::Http { method: method.to_string(), url: url.to_owned(), message };
    let request = http::Request::builder()
        .method(method.clone())
        .uri(url)
        .body(Full::new(body))
        .map_err(|e| err(e.to_string()))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| err(e.to_string()))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| err(e.to_string()))?.to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| err(format!("no answer within {timeout:?}")))?
}
