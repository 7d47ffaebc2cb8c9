//! Chat-turn benchmarks (issue 4): server time per chat turn, time to first streamed token,
//! and concurrent conversations, on one tenant with 100k indexed chunks and a hybrid
//! retrieval agent, against a fake OpenAI-compatible upstream with a fixed delay.
//!
//! ```text
//! cargo run --release --example bench_chat -- [options]
//! ```
//!
//! Options (all optional):
//!
//! * `--model-dir DIR`     embedding model (default /work/shared/models/all-MiniLM-L6-v2)
//! * `--ort PATH`          ONNX Runtime library
//!   (default /work/shared/runtime/onnxruntime-1.32.0/libonnxruntime.so.1.32.0)
//! * `--docs N`            documents to seed (default 500)
//! * `--chunks-per-doc N`  chunks per document (default 200)
//! * `--words N`           words per chunk (default 110)
//! * `--base-texts N`      distinct texts embedded with the real model; chunk vectors are
//!   these, perturbed (default 2000)
//! * `--delay-ms N`        the fake upstream's delay before its answer / first token (default 50)
//! * `--turns N`           measured sequential turns per path (default 200)
//! * `--stream-turns N`    measured streaming turns (default 100)
//! * `--levels LIST`       concurrency levels (default 1,8,32,64,128)
//! * `--level-secs N`      duration of each concurrency level (default 15)
//!
//! Everything runs in this process: the app (`aigentable::build`), the fake upstream and the
//! HTTP client, on 127.0.0.1 only. Every phase is bounded by a count and a time limit.

use aigentable::config::Config;
use aigentable::knowledge::{SearchMode, SearchQuery};
use aigentable::types::{AgentId, TenantId};
use anyhow::{Context, Result, anyhow, bail};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

#[path = "common/seed.rs"]
mod seed;
use seed::{PERTURB_SIGMA, SeedArgs, question, seed};

/// Upper bound of any single HTTP call of the benchmark.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Turns per conversation before a worker starts a new one (history stays realistic).
const TURNS_PER_CONVERSATION: usize = 10;
/// Upper bound on turns of one concurrency level, whatever its duration.
const MAX_TURNS_PER_LEVEL: usize = 50_000;

#[derive(Clone)]
struct Opts {
    seed: SeedArgs,
    delay_ms: u64,
    turns: usize,
    stream_turns: usize,
    levels: Vec<usize>,
    level_secs: u64,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        seed: SeedArgs::default(),
        delay_ms: 50,
        turns: 200,
        stream_turns: 100,
        levels: vec![1, 8, 32, 64, 128],
        level_secs: 15,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| anyhow!("{name} needs a value"));
        if o.seed.take(&a, &mut value)? {
            continue;
        }
        match a.as_str() {
            "--delay-ms" => o.delay_ms = value("--delay-ms")?.parse()?,
            "--turns" => o.turns = value("--turns")?.parse()?,
            "--stream-turns" => o.stream_turns = value("--stream-turns")?.parse()?,
            "--levels" => {
                o.levels = value("--levels")?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?
            }
            "--level-secs" => o.level_secs = value("--level-secs")?.parse()?,
            "-h" | "--help" => {
                println!("usage: bench_chat [options]; see the top of examples/bench_chat.rs");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    o.seed.clamp();
    o.turns = o.turns.clamp(1, 100_000);
    o.stream_turns = o.stream_turns.clamp(1, 100_000);
    o.level_secs = o.level_secs.clamp(1, 600);
    o.levels.retain(|&l| (1..=1024).contains(&l));
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// The fake upstream: POST /v1/chat/completions, stream and non-stream, OpenAI wire format.
// ---------------------------------------------------------------------------------------

/// What the fake saw of one request, keyed by the request's last user message.
#[derive(Clone, Copy, Default)]
struct UpstreamRecord {
    /// Handler entry to the response being handed to hyper (non-stream), or to the last
    /// frame (stream).
    took: Duration,
    /// When the first content frame was handed to hyper (stream only).
    first_token: Option<Instant>,
}

struct Fake {
    delay: Duration,
    records: Mutex<HashMap<String, UpstreamRecord>>,
}

impl Fake {
    fn record(&self, key: &str, f: impl FnOnce(&mut UpstreamRecord)) {
        if let Ok(mut m) = self.records.lock() {
            f(m.entry(key.to_string()).or_default());
        }
    }

    fn take(&self, key: &str) -> Option<UpstreamRecord> {
        self.records.lock().ok()?.remove(key)
    }
}

const ANSWER: &[&str] = &[
    "According ",
    "to ",
    "the ",
    "documents ",
    "[1], ",
    "you ",
    "can ",
    "do ",
    "this ",
    "from ",
    "the ",
    "settings ",
    "page ",
    "[2].",
];

async fn completions(State(fake): State<Arc<Fake>>, body: Bytes) -> Response {
    let t0 = Instant::now();
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "bad json").into_response();
    };
    let key = req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    let model = req["model"].as_str().unwrap_or("fake").to_string();
    let prompt_tokens = body.len() / 4;
    let id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());
    tokio::time::sleep(fake.delay).await;
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": ANSWER.len(),
        "total_tokens": prompt_tokens + ANSWER.len()});
    if req["stream"] != true {
        let v = json!({
            "id": id, "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER.concat(),
                "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage, "system_fingerprint": "fp_fake",
        });
        let took = t0.elapsed();
        fake.record(&key, |r| r.took = took);
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response();
    }
    let chunk = |delta: Value, finish: Option<&str>| {
        let v = json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        format!("data: {v}\n\n")
    };
    let mut frames = Vec::new();
    for (i, piece) in ANSWER.iter().enumerate() {
        let delta = if i == 0 {
            json!({"role": "assistant", "content": piece})
        } else {
            json!({"content": piece})
        };
        frames.push(chunk(delta, None));
    }
    frames.push(chunk(json!({}), Some("stop")));
    let u = json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
        "choices": [], "usage": usage});
    frames.push(format!("data: {u}\n\ndata: [DONE]\n\n"));
    let n = frames.len();
    let stream = futures_util::stream::iter(frames.into_iter().enumerate()).map(move |(i, f)| {
        if i == 0 {
            let now = Instant::now();
            fake.record(&key, |r| r.first_token = Some(now));
        }
        if i + 1 == n {
            let took = t0.elapsed();
            fake.record(&key, |r| r.took = took);
        }
        Ok::<_, std::convert::Infallible>(Bytes::from(f))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn start_fake(delay: Duration) -> Result<(String, Arc<Fake>)> {
    let fake = Arc::new(Fake {
        delay,
        records: Mutex::new(HashMap::new()),
    });
    let router = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(completions))
        .with_state(fake.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((format!("http://{addr}/v1"), fake))
}

// ---------------------------------------------------------------------------------------
// HTTP helpers and statistics.
// ---------------------------------------------------------------------------------------

struct Api {
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(CALL_TIMEOUT);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn new_conversation(&self, agent: &str) -> Result<String> {
        let c = self
            .post("/api/conversations", json!({"agentId": agent}))
            .await?;
        c["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no conversation id in {c}"))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of unsorted samples.
fn pct(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn summary(name: &str, samples: &[f64]) -> String {
    format!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        samples.len(),
        pct(samples, 50.0),
        pct(samples, 90.0),
        pct(samples, 99.0),
        samples.iter().cloned().fold(f64::NAN, f64::max)
    )
}

/// User + system CPU time of this process so far.
/// This process's resident set, in MiB (NaN when /proc is unavailable).
fn vm_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn cpu_time() -> Duration {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|x| x.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// One conversation turn: (end-to-end, the fake's own time).
/// One conversation turn: (end-to-end at the client, the fake's own time, the API's
/// `timing.serverMs`).
async fn turn(api: &Api, fake: &Fake, conv: &str, msg: &str) -> Result<(Duration, Duration, f64)> {
    let t0 = Instant::now();
    let r = api
        .post(
            &format!("/api/conversations/{conv}/messages"),
            json!({"role": "customer", "content": msg}),
        )
        .await?;
    let e2e = t0.elapsed();
    if r["reply"]["status"] == "failed" || r["reply"].is_null() {
        bail!("turn failed: {}", r["reply"]);
    }
    let up = fake
        .take(msg)
        .ok_or_else(|| anyhow!("the fake upstream did not see {msg:?}"))?;
    let reported = r["timing"]["serverMs"].as_f64().unwrap_or(f64::NAN);
    Ok((e2e, up.took, reported))
}

/// One streaming playground turn: (added time to first token, client time to first delta
/// from the request, the fake's own first-token time, engine latencyMs).
async fn stream_turn(
    api: &Api,
    fake: &Fake,
    agent: &str,
    msg: &str,
) -> Result<(Duration, Duration, f64)> {
    let t0 = Instant::now();
    let resp = api
        .http
        .post(format!("{}/api/agents/{agent}/test", api.base))
        .bearer_auth(&api.token)
        .timeout(CALL_TIMEOUT)
        .json(&json!({"message": msg, "stream": true}))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("stream: {}", resp.status());
    }
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut first_delta: Option<Instant> = None;
    let mut latency_ms = f64::NAN;
    while let Some(b) = body.next().await {
        let now = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&b?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let name = event
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .map(str::trim)
                .unwrap_or("");
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .unwrap_or("");
            match name {
                "delta" if first_delta.is_none() => first_delta = Some(now),
                "done" => {
                    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                    latency_ms = v["latencyMs"].as_f64().unwrap_or(f64::NAN);
                }
                "error" => bail!("stream error event: {data}"),
                _ => {}
            }
        }
    }
    let first = first_delta.ok_or_else(|| anyhow!("no delta event"))?;
    let up = fake
        .take(msg)
        .and_then(|r| r.first_token)
        .ok_or_else(|| anyhow!("the fake did not record a first token for {msg:?}"))?;
    Ok((first.saturating_duration_since(up), first - t0, latency_ms))
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = parse_args()?;
    let wall = Instant::now();
    let dir = tempfile::tempdir().context("temp data dir")?;
    let cfg = Config {
        data_dir: dir.path().join("data"),
        rate_limit_auth_per_min: 0,
        rate_limit_api_per_min: 0,
        rate_limit_upload_per_min: 0,
        jwt_expires_in: "4h".into(),
        embeddings_provider: Some("onnx".into()),
        embeddings_model_dir: Some(o.seed.model_dir.clone()),
        ort_dylib_path: Some(o.seed.ort.clone()),
        job_workers: 1,
        log_level: "warn".into(),
        shutdown_timeout_secs: 5,
        // The fake upstream is the tenant's AI base URL, on loopback: the operator allows it.
        outbound_allowed_private_hosts: "127.0.0.1".into(),
        ..Config::default()
    };
    let (fake_url, fake) = start_fake(Duration::from_millis(o.delay_ms)).await?;
    let app = aigentable::build(cfg).await?;
    let knowledge = app.state.knowledge.clone();
    let svc = app.state.svc.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        aigentable::serve_with_listener(app, listener, async {
            let _ = stop_rx.await;
        })
        .await
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let reg: Value = http
        .post(format!("{base}/api/auth/register"))
        .json(
            &json!({"email": "bench@example.com", "password": "bench-password-123",
            "name": "Bench", "tenantName": "Bench Shop"}),
        )
        .send()
        .await?
        .json()
        .await?;
    let api = Api {
        base: base.clone(),
        http,
        token: reg["accessToken"]
            .as_str()
            .ok_or_else(|| anyhow!("register failed: {reg}"))?
            .to_string(),
    };
    // The bench's admin as the domain sees it, for the in-process search calls.
    let caller = svc
        .authenticate_access(&api.token)
        .map_err(|e| anyhow!("authenticating the bench's admin: {e}"))?;
    let tenant = reg["user"]["tenantId"]
        .as_str()
        .and_then(TenantId::parse)
        .ok_or_else(|| anyhow!("no tenant id in {reg}"))?;
    api.call(
        reqwest::Method::PUT,
        "/api/settings/ai",
        Some(json!({"baseUrl": fake_url, "apiKey": "sk-x", "model": "fake"})),
    )
    .await?;
    let agent_v = api
        .post(
            "/api/agents",
            json!({"name": "Support", "retrievalMode": "hybrid",
                "systemPrompt": "You answer customers' questions from the shop's documents."}),
        )
        .await?;
    let agent_str = agent_v["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no agent id"))?
        .to_string();
    let agent = AgentId::parse(&agent_str).ok_or_else(|| anyhow!("bad agent id"))?;

    eprintln!(
        "seeding {} x {} chunks (VmRSS {:.0} MiB) ...",
        o.seed.spec.docs,
        o.seed.spec.chunks_per_doc,
        vm_rss_mib()
    );
    let seeded = {
        let (k, t, a) = (knowledge.clone(), tenant.clone(), agent.clone());
        let o2 = o.clone();
        tokio::task::spawn_blocking(move || {
            seed(&k, &t, &a, &o2.seed.spec, &|what: &str| {
                eprintln!("  VmRSS {:.0} MiB {what}", vm_rss_mib());
            })
        })
        .await??
    };
    let (doc_ids, rep) = seeded;
    // Attach every document through the API (the agent's list is what retrieval filters on).
    let agent_v = api
        .call(
            reqwest::Method::PUT,
            &format!("/api/agents/{agent_str}"),
            Some(json!({"documentIds": doc_ids})),
        )
        .await?;
    let top_k = agent_v["topK"].as_u64().unwrap_or(0);
    knowledge.persist();
    println!("## Setup\n");
    println!(
        "- corpus: {} documents x {} chunks = {} chunks, ~{} words each, {:.1} MB of text",
        o.seed.spec.docs,
        o.seed.spec.chunks_per_doc,
        rep.chunks,
        o.seed.spec.words,
        rep.text_bytes as f64 / 1e6
    );
    println!(
        "- vectors: {} real embeddings (all-MiniLM-L6-v2, 384-d) of distinct synthetic texts, \
         each reused for ~{} chunks of the same topic with N(0, {PERTURB_SIGMA}) noise per \
         dimension, normalised",
        o.seed.spec.base_texts,
        rep.chunks / o.seed.spec.base_texts.max(1)
    );
    println!(
        "- seeding: {:.1} s total (embedding base texts {:.1} s, store {:.1} s, text index {:.1} s, \
         vector index {:.1} s)",
        rep.total.as_secs_f64(),
        rep.embed_base.as_secs_f64(),
        rep.store.as_secs_f64(),
        rep.text_index.as_secs_f64(),
        rep.vector_index.as_secs_f64()
    );
    println!(
        "- agent: retrievalMode hybrid, topK {top_k}, {} documents attached; fake upstream delay {} ms",
        doc_ids.len(),
        o.delay_ms
    );

    let mut rng = StdRng::seed_from_u64(7);
    let mut n = 0usize;
    let mut next_q = |rng: &mut StdRng| {
        n += 1;
        question(rng, n)
    };

    // Retrieval breakdown (in-process, same queries the turns use).
    {
        let k = knowledge.clone();
        let t = tenant.clone();
        let c = caller.clone();
        let docs = doc_ids.clone();
        let qs: Vec<String> = (0..100).map(|_| next_q(&mut rng)).collect();
        let lines = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
            let space = k.space_for(&t)?.ok_or_else(|| anyhow!("no space"))?;
            let (mut emb, mut bm25, mut vec_s, mut full) = (vec![], vec![], vec![], vec![]);
            let (mut bm25_half, mut vec_half) = (vec![], vec![]);
            let filter = aigentable::index::Filter {
                documents: Some(docs.clone()),
                agent: None,
            };
            // Every other document: a partial filter (half the tenant).
            let half: Vec<_> = docs.iter().step_by(2).cloned().collect();
            let half_filter = aigentable::index::Filter {
                documents: Some(half.clone()),
                agent: None,
            };
            for q in &qs {
                let t0 = Instant::now();
                let v = space.embedder.embed_query(q)?;
                emb.push(ms(t0.elapsed()));
                let t0 = Instant::now();
                k.text.search(&t, q, &filter, 50)?;
                bm25.push(ms(t0.elapsed()));
                let t0 = Instant::now();
                space.index.search(&t, &v, Some(&docs), 50)?;
                vec_s.push(ms(t0.elapsed()));
                let t0 = Instant::now();
                k.text.search(&t, q, &half_filter, 50)?;
                bm25_half.push(ms(t0.elapsed()));
                let t0 = Instant::now();
                space.index.search(&t, &v, Some(&half), 50)?;
                vec_half.push(ms(t0.elapsed()));
                let t0 = Instant::now();
                k.search(
                    &c,
                    &SearchQuery {
                        query: q.clone(),
                        documents: Some(docs.clone()),
                        top_k: top_k.max(1) as usize,
                        mode: SearchMode::Hybrid,
                    },
                )
                .map_err(|e| anyhow!("{e}"))?;
                full.push(ms(t0.elapsed()));
            }
            Ok(vec![
                summary("embed query (ONNX)", &emb),
                summary("BM25 search, 500-document filter, k=50", &bm25),
                summary("HNSW search, 500-document filter, k=50", &vec_s),
                summary("BM25 search, 250-document filter, k=50", &bm25_half),
                summary("HNSW search, 250-document filter, k=50", &vec_half),
                summary(
                    "whole hybrid search (all above + fusion + loading hits)",
                    &full,
                ),
            ])
        })
        .await??;
        println!("\n## Retrieval breakdown (in-process, 100 queries, ms)\n");
        println!("| step | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|");
        for l in lines {
            println!("{l}");
        }
    }

    // Warm-up.
    let conv = api.new_conversation(&agent_str).await?;
    for _ in 0..20 {
        let q = next_q(&mut rng);
        turn(&api, &fake, &conv, &q).await?;
    }

    // (a) Sequential conversation turns.
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut server_ms, mut e2e_ms, mut up_ms) = (vec![], vec![], vec![]);
    let mut reported_ms = vec![];
    let mut conv = String::new();
    for i in 0..o.turns {
        if Instant::now() > deadline {
            break;
        }
        if i.is_multiple_of(TURNS_PER_CONVERSATION) {
            conv = api.new_conversation(&agent_str).await?;
        }
        let q = next_q(&mut rng);
        let (e2e, up, reported) = turn(&api, &fake, &conv, &q).await?;
        reported_ms.push(reported);
        e2e_ms.push(ms(e2e));
        up_ms.push(ms(up));
        server_ms.push(ms(e2e.saturating_sub(up)));
    }
    // Playground, non-streaming: exposes the engine's latencyMs.
    let (mut pg_server, mut pg_engine) = (vec![], vec![]);
    for _ in 0..o.turns {
        if Instant::now() > deadline {
            break;
        }
        let q = next_q(&mut rng);
        let t0 = Instant::now();
        let r = api
            .post(
                &format!("/api/agents/{agent_str}/test"),
                json!({"message": q}),
            )
            .await?;
        let e2e = t0.elapsed();
        let up = fake.take(&q).map(|r| r.took).unwrap_or_default();
        pg_server.push(ms(e2e.saturating_sub(up)));
        pg_engine.push(r["latencyMs"].as_f64().unwrap_or(f64::NAN) - ms(up));
    }
    println!(
        "\n## (a) Server time per chat turn, sequential (ms; upstream time = the fake's own \
         measured handling time, nominal {} ms)\n",
        o.delay_ms
    );
    println!("| measure | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|");
    println!(
        "{}",
        summary(
            "POST /messages: end-to-end minus upstream (goal p50 < 30)",
            &server_ms
        )
    );
    println!(
        "{}",
        summary(
            "POST /messages: the API's timing.serverMs (handler time minus upstream)",
            &reported_ms
        )
    );
    println!("{}", summary("POST /messages: end-to-end", &e2e_ms));
    println!("{}", summary("upstream (fake) time", &up_ms));
    println!(
        "{}",
        summary(
            "POST /agents/{id}/test: end-to-end minus upstream",
            &pg_server
        )
    );
    println!(
        "{}",
        summary(
            "POST /agents/{id}/test: engine latencyMs minus upstream",
            &pg_engine
        )
    );

    // (b) Time to first streamed token.
    let (mut added, mut ttft) = (vec![], vec![]);
    let mut engine_lat = vec![];
    for i in 0..o.stream_turns + 10 {
        if Instant::now() > deadline + Duration::from_secs(120) {
            break;
        }
        let q = next_q(&mut rng);
        let (a, t, l) = stream_turn(&api, &fake, &agent_str, &q).await?;
        if i >= 10 {
            added.push(ms(a));
            ttft.push(ms(t));
            engine_lat.push(l);
        }
    }
    println!("\n## (b) Streaming playground: time to first token (ms)\n");
    println!("| measure | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|");
    println!(
        "{}",
        summary(
            "first `delta` at client minus fake's first chunk (goal < 5)",
            &added
        )
    );
    println!(
        "{}",
        summary("first `delta` at client, from request start", &ttft)
    );
    println!(
        "{}",
        summary(
            "engine latencyMs of the streamed turn (whole turn)",
            &engine_lat
        )
    );

    // (c) Concurrency ramp.
    println!(
        "\n## (c) Concurrent conversations ({} s per level, {} turns per conversation, new \
         conversation after that)\n",
        o.level_secs, TURNS_PER_CONVERSATION
    );
    println!(
        "| conversations | turns | errors | turns/s | server p50 | server p99 | e2e p50 | e2e p99 | process CPU per turn (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let api = Arc::new(api);
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for &level in &o.levels {
        let start = Instant::now();
        let cpu0 = cpu_time();
        let end = start + Duration::from_secs(o.level_secs);
        counter.store(0, std::sync::atomic::Ordering::SeqCst);
        let mut tasks = Vec::new();
        for w in 0..level {
            let (api, fake, agent, counter) = (
                api.clone(),
                fake.clone(),
                agent_str.clone(),
                counter.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(1000 + w as u64);
                let (mut server, mut e2e, mut errors) = (vec![], vec![], 0usize);
                let mut conv = String::new();
                let mut i = 0usize;
                while Instant::now() < end
                    && counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                        < MAX_TURNS_PER_LEVEL
                {
                    if i.is_multiple_of(TURNS_PER_CONVERSATION) {
                        match api.new_conversation(&agent).await {
                            Ok(c) => conv = c,
                            Err(_) => {
                                errors += 1;
                                continue;
                            }
                        }
                    }
                    i += 1;
                    let q = format!("{} w{w}", question(&mut rng, i));
                    match turn(&api, &fake, &conv, &q).await {
                        Ok((t, up, _)) => {
                            e2e.push(ms(t));
                            server.push(ms(t.saturating_sub(up)));
                        }
                        Err(_) => errors += 1,
                    }
                }
                (server, e2e, errors)
            }));
        }
        let (mut server, mut e2e, mut errors) = (vec![], vec![], 0);
        for t in tasks {
            let (s, e, er) = t.await?;
            server.extend(s);
            e2e.extend(e);
            errors += er;
        }
        let took = start.elapsed();
        let cpu = cpu_time().saturating_sub(cpu0);
        println!(
            "| {level} | {} | {errors} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            server.len(),
            server.len() as f64 / took.as_secs_f64(),
            pct(&server, 50.0),
            pct(&server, 99.0),
            pct(&e2e, 50.0),
            pct(&e2e, 99.0),
            ms(cpu) / server.len().max(1) as f64
        );
    }
    println!("\n(total wall time {:.0} s)", wall.elapsed().as_secs_f64());
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
    Ok(())
}
