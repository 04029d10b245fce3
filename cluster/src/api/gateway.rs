//! etcd's JSON gateway on the HTTP port: the KV service for `curl`.
//!
//! etcd serves its gRPC API as JSON too (grpc-gateway), on its client port;
//! people who curl etcd today send, for example,
//! `curl -d '{"key":"Zm9v","value":"YmFy"}' http://host:2379/v3/kv/put`.
//! metcd answers the same requests on its HTTP port:
//!
//! ```text
//! POST /v3/kv/put          PutRequest          -> PutResponse
//! POST /v3/kv/range        RangeRequest        -> RangeResponse
//! POST /v3/kv/deleterange  DeleteRangeRequest  -> DeleteRangeResponse
//! POST /v3/kv/txn          TxnRequest          -> TxnResponse
//! POST /v3/kv/compaction   CompactionRequest   -> CompactionResponse
//! POST /v3/lease/grant      LeaseGrantRequest   -> LeaseGrantResponse
//! POST /v3/lease/revoke     LeaseRevokeRequest  -> LeaseRevokeResponse     (also /v3/kv/lease/revoke)
//! POST /v3/lease/keepalive  LeaseKeepAliveRequest -> {"result": LeaseKeepAliveResponse}
//! POST /v3/lease/timetolive LeaseTimeToLiveRequest -> LeaseTimeToLiveResponse (also /v3/kv/lease/timetolive)
//! POST /v3/lease/leases     LeaseLeasesRequest  -> LeaseLeasesResponse     (also /v3/kv/lease/leases)
//! /v3beta/...              the same (etcd 3.4 serves both prefixes)
//! ```
//!
//! The lease messages' fields keep etcd's .proto names: `ID`, `TTL`,
//! `grantedTTL`, `keys`. A keep-alive is a stream in gRPC; through the
//! gateway, as through etcd's, one request renews once and is answered
//! with one `{"result": ...}` object.
//!
//! # One request
//!
//! The JSON body becomes etcd's protobuf request (`etcd_client::proto`),
//! which is handed, in process, to the very [`KvService`] the gRPC port
//! serves: validation, follower-to-leader forwarding, Raft and etcd's
//! errors are that service's, not repeated here. Its answer is written
//! back as JSON. Only the mapping between JSON and protobuf lives here.
//!
//! # The JSON mapping (as etcd 3.4's gateway writes it)
//!
//! * field names are the `.proto` names (`range_end`, `prev_kv`); requests
//!   may also use the lowerCamelCase form (`rangeEnd`), as protobuf's JSON
//!   mapping allows;
//! * `bytes` (keys, values) are standard base64 strings;
//! * 64-bit integers are written as strings (`"revision":"7"`) and read
//!   from strings or numbers;
//! * fields holding their default (0, false, empty, absent message) are
//!   left out of responses; a present message with only defaults is `{}`;
//! * enumerations are read by name (`"DESCEND"`) or number (`2`).
//!
//! # Errors
//!
//! As etcd's gateway sends them: the gRPC code mapped to an HTTP status
//! (InvalidArgument and OutOfRange are 400, FailedPrecondition 412, NotFound 404, Unavailable 503,
//! ...) and the body `{"error":M,"message":M,"code":N}` with etcd's exact
//! message M and the numeric gRPC code N. metcd's own explanation and
//! whether the request had an effect travel in the `X-Metcd-Detail` and
//! `X-Metcd-Outcome` headers when the service gave them.
//!
//! A body that is not JSON, or holds a field of the wrong type, bad base64
//! or an unknown enumeration name, is a 400 with code 3 (InvalidArgument)
//! and a message naming the field and what is accepted. Unlike etcd's
//! gateway, which ignores fields it does not know, an unknown field is
//! refused too: it is almost always a misspelling (`prevKv` is accepted,
//! `prev_key` is not), and ignoring it would silently change the request.

// Handlers return a ready error `Response` as their `Err` (axum's idiom).
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any};
use base64::Engine as _;
use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbCompare, PbDeleteRequest, PbDeleteResponse,
    PbKeyValue, PbKvService, PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest,
    PbLeaseKeepAliveResponse, PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest,
    PbLeaseRevokeResponse, PbLeaseService, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbResponseHeader, PbResponseOp,
    PbTargetUnion, PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnRequestOp, PbTxnResponse,
};
use serde_json::{Map, Value};

use super::ApiConfig;
use super::grpc::GrpcApi;
use super::grpc::kv::KvService;
use super::grpc::lease::LeaseService;
use crate::raft::NodeHandle;

/// A JSON body may carry a value of etcd's request limit, base64-encoded
/// (4/3 of it), with room for the rest of the message.
const MAX_BODY_BYTES: usize = super::MAX_VALUE_BYTES / 3 * 4 + 64 * 1024;

#[derive(Clone)]
struct Gateway {
    kv: Arc<KvService>,
    lease: Arc<LeaseService>,
    config: ApiConfig,
}

/// The gateway's routes, under `/v3/` and `/v3beta/`: the KV service and the lease part.
pub fn router(node: NodeHandle, config: ApiConfig) -> Router {
    let api = GrpcApi::new(node, config);
    let gateway = Gateway {
        kv: Arc::new(KvService::new(api.clone())),
        lease: Arc::new(LeaseService::new(api)),
        config,
    };
    let put = || {
        endpoint(
            put_request,
            |g, r| async move { g.kv.put(r).await },
            put_response,
        )
    };
    let range = || {
        endpoint(
            range_request,
            |g, r| async move { g.kv.range(r).await },
            range_response,
        )
    };
    let delete = || {
        endpoint(
            delete_request,
            |g, r| async move { g.kv.delete_range(r).await },
            delete_response,
        )
    };
    let txn = || {
        endpoint(
            txn_request,
            |g, r| async move { g.kv.txn(r).await },
            txn_response,
        )
    };
    let compaction = || {
        endpoint(
            compaction_request,
            |g, r| async move { g.kv.compact(r).await },
            |r: &PbCompactionResponse| with_header(Map::new(), &r.header),
        )
    };
    let grant = || {
        endpoint(
            lease_grant_request,
            |g, r| async move { g.lease.lease_grant(r).await },
            lease_grant_response,
        )
    };
    let revoke = || {
        endpoint(
            lease_revoke_request,
            |g, r| async move { g.lease.lease_revoke(r).await },
            |r: &PbLeaseRevokeResponse| with_header(Map::new(), &r.header),
        )
    };
    let keep_alive = || {
        endpoint(
            lease_keep_alive_request,
            |g, r| async move {
                let answer = g.lease.keep_alive_once(r.into_inner()).await?;
                Ok(tonic::Response::new(answer))
            },
            lease_keep_alive_response,
        )
    };
    let time_to_live = || {
        endpoint(
            lease_time_to_live_request,
            |g, r| async move { g.lease.lease_time_to_live(r).await },
            lease_time_to_live_response,
        )
    };
    let leases = || {
        endpoint(
            lease_leases_request,
            |g, r| async move { g.lease.lease_leases(r).await },
            lease_leases_response,
        )
    };
    let mut router = Router::new();
    for prefix in ["/v3", "/v3beta"] {
        router = router
            .route(&format!("{prefix}/kv/put"), put())
            .route(&format!("{prefix}/kv/range"), range())
            .route(&format!("{prefix}/kv/deleterange"), delete())
            .route(&format!("{prefix}/kv/txn"), txn())
            .route(&format!("{prefix}/kv/compaction"), compaction())
            .route(&format!("{prefix}/lease/grant"), grant())
            .route(&format!("{prefix}/lease/revoke"), revoke())
            .route(&format!("{prefix}/kv/lease/revoke"), revoke())
            .route(&format!("{prefix}/lease/keepalive"), keep_alive())
            .route(&format!("{prefix}/lease/timetolive"), time_to_live())
            .route(&format!("{prefix}/kv/lease/timetolive"), time_to_live())
            .route(&format!("{prefix}/lease/leases"), leases())
            .route(&format!("{prefix}/kv/lease/leases"), leases());
    }
    router.with_state(gateway)
}

/// A request the gateway cannot turn into etcd's message.
#[derive(Debug)]
struct Malformed(String);

/// The HTTP status etcd's gateway (grpc-gateway v1) gives a gRPC code.
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        // grpc-gateway v1 (etcd 3.4's) answers 412 here; v2 changed it to 400.
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// etcd's gateway error body.
fn error_body(code: tonic::Code, message: &str) -> Value {
    serde_json::json!({ "error": message, "message": message, "code": code as i32 })
}

fn status_response(status: &tonic::Status) -> Response {
    let mut response = json(
        http_status(status.code()),
        &error_body(status.code(), status.message()),
    );
    for (from, to) in [
        ("metcd-outcome", super::http::OUTCOME_HEADER),
        ("metcd-detail", "x-metcd-detail"),
    ] {
        if let Some(value) = status.metadata().get(from)
            && let Ok(value) = HeaderValue::from_bytes(value.as_bytes())
        {
            response.headers_mut().insert(to, value);
        }
    }
    response
}

fn malformed(err: Malformed) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        &error_body(tonic::Code::InvalidArgument, &err.0),
    )
}

/// One gateway call: read and decode the body, call the service, encode.
async fn call<Req, Resp, Fut>(
    gateway: &Gateway,
    method: Method,
    headers: HeaderMap,
    body: Body,
    decode: fn(&Map<String, Value>) -> Result<Req, Malformed>,
    service: impl FnOnce(Gateway, tonic::Request<Req>) -> Fut,
    encode: fn(&Resp) -> Value,
) -> Response
where
    Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    if method != Method::POST {
        let mut response = super::http::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("the gateway takes POST with a JSON body, not {method}"),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let bytes = match super::http::read_body_within(
        MAX_BODY_BYTES,
        gateway.config.body_timeout,
        &headers,
        body,
    )
    .await
    {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let request = match parse_object(&bytes).and_then(|fields| decode(&fields)) {
        Ok(request) => request,
        Err(err) => return malformed(err),
    };
    match service(gateway.clone(), tonic::Request::new(request)).await {
        Ok(answer) => json(StatusCode::OK, &encode(answer.get_ref())),
        Err(status) => status_response(&status),
    }
}

/// The body as a JSON object; an empty body (or `null`) is the empty
/// message, as in etcd's gateway.
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, Malformed> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(other) => Err(Malformed(format!(
            "the body must be a JSON object, not {}",
            kind(&other)
        ))),
        Err(err) => Err(Malformed(format!("the body is not valid JSON: {err}"))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One route of the gateway: any method to `call` (which takes POST only),
/// with the message's JSON decoding, the service call and the encoding.
fn endpoint<Req, Resp, Fut>(
    decode: fn(&Map<String, Value>) -> Result<Req, Malformed>,
    service: fn(Gateway, tonic::Request<Req>) -> Fut,
    encode: fn(&Resp) -> Value,
) -> MethodRouter<Gateway>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>> + Send + 'static,
{
    any(
        move |State(g): State<Gateway>, method: Method, headers: HeaderMap, body: Body| async move {
            call(&g, method, headers, body, decode, service, encode).await
        },
    )
}

// ------------------------------------------------------------ JSON in

/// The fields of one JSON message, checked against the names it accepts.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    message: &'static str,
}

/// `range_end` -> `rangeEnd`.
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl<'a> Fields<'a> {
    /// Refuses a field not in `accepted` (by proto or camelCase name).
    fn new(
        map: &'a Map<String, Value>,
        message: &'static str,
        accepted: &[&str],
    ) -> Result<Fields<'a>, Malformed> {
        for name in map.keys() {
            if !accepted.iter().any(|a| a == name || camel(a) == *name) {
                return Err(Malformed(format!(
                    "unknown field {name:?} in {message}; accepted: {}",
                    accepted.join(", ")
                )));
            }
        }
        Ok(Fields { map, message })
    }

    /// The value of `name`, absent when missing or `null`.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map
            .get(name)
            .or_else(|| self.map.get(&camel(name)))
            .filter(|v| !v.is_null())
    }

    fn wrong(&self, name: &str, expected: &str, got: &Value) -> Malformed {
        Malformed(format!(
            "{}.{name} must be {expected}, not {}",
            self.message,
            kind(got)
        ))
    }

    fn bytes(&self, name: &str) -> Result<Vec<u8>, Malformed> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => BASE64.decode(s).map_err(|err| {
                Malformed(format!(
                    "{}.{name} is not standard base64 ({err}); keys and values are sent \
                     base64-encoded, e.g. \"Zm9v\" for foo",
                    self.message
                ))
            }),
            Some(other) => Err(self.wrong(name, "a base64 string", other)),
        }
    }

    fn int64(&self, name: &str) -> Result<i64, Malformed> {
        let parsed = match self.get(name) {
            None => return Ok(0),
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.parse::<i64>().ok(),
            Some(other) => return Err(self.wrong(name, "a 64-bit integer", other)),
        };
        parsed.ok_or_else(|| {
            Malformed(format!(
                "{}.{name} must be a 64-bit integer (a number or a string of digits), not {}",
                self.message,
                self.get(name).map(Value::to_string).unwrap_or_default()
            ))
        })
    }

    fn boolean(&self, name: &str) -> Result<bool, Malformed> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.wrong(name, "true or false", other)),
        }
    }

    /// An enumeration by name (its index in `names`) or by number.
    fn enumeration(&self, name: &str, names: &[&str]) -> Result<i32, Malformed> {
        let accepted = || {
            Malformed(format!(
                "{}.{name} {} is not defined; accepted: {}",
                self.message,
                self.get(name).map(Value::to_string).unwrap_or_default(),
                names.join(", ")
            ))
        };
        match self.get(name) {
            None => Ok(0),
            Some(Value::String(s)) => names
                .iter()
                .position(|n| n == s)
                .map(|i| i as i32)
                .ok_or_else(accepted),
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(accepted),
            Some(other) => Err(self.wrong(name, "an enumeration name or number", other)),
        }
    }

    fn object(&self, name: &str) -> Result<Option<&'a Map<String, Value>>, Malformed> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(other) => Err(self.wrong(name, "an object", other)),
        }
    }

    fn list<T>(
        &self,
        name: &str,
        each: fn(&Map<String, Value>) -> Result<T, Malformed>,
    ) -> Result<Vec<T>, Malformed> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::Object(map) => each(map),
                    other => Err(self.wrong(name, "an array of objects", other)),
                })
                .collect(),
            Some(other) => Err(self.wrong(name, "an array", other)),
        }
    }
}

/// Standard base64; padding may be left out, as some encoders do.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

const SORT_ORDERS: &[&str] = &["NONE", "ASCEND", "DESCEND"];
const SORT_TARGETS: &[&str] = &["KEY", "VERSION", "CREATE", "MOD", "VALUE"];
const COMPARE_RESULTS: &[&str] = &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"];
const COMPARE_TARGETS: &[&str] = &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"];

fn range_request(map: &Map<String, Value>) -> Result<PbRangeRequest, Malformed> {
    let f = Fields::new(
        map,
        "RangeRequest",
        &[
            "key",
            "range_end",
            "limit",
            "revision",
            "sort_order",
            "sort_target",
            "serializable",
            "keys_only",
            "count_only",
            "min_mod_revision",
            "max_mod_revision",
            "min_create_revision",
            "max_create_revision",
        ],
    )?;
    Ok(PbRangeRequest {
        key: f.bytes("key")?,
        range_end: f.bytes("range_end")?,
        limit: f.int64("limit")?,
        revision: f.int64("revision")?,
        sort_order: f.enumeration("sort_order", SORT_ORDERS)?,
        sort_target: f.enumeration("sort_target", SORT_TARGETS)?,
        serializable: f.boolean("serializable")?,
        keys_only: f.boolean("keys_only")?,
        count_only: f.boolean("count_only")?,
        min_mod_revision: f.int64("min_mod_revision")?,
        max_mod_revision: f.int64("max_mod_revision")?,
        min_create_revision: f.int64("min_create_revision")?,
        max_create_revision: f.int64("max_create_revision")?,
    })
}

fn put_request(map: &Map<String, Value>) -> Result<PbPutRequest, Malformed> {
    let f = Fields::new(
        map,
        "PutRequest",
        &[
            "key",
            "value",
            "lease",
            "prev_kv",
            "ignore_value",
            "ignore_lease",
        ],
    )?;
    Ok(PbPutRequest {
        key: f.bytes("key")?,
        value: f.bytes("value")?,
        lease: f.int64("lease")?,
        prev_kv: f.boolean("prev_kv")?,
        ignore_value: f.boolean("ignore_value")?,
        ignore_lease: f.boolean("ignore_lease")?,
    })
}

fn delete_request(map: &Map<String, Value>) -> Result<PbDeleteRequest, Malformed> {
    let f = Fields::new(map, "DeleteRangeRequest", &["key", "range_end", "prev_kv"])?;
    Ok(PbDeleteRequest {
        key: f.bytes("key")?,
        range_end: f.bytes("range_end")?,
        prev_kv: f.boolean("prev_kv")?,
    })
}

fn compaction_request(map: &Map<String, Value>) -> Result<PbCompactionRequest, Malformed> {
    let f = Fields::new(map, "CompactionRequest", &["revision", "physical"])?;
    Ok(PbCompactionRequest {
        revision: f.int64("revision")?,
        physical: f.boolean("physical")?,
    })
}

fn compare(map: &Map<String, Value>) -> Result<PbCompare, Malformed> {
    const OPERANDS: [&str; 5] = [
        "version",
        "create_revision",
        "mod_revision",
        "value",
        "lease",
    ];
    let f = Fields::new(
        map,
        "Compare",
        &[
            "result",
            "target",
            "key",
            "range_end",
            "version",
            "create_revision",
            "mod_revision",
            "value",
            "lease",
        ],
    )?;
    let given: Vec<&str> = OPERANDS
        .into_iter()
        .filter(|name| f.get(name).is_some())
        .collect();
    let target_union = match given.as_slice() {
        [] => None,
        ["version"] => Some(PbTargetUnion::Version(f.int64("version")?)),
        ["create_revision"] => Some(PbTargetUnion::CreateRevision(f.int64("create_revision")?)),
        ["mod_revision"] => Some(PbTargetUnion::ModRevision(f.int64("mod_revision")?)),
        ["value"] => Some(PbTargetUnion::Value(f.bytes("value")?)),
        ["lease"] => Some(PbTargetUnion::Lease(f.int64("lease")?)),
        several => {
            return Err(Malformed(format!(
                "Compare holds one operand, but {} were given; give the one its target names",
                several.join(" and ")
            )));
        }
    };
    Ok(PbCompare {
        result: f.enumeration("result", COMPARE_RESULTS)?,
        target: f.enumeration("target", COMPARE_TARGETS)?,
        key: f.bytes("key")?,
        range_end: f.bytes("range_end")?,
        target_union,
    })
}

fn request_op(map: &Map<String, Value>) -> Result<PbTxnRequestOp, Malformed> {
    let f = Fields::new(
        map,
        "RequestOp",
        &[
            "request_range",
            "request_put",
            "request_delete_range",
            "request_txn",
        ],
    )?;
    if map.len() > 1 {
        return Err(Malformed(
            "RequestOp holds one request, but several were given".into(),
        ));
    }
    // An empty operation is passed on: the service answers it as etcd does.
    let request = if let Some(m) = f.object("request_range")? {
        Some(PbTxnOpRequest::RequestRange(range_request(m)?))
    } else if let Some(m) = f.object("request_put")? {
        Some(PbTxnOpRequest::RequestPut(put_request(m)?))
    } else if let Some(m) = f.object("request_delete_range")? {
        Some(PbTxnOpRequest::RequestDeleteRange(delete_request(m)?))
    } else if let Some(m) = f.object("request_txn")? {
        Some(PbTxnOpRequest::RequestTxn(txn_request(m)?))
    } else {
        None
    };
    Ok(PbTxnRequestOp { request })
}

fn txn_request(map: &Map<String, Value>) -> Result<PbTxnRequest, Malformed> {
    let f = Fields::new(map, "TxnRequest", &["compare", "success", "failure"])?;
    Ok(PbTxnRequest {
        compare: f.list("compare", compare)?,
        success: f.list("success", request_op)?,
        failure: f.list("failure", request_op)?,
    })
}

// ----------------------------------------------------------- JSON out

/// Writes only fields that differ from their default, as etcd does.
/// (Members come out in name order, where etcd keeps the `.proto`'s
/// order: JSON objects are unordered, so readers see no difference.)
struct Out(Map<String, Value>);

impl Out {
    fn int(mut self, name: &str, value: impl Into<i128>) -> Out {
        let value = value.into();
        if value != 0 {
            self.0.insert(name.into(), Value::String(value.to_string()));
        }
        self
    }

    fn text(mut self, name: &str, value: &str) -> Out {
        if !value.is_empty() {
            self.0.insert(name.into(), Value::String(value.to_string()));
        }
        self
    }

    fn bytes(mut self, name: &str, value: &[u8]) -> Out {
        if !value.is_empty() {
            self.0
                .insert(name.into(), Value::String(BASE64.encode(value)));
        }
        self
    }

    fn boolean(mut self, name: &str, value: bool) -> Out {
        if value {
            self.0.insert(name.into(), Value::Bool(true));
        }
        self
    }

    fn list(mut self, name: &str, items: Vec<Value>) -> Out {
        if !items.is_empty() {
            self.0.insert(name.into(), Value::Array(items));
        }
        self
    }

    fn message(mut self, name: &str, value: Option<Value>) -> Out {
        if let Some(value) = value {
            self.0.insert(name.into(), value);
        }
        self
    }
}

fn header(h: &PbResponseHeader) -> Value {
    Value::Object(
        Out(Map::new())
            .int("cluster_id", h.cluster_id)
            .int("member_id", h.member_id)
            .int("revision", h.revision)
            .int("raft_term", h.raft_term)
            .0,
    )
}

fn with_header(mut map: Map<String, Value>, h: &Option<PbResponseHeader>) -> Value {
    if let Some(h) = h {
        map.insert("header".into(), header(h));
    }
    Value::Object(map)
}

fn key_value(kv: &PbKeyValue) -> Value {
    Value::Object(
        Out(Map::new())
            .bytes("key", &kv.key)
            .int("create_revision", kv.create_revision)
            .int("mod_revision", kv.mod_revision)
            .int("version", kv.version)
            .bytes("value", &kv.value)
            .int("lease", kv.lease)
            .0,
    )
}

fn range_response(r: &PbRangeResponse) -> Value {
    let body = Out(Map::new())
        .list("kvs", r.kvs.iter().map(key_value).collect())
        .boolean("more", r.more)
        .int("count", r.count);
    with_header(body.0, &r.header)
}

fn put_response(r: &PbPutResponse) -> Value {
    let body = Out(Map::new()).message("prev_kv", r.prev_kv.as_ref().map(key_value));
    with_header(body.0, &r.header)
}

fn delete_response(r: &PbDeleteResponse) -> Value {
    let body = Out(Map::new())
        .int("deleted", r.deleted)
        .list("prev_kvs", r.prev_kvs.iter().map(key_value).collect());
    with_header(body.0, &r.header)
}

fn response_op(op: &PbResponseOp) -> Value {
    let mut out = Map::new();
    match &op.response {
        Some(PbTxnOpResponse::ResponseRange(r)) => {
            out.insert("response_range".into(), range_response(r));
        }
        Some(PbTxnOpResponse::ResponsePut(r)) => {
            out.insert("response_put".into(), put_response(r));
        }
        Some(PbTxnOpResponse::ResponseDeleteRange(r)) => {
            out.insert("response_delete_range".into(), delete_response(r));
        }
        Some(PbTxnOpResponse::ResponseTxn(r)) => {
            out.insert("response_txn".into(), txn_response(r));
        }
        None => {}
    }
    Value::Object(out)
}

fn txn_response(r: &PbTxnResponse) -> Value {
    let body = Out(Map::new())
        .boolean("succeeded", r.succeeded)
        .list("responses", r.responses.iter().map(response_op).collect());
    with_header(body.0, &r.header)
}

// ------------------------------------------------------------ leases

fn lease_grant_request(map: &Map<String, Value>) -> Result<PbLeaseGrantRequest, Malformed> {
    let f = Fields::new(map, "LeaseGrantRequest", &["TTL", "ID"])?;
    Ok(PbLeaseGrantRequest {
        ttl: f.int64("TTL")?,
        id: f.int64("ID")?,
    })
}

fn lease_grant_response(r: &PbLeaseGrantResponse) -> Value {
    let body = Out(Map::new())
        .int("ID", r.id)
        .int("TTL", r.ttl)
        .text("error", &r.error);
    with_header(body.0, &r.header)
}

fn lease_id(map: &Map<String, Value>, message: &'static str) -> Result<i64, Malformed> {
    Fields::new(map, message, &["ID"])?.int64("ID")
}

fn lease_revoke_request(map: &Map<String, Value>) -> Result<PbLeaseRevokeRequest, Malformed> {
    Ok(PbLeaseRevokeRequest {
        id: lease_id(map, "LeaseRevokeRequest")?,
    })
}

fn lease_keep_alive_request(
    map: &Map<String, Value>,
) -> Result<PbLeaseKeepAliveRequest, Malformed> {
    Ok(PbLeaseKeepAliveRequest {
        id: lease_id(map, "LeaseKeepAliveRequest")?,
    })
}

/// A stream's message through the gateway: wrapped in `result`.
fn lease_keep_alive_response(r: &PbLeaseKeepAliveResponse) -> Value {
    let body = Out(Map::new()).int("ID", r.id).int("TTL", r.ttl);
    let mut result = Map::new();
    result.insert("result".into(), with_header(body.0, &r.header));
    Value::Object(result)
}

fn lease_time_to_live_request(
    map: &Map<String, Value>,
) -> Result<PbLeaseTimeToLiveRequest, Malformed> {
    let f = Fields::new(map, "LeaseTimeToLiveRequest", &["ID", "keys"])?;
    Ok(PbLeaseTimeToLiveRequest {
        id: f.int64("ID")?,
        keys: f.boolean("keys")?,
    })
}

fn lease_time_to_live_response(r: &PbLeaseTimeToLiveResponse) -> Value {
    let keys = r
        .keys
        .iter()
        .map(|k| Value::String(BASE64.encode(k)))
        .collect();
    let body = Out(Map::new())
        .int("ID", r.id)
        .int("TTL", r.ttl)
        .int("grantedTTL", r.granted_ttl)
        .list("keys", keys);
    with_header(body.0, &r.header)
}

fn lease_leases_request(map: &Map<String, Value>) -> Result<PbLeaseLeasesRequest, Malformed> {
    Fields::new(map, "LeaseLeasesRequest", &[])?;
    Ok(PbLeaseLeasesRequest {})
}

fn lease_leases_response(r: &PbLeaseLeasesResponse) -> Value {
    let leases = r
        .leases
        .iter()
        .map(|l| Value::Object(Out(Map::new()).int("ID", l.id).0))
        .collect();
    with_header(Out(Map::new()).list("leases", leases).0, &r.header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> Map<String, Value> {
        parse_object(text.as_bytes()).unwrap()
    }

    #[test]
    fn requests_are_read_as_etcds_gateway_reads_them() {
        let r = range_request(&object(
            r#"{"key":"Zm9v","rangeEnd":"Zm9w","limit":"2","revision":3,
                "sort_order":"DESCEND","sort_target":3,"keys_only":true}"#,
        ))
        .unwrap();
        assert_eq!(
            (
                r.key.as_slice(),
                r.range_end.as_slice(),
                r.limit,
                r.revision
            ),
            (&b"foo"[..], &b"fop"[..], 2, 3)
        );
        assert_eq!((r.sort_order, r.sort_target, r.keys_only), (2, 3, true));
        let c = compare(&object(
            r#"{"key":"YQ==","target":"MOD","result":"LESS","mod_revision":"9"}"#,
        ))
        .unwrap();
        assert_eq!((c.target, c.result), (2, 2));
        assert_eq!(c.target_union, Some(PbTargetUnion::ModRevision(9)));
        assert_eq!(
            range_request(&object("")).unwrap(),
            PbRangeRequest::default()
        );
    }

    #[test]
    fn malformed_requests_name_the_field_and_what_is_accepted() {
        let err = |text: &str| range_request(&object(text)).unwrap_err().0;
        assert!(err(r#"{"key":"!!"}"#).contains("RangeRequest.key is not standard base64"));
        assert!(err(r#"{"key":5}"#).contains("must be a base64 string, not a number"));
        assert!(err(r#"{"limit":1.5}"#).contains("RangeRequest.limit must be a 64-bit"));
        assert!(err(r#"{"sort_order":"UP"}"#).contains("accepted: NONE, ASCEND, DESCEND"));
        assert!(err(r#"{"prev_key":true}"#).contains("unknown field \"prev_key\""));
        assert!(parse_object(b"[1]").unwrap_err().0.contains("an array"));
        assert!(parse_object(b"{").unwrap_err().0.contains("not valid JSON"));
    }

    #[test]
    fn responses_leave_out_defaults_and_write_64_bit_integers_as_strings() {
        let r = PbRangeResponse {
            header: Some(PbResponseHeader {
                revision: 7,
                ..PbResponseHeader::default()
            }),
            kvs: vec![PbKeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 7,
                version: 3,
                ..PbKeyValue::default()
            }],
            more: false,
            count: 1,
        };
        let expected: Value = serde_json::from_str(
            r#"{"header":{"revision":"7"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"7","version":"3"}],"count":"1"}"#,
        )
        .unwrap();
        assert_eq!(range_response(&r), expected);
        let empty = PbTxnResponse {
            header: Some(PbResponseHeader::default()),
            ..PbTxnResponse::default()
        };
        assert_eq!(txn_response(&empty).to_string(), r#"{"header":{}}"#);
    }
}
