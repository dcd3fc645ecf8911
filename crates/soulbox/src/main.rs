//! `soulbox`: the one binary. A thin CLI over the runtime crate.

mod cmd;
mod config;

use clap::{Parser, Subcommand};
use config::file::{Layer, LogFormat};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "soulbox",
    version,
    about = "Isolated Linux sandboxes for untrusted code, E2B-compatible"
)]
struct Cli {
    /// The settings file; a missing default file means the built-in defaults
    /// [default: /etc/soulbox/soulbox.toml].
    #[arg(long, global = true, env = "SOULBOX_CONFIG")]
    config: Option<PathBuf>,
    /// Where templates, sandboxes and state live [default: /var/lib/soulbox].
    #[arg(long, global = true, env = "SOULBOX_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Backing of each sandbox's writable layer [default: ext4].
    #[arg(long, global = true, env = "SOULBOX_WRITABLE_LAYER", value_enum)]
    writable_layer: Option<Layer>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the E2B-compatible API and the sandbox proxy.
    Serve(cmd::serve::ServeArgs),
    /// Check and show the settings (`soulbox.toml`, flags, environment).
    #[command(subcommand)]
    Config(cmd::config::ConfigCmd),
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
    let cli = Cli::parse();
    let config = match cli
        .command
        .is_local()
        .then(|| load_config(&cli))
        .transpose()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    };
    let (level, format) = match &config {
        Some(c) => (
            c.eff
                .monitoring
                .log_level
                .clone()
                .unwrap_or_else(|| "warn".into()),
            c.eff.monitoring.log_format.unwrap_or(LogFormat::Text),
        ),
        None => (
            std::env::var("SOULBOX_LOG").unwrap_or_else(|_| "warn".into()),
            LogFormat::Text,
        ),
    };
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&level).unwrap_or_else(|_| "warn".into()),
        );
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli, config)));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

impl Command {
    /// Whether the command works on this host (and so reads `soulbox.toml`); the others
    /// talk to a server.
    fn is_local(&self) -> bool {
        !matches!(
            self,
            Command::Sandbox(_)
                | Command::Exec(_)
                | Command::Connect(_)
                | Command::Files(_)
                | Command::Completions { .. }
        )
    }
}

/// The settings: flags and environment variables over `soulbox.toml` over the defaults.
fn load_config(cli: &Cli) -> anyhow::Result<config::Config> {
    let mut layer = config::File::default();
    layer.storage.data_dir = cli.data_dir.clone();
    layer.runtime.writable_layer = cli.writable_layer;
    match &cli.command {
        Command::Serve(a) => a.layer(&mut layer),
        Command::Config(c) => c.serve_args().layer(&mut layer),
        _ => {}
    }
    // Settings with an environment variable and no flag (secrets do not belong in flags,
    // where `ps` shows them).
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    layer.security.admin_api_key = env("SOULBOX_ADMIN_API_KEY");
    layer.security.secret_key = env("SOULBOX_SECRET_KEY");
    layer.monitoring.metrics_token = env("SOULBOX_METRICS_TOKEN");
    layer.monitoring.log_level = env("SOULBOX_LOG");
    layer.monitoring.log_format = match env("SOULBOX_LOG_FORMAT").as_deref() {
        None => None,
        Some("text") => Some(LogFormat::Text),
        Some("json") => Some(LogFormat::Json),
        Some(other) => anyhow::bail!("SOULBOX_LOG_FORMAT: '{other}' is neither text nor json"),
    };
    config::Config::load(cli.config.as_deref(), layer)
}

async fn run(cli: Cli, config: Option<config::Config>) -> anyhow::Result<()> {
    let ctx = config.map(|config| cmd::Context {
        data_dir: config.data_dir().to_path_buf(),
        writable_layer: match config.eff.runtime.writable_layer {
            Some(Layer::Tmpfs) => soulbox_runtime::ns::WritableLayer::Tmpfs,
            _ => soulbox_runtime::ns::WritableLayer::Ext4,
        },
        config,
    });
    // Set for every command that reads the settings (`Command::is_local`).
    let ctx = || ctx.as_ref().expect("a local command has its settings");
    match cli.command {
        Command::Serve(_) => cmd::serve::serve(ctx()).await,
        Command::Config(c) => cmd::config::run(ctx(), c),
        Command::Keys(c) => cmd::keys::keys(ctx(), c).await,
        Command::Teams(c) => cmd::teams::teams(ctx(), c).await,
        Command::Audit(a) => cmd::audit::audit(ctx(), a).await,
        Command::Doctor => cmd::doctor::run(ctx()),
        Command::Template(c) => cmd::template::run(ctx(), c).await,
        Command::Run(a) => cmd::run::run(ctx(), a).await,
        Command::Bench(a) => cmd::bench::run(ctx(), a).await,
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
