//! Knowledge base: uploads, the ingestion pipeline, search, deletion, isolation, restart.

use crate::common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const HANDBOOK: &str = "# Employee Handbook\n\n## Holidays\n\nEvery employee gets twenty-five paid vacation days per year. Unused days carry over until March.\n\n## Expenses\n\nTravel expenses are reimbursed within fourteen days when receipts are attached.\n\n### Meals\n\nMeals during business trips are covered up to forty euros per day.\n";

#[tokio::test]
async fn upload_process_search_and_delete() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let html = "<html><head><title>Returns</title><style>p{color:red}</style><script>alert('x')</script></head><body><h1>Returns policy</h1><p>Items can be returned within thirty days with the original receipt.</p></body></html>";
    let csv = "product,price,stock\nwidget,9.99,120\ngadget,24.50,8\n";
    let r = upload(
        &s,
        &a.token,
        &[
            ("handbook.md", "text/markdown", HANDBOOK.as_bytes().to_vec()),
            ("returns.html", "text/html", html.as_bytes().to_vec()),
            ("prices.csv", "text/csv", csv.as_bytes().to_vec()),
            (
                "manual.pdf",
                "application/pdf",
                pdf(&[
                    "Warranty lasts two years from purchase.",
                    "Batteries are not covered by the warranty.",
                ]),
            ),
        ],
        None,
    )
    .await;
    r.expect(202);
    let docs = r.body["data"].as_array().expect("data").clone();
    assert_eq!(docs.len(), 4);
    assert!(docs.iter().all(|d| d["status"] == "queued" && d["sha256"].as_str().is_some_and(|h| h.len() == 64)));
    let mut ids = Vec::new();
    for d in &docs {
        let id = d["id"].as_str().expect("id").to_string();
        let done = wait_done(&s, &a.token, &id).await;
        assert_eq!(done["status"], "ready", "{done}");
        assert_eq!(done["progress"], 100);
        assert!(done["chunkCount"].as_u64().unwrap_or(0) >= 1);
        assert!(done["processedAt"].is_string());
        ids.push(id);
    }
    let pdf_doc = s.get(&format!("/api/documents/{}", ids[3]), &a.token).await;
    assert_eq!(pdf_doc.body["pages"], 2);
    assert_eq!(pdf_doc.body["mimeType"], "application/pdf");

    // Chunks carry the heading path and page.
    let chunks = s
        .get(&format!("/api/documents/{}/chunks", ids[0]), &a.token)
        .await;
    chunks.expect(200);
    let all: Vec<Value> = chunks.body["data"].as_array().expect("chunks").clone();
    assert!(
        all.iter().any(|c| c["headings"]
            .as_array()
            .is_some_and(|h| h.iter().any(|x| x == "Holidays"))),
        "{}",
        chunks.text
    );
    let html_chunks = s
        .get(&format!("/api/documents/{}/chunks", ids[1]), &a.token)
        .await;
    assert!(!html_chunks.text.contains("alert"), "scripts are dropped");
    assert!(
        !html_chunks.text.contains("color:red"),
        "styles are dropped"
    );

    // Keyword search finds the right chunk, with document name and page.
    let r = s
        .search(
            &a.token,
            json!({"query": "how many vacation days", "mode": "keyword"}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["mode"], "keyword");
    assert!(r.body["tookMs"].is_number());
    assert_eq!(r.body["data"][0]["documentName"], "handbook.md");
    assert!(
        r.body["data"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("twenty-five")
    );
    let r = s
        .search(
            &a.token,
            json!({"query": "batteries warranty", "mode": "keyword"}),
        )
        .await;
    assert_eq!(r.body["data"][0]["page"], 2, "{}", r.text);
    let r = s.search(&a.token, json!({"query": "gadget price"})).await;
    assert_eq!(r.body["data"][0]["documentName"], "prices.csv");
    assert!(
        r.body["data"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("24.50")
    );
    // documentIds restricts.
    let r = s
        .search(
            &a.token,
            json!({"query": "vacation days", "documentIds": [ids[1]]}),
        )
        .await;
    let names: Vec<&str> = r.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|h| h["documentName"].as_str())
        .collect();
    assert_eq!(
        names,
        ["returns.html"],
        "only the listed document: {}",
        r.text
    );

    // Same file again: 409 with the existing id.
    let dup = upload(
        &s,
        &a.token,
        &[("again.md", "text/markdown", HANDBOOK.as_bytes().to_vec())],
        None,
    )
    .await;
    dup.expect_err(409, "duplicate_document");
    assert_eq!(
        dup.body["error"]["details"]["documentId"].as_str(),
        Some(ids[0].as_str())
    );

    // Filters and paging.
    let ready = s.get("/api/documents?status=ready&limit=3", &a.token).await;
    assert_eq!(ready.body["data"].as_array().map(Vec::len), Some(3));
    assert!(ready.body["nextCursor"].is_string());

    // Delete: gone from search, chunks and disk.
    let sha = docs[0]["sha256"].as_str().expect("sha").to_string();
    let file = s
        .data_dir()
        .join("tenants")
        .join(&a.tenant_id)
        .join("files")
        .join(&sha);
    assert!(file.exists());
    s.delete(&format!("/api/documents/{}", ids[0]), &a.token)
        .await
        .expect(204);
    assert!(!file.exists(), "the original is removed");
    let r = s
        .search(
            &a.token,
            json!({"query": "vacation days", "mode": "keyword"}),
        )
        .await;
    assert!(
        !r.text.contains("twenty-five"),
        "deleted chunks never come back: {}",
        r.text
    );
    s.get(&format!("/api/documents/{}/chunks", ids[0]), &a.token)
        .await
        .expect_err(404, "document_not_found");
    // Now the same content can be uploaded again.
    upload(
        &s,
        &a.token,
        &[("handbook.md", "text/markdown", HANDBOOK.as_bytes().to_vec())],
        None,
    )
    .await
    .expect(202);
}

#[tokio::test]
async fn bad_uploads_fail_clearly_and_the_server_keeps_serving() {
    let s = start_with(|c| {
        c.upload_max_bytes = 64 * 1024;
        c.ingest_max_pages = 50;
    })
    .await;
    let a = s.register("a@x.test", "A").await;
    upload(&s, &a.token, &[("empty.txt", "text/plain", vec![])], None)
        .await
        .expect_err(400, "empty_file");
    let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
    elf.extend(std::iter::repeat_n(0u8, 4000));
    upload(&s, &a.token, &[("notes.txt", "text/plain", elf)], None)
        .await
        .expect_err(415, "unsupported_media_type");
    upload(
        &s,
        &a.token,
        &[(
            "pic.png",
            "image/png",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
        )],
        None,
    )
    .await
    .expect_err(415, "unsupported_media_type");
    upload(
        &s,
        &a.token,
        &[("big.txt", "text/plain", vec![b'a'; 100 * 1024])],
        None,
    )
    .await
    .expect_err(413, "payload_too_large");
    let none = send(
        s.http
            .post(format!("{}/api/documents", s.base))
            .bearer_auth(&a.token)
            .multipart(reqwest::multipart::Form::new().text("x", "y")),
    )
    .await;
    none.expect_err(400, "validation_failed");

    // Accepted at upload, failed with a reason in the pipeline.
    let mut corrupt = b"%PDF-1.7\n".to_vec();
    corrupt.extend(b"1 0 obj << /Type /Catalog >> garbage garbage");
    let mut latin1 = b"caf\xe9 cr\xe8me ".to_vec();
    latin1.extend(b"plain words ".repeat(20));
    let many: Vec<&str> = vec!["page"; 60];
    let r = upload(
        &s,
        &a.token,
        &[
            ("broken.pdf", "application/pdf", corrupt),
            ("latin1.txt", "text/plain", latin1),
            ("long.pdf", "application/pdf", pdf(&many)),
            ("ok.md", "text/markdown", HANDBOOK.as_bytes().to_vec()),
        ],
        None,
    )
    .await;
    let code = r.status.as_u16();
    assert!(code == 202 || code == 415, "{}", r.text);
    if code == 202 {
        let docs = r.body["data"].as_array().expect("data").clone();
        let mut failed = 0;
        for d in &docs {
            let done = wait_done(&s, &a.token, d["id"].as_str().expect("id")).await;
            if done["name"] == "ok.md" {
                assert_eq!(
                    done["status"], "ready",
                    "a failing document never blocks the others"
                );
            } else {
                assert_eq!(done["status"], "failed", "{done}");
                assert!(
                    done["error"].as_str().is_some_and(|e| e.len() > 10),
                    "a clear reason: {done}"
                );
                failed += 1;
            }
        }
        assert_eq!(failed, 3);
    }
    s.get("/api/health", &a.token).await.expect(200);
}

#[tokio::test]
async fn knowledge_is_isolated_between_tenants_and_roles() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let b = s.register("b@x.test", "B").await;
    let user = s
        .invite_and_accept(&a, &a.tenant_id, "u@x.test", "TENANT_USER")
        .await;
    let r = upload(
        &s,
        &a.token,
        &[("handbook.md", "text/markdown", HANDBOOK.as_bytes().to_vec())],
        None,
    )
    .await;
    let id = r.body["data"][0]["id"].as_str().expect("id").to_string();
    wait_done(&s, &a.token, &id).await;
    // The same content in B is not a duplicate (per tenant), and B never sees A's chunks.
    let rb = upload(
        &s,
        &b.token,
        &[(
            "other.md",
            "text/markdown",
            b"# Other\n\nNothing about holidays here, just parking rules.".to_vec(),
        )],
        None,
    )
    .await;
    rb.expect(202);
    wait_done(&s, &b.token, rb.body["data"][0]["id"].as_str().expect("id")).await;
    let r = s
        .search(
            &b.token,
            json!({"query": "vacation days twenty-five", "mode": "keyword"}),
        )
        .await;
    assert!(!r.text.contains("twenty-five"), "{}", r.text);
    for (m, path) in [
        (reqwest::Method::GET, format!("/api/documents/{id}")),
        (reqwest::Method::GET, format!("/api/documents/{id}/chunks")),
        (reqwest::Method::DELETE, format!("/api/documents/{id}")),
        (
            reqwest::Method::POST,
            format!("/api/documents/{id}/process"),
        ),
    ] {
        s.req(m.clone(), &path, Some(&b.token), None)
            .await
            .expect_err(404, "document_not_found");
    }
    // TENANT_USER reads and searches, but cannot upload or delete.
    s.get(&format!("/api/documents/{id}"), &user.token)
        .await
        .expect(200);
    s.search(&user.token, json!({"query": "vacation"}))
        .await
        .expect(200);
    upload(
        &s,
        &user.token,
        &[("x.md", "text/markdown", b"# x\n\ny".to_vec())],
        None,
    )
    .await
    .expect_err(403, "forbidden");
    s.delete(&format!("/api/documents/{id}"), &user.token)
        .await
        .expect_err(403, "forbidden");
}

#[tokio::test]
async fn agents_restrict_search_and_train_attaches_documents() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let bot = s
        .post("/api/agents", Some(&a.token), json!({"name": "HR"}))
        .await;
    let bot_id = bot.body["id"].as_str().expect("id").to_string();
    let r = upload(
        &s,
        &a.token,
        &[("handbook.md", "text/markdown", HANDBOOK.as_bytes().to_vec())],
        Some(&bot_id),
    )
    .await;
    r.expect(202);
    let hid = r.body["data"][0]["id"].as_str().expect("id").to_string();
    assert_eq!(r.body["data"][0]["agentIds"], json!([bot_id]));
    let other = upload(
        &s,
        &a.token,
        &[(
            "parking.md",
            "text/markdown",
            b"# Parking\n\nVacation parking is free on weekends.".to_vec(),
        )],
        None,
    )
    .await;
    let pid = other.body["data"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_done(&s, &a.token, &hid).await;
    wait_done(&s, &a.token, &pid).await;
    let agent = s.get(&format!("/api/agents/{bot_id}"), &a.token).await;
    assert_eq!(agent.body["documentIds"], json!([hid]));
    let r = s
        .search(
            &a.token,
            json!({"query": "vacation", "agentId": bot_id, "mode": "keyword"}),
        )
        .await;
    let names: Vec<&str> = r.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|h| h["documentName"].as_str())
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| *n == "handbook.md"),
        "{names:?}"
    );
    // Train attaches the parking doc; the job can be polled.
    let job = s
        .post(
            &format!("/api/agents/{bot_id}/train"),
            Some(&a.token),
            json!({"documentIds": [pid]}),
        )
        .await;
    job.expect(202);
    let jid = job.body["id"].as_str().expect("job id").to_string();
    let t0 = Instant::now();
    loop {
        let j = s.get(&format!("/api/jobs/{jid}"), &a.token).await;
        if j.body["status"] == "done" {
            break;
        }
        assert!(j.body["status"] != "failed", "{}", j.text);
        assert!(t0.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = s
        .search(
            &a.token,
            json!({"query": "parking", "agentId": bot_id, "mode": "keyword"}),
        )
        .await;
    assert_eq!(
        r.body["data"][0]["documentName"], "parking.md",
        "{}",
        r.text
    );
    s.search(&a.token, json!({"query": "x", "mode": "vector"}))
        .await
        .expect_err(422, "embeddings_unavailable");
}

#[tokio::test]
async fn restart_keeps_documents_chunks_and_results() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let r = upload(
        &s,
        &a.token,
        &[("handbook.md", "text/markdown", HANDBOOK.as_bytes().to_vec())],
        None,
    )
    .await;
    let id = r.body["data"][0]["id"].as_str().expect("id").to_string();
    wait_done(&s, &a.token, &id).await;
    let q = json!({"query": "meals business trips", "mode": "keyword"});
    let before = s.search(&a.token, q.clone()).await;
    let chunks_before = s
        .get(&format!("/api/documents/{id}/chunks"), &a.token)
        .await;
    let dir = s.stop().await;
    // A lost text index is rebuilt from the store at start.
    std::fs::remove_dir_all(dir.path().join("index/text")).expect("remove index");
    let s = start_in(dir, |_| {}).await;
    let after = s.search(&a.token, q).await;
    assert_eq!(before.body["data"], after.body["data"]);
    assert_eq!(
        chunks_before.body,
        s.get(&format!("/api/documents/{id}/chunks"), &a.token)
            .await
            .body
    );
}

#[tokio::test]
async fn paraphrases_are_found_by_vector_and_hybrid_but_not_keyword() {
    let Some((model, ort)) = crate::test_model::model_and_runtime(
        "knowledge::paraphrases_are_found_by_vector_and_hybrid_but_not_keyword",
    ) else {
        return;
    };
    let s = start_with(onnx(&model, &ort)).await;
    let health = s.get("/api/health", "").await;
    assert!(
        health.body["embeddings"]
            .as_str()
            .is_some_and(|e| e.contains("onnx")),
        "{}",
        health.text
    );
    let a = s.register("a@x.test", "A").await;
    let extra = "# Office\n\n## Parking\n\nThe garage opens at seven and closes at midnight.\n\n## Kitchen\n\nPlease clean the coffee machine after use.\n\n## Security\n\nVisitors must sign in at the front desk.\n";
    let r = upload(
        &s,
        &a.token,
        &[
            ("handbook.md", "text/markdown", HANDBOOK.as_bytes().to_vec()),
            ("office.md", "text/markdown", extra.as_bytes().to_vec()),
        ],
        None,
    )
    .await;
    for d in r.body["data"].as_array().expect("data") {
        let done = wait_done(&s, &a.token, d["id"].as_str().expect("id")).await;
        assert_eq!(done["status"], "ready", "{done}");
    }
    let chunks = s
        .get(
            &format!(
                "/api/documents/{}/chunks",
                r.body["data"][0]["id"].as_str().expect("id")
            ),
            &a.token,
        )
        .await;
    assert!(
        chunks.body["data"][0]["embeddingModel"]
            .as_str()
            .is_some_and(|m| m.contains("onnx")),
        "{}",
        chunks.text
    );
    let question = "how much annual leave do staff receive";
    let in_top3 = |r: &Resp| {
        r.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .take(3)
            .any(|h| h["text"].as_str().unwrap_or("").contains("twenty-five"))
    };
    let kw = s
        .search(&a.token, json!({"query": question, "mode": "keyword"}))
        .await;
    assert!(
        !in_top3(&kw),
        "keyword alone should miss the paraphrase: {}",
        kw.text
    );
    for mode in ["vector", "hybrid"] {
        let r = s
            .search(&a.token, json!({"query": question, "mode": mode}))
            .await;
        r.expect(200);
        assert_eq!(r.body["mode"], mode);
        assert!(
            in_top3(&r),
            "{mode} should find the paraphrase in the top 3: {}",
            r.text
        );
    }
    let ids = |r: &Resp| -> Vec<String> {
        r.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|h| h["chunkId"].to_string())
            .collect()
    };
    let model_id = chunks.body["data"][0]["embeddingModel"]
        .as_str()
        .expect("model")
        .to_string();
    let before = s
        .search(&a.token, json!({"query": question, "mode": "vector"}))
        .await;
    let data = s.data_dir();
    let dir = s.stop().await;
    // The vector index's dump keeps the slot list (and graph), not the vectors: the store
    // holds them once, and a restart reads them back from it.
    let tdir = tenant_vectors(&data, &model_id, &a.tenant_id);
    let current = std::fs::read_to_string(tdir.join("CURRENT")).expect("CURRENT");
    let generation = tdir.join(current.trim());
    assert!(generation.join("meta.bin").exists());
    assert!(
        !generation.join("vectors.f16").exists(),
        "the dump keeps a second copy of the vectors"
    );
    let s = start_in(dir, onnx(&model, &ort)).await;
    let reloaded = s
        .search(&a.token, json!({"query": question, "mode": "vector"}))
        .await;
    reloaded.expect(200);
    assert_eq!(ids(&before), ids(&reloaded), "{}", reloaded.text);

    // A lost vector index is rebuilt at start from the vectors the store keeps (its own
    // table, apart from the chunk records): no re-embedding, the same answers.
    let dir = s.stop().await;
    std::fs::remove_dir_all(dir.path().join("index/vectors")).expect("remove index");
    let s = start_in(dir, onnx(&model, &ort)).await;
    let after = s
        .search(&a.token, json!({"query": question, "mode": "vector"}))
        .await;
    after.expect(200);
    assert!(in_top3(&after), "after the rebuild: {}", after.text);
    assert_eq!(ids(&before), ids(&after));
}

#[tokio::test]
async fn embedding_settings_per_tenant_and_reembedding() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let user = s
        .invite_and_accept(&a, &a.tenant_id, "u@x.test", "TENANT_USER")
        .await;
    let r = s.get("/api/settings/embeddings", &a.token).await;
    r.expect(200);
    assert!(
        r.body["modelId"].is_null(),
        "keyword-only by default in tests: {}",
        r.text
    );
    s.get("/api/settings/embeddings", &user.token)
        .await
        .expect_err(403, "forbidden");
    s.put(
        "/api/settings/embeddings",
        &a.token,
        json!({"provider": "magic"}),
    )
    .await
    .expect_err(400, "validation_failed");
    s.put(
        "/api/settings/embeddings",
        &a.token,
        json!({"modelFolder": "../../etc"}),
    )
    .await
    .expect_err(400, "validation_failed");
    let r = s
        .put(
            "/api/settings/embeddings",
            &a.token,
            json!({"provider": "none", "apiKey": "sk-embed-secret"}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["apiKeySet"], true);
    assert!(!r.text.contains("sk-embed-secret"));

    let Some((model, ort)) = crate::test_model::model_and_runtime(
        "knowledge::embedding_settings_per_tenant_and_reembedding (its re-embedding part)",
    ) else {
        return;
    };
    // A server with the runtime but no global model; the tenant picks a model folder.
    let s = start_with(move |c| {
        c.ort_dylib_path = Some(ort);
        c.embeddings_provider = Some("none".into());
    })
    .await;
    let a = s.register("a@x.test", "A").await;
    let doc = upload(
        &s,
        &a.token,
        &[("handbook.md", "text/markdown", HANDBOOK.as_bytes().to_vec())],
        None,
    )
    .await;
    let id = doc.body["data"][0]["id"].as_str().expect("id").to_string();
    wait_done(&s, &a.token, &id).await;
    let before = s
        .get(&format!("/api/documents/{id}/chunks"), &a.token)
        .await;
    assert!(
        before.body["data"][0]["embeddingModel"].is_null(),
        "{}",
        before.text
    );
    std::fs::create_dir_all(s.data_dir().join("models")).expect("mkdir");
    std::os::unix::fs::symlink(&model, s.data_dir().join("models/mini")).expect("symlink");
    let r = s
        .put(
            "/api/settings/embeddings",
            &a.token,
            json!({"provider": "onnx", "modelFolder": "mini"}),
        )
        .await;
    r.expect(200);
    assert!(
        r.body["modelId"]
            .as_str()
            .is_some_and(|m| m.contains("onnx")),
        "{}",
        r.text
    );
    // The chunks are re-embedded in the background; the settings page shows how far it
    // has come, and once it is done vector search works.
    assert!(
        r.body["reembedding"]["total"].as_u64() > Some(0),
        "{}",
        r.text
    );
    wait_reembedded(&s, &a.token).await;
    let c = s
        .get(&format!("/api/documents/{id}/chunks"), &a.token)
        .await;
    assert!(
        c.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .all(|c| c["embeddingModel"].is_string()),
        "{}",
        c.text
    );
    let v = s
        .search(
            &a.token,
            json!({"query": "annual leave for staff", "mode": "vector"}),
        )
        .await;
    v.expect(200);
    assert!(
        v.body["data"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("twenty-five"),
        "{}",
        v.text
    );
}

/// The settings page of a tenant, once re-embedding has finished (polled, bounded).
async fn wait_reembedded(s: &Server, token: &str) -> Resp {
    let t0 = Instant::now();
    loop {
        let r = s.get("/api/settings/embeddings", token).await;
        r.expect(200);
        if r.body["reembedding"].is_null() {
            return r;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "re-embedding did not finish: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A search answered 200 with `needle` in one of its first three hits.
fn finds(r: &Resp, needle: &str) -> bool {
    r.expect(200);
    r.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .take(3)
        .any(|h| h["text"].as_str().unwrap_or("").contains(needle))
}

/// Waits for the tenant's re-embedding to end, then checks searches moved to `model` and
/// still find the paraphrase by meaning; returns the settings page.
async fn switched_to(s: &Server, token: &str, model: &str, vector: &Value) -> Resp {
    let after = wait_reembedded(s, token).await;
    assert_eq!(after.body["searchModelId"], model, "{}", after.text);
    assert!(finds(&s.search(token, vector.clone()).await, "twenty-five"));
    after
}

/// Every chunk of document `id` carries `model`.
async fn chunks_carry(s: &Server, token: &str, id: &str, model: &str) {
    let chunks = s.get(&format!("/api/documents/{id}/chunks"), token).await;
    assert!(
        chunks.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .all(|c| c["embeddingModel"] == model),
        "{}",
        chunks.text
    );
}

/// The server's embeddings from the ONNX model folder `model`, with the runtime `ort`.
fn onnx(
    model: &std::path::Path,
    ort: &std::path::Path,
) -> impl FnOnce(&mut aigentable::config::Config) + use<> {
    let (model, ort) = (model.to_path_buf(), ort.to_path_buf());
    move |c| {
        c.embeddings_provider = Some("onnx".into());
        c.embeddings_model_dir = Some(model);
        c.ort_dylib_path = Some(ort);
    }
}

/// A tenant's vector-index folder under a model's index, as the index names it.
fn tenant_vectors(data: &std::path::Path, model_id: &str, tenant: &str) -> std::path::PathBuf {
    let model: String = model_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    data.join("index/vectors")
        .join(model)
        .join(format!("t-{}", hex::encode(tenant)))
}

/// Whether the embeddings settings still show a change of model under way. Searches move to
/// the new model when re-embedding is complete, a moment before the progress is cleared:
/// a view with every chunk done and the new model answering is a finished switch.
fn still_switching(settings: &Value, new: &str) -> bool {
    let p = &settings["reembedding"];
    let finished = settings["searchModelId"] == new && p["done"] == p["total"];
    !p.is_null() && !finished
}

#[tokio::test]
async fn switching_model_keeps_semantic_search_until_reembedding_ends() {
    let test = "knowledge::switching_model_keeps_semantic_search_until_reembedding_ends";
    let Some((model, ort)) = crate::test_model::model_and_runtime(test) else {
        return;
    };
    let Some((mpnet, _)) = crate::test_model::mpnet_and_runtime(test) else {
        return;
    };
    let s = start_with(onnx(&model, &ort)).await;
    let a = s.register("a@x.test", "A").await;
    let r = upload(
        &s,
        &a.token,
        &[("handbook.md", "text/markdown", HANDBOOK.as_bytes().to_vec())],
        None,
    )
    .await;
    let id = r.body["data"][0]["id"].as_str().expect("id").to_string();
    assert_eq!(wait_done(&s, &a.token, &id).await["status"], "ready");
    // Enough other chunks that re-embedding them with mpnet takes a while.
    let topics = [
        "bicycles",
        "printers",
        "coffee",
        "windows",
        "plants",
        "lockers",
        "badges",
        "heating",
        "lifts",
        "recycling",
        "laptops",
        "phones",
        "mail",
        "keys",
        "fire drills",
        "showers",
        "desks",
        "monitors",
        "chairs",
        "umbrellas",
        "meeting rooms",
        "whiteboards",
        "fridges",
        "kettles",
        "lamps",
        "cables",
        "headsets",
        "water",
        "snacks",
        "towels",
    ];
    let files: Vec<(String, Vec<u8>)> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                format!("note-{i}.md"),
                format!(
                    "# Note {i}\n\nRules about {t}: ask the office team about {t} on floor {i}.\n"
                )
                .into_bytes(),
            )
        })
        .collect();
    for (name, body) in &files {
        let r = upload(
            &s,
            &a.token,
            &[(name.as_str(), "text/markdown", body.clone())],
            None,
        )
        .await;
        let d = r.body["data"][0]["id"].as_str().expect("id").to_string();
        assert_eq!(wait_done(&s, &a.token, &d).await["status"], "ready");
    }
    let before = s.get("/api/settings/embeddings", &a.token).await;
    let mini = before.body["modelId"]
        .as_str()
        .expect("modelId")
        .to_string();
    assert_eq!(
        before.body["searchModelId"],
        mini.as_str(),
        "{}",
        before.text
    );
    assert!(before.body["reembedding"].is_null(), "{}", before.text);
    // Only vector search answers this paraphrase (no word of it is in the passage's).
    let question = "how much annual leave do staff receive";
    let vector = json!({"query": question, "mode": "vector"});
    assert!(finds(
        &s.search(&a.token, vector.clone()).await,
        "twenty-five"
    ));

    std::fs::create_dir_all(s.data_dir().join("models")).expect("mkdir");
    std::os::unix::fs::symlink(&mpnet, s.data_dir().join("models/mpnet")).expect("symlink");
    let r = s
        .put(
            "/api/settings/embeddings",
            &a.token,
            json!({"provider": "onnx", "modelFolder": "mpnet"}),
        )
        .await;
    r.expect(200);
    let new = r.body["modelId"].as_str().expect("modelId").to_string();
    assert!(new.contains("mpnet"), "{}", r.text);
    assert_ne!(new, mini);
    // Until the new model has every chunk, searches use the old one, and the page says so.
    let during = r.body["reembedding"].clone();
    assert!(
        during["total"].as_u64().is_some_and(|t| t > 0),
        "{}",
        r.text
    );
    assert_eq!(r.body["searchModelId"], mini.as_str(), "{}", r.text);
    let mut polls_during = 0;
    let hit = s.search(&a.token, vector.clone()).await;
    let state = s.get("/api/settings/embeddings", &a.token).await;
    if !state.body["reembedding"].is_null() {
        assert!(
            finds(&hit, "twenty-five"),
            "lost during the switch: {}",
            hit.text
        );
        polls_during += 1;
    }

    // A document added during the switch is embedded for both models.
    let extra = "# Office\n\n## Parking\n\nThe garage opens at seven and closes at midnight.\n";
    let r = upload(
        &s,
        &a.token,
        &[("office.md", "text/markdown", extra.as_bytes().to_vec())],
        None,
    )
    .await;
    let office = r.body["data"][0]["id"].as_str().expect("id").to_string();
    let mut office_during = false;
    let t0 = Instant::now();
    loop {
        // Searched first, then the state read: a search seen before an unfinished state
        // was certainly answered during the switch.
        let hit = s.search(&a.token, vector.clone()).await;
        let found = finds(&hit, "twenty-five");
        let office_ready = s
            .get(&format!("/api/documents/{office}"), &a.token)
            .await
            .body["status"]
            == "ready";
        let parking = if office_ready {
            finds(
                &s.search(
                    &a.token,
                    json!({"query": "when can I leave my car in the building", "mode": "vector"}),
                )
                .await,
                "garage",
            )
        } else {
            false
        };
        let state = s.get("/api/settings/embeddings", &a.token).await;
        if !still_switching(&state.body, &new) {
            break;
        }
        assert!(
            found,
            "vector search lost its passage during the switch: {}",
            hit.text
        );
        assert_eq!(state.body["searchModelId"], mini.as_str(), "{}", state.text);
        assert_eq!(state.body["modelId"], new.as_str(), "{}", state.text);
        let p = &state.body["reembedding"];
        assert!(p["done"].as_u64() <= p["total"].as_u64(), "{}", state.text);
        polls_during += 1;
        if office_ready {
            assert!(
                parking,
                "a document added during the switch is found by meaning"
            );
            office_during = true;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "re-embedding did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(polls_during > 0, "the switch ended before the first search");
    assert_eq!(wait_done(&s, &a.token, &office).await["status"], "ready");

    // Done: the new space answers, the chunks carry the new model, the old space forgot us.
    switched_to(&s, &a.token, &new, &vector).await;
    chunks_carry(&s, &a.token, &id, &new).await;
    let data = s.data_dir();
    let dir = s.stop().await;
    assert!(
        !tenant_vectors(&data, &mini, &a.tenant_id).exists(),
        "the old model's index keeps the tenant's files"
    );
    assert!(tenant_vectors(&data, &new, &a.tenant_id).exists());
    eprintln!(
        "switch: {polls_during} polls during the switch; office doc ready during it: {office_during}"
    );

    // Back to the server's model after a restart: MiniLM re-embeds while mpnet answers.
    let s = start_in(dir, onnx(&model, &ort)).await;
    let r = s
        .put(
            "/api/settings/embeddings",
            &a.token,
            json!({"provider": null, "modelFolder": null}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["modelId"], mini.as_str(), "{}", r.text);
    switched_to(&s, &a.token, &mini, &vector).await;

    // A restart in the middle of a switch keeps the old model answering and resumes.
    let r = s
        .put(
            "/api/settings/embeddings",
            &a.token,
            json!({"provider": "onnx", "modelFolder": "mpnet"}),
        )
        .await;
    r.expect(200);
    let dir = s.stop().await;
    let s = start_in(dir, onnx(&model, &ort)).await;
    let hit = s.search(&a.token, vector.clone()).await;
    let state = s.get("/api/settings/embeddings", &a.token).await;
    assert_eq!(state.body["modelId"], new.as_str(), "{}", state.text);
    if still_switching(&state.body, &new) {
        assert_eq!(state.body["searchModelId"], mini.as_str(), "{}", state.text);
        assert!(
            finds(&hit, "twenty-five"),
            "lost after a restart: {}",
            hit.text
        );
        eprintln!("switch: restarted in the middle of it");
    }
    switched_to(&s, &a.token, &new, &vector).await;
}

/// A folder holding only MiniLM's int8 graph under another name: another model id, and one
/// the test can remove.
fn int8_only_copy(model: &std::path::Path, dir: &std::path::Path) -> std::path::PathBuf {
    let m = dir.join("mini-int8");
    std::fs::create_dir_all(m.join("onnx")).expect("mkdir");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "config.json",
        "special_tokens_map.json",
        "1_Pooling",
        "onnx/model_quantized.onnx",
    ] {
        if model.join(f).exists() {
            std::os::unix::fs::symlink(model.join(f), m.join(f)).expect("symlink");
        }
    }
    m
}

#[tokio::test]
async fn changing_the_server_model_keeps_semantic_search_until_reembedding_ends() {
    let test = "knowledge::changing_the_server_model_keeps_semantic_search_until_reembedding_ends";
    let Some((model, ort)) = crate::test_model::model_and_runtime(test) else {
        return;
    };
    let s = start_with(onnx(&model, &ort)).await;
    let a = s.register("a@x.test", "A").await;
    let r = upload(
        &s,
        &a.token,
        &[("handbook.md", "text/markdown", HANDBOOK.as_bytes().to_vec())],
        None,
    )
    .await;
    let id = r.body["data"][0]["id"].as_str().expect("id").to_string();
    assert_eq!(wait_done(&s, &a.token, &id).await["status"], "ready");
    // Enough other chunks that re-embedding them takes a moment after a restart.
    let notes: Vec<(String, Vec<u8>)> = (0..120)
        .map(|i| {
            let body = format!(
                "# Note {i}\n\nRoom {i} of the east wing is booked through the front desk; \
                 its projector, its cables and its whiteboard markers are checked every \
                 Monday by the facilities team, who also keep the key cabinet on floor {} \
                 and answer questions about room {i} by phone on extension {}.\n",
                i % 7,
                4000 + i
            );
            (format!("note-{i}.md"), body.into_bytes())
        })
        .collect();
    for batch in notes.chunks(10) {
        let files: Vec<(&str, &str, Vec<u8>)> = batch
            .iter()
            .map(|(n, b)| (n.as_str(), "text/markdown", b.clone()))
            .collect();
        let r = upload(&s, &a.token, &files, None).await;
        r.expect(202);
        for d in r.body["data"].as_array().expect("data") {
            let d = d["id"].as_str().expect("id");
            assert_eq!(wait_done(&s, &a.token, d).await["status"], "ready");
        }
    }
    let before = s.get("/api/settings/embeddings", &a.token).await;
    let fp32 = before.body["modelId"]
        .as_str()
        .expect("modelId")
        .to_string();
    assert!(fp32.contains(":fp32:"), "{}", before.text);
    let question = "how much annual leave do staff receive";
    let vector = json!({"query": question, "mode": "vector"});
    assert!(finds(
        &s.search(&a.token, vector.clone()).await,
        "twenty-five"
    ));
    let dir = s.stop().await;

    // The operator changes the server's model (another folder, the int8 graph) and restarts:
    // the tenant's searches keep the fp32 model until its chunks are re-embedded.
    let models = tempfile::tempdir().expect("tempdir");
    let int8_dir = int8_only_copy(&model, models.path());
    let s = start_in(dir, onnx(&int8_dir, &ort)).await;
    let mut polls_during = 0;
    let t0 = Instant::now();
    let int8 = loop {
        let hit = s.search(&a.token, vector.clone()).await;
        let state = s.get("/api/settings/embeddings", &a.token).await;
        let int8 = state.body["modelId"].as_str().expect("modelId").to_string();
        assert!(int8.contains(":int8:"), "{}", state.text);
        if !still_switching(&state.body, &int8) {
            break int8;
        }
        assert_eq!(state.body["searchModelId"], fp32.as_str(), "{}", state.text);
        assert_eq!(state.body["vectorSearch"]["status"], "ok", "{}", state.text);
        assert!(
            finds(&hit, "twenty-five"),
            "vector search lost its passage during the server's change: {}",
            hit.text
        );
        polls_during += 1;
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "re-embedding did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(polls_during > 0, "the switch ended before the first search");
    switched_to(&s, &a.token, &int8, &vector).await;
    chunks_carry(&s, &a.token, &id, &int8).await;
    let data = s.data_dir();
    let dir = s.stop().await;
    assert!(
        !tenant_vectors(&data, &fp32, &a.tenant_id).exists(),
        "the previous model's index keeps the tenant's files"
    );
    eprintln!("server switch: {polls_during} polls during it");

    // Back to fp32, but the int8 folder is gone: nothing can answer by meaning until the
    // chunks are re-embedded, and the settings page says why; keyword search carries on.
    std::fs::remove_dir_all(&int8_dir).expect("rm");
    let s = start_in(dir, onnx(&model, &ort)).await;
    let mut polls_missing = 0;
    let t0 = Instant::now();
    loop {
        let hybrid = s
            .search(&a.token, json!({"query": "twenty-five vacation days"}))
            .await;
        let vector_only = s.search(&a.token, vector.clone()).await;
        let state = s.get("/api/settings/embeddings", &a.token).await;
        assert_eq!(state.body["modelId"], fp32.as_str(), "{}", state.text);
        if !still_switching(&state.body, &fp32) {
            break;
        }
        let status = &state.body["vectorSearch"];
        assert_eq!(status["status"], "unavailable", "{}", state.text);
        assert!(
            status["reason"]
                .as_str()
                .is_some_and(|r| r.contains(int8.as_str())),
            "the reason names the missing model: {}",
            state.text
        );
        assert!(state.body["searchModelId"].is_null(), "{}", state.text);
        assert!(finds(&hybrid, "twenty-five"), "{}", hybrid.text);
        assert_eq!(hybrid.body["mode"], "keyword", "{}", hybrid.text);
        assert!(
            hybrid.body["warnings"]
                .as_array()
                .is_some_and(|w| !w.is_empty()),
            "{}",
            hybrid.text
        );
        vector_only.expect_err(422, "embeddings_unavailable");
        polls_missing += 1;
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "re-embedding did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        polls_missing > 0,
        "the switch ended before the first search"
    );
    let after = wait_reembedded(&s, &a.token).await;
    assert_eq!(after.body["searchModelId"], fp32.as_str(), "{}", after.text);
    assert_eq!(after.body["vectorSearch"]["status"], "ok", "{}", after.text);
    assert!(finds(&s.search(&a.token, vector).await, "twenty-five"));
}

/// A tenant moved to another install with the same model answers by meaning there: its
/// vectors are built from the imported store even though that install's vector index
/// already serves other tenants (it used to build only what it knew was missing).
#[tokio::test]
async fn an_imported_tenant_is_found_by_meaning_in_the_install_it_moved_to() {
    let Some((model, ort)) = crate::test_model::model_and_runtime(
        "knowledge::an_imported_tenant_is_found_by_meaning_in_the_install_it_moved_to",
    ) else {
        return;
    };
    let question = "how much annual leave do staff receive";
    let in_top3 = |r: &Resp| {
        r.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .take(3)
            .any(|h| h["text"].as_str().unwrap_or("").contains("twenty-five"))
    };

    // The install the business leaves.
    let s = start_with(onnx(&model, &ort)).await;
    let a = s.register("owner@moving.test", "Moving Co").await;
    let r = upload(
        &s,
        &a.token,
        &[("handbook.md", "text/markdown", HANDBOOK.as_bytes().to_vec())],
        None,
    )
    .await;
    let doc = r.body["data"][0]["id"].as_str().expect("id").to_string();
    assert_eq!(wait_done(&s, &a.token, &doc).await["status"], "ready");
    let resp = export_tenant(&s, &a, Some("correct horse battery")).await;
    let archive = resp.bytes().await.expect("bytes").to_vec();

    // The install it moves to already serves a tenant with vectors, from an index it
    // loaded at start (a fresh install would build every tenant it meets).
    let s2 = start_with(onnx(&model, &ort)).await;
    let here = s2.register("owner@here.test", "Here Co").await;
    let r = upload(
        &s2,
        &here.token,
        &[(
            "office.md",
            "text/markdown",
            b"# Office\n\nThe garage opens at seven and closes at midnight.\n".to_vec(),
        )],
        None,
    )
    .await;
    let d = r.body["data"][0]["id"].as_str().expect("id").to_string();
    assert_eq!(wait_done(&s2, &here.token, &d).await["status"], "ready");
    let dir = s2.stop().await;
    let s2 = start_in(dir, onnx(&model, &ort)).await;
    let root2 = s2.root().await;
    let r = import_tenant(
        &s2,
        &root2.token,
        &archive,
        Some("correct horse battery"),
        "",
    )
    .await;
    r.expect(201);
    let b = s2.login("owner@moving.test", "password-123").await;
    let r = s2
        .search(&b.token, json!({"query": question, "mode": "vector"}))
        .await;
    r.expect(200);
    assert!(
        in_top3(&r),
        "the imported tenant's paraphrase is found by vector search: {}",
        r.text
    );
    // And not by the tenant that was there before.
    let r = s2
        .search(&here.token, json!({"query": question, "mode": "vector"}))
        .await;
    assert!(!r.text.contains("twenty-five"), "{}", r.text);
}

/// A document deleted while its tenant re-embeds: a batch that stored the new vectors of the
/// document's chunks before the delete committed, and writes the index only after the
/// delete (and its `document.unindex` job) took the document out of it, must not bring its
/// vectors back. The two halves of the batch are called by hand, the delete between them.
#[tokio::test]
async fn a_document_deleted_while_re_embedding_gets_no_vectors_back() {
    use aigentable::model::{Chunk, Job, JobStatus};
    use aigentable::types::{DocumentId, TenantId};
    let test = "knowledge::a_document_deleted_while_re_embedding_gets_no_vectors_back";
    let Some((model, ort)) = crate::test_model::model_and_runtime(test) else {
        return;
    };
    let s = start_with(onnx(&model, &ort)).await;
    let a = s.register("a@x.test", "A").await;
    let tenant = TenantId::parse(&a.tenant_id).expect("tenant id");
    let gone = upload_doc(
        &s,
        &a.token,
        "gone.md",
        "text/markdown",
        HANDBOOK.as_bytes(),
        None,
    )
    .await;
    let kept = upload_doc(
        &s,
        &a.token,
        "kept.md",
        "text/markdown",
        b"# Parking\n\nVisitors park on level two, next to the lifts.\n",
        None,
    )
    .await;
    let (gone, kept) = (
        DocumentId::parse(&gone).expect("doc id"),
        DocumentId::parse(&kept).expect("doc id"),
    );
    let k = s.knowledge.clone();
    let space = k.space_for(&tenant).expect("space").expect("a model");
    let chunks: Vec<Chunk> = s
        .svc
        .store
        .read(|tx| tx.scan::<Chunk>(&tenant, None, |c| c.document_id == gone))
        .expect("chunks");
    assert!(!chunks.is_empty());

    // A batch read the document's chunks, embedded them and stores the vectors...
    let dims = space.index.dims();
    let vectors: Vec<Vec<f32>> = (0..chunks.len())
        .map(|i| {
            let mut v = vec![0.0; dims];
            v[i % dims] = 1.0;
            v
        })
        .collect();
    let items = {
        let (k, t, space) = (k.clone(), tenant.clone(), space.clone());
        tokio::task::spawn_blocking(move || {
            k.store_reembedded(&t, space.model_id(), &chunks, vectors)
        })
        .await
        .expect("join")
        .expect("stored")
    };
    assert!(!items.is_empty());
    // ... the delete commits and takes the document out of the indexes, its job too...
    s.delete(&format!("/api/documents/{gone}"), &a.token)
        .await
        .expect(204);
    let unindexed = |s: &Server| {
        s.svc
            .store
            .read(|tx| {
                tx.scan::<Job>(&tenant, None, |j| {
                    j.kind == aigentable::knowledge::JOB_UNINDEX
                        && j.payload["documentId"].as_str() == Some(gone.as_str())
                })
            })
            .expect("scan jobs")
            .iter()
            .all(|j| j.status == JobStatus::Done)
    };
    let t0 = Instant::now();
    while !unindexed(&s) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "unindex still pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and only then does the batch write the index.
    {
        let (k, t, space, items) = (k.clone(), tenant.clone(), space.clone(), items.clone());
        tokio::task::spawn_blocking(move || k.index_reembedded(&t, &space.index, &items))
            .await
            .expect("join")
            .expect("indexed");
    }

    for (_, _, v) in &items {
        let hits = space.index.search(&tenant, v, None, 10).expect("search");
        assert!(
            hits.iter().all(|h| h.document != gone),
            "the deleted document's vectors came back: {hits:?}"
        );
        assert!(hits.iter().any(|h| h.document == kept), "{hits:?}");
    }
    drop((k, space));
    s.stop().await;
}

/// Reprocessing a document gives it new chunks: the keyword index then holds exactly those
/// (the old ones gone, none twice), and finds them.
#[tokio::test]
async fn a_reprocessed_document_is_found_by_its_new_chunks_only() {
    use aigentable::types::{DocumentId, TenantId};
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let tenant = TenantId::parse(&a.tenant_id).expect("tenant id");
    let id = upload_doc(
        &s,
        &a.token,
        "handbook.md",
        "text/markdown",
        HANDBOOK.as_bytes(),
        None,
    )
    .await;
    let chunk_ids = |r: &Resp| -> Vec<String> {
        r.expect(200);
        let mut ids: Vec<String> = r.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|c| c["id"].as_str().expect("chunk id").to_string())
            .collect();
        ids.sort();
        ids
    };
    let old = chunk_ids(
        &s.get(&format!("/api/documents/{id}/chunks"), &a.token)
            .await,
    );
    s.post(
        &format!("/api/documents/{id}/process"),
        Some(&a.token),
        json!({}),
    )
    .await
    .expect(202);
    assert_eq!(wait_done(&s, &a.token, &id).await["status"], "ready");
    let new = chunk_ids(
        &s.get(&format!("/api/documents/{id}/chunks"), &a.token)
            .await,
    );
    assert_eq!(new.len(), old.len());
    assert!(new.iter().all(|c| !old.contains(c)), "{old:?} {new:?}");

    let doc = DocumentId::parse(&id).expect("doc id");
    let k = s.knowledge.clone();
    let (held, mut found) = tokio::task::spawn_blocking(move || {
        let held = k.text.document_chunks(&tenant, &doc).expect("count");
        let hits = k
            .text
            .search(
                &tenant,
                "vacation expenses meals receipts",
                &Default::default(),
                50,
            )
            .expect("search");
        let found: Vec<String> = hits.iter().map(|h| h.chunk.as_str().to_string()).collect();
        (held, found)
    })
    .await
    .expect("join");
    assert_eq!(
        held,
        new.len(),
        "the keyword index holds the new chunks only"
    );
    found.sort();
    assert_eq!(found, new);
}
