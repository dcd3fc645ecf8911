//! Team secrets: E2B's `/secrets` API. A team stores named values (API keys, tokens) that its
//! sandboxes never see: a sandbox's egress header templates name them as
//! `${e2b.secrets.NAME}` and the egress proxy puts the value in on the way out
//! ([`current_value`]).
//!
//! *Sealed, not hashed.* Unlike an API key, which the server only has to recognise, a secret
//! has to come back in clear for the proxy to send it, so it is sealed with the server's
//! secret key ([`crate::secrets::Sealer`], XChaCha20-Poly1305). The associated data is
//! `team_secret/<team id>/<secret id>/<version>`: a sealed value opens only in the row it was
//! written to, so one copied to another secret, version or team fails to open. A stored
//! value without the seal is refused as corrupt rather than passed through. The database
//! file alone, without the key, gives no value away.
//!
//! *Write-only.* No answer of this API ever carries a value: create, update, get and list
//! answer [`SecretInfo`] (id, name, current version, metadata, times). Nothing here logs a
//! value, and no struct that holds one derives `Debug`.
//!
//! *Versions.* Creating a secret stores version 1; every update stores the next version and
//! makes it current (an update's `metadata`, when given, replaces the old). Old versions stay,
//! sealed, so that a later feature can pin a sandbox to one; deleting a secret deletes all of
//! them (rows deleted, their freed cells zeroed by `secure_delete`, the write-ahead log then
//! truncated so that no copy of the sealed text lingers there either).
//!
//! *Team scope.* Every query is filtered by the caller's team: another team's secret is
//! answered 404, whether asked for by id or by name, and never resolved for another team's
//! sandboxes. A name is unique in its team (409 on a second create) and refers to it in
//! `{idOrName}`; ids are `sec_` + 32 hex digits and names may not start with `sec_`, so
//! the two never collide.
//!
//! *Limits* (400 with the reason): a name is 1–64 characters of `A-Z a-z 0-9 _ - .` (it is
//! written inside `${e2b.secrets.…}`; E2B's own examples use `openai-api-key`); a value is 1 B–64 KiB and must be
//! usable as an HTTP header value (no CR, LF, NUL or other control byte but tab); metadata has
//! at most 32 keys, keys of 1–256 bytes and values of at most 1 KiB, without control
//! characters; a team has at most 1000 secrets.

use crate::api::{offset_token, parse, Team};
use crate::error::{ApiError, ApiResult, Body};
use crate::store::{Store, StoreError};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

/// Most secrets one team has.
pub const MAX_SECRETS_PER_TEAM: i64 = 1000;
/// Longest name, in characters (ASCII).
pub const MAX_NAME_LEN: usize = 64;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
pub const MAX_METADATA_KEYS: usize = 32;
pub const MAX_METADATA_KEY_BYTES: usize = 256;
pub const MAX_METADATA_VALUE_BYTES: usize = 1 << 10;
/// Secret ids start with it; names may not.
const ID_PREFIX: &str = "sec_";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/secrets", get(list).post(create))
        .route("/secrets/{id}", get(info).post(update).delete(remove))
}

/// A secret as the API answers it: everything but the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    #[serde(rename = "secretID")]
    pub secret_id: String,
    pub name: String,
    #[serde(rename = "currentVersion")]
    pub current_version: i64,
    pub metadata: BTreeMap<String, String>,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "updatedAt")]
    pub updated_at: String,
}

/// `POST /secrets`. Holds a value: no `Debug`.
#[derive(Default, Deserialize)]
struct NewSecretBody {
    name: Option<String>,
    value: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
}

/// `POST /secrets/{idOrName}`. Holds a value: no `Debug`.
#[derive(Default, Deserialize)]
struct UpdateBody {
    value: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
}

// ---- HTTP handlers: thin over the functions below, which the tests drive. ----

async fn list(
    State(st): State<AppState>,
    Team(team): Team,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    list_json(&st.store, &team, &q).await
}

async fn create(
    State(st): State<AppState>,
    Team(team): Team,
    Body(body): Body,
) -> ApiResult<Response> {
    create_json(&st.store, &team, &body).await
}

async fn info(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    info_json(&st.store, &team, &id).await
}

async fn update(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    update_json(&st.store, &team, &id, &body).await
}

async fn remove(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    delete_json(&st.store, &team, &id).await
}

/// `GET /secrets?limit=&nextToken=`: the team's secrets, newest first, a page at a time
/// (the next page's token in `x-next-token`, as E2B's SDKs read it).
async fn list_json(store: &Store, team: &str, q: &HashMap<String, String>) -> ApiResult<Response> {
    let offset = offset_token(q.get("nextToken").map(String::as_str), "nextToken")?;
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|&l| l >= 1)
            .ok_or_else(|| {
                ApiError::BadRequest(format!("invalid limit '{l}': expected 1 or more"))
            })?
            .min(MAX_SECRETS_PER_TEAM),
    };
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let mut page = list_secrets(store, team, offset, limit + 1).await?;
    let more = page.len() as i64 > limit;
    page.truncate(limit as usize);
    let mut resp = Json(page).into_response();
    if more {
        if let Ok(v) = HeaderValue::from_str(&(offset + limit).to_string()) {
            resp.headers_mut().insert("x-next-token", v);
        }
    }
    Ok(resp)
}

async fn create_json(store: &Store, team: &str, body: &[u8]) -> ApiResult<Response> {
    let b: NewSecretBody = parse(body)?;
    let name = b
        .name
        .ok_or_else(|| ApiError::BadRequest("the secret's \"name\" is missing".into()))?;
    let value = b
        .value
        .ok_or_else(|| ApiError::BadRequest("the secret's \"value\" is missing".into()))?;
    let info = create_secret(store, team, &name, &value, b.metadata.unwrap_or_default()).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn info_json(store: &Store, team: &str, id_or_name: &str) -> ApiResult<Response> {
    match secret_info(store, team, id_or_name).await? {
        Some(info) => Ok(Json(info).into_response()),
        None => Err(not_found(id_or_name)),
    }
}

async fn update_json(
    store: &Store,
    team: &str,
    id_or_name: &str,
    body: &[u8],
) -> ApiResult<Response> {
    let b: UpdateBody = parse(body)?;
    let value = b
        .value
        .ok_or_else(|| ApiError::BadRequest("the secret's new \"value\" is missing".into()))?;
    let info = update_secret(store, team, id_or_name, &value, b.metadata).await?;
    Ok(Json(info).into_response())
}

async fn delete_json(store: &Store, team: &str, id_or_name: &str) -> ApiResult<Response> {
    if delete_secret(store, team, id_or_name).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(id_or_name))
    }
}

fn not_found(id_or_name: &str) -> ApiError {
    ApiError::NotFound(format!("secret {id_or_name} not found"))
}

fn db(e: sqlx::Error) -> ApiError {
    StoreError::from(e).into()
}

// ---- Validation. Messages never quote a value. ----

const NAME_RULE: &str = "a secret name is 1-64 characters of A-Z, a-z, 0-9, '_', '-' and '.'";

pub(crate) fn check_name(name: &str) -> ApiResult<()> {
    let bad = |why: String| Err(ApiError::BadRequest(format!("invalid secret name: {why}")));
    if name.is_empty() {
        return bad(format!("it is empty ({NAME_RULE})"));
    }
    if let Some((i, c)) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return bad(format!(
            "character {c:?} at position {i} is not allowed ({NAME_RULE}, as it is written inside ${{e2b.secrets.NAME}})"
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return bad(format!(
            "it is {} characters long, at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if name.len() >= ID_PREFIX.len() && name[..ID_PREFIX.len()].eq_ignore_ascii_case(ID_PREFIX) {
        return bad(format!(
            "it starts with '{ID_PREFIX}', which is reserved for secret ids"
        ));
    }
    Ok(())
}

pub(crate) fn check_value(value: &str) -> ApiResult<()> {
    let bad = |why: String| Err(ApiError::BadRequest(format!("invalid secret value: {why}")));
    if value.is_empty() {
        return bad("it is empty (a value is 1 B to 64 KiB)".into());
    }
    if value.len() > MAX_VALUE_BYTES {
        return bad(format!(
            "it is {} bytes, at most {MAX_VALUE_BYTES} (64 KiB) are allowed",
            value.len()
        ));
    }
    let header = "it is sent as (part of) an HTTP header value";
    for (i, b) in value.bytes().enumerate() {
        let what = match b {
            b'\r' => "a carriage return (CR)".to_string(),
            b'\n' => "a line feed (LF)".to_string(),
            0 => "a NUL byte".to_string(),
            b'\t' => continue,
            b if b < 0x20 || b == 0x7f => format!("the control byte 0x{b:02x}"),
            _ => continue,
        };
        return bad(format!("it contains {what} at byte {i}, and {header}"));
    }
    // What the proxy will need; the loop above gave the reason for every byte this refuses.
    if HeaderValue::from_bytes(value.as_bytes()).is_err() {
        return bad(format!("{header} and this one is not valid as such"));
    }
    Ok(())
}

pub(crate) fn check_metadata(m: &BTreeMap<String, String>) -> ApiResult<()> {
    let bad = |why: String| {
        Err(ApiError::BadRequest(format!(
            "invalid secret metadata: {why}"
        )))
    };
    if m.len() > MAX_METADATA_KEYS {
        return bad(format!(
            "{} keys, at most {MAX_METADATA_KEYS} are allowed",
            m.len()
        ));
    }
    for (k, v) in m {
        let shown: String = k.chars().take(40).collect();
        if k.is_empty() {
            return bad("a key is empty".into());
        }
        if k.len() > MAX_METADATA_KEY_BYTES {
            return bad(format!(
                "key {shown:?}… is {} bytes, at most {MAX_METADATA_KEY_BYTES} are allowed",
                k.len()
            ));
        }
        if k.chars().any(char::is_control) {
            return bad(format!("key {shown:?} contains a control character"));
        }
        if v.len() > MAX_METADATA_VALUE_BYTES {
            return bad(format!(
                "the value of {shown:?} is {} bytes, at most {MAX_METADATA_VALUE_BYTES} are allowed",
                v.len()
            ));
        }
        if v.chars().any(char::is_control) {
            return bad(format!(
                "the value of {shown:?} contains a control character"
            ));
        }
    }
    Ok(())
}

// ---- Storage. ----

/// What a version's sealed value is bound to.
fn bound_to(team_id: &str, secret_id: &str, version: i64) -> String {
    format!("team_secret/{team_id}/{secret_id}/{version}")
}

fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{ID_PREFIX}{hex}")
}

const INFO_COLUMNS: &str = "id, name, current_version, metadata, created_at, updated_at";

fn info_of(r: &SqliteRow) -> crate::store::Result<SecretInfo> {
    let id: String = r.get("id");
    let metadata = serde_json::from_str(&r.get::<String, _>("metadata"))
        .map_err(|e| StoreError::Corrupt(format!("metadata of secret {id}: {e}")))?;
    Ok(SecretInfo {
        name: r.get("name"),
        current_version: r.get("current_version"),
        metadata,
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        secret_id: id,
    })
}

fn metadata_json(m: &BTreeMap<String, String>) -> ApiResult<String> {
    serde_json::to_string(m).map_err(|e| ApiError::Internal(format!("secret metadata: {e}")))
}

/// Stores a new secret of the team, as version 1.
pub(crate) async fn create_secret(
    store: &Store,
    team_id: &str,
    name: &str,
    value: &str,
    metadata: BTreeMap<String, String>,
) -> ApiResult<SecretInfo> {
    check_name(name)?;
    check_value(value)?;
    check_metadata(&metadata)?;
    let id = new_id();
    let now = crate::store::now();
    let sealed = store
        .sealer()
        .seal(value, &bound_to(team_id, &id, 1))
        .map_err(StoreError::from)?;
    let metadata_text = metadata_json(&metadata)?;
    let conflict = || ApiError::Conflict(format!("the team already has a secret named {name}"));
    let mut tx = store.pool().begin().await.map_err(db)?;
    // Counting and inserting in one statement: its write lock makes the limit hold for
    // concurrent creates too.
    let inserted = sqlx::query(
        "INSERT INTO team_secrets (id, team_id, name, current_version, metadata, created_at, updated_at)
         SELECT ?, ?, ?, 1, ?, ?, ? WHERE (SELECT COUNT(*) FROM team_secrets WHERE team_id = ?) < ?",
    )
    .bind(&id)
    .bind(team_id)
    .bind(name)
    .bind(&metadata_text)
    .bind(&now)
    .bind(&now)
    .bind(team_id)
    .bind(MAX_SECRETS_PER_TEAM)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(r) if r.rows_affected() == 1 => {}
        Ok(_) => {
            let taken = sqlx::query("SELECT 1 FROM team_secrets WHERE team_id = ? AND name = ?")
                .bind(team_id)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .is_some();
            return Err(if taken {
                conflict()
            } else {
                ApiError::BadRequest(format!(
                    "the team has {MAX_SECRETS_PER_TEAM} secrets, the most it can have: delete one first"
                ))
            });
        }
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(conflict()),
        Err(e) => return Err(db(e)),
    }
    sqlx::query(
        "INSERT INTO team_secret_versions (secret_id, version, value, created_at) VALUES (?, 1, ?, ?)",
    )
    .bind(&id)
    .bind(&sealed)
    .bind(&now)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    tracing::info!(team_id, secret_id = %id, name, "secret created");
    Ok(SecretInfo {
        secret_id: id,
        name: name.to_string(),
        current_version: 1,
        metadata,
        created_at: now.clone(),
        updated_at: now,
    })
}

/// A page of the team's secrets, newest first.
pub(crate) async fn list_secrets(
    store: &Store,
    team_id: &str,
    offset: i64,
    limit: i64,
) -> crate::store::Result<Vec<SecretInfo>> {
    let rows = sqlx::query(&format!(
        "SELECT {INFO_COLUMNS} FROM team_secrets WHERE team_id = ?
         ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?"
    ))
    .bind(team_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(info_of).collect()
}

/// The team's secret of that id or name.
pub(crate) async fn secret_info(
    store: &Store,
    team_id: &str,
    id_or_name: &str,
) -> crate::store::Result<Option<SecretInfo>> {
    let r = sqlx::query(&format!(
        "SELECT {INFO_COLUMNS} FROM team_secrets WHERE team_id = ? AND (id = ? OR name = ?)"
    ))
    .bind(team_id)
    .bind(id_or_name)
    .bind(id_or_name)
    .fetch_optional(store.pool())
    .await?;
    r.as_ref().map(info_of).transpose()
}

/// Stores `value` as the next version of the team's secret and makes it current; `metadata`,
/// if given, replaces the secret's.
pub(crate) async fn update_secret(
    store: &Store,
    team_id: &str,
    id_or_name: &str,
    value: &str,
    metadata: Option<BTreeMap<String, String>>,
) -> ApiResult<SecretInfo> {
    check_value(value)?;
    let metadata_text = match &metadata {
        Some(m) => {
            check_metadata(m)?;
            Some(metadata_json(m)?)
        }
        None => None,
    };
    let now = crate::store::now();
    let mut tx = store.pool().begin().await.map_err(db)?;
    // The version is taken by the write itself, so concurrent updates get distinct ones.
    let row = sqlx::query(&format!(
        "UPDATE team_secrets
         SET current_version = current_version + 1, updated_at = ?, metadata = COALESCE(?, metadata)
         WHERE team_id = ? AND (id = ? OR name = ?)
         RETURNING {INFO_COLUMNS}"
    ))
    .bind(&now)
    .bind(&metadata_text)
    .bind(team_id)
    .bind(id_or_name)
    .bind(id_or_name)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    let Some(row) = row else {
        return Err(not_found(id_or_name));
    };
    let info = info_of(&row)?;
    let sealed = store
        .sealer()
        .seal(
            value,
            &bound_to(team_id, &info.secret_id, info.current_version),
        )
        .map_err(StoreError::from)?;
    sqlx::query(
        "INSERT INTO team_secret_versions (secret_id, version, value, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(&info.secret_id)
    .bind(info.current_version)
    .bind(&sealed)
    .bind(&now)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    tracing::info!(team_id, secret_id = %info.secret_id, name = %info.name, version = info.current_version, "secret updated");
    Ok(info)
}

/// Deletes the team's secret and all its versions; false if it has none of that id or name.
pub(crate) async fn delete_secret(
    store: &Store,
    team_id: &str,
    id_or_name: &str,
) -> crate::store::Result<bool> {
    let mut tx = store.pool().begin().await?;
    let id: Option<String> = sqlx::query_scalar(
        "DELETE FROM team_secrets WHERE team_id = ? AND (id = ? OR name = ?) RETURNING id",
    )
    .bind(team_id)
    .bind(id_or_name)
    .bind(id_or_name)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        return Ok(false);
    };
    // The foreign key cascades already; this holds even with foreign keys off.
    sqlx::query("DELETE FROM team_secret_versions WHERE secret_id = ?")
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(team_id, secret_id = %id, "secret deleted");
    // secure_delete zeroed the cells in the new pages; moving them into the database file
    // and emptying the log leaves no older page with the sealed text in either file. Best
    // effort: a checkpoint that readers hold up is done by a later one.
    if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(store.pool())
        .await
    {
        tracing::debug!(secret_id = %id, "checkpoint after deleting a secret: {e}");
    }
    Ok(true)
}

/// The plain value of the current version of the team's secret `name`; None if the team has
/// no secret of that name. For the egress proxy: do not log what it returns.
pub async fn current_value(
    store: &Store,
    team_id: &str,
    name: &str,
) -> crate::store::Result<Option<String>> {
    let r = sqlx::query(
        "SELECT s.id, s.current_version, v.value FROM team_secrets s
         LEFT JOIN team_secret_versions v ON v.secret_id = s.id AND v.version = s.current_version
         WHERE s.team_id = ? AND s.name = ?",
    )
    .bind(team_id)
    .bind(name)
    .fetch_optional(store.pool())
    .await?;
    let Some(r) = r else {
        return Ok(None);
    };
    let (id, version): (String, i64) = (r.get("id"), r.get("current_version"));
    let Some(stored) = r.get::<Option<String>, _>("value") else {
        return Err(StoreError::Corrupt(format!(
            "secret {id} has no version {version}"
        )));
    };
    // `Sealer::open` passes unsealed text through (for rows older than sealing); no secret
    // was ever stored unsealed, so such a value was put there behind the server's back.
    if !crate::secrets::Sealer::is_sealed(&stored) {
        return Err(StoreError::Corrupt(format!(
            "version {version} of secret {id} is not sealed"
        )));
    }
    Ok(Some(
        store
            .sealer()
            .open(&stored, &bound_to(team_id, &id, version))?,
    ))
}

/// Whether the team has a secret of that name.
pub async fn exists(store: &Store, team_id: &str, name: &str) -> crate::store::Result<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM team_secrets WHERE team_id = ? AND name = ?")
            .bind(team_id)
            .bind(name)
            .fetch_optional(store.pool())
            .await?
            .is_some(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    async fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).await.unwrap();
        (d, s)
    }

    /// The status and body of an answer (or of an error's answer).
    async fn answer(r: ApiResult<Response>) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
        let resp = match r {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, body.to_vec(), headers)
    }

    fn json(body: &[u8]) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    fn status(r: ApiResult<impl Sized>) -> StatusCode {
        match r {
            Ok(_) => StatusCode::OK,
            Err(e) => e.status(),
        }
    }

    async fn versions(s: &Store, id: &str) -> Vec<(i64, String)> {
        sqlx::query_as(
            "SELECT version, value FROM team_secret_versions WHERE secret_id = ? ORDER BY version",
        )
        .bind(id)
        .fetch_all(s.pool())
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn create_list_get_update_delete() {
        let (_d, s) = store().await;
        let team = s.create_team("a").await.unwrap();
        let v1 = "sk-first-value-1b7e";
        let v2 = "sk-second-value-9c2d";
        let mut bodies: Vec<Vec<u8>> = vec![];

        let (st, body, _) = answer(
            create_json(
                &s,
                &team,
                format!(r#"{{"name":"OPENAI_KEY","value":"{v1}","metadata":{{"owner":"ops"}}}}"#)
                    .as_bytes(),
            )
            .await,
        )
        .await;
        assert_eq!(st, StatusCode::CREATED);
        let created = json(&body);
        bodies.push(body);
        let keys: Vec<&str> = created
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys.iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            [
                "secretID",
                "name",
                "currentVersion",
                "metadata",
                "createdAt",
                "updatedAt"
            ]
            .into_iter()
            .collect()
        );
        let id = created["secretID"].as_str().unwrap().to_string();
        assert!(id.starts_with("sec_") && id.len() == 36, "{id}");
        assert_eq!(created["name"], "OPENAI_KEY");
        assert_eq!(created["currentVersion"], 1);
        assert_eq!(created["metadata"], serde_json::json!({"owner": "ops"}));
        assert!(
            chrono::DateTime::parse_from_rfc3339(created["createdAt"].as_str().unwrap()).is_ok()
        );

        // A second one, without metadata: listed first (newest first), metadata `{}`.
        let (st, body, _) =
            answer(create_json(&s, &team, br#"{"name":"other","value":"x"}"#).await).await;
        assert_eq!(st, StatusCode::CREATED);
        assert_eq!(json(&body)["metadata"], serde_json::json!({}));
        bodies.push(body);

        let (st, body, _) = answer(list_json(&s, &team, &HashMap::new()).await).await;
        assert_eq!(st, StatusCode::OK);
        let listed = json(&body);
        let names: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["other", "OPENAI_KEY"]);
        assert_eq!(listed[1], created);
        bodies.push(body);

        // Get by id and by name.
        for key in [id.as_str(), "OPENAI_KEY"] {
            let (st, body, _) = answer(info_json(&s, &team, key).await).await;
            assert_eq!(st, StatusCode::OK);
            assert_eq!(json(&body), created);
            bodies.push(body);
        }
        let (st, _, _) = answer(info_json(&s, &team, "NOPE").await).await;
        assert_eq!(st, StatusCode::NOT_FOUND);

        // Update by name without metadata: version 2, metadata kept; the old version stays.
        let (st, body, _) = answer(
            update_json(
                &s,
                &team,
                "OPENAI_KEY",
                format!(r#"{{"value":"{v2}"}}"#).as_bytes(),
            )
            .await,
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        let updated = json(&body);
        bodies.push(body);
        assert_eq!(updated["currentVersion"], 2);
        assert_eq!(updated["secretID"], created["secretID"]);
        assert_eq!(updated["createdAt"], created["createdAt"]);
        assert_eq!(updated["metadata"], serde_json::json!({"owner": "ops"}));
        assert_eq!(
            current_value(&s, &team, "OPENAI_KEY")
                .await
                .unwrap()
                .as_deref(),
            Some(v2)
        );
        let vs = versions(&s, &id).await;
        assert_eq!(vs.iter().map(|v| v.0).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            s.sealer().open(&vs[0].1, &bound_to(&team, &id, 1)).unwrap(),
            v1
        );

        // Update by id with metadata: version 3, metadata replaced.
        let (st, body, _) = answer(
            update_json(
                &s,
                &team,
                &id,
                br#"{"value":"third-value","metadata":{"rotated":"yes"}}"#,
            )
            .await,
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        let third = json(&body);
        assert_eq!(third["currentVersion"], 3);
        assert_eq!(third["metadata"], serde_json::json!({"rotated": "yes"}));
        let (_, body, _) = answer(info_json(&s, &team, &id).await).await;
        assert_eq!(json(&body), third);
        assert_eq!(
            current_value(&s, &team, "OPENAI_KEY")
                .await
                .unwrap()
                .as_deref(),
            Some("third-value")
        );
        let (st, _, _) = answer(update_json(&s, &team, "NOPE", br#"{"value":"x"}"#).await).await;
        assert_eq!(st, StatusCode::NOT_FOUND);

        // Delete: 204, gone with all its versions; a second delete is 404.
        let (st, body, _) = answer(delete_json(&s, &team, "OPENAI_KEY").await).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
        assert!(body.is_empty());
        assert!(versions(&s, &id).await.is_empty());
        assert!(!exists(&s, &team, "OPENAI_KEY").await.unwrap());
        assert_eq!(current_value(&s, &team, "OPENAI_KEY").await.unwrap(), None);
        let (st, _, _) = answer(info_json(&s, &team, &id).await).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _, _) = answer(delete_json(&s, &team, &id).await).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (_, body, _) = answer(list_json(&s, &team, &HashMap::new()).await).await;
        assert_eq!(json(&body).as_array().unwrap().len(), 1);
        // The other one is untouched, deleted by id.
        assert!(exists(&s, &team, "other").await.unwrap());
        let other = secret_info(&s, &team, "other").await.unwrap().unwrap();
        assert_eq!(
            status(delete_json(&s, &team, &other.secret_id).await),
            StatusCode::OK
        );
        assert!(!exists(&s, &team, "other").await.unwrap());

        for b in &bodies {
            for v in [v1, v2] {
                assert!(!contains(b, v), "a response holds a value");
            }
        }
    }

    #[tokio::test]
    async fn values_are_sealed_at_rest_and_bound_to_their_row() {
        let (d, s) = store().await;
        let team = s.create_team("a").await.unwrap();
        let (v1, v2, v3) = (
            "plain-at-rest-v1-5e1f0a",
            "plain-at-rest-v2-77c0de",
            "plain-at-rest-v3-d00d42",
        );
        let a = create_secret(&s, &team, "A", v1, BTreeMap::new())
            .await
            .unwrap();
        update_secret(&s, &team, "A", v2, None).await.unwrap();
        let b = create_secret(&s, &team, "B", v3, BTreeMap::new())
            .await
            .unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(s.pool())
            .await
            .unwrap();
        let db = std::fs::read(d.path().join("soulbox.db")).unwrap();
        assert!(
            contains(&db, "sealed1:"),
            "the sealed values are not in the file"
        );
        let wal = std::fs::read(d.path().join("soulbox.db-wal")).unwrap_or_default();
        for v in [v1, v2, v3] {
            assert!(!contains(&db, v), "soulbox.db holds a value in clear");
            assert!(!contains(&wal, v), "soulbox.db-wal holds a value in clear");
        }

        // Each version's sealed value opens only in its own row.
        let a_versions = versions(&s, &a.secret_id).await;
        let b_versions = versions(&s, &b.secret_id).await;
        assert!(a_versions
            .iter()
            .all(|v| crate::secrets::Sealer::is_sealed(&v.1)));
        assert_eq!(
            current_value(&s, &team, "B").await.unwrap().as_deref(),
            Some(v3)
        );
        let set_b = |text: String| {
            sqlx::query(
                "UPDATE team_secret_versions SET value = ? WHERE secret_id = ? AND version = 1",
            )
            .bind(text)
            .bind(&b.secret_id)
            .execute(s.pool())
        };
        // A's current (version 2) into B's version 1: refused.
        set_b(a_versions[1].1.clone()).await.unwrap();
        assert!(current_value(&s, &team, "B").await.is_err());
        // A's version 1 into B's version 1: still another secret, refused.
        set_b(a_versions[0].1.clone()).await.unwrap();
        assert!(current_value(&s, &team, "B").await.is_err());
        // A value written in clear behind the server's back: refused, not passed through.
        set_b("injected".into()).await.unwrap();
        assert!(current_value(&s, &team, "B").await.is_err());
        // Its own sealed value back: fine.
        set_b(b_versions[0].1.clone()).await.unwrap();
        assert_eq!(
            current_value(&s, &team, "B").await.unwrap().as_deref(),
            Some(v3)
        );
        // A's version 1 made current: its binding names version 1, not 2.
        sqlx::query(
            "UPDATE team_secret_versions SET value = ? WHERE secret_id = ? AND version = 2",
        )
        .bind(&a_versions[0].1)
        .bind(&a.secret_id)
        .execute(s.pool())
        .await
        .unwrap();
        assert!(current_value(&s, &team, "A").await.is_err());
        // Moved to another team: the team is bound in too.
        let other = s.create_team("b").await.unwrap();
        sqlx::query("UPDATE team_secrets SET team_id = ? WHERE id = ?")
            .bind(&other)
            .bind(&b.secret_id)
            .execute(s.pool())
            .await
            .unwrap();
        assert!(current_value(&s, &other, "B").await.is_err());

        // A deleted secret leaves no sealed text behind in either file.
        let b_sealed = b_versions[0].1.clone();
        let b_b64 = b_sealed.strip_prefix("sealed1:").unwrap();
        assert!(delete_secret(&s, &other, "B").await.unwrap());
        let db = std::fs::read(d.path().join("soulbox.db")).unwrap();
        let wal = std::fs::read(d.path().join("soulbox.db-wal")).unwrap_or_default();
        assert!(!contains(&db, b_b64), "soulbox.db keeps a deleted secret");
        assert!(
            !contains(&wal, b_b64),
            "soulbox.db-wal keeps a deleted secret"
        );
    }

    #[tokio::test]
    async fn teams_never_see_each_others_secrets() {
        let (_d, s) = store().await;
        let a = s.create_team("a").await.unwrap();
        let b = s.create_team("b").await.unwrap();
        let info = create_secret(&s, &a, "SHARED_NAME", "team-a-value", BTreeMap::new())
            .await
            .unwrap();
        for key in [info.secret_id.as_str(), "SHARED_NAME"] {
            assert_eq!(status(info_json(&s, &b, key).await), StatusCode::NOT_FOUND);
            assert_eq!(
                status(update_json(&s, &b, key, br#"{"value":"hijack"}"#).await),
                StatusCode::NOT_FOUND
            );
            assert_eq!(
                status(delete_json(&s, &b, key).await),
                StatusCode::NOT_FOUND
            );
        }
        assert_eq!(current_value(&s, &b, "SHARED_NAME").await.unwrap(), None);
        assert!(!exists(&s, &b, "SHARED_NAME").await.unwrap());
        let (_, body, _) = answer(list_json(&s, &b, &HashMap::new()).await).await;
        assert_eq!(json(&body), serde_json::json!([]));
        // Nothing B tried changed A's secret.
        assert_eq!(
            secret_info(&s, &a, "SHARED_NAME").await.unwrap().unwrap(),
            info
        );
        assert_eq!(
            current_value(&s, &a, "SHARED_NAME")
                .await
                .unwrap()
                .as_deref(),
            Some("team-a-value")
        );
        // Names are per team: B may have its own of that name, resolved for B only.
        let mine = create_secret(&s, &b, "SHARED_NAME", "team-b-value", BTreeMap::new())
            .await
            .unwrap();
        assert_ne!(mine.secret_id, info.secret_id);
        assert_eq!(
            current_value(&s, &b, "SHARED_NAME")
                .await
                .unwrap()
                .as_deref(),
            Some("team-b-value")
        );
        assert_eq!(
            current_value(&s, &a, "SHARED_NAME")
                .await
                .unwrap()
                .as_deref(),
            Some("team-a-value")
        );
        // A cannot reach B's by id either.
        assert_eq!(
            status(info_json(&s, &a, &mine.secret_id).await),
            StatusCode::NOT_FOUND
        );
        assert!(delete_secret(&s, &b, "SHARED_NAME").await.unwrap());
        assert!(exists(&s, &a, "SHARED_NAME").await.unwrap());
    }

    #[tokio::test]
    async fn bad_requests_are_400_and_duplicates_409() {
        let (_d, s) = store().await;
        let team = s.create_team("a").await.unwrap();
        let create = |body: Vec<u8>| {
            let (s, team) = (s.clone(), team.clone());
            async move { answer(create_json(&s, &team, &body).await).await }
        };
        let named = |name: &str| {
            serde_json::to_vec(&serde_json::json!({"name": name, "value": "v"})).unwrap()
        };
        let valued = |value: &str| {
            serde_json::to_vec(&serde_json::json!({"name": "N", "value": value})).unwrap()
        };
        let with_meta = |m: Value| {
            serde_json::to_vec(&serde_json::json!({"name": "N", "value": "v", "metadata": m}))
                .unwrap()
        };
        let long_key = "k".repeat(257);
        let many: serde_json::Map<String, Value> = (0..33)
            .map(|i| (format!("k{i}"), Value::from("v")))
            .collect();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{".to_vec(), "invalid JSON"),
            (b"[]".to_vec(), "invalid JSON"),
            (b"null".to_vec(), "invalid JSON"),
            (br#"{"name":5,"value":"v"}"#.to_vec(), "invalid JSON"),
            (
                br#"{"name":"N","value":"v","metadata":{"a":1}}"#.to_vec(),
                "invalid JSON",
            ),
            (b"".to_vec(), "\"name\" is missing"),
            (br#"{"name":"N"}"#.to_vec(), "\"value\" is missing"),
            (named(""), "empty"),
            (named("a b"), "' '"),
            (named("a}b"), "'}'"),
            (named("é"), "'é'"),
            (named("a\nb"), "'\\n'"),
            (named(&"A".repeat(65)), "65 characters"),
            (named("sec_abc"), "reserved"),
            (named("SEC_abc"), "reserved"),
            (valued(""), "empty"),
            (valued(&"x".repeat(MAX_VALUE_BYTES + 1)), "65537 bytes"),
            (valued("a\r\nb"), "carriage return"),
            (valued("a\nb"), "line feed"),
            (valued("a\0b"), "NUL"),
            (valued("a\x07b"), "0x07"),
            (valued("a\x7fb"), "0x7f"),
            (with_meta(Value::Object(many)), "33 keys"),
            (with_meta(serde_json::json!({ long_key: "v" })), "257 bytes"),
            (
                with_meta(serde_json::json!({"k": "v".repeat(1025)})),
                "1025 bytes",
            ),
            (with_meta(serde_json::json!({"": "v"})), "empty"),
            (with_meta(serde_json::json!({"k\n": "v"})), "control"),
            (with_meta(serde_json::json!({"k": "a\u{1b}b"})), "control"),
        ];
        for (body, want) in cases {
            let (st, resp, _) = create(body.clone()).await;
            let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
            assert_eq!(st, StatusCode::BAD_REQUEST, "{shown}");
            let v = json(&resp);
            assert_eq!(v["code"], 400);
            let msg = v["message"].as_str().unwrap();
            assert!(msg.contains(want), "{shown}: {msg:?} lacks {want:?}");
        }
        assert!(list_secrets(&s, &team, 0, 100).await.unwrap().is_empty());

        // What the limits allow.
        let ok = [
            named("A"),
            named("_x"),
            named(&"Z".repeat(64)),
            named("se_c"),
            serde_json::to_vec(
                &serde_json::json!({"name": "BIG", "value": "x".repeat(MAX_VALUE_BYTES)}),
            )
            .unwrap(),
            serde_json::to_vec(&serde_json::json!({"name": "TABS", "value": "Bearer\tü€ x"}))
                .unwrap(),
            serde_json::to_vec(
                &serde_json::json!({"name": "META", "value": "v", "metadata": {
                    "k".repeat(256): "v".repeat(1024), "ünïcode": "ok"
                }}),
            )
            .unwrap(),
        ];
        for body in ok {
            let (st, resp, _) = create(body).await;
            assert_eq!(
                st,
                StatusCode::CREATED,
                "{}",
                String::from_utf8_lossy(&resp)
            );
        }
        let many: BTreeMap<String, String> =
            (0..32).map(|i| (format!("k{i}"), "v".into())).collect();
        create_secret(&s, &team, "MANY", "v", many).await.unwrap();

        // A second secret of a name: 409, and the first is untouched.
        let (st, resp, _) = create(named("A")).await;
        assert_eq!(
            st,
            StatusCode::CONFLICT,
            "{}",
            String::from_utf8_lossy(&resp)
        );
        assert_eq!(json(&resp)["code"], 409);
        assert_eq!(
            secret_info(&s, &team, "A")
                .await
                .unwrap()
                .unwrap()
                .current_version,
            1
        );

        // Updates are checked too.
        for (body, want) in [
            (b"{".to_vec(), "invalid JSON"),
            (b"".to_vec(), "\"value\" is missing"),
            (br#"{"value":""}"#.to_vec(), "empty"),
            (br#"{"value":"a\r\nb"}"#.to_vec(), "carriage return"),
            (
                br#"{"value":"v","metadata":{"k":"a\u0000"}}"#.to_vec(),
                "control",
            ),
        ] {
            let (st, resp, _) = answer(update_json(&s, &team, "A", &body).await).await;
            assert_eq!(st, StatusCode::BAD_REQUEST);
            let msg = json(&resp)["message"].as_str().unwrap().to_string();
            assert!(msg.contains(want), "{msg:?} lacks {want:?}");
        }
        assert_eq!(
            secret_info(&s, &team, "A")
                .await
                .unwrap()
                .unwrap()
                .current_version,
            1
        );
        assert_eq!(
            versions(
                &s,
                &secret_info(&s, &team, "A")
                    .await
                    .unwrap()
                    .unwrap()
                    .secret_id
            )
            .await
            .len(),
            1
        );

        // The list's paging arguments.
        for q in [("limit", "0"), ("limit", "x"), ("nextToken", "zz")] {
            let q: HashMap<String, String> = [(q.0.to_string(), q.1.to_string())].into();
            assert_eq!(
                status(list_json(&s, &team, &q).await),
                StatusCode::BAD_REQUEST
            );
        }
    }

    #[tokio::test]
    async fn lists_page_newest_first() {
        let (_d, s) = store().await;
        let team = s.create_team("a").await.unwrap();
        for n in ["S1", "S2", "S3", "S4", "S5"] {
            create_secret(&s, &team, n, "v", BTreeMap::new())
                .await
                .unwrap();
        }
        let mut seen = vec![];
        let mut token: Option<String> = None;
        loop {
            let mut q: HashMap<String, String> = [("limit".to_string(), "2".to_string())].into();
            if let Some(t) = &token {
                q.insert("nextToken".into(), t.clone());
            }
            let (st, body, headers) = answer(list_json(&s, &team, &q).await).await;
            assert_eq!(st, StatusCode::OK);
            let page = json(&body);
            assert!(page.as_array().unwrap().len() <= 2);
            seen.extend(
                page.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v["name"].as_str().unwrap().to_string()),
            );
            match headers.get("x-next-token") {
                Some(t) => token = Some(t.to_str().unwrap().to_string()),
                None => break,
            }
        }
        assert_eq!(seen, ["S5", "S4", "S3", "S2", "S1"]);
    }

    #[tokio::test]
    async fn a_team_has_at_most_1000_secrets() {
        let (_d, s) = store().await;
        let team = s.create_team("a").await.unwrap();
        let other = s.create_team("b").await.unwrap();
        // 999 rows straight in (the API would only be slower), then the API for the rest.
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 999)
             INSERT INTO team_secrets (id, team_id, name, current_version, metadata, created_at, updated_at)
             SELECT 'sec_fill' || i, ?, 'FILL' || i, 1, '{}', '', '' FROM n",
        )
        .bind(&team)
        .execute(s.pool())
        .await
        .unwrap();
        create_secret(&s, &team, "LAST", "v", BTreeMap::new())
            .await
            .unwrap();
        let (st, body, _) =
            answer(create_json(&s, &team, br#"{"name":"ONE_TOO_MANY","value":"v"}"#).await).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).contains("1000 secrets"));
        assert!(!exists(&s, &team, "ONE_TOO_MANY").await.unwrap());
        // A duplicate at the limit is still a conflict; other teams are not held back.
        assert_eq!(
            status(create_secret(&s, &team, "LAST", "v", BTreeMap::new()).await),
            StatusCode::CONFLICT
        );
        create_secret(&s, &other, "ONE_TOO_MANY", "v", BTreeMap::new())
            .await
            .unwrap();
        // Room again after a delete.
        assert!(delete_secret(&s, &team, "FILL1").await.unwrap());
        create_secret(&s, &team, "ONE_TOO_MANY", "v", BTreeMap::new())
            .await
            .unwrap();
        let all = list_secrets(&s, &team, 0, 5000).await.unwrap();
        assert_eq!(all.len() as i64, MAX_SECRETS_PER_TEAM);
    }

    #[tokio::test]
    async fn current_value_is_the_newest_version() {
        let (_d, s) = store().await;
        let team = s.create_team("a").await.unwrap();
        assert_eq!(current_value(&s, &team, "TOKEN").await.unwrap(), None);
        assert!(!exists(&s, &team, "TOKEN").await.unwrap());
        create_secret(&s, &team, "TOKEN", "one", BTreeMap::new())
            .await
            .unwrap();
        assert!(exists(&s, &team, "TOKEN").await.unwrap());
        // Names are matched exactly.
        assert!(!exists(&s, &team, "token").await.unwrap());
        assert_eq!(current_value(&s, &team, "token").await.unwrap(), None);
        for (i, v) in ["two", "three", "four"].iter().enumerate() {
            let info = update_secret(&s, &team, "TOKEN", v, None).await.unwrap();
            assert_eq!(info.current_version, i as i64 + 2);
            assert_eq!(
                current_value(&s, &team, "TOKEN").await.unwrap().as_deref(),
                Some(*v)
            );
        }
        // Concurrent updates each get a version of their own.
        let mut tasks = vec![];
        for i in 0..8 {
            let (s, team) = (s.clone(), team.clone());
            tasks.push(tokio::spawn(async move {
                update_secret(&s, &team, "TOKEN", &format!("c{i}"), None)
                    .await
                    .map(|i| i.current_version)
                    .map_err(|e| e.to_string())
            }));
        }
        let mut got = vec![];
        for t in tasks {
            got.push(t.await.unwrap().unwrap());
        }
        got.sort();
        assert_eq!(got, (5..=12).collect::<Vec<i64>>());
        let id = secret_info(&s, &team, "TOKEN")
            .await
            .unwrap()
            .unwrap()
            .secret_id;
        let vs = versions(&s, &id).await;
        assert_eq!(vs.len(), 12);
        let last = vs.last().unwrap();
        let want = s
            .sealer()
            .open(&last.1, &bound_to(&team, &id, last.0))
            .unwrap();
        assert_eq!(current_value(&s, &team, "TOKEN").await.unwrap(), Some(want));
    }
}
