//! `soulbox serve`.

use super::Context;
use crate::config::file::{File, OnStop};
use crate::config::units::{Dur, Size};
use crate::config::Config;
use anyhow::Context as _;
use clap::Args;
use soulbox_runtime::ns::NsBackend;
use soulbox_server::secrets::Sealer;
use soulbox_server::store::{new_key, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The flags of `serve` (and of `config check|show`, which show what `serve` would run with).
/// Each is optional: unset, the environment variable, then `soulbox.toml`, then the default
/// decides (see docs/configuration.md).
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Address to listen on (control plane and data plane share it) [default: 127.0.0.1:3000].
    #[arg(long, env = "SOULBOX_LISTEN")]
    listen: Option<SocketAddr>,
    /// Domain for `{port}-{id}.{domain}` sandbox hosts returned to SDKs (get_host).
    #[arg(long, env = "SOULBOX_DOMAIN")]
    domain: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "SOULBOX_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "SOULBOX_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Largest control-plane request body: bytes, or e.g. 1MiB [default: 1MiB].
    #[arg(long, env = "SOULBOX_MAX_BODY")]
    max_body: Option<Size>,
    /// Templates built before serving if missing (comma-separated; empty for none)
    /// [default: base,code-interpreter].
    #[arg(long, env = "SOULBOX_TEMPLATES", value_delimiter = ',')]
    templates: Option<Vec<String>>,
    /// Sandboxes kept started ahead of demand, as TEMPLATE=COUNT (comma-separated; empty for
    /// none). A create that matches gets one at once, its Jupyter kernel already running
    /// [default: code-interpreter=1].
    #[arg(
        long,
        env = "SOULBOX_WARM_POOL",
        value_delimiter = ',',
        value_parser = parse_pool_entry
    )]
    warm_pool: Option<Vec<(String, usize)>>,
    /// Client connections open at once, in total (lowered to fit the descriptor limit)
    /// [default: 16384].
    #[arg(long, env = "SOULBOX_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Client connections open at once from one address (an IPv6 /64 counts as one)
    /// [default: 2048].
    #[arg(long, env = "SOULBOX_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Milliseconds a new connection may take to send its first request (TLS handshake
    /// included) before it is closed [default: 10000].
    #[arg(long, env = "SOULBOX_FIRST_REQUEST_TIMEOUT_MS")]
    first_request_timeout_ms: Option<u64>,
    /// On a stop, how long requests under way may take to finish, e.g. 30s [default: 30s].
    #[arg(long, env = "SOULBOX_SHUTDOWN_GRACE")]
    shutdown_grace: Option<Dur>,
    /// Fetch a registry's images from a mirror instead: `REGISTRY=MIRROR`, e.g.
    /// `docker.io=registry.internal:5000` (repeatable, or comma-separated).
    #[arg(long, env = "SOULBOX_REGISTRY_MIRRORS", value_delimiter = ',', value_parser = parse_mirror)]
    registry_mirror: Option<Vec<(String, String)>>,
    /// A registry (`host[:port]`) spoken to over plain HTTP (repeatable, or comma-separated).
    #[arg(long, env = "SOULBOX_INSECURE_REGISTRIES", value_delimiter = ',')]
    insecure_registry: Option<Vec<String>>,
    /// Template builds run at once; more wait their turn [default: 2].
    #[arg(long, env = "SOULBOX_BUILD_CONCURRENCY")]
    build_concurrency: Option<usize>,
    /// Disk of a build step's sandbox, in MiB (also the most one COPY may unpack to)
    /// [default: 10240].
    #[arg(long, env = "SOULBOX_BUILD_DISK_MB")]
    build_disk_mb: Option<u64>,
    /// Longest a template build may take, in seconds [default: 3600].
    #[arg(long, env = "SOULBOX_BUILD_TIMEOUT")]
    build_timeout: Option<u64>,
    /// What a stop (SIGTERM, ^C) does to the sandboxes: `keep` them running for the next
    /// start to take over (an upgrade or a restart loses nothing), or `kill` them all
    /// [default: keep].
    #[arg(long, env = "SOULBOX_ON_STOP", value_enum)]
    on_stop: Option<OnStop>,
    /// Longest timeout a sandbox may have, in seconds (E2B caps it at 24 h); none by default.
    #[arg(long, env = "SOULBOX_MAX_TIMEOUT")]
    max_timeout: Option<u64>,
    /// Bandwidth of each sandbox, each way, in Mbit/s (0: unlimited) [default: 1000].
    #[arg(long, env = "SOULBOX_EGRESS_RATE_MBIT")]
    egress_rate_mbit: Option<u32>,
    /// Outbound connections one sandbox may hold open at once [default: 4096].
    #[arg(long, env = "SOULBOX_EGRESS_MAX_CONNECTIONS")]
    egress_max_connections: Option<u32>,
    /// A PEM file of CA certificates the egress proxy trusts beside the host's trust store,
    /// when it checks the servers of hosts with header rules (repeatable, or comma-separated).
    #[arg(long, env = "SOULBOX_EGRESS_TRUST", value_delimiter = ',')]
    egress_trust: Option<Vec<PathBuf>>,
    /// Serve `GET /metrics` (true or false) [default: true].
    #[arg(long, env = "SOULBOX_METRICS")]
    metrics: Option<bool>,
}

impl ServeArgs {
    /// The layer these flags (and their environment variables) set, over `soulbox.toml`.
    pub fn layer(&self, file: &mut File) {
        let a = self.clone();
        let (srv, rt, net) = (&mut file.server, &mut file.runtime, &mut file.networking);
        srv.listen = a.listen;
        srv.domain = a.domain;
        srv.tls_cert = a.tls_cert;
        srv.tls_key = a.tls_key;
        srv.max_body = a.max_body;
        srv.templates = a
            .templates
            .map(|t| t.into_iter().filter(|t| !t.is_empty()).collect());
        srv.max_connections = a.max_connections;
        srv.max_connections_per_ip = a.max_connections_per_ip;
        srv.first_request_timeout = a
            .first_request_timeout_ms
            .map(|ms| Dur(Duration::from_millis(ms)));
        srv.shutdown_grace = a.shutdown_grace;
        srv.on_stop = a.on_stop;
        srv.max_timeout = a.max_timeout.map(|s| Dur(Duration::from_secs(s)));
        rt.warm_pool = a
            .warm_pool
            .map(|p| p.into_iter().filter(|(t, _)| !t.is_empty()).collect());
        rt.build.concurrency = a.build_concurrency;
        rt.build.disk_mb = a.build_disk_mb;
        rt.build.timeout = a.build_timeout.map(|s| Dur(Duration::from_secs(s)));
        rt.build.registry_mirrors = a.registry_mirror.map(|m| m.into_iter().collect());
        rt.build.insecure_registries = a.insecure_registry;
        net.egress_rate_mbit = a.egress_rate_mbit;
        net.egress_max_connections = a.egress_max_connections;
        net.egress_trust = a.egress_trust;
        file.monitoring.metrics = a.metrics;
    }
}

fn parse_mirror(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(r, m)| !r.is_empty() && !m.is_empty())
        .map(|(r, m)| (r.to_string(), m.to_string()))
        .ok_or_else(|| format!("'{s}': expected REGISTRY=MIRROR, e.g. docker.io=127.0.0.1:5000"))
}

fn parse_pool_entry(s: &str) -> Result<(String, usize), String> {
    if s.trim().is_empty() {
        return Ok((String::new(), 0)); // `--warm-pool ""`: no pool
    }
    let (t, n) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}': expected TEMPLATE=COUNT, e.g. code-interpreter=2"))?;
    let n = n
        .trim()
        .parse()
        .map_err(|_| format!("'{n}': the count must be a whole number"))?;
    if soulbox_runtime::template::recipe::find(t.trim()).is_none() {
        return Err(format!(
            "'{t}': no such template (see `soulbox template list`)"
        ));
    }
    Ok((t.trim().to_string(), n))
}

/// The store (`storage.database_url`), its secrets sealed with `SOULBOX_SECRET_KEY` or else
/// the key in `security.secret_key_file` (made on first start).
pub(super) async fn open_store(ctx: &Context) -> anyhow::Result<Store> {
    ctx.private_data_dir()?;
    let cfg = &ctx.config;
    let sealer = match &cfg.eff.security.secret_key {
        Some(k) => Sealer::from_hex(k).context("SOULBOX_SECRET_KEY")?,
        None => {
            let path = cfg.secret_key_file();
            Sealer::load_or_create(&path).map_err(|e| {
                cfg.error(
                    "security.secret_key_file",
                    format!("{}: {e}", path.display()),
                )
            })?
        }
    };
    let db = cfg.database_path()?;
    Store::open_at(&db, sealer)
        .await
        .with_context(|| format!("opening the database {}", db.display()))
}

pub async fn serve(ctx: &Context) -> anyhow::Result<()> {
    let c = &ctx.config;
    let e = &c.eff;
    let backend = ctx.backend()?;
    for t in e
        .server
        .templates
        .iter()
        .flatten()
        .filter(|t| !t.is_empty())
    {
        super::template::build_one(backend.templates(), t, false)?;
    }
    let store = open_store(ctx).await?;
    let team = store.default_team().await?;
    match c.admin_api_key()? {
        Some(k) => {
            store.add_key(&team, &k, "admin (configured)").await?;
        }
        None if store.key_count().await? == 0 => {
            let k = new_key();
            store.add_key(&team, &k, "first key").await?;
            println!("Created the first API key (shown once, keep it):\n\n    {k}\n");
        }
        None => {}
    }
    let cfg = server_config(c);
    let listen = cfg.listen;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    // Bound before the banner: the address printed is one that answers.
    let listener =
        soulbox_server::listen(listen).with_context(|| format!("listening on {listen}"))?;
    let url = format!("{scheme}://{listen}");
    println!("SoulBox is serving on {url}\n  export E2B_API_URL={url} E2B_SANDBOX_URL={url} E2B_API_KEY=<your key>");
    if cfg.monitoring.metrics
        && cfg.monitoring.metrics_token.is_none()
        && !listen.ip().is_loopback()
    {
        // The metrics name every running sandbox (and its team): not for the whole network.
        eprintln!(
            "warning: {url}/metrics is open to anyone who reaches {listen}; set [monitoring] metrics_token (or SOULBOX_METRICS_TOKEN), or metrics = false"
        );
    }
    let on_stop = e.server.on_stop.unwrap_or(OnStop::Keep);
    let stop = async {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut t), Ok(mut i)) => tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} },
            _ => std::future::pending().await,
        }
        eprintln!("stopping: no new connections; requests under way may finish");
    };
    soulbox_server::serve_until(listener, cfg, store.clone(), backend.clone(), stop)
        .await
        .with_context(|| format!("serving on {listen}"))?;
    stop_sandboxes(&store, &backend, on_stop).await;
    Ok(())
}

/// The server's settings from the effective configuration.
pub fn server_config(c: &Config) -> soulbox_server::ServerConfig {
    let e = c.eff.clone();
    let (srv, rt, mon, sec) = (e.server, e.runtime, e.monitoring, e.security);
    let d = soulbox_server::ServerConfig::new(srv.listen.expect("defaulted"));
    soulbox_server::ServerConfig {
        domain: srv.domain,
        max_body: srv
            .max_body
            .map_or(d.max_body, |s| usize::try_from(s.0).unwrap_or(usize::MAX)),
        header_read_timeout: srv
            .header_read_timeout
            .map_or(d.header_read_timeout, |t| t.0),
        first_request_timeout: srv
            .first_request_timeout
            .map_or(d.first_request_timeout, |t| t.0),
        max_connections: srv.max_connections.unwrap_or(d.max_connections),
        max_connections_per_ip: srv
            .max_connections_per_ip
            .unwrap_or(d.max_connections_per_ip),
        warm_pool: rt.warm_pool.unwrap_or_default(),
        build_concurrency: rt.build.concurrency.unwrap_or(d.build_concurrency),
        build_timeout: rt.build.timeout.map_or(d.build_timeout, |t| t.0),
        build_disk_mb: rt.build.disk_mb.unwrap_or(d.build_disk_mb),
        registry_mirrors: rt
            .build
            .registry_mirrors
            .unwrap_or_default()
            .into_iter()
            .collect(),
        insecure_registries: rt.build.insecure_registries.unwrap_or_default(),
        max_timeout: srv.max_timeout.map(|t| t.0),
        egress_trust: e.networking.egress_trust.unwrap_or_default(),
        rate_limit: sec
            .rate_limit_per_second
            .map(|per_second| soulbox_server::RateLimit {
                per_second,
                // A burst of one second's worth, unless set.
                burst: sec
                    .rate_limit_burst
                    .unwrap_or(per_second.ceil().max(1.0) as u32),
            }),
        monitoring: soulbox_server::Monitoring {
            metrics: mon.metrics.unwrap_or(d.monitoring.metrics),
            metrics_token: mon.metrics_token.filter(|t| !t.is_empty()),
            sample_interval: mon
                .sample_interval
                .map_or(d.monitoring.sample_interval, |t| t.0),
            sample_retention: mon
                .sample_retention
                .map_or(d.monitoring.sample_retention, |t| t.0),
        },
        tls: srv
            .tls_cert
            .zip(srv.tls_key)
            .map(|(cert, key)| soulbox_server::TlsFiles { cert, key }),
        default_limits: c.limits("default_limits"),
        max_limits: c.limits("max_limits"),
        shutdown_grace: srv.shutdown_grace.map_or(d.shutdown_grace, |t| t.0),
        ..d
    }
}

/// What a stop does: with `keep`, every sandbox but build steps' (their builds cannot go on
/// without this process) runs on, and the next start takes them over; with `kill`, all are
/// removed and recorded as gone.
async fn stop_sandboxes(store: &Store, backend: &Arc<NsBackend>, on_stop: OnStop) {
    use soulbox_runtime::Backend;
    let all = backend.list();
    if on_stop == OnStop::Kill {
        let paused = backend.paused_on_disk();
        eprintln!(
            "stopping: removing {} sandbox(es)",
            all.len() + paused.len()
        );
        for id in all.iter().map(|s| &s.id).chain(&paused) {
            let _ = store.set_state(id, "killed").await;
        }
        for id in &paused {
            let _ = backend.kill(id).await;
        }
        return backend.shutdown().await;
    }
    for s in all
        .iter()
        .filter(|s| s.label == soulbox_server::templates::build::LABEL_BUILD)
    {
        let _ = backend.kill(&s.id).await;
    }
    let left = backend.list().len();
    backend.detach();
    eprintln!(
        "stopping: {left} sandbox(es) keep running; the next `soulbox serve` takes them over (`--on-stop kill` removes them instead)"
    );
}

#[cfg(test)]
mod tests {
    use crate::config::file::File;
    use crate::config::Config;

    fn server_config(text: &str) -> soulbox_server::ServerConfig {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("soulbox.toml");
        std::fs::write(&p, text).unwrap();
        super::server_config(&Config::load(Some(&p), File::default()).unwrap())
    }

    #[test]
    fn the_files_rate_limit_and_monitoring_reach_the_server() {
        let c = server_config(
            "[security]\nrate_limit_per_second = 2.5\nrate_limit_burst = 7\n\
             [monitoring]\nmetrics = false\nmetrics_token = \"t0k\"\nsample_interval = \"2s\"\nsample_retention = \"10m\"\n",
        );
        assert_eq!(
            c.rate_limit,
            Some(soulbox_server::RateLimit {
                per_second: 2.5,
                burst: 7
            })
        );
        assert!(!c.monitoring.metrics);
        assert_eq!(c.monitoring.metrics_token.as_deref(), Some("t0k"));
        assert_eq!(c.monitoring.sample_interval.as_secs(), 2);
        assert_eq!(c.monitoring.sample_retention.as_secs(), 600);
        // A rate alone bursts one second's worth; none is no limit.
        let c = server_config("[security]\nrate_limit_per_second = 3.2\n");
        assert_eq!(c.rate_limit.map(|r| r.burst), Some(4));
        assert_eq!(server_config("").rate_limit, None);
        assert!(server_config("").monitoring.metrics);
    }
}
