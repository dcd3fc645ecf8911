//! `soulbox template build|list`.

use super::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use soulbox_runtime::template::{TemplateStore, RECIPES};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug)]
pub enum TemplateCmd {
    /// Build templates (all of them if none is named). Cached builds are reused unless --force.
    Build {
        names: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// List templates and whether they are built.
    List,
}

pub fn run(ctx: &Context, cmd: TemplateCmd) -> anyhow::Result<()> {
    let store = TemplateStore::new(&ctx.data_dir);
    match cmd {
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
            Ok(())
        }
        TemplateCmd::Build { names, force } => {
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
