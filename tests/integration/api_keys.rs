//! API keys: shown once, hashed at rest, usable as Bearer or X-API-Key.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn create_use_list_revoke() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let r = s
        .post(
            "/api/api-keys",
            Some(&a.token),
            json!({"name": "Zapier", "role": "TENANT_USER"}),
        )
        .await;
    r.expect(201);
    let secret = r.body["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("ak_"));
    assert!(
        secret.len() >= 3 + 43,
        "32 random bytes, url-safe: {secret}"
    );
    assert!(
        secret[3..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    let id = r.body["id"].as_str().expect("id").to_string();
    assert_eq!(r.body["prefix"].as_str(), Some(&secret[..11]));
    assert!(r.body["lastUsedAt"].is_null());

    // Bearer and X-API-Key both authenticate, with the key's role.
    let me = s.get("/api/auth/me", &secret).await;
    me.expect(200);
    assert_eq!(me.body["role"], "TENANT_USER");
    assert_eq!(me.body["via"], "apiKey");
    assert_eq!(me.body["tenant"]["id"].as_str(), Some(a.tenant_id.as_str()));
    let r2 = send(
        s.http
            .get(format!("{}/api/auth/me", s.base))
            .header("x-api-key", &secret),
    )
    .await;
    r2.expect(200);
    // The key's role limits it: a TENANT_USER key cannot manage keys.
    s.get("/api/api-keys", &secret)
        .await
        .expect_err(403, "forbidden");

    let list = s.get("/api/api-keys", &a.token).await;
    list.expect(200);
    let k = &list.body["data"][0];
    assert_eq!(k["name"], "Zapier");
    assert!(
        k["lastUsedAt"].is_string(),
        "lastUsedAt is recorded: {}",
        list.text
    );
    assert!(
        !list.text.contains(&secret[11..]),
        "the secret never comes back"
    );
    assert!(k.get("secret").is_none() && k.get("keyHash").is_none());

    s.delete(&format!("/api/api-keys/{id}"), &a.token)
        .await
        .expect(204);
    s.get("/api/auth/me", &secret)
        .await
        .expect_err(401, "invalid_api_key");
    s.delete(&format!("/api/api-keys/{id}"), &a.token)
        .await
        .expect_err(404, "api_key_not_found");
    s.get("/api/auth/me", "ak_not-a-real-key")
        .await
        .expect_err(401, "invalid_api_key");
}

#[tokio::test]
async fn keys_cannot_exceed_the_creator_and_can_expire() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    s.post(
        "/api/api-keys",
        Some(&a.token),
        json!({"name": "k", "role": "PLATFORM_ADMIN"}),
    )
    .await
    .expect_err(400, "validation_failed");
    s.post(
        "/api/api-keys",
        Some(&a.token),
        json!({"name": "k", "expiresAt": "2001-01-01T00:00:00Z"}),
    )
    .await
    .expect_err(400, "validation_failed");
    s.post(
        "/api/api-keys",
        Some(&a.token),
        json!({"name": "k", "expiresAt": "tomorrow"}),
    )
    .await
    .expect_err(400, "validation_failed");
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(60);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .expect("fmt");
    let r = s
        .post(
            "/api/api-keys",
            Some(&a.token),
            json!({"name": "short-lived", "expiresAt": soon}),
        )
        .await;
    r.expect(201);
    assert_eq!(
        r.body["role"], "TENANT_ADMIN",
        "defaults to the creator's role"
    );
    let secret = r.body["secret"].as_str().expect("secret").to_string();
    s.get("/api/auth/me", &secret).await.expect(200);
    // Past the expiry by the server's clock, without waiting for it.
    s.clock.advance(std::time::Duration::from_secs(61));
    s.get("/api/auth/me", &secret)
        .await
        .expect_err(401, "invalid_api_key");
}

#[tokio::test]
async fn key_listing_pages() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    for i in 0..5 {
        s.post(
            "/api/api-keys",
            Some(&a.token),
            json!({"name": format!("k{i}")}),
        )
        .await
        .expect(201);
    }
    let p1 = s.get("/api/api-keys?limit=3", &a.token).await;
    assert_eq!(p1.body["data"].as_array().map(Vec::len), Some(3));
    let c = p1.body["nextCursor"].as_str().expect("cursor");
    let p2 = s
        .get(&format!("/api/api-keys?limit=3&cursor={c}"), &a.token)
        .await;
    let names: Vec<_> = p2.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|k| k["name"].clone())
        .collect();
    assert_eq!(names, [json!("k3"), json!("k4")]);
    assert!(p2.body["nextCursor"].is_null());
}
