//! Egress control: the policy a sandbox's network configuration makes ([`policy`]), and
//! the egress proxy ([`proxy`]) that the firewall sends the sandbox's HTTP and HTTPS
//! connections to when a policy names hosts. The proxy decides on the name a connection
//! carries (TLS SNI, HTTP `Host`), connects only to what that name resolves to through the
//! sandbox's allowed resolvers, and sets the headers of the sandbox's rules — terminating
//! TLS with the sandbox's own CA ([`tls`]) for the hosts that have rules, so that a secret
//! is added outside the sandbox and never enters it.

pub mod peek;
pub mod policy;
pub mod proxy;
pub mod tls;

use policy::Policy;
use soulbox_runtime::ns::NsBackend;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use tokio::sync::{watch, Semaphore};

/// One sandbox, as the proxy knows it.
pub struct Sandbox {
    pub team: String,
    /// Its policy; connections watch it and end when a new one refuses them.
    pub policy: watch::Sender<Arc<Policy>>,
    /// Its CA, for hosts with header rules.
    pub ca: RwLock<Option<Arc<tls::SandboxCa>>>,
    /// Connections through the proxy at once.
    pub conns: Arc<Semaphore>,
    resolver: RwLock<Option<(Vec<IpAddr>, Arc<hickory_resolver::TokioResolver>)>>,
}

impl Sandbox {
    /// A resolver that asks the policy's resolvers only (made again when they change).
    fn resolver(&self, dns: &[IpAddr]) -> Arc<hickory_resolver::TokioResolver> {
        if let Some((d, r)) = self.resolver.read().ok().and_then(|g| g.clone()) {
            if d == dns {
                return r;
            }
        }
        use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
        let group = NameServerConfigGroup::from_ips_clear(dns, 53, true);
        let mut opts = ResolverOpts::default();
        opts.timeout = std::time::Duration::from_secs(3);
        opts.attempts = 2;
        let r = Arc::new(
            hickory_resolver::Resolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], group),
                hickory_resolver::name_server::TokioConnectionProvider::default(),
            )
            .with_options(opts)
            .build(),
        );
        if let Ok(mut g) = self.resolver.write() {
            *g = Some((dns.to_vec(), r.clone()));
        }
        r
    }
}

pub struct Egress {
    backend: Arc<NsBackend>,
    store: crate::store::Store,
    sandboxes: RwLock<HashMap<String, Arc<Sandbox>>>,
    upstream_tls: Arc<rustls::ClientConfig>,
    max_conns: usize,
}

impl Egress {
    pub fn new(
        backend: Arc<NsBackend>,
        store: crate::store::Store,
        trust: &[std::path::PathBuf],
    ) -> std::io::Result<Arc<Egress>> {
        let max_conns = backend.network().limits().flows_per_sandbox as usize;
        Ok(Arc::new(Egress {
            backend,
            store,
            sandboxes: RwLock::default(),
            upstream_tls: tls::upstream_config(trust)?,
            max_conns,
        }))
    }

    /// Starts the proxy on a port of its own and points the firewall at it.
    pub async fn start(self: &Arc<Self>) -> std::io::Result<u16> {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", 0)).await?;
        let port = listener.local_addr()?.port();
        self.backend
            .network()
            .set_proxy_port(port)
            .map_err(std::io::Error::other)?;
        tokio::spawn(proxy::serve(self.clone(), listener));
        tracing::info!(port, "egress proxy listening");
        Ok(port)
    }

    /// Knows sandbox `id` with `policy` from now on (or with a new one: see [`Self::update`]).
    pub fn register(&self, id: &str, team: &str, policy: Policy, ca: Option<Arc<tls::SandboxCa>>) {
        let s = Arc::new(Sandbox {
            team: team.to_string(),
            policy: watch::Sender::new(Arc::new(policy)),
            ca: RwLock::new(ca),
            conns: Arc::new(Semaphore::new(self.max_conns)),
            resolver: RwLock::default(),
        });
        if let Ok(mut m) = self.sandboxes.write() {
            m.insert(id.to_string(), s);
        }
    }

    /// Replaces the policy of a known sandbox: its connections that the new one refuses end.
    pub fn update(&self, id: &str, team: &str, policy: Policy, ca: Option<Arc<tls::SandboxCa>>) {
        match self.get(id) {
            Some(s) => {
                if let Ok(mut c) = s.ca.write() {
                    if ca.is_some() {
                        *c = ca;
                    }
                }
                s.policy.send_replace(Arc::new(policy));
            }
            None => self.register(id, team, policy, ca),
        }
    }

    pub fn forget(&self, id: &str) {
        let gone = self.sandboxes.write().ok().and_then(|mut m| m.remove(id));
        if let Some(s) = gone {
            // Ends its connections: a policy that refuses everything.
            s.policy.send_replace(Arc::new(Policy {
                deny_nets: vec![
                    "0.0.0.0/0".parse().expect("valid"),
                    "::/0".parse().expect("valid"),
                ],
                ..Policy::default()
            }));
        }
    }

    fn get(&self, id: &str) -> Option<Arc<Sandbox>> {
        self.sandboxes.read().ok()?.get(id).cloned()
    }

    /// The sandbox behind a slot's address.
    fn sandbox_at(&self, ip: IpAddr) -> Option<(String, Arc<Sandbox>)> {
        let IpAddr::V4(v4) = ip else { return None };
        let base = u32::from(std::net::Ipv4Addr::new(10, 231, 0, 0));
        let off = u32::from(v4).checked_sub(base)?;
        if off >= 1 << 16 || off % 4 != 2 {
            return None;
        }
        let id = self.backend.sandbox_of_slot(off / 4)?;
        let s = self.get(&id)?;
        Some((id, s))
    }

    /// Whether the host may connect to `ip` on a sandbox's behalf: the firewall's baseline
    /// (no loopback, private, link-local, multicast or reserved ranges, none of the host's
    /// own networks, no other sandbox), which a connection from the host itself would not
    /// meet otherwise.
    fn baseline_allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let nets = self.backend.network().host_nets();
        match ip {
            IpAddr::V4(a) => {
                let o = a.octets();
                let reserved = a.is_unspecified()
                    || a.is_loopback()
                    || a.is_private()
                    || a.is_link_local()
                    || a.is_multicast()
                    || a.is_broadcast()
                    || o[0] == 0
                    || o[0] >= 240
                    || (o[0] == 100 && (o[1] & 0xc0) == 64);
                !reserved
                    && !nets
                        .v4
                        .iter()
                        .any(|(n, l)| ipnet::Ipv4Net::new(*n, *l).is_ok_and(|net| net.contains(&a)))
            }
            IpAddr::V6(a) => {
                let s = a.segments();
                let reserved = a.is_unspecified()
                    || a.is_loopback()
                    || a.is_multicast()
                    || (s[0] & 0xfe00) == 0xfc00
                    || (s[0] & 0xffc0) == 0xfe80;
                !reserved
                    && !nets
                        .v6
                        .iter()
                        .any(|(n, l)| ipnet::Ipv6Net::new(*n, *l).is_ok_and(|net| net.contains(&a)))
            }
        }
    }
}
