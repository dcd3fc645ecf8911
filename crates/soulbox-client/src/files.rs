//! Files in a sandbox: whole-file reads and writes, streamed uploads and downloads of any
//! size (never held in memory), listing, and watching.

use crate::error::{Error, Result};
use crate::sandbox::{MessageStream, Sandbox};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use soulbox_protocol::filesystem::{
    EntryResponse, FilesystemEvent, ListDirRequest, ListDirResponse, MoveRequest, PathRequest,
    WatchDirResponse, WatchEvent, WatchRequest,
};
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub use soulbox_protocol::filesystem::{EntryInfo, EventType, FileType};

/// `sandbox.files()`.
#[derive(Debug, Clone, Copy)]
pub struct Files<'a> {
    sbx: &'a Sandbox,
}

/// A download in progress: its size (when the server said) and its bytes as they come.
pub struct Download {
    pub len: Option<u64>,
    pub stream: Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download").field("len", &self.len).finish()
    }
}

impl Download {
    /// Writes the rest of the download to `out`; returns the bytes written.
    pub async fn copy_to(mut self, out: &mut (impl AsyncWrite + Unpin)) -> Result<u64> {
        let mut n = 0;
        while let Some(chunk) = self.stream.next().await {
            let chunk = chunk?;
            out.write_all(&chunk).await?;
            n += chunk.len() as u64;
        }
        out.flush().await?;
        Ok(n)
    }
}

impl<'a> Files<'a> {
    pub(crate) fn new(sbx: &'a Sandbox) -> Self {
        Files { sbx }
    }

    /// Reads a whole file into memory (use [`Files::download`] for big ones).
    pub async fn read(&self, path: &str) -> Result<Bytes> {
        let resp = self.get(path).await?;
        Ok(resp.bytes().await?)
    }

    /// Streams a file out of the sandbox.
    pub async fn download(&self, path: &str) -> Result<Download> {
        let resp = self.get(path).await?;
        Ok(Download {
            len: resp.content_length(),
            stream: Box::pin(resp.bytes_stream().map_err(Error::Http)),
        })
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response> {
        let req = self
            .sbx
            .request(reqwest::Method::GET, "/files")
            .query(&[("path", path)]);
        self.sbx.send(req).await
    }

    /// Writes a whole file (parents are created, an existing file is replaced).
    pub async fn write(&self, path: &str, data: impl Into<Bytes>) -> Result<()> {
        self.post(path, reqwest::Body::from(data.into())).await
    }

    /// Streams `data` into a file (parents are created, an existing file is replaced).
    pub async fn upload(
        &self,
        path: &str,
        data: impl AsyncRead + Send + Sync + 'static,
    ) -> Result<()> {
        let stream = tokio_util::io::ReaderStream::with_capacity(data, 256 * 1024);
        self.post(path, reqwest::Body::wrap_stream(stream)).await
    }

    async fn post(&self, path: &str, body: reqwest::Body) -> Result<()> {
        let req = self
            .sbx
            .request(reqwest::Method::POST, "/files")
            .query(&[("path", path)])
            .header("Content-Type", "application/octet-stream")
            .body(body);
        self.sbx.send(req).await.map(drop)
    }

    /// A file's or directory's details.
    pub async fn stat(&self, path: &str) -> Result<EntryInfo> {
        let r: EntryResponse = self
            .sbx
            .unary("filesystem.Filesystem/Stat", &path_req(path))
            .await?;
        Ok(r.entry)
    }

    pub async fn exists(&self, path: &str) -> Result<bool> {
        match self.stat(path).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A directory's entries, `depth` levels down (1 = its direct entries).
    pub async fn list(&self, path: &str, depth: u32) -> Result<Vec<EntryInfo>> {
        let r: ListDirResponse = self
            .sbx
            .unary(
                "filesystem.Filesystem/ListDir",
                &ListDirRequest {
                    path: path.into(),
                    depth: depth.max(1),
                },
            )
            .await?;
        Ok(r.entries)
    }

    /// Creates a directory and its parents; `false` if it already existed.
    pub async fn make_dir(&self, path: &str) -> Result<bool> {
        let r: Result<EntryResponse> = self
            .sbx
            .unary("filesystem.Filesystem/MakeDir", &path_req(path))
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(Error::Rpc { code, .. }) if code == "already_exists" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes a file, or a directory with everything in it.
    pub async fn remove(&self, path: &str) -> Result<()> {
        let _: serde_json::Value = self
            .sbx
            .unary("filesystem.Filesystem/Remove", &path_req(path))
            .await?;
        Ok(())
    }

    /// Moves or renames; returns the entry at its new place.
    pub async fn rename(&self, from: &str, to: &str) -> Result<EntryInfo> {
        let r: EntryResponse = self
            .sbx
            .unary(
                "filesystem.Filesystem/Move",
                &MoveRequest {
                    source: from.into(),
                    destination: to.into(),
                },
            )
            .await?;
        Ok(r.entry)
    }

    /// Watches a directory; returns once the watch is in place, so no later change is missed.
    pub async fn watch(&self, path: &str, recursive: bool) -> Result<WatchHandle> {
        let mut events: MessageStream<WatchDirResponse> = self
            .sbx
            .server_stream(
                "filesystem.Filesystem/WatchDir",
                &WatchRequest {
                    path: path.into(),
                    recursive,
                    ..Default::default()
                },
                &[],
            )
            .await?;
        match events.next().await {
            Some(Ok(WatchDirResponse {
                event: WatchEvent::Start(_),
            })) => Ok(WatchHandle { events }),
            Some(Err(e)) => Err(e),
            _ => Err(Error::Protocol("the watch did not start".into())),
        }
    }
}

fn path_req(path: &str) -> PathRequest {
    PathRequest { path: path.into() }
}

/// Changes under a watched directory.
pub struct WatchHandle {
    events: MessageStream<WatchDirResponse>,
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle").finish_non_exhaustive()
    }
}

impl WatchHandle {
    /// The next change; `None` when the watch ends.
    pub async fn next(&mut self) -> Option<Result<FilesystemEvent>> {
        loop {
            match self.events.next().await? {
                Ok(WatchDirResponse {
                    event: WatchEvent::Filesystem(ev),
                }) => return Some(Ok(*ev)),
                Ok(_) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
