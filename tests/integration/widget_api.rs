//! The web widget channel and its visitors over REST: channel CRUD and roles, origins,
//! identity verification, visitor isolation, ratings and rate limits.

use crate::common::*;
use reqwest::Method;
use serde_json::{Value, json};

const SITE: &str = "https://shop.example.com";

/// A tenant admin with an agent.
async fn tenant(s: &Server, email: &str) -> (Account, String) {
    let a = s.register(email, "Shop").await;
    let r = s
        .post("/api/agents", Some(&a.token), json!({"name": "Ava"}))
        .await;
    r.expect(201);
    (a, r.body["id"].as_str().expect("agent id").to_string())
}

async fn web_channel(s: &Server, a: &Account, agent: &str, settings: Value) -> Value {
    let r = s
        .post(
            "/api/channels",
            Some(&a.token),
            json!({"type": "web", "name": "Website", "agentId": agent, "settings": settings}),
        )
        .await;
    r.expect(201);
    r.body.clone()
}

#[tokio::test]
async fn web_channels_are_created_read_updated_and_deleted_by_admins() {
    let s = start().await;
    let (a, agent) = tenant(&s, "owner@shop.test").await;
    let ch = web_channel(
        &s,
        &a,
        &agent,
        json!({"allowedOrigins": ["https://Shop.Example.com/", "https://*.brand.test"],
               "greeting": "Hi! How can we help?",
               "theme": {"color": "#FF0000", "title": "Shop help", "position": "bottom-left"},
               "preChat": {"email": "required"}}),
    )
    .await;
    let id = ch["id"].as_str().expect("id").to_string();
    assert_eq!(ch["type"], "web");
    assert_eq!(ch["status"], "active");
    assert_eq!(ch["agentId"], agent.as_str());
    let key = ch["settings"]["widgetKey"].as_str().expect("widget key");
    assert!(key.starts_with("wk_") && key.len() > 20);
    assert_eq!(
        ch["settings"]["allowedOrigins"],
        json!(["https://shop.example.com", "https://*.brand.test"]),
        "origins are normalised"
    );
    assert_eq!(ch["settings"]["theme"]["color"], "#ff0000");
    assert_eq!(ch["settings"]["theme"]["position"], "bottom-left");
    assert_eq!(
        ch["settings"]["preChat"],
        json!({"name": "off", "email": "required"})
    );
    assert_eq!(ch["settings"]["identity"], json!({"mode": "off"}));
    assert_eq!(ch["credentials"], json!({"identitySecret": "unset"}));
    // The widget's public config.
    let cfg = s
        .req(
            Method::GET,
            &format!("/api/widget/{key}/config"),
            None,
            None,
        )
        .await;
    cfg.expect(200);
    assert_eq!(cfg.body["title"], "Shop help");
    assert_eq!(cfg.body["position"], "bottom-left");
    assert_eq!(cfg.body["preChat"]["email"], "required");
    assert!(ch.get("identitySecret").is_none());
    let embed = ch["embedCode"].as_str().expect("embed code");
    assert!(
        embed.contains(&format!("{}/widget.js", s.base)) && embed.contains(key),
        "{embed}"
    );

    // Turning identity verification on makes a secret, shown once.
    let r = s
        .put(
            &format!("/api/channels/{id}"),
            &a.token,
            json!({"settings": {"identity": {"mode": "required"}, "theme": {"title": null}}}),
        )
        .await;
    r.expect(200);
    let secret = r.body["identitySecret"]
        .as_str()
        .expect("secret once")
        .to_string();
    assert!(secret.len() >= 32);
    assert_eq!(r.body["credentials"]["identitySecret"], "set");
    assert_eq!(r.body["settings"]["theme"]["title"], Value::Null);
    assert_eq!(r.body["settings"]["theme"]["color"], "#ff0000", "kept");
    assert_eq!(
        r.body["settings"]["widgetKey"], key,
        "the key never changes"
    );
    let got = s.get(&format!("/api/channels/{id}"), &a.token).await;
    got.expect(200);
    assert!(got.body.get("identitySecret").is_none());
    assert!(
        !got.text.contains(&secret),
        "the secret is never shown again"
    );
    // Rotating answers a new one.
    let r = s
        .post(
            &format!("/api/channels/{id}/identity-secret"),
            Some(&a.token),
            json!({}),
        )
        .await;
    r.expect(200);
    let rotated = r.body["identitySecret"].as_str().expect("rotated");
    assert_ne!(rotated, secret);
    // The secret is sealed at rest: not in the store file in clear.
    let raw = std::fs::read(s.data_dir().join("aigentable.redb")).expect("store file");
    assert!(!raw.windows(rotated.len()).any(|w| w == rotated.as_bytes()));

    let list = s.get("/api/channels?type=web", &a.token).await;
    list.expect(200);
    assert_eq!(list.body["data"].as_array().map(Vec::len), Some(1));
    s.get("/api/channels?type=fax", &a.token)
        .await
        .expect_err(400, "invalid_query");

    // Bad settings name the field.
    let r = s
        .put(
            &format!("/api/channels/{id}"),
            &a.token,
            json!({"settings": {"allowedOrigins": ["https://ok.test", "https://x.test/path"], "theme": {"color": "red"}}}),
        )
        .await;
    r.expect_err(400, "validation_failed");
    let fields: Vec<&str> = r.body["error"]["details"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        ["settings.allowedOrigins[1]", "settings.theme.color"]
    );
    s.put(
        &format!("/api/channels/{id}"),
        &a.token,
        json!({"settings": {"colour": "#fff"}}),
    )
    .await
    .expect_err(400, "validation_failed");
    s.put(
        &format!("/api/channels/{id}"),
        &a.token,
        json!({"type": "telegram"}),
    )
    .await
    .expect_err(400, "validation_failed");

    s.delete(&format!("/api/channels/{id}"), &a.token)
        .await
        .expect(204);
    s.get(&format!("/api/channels/{id}"), &a.token)
        .await
        .expect_err(404, "channel_not_found");
    s.req(
        Method::GET,
        &format!("/api/widget/{key}/config"),
        None,
        None,
    )
    .await
    .expect_err(404, "widget_not_found");
}

#[tokio::test]
async fn other_types_roles_and_foreign_channels() {
    let s = start().await;
    let (a, agent) = tenant(&s, "owner@shop.test").await;
    // Meta channels need their credentials (tests/integration/channels_meta.rs has them).
    for t in ["whatsapp", "messenger", "instagram"] {
        s.post(
            "/api/channels",
            Some(&a.token),
            json!({"type": t, "name": "x", "agentId": agent}),
        )
        .await
        .expect_err(400, "validation_failed");
    }
    s.post(
        "/api/channels",
        Some(&a.token),
        json!({"type": "fax", "name": "x", "agentId": agent}),
    )
    .await
    .expect_err(400, "validation_failed");
    s.post(
        "/api/channels",
        Some(&a.token),
        json!({"type": "web", "name": "x"}),
    )
    .await
    .expect_err(400, "validation_failed");
    s.post(
        "/api/channels",
        Some(&a.token),
        json!({"type": "web", "name": "x", "agentId": "0190d6f5-8c4e-7cc4-9d5e-3b7c3f0b2a11"}),
    )
    .await
    .expect_err(404, "agent_not_found");
    let ch = web_channel(&s, &a, &agent, json!({"allowedOrigins": [SITE]})).await;
    let id = ch["id"].as_str().expect("id");

    // A tenant user reads, never manages.
    let user = s
        .invite_and_accept(&a, &a.tenant_id, "agent@shop.test", "TENANT_USER")
        .await;
    let r = s.get(&format!("/api/channels/{id}"), &user.token).await;
    r.expect(200);
    assert_eq!(r.body["settings"]["widgetKey"], ch["settings"]["widgetKey"]);
    s.get("/api/channels", &user.token).await.expect(200);
    s.post(
        "/api/channels",
        Some(&user.token),
        json!({"type": "web", "name": "mine", "agentId": agent}),
    )
    .await
    .expect_err(403, "forbidden");
    s.put(
        &format!("/api/channels/{id}"),
        &user.token,
        json!({"name": "renamed"}),
    )
    .await
    .expect_err(403, "forbidden");
    s.delete(&format!("/api/channels/{id}"), &user.token)
        .await
        .expect_err(403, "forbidden");
    s.post(
        &format!("/api/channels/{id}/identity-secret"),
        Some(&user.token),
        json!({}),
    )
    .await
    .expect_err(403, "forbidden");

    // Another tenant: the channel does not exist for it.
    let (b, _) = tenant(&s, "other@else.test").await;
    s.get(&format!("/api/channels/{id}"), &b.token)
        .await
        .expect_err(404, "channel_not_found");
    s.put(
        &format!("/api/channels/{id}"),
        &b.token,
        json!({"name": "mine"}),
    )
    .await
    .expect_err(404, "channel_not_found");
    s.delete(&format!("/api/channels/{id}"), &b.token)
        .await
        .expect_err(404, "channel_not_found");
    s.post(
        &format!("/api/channels/{id}/identity-secret"),
        Some(&b.token),
        json!({}),
    )
    .await
    .expect_err(404, "channel_not_found");
    let list = s.get("/api/channels", &b.token).await;
    assert_eq!(list.body["data"], json!([]));
    s.get("/api/channels/not-an-id", &a.token)
        .await
        .expect_err(400, "invalid_id");
}

/// A widget for `SITE` whose agent stays quiet (inactive: no model is called), and its key.
async fn quiet_widget(s: &Server, settings: Value) -> (Account, String, String) {
    let a = s.register("owner@shop.test", "Shop").await;
    let r = s
        .post(
            "/api/agents",
            Some(&a.token),
            json!({"name": "Ava", "status": "inactive"}),
        )
        .await;
    r.expect(201);
    let agent = r.body["id"].as_str().expect("agent id").to_string();
    let ch = web_channel(s, &a, &agent, settings).await;
    let key = ch["settings"]["widgetKey"]
        .as_str()
        .expect("key")
        .to_string();
    let id = ch["id"].as_str().expect("id").to_string();
    (a, key, id)
}

/// A widget request from a page on `origin`, with a visitor token when given.
async fn widget(
    s: &Server,
    method: Method,
    path: &str,
    origin: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut rb = s
        .http
        .request(method, format!("{}{path}", s.base))
        .header("Origin", origin);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    send(rb).await
}

async fn new_visitor(s: &Server, key: &str, body: Value) -> (String, String) {
    let r = widget(
        s,
        Method::POST,
        &format!("/api/widget/{key}/visitors"),
        SITE,
        None,
        Some(body),
    )
    .await;
    r.expect(201);
    (
        r.body["visitorId"].as_str().expect("visitorId").to_string(),
        r.body["visitorToken"]
            .as_str()
            .expect("visitorToken")
            .to_string(),
    )
}

#[tokio::test]
async fn only_allowed_origins_reach_a_widget_and_cors_says_so() {
    let s = start().await;
    let (_a, key, _) =
        quiet_widget(&s, json!({"allowedOrigins": [SITE], "greeting": "Hello!"})).await;
    let path = format!("/api/widget/{key}/config");
    let r = widget(&s, Method::GET, &path, SITE, None, None).await;
    r.expect(200);
    assert_eq!(r.body["greeting"], "Hello!");
    assert_eq!(r.body["agentName"], "Ava");
    assert_eq!(r.body["identityMode"], "off");
    assert!(
        r.body.get("allowedOrigins").is_none(),
        "origins are not public"
    );
    assert_eq!(r.headers["access-control-allow-origin"], SITE);

    let evil = "https://evil.example.net";
    let r = widget(&s, Method::GET, &path, evil, None, None).await;
    r.expect_err(403, "origin_not_allowed");
    assert!(!r.headers.contains_key("access-control-allow-origin"));
    widget(
        &s,
        Method::POST,
        &format!("/api/widget/{key}/visitors"),
        evil,
        None,
        Some(json!({})),
    )
    .await
    .expect_err(403, "origin_not_allowed");

    // Preflights: answered for the widget's origins only.
    let pre = |origin: &'static str| {
        s.http
            .request(
                Method::OPTIONS,
                format!("{}/api/widget/{key}/messages", s.base),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type",
            )
    };
    let ok = send(pre(SITE)).await;
    assert_eq!(ok.headers["access-control-allow-origin"], SITE);
    let no = send(pre("https://evil.example.net")).await;
    assert!(
        !no.headers.contains_key("access-control-allow-origin"),
        "{:?}",
        no.headers
    );
    // Another widget's origins do not open this one.
    let other = send(
        s.http
            .request(
                Method::OPTIONS,
                format!("{}/api/widget/wk_unknown/config", s.base),
            )
            .header("Origin", SITE)
            .header("Access-Control-Request-Method", "GET"),
    )
    .await;
    assert!(!other.headers.contains_key("access-control-allow-origin"));

    // The server's own origin (the preview page) always may.
    widget(&s, Method::GET, &path, &s.base, None, None)
        .await
        .expect(200);
    widget(
        &s,
        Method::GET,
        "/api/widget/wk_nope/config",
        SITE,
        None,
        None,
    )
    .await
    .expect_err(404, "widget_not_found");
}

#[tokio::test]
async fn identity_required_refuses_unsigned_and_forged_visitors() {
    let s = start().await;
    let a = s.register("owner@shop.test", "Shop").await;
    let agent = s
        .post(
            "/api/agents",
            Some(&a.token),
            json!({"name": "Ava", "status": "inactive"}),
        )
        .await
        .body["id"]
        .as_str()
        .expect("agent")
        .to_string();
    let r = s
        .post(
            "/api/channels",
            Some(&a.token),
            json!({"type": "web", "name": "W", "agentId": agent,
                   "settings": {"allowedOrigins": [SITE], "identity": {"mode": "required"}}}),
        )
        .await;
    r.expect(201);
    let secret = r.body["identitySecret"]
        .as_str()
        .expect("secret")
        .to_string();
    let key = r.body["settings"]["widgetKey"]
        .as_str()
        .expect("key")
        .to_string();
    let path = format!("/api/widget/{key}/visitors");
    let sign = |ext: &str| {
        use hmac::{Hmac, KeyInit, Mac};
        let mut m =
            <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("key");
        m.update(ext.as_bytes());
        hex::encode(m.finalize().into_bytes())
    };
    widget(&s, Method::POST, &path, SITE, None, Some(json!({})))
        .await
        .expect_err(401, "identity_required");
    widget(
        &s,
        Method::POST,
        &path,
        SITE,
        None,
        Some(json!({"identity": {"externalId": "user-1", "hash": sign("user-2")}})),
    )
    .await
    .expect_err(401, "identity_invalid");
    widget(
        &s,
        Method::POST,
        &path,
        SITE,
        None,
        Some(json!({"identity": {"externalId": "user-1", "hash": "00".repeat(32)}})),
    )
    .await
    .expect_err(401, "identity_invalid");
    let body = json!({"name": "Ann", "identity": {"externalId": "user-1", "hash": sign("user-1")}});
    let (id1, tok1) = new_visitor(&s, &key, body.clone()).await;
    // Another browser of the same person: the same visitor, its own token.
    let (id2, tok2) = new_visitor(&s, &key, body).await;
    assert_eq!(id1, id2);
    assert_ne!(tok1, tok2);
    // The verified visitor writes; the conversation's customer is the verified id.
    let r = widget(
        &s,
        Method::POST,
        &format!("/api/widget/{key}/messages"),
        SITE,
        Some(&tok2),
        Some(json!({"content": "hello", "clientId": "c-1"})),
    )
    .await;
    r.expect(201);
    assert_eq!(r.body["conversation"]["customer"]["externalId"], "user-1");
    assert_eq!(r.body["conversation"]["customer"]["name"], "Ann");
    // The first browser sees the same conversation.
    let r = widget(
        &s,
        Method::GET,
        &format!("/api/widget/{key}/conversation"),
        SITE,
        Some(&tok1),
        None,
    )
    .await;
    r.expect(200);
    assert_eq!(r.body["messages"][0]["content"], "hello");
    widget(
        &s,
        Method::GET,
        &format!("/api/widget/{key}/conversation"),
        SITE,
        Some("vt_forged"),
        None,
    )
    .await
    .expect_err(401, "unauthorized");
    widget(
        &s,
        Method::GET,
        &format!("/api/widget/{key}/conversation"),
        SITE,
        None,
        None,
    )
    .await
    .expect_err(401, "unauthorized");
}

#[tokio::test]
async fn a_visitor_token_never_reads_another_visitors_conversation() {
    let s = start().await;
    let (a, key, channel) = quiet_widget(&s, json!({"allowedOrigins": [SITE]})).await;
    let (_, ann) = new_visitor(&s, &key, json!({"name": "Ann"})).await;
    let (_, bob) = new_visitor(&s, &key, json!({"name": "Bob"})).await;
    let msgs = format!("/api/widget/{key}/messages");
    let conv_path = format!("/api/widget/{key}/conversation");
    // Nothing yet.
    let r = widget(&s, Method::GET, &conv_path, SITE, Some(&ann), None).await;
    r.expect(200);
    assert_eq!(r.body["conversation"], Value::Null);
    let r = widget(
        &s,
        Method::POST,
        &msgs,
        SITE,
        Some(&ann),
        Some(json!({"content": "Ann's secret order 1234", "clientId": "a-1"})),
    )
    .await;
    r.expect(201);
    let ann_conv = r.body["conversation"]["id"]
        .as_str()
        .expect("conv")
        .to_string();
    assert_eq!(r.body["conversation"]["channelId"], channel.as_str());
    // Resending with the same clientId stores nothing new.
    let again = widget(
        &s,
        Method::POST,
        &msgs,
        SITE,
        Some(&ann),
        Some(json!({"content": "Ann's secret order 1234", "clientId": "a-1"})),
    )
    .await;
    again.expect(201);
    assert_eq!(again.body["message"]["id"], r.body["message"]["id"]);
    let r = widget(
        &s,
        Method::POST,
        &msgs,
        SITE,
        Some(&bob),
        Some(json!({"content": "hi"})),
    )
    .await;
    r.expect(201);
    let bob_conv = r.body["conversation"]["id"]
        .as_str()
        .expect("conv")
        .to_string();
    assert_ne!(ann_conv, bob_conv);

    // Bob's token only ever shows Bob's conversation.
    let r = widget(&s, Method::GET, &conv_path, SITE, Some(&bob), None).await;
    r.expect(200);
    assert_eq!(r.body["conversation"]["id"], bob_conv.as_str());
    assert!(!r.text.contains("1234"));
    widget(
        &s,
        Method::POST,
        &msgs,
        SITE,
        Some(&bob),
        Some(json!({"content": "x", "conversationId": ann_conv})),
    )
    .await
    .expect_err(404, "conversation_not_found");
    s.put(
        &format!("/api/conversations/{ann_conv}/close"),
        &a.token,
        json!({}),
    )
    .await
    .expect(200);
    widget(
        &s,
        Method::POST,
        &format!("/api/widget/{key}/conversations/{ann_conv}/rating"),
        SITE,
        Some(&bob),
        Some(json!({"rating": 1})),
    )
    .await
    .expect_err(404, "conversation_not_found");
    // A visitor token is not a staff credential.
    s.get(&format!("/api/conversations/{ann_conv}"), &ann)
        .await
        .expect_err(401, "invalid_token");
    let r = s
        .get(&format!("/api/conversations?channelId={channel}"), &a.token)
        .await;
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn ratings_are_validated_stored_once_closed_and_shown_to_the_team() {
    let s = start().await;
    let (a, key, _) = quiet_widget(&s, json!({"allowedOrigins": [SITE]})).await;
    let (_, tok) = new_visitor(&s, &key, json!({})).await;
    let r = widget(
        &s,
        Method::POST,
        &format!("/api/widget/{key}/messages"),
        SITE,
        Some(&tok),
        Some(json!({"content": "thanks"})),
    )
    .await;
    let conv = r.body["conversation"]["id"]
        .as_str()
        .expect("conv")
        .to_string();
    let rate = format!("/api/widget/{key}/conversations/{conv}/rating");
    widget(
        &s,
        Method::POST,
        &rate,
        SITE,
        Some(&tok),
        Some(json!({"rating": 5})),
    )
    .await
    .expect_err(409, "conversation_not_closed");
    s.put(
        &format!("/api/conversations/{conv}/close"),
        &a.token,
        json!({}),
    )
    .await
    .expect(200);
    for bad in [
        json!({"rating": 0}),
        json!({"rating": 6}),
        json!({"rating": "5"}),
        json!({}),
        json!({"rating": 3, "comment": "x".repeat(1001)}),
    ] {
        widget(&s, Method::POST, &rate, SITE, Some(&tok), Some(bad))
            .await
            .expect_err(400, "validation_failed");
    }
    let r = widget(
        &s,
        Method::POST,
        &rate,
        SITE,
        Some(&tok),
        Some(json!({"rating": 4, "comment": "Quick and kind"})),
    )
    .await;
    r.expect(200);
    assert_eq!(r.body["rating"]["rating"], 4);
    let staff = s.get(&format!("/api/conversations/{conv}"), &a.token).await;
    assert_eq!(staff.body["rating"]["rating"], 4);
    assert_eq!(staff.body["rating"]["comment"], "Quick and kind");
    // After close, the next message opens a new conversation.
    let r = widget(
        &s,
        Method::POST,
        &format!("/api/widget/{key}/messages"),
        SITE,
        Some(&tok),
        Some(json!({"content": "me again"})),
    )
    .await;
    r.expect(201);
    assert_ne!(r.body["conversation"]["id"], conv.as_str());
}

#[tokio::test]
async fn visitors_are_rate_limited() {
    let s = start_with(|c| {
        c.rate_limit_visitor_per_min = 3;
        c.rate_limit_widget_ip_per_min = 2;
    })
    .await;
    let (_a, key, _) = quiet_widget(&s, json!({"allowedOrigins": [SITE]})).await;
    let (_, tok) = new_visitor(&s, &key, json!({})).await;
    let (_, other) = new_visitor(&s, &key, json!({})).await;
    // A third new visitor from the same address is refused.
    let r = widget(
        &s,
        Method::POST,
        &format!("/api/widget/{key}/visitors"),
        SITE,
        None,
        Some(json!({})),
    )
    .await;
    r.expect_err(429, "rate_limited");
    assert!(r.headers.contains_key("retry-after"));
    // Per visitor: the start counted once; two more requests pass, then 429.
    let path = format!("/api/widget/{key}/conversation");
    widget(&s, Method::GET, &path, SITE, Some(&tok), None)
        .await
        .expect(200);
    widget(&s, Method::GET, &path, SITE, Some(&tok), None)
        .await
        .expect(200);
    widget(&s, Method::GET, &path, SITE, Some(&tok), None)
        .await
        .expect_err(429, "rate_limited");
    // Another visitor is not held back by the first one.
    widget(&s, Method::GET, &path, SITE, Some(&other), None)
        .await
        .expect(200);
}
