//! Running a build: the base's layers, then each step on top, every step's result a layer
//! found again by its id when nothing it depends on changed. A RUN executes in a sandbox
//! like any other (same isolation and limits, internet on) whose writable layer becomes the
//! step's layer; a COPY unpacks its uploaded files on the host, into a fresh layer, without
//! running anything. Builds take turns ([`Builds`]); a failed one leaves nothing made.

use super::steps::{self, CopyPlacement, StartRequest, Step};
use super::{BuildRecord, Image, LogEntry, TemplateRecord};
use crate::AppState;
use soulbox_runtime::agent_client::AgentClient;
use soulbox_runtime::layer::unpack::UnpackOptions;
use soulbox_runtime::layer::{LayerId, LayerStore};
use soulbox_runtime::{Backend, Limits, Rootfs, SandboxSpec};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The runtime label of a build step's sandbox: one the server finds after a restart is
/// removed (its build was reported failed).
pub const LABEL_BUILD: &str = "build";

/// The queue: at most `concurrency` builds run at once, the others wait (`waiting`).
pub struct Builds {
    slots: tokio::sync::Semaphore,
    pub timeout: Duration,
}

impl Builds {
    pub fn new(concurrency: usize, timeout: Duration) -> Arc<Self> {
        Arc::new(Builds {
            slots: tokio::sync::Semaphore::new(concurrency.max(1)),
            timeout,
        })
    }
}

/// Where a team's uploaded COPY files are kept, by their `filesHash`.
pub fn files_dir(st: &AppState, team_id: &str) -> PathBuf {
    st.backend
        .data_dir()
        .join("build-files")
        .join(soulbox_runtime::layer::hex(team_id.as_bytes()))
}

/// A step that failed: its message and which step (E2B's `reason.step`).
struct Failure {
    message: String,
    step: Option<String>,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            message: e.to_string(),
            step: None,
        }
    }
}

/// Log lines of a build, written to the store in order as they come.
#[derive(Clone)]
struct Log {
    tx: tokio::sync::mpsc::UnboundedSender<LogEntry>,
}

impl Log {
    fn line(&self, level: &str, step: Option<&str>, message: impl Into<String>) {
        let _ = self.tx.send(LogEntry {
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            level: level.into(),
            step: step.map(str::to_string),
            message: message.into(),
        });
    }
}

/// Runs one build to its end (ready or error); called in a task of its own.
pub async fn run(
    st: AppState,
    t: TemplateRecord,
    b: BuildRecord,
    req: StartRequest,
    tags: Vec<String>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<LogEntry>();
    let writer = {
        let (store, id) = (st.store.clone(), b.id.clone());
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if let Err(err) = store.add_build_log(&id, &e).await {
                    tracing::warn!(build_id = %id, "build log: {err}");
                }
            }
        })
    };
    let log = Log { tx };
    let _slot = st.builds.slots.acquire().await;
    // Layers made so far are not collected while the build runs.
    let _layers = st.layer_gc.read().await;
    log.line(
        "info",
        None,
        format!("Building template {} ({})", t.name, t.id),
    );
    let started = std::time::Instant::now();
    let outcome =
        match tokio::time::timeout(st.builds.timeout, build(&st, &t, &b, &req, &log)).await {
            Ok(r) => r,
            Err(_) => Err(Failure {
                message: format!("the build took longer than {:?}", st.builds.timeout),
                step: None,
            }),
        };
    let took = started.elapsed();
    st.metrics.build_done(
        match &outcome {
            Ok(_) => "ready",
            Err(_) if took >= st.builds.timeout => "timeout",
            Err(_) => "failed",
        },
        took,
    );
    match outcome {
        Ok(image) => {
            log.line(
                "info",
                None,
                format!(
                    "Template {} is ready ({:.1} s)",
                    t.name,
                    started.elapsed().as_secs_f64()
                ),
            );
            drop(log);
            let _ = writer.await;
            if let Err(e) = st.store.finish_build(&b, &image, &tags).await {
                tracing::error!(build_id = %b.id, "recording the build: {e}");
            }
            tracing::info!(template = %t.name, build_id = %b.id, "template built");
        }
        Err(f) => {
            log.line(
                "error",
                f.step.as_deref(),
                format!("Build failed: {}", f.message),
            );
            drop(log);
            let _ = writer.await;
            let logs = st
                .store
                .build_logs(&b.id, 0, i64::MAX)
                .await
                .unwrap_or_default();
            let tail: Vec<_> = logs.iter().rev().take(20).rev().cloned().collect();
            let mut reason = serde_json::json!({"message": f.message, "logEntries": tail});
            if let Some(s) = f.step {
                reason["step"] = s.into();
            }
            let _ = st.store.fail_build(&b.id, &reason).await;
            tracing::info!(template = %t.name, build_id = %b.id, "template build failed: {}", f.message);
        }
    }
}

/// The image a build makes.
async fn build(
    st: &AppState,
    t: &TemplateRecord,
    b: &BuildRecord,
    req: &StartRequest,
    log: &Log,
) -> Result<Image, Failure> {
    let parsed = steps::parse(req.steps.as_deref().unwrap_or_default())?;
    let force_all = req.force.unwrap_or(false);
    let layers = st.backend.templates().layers().clone();
    let mut image = base(st, t, req, log).await?;
    for (i, (step, force)) in parsed.iter().enumerate() {
        let label = (i + 1).to_string();
        let fail = |message: String| Failure {
            message,
            step: Some(label.clone()),
        };
        let force = *force || force_all;
        log.line(
            "info",
            Some(&label),
            format!("[{}/{}] {}", i + 1, parsed.len(), step.describe()),
        );
        let parent = image.layers.last().cloned();
        match step {
            Step::Env(pairs) => {
                for (k, v) in pairs {
                    let v = steps::expand_env(v, &image.env);
                    image.env.retain(|(ek, _)| ek != k);
                    image.env.push((k.clone(), v));
                }
            }
            Step::User(u) => image.user = Some(u.clone()),
            Step::Workdir(d) => {
                let dir = steps::absolute(d, image.workdir.as_deref()).map_err(fail)?;
                let workdir = dir.display().to_string();
                let id = LayerId::derive(parent.as_ref(), &format!("WORKDIR {}", dir.display()));
                let (stack, layers) = (image.layers.clone(), layers.clone());
                let made = blocking(move || {
                    layers
                        .create(
                            &id,
                            parent.as_ref(),
                            &format!("WORKDIR {}", dir.display()),
                            false,
                            |root| make_dirs(&layers, &stack, root, &dir, None),
                        )
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(id)
                })
                .await
                .map_err(fail)?;
                image.layers.push(made);
                image.workdir = Some(workdir);
            }
            Step::Run { cmd, user } => {
                let user = user
                    .clone()
                    .or(image.user.clone())
                    .unwrap_or_else(|| "root".into());
                let key = serde_json::json!({
                    "step": "RUN", "cmd": cmd, "user": user, "env": image.env, "workdir": image.workdir,
                });
                let id = LayerId::derive(parent.as_ref(), &key.to_string());
                if layers.exists(&id) && !force {
                    log.line("info", Some(&label), "CACHED");
                } else {
                    run_step(st, t, b, &image, &id, cmd, &user, force, &label, log)
                        .await
                        .map_err(fail)?;
                }
                image.layers.push(id);
            }
            Step::Copy {
                src,
                dest,
                user,
                mode,
                files_hash,
            } => {
                let key = serde_json::json!({
                    "step": "COPY", "src": src, "dest": dest, "user": user, "mode": mode,
                    "filesHash": files_hash, "workdir": image.workdir,
                });
                let id = LayerId::derive(parent.as_ref(), &key.to_string());
                if layers.exists(&id) && !force {
                    log.line("info", Some(&label), "CACHED");
                } else {
                    let archive = files_dir(st, &t.team_id).join(files_hash.to_lowercase());
                    if !archive.is_file() {
                        return Err(fail(format!(
                            "the files of COPY {src} were not uploaded (filesHash {files_hash})"
                        )));
                    }
                    let dest_abs = steps::absolute(dest, image.workdir.as_deref()).map_err(fail)?;
                    let owner = match user.as_deref() {
                        Some(u) => Some(resolve_owner(&layers, &image.layers, u).map_err(fail)?),
                        None => None,
                    };
                    let placement =
                        CopyPlacement::new(src, &dest_abs, dest.ends_with('/')).map_err(fail)?;
                    let (stack, id2, parent2) = (image.layers.clone(), id.clone(), parent.clone());
                    let made_by = step.describe();
                    let mode = *mode;
                    let layers2 = layers.clone();
                    let max_copy = st.cfg.build_disk_mb << 20;
                    let unpacked = blocking(move || {
                        layers2
                            .create(&id2, parent2.as_ref(), &made_by, force, |root| {
                                let f = std::fs::File::open(&archive).map_err(|e| e.to_string())?;
                                let opts = UnpackOptions {
                                    owner: Some(owner.unwrap_or((0, 0))),
                                    mode,
                                    max_bytes: max_copy,
                                    ..Default::default()
                                };
                                // Directories on the way keep the owners and modes they have
                                // below (a COPY into /home/user leaves /home/user as it was).
                                let failed = std::cell::RefCell::new(None);
                                let place = |p: &Path, is_dir: bool| {
                                    let to = placement.place(p, is_dir)?;
                                    let parent = Path::new("/").join(to.parent()?);
                                    if let Err(e) =
                                        make_dirs(&layers2, &stack, root, &parent, owner)
                                    {
                                        failed.borrow_mut().get_or_insert(e);
                                        return None;
                                    }
                                    Some(to)
                                };
                                soulbox_runtime::layer::unpack::unpack(f, root, &opts, &place)?;
                                if let Some(e) = failed.into_inner() {
                                    return Err(e);
                                }
                                Ok(())
                            })
                            .map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(fail)?;
                    log.line(
                        "info",
                        Some(&label),
                        format!("copied {} bytes", unpacked.size_bytes),
                    );
                }
                image.layers.push(id);
            }
        }
    }
    image.start_cmd = req.start_cmd.clone().filter(|c| !c.trim().is_empty());
    image.ready_cmd = req.ready_cmd.clone().filter(|c| !c.trim().is_empty());
    if let Some(cmd) = &image.start_cmd {
        // The start command must work: run it once, with its ready check, before the
        // template is called ready (as E2B does).
        log.line(
            "info",
            Some("finalize"),
            format!("Checking the start command: {cmd}"),
        );
        let sbx = super::api::start_sandbox(st, t, &image, None, Default::default(), true, None)
            .await
            .map_err(|e| Failure {
                message: format!("the start command failed: {e}"),
                step: Some("finalize".into()),
            })?;
        let _ = st.backend.kill(&sbx.id).await;
    }
    Ok(image)
}

/// The base image: a built-in template, one of the team's (or a public) template, or an OCI
/// image.
async fn base(
    st: &AppState,
    t: &TemplateRecord,
    req: &StartRequest,
    log: &Log,
) -> Result<Image, Failure> {
    let fail = |m: String| Failure {
        message: m,
        step: Some("base".into()),
    };
    match (&req.from_template, &req.from_image) {
        (Some(name), None) => {
            let resolved = soulbox_runtime::template::recipe::resolve_alias(name);
            if let Ok(builtin) = st.backend.templates().get(resolved) {
                log.line("info", Some("base"), format!("FROM template {resolved}"));
                let has_user = st
                    .backend
                    .templates()
                    .layers()
                    .root(&builtin.layer_ids[0])
                    .join("home/user")
                    .is_dir();
                return Ok(Image {
                    layers: builtin.layer_ids,
                    user: has_user.then(|| "user".to_string()),
                    workdir: has_user.then(|| "/home/user".to_string()),
                    ..Default::default()
                });
            }
            let (tname, tag) = super::parse_name(name).map_err(fail)?;
            let other = st
                .store
                .template(&t.team_id, &tname)
                .await?
                .ok_or_else(|| fail(format!("unknown base template '{name}'")))?;
            let b = st
                .store
                .tagged_build(&other.id, &tag)
                .await?
                .and_then(|b| b.image)
                .ok_or_else(|| fail(format!("base template '{name}' has no ready build")))?;
            log.line("info", Some("base"), format!("FROM template {name}"));
            Ok(Image {
                start_cmd: None,
                ready_cmd: None,
                ..b
            })
        }
        (None, Some(image)) => {
            let auth = match &req.from_image_registry {
                None => None,
                Some(r) if matches!(r.kind.as_deref(), None | Some("registry")) => {
                    match (&r.username, &r.password) {
                        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
                        _ => return Err(fail("fromImageRegistry needs a username and a password".into())),
                    }
                }
                Some(r) => {
                    return Err(fail(format!(
                        "fromImageRegistry type '{}' is not supported (use type 'registry' with a username and password)",
                        r.kind.as_deref().unwrap_or_default()
                    )))
                }
            };
            let opts = soulbox_image::PullOptions {
                auth,
                insecure_registries: st.cfg.insecure_registries.clone(),
                mirrors: st.cfg.registry_mirrors.clone(),
                ..Default::default()
            };
            log.line("info", Some("base"), format!("FROM image {image}"));
            let layers = st.backend.templates().layers().clone();
            let progress_log = log.clone();
            let progress = move |l: &str| progress_log.line("info", Some("base"), l.to_string());
            let pulled = soulbox_image::pull(&layers, image, &opts, &progress)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let mut stack = pulled.layers.clone();
            stack.push(conventions_layer(&layers, &stack).await.map_err(fail)?);
            let c = pulled.config;
            Ok(Image {
                layers: stack,
                env: c.env,
                user: c.user.filter(|u| !u.is_empty()),
                workdir: c.workdir.filter(|w| !w.is_empty()),
                ..Default::default()
            })
        }
        (Some(_), Some(_)) => Err(fail("give fromTemplate or fromImage, not both".into())),
        (None, None) => Err(fail("a base is required: fromTemplate or fromImage".into())),
    }
}

/// What a sandbox needs of a root that an image may lack, as a small layer on top of it:
/// `/tmp` (1777), the mount points, the host's resolver configuration and a hostname. No user
/// is added: an image's processes run as its config's user, or root.
async fn conventions_layer(layers: &LayerStore, below: &[LayerId]) -> Result<LayerId, String> {
    let parent = below.last().cloned();
    let id = LayerId::derive(parent.as_ref(), "soulbox image conventions 1");
    let (layers, below) = (layers.clone(), below.to_vec());
    blocking(move || {
        layers
            .create(
                &id,
                parent.as_ref(),
                "SoulBox: /tmp, mount points, resolv.conf",
                false,
                |root| {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = |p: &Path, m: u32| {
                        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m))
                    };
                    for (d, m) in [
                        ("tmp", 0o1777),
                        ("proc", 0o555),
                        ("sys", 0o555),
                        ("dev", 0o755),
                        ("etc", 0o755),
                    ] {
                        if lookup(&layers, &below, &Path::new("/").join(d)).is_none() {
                            let p = root.join(d);
                            std::fs::create_dir(&p)
                                .and_then(|()| mode(&p, m))
                                .map_err(|e| e.to_string())?;
                        }
                    }
                    let etc = root.join("etc");
                    if !etc.exists() {
                        make_dirs(&layers, &below, root, Path::new("/etc"), None)?;
                    }
                    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
                    for (f, body) in [("resolv.conf", resolv), ("hostname", b"sandbox\n".to_vec())]
                    {
                        let p = etc.join(f);
                        std::fs::write(&p, body)
                            .and_then(|()| mode(&p, 0o644))
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                },
            )
            .map(|_| id)
            .map_err(|e| e.to_string())
    })
    .await
}

/// Runs a RUN step in a build sandbox and keeps its writable layer as layer `id`.
#[allow(clippy::too_many_arguments)]
async fn run_step(
    st: &AppState,
    t: &TemplateRecord,
    b: &BuildRecord,
    image: &Image,
    id: &LayerId,
    cmd: &str,
    user: &str,
    force: bool,
    label: &str,
    log: &Log,
) -> Result<(), String> {
    let layers = st.backend.templates().layers().clone();
    let stack = layers.stack(&image.layers).map_err(|e| e.to_string())?;
    let token = soulbox_runtime::ns::new_token();
    let spec = SandboxSpec {
        template: format!("build:{}", t.name),
        label: LABEL_BUILD.into(),
        limits: Limits {
            cpu_millis: (b.cpu_count.max(1) as u64) * 1000,
            memory_bytes: (b.memory_mb.max(128) as u64) << 20,
            disk_bytes: st.cfg.build_disk_mb.max(64) << 20,
            ..Limits::default()
        },
        internet: true,
        egress: None,
        env_vars: image.env.iter().cloned().collect(),
        access_token: Some(token.clone()),
        rootfs: Some(Rootfs {
            layers: stack,
            user: None,
            workdir: None,
            memory: None,
        }),
        writable_layer: Some(soulbox_runtime::ns::WritableLayer::Ext4),
    };
    let info = st
        .backend
        .create(spec)
        .await
        .map_err(|e| format!("starting the build sandbox: {e}"))?;
    // A build that is cancelled (its timeout) or fails takes its sandbox with it.
    let mut guard = KillOnDrop {
        backend: Arc::clone(&st.backend),
        id: Some(info.id.clone()),
    };
    let result = async {
        let mut c = AgentClient::connect(&info.socket, Some(token))
            .await
            .map_err(|e| e.to_string())?;
        let mut lines = Lines::new(log.clone(), label.to_string());
        let code = c
            .run_live(
                soulbox_protocol::process::ProcessConfig {
                    cmd: "/bin/sh".into(),
                    args: vec!["-c".into(), cmd.into()],
                    envs: Default::default(),
                    cwd: image.workdir.clone(),
                },
                Some(user),
                &mut |err, data| lines.push(err, data),
            )
            .await
            .map_err(|e| format!("running the step: {e}"))?;
        lines.flush();
        if code != 0 {
            return Err(format!("'{cmd}' exited with {code}"));
        }
        Ok(())
    }
    .await;
    guard.id = None;
    if let Err(e) = result {
        let _ = st.backend.kill(&info.id).await;
        return Err(e);
    }
    let (backend, sid, id2, parent) = (
        Arc::clone(&st.backend),
        info.id.clone(),
        id.clone(),
        image.layers.last().cloned(),
    );
    let made_by = format!("RUN {cmd}");
    let made = blocking(move || {
        layers
            .create(&id2, parent.as_ref(), &made_by, force, |root| {
                backend
                    .commit_blocking(&sid, root)
                    .map_err(|e| e.to_string())
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    // The commit did not run if another build made the same layer meanwhile (the store found
    // it), or failed before it took the sandbox: the sandbox goes either way.
    if st.backend.get(&info.id).is_some() {
        let _ = st.backend.kill(&info.id).await;
    }
    made
}

/// Kills a build sandbox when dropped, unless disarmed (`id` taken).
pub(crate) struct KillOnDrop {
    pub(crate) backend: Arc<soulbox_runtime::ns::NsBackend>,
    pub(crate) id: Option<String>,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let backend = Arc::clone(&self.backend);
            tokio::spawn(async move {
                let _ = backend.kill(&id).await;
            });
        }
    }
}

/// Output split into lines for the build log.
struct Lines {
    log: Log,
    step: String,
    buf: [Vec<u8>; 2],
}

impl Lines {
    fn new(log: Log, step: String) -> Self {
        Lines {
            log,
            step,
            buf: [vec![], vec![]],
        }
    }

    fn push(&mut self, err: bool, data: &[u8]) {
        let b = &mut self.buf[err as usize];
        b.extend_from_slice(data);
        while let Some(n) = b.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = b.drain(..=n).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.log
                .line(if err { "warn" } else { "info" }, Some(&self.step), text);
        }
        // A line without an end (a progress bar) is shown once it is long.
        if b.len() > 4096 {
            let text = String::from_utf8_lossy(b).into_owned();
            b.clear();
            self.log.line("info", Some(&self.step), text);
        }
    }

    fn flush(&mut self) {
        for err in [false, true] {
            let b = std::mem::take(&mut self.buf[err as usize]);
            if !b.is_empty() {
                self.log.line(
                    "info",
                    Some(&self.step),
                    String::from_utf8_lossy(&b).into_owned(),
                );
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Looks a path up through a stack of layers (topmost wins; a whiteout hides it).
fn lookup(layers: &LayerStore, stack: &[LayerId], path: &Path) -> Option<std::fs::Metadata> {
    use std::os::unix::fs::FileTypeExt;
    let rel = path.strip_prefix("/").unwrap_or(path);
    for id in stack.iter().rev() {
        if let Ok(m) = std::fs::symlink_metadata(layers.root(id).join(rel)) {
            if m.file_type().is_char_device() && m.rdev() == 0 {
                return None;
            }
            return Some(m);
        }
    }
    None
}

/// Makes `dir` (absolute) and its parents in a new layer `root`, each with the owner and mode
/// it has in the layers below (so a COPY into `/home/user/app` leaves `/home/user` as it was),
/// new ones owned by `owner` (or root), 0755.
fn make_dirs(
    layers: &LayerStore,
    stack: &[LayerId],
    root: &Path,
    dir: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mut at = PathBuf::from("/");
    for c in dir.components().skip(1) {
        at.push(c);
        let here = root.join(at.strip_prefix("/").unwrap_or(&at));
        if here.exists() {
            continue;
        }
        let below = lookup(layers, stack, &at);
        if let Some(m) = &below {
            if !m.is_dir() {
                return Err(format!("{} is not a directory in the base", at.display()));
            }
        }
        std::fs::create_dir(&here).map_err(|e| format!("{}: {e}", at.display()))?;
        let (uid, gid, mode) = match below {
            Some(m) => (m.uid(), m.gid(), m.mode() & 0o7777),
            None => {
                let (u, g) = owner.unwrap_or((0, 0));
                (u, g, 0o755)
            }
        };
        std::os::unix::fs::lchown(&here, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&here, std::fs::Permissions::from_mode(mode))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `user[:group]` (names or numbers) as ids, read from the stack's /etc/passwd and group.
fn resolve_owner(layers: &LayerStore, stack: &[LayerId], spec: &str) -> Result<(u32, u32), String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |file: &str| -> String {
        stack
            .iter()
            .rev()
            .find_map(|id| std::fs::read_to_string(layers.root(id).join(file)).ok())
            .unwrap_or_default()
    };
    let find = |text: &str, name: &str, field: usize| -> Option<u32> {
        text.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
            .and_then(|f| f.get(field).and_then(|v| v.parse().ok()))
    };
    let passwd = read("etc/passwd");
    let uid = u
        .parse()
        .ok()
        .or_else(|| find(&passwd, u, 2))
        .ok_or_else(|| format!("user '{u}' does not exist in the template"))?;
    let gid = match g {
        Some(g) => g
            .parse()
            .ok()
            .or_else(|| find(&read("etc/group"), g, 2))
            .ok_or_else(|| format!("group '{g}' does not exist in the template"))?,
        None => find(&passwd, u, 3).unwrap_or(uid),
    };
    Ok((uid, gid))
}
