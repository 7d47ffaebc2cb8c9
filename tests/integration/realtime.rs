//! Realtime: commit order and idempotent resends over REST, and the Socket.IO server driven
//! by node's stock socket.io-client (scripts in tests/js).

use crate::common::*;
use serde_json::json;

/// A tenant with an agent (no model: turns fail fast, which is fine here) and a conversation.
async fn conversation(s: &Server, a: &Account) -> String {
    let agent = create_agent(s, a, json!({"name": "Bot"})).await;
    let r = s
        .post(
            "/api/conversations",
            Some(&a.token),
            json!({"agentId": id(&agent)}),
        )
        .await;
    r.expect(201);
    id(&r.body)
}

#[tokio::test]
async fn rest_resend_with_a_client_id_is_idempotent_and_messages_carry_seq() {
    let s = start().await;
    let a = s.register("a@x.test", "A").await;
    let cid = conversation(&s, &a).await;
    let path = format!("/api/conversations/{cid}/messages");
    let body = json!({"content": "hi", "role": "human", "clientId": "c-42"});
    let first = s.post(&path, Some(&a.token), body.clone()).await;
    first.expect(201);
    assert_eq!(first.body["message"]["clientId"], "c-42");
    assert_eq!(first.body["message"]["seq"], 1);
    let again = s.post(&path, Some(&a.token), body).await;
    again.expect(200);
    assert_eq!(again.body["message"]["id"], first.body["message"]["id"]);
    let list = s.get(&path, &a.token).await;
    list.expect(200);
    assert_eq!(list.body["data"].as_array().map(Vec::len), Some(1));
    // Another key is another message, numbered next.
    let other = s
        .post(
            &path,
            Some(&a.token),
            json!({"content": "hi", "role": "human", "clientId": "c-43"}),
        )
        .await;
    other.expect(201);
    assert_eq!(other.body["message"]["seq"], 2);
    let long = s
        .post(
            &path,
            Some(&a.token),
            json!({"content": "hi", "role": "human", "clientId": "k".repeat(65)}),
        )
        .await;
    long.expect_err(400, "validation_failed");
}
