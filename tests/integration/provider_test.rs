//! POST /api/settings/provider/test: the admin's "test" button for the AI provider answers
//! whether the saved settings work, with the provider's own words when they do not.

use crate::common::*;
use crate::engine::point_at;
use crate::fake_openai::{FakeOpenAi, Reply};
use serde_json::json;

#[tokio::test]
async fn provider_test_reports_the_answer_the_models_and_the_providers_refusal() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = s.register("pt@x.test", "Shop").await;
    point_at(&s, &a, &fake).await;

    // Working settings: the model answered, and the endpoint's models are listed.
    fake.push(Reply::text("OK"));
    let r = s
        .post("/api/settings/provider/test", Some(&a.token), json!({}))
        .await;
    r.expect(200);
    assert_eq!(r.body["ok"], true, "{}", r.text);
    assert_eq!(r.body["model"], "fake-model");
    assert_eq!(r.body["reply"], "OK");
    assert_eq!(r.body["models"], json!(["fake-large", "fake-small"]));
    assert!(r.body["error"].is_null());
    let chat = fake
        .recorded()
        .into_iter()
        .filter(|q| q.path.ends_with("/chat/completions"))
        .count();
    assert_eq!(chat, 1, "one tiny completion per test");

    // A key the provider refuses: not ok, in plain words, and the key never echoed.
    fake.require_api_key(Some("sk-right"));
    let r = s
        .post("/api/settings/provider/test", Some(&a.token), json!({}))
        .await;
    r.expect(200);
    assert_eq!(r.body["ok"], false, "{}", r.text);
    let e = r.body["error"].as_str().expect("error").to_string();
    assert!(e.contains("401") && e.contains("Check the API key"), "{e}");
    assert!(!r.text.contains("sk-test"));

    // An upstream error's message reaches the admin.
    fake.require_api_key(None);
    fake.push(Reply::error(404, "The model `fake-model` does not exist"));
    let r = s
        .post("/api/settings/provider/test", Some(&a.token), json!({}))
        .await;
    assert_eq!(r.body["ok"], false);
    assert!(
        r.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not exist")),
        "{}",
        r.text
    );

    // Only admins test; a member is refused before anything is called.
    let user = s
        .invite_and_accept(&a, &a.tenant_id, "u@x.test", "TENANT_USER")
        .await;
    let before = fake.recorded().len();
    s.post("/api/settings/provider/test", Some(&user.token), json!({}))
        .await
        .expect_err(403, "forbidden");
    s.post("/api/settings/provider/test", None, json!({}))
        .await
        .expect_err(401, "unauthorized");
    assert_eq!(fake.recorded().len(), before);
}
