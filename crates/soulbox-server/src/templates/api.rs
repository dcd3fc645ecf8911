//! The template routes (spec §2.7) and starting a sandbox from a custom template.

use super::steps::{self, StartRequest};
use super::{parse_name, BuildRecord, Image, TemplateRecord};
use crate::api::{parse, Team};
use crate::error::{ApiError, ApiResult, Body};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use soulbox_runtime::agent_client::AgentClient;
use soulbox_runtime::{Backend, Rootfs, SandboxInfo, SandboxSpec};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest COPY upload (one `filesHash`), in bytes.
pub const MAX_UPLOAD_BYTES: u64 = 8 << 30;
/// How long a ready command may take to pass before a create fails.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v3/templates", post(request_build))
        .route("/templates", get(list))
        .route("/templates/{id}", get(one).delete(remove).patch(update))
        .route("/templates/{id}/files/{hash}", get(upload_link).put(upload))
        .route("/v2/templates/{id}/builds/{build}", post(start_build))
        .route("/templates/{id}/builds/{build}/status", get(status))
        .route("/templates/aliases/{alias}", get(alias))
        .route("/default-templates", get(default_templates))
        .merge(super::tags::router())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BuildRequest {
    name: Option<String>,
    alias: Option<String>,
    tags: Option<Vec<String>>,
    cpu_count: Option<i64>,
    #[serde(rename = "memoryMB")]
    memory_mb: Option<i64>,
}

/// The team's own template, by id or name; another team's (public or not) is not theirs to
/// build, tag or delete.
pub(super) async fn own(st: &AppState, team: &str, id: &str) -> ApiResult<TemplateRecord> {
    match st.store.template(team, id).await? {
        Some(t) if t.team_id == team => Ok(t),
        _ => Err(ApiError::NotFound(format!("template '{id}' not found"))),
    }
}

async fn request_build(
    State(st): State<AppState>,
    Team(team): Team,
    Body(body): Body,
) -> ApiResult<Response> {
    let req: BuildRequest = parse(&body)?;
    let full = req
        .name
        .or(req.alias)
        .ok_or_else(|| ApiError::BadRequest("name is required".into()))?;
    let (name, tag) = parse_name(&full).map_err(ApiError::BadRequest)?;
    crate::access::quota::check_storage(&st, &team).await?;
    if soulbox_runtime::template::recipe::find(&name).is_some() {
        return Err(ApiError::Conflict(format!(
            "'{name}' is a built-in template; choose another name"
        )));
    }
    let mut tags = vec![tag];
    for t in req.tags.unwrap_or_default() {
        super::check_tag(&t).map_err(ApiError::BadRequest)?;
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    let (cpu, mem) = crate::limits::for_build(&st.cfg, req.cpu_count, req.memory_mb)?;
    let disk = crate::limits::build_disk_mb(&st.cfg);
    let (t, b) = st
        .store
        .request_build(&team, &name, &tags, cpu, mem, disk)
        .await?;
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(json!({
            "templateID": t.id, "buildID": b.id, "public": t.public,
            "names": [format!("{}:{}", t.name, tags[0])], "tags": tags, "aliases": [t.name],
        })),
    )
        .into_response();
    crate::access::audit::target(&mut resp, &t.id, json!({"name": t.name, "buildID": b.id}));
    Ok(resp)
}

async fn upload_link(
    State(st): State<AppState>,
    Team(team): Team,
    headers: HeaderMap,
    Path((id, hash)): Path<(String, String)>,
) -> ApiResult<Response> {
    let t = own(&st, &team, &id).await?;
    if !steps::is_hash(&hash) {
        return Err(ApiError::BadRequest(
            "the files hash must be 64 hex digits".into(),
        ));
    }
    let present = super::build::files_dir(&st, &team)
        .join(hash.to_lowercase())
        .is_file();
    let mut body = json!({"present": present});
    if !present {
        let token = soulbox_runtime::ns::new_token();
        st.upload_tokens
            .lock()
            .map(|mut m| {
                m.retain(|_, (_, _, at)| at.elapsed() < Duration::from_secs(3600));
                m.insert(
                    token.clone(),
                    (team.clone(), hash.to_lowercase(), Instant::now()),
                )
            })
            .ok();
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        body["url"] = format!("http://{host}/templates/{}/files/{hash}", t.id).into();
        body["headers"] = json!({"x-soulbox-upload-token": token});
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The SDK's PUT of a COPY's tar, authorised by the token of its upload link (the SDK sends
/// no API key there). Streamed to disk, bounded, and kept only when complete.
async fn upload(
    State(st): State<AppState>,
    Path((_id, hash)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    let token = headers
        .get("x-soulbox-upload-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unauthorized("missing upload token".into()))?;
    let (team, want) = st
        .upload_tokens
        .lock()
        .ok()
        .and_then(|mut m| m.remove(token))
        .filter(|(_, _, at)| at.elapsed() < Duration::from_secs(3600))
        .map(|(team, h, _)| (team, h))
        .ok_or_else(|| ApiError::Unauthorized("unknown or expired upload token".into()))?;
    if want != hash.to_lowercase() {
        return Err(ApiError::Unauthorized(
            "the upload token is for another hash".into(),
        ));
    }
    let dir = super::build::files_dir(&st, &team);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let tmp = dir.join(format!(".upload-{}", soulbox_runtime::ns::new_id()));
    let result = async {
        use tokio::io::AsyncWriteExt;
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut n = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::BadRequest(format!("reading the upload: {e}")))?;
            n += chunk.len() as u64;
            if n > MAX_UPLOAD_BYTES {
                return Err(ApiError::PayloadTooLarge(format!(
                    "uploads are limited to {MAX_UPLOAD_BYTES} bytes"
                )));
            }
            f.write_all(&chunk)
                .await
                .map_err(|e| ApiError::Internal(format!("storing the upload: {e}")))?;
        }
        f.sync_all()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        // A hostile archive (a path out of the layer, a tar bomb, a device) is refused here,
        // not found out in the middle of a build.
        let path = tmp.clone();
        let opts = soulbox_runtime::layer::unpack::UnpackOptions {
            max_bytes: st.cfg.build_disk_mb << 20,
            ..Default::default()
        };
        tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            soulbox_runtime::layer::unpack::check(f, &opts)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| {
            if e.contains("more than") {
                ApiError::PayloadTooLarge(format!("the uploaded archive is refused: {e}"))
            } else {
                ApiError::BadRequest(format!("the uploaded archive is refused: {e}"))
            }
        })?;
        tokio::fs::rename(&tmp, dir.join(&want))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result?;
    Ok(StatusCode::OK.into_response())
}

async fn start_build(
    State(st): State<AppState>,
    Team(team): Team,
    Path((id, build)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<Response> {
    let t = own(&st, &team, &id).await?;
    crate::access::quota::check_storage(&st, &team).await?;
    let req: StartRequest = parse(&body)?;
    // Bad steps are the caller's error, answered now rather than as a failed build.
    let parsed =
        steps::parse(req.steps.as_deref().unwrap_or_default()).map_err(ApiError::BadRequest)?;
    let files = super::build::files_dir(&st, &team);
    for (i, (step, _)) in parsed.iter().enumerate() {
        if let steps::Step::Copy {
            src, files_hash, ..
        } = step
        {
            if !files.join(files_hash.to_lowercase()).is_file() {
                return Err(ApiError::BadRequest(format!(
                    "step {} (COPY {src}): its files were not uploaded (filesHash {files_hash})",
                    i + 1
                )));
            }
        }
    }
    let b = st
        .store
        .build(&t.id, &build)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("build '{build}' not found")))?;
    if !st
        .store
        .start_build(&b.id, &String::from_utf8_lossy(&body))
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "build '{build}' was already started"
        )));
    }
    let tags = b.tags.clone();
    tokio::spawn(super::build::run(st.clone(), t, b, req, tags));
    Ok(StatusCode::ACCEPTED.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusQuery {
    logs_offset: Option<i64>,
    limit: Option<i64>,
    level: Option<String>,
}

async fn status(
    State(st): State<AppState>,
    Team(team): Team,
    Path((id, build)): Path<(String, String)>,
    Query(q): Query<StatusQuery>,
) -> ApiResult<Response> {
    let t = own(&st, &team, &id).await?;
    let b = st
        .store
        .build(&t.id, &build)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("build '{build}' not found")))?;
    let rank = |l: &str| {
        ["debug", "info", "warn", "error"]
            .iter()
            .position(|x| *x == l)
            .unwrap_or(1)
    };
    let min = q.level.as_deref().map(rank).unwrap_or(0);
    let entries: Vec<_> = st
        .store
        .build_logs(
            &b.id,
            q.logs_offset.unwrap_or(0).max(0),
            q.limit.unwrap_or(1000).clamp(1, 10_000),
        )
        .await?
        .into_iter()
        .filter(|e| rank(&e.level) >= min)
        .collect();
    let logs: Vec<String> = entries
        .iter()
        .map(|e| format!("{} {}", e.timestamp, e.message))
        .collect();
    let mut body = json!({
        "templateID": t.id, "buildID": b.id, "status": b.status, "logs": logs, "logEntries": entries,
    });
    if let Some(r) = b.reason {
        body["reason"] = r;
    }
    Ok(Json(body).into_response())
}

fn template_json(t: &TemplateRecord, latest: Option<&BuildRecord>, builds: usize) -> Value {
    json!({
        "templateID": t.id, "buildID": latest.map(|b| b.id.clone()).unwrap_or_default(),
        "cpuCount": t.cpu_count, "memoryMB": t.memory_mb, "diskSizeMB": t.disk_mb,
        "public": t.public, "aliases": [t.name], "names": [t.name],
        "createdAt": t.created_at, "updatedAt": t.updated_at, "createdBy": null,
        "lastSpawnedAt": null, "spawnCount": 0, "buildCount": builds,
        "envdVersion": soulbox_protocol::ENVD_VERSION,
        "buildStatus": latest.map(|b| b.status.clone()).unwrap_or_else(|| "waiting".into()),
    })
}

async fn list(State(st): State<AppState>, Team(team): Team) -> ApiResult<Response> {
    let mut out = vec![];
    for t in st.store.templates(&team).await? {
        let builds = st.store.builds(&t.id).await?;
        out.push(template_json(&t, builds.first(), builds.len()));
    }
    Ok(Json(out).into_response())
}

/// The built-in templates every team may start, in the shape of `GET /templates`.
async fn default_templates(State(st): State<AppState>, Team(_): Team) -> ApiResult<Response> {
    let d = crate::limits::builtin(&st.cfg);
    let layers = st.backend.templates().layers();
    let out: Vec<Value> = st
        .backend
        .templates()
        .list()
        .into_iter()
        .map(|(r, built)| {
            let id = soulbox_runtime::template::TemplateStore::layer_id(r);
            let at = layers
                .meta(&id)
                .map(|m| crate::api::rfc3339_ms(m.created_unix_ms as i64))
                .unwrap_or_else(|_| crate::api::rfc3339_ms(0));
            json!({
                "templateID": r.name, "buildID": id.to_string(),
                "cpuCount": d.cpu_millis / 1000, "memoryMB": d.memory_bytes >> 20,
                "diskSizeMB": d.disk_bytes >> 20, "public": true,
                "aliases": [r.name], "names": [r.name], "description": r.description,
                "isDefault": true, "createdAt": at, "updatedAt": at, "createdBy": null, "lastSpawnedAt": null,
                "spawnCount": 0, "buildCount": 1, "envdVersion": soulbox_protocol::ENVD_VERSION,
                "buildStatus": if built { "ready" } else { "waiting" },
            })
        })
        .collect();
    Ok(Json(out).into_response())
}

async fn one(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = own(&st, &team, &id).await?;
    let builds = st.store.builds(&t.id).await?;
    let mut v = template_json(&t, builds.first(), builds.len());
    let layers = st.backend.templates().layers();
    v["builds"] = builds
        .iter()
        .map(|b| {
            let stack: Vec<Value> = b
                .image
                .iter()
                .flat_map(|i| i.layers.iter())
                .map(|l| {
                    let m = layers.meta(l).ok();
                    json!({"id": l, "madeBy": m.as_ref().map(|m| m.made_by.clone()), "sizeBytes": m.map(|m| m.size_bytes)})
                })
                .collect();
            json!({"buildID": b.id, "status": b.status, "createdAt": b.created_at, "finishedAt": b.finished_at,
                   "cpuCount": b.cpu_count, "memoryMB": b.memory_mb, "layers": stack})
        })
        .collect();
    v["tags"] = super::tags::tags_json(&st, &t).await?;
    Ok(Json(v).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct Update {
    public: Option<bool>,
}

async fn update(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let t = own(&st, &team, &id).await?;
    let u: Update = parse(&body)?;
    if let Some(p) = u.public {
        st.store.set_template_public(&t.id, p).await?;
    }
    Ok(Json(json!({"names": [t.name]})).into_response())
}

/// Deletes a template; the layers no other template (or running sandbox) uses are freed in
/// the background, once no build is running.
async fn remove(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = own(&st, &team, &id).await?;
    st.store.delete_template(&t.id).await?;
    tracing::info!(template = %t.name, "template deleted");
    let st2 = st.clone();
    tokio::spawn(async move {
        match collect_layers(&st2).await {
            Ok(freed) => tracing::info!(freed_bytes = freed, "unused layers removed"),
            Err(e) => tracing::warn!("removing unused layers: {e}"),
        }
    });
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Removes every layer that no template build, built-in template or running sandbox uses.
/// Builds hold the read side of `layer_gc` while they run, so nothing they made so far goes.
pub async fn collect_layers(st: &AppState) -> ApiResult<u64> {
    let _all = st.layer_gc.write().await;
    let mut keep: std::collections::HashSet<_> =
        st.store.layers_in_use().await?.into_iter().collect();
    for (r, _) in st.backend.templates().list() {
        keep.insert(soulbox_runtime::template::TemplateStore::layer_id(r));
    }
    keep.extend(layer_ids(&st.backend.layers_in_use()));
    let layers = st.backend.templates().layers().clone();
    Ok(
        tokio::task::spawn_blocking(move || layers.collect_garbage(&keep))
            .await
            .unwrap_or(0),
    )
}

/// The store ids of layer directories (`<data>/layers/<id>/root`), in the same order.
pub fn layer_ids(dirs: &[std::path::PathBuf]) -> Vec<soulbox_runtime::layer::LayerId> {
    dirs.iter()
        .filter_map(|p| {
            p.parent()?
                .file_name()?
                .to_str()
                .and_then(soulbox_runtime::layer::LayerId::parse)
        })
        .collect()
}

async fn alias(
    State(st): State<AppState>,
    Team(team): Team,
    Path(alias): Path<String>,
) -> ApiResult<Response> {
    match st.store.template(&team, &alias).await? {
        Some(t) if t.team_id == team => {
            Ok(Json(json!({"templateID": t.id, "public": t.public})).into_response())
        }
        _ => Err(ApiError::NotFound(format!("template '{alias}' not found"))),
    }
}

/// A custom template named `name[:tag]` that `team` may start, with its ready image.
pub async fn resolve(
    st: &AppState,
    team: &str,
    name: &str,
) -> ApiResult<Option<(TemplateRecord, Image)>> {
    let (base, tag) = match name.split_once(':') {
        Some((b, t)) => (b, t),
        None => (name, "default"),
    };
    let Some(t) = st.store.template(team, base).await? else {
        return Ok(None);
    };
    let image = st
        .store
        .tagged_build(&t.id, tag)
        .await?
        .and_then(|b| b.image)
        .ok_or_else(|| ApiError::BadRequest(format!("template '{name}' has no ready build")))?;
    Ok(Some((t, image)))
}

/// Starts a sandbox of a custom template: its layers, env vars, user, workdir, cpu and
/// memory; then its start command, and returns once its ready command passes.
pub async fn start_sandbox(
    st: &AppState,
    t: &TemplateRecord,
    image: &Image,
    access_token: Option<String>,
    env_vars: BTreeMap<String, String>,
    internet: bool,
    egress: Option<soulbox_runtime::network::SlotPolicy>,
) -> ApiResult<SandboxInfo> {
    let layers = st.backend.templates().layers();
    let stack = layers
        .stack(&image.layers)
        .map_err(|e| ApiError::Internal(format!("template '{}': {e}", t.name)))?;
    let mut env: BTreeMap<String, String> = image.env.iter().cloned().collect();
    env.extend(env_vars);
    let memory = match &image.memory {
        Some(m) => layers
            .stack(std::slice::from_ref(m))
            .map_err(|e| ApiError::Internal(format!("template '{}': {e}", t.name)))?
            .pop(),
        None => None,
    };
    let token = access_token.unwrap_or_else(soulbox_runtime::ns::new_token);
    let spec = SandboxSpec {
        template: t.name.clone(),
        label: crate::LABEL_API.into(),
        limits: crate::limits::custom(&st.cfg, t),
        internet,
        egress,
        env_vars: env,
        access_token: Some(token.clone()),
        rootfs: Some(Rootfs {
            layers: stack,
            user: image.user.clone(),
            workdir: image.workdir.clone(),
            memory,
        }),
        writable_layer: None,
    };
    let info = st.backend.create(spec).await?;
    // A caller that goes away while the start command comes up takes the sandbox with it.
    let mut guard = super::build::KillOnDrop {
        backend: Arc::clone(&st.backend),
        id: Some(info.id.clone()),
    };
    // Restored from a memory snapshot, the start command's processes run already.
    if let Some(cmd) = image.start_cmd.as_ref().filter(|_| !info.restored) {
        start_and_wait(&info, &token, image, cmd)
            .await
            .map_err(ApiError::Internal)?;
    }
    guard.id = None;
    Ok(info)
}

/// Runs a custom template's start command again in a sandbox booted again on its files (a
/// resume after a filesystem pause), and waits for its ready command. Nothing to do for a
/// built-in template or one without a start command.
pub async fn restart_start_cmd(
    st: &AppState,
    rec: &crate::store::SandboxRecord,
    info: &SandboxInfo,
) -> ApiResult<()> {
    let Some((_, image)) = resolve(st, &rec.team_id, &rec.template)
        .await
        .ok()
        .flatten()
    else {
        return Ok(());
    };
    match &image.start_cmd {
        Some(cmd) => start_and_wait(info, &rec.access_token, &image, cmd)
            .await
            .map_err(ApiError::Internal),
        None => Ok(()),
    }
}

/// Starts the start command in the background; polls the ready command until it passes.
async fn start_and_wait(
    info: &SandboxInfo,
    token: &str,
    image: &Image,
    cmd: &str,
) -> Result<(), String> {
    let mut c = AgentClient::connect(&info.socket, Some(token.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    let process = soulbox_protocol::process::ProcessConfig {
        cmd: "/bin/sh".into(),
        args: vec!["-c".into(), cmd.into()],
        envs: Default::default(),
        cwd: image.workdir.clone(),
    };
    let user = image.user.clone();
    let ended = Arc::new(Mutex::new(None));
    let ended2 = ended.clone();
    tokio::spawn(async move {
        let r = c.run_live(process, user.as_deref(), &mut |_, _| {}).await;
        *ended2.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.map_err(|e| e.to_string()));
    });
    let Some(ready) = &image.ready_cmd else {
        return Ok(());
    };
    let start = Instant::now();
    loop {
        if let Some(Ok(code)) = ended.lock().map(|e| e.clone()).unwrap_or(None) {
            if code != 0 {
                return Err(format!("the start command '{cmd}' exited with {code}"));
            }
        }
        let mut probe = AgentClient::connect(&info.socket, Some(token.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(out) = probe
            .run("/bin/sh", &["-c", ready], image.user.as_deref())
            .await
        {
            if out.exit_code == 0 {
                return Ok(());
            }
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(format!(
                "the ready command '{ready}' did not pass within {READY_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Upload links given out: token → (team, files hash, when).
pub type UploadTokens = Mutex<HashMap<String, (String, String, Instant)>>;
