//! Pulling from a real registry on loopback: layers and whiteouts, configuration, layer reuse,
//! compression and manifest formats, multi-platform indexes, authentication, and the errors a
//! user sees. Never contacts an outside registry.

mod registry;

use registry::{run, tree, Layout, Registry, PASSWORD, USER};
use soulbox_image::{pull, ImageError, PullOptions, PulledImage};
use soulbox_runtime::layer::{LayerId, LayerStore};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

fn opts(reg: &Registry) -> PullOptions {
    PullOptions {
        insecure_registries: vec![reg.host.clone()],
        ..Default::default()
    }
}

async fn pull_logged(
    store: &LayerStore,
    reference: &str,
    opts: &PullOptions,
) -> (Result<PulledImage, ImageError>, Vec<String>) {
    let lines = Mutex::new(vec![]);
    let got = pull(store, reference, opts, &|l: &str| {
        lines.lock().unwrap().push(l.to_string())
    })
    .await;
    (got, lines.into_inner().unwrap())
}

/// Nothing but complete layers (and their locks) in the store: no half-written layer, no
/// downloaded blob left behind.
fn assert_no_leftovers(store: &LayerStore) {
    let Ok(rd) = std::fs::read_dir(store.dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            LayerId::parse(&name).is_some() || name.ends_with(".lock"),
            "left behind in the store: {name}"
        );
    }
}

/// `base`: one layer with a few files (one owned by 1000:1000) and a start configuration;
/// `two`: base plus a layer deleting `/gone` and one replacing `/dir` (opaque).
fn build_images(work: &Path) -> Layout {
    let root = tree(
        &work.join("rootfs"),
        &[
            ("etc/hello", "hello\n"),
            ("gone", "soon deleted\n"),
            ("dir/a", "a\n"),
            ("dir/b", "b\n"),
            ("home/user/", ""),
        ],
    );
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::chown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
    let opq = tree(&work.join("opq"), &[("c", "c\n")]);
    let l = Layout::new(work);
    l.new_image("base");
    l.insert("base", "base", &root, "/", false);
    l.config(
        "base",
        &[
            "--config.env",
            "FOO=bar",
            "--config.env",
            "PATH=/bin",
            "--config.workingdir",
            "/home/user",
            "--config.user",
            "1000:1000",
            "--config.entrypoint",
            "/bin/busybox",
            "--config.cmd",
            "sh",
        ],
    );
    l.whiteout("base", "two-a", "/gone");
    l.insert("two-a", "two", &opq, "/dir", true);
    l
}

#[tokio::test]
async fn layers_whiteouts_opaque_dirs_and_config() {
    let work = tempfile::tempdir().unwrap();
    let layout = build_images(work.path());
    let reg = Registry::start(false);
    reg.push(&layout.src("two"), "t/two:1", &[]);
    let data = tempfile::tempdir().unwrap();
    let store = LayerStore::new(data.path());

    let reference = format!("{}/t/two:1", reg.host);
    let (got, lines) = pull_logged(&store, &reference, &opts(&reg)).await;
    let img = got.unwrap();
    assert_eq!(img.reference, reference);
    let manifest = reg.manifest("t/two:1");
    let layer_digests: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(layer_digests.len(), 3);
    assert_eq!(img.digest, reg.digest("t/two:1"));
    assert_eq!(img.index_digest, None);

    // Ids chain each layer's digest on its parent.
    let mut parent = None;
    for (id, digest) in img.layers.iter().zip(&layer_digests) {
        let want = LayerId::derive(parent.as_ref(), &format!("oci {digest}"));
        assert_eq!(id, &want);
        assert!(store.exists(id));
        assert_eq!(store.meta(id).unwrap().parent, parent);
        parent = Some(want);
    }

    let bottom = store.root(&img.layers[0]);
    assert_eq!(
        std::fs::read_to_string(bottom.join("etc/hello")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read(bottom.join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    let home = std::fs::metadata(bottom.join("home/user")).unwrap();
    assert_eq!((home.uid(), home.gid()), (1000, 1000), "natural ids kept");

    let wh = std::fs::symlink_metadata(store.root(&img.layers[1]).join("gone")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "a deleted file is a 0/0 character device"
    );
    let top = store.root(&img.layers[2]);
    assert_eq!(
        xattr::get(top.join("dir"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec()),
        "a replaced directory is opaque"
    );
    assert_eq!(std::fs::read_to_string(top.join("dir/c")).unwrap(), "c\n");
    assert!(!top.join("dir/.wh..wh..opq").exists());

    let c = &img.config;
    assert!(c.env.contains(&("FOO".into(), "bar".into())), "{:?}", c.env);
    assert!(c.env.contains(&("PATH".into(), "/bin".into())));
    assert_eq!(c.workdir.as_deref(), Some("/home/user"));
    assert_eq!(c.user.as_deref(), Some("1000:1000"));
    assert_eq!(c.entrypoint, vec!["/bin/busybox"]);
    assert_eq!(c.cmd, vec!["sh"]);

    assert!(lines[0].starts_with("resolving "), "{lines:?}");
    let short = &layer_digests[0][..19];
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("pulling layer 1/3 {short}…")) && l.contains("MiB")),
        "{lines:?}"
    );
    assert_no_leftovers(&store);
}

#[tokio::test]
async fn shared_layers_are_downloaded_once() {
    let work = tempfile::tempdir().unwrap();
    let layout = build_images(work.path());
    let reg = Registry::start(false);
    reg.push(&layout.src("base"), "t/base:1", &[]);
    reg.push(&layout.src("two"), "t/two:1", &[]);
    let base_layer = reg.manifest("t/base:1")["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let data = tempfile::tempdir().unwrap();
    let store = LayerStore::new(data.path());
    let o = opts(&reg);

    let base = pull_logged(&store, &format!("{}/t/base:1", reg.host), &o)
        .await
        .0
        .unwrap();
    assert_eq!(reg.blob_gets(&base_layer), 1);
    let (two, lines) = pull_logged(&store, &format!("{}/t/two:1", reg.host), &o).await;
    let two = two.unwrap();
    assert_eq!(
        two.layers[0], base.layers[0],
        "the same layer on the same parent"
    );
    assert_eq!(
        reg.blob_gets(&base_layer),
        1,
        "the shared layer is not fetched again"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("layer 1/3 ") && l.ends_with("already present")),
        "{lines:?}"
    );
    assert_eq!(store.list().len(), 3);

    // Pulling again fetches manifests and the configuration only.
    let again = pull_logged(&store, &format!("{}/t/two:1", reg.host), &o)
        .await
        .0
        .unwrap();
    assert_eq!(again, two);
    for l in reg.manifest("t/two:1")["layers"].as_array().unwrap() {
        assert_eq!(reg.blob_gets(l["digest"].as_str().unwrap()), 1);
    }
    assert_eq!(store.list().len(), 3);
}

#[tokio::test]
async fn zstd_plain_and_docker_schema2() {
    let work = tempfile::tempdir().unwrap();
    let layout = build_images(work.path());
    let zstd_layout = work.path().join("zstd");
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--dest-compress",
            "--dest-compress-format",
            "zstd",
            &layout.src("base"),
            &format!("oci:{}:base", zstd_layout.display()),
        ],
    );
    let reg = Registry::start(false);
    reg.push(&format!("oci:{}:base", zstd_layout.display()), "t/z:1", &[]);
    reg.push(&layout.src("base"), "t/d:1", &["--format", "v2s2"]);
    layout.uncompressed("base", "plain");
    reg.push(&layout.src("plain"), "t/u:1", &["--preserve-digests"]);
    assert_eq!(
        reg.manifest("t/u:1")["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    let z = reg.manifest("t/z:1");
    assert_eq!(
        z["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let d = reg.manifest("t/d:1");
    assert_eq!(
        d["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        d["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );

    let data = tempfile::tempdir().unwrap();
    let store = LayerStore::new(data.path());
    let o = opts(&reg);
    for name in ["t/z:1", "t/d:1", "t/u:1"] {
        let img = pull_logged(&store, &format!("{}/{name}", reg.host), &o)
            .await
            .0
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(img.layers.len(), 1);
        let root = store.root(&img.layers[0]);
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hello")).unwrap(),
            "hello\n",
            "{name}"
        );
        assert_eq!(img.config.user.as_deref(), Some("1000:1000"), "{name}");
    }
    assert_eq!(
        store.list().len(),
        3,
        "zstd, gzip and plain blobs are different layers"
    );
    assert_no_leftovers(&store);
}

#[tokio::test]
async fn an_index_yields_its_linux_amd64_image() {
    let work = tempfile::tempdir().unwrap();
    let l = Layout::new(work.path());
    for arch in ["amd64", "arm64"] {
        let files = tree(&work.path().join(arch), &[("arch", arch)]);
        l.new_image(arch);
        l.config(arch, &["--architecture", arch, "--os", "linux"]);
        l.insert(arch, arch, &files, "/", false);
    }
    l.index("multi", &[("arm64", "arm64"), ("amd64", "amd64")]);
    l.index("armonly", &[("arm64", "arm64")]);
    let reg = Registry::start(false);
    reg.push(&l.src("multi"), "t/multi:1", &["--all"]);
    reg.push(&l.src("armonly"), "t/armonly:1", &["--all"]);
    reg.push(&l.src("arm64"), "t/arm:1", &[]);
    let data = tempfile::tempdir().unwrap();
    let store = LayerStore::new(data.path());
    let o = opts(&reg);

    let img = pull_logged(&store, &format!("{}/t/multi:1", reg.host), &o)
        .await
        .0
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(store.root(&img.layers[0]).join("arch")).unwrap(),
        "amd64"
    );
    assert_eq!(img.digest, l.manifest_of("amd64").0);
    assert_eq!(img.index_digest, Some(l.manifest_of("multi").0));

    // By digest, too.
    let by_digest = format!("{}/t/multi@{}", reg.host, img.digest);
    let again = pull_logged(&store, &by_digest, &o).await.0.unwrap();
    assert_eq!(
        (again.layers, again.digest),
        (img.layers, img.digest.clone())
    );

    for name in ["t/armonly:1", "t/arm:1"] {
        let err = pull_logged(&store, &format!("{}/{name}", reg.host), &o)
            .await
            .0
            .unwrap_err();
        assert!(
            matches!(&err, ImageError::NoPlatform { available, .. } if available == &["linux/arm64"]),
            "{name}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("has no linux/amd64 variant (it has: linux/arm64)"),
            "{msg}"
        );
    }
    assert_eq!(
        store.list().len(),
        1,
        "nothing of the arm64 image was stored"
    );
}

#[tokio::test]
async fn a_registry_that_wants_credentials() {
    let work = tempfile::tempdir().unwrap();
    let layout = build_images(work.path());
    let reg = Registry::start(true);
    reg.push(&layout.src("base"), "t/private:1", &[]);
    let data = tempfile::tempdir().unwrap();
    let store = LayerStore::new(data.path());
    let reference = format!("{}/t/private:1", reg.host);

    let err = pull_logged(&store, &reference, &opts(&reg))
        .await
        .0
        .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Unauthorized {
                had_credentials: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("requires authentication")
            && err.to_string().contains("pass a username and password"),
        "{err}"
    );

    let wrong = PullOptions {
        auth: Some((USER.into(), "wrong".into())),
        ..opts(&reg)
    };
    let err = pull_logged(&store, &reference, &wrong).await.0.unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Unauthorized {
                had_credentials: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("refused the username and password"),
        "{err}"
    );
    assert!(
        !format!("{wrong:?}").contains("wrong"),
        "the password stays out of logs"
    );
    assert!(store.list().is_empty());

    let right = PullOptions {
        auth: Some((USER.into(), PASSWORD.into())),
        ..opts(&reg)
    };
    let img = pull_logged(&store, &reference, &right).await.0.unwrap();
    assert_eq!(img.layers.len(), 1);
    assert!(store.root(&img.layers[0]).join("etc/hello").exists());
}

#[tokio::test]
async fn short_names_go_to_the_docker_hub_mirror() {
    let work = tempfile::tempdir().unwrap();
    let layout = build_images(work.path());
    let reg = Registry::start(false);
    reg.push(&layout.src("base"), "library/tiny:1", &[]);
    reg.push(&layout.src("base"), "someone/app:latest", &[]);
    let data = tempfile::tempdir().unwrap();
    let store = LayerStore::new(data.path());
    let o = PullOptions {
        mirrors: [("docker.io".to_string(), reg.host.clone())].into(),
        ..opts(&reg)
    };
    let (img, lines) = pull_logged(&store, "tiny:1", &o).await;
    let img = img.unwrap();
    assert_eq!(img.reference, "docker.io/library/tiny:1");
    assert_eq!(
        lines[0],
        format!(
            "resolving docker.io/library/tiny:1 through mirror {}",
            reg.host
        )
    );
    let img = pull_logged(&store, "docker.io/someone/app", &o)
        .await
        .0
        .unwrap();
    assert_eq!(img.reference, "docker.io/someone/app:latest");
}

#[tokio::test]
async fn errors_say_what_went_wrong() {
    let work = tempfile::tempdir().unwrap();
    let layout = build_images(work.path());
    let reg = Registry::start(false);
    reg.push(&layout.src("base"), "t/base:1", &[]);
    let data = tempfile::tempdir().unwrap();
    let store = LayerStore::new(data.path());
    let o = opts(&reg);

    for missing in ["t/base:nope", "t/nothing:1"] {
        let reference = format!("{}/{missing}", reg.host);
        let err = pull_logged(&store, &reference, &o).await.0.unwrap_err();
        assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "image {reference} not found: the registry {} has no such repository, tag or digest",
                reg.host
            )
        );
    }

    let err = pull_logged(&store, "Not A Reference", &o)
        .await
        .0
        .unwrap_err();
    assert!(matches!(err, ImageError::BadReference { .. }), "{err:?}");

    let closed = format!("127.0.0.1:{}", registry::free_port());
    let o_closed = PullOptions {
        insecure_registries: vec![closed.clone()],
        ..Default::default()
    };
    let err = pull_logged(&store, &format!("{closed}/t/base:1"), &o_closed)
        .await
        .0
        .unwrap_err();
    assert!(matches!(err, ImageError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("registry {closed} is unreachable")),
        "{err}"
    );

    // https to a plain-http registry: unreachable, with the hint.
    let err = pull_logged(
        &store,
        &format!("{}/t/base:1", reg.host),
        &PullOptions::default(),
    )
    .await
    .0
    .unwrap_err();
    assert!(matches!(err, ImageError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("insecure registry"), "{err}");

    let small = PullOptions {
        max_layer_bytes: 1000,
        ..opts(&reg)
    };
    let err = pull_logged(&store, &format!("{}/t/base:1", reg.host), &small)
        .await
        .0
        .unwrap_err();
    assert!(
        matches!(err, ImageError::TooLarge { max: 1000, .. }),
        "{err:?}"
    );
    assert!(store.list().is_empty());
    assert_no_leftovers(&store);
}

#[tokio::test]
async fn answers_without_a_registry_error_body() {
    let data = tempfile::tempdir().unwrap();
    let store = LayerStore::new(data.path());
    for (status, want) in [
        ("404 Not Found", "not found: the registry"),
        ("401 Unauthorized", "pass a username and password"),
        ("429 Too Many Requests", "too many requests"),
        ("500 Internal Server Error", "HTTP 500: not a registry"),
    ] {
        let host = registry::canned(status);
        let o = PullOptions {
            insecure_registries: vec![host.clone()],
            ..Default::default()
        };
        let err = pull_logged(&store, &format!("{host}/a/b:1"), &o)
            .await
            .0
            .unwrap_err();
        assert!(err.to_string().contains(want), "{status}: {err}");
    }
}

#[tokio::test]
async fn a_corrupted_blob_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let layout = build_images(work.path());
    let reg = Registry::start(false);
    reg.push(&layout.src("two"), "t/two:1", &[]);
    let manifest = reg.manifest("t/two:1");
    let victim = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let file = reg.blob_file(&victim);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let data = tempfile::tempdir().unwrap();
    let store = LayerStore::new(data.path());
    let err = pull_logged(&store, &format!("{}/t/two:1", reg.host), &opts(&reg))
        .await
        .0
        .unwrap_err();
    match &err {
        ImageError::DigestMismatch {
            expected,
            actual,
            what,
            ..
        } => {
            assert_eq!(expected, &victim);
            assert_eq!(actual, &registry::sha256(&bytes));
            assert_eq!(what, &format!("layer {victim}"));
        }
        e => panic!("{e:?}"),
    }
    assert!(err.to_string().contains("failed verification"), "{err}");
    // The layer below was stored; the corrupted one and everything above it were not.
    assert_eq!(store.list().len(), 1);
    assert_no_leftovers(&store);
}
