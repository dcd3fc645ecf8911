//! The agent's HTTP surface: envd's Connect services and plain endpoints on one router.

use crate::rpc::{self, unary_response};
use crate::state::Agent;
use crate::{files, fs, process::rpc as proc_rpc, watch};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, Response, StatusCode};
use axum::middleware::{self, Next};
use axum::routing::{get, post};
use axum::Router;
use soulbox_protocol::connect::{Code, ConnectError};
use soulbox_protocol::init::InitSpec;

pub fn router(agent: Agent) -> Router {
    let files = Router::new()
        .route("/files", get(files::handle).post(files::handle))
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/health", get(|| async { StatusCode::NO_CONTENT }))
        .route("/envs", get(envs))
        .route("/init", post(init))
        .route("/metrics", get(metrics))
        .route("/tunnel", get(crate::tunnel::open))
        .route("/execute", post(crate::interpreter::execute))
        .route(
            "/contexts",
            post(crate::interpreter::create_context).get(crate::interpreter::list_contexts),
        )
        .route(
            "/contexts/{id}",
            axum::routing::delete(crate::interpreter::delete_context),
        )
        .route(
            "/contexts/{id}/restart",
            post(crate::interpreter::restart_context),
        )
        .route("/{service}/{method}", post(dispatch))
        .layer(DefaultBodyLimit::max(rpc::MAX_MESSAGE))
        .merge(files)
        .layer(middleware::from_fn_with_state(agent.clone(), require_token))
        .with_state(agent)
}

/// Every route but `/health` needs the envd token; `/files` may carry a signature instead
/// (checked by its handler). The interpreter's routes also take the traffic token, the only
/// one the code-interpreter SDKs send on `/contexts`.
async fn require_token(State(agent): State<Agent>, req: Request, next: Next) -> Response<Body> {
    let path = req.uri().path();
    let open = matches!(path, "/health" | "/files");
    let interpreter = path == "/execute" || path == "/contexts" || path.starts_with("/contexts/");
    if open
        || rpc::check_token(&agent, req.headers())
        || (interpreter && rpc::check_traffic_token(&agent, req.headers()))
    {
        return next.run(req).await;
    }
    let is_connect =
        req.uri().path().contains(".Process/") || req.uri().path().contains(".Filesystem/");
    if is_connect {
        let e = ConnectError::new(
            Code::Unauthenticated,
            "unauthorized access, please provide a valid access token",
        );
        return rpc::unary_response::<()>(Err(e));
    }
    rpc::unauthorized()
}

async fn dispatch(
    State(agent): State<Agent>,
    Path((service, method)): Path<(String, String)>,
    headers: HeaderMap,
    req: Request,
) -> Response<Body> {
    let body = req.into_body();
    // Client streaming reads its body as it arrives; every other call takes it whole.
    if service == "process.Process" && method == "StreamInput" {
        return proc_rpc::stream_input(agent, body).await;
    }
    let bytes = match axum::body::to_bytes(body, rpc::MAX_MESSAGE).await {
        Ok(b) => b,
        Err(e) => return unary_response::<()>(Err(rpc::invalid(format!("reading request: {e}")))),
    };
    let a = agent;
    let h = headers;
    match (service.as_str(), method.as_str()) {
        ("process.Process", "Start") => proc_rpc::start(a, h, bytes).await,
        ("process.Process", "Connect") => proc_rpc::connect(a, h, bytes).await,
        ("process.Process", "List") => unary_response(proc_rpc::list(a, bytes).await),
        ("process.Process", "SendInput") => unary_response(proc_rpc::send_input(a, bytes).await),
        ("process.Process", "SendSignal") => unary_response(proc_rpc::send_signal(a, bytes).await),
        ("process.Process", "CloseStdin") => unary_response(proc_rpc::close_stdin(a, bytes).await),
        ("process.Process", "Update") => unary_response(proc_rpc::update(a, bytes).await),
        ("filesystem.Filesystem", "Stat") => unary_response(fs::stat(a, h, bytes).await),
        ("filesystem.Filesystem", "MakeDir") => unary_response(fs::make_dir(a, h, bytes).await),
        ("filesystem.Filesystem", "Move") => unary_response(fs::move_entry(a, h, bytes).await),
        ("filesystem.Filesystem", "ListDir") => unary_response(fs::list_dir(a, h, bytes).await),
        ("filesystem.Filesystem", "Remove") => unary_response(fs::remove(a, h, bytes).await),
        ("filesystem.Filesystem", "WatchDir") => watch::watch_dir(a, h, bytes).await,
        ("filesystem.Filesystem", "CreateWatcher") => {
            unary_response(watch::create_watcher(a, h, bytes).await)
        }
        ("filesystem.Filesystem", "GetWatcherEvents") => {
            unary_response(watch::get_watcher_events(a, bytes).await)
        }
        ("filesystem.Filesystem", "RemoveWatcher") => {
            unary_response(watch::remove_watcher(a, bytes).await)
        }
        _ => unary_response::<()>(Err(ConnectError::new(
            Code::Unimplemented,
            format!("{service}/{method} is not implemented"),
        ))),
    }
}

async fn envs(
    State(agent): State<Agent>,
) -> axum::Json<std::collections::BTreeMap<String, String>> {
    axum::Json(agent.init().env_vars)
}

/// Replaces the agent's configuration (envd's `/init`). Fields left out keep their value.
async fn init(State(agent): State<Agent>, body: axum::body::Bytes) -> Response<Body> {
    let new: InitSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return rpc::json_error(StatusCode::BAD_REQUEST, &format!("invalid init body: {e}"))
        }
    };
    // Refused whole: stored, a bad env var would make every later command fail.
    if let Err(e) = soulbox_protocol::env::check(&new.env_vars) {
        return rpc::json_error(StatusCode::BAD_REQUEST, &format!("invalid envVars: {e}"));
    }
    if let Ok(mut cur) = agent.init.write() {
        if !new.env_vars.is_empty() {
            cur.env_vars = new.env_vars;
            agent
                .env_generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if new.access_token.is_some() {
            cur.access_token = new.access_token;
        }
        if new.default_user.is_some() {
            cur.default_user = new.default_user;
        }
        if new.default_workdir.is_some() {
            cur.default_workdir = new.default_workdir;
        }
    }
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header("X-Envd-Version", soulbox_protocol::ENVD_VERSION)
        .body(Body::empty())
        .unwrap_or_default()
}

/// envd's `/metrics`, from what the sandbox itself can see.
async fn metrics() -> axum::Json<serde_json::Value> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |key: &str| -> u64 {
        meminfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let total = kib("MemTotal:") * 1024;
    let used = total.saturating_sub(kib("MemAvailable:") * 1024);
    let (disk_total, disk_used) = nix::sys::statvfs::statvfs("/")
        .map(|s| {
            let f = s.fragment_size();
            (s.blocks() * f, (s.blocks() - s.blocks_free()) * f)
        })
        .unwrap_or((0, 0));
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    axum::Json(serde_json::json!({
        "ts": chrono::Utc::now().timestamp(),
        "cpu_count": cpus, "cpu_used_pct": 0.0,
        "mem_total": total, "mem_used": used, "mem_cache": kib("Cached:") * 1024,
        "mem_total_mib": total >> 20, "mem_used_mib": used >> 20,
        "disk_used": disk_used, "disk_total": disk_total,
    }))
}
