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
}

#[tokio::test]
async fn other_types_roles_and_foreign_channels() {
    let s = start().await;
    let (a, agent) = tenant(&s, "owner@shop.test").await;
    for t in ["whatsapp", "messenger", "instagram", "telegram"] {
        s.post(
            "/api/channels",
            Some(&a.token),
            json!({"type": t, "name": "x", "agentId": agent, "settings": {"pageId": "1"}}),
        )
        .await
        .expect_err(400, "unsupported_channel_type");
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
    let _ = Method::GET;
}
