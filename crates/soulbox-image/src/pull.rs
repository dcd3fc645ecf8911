//! The pull itself: manifest, platform, configuration, then each layer in order.

use crate::config::RawConfig;
use crate::reference::{self, api_host};
use crate::{ImageConfig, ImageError};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    ImageIndexEntry, OciDescriptor, OciImageManifest, OciManifest, IMAGE_CONFIG_MEDIA_TYPE,
    IMAGE_DOCKER_CONFIG_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use soulbox_runtime::layer::unpack::{unpack, UnpackOptions};
use soulbox_runtime::layer::{LayerId, LayerStore};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;

/// How to reach registries.
#[derive(Clone)]
pub struct PullOptions {
    /// Username and password for the registry pulled from — the mirror, when one is
    /// configured (HTTP basic, or exchanged for a token where the registry asks for one);
    /// anonymous when `None`.
    pub auth: Option<(String, String)>,
    /// Registries (`host[:port]`, as in the reference or the mirror) spoken to over plain
    /// http instead of https.
    pub insecure_registries: Vec<String>,
    /// Registry host → the mirror host to fetch its images from instead (`docker.io` →
    /// `127.0.0.1:5000`). A mirror replaces its registry; there is no fallback.
    pub mirrors: HashMap<String, String>,
    /// Most bytes of one layer, downloaded and unpacked alike.
    pub max_layer_bytes: u64,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            auth: None,
            insecure_registries: vec![],
            mirrors: HashMap::new(),
            max_layer_bytes: UnpackOptions::default().max_bytes,
        }
    }
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("auth", &self.auth.as_ref().map(|(u, _)| (u, "<password>")))
            .field("insecure_registries", &self.insecure_registries)
            .field("mirrors", &self.mirrors)
            .field("max_layer_bytes", &self.max_layer_bytes)
            .finish()
    }
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The reference in canonical form (`docker.io/library/debian:bookworm`).
    pub reference: String,
    /// Digest of the image manifest (the linux/amd64 one, when the reference names an index).
    pub digest: String,
    /// Digest of the index or manifest list the image was picked from, if any.
    pub index_digest: Option<String>,
    /// Its layers, bottom first (what [`LayerStore::stack`] takes).
    pub layers: Vec<LayerId>,
    pub config: ImageConfig,
}

/// Longest configuration blob accepted (real ones are a few KiB).
const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Progress lines per layer download, at most one per this interval.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

const LAYER_MEDIA_TYPES: [&str; 5] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

/// Pulls `reference` into `store` and returns its layers and configuration. `progress` gets
/// lines for a person to read (a few per second at most).
pub async fn pull(
    store: &LayerStore,
    reference: &str,
    opts: &PullOptions,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<PulledImage, ImageError> {
    let wanted = reference::parse(reference)?;
    let src = reference::source(&wanted, &opts.mirrors);
    let ctx = Ctx {
        reference: wanted.whole(),
        registry: api_host(&src).to_string(),
        had_credentials: opts.auth.is_some(),
    };
    let client = client(opts);
    let auth = match &opts.auth {
        Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
        None => RegistryAuth::Anonymous,
    };
    if src.registry() == wanted.registry() {
        progress(&format!("resolving {}", ctx.reference));
    } else {
        progress(&format!(
            "resolving {} through mirror {}",
            ctx.reference, ctx.registry
        ));
    }

    let (manifest, digest, index_digest) = resolve(&client, &src, &auth, &ctx).await?;
    let config = fetch_config(&client, &src, &manifest.config, &ctx).await?;
    if manifest.layers.is_empty() {
        return Err(ctx.unsupported("its manifest lists no layers".into()));
    }
    for layer in &manifest.layers {
        check_layer(layer, opts, &ctx)?;
    }

    let n = manifest.layers.len();
    let mut parent: Option<LayerId> = None;
    let mut layers = Vec::with_capacity(n);
    for (i, layer) in manifest.layers.iter().enumerate() {
        let id = LayerId::derive(parent.as_ref(), &format!("oci {}", layer.digest));
        let label = format!("layer {}/{n} {}", i + 1, short_digest(&layer.digest));
        if store.exists(&id) {
            progress(&format!("{label} already present"));
        } else {
            let made_by = format!(
                "FROM {} (layer {}/{n} {})",
                ctx.reference,
                i + 1,
                layer.digest
            );
            let job = LayerJob {
                store,
                id: &id,
                parent: parent.as_ref(),
                made_by,
                label,
                opts,
                progress,
            };
            fetch_layer(&client, &src, layer, job, &ctx).await?;
        }
        layers.push(id.clone());
        parent = Some(id);
    }
    tracing::info!(reference = %ctx.reference, %digest, layers = n, "pulled an image");
    progress(&format!("pulled {} ({digest})", ctx.reference));
    Ok(PulledImage {
        reference: ctx.reference,
        digest,
        index_digest,
        layers,
        config,
    })
}

fn client(opts: &PullOptions) -> Client {
    // reqwest is built without a TLS crypto provider of its own; use ring, as the rest of
    // SoulBox does. Installing fails harmlessly when one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: if opts.insecure_registries.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(opts.insecure_registries.clone())
        },
        // Indexes are resolved here, to say which platforms there were when none fits.
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(15)),
        read_timeout: Some(Duration::from_secs(120)),
        user_agent: concat!("soulbox/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    })
}

/// The image manifest for linux/amd64, its digest, and the digest of the index it came from.
async fn resolve(
    client: &Client,
    src: &Reference,
    auth: &RegistryAuth,
    ctx: &Ctx,
) -> Result<(OciImageManifest, String, Option<String>), ImageError> {
    let (manifest, digest) = client
        .pull_manifest(src, auth)
        .await
        .map_err(|e| ctx.map(e, Fetching::Manifest))?;
    let index = match manifest {
        OciManifest::Image(m) => return Ok((m, digest, None)),
        OciManifest::ImageIndex(index) => index,
    };
    let Some(pick) = pick_linux_amd64(&index.manifests) else {
        return Err(ImageError::NoPlatform {
            reference: ctx.reference.clone(),
            available: index.manifests.iter().filter_map(platform_of).collect(),
        });
    };
    let (manifest, image_digest) = client
        .pull_manifest(&src.clone_with_digest(pick), auth)
        .await
        .map_err(|e| ctx.map(e, Fetching::Manifest))?;
    match manifest {
        OciManifest::Image(m) => Ok((m, image_digest, Some(digest))),
        OciManifest::ImageIndex(_) => Err(ctx.unsupported(
            "its index names another index for linux/amd64 instead of an image".into(),
        )),
    }
}

/// The linux/amd64 entry of an index, preferring one without a CPU variant (the baseline).
fn pick_linux_amd64(entries: &[ImageIndexEntry]) -> Option<String> {
    let fits = |e: &&ImageIndexEntry| {
        e.platform
            .as_ref()
            .is_some_and(|p| p.os.to_string() == "linux" && p.architecture.to_string() == "amd64")
    };
    let baseline = entries.iter().filter(fits).find(|e| {
        e.platform.as_ref().is_none_or(|p| {
            p.variant
                .as_deref()
                .is_none_or(|v| v.is_empty() || v == "v1")
        })
    });
    baseline
        .or_else(|| entries.iter().find(fits))
        .map(|e| e.digest.clone())
}

fn platform_of(e: &ImageIndexEntry) -> Option<String> {
    let p = e.platform.as_ref()?;
    let (os, arch) = (p.os.to_string(), p.architecture.to_string());
    // Attestation manifests (buildx) are listed as unknown/unknown.
    if os == "unknown" {
        return None;
    }
    Some(match p.variant.as_deref() {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    })
}

async fn fetch_config(
    client: &Client,
    src: &Reference,
    desc: &OciDescriptor,
    ctx: &Ctx,
) -> Result<ImageConfig, ImageError> {
    if desc.media_type != IMAGE_CONFIG_MEDIA_TYPE
        && desc.media_type != IMAGE_DOCKER_CONFIG_MEDIA_TYPE
    {
        return Err(ctx.unsupported(format!(
            "it is not a container image (its configuration is {})",
            desc.media_type
        )));
    }
    check_digest(&desc.digest, ctx)?;
    if u64::try_from(desc.size).unwrap_or(0) > MAX_CONFIG_BYTES {
        return Err(ctx.unsupported(format!(
            "its configuration is {} bytes, more than the {MAX_CONFIG_BYTES} accepted",
            desc.size
        )));
    }
    let mut raw = Vec::new();
    client
        .pull_blob(src, desc, &mut raw)
        .await
        .map_err(|e| ctx.map(e, Fetching::Blob("its configuration")))?;
    let raw = RawConfig::parse(&raw).map_err(|e| ctx.unsupported(e))?;
    if let Some(platform) = raw.platform() {
        let p: Vec<&str> = platform.split('/').collect();
        if p[..2] != ["linux", "amd64"] {
            return Err(ImageError::NoPlatform {
                reference: ctx.reference.clone(),
                available: vec![platform],
            });
        }
    }
    Ok(raw.image_config())
}

/// A layer's digest names a file and a store layer: only well-formed ones are taken.
fn check_digest(digest: &str, ctx: &Ctx) -> Result<(), ImageError> {
    let lower_hex = |h: &str| h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let ok = match digest.split_once(':') {
        Some(("sha256", h)) => h.len() == 64 && lower_hex(h),
        Some(("sha512", h)) => h.len() == 128 && lower_hex(h),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ctx.unsupported(format!("its manifest names a malformed digest '{digest}'")))
    }
}

fn check_layer(layer: &OciDescriptor, opts: &PullOptions, ctx: &Ctx) -> Result<(), ImageError> {
    check_digest(&layer.digest, ctx)?;
    if !LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
        let why = if layer.media_type.contains("foreign")
            || layer.media_type.contains("nondistributable")
        {
            "a foreign (nondistributable) layer, as Windows images have"
        } else {
            "not a filesystem layer"
        };
        return Err(ctx.unsupported(format!(
            "layer {} has media type {}: {why}",
            layer.digest, layer.media_type
        )));
    }
    let size = u64::try_from(layer.size).unwrap_or(0);
    if size > opts.max_layer_bytes {
        return Err(ImageError::TooLarge {
            reference: ctx.reference.clone(),
            digest: layer.digest.clone(),
            size,
            max: opts.max_layer_bytes,
        });
    }
    Ok(())
}

struct LayerJob<'a> {
    store: &'a LayerStore,
    id: &'a LayerId,
    parent: Option<&'a LayerId>,
    made_by: String,
    label: String,
    opts: &'a PullOptions,
    progress: &'a (dyn Fn(&str) + Send + Sync),
}

/// Downloads a layer blob to a file beside the store's layers (verified against its digest
/// as it streams), then unpacks it into a new store layer.
async fn fetch_layer(
    client: &Client,
    src: &Reference,
    layer: &OciDescriptor,
    job: LayerJob<'_>,
    ctx: &Ctx,
) -> Result<(), ImageError> {
    let dir = job.store.dir();
    std::fs::create_dir_all(dir).map_err(|source| ImageError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let blob = TempBlob::new(dir, job.id);
    let file = tokio::fs::File::create(&blob.0)
        .await
        .map_err(|source| ImageError::Io {
            what: format!("creating {}", blob.0.display()),
            source,
        })?;
    let declared = u64::try_from(layer.size).ok().filter(|s| *s > 0);
    let mut out = Counted {
        inner: file,
        written: 0,
        limit: declared.unwrap_or(job.opts.max_layer_bytes),
        over: false,
        label: &job.label,
        total: declared,
        progress: job.progress,
        last: Instant::now(),
    };
    (job.progress)(&out.line());
    let got = client.pull_blob(src, layer, &mut out).await;
    if out.over {
        return Err(match declared {
            Some(size) => ctx.registry(format!(
                "it sent more than the {size} bytes the manifest says layer {} has",
                layer.digest
            )),
            None => ImageError::TooLarge {
                reference: ctx.reference.clone(),
                digest: layer.digest.clone(),
                size: out.written,
                max: job.opts.max_layer_bytes,
            },
        });
    }
    got.map_err(|e| ctx.map(e, Fetching::Blob(&format!("layer {}", layer.digest))))?;
    (job.progress)(&format!("{} downloaded, unpacking", out.line()));
    drop(out);

    let store = job.store.clone();
    let (id, parent, made_by) = (job.id.clone(), job.parent.cloned(), job.made_by);
    let path = blob.0.clone();
    let unpack_opts = UnpackOptions {
        whiteouts: true,
        rooted_names: true,
        max_bytes: job.opts.max_layer_bytes,
        ..Default::default()
    };
    let made = tokio::task::spawn_blocking(move || {
        store.create(&id, parent.as_ref(), &made_by, false, |root| {
            let f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            unpack(
                std::io::BufReader::new(f),
                root,
                &unpack_opts,
                &|p, _dir| Some(p.to_path_buf()),
            )
            .map(|_| ())
        })
    })
    .await
    .map_err(|e| ImageError::Io {
        what: "unpacking a layer".into(),
        source: std::io::Error::other(e),
    })?;
    made.map_err(|source| ImageError::Layer {
        reference: ctx.reference.clone(),
        source,
    })?;
    drop(blob);
    Ok(())
}

/// A downloaded blob, removed when dropped. Its name (`.new-…-<pid>`) is one the store's
/// garbage collection removes once this process is gone.
struct TempBlob(PathBuf);

impl TempBlob {
    fn new(dir: &Path, id: &LayerId) -> TempBlob {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempBlob(dir.join(format!(
            ".new-blob-{}.{n}-{}",
            id.short(),
            std::process::id()
        )))
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A writer that counts, stops at `limit`, and reports progress now and then.
struct Counted<'a, W> {
    inner: W,
    written: u64,
    limit: u64,
    over: bool,
    label: &'a str,
    total: Option<u64>,
    progress: &'a (dyn Fn(&str) + Send + Sync),
    last: Instant,
}

impl<W> Counted<'_, W> {
    fn line(&self) -> String {
        match self.total {
            Some(t) => format!("pulling {} {}/{}", self.label, mib(self.written), mib(t)),
            None => format!("pulling {} {}", self.label, mib(self.written)),
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.written + buf.len() as u64 > self.limit {
            self.over = true;
            return Poll::Ready(Err(std::io::Error::other("more bytes than allowed")));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
            if self.last.elapsed() >= PROGRESS_EVERY {
                self.last = Instant::now();
                (self.progress)(&self.line());
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// `sha256:0123456789ab…`
fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, h)) if h.len() > 12 => format!("{alg}:{}…", &h[..12]),
        _ => d.to_string(),
    }
}

enum Fetching<'a> {
    Manifest,
    Blob(&'a str),
}

/// What errors are about: the reference asked for and the registry spoken to.
struct Ctx {
    reference: String,
    registry: String,
    had_credentials: bool,
}

impl Ctx {
    fn unsupported(&self, what: String) -> ImageError {
        ImageError::Unsupported {
            reference: self.reference.clone(),
            what,
        }
    }

    fn registry(&self, message: String) -> ImageError {
        ImageError::Registry {
            reference: self.reference.clone(),
            registry: self.registry.clone(),
            message,
        }
    }

    fn unauthorized(&self) -> ImageError {
        ImageError::Unauthorized {
            reference: self.reference.clone(),
            registry: self.registry.clone(),
            had_credentials: self.had_credentials,
        }
    }

    fn not_found(&self, what: &Fetching) -> ImageError {
        match what {
            Fetching::Manifest => ImageError::NotFound {
                reference: self.reference.clone(),
                registry: self.registry.clone(),
            },
            Fetching::Blob(b) => self.registry(format!("{b} is missing from the registry")),
        }
    }

    fn map(&self, e: OciDistributionError, what: Fetching) -> ImageError {
        use OciDistributionError as E;
        match e {
            E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => self.unauthorized(),
            E::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    self.unauthorized()
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    self.not_found(&what)
                } else {
                    let msgs: Vec<String> = envelope
                        .errors
                        .iter()
                        .map(|e| format!("{:?}: {}", e.code, e.message))
                        .collect();
                    self.registry(msgs.join("; "))
                }
            }
            E::ServerError { code, message, .. } => match code {
                401 | 403 => self.unauthorized(),
                404 => self.not_found(&what),
                429 => self.registry("too many requests (a pull rate limit); wait, or pass credentials or use a mirror".into()),
                _ => self.registry(format!("HTTP {code}: {}", message.trim())),
            },
            E::ImageManifestNotFoundError(_) => self.not_found(&what),
            E::DigestError(DigestError::VerificationError { expected, actual }) => {
                ImageError::DigestMismatch {
                    reference: self.reference.clone(),
                    what: match what {
                        Fetching::Manifest => "the manifest".into(),
                        Fetching::Blob(b) => b.to_string(),
                    },
                    expected,
                    actual,
                }
            }
            E::RequestError(e) if e.is_connect() || e.is_timeout() => ImageError::Unreachable {
                registry: self.registry.clone(),
                reason: chain(&e),
            },
            E::RequestError(e) => self.registry(chain(&e)),
            E::IoError(source) => ImageError::Io {
                what: "writing a downloaded blob".into(),
                source,
            },
            e @ (E::UnsupportedMediaTypeError(_)
            | E::UnsupportedSchemaVersionError(_)
            | E::ManifestParsingError(_)
            | E::VersionedParsingError(_)) => self.unsupported(format!(
                "its manifest is not a schema-2 Docker or OCI image manifest ({e})"
            )),
            e => self.registry(chain(&e)),
        }
    }
}

/// An error and its causes, each once.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut at = e.source();
    while let Some(s) = at {
        let m = s.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        at = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pull can run in a spawned task (a server's request handler).
    #[allow(dead_code)]
    fn pull_is_send(store: &LayerStore, opts: &PullOptions) {
        fn send<T: Send>(_: T) {}
        send(pull(store, "x", opts, &|_| {}));
    }

    #[test]
    fn short_forms() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(short_digest(&d), "sha256:abababababab…");
        assert_eq!(mib(12_900_000), "12.3 MiB");
    }
}
