//! Agents CRUD, slugs, tools, roles and isolation.

use crate::common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn agent_crud_with_defaults_and_unique_slugs() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let r = s
        .post("/api/agents", Some(&a.token), json!({"name": "Sales Bot"}))
        .await;
    r.expect(201);
    let id = r.body["id"].as_str().expect("id").to_string();
    assert_eq!(r.body["slug"], "sales-bot");
    assert_eq!(r.body["retrievalMode"], "hybrid");
    assert_eq!(r.body["status"], "active");
    assert_eq!(
        r.body["tools"],
        json!([{"type": "search_knowledge"}, {"type": "handoff_to_human"}]),
        "both built-ins by default"
    );
    assert!(
        r.body["fallbackMessage"]
            .as_str()
            .is_some_and(|f| !f.is_empty())
    );

    // Same name again: a generated slug gets a suffix; an explicit duplicate is a 409.
    let r2 = s
        .post("/api/agents", Some(&a.token), json!({"name": "Sales Bot"}))
        .await;
    assert_eq!(r2.body["slug"], "sales-bot-2");
    s.post(
        "/api/agents",
        Some(&a.token),
        json!({"name": "X", "slug": "sales-bot"}),
    )
    .await
    .expect_err(409, "slug_taken");

    let r = s
        .put(
            &format!("/api/agents/{id}"),
            &a.token,
            json!({"temperature": 0.9, "description": "Answers sales questions", "slug": "sales", "greeting": "Hi!"}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["temperature"], 0.9);
    assert_eq!(r.body["slug"], "sales");
    assert_eq!(r.body["name"], "Sales Bot", "absent fields are kept");
    // The old slug is free again.
    s.post(
        "/api/agents",
        Some(&a.token),
        json!({"name": "Y", "slug": "sales-bot"}),
    )
    .await
    .expect(201);
    // null clears a nullable field.
    let r = s
        .put(
            &format!("/api/agents/{id}"),
            &a.token,
            json!({"description": null}),
        )
        .await;
    assert!(r.body["description"].is_null());

    let list = s.get("/api/agents?limit=2", &a.token).await;
    list.expect(200);
    assert_eq!(list.body["data"].as_array().map(Vec::len), Some(2));
    assert!(list.body["nextCursor"].is_string());

    s.delete(&format!("/api/agents/{id}"), &a.token)
        .await
        .expect(204);
    s.get(&format!("/api/agents/{id}"), &a.token)
        .await
        .expect_err(404, "agent_not_found");
}

#[tokio::test]
async fn agent_validation() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let r = s
        .post(
            "/api/agents",
            Some(&a.token),
            json!({"name": "", "temperature": 3.5, "maxTokens": 0, "topK": 100, "slug": "Bad Slug"}),
        )
        .await;
    r.expect_err(400, "validation_failed");
    let fields: Vec<String> = r.body["error"]["details"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["field"].as_str().unwrap_or("").to_string())
        .collect();
    for f in ["name", "temperature", "maxTokens", "topK", "slug"] {
        assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
    }
    s.post(
        "/api/agents",
        Some(&a.token),
        json!({"name": "x", "retrievalMode": "magic"}),
    )
    .await
    .expect_err(400, "validation_failed");
    s.post(
        "/api/agents",
        Some(&a.token),
        json!({"name": "x", "unknownField": 1}),
    )
    .await
    .expect_err(400, "validation_failed");
    s.post(
        "/api/agents",
        Some(&a.token),
        json!({"name": "x", "documentIds": ["01937c00-0000-7000-8000-000000000000"]}),
    )
    .await
    .expect_err(400, "validation_failed");
    let bad_tool = json!({"name": "x", "tools": [{"type": "http", "name": "bad name!", "description": "d", "url": "ftp://x", "method": "TRACE"}]});
    let r = s.post("/api/agents", Some(&a.token), bad_tool).await;
    r.expect_err(400, "validation_failed");
    assert!(
        r.text.contains("tools[0].url")
            && r.text.contains("tools[0].name")
            && r.text.contains("tools[0].method"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn http_tool_header_values_are_write_only() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let tool = json!({"type": "http", "name": "order_status", "description": "Look up an order",
        "parameters": {"type": "object", "properties": {"orderId": {"type": "string"}}, "required": ["orderId"]},
        "url": "https://shop.example.com/api/orders", "method": "GET",
        "headers": {"Authorization": "Bearer shop-secret-123"}});
    let r = s
        .post(
            "/api/agents",
            Some(&a.token),
            json!({"name": "x", "tools": [tool]}),
        )
        .await;
    r.expect(201);
    assert!(!r.text.contains("shop-secret-123"), "{}", r.text);
    assert_eq!(r.body["tools"][0]["headers"]["Authorization"], "********");
    let id = r.body["id"].as_str().expect("id").to_string();
    let g = s.get(&format!("/api/agents/{id}"), &a.token).await;
    assert!(!g.text.contains("shop-secret-123"));
    // Sending the mask back keeps the stored secret (checked by the tool-call tests).
    let mut tools = g.body["tools"].clone();
    tools[0]["description"] = json!("Look up an order by id");
    s.put(
        &format!("/api/agents/{id}"),
        &a.token,
        json!({"tools": tools}),
    )
    .await
    .expect(200);
    let dir = s.stop().await;
    let raw = std::fs::read(dir.path().join("aigentable.redb")).expect("read store");
    assert!(
        !raw.windows(b"shop-secret-123".len())
            .any(|w| w == b"shop-secret-123"),
        "the header secret is stored in clear text"
    );
}

#[tokio::test]
async fn tenant_users_read_agents_but_cannot_edit_and_tenants_are_isolated() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let b = s.register("b@x.test", "B").await;
    let user = s
        .invite_and_accept(&a, &a.tenant_id, "u@x.test", "TENANT_USER")
        .await;
    let r = s
        .post("/api/agents", Some(&a.token), json!({"name": "Bot"}))
        .await;
    let id = r.body["id"].as_str().expect("id").to_string();

    s.get(&format!("/api/agents/{id}"), &user.token)
        .await
        .expect(200);
    s.get("/api/agents", &user.token).await.expect(200);
    s.post("/api/agents", Some(&user.token), json!({"name": "N"}))
        .await
        .expect_err(403, "forbidden");
    s.put(
        &format!("/api/agents/{id}"),
        &user.token,
        json!({"name": "N"}),
    )
    .await
    .expect_err(403, "forbidden");
    s.delete(&format!("/api/agents/{id}"), &user.token)
        .await
        .expect_err(403, "forbidden");

    for (m, path, body) in [
        (Method::GET, format!("/api/agents/{id}"), None),
        (
            Method::PUT,
            format!("/api/agents/{id}"),
            Some(json!({"name": "pwned"})),
        ),
        (Method::DELETE, format!("/api/agents/{id}"), None),
    ] {
        let r = s.req(m.clone(), &path, Some(&b.token), body).await;
        r.expect_err(404, "agent_not_found");
    }
    assert_eq!(
        s.get("/api/agents", &b.token).await.body["data"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    // Same slug in another tenant is fine.
    s.post("/api/agents", Some(&b.token), json!({"name": "Bot"}))
        .await
        .expect(201);
}

#[tokio::test]
async fn ai_settings_key_is_write_only_and_sealed() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let user = s
        .invite_and_accept(&a, &a.tenant_id, "u@x.test", "TENANT_USER")
        .await;
    let r = s.get("/api/settings/ai", &a.token).await;
    r.expect(200);
    assert_eq!(r.body["baseUrl"], "https://api.openai.com/v1");
    assert_eq!(r.body["apiKeySet"], false);
    let r = s
        .put(
            "/api/settings/ai",
            &a.token,
            json!({"baseUrl": "http://127.0.0.1:11434/v1/", "apiKey": "sk-tenant-secret-9876", "model": "llama3.1"}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["baseUrl"], "http://127.0.0.1:11434/v1");
    assert_eq!(r.body["model"], "llama3.1");
    assert_eq!(r.body["apiKeySet"], true);
    assert_eq!(r.body["apiKeyHint"], "…9876");
    assert!(!r.text.contains("sk-tenant-secret"));
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"baseUrl": "not a url"}),
    )
    .await
    .expect_err(400, "validation_failed");
    s.get("/api/settings/ai", &user.token)
        .await
        .expect_err(403, "forbidden");
    s.put("/api/settings/ai", &user.token, json!({"model": "x"}))
        .await
        .expect_err(403, "forbidden");
    // null returns to the default.
    let r = s
        .put("/api/settings/ai", &a.token, json!({"model": null}))
        .await;
    assert_eq!(r.body["model"], "gpt-4o-mini");
    let dir = s.stop().await;
    let raw = std::fs::read(dir.path().join("aigentable.redb")).expect("read");
    assert!(
        !raw.windows(21).any(|w| w == b"sk-tenant-secret-9876"),
        "API key stored in clear"
    );
}
