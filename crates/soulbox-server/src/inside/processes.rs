//! `GET /sandboxes/{id}/processes`: every process in the sandbox.

use crate::access::Team;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

pub async fn list(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let r = crate::api::find(&st, &team, &id).await?;
    if r.state == "paused" {
        return Err(ApiError::Conflict(format!(
            "sandbox {id} is paused: it has no processes until it is resumed"
        )));
    }
    let backend = st.backend.clone();
    let procs = tokio::task::spawn_blocking(move || backend.processes(&r.id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    // A listing stops at the runtime's cap; say so rather than pass it off as all.
    let truncated = procs.len() >= soulbox_runtime::ns::processes::MAX_PROCESSES;
    Ok(Json(json!({ "processes": procs, "truncated": truncated })))
}
