//! The outbound policy from outside: where the operator's model key may go, which addresses
//! tenant-set URLs (model provider, embeddings, HTTP tools) may reach, and what of an
//! upstream's answer comes back to the client.

use crate::common::*;
use crate::engine::playground;
use crate::fake_openai::{FakeOpenAi, Reply};
use aigentable::config::Secret;
use serde_json::json;

const OPERATOR_KEY: &str = "sk-operator-0123456789abcdef";

/// The operator's key goes to the operator's URL only: a tenant that sets only `baseUrl`
/// calls its own server without it, and the settings view claims no key.
#[tokio::test]
async fn the_operator_key_never_goes_to_a_tenant_base_url() {
    let operator = FakeOpenAi::start().await;
    let tenant = FakeOpenAi::start().await;
    let op_url = operator.base_url();
    let s = start_with(|c| {
        c.openai_base_url = op_url;
        c.openai_api_key = Some(Secret::new(OPERATOR_KEY));
    })
    .await;
    let a = s.register("keys@x.test", "Shop").await;

    // On the operator's endpoint the tenant uses the operator's key.
    let r = s.get("/api/settings/ai", &a.token).await;
    r.expect(200);
    assert_eq!(r.body["apiKeySet"], true);
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    operator.push(Reply::text("Hello from the operator."));
    playground(&s, &a.token, &agent, "Hi").await.expect(200);
    let seen = operator.recorded();
    assert_eq!(
        seen.last().and_then(|r| r.authorization.clone()).as_deref(),
        Some(format!("Bearer {OPERATOR_KEY}").as_str())
    );

    // Its own base URL, no key of its own: no key at all.
    let r = s
        .put(
            "/api/settings/ai",
            &a.token,
            json!({"baseUrl": tenant.base_url()}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["apiKeySet"], false, "{}", r.body);
    assert!(r.body["apiKeyHint"].is_null(), "{}", r.body);
    let r = s.get("/api/settings/ai", &a.token).await;
    assert_eq!(r.body["apiKeySet"], false);
    assert!(r.body["apiKeyHint"].is_null());
    assert!(!r.body.to_string().contains("cdef"), "{}", r.body);

    tenant.push(Reply::text("Hello from the tenant's server."));
    let r = playground(&s, &a.token, &agent, "Hi").await;
    r.expect(200);
    assert_eq!(r.body["reply"], "Hello from the tenant's server.");
    let seen = tenant.recorded();
    assert_eq!(seen.len(), 1);
    for req in &seen {
        let auth = req.authorization.clone().unwrap_or_default();
        assert!(
            !auth.contains(OPERATOR_KEY),
            "the operator key leaked: {auth}"
        );
        assert!(req.authorization.is_none(), "{auth}");
    }

    // With a key of its own, that key goes to its server.
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"apiKey": "sk-tenant-own-key-5678"}),
    )
    .await
    .expect(200);
    tenant.push(Reply::text("Again."));
    playground(&s, &a.token, &agent, "Hi").await.expect(200);
    assert_eq!(
        tenant
            .recorded()
            .last()
            .and_then(|r| r.authorization.clone())
            .as_deref(),
        Some("Bearer sk-tenant-own-key-5678")
    );

    // Back on the operator's URL (written out, trailing slash and all): the operator's key.
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"apiKey": null, "baseUrl": format!("{}/", operator.base_url())}),
    )
    .await
    .expect(200);
    let r = s.get("/api/settings/ai", &a.token).await;
    assert_eq!(r.body["apiKeySet"], true);
}
