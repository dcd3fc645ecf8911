//! Custom templates: E2B's template build API (spec §2.7). A template is a team's name; each
//! build of it turns a base (a built-in template, another template, an OCI image) and a list
//! of steps into an [`Image`]: a stack of layer-store layers plus the defaults its sandboxes
//! start with. Tags (`name:tag`) point at builds; a bare name means the tag `default`.

pub mod api;
pub mod build;
pub mod db;
pub mod steps;
pub mod tags;

use serde::{Deserialize, Serialize};
use soulbox_runtime::layer::LayerId;

/// What a ready build produced; everything a sandbox of the template needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Layer ids, bottom first.
    pub layers: Vec<LayerId>,
    pub env: Vec<(String, String)>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub start_cmd: Option<String>,
    pub ready_cmd: Option<String>,
    /// A memory snapshot's layer: CRIU's images of the processes a sandbox of this image
    /// starts with, restored on the layers above (`None`: a fresh start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<LayerId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub public: bool,
    pub cpu_count: i64,
    pub memory_mb: i64,
    pub disk_mb: i64,
    pub created_at: String,
    pub updated_at: String,
    /// The sandbox a snapshot was taken of (`None`: built from steps).
    pub snapshot_of: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecord {
    pub id: String,
    pub template_id: String,
    pub status: String,
    /// The tags that point at it once it is ready.
    pub tags: Vec<String>,
    pub cpu_count: i64,
    pub memory_mb: i64,
    pub request: Option<String>,
    pub image: Option<Image>,
    pub reason: Option<serde_json::Value>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    pub timestamp: String,
    pub level: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub message: String,
}

/// Splits `name[:tag]`; both parts are checked (lowercase letters, digits, `-`, `_`, `.`, and
/// `/` in names — E2B's namespaced names). The tag defaults to `default`.
pub fn parse_name(s: &str) -> Result<(String, String), String> {
    let (name, tag) = match s.rsplit_once(':') {
        Some((n, t)) => (n, t),
        None => (s, "default"),
    };
    check_part("name", name, true)?;
    check_part("tag", tag, false)?;
    Ok((name.to_string(), tag.to_string()))
}

pub fn check_tag(tag: &str) -> Result<(), String> {
    check_part("tag", tag, false)
}

fn check_part(what: &str, v: &str, slash: bool) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'-' | b'_' | b'.')
                || (slash && b == b'/')
        })
        && !v.starts_with(['.', '-', '/'])
        && !v.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid template {what} '{v}': use 1–128 lowercase letters, digits, '-', '_' or '.'{}",
            if slash { " (and '/')" } else { "" }
        ))
    }
}

/// A random id in E2B's style (20 characters of `[a-z0-9]`).
pub fn new_id() -> String {
    soulbox_runtime::ns::new_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        assert_eq!(parse_name("app").unwrap(), ("app".into(), "default".into()));
        assert_eq!(
            parse_name("team/app:v1.2").unwrap(),
            ("team/app".into(), "v1.2".into())
        );
        for bad in ["", "App", "a b", "../x", "a:", ":t", "a:b/c", "x..y", "-a"] {
            assert!(parse_name(bad).is_err(), "{bad}");
        }
    }
}
