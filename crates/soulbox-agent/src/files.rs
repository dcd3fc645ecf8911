//! `GET /files` and `POST /files` (spec §3.7, §3.8).

use crate::fs::{read_metadata, resolve, write_metadata};
use crate::identity::as_user;
use crate::rpc::{json_error, UNAUTHORIZED};
use crate::state::Agent;
use crate::users::User;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, Method, Response, StatusCode};
use futures::{Stream, TryStreamExt};
use serde::Deserialize;
use soulbox_protocol::signature::{self, Operation};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio_util::io::{ReaderStream, StreamReader};

#[derive(Debug, Deserialize, Default)]
pub struct FileQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    signature_expiration: Option<i64>,
}

type HttpResult = Result<Response<Body>, HttpError>;

/// An error answer: envd's JSON body `{"code", "message"}` with this status.
#[derive(Debug)]
pub struct HttpError(StatusCode, String);

impl HttpError {
    fn into_response(self) -> Response<Body> {
        json_error(self.0, &self.1)
    }
}

fn err(status: StatusCode, msg: impl AsRef<str>) -> HttpError {
    HttpError(status, msg.as_ref().to_string())
}

/// Token header, else a valid unexpired signature (when the agent has a token at all).
fn authorize(
    agent: &Agent,
    headers: &HeaderMap,
    q: &FileQuery,
    op: Operation,
) -> Result<(), HttpError> {
    let Some(token) = agent.token() else {
        return Ok(());
    };
    if let Some(t) = headers.get("x-access-token") {
        return match t.to_str() {
            Ok(t) if signature::equal(t, &token) => Ok(()),
            _ => Err(err(StatusCode::UNAUTHORIZED, UNAUTHORIZED)),
        };
    }
    let Some(sig) = &q.signature else {
        return Err(err(StatusCode::UNAUTHORIZED, UNAUTHORIZED));
    };
    let path = q.path.as_deref().unwrap_or_default();
    let user = q.username.as_deref().unwrap_or_default();
    let want = signature::sign(path, op, user, &token, q.signature_expiration);
    if !signature::equal(sig, &want) {
        return Err(err(StatusCode::UNAUTHORIZED, "invalid signature"));
    }
    if let Some(exp) = q.signature_expiration {
        if exp < chrono::Utc::now().timestamp() {
            return Err(err(
                StatusCode::UNAUTHORIZED,
                "signature is already expired",
            ));
        }
    }
    Ok(())
}

fn io_status(e: &io::Error) -> StatusCode {
    match e.kind() {
        io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
        io::ErrorKind::PermissionDenied => StatusCode::UNAUTHORIZED,
        io::ErrorKind::IsADirectory
        | io::ErrorKind::NotADirectory
        | io::ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        _ if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn user_of(agent: &Agent, q: &FileQuery) -> Result<User, HttpError> {
    agent
        .user(q.username.as_deref())
        .map_err(|e| err(StatusCode::UNAUTHORIZED, e.message))
}

pub async fn handle(
    State(agent): State<Agent>,
    Query(q): Query<FileQuery>,
    req: Request,
) -> Response<Body> {
    let op = if req.method() == Method::GET {
        Operation::Read
    } else {
        Operation::Write
    };
    let r = match authorize(&agent, req.headers(), &q, op) {
        Err(e) => Err(e),
        Ok(()) if op == Operation::Read => download(&agent, &q).await,
        Ok(()) => upload(&agent, &q, req).await,
    };
    r.unwrap_or_else(HttpError::into_response)
}

async fn download(agent: &Agent, q: &FileQuery) -> HttpResult {
    let user = user_of(agent, q)?;
    let path = resolve(agent, &user, q.path.as_deref().unwrap_or_default());
    let p = path.clone();
    let file = as_user(&user, move || {
        let f = std::fs::File::open(&p)?;
        if f.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "path is a directory",
            ));
        }
        Ok(f)
    })
    .await
    .map_err(|e| err(io_status(&e), format!("{}: {e}", path.display())))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let body = Body::from_stream(ReaderStream::with_capacity(
        tokio::fs::File::from_std(file),
        64 * 1024,
    ));
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(
            header::CONTENT_DISPOSITION,
            format!(
                "inline; filename={}",
                percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC)
            ),
        )
        .body(body)
        .unwrap_or_default())
}

/// `X-Metadata-<key>: <value>` headers; printable ASCII, bounded as envd bounds them.
fn metadata_headers(h: &HeaderMap) -> Result<BTreeMap<String, String>, HttpError> {
    let mut m = BTreeMap::new();
    let mut total = 0;
    for (k, v) in h {
        if let Some(key) = k.as_str().strip_prefix("x-metadata-") {
            let v = v
                .to_str()
                .map_err(|_| err(StatusCode::BAD_REQUEST, "metadata must be printable ASCII"))?;
            if key.is_empty() || key.len() > 246 || v.chars().any(|c| !(' '..='~').contains(&c)) {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    format!("invalid metadata key or value: {key}"),
                ));
            }
            total += key.len() + v.len();
            m.insert(key.to_string(), v.to_string());
        }
    }
    if total > 4096 {
        return Err(err(StatusCode::BAD_REQUEST, "metadata exceeds 4096 bytes"));
    }
    Ok(m)
}

async fn upload(agent: &Agent, q: &FileQuery, req: Request) -> HttpResult {
    let user = user_of(agent, q)?;
    let meta = metadata_headers(req.headers())?;
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let gzip = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let mut written = vec![];
    if ctype.starts_with("multipart/form-data") {
        let (parts, body) = req.into_parts();
        let (body, drained) = read_to_end(body);
        let mut mp = Multipart::from_request(Request::from_parts(parts, body), &())
            .await
            .map_err(|e| err(StatusCode::BAD_REQUEST, e.body_text()))?;
        let mut seen = std::collections::HashSet::new();
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| err(StatusCode::BAD_REQUEST, e.body_text()))?
        {
            if field.name() != Some("file") {
                continue;
            }
            // The part's filename is the full destination path; `?path=` overrides it.
            let dest = match q.path.as_deref().filter(|p| !p.is_empty()) {
                Some(p) => p.to_string(),
                None => field.file_name().unwrap_or_default().to_string(),
            };
            if dest.is_empty() {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "a file part has no destination path",
                ));
            }
            let path = resolve(agent, &user, &dest);
            if !seen.insert(path.clone()) {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    format!("{} is uploaded twice", path.display()),
                ));
            }
            let stream = field.map_err(io::Error::other);
            written.push(write_file(agent, &user, path, StreamReader::new(stream), &meta).await?);
        }
        drop(mp);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drained).await;
    } else if ctype.starts_with("application/octet-stream") {
        let Some(dest) = q.path.as_deref().filter(|p| !p.is_empty()) else {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "the path query parameter is required for octet-stream uploads",
            ));
        };
        let path = resolve(agent, &user, dest);
        let reader = StreamReader::new(body_stream(req.into_body()));
        written.push(if gzip {
            write_file(
                agent,
                &user,
                path,
                async_compression::tokio::bufread::GzipDecoder::new(reader),
                &meta,
            )
            .await?
        } else {
            write_file(agent, &user, path, reader, &meta).await?
        });
    } else {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("unsupported content type '{ctype}'"),
        ));
    }
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::Value::Array(written).to_string()))
        .unwrap_or_default())
}

/// Multipart parsing stops at the closing boundary, but a client may send more (an epilogue,
/// a final CRLF). Unless the body is read to its end, the connection is closed under a client
/// still writing and its upload fails although the files were written. So the body is read by a
/// task that passes it on while the parser wants it and discards the rest; the returned handle
/// finishes at the body's end.
fn read_to_end(body: Body) -> (Body, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, axum::Error>>(4);
    let task = tokio::spawn(async move {
        let mut data = body.into_data_stream();
        let mut wanted = true;
        while let Some(chunk) = futures::StreamExt::next(&mut data).await {
            let failed = chunk.is_err();
            if wanted && tx.send(chunk).await.is_err() {
                wanted = false;
            }
            if failed {
                return;
            }
        }
    });
    (
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
        task,
    )
}

fn body_stream(b: Body) -> impl Stream<Item = io::Result<bytes::Bytes>> + Unpin {
    b.into_data_stream().map_err(io::Error::other)
}

/// Creates parents and the file as the user (existing files are truncated), then streams the
/// data in. Returns the entry of the upload response.
async fn write_file(
    agent: &Agent,
    user: &User,
    path: PathBuf,
    data: impl AsyncRead + Unpin,
    meta: &BTreeMap<String, String>,
) -> Result<serde_json::Value, HttpError> {
    let fail = |p: &Path, e: io::Error| err(io_status(&e), format!("{}: {e}", p.display()));
    let p = path.clone();
    as_user(user, move || {
        if p.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "path is a directory",
            ));
        }
        match p.parent() {
            Some(parent) => std::fs::create_dir_all(parent),
            None => Ok(()),
        }
    })
    .await
    .map_err(|e| fail(&path, e))?;
    // New parents are watched by recursive watches before the file is made in them.
    agent.watchers.sync();
    let (p, uid, gid) = (path.clone(), user.uid, user.gid);
    let file = as_user(user, move || {
        // As envd, the file is given its owner explicitly (before truncating an existing one,
        // after creating a new one), so watchers see the same attribute change envd causes.
        // Best effort: unlike envd (root), the user cannot take over someone else's file.
        let chowned = p.exists() && std::os::unix::fs::chown(&p, Some(uid), Some(gid)).is_ok();
        let file = std::fs::File::create(&p)?;
        if !chowned {
            let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
        }
        Ok(file)
    })
    .await
    .map_err(|e: io::Error| fail(&path, e))?;
    let mut file = tokio::fs::File::from_std(file);
    let mut data = data;
    tokio::io::copy(&mut data, &mut file)
        .await
        .map_err(|e| fail(&path, e))?;
    file.flush().await.map_err(|e| fail(&path, e))?;
    let (p, m) = (path.clone(), meta.clone());
    let meta = as_user(user, move || {
        write_metadata(&p, &m)?;
        Ok(read_metadata(&p))
    })
    .await
    .map_err(|e| fail(&path, e))?;
    let mut v = serde_json::json!({
        "path": path.to_string_lossy(),
        "name": path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        "type": "file",
    });
    if !meta.is_empty() {
        v["metadata"] = serde_json::to_value(meta).unwrap_or_default();
    }
    Ok(v)
}
