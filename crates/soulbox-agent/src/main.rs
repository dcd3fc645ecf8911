//! soulbox-agent: the daemon inside every sandbox.
//!
//! It runs as the sandbox's PID 1 (reaping orphans, forwarding termination to the processes it
//! started) and serves E2B's envd protocol on a unix socket that the launcher made at a host
//! path and hands over as a descriptor (`--listen-fd`); tests run it on a path (`--socket`).
//! Built as a static executable so it runs in any root filesystem.

use soulbox_agent::{reaper, server, state::Agent};
use soulbox_protocol::init::InitSpec;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

struct Args {
    socket: PathBuf,
    listen_fd: Option<i32>,
    init_fd: Option<i32>,
}

/// Where the agent logs once it serves: inside the sandbox, on its own disk.
const LOG_IN_SANDBOX: &str = "/.soulbox/agent.log";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        socket: PathBuf::from(soulbox_protocol::AGENT_SOCKET_NAME),
        listen_fd: None,
        init_fd: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--socket" => args.socket = it.next().ok_or("--socket needs a path")?.into(),
            "--listen-fd" => {
                args.listen_fd = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or("--listen-fd needs a number")?,
                )
            }
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
            .block_on(run(args, init))
    });
    if let Err(e) = result {
        eprintln!("soulbox-agent: {e}");
        std::process::exit(1);
    }
}

fn listener(args: &Args) -> Result<tokio::net::UnixListener, String> {
    match args.listen_fd {
        Some(fd) => {
            // SAFETY: the launcher passes this listening socket to us open; we own it alone.
            let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
            // The launcher cleared close-on-exec to pass it; no command may inherit it.
            nix::fcntl::fcntl(
                &l,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(|e| format!("listening socket: {e}"))?;
            l.set_nonblocking(true)
                .map_err(|e| format!("listening socket: {e}"))?;
            tokio::net::UnixListener::from_std(l).map_err(|e| format!("listening socket: {e}"))
        }
        None => {
            let _ = std::fs::remove_file(&args.socket);
            tokio::net::UnixListener::bind(&args.socket)
                .map_err(|e| format!("binding {}: {e}", args.socket.display()))
        }
    }
}

/// Points stderr at the log inside the sandbox. Until now it was the runtime's pipe, which
/// carries start-up errors; the runtime stops reading once the agent answers.
fn log_inside() {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::options()
        .create(true)
        .append(true)
        .open(LOG_IN_SANDBOX)
        .or_else(|_| std::fs::File::options().write(true).open("/dev/null"));
    if let Ok(f) = f {
        // SAFETY: dup2 of a descriptor we own onto stderr.
        unsafe { libc::dup2(f.as_raw_fd(), 2) };
    }
}

/// Makes the sandbox's hostname (its id) resolve, as programs such as `sudo` expect.
fn hosts_entry() {
    let Ok(name) = nix::unistd::gethostname() else {
        return;
    };
    let name = name.to_string_lossy().into_owned();
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if hosts
        .lines()
        .any(|l| l.split_whitespace().skip(1).any(|h| h == name))
    {
        return;
    }
    let mut add = String::new();
    if !hosts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("localhost"))
    {
        add.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    }
    add.push_str(&format!("127.0.1.1\t{name}\n"));
    let sep = if hosts.is_empty() || hosts.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let _ = std::fs::write("/etc/hosts", format!("{hosts}{sep}{add}"));
}

async fn run(args: Args, init: InitSpec) -> Result<(), String> {
    reaper::start().map_err(|e| format!("installing the SIGCHLD handler: {e}"))?;
    let listener = listener(&args)?;
    if args.listen_fd.is_some() {
        log_inside();
        hosts_entry();
    }
    let agent = Agent::new(init);
    let app = server::router(agent.clone());
    soulbox_agent::interpreter::Contexts::prewarm(agent.clone());
    let conns = agent.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut usr1) = signal(SignalKind::user_defined1()) {
            while usr1.recv().await.is_some() {
                conns.host_conns.drop_all();
            }
        }
    });
    tokio::select! {
        r = soulbox_agent::host_conns::serve(listener, app, &agent.host_conns) => r.map_err(|e| e.to_string()),
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
