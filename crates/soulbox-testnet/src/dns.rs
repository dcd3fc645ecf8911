//! The two resolvers, both Debian's dnsmasq run inside `sbxinet`: the
//! "real" one that sandboxes are meant to use, and a rogue one that gives a
//! different answer, so a test can tell which one a sandbox reached.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::netns::{self, NETNS};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// Exact names served by the main resolver (A or AAAA by the address form).
/// `wild.test` and everything under it is added separately.
pub const RECORDS: &[(&str, &str)] = &[
    ("allowed.test", "198.51.100.10"),
    ("other.test", "198.51.100.11"),
    ("api.test", "198.51.100.20"),
    ("deny.test", "198.51.100.13"),
    ("loop.test", "127.0.0.1"),
    ("private.test", "10.1.2.3"),
];
pub const WILD: (&str, &str) = ("wild.test", "198.51.100.12");
pub const V6ONLY: &str = "v6only.test";
const ROGUE_RECORDS: &[(&str, &str)] = &[("allowed.test", "203.0.113.66")];

/// The running dnsmasq processes; stopped on drop.
pub struct Dnsmasq {
    children: Vec<Child>,
}

/// Starts both resolvers and waits until each accepts TCP on port 53 (it
/// opens UDP at the same moment).
pub fn start(dir: &Path, v6: bool) -> Result<Dnsmasq> {
    let mut main: Vec<String> = RECORDS
        .iter()
        .map(|(n, a)| format!("--host-record={n},{a}"))
        .collect();
    if v6 {
        main.push(format!("--host-record={V6ONLY},{}", netns::SERVER_V6));
    }
    // --address covers the name and every subdomain; the --local after it
    // makes other record types NODATA rather than NXDOMAIN (dnsmasq >= 2.86),
    // which musl's resolver would otherwise take as "no such name".
    main.push(format!("--address=/{}/{}", WILD.0, WILD.1));
    main.push(format!("--local=/{}/", WILD.0));
    let rogue: Vec<String> = ROGUE_RECORDS
        .iter()
        .map(|(n, a)| format!("--host-record={n},{a}"))
        .collect();

    let mut running = Dnsmasq {
        children: Vec::new(),
    };
    running.children.push(spawn(dir, "dns", netns::DNS, &main)?);
    running
        .children
        .push(spawn(dir, "rogue-dns", netns::ROGUE_DNS, &rogue)?);
    for (i, addr) in [netns::DNS, netns::ROGUE_DNS].into_iter().enumerate() {
        wait_listening(&mut running.children[i], addr)?;
    }
    Ok(running)
}

fn spawn(dir: &Path, name: &str, addr: Ipv4Addr, records: &[String]) -> Result<Child> {
    let d = dir.display();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", NETNS, DNSMASQ])
        .args([
            "--keep-in-foreground",
            // No /etc/dnsmasq.conf, no upstreams, no /etc/hosts: only what is
            // given here.
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            // Stay root: Debian's dnsmasq-base may have no user to drop to.
            "--user=root",
            "--group=root",
            "--log-queries",
        ])
        .arg(format!("--listen-address={addr}"))
        .arg(format!("--pid-file={d}/{name}.pid"))
        .arg(format!("--dhcp-leasefile={d}/{name}.leases"))
        .arg(format!("--log-facility={d}/{name}.log"))
        .args(records)
        // Anything not configured above: NXDOMAIN, never forwarded.
        .arg("--local=/#/")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent;
    // it is all that runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // `ip netns exec` execs dnsmasq in place (no fork), and neither is
            // set-uid, so this survives into dnsmasq: if we are SIGKILLed,
            // dnsmasq still goes.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting {DNSMASQ} for {name} (apt-get install dnsmasq-base)"))
}

fn wait_listening(child: &mut Child, addr: Ipv4Addr) -> Result<()> {
    let sa = SocketAddr::from((addr, 53));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("dnsmasq on {addr} exited at start: {status}");
        }
        if TcpStream::connect_timeout(&sa, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("dnsmasq on {addr} not listening after 10 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

impl Dnsmasq {
    pub fn stop(&mut self) {
        for c in &self.children {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for c in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.children.clear();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kills a dnsmasq of an earlier run still named by a pid file in `dir`
/// (one that outlived its namespace, so `ip netns pids` cannot find it).
pub fn kill_stale(dir: &Path) {
    for name in ["dns", "rogue-dns"] {
        let pidfile = dir.join(format!("{name}.pid"));
        let Some(pid) = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            continue;
        };
        // Only if that pid is still our dnsmasq (pids get reused): its
        // command line names this very pid file.
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = format!("--pid-file={}", pidfile.display());
        if cmdline.split(|&b| b == 0).any(|arg| arg == ours.as_bytes()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = fs::remove_file(pidfile);
    }
}
