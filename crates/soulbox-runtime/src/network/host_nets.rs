//! The host's own networks: every address and connected prefix on every host interface (v4
//! and v6), which sandboxes must not reach. They live in two nftables interval sets of the
//! `inet soulbox` table (`host_v4`, `host_v6`), filled when the firewall is made and kept
//! current by a thread that listens for address changes on rtnetlink (and re-reads them every
//! [`REFRESH`] in case a notification was lost); each update replaces a set's contents in one
//! nft transaction, so no packet ever sees a half-written set.

use super::{run, HOST_IF_PREFIX};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Re-read even without a notification this often (a full socket buffer drops them).
const REFRESH: Duration = Duration::from_secs(30);

/// The host's networks, collapsed: no prefix contains another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNets {
    pub v4: Vec<(Ipv4Addr, u8)>,
    pub v6: Vec<(Ipv6Addr, u8)>,
}

impl HostNets {
    /// Reads them from the host (`ip -j addr`). The slots' own interfaces are left out: their
    /// addresses are all in [`super::SUBNET`], which the firewall refuses as a whole.
    pub fn read() -> super::Result<HostNets> {
        let out = std::process::Command::new("ip")
            .args(["-j", "addr", "show"])
            .output()
            .map_err(|e| super::NetError::Command {
                cmd: "ip -j addr show".into(),
                msg: e.to_string(),
            })?;
        Ok(Self::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    fn parse(json: &str) -> HostNets {
        #[derive(serde::Deserialize)]
        struct Link {
            #[serde(default)]
            ifname: String,
            #[serde(default)]
            addr_info: Vec<Addr>,
        }
        #[derive(serde::Deserialize)]
        struct Addr {
            #[serde(default)]
            family: String,
            local: Option<String>,
            prefixlen: Option<u8>,
            /// The peer of a point-to-point address.
            address: Option<String>,
        }
        let links: Vec<Link> = serde_json::from_str(json).unwrap_or_default();
        let mut nets = HostNets::default();
        for l in links
            .iter()
            .filter(|l| !l.ifname.starts_with(HOST_IF_PREFIX))
        {
            for a in &l.addr_info {
                let len = a.prefixlen.unwrap_or(0);
                let addrs = [(a.local.as_deref(), len), (a.address.as_deref(), len)];
                for (addr, len) in addrs.into_iter().filter_map(|(a, l)| Some((a?, l))) {
                    match a.family.as_str() {
                        "inet" => {
                            if let Ok(ip) = addr.parse::<Ipv4Addr>() {
                                nets.v4.push((ip, len.min(32)));
                            }
                        }
                        "inet6" => {
                            if let Ok(ip) = addr.parse::<Ipv6Addr>() {
                                nets.v6.push((ip, len.min(128)));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        nets.v4 = collapse(
            nets.v4
                .into_iter()
                .map(|(a, l)| (u32::from(a) as u128, l + 96)),
        )
        .into_iter()
        .map(|(a, l)| (Ipv4Addr::from(a as u32), l - 96))
        .collect();
        nets.v6 = collapse(nets.v6.into_iter().map(|(a, l)| (u128::from(a), l)))
            .into_iter()
            .map(|(a, l)| (Ipv6Addr::from(a), l))
            .collect();
        nets
    }

    /// The sets' definitions, for the table.
    pub fn set_definitions(&self) -> String {
        format!(
            "  set host_v4 {{ type ipv4_addr; flags interval;{} }}\n  set host_v6 {{ type ipv6_addr; flags interval;{} }}\n",
            elements(&self.v4, " elements = "),
            elements(&self.v6, " elements = ")
        )
    }

    /// One nft transaction that replaces both sets' contents.
    fn update_script(&self) -> String {
        let mut s =
            String::from("flush set inet soulbox host_v4\nflush set inet soulbox host_v6\n");
        for (set, e) in [
            ("host_v4", elements(&self.v4, "")),
            ("host_v6", elements(&self.v6, "")),
        ] {
            if !e.is_empty() {
                s.push_str(&format!("add element inet soulbox {set} {e}\n"));
            }
        }
        s
    }
}

fn elements<A: std::fmt::Display>(nets: &[(A, u8)], prefix: &str) -> String {
    if nets.is_empty() {
        return String::new();
    }
    let list: Vec<String> = nets.iter().map(|(a, l)| format!("{a}/{l}")).collect();
    format!("{prefix}{{ {} }}", list.join(", "))
}

/// Masks each address to its prefix and drops prefixes inside others (an interval set refuses
/// overlapping elements). Addresses are 128-bit, v4 ones mapped into the low 32 bits.
fn collapse(nets: impl Iterator<Item = (u128, u8)>) -> Vec<(u128, u8)> {
    let mask = |l: u8| {
        if l == 0 {
            0
        } else {
            u128::MAX << (128 - l as u32)
        }
    };
    let mut v: Vec<(u128, u8)> = nets.map(|(a, l)| (a & mask(l), l)).collect();
    v.sort_by_key(|&(a, l)| (l, a));
    let mut kept: Vec<(u128, u8)> = Vec::new();
    for (a, l) in v {
        if !kept.iter().any(|&(k, kl)| a & mask(kl) == k) {
            kept.push((a, l));
        }
    }
    kept.sort();
    kept
}

/// What the monitor shares with the pool.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    /// What the sets hold now; `None` while the table does not exist.
    applied: Mutex<Option<HostNets>>,
}

impl Tracker {
    /// Makes the firewall with `make`, given the host's networks as they are now; holds the
    /// lock throughout so that a concurrent refresh cannot write an older list over it.
    pub(super) fn install(
        &self,
        make: impl FnOnce(&HostNets) -> super::Result<()>,
    ) -> super::Result<()> {
        let mut applied = self.applied.lock().map_err(|_| super::NetError::Command {
            cmd: "host networks".into(),
            msg: "lock poisoned".into(),
        })?;
        let nets = HostNets::read()?;
        make(&nets)?;
        *applied = Some(nets);
        Ok(())
    }

    /// What the sets hold now.
    pub(super) fn current(&self) -> Option<HostNets> {
        self.applied.lock().ok()?.clone()
    }

    /// The table was removed: nothing to keep current until it is made again.
    pub(super) fn removed(&self) {
        if let Ok(mut a) = self.applied.lock() {
            *a = None;
        }
    }

    /// Re-reads the host's networks and rewrites the sets if they changed.
    fn refresh(&self) {
        let Ok(mut applied) = self.applied.lock() else {
            return;
        };
        let Some(current) = applied.as_ref() else {
            return;
        };
        let nets = match HostNets::read() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("reading the host's networks: {e}");
                return;
            }
        };
        if &nets == current {
            return;
        }
        match run("nft", &["-f", "-"], Some(&nets.update_script())) {
            Ok(()) => {
                tracing::info!(
                    v4 = nets.v4.len(),
                    v6 = nets.v6.len(),
                    "host networks updated"
                );
                *applied = Some(nets);
            }
            Err(e) => tracing::warn!("updating the host-network sets: {e}"),
        }
    }
}

/// Starts the thread that keeps the sets current; it ends when the pool is dropped.
pub(super) fn monitor(tracker: &Arc<Tracker>) -> std::io::Result<()> {
    use nix::sys::socket::{
        bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
        SockProtocol, SockType,
    };
    let groups = (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &NetlinkAddr::new(0, groups),
    )?;
    let timeout = nix::sys::time::TimeVal::new(REFRESH.as_secs() as i64, 0);
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
    let weak: Weak<Tracker> = Arc::downgrade(tracker);
    std::thread::Builder::new()
        .name("soulbox-host-nets".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                // A message, a timeout or an overflow (ENOBUFS) all mean: look again.
                let _ = recv(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    &mut buf,
                    MsgFlags::empty(),
                );
                // Drain a burst (an interface coming up brings several) into one refresh.
                while recv(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    &mut buf,
                    MsgFlags::MSG_DONTWAIT,
                )
                .is_ok()
                {}
                match weak.upgrade() {
                    Some(t) => t.refresh(),
                    None => return,
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_addresses_and_connected_prefixes_of_every_interface_but_the_slots() {
        let json = r#"[
          {"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8},
                                      {"family":"inet6","local":"::1","prefixlen":128}]},
          {"ifname":"eth0","addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24},
                                        {"family":"inet","local":"192.0.2.9","prefixlen":32},
                                        {"family":"inet6","local":"fd00::2","prefixlen":64}]},
          {"ifname":"tun0","addr_info":[{"family":"inet","local":"100.96.0.1","prefixlen":32,
                                         "address":"100.96.0.2"}]},
          {"ifname":"sbx-3","addr_info":[{"family":"inet","local":"10.231.0.13","prefixlen":30}]},
          {"ifname":"ifb0","addr_info":[]}
        ]"#;
        let n = HostNets::parse(json);
        let v4: Vec<String> = n.v4.iter().map(|(a, l)| format!("{a}/{l}")).collect();
        assert_eq!(
            v4,
            [
                "100.96.0.1/32",
                "100.96.0.2/32",
                "127.0.0.0/8",
                "192.0.2.0/24"
            ]
        );
        let v6: Vec<String> = n.v6.iter().map(|(a, l)| format!("{a}/{l}")).collect();
        assert_eq!(v6, ["::1/128", "fd00::/64"]);
        let script = n.update_script();
        assert!(script.starts_with("flush set inet soulbox host_v4\n"));
        assert!(script.contains("add element inet soulbox host_v4 { 100.96.0.1/32, "));
        assert!(HostNets::parse("not json").v4.is_empty());
        assert_eq!(
            HostNets::default().update_script(),
            "flush set inet soulbox host_v4\nflush set inet soulbox host_v6\n"
        );
    }
}
