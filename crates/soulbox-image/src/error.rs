//! What can go wrong pulling an image, each with a message that says what to do next.

use soulbox_runtime::layer::LayerError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference does not parse as `[registry/]name[:tag][@digest]`.
    #[error("'{reference}' is not an image reference ({reason}); expected [registry/]name[:tag][@sha256:digest]")]
    BadReference { reference: String, reason: String },

    /// The registry has no such repository, tag or digest.
    #[error("image {reference} not found: the registry {registry} has no such repository, tag or digest")]
    NotFound { reference: String, registry: String },

    /// The registry wants credentials, or refused the ones given. (Docker Hub answers this way
    /// for a repository that does not exist, too.)
    #[error("{}", unauthorized_message(.reference, .registry, *.had_credentials))]
    Unauthorized {
        reference: String,
        registry: String,
        had_credentials: bool,
    },

    /// An image index without a linux/amd64 image, or an image built for another platform.
    #[error("image {reference} has no linux/amd64 variant (it has: {})", available_list(.available))]
    NoPlatform {
        reference: String,
        available: Vec<String>,
    },

    /// A manifest or blob whose bytes do not hash to the digest that names it.
    #[error("{what} of {reference} failed verification: expected digest {expected}, got {actual}; the registry or something between it and here changed the data")]
    DigestMismatch {
        reference: String,
        what: String,
        expected: String,
        actual: String,
    },

    /// No connection to the registry (refused, timed out, name not resolved, TLS failed).
    #[error("registry {registry} is unreachable: {reason}{}", tls_hint(.reason))]
    Unreachable { registry: String, reason: String },

    /// A layer bigger than `PullOptions::max_layer_bytes`.
    #[error("layer {digest} of {reference} is {size} bytes, more than the {max} allowed (max_layer_bytes)")]
    TooLarge {
        reference: String,
        digest: String,
        size: u64,
        max: u64,
    },

    /// Something that is not a container image (a Helm chart, a WASM module, a schema-1
    /// manifest, a foreign or nondistributable layer).
    #[error("image {reference}: {what}")]
    Unsupported { reference: String, what: String },

    /// Any other answer from the registry.
    #[error("registry {registry} failed on {reference}: {message}")]
    Registry {
        reference: String,
        registry: String,
        message: String,
    },

    /// A layer could not be unpacked or stored.
    #[error("storing a layer of {reference}: {source}")]
    Layer {
        reference: String,
        source: LayerError,
    },

    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn unauthorized_message(reference: &str, registry: &str, had_credentials: bool) -> String {
    if had_credentials {
        format!(
            "registry {registry} refused the username and password for {reference} \
             (wrong credentials, no pull access, or no such repository)"
        )
    } else {
        format!(
            "registry {registry} requires authentication for {reference} (or it does not exist): \
             pass a username and password"
        )
    }
}

fn available_list(available: &[String]) -> String {
    if available.is_empty() {
        "no platform listed".into()
    } else {
        available.join(", ")
    }
}

fn tls_hint(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("tls") || r.contains("certificate") || r.contains("corrupt message") {
        "; if the registry speaks plain http, list it as an insecure registry"
    } else {
        ""
    }
}
