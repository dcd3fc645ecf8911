//! What the client commands (`sandbox`, `exec`, `connect`, `files`) share: where the server
//! is and which key to use (flags, then `SOULBOX_URL`/`SOULBOX_API_KEY`, then the config file),
//! and output as tables for people or JSON for scripts.

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;
use soulbox_client::{Client, Config, Error};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct RemoteArgs {
    /// URL of `soulbox serve` [env: SOULBOX_URL; config: url; default http://127.0.0.1:3000]
    #[arg(long, global = true)]
    url: Option<String>,
    /// API key [env: SOULBOX_API_KEY; config: api_key]
    #[arg(long, global = true)]
    api_key: Option<String>,
    /// Config file with `url` and `api_key` [default: ~/.config/soulbox/config.toml]
    #[arg(long, global = true, env = "SOULBOX_CONFIG")]
    config: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    url: Option<String>,
    api_key: Option<String>,
}

fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("soulbox/config.toml"))
}

impl RemoteArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        let explicit = self.config.is_some();
        let file = match self.config.clone().or_else(default_config_path) {
            Some(p) if explicit || p.exists() => {
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading the config file {}", p.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing the config file {}", p.display()))?
            }
            _ => FileConfig::default(),
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let url = self
            .url
            .clone()
            .or_else(|| env("SOULBOX_URL"))
            .or(file.url)
            .unwrap_or_else(|| "http://127.0.0.1:3000".into());
        let api_key = self
            .api_key
            .clone()
            .or_else(|| env("SOULBOX_API_KEY"))
            .or(file.api_key)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no API key: pass --api-key, set SOULBOX_API_KEY, or put api_key in {} \
                     (`soulbox keys create` on the server makes one)",
                    default_config_path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "the config file".into())
                )
            })?;
        Ok(Client::new(Config { url, api_key })?)
    }
}

impl RemoteArgs {
    /// A handle on sandbox `id` (acting as `user` if given), with the next step in its errors.
    pub async fn sandbox(
        &self,
        id: &str,
        user: Option<&str>,
    ) -> anyhow::Result<soulbox_client::Sandbox> {
        let sbx = self
            .client()?
            .sandbox(id)
            .await
            .map_err(|e| about_sandbox(id, e))?;
        Ok(match user {
            Some(u) => sbx.as_user(u),
            None => sbx,
        })
    }
}

/// Adds the next step to errors about a sandbox id.
pub fn about_sandbox(id: &str, e: Error) -> anyhow::Error {
    match e {
        Error::NotFound(_) => anyhow::anyhow!(
            "no sandbox '{id}' (it may have been killed or timed out; `soulbox sandbox list` shows yours)"
        ),
        other => other.into(),
    }
}

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < width.len() {
                width[i] = width[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.to_string()
                } else {
                    format!("{c:<w$}", w = width[i])
                }
            })
            .collect();
        println!("{}", s.join("  "));
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// `KEY=VALUE` arguments.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("'{s}': expected KEY=VALUE"))
}

pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
