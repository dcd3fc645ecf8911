//! The dashboard's files, built into the binary (nothing is fetched at run time). Each is
//! answered with an ETag of its content (a browser revalidates and gets 304 until the binary
//! changes), and text files gzipped once, at the first request, for browsers that take gzip.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use include_dir::{include_dir, Dir};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::sync::OnceLock;

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
    let Some(ready) = prepared().get(name) else {
        return crate::error::json_error(StatusCode::NOT_FOUND, "no such file");
    };
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == ready.etag.as_bytes())
    {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, ready.etag.clone())],
        )
            .into_response();
    }
    let takes_gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut resp = match &ready.gzip {
        Some(z) if takes_gzip => {
            let mut r = Body::from(z.clone()).into_response();
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        _ => Body::from(ready.data).into_response(),
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ready.kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Ok(v) = HeaderValue::from_str(&ready.etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// What is answered for a file, worked out once for all of them (at the first request).
struct Prepared {
    data: &'static [u8],
    etag: String,
    kind: &'static str,
    /// The gzipped body, for a text file worth compressing.
    gzip: Option<bytes::Bytes>,
}

fn prepared() -> &'static HashMap<String, Prepared> {
    static TABLE: OnceLock<HashMap<String, Prepared>> = OnceLock::new();
    TABLE.get_or_init(|| {
        names()
            .into_iter()
            .filter_map(|name| {
                let data = FILES.get_file(&name)?.contents();
                let kind = content_type(&name);
                let gzip = (compressible(kind) && data.len() > 1024).then(|| {
                    let mut z =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                    let _ = z.write_all(data);
                    bytes::Bytes::from(z.finish().unwrap_or_default())
                });
                let etag = format!("\"{}\"", crate::secrets::hex(&Sha256::digest(data)[..12]));
                Some((
                    name,
                    Prepared {
                        data,
                        etag,
                        kind,
                        gzip,
                    },
                ))
            })
            .collect()
    })
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

/// Every file's path (the tests fetch each).
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
