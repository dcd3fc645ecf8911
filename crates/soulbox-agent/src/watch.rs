//! Directory watches over inotify: streaming (`WatchDir`) and polled (`CreateWatcher`).
//!
//! A task per watch reads inotify as events come. The queue is also read synchronously when a
//! polled watcher is asked for its events and after the agent's own operations that make
//! directories (`Watchers::sync`): the kernel queues an event before the syscall returns, so a
//! change made by an answered request is in the next `GetWatcherEvents`, and a directory made
//! by one request is watched (recursive watches) before the next request writes into it.

use crate::fs::{self, entry_info};
use crate::rpc::{self, RpcResult, StreamSink};
use crate::state::Agent;
use axum::body::Body;
use axum::http::{HeaderMap, Response};
use inotify::{EventMask, EventOwned, Inotify, WatchDescriptor, WatchMask, Watches};
use rand::distr::{Alphanumeric, SampleString};
use soulbox_protocol::filesystem::*;
use soulbox_protocol::process::Empty;
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// Events a watcher keeps (polled) or queues for its stream before further ones are dropped.
const MAX_BUFFERED: usize = 10_000;

#[derive(Debug, Default)]
pub struct Watchers {
    polled: Mutex<HashMap<String, Arc<Polled>>>,
    live: Mutex<Vec<Weak<Mutex<Watch>>>>,
}

#[derive(Debug)]
struct Polled {
    watch: Arc<Mutex<Watch>>,
    events: Arc<Mutex<VecDeque<FilesystemEvent>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
enum Sink {
    Buffer(Arc<Mutex<VecDeque<FilesystemEvent>>>),
    Stream(mpsc::Sender<FilesystemEvent>),
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
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    buf: Vec<u8>,
    sink: Sink,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("root", &self.root).finish()
    }
}

impl Watch {
    fn open(root: PathBuf, recursive: bool, include_entry: bool, sink: Sink) -> RpcResult<Watch> {
        let fail = |e: std::io::Error| rpc::internal(format!("watching {}: {e}", root.display()));
        let inotify = Inotify::init().map_err(fail)?;
        let mut dirs = HashMap::new();
        add_tree(
            &mut inotify.watches(),
            &mut dirs,
            &root,
            &root,
            recursive,
            &mut vec![],
        );
        Ok(Watch {
            root,
            recursive,
            include_entry,
            inotify,
            dirs,
            buf: vec![0u8; 64 * 1024],
            sink,
        })
    }

    /// Handles every event queued now. False once the stream's receiver is gone.
    fn drain(&mut self) -> bool {
        loop {
            let events: Vec<EventOwned> = match self.inotify.read_events(&mut self.buf) {
                Ok(evs) => evs.map(|e| e.to_owned()).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            for ev in events {
                if !self.handle(ev) {
                    return false;
                }
            }
        }
    }

    fn handle(&mut self, ev: EventOwned) -> bool {
        if ev.mask.contains(EventMask::IGNORED) {
            self.dirs.remove(&ev.wd);
            return true;
        }
        let Some(dir) = self.dirs.get(&ev.wd).cloned() else {
            return true;
        };
        let full = match &ev.name {
            Some(n) => self.root.join(&dir).join(n),
            None => self.root.join(&dir),
        };
        let new_dir = self.recursive
            && ev.mask.contains(EventMask::ISDIR)
            && ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO);
        if new_dir && self.watched(&full) {
            // Found and reported when its parent was walked (made between the parent's watch
            // and its walk).
            return true;
        }
        if !self.emit(&full, ev.mask) {
            return false;
        }
        if new_dir {
            // As fsnotify: a new directory is watched with what is under it, and each directory
            // already inside (made before the watch was set, as by `mkdir -p`) is reported made.
            let mut found = vec![];
            let (root, mut w) = (self.root.clone(), self.inotify.watches());
            add_tree(&mut w, &mut self.dirs, &root, &full, true, &mut found);
            for d in found {
                if !self.emit(&d, EventMask::CREATE) {
                    return false;
                }
            }
        }
        true
    }

    fn watched(&self, full: &Path) -> bool {
        full.strip_prefix(&self.root)
            .is_ok_and(|rel| self.dirs.values().any(|d| d == rel))
    }

    fn emit(&mut self, full: &Path, mask: EventMask) -> bool {
        let name = match full.strip_prefix(&self.root) {
            Ok(p) if p.as_os_str().is_empty() => ".".to_string(),
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(_) => full.to_string_lossy().into_owned(),
        };
        for t in event_types(mask) {
            // As envd: only events whose entry still exists carry it.
            let carries = matches!(t, EventType::Create | EventType::Write | EventType::Chmod);
            let entry = (self.include_entry && carries)
                .then(|| entry_info(full).ok())
                .flatten();
            let event = FilesystemEvent {
                name: name.clone(),
                event_type: t,
                entry,
            };
            match &self.sink {
                Sink::Buffer(b) => {
                    if let Ok(mut b) = b.lock() {
                        if b.len() >= MAX_BUFFERED {
                            b.pop_front();
                        }
                        b.push_back(event);
                    }
                }
                // A stream that is not read drops events rather than holding up the others.
                Sink::Stream(tx) => {
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(event) {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// Reads `watch`'s events as they come until it is closed or `stream`'s receiver is gone.
async fn pump(watch: Arc<Mutex<Watch>>, stream: Option<mpsc::Sender<FilesystemEvent>>) {
    let fd = match watch.lock() {
        Ok(w) => w.inotify.as_fd().try_clone_to_owned(),
        Err(_) => return,
    };
    let Ok(fd) = fd else { return };
    // SAFETY: the AsyncFd owns `fd` (a duplicate of the inotify descriptor), so it stays open
    // and the same for the AsyncFd's whole life.
    let Ok(fd) = (unsafe { AsyncFd::register(fd) }) else {
        return;
    };
    let closed = async {
        match &stream {
            Some(tx) => tx.closed().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(closed);
    loop {
        let ready = tokio::select! {
            r = fd.readable() => r,
            _ = &mut closed => return,
        };
        let Ok(mut guard) = ready else { return };
        let open = watch.lock().map(|mut w| w.drain()).unwrap_or(false);
        guard.clear_ready();
        if !open {
            return;
        }
    }
}

fn add_tree(
    w: &mut Watches,
    dirs: &mut HashMap<WatchDescriptor, PathBuf>,
    root: &Path,
    dir: &Path,
    recursive: bool,
    found: &mut Vec<PathBuf>,
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
                    found.push(e.path());
                    add_tree(w, dirs, root, &e.path(), true, found);
                }
            }
        }
    }
}

/// One inotify notification may stand for several operations, reported in envd's order.
fn event_types(m: EventMask) -> Vec<EventType> {
    let mut v = vec![];
    if m.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
        v.push(EventType::Create)
    }
    if m.intersects(EventMask::MOVED_FROM | EventMask::MOVE_SELF) {
        v.push(EventType::Rename)
    }
    if m.contains(EventMask::ATTRIB) {
        v.push(EventType::Chmod)
    }
    if m.contains(EventMask::MODIFY) {
        v.push(EventType::Write)
    }
    if m.intersects(EventMask::DELETE | EventMask::DELETE_SELF) {
        v.push(EventType::Remove)
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
    let (tx, mut rx) = mpsc::channel(MAX_BUFFERED);
    let watch = match Watch::open(
        dir,
        req.recursive,
        req.include_entry,
        Sink::Stream(tx.clone()),
    ) {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => return rpc::stream_error(e),
    };
    agent.watchers.register(&watch);
    let keepalive = rpc::keepalive(&headers);
    let (sink, resp): (StreamSink<WatchDirResponse>, _) = rpc::stream_response();
    tokio::spawn(pump(watch, Some(tx)));
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
    let events: Arc<Mutex<VecDeque<FilesystemEvent>>> = Arc::default();
    let watch = Watch::open(
        dir,
        req.recursive,
        req.include_entry,
        Sink::Buffer(Arc::clone(&events)),
    )?;
    let watch = Arc::new(Mutex::new(watch));
    agent.watchers.register(&watch);
    let id = format!("w{}", Alphanumeric.sample_string(&mut rand::rng(), 20));
    let task = tokio::spawn(pump(Arc::clone(&watch), None));
    agent
        .watchers
        .polled
        .lock()
        .map_err(|_| rpc::internal("watcher table poisoned"))?
        .insert(
            id.clone(),
            Arc::new(Polled {
                watch,
                events,
                task,
            }),
        );
    Ok(WatcherId { watcher_id: id })
}

pub async fn get_watcher_events(agent: Agent, body: bytes::Bytes) -> RpcResult<WatcherEvents> {
    let req: WatcherId = rpc::decode_unary(&body)?;
    let w = agent.watchers.get(&req.watcher_id)?;
    // What is queued in the kernel now belongs to this answer, not a later one.
    if let Ok(mut watch) = w.watch.lock() {
        watch.drain();
    }
    let events = w
        .events
        .lock()
        .map(|mut e| std::mem::take(&mut *e).into())
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

    fn register(&self, w: &Arc<Mutex<Watch>>) {
        if let Ok(mut live) = self.live.lock() {
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(w));
        }
    }

    /// Handles what every watch has queued now; called after the agent makes directories, so
    /// recursive watches watch them before anything else is asked of the agent.
    pub fn sync(&self) {
        let live: Vec<_> = match self.live.lock() {
            Ok(mut live) => {
                live.retain(|w| w.strong_count() > 0);
                live.iter().filter_map(Weak::upgrade).collect()
            }
            Err(_) => return,
        };
        for w in live {
            if let Ok(mut w) = w.lock() {
                w.drain();
            }
        }
    }
}
