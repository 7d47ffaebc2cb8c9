//! Backups: taken while writers run, restored into an empty directory, compared row by row;
//! scheduled backups and their retention; tenant export and import.

use crate::common::*;
use aigentable::store::{Kind, Row, Snapshot, Store};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Every row of every table of a snapshot; record values as parsed JSON (an archive keeps
/// records as JSON, not byte for byte).
fn dump(snap: &Snapshot) -> BTreeMap<String, Vec<(String, Value)>> {
    let mut out = BTreeMap::new();
    for (name, kind) in snap.tables().expect("tables") {
        let mut rows = Vec::new();
        snap.for_each::<aigentable::store::Error>(&name, kind, None, |r| {
            rows.push(match r {
                Row::Record { tenant, id, value } => (
                    format!("{tenant}/{id}"),
                    serde_json::from_slice(&value).expect("record JSON"),
                ),
                Row::Index { key, value } => (key, Value::String(value)),
                Row::Meta { key, value } => (key, json!(value)),
                Row::Count {
                    tenant,
                    name,
                    value,
                } => (format!("{tenant}/{name}"), json!(value)),
                Row::Bytes { tenant, id, value } => (format!("{tenant}/{id}"), json!(value)),
            });
            Ok(())
        })
        .expect("rows");
        assert!(kind == Kind::Meta || !name.is_empty());
        out.insert(name, rows);
    }
    out
}

/// A writer doing messages, documents and agents in a loop until told to stop.
fn spawn_writer(
    s: &Server,
    token: String,
    agent: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let (base, http) = (s.base.clone(), s.http.clone());
    tokio::spawn(async move {
        let mut i = 0usize;
        while !stop.load(Ordering::Acquire) {
            i += 1;
            let c: Value = http
                .post(format!("{base}/api/conversations"))
                .bearer_auth(&token)
                .json(&json!({"agentId": agent}))
                .send()
                .await
                .expect("conversation")
                .json()
                .await
                .expect("json");
            let cid = c["id"].as_str().expect("conversation id").to_string();
            for m in 0..3 {
                let r = http
                    .post(format!("{base}/api/conversations/{cid}/messages"))
                    .bearer_auth(&token)
                    .json(&json!({"content": format!("note {i}.{m}"), "role": "human"}))
                    .send()
                    .await
                    .expect("message");
                assert!(r.status().is_success(), "message: {}", r.status());
            }
            let part = reqwest::multipart::Part::bytes(
                format!("Document {i}: the warranty of model W-{i} lasts {i} months.").into_bytes(),
            )
            .file_name(format!("doc-{i}.txt"))
            .mime_str("text/plain")
            .expect("mime");
            let r = http
                .post(format!("{base}/api/documents"))
                .bearer_auth(&token)
                .multipart(reqwest::multipart::Form::new().part("file", part))
                .send()
                .await
                .expect("upload");
            assert_eq!(r.status().as_u16(), 202, "upload");
            let r = http
                .post(format!("{base}/api/agents"))
                .bearer_auth(&token)
                .json(&json!({"name": format!("Agent {i}")}))
                .send()
                .await
                .expect("agent");
            assert_eq!(r.status().as_u16(), 201, "agent");
            done.fetch_add(1, Ordering::Release);
        }
    })
}

/// Waits (bounded, without timing anything) until the writer has done `n` more rounds.
async fn rounds(done: &AtomicUsize, n: usize) {
    let target = done.load(Ordering::Acquire) + n;
    bounded("writer rounds", async {
        while done.load(Ordering::Acquire) < target {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The restored store is whole: every document's file is there with its content, every
/// message's conversation exists, every index entry points to an existing record.
fn check_whole(dir: &Path, snap: &Snapshot, rows: &BTreeMap<String, Vec<(String, Value)>>) {
    let keys = |t: &str| -> std::collections::HashSet<String> {
        rows[t].iter().map(|(k, _)| k.clone()).collect()
    };
    for (k, d) in &rows["documents"] {
        let tenant = k.split('/').next().expect("tenant");
        let sha = d["sha256"].as_str().expect("sha");
        let bytes = std::fs::read(dir.join("tenants").join(tenant).join("files").join(sha))
            .unwrap_or_else(|e| panic!("file of document {k} missing: {e}"));
        assert_eq!(sha256_hex(&bytes), sha, "file of {k} intact");
    }
    let convs = keys("conversations");
    for (k, m) in &rows["messages"] {
        let tenant = k.split('/').next().expect("tenant");
        let conv = format!("{tenant}/{}", m["conversationId"].as_str().expect("cid"));
        assert!(convs.contains(&conv), "message {k} has its conversation");
    }
    let docs = keys("documents");
    for (k, _) in &rows["chunks"] {
        let mut p = k.split('/');
        let doc = format!("{}/{}", p.next().expect("t"), p.next().expect("d"));
        assert!(docs.contains(&doc), "chunk {k} has its document");
    }
    let agents = keys("agents");
    for (key, v) in &rows["idx_agent_slug"] {
        assert!(agents.contains(v.as_str().expect("ref")), "slug {key}");
    }
    for (key, v) in &rows["idx_document_sha"] {
        assert!(docs.contains(v.as_str().expect("ref")), "sha {key}");
    }
    let _ = snap;
}

#[tokio::test]
async fn backup_under_write_load_restores_every_record() {
    let s = start().await;
    let a = s.register("owner@backup.test", "Backup Co").await;
    let agent = create_agent(&s, &a, json!({"name": "Bot"})).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let writer = spawn_writer(&s, a.token.clone(), id(&agent), stop.clone(), done.clone());
    rounds(&done, 3).await;

    // 1. The CLI's way, while writes go on: through the running server's admin socket.
    let out_dir = tempfile::tempdir().expect("tmp");
    let cli_archive = out_dir.path().join("cli.tar.gz");
    let (d, o) = (s.data_dir(), cli_archive.clone());
    let summary = tokio::task::spawn_blocking(move || {
        aigentable::backup::backup_to_file(&d, &o, &Default::default())
    })
    .await
    .expect("join")
    .expect("backup through the admin socket");
    assert!(summary.tables["messages"] >= 9, "{summary:?}");
    rounds(&done, 1).await;

    // 2. A backup of a snapshot the test holds too, so the restore can be compared with
    // exactly what the store held at that commit, while writers carry on.
    let store = s.svc.store.clone();
    let snap_archive = out_dir.path().join("snap.tar.gz");
    let (d, o, st) = (s.data_dir(), snap_archive.clone(), store.clone());
    let (source_rows, _) = tokio::task::spawn_blocking(move || {
        let pin = st.pin_files();
        let snap = st.snapshot().expect("snapshot");
        let f = std::fs::File::create(&o).expect("create");
        aigentable::backup::backup_snapshot(&snap, &d, std::io::BufWriter::new(f)).expect("backup");
        let rows = dump(&snap);
        drop(pin);
        (rows, ())
    })
    .await
    .expect("join");
    rounds(&done, 1).await;
    // Deleting documents while backups run must not take files from under them.
    let docs = s.get("/api/documents?limit=2", &a.token).await;
    for d in docs.body["data"].as_array().expect("docs") {
        s.delete(&format!("/api/documents/{}", id(d)), &a.token)
            .await
            .expect(204);
    }
    stop.store(true, Ordering::Release);
    writer.await.expect("writer");

    // Restore the snapshot's archive and compare every row.
    let restored = tempfile::tempdir().expect("tmp");
    let target = restored.path().join("data");
    let r = aigentable::backup::restore_file(&snap_archive, &target, &Default::default())
        .expect("restore");
    assert!(r.tables["documents"] >= 4, "{r:?}");
    let rs = Store::open(&target, 1 << 20).expect("restored store opens");
    let restored_rows = dump(&rs.snapshot().expect("snapshot"));
    assert_eq!(
        restored_rows.keys().collect::<Vec<_>>(),
        source_rows.keys().collect::<Vec<_>>(),
        "same tables"
    );
    for (table, rows) in &source_rows {
        assert_eq!(
            &restored_rows[table], rows,
            "table {table}: every row as the store held it at the snapshot"
        );
    }
    check_whole(&target, &rs.snapshot().expect("snapshot"), &restored_rows);
    drop(rs);

    // The CLI archive restores into a whole store too, and a server starts on it: the same
    // sign-in works, the documents are there and searchable (indexes rebuilt at start).
    let cli_target = restored.path().join("cli");
    aigentable::backup::restore_file(&cli_archive, &cli_target, &Default::default())
        .expect("restore cli archive");
    {
        let rs = Store::open(&cli_target, 1 << 20).expect("opens");
        let snap = rs.snapshot().expect("snapshot");
        let rows = dump(&snap);
        check_whole(&cli_target, &snap, &rows);
    }
    let dir = Arc::new(tempfile::TempDir::new_in(restored.path()).expect("tmp"));
    std::fs::remove_dir(dir.path()).expect("rm");
    std::fs::rename(&cli_target, dir.path()).expect("move");
    s.stop().await;
    let s2 = start_in(dir, |_| {}).await;
    let b = s2.login("owner@backup.test", "password-123").await;
    let docs = s2.get("/api/documents?limit=100", &b.token).await;
    docs.expect(200);
    let n = docs.body["data"].as_array().expect("docs").len();
    assert!(n >= 3, "documents restored: {}", docs.text);
    // Its documents are searchable: indexes are rebuilt at start, and documents that were
    // still queued in the backup are processed after the restore.
    let first = id(&docs.body["data"][0]);
    let d = wait_done(&s2, &b.token, &first).await;
    assert_eq!(d["status"], "ready", "{d}");
    let r = s2
        .search(
            &b.token,
            json!({"query": "warranty months", "mode": "keyword"}),
        )
        .await;
    r.expect(200);
    assert!(
        r.text.contains(&first),
        "restored documents are searchable: {}",
        r.text
    );
    s2.stop().await;
}

#[tokio::test]
async fn restore_refuses_a_non_empty_directory_and_a_damaged_archive() {
    let s = start().await;
    let a = s.register("owner@refuse.test", "Refuse Co").await;
    upload_doc(
        &s,
        &a.token,
        "a.txt",
        "text/plain",
        b"alpha beta gamma",
        None,
    )
    .await;
    let out = tempfile::tempdir().expect("tmp");
    let archive = out.path().join("b.tar.gz");
    let (d, o) = (s.data_dir(), archive.clone());
    tokio::task::spawn_blocking(move || {
        aigentable::backup::backup_to_file(&d, &o, &Default::default())
    })
    .await
    .expect("join")
    .expect("backup");

    // Non-empty: refused, and what was there is untouched.
    let busy = out.path().join("busy");
    std::fs::create_dir_all(&busy).expect("mkdir");
    std::fs::write(busy.join("keep.txt"), b"mine").expect("write");
    let e = aigentable::backup::restore_file(&archive, &busy, &Default::default())
        .expect_err("refused");
    assert!(matches!(e, aigentable::backup::Error::NotEmpty(_)), "{e}");
    assert!(e.to_string().contains("not empty"), "{e}");
    assert_eq!(std::fs::read(busy.join("keep.txt")).expect("kept"), b"mine");
    assert_eq!(std::fs::read_dir(&busy).expect("ls").count(), 1);

    // One flipped byte inside a stored entry: refused by the checksums, nothing left behind.
    let bytes = std::fs::read(&archive).expect("read");
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut tar)
        .expect("gunzip");
    let at = tar
        .windows(16)
        .position(|w| w == b"alpha beta gamma")
        .expect("file content in the archive");
    tar[at] = b'A';
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).expect("gzip");
    let bad = out.path().join("bad.tar.gz");
    std::fs::write(&bad, gz.finish().expect("gzip")).expect("write");
    let target = out.path().join("t1");
    let e =
        aigentable::backup::restore_file(&bad, &target, &Default::default()).expect_err("damaged");
    assert!(matches!(e, aigentable::backup::Error::Damaged(_)), "{e}");
    assert_eq!(
        std::fs::read_dir(&target).expect("ls").count(),
        0,
        "emptied"
    );

    // Truncated (a backup cut off half way): refused.
    let cut = out.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let target = out.path().join("t2");
    let e = aigentable::backup::restore_file(&cut, &target, &Default::default())
        .expect_err("truncated");
    assert!(matches!(e, aigentable::backup::Error::Damaged(_)), "{e}");
    s.stop().await;
}

#[tokio::test]
async fn scheduled_backups_keep_the_newest() {
    let backups = tempfile::tempdir().expect("tmp");
    let bdir = backups.path().to_path_buf();
    let s = start_with(|c| {
        c.backup_dir = Some(bdir.clone());
        c.backup_keep = 2;
    })
    .await;
    let root = s.root().await;
    let h = s.get("/api/health", &root.token).await;
    assert_eq!(h.body["backups"]["status"], "pending", "{}", h.text);
    // A stray file of someone else in the folder is never pruned.
    std::fs::write(bdir.join("notes.txt"), b"mine").expect("write");
    let sched = aigentable::backup::schedule::Scheduler::new(
        bdir.clone(),
        std::time::Duration::from_secs(3600),
        2,
    );
    let mut written = Vec::new();
    for _ in 0..4 {
        let (st, d, sc) = (s.svc.store.clone(), s.data_dir(), &sched);
        written.push(sc.run_once(&st, &d).expect("scheduled backup"));
    }
    let mut left: Vec<_> = std::fs::read_dir(&bdir)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .collect();
    left.sort();
    let mut want = vec![bdir.join("notes.txt")];
    want.extend(written[2..].iter().cloned());
    want.sort();
    assert_eq!(left, want, "the 2 newest backups and the stray file");
    for p in &written[2..] {
        let f = std::fs::File::open(p).expect("open");
        aigentable::backup::verify(std::io::BufReader::new(f), &Default::default())
            .expect("a whole archive");
    }
    assert_eq!(sched.status().status, "ok");

    // A failing destination is reported (and logged), not fatal.
    let blocked = bdir.join("notes.txt").join("sub");
    let bad = aigentable::backup::schedule::Scheduler::new(
        blocked,
        std::time::Duration::from_secs(3600),
        2,
    );
    bad.run_once(&s.svc.store, &s.data_dir())
        .expect_err("cannot write");
    let st = bad.status();
    assert_eq!(st.status, "failed");
    assert_eq!(st.failures, 1);
    assert!(st.error.is_some());
    s.stop().await;
}

#[tokio::test]
async fn tenant_export_holds_one_tenant_and_imports_into_another_install() {
    let s = start().await;
    let root = s.root().await;
    let a = s.register("owner@moving.test", "Moving Co").await;
    let other = s.register("owner@stays.test", "Stays Co").await;
    let doc_a = upload_doc(
        &s,
        &a.token,
        "a.txt",
        "text/plain",
        b"The moving company keeps crates in Oslo.",
        None,
    )
    .await;
    upload_doc(
        &s,
        &other.token,
        "b.txt",
        "text/plain",
        b"Secret plans of the other tenant.",
        None,
    )
    .await;
    // A bigger file: an install with a lower BACKUP_MAX_FILE_BYTES refuses the export.
    upload_doc(
        &s,
        &a.token,
        "big.txt",
        "text/plain",
        "Crates, pallets and boxes. ".repeat(80).as_bytes(),
        None,
    )
    .await;
    let agent = create_agent(&s, &a, json!({"name": "Mover"})).await;
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"apiKey": "sk-moving-123", "model": "m"}),
    )
    .await
    .expect(200);
    s.post(
        "/api/conversations",
        Some(&a.token),
        json!({"agentId": id(&agent)}),
    )
    .await
    .expect(201);

    // A foreign tenant's export is 404 for a tenant admin; a plain user may not export.
    let r = send(
        s.http
            .post(format!("{}/api/tenants/{}/export", s.base, a.tenant_id))
            .bearer_auth(&other.token),
    )
    .await;
    r.expect_err(404, "tenant_not_found");
    let r = send(
        s.http
            .post(format!("{}/api/tenants/{}/export", s.base, a.tenant_id))
            .bearer_auth(&a.token)
            .json(&json!({"passphrase": "short"})),
    )
    .await;
    r.expect_err(422, "passphrase_required");

    // The tenant's admin exports with a passphrase.
    let resp = export_tenant(&s, &a, Some("correct horse battery")).await;
    assert_eq!(resp.headers()["content-type"], "application/gzip");
    let archive = resp.bytes().await.expect("bytes").to_vec();
    // The export is in the tenant's audit log.
    let log = s.get("/api/audit?action=tenant.exported", &a.token).await;
    log.expect(200);
    assert_eq!(
        log.body["data"][0]["target"]["id"],
        a.tenant_id.as_str(),
        "{}",
        log.text
    );
    assert_eq!(log.body["data"][0]["details"]["secrets"], "passphrase");

    // Nothing of the other tenant is in it: not its id, not its file, not its email.
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&archive[..]), &mut tar)
        .expect("gunzip");
    let text = String::from_utf8_lossy(&tar);
    assert!(!text.contains(&other.tenant_id), "no foreign tenant id");
    assert!(!text.contains("Secret plans"), "no foreign file");
    assert!(!text.contains("stays.test"), "no foreign user");
    assert!(!text.contains("root@example.com"), "no platform admin");
    assert!(!text.contains("sk-moving-123"), "secrets are sealed");
    assert!(text.contains("crates in Oslo"), "own file");
    assert!(!text.contains("jwt_secret"), "no install keys");

    // Importing into the same install: the tenant exists there.
    let r = import_tenant(&s, &root.token, &archive, Some("correct horse battery"), "").await;
    r.expect_err(409, "import_conflict");
    // A tenant admin may not import.
    let r = import_tenant(&s, &a.token, &archive, None, "").await;
    r.expect_err(403, "forbidden");

    // Another install.
    let s2 = start().await;
    let root2 = s2.root().await;
    import_tenant(&s2, &root2.token, &archive, None, "")
        .await
        .expect_err(422, "passphrase_required");
    import_tenant(&s2, &root2.token, &archive, Some("wrong horse battery"), "")
        .await
        .expect_err(422, "passphrase_required");
    let mut damaged = archive.clone();
    damaged.truncate(damaged.len() - 40);
    import_tenant(
        &s2,
        &root2.token,
        &damaged,
        Some("correct horse battery"),
        "",
    )
    .await
    .expect_err(422, "invalid_archive");
    // An install that takes smaller stored files refuses the export, naming the setting,
    // and nothing of it is left there.
    let small = start_with(|c| {
        c.upload_max_bytes = 1024;
        c.channel_media_max_bytes = 1024;
        c.backup_max_file_bytes = 1024;
    })
    .await;
    let root3 = small.root().await;
    let r = import_tenant(
        &small,
        &root3.token,
        &archive,
        Some("correct horse battery"),
        "",
    )
    .await;
    r.expect_err(413, "payload_too_large");
    assert!(r.text.contains("BACKUP_MAX_FILE_BYTES"), "{}", r.text);
    assert_eq!(r.body["error"]["details"]["maxBytes"], 1024, "{}", r.text);
    let tid3 = aigentable::types::TenantId::parse(&a.tenant_id).expect("id");
    assert_eq!(
        small
            .svc
            .store
            .read(|tx| tx.tenant_footprint(&tid3))
            .expect("read"),
        0
    );
    small.stop().await;
    // A failed import leaves nothing behind: the good one goes through afterwards.
    let r = import_tenant(
        &s2,
        &root2.token,
        &archive,
        Some("correct horse battery"),
        "",
    )
    .await;
    r.expect(201);
    assert_eq!(r.body["tenantId"], a.tenant_id.as_str());
    assert!(r.body["tables"].get("sessions").is_none(), "{}", r.text);

    let log = s2
        .get(
            &format!("/api/audit?action=tenant.imported&tenantId={}", a.tenant_id),
            &root2.token,
        )
        .await;
    log.expect(200);
    assert_eq!(
        log.body["data"].as_array().map(Vec::len),
        Some(1),
        "{}",
        log.text
    );
    // The owner signs in with the same password and finds their data.
    let b = s2.login("owner@moving.test", "password-123").await;
    assert_eq!(b.tenant_id, a.tenant_id);
    let d = s2.get(&format!("/api/documents/{doc_a}"), &b.token).await;
    d.expect(200);
    assert_eq!(d.body["status"], "ready");
    let agents = s2.get("/api/agents", &b.token).await;
    assert!(agents.text.contains("Mover"), "{}", agents.text);
    let convs = s2.get("/api/conversations", &b.token).await;
    assert_eq!(convs.body["data"].as_array().expect("list").len(), 1);
    // Its search index was built at import.
    let r = s2
        .search(&b.token, json!({"query": "crates Oslo", "mode": "keyword"}))
        .await;
    assert!(r.text.contains("Oslo"), "{}", r.text);
    // The API key was re-sealed for this install (the passphrase carried it).
    let store2 = s2.svc.store.clone();
    let tid = aigentable::types::TenantId::parse(&a.tenant_id).expect("id");
    let settings = store2
        .read(|tx| tx.get::<aigentable::model::TenantSettings>(&tid, ""))
        .expect("read")
        .expect("settings");
    let raw = serde_json::to_string(&settings).expect("json");
    let sealed: Vec<&str> = raw.split('"').filter(|x| x.starts_with("v1:")).collect();
    assert!(!sealed.is_empty(), "a sealed key: {raw}");
    assert!(
        sealed
            .iter()
            .any(|x| s2.svc.sealer.open(x).as_deref() == Some("sk-moving-123")),
        "opens with the new install's key"
    );
    // The per-tenant counts (plan limits) came along and agree with the rows.
    let (agents_n, docs_n, keys_n) = store2
        .read(|tx| {
            Ok((
                tx.count::<aigentable::model::Agent>(&tid)?,
                tx.count::<aigentable::model::Document>(&tid)?,
                tx.count::<aigentable::model::ApiKey>(&tid)?,
            ))
        })
        .expect("counts");
    assert_eq!((agents_n, docs_n, keys_n), (1, 2, 0));
    // The other tenant's email is free here, the moved one is taken: importing again is a
    // conflict, nothing changes.
    import_tenant(
        &s2,
        &root2.token,
        &archive,
        Some("correct horse battery"),
        "",
    )
    .await
    .expect_err(409, "import_conflict");
    s2.stop().await;
    s.stop().await;
}

/// Downloads attachment `att` of message `msg` in conversation `cid` as staff.
async fn attachment_bytes(s: &Server, token: &str, cid: &str, msg: &str, att: &str) -> Vec<u8> {
    let r = s
        .http
        .get(format!(
            "{}/api/conversations/{cid}/messages/{msg}/attachments/{att}",
            s.base
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("download");
    assert_eq!(r.status().as_u16(), 200, "attachment downloads");
    r.bytes().await.expect("bytes").to_vec()
}

/// A gzip tar with the entries given as (raw name, content): names are written byte for
/// byte into the header, as a crafted archive would carry them (the tar crate's own
/// builder refuses `..`).
fn crafted_archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    let tar = b.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).expect("gzip");
    gz.finish().expect("gzip")
}

/// Customers' attachments (channel media under `<data>/media/<tenant>/`) travel with a full
/// backup and with a tenant export: after a restore, and after an import into another
/// install, staff download them byte for byte. A crafted media entry is refused.
#[tokio::test]
async fn channel_media_survive_a_restore_and_a_tenant_move() {
    use crate::channels_meta::{setup, wa_payload};
    let t = setup("media-backup@x.test").await;
    let ch = t.whatsapp().await;
    let body = wa_payload(
        json!([{"wa_id": "15551234567", "profile": {"name": "Ana"}}]),
        json!([{"from": "15551234567", "id": "wamid.B1", "type": "image",
                "image": {"id": "media-1", "mime_type": "image/jpeg", "caption": "my receipt"}}]),
        json!([]),
    );
    t.webhook(&ch, &body).await.expect(200);
    let cid = id(&t.wait_conversations(&ch, 1).await[0]);
    t.settle().await;
    let msgs = t.messages(&cid).await;
    let m = msgs
        .iter()
        .find(|m| m["role"] == "customer" && m["attachments"][0].is_object())
        .unwrap_or_else(|| panic!("a customer message with its attachment: {msgs:?}"));
    let (mid, att) = (
        id(m),
        m["attachments"][0]["id"].as_str().expect("id").to_string(),
    );
    let original = attachment_bytes(&t.s, &t.a.token, &cid, &mid, &att).await;
    assert!(!original.is_empty());
    // A media file no message names (left over by hand) is not archived.
    let media_dir = t.s.data_dir().join("media").join(&t.a.tenant_id);
    std::fs::write(media_dir.join("abcdef"), b"stray").expect("write");

    // 1. A full backup while the server runs, restored into an empty directory.
    let out = tempfile::tempdir().expect("tmp");
    let archive = out.path().join("full.tar.gz");
    let (d, o) = (t.s.data_dir(), archive.clone());
    let summary = tokio::task::spawn_blocking(move || {
        aigentable::backup::backup_to_file(&d, &o, &Default::default())
    })
    .await
    .expect("join")
    .expect("backup");
    assert_eq!(summary.media, 1, "{summary:?}");
    let target = Arc::new(tempfile::tempdir().expect("tmp"));
    let r = aigentable::backup::restore_file(&archive, target.path(), &Default::default())
        .expect("restore");
    assert_eq!(r.media, 1);
    assert!(
        !target
            .path()
            .join("media")
            .join(&t.a.tenant_id)
            .join("abcdef")
            .exists(),
        "only media that messages reference"
    );

    // 2. The tenant's admin exports (before the source stops).
    let resp = export_tenant(&t.s, &t.a, Some("correct horse battery")).await;
    let export = resp.bytes().await.expect("bytes").to_vec();
    let entries: Vec<String> = {
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&export[..]));
        tar.entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    assert!(
        entries.contains(&format!("media/{}/{att}", t.a.tenant_id)),
        "{entries:?}"
    );
    t.s.stop().await;

    let s2 = start_in(target.clone(), |_| {}).await;
    let b = s2.login("media-backup@x.test", "password-123").await;
    let restored = attachment_bytes(&s2, &b.token, &cid, &mid, &att).await;
    assert_eq!(restored, original, "the attachment restored byte for byte");
    s2.stop().await;

    // 3. Imported into another install: the messages still name their media.
    let s3 = start().await;
    let root3 = s3.root().await;
    let r = import_tenant(
        &s3,
        &root3.token,
        &export,
        Some("correct horse battery"),
        "",
    )
    .await;
    r.expect(201);
    assert_eq!(r.body["media"], 1, "{}", r.text);
    let c = s3.login("media-backup@x.test", "password-123").await;
    let moved = attachment_bytes(&s3, &c.token, &cid, &mid, &att).await;
    assert_eq!(moved, original, "the attachment moved byte for byte");

    // 4. A crafted archive whose media entry climbs out of the data directory: refused with
    // a clear error, nothing written (by restore nor by an import).
    let first_entry = |gz: &[u8]| -> Vec<u8> {
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
        let mut e = tar
            .entries()
            .expect("entries")
            .next()
            .expect("header")
            .expect("entry");
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut v).expect("read");
        v
    };
    let evil = |header: &[u8]| {
        crafted_archive(&[
            ("aigentable-backup.json", header),
            ("media/../../x", b"escaped"),
        ])
    };
    let full_header = first_entry(&std::fs::read(&archive).expect("read"));
    let evil_path = out.path().join("evil.tar.gz");
    std::fs::write(&evil_path, evil(&full_header)).expect("write");
    let dest = out.path().join("a").join("b");
    let e = aigentable::backup::restore_file(&evil_path, &dest, &Default::default())
        .expect_err("refused");
    assert!(matches!(e, aigentable::backup::Error::Damaged(_)), "{e}");
    assert!(e.to_string().contains("media/../../x"), "{e}");
    assert!(e.to_string().contains("'..'"), "{e}");
    assert!(!out.path().join("x").exists() && !out.path().join("a").join("x").exists());
    let r = import_tenant(
        &s3,
        &root3.token,
        &evil(&first_entry(&export)),
        Some("correct horse battery"),
        "",
    )
    .await;
    r.expect_err(422, "invalid_archive");
    assert!(r.text.contains("media/../../x"), "{}", r.text);
    assert!(!s3.data_dir().parent().expect("parent").join("x").exists());
    s3.stop().await;
}

#[tokio::test]
async fn a_tenant_imported_again_as_new_lives_beside_the_first_and_apart_from_it() {
    // The origin install: a tenant with an agent, a website widget, a document and a
    // conversation.
    let s = start().await;
    let a = s.register("owner@twice.test", "Twice Co").await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Twice Bot"})).await);
    let ch = s
        .post(
            "/api/channels",
            Some(&a.token),
            json!({"type": "web", "name": "Website", "agentId": agent, "settings": {}}),
        )
        .await;
    ch.expect(201);
    let widget_key = ch.body["settings"]["widgetKey"]
        .as_str()
        .expect("key")
        .to_string();
    let doc = upload_doc(
        &s,
        &a.token,
        "hours.txt",
        "text/plain",
        b"The Twice shop in Lyon opens at nine.",
        None,
    )
    .await;
    let conv = start_conversation(&s, &a.token, &agent).await;
    s.post(
        &format!("/api/conversations/{conv}/messages"),
        Some(&a.token),
        json!({"content": "first words", "role": "human"}),
    )
    .await
    .expect(201);
    let resp = export_tenant(&s, &a, None).await;
    let archive = resp.bytes().await.expect("bytes").to_vec();
    s.stop().await;

    // The new host imports it (same id), and a second time: the id exists, 409.
    let s2 = start().await;
    let root = s2.root().await;
    let r = import_tenant(&s2, &root.token, &archive, None, "").await;
    r.expect(201);
    assert_eq!(r.body["tenantId"], a.tenant_id.as_str());
    import_tenant(&s2, &root.token, &archive, None, "")
        .await
        .expect_err(409, "import_conflict");
    import_tenant(&s2, &root.token, &archive, None, "?asNew=maybe")
        .await
        .expect_err(400, "invalid_query");
    // As a new tenant, the owner's email is still someone's here: refused, with the email
    // named, nothing written.
    let first = aigentable::types::TenantId::parse(&a.tenant_id).expect("id");
    let rows = |s: &Server, t: &aigentable::types::TenantId| {
        s.svc
            .store
            .read(|tx| tx.tenant_footprint(t))
            .expect("footprint")
    };
    let first_rows = rows(&s2, &first);
    let r = import_tenant(&s2, &root.token, &archive, None, "?asNew=true").await;
    r.expect_err(409, "import_conflict");
    assert!(r.text.contains("owner@twice.test"), "{}", r.text);
    let tenants = s2.get("/api/tenants?limit=200", &root.token).await;
    assert_eq!(
        tenants.body["data"].as_array().map(Vec::len),
        Some(1),
        "{}",
        tenants.text
    );
    // The first copy gets a new admin and the old owner leaves it: the email is free.
    let owner = s2.login("owner@twice.test", "password-123").await;
    let admin = s2
        .invite_and_accept(&owner, &a.tenant_id, "admin@twice.test", "TENANT_ADMIN")
        .await;
    let users = s2
        .get(&format!("/api/tenants/{}/users", a.tenant_id), &admin.token)
        .await;
    users.expect(200);
    let owner_id = users.body["data"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["email"] == "owner@twice.test")
        .map(id)
        .expect("owner listed");
    s2.delete(
        &format!("/api/tenants/{}/users/{owner_id}", a.tenant_id),
        &admin.token,
    )
    .await
    .expect(204);
    let first_rows = rows(&s2, &first).max(first_rows);

    // Imported as new: another tenant id, every id of it new, the first copy untouched.
    let r = import_tenant(&s2, &root.token, &archive, None, "?asNew=true").await;
    r.expect(201);
    let second_id = r.body["tenantId"].as_str().expect("tenantId").to_string();
    assert_ne!(second_id, a.tenant_id);
    let second = aigentable::types::TenantId::parse(&second_id).expect("id");
    assert_eq!(rows(&s2, &first), first_rows, "the first copy is untouched");
    assert!(rows(&s2, &second) > 0);
    let log = s2
        .get(
            &format!("/api/audit?action=tenant.imported&tenantId={second_id}"),
            &root.token,
        )
        .await;
    log.expect(200);
    assert_eq!(
        log.body["data"][0]["details"]["asNew"], true,
        "{}",
        log.text
    );

    // The owner signs in (the same password) to the new copy, with all of its data.
    let b = s2.login("owner@twice.test", "password-123").await;
    assert_eq!(b.tenant_id, second_id);
    let agents = s2.get("/api/agents", &b.token).await;
    agents.expect(200);
    let agents = agents.body["data"].as_array().expect("agents").clone();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["name"], "Twice Bot");
    let agent2 = id(&agents[0]);
    assert_ne!(agent2, agent, "a new agent id");
    let docs = s2.get("/api/documents", &b.token).await;
    docs.expect(200);
    let doc2 = id(&docs.body["data"][0]);
    assert_ne!(doc2, doc);
    assert_eq!(docs.body["data"][0]["status"], "ready", "{}", docs.text);
    let hits = s2
        .search(&b.token, json!({"query": "Lyon nine", "mode": "keyword"}))
        .await;
    hits.expect(200);
    assert!(
        hits.text.contains(&doc2) && !hits.text.contains(&doc),
        "its own index: {}",
        hits.text
    );
    let convs = s2.get("/api/conversations", &b.token).await;
    let conv2 = id(&convs.body["data"][0]);
    assert_ne!(conv2, conv);
    let msgs = s2
        .get(&format!("/api/conversations/{conv2}/messages"), &b.token)
        .await;
    msgs.expect(200);
    assert!(msgs.text.contains("first words"), "{}", msgs.text);
    assert!(
        msgs.text.contains(&conv2) && !msgs.text.contains(&conv),
        "messages name their new conversation: {}",
        msgs.text
    );
    // Its widget has a key of its own; the first copy's key still opens the first copy's.
    let chs = s2.get("/api/channels", &b.token).await;
    chs.expect(200);
    let key2 = chs.body["data"][0]["settings"]["widgetKey"]
        .as_str()
        .expect("key")
        .to_string();
    assert!(key2.starts_with("wk_") && key2 != widget_key);
    assert_eq!(chs.body["data"][0]["agentId"], agent2.as_str());
    for key in [&widget_key, &key2] {
        s2.req(
            reqwest::Method::GET,
            &format!("/api/widget/{key}/config"),
            None,
            None,
        )
        .await
        .expect(200);
    }

    // Both copies work and are apart: each writes, each sees only its own.
    s2.post(
        &format!("/api/conversations/{conv2}/messages"),
        Some(&b.token),
        json!({"content": "in the second copy", "role": "human"}),
    )
    .await
    .expect(201);
    s2.post(
        &format!("/api/conversations/{conv}/messages"),
        Some(&admin.token),
        json!({"content": "in the first copy", "role": "human"}),
    )
    .await
    .expect(201);
    for (acc, own_conv, own_doc, other_conv, other_doc, other_text) in [
        (&b, &conv2, &doc2, &conv, &doc, "in the first copy"),
        (&admin, &conv, &doc, &conv2, &doc2, "in the second copy"),
    ] {
        let m = s2
            .get(
                &format!("/api/conversations/{own_conv}/messages"),
                &acc.token,
            )
            .await;
        m.expect(200);
        assert!(!m.text.contains(other_text), "{}", m.text);
        s2.get(&format!("/api/documents/{own_doc}"), &acc.token)
            .await
            .expect(200);
        s2.get(&format!("/api/conversations/{other_conv}"), &acc.token)
            .await
            .expect_err(404, "conversation_not_found");
        s2.get(&format!("/api/documents/{other_doc}"), &acc.token)
            .await
            .expect_err(404, "document_not_found");
    }
    let tenants = s2.get("/api/tenants?limit=200", &root.token).await;
    assert_eq!(tenants.body["data"].as_array().map(Vec::len), Some(2));
    s2.stop().await;
}
