//! Signed `/files` URLs (spec §3.8).

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// `read` for downloads (GET), `write` for uploads (POST).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

/// The signature the SDKs compute: `v1_` + unpadded base64 of
/// sha256(`path:operation:user:token[:expiration]`).
pub fn sign(path: &str, op: Operation, user: &str, token: &str, expiration: Option<i64>) -> String {
    let mut raw = format!("{path}:{}:{user}:{token}", op.as_str());
    if let Some(exp) = expiration {
        raw.push_str(&format!(":{exp}"));
    }
    format!(
        "v1_{}",
        STANDARD_NO_PAD.encode(Sha256::digest(raw.as_bytes()))
    )
}

/// A sandbox's traffic access token, as create and connect answer it (`trafficAccessToken`):
/// the code-interpreter SDKs send it (as `E2B-Traffic-Access-Token`) on `/contexts`, where they
/// send no envd token. Derived one-way from the envd token, so it opens the interpreter's
/// routes but never reveals the envd token, and needs no storage of its own.
pub fn traffic_token(envd_token: &str) -> String {
    let digest = Sha256::digest(format!("soulbox traffic token:{envd_token}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("tt_{hex}")
}

/// Constant-time comparison of two signatures.
pub fn equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from the spec, §3.8.
    #[test]
    fn matches_the_sdk_vectors() {
        let t = "secret-token";
        assert_eq!(
            sign("/home/user/x.txt", Operation::Read, "", t, None),
            "v1_WpUXKWsFFL8A/Mvd+q8Dp58zMLZg43R7rVOLCIWv8RI"
        );
        assert_eq!(
            sign(
                "/home/user/x.txt",
                Operation::Write,
                "",
                t,
                Some(1795331148)
            ),
            "v1_AZUYxnI4tnwghbHqvQrgtJdNRPzK1z6Mn1WKOlSG0Q0"
        );
        assert_eq!(
            sign("/home/user/x.txt", Operation::Read, "user", t, None),
            "v1_x685ljbSU6jYPwLYb438xRITYKPDn+yVX6NWQwiGchs"
        );
    }

    #[test]
    fn equal_is_exact() {
        assert!(equal("v1_a", "v1_a"));
        assert!(!equal("v1_a", "v1_b"));
        assert!(!equal("v1_a", "v1_ab"));
    }
}
