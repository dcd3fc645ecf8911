//! The rings of every live sandbox, and the signal the streams wait on.

use super::ring::{cpu_pct, Reading, Ring, Sample};
use soulbox_runtime::SandboxStats;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

/// A live sandbox as monitoring sees it (a running or paused store record).
#[derive(Debug, Clone)]
pub struct Live {
    pub id: String,
    pub team: String,
    pub template: String,
    pub state: String,
    pub cpu_millis: i64,
}

impl Live {
    /// The summary of a sandbox's store record.
    pub fn of(r: &crate::store::SandboxRecord) -> Live {
        Live {
            id: r.id.clone(),
            team: r.team_id.clone(),
            template: r.template.clone(),
            state: r.state.clone(),
            cpu_millis: r.cpu_millis,
        }
    }

    /// Its CPU allotment in CPUs; with none recorded, the host's.
    pub fn cpus(&self) -> f64 {
        if self.cpu_millis > 0 {
            self.cpu_millis as f64 / 1000.0
        } else {
            // Read once: it reads the process's cgroup files each time.
            static HOST: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
            *HOST.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()) as f64)
        }
    }
}

#[derive(Debug)]
pub struct Entry {
    pub ring: Ring,
    pub template: String,
    pub team: String,
    pub cpus: f64,
    pub running: bool,
}

#[derive(Debug)]
pub struct Samples {
    /// Never held across an await.
    inner: Mutex<HashMap<String, Entry>>,
    cap: usize,
    pub interval: Duration,
    /// Bumped after each pass and each kill: streams look at their sandbox then.
    pass: tokio::sync::watch::Sender<u64>,
}

/// A sample from one reading of a sandbox, its percent over the time since `before`.
pub fn sample(before: Reading, at_ms: i64, s: &SandboxStats, cpus: f64) -> Sample {
    let now = Reading {
        at_ms,
        cpu_ns: s.cgroup.cpu_usage_ns,
    };
    Sample {
        at_ms,
        cpu_pct: cpu_pct(before, now, cpus),
        cpu_count: (cpus.ceil() as u32).max(1),
        cpu_ns: s.cgroup.cpu_usage_ns,
        mem_used: s.cgroup.memory_bytes,
        mem_total: s.cgroup.memory_limit,
        mem_cache: s.cgroup.memory_cache,
        disk_used: s.disk_used,
        disk_total: s.disk_total,
        net_rx: s.net_rx_bytes,
        net_tx: s.net_tx_bytes,
    }
}

impl Samples {
    pub fn new(interval: Duration, retention: Duration) -> Samples {
        let interval = interval.max(Duration::from_millis(100));
        let cap = (retention.as_millis() / interval.as_millis()).clamp(1, 1 << 20) as usize;
        Samples {
            inner: Mutex::new(HashMap::new()),
            cap,
            interval,
            pass: tokio::sync::watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one pass: `live` is every live sandbox, `read` the readings of the running
    /// ones (`None` where the runtime had none), each with its time and the time its
    /// counter started from. Sandboxes no longer live are dropped.
    pub fn record(&self, live: &[Live], read: Vec<(String, i64, i64, SandboxStats)>) {
        {
            let mut m = self.lock();
            let ids: HashSet<&str> = live.iter().map(|l| l.id.as_str()).collect();
            m.retain(|id, _| ids.contains(id.as_str()));
            for l in live {
                let e = m.entry(l.id.clone()).or_insert_with(|| Entry {
                    ring: Ring::new(self.cap),
                    template: String::new(),
                    team: String::new(),
                    cpus: 1.0,
                    running: false,
                });
                e.running = l.state == "running";
                if !e.running {
                    e.ring.last = None;
                }
                if e.template != l.template {
                    e.template.clone_from(&l.template);
                }
                if e.team != l.team {
                    e.team.clone_from(&l.team);
                }
                e.cpus = l.cpus();
            }
            for (id, at_ms, created_ms, stats) in read {
                let Some(e) = m.get_mut(&id).filter(|e| e.running) else {
                    continue;
                };
                let before = e.ring.last.unwrap_or(Reading {
                    at_ms: created_ms,
                    cpu_ns: 0,
                });
                let s = sample(before, at_ms, &stats, e.cpus);
                e.ring.push(s);
            }
        }
        self.notify();
    }

    /// Drops a killed sandbox's samples and tells its streams.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
        self.notify();
    }

    pub fn notify(&self) {
        self.pass.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.pass.subscribe()
    }

    /// Runs `f` on a sandbox's entry, if it has one.
    pub fn with<T>(&self, id: &str, f: impl FnOnce(&Entry) -> T) -> Option<T> {
        self.lock().get(id).map(f)
    }

    /// The latest sample of each running sandbox, with its labels.
    pub fn current(&self) -> Vec<super::families::Current> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.running)
            .filter_map(|(id, e)| {
                Some(super::families::Current {
                    id: id.clone(),
                    template: e.template.clone(),
                    team: e.team.clone(),
                    cpus: e.cpus,
                    sample: *e.ring.latest()?,
                })
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(id: &str, state: &str) -> Live {
        Live {
            id: id.into(),
            team: "t".into(),
            template: "base".into(),
            state: state.into(),
            cpu_millis: 1000,
        }
    }

    fn stats(cpu_ns: u64) -> SandboxStats {
        let mut s = SandboxStats::default();
        s.cgroup.cpu_usage_ns = cpu_ns;
        s
    }

    #[test]
    fn passes_keep_paused_history_and_drop_the_gone() {
        let s = Samples::new(Duration::from_secs(1), Duration::from_secs(3));
        let mut rx = s.subscribe();
        s.record(
            &[live("a", "running"), live("b", "running")],
            vec![
                ("a".into(), 1000, 0, stats(500_000_000)),
                ("b".into(), 1000, 0, stats(0)),
            ],
        );
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        // First reading: the percent since the cgroup began.
        assert_eq!(
            s.with("a", |e| e.ring.latest().unwrap().cpu_pct),
            Some(50.0)
        );
        s.record(
            &[live("a", "running"), live("b", "running")],
            vec![
                ("a".into(), 2000, 0, stats(1_500_000_000)),
                ("b".into(), 2000, 0, stats(0)),
            ],
        );
        // Then over the interval only.
        assert_eq!(
            s.with("a", |e| e.ring.latest().unwrap().cpu_pct),
            Some(100.0)
        );
        // b is paused: its history stays, it is not sampled, and it exports nothing now.
        s.record(
            &[live("a", "running"), live("b", "paused")],
            vec![("a".into(), 3000, 0, stats(1_500_000_000))],
        );
        assert_eq!(s.with("b", |e| e.ring.range(0, i64::MAX).count()), Some(2));
        assert_eq!(s.current().len(), 1);
        // a is gone from the store: its samples go.
        s.record(&[live("b", "paused")], vec![]);
        assert!(s.with("a", |_| ()).is_none());
        s.forget("b");
        assert!(s.is_empty());
        assert!(rx.has_changed().unwrap());
    }

    /// Prints what a pass's bookkeeping and a scrape cost at 3000 sandboxes (measured, not
    /// asserted: `cargo test --release -p soulbox-server --lib cost -- --nocapture`).
    #[test]
    fn cost_at_3000_sandboxes() {
        let s = Samples::new(Duration::from_secs(5), Duration::from_secs(3600));
        let all: Vec<Live> = (0..3000)
            .map(|i| live(&format!("sandbox{i:05}"), "running"))
            .collect();
        let mut record = Duration::ZERO;
        for pass in 1..=20 {
            let read = all
                .iter()
                .map(|l| (l.id.clone(), pass * 5000, 0, stats(pass as u64 * 1_000_000)))
                .collect();
            let t = std::time::Instant::now();
            s.record(&all, read);
            record += t.elapsed();
        }
        let t = std::time::Instant::now();
        let snap = super::super::families::Snapshot {
            running: s.current(),
            ..Default::default()
        };
        let text = super::super::families::encode(&super::super::families::Families::new(), &snap);
        let scrape = t.elapsed();
        assert_eq!(
            text.matches("soulbox_sandbox_memory_used_bytes{").count(),
            3000
        );
        println!(
            "3000 sandboxes: record {:?} per pass, scrape {scrape:?} ({} KiB)",
            record / 20,
            text.len() >> 10
        );
    }

    #[test]
    fn the_ring_holds_the_retention() {
        let s = Samples::new(Duration::from_secs(1), Duration::from_secs(3));
        for t in 1..=10 {
            s.record(
                &[live("a", "running")],
                vec![("a".into(), t * 1000, 0, stats(0))],
            );
        }
        assert_eq!(s.with("a", |e| e.ring.range(0, i64::MAX).count()), Some(3));
    }
}
