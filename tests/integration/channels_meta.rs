//! WhatsApp, Messenger and Instagram end to end against a local Graph API double (records
//! every request, answers like Meta): channel setup and the GET shape, the verification
//! handshake, signed webhooks (valid, forged, missing), bad bodies, duplicate and batched
//! deliveries, delivery statuses (out of order never backwards), replies through the
//! outbox (5xx retried, 4xx failed with Meta's words, split at the provider's limit), the
//! 24-hour window and WhatsApp templates, Messenger's HUMAN_AGENT tag, a crash between
//! acknowledging and processing.

use crate::common::*;
use crate::engine::ai_tenant;
use crate::fake_openai::{FakeOpenAi, Reply};
use aigentable::channels::meta::sign;
use aigentable::domain::inbound::InboundPayload;
use aigentable::model::{InboundEvent, InboundStatus, Job, JobStatus, Message, MessageRole};
use aigentable::store::{Index, Store, make_ref};
use aigentable::types::TenantId;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WA_TOKEN: &str = "EAAGwhatsappaccesstoken0123456789";
const PAGE_TOKEN: &str = "EAAGpageaccesstoken0123456789abcdef";
const APP_SECRET: &str = "0123456789abcdef0123456789abcdef";
const PHONE_ID: &str = "1111111111";
const PAGE_ID: &str = "900900900";

/// One request the double received.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    path: String,
    auth: String,
    body: Value,
}

#[derive(Default)]
struct Double {
    calls: Mutex<Vec<Call>>,
    /// Scripted answers to message sends (status, body), in order; default: success.
    sends: Mutex<VecDeque<(u16, Value)>>,
    next_id: Mutex<u64>,
    base: Mutex<String>,
}

/// A Graph API double on 127.0.0.1.
struct FakeGraph {
    base: String,
    inner: Arc<Double>,
}

fn auth_of(h: &HeaderMap) -> String {
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn oauth_error() -> (StatusCode, axum::Json<Value>) {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(
            json!({"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}),
        ),
    )
}

fn known_token(auth: &str) -> bool {
    auth == format!("Bearer {WA_TOKEN}") || auth == format!("Bearer {PAGE_TOKEN}")
}

async fn node(
    State(d): State<Arc<Double>>,
    Path((_v, node)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
) -> (StatusCode, axum::Json<Value>) {
    let auth = auth_of(&h);
    d.calls.lock().expect("lock").push(Call {
        method: "GET".into(),
        path: format!("/{node}?{}", q.clone().unwrap_or_default()),
        auth: auth.clone(),
        body: Value::Null,
    });
    if !known_token(&auth) {
        return oauth_error();
    }
    let base = d.base.lock().expect("lock").clone();
    let body = match node.as_str() {
        PHONE_ID => {
            json!({"id": PHONE_ID, "display_phone_number": "+1 555-010-0000", "verified_name": "Shop", "quality_rating": "GREEN"})
        }
        PAGE_ID => json!({"id": PAGE_ID, "name": "Shop Page", "username": "shop.page"}),
        m if m.starts_with("media") => {
            let size = if m == "media-huge" { 50_000_000 } else { 12 };
            json!({"url": format!("{base}/download/{m}"), "mime_type": "image/jpeg", "file_size": size, "id": m})
        }
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": {"message": "Unsupported get request.", "code": 100}})),
            );
        }
    };
    (StatusCode::OK, axum::Json(body))
}

async fn download(
    State(d): State<Arc<Double>>,
    Path(m): Path<String>,
    h: HeaderMap,
) -> (StatusCode, Vec<u8>) {
    let auth = auth_of(&h);
    d.calls.lock().expect("lock").push(Call {
        method: "GET".into(),
        path: format!("/download/{m}"),
        auth: auth.clone(),
        body: Value::Null,
    });
    if !known_token(&auth) {
        return (StatusCode::UNAUTHORIZED, vec![]);
    }
    (StatusCode::OK, b"\xff\xd8\xff jpeg".to_vec())
}

async fn messages(
    State(d): State<Arc<Double>>,
    Path((_v, account)): Path<(String, String)>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let auth = auth_of(&h);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    d.calls.lock().expect("lock").push(Call {
        method: "POST".into(),
        path: format!("/{account}/messages"),
        auth: auth.clone(),
        body: body.clone(),
    });
    if !known_token(&auth) {
        return oauth_error();
    }
    if let Some((status, b)) = d.sends.lock().expect("lock").pop_front() {
        return (StatusCode::from_u16(status).expect("status"), axum::Json(b));
    }
    let n = {
        let mut n = d.next_id.lock().expect("lock");
        *n += 1;
        *n
    };
    let answer = if body["messaging_product"] == "whatsapp" {
        json!({"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": body["to"]}],
               "messages": [{"id": format!("wamid.OUT{n}")}]})
    } else {
        json!({"recipient_id": body["recipient"]["id"], "message_id": format!("m_OUT{n}")})
    };
    (StatusCode::OK, axum::Json(answer))
}

/// Telegram's Bot API on the same double (`/bot<token>/<method>`), for media via getFile.
async fn telegram(
    State(d): State<Arc<Double>>,
    Path((bot, method)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    d.calls.lock().expect("lock").push(Call {
        method: "TG".into(),
        path: method.clone(),
        auth: bot,
        body,
    });
    let result = match method.as_str() {
        "getFile" => {
            json!({"file_id": "photo-big", "file_path": "photos/file_1.jpg", "file_size": 9})
        }
        "sendMessage" => json!({"message_id": 1}),
        _ => json!(true),
    };
    (
        StatusCode::OK,
        axum::Json(json!({"ok": true, "result": result})),
    )
}

async fn telegram_file(Path((_bot, path)): Path<(String, String)>) -> (StatusCode, Vec<u8>) {
    if path == "photos/file_1.jpg" {
        (StatusCode::OK, b"\xff\xd8\xff jpeg".to_vec())
    } else {
        (StatusCode::NOT_FOUND, vec![])
    }
}

impl FakeGraph {
    async fn start() -> FakeGraph {
        let inner = Arc::new(Double::default());
        let app = Router::new()
            .route("/{v}/{node}", get(node).post(telegram))
            .route("/{v}/{account}/messages", post(messages))
            .route("/download/{m}", get(download))
            .route("/file/{bot}/{*path}", get(telegram_file))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        *inner.base.lock().expect("lock") = base.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGraph { base, inner }
    }

    fn sends(&self) -> Vec<Call> {
        self.inner
            .calls
            .lock()
            .expect("lock")
            .iter()
            .filter(|c| c.method == "POST")
            .cloned()
            .collect()
    }

    fn script_send(&self, status: u16, body: Value) {
        self.inner
            .sends
            .lock()
            .expect("lock")
            .push_back((status, body));
    }

    /// The next send gets Meta's transient 5xx: the outbox retries it later.
    fn script_transient_error(&self) {
        self.script_send(
            500,
            json!({"error": {"message": "An unexpected error has occurred.", "code": 2, "is_transient": true}}),
        );
    }

    async fn wait_sends(&self, n: usize) -> Vec<Call> {
        let t0 = Instant::now();
        loop {
            let c = self.sends();
            if c.len() >= n {
                return c;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "only {c:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

pub(crate) struct Setup {
    pub(crate) s: Server,
    pub(crate) a: Account,
    fake: FakeOpenAi,
    graph: FakeGraph,
    agent: String,
}

pub(crate) async fn setup(email: &str) -> Setup {
    let graph = FakeGraph::start().await;
    let base = graph.base.clone();
    let s = start_with(|c| {
        // The same double answers Telegram's Bot API (for getFile).
        c.telegram_api_base_url = base.clone();
        c.meta_graph_base_url = base;
        c.public_url = Some("https://chat.example.com".into());
    })
    .await;
    let fake = FakeOpenAi::start().await;
    let a = ai_tenant(&s, email, &fake).await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Shop Bot"})).await);
    Setup {
        s,
        a,
        fake,
        graph,
        agent,
    }
}

/// A channel as Meta would deliver to it.
pub(crate) struct Chan {
    id: String,
    kind: &'static str,
}

impl Setup {
    pub(crate) async fn whatsapp(&self) -> Chan {
        let r = self
            .s
            .post(
                "/api/channels",
                Some(&self.a.token),
                json!({"type": "whatsapp", "name": "Shop on WhatsApp", "agentId": self.agent,
                       "credentials": {"accessToken": WA_TOKEN, "appSecret": APP_SECRET},
                       "settings": {"phoneNumberId": PHONE_ID}}),
            )
            .await;
        r.expect(201);
        Chan {
            id: id(&r.body),
            kind: "whatsapp",
        }
    }

    async fn page_channel(&self, kind: &'static str) -> Chan {
        let settings = if kind == "messenger" {
            json!({"pageId": PAGE_ID})
        } else {
            json!({"instagramAccountId": PAGE_ID})
        };
        let r = self
            .s
            .post(
                "/api/channels",
                Some(&self.a.token),
                json!({"type": kind, "name": format!("Shop on {kind}"), "agentId": self.agent,
                       "credentials": {"pageAccessToken": PAGE_TOKEN, "appSecret": APP_SECRET},
                       "settings": settings}),
            )
            .await;
        r.expect(201);
        Chan {
            id: id(&r.body),
            kind,
        }
    }

    async fn raw_webhook(
        &self,
        ch: &Chan,
        body: &[u8],
        signature: Option<String>,
        content_type: &str,
    ) -> Resp {
        let mut rb = self
            .s
            .http
            .post(format!("{}/webhooks/{}/{}", self.s.base, ch.kind, ch.id))
            .header("content-type", content_type)
            .body(body.to_vec());
        if let Some(sig) = signature {
            rb = rb.header("X-Hub-Signature-256", sig);
        }
        send(rb).await
    }

    /// Delivers `body` signed with the app secret, as Meta does.
    pub(crate) async fn webhook(&self, ch: &Chan, body: &Value) -> Resp {
        let bytes = serde_json::to_vec(body).expect("json");
        let sig = sign(APP_SECRET, &bytes);
        self.raw_webhook(ch, &bytes, Some(sig), "application/json")
            .await
    }

    async fn conversations(&self, ch: &Chan) -> Vec<Value> {
        channel_conversations(&self.s, &self.a.token, &ch.id).await
    }

    pub(crate) async fn wait_conversations(&self, ch: &Chan, n: usize) -> Vec<Value> {
        wait_channel_conversations(&self.s, &self.a.token, &ch.id, n).await
    }

    pub(crate) async fn messages(&self, cid: &str) -> Vec<Value> {
        conversation_messages(&self.s, &self.a.token, cid).await
    }

    async fn wait_message(&self, cid: &str, want: impl Fn(&Value) -> bool) -> Value {
        wait_conversation_message(&self.s, &self.a.token, cid, want).await
    }

    /// Waits until every channel job of the tenant has ended.
    pub(crate) async fn settle(&self) {
        let ten = TenantId::parse(&self.a.tenant_id).expect("tenant");
        let t0 = Instant::now();
        loop {
            let jobs: Vec<Job> = self
                .s
                .svc
                .store
                .read(|tx| {
                    tx.scan::<Job>(&ten, None, |j| {
                        j.kind.starts_with("channel_") || j.kind == "turn"
                    })
                })
                .expect("read");
            for j in &jobs {
                bounded("a channel job", self.s.svc.jobs.finished(&ten, &j.id)).await;
            }
            let again: usize = self
                .s
                .svc
                .store
                .read(|tx| {
                    tx.scan::<Job>(&ten, None, |j| {
                        j.kind.starts_with("channel_") || j.kind == "turn"
                    })
                })
                .expect("read")
                .len();
            if again == jobs.len() {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(60));
        }
    }

    fn inbound_count(&self) -> usize {
        let ten = TenantId::parse(&self.a.tenant_id).expect("tenant");
        self.s
            .svc
            .store
            .read(|tx| tx.scan::<InboundEvent>(&ten, None, |_| true))
            .expect("read")
            .len()
    }

    /// A WhatsApp channel where a customer (Ana) wrote `hello` as `wamid` and the agent's
    /// answer went out, every job ended: the channel and the conversation's id.
    async fn whatsapp_conversation(&self, wamid: &str) -> (Chan, String) {
        let ch = self.whatsapp().await;
        self.webhook(
            &ch,
            &wa_payload(
                json!([{"wa_id": "15551234567", "profile": {"name": "Ana"}}]),
                json!([wa_message("15551234567", wamid, "hello")]),
                json!([]),
            ),
        )
        .await
        .expect(200);
        let cid = id(&self.wait_conversations(&ch, 1).await[0]);
        self.graph.wait_sends(1).await;
        self.settle().await;
        (ch, cid)
    }

    /// Moves the customer's messages of `cid` back in time by `by` (as if they wrote then).
    fn age_customer_messages(&self, cid: &str, by: time::Duration) {
        let ten = TenantId::parse(&self.a.tenant_id).expect("tenant");
        self.s
            .svc
            .store
            .write(|tx| {
                for mut m in
                    tx.scan::<Message>(&ten, Some(cid), |m| m.role == MessageRole::Customer)?
                {
                    m.created_at -= by;
                    tx.put(&m)?;
                }
                Ok::<_, aigentable::store::Error>(())
            })
            .expect("write");
    }
}

fn wa_message(from: &str, wamid: &str, text: &str) -> Value {
    json!({"from": from, "id": wamid, "timestamp": "1700000000", "type": "text", "text": {"body": text}})
}

pub(crate) fn wa_payload(contacts: Value, messages: Value, statuses: Value) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "15550100000", "phone_number_id": PHONE_ID},
                  "contacts": contacts, "messages": messages, "statuses": statuses}}]}]})
}

fn wa_status(wamid: &str, status: &str) -> Value {
    json!({"id": wamid, "status": status, "timestamp": "1700000001", "recipient_id": "15551234567"})
}

#[tokio::test]
async fn a_whatsapp_channel_is_set_up_verified_and_answers_once() {
    let t = setup("wa-e2e@x.test").await;
    let ch = t.whatsapp().await;
    // The GET shape: credentials only as set/unset, the verify token to paste, the URL.
    let r =
        t.s.get(&format!("/api/channels/{}", ch.id), &t.a.token)
            .await;
    r.expect(200);
    assert_eq!(
        r.body["credentials"],
        json!({"accessToken": "set", "appSecret": "set"}),
        "{}",
        r.text
    );
    assert!(!r.text.contains(WA_TOKEN) && !r.text.contains(APP_SECRET));
    assert_eq!(
        r.body["webhookUrl"],
        format!("https://chat.example.com/webhooks/whatsapp/{}", ch.id)
    );
    assert_eq!(r.body["settings"]["phoneNumberId"], PHONE_ID);
    assert_eq!(r.body["status"], "active");
    let verify = r.body["verifyToken"]
        .as_str()
        .expect("a verify token")
        .to_string();
    assert!(verify.len() >= 16);

    // A client echoing the GET body back changes nothing and is accepted.
    let echo = json!({"name": r.body["name"], "agentId": r.body["agentId"], "settings": r.body["settings"]});
    t.s.put(&format!("/api/channels/{}", ch.id), &t.a.token, echo)
        .await
        .expect(200);

    // The verification handshake.
    let hs = |token: &str, mode: &str| {
        format!(
            "{}/webhooks/whatsapp/{}?hub.mode={mode}&hub.verify_token={token}&hub.challenge=1158201444",
            t.s.base, ch.id
        )
    };
    let ok = send(t.s.http.get(hs(&verify, "subscribe"))).await;
    ok.expect(200);
    assert_eq!(ok.text, "1158201444");
    send(t.s.http.get(hs("wrong-token-123", "subscribe")))
        .await
        .expect_err(403, "forbidden");
    send(t.s.http.get(hs(&verify, "unsubscribe")))
        .await
        .expect_err(403, "forbidden");

    // The provider test reads the phone number with the stored token.
    let r =
        t.s.post(
            &format!("/api/channels/{}/test", ch.id),
            Some(&t.a.token),
            json!({}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["ok"], true, "{}", r.text);
    assert_eq!(r.body["details"]["verifiedName"], "Shop");
    assert_eq!(
        r.body["channel"]["settings"]["displayPhoneNumber"],
        "+1 555-010-0000"
    );
    let call = t.graph.inner.calls.lock().expect("lock")[0].clone();
    assert!(
        call.path.starts_with(&format!("/{PHONE_ID}?fields=")),
        "{call:?}"
    );
    assert_eq!(call.auth, format!("Bearer {WA_TOKEN}"));

    // A customer writes; Meta retries the same delivery.
    t.fake.push(Reply::text("We open at nine."));
    let body = wa_payload(
        json!([{"wa_id": "15551234567", "profile": {"name": "Ana Lima"}}]),
        json!([wa_message("15551234567", "wamid.IN1", "When do you open?")]),
        json!([]),
    );
    let r = t.webhook(&ch, &body).await;
    r.expect(200);
    assert_eq!(r.body["outcome"], "queued");
    let again = t.webhook(&ch, &body).await;
    again.expect(200);
    assert_eq!(again.body["outcome"], "duplicate", "{}", again.text);

    let sent = t.graph.wait_sends(1).await;
    assert_eq!(sent[0].path, format!("/{PHONE_ID}/messages"));
    assert_eq!(sent[0].auth, format!("Bearer {WA_TOKEN}"));
    assert_eq!(sent[0].body["to"], "15551234567");
    assert_eq!(sent[0].body["type"], "text");
    assert_eq!(sent[0].body["text"]["body"], "We open at nine.");
    let convs = t.wait_conversations(&ch, 1).await;
    assert_eq!(convs.len(), 1);
    assert_eq!(convs[0]["customer"]["name"], "Ana Lima");
    assert_eq!(convs[0]["customer"]["externalId"], "+15551234567");
    let cid = id(&convs[0]);
    let ai = t
        .wait_message(&cid, |m| m["role"] == "ai" && m["status"] == "sent")
        .await;

    // The same message inside another payload (a replay) is not stored again; a message
    // whose wa_id comes in another format joins the same conversation.
    let replay = wa_payload(
        json!([{"wa_id": "15551234567", "profile": {"name": "Ana Lima"}}]),
        json!([
            wa_message("15551234567", "wamid.IN1", "When do you open?"),
            wa_message("+1 555 123 4567", "wamid.IN2", "And Sundays?")
        ]),
        json!([]),
    );
    t.webhook(&ch, &replay).await.expect(200);
    t.graph.wait_sends(2).await;
    t.settle().await;
    assert_eq!(t.conversations(&ch).await.len(), 1);
    let msgs = t.messages(&cid).await;
    let customer: Vec<&str> = msgs
        .iter()
        .filter(|m| m["role"] == "customer")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(
        customer,
        vec!["When do you open?", "And Sundays?"],
        "{msgs:?}"
    );
    assert_eq!(t.fake.requests().len(), 2, "one turn per message");

    // Statuses out of order: read, then a late delivered and sent: it stays read.
    let st = |s: &str| wa_payload(json!([]), json!([]), json!([wa_status("wamid.OUT1", s)]));
    let mut sub =
        t.s.svc
            .events
            .subscribe(&t.s.svc.authenticate_access(&t.a.token).expect("token"));
    t.webhook(&ch, &st("delivered")).await.expect(200);
    t.webhook(&ch, &st("read")).await.expect(200);
    t.webhook(&ch, &st("delivered")).await.expect(200);
    t.webhook(&ch, &st("sent")).await.expect(200);
    t.settle().await;
    let m = t.wait_message(&cid, |m| m["id"] == ai["id"]).await;
    assert_eq!(m["status"], "read", "{m}");
    // The bus saw the status move forward only: delivered then read, or read alone (status
    // jobs need no order, so `read` may be processed first; the late ones change nothing).
    // Every job has finished: its events are on the bus already.
    let mut seen = vec![];
    while let Some(r) = sub.try_recv() {
        let aigentable::events::Recv::Event(e) = r else {
            panic!("bus ended or lagged: {r:?}")
        };
        if let aigentable::events::Event::MessageStatus {
            message_id, status, ..
        } = &*e
            && message_id.as_str() == ai["id"]
        {
            seen.push(*status);
        }
    }
    use aigentable::model::MessageStatus::{Delivered, Read};
    assert!(
        seen == vec![Delivered, Read] || seen == vec![Read],
        "{seen:?}"
    );
}

#[tokio::test]
async fn forged_missing_and_bad_webhooks_store_nothing() {
    let t = setup("wa-forged@x.test").await;
    let ch = t.whatsapp().await;
    let body = serde_json::to_vec(&wa_payload(
        json!([]),
        json!([wa_message("15551234567", "wamid.F1", "hi")]),
        json!([]),
    ))
    .expect("json");
    // Missing, forged (another secret), and a signature of another body.
    t.raw_webhook(&ch, &body, None, "application/json")
        .await
        .expect_err(401, "invalid_signature");
    t.raw_webhook(
        &ch,
        &body,
        Some(sign("not-the-app-secret", &body)),
        "application/json",
    )
    .await
    .expect_err(401, "invalid_signature");
    t.raw_webhook(
        &ch,
        &body,
        Some(sign(APP_SECRET, b"{}")),
        "application/json",
    )
    .await
    .expect_err(401, "invalid_signature");
    t.raw_webhook(&ch, &body, Some("sha256=nothex".into()), "application/json")
        .await
        .expect_err(401, "invalid_signature");
    // Signed but bad: wrong content type, malformed, another provider's payload, deeply
    // nested, too large.
    let signed = |b: &[u8]| Some(sign(APP_SECRET, b));
    t.raw_webhook(&ch, &body, signed(&body), "text/plain")
        .await
        .expect_err(415, "unsupported_media_type");
    let bad = b"{\"object\": \"whatsapp_business_account\", \"entry\": [";
    t.raw_webhook(&ch, bad, signed(bad), "application/json")
        .await
        .expect_err(400, "malformed_json");
    let page = br#"{"object":"page","entry":[]}"#;
    t.raw_webhook(&ch, page, signed(page), "application/json")
        .await
        .expect_err(400, "validation_failed");
    let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    t.raw_webhook(
        &ch,
        nested.as_bytes(),
        signed(nested.as_bytes()),
        "application/json",
    )
    .await
    .expect_err(400, "malformed_json");
    let huge = format!(
        "{{\"object\":\"whatsapp_business_account\",\"entry\":[],\"pad\":\"{}\"}}",
        "x".repeat(600 * 1024)
    );
    t.raw_webhook(
        &ch,
        huge.as_bytes(),
        signed(huge.as_bytes()),
        "application/json",
    )
    .await
    .expect_err(413, "payload_too_large");
    // An unknown channel id.
    let other = Chan {
        id: aigentable::types::ChannelId::new().to_string(),
        kind: "whatsapp",
    };
    t.raw_webhook(&other, &body, signed(&body), "application/json")
        .await
        .expect_err(404, "channel_not_found");
    assert_eq!(t.inbound_count(), 0, "nothing was stored");
    // The unknown channel's delivery is not dropped: platform admins see it (cut, bounded).
    let root = t.s.root().await;
    let r = t.s.get("/api/platform/dead-letters", &root.token).await;
    r.expect(200);
    let kept = r.body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(kept.len(), 1, "{}", r.text);
    assert_eq!(kept[0]["channelId"], other.id.as_str());
    assert_eq!(kept[0]["externalId"], "whatsapp");
    assert_eq!(kept[0]["payload"], String::from_utf8_lossy(&body).as_ref());
    t.s.get("/api/platform/dead-letters", &t.a.token)
        .await
        .expect_err(403, "forbidden");
    assert!(t.conversations(&ch).await.is_empty());
    // Still serving: a good delivery goes through.
    t.raw_webhook(&ch, &body, signed(&body), "application/json")
        .await
        .expect(200);
    t.wait_conversations(&ch, 1).await;
    assert_eq!(t.inbound_count(), 1);
}

#[tokio::test]
async fn every_message_and_status_of_a_batched_payload_is_processed() {
    let t = setup("wa-batch@x.test").await;
    let ch = t.whatsapp().await;
    // Two entries, several changes: three messages of two customers and statuses.
    let body = json!({"object": "whatsapp_business_account", "entry": [
        {"id": "WABA", "changes": [
            {"field": "messages", "value": {"messaging_product": "whatsapp",
                "metadata": {"phone_number_id": PHONE_ID},
                "contacts": [{"wa_id": "15551234567", "profile": {"name": "Ana"}}, {"wa_id": "4915112345678", "profile": {"name": "Ben"}}],
                "messages": [wa_message("15551234567", "wamid.B1", "first from Ana"),
                             wa_message("4915112345678", "wamid.B2", "first from Ben")]}},
            {"field": "messages", "value": {"messaging_product": "whatsapp",
                "metadata": {"phone_number_id": PHONE_ID},
                "statuses": [wa_status("wamid.UNKNOWN", "delivered")]}}
        ]},
        {"id": "WABA", "changes": [
            {"field": "messages", "value": {"messaging_product": "whatsapp",
                "metadata": {"phone_number_id": PHONE_ID},
                "contacts": [{"wa_id": "15551234567", "profile": {"name": "Ana"}}],
                "messages": [wa_message("15551234567", "wamid.B3", "second from Ana"),
                             {"from": "15551234567", "id": "wamid.B4", "type": "location", "location": {"latitude": 1.0, "longitude": 2.0}}]}}
        ]}
    ]});
    t.webhook(&ch, &body).await.expect(200);
    t.wait_conversations(&ch, 2).await;
    t.settle().await;
    let convs = t.conversations(&ch).await;
    assert_eq!(convs.len(), 2, "{convs:?}");
    let ana = convs
        .iter()
        .find(|c| c["customer"]["externalId"] == "+15551234567")
        .expect("Ana's conversation");
    let ben = convs
        .iter()
        .find(|c| c["customer"]["externalId"] == "+4915112345678")
        .expect("Ben's conversation");
    let texts = |msgs: Vec<Value>| -> Vec<String> {
        msgs.iter()
            .filter(|m| m["role"] == "customer")
            .map(|m| m["content"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        texts(t.messages(&id(ana)).await),
        vec![
            "first from Ana".to_string(),
            "second from Ana".into(),
            "[The customer sent a location, not shown here]".into()
        ]
    );
    assert_eq!(
        texts(t.messages(&id(ben)).await),
        vec!["first from Ben".to_string()]
    );
}

#[tokio::test]
async fn replies_retry_on_5xx_fail_on_4xx_and_split_at_the_messenger_limit() {
    let t = setup("fb-out@x.test").await;
    let ch = t.page_channel("messenger").await;
    let msg = |mid: &str, text: &str| {
        json!({"object": "page", "entry": [{"id": PAGE_ID, "time": 1, "messaging": [
            {"sender": {"id": "psid-42"}, "recipient": {"id": PAGE_ID}, "timestamp": 1,
             "message": {"mid": mid, "text": text}}]}]})
    };
    // 5xx, then success.
    t.graph.script_transient_error();
    t.fake.push(Reply::text("Hello there."));
    t.webhook(&ch, &msg("m_1", "hi")).await.expect(200);
    let sent = t.graph.wait_sends(2).await;
    assert_eq!(sent[1].body["recipient"]["id"], "psid-42");
    assert_eq!(sent[1].body["message"]["text"], "Hello there.");
    assert_eq!(sent[1].body["messaging_type"], "RESPONSE");
    assert_eq!(sent[1].auth, format!("Bearer {PAGE_TOKEN}"));
    let cid = id(&t.wait_conversations(&ch, 1).await[0]);
    t.wait_message(&cid, |m| m["role"] == "ai" && m["status"] == "sent")
        .await;

    // A long answer is split at Messenger's 2000 characters.
    let long = format!("{} end.", "word ".repeat(900).trim_end());
    t.fake.push(Reply::text(&long));
    t.webhook(&ch, &msg("m_2", "tell me more"))
        .await
        .expect(200);
    let sent = t.graph.wait_sends(5).await;
    let parts: Vec<&str> = sent[2..5]
        .iter()
        .map(|c| c.body["message"]["text"].as_str().expect("text"))
        .collect();
    assert!(parts.iter().all(|p| p.chars().count() <= 2000), "{parts:?}");
    assert_eq!(parts.join(" "), long);

    // 4xx: failed at once with Meta's words.
    t.graph.script_send(400, json!({"error": {"message": "(#10) This message is sent outside of allowed window.", "type": "OAuthException", "code": 10}}));
    t.fake.push(Reply::text("Sorry."));
    t.webhook(&ch, &msg("m_3", "and?")).await.expect(200);
    let failed = t
        .wait_message(&cid, |m| m["role"] == "ai" && m["status"] == "failed")
        .await;
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("outside of allowed window")),
        "{failed}"
    );
    assert_eq!(failed["errorCode"], "send_failed", "{failed}");
    assert_eq!(t.graph.sends().len(), 6, "a 4xx is not retried");

    // Delivery and read receipts (Messenger: mids, then a watermark).
    let receipts = json!({"object": "page", "entry": [{"id": PAGE_ID, "messaging": [
        {"sender": {"id": "psid-42"}, "recipient": {"id": PAGE_ID}, "delivery": {"mids": ["m_OUT2"], "watermark": 1}},
        {"sender": {"id": "psid-42"}, "recipient": {"id": PAGE_ID}, "read": {"watermark": 4102444800000_i64}}]}]});
    t.webhook(&ch, &receipts).await.expect(200);
    t.settle().await;
    let msgs = t.messages(&cid).await;
    let ai: Vec<&str> = msgs
        .iter()
        .filter(|m| m["role"] == "ai")
        .map(|m| m["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ai, vec!["read", "read", "failed"], "{msgs:?}");
}

#[tokio::test]
async fn the_24_hour_window_refuses_free_replies_and_templates_go_out() {
    let t = setup("wa-window@x.test").await;
    let (ch, cid) = t.whatsapp_conversation("wamid.W1").await;
    // Within the window a person's reply goes out.
    t.s.post(
        &format!("/api/conversations/{cid}/messages"),
        Some(&t.a.token),
        json!({"role": "human", "content": "A person here."}),
    )
    .await
    .expect(201);
    let sent = t.graph.wait_sends(2).await;
    assert_eq!(sent[1].body["text"]["body"], "A person here.");

    // 25 hours later: refused with a clear code, nothing stored or sent.
    t.age_customer_messages(&cid, time::Duration::hours(25));
    let before = t.messages(&cid).await.len();
    let r =
        t.s.post(
            &format!("/api/conversations/{cid}/messages"),
            Some(&t.a.token),
            json!({"role": "human", "content": "Are you still there?"}),
        )
        .await;
    r.expect_err(409, "outside_messaging_window");
    assert_eq!(t.messages(&cid).await.len(), before);

    // A template is allowed.
    let r =
        t.s.post(
            &format!("/api/conversations/{cid}/whatsapp-template"),
            Some(&t.a.token),
            json!({"name": "order_update", "language": "en_US", "parameters": ["Ana", "#1234"]}),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["role"], "human");
    let sent = t.graph.wait_sends(3).await;
    let tpl = &sent[2].body;
    assert_eq!(tpl["type"], "template");
    assert_eq!(tpl["template"]["name"], "order_update");
    assert_eq!(tpl["template"]["language"]["code"], "en_US");
    assert_eq!(
        tpl["template"]["components"][0]["parameters"],
        json!([{"type": "text", "text": "Ana"}, {"type": "text", "text": "#1234"}])
    );
    t.wait_message(&cid, |m| m["id"] == r.body["id"] && m["status"] == "sent")
        .await;
    // WhatsApp took it, then reports that it could not deliver it: failed, with Meta's words
    // and a code saying the provider failed it.
    let failed = json!([{"id": "wamid.OUT3", "status": "failed", "timestamp": "1700000002",
        "recipient_id": "15551234567", "errors": [{"code": 131026, "title": "Message undeliverable"}]}]);
    t.webhook(&ch, &wa_payload(json!([]), json!([]), failed))
        .await
        .expect(200);
    let m = t
        .wait_message(&cid, |m| m["id"] == r.body["id"] && m["status"] == "failed")
        .await;
    assert_eq!(m["errorCode"], "provider_failed", "{m}");
    assert!(
        m["error"]
            .as_str()
            .is_some_and(|e| e.contains("Message undeliverable")),
        "{m}"
    );
    // Bad templates and templates elsewhere are refused.
    t.s.post(
        &format!("/api/conversations/{cid}/whatsapp-template"),
        Some(&t.a.token),
        json!({"name": "Order Update!", "language": "en_US"}),
    )
    .await
    .expect_err(400, "validation_failed");

    // Messenger: a person may still answer for 7 days, tagged HUMAN_AGENT.
    let fb = t.page_channel("messenger").await;
    t.webhook(
        &fb,
        &json!({"object": "page", "entry": [{"id": PAGE_ID, "messaging": [
            {"sender": {"id": "psid-7"}, "recipient": {"id": PAGE_ID}, "message": {"mid": "m_w1", "text": "hey"}}]}]}),
    )
    .await
    .expect(200);
    let fcid = id(&t.wait_conversations(&fb, 1).await[0]);
    t.graph.wait_sends(4).await;
    t.settle().await;
    t.age_customer_messages(&fcid, time::Duration::days(3));
    t.s.post(
        &format!("/api/conversations/{fcid}/messages"),
        Some(&t.a.token),
        json!({"role": "human", "content": "Sorry for the wait."}),
    )
    .await
    .expect(201);
    let sent = t.graph.wait_sends(5).await;
    assert_eq!(sent[4].body["messaging_type"], "MESSAGE_TAG");
    assert_eq!(sent[4].body["tag"], "HUMAN_AGENT");
    t.s.post(
        &format!("/api/conversations/{fcid}/whatsapp-template"),
        Some(&t.a.token),
        json!({"name": "order_update", "language": "en_US"}),
    )
    .await
    .expect_err(400, "unsupported_channel_type");
    t.age_customer_messages(&fcid, time::Duration::days(5));
    t.s.post(
        &format!("/api/conversations/{fcid}/messages"),
        Some(&t.a.token),
        json!({"role": "human", "content": "Hello again?"}),
    )
    .await
    .expect_err(409, "outside_messaging_window");
}

/// A reply that waited in the outbox (the provider answered 5xx) until the customer's last
/// message left the 24-hour window is not sent: it fails with `outside_messaging_window`,
/// the code that tells a client to offer a template rather than a resend.
#[tokio::test]
async fn a_reply_that_waited_past_the_window_fails_with_the_windows_code() {
    let t = setup("wa-late@x.test").await;
    let (_, cid) = t.whatsapp_conversation("wamid.L1").await;
    t.graph.script_transient_error();
    t.s.post(
        &format!("/api/conversations/{cid}/messages"),
        Some(&t.a.token),
        json!({"role": "human", "content": "Your order ships tomorrow."}),
    )
    .await
    .expect(201);
    // The first try got the 5xx; before the retry, the window closes.
    t.graph.wait_sends(2).await;
    t.age_customer_messages(&cid, time::Duration::hours(25));
    let failed = t
        .wait_message(&cid, |m| {
            m["content"] == "Your order ships tomorrow." && m["status"] == "failed"
        })
        .await;
    assert_eq!(failed["errorCode"], "outside_messaging_window", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("more than 24 hours old")),
        "{failed}"
    );
    t.settle().await;
    assert_eq!(t.graph.sends().len(), 2, "not sent again");
}

#[tokio::test]
async fn instagram_and_telegram_settings_echo_and_paused_channels_keep_dead_letters() {
    let t = setup("ig-dl@x.test").await;
    let ch = t.page_channel("instagram").await;
    let r =
        t.s.post(
            &format!("/api/channels/{}/test", ch.id),
            Some(&t.a.token),
            json!({}),
        )
        .await;
    assert_eq!(r.body["details"]["username"], "shop.page", "{}", r.text);
    // Echoing the GET body (with the read-only username/name) back is accepted.
    let got =
        t.s.get(&format!("/api/channels/{}", ch.id), &t.a.token)
            .await;
    t.s.put(
        &format!("/api/channels/{}", ch.id),
        &t.a.token,
        json!({"name": got.body["name"], "settings": got.body["settings"], "status": "paused"}),
    )
    .await
    .expect(200);
    let body = json!({"object": "instagram", "entry": [{"id": PAGE_ID, "messaging": [
        {"sender": {"id": "igsid-1"}, "recipient": {"id": PAGE_ID}, "message": {"mid": "ig_1", "text": "hi from insta"}}]}]});
    let r = t.webhook(&ch, &body).await;
    r.expect(200);
    assert_eq!(r.body["outcome"], "dead_letter");
    let dl =
        t.s.get(&format!("/api/channels/{}/dead-letters", ch.id), &t.a.token)
            .await;
    dl.expect(200);
    assert_eq!(dl.body["data"].as_array().map(Vec::len), Some(1));
    let dl_id = id(&dl.body["data"][0]);
    t.s.put(
        &format!("/api/channels/{}", ch.id),
        &t.a.token,
        json!({"status": "active"}),
    )
    .await
    .expect(200);
    t.s.post(
        &format!("/api/channels/{}/dead-letters/{dl_id}/replay", ch.id),
        Some(&t.a.token),
        json!({}),
    )
    .await
    .expect(202);
    let convs = t.wait_conversations(&ch, 1).await;
    assert_eq!(convs[0]["customer"]["externalId"], "igsid-1");
    let sent = t.graph.wait_sends(1).await;
    assert_eq!(sent[0].path, format!("/{PAGE_ID}/messages"));

    // Telegram: the GET's read-only botUsername echoed back in a PUT is accepted.
    let r =
        t.s.post(
            "/api/channels",
            Some(&t.a.token),
            json!({"type": "telegram", "name": "TG", "agentId": t.agent,
                   "credentials": {"botToken": "123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"}}),
        )
        .await;
    r.expect(201);
    let tg = id(&r.body);
    let mut settings = r.body["settings"].clone();
    settings["botUsername"] = json!("shop_bot");
    settings["botId"] = json!(123456);
    t.s.put(
        &format!("/api/channels/{tg}"),
        &t.a.token,
        json!({"name": "TG", "settings": settings}),
    )
    .await
    .expect(200);
    t.s.put(
        &format!("/api/channels/{tg}"),
        &t.a.token,
        json!({"settings": {"somethingElse": 1}}),
    )
    .await
    .expect_err(400, "validation_failed");
}

/// Puts the store in the state a kill -9 right after the acknowledgements leaves it in:
/// the deliveries stored and queued with every part pending, their jobs running (as if the
/// process died in them).
fn crash_after_ack(dir: &std::path::Path, tenant: &str) {
    let t = TenantId::parse(tenant).expect("tenant id");
    let store = Store::open(dir, 1 << 20).expect("open store");
    store
        .write(|tx| {
            let mut parts: std::collections::HashMap<String, Vec<String>> = Default::default();
            for mut j in tx.scan::<Job>(&t, None, |j| j.kind == "channel_inbound")? {
                j.status = JobStatus::Running;
                j.attempts = 1;
                tx.put(&j)?;
                tx.index_insert_new(Index::JobQueue, j.id.as_str(), &make_ref(&t, j.id.as_str()))?;
                let p: InboundPayload = serde_json::from_value(j.payload.clone()).expect("payload");
                if let Some(part) = p.part {
                    parts
                        .entry(p.inbound_id.to_string())
                        .or_default()
                        .push(part.key());
                }
            }
            for mut ev in tx.scan::<InboundEvent>(&t, None, |_| true)? {
                ev.status = InboundStatus::Queued;
                ev.pending_parts = parts.remove(ev.id.as_str()).unwrap_or_default();
                tx.put(&ev)?;
            }
            Ok::<_, aigentable::store::Error>(())
        })
        .expect("write");
}

#[tokio::test]
async fn after_a_crash_between_ack_and_processing_every_message_exists_once() {
    let t = setup("wa-crash@x.test").await;
    let ch = t.whatsapp().await;
    for i in 0..6 {
        let body = wa_payload(
            json!([{"wa_id": "15551234567", "profile": {"name": "Ana"}}]),
            json!([wa_message(
                "15551234567",
                &format!("wamid.C{i}"),
                &format!("message {i}")
            )]),
            json!([]),
        );
        t.webhook(&ch, &body).await.expect(200);
    }
    t.wait_conversations(&ch, 1).await;
    t.settle().await;
    let Setup { s, a, graph, .. } = t;
    let sends_before = graph.sends().len();
    let dir = s.stop().await;
    // As if the process died between the acknowledgements and the processing: every
    // delivery is processed again from the start.
    crash_after_ack(dir.path(), &a.tenant_id);
    let base = graph.base.clone();
    let s = start_in(dir, move |c| c.meta_graph_base_url = base).await;
    let ten = TenantId::parse(&a.tenant_id).expect("tenant");
    let resumed: Vec<Job> = s
        .svc
        .store
        .read(|tx| tx.scan::<Job>(&ten, None, |j| j.kind == "channel_inbound"))
        .expect("read");
    assert_eq!(resumed.len(), 6);
    for j in &resumed {
        let done = bounded("a resumed job", s.svc.jobs.finished(&ten, &j.id))
            .await
            .expect("it ends");
        assert_eq!(done.status, JobStatus::Done, "{done:?}");
    }
    let r = s
        .get(&format!("/api/conversations?channelId={}", ch.id), &a.token)
        .await;
    let convs = r.body["data"].as_array().expect("data").clone();
    assert_eq!(convs.len(), 1);
    let r = s
        .get(
            &format!("/api/conversations/{}/messages?limit=200", id(&convs[0])),
            &a.token,
        )
        .await;
    let msgs = r.body["data"].as_array().expect("data").clone();
    let mut customer: Vec<String> = msgs
        .iter()
        .filter(|m| m["role"] == "customer")
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .collect();
    customer.sort();
    assert_eq!(
        customer,
        (0..6).map(|i| format!("message {i}")).collect::<Vec<_>>(),
        "each acknowledged message exactly once"
    );
    assert_eq!(graph.sends().len(), sends_before, "no reply sent again");
    s.stop().await;
}

#[tokio::test]
async fn media_is_fetched_in_the_job_capped_and_downloadable_by_staff() {
    let t = setup("wa-media@x.test").await;
    let ch = t.whatsapp().await;
    let body = wa_payload(
        json!([{"wa_id": "15551234567", "profile": {"name": "Ana"}}]),
        json!([
            {"from": "15551234567", "id": "wamid.M1", "type": "image",
             "image": {"id": "media-1", "mime_type": "image/jpeg", "caption": "my receipt"}},
            {"from": "15551234567", "id": "wamid.M2", "type": "document",
             "document": {"id": "media-huge", "mime_type": "application/pdf", "filename": "big.pdf"}}
        ]),
        json!([]),
    );
    t.webhook(&ch, &body).await.expect(200);
    let cid = id(&t.wait_conversations(&ch, 1).await[0]);
    t.settle().await;
    let msgs = t.messages(&cid).await;
    let customer: Vec<&Value> = msgs.iter().filter(|m| m["role"] == "customer").collect();
    assert_eq!(customer.len(), 2, "{msgs:?}");
    assert_eq!(customer[0]["content"], "my receipt");
    let att = &customer[0]["attachments"][0];
    assert_eq!(att["kind"], "image");
    assert_eq!(att["mimeType"], "image/jpeg");
    assert_eq!(att["size"], 8);
    // Fetched with the channel's token: the media id first, then the URL it answered.
    let calls = t.graph.inner.calls.lock().expect("lock").clone();
    let lookup = calls
        .iter()
        .find(|c| c.path.starts_with("/media-1?"))
        .expect("the media id was looked up");
    assert_eq!(lookup.auth, format!("Bearer {WA_TOKEN}"));
    let dl = calls
        .iter()
        .find(|c| c.path == "/download/media-1")
        .expect("downloaded");
    assert_eq!(dl.auth, format!("Bearer {WA_TOKEN}"));
    // Too large: never downloaded, the message says what arrived.
    assert!(!calls.iter().any(|c| c.path == "/download/media-huge"));
    let big = customer[1]["content"].as_str().expect("content");
    assert!(
        big.starts_with("[The customer sent a document, not shown here:")
            && big.contains("larger than the limit"),
        "{big}"
    );
    assert_eq!(customer[1]["attachments"], json!([]));

    // Staff download it; the path is not guessable into anything else.
    let url = format!(
        "/api/conversations/{cid}/messages/{}/attachments/{}",
        customer[0]["id"].as_str().expect("id"),
        att["id"].as_str().expect("id")
    );
    let r = send(
        t.s.http
            .get(format!("{}{url}", t.s.base))
            .bearer_auth(&t.a.token),
    )
    .await;
    r.expect(200);
    assert_eq!(
        r.headers["content-disposition"]
            .to_str()
            .expect("header")
            .split(';')
            .next(),
        Some("attachment")
    );
    assert_eq!(r.headers["content-type"], "image/jpeg");
    send(t.s.http.get(format!("{}{url}", t.s.base)))
        .await
        .expect_err(401, "unauthorized");
    let other = t.s.register("wa-media-other@x.test", "Other").await;
    send(
        t.s.http
            .get(format!("{}{url}", t.s.base))
            .bearer_auth(&other.token),
    )
    .await
    .expect_err(404, "conversation_not_found");
    t.s.get(
        &format!(
            "/api/conversations/{cid}/messages/{}/attachments/0123abcd",
            customer[0]["id"].as_str().expect("id")
        ),
        &t.a.token,
    )
    .await
    .expect_err(404, "attachment_not_found");

    // Telegram photos are fetched with getFile the same way.
    let r =
        t.s.post(
            "/api/channels",
            Some(&t.a.token),
            json!({"type": "telegram", "name": "TG", "agentId": t.agent,
                   "credentials": {"botToken": "123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"}}),
        )
        .await;
    r.expect(201);
    let tg = id(&r.body);
    let secret = t
        .graph
        .inner
        .calls
        .lock()
        .expect("lock")
        .iter()
        .find(|c| c.path == "setWebhook")
        .map(|c| c.body["secret_token"].as_str().unwrap_or("").to_string())
        .expect("setWebhook");
    let update = json!({"update_id": 77, "message": {"message_id": 1, "date": 1, "chat": {"id": 5, "type": "private"},
        "from": {"id": 5, "first_name": "Tom"},
        "photo": [{"file_id": "photo-small", "file_size": 3}, {"file_id": "photo-big", "file_size": 9}]}});
    send(
        t.s.http
            .post(format!("{}/webhooks/telegram/{tg}", t.s.base))
            .header("X-Telegram-Bot-Api-Secret-Token", secret)
            .json(&update),
    )
    .await
    .expect(200);
    let tch = Chan {
        id: tg,
        kind: "telegram",
    };
    let tcid = id(&t.wait_conversations(&tch, 1).await[0]);
    let m = t.wait_message(&tcid, |m| m["role"] == "customer").await;
    assert_eq!(m["content"], "[The customer sent an image]");
    assert_eq!(m["attachments"][0]["size"], 8);
    let get_file = t
        .graph
        .inner
        .calls
        .lock()
        .expect("lock")
        .iter()
        .find(|c| c.path == "getFile")
        .map(|c| c.body.clone())
        .expect("getFile");
    assert_eq!(get_file["file_id"], "photo-big");
}

#[tokio::test]
async fn media_files_go_with_their_channel_and_their_tenant() {
    let t = setup("wa-media-delete@x.test").await;
    let image = |wamid: &str, media: &str| {
        wa_payload(
            json!([{"wa_id": "15551234567", "profile": {"name": "Ana"}}]),
            json!([{"from": "15551234567", "id": wamid, "type": "image",
                    "image": {"id": media, "mime_type": "image/jpeg", "caption": "my receipt"}}]),
            json!([]),
        )
    };
    let media_dir = t.s.data_dir().join("media").join(&t.a.tenant_id);
    let stored = |dir: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };

    // Two channels with one image each.
    let ch = t.whatsapp().await;
    t.webhook(&ch, &image("wamid.D1", "media-1"))
        .await
        .expect(200);
    let cid = id(&t.wait_conversations(&ch, 1).await[0]);
    let m = t
        .wait_message(&cid, |m| {
            m["role"] == "customer" && m["attachments"][0].is_object()
        })
        .await;
    let att = m["attachments"][0]["id"].as_str().expect("id").to_string();
    let other = t.page_channel("messenger").await;
    let fb = json!({"object": "page", "entry": [{"id": PAGE_ID, "messaging": [
        {"sender": {"id": "psid-media"}, "recipient": {"id": PAGE_ID},
         "message": {"mid": "m_media", "attachments": [{"type": "image", "payload": {"url": format!("{}/download/fb-1", t.graph.base)}}]}}]}]});
    t.webhook(&other, &fb).await.expect(200);
    let ocid = id(&t.wait_conversations(&other, 1).await[0]);
    let om = t
        .wait_message(&ocid, |m| {
            m["role"] == "customer" && m["attachments"][0].is_object()
        })
        .await;
    let oatt = om["attachments"][0]["id"].as_str().expect("id").to_string();
    t.settle().await;
    let mut both = vec![att.clone(), oatt.clone()];
    both.sort();
    assert_eq!(stored(&media_dir), both);

    // Deleting the WhatsApp channel removes its file and the attachment from the message
    // (which stays in the inbox with its text); the other channel's file stays.
    t.s.delete(&format!("/api/channels/{}", ch.id), &t.a.token)
        .await
        .expect(204);
    assert_eq!(stored(&media_dir), std::slice::from_ref(&oatt));
    let msgs = t.messages(&cid).await;
    let kept = msgs
        .iter()
        .find(|x| x["id"] == m["id"])
        .expect("the message stays");
    assert_eq!(kept["content"], "my receipt");
    assert_eq!(kept["attachments"], json!([]));
    t.s.get(
        &format!(
            "/api/conversations/{cid}/messages/{}/attachments/{att}",
            m["id"].as_str().expect("id")
        ),
        &t.a.token,
    )
    .await
    .expect_err(404, "attachment_not_found");

    // Deleting the tenant removes the rest.
    let root = t.s.root().await;
    t.s.delete(&format!("/api/tenants/{}", t.a.tenant_id), &root.token)
        .await
        .expect(204);
    assert!(!media_dir.exists(), "{:?}", stored(&media_dir));
}

#[tokio::test]
async fn a_batch_of_several_customers_keeps_each_customers_order() {
    // A batch is processed per customer, side by side; one customer's messages keep the
    // order they arrived in, across deliveries too.
    let t = setup("wa-order@x.test").await;
    let ch = t.whatsapp().await;
    let mut sent = 0;
    for round in 0..3 {
        let mut msgs = vec![];
        for c in 0..4 {
            msgs.push(wa_message(
                &format!("1555000000{c}"),
                &format!("wamid.O{round}-{c}"),
                &format!("c{c} r{round}"),
            ));
            sent += 1;
        }
        let body = wa_payload(json!([]), json!(msgs), json!([]));
        t.webhook(&ch, &body).await.expect(200);
    }
    let convs = t.wait_conversations(&ch, 4).await;
    assert_eq!(convs.len(), 4);
    t.settle().await;
    let mut total = 0;
    for c in &convs {
        let texts: Vec<String> = t
            .messages(&id(c))
            .await
            .iter()
            .filter(|m| m["role"] == "customer")
            .map(|m| m["content"].as_str().unwrap_or("").to_string())
            .collect();
        let who = texts[0].split(' ').next().unwrap_or("").to_string();
        assert_eq!(
            texts,
            (0..3).map(|r| format!("{who} r{r}")).collect::<Vec<_>>(),
            "one customer's messages, once each, in order"
        );
        total += texts.len();
    }
    assert_eq!(total, sent);
    // Every delivery ends processed once all its customers' parts are.
    let ten = TenantId::parse(&t.a.tenant_id).expect("tenant");
    let evs =
        t.s.svc
            .store
            .read(|tx| tx.scan::<InboundEvent>(&ten, None, |_| true))
            .expect("read");
    assert_eq!(evs.len(), 3);
    assert!(
        evs.iter().all(|e| e.status == InboundStatus::Processed),
        "{evs:?}"
    );
}
