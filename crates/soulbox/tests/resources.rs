//! What a sandbox sees of its own resources (issue 10 item 10): its memory limit, its CPU
//! quota as CPUs, its own uptime and load, and nothing of the host's disks. The proc files
//! come from SoulBox's LXCFS instance (`apt-get install lxcfs`). Run as root on a host where
//! `soulbox doctor` passes.

mod common;

use common::{text, Sandbox};
use soulbox_runtime::Limits;

const MEMORY_MIB: u64 = 384;

fn limits(memory_mib: u64, cpus: u64) -> Limits {
    Limits {
        memory_bytes: memory_mib << 20,
        cpu_millis: cpus * 1000,
        disk_bytes: 256 << 20,
        ..Limits::default()
    }
}

/// The CPU count to give a sandbox: fewer than the host has, where it has more than one, so a
/// host view cannot pass for the sandbox's.
fn cpus() -> u64 {
    let host = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    host.saturating_sub(1).max(1)
}

/// The value of `key` (first number after it) in `text`.
fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

/// Paths of the host that must not appear in what a sandbox sees of its mounts.
fn host_paths(sb: &Sandbox) -> Vec<String> {
    let data_dir = sb.backend.sandbox_dir("x");
    let data_dir = data_dir.parent().and_then(|p| p.parent()).unwrap();
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_soulbox"));
    let mut v: Vec<String> = [data_dir, exe.parent().unwrap()]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    v.extend(["/work", "/var/lib", "/run", "/root", "/home"].map(String::from));
    v.extend(
        std::env::current_dir()
            .ok()
            .map(|d| d.display().to_string()),
    );
    v
}

/// Every path-like word of `text` (mount points, sources and options such as `lowerdir=`).
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | '=' | ':'))
}

/// The host path `text` names, if any.
fn names_host_path(text: &str, host: &[String]) -> Option<String> {
    words(text)
        .find(|w| {
            host.iter()
                .any(|p| *w == p || w.starts_with(&format!("{p}/")))
        })
        .map(String::from)
}

#[tokio::test]
async fn a_sandbox_sees_its_own_memory_cpus_uptime_and_disks() {
    let cpus = cpus();
    let sb = Sandbox::new(limits(MEMORY_MIB, cpus), false).await;
    let script = "cat /proc/meminfo; echo ---; free -m; echo ---; \
                  grep -c ^processor /proc/cpuinfo; grep -c '^cpu[0-9]' /proc/stat; \
                  getconf _NPROCESSORS_ONLN; python3 -c 'import os; print(os.cpu_count())'; \
                  echo ---; cat /proc/uptime; echo ---; cat /proc/loadavg; echo ---; \
                  cat /proc/swaps; echo ---; cat /proc/diskstats /proc/partitions; echo ---; \
                  df -P; echo ---; cat /proc/mounts";
    let out = sb.sh_as(Some("user"), script).await;
    let s = text(&out.stdout);
    let parts: Vec<_> = s.split("---\n").collect();
    assert_eq!(parts.len(), 9, "{s}\n{}", text(&out.stderr));
    let [meminfo, free, cpu, uptime, loadavg, swaps, disks, df, mounts] = [
        parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], parts[6], parts[7], parts[8],
    ];

    // Memory: the limit (a multiple of the page size here), no swap.
    assert_eq!(
        field(meminfo, "MemTotal:"),
        MEMORY_MIB * 1024,
        "/proc/meminfo shows the host's memory (is lxcfs installed?):\n{meminfo}"
    );
    assert_eq!(field(meminfo, "SwapTotal:"), 0, "{meminfo}");
    let free_total = field(free, "Mem:");
    assert!(
        free_total.abs_diff(MEMORY_MIB) <= 1,
        "free -m shows {free_total} MiB, the limit is {MEMORY_MIB}:\n{free}"
    );

    // CPUs: the quota, in /proc/cpuinfo, /proc/stat and what glibc's sysconf (Python's
    // os.cpu_count, multiprocessing) reads from /sys/devices/system/cpu/online.
    let counts: Vec<u64> = cpu.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(
        counts,
        vec![cpus; 4],
        "cpuinfo, stat, sysconf and os.cpu_count should all show the quota of {cpus} CPUs"
    );

    // Uptime from the sandbox's start, not the host's.
    let up: f64 = uptime.split_whitespace().next().unwrap().parse().unwrap();
    assert!(up < 60.0, "/proc/uptime is the host's: {uptime}");

    // Load: the sandbox's own tasks (`running/total` counts only the sandbox's).
    let tasks: u64 = loadavg
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split('/').nth(1))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("bad /proc/loadavg: {loadavg}"));
    assert!(
        tasks < 64,
        "/proc/loadavg counts the host's tasks: {loadavg}"
    );

    // Swap: none (the header only).
    assert_eq!(swaps.lines().count(), 1, "/proc/swaps: {swaps}");

    // Disks: none of the host's block devices, and no host path in mounts or df.
    for dev in ["vd", "sd", "nvme", "loop", "xvd", "zram", "dm-"] {
        assert!(!disks.contains(dev), "a host disk is listed:\n{disks}");
        assert!(
            !df.contains(&format!("/dev/{dev}")),
            "df shows a host disk:\n{df}"
        );
    }
    let host = host_paths(&sb);
    assert_eq!(names_host_path(mounts, &host), None, "{mounts}");
    assert_eq!(names_host_path(df, &host), None, "{df}");
    // Positive control: the check sees a host path where there is one.
    assert!(names_host_path("overlay /x overlay lowerdir=/var/lib/a:/b", &host).is_some());
    sb.kill().await;
}

/// Sandbox root cannot take the views away to read the host's figures, nor write through them
/// to change what another sandbox sees.
#[tokio::test]
async fn sandbox_root_cannot_remove_or_change_the_views() {
    let a = Sandbox::new(limits(MEMORY_MIB, 1), false).await;
    let b = Sandbox::new(limits(256, 1), false).await;
    let attack = r#"
for f in meminfo cpuinfo stat uptime loadavg swaps diskstats partitions; do
  umount /proc/$f 2>/dev/null && echo "umount $f"
  umount -l /proc/$f 2>/dev/null && echo "umount -l $f"
done
for f in meminfo cpuinfo stat uptime loadavg swaps; do
  echo 0 > /proc/$f 2>/dev/null && echo "wrote $f"
done
# The masks are /dev/null: a write goes nowhere.
echo sda 1 2 3 > /proc/diskstats; echo "diskstats: $(cat /proc/diskstats /proc/partitions)"
umount -l /sys/devices/system/cpu/online 2>/dev/null && echo "umount online"
echo 0-63 > /sys/devices/system/cpu/online 2>/dev/null && echo "wrote online"
python3 -c '
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
for p in [b"/proc/meminfo", b"/proc/uptime", b"/sys/devices/system/cpu/online"]:
    print("umount2", p.decode(), libc.umount2(p, 2), ctypes.get_errno())
'
grep MemTotal /proc/meminfo
"#;
    let out = a.root(attack).await;
    let s = text(&out.stdout);
    for done in ["umount ", "umount -l", "wrote"] {
        assert!(!s.contains(done), "sandbox root got through: {s}");
    }
    for p in [
        "/proc/meminfo",
        "/proc/uptime",
        "/sys/devices/system/cpu/online",
    ] {
        assert!(s.contains(&format!("umount2 {p} -1 1\n")), "{s}");
    }
    assert!(s.contains("diskstats: \n"), "{s}");
    assert_eq!(
        field(&s, "MemTotal:"),
        MEMORY_MIB * 1024,
        "after the attack A sees: {s}"
    );
    // The other sandbox still sees its own figures.
    let out = b
        .sh_as(Some("user"), "cat /proc/meminfo /proc/uptime")
        .await;
    let s = text(&out.stdout);
    assert_eq!(field(&s, "MemTotal:"), 256 * 1024, "{s}");
    a.kill().await;
    b.kill().await;
}
