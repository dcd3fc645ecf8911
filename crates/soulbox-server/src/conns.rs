//! Connection limits. Anyone who can reach the listener can open connections without a key,
//! so they are capped in total and per client address, and the total stays below what the
//! descriptor limit allows: descriptors are kept for the streams of running sandboxes (each
//! proxied request holds a second descriptor, to the agent), the store and the runtime, and
//! `accept` never fails for want of one. New connections that send no request are closed
//! after `first_request_timeout` (see [`crate::accept_loop`]).

use crate::ServerConfig;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_ip: usize,
}

impl Limits {
    /// The configured limits, lowered to fit the descriptor limit (whose soft value is first
    /// raised to the hard one).
    pub fn from_config(cfg: &ServerConfig) -> Limits {
        Self::fit(cfg, raise_nofile())
    }

    fn fit(cfg: &ServerConfig, nofile: u64) -> Limits {
        let reserve = cfg.reserved_fds.min(nofile / 4);
        // A proxied connection holds two descriptors: the client's and the agent's.
        let budget = usize::try_from((nofile - reserve) / 2).unwrap_or(usize::MAX);
        let total = cfg.max_connections.min(budget).max(1);
        Limits {
            total,
            per_ip: cfg.max_connections_per_ip.clamp(1, total),
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in force.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// The address a connection counts against: an IPv4 address, or an IPv6 /64 (one host
/// usually holds a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Total,
    PerIp,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Open connections, counted.
#[derive(Debug)]
pub struct Slots {
    limits: Limits,
    counts: Mutex<Counts>,
}

/// One counted connection; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    key: IpAddr,
}

impl Slots {
    pub fn new(limits: Limits) -> Arc<Slots> {
        Arc::new(Slots {
            limits,
            counts: Mutex::default(),
        })
    }

    /// A slot for a connection from `ip`, if both limits allow one.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        let key = client_key(ip);
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.limits.total {
            return Err(Full::Total);
        }
        let n = c.per_ip.entry(key).or_default();
        if *n >= self.limits.per_ip {
            return Err(Full::PerIp);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            slots: Arc::clone(self),
            key,
        })
    }

    /// Connections open now (total, from `ip`).
    pub fn open(&self, ip: IpAddr) -> (usize, usize) {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let from = c.per_ip.get(&client_key(ip)).copied().unwrap_or(0);
        (c.total, from)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.slots.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.key);
            }
        }
    }
}

/// Tells a refused client why, without waiting on it (a full socket buffer just loses the
/// answer), and closes the connection.
pub fn refuse(stream: &tokio::net::TcpStream, full: Full) {
    let (status, msg) = match full {
        Full::Total => (
            "503 Service Unavailable",
            "the server has too many connections",
        ),
        Full::PerIp => (
            "429 Too Many Requests",
            "too many connections from your address",
        ),
    };
    let code = &status[..3];
    let body = format!(r#"{{"code":{code},"message":"{msg}"}}"#);
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    tracing::debug!(?full, "connection refused");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_fit_the_descriptors_and_slots_come_back() {
        let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap());
        cfg.max_connections = 100_000;
        cfg.max_connections_per_ip = 10;
        assert_eq!(
            Limits::fit(&cfg, 1024),
            Limits {
                total: 384,
                per_ip: 10
            }
        );
        assert_eq!(Limits::fit(&cfg, 20_000).total, (20_000 - 1024) / 2);
        let slots = Slots::new(Limits {
            total: 3,
            per_ip: 2,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let (s1, _s2) = (slots.take(a).unwrap(), slots.take(a).unwrap());
        assert_eq!(slots.take(a).unwrap_err(), Full::PerIp);
        let _s3 = slots.take(b).unwrap();
        assert_eq!(slots.take(b).unwrap_err(), Full::Total);
        drop(s1);
        assert_eq!(slots.open(a), (2, 1));
        let _s4 = slots.take(a).unwrap();
        // One IPv6 /64 is one client.
        let v6 = Slots::new(Limits {
            total: 10,
            per_ip: 1,
        });
        let _x = v6.take("2001:db8::1".parse().unwrap()).unwrap();
        assert_eq!(
            v6.take("2001:db8::2".parse().unwrap()).unwrap_err(),
            Full::PerIp
        );
        assert!(v6.take("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }
}
