//! Tenancy and roles by construction: API keys follow their creator's membership and role,
//! and platform admins act in another tenant only through `X-Tenant-Id`.

use crate::common::*;
use serde_json::json;

/// Found from outside: a removed admin's key still created agents and minted keys.
#[tokio::test]
async fn an_api_key_follows_its_creators_role_and_membership() {
    let s = start().await;
    let owner = s.register("owner@x.test", "X").await;
    let tid = owner.tenant_id.clone();
    let b = s
        .invite_and_accept(&owner, &tid, "b@x.test", "TENANT_ADMIN")
        .await;
    let r = s
        .post(
            "/api/api-keys",
            Some(&b.token),
            json!({"name": "b's key", "role": "TENANT_ADMIN"}),
        )
        .await;
    r.expect(201);
    let key = r.body["secret"].as_str().expect("secret").to_string();
    s.post("/api/agents", Some(&key), json!({"name": "Before"}))
        .await
        .expect(201);

    // Demote B: the key acts as a TENANT_USER from the next request on.
    s.put(
        &format!("/api/tenants/{tid}/users/{}", b.user_id),
        &owner.token,
        json!({"role": "TENANT_USER"}),
    )
    .await
    .expect(200);
    let me = s.get("/api/auth/me", &key).await;
    me.expect(200);
    assert_eq!(me.body["role"], "TENANT_USER");
    s.post("/api/agents", Some(&key), json!({"name": "After"}))
        .await
        .expect_err(403, "forbidden");
    s.post(
        "/api/api-keys",
        Some(&key),
        json!({"name": "escape", "role": "TENANT_ADMIN"}),
    )
    .await
    .expect_err(403, "forbidden");
    // Reading is still what a TENANT_USER may do.
    s.get("/api/agents", &key).await.expect(200);

    // Promoted back, the key is an admin key again (never more than its stored role).
    s.put(
        &format!("/api/tenants/{tid}/users/{}", b.user_id),
        &owner.token,
        json!({"role": "TENANT_ADMIN"}),
    )
    .await
    .expect(200);
    s.post("/api/agents", Some(&key), json!({"name": "Again"}))
        .await
        .expect(201);

    // Remove B from the tenant: the key dies with the membership.
    s.delete(
        &format!("/api/tenants/{tid}/users/{}", b.user_id),
        &owner.token,
    )
    .await
    .expect(204);
    s.get("/api/auth/me", &key)
        .await
        .expect_err(401, "invalid_api_key");
    s.post("/api/agents", Some(&key), json!({"name": "Ghost"}))
        .await
        .expect_err(401, "invalid_api_key");
    s.post(
        "/api/api-keys",
        Some(&key),
        json!({"name": "escape", "role": "TENANT_ADMIN"}),
    )
    .await
    .expect_err(401, "invalid_api_key");
}

/// A key minted by a key belongs to the same person, and dies with them too.
#[tokio::test]
async fn a_key_minted_by_a_key_dies_with_the_same_creator() {
    let s = start().await;
    let owner = s.register("owner@y.test", "Y").await;
    let tid = owner.tenant_id.clone();
    let b = s
        .invite_and_accept(&owner, &tid, "b@y.test", "TENANT_ADMIN")
        .await;
    let first = s
        .post(
            "/api/api-keys",
            Some(&b.token),
            json!({"name": "first", "role": "TENANT_ADMIN"}),
        )
        .await;
    first.expect(201);
    let first = first.body["secret"].as_str().expect("secret").to_string();
    let second = s
        .post(
            "/api/api-keys",
            Some(&first),
            json!({"name": "second", "role": "TENANT_ADMIN"}),
        )
        .await;
    second.expect(201);
    assert_eq!(second.body["createdBy"].as_str(), Some(b.user_id.as_str()));
    let second = second.body["secret"].as_str().expect("secret").to_string();
    s.delete(
        &format!("/api/tenants/{tid}/users/{}", b.user_id),
        &owner.token,
    )
    .await
    .expect(204);
    for k in [&first, &second] {
        s.get("/api/agents", k)
            .await
            .expect_err(401, "invalid_api_key");
    }
    // The owner's own keys are unaffected.
    let own = s
        .post("/api/api-keys", Some(&owner.token), json!({"name": "own"}))
        .await;
    own.expect(201);
    s.get("/api/agents", own.body["secret"].as_str().expect("secret"))
        .await
        .expect(200);
}
