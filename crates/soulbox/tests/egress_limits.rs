//! The runtime's side of egress control, against `soulbox-testnet` (a network namespace
//! playing the internet): the operator's bandwidth limit holds, a slot's policy is applied
//! and replaced at once, and goes with its sandbox (a reused slot carries none).
//! Run as root, under `sbx-locked`, after `cargo build --release --workspace`.

mod common;

use common::Sandbox;
use soulbox_runtime::network::SlotPolicy;
use soulbox_runtime::ns::RuntimeConfig;
use soulbox_runtime::Limits;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const RATE_MBIT: u32 = 40;

fn low_rate(cfg: &mut RuntimeConfig) {
    cfg.host_limits.rate_mbit = Some(RATE_MBIT);
}

/// The testnet, up until dropped.
struct Testnet(Child, PathBuf);

impl Testnet {
    fn up() -> Testnet {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_soulbox")).with_file_name("soulbox-testnet");
        assert!(
            exe.is_file(),
            "{} missing: cargo build --release --workspace",
            exe.display()
        );
        let dir = tempfile::tempdir().unwrap().keep();
        let child = Command::new(exe)
            .args(["up", "--dir"])
            .arg(&dir)
            .args(["--parent-pid", &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !dir.join("ready").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "testnet did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Testnet(child, dir)
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Seconds a download of `bytes` from the testnet takes inside, or `None` if it fails.
async fn download(sbx: &Sandbox, bytes: u64) -> Option<f64> {
    let script = format!(
        "python3 -c \"import time,urllib.request as u; t=time.time(); n=len(u.urlopen('http://198.51.100.10/bytes?n={bytes}', timeout=10).read()); assert n == {bytes}; print(time.time()-t)\""
    );
    let out = sbx.root(&script).await;
    (out.exit_code == 0)
        .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .flatten()
}

#[tokio::test]
async fn bandwidth_is_limited_and_a_policy_goes_with_its_sandbox() {
    common::configure(low_rate);
    let _net = Testnet::up();
    let sbx = Sandbox::new(Limits::default(), true).await;
    // 5 MB at 40 Mbit/s take about a second; unlimited, a few milliseconds.
    let took = download(&sbx, 5_000_000).await.expect("the download works");
    let floor = 5_000_000.0 * 8.0 / (RATE_MBIT as f64 * 1e6);
    assert!(
        took > floor * 0.7,
        "5 MB in {took:.3} s: faster than {RATE_MBIT} Mbit/s"
    );

    // A policy denying the server, set while it runs: refused at once; cleared: reached.
    let deny = SlotPolicy {
        deny: vec!["198.51.100.10/32".parse().unwrap()],
        dns: vec![],
        ..SlotPolicy::default()
    };
    sbx.backend
        .set_egress(&sbx.info.id, Some(deny.clone()))
        .unwrap();
    assert!(download(&sbx, 1000).await.is_none(), "denied, yet reached");
    let slot = sbx
        .backend
        .state_of(&sbx.info.id)
        .unwrap()
        .running
        .unwrap()
        .slot
        .unwrap();
    let chains = || {
        let out = Command::new("nft")
            .args(["list", "table", "inet", "soulbox"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        chains().contains(&format!("chain f{slot} ")),
        "{}",
        chains()
    );
    sbx.backend.set_egress(&sbx.info.id, None).unwrap();
    assert!(download(&sbx, 1000).await.is_some());
    // Killed with a policy, its slot comes back clean: the next sandbox there is not bound.
    sbx.backend.set_egress(&sbx.info.id, Some(deny)).unwrap();
    sbx.kill().await;
    assert!(
        !chains().contains(&format!("chain f{slot} ")),
        "{}",
        chains()
    );
    let next = Sandbox::new(Limits::default(), true).await;
    let next_slot = next
        .backend
        .state_of(&next.info.id)
        .unwrap()
        .running
        .unwrap()
        .slot
        .unwrap();
    assert_eq!(next_slot, slot, "slots are reused last in, first out");
    assert!(
        download(&next, 1000).await.is_some(),
        "the old policy stayed on the slot"
    );
}
