//! A sandbox's network configuration in E2B's shape (`network` on create, the body of `PUT
//! /sandboxes/{id}/network`; spec §2.3, §2.8), checked and turned into the policy the
//! firewall and the egress proxy enforce.
//!
//! Semantics: `allowOut` holds CIDRs, IPs, domains and `*.domain` wildcards, `denyOut` CIDRs
//! and IPs; allow beats deny; an address in neither is allowed. Domains are decided on what a
//! connection names (TLS SNI, HTTP `Host`), on the HTTP and HTTPS ports, by the egress proxy;
//! the proxy then connects only to what that name resolves to through the allowed resolvers.
//! `rules` set headers on requests to a host (a rule grants no access by itself).

use crate::error::{ApiError, ApiResult};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use soulbox_runtime::network::SlotPolicy;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Bounds on what one configuration may hold: it is rendered into the firewall.
pub const MAX_ENTRIES: usize = 256;
pub const MAX_RULE_HEADERS: usize = 32;
/// Ports always decided by name: HTTP and HTTPS.
pub const NAMED_PORTS: [u16; 2] = [80, 443];

/// The configuration as the API takes it and gives it back (`network` in info).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_public_traffic: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    /// Not supported: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<serde_json::Value>,
    /// Not supported: refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_request_host: Option<String>,
    /// HTTPS to the sandbox's own ports behind its URLs: not supported, refused when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_ports: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<BTreeMap<String, Vec<Rule>>>,
    /// `allow_internet_access` as given with it (kept so that the policy can be made again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    #[serde(default)]
    pub transform: Option<Transform>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transform {
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
}

/// A host name as `allowOut` and `rules` give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    /// `*.example.com`: any name below `example.com` (not `example.com` itself).
    Below(String),
}

impl Pattern {
    fn parse(s: &str) -> Option<Pattern> {
        let s = s.trim_end_matches('.').to_ascii_lowercase();
        let (below, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, s),
        };
        if !valid_name(&name) || (below && !name.contains('.') && name.len() < 2) {
            return None;
        }
        Some(if below {
            Pattern::Below(name)
        } else {
            Pattern::Exact(name)
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(n) => n == name,
            Pattern::Below(n) => name
                .strip_suffix(n.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }

    /// How closely it names a host: an exact name beats any wildcard, a longer wildcard a
    /// shorter one.
    fn specificity(&self) -> usize {
        match self {
            Pattern::Exact(_) => usize::MAX,
            Pattern::Below(n) => n.len(),
        }
    }
}

/// A DNS name of letters, digits, hyphens and dots (no IP address: those are CIDRs).
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.parse::<IpAddr>().is_err()
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && n.bytes().any(|b| b.is_ascii_alphabetic())
}

/// A header value: literal text and `${e2b.secrets.NAME}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Secret(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRule {
    pub pattern: Pattern,
    /// Header name (lower case) → value template.
    pub headers: Vec<(String, Vec<Piece>)>,
}

/// What the firewall and the proxy enforce for one sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub allow_nets: Vec<IpNet>,
    pub deny_nets: Vec<IpNet>,
    pub allow_names: Vec<Pattern>,
    /// Resolvers the sandbox may query.
    pub dns: Vec<IpAddr>,
    /// Resolvers the proxy resolves allowed names with: the listed ones, else the
    /// operator's (with `dnsServers: []` the sandbox reaches none, names still work).
    pub proxy_dns: Vec<IpAddr>,
    pub rules: Vec<HeaderRule>,
}

fn bad<T>(msg: String) -> ApiResult<T> {
    Err(ApiError::BadRequest(format!("invalid network: {msg}")))
}

fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .map(|n| n.trunc())
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A secret's name as `/secrets` accepts it: 1-64 of `[A-Za-z0-9_.-]`.
fn secret_name_ok(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Splits a header value template into text and secret references.
fn parse_template(v: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = v;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            out.push(Piece::Text(rest[..start].to_string()));
        }
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| "an unclosed ${…} placeholder".to_string())?;
        let inner = &rest[start + 2..start + end];
        match inner.strip_prefix("e2b.secrets.") {
            Some(name) if secret_name_ok(name) => out.push(Piece::Secret(name.to_string())),
            _ => {
                return Err(format!(
                    "unknown placeholder ${{{inner}}} (only ${{e2b.secrets.NAME}} is supported)"
                ))
            }
        }
        rest = &rest[start + end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

impl NetworkConfig {
    /// Whether it asks for anything beyond the baseline (an empty object does not).
    pub fn is_empty(&self) -> bool {
        let none = |v: &Option<Vec<String>>| v.as_ref().is_none_or(|v| v.is_empty());
        none(&self.allow_out)
            && none(&self.deny_out)
            && self.dns_servers.is_none()
            && self.rules.as_ref().is_none_or(|r| r.is_empty())
            && self.https_ports.as_ref().is_none_or(|p| p.is_empty())
    }

    /// Checks it and makes the policy. `internet: false` (`allow_internet_access`) denies
    /// every address not allowed; `default_dns` are the resolvers when none are listed.
    pub fn policy(&self, internet: bool, default_dns: &[IpAddr]) -> ApiResult<Policy> {
        if self.egress_proxy.as_ref().is_some_and(|v| !v.is_null()) {
            return bad("egressProxy is not supported by this server".into());
        }
        if self.mask_request_host.is_some() {
            return bad("maskRequestHost is not supported by this server".into());
        }
        let mut p = Policy::default();
        let allow = self.allow_out.as_deref().unwrap_or_default();
        let deny = self.deny_out.as_deref().unwrap_or_default();
        if allow.len() + deny.len() > MAX_ENTRIES {
            return bad(format!(
                "more than {MAX_ENTRIES} allowOut and denyOut entries"
            ));
        }
        for a in allow {
            if let Some(n) = parse_net(a) {
                p.allow_nets.push(n);
            } else if let Some(pat) = Pattern::parse(a) {
                p.allow_names.push(pat);
            } else {
                return bad(format!(
                    "allowOut entry {a:?} is neither a CIDR, an IP address, a domain nor *.domain"
                ));
            }
        }
        for d in deny {
            match parse_net(d) {
                Some(n) => p.deny_nets.push(n),
                None => {
                    return bad(format!(
                        "denyOut entry {d:?} is not a CIDR or an IP address (domains can only be allowed)"
                    ))
                }
            }
        }
        if !internet {
            for n in ["0.0.0.0/0", "::/0"] {
                p.deny_nets.push(n.parse().expect("valid"));
            }
        }
        match self.dns_servers.as_deref() {
            None => p.dns = default_dns.to_vec(),
            Some(dns) => {
                if dns.len() > 10 {
                    return bad("more than 10 dnsServers".into());
                }
                for d in dns {
                    match d.trim().parse::<IpAddr>() {
                        Ok(a) => p.dns.push(a),
                        Err(_) => {
                            return bad(format!("dnsServers entry {d:?} is not an IP address"))
                        }
                    }
                }
            }
        }
        p.proxy_dns = if p.dns.is_empty() {
            default_dns.to_vec()
        } else {
            p.dns.clone()
        };
        if self.https_ports.as_ref().is_some_and(|p| !p.is_empty()) {
            return bad(
                "httpsPorts (HTTPS to the sandbox's own ports) is not supported by this server"
                    .into(),
            );
        }
        for (host, rules) in self.rules.iter().flatten() {
            let pattern = Pattern::parse(host).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "invalid network: rules key {host:?} is not a domain or *.domain"
                ))
            })?;
            let mut headers = Vec::new();
            for r in rules {
                for (name, value) in r.transform.iter().flat_map(|t| t.headers.iter().flatten()) {
                    if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return bad(format!("rules for {host:?}: {name:?} is not a header name"));
                    }
                    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                        return bad(format!(
                            "rules for {host:?}: the value of {name:?} holds a line break"
                        ));
                    }
                    let pieces = parse_template(value).map_err(|e| {
                        ApiError::BadRequest(format!(
                            "invalid network: rules for {host:?}, header {name:?}: {e}"
                        ))
                    })?;
                    headers.push((name.to_ascii_lowercase(), pieces));
                }
            }
            if headers.len() > MAX_RULE_HEADERS {
                return bad(format!(
                    "rules for {host:?}: more than {MAX_RULE_HEADERS} headers"
                ));
            }
            p.rules.push(HeaderRule { pattern, headers });
        }
        if p.rules.len() > MAX_ENTRIES {
            return bad(format!("more than {MAX_ENTRIES} rules"));
        }
        Ok(p)
    }
}

impl Policy {
    /// The secrets its header rules name.
    pub fn secret_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .rules
            .iter()
            .flat_map(|r| r.headers.iter().flat_map(|(_, p)| p.iter()))
            .filter_map(|p| match p {
                Piece::Secret(s) => Some(s.as_str()),
                Piece::Text(_) => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether the proxy has anything to decide (names to allow, headers to set).
    pub fn needs_proxy(&self) -> bool {
        !self.allow_names.is_empty() || !self.rules.is_empty()
    }

    /// What the firewall enforces: addresses, resolvers, and the ports sent to the proxy.
    pub fn slot_policy(&self) -> SlotPolicy {
        SlotPolicy {
            allow: self.allow_nets.clone(),
            deny: self.deny_nets.clone(),
            dns: self.dns.clone(),
            proxy_ports: if self.needs_proxy() {
                NAMED_PORTS.to_vec()
            } else {
                vec![]
            },
        }
    }

    /// Whether the policy lets a connection to `ip` through (the baseline aside).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow_nets.iter().any(|n| n.contains(&ip))
            || !self.deny_nets.iter().any(|n| n.contains(&ip))
    }

    pub fn allows_name(&self, name: &str) -> bool {
        self.allow_names.iter().any(|p| p.matches(name))
    }

    /// The header rule for `name`: an exact name's, else the longest matching wildcard's.
    pub fn rule_for(&self, name: &str) -> Option<&HeaderRule> {
        self.rules
            .iter()
            .filter(|r| r.pattern.matches(name))
            .max_by_key(|r| r.pattern.specificity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: serde_json::Value) -> NetworkConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn allow_beats_deny_and_names_go_to_the_proxy() {
        let c = cfg(serde_json::json!({
            "allowOut": ["pypi.org", "*.example.com", "198.51.100.0/24", "2001:db8::1"],
            "denyOut": ["0.0.0.0/0"],
            "dnsServers": ["198.51.100.53"]
        }));
        let p = c.policy(true, &[]).unwrap();
        assert!(p.allows_ip("198.51.100.7".parse().unwrap()));
        assert!(!p.allows_ip("203.0.113.1".parse().unwrap()));
        assert!(!p.allows_ip("::ffff:203.0.113.1".parse().unwrap()));
        assert!(p.allows_ip("2001:db8::1".parse().unwrap()), "v6 not denied");
        assert!(p.allows_name("pypi.org") && !p.allows_name("evil.pypi.org"));
        assert!(p.allows_name("a.example.com") && p.allows_name("a.b.example.com"));
        assert!(!p.allows_name("example.com") && !p.allows_name("badexample.com"));
        let s = p.slot_policy();
        assert_eq!(s.proxy_ports, vec![80, 443]);
        assert_eq!(s.dns, vec!["198.51.100.53".parse::<IpAddr>().unwrap()]);
        // No names, no rules: nothing for the proxy.
        let p = cfg(serde_json::json!({"denyOut": ["10.0.0.0/8"]}))
            .policy(true, &["1.1.1.1".parse().unwrap()])
            .unwrap();
        assert!(p.slot_policy().proxy_ports.is_empty());
        assert_eq!(p.dns, vec!["1.1.1.1".parse::<IpAddr>().unwrap()]);
        // allow_internet_access=false: everything not allowed is denied.
        let p = cfg(serde_json::json!({"allowOut": ["1.1.1.1"]}))
            .policy(false, &[])
            .unwrap();
        assert!(
            p.allows_ip("1.1.1.1".parse().unwrap()) && !p.allows_ip("8.8.8.8".parse().unwrap())
        );
        assert!(!p.allows_ip("2001:db8::2".parse().unwrap()));
    }

    #[test]
    fn bad_entries_are_refused_with_what_is_wrong() {
        for (json, says) in [
            (
                serde_json::json!({"allowOut": ["10.0.0.0/33"]}),
                "10.0.0.0/33",
            ),
            (
                serde_json::json!({"allowOut": ["exa mple.com"]}),
                "exa mple.com",
            ),
            (serde_json::json!({"allowOut": ["*.*.com"]}), "*.*.com"),
            (
                serde_json::json!({"denyOut": ["example.com"]}),
                "domains can only be allowed",
            ),
            (
                serde_json::json!({"dnsServers": ["dns.google"]}),
                "dns.google",
            ),
            (
                serde_json::json!({"rules": {"api.test": [{"transform": {"headers": {"X": "${e2b.identity.tokens.a}"}}}]}}),
                "unknown placeholder",
            ),
            (
                serde_json::json!({"rules": {"api.test": [{"transform": {"headers": {"X": "${e2b.secrets.A"}}}]}}),
                "unclosed",
            ),
            (
                serde_json::json!({"rules": {"api.test": [{"transform": {"headers": {"Bad Name": "v"}}}]}}),
                "header name",
            ),
            (serde_json::json!({"rules": {"1.2.3.4": []}}), "rules key"),
            (
                serde_json::json!({"egressProxy": {"address": "x:1080"}}),
                "egressProxy",
            ),
        ] {
            let e = cfg(json.clone()).policy(true, &[]).unwrap_err().to_string();
            assert!(e.contains(says), "{json}: {e}");
        }
    }

    #[test]
    fn an_exact_rule_beats_the_longest_wildcard() {
        let c = cfg(serde_json::json!({"rules": {
            "*.test": [{"transform": {"headers": {"X-A": "wide"}}}],
            "*.api.test": [{"transform": {"headers": {"X-A": "narrow"}}}],
            "v1.api.test": [{"transform": {"headers": {"Authorization": "Bearer ${e2b.secrets.KEY}"}}}]
        }}));
        let p = c.policy(true, &[]).unwrap();
        let h = |n: &str| p.rule_for(n).map(|r| r.headers[0].1.clone());
        assert_eq!(
            h("v1.api.test").unwrap(),
            vec![Piece::Text("Bearer ".into()), Piece::Secret("KEY".into())]
        );
        assert_eq!(
            h("v2.api.test").unwrap(),
            vec![Piece::Text("narrow".into())]
        );
        assert_eq!(h("x.test").unwrap(), vec![Piece::Text("wide".into())]);
        assert!(h("test").is_none());
        assert_eq!(p.secret_names(), vec!["KEY"]);
        assert!(p.needs_proxy() && p.allow_names.is_empty());
    }
}
