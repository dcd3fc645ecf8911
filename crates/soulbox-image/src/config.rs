//! The parts of an image's configuration blob a sandbox uses (OCI and Docker write the same
//! JSON keys): how its processes start, and which platform it is for.

use serde::Deserialize;

/// How an image says its processes run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Env`, in order, split at the first `=`.
    pub env: Vec<(String, String)>,
    /// `WorkingDir`, if set.
    pub workdir: Option<String>,
    /// `User` as the image says it (`name`, `uid`, `uid:gid`, `name:group`), if set.
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    config: Option<RawRun>,
}

/// Docker writes `null` for empty lists, so every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRun {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
}

impl RawConfig {
    pub fn parse(raw: &[u8]) -> Result<RawConfig, String> {
        serde_json::from_slice(raw).map_err(|e| format!("its configuration is not valid JSON: {e}"))
    }

    /// `os/architecture[/variant]`, as an index names platforms.
    pub fn platform(&self) -> Option<String> {
        let os = self.os.as_deref()?;
        let arch = self.architecture.as_deref()?;
        Some(match self.variant.as_deref() {
            Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
            _ => format!("{os}/{arch}"),
        })
    }

    pub fn image_config(self) -> ImageConfig {
        let run = self.config.unwrap_or_default();
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        ImageConfig {
            env: run
                .env
                .unwrap_or_default()
                .into_iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv, String::new()),
                })
                .collect(),
            workdir: nonempty(run.working_dir),
            user: nonempty(run.user),
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_nulls_and_oci_fields() {
        let raw =
            br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","A=b=c","BARE"],
            "WorkingDir":"","User":"1000:1000","Entrypoint":null,"Cmd":["sh"]},"rootfs":{}}"#;
        let c = RawConfig::parse(raw).unwrap();
        assert_eq!(c.platform().as_deref(), Some("linux/amd64"));
        let c = c.image_config();
        assert_eq!(
            c.env,
            vec![
                ("PATH".into(), "/bin".into()),
                ("A".into(), "b=c".into()),
                ("BARE".into(), String::new())
            ]
        );
        assert_eq!(c.workdir, None);
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.cmd, vec!["sh"]);
        let bare = RawConfig::parse(b"{}").unwrap();
        assert_eq!(bare.platform(), None);
        assert_eq!(bare.image_config(), ImageConfig::default());
    }
}
