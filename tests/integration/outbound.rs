//! The outbound policy from outside: where the operator's model key may go, which addresses
//! tenant-set URLs (model provider, embeddings, HTTP tools) may reach, and what of an
//! upstream's answer comes back to the client.

use crate::common::*;
use crate::engine::playground;
use crate::fake_openai::{FakeOpenAi, Reply};
use aigentable::config::Secret;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const OPERATOR_KEY: &str = "sk-operator-0123456789abcdef";

/// The operator's key goes to the operator's URL only: a tenant that sets only `baseUrl`
/// calls its own server without it, and the settings view claims no key.
#[tokio::test]
async fn the_operator_key_never_goes_to_a_tenant_base_url() {
    let operator = FakeOpenAi::start().await;
    let tenant = FakeOpenAi::start().await;
    let op_url = operator.base_url();
    let s = start_with(|c| {
        c.openai_base_url = op_url;
        c.openai_api_key = Some(Secret::new(OPERATOR_KEY));
    })
    .await;
    let a = s.register("keys@x.test", "Shop").await;

    // On the operator's endpoint the tenant uses the operator's key.
    let r = s.get("/api/settings/ai", &a.token).await;
    r.expect(200);
    assert_eq!(r.body["apiKeySet"], true);
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    operator.push(Reply::text("Hello from the operator."));
    playground(&s, &a.token, &agent, "Hi").await.expect(200);
    let seen = operator.recorded();
    assert_eq!(
        seen.last().and_then(|r| r.authorization.clone()).as_deref(),
        Some(format!("Bearer {OPERATOR_KEY}").as_str())
    );

    // Its own base URL, no key of its own: no key at all.
    let r = s
        .put(
            "/api/settings/ai",
            &a.token,
            json!({"baseUrl": tenant.base_url()}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["apiKeySet"], false, "{}", r.body);
    assert!(r.body["apiKeyHint"].is_null(), "{}", r.body);
    let r = s.get("/api/settings/ai", &a.token).await;
    assert_eq!(r.body["apiKeySet"], false);
    assert!(r.body["apiKeyHint"].is_null());
    assert!(!r.body.to_string().contains("cdef"), "{}", r.body);

    tenant.push(Reply::text("Hello from the tenant's server."));
    let r = playground(&s, &a.token, &agent, "Hi").await;
    r.expect(200);
    assert_eq!(r.body["reply"], "Hello from the tenant's server.");
    let seen = tenant.recorded();
    assert_eq!(seen.len(), 1);
    for req in &seen {
        let auth = req.authorization.clone().unwrap_or_default();
        assert!(
            !auth.contains(OPERATOR_KEY),
            "the operator key leaked: {auth}"
        );
        assert!(req.authorization.is_none(), "{auth}");
    }

    // With a key of its own, that key goes to its server.
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"apiKey": "sk-tenant-own-key-5678"}),
    )
    .await
    .expect(200);
    tenant.push(Reply::text("Again."));
    playground(&s, &a.token, &agent, "Hi").await.expect(200);
    assert_eq!(
        tenant
            .recorded()
            .last()
            .and_then(|r| r.authorization.clone())
            .as_deref(),
        Some("Bearer sk-tenant-own-key-5678")
    );

    // Back on the operator's URL (written out, trailing slash and all): the operator's key.
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"apiKey": null, "baseUrl": format!("{}/", operator.base_url())}),
    )
    .await
    .expect(200);
    let r = s.get("/api/settings/ai", &a.token).await;
    assert_eq!(r.body["apiKeySet"], true);
}

/// A local endpoint that records what reached it and answers as told: the tenant's server,
/// or the internal service an attacker would like to read.
struct Sink {
    base: String,
    seen: Arc<Mutex<Vec<axum::http::HeaderMap>>>,
}

impl Sink {
    async fn start_on(bind: &str, answer: fn() -> Response) -> Sink {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let s = s.clone();
            async move {
                s.lock().expect("lock").push(headers);
                answer()
            }
        });
        let l = tokio::net::TcpListener::bind(bind).await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Sink {
            base: format!("http://{addr}"),
            seen,
        }
    }

    async fn start(answer: fn() -> Response) -> Sink {
        Self::start_on("127.0.0.1:0", answer).await
    }

    fn hits(&self) -> Vec<axum::http::HeaderMap> {
        self.seen.lock().expect("lock").clone()
    }
}

fn secret_page() -> Response {
    (
        axum::http::StatusCode::OK,
        "internal-admin-console secret=hunter2",
    )
        .into_response()
}

/// A server whose operator allowed no private hosts (the production default).
async fn strict() -> Server {
    start_with(|c| c.outbound_allowed_private_hosts = String::new()).await
}

fn field_errors(r: &Resp) -> String {
    r.body["error"]["details"].to_string()
}

#[tokio::test]
async fn tenant_base_urls_to_private_addresses_are_refused_when_saved() {
    let s = strict().await;
    let a = s.register("ssrf@x.test", "Shop").await;
    for url in [
        "http://127.0.0.1:3001/v1",
        "http://localhost:11434/v1",
        "http://169.254.169.254/latest",
        "http://10.0.0.7/v1",
        "http://[::1]:8080/v1",
        "http://[::ffff:127.0.0.1]/v1",
        "http://[64:ff9b::a9fe:a9fe]/v1",
        "http://[2002:a00:1::1]/v1",
        "http://198.18.0.1/v1",
        "http://240.0.0.1/v1",
        "http://224.0.0.1/v1",
        "http://0.0.0.0:3001/v1",
        "http://2130706433/v1",
    ] {
        let r = s
            .put("/api/settings/ai", &a.token, json!({"baseUrl": url}))
            .await;
        r.expect_err(400, "validation_failed");
        assert!(field_errors(&r).contains("baseUrl"), "{url}: {}", r.text);
        let r = s
            .put(
                "/api/settings/embeddings",
                &a.token,
                json!({"provider": "openai", "baseUrl": url, "model": "m"}),
            )
            .await;
        r.expect_err(400, "validation_failed");
        assert!(field_errors(&r).contains("baseUrl"), "{url}: {}", r.text);
    }
    // Nothing was saved.
    let r = s.get("/api/settings/ai", &a.token).await;
    assert_eq!(r.body["baseUrl"], "https://api.openai.com/v1");
    let r = s.get("/api/settings/embeddings", &a.token).await;
    assert!(r.body["override"].is_null(), "{}", r.text);
    // A public literal (IPv6 included) is accepted.
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"baseUrl": "http://[2606:4700:4700::1111]:8080/v1"}),
    )
    .await
    .expect(200);
}

/// The operator's own URL is trusted, loopback or not; and the allowlist opens named hosts.
#[tokio::test]
async fn operator_urls_and_allowed_hosts_reach_private_addresses() {
    let fake = FakeOpenAi::start().await;
    let op = fake.base_url();
    let s = start_with(|c| {
        c.outbound_allowed_private_hosts = String::new();
        c.openai_base_url = op;
    })
    .await;
    let a = s.register("op@x.test", "Shop").await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    fake.push(Reply::text("From the operator's local model."));
    let r = playground(&s, &a.token, &agent, "Hi").await;
    r.expect(200);
    assert_eq!(r.body["reply"], "From the operator's local model.");
    // Written out by the tenant, the operator's URL stays fine.
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"baseUrl": fake.base_url()}),
    )
    .await
    .expect(200);
}

/// A setting saved while the operator allowed a host is refused at call time once the
/// allowlist no longer has it: the check runs on every call, not only when saving.
#[tokio::test]
async fn private_targets_are_refused_at_call_time_too() {
    let fake = FakeOpenAi::start().await;
    let sink = Sink::start(secret_page).await;
    let s = start().await; // test_config allows 127.0.0.1
    let a = s.register("later@x.test", "Shop").await;
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"baseUrl": fake.base_url(), "apiKey": "sk-tenant-1234567890"}),
    )
    .await
    .expect(200);
    let tool = json!({"type": "http", "name": "peek", "description": "Peek",
        "url": format!("{}/api/health", sink.base), "method": "GET"});
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot", "tools": [tool]})).await);
    let dir = s.stop().await;

    let s = start_in(dir, |c| c.outbound_allowed_private_hosts = String::new()).await;
    let token = s.login("later@x.test", "password-123").await.token;
    let r = playground(&s, &token, &agent, "Hi").await;
    r.expect_err(502, "upstream_failed");
    let msg = r.body["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("not allowed"), "{msg}");
    assert!(
        fake.recorded().is_empty(),
        "the tenant's URL was not called"
    );
    assert!(sink.hits().is_empty());
}

#[tokio::test]
async fn tools_cannot_open_private_networks_or_set_framing_headers() {
    let s = strict().await;
    let a = s.register("tools@x.test", "Shop").await;
    let tool = |extra: Value| {
        let mut t = json!({"type": "http", "name": "lookup", "description": "Look up",
            "url": "https://api.example.com/orders"});
        for (k, v) in extra.as_object().expect("object") {
            t[k] = v.clone();
        }
        json!({"name": "Bot", "tools": [t]})
    };
    let r = s
        .post(
            "/api/agents",
            Some(&a.token),
            tool(json!({"allowPrivateNetwork": true})),
        )
        .await;
    r.expect_err(400, "validation_failed");
    assert!(
        field_errors(&r).contains("allowPrivateNetwork"),
        "{}",
        r.text
    );
    for url in [
        "http://127.0.0.1:3001/api/health",
        "http://[::1]:3001/",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:3001/",
    ] {
        let r = s
            .post("/api/agents", Some(&a.token), tool(json!({"url": url})))
            .await;
        r.expect_err(400, "validation_failed");
        assert!(
            field_errors(&r).contains("tools[0].url"),
            "{url}: {}",
            r.text
        );
    }
    for h in ["Host", "content-length", "Transfer-Encoding", "Connection"] {
        let r = s
            .post(
                "/api/agents",
                Some(&a.token),
                tool(json!({"headers": {h: "x"}})),
            )
            .await;
        r.expect_err(400, "validation_failed");
        assert!(field_errors(&r).contains(h), "{h}: {}", r.text);
    }
    // `false` is still accepted (the default), and never shown as anything else.
    let r = s
        .post(
            "/api/agents",
            Some(&a.token),
            tool(json!({"allowPrivateNetwork": false})),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["tools"][0]["allowPrivateNetwork"], false);
}

/// The black-box finding: a tool pointed at the server itself read /api/health.
#[tokio::test]
async fn a_tool_cannot_read_an_internal_service() {
    let fake = FakeOpenAi::start().await;
    let sink = Sink::start(secret_page).await;
    let op = fake.base_url();
    // The tool was stored while the operator still allowed it.
    let s = start().await;
    let a = s.register("peek@x.test", "Shop").await;
    let tool = json!({"type": "http", "name": "peek", "description": "Peek",
        "url": format!("{}/internal", sink.base), "method": "GET"});
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot", "tools": [tool]})).await);
    let dir = s.stop().await;
    let s = start_in(dir, |c| {
        c.outbound_allowed_private_hosts = String::new();
        c.openai_base_url = op;
    })
    .await;
    let token = s.login("peek@x.test", "password-123").await.token;
    fake.push(Reply::tool_call("peek", "{}"));
    fake.push(Reply::text("I cannot."));
    let r = playground(&s, &token, &agent, "Read it").await;
    r.expect(200);
    assert_eq!(r.body["toolCalls"][0]["ok"], false, "{}", r.text);
    assert!(
        sink.hits().is_empty(),
        "the internal service was not called"
    );
    assert!(!r.text.contains("hunter2"));
    let result = fake.requests()[1]["messages"]
        .as_array()
        .and_then(|m| m.last().cloned())
        .expect("tool result");
    let text = result["content"].as_str().unwrap_or("");
    assert!(text.contains("not allowed"), "{text}");
}

/// IPv6 literal tool URLs resolve (they never did) and are held to the same policy.
#[tokio::test]
async fn ipv6_literal_tool_urls_work() {
    let fake = FakeOpenAi::start().await;
    let sink = Sink::start_on("[::1]:0", secret_page).await;
    let op = fake.base_url();
    let s = start_with(|c| {
        c.outbound_allowed_private_hosts = "::1".into();
        c.openai_base_url = op;
    })
    .await;
    let a = s.register("v6@x.test", "Shop").await;
    assert!(sink.base.starts_with("http://[::1]:"), "{}", sink.base);
    let tool = json!({"type": "http", "name": "peek", "description": "Peek",
        "url": format!("{}/status", sink.base), "method": "GET"});
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot", "tools": [tool]})).await);
    fake.push(Reply::tool_call("peek", "{}"));
    fake.push(Reply::text("Done."));
    let r = playground(&s, &a.token, &agent, "Look").await;
    r.expect(200);
    assert_eq!(r.body["toolCalls"][0]["ok"], true, "{}", r.text);
    assert_eq!(sink.hits().len(), 1);
}

fn redirect_to_metadata() -> Response {
    (
        axum::http::StatusCode::TEMPORARY_REDIRECT,
        [("location", "http://169.254.169.254/latest/meta-data")],
        "",
    )
        .into_response()
}

/// An allowed host that redirects to a refused one: the redirect is checked again.
#[tokio::test]
async fn redirects_are_checked_again() {
    let sink = Sink::start(redirect_to_metadata).await;
    let s = start().await; // 127.0.0.1 allowed, 169.254.169.254 not
    let a = s.register("redir@x.test", "Shop").await;
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"baseUrl": format!("{}/v1", sink.base), "apiKey": "sk-tenant-1234567890"}),
    )
    .await
    .expect(200);
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let r = playground(&s, &a.token, &agent, "Hi").await;
    r.expect_err(502, "upstream_failed");
    let msg = r.body["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("redirect") && msg.contains("not allowed"),
        "{msg}"
    );
    assert_eq!(sink.hits().len(), 1, "refused, so not retried");
}

fn html_error() -> Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        "<html><body><h1>Internal wiki</h1><p>db password: hunter2</p></body></html>",
    )
        .into_response()
}

fn long_json_error() -> Response {
    (
        axum::http::StatusCode::BAD_REQUEST,
        axum::Json(
            json!({"error": {"message": format!("first line\nsecond {}", "x".repeat(2000))}}),
        ),
    )
        .into_response()
}

/// Of an upstream's error only the status and a short, clean message come back.
#[tokio::test]
async fn upstream_error_bodies_are_not_echoed() {
    let s = start().await;
    let a = s.register("echo@x.test", "Shop").await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);

    let html = Sink::start(html_error).await;
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"baseUrl": format!("{}/v1", html.base)}),
    )
    .await
    .expect(200);
    let r = playground(&s, &a.token, &agent, "Hi").await;
    r.expect_err(502, "upstream_failed");
    let msg = r.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(msg.contains("404"), "{msg}");
    assert!(!msg.contains("hunter2") && !msg.contains("wiki"), "{msg}");

    let long = Sink::start(long_json_error).await;
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"baseUrl": format!("{}/v1", long.base)}),
    )
    .await
    .expect(200);
    let r = playground(&s, &a.token, &agent, "Hi").await;
    r.expect_err(502, "upstream_failed");
    let msg = r.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("400") && msg.contains("first line second"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert!(
        msg.chars().count() < 320,
        "{} chars: {msg}",
        msg.chars().count()
    );
}

/// A masked header keeps its stored secret only while the tool's URL keeps its origin.
#[tokio::test]
async fn a_stored_tool_secret_never_follows_a_changed_url() {
    let fake = FakeOpenAi::start().await;
    let old = Sink::start(secret_page).await;
    let new = Sink::start(secret_page).await;
    let op = fake.base_url();
    let s = start_with(|c| c.openai_base_url = op).await;
    let a = s.register("mask@x.test", "Shop").await;
    let tool = |url: &str, secret: &str| {
        json!({"type": "http", "name": "peek", "description": "Peek", "method": "GET",
            "url": url, "headers": {"X-Secret": secret}})
    };
    let agent = id(&create_agent(
        &s,
        &a,
        json!({"name": "Bot", "tools": [tool(&format!("{}/a", old.base), "s3cret-value")]}),
    )
    .await);
    let path = format!("/api/agents/{agent}");

    // Same origin, other path: the mask keeps the stored value.
    s.put(
        &path,
        &a.token,
        json!({"tools": [tool(&format!("{}/b", old.base), "********")]}),
    )
    .await
    .expect(200);
    fake.push(Reply::tool_call("peek", "{}"));
    fake.push(Reply::text("ok"));
    playground(&s, &a.token, &agent, "Go").await.expect(200);
    let hit = old.hits().pop().expect("called");
    assert_eq!(hit["x-secret"], "s3cret-value");

    // New origin with the mask: refused, naming the header; nothing changes.
    let r = s
        .put(
            &path,
            &a.token,
            json!({"tools": [tool(&format!("{}/b", new.base), "********")]}),
        )
        .await;
    r.expect_err(400, "validation_failed");
    assert!(field_errors(&r).contains("X-Secret"), "{}", r.text);
    fake.push(Reply::tool_call("peek", "{}"));
    fake.push(Reply::text("ok"));
    playground(&s, &a.token, &agent, "Go").await.expect(200);
    assert_eq!(old.hits().len(), 2, "the tool still calls the old URL");
    assert!(new.hits().is_empty());

    // Re-supplied: accepted, and the new value goes to the new URL.
    s.put(
        &path,
        &a.token,
        json!({"tools": [tool(&format!("{}/b", new.base), "other-value")]}),
    )
    .await
    .expect(200);
    fake.push(Reply::tool_call("peek", "{}"));
    fake.push(Reply::text("ok"));
    playground(&s, &a.token, &agent, "Go").await.expect(200);
    let hit = new.hits().pop().expect("called");
    assert_eq!(hit["x-secret"], "other-value");
}
