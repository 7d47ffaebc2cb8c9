//! Chat turns end to end: citations carry the chunk's headings (conversation, playground,
//! /v1), a turn that fails after tool calls still counts the tokens it used, and the
//! conversation endpoint reports where the request's time went.

use crate::common::*;
use crate::engine::{
    GUIDE, ai_tenant, bounded, create_agent, id, new_conversation, say, upload_doc,
};
use crate::fake_openai::{FakeOpenAi, Reply};
use serde_json::{Value, json};

/// An agent (named `name`) with the store guide (`# Store Guide` / `## Opening hours`).
async fn guide_agent(s: &Server, a: &Account, name: &str) -> (String, String) {
    let agent = id(&create_agent(s, a, json!({"name": name})).await);
    let doc = upload_doc(
        s,
        &a.token,
        "guide.md",
        "text/markdown",
        GUIDE.as_bytes(),
        Some(&agent),
    )
    .await;
    (agent, doc)
}

#[track_caller]
fn assert_guide_headings(citation: &Value, context: &str) {
    let headings: Vec<&str> = citation["headings"]
        .as_array()
        .unwrap_or_else(|| panic!("no headings array: {context}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        headings.contains(&"Opening hours"),
        "{headings:?}: {context}"
    );
}

#[tokio::test]
async fn citations_carry_the_chunks_headings_everywhere() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "headings@x.test", &fake).await;
    let (agent, doc) = guide_agent(&s, &a, "Guide Bot").await;

    // A conversation: in the reply, and in the message as stored.
    let cid = new_conversation(&s, &a.token, &agent).await;
    fake.push(Reply::text("It opens at nine o'clock [1]."));
    let r = say(&s, &a.token, &cid, "When does the Lisbon shop open?").await;
    let cite = &r.body["reply"]["citations"][0];
    assert_eq!(
        cite["documentId"].as_str(),
        Some(doc.as_str()),
        "{}",
        r.text
    );
    assert_guide_headings(cite, &r.text);
    let stored = s
        .get(&format!("/api/conversations/{cid}/messages"), &a.token)
        .await;
    stored.expect(200);
    let ai = stored.body["data"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["role"] == "ai")
        .cloned()
        .expect("the stored reply");
    assert_guide_headings(&ai["citations"][0], &stored.text);

    // The playground.
    fake.push(Reply::text("At nine o'clock [1]."));
    let r = bounded(
        "the playground",
        s.post(
            &format!("/api/agents/{agent}/test"),
            Some(&a.token),
            json!({"message": "When does the Lisbon shop open?"}),
        ),
    )
    .await;
    r.expect(200);
    assert_guide_headings(&r.body["citations"][0], &r.text);
    assert!(r.body["upstreamMs"].as_f64().is_some(), "{}", r.text);

    // The OpenAI-compatible API.
    let key = s
        .post("/api/api-keys", Some(&a.token), json!({"name": "k"}))
        .await;
    key.expect(201);
    let key = key.body["secret"].as_str().expect("secret").to_string();
    fake.push(Reply::text("Nine o'clock [1]."));
    let r = bounded(
        "a /v1 completion",
        send(
            s.http
                .post(format!("{}/v1/chat/completions", s.base))
                .bearer_auth(&key)
                .json(&json!({"model": "guide-bot", "messages": [
                    {"role": "user", "content": "When does the Lisbon shop open?"}
                ]})),
        ),
    )
    .await;
    r.expect(200);
    assert_guide_headings(&r.body["citations"][0], &r.text);
}

#[tokio::test]
async fn a_turn_failing_after_tool_calls_counts_the_tokens_it_used() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "failusage@x.test", &fake).await;
    let (agent, _) = guide_agent(&s, &a, "Tool Bot").await;
    let cid = new_conversation(&s, &a.token, &agent).await;
    fake.push(Reply::tool_call(
        "search_knowledge",
        r#"{"query":"opening hours"}"#,
    ));
    fake.push(Reply::error(400, "context too long"));
    let r = say(&s, &a.token, &cid, "When do you open?").await;
    let reply = &r.body["reply"];
    assert_eq!(reply["status"], "failed", "{}", r.text);
    assert_eq!(fake.requests().len(), 2);
    // The first model call (the tool round) reported usage: it is on the failed message.
    let prompt = reply["usage"]["promptTokens"].as_u64().unwrap_or(0);
    let completion = reply["usage"]["completionTokens"].as_u64().unwrap_or(0);
    assert!(prompt > 0 && completion > 0, "{}", r.text);

    // And in the agent's rollup.
    let rows = s.stop_and_read_analytics(&a.tenant_id, &agent).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].failed_turns, 1, "{rows:?}");
    assert_eq!(rows[0].prompt_tokens, prompt, "{rows:?}");
    assert_eq!(rows[0].completion_tokens, completion, "{rows:?}");
}

#[tokio::test]
async fn posting_a_customer_message_reports_server_and_upstream_time() {
    let fake = FakeOpenAi::start().await;
    fake.set_chunk_delay(std::time::Duration::from_millis(30));
    let s = start().await;
    let a = ai_tenant(&s, "timing@x.test", &fake).await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let cid = new_conversation(&s, &a.token, &agent).await;
    fake.push(Reply::text("Hello there."));
    let r = say(&s, &a.token, &cid, "Hi").await;
    assert_eq!(r.body["reply"]["status"], "sent", "{}", r.text);
    let t = &r.body["timing"];
    let (total, upstream, server) = (
        t["totalMs"].as_f64().expect("totalMs"),
        t["upstreamMs"].as_f64().expect("upstreamMs"),
        t["serverMs"].as_f64().expect("serverMs"),
    );
    assert!(upstream > 0.0 && upstream <= total, "{}", r.text);
    assert!((total - upstream - server).abs() < 0.01, "{}", r.text);

    // No AI reply, no timing.
    let r = s
        .post(
            &format!("/api/conversations/{cid}/messages"),
            Some(&a.token),
            json!({"content": "a note", "role": "human"}),
        )
        .await;
    r.expect(201);
    assert!(r.body.get("timing").is_none(), "{}", r.text);
}
