//! A full disk: writes answer 507 with nothing written, reads go on, nothing acknowledged is
//! lost, and writes work again once space is back. The data directory is a small tmpfs.
//! A read-only disk: the data directory is an ext4 image on a loop device that an error
//! turns read-only under the running server (`errors=remount-ro`) in the middle of a commit;
//! writes answer 503, reads go on (from a read-only view of the store), and after a repair and
//! a restart everything acknowledged is there. A full disk under the keyword index only: a
//! delete the store commits answers as done and the index catches up once it can be written,
//! also for a document deleted while it was processing.
//! All need root to mount; skipped loudly otherwise, failed under AIGENTABLE_REQUIRE_MOUNT=1.

use crate::common::*;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// The conversation's messages (its first 100), checked to hold every acknowledged one
/// (`what` ends the failure message: "kept", "readable", ...).
async fn messages_kept(s: &Server, token: &str, conv: &str, acked: &[String], what: &str) -> Resp {
    let msgs = s
        .get(
            &format!("/api/conversations/{conv}/messages?limit=100"),
            token,
        )
        .await;
    msgs.expect(200);
    for m in acked {
        assert!(msgs.text.contains(m.as_str()), "acknowledged {m} {what}");
    }
    msgs
}

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(test: &str, dir: &Path, size: &str) -> Option<Tmpfs> {
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
    skip(
        test,
        "cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)",
    );
    None
}

/// Says loudly why a test does not run; fails it under AIGENTABLE_REQUIRE_MOUNT=1.
fn skip(test: &str, why: &str) {
    if std::env::var("AIGENTABLE_REQUIRE_MOUNT").is_ok_and(|v| v == "1") {
        panic!("{test}: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
}

fn run(cmd: &mut Command) -> Result<String, String> {
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Ok(o) => Err(format!(
            "{cmd:?}: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{cmd:?}: {e}")),
    }
}

/// An ext4 image on a loop device, mounted with `errors=remount-ro` on `dir`. Dropping it
/// unmounts (lazily, should something still hold a file) and frees the loop device.
struct LoopExt4 {
    img: PathBuf,
    dir: PathBuf,
    /// `/dev/loopN` while mounted.
    dev: Option<String>,
}

impl LoopExt4 {
    /// Makes a `size` image in `img_dir` and mounts it on `dir`.
    fn create(img_dir: &Path, dir: &Path, size: &str) -> Result<LoopExt4, String> {
        let img = img_dir.join("data.ext4");
        run(Command::new("truncate").args(["-s", size]).arg(&img))?;
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img))?;
        let mut l = LoopExt4 {
            img,
            dir: dir.to_path_buf(),
            dev: None,
        };
        l.mount()?;
        Ok(l)
    }

    fn mount(&mut self) -> Result<(), String> {
        run(Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(&self.img)
            .arg(&self.dir))?;
        let dev = run(Command::new("findmnt")
            .args(["-no", "SOURCE"])
            .arg(&self.dir))?;
        self.dev = Some(dev);
        let _ = run(Command::new("chmod").arg("0700").arg(&self.dir));
        Ok(())
    }

    /// An ext4 error, as a failing disk would cause one: the filesystem turns read-only at
    /// once (its mount still says `rw`).
    fn fail(&self) {
        let dev = self.dev.as_deref().expect("mounted");
        let name = Path::new(dev).file_name().expect("loopN");
        let knob = Path::new("/sys/fs/ext4")
            .join(name)
            .join("trigger_fs_error");
        std::fs::write(&knob, b"test").unwrap_or_else(|e| panic!("{}: {e}", knob.display()));
    }

    /// Unmounts (every file must be closed), repairs, mounts again.
    fn remount_repaired(&mut self) {
        run(Command::new("umount").arg(&self.dir)).expect("umount: the server closed its files");
        self.detach();
        // 0: clean, 1: errors fixed; above: not repairable.
        let st = Command::new("e2fsck")
            .arg("-fy")
            .arg(&self.img)
            .output()
            .expect("e2fsck");
        assert!(
            matches!(st.status.code(), Some(0 | 1)),
            "e2fsck: {}",
            String::from_utf8_lossy(&st.stdout)
        );
        self.mount().expect("mount again");
    }

    /// Frees the loop device when the unmount did not already.
    fn detach(&mut self) {
        if let Some(dev) = self.dev.take() {
            let attached = run(Command::new("losetup").arg("-j").arg(&self.img))
                .is_ok_and(|o| o.contains(&dev));
            if attached {
                let _ = run(Command::new("losetup").arg("-d").arg(&dev));
            }
        }
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        if self.dev.is_some() {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        self.detach();
    }
}

#[tokio::test]
async fn read_only_data_directory_answers_503_and_keeps_everything() {
    const TEST: &str = "disk::read_only_data_directory_answers_503_and_keeps_everything";
    let dir = Arc::new(tempfile::tempdir().expect("tmp"));
    let img_dir = tempfile::tempdir().expect("tmp");
    if !Path::new("/sys/fs/ext4").is_dir() {
        skip(TEST, "no ext4 in this kernel (/sys/fs/ext4)");
        return;
    }
    let mut fs = match LoopExt4::create(img_dir.path(), dir.path(), "96M") {
        Ok(fs) => fs,
        Err(e) => {
            skip(
                TEST,
                &format!("cannot mount an ext4 image on a loop device (needs root): {e}"),
            );
            return;
        }
    };
    let s = start_in(dir.clone(), |c| c.disk_reserve_mb = 2).await;
    let a = s.register("owner@ro.test", "Read Only Co").await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let conv = start_conversation(&s, &a.token, &agent).await;
    let mut acked = Vec::new();
    for i in 0..5 {
        let r = s
            .post(
                &format!("/api/conversations/{conv}/messages"),
                Some(&a.token),
                json!({"content": format!("before {i}"), "role": "human"}),
            )
            .await;
        r.expect(201);
        acked.push(id(&r.body["message"]));
    }
    let doc = upload_doc(
        &s,
        &a.token,
        "ro.txt",
        "text/plain",
        b"The warehouse in Porto opens at seven.",
        None,
    )
    .await;
    // Processed, and its job ended, before the failure: the only commit the failure meets
    // is the one below.
    assert_eq!(wait_done(&s, &a.token, &doc).await["status"], "ready");
    let ten = aigentable::types::TenantId::parse(&a.tenant_id).expect("tenant");
    let jobs = s
        .svc
        .store
        .read(|tx| tx.scan::<aigentable::model::Job>(&ten, None, |_| true))
        .expect("jobs");
    for j in &jobs {
        bounded("a job", s.svc.jobs.finished(&ten, &j.id)).await;
    }
    let h = s.get("/api/health", &a.token).await;
    h.expect(200);
    assert_eq!(
        (&h.body["status"], &h.body["disk"]),
        (&json!("ok"), &json!("ok"))
    );

    // The filesystem fails and turns read-only under the running server, in the middle of a
    // commit (as a background job's could be): past the check for a read-only disk, before
    // redb writes. That commit is not acknowledged, and redb refuses its handle from then on.
    let store = s.svc.store.clone();
    let mid_commit = store.write(|tx| {
        tx.index_insert_new(aigentable::store::Index::WidgetKey, "mid-commit", "t/x")?;
        fs.fail();
        Ok::<_, aigentable::store::Error>(())
    });
    assert!(mid_commit.is_err(), "a commit on a read-only disk failed");
    let reopens = store.reopens();
    let r = s
        .post(
            &format!("/api/conversations/{conv}/messages"),
            Some(&a.token),
            json!({"content": "while read-only", "role": "human"}),
        )
        .await;
    r.expect_err(503, "storage_read_only");
    s.post("/api/agents", Some(&a.token), json!({"name": "Another"}))
        .await
        .expect_err(503, "storage_read_only");
    s.put(
        &format!("/api/agents/{agent}"),
        &a.token,
        json!({"name": "Bot", "description": "changed while read-only"}),
    )
    .await
    .expect_err(503, "storage_read_only");
    let r = upload(
        &s,
        &a.token,
        &[("b.txt", "text/plain", b"more words".to_vec())],
        None,
    )
    .await;
    r.expect_err(503, "storage_read_only");
    // Signing in records a session: refused the same way, with the reason.
    s.post(
        "/api/auth/login",
        None,
        json!({"email": "owner@ro.test", "password": "password-123"}),
    )
    .await
    .expect_err(503, "storage_read_only");
    // Reads go on, and show everything acknowledged (and nothing refused): the store file
    // cannot be reopened for writing, so a read-only view of it serves them.
    let msgs = messages_kept(&s, &a.token, &conv, &acked, "readable").await;
    assert!(store.read_only_view(), "reads come from a view");
    assert!(store.reopens() > reopens, "the failed handle was replaced");
    assert!(
        !msgs.text.contains("while read-only"),
        "nothing half-written"
    );
    let agents = s.get("/api/agents", &a.token).await;
    agents.expect(200);
    assert!(!agents.text.contains("Another") && !agents.text.contains("changed while"));
    s.get(&format!("/api/documents/{doc}"), &a.token)
        .await
        .expect(200);
    let r = s
        .search(
            &a.token,
            json!({"query": "warehouse Porto", "mode": "keyword"}),
        )
        .await;
    r.expect(200);
    assert!(r.text.contains(&doc), "search reads on: {}", r.text);
    // The health report says why writes fail.
    let h = s.get("/api/health", &a.token).await;
    h.expect(200);
    assert_eq!(h.body["disk"], "readOnly", "{}", h.text);
    assert_eq!(h.body["status"], "degraded", "{}", h.text);
    assert_eq!(h.body["storage"], "ok", "reads work: {}", h.text);
    // Stopping on a read-only filesystem: no panic, no hang (the server task ends cleanly).
    s.stop().await;
    drop(store);

    // Repaired and mounted again, a restarted server has every acknowledged write.
    fs.remount_repaired();
    let s = start_in(dir.clone(), |c| c.disk_reserve_mb = 2).await;
    let b = s.login("owner@ro.test", "password-123").await;
    let msgs = messages_kept(&s, &b.token, &conv, &acked, "kept after the repair").await;
    assert!(!msgs.text.contains("while read-only"));
    let d = s.get(&format!("/api/documents/{doc}"), &b.token).await;
    d.expect(200);
    assert_eq!(d.body["status"], "ready");
    let h = s.get("/api/health", &b.token).await;
    assert_eq!(h.body["disk"], "ok", "{}", h.text);
    s.post(
        &format!("/api/conversations/{conv}/messages"),
        Some(&b.token),
        json!({"content": "after the repair", "role": "human"}),
    )
    .await
    .expect(201);
    s.stop().await;
    drop(fs);
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
    let Some(_mount) = mount_tmpfs(
        "disk::disk_full_answers_507_and_recovers",
        dir.path(),
        "48m",
    ) else {
        return;
    };
    let s = start_in(dir.clone(), |c| c.disk_reserve_mb = 2).await;
    let a = s.register("owner@disk.test", "Disk Co").await;
    let agent = create_agent(&s, &a, json!({"name": "Bot"})).await;
    let conv = start_conversation(&s, &a.token, &id(&agent)).await;
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
    let msgs = messages_kept(&s, &a.token, &conv, &acked, "kept").await;
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
    let reopens = s.svc.store.reopens();
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
        // Reads go on after every failed commit, with everything acknowledged so far (from
        // the file reopened, or from a read-only view of it while the repair that a reopen
        // needs finds no room).
        messages_kept(&s, &a.token, &conv, &acked, "readable while full").await;
    }
    assert!(refused > 0, "a full disk was met");
    assert!(
        s.svc.store.reopens() > reopens,
        "a commit failed on the disk and the store was reopened"
    );
    // Space comes back: the next write reopens the file for writing, without a restart.
    std::fs::remove_file(&filler).expect("free");
    let r = post("recovered".into()).await;
    r.expect(201);
    acked.push(id(&r.body["message"]));
    assert!(!s.svc.store.read_only_view(), "writing to the file again");
    messages_kept(&s, &a.token, &conv, &acked, "kept").await;
    s.stop().await;

    // And after a restart on the same directory, every acknowledged message is there.
    let s = start_in(dir.clone(), |c| c.disk_reserve_mb = 2).await;
    let b = s.login("owner@disk.test", "password-123").await;
    messages_kept(&s, &b.token, &conv, &acked, "kept after restart").await;
    s.stop().await;
}

/// A server whose keyword index has a 16 MiB tmpfs of its own (see [`fill`]): the store
/// commits while the index cannot be written. `None`, skipped loudly, where no tmpfs can be
/// mounted.
struct SmallIndex {
    s: Server,
    a: Account,
    tenant: aigentable::types::TenantId,
    /// The keyword index's folder, the tmpfs.
    text_dir: PathBuf,
    /// Unmounts on drop: drop it after the server stopped.
    mount: Tmpfs,
}

/// [`SmallIndex`] with one tenant, registered by `email` as `company`.
async fn small_keyword_index(test: &str, email: &str, company: &str) -> Option<SmallIndex> {
    let dir = Arc::new(tempfile::tempdir().expect("tmp"));
    let text_dir = dir.path().join("index").join("text");
    std::fs::create_dir_all(&text_dir).expect("index dir");
    let mount = mount_tmpfs(test, &text_dir, "16m")?;
    let s = start_in(dir, |_| {}).await;
    let a = s.register(email, company).await;
    let tenant = aigentable::types::TenantId::parse(&a.tenant_id).expect("tenant id");
    Some(SmallIndex {
        s,
        a,
        tenant,
        text_dir,
        mount,
    })
}

/// Every `document.unindex` job of the tenant for `doc`.
fn unindex_jobs(
    s: &Server,
    tenant: &aigentable::types::TenantId,
    doc: &str,
) -> Vec<aigentable::model::Job> {
    s.svc
        .store
        .read(|tx| {
            tx.scan::<aigentable::model::Job>(tenant, None, |j| {
                j.kind == aigentable::knowledge::JOB_UNINDEX
                    && j.payload["documentId"].as_str() == Some(doc)
            })
        })
        .expect("scan jobs")
}

/// The status of the tenant's `document.unindex` job for `doc` (read from the store), once
/// there is one.
fn unindex_job(
    s: &Server,
    tenant: &aigentable::types::TenantId,
    doc: &str,
) -> Option<aigentable::model::Job> {
    unindex_jobs(s, tenant, doc).into_iter().next()
}

/// The chunks of `doc` the keyword index in `dir` holds (the server stopped).
fn keyword_chunks(dir: &Path, tenant: &aigentable::types::TenantId, doc: &str) -> usize {
    let idx =
        aigentable::index::TextIndex::open(&dir.join("index").join("text")).expect("text index");
    let doc = aigentable::types::DocumentId::parse(doc).expect("doc id");
    idx.document_chunks(tenant, &doc).expect("count")
}

/// Waits until the tenant's unindex job for `doc` is done.
async fn unindex_done(s: &Server, tenant: &aigentable::types::TenantId, doc: &str) {
    use aigentable::model::JobStatus;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let job = unindex_job(s, tenant, doc).expect("the unindex job");
        match job.status {
            JobStatus::Done => return,
            JobStatus::Failed => panic!("unindex failed: {job:?}"),
            _ if std::time::Instant::now() > deadline => panic!("unindex still pending: {job:?}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

/// Deletes `doc` while the keyword index's disk is full: the store commits it, so the
/// answer says deleted and keyword searches for `query` show `kept`, not `doc`.
async fn delete_while_index_full(s: &Server, a: &Account, doc: &str, kept: &str, query: &str) {
    s.delete(&format!("/api/documents/{doc}"), &a.token)
        .await
        .expect(204);
    s.get(&format!("/api/documents/{doc}"), &a.token)
        .await
        .expect_err(404, "document_not_found");
    let r = s
        .search(&a.token, json!({"query": query, "mode": "keyword"}))
        .await;
    r.expect(200);
    let found: Vec<&str> = r.body["data"]
        .as_array()
        .expect("hits")
        .iter()
        .filter_map(|h| h["documentId"].as_str())
        .collect();
    assert!(found.contains(&kept), "{}", r.text);
    assert!(!found.contains(&doc), "{}", r.text);
}

#[tokio::test]
async fn a_delete_the_keyword_index_cannot_record_yet_answers_and_the_index_catches_up() {
    const TEST: &str =
        "disk::a_delete_the_keyword_index_cannot_record_yet_answers_and_the_index_catches_up";
    // Only the keyword index's folder is small: the store commits, the index cannot.
    let Some(SmallIndex {
        s,
        a,
        tenant,
        text_dir,
        mount,
    }) = small_keyword_index(TEST, "owner@unindex.test", "Unindex Co").await
    else {
        return;
    };
    let mut docs = Vec::new();
    for (name, text) in [
        (
            "a.txt",
            "The zanzibarite warranty covers every blue kettle for ten years.",
        ),
        (
            "b.txt",
            "The zanzibarite returns policy: kettles come back within thirty days.",
        ),
        (
            "kept.txt",
            "The zanzibarite catalogue lists our red kettles and their prices.",
        ),
    ] {
        docs.push(upload_doc(&s, &a.token, name, "text/plain", text.as_bytes(), None).await);
    }
    let (first, second, kept) = (&docs[0], &docs[1], &docs[2]);

    // 1. A delete that the index cannot record, then a stop (as a crash would leave it):
    // the removal stays queued, and the restart with space back carries it out.
    let filler = fill(&text_dir);
    delete_while_index_full(&s, &a, first, kept, "zanzibarite kettle").await;
    let job = unindex_job(&s, &tenant, first).expect("an unindex job");
    assert_ne!(job.status, aigentable::model::JobStatus::Done, "{job:?}");
    let dir = s.stop().await;
    assert!(
        keyword_chunks(dir.path(), &tenant, first) > 0,
        "the index was not written"
    );
    std::fs::remove_file(&filler).expect("free");
    let s = start_in(dir.clone(), |_| {}).await;
    unindex_done(&s, &tenant, first).await;

    // 2. The same without a restart: once space is back the retry gets through, and the
    // index goes on taking new documents.
    let filler = fill(&text_dir);
    delete_while_index_full(&s, &a, second, kept, "zanzibarite kettle").await;
    let job = unindex_job(&s, &tenant, second).expect("an unindex job");
    assert_ne!(job.status, aigentable::model::JobStatus::Done, "{job:?}");
    std::fs::remove_file(&filler).expect("free");
    unindex_done(&s, &tenant, second).await;
    let fresh = upload_doc(
        &s,
        &a.token,
        "fresh.txt",
        "text/plain",
        b"Our zanzibarite teapots arrived this week.",
        None,
    )
    .await;
    let r = s
        .search(&a.token, json!({"query": "teapots", "mode": "keyword"}))
        .await;
    r.expect(200);
    assert_eq!(
        r.body["data"][0]["documentId"],
        fresh.as_str(),
        "{}",
        r.text
    );

    let dir = s.stop().await;
    assert_eq!(
        keyword_chunks(dir.path(), &tenant, first),
        0,
        "caught up after a restart"
    );
    assert_eq!(
        keyword_chunks(dir.path(), &tenant, second),
        0,
        "caught up without one"
    );
    assert!(
        keyword_chunks(dir.path(), &tenant, kept) > 0,
        "the other document stays"
    );
    drop(mount);
}

/// A document deleted while it was processing, between the store's commit of its chunks and
/// the index's: the delete's `document.unindex` job can run before processing writes the
/// index, so processing, finding the document gone at its end, takes the entries out again.
/// When the keyword index cannot be written at that moment, a new unindex job does it once
/// it can.
#[tokio::test]
async fn a_document_deleted_while_processing_leaves_no_index_entries_behind() {
    use aigentable::model::{Chunk, JobStatus};
    use aigentable::types::DocumentId;
    const TEST: &str = "disk::a_document_deleted_while_processing_leaves_no_index_entries_behind";
    let Some(SmallIndex {
        s,
        a,
        tenant,
        text_dir,
        mount,
    }) = small_keyword_index(TEST, "owner@race.test", "Race Co").await
    else {
        return;
    };
    let gone = upload_doc(
        &s,
        &a.token,
        "gone.txt",
        "text/plain",
        b"The quokkalite warranty covers every blue kettle for ten years.",
        None,
    )
    .await;
    let kept = upload_doc(
        &s,
        &a.token,
        "kept.txt",
        "text/plain",
        b"The quokkalite catalogue lists our red kettles and their prices.",
        None,
    )
    .await;
    let id = DocumentId::parse(&gone).expect("doc id");
    let chunks: Vec<Chunk> = s
        .svc
        .store
        .read(|tx| tx.scan::<Chunk>(&tenant, None, |c| c.document_id == id))
        .expect("chunks");
    assert!(!chunks.is_empty());

    // The delete commits and its unindex job runs...
    s.delete(&format!("/api/documents/{gone}"), &a.token)
        .await
        .expect(204);
    unindex_done(&s, &tenant, &gone).await;
    let k = s.knowledge.clone();
    let held = {
        let (k, tenant, id) = (k.clone(), tenant.clone(), id.clone());
        tokio::task::spawn_blocking(move || k.text.document_chunks(&tenant, &id))
    };
    assert_eq!(held.await.expect("join").expect("count"), 0);
    // ... then processing, which stored the chunks before the delete, indexes them.
    let (k2, t2, id2) = (k.clone(), tenant.clone(), id.clone());
    tokio::task::spawn_blocking(move || {
        let none = vec![None; chunks.len()];
        k2.index_chunks(&t2, &id2, &chunks, none, &[], None)
    })
    .await
    .expect("join")
    .expect("indexed");
    // Its end finds the document gone while the keyword index cannot be written.
    let filler = fill(&text_dir);
    let (k2, t2, id2) = (k.clone(), tenant.clone(), id.clone());
    tokio::task::spawn_blocking(move || k2.finish_processing(&t2, &id2))
        .await
        .expect("join")
        .expect("processing ends");

    // Space back: every unindex job ends, and the entries are gone.
    std::fs::remove_file(&filler).expect("free");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while unindex_jobs(&s, &tenant, &gone)
        .iter()
        .any(|j| j.status != JobStatus::Done)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "unindex still pending: {:?}",
            unindex_jobs(&s, &tenant, &gone)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(k);
    let dir = s.stop().await;
    assert_eq!(
        keyword_chunks(dir.path(), &tenant, &gone),
        0,
        "the deleted document's entries stayed"
    );
    assert!(keyword_chunks(dir.path(), &tenant, &kept) > 0);
    drop(mount);
}
