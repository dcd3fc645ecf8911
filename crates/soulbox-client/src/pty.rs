//! Interactive terminals: a shell on a pseudo-terminal in the sandbox.

use crate::commands::{send_input, start, CommandEvent, CommandHandle};
use crate::error::Result;
use crate::sandbox::Sandbox;
use soulbox_protocol::process::{
    ProcessConfig, ProcessInput, ProcessSelector, PtySize, StartRequest, UpdateRequest,
};
use std::collections::BTreeMap;

/// A terminal to open: `PtyOptions::new(cols, rows)` runs a login shell.
#[derive(Debug, Clone)]
pub struct PtyOptions {
    pub cols: u32,
    pub rows: u32,
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: BTreeMap<String, String>,
    pub cwd: Option<String>,
}

impl PtyOptions {
    pub fn new(cols: u32, rows: u32) -> Self {
        PtyOptions {
            cols,
            rows,
            cmd: "/bin/bash".into(),
            args: vec!["-i".into(), "-l".into()],
            envs: BTreeMap::from([
                ("TERM".to_string(), "xterm-256color".to_string()),
                ("LANG".to_string(), "C.UTF-8".to_string()),
            ]),
            cwd: None,
        }
    }
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.insert(key.into(), value.into());
        self
    }
}

/// `sandbox.pty()`.
#[derive(Debug, Clone, Copy)]
pub struct Pty<'a> {
    sbx: &'a Sandbox,
}

impl<'a> Pty<'a> {
    pub(crate) fn new(sbx: &'a Sandbox) -> Self {
        Pty { sbx }
    }

    /// Opens a terminal; returns once its shell runs.
    pub async fn create(&self, opts: PtyOptions) -> Result<PtyHandle> {
        let req = StartRequest {
            process: ProcessConfig {
                cmd: opts.cmd,
                args: opts.args,
                envs: opts.envs,
                cwd: opts.cwd,
            },
            pty: Some(soulbox_protocol::process::Pty {
                size: PtySize {
                    cols: opts.cols,
                    rows: opts.rows,
                },
            }),
            tag: None,
            stdin: Some(true),
        };
        let inner = start(self.sbx, "process.Process/Start", &req, None).await?;
        Ok(PtyHandle {
            sbx: self.sbx.clone(),
            inner,
        })
    }
}

/// An open terminal: its output, keystrokes, size.
#[derive(Debug)]
pub struct PtyHandle {
    sbx: Sandbox,
    inner: CommandHandle,
}

/// One event of a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtyEvent {
    /// Bytes the terminal shows (escape sequences included).
    Output(Vec<u8>),
    /// The shell ended (the last event).
    Exit(crate::commands::ExitStatus),
}

impl PtyHandle {
    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// The next output or the exit; `None` after the exit.
    pub async fn next(&mut self) -> Option<Result<PtyEvent>> {
        Some(self.inner.next().await?.map(|ev| match ev {
            CommandEvent::Exit(e) => PtyEvent::Exit(e),
            CommandEvent::Stdout(b) | CommandEvent::Stderr(b) | CommandEvent::Pty(b) => {
                PtyEvent::Output(b)
            }
        }))
    }

    /// Sends keystrokes (raw bytes: `b"\x03"` is Ctrl-C).
    pub async fn send_input(&self, data: &[u8]) -> Result<()> {
        send_input(&self.sbx, self.pid(), ProcessInput::Pty(data.to_vec())).await
    }

    /// Tells the terminal its new size (the shell gets SIGWINCH).
    pub async fn resize(&self, cols: u32, rows: u32) -> Result<()> {
        resize(&self.sbx, self.pid(), cols, rows).await
    }

    pub async fn kill(&self) -> Result<()> {
        self.inner.kill().await
    }

    /// A handle for input and resizes that can live on another task while this one reads.
    pub fn input(&self) -> PtyInput {
        PtyInput {
            sbx: self.sbx.clone(),
            pid: self.pid(),
        }
    }
}

/// Keystrokes and resizes for a terminal, separate from its output (see [`PtyHandle::input`]).
#[derive(Debug, Clone)]
pub struct PtyInput {
    sbx: Sandbox,
    pid: u32,
}

impl PtyInput {
    pub async fn send(&self, data: &[u8]) -> Result<()> {
        send_input(&self.sbx, self.pid, ProcessInput::Pty(data.to_vec())).await
    }

    pub async fn resize(&self, cols: u32, rows: u32) -> Result<()> {
        resize(&self.sbx, self.pid, cols, rows).await
    }
}

async fn resize(sbx: &Sandbox, pid: u32, cols: u32, rows: u32) -> Result<()> {
    let _: serde_json::Value = sbx
        .unary(
            "process.Process/Update",
            &UpdateRequest {
                process: ProcessSelector::Pid(pid),
                pty: Some(soulbox_protocol::process::Pty {
                    size: PtySize { cols, rows },
                }),
            },
        )
        .await?;
    Ok(())
}
