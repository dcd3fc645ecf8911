//! cgroup v2: one directory, `<root>/soulbox/<id>`, with memory, cpu and pids enabled (and
//! cpuset where the host has it).

use super::*;

const PERIOD_US: u64 = 100_000;

#[derive(Debug)]
pub struct V2 {
    base: PathBuf,
}

impl V2 {
    pub fn new(root: &Path) -> Result<Self> {
        let base = root.join("soulbox");
        std::fs::create_dir_all(&base).map_err(|source| CgroupError::Io {
            path: base.clone(),
            source,
        })?;
        // Controllers must be enabled at each level down to our subtree.
        for dir in [root, base.as_path()] {
            write(&dir.join("cgroup.subtree_control"), "+memory +cpu +pids")?;
            // LXCFS reads a sandbox's CPUs from `cpuset.cpus.effective` (all of them: the
            // controller limits nothing unless told to). Best effort: not every host has it.
            let controllers = read(&dir.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "cpuset") {
                let _ = write(&dir.join("cgroup.subtree_control"), "+cpuset");
            }
        }
        Ok(V2 { base })
    }
}

impl CgroupManager for V2 {
    fn version(&self) -> &'static str {
        "v2"
    }

    fn set_totals(&self, t: &Totals) -> Result<()> {
        write(&self.base.join("pids.max"), t.pids.to_string())?;
        write(
            &self.base.join("cpu.max"),
            format!("{} {PERIOD_US}", t.cpu_millis * PERIOD_US / 1000),
        )?;
        write(
            &self.base.join("cpu.weight"),
            t.cpu_weight.clamp(1, 10_000).to_string(),
        )
    }

    fn totals(&self) -> TotalsUsage {
        let cpu_max = read(&self.base.join("cpu.max")).unwrap_or_default();
        let mut it = cpu_max.split_whitespace();
        let quota = it.next().and_then(|q| q.parse::<u64>().ok());
        let period = it
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(PERIOD_US);
        TotalsUsage {
            pids: read_u64(&self.base.join("pids.current")),
            pids_max: read_limit(&self.base.join("pids.max")),
            cpu_max_millis: quota.map(|q| q * 1000 / period.max(1)),
            cpu_weight: read_u64(&self.base.join("cpu.weight")),
            cpu_throttled_periods: keyed(&self.base.join("cpu.stat"), "nr_throttled "),
        }
    }

    fn create(&self, id: &str, l: &Limits) -> Result<Vec<PathBuf>> {
        let d = self.base.join(id);
        std::fs::create_dir_all(&d).map_err(|source| CgroupError::Io {
            path: d.clone(),
            source,
        })?;
        write(&d.join("memory.max"), l.memory_bytes.to_string())?;
        let swap = d.join("memory.swap.max");
        if swap.exists() {
            write(&swap, "0")?;
        }
        // An OOM kills only the task the kernel picks, not the whole group (keeps the agent).
        let group = d.join("memory.oom.group");
        if group.exists() {
            write(&group, "0")?;
        }
        write(
            &d.join("cpu.max"),
            format!("{} {PERIOD_US}", l.cpu_millis * PERIOD_US / 1000),
        )?;
        write(&d.join("pids.max"), l.pids.to_string())?;
        Ok(vec![d.join("cgroup.procs")])
    }

    fn stats(&self, id: &str) -> Result<Stats> {
        let d = self.base.join(id);
        read(&d.join("memory.current"))?;
        let cpu = d.join("cpu.stat");
        Ok(Stats {
            memory_bytes: read_u64(&d.join("memory.current")),
            memory_limit: read_u64(&d.join("memory.max")),
            memory_cache: keyed(&d.join("memory.stat"), "file "),
            oom_kills: keyed(&d.join("memory.events"), "oom_kill "),
            cpu_usage_ns: keyed(&cpu, "usage_usec ") * 1000,
            cpu_throttled_periods: keyed(&cpu, "nr_throttled "),
            cpu_throttled_ns: keyed(&cpu, "throttled_usec ") * 1000,
            pids: read_u64(&d.join("pids.current")),
        })
    }

    fn freezer_dir(&self, id: &str) -> PathBuf {
        self.base.join(id)
    }

    fn set_frozen(&self, id: &str, frozen: bool) -> Result<()> {
        let d = self.base.join(id);
        write(&d.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        for _ in 0..1000 {
            if read(&d.join("cgroup.events"))?.lines().any(|l| l == want) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }

    fn pids(&self, id: &str) -> Vec<i32> {
        read(&self.base.join(id).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn destroy(&self, id: &str) -> Result<()> {
        let d = self.base.join(id);
        if !d.exists() {
            return Ok(());
        }
        let kill = d.join("cgroup.kill");
        if kill.exists() {
            write(&kill, "1")?;
        }
        kill_and_wait(&[d.join("cgroup.procs")]);
        remove_dir(&d)
    }

    fn existing(&self) -> Vec<String> {
        std::fs::read_dir(&self.base)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}
