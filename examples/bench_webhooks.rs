//! Webhook benchmark (issue 10): WhatsApp webhooks signed like Meta's at a fixed rate
//! against the real server binary, measuring the acknowledgement latency (p50/p99), the
//! end-to-end time from a webhook to the AI reply handed to the Graph API double (the model
//! is a fake OpenAI-compatible upstream answering after a fixed delay), and, in a second
//! phase, kill -9 of the server in the middle of the load: after a restart on the same data
//! directory every acknowledged message must be in its conversation exactly once and
//! answered exactly once (lost and duplicated are counted).
//!
//! ```text
//! cargo build && cargo run --example bench_webhooks -- [options]
//! ```
//!
//! Options (all optional):
//!
//! * `--bin PATH`      server binary (default `target/debug/aigentable`)
//! * `--rate N`        webhooks per second (default 200)
//! * `--secs N`        duration of the measured load (default 60)
//! * `--senders N`     distinct customers (default 400)
//! * `--delay-ms N`    the fake model's delay (default 50)
//! * `--drain-secs N`  how long to wait for the replies after the load (default 300)
//! * `--crash-secs N`  duration of the kill -9 phase's load (default 10; 0 skips the phase)
//!
//! Everything listens on 127.0.0.1; the server is a child process with a fresh temporary
//! data directory, killed when the benchmark ends. Every phase is bounded in time.

use aigentable::channels::meta::sign;
use anyhow::{Context, Result, anyhow, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const APP_SECRET: &str = "0123456789abcdef0123456789abcdef";
const TOKEN: &str = "EAAGbenchaccesstoken0123456789";
const PHONE_ID: &str = "1111111111";
const METRICS_TOKEN: &str = "bench-metrics-token-0123456789";

struct Opts {
    bin: PathBuf,
    rate: u32,
    secs: u64,
    senders: u32,
    delay: Duration,
    drain: Duration,
    crash_secs: u64,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        bin: PathBuf::from("target/debug/aigentable"),
        rate: 200,
        secs: 60,
        senders: 400,
        delay: Duration::from_millis(50),
        drain: Duration::from_secs(300),
        crash_secs: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match a.as_str() {
            "--bin" => o.bin = PathBuf::from(value("--bin")?),
            "--rate" => o.rate = value("--rate")?.parse()?,
            "--secs" => o.secs = value("--secs")?.parse()?,
            "--senders" => o.senders = value("--senders")?.parse()?,
            "--delay-ms" => o.delay = Duration::from_millis(value("--delay-ms")?.parse()?),
            "--drain-secs" => o.drain = Duration::from_secs(value("--drain-secs")?.parse()?),
            "--crash-secs" => o.crash_secs = value("--crash-secs")?.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    if o.rate == 0 || o.senders == 0 {
        bail!("--rate and --senders must be positive");
    }
    Ok(o)
}

/// What the doubles saw: replies handed to the Graph API per message tag, and when.
#[derive(Default)]
struct Seen {
    /// tag -> times a reply carrying it was handed to the provider, and the first instant.
    replies: HashMap<String, (u32, Instant)>,
    delay: Duration,
}

type Shared = Arc<Mutex<Seen>>;

/// The tag `m<n>` of a benchmark message inside a text.
fn tag_in(text: &str) -> Option<String> {
    let i = text.find("[m")?;
    let rest = &text[i + 1..];
    let end = rest.find(']')?;
    Some(rest[..end].to_string())
}

/// A fake OpenAI-compatible model: after the delay, echoes the customer's last message
/// (so the reply carries its tag), streamed or not.
async fn completions(State(seen): State<Shared>, body: Bytes) -> Response {
    let delay = seen.lock().map(|s| s.delay).unwrap_or_default();
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let last = req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    let answer = format!(
        "Thanks for {}",
        tag_in(&last).map(|t| format!("[{t}]")).unwrap_or_default()
    );
    tokio::time::sleep(delay).await;
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
    if req["stream"] != true {
        let v = json!({"id": "c", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": usage});
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response();
    }
    let c1 = json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": answer}, "finish_reason": null}]});
    let c2 = json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage});
    let body = format!("data: {c1}\n\ndata: {c2}\n\ndata: [DONE]\n\n");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream")],
        body,
    )
        .into_response()
}

/// The Graph API double: records every reply's tag; answers like Meta.
async fn graph(State(seen): State<Shared>, uri: axum::http::Uri, body: Bytes) -> Response {
    if uri.path().ends_with("/messages") {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let text = v["text"]["body"].as_str().unwrap_or("");
        if let (Some(tag), Ok(mut s)) = (tag_in(text), seen.lock()) {
            let e = s.replies.entry(tag).or_insert((0, Instant::now()));
            e.0 += 1;
        }
        let id = format!("wamid.OUT{}", uuid::Uuid::now_v7().simple());
        return axum::Json(json!({"messaging_product": "whatsapp", "messages": [{"id": id}]}))
            .into_response();
    }
    axum::Json(json!({"id": PHONE_ID, "display_phone_number": "+1 555", "verified_name": "Bench"}))
        .into_response()
}

async fn start_doubles(delay: Duration) -> Result<(String, String, Shared)> {
    let seen: Shared = Arc::new(Mutex::new(Seen {
        delay,
        ..Default::default()
    }));
    let model = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(completions))
        .with_state(seen.clone());
    let g = axum::Router::new().fallback(graph).with_state(seen.clone());
    let l1 = TcpListener::bind("127.0.0.1:0").await?;
    let l2 = TcpListener::bind("127.0.0.1:0").await?;
    let (a1, a2) = (l1.local_addr()?, l2.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(l1, model).await;
    });
    tokio::spawn(async move {
        let _ = axum::serve(l2, g).await;
    });
    Ok((format!("http://{a1}/v1"), format!("http://{a2}"), seen))
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(bin: &Path, data: &Path, port: u16, graph: &str) -> Result<Server> {
    let child = Command::new(bin)
        .env("DATA_DIR", data)
        .env("BIND", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("LOG_LEVEL", "error")
        .env("RATE_LIMIT_API_PER_MIN", "0")
        .env("RATE_LIMIT_AUTH_PER_MIN", "0")
        .env("META_GRAPH_BASE_URL", graph)
        .env("OUTBOUND_ALLOWED_PRIVATE_HOSTS", "127.0.0.1")
        .env("PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("JWT_SECRET", "bench-jwt-secret-0123456789abcdef0123456789")
        // Where an acknowledgement waits (the store's write turn, the shared fsync) is
        // read from the metrics after the load.
        .env("METRICS", "token")
        .env("METRICS_TOKEN", METRICS_TOKEN)
        .env(
            "JWT_REFRESH_SECRET",
            "bench-refresh-secret-0123456789abcdef012345",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Server { child })
}

async fn wait_healthy(http: &reqwest::Client, base: &str) -> Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = http.get(format!("{base}/api/health")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the server did not become healthy within 60 s")
}

fn payload(n: u64, senders: u32) -> Vec<u8> {
    let from = format!("1555{:07}", n % u64::from(senders));
    let v = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": PHONE_ID},
            "contacts": [{"wa_id": from, "profile": {"name": format!("Customer {}", n % u64::from(senders))}}],
            "messages": [{"from": from, "id": format!("wamid.BENCH{n}"), "timestamp": "1700000000",
                "type": "text", "text": {"body": format!("Question [m{n}]")}}]}}]}]});
    serde_json::to_vec(&v).expect("json")
}

/// Sends webhooks `from..` at `rate`/s for `secs`, open loop; returns (tag, ack latency,
/// sent at) of every acknowledged one and the count of failed ones.
async fn load(
    http: &reqwest::Client,
    url: &str,
    from: u64,
    rate: u32,
    secs: u64,
    senders: u32,
) -> (Vec<(String, Duration, Instant)>, usize) {
    let total = u64::from(rate) * secs;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let n = from + i;
        let body = payload(n, senders);
        let sig = sign(APP_SECRET, &body);
        let rb = http
            .post(url)
            .header("content-type", "application/json")
            .header("X-Hub-Signature-256", sig)
            .body(body);
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let ok = matches!(rb.send().await, Ok(r) if r.status().is_success());
            (format!("m{n}"), t0.elapsed(), t0, ok)
        }));
    }
    let mut acked = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok((tag, d, at, true)) => acked.push((tag, d, at)),
            _ => failed += 1,
        }
    }
    (acked, failed)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Waits (bounded) until every tag in `tags` has a reply at the double.
async fn drain(seen: &Shared, tags: &[String], limit: Duration) -> usize {
    let t0 = Instant::now();
    loop {
        let missing = {
            let s = seen.lock().expect("lock");
            tags.iter().filter(|t| !s.replies.contains_key(*t)).count()
        };
        if missing == 0 || t0.elapsed() > limit {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(&self, m: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut rb = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {v}");
        }
        Ok(v)
    }
}

/// The store's and the webhook route's timings from `/metrics` (Prometheus text): where
/// an acknowledgement waits.
async fn print_waits(http: &reqwest::Client, base: &str) {
    let Ok(r) = http
        .get(format!("{base}/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
    else {
        return;
    };
    let text = r.text().await.unwrap_or_default();
    for line in text.lines().filter(|l| {
        (l.starts_with("store_")
            || (l.starts_with("http_request_duration") && l.contains("webhooks")))
            && !l.contains("_bucket")
    }) {
        println!("  {line}");
    }
}

/// Every customer message of the channel's conversations, by tag: how many times stored;
/// and the tags whose reply failed as `delivery_unknown` (its send was cut off by the kill:
/// not sent again, left to a person).
async fn stored_tags(api: &Api, channel: &str) -> Result<(HashMap<String, u32>, Vec<String>)> {
    let mut out = HashMap::new();
    let mut unknown = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/conversations?channelId={channel}&limit=200");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = api.call(reqwest::Method::GET, &path, None).await?;
        for c in page["data"].as_array().into_iter().flatten() {
            let id = c["id"].as_str().unwrap_or("");
            let mut mc: Option<String> = None;
            loop {
                let mut p = format!("/api/conversations/{id}/messages?limit=200");
                if let Some(c) = &mc {
                    p.push_str(&format!("&cursor={c}"));
                }
                let msgs = api.call(reqwest::Method::GET, &p, None).await?;
                for m in msgs["data"].as_array().into_iter().flatten() {
                    if m["role"] == "customer"
                        && let Some(t) = m["content"].as_str().and_then(tag_in)
                    {
                        *out.entry(t).or_insert(0) += 1;
                    }
                    if m["role"] == "ai"
                        && m["status"] == "failed"
                        && m["error"]
                            .as_str()
                            .is_some_and(|e| e.starts_with("delivery_unknown"))
                        && let Some(t) = m["content"].as_str().and_then(tag_in)
                    {
                        unknown.push(t);
                    }
                }
                mc = msgs["nextCursor"].as_str().map(str::to_string);
                if mc.is_none() {
                    break;
                }
            }
        }
        cursor = page["nextCursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            return Ok((out, unknown));
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = parse_args()?;
    let (model_url, graph_url, seen) = start_doubles(o.delay).await?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let mut server = spawn(&o.bin, &data, port, &graph_url)?;
    wait_healthy(&http, &base).await?;

    let reg: Value = http
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"email": "bench@example.com", "password": "bench-password-123", "name": "Bench", "tenantName": "Bench"}))
        .send()
        .await?
        .json()
        .await?;
    let api = Api {
        http: http.clone(),
        base: base.clone(),
        token: reg["accessToken"]
            .as_str()
            .ok_or_else(|| anyhow!("register failed: {reg}"))?
            .to_string(),
    };
    api.call(
        reqwest::Method::PUT,
        "/api/settings/ai",
        Some(json!({"baseUrl": model_url, "apiKey": "sk-x", "model": "fake"})),
    )
    .await?;
    let agent = api
        .call(
            reqwest::Method::POST,
            "/api/agents",
            Some(json!({"name": "Support"})),
        )
        .await?;
    let ch = api
        .call(
            reqwest::Method::POST,
            "/api/channels",
            Some(
                json!({"type": "whatsapp", "name": "Bench", "agentId": agent["id"],
                "credentials": {"accessToken": TOKEN, "appSecret": APP_SECRET},
                "settings": {"phoneNumberId": PHONE_ID}}),
            ),
        )
        .await?;
    let channel = ch["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no channel id"))?
        .to_string();
    let url = format!("{base}/webhooks/whatsapp/{channel}");

    // Phase 1: sustained load.
    eprintln!("phase 1: {} webhooks/s for {} s ...", o.rate, o.secs);
    let (acked, failed) = load(&http, &url, 0, o.rate, o.secs, o.senders).await;
    let mut lat: Vec<Duration> = acked.iter().map(|a| a.1).collect();
    lat.sort();
    println!(
        "ack latency over {} webhooks ({} failed): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        acked.len(),
        failed,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    println!("where writes waited during the load (seconds):");
    print_waits(&http, &base).await;
    let tags: Vec<String> = acked.iter().map(|a| a.0.clone()).collect();
    let missing = drain(&seen, &tags, o.drain).await;
    let mut e2e: Vec<Duration> = {
        let s = seen.lock().expect("lock");
        acked
            .iter()
            .filter_map(|(t, _, at)| {
                s.replies
                    .get(t)
                    .map(|(_, r)| r.saturating_duration_since(*at))
            })
            .collect()
    };
    e2e.sort();
    println!(
        "end to end (webhook -> reply handed to the Graph double, model {} ms): p50 {:.0} ms, p99 {:.0} ms; {} of {} answered within the drain window",
        o.delay.as_millis(),
        pct(&e2e, 0.5),
        pct(&e2e, 0.99),
        tags.len() - missing,
        tags.len()
    );

    if o.crash_secs == 0 {
        return Ok(());
    }
    // Phase 2: kill -9 in the middle of the load, restart, count.
    eprintln!("phase 2: kill -9 during {} s of load ...", o.crash_secs);
    let from = u64::from(o.rate) * o.secs + 1;
    let kill_after = Duration::from_secs(o.crash_secs) / 2;
    let pid = server.child.id();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(kill_after).await;
        // SIGKILL: no shutdown, no flush.
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let (acked2, failed2) = load(&http, &url, from, o.rate, o.crash_secs, o.senders).await;
    killer.await?;
    let _ = server.child.wait();
    server = spawn(&o.bin, &data, port, &graph_url)?;
    wait_healthy(&http, &base).await?;
    let tags2: Vec<String> = acked2.iter().map(|a| a.0.clone()).collect();
    // Drained until every reply is sent or shown as `delivery_unknown` (never resent).
    let t0 = Instant::now();
    let (stored, unknown, missing2) = loop {
        let missing2 = drain(&seen, &tags2, Duration::from_secs(5)).await;
        let (stored, unknown) = stored_tags(&api, &channel).await?;
        let unsent = {
            let s = seen.lock().expect("lock");
            tags2
                .iter()
                .filter(|t| !s.replies.contains_key(*t) && !unknown.contains(*t))
                .count()
        };
        if unsent == 0 || t0.elapsed() > o.drain {
            break (stored, unknown, missing2);
        }
    };
    let lost = tags2.iter().filter(|t| !stored.contains_key(*t)).count();
    let dup_stored = tags2
        .iter()
        .filter(|t| stored.get(*t).is_some_and(|n| *n > 1))
        .count();
    let (dup_replies, unanswered) = {
        let s = seen.lock().expect("lock");
        (
            tags2
                .iter()
                .filter(|t| s.replies.get(*t).is_some_and(|r| r.0 > 1))
                .count(),
            missing2,
        )
    };
    let unknown_sent = {
        let s = seen.lock().expect("lock");
        unknown
            .iter()
            .filter(|t| s.replies.contains_key(*t))
            .count()
    };
    println!(
        "kill -9 phase: {} acknowledged ({} refused or cut off by the kill); lost {lost}, stored twice {dup_stored}, replies sent twice {dup_replies}, unanswered after the drain {unanswered}, of which shown as delivery_unknown {} ({unknown_sent} of those had reached the provider)",
        acked2.len(),
        failed2,
        unknown.len()
    );
    drop(server);
    Ok(())
}
