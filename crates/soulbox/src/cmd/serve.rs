//! `soulbox serve` and `soulbox keys`.

use super::Context;
use anyhow::Context as _;
use clap::Args;
use soulbox_runtime::ns::NsBackend;
use soulbox_server::secrets::Sealer;
use soulbox_server::store::{new_key, Store};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (control plane and data plane share it).
    #[arg(long, env = "SOULBOX_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Domain for `{port}-{id}.{domain}` sandbox hosts returned to SDKs (get_host).
    #[arg(long, env = "SOULBOX_DOMAIN")]
    domain: Option<String>,
    /// Largest control-plane request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// Templates built before serving if missing (comma-separated; empty for none).
    #[arg(
        long,
        env = "SOULBOX_TEMPLATES",
        default_value = "base,code-interpreter",
        value_delimiter = ','
    )]
    templates: Vec<String>,
    /// Sandboxes kept started ahead of demand, as TEMPLATE=COUNT (comma-separated; empty for
    /// none). A create that matches gets one at once, its Jupyter kernel already running.
    #[arg(
        long,
        env = "SOULBOX_WARM_POOL",
        default_value = "code-interpreter=1",
        value_delimiter = ',',
        value_parser = parse_pool_entry
    )]
    warm_pool: Vec<(String, usize)>,
    /// Client connections open at once, in total (lowered to fit the descriptor limit).
    #[arg(long, env = "SOULBOX_MAX_CONNECTIONS", default_value_t = 16384)]
    max_connections: usize,
    /// Client connections open at once from one address (an IPv6 /64 counts as one).
    #[arg(long, env = "SOULBOX_MAX_CONNECTIONS_PER_IP", default_value_t = 2048)]
    max_connections_per_ip: usize,
    /// Milliseconds a new connection may take to send its first request before it is closed.
    #[arg(
        long,
        env = "SOULBOX_FIRST_REQUEST_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    first_request_timeout_ms: u64,
    /// Fetch a registry's images from a mirror instead: `REGISTRY=MIRROR`, e.g.
    /// `docker.io=registry.internal:5000` (repeatable, or comma-separated).
    #[arg(long, env = "SOULBOX_REGISTRY_MIRRORS", value_delimiter = ',', value_parser = parse_mirror)]
    registry_mirror: Vec<(String, String)>,
    /// A registry (`host[:port]`) spoken to over plain HTTP (repeatable, or comma-separated).
    #[arg(long, env = "SOULBOX_INSECURE_REGISTRIES", value_delimiter = ',')]
    insecure_registry: Vec<String>,
    /// Template builds run at once; more wait their turn.
    #[arg(long, env = "SOULBOX_BUILD_CONCURRENCY", default_value_t = 2)]
    build_concurrency: usize,
    /// Disk of a build step's sandbox, in MiB (also the most one COPY may unpack to).
    #[arg(long, env = "SOULBOX_BUILD_DISK_MB", default_value_t = 10240)]
    build_disk_mb: u64,
    /// Longest a template build may take, in seconds.
    #[arg(long, env = "SOULBOX_BUILD_TIMEOUT", default_value_t = 3600)]
    build_timeout: u64,
    /// What a stop (SIGTERM, ^C) does to the sandboxes: `keep` them running for the next
    /// start to take over (an upgrade or a restart loses nothing), or `kill` them all.
    #[arg(long, env = "SOULBOX_ON_STOP", value_enum, default_value_t = OnStop::Keep)]
    on_stop: OnStop,
    /// Longest timeout a sandbox may have, in seconds (E2B caps it at 24 h); none by default.
    #[arg(long, env = "SOULBOX_MAX_TIMEOUT")]
    max_timeout: Option<u64>,
    /// Bandwidth of each sandbox, each way, in Mbit/s (0: unlimited).
    #[arg(long, env = "SOULBOX_EGRESS_RATE_MBIT", default_value_t = soulbox_runtime::network::DEFAULT_RATE_MBIT)]
    egress_rate_mbit: u32,
    /// Outbound connections one sandbox may hold open at once.
    #[arg(long, env = "SOULBOX_EGRESS_MAX_CONNECTIONS", default_value_t = soulbox_runtime::network::DEFAULT_FLOWS_PER_SANDBOX)]
    egress_max_connections: u32,
    /// A PEM file of CA certificates the egress proxy trusts beside the host's trust store,
    /// when it checks the servers of hosts with header rules (repeatable, or comma-separated).
    #[arg(long, env = "SOULBOX_EGRESS_TRUST", value_delimiter = ',')]
    egress_trust: Vec<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnStop {
    Keep,
    Kill,
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

/// The store, its secrets sealed with `SOULBOX_SECRET_KEY` or else the data directory's
/// `secret.key` (made on first start).
pub(super) async fn open_store(ctx: &Context) -> anyhow::Result<Store> {
    ctx.private_data_dir()?;
    let sealer = match std::env::var("SOULBOX_SECRET_KEY")
        .ok()
        .filter(|k| !k.is_empty())
    {
        Some(k) => Sealer::from_hex(&k).context("SOULBOX_SECRET_KEY")?,
        None => Sealer::load_or_create(&ctx.data_dir.join("secret.key"))?,
    };
    Store::open_with(&ctx.data_dir, sealer)
        .await
        .context("opening the database")
}

pub async fn serve(ctx: &Context, a: ServeArgs) -> anyhow::Result<()> {
    let (rate, flows) = (a.egress_rate_mbit, a.egress_max_connections);
    let backend = ctx.backend_with(|c| {
        c.host_limits.rate_mbit = Some(rate);
        c.host_limits.flows_per_sandbox = Some(flows);
    })?;
    for t in a.templates.iter().filter(|t| !t.is_empty()) {
        super::template::build_one(backend.templates(), t, false)?;
    }
    let store = open_store(ctx).await?;
    let team = store.default_team().await?;
    match std::env::var("SOULBOX_ADMIN_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
    {
        Some(k) => {
            store
                .add_key(&team, &k, "admin (SOULBOX_ADMIN_API_KEY)")
                .await?;
        }
        None if store.key_count().await? == 0 => {
            let k = new_key();
            store.add_key(&team, &k, "first key").await?;
            println!("Created the first API key (shown once, keep it):\n\n    {k}\n");
        }
        None => {}
    }
    let url = format!("http://{}", a.listen);
    println!("SoulBox is serving on {url}\n  export E2B_API_URL={url} E2B_SANDBOX_URL={url} E2B_API_KEY=<your key>");
    let cfg = soulbox_server::ServerConfig {
        domain: a.domain,
        max_body: a.max_body,
        warm_pool: a.warm_pool.into_iter().collect(),
        max_connections: a.max_connections,
        max_connections_per_ip: a.max_connections_per_ip,
        first_request_timeout: std::time::Duration::from_millis(a.first_request_timeout_ms),
        registry_mirrors: a.registry_mirror.into_iter().collect(),
        insecure_registries: a.insecure_registry,
        build_concurrency: a.build_concurrency,
        build_timeout: std::time::Duration::from_secs(a.build_timeout),
        build_disk_mb: a.build_disk_mb,
        max_timeout: a.max_timeout.map(std::time::Duration::from_secs),
        egress_trust: a.egress_trust,
        ..soulbox_server::ServerConfig::new(a.listen)
    };
    let on_stop = a.on_stop;
    let stop = async {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut t), Ok(mut i)) => tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} },
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        r = soulbox_server::serve(cfg, store.clone(), backend.clone()) => r.with_context(|| format!("serving on {}", a.listen))?,
        _ = stop => stop_sandboxes(&store, &backend, on_stop).await,
    }
    Ok(())
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
