//! A full disk: writes answer 507 with nothing written, reads go on, nothing acknowledged is
//! lost, and writes work again once space is back. The data directory is a small tmpfs
//! (needs root to mount; skipped loudly otherwise, failed under AIGENTABLE_REQUIRE_MOUNT=1).

use crate::common::*;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Option<Tmpfs> {
    let ok = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some(Tmpfs(dir.to_path_buf()));
    }
    let why = "cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)";
    if std::env::var("AIGENTABLE_REQUIRE_MOUNT").is_ok_and(|v| v == "1") {
        panic!("{why}");
    }
    eprintln!("SKIPPED disk::disk_full_answers_507_and_recovers: {why}");
    None
}

/// Fills the filesystem until it refuses more; the filler file's path.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler.bin");
    let mut f = std::fs::File::create(&p).expect("filler");
    let chunk = vec![7u8; 256 * 1024];
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    // Small writes to take the last bytes.
    let small = [7u8; 4096];
    while f.write_all(&small).is_ok() {}
    drop(f);
    p
}

#[tokio::test]
async fn disk_full_answers_507_and_recovers() {
    let dir = Arc::new(tempfile::tempdir().expect("tmp"));
    let Some(_mount) = mount_tmpfs(dir.path(), "48m") else {
        return;
    };
    let s = start_in(dir.clone(), |c| c.disk_reserve_mb = 2).await;
    let a = s.register("owner@disk.test", "Disk Co").await;
    let agent = create_agent(&s, &a, json!({"name": "Bot"})).await;
    let c = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"agentId": id(&agent)}),
        )
        .await;
    c.expect(201);
    let conv = id(&c.body);
    let post = |text: String| {
        let (s, token, conv) = (&s, a.token.clone(), conv.clone());
        async move {
            s.post(
                &format!("/api/conversations/{conv}/messages"),
                Some(&token),
                json!({"content": text, "role": "human"}),
            )
            .await
        }
    };
    let mut acked = Vec::new();
    for i in 0..5 {
        let r = post(format!("before {i}")).await;
        r.expect(201);
        acked.push(id(&r.body["message"]));
    }

    // 1. The disk fills up (below the reserve): writes are refused before the store sees
    // it, reads go on.
    let filler = fill(dir.path());
    let r = post("while full".into()).await;
    r.expect_err(507, "insufficient_storage");
    let r = upload(
        &s,
        &a.token,
        &[("a.txt", "text/plain", b"some words".to_vec())],
        None,
    )
    .await;
    r.expect_err(507, "insufficient_storage");
    let r = s
        .post("/api/agents", Some(&a.token), json!({"name": "Another"}))
        .await;
    r.expect_err(507, "insufficient_storage");
    let msgs = s
        .get(
            &format!("/api/conversations/{conv}/messages?limit=100"),
            &a.token,
        )
        .await;
    msgs.expect(200);
    for m in &acked {
        assert!(msgs.text.contains(m.as_str()), "acknowledged {m} kept");
    }
    assert!(!msgs.text.contains("while full"), "nothing half-written");
    s.get("/api/agents", &a.token).await.expect(200);

    // Space comes back: writes work again, without a restart.
    std::fs::remove_file(&filler).expect("free");
    let r = post("after".into()).await;
    r.expect(201);
    acked.push(id(&r.body["message"]));
    upload_doc(
        &s,
        &a.token,
        "b.txt",
        "text/plain",
        b"words after the disk was full",
        None,
    )
    .await;

    // 2. Without a reserve, the store itself meets the full disk in a commit: the request
    // still gets 507, the database is reopened, and nothing acknowledged is lost.
    s.svc.store.set_disk_reserve(0);
    let filler = fill(dir.path());
    let mut refused = 0;
    for i in 0..20 {
        let r = post(format!("squeezed {i} {}", "x".repeat(30_000))).await;
        match r.status.as_u16() {
            201 => acked.push(id(&r.body["message"])),
            507 => {
                assert_eq!(r.code(), "insufficient_storage", "{}", r.text);
                refused += 1;
            }
            503 => assert_eq!(r.code(), "storage_unavailable", "{}", r.text),
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert!(refused > 0, "a full disk was met");
    std::fs::remove_file(&filler).expect("free");
    let r = post("recovered".into()).await;
    r.expect(201);
    acked.push(id(&r.body["message"]));
    let msgs = s
        .get(
            &format!("/api/conversations/{conv}/messages?limit=100"),
            &a.token,
        )
        .await;
    msgs.expect(200);
    for m in &acked {
        assert!(msgs.text.contains(m.as_str()), "acknowledged {m} kept");
    }
    s.stop().await;

    // And after a restart on the same directory, every acknowledged message is there.
    let s = start_in(dir.clone(), |c| c.disk_reserve_mb = 2).await;
    let b = s.login("owner@disk.test", "password-123").await;
    let msgs = s
        .get(
            &format!("/api/conversations/{conv}/messages?limit=100"),
            &b.token,
        )
        .await;
    msgs.expect(200);
    for m in &acked {
        assert!(
            msgs.text.contains(m.as_str()),
            "acknowledged {m} kept after restart"
        );
    }
    s.stop().await;
}
