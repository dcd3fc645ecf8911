//! Cross-site request refusal for the dashboard. The session cookie is SameSite=Strict, and on
//! top of that every request that changes something (any method but GET/HEAD, and a terminal's
//! WebSocket) must come from a page of this origin: an `Origin` equal to this host, and, from
//! the page's own script, the header `X-SoulBox-Dashboard: 1`, which a cross-site form cannot
//! send and a cross-site script cannot send without a CORS preflight that is never granted.

use axum::http::{header, HeaderMap, Method};

pub const HEADER: &str = "x-soulbox-dashboard";

/// `Err` with the reason when a request is refused.
pub fn check(method: &Method, headers: &HeaderMap) -> Result<(), &'static str> {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let changes = !matches!(*method, Method::GET | Method::HEAD);
    if !changes && !upgrade {
        return Ok(());
    }
    if !same_origin(headers) {
        return Err("cross-site request refused: the Origin is not this dashboard's");
    }
    if changes && headers.get(HEADER).and_then(|v| v.to_str().ok()) != Some("1") {
        return Err("cross-site request refused: the X-SoulBox-Dashboard header is missing");
    }
    Ok(())
}

/// Whether `Origin` names this host (as the browser reached it: the `Host` header). A
/// `Sec-Fetch-Site` other than same-origin is refused too.
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        if site != "same-origin" {
            return false;
        }
    }
    let (Some(origin), Some(host)) = (get("origin"), get("host")) else {
        return false;
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn reads_pass_and_changes_need_origin_and_header() {
        let host = ("host", "127.0.0.1:3000");
        assert!(check(&Method::GET, &headers(&[host])).is_ok());
        let ok = [host, ("origin", "http://127.0.0.1:3000"), (HEADER, "1")];
        assert!(check(&Method::DELETE, &headers(&ok)).is_ok());
        let evil = [host, ("origin", "http://evil.example"), (HEADER, "1")];
        assert!(check(&Method::DELETE, &headers(&evil)).is_err());
        let bare = [host, ("origin", "http://127.0.0.1:3000")];
        assert!(check(&Method::POST, &headers(&bare)).is_err());
        assert!(check(&Method::POST, &headers(&[host, (HEADER, "1")])).is_err());
        let site = [
            host,
            ("origin", "http://127.0.0.1:3000"),
            (HEADER, "1"),
            ("sec-fetch-site", "cross-site"),
        ];
        assert!(check(&Method::POST, &headers(&site)).is_err());
    }

    #[test]
    fn a_websocket_needs_this_origin() {
        let up = [("host", "h:1"), ("upgrade", "websocket")];
        assert!(check(&Method::GET, &headers(&up)).is_err());
        let ok = [
            ("host", "h:1"),
            ("upgrade", "websocket"),
            ("origin", "https://h:1"),
        ];
        assert!(check(&Method::GET, &headers(&ok)).is_ok());
    }
}
