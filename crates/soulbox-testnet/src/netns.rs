//! The `sbxinet` network namespace: a veth link to the host, the server
//! addresses on the namespace's `lo`, and host routes to them.
//!
//! Everything is done with `ip(8)` so that what this sets up is exactly what
//! an operator would type, and so that `down` can undo it with no state.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const NETNS: &str = "sbxinet";
pub const HOST_IF: &str = "sbxinet0";
/// The namespace end is created under this name (so it cannot clash with
/// anything on the host) and renamed to `eth0` once inside.
const PEER_TMP: &str = "sbxinet1";
const NS_IF: &str = "eth0";

const HOST_V4: &str = "100.127.255.1";
const NS_V4: &str = "100.127.255.2";
const HOST_V6: &str = "fd51::1";
const NS_V6: &str = "fd51::2";

/// Prefixes the host routes into the namespace (v4 and v6). Only two /32s
/// of 203.0.113.0/24: this workplace's package-registry mirror lives in that
/// range (203.0.113.80), and routing all of it here would cut the host off.
const ROUTES_V4: [&str; 3] = ["198.51.100.0/24", "203.0.113.53/32", "203.0.113.66/32"];
const ROUTE_V6: &str = "2001:db8:51::/48";

pub const DNS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
pub const ROGUE_DNS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 0x10);

/// Every IPv4 address the namespace answers on (all servers listen on all
/// of them; DNS only on the two resolver addresses).
pub const SERVER_V4: [Ipv4Addr; 8] = [
    Ipv4Addr::new(198, 51, 100, 10),
    Ipv4Addr::new(198, 51, 100, 11),
    Ipv4Addr::new(198, 51, 100, 12),
    Ipv4Addr::new(198, 51, 100, 13),
    Ipv4Addr::new(198, 51, 100, 20),
    DNS,
    ROGUE_DNS,
    Ipv4Addr::new(203, 0, 113, 66),
];

/// All server addresses, for the certificate's IP SANs.
pub fn server_ips(v6: bool) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = SERVER_V4.iter().map(|a| IpAddr::V4(*a)).collect();
    if v6 {
        ips.push(IpAddr::V6(SERVER_V6));
    }
    ips
}

fn netns_path() -> String {
    format!("/run/netns/{NETNS}")
}

pub fn exists() -> bool {
    Path::new(&netns_path()).exists() || Path::new(&format!("/sys/class/net/{HOST_IF}")).exists()
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip(8)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// For teardown: a step that fails because the thing is already gone is fine.
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Creates the namespace, link, addresses and routes. Returns whether IPv6
/// came up (it is optional: a failure there is reported, not fatal).
pub fn setup() -> Result<bool> {
    let n = ["-n", NETNS];
    ip(&["netns", "add", NETNS])?;
    ip(&[
        "link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_TMP, "netns", NETNS,
    ])?;
    ip(&[&n[..], &["link", "set", PEER_TMP, "name", NS_IF]].concat())?;
    ip(&[&n[..], &["link", "set", "lo", "up"]].concat())?;
    ip(&[&n[..], &["link", "set", NS_IF, "up"]].concat())?;
    ip(&["addr", "add", &format!("{HOST_V4}/30"), "dev", HOST_IF])?;
    ip(&["link", "set", HOST_IF, "up"])?;
    ip(&[
        &n[..],
        &["addr", "add", &format!("{NS_V4}/30"), "dev", NS_IF],
    ]
    .concat())?;
    for a in SERVER_V4 {
        ip(&[&n[..], &["addr", "add", &format!("{a}/32"), "dev", "lo"]].concat())?;
    }
    ip(&[&n[..], &["route", "add", "default", "via", HOST_V4]].concat())?;
    for r in ROUTES_V4 {
        ip(&["route", "add", r, "via", NS_V4, "dev", HOST_IF])?;
    }
    match setup_v6() {
        Ok(()) => Ok(true),
        Err(e) => {
            eprintln!("soulbox-testnet: IPv6 not available, continuing without: {e:#}");
            Ok(false)
        }
    }
}

fn setup_v6() -> Result<()> {
    let n = ["-n", NETNS];
    // nodad: the addresses are usable at once instead of after ~1 s of DAD.
    ip(&[
        "-6",
        "addr",
        "add",
        &format!("{HOST_V6}/64"),
        "dev",
        HOST_IF,
        "nodad",
    ])?;
    ip(&[
        &n[..],
        &[
            "-6",
            "addr",
            "add",
            &format!("{NS_V6}/64"),
            "dev",
            NS_IF,
            "nodad",
        ],
    ]
    .concat())?;
    ip(&[
        &n[..],
        &[
            "-6",
            "addr",
            "add",
            &format!("{SERVER_V6}/128"),
            "dev",
            "lo",
            "nodad",
        ],
    ]
    .concat())?;
    ip(&[
        &n[..],
        &[
            "-6", "route", "add", "default", "via", HOST_V6, "dev", NS_IF,
        ],
    ]
    .concat())?;
    ip(&["-6", "route", "add", ROUTE_V6, "via", NS_V6, "dev", HOST_IF])?;
    Ok(())
}

/// Pids of processes whose network namespace is `sbxinet` (e.g. dnsmasq
/// left behind by a run that was killed).
fn netns_pids() -> Vec<Pid> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", NETNS]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| p != std::process::id() as i32)
        .map(Pid::from_raw)
        .collect()
}

/// Removes everything `setup` made, whatever state it is in. Idempotent.
pub fn teardown() -> Result<()> {
    if Path::new(&netns_path()).exists() {
        let pids = netns_pids();
        for &p in &pids {
            let _ = kill(p, Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while pids.iter().any(|&p| kill(p, None).is_ok()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        for p in netns_pids() {
            let _ = kill(p, Signal::SIGKILL);
        }
    }
    // Routes go with the link, but say "via" so only our own routes could
    // ever match if the link were somehow gone and the routes not.
    for r in ROUTES_V4 {
        ip_quiet(&["route", "del", r, "via", NS_V4]);
    }
    ip_quiet(&["-6", "route", "del", ROUTE_V6, "via", NS_V6]);
    // Deleting our end removes the pair at once, even if something still
    // holds the namespace open.
    if Path::new(&format!("/sys/class/net/{HOST_IF}")).exists() {
        ip(&["link", "del", HOST_IF])?;
    }
    if Path::new(&netns_path()).exists() {
        ip(&["netns", "del", NETNS])?;
    }
    if exists() {
        bail!("{NETNS} still present after teardown");
    }
    Ok(())
}

/// Runs `f` on a thread that has joined the namespace: sockets it creates
/// belong to `sbxinet` for their whole life, whichever thread uses them later.
pub fn in_netns<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let path = netns_path();
    thread::spawn(move || {
        let ns = File::open(&path).with_context(|| format!("opening {path}"))?;
        setns(&ns, CloneFlags::CLONE_NEWNET).context("setns into sbxinet")?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
}
