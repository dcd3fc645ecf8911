//! Per-sandbox cgroups behind one interface: v1 hierarchies (this development host) and the
//! unified v2 hierarchy (ordinary production hosts). SoulBox keeps its groups under a
//! `soulbox/` subtree of its own and never touches the others.

mod v1;
mod v2;

use crate::Limits;
use std::path::{Path, PathBuf};

pub use v1::V1;
pub use v2::V2;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No usable cgroup hierarchy was found (run `soulbox doctor`).
    #[error("no usable cgroup hierarchy: {0}")]
    Unsupported(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, CgroupError>;

pub(crate) fn write(path: &Path, value: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, value).map_err(|source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn read_u64(path: &Path) -> u64 {
    read(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `key value` lines (`memory.stat`, `cpu.stat`, `memory.events`).
pub(crate) fn keyed(path: &Path, key: &str) -> u64 {
    read(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
}

/// Usage figures of one sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub memory_bytes: u64,
    pub memory_limit: u64,
    pub memory_cache: u64,
    pub oom_kills: u64,
    pub cpu_usage_ns: u64,
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_ns: u64,
    pub pids: u64,
}

/// Limits of SoulBox's parent group, which holds every sandbox's group: what all sandboxes
/// together may take from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub pids: u64,
    /// CPU time all sandboxes together may use, in thousandths of a CPU.
    pub cpu_millis: u64,
    /// CPU weight against the host's other groups, on cgroup v2's scale (default 100; v1
    /// `cpu.shares` are this × 1024 / 100).
    pub cpu_weight: u64,
}

/// What the parent group holds and enforces now.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TotalsUsage {
    pub pids: u64,
    /// `None`: no limit.
    pub pids_max: Option<u64>,
    pub cpu_max_millis: Option<u64>,
    pub cpu_weight: u64,
    /// Periods in which the parent's CPU limit held all sandboxes back.
    pub cpu_throttled_periods: u64,
}

/// A limit file's value: a number, or `None` for "max" / -1.
pub(crate) fn read_limit(path: &Path) -> Option<u64> {
    read(path).ok()?.split_whitespace().next()?.parse().ok()
}

pub trait CgroupManager: Send + Sync + std::fmt::Debug {
    /// "v1" or "v2".
    fn version(&self) -> &'static str;
    /// Sets the totals of the parent group. A sandbox's own CPU limit is never above them.
    fn set_totals(&self, totals: &Totals) -> Result<()>;
    fn totals(&self) -> TotalsUsage;
    /// Creates the sandbox's groups with its limits; returns the `cgroup.procs` files a
    /// process writes its pid to in order to join them.
    fn create(&self, id: &str, limits: &Limits) -> Result<Vec<PathBuf>>;
    fn stats(&self, id: &str) -> Result<Stats>;
    fn set_frozen(&self, id: &str, frozen: bool) -> Result<()>;
    /// The group `set_frozen` freezes (what CRIU's `--freeze-cgroup` takes).
    fn freezer_dir(&self, id: &str) -> PathBuf;
    /// Pids in the sandbox's groups.
    fn pids(&self, id: &str) -> Vec<i32>;
    /// Kills every process in the groups and removes them. Idempotent.
    fn destroy(&self, id: &str) -> Result<()>;
    /// Ids of sandbox groups that exist (left over from an earlier run, for example).
    fn existing(&self) -> Vec<String>;
}

/// Picks the manager for this host: v2 when the unified hierarchy holds the controllers,
/// else v1.
pub fn detect(root: &Path) -> Result<Box<dyn CgroupManager>> {
    let unified = root.join("cgroup.controllers");
    if let Ok(c) = std::fs::read_to_string(&unified) {
        if c.split_whitespace().any(|x| x == "memory") {
            return Ok(Box::new(V2::new(root)?));
        }
    }
    if root.join("memory").is_dir() {
        return Ok(Box::new(V1::new(root)?));
    }
    Err(CgroupError::Unsupported(format!(
        "{} has neither a cgroup v2 memory controller nor a v1 memory hierarchy",
        root.display()
    )))
}

/// Kills all pids listed, then waits (bounded) until `procs_files` report none.
pub(crate) fn kill_and_wait(procs_files: &[PathBuf]) {
    for _ in 0..500 {
        let mut any = false;
        for f in procs_files {
            for pid in read(f)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                any = true;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if !any {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Removes a group directory, retrying briefly while the kernel finishes tearing down its
/// last tasks.
pub(crate) fn remove_dir(dir: &Path) -> Result<()> {
    for _ in 0..500 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(2))
            }
            Err(source) => {
                return Err(CgroupError::Io {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
    Err(CgroupError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::from_raw_os_error(libc::EBUSY),
    })
}
