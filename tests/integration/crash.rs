//! Crash consistency: the real binary under a writer loop doing every kind of write over the
//! API (agents, document uploads and deletes, conversations and AI turns against the fake
//! model provider, channels, AI settings, API keys, invitations and accepted invitations),
//! killed with SIGKILL at random points and restarted on the same data directory. After each
//! restart: every acknowledged write is there (an acknowledged delete stays deleted), an
//! update in flight at the kill is either fully there or not at all, nothing is half-written
//! (a document's record, its stored file and its chunks agree; every customer message of a
//! turn gets exactly one answer), and the search index agrees with the store (every ready
//! document is found by its own words, no deleted one is).
//!
//! Seeded: the seed is printed; `AIGENTABLE_CRASH_SEED=N` replays a run and
//! `AIGENTABLE_CRASH_KILLS=N` (default 20) sets how many kills.
//!
//! Webhooks: WhatsApp and Telegram deliveries against local provider doubles, the server
//! killed while they are being acknowledged and again while they are being processed; after
//! the restarts (and the providers' retries of what was not acknowledged) every message is in
//! its contact's one conversation exactly once. Killed a third time while replies are being
//! sent (some taken by the provider, unanswered): no reply reaches the provider twice; each
//! is sent once, or shown failed as `delivery_unknown` for a person to check and resend.

use crate::fake_openai::FakeOpenAi;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PASSWORD: &str = "password-123";
/// Concurrent writers: several requests are in flight at every kill.
const WRITERS: usize = 3;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The server process on a data directory.
struct Proc {
    child: Child,
    base: String,
    data: PathBuf,
    /// The extra environment it was started with (kept for a restart).
    env: Vec<(String, String)>,
}

impl Proc {
    async fn start(data: &Path, http: &reqwest::Client) -> Proc {
        Proc::start_with(data, http, &[]).await
    }

    /// Starts with extra environment variables (provider base URLs).
    async fn start_with(data: &Path, http: &reqwest::Client, env: &[(&str, String)]) -> Proc {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Proc::spawn(data, http, env).await
    }

    /// Starts the binary and waits (bounded) until it answers its health check. The port is
    /// picked free but bound by the child later: when another test's server takes it in
    /// between, the child exits ("address in use") and is started again on another port.
    async fn spawn(data: &Path, http: &reqwest::Client, env: Vec<(String, String)>) -> Proc {
        for _ in 0..5 {
            if let Some(p) = Proc::try_spawn(data, http, &env).await {
                return p;
            }
        }
        panic!("the server could not bind a free port in 5 tries");
    }

    /// One start: `None` when the child exited before it answered (its port was taken).
    async fn try_spawn(
        data: &Path,
        http: &reqwest::Client,
        env: &[(String, String)],
    ) -> Option<Proc> {
        let port = free_port();
        let mut c = Command::new(env!("CARGO_BIN_EXE_aigentable"));
        for k in [
            "PORT",
            "BIND",
            "DATA_DIR",
            "CONFIG",
            "SIGNUP",
            "ADMIN_EMAIL",
            "ADMIN_PASSWORD",
        ] {
            c.env_remove(k);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .env("PORT", port.to_string())
            .env("LOG_LEVEL", "warn")
            .env("RATE_LIMIT_AUTH_PER_MIN", "0")
            .env("RATE_LIMIT_API_PER_MIN", "0")
            .env("RATE_LIMIT_UPLOAD_PER_MIN", "0")
            // Keyword search: the index under test without the cost of embedding.
            .env("EMBEDDINGS_PROVIDER", "none")
            // The fake model provider runs on 127.0.0.1 in this test process.
            .env("OUTBOUND_ALLOWED_PRIVATE_HOSTS", "127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the server");
        let base = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        loop {
            if child.try_wait().expect("child status").is_some() {
                return None;
            }
            if let Ok(r) = http.get(format!("{base}/api/health")).send().await
                && r.status().is_success()
                // A child that already exited lost its port to another test's server.
                && child.try_wait().expect("child status").is_none()
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the server did not come up on {base}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Some(Proc {
            child,
            base,
            data: data.to_path_buf(),
            env: env.to_vec(),
        })
    }

    /// SIGKILL: no shutdown code runs.
    fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// kill -9, then the server again on the same data directory with the same
    /// environment (on a new port), once it answers its health check.
    async fn restart(self, http: &reqwest::Client) -> Proc {
        let (data, env) = (self.data.clone(), self.env.clone());
        self.kill9();
        Proc::spawn(&data, http, env).await
    }
}

/// A value that an update in flight at a kill may or may not have changed.
#[derive(Clone, Debug, Default)]
struct Field {
    acked: String,
    pending: Option<String>,
}

impl Field {
    fn allows(&self, v: &str) -> bool {
        v == self.acked || self.pending.as_deref() == Some(v)
    }
}

#[derive(Clone, Debug)]
struct AgentRec {
    owner: usize,
    description: Field,
    /// Some(true): deleted (acknowledged); Some(false): a delete was in flight.
    deleted: Option<bool>,
}

#[derive(Clone, Debug)]
struct DocRec {
    owner: usize,
    token: String,
    deleted: Option<bool>,
}

#[derive(Clone, Debug)]
struct KeyRec {
    owner: usize,
    secret: String,
    deleted: Option<bool>,
}

/// Everything the server acknowledged, and what was in flight when it was killed.
#[derive(Default)]
struct Ledger {
    agents: BTreeMap<String, AgentRec>,
    docs: BTreeMap<String, DocRec>,
    /// Acknowledged customer messages: (conversation, message id, content).
    turns: Vec<(String, String, String)>,
    conversations: BTreeMap<String, usize>,
    channels: BTreeSet<String>,
    keys: BTreeMap<String, KeyRec>,
    invitations: BTreeSet<String>,
    /// Accepted invitations: emails that can sign in.
    members: BTreeSet<String>,
    model: Field,
    /// Acknowledged writes, all kinds.
    acks: usize,
}

struct Ctx {
    http: reqwest::Client,
    base: String,
    token: String,
    tenant: String,
    /// The agent each writer's conversations and channels use (never deleted).
    bots: Vec<String>,
    fake_url: String,
    ledger: Arc<Mutex<Ledger>>,
    acked: Arc<AtomicUsize>,
    acked_changed: Arc<tokio::sync::Notify>,
}

impl Ctx {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<(StatusCode, Value)> {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.ok()?;
        let status = r.status();
        let body = r.json().await.unwrap_or(Value::Null);
        Some((status, body))
    }

    fn ack(&self, f: impl FnOnce(&mut Ledger)) {
        let mut l = self.ledger.lock().expect("ledger");
        f(&mut l);
        l.acks += 1;
        drop(l);
        self.acked.fetch_add(1, Ordering::SeqCst);
        self.acked_changed.notify_waiters();
    }

    fn with<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        f(&mut self.ledger.lock().expect("ledger"))
    }
}

#[track_caller]
fn ok(r: &(StatusCode, Value), want: u16) {
    assert_eq!(r.0.as_u16(), want, "unexpected answer: {}", r.1);
}

/// A small Markdown document whose words include `token` (for the search check).
fn document(token: &str, n: u64) -> Vec<u8> {
    format!(
        "# Notice {n}\n\nThe reference word of this notice is {token}.\n\n## Details\n\nParagraph about topic {n} and the word {token} again.\n"
    )
    .into_bytes()
}

/// One write, chosen by `rng`; `None` when the server went away mid-request.
async fn write_once(cx: &Ctx, w: usize, rng: &mut StdRng, n: u64) -> Option<()> {
    use reqwest::Method;
    let pick = rng.random_range(0..100u32);
    match pick {
        // Agents: create, update, delete (only agents no conversation uses).
        0..=9 => {
            let r = cx
                .call(
                    Method::POST,
                    "/api/agents",
                    Some(json!({"name": format!("Agent {w}-{n}"), "description": "v0"})),
                )
                .await?;
            ok(&r, 201);
            let id = r.1["id"].as_str().expect("id").to_string();
            cx.ack(|l| {
                l.agents.insert(
                    id,
                    AgentRec {
                        owner: w,
                        description: Field {
                            acked: "v0".into(),
                            pending: None,
                        },
                        deleted: None,
                    },
                );
            });
        }
        10..=19 => {
            let Some(id) = cx.with(|l| {
                pick_one(
                    rng,
                    l.agents
                        .iter()
                        .filter(|(_, a)| a.owner == w && a.deleted.is_none())
                        .map(|(k, _)| k.clone()),
                )
            }) else {
                return Some(());
            };
            let v = format!("v{n}");
            cx.with(|l| {
                l.agents.get_mut(&id).expect("agent").description.pending = Some(v.clone())
            });
            let r = cx
                .call(
                    Method::PUT,
                    &format!("/api/agents/{id}"),
                    Some(json!({"description": v})),
                )
                .await?;
            ok(&r, 200);
            cx.ack(|l| {
                l.agents.get_mut(&id).expect("agent").description = Field {
                    acked: v,
                    pending: None,
                };
            });
        }
        20..=24 => {
            let Some(id) = cx.with(|l| {
                pick_one(
                    rng,
                    l.agents
                        .iter()
                        .filter(|(_, a)| a.owner == w && a.deleted.is_none())
                        .map(|(k, _)| k.clone()),
                )
            }) else {
                return Some(());
            };
            cx.with(|l| l.agents.get_mut(&id).expect("agent").deleted = Some(false));
            let r = cx
                .call(Method::DELETE, &format!("/api/agents/{id}"), None)
                .await?;
            ok(&r, 204);
            cx.ack(|l| l.agents.get_mut(&id).expect("agent").deleted = Some(true));
        }
        // Documents: upload (processed in the background), delete.
        25..=39 => {
            let token = format!("crashword{w}x{n}");
            let form = reqwest::multipart::Form::new().part(
                "file",
                reqwest::multipart::Part::bytes(document(&token, n))
                    .file_name(format!("notice-{w}-{n}.md"))
                    .mime_str("text/markdown")
                    .expect("mime"),
            );
            let r = cx
                .http
                .post(format!("{}/api/documents", cx.base))
                .bearer_auth(&cx.token)
                .multipart(form)
                .send()
                .await
                .ok()?;
            let status = r.status();
            let body: Value = r.json().await.ok()?;
            ok(&(status, body.clone()), 202);
            let id = body["data"][0]["id"].as_str().expect("doc id").to_string();
            cx.ack(|l| {
                l.docs.insert(
                    id,
                    DocRec {
                        owner: w,
                        token,
                        deleted: None,
                    },
                );
            });
        }
        40..=44 => {
            let Some(id) = cx.with(|l| {
                pick_one(
                    rng,
                    l.docs
                        .iter()
                        .filter(|(_, d)| d.owner == w && d.deleted.is_none())
                        .map(|(k, _)| k.clone()),
                )
            }) else {
                return Some(());
            };
            cx.with(|l| l.docs.get_mut(&id).expect("doc").deleted = Some(false));
            let r = cx
                .call(Method::DELETE, &format!("/api/documents/{id}"), None)
                .await?;
            ok(&r, 204);
            cx.ack(|l| l.docs.get_mut(&id).expect("doc").deleted = Some(true));
        }
        // Turns: a customer message answered by the fake model, in the request or later.
        45..=64 => {
            let existing = cx.with(|l| {
                pick_one(
                    rng,
                    l.conversations
                        .iter()
                        .filter(|(_, o)| **o == w)
                        .map(|(k, _)| k.clone()),
                )
            });
            let cid = match existing {
                Some(c) if rng.random_range(0..4) > 0 => c,
                _ => {
                    let r = cx
                        .call(
                            Method::POST,
                            "/api/conversations",
                            Some(json!({"agentId": cx.bots[w], "customer": {"name": format!("Customer {n}")}})),
                        )
                        .await?;
                    ok(&r, 201);
                    let cid = r.1["id"].as_str().expect("conversation id").to_string();
                    cx.ack(|l| {
                        l.conversations.insert(cid.clone(), w);
                    });
                    cid
                }
            };
            let content = format!("question {w}-{n}");
            let is_async = rng.random_bool(0.5);
            let r = cx
                .call(
                    Method::POST,
                    &format!("/api/conversations/{cid}/messages"),
                    Some(json!({"content": content, "role": "customer", "async": is_async, "clientId": format!("c{w}-{n}")})),
                )
                .await?;
            ok(&r, 201);
            if !is_async {
                assert_eq!(
                    r.1["reply"]["role"], "ai",
                    "a synchronous turn answers: {}",
                    r.1
                );
            }
            let mid = r.1["message"]["id"]
                .as_str()
                .expect("message id")
                .to_string();
            cx.ack(|l| l.turns.push((cid, mid, content)));
        }
        // Channels.
        65..=69 => {
            let r = cx
                .call(
                    Method::POST,
                    "/api/channels",
                    Some(json!({"type": "web", "name": format!("Site {w}-{n}"), "agentId": cx.bots[w]})),
                )
                .await?;
            ok(&r, 201);
            let id = r.1["id"].as_str().expect("channel id").to_string();
            cx.ack(|l| {
                l.channels.insert(id);
            });
        }
        // AI settings: one writer only, so acknowledgements come in commit order.
        70..=77 if w == 0 => {
            let model = format!("fake-model-{n}");
            cx.with(|l| l.model.pending = Some(model.clone()));
            let r = cx
                .call(
                    Method::PUT,
                    "/api/settings/ai",
                    Some(json!({"baseUrl": cx.fake_url, "apiKey": "sk-test", "model": model})),
                )
                .await?;
            ok(&r, 200);
            cx.ack(|l| {
                l.model = Field {
                    acked: model,
                    pending: None,
                }
            });
        }
        // API keys: create, delete.
        70..=84 => {
            let r = cx
                .call(
                    Method::POST,
                    "/api/api-keys",
                    Some(json!({"name": format!("key {w}-{n}")})),
                )
                .await?;
            ok(&r, 201);
            let id = r.1["id"].as_str().expect("key id").to_string();
            let secret = r.1["secret"].as_str().expect("secret").to_string();
            cx.ack(|l| {
                l.keys.insert(
                    id,
                    KeyRec {
                        owner: w,
                        secret,
                        deleted: None,
                    },
                );
            });
        }
        85..=89 => {
            let Some(id) = cx.with(|l| {
                pick_one(
                    rng,
                    l.keys
                        .iter()
                        .filter(|(_, k)| k.owner == w && k.deleted.is_none())
                        .map(|(k, _)| k.clone()),
                )
            }) else {
                return Some(());
            };
            cx.with(|l| l.keys.get_mut(&id).expect("key").deleted = Some(false));
            let r = cx
                .call(Method::DELETE, &format!("/api/api-keys/{id}"), None)
                .await?;
            ok(&r, 204);
            cx.ack(|l| l.keys.get_mut(&id).expect("key").deleted = Some(true));
        }
        // Users: an invitation, sometimes accepted (a new user who can sign in).
        _ => {
            let email = format!("member-{w}-{n}@crash.test");
            let r = cx
                .call(
                    Method::POST,
                    &format!("/api/tenants/{}/users", cx.tenant),
                    Some(json!({"email": email, "role": "TENANT_USER"})),
                )
                .await?;
            ok(&r, 201);
            let url = r.1["inviteUrl"].as_str().expect("inviteUrl").to_string();
            cx.ack(|l| {
                l.invitations.insert(email.clone());
            });
            if rng.random_bool(0.5) {
                let token = url.split("token=").nth(1).expect("token").to_string();
                let r = cx
                    .http
                    .post(format!("{}/api/auth/accept-invite", cx.base))
                    .json(&json!({"token": token, "name": "Member", "password": PASSWORD}))
                    .send()
                    .await
                    .ok()?;
                assert_eq!(r.status().as_u16(), 201, "accept-invite");
                cx.ack(|l| {
                    l.members.insert(email);
                });
            }
        }
    }
    Some(())
}

fn pick_one(rng: &mut StdRng, it: impl Iterator<Item = String>) -> Option<String> {
    let v: Vec<String> = it.collect();
    if v.is_empty() {
        None
    } else {
        Some(v[rng.random_range(0..v.len())].clone())
    }
}

/// Every item of a paged list.
async fn all(cx: &Ctx, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{sep}limit=200");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let r = cx
            .call(reqwest::Method::GET, &url, None)
            .await
            .expect("list");
        ok(&r, 200);
        out.extend(r.1["data"].as_array().expect("data").iter().cloned());
        match r.1["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// Polls `f` until it says done (bounded: a stuck state is a failure).
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{what}: not within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn file_sha256(path: &Path) -> Option<(String, u64)> {
    let bytes = std::fs::read(path).ok()?;
    Some((hex::encode(Sha256::digest(&bytes)), bytes.len() as u64))
}

/// Checks the restarted server against the ledger, then adopts what it found for the writes
/// that were in flight (they are now either durable or gone).
async fn verify(cx: &Ctx, data: &Path, verified_members: &mut BTreeSet<String>) {
    use reqwest::Method;
    // Documents: the queue resumes; every document ends ready (they are all valid).
    let docs = eventually(
        "documents to finish processing after the restart",
        async || {
            let docs = all(cx, "/api/documents").await;
            docs.iter()
                .all(|d| d["status"] == "ready" || d["status"] == "failed")
                .then_some(docs)
        },
    )
    .await;
    let files: PathBuf = data.join("tenants").join(&cx.tenant).join("files");
    let mut listed = BTreeMap::new();
    for d in &docs {
        let id = d["id"].as_str().expect("id").to_string();
        assert_eq!(
            d["status"], "ready",
            "a valid document failed after a crash: {d}"
        );
        // Record and file agree.
        let sha = d["sha256"].as_str().expect("sha256");
        let (got, len) = file_sha256(&files.join(sha))
            .unwrap_or_else(|| panic!("the stored file of document {id} is missing: {d}"));
        assert_eq!(got, sha, "the stored file of {id} is not what was uploaded");
        assert_eq!(Some(len), d["sizeBytes"].as_u64(), "{d}");
        // Record and chunks agree.
        let chunks = all(cx, &format!("/api/documents/{id}/chunks")).await;
        assert!(!chunks.is_empty(), "a ready document without chunks: {d}");
        assert_eq!(Some(chunks.len() as u64), d["chunkCount"].as_u64(), "{d}");
        listed.insert(id, d.clone());
    }
    let ledger_docs: Vec<(String, DocRec)> = cx.with(|l| l.docs.clone().into_iter().collect());
    for (id, rec) in ledger_docs {
        let present = listed.contains_key(&id);
        match rec.deleted {
            None => assert!(present, "acknowledged upload {id} is gone"),
            Some(true) => assert!(!present, "acknowledged delete of {id} was undone"),
            Some(false) => {}
        }
        // The index agrees with the store: its own word finds a present document, and
        // nothing of a deleted one.
        let r = cx
            .call(
                Method::POST,
                "/api/knowledge/search",
                Some(json!({"query": rec.token, "mode": "keyword", "topK": 50})),
            )
            .await
            .expect("search");
        ok(&r, 200);
        let found = r.1["data"]
            .as_array()
            .expect("hits")
            .iter()
            .any(|h| h["documentId"] == id.as_str());
        assert_eq!(
            found, present,
            "search for {} (document {id}, present: {present}): {}",
            rec.token, r.1
        );
        cx.with(|l| {
            let d = l.docs.get_mut(&id).expect("doc");
            d.deleted = if present { None } else { Some(true) };
        });
    }

    // Agents.
    let agents: Vec<(String, AgentRec)> = cx.with(|l| l.agents.clone().into_iter().collect());
    for (id, rec) in agents {
        let r = cx
            .call(Method::GET, &format!("/api/agents/{id}"), None)
            .await
            .expect("agent");
        let present = r.0 == StatusCode::OK;
        assert!(present || r.0 == StatusCode::NOT_FOUND, "{}", r.1);
        match rec.deleted {
            None => assert!(present, "acknowledged agent {id} is gone"),
            Some(true) => assert!(!present, "acknowledged delete of agent {id} was undone"),
            Some(false) => {}
        }
        if present {
            let v = r.1["description"].as_str().unwrap_or("").to_string();
            assert!(
                rec.description.allows(&v),
                "agent {id}: description {v:?}, expected {:?}",
                rec.description
            );
            cx.with(|l| {
                let a = l.agents.get_mut(&id).expect("agent");
                a.description = Field {
                    acked: v,
                    pending: None,
                };
                a.deleted = None;
            });
        } else {
            cx.with(|l| l.agents.get_mut(&id).expect("agent").deleted = Some(true));
        }
    }

    // Channels.
    for id in cx.with(|l| l.channels.clone()) {
        let r = cx
            .call(Method::GET, &format!("/api/channels/{id}"), None)
            .await
            .expect("channel");
        ok(&r, 200);
    }

    // AI settings: the last acknowledged model, or the one in flight.
    let r = cx
        .call(Method::GET, "/api/settings/ai", None)
        .await
        .expect("settings");
    ok(&r, 200);
    let model = r.1["model"].as_str().unwrap_or("").to_string();
    let field = cx.with(|l| l.model.clone());
    assert!(
        field.allows(&model),
        "AI model {model:?}, expected {field:?}"
    );
    cx.with(|l| {
        l.model = Field {
            acked: model,
            pending: None,
        }
    });

    // API keys: a kept key still signs in (its hash is stored), a deleted one does not.
    let keys: Vec<(String, KeyRec)> = cx.with(|l| l.keys.clone().into_iter().collect());
    for (id, rec) in keys {
        let r = cx
            .http
            .get(format!("{}/api/agents?limit=1", cx.base))
            .header("x-api-key", &rec.secret)
            .send()
            .await
            .expect("api key call");
        let works = r.status() == StatusCode::OK;
        assert!(
            works || r.status() == StatusCode::UNAUTHORIZED,
            "{}",
            r.status()
        );
        match rec.deleted {
            None => assert!(works, "acknowledged API key {id} no longer works"),
            Some(true) => assert!(!works, "acknowledged delete of API key {id} was undone"),
            Some(false) => {}
        }
        cx.with(|l| {
            l.keys.get_mut(&id).expect("key").deleted = if works { None } else { Some(true) }
        });
    }

    // Users: every invitation is pending or accepted; accepted members sign in.
    let mut emails: BTreeSet<String> = all(cx, &format!("/api/tenants/{}/invitations", cx.tenant))
        .await
        .iter()
        .filter_map(|i| i["email"].as_str().map(str::to_string))
        .collect();
    let users: BTreeSet<String> = all(cx, &format!("/api/tenants/{}/users", cx.tenant))
        .await
        .iter()
        .filter_map(|u| u["email"].as_str().map(str::to_string))
        .collect();
    emails.extend(users.iter().cloned());
    for e in cx.with(|l| l.invitations.clone()) {
        assert!(
            emails.contains(&e),
            "acknowledged invitation of {e} is gone"
        );
    }
    for e in cx.with(|l| l.members.clone()) {
        assert!(users.contains(&e), "acknowledged member {e} is gone");
        if verified_members.insert(e.clone()) {
            let r = cx
                .http
                .post(format!("{}/api/auth/login", cx.base))
                .json(&json!({"email": e, "password": PASSWORD}))
                .send()
                .await
                .expect("login");
            assert_eq!(r.status().as_u16(), 200, "member {e} cannot sign in");
        }
    }

    // Turns: every acknowledged customer message is there, and every customer message of
    // every conversation gets exactly one answer (turns resume after the restart).
    let turns = cx.with(|l| l.turns.clone());
    for cid in cx.with(|l| l.conversations.keys().cloned().collect::<Vec<_>>()) {
        let msgs = eventually("every customer message to be answered once", async || {
            let msgs = all(cx, &format!("/api/conversations/{cid}/messages")).await;
            let customer = msgs.iter().filter(|m| m["role"] == "customer").count();
            let ai = msgs.iter().filter(|m| m["role"] == "ai").count();
            assert!(
                ai <= customer,
                "more answers than questions in {cid}: {msgs:?}"
            );
            (ai == customer).then_some(msgs)
        })
        .await;
        for m in msgs.iter().filter(|m| m["role"] == "ai") {
            assert_eq!(m["status"], "sent", "a half-finished answer: {m}");
            assert!(
                !m["content"].as_str().unwrap_or("").is_empty(),
                "an empty answer: {m}"
            );
        }
        let ids: BTreeSet<&str> = msgs.iter().filter_map(|m| m["id"].as_str()).collect();
        for (c, mid, content) in turns.iter().filter(|t| t.0 == cid) {
            assert!(
                ids.contains(mid.as_str()),
                "acknowledged message {content:?} of {c} is gone"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_points_loses_no_acknowledged_write() {
    let seed: u64 = std::env::var("AIGENTABLE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let kills: usize = std::env::var("AIGENTABLE_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!(
        "crash consistency: seed {seed}, {kills} kills (AIGENTABLE_CRASH_SEED={seed} replays)"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let mut p = Proc::start(&data, &http).await;

    // The tenant, its model provider (the fake) and one agent per writer for turns.
    let r = http
        .post(format!("{}/api/auth/register", p.base))
        .json(&json!({"email": "owner@crash.test", "password": PASSWORD, "name": "Owner", "tenantName": "Crash"}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status().as_u16(), 201);
    let auth: Value = r.json().await.expect("json");
    let mut cx = Ctx {
        http: http.clone(),
        base: p.base.clone(),
        token: auth["accessToken"].as_str().expect("token").to_string(),
        tenant: auth["user"]["tenantId"]
            .as_str()
            .expect("tenant")
            .to_string(),
        bots: Vec::new(),
        fake_url: fake.base_url(),
        ledger: Arc::default(),
        acked: Arc::default(),
        acked_changed: Arc::default(),
    };
    let r = cx
        .call(
            reqwest::Method::PUT,
            "/api/settings/ai",
            Some(json!({"baseUrl": fake.base_url(), "apiKey": "sk-test", "model": "fake-model"})),
        )
        .await
        .expect("settings");
    ok(&r, 200);
    cx.with(|l| l.model.acked = "fake-model".into());
    for w in 0..WRITERS {
        let r = cx
            .call(
                reqwest::Method::POST,
                "/api/agents",
                Some(json!({"name": format!("Bot {w}")})),
            )
            .await
            .expect("agent");
        ok(&r, 201);
        cx.bots.push(r.1["id"].as_str().expect("id").to_string());
    }
    let cx = Arc::new(cx);
    let counter = Arc::new(AtomicUsize::new(0));
    let mut verified_members = BTreeSet::new();
    let mut cx = cx;
    for kill in 0..kills {
        // Kill after a random number of further acknowledgements, with the writers'
        // next requests in flight.
        let target = cx.acked.load(Ordering::SeqCst) + rng.random_range(1..=10);
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let cx = cx.clone();
                let counter = counter.clone();
                let mut wrng = StdRng::seed_from_u64(
                    seed ^ ((kill * WRITERS + w) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                tokio::spawn(async move {
                    loop {
                        let n = counter.fetch_add(1, Ordering::SeqCst) as u64;
                        if write_once(&cx, w, &mut wrng, n).await.is_none() {
                            return;
                        }
                    }
                })
            })
            .collect();
        let t0 = Instant::now();
        loop {
            let notified = cx.acked_changed.notified();
            if cx.acked.load(Ordering::SeqCst) >= target || writers.iter().any(|h| h.is_finished())
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "the writers made no progress"
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
        // The writers end before the server comes back: none of them reaches it.
        let (data, env) = (p.data.clone(), p.env.clone());
        p.kill9();
        for h in writers {
            h.abort();
            if let Err(e) = h.await
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        p = Proc::spawn(&data, &http, env).await;
        let mut next =
            Arc::try_unwrap(cx).unwrap_or_else(|_| panic!("writers still hold the context"));
        next.base = p.base.clone();
        cx = Arc::new(next);
        verify(&cx, &data, &mut verified_members).await;
        let l = cx.ledger.lock().expect("ledger");
        println!(
            "kill {}: {} acknowledged writes so far ({} documents, {} turns, {} agents, {} keys, {} invitations)",
            kill + 1,
            l.acks,
            l.docs.len(),
            l.turns.len(),
            l.agents.len(),
            l.keys.len(),
            l.invitations.len()
        );
    }
    p.kill9();
    drop(fake);
}

/// The WhatsApp Cloud API and Telegram Bot API in one double: records every message sent
/// (per recipient) and the secret of Telegram's setWebhook; answers like the providers.
/// Once `hold_after` messages arrived, the next ones are taken (counted as sent) but not
/// answered until `release`: the server is killed with sends whose outcome it cannot know.
struct Providers {
    sends: Mutex<BTreeMap<String, usize>>,
    telegram_secret: Mutex<Option<String>>,
    next: AtomicUsize,
    hold_after: AtomicUsize,
    held: AtomicUsize,
    release: tokio::sync::Semaphore,
}

impl Default for Providers {
    fn default() -> Self {
        Providers {
            sends: Mutex::default(),
            telegram_secret: Mutex::default(),
            next: AtomicUsize::default(),
            hold_after: AtomicUsize::new(usize::MAX),
            held: AtomicUsize::default(),
            release: tokio::sync::Semaphore::new(0),
        }
    }
}

impl Providers {
    /// Counts a message to `to` as taken by the provider; holds its answer when due.
    async fn take(&self, to: String) {
        let total = {
            let mut sends = self.sends.lock().expect("sends");
            *sends.entry(to).or_default() += 1;
            sends.values().sum::<usize>()
        };
        if total > self.hold_after.load(Ordering::SeqCst) {
            self.held.fetch_add(1, Ordering::SeqCst);
            let _ = self.release.acquire().await;
        }
    }
}

async fn wa_send(
    axum::extract::State(p): axum::extract::State<Arc<Providers>>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    p.take(format!("wa:{}", body["to"].as_str().unwrap_or("")))
        .await;
    let n = p.next.fetch_add(1, Ordering::SeqCst);
    axum::Json(
        json!({"messaging_product": "whatsapp", "messages": [{"id": format!("wamid.OUT{n}")}]}),
    )
}

async fn tg_call(
    axum::extract::State(p): axum::extract::State<Arc<Providers>>,
    axum::extract::Path((_bot, method)): axum::extract::Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let n = p.next.fetch_add(1, Ordering::SeqCst);
    match method.as_str() {
        "setWebhook" => {
            *p.telegram_secret.lock().expect("secret") =
                body["secret_token"].as_str().map(str::to_string);
            axum::Json(json!({"ok": true, "result": true}))
        }
        "sendMessage" => {
            p.take(format!("tg:{}", body["chat_id"])).await;
            axum::Json(json!({"ok": true, "result": {"message_id": n}}))
        }
        _ => axum::Json(json!({"ok": true, "result": {}})),
    }
}

/// One provider delivery: where it goes, its headers, its body, and the message it carries.
#[derive(Clone)]
struct Delivery {
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// `wa:1555...` / `tg:<chat>`: the recipient of the replies.
    contact: String,
    text: String,
}

impl Delivery {
    async fn send(&self, http: &reqwest::Client, base: &str) -> bool {
        let mut rb = http
            .post(format!("{base}{}", self.url))
            .header("content-type", "application/json")
            .body(self.body.clone());
        for (k, v) in &self.headers {
            rb = rb.header(*k, v);
        }
        matches!(rb.send().await, Ok(r) if r.status().is_success())
    }
}

/// Sends every delivery, 8 at a time, and kills the server once `kill_after` of them were
/// acknowledged (the others in flight or not sent yet). Returns which were acknowledged.
async fn deliver_and_kill(
    http: &reqwest::Client,
    p: Proc,
    deliveries: &[Delivery],
    kill_after: usize,
) -> Vec<bool> {
    let base = p.base.clone();
    let acked = Arc::new(AtomicUsize::new(0));
    let changed = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(tokio::sync::Semaphore::new(8));
    let tasks: Vec<_> = deliveries
        .iter()
        .cloned()
        .map(|d| {
            let (http, base, acked, changed, gate) = (
                http.clone(),
                base.clone(),
                acked.clone(),
                changed.clone(),
                gate.clone(),
            );
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("gate");
                let ok = d.send(&http, &base).await;
                if ok {
                    acked.fetch_add(1, Ordering::SeqCst);
                    changed.notify_waiters();
                }
                ok
            })
        })
        .collect();
    let t0 = Instant::now();
    loop {
        let notified = changed.notified();
        if acked.load(Ordering::SeqCst) >= kill_after {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "webhooks were not acknowledged"
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
    }
    p.kill9();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("delivery task"));
    }
    out
}

#[tokio::test]
async fn webhooks_acknowledged_before_a_kill_are_answered_once_after_it() {
    use reqwest::Method;
    const CONTACTS: usize = 16;
    const APP_SECRET: &str = "0123456789abcdef0123456789abcdef";
    const PHONE_ID: &str = "1111111111";
    let fake = FakeOpenAi::start().await;
    let providers = Arc::new(Providers::default());
    let app = axum::Router::new()
        .route("/{v}/{phone}/messages", axum::routing::post(wa_send))
        .route("/{bot}/{method}", axum::routing::post(tg_call))
        .with_state(providers.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let provider_base = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let env = [
        ("META_GRAPH_BASE_URL", provider_base.clone()),
        ("TELEGRAM_API_BASE_URL", provider_base.clone()),
    ];
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let p = Proc::start_with(&data, &http, &env).await;
    let r = http
        .post(format!("{}/api/auth/register", p.base))
        .json(&json!({"email": "owner@hooks.test", "password": PASSWORD, "name": "Owner", "tenantName": "Hooks"}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status().as_u16(), 201);
    let auth: Value = r.json().await.expect("json");
    let mut cx = Ctx {
        http: http.clone(),
        base: p.base.clone(),
        token: auth["accessToken"].as_str().expect("token").to_string(),
        tenant: auth["user"]["tenantId"]
            .as_str()
            .expect("tenant")
            .to_string(),
        bots: Vec::new(),
        fake_url: fake.base_url(),
        ledger: Arc::default(),
        acked: Arc::default(),
        acked_changed: Arc::default(),
    };
    let r = cx
        .call(
            Method::PUT,
            "/api/settings/ai",
            Some(json!({"baseUrl": fake.base_url(), "apiKey": "sk-test", "model": "fake-model"})),
        )
        .await
        .expect("settings");
    ok(&r, 200);
    let r = cx
        .call(
            Method::POST,
            "/api/agents",
            Some(json!({"name": "Shop Bot"})),
        )
        .await
        .expect("agent");
    ok(&r, 201);
    let agent = r.1["id"].as_str().expect("id").to_string();
    let r = cx
        .call(
            Method::POST,
            "/api/channels",
            Some(json!({"type": "whatsapp", "name": "WA", "agentId": agent,
                "credentials": {"accessToken": "EAAGwhatsappaccesstoken0123456789", "appSecret": APP_SECRET},
                "settings": {"phoneNumberId": PHONE_ID}})),
        )
        .await
        .expect("whatsapp channel");
    ok(&r, 201);
    let wa = r.1["id"].as_str().expect("id").to_string();
    let r = cx
        .call(
            Method::POST,
            "/api/channels",
            Some(json!({"type": "telegram", "name": "TG", "agentId": agent,
                "credentials": {"botToken": "123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"}})),
        )
        .await
        .expect("telegram channel");
    ok(&r, 201);
    let tg = r.1["id"].as_str().expect("id").to_string();
    let secret = providers
        .telegram_secret
        .lock()
        .expect("secret")
        .clone()
        .expect("setWebhook was called with a secret");

    // Two messages from each of 16 WhatsApp customers and 16 Telegram chats.
    let mut deliveries = Vec::new();
    for round in 0..2 {
        for c in 0..CONTACTS {
            let from = format!("155500{c:05}");
            let text = format!("wa {c} message {round}");
            let body = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages",
                "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": PHONE_ID},
                    "contacts": [{"wa_id": from, "profile": {"name": format!("Customer {c}")}}],
                    "messages": [{"from": from, "id": format!("wamid.K{c}-{round}"), "timestamp": "1700000000",
                        "type": "text", "text": {"body": text}}]}}]}]}))
            .expect("json");
            deliveries.push(Delivery {
                url: format!("/webhooks/whatsapp/{wa}"),
                headers: vec![(
                    "X-Hub-Signature-256",
                    aigentable::channels::meta::sign(APP_SECRET, &body),
                )],
                body,
                // WhatsApp is sent the number without its +.
                contact: format!("wa:{from}"),
                text,
            });
            let chat = 7000 + c as i64;
            let text = format!("tg {c} message {round}");
            let update = (round * CONTACTS + c) as i64 + 1;
            let body = serde_json::to_vec(&json!({"update_id": update, "message": {"message_id": update, "date": 1,
                "chat": {"id": chat, "type": "private"}, "from": {"id": chat, "first_name": format!("Chat {c}")},
                "text": text}}))
            .expect("json");
            deliveries.push(Delivery {
                url: format!("/webhooks/telegram/{tg}"),
                headers: vec![("X-Telegram-Bot-Api-Secret-Token", secret.clone())],
                body,
                contact: format!("tg:{chat}"),
                text,
            });
        }
    }

    // The model answers nothing yet: no reply leaves before the kills, so every reply sent
    // later is owed to exactly one acknowledged message.
    fake.hold();
    // Kill 1: while the deliveries are being acknowledged.
    let acked = deliver_and_kill(&http, p, &deliveries, deliveries.len() / 3).await;
    let first = acked.iter().filter(|a| **a).count();
    assert!(
        first >= deliveries.len() / 3 && first < deliveries.len(),
        "{first} acknowledged before the kill"
    );
    let p = Proc::start_with(&data, &http, &env).await;
    // The providers retry what was not acknowledged; the acknowledged ones come again too
    // (a provider's duplicate delivery): every one answers 200 now, nothing is stored twice.
    for d in &deliveries {
        assert!(
            d.send(&http, &p.base).await,
            "a delivery was refused after the restart"
        );
    }
    // Kill 2: while they are being processed (the model still holds every turn).
    let p = p.restart(&http).await;
    // Kill 3: while the replies are being sent, with some of them taken by the provider
    // and not answered yet (so the server cannot know whether they arrived).
    providers
        .hold_after
        .store(deliveries.len() / 2, Ordering::SeqCst);
    fake.release();
    eventually("a send held by the provider", async || {
        (providers.held.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    providers.hold_after.store(usize::MAX, Ordering::SeqCst);
    let p = p.restart(&http).await;
    let held = providers.held.load(Ordering::SeqCst);
    providers.release.add_permits(1 << 20);
    cx.base = p.base.clone();

    // Every reply settles: sent, or failed as `delivery_unknown` (not sent again).
    let unknown = |m: &Value| {
        m["status"] == "failed"
            && m["errorCode"] == "delivery_unknown"
            && m["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("delivery_unknown: "))
    };
    let settled = |m: &Value| m["role"] != "ai" || m["status"] == "sent" || unknown(m);
    eventually("every reply sent or shown as unknown", async || {
        let mut replies = 0;
        for channel in [&wa, &tg] {
            for c in all(&cx, &format!("/api/conversations?channelId={channel}")).await {
                let cid = c["id"].as_str().expect("id");
                let msgs = all(&cx, &format!("/api/conversations/{cid}/messages")).await;
                if !msgs.iter().all(settled) {
                    return None;
                }
                replies += msgs.iter().filter(|m| m["role"] == "ai").count();
            }
        }
        (replies >= deliveries.len()).then_some(())
    })
    .await;
    let sent = providers.sends.lock().expect("sends").clone();
    // Each customer is one conversation holding each of their messages once and one reply
    // per message: never sent twice; sent once, or shown as unknown (sent at most once).
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in &deliveries {
        expected
            .entry(d.contact.clone())
            .or_default()
            .push(d.text.clone());
    }
    let mut seen = BTreeSet::new();
    let mut unknown_total = 0;
    for (channel, prefix) in [(&wa, "wa:"), (&tg, "tg:")] {
        let convs = all(&cx, &format!("/api/conversations?channelId={channel}")).await;
        assert_eq!(convs.len(), CONTACTS, "one conversation per customer");
        for c in convs {
            let ext = c["customer"]["externalId"].as_str().expect("external id");
            let contact = format!("{prefix}{}", ext.trim_start_matches('+'));
            assert!(
                seen.insert(contact.clone()),
                "two conversations for {contact}"
            );
            let cid = c["id"].as_str().expect("id");
            let msgs = all(&cx, &format!("/api/conversations/{cid}/messages")).await;
            let mut texts: Vec<String> = msgs
                .iter()
                .filter(|m| m["role"] == "customer")
                .map(|m| m["content"].as_str().unwrap_or("").to_string())
                .collect();
            texts.sort();
            let mut want = expected.get(&contact).cloned().unwrap_or_default();
            want.sort();
            assert_eq!(texts, want, "{contact}: each message exactly once");
            let replies: Vec<&Value> = msgs.iter().filter(|m| m["role"] == "ai").collect();
            assert_eq!(
                replies.len(),
                want.len(),
                "{contact}: one reply per message"
            );
            let ok = replies.iter().filter(|m| m["status"] == "sent").count();
            let unsure = replies.iter().filter(|m| unknown(m)).count();
            assert_eq!(ok + unsure, replies.len(), "{contact}: {replies:?}");
            let times = sent.get(&contact).copied().unwrap_or(0);
            assert!(
                ok <= times && times <= ok + unsure,
                "{contact}: {times} sends for {ok} replies sent and {unsure} unknown: a reply sent twice, or a sent one never reached the provider"
            );
            unknown_total += unsure;
        }
    }
    // The replies held at the kill are among the unknown ones (not resent after it).
    assert!(
        held > 0 && unknown_total >= held,
        "{held} held, {unknown_total} unknown"
    );
    assert!(
        sent.values().sum::<usize>() <= deliveries.len(),
        "more sends than replies: {sent:?}"
    );
    p.kill9();
    server.abort();
    drop(fake);
}
