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

/// A request as `token`, acting in `tenant` through `X-Tenant-Id`.
async fn as_in(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    token: &str,
    tenant: &str,
    body: Option<serde_json::Value>,
) -> Resp {
    let mut rb = s
        .http
        .request(method, format!("{}{}", s.base, path))
        .bearer_auth(token)
        .header("x-tenant-id", tenant);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    send(rb).await
}

/// The README says platform admins manage agents and documents in any tenant: they pick it
/// with `X-Tenant-Id`.
#[tokio::test]
async fn a_platform_admin_acts_in_a_tenant_with_x_tenant_id() {
    use reqwest::Method;
    let s = start().await;
    let root = s.root().await;
    let a = s.register("a@acme.test", "Acme").await;
    let b = s.register("b@beta.test", "Beta").await;

    // Create an agent in Acme as the platform admin; Acme's admin sees it, Beta does not.
    let r = as_in(
        &s,
        Method::POST,
        "/api/agents",
        &root.token,
        &a.tenant_id,
        Some(json!({"name": "Made by the operator"})),
    )
    .await;
    r.expect(201);
    let agent = r.body["id"].as_str().expect("id").to_string();
    let mine = s.get("/api/agents", &a.token).await;
    mine.expect(200);
    assert!(mine.text.contains(&agent), "{}", mine.text);
    s.get(&format!("/api/agents/{agent}"), &b.token)
        .await
        .expect_err(404, "agent_not_found");
    // Without the header the platform admin is in its own scope, where the agent is not.
    s.get(&format!("/api/agents/{agent}"), &root.token)
        .await
        .expect_err(404, "agent_not_found");
    as_in(
        &s,
        Method::GET,
        &format!("/api/agents/{agent}"),
        &root.token,
        &a.tenant_id,
        None,
    )
    .await
    .expect(200);

    // Documents too: upload into Acme, list them there.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"Opening hours: 9 to 5.".to_vec())
            .file_name("hours.txt")
            .mime_str("text/plain")
            .expect("mime"),
    );
    let up = send(
        s.http
            .post(format!("{}/api/documents", s.base))
            .bearer_auth(&root.token)
            .header("x-tenant-id", &a.tenant_id)
            .multipart(form),
    )
    .await;
    up.expect(202);
    let docs = s.get("/api/documents", &a.token).await;
    docs.expect(200);
    assert!(docs.text.contains("hours.txt"), "{}", docs.text);
    let other = s.get("/api/documents", &b.token).await;
    assert!(!other.text.contains("hours.txt"), "{}", other.text);

    // `me` shows the platform admin itself, in the tenant it acts in.
    let me = as_in(
        &s,
        Method::GET,
        "/api/auth/me",
        &root.token,
        &a.tenant_id,
        None,
    )
    .await;
    me.expect(200);
    assert_eq!(me.body["role"], "PLATFORM_ADMIN");
    assert_eq!(me.body["user"]["id"].as_str(), Some(root.user_id.as_str()));
    assert_eq!(me.body["tenant"]["id"].as_str(), Some(a.tenant_id.as_str()));

    // A platform admin's API key may act in a tenant too, and the key it mints there keeps
    // working (its creator lives in the platform scope).
    let k = s
        .post("/api/api-keys", Some(&root.token), json!({"name": "ops"}))
        .await;
    k.expect(201);
    let key = k.body["secret"].as_str().expect("secret").to_string();
    as_in(
        &s,
        Method::POST,
        "/api/agents",
        &key,
        &b.tenant_id,
        Some(json!({"name": "Made by a platform key"})),
    )
    .await
    .expect(201);
    let tk = as_in(
        &s,
        Method::POST,
        "/api/api-keys",
        &root.token,
        &b.tenant_id,
        Some(json!({"name": "for beta", "role": "TENANT_ADMIN"})),
    )
    .await;
    tk.expect(201);
    let beta_key = tk.body["secret"].as_str().expect("secret").to_string();
    let agents = s.get("/api/agents", &beta_key).await;
    agents.expect(200);
    assert!(
        agents.text.contains("Made by a platform key"),
        "{}",
        agents.text
    );

    // Unknown tenant: 404; not an id: 400.
    let missing = "0193a0c4-0000-7000-8000-000000000000";
    as_in(&s, Method::GET, "/api/agents", &root.token, missing, None)
        .await
        .expect_err(404, "tenant_not_found");
    as_in(&s, Method::GET, "/api/agents", &root.token, "../../x", None)
        .await
        .expect_err(400, "invalid_id");
}

/// Anyone but a platform admin naming another tenant is refused (403), whether or not the
/// tenant exists; naming one's own tenant changes nothing.
#[tokio::test]
async fn x_tenant_id_is_refused_for_everyone_else() {
    use reqwest::Method;
    let s = start().await;
    let a = s.register("a@one.test", "One").await;
    let b = s.register("b@two.test", "Two").await;
    let user = s
        .invite_and_accept(&a, &a.tenant_id, "u@one.test", "TENANT_USER")
        .await;
    let k = s
        .post(
            "/api/api-keys",
            Some(&a.token),
            json!({"name": "k", "role": "TENANT_ADMIN"}),
        )
        .await;
    k.expect(201);
    let key = k.body["secret"].as_str().expect("secret").to_string();
    let missing = "0193a0c4-0000-7000-8000-000000000000";
    for token in [&a.token, &user.token, &key] {
        for t in [b.tenant_id.as_str(), missing] {
            as_in(&s, Method::GET, "/api/agents", token, t, None)
                .await
                .expect_err(403, "forbidden");
        }
        as_in(&s, Method::GET, "/api/agents", token, &a.tenant_id, None)
            .await
            .expect(200);
    }
    // Nothing was created in the other tenant.
    as_in(
        &s,
        Method::POST,
        "/api/agents",
        &a.token,
        &b.tenant_id,
        Some(json!({"name": "intruder"})),
    )
    .await
    .expect_err(403, "forbidden");
    let theirs = s.get("/api/agents", &b.token).await;
    theirs.expect(200);
    assert!(!theirs.text.contains("intruder"), "{}", theirs.text);
}

/// Acting in another tenant is an operator reaching into a customer's data: the log records
/// who did it and where, so it can be audited.
#[tokio::test]
async fn acting_in_a_tenant_is_logged_with_the_admin_and_the_tenant() {
    let logs = logs();
    let s = start().await;
    let root = s.root().await;
    let a = s.register("a@acme.test", "Acme").await;
    let marker = "platform admin acting in a tenant";
    let line_for = |text: &str| {
        text.lines()
            .find(|l| {
                l.contains(marker)
                    && l.contains(&format!("user:{}", root.user_id))
                    && l.contains(&format!("tenant={}", a.tenant_id))
            })
            .map(str::to_string)
    };
    // Its own scope is not acting in a tenant: no line yet.
    s.get("/api/agents", &root.token).await.expect(200);
    assert_eq!(line_for(&logs.text()), None);

    as_in(
        &s,
        reqwest::Method::GET,
        "/api/agents",
        &root.token,
        &a.tenant_id,
        None,
    )
    .await
    .expect(200);
    // The line is written while the request is handled, before its answer.
    let text = logs.text();
    let line = line_for(&text).unwrap_or_else(|| panic!("no audit line in the log:\n{text}"));
    assert!(line.contains("INFO"), "{line}");
}
