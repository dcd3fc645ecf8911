//! cgroup v1: one directory per controller hierarchy (`memory/soulbox/<id>`, `cpu/…`, …).

use super::*;

const PERIOD_US: u64 = 100_000;

#[derive(Debug)]
pub struct V1 {
    memory: PathBuf,
    cpu: PathBuf,
    cpuacct: PathBuf,
    pids: PathBuf,
    freezer: PathBuf,
    /// `cpuset/soulbox`, where the host has that hierarchy. A sandbox's cpuset group has
    /// every CPU of the parent's: it limits nothing, but LXCFS reads a sandbox's CPU quota at
    /// the path of its cpuset group.
    cpuset: Option<PathBuf>,
}

impl V1 {
    pub fn new(root: &Path) -> Result<Self> {
        let base = |c: &str| -> Result<PathBuf> {
            let p = root.join(c);
            // `cpu` and `cpuacct` are often one hierarchy reached through symlinks.
            let p = std::fs::canonicalize(&p).map_err(|source| CgroupError::Io {
                path: p.clone(),
                source,
            })?;
            let dir = p.join("soulbox");
            std::fs::create_dir_all(&dir).map_err(|source| CgroupError::Io {
                path: dir.clone(),
                source,
            })?;
            Ok(dir)
        };
        Ok(V1 {
            memory: base("memory")?,
            cpu: base("cpu")?,
            cpuacct: base("cpuacct")?,
            pids: base("pids")?,
            freezer: base("freezer")?,
            cpuset: if root.join("cpuset").is_dir() {
                let dir = base("cpuset")?;
                inherit_cpuset(&dir)?;
                Some(dir)
            } else {
                None
            },
        })
    }

    /// Distinct hierarchy directories of a sandbox.
    fn dirs(&self, id: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = [
            &self.memory,
            &self.cpu,
            &self.cpuacct,
            &self.pids,
            &self.freezer,
        ]
        .into_iter()
        .chain(&self.cpuset)
        .map(|b| b.join(id))
        .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// A new v1 cpuset group has no CPUs and no memory nodes (no task may join it): give it its
/// parent's.
fn inherit_cpuset(dir: &Path) -> Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    for f in ["cpuset.cpus", "cpuset.mems"] {
        if read(&dir.join(f))?.trim().is_empty() {
            write(&dir.join(f), read(&parent.join(f))?.trim())?;
        }
    }
    Ok(())
}

impl V1 {
    /// The parent's CPU quota per [`PERIOD_US`], if it has one.
    fn parent_quota(&self) -> Option<u64> {
        let quota = read_limit(&self.cpu.join("cpu.cfs_quota_us"))?;
        let period = read_limit(&self.cpu.join("cpu.cfs_period_us")).unwrap_or(PERIOD_US);
        Some(quota * PERIOD_US / period.max(1))
    }
}

impl CgroupManager for V1 {
    fn version(&self) -> &'static str {
        "v1"
    }

    fn set_totals(&self, t: &Totals) -> Result<()> {
        write(&self.pids.join("pids.max"), t.pids.to_string())?;
        let quota = t.cpu_millis * PERIOD_US / 1000;
        // Children above the new total first, or the kernel refuses the parent's quota.
        for e in std::fs::read_dir(&self.cpu).into_iter().flatten().flatten() {
            let q = e.path().join("cpu.cfs_quota_us");
            if read_limit(&q).is_some_and(|v| v > quota) {
                write(&q, quota.to_string())?;
            }
        }
        write(&self.cpu.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
        write(&self.cpu.join("cpu.cfs_quota_us"), quota.to_string())?;
        write(
            &self.cpu.join("cpu.shares"),
            (t.cpu_weight * 1024 / 100).max(2).to_string(),
        )
    }

    fn totals(&self) -> TotalsUsage {
        TotalsUsage {
            pids: read_u64(&self.pids.join("pids.current")),
            pids_max: read_limit(&self.pids.join("pids.max")),
            cpu_max_millis: self.parent_quota().map(|q| q * 1000 / PERIOD_US),
            cpu_weight: read_u64(&self.cpu.join("cpu.shares")) * 100 / 1024,
            cpu_throttled_periods: keyed(&self.cpu.join("cpu.stat"), "nr_throttled "),
        }
    }

    fn create(&self, id: &str, l: &Limits) -> Result<Vec<PathBuf>> {
        let dirs = self.dirs(id);
        for d in &dirs {
            std::fs::create_dir_all(d).map_err(|source| CgroupError::Io {
                path: d.clone(),
                source,
            })?;
        }
        if let Some(cpuset) = &self.cpuset {
            inherit_cpuset(&cpuset.join(id))?;
        }
        let mem = self.memory.join(id);
        write(
            &mem.join("memory.limit_in_bytes"),
            l.memory_bytes.to_string(),
        )?;
        // No swap: memory+swap equals memory (the file exists only with swap accounting).
        let memsw = mem.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write(&memsw, l.memory_bytes.to_string())?;
        }
        let cpu = self.cpu.join(id);
        write(&cpu.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
        // v1 refuses (EINVAL) a child quota above its parent's: the total caps each sandbox.
        let mut quota = l.cpu_millis * PERIOD_US / 1000;
        if let Some(total) = self.parent_quota() {
            quota = quota.min(total);
        }
        write(&cpu.join("cpu.cfs_quota_us"), quota.to_string())?;
        write(&self.pids.join(id).join("pids.max"), l.pids.to_string())?;
        Ok(dirs.iter().map(|d| d.join("cgroup.procs")).collect())
    }

    fn stats(&self, id: &str) -> Result<Stats> {
        let mem = self.memory.join(id);
        read(&mem.join("memory.usage_in_bytes"))?;
        Ok(Stats {
            memory_bytes: read_u64(&mem.join("memory.usage_in_bytes")),
            memory_limit: read_u64(&mem.join("memory.limit_in_bytes")),
            memory_cache: keyed(&mem.join("memory.stat"), "total_cache "),
            oom_kills: keyed(&mem.join("memory.oom_control"), "oom_kill "),
            cpu_usage_ns: read_u64(&self.cpuacct.join(id).join("cpuacct.usage")),
            cpu_throttled_periods: keyed(&self.cpu.join(id).join("cpu.stat"), "nr_throttled "),
            cpu_throttled_ns: keyed(&self.cpu.join(id).join("cpu.stat"), "throttled_time "),
            pids: read_u64(&self.pids.join(id).join("pids.current")),
        })
    }

    fn freezer_dir(&self, id: &str) -> PathBuf {
        self.freezer.join(id)
    }

    fn set_frozen(&self, id: &str, frozen: bool) -> Result<()> {
        let state = self.freezer.join(id).join("freezer.state");
        write(&state, if frozen { "FROZEN" } else { "THAWED" })?;
        let want = if frozen { "FROZEN" } else { "THAWED" };
        for _ in 0..1000 {
            if read(&state)?.trim() == want {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }

    fn pids(&self, id: &str) -> Vec<i32> {
        read(&self.pids.join(id).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn destroy(&self, id: &str) -> Result<()> {
        let dirs = self.dirs(id);
        if !dirs.iter().any(|d| d.exists()) {
            return Ok(());
        }
        // A frozen task cannot die: thaw first.
        let _ = write(&self.freezer.join(id).join("freezer.state"), "THAWED");
        let procs: Vec<_> = dirs
            .iter()
            .map(|d| d.join("cgroup.procs"))
            .filter(|p| p.exists())
            .collect();
        kill_and_wait(&procs);
        for d in &dirs {
            remove_dir(d)?;
        }
        Ok(())
    }

    fn existing(&self) -> Vec<String> {
        let mut ids: Vec<String> = [&self.memory, &self.cpu, &self.pids, &self.freezer]
            .into_iter()
            .chain(&self.cpuset)
            .flat_map(|b| std::fs::read_dir(b).into_iter().flatten().flatten())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}
