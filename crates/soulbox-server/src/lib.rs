//! `soulbox serve`: the E2B-compatible control plane and the data-plane proxy on one listener.
//!
//! Each request is dispatched by the rules of the protocol spec (§1.6): `X-API-KEY` ⇒ control
//! plane; `E2b-Sandbox-Id`/`-Port` headers or a `{port}-{id}.{domain}` Host ⇒ data plane; a
//! signed `/files` URL ⇒ data plane by signature; anything else ⇒ control plane (which answers
//! 401 without a key). One URL thus serves as both `E2B_API_URL` and `E2B_SANDBOX_URL`.

pub mod access;
pub mod api;
pub mod connect_stream;
pub mod conns;
pub mod dashboard;
pub mod egress;
pub mod error;
pub mod https;
pub mod inside;
mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod network_api;
pub mod pausing;
pub mod pool;
pub mod proxy;
pub mod secrets;
pub mod snapshots;
pub mod store;
pub mod team_secrets;
pub mod templates;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::{IntoResponse, Response};
use soulbox_runtime::ns::NsBackend;
use std::net::SocketAddr;
use std::sync::Arc;
use tower_service::Service;

/// The runtime label of a sandbox made through the API (it has a store record).
pub const LABEL_API: &str = "api";

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Domain returned to SDKs for `get_host()` (`{port}-{id}.{domain}`); `None` = the
    /// client's own `E2B_DOMAIN`.
    pub domain: Option<String>,
    /// Largest control-plane request body, in bytes.
    pub max_body: usize,
    /// How long a client may take to send a request's head (and how long a kept-alive
    /// connection may sit idle between requests).
    pub header_read_timeout: std::time::Duration,
    /// How long a new connection may take to send its first request head: idle connections
    /// that never authenticate are closed this fast.
    pub first_request_timeout: std::time::Duration,
    /// Connections open at once, in total; lowered at start to what the descriptor limit
    /// allows after `reserved_fds` (see [`conns`]).
    pub max_connections: usize,
    /// Connections open at once from one client address (an IPv6 /64 counts as one).
    pub max_connections_per_ip: usize,
    /// Descriptors kept free of client connections: sandboxes' streams to their agents, the
    /// store, the runtime.
    pub reserved_fds: u64,
    /// Sandboxes kept started ahead of demand, per template (see [`pool`]).
    pub warm_pool: std::collections::BTreeMap<String, usize>,
    /// Template builds run at once (more wait, `waiting`).
    pub build_concurrency: usize,
    /// Longest a template build may take.
    pub build_timeout: std::time::Duration,
    /// Disk of a build step's sandbox, in MiB; also the most a COPY's files may unpack to.
    pub build_disk_mb: u64,
    /// Registry host → mirror host that image pulls use instead.
    pub registry_mirrors: std::collections::HashMap<String, String>,
    /// Registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Longest timeout a sandbox may be given (create, connect, set_timeout); `None`: no cap.
    pub max_timeout: Option<std::time::Duration>,
    /// CA certificates (PEM files) the egress proxy trusts beside the host's trust store,
    /// when it verifies the servers of hosts with header rules.
    pub egress_trust: Vec<std::path::PathBuf>,
    /// Requests per second each API key may make, with bursts (`None`: no limit).
    pub rate_limit: Option<RateLimit>,
    /// `GET /metrics` and the per-sandbox samples behind `get_metrics()`.
    pub monitoring: Monitoring,
    /// Serve HTTPS with this certificate and key (PEM files) instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Limits a sandbox gets when its template sets none.
    pub default_limits: soulbox_runtime::Limits,
    /// The most any sandbox may have, whatever its template asks for.
    pub max_limits: soulbox_runtime::Limits,
    /// On a stop, how long requests under way may take to finish once no new connection is
    /// taken (see [`serve_until`]).
    pub shutdown_grace: std::time::Duration,
}

/// A token bucket per API key: `per_second` refill, `burst` deep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Monitoring {
    /// Serve `GET /metrics` (Prometheus text format).
    pub metrics: bool,
    /// A bearer token `GET /metrics` requires (`None`: open to whoever reaches the listener).
    pub metrics_token: Option<String>,
    /// How often each sandbox's CPU, memory, disk and network are sampled.
    pub sample_interval: std::time::Duration,
    /// How long samples are kept (the range `get_metrics(start, end)` can answer).
    pub sample_retention: std::time::Duration,
}

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            metrics: true,
            metrics_token: None,
            sample_interval: std::time::Duration::from_secs(5),
            sample_retention: std::time::Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr) -> Self {
        ServerConfig {
            listen,
            domain: None,
            max_body: 1 << 20,
            header_read_timeout: std::time::Duration::from_secs(30),
            first_request_timeout: std::time::Duration::from_secs(10),
            max_connections: 16384,
            max_connections_per_ip: 2048,
            reserved_fds: 1024,
            warm_pool: Default::default(),
            build_concurrency: 2,
            build_timeout: std::time::Duration::from_secs(3600),
            build_disk_mb: 10 << 10,
            registry_mirrors: Default::default(),
            insecure_registries: vec![],
            max_timeout: None,
            egress_trust: vec![],
            rate_limit: None,
            monitoring: Monitoring::default(),
            tls: None,
            default_limits: soulbox_runtime::Limits::default(),
            max_limits: soulbox_runtime::Limits {
                memory_bytes: 256 << 30,
                cpu_millis: 64_000,
                pids: 32768,
                disk_bytes: 1 << 40,
                nofile: 1 << 20,
            },
            shutdown_grace: std::time::Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: store::Store,
    pub backend: Arc<NsBackend>,
    pub cfg: Arc<ServerConfig>,
    pub pool: Arc<pool::WarmPool>,
    /// The template build queue.
    pub builds: Arc<templates::build::Builds>,
    pub upload_tokens: Arc<templates::api::UploadTokens>,
    /// Builds hold it shared; collecting unused layers takes it alone.
    pub layer_gc: Arc<tokio::sync::RwLock<()>>,
    /// Pause and resume transitions, and the uploads a pause waits for.
    pub pausing: Arc<pausing::Pausing>,
    /// The egress proxy and the policies it enforces.
    pub egress: Arc<egress::Egress>,
    /// Each API key's request budget.
    pub rate: Arc<access::rate::Buckets>,
    /// Starts holding their share of their team's quota.
    pub admissions: Arc<access::quota::Admissions>,
    /// Prometheus families and per-sandbox samples.
    pub metrics: Arc<metrics::Metrics>,
    /// Signed-in dashboard sessions.
    pub sessions: Arc<dashboard::session::Sessions>,
}

impl AppState {
    /// Kills a sandbox and records it as gone (the record is written first).
    pub async fn kill(&self, id: &str) -> error::ApiResult<()> {
        let r = self.kill_sandbox(id).await;
        self.metrics.killed(id, &r);
        r
    }

    async fn kill_sandbox(&self, id: &str) -> error::ApiResult<()> {
        // Not in the middle of a pause, resume, snapshot or fork of it.
        let _one = self.pausing.lock(id).await;
        self.store.set_state(id, "killed").await?;
        self.egress.forget(id);
        match soulbox_runtime::Backend::kill(&self.backend, id).await {
            Ok(()) | Err(soulbox_runtime::RuntimeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Binds `cfg.listen` and serves until the process is stopped.
pub async fn serve(
    cfg: ServerConfig,
    store: store::Store,
    backend: Arc<NsBackend>,
) -> std::io::Result<()> {
    serve_on(listen(cfg.listen)?, cfg, store, backend).await
}

/// Binds with a deep accept queue: a burst of connections (many SDK streams opened at once)
/// must not overflow it, or clients wait out SYN retransmits.
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Serves on an already bound listener (tests bind port 0).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    cfg: ServerConfig,
    store: store::Store,
    backend: Arc<NsBackend>,
) -> std::io::Result<()> {
    serve_until(listener, cfg, store, backend, std::future::pending()).await
}

/// Serves until `stop` completes, then stops gracefully: no new connection is taken, idle
/// ones are closed, and requests under way get `cfg.shutdown_grace` to finish; returns then.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    cfg: ServerConfig,
    store: store::Store,
    backend: Arc<NsBackend>,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    // Read before anything starts: a bad certificate stops the start, not the first client.
    let tls = match &cfg.tls {
        Some(f) => Some(https::acceptor(&f.cert, &f.key)?),
        None => None,
    };
    let egress = egress::Egress::new(backend.clone(), store.clone(), &cfg.egress_trust)?;
    egress.start().await?;
    let state = AppState {
        egress,
        store,
        pool: pool::WarmPool::new(cfg.warm_pool.clone(), limits::builtin(&cfg)),
        backend,
        builds: templates::build::Builds::new(cfg.build_concurrency, cfg.build_timeout),
        upload_tokens: Default::default(),
        layer_gc: Default::default(),
        pausing: Default::default(),
        rate: Default::default(),
        admissions: Default::default(),
        metrics: metrics::Metrics::new(&cfg.monitoring),
        sessions: Default::default(),
        cfg: Arc::new(cfg),
    };
    // A build the last run left unfinished cannot be picked up half-made: it is reported
    // failed (what it made so far stays cached for the next build).
    if let Ok(ids) = state.store.unfinished_builds().await {
        for id in ids {
            let reason = serde_json::json!({"message": "the server stopped during the build; start it again"});
            let _ = state.store.fail_build(&id, &reason).await;
        }
    }
    reconcile(&state).await;
    lifecycle::spawn(state.clone());
    metrics::sampler::spawn(state.clone());
    state.pool.spawn_filler(Arc::clone(&state.backend));
    let control = api::router()
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::gate,
        ))
        .layer(DefaultBodyLimit::max(state.cfg.max_body))
        .fallback(|| async {
            error::json_error(axum::http::StatusCode::NOT_FOUND, "no such route")
        })
        .with_state(state.clone());
    let app = axum::Router::new()
        .fallback(dispatch)
        .with_state((state.clone(), control));
    tracing::info!(addr = ?listener.local_addr(), https = tls.is_some(), "listening");
    accept_loop(listener, app, &state.cfg, tls, stop).await
}

/// Matches the store's sandboxes with those the runtime took over from the earlier run: a
/// recorded sandbox that is gone is reported gone; a taken-over one of the server's goes back
/// to the warm pool (if it has room) or, with no record to own it (a build step's, or a
/// create that never answered), is removed.
async fn reconcile(state: &AppState) {
    use soulbox_runtime::Backend;
    let live = match state.store.live_sandboxes(None).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("reading the sandboxes of the earlier run: {e}");
            return;
        }
    };
    for s in &live {
        network_api::readopt(state, s);
        let paused_on_disk = state.backend.is_paused_on_disk(&s.id);
        if state.backend.get(&s.id).is_none() && !paused_on_disk {
            tracing::info!(sandbox_id = %s.id, "sandbox of the earlier run is gone");
            let _ = state.store.set_state(&s.id, "killed").await;
        } else if paused_on_disk && s.state != "paused" {
            // The server stopped between pausing it and recording that.
            let _ = state
                .store
                .set_paused(&s.id, Some("filesystem"), None)
                .await;
        }
    }
    let recorded: std::collections::HashSet<&str> = live.iter().map(|s| s.id.as_str()).collect();
    for id in state.backend.paused_on_disk() {
        let ours = state
            .backend
            .state_of(&id)
            .is_some_and(|s| !s.label.is_empty());
        if ours && !recorded.contains(id.as_str()) {
            tracing::info!(sandbox_id = %id, "removing a paused sandbox that nothing owns");
            let _ = state.backend.kill(&id).await;
        }
    }
    // Only what the runtime took over from the earlier run, and only what the server makes
    // (a sandbox of the runtime's other users, unlabelled, is theirs).
    for info in state.backend.list() {
        if recorded.contains(info.id.as_str())
            || !state.backend.is_adopted(&info.id)
            || info.label.is_empty()
        {
            continue;
        }
        let id = info.id.clone();
        if info.label == pool::LABEL_POOL && state.pool.adopt(info) {
            continue;
        }
        tracing::info!(sandbox_id = %id, "removing a sandbox of the earlier run that nothing owns");
        let _ = state.backend.kill(&id).await;
    }
}

/// Serves HTTP/1.1 connections (with upgrades, for tunnelled WebSockets), over TLS when
/// `tls` is set, with a header-read timeout, which `axum::serve` does not offer, within the
/// connection limits of [`conns`]; until `stop`, then gracefully (see [`serve_until`]).
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    cfg: &ServerConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = conns::Limits::from_config(cfg);
    tracing::info!(
        total = limits.total,
        per_ip = limits.per_ip,
        "connection limits"
    );
    let slots = conns::Slots::new(limits);
    let timeouts = (cfg.header_read_timeout, cfg.first_request_timeout);
    // Each connection holds a receiver: it learns of the stop, and the last one to end
    // closes the channel the stop waits on.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let (open_tx, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            c = listener.accept() => match c {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                conns::refuse(&stream, full);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (app, tls, stopping, open) =
            (app.clone(), tls.clone(), stopping.clone(), open_tx.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _open = open;
            let deadline = tokio::time::Instant::now() + timeouts.1;
            match tls {
                None => serve_connection(stream, peer, app, timeouts.0, deadline, stopping).await,
                Some(acceptor) => {
                    let mut stream = stream;
                    // The handshake counts against the first request's time: a client that
                    // opens a connection and never finishes it holds no slot for long.
                    match tokio::time::timeout_at(deadline, https::opens_with_tls(&mut stream))
                        .await
                    {
                        Ok(true) => {}
                        _ => return,
                    }
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            serve_connection(s, peer, app, timeouts.0, deadline, stopping).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake: {e}"),
                        Err(_) => tracing::debug!(%peer, "no TLS handshake in time: closing"),
                    }
                }
            }
        });
    }
    // Stopping: no new connections; those open finish what they are doing.
    drop(listener);
    let _ = stopping_tx.send(true);
    drop(open_tx);
    let grace = cfg.shutdown_grace;
    let open = slots.open(std::net::Ipv4Addr::UNSPECIFIED.into()).0;
    if open > 0 {
        tracing::info!(open, ?grace, "stopping: waiting for requests under way");
    }
    if tokio::time::timeout(grace, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            open = slots.open(std::net::Ipv4Addr::UNSPECIFIED.into()).0,
            "stopping: requests still under way after the grace time are cut off"
        );
    }
    Ok(())
}

/// One client connection: a first request by `deadline`, then requests until it closes or
/// the server stops (an idle connection is closed then, a request under way finishes).
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: axum::Router,
    header_timeout: std::time::Duration,
    deadline: tokio::time::Instant,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    let first = std::sync::Arc::new(tokio::sync::Notify::new());
    let svc = {
        let first = first.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            first.notify_one();
            req.extensions_mut().insert(access::Peer(peer));
            let mut app = app.clone();
            async move { app.call(req).await }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    // A connection that sends no request in time is dropped (closed) here.
    let mut ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        t = tokio::time::timeout_at(deadline, first.notified()) => match t {
            Ok(()) => None,
            Err(_) => {
                tracing::debug!(%peer, "no request in time: closing");
                return;
            }
        },
        // Stopping before this connection's first request: nothing to finish.
        _ = stopping.wait_for(|s| *s) => return,
    };
    if ended.is_none() {
        ended = tokio::select! {
            r = conn.as_mut() => Some(r),
            _ = stopping.wait_for(|s| *s) => None,
        };
    }
    let r = match ended {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = r {
        tracing::debug!("connection: {e}");
    }
}

async fn dispatch(
    State((st, mut control)): State<(AppState, axum::Router)>,
    req: Request,
) -> Response {
    if req.headers().contains_key("x-api-key") {
        return control.call(req).await.into_response();
    }
    match proxy::route(req.headers()) {
        Some(Ok(target)) => return metrics::proxy::forward(&st, target, req).await,
        Some(Err(msg)) => return error::json_error(axum::http::StatusCode::BAD_REQUEST, &msg),
        None => {}
    }
    if proxy::is_signed_files(&req) {
        let (method, uri) = (req.method().clone(), req.uri().clone());
        return match proxy::by_signature(&st, &method, &uri).await {
            Some(id) => {
                metrics::proxy::forward(
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
    if dashboard::is_dashboard(req.uri().path()) {
        return dashboard::handle(&st, &mut control, req).await;
    }
    let req: Request<Body> = req;
    control.call(req).await.into_response()
}
