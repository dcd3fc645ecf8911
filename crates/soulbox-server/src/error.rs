//! Control-plane errors, answered with E2B's body `{"code": <status>, "message": …}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
    /// Too many requests from one key: the SDKs wait `Retry-After` and retry.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    /// Over a team quota: 429 too, but marked not to be retried at once (it frees only when
    /// a sandbox ends).
    #[error("{0}")]
    OverQuota(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited { .. } | ApiError::OverQuota(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "code": status.as_u16(), "message": message });
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, ApiError::Internal(_)) {
            tracing::error!("{self}");
        }
        let mut resp = json_error(self.status(), &self.to_string());
        let retry = match &self {
            // Whole seconds, at least one: the SDKs read delta-seconds only.
            ApiError::RateLimited { retry_after, .. } => {
                Some((retry_after.as_secs_f64().ceil().max(1.0) as u64, "true"))
            }
            ApiError::OverQuota(_) => Some((10, "false")),
            _ => None,
        };
        if let Some((secs, again)) = retry {
            let h = resp.headers_mut();
            h.insert("retry-after", secs.into());
            h.insert("should-retry", axum::http::HeaderValue::from_static(again));
        }
        resp
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<soulbox_runtime::RuntimeError> for ApiError {
    fn from(e: soulbox_runtime::RuntimeError) -> Self {
        use soulbox_runtime::RuntimeError as R;
        match e {
            R::NotFound(id) => ApiError::NotFound(format!("sandbox {id} not found")),
            R::InvalidSpec(m) => ApiError::BadRequest(m),
            c @ R::Capacity(_) => ApiError::Unavailable(c.to_string()),
            R::Template(t @ soulbox_runtime::template::TemplateError::Unknown(_)) => {
                ApiError::NotFound(t.to_string())
            }
            R::Template(t @ soulbox_runtime::template::TemplateError::NotBuilt(_)) => {
                ApiError::BadRequest(t.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A request body, with the extractor's rejections (too large, broken) in E2B's error shape.
pub struct Body(pub axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(
                ApiError::PayloadTooLarge(format!("request body too large: {}", e.body_text())),
            ),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}
