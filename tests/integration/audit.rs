//! The audit log: every security-relevant action leaves exactly the entry expected (who,
//! what, where), secrets never appear in it, tenants see only their own, paging, filters and
//! the retention sweep.

use crate::common::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const UA: &str = "audit-test/1.0";

/// Every entry the caller can see under `query`, following `nextCursor` to the end.
async fn entries(s: &Server, token: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/audit?limit=200&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = s.get(&path, token).await;
        r.expect(200);
        out.extend(r.body["data"].as_array().expect("data").iter().cloned());
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// The one entry of `action` among `all` (fails when there are none or several).
#[track_caller]
fn one<'a>(all: &'a [Value], action: &str) -> &'a Value {
    let hits: Vec<&Value> = all.iter().filter(|e| e["action"] == action).collect();
    assert_eq!(hits.len(), 1, "exactly one {action} entry in {all:#?}");
    hits[0]
}

fn count(all: &[Value], action: &str) -> usize {
    all.iter().filter(|e| e["action"] == action).count()
}

/// A request with a user agent (and the JSON body, when given).
async fn with_ua(s: &Server, method: Method, path: &str, token: Option<&str>, body: Value) -> Resp {
    let mut rb = s
        .http
        .request(method, format!("{}{path}", s.base))
        .header("user-agent", UA)
        .json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    send(rb).await
}

#[tokio::test]
async fn sign_ins_and_failures_are_recorded_without_passwords() {
    let s = start().await;
    let a = s.register("owner@a.test", "A").await;
    with_ua(
        &s,
        Method::POST,
        "/api/auth/login",
        None,
        json!({"email": "owner@a.test", "password": "password-123"}),
    )
    .await
    .expect(200);
    for _ in 0..3 {
        with_ua(
            &s,
            Method::POST,
            "/api/auth/login",
            None,
            json!({"email": "Owner@A.test", "password": "wrong-secret-guess"}),
        )
        .await
        .expect_err(401, "invalid_credentials");
    }
    s.post(
        "/api/auth/login",
        None,
        json!({"email": "ghost@nowhere.test", "password": "ghost-secret-guess"}),
    )
    .await
    .expect_err(401, "invalid_credentials");

    let log = s.get("/api/audit", &a.token).await;
    log.expect(200);
    assert!(!log.text.contains("wrong-secret-guess") && !log.text.contains("password-123"));
    let all = entries(&s, &a.token, "").await;
    let reg = one(&all, "auth.registered");
    assert_eq!(reg["target"]["kind"], "tenant");
    assert_eq!(reg["target"]["id"], a.tenant_id.as_str());

    let login = one(&all, "auth.login");
    assert_eq!(login["outcome"], "success");
    assert_eq!(login["tenantId"], a.tenant_id.as_str());
    assert_eq!(login["actor"]["kind"], "user");
    assert_eq!(login["actor"]["userId"], a.user_id.as_str());
    assert_eq!(login["actor"]["email"], "owner@a.test");
    assert_eq!(login["actor"]["role"], "TENANT_ADMIN");
    assert_eq!(login["ip"], "127.0.0.1");
    assert_eq!(login["userAgent"], UA);

    // Three failures from one address: one entry counting three.
    let failed = one(&all, "auth.login_failed");
    assert_eq!(failed["outcome"], "failure");
    assert_eq!(failed["count"], 3);
    assert!(failed["lastAt"].is_string());
    assert_eq!(failed["details"]["reason"], "wrong_password");
    assert_eq!(failed["actor"]["kind"], "anonymous");
    assert_eq!(failed["actor"]["email"], "owner@a.test");
    assert_eq!(failed["target"]["id"], a.user_id.as_str());
    assert_eq!(failed["ip"], "127.0.0.1");
    assert_eq!(failed["userAgent"], UA);
    assert!(
        !all.iter()
            .any(|e| e["actor"]["email"] == "ghost@nowhere.test"),
        "an unknown email's failure is not the tenant's"
    );

    // The platform admin sees the unknown email's failure, in the platform scope.
    let root = s.root().await;
    let platform = entries(
        &s,
        &root.token,
        "tenantId=00000000-0000-0000-0000-000000000000&action=auth.login_failed",
    )
    .await;
    let ghost = one(&platform, "auth.login_failed");
    assert_eq!(ghost["actor"]["email"], "ghost@nowhere.test");
    assert_eq!(ghost["details"]["reason"], "unknown_email");
    assert!(ghost["target"].is_null());
    let raw = serde_json::to_string(&entries(&s, &root.token, "").await).expect("json");
    assert!(!raw.contains("ghost-secret-guess") && !raw.contains("wrong-secret-guess"));
}

#[tokio::test]
async fn the_client_address_follows_the_trusted_proxy_rules() {
    let s = start_with(|c| c.trusted_proxies = "127.0.0.1".into()).await;
    s.register("owner@p.test", "P").await;
    let r = send(
        s.http
            .post(format!("{}/api/auth/login", s.base))
            .header("x-forwarded-for", "198.51.100.7")
            .json(&json!({"email": "owner@p.test", "password": "password-123"})),
    )
    .await;
    r.expect(200);
    let a = Account::from_auth(&r.body);
    let all = entries(&s, &a.token, "action=auth.login").await;
    assert_eq!(one(&all, "auth.login")["ip"], "198.51.100.7");
}

#[tokio::test]
async fn team_keys_settings_and_channel_credentials_are_recorded_without_secrets() {
    let s = start().await;
    let a = s.register("owner@t.test", "T").await;
    let t = a.tenant_id.clone();

    // Invitations: sent, accepted, another sent and revoked.
    let member = s
        .invite_and_accept(&a, &t, "member@t.test", "TENANT_USER")
        .await;
    let r = s
        .post(
            &format!("/api/tenants/{t}/users"),
            Some(&a.token),
            json!({"email": "later@t.test", "role": "TENANT_ADMIN"}),
        )
        .await;
    r.expect(201);
    let invite_token = r.body["inviteUrl"]
        .as_str()
        .expect("url")
        .split("token=")
        .nth(1)
        .expect("token")
        .to_string();
    let inv_id = r.body["invitation"]["id"].as_str().expect("id").to_string();
    with_ua(
        &s,
        Method::DELETE,
        &format!("/api/tenants/{t}/invitations/{inv_id}"),
        Some(&a.token),
        Value::Null,
    )
    .await
    .expect(204);

    // Role change, then removal.
    s.put(
        &format!("/api/tenants/{t}/users/{}", member.user_id),
        &a.token,
        json!({"role": "TENANT_ADMIN"}),
    )
    .await
    .expect(200);
    // A name-only change is no role change.
    s.put(
        &format!("/api/tenants/{t}/users/{}", member.user_id),
        &a.token,
        json!({"name": "Renamed"}),
    )
    .await
    .expect(200);
    s.delete(
        &format!("/api/tenants/{t}/users/{}", member.user_id),
        &a.token,
    )
    .await
    .expect(204);

    // API keys: the secret is never in the log.
    let r = s
        .post("/api/api-keys", Some(&a.token), json!({"name": "ci"}))
        .await;
    r.expect(201);
    let secret = r.body["secret"].as_str().expect("secret").to_string();
    let key_id = r.body["id"].as_str().expect("id").to_string();
    // Acting with the key itself: the actor is the key.
    let r = send(
        s.http
            .delete(format!("{}/api/api-keys/{key_id}", s.base))
            .header("x-api-key", &secret)
            .header("user-agent", UA),
    )
    .await;
    r.expect(204);

    // Settings: names of what changed, never the values.
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"apiKey": "sk-very-secret-provider-key", "model": "gpt-test"}),
    )
    .await
    .expect(200);
    s.put(
        &format!("/api/tenants/{t}"),
        &a.token,
        json!({"settings": {"timeZone": "Europe/Paris", "webhookToken": "tok-secret-value"}}),
    )
    .await
    .expect(200);

    // A web channel's identity secret: set, then rotated.
    let agent = create_agent(&s, &a, json!({"name": "Ava"})).await;
    let r = s
        .post(
            "/api/channels",
            Some(&a.token),
            json!({"type": "web", "name": "Website", "agentId": id(&agent),
                   "settings": {"identity": {"mode": "required"}}}),
        )
        .await;
    r.expect(201);
    let channel = id(&r.body);
    let first_secret = r.body["identitySecret"]
        .as_str()
        .expect("secret")
        .to_string();
    let r = s
        .post(
            &format!("/api/channels/{channel}/identity-secret"),
            Some(&a.token),
            json!({}),
        )
        .await;
    r.expect(200);
    let rotated = r.body["identitySecret"]
        .as_str()
        .expect("rotated")
        .to_string();

    let all = entries(&s, &a.token, "").await;
    let raw = serde_json::to_string(&all).expect("json");
    for secret in [
        secret.as_str(),
        invite_token.as_str(),
        "sk-very-secret-provider-key",
        "tok-secret-value",
        "Europe/Paris",
        first_secret.as_str(),
        rotated.as_str(),
        "password-123",
    ] {
        assert!(!raw.contains(secret), "{secret} in the audit log: {raw}");
    }

    let sent: Vec<&Value> = all
        .iter()
        .filter(|e| e["action"] == "invitation.sent")
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter()
            .all(|e| e["actor"]["userId"] == a.user_id.as_str())
    );
    let accepted = one(&all, "invitation.accepted");
    assert_eq!(accepted["actor"]["userId"], member.user_id.as_str());
    assert_eq!(accepted["actor"]["email"], "member@t.test");
    assert_eq!(accepted["details"]["role"], "TENANT_USER");
    let revoked = one(&all, "invitation.revoked");
    assert_eq!(revoked["target"]["id"], inv_id.as_str());
    assert_eq!(revoked["target"]["label"], "later@t.test");
    assert_eq!(revoked["userAgent"], UA);
    assert_eq!(revoked["ip"], "127.0.0.1");

    let role = one(&all, "user.role_changed");
    assert_eq!(role["target"]["id"], member.user_id.as_str());
    assert_eq!(
        role["details"],
        json!({"from": "TENANT_USER", "to": "TENANT_ADMIN"})
    );
    let removed = one(&all, "user.removed");
    assert_eq!(removed["target"]["label"], "member@t.test");
    assert_eq!(removed["actor"]["email"], "owner@t.test");

    let created = one(&all, "api_key.created");
    assert_eq!(created["target"]["id"], key_id.as_str());
    assert_eq!(created["target"]["label"], "ci");
    assert_eq!(created["actor"]["kind"], "user");
    let deleted = one(&all, "api_key.deleted");
    assert_eq!(deleted["actor"]["kind"], "api_key");
    assert_eq!(deleted["actor"]["apiKeyId"], key_id.as_str());
    assert_eq!(deleted["actor"]["userId"], a.user_id.as_str());
    assert_eq!(deleted["userAgent"], UA);

    let settings: Vec<&Value> = all
        .iter()
        .filter(|e| e["action"] == "settings.changed")
        .collect();
    assert_eq!(settings.len(), 2, "{settings:#?}");
    let ai = settings
        .iter()
        .find(|e| e["details"]["scope"] == "ai")
        .expect("ai settings entry");
    assert_eq!(ai["details"]["keys"], json!(["apiKey", "model"]));
    let tenant = settings
        .iter()
        .find(|e| e["details"]["scope"] == "tenant")
        .expect("tenant settings entry");
    assert_eq!(
        tenant["details"]["keys"],
        json!(["timeZone", "webhookToken"])
    );

    let creds: Vec<&Value> = all
        .iter()
        .filter(|e| e["action"] == "channel.credentials_changed")
        .collect();
    assert_eq!(creds.len(), 2, "set at creation, then rotated: {creds:#?}");
    assert!(creds.iter().all(|e| e["target"]["id"] == channel.as_str()
        && e["details"]["keys"] == json!(["identitySecret"])));
    // Nothing recorded twice, nothing unexpected.
    assert_eq!(
        count(&all, "auth.login"),
        0,
        "the tests signed in by registering"
    );
}

#[tokio::test]
async fn password_resets_are_recorded() {
    let smtp = fake_smtp().await;
    let url = smtp.url.clone();
    let s = start_with(move |c| c.smtp_url = Some(aigentable::config::Secret::new(url))).await;
    let a = s.register("reset@r.test", "R").await;
    with_ua(
        &s,
        Method::POST,
        "/api/auth/forgot",
        None,
        json!({"email": "reset@r.test"}),
    )
    .await
    .expect(202);
    let mail = smtp.wait_for("reset-password").await;
    let token = token_from(&mail);
    with_ua(
        &s,
        Method::POST,
        "/api/auth/reset",
        None,
        json!({"token": token, "password": "brand-new-password"}),
    )
    .await
    .expect(200);
    let b = s.login("reset@r.test", "brand-new-password").await;
    let all = entries(&s, &b.token, "").await;
    let raw = serde_json::to_string(&all).expect("json");
    assert!(!raw.contains(&token) && !raw.contains("brand-new-password"));
    let requested = one(&all, "auth.password_reset_requested");
    assert_eq!(requested["actor"]["kind"], "anonymous");
    assert_eq!(requested["actor"]["email"], "reset@r.test");
    assert_eq!(requested["target"]["id"], a.user_id.as_str());
    assert_eq!(requested["userAgent"], UA);
    let done = one(&all, "auth.password_reset");
    assert_eq!(done["actor"]["userId"], a.user_id.as_str());
    assert_eq!(done["ip"], "127.0.0.1");
    assert_eq!(done["userAgent"], UA);
}

#[tokio::test]
async fn tenant_status_and_deletion_are_recorded_for_the_platform() {
    let s = start().await;
    let root = s.root().await;
    let a = s.register("owner@d.test", "Doomed").await;
    let t = a.tenant_id.clone();
    s.put(
        &format!("/api/tenants/{t}"),
        &root.token,
        json!({"status": "suspended"}),
    )
    .await
    .expect(200);
    s.post(
        "/api/auth/login",
        None,
        json!({"email": "owner@d.test", "password": "password-123"}),
    )
    .await
    .expect_err(403, "tenant_suspended");
    s.put(
        &format!("/api/tenants/{t}"),
        &root.token,
        json!({"status": "active", "name": "Renamed"}),
    )
    .await
    .expect(200);
    let all = entries(&s, &root.token, &format!("tenantId={t}")).await;
    let suspended = one(&all, "tenant.suspended");
    assert_eq!(suspended["actor"]["role"], "PLATFORM_ADMIN");
    assert_eq!(suspended["actor"]["email"], ROOT_EMAIL);
    assert_eq!(suspended["tenantId"], t.as_str());
    one(&all, "tenant.reactivated");
    let renamed = one(&all, "tenant.updated");
    assert_eq!(renamed["details"]["keys"], json!(["name"]));
    let refused = one(&all, "auth.login_failed");
    assert_eq!(refused["details"]["reason"], "tenant_suspended");
    // The tenant admin sees what the platform admin did to their tenant.
    let a = s.login("owner@d.test", "password-123").await;
    let own = entries(&s, &a.token, "").await;
    one(&own, "tenant.suspended");

    // Deleting the tenant takes its log along, and the deletion stays in the platform's.
    s.delete(&format!("/api/tenants/{t}"), &a.token)
        .await
        .expect(204);
    assert!(
        entries(&s, &root.token, &format!("tenantId={t}"))
            .await
            .is_empty()
    );
    let platform = entries(&s, &root.token, "action=tenant.deleted").await;
    let deleted = one(&platform, "tenant.deleted");
    assert_eq!(deleted["tenantId"], "00000000-0000-0000-0000-000000000000");
    assert_eq!(deleted["target"]["id"], t.as_str());
    assert_eq!(deleted["target"]["label"], "Renamed");
    assert_eq!(deleted["actor"]["email"], "owner@d.test");
}

#[tokio::test]
async fn tenants_see_only_their_own_entries_and_users_none() {
    let s = start().await;
    let a = s.register("owner@one.test", "One").await;
    let b = s.register("owner@two.test", "Two").await;
    let user = s
        .invite_and_accept(&a, &a.tenant_id, "user@one.test", "TENANT_USER")
        .await;
    s.get("/api/audit", &user.token)
        .await
        .expect_err(403, "forbidden");

    let mine = entries(&s, &b.token, "").await;
    assert!(!mine.is_empty());
    assert!(
        mine.iter().all(|e| e["tenantId"] == b.tenant_id.as_str()),
        "{mine:#?}"
    );
    s.get(&format!("/api/audit?tenantId={}", a.tenant_id), &b.token)
        .await
        .expect_err(404, "tenant_not_found");
    s.get(&format!("/api/audit?tenantId={}", b.tenant_id), &b.token)
        .await
        .expect(200);
    // Naming another tenant in X-Tenant-Id is refused as everywhere.
    let r = send(
        s.http
            .get(format!("{}/api/audit", s.base))
            .bearer_auth(&b.token)
            .header("x-tenant-id", &a.tenant_id),
    )
    .await;
    r.expect_err(403, "forbidden");

    // The platform admin sees both, or one; acting in a tenant, that tenant.
    let root = s.root().await;
    let all = entries(&s, &root.token, "").await;
    for t in [&a.tenant_id, &b.tenant_id] {
        assert!(all.iter().any(|e| e["tenantId"] == t.as_str()));
    }
    let only_a = entries(&s, &root.token, &format!("tenantId={}", a.tenant_id)).await;
    assert!(!only_a.is_empty());
    assert!(only_a.iter().all(|e| e["tenantId"] == a.tenant_id.as_str()));
    let r = send(
        s.http
            .get(format!("{}/api/audit?limit=200", s.base))
            .bearer_auth(&root.token)
            .header("x-tenant-id", &b.tenant_id),
    )
    .await;
    r.expect(200);
    let acting = r.body["data"].as_array().expect("data");
    assert!(!acting.is_empty());
    assert!(acting.iter().all(|e| e["tenantId"] == b.tenant_id.as_str()));

    // Bad filters are 400s with the query codes.
    for (q, code) in [
        ("action=nope", "invalid_query"),
        ("from=yesterday", "invalid_query"),
        ("to=2026-13-01T00:00:00Z", "invalid_query"),
        ("cursor=not-a-cursor", "invalid_query"),
        ("limit=0", "invalid_query"),
        ("tenantId=x", "invalid_id"),
    ] {
        s.get(&format!("/api/audit?{q}"), &root.token)
            .await
            .expect_err(400, code);
    }
}

#[tokio::test]
async fn pages_and_filters() {
    let s = start().await;
    let a = s.register("owner@pg.test", "Pages").await;
    for i in 0..7 {
        s.post(
            "/api/api-keys",
            Some(&a.token),
            json!({"name": format!("k{i}")}),
        )
        .await
        .expect(201);
    }
    // Pages of 3, newest first, every entry once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/audit?limit=3&cursor={c}"),
            None => "/api/audit?limit=3".to_string(),
        };
        let r = s.get(&path, &a.token).await;
        r.expect(200);
        let data = r.body["data"].as_array().expect("data").clone();
        assert!(data.len() <= 3);
        seen.extend(data);
        pages += 1;
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8, "seven keys and the registration: {seen:#?}");
    assert_eq!(pages, 3);
    let ids: Vec<&str> = seen.iter().map(|e| e["id"].as_str().expect("id")).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|x, y| y.cmp(x));
    sorted.dedup();
    assert_eq!(ids, sorted, "newest first, no repeats");
    assert_eq!(seen.last().expect("oldest")["action"], "auth.registered");
    let labels: Vec<&str> = seen[..7]
        .iter()
        .map(|e| e["target"]["label"].as_str().expect("label"))
        .collect();
    assert_eq!(labels, ["k6", "k5", "k4", "k3", "k2", "k1", "k0"]);

    // Filters: action, actor (id or email), and a time window.
    assert_eq!(
        entries(&s, &a.token, "action=api_key.created").await.len(),
        7
    );
    assert_eq!(entries(&s, &a.token, "action=auth.login").await.len(), 0);
    assert_eq!(entries(&s, &a.token, "actor=OWNER@pg.test").await.len(), 8);
    assert_eq!(
        entries(&s, &a.token, &format!("actor={}", a.user_id))
            .await
            .len(),
        8
    );
    assert_eq!(
        entries(&s, &a.token, "actor=someone@else.test").await.len(),
        0
    );
    // Entries written later, by the server's clock, fall outside an earlier window.
    s.clock.advance(Duration::from_secs(3600));
    s.post("/api/api-keys", Some(&a.token), json!({"name": "later"}))
        .await
        .expect(201);
    let all = entries(&s, &a.token, "").await;
    let later_at = all[0]["at"].as_str().expect("at").to_string();
    let earlier_at = all[1]["at"].as_str().expect("at").to_string();
    let enc = |t: &str| t.replace('+', "%2B");
    let window = entries(&s, &a.token, &format!("to={}", enc(&earlier_at))).await;
    assert_eq!(window.len(), 8);
    let recent = entries(&s, &a.token, &format!("from={}", enc(&later_at))).await;
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0]["target"]["label"], "later");
    let both = entries(
        &s,
        &a.token,
        &format!(
            "from={}&to={}&action=api_key.created",
            enc(&earlier_at),
            enc(&later_at)
        ),
    )
    .await;
    assert_eq!(both.len(), 2);
}

#[tokio::test]
async fn the_retention_sweep_deletes_only_old_entries() {
    let s = start_with(|c| c.audit_retention_days = 30).await;
    let a = s.register("owner@ret.test", "Ret").await;
    for i in 0..3 {
        s.post(
            "/api/api-keys",
            Some(&a.token),
            json!({"name": format!("old{i}")}),
        )
        .await
        .expect(201);
    }
    s.clock.advance(Duration::from_secs(29 * 86_400));
    s.post("/api/api-keys", Some(&a.token), json!({"name": "recent"}))
        .await
        .expect(201);
    let svc = s.svc.clone();
    let swept = tokio::task::spawn_blocking(move || svc.sweep_audit())
        .await
        .expect("join")
        .expect("sweep");
    assert_eq!(swept, 0, "nothing is 30 days old yet");
    s.clock.advance(Duration::from_secs(2 * 86_400));
    let svc = s.svc.clone();
    let swept = tokio::task::spawn_blocking(move || svc.sweep_audit())
        .await
        .expect("join")
        .expect("sweep");
    assert_eq!(swept, 4, "the registration and three keys are 31 days old");
    let left = entries(&s, &a.token, "").await;
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_eq!(left[0]["target"]["label"], "recent");
    let root = s.root().await;
    let everything = entries(&s, &root.token, "").await;
    assert!(everything.iter().all(|e| e["target"]["label"] != "old0"));
}
