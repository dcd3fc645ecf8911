//! `soulbox serve`: the E2B-compatible control plane and the data-plane proxy on one listener.
//!
//! Each request is dispatched by the rules of the protocol spec (§1.6): `X-API-KEY` ⇒ control
//! plane; `E2b-Sandbox-Id`/`-Port` headers or a `{port}-{id}.{domain}` Host ⇒ data plane; a
//! signed `/files` URL ⇒ data plane by signature; anything else ⇒ control plane (which answers
//! 401 without a key). One URL thus serves as both `E2B_API_URL` and `E2B_SANDBOX_URL`.

pub mod api;
pub mod error;
mod lifecycle;
pub mod proxy;
pub mod store;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::{IntoResponse, Response};
use soulbox_runtime::ns::NsBackend;
use std::net::SocketAddr;
use std::sync::Arc;
use tower_service::Service;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Domain returned to SDKs for `get_host()` (`{port}-{id}.{domain}`); `None` = the
    /// client's own `E2B_DOMAIN`.
    pub domain: Option<String>,
    /// Largest control-plane request body, in bytes.
    pub max_body: usize,
}

#[derive(Clone)]
pub struct AppState {
    pub store: store::Store,
    pub backend: Arc<NsBackend>,
    pub cfg: Arc<ServerConfig>,
}

impl AppState {
    /// Kills a sandbox and records it as gone (the record is written first).
    pub async fn kill(&self, id: &str) -> error::ApiResult<()> {
        self.store.set_state(id, "killed").await?;
        match soulbox_runtime::Backend::kill(&self.backend, id).await {
            Ok(()) | Err(soulbox_runtime::RuntimeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Serves until the process is stopped.
pub async fn serve(
    cfg: ServerConfig,
    store: store::Store,
    backend: Arc<NsBackend>,
) -> std::io::Result<()> {
    let state = AppState {
        store,
        backend,
        cfg: Arc::new(cfg),
    };
    // Sandboxes of an earlier run were removed by the runtime at start: report them as gone.
    if let Ok(live) = state.store.live_sandboxes(None).await {
        for s in live {
            if soulbox_runtime::Backend::get(&state.backend, &s.id).is_none() {
                let _ = state.store.set_state(&s.id, "killed").await;
            }
        }
    }
    lifecycle::spawn(state.clone());
    let control = api::router()
        .layer(DefaultBodyLimit::max(state.cfg.max_body))
        .fallback(|| async {
            error::json_error(axum::http::StatusCode::NOT_FOUND, "no such route")
        })
        .with_state(state.clone());
    let app = axum::Router::new()
        .fallback(dispatch)
        .with_state((state.clone(), control));
    let listener = tokio::net::TcpListener::bind(state.cfg.listen).await?;
    tracing::info!(addr = %state.cfg.listen, "listening");
    axum::serve(listener, app).await
}

async fn dispatch(
    State((st, mut control)): State<(AppState, axum::Router)>,
    req: Request,
) -> Response {
    if req.headers().contains_key("x-api-key") {
        return control.call(req).await.into_response();
    }
    match proxy::route(req.headers()) {
        Some(Ok(target)) => return proxy::forward(&st, target, req).await,
        Some(Err(msg)) => return error::json_error(axum::http::StatusCode::BAD_REQUEST, &msg),
        None => {}
    }
    if proxy::is_signed_files(&req) {
        let (method, uri) = (req.method().clone(), req.uri().clone());
        return match proxy::by_signature(&st, &method, &uri).await {
            Some(id) => {
                proxy::forward(
                    &st,
                    proxy::Target {
                        sandbox_id: id,
                        port: soulbox_protocol::ENVD_PORT,
                    },
                    req,
                )
                .await
            }
            None => error::json_error(axum::http::StatusCode::UNAUTHORIZED, "invalid signature"),
        };
    }
    let req: Request<Body> = req;
    control.call(req).await.into_response()
}
