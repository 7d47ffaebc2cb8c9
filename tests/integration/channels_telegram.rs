//! Telegram end to end against a local Bot API double: channel setup (setWebhook with a
//! secret), the provider test (getMe), webhooks verified by the secret, stored before the
//! 200 and processed once (a retried update creates nothing twice), dead letters of a
//! paused channel and their replay, AI replies sent through the outbox (5xx retried, 4xx
//! failed with Telegram's words, long answers split at 4096 characters), and a reply whose
//! send may have reached Telegram without an answer never sent twice (`delivery_unknown`,
//! resent by a person).

use crate::common::*;
use crate::engine::ai_tenant;
use crate::fake_openai::{FakeOpenAi, Reply};
use aigentable::events::{Event, Recv};
use aigentable::model::{InboundEvent, InboundStatus, Job, JobStatus, Message, MessageStatus};
use aigentable::store::{Index, Store, make_ref};
use aigentable::types::TenantId;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

#[derive(Default)]
struct Double {
    /// (method, body) of every call, in order.
    calls: Mutex<Vec<(String, Value)>>,
    /// Scripted answers per method (status, body); the default answers success.
    script: Mutex<HashMap<String, VecDeque<(u16, Value)>>>,
}

/// A Telegram Bot API double on 127.0.0.1.
struct FakeTelegram {
    base: String,
    inner: Arc<Double>,
}

/// A scripted body that stands for an answer cut off on the way back (not JSON): the
/// request reached Telegram, its outcome is unknown to the server.
const CUT_OFF: &str = "__cut_off__";

async fn bot(
    State(d): State<Arc<Double>>,
    Path((token, method)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    bot_json(State(d), Path((token, method)), body)
        .await
        .into_response()
}

async fn bot_json(
    State(d): State<Arc<Double>>,
    Path((token, method)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<(axum::http::StatusCode, axum::Json<Value>), (axum::http::StatusCode, &'static str)> {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    d.calls
        .lock()
        .expect("double lock")
        .push((method.clone(), body));
    if token != format!("bot{TOKEN}") {
        return Ok((
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
        ));
    }
    if let Some((status, body)) = d
        .script
        .lock()
        .expect("test precondition")
        .get_mut(&method)
        .and_then(|q| q.pop_front())
    {
        if body == CUT_OFF {
            return Err((axum::http::StatusCode::OK, "{\"ok\":tr"));
        }
        return Ok((
            axum::http::StatusCode::from_u16(status).expect("test precondition"),
            axum::Json(body),
        ));
    }
    let result = match method.as_str() {
        "getMe" => {
            json!({"id": 123456, "is_bot": true, "first_name": "Shop Bot", "username": "shop_bot"})
        }
        "sendMessage" => json!({"message_id": 1}),
        _ => json!(true),
    };
    Ok((
        axum::http::StatusCode::OK,
        axum::Json(json!({"ok": true, "result": result})),
    ))
}

impl FakeTelegram {
    async fn start() -> FakeTelegram {
        let inner = Arc::new(Double::default());
        let app = Router::new()
            .route("/{token}/{method}", post(bot))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test precondition");
        let base = format!(
            "http://{}",
            listener.local_addr().expect("test precondition")
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTelegram { base, inner }
    }

    fn calls(&self, method: &str) -> Vec<Value> {
        self.inner
            .calls
            .lock()
            .expect("test precondition")
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn script(&self, method: &str, status: u16, body: Value) {
        self.inner
            .script
            .lock()
            .expect("test precondition")
            .entry(method.to_string())
            .or_default()
            .push_back((status, body));
    }

    /// Waits (bounded) until `n` calls of `method` arrived.
    async fn wait_calls(&self, method: &str, n: usize) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let c = self.calls(method);
            if c.len() >= n {
                return c;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{method}: only {c:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

struct Setup {
    s: Server,
    a: Account,
    fake: FakeOpenAi,
    tg: FakeTelegram,
    channel: String,
    secret: String,
}

async fn setup(email: &str) -> Setup {
    let tg = FakeTelegram::start().await;
    let base = tg.base.clone();
    let s = start_with(|c| c.telegram_api_base_url = base).await;
    let fake = FakeOpenAi::start().await;
    let a = ai_tenant(&s, email, &fake).await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Shop Bot"})).await);
    let r = s
        .post(
            "/api/channels",
            Some(&a.token),
            json!({"type": "telegram", "name": "Shop on Telegram", "agentId": agent,
                   "credentials": {"botToken": TOKEN}}),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["status"], "active", "{}", r.text);
    assert_eq!(
        r.body["credentials"],
        json!({"botToken": "set"}),
        "{}",
        r.text
    );
    assert!(!r.text.contains(TOKEN), "the token never comes back");
    let channel = id(&r.body);
    let hooks = tg.calls("setWebhook");
    assert_eq!(hooks.len(), 1);
    let url = r.body["webhookUrl"]
        .as_str()
        .expect("test precondition")
        .to_string();
    assert!(
        url.ends_with(&format!("/webhooks/telegram/{channel}")),
        "{url}"
    );
    assert_eq!(hooks[0]["url"], url);
    let secret = hooks[0]["secret_token"]
        .as_str()
        .expect("test precondition")
        .to_string();
    assert!(secret.len() >= 32);
    Setup {
        s,
        a,
        fake,
        tg,
        channel,
        secret,
    }
}

fn update(update_id: i64, chat: i64, text: &str) -> Value {
    json!({"update_id": update_id, "message": {"message_id": update_id, "date": 1700000000,
        "chat": {"id": chat, "type": "private"},
        "from": {"id": chat, "is_bot": false, "first_name": "Ana", "last_name": "Lima"},
        "text": text}})
}

impl Setup {
    async fn webhook(&self, secret: Option<&str>, body: &Value) -> Resp {
        let mut rb = self
            .s
            .http
            .post(format!(
                "{}/webhooks/telegram/{}",
                self.s.base, self.channel
            ))
            .json(body);
        if let Some(sec) = secret {
            rb = rb.header("X-Telegram-Bot-Api-Secret-Token", sec);
        }
        send(rb).await
    }

    async fn conversations(&self) -> Vec<Value> {
        channel_conversations(&self.s, &self.a.token, &self.channel).await
    }

    async fn messages(&self, cid: &str) -> Vec<Value> {
        conversation_messages(&self.s, &self.a.token, cid).await
    }

    /// Waits (bounded) until the conversation has a message matching `want`.
    async fn wait_message(&self, cid: &str, want: impl Fn(&Value) -> bool) -> Value {
        wait_conversation_message(&self.s, &self.a.token, cid, want).await
    }

    async fn wait_conversations(&self, n: usize) -> Vec<Value> {
        wait_channel_conversations(&self.s, &self.a.token, &self.channel, n).await
    }
}

#[tokio::test]
async fn a_telegram_message_is_answered_on_telegram_once() {
    let t = setup("tg-e2e@x.test").await;
    let caller =
        t.s.svc
            .authenticate_access(&t.a.token)
            .expect("a valid access token");
    let mut sub = t.s.svc.events.subscribe(&caller);
    t.fake.push(Reply::text("We open at nine."));

    let r = t
        .webhook(Some(&t.secret), &update(1001, 42, "When do you open?"))
        .await;
    r.expect(200);
    // Telegram retries the same update: nothing new is stored or answered.
    let again = t
        .webhook(Some(&t.secret), &update(1001, 42, "When do you open?"))
        .await;
    again.expect(200);
    assert_eq!(again.body["outcome"], "duplicate", "{}", again.text);

    let sent = t.tg.wait_calls("sendMessage", 1).await;
    assert_eq!(sent[0]["chat_id"], 42);
    assert_eq!(sent[0]["text"], "We open at nine.");
    let convs = t.wait_conversations(1).await;
    assert_eq!(convs.len(), 1);
    let c = &convs[0];
    assert_eq!(c["customer"]["name"], "Ana Lima");
    assert_eq!(c["customer"]["externalId"], "42");
    let cid = id(c);
    let ai = t
        .wait_message(&cid, |m| m["role"] == "ai" && m["status"] == "sent")
        .await;
    // On the bus: the answer is committed `pending`, then `sent` once Telegram took it.
    let mut committed = false;
    loop {
        let Recv::Event(e) = bounded("the answer's events", sub.recv()).await else {
            panic!("the bus ended");
        };
        match &*e {
            Event::MessageCreated { message, .. } if message.id.as_str() == ai["id"] => {
                assert_eq!(message.status, MessageStatus::Pending);
                committed = true;
            }
            Event::MessageStatus {
                message_id, status, ..
            } if message_id.as_str() == ai["id"] => {
                assert!(committed, "sent after the commit");
                assert_eq!(*status, MessageStatus::Sent);
                break;
            }
            _ => {}
        }
    }

    // A later message of the same chat joins the conversation.
    t.fake.push(Reply::text("Yes, on Saturdays too."));
    t.webhook(Some(&t.secret), &update(1002, 42, "Saturdays?"))
        .await
        .expect(200);
    t.tg.wait_calls("sendMessage", 2).await;
    assert_eq!(t.conversations().await.len(), 1);
    let msgs = t.messages(&cid).await;
    let customer: Vec<&Value> = msgs.iter().filter(|m| m["role"] == "customer").collect();
    assert_eq!(customer.len(), 2, "{msgs:?}");
    assert_eq!(t.fake.requests().len(), 2, "one turn per update");

    // getMe through the test route.
    let r =
        t.s.post(
            &format!("/api/channels/{}/test", t.channel),
            Some(&t.a.token),
            json!({}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["ok"], true, "{}", r.text);
    assert_eq!(r.body["details"]["botUsername"], "shop_bot");

    // Deleting the channel stops its webhook; its conversation stays in the inbox.
    t.s.delete(&format!("/api/channels/{}", t.channel), &t.a.token)
        .await
        .expect(204);
    t.webhook(Some(&t.secret), &update(1003, 42, "still there?"))
        .await
        .expect_err(404, "channel_not_found");
    t.s.get(&format!("/api/conversations/{cid}"), &t.a.token)
        .await
        .expect(200);
}

#[tokio::test]
async fn forged_missing_and_malformed_webhooks_store_nothing() {
    let t = setup("tg-forged@x.test").await;
    let body = update(7, 42, "hi");
    let r = t.webhook(Some("not-the-secret"), &body).await;
    r.expect_err(401, "invalid_signature");
    let r = t.webhook(None, &body).await;
    r.expect_err(401, "invalid_signature");
    // Unknown channel.
    let r = send(
        t.s.http
            .post(format!(
                "{}/webhooks/telegram/{}",
                t.s.base, "0190f5c8-0000-7000-8000-000000000000"
            ))
            .header("X-Telegram-Bot-Api-Secret-Token", &t.secret)
            .json(&body),
    )
    .await;
    r.expect_err(404, "channel_not_found");
    // Malformed JSON, wrong type, no update_id, too large, deeply nested.
    let post_raw = |ct: &'static str, raw: Vec<u8>| {
        t.s.http
            .post(format!("{}/webhooks/telegram/{}", t.s.base, t.channel))
            .header("X-Telegram-Bot-Api-Secret-Token", &t.secret)
            .header("content-type", ct)
            .body(raw)
    };
    send(post_raw("application/json", b"{not json".to_vec()))
        .await
        .expect_err(400, "malformed_json");
    send(post_raw("text/plain", b"{}".to_vec()))
        .await
        .expect_err(415, "unsupported_media_type");
    send(post_raw("application/json", b"{\"message\":{}}".to_vec()))
        .await
        .expect_err(400, "validation_failed");
    let huge = format!("{{\"update_id\":1,\"pad\":\"{}\"}}", "x".repeat(300 * 1024));
    send(post_raw("application/json", huge.into_bytes()))
        .await
        .expect_err(413, "payload_too_large");
    let nested = format!(
        "{{\"update_id\":2,\"a\":{}1{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    send(post_raw("application/json", nested.into_bytes()))
        .await
        .expect_err(400, "malformed_json");
    // Still serving, and nothing reached a conversation or Telegram.
    t.s.get("/api/health", &t.a.token).await.expect(200);
    assert!(t.conversations().await.is_empty());
    assert!(t.tg.calls("sendMessage").is_empty());
    let dl =
        t.s.get(
            &format!("/api/channels/{}/dead-letters", t.channel),
            &t.a.token,
        )
        .await;
    dl.expect(200);
    assert_eq!(dl.body["data"], json!([]));
    // Another tenant's admin sees none of it.
    let other = t.s.register("tg-other@x.test", "Other").await;
    for path in [
        format!("/api/channels/{}/dead-letters", t.channel),
        format!("/api/channels/{}", t.channel),
    ] {
        t.s.get(&path, &other.token)
            .await
            .expect_err(404, "channel_not_found");
    }
    t.s.post(
        &format!("/api/channels/{}/test", t.channel),
        Some(&other.token),
        json!({}),
    )
    .await
    .expect_err(404, "channel_not_found");
}

#[tokio::test]
async fn a_paused_channel_keeps_dead_letters_that_replay_after_resuming() {
    let t = setup("tg-dead@x.test").await;
    t.s.put(
        &format!("/api/channels/{}", t.channel),
        &t.a.token,
        json!({"status": "paused"}),
    )
    .await
    .expect(200);
    let r = t
        .webhook(Some(&t.secret), &update(55, 77, "anyone there?"))
        .await;
    r.expect(200);
    assert_eq!(r.body["outcome"], "dead_letter");
    let dl =
        t.s.get(
            &format!("/api/channels/{}/dead-letters", t.channel),
            &t.a.token,
        )
        .await;
    dl.expect(200);
    let letters = dl.body["data"]
        .as_array()
        .expect("test precondition")
        .clone();
    assert_eq!(letters.len(), 1, "{}", dl.text);
    assert_eq!(letters[0]["externalId"], "55");
    assert!(
        letters[0]["payload"]
            .as_str()
            .expect("test precondition")
            .contains("anyone there?")
    );
    assert!(t.conversations().await.is_empty());

    t.s.put(
        &format!("/api/channels/{}", t.channel),
        &t.a.token,
        json!({"status": "active"}),
    )
    .await
    .expect(200);
    t.fake.push(Reply::text("Yes, here!"));
    let r =
        t.s.post(
            &format!(
                "/api/channels/{}/dead-letters/{}/replay",
                t.channel,
                id(&letters[0])
            ),
            Some(&t.a.token),
            json!({}),
        )
        .await;
    r.expect(202);
    let sent = t.tg.wait_calls("sendMessage", 1).await;
    assert_eq!(sent[0]["chat_id"], 77);
    let dl =
        t.s.get(
            &format!("/api/channels/{}/dead-letters", t.channel),
            &t.a.token,
        )
        .await;
    assert_eq!(
        dl.body["data"],
        json!([]),
        "replayed: no longer a dead letter"
    );
    // Replaying again is refused: it is processed.
    let r =
        t.s.post(
            &format!(
                "/api/channels/{}/dead-letters/{}/replay",
                t.channel,
                id(&letters[0])
            ),
            Some(&t.a.token),
            json!({}),
        )
        .await;
    r.expect_err(409, "not_a_dead_letter");
}

#[tokio::test]
async fn replies_are_retried_on_5xx_failed_on_4xx_and_split_when_long() {
    let t = setup("tg-out@x.test").await;
    // 5xx, then success: sent once.
    t.tg.script(
        "sendMessage",
        502,
        json!({"ok": false, "error_code": 502, "description": "Bad Gateway"}),
    );
    t.fake.push(Reply::text("First answer."));
    t.webhook(Some(&t.secret), &update(1, 10, "one"))
        .await
        .expect(200);
    let sent = t.tg.wait_calls("sendMessage", 2).await;
    assert_eq!(sent[0]["text"], "First answer.");
    assert_eq!(sent[1]["text"], "First answer.");
    let cid = id(&t.wait_conversations(1).await[0]);
    t.wait_message(&cid, |m| m["role"] == "ai" && m["status"] == "sent")
        .await;

    // A long answer leaves in parts of at most 4096 characters, in order.
    let long = format!("{} {}", "word ".repeat(1000).trim_end(), "end.");
    t.fake.push(Reply::text(&long));
    t.webhook(Some(&t.secret), &update(2, 10, "two"))
        .await
        .expect(200);
    let sent = t.tg.wait_calls("sendMessage", 4).await;
    let parts: Vec<&str> = sent[2..]
        .iter()
        .map(|b| b["text"].as_str().expect("test precondition"))
        .collect();
    assert!(parts.iter().all(|p| p.chars().count() <= 4096), "{parts:?}");
    assert_eq!(parts.join(" "), long);

    // 4xx: failed at once with Telegram's words on the message.
    t.tg.script(
        "sendMessage",
        403,
        json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
    );
    let caller =
        t.s.svc
            .authenticate_access(&t.a.token)
            .expect("a valid access token");
    let mut sub = t.s.svc.events.subscribe(&caller);
    t.fake.push(Reply::text("Third answer."));
    t.webhook(Some(&t.secret), &update(3, 10, "three"))
        .await
        .expect(200);
    let failed = t
        .wait_message(&cid, |m| m["role"] == "ai" && m["status"] == "failed")
        .await;
    assert_eq!(failed["content"], "Third answer.");
    assert!(
        failed["error"]
            .as_str()
            .expect("test precondition")
            .contains("bot was blocked by the user"),
        "{failed}"
    );
    assert_eq!(failed["errorCode"], "send_failed", "{failed}");
    assert_eq!(t.tg.calls("sendMessage").len(), 5, "a 4xx is not retried");
    // The inbox hears of it on the bus (message_status on the sockets).
    loop {
        match bounded("message_status failed", sub.recv()).await {
            Recv::Event(e) => {
                if let Event::MessageStatus {
                    message_id,
                    status,
                    error,
                    error_code,
                    ..
                } = &*e
                    && message_id.as_str() == failed["id"].as_str().expect("id")
                {
                    assert_eq!(*status, MessageStatus::Failed);
                    assert!(error.as_deref().is_some_and(|e| e.contains("blocked")));
                    assert_eq!(
                        *error_code,
                        Some(aigentable::model::MessageErrorCode::SendFailed)
                    );
                    break;
                }
            }
            other => panic!("the bus ended: {other:?}"),
        }
    }

    // A person's reply goes out too.
    t.s.post(
        &format!("/api/conversations/{cid}/messages"),
        Some(&t.a.token),
        json!({"role": "human", "content": "Hello from a person"}),
    )
    .await
    .expect(201);
    let sent = t.tg.wait_calls("sendMessage", 6).await;
    assert_eq!(sent[5]["text"], "Hello from a person");
}

#[tokio::test]
async fn a_bad_bot_token_puts_the_channel_in_error_with_telegrams_words() {
    let tg = FakeTelegram::start().await;
    let base = tg.base.clone();
    let s = start_with(|c| c.telegram_api_base_url = base).await;
    let a = s.register("tg-bad@x.test", "Shop").await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let r = s
        .post(
            "/api/channels",
            Some(&a.token),
            json!({"type": "telegram", "name": "Wrong", "agentId": agent,
                   "credentials": {"botToken": "999:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["status"], "error");
    assert_eq!(r.body["lastError"], "Telegram said: Unauthorized");
    let t = s
        .post(
            &format!("/api/channels/{}/test", id(&r.body)),
            Some(&a.token),
            json!({}),
        )
        .await;
    t.expect(200);
    assert_eq!(t.body["ok"], false);
    assert_eq!(t.body["error"], "Telegram said: Unauthorized");
    // Missing token, bad token shape.
    s.post(
        "/api/channels",
        Some(&a.token),
        json!({"type": "telegram", "name": "x", "agentId": agent}),
    )
    .await
    .expect_err(400, "validation_failed");
    s.post(
        "/api/channels",
        Some(&a.token),
        json!({"type": "telegram", "name": "x", "agentId": agent, "credentials": {"botToken": "nope"}}),
    )
    .await
    .expect_err(400, "validation_failed");
}

/// The stopped server's Telegram jobs (inbound and outbox), read from its store.
fn channel_jobs(dir: &std::path::Path, tenant: &str) -> Vec<Job> {
    let t = TenantId::parse(tenant).expect("tenant id");
    let store = Store::open(dir, 1 << 20).expect("open store");
    store
        .read(|tx| tx.scan::<Job>(&t, None, |j| j.kind.starts_with("channel_")))
        .expect("read")
}

/// Puts the store in the state a kill -9 leaves it in while every channel job was running:
/// the deliveries not yet marked processed, the jobs running and queued. The messages they
/// already stored, and the parts already handed to Telegram, stay.
fn crash_during_channel_jobs(dir: &std::path::Path, tenant: &str) {
    let t = TenantId::parse(tenant).expect("tenant id");
    let store = Store::open(dir, 1 << 20).expect("open store");
    store
        .write(|tx| {
            for mut ev in tx.scan::<InboundEvent>(&t, None, |_| true)? {
                ev.status = InboundStatus::Queued;
                tx.put(&ev)?;
            }
            for mut j in tx.scan::<Job>(&t, None, |j| j.kind.starts_with("channel_"))? {
                j.status = JobStatus::Running;
                j.attempts = 1;
                tx.put(&j)?;
                tx.index_insert_new(Index::JobQueue, j.id.as_str(), &make_ref(&t, j.id.as_str()))?;
            }
            Ok::<_, aigentable::store::Error>(())
        })
        .expect("write");
}

#[tokio::test]
async fn after_a_crash_every_acknowledged_message_and_reply_exists_exactly_once() {
    let t = setup("tg-crash@x.test").await;
    t.fake.push(Reply::text("Short answer."));
    let long = format!("{} end.", "word ".repeat(1200).trim_end());
    t.fake.push(Reply::text(&long));
    t.webhook(Some(&t.secret), &update(1, 5, "first"))
        .await
        .expect(200);
    t.tg.wait_calls("sendMessage", 1).await;
    t.webhook(Some(&t.secret), &update(2, 5, "second"))
        .await
        .expect(200);
    let before = t.tg.wait_calls("sendMessage", 3).await;
    let cid = id(&t.wait_conversations(1).await[0]);
    t.wait_message(&cid, |m| m["role"] == "ai" && m["content"] == long.as_str())
        .await;
    // Wait until the outbox recorded its last part before the "crash".
    let tenant = t.a.tenant_id.clone();
    let ten = TenantId::parse(&tenant).expect("tenant");
    let sends: Vec<_> =
        t.s.svc
            .store
            .read(|tx| tx.scan::<Job>(&ten, None, |j| j.kind == "channel_send"))
            .expect("read");
    for j in &sends {
        bounded("the outbox job", t.s.svc.jobs.finished(&ten, &j.id)).await;
    }
    let Setup { s, a, fake, tg, .. } = t;
    let dir = s.stop().await;
    assert_eq!(
        channel_jobs(dir.path(), &tenant).len(),
        4,
        "two deliveries, two replies"
    );
    crash_during_channel_jobs(dir.path(), &tenant);

    let base = tg.base.clone();
    let s = start_in(dir, move |c| c.telegram_api_base_url = base).await;
    // Every resumed job ends; nothing was stored, asked or sent twice.
    let resumed: Vec<_> = s
        .svc
        .store
        .read(|tx| tx.scan::<Job>(&ten, None, |j| j.kind.starts_with("channel_")))
        .expect("read");
    for j in &resumed {
        let done = bounded("a resumed job", s.svc.jobs.finished(&ten, &j.id))
            .await
            .expect("it ends");
        assert_eq!(done.status, JobStatus::Done, "{done:?}");
    }
    let r = s
        .get(
            &format!("/api/conversations/{cid}/messages?limit=200"),
            &a.token,
        )
        .await;
    let msgs = r.body["data"].as_array().expect("data").clone();
    let customer = msgs.iter().filter(|m| m["role"] == "customer").count();
    let ai = msgs.iter().filter(|m| m["role"] == "ai").count();
    assert_eq!((customer, ai), (2, 2), "{msgs:?}");
    assert_eq!(fake.requests().len(), 2, "no second turn");
    assert_eq!(
        tg.calls("sendMessage").len(),
        before.len(),
        "no part sent twice"
    );
    s.stop().await;
}

/// Puts the store in the state a kill -9 leaves it in while the outbox job of `message`
/// was handing its first part to Telegram: the attempt recorded, the outcome not, the job
/// running, the message pending.
fn crash_during_send(dir: &std::path::Path, tenant: &str, message: &str) {
    let t = TenantId::parse(tenant).expect("tenant id");
    let store = Store::open(dir, 1 << 20).expect("open store");
    store
        .write(|tx| {
            let jobs = tx.scan::<Job>(&t, None, |j| {
                j.kind == "channel_send" && j.payload["messageId"] == message
            })?;
            assert_eq!(jobs.len(), 1, "the reply's outbox job");
            for mut j in jobs {
                j.status = JobStatus::Running;
                j.attempts = 1;
                j.payload["sentParts"] = json!(0);
                j.payload["attempt"] = json!(0);
                tx.put(&j)?;
                tx.index_insert_new(Index::JobQueue, j.id.as_str(), &make_ref(&t, j.id.as_str()))?;
                let key = format!(
                    "{}/{message}",
                    j.payload["conversationId"].as_str().expect("conversation")
                );
                let mut m = tx.get::<Message>(&t, &key)?.expect("the reply");
                m.status = MessageStatus::Pending;
                tx.put(&m)?;
            }
            Ok::<_, aigentable::store::Error>(())
        })
        .expect("write");
}

#[tokio::test]
async fn a_reply_whose_send_outcome_is_unknown_is_never_sent_twice_and_a_person_resends_it() {
    let t = setup("tg-unknown@x.test").await;
    t.fake.push(Reply::text("Answer one."));
    t.webhook(Some(&t.secret), &update(1, 8, "one"))
        .await
        .expect(200);
    t.tg.wait_calls("sendMessage", 1).await;
    let cid = id(&t.wait_conversations(1).await[0]);
    let first = t
        .wait_message(&cid, |m| m["role"] == "ai" && m["status"] == "sent")
        .await;
    let mid = id(&first);

    // Killed while Telegram had the part and had not answered: after the restart the reply
    // is not sent again, it is failed with delivery_unknown.
    let tenant = t.a.tenant_id.clone();
    let ten = TenantId::parse(&tenant).expect("tenant");
    let Setup {
        s,
        a,
        fake,
        tg,
        channel,
        secret,
    } = t;
    let dir = s.stop().await;
    crash_during_send(dir.path(), &tenant, &mid);
    let base = tg.base.clone();
    let s = start_in(dir, move |c| c.telegram_api_base_url = base).await;
    let t = Setup {
        s,
        a,
        fake,
        tg,
        channel,
        secret,
    };
    let unknown = t
        .wait_message(&cid, |m| m["id"] == mid.as_str() && m["status"] == "failed")
        .await;
    let error = unknown["error"].as_str().expect("an error");
    assert_eq!(unknown["errorCode"], "delivery_unknown", "{unknown}");
    assert!(error.starts_with("delivery_unknown: "), "{error}");
    assert!(error.contains("check the chat and resend"), "{error}");
    assert!(!error.contains("gave up"), "{error}");
    let jobs: Vec<_> =
        t.s.svc
            .store
            .read(|tx| tx.scan::<Job>(&ten, None, |j| j.kind == "channel_send"))
            .expect("read");
    for j in &jobs {
        bounded("the outbox job", t.s.svc.jobs.finished(&ten, &j.id)).await;
    }
    assert_eq!(t.tg.calls("sendMessage").len(), 1, "not sent a second time");

    // A person resends it: pending again, then sent once more.
    let path = format!("/api/conversations/{cid}/messages/{mid}/resend");
    let r = t.s.post(&path, Some(&t.a.token), json!({})).await;
    r.expect(200);
    assert_eq!(r.body["status"], "pending", "{}", r.text);
    assert!(r.body["error"].is_null(), "{}", r.text);
    let sent = t.tg.wait_calls("sendMessage", 2).await;
    assert_eq!(sent[1]["text"], "Answer one.");
    t.wait_message(&cid, |m| m["id"] == mid.as_str() && m["status"] == "sent")
        .await;
    // Only a failed reply is resent.
    t.s.post(&path, Some(&t.a.token), json!({}))
        .await
        .expect_err(409, "message_not_resendable");
    let customer = t
        .messages(&cid)
        .await
        .into_iter()
        .find(|m| m["role"] == "customer")
        .expect("the customer's message");
    t.s.post(
        &format!("/api/conversations/{cid}/messages/{}/resend", id(&customer)),
        Some(&t.a.token),
        json!({}),
    )
    .await
    .expect_err(409, "message_not_resendable");
    t.s.post(
        &format!("/api/conversations/{cid}/messages/00000000-0000-7000-8000-000000000000/resend"),
        Some(&t.a.token),
        json!({}),
    )
    .await
    .expect_err(404, "message_not_found");
    // Another tenant cannot resend it.
    let other = t.s.register("tg-unknown-other@x.test", "Other").await;
    t.s.post(&path, Some(&other.token), json!({}))
        .await
        .expect_err(404, "conversation_not_found");

    // An answer lost on the way back while the server runs: Telegram got the request, so
    // it is not retried either.
    t.tg.script("sendMessage", 200, json!(CUT_OFF));
    t.fake.push(Reply::text("Answer two."));
    t.webhook(Some(&t.secret), &update(2, 8, "two"))
        .await
        .expect(200);
    let lost = t
        .wait_message(&cid, |m| {
            m["role"] == "ai" && m["content"] == "Answer two." && m["status"] == "failed"
        })
        .await;
    assert_eq!(lost["errorCode"], "delivery_unknown", "{lost}");
    assert!(
        lost["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("delivery_unknown: ")),
        "{lost}"
    );
    let jobs: Vec<_> =
        t.s.svc
            .store
            .read(|tx| tx.scan::<Job>(&ten, None, |j| j.kind == "channel_send"))
            .expect("read");
    for j in &jobs {
        bounded("the outbox job", t.s.svc.jobs.finished(&ten, &j.id)).await;
    }
    assert_eq!(t.tg.calls("sendMessage").len(), 3, "sent once, not retried");
    t.s.stop().await;
}
