//! The Rust SDK (`soulbox-client`) against a real `soulbox serve` and real sandboxes.

mod common;

use soulbox_client::{
    Client, CommandEvent, CommandOptions, Config, CreateOptions, Error, EventType, FileType,
    ListOptions, PtyEvent, PtyOptions, Sandbox, Signal,
};
use std::time::Duration;

fn client() -> Client {
    Client::new(Config {
        url: format!("http://{}", common::serve()),
        api_key: common::KEY.into(),
    })
    .unwrap()
}

async fn sandbox() -> Sandbox {
    client()
        .create(&CreateOptions::new("tiny").timeout(120))
        .await
        .expect("sandbox created")
}

#[tokio::test]
async fn sandboxes_lifecycle_and_typed_errors() {
    let c = client();
    let sbx = c
        .create(
            &CreateOptions::new("tiny")
                .timeout(60)
                .env("GREETING", "hi")
                .metadata("suite", "client-lifecycle"),
        )
        .await
        .unwrap();
    let mut filter = ListOptions::default();
    filter
        .metadata
        .insert("suite".into(), "client-lifecycle".into());
    let listed = c.list(&filter).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sandbox_id, sbx.id());
    assert_eq!(listed[0].state, "running");
    assert_eq!(
        sbx.commands()
            .run("echo $GREETING")
            .await
            .unwrap()
            .stdout_lossy(),
        "hi\n"
    );

    sbx.set_timeout(600).await.unwrap();
    let end = c.info(sbx.id()).await.unwrap().end_at;
    assert!(end > listed[0].end_at, "{end} after {}", listed[0].end_at);

    sbx.files()
        .write("/tmp/kept", "across pause")
        .await
        .unwrap();
    sbx.pause().await.unwrap();
    assert_eq!(c.info(sbx.id()).await.unwrap().state, "paused");
    assert!(matches!(sbx.pause().await, Err(Error::Conflict(_))));
    let resumed = c.resume(sbx.id(), Some(60)).await.unwrap();
    assert_eq!(
        &resumed.files().read("/tmp/kept").await.unwrap()[..],
        b"across pause"
    );

    sbx.kill().await.unwrap();
    assert!(c.info(sbx.id()).await.unwrap_err().is_not_found());
    assert!(c.kill(sbx.id()).await.unwrap_err().is_not_found());
    // The data plane of a killed sandbox: not found, typed.
    assert!(sbx.commands().run("true").await.unwrap_err().is_not_found());

    let bad = Client::new(Config {
        url: c.url().into(),
        api_key: "e2b_not_a_key".into(),
    })
    .unwrap();
    assert!(matches!(
        bad.list(&ListOptions::default()).await,
        Err(Error::Unauthorized(_))
    ));
    let nowhere = Client::new(Config {
        url: "http://127.0.0.1:9".into(),
        api_key: common::KEY.into(),
    })
    .unwrap();
    let e = nowhere.list(&ListOptions::default()).await.unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("soulbox serve"), "{e}");
    assert!(matches!(
        c.create(&CreateOptions::new("no-such-template")).await,
        Err(Error::BadRequest(_) | Error::NotFound(_))
    ));
}

#[tokio::test]
async fn commands_run_stream_take_stdin_and_signals() {
    let sbx = sandbox().await;
    let out = sbx
        .commands()
        .run("echo out; echo err >&2; exit 7")
        .await
        .unwrap();
    assert_eq!(
        (out.stdout_lossy().as_str(), out.stderr_lossy().as_str()),
        ("out\n", "err\n")
    );
    assert_eq!(out.exit.code, 7);
    assert!(!out.exit.success());

    // Output streams as produced: the first line arrives while the command still runs.
    let mut h = sbx
        .commands()
        .spawn(CommandOptions::new("echo first; sleep 30; echo never"))
        .await
        .unwrap();
    assert_eq!(
        h.next().await.unwrap().unwrap(),
        CommandEvent::Stdout(b"first\n".to_vec())
    );
    let listed = sbx.commands().list().await.unwrap();
    assert!(listed.iter().any(|p| p.pid == h.pid()));
    // A second client attaches to the same process.
    let attached = sbx.commands().connect(h.pid()).await.unwrap();
    h.signal(Signal::Sigkill).await.unwrap();
    let out = h.wait().await.unwrap();
    assert_eq!(out.exit.code, -1);
    assert!(out.exit.status.contains("killed"), "{:?}", out.exit);
    assert!(attached
        .wait()
        .await
        .unwrap()
        .exit
        .status
        .contains("killed"));

    let h = sbx
        .commands()
        .spawn(CommandOptions::exec("/usr/bin/tr", ["a-z", "A-Z"]).stdin(true))
        .await
        .unwrap();
    h.send_stdin(b"shout\n").await.unwrap();
    h.close_stdin().await.unwrap();
    assert_eq!(h.wait().await.unwrap().stdout_lossy(), "SHOUT\n");

    let out = sbx
        .commands()
        .spawn(
            CommandOptions::new("pwd; echo $X; sleep 30")
                .cwd("/tmp")
                .env("X", "y")
                .timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(out.stdout_lossy(), "/tmp\ny\n");
    assert!(!out.exit.success(), "the timeout ended it: {:?}", out.exit);

    let e = sbx.commands().connect(999_999).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    let root = sbx.as_user("root").commands().run("id -u").await.unwrap();
    assert_eq!(root.stdout_lossy(), "0\n");
    sbx.kill().await.unwrap();
}

#[tokio::test]
async fn a_pty_takes_keys_and_resizes() {
    let sbx = sandbox().await;
    let mut pty = sbx.pty().create(PtyOptions::new(80, 24)).await.unwrap();
    let mut screen = String::new();
    let read_until = async |pty: &mut soulbox_client::PtyHandle,
                            screen: &mut String,
                            want: &str| {
        while !screen.contains(want) {
            match tokio::time::timeout(Duration::from_secs(10), pty.next()).await {
                Ok(Some(Ok(PtyEvent::Output(b)))) => screen.push_str(&String::from_utf8_lossy(&b)),
                other => panic!("waiting for {want:?}: {other:?}; screen: {screen}"),
            }
        }
    };
    pty.send_input(b"stty size; echo $((6*7))-$TERM\n")
        .await
        .unwrap();
    read_until(&mut pty, &mut screen, "42-xterm-256color").await;
    assert!(screen.contains("24 80"), "{screen}");
    pty.resize(132, 40).await.unwrap();
    pty.send_input(b"stty size\n").await.unwrap();
    read_until(&mut pty, &mut screen, "40 132").await;
    pty.send_input(b"exit 3\n").await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), pty.next())
            .await
            .unwrap()
        {
            Some(Ok(PtyEvent::Exit(e))) => {
                assert_eq!(e.code, 3);
                break;
            }
            Some(Ok(PtyEvent::Output(_))) => continue,
            other => panic!("{other:?}"),
        }
    }
    sbx.kill().await.unwrap();
}

#[tokio::test]
async fn files_whole_streamed_listed_and_watched() {
    let sbx = sandbox().await;
    let f = sbx.files();
    f.write("/home/user/a/b/hello.txt", "hello").await.unwrap();
    assert_eq!(
        &f.read("/home/user/a/b/hello.txt").await.unwrap()[..],
        b"hello"
    );
    let st = f.stat("/home/user/a/b/hello.txt").await.unwrap();
    assert_eq!(
        (st.file_type, st.size, st.owner.as_str()),
        (FileType::File, 5, "user")
    );
    assert!(f.exists("/home/user/a").await.unwrap());
    assert!(!f.exists("/home/user/nope").await.unwrap());
    assert!(f.make_dir("/home/user/new/deep").await.unwrap());
    assert!(!f.make_dir("/home/user/new/deep").await.unwrap());
    let names: Vec<String> = f
        .list("/home/user/a", 2)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(names, ["/home/user/a/b", "/home/user/a/b/hello.txt"]);
    let moved = f
        .rename("/home/user/a/b/hello.txt", "/home/user/moved.txt")
        .await
        .unwrap();
    assert_eq!(moved.path, "/home/user/moved.txt");
    f.remove("/home/user/a").await.unwrap();
    assert!(!f.exists("/home/user/a").await.unwrap());
    assert!(f
        .read("/home/user/a/b/hello.txt")
        .await
        .unwrap_err()
        .is_not_found());
    let e = f.write("/etc/passwd", "no").await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    let e = f.remove("/etc/hostname").await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");

    // Watching: the watch is in place when `watch` returns.
    let mut w = f.watch("/home/user/new", false).await.unwrap();
    f.write("/home/user/new/seen.txt", "x").await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.name, "seen.txt");
    assert!(matches!(
        ev.event_type,
        EventType::Create | EventType::Write
    ));

    // Streamed both ways: 64 MiB through a pipe that is never whole in memory.
    let (mut tx, rx) = tokio::io::duplex(1 << 16);
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let block: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        for _ in 0..64 {
            tx.write_all(&block).await.unwrap();
        }
    });
    f.upload("/home/user/big.bin", rx).await.unwrap();
    writer.await.unwrap();
    let dl = f.download("/home/user/big.bin").await.unwrap();
    assert_eq!(dl.len, Some(64 << 20));
    let mut sink = Checksum::default();
    assert_eq!(dl.copy_to(&mut sink).await.unwrap(), 64 << 20);
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let mut want = Checksum::default();
    for _ in 0..64 {
        want.add(&block);
    }
    assert_eq!(sink.0, want.0);
    sbx.kill().await.unwrap();
}

/// An order-sensitive running checksum, as an `AsyncWrite` sink.
#[derive(Default)]
struct Checksum(u64);

impl Checksum {
    fn add(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = self.0.wrapping_mul(1_000_003).wrapping_add(x as u64);
        }
    }
}

impl tokio::io::AsyncWrite for Checksum {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.add(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
