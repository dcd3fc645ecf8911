//! The control plane's state: teams, API keys (hashed) and sandbox records, in SQLite through
//! sqlx migrations. Every state change is written here before it is acknowledged. Envd tokens
//! and env vars are sealed (see [`crate::secrets`]); the database file is 0600.

use crate::secrets::{Sealer, SecretError};
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
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    sealer: Sealer,
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
    /// How it was paused (`full`, `filesystem`) while it is paused.
    pub pause_mode: Option<String>,
    /// Whether a pause at its end time keeps its memory (E2B's `autoPauseMemory`).
    pub auto_pause_memory: bool,
    /// Whether traffic through the proxy resumes it when paused.
    pub auto_resume: bool,
    /// The timeout it was created with, in ms.
    pub timeout_ms: i64,
    /// Its network configuration (`None`: the baseline).
    pub network: Option<crate::egress::policy::NetworkConfig>,
    /// Whether its port URLs answer without the traffic access token.
    pub public_traffic: bool,
    /// Its egress CA (JSON of key and certificate), if it has header rules.
    pub egress_ca: Option<String>,
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

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) fn short_id() -> String {
    let bytes: [u8; 8] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Opens (creating if needed) the SQLite database in `data_dir` and migrates it, with the
    /// secret key of `data_dir/secret.key` (made on first use).
    pub async fn open(data_dir: &Path) -> Result<Store> {
        let sealer = Sealer::load_or_create(&data_dir.join("secret.key"))?;
        Self::open_with(data_dir, sealer).await
    }

    /// As [`Store::open`], with the given secret key.
    pub async fn open_with(data_dir: &Path, sealer: Sealer) -> Result<Store> {
        Self::open_at(&data_dir.join("soulbox.db"), sealer).await
    }

    /// Opens (creating if needed) the SQLite database file `path` and migrates it.
    pub async fn open_at(path: &Path, sealer: Sealer) -> Result<Store> {
        private_file(path)?;
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Freed pages are zeroed, so a replaced value does not linger in the file.
            .pragma("secure_delete", "on");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let store = Store { pool, sealer };
        store.seal_plain_rows().await?;
        Ok(store)
    }

    /// The secret key, for the modules that seal their own columns (team secrets).
    pub(crate) fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The database, for the modules that keep their own tables (templates).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Seals the tokens and env vars of rows written before sealing existed, then rewrites
    /// the file so that no copy of the plain values is left in free pages or the WAL.
    async fn seal_plain_rows(&self) -> Result<()> {
        let rows = sqlx::query("SELECT id, env_vars, access_token FROM sandboxes")
            .fetch_all(&self.pool)
            .await?;
        let mut sealed = 0;
        for r in &rows {
            let (id, env, token): (String, String, String) =
                (r.get("id"), r.get("env_vars"), r.get("access_token"));
            if Sealer::is_sealed(&env) && Sealer::is_sealed(&token) {
                continue;
            }
            let env = self.seal_if_plain(&env, &id, "env_vars")?;
            let token = self.seal_if_plain(&token, &id, "access_token")?;
            sqlx::query("UPDATE sandboxes SET env_vars = ?, access_token = ? WHERE id = ?")
                .bind(env)
                .bind(token)
                .bind(&id)
                .execute(&self.pool)
                .await?;
            sealed += 1;
        }
        if sealed > 0 {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
            sqlx::query("VACUUM").execute(&self.pool).await?;
            tracing::info!("sealed the secrets of {sealed} sandbox record(s)");
        }
        Ok(())
    }

    fn seal_if_plain(&self, value: &str, id: &str, column: &str) -> Result<String> {
        if Sealer::is_sealed(value) {
            return Ok(value.to_string());
        }
        Ok(self.sealer.seal(value, &format!("{id}/{column}"))?)
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

    /// The team of that name, created if there is none.
    pub async fn team_named(&self, name: &str) -> Result<String> {
        if let Some(r) =
            sqlx::query("SELECT id FROM teams WHERE name = ? ORDER BY created_at LIMIT 1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
        {
            return Ok(r.get("id"));
        }
        self.create_team(name).await
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
    /// An admin key: the operator's own and the first one.
    pub async fn add_key(&self, team_id: &str, key: &str, name: &str) -> Result<String> {
        self.add_key_with_role(team_id, key, name, crate::access::Role::Admin)
            .await
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
        let env_vars = self.sealer.seal(
            &serde_json::to_string(&s.env_vars).unwrap_or_default(),
            &format!("{}/env_vars", s.id),
        )?;
        let token = self
            .sealer
            .seal(&s.access_token, &format!("{}/access_token", s.id))?;
        let ca = s
            .egress_ca
            .as_ref()
            .map(|c| self.sealer.seal(c, &format!("{}/egress_ca", s.id)))
            .transpose()?;
        sqlx::query(
            "INSERT INTO sandboxes (id, team_id, template, alias, state, metadata, env_vars, access_token, internet, cpu_millis, memory_mb, disk_mb, started_at, end_at_ms, auto_pause, pid, pause_mode, auto_pause_memory, auto_resume, timeout_ms, network, public_traffic, egress_ca)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id)
        .bind(&s.team_id)
        .bind(&s.template)
        .bind(&s.alias)
        .bind(&s.state)
        .bind(serde_json::to_string(&s.metadata).unwrap_or_default())
        .bind(env_vars)
        .bind(token)
        .bind(s.internet)
        .bind(s.cpu_millis)
        .bind(s.memory_mb)
        .bind(s.disk_mb)
        .bind(&s.started_at)
        .bind(s.end_at_ms)
        .bind(s.auto_pause)
        .bind(s.pid)
        .bind(&s.pause_mode)
        .bind(s.auto_pause_memory)
        .bind(s.auto_resume)
        .bind(s.timeout_ms)
        .bind(s.network.as_ref().map(|n| serde_json::to_string(n).unwrap_or_default()))
        .bind(s.public_traffic)
        .bind(ca)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a sandbox's new network configuration (and its CA, once it has one).
    pub async fn set_network(
        &self,
        id: &str,
        network: &crate::egress::policy::NetworkConfig,
        egress_ca: Option<&str>,
    ) -> Result<()> {
        let ca = egress_ca
            .map(|c| self.sealer.seal(c, &format!("{id}/egress_ca")))
            .transpose()?;
        sqlx::query(
            "UPDATE sandboxes SET network = ?, egress_ca = COALESCE(?, egress_ca) WHERE id = ?",
        )
        .bind(serde_json::to_string(network).unwrap_or_default())
        .bind(ca)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn record(&self, r: &sqlx::sqlite::SqliteRow) -> Result<SandboxRecord> {
        let id: String = r.get("id");
        let open = |col: &str| {
            self.sealer
                .open(&r.get::<String, _>(col), &format!("{id}/{col}"))
        };
        let json = |col: &str, text: &str| -> Result<BTreeMap<String, String>> {
            serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
        };
        Ok(SandboxRecord {
            metadata: json("metadata", &r.get::<String, _>("metadata"))?,
            env_vars: json("env_vars", &open("env_vars")?)?,
            access_token: open("access_token")?,
            id,
            team_id: r.get("team_id"),
            template: r.get("template"),
            alias: r.get("alias"),
            state: r.get("state"),
            internet: r.get("internet"),
            cpu_millis: r.get("cpu_millis"),
            memory_mb: r.get("memory_mb"),
            disk_mb: r.get("disk_mb"),
            started_at: r.get("started_at"),
            end_at_ms: r.get("end_at_ms"),
            auto_pause: r.get("auto_pause"),
            pid: r.get("pid"),
            pause_mode: r.get("pause_mode"),
            auto_pause_memory: r.get("auto_pause_memory"),
            auto_resume: r.get("auto_resume"),
            timeout_ms: r.get("timeout_ms"),
            network: r
                .get::<Option<String>, _>("network")
                .map(|n| serde_json::from_str(&n))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("network: {e}")))?,
            public_traffic: r.get("public_traffic"),
            egress_ca: r
                .get::<Option<String>, _>("egress_ca")
                .map(|c| {
                    self.sealer
                        .open(&c, &format!("{}/egress_ca", r.get::<String, _>("id")))
                })
                .transpose()?,
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
        r.as_ref().map(|r| self.record(r)).transpose()
    }

    /// A live sandbox of any team (the data plane routes by id alone).
    pub async fn live_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>> {
        let r = sqlx::query("SELECT * FROM sandboxes WHERE id = ? AND state != 'killed'")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(|r| self.record(r)).transpose()
    }

    /// Live sandboxes, of one team or of all.
    pub async fn live_sandboxes(&self, team_id: Option<&str>) -> Result<Vec<SandboxRecord>> {
        let rows = match team_id {
            Some(t) => sqlx::query("SELECT * FROM sandboxes WHERE team_id = ? AND state != 'killed' ORDER BY started_at").bind(t).fetch_all(&self.pool).await?,
            None => sqlx::query("SELECT * FROM sandboxes WHERE state != 'killed' ORDER BY started_at").fetch_all(&self.pool).await?,
        };
        rows.iter().map(|r| self.record(r)).collect()
    }

    /// What monitoring needs of every live sandbox (of one team, or all), without opening
    /// the sealed columns: read at every sampler pass and scrape.
    pub async fn live_summaries(
        &self,
        team_id: Option<&str>,
    ) -> Result<Vec<crate::metrics::samples::Live>> {
        let q = "SELECT id, team_id, template, state, cpu_millis FROM sandboxes WHERE state != 'killed' AND (?1 IS NULL OR team_id = ?1)";
        let rows = sqlx::query(q).bind(team_id).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| crate::metrics::samples::Live {
                id: r.get("id"),
                team: r.get("team_id"),
                template: r.get("template"),
                state: r.get("state"),
                cpu_millis: r.get("cpu_millis"),
            })
            .collect())
    }

    /// Answers if the database does (`GET /ready`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn set_state(&self, id: &str, state: &str) -> Result<()> {
        sqlx::query("UPDATE sandboxes SET state = ? WHERE id = ?")
            .bind(state)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a sandbox paused (`mode`: how) or running again (`None`; `pid` its new init).
    pub async fn set_paused(&self, id: &str, mode: Option<&str>, pid: Option<i64>) -> Result<()> {
        sqlx::query(
            "UPDATE sandboxes SET state = ?, pause_mode = ?, pid = COALESCE(?, pid) WHERE id = ? AND state != 'killed'",
        )
        .bind(if mode.is_some() { "paused" } else { "running" })
        .bind(mode)
        .bind(pid)
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
        rows.iter().map(|r| self.record(r)).collect()
    }
}

/// Creates `path` empty with mode 0600 if missing (SQLite then uses that file and gives its
/// WAL and shared-memory files the same mode), and makes an existing one 0600.
fn private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    Ok(())
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
        // Fresh writes sit in the write-ahead log until a checkpoint: scan every file.
        let mut scanned = vec![];
        for f in std::fs::read_dir(d.path()).unwrap() {
            let f = f.unwrap();
            let bytes = std::fs::read(f.path()).unwrap();
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "the key is stored in clear in {:?}",
                f.file_name()
            );
            scanned.push(f.file_name().to_string_lossy().into_owned());
        }
        assert!(
            scanned.iter().any(|f| f == "soulbox.db-wal"),
            "no write-ahead log scanned: {scanned:?}"
        );
        assert!(s.revoke_key(&key[..10]).await.unwrap());
        assert_eq!(s.team_of_key(&key).await.unwrap(), None);
    }

    fn record(id: &str, team: &str) -> SandboxRecord {
        SandboxRecord {
            id: id.into(),
            team_id: team.into(),
            template: "tiny".into(),
            alias: "tiny".into(),
            state: "running".into(),
            metadata: [("m".to_string(), "visible".to_string())].into(),
            env_vars: [("SECRET".to_string(), "env-value-42".to_string())].into(),
            access_token: "token-value-42".into(),
            internet: true,
            cpu_millis: 1000,
            memory_mb: 512,
            disk_mb: 1024,
            started_at: now(),
            end_at_ms: 0,
            auto_pause: false,
            pid: None,
            pause_mode: None,
            auto_pause_memory: true,
            auto_resume: false,
            timeout_ms: 300_000,
            network: None,
            public_traffic: true,
            egress_ca: None,
        }
    }

    #[tokio::test]
    async fn tokens_and_env_vars_are_sealed_and_old_rows_are_sealed_on_open() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).await.unwrap();
        let team = s.default_team().await.unwrap();
        s.insert_sandbox(&record("new1", &team)).await.unwrap();
        // A row as an earlier version wrote it: token and env vars in clear.
        sqlx::query("INSERT INTO sandboxes (id, team_id, template, alias, state, metadata, env_vars, access_token, internet, cpu_millis, memory_mb, disk_mb, started_at, end_at_ms) VALUES ('old1', ?, 'tiny', 'tiny', 'running', '{}', '{\"OLD\":\"old-env-42\"}', 'old-token-42', 1, 1000, 512, 1024, '', 0)")
            .bind(&team)
            .execute(&s.pool)
            .await
            .unwrap();
        drop(s);
        let s = Store::open(d.path()).await.unwrap();
        let new1 = s.live_sandbox("new1").await.unwrap().unwrap();
        let mut want = record("new1", &team);
        want.started_at = new1.started_at.clone();
        assert_eq!(new1, want);
        let old1 = s.live_sandbox("old1").await.unwrap().unwrap();
        assert_eq!(old1.access_token, "old-token-42");
        assert_eq!(old1.env_vars["OLD"], "old-env-42");
        s.pool.close().await;
        for f in ["soulbox.db", "soulbox.db-wal"] {
            let p = d.path().join(f);
            if !p.exists() {
                continue;
            }
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
            let bytes = std::fs::read(&p).unwrap();
            for secret in [
                "token-value-42",
                "env-value-42",
                "old-token-42",
                "old-env-42",
            ] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{f} holds {secret}"
                );
            }
        }
        // Without the key the records cannot be read.
        std::fs::remove_file(d.path().join("secret.key")).unwrap();
        let s = Store::open(d.path()).await.unwrap();
        assert!(s.live_sandbox("new1").await.is_err());
    }
}
