//! `GET /sandboxes/{id}/terminal?cols=&rows=`: a login shell on a pseudo-terminal in the
//! sandbox, over a WebSocket. Browser → server: binary frames are keystrokes, text frames are
//! `{"type":"resize","cols":N,"rows":N}`. Server → browser: binary frames are the terminal's
//! output; a last text frame `{"type":"exit","exitCode":N}` (or `{"type":"error",…}`) before
//! the close. The shell is the agent's PTY process; closing the socket kills it.

use crate::access::Team;
use crate::error::{ApiError, ApiResult};
use crate::proxy::Target;
use crate::AppState;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, Request};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;
use soulbox_protocol::connect;
use soulbox_protocol::process::{
    DataEvent, EventResponse, ProcessConfig, ProcessEvent, ProcessInput, ProcessSelector, Pty,
    PtySize, SendInputRequest, SendSignalRequest, Signal, StartRequest, UpdateRequest,
};

/// bash where the template has it, else the POSIX shell; a login shell either way.
const SHELL: &str = "if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l";

/// Largest frame a browser may send (a big paste).
const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Deserialize)]
pub struct Size {
    cols: Option<u32>,
    rows: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Resize { cols: u32, rows: u32 },
}

fn size(cols: Option<u32>, rows: Option<u32>) -> PtySize {
    PtySize {
        cols: cols.unwrap_or(80).clamp(2, 1000),
        rows: rows.unwrap_or(24).clamp(1, 500),
    }
}

pub async fn open(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
    Query(q): Query<Size>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let r = crate::api::find(&st, &team, &id).await?;
    if r.state == "paused" {
        return Err(ApiError::Conflict(format!(
            "sandbox {id} is paused: resume it to open a terminal"
        )));
    }
    let size = size(q.cols, q.rows);
    Ok(ws
        .max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            let pty = Shell {
                st,
                id: r.id,
                token: r.access_token,
            };
            pty.serve(socket, size).await
        }))
}

/// The sandbox's agent, reached through the proxy as an SDK would reach it.
struct Shell {
    st: AppState,
    id: String,
    token: String,
}

impl Shell {
    fn request(&self, method: &str, content_type: &str, body: bytes::Bytes) -> Request<Body> {
        Request::post(format!("/process.Process/{method}"))
            .header(header::HOST, "envd")
            .header(header::CONTENT_TYPE, content_type)
            .header("x-access-token", &self.token)
            .body(Body::from(body))
            .unwrap_or_default()
    }

    async fn send(&self, req: Request<Body>) -> Response {
        let target = Target {
            sandbox_id: self.id.clone(),
            port: soulbox_protocol::ENVD_PORT,
        };
        crate::metrics::proxy::forward(&self.st, target, req).await
    }

    /// A unary call; `Err` with the agent's message when it fails.
    async fn unary(&self, method: &str, msg: &impl serde::Serialize) -> Result<(), String> {
        let body = serde_json::to_vec(msg).unwrap_or_default();
        let resp = self
            .send(self.request(method, connect::UNARY_CONTENT_TYPE, body.into()))
            .await;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }

    async fn serve(self, socket: WebSocket, size: PtySize) {
        let (mut tx, mut rx) = socket.split();
        let end = match self.run(&mut tx, &mut rx, size).await {
            Ok(code) => json!({"type": "exit", "exitCode": code}),
            Err(Gone::Browser) => return,
            Err(Gone::Error(message)) => json!({"type": "error", "message": message}),
        };
        let _ = tx.send(Message::Text(end.to_string().into())).await;
        let _ = tx.close().await;
    }

    /// Runs the shell until it exits (its exit code) or the browser leaves.
    async fn run(
        &self,
        tx: &mut futures::stream::SplitSink<WebSocket, Message>,
        rx: &mut futures::stream::SplitStream<WebSocket>,
        size: PtySize,
    ) -> Result<i32, Gone> {
        let start = StartRequest {
            process: ProcessConfig {
                cmd: "/bin/sh".into(),
                args: vec!["-c".into(), SHELL.into()],
                envs: [("TERM", "xterm-256color"), ("LANG", "C.UTF-8")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                cwd: None,
            },
            pty: Some(Pty { size }),
            tag: None,
            stdin: Some(true),
        };
        let resp = self
            .send(self.request(
                "Start",
                connect::STREAM_CONTENT_TYPE,
                connect::encode_message(&start),
            ))
            .await;
        if !resp.status().is_success() {
            return Err(Gone::Error(format!(
                "the sandbox did not start a shell ({})",
                resp.status()
            )));
        }
        let mut body = resp.into_body().into_data_stream();
        let mut frames = connect::Decoder::new(MAX_FRAME * 4);
        let mut pid = None;
        let mut early = vec![];
        loop {
            tokio::select! {
                chunk = body.next() => {
                    let Some(Ok(chunk)) = chunk else {
                        return Err(Gone::Error("the sandbox's terminal ended (the sandbox was killed or paused)".into()));
                    };
                    frames.push(&chunk);
                    while let Some(env) = frames.next_envelope().map_err(|e| Gone::Error(e.to_string()))? {
                        if env.flags & connect::FLAG_END_STREAM != 0 {
                            return Err(Gone::Error(String::from_utf8_lossy(&env.payload).into()));
                        }
                        let Ok(ev) = serde_json::from_slice::<EventResponse>(&env.payload) else {
                            continue;
                        };
                        match ev.event {
                            ProcessEvent::Start(s) => {
                                pid = Some(s.pid);
                                for m in std::mem::take(&mut early) {
                                    self.take_browser_message(s.pid, m).await?;
                                }
                            }
                            ProcessEvent::Data(DataEvent::Pty(b) | DataEvent::Stdout(b) | DataEvent::Stderr(b)) => {
                                tx.send(Message::Binary(b.into())).await.map_err(|_| Gone::Browser)?;
                            }
                            ProcessEvent::End(e) => return Ok(e.exit_code),
                            ProcessEvent::Keepalive(_) => {}
                        }
                    }
                }
                msg = rx.next() => {
                    let Some(Ok(msg)) = msg else {
                        if let Some(pid) = pid {
                            self.kill(pid).await;
                        }
                        // Before the start answered, dropping the stream ends the shell.
                        return Err(Gone::Browser);
                    };
                    match pid {
                        Some(pid) => self.take_browser_message(pid, msg).await?,
                        // Typed before the shell runs: kept for it (bounded, like a frame).
                        None if early.len() < 64 => early.push(msg),
                        None => {}
                    }
                }
            }
        }
    }

    /// Keystrokes (binary frames) and resizes (text frames) from the browser.
    async fn take_browser_message(&self, pid: u32, msg: Message) -> Result<(), Gone> {
        match msg {
            Message::Binary(b) => self.input(pid, b.to_vec()).await,
            Message::Text(t) => match serde_json::from_str::<Control>(&t) {
                Ok(Control::Resize { cols, rows }) => self.resize(pid, size_of(cols, rows)).await,
                Err(_) => self.input(pid, t.as_bytes().to_vec()).await,
            },
            _ => Ok(()),
        }
    }

    async fn input(&self, pid: u32, data: Vec<u8>) -> Result<(), Gone> {
        let msg = SendInputRequest {
            process: ProcessSelector::Pid(pid),
            input: Some(ProcessInput::Pty(data)),
        };
        self.unary("SendInput", &msg).await.map_err(Gone::Error)
    }

    async fn resize(&self, pid: u32, size: PtySize) -> Result<(), Gone> {
        let msg = UpdateRequest {
            process: ProcessSelector::Pid(pid),
            pty: Some(Pty { size }),
        };
        self.unary("Update", &msg).await.map_err(Gone::Error)
    }

    async fn kill(&self, pid: u32) {
        let msg = SendSignalRequest {
            process: ProcessSelector::Pid(pid),
            signal: Signal::Sigkill,
        };
        if let Err(e) = self.unary("SendSignal", &msg).await {
            tracing::debug!(sandbox_id = %self.id, "ending a terminal's shell: {e}");
        }
    }
}

fn size_of(cols: u32, rows: u32) -> PtySize {
    size(Some(cols), Some(rows))
}

/// Why a terminal ended before its shell did.
enum Gone {
    /// The browser closed the socket.
    Browser,
    /// The sandbox went away or refused; said to the browser.
    Error(String),
}
