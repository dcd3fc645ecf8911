//! `filesystem.Filesystem` methods and the `EntryInfo` they return.

use crate::identity::as_user;
use crate::rpc::{self, invalid, not_found, RpcResult};
use crate::state::Agent;
use crate::users::{self, User};
use axum::http::HeaderMap;
use soulbox_protocol::connect::{Code, ConnectError};
use soulbox_protocol::filesystem::*;
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Resolves a request path as envd does: `~` is the user's home, relative paths are under the
/// home, an empty path is the default workdir (or home). `..` is resolved lexically, so a path
/// cannot climb above `/` (the sandbox root is the agent's root anyway).
pub fn resolve(agent: &Agent, user: &User, path: &str) -> PathBuf {
    let p = if path.is_empty() {
        agent
            .init()
            .default_workdir
            .map(PathBuf::from)
            .unwrap_or_else(|| user.home.clone())
    } else if path == "~" {
        user.home.clone()
    } else if let Some(rest) = path.strip_prefix("~/") {
        user.home.join(rest)
    } else {
        user.home.join(path)
    };
    normalize(&p)
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

pub fn io_error(path: &Path, e: io::Error) -> ConnectError {
    let code = match e.kind() {
        io::ErrorKind::NotFound => Code::NotFound,
        io::ErrorKind::PermissionDenied => Code::PermissionDenied,
        io::ErrorKind::AlreadyExists => Code::AlreadyExists,
        io::ErrorKind::InvalidInput
        | io::ErrorKind::NotADirectory
        | io::ErrorKind::IsADirectory => Code::InvalidArgument,
        _ if e.raw_os_error() == Some(libc::ENOSPC) => Code::ResourceExhausted,
        _ => Code::Internal,
    };
    let what = match code {
        Code::NotFound => "no such file or directory".to_string(),
        _ => e.to_string(),
    };
    ConnectError::new(code, format!("{}: {what}", path.display()))
}

/// `EntryInfo` for a path as envd builds it: a final symlink is not followed for the name,
/// size, times and `permissions` string, but reports its target's type and permission bits,
/// and `symlink_target` is the fully resolved path (the link's own path when it dangles).
pub fn entry_info(path: &Path) -> io::Result<EntryInfo> {
    let md = std::fs::symlink_metadata(path)?;
    let is_symlink = md.file_type().is_symlink();
    let (file_type, mode, symlink_target) = if is_symlink {
        let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let (t, m) = match std::fs::metadata(path) {
            Ok(t) => (file_type_of(&t), t.permissions().mode() & 0o777),
            Err(_) => (FileType::Unspecified, 0),
        };
        (t, m, Some(target.to_string_lossy().into_owned()))
    } else {
        (file_type_of(&md), md.permissions().mode() & 0o777, None)
    };
    Ok(EntryInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into()),
        file_type,
        path: path.to_string_lossy().into_owned(),
        size: md.len() as i64,
        // envd sends Go's `FileMode.Perm()`: the permission bits only.
        mode,
        permissions: go_mode_string(go_file_mode(&md)),
        owner: users::name_of("/etc/passwd", md.uid()),
        group: users::name_of("/etc/group", md.gid()),
        modified_time: rfc3339(md.mtime(), md.mtime_nsec()),
        symlink_target,
        metadata: read_metadata(path),
    })
}

fn file_type_of(md: &std::fs::Metadata) -> FileType {
    let ft = md.file_type();
    if ft.is_dir() {
        FileType::Directory
    } else if ft.is_file() {
        FileType::File
    } else if ft.is_symlink() {
        FileType::Symlink
    } else {
        FileType::Unspecified
    }
}

fn rfc3339(secs: i64, nsecs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, nsecs as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

// Go's os.FileMode bits, from which `permissions` is written as Go's `FileMode.String()`.
const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_DEVICE: u32 = 1 << 26;
const GO_PIPE: u32 = 1 << 25;
const GO_SOCKET: u32 = 1 << 24;
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_CHARDEV: u32 = 1 << 21;
const GO_STICKY: u32 = 1 << 20;

fn go_file_mode(md: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::FileTypeExt;
    let unix = md.permissions().mode();
    let mut m = unix & 0o777;
    let ft = md.file_type();
    if ft.is_dir() {
        m |= GO_DIR
    }
    if ft.is_symlink() {
        m |= GO_SYMLINK
    }
    if ft.is_block_device() {
        m |= GO_DEVICE
    }
    if ft.is_char_device() {
        m |= GO_DEVICE | GO_CHARDEV
    }
    if ft.is_fifo() {
        m |= GO_PIPE
    }
    if ft.is_socket() {
        m |= GO_SOCKET
    }
    if unix & 0o4000 != 0 {
        m |= GO_SETUID
    }
    if unix & 0o2000 != 0 {
        m |= GO_SETGID
    }
    if unix & 0o1000 != 0 {
        m |= GO_STICKY
    }
    m
}

/// Go's `FileMode.String()`, e.g. `drwxr-xr-x`, `Lrwxrwxrwx`, `-rw-r--r--`.
fn go_mode_string(m: u32) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (GO_DIR, 'd'),
        (GO_SYMLINK, 'L'),
        (GO_DEVICE, 'D'),
        (GO_PIPE, 'p'),
        (GO_SOCKET, 'S'),
        (GO_SETUID, 'u'),
        (GO_SETGID, 'g'),
        (GO_CHARDEV, 'c'),
        (GO_STICKY, 't'),
    ] {
        if m & bit != 0 {
            s.push(c)
        }
    }
    if s.is_empty() {
        s.push('-')
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if m & (1 << (8 - i)) != 0 { c } else { '-' });
    }
    s
}

const META_PREFIX: &str = "user.e2b.";

/// User metadata stored as `user.e2b.*` extended attributes.
pub fn read_metadata(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(names) = xattr::list_deref(path) {
        for n in names {
            let n = n.to_string_lossy();
            if let Some(key) = n.strip_prefix(META_PREFIX) {
                if let Ok(Some(v)) = xattr::get_deref(path, n.as_ref()) {
                    out.insert(key.to_string(), String::from_utf8_lossy(&v).into_owned());
                }
            }
        }
    }
    out
}

/// Replaces a file's metadata set with `meta`.
pub fn write_metadata(path: &Path, meta: &BTreeMap<String, String>) -> io::Result<()> {
    for n in xattr::list_deref(path)? {
        if n.to_string_lossy().starts_with(META_PREFIX) {
            xattr::remove_deref(path, &n)?;
        }
    }
    for (k, v) in meta {
        xattr::set_deref(path, format!("{META_PREFIX}{k}"), v.as_bytes())?;
    }
    Ok(())
}

/// Runs `f` on `path` as the request's user and maps I/O errors to Connect errors.
async fn with_path<T: Send + 'static>(
    agent: &Agent,
    headers: &HeaderMap,
    path: &str,
    f: impl FnOnce(&Path) -> RpcResult<T> + Send + 'static,
) -> RpcResult<T> {
    let user = agent.user(rpc::basic_user(headers)?.as_deref())?;
    let p = resolve(agent, &user, path);
    as_user(&user, move || f(&p)).await
}

/// The entry at `p` as a Stat/MakeDir/Move answer.
fn entry_response(p: &Path) -> RpcResult<EntryResponse> {
    Ok(EntryResponse {
        entry: entry_info(p).map_err(|e| io_error(p, e))?,
    })
}

pub async fn stat(
    agent: Agent,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> RpcResult<EntryResponse> {
    let req: PathRequest = rpc::decode_unary(&body)?;
    with_path(&agent, &headers, &req.path, entry_response).await
}

pub async fn make_dir(
    agent: Agent,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> RpcResult<EntryResponse> {
    let req: PathRequest = rpc::decode_unary(&body)?;
    let made = with_path(&agent, &headers, &req.path, |p| {
        match std::fs::symlink_metadata(p) {
            Ok(md) if md.is_dir() => {
                return Err(ConnectError::new(
                    Code::AlreadyExists,
                    format!("directory {} already exists", p.display()),
                ))
            }
            Ok(_) => {
                return Err(invalid(format!(
                    "path {} already exists and is not a directory",
                    p.display()
                )))
            }
            Err(_) => {}
        }
        std::fs::create_dir_all(p).map_err(|e| io_error(p, e))?;
        entry_response(p)
    })
    .await;
    // Recursive watches watch the new directories before the answer.
    agent.watchers.sync();
    made
}

pub async fn move_entry(
    agent: Agent,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> RpcResult<EntryResponse> {
    let req: MoveRequest = rpc::decode_unary(&body)?;
    let user = agent.user(rpc::basic_user(&headers)?.as_deref())?;
    let (src, dst) = (
        resolve(&agent, &user, &req.source),
        resolve(&agent, &user, &req.destination),
    );
    let moved = as_user(&user, move || {
        std::fs::symlink_metadata(&src).map_err(|e| io_error(&src, e))?;
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        }
        std::fs::rename(&src, &dst).map_err(|e| io_error(&src, e))?;
        entry_response(&dst)
    })
    .await;
    // A directory moved into a recursive watch is watched before the answer.
    agent.watchers.sync();
    moved
}

pub async fn remove(
    agent: Agent,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> RpcResult<rpc_empty::Empty> {
    let req: PathRequest = rpc::decode_unary(&body)?;
    with_path(&agent, &headers, &req.path, |p| {
        let r = match std::fs::symlink_metadata(p) {
            Ok(md) if md.is_dir() => std::fs::remove_dir_all(p),
            Ok(_) => std::fs::remove_file(p),
            // Removing what is not there succeeds (the SDK's tests expect it).
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        r.map_err(|e| io_error(p, e))?;
        Ok(rpc_empty::Empty {})
    })
    .await
}

mod rpc_empty {
    pub use soulbox_protocol::process::Empty;
}

pub async fn list_dir(
    agent: Agent,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> RpcResult<ListDirResponse> {
    let req: ListDirRequest = rpc::decode_unary(&body)?;
    let depth = req.depth.max(1) as usize;
    with_path(&agent, &headers, &req.path, move |p| {
        let md = std::fs::metadata(p).map_err(|e| io_error(p, e))?;
        if !md.is_dir() {
            return Err(invalid(format!("path {} is not a directory", p.display())));
        }
        let mut entries = vec![];
        walk(p, depth, &mut entries).map_err(|e| io_error(p, e))?;
        Ok(ListDirResponse { entries })
    })
    .await
}

/// Lists `dir` down to `depth` levels without following symlinks.
fn walk(dir: &Path, depth: usize, out: &mut Vec<EntryInfo>) -> io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    names.sort();
    for path in names {
        let Ok(info) = entry_info(&path) else {
            continue;
        };
        // A symlink to a directory is listed as a directory but not entered (as envd's WalkDir).
        let is_dir = info.file_type == FileType::Directory && info.symlink_target.is_none();
        out.push(info);
        if is_dir && depth > 1 {
            // An unreadable subdirectory is listed but not entered.
            let _ = walk(&path, depth - 1, out);
        }
    }
    Ok(())
}

/// Checks a watch target as envd does; returns the resolved directory.
pub async fn watch_target(
    agent: &Agent,
    headers: &HeaderMap,
    req: &WatchRequest,
) -> RpcResult<(User, PathBuf)> {
    let user = agent.user(rpc::basic_user(headers)?.as_deref())?;
    let p = resolve(agent, &user, &req.path);
    let p2 = p.clone();
    as_user(&user, move || {
        let md = std::fs::metadata(&p2).map_err(|e| io_error(&p2, e))?;
        if !md.is_dir() {
            return Err(invalid(format!("path {} is not a directory", p2.display())));
        }
        Ok(())
    })
    .await?;
    if !req.allow_network_mounts && is_network_mount(&p) {
        return Err(invalid(format!(
            "{} is on a network filesystem",
            p.display()
        )));
    }
    Ok((user, p))
}

fn is_network_mount(p: &Path) -> bool {
    const NETWORK_FS: [i64; 4] = [
        0x6969,     /* nfs */
        0xff534d42, /* cifs */
        0x65735546, /* fuse */
        0x517b,     /* smb */
    ];
    nix::sys::statfs::statfs(p)
        .map(|s| NETWORK_FS.contains(&{ s.filesystem_type().0 }))
        .unwrap_or(false)
}

pub fn not_found_watcher(id: &str) -> ConnectError {
    not_found(format!("watcher {id} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_match_go() {
        assert_eq!(go_mode_string(GO_DIR | 0o755), "drwxr-xr-x");
        assert_eq!(go_mode_string(0o644), "-rw-r--r--");
        assert_eq!(go_mode_string(GO_SYMLINK | 0o777), "Lrwxrwxrwx");
        assert_eq!(GO_DIR | 0o755, 2147484141);
    }

    #[test]
    fn paths_cannot_climb_above_root() {
        assert_eq!(
            normalize(Path::new("/home/user/../../../etc/passwd")),
            PathBuf::from("/etc/passwd")
        );
        assert_eq!(normalize(Path::new("/../../x")), PathBuf::from("/x"));
    }
}
