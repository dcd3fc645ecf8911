//! Inside a sandbox, for people rather than SDKs: its processes (all of them, as the host sees
//! its cgroup), its files (the envd file API with the sandbox's token added by the server) and
//! a terminal over a WebSocket. These are SoulBox's own routes under the control plane, so the
//! gate checks the key, its rate and its role (member: they grant what the envd token grants)
//! and the audit log records the changes; the dashboard reaches them with its session.

mod envd;
mod processes;
mod terminal;

use crate::AppState;
use axum::routing::{get, post};
use axum::Router;

const ENVD: &str = "/sandboxes/{id}/envd/{*rpc}";
const TERMINAL: &str = "/sandboxes/{id}/terminal";
const PROCESSES: &str = "/sandboxes/{id}/processes";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(PROCESSES, get(processes::list))
        .route(ENVD, post(envd::call).get(envd::call))
        .route(TERMINAL, get(terminal::open))
}

/// Whether a route pattern is one of these (they need a member key).
pub fn is_inside(pattern: &str) -> bool {
    matches!(pattern, ENVD | TERMINAL | PROCESSES)
}

/// Whether a request to a route pattern only reads (not recorded in the audit log).
pub fn is_read(pattern: &str, path: &str) -> bool {
    pattern == ENVD && envd::is_read(path)
}

pub fn is_terminal(pattern: &str) -> bool {
    pattern == TERMINAL
}
