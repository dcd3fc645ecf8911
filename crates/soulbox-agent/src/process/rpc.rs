//! `process.Process` methods.

use super::spawn::write_all;
use super::{spawn, Proc, SpawnRequest};
use crate::rpc::{self, invalid, not_found, RpcResult, StreamSink};
use crate::state::Agent;
use axum::body::Body;
use axum::http::{HeaderMap, Response};
use futures::StreamExt;
use nix::pty::Winsize;
use soulbox_protocol::connect::{self, Code, ConnectError};
use soulbox_protocol::process::*;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub async fn start(agent: Agent, headers: HeaderMap, body: bytes::Bytes) -> Response<Body> {
    let req: StartRequest = match rpc::decode_stream_request(&body) {
        Ok(r) => r,
        Err(e) => return rpc::stream_error(e),
    };
    let proc = match start_process(&agent, &headers, req) {
        Ok(p) => p,
        Err(e) => return rpc::stream_error(e),
    };
    if let Some(limit) = rpc::deadline(&headers) {
        // Connect-Timeout-Ms bounds the process's life, as in envd.
        let p = Arc::clone(&proc);
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            if p.is_running() {
                p.signal(nix::sys::signal::Signal::SIGKILL);
            }
        });
    }
    follow(proc, rpc::keepalive(&headers))
}

fn start_process(agent: &Agent, headers: &HeaderMap, req: StartRequest) -> RpcResult<Arc<Proc>> {
    if req.process.cmd.is_empty() {
        return Err(invalid("process.cmd is empty"));
    }
    soulbox_protocol::env::check(&req.process.envs)
        .map_err(|e| invalid(format!("process.envs: {e}")))?;
    let user = agent.user(rpc::basic_user(headers)?.as_deref())?;
    let init = agent.init();
    let cwd = match req.process.cwd.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => user.home.join(c),
        None => init
            .default_workdir
            .as_deref()
            .map(PathBuf::from)
            .unwrap_or_else(|| user.home.clone()),
    };
    let cwd = if cwd.is_dir() {
        cwd
    } else if req.process.cwd.is_none() {
        PathBuf::from("/")
    } else {
        return Err(invalid(format!("cwd '{}' does not exist", cwd.display())));
    };
    let mut req = req;
    // The SDKs run every command as `/bin/bash -l -c …`; an image without bash (busybox,
    // distroless-with-shell) runs it with its `/bin/sh`, which takes the same options.
    if req.process.cmd == "/bin/bash"
        && !Path::new("/bin/bash").exists()
        && Path::new("/bin/sh").exists()
    {
        req.process.cmd = "/bin/sh".into();
    }
    let cmd = req.process.cmd.clone();
    spawn(
        &agent.processes,
        SpawnRequest {
            config: req.process,
            tag: req.tag,
            user,
            cwd,
            global_envs: init.env_vars,
            pty: req.pty.map(|p| p.size),
            stdin: req.stdin.unwrap_or(true),
        },
    )
    .map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            Code::InvalidArgument
        } else {
            Code::Internal
        };
        ConnectError::new(
            code,
            format!("failed to start '{}': {e}", Path::new(&cmd).display()),
        )
    })
}

/// Streams `start`, then output and `end` of a process; keepalives fill silences.
fn follow(proc: Arc<Proc>, keepalive: std::time::Duration) -> Response<Body> {
    let (mut events, ended) = proc.subscribe();
    let (sink, resp): (StreamSink<EventResponse>, _) = rpc::stream_response();
    let pid = proc.pid;
    tokio::spawn(async move {
        let send = |e| sink.send(EventResponse { event: e });
        if !send(ProcessEvent::Start(StartEvent { pid })).await {
            return;
        }
        if let Some(end) = ended {
            send(ProcessEvent::End(end)).await;
            return;
        }
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => {
                        let last = matches!(ev, ProcessEvent::End(_));
                        if !send(ev).await || last { return; }
                    }
                    None => return,
                },
                _ = tokio::time::sleep(keepalive) => {
                    if !send(ProcessEvent::Keepalive(Empty {})).await { return; }
                }
                // The client left: stop listening; the process keeps running.
                _ = sink.closed() => return,
            }
        }
    });
    resp
}

fn find(agent: &Agent, sel: &ProcessSelector) -> RpcResult<Arc<Proc>> {
    let p = match sel {
        ProcessSelector::Pid(pid) => agent.processes.get(*pid),
        ProcessSelector::Tag(tag) => agent.processes.by_tag(tag),
    };
    p.ok_or_else(|| not_found(format!("process {sel:?} not found")))
}

fn find_running(agent: &Agent, sel: &ProcessSelector) -> RpcResult<Arc<Proc>> {
    let p = find(agent, sel)?;
    if p.is_running() {
        Ok(p)
    } else {
        Err(not_found(format!("process {} has finished", p.pid)))
    }
}

pub async fn connect(agent: Agent, headers: HeaderMap, body: bytes::Bytes) -> Response<Body> {
    let req: SelectorRequest = match rpc::decode_stream_request(&body) {
        Ok(r) => r,
        Err(e) => return rpc::stream_error(e),
    };
    match find(&agent, &req.process) {
        Ok(p) => follow(p, rpc::keepalive(&headers)),
        Err(e) => rpc::stream_error(e),
    }
}

pub async fn list(agent: Agent, _body: bytes::Bytes) -> RpcResult<ListResponse> {
    Ok(ListResponse {
        processes: agent.processes.running(),
    })
}

pub async fn send_input(agent: Agent, body: bytes::Bytes) -> RpcResult<Empty> {
    let req: SendInputRequest = rpc::decode_unary(&body)?;
    let p = find_running(&agent, &req.process)?;
    write_input(&p, req.input).await?;
    Ok(Empty {})
}

async fn write_input(p: &Proc, input: Option<ProcessInput>) -> RpcResult<()> {
    let data = match input {
        Some(ProcessInput::Stdin(d)) | Some(ProcessInput::Pty(d)) => d,
        None => return Ok(()),
    };
    let fd = p
        .input
        .lock()
        .ok()
        .and_then(|i| i.clone())
        .ok_or_else(|| ConnectError::new(Code::FailedPrecondition, "stdin is not open"))?;
    write_all(&fd, &data)
        .await
        .map_err(|e| rpc::internal(format!("writing input: {e}")))
}

/// Client stream: a start event naming the process, then data events.
pub async fn stream_input(agent: Agent, body: Body) -> Response<Body> {
    let result = async {
        let mut decoder = connect::Decoder::new(rpc::MAX_MESSAGE);
        let mut stream = body.into_data_stream();
        let mut target: Option<Arc<Proc>> = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| invalid(format!("reading request: {e}")))?;
            decoder.push(&chunk);
            while let Some(env) = decoder
                .next_envelope()
                .map_err(|e| invalid(e.to_string()))?
            {
                if env.flags & connect::FLAG_END_STREAM != 0 {
                    continue;
                }
                let req: StreamInputRequest = rpc::decode_unary(&env.payload)?;
                match req.event {
                    StreamInputEvent::Start { process } => {
                        target = Some(find_running(&agent, &process)?)
                    }
                    StreamInputEvent::Data { input } => {
                        let p = target
                            .as_ref()
                            .ok_or_else(|| invalid("data before start event"))?;
                        write_input(p, input).await?;
                    }
                    StreamInputEvent::Keepalive(_) => {}
                }
            }
        }
        Ok::<_, ConnectError>(())
    }
    .await;
    let (sink, resp): (StreamSink<Empty>, _) = rpc::stream_response();
    tokio::spawn(async move {
        match result {
            Ok(()) => {
                sink.send(Empty {}).await;
            }
            Err(e) => sink.fail(e).await,
        }
    });
    resp
}

pub async fn send_signal(agent: Agent, body: bytes::Bytes) -> RpcResult<Empty> {
    let req: SendSignalRequest = rpc::decode_unary(&body)?;
    let p = find_running(&agent, &req.process)?;
    let sig = match req.signal {
        Signal::Sigkill => nix::sys::signal::Signal::SIGKILL,
        Signal::Sigterm => nix::sys::signal::Signal::SIGTERM,
        Signal::Unspecified => return Err(invalid("signal is unspecified")),
    };
    p.signal(sig);
    Ok(Empty {})
}

pub async fn close_stdin(agent: Agent, body: bytes::Bytes) -> RpcResult<Empty> {
    let req: SelectorRequest = rpc::decode_unary(&body)?;
    let p = find_running(&agent, &req.process)?;
    if p.pty.is_some() {
        return Err(invalid("cannot close stdin of a PTY process"));
    }
    if let Ok(mut i) = p.input.lock() {
        *i = None;
    }
    Ok(Empty {})
}

pub async fn update(agent: Agent, body: bytes::Bytes) -> RpcResult<Empty> {
    let req: UpdateRequest = rpc::decode_unary(&body)?;
    let p = find_running(&agent, &req.process)?;
    let (Some(size), Some(master)) = (req.pty, p.pty.as_ref()) else {
        return Err(invalid("process has no PTY"));
    };
    let ws = Winsize {
        ws_row: size.size.rows.clamp(1, u16::MAX as u32) as u16,
        ws_col: size.size.cols.clamp(1, u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one Winsize from a live reference; the fd is the PTY master.
    let rc = unsafe { libc::ioctl(master.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(rpc::internal(format!(
            "resize: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(Empty {})
}
