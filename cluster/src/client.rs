//! The one HTTP client of metcd: used by `metcdctl`, the integration tests
//! and the workload harness's cluster target.
//!
//! A [`Client`] holds a list of endpoints (`127.0.0.1:13379` or
//! `http://127.0.0.1:13379`). Each request goes to the endpoint that
//! answered last. A `307`/`308` redirect (a follower pointing at the leader)
//! is followed with the same method and body, up to [`MAX_REDIRECTS`] hops,
//! and the leader is remembered for the next request. Every request has a
//! deadline ([`Client::with_timeout`]).
//!
//! # Retries: only what provably was not applied
//!
//! A write is sent again (to the next endpoint, and in rounds every 200 ms
//! for up to [`Client::with_retry`], 5 s by default) only when it certainly
//! had no effect: the connection could not be made, or the server answered
//! 503 with outcome `not-applied` (`X-Metcd-Outcome`, see `api::http`: no
//! leader, overloaded, proposal dropped, entry overwritten). When the
//! outcome is not known (a 503 with outcome `unknown` or none, no answer
//! within the deadline, a connection that broke after the request was
//! sent) the write is **not** retried: a retried put could be applied twice,
//! and a reader could see 1, 2, 1. It fails with [`ClientError::Unknown`];
//! the caller reads the key to find out. Reads change nothing, so a read is
//! retried on any 503 and on any broken connection (not on its deadline).
//!
//! ```no_run
//! # async fn demo() -> Result<(), cluster::client::ClientError> {
//! let client = cluster::client::Client::new(&["127.0.0.1:13379", "127.0.0.1:23379"])?;
//! client.put(b"hello", b"world").await?;
//! assert_eq!(client.get(b"hello").await?, Some(b"world".to_vec()));
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::api::http::OUTCOME_HEADER;
use crate::raft::NodeStatus;
use crate::state_machine::Member;

/// Redirects followed per request.
pub const MAX_REDIRECTS: usize = 5;
/// Pause between rounds over the endpoints while the cluster elects a leader.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoints given; pass at least one host:port")]
    NoEndpoints,
    #[error("endpoint {0:?} is not a valid http://host:port address")]
    BadEndpoint(String),
    #[error("no endpoint could be reached ({0})")]
    Unreachable(String),
    #[error("the connection broke before the answer arrived ({0})")]
    Broken(String),
    /// The write was sent and may or may not have been applied.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    #[error("request to {url} timed out after {millis} ms")]
    Timeout { url: String, millis: u128 },
    #[error("too many redirects (last location {0})")]
    TooManyRedirects(String),
    #[error("server answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("unexpected response body: {0}")]
    Body(String),
}

/// A response: status, headers, body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The `error` field of a JSON error body, or the body as text.
    pub fn message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned())
    }

    /// True when the answer says the request had no effect: a 503 whose
    /// outcome is `not-applied`, or any 503 to a request that changes
    /// nothing.
    fn not_applied(&self, changes_state: bool) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
            && (!changes_state
                || self
                    .headers
                    .get(OUTCOME_HEADER)
                    .is_some_and(|v| v.as_bytes() == b"not-applied"))
    }

    fn into_error(self) -> ClientError {
        ClientError::Status {
            status: self.status.as_u16(),
            message: self.message(),
        }
    }
}

/// A client of a metcd cluster. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    endpoints: Arc<RwLock<Vec<String>>>,
    preferred: Arc<AtomicUsize>,
    http: HyperClient<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    retry_for: Duration,
}

/// `127.0.0.1:1` or `http://127.0.0.1:1/` -> `http://127.0.0.1:1`.
pub fn normalize_endpoint(endpoint: &str) -> Result<String, ClientError> {
    let trimmed = endpoint.trim().trim_end_matches('/');
    let with_scheme = if trimmed.starts_with("http://") {
        trimmed.to_string()
    } else if trimmed.contains("://") {
        return Err(ClientError::BadEndpoint(endpoint.to_string()));
    } else {
        format!("http://{trimmed}")
    };
    let host = with_scheme.trim_start_matches("http://");
    if host.is_empty() || host.contains('/') || with_scheme.parse::<hyper::Uri>().is_err() {
        return Err(ClientError::BadEndpoint(endpoint.to_string()));
    }
    Ok(with_scheme)
}

/// Percent-encodes a key for a URL path (`/kv/<key>`).
pub fn key_path(key: &[u8]) -> String {
    let mut path = String::from("/kv/");
    for byte in key {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(byte) {
            path.push(*byte as char);
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path
}

impl Client {
    /// A client for `endpoints`, with a 10 s request deadline.
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<Client, ClientError> {
        let endpoints = endpoints
            .iter()
            .flat_map(|e| {
                e.as_ref()
                    .split(',')
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|e| !e.trim().is_empty())
            .map(|e| normalize_endpoint(&e))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let http = HyperClient::builder(TokioExecutor::new())
            // Below the server's default header read timeout (10 s), which
            // also closes idle keep-alive connections: the client drops an
            // idle connection before the server does, so a write is not sent
            // on a connection the server is closing (its outcome would be
            // unknown).
            .pool_idle_timeout(Duration::from_secs(5))
            .build(connector);
        Ok(Client {
            endpoints: Arc::new(RwLock::new(endpoints)),
            preferred: Arc::new(AtomicUsize::new(0)),
            http,
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(5),
        })
    }

    /// The same client with another per-request deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The same client retrying for at most `retry_for` (default 5 s) when
    /// no endpoint can be reached or every one answers 503 (an election, a
    /// node just killed); `Duration::ZERO` disables retries.
    pub fn with_retry(mut self, retry_for: Duration) -> Client {
        self.retry_for = retry_for;
        self
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        body: &Bytes,
    ) -> Result<Response, ClientError> {
        let request = hyper::Request::builder()
            .method(method.clone())
            .uri(url)
            .body(Full::new(body.clone()))
            .map_err(|_| ClientError::BadEndpoint(url.to_string()))?;
        let exchange = async {
            // Only a failed connect proves the request was never sent.
            let response = self.http.request(request).await.map_err(|e| {
                if e.is_connect() {
                    ClientError::Unreachable(format!("{url}: {e}"))
                } else {
                    ClientError::Broken(format!("{url}: {e}"))
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| ClientError::Broken(format!("{url}: {e}")))?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                url: url.to_string(),
                millis: self.timeout.as_millis(),
            }),
        }
    }

    /// Sends to one endpoint, following redirects.
    async fn send_following(
        &self,
        method: &Method,
        base: &str,
        path: &str,
        body: &Bytes,
    ) -> Result<Response, ClientError> {
        let mut url = format!("{base}{path}");
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send_once(method, &url, body).await?;
            if !matches!(
                response.status,
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
            ) {
                return Ok(response);
            }
            let Some(location) = response
                .headers
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
            else {
                return Ok(response);
            };
            url = location.to_string();
            self.remember(&url);
        }
        Err(ClientError::TooManyRedirects(url))
    }

    /// Makes the endpoint of `url` the first one tried next time, adding
    /// it to the list if it was learned from a redirect.
    fn remember(&self, url: &str) {
        let base: String = match url.trim_start_matches("http://").split_once('/') {
            Some((host, _)) => format!("http://{host}"),
            None => url.to_string(),
        };
        let mut endpoints = self.endpoints.write().unwrap_or_else(|p| p.into_inner());
        let index = match endpoints.iter().position(|e| *e == base) {
            Some(i) => i,
            None => {
                endpoints.push(base);
                endpoints.len() - 1
            }
        };
        self.preferred.store(index, Ordering::Relaxed);
    }

    /// Sends a request to the cluster: the preferred endpoint first, then
    /// the others, retrying only what provably had no effect (see the
    /// module docs). A write whose outcome is not known fails with
    /// [`ClientError::Unknown`].
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let changes_state = !matches!(method, Method::GET | Method::HEAD);
        let deadline = std::time::Instant::now() + self.retry_for;
        loop {
            let outcome = self.one_round(&method, path, &body, changes_state).await;
            let retryable = match &outcome {
                Ok(response) => response.not_applied(changes_state),
                Err(ClientError::Unreachable(_)) => true,
                Err(ClientError::Broken(_)) => !changes_state,
                Err(_) => false,
            };
            if !retryable || std::time::Instant::now() + RETRY_PAUSE >= deadline {
                return outcome;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Tries every endpoint once, the preferred one first, moving on only
    /// when the request provably had no effect there.
    async fn one_round(
        &self,
        method: &Method,
        path: &str,
        body: &Bytes,
        changes_state: bool,
    ) -> Result<Response, ClientError> {
        let endpoints = self.endpoints();
        let start = self.preferred.load(Ordering::Relaxed) % endpoints.len();
        let mut last_error = None;
        let mut last_unavailable = None;
        for offset in 0..endpoints.len() {
            let index = (start + offset) % endpoints.len();
            match self
                .send_following(method, &endpoints[index], path, body)
                .await
            {
                Ok(response) if response.not_applied(changes_state) => {
                    last_unavailable = Some(response);
                }
                Ok(response)
                    if changes_state && response.status == StatusCode::SERVICE_UNAVAILABLE =>
                {
                    return Err(ClientError::Unknown(response.message()));
                }
                Ok(response) => {
                    if offset > 0 {
                        self.preferred.store(index, Ordering::Relaxed);
                    }
                    return Ok(response);
                }
                Err(err @ ClientError::Unreachable(_)) => last_error = Some(err),
                Err(err @ ClientError::Broken(_)) if !changes_state => last_error = Some(err),
                Err(err @ (ClientError::Broken(_) | ClientError::Timeout { .. }))
                    if changes_state =>
                {
                    return Err(ClientError::Unknown(format!(
                        "{err}; the write may or may not have been applied, read the key to find out"
                    )));
                }
                Err(err) => return Err(err),
            }
        }
        if let Some(response) = last_unavailable {
            return Ok(response);
        }
        Err(last_error.unwrap_or(ClientError::NoEndpoints))
    }

    /// Sends to exactly one endpoint, without redirects or fail-over.
    pub async fn request_to(
        &self,
        endpoint: &str,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let base = normalize_endpoint(endpoint)?;
        self.send_once(&method, &format!("{base}{path}"), &body)
            .await
    }

    fn expect_success(response: Response) -> Result<Response, ClientError> {
        if response.status.is_success() {
            Ok(response)
        } else {
            Err(response.into_error())
        }
    }

    fn parse<T: DeserializeOwned>(response: Response) -> Result<T, ClientError> {
        let response = Self::expect_success(response)?;
        serde_json::from_slice(&response.body).map_err(|e| ClientError::Body(e.to_string()))
    }

    /// The Prometheus text `endpoint` serves at `/metrics` (metcd's HTTP
    /// API, or an etcd member's client URL).
    pub async fn metrics_of(&self, endpoint: &str) -> Result<String, ClientError> {
        let response = self
            .request_to(endpoint, Method::GET, "/metrics", Bytes::new())
            .await?;
        let response = Self::expect_success(response)?;
        Ok(String::from_utf8_lossy(&response.body).into_owned())
    }

    /// Stores `value` under `key`; returns once committed and applied.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        let response = self
            .request(Method::PUT, &key_path(key), Bytes::copy_from_slice(value))
            .await?;
        Self::expect_success(response).map(|_| ())
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &[u8]) -> Result<(), ClientError> {
        let response = self
            .request(Method::DELETE, &key_path(key), Bytes::new())
            .await?;
        Self::expect_success(response).map(|_| ())
    }

    /// A linearizable read.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        self.get_path(&key_path(key)).await
    }

    /// A serializable (local, possibly stale) read.
    pub async fn get_serializable(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        self.get_path(&format!("{}?consistency=serializable", key_path(key)))
            .await
    }

    async fn get_path(&self, path: &str) -> Result<Option<Vec<u8>>, ClientError> {
        let response = self.request(Method::GET, path, Bytes::new()).await?;
        match response.status {
            StatusCode::OK => Ok(Some(response.body.to_vec())),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(response.into_error()),
        }
    }

    /// `/-/status` of one endpoint.
    pub async fn status_of(&self, endpoint: &str) -> Result<NodeStatus, ClientError> {
        Self::parse(
            self.request_to(endpoint, Method::GET, "/-/status", Bytes::new())
                .await?,
        )
    }

    /// `/-/status` of the first endpoint that answers.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        Self::parse(self.request(Method::GET, "/-/status", Bytes::new()).await?)
    }

    /// The members as the first answering endpoint knows them.
    pub async fn members(&self) -> Result<Vec<Member>, ClientError> {
        #[derive(serde::Deserialize)]
        struct List {
            members: Vec<Member>,
        }
        let list: List = Self::parse(
            self.request(Method::GET, "/-/members", Bytes::new())
                .await?,
        )?;
        Ok(list.members)
    }

    /// Adds a voter (or a learner) with its peer and client addresses.
    pub async fn member_add(
        &self,
        id: u64,
        peer: &str,
        client: &str,
        grpc: Option<&str>,
        learner: bool,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({
            "id": id, "peer": peer, "client": client, "grpc": grpc, "learner": learner
        });
        let response = self
            .request(Method::POST, "/-/members", Bytes::from(body.to_string()))
            .await?;
        Self::expect_success(response).map(|_| ())
    }

    /// Promotes a learner to a voter.
    pub async fn member_promote(&self, id: u64) -> Result<(), ClientError> {
        let response = self
            .request(
                Method::POST,
                &format!("/-/members/{id}/promote"),
                Bytes::new(),
            )
            .await?;
        Self::expect_success(response).map(|_| ())
    }

    /// Removes a member.
    pub async fn member_remove(&self, id: u64) -> Result<(), ClientError> {
        let response = self
            .request(Method::DELETE, &format!("/-/members/{id}"), Bytes::new())
            .await?;
        Self::expect_success(response).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:1").unwrap(),
            "http://127.0.0.1:1"
        );
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:1/").unwrap(),
            "http://127.0.0.1:1"
        );
        assert!(normalize_endpoint("https://x:1").is_err());
        assert!(Client::new::<&str>(&[]).is_err());
    }

    /// A fake server answering every request with `status` and, if given,
    /// the outcome header; counts the requests it gets.
    async fn fake_server(
        status: StatusCode,
        outcome: Option<&'static str>,
        delay: Duration,
    ) -> (String, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        let app = axum::Router::new().fallback(move || {
            let seen = Arc::clone(&seen);
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let mut response =
                    axum::response::Response::new(axum::body::Body::from(r#"{"error":"fake"}"#));
                *response.status_mut() = status;
                if let Some(outcome) = outcome {
                    response.headers_mut().insert(
                        OUTCOME_HEADER,
                        hyper::header::HeaderValue::from_static(outcome),
                    );
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (address, count)
    }

    /// Issue 9 item 2: a write answered "outcome unknown" (or not at all
    /// within the deadline) is not sent again; one answered "not applied"
    /// is.
    #[tokio::test]
    async fn only_writes_that_provably_were_not_applied_are_retried() {
        let retry = Duration::from_millis(700);
        let (unknown, count) = fake_server(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("unknown"),
            Duration::ZERO,
        )
        .await;
        let client = Client::new(&[unknown.as_str()]).unwrap().with_retry(retry);
        let result = client.put(b"k", b"v").await;
        assert!(matches!(result, Err(ClientError::Unknown(_))), "{result:?}");
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "an unknown outcome was retried"
        );

        let (bare, count) =
            fake_server(StatusCode::SERVICE_UNAVAILABLE, None, Duration::ZERO).await;
        let client = Client::new(&[bare.as_str()]).unwrap().with_retry(retry);
        let result = client.put(b"k", b"v").await;
        assert!(matches!(result, Err(ClientError::Unknown(_))), "{result:?}");
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "a 503 without outcome was retried"
        );

        let (slow, count) = fake_server(StatusCode::NO_CONTENT, None, Duration::from_secs(2)).await;
        let client = Client::new(&[slow.as_str()])
            .unwrap()
            .with_retry(retry)
            .with_timeout(Duration::from_millis(200));
        let result = client.put(b"k", b"v").await;
        assert!(matches!(result, Err(ClientError::Unknown(_))), "{result:?}");
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "a timed-out write was retried"
        );

        let (refused, count) = fake_server(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("not-applied"),
            Duration::ZERO,
        )
        .await;
        let client = Client::new(&[refused.as_str()]).unwrap().with_retry(retry);
        let result = client.put(b"k", b"v").await;
        assert!(
            matches!(result, Err(ClientError::Status { status: 503, .. })),
            "{result:?}"
        );
        assert!(
            count.load(Ordering::SeqCst) > 1,
            "a not-applied write was not retried"
        );

        // Reads change nothing: any 503 is retried.
        let (bare, count) =
            fake_server(StatusCode::SERVICE_UNAVAILABLE, None, Duration::ZERO).await;
        let client = Client::new(&[bare.as_str()]).unwrap().with_retry(retry);
        assert!(client.get(b"k").await.is_err());
        assert!(
            count.load(Ordering::SeqCst) > 1,
            "a failed read was not retried"
        );
    }

    #[test]
    fn keys_are_escaped() {
        assert_eq!(key_path(b"a b/c"), "/kv/a%20b/c");
        assert_eq!(key_path(b"-/status"), "/kv/-/status");
    }
}
