//! Conversations: inbox listing, assignment, close and reopen, human replies, isolation.

use crate::common::*;
use serde_json::json;

async fn agent(s: &Server, a: &Account, body: serde_json::Value) -> String {
    let r = s.post("/api/agents", Some(&a.token), body).await;
    r.expect(201);
    r.body["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn inbox_rules() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let user = s
        .invite_and_accept(&a, &a.tenant_id, "u@x.test", "TENANT_USER")
        .await;
    let bot = agent(
        &s,
        &a,
        json!({"name": "Bot", "greeting": "Hello! How can I help?"}),
    )
    .await;

    let r = s
        .post(
            "/api/conversations",
            Some(&user.token),
            json!({"agentId": bot, "customer": {"name": "Carla", "email": "c@example.com"}}),
        )
        .await;
    r.expect(201);
    let cid = r.body["id"].as_str().expect("id").to_string();
    assert_eq!(r.body["status"], "open");
    assert_eq!(r.body["mode"], "ai");
    assert_eq!(r.body["messageCount"], 1, "the greeting");

    let detail = s
        .get(&format!("/api/conversations/{cid}"), &user.token)
        .await;
    detail.expect(200);
    assert_eq!(
        detail.body["messages"][0]["content"],
        "Hello! How can I help?"
    );
    assert_eq!(detail.body["messages"][0]["role"], "ai");
    assert_eq!(detail.body["customer"]["name"], "Carla");

    // TENANT_USER takes over: mode human.
    let r = s
        .put(
            &format!("/api/conversations/{cid}/assign"),
            &user.token,
            json!({"userId": user.user_id}),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["mode"], "human");
    assert_eq!(r.body["assigneeId"].as_str(), Some(user.user_id.as_str()));
    let filtered = s
        .get(
            &format!("/api/conversations?assigneeId={}", user.user_id),
            &user.token,
        )
        .await;
    assert_eq!(filtered.body["data"].as_array().map(Vec::len), Some(1));

    // Close, then a customer message reopens it (still with the person).
    let r = s
        .put(
            &format!("/api/conversations/{cid}/close"),
            &user.token,
            json!({}),
        )
        .await;
    assert_eq!(r.body["status"], "closed");
    assert!(r.body["closedAt"].is_string());
    let closed = s.get("/api/conversations?status=closed", &user.token).await;
    assert_eq!(closed.body["data"].as_array().map(Vec::len), Some(1));

    // Back to the AI agent.
    let r = s
        .put(
            &format!("/api/conversations/{cid}/assign"),
            &user.token,
            json!({"agentId": bot}),
        )
        .await;
    assert_eq!(r.body["mode"], "ai");
    assert!(r.body["assigneeId"].is_null());
    s.put(
        &format!("/api/conversations/{cid}/assign"),
        &user.token,
        json!({}),
    )
    .await
    .expect_err(400, "validation_failed");
    s.put(
        &format!("/api/conversations/{cid}/assign"),
        &user.token,
        json!({"userId": "01937c00-0000-7000-8000-000000000000"}),
    )
    .await
    .expect_err(404, "user_not_found");
}

#[tokio::test]
async fn conversations_are_isolated_and_listed_newest_first() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let b = s.register("b@x.test", "B").await;
    let bot_a = agent(&s, &a, json!({"name": "Bot"})).await;
    let bot_b = agent(&s, &b, json!({"name": "Bot"})).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = s
            .post(
                "/api/conversations",
                Some(&a.token),
                json!({"agentId": bot_a}),
            )
            .await;
        ids.push(r.body["id"].as_str().expect("id").to_string());
    }
    // An agent of another tenant cannot be used.
    s.post(
        "/api/conversations",
        Some(&a.token),
        json!({"agentId": bot_b}),
    )
    .await
    .expect_err(404, "agent_not_found");
    let list = s.get("/api/conversations?limit=2", &a.token).await;
    let got: Vec<&str> = list.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()]);
    let next = list.body["nextCursor"].as_str().expect("cursor");
    let list2 = s
        .get(
            &format!("/api/conversations?limit=2&cursor={next}"),
            &a.token,
        )
        .await;
    assert_eq!(list2.body["data"][0]["id"].as_str(), Some(ids[0].as_str()));

    let cid = &ids[0];
    for (m, path, body) in [
        (
            reqwest::Method::GET,
            format!("/api/conversations/{cid}"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/api/conversations/{cid}/messages"),
            None,
        ),
        (
            reqwest::Method::PUT,
            format!("/api/conversations/{cid}/assign"),
            Some(json!({"agentId": bot_b})),
        ),
        (
            reqwest::Method::PUT,
            format!("/api/conversations/{cid}/close"),
            Some(json!({})),
        ),
    ] {
        let r = s.req(m.clone(), &path, Some(&b.token), body).await;
        r.expect_err(404, "conversation_not_found");
    }
    assert_eq!(
        s.get("/api/conversations", &b.token).await.body["data"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

/// A person answering a conversation the AI handles takes it over: the AI stops answering
/// the customer (it would talk over the person) and the conversation is theirs, unless
/// someone already has it.
#[tokio::test]
async fn a_persons_reply_takes_the_conversation_from_the_ai() {
    let s = start().await;
    let a = s.register("take@x.test", "Take").await;
    let user = s
        .invite_and_accept(&a, &a.tenant_id, "u2@x.test", "TENANT_USER")
        .await;
    let bot = agent(&s, &a, json!({"name": "Bot"})).await;
    let r = s
        .post(
            "/api/conversations",
            Some(&user.token),
            json!({"agentId": bot}),
        )
        .await;
    r.expect(201);
    let cid = r.body["id"].as_str().expect("id").to_string();
    let msgs = format!("/api/conversations/{cid}/messages");

    // The customer writes while the AI has it: the agent answers (here: a failed answer,
    // the tenant has no model configured).
    let r = s
        .post(
            &msgs,
            Some(&user.token),
            json!({"content": "Hi", "role": "customer"}),
        )
        .await;
    r.expect(201);
    assert!(r.body["reply"].is_object(), "the AI answers in AI mode");

    let r = s
        .post(
            &msgs,
            Some(&user.token),
            json!({"content": "I'll help you.", "role": "human"}),
        )
        .await;
    r.expect(201);
    let c = s
        .get(&format!("/api/conversations/{cid}"), &user.token)
        .await;
    assert_eq!(c.body["mode"], "human");
    assert_eq!(c.body["status"], "open");
    assert_eq!(c.body["assigneeId"].as_str(), Some(user.user_id.as_str()));

    // Now the customer's messages wait for the person.
    let r = s
        .post(
            &msgs,
            Some(&user.token),
            json!({"content": "Thanks!", "role": "customer"}),
        )
        .await;
    r.expect(201);
    assert!(
        r.body["reply"].is_null(),
        "no AI answer once a person has taken over"
    );

    // A second person's reply does not steal an assigned conversation.
    let r = s
        .post(
            &msgs,
            Some(&a.token),
            json!({"content": "Also here.", "role": "human"}),
        )
        .await;
    r.expect(201);
    let c = s
        .get(&format!("/api/conversations/{cid}"), &user.token)
        .await;
    assert_eq!(c.body["assigneeId"].as_str(), Some(user.user_id.as_str()));
}
