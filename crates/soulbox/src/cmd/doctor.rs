//! `soulbox doctor`: can this host run sandboxes, and if not, what to do about it.

use super::Context;
use std::path::Path;
use std::process::Command;

enum Level {
    Ok,
    /// Works, but something is degraded.
    Warn,
    /// SoulBox cannot run sandboxes until this is fixed.
    Fail,
}

struct Check {
    name: &'static str,
    level: Level,
    detail: String,
    fix: &'static str,
}

fn check(name: &'static str, ok: bool, detail: impl Into<String>, fix: &'static str) -> Check {
    Check {
        name,
        level: if ok { Level::Ok } else { Level::Fail },
        detail: detail.into(),
        fix,
    }
}

fn warn_if(name: &'static str, ok: bool, detail: impl Into<String>, fix: &'static str) -> Check {
    Check {
        name,
        level: if ok { Level::Ok } else { Level::Warn },
        detail: detail.into(),
        fix,
    }
}

fn command_works(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    })
}

fn has_capability(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("CapEff:")
                    .map(|v| u64::from_str_radix(v.trim(), 16).unwrap_or(0))
            })
        })
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// LXCFS shows each sandbox its own memory, CPUs, uptime and load; without it sandboxes still
/// run, with the host's figures.
fn lxcfs_check() -> Check {
    use soulbox_runtime::lxcfs;
    let fix = "apt-get install lxcfs (without it sandboxes see the host's memory, CPUs and uptime)";
    let Some(program) = lxcfs::find_program("lxcfs") else {
        return warn_if("lxcfs", false, "not installed", fix);
    };
    if !Path::new("/dev/fuse").exists() {
        return warn_if("lxcfs", false, "no /dev/fuse", "modprobe fuse");
    }
    let mount = Path::new(lxcfs::DEFAULT_MOUNT_POINT);
    let state = if !lxcfs::is_mounted(mount) {
        "the runtime mounts it when it starts".to_string()
    } else if lxcfs::is_healthy(mount) {
        "mounted and answering".to_string()
    } else {
        "mounted but not answering (the runtime mounts it anew when it starts)".to_string()
    };
    warn_if(
        "lxcfs",
        true,
        format!("{}: {state} at {}", program.display(), mount.display()),
        fix,
    )
}

pub fn run(ctx: &Context) -> anyhow::Result<()> {
    let mut checks = vec![];
    let root = nix::unistd::geteuid().is_root();
    checks.push(check(
        "root",
        root,
        if root { "running as root" } else { "not root" },
        "run soulbox as root (it creates namespaces, cgroups and network devices)",
    ));
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let major_minor: Vec<u32> = kernel
        .split(['.', '-'])
        .take(2)
        .filter_map(|p| p.parse().ok())
        .collect();
    let new_enough = major_minor.len() == 2 && (major_minor[0], major_minor[1]) >= (5, 19);
    checks.push(check(
        "kernel",
        new_enough,
        format!("Linux {kernel}"),
        "SoulBox needs Linux 5.19 or newer (LOOP_CONFIGURE, id-mapped mounts under overlayfs)",
    ));
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    checks.push(check(
        "user namespaces",
        userns > 0,
        format!("max_user_namespaces = {userns}"),
        "sysctl -w user.max_user_namespaces=15000",
    ));
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    checks.push(check(
        "overlayfs",
        fs.contains("overlay"),
        "",
        "modprobe overlay",
    ));
    checks.push(check(
        "ext4 + loop devices",
        fs.contains("ext4") && Path::new("/dev/loop-control").exists(),
        "",
        "modprobe loop; or use --writable-layer tmpfs",
    ));
    match soulbox_runtime::cgroup::detect(Path::new("/sys/fs/cgroup")) {
        Ok(m) => checks.push(check("cgroups", true, format!("cgroup {} (memory, cpu, pids{})", m.version(), if m.version() == "v1" { ", freezer" } else { "" }), "")),
        Err(e) => checks.push(check("cgroups", false, e.to_string(), "mount cgroup2 at /sys/fs/cgroup, or the v1 memory, cpu, cpuacct, pids and freezer hierarchies")),
    }
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .contains("Seccomp:");
    let filter = soulbox_runtime::jail::seccomp::programs();
    checks.push(check(
        "seccomp",
        seccomp && filter.is_ok(),
        filter.err().unwrap_or_else(|| {
            format!(
                "{} syscalls denied",
                soulbox_runtime::jail::seccomp::denied_names().count()
            )
        }),
        "a kernel built with CONFIG_SECCOMP_FILTER",
    ));
    let nft = command_works("nft", &["--version"]);
    checks.push(check(
        "nftables",
        nft.is_some(),
        nft.unwrap_or_else(|| "nft not found".into()),
        "apt-get install nftables (needed for sandboxes with internet access)",
    ));
    let ip = command_works("ip", &["-V"]);
    checks.push(check(
        "iproute2",
        ip.is_some(),
        ip.unwrap_or_else(|| "ip not found".into()),
        "apt-get install iproute2",
    ));
    let mkfs = command_works("mkfs.ext4", &["-V"])
        .or_else(|| Path::new("/sbin/mkfs.ext4").exists().then(String::new));
    checks.push(check(
        "mkfs.ext4",
        mkfs.is_some(),
        "",
        "apt-get install e2fsprogs",
    ));
    let mmdebstrap = command_works("mmdebstrap", &["--version"]);
    checks.push(check(
        "mmdebstrap",
        mmdebstrap.is_some(),
        mmdebstrap.unwrap_or_else(|| "not found".into()),
        "apt-get install mmdebstrap (builds templates from Debian packages)",
    ));
    checks.push(lxcfs_check());
    checks.push(criu_check());
    let agent = ctx.agent_path()?;
    let agent_ok = agent.is_file();
    checks.push(check(
        "agent binary",
        agent_ok,
        agent.display().to_string(),
        "build it: cargo build --release (or set SOULBOX_AGENT)",
    ));
    checks.push(warn_if(
        "CAP_SYS_RESOURCE",
        has_capability(24),
        if has_capability(24) { "the agent is shielded from the OOM killer" } else { "missing: the agent cannot be shielded from the OOM killer (it is small, so the OOM killer still prefers the sandbox's own processes)" },
        "run soulbox with CAP_SYS_RESOURCE",
    ));
    let kvm = Path::new("/dev/kvm").exists();
    checks.push(warn_if(
        "KVM",
        kvm,
        if kvm {
            "/dev/kvm present (for the future microVM backend)"
        } else {
            "no /dev/kvm (only the namespace backend is available)"
        },
        "enable virtualization (not needed for the namespace backend)",
    ));

    let mut failed = 0;
    for c in &checks {
        let (mark, hint) = match c.level {
            Level::Ok => ("ok  ", ""),
            Level::Warn => ("warn", c.fix),
            Level::Fail => {
                failed += 1;
                ("FAIL", c.fix)
            }
        };
        let detail = if c.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", c.detail)
        };
        println!("[{mark}] {}{detail}", c.name);
        if !hint.is_empty() {
            println!("       fix: {hint}");
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed; fix them and run `soulbox doctor` again");
    }
    println!("this host can run SoulBox sandboxes");
    Ok(())
}

/// Full (memory) pauses need CRIU 4 or newer, working on this kernel (`criu check`).
fn criu_check() -> Check {
    use soulbox_runtime::ns::checkpoint::Criu;
    let (ok, detail) = match Criu::find() {
        Ok(c) => {
            let out = std::process::Command::new(&c.path).arg("check").output();
            match out {
                Ok(o) if o.status.success() => (
                    true,
                    format!(
                        "full and filesystem: CRIU {} at {} keeps processes and memory",
                        c.version,
                        c.path.display()
                    ),
                ),
                Ok(o) => (
                    false,
                    format!(
                        "filesystem only: `{} check` fails on this kernel: {}",
                        c.path.display(),
                        String::from_utf8_lossy(&o.stderr)
                            .lines()
                            .last()
                            .unwrap_or("")
                    ),
                ),
                Err(e) => (false, format!("filesystem only: {}: {e}", c.path.display())),
            }
        }
        Err(e) => (false, format!("filesystem only: {e}")),
    };
    warn_if(
        "pause modes",
        ok,
        detail,
        "run scripts/install.sh (it builds CRIU 4); without it pause() keeps every file, not processes (docs/persistence.md)",
    )
}
