//! Processes started through `process.Process/Start`: their table, output fan-out and exit.

pub mod rpc;
pub mod spawn;

use soulbox_protocol::process::{DataEvent, EndEvent, ProcessConfig, ProcessEvent, ProcessInfo};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

pub use spawn::{spawn, SpawnRequest};

/// How long a finished process's end event stays available to a late `Connect`.
const KEEP_FINISHED: Duration = Duration::from_secs(30);

/// A non-blocking descriptor the agent writes to (stdin pipe) or reads and writes (PTY master).
pub type Fd = Arc<AsyncFd<OwnedFd>>;

/// A started process.
#[derive(Debug)]
pub struct Proc {
    pub pid: u32,
    pub config: ProcessConfig,
    pub tag: Option<String>,
    /// Write side of stdin (a pipe) or the PTY master; `None` once closed.
    pub input: Mutex<Option<Fd>>,
    pub pty: Option<Fd>,
    subscribers: Mutex<Vec<mpsc::Sender<ProcessEvent>>>,
    end: Mutex<Option<EndEvent>>,
}

impl Proc {
    /// Adds a listener for output and the end event. Returns the end event at once if the
    /// process has already finished.
    pub fn subscribe(&self) -> (mpsc::Receiver<ProcessEvent>, Option<EndEvent>) {
        let (tx, rx) = mpsc::channel(64);
        let end = self.end.lock().ok().and_then(|e| e.clone());
        if end.is_none() {
            if let Ok(mut s) = self.subscribers.lock() {
                s.push(tx);
            }
        }
        (rx, end)
    }

    pub fn is_running(&self) -> bool {
        self.end.lock().map(|e| e.is_none()).unwrap_or(false)
    }

    /// Delivers an event to every live subscriber, waiting for slow ones (so output is never
    /// dropped) and forgetting those that went away.
    async fn publish(&self, event: DataEvent) {
        let subs: Vec<_> = match self.subscribers.lock() {
            Ok(s) => s.clone(),
            Err(_) => return,
        };
        let ev = ProcessEvent::Data(event);
        for s in subs {
            let _ = s.send(ev.clone()).await;
        }
        if let Ok(mut s) = self.subscribers.lock() {
            s.retain(|t| !t.is_closed());
        }
    }

    fn finish(&self, end: EndEvent) {
        if let Ok(mut e) = self.end.lock() {
            *e = Some(end.clone());
        }
        let subs = self
            .subscribers
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        for s in subs {
            let end = ProcessEvent::End(end.clone());
            tokio::spawn(async move {
                let _ = s.send(end).await;
            });
        }
        if let Ok(mut i) = self.input.lock() {
            *i = None;
        }
    }

    pub fn info(&self) -> ProcessInfo {
        ProcessInfo {
            config: self.config.clone(),
            pid: self.pid,
            tag: self.tag.clone(),
        }
    }

    /// Sends a signal to the process's whole group (each command leads its own group, so a
    /// shell's children go too).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pgid = nix::unistd::Pid::from_raw(-(self.pid as i32));
        if nix::sys::signal::kill(pgid, sig).is_err() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), sig);
        }
    }
}

#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: Mutex<HashMap<u32, Arc<Proc>>>,
}

impl ProcessTable {
    pub fn get(&self, pid: u32) -> Option<Arc<Proc>> {
        self.procs.lock().ok()?.get(&pid).cloned()
    }

    pub fn by_tag(&self, tag: &str) -> Option<Arc<Proc>> {
        self.procs
            .lock()
            .ok()?
            .values()
            .find(|p| p.tag.as_deref() == Some(tag))
            .cloned()
    }

    pub fn running(&self) -> Vec<ProcessInfo> {
        let procs = match self.procs.lock() {
            Ok(p) => p.values().cloned().collect::<Vec<_>>(),
            Err(_) => return vec![],
        };
        let mut v: Vec<_> = procs
            .iter()
            .filter(|p| p.is_running())
            .map(|p| p.info())
            .collect();
        v.sort_by_key(|p| p.pid);
        v
    }

    pub fn all(&self) -> Vec<Arc<Proc>> {
        self.procs
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    fn insert(&self, p: Arc<Proc>) {
        if let Ok(mut t) = self.procs.lock() {
            t.insert(p.pid, p);
        }
    }

    fn remove_later(self: &Arc<Self>, pid: u32) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(KEEP_FINISHED).await;
            if let Ok(mut t) = me.procs.lock() {
                t.remove(&pid);
            }
        });
    }
}

/// The end event for a wait status, as envd words it.
pub fn end_event(status: nix::sys::wait::WaitStatus) -> EndEvent {
    use nix::sys::wait::WaitStatus::*;
    match status {
        Exited(_, code) => EndEvent {
            exit_code: code,
            exited: true,
            status: format!("exit status {code}"),
            error: None,
        },
        Signaled(_, sig, _) => EndEvent {
            exit_code: -1,
            exited: false,
            status: format!("signal: {}", signal_name(sig)),
            error: None,
        },
        other => EndEvent {
            exit_code: -1,
            exited: false,
            status: format!("{other:?}"),
            error: None,
        },
    }
}

fn signal_name(sig: nix::sys::signal::Signal) -> &'static str {
    use nix::sys::signal::Signal::*;
    match sig {
        SIGKILL => "killed",
        SIGTERM => "terminated",
        SIGINT => "interrupt",
        SIGHUP => "hangup",
        SIGSEGV => "segmentation fault",
        SIGABRT => "aborted",
        SIGPIPE => "broken pipe",
        other => other.as_str(),
    }
}
