//! Image references, read as Docker reads them: `debian:bookworm` is
//! `docker.io/library/debian:bookworm`, a first component with a `.` or `:` (or `localhost`)
//! is a registry host, no tag means `latest`, and `@sha256:…` pins a digest.

use crate::ImageError;
use oci_client::Reference;
use std::collections::HashMap;

/// Docker Hub's other names, all meaning `docker.io`.
const DOCKER_HUB_ALIASES: [&str; 3] = ["index.docker.io", "registry-1.docker.io", "docker.io"];

/// Parses `reference` into its canonical form.
pub fn parse(reference: &str) -> Result<Reference, ImageError> {
    let bad = |reason: String| ImageError::BadReference {
        reference: reference.to_string(),
        reason,
    };
    if reference.trim() != reference || reference.is_empty() {
        return Err(bad("empty or surrounded by spaces".into()));
    }
    let parsed: Reference = reference.parse().map_err(|e| bad(format!("{e}")))?;
    if parsed.repository().bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad("repository names are lowercase".into()));
    }
    if let Some(d) = parsed.digest() {
        let hex_ok = d
            .split_once(':')
            .is_some_and(|(_, h)| h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !hex_ok {
            return Err(bad(format!("digest '{d}' is not hexadecimal")));
        }
    }
    Ok(parsed)
}

/// The registry host a reference names, Docker Hub's aliases folded into `docker.io`.
pub fn registry_of(r: &Reference) -> &str {
    let host = r.registry();
    if DOCKER_HUB_ALIASES.contains(&host) {
        "docker.io"
    } else {
        host
    }
}

/// Where to fetch `r` from: its own registry, or the mirror configured for it (a mirror
/// serves the same repository names; it replaces the registry, with no fallback, so an
/// air-gapped host never reaches out).
pub fn source(r: &Reference, mirrors: &HashMap<String, String>) -> Reference {
    let registry = registry_of(r);
    let mirror = mirrors.iter().find_map(|(from, to)| {
        let from = if DOCKER_HUB_ALIASES.contains(&from.as_str()) {
            "docker.io"
        } else {
            from.as_str()
        };
        (from == registry).then_some(to)
    });
    let Some(mirror) = mirror else {
        return r.clone();
    };
    let repo = r.repository().to_string();
    match (r.tag(), r.digest()) {
        (Some(t), Some(d)) => {
            Reference::with_tag_and_digest(mirror.clone(), repo, t.to_string(), d.to_string())
        }
        (None, Some(d)) => Reference::with_digest(mirror.clone(), repo, d.to_string()),
        (t, None) => Reference::with_tag(mirror.clone(), repo, t.unwrap_or("latest").to_string()),
    }
}

/// The host:port spoken to for `r` (Docker Hub's API lives at `index.docker.io`).
pub fn api_host(r: &Reference) -> &str {
    r.resolve_registry()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_style_names() {
        let r = parse("debian:bookworm").unwrap();
        assert_eq!(r.whole(), "docker.io/library/debian:bookworm");
        assert_eq!(
            parse("debian").unwrap().whole(),
            "docker.io/library/debian:latest"
        );
        assert_eq!(
            parse("index.docker.io/me/app:1").unwrap().whole(),
            "docker.io/me/app:1"
        );
        let r = parse("127.0.0.1:5000/x/y:tag").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "x/y", Some("tag"))
        );
        let r = parse("localhost/a").unwrap();
        assert_eq!((r.registry(), r.repository()), ("localhost", "a"));
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = parse(&format!("ghcr.io/o/i@{d}")).unwrap();
        assert_eq!((r.tag(), r.digest()), (None, Some(d.as_str())));
        let r = parse(&format!("i:t@{d}")).unwrap();
        assert_eq!((r.tag(), r.digest()), (Some("t"), Some(d.as_str())));
        for bad in [
            "",
            " x",
            "UPPER/case",
            "a@sha256:12",
            "a:b:c",
            &format!("a@sha256:{}", "zz".repeat(32)),
        ] {
            assert!(
                matches!(parse(bad), Err(ImageError::BadReference { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mirrors_replace_the_registry() {
        let m = HashMap::from([("docker.io".to_string(), "127.0.0.1:5000".to_string())]);
        let s = source(&parse("debian:bookworm").unwrap(), &m);
        assert_eq!(s.whole(), "127.0.0.1:5000/library/debian:bookworm");
        assert_eq!(api_host(&s), "127.0.0.1:5000");
        let s = source(&parse("quay.io/a/b").unwrap(), &m);
        assert_eq!(s.whole(), "quay.io/a/b:latest");
        let m = HashMap::from([("index.docker.io".to_string(), "mirror:1".to_string())]);
        let d = format!("sha256:{}", "0".repeat(64));
        let s = source(&parse(&format!("me/app@{d}")).unwrap(), &m);
        assert_eq!(s.whole(), format!("mirror:1/me/app@{d}"));
        assert_eq!(api_host(&parse("debian").unwrap()), "index.docker.io");
    }
}
