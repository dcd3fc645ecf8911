//! Secrets at rest. The store keeps each sandbox's envd token and env vars sealed with
//! XChaCha20-Poly1305 under a key that is not in the database: `SOULBOX_SECRET_KEY` (64 hex
//! digits), else `<data dir>/secret.key` (0600, made on first start). The database file alone
//! (a backup, a copy a local user got hold of) then grants nothing.
//!
//! The token is sealed rather than hashed because the server needs it back: the proxy hands
//! it to the agent for tunnelled ports, signed `/files` URLs are checked against it, and
//! create/connect/info answer it to the owner.
//!
//! A sealed value is `sealed1:` + base64(nonce ‖ ciphertext ‖ tag); the sandbox id and the
//! column are bound in as associated data, so a value cannot be moved to another row. A value
//! without the prefix is a row written before sealing existed; [`crate::store::Store::open`]
//! seals those.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

const PREFIX: &str = "sealed1:";
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("invalid secret key ({0}): expected 64 hex digits")]
    BadKey(String),
    #[error("cannot open the sealed {0}: the secret key is not the one it was sealed with")]
    Open(String),
    #[error("cannot seal the {0}")]
    Seal(String),
}

/// Seals and opens values with the server's secret key.
#[derive(Clone)]
pub struct Sealer {
    cipher: Arc<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sealer {
    /// A key given as 64 hex digits (`SOULBOX_SECRET_KEY`, or the key file's content).
    pub fn from_hex(s: &str) -> Result<Sealer, SecretError> {
        let s = s.trim();
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SecretError::BadKey(format!("{} characters", s.len())));
        }
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|e| SecretError::BadKey(e.to_string()))?;
        }
        Ok(Sealer {
            cipher: Arc::new(XChaCha20Poly1305::new(&key.into())),
        })
    }

    /// The key in `path`, made (random, mode 0600) if there is none yet.
    pub fn load_or_create(path: &Path) -> Result<Sealer, SecretError> {
        let io = |source| SecretError::Io {
            path: path.to_path_buf(),
            source,
        };
        let key: [u8; 32] = rand::random();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut f) => {
                f.write_all(format!("{}\n", hex(&key)).as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Sealer::from_hex(&text)
    }

    /// Seals `plain` for the `what` (e.g. `<sandbox id>/access_token`) it belongs to.
    pub fn seal(&self, plain: &str, what: &str) -> Result<String, SecretError> {
        // Random 192-bit nonces: no counter to keep, no realistic chance of reuse.
        let nonce: [u8; NONCE_LEN] = rand::random();
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: what.as_bytes(),
        };
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .map_err(|_| SecretError::Seal(what.to_string()))?;
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&ct);
        Ok(format!("{PREFIX}{}", STANDARD.encode(raw)))
    }

    /// Opens a sealed value; one stored before sealing existed comes back as it is.
    pub fn open(&self, stored: &str, what: &str) -> Result<String, SecretError> {
        let Some(b64) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let fail = || SecretError::Open(what.to_string());
        let raw = STANDARD.decode(b64).map_err(|_| fail())?;
        if raw.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: what.as_bytes(),
                },
            )
            .map_err(|_| fail())?;
        String::from_utf8(plain).map_err(|_| fail())
    }

    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_binds_the_row() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("secret.key");
        let s = Sealer::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = s.seal("tok-123", "abc/access_token").unwrap();
        assert!(Sealer::is_sealed(&sealed) && !sealed.contains("tok-123"));
        assert_eq!(s.open(&sealed, "abc/access_token").unwrap(), "tok-123");
        assert!(s.open(&sealed, "other/access_token").is_err());
        // The same file gives the same key; another key cannot open it.
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed, "abc/access_token").unwrap(), "tok-123");
        let other = Sealer::from_hex(&"ab".repeat(32)).unwrap();
        assert!(other.open(&sealed, "abc/access_token").is_err());
        assert_eq!(s.open("legacy-plain", "x").unwrap(), "legacy-plain");
        assert!(Sealer::from_hex("short").is_err());
    }
}
