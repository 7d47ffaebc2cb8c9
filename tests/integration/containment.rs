//! One tenant never stops the server: a tenant whose embeddings endpoint answers nonsense
//! loses its vector search (reported by health, its settings page and search warnings),
//! keeps its keyword search, cannot save settings that do not work, and recovers when its
//! setting is fixed; the server starts and every other tenant serves normally.

use crate::common::*;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const HANDBOOK: &str = "# Handbook\n\n## Holidays\n\nEvery employee gets twenty-five paid vacation days per year.\n\n## Parking\n\nThe car park opens at seven and visitors park on level two.\n";

/// Width of the fake model's vectors.
const DIMS: usize = 16;

/// An OpenAI-compatible embeddings endpoint (the upstream edge we do not own): bag-of-words
/// vectors, or a 200 answer that is not an embeddings response at all when `nonsense` is on.
struct FakeEmbeddings {
    base_url: String,
    nonsense: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    hang: tokio::sync::watch::Sender<bool>,
    held: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct FakeState {
    nonsense: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    /// While true, requests are held open without an answer.
    hang: tokio::sync::watch::Receiver<bool>,
    /// Requests held open right now (a client that gives up drops its request).
    held: Arc<AtomicUsize>,
}

/// Counts a held request for as long as it is held.
struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeEmbeddings {
    async fn start() -> Self {
        let (hang, hang_rx) = tokio::sync::watch::channel(false);
        let state = FakeState {
            nonsense: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicUsize::new(0)),
            hang: hang_rx,
            held: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake embeddings");
        });
        FakeEmbeddings {
            base_url: format!("http://{addr}/v1"),
            nonsense: state.nonsense,
            calls: state.calls,
            hang,
            held: state.held,
            _task: task,
        }
    }

    fn answer_nonsense(&self, on: bool) {
        self.nonsense.store(on, Ordering::SeqCst);
    }

    /// Holds every request open (no answer) until called again with `false`.
    fn hang(&self, on: bool) {
        self.hang.send_replace(on);
    }
}

impl Drop for FakeEmbeddings {
    fn drop(&mut self) {
        self._task.abort();
    }
}

async fn embeddings(
    State(s): State<FakeState>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    s.calls.fetch_add(1, Ordering::SeqCst);
    if *s.hang.borrow() {
        s.held.fetch_add(1, Ordering::SeqCst);
        let _held = Held(s.held.clone());
        let mut hang = s.hang.clone();
        let _ = hang.wait_for(|on| !*on).await;
    }
    if s.nonsense.load(Ordering::SeqCst) {
        return axum::Json(json!({"status": "all good", "vectors": "maybe later"}));
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .map(|v| v.as_str().unwrap_or("").to_string())
            .collect(),
        _ => vec![],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"index": i, "embedding": bag_of_words(text)}))
        .collect();
    axum::Json(json!({"data": data, "model": body["model"]}))
}

/// Texts that share words get close vectors, which is all vector search needs here.
fn bag_of_words(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; DIMS];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let h = word.to_lowercase().bytes().fold(2166136261u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(16777619)
        });
        v[h as usize % DIMS] += 1.0;
    }
    if v.iter().all(|x| *x == 0.0) {
        v[0] = 1.0;
    }
    v
}

fn embeddings_override(fake: &FakeEmbeddings, model: &str) -> Value {
    json!({"provider": "openai", "baseUrl": fake.base_url, "model": model})
}

/// Waits until every chunk of the document carries a vector of `model` (re-embedding runs as
/// a background job).
async fn wait_embedded(s: &Server, token: &str, doc: &str, model: &str) {
    let t0 = Instant::now();
    loop {
        let c = s.get(&format!("/api/documents/{doc}/chunks"), token).await;
        c.expect(200);
        let chunks = c.body["data"].as_array().expect("chunks");
        if !chunks.is_empty()
            && chunks
                .iter()
                .all(|c| c["embeddingModel"].as_str() == Some(model))
        {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "re-embedding did not finish: {}",
            c.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The handbook's question in `mode`, asked in `token`'s tenant.
async fn ask(s: &Server, token: &str, mode: &str) -> Resp {
    s.search(token, json!({"query": "vacation days", "mode": mode}))
        .await
}

async fn health(s: &Server, token: &str) -> Value {
    let r = s.get("/api/health", token).await;
    r.expect(200);
    r.body
}

#[tokio::test]
async fn a_tenant_with_a_broken_embeddings_endpoint_never_stops_the_server() {
    let acme_fake = FakeEmbeddings::start().await;
    let fine_fake = FakeEmbeddings::start().await;
    let s = start().await;
    let acme = s.register("admin@acme.test", "Acme").await;
    let fine = s.register("admin@fine.test", "Fine").await;
    let acme_doc = upload_doc(
        &s,
        &acme.token,
        "handbook.md",
        "text/markdown",
        HANDBOOK.as_bytes(),
        None,
    )
    .await;
    let fine_doc = upload_doc(
        &s,
        &fine.token,
        "handbook.md",
        "text/markdown",
        HANDBOOK.as_bytes(),
        None,
    )
    .await;

    // Both tenants bring their own embeddings endpoint; their chunks are re-embedded.
    for (t, fake, model, doc) in [
        (&acme, &acme_fake, "acme-embed", &acme_doc),
        (&fine, &fine_fake, "fine-embed", &fine_doc),
    ] {
        let r = s
            .put(
                "/api/settings/embeddings",
                &t.token,
                embeddings_override(fake, model),
            )
            .await;
        r.expect(200);
        assert_eq!(r.body["vectorSearch"]["status"], "ok", "{}", r.text);
        wait_embedded(&s, &t.token, doc, &format!("openai:{model}")).await;
    }
    let v = ask(&s, &acme.token, "vector").await;
    v.expect(200);
    assert_eq!(
        v.body["data"][0]["documentId"],
        acme_doc.as_str(),
        "{}",
        v.text
    );

    // Acme's endpoint starts answering nonsense, and the server restarts.
    acme_fake.answer_nonsense(true);
    let dir = s.stop().await;
    let s = start_in(dir, |_| {}).await;

    // The other tenant serves normally, vectors included.
    for mode in ["vector", "hybrid"] {
        let r = ask(&s, &fine.token, mode).await;
        r.expect(200);
        assert_eq!(r.body["mode"], mode, "{}", r.text);
        assert!(r.body.get("warnings").is_none(), "{}", r.text);
        assert_eq!(
            r.body["data"][0]["documentId"],
            fine_doc.as_str(),
            "{}",
            r.text
        );
    }
    assert_eq!(
        health(&s, &fine.token).await["vectorSearch"]["status"],
        "ok"
    );

    // Acme keeps its keyword search; hybrid degrades to keywords and says so; vector fails
    // clearly and fast.
    let k = ask(&s, &acme.token, "keyword").await;
    k.expect(200);
    assert_eq!(
        k.body["data"][0]["documentId"],
        acme_doc.as_str(),
        "{}",
        k.text
    );
    let h = ask(&s, &acme.token, "hybrid").await;
    h.expect(200);
    assert_eq!(h.body["mode"], "keyword", "{}", h.text);
    assert!(
        h.body["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("vector search is unavailable")),
        "{}",
        h.text
    );
    assert_eq!(
        h.body["data"][0]["documentId"],
        acme_doc.as_str(),
        "{}",
        h.text
    );
    ask(&s, &acme.token, "vector")
        .await
        .expect_err(422, "embeddings_unavailable");

    // Health and the settings page say why, for the tenant and for the platform admin.
    let mine = health(&s, &acme.token).await;
    assert_eq!(mine["status"], "ok", "{mine}");
    assert_eq!(mine["vectorSearch"]["status"], "unavailable", "{mine}");
    assert!(
        mine["vectorSearch"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{mine}"
    );
    let root = s.root().await;
    let all = health(&s, &root.token).await;
    let outages = all["vectorOutages"].as_array().expect("outages for admins");
    assert_eq!(outages.len(), 1, "{all}");
    assert_eq!(outages[0]["tenantId"], acme.tenant_id.as_str(), "{all}");
    let public = s.req(reqwest::Method::GET, "/api/health", None, None).await;
    assert!(
        public.body.get("vectorOutages").is_none(),
        "{}",
        public.text
    );
    assert!(public.body.get("vectorSearch").is_none(), "{}", public.text);
    let page = s.get("/api/settings/embeddings", &acme.token).await;
    page.expect(200);
    assert_eq!(
        page.body["vectorSearch"]["status"], "unavailable",
        "{}",
        page.text
    );
    assert!(page.body["modelId"].is_null(), "{}", page.text);

    // An upload meanwhile fails with the reason instead of staying in processing.
    let r = upload(
        &s,
        &acme.token,
        &[(
            "notes.md",
            "text/markdown",
            b"# Notes\n\nThe canteen opens at noon.\n".to_vec(),
        )],
        None,
    )
    .await;
    r.expect(202);
    let d = wait_done(
        &s,
        &acme.token,
        r.body["data"][0]["id"].as_str().expect("id"),
    )
    .await;
    assert_eq!(d["status"], "failed", "{d}");
    assert!(
        d["error"]
            .as_str()
            .is_some_and(|e| e.contains("embeddings unavailable")),
        "{d}"
    );

    // Settings that do not work are refused and not saved.
    let broken = FakeEmbeddings::start().await;
    broken.answer_nonsense(true);
    s.put(
        "/api/settings/embeddings",
        &acme.token,
        embeddings_override(&broken, "acme-embed"),
    )
    .await
    .expect_err(422, "embeddings_unavailable");
    let page = s.get("/api/settings/embeddings", &acme.token).await;
    assert_eq!(
        page.body["override"]["baseUrl"],
        acme_fake.base_url.as_str(),
        "{}",
        page.text
    );

    // Fixing the setting brings vector search back, without a restart.
    let fixed = FakeEmbeddings::start().await;
    let r = s
        .put(
            "/api/settings/embeddings",
            &acme.token,
            embeddings_override(&fixed, "acme-embed"),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["vectorSearch"]["status"], "ok", "{}", r.text);
    let v = ask(&s, &acme.token, "vector").await;
    v.expect(200);
    assert_eq!(
        v.body["data"][0]["documentId"],
        acme_doc.as_str(),
        "{}",
        v.text
    );
    let h = ask(&s, &acme.token, "hybrid").await;
    assert_eq!(h.body["mode"], "hybrid", "{}", h.text);
    assert_eq!(
        health(&s, &acme.token).await["vectorSearch"]["status"],
        "ok"
    );
    let all = health(&s, &root.token).await;
    assert_eq!(all["vectorOutages"], json!([]), "{all}");
    assert!(fixed.calls.load(Ordering::SeqCst) > 0);
}

/// A failing endpoint is not called on every search: after one failure the tenant's searches
/// answer by keywords at once, and the same setting is tried again after the retry time.
#[tokio::test]
async fn a_failing_endpoint_is_retried_after_the_retry_time_not_per_search() {
    let fake = FakeEmbeddings::start().await;
    let s = start().await;
    let a = s.register("admin@a.test", "A").await;
    let doc = upload_doc(
        &s,
        &a.token,
        "handbook.md",
        "text/markdown",
        HANDBOOK.as_bytes(),
        None,
    )
    .await;
    s.put(
        "/api/settings/embeddings",
        &a.token,
        embeddings_override(&fake, "m"),
    )
    .await
    .expect(200);
    wait_embedded(&s, &a.token, &doc, "openai:m").await;

    fake.answer_nonsense(true);
    let q = json!({"query": "car park", "mode": "hybrid"});
    let first = s.search(&a.token, q.clone()).await;
    assert_eq!(first.body["mode"], "keyword", "{}", first.text);
    let calls = fake.calls.load(Ordering::SeqCst);
    for _ in 0..3 {
        let r = s.search(&a.token, q.clone()).await;
        assert_eq!(r.body["mode"], "keyword", "{}", r.text);
        assert_eq!(r.body["data"][0]["documentId"], doc.as_str(), "{}", r.text);
    }
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        calls,
        "no call before the retry time"
    );

    // The endpoint works again; after the retry time the next search uses it.
    fake.answer_nonsense(false);
    s.clock
        .advance(aigentable::knowledge::RETRY_UNAVAILABLE + Duration::from_secs(1));
    let r = s.search(&a.token, q).await;
    assert_eq!(r.body["mode"], "hybrid", "{}", r.text);
    assert!(r.body.get("warnings").is_none(), "{}", r.text);
    assert_eq!(health(&s, &a.token).await["vectorSearch"]["status"], "ok");
}

/// A tenant endpoint that hangs (accepts, never answers) must not hold the port: startup
/// restores such a tenant in the background, and the server serves everyone meanwhile.
#[tokio::test]
async fn a_hanging_tenant_endpoint_does_not_hold_up_startup() {
    let fake = FakeEmbeddings::start().await;
    let s = start().await;
    let acme = s.register("admin@acme.test", "Acme").await;
    let other = s.register("admin@other.test", "Other").await;
    s.put(
        "/api/settings/embeddings",
        &acme.token,
        embeddings_override(&fake, "acme-embed"),
    )
    .await
    .expect(200);

    fake.hang(true);
    let dir = s.stop().await;
    // Were recovery to wait for the endpoint, this would return only after the embeddings
    // client gave up on it, and no request would be held below any more.
    let s = start_in(dir, |_| {}).await;
    let t0 = Instant::now();
    while fake.held.load(Ordering::SeqCst) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "startup recovery never called the tenant's endpoint"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The endpoint is still holding the recovery's call, and the server serves.
    let r = s
        .search(
            &other.token,
            json!({"query": "anything", "mode": "keyword"}),
        )
        .await;
    r.expect(200);
    assert_eq!(health(&s, &other.token).await["status"], "ok");
    assert_eq!(fake.held.load(Ordering::SeqCst), 1);
    fake.hang(false);
    s.stop().await;
}
