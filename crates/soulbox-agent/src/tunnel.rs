//! `GET /tunnel?port=N` with `Upgrade: soulbox-tunnel`: a byte pipe to `127.0.0.1:N` inside
//! the sandbox. The host's proxy uses it to reach servers started in the sandbox (E2B's
//! `get_host(port)`), HTTP and WebSocket alike, without a host port per sandbox.

use crate::rpc::json_error;
use crate::state::Agent;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

pub const UPGRADE: &str = "soulbox-tunnel";

#[derive(Debug, Deserialize)]
pub struct TunnelQuery {
    port: u16,
}

pub async fn open(
    State(agent): State<Agent>,
    Query(q): Query<TunnelQuery>,
    mut req: Request,
) -> Response<Body> {
    let wants_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        == Some(UPGRADE);
    if !wants_upgrade {
        return json_error(
            StatusCode::BAD_REQUEST,
            "the tunnel needs `Upgrade: soulbox-tunnel`",
        );
    }
    // Connect first, so a closed port is a plain answer rather than a broken tunnel.
    let target = match tokio::net::TcpStream::connect(("127.0.0.1", q.port)).await {
        Ok(t) => t,
        Err(e) => {
            return json_error(
                StatusCode::BAD_GATEWAY,
                &format!("port {} is not open: {e}", q.port),
            )
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    // The tunnel outlives its request: it ends with the host's connections too.
    let token = agent.host_conns.token();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut client = TokioIo::new(upgraded);
        let mut target = target;
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut target) => {}
            _ = token.cancelled() => {}
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, UPGRADE)
        .body(Body::empty())
        .unwrap_or_default()
}
