//! A sandbox's egress policy as the firewall enforces it: addresses allowed and denied, the
//! resolvers it may query, and the TCP ports whose connections go to the egress proxy (which
//! enforces names: TLS SNI, HTTP `Host`). Names are the proxy's business; the firewall only
//! ever sees addresses.
//!
//! Each slot with a policy has two chains of its own in the `inet soulbox` table, `f<N>`
//! (forward: every packet the sandbox sends, not only new flows, so a policy change cuts
//! open connections) and `n<N>` (nat prerouting: the redirect to the proxy), reached through
//! the verdict maps `slot_filter` and `slot_nat` keyed by the slot's host interface. A
//! policy is replaced in one nft transaction: no packet sees half of it.
//!
//! The per-slot chain only ever refuses or returns: what it lets through still meets the
//! table's own rules (no private ranges, no host networks), so a sandbox's policy can
//! narrow the operator's baseline, never widen it.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotPolicy {
    /// Addresses reachable whatever `deny` says (allow beats deny).
    pub allow: Vec<IpNet>,
    /// Addresses refused (unless in `allow`).
    pub deny: Vec<IpNet>,
    /// The only resolvers the sandbox may send DNS (port 53, UDP and TCP) to.
    pub dns: Vec<IpAddr>,
    /// TCP ports whose connections go to the egress proxy instead (empty: none do).
    pub proxy_ports: Vec<u16>,
}

fn list<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

impl SlotPolicy {
    fn v4(nets: &[IpNet]) -> String {
        list(nets.iter().filter(|n| matches!(n, IpNet::V4(_))))
    }
    fn v6(nets: &[IpNet]) -> String {
        list(nets.iter().filter(|n| matches!(n, IpNet::V6(_))))
    }

    /// The nft commands that make `policy` the one of the slot with host interface `ifname`
    /// and chains `f{index}`/`n{index}`, the proxy listening on `proxy_port` (`None`: not
    /// yet; proxied ports are then refused). `had` says whether the maps hold the slot
    /// already (an element cannot be added twice, nor deleted when absent).
    pub(super) fn script(
        policy: Option<&SlotPolicy>,
        index: u32,
        ifname: &str,
        had: bool,
        proxy_port: Option<u16>,
    ) -> String {
        let t = "inet soulbox";
        let (f, n) = (format!("f{index}"), format!("n{index}"));
        let mut s = String::new();
        if had {
            s.push_str(&format!(
                "delete element {t} slot_filter {{ \"{ifname}\" }}\ndelete element {t} slot_nat {{ \"{ifname}\" }}\n"
            ));
        }
        s.push_str(&format!(
            "add chain {t} {f}\nflush chain {t} {f}\nadd chain {t} {n}\nflush chain {t} {n}\n"
        ));
        let Some(p) = policy else {
            s.push_str(&format!("delete chain {t} {f}\ndelete chain {t} {n}\n"));
            return s;
        };
        let rule = |s: &mut String, chain: &str, r: String| {
            s.push_str(&format!("add rule {t} {chain} {r}\n"));
        };
        // DNS: the listed resolvers only, whatever the address rules below say.
        let dns4 = list(p.dns.iter().filter(|a| a.is_ipv4()));
        let dns6 = list(p.dns.iter().filter(|a| a.is_ipv6()));
        if !dns4.is_empty() {
            rule(
                &mut s,
                &f,
                format!("meta l4proto {{ tcp, udp }} th dport 53 ip daddr {{ {dns4} }} return"),
            );
        }
        if !dns6.is_empty() {
            rule(
                &mut s,
                &f,
                format!("meta l4proto {{ tcp, udp }} th dport 53 ip6 daddr {{ {dns6} }} return"),
            );
        }
        rule(
            &mut s,
            &f,
            "meta l4proto tcp th dport 53 reject with tcp reset".into(),
        );
        rule(
            &mut s,
            &f,
            "meta l4proto udp th dport 53 reject with icmpx admin-prohibited".into(),
        );
        let (a4, a6) = (Self::v4(&p.allow), Self::v6(&p.allow));
        if !a4.is_empty() {
            rule(&mut s, &f, format!("ip daddr {{ {a4} }} return"));
        }
        if !a6.is_empty() {
            rule(&mut s, &f, format!("ip6 daddr {{ {a6} }} return"));
        }
        for (fam, d) in [("ip", Self::v4(&p.deny)), ("ip6", Self::v6(&p.deny))] {
            if !d.is_empty() {
                rule(
                    &mut s,
                    &f,
                    format!("{fam} daddr {{ {d} }} meta l4proto tcp reject with tcp reset"),
                );
                rule(
                    &mut s,
                    &f,
                    format!("{fam} daddr {{ {d} }} reject with icmpx admin-prohibited"),
                );
            }
        }
        if !p.proxy_ports.is_empty() {
            let ports = list(p.proxy_ports.iter());
            match proxy_port {
                Some(port) => rule(
                    &mut s,
                    &n,
                    format!("meta nfproto ipv4 tcp dport {{ {ports} }} redirect to :{port}"),
                ),
                // No proxy to enforce names yet: those connections fail rather than pass.
                None => rule(
                    &mut s,
                    &f,
                    format!("tcp dport {{ {ports} }} reject with tcp reset"),
                ),
            }
        }
        s.push_str(&format!(
            "add element {t} slot_filter {{ \"{ifname}\" : jump {f} }}\nadd element {t} slot_nat {{ \"{ifname}\" : jump {n} }}\n"
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_allow_before_deny_and_the_redirect() {
        let p = SlotPolicy {
            allow: vec![
                "198.51.100.10/32".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            deny: vec!["0.0.0.0/0".parse().unwrap()],
            dns: vec!["198.51.100.53".parse().unwrap()],
            proxy_ports: vec![80, 443],
        };
        let s = SlotPolicy::script(Some(&p), 7, "sbx-7", false, Some(4000));
        let allow = s.find("ip daddr { 198.51.100.10/32 } return").unwrap();
        let deny = s
            .find("ip daddr { 0.0.0.0/0 } meta l4proto tcp reject")
            .unwrap();
        let dns = s
            .find("th dport 53 ip daddr { 198.51.100.53 } return")
            .unwrap();
        let dns_block = s.find("udp th dport 53 reject").unwrap();
        assert!(dns < dns_block && dns_block < allow && allow < deny, "{s}");
        assert!(s.contains("ip6 daddr { 2001:db8::/32 } return"));
        assert!(s.contains(
            "add rule inet soulbox n7 meta nfproto ipv4 tcp dport { 80, 443 } redirect to :4000"
        ));
        assert!(s.contains("add element inet soulbox slot_filter { \"sbx-7\" : jump f7 }"));
        assert!(!s.contains("delete element"));
        // No proxy yet: the proxied ports are refused, not let through.
        let s = SlotPolicy::script(Some(&p), 7, "sbx-7", true, None);
        assert!(s.starts_with("delete element inet soulbox slot_filter { \"sbx-7\" }"));
        assert!(s.contains("add rule inet soulbox f7 tcp dport { 80, 443 } reject"));
        // Removing it deletes the slot's chains and map entries.
        let s = SlotPolicy::script(None, 7, "sbx-7", true, Some(4000));
        assert!(s.contains("delete chain inet soulbox f7"));
        assert!(!s.contains("add element"));
    }
}
