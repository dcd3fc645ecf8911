//! The template tables (migration 0002): templates, builds, their logs and tags.

use super::{BuildRecord, Image, LogEntry, TemplateRecord};
use crate::store::{now, Result, Store, StoreError};
use sqlx::Row;

fn template_row(r: &sqlx::sqlite::SqliteRow) -> TemplateRecord {
    TemplateRecord {
        id: r.get("id"),
        team_id: r.get("team_id"),
        name: r.get("name"),
        public: r.get::<i64, _>("public") != 0,
        cpu_count: r.get("cpu_count"),
        memory_mb: r.get("memory_mb"),
        disk_mb: r.get("disk_mb"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        snapshot_of: r.get("snapshot_of"),
    }
}

fn build_row(r: &sqlx::sqlite::SqliteRow) -> Result<BuildRecord> {
    let image: Option<String> = r.get("image");
    let reason: Option<String> = r.get("reason");
    Ok(BuildRecord {
        id: r.get("id"),
        template_id: r.get("template_id"),
        status: r.get("status"),
        tags: serde_json::from_str(&r.get::<String, _>("tags"))
            .map_err(|e| StoreError::Corrupt(format!("build tags: {e}")))?,
        cpu_count: r.get("cpu_count"),
        memory_mb: r.get("memory_mb"),
        request: r.get("request"),
        image: image
            .map(|i| serde_json::from_str::<Image>(&i))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("build image: {e}")))?,
        reason: reason
            .map(|i| serde_json::from_str(&i))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("build reason: {e}")))?,
        created_at: r.get("created_at"),
        finished_at: r.get("finished_at"),
    })
}

impl Store {
    /// The team's template of that name, made if new; a new build of it, `waiting`.
    pub async fn request_build(
        &self,
        team_id: &str,
        name: &str,
        tags: &[String],
        cpu_count: i64,
        memory_mb: i64,
        disk_mb: i64,
    ) -> Result<(TemplateRecord, BuildRecord)> {
        // One statement, no read-then-write transaction: concurrent writers (build logs) make
        // such a transaction fail with SQLITE_BUSY_SNAPSHOT.
        let now = now();
        let row = sqlx::query(
            "INSERT INTO templates (id, team_id, name, public, cpu_count, memory_mb, disk_mb, created_at, updated_at)
             VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?)
             ON CONFLICT (team_id, name) DO UPDATE SET cpu_count = excluded.cpu_count,
               memory_mb = excluded.memory_mb, disk_mb = excluded.disk_mb, updated_at = excluded.updated_at
             RETURNING *",
        )
        .bind(super::new_id())
        .bind(team_id)
        .bind(name)
        .bind(cpu_count)
        .bind(memory_mb)
        .bind(disk_mb)
        .bind(&now)
        .bind(&now)
        .fetch_one(self.pool())
        .await?;
        let t = template_row(&row);
        let b = BuildRecord {
            id: uuid_like(),
            template_id: t.id.clone(),
            status: "waiting".into(),
            tags: tags.to_vec(),
            cpu_count,
            memory_mb,
            request: None,
            image: None,
            reason: None,
            created_at: now.clone(),
            finished_at: None,
        };
        sqlx::query("INSERT INTO template_builds (id, template_id, status, tags, cpu_count, memory_mb, created_at) VALUES (?, ?, 'waiting', ?, ?, ?, ?)")
            .bind(&b.id)
            .bind(&t.id)
            .bind(serde_json::to_string(tags).unwrap_or_default())
            .bind(cpu_count)
            .bind(memory_mb)
            .bind(&now)
            .execute(self.pool())
            .await?;
        Ok((t, b))
    }

    /// Records a snapshot of sandbox `of`: a template `name` of the team with one ready build
    /// (`image`), tagged `default`. A name already taken by a template that is not a snapshot
    /// is refused (`None`).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_snapshot(
        &self,
        team_id: &str,
        name: &str,
        of: &str,
        cpu_count: i64,
        memory_mb: i64,
        disk_mb: i64,
        image: &Image,
    ) -> Result<Option<TemplateRecord>> {
        if let Some(t) = self.template(team_id, name).await? {
            if t.team_id == team_id && t.snapshot_of.is_none() {
                return Ok(None);
            }
        }
        let (t, b) = self
            .request_build(team_id, name, &[], cpu_count, memory_mb, disk_mb)
            .await?;
        sqlx::query("UPDATE templates SET snapshot_of = ? WHERE id = ?")
            .bind(of)
            .bind(&t.id)
            .execute(self.pool())
            .await?;
        self.finish_build(&b, image, &["default".to_string()])
            .await?;
        Ok(Some(TemplateRecord {
            snapshot_of: Some(of.to_string()),
            ..t
        }))
    }

    /// The team's snapshots, newest first, of one sandbox or of all.
    pub async fn snapshots(&self, team_id: &str, of: Option<&str>) -> Result<Vec<TemplateRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM templates WHERE team_id = ?1 AND snapshot_of IS NOT NULL
             AND (?2 IS NULL OR snapshot_of = ?2) ORDER BY created_at DESC",
        )
        .bind(team_id)
        .bind(of)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(template_row).collect())
    }

    /// A template by id or name, as `team_id` may see it: its own, or a public one.
    pub async fn template(
        &self,
        team_id: &str,
        id_or_name: &str,
    ) -> Result<Option<TemplateRecord>> {
        let r = sqlx::query(
            "SELECT * FROM templates WHERE (id = ?1 OR name = ?1) AND (team_id = ?2 OR public = 1)
             ORDER BY team_id = ?2 DESC LIMIT 1",
        )
        .bind(id_or_name)
        .bind(team_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(r.as_ref().map(template_row))
    }

    /// The team's own templates (not others' public ones).
    pub async fn templates(&self, team_id: &str) -> Result<Vec<TemplateRecord>> {
        let rows = sqlx::query("SELECT * FROM templates WHERE team_id = ? ORDER BY created_at")
            .bind(team_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(template_row).collect())
    }

    pub async fn set_template_public(&self, id: &str, public: bool) -> Result<()> {
        sqlx::query("UPDATE templates SET public = ?, updated_at = ? WHERE id = ?")
            .bind(public as i64)
            .bind(now())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn delete_template(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM templates WHERE id = ?")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn build(&self, template_id: &str, build_id: &str) -> Result<Option<BuildRecord>> {
        let r = sqlx::query("SELECT * FROM template_builds WHERE id = ? AND template_id = ?")
            .bind(build_id)
            .bind(template_id)
            .fetch_optional(self.pool())
            .await?;
        r.as_ref().map(build_row).transpose()
    }

    pub async fn builds(&self, template_id: &str) -> Result<Vec<BuildRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM template_builds WHERE template_id = ? ORDER BY created_at DESC",
        )
        .bind(template_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(build_row).collect()
    }

    /// Moves a `waiting` build to `building` with its request; false if it was not waiting.
    pub async fn start_build(&self, build_id: &str, request: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE template_builds SET status = 'building', request = ? WHERE id = ? AND status = 'waiting'")
            .bind(request)
            .bind(build_id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A ready build: its image, and the tags that now point at it.
    pub async fn finish_build(
        &self,
        b: &BuildRecord,
        image: &Image,
        tags: &[String],
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let now = now();
        sqlx::query(
            "UPDATE template_builds SET status = 'ready', image = ?, finished_at = ? WHERE id = ?",
        )
        .bind(serde_json::to_string(image).unwrap_or_default())
        .bind(&now)
        .bind(&b.id)
        .execute(&mut *tx)
        .await?;
        for t in tags {
            point_tag(&mut tx, &b.template_id, t, &b.id, &now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn fail_build(&self, build_id: &str, reason: &serde_json::Value) -> Result<()> {
        sqlx::query("UPDATE template_builds SET status = 'error', reason = ?, finished_at = ? WHERE id = ? AND status IN ('waiting', 'building')")
            .bind(reason.to_string())
            .bind(now())
            .bind(build_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Builds a stopped server left unfinished; they are reported failed at start.
    pub async fn unfinished_builds(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM template_builds WHERE status = 'building'")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(|r| r.get("id")).collect())
    }

    pub async fn add_build_log(&self, build_id: &str, e: &LogEntry) -> Result<()> {
        sqlx::query("INSERT INTO template_build_logs (build_id, seq, timestamp, level, step, message)
                     VALUES (?1, (SELECT COALESCE(MAX(seq), -1) + 1 FROM template_build_logs WHERE build_id = ?1), ?2, ?3, ?4, ?5)")
            .bind(build_id)
            .bind(&e.timestamp)
            .bind(&e.level)
            .bind(&e.step)
            .bind(&e.message)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn build_logs(
        &self,
        build_id: &str,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<LogEntry>> {
        let rows = sqlx::query("SELECT * FROM template_build_logs WHERE build_id = ? AND seq >= ? ORDER BY seq LIMIT ?")
            .bind(build_id)
            .bind(offset)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| LogEntry {
                timestamp: r.get("timestamp"),
                level: r.get("level"),
                step: r.get("step"),
                message: r.get("message"),
            })
            .collect())
    }

    /// The build a tag of a template points at.
    pub async fn tagged_build(&self, template_id: &str, tag: &str) -> Result<Option<BuildRecord>> {
        let r = sqlx::query("SELECT b.* FROM template_tags t JOIN template_builds b ON b.id = t.build_id WHERE t.template_id = ? AND t.tag = ?")
            .bind(template_id)
            .bind(tag)
            .fetch_optional(self.pool())
            .await?;
        r.as_ref().map(build_row).transpose()
    }

    pub async fn tags(&self, template_id: &str) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query("SELECT tag, build_id, created_at FROM template_tags WHERE template_id = ? ORDER BY tag")
            .bind(template_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("tag"), r.get("build_id"), r.get("created_at")))
            .collect())
    }

    pub async fn set_tags(&self, template_id: &str, build_id: &str, tags: &[String]) -> Result<()> {
        let now = now();
        let mut tx = self.pool().begin().await?;
        for t in tags {
            point_tag(&mut tx, template_id, t, build_id, &now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The assignments of one tag, newest first: `limit` of them after the `cursor`-th newest,
    /// and whether more follow.
    pub async fn tag_assignments(
        &self,
        template_id: &str,
        tag: &str,
        skip: u64,
        limit: u64,
    ) -> Result<(Vec<TagAssignment>, bool)> {
        let rows = sqlx::query(
            "SELECT a.id, a.build_id, a.assigned_at, b.created_at, b.finished_at
             FROM template_tag_assignments a JOIN template_builds b ON b.id = a.build_id
             WHERE a.template_id = ? AND a.tag = ? ORDER BY a.seq DESC LIMIT ? OFFSET ?",
        )
        .bind(template_id)
        .bind(tag)
        .bind((limit + 1) as i64)
        .bind(skip as i64)
        .fetch_all(self.pool())
        .await?;
        let more = rows.len() as u64 > limit;
        Ok((
            rows.iter()
                .take(limit as usize)
                .map(|r| TagAssignment {
                    id: r.get(0),
                    build_id: r.get(1),
                    assigned_at: r.get(2),
                    build_created_at: r.get(3),
                    build_finished_at: r.get(4),
                })
                .collect(),
            more,
        ))
    }

    pub async fn delete_tags(&self, template_id: &str, tags: &[String]) -> Result<()> {
        for t in tags {
            sqlx::query("DELETE FROM template_tags WHERE template_id = ? AND tag = ?")
                .bind(template_id)
                .bind(t)
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    /// Every layer a ready build of any template uses: what layer collection keeps.
    pub async fn layers_in_use(&self) -> Result<Vec<soulbox_runtime::layer::LayerId>> {
        let rows = sqlx::query("SELECT image FROM template_builds WHERE image IS NOT NULL")
            .fetch_all(self.pool())
            .await?;
        let mut out = vec![];
        for r in rows {
            let raw: String = r.get("image");
            if let Ok(i) = serde_json::from_str::<Image>(&raw) {
                out.extend(i.layers);
                out.extend(i.memory);
            }
        }
        Ok(out)
    }
}

/// One time a tag was pointed at a build.
#[derive(Debug, Clone)]
pub struct TagAssignment {
    pub id: String,
    pub build_id: String,
    pub assigned_at: String,
    pub build_created_at: String,
    pub build_finished_at: Option<String>,
}

/// Points `tag` at `build_id` and records the assignment in the tag's history.
async fn point_tag(
    tx: &mut sqlx::SqliteConnection,
    template_id: &str,
    tag: &str,
    build_id: &str,
    now: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO template_tags (template_id, tag, build_id, created_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (template_id, tag) DO UPDATE SET build_id = excluded.build_id, created_at = excluded.created_at")
        .bind(template_id)
        .bind(tag)
        .bind(build_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO template_tag_assignments (id, template_id, tag, build_id, assigned_at, seq)
                 VALUES (?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM template_tag_assignments))")
        .bind(uuid_like())
        .bind(template_id)
        .bind(tag)
        .bind(build_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A build id in E2B's shape (a UUID v4).
fn uuid_like() -> String {
    let b: [u8; 16] = rand::random();
    let h = soulbox_runtime::layer::hex(&b);
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        ["8", "9", "a", "b"][(b[8] & 3) as usize],
        &h[17..20],
        &h[20..32]
    )
}
