//! Dashboard sessions. Signing in trades an API key for a random session token in an
//! HttpOnly, SameSite=Strict cookie that lasts as long as the browser session: the key itself
//! is sent once, in the sign-in body, and kept by neither the browser nor the server. The server
//! keeps the token's hash and the key's id, so a revoked key ends its sessions at once; an idle
//! session ends after [`IDLE`], any session after [`MAX_AGE`]. Sessions live in memory: a
//! restart of the server asks for the key again.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// No session lasts longer.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Sessions kept at once; the least recently used goes first when full.
const MAX_SESSIONS: usize = 10_000;
/// Sessions of one key; its least recently used goes first, so one key signing in over and
/// over pushes out only its own sessions, never another team's.
const MAX_PER_KEY: usize = 16;

/// The cookie's name: on HTTPS with the `__Host-` prefix, so that no other host (a
/// sandbox's `{port}-{id}.{domain}`) can set or shadow it.
pub fn cookie_name(tls: bool) -> &'static str {
    if tls {
        "__Host-soulbox_session"
    } else {
        "soulbox_session"
    }
}

/// The `Set-Cookie` value that stores `token` (no Max-Age: it ends with the browser session).
pub fn set_cookie(tls: bool, token: &str) -> String {
    if tls {
        format!(
            "{}={token}; Path=/; Secure; HttpOnly; SameSite=Strict",
            cookie_name(tls)
        )
    } else {
        format!(
            "{}={token}; Path=/dashboard; HttpOnly; SameSite=Strict",
            cookie_name(tls)
        )
    }
}

/// The `Set-Cookie` value that removes it.
pub fn clear_cookie(tls: bool) -> String {
    let path = if tls { "/; Secure" } else { "/dashboard" };
    format!(
        "{}=; Path={path}; HttpOnly; SameSite=Strict; Max-Age=0",
        cookie_name(tls)
    )
}

/// Two session cookies came with one request (one tossed in from elsewhere).
#[derive(Debug, PartialEq, Eq)]
pub struct TwoCookies;

/// The session token of a request's cookies. Two cookies of the name are refused rather than
/// guessed between.
pub fn token_of(headers: &axum::http::HeaderMap, tls: bool) -> Result<Option<String>, TwoCookies> {
    let name = cookie_name(tls);
    let mut found = None;
    for v in headers.get_all(axum::http::header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=') {
                if k == name {
                    if found.is_some() {
                        return Err(TwoCookies);
                    }
                    found = Some(val.to_string());
                }
            }
        }
    }
    Ok(found)
}

#[derive(Debug)]
struct Session {
    key_id: String,
    started: Instant,
    used: Instant,
}

#[derive(Debug, Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    /// Starts a session for a key; returns its token (shown to the browser only).
    pub fn start(&self, key_id: &str) -> String {
        let bytes: [u8; 32] = rand::random();
        let token = crate::secrets::hex(&bytes);
        let now = Instant::now();
        if let Ok(mut m) = self.by_hash.lock() {
            m.retain(|_, s| live(s, now));
            let mut own: Vec<([u8; 32], Instant)> = m
                .iter()
                .filter(|(_, s)| s.key_id == key_id)
                .map(|(h, s)| (*h, s.used))
                .collect();
            if own.len() >= MAX_PER_KEY {
                own.sort_by_key(|(_, used)| *used);
                for (h, _) in &own[..=own.len() - MAX_PER_KEY] {
                    m.remove(h);
                }
            }
            if m.len() >= MAX_SESSIONS {
                if let Some(oldest) = m.iter().min_by_key(|(_, s)| s.used).map(|(h, _)| *h) {
                    m.remove(&oldest);
                }
            }
            m.insert(
                hash(&token),
                Session {
                    key_id: key_id.to_string(),
                    started: now,
                    used: now,
                },
            );
        }
        token
    }

    /// The key id of a live session (and marks it used).
    pub fn key_of(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut m = self.by_hash.lock().ok()?;
        let h = hash(token);
        let s = m.get_mut(&h)?;
        if !live(s, now) {
            m.remove(&h);
            return None;
        }
        s.used = now;
        Some(s.key_id.clone())
    }

    pub fn end(&self, token: &str) {
        if let Ok(mut m) = self.by_hash.lock() {
            m.remove(&hash(token));
        }
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.used) < IDLE && now.duration_since(s.started) < MAX_AGE
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn a_session_names_its_key_until_it_ends() {
        let s = Sessions::default();
        let t = s.start("k1");
        assert_eq!(t.len(), 64);
        assert_eq!(s.key_of(&t).as_deref(), Some("k1"));
        assert_eq!(s.key_of("nope"), None);
        s.end(&t);
        assert_eq!(s.key_of(&t), None);
    }

    #[test]
    fn one_key_signing_in_again_and_again_pushes_out_only_its_own_sessions() {
        let s = Sessions::default();
        let other = s.start("k2");
        let mine: Vec<String> = (0..MAX_PER_KEY + 4).map(|_| s.start("k1")).collect();
        assert_eq!(s.key_of(&other).as_deref(), Some("k2"));
        let live = mine.iter().filter(|t| s.key_of(t).is_some()).count();
        assert_eq!(live, MAX_PER_KEY);
        assert!(s.key_of(mine.last().unwrap()).is_some());
        assert!(s.key_of(&mine[0]).is_none());
    }

    #[test]
    fn cookies_are_read_and_a_second_one_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_static("a=1; soulbox_session=abc"),
        );
        assert_eq!(token_of(&h, false), Ok(Some("abc".into())));
        assert_eq!(token_of(&h, true), Ok(None));
        h.append("cookie", HeaderValue::from_static("soulbox_session=evil"));
        assert_eq!(token_of(&h, false), Err(TwoCookies));
    }
}
