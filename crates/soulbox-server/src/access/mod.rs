//! Who is calling and what they may do: every control-plane request with an `X-API-KEY` goes
//! through [`gate`] — the key is looked up once, its rate limit and its role's permission for
//! the route are checked, and the change it makes is written to the audit log.
//!
//! Routes without a key (health, metrics, signed uploads) pass through; a handler that needs a
//! team takes [`Team`] (or [`Caller`]), which refuses a request the gate did not admit.

pub mod audit;
pub mod keys;
pub mod quota;
pub mod rate;

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reads only: lists, info, metrics, logs. Never a sandbox's envd token.
    ReadOnly,
    /// Everything a team's agents do: sandboxes, templates, snapshots, secrets.
    Member,
    /// A member who also manages the team's keys and reads its audit log.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "read-only" | "readonly" | "viewer" => Ok(Role::ReadOnly),
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "unknown role '{s}': use admin, member or read-only"
            )),
        }
    }
}

/// The client's address, set on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The key a request came with, once the gate admitted it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub team: String,
    pub key_id: String,
    pub role: Role,
    /// The team's quota, read with the key (a create need not read it again).
    pub quota: quota::Quota,
}

/// The key of a signed-in dashboard session (set by [`crate::dashboard`] once it checked the
/// session cookie, in place of an `X-API-KEY`); the gate treats it as that key.
#[derive(Debug, Clone)]
pub struct SessionKey(pub String);

/// The team of the request's key.
pub struct Team(pub String);

fn admitted(parts: &Parts) -> Result<Caller, ApiError> {
    if let Some(c) = parts.extensions.get::<Caller>() {
        return Ok(c.clone());
    }
    Err(ApiError::Unauthorized(
        "missing X-API-KEY header: set E2B_API_KEY to a SoulBox API key".into(),
    ))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        admitted(parts)
    }
}

impl FromRequestParts<AppState> for Team {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        admitted(parts).map(|c| Team(c.team))
    }
}

/// The least role a route needs. Reads need read-only, except those that hand out what
/// lets one write (an upload link); changes need member; the team's keys and audit log need
/// admin. A route added later is a change unless it is a plain read.
pub fn required_role(method: &Method, path: &str) -> Role {
    if path.starts_with("/api-keys") || path.starts_with("/audit") {
        return Role::Admin;
    }
    // What runs in a sandbox, its files and a terminal: what its envd token grants.
    if crate::inside::is_inside(path) {
        return Role::Member;
    }
    let read = method == Method::GET || method == Method::HEAD;
    if read && path != "/templates/{id}/files/{hash}" {
        Role::ReadOnly
    } else {
        Role::Member
    }
}

/// Takes one request from the key's budget, or the 429 to answer.
pub fn take_rate(st: &AppState, found: &keys::FoundKey) -> Result<(), ApiError> {
    st.rate
        .take(&found.caller.key_id, found.rate.or(st.cfg.rate_limit))
        .map_err(|wait| ApiError::RateLimited {
            message: format!(
                "this key made too many requests: try again in {:.1} s",
                wait.as_secs_f64()
            ),
            retry_after: wait,
        })
}

/// The middleware in front of every control-plane route (see the module's doc).
pub async fn gate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let lookup = match (
        req.extensions().get::<SessionKey>(),
        req.headers().get("x-api-key"),
    ) {
        (Some(SessionKey(id)), _) => st.store.caller_of_key_id(id).await,
        (None, Some(key)) => match key.to_str() {
            Ok(key) => st.store.caller_of_key(key).await,
            Err(_) => return ApiError::Unauthorized("invalid API key".into()).into_response(),
        },
        (None, None) => return next.run(req).await,
    };
    let found = match lookup {
        Ok(Some(found)) => found,
        Ok(None) => return ApiError::Unauthorized("invalid API key".into()).into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Err(e) = take_rate(&st, &found) {
        return e.into_response();
    }
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let method = req.method().clone();
    let caller = found.caller;
    let need = required_role(&method, &path);
    // Reading a sandbox's files is not a change; opening a terminal in it is.
    let change = (audit::is_change(&method) && !crate::inside::is_read(&path, req.uri().path()))
        || crate::inside::is_terminal(&path);
    let entry = change.then(|| audit::Pending::new(&req, &caller, &method, &path));
    if caller.role < need {
        let e = ApiError::Forbidden(format!(
            "this key is {}: {} {} needs a {} key (see `soulbox keys`)",
            caller.role.as_str(),
            method,
            req.uri().path(),
            need.as_str()
        ));
        if let Some(entry) = entry {
            entry.denied(&st, &e.to_string()).await;
        }
        return e.into_response();
    }
    req.extensions_mut().insert(caller);
    let resp = next.run(req).await;
    match entry {
        Some(entry) => entry.finish(&st, resp).await,
        None => resp,
    }
}
