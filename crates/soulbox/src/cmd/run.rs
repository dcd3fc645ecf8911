//! `soulbox run`: one command in a fresh sandbox.

use super::Context;
use clap::Args;
use soulbox_runtime::agent_client::AgentClient;
use soulbox_runtime::{Backend, Limits, SandboxSpec};
use std::io::Write;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Template to start from.
    #[arg(long, short, default_value = "base")]
    template: String,
    /// Allow outbound internet access (NAT through the host).
    #[arg(long)]
    internet: bool,
    /// Memory limit in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u64,
    /// CPU quota in CPUs (e.g. 0.5).
    #[arg(long, default_value_t = 2.0)]
    cpus: f64,
    /// Disk size of the writable layer in MiB.
    #[arg(long, default_value_t = 5120)]
    disk: u64,
    /// Run as this user (default: `user`).
    #[arg(long)]
    user: Option<String>,
    /// The command, run with `bash -c` (quote it, or give words after `--`).
    #[arg(required = true, trailing_var_arg = true)]
    command: Vec<String>,
}

pub async fn run(ctx: &Context, a: RunArgs) -> anyhow::Result<()> {
    let backend = ctx.backend()?;
    // Built on first use, with progress.
    if let Err(soulbox_runtime::template::TemplateError::NotBuilt(_)) =
        backend.templates().get(&a.template)
    {
        super::template::build_one(backend.templates(), &a.template, false)?;
    }
    let limits = Limits {
        memory_bytes: a.memory << 20,
        cpu_millis: (a.cpus * 1000.0) as u64,
        disk_bytes: a.disk << 20,
        ..Limits::default()
    };
    let spec = SandboxSpec {
        template: a.template,
        limits,
        internet: a.internet,
        ..Default::default()
    };
    let sb = backend.create(spec).await?;
    let result = async {
        let mut c = AgentClient::connect(&sb.socket, None).await?;
        c.sh(&a.command.join(" "), a.user.as_deref()).await
    }
    .await;
    backend.kill(&sb.id).await?;
    backend.shutdown().await;
    let out = result?;
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    std::process::exit(
        out.exit_code
            .clamp(0, 255)
            .max(if out.exit_code < 0 { 128 } else { 0 }),
    );
}
