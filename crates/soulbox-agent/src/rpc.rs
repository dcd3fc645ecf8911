//! Connect-JSON request handling: unary calls, server streams, client streams, auth.

use crate::state::Agent;
use axum::body::Body;
use axum::http::{header, HeaderMap, Response, StatusCode};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use soulbox_protocol::connect::{self, Code, ConnectError};
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest request message accepted (uploads go through `/files`, not RPC).
pub const MAX_MESSAGE: usize = 16 << 20;

pub type RpcResult<T> = Result<T, ConnectError>;

pub fn invalid(msg: impl Into<String>) -> ConnectError {
    ConnectError::new(Code::InvalidArgument, msg)
}

pub fn not_found(msg: impl Into<String>) -> ConnectError {
    ConnectError::new(Code::NotFound, msg)
}

pub fn internal(msg: impl Into<String>) -> ConnectError {
    ConnectError::new(Code::Internal, msg)
}

/// The user named by `Authorization: Basic base64("<user>:")`, if any.
pub fn basic_user(headers: &HeaderMap) -> RpcResult<Option<String>> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| unauth("bad authorization header"))?;
    let Some(b64) = v.strip_prefix("Basic ") else {
        return Ok(None);
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| unauth("bad basic authorization"))?;
    let s = String::from_utf8(raw).map_err(|_| unauth("bad basic authorization"))?;
    Ok(Some(s.split(':').next().unwrap_or_default().to_string()))
}

fn unauth(m: &str) -> ConnectError {
    ConnectError::new(Code::Unauthenticated, m)
}

/// The call deadline from `Connect-Timeout-Ms`.
pub fn deadline(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(connect::parse_timeout_ms)
        .map(Duration::from_millis)
}

/// Keepalive interval requested by `Keepalive-Ping-Interval` (seconds; envd default 90 s).
pub fn keepalive(headers: &HeaderMap) -> Duration {
    let secs = headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(90);
    Duration::from_secs(secs)
}

/// Checks `E2B-Traffic-Access-Token` against the token derived from the agent's token.
pub fn check_traffic_token(agent: &Agent, headers: &HeaderMap) -> bool {
    match agent.token() {
        None => true,
        Some(t) => headers
            .get("e2b-traffic-access-token")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                soulbox_protocol::signature::equal(
                    v,
                    &soulbox_protocol::signature::traffic_token(&t),
                )
            }),
    }
}

/// Checks `X-Access-Token` against the agent's token (if it has one).
pub fn check_token(agent: &Agent, headers: &HeaderMap) -> bool {
    match agent.token() {
        None => true,
        Some(t) => headers
            .get("x-access-token")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| soulbox_protocol::signature::equal(v, &t)),
    }
}

pub const UNAUTHORIZED: &str =
    "unauthorized access, please provide a valid access token or method signing if supported";

pub fn unauthorized() -> Response<Body> {
    json_error(StatusCode::UNAUTHORIZED, UNAUTHORIZED)
}

/// envd's plain-HTTP error body `{"code": <status>, "message": …}`.
pub fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "code": status.as_u16(), "message": message });
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

/// Decodes a unary request body.
pub fn decode_unary<T: DeserializeOwned>(body: &[u8]) -> RpcResult<T> {
    let body = if body.is_empty() {
        b"{}" as &[u8]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| invalid(format!("invalid request message: {e}")))
}

/// Decodes the single envelope of a server-streaming request.
pub fn decode_stream_request<T: DeserializeOwned>(body: &[u8]) -> RpcResult<T> {
    let mut d = connect::Decoder::new(MAX_MESSAGE);
    d.push(body);
    match d.next_envelope() {
        Ok(Some(env)) if env.flags & connect::FLAG_END_STREAM == 0 => decode_unary(&env.payload),
        Ok(_) => Err(invalid("request body is not a Connect envelope")),
        Err(e) => Err(invalid(e.to_string())),
    }
}

pub fn unary_response<T: Serialize>(result: RpcResult<T>) -> Response<Body> {
    let (status, body) = match result {
        Ok(v) => (
            200,
            serde_json::to_vec(&v).unwrap_or_else(|_| b"{}".to_vec()),
        ),
        Err(e) => (e.code.http_status(), e.unary_body()),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, connect::UNARY_CONTENT_TYPE)
        .body(Body::from(body))
        .unwrap_or_default()
}

/// A server stream: messages pushed into the returned sender are framed and flushed one by
/// one; the stream ends with the end-of-stream frame carrying `Err` if one is sent.
pub struct StreamSink<T> {
    tx: mpsc::Sender<Result<T, ConnectError>>,
}

impl<T> Clone for StreamSink<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Serialize + Send + 'static> StreamSink<T> {
    /// Sends a message; false once the client has gone away.
    pub async fn send(&self, msg: T) -> bool {
        self.tx.send(Ok(msg)).await.is_ok()
    }

    pub async fn fail(&self, e: ConnectError) {
        let _ = self.tx.send(Err(e)).await;
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// Builds a streaming response; errors are reported in the end-of-stream frame with HTTP 200
/// (the JS SDK loses the message of a non-200 stream response).
pub fn stream_response<T: Serialize + Send + 'static>() -> (StreamSink<T>, Response<Body>) {
    let (tx, rx) = mpsc::channel::<Result<T, ConnectError>>(64);
    let frames = futures::stream::unfold((rx, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        match rx.recv().await {
            Some(Ok(msg)) => Some((connect::encode_message(&msg), (rx, false))),
            Some(Err(e)) => Some((connect::encode_end(Some(&e)), (rx, true))),
            None => Some((connect::encode_end(None), (rx, true))),
        }
    })
    .map(Ok::<Bytes, std::convert::Infallible>);
    let resp = Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, connect::STREAM_CONTENT_TYPE)
        .body(Body::from_stream(frames))
        .unwrap_or_default();
    (StreamSink { tx }, resp)
}

/// A stream that ends at once with an error.
pub fn stream_error(e: ConnectError) -> Response<Body> {
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, connect::STREAM_CONTENT_TYPE)
        .body(Body::from(connect::encode_end(Some(&e))))
        .unwrap_or_default()
}
