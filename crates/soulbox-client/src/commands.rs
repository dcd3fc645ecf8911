//! Commands in a sandbox: run to completion, or start in the background and stream.

use crate::error::{Error, Result};
use crate::sandbox::{MessageStream, Sandbox};
use futures::StreamExt;
use soulbox_protocol::process::{
    DataEvent, EventResponse, ListResponse, ProcessConfig, ProcessEvent, ProcessInfo, ProcessInput,
    ProcessSelector, SelectorRequest, SendInputRequest, SendSignalRequest, Signal, StartRequest,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// How to start a command. `CommandOptions::new("echo hi")` runs it with `bash -l -c`.
#[derive(Debug, Clone, Default)]
pub struct CommandOptions {
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// Keep stdin open for [`CommandHandle::send_stdin`].
    pub stdin: bool,
    /// Kill the command after this long.
    pub timeout: Option<Duration>,
    pub tag: Option<String>,
}

impl CommandOptions {
    /// A shell command line, run by `/bin/bash -l -c` as the E2B SDKs do.
    pub fn new(command_line: impl Into<String>) -> Self {
        CommandOptions {
            cmd: "/bin/bash".into(),
            args: vec!["-l".into(), "-c".into(), command_line.into()],
            ..Default::default()
        }
    }
    /// A program and its arguments, without a shell.
    pub fn exec(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        CommandOptions {
            cmd: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.insert(key.into(), value.into());
        self
    }
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }
    pub fn stdin(mut self, open: bool) -> Self {
        self.stdin = open;
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
}

/// What a finished command left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: ExitStatus,
}

impl CommandOutput {
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// How a process ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code; -1 when it was killed by a signal.
    pub code: i32,
    /// `exit status N` or `signal: killed`, as the agent reports it.
    pub status: String,
    /// Set when the process could not run or was stopped (e.g. its timeout).
    pub error: Option<String>,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == 0 && self.error.is_none()
    }
}

/// One event of a running command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Terminal output (PTY sessions).
    Pty(Vec<u8>),
    /// The last event.
    Exit(ExitStatus),
}

/// `sandbox.commands()`.
#[derive(Debug, Clone, Copy)]
pub struct Commands<'a> {
    sbx: &'a Sandbox,
}

impl<'a> Commands<'a> {
    pub(crate) fn new(sbx: &'a Sandbox) -> Self {
        Commands { sbx }
    }

    /// Runs a shell command line to completion and collects its output. A non-zero exit is
    /// not an error: look at `output.exit`.
    pub async fn run(&self, command_line: &str) -> Result<CommandOutput> {
        self.spawn(CommandOptions::new(command_line))
            .await?
            .wait()
            .await
    }

    /// Starts a command and returns once it runs (its pid is known).
    pub async fn spawn(&self, opts: CommandOptions) -> Result<CommandHandle> {
        let req = StartRequest {
            process: ProcessConfig {
                cmd: opts.cmd,
                args: opts.args,
                envs: opts.envs,
                cwd: opts.cwd,
            },
            pty: None,
            tag: opts.tag,
            stdin: Some(opts.stdin),
        };
        start(self.sbx, "process.Process/Start", &req, opts.timeout).await
    }

    /// Attaches to a running process's output (started by anyone).
    pub async fn connect(&self, pid: u32) -> Result<CommandHandle> {
        let req = SelectorRequest {
            process: ProcessSelector::Pid(pid),
        };
        start(self.sbx, "process.Process/Connect", &req, None).await
    }

    /// The processes the agent started and that still run.
    pub async fn list(&self) -> Result<Vec<ProcessInfo>> {
        let r: ListResponse = self
            .sbx
            .unary("process.Process/List", &serde_json::json!({}))
            .await?;
        Ok(r.processes)
    }

    pub async fn send_stdin(&self, pid: u32, data: &[u8]) -> Result<()> {
        send_input(self.sbx, pid, ProcessInput::Stdin(data.to_vec())).await
    }

    pub async fn close_stdin(&self, pid: u32) -> Result<()> {
        let _: serde_json::Value = self
            .sbx
            .unary(
                "process.Process/CloseStdin",
                &SelectorRequest {
                    process: ProcessSelector::Pid(pid),
                },
            )
            .await?;
        Ok(())
    }

    /// Sends SIGTERM or SIGKILL to the process's group.
    pub async fn signal(&self, pid: u32, signal: Signal) -> Result<()> {
        let _: serde_json::Value = self
            .sbx
            .unary(
                "process.Process/SendSignal",
                &SendSignalRequest {
                    process: ProcessSelector::Pid(pid),
                    signal,
                },
            )
            .await?;
        Ok(())
    }

    pub async fn kill(&self, pid: u32) -> Result<()> {
        self.signal(pid, Signal::Sigkill).await
    }
}

pub(crate) async fn send_input(sbx: &Sandbox, pid: u32, input: ProcessInput) -> Result<()> {
    let _: serde_json::Value = sbx
        .unary(
            "process.Process/SendInput",
            &SendInputRequest {
                process: ProcessSelector::Pid(pid),
                input: Some(input),
            },
        )
        .await?;
    Ok(())
}

/// Opens a process stream and reads up to its start event.
pub(crate) async fn start<Req: serde::Serialize>(
    sbx: &Sandbox,
    method: &str,
    req: &Req,
    timeout: Option<Duration>,
) -> Result<CommandHandle> {
    // The agent kills a Start process when its Connect-Timeout-Ms runs out.
    let headers: Vec<(&str, String)> = timeout
        .map(|t| ("Connect-Timeout-Ms", t.as_millis().to_string()))
        .into_iter()
        .collect();
    let mut events: MessageStream<EventResponse> = sbx.server_stream(method, req, &headers).await?;
    loop {
        match events.next().await {
            Some(Ok(EventResponse {
                event: ProcessEvent::Start(s),
            })) => {
                return Ok(CommandHandle {
                    sbx: sbx.clone(),
                    pid: s.pid,
                    events,
                    exit: None,
                })
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e),
            None => {
                return Err(Error::Protocol(
                    "the process stream ended before it started".into(),
                ))
            }
        }
    }
}

/// A running command: its events, its stdin, its signals.
pub struct CommandHandle {
    sbx: Sandbox,
    pid: u32,
    events: MessageStream<EventResponse>,
    exit: Option<ExitStatus>,
}

impl std::fmt::Debug for CommandHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHandle")
            .field("sandbox", &self.sbx.id())
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl CommandHandle {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next output or the exit; `None` after the exit.
    pub async fn next(&mut self) -> Option<Result<CommandEvent>> {
        if self.exit.is_some() {
            return None;
        }
        loop {
            let ev = match self.events.next().await? {
                Ok(ev) => ev,
                Err(e) => return Some(Err(e)),
            };
            return Some(Ok(match ev.event {
                ProcessEvent::Data(DataEvent::Stdout(b)) => CommandEvent::Stdout(b),
                ProcessEvent::Data(DataEvent::Stderr(b)) => CommandEvent::Stderr(b),
                ProcessEvent::Data(DataEvent::Pty(b)) => CommandEvent::Pty(b),
                ProcessEvent::End(end) => {
                    let exit = ExitStatus {
                        code: end.exit_code,
                        status: end.status,
                        error: end.error,
                    };
                    self.exit = Some(exit.clone());
                    CommandEvent::Exit(exit)
                }
                ProcessEvent::Start(_) | ProcessEvent::Keepalive(_) => continue,
            }));
        }
    }

    /// Collects the rest of the output and the exit.
    pub async fn wait(mut self) -> Result<CommandOutput> {
        let mut out = CommandOutput::default();
        while let Some(ev) = self.next().await {
            match ev? {
                CommandEvent::Stdout(b) | CommandEvent::Pty(b) => out.stdout.extend(b),
                CommandEvent::Stderr(b) => out.stderr.extend(b),
                CommandEvent::Exit(e) => out.exit = e,
            }
        }
        if self.exit.is_none() {
            return Err(Error::Protocol(
                "the process stream ended without an exit".into(),
            ));
        }
        Ok(out)
    }

    pub async fn send_stdin(&self, data: &[u8]) -> Result<()> {
        send_input(&self.sbx, self.pid, ProcessInput::Stdin(data.to_vec())).await
    }

    pub async fn close_stdin(&self) -> Result<()> {
        self.sbx.commands().close_stdin(self.pid).await
    }

    pub async fn signal(&self, signal: Signal) -> Result<()> {
        self.sbx.commands().signal(self.pid, signal).await
    }

    pub async fn kill(&self) -> Result<()> {
        self.signal(Signal::Sigkill).await
    }
}
