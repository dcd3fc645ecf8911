//! Uploads a local file into a new sandbox, runs a command on it, downloads the result.
//!
//! `SOULBOX_URL=http://127.0.0.1:3000 SOULBOX_API_KEY=… cargo run -p soulbox-client --example upload_and_run -- ./input.txt`

use soulbox_client::{Client, CreateOptions};

#[tokio::main]
async fn main() -> soulbox_client::Result<()> {
    let input = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/etc/os-release".into());
    let client = Client::from_env()?;
    let sbx = client
        .create(&CreateOptions::new("base").timeout(120))
        .await?;
    println!("sandbox {}", sbx.id());

    // Streamed from disk: the file is never read into memory whole.
    let file = tokio::fs::File::open(&input).await?;
    sbx.files().upload("/home/user/input.txt", file).await?;

    let out = sbx
        .commands()
        .run("sort /home/user/input.txt | uniq -c | sort -rn > /home/user/counts.txt && wc -l < /home/user/counts.txt")
        .await?;
    println!(
        "{} distinct lines (exit {})",
        out.stdout_lossy().trim(),
        out.exit.code
    );

    let mut local = tokio::fs::File::create("counts.txt").await?;
    let n = sbx
        .files()
        .download("/home/user/counts.txt")
        .await?
        .copy_to(&mut local)
        .await?;
    println!("downloaded {n} bytes to counts.txt");

    sbx.kill().await
}
