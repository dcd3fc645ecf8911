//! The servers: HTTP on 80/8080, HTTPS on 443/8443, a server-first banner on
//! 2222 and UDP echo on 5353. Sockets are bound inside `sbxinet` (see
//! [`bind`]) and served from the ordinary tokio runtime.
//!
//! Responses never echo request headers (except Host in `GET /`): a test puts
//! a secret in a header and checks the sandbox never sees it. Headers go to
//! `requests.jsonl` instead, which only the test reads.

use std::convert::Infallible;
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context as TaskCx, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nix::sys::socket::{self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn6};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_rustls::TlsAcceptor;

use crate::netns;

const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];
const MAX_BYTES: u64 = 10 << 30;
const SLOW_EVERY: Duration = Duration::from_millis(200);
const SLOW_LINES: u32 = 300; // 60 s
const BANNER: &[u8] = b"SSH-2.0-testnet\r\n";
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum Kind {
    Http,
    Https,
    Banner,
}

const TCP_PORTS: [(u16, Kind); 5] = [
    (80, Kind::Http),
    (8080, Kind::Http),
    (443, Kind::Https),
    (8443, Kind::Https),
    (2222, Kind::Banner),
];
const UDP_ECHO_PORT: u16 = 5353;

/// Sockets bound in the namespace, not yet attached to a runtime.
pub struct Listeners {
    tcp: Vec<(std::net::TcpListener, Kind)>,
    udp: Vec<std::net::UdpSocket>,
}

/// Binds every server socket. Must run on a thread inside `sbxinet`.
pub fn bind(v6: bool) -> Result<Listeners> {
    let mut tcp = Vec::new();
    for (port, kind) in TCP_PORTS {
        let l = tcp_listener(port, v6).with_context(|| format!("binding TCP {port}"))?;
        l.set_nonblocking(true)?;
        tcp.push((l, kind));
    }
    let mut udp_addrs: Vec<SocketAddr> = [
        Ipv4Addr::new(198, 51, 100, 10),
        Ipv4Addr::new(198, 51, 100, 13),
    ]
    .into_iter()
    .map(|a| SocketAddr::from((a, UDP_ECHO_PORT)))
    .collect();
    if v6 {
        udp_addrs.push(SocketAddr::from((netns::SERVER_V6, UDP_ECHO_PORT)));
    }
    let mut udp = Vec::new();
    for a in udp_addrs {
        let s = std::net::UdpSocket::bind(a).with_context(|| format!("binding UDP {a}"))?;
        s.set_nonblocking(true)?;
        udp.push(s);
    }
    Ok(Listeners { tcp, udp })
}

/// With IPv6, one dual-stack `[::]` socket per port serves both families
/// (set explicitly rather than trusting the namespace's bindv6only).
fn tcp_listener(port: u16, v6: bool) -> Result<std::net::TcpListener> {
    if !v6 {
        return Ok(std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?);
    }
    let fd = socket::socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    let addr = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
    socket::bind(fd.as_raw_fd(), &addr)?;
    socket::listen(&fd, Backlog::new(1024)?)?;
    Ok(std::net::TcpListener::from(fd))
}

/// What every connection task shares.
struct Shared {
    tls: TlsAcceptor,
    /// `requests.jsonl`, opened for append; one `write` per line.
    log: Mutex<File>,
}

/// Starts serving every listener on the current runtime. Tasks run until
/// the runtime is shut down.
pub fn spawn_all(l: Listeners, tls: Arc<rustls::ServerConfig>, log: File) -> Result<()> {
    let shared = Arc::new(Shared {
        tls: TlsAcceptor::from(tls),
        log: Mutex::new(log),
    });
    for (std_l, kind) in l.tcp {
        let listener = TcpListener::from_std(std_l)?;
        tokio::spawn(accept_loop(listener, kind, shared.clone()));
    }
    for s in l.udp {
        tokio::spawn(udp_echo(UdpSocket::from_std(s)?));
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, kind: Kind, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, kind, shared.clone()));
            }
            Err(e) => {
                // e.g. EMFILE: back off rather than spin.
                eprintln!("soulbox-testnet: accept ({kind:?}): {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// v4 clients of a dual-stack socket show up as `::ffff:a.b.c.d`.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

struct ConnInfo {
    local: SocketAddr,
    peer: SocketAddr,
    tls: bool,
    sni: Option<String>,
}

async fn handle(stream: TcpStream, kind: Kind, shared: Arc<Shared>) {
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let mut info = ConnInfo {
        local: canonical(local),
        peer: canonical(peer),
        tls: false,
        sni: None,
    };
    match kind {
        Kind::Http => serve_http(stream, info, shared).await,
        Kind::Https => {
            let accept = shared.tls.accept(stream);
            let Ok(Ok(tls)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept).await else {
                return;
            };
            info.tls = true;
            info.sni = tls.get_ref().1.server_name().map(str::to_owned);
            serve_http(tls, info, shared).await
        }
        Kind::Banner => {
            let mut stream = stream;
            let _ = stream.write_all(BANNER).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = stream.shutdown().await;
        }
    }
}

async fn serve_http<IO>(io: IO, info: ConnInfo, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let svc = hyper::service::service_fn(move |req| {
        let resp = respond(&req, &info, &shared);
        async move { Ok::<_, Infallible>(resp) }
    });
    // Errors here are clients going away (or being cut off by a policy
    // change, which is the point of /slow): nothing to report.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

type RespBody = BoxBody<Bytes, Infallible>;

fn respond(req: &Request<Incoming>, info: &ConnInfo, shared: &Shared) -> Response<RespBody> {
    let host = req
        .headers()
        .get(HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    log_request(req, info, &host, shared);

    match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => text(
            StatusCode::OK,
            format!("hello {} host={host}\n", info.local.ip()),
        ),
        (&Method::GET, "/bytes") => match query_n(req.uri().query()) {
            Some(n) if n <= MAX_BYTES => Response::builder()
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, n)
                .body(Zeros { left: n }.boxed())
                .expect("static response"),
            _ => text(
                StatusCode::BAD_REQUEST,
                format!("need /bytes?n=N with N <= {MAX_BYTES}\n"),
            ),
        },
        (&Method::GET, "/slow") => {
            let mut every = tokio::time::interval(SLOW_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Response::builder()
                .header(CONTENT_TYPE, "text/plain")
                .body(Slow { every, sent: 0 }.boxed())
                .expect("static response")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<RespBody> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("static response")
}

fn query_n(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("n="))
        .and_then(|v| v.parse().ok())
}

fn log_request(req: &Request<Incoming>, info: &ConnInfo, host: &str, shared: &Shared) {
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        // Repeated headers are joined as HTTP allows.
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(v));
            }
        }
    }
    let entry = json!({
        "time": rfc3339_now(),
        "local": info.local.to_string(),
        "peer": info.peer.to_string(),
        "tls": info.tls,
        "sni": info.sni,
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "host": host,
        "headers": headers,
    });
    let mut line = entry.to_string();
    line.push('\n');
    // A poisoned lock only means another connection panicked mid-write.
    let mut f = shared.log.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = f.write_all(line.as_bytes()) {
        eprintln!("soulbox-testnet: writing requests.jsonl: {e}");
    }
}

/// UTC, millisecond precision, e.g. `2025-01-31T12:00:00.123Z`.
fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// `n` zero bytes in 64 KiB frames that all share one static buffer, so the
/// server costs next to nothing per byte in the throughput benchmark.
struct Zeros {
    left: u64,
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut TaskCx<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// One line every 200 ms for 60 s: a long-lived response that a policy
/// change is expected to cut.
struct Slow {
    every: tokio::time::Interval,
    sent: u32,
}

impl Body for Slow {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent == SLOW_LINES {
            return Poll::Ready(None);
        }
        ready!(self.every.poll_tick(cx));
        self.sent += 1;
        let line = format!("slow {}/{SLOW_LINES}\n", self.sent);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(line)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == SLOW_LINES
    }
}

async fn udp_echo(sock: UdpSocket) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                let _ = sock.send_to(&buf[..n], peer).await;
            }
            Err(e) => {
                eprintln!("soulbox-testnet: udp echo: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
