//! `/sandboxes/{id}/envd/{rpc}`: the sandbox's file API (envd's `/files` and the read and
//! change calls of `filesystem.Filesystem`) for a key instead of the envd token. The request
//! is rebuilt from what the call needs, so nothing of the caller's (a session cookie, other
//! headers) reaches the sandbox; the server adds the sandbox's token.

use crate::access::Team;
use crate::error::{ApiError, ApiResult};
use crate::proxy::Target;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;

/// The calls allowed, and whether each only reads.
const CALLS: &[(&str, bool)] = &[
    ("files", false),
    ("filesystem.Filesystem/ListDir", true),
    ("filesystem.Filesystem/Stat", true),
    ("filesystem.Filesystem/MakeDir", false),
    ("filesystem.Filesystem/Remove", false),
    ("filesystem.Filesystem/Move", false),
];

/// Whether the request path (`/sandboxes/ID/envd/RPC`) names a call that only reads.
pub fn is_read(path: &str) -> bool {
    let rpc = path
        .split_once("/envd/")
        .map(|(_, r)| r)
        .unwrap_or_default();
    CALLS.iter().any(|(c, read)| *c == rpc && *read)
}

pub async fn call(
    State(st): State<AppState>,
    Team(team): Team,
    Path((id, rpc)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    if !CALLS.iter().any(|(c, _)| *c == rpc) {
        return Err(ApiError::NotFound(format!(
            "'{rpc}' is not a file call of the sandbox: use files, filesystem.Filesystem/ListDir, Stat, MakeDir, Remove or Move"
        )));
    }
    let download = rpc == "files" && req.method() == Method::GET;
    if rpc != "files" && req.method() != Method::POST {
        return Err(ApiError::BadRequest(format!("{rpc} is called with POST")));
    }
    let r = crate::api::find(&st, &team, &id).await?;
    if r.state == "paused" {
        return Err(ApiError::Conflict(format!(
            "sandbox {id} is paused: resume it to reach its files"
        )));
    }
    let (parts, body) = req.into_parts();
    let uri = match parts.uri.query() {
        Some(q) => format!("/{rpc}?{q}"),
        None => format!("/{rpc}"),
    };
    let mut fwd = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .header(header::HOST, "envd")
        .header("x-access-token", &r.access_token);
    for h in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
        if let Some(v) = parts.headers.get(&h) {
            fwd = fwd.header(h, v);
        }
    }
    let fwd = fwd
        .body(Body::new(body))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let target = Target {
        sandbox_id: r.id,
        port: soulbox_protocol::ENVD_PORT,
    };
    let mut resp = crate::metrics::proxy::forward(&st, target, fwd).await;
    // The agent's 401 (an unknown user, a token it refuses) is not the caller's: the
    // dashboard reads a 401 as its session ending.
    if resp.status() == StatusCode::UNAUTHORIZED {
        *resp.status_mut() = StatusCode::FORBIDDEN;
    }
    // What comes back was made in the sandbox: only the headers that describe the body pass
    // (never a cookie or a policy of the sandbox's choosing on this origin).
    let h = resp.headers_mut();
    let kept: Vec<_> = [header::CONTENT_TYPE, header::CONTENT_LENGTH]
        .into_iter()
        .filter_map(|n| h.get(&n).cloned().map(|v| (n, v)))
        .collect();
    h.clear();
    h.extend(kept);
    // Only the answers envd gives keep their type; anything else is bytes. None is ever a
    // document of this origin.
    let typed = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            let t = t.split(';').next().unwrap_or_default().trim();
            matches!(
                t,
                "application/json" | "application/connect+json" | "application/proto"
            )
        });
    if !typed {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    if download && resp.status().is_success() {
        // A sandbox's file is never a page of this origin: always a download, never sniffed
        // into HTML or script.
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    Ok(resp)
}
