//! Realtime: commit order and idempotent resends over REST, and the Socket.IO server driven
//! by node's stock socket.io-client (scripts in tests/js).

use crate::common::*;
use serde_json::json;

/// A tenant with an agent (no model: turns fail fast, which is fine here) and a conversation.
async fn conversation(s: &Server, a: &Account) -> String {
    let agent = create_agent(s, a, json!({"name": "Bot"})).await;
    let r = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"agentId": id(&agent)}),
        )
        .await;
    r.expect(201);
    id(&r.body)
}

#[tokio::test]
async fn rest_resend_with_a_client_id_is_idempotent_and_messages_carry_seq() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let cid = conversation(&s, &a).await;
    let path = format!("/api/conversations/{cid}/messages");
    let body = json!({"content": "hi", "role": "human", "clientId": "c-42"});
    let first = s.post(&path, Some(&a.token), body.clone()).await;
    first.expect(201);
    assert_eq!(first.body["message"]["clientId"], "c-42");
    assert_eq!(first.body["message"]["seq"], 1);
    let again = s.post(&path, Some(&a.token), body).await;
    again.expect(200);
    assert_eq!(again.body["message"]["id"], first.body["message"]["id"]);
    let list = s.get(&path, &a.token).await;
    list.expect(200);
    assert_eq!(list.body["data"].as_array().map(Vec::len), Some(1));
    // Another key is another message, numbered next.
    let other = s
        .post(
            &path,
            Some(&a.token),
            json!({"content": "hi", "role": "human", "clientId": "c-43"}),
        )
        .await;
    other.expect(201);
    assert_eq!(other.body["message"]["seq"], 2);
    let long = s
        .post(
            &path,
            Some(&a.token),
            json!({"content": "hi", "role": "human", "clientId": "k".repeat(65)}),
        )
        .await;
    long.expect_err(400, "validation_failed");
}

// ---------------------------------------------------------------------------------------
// Socket.IO, driven by node's stock socket.io-client (tests/js/socket_driver.mjs).

use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// How long any one expected event may take before the test fails (a hang guard, not a
/// timing assertion: every wait ends as soon as the event arrives).
const WAIT: Duration = Duration::from_secs(20);

/// Stock socket.io-client sockets in one node process.
struct Clients {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<Value>,
    /// Lines read while waiting for something else, in arrival order.
    seen: VecDeque<Value>,
    next_id: u64,
}

impl Clients {
    /// `None` (the test skips, loudly) without node and tests/js/node_modules.
    async fn start(test: &str, s: &Server) -> Option<Clients> {
        let dir = crate::js::node_clients(test)?;
        let mut child = Command::new("node")
            .arg("socket_driver.mjs")
            .arg(&s.base)
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    let _ = tx.send(v);
                }
            }
        });
        Some(Clients {
            child,
            stdin,
            lines: rx,
            seen: VecDeque::new(),
            next_id: 0,
        })
    }

    async fn cmd(&mut self, v: Value) {
        let mut line = serde_json::to_vec(&v).expect("json");
        line.push(b'\n');
        self.stdin.write_all(&line).await.expect("driver stdin");
    }

    /// Waits for the first line (seen before or arriving) that `want` accepts, removes it
    /// and returns it.
    async fn wait(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.seen.iter().position(&want) {
            return self.seen.remove(i).expect("index");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("waited {WAIT:?} for {what}; seen: {:?}", self.seen))
                .unwrap_or_else(|| panic!("the node driver ended while waiting for {what}"));
            if want(&line) {
                return line;
            }
            self.seen.push_back(line);
        }
    }

    /// Connects socket `name`; `Err(message)` for a connect_error.
    async fn connect_with(&mut self, name: &str, auth: Value, opts: Value) -> Result<(), String> {
        self.cmd(json!({"cmd": "connect", "name": name, "auth": auth, "opts": opts}))
            .await;
        let n = name.to_string();
        let v = self
            .wait(&format!("{name} to connect"), move |v| {
                v["name"] == n.as_str() && (v["ev"] == "connect" || v["ev"] == "connect_error")
            })
            .await;
        if v["ev"] == "connect" {
            Ok(())
        } else {
            Err(v["message"].as_str().unwrap_or("").to_string())
        }
    }

    async fn connect(&mut self, name: &str, token: &str) {
        self.connect_with(name, json!({"token": token}), json!({}))
            .await
            .unwrap_or_else(|e| panic!("{name} refused: {e}"));
    }

    /// Emits and waits for the ack.
    async fn ask(&mut self, name: &str, event: &str, data: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.cmd(json!({"cmd": "emit", "name": name, "event": event, "data": data, "id": id}))
            .await;
        let n = name.to_string();
        let v = self
            .wait(&format!("the ack of {event} on {name}"), move |v| {
                v["ev"] == "ack" && v["name"] == n.as_str() && v["id"] == id
            })
            .await;
        v["data"].clone()
    }

    /// Emits without asking for an ack.
    async fn tell(&mut self, name: &str, event: &str, data: Value) {
        self.cmd(json!({"cmd": "emit", "name": name, "event": event, "data": data}))
            .await;
    }

    /// The next server event `event` on socket `name` (others stay queued).
    async fn next(&mut self, name: &str, event: &str) -> Value {
        let (n, e) = (name.to_string(), event.to_string());
        let v = self
            .wait(&format!("{event} on {name}"), move |v| {
                v["ev"] == "event" && v["name"] == n.as_str() && v["event"] == e.as_str()
            })
            .await;
        v["data"].clone()
    }

    /// The next event on `name` matching `want`.
    async fn next_where(
        &mut self,
        name: &str,
        event: &str,
        want: impl Fn(&Value) -> bool,
    ) -> Value {
        let (n, e) = (name.to_string(), event.to_string());
        let v = self
            .wait(&format!("a matching {event} on {name}"), move |v| {
                v["ev"] == "event"
                    && v["name"] == n.as_str()
                    && v["event"] == e.as_str()
                    && want(&v["data"])
            })
            .await;
        v["data"].clone()
    }

    /// Every queued (already received) event `event` on `name`, removed.
    fn drain(&mut self, name: &str, event: &str) -> Vec<Value> {
        let mut out = Vec::new();
        self.seen.retain(|v| {
            let hit = v["ev"] == "event" && v["name"] == name && v["event"] == event;
            if hit {
                out.push(v["data"].clone());
            }
            !hit
        });
        out
    }

    async fn disconnected(&mut self, name: &str) -> String {
        let n = name.to_string();
        let v = self
            .wait(&format!("{name} to be disconnected"), move |v| {
                v["ev"] == "disconnect" && v["name"] == n.as_str()
            })
            .await;
        v["reason"].as_str().unwrap_or("").to_string()
    }

    async fn close(&mut self, name: &str) {
        self.cmd(json!({"cmd": "close", "name": name})).await;
        self.disconnected(name).await;
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn api_key(s: &Server, a: &Account) -> String {
    let r = s
        .post(
            "/api/api-keys",
            Some(&a.token),
            json!({"name": "inbox bot", "role": "TENANT_USER"}),
        )
        .await;
    r.expect(201);
    r.body["secret"].as_str().expect("secret").to_string()
}

async fn human_says(s: &Server, a: &Account, cid: &str, text: &str) -> Value {
    let r = s
        .post(
            &format!("/api/conversations/{cid}/messages"),
            Some(&a.token),
            json!({"content": text, "role": "human"}),
        )
        .await;
    r.expect(201);
    r.body["message"].clone()
}

#[tokio::test]
async fn socket_connect_accepts_tokens_and_keys_and_refuses_with_rest_codes() {
    let s = start_with(|c| c.socket_max_per_user = 2).await;
    let Some(mut c) = Clients::start("socket_connect", &s).await else {
        return;
    };
    let a = s.register("a@x.test", "A").await;
    let key = api_key(&s, &a).await;
    c.connect("token", &a.token).await;
    c.connect("key", &key).await;
    let refused = |c: Result<(), String>| c.expect_err("refused");
    assert_eq!(
        refused(c.connect_with("none", json!({}), json!({})).await),
        "unauthorized"
    );
    assert_eq!(
        refused(
            c.connect_with("bad", json!({"token": "not-a-jwt"}), json!({}))
                .await
        ),
        "invalid_token"
    );
    assert_eq!(
        refused(
            c.connect_with("badkey", json!({"token": "ak_nope"}), json!({}))
                .await
        ),
        "invalid_api_key"
    );
    // A platform admin acts in a tenant with auth.tenantId; nobody else may.
    let root = s.root().await;
    c.connect_with(
        "root",
        json!({"token": root.token, "tenantId": a.tenant_id}),
        json!({}),
    )
    .await
    .expect("platform admin acts in the tenant");
    let b = s.register("b@x.test", "B").await;
    assert_eq!(
        refused(
            c.connect_with(
                "intruder",
                json!({"token": b.token, "tenantId": a.tenant_id}),
                json!({})
            )
            .await
        ),
        "forbidden"
    );
    // SOCKET_MAX_PER_USER=2: a third socket of the same user is refused, and a slot frees
    // when one closes.
    c.connect("token2", &a.token).await;
    assert_eq!(
        refused(
            c.connect_with("token3", json!({"token": a.token}), json!({}))
                .await
        ),
        "too_many_sockets"
    );
    c.close("token2").await;
    c.connect("token3", &a.token).await;
    // Long polling (the transport stock clients start with) works too.
    c.connect_with(
        "polling",
        json!({"token": key}),
        json!({"transports": ["polling"]}),
    )
    .await
    .expect("polling connects");
}

#[tokio::test]
async fn socket_join_send_and_live_events_reach_every_joined_socket_once() {
    let s = start().await;
    let Some(mut c) = Clients::start("socket_live", &s).await else {
        return;
    };
    let a = s.register("a@x.test", "A").await;
    let key = api_key(&s, &a).await;
    let cid = conversation(&s, &a).await;
    c.connect("alice", &a.token).await;
    c.connect("bot", &key).await;

    let j = c
        .ask("alice", "join_conversation", json!({"conversationId": cid}))
        .await;
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["conversation"]["id"], cid.as_str());
    assert_eq!(j["messages"], json!([]));
    assert_eq!(j["more"], false);
    let j = c
        .ask("bot", "join_conversation", json!({"conversationId": cid}))
        .await;
    assert_eq!(j["ok"], true, "{j}");

    // send_message: acked with the stored message; every joined socket (the sender too)
    // gets it as new_message.
    let ack = c
        .ask(
            "alice",
            "send_message",
            json!({"conversationId": cid, "content": "Hello from the inbox", "clientId": "m-1"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let sent = ack["message"].clone();
    assert_eq!(sent["role"], "human");
    assert_eq!(sent["clientId"], "m-1");
    assert_eq!(sent["seq"], 1);
    for who in ["alice", "bot"] {
        let m = c.next(who, "new_message").await;
        assert_eq!(m["id"], sent["id"], "{who}");
    }
    // The resend (same clientId) answers the same message and broadcasts nothing: the next
    // new_message anyone sees is the REST one after it.
    let again = c
        .ask(
            "alice",
            "send_message",
            json!({"conversationId": cid, "content": "Hello from the inbox", "clientId": "m-1"}),
        )
        .await;
    assert_eq!(again["message"]["id"], sent["id"]);
    // Sent over REST: reaches the sockets, in order.
    let rest = human_says(&s, &a, &cid, "Posted over REST").await;
    for who in ["alice", "bot"] {
        let m = c.next(who, "new_message").await;
        assert_eq!(
            m["id"], rest["id"],
            "{who}: no duplicate of the resend first"
        );
        assert_eq!(m["seq"], 2);
    }
    // Sent over the socket: in the REST read.
    let list = s
        .get(&format!("/api/conversations/{cid}/messages"), &a.token)
        .await;
    let ids: Vec<&str> = list.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&sent["id"].as_str().expect("id")));
    assert_eq!(ids.len(), 2);

    // conversation_update (the tenant room and the conversation room: once per socket).
    let r = s
        .put(
            &format!("/api/conversations/{cid}/assign"),
            &a.token,
            json!({"userId": a.user_id}),
        )
        .await;
    r.expect(200);
    for who in ["alice", "bot"] {
        let u = c
            .next_where(who, "conversation_update", |d| {
                d["changed"]
                    .as_array()
                    .is_some_and(|a| a.contains(&json!("mode")))
            })
            .await;
        assert_eq!(u["conversation"]["mode"], "human");
        assert!(
            u["changed"]
                .as_array()
                .expect("changed")
                .contains(&json!("assignee"))
        );
    }
    let r = s
        .put(
            &format!("/api/conversations/{cid}/close"),
            &a.token,
            json!({}),
        )
        .await;
    r.expect(200);
    let u = c
        .next_where("alice", "conversation_update", |d| {
            d["changed"] == json!(["status"])
        })
        .await;
    assert_eq!(u["conversation"]["status"], "closed");

    // new_conversation to the tenant room.
    let other = conversation(&s, &a).await;
    let n = c.next("alice", "new_conversation").await;
    assert_eq!(n["conversation"]["id"], other.as_str());

    // leave_conversation: no more new_message from it (the next one seen is from a
    // conversation still joined). The assignment's note was the last one before.
    let notes = c.drain("alice", "new_message");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["role"], "system");
    let l = c
        .ask(
            "alice",
            "leave_conversation",
            json!({"conversationId": cid}),
        )
        .await;
    assert_eq!(l["ok"], true);
    let j = c
        .ask(
            "alice",
            "join_conversation",
            json!({"conversationId": other}),
        )
        .await;
    assert_eq!(j["ok"], true);
    human_says(&s, &a, &cid, "alice left this one").await;
    let marker = human_says(&s, &a, &other, "marker").await;
    let m = c.next("alice", "new_message").await;
    assert_eq!(m["id"], marker["id"], "nothing from the conversation left");

    // Bad payloads are refused in the ack, with the REST error codes.
    let bad = c
        .ask(
            "alice",
            "join_conversation",
            json!({"conversationId": "nope"}),
        )
        .await;
    assert_eq!(bad["error"]["code"], "invalid_id");
    let bad = c
        .ask("alice", "send_message", json!({"conversationId": other}))
        .await;
    assert_eq!(bad["error"]["code"], "validation_failed");
    let bad = c.ask("alice", "send_message", json!("text")).await;
    assert_eq!(bad["error"]["code"], "malformed_json");
}

#[tokio::test]
async fn socket_foreign_conversations_answer_like_missing_ones_and_tenants_never_mix() {
    let s = start().await;
    let Some(mut c) = Clients::start("socket_isolation", &s).await else {
        return;
    };
    let x = s.register("x@x.test", "X").await;
    let y = s.register("y@y.test", "Y").await;
    let xc = conversation(&s, &x).await;
    c.connect("y", &y.token).await;
    let foreign = c
        .ask("y", "join_conversation", json!({"conversationId": xc}))
        .await;
    let missing = c
        .ask(
            "y",
            "join_conversation",
            json!({"conversationId": "0190b1a2-7c3d-7e4f-8a5b-6c7d8e9f0a1b"}),
        )
        .await;
    assert_eq!(foreign["ok"], false);
    assert_eq!(foreign["error"]["code"], "conversation_not_found");
    assert_eq!(
        foreign, missing,
        "a foreign id answers exactly like a missing one"
    );
    let sent = c
        .ask(
            "y",
            "send_message",
            json!({"conversationId": xc, "content": "let me in"}),
        )
        .await;
    assert_eq!(sent["error"]["code"], "conversation_not_found");

    // Activity in X never reaches Y's socket: the first events Y sees are its own.
    human_says(&s, &x, &xc, "X business").await;
    let x2 = conversation(&s, &x).await;
    let yc = conversation(&s, &y).await;
    let n = c.next("y", "new_conversation").await;
    assert_eq!(n["conversation"]["id"], yc.as_str());
    assert_ne!(n["conversation"]["id"], x2.as_str());
    assert!(c.drain("y", "conversation_update").is_empty());
    assert!(c.drain("y", "new_message").is_empty());
}

#[tokio::test]
async fn socket_reconnect_replays_what_was_missed_in_order_exactly_once() {
    let s = start().await;
    let Some(mut c) = Clients::start("socket_replay", &s).await else {
        return;
    };
    let a = s.register("a@x.test", "A").await;
    let cid = conversation(&s, &a).await;
    c.connect("inbox", &a.token).await;
    c.ask("inbox", "join_conversation", json!({"conversationId": cid}))
        .await;
    let first = human_says(&s, &a, &cid, "m1").await;
    let got = c.next("inbox", "new_message").await;
    assert_eq!(got["id"], first["id"]);
    c.close("inbox").await;

    // While it is away, five messages commit.
    let mut missed = Vec::new();
    for i in 2..=6 {
        missed.push(human_says(&s, &a, &cid, &format!("m{i}")).await["id"].clone());
    }
    c.connect("inbox2", &a.token).await;
    let j = c
        .ask(
            "inbox2",
            "join_conversation",
            json!({"conversationId": cid, "sinceMessageId": first["id"]}),
        )
        .await;
    assert_eq!(j["ok"], true, "{j}");
    let replayed: Vec<Value> = j["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(replayed, missed, "everything missed, in commit order, once");
    // Live again: the next message arrives once, right after the replay.
    let next = human_says(&s, &a, &cid, "m7").await;
    let got = c.next("inbox2", "new_message").await;
    assert_eq!(got["id"], next["id"]);
    assert!(c.drain("inbox2", "new_message").is_empty());
    // Joining from the start replays the whole conversation.
    let all = c
        .ask(
            "inbox2",
            "join_conversation",
            json!({"conversationId": cid}),
        )
        .await;
    assert_eq!(all["messages"].as_array().map(Vec::len), Some(7));
    // A since id that is not a message of the conversation is refused.
    let bad = c
        .ask(
            "inbox2",
            "join_conversation",
            json!({"conversationId": cid, "sinceMessageId": "0190b1a2-7c3d-7e4f-8a5b-6c7d8e9f0a1b"}),
        )
        .await;
    assert_eq!(bad["error"]["code"], "validation_failed");
}

#[tokio::test]
async fn socket_limits_rate_payload_and_token_expiry() {
    let s = start_with(|c| {
        c.socket_events_per_second = 1;
        c.socket_events_burst = 3;
        c.socket_max_payload_bytes = 2048;
        c.jwt_expires_in = "3s".into();
    })
    .await;
    let Some(mut c) = Clients::start("socket_limits", &s).await else {
        return;
    };
    let a = s.register("a@x.test", "A").await;
    let key = api_key(&s, &a).await;
    let cid = conversation(&s, &a).await;
    // Rate: a burst of 3, then refused (the bucket refills at 1/s, far slower than this).
    c.connect("fast", &key).await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = c.ask("fast", "get_presence", json!({})).await;
        codes.push(r["error"]["code"].as_str().unwrap_or("ok").to_string());
    }
    assert_eq!(codes[..3], ["ok", "ok", "ok"]);
    assert_eq!(codes[3], "rate_limited");
    // Payload: a packet over SOCKET_MAX_PAYLOAD_BYTES closes the socket.
    c.connect("big", &key).await;
    c.tell(
        "big",
        "send_message",
        json!({"conversationId": cid, "content": "x".repeat(4000)}),
    )
    .await;
    c.disconnected("big").await;
    let list = s
        .get(&format!("/api/conversations/{cid}/messages"), &a.token)
        .await;
    assert_eq!(list.body["data"], json!([]), "nothing was stored");
    // Token expiry: the access token lives 3 s; the socket is told and ended then.
    c.connect("expiring", &a.token).await;
    let e = c.next("expiring", "session_expired").await;
    assert_eq!(e, json!({}));
    c.disconnected("expiring").await;
    // ... and the same token no longer connects.
    let r = c
        .connect_with("stale", json!({"token": a.token}), json!({}))
        .await;
    assert_eq!(r.expect_err("refused"), "invalid_token");
}

#[tokio::test]
async fn socket_typing_presence_and_knowledge_progress() {
    let s = start().await;
    let Some(mut c) = Clients::start("socket_typing", &s).await else {
        return;
    };
    let a = s.register("a@x.test", "A").await;
    let u = s
        .invite_and_accept(&a, &a.tenant_id, "u@x.test", "TENANT_USER")
        .await;
    let cid = conversation(&s, &a).await;
    c.connect("admin", &a.token).await;
    c.connect("agent", &u.token).await;
    // Presence: the second person's arrival is announced to the first; both are listed.
    let p = c
        .next_where("admin", "presence", |d| d["userId"] == u.user_id.as_str())
        .await;
    assert_eq!(p["status"], "online");
    let list = c.ask("admin", "get_presence", json!({})).await;
    assert_eq!(list["ok"], true);
    let mut ids: Vec<&str> = list["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["userId"].as_str())
        .collect();
    ids.sort();
    let mut want = vec![a.user_id.as_str(), u.user_id.as_str()];
    want.sort();
    assert_eq!(ids, want);
    let r = c
        .ask("agent", "set_presence", json!({"status": "away"}))
        .await;
    assert_eq!(r["ok"], true);
    let p = c
        .next_where("admin", "presence", |d| d["status"] == "away")
        .await;
    assert_eq!(p["userId"], u.user_id.as_str());
    let bad = c
        .ask("agent", "set_presence", json!({"status": "asleep"}))
        .await;
    assert_eq!(bad["error"]["code"], "validation_failed");

    // Typing: only in a joined conversation; the others see it, the typist does not.
    let refused = c
        .ask("agent", "typing_start", json!({"conversationId": cid}))
        .await;
    assert_eq!(refused["error"]["code"], "conversation_not_found");
    for who in ["admin", "agent"] {
        c.ask(who, "join_conversation", json!({"conversationId": cid}))
            .await;
    }
    let r = c
        .ask("agent", "typing_start", json!({"conversationId": cid}))
        .await;
    assert_eq!(r["ok"], true);
    let t = c.next("admin", "user_typing").await;
    assert_eq!(t["conversationId"], cid.as_str());
    assert_eq!(t["typing"], true);
    assert_eq!(t["who"]["kind"], "human");
    assert_eq!(t["who"]["userId"], u.user_id.as_str());
    c.ask("agent", "typing_stop", json!({"conversationId": cid}))
        .await;
    let t = c.next("admin", "user_typing").await;
    assert_eq!(t["typing"], false);
    // Without a refresh, typing stops by itself.
    c.ask("agent", "typing_start", json!({"conversationId": cid}))
        .await;
    assert_eq!(c.next("admin", "user_typing").await["typing"], true);
    assert_eq!(c.next("admin", "user_typing").await["typing"], false);
    assert!(c.drain("agent", "user_typing").is_empty(), "not echoed");

    // Leaving ends presence: offline once the person's last socket is gone.
    c.close("agent").await;
    let p = c
        .next_where("admin", "presence", |d| d["status"] == "offline")
        .await;
    assert_eq!(p["userId"], u.user_id.as_str());

    // Knowledge: document_status and job_progress reach the tenant's sockets.
    let r = upload(
        &s,
        &a.token,
        &[(
            "notes.txt",
            "text/plain",
            b"Opening hours: nine to six.".to_vec(),
        )],
        None,
    )
    .await;
    r.expect(202);
    let doc = r.body["data"][0]["id"].as_str().expect("doc").to_string();
    let d = c
        .next_where("admin", "document_status", |d| {
            d["documentId"] == doc.as_str() && (d["status"] == "ready" || d["status"] == "failed")
        })
        .await;
    assert!(d["progress"].is_number(), "{d}");
    let j = c.next("admin", "job_progress").await;
    assert!(j["jobId"].is_string() && j["kind"].is_string(), "{j}");
}

#[tokio::test]
async fn socket_streams_the_ai_answer_then_sends_it_stored() {
    use crate::fake_openai::{FakeOpenAi, Reply};
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let Some(mut c) = Clients::start("socket_stream", &s).await else {
        return;
    };
    let a = crate::engine::ai_tenant(&s, "ai@x.test", &fake).await;
    let cid = conversation(&s, &a).await;
    c.connect("inbox", &a.token).await;
    c.ask("inbox", "join_conversation", json!({"conversationId": cid}))
        .await;
    fake.push(Reply::text("We open at nine o'clock every weekday."));
    let posted = s
        .post(
            &format!("/api/conversations/{cid}/messages"),
            Some(&a.token),
            json!({"content": "When do you open?", "role": "customer", "async": true}),
        )
        .await;
    posted.expect(201);
    let question = c.next("inbox", "new_message").await;
    assert_eq!(question["role"], "customer");
    // The AI types, streams its answer in pieces under one id, then the stored answer ends
    // the stream (and arrives as new_message with that same id).
    let t = c.next("inbox", "user_typing").await;
    assert_eq!(
        (t["who"]["kind"].clone(), t["typing"].clone()),
        (json!("ai"), json!(true))
    );
    let mut text = String::new();
    let mut id = Value::Null;
    let done = loop {
        let e = c.next("inbox", "agent_response").await;
        if e["done"] == true {
            break e;
        }
        if id.is_null() {
            id = e["messageId"].clone();
        }
        assert_eq!(e["messageId"], id, "one id for the whole stream");
        text.push_str(e["delta"].as_str().expect("delta"));
    };
    assert!(!id.is_null(), "deltas came before the end");
    assert_eq!(text, "We open at nine o'clock every weekday.");
    assert_eq!(done["messageId"], id);
    assert_eq!(done["content"], text.as_str());
    assert!(done["usage"]["completionTokens"].is_number(), "{done}");
    assert_eq!(done["message"]["id"], id);
    let stored = c.next("inbox", "new_message").await;
    assert_eq!(stored["id"], id);
    assert_eq!(stored["seq"], 2);
    let t = c.next("inbox", "user_typing").await;
    assert_eq!(t["typing"], false);
}

const SITE: &str = "https://shop.example.com";

/// A web widget channel of `a` (allowed on [`SITE`]) answering with `agent`; its key.
async fn widget(s: &Server, a: &Account, agent: &str, settings: Value) -> String {
    let r = s
        .post(
            "/api/channels",
            Some(&a.token),
            json!({"type": "web", "name": "Website", "agentId": agent, "settings": settings}),
        )
        .await;
    r.expect(201);
    r.body["settings"]["widgetKey"]
        .as_str()
        .expect("widget key")
        .to_string()
}

fn from_site() -> Value {
    json!({"headers": {"Origin": SITE}})
}

#[tokio::test]
async fn socket_visitors_chat_live_and_only_in_their_own_conversation() {
    use crate::fake_openai::{FakeOpenAi, Reply};
    let fake = FakeOpenAi::start().await;
    let s = start_with(|c| c.socket_max_per_visitor = 2).await;
    let Some(mut c) = Clients::start("socket_visitors", &s).await else {
        return;
    };
    let a = crate::engine::ai_tenant(&s, "shop@x.test", &fake).await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Ava"})).await);
    let key = widget(
        &s,
        &a,
        &agent,
        json!({"allowedOrigins": [SITE], "greeting": "Hi! How can we help?"}),
    )
    .await;
    c.connect("staff", &a.token).await;

    // Refusals: another site, an unknown token, an unknown widget.
    let refused = |r: Result<(), String>| r.expect_err("refused");
    assert_eq!(
        refused(
            c.connect_with(
                "evil",
                json!({"widgetKey": key}),
                json!({"headers": {"Origin": "https://evil.example"}})
            )
            .await
        ),
        "origin_not_allowed"
    );
    assert_eq!(
        refused(
            c.connect_with(
                "stale",
                json!({"widgetKey": key, "visitorToken": "vt_unknown"}),
                from_site()
            )
            .await
        ),
        "unauthorized"
    );

    // A new visitor: a session with a token issued once and no conversation yet.
    c.connect_with(
        "v1",
        json!({"widgetKey": key, "name": "Carla"}),
        from_site(),
    )
    .await
    .expect("visitor connects");
    let session = c.next("v1", "session").await;
    let token = session["visitorToken"].as_str().expect("token").to_string();
    assert!(session["visitorId"].is_string());
    assert_eq!(session["conversationId"], Value::Null);
    assert_eq!(session["channel"]["greeting"], "Hi! How can we help?");

    // The first message opens the conversation: acked, shown to the visitor with the
    // greeting, announced to the team; the AI answer streams to the visitor.
    fake.push(Reply::text("We ship within two days."));
    let ack = c
        .ask(
            "v1",
            "send_message",
            json!({"content": "How fast do you ship?", "clientId": "v-1"}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let mine = ack["message"].clone();
    assert_eq!(mine["role"], "customer");
    let cid = mine["conversationId"].as_str().expect("cid").to_string();
    let greeting = c.next("v1", "new_message").await;
    assert_eq!(greeting["content"], "Hi! How can we help?");
    assert_eq!(c.next("v1", "new_message").await["id"], mine["id"]);
    let n = c.next("staff", "new_conversation").await;
    assert_eq!(n["conversation"]["id"], cid.as_str());
    let done = c
        .next_where("v1", "agent_response", |d| d["done"] == true)
        .await;
    assert_eq!(done["content"], "We ship within two days.");
    let deltas = c.drain("v1", "agent_response");
    assert!(!deltas.is_empty(), "the answer streamed first");
    assert_eq!(c.next("v1", "new_message").await["id"], done["messageId"]);
    // A resend is the same message.
    let again = c
        .ask(
            "v1",
            "send_message",
            json!({"content": "How fast do you ship?", "clientId": "v-1"}),
        )
        .await;
    assert_eq!(again["message"]["id"], mine["id"]);

    // Staff takes over and replies; the visitor sees it live. Typing goes both ways.
    c.ask("staff", "join_conversation", json!({"conversationId": cid}))
        .await;
    let r = s
        .put(
            &format!("/api/conversations/{cid}/assign"),
            &a.token,
            json!({"userId": a.user_id}),
        )
        .await;
    r.expect(200);
    let u = c.next("v1", "conversation_update").await;
    assert_eq!(u["conversation"]["mode"], "human");
    c.ask("v1", "typing_start", json!({"conversationId": cid}))
        .await;
    let t = c
        .next_where("staff", "user_typing", |d| d["who"]["kind"] == "customer")
        .await;
    assert_eq!(t["who"]["name"], "Carla");
    c.ask("staff", "typing_start", json!({"conversationId": cid}))
        .await;
    let t = c
        .next_where("v1", "user_typing", |d| d["who"]["kind"] == "human")
        .await;
    assert_eq!(t["typing"], true);
    let reply = c
        .ask(
            "staff",
            "send_message",
            json!({"conversationId": cid, "content": "Carla, it ships today."}),
        )
        .await;
    let got = c
        .next_where("v1", "new_message", |m| m["role"] == "human")
        .await;
    assert_eq!(got["id"], reply["message"]["id"]);

    // Another visitor: the first one's conversation does not exist for it.
    c.connect_with("v2", json!({"widgetKey": key}), from_site())
        .await
        .expect("second visitor");
    c.next("v2", "session").await;
    let foreign = c
        .ask("v2", "join_conversation", json!({"conversationId": cid}))
        .await;
    let missing = c
        .ask(
            "v2",
            "join_conversation",
            json!({"conversationId": "0190b1a2-7c3d-7e4f-8a5b-6c7d8e9f0a1b"}),
        )
        .await;
    assert_eq!(foreign["error"]["code"], "conversation_not_found");
    assert_eq!(foreign, missing);
    let sent = c
        .ask(
            "v2",
            "send_message",
            json!({"conversationId": cid, "content": "let me read"}),
        )
        .await;
    assert_eq!(sent["error"]["code"], "conversation_not_found");
    let refused_typing = c
        .ask("v2", "typing_start", json!({"conversationId": cid}))
        .await;
    assert_eq!(refused_typing["error"]["code"], "conversation_not_found");
    let p = c.ask("v2", "get_presence", json!({})).await;
    assert_eq!(p["error"]["code"], "forbidden");
    // Team-only events never reach visitors.
    for ev in [
        "new_conversation",
        "presence",
        "document_status",
        "job_progress",
    ] {
        assert!(c.drain("v1", ev).is_empty(), "{ev} reached a visitor");
        assert!(c.drain("v2", ev).is_empty(), "{ev} reached a visitor");
    }
    assert!(c.drain("v2", "new_message").is_empty());

    // The same visitor comes back (token kept): its conversation, no new token, followed
    // live at once; joining with sinceMessageId replays what it missed.
    c.close("v1").await;
    let missed = human_says(&s, &a, &cid, "Are you still there?").await;
    c.connect_with(
        "v1b",
        json!({"widgetKey": key, "visitorToken": token}),
        from_site(),
    )
    .await
    .expect("returning visitor");
    let session = c.next("v1b", "session").await;
    assert_eq!(session["conversationId"], cid.as_str());
    assert!(session.get("visitorToken").is_none(), "{session}");
    let live = human_says(&s, &a, &cid, "Here is your tracking number.").await;
    assert_eq!(c.next("v1b", "new_message").await["id"], live["id"]);
    let j = c
        .ask(
            "v1b",
            "join_conversation",
            json!({"conversationId": cid, "sinceMessageId": reply["message"]["id"]}),
        )
        .await;
    let ids: Vec<Value> = j["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, vec![missed["id"].clone(), live["id"].clone()]);
    // SOCKET_MAX_PER_VISITOR=2.
    c.connect_with(
        "v1c",
        json!({"widgetKey": key, "visitorToken": token}),
        from_site(),
    )
    .await
    .expect("second socket of the visitor");
    assert_eq!(
        refused(
            c.connect_with(
                "v1d",
                json!({"widgetKey": key, "visitorToken": token}),
                from_site()
            )
            .await
        ),
        "too_many_sockets"
    );
}

#[tokio::test]
async fn socket_mark_read_keeps_read_marks_and_sends_read_receipts() {
    let s = start().await;
    let Some(mut c) = Clients::start("socket_mark_read", &s).await else {
        return;
    };
    let a = s.register("a@x.test", "A").await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Ava"})).await);
    let key = widget(&s, &a, &agent, json!({"allowedOrigins": [SITE]})).await;
    c.connect("staff", &a.token).await;
    c.connect_with("v", json!({"widgetKey": key}), from_site())
        .await
        .expect("visitor");
    c.next("v", "session").await;
    let first = c
        .ask("v", "send_message", json!({"content": "Hello?"}))
        .await;
    let cid = first["message"]["conversationId"]
        .as_str()
        .expect("cid")
        .to_string();
    // A person takes over (no AI turn runs after this) and answers twice.
    s.put(
        &format!("/api/conversations/{cid}/assign"),
        &a.token,
        json!({"userId": a.user_id}),
    )
    .await
    .expect(200);
    c.ask("staff", "join_conversation", json!({"conversationId": cid}))
        .await;
    let r1 = c
        .ask(
            "staff",
            "send_message",
            json!({"conversationId": cid, "content": "Hi!"}),
        )
        .await;
    let r2 = c
        .ask(
            "staff",
            "send_message",
            json!({"conversationId": cid, "content": "How can I help?"}),
        )
        .await;
    // Answering marks the conversation read for whoever answered.
    let list = s.get("/api/conversations", &a.token).await;
    assert_eq!(list.body["data"][0]["unreadCount"], 0, "{}", list.text);
    // The visitor reads: the team's messages become read, and the team sees it.
    let ack = c
        .ask(
            "v",
            "mark_read",
            json!({"conversationId": cid, "messageId": r2["message"]["id"]}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let read: Vec<Value> = ack["read"].as_array().expect("read").clone();
    assert!(read.contains(&r1["message"]["id"]) && read.contains(&r2["message"]["id"]));
    for m in [&r1, &r2] {
        let st = c
            .next_where("staff", "message_status", |d| {
                d["messageId"] == m["message"]["id"]
            })
            .await;
        assert_eq!(st["status"], "read");
        assert_eq!(st["conversationId"], cid.as_str());
    }
    let stored = s
        .get(&format!("/api/conversations/{cid}/messages"), &a.token)
        .await;
    let status_of = |id: &Value| {
        stored.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|m| &m["id"] == id)
            .map(|m| m["status"].clone())
    };
    assert_eq!(status_of(&r2["message"]["id"]), Some(json!("read")));
    assert_eq!(
        status_of(&first["message"]["id"]),
        Some(json!("sent")),
        "not the visitor's own"
    );
    // The visitor writes again: one unread for the team member, until they mark it read.
    let more = c
        .ask("v", "send_message", json!({"content": "My order is late."}))
        .await;
    let detail = s.get(&format!("/api/conversations/{cid}"), &a.token).await;
    assert_eq!(detail.body["unreadCount"], 1, "{}", detail.text);
    let ack = c
        .ask(
            "staff",
            "mark_read",
            json!({"conversationId": cid, "messageId": more["message"]["id"]}),
        )
        .await;
    assert_eq!(ack, json!({"ok": true, "unreadCount": 0}));
    let detail = s.get(&format!("/api/conversations/{cid}"), &a.token).await;
    assert_eq!(detail.body["unreadCount"], 0);
    // A read mark never moves back.
    let ack = c
        .ask(
            "staff",
            "mark_read",
            json!({"conversationId": cid, "messageId": r1["message"]["id"]}),
        )
        .await;
    assert_eq!(ack["unreadCount"], 0);
    let bad = c
        .ask(
            "staff",
            "mark_read",
            json!({"conversationId": cid, "messageId": "0190b1a2-7c3d-7e4f-8a5b-6c7d8e9f0a1b"}),
        )
        .await;
    assert_eq!(bad["error"]["code"], "validation_failed");
}

#[tokio::test]
async fn socket_new_visitors_are_rate_limited_per_address() {
    let s = start_with(|c| c.rate_limit_widget_ip_per_min = 2).await;
    let Some(mut c) = Clients::start("socket_new_visitor_limit", &s).await else {
        return;
    };
    let a = s.register("shop@x.test", "Shop").await;
    let r = s
        .post(
            "/api/agents",
            Some(&a.token),
            json!({"name": "Ava", "status": "inactive"}),
        )
        .await;
    r.expect(201);
    let agent = r.body["id"].as_str().expect("agent").to_string();
    let key = widget(&s, &a, &agent, json!({"allowedOrigins": [SITE]})).await;
    c.connect_with("v1", json!({"widgetKey": key}), from_site())
        .await
        .expect("first new visitor");
    let token = c.next("v1", "session").await["visitorToken"]
        .as_str()
        .expect("token")
        .to_string();
    c.connect_with("v2", json!({"widgetKey": key}), from_site())
        .await
        .expect("second new visitor");
    assert_eq!(
        c.connect_with("v3", json!({"widgetKey": key}), from_site())
            .await
            .expect_err("a third new visitor from the same address"),
        "rate_limited"
    );
    // A returning visitor (with its token) is not a new one.
    c.connect_with(
        "v1b",
        json!({"widgetKey": key, "visitorToken": token}),
        from_site(),
    )
    .await
    .expect("a returning visitor connects");
}

/// A socket that falls behind its tenant's event bus (SOCKET_TENANT_BACKLOG 1 and a burst
/// of commits before its forwarder can run) misses live events and refills its joined
/// conversations from the store: every message still arrives once, in commit order.
#[tokio::test]
async fn socket_that_falls_behind_the_bus_refills_from_the_store_exactly_once() {
    let token = "metrics-token-0123456789";
    let s = start_with(|c| {
        c.socket_tenant_backlog = 1;
        c.metrics = aigentable::config::MetricsMode::Token;
        c.metrics_token = Some(aigentable::config::Secret::new(token));
    })
    .await;
    let Some(mut c) = Clients::start("socket_lag", &s).await else {
        return;
    };
    let lagged = || async {
        let r = send(s.http.get(format!("{}/metrics", s.base)).bearer_auth(token)).await;
        r.expect(200);
        r.text
            .lines()
            .find(|l| l.starts_with("socket_lagged_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let a = s.register("a@x.test", "A").await;
    let cid = conversation(&s, &a).await;
    c.connect("inbox", &a.token).await;
    c.ask("inbox", "join_conversation", json!({"conversationId": cid}))
        .await;
    let first = human_says(&s, &a, &cid, "before").await;
    assert_eq!(c.next("inbox", "new_message").await["id"], first["id"]);
    let before = lagged().await;

    // Twenty commits straight through the domain on the test's thread: the server shares
    // this single-threaded runtime, so the socket's forwarder cannot run in between and the
    // one-event bus overflows.
    let caller = s.svc.authenticate_access(&a.token).expect("token");
    let conv = aigentable::types::ConversationId::parse(&cid).expect("id");
    let burst: Vec<String> = (0..20)
        .map(|i| {
            s.svc
                .post_message(
                    &caller,
                    &conv,
                    aigentable::model::MessageRole::Human,
                    &format!("burst {i}"),
                    None,
                )
                .expect("post")
                .message
                .id
                .to_string()
        })
        .collect();
    let mut got = Vec::new();
    for _ in 0..burst.len() {
        got.push(
            c.next("inbox", "new_message").await["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(got, burst, "every message once, in commit order");
    assert!(
        lagged().await > before,
        "the socket did fall behind the bus"
    );
    // Live again afterwards, with nothing delivered twice.
    let next = human_says(&s, &a, &cid, "after").await;
    assert_eq!(c.next("inbox", "new_message").await["id"], next["id"]);
    assert!(c.drain("inbox", "new_message").is_empty());
}
