//! The egress proxy: the firewall redirects a sandbox's connections to the ports its policy
//! decides by name (80, 443, `httpsPorts`) here. For each: find the sandbox by its slot's
//! address, read what the connection names, decide, connect, then relay — byte for byte,
//! or, for a host with header rules, as HTTP with the rule's headers set (TLS terminated
//! with the sandbox's CA, the real server verified).
//!
//! Where a connection goes: a name the policy allows (or one with rules) is resolved
//! through the policy's resolvers and only those addresses are dialled, whatever address
//! the sandbox dialled; anything else goes to the address it dialled, if the policy allows
//! that address. Every address also meets the firewall's baseline (see
//! [`super::Egress::baseline_allows`]). When the policy changes, each connection is
//! decided again and ends if refused.

use super::peek::{read_hello, Hello, Replay};
use super::policy::{Piece, Policy};
use super::{Egress, Sandbox};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const PEEK_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn serve(egress: Arc<Egress>, listener: tokio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let e = egress.clone();
                tokio::spawn(async move {
                    if let Err(why) = handle(e, stream, peer).await {
                        tracing::debug!(%peer, "egress: {why}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("egress proxy accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The address the sandbox dialled, before the firewall's redirect.
fn original_dst(s: &TcpStream) -> std::io::Result<SocketAddr> {
    let a = nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::OriginalDst)?;
    let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
    Ok(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
}

/// How a connection may go out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// To what `name` resolves to.
    Name(String),
    /// To the address dialled.
    Dialled,
}

/// Decides a connection naming `name` (if it names one) to `dialled`.
fn route(p: &Policy, name: Option<&str>, dialled: IpAddr) -> Option<Route> {
    if let Some(n) = name {
        if p.allows_name(n) || p.rule_for(n).is_some() {
            return Some(Route::Name(n.to_string()));
        }
    }
    p.allows_ip(dialled).then_some(Route::Dialled)
}

/// Whether an open connection to `upstream`, made for `name`, may stay under policy `p`.
fn still_allowed(p: &Policy, name: Option<&str>, upstream: IpAddr) -> bool {
    name.is_some_and(|n| p.allows_name(n)) || p.allows_ip(upstream)
}

async fn handle(egress: Arc<Egress>, mut down: TcpStream, peer: SocketAddr) -> Result<(), String> {
    let (id, sb) = egress
        .sandbox_at(peer.ip())
        .ok_or("not from a sandbox with a policy")?;
    let _permit = sb
        .conns
        .clone()
        .try_acquire_owned()
        .map_err(|_| format!("{id}: too many connections"))?;
    let dialled = original_dst(&down).map_err(|e| format!("original destination: {e}"))?;
    let _ = down.set_nodelay(true);
    let hello = tokio::time::timeout(PEEK_TIMEOUT, read_hello(&mut down))
        .await
        .map_err(|_| "nothing sent in time".to_string())?
        .map_err(|e| e.to_string())?;
    let mut watch = sb.policy.subscribe();
    let policy = watch.borrow_and_update().clone();
    let name = hello.name.clone();
    let Some(route) = route(&policy, name.as_deref(), dialled.ip()) else {
        refuse(
            &mut down,
            &hello,
            &format!(
                "{} is not allowed by the sandbox's network policy",
                name.as_deref().unwrap_or(&dialled.ip().to_string())
            ),
        )
        .await;
        return Err(format!("{id}: refused {name:?} at {dialled}"));
    };
    let targets: Vec<IpAddr> = match &route {
        Route::Name(n) => {
            let r = sb.resolver(&policy.proxy_dns);
            match r.lookup_ip(format!("{n}.")).await {
                Ok(l) => {
                    let mut v: Vec<IpAddr> = l.iter().collect();
                    v.sort_by_key(|a| a.is_ipv6());
                    v
                }
                Err(e) => {
                    refuse(&mut down, &hello, &format!("{n} does not resolve: {e}")).await;
                    return Err(format!("{id}: resolving {n}: {e}"));
                }
            }
        }
        Route::Dialled => vec![dialled.ip()],
    };
    // A rule's host is reached only if its address is allowed; an allowed name always is.
    let by_name = name.as_deref().is_some_and(|n| policy.allows_name(n));
    let targets: Vec<IpAddr> = targets
        .into_iter()
        .filter(|a| egress.baseline_allows(*a) && (by_name || policy.allows_ip(*a)))
        .collect();
    if targets.is_empty() {
        refuse(&mut down, &hello, "no address it may reach").await;
        return Err(format!("{id}: {name:?} has no address it may reach"));
    }
    let (up, upstream) = connect(&targets, dialled.port()).await?;
    let rule = name
        .as_deref()
        .and_then(|n| policy.rule_for(n).map(|r| (n.to_string(), r.clone())));
    // A change of the host's header rules ends the connection too: a removed secret is not
    // sent on, and a new rule applies from the next connection.
    let rule_at_start = rule.as_ref().map(|(_, r)| r.clone());
    let relay = async {
        match rule {
            Some((n, rule)) => intercept(&egress, &sb, hello, down, up, &n, rule).await,
            None => splice(hello, down, up).await,
        }
    };
    tokio::pin!(relay);
    loop {
        tokio::select! {
            r = &mut relay => return r,
            changed = watch.changed() => {
                let p = watch.borrow_and_update().clone();
                let rule_now = name.as_deref().and_then(|n| p.rule_for(n).cloned());
                if changed.is_err()
                    || !still_allowed(&p, name.as_deref(), upstream)
                    || rule_now != rule_at_start
                {
                    return Err(format!("{id}: cut by a policy change ({name:?} at {upstream})"));
                }
            }
        }
    }
}

/// Tells a plain HTTP client why (a TLS one just sees the connection close).
async fn refuse(down: &mut TcpStream, hello: &Hello, why: &str) {
    if !hello.tls && !hello.bytes.is_empty() {
        let body = format!("SoulBox egress: {why}\n");
        let r = format!(
            "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = down.write_all(r.as_bytes()).await;
    }
}

async fn connect(targets: &[IpAddr], port: u16) -> Result<(TcpStream, IpAddr), String> {
    let mut last = String::new();
    for a in targets.iter().take(4) {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((*a, port))).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, *a));
            }
            Ok(Err(e)) => last = format!("{a}:{port}: {e}"),
            Err(_) => last = format!("{a}:{port}: timed out"),
        }
    }
    Err(format!("connecting: {last}"))
}

/// Relays bytes both ways, the peeked ones first.
async fn splice(hello: Hello, mut down: TcpStream, mut up: TcpStream) -> Result<(), String> {
    up.write_all(&hello.bytes)
        .await
        .map_err(|e| e.to_string())?;
    tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, 256 << 10, 256 << 10)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Serves the sandbox's HTTP requests to `name` (over TLS with the sandbox's CA if it spoke
/// TLS) and sends each on to the real server with the rule's headers set.
async fn intercept(
    egress: &Egress,
    sb: &Sandbox,
    hello: Hello,
    down: TcpStream,
    up: TcpStream,
    name: &str,
    rule: super::policy::HeaderRule,
) -> Result<(), String> {
    let down = Replay::new(hello.bytes, down);
    if hello.tls {
        let ca = sb
            .ca
            .read()
            .ok()
            .and_then(|c| c.clone())
            .ok_or("no CA for this sandbox")?;
        let cfg = ca.server_config(name).ok_or("no certificate")?;
        let down = tokio_rustls::TlsAcceptor::from(cfg)
            .accept(down)
            .await
            .map_err(|e| format!("TLS with the sandbox: {e}"))?;
        let server_name =
            rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
        let up = tokio_rustls::TlsConnector::from(egress.upstream_tls.clone())
            .connect(server_name, up)
            .await
            .map_err(|e| format!("TLS with {name}: {e}"))?;
        http_relay(egress, sb, down, up, rule).await
    } else {
        http_relay(egress, sb, down, up, rule).await
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

async fn http_relay<D, U>(
    egress: &Egress,
    sb: &Sandbox,
    down: D,
    up: U,
    rule: super::policy::HeaderRule,
) -> Result<(), String>
where
    D: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(up))
        .await
        .map_err(|e| e.to_string())?;
    let upstream = tokio::spawn(conn);
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let (store, team) = (egress.store.clone(), sb.team.clone());
    let rule = Arc::new(rule);
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let (sender, store, team, rule) =
            (sender.clone(), store.clone(), team.clone(), rule.clone());
        async move {
            for (header, pieces) in &rule.headers {
                let mut value = String::new();
                for p in pieces {
                    match p {
                        Piece::Text(t) => value.push_str(t),
                        Piece::Secret(s) => {
                            match crate::team_secrets::current_value(&store, &team, s).await {
                                Ok(Some(v)) => value.push_str(&v),
                                _ => {
                                    return Ok::<_, hyper::Error>(plain(
                                        502,
                                        &format!("SoulBox egress: the secret {s} is not set"),
                                    ))
                                }
                            }
                        }
                    }
                }
                let (Ok(n), Ok(v)) = (
                    hyper::header::HeaderName::from_bytes(header.as_bytes()),
                    hyper::header::HeaderValue::from_str(&value),
                ) else {
                    return Ok(plain(502, "SoulBox egress: a rule's header is not valid"));
                };
                req.headers_mut().insert(n, v);
            }
            let mut s = sender.lock().await;
            match s.send_request(req).await {
                Ok(r) => Ok(r.map(|b| b.boxed())),
                Err(e) => Ok(plain(502, &format!("SoulBox egress: upstream: {e}"))),
            }
        }
    });
    let r = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(down), svc)
        .await
        .map_err(|e| e.to_string());
    upstream.abort();
    r
}

fn plain(status: u16, msg: &str) -> hyper::Response<BoxBody> {
    let mut r = hyper::Response::new(
        Full::new(Bytes::from(format!("{msg}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> Policy {
        serde_json::from_value::<super::super::policy::NetworkConfig>(json)
            .unwrap()
            .policy(true, &[])
            .unwrap()
    }

    #[test]
    fn a_named_host_is_reached_at_its_own_address_only() {
        let p = policy(serde_json::json!({
            "allowOut": ["allowed.test", "198.51.100.99"],
            "denyOut": ["0.0.0.0/0"],
            "rules": {"api.test": [{"transform": {"headers": {"X-Key": "${e2b.secrets.K}"}}}]}
        }));
        let denied: IpAddr = "198.51.100.13".parse().unwrap();
        // Allowed name: resolved, whatever was dialled.
        assert_eq!(
            route(&p, Some("allowed.test"), denied),
            Some(Route::Name("allowed.test".into()))
        );
        // Not allowed name at a denied address: refused; at an allowed address: that address.
        assert_eq!(route(&p, Some("other.test"), denied), None);
        assert_eq!(
            route(&p, Some("other.test"), "198.51.100.99".parse().unwrap()),
            Some(Route::Dialled)
        );
        assert_eq!(route(&p, None, denied), None);
        // A rule's host goes by name (so its secret reaches that host only) …
        assert_eq!(
            route(&p, Some("api.test"), denied),
            Some(Route::Name("api.test".into()))
        );
        // … but reaching it still needs its address allowed (checked after resolving).
        assert!(!still_allowed(&p, Some("api.test"), denied));
        assert!(still_allowed(&p, Some("allowed.test"), denied));
        let narrower =
            policy(serde_json::json!({"denyOut": ["0.0.0.0/0"], "allowOut": ["other.test"]}));
        assert!(!still_allowed(
            &narrower,
            Some("allowed.test"),
            "198.51.100.10".parse().unwrap()
        ));
    }
}
