//! `soulbox template build|list|info|rm|logs`: the built-in templates on this host, and a
//! server's custom templates (`build -f Dockerfile`, through E2B's template API).

use super::remote::RemoteArgs;
use super::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use soulbox_runtime::template::{TemplateStore, RECIPES};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct TemplateArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    cmd: TemplateCmd,
}

#[derive(Subcommand, Debug)]
pub enum TemplateCmd {
    /// Build the built-in templates on this host (all of them if none is named; cached unless
    /// --force), or, with -f, a custom template from a Dockerfile on the server.
    Build {
        names: Vec<String>,
        #[arg(long)]
        force: bool,
        /// A Dockerfile: build it on the server (`--url`, `SOULBOX_URL`) as --name.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// NAME[:TAG] of the custom template.
        #[arg(long)]
        name: Option<String>,
        /// Directory COPY sources are relative to [default: the Dockerfile's].
        #[arg(long)]
        context: Option<PathBuf>,
        /// vCPUs of the build and of the template's sandboxes.
        #[arg(long)]
        cpu: Option<u32>,
        /// Memory in MiB of the build and of the template's sandboxes.
        #[arg(long)]
        memory: Option<u32>,
    },
    /// List the built-in templates here, and the server's custom ones when a key is set.
    List,
    /// A custom template: its builds, layers (sizes) and tags.
    Info { name: String },
    /// Delete a custom template (its layers no other template uses are freed).
    Rm { name: String },
    /// The log of a custom template's latest build.
    Logs { name: String },
}

pub async fn run(ctx: &Context, a: TemplateArgs) -> anyhow::Result<()> {
    let store = TemplateStore::new(&ctx.data_dir);
    match a.cmd {
        TemplateCmd::Build {
            file: Some(file),
            name,
            context,
            cpu,
            memory,
            force,
            ..
        } => {
            let name =
                name.ok_or_else(|| anyhow::anyhow!("--name NAME[:TAG] is required with -f"))?;
            super::template_build::build(&a.remote, &file, &name, context, cpu, memory, force).await
        }
        TemplateCmd::Info { name } => super::template_build::info(&a.remote, &name).await,
        TemplateCmd::Rm { name } => super::template_build::remove(&a.remote, &name).await,
        TemplateCmd::Logs { name } => super::template_build::logs(&a.remote, &name).await,
        TemplateCmd::List => {
            println!("{:<18} {:<8} DESCRIPTION", "NAME", "BUILT");
            for (r, built) in store.list() {
                println!(
                    "{:<18} {:<8} {}",
                    r.name,
                    if built { "yes" } else { "no" },
                    r.description
                );
            }
            super::template_build::list(&a.remote).await
        }
        TemplateCmd::Build { names, force, .. } => {
            let names: Vec<String> = if names.is_empty() {
                RECIPES.iter().map(|r| r.name.to_string()).collect()
            } else {
                names
            };
            for n in names {
                build_one(&store, &n, force)?;
            }
            Ok(())
        }
    }
}

/// Builds with visible progress: a spinner with the latest line on a terminal, plain lines
/// otherwise (CI logs).
pub fn build_one(store: &TemplateStore, name: &str, force: bool) -> anyhow::Result<()> {
    if !force {
        if let Ok(t) = store.get(name) {
            eprintln!("template {} is up to date ({})", t.name, t.hash);
            return Ok(());
        }
    }
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let bar = ProgressBar::new_spinner();
    if tty {
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed}] {prefix}: {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(format!("building {name}"));
        bar.enable_steady_tick(Duration::from_millis(120));
    } else {
        eprintln!("building template {name} (mmdebstrap; this takes a minute or two)");
    }
    let mut progress = |line: &str| {
        if tty {
            bar.set_message(line.to_string());
        } else if line.starts_with("I: ")
            || line.starts_with("Successfully")
            || line.starts_with("E: ")
        {
            eprintln!("  {line}");
        }
    };
    let result = if force {
        store.build(name, &mut progress)
    } else {
        store.ensure(name, &mut progress)
    };
    bar.finish_and_clear();
    let t = result?;
    println!(
        "built template {} ({}) in {:.1} s",
        t.name,
        t.hash,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
