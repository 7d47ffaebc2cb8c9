//! Answers without a language model: agents in `extractive` mode, and in `auto` mode with
//! no provider configured or a provider that is down, answer with the sentences of their
//! documents that answer, cited, in conversations, the playground (streamed) and /v1; and
//! with their fallback message when nothing relevant is found.

use crate::common::*;
use crate::engine::{
    ai_tenant, bounded, conversation, create_agent, id, new_conversation, playground,
    playground_stream, say, upload_doc,
};
use crate::fake_openai::{FakeOpenAi, Reply};
use serde_json::{Value, json};

const PREFIX: &str = "From our documents: ";
const FALLBACK: &str = "Please ask our team at the desk.";

const GUIDE: &str = "# Store Guide\n\n## Opening hours\n\nThe Lisbon shop opens at nine o'clock and closes at six o'clock on weekdays. On Saturdays it opens at ten. It is closed on Sundays and public holidays.\n\n## Returns\n\nUnused items can be returned within 30 days with the receipt. Refunds go back to the card used for the purchase.\n\n## Delivery\n\nOrders ship from our Porto warehouse. Delivery within Portugal takes two working days.\n";

/// An agent (with `extra` fields) whose only document is the guide; (agent id, doc id).
async fn guide_agent(s: &Server, a: &Account, extra: Value) -> (String, String) {
    let mut body = json!({"name": "Guide", "slug": "guide", "fallbackMessage": FALLBACK});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let agent = id(&create_agent(s, a, body).await);
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

/// An extractive answer: the prefix, the expected passage, a citation of the guide, and
/// nothing from the guide's other sections.
#[track_caller]
fn assert_extracted(reply: &str, citations: &Value, doc: &str, has: &str, not: &[&str]) {
    assert!(reply.starts_with(PREFIX), "{reply}");
    assert!(reply.contains(has), "{reply}");
    assert!(reply.contains("[1]"), "cited by number: {reply}");
    for n in not {
        assert!(!reply.contains(n), "{n} does not answer: {reply}");
    }
    assert_eq!(citations[0]["documentId"], doc, "{citations}");
    assert_eq!(citations[0]["documentName"], "guide.md", "{citations}");
}

async fn v1_chat(s: &Server, key: &str, text: &str) -> Resp {
    let r = bounded(
        "/v1/chat/completions",
        send(
            s.http
                .post(format!("{}/v1/chat/completions", s.base))
                .bearer_auth(key)
                .json(&json!({"model": "guide", "messages": [{"role": "user", "content": text}]})),
        ),
    )
    .await;
    r.expect(200);
    r
}

#[tokio::test]
async fn without_a_model_provider_agents_answer_from_their_documents_everywhere() {
    // The test server has no OPENAI_API_KEY and the default base URL: no provider.
    let s = start().await;
    let a = s.register("extract@x.test", "Shop").await;
    let (agent, doc) = guide_agent(&s, &a, json!({})).await;
    let view = s.get(&format!("/api/agents/{agent}"), &a.token).await;
    assert_eq!(view.body["answerMode"], "auto", "{}", view.text);

    // Conversations (turn jobs).
    let cid = new_conversation(&s, &a.token, &agent).await;
    let r = say(
        &s,
        &a.token,
        &cid,
        "When does the Lisbon shop open on Saturdays?",
    )
    .await;
    let reply = &r.body["reply"];
    assert_eq!(reply["status"], "sent", "{}", r.text);
    assert_extracted(
        reply["content"].as_str().unwrap_or(""),
        &reply["citations"],
        &doc,
        "On Saturdays it opens at ten.",
        &["Refunds", "Porto", "receipt"],
    );
    assert_eq!(reply["usage"]["promptTokens"], 0, "no model was called");

    // The unrelated question gets the fallback, not a passage sharing its stop words.
    let r = say(&s, &a.token, &cid, "What is the capital of France?").await;
    assert_eq!(r.body["reply"]["content"], FALLBACK, "{}", r.text);
    assert_eq!(r.body["reply"]["citations"], json!([]), "{}", r.text);
    let c = conversation(&s, &a.token, &cid).await;
    let stored: Vec<&str> = c["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "ai")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(stored.len(), 2, "{c}");
    assert!(stored.contains(&FALLBACK), "{c}");

    // The playground, streamed: deltas that add up to the answer, then `done`.
    let events = playground_stream(
        &s,
        &a.token,
        &agent,
        "How long does delivery within Portugal take?",
    )
    .await;
    let deltas: String = events
        .iter()
        .filter(|(e, _)| e == "delta")
        .filter_map(|(_, v)| v["content"].as_str())
        .collect();
    assert!(
        events.iter().filter(|(e, _)| e == "delta").count() > 1,
        "streamed in pieces: {events:?}"
    );
    let (last, done) = events.last().expect("events");
    assert_eq!(last, "done", "{events:?}");
    assert_eq!(done["reply"], deltas.as_str());
    assert_extracted(
        &deltas,
        &done["citations"],
        &doc,
        "Delivery within Portugal takes two working days.",
        &["Lisbon", "Refunds"],
    );
    // And not streamed.
    let r = playground(&s, &a.token, &agent, "What is the capital of France?").await;
    r.expect(200);
    assert_eq!(r.body["reply"], FALLBACK, "{}", r.text);

    // /v1/chat/completions with an API key.
    let key = s
        .post("/api/api-keys", Some(&a.token), json!({"name": "v1"}))
        .await;
    key.expect(201);
    let key = key.body["secret"].as_str().expect("secret").to_string();
    let r = v1_chat(&s, &key, "Can I return unused items?").await;
    assert_extracted(
        r.body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or(""),
        &r.body["citations"],
        &doc,
        "returned within 30 days",
        &["Lisbon", "Porto"],
    );
    let r = v1_chat(&s, &key, "What is the capital of France?").await;
    assert_eq!(r.body["choices"][0]["message"]["content"], FALLBACK);
    // Streamed: OpenAI chunks adding up to the answer, the citations on the last one.
    let resp = bounded(
        "/v1/chat/completions streamed",
        s.http
            .post(format!("{}/v1/chat/completions", s.base))
            .bearer_auth(&key)
            .json(&json!({"model": "guide", "stream": true, "messages": [
                {"role": "user", "content": "Where do orders ship from?"}]}))
            .send(),
    )
    .await
    .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    let body = bounded("the stream", resp.text()).await.expect("body");
    let (mut content, mut chunks, mut citations) = (String::new(), 0, Value::Null);
    for line in body.lines() {
        let Some(d) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if d == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(d).expect("a JSON chunk");
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str()
            && !c.is_empty()
        {
            content.push_str(c);
            chunks += 1;
        }
        if v["citations"].is_array() {
            citations = v["citations"].clone();
        }
    }
    assert!(chunks > 1, "streamed in pieces: {body}");
    assert_extracted(
        &content,
        &citations,
        &doc,
        "Orders ship from our Porto warehouse.",
        &["Lisbon", "Refunds"],
    );
}

#[tokio::test]
async fn auto_answers_from_the_documents_while_the_provider_is_down() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "down@x.test", &fake).await;
    let (agent, doc) = guide_agent(&s, &a, json!({})).await;
    let cid = new_conversation(&s, &a.token, &agent).await;

    // The provider fails as down (500 on the first attempt and every retry).
    for _ in 0..4 {
        fake.push(Reply::error(500, "the model exploded"));
    }
    let r = say(&s, &a.token, &cid, "Can I return unused items?").await;
    let reply = &r.body["reply"];
    assert_eq!(reply["status"], "sent", "{}", r.text);
    assert_extracted(
        reply["content"].as_str().unwrap_or(""),
        &reply["citations"],
        &doc,
        "returned within 30 days",
        &["Lisbon"],
    );
    assert_eq!(fake.requests().len(), 4);

    // Known to be down: the next turn does not wait for it.
    let r = say(
        &s,
        &a.token,
        &cid,
        "When does the Lisbon shop open on Saturdays?",
    )
    .await;
    assert!(
        r.body["reply"]["content"]
            .as_str()
            .is_some_and(|c| c.starts_with(PREFIX) && c.contains("opens at ten")),
        "{}",
        r.text
    );
    assert_eq!(fake.requests().len(), 4, "the provider was not asked");

    // `generate` always asks the model; its answer clears the outage for `auto` too.
    s.put(
        &format!("/api/agents/{agent}"),
        &a.token,
        json!({"answerMode": "generate"}),
    )
    .await
    .expect(200);
    fake.push(Reply::text("We open at ten on Saturdays [1]."));
    let r = say(&s, &a.token, &cid, "And on Saturdays?").await;
    assert_eq!(
        r.body["reply"]["content"], "We open at ten on Saturdays [1].",
        "{}",
        r.text
    );
    s.put(
        &format!("/api/agents/{agent}"),
        &a.token,
        json!({"answerMode": "auto"}),
    )
    .await
    .expect(200);
    fake.push(Reply::text("Within 30 days [1]."));
    let r = say(&s, &a.token, &cid, "How long can I return things?").await;
    assert_eq!(
        r.body["reply"]["content"], "Within 30 days [1].",
        "{}",
        r.text
    );
    assert_eq!(fake.requests().len(), 6);

    // A provider error that is not an outage (a bad request) stays a failure.
    fake.push(Reply::Status(
        400,
        "{\"error\":{\"message\":\"bad\"}}".into(),
        None,
    ));
    let r = say(&s, &a.token, &cid, "Where do orders ship from?").await;
    assert_eq!(r.body["reply"]["status"], "failed", "{}", r.text);
}

#[tokio::test]
async fn extractive_mode_never_calls_the_model_and_is_validated() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "mode@x.test", &fake).await;
    s.post(
        "/api/agents",
        Some(&a.token),
        json!({"name": "x", "answerMode": "magic"}),
    )
    .await
    .expect_err(400, "validation_failed");
    let (agent, doc) = guide_agent(&s, &a, json!({"answerMode": "extractive"})).await;
    let view = s.get(&format!("/api/agents/{agent}"), &a.token).await;
    assert_eq!(view.body["answerMode"], "extractive");
    let r = playground(&s, &a.token, &agent, "Where do orders ship from?").await;
    r.expect(200);
    assert_extracted(
        r.body["reply"].as_str().unwrap_or(""),
        &r.body["citations"],
        &doc,
        "Orders ship from our Porto warehouse.",
        &["Lisbon", "Refunds"],
    );
    assert!(fake.requests().is_empty(), "the model was not called");
}

/// With the tenant's embedding model (sentences scored by meaning too, the guard seeing
/// cosines), answers still quote the right section, and an unrelated question still gets
/// the fallback.
#[tokio::test]
async fn extractive_answers_with_the_real_embedding_model() {
    let Some((model, ort)) = crate::test_model::model_and_runtime(
        "extractive::extractive_answers_with_the_real_embedding_model",
    ) else {
        return;
    };
    let s = start_with(move |c| {
        c.embeddings_provider = Some("onnx".into());
        c.embeddings_model_dir = Some(model);
        c.ort_dylib_path = Some(ort);
    })
    .await;
    let a = s.register("dense@x.test", "Shop").await;
    let (agent, doc) = guide_agent(&s, &a, json!({"answerMode": "extractive"})).await;
    let r = playground(&s, &a.token, &agent, "Can I get a refund for unused items?").await;
    r.expect(200);
    let reply = r.body["reply"].as_str().unwrap_or("");
    assert_extracted(reply, &r.body["citations"], &doc, "", &["Lisbon", "Porto"]);
    assert!(
        reply.contains("Unused items can be returned") || reply.contains("Refunds go back"),
        "{reply}"
    );
    let r = playground(&s, &a.token, &agent, "What is the capital of France?").await;
    assert_eq!(r.body["reply"], FALLBACK, "{}", r.text);
}
