//! The web dashboard at `/dashboard`, on the server's own listener (and TLS): the page and its
//! files ([`assets`]), sign-in ([`session`]), and `/dashboard/api/…`, which runs the control
//! plane's own routes (E2B's REST API and SoulBox's [`crate::inside`] routes) as the session's
//! key, so a key's team, role, rate limit and audit apply to the dashboard exactly as to the
//! SDKs. Every answer carries a strict Content-Security-Policy; changes must come from the
//! dashboard's own page ([`guard`]).

pub mod assets;
pub mod guard;
pub mod session;

use crate::access::{audit, SessionKey};
use crate::error::json_error;
use crate::AppState;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tower_service::Service;

/// The policy of every dashboard answer: scripts, styles and connections of this origin only,
/// nothing inline, never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Largest sign-in body.
const MAX_SIGN_IN: usize = 4096;

pub fn is_dashboard(path: &str) -> bool {
    path == "/dashboard" || path.starts_with("/dashboard/")
}

pub async fn handle(st: &AppState, control: &mut axum::Router, req: Request) -> Response {
    let mut resp = route(st, control, req).await;
    secure(resp.headers_mut(), st.cfg.tls.is_some());
    resp
}

async fn route(st: &AppState, control: &mut axum::Router, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path == "/dashboard" {
        return (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, "/dashboard/")],
        )
            .into_response();
    }
    if let Some(rest) = path.strip_prefix("/dashboard/api") {
        if rest.is_empty() || rest.starts_with('/') {
            return api(st, control, rest.to_string(), req).await;
        }
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard's pages are read with GET",
        );
    }
    assets::serve(path.trim_start_matches("/dashboard/"), req.headers())
}

fn unauthorized(msg: &str) -> Response {
    json_error(StatusCode::UNAUTHORIZED, msg)
}

async fn api(st: &AppState, control: &mut axum::Router, rest: String, req: Request) -> Response {
    if let Err(why) = guard::check(req.method(), req.headers()) {
        return json_error(StatusCode::FORBIDDEN, why);
    }
    let tls = st.cfg.tls.is_some();
    if rest == "/session" && req.method() == Method::POST {
        return sign_in(st, req).await;
    }
    let token = match session::token_of(req.headers(), tls) {
        Ok(Some(t)) => t,
        Ok(None) => return unauthorized("not signed in: sign in with an API key"),
        Err(session::TwoCookies) => {
            let mut r = unauthorized("two session cookies were sent: sign in again");
            if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(tls)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            return r;
        }
    };
    let Some(key_id) = st.sessions.key_of(&token) else {
        return unauthorized("the session has ended: sign in again");
    };
    if rest == "/session" {
        return match *req.method() {
            Method::GET => match st.store.caller_of_key_id(&key_id).await {
                Ok(Some(found)) => who(st, &found.caller).await,
                Ok(None) => unauthorized("the session's API key was revoked: sign in with another"),
                Err(e) => crate::error::ApiError::from(e).into_response(),
            },
            Method::DELETE => {
                st.sessions.end(&token);
                let mut r = StatusCode::NO_CONTENT.into_response();
                if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(tls)) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                r
            }
            _ => json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET, POST or DELETE"),
        };
    }
    // The control plane's route, as the session's key (never a key or cookie of the request).
    let (mut parts, body) = req.into_parts();
    let uri = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    match uri.parse() {
        Ok(u) => parts.uri = u,
        Err(_) => return json_error(StatusCode::BAD_REQUEST, "invalid path"),
    }
    parts.headers.remove("x-api-key");
    parts.headers.remove(header::COOKIE);
    parts.extensions.insert(SessionKey(key_id));
    control
        .call(Request::from_parts(parts, body))
        .await
        .into_response()
}

/// `POST /dashboard/api/session {"apiKey": …}`: the key is checked and forgotten; the browser
/// gets a session cookie.
async fn sign_in(st: &AppState, req: Request) -> Response {
    let source = req
        .extensions()
        .get::<crate::access::Peer>()
        .map(|p| p.0.ip().to_string());
    let body = match axum::body::to_bytes(req.into_body(), MAX_SIGN_IN).await {
        Ok(b) => b,
        Err(_) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the sign-in body is too large",
            )
        }
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct SignIn {
        api_key: String,
    }
    let Ok(SignIn { api_key }) = serde_json::from_slice::<SignIn>(&body) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "send {\"apiKey\": \"<your API key>\"}",
        );
    };
    let found = match st.store.caller_of_key(api_key.trim()).await {
        Ok(Some(f)) => f,
        Ok(None) => return unauthorized("invalid API key"),
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    // A sign-in is a request of its key: its rate limit applies.
    if let Err(e) = crate::access::take_rate(st, &found) {
        return e.into_response();
    }
    let token = st.sessions.start(&found.caller.key_id);
    // Who opened a dashboard session, and from where (a failed attempt names no team).
    let c = &found.caller;
    let mut entry = audit::Entry::by("key", Some(&c.team), "dashboard.sign_in", &c.key_id, true);
    entry.key_id = Some(c.key_id.clone());
    if let Some(source) = source {
        entry.source = source;
    }
    audit::record(&st.store, entry).await;
    let mut r = who(st, &found.caller).await;
    if r.status().is_success() {
        if let Ok(v) = HeaderValue::from_str(&session::set_cookie(st.cfg.tls.is_some(), &token)) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    r
}

/// Who the session is: team, key and role.
async fn who(st: &AppState, c: &crate::access::Caller) -> Response {
    let name = st
        .store
        .key_records(Some(&c.team))
        .await
        .ok()
        .and_then(|ks| ks.into_iter().find(|k| k.id == c.key_id))
        .map(|k| k.name);
    axum::Json(json!({"team": c.team, "keyId": c.key_id, "keyName": name, "role": c.role.as_str()}))
        .into_response()
}

/// The headers of every dashboard answer.
fn secure(h: &mut HeaderMap, tls: bool) {
    // A sandbox file's download keeps its own, stricter policy.
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    for (k, v) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=(), usb=(), payment=()",
        ),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}
