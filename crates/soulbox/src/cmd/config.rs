//! `soulbox config check|show|default`.

use super::serve::ServeArgs;
use super::Context;
use clap::Subcommand;

/// The documented example, printed by `soulbox config default`.
pub const EXAMPLE: &str = include_str!("../../../../docs/soulbox.example.toml");

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Read and check the settings; exits non-zero, naming the key and line, if one is wrong.
    Check(ServeArgs),
    /// Print the settings `serve` would run with, every layer applied, secrets redacted.
    Show(ServeArgs),
    /// Print a commented example `soulbox.toml`.
    Default,
}

impl ConfigCmd {
    /// The `serve` flags given with `check` or `show`, which count as they would for `serve`.
    pub fn serve_args(&self) -> ServeArgs {
        match self {
            ConfigCmd::Check(a) | ConfigCmd::Show(a) => a.clone(),
            ConfigCmd::Default => ServeArgs::default(),
        }
    }
}

/// The settings were read and checked before this runs (a bad file never gets here).
pub fn run(ctx: &Context, cmd: ConfigCmd) -> anyhow::Result<()> {
    let c = &ctx.config;
    match cmd {
        ConfigCmd::Check(_) => match &c.path {
            Some(p) => println!("{}: ok", p.display()),
            None => println!(
                "no {} (the built-in defaults, flags and environment): ok",
                crate::config::DEFAULT_PATH
            ),
        },
        ConfigCmd::Show(_) => {
            if let Some(p) = &c.path {
                println!(
                    "# read from {}, under the flags and environment",
                    p.display()
                );
            }
            print!("{}", c.show());
        }
        ConfigCmd::Default => print!("{EXAMPLE}"),
    }
    Ok(())
}
