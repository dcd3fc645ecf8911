//! `soulbox exec ID -- CMD…`: run a command in a sandbox, streaming its output, and exit with
//! its exit code.

use super::remote::{parse_pair, RemoteArgs};
use clap::Args;
use soulbox_client::{CommandEvent, CommandOptions, ExitStatus, Signal};
use std::io::Write;
use tokio::io::AsyncReadExt;

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Sandbox id.
    id: String,
    /// The command: one argument is a shell command line (`'ls | wc -l'`), several are a
    /// program and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
    /// Run as this user (default: the template's, `user`).
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Working directory.
    #[arg(long, short = 'w')]
    cwd: Option<String>,
    /// Env var for the command (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_pair)]
    envs: Vec<(String, String)>,
    /// Forward this terminal's stdin to the command.
    #[arg(long, short = 'i')]
    stdin: bool,
    /// Kill the command after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
}

/// Runs the command; returns the exit code to leave with.
pub async fn run(a: ExecArgs) -> anyhow::Result<i32> {
    let sbx = a.remote.sandbox(&a.id, a.user.as_deref()).await?;
    let mut opts = match a.command.as_slice() {
        [line] => CommandOptions::new(line),
        // `exec "$@"` through a login shell: PATH as in the sandbox, arguments untouched.
        argv => CommandOptions::exec(
            "/bin/bash",
            ["-l", "-c", "exec \"$@\"", "soulbox-exec"]
                .into_iter()
                .map(String::from)
                .chain(argv.iter().cloned()),
        ),
    };
    opts.envs = a.envs.into_iter().collect();
    opts.cwd = a.cwd;
    opts.stdin = a.stdin;
    opts.timeout = a.timeout.map(std::time::Duration::from_secs);
    let mut handle = sbx.commands().spawn(opts).await?;
    let pid = handle.pid();
    if a.stdin {
        let sbx = sbx.clone();
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sbx.commands().send_stdin(pid, &buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = sbx.commands().close_stdin(pid).await;
        });
    }
    // Ctrl-C here stops the command there (and we still print what it says on the way out).
    let sbx2 = sbx.clone();
    tokio::spawn(async move {
        let mut signals = 0;
        while tokio::signal::ctrl_c().await.is_ok() {
            signals += 1;
            let sig = if signals == 1 {
                Signal::Sigterm
            } else {
                Signal::Sigkill
            };
            let _ = sbx2.commands().signal(pid, sig).await;
        }
    });
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut exit = None;
    while let Some(ev) = handle.next().await {
        match ev? {
            CommandEvent::Stdout(b) | CommandEvent::Pty(b) => {
                out.write_all(&b)?;
                out.flush()?;
            }
            CommandEvent::Stderr(b) => {
                err.write_all(&b)?;
                err.flush()?;
            }
            CommandEvent::Exit(e) => exit = Some(e),
        }
    }
    let exit =
        exit.ok_or_else(|| anyhow::anyhow!("the command's stream ended without its exit status"))?;
    if let Some(err) = &exit.error {
        eprintln!("soulbox: {err}");
    }
    Ok(exit_code_quiet(&exit))
}

/// The shell's convention: the exit code, or 128 + the signal that ended it.
pub fn exit_code_quiet(e: &ExitStatus) -> i32 {
    if e.code >= 0 && !(e.code == 0 && e.error.is_some()) {
        return e.code;
    }
    match e.status.as_str() {
        s if s.contains("killed") => 137,
        s if s.contains("terminated") => 143,
        s if s.contains("interrupt") => 130,
        _ => 1,
    }
}
