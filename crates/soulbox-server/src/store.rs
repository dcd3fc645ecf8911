//! The control plane's state: teams, API keys (hashed) and sandbox records, in SQLite through
//! sqlx migrations. Every state change is written here before it is acknowledged.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row;
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// A sandbox as the control plane records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub team_id: String,
    pub template: String,
    pub alias: String,
    pub state: String,
    pub metadata: BTreeMap<String, String>,
    pub env_vars: BTreeMap<String, String>,
    pub access_token: String,
    pub internet: bool,
    pub cpu_millis: i64,
    pub memory_mb: i64,
    pub disk_mb: i64,
    pub started_at: String,
    pub end_at_ms: i64,
    pub auto_pause: bool,
    pub pid: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub team_id: String,
    pub prefix: String,
    pub name: String,
    pub created_at: String,
    pub revoked: bool,
}

pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new API key in E2B's shape (`e2b_` + 40 hex), which old SDKs validate.
pub fn new_key() -> String {
    let bytes: [u8; 20] = rand::random();
    format!(
        "e2b_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn short_id() -> String {
    let bytes: [u8; 8] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Opens (creating if needed) the SQLite database in `data_dir` and migrates it.
    pub async fn open(data_dir: &Path) -> Result<Store> {
        let path = data_dir.join("soulbox.db");
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    /// The default team, created on first use.
    pub async fn default_team(&self) -> Result<String> {
        if let Some(r) = sqlx::query("SELECT id FROM teams ORDER BY created_at LIMIT 1")
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(r.get("id"));
        }
        self.create_team("default").await
    }

    pub async fn create_team(&self, name: &str) -> Result<String> {
        let id = short_id();
        sqlx::query("INSERT INTO teams (id, name, created_at) VALUES (?, ?, ?)")
            .bind(&id)
            .bind(name)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// Stores a key (hashed) for a team; returns its id.
    pub async fn add_key(&self, team_id: &str, key: &str, name: &str) -> Result<String> {
        let id = short_id();
        sqlx::query("INSERT INTO api_keys (id, team_id, key_hash, prefix, name, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key_hash) DO UPDATE SET revoked_at = NULL")
            .bind(&id)
            .bind(team_id)
            .bind(hash_key(key))
            .bind(key.chars().take(10).collect::<String>())
            .bind(name)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// The team a key belongs to, if the key is valid and not revoked.
    pub async fn team_of_key(&self, key: &str) -> Result<Option<String>> {
        let r =
            sqlx::query("SELECT team_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL")
                .bind(hash_key(key))
                .fetch_optional(&self.pool)
                .await?;
        Ok(r.map(|r| r.get("team_id")))
    }

    pub async fn keys(&self) -> Result<Vec<KeyInfo>> {
        let rows = sqlx::query("SELECT id, team_id, prefix, name, created_at, revoked_at FROM api_keys ORDER BY created_at").fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| KeyInfo {
                id: r.get("id"),
                team_id: r.get("team_id"),
                prefix: r.get("prefix"),
                name: r.get("name"),
                created_at: r.get("created_at"),
                revoked: r.get::<Option<String>, _>("revoked_at").is_some(),
            })
            .collect())
    }

    /// Revokes a key by id or prefix; true if one was revoked.
    pub async fn revoke_key(&self, id_or_prefix: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE (id = ? OR prefix = ?) AND revoked_at IS NULL").bind(now()).bind(id_or_prefix).bind(id_or_prefix).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn key_count(&self) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL")
                .fetch_one(&self.pool)
                .await?
                .get("n"),
        )
    }

    pub async fn insert_sandbox(&self, s: &SandboxRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO sandboxes (id, team_id, template, alias, state, metadata, env_vars, access_token, internet, cpu_millis, memory_mb, disk_mb, started_at, end_at_ms, auto_pause, pid)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id)
        .bind(&s.team_id)
        .bind(&s.template)
        .bind(&s.alias)
        .bind(&s.state)
        .bind(serde_json::to_string(&s.metadata).unwrap_or_default())
        .bind(serde_json::to_string(&s.env_vars).unwrap_or_default())
        .bind(&s.access_token)
        .bind(s.internet)
        .bind(s.cpu_millis)
        .bind(s.memory_mb)
        .bind(s.disk_mb)
        .bind(&s.started_at)
        .bind(s.end_at_ms)
        .bind(s.auto_pause)
        .bind(s.pid)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn record(r: &sqlx::sqlite::SqliteRow) -> Result<SandboxRecord> {
        let json = |col: &str| -> Result<BTreeMap<String, String>> {
            serde_json::from_str(&r.get::<String, _>(col))
                .map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
        };
        Ok(SandboxRecord {
            id: r.get("id"),
            team_id: r.get("team_id"),
            template: r.get("template"),
            alias: r.get("alias"),
            state: r.get("state"),
            metadata: json("metadata")?,
            env_vars: json("env_vars")?,
            access_token: r.get("access_token"),
            internet: r.get("internet"),
            cpu_millis: r.get("cpu_millis"),
            memory_mb: r.get("memory_mb"),
            disk_mb: r.get("disk_mb"),
            started_at: r.get("started_at"),
            end_at_ms: r.get("end_at_ms"),
            auto_pause: r.get("auto_pause"),
            pid: r.get("pid"),
        })
    }

    /// A live (running or paused) sandbox of the team.
    pub async fn sandbox(&self, team_id: &str, id: &str) -> Result<Option<SandboxRecord>> {
        let r = sqlx::query(
            "SELECT * FROM sandboxes WHERE id = ? AND team_id = ? AND state != 'killed'",
        )
        .bind(id)
        .bind(team_id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(Self::record).transpose()
    }

    /// A live sandbox of any team (the data plane routes by id alone).
    pub async fn live_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>> {
        let r = sqlx::query("SELECT * FROM sandboxes WHERE id = ? AND state != 'killed'")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(Self::record).transpose()
    }

    /// Live sandboxes, of one team or of all.
    pub async fn live_sandboxes(&self, team_id: Option<&str>) -> Result<Vec<SandboxRecord>> {
        let rows = match team_id {
            Some(t) => sqlx::query("SELECT * FROM sandboxes WHERE team_id = ? AND state != 'killed' ORDER BY started_at").bind(t).fetch_all(&self.pool).await?,
            None => sqlx::query("SELECT * FROM sandboxes WHERE state != 'killed' ORDER BY started_at").fetch_all(&self.pool).await?,
        };
        rows.iter().map(Self::record).collect()
    }

    pub async fn set_state(&self, id: &str, state: &str) -> Result<()> {
        sqlx::query("UPDATE sandboxes SET state = ? WHERE id = ?")
            .bind(state)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_end(&self, id: &str, end_at_ms: i64) -> Result<()> {
        sqlx::query("UPDATE sandboxes SET end_at_ms = ? WHERE id = ?")
            .bind(end_at_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Live sandboxes whose end time has passed.
    pub async fn expired(&self, now_ms: i64) -> Result<Vec<SandboxRecord>> {
        let rows =
            sqlx::query("SELECT * FROM sandboxes WHERE state != 'killed' AND end_at_ms <= ?")
                .bind(now_ms)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(Self::record).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_hashed_scoped_and_revocable() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).await.unwrap();
        let team = s.default_team().await.unwrap();
        assert_eq!(s.default_team().await.unwrap(), team);
        let key = new_key();
        assert!(key.starts_with("e2b_") && key.len() == 44);
        s.add_key(&team, &key, "test").await.unwrap();
        assert_eq!(s.team_of_key(&key).await.unwrap(), Some(team.clone()));
        assert_eq!(s.team_of_key("e2b_other").await.unwrap(), None);
        let db = std::fs::read(d.path().join("soulbox.db")).unwrap();
        assert!(
            !db.windows(key.len()).any(|w| w == key.as_bytes()),
            "the key is stored in clear"
        );
        assert!(s.revoke_key(&key[..10]).await.unwrap());
        assert_eq!(s.team_of_key(&key).await.unwrap(), None);
    }
}
