//! The control plane: creating, finding and ending sandboxes (E2B's REST API).

use crate::error::{Error, Result};
use crate::sandbox::Sandbox;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where the server is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of `soulbox serve` (control plane and sandbox proxy share it).
    pub url: String,
    /// An API key (`soulbox keys create`).
    pub api_key: String,
}

impl Config {
    /// `SOULBOX_URL` (default `http://127.0.0.1:3000`) and `SOULBOX_API_KEY` (or `E2B_API_KEY`).
    pub fn from_env() -> Config {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Config {
            url: var("SOULBOX_URL").unwrap_or_else(|| "http://127.0.0.1:3000".into()),
            api_key: var("SOULBOX_API_KEY")
                .or_else(|| var("E2B_API_KEY"))
                .unwrap_or_default(),
        }
    }
}

/// A connection to one SoulBox server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    api_key: String,
}

/// What to create. `CreateOptions::new("base")`, then the builder methods.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateOptions {
    #[serde(rename = "templateID")]
    pub template: String,
    /// Seconds until the sandbox is killed (or paused with `auto_pause`); server default 300.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
    #[serde(
        rename = "allow_internet_access",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_internet_access: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_pause: Option<bool>,
}

impl CreateOptions {
    pub fn new(template: impl Into<String>) -> Self {
        CreateOptions {
            template: template.into(),
            ..Default::default()
        }
    }
    pub fn timeout(mut self, seconds: u64) -> Self {
        self.timeout = Some(seconds);
        self
    }
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env_vars.insert(key.into(), value.into());
        self
    }
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
    pub fn internet(mut self, allow: bool) -> Self {
        self.allow_internet_access = Some(allow);
        self
    }
    pub fn auto_pause(mut self, on: bool) -> Self {
        self.auto_pause = Some(on);
        self
    }
}

/// A sandbox as the control plane lists it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SandboxInfo {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub alias: Option<String>,
    /// `running` or `paused`.
    pub state: String,
    pub started_at: String,
    pub end_at: String,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub envd_version: String,
    pub metadata: BTreeMap<String, String>,
    /// The token the sandbox's agent demands (kept out of serialized output).
    #[serde(skip_serializing)]
    pub envd_access_token: Option<String>,
}

/// Filters for [`Client::list`].
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `running`, `paused`, or both when empty.
    pub states: Vec<String>,
    /// Only sandboxes whose metadata has all these pairs.
    pub metadata: BTreeMap<String, String>,
}

/// The create/connect answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Created {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "templateID", default)]
    pub template_id: String,
    #[serde(default)]
    pub envd_access_token: Option<String>,
}

impl Client {
    /// A client for the server at `url` (e.g. `http://127.0.0.1:3000`).
    pub fn new(config: Config) -> Result<Client> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .map_err(Error::Http)?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                url: config.url.trim_end_matches('/').to_string(),
                api_key: config.api_key,
            }),
        })
    }

    /// A client configured by `SOULBOX_URL` and `SOULBOX_API_KEY` (see [`Config::from_env`]).
    pub fn from_env() -> Result<Client> {
        Client::new(Config::from_env())
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub(crate) fn api_key(&self) -> &str {
        &self.inner.api_key
    }

    /// Sends a control-plane request; returns the body of a 2xx answer.
    pub(crate) async fn send(&self, req: reqwest::RequestBuilder) -> Result<bytes::Bytes> {
        let resp = req
            .header("X-API-KEY", &self.inner.api_key)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?;
        if !(200..300).contains(&status) {
            return Err(Error::from_status(status, &body));
        }
        Ok(body)
    }

    /// Connection failures become [`Error::Unreachable`] (with what to do).
    pub(crate) fn transport(&self, e: reqwest::Error) -> Error {
        if e.is_connect() || e.is_timeout() && e.status().is_none() {
            Error::Unreachable {
                url: self.inner.url.clone(),
                source: e,
            }
        } else {
            Error::Http(e)
        }
    }

    pub(crate) fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.inner.url)
    }

    fn handle(&self, c: Created) -> Sandbox {
        Sandbox::new(
            self.clone(),
            c.sandbox_id,
            c.template_id,
            c.envd_access_token,
        )
    }

    /// Creates a sandbox from a template and waits until it runs.
    pub async fn create(&self, opts: &CreateOptions) -> Result<Sandbox> {
        let body = self
            .send(
                self.inner
                    .http
                    .post(self.endpoint("/v2/sandboxes"))
                    .json(opts),
            )
            .await?;
        Ok(self.handle(parse(&body)?))
    }

    /// Attaches to a running sandbox, or resumes a paused one. `timeout` (seconds) extends its
    /// life if given.
    pub async fn connect(&self, id: &str, timeout: Option<u64>) -> Result<Sandbox> {
        let body = match timeout {
            Some(t) => json!({ "timeout": t }),
            None => json!({}),
        };
        let url = self.endpoint(&format!("/v2/sandboxes/{id}/connect"));
        let body = self.send(self.inner.http.post(url).json(&body)).await?;
        Ok(self.handle(parse(&body)?))
    }

    /// A handle on an existing sandbox that leaves its timeout alone (a paused sandbox is
    /// resumed, which extends it as [`Client::connect`] does).
    pub async fn sandbox(&self, id: &str) -> Result<Sandbox> {
        let info = self.info(id).await?;
        if info.state == "paused" {
            return self.connect(id, None).await;
        }
        Ok(Sandbox::new(
            self.clone(),
            info.sandbox_id,
            info.template_id,
            info.envd_access_token,
        ))
    }

    /// One sandbox's details.
    pub async fn info(&self, id: &str) -> Result<SandboxInfo> {
        let url = self.endpoint(&format!("/sandboxes/{id}"));
        parse(&self.send(self.inner.http.get(url)).await?)
    }

    /// The team's sandboxes (every page).
    pub async fn list(&self, opts: &ListOptions) -> Result<Vec<SandboxInfo>> {
        let mut all = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut q: Vec<(&str, String)> = vec![("limit", "100".into())];
            if !opts.states.is_empty() {
                q.push(("state", opts.states.join(",")));
            }
            if !opts.metadata.is_empty() {
                let m: Vec<String> = opts
                    .metadata
                    .iter()
                    .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                    .collect();
                q.push(("metadata", m.join("&")));
            }
            if let Some(t) = &next {
                q.push(("nextToken", t.clone()));
            }
            let resp = self
                .inner
                .http
                .get(self.endpoint("/v2/sandboxes"))
                .query(&q)
                .header("X-API-KEY", &self.inner.api_key)
                .send()
                .await
                .map_err(|e| self.transport(e))?;
            let status = resp.status().as_u16();
            next = resp
                .headers()
                .get("x-next-token")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string);
            let body = resp.bytes().await?;
            if status != 200 {
                return Err(Error::from_status(status, &body));
            }
            let page: Vec<SandboxInfo> = parse(&body)?;
            all.extend(page);
            if next.is_none() {
                return Ok(all);
            }
        }
    }

    /// Kills a sandbox; its files are gone.
    pub async fn kill(&self, id: &str) -> Result<()> {
        let url = self.endpoint(&format!("/sandboxes/{id}"));
        self.send(self.inner.http.delete(url)).await.map(drop)
    }

    /// Sets the sandbox to end `seconds` from now.
    pub async fn set_timeout(&self, id: &str, seconds: u64) -> Result<()> {
        let url = self.endpoint(&format!("/sandboxes/{id}/timeout"));
        self.send(
            self.inner
                .http
                .post(url)
                .json(&json!({ "timeout": seconds })),
        )
        .await
        .map(drop)
    }

    /// Replaces a sandbox's whole egress configuration (`PUT /sandboxes/{id}/network`, E2B's
    /// shape: `allowOut`, `denyOut`, `dnsServers`, `rules`, `allow_internet_access`).
    pub async fn update_network(&self, id: &str, network: &serde_json::Value) -> Result<()> {
        let url = self.endpoint(&format!("/sandboxes/{id}/network"));
        self.send(self.inner.http.put(url).json(network))
            .await
            .map(drop)
    }

    /// Freezes a sandbox; its processes and files stay as they are until resumed.
    pub async fn pause(&self, id: &str) -> Result<()> {
        let url = self.endpoint(&format!("/sandboxes/{id}/pause"));
        self.send(self.inner.http.post(url)).await.map(drop)
    }

    /// Checks a paused sandbox's files against the manifest its pause wrote; returns how many
    /// paths it holds. An error names the files that differ.
    pub async fn verify(&self, id: &str) -> Result<u64> {
        let url = self.endpoint(&format!("/sandboxes/{id}/verify"));
        let v: serde_json::Value = parse(&self.send(self.inner.http.get(url)).await?)?;
        Ok(v["entries"].as_u64().unwrap_or(0))
    }

    /// Resumes a paused sandbox (the same as [`Client::connect`]).
    pub async fn resume(&self, id: &str, timeout: Option<u64>) -> Result<Sandbox> {
        self.connect(id, timeout).await
    }
}

/// The metadata filter is itself a query string inside the query (E2B's format).
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        Error::Protocol(format!(
            "{e}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    })
}
