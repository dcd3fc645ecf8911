//! The dashboard's files, built into the binary (nothing is fetched at run time). Each is
//! answered with an ETag of its content (a browser revalidates and gets 304 until the binary
//! changes) and gzipped once, when first asked for, if the browser takes gzip.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use include_dir::{include_dir, Dir};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

static FILES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/src/dashboard/assets");

/// The file of a path under `/dashboard/` (`""` is the page itself).
pub fn serve(rel: &str, headers: &HeaderMap) -> Response {
    let name = match rel {
        "" | "index.html" => "index.html",
        r => match r.strip_prefix("assets/") {
            Some(n) if !n.is_empty() && n != "index.html" => n,
            _ => return crate::error::json_error(StatusCode::NOT_FOUND, "no such page"),
        },
    };
    let Some(file) = FILES.get_file(name) else {
        return crate::error::json_error(StatusCode::NOT_FOUND, "no such file");
    };
    // The file's own path: 'static, unlike the request's.
    let name: &'static str = file.path().to_str().unwrap_or_default();
    let etag = etag(name, file.contents());
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let kind = content_type(name);
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")))
        && compressible(kind)
        && file.contents().len() > 1024;
    let mut resp = if gzip {
        let mut r = Body::from(gzipped(name, file.contents())).into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        Body::from(file.contents()).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

fn content_type(name: &str) -> &'static str {
    let file = name.rsplit('/').next().unwrap_or_default();
    if file.starts_with("LICENSE") || file.starts_with("VERSIONS") {
        return "text/plain; charset=utf-8";
    }
    match file.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        "txt" | "md" | "sh" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn compressible(kind: &str) -> bool {
    kind.starts_with("text/") || kind == "image/svg+xml" || kind == "application/json"
}

fn etag(name: &'static str, data: &'static [u8]) -> String {
    static TAGS: OnceLock<Mutex<HashMap<&'static str, String>>> = OnceLock::new();
    let mut m = TAGS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    m.entry(name)
        .or_insert_with(|| {
            let d = Sha256::digest(data);
            let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .clone()
}

fn gzipped(name: &'static str, data: &'static [u8]) -> Vec<u8> {
    static ZIPPED: OnceLock<Mutex<HashMap<&'static str, Vec<u8>>>> = OnceLock::new();
    let mut m = ZIPPED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    m.entry(name)
        .or_insert_with(|| {
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let _ = z.write_all(data);
            z.finish().unwrap_or_default()
        })
        .clone()
}

/// Every file, for tests (each must be reachable and typed).
pub fn names() -> Vec<String> {
    fn walk(d: &Dir<'static>, out: &mut Vec<String>) {
        for f in d.files() {
            out.push(f.path().to_string_lossy().into_owned());
        }
        for sub in d.dirs() {
            walk(sub, out);
        }
    }
    let mut out = vec![];
    walk(&FILES, &mut out);
    out
}
