//! Network slots: a named network namespace with a veth pair to the host, for sandboxes with
//! internet access. Deleting a network device is slow, so slots are pooled and reused; a
//! sandbox cannot change its slot (the namespace belongs to the host's user namespace, where
//! sandbox root has no capabilities), so reuse is safe.
//!
//! Egress goes through one nftables table of SoulBox's own (`inet soulbox`): NAT out, nothing
//! in, no traffic between sandboxes, none to the host itself, to any network the host is
//! connected to ([`host_nets`], kept current) or to private, loopback, link-local or multicast
//! ranges — except DNS to the host's own nameservers. Each slot may hold a bounded number of
//! tracked flows (`ct count`), so one sandbox cannot fill the host's conntrack table.
//!
//! Sandboxes without internet never use a slot: they get a fresh namespace with loopback only.

mod egress;
mod host_nets;

pub use egress::SlotPolicy;
pub use host_nets::HostNets;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// Slot addresses: slot `i` owns the /30 at `10.231.0.0 + 4i` (host .1, sandbox .2).
pub const SUBNET: &str = "10.231.0.0/16";
const NETNS_PREFIX: &str = "soulbox-";
const HOST_IF_PREFIX: &str = "sbx-";
const MAX_SLOTS: u32 = 16384;
/// Tracked flows (conntrack entries) one sandbox may hold at once, by default. The host's
/// table (`nf_conntrack_max`) is commonly 65536–262144 entries for everyone.
pub const DEFAULT_FLOWS_PER_SANDBOX: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A host networking command failed.
    #[error("{cmd} failed: {msg} (is iproute2/nftables installed? run `soulbox doctor`)")]
    Command { cmd: String, msg: String },
    #[error("all {MAX_SLOTS} network slots are in use")]
    Exhausted,
}

pub type Result<T> = std::result::Result<T, NetError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub index: u32,
}

impl Slot {
    pub fn netns(&self) -> String {
        format!("{NETNS_PREFIX}{}", self.index)
    }
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(self.netns())
    }
    pub fn host_if(&self) -> String {
        format!("{HOST_IF_PREFIX}{}", self.index)
    }
    fn base(&self) -> u32 {
        u32::from(Ipv4Addr::new(10, 231, 0, 0)) + self.index * 4
    }
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 1)
    }
    pub fn sandbox_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 2)
    }
}

/// Bytes the sandbox behind `slot` has received and sent: the host end's counters, crossed
/// (what the host end transmits, the sandbox receives). Read from sysfs, out of the sandbox's
/// reach; 0 if the veth is gone.
pub fn veth_bytes(slot: &Slot) -> (u64, u64) {
    let read = |what: &str| {
        std::fs::read_to_string(format!(
            "/sys/class/net/{}/statistics/{what}",
            slot.host_if()
        ))
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
    };
    (read("tx_bytes"), read("rx_bytes"))
}

/// What the operator bounds every sandbox's network by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetLimits {
    /// Tracked flows (connections) one sandbox may hold at once.
    pub flows_per_sandbox: u32,
    /// Bandwidth each way, in Mbit/s (0: unlimited): traffic control on both ends of the
    /// slot's veth, out of the sandbox's reach.
    pub rate_mbit: u32,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            flows_per_sandbox: DEFAULT_FLOWS_PER_SANDBOX,
            rate_mbit: DEFAULT_RATE_MBIT,
        }
    }
}

/// Bandwidth per sandbox and direction by default: generous, but one sandbox cannot take a
/// 10 Gbit/s link for itself.
pub const DEFAULT_RATE_MBIT: u32 = 1000;

#[derive(Debug)]
pub struct NetworkPool {
    state: Mutex<PoolState>,
    host_nets: Arc<host_nets::Tracker>,
    limits: NetLimits,
}

impl Default for NetworkPool {
    fn default() -> Self {
        NetworkPool::new(NetLimits::default())
    }
}

#[derive(Debug, Default)]
struct PoolState {
    free: Vec<Slot>,
    /// Indexes below `next` without a slot (removed at start): made again before new ones.
    holes: Vec<u32>,
    next: u32,
    firewall: bool,
    monitoring: bool,
    /// The egress policies of the slots that have one (the rest follow the baseline alone).
    policies: HashMap<u32, SlotPolicy>,
    /// The egress proxy's port, once it listens.
    proxy_port: Option<u16>,
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<()> {
    let fail = |msg: String| NetError::Command {
        cmd: format!("{cmd} {}", args.join(" ")),
        msg,
    };
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(input.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// The host's IPv4 nameservers, which sandboxes may query even if they are private addresses.
pub fn host_nameservers() -> Vec<Ipv4Addr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse().ok())
        .filter(|a: &Ipv4Addr| !a.is_loopback())
        .collect()
}

fn firewall_rules(nets: &HostNets, flows_per_sandbox: u32, proxy_port: Option<u16>) -> String {
    let dns = host_nameservers()
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let dns_rule = if dns.is_empty() {
        String::new()
    } else {
        format!("iifname \"{HOST_IF_PREFIX}*\" ip daddr {{ {dns} }} meta l4proto {{ tcp, udp }} th dport 53 accept")
    };
    format!(
        r#"table inet soulbox
delete table inet soulbox
table inet soulbox {{
{sets}  set slot_flows {{ type ifname; size 65535; flags dynamic; }}
  set egress_ports {{ type inet_service;{egress} }}
  map slot_filter {{ type ifname : verdict; }}
  map slot_nat {{ type ifname : verdict; }}
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname "{p}*" ct state established,related accept
    iifname "{p}*" ct state new ct status dnat tcp dport @egress_ports add @slot_flows {{ iifname ct count over {flows_per_sandbox} }} reject with tcp reset
    iifname "{p}*" ct status dnat tcp dport @egress_ports accept
    iifname "{p}*" drop
    tcp dport @egress_ports drop
  }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    iifname vmap @slot_nat
  }}
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname "{p}*" oifname "{p}*" drop
    oifname "{p}*" ct state established,related accept
    oifname "{p}*" drop
    iifname "{p}*" ct state new add @slot_flows {{ iifname ct count over {flows_per_sandbox} }} counter reject
    iifname vmap @slot_filter
    {dns_rule}
    iifname "{p}*" ip daddr {{ 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/4, 240.0.0.0/4 }} drop
    iifname "{p}*" ip daddr @host_v4 drop
    iifname "{p}*" ip6 daddr @host_v6 drop
    iifname "{p}*" meta nfproto ipv6 drop
    iifname "{p}*" accept
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    ip saddr {SUBNET} oifname != "{p}*" masquerade
  }}
}}
"#,
        p = HOST_IF_PREFIX,
        sets = nets.set_definitions(),
        egress = proxy_port.map_or(String::new(), |p| format!(" elements = {{ {p} }}")),
    )
}

impl NetworkPool {
    /// A pool whose sandboxes are bounded by `limits`.
    pub fn new(limits: NetLimits) -> Self {
        NetworkPool {
            state: Mutex::new(PoolState::default()),
            host_nets: Arc::default(),
            limits,
        }
    }

    pub fn limits(&self) -> NetLimits {
        self.limits
    }

    /// The host's networks as the firewall refuses them now (the egress proxy refuses the
    /// same for the connections it makes from the host).
    pub fn host_nets(&self) -> HostNets {
        self.host_nets.current().unwrap_or_default()
    }

    /// Makes `policy` the egress policy of `slot` (`None`: the baseline alone), in one nft
    /// transaction; open connections it refuses are cut.
    pub fn set_policy(&self, slot: &Slot, policy: Option<SlotPolicy>) -> Result<()> {
        let mut s = self.state.lock().map_err(|_| NetError::Exhausted)?;
        let had = s.policies.contains_key(&slot.index);
        if s.firewall {
            let script = SlotPolicy::script(
                policy.as_ref(),
                slot.index,
                &slot.host_if(),
                had,
                s.proxy_port,
            );
            run("nft", &["-f", "-"], Some(&script))?;
        }
        match policy {
            Some(p) => s.policies.insert(slot.index, p),
            None => s.policies.remove(&slot.index),
        };
        Ok(())
    }

    /// The policies of the slots that have one.
    pub fn policies(&self) -> HashMap<u32, SlotPolicy> {
        self.state
            .lock()
            .map(|s| s.policies.clone())
            .unwrap_or_default()
    }

    /// The egress proxy listens on `port`: connections the policies send to it go there.
    pub fn set_proxy_port(&self, port: u16) -> Result<()> {
        let mut s = self.state.lock().map_err(|_| NetError::Exhausted)?;
        s.proxy_port = Some(port);
        if !s.firewall {
            return Ok(());
        }
        let mut script = format!(
            "flush set inet soulbox egress_ports
add element inet soulbox egress_ports {{ {port} }}
"
        );
        for (index, p) in &s.policies {
            let slot = Slot { index: *index };
            script.push_str(&SlotPolicy::script(
                Some(p),
                *index,
                &slot.host_if(),
                true,
                Some(port),
            ));
        }
        run("nft", &["-f", "-"], Some(&script))
    }

    /// Removes every slot and the firewall table a previous run left behind. Only names
    /// SoulBox made are touched.
    pub fn cleanup_stale(&self) {
        remove_slots_except(&BTreeSet::new());
        let _ = run("nft", &["delete", "table", "inet", "soulbox"], None);
        self.host_nets.removed();
        if let Ok(mut s) = self.state.lock() {
            *s = PoolState {
                monitoring: s.monitoring,
                proxy_port: s.proxy_port,
                ..PoolState::default()
            };
        }
    }

    /// Keeps the slots of the sandboxes taken over from an earlier run (`keep`) and removes
    /// every other one it left. Their firewall stays in force throughout: the table is
    /// replaced in one transaction, never removed, while a kept slot exists.
    pub fn adopt(&self, keep: &BTreeSet<u32>, policies: HashMap<u32, SlotPolicy>) {
        if keep.is_empty() {
            return self.cleanup_stale();
        }
        remove_slots_except(keep);
        if let Ok(mut s) = self.state.lock() {
            let next = keep.last().map_or(0, |l| l + 1);
            *s = PoolState {
                monitoring: s.monitoring,
                next,
                holes: (0..next).rev().filter(|i| !keep.contains(i)).collect(),
                policies,
                proxy_port: s.proxy_port,
                ..PoolState::default()
            };
        }
        if let Err(e) = self.ensure_firewall() {
            tracing::error!("installing the sandbox firewall for the sandboxes taken over: {e}");
        }
        // A kept slot has the bandwidth limit of the run that made it: this run's applies
        // (to it now, and to whoever gets it next).
        for &index in keep {
            if let Err(e) = apply_rate(&Slot { index }, self.limits.rate_mbit) {
                tracing::warn!(
                    slot = index,
                    "setting the bandwidth limit of a kept slot: {e}"
                );
            }
        }
    }

    fn ensure_firewall(&self) -> Result<()> {
        if self.state.lock().map(|s| s.firewall).unwrap_or(false) {
            return Ok(());
        }
        let (policies, proxy_port) = self
            .state
            .lock()
            .map(|s| (s.policies.clone(), s.proxy_port))
            .unwrap_or_default();
        self.host_nets.install(|nets| {
            // The table and every slot's policy in one transaction: a sandbox taken over
            // never runs a moment without its policy.
            let mut script = firewall_rules(nets, self.limits.flows_per_sandbox, proxy_port);
            for (index, p) in &policies {
                let slot = Slot { index: *index };
                script.push_str(&SlotPolicy::script(
                    Some(p),
                    *index,
                    &slot.host_if(),
                    false,
                    proxy_port,
                ));
            }
            run("nft", &["-f", "-"], Some(&script))
        })?;
        // NAT needs forwarding; this is the one host-wide setting SoulBox changes.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| NetError::Command {
            cmd: "sysctl net.ipv4.ip_forward=1".into(),
            msg: e.to_string(),
        })?;
        if let Ok(mut s) = self.state.lock() {
            s.firewall = true;
            if !s.monitoring {
                // Without the monitor the sets still hold what was read now; say so.
                match host_nets::monitor(&self.host_nets) {
                    Ok(()) => s.monitoring = true,
                    Err(e) => tracing::warn!("not watching the host's addresses: {e}"),
                }
            }
        }
        Ok(())
    }

    /// A ready slot: reused if one is free, else made.
    pub fn acquire(&self) -> Result<Slot> {
        self.ensure_firewall()?;
        let reuse = self.state.lock().ok().and_then(|mut s| s.free.pop());
        if let Some(slot) = reuse {
            return Ok(slot);
        }
        let index = {
            let mut s = self.state.lock().map_err(|_| NetError::Exhausted)?;
            if let Some(hole) = s.holes.pop() {
                hole
            } else if s.next >= MAX_SLOTS {
                return Err(NetError::Exhausted);
            } else {
                s.next += 1;
                s.next - 1
            }
        };
        let slot = Slot { index };
        if let Err(e) = make_slot(&slot, self.limits.rate_mbit) {
            let _ = run("ip", &["netns", "delete", &slot.netns()], None);
            return Err(e);
        }
        Ok(slot)
    }

    /// Takes a slot back; its policy goes with the sandbox, not the slot.
    pub fn release(&self, slot: Slot) {
        if let Err(e) = self.set_policy(&slot, None) {
            // A slot that may keep someone's policy is not handed out again.
            tracing::warn!(slot = slot.index, "removing the slot's egress policy: {e}");
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            s.free.push(slot);
        }
    }

    /// Makes slots ahead of need, so that creates with internet do not pay for them.
    pub fn prefill(&self, count: usize) -> Result<()> {
        let have = self.state.lock().map(|s| s.free.len()).unwrap_or(0);
        // Hold them all before giving any back, or each acquire would reuse the last one.
        let made = (have..count).map(|_| self.acquire()).collect::<Vec<_>>();
        let mut first_error = None;
        for s in made {
            match s {
                Ok(s) => self.release(s),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    pub fn free_slots(&self) -> usize {
        self.state.lock().map(|s| s.free.len()).unwrap_or(0)
    }
}

/// Deletes every network namespace and host interface SoulBox made (by their names) whose
/// slot index is not in `keep`.
fn remove_slots_except(keep: &BTreeSet<u32>) {
    for (dir, prefix, what) in [
        ("/run/netns", NETNS_PREFIX, "netns"),
        ("/sys/class/net", HOST_IF_PREFIX, "link"),
    ] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(index) = name.strip_prefix(prefix) else {
                continue;
            };
            if !index.parse().is_ok_and(|i: u32| keep.contains(&i)) {
                let _ = run("ip", &[what, "delete", &name], None);
            }
        }
    }
}

/// Traffic control that bounds `dev` (in `netns`, if given) to `mbit` Mbit/s on the way out.
fn rate_limit(netns: Option<&str>, dev: &str, mbit: u32) -> Result<()> {
    // The bucket must hold what the link sends between two timer ticks, or the rate is
    // never reached: 10 ms worth, at least 64 KiB.
    let burst = ((mbit as u64) * 1_000_000 / 8 / 100).max(64 << 10);
    let mut args: Vec<String> = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n".into(), ns.into()]);
    }
    args.extend(
        [
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            &format!("{mbit}mbit"),
            "burst",
            &burst.to_string(),
            "latency",
            "50ms",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("tc", &args, None)
}

/// Bounds both ends of a slot's veth to `mbit` (0: removes any bound). The host's end shapes
/// what the sandbox receives, the namespace's what it sends; the namespace belongs to the
/// host, so the sandbox cannot lift either.
fn apply_rate(s: &Slot, mbit: u32) -> Result<()> {
    let (ns, host_if) = (s.netns(), s.host_if());
    if mbit == 0 {
        // Absent already on a fresh slot: nothing to undo then.
        let _ = run("tc", &["qdisc", "del", "dev", &host_if, "root"], None);
        let _ = run(
            "tc",
            &["-n", &ns, "qdisc", "del", "dev", "eth0", "root"],
            None,
        );
        return Ok(());
    }
    rate_limit(None, &host_if, mbit)?;
    rate_limit(Some(&ns), "eth0", mbit)
}

fn make_slot(s: &Slot, rate_mbit: u32) -> Result<()> {
    let (ns, host_if) = (s.netns(), s.host_if());
    let host = format!(
        "netns add {ns}\nlink add {host_if} type veth peer name eth0 netns {ns}\naddr add {}/30 dev {host_if}\nlink set {host_if} up\n",
        s.host_ip()
    );
    run("ip", &["-batch", "-"], Some(&host))?;
    let inside = format!(
        "addr add {}/30 dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via {}\n",
        s.sandbox_ip(),
        s.host_ip()
    );
    run("ip", &["-n", &ns, "-batch", "-"], Some(&inside))?;
    if rate_mbit > 0 {
        apply_rate(s, rate_mbit)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_addresses_do_not_overlap() {
        let a = Slot { index: 0 };
        let b = Slot { index: 1 };
        assert_eq!(a.host_ip(), Ipv4Addr::new(10, 231, 0, 1));
        assert_eq!(a.sandbox_ip(), Ipv4Addr::new(10, 231, 0, 2));
        assert_eq!(b.host_ip(), Ipv4Addr::new(10, 231, 0, 5));
        assert_eq!(Slot { index: 64 }.host_ip(), Ipv4Addr::new(10, 231, 1, 1));
        assert_eq!(
            Slot {
                index: MAX_SLOTS - 1
            }
            .sandbox_ip(),
            Ipv4Addr::new(10, 231, 255, 254)
        );
        assert!(b.host_if().len() <= 15 && Slot { index: MAX_SLOTS }.host_if().len() <= 15);
    }

    #[test]
    fn firewall_names_only_our_table_and_interfaces() {
        let nets = HostNets {
            v4: vec![(Ipv4Addr::new(192, 0, 2, 0), 24)],
            v6: vec![],
        };
        let r = firewall_rules(&nets, 77, Some(4100));
        assert!(r.starts_with("table inet soulbox"));
        assert!(r.contains("oifname \"sbx-*\" drop"));
        assert!(r.contains("masquerade"));
        assert!(r.contains(
            "set host_v4 { type ipv4_addr; flags interval; elements = { 192.0.2.0/24 } }"
        ));
        assert!(r.contains("set host_v6 { type ipv6_addr; flags interval; }"));
        assert!(r.contains("ct count over 77 }"));
        assert!(r.contains("set egress_ports { type inet_service; elements = { 4100 } }"));
        // The slot's policy comes before the baseline's DNS exception and refusals.
        let (vmap, private) = (
            r.find("iifname vmap @slot_filter").unwrap(),
            r.find("10.0.0.0/8").unwrap(),
        );
        assert!(vmap < private);
    }
}
