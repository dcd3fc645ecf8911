//! The one place that collects exit statuses.
//!
//! As PID 1 the agent inherits every orphan in the sandbox, so it reaps with `waitpid(-1)`.
//! Processes the agent started register their pid here and receive their status; everything
//! else is reaped and forgotten.

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

#[derive(Default)]
struct Table {
    waiting: HashMap<i32, oneshot::Sender<WaitStatus>>,
    /// Statuses that arrived before their pid was registered (a very short-lived child).
    early: HashMap<i32, WaitStatus>,
}

fn table() -> &'static Mutex<Table> {
    static T: OnceLock<Mutex<Table>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// Registers interest in a child's exit. Call right after spawning it.
pub fn watch(pid: i32) -> oneshot::Receiver<WaitStatus> {
    let (tx, rx) = oneshot::channel();
    if let Ok(mut t) = table().lock() {
        match t.early.remove(&pid) {
            Some(status) => {
                let _ = tx.send(status);
            }
            None => {
                t.waiting.insert(pid, tx);
            }
        }
    }
    rx
}

/// Reaps on every SIGCHLD, forever. Must be started before any child is spawned.
pub fn start() -> std::io::Result<()> {
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            reap_all();
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}

fn reap_all() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => {
                let Some(pid) = status.pid() else { continue };
                if !matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                    continue;
                }
                if let Ok(mut t) = table().lock() {
                    match t.waiting.remove(&pid.as_raw()) {
                        Some(tx) => {
                            let _ = tx.send(status);
                        }
                        None => {
                            // Keep a bounded memory of unclaimed statuses: orphans land here too.
                            if t.early.len() > 4096 {
                                t.early.clear();
                            }
                            t.early.insert(pid.as_raw(), status);
                        }
                    }
                }
            }
        }
    }
}
