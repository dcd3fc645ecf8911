//! Host-wide totals: what all sandboxes together may take from the host, and admission that
//! refuses a new sandbox ([`RuntimeError::Capacity`]) before a host limit is reached.
//!
//! Per-sandbox limits alone leave the host open: a default sandbox may use every CPU, ~32
//! sandboxes of 1024 pids each fill a default `pid_max` of 32768, and each sandbox's open
//! files are bounded only by its memory. So SoulBox's parent cgroup gets totals (pids below
//! the host's `pid_max`/`threads-max`, a CPU cap that keeps CPU for the host and `serve`, and
//! a lower CPU weight than the host's own groups), and a create is refused while free pids,
//! memory or the host's file table run low, or the sandbox count is at its limit.
//!
//! Open files: the kernel charges every `struct file` and descriptor table to the memory
//! cgroup of the process that opens it, so a sandbox's open files are bounded by its memory
//! limit (and per process by `RLIMIT_NOFILE`); admission keeps new sandboxes out when the
//! host's table (`fs.file-nr` against `fs.file-max`) nears full.

use crate::cgroup::{CgroupManager, Totals};
use crate::{Result, RuntimeError};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Thresholds, each `None` derived from the host at start.
#[derive(Debug, Clone, Default)]
pub struct HostLimits {
    /// pids of all sandboxes together; default: three quarters of the host's
    /// `min(pid_max, threads-max)`, keeping at least 1024 for the host.
    pub pids: Option<u64>,
    /// CPU kept for the host and `serve`, in thousandths of a CPU; default: a tenth of the
    /// host's CPUs, at least half a CPU.
    pub reserved_cpu_millis: Option<u64>,
    /// CPU weight of all sandboxes against the host's groups (cgroup v2 scale, where the
    /// host's default is 100); default 50.
    pub cpu_weight: Option<u64>,
    /// A create is refused when fewer pids than this are left in the total; default 256.
    pub min_free_pids: Option<u64>,
    /// A create is refused when the host has less memory available; default: a twentieth of
    /// its memory, at least 256 MiB.
    pub min_free_memory_bytes: Option<u64>,
    /// A create is refused when fewer entries than this are left in the host's file table;
    /// default: a tenth of `fs.file-max`.
    pub min_free_files: Option<u64>,
    /// Most sandboxes at once; default: no limit but the others.
    pub max_sandboxes: Option<usize>,
    /// Tracked flows (conntrack entries) per sandbox with internet; default
    /// [`crate::network::DEFAULT_FLOWS_PER_SANDBOX`].
    pub flows_per_sandbox: Option<u32>,
    /// Bandwidth per sandbox and direction, Mbit/s (0: unlimited); default
    /// [`crate::network::DEFAULT_RATE_MBIT`].
    pub rate_mbit: Option<u32>,
}

/// [`HostLimits`] with every default resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Resolved {
    pub totals: Totals,
    pub min_free_pids: u64,
    pub min_free_memory_bytes: u64,
    pub min_free_files: u64,
    pub max_sandboxes: Option<usize>,
    pub flows_per_sandbox: u32,
    pub rate_mbit: u32,
}

fn proc_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A `/proc/meminfo` field in bytes.
fn meminfo(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// `fs.file-nr`: (allocated, max).
fn file_table() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/sys/fs/file-nr").ok()?;
    let v: Vec<u64> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    Some((*v.first()?, *v.get(2)?))
}

impl HostLimits {
    pub fn resolve(&self) -> Resolved {
        let host_pids = proc_u64("/proc/sys/kernel/pid_max")
            .unwrap_or(32_768)
            .min(proc_u64("/proc/sys/kernel/threads-max").unwrap_or(u64::MAX));
        let pids = self
            .pids
            .unwrap_or_else(|| host_pids - (host_pids / 4).max(1024).min(host_pids / 2));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64 * 1000;
        let reserved = self
            .reserved_cpu_millis
            .unwrap_or((cpus / 10).max(500))
            .min(cpus - 10);
        let mem = meminfo("MemTotal").unwrap_or(0);
        let file_max = file_table().map_or(u64::MAX, |(_, max)| max);
        Resolved {
            totals: Totals {
                pids,
                cpu_millis: cpus - reserved,
                cpu_weight: self.cpu_weight.unwrap_or(50),
            },
            min_free_pids: self.min_free_pids.unwrap_or(256),
            min_free_memory_bytes: self
                .min_free_memory_bytes
                .unwrap_or((mem / 20).max(256 << 20)),
            min_free_files: self.min_free_files.unwrap_or(file_max / 10),
            max_sandboxes: self.max_sandboxes,
            flows_per_sandbox: self
                .flows_per_sandbox
                .unwrap_or(crate::network::DEFAULT_FLOWS_PER_SANDBOX),
            rate_mbit: self.rate_mbit.unwrap_or(crate::network::DEFAULT_RATE_MBIT),
        }
    }
}

/// Decides whether a new sandbox fits, and keeps the parent group's totals.
#[derive(Debug)]
pub struct Admission {
    limits: Resolved,
    cgroups: Arc<dyn CgroupManager>,
    /// Sandboxes admitted and not yet torn down (creates in flight included).
    admitted: Mutex<HashSet<String>>,
}

impl Admission {
    pub fn new(limits: &HostLimits, cgroups: Arc<dyn CgroupManager>) -> Self {
        Admission {
            limits: limits.resolve(),
            cgroups,
            admitted: Mutex::new(HashSet::new()),
        }
    }

    pub fn limits(&self) -> &Resolved {
        &self.limits
    }

    /// Writes the totals to SoulBox's parent cgroup.
    pub fn apply_totals(&self) -> Result<()> {
        self.cgroups.set_totals(&self.limits.totals)?;
        Ok(())
    }

    /// Admits sandbox `id`, or says which host limit it would run into.
    pub fn admit(&self, id: &str) -> Result<()> {
        let full = |m: String| Err(RuntimeError::Capacity(m));
        let mut admitted = self
            .admitted
            .lock()
            .map_err(|_| RuntimeError::Capacity("admission state is poisoned".into()))?;
        let l = &self.limits;
        if let Some(max) = l.max_sandboxes {
            if admitted.len() >= max {
                return full(format!("this host runs its limit of {max} sandboxes"));
            }
        }
        let t = self.cgroups.totals();
        let cap = t.pids_max.unwrap_or(l.totals.pids);
        if t.pids + l.min_free_pids > cap {
            return full(format!(
                "sandboxes use {} of the host's {cap} processes for sandboxes",
                t.pids
            ));
        }
        if let Some(avail) = meminfo("MemAvailable") {
            if avail < l.min_free_memory_bytes {
                return full(format!(
                    "the host has {} MiB of memory available, below its reserve of {} MiB",
                    avail >> 20,
                    l.min_free_memory_bytes >> 20
                ));
            }
        }
        if let Some((used, max)) = file_table() {
            if used.saturating_add(l.min_free_files) > max {
                return full(format!(
                    "the host's file table holds {used} of {max} open files"
                ));
            }
        }
        admitted.insert(id.to_string());
        Ok(())
    }

    /// Counts sandbox `id` of an earlier run, taken over: it runs already, whatever the host's
    /// state now.
    pub fn readmit(&self, id: &str) {
        if let Ok(mut a) = self.admitted.lock() {
            a.insert(id.to_string());
        }
    }

    /// Sandbox `id` is gone (or never started). Idempotent.
    pub fn release(&self, id: &str) {
        if let Ok(mut a) = self.admitted.lock() {
            a.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_leave_the_host_its_reserve() {
        let r = HostLimits::default().resolve();
        let host = proc_u64("/proc/sys/kernel/pid_max").unwrap_or(32_768);
        assert!(r.totals.pids < host && r.totals.pids >= host / 2, "{r:?}");
        let cpus = std::thread::available_parallelism().unwrap().get() as u64 * 1000;
        assert!(r.totals.cpu_millis <= cpus - 500 || cpus <= 500, "{r:?}");
        assert!(r.totals.cpu_weight < 100);
        let set = HostLimits {
            pids: Some(500),
            reserved_cpu_millis: Some(u64::MAX),
            ..Default::default()
        }
        .resolve();
        assert_eq!(set.totals.pids, 500);
        assert_eq!(set.totals.cpu_millis, 10, "never zero CPU: {set:?}");
    }
}
