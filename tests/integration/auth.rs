//! Sign-up, sign-in, tokens, sessions, reset and invitations.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn register_login_me() {
    let s = start().await;
    let r = s
        .post(
            "/api/auth/register",
            None,
            json!({"email": "Owner@Acme.test", "password": "password-123", "name": "Olga", "tenantName": "Acme Bakery"}),
        )
        .await;
    r.expect(201);
    assert_eq!(
        r.body["user"]["email"], "owner@acme.test",
        "emails are normalised"
    );
    assert_eq!(r.body["user"]["role"], "TENANT_ADMIN");
    assert_eq!(r.body["tenant"]["name"], "Acme Bakery");
    assert_eq!(r.body["tenant"]["slug"], "acme-bakery");
    assert_eq!(r.body["expiresIn"], 900);
    assert!(r.body["user"].get("passwordHash").is_none(), "{}", r.text);

    let a = s.login("owner@acme.test", "password-123").await;
    let me = s.get("/api/auth/me", &a.token).await;
    me.expect(200);
    assert_eq!(me.body["user"]["id"].as_str(), Some(a.user_id.as_str()));
    assert_eq!(me.body["tenant"]["id"].as_str(), Some(a.tenant_id.as_str()));
    assert_eq!(me.body["role"], "TENANT_ADMIN");

    // Duplicate email: 409.
    s.post(
        "/api/auth/register",
        None,
        json!({"email": "OWNER@acme.test", "password": "password-123", "name": "x", "tenantName": "Other"}),
    )
    .await
    .expect_err(409, "email_taken");
}

#[tokio::test]
async fn register_validates_every_field() {
    let s = start().await;
    let r = s
        .post(
            "/api/auth/register",
            None,
            json!({"email": "not-an-email", "password": "short", "name": " ", "tenantName": ""}),
        )
        .await;
    r.expect_err(400, "validation_failed");
    let fields: Vec<&str> = r.body["error"]["details"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    for f in ["email", "password", "name", "tenantName"] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    // Missing field.
    let r = s
        .post(
            "/api/auth/register",
            None,
            json!({"email": "a@b.test", "password": "password-123", "name": "x"}),
        )
        .await;
    r.expect_err(400, "validation_failed");
    assert_eq!(
        r.body["error"]["details"]["fields"][0]["field"],
        "tenantName"
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    let s = start().await;
    s.register("a@x.test", "A").await;
    let wrong = s
        .post(
            "/api/auth/login",
            None,
            json!({"email": "a@x.test", "password": "wrong-password"}),
        )
        .await;
    let unknown = s
        .post(
            "/api/auth/login",
            None,
            json!({"email": "nobody@x.test", "password": "wrong-password"}),
        )
        .await;
    wrong.expect_err(401, "invalid_credentials");
    unknown.expect_err(401, "invalid_credentials");
    assert_eq!(
        wrong.body["error"]["message"],
        unknown.body["error"]["message"]
    );
}

#[tokio::test]
async fn tampered_expired_and_foreign_tokens_are_rejected() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let secret = "a-test-jwt-secret-that-is-long-enough-0123456789";
    let s = start_with(|c| c.jwt_secret = Some(aigentable::config::Secret::new(secret))).await;
    let a = s.register("a@x.test", "A").await;
    s.get("/api/auth/me", &a.token).await.expect(200);

    let parts: Vec<&str> = a.token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&B64.decode(parts[1]).expect("b64")).expect("claims");

    // alg: none
    let none = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    s.get("/api/auth/me", &none)
        .await
        .expect_err(401, "invalid_token");

    // Changed payload (role escalation) with the old signature.
    claims["role"] = json!("PLATFORM_ADMIN");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(claims.to_string()),
        parts[2]
    );
    s.get("/api/auth/me", &forged)
        .await
        .expect_err(401, "invalid_token");

    // Signed with another key.
    let other = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"another-key-another-key-another-key!!"),
    )
    .expect("sign");
    s.get("/api/auth/me", &other)
        .await
        .expect_err(401, "invalid_token");

    // Correct key, but expired.
    claims["role"] = json!("TENANT_ADMIN");
    claims["exp"] = json!(1_000_000);
    claims["iat"] = json!(999_000);
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign");
    s.get("/api/auth/me", &expired)
        .await
        .expect_err(401, "invalid_token");

    s.get("/api/auth/me", "garbage")
        .await
        .expect_err(401, "invalid_token");
    s.req(reqwest::Method::GET, "/api/auth/me", None, None)
        .await
        .expect_err(401, "unauthorized");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_session() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let r1 = s
        .post(
            "/api/auth/refresh",
            None,
            json!({"refreshToken": a.refresh}),
        )
        .await;
    r1.expect(200);
    let t1 = r1.body["refreshToken"].as_str().expect("rt").to_string();
    assert_ne!(t1, a.refresh, "refresh tokens rotate");
    let access1 = r1.body["accessToken"].as_str().expect("at").to_string();
    s.get("/api/auth/me", &access1).await.expect(200);

    let r2 = s
        .post("/api/auth/refresh", None, json!({"refreshToken": t1}))
        .await;
    r2.expect(200);
    let t2 = r2.body["refreshToken"].as_str().expect("rt").to_string();

    // Reuse of the first (already rotated) token: the whole session is revoked.
    s.post(
        "/api/auth/refresh",
        None,
        json!({"refreshToken": a.refresh}),
    )
    .await
    .expect_err(401, "refresh_token_reused");
    s.post("/api/auth/refresh", None, json!({"refreshToken": t2}))
        .await
        .expect_err(401, "invalid_refresh_token");
    s.get("/api/auth/me", &access1)
        .await
        .expect_err(401, "session_revoked");

    // Garbage.
    for bad in ["", "x.y.z", "a.b", &format!("{}x", t2)] {
        let r = s
            .post("/api/auth/refresh", None, json!({"refreshToken": bad}))
            .await;
        assert_eq!(r.status.as_u16(), 401, "{bad}: {}", r.text);
    }
}

#[tokio::test]
async fn logout_ends_the_session_at_once() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let other = s.login("a@x.test", "password-123").await;
    s.post(
        "/api/auth/logout",
        Some(&a.token),
        json!({"refreshToken": a.refresh}),
    )
    .await
    .expect(204);
    s.post(
        "/api/auth/refresh",
        None,
        json!({"refreshToken": a.refresh}),
    )
    .await
    .expect_err(401, "invalid_refresh_token");
    s.get("/api/auth/me", &a.token)
        .await
        .expect_err(401, "session_revoked");
    // Other sessions of the same user live on.
    s.get("/api/auth/me", &other.token).await.expect(200);
    // Logout with no body at all.
    let r = s
        .http
        .post(format!("{}/api/auth/logout", s.base))
        .bearer_auth(&other.token)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 204);
    s.get("/api/auth/me", &other.token)
        .await
        .expect_err(401, "session_revoked");
}

#[tokio::test]
async fn password_reset_by_mail() {
    let smtp = fake_smtp().await;
    let url = smtp.url.clone();
    let s = start_with(move |c| c.smtp_url = Some(aigentable::config::Secret::new(url))).await;
    let a = s.register("a@x.test", "A").await;
    let known = s
        .post("/api/auth/forgot", None, json!({"email": "a@x.test"}))
        .await;
    let unknown = s
        .post("/api/auth/forgot", None, json!({"email": "ghost@x.test"}))
        .await;
    known.expect(202);
    unknown.expect(202);
    assert_eq!(
        known.body, unknown.body,
        "same answer for known and unknown emails"
    );
    assert!(!known.text.contains("token"), "{}", known.text);

    let mail = smtp.wait_for("reset-password").await;
    assert!(mail.contains("To: a@x.test"), "{mail}");
    let token = token_from(&mail);
    assert!(token.len() >= 40, "{token}");

    s.post(
        "/api/auth/reset",
        None,
        json!({"token": token, "password": "short"}),
    )
    .await
    .expect_err(400, "validation_failed");
    s.post(
        "/api/auth/reset",
        None,
        json!({"token": token, "password": "brand-new-password"}),
    )
    .await
    .expect(200);
    // Single use.
    s.post(
        "/api/auth/reset",
        None,
        json!({"token": token, "password": "another-password"}),
    )
    .await
    .expect_err(400, "invalid_token");
    // All sessions of the user were revoked; the new password works, the old does not.
    s.get("/api/auth/me", &a.token)
        .await
        .expect_err(401, "session_revoked");
    s.post(
        "/api/auth/refresh",
        None,
        json!({"refreshToken": a.refresh}),
    )
    .await
    .expect_err(401, "invalid_refresh_token");
    s.post(
        "/api/auth/login",
        None,
        json!({"email": "a@x.test", "password": "password-123"}),
    )
    .await
    .expect_err(401, "invalid_credentials");
    s.login("a@x.test", "brand-new-password").await;
    assert_eq!(
        smtp.mails.lock().expect("lock").len(),
        1,
        "no mail for unknown emails"
    );
}

#[tokio::test]
async fn invitation_flow() {
    let smtp = fake_smtp().await;
    let url = smtp.url.clone();
    let s = start_with(move |c| c.smtp_url = Some(aigentable::config::Secret::new(url))).await;
    let admin = s.register("boss@x.test", "X").await;
    let r = s
        .post(
            &format!("/api/tenants/{}/users", admin.tenant_id),
            Some(&admin.token),
            json!({"email": "Agent@X.test", "role": "TENANT_USER", "name": "Ann"}),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["invitation"]["email"], "agent@x.test");
    assert_eq!(r.body["invitation"]["role"], "TENANT_USER");
    assert_eq!(r.body["emailed"], true);
    assert!(r.body["invitation"].get("tokenHash").is_none());
    let url = r.body["inviteUrl"].as_str().expect("url");
    assert!(url.contains("/accept-invite?token="), "{url}");
    let mail = smtp.wait_for("accept-invite").await;
    assert_eq!(
        token_from(&mail),
        token_from(url),
        "mailed link is the same"
    );

    // Inviting an existing account: 409.
    s.post(
        &format!("/api/tenants/{}/users", admin.tenant_id),
        Some(&admin.token),
        json!({"email": "boss@x.test", "role": "TENANT_USER"}),
    )
    .await
    .expect_err(409, "email_taken");

    let token = token_from(url);
    let acc = s
        .post(
            "/api/auth/accept-invite",
            None,
            json!({"token": token, "name": "Ann", "password": "password-123"}),
        )
        .await;
    acc.expect(201);
    assert_eq!(acc.body["user"]["role"], "TENANT_USER");
    assert_eq!(
        acc.body["user"]["tenantId"].as_str(),
        Some(admin.tenant_id.as_str())
    );
    // Single use.
    s.post(
        "/api/auth/accept-invite",
        None,
        json!({"token": token, "name": "Ann", "password": "password-123"}),
    )
    .await
    .expect_err(400, "invalid_token");
    let users = s
        .get(
            &format!("/api/tenants/{}/users", admin.tenant_id),
            &admin.token,
        )
        .await;
    users.expect(200);
    assert_eq!(users.body["data"].as_array().map(Vec::len), Some(2));
    let invs = s
        .get(
            &format!("/api/tenants/{}/invitations", admin.tenant_id),
            &admin.token,
        )
        .await;
    invs.expect(200);
    assert!(invs.body["data"][0]["acceptedAt"].is_string());

    // A withdrawn invitation stops working.
    let r = s
        .post(
            &format!("/api/tenants/{}/users", admin.tenant_id),
            Some(&admin.token),
            json!({"email": "late@x.test", "role": "TENANT_ADMIN"}),
        )
        .await;
    let inv_id = r.body["invitation"]["id"].as_str().expect("id").to_string();
    let token = token_from(r.body["inviteUrl"].as_str().expect("url"));
    s.delete(
        &format!("/api/tenants/{}/invitations/{inv_id}", admin.tenant_id),
        &admin.token,
    )
    .await
    .expect(204);
    s.post(
        "/api/auth/accept-invite",
        None,
        json!({"token": token, "name": "L", "password": "password-123"}),
    )
    .await
    .expect_err(400, "invalid_token");
}

#[tokio::test]
async fn signup_modes() {
    let s = start_with(|c| c.signup = aigentable::types::SignupMode::Invite).await;
    s.post(
        "/api/auth/register",
        None,
        json!({"email": "a@x.test", "password": "password-123", "name": "A", "tenantName": "A"}),
    )
    .await
    .expect_err(403, "signup_disabled");
    // Platform admin creates a tenant and invites its admin: that still works.
    let root = s.root().await;
    let t = s
        .post("/api/tenants", Some(&root.token), json!({"name": "Shop"}))
        .await;
    t.expect(201);
    let tid = t.body["id"].as_str().expect("id").to_string();
    let admin = s
        .invite_and_accept(&root, &tid, "owner@shop.test", "TENANT_ADMIN")
        .await;
    s.get("/api/auth/me", &admin.token).await.expect(200);

    let closed = start_with(|c| c.signup = aigentable::types::SignupMode::Closed).await;
    let root = closed.root().await;
    let t = closed
        .post("/api/tenants", Some(&root.token), json!({"name": "Shop"}))
        .await;
    let tid = t.body["id"].as_str().expect("id").to_string();
    closed
        .post(
            &format!("/api/tenants/{tid}/users"),
            Some(&root.token),
            json!({"email": "x@y.test", "role": "TENANT_USER"}),
        )
        .await
        .expect_err(403, "signup_disabled");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let s = start_with(|c| {
        c.rate_limit_auth_per_min = 5;
        c.rate_limit_api_per_min = 3;
    })
    .await;
    let a = s.register("a@x.test", "A").await; // 1 auth request
    let mut last = None;
    for _ in 0..5 {
        last = Some(
            s.post(
                "/api/auth/login",
                None,
                json!({"email": "a@x.test", "password": "bad-password"}),
            )
            .await,
        );
    }
    let r = last.expect("ran");
    r.expect_err(429, "rate_limited");
    let retry: u64 = r.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    assert!((1..=60).contains(&retry), "{retry}");

    for _ in 0..3 {
        s.get("/api/auth/me", &a.token).await.expect(200);
    }
    let r = s.get("/api/auth/me", &a.token).await;
    r.expect_err(429, "rate_limited");
    assert!(r.headers.contains_key("retry-after"));
    // Health is not rate limited.
    for _ in 0..10 {
        s.req(reqwest::Method::GET, "/api/health", None, None)
            .await
            .expect(200);
    }
}
