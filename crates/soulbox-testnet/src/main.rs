//! `soulbox-testnet`: plays "the internet" for SoulBox's egress tests, all on
//! this machine, so those tests need no real network.
//!
//! `soulbox-testnet up --dir DIR [--parent-pid PID]` (as root) builds a
//! network namespace with a DNS resolver, a rogue resolver, and HTTP, HTTPS,
//! banner and UDP echo servers at documentation addresses that the host
//! routes into the namespace. It writes `DIR/env` and then `DIR/ready`, stays
//! in the foreground until SIGTERM/SIGINT or until PID exits, and then tears
//! everything down. `soulbox-testnet down [--dir DIR]` removes what a killed
//! run left behind; it is idempotent.
//!
//! Names it owns, and the only ones it ever touches:
//! - network namespace `sbxinet`; veth `sbxinet0` (host, 100.127.255.1/30,
//!   fd51::1/64) to `eth0` in the namespace (100.127.255.2/30, fd51::2/64);
//! - host routes 198.51.100.0/24, 203.0.113.53/32 and 203.0.113.66/32 via
//!   100.127.255.2 (not all of 203.0.113.0/24: the package mirror is in it),
//!   and 2001:db8:51::/48 via fd51::2;
//! - inside the namespace on `lo`: 198.51.100.{10,11,12,13,20,53},
//!   203.0.113.{53,66}, 2001:db8:51::10;
//! - two dnsmasq processes inside the namespace, and files in DIR.
//!
//! It changes no sysctl and no firewall rule.
//!
//! Servers (on every address above): HTTP on 80 and 8080, HTTPS on 443 and
//! 8443 (`GET /`, `GET /bytes?n=N`, `GET /slow`; each request logged to
//! `DIR/requests.jsonl`), `SSH-2.0-testnet` banner on 2222, UDP echo on 5353
//! (198.51.100.10, .13 and 2001:db8:51::10). DNS at 198.51.100.53 (see
//! `dns.rs` for the names); the rogue resolver at 203.0.113.53 says
//! allowed.test is 203.0.113.66.
//!
//! Files in DIR: `ca.pem` (the fresh test CA), `env`, `ready`,
//! `requests.jsonl`, and `dns.*` / `rogue-dns.*` (dnsmasq pid and query log).

mod certs;
mod dns;
mod netns;
mod servers;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{getppid, Pid};
use tokio::signal::unix::{signal, Signal as TokioSignal, SignalKind};

#[derive(Parser)]
#[command(
    name = "soulbox-testnet",
    version,
    about = "A fake internet for SoulBox egress tests"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the testnet and serve it until SIGTERM/SIGINT (or PID exits).
    Up {
        /// Where ca.pem, env, ready, requests.jsonl and dnsmasq files go.
        #[arg(long)]
        dir: PathBuf,
        /// Tear down when this process exits.
        #[arg(long)]
        parent_pid: Option<i32>,
    },
    /// Remove whatever an earlier run left behind. Idempotent.
    Down {
        /// Also stop dnsmasq named by pid files here and remove env/ready.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Up { dir, parent_pid } => up(&dir, parent_pid),
        Cmd::Down { dir } => down(dir.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soulbox-testnet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("must run as root (it creates a network namespace)");
    }
    Ok(())
}

fn down(dir: Option<&Path>) -> Result<()> {
    require_root()?;
    if let Some(dir) = dir {
        dns::kill_stale(dir);
        remove_markers(dir);
    }
    netns::teardown()?;
    println!("soulbox-testnet: down");
    Ok(())
}

fn remove_markers(dir: &Path) {
    let _ = fs::remove_file(dir.join("ready"));
    let _ = fs::remove_file(dir.join("env"));
}

fn up(dir: &Path, parent_pid: Option<i32>) -> Result<()> {
    require_root()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Handlers before anything else, so a SIGTERM (ours, or the parent-death
    // one) arriving during set-up still ends in teardown.
    let signals = {
        let _rt = rt.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    if let Some(pid) = parent_pid {
        if getppid().as_raw() == pid {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
        }
        // Also covers the race where the parent died before prctl.
        if !alive(pid) {
            bail!("parent pid {pid} is not running");
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = fs::canonicalize(dir)?;
    remove_markers(&dir);

    let mut dnsmasq = None;
    let outcome = run(&rt, &dir, parent_pid, signals, &mut dnsmasq);

    // Closing every socket first lets the namespace go when it is deleted.
    rt.shutdown_timeout(Duration::from_secs(2));
    if let Some(mut d) = dnsmasq {
        d.stop();
    }
    remove_markers(&dir);
    let torn = netns::teardown();
    match &torn {
        Ok(()) => println!("soulbox-testnet: torn down"),
        // Both failed: report this one here, the set-up error is returned.
        Err(e) if outcome.is_err() => eprintln!("soulbox-testnet: teardown: {e:#}"),
        Err(_) => {}
    }
    outcome.and(torn)
}

/// Set-up, then wait. Synchronous parts run on the main thread on purpose:
/// dnsmasq's parent-death signal fires when the thread that spawned it ends.
fn run(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    parent_pid: Option<i32>,
    (mut term, mut int): (TokioSignal, TokioSignal),
    dnsmasq: &mut Option<dns::Dnsmasq>,
) -> Result<()> {
    if netns::exists() {
        eprintln!("soulbox-testnet: removing a leftover {}", netns::NETNS);
    }
    dns::kill_stale(dir);
    netns::teardown()?;
    let v6 = netns::setup()?;
    let tls = certs::make(dir, v6)?;
    let listeners = netns::in_netns(move || servers::bind(v6))?;
    let requests = dir.join("requests.jsonl");
    // Append mode, so a reader tailing it and our own writes never clash;
    // emptied because each run starts a fresh log.
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&requests)
        .with_context(|| format!("opening {}", requests.display()))?;
    log.set_len(0)?;
    {
        let _rt = rt.enter();
        servers::spawn_all(listeners, tls, log)?;
    }
    *dnsmasq = Some(dns::start(dir, v6)?);

    let env = format!(
        "TESTNET_CA={ca}\nTESTNET_DNS={dns}\nTESTNET_ROGUE_DNS={rogue}\nTESTNET_REQUESTS={req}\nTESTNET_IPV6={v6}\n",
        ca = dir.join("ca.pem").display(),
        dns = netns::DNS,
        rogue = netns::ROGUE_DNS,
        req = requests.display(),
        v6 = u8::from(v6),
    );
    // env must be complete before ready appears.
    let tmp = dir.join("env.tmp");
    fs::write(&tmp, env)?;
    fs::rename(&tmp, dir.join("env"))?;
    fs::write(dir.join("ready"), "")?;
    println!(
        "soulbox-testnet: ready (dir {}, dns {}, rogue dns {}, ipv6 {})",
        dir.display(),
        netns::DNS,
        netns::ROGUE_DNS,
        if v6 { "on" } else { "off" }
    );

    let why = rt.block_on(async {
        let mut poll = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM".to_owned(),
                _ = int.recv() => break "SIGINT".to_owned(),
                _ = poll.tick() => {
                    if let Some(pid) = parent_pid.filter(|&p| !alive(p)) {
                        break format!("parent {pid} exited");
                    }
                }
            }
        }
    });
    println!("soulbox-testnet: {why}, tearing down");
    Ok(())
}

/// Whether `pid` runs (a zombie counts as gone: it will never act again).
fn alive(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name, which may hold spaces.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    state != Some('Z')
}
