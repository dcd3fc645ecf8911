//! `soulbox bench`: sandbox start, exec round trip and idle memory, side by side in one run
//! with Debian's `crun` on the same root filesystem and a bare namespace spawn as the floor.

use super::Context;
use anyhow::Context as _;
use clap::Args;
use soulbox_runtime::agent_client::AgentClient;
use soulbox_runtime::{Backend, Limits, SandboxSpec};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Template to start sandboxes from.
    #[arg(long, default_value = "tiny")]
    template: String,
    /// Sequential creates measured.
    #[arg(long, default_value_t = 100)]
    creates: usize,
    /// Rounds of 20 concurrent creates.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Exec round trips measured.
    #[arg(long, default_value_t = 500)]
    execs: usize,
    /// Idle sandboxes for the memory figure.
    #[arg(long, default_value_t = 100)]
    idle: usize,
    /// Skip the crun comparison.
    #[arg(long)]
    no_crun: bool,
}

struct Series(Vec<Duration>);

impl Series {
    fn pct(&self, p: f64) -> f64 {
        let mut v: Vec<f64> = self.0.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }
    fn cell(&self) -> String {
        format!("{:.2} / {:.2} ms", self.pct(50.0), self.pct(99.0))
    }
}

/// Host memory in use, as `free` counts it: total − free − buffers − page cache − reclaimable
/// slab, in KiB. (MemAvailable moves with reclaimable cache and hides small deltas.)
fn mem_used_kib() -> i64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |k: &str| -> i64 {
        info.lines()
            .find_map(|l| {
                l.strip_prefix(k)
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    };
    get("MemTotal:") - get("MemFree:") - get("Buffers:") - get("Cached:") - get("SReclaimable:")
}

fn timed(mut cmd: Command) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let st = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    anyhow::ensure!(st.success(), "{cmd:?} failed with {st}");
    Ok(t.elapsed())
}

/// crun refuses a hybrid v1 + v2 cgroup layout; re-run the bench once in a private mount
/// namespace without the v2 mount.
fn reexec_for_crun() -> anyhow::Result<bool> {
    let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
        && Path::new("/sys/fs/cgroup/memory").is_dir();
    if !hybrid || std::env::var_os("SOULBOX_BENCH_PRIVATE_NS").is_some() {
        return Ok(false);
    }
    let exe = std::env::current_exe()?;
    let st = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "umount /sys/fs/cgroup/unified && exec \"$0\" \"$@\"",
        ])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env("SOULBOX_BENCH_PRIVATE_NS", "1")
        .status()?;
    std::process::exit(st.code().unwrap_or(1));
}

pub async fn run(ctx: &Context, a: BenchArgs) -> anyhow::Result<()> {
    let crun = !a.no_crun
        && Command::new("crun")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if crun {
        reexec_for_crun()?;
    }
    let backend = ctx.backend()?;
    let template = backend.templates().get(&a.template)?;
    let rootfs = template.layers[0].clone();
    let spec = SandboxSpec {
        template: a.template.clone(),
        limits: Limits::default(),
        ..Default::default()
    };
    eprintln!(
        "benchmarking template {} ({} writable layer); this takes a minute",
        a.template,
        format!("{:?}", ctx.writable_layer).to_lowercase()
    );

    // Floor: a bare unshare of the same namespaces around /bin/true.
    let mut floor = vec![];
    for _ in 0..a.creates {
        let mut c = Command::new("unshare");
        c.args([
            "--user",
            "--map-root-user",
            "--mount",
            "--pid",
            "--fork",
            "--net",
            "--uts",
            "--ipc",
            "/bin/true",
        ]);
        floor.push(timed(c)?);
    }

    // SoulBox: create → agent ready, one at a time; then `true` through the agent.
    let mut seq = vec![];
    for _ in 0..a.creates {
        let t = Instant::now();
        let sb = backend.create(spec.clone()).await?;
        seq.push(t.elapsed());
        backend.kill(&sb.id).await?;
    }
    let mut par = vec![];
    for _ in 0..a.rounds {
        let futs = (0..20).map(|_| {
            let (b, s) = (backend.clone(), spec.clone());
            async move {
                let t = Instant::now();
                let r = b.create(s).await;
                (t.elapsed(), r)
            }
        });
        let results = futures::future::join_all(futs).await;
        for (d, r) in results {
            par.push(d);
            backend.kill(&r?.id).await?;
        }
    }
    let sb = backend.create(spec.clone()).await?;
    let mut client = AgentClient::connect(&sb.socket, None).await?;
    let mut exec = vec![];
    for _ in 0..a.execs {
        let t = Instant::now();
        let out = client.run("/bin/true", &[], Some("root")).await?;
        exec.push(t.elapsed());
        anyhow::ensure!(out.exit_code == 0, "true failed: {out:?}");
    }
    backend.kill(&sb.id).await?;

    // Memory: N idle sandboxes.
    settle().await;
    let before = mem_used_kib();
    let mut idle = vec![];
    for _ in 0..a.idle {
        idle.push(backend.create(spec.clone()).await?);
    }
    settle().await;
    let after = mem_used_kib();
    let charged: u64 = idle
        .iter()
        .filter_map(|s| backend.stats(&s.id).ok())
        .map(|s| s.cgroup.memory_bytes)
        .sum();
    for s in &idle {
        backend.kill(&s.id).await?;
    }
    let sb_mem = (after - before) as f64 / 1024.0 / a.idle as f64;
    let sb_charged = charged as f64 / (1 << 20) as f64 / a.idle as f64;

    backend.shutdown().await;
    let crun_results = if crun {
        Some(bench_crun(&rootfs, &a).context("crun comparison")?)
    } else {
        None
    };

    let date = chrono_date();
    println!(
        "\nsoulbox bench, {date}, template `{}`, {} writable layer, {} CPUs",
        a.template,
        format!("{:?}", ctx.writable_layer).to_lowercase(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("p50 / p99 unless noted\n");
    println!("| measure | soulbox | crun (same rootfs) | bare unshare (floor) |");
    println!("|---|---|---|---|");
    let cr = crun_results.as_ref();
    let dash = || "—".to_string();
    println!(
        "| create → ready, one at a time (n={}) | {} | {} | {} |",
        a.creates,
        Series(seq).cell(),
        cr.map(|c| c.run.cell()).unwrap_or_else(dash),
        Series(floor).cell()
    );
    println!(
        "| create → ready, 20 at once (n={}) | {} | {} | — |",
        a.rounds * 20,
        Series(par).cell(),
        cr.map(|c| c.run20.cell()).unwrap_or_else(dash)
    );
    println!(
        "| `true` round trip (n={}) | {} | {} | — |",
        a.execs,
        Series(exec).cell(),
        cr.map(|c| c.exec.cell()).unwrap_or_else(dash)
    );
    println!("| host memory per idle sandbox ({} idle) | {sb_mem:.2} MiB (cgroup-charged {sb_charged:.2} MiB) | {} | — |", a.idle, cr.map(|c| format!("{:.2} MiB", c.mem_mib)).unwrap_or_else(dash));
    println!("\ncrun: `crun run` of /bin/true (create → exit), `crun exec` of /bin/true into a running container, idle containers running `sleep`.");
    Ok(())
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

fn chrono_date() -> String {
    let out = Command::new("date").arg("+%Y-%m-%d").output().ok();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

struct CrunResults {
    run: Series,
    run20: Series,
    exec: Series,
    mem_mib: f64,
}

fn bench_crun(rootfs: &Path, a: &BenchArgs) -> anyhow::Result<CrunResults> {
    let dir = tempfile::tempdir()?;
    let bundle = dir.path().to_path_buf();
    let state = bundle.join("state");
    let mk_config = |args: &[&str]| -> anyhow::Result<()> {
        let _ = std::fs::remove_file(bundle.join("config.json"));
        let st = Command::new("crun")
            .arg("spec")
            .current_dir(&bundle)
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(st.success(), "crun spec failed");
        let p = bundle.join("config.json");
        let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&p)?)?;
        cfg["root"] = serde_json::json!({"path": rootfs, "readonly": true});
        cfg["process"]["terminal"] = false.into();
        cfg["process"]["args"] = serde_json::json!(args);
        std::fs::write(&p, serde_json::to_vec(&cfg)?)?;
        Ok(())
    };
    let crun = |args: &[&str]| {
        let mut c = Command::new("crun");
        c.arg("--root")
            .arg(&state)
            .args(args)
            .arg("--bundle")
            .arg(&bundle);
        c
    };
    let crun_plain = |args: &[&str]| {
        let mut c = Command::new("crun");
        c.arg("--root").arg(&state).args(args);
        c
    };
    mk_config(&["/bin/true"])?;
    let mut run = vec![];
    for i in 0..a.creates {
        let mut c = crun(&["run"]);
        c.arg(format!("b{i}"));
        run.push(timed(c)?);
        let _ = crun_plain(&["delete", "-f", &format!("b{i}")]).output();
    }
    let mut run20 = vec![];
    for r in 0..a.rounds {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let mut c = crun(&["run"]);
                c.arg(format!("p{r}-{i}"));
                std::thread::spawn(move || timed(c))
            })
            .collect();
        for h in handles {
            run20.push(h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??);
        }
        for i in 0..20 {
            let _ = crun_plain(&["delete", "-f", &format!("p{r}-{i}")]).output();
        }
    }
    mk_config(&["/bin/sleep", "infinity"])?;
    let mut c = crun(&["run", "--detach"]);
    c.arg("execbox");
    timed(c)?;
    let mut exec = vec![];
    for _ in 0..a.execs {
        exec.push(timed(crun_plain(&["exec", "execbox", "/bin/true"]))?);
    }
    let _ = crun_plain(&["delete", "-f", "execbox"]).output();
    std::thread::sleep(Duration::from_secs(2));
    let before = mem_used_kib();
    for i in 0..a.idle {
        let mut c = crun(&["run", "--detach"]);
        c.arg(format!("idle{i}"));
        timed(c)?;
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = mem_used_kib();
    for i in 0..a.idle {
        let _ = crun_plain(&["delete", "-f", &format!("idle{i}")]).output();
    }
    Ok(CrunResults {
        run: Series(run),
        run20: Series(run20),
        exec: Series(exec),
        mem_mib: (after - before) as f64 / 1024.0 / a.idle as f64,
    })
}
