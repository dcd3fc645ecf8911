//! The data plane: requests for a sandbox are forwarded, bytes untouched, to its agent's unix
//! socket. Routing (spec §1.6): `E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers, a Host of the
//! form `{port}-{id}.{domain}`, or — for header-less signed `/files` URLs — the sandbox whose
//! token produced the signature.

use crate::error::json_error;
use crate::AppState;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use soulbox_protocol::signature::{self, Operation};
use std::collections::HashMap;

/// Where a data-plane request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub sandbox_id: String,
    pub port: u16,
}

/// The sandbox and port named by the routing headers, or by a `{port}-{id}.…` Host.
pub fn route(headers: &HeaderMap) -> Option<Result<Target, String>> {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (id, port) = (h("e2b-sandbox-id"), h("e2b-sandbox-port"));
    if id.is_some() || port.is_some() {
        return Some(match (id, port) {
            (Some(id), Some(port)) => port
                .trim()
                .parse()
                .map(|port| Target {
                    sandbox_id: id,
                    port,
                })
                .map_err(|_| format!("invalid E2b-Sandbox-Port '{port}'")),
            (None, _) => Err("Missing header: E2b-Sandbox-Id".into()),
            (_, None) => Err("Missing header: E2b-Sandbox-Port".into()),
        });
    }
    let host = h("host")?;
    let label = host.split('.').next()?;
    if !host.contains('.') {
        return None;
    }
    let mut parts = label.split('-');
    let port = parts.next()?.parse().ok()?;
    let id = parts.next().filter(|id| {
        !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    })?;
    Some(Ok(Target {
        sandbox_id: id.to_string(),
        port,
    }))
}

/// A `GET|POST /files?…&signature=…` request with no routing information.
pub fn is_signed_files(req: &Request<Body>) -> bool {
    req.uri().path() == "/files"
        && req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("signature=")))
}

/// E2B's answer for a sandbox that does not exist (any more).
pub fn not_found(id: &str) -> Response {
    let body =
        serde_json::json!({"sandboxId": id, "message": "The sandbox was not found", "code": 502});
    (
        StatusCode::BAD_GATEWAY,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub fn port_closed(id: &str) -> Response {
    let body = serde_json::json!({"sandboxId": id, "message": "The sandbox is running but port is not open", "code": 502});
    (
        StatusCode::BAD_GATEWAY,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Finds the sandbox whose token signed a header-less `/files` URL.
pub async fn by_signature(
    st: &AppState,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
) -> Option<String> {
    let q: HashMap<String, String> = uri.query().map(|q| {
        q.split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_string(),
                    percent_encoding::percent_decode_str(&v.replace('+', " "))
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            })
            .collect()
    })?;
    let sig = q.get("signature")?;
    let path = q.get("path").map(String::as_str).unwrap_or_default();
    let user = q.get("username").map(String::as_str).unwrap_or_default();
    let exp = q.get("signature_expiration").and_then(|e| e.parse().ok());
    let op = if method == axum::http::Method::GET {
        Operation::Read
    } else {
        Operation::Write
    };
    let live = st.store.live_sandboxes(None).await.ok()?;
    live.into_iter()
        .find(|s| signature::equal(sig, &signature::sign(path, op, user, &s.access_token, exp)))
        .map(|s| s.id)
}

/// Forwards a request to the sandbox's agent and streams the answer back.
pub async fn forward(st: &AppState, target: Target, mut req: Request<Body>) -> Response {
    let Ok(Some(rec)) = st.store.live_sandbox(&target.sandbox_id).await else {
        return not_found(&target.sandbox_id);
    };
    // `allowPublicTraffic: false`: its ports answer only with the traffic access token (the
    // agent's own port has the envd token). Checked before anything else, an auto-resume
    // included.
    if !rec.public_traffic && target.port != soulbox_protocol::ENVD_PORT {
        let given = req
            .headers()
            .get("e2b-traffic-access-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !signature::equal(given, &signature::traffic_token(&rec.access_token)) {
            return json_error(
                StatusCode::FORBIDDEN,
                "this sandbox's ports are not public: send the header e2b-traffic-access-token with the sandbox's trafficAccessToken",
            );
        }
    }
    if rec.state == "paused" {
        if !rec.auto_resume {
            return json_error(StatusCode::BAD_GATEWAY, "The sandbox is paused");
        }
        // Auto-resume: the first request wakes it, for as long as it was created for.
        let end = chrono::Utc::now().timestamp_millis() + rec.timeout_ms.max(1000);
        let resumed = crate::pausing::resume(st, &rec.id, end, true).await;
        let entry = crate::access::audit::Entry::by(
            "server",
            Some(&rec.team_id),
            "sandbox.resume",
            &rec.id,
            resumed.is_ok(),
        );
        let mut detail = serde_json::json!({"reason": "auto-resume on traffic"});
        if let Err(e) = &resumed {
            detail["message"] = e.to_string().into();
        }
        crate::access::audit::record(&st.store, entry.with_detail(detail)).await;
        if let Err(e) = resumed {
            tracing::warn!(sandbox_id = %rec.id, "auto-resume: {e}");
            // Over the team's quota: say so, as the control plane does.
            if e.status() == StatusCode::TOO_MANY_REQUESTS {
                return e.into_response();
            }
            return json_error(
                StatusCode::BAD_GATEWAY,
                "The sandbox is paused and could not be resumed",
            );
        }
    }
    let is_upload = target.port == soulbox_protocol::ENVD_PORT
        && matches!(
            *req.method(),
            axum::http::Method::POST | axum::http::Method::PUT
        )
        && req.uri().path() == "/files";
    let _upload = match is_upload.then(|| st.pausing.upload(&rec.id)) {
        Some(Err(msg)) => return json_error(StatusCode::CONFLICT, &msg),
        Some(Ok(u)) => Some(u),
        None => None,
    };
    let Some(info) = soulbox_runtime::Backend::get(&st.backend, &rec.id) else {
        return not_found(&rec.id);
    };
    let agent_port =
        target.port == soulbox_protocol::ENVD_PORT || target.port == soulbox_protocol::JUPYTER_PORT;
    if !agent_port {
        return tunnel(&info.socket, &rec.id, &rec.access_token, target.port, req).await;
    }
    let stream = match tokio::net::UnixStream::connect(&info.socket).await {
        Ok(s) => s,
        Err(_) => return not_found(&rec.id),
    };
    let Some(mut sender) = handshake(TokioIo::new(stream)).await else {
        return not_found(&rec.id);
    };
    for h in [
        "e2b-sandbox-id",
        "e2b-sandbox-port",
        "connection",
        "keep-alive",
        "proxy-connection",
    ] {
        req.headers_mut().remove(h);
    }
    match sender.send_request(req).await {
        Ok(resp) if crate::connect_stream::is_connect_stream(resp.headers()) => {
            let id = rec.id.clone();
            resp.map(|b| crate::connect_stream::end_cleanly(st.clone(), id, b))
        }
        Ok(resp) => resp.map(Body::new),
        Err(e) => {
            tracing::debug!(sandbox_id = %rec.id, "proxying failed: {e}");
            not_found(&rec.id)
        }
    }
}

async fn handshake(
    stream: impl hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
) -> Option<hyper::client::conn::http1::SendRequest<Body>> {
    let (sender, conn) = hyper::client::conn::http1::handshake::<_, Body>(stream)
        .await
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Some(sender)
}

/// Reaches `127.0.0.1:port` inside the sandbox through the agent's tunnel, then forwards the
/// request over it (HTTP/1.1); a WebSocket or other upgrade is bridged end to end.
async fn tunnel(
    socket: &std::path::Path,
    id: &str,
    token: &str,
    port: u16,
    mut req: Request<Body>,
) -> Response {
    use axum::http::header;
    let Ok(stream) = tokio::net::UnixStream::connect(socket).await else {
        return not_found(id);
    };
    let Some(mut agent) = handshake(TokioIo::new(stream)).await else {
        return not_found(id);
    };
    let Ok(open) = Request::get(format!("/tunnel?port={port}"))
        .header(header::HOST, "agent")
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "soulbox-tunnel")
        .header("x-access-token", token)
        .body(Body::empty())
    else {
        return not_found(id);
    };
    let opened = match agent.send_request(open).await {
        Ok(r) if r.status() == StatusCode::SWITCHING_PROTOCOLS => r,
        _ => return port_closed(id),
    };
    let Ok(pipe) = hyper::upgrade::on(opened).await else {
        return port_closed(id);
    };
    let Some(mut server) = handshake(pipe).await else {
        return port_closed(id);
    };
    for h in ["e2b-sandbox-id", "e2b-sandbox-port"] {
        req.headers_mut().remove(h);
    }
    let wants_upgrade = req.headers().contains_key(header::UPGRADE);
    let client_side = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut resp = match server.send_request(req).await {
        Ok(r) => r,
        Err(_) => return port_closed(id),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_side) = client_side {
            let server_side = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(c), Ok(s)) = tokio::join!(client_side, server_side) {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(s))
                            .await;
                }
            });
        }
    }
    resp.map(Body::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn routes_by_headers_then_host() {
        let t = route(&headers(&[
            ("e2b-sandbox-id", "abc123"),
            ("e2b-sandbox-port", "49983"),
            ("host", "127.0.0.1:3000"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            t,
            Target {
                sandbox_id: "abc123".into(),
                port: 49983
            }
        );
        assert!(route(&headers(&[("e2b-sandbox-id", "abc")]))
            .unwrap()
            .is_err());
        let t = route(&headers(&[("host", "8080-abc123.sandbox.example.com")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            t,
            Target {
                sandbox_id: "abc123".into(),
                port: 8080
            }
        );
        assert!(route(&headers(&[("host", "127.0.0.1:3000")])).is_none());
        assert!(route(&headers(&[("host", "localhost:3000")])).is_none());
        assert!(route(&headers(&[("host", "api.example.com")])).is_none());
    }
}
