//! HTTPS on the listener: the operator's certificate and key (PEM files), read again when
//! they change on disk (a renewed certificate is served without a restart), and a short
//! plain-text answer to plain HTTP sent to the HTTPS port.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// How often the files are looked at for a change.
const RELOAD_EVERY: Duration = Duration::from_secs(60);

/// Why the certificate or key cannot be used.
#[derive(Debug)]
pub struct LoadError {
    /// The key file is at fault (else the certificate file).
    pub is_key: bool,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Reads and checks a certificate chain and its private key (that they belong together).
pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, LoadError> {
    let cert_err = |m: String| LoadError {
        is_key: false,
        message: m,
    };
    let key_err = |m: String| LoadError {
        is_key: true,
        message: m,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(cert_err(format!(
            "{}: no PEM certificate in it",
            cert.display()
        )));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        key_err(format!(
            "{}: {e} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1)",
            key.display()
        ))
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(certs, der, &provider).map_err(|e| {
        key_err(format!(
            "{} does not fit the certificate in {}: {e}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok(Arc::new(ck))
}

/// The certificate in use, replaced when its files change.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

fn modified(cert: &Path, key: &Path) -> Option<SystemTime> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    m(cert).max(m(key))
}

impl Reloading {
    /// Reads the files again if they changed; a bad new pair is logged and the old one kept.
    fn reload_if_changed(&self) {
        let now = modified(&self.cert, &self.key);
        if now == self.current.read().expect("not poisoned").1 {
            return;
        }
        match load(&self.cert, &self.key) {
            Ok(ck) => {
                tracing::info!(cert = %self.cert.display(), "HTTPS certificate reloaded");
                *self.current.write().expect("not poisoned") = (ck, now);
            }
            Err(e) => {
                tracing::error!("HTTPS certificate not reloaded, the old one is served on: {e}")
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("not poisoned").0.clone())
    }
}

/// The acceptor for the listener; its certificate is watched for the life of the process.
pub fn acceptor(cert: &Path, key: &Path) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let ck = load(cert, key)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.message))?;
    let resolver = Arc::new(Reloading {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        current: RwLock::new((ck, modified(cert, key))),
    });
    let watched = Arc::downgrade(&resolver);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let Some(r) = watched.upgrade() else { return };
            tokio::task::spawn_blocking(move || r.reload_if_changed());
        }
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    // HTTP/1.1 only: what the listener speaks (upgrades for tunnelled WebSockets included).
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Whether the client opened with a TLS handshake record; else it speaks plain HTTP to the
/// HTTPS port and is told so (a client gets a readable error, not a reset).
pub async fn opens_with_tls(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) if first[0] == 0x16 => true,
        Ok(1) => {
            const BODY: &str =
                "{\"code\":400,\"message\":\"this server speaks HTTPS: use an https:// URL\"}";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
                BODY.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
            // Read what the client sent (briefly): closing with it unread would reset the
            // connection, and the client might see the reset instead of the answer.
            let mut sink = [0u8; 4096];
            let drain = async {
                let mut left = 64 << 10;
                while left > 0 {
                    match stream.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left -= n.min(left),
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed pair for `name`, written to `dir`.
    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn served(r: &Reloading) -> Vec<u8> {
        r.current.read().unwrap().0.cert[0].to_vec()
    }

    #[test]
    fn a_renewed_certificate_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "old.example");
        let r = Reloading {
            current: RwLock::new((load(&cert, &key).unwrap(), modified(&cert, &key))),
            cert: cert.clone(),
            key: key.clone(),
        };
        let old = served(&r);
        r.reload_if_changed();
        assert_eq!(served(&r), old, "unchanged files: the same certificate");
        std::thread::sleep(Duration::from_millis(20));
        write_pair(dir.path(), "new.example");
        r.reload_if_changed();
        let new = served(&r);
        assert_ne!(new, old, "the renewed certificate is served");
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&key, "not a key").unwrap();
        r.reload_if_changed();
        assert_eq!(served(&r), new, "a broken pair is not taken");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_the_key() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (cert, _) = write_pair(a.path(), "a.example");
        let (_, other_key) = write_pair(b.path(), "b.example");
        let e = load(&cert, &other_key).unwrap_err();
        assert!(e.is_key, "{e}");
        let e = load(&other_key, &other_key).unwrap_err();
        assert!(!e.is_key && e.message.contains("no PEM certificate"), "{e}");
    }
}
