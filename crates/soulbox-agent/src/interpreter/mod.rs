//! The code interpreter (spec §4): `/execute` and `/contexts`, served on the routes the SDKs
//! address as port 49999. Each context is a real Jupyter kernel, run by a small Python bridge
//! (`bridge.py`, using jupyter_client over ZeroMQ) that streams E2B's line format back.
//!
//! Python runs in ipykernel, bash in bash_kernel, JavaScript and TypeScript in Deno's kernel.
//! As in E2B, the default contexts (Python and JavaScript) are there from the start: Python's
//! kernel is started ahead of the first `run_code`, JavaScript's (a Deno kernel holds ~175 MB)
//! on its first use.

use crate::process::spawn::{base_env, run_as};
use crate::reaper;
use crate::state::Agent;
use crate::users::User;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, Response, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

const BRIDGE: &str = include_str!("bridge.py");
/// How long a kernel may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// The official server sends a keepalive line after this long without output.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// A running kernel and the pipes to its bridge.
struct Kernel {
    id: String,
    language: String,
    cwd: String,
    pid: u32,
    /// The agent's env generation this kernel's environment reflects.
    env_seen: AtomicU64,
    requests: mpsc::UnboundedSender<String>,
    /// Lines from the bridge; held by one execution at a time.
    lines: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
}

/// Languages whose default context exists from the start (and is listed), as in E2B.
const DEFAULT_LANGUAGES: &[&str] = &["python", "javascript"];

/// The default context of a language: its id is known (and listed) before its kernel runs.
struct DefaultContext {
    id: String,
    /// Held while the kernel starts, so that concurrent first uses start one kernel.
    starting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
pub struct Contexts {
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
    /// Default context per language (the SDK's `run_code` without a context).
    defaults: Mutex<HashMap<String, Arc<DefaultContext>>>,
}

impl std::fmt::Debug for Contexts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contexts").finish_non_exhaustive()
    }
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(msg.into()))
        .unwrap_or_default()
}

fn json(v: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(v.to_string()))
        .unwrap_or_default()
}

/// `js` → `javascript`, `ts` → `typescript`, lower case; python by default.
pub fn normalize(lang: Option<&str>) -> String {
    match lang.map(|l| l.trim().to_lowercase()).as_deref() {
        None | Some("") => "python".into(),
        Some("js") => "javascript".into(),
        Some("ts") => "typescript".into(),
        Some(other) => other.into(),
    }
}

/// The Jupyter kernelspec that runs a language. Deno runs TypeScript, and JavaScript as a
/// subset of it.
fn kernel_name(language: &str) -> &str {
    match language {
        "python" => "python3",
        "javascript" | "typescript" | "deno" => "deno",
        other => other,
    }
}

/// The language whose default context serves `language`: JavaScript and TypeScript share
/// one Deno kernel rather than holding two.
fn default_language(language: &str) -> &str {
    match language {
        "typescript" => "javascript",
        other => other,
    }
}

/// Whether the sandbox can run a language's kernel: the Python Jupyter stack (the bridge needs
/// it), and for other languages their kernelspec in a system-wide Jupyter data directory.
fn kernel_available(language: &str) -> bool {
    match kernel_name(language) {
        "python3" => available(),
        name => {
            available()
                && ["/usr/local/share/jupyter", "/usr/share/jupyter"]
                    .iter()
                    .any(|d| {
                        std::path::Path::new(d)
                            .join("kernels")
                            .join(name)
                            .join("kernel.json")
                            .is_file()
                    })
        }
    }
}

/// Whether the sandbox has the Python Jupyter stack (the code-interpreter template has).
pub fn available() -> bool {
    ["/usr/local/lib", "/usr/lib"].iter().any(|base| {
        std::fs::read_dir(base)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let p = e.path();
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("python3"))
                    && (p.join("dist-packages/jupyter_client").is_dir()
                        || p.join("site-packages/jupyter_client").is_dir())
            })
    })
}

impl Contexts {
    /// Starts a kernel under the given context id; returns once it answers.
    async fn start(
        &self,
        agent: &Agent,
        id: String,
        language: &str,
        cwd: Option<&str>,
    ) -> Result<Arc<Kernel>, String> {
        let user = agent.user(None).map_err(|e| e.message)?;
        let cwd = cwd
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| user.home.to_string_lossy().into_owned());
        let env_seen = agent.env_generation();
        let (pid, requests, mut lines) =
            spawn_bridge(&user, language, &cwd, &agent.init().env_vars)
                .map_err(|e| format!("starting the {language} kernel: {e}"))?;
        let first = tokio::time::timeout(START_TIMEOUT, lines.recv())
            .await
            .ok()
            .flatten();
        match first
            .as_deref()
            .map(serde_json::from_str::<serde_json::Value>)
        {
            Some(Ok(v)) if v["type"] == "ready" => {}
            Some(Ok(v)) if v["type"] == "failed" => {
                return Err(format!(
                    "no {language} kernel: {}",
                    v["message"].as_str().unwrap_or_default()
                ))
            }
            _ => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(-(pid as i32)),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return Err(format!("the {language} kernel did not start"));
            }
        }
        let k = Arc::new(Kernel {
            id: id.clone(),
            language: language.into(),
            cwd,
            pid,
            env_seen: AtomicU64::new(env_seen),
            requests,
            lines: tokio::sync::Mutex::new(lines),
        });
        if let Ok(mut m) = self.kernels.lock() {
            m.insert(id, Arc::clone(&k));
        }
        Ok(k)
    }

    fn get(&self, id: &str) -> Option<Arc<Kernel>> {
        self.kernels.lock().ok()?.get(id).cloned()
    }

    /// The default context of a language (created, not started, if there is none yet).
    fn default_context(&self, language: &str) -> Option<Arc<DefaultContext>> {
        let mut d = self.defaults.lock().ok()?;
        let slot = d
            .entry(default_language(language).into())
            .or_insert_with(|| {
                Arc::new(DefaultContext {
                    id: uuid(),
                    starting: tokio::sync::Mutex::new(()),
                })
            });
        Some(Arc::clone(slot))
    }

    /// The default context of a language, its kernel started if needed.
    async fn default_for(&self, agent: &Agent, language: &str) -> Result<Arc<Kernel>, String> {
        let language = default_language(language);
        let slot = self
            .default_context(language)
            .ok_or("the context table is poisoned")?;
        let _starting = slot.starting.lock().await;
        if let Some(k) = self.get(&slot.id) {
            return Ok(k);
        }
        self.start(agent, slot.id.clone(), language, None).await
    }

    /// The language of a default context whose kernel has not started yet.
    fn unstarted_default(&self, id: &str) -> Option<String> {
        let d = self.defaults.lock().ok()?;
        d.iter()
            .find(|(_, slot)| slot.id == id)
            .map(|(language, _)| language.clone())
            .filter(|_| self.get(id).is_none())
    }

    /// The context with this id, a default one started on its first use; `None` if unknown.
    async fn find(&self, agent: &Agent, id: &str) -> Option<Result<Arc<Kernel>, String>> {
        if let Some(k) = self.get(id) {
            return Some(Ok(k));
        }
        let language = self.unstarted_default(id)?;
        Some(self.default_for(agent, &language).await)
    }

    /// Creates the default contexts of the languages this sandbox has, and starts Python's
    /// kernel ahead of the first `run_code` (a warm kernel).
    pub fn prewarm(agent: Agent) {
        for language in DEFAULT_LANGUAGES {
            if kernel_available(language) {
                agent.contexts.default_context(language);
            }
        }
        if !available() {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = agent.contexts.default_for(&agent, "python").await {
                tracing::warn!("prewarming the python kernel: {e}");
            }
        });
    }

    /// Forgets a context; a default one is replaced by a fresh one on the next use of its
    /// language.
    fn remove(&self, id: &str) -> (Option<Arc<Kernel>>, bool) {
        let was_default = self.defaults.lock().is_ok_and(|mut d| {
            let before = d.len();
            d.retain(|_, slot| slot.id != id);
            d.len() != before
        });
        let kernel = self.kernels.lock().ok().and_then(|mut m| m.remove(id));
        (kernel, was_default)
    }
}

fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

type Bridge = (
    u32,
    mpsc::UnboundedSender<String>,
    mpsc::UnboundedReceiver<String>,
);

/// Starts `python3 -c BRIDGE language kernelspec cwd` as the user; returns its pid and line
/// channels.
fn spawn_bridge(
    user: &User,
    language: &str,
    cwd: &str,
    envs: &BTreeMap<String, String>,
) -> std::io::Result<Bridge> {
    let mut cmd = Command::new("python3");
    cmd.args(["-u", "-c", BRIDGE, language, kernel_name(language), cwd])
        .current_dir(cwd);
    base_env(&mut cmd, user);
    cmd.envs(envs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    run_as(&mut cmd, user, false);
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let exit = reaper::watch(pid as i32);
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    drop(child);
    let mut stdin = tokio::net::unix::pipe::Sender::from_owned_fd(stdin.into())?;
    let stdout = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout.into())?;
    let (req_tx, mut req_rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(line) = req_rx.recv().await {
            if stdin
                .write_all(format!("{line}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let (line_tx, line_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if line_tx.send(l).is_err() {
                break;
            }
        }
        let _ = exit.await;
    });
    Ok((pid, req_tx, line_rx))
}

#[derive(Debug, Deserialize, Default)]
pub struct ExecuteRequest {
    code: Option<String>,
    context_id: Option<String>,
    language: Option<String>,
    env_vars: Option<BTreeMap<String, String>>,
}

pub async fn execute(State(agent): State<Agent>, body: Bytes) -> Response<Body> {
    let req: ExecuteRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
    };
    let Some(code) = req.code else {
        return text(StatusCode::BAD_REQUEST, "code is required");
    };
    if let Err(e) = soulbox_protocol::env::check(req.env_vars.as_ref().unwrap_or(&BTreeMap::new()))
    {
        return text(StatusCode::BAD_REQUEST, format!("invalid env_vars: {e}"));
    }
    if req.context_id.is_some() && req.language.is_some() {
        return text(
            StatusCode::BAD_REQUEST,
            "Only one of context_id or language can be provided",
        );
    }
    let kernel = match &req.context_id {
        Some(id) => match agent.contexts.find(&agent, id).await {
            Some(Ok(k)) => k,
            Some(Err(e)) => return text(StatusCode::INTERNAL_SERVER_ERROR, e),
            None => return text(StatusCode::NOT_FOUND, format!("Context {id} not found")),
        },
        None => match agent
            .contexts
            .default_for(&agent, &normalize(req.language.as_deref()))
            .await
        {
            Ok(k) => k,
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
    };
    let mut op = serde_json::json!({"op": "execute", "code": code, "env_vars": req.env_vars.unwrap_or_default()});
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        // One execution at a time per context, as in a notebook.
        let mut lines = kernel.lines.lock().await;
        // Sandbox env vars set after the kernel started (a pooled sandbox gets them at claim).
        let generation = agent.env_generation();
        if kernel.env_seen.swap(generation, Ordering::SeqCst) != generation {
            op["global_env"] = serde_json::json!(agent.init().env_vars);
        }
        if kernel.requests.send(op.to_string()).is_err() {
            let _ = tx
                .send(Ok(Bytes::from(error_line("the kernel is not running"))))
                .await;
            return;
        }
        let mut client_gone = false;
        loop {
            let next = tokio::time::timeout(KEEPALIVE, lines.recv()).await;
            let line = match next {
                Err(_) => {
                    if !client_gone
                        && tx
                            .send(Ok(Bytes::from("{\"type\": \"keepalive\"}\n")))
                            .await
                            .is_err()
                    {
                        client_gone = true;
                        // The client went away: stop the code, keep the kernel and its state.
                        let _ = kernel.requests.send("{\"op\": \"interrupt\"}".into());
                    }
                    continue;
                }
                Ok(Some(l)) => l,
                Ok(None) => {
                    let _ = tx
                        .send(Ok(Bytes::from(error_line("the kernel died"))))
                        .await;
                    let _ = tx
                        .send(Ok(Bytes::from("{\"type\": \"end_of_execution\"}\n")))
                        .await;
                    return;
                }
            };
            let end = line.contains("\"end_of_execution\"");
            if !client_gone && tx.send(Ok(Bytes::from(format!("{line}\n")))).await.is_err() {
                client_gone = true;
                let _ = kernel.requests.send("{\"op\": \"interrupt\"}".into());
            }
            if end {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

fn error_line(msg: &str) -> String {
    format!(
        "{}\n",
        serde_json::json!({"type": "error", "name": "UnexpectedEndOfExecution", "value": msg, "traceback": ""})
    )
}

#[derive(Debug, Deserialize, Default)]
pub struct CreateContext {
    language: Option<String>,
    cwd: Option<String>,
}

fn describe(k: &Kernel) -> serde_json::Value {
    serde_json::json!({"id": k.id, "language": k.language, "cwd": k.cwd})
}

pub async fn create_context(State(agent): State<Agent>, body: Bytes) -> Response<Body> {
    let req: CreateContext = if body.is_empty() {
        CreateContext::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
        }
    };
    match agent
        .contexts
        .start(
            &agent,
            uuid(),
            &normalize(req.language.as_deref()),
            req.cwd.as_deref(),
        )
        .await
    {
        Ok(k) => json(describe(&k)),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

pub async fn list_contexts(State(agent): State<Agent>) -> Response<Body> {
    let mut all: Vec<_> = agent
        .contexts
        .kernels
        .lock()
        .map(|m| m.values().map(|k| describe(k)).collect())
        .unwrap_or_default();
    // Default contexts whose kernels start on first use, with the cwd they will start in.
    let unstarted: Vec<_> = agent
        .contexts
        .defaults
        .lock()
        .map(|d| {
            d.iter()
                .map(|(language, slot)| (language.clone(), slot.id.clone()))
                .collect()
        })
        .unwrap_or_default();
    let home = agent
        .user(None)
        .map(|u| u.home.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (language, id) in unstarted {
        if agent.contexts.get(&id).is_none() {
            all.push(serde_json::json!({"id": id, "language": language, "cwd": home}));
        }
    }
    json(serde_json::Value::Array(all))
}

pub async fn restart_context(State(agent): State<Agent>, Path(id): Path<String>) -> Response<Body> {
    let Some(k) = agent.contexts.get(&id) else {
        if agent.contexts.unstarted_default(&id).is_some() {
            // Its kernel has not started: it is as fresh as a restart would make it.
            return json(serde_json::json!({}));
        }
        return text(StatusCode::NOT_FOUND, format!("Context {id} not found"));
    };
    let mut lines = k.lines.lock().await;
    if k.requests.send("{\"op\": \"restart\"}".into()).is_err() {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the kernel is not running",
        );
    }
    loop {
        match tokio::time::timeout(START_TIMEOUT, lines.recv()).await {
            Ok(Some(l)) if l.contains("\"ready\"") => return json(serde_json::json!({})),
            Ok(Some(_)) => continue,
            _ => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the kernel did not restart",
                )
            }
        }
    }
}

pub async fn delete_context(State(agent): State<Agent>, Path(id): Path<String>) -> Response<Body> {
    let k = match agent.contexts.remove(&id) {
        (Some(k), _) => k,
        (None, true) => return json(serde_json::json!({})),
        (None, false) => return text(StatusCode::NOT_FOUND, format!("Context {id} not found")),
    };
    let _ = k.requests.send("{\"op\": \"shutdown\"}".into());
    let pgid = nix::unistd::Pid::from_raw(-(k.pid as i32));
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
    });
    json(serde_json::json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_map_to_kernels_and_default_contexts() {
        for (sdk, language, kernel, default) in [
            (None, "python", "python3", "python"),
            (Some("js"), "javascript", "deno", "javascript"),
            (Some("JavaScript"), "javascript", "deno", "javascript"),
            (Some("ts"), "typescript", "deno", "javascript"),
            (Some("typescript"), "typescript", "deno", "javascript"),
            (Some("bash"), "bash", "bash", "bash"),
            (Some("r"), "r", "r", "r"),
        ] {
            let l = normalize(sdk);
            assert_eq!(l, language, "{sdk:?}");
            assert_eq!(kernel_name(&l), kernel, "{sdk:?}");
            assert_eq!(default_language(&l), default, "{sdk:?}");
        }
    }

    #[test]
    fn default_contexts_are_known_before_their_kernels_start() {
        let c = Contexts::default();
        let js = c.default_context("javascript").unwrap();
        assert_eq!(c.default_context("typescript").unwrap().id, js.id);
        assert_eq!(c.unstarted_default(&js.id).as_deref(), Some("javascript"));
        assert!(c.remove(&js.id).1);
        assert_eq!(c.unstarted_default(&js.id), None);
        assert_ne!(c.default_context("javascript").unwrap().id, js.id);
    }
}
