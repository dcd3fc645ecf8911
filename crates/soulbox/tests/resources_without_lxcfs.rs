//! A runtime without LXCFS (not installed, or switched off) still starts sandboxes; they see
//! the host's figures, and still none of the host's disks. Its own test binary: the runtime's
//! configuration is per process.

mod common;

use common::{configure, text, Sandbox};
use soulbox_runtime::Limits;

#[tokio::test]
async fn sandboxes_start_without_lxcfs_and_see_the_host_figures() {
    configure(|c| c.lxcfs = None);
    let sb = Sandbox::new(
        Limits {
            memory_bytes: 256 << 20,
            disk_bytes: 256 << 20,
            ..Limits::default()
        },
        false,
    )
    .await;
    let out = sb
        .sh_as(
            Some("user"),
            "grep MemTotal /proc/meminfo; echo ---; cat /proc/diskstats /proc/partitions",
        )
        .await;
    let s = text(&out.stdout);
    let host = std::fs::read_to_string("/proc/meminfo").unwrap();
    let host_total = host.lines().next().unwrap();
    assert_eq!(s.lines().next(), Some(host_total), "{s}");
    assert_eq!(s.split("---\n").nth(1), Some(""), "host disks listed: {s}");
    sb.kill().await;
}
