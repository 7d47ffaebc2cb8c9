//! Health, metrics, OpenAPI and the offline docs page.

use crate::common::*;

#[tokio::test]
async fn health_reports_version_and_storage() {
    let s = start().await;
    let r = send(s.http.get(format!("{}/api/health", s.base))).await;
    r.expect(200);
    assert_eq!(r.body["status"], "ok");
    assert_eq!(r.body["storage"], "ok");
    assert_eq!(r.body["version"], env!("CARGO_PKG_VERSION"));
    assert!(r.body["uptimeSeconds"].is_u64());
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let s = start_with(|c| {
        c.metrics = aigentable::config::MetricsMode::Token;
        c.metrics_token = Some(aigentable::config::Secret::new("metrics-token-0123456789"));
    })
    .await;
    let a = s.register("m@x.test", "M").await;
    s.get("/api/auth/me", &a.token).await.expect(200);
    s.get("/api/auth/me", "bad").await.expect(401);
    let r = send(
        s.http
            .get(format!("{}/metrics", s.base))
            .bearer_auth("metrics-token-0123456789"),
    )
    .await;
    r.expect(200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    assert!(r.text.contains("http_requests_total{"), "{}", r.text);
    assert!(r.text.contains(r#"route="/api/auth/me""#), "{}", r.text);
    assert!(r.text.contains(r#"status="401""#));
    assert!(r.text.contains("http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn openapi_document_and_offline_docs_page() {
    let s = start().await;
    let r = send(s.http.get(format!("{}/api/openapi.json", s.base))).await;
    r.expect(200);
    assert!(
        r.body["openapi"]
            .as_str()
            .expect("version")
            .starts_with("3.1")
    );
    let paths = r.body["paths"].as_object().expect("paths");
    for p in [
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/auth/forgot",
        "/api/auth/reset",
        "/api/auth/me",
        "/api/auth/accept-invite",
        "/api/tenants",
        "/api/tenants/{id}",
        "/api/tenants/{id}/users",
        "/api/tenants/{id}/users/{userId}",
        "/api/api-keys",
        "/api/api-keys/{id}",
        "/api/health",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    let page = send(s.http.get(format!("{}/api/docs/", s.base))).await;
    page.expect(200);
    assert!(
        page.headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html")
    );
    for external in ["unpkg.com", "cdn.", "jsdelivr", "googleapis"] {
        assert!(!page.text.contains(external), "docs page loads {external}");
    }
    // Every script and stylesheet the page references is served by the binary.
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
    ] {
        let r = send(s.http.get(format!("{}/api/docs/{asset}", s.base))).await;
        assert_eq!(r.status.as_u16(), 200, "{asset}");
    }
}
