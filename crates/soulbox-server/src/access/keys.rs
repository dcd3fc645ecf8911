//! API keys with roles: the store's side and the team admin's `/api-keys` routes (E2B's
//! names; a key's `role` is SoulBox's). Keys are stored hashed; a new key is shown once.

use super::{audit, Caller, Role};
use crate::error::{ApiError, ApiResult, Body};
use crate::store::{hash_key, new_key, now, Result, Store};
use crate::{AppState, RateLimit};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

/// A valid key's caller, with its team's own rate limit if it has one.
pub struct FoundKey {
    pub caller: Caller,
    pub rate: Option<RateLimit>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub id: String,
    pub team_id: String,
    pub prefix: String,
    pub name: String,
    pub role: Role,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

fn key_record(r: &sqlx::sqlite::SqliteRow) -> KeyRecord {
    KeyRecord {
        id: r.get("id"),
        team_id: r.get("team_id"),
        prefix: r.get("prefix"),
        name: r.get("name"),
        role: Role::parse(r.get::<&str, _>("role")).unwrap_or(Role::ReadOnly),
        created_at: r.get("created_at"),
        revoked_at: r.get("revoked_at"),
    }
}

impl Store {
    /// The caller behind a key, if the key is valid and not revoked (one query: the key, its
    /// role and its team's rate limit).
    pub async fn caller_of_key(&self, key: &str) -> Result<Option<FoundKey>> {
        self.caller_where("k.key_hash = ?", &hash_key(key)).await
    }

    /// The caller behind a key id (a dashboard session's key), if the key is not revoked.
    pub async fn caller_of_key_id(&self, id: &str) -> Result<Option<FoundKey>> {
        self.caller_where("k.id = ?", id).await
    }

    async fn caller_where(&self, cond: &'static str, value: &str) -> Result<Option<FoundKey>> {
        let r = sqlx::query(&format!(
            "SELECT k.id, k.team_id, k.role, q.max_sandboxes, q.max_vcpus, q.max_memory_mb,
               q.max_storage_mb, q.rate_per_second, q.rate_burst
             FROM api_keys k LEFT JOIN team_quotas q ON q.team_id = k.team_id
             WHERE {cond} AND k.revoked_at IS NULL"
        ))
        .bind(value)
        .fetch_optional(self.pool())
        .await?;
        Ok(r.map(|r| {
            let per_second: Option<f64> = r.get("rate_per_second");
            let burst: Option<i64> = r.get("rate_burst");
            FoundKey {
                caller: Caller {
                    team: r.get("team_id"),
                    key_id: r.get("id"),
                    // An unreadable role grants the least.
                    role: Role::parse(r.get::<&str, _>("role")).unwrap_or(Role::ReadOnly),
                    quota: super::quota::Quota {
                        max_sandboxes: r.get("max_sandboxes"),
                        max_vcpus: r.get("max_vcpus"),
                        max_memory_mb: r.get("max_memory_mb"),
                        max_storage_mb: r.get("max_storage_mb"),
                        rate_per_second: per_second,
                        rate_burst: burst,
                    },
                },
                rate: per_second.map(|per_second| RateLimit {
                    per_second,
                    burst: burst
                        .unwrap_or(per_second.ceil() as i64)
                        .clamp(1, u32::MAX as i64) as u32,
                }),
            }
        }))
    }

    /// Stores a key (hashed) for a team with a role; returns its id. Storing a key that
    /// exists (the operator's `SOULBOX_ADMIN_API_KEY` at each start) un-revokes it.
    pub async fn add_key_with_role(
        &self,
        team_id: &str,
        key: &str,
        name: &str,
        role: Role,
    ) -> Result<String> {
        let id = crate::store::short_id();
        let r = sqlx::query(
            "INSERT INTO api_keys (id, team_id, key_hash, prefix, name, created_at, role)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(key_hash) DO UPDATE SET revoked_at = NULL, role = excluded.role
             RETURNING id",
        )
        .bind(&id)
        .bind(team_id)
        .bind(hash_key(key))
        .bind(key.chars().take(10).collect::<String>())
        .bind(name)
        .bind(now())
        .bind(role.as_str())
        .fetch_one(self.pool())
        .await?;
        Ok(r.get("id"))
    }

    /// The keys of one team or of all, oldest first.
    pub async fn key_records(&self, team_id: Option<&str>) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM api_keys WHERE (?1 IS NULL OR team_id = ?1) ORDER BY created_at, id",
        )
        .bind(team_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(key_record).collect())
    }

    /// Changes a key's role (by id or prefix, within a team if given); the key, if one
    /// changed.
    pub async fn set_key_role(
        &self,
        team_id: Option<&str>,
        id_or_prefix: &str,
        role: Role,
    ) -> Result<Option<KeyRecord>> {
        let r = sqlx::query(
            "UPDATE api_keys SET role = ?1 WHERE (id = ?2 OR prefix = ?2) AND revoked_at IS NULL
             AND (?3 IS NULL OR team_id = ?3) RETURNING *",
        )
        .bind(role.as_str())
        .bind(id_or_prefix)
        .bind(team_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(r.as_ref().map(key_record))
    }

    /// Revokes a key of a team by id; the key, if it was active.
    pub async fn revoke_team_key(&self, team_id: &str, id: &str) -> Result<Option<KeyRecord>> {
        let r = sqlx::query(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND team_id = ? AND revoked_at IS NULL
             RETURNING *",
        )
        .bind(now())
        .bind(id)
        .bind(team_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(r.as_ref().map(key_record))
    }

    /// Active admin keys of a team.
    pub async fn admin_count(&self, team_id: &str) -> Result<i64> {
        Ok(sqlx::query(
            "SELECT COUNT(*) AS n FROM api_keys WHERE team_id = ? AND role = 'admin' AND revoked_at IS NULL",
        )
        .bind(team_id)
        .fetch_one(self.pool())
        .await?
        .get("n"))
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api-keys", get(list).post(create))
        .route("/api-keys/{id}", delete(revoke).patch(update))
}

fn key_json(k: &KeyRecord) -> serde_json::Value {
    json!({
        "id": k.id, "name": k.name, "role": k.role, "prefix": k.prefix,
        "createdAt": k.created_at, "revokedAt": k.revoked_at,
        "mask": {"prefix": "e2b_", "maskedValuePrefix": k.prefix.get(4..).unwrap_or("")},
    })
}

async fn list(State(st): State<AppState>, c: Caller) -> ApiResult<Response> {
    let keys = st.store.key_records(Some(&c.team)).await?;
    Ok(Json(keys.iter().map(key_json).collect::<Vec<_>>()).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: Option<String>,
    role: Option<String>,
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "name must be 1 to 128 characters, without control characters".into(),
        ));
    }
    Ok(())
}

/// `POST /api-keys {"name", "role"}`: a new key of the caller's team, returned once. The
/// role defaults to member.
async fn create(State(st): State<AppState>, c: Caller, Body(body): Body) -> ApiResult<Response> {
    let req: NewKey = crate::api::parse(&body)?;
    let name = req.name.unwrap_or_else(|| "api".into());
    check_name(&name)?;
    let role = match req.role.as_deref() {
        None => Role::Member,
        Some(r) => Role::parse(r).map_err(ApiError::BadRequest)?,
    };
    let key = new_key();
    let id = st
        .store
        .add_key_with_role(&c.team, &key, &name, role)
        .await?;
    let rec = st
        .store
        .key_records(Some(&c.team))
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::Internal("the new key is not in the store".into()))?;
    let mut v = key_json(&rec);
    v["key"] = json!(key);
    let mut resp = (StatusCode::CREATED, Json(v)).into_response();
    audit::target(&mut resp, &id, json!({"name": name, "role": role}));
    Ok(resp)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyUpdate {
    role: Option<String>,
}

/// `PATCH /api-keys/{id} {"role"}`. A team keeps at least one admin key.
async fn update(
    State(st): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let req: KeyUpdate = crate::api::parse(&body)?;
    let role = Role::parse(req.role.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("role: {e}")))?;
    let keys = st.store.key_records(Some(&c.team)).await?;
    let Some(k) = keys.iter().find(|k| k.id == id && k.revoked_at.is_none()) else {
        return Err(ApiError::NotFound(format!("API key {id} not found")));
    };
    if k.role == Role::Admin && role != Role::Admin && st.store.admin_count(&c.team).await? <= 1 {
        return Err(ApiError::Conflict(
            "this is the team's last admin key: make another admin first".into(),
        ));
    }
    st.store.set_key_role(Some(&c.team), &id, role).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    audit::target(&mut resp, &id, json!({"role": role}));
    Ok(resp)
}

/// `DELETE /api-keys/{id}`: revoked at once, for every request after this one.
async fn revoke(
    State(st): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let keys = st.store.key_records(Some(&c.team)).await?;
    let Some(k) = keys.iter().find(|k| k.id == id && k.revoked_at.is_none()) else {
        return Err(ApiError::NotFound(format!("API key {id} not found")));
    };
    if k.role == Role::Admin && st.store.admin_count(&c.team).await? <= 1 {
        return Err(ApiError::Conflict(
            "this is the team's last admin key: make another admin first".into(),
        ));
    }
    st.store.revoke_team_key(&c.team, &id).await?;
    st.rate.forget(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
