//! Custom templates: E2B's template build API (request, upload, start, follow, list, delete).
//! Steps are sent as the SDKs send them (`{"type": "RUN", "args": [...]}` and so on).

use crate::client::Client;
use crate::error::Result;
use serde::Deserialize;
use serde_json::{json, Value};

/// A requested build: where to upload files and what to start.
#[derive(Debug, Clone, Deserialize)]
pub struct BuildTicket {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
}

/// Where a COPY's files go, if the server does not have them yet.
#[derive(Debug, Clone, Deserialize)]
pub struct FileLink {
    pub present: bool,
    pub url: Option<String>,
    #[serde(default)]
    pub headers: std::collections::HashMap<String, String>,
}

impl Client {
    /// Requests a build of `name[:tag]` (the template is made if new).
    pub async fn request_template_build(
        &self,
        name: &str,
        cpu_count: Option<u32>,
        memory_mb: Option<u32>,
    ) -> Result<BuildTicket> {
        let mut body = json!({ "name": name });
        if let Some(c) = cpu_count {
            body["cpuCount"] = c.into();
        }
        if let Some(m) = memory_mb {
            body["memoryMB"] = m.into();
        }
        let req = self
            .inner
            .http
            .post(self.endpoint("/v3/templates"))
            .json(&body);
        decode(&self.send(req).await?)
    }

    pub async fn template_file_link(
        &self,
        template_id: &str,
        files_hash: &str,
    ) -> Result<FileLink> {
        let url = self.endpoint(&format!("/templates/{template_id}/files/{files_hash}"));
        decode(&self.send(self.inner.http.get(url)).await?)
    }

    /// Uploads a COPY's tar(.gz) to the link the server gave.
    pub async fn upload_template_files(&self, link: &FileLink, archive: Vec<u8>) -> Result<()> {
        let Some(url) = &link.url else { return Ok(()) };
        let mut req = self.inner.http.put(url).body(archive);
        for (k, v) in &link.headers {
            req = req.header(k, v);
        }
        self.send(req).await.map(drop)
    }

    /// Starts a requested build with its base, steps and start/ready commands.
    pub async fn start_template_build(&self, t: &BuildTicket, spec: &Value) -> Result<()> {
        let url = self.endpoint(&format!(
            "/v2/templates/{}/builds/{}",
            t.template_id, t.build_id
        ));
        self.send(self.inner.http.post(url).json(spec))
            .await
            .map(drop)
    }

    /// A build's status and its log entries from `offset` on.
    pub async fn template_build_status(&self, t: &BuildTicket, offset: usize) -> Result<Value> {
        let url = self.endpoint(&format!(
            "/templates/{}/builds/{}/status?logsOffset={offset}",
            t.template_id, t.build_id
        ));
        decode(&self.send(self.inner.http.get(url)).await?)
    }

    /// The team's templates.
    pub async fn templates(&self) -> Result<Vec<Value>> {
        let url = self.endpoint("/templates");
        decode(&self.send(self.inner.http.get(url)).await?)
    }

    /// One template by id or name, with its builds, layers and tags.
    pub async fn template(&self, id_or_name: &str) -> Result<Value> {
        let url = self.endpoint(&format!("/templates/{id_or_name}"));
        decode(&self.send(self.inner.http.get(url)).await?)
    }

    pub async fn delete_template(&self, id_or_name: &str) -> Result<()> {
        let url = self.endpoint(&format!("/templates/{id_or_name}"));
        self.send(self.inner.http.delete(url)).await.map(drop)
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| crate::Error::Protocol(e.to_string()))
}
