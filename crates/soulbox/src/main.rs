//! `soulbox`: the one binary. A thin CLI over the runtime crate.

mod cmd;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "soulbox",
    version,
    about = "Isolated Linux sandboxes for untrusted code, E2B-compatible"
)]
struct Cli {
    /// Where templates, sandboxes and state live.
    #[arg(
        long,
        global = true,
        env = "SOULBOX_DATA_DIR",
        default_value = "/var/lib/soulbox"
    )]
    data_dir: PathBuf,
    /// Backing of each sandbox's writable layer.
    #[arg(long, global = true, env = "SOULBOX_WRITABLE_LAYER", value_enum, default_value_t = Layer::Ext4)]
    writable_layer: Layer,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Layer {
    /// Sparse ext4 image per sandbox (real disk).
    Ext4,
    /// Size-limited tmpfs (memory-backed).
    Tmpfs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the E2B-compatible API and the sandbox proxy.
    Serve(cmd::serve::ServeArgs),
    /// Manage API keys and their roles (on this machine's store).
    #[command(subcommand)]
    Keys(cmd::keys::KeysCmd),
    /// Teams and their quotas (on this machine's store).
    #[command(subcommand)]
    Teams(cmd::teams::TeamsCmd),
    /// Read the audit log: who changed what, from where, with what outcome.
    Audit(cmd::audit::AuditArgs),
    /// Check that this host can run SoulBox, and say how to fix what is missing.
    Doctor,
    /// Build and list templates.
    Template(cmd::template::TemplateArgs),
    /// Run one command in a fresh sandbox and remove it afterwards.
    Run(cmd::run::RunArgs),
    /// Measure sandbox start, exec and memory, side by side with crun and a bare unshare.
    Bench(cmd::bench::BenchArgs),
    /// Create, list, pause, resume and kill sandboxes on a SoulBox server.
    Sandbox(cmd::sandbox::SandboxArgs),
    /// Run a command in a sandbox; exits with the command's exit code.
    Exec(cmd::exec::ExecArgs),
    /// Open an interactive terminal in a sandbox (exit or Ctrl-D ends it).
    Connect(cmd::connect::ConnectArgs),
    /// Files in a sandbox: ls, cat, cp (both ways), rm, mkdir.
    Files(cmd::files::FilesArgs),
    /// Print shell completions: `soulbox completions bash > /etc/bash_completion.d/soulbox`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() {
    // The launcher must not start threads or a runtime: check for it before anything else.
    if std::env::args().nth(1).as_deref() == Some("__launch") {
        // The launcher builds what the sandbox sees (its root's upper directory, mount points)
        // and starts its agent: the usual umask, not the private one `serve` runs under.
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        std::process::exit(soulbox_runtime::jail::run_launcher());
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SOULBOX_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli)));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let layer = match cli.writable_layer {
        Layer::Ext4 => soulbox_runtime::ns::WritableLayer::Ext4,
        Layer::Tmpfs => soulbox_runtime::ns::WritableLayer::Tmpfs,
    };
    let ctx = cmd::Context {
        data_dir: cli.data_dir,
        writable_layer: layer,
    };
    match cli.command {
        Command::Serve(a) => cmd::serve::serve(&ctx, a).await,
        Command::Keys(c) => cmd::keys::keys(&ctx, c).await,
        Command::Teams(c) => cmd::teams::teams(&ctx, c).await,
        Command::Audit(a) => cmd::audit::audit(&ctx, a).await,
        Command::Doctor => cmd::doctor::run(&ctx),
        Command::Template(c) => cmd::template::run(&ctx, c).await,
        Command::Run(a) => cmd::run::run(&ctx, a).await,
        Command::Bench(a) => cmd::bench::run(&ctx, a).await,
        Command::Sandbox(a) => cmd::sandbox::run(a).await,
        // The exit code is the remote command's; leave at once (a blocking stdin read must
        // not hold up the runtime's shutdown).
        Command::Exec(a) => std::process::exit(cmd::exec::run(a).await?),
        Command::Connect(a) => std::process::exit(cmd::connect::run(a).await?),
        Command::Files(a) => cmd::files::run(a).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "soulbox",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}
