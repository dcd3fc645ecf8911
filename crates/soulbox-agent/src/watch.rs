//! Directory watches over inotify: streaming (`WatchDir`) and polled (`CreateWatcher`).

use crate::fs::{self, entry_info};
use crate::rpc::{self, RpcResult, StreamSink};
use crate::state::Agent;
use axum::body::Body;
use axum::http::{HeaderMap, Response};
use futures::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use rand::distr::{Alphanumeric, SampleString};
use soulbox_protocol::filesystem::*;
use soulbox_protocol::process::Empty;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Events a polled watcher keeps before the oldest are dropped.
const MAX_BUFFERED: usize = 10_000;

#[derive(Debug, Default)]
pub struct Watchers {
    polled: Mutex<HashMap<String, Arc<Polled>>>,
}

#[derive(Debug)]
struct Polled {
    events: Arc<Mutex<Vec<FilesystemEvent>>>,
    task: tokio::task::JoinHandle<()>,
}

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
}

/// An inotify watch on `root` (and its subdirectories when `recursive`). It is set up before
/// the request is answered, so no change made after the answer is missed.
struct Watch {
    root: PathBuf,
    recursive: bool,
    include_entry: bool,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    watches: inotify::Watches,
    stream: inotify::EventStream<Vec<u8>>,
}

impl Watch {
    fn open(root: PathBuf, recursive: bool, include_entry: bool) -> RpcResult<Watch> {
        let fail = |e: std::io::Error| rpc::internal(format!("watching {}: {e}", root.display()));
        let inotify = Inotify::init().map_err(fail)?;
        let mut dirs = HashMap::new();
        let mut watches = inotify.watches();
        add_tree(&mut watches, &mut dirs, &root, &root, recursive);
        let stream = inotify
            .into_event_stream(vec![0u8; 64 * 1024])
            .map_err(fail)?;
        Ok(Watch {
            root,
            recursive,
            include_entry,
            dirs,
            watches,
            stream,
        })
    }

    /// Sends one event per change until `tx` is closed.
    async fn run(mut self, tx: mpsc::Sender<FilesystemEvent>) {
        let root = self.root.clone();
        loop {
            let ev = tokio::select! {
                ev = self.stream.next() => ev,
                _ = tx.closed() => return,
            };
            let Some(Ok(ev)) = ev else { return };
            let Some(dir) = self.dirs.get(&ev.wd).cloned() else {
                continue;
            };
            let full = match &ev.name {
                Some(n) => root.join(&dir).join(n),
                None => root.join(&dir),
            };
            let name = full
                .strip_prefix(&root)
                .unwrap_or(&full)
                .to_string_lossy()
                .into_owned();
            if self.recursive
                && ev.mask.contains(EventMask::ISDIR)
                && ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO)
            {
                add_tree(&mut self.watches, &mut self.dirs, &root, &full, true);
            }
            for t in event_types(ev.mask) {
                let entry = if self.include_entry {
                    entry_info(&full).ok()
                } else {
                    None
                };
                let event = FilesystemEvent {
                    name: name.clone(),
                    event_type: t,
                    entry,
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn add_tree(
    w: &mut inotify::Watches,
    dirs: &mut HashMap<WatchDescriptor, PathBuf>,
    root: &Path,
    dir: &Path,
    recursive: bool,
) {
    if let Ok(wd) = w.add(dir, mask()) {
        dirs.insert(
            wd,
            dir.strip_prefix(root)
                .unwrap_or(Path::new(""))
                .to_path_buf(),
        );
    }
    if recursive {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    add_tree(w, dirs, root, &e.path(), true);
                }
            }
        }
    }
}

/// One inotify notification may stand for several operations (as in fsnotify).
fn event_types(m: EventMask) -> Vec<EventType> {
    let mut v = vec![];
    if m.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
        v.push(EventType::Create)
    }
    if m.contains(EventMask::MODIFY) {
        v.push(EventType::Write)
    }
    if m.intersects(EventMask::DELETE | EventMask::DELETE_SELF) {
        v.push(EventType::Remove)
    }
    if m.intersects(EventMask::MOVED_FROM | EventMask::MOVE_SELF) {
        v.push(EventType::Rename)
    }
    if m.contains(EventMask::ATTRIB) {
        v.push(EventType::Chmod)
    }
    v
}

pub async fn watch_dir(agent: Agent, headers: HeaderMap, body: bytes::Bytes) -> Response<Body> {
    let req: WatchRequest = match rpc::decode_stream_request(&body) {
        Ok(r) => r,
        Err(e) => return rpc::stream_error(e),
    };
    let (_user, dir) = match fs::watch_target(&agent, &headers, &req).await {
        Ok(t) => t,
        Err(e) => return rpc::stream_error(e),
    };
    let watch = match Watch::open(dir, req.recursive, req.include_entry) {
        Ok(w) => w,
        Err(e) => return rpc::stream_error(e),
    };
    let keepalive = rpc::keepalive(&headers);
    let (sink, resp): (StreamSink<WatchDirResponse>, _) = rpc::stream_response();
    let (tx, mut rx) = mpsc::channel(256);
    tokio::spawn(watch.run(tx));
    tokio::spawn(async move {
        let send = |e| sink.send(WatchDirResponse { event: e });
        if !send(WatchEvent::Start(Empty {})).await {
            return;
        }
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => if !send(WatchEvent::Filesystem(Box::new(ev))).await { return },
                    None => return,
                },
                _ = tokio::time::sleep(keepalive) => if !send(WatchEvent::Keepalive(Empty {})).await { return },
                _ = sink.closed() => return,
            }
        }
    });
    resp
}

pub async fn create_watcher(
    agent: Agent,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> RpcResult<WatcherId> {
    let req: WatchRequest = rpc::decode_unary(&body)?;
    let (_user, dir) = fs::watch_target(&agent, &headers, &req).await?;
    let watch = Watch::open(dir, req.recursive, req.include_entry)?;
    let id = format!("w{}", Alphanumeric.sample_string(&mut rand::rng(), 20));
    let (tx, mut rx) = mpsc::channel(256);
    let events: Arc<Mutex<Vec<FilesystemEvent>>> = Arc::default();
    let buffer = Arc::clone(&events);
    let watcher = tokio::spawn(watch.run(tx));
    let task = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if let Ok(mut e) = buffer.lock() {
                if e.len() >= MAX_BUFFERED {
                    e.remove(0);
                }
                e.push(ev);
            }
        }
        watcher.abort();
    });
    agent
        .watchers
        .polled
        .lock()
        .map_err(|_| rpc::internal("watcher table poisoned"))?
        .insert(id.clone(), Arc::new(Polled { events, task }));
    Ok(WatcherId { watcher_id: id })
}

pub async fn get_watcher_events(agent: Agent, body: bytes::Bytes) -> RpcResult<WatcherEvents> {
    let req: WatcherId = rpc::decode_unary(&body)?;
    let w = agent.watchers.get(&req.watcher_id)?;
    let events = w
        .events
        .lock()
        .map(|mut e| std::mem::take(&mut *e))
        .unwrap_or_default();
    Ok(WatcherEvents { events })
}

pub async fn remove_watcher(agent: Agent, body: bytes::Bytes) -> RpcResult<Empty> {
    let req: WatcherId = rpc::decode_unary(&body)?;
    let w = agent
        .watchers
        .polled
        .lock()
        .map_err(|_| rpc::internal("watcher table poisoned"))?
        .remove(&req.watcher_id)
        .ok_or_else(|| fs::not_found_watcher(&req.watcher_id))?;
    w.task.abort();
    Ok(Empty {})
}

impl Watchers {
    fn get(&self, id: &str) -> RpcResult<Arc<Polled>> {
        self.polled
            .lock()
            .ok()
            .and_then(|w| w.get(id).cloned())
            .ok_or_else(|| fs::not_found_watcher(id))
    }
}
