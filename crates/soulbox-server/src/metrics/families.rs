//! The metric families and the scrape: the server-long counters and histograms, and the
//! gauges built from a snapshot of the present at each scrape.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

type One = [(&'static str, &'static str); 1];
type Two = [(&'static str, String); 2];
type Histograms = Family<One, Histogram, fn() -> Histogram>;

/// Create→ready: 5 ms (a warm-pool claim) to 30 s (a cold start on a busy host).
const CREATE_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0,
];
/// Builds: seconds to an hour.
const BUILD_BUCKETS: [f64; 11] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];
/// A sampler pass: 1 ms to 10 s (a host with thousands of sandboxes).
const PASS_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug)]
pub struct Families {
    pub creates: Family<One, Counter>,
    pub create_seconds: Histogram,
    pub kills: Family<One, Counter>,
    pub pauses: Family<One, Counter>,
    pub resumes: Family<One, Counter>,
    pub timeouts: Family<One, Counter>,
    pub proxy_requests: Family<One, Counter>,
    pub proxy_bytes: Family<One, Counter>,
    pub builds: Family<One, Counter>,
    pub build_seconds: Histograms,
    pub pool_claims: Family<Two, Counter>,
    pub sampler_seconds: Histogram,
}

/// The outcomes of API operations.
const OUTCOMES: [&str; 3] = ["ok", "client_error", "server_error"];

impl Families {
    /// Every known label value starts at 0: a series that appears only at its first event
    /// hides that event from `rate()` and `increase()`.
    pub fn new() -> Families {
        let f = Families::empty();
        for o in OUTCOMES {
            let l = [("outcome", o)];
            for c in [&f.creates, &f.kills, &f.pauses, &f.resumes] {
                let _ = c.get_or_create(&l);
            }
        }
        for a in ["kill", "pause"] {
            let _ = f.timeouts.get_or_create(&[("action", a)]);
        }
        for c in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            let _ = f.proxy_requests.get_or_create(&[("code", c)]);
        }
        for d in ["to_sandbox", "from_sandbox"] {
            let _ = f.proxy_bytes.get_or_create(&[("direction", d)]);
        }
        for o in ["ready", "failed", "timeout"] {
            let _ = f.builds.get_or_create(&[("outcome", o)]);
            let _ = f.build_seconds.get_or_create(&[("outcome", o)]);
        }
        f
    }

    fn empty() -> Families {
        Families {
            creates: Default::default(),
            create_seconds: Histogram::new(CREATE_BUCKETS),
            kills: Default::default(),
            pauses: Default::default(),
            resumes: Default::default(),
            timeouts: Default::default(),
            proxy_requests: Default::default(),
            proxy_bytes: Default::default(),
            builds: Default::default(),
            build_seconds: Family::new_with_constructor(|| Histogram::new(BUILD_BUCKETS)),
            pool_claims: Default::default(),
            sampler_seconds: Histogram::new(PASS_BUCKETS),
        }
    }
}

impl Default for Families {
    fn default() -> Self {
        Families::new()
    }
}

/// The present, read at a scrape.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// (state, template) → sandboxes.
    pub sandboxes: BTreeMap<(String, String), i64>,
    /// Template → (wanted, ready) of the warm pool.
    pub pool: BTreeMap<String, (usize, usize)>,
    /// The latest sample of each running sandbox.
    pub running: Vec<Current>,
}

#[derive(Debug)]
pub struct Current {
    pub id: String,
    pub template: String,
    pub team: String,
    pub cpus: f64,
    pub sample: super::ring::Sample,
}

type F64Gauge = Gauge<f64, AtomicU64>;
type F64Counter = Counter<f64, AtomicU64>;
type Per = [(&'static str, String); 3];

/// The Prometheus text exposition (format 0.0.4) of everything.
pub fn encode(f: &Families, snap: &Snapshot) -> String {
    let mut reg = Registry::with_prefix("soulbox");
    reg.register(
        "sandbox_creates",
        "Sandbox creates, by outcome (ok, client_error, server_error)",
        f.creates.clone(),
    );
    reg.register(
        "sandbox_create_seconds",
        "Time from a create request to its sandbox answering, of successful creates",
        f.create_seconds.clone(),
    );
    reg.register(
        "sandbox_kills",
        "Sandbox kills, by outcome",
        f.kills.clone(),
    );
    reg.register(
        "sandbox_pauses",
        "Sandbox pauses, by outcome",
        f.pauses.clone(),
    );
    reg.register(
        "sandbox_resumes",
        "Sandbox resumes, by outcome",
        f.resumes.clone(),
    );
    reg.register(
        "sandbox_timeouts",
        "Sandboxes that reached their end time, by what was done (kill, pause)",
        f.timeouts.clone(),
    );
    reg.register(
        "proxy_requests",
        "Requests forwarded to sandboxes, by status class of the answer (2xx..5xx)",
        f.proxy_requests.clone(),
    );
    reg.register(
        "proxy_bytes",
        "Body bytes forwarded, by direction (to_sandbox, from_sandbox)",
        f.proxy_bytes.clone(),
    );
    reg.register(
        "template_builds",
        "Template builds ended, by outcome (ready, failed, timeout)",
        f.builds.clone(),
    );
    reg.register(
        "template_build_seconds",
        "Duration of template builds, by outcome",
        f.build_seconds.clone(),
    );
    reg.register(
        "warm_pool_claims",
        "Creates of a template with a warm pool, by result (hit, miss)",
        f.pool_claims.clone(),
    );
    reg.register(
        "sampler_pass_seconds",
        "Duration of one pass of the per-sandbox sampler over every running sandbox",
        f.sampler_seconds.clone(),
    );

    let sandboxes = Family::<Two, Gauge>::default();
    for ((state, template), n) in &snap.sandboxes {
        sandboxes
            .get_or_create(&[("state", state.clone()), ("template", template.clone())])
            .set(*n);
    }
    reg.register(
        "sandboxes",
        "Sandboxes by state (running, paused) and template",
        sandboxes,
    );
    let (wanted, ready) = (
        Family::<[(&str, String); 1], Gauge>::default(),
        Family::<[(&str, String); 1], Gauge>::default(),
    );
    for (t, (w, r)) in &snap.pool {
        for result in ["hit", "miss"] {
            let _ = f
                .pool_claims
                .get_or_create(&[("template", t.clone()), ("result", result.into())]);
        }
        wanted
            .get_or_create(&[("template", t.clone())])
            .set(*w as i64);
        ready
            .get_or_create(&[("template", t.clone())])
            .set(*r as i64);
    }
    reg.register(
        "warm_pool_size",
        "Warm sandboxes wanted, per template",
        wanted,
    );
    reg.register(
        "warm_pool_ready",
        "Warm sandboxes ready, per template",
        ready,
    );

    let gauge = || Family::<Per, F64Gauge>::default();
    let counter = || Family::<Per, F64Counter>::default();
    let (cpu_s, cpu_pct, cores) = (counter(), gauge(), gauge());
    let (mem, mem_limit, mem_cache) = (gauge(), gauge(), gauge());
    let (disk, disk_total, rx, tx) = (gauge(), gauge(), counter(), counter());
    for c in &snap.running {
        let l: Per = [
            ("sandbox_id", c.id.clone()),
            ("template", c.template.clone()),
            ("team_id", c.team.clone()),
        ];
        let s = &c.sample;
        cpu_s.get_or_create(&l).inc_by(s.cpu_ns as f64 / 1e9);
        cpu_pct.get_or_create(&l).set(s.cpu_pct as f64);
        cores.get_or_create(&l).set(c.cpus);
        mem.get_or_create(&l).set(s.mem_used as f64);
        mem_limit.get_or_create(&l).set(s.mem_total as f64);
        mem_cache.get_or_create(&l).set(s.mem_cache as f64);
        disk.get_or_create(&l).set(s.disk_used as f64);
        disk_total.get_or_create(&l).set(s.disk_total as f64);
        rx.get_or_create(&l).inc_by(s.net_rx as f64);
        tx.get_or_create(&l).inc_by(s.net_tx as f64);
    }
    let per = "of each running sandbox, at its latest sample";
    reg.register("sandbox_cpu_seconds", format!("CPU time used {per}"), cpu_s);
    reg.register(
        "sandbox_cpu_used_percent",
        format!("Percent of the CPU allotment used over the last sample interval, {per}"),
        cpu_pct,
    );
    reg.register("sandbox_cpu_cores", format!("CPU allotment {per}"), cores);
    reg.register(
        "sandbox_memory_used_bytes",
        format!("Memory used {per}"),
        mem,
    );
    reg.register(
        "sandbox_memory_limit_bytes",
        format!("Memory limit {per}"),
        mem_limit,
    );
    reg.register(
        "sandbox_memory_cache_bytes",
        format!("Page cache {per}"),
        mem_cache,
    );
    reg.register("sandbox_disk_used_bytes", format!("Disk used {per}"), disk);
    reg.register(
        "sandbox_disk_total_bytes",
        format!("Disk size {per}"),
        disk_total,
    );
    reg.register(
        "sandbox_network_receive_bytes",
        format!("Bytes received {per}"),
        rx,
    );
    reg.register(
        "sandbox_network_transmit_bytes",
        format!("Bytes sent {per}"),
        tx,
    );

    let mut out = String::new();
    // Writing to a String does not fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &reg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_has_every_family_and_only_present_sandboxes() {
        let f = Families::new();
        f.creates.get_or_create(&[("outcome", "ok")]).inc();
        f.create_seconds.observe(0.2);
        let mut snap = Snapshot::default();
        snap.sandboxes.insert(("running".into(), "base".into()), 2);
        snap.running.push(Current {
            id: "sbx1".into(),
            template: "base".into(),
            team: "t1".into(),
            cpus: 2.0,
            sample: super::super::ring::Sample {
                at_ms: 0,
                cpu_pct: 42.5,
                cpu_count: 2,
                cpu_ns: 1_500_000_000,
                mem_used: 1024,
                mem_total: 4096,
                mem_cache: 10,
                disk_used: 5,
                disk_total: 50,
                net_rx: 7,
                net_tx: 8,
            },
        });
        let text = encode(&f, &snap);
        for line in [
            "soulbox_sandbox_creates_total{outcome=\"ok\"} 1",
            "soulbox_sandbox_create_seconds_count 1",
            "soulbox_sandbox_create_seconds_bucket{le=\"0.25\"} 1",
            "soulbox_sandboxes{state=\"running\",template=\"base\"} 2",
            "soulbox_sandbox_cpu_seconds_total{sandbox_id=\"sbx1\",template=\"base\",team_id=\"t1\"} 1.5",
            "soulbox_sandbox_cpu_used_percent{sandbox_id=\"sbx1\",template=\"base\",team_id=\"t1\"} 42.5",
            "soulbox_sandbox_network_transmit_bytes_total{sandbox_id=\"sbx1\",template=\"base\",team_id=\"t1\"} 8",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // The same families with no sandbox: no per-sandbox series left behind; the
        // counters are there from the start, at 0.
        let text = encode(&f, &Snapshot::default());
        assert!(!text.contains("sbx1"), "{text}");
        for line in [
            "soulbox_sandbox_kills_total{outcome=\"server_error\"} 0",
            "soulbox_template_builds_total{outcome=\"timeout\"} 0",
            "soulbox_template_build_seconds_count{outcome=\"ready\"} 0",
            "soulbox_proxy_bytes_total{direction=\"to_sandbox\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
