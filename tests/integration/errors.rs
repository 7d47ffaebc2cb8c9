//! The one error body everywhere, body limits, content types.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn framework_errors_use_the_error_body() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;

    // Malformed JSON.
    let r = send(
        s.http
            .post(format!("{}/api/auth/login", s.base))
            .header("content-type", "application/json")
            .body("{\"email\": "),
    )
    .await;
    r.expect_err(400, "malformed_json");
    assert!(r.body["requestId"].is_string());
    assert_eq!(
        r.body["requestId"].as_str(),
        r.headers["x-request-id"].to_str().ok()
    );

    // Wrong type names the field.
    let r = s
        .post(
            "/api/auth/login",
            None,
            json!({"email": ["x"], "password": "p"}),
        )
        .await;
    r.expect_err(400, "validation_failed");
    assert_eq!(r.body["error"]["details"]["fields"][0]["field"], "email");

    // Not JSON at all.
    let r = send(
        s.http
            .post(format!("{}/api/auth/login", s.base))
            .header("content-type", "text/plain")
            .body("hello"),
    )
    .await;
    r.expect_err(415, "unsupported_media_type");

    // Unknown route and wrong method under /api.
    s.get("/api/does-not-exist", &a.token)
        .await
        .expect_err(404, "route_not_found");
    let r = s
        .req(reqwest::Method::PATCH, "/api/auth/login", None, None)
        .await;
    r.expect_err(405, "method_not_allowed");

    // Bad path id.
    s.get("/api/tenants/123", &a.token)
        .await
        .expect_err(400, "invalid_id");
    s.delete("/api/api-keys/%2e%2e%2f", &a.token)
        .await
        .expect_err(400, "invalid_id");
}

#[tokio::test]
async fn oversized_bodies_get_413_and_the_server_keeps_serving() {
    let s = start_with(|c| c.body_limit_bytes = 64 * 1024).await;
    let big = "x".repeat(200 * 1024);
    let r = s
        .post(
            "/api/auth/register",
            None,
            json!({"email": "a@x.test", "password": "password-123", "name": big, "tenantName": "A"}),
        )
        .await;
    r.expect_err(413, "payload_too_large");
    let a = s.register("a@x.test", "A").await;
    // Optional bodies (logout, train) are held to the JSON limit too, not the upload limit.
    let agent = s
        .post("/api/agents", Some(&a.token), json!({"name": "Helper"}))
        .await;
    agent.expect(201);
    let train = format!(
        "/api/agents/{}/train",
        agent.body["id"].as_str().expect("id")
    );
    for path in [train.as_str(), "/api/auth/logout"] {
        s.post(path, Some(&a.token), json!({"documentIds": [], "pad": big}))
            .await
            .expect_err(413, "payload_too_large");
    }
    s.post("/api/auth/logout", Some(&a.token), json!({}))
        .await
        .expect(204);
}

#[tokio::test]
async fn security_headers_everywhere() {
    let s = start().await;
    for path in ["/api/health", "/api/nope", "/api/docs/"] {
        let r = send(s.http.get(format!("{}{path}", s.base))).await;
        let h = &r.headers;
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert!(h.contains_key("referrer-policy"), "{path}");
        assert!(h.contains_key("cross-origin-opener-policy"), "{path}");
        assert!(h.contains_key("cross-origin-resource-policy"), "{path}");
        assert!(
            h["content-security-policy"]
                .to_str()
                .expect("csp")
                .contains("frame-ancestors 'none'")
        );
        assert!(h.contains_key("x-request-id"), "{path}");
        assert!(
            !h.contains_key("strict-transport-security"),
            "no HSTS unless configured"
        );
    }
    let tls = start_with(|c| c.hsts = true).await;
    let r = send(tls.http.get(format!("{}/api/health", tls.base))).await;
    assert!(r.headers.contains_key("strict-transport-security"));
}

#[tokio::test]
async fn cors_only_for_configured_origins() {
    let s = start_with(|c| c.cors_origins = "https://app.example.com".into()).await;
    let pre = |origin: &'static str| {
        s.http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/auth/login", s.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
    };
    let ok = send(pre("https://app.example.com")).await;
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    let other = send(pre("https://evil.example.com")).await;
    assert!(!other.headers.contains_key("access-control-allow-origin"));

    let none = start().await;
    let r = send(
        none.http
            .get(format!("{}/api/health", none.base))
            .header("origin", "https://app.example.com"),
    )
    .await;
    assert!(
        !r.headers.contains_key("access-control-allow-origin"),
        "no CORS by default"
    );
}

#[tokio::test]
async fn request_ids_are_kept_or_made() {
    let s = start().await;
    let r = send(
        s.http
            .get(format!("{}/api/health", s.base))
            .header("x-request-id", "abc-123"),
    )
    .await;
    assert_eq!(r.headers["x-request-id"], "abc-123");
    let r = send(
        s.http
            .get(format!("{}/api/health", s.base))
            .header("x-request-id", "bad id with spaces"),
    )
    .await;
    assert_ne!(r.headers["x-request-id"], "bad id with spaces");
}
