//! Typed async Rust SDK for SoulBox sandboxes.
//!
//! It speaks the same HTTP API as the E2B SDKs: the REST control plane for sandboxes, and the
//! sandbox agent's protocol (Connect RPC and `/files`) through the server's proxy. Everything
//! is async on tokio; large files stream in both directions and are never held in memory.
//!
//! ```no_run
//! use soulbox_client::{Client, CreateOptions, CommandOptions};
//!
//! # async fn demo() -> soulbox_client::Result<()> {
//! // SOULBOX_URL (default http://127.0.0.1:3000) and SOULBOX_API_KEY.
//! let client = Client::from_env()?;
//! let sbx = client.create(&CreateOptions::new("base").timeout(600)).await?;
//!
//! let out = sbx.commands().run("echo hello from $(hostname)").await?;
//! assert!(out.exit.success());
//! println!("{}", out.stdout_lossy());
//!
//! sbx.files().write("/home/user/data.csv", "a,b\n1,2\n").await?;
//! let listed = sbx.files().list("/home/user", 1).await?;
//! println!("{} entries", listed.len());
//!
//! // A background command, streamed.
//! let mut cmd = sbx
//!     .commands()
//!     .spawn(CommandOptions::new("for i in 1 2 3; do echo $i; sleep 0.1; done"))
//!     .await?;
//! while let Some(event) = cmd.next().await {
//!     println!("{:?}", event?);
//! }
//! sbx.kill().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Errors are [`Error`]s: [`Error::Unreachable`] when no server answers,
//! [`Error::Unauthorized`] for a bad key, [`Error::NotFound`] for an unknown sandbox, file or
//! process, and so on; each message says what to do next.

mod client;
mod commands;
mod error;
mod files;
mod metrics;
mod pty;
mod sandbox;
mod templates;

pub use client::{Client, Config, CreateOptions, ListOptions, SandboxInfo};
pub use commands::{
    CommandEvent, CommandHandle, CommandOptions, CommandOutput, Commands, ExitStatus,
};
pub use error::{Error, Result};
pub use files::{Download, EntryInfo, EventType, FileType, Files, WatchHandle};
pub use metrics::{MetricStream, SandboxMetric};
pub use pty::{Pty, PtyEvent, PtyHandle, PtyInput, PtyOptions};
pub use sandbox::Sandbox;
pub use soulbox_protocol::filesystem::FilesystemEvent;
pub use soulbox_protocol::process::{ProcessInfo, Signal};
pub use templates::{BuildTicket, FileLink};
