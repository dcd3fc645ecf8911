//! soulbox-agent: the daemon inside every sandbox.
//!
//! It runs as the sandbox's PID 1 (reaping orphans, forwarding termination to the processes it
//! started) and serves E2B's envd protocol on a unix socket that the host reaches through a
//! bind mount. Built as a static executable so it runs in any root filesystem.

use soulbox_agent::{reaper, server, state::Agent};
use soulbox_protocol::init::InitSpec;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

struct Args {
    socket: PathBuf,
    init_fd: Option<i32>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        socket: PathBuf::from(soulbox_protocol::AGENT_RUN_IN_SANDBOX)
            .join(soulbox_protocol::AGENT_SOCKET_NAME),
        init_fd: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--socket" => args.socket = it.next().ok_or("--socket needs a path")?.into(),
            "--init-fd" => {
                args.init_fd = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or("--init-fd needs a number")?,
                )
            }
            "--version" => {
                println!(
                    "soulbox-agent {} (envd {})",
                    env!("CARGO_PKG_VERSION"),
                    soulbox_protocol::ENVD_VERSION
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// Reads the init spec from an inherited pipe, so the token never sits in a file or in the
/// environment of the sandbox.
fn read_init(fd: i32) -> Result<InitSpec, String> {
    // SAFETY: the runtime passes this descriptor to us open; we take sole ownership of it.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut s = String::new();
    f.read_to_string(&mut s)
        .map_err(|e| format!("reading init spec: {e}"))?;
    serde_json::from_str(&s).map_err(|e| format!("parsing init spec: {e}"))
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SOULBOX_AGENT_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let result = parse_args().and_then(|args| {
        let init = match args.init_fd {
            Some(fd) => read_init(fd)?,
            None => InitSpec::default(),
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(run(args.socket, init))
    });
    if let Err(e) = result {
        eprintln!("soulbox-agent: {e}");
        std::process::exit(1);
    }
}

async fn run(socket: PathBuf, init: InitSpec) -> Result<(), String> {
    reaper::start().map_err(|e| format!("installing the SIGCHLD handler: {e}"))?;
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("binding {}: {e}", socket.display()))?;
    let agent = Agent::new(init);
    let app = server::router(agent.clone());
    soulbox_agent::interpreter::Contexts::prewarm(agent.clone());
    tokio::select! {
        r = axum::serve(listener, app) => r.map_err(|e| e.to_string()),
        _ = terminated() => {
            // Forward the stop to every process we started, give them a moment, then go.
            for p in agent.processes.all() {
                p.signal(nix::sys::signal::Signal::SIGTERM);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            Ok(())
        }
    }
}

async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut t), Ok(mut i), Ok(mut h)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! { _ = t.recv() => {}, _ = i.recv() => {}, _ = h.recv() => {} }
}
