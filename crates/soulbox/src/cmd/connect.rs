//! `soulbox connect ID`: an interactive terminal in a sandbox over a PTY. The local terminal
//! goes raw for the session (keys go to the sandbox's shell as typed), follows window resizes,
//! and is restored when the shell ends (`exit`, Ctrl-D) — also on errors.

use super::remote::RemoteArgs;
use anyhow::Context as _;
use clap::Args;
use nix::sys::termios::{self, SetArg, Termios};
use soulbox_client::{PtyEvent, PtyOptions};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use tokio::io::AsyncReadExt;

#[derive(Args, Debug)]
pub struct ConnectArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Sandbox id.
    id: String,
    /// Log in as this user (default: the template's, `user`).
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Start in this directory.
    #[arg(long, short = 'w')]
    cwd: Option<String>,
    /// Program to run instead of a login shell.
    #[arg(long)]
    shell: Option<String>,
}

nix::ioctl_read_bad!(window_size, libc::TIOCGWINSZ, libc::winsize);

/// Columns and rows of the terminal on `fd`.
fn size_of(fd: BorrowedFd<'_>) -> Option<(u32, u32)> {
    use std::os::fd::AsRawFd;
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass; the fd is borrowed and
    // open for the duration of the call.
    unsafe { window_size(fd.as_raw_fd(), &mut ws) }.ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col as u32, ws.ws_row as u32))
}

/// Puts the terminal in raw mode and puts it back when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())
            .context("soulbox connect needs a terminal (for scripts, use `soulbox exec`)")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).context("setting raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Runs the session; returns the shell's exit code.
pub async fn run(a: ConnectArgs) -> anyhow::Result<i32> {
    let sbx = a.remote.sandbox(&a.id, a.user.as_deref()).await?;
    let (cols, rows) = size_of(std::io::stdout().as_fd()).unwrap_or((80, 24));
    let mut opts = PtyOptions::new(cols, rows);
    if let Ok(term) = std::env::var("TERM") {
        opts = opts.env("TERM", term);
    }
    if let Some(shell) = a.shell {
        opts.cmd = "/bin/bash".into();
        opts.args = vec!["-l".into(), "-c".into(), shell];
    }
    opts.cwd = a.cwd;
    let raw = RawMode::enter()?;
    let mut pty = sbx.pty().create(opts).await?;

    // Keys → sandbox.
    let input = pty.input();
    let keys = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 || input.send(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    // Window size → sandbox.
    let input = pty.input();
    let resizes = tokio::spawn(async move {
        let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while winch.recv().await.is_some() {
            if let Some((c, r)) = size_of(std::io::stdout().as_fd()) {
                let _ = input.resize(c, r).await;
            }
        }
    });

    // Sandbox → screen, until the shell ends.
    let mut out = std::io::stdout();
    let mut code = 0;
    let result: anyhow::Result<()> = async {
        while let Some(ev) = pty.next().await {
            match ev? {
                PtyEvent::Output(b) => {
                    out.write_all(&b)?;
                    out.flush()?;
                }
                PtyEvent::Exit(e) => code = super::exec::exit_code_quiet(&e),
            }
        }
        Ok(())
    }
    .await;
    keys.abort();
    resizes.abort();
    drop(raw);
    result?;
    Ok(code)
}
