//! `soulbox files ls|cat|cp|rm|mkdir`: files in a sandbox. `cp` goes either way
//! (`ID:/path` names the sandbox side), recursively for directories with `-r`, streamed, with
//! a progress bar for large transfers.

use super::remote::{about_sandbox, print_json, table, RemoteArgs};
use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use soulbox_client::{Client, FileType, Sandbox};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

#[derive(Args, Debug)]
pub struct FilesArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    cmd: FilesCmd,
}

#[derive(Subcommand, Debug)]
enum FilesCmd {
    /// List a directory.
    Ls {
        id: String,
        #[arg(default_value = "/home/user")]
        path: String,
        /// Levels to descend.
        #[arg(long, default_value_t = 1)]
        depth: u32,
    },
    /// Print a file.
    Cat { id: String, path: String },
    /// Copy between here and a sandbox: `cp ./data ID:/home/user/` or `cp ID:/tmp/out.csv .`
    Cp {
        source: String,
        destination: String,
        /// Copy directories and everything in them.
        #[arg(long, short = 'r')]
        recursive: bool,
    },
    /// Remove a file or a directory (with everything in it).
    Rm { id: String, path: String },
    /// Create a directory (and its parents).
    Mkdir { id: String, path: String },
}

/// Transfers at least this large get a progress bar.
const PROGRESS_FROM: u64 = 8 << 20;

pub async fn run(a: FilesArgs) -> anyhow::Result<()> {
    let client = a.remote.client()?;
    let json = a.remote.json;
    match a.cmd {
        FilesCmd::Ls { id, path, depth } => {
            let sbx = open(&client, &id).await?;
            let entries = sbx.files().list(&path, depth).await?;
            if json {
                return print_json(&entries);
            }
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    vec![
                        e.permissions.clone(),
                        e.owner.clone(),
                        e.size.to_string(),
                        e.modified_time.clone(),
                        match e.file_type {
                            FileType::Directory => format!("{}/", e.path),
                            _ => match &e.symlink_target {
                                Some(t) => format!("{} -> {t}", e.path),
                                None => e.path.clone(),
                            },
                        },
                    ]
                })
                .collect();
            table(&["MODE", "OWNER", "SIZE", "MODIFIED", "PATH"], &rows);
        }
        FilesCmd::Cat { id, path } => {
            let sbx = open(&client, &id).await?;
            let mut out = tokio::io::stdout();
            sbx.files().download(&path).await?.copy_to(&mut out).await?;
        }
        FilesCmd::Rm { id, path } => {
            open(&client, &id).await?.files().remove(&path).await?;
        }
        FilesCmd::Mkdir { id, path } => {
            open(&client, &id).await?.files().make_dir(&path).await?;
        }
        FilesCmd::Cp {
            source,
            destination,
            recursive,
        } => match (remote(&source), remote(&destination)) {
            (None, Some((id, dst))) => {
                let sbx = open(&client, id).await?;
                upload(&sbx, Path::new(&source), dst, recursive).await?;
            }
            (Some((id, src)), None) => {
                let sbx = open(&client, id).await?;
                download(&sbx, src, Path::new(&destination), recursive).await?;
            }
            (Some(_), Some(_)) => bail!("copy between two sandboxes is not supported: copy here first"),
            (None, None) => bail!("one side must be in a sandbox, written ID:/path (e.g. `soulbox files cp ./data.csv ID:/home/user/`)"),
        },
    }
    Ok(())
}

/// `ID:/path` → (ID, /path). A local path with a colon can be written `./a:b`.
fn remote(arg: &str) -> Option<(&str, &str)> {
    let (id, path) = arg.split_once(':')?;
    (!id.is_empty() && !id.contains('/') && !path.is_empty()).then_some((id, path))
}

async fn open(client: &Client, id: &str) -> anyhow::Result<Sandbox> {
    client.sandbox(id).await.map_err(|e| about_sandbox(id, e))
}

fn basename(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or(p)
}

fn bar(total: u64, what: &str) -> ProgressBar {
    if total < PROGRESS_FROM {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Counts bytes read into a progress bar.
struct Counted<R> {
    inner: R,
    pb: ProgressBar,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.pb.inc((buf.filled().len() - before) as u64);
        r
    }
}

async fn upload(sbx: &Sandbox, src: &Path, dst: &str, recursive: bool) -> anyhow::Result<()> {
    let meta = std::fs::metadata(src).with_context(|| format!("{}", src.display()))?;
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Into an existing directory (or one named with a trailing slash): keep the name.
    let into_dir = dst.ends_with('/')
        || sbx
            .files()
            .stat(dst)
            .await
            .is_ok_and(|e| e.file_type == FileType::Directory);
    let target = if into_dir && !name.is_empty() {
        format!("{}/{name}", dst.trim_end_matches('/'))
    } else {
        dst.to_string()
    };
    if meta.is_file() {
        let pb = bar(meta.len(), &name);
        let file = tokio::fs::File::open(src).await?;
        sbx.files()
            .upload(
                &target,
                Counted {
                    inner: file,
                    pb: pb.clone(),
                },
            )
            .await?;
        pb.finish_and_clear();
        return Ok(());
    }
    if !meta.is_dir() {
        bail!("{}: not a file or a directory", src.display());
    }
    if !recursive {
        bail!(
            "{} is a directory: use -r to copy it and everything in it",
            src.display()
        );
    }
    let mut files = Vec::new();
    let mut total = 0;
    sbx.files().make_dir(&target).await?;
    for entry in walkdir::WalkDir::new(src).min_depth(1).sort_by_file_name() {
        let entry = entry?;
        let rel = entry
            .path()
            .strip_prefix(src)?
            .to_string_lossy()
            .into_owned();
        let remote_path = format!("{}/{rel}", target.trim_end_matches('/'));
        let ft = entry.file_type();
        if ft.is_dir() {
            sbx.files().make_dir(&remote_path).await?;
        } else if ft.is_file() {
            total += entry.metadata()?.len();
            files.push((entry.path().to_path_buf(), remote_path));
        } else {
            eprintln!("skipping {} (not a regular file)", entry.path().display());
        }
    }
    let pb = bar(total, &name);
    for (local, remote_path) in files {
        let file = tokio::fs::File::open(&local)
            .await
            .with_context(|| format!("{}", local.display()))?;
        sbx.files()
            .upload(
                &remote_path,
                Counted {
                    inner: file,
                    pb: pb.clone(),
                },
            )
            .await?;
    }
    pb.finish_and_clear();
    Ok(())
}

async fn download(sbx: &Sandbox, src: &str, dst: &Path, recursive: bool) -> anyhow::Result<()> {
    let entry = sbx.files().stat(src).await?;
    let target: PathBuf = if dst.is_dir() {
        dst.join(basename(src))
    } else {
        dst.to_path_buf()
    };
    if entry.file_type != FileType::Directory {
        let pb = bar(entry.size.max(0) as u64, basename(src));
        fetch(sbx, src, &target, &pb).await?;
        pb.finish_and_clear();
        return Ok(());
    }
    if !recursive {
        bail!("{src} is a directory: use -r to copy it and everything in it");
    }
    std::fs::create_dir_all(&target).with_context(|| format!("{}", target.display()))?;
    let entries = sbx.files().list(src, 64).await?;
    let total = entries
        .iter()
        .filter(|e| e.file_type == FileType::File)
        .map(|e| e.size.max(0) as u64)
        .sum();
    let pb = bar(total, basename(src));
    let root = src.trim_end_matches('/');
    for e in entries {
        let Some(rel) = e.path.strip_prefix(root).map(|r| r.trim_start_matches('/')) else {
            continue;
        };
        let local = target.join(rel);
        match e.file_type {
            FileType::Directory => {
                std::fs::create_dir_all(&local).with_context(|| format!("{}", local.display()))?
            }
            FileType::File => {
                if let Some(parent) = local.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                fetch(sbx, &e.path, &local, &pb).await?;
            }
            _ => eprintln!("skipping {} (not a regular file)", e.path),
        }
    }
    pb.finish_and_clear();
    Ok(())
}

/// Streams one file to disk, counting into `pb`.
async fn fetch(sbx: &Sandbox, src: &str, dst: &Path, pb: &ProgressBar) -> anyhow::Result<()> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut dl = sbx.files().download(src).await?;
    let mut out = tokio::fs::File::create(dst)
        .await
        .with_context(|| format!("{}", dst.display()))?;
    while let Some(chunk) = dl.stream.next().await {
        let chunk = chunk?;
        out.write_all(&chunk).await?;
        pb.inc(chunk.len() as u64);
    }
    out.flush().await?;
    Ok(())
}
