//! What the runtime tells the agent at start (over an inherited pipe, never a file the
//! sandbox could read) and later through `POST /init`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The agent's configuration. Field names follow envd's `/init` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct InitSpec {
    /// Sandbox-global env vars, given to every process.
    pub env_vars: BTreeMap<String, String>,
    /// The envd access token; `None` leaves the agent unsecured.
    pub access_token: Option<String>,
    /// User for requests that name none (E2B templates: `user`).
    pub default_user: Option<String>,
    /// Working directory for processes that name none (else the user's home).
    pub default_workdir: Option<String>,
}
