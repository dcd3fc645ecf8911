//! Snapshots and forks (spec §2.3): a sandbox's writable layer becomes one more layer in the
//! layer store, on top of the layers the sandbox stands on, and (with CRIU, unless `memory:
//! false`) a checkpoint of its processes one more above that, taken in the same freeze. A
//! snapshot is then a template of the team (`Sandbox.create(snapshot_id)`, `list_snapshots`,
//! `delete_snapshot`) whose sandboxes start with the parent's processes restored; a fork
//! starts sandboxes on that stack straight away. The parent runs on: it is frozen only while
//! its writes are synced, its image copied and its processes dumped (its open streams with
//! the host are cut; its commands go on, and `connect(pid)` reaches them again). Children
//! share every layer, copy-on-write.

use crate::api::{find, offset_token, parse, Team};
use crate::error::{ApiError, ApiResult, Body};
use crate::store::SandboxRecord;
use crate::templates::{Image, TemplateRecord};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use soulbox_runtime::layer::LayerId;
use soulbox_runtime::Backend;

/// Most sandboxes one fork makes.
pub const MAX_FORKS: i64 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sandboxes/{id}/snapshots", post(create_snapshot))
        .route("/snapshots", get(list))
        .route("/sandboxes/{id}/fork", post(fork))
}

#[derive(Debug, Default, Deserialize)]
struct SnapshotBody {
    name: Option<String>,
    memory: Option<bool>,
}

/// Makes the layer of sandbox `rec`'s files (and, if `memory` and it runs, of its processes)
/// and returns the image a sandbox of them starts with: its layers plus the new one, its env
/// vars, user and working directory, and its template's start command. The caller holds the
/// layer collector off (`layer_gc`) until the layers are in use.
async fn snapshot_image(st: &AppState, rec: &SandboxRecord, memory: bool) -> ApiResult<Image> {
    let state = st
        .backend
        .state_of(&rec.id)
        .ok_or_else(|| ApiError::NotFound(format!("sandbox {} not found", rec.id)))?;
    // Bottom first, as templates list them.
    let mut below = crate::templates::api::layer_ids(&state.layers);
    below.reverse();
    let parent = below.last().cloned();
    let made_by = format!(
        "snapshot of sandbox {} at {}",
        rec.id,
        chrono::Utc::now().to_rfc3339()
    );
    let id = LayerId::derive(parent.as_ref(), &made_by);
    let (backend, sandbox) = (st.backend.clone(), rec.id.clone());
    let layers = st.backend.templates().layers().clone();
    let (id2, made_by2) = (id.clone(), made_by.clone());
    // The checkpoint is made beside the sandbox, then moved into a layer of its own.
    let images = st.backend.sandbox_dir(&rec.id).join("snapshot-memory");
    let images2 = images.clone();
    let memory_id = LayerId::derive(Some(&id), &format!("memory of the {made_by}"));
    // As for a pause: a file being uploaded is in the snapshot whole, or its upload waits.
    st.pausing.close(&rec.id).await?;
    let memory_layer = tokio::task::spawn_blocking(move || {
        let mut saved = false;
        layers.create(&id2, parent.as_ref(), &made_by2, false, |root| {
            let memory = memory.then_some(images2.as_path());
            saved = backend
                .snapshot_blocking(&sandbox, root, memory)
                .map_err(|e| e.to_string())?;
            Ok(())
        })?;
        if !saved {
            return Ok(None);
        }
        let made = layers.create(&memory_id, Some(&id2), "checkpoint", false, |root| {
            for e in std::fs::read_dir(&images2)
                .map_err(|e| e.to_string())?
                .flatten()
            {
                std::fs::rename(e.path(), root.join(e.file_name())).map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        let _ = std::fs::remove_dir_all(&images2);
        made.map(|_| Some(memory_id))
    })
    .await;
    st.pausing.open(&rec.id);
    let _ = std::fs::remove_dir_all(&images);
    let memory_layer = memory_layer
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("snapshot of {}: {e}", rec.id)))?;
    below.push(id);
    if memory && memory_layer.is_none() {
        tracing::info!(sandbox_id = %rec.id, "snapshot of the files only: its processes could not be checkpointed (see above) or the server has no CRIU");
    }
    let template = crate::templates::api::resolve(st, &rec.team_id, &rec.template)
        .await
        .ok()
        .flatten();
    Ok(Image {
        layers: below,
        env: rec.env_vars.clone().into_iter().collect(),
        user: state.init.default_user.clone(),
        workdir: state.init.default_workdir.clone(),
        start_cmd: template.as_ref().and_then(|(_, i)| i.start_cmd.clone()),
        ready_cmd: template.and_then(|(_, i)| i.ready_cmd),
        memory: memory_layer,
    })
}

async fn create_snapshot(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let req: SnapshotBody = parse(&body)?;
    let rec = find(&st, &team, &id).await?;
    let name = match req.name {
        Some(n) => n,
        None => format!(
            "snapshot-{}-{}",
            rec.id,
            chrono::Utc::now().timestamp_millis()
        ),
    };
    let (name, _tag) = crate::templates::parse_name(&name).map_err(ApiError::BadRequest)?;
    crate::access::quota::check_storage(&st, &team).await?;
    let _one = st.pausing.lock(&rec.id).await;
    let _gc = st.layer_gc.read().await;
    let image = snapshot_image(&st, &rec, req.memory.unwrap_or(true)).await?;
    let t = st
        .store
        .insert_snapshot(
            &team,
            &name,
            &rec.id,
            (rec.cpu_millis + 999) / 1000,
            rec.memory_mb,
            rec.disk_mb,
            &image,
        )
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("a template named '{name}' exists")))?;
    tracing::info!(sandbox_id = %rec.id, snapshot = %t.name, "snapshot made");
    Ok((
        StatusCode::CREATED,
        Json(json!({"snapshotID": t.id, "names": [t.name]})),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    #[serde(rename = "sandboxID")]
    sandbox_id: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
    next_token: Option<String>,
}

async fn list(
    State(st): State<AppState>,
    Team(team): Team,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let mut all = st.store.snapshots(&team, q.sandbox_id.as_deref()).await?;
    if let Some(n) = &q.name {
        all.retain(|t| &t.name == n);
    }
    let skip = offset_token(q.next_token.as_deref(), "nextToken")? as usize;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let page: Vec<Value> = all
        .iter()
        .skip(skip)
        .take(limit)
        .map(|t| json!({"snapshotID": t.id, "names": [t.name]}))
        .collect();
    let mut resp = Json(page).into_response();
    if skip + limit < all.len() {
        if let Ok(v) = (skip + limit).to_string().parse() {
            resp.headers_mut().insert("x-next-token", v);
        }
    }
    Ok(resp)
}

#[derive(Debug, Default, Deserialize)]
struct ForkBody {
    timeout: Option<i64>,
    count: Option<i64>,
    /// `false`: the children start afresh on the parent's files.
    memory: Option<bool>,
}

/// `count` new sandboxes with the parent's files (and env vars, metadata, limits); the parent
/// runs on untouched. Each child is reported on its own: one that fails to start is an error
/// in the list, not a failed fork.
async fn fork(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let req: ForkBody = parse(&body)?;
    let count = req.count.unwrap_or(1);
    if !(1..=MAX_FORKS).contains(&count) {
        return Err(ApiError::BadRequest(format!(
            "count must be between 1 and {MAX_FORKS}"
        )));
    }
    let rec = find(&st, &team, &id).await?;
    let timeout = crate::api::check_timeout(&st, req.timeout.unwrap_or(rec.timeout_ms / 1000))?;
    // All the children are admitted at once, or none.
    let _seat = crate::access::quota::admit(
        &st,
        &team,
        crate::access::quota::Use {
            sandboxes: count as i64,
            cpu_millis: rec.cpu_millis * count as i64,
            memory_mb: rec.memory_mb * count as i64,
        },
    )
    .await?;
    let one = st.pausing.lock(&rec.id).await;
    let _gc = st.layer_gc.read().await;
    let image = snapshot_image(&st, &rec, req.memory.unwrap_or(true)).await?;
    drop(one);
    let t = TemplateRecord {
        id: rec.template.clone(),
        team_id: team.clone(),
        name: rec.template.clone(),
        public: false,
        cpu_count: (rec.cpu_millis + 999) / 1000,
        memory_mb: rec.memory_mb,
        disk_mb: rec.disk_mb,
        created_at: String::new(),
        updated_at: String::new(),
        snapshot_of: Some(rec.id.clone()),
    };
    let children = futures::future::join_all((0..count).map(|_| async {
        let token = soulbox_runtime::ns::new_token();
        let info = crate::templates::api::start_sandbox(
            &st,
            &t,
            &image,
            Some(token.clone()),
            Default::default(),
            rec.internet,
            crate::network_api::policy_of(&rec).map(|p| p.slot_policy()),
        )
        .await?;
        let child = crate::api::child_record(&rec, &info, token, timeout);
        crate::network_api::readopt(&st, &child);
        if let Err(e) = st.store.insert_sandbox(&child).await {
            let _ = st.backend.kill(&info.id).await;
            return Err(e.into());
        }
        Ok::<_, ApiError>(child)
    }))
    .await;
    let out: Vec<Value> = children
        .iter()
        .map(|c| match c {
            Ok(child) => json!({"sandbox": crate::api::sandbox_json(&st, child)}),
            Err(e) => json!({"error": {"code": e.status().as_u16(), "message": e.to_string()}}),
        })
        .collect();
    // The checkpoint was these children's only: once they run, collect it (their files'
    // layer stays while they use it).
    if image.memory.is_some() {
        let st = st.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::templates::api::collect_layers(&st).await {
                tracing::warn!("collecting a fork's checkpoint: {e}");
            }
        });
    }
    tracing::info!(sandbox_id = %rec.id, count, memory = image.memory.is_some(), "sandbox forked");
    let made: Vec<&str> = children
        .iter()
        .filter_map(|c| c.as_ref().ok().map(|c| c.id.as_str()))
        .collect();
    let mut resp = (StatusCode::CREATED, Json(out)).into_response();
    crate::access::audit::target(&mut resp, "", json!({ "children": made }));
    Ok(resp)
}
