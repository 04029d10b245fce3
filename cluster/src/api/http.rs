//! The client HTTP API: what `curl` and `metcdctl` talk to.
//!
//! ```text
//! PUT    /<key>            body = value  -> 204 once committed and applied
//! PUT    /<key>?ttl=60     body = value  -> 200 {"lease","lease_hex","ttl","revision"}: a new lease
//!                                           of that TTL, then the key put with it (two proposals)
//! GET    /<key>                          -> 200 raw value bytes, 404 if absent
//! GET    /<key>?rev=N                    -> the raw value as of revision N (410 compacted, 400 future)
//! GET    /<prefix>?prefix, /<key>?from_key -> JSON listing of the range (api::read_query)
//!        ...&limit=N&keys_only&count_only   (any of these also answers a listing)
//! GET    /<key>?watch=true[&rev=N][&prefix=true][&prev_kv=true]
//!                                        -> a stream of JSON lines, one per change (api::http_watch)
//! DELETE /<key>                          -> 204 once committed and applied
//! /kv/<key>                              -> the same, for keys that start with "-/" or "kv/"
//! GET    /-/health                       -> 200 {"health":true,...} when a leader is known, else 503
//! GET    /-/status                       -> id, role, leader, term, commit/applied index, members, WAL fsyncs
//! GET    /-/members                      -> the members and their addresses
//! POST   /-/members                      -> add: {"id":4,"peer":"127.0.0.1:43380","client":"127.0.0.1:43379","learner":true}
//! POST   /-/members/<id>/promote         -> promote a learner to voter
//! DELETE /-/members/<id>                 -> remove a member
//! GET    /metrics                        -> Prometheus text format (api::metrics)
//! GET    /-/cluster                      -> cluster id and member id (api::identity)
//! POST   /v3/kv/{put,range,deleterange,txn,compaction} -> etcd's JSON gateway (api::gateway),
//!                                           also under /v3beta/; keys named v3/... are at /kv/v3/...
//! ```
//!
//! Every GET answers the store's revision in `X-Metcd-Revision`; a one-key
//! answer adds `X-Metcd-Create-Revision`, `X-Metcd-Mod-Revision` and
//! `X-Metcd-Version`. The query parameters, the listing's shape and how
//! bytes that are not UTF-8 appear in it are described in
//! [`super::read_query`]; an unknown or malformed parameter is a 400 naming
//! it and what is accepted.
//!
//! # Write path
//!
//! A write reaching a follower is answered with `307 Temporary Redirect` to
//! the same path on the leader's client address, so `curl -L` re-sends it
//! (body included) there. On the leader the body is read (bounded in size
//! and time), handed to the Raft thread as a proposal, and the handler waits
//! until the entry is committed by a quorum, fsynced in the WAL on a quorum,
//! and applied to the engine here. Only then is 204 returned, with the
//! cluster revision in `X-Metcd-Revision`.
//!
//! # Read path
//!
//! By default a GET is linearizable: the Raft thread obtains a read index
//! (a quorum confirms the leader; followers ask the leader), waits until it
//! has applied that index, and the value is then read from the local engine,
//! so a follower serves reads that reflect every write acknowledged before
//! the read began. `?consistency=serializable` skips that and reads the
//! local engine at once (fast, possibly stale). A read at a revision below
//! the compacted one is 410 Gone, above the current one 400, each with
//! etcd's message.
//!
//! # Errors and limits
//!
//! Every error has a JSON body `{"error": "..."}`. An empty key is 400, a
//! value over 1.5 MiB (etcd's request limit) is 413, a body that does not
//! arrive within the body timeout is 408 and the connection is closed. A
//! membership change that makes no sense (adding an existing member,
//! promoting a voter), arrives while another is still being applied, or is
//! refused by raft when applied is 409.
//!
//! # Outcomes: applied, not applied, unknown
//!
//! A 204 means applied. Every 409 and 503 says whether the request had an
//! effect, in the body (`"outcome"`) and in the `X-Metcd-Outcome` header:
//!
//! - `not-applied`: certainly not applied, and retrying is safe. No leader
//!   known or this node is not the leader (nothing was proposed); too many
//!   requests already wait for the Raft thread (503 with `Retry-After`,
//!   see `--max-queued-requests`); raft dropped the proposal; a new leader
//!   overwrote the entry, so it can never commit; a refused membership
//!   change (409). A read that fails is always `not-applied`: reads change
//!   nothing.
//! - `unknown`: the write was proposed and this node cannot tell whether it
//!   will be applied: the request timed out (quorum lost, leadership lost
//!   before the outcome was learned), the node shut down after proposing,
//!   or a snapshot replaced the log past the entry. Retrying could apply it
//!   twice; read the key to find out.
//!
//! # Connections
//!
//! [`serve`] runs hyper's HTTP/1 server itself (not `axum::serve`) so that
//! reading a request's headers has a deadline (`--header-read-timeout-ms`):
//! a client that opens connections and sends headers slowly (slowloris) has
//! them closed instead of holding them forever. hyper runs that deadline
//! while a keep-alive connection waits for its next request too, so idle
//! connections are closed after it; `cluster::client` drops its idle
//! connections sooner. The body has its own deadline (the body timeout
//! above).

// Helpers return a ready error `Response` as their `Err`, the idiom of axum
// handlers; it is large, but it is built once per failed request.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::sync::oneshot;

use super::grpc;
pub use super::raft_call::Outcome;
use super::raft_call::{self, CallError, Effect};
use super::read_query::{Consistency, ReadQuery, listing};
use crate::mvcc::MvccError;
use crate::raft::handle::Admission;
use crate::raft::{
    MemberChange, NodeHandle, NodeStatus, Proposer, Request, WriteError, WriteReply,
};
use crate::state_machine::{Command, Member};

/// etcd's default maximum request size.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;
/// Keys longer than this are refused (etcd has no hard key limit, but a key
/// is not a value).
pub const MAX_KEY_BYTES: usize = 4096;

/// Limits of the API.
#[derive(Debug, Clone, Copy)]
pub struct ApiConfig {
    /// How long a write or a linearizable read may wait for the cluster.
    pub request_timeout: Duration,
    /// How long a client may take to send its request body.
    pub body_timeout: Duration,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Client requests (writes, linearizable reads, membership changes)
    /// allowed to wait for the Raft thread; more are answered 503.
    pub max_queued_requests: usize,
    /// How often a watcher that asked for progress notifications and got
    /// no event meanwhile is told the revision it is synced to.
    pub watch_progress_interval: Duration,
}

/// etcd's default interval of watch progress notifications (10 minutes).
pub const DEFAULT_WATCH_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

/// The default of [`ApiConfig::max_queued_requests`]: far more than one
/// group commit needs, and with 1.5 MiB values at most a few GiB queued.
pub const DEFAULT_MAX_QUEUED_REQUESTS: usize = 1024;

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            request_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_queued_requests: DEFAULT_MAX_QUEUED_REQUESTS,
            watch_progress_interval: DEFAULT_WATCH_PROGRESS_INTERVAL,
        }
    }
}

#[derive(Clone)]
struct Api {
    node: NodeHandle,
    config: ApiConfig,
    admission: Admission,
}

/// The header that tells whether a failed request had an effect.
pub const OUTCOME_HEADER: &str = "x-metcd-outcome";

/// The router of one node.
pub fn router(node: NodeHandle, config: ApiConfig) -> Router {
    let admission = Admission::new(config.max_queued_requests);
    let node_routes = super::node_routes(node.clone());
    let gateway = super::gateway::router(node.clone(), config);
    Router::new()
        .route("/-/health", get(health))
        .route("/-/status", get(status))
        .route("/-/members", get(list_members).post(add_member))
        .route("/-/members/{id}", any(remove_member))
        .route("/-/members/{id}/promote", post(promote_member))
        .route("/", any(key_handler))
        .fallback(key_handler)
        .with_state(Api {
            node,
            config,
            admission,
        })
        .merge(node_routes)
        .merge(gateway)
}

/// Serves `app` on `listener` until `shutdown` completes, with a deadline
/// for reading each request's headers; then lets open connections finish
/// their requests (for at most a few seconds).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(%err, "accepting a client connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// A JSON error response.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A JSON error response that says whether the request had an effect.
fn error_with_outcome(
    status: StatusCode,
    message: impl Into<String>,
    outcome: Outcome,
) -> Response {
    let body = serde_json::json!({ "error": message.into(), "outcome": outcome.as_str() });
    let mut response = json(status, body);
    response
        .headers_mut()
        .insert(OUTCOME_HEADER, HeaderValue::from_static(outcome.as_str()));
    response
}

/// 503, certainly not applied: retry (after a second).
fn unavailable(message: impl Into<String>) -> Response {
    let mut response = error_with_outcome(
        StatusCode::SERVICE_UNAVAILABLE,
        message,
        Outcome::NotApplied,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// 503, maybe applied: the client must not blindly retry. `Retry-After`
/// still says when the service may be back; the outcome says that this
/// request must not simply be sent again.
fn outcome_unknown(message: impl Into<String>) -> Response {
    let mut response =
        error_with_outcome(StatusCode::SERVICE_UNAVAILABLE, message, Outcome::Unknown);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The response for a request the Raft thread did not answer.
fn call_failed(err: CallError) -> Response {
    match err.outcome() {
        Outcome::NotApplied => unavailable(err.to_string()),
        Outcome::Unknown => outcome_unknown(err.to_string()),
    }
}

/// 503 for a request refused because too many wait for the Raft thread.
fn overloaded(api: &Api) -> Response {
    call_failed(CallError::Overloaded {
        limit: api.admission.limit(),
    })
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// The answer for a request that only the leader can serve.
fn redirect_to_leader(api: &Api, leader: Option<u64>, uri: &Uri) -> Response {
    let Some(leader) = leader.filter(|l| *l != 0) else {
        return unavailable(
            "no leader is known (election in progress or quorum lost); retry shortly",
        );
    };
    let Some(member) = api.node.member(leader) else {
        return unavailable(format!(
            "leader {leader} has no known client address yet; retry shortly"
        ));
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("http://{}{}", member.client, path);
    let mut response = json(
        StatusCode::TEMPORARY_REDIRECT,
        serde_json::json!({ "error": format!("node {} is not the leader; the leader is {leader}", api.node.id), "leader": leader }),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Sends `request` to the Raft thread and waits for its answer within the
/// request timeout.
async fn ask<T>(
    api: &Api,
    request: Request,
    answer: oneshot::Receiver<T>,
    effect: Effect,
) -> Result<T, Response> {
    raft_call::call(
        &api.node,
        api.config.request_timeout,
        request,
        answer,
        effect,
    )
    .await
    .map_err(call_failed)
}

async fn health(State(api): State<Api>) -> Response {
    let view = api.node.view();
    let body =
        serde_json::json!({ "health": view.leader != 0, "id": api.node.id, "leader": view.leader });
    if view.leader != 0 {
        json(StatusCode::OK, body)
    } else {
        let mut response = json(StatusCode::SERVICE_UNAVAILABLE, body);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }
}

async fn node_status(api: &Api) -> Result<NodeStatus, Response> {
    let (reply, answer) = oneshot::channel();
    ask(api, Request::Status { reply }, answer, Effect::None).await
}

async fn status(State(api): State<Api>) -> Response {
    match node_status(&api).await {
        Ok(status) => json(
            StatusCode::OK,
            serde_json::to_value(status).unwrap_or_default(),
        ),
        Err(response) => response,
    }
}

async fn list_members(State(api): State<Api>) -> Response {
    match node_status(&api).await {
        Ok(status) => json(
            StatusCode::OK,
            serde_json::json!({ "leader": status.leader, "members": status.members, "voters": status.voters, "learners": status.learners }),
        ),
        Err(response) => response,
    }
}

fn write_outcome(api: &Api, uri: &Uri, reply: WriteReply) -> Response {
    match reply {
        Ok(applied) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            response
                .headers_mut()
                .insert("x-metcd-revision", HeaderValue::from(applied.revision));
            response
        }
        Err(WriteError::NotLeader { leader }) => redirect_to_leader(api, leader, uri),
        Err(WriteError::Rejected(message)) => {
            error_with_outcome(StatusCode::CONFLICT, message, Outcome::NotApplied)
        }
        Err(WriteError::NotApplied(message)) => unavailable(message),
        Err(WriteError::Unknown(message)) => outcome_unknown(message),
    }
}

async fn change_membership(api: &Api, uri: &Uri, change: MemberChange) -> Response {
    let view = api.node.view();
    if !view.is_leader {
        return redirect_to_leader(api, Some(view.leader), uri);
    }
    let Some(queued) = api.admission.admit() else {
        return overloaded(api);
    };
    let (reply, answer) = oneshot::channel();
    let request = Request::ChangeMembership {
        change,
        reply,
        queued,
    };
    match ask(api, request, answer, Effect::Write).await {
        Ok(outcome) => write_outcome(api, uri, outcome),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
struct AddMember {
    id: u64,
    peer: String,
    client: String,
    /// The member's etcd gRPC address, if it will serve one.
    #[serde(default)]
    grpc: Option<String>,
    #[serde(default)]
    learner: bool,
}

async fn add_member(State(api): State<Api>, uri: Uri, body: Body) -> Response {
    let bytes = match read_body(&api, &HeaderMap::new(), body).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let request: AddMember = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected JSON {{\"id\":4,\"peer\":\"127.0.0.1:43380\",\"client\":\"127.0.0.1:43379\",\"learner\":false}}: {err}"
                ),
            );
        }
    };
    for (what, address) in [("peer", &request.peer), ("client", &request.client)] {
        if address.parse::<std::net::SocketAddr>().is_err() {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{what} address {address:?} is not host:port with a numeric IP, e.g. 127.0.0.1:43380"
                ),
            );
        }
    }
    if request.id == 0 {
        return error(StatusCode::BAD_REQUEST, "member id must be 1 or more");
    }
    let member = Member {
        id: request.id,
        peer: request.peer,
        client: request.client,
        grpc: request.grpc,
        learner: request.learner,
    };
    let change = if request.learner {
        MemberChange::AddLearner(member)
    } else {
        MemberChange::AddVoter(member)
    };
    change_membership(&api, &uri, change).await
}

fn parse_id(raw: &str) -> Result<u64, Response> {
    raw.parse::<u64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            format!("member id {raw:?} is not a positive integer"),
        )
    })
}

async fn remove_member(
    State(api): State<Api>,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    if method != Method::DELETE {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use DELETE /-/members/<id> to remove a member",
        );
    }
    match parse_id(&id) {
        Ok(id) => change_membership(&api, &uri, MemberChange::Remove(id)).await,
        Err(response) => response,
    }
}

async fn promote_member(State(api): State<Api>, uri: Uri, Path(id): Path<String>) -> Response {
    match parse_id(&id) {
        Ok(id) => change_membership(&api, &uri, MemberChange::Promote(id)).await,
        Err(response) => response,
    }
}

/// Percent-decodes a path segment; `None` if it is not valid.
fn percent_decode(raw: &str) -> Option<Vec<u8>> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The user key a path names: everything after `/`, or after `/kv/`;
/// never empty.
fn key_of(uri: &Uri) -> Result<Vec<u8>, Response> {
    let key = path_key(uri)?;
    if key.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "empty key: use /<key> or /kv/<key> with a non-empty key (or GET /?prefix for every key)",
        ));
    }
    Ok(key)
}

/// The key a path names, possibly empty (`GET /?prefix` lists every key).
fn path_key(uri: &Uri) -> Result<Vec<u8>, Response> {
    let path = uri.path();
    let raw = path
        .strip_prefix("/kv/")
        .or_else(|| path.strip_prefix('/'))
        .unwrap_or(path);
    if path.starts_with("/-/") {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!(
                "{path} is not an API path; keys starting with \"-/\" are reached as /kv/-/..."
            ),
        ));
    }
    let key = percent_decode(raw).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            format!("path {path:?} has a malformed %-escape"),
        )
    })?;
    if key.len() > MAX_KEY_BYTES {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "key of {} bytes is longer than the {MAX_KEY_BYTES}-byte limit",
                key.len()
            ),
        ));
    }
    Ok(key)
}

fn too_large(size: impl std::fmt::Display, limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body of {size} bytes is larger than the limit of {limit} bytes"),
    )
}

/// A body larger than the limit is still read (and discarded) up to this
/// size, so the client, still sending, receives the 413 instead of a reset
/// connection; beyond it the connection is simply closed.
const DRAIN_LIMIT: u64 = 16 << 20;

enum BodyFailure {
    TooLarge(u64),
    Read(String),
}

/// Reads the whole body, keeping at most `limit` bytes.
async fn collect_limited(mut body: Body, limit: usize) -> Result<Bytes, BodyFailure> {
    let mut kept = Vec::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyFailure::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total <= limit as u64 {
            kept.extend_from_slice(&data);
        } else if total > DRAIN_LIMIT {
            return Err(BodyFailure::TooLarge(total));
        }
    }
    if total > limit as u64 {
        return Err(BodyFailure::TooLarge(total));
    }
    Ok(Bytes::from(kept))
}

/// Reads a request body of at most [`MAX_VALUE_BYTES`] within the body
/// timeout.
async fn read_body(api: &Api, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    read_body_within(MAX_VALUE_BYTES, api.config.body_timeout, headers, body).await
}

/// Reads a request body of at most `limit` bytes within `timeout`; the
/// error is the response to send (413, 408 or 400).
pub(super) async fn read_body_within(
    limit: usize,
    timeout: Duration,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, Response> {
    let closing = |mut response: Response| {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > DRAIN_LIMIT
    {
        return Err(closing(too_large(length, limit)));
    }
    match tokio::time::timeout(timeout, collect_limited(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(BodyFailure::TooLarge(size))) => Err(closing(too_large(
            if size > DRAIN_LIMIT {
                format!("more than {DRAIN_LIMIT}")
            } else {
                size.to_string()
            },
            limit,
        ))),
        Ok(Err(BodyFailure::Read(err))) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {err}"),
        )),
        Err(_) => Err(closing(error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        ))),
    }
}

async fn key_handler(
    State(api): State<Api>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method == Method::GET && super::http_watch::is_watch(uri.query()) {
        return match path_key(&uri) {
            Ok(key) => super::http_watch::watch(&api.node, key, uri.query()),
            Err(response) => response,
        };
    }
    if method == Method::GET || method == Method::HEAD {
        let query = match ReadQuery::parse(uri.query()) {
            Ok(query) => query,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
        let key = if query.is_range() {
            path_key(&uri)
        } else {
            key_of(&uri)
        };
        return match key {
            Ok(key) => read(&api, key, &query).await,
            Err(response) => response,
        };
    }
    let key = match key_of(&uri) {
        Ok(key) => key,
        Err(response) => return response,
    };
    match method {
        Method::PUT | Method::POST => {
            let view = api.node.view();
            if !view.is_leader {
                return redirect_to_leader(&api, Some(view.leader), &uri);
            }
            let ttl = match put_ttl(uri.query()) {
                Ok(ttl) => ttl,
                Err(response) => return response,
            };
            let value = match read_body(&api, &headers, body).await {
                Ok(bytes) => bytes.to_vec(),
                Err(response) => return response,
            };
            match ttl {
                Some(ttl) => put_with_lease(&api, &uri, key, value, ttl).await,
                None => propose(&api, &uri, Command::put(key, value)).await,
            }
        }
        Method::DELETE => {
            let view = api.node.view();
            if !view.is_leader {
                return redirect_to_leader(&api, Some(view.leader), &uri);
            }
            propose(&api, &uri, Command::delete(key)).await
        }
        other => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {other} is not supported on keys; use GET, PUT or DELETE"),
        ),
    }
}

/// The `ttl` of a PUT's query (`?ttl=<seconds>`), if any; anything else
/// in the query is refused, naming what is accepted.
fn put_ttl(query: Option<&str>) -> Result<Option<i64>, Response> {
    let mut ttl = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "ttl" {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown parameter {name:?} for a PUT; the only one accepted is ttl=<seconds>"
                ),
            ));
        }
        let parsed = value
            .parse::<i64>()
            .ok()
            .filter(|t| (1..=crate::lease::MAX_TTL).contains(t))
            .ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "ttl={value:?} is not accepted: give the lease's time to live as a whole \
                         number of seconds from 1 to {} (a TTL below the cluster's minimum is \
                         raised to it)",
                        crate::lease::MAX_TTL
                    ),
                )
            })?;
        ttl = Some(parsed);
    }
    Ok(ttl)
}

/// `PUT /<key>?ttl=N`: grants a lease of `ttl` seconds (raised to the
/// minimum), then puts the key with it: two proposals. If the put fails
/// after the grant, the lease is left without keys and expires on its own.
async fn put_with_lease(api: &Api, uri: &Uri, key: Vec<u8>, value: Vec<u8>, ttl: i64) -> Response {
    let leases = &api.node.leases;
    let ttl = ttl.max(leases.min_ttl);
    let id = leases.choose_id(0);
    let granted = match propose_for(api, Command::LeaseGrant { id, ttl }).await {
        Ok(Ok(applied)) => applied,
        Ok(Err(err)) => return write_outcome(api, uri, Err(err)),
        Err(response) => return response,
    };
    let put = Command::Txn(crate::mvcc::txn::TxnRequest {
        compare: vec![],
        success: vec![crate::mvcc::txn::RequestOp::Put(
            crate::mvcc::txn::PutRequest {
                key,
                value,
                lease: id,
                ..Default::default()
            },
        )],
        failure: vec![],
    });
    match propose_for(api, put).await {
        Ok(Ok(applied)) => {
            let mut response = json(
                StatusCode::OK,
                serde_json::json!({
                    "lease": id,
                    "lease_hex": format!("{id:x}"),
                    "ttl": ttl,
                    "revision": applied.revision.max(granted.revision),
                }),
            );
            response
                .headers_mut()
                .insert("x-metcd-revision", HeaderValue::from(applied.revision));
            response
        }
        Ok(Err(err)) => write_outcome(api, uri, Err(err)),
        Err(response) => response,
    }
}

/// Proposes `command` and returns the Raft thread's answer.
async fn propose_for(api: &Api, command: Command) -> Result<WriteReply, Response> {
    let Some(queued) = api.admission.admit() else {
        return Err(overloaded(api));
    };
    let proposal = crate::metrics::Proposal::start();
    let (reply, answer) = oneshot::channel();
    let request = Request::Propose {
        command,
        reply,
        queued,
        proposer: Proposer::LeaderOnly,
    };
    let outcome = ask(api, request, answer, Effect::Write).await?;
    Ok(proposal.finish(outcome))
}

// ANCHOR: http_write
async fn propose(api: &Api, uri: &Uri, command: Command) -> Response {
    // Bounded: over the limit the write is refused before it is sent.
    let Some(queued) = api.admission.admit() else {
        return overloaded(api);
    };
    let proposal = crate::metrics::Proposal::start();
    let (reply, answer) = oneshot::channel();
    let request = Request::Propose {
        command,
        reply,
        queued,
        proposer: Proposer::LeaderOnly,
    };
    match ask(api, request, answer, Effect::Write).await {
        Ok(outcome) => write_outcome(api, uri, proposal.finish(outcome)),
        Err(response) => response,
    }
}
// ANCHOR_END: http_write

/// Waits for a read index unless the read is serializable.
async fn read_barrier(api: &Api, consistency: Consistency) -> Result<(), Response> {
    if consistency == Consistency::Serializable {
        return Ok(());
    }
    let Some(queued) = api.admission.admit() else {
        return Err(overloaded(api));
    };
    let (reply, answer) = oneshot::channel();
    match ask(
        api,
        Request::ReadIndex { reply, queued },
        answer,
        Effect::None,
    )
    .await?
    {
        Ok(()) => Ok(()),
        Err(_) => Err(unavailable(
            "no leader is known, so a linearizable read is impossible; retry or use ?consistency=serializable",
        )),
    }
}

/// A GET: one key's raw value, or a listing (see [`super::read_query`]).
async fn read(api: &Api, key: Vec<u8>, query: &ReadQuery) -> Response {
    if let Err(response) = read_barrier(api, query.consistency).await {
        return response;
    }
    let request = query.range(key);
    let answer = match api.node.kv.range(&request) {
        Ok(answer) => answer,
        // etcd's messages, with the status that says what happened: the
        // revision is gone for good (410) or does not exist yet (400).
        Err(MvccError::Compacted) => return error(StatusCode::GONE, grpc::status::COMPACTED),
        Err(MvccError::FutureRevision) => {
            return error(StatusCode::BAD_REQUEST, grpc::status::FUTURE_REV);
        }
        Err(err) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the store: {err}"),
            );
        }
    };
    let revision = answer.revision;
    let mut response = if query.is_listing() {
        json(StatusCode::OK, listing(&answer, query.keys_only))
    } else if let Some(record) = answer.kvs.into_iter().next() {
        let mut response = (StatusCode::OK, record.value).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(
            "x-metcd-mod-revision",
            HeaderValue::from(record.mod_revision),
        );
        headers.insert(
            "x-metcd-create-revision",
            HeaderValue::from(record.create_revision),
        );
        headers.insert("x-metcd-version", HeaderValue::from(record.version));
        response
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("key not found: {}", String::from_utf8_lossy(&request.key)),
        )
    };
    response
        .headers_mut()
        .insert("x-metcd-revision", HeaderValue::from(revision));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{RaftView, Request};
    use std::sync::{Arc, RwLock};

    /// Issue 9 item 9: with nobody taking requests off the Raft thread's
    /// channel (a stalled thread), writes beyond the bound are refused at
    /// once with 503, Retry-After and outcome not-applied; once the thread
    /// takes the waiting ones, new writes are admitted again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_over_the_queue_bound_are_refused_as_not_applied() {
        let (requests, raft) = std::sync::mpsc::channel::<Request>();
        let dir = tempfile::tempdir().unwrap();
        let engine = engines::open_shared(
            engines::EngineKind::Memory,
            dir.path(),
            &engines::EngineOptions::default(),
        )
        .unwrap();
        let (_exit, exit) = tokio::sync::watch::channel(None);
        let view = RaftView {
            leader: 1,
            is_leader: true,
            term: 2,
        };
        let sm = crate::state_machine::StateMachine::open(Arc::clone(&engine), Default::default())
            .unwrap();
        let kv = sm.kv_reader();
        let watch = sm.watch_hub();
        let node = NodeHandle {
            id: 1,
            requests,
            members: Default::default(),
            engine,
            kv,
            watch,
            removed: Default::default(),
            data_dir: dir.path().to_path_buf(),
            view: Arc::new(RwLock::new(view)),
            exit,
            leases: crate::lease::Leases {
                lessor: Default::default(),
                ids: Arc::new(crate::lease::IdGenerator::new(1)),
                min_ttl: 1,
            },
            identity: crate::raft::identity::Identity {
                cluster: crate::raft::identity::ClusterId(7),
                member: 1,
            },
        };
        let config = ApiConfig {
            request_timeout: Duration::from_secs(2),
            max_queued_requests: 2,
            ..ApiConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve(
            listener,
            router(node, config),
            Duration::from_secs(5),
            std::future::pending(),
        ));
        let client = crate::Client::new(&[address.as_str()])
            .unwrap()
            .with_retry(Duration::ZERO);
        let put = |key: &'static str| {
            let client = client.clone();
            let address = address.clone();
            tokio::spawn(async move {
                client
                    .request_to(&address, Method::PUT, key, Bytes::from_static(b"v"))
                    .await
                    .unwrap()
            })
        };
        let first = put("/a");
        let second = put("/b");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let third = put("/c").await.unwrap();
        assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(third.headers[OUTCOME_HEADER], "not-applied");
        assert!(third.headers.contains_key(header::RETRY_AFTER));

        // The Raft thread takes the two (and drops them unanswered: their
        // clients learn that the outcome is unknown).
        let taken: Vec<Request> = raft.try_iter().collect();
        assert_eq!(taken.len(), 2);
        drop(taken);
        for waiting in [first, second] {
            let response = waiting.await.unwrap();
            assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers[OUTCOME_HEADER], "unknown");
        }
        let _fourth = put("/d");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            raft.try_iter().count(),
            1,
            "room again after the queue drained"
        );
    }

    #[test]
    fn keys_are_taken_from_the_path() {
        let key = |p: &str| key_of(&p.parse::<Uri>().unwrap()).ok();
        assert_eq!(key("/hello"), Some(b"hello".to_vec()));
        assert_eq!(key("/kv/-/status"), Some(b"-/status".to_vec()));
        assert_eq!(key("/a%20b?x=1"), Some(b"a b".to_vec()));
        assert_eq!(key("/dir/sub"), Some(b"dir/sub".to_vec()));
        assert_eq!(key("/"), None);
        assert_eq!(key("/kv/"), None);
        assert_eq!(key("/bad%zz"), None);
        let path = |p: &str| path_key(&p.parse::<Uri>().unwrap()).ok();
        assert_eq!(path("/?prefix"), Some(Vec::new()));
    }
}
