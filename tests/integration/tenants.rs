//! Tenants, users, roles and tenant isolation.

use crate::common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn platform_admin_manages_tenants() {
    let s = start().await;
    let root = s.root().await;
    let me = s.get("/api/auth/me", &root.token).await;
    assert_eq!(me.body["role"], "PLATFORM_ADMIN");
    assert!(me.body["tenant"].is_null());

    for i in 0..5 {
        s.post(
            "/api/tenants",
            Some(&root.token),
            json!({"name": format!("Shop {i}")}),
        )
        .await
        .expect(201);
    }
    let a = s.register("a@x.test", "A").await;
    // Paging: creation order, 2 at a time.
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let q = match &cursor {
            Some(c) => format!("/api/tenants?limit=2&cursor={c}"),
            None => "/api/tenants?limit=2".into(),
        };
        let r = s.get(&q, &root.token).await;
        r.expect(200);
        for t in r.body["data"].as_array().expect("data") {
            names.push(t["name"].as_str().expect("name").to_string());
        }
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert!(r.body["nextCursor"].is_null());
                break;
            }
        }
    }
    assert_eq!(
        names,
        ["Shop 0", "Shop 1", "Shop 2", "Shop 3", "Shop 4", "A"]
    );

    // A tenant admin sees only its own tenant.
    let r = s.get("/api/tenants", &a.token).await;
    r.expect(200);
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.body["data"][0]["id"].as_str(), Some(a.tenant_id.as_str()));

    // Suspend: its users are locked out; reactivate.
    s.put(
        &format!("/api/tenants/{}", a.tenant_id),
        &root.token,
        json!({"status": "suspended"}),
    )
    .await
    .expect(200);
    s.get("/api/auth/me", &a.token)
        .await
        .expect_err(403, "tenant_suspended");
    s.post(
        "/api/auth/login",
        None,
        json!({"email": "a@x.test", "password": "password-123"}),
    )
    .await
    .expect_err(403, "tenant_suspended");
    s.put(
        &format!("/api/tenants/{}", a.tenant_id),
        &root.token,
        json!({"status": "active"}),
    )
    .await
    .expect(200);
    s.get("/api/auth/me", &a.token).await.expect(200);
}

#[tokio::test]
async fn paging_parameters_are_validated() {
    let s = start().await;
    let root = s.root().await;
    for q in ["limit=0", "limit=201", "limit=abc", "limit=-1"] {
        s.get(&format!("/api/tenants?{q}"), &root.token)
            .await
            .expect_err(400, "invalid_query");
    }
    let r = s.get("/api/tenants?limit=200", &root.token).await;
    r.expect(200);
    assert!(r.body["data"].is_array());
    assert!(r.body.get("nextCursor").is_some());
}

#[tokio::test]
async fn tenant_admin_updates_settings_but_not_status() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let r = s
        .put(
            &format!("/api/tenants/{}", a.tenant_id),
            &a.token,
            json!({"name": "A Renamed", "settings": {"timezone": "Europe/Rome"}}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["name"], "A Renamed");
    assert_eq!(r.body["settings"]["timezone"], "Europe/Rome");
    s.put(
        &format!("/api/tenants/{}", a.tenant_id),
        &a.token,
        json!({"status": "suspended"}),
    )
    .await
    .expect_err(400, "validation_failed");
    s.put(
        &format!("/api/tenants/{}", a.tenant_id),
        &a.token,
        json!({"settings": [1]}),
    )
    .await
    .expect_err(400, "validation_failed");
}

#[tokio::test]
async fn roles_forbidden_actions() {
    let s = start().await;
    let admin = s.register("boss@x.test", "X").await;
    let tid = admin.tenant_id.clone();
    let user = s
        .invite_and_accept(&admin, &tid, "user@x.test", "TENANT_USER")
        .await;

    // TENANT_USER: reads, but manages nothing.
    s.get(&format!("/api/tenants/{tid}"), &user.token)
        .await
        .expect(200);
    s.get(&format!("/api/tenants/{tid}/users"), &user.token)
        .await
        .expect(200);
    let forbidden = [
        (
            Method::POST,
            "/api/tenants".to_string(),
            Some(json!({"name": "N"})),
        ),
        (
            Method::PUT,
            format!("/api/tenants/{tid}"),
            Some(json!({"name": "N"})),
        ),
        (Method::DELETE, format!("/api/tenants/{tid}"), None),
        (
            Method::POST,
            format!("/api/tenants/{tid}/users"),
            Some(json!({"email": "n@x.test", "role": "TENANT_USER"})),
        ),
        (
            Method::PUT,
            format!("/api/tenants/{tid}/users/{}", admin.user_id),
            Some(json!({"role": "TENANT_USER"})),
        ),
        (
            Method::DELETE,
            format!("/api/tenants/{tid}/users/{}", admin.user_id),
            None,
        ),
        (Method::GET, format!("/api/tenants/{tid}/invitations"), None),
        (Method::GET, "/api/api-keys".to_string(), None),
        (
            Method::POST,
            "/api/api-keys".to_string(),
            Some(json!({"name": "k"})),
        ),
    ];
    for (m, path, body) in forbidden {
        let r = s.req(m.clone(), &path, Some(&user.token), body).await;
        assert_eq!(r.status.as_u16(), 403, "TENANT_USER {m} {path}: {}", r.text);
        assert_eq!(r.code(), "forbidden");
    }
    // TENANT_ADMIN cannot create tenants.
    s.post("/api/tenants", Some(&admin.token), json!({"name": "N"}))
        .await
        .expect_err(403, "forbidden");
    // Nor invite a platform admin.
    s.post(
        &format!("/api/tenants/{tid}/users"),
        Some(&admin.token),
        json!({"email": "p@x.test", "role": "PLATFORM_ADMIN"}),
    )
    .await
    .expect_err(400, "validation_failed");
}

#[tokio::test]
async fn role_changes_and_the_last_admin_rule() {
    let s = start().await;
    let admin = s.register("boss@x.test", "X").await;
    let tid = admin.tenant_id.clone();
    let user = s
        .invite_and_accept(&admin, &tid, "user@x.test", "TENANT_USER")
        .await;

    // The only admin cannot demote or remove themself.
    s.put(
        &format!("/api/tenants/{tid}/users/{}", admin.user_id),
        &admin.token,
        json!({"role": "TENANT_USER"}),
    )
    .await
    .expect_err(409, "last_admin");
    s.delete(
        &format!("/api/tenants/{tid}/users/{}", admin.user_id),
        &admin.token,
    )
    .await
    .expect_err(409, "last_admin");

    // Promote the user: takes effect at once, on the existing token.
    let r = s
        .put(
            &format!("/api/tenants/{tid}/users/{}", user.user_id),
            &admin.token,
            json!({"role": "TENANT_ADMIN"}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["role"], "TENANT_ADMIN");
    s.get("/api/api-keys", &user.token).await.expect(200);

    // Now the first admin can be removed; their session ends.
    s.delete(
        &format!("/api/tenants/{tid}/users/{}", admin.user_id),
        &user.token,
    )
    .await
    .expect(204);
    let r = s.get("/api/auth/me", &admin.token).await;
    assert_eq!(r.status.as_u16(), 401, "{}", r.text);
    s.post(
        "/api/auth/login",
        None,
        json!({"email": "boss@x.test", "password": "password-123"}),
    )
    .await
    .expect_err(401, "invalid_credentials");
    // The email is free again.
    s.register("boss@x.test", "Y").await;
}

#[tokio::test]
async fn every_tenant_route_hides_other_tenants() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let b = s.register("b@x.test", "B").await;
    let b_user = s
        .invite_and_accept(&b, &b.tenant_id, "bu@x.test", "TENANT_USER")
        .await;
    let inv = s
        .post(
            &format!("/api/tenants/{}/users", b.tenant_id),
            Some(&b.token),
            json!({"email": "pending@x.test", "role": "TENANT_USER"}),
        )
        .await;
    let inv_id = inv.body["invitation"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let key = s
        .post("/api/api-keys", Some(&b.token), json!({"name": "b key"}))
        .await;
    let key_id = key.body["id"].as_str().expect("id").to_string();
    let a_user = s
        .invite_and_accept(&a, &a.tenant_id, "au@x.test", "TENANT_USER")
        .await;

    let bt = &b.tenant_id;
    let routes = [
        (Method::GET, format!("/api/tenants/{bt}"), None),
        (
            Method::PUT,
            format!("/api/tenants/{bt}"),
            Some(json!({"name": "pwned"})),
        ),
        (Method::DELETE, format!("/api/tenants/{bt}"), None),
        (Method::GET, format!("/api/tenants/{bt}/users"), None),
        (
            Method::POST,
            format!("/api/tenants/{bt}/users"),
            Some(json!({"email": "evil@x.test", "role": "TENANT_ADMIN"})),
        ),
        (
            Method::PUT,
            format!("/api/tenants/{bt}/users/{}", b_user.user_id),
            Some(json!({"role": "TENANT_ADMIN"})),
        ),
        (
            Method::DELETE,
            format!("/api/tenants/{bt}/users/{}", b_user.user_id),
            None,
        ),
        (Method::GET, format!("/api/tenants/{bt}/invitations"), None),
        (
            Method::DELETE,
            format!("/api/tenants/{bt}/invitations/{inv_id}"),
            None,
        ),
        (Method::DELETE, format!("/api/api-keys/{key_id}"), None),
    ];
    for who in [&a, &a_user] {
        for (m, path, body) in &routes {
            if who.user_id == a_user.user_id && path.starts_with("/api/api-keys") {
                continue; // a TENANT_USER may not manage keys at all: 403 before any lookup
            }
            let r = s.req(m.clone(), path, Some(&who.token), body.clone()).await;
            assert_eq!(r.status.as_u16(), 404, "{m} {path}: {}", r.text);
            assert!(r.code().ends_with("_not_found"), "{}", r.text);
        }
    }
    // A's own user id under A's tenant path, but B's user id: also 404.
    s.delete(
        &format!("/api/tenants/{}/users/{}", a.tenant_id, b_user.user_id),
        &a.token,
    )
    .await
    .expect_err(404, "user_not_found");
    // Nothing of B changed.
    let r = s.get(&format!("/api/tenants/{bt}"), &b.token).await;
    assert_eq!(r.body["name"], "B");
    let users = s.get(&format!("/api/tenants/{bt}/users"), &b.token).await;
    assert_eq!(users.body["data"].as_array().map(Vec::len), Some(2));
    s.get("/api/api-keys", &b.token).await.expect(200);
    assert_eq!(
        s.get("/api/api-keys", &b.token).await.body["data"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // Bad ids are a clear 400.
    s.get("/api/tenants/not-an-id", &a.token)
        .await
        .expect_err(400, "invalid_id");
}

#[tokio::test]
async fn deleting_a_tenant_removes_every_record_and_file() {
    let s = start().await;
    let root = s.root().await;
    let a = s.register("a@x.test", "A").await;
    let b = s.register("b@x.test", "B").await;
    s.invite_and_accept(&a, &a.tenant_id, "au@x.test", "TENANT_USER")
        .await;
    s.post(
        &format!("/api/tenants/{}/users", a.tenant_id),
        Some(&a.token),
        json!({"email": "pending@x.test", "role": "TENANT_USER"}),
    )
    .await
    .expect(201);
    let key = s
        .post("/api/api-keys", Some(&a.token), json!({"name": "k"}))
        .await;
    let secret = key.body["secret"].as_str().expect("secret").to_string();
    let files = s.data_dir().join("tenants").join(&a.tenant_id);
    std::fs::create_dir_all(files.join("uploads")).expect("mkdir");
    std::fs::write(files.join("uploads/doc.txt"), b"hello").expect("write");

    // The tenant's own admin may close it, too; here the platform admin does.
    s.delete(&format!("/api/tenants/{}", a.tenant_id), &root.token)
        .await
        .expect(204);
    s.get(&format!("/api/tenants/{}", a.tenant_id), &root.token)
        .await
        .expect_err(404, "tenant_not_found");
    assert!(!files.exists(), "tenant files remain");
    assert_eq!(s.get("/api/auth/me", &a.token).await.status.as_u16(), 401);
    let r = s
        .http
        .get(format!("{}/api/auth/me", s.base))
        .header("x-api-key", &secret)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    // Emails are free again.
    s.register("au@x.test", "Again").await;

    let dir = s.stop().await;
    let store = aigentable::store::Store::open(dir.path(), 1 << 20).expect("open store");
    let a_id = aigentable::types::TenantId::parse(&a.tenant_id).expect("id");
    let b_id = aigentable::types::TenantId::parse(&b.tenant_id).expect("id");
    assert_eq!(
        store.read(|tx| tx.tenant_footprint(&a_id)).expect("scan"),
        0,
        "records of the deleted tenant remain"
    );
    assert!(
        store.read(|tx| tx.tenant_footprint(&b_id)).expect("scan") > 0,
        "the other tenant is intact"
    );
}

#[tokio::test]
async fn restart_keeps_everything() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let key = s
        .post("/api/api-keys", Some(&a.token), json!({"name": "k"}))
        .await;
    let secret = key.body["secret"].as_str().expect("secret").to_string();
    let dir = s.stop().await;

    let s = start_in(dir, |_| {}).await;
    // Same secrets on disk: the old access token, refresh token and key still work.
    let me = s.get("/api/auth/me", &a.token).await;
    me.expect(200);
    assert_eq!(me.body["tenant"]["name"], "A");
    s.post(
        "/api/auth/refresh",
        None,
        json!({"refreshToken": a.refresh}),
    )
    .await
    .expect(200);
    let r = s
        .http
        .get(format!("{}/api/auth/me", s.base))
        .header("x-api-key", &secret)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    s.login("a@x.test", "password-123").await;
    // The platform admin is not duplicated on the second start.
    let root = s.root().await;
    assert_eq!(
        s.get("/api/tenants", &root.token).await.body["data"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

/// Deleting a tenant drops its chunks from the search indexes too, not only its records:
/// what it uploaded cannot be found again, and the other tenants' entries stay.
#[tokio::test]
async fn deleting_a_tenant_removes_its_search_index_entries() {
    use aigentable::index::text::{Filter, TextIndex};
    use aigentable::types::TenantId;
    let s = start().await;
    let root = s.root().await;
    let a = s.register("a@x.test", "A").await;
    let b = s.register("b@x.test", "B").await;
    let text = b"The zebrafinch warranty covers twelve months.";
    upload_doc(&s, &a.token, "a.txt", "text/plain", text, None).await;
    upload_doc(&s, &b.token, "b.txt", "text/plain", text, None).await;
    let q = json!({"query": "zebrafinch warranty", "mode": "keyword"});
    for acc in [&a, &b] {
        let r = s.search(&acc.token, q.clone()).await;
        r.expect(200);
        assert!(r.text.contains("zebrafinch"), "{}", r.text);
    }

    s.delete(&format!("/api/tenants/{}", a.tenant_id), &root.token)
        .await
        .expect(204);

    // Read the index the server left on disk.
    let dir = s.stop().await;
    let index = TextIndex::open(&dir.path().join("index").join("text")).expect("open index");
    assert!(!index.needs_rebuild(), "the server left a usable index");
    let a_id = TenantId::parse(&a.tenant_id).expect("id");
    let b_id = TenantId::parse(&b.tenant_id).expect("id");
    let hits = |t: &TenantId| {
        index
            .search(t, "zebrafinch warranty", &Filter::default(), 10)
            .expect("search")
            .len()
    };
    assert_eq!(
        hits(&a_id),
        0,
        "the deleted tenant's chunks are still indexed"
    );
    assert!(hits(&b_id) > 0, "the other tenant's chunks are gone too");
}
