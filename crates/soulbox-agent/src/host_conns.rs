//! The host's connections to the agent, all dropped at once on `SIGUSR1`: the runtime asks
//! for it before it checkpoints the sandbox (a full pause). Those connections' sockets live in
//! the host's network namespace, outside what a checkpoint of the sandbox can hold; the host
//! connects again after the restore. Sandbox root may send the signal too: it only cuts its
//! own sandbox's connections.

use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct HostConns {
    current: Mutex<CancellationToken>,
}

impl HostConns {
    /// Cancelled when the connections open now are to be dropped.
    pub fn token(&self) -> CancellationToken {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Drops every connection open now (and the tunnels they carry); new ones are served.
    pub fn drop_all(&self) {
        let old = std::mem::take(&mut *self.current.lock().unwrap_or_else(|e| e.into_inner()));
        old.cancel();
    }
}

/// Serves `app` on `listener`, each connection until it ends or [`HostConns::drop_all`].
pub async fn serve(
    listener: tokio::net::UnixListener,
    app: axum::Router,
    conns: &HostConns,
) -> std::io::Result<()> {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            // Out of descriptors or memory for a moment: the host retries.
            Err(e) if is_transient(&e) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let token = conns.token();
        let svc = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = token.cancelled() => {}
            }
        });
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED)
    )
}
