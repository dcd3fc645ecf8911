//! Typed errors: each says what went wrong and, where it can, what to do about it.

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answered at the server's URL.
    #[error("cannot reach SoulBox at {url} (is `soulbox serve` running there? set SOULBOX_URL or --url)")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The API key (or a sandbox's access token) was missing or wrong.
    #[error("not authorized: {0} (check SOULBOX_API_KEY or --api-key; `soulbox keys create` makes a key)")]
    Unauthorized(String),
    /// The sandbox's user may not do that (file permissions, another user's process).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// No such sandbox, file or process.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request was refused as invalid.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request conflicts with the sandbox's state (e.g. pausing a paused sandbox).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Any other HTTP error from the control plane or the sandbox proxy.
    #[error("server error {status}: {message}")]
    Api { status: u16, message: String },
    /// A Connect RPC error from the sandbox's agent (`code` as in Connect: `not_found`,
    /// `invalid_argument`, `permission_denied`, …).
    #[error("{code}: {message}")]
    Rpc { code: String, message: String },
    /// The server's answer did not have the expected shape.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// A local file or stream failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The HTTP transport failed mid-request.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps an HTTP error answer (`{"code", "message"}` bodies of the control plane, the proxy
    /// and the agent) to an error.
    pub(crate) fn from_status(status: u16, body: &[u8]) -> Error {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let message = v["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
        match status {
            400 => Error::BadRequest(message),
            // envd's /files answers 401 for the filesystem's "permission denied" too.
            401 if message.contains("ermission denied") => Error::PermissionDenied(message),
            401 => Error::Unauthorized(message),
            403 => Error::PermissionDenied(message),
            404 => Error::NotFound(message),
            409 => Error::Conflict(message),
            // The proxy's answer for a sandbox that does not exist (any more).
            502 if message.contains("not found") => Error::NotFound(message),
            _ => Error::Api { status, message },
        }
    }

    /// Maps a Connect error (`{"code", "message"}`) from the agent.
    pub(crate) fn from_connect(v: &serde_json::Value) -> Error {
        let code = v["code"].as_str().unwrap_or("unknown").to_string();
        let message = v["message"].as_str().unwrap_or_default().to_string();
        match code.as_str() {
            "not_found" => Error::NotFound(message),
            "unauthenticated" => Error::Unauthorized(message),
            "permission_denied" => Error::PermissionDenied(message),
            _ => Error::Rpc { code, message },
        }
    }

    /// Whether the error means the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }
}
