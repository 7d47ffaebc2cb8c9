//! Test harness: start the real app on an ephemeral port, small HTTP helpers, a fake SMTP
//! server (the mail edge we do not own).

#![allow(dead_code)]

use aigentable::config::{Config, Secret};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub const ROOT_EMAIL: &str = "root@example.com";
pub const ROOT_PASSWORD: &str = "root-password-123";

pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
    pub dir: Arc<tempfile::TempDir>,
    /// The running app's services (event bus, jobs, store); dropped by [`Server::stop`].
    pub svc: Arc<aigentable::domain::Services>,
    /// The running app's knowledge base (indexes, pipeline); dropped by [`Server::stop`].
    pub knowledge: Arc<aigentable::knowledge::Knowledge>,
    /// The server's clock: tests move it instead of sleeping past an expiry.
    pub clock: aigentable::types::Clock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A config for tests: temp data dir, limits off, a platform admin.
pub fn test_config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        rate_limit_auth_per_min: 0,
        rate_limit_api_per_min: 0,
        rate_limit_upload_per_min: 0,
        admin_email: Some(ROOT_EMAIL.into()),
        admin_password: Some(Secret::new(ROOT_PASSWORD)),
        shutdown_timeout_secs: 5,
        // The fake model providers and tool endpoints of the tests run on 127.0.0.1 and are
        // set as tenant URLs: the operator allows that host. tests/integration/outbound.rs
        // starts without it to test the policy.
        outbound_allowed_private_hosts: "127.0.0.1".into(),
        ..Config::default()
    }
}

pub async fn start() -> Server {
    start_with(|_| {}).await
}

pub async fn start_with(f: impl FnOnce(&mut Config)) -> Server {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    start_in(dir, f).await
}

/// Starts on an existing data dir (for restart tests).
pub async fn start_in(dir: Arc<tempfile::TempDir>, f: impl FnOnce(&mut Config)) -> Server {
    let mut cfg = test_config(dir.path());
    f(&mut cfg);
    let app = aigentable::build(cfg).await.expect("app builds");
    let svc = app.state.svc.clone();
    let knowledge = app.state.knowledge.clone();
    let clock = app.state.svc.clock.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        aigentable::serve_with_listener(app, listener, async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    Server {
        base: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        dir,
        svc,
        knowledge,
        clock,
        stop: Some(tx),
        task: Some(task),
    }
}

/// A response: status, headers and the JSON body (Null when not JSON).
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }
    #[track_caller]
    pub fn expect_err(&self, status: u16, code: &str) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.code(),
            code,
            "unexpected error code; body: {}",
            self.text
        );
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        self
    }
}

impl Server {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Stops the server and reads one agent's daily analytics rows from its store.
    pub async fn stop_and_read_analytics(
        self,
        tenant_id: &str,
        agent: &str,
    ) -> Vec<aigentable::model::AgentAnalytics> {
        let tenant = aigentable::types::TenantId::parse(tenant_id).expect("tenant id");
        let dir = self.stop().await;
        let store = aigentable::store::Store::open(dir.path(), 1 << 20).expect("open store");
        store
            .read(|tx| {
                tx.scan::<aigentable::model::AgentAnalytics>(&tenant, None, |r| {
                    r.agent_id.as_str() == agent
                })
            })
            .expect("scan")
    }

    pub async fn stop(mut self) -> Arc<tempfile::TempDir> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task");
        }
        self.dir.clone()
    }

    pub async fn req(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut rb = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        send(rb).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.req(Method::GET, path, Some(token), None).await
    }
    /// POST /api/knowledge/search.
    pub async fn search(&self, token: &str, body: Value) -> Resp {
        self.post("/api/knowledge/search", Some(token), body).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.req(Method::POST, path, token, Some(body)).await
    }
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.req(Method::PUT, path, Some(token), Some(body)).await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.req(Method::DELETE, path, Some(token), None).await
    }

    /// Registers a new tenant with its admin.
    pub async fn register(&self, email: &str, tenant: &str) -> Account {
        let r = self
            .post(
                "/api/auth/register",
                None,
                json!({"email": email, "password": "password-123", "name": "Owner", "tenantName": tenant}),
            )
            .await;
        r.expect(201);
        Account::from_auth(&r.body)
    }

    pub async fn login(&self, email: &str, password: &str) -> Account {
        let r = self
            .post(
                "/api/auth/login",
                None,
                json!({"email": email, "password": password}),
            )
            .await;
        r.expect(200);
        Account::from_auth(&r.body)
    }

    pub async fn root(&self) -> Account {
        self.login(ROOT_EMAIL, ROOT_PASSWORD).await
    }

    /// Invites `email` into `tenant` with `role` and accepts; returns the new account.
    pub async fn invite_and_accept(
        &self,
        admin: &Account,
        tenant: &str,
        email: &str,
        role: &str,
    ) -> Account {
        let r = self
            .post(
                &format!("/api/tenants/{tenant}/users"),
                Some(&admin.token),
                json!({"email": email, "role": role}),
            )
            .await;
        r.expect(201);
        let url = r.body["inviteUrl"].as_str().expect("inviteUrl").to_string();
        let token = url
            .split("token=")
            .nth(1)
            .expect("token in url")
            .to_string();
        let r = self
            .post(
                "/api/auth/accept-invite",
                None,
                json!({"token": token, "name": "Member", "password": "password-123"}),
            )
            .await;
        r.expect(201);
        Account::from_auth(&r.body)
    }
}

pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let resp = rb.send().await.expect("request sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
        text,
    }
}

/// `POST /api/tenants/{id}/export` as `a` (with `passphrase`, else an unencrypted archive);
/// checks the answer is 200 and returns it (the archive is its body).
pub async fn export_tenant(s: &Server, a: &Account, passphrase: Option<&str>) -> reqwest::Response {
    let body = match passphrase {
        Some(p) => json!({ "passphrase": p }),
        None => json!({}),
    };
    let resp = s
        .http
        .post(format!("{}/api/tenants/{}/export", s.base, a.tenant_id))
        .bearer_auth(&a.token)
        .json(&body)
        .send()
        .await
        .expect("export");
    assert_eq!(resp.status().as_u16(), 200);
    resp
}

/// `POST /api/tenants/import{query}` of an export archive as `token` (a platform admin's, for
/// anything but a refusal), with `passphrase` when the archive is encrypted.
pub async fn import_tenant(
    s: &Server,
    token: &str,
    archive: &[u8],
    passphrase: Option<&str>,
    query: &str,
) -> Resp {
    let mut rb = s
        .http
        .post(format!("{}/api/tenants/import{query}", s.base))
        .bearer_auth(token)
        .header("content-type", "application/gzip")
        .body(archive.to_vec());
    if let Some(p) = passphrase {
        rb = rb.header("x-export-passphrase", p);
    }
    send(rb).await
}

#[derive(Clone, Debug)]
pub struct Account {
    pub token: String,
    pub refresh: String,
    pub user_id: String,
    pub tenant_id: String,
}

impl Account {
    pub fn from_auth(v: &Value) -> Self {
        Account {
            token: v["accessToken"].as_str().expect("accessToken").into(),
            refresh: v["refreshToken"].as_str().expect("refreshToken").into(),
            user_id: v["user"]["id"].as_str().expect("user.id").into(),
            tenant_id: v["user"]["tenantId"].as_str().unwrap_or("").into(),
        }
    }
}

/// A minimal SMTP server on 127.0.0.1 that accepts every mail and keeps its DATA.
pub struct FakeSmtp {
    pub url: String,
    pub mails: Arc<Mutex<Vec<String>>>,
}

pub async fn fake_smtp() -> FakeSmtp {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
    let addr = listener.local_addr().expect("addr");
    let mails = Arc::new(Mutex::new(Vec::new()));
    let store = mails.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 fake ESMTP\r\n").await;
                let mut in_data = false;
                let mut data = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            store.lock().expect("lock").push(std::mem::take(&mut data));
                            let _ = w.write_all(b"250 OK queued\r\n").await;
                        } else {
                            data.push_str(&line);
                            data.push('\n');
                        }
                        continue;
                    }
                    let cmd = line.to_ascii_uppercase();
                    let reply: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                        b"250-fake\r\n250 8BITMIME\r\n"
                    } else if cmd.starts_with("DATA") {
                        in_data = true;
                        b"354 go ahead\r\n"
                    } else if cmd.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        b"250 OK\r\n"
                    };
                    let _ = w.write_all(reply).await;
                }
            });
        }
    });
    FakeSmtp {
        url: format!("smtp://{addr}"),
        mails,
    }
}

impl FakeSmtp {
    /// The first mail containing `needle`, waiting up to 30 s (as for log lines): mails go
    /// out from the job queue, which the whole suite on a loaded 2-core machine can hold
    /// back for seconds; 5 s left little room.
    pub async fn wait_for(&self, needle: &str) -> String {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if let Some(m) = self
                .mails
                .lock()
                .expect("lock")
                .iter()
                .find(|m| m.contains(needle))
            {
                return m.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no mail containing {needle:?} arrived in 30 s");
    }
}

/// The token after `token=` in a mail or URL (quoted-printable soft breaks removed).
pub fn token_from(text: &str) -> String {
    let t = text.replace("=\n", "").replace("=3D", "=");
    let start = t.find("token=").expect("token= in text") + 6;
    t[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

// Agents and the knowledge base, shared by the engine and knowledge tests.

/// Every awaited call in these tests is bounded: a hang is a failure, not a stuck run.
pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60 s"))
}

pub async fn create_agent(s: &Server, a: &Account, body: Value) -> Value {
    let r = s.post("/api/agents", Some(&a.token), body).await;
    r.expect(201);
    r.body
}

pub fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

// Conversations of a channel, shared by the channel tests (Telegram, Meta).

/// The conversations of a channel, as staff sees them.
/// Starts a conversation with `agent` as the caller of `token`; its id.
pub async fn start_conversation(s: &Server, token: &str, agent: &str) -> String {
    let c = s
        .post("/api/conversations", Some(token), json!({"agentId": agent}))
        .await;
    c.expect(201);
    id(&c.body)
}

pub async fn channel_conversations(s: &Server, token: &str, channel: &str) -> Vec<Value> {
    let r = s
        .get(&format!("/api/conversations?channelId={channel}"), token)
        .await;
    r.expect(200);
    r.body["data"].as_array().cloned().unwrap_or_default()
}

/// Waits (bounded) until a channel has at least `n` conversations.
pub async fn wait_channel_conversations(
    s: &Server,
    token: &str,
    channel: &str,
    n: usize,
) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let c = channel_conversations(s, token, channel).await;
        if c.len() >= n {
            return c;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{c:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The messages of a conversation, in `seq` order.
pub async fn conversation_messages(s: &Server, token: &str, cid: &str) -> Vec<Value> {
    let r = s
        .get(
            &format!("/api/conversations/{cid}/messages?limit=200"),
            token,
        )
        .await;
    r.expect(200);
    let mut v = r.body["data"].as_array().cloned().unwrap_or_default();
    v.sort_by_key(|m| m["seq"].as_u64());
    v
}

/// Waits (bounded) until the conversation has a message matching `want`.
pub async fn wait_conversation_message(
    s: &Server,
    token: &str,
    cid: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let t0 = Instant::now();
    loop {
        let msgs = conversation_messages(s, token, cid).await;
        if let Some(m) = msgs.iter().find(|m| want(m)) {
            return m.clone();
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{msgs:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Uploads `files` (name, type, bytes) as one multipart request, linked to `agent_ids`.
pub async fn upload(
    s: &Server,
    token: &str,
    files: &[(&str, &str, Vec<u8>)],
    agent_ids: Option<&str>,
) -> Resp {
    let mut form = reqwest::multipart::Form::new();
    for (name, mime, bytes) in files {
        let part = reqwest::multipart::Part::bytes(bytes.clone())
            .file_name(name.to_string())
            .mime_str(mime)
            .expect("mime");
        form = form.part("file", part);
    }
    if let Some(a) = agent_ids {
        form = form.text("agentIds", a.to_string());
    }
    send(
        s.http
            .post(format!("{}/api/documents", s.base))
            .bearer_auth(token)
            .multipart(form),
    )
    .await
}

/// Polls a document until it leaves queued/processing (bounded).
pub async fn wait_done(s: &Server, token: &str, id: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let r = s.get(&format!("/api/documents/{id}"), token).await;
        r.expect(200);
        let st = r.body["status"].as_str().unwrap_or("");
        if st == "ready" || st == "failed" {
            return r.body;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "document stuck in {st}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Uploads one file, linked to `agent` if given, and waits until it is ready; its id.
pub async fn upload_doc(
    s: &Server,
    token: &str,
    name: &str,
    mime: &str,
    bytes: &[u8],
    agent: Option<&str>,
) -> String {
    let r = upload(s, token, &[(name, mime, bytes.to_vec())], agent).await;
    r.expect(202);
    let doc = r.body["data"][0]["id"]
        .as_str()
        .expect("doc id")
        .to_string();
    let d = wait_done(s, token, &doc).await;
    assert_eq!(d["status"], "ready", "document failed: {d}");
    doc
}

/// A PDF with one line of text per page.
pub fn pdf(pages: &[&str]) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{Document, Object, Stream, dictionary};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(
        dictionary! {"Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica"},
    );
    let resources_id = doc.add_object(dictionary! {"Font" => dictionary! {"F1" => font_id}});
    let mut kids = Vec::new();
    for text in pages {
        let content = Content {
            operations: vec![
                Operation::new("BT", vec![]),
                Operation::new("Tf", vec!["F1".into(), 12.into()]),
                Operation::new("Td", vec![72.into(), 700.into()]),
                Operation::new("Tj", vec![Object::string_literal(*text)]),
                Operation::new("ET", vec![]),
            ],
        };
        let content_id = doc.add_object(Stream::new(
            dictionary! {},
            content.encode().expect("encode"),
        ));
        let page_id = doc.add_object(dictionary! {"Type" => "Page", "Parent" => pages_id, "Contents" => content_id, "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()]});
        kids.push(page_id.into());
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(
            dictionary! {"Type" => "Pages", "Kids" => kids, "Count" => count, "Resources" => resources_id},
        ),
    );
    let catalog_id = doc.add_object(dictionary! {"Type" => "Catalog", "Pages" => pages_id});
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).expect("save pdf");
    out
}

/// Everything the tests of this binary log at INFO and above. One global subscriber for the
/// whole binary, installed by the first [`logs`] call; tests read it through [`logs`].
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
    pub async fn wait_for(&self, needle: &str) {
        let t0 = Instant::now();
        while !self.text().contains(needle) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no log line {needle:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn logs() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let w = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .try_init()
            .expect("the test binary has one global log subscriber, installed here");
        logs
    })
    .clone()
}
