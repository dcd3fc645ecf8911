//! The resources a sandbox gets: its template's (a custom template's cpuCount, memoryMB and
//! disk, as built) or the operator's defaults (built-in templates), never above the
//! operator's maximum. A build request above the maximum is refused; a template built under
//! a higher maximum than today's is clamped to it at create, and the record says what was
//! applied.

use crate::error::ApiError;
use crate::templates::TemplateRecord;
use crate::ServerConfig;
use soulbox_runtime::Limits;

/// What a sandbox of a built-in template gets.
pub fn builtin(cfg: &ServerConfig) -> Limits {
    clamp(cfg, cfg.default_limits)
}

/// What a sandbox of custom template `t` gets.
pub fn custom(cfg: &ServerConfig, t: &TemplateRecord) -> Limits {
    let mib = |m: i64| (m.max(0) as u64) << 20;
    clamp(
        cfg,
        Limits {
            cpu_millis: (t.cpu_count.max(1) as u64) * 1000,
            memory_bytes: mib(t.memory_mb.max(128)),
            disk_bytes: mib(t.disk_mb.max(64)),
            ..cfg.default_limits
        },
    )
}

fn clamp(cfg: &ServerConfig, l: Limits) -> Limits {
    let m = &cfg.max_limits;
    Limits {
        cpu_millis: l.cpu_millis.min(m.cpu_millis),
        memory_bytes: l.memory_bytes.min(m.memory_bytes),
        disk_bytes: l.disk_bytes.min(m.disk_bytes),
        pids: l.pids.min(m.pids),
        nofile: l.nofile,
    }
}

/// The cpuCount and memoryMB of a template build request (the defaults where unset), or a
/// 400 naming the bound it crosses.
pub fn for_build(
    cfg: &ServerConfig,
    cpu_count: Option<i64>,
    memory_mb: Option<i64>,
) -> Result<(i64, i64), ApiError> {
    let (d, m) = (&cfg.default_limits, &cfg.max_limits);
    let cpu = cpu_count.unwrap_or((d.cpu_millis / 1000).max(1) as i64);
    let mem = memory_mb.unwrap_or((d.memory_bytes >> 20) as i64);
    let (max_cpu, max_mem) = ((m.cpu_millis / 1000) as i64, (m.memory_bytes >> 20) as i64);
    if cpu < 1 {
        return Err(ApiError::BadRequest("cpuCount must be at least 1".into()));
    }
    if cpu > max_cpu {
        return Err(ApiError::BadRequest(format!(
            "cpuCount {cpu} is above this server's maximum of {max_cpu} (runtime.max_limits.cpu_count)"
        )));
    }
    if mem < 128 {
        return Err(ApiError::BadRequest("memoryMB must be at least 128".into()));
    }
    if mem > max_mem {
        return Err(ApiError::BadRequest(format!(
            "memoryMB {mem} is above this server's maximum of {max_mem} (runtime.max_limits.memory_mb)"
        )));
    }
    Ok((cpu, mem))
}

/// The disk a new template's sandboxes get, in MiB: the default, as of the build.
pub fn build_disk_mb(cfg: &ServerConfig) -> i64 {
    (builtin(cfg).disk_bytes >> 20) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ServerConfig {
        let mut c = ServerConfig::new(([127, 0, 0, 1], 0).into());
        c.default_limits = Limits {
            cpu_millis: 1000,
            memory_bytes: 256 << 20,
            disk_bytes: 1 << 30,
            ..Limits::default()
        };
        c.max_limits = Limits {
            cpu_millis: 4000,
            memory_bytes: 2 << 30,
            disk_bytes: 4 << 30,
            ..c.max_limits
        };
        c
    }

    #[test]
    fn build_requests_are_bounded_by_the_maximum() {
        let c = cfg();
        assert_eq!(for_build(&c, None, None).unwrap(), (1, 256));
        assert_eq!(for_build(&c, Some(4), Some(2048)).unwrap(), (4, 2048));
        let e = for_build(&c, Some(5), None).unwrap_err().to_string();
        assert!(
            e.contains("cpuCount 5") && e.contains("max_limits.cpu_count"),
            "{e}"
        );
        let e = for_build(&c, None, Some(2049)).unwrap_err().to_string();
        assert!(
            e.contains("memoryMB 2049") && e.contains("maximum of 2048"),
            "{e}"
        );
        assert!(for_build(&c, Some(0), None).is_err());
        assert!(for_build(&c, None, Some(64)).is_err());
    }

    #[test]
    fn a_template_above_todays_maximum_is_clamped() {
        let c = cfg();
        let t = TemplateRecord {
            id: "t".into(),
            team_id: "team".into(),
            name: "big".into(),
            public: false,
            cpu_count: 8,
            memory_mb: 512,
            disk_mb: 10 << 10,
            created_at: String::new(),
            updated_at: String::new(),
            snapshot_of: None,
        };
        let l = custom(&c, &t);
        assert_eq!(l.cpu_millis, 4000);
        assert_eq!(l.memory_bytes, 512 << 20);
        assert_eq!(l.disk_bytes, 4 << 30);
        assert_eq!(builtin(&c).memory_bytes, 256 << 20);
    }
}
