//! Soak test: the real server binary under mixed, realistic traffic for a long time, to catch
//! leaks (memory, file descriptors) and latency that creeps up.
//!
//! ```text
//! cargo build --bin aigentable --example soak
//! cargo run --example soak -- [--minutes N] [--workers N] [--sample-secs N] [--bin PATH]
//! ```
//!
//! * `--minutes N`      duration of the traffic (default 30)
//! * `--workers N`      concurrent clients (default 4)
//! * `--sample-secs N`  how often RSS and open files are sampled (default 30)
//! * `--bin PATH`       the server binary (default: `aigentable` of the same build profile,
//!   beside this example's directory)
//!
//! It starts the binary on a fresh data directory (keyword search: `EMBEDDINGS_PROVIDER=none`
//! unless `EMBEDDINGS_*` is set in the environment) with a fake OpenAI-compatible model
//! provider in this process (a fixed 20 ms answer), signs up a tenant, and runs `--workers`
//! clients that each loop over a weighted mix: chat turns (synchronous and streamed-later
//! `async`), knowledge searches, document uploads and deletes (the knowledge base is kept
//! around 40 documents so the store does not just grow), conversation and message reads,
//! agent updates, API key create/use/delete, token refreshes and widget visitors sending
//! messages. Every sample prints the server's resident memory (VmRSS), open file descriptors
//! and threads; the end prints per-operation latency (p50/p99/max) and errors, and the
//! memory and descriptor growth after the first two minutes (the warm-up). Exits non-zero if
//! any request failed (transport error or 5xx).

use anyhow::{Context, Result, anyhow, bail};
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Upper bound of any single HTTP call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Documents kept in the knowledge base; older ones are deleted.
const KEEP_DOCS: usize = 40;
/// Turns per conversation before a client starts a new one.
const TURNS_PER_CONVERSATION: usize = 8;
const PASSWORD: &str = "soak-password-1";

struct Opts {
    minutes: f64,
    workers: usize,
    sample_secs: u64,
    bin: PathBuf,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        minutes: 30.0,
        workers: 4,
        sample_secs: 30,
        bin: default_bin()?,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--minutes" => o.minutes = val()?.parse().context("--minutes")?,
            "--workers" => o.workers = val()?.parse().context("--workers")?,
            "--sample-secs" => o.sample_secs = val()?.parse().context("--sample-secs")?,
            "--bin" => o.bin = PathBuf::from(val()?),
            "-h" | "--help" => {
                println!(
                    "cargo run --example soak -- [--minutes N] [--workers N] [--sample-secs N] [--bin PATH]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other} (see --help)"),
        }
    }
    if o.minutes <= 0.0 || o.workers == 0 || o.sample_secs == 0 {
        bail!("--minutes, --workers and --sample-secs must be positive");
    }
    if !o.bin.is_file() {
        bail!(
            "no server binary at {}: build it first (cargo build --bin aigentable) or pass --bin",
            o.bin.display()
        );
    }
    Ok(o)
}

/// target/<profile>/examples/soak -> target/<profile>/aigentable.
fn default_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or_else(|| anyhow!("cannot locate the build directory"))?;
    Ok(profile_dir.join("aigentable"))
}

// ---------------------------------------------------------------------------------------
// The fake model provider (the edge we do not own).
// ---------------------------------------------------------------------------------------

const ANSWER: &str = "Thanks for asking. Our shop opens at nine and closes at six on weekdays.";

async fn completions(body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "bad json").into_response();
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let model = req["model"].as_str().unwrap_or("fake").to_string();
    let prompt_tokens = body.len() / 4;
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": 16,
        "total_tokens": prompt_tokens + 16});
    if req["stream"] != true {
        let v = json!({
            "id": "chatcmpl-soak", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop"}],
            "usage": usage,
        });
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response();
    }
    let mut out = String::new();
    for (i, piece) in ANSWER.split_inclusive(' ').enumerate() {
        let delta = if i == 0 {
            json!({"role": "assistant", "content": piece})
        } else {
            json!({"content": piece})
        };
        let v = json!({"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
        out.push_str(&format!("data: {v}\n\n"));
    }
    let v = json!({"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 0,
        "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    out.push_str(&format!("data: {v}\n\n"));
    let u = json!({"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 0,
        "model": model, "choices": [], "usage": usage});
    out.push_str(&format!("data: {u}\n\ndata: [DONE]\n\n"));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from(out),
    )
        .into_response()
}

async fn start_fake() -> Result<String> {
    let router =
        axum::Router::new().route("/v1/chat/completions", axum::routing::post(completions));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(format!("http://{addr}/v1"))
}

// ---------------------------------------------------------------------------------------
// The server process and what we sample of it.
// ---------------------------------------------------------------------------------------

struct Server {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM for a graceful stop, then make sure.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(bin: &PathBuf, http: &reqwest::Client) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut c = Command::new(bin);
    c.arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("PORT", port.to_string())
        .env("LOG_LEVEL", "warn")
        .env("RATE_LIMIT_AUTH_PER_MIN", "0")
        .env("RATE_LIMIT_API_PER_MIN", "0")
        .env("RATE_LIMIT_UPLOAD_PER_MIN", "0")
        .env("RATE_LIMIT_VISITOR_PER_MIN", "0")
        .env("RATE_LIMIT_WIDGET_IP_PER_MIN", "0")
        .env("OUTBOUND_ALLOWED_PRIVATE_HOSTS", "127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if std::env::var_os("EMBEDDINGS_PROVIDER").is_none()
        && std::env::var_os("EMBEDDINGS_MODEL_DIR").is_none()
    {
        c.env("EMBEDDINGS_PROVIDER", "none");
    }
    let child = c
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    let server = Server { child, base, dir };
    let t0 = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{}/api/health", server.base)).send().await
            && r.status().is_success()
        {
            return Ok(server);
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("the server did not come up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Clone, Copy)]
struct Sample {
    at_s: f64,
    rss_mib: f64,
    /// Anonymous memory (heap, stacks): where a leak shows.
    anon_mib: f64,
    /// File-backed pages mapped in (tantivy's segment files, the binary): the kernel drops
    /// them under pressure, and they grow with the index files.
    file_mib: f64,
    /// The data directory on disk, for reading memory growth against data growth.
    data_mib: f64,
    fds: usize,
    threads: usize,
    ops: u64,
    errors: u64,
}

/// Bytes under `dir`, recursively (files only; unreadable entries count as 0).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn sample(pid: u32, data: &std::path::Path, t0: Instant, ops: u64, errors: u64) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    Sample {
        at_s: t0.elapsed().as_secs_f64(),
        rss_mib: field("VmRSS:") / 1024.0,
        anon_mib: field("RssAnon:") / 1024.0,
        file_mib: field("RssFile:") / 1024.0,
        data_mib: dir_bytes(data) as f64 / (1024.0 * 1024.0),
        fds,
        threads: field("Threads:") as usize,
        ops,
        errors,
    }
}

// ---------------------------------------------------------------------------------------
// Traffic.
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Stats {
    /// Latency samples in ms, per operation.
    lat: BTreeMap<&'static str, Vec<f64>>,
    /// Failed requests per operation (transport error, 5xx, or an unexpected status).
    errors: BTreeMap<&'static str, u64>,
    last_error: Option<String>,
}

struct Shared {
    base: String,
    http: reqwest::Client,
    token: Mutex<String>,
    /// Held across a whole refresh: a refresh token is single-use (rotated), and reusing one
    /// is treated as theft and ends the session, so clients of one session refresh in turn.
    refresh: tokio::sync::Mutex<String>,
    agent: String,
    widget_key: String,
    docs: Mutex<std::collections::VecDeque<String>>,
    stats: Mutex<Stats>,
    ops: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn token(&self) -> String {
        self.token.lock().expect("token").clone()
    }

    /// One timed request; the body when the status is `want`.
    async fn op(
        &self,
        name: &'static str,
        want: u16,
        rb: reqwest::RequestBuilder,
    ) -> Option<Value> {
        let t = Instant::now();
        let r = rb.timeout(CALL_TIMEOUT).send().await;
        let result = match r {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.bytes().await.unwrap_or_default();
                if status == want {
                    Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
                } else {
                    Err(format!(
                        "{name}: {status} {}",
                        String::from_utf8_lossy(&body)
                    ))
                }
            }
            Err(e) => Err(format!("{name}: {e}")),
        };
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        self.ops.fetch_add(1, Ordering::Relaxed);
        let mut s = self.stats.lock().expect("stats");
        s.lat.entry(name).or_default().push(ms);
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                *s.errors.entry(name).or_default() += 1;
                s.last_error = Some(e);
                None
            }
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token())
    }

    fn send(&self, method: reqwest::Method, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token())
            .json(&body)
    }
}

fn document(n: u64, rng: &mut StdRng) -> Vec<u8> {
    let topics = [
        "refunds",
        "shipping",
        "warranty",
        "opening hours",
        "returns",
        "invoices",
    ];
    let mut s = format!("# Handbook part {n}\n\n");
    for p in 0..rng.random_range(5..40) {
        let t = topics[rng.random_range(0..topics.len())];
        s.push_str(&format!(
            "## Section {p}\n\nThis section explains {t} for case {n}-{p}. Customers asking about {t} get an answer within one working day, and the team records every {t} request.\n\n"
        ));
    }
    s.into_bytes()
}

async fn worker(sh: Arc<Shared>, w: usize, seed: u64) {
    use reqwest::Method;
    let mut rng = StdRng::seed_from_u64(seed ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut conversation: Option<(String, usize)> = None;
    let mut visitor: Option<String> = None;
    let mut n: u64 = 0;
    while !sh.stop.load(Ordering::Relaxed) {
        n += 1;
        let tag = (w as u64) * 1_000_000 + n;
        match rng.random_range(0..100u32) {
            // Chat turns (the heaviest and most common operation).
            0..=29 => {
                let cid = match &conversation {
                    Some((c, turns)) if *turns < TURNS_PER_CONVERSATION => c.clone(),
                    _ => {
                        let body = json!({"agentId": sh.agent, "customer": {"name": format!("Customer {tag}")}});
                        let Some(v) = sh
                            .op(
                                "conversation.create",
                                201,
                                sh.send(Method::POST, "/api/conversations", body),
                            )
                            .await
                        else {
                            continue;
                        };
                        let c = v["id"].as_str().unwrap_or_default().to_string();
                        conversation = Some((c.clone(), 0));
                        c
                    }
                };
                if let Some((_, turns)) = &mut conversation {
                    *turns += 1;
                }
                let is_async = rng.random_bool(0.3);
                let name = if is_async { "turn.async" } else { "turn.sync" };
                let body = json!({"content": format!("When do you open on day {tag}? And what about refunds?"),
                    "role": "customer", "async": is_async});
                sh.op(
                    name,
                    201,
                    sh.send(
                        Method::POST,
                        &format!("/api/conversations/{cid}/messages"),
                        body,
                    ),
                )
                .await;
            }
            30..=44 => {
                let q = [
                    "refunds within one working day",
                    "shipping",
                    "warranty case",
                    "opening hours",
                ];
                let body =
                    json!({"query": q[rng.random_range(0..q.len())], "mode": "hybrid", "topK": 8});
                sh.op(
                    "search",
                    200,
                    sh.send(Method::POST, "/api/knowledge/search", body),
                )
                .await;
            }
            45..=51 => {
                let form = reqwest::multipart::Form::new()
                    .part(
                        "file",
                        reqwest::multipart::Part::bytes(document(tag, &mut rng))
                            .file_name(format!("handbook-{tag}.md"))
                            .mime_str("text/markdown")
                            .expect("mime"),
                    )
                    .text("agentIds", sh.agent.clone());
                let rb = sh
                    .http
                    .post(format!("{}/api/documents", sh.base))
                    .bearer_auth(sh.token())
                    .multipart(form);
                if let Some(v) = sh.op("document.upload", 202, rb).await
                    && let Some(id) = v["data"][0]["id"].as_str()
                {
                    let old = {
                        let mut d = sh.docs.lock().expect("docs");
                        d.push_back(id.to_string());
                        if d.len() > KEEP_DOCS {
                            d.pop_front()
                        } else {
                            None
                        }
                    };
                    if let Some(old) = old {
                        sh.op(
                            "document.delete",
                            204,
                            sh.send(
                                Method::DELETE,
                                &format!("/api/documents/{old}"),
                                json!(null),
                            ),
                        )
                        .await;
                    }
                }
            }
            52..=61 => {
                sh.op(
                    "conversations.list",
                    200,
                    sh.get("/api/conversations?limit=20"),
                )
                .await;
            }
            62..=69 => {
                if let Some((cid, _)) = &conversation {
                    sh.op(
                        "messages.list",
                        200,
                        sh.get(&format!("/api/conversations/{cid}/messages?limit=50")),
                    )
                    .await;
                }
            }
            70..=74 => {
                sh.op("documents.list", 200, sh.get("/api/documents?limit=50"))
                    .await;
            }
            75..=78 => {
                let body = json!({"description": format!("Answers shop questions ({tag})")});
                sh.op(
                    "agent.update",
                    200,
                    sh.send(Method::PUT, &format!("/api/agents/{}", sh.agent), body),
                )
                .await;
            }
            79..=81 => {
                let Some(v) = sh
                    .op(
                        "apikey.create",
                        201,
                        sh.send(
                            Method::POST,
                            "/api/api-keys",
                            json!({"name": format!("soak {tag}")}),
                        ),
                    )
                    .await
                else {
                    continue;
                };
                let (id, secret) = (
                    v["id"].as_str().unwrap_or_default().to_string(),
                    v["secret"].as_str().unwrap_or_default().to_string(),
                );
                let rb = sh
                    .http
                    .get(format!("{}/api/agents?limit=5", sh.base))
                    .header("x-api-key", secret);
                sh.op("apikey.use", 200, rb).await;
                sh.op(
                    "apikey.delete",
                    204,
                    sh.send(Method::DELETE, &format!("/api/api-keys/{id}"), json!(null)),
                )
                .await;
            }
            82..=83 => {
                // Token refresh (rotates the refresh token) keeps the session alive.
                let mut rt = sh.refresh.lock().await;
                let rb = sh
                    .http
                    .post(format!("{}/api/auth/refresh", sh.base))
                    .json(&json!({"refreshToken": *rt}));
                if let Some(v) = sh.op("auth.refresh", 200, rb).await
                    && let (Some(a), Some(r)) =
                        (v["accessToken"].as_str(), v["refreshToken"].as_str())
                {
                    *sh.token.lock().expect("token") = a.to_string();
                    *rt = r.to_string();
                }
            }
            84..=89 => {
                sh.op(
                    "health",
                    200,
                    sh.http.get(format!("{}/api/health", sh.base)),
                )
                .await;
            }
            // A widget visitor: a session now and then, messages in it.
            _ => {
                let key = &sh.widget_key;
                if visitor.is_none() || rng.random_bool(0.2) {
                    let rb = sh
                        .http
                        .post(format!("{}/api/widget/{key}/visitors", sh.base))
                        .header("origin", "https://shop.example.com")
                        .json(&json!({"name": format!("Visitor {tag}")}));
                    visitor = sh
                        .op("widget.visitor", 201, rb)
                        .await
                        .and_then(|v| v["visitorToken"].as_str().map(str::to_string));
                }
                if let Some(vt) = &visitor {
                    let rb = sh
                        .http
                        .post(format!("{}/api/widget/{key}/messages", sh.base))
                        .header("origin", "https://shop.example.com")
                        .bearer_auth(vt)
                        .json(&json!({"content": format!("Hello from the site ({tag})")}));
                    sh.op("widget.message", 201, rb).await;
                }
            }
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = parse_args()?;
    let http = reqwest::Client::builder().build()?;
    let fake = start_fake().await?;
    let server = start_server(&o.bin, &http).await?;
    let pid = server.child.id();
    let data = server.dir.path().join("data");
    let base = server.base.clone();
    println!(
        "soak: {} for {} min, {} clients, server pid {pid} at {base}",
        o.bin.display(),
        o.minutes,
        o.workers
    );

    // The tenant, its model provider, an agent and a web widget.
    let reg: Value = http
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"email": "soak@example.com", "password": PASSWORD, "name": "Soak", "tenantName": "Soak Shop"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = reg["accessToken"]
        .as_str()
        .context("accessToken")?
        .to_string();
    let refresh = reg["refreshToken"]
        .as_str()
        .context("refreshToken")?
        .to_string();
    let put = |path: &str, body: Value| {
        http.put(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    put(
        "/api/settings/ai",
        json!({"baseUrl": fake, "apiKey": "sk-soak", "model": "fake-model"}),
    )
    .await?
    .error_for_status()?;
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let agent: Value = post("/api/agents", json!({"name": "Shop Assistant"}))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let agent = agent["id"].as_str().context("agent id")?.to_string();
    let channel: Value = post(
        "/api/channels",
        json!({"type": "web", "name": "Shop site", "agentId": agent,
            "settings": {"allowedOrigins": ["https://shop.example.com"]}}),
    )
    .await?
    .error_for_status()?
    .json()
    .await?;
    let widget_key = channel["widgetKey"]
        .as_str()
        .or_else(|| channel["settings"]["widgetKey"].as_str())
        .or_else(|| channel["publicKey"].as_str())
        .context("the web channel's widget key")?
        .to_string();

    let sh = Arc::new(Shared {
        base: base.clone(),
        http: http.clone(),
        token: Mutex::new(token),
        refresh: tokio::sync::Mutex::new(refresh),
        agent,
        widget_key,
        docs: Mutex::default(),
        stats: Mutex::default(),
        ops: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    let t0 = Instant::now();
    let workers: Vec<_> = (0..o.workers)
        .map(|w| tokio::spawn(worker(sh.clone(), w, seed)))
        .collect();

    let end = t0 + Duration::from_secs_f64(o.minutes * 60.0);
    let mut samples = vec![sample(pid, &data, t0, 0, 0)];
    println!(
        "| t (s) | RSS (MiB) | anon (MiB) | file (MiB) | data dir (MiB) | open fds | threads | requests | req/s | failed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let print = |s: &Sample, prev: Option<&Sample>| {
        let rate = prev.map_or(0.0, |p| {
            (s.ops - p.ops) as f64 / (s.at_s - p.at_s).max(1e-9)
        });
        println!(
            "| {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {:.1} | {} |",
            s.at_s,
            s.rss_mib,
            s.anon_mib,
            s.file_mib,
            s.data_mib,
            s.fds,
            s.threads,
            s.ops,
            rate,
            s.errors
        );
    };
    print(&samples[0], None);
    while Instant::now() < end {
        let wait = Duration::from_secs(o.sample_secs).min(end - Instant::now());
        tokio::time::sleep(wait).await;
        let s = sample(
            pid,
            &data,
            t0,
            sh.ops.load(Ordering::Relaxed),
            sh.errors.load(Ordering::Relaxed),
        );
        print(&s, samples.last());
        samples.push(s);
        if s.errors > 100 {
            println!("more than 100 failed requests: stopping early");
            break;
        }
    }
    sh.stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let last = sample(
        pid,
        &data,
        t0,
        sh.ops.load(Ordering::Relaxed),
        sh.errors.load(Ordering::Relaxed),
    );

    let stats = sh.stats.lock().expect("stats");
    println!();
    println!("| operation | count | errors | p50 (ms) | p99 (ms) | max (ms) |");
    println!("|---|---|---|---|---|---|");
    let mut errors = 0;
    for (name, lat) in &stats.lat {
        let mut v = lat.clone();
        v.sort_by(f64::total_cmp);
        let e = stats.errors.get(name).copied().unwrap_or(0);
        errors += e;
        println!(
            "| {name} | {} | {e} | {:.1} | {:.1} | {:.1} |",
            v.len(),
            pct(&v, 0.5),
            pct(&v, 0.99),
            v.last().copied().unwrap_or(0.0)
        );
    }
    // Growth after the warm-up: the first sample at or after two minutes (or the first).
    let warm = samples
        .iter()
        .find(|s| s.at_s >= 120.0)
        .copied()
        .unwrap_or(samples[0]);
    let hours = ((last.at_s - warm.at_s) / 3600.0).max(1e-9);
    println!();
    println!(
        "after warm-up (t={:.0}s -> {:.0}s): RSS {:.1} -> {:.1} MiB ({:+.1} MiB/h; anonymous {:.1} -> {:.1}, file-backed {:.1} -> {:.1}; data directory {:.1} -> {:.1} MiB), open fds {} -> {}, threads {} -> {}",
        warm.at_s,
        last.at_s,
        warm.rss_mib,
        last.rss_mib,
        (last.rss_mib - warm.rss_mib) / hours,
        warm.anon_mib,
        last.anon_mib,
        warm.file_mib,
        last.file_mib,
        warm.data_mib,
        last.data_mib,
        warm.fds,
        last.fds,
        warm.threads,
        last.threads
    );
    println!(
        "{} requests in {:.0} s, {errors} failed",
        last.ops, last.at_s
    );
    if let Some(e) = &stats.last_error {
        println!("last error: {e}");
    }
    drop(stats);
    drop(server);
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}
