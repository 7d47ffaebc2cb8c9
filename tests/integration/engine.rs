//! The agent engine end to end against the FakeOpenAi double: RAG prompt and citations,
//! fallback, the tool loop (search_knowledge, handoff_to_human, tenant HTTP tools), history
//! trimming, upstream failures, inbox rules with AI replies, analytics and the playground.

use crate::common::*;
// Moved to common; re-exported for the tests that import them from here.
pub use crate::common::{bounded, create_agent, id, pdf, upload_doc};
use crate::fake_openai::{FakeOpenAi, Reply};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Points the tenant at the fake model provider.
pub async fn point_at(s: &Server, a: &Account, fake: &FakeOpenAi) {
    s.put(
        "/api/settings/ai",
        &a.token,
        json!({"baseUrl": fake.base_url(), "apiKey": "sk-test", "model": "fake-model"}),
    )
    .await
    .expect(200);
}

/// A new tenant whose model provider is the fake.
pub async fn ai_tenant(s: &Server, email: &str, fake: &FakeOpenAi) -> Account {
    let a = s.register(email, "Shop").await;
    point_at(s, &a, fake).await;
    a
}

pub const GUIDE: &str = "# Store Guide\n\n## Opening hours\n\nThe Lisbon shop opens at nine o'clock and closes at six o'clock on weekdays.\n";

pub async fn new_conversation(s: &Server, token: &str, agent: &str) -> String {
    let r = s
        .post(
            "/api/conversations",
            Some(token),
            json!({"agentId": agent, "customer": {"name": "Carla"}}),
        )
        .await;
    r.expect(201);
    id(&r.body)
}

/// A customer message; returns the response (`reply` is the AI's answer or null).
pub async fn say(s: &Server, token: &str, cid: &str, text: &str) -> Resp {
    let r = bounded(
        "posting a customer message",
        s.post(
            &format!("/api/conversations/{cid}/messages"),
            Some(token),
            json!({"content": text, "role": "customer"}),
        ),
    )
    .await;
    r.expect(201);
    r
}

pub async fn conversation(s: &Server, token: &str, cid: &str) -> Value {
    let r = s.get(&format!("/api/conversations/{cid}"), token).await;
    r.expect(200);
    r.body
}

/// The system message of an upstream request.
pub fn system_of(req: &Value) -> String {
    let m = &req["messages"][0];
    assert_eq!(m["role"], "system", "first message is the system prompt");
    m["content"].as_str().unwrap_or("").to_string()
}

/// All message contents of an upstream request, one per line.
pub fn prompt_of(req: &Value) -> String {
    req["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["content"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Server-Sent Events of a whole body: (event name, JSON data).
pub fn sse_events(text: &str) -> Vec<(String, Value)> {
    let text = text.replace("\r\n", "\n");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut event = String::from("message");
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
            }
        }
        if data.is_empty() {
            continue;
        }
        let data = data.join("\n");
        out.push((
            event,
            serde_json::from_str(&data).unwrap_or(Value::String(data)),
        ));
    }
    out
}

/// The playground with `stream: true`: the whole SSE body, parsed.
pub async fn playground_stream(
    s: &Server,
    token: &str,
    agent: &str,
    message: &str,
) -> Vec<(String, Value)> {
    let resp = bounded(
        "the streaming playground",
        s.http
            .post(format!("{}/api/agents/{agent}/test", s.base))
            .bearer_auth(token)
            .json(&json!({"message": message, "stream": true}))
            .send(),
    )
    .await
    .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    let text = bounded("the SSE body", resp.text()).await.expect("body");
    sse_events(&text)
}

pub async fn playground(s: &Server, token: &str, agent: &str, message: &str) -> Resp {
    bounded(
        "the playground",
        s.post(
            &format!("/api/agents/{agent}/test"),
            Some(token),
            json!({"message": message}),
        ),
    )
    .await
}

/// An agent with the store guide as its only document.
async fn guide_agent(s: &Server, a: &Account, extra: Value) -> (String, String) {
    let mut body = json!({"name": "Guide", "fallbackMessage": "Please ask our team at the desk."});
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

#[tokio::test]
async fn retrieved_chunks_reach_the_prompt_and_citations_point_at_them() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "rag@x.test", &fake).await;
    let (agent, doc) = guide_agent(&s, &a, json!({})).await;
    let manual = upload_doc(
        &s,
        &a.token,
        "manual.pdf",
        "application/pdf",
        &pdf(&[
            "Warranty lasts two years from purchase.",
            "Batteries are not covered by the warranty.",
        ]),
        Some(&agent),
    )
    .await;
    let r = s.get(&format!("/api/agents/{agent}"), &a.token).await;
    let docs = r.body["documentIds"].to_string();
    assert!(docs.contains(&doc) && docs.contains(&manual), "{docs}");

    let cid = new_conversation(&s, &a.token, &agent).await;
    fake.push(Reply::text("It opens at nine o'clock [1]."));
    let r = say(&s, &a.token, &cid, "When does the Lisbon shop open?").await;
    let reply = &r.body["reply"];
    assert_eq!(reply["status"], "sent", "{}", r.text);
    assert_eq!(reply["role"], "ai");
    assert_eq!(reply["content"], "It opens at nine o'clock [1].");
    let cites = reply["citations"].as_array().expect("citations");
    assert_eq!(cites.len(), 1, "{}", r.text);
    assert_eq!(cites[0]["documentId"].as_str(), Some(doc.as_str()));
    assert_eq!(cites[0]["documentName"], "guide.md");
    assert!(cites[0]["chunkId"].is_string());
    assert!(
        cites[0]["snippet"]
            .as_str()
            .is_some_and(|t| t.contains("opens at nine")),
        "{}",
        r.text
    );
    assert!(reply["usage"]["promptTokens"].as_u64().unwrap_or(0) > 0);

    // The upstream request: the agent's model settings, the chunk as numbered source 1,
    // with its document name and headings, and the citation rule.
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0]["model"], "fake-model");
    let sys = system_of(&reqs[0]);
    assert!(sys.contains("Sources:"), "{sys}");
    assert!(sys.contains("[1] guide.md"), "{sys}");
    assert!(sys.contains("Opening hours"), "headings are shown: {sys}");
    assert!(
        sys.contains("The Lisbon shop opens at nine o'clock"),
        "{sys}"
    );
    assert!(sys.contains("square brackets"), "{sys}");
    assert!(
        !sys.contains("Warranty"),
        "unrelated chunks are not offered: {sys}"
    );
    let last = reqs[0]["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(last["role"], "user");
    assert_eq!(last["content"], "When does the Lisbon shop open?");
    assert_eq!(
        fake.recorded()[0].authorization.as_deref(),
        Some("Bearer sk-test")
    );

    // A PDF source carries its page into the prompt and the citation.
    fake.push(Reply::text("No, batteries are excluded [1]."));
    let r = say(&s, &a.token, &cid, "Are batteries covered?").await;
    let cites = &r.body["reply"]["citations"];
    assert_eq!(cites[0]["documentId"].as_str(), Some(manual.as_str()));
    assert_eq!(cites[0]["documentName"], "manual.pdf");
    assert_eq!(cites[0]["page"], 2, "{}", r.text);
    let sys = system_of(&fake.requests()[1]);
    assert!(sys.contains("[1] manual.pdf, page 2"), "{sys}");
    // An answer citing a number that is not a source gets no citation.
    fake.push(Reply::text("See [7]."));
    let r = say(&s, &a.token, &cid, "Are batteries covered?").await;
    assert_eq!(r.body["reply"]["citations"], json!([]));
}

#[tokio::test]
async fn nothing_relevant_means_the_fallback_instruction_and_no_sources() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "fb@x.test", &fake).await;
    let (agent, _) = guide_agent(&s, &a, json!({})).await;
    let cid = new_conversation(&s, &a.token, &agent).await;
    fake.push(Reply::text("Please ask our team at the desk."));
    let r = say(&s, &a.token, &cid, "Quantum zebra xylophone?").await;
    assert_eq!(
        r.body["reply"]["content"],
        "Please ask our team at the desk."
    );
    assert_eq!(r.body["reply"]["citations"], json!([]));
    let sys = system_of(&fake.requests()[0]);
    assert!(
        sys.contains("No source in the knowledge base matched"),
        "{sys}"
    );
    assert!(
        sys.contains("reply exactly: Please ask our team at the desk."),
        "{sys}"
    );
    assert!(!sys.contains("Sources:"), "{sys}");
    assert!(!sys.contains("Lisbon"), "{sys}");

    // An agent without documents gets neither sources nor the fallback rule.
    let plain = id(&create_agent(&s, &a, json!({"name": "Plain"})).await);
    let r = playground(&s, &a.token, &plain, "Quantum zebra xylophone?").await;
    r.expect(200);
    let sys = system_of(&fake.requests()[1]);
    assert!(!sys.contains("No source"), "{sys}");
    assert!(!sys.contains("Sources:"), "{sys}");
}

#[tokio::test]
async fn search_knowledge_tool_round_trip() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "tool@x.test", &fake).await;
    let (agent, doc) = guide_agent(&s, &a, json!({})).await;
    let cid = new_conversation(&s, &a.token, &agent).await;
    fake.push(Reply::tool_call(
        "search_knowledge",
        r#"{"query":"Lisbon shop opening hours"}"#,
    ));
    fake.push(Reply::text("From nine o'clock [1]."));
    // Nothing matches the customer's words, so only the tool finds the source.
    let r = say(&s, &a.token, &cid, "Quantum zebra xylophone?").await;
    let reply = &r.body["reply"];
    assert_eq!(reply["content"], "From nine o'clock [1].", "{}", r.text);
    assert_eq!(
        reply["citations"][0]["documentId"].as_str(),
        Some(doc.as_str())
    );

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    let names: Vec<&str> = reqs[0]["tools"]
        .as_array()
        .expect("tools offered")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert!(names.contains(&"search_knowledge"), "{names:?}");
    assert!(names.contains(&"handoff_to_human"), "{names:?}");
    let msgs = reqs[1]["messages"].as_array().expect("messages");
    let call = &msgs[msgs.len() - 2];
    assert_eq!(call["role"], "assistant");
    assert_eq!(
        call["tool_calls"][0]["function"]["name"],
        "search_knowledge"
    );
    let result = &msgs[msgs.len() - 1];
    assert_eq!(result["role"], "tool");
    assert_eq!(result["tool_call_id"], call["tool_calls"][0]["id"]);
    let content = result["content"].as_str().unwrap_or("");
    assert!(content.contains("[1] guide.md"), "{content}");
    assert!(content.contains("opens at nine o'clock"), "{content}");
}

#[tokio::test]
async fn handoff_moves_the_conversation_to_a_person() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "ho@x.test", &fake).await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Desk"})).await);
    let cid = new_conversation(&s, &a.token, &agent).await;
    fake.push(Reply::tool_call(
        "handoff_to_human",
        r#"{"reason":"wants a refund"}"#,
    ));
    fake.push(Reply::text("A colleague will reply here shortly."));
    let r = say(
        &s,
        &a.token,
        &cid,
        "I want to talk to a person about a refund",
    )
    .await;
    assert_eq!(
        r.body["reply"]["content"],
        "A colleague will reply here shortly."
    );
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs[1].get("tools").is_none_or(Value::is_null),
        "no more tools after a handoff: {}",
        reqs[1]
    );
    let c = conversation(&s, &a.token, &cid).await;
    assert_eq!(c["status"], "pending_human");
    assert_eq!(c["mode"], "human");
    let system: Vec<&Value> = c["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "system")
        .collect();
    assert_eq!(system.len(), 1, "{c}");
    assert!(
        system[0]["content"]
            .as_str()
            .is_some_and(|t| t.contains("wants a refund")),
        "{c}"
    );
    let pending = s
        .get("/api/conversations?status=pending_human", &a.token)
        .await;
    assert_eq!(pending.body["data"][0]["id"].as_str(), Some(cid.as_str()));

    // The person has it now: the AI stays quiet.
    let r = say(&s, &a.token, &cid, "Hello? Anyone?").await;
    assert!(r.body["reply"].is_null(), "{}", r.text);
    let c = conversation(&s, &a.token, &cid).await;
    assert_eq!(c["status"], "pending_human");
    // No waiting to see that nothing happens: hand back to the agent and ask again. A turn
    // the quiet message had started would have taken this reply (the fake answers in order)
    // and shown as an extra upstream call.
    s.put(
        &format!("/api/conversations/{cid}/assign"),
        &a.token,
        json!({"agentId": agent}),
    )
    .await
    .expect(200);
    fake.push(Reply::text("Back with you."));
    let r = say(&s, &a.token, &cid, "Still there?").await;
    assert_eq!(r.body["reply"]["content"], "Back with you.", "{}", r.text);
    assert_eq!(fake.requests().len(), 3, "no upstream call in human mode");
    let prompt = prompt_of(fake.requests().last().expect("request"));
    assert!(prompt.contains("Hello? Anyone?"), "{prompt}");
}

#[tokio::test]
async fn a_model_that_calls_tools_forever_still_ends_with_a_reply() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "loop@x.test", &fake).await;
    let (agent, _) = guide_agent(&s, &a, json!({})).await;
    for i in 0..20 {
        fake.push(Reply::tool_call(
            "search_knowledge",
            &format!(r#"{{"query":"shop hours {i}"}}"#),
        ));
    }
    let cid = new_conversation(&s, &a.token, &agent).await;
    let r = say(&s, &a.token, &cid, "When does the Lisbon shop open?").await;
    let reply = &r.body["reply"];
    assert_eq!(reply["status"], "sent", "{}", r.text);
    assert_eq!(
        reply["content"], "Please ask our team at the desk.",
        "the fallback, not an empty answer"
    );
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 6, "MAX_STEPS model calls, then stop");
    assert!(reqs[..5].iter().all(|r| r["tools"].is_array()));
    assert!(
        reqs[5].get("tools").is_none_or(Value::is_null),
        "the last call offers no tools"
    );
    // The playground shows the calls.
    let r = playground(&s, &a.token, &agent, "When does the Lisbon shop open?").await;
    r.expect(200);
    assert_eq!(r.body["toolCalls"].as_array().map(Vec::len), Some(5));
    assert_eq!(r.body["toolCalls"][0]["name"], "search_knowledge");
}

/// What the tenant's HTTP endpoint received.
#[derive(Clone, Debug)]
struct Hit {
    secret: Option<String>,
    body: Value,
}

/// A tiny tenant endpoint on 127.0.0.1 that records calls and answers with an order status.
async fn order_api() -> (String, Arc<Mutex<Vec<Hit>>>) {
    use axum::routing::post;
    let hits = Arc::new(Mutex::new(Vec::new()));
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/orders",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let h = h.clone();
                async move {
                    h.lock().expect("lock").push(Hit {
                        secret: headers
                            .get("x-shop-secret")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string),
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    axum::Json(json!({"status": "shipped", "carrier": "CTT"}))
                }
            },
        ),
    );
    // A catalogue far larger than a small context window.
    let app = app.route(
        "/catalogue",
        post(|| async {
            (0..2000)
                .map(|i| format!("item {i}: a sturdy wooden chair in oak, walnut or ash;"))
                .collect::<Vec<_>>()
                .join("\n")
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (format!("http://{addr}/orders"), hits)
}

/// A tool at the local order API: test_config lets tenant URLs reach 127.0.0.1 (the
/// operator's OUTBOUND_ALLOWED_PRIVATE_HOSTS); the policy itself is tested in outbound.rs.
pub fn order_tool(url: &str) -> Value {
    json!({
        "type": "http",
        "name": "lookup_order",
        "description": "Look up an order's shipping status",
        "parameters": {"type": "object", "properties": {"orderId": {"type": "string", "pattern": "^A-[0-9]+$"}}, "required": ["orderId"], "additionalProperties": false},
        "url": url,
        "method": "POST",
        "headers": {"X-Shop-Secret": "s3cret-header-value"},
        "timeoutMs": 5000
    })
}

#[tokio::test]
async fn tenant_http_tool_gets_validated_arguments_and_the_secret_header() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "http@x.test", &fake).await;
    let (url, hits) = order_api().await;
    let agent = create_agent(
        &s,
        &a,
        json!({"name": "Orders", "tools": [order_tool(&url)]}),
    )
    .await;
    assert_eq!(
        agent["tools"][0]["headers"]["X-Shop-Secret"], "********",
        "header values are never shown"
    );
    let agent = id(&agent);

    fake.push(Reply::tool_call("lookup_order", r#"{"orderId":"A-17"}"#));
    fake.push(Reply::text("Your order A-17 has shipped."));
    let r = playground(&s, &a.token, &agent, "Where is my order A-17?").await;
    r.expect(200);
    assert_eq!(r.body["reply"], "Your order A-17 has shipped.");
    assert_eq!(r.body["toolCalls"][0]["name"], "lookup_order");
    assert_eq!(r.body["toolCalls"][0]["ok"], true);
    let got = hits.lock().expect("lock").clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, json!({"orderId": "A-17"}));
    assert_eq!(got[0].secret.as_deref(), Some("s3cret-header-value"));
    let reqs = fake.requests();
    let def = reqs[0]["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["function"]["name"] == "lookup_order"))
        .cloned()
        .expect("the tool is offered");
    assert_eq!(
        def["function"]["parameters"]["required"],
        json!(["orderId"])
    );
    let prompt = prompt_of(&reqs[1]);
    assert!(
        prompt.contains("shipped") && prompt.contains("CTT"),
        "{prompt}"
    );
    assert!(
        !prompt.contains("s3cret-header-value"),
        "the secret never reaches the model"
    );

    // Arguments that break the schema never reach the endpoint; the model is told why.
    fake.push(Reply::tool_call("lookup_order", r#"{"orderId":17}"#));
    fake.push(Reply::text("Which order number?"));
    let r = playground(&s, &a.token, &agent, "Where is my order?").await;
    r.expect(200);
    assert_eq!(r.body["toolCalls"][0]["ok"], false);
    assert_eq!(hits.lock().expect("lock").len(), 1);
    let prompt = prompt_of(&fake.requests()[3]);
    assert!(prompt.contains("invalid arguments"), "{prompt}");
}

#[tokio::test]
async fn long_history_is_trimmed_to_the_context_window_newest_first() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "trim@x.test", &fake).await;
    let r = s
        .put("/api/settings/ai", &a.token, json!({"contextWindow": 2048}))
        .await;
    r.expect(200);
    assert_eq!(r.body["contextWindow"], 2048);
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot", "maxTokens": 512})).await);
    let cid = new_conversation(&s, &a.token, &agent).await;
    // A person writes the history (no AI calls), then hands back to the agent.
    s.put(
        &format!("/api/conversations/{cid}/assign"),
        &a.token,
        json!({"userId": a.user_id}),
    )
    .await
    .expect(200);
    let filler = "lorem ipsum dolor sit amet consectetur adipiscing elit ".repeat(12);
    for i in 0..30 {
        let role = if i % 2 == 0 { "customer" } else { "human" };
        s.post(
            &format!("/api/conversations/{cid}/messages"),
            Some(&a.token),
            json!({"content": format!("marker-{i:02} {filler}"), "role": role}),
        )
        .await
        .expect(201);
    }
    s.put(
        &format!("/api/conversations/{cid}/assign"),
        &a.token,
        json!({"agentId": agent}),
    )
    .await
    .expect(200);
    fake.push(Reply::text("Short answer."));
    let r = say(&s, &a.token, &cid, "And the final question?").await;
    assert_eq!(r.body["reply"]["content"], "Short answer.");

    let req = &fake.requests()[0];
    assert_eq!(req["max_tokens"], 512);
    let msgs: Vec<aigentable::llm::ChatMessage> =
        serde_json::from_value(req["messages"].clone()).expect("chat messages");
    let tools = aigentable::llm::count_tokens("fake-model", &req["tools"].to_string());
    let used = aigentable::llm::count_message_tokens("fake-model", &msgs) + tools;
    assert!(
        used + 512 <= 2048,
        "{used} prompt tokens + 512 for the answer"
    );
    let contents: Vec<&str> = msgs.iter().filter_map(|m| m.content.as_deref()).collect();
    assert!(
        contents.len() > 3,
        "some history is kept: {}",
        contents.len()
    );
    assert!(contents.len() < 32, "old history is dropped");
    assert_eq!(contents.last(), Some(&"And the final question?"));
    assert!(
        contents[contents.len() - 2].starts_with("marker-29 "),
        "the newest turn is kept"
    );
    assert!(contents[contents.len() - 3].starts_with("marker-28 "));
    assert!(!contents.iter().any(|c| c.starts_with("marker-00 ")));
    // History keeps its order and roles.
    let kept: Vec<&aigentable::llm::ChatMessage> = msgs[1..msgs.len() - 1].iter().collect();
    for w in kept.windows(2) {
        assert!(w[0].content < w[1].content, "oldest first");
    }
    assert_eq!(
        msgs[msgs.len() - 2].role,
        aigentable::llm::Role::Assistant,
        "a person's message is the assistant side"
    );
}

#[tokio::test]
async fn a_huge_tool_result_is_cut_to_the_context_window() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "big@x.test", &fake).await;
    s.put("/api/settings/ai", &a.token, json!({"contextWindow": 2048}))
        .await
        .expect(200);
    let (url, _) = order_api().await;
    let tool = json!({
        "type": "http", "name": "catalogue", "description": "The whole catalogue",
        "url": url.replace("/orders", "/catalogue")
    });
    let agent = id(&create_agent(
        &s,
        &a,
        json!({"name": "Shop", "maxTokens": 512, "tools": [tool]}),
    )
    .await);
    fake.push(Reply::tool_call("catalogue", "{}"));
    fake.push(Reply::text("We have oak chairs."));
    let r = playground(&s, &a.token, &agent, "Which chairs do you sell?").await;
    r.expect(200);
    assert_eq!(r.body["toolCalls"][0]["ok"], true);
    let req = &fake.requests()[1];
    let msgs: Vec<aigentable::llm::ChatMessage> =
        serde_json::from_value(req["messages"].clone()).expect("chat messages");
    let used = aigentable::llm::count_message_tokens("fake-model", &msgs);
    assert!(
        used + 512 <= 2048,
        "{used} prompt tokens + 512 for the answer"
    );
    let result = msgs
        .last()
        .and_then(|m| m.content.clone())
        .unwrap_or_default();
    assert!(
        result.starts_with("item 0: a sturdy wooden chair"),
        "{result}"
    );
    assert!(result.contains("truncated"), "the model is told it is cut");
    assert!(!result.contains("item 1999"));
}

#[tokio::test]
async fn upstream_failures_become_failed_messages_and_the_server_keeps_serving() {
    let fake = FakeOpenAi::start().await;
    let s = start_with(|c| c.llm_timeout_secs = 1).await;
    let a = ai_tenant(&s, "fail@x.test", &fake).await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let cid = new_conversation(&s, &a.token, &agent).await;

    // 500 on every attempt: retried, then given up.
    for _ in 0..4 {
        fake.push(Reply::error(500, "the model exploded"));
    }
    let r = say(&s, &a.token, &cid, "first").await;
    let reply = &r.body["reply"];
    assert_eq!(reply["status"], "failed", "{}", r.text);
    assert_eq!(reply["role"], "ai");
    let err = reply["error"].as_str().unwrap_or("");
    assert!(
        err.contains("HTTP 500") && err.contains("the model exploded"),
        "{err}"
    );
    assert_eq!(fake.requests().len(), 4, "1 attempt + 3 retries");

    // 429 with a Retry-After too long to wait for.
    fake.push(Reply::rate_limited(3600));
    let r = say(&s, &a.token, &cid, "second").await;
    assert_eq!(r.body["reply"]["status"], "failed");
    let err = r.body["reply"]["error"].as_str().unwrap_or("");
    assert!(err.contains("rate limiting"), "{err}");

    // A provider that never answers: the 1 s timeout.
    fake.push(Reply::Hang);
    let t0 = Instant::now();
    let r = say(&s, &a.token, &cid, "third").await;
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(r.body["reply"]["status"], "failed");
    let err = r.body["reply"]["error"].as_str().unwrap_or("");
    assert!(err.contains("did not answer in time"), "{err}");

    // A wrong API key: 401, not retried, with a hint.
    fake.require_api_key(Some("sk-the-right-one"));
    let before = fake.requests().len();
    let r = say(&s, &a.token, &cid, "fourth").await;
    assert_eq!(r.body["reply"]["status"], "failed");
    let err = r.body["reply"]["error"].as_str().unwrap_or("");
    assert!(err.contains("HTTP 401") && err.contains("API key"), "{err}");
    assert!(!err.contains("sk-test"), "the key is not echoed: {err}");
    assert_eq!(fake.requests().len(), before + 1);
    fake.require_api_key(None);

    // Failed replies are stored with their reason, and the next turn works.
    let c = conversation(&s, &a.token, &cid).await;
    let failed = c["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["status"] == "failed")
        .count();
    assert_eq!(failed, 4, "{c}");
    fake.push(Reply::text("Back to normal."));
    let r = say(&s, &a.token, &cid, "fifth").await;
    assert_eq!(r.body["reply"]["status"], "sent");
    assert_eq!(r.body["reply"]["content"], "Back to normal.");
    // Failed turns do not pollute the history sent upstream.
    let prompt = prompt_of(fake.requests().last().expect("request"));
    assert!(
        prompt.contains("first") && prompt.contains("fourth"),
        "{prompt}"
    );
    assert!(!prompt.contains("exploded"), "{prompt}");

    // The playground reports upstream failures as 502 in our error shape.
    fake.push(Reply::rate_limited(3600));
    playground(&s, &a.token, &agent, "hi")
        .await
        .expect_err(502, "upstream_failed");

    // A stream that breaks off: deltas, then an `error` event, no `done`.
    fake.push(Reply::BrokenStream);
    let events = playground_stream(&s, &a.token, &agent, "hi").await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert!(names.contains(&"delta"), "{events:?}");
    assert_eq!(names.last(), Some(&"error"), "{events:?}");
    assert!(!names.contains(&"done"));
    let (_, err) = events.last().expect("error event");
    assert_eq!(err["error"]["code"], "upstream_failed");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    let r = s.http.get(format!("{}/api/health", s.base)).send().await;
    assert_eq!(r.expect("health").status().as_u16(), 200);
    fake.push(Reply::text("Still here."));
    let r = playground(&s, &a.token, &agent, "still there?").await;
    r.expect(200);
    assert_eq!(r.body["reply"], "Still here.");
}

#[tokio::test]
async fn inbox_rules_with_ai_replies() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "inbox@x.test", &fake).await;
    let user = s
        .invite_and_accept(&a, &a.tenant_id, "agent-user@x.test", "TENANT_USER")
        .await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let cid = new_conversation(&s, &user.token, &agent).await;

    // AI mode: a customer message gets an answer in the response.
    fake.push(Reply::text("Hello Carla!"));
    let r = say(&s, &user.token, &cid, "Hi there").await;
    assert_eq!(r.body["message"]["role"], "customer");
    assert_eq!(r.body["reply"]["content"], "Hello Carla!");

    // async: the reply is null now and shows up later.
    fake.push(Reply::text("Answered later."));
    let r = s
        .post(
            &format!("/api/conversations/{cid}/messages"),
            Some(&user.token),
            json!({"content": "Are you there?", "role": "customer", "async": true}),
        )
        .await;
    r.expect(201);
    assert!(r.body["reply"].is_null(), "{}", r.text);
    let t0 = Instant::now();
    loop {
        let c = conversation(&s, &user.token, &cid).await;
        let last = c["messages"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or(Value::Null);
        if last["content"] == "Answered later." {
            assert_eq!(last["role"], "ai");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no async reply: {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Assigned to a person: no AI reply; the person writes instead.
    s.put(
        &format!("/api/conversations/{cid}/assign"),
        &user.token,
        json!({"userId": user.user_id}),
    )
    .await
    .expect(200);
    let n = fake.requests().len();
    let r = say(&s, &user.token, &cid, "Can a human help?").await;
    assert!(r.body["reply"].is_null());
    let r = s
        .post(
            &format!("/api/conversations/{cid}/messages"),
            Some(&user.token),
            json!({"content": "Sure, I'm here.", "role": "human"}),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["message"]["role"], "human");
    assert_eq!(
        r.body["message"]["authorId"].as_str(),
        Some(user.user_id.as_str())
    );
    assert!(r.body["reply"].is_null());

    // Back to the agent: it answers again, with the person's turn in its history.
    s.put(
        &format!("/api/conversations/{cid}/assign"),
        &user.token,
        json!({"agentId": agent}),
    )
    .await
    .expect(200);
    fake.push(Reply::text("I'm back."));
    let r = say(&s, &user.token, &cid, "Thanks!").await;
    // The later turn is the signal that none ran in human mode: such a turn would have taken
    // this reply (the fake answers in order) and been one more upstream call.
    assert_eq!(r.body["reply"]["content"], "I'm back.");
    assert_eq!(fake.requests().len(), n + 1, "no AI in human mode");
    let prompt = prompt_of(fake.requests().last().expect("request"));
    assert!(prompt.contains("Sure, I'm here."), "{prompt}");
    assert!(
        !prompt.contains("Assigned to"),
        "system notes are not history: {prompt}"
    );

    // Closed: a customer message reopens it and the agent answers.
    s.put(
        &format!("/api/conversations/{cid}/close"),
        &user.token,
        json!({}),
    )
    .await
    .expect(200);
    fake.push(Reply::text("Welcome back."));
    let r = say(&s, &user.token, &cid, "One more thing").await;
    assert_eq!(r.body["reply"]["content"], "Welcome back.");
    let c = conversation(&s, &user.token, &cid).await;
    assert_eq!(c["status"], "open");
    assert!(c["closedAt"].is_null());

    // A TENANT_USER works conversations but does not edit agents.
    s.put(
        &format!("/api/agents/{agent}"),
        &user.token,
        json!({"name": "Mine"}),
    )
    .await
    .expect_err(403, "forbidden");

    // Another tenant cannot post into this conversation.
    let b = ai_tenant(&s, "other@x.test", &fake).await;
    let n = fake.requests().len();
    s.post(
        &format!("/api/conversations/{cid}/messages"),
        Some(&b.token),
        json!({"content": "hijack", "role": "customer"}),
    )
    .await
    .expect_err(404, "conversation_not_found");
    s.post(
        &format!("/api/conversations/{cid}/messages"),
        Some(&b.token),
        json!({"content": "hijack", "role": "human"}),
    )
    .await
    .expect_err(404, "conversation_not_found");
    assert_eq!(fake.requests().len(), n);
    let c = conversation(&s, &user.token, &cid).await;
    assert!(!c.to_string().contains("hijack"));
}

#[tokio::test]
async fn turns_are_counted_in_the_daily_rollup() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "stats@x.test", &fake).await;
    let agent = id(&create_agent(&s, &a, json!({"name": "Bot"})).await);
    let cid = new_conversation(&s, &a.token, &agent).await;
    let mut prompt = 0;
    let mut completion = 0;
    let mut add = |r: &Resp| {
        prompt += r.body["reply"]["usage"]["promptTokens"]
            .as_u64()
            .unwrap_or(0);
        completion += r.body["reply"]["usage"]["completionTokens"]
            .as_u64()
            .unwrap_or(0);
    };
    fake.push(Reply::text("An answer in a few words."));
    let r = say(&s, &a.token, &cid, "one").await;
    add(&r);
    fake.push(Reply::Status(
        400,
        "{\"error\":{\"message\":\"bad\"}}".into(),
        None,
    ));
    let r = say(&s, &a.token, &cid, "two").await;
    assert_eq!(r.body["reply"]["status"], "failed");
    fake.push(Reply::tool_call(
        "handoff_to_human",
        r#"{"reason":"angry"}"#,
    ));
    fake.push(Reply::text("Connecting you."));
    let r = say(&s, &a.token, &cid, "three").await;
    add(&r);
    assert!(prompt > 0 && completion > 0);
    // The usage of a handoff turn covers both model calls.
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 4);

    let rows = s.stop_and_read_analytics(&a.tenant_id, &agent).await;
    assert_eq!(rows.len(), 1, "one day: {rows:?}");
    let day = &rows[0];
    assert_eq!(day.turns, 3, "{day:?}");
    assert_eq!(day.failed_turns, 1, "{day:?}");
    assert_eq!(day.handoffs, 1, "{day:?}");
    assert_eq!(day.prompt_tokens, prompt, "{day:?}");
    assert_eq!(day.completion_tokens, completion, "{day:?}");
    assert_eq!(day.conversations, 1, "{day:?}");
}

#[tokio::test]
async fn playground_json_and_stream() {
    let fake = FakeOpenAi::start().await;
    let s = start().await;
    let a = ai_tenant(&s, "play@x.test", &fake).await;
    let (agent, doc) = guide_agent(&s, &a, json!({})).await;

    fake.push(Reply::text("At nine o'clock [1]."));
    let r = playground(&s, &a.token, &agent, "When does the Lisbon shop open?").await;
    r.expect(200);
    assert_eq!(r.body["reply"], "At nine o'clock [1].");
    assert_eq!(
        r.body["citations"][0]["documentId"].as_str(),
        Some(doc.as_str())
    );
    assert!(r.body["usage"]["promptTokens"].as_u64().unwrap_or(0) > 0);
    assert!(r.body["usage"]["completionTokens"].as_u64().unwrap_or(0) > 0);
    assert!(r.body["latencyMs"].is_u64());
    assert_eq!(r.body["toolCalls"], json!([]));
    // With history: earlier turns go upstream in order, before the new message.
    fake.push(Reply::text("You're welcome."));
    let r = bounded(
        "playground with history",
        s.post(
            &format!("/api/agents/{agent}/test"),
            Some(&a.token),
            json!({"message": "Thanks", "history": [
                {"role": "user", "content": "Is it open on Sunday?"},
                {"role": "assistant", "content": "No, only on weekdays."}
            ]}),
        ),
    )
    .await;
    r.expect(200);
    let msgs = fake.requests()[1]["messages"].clone();
    let roles: Vec<&str> = msgs
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(msgs[1]["content"], "Is it open on Sunday?");
    s.post(
        &format!("/api/agents/{agent}/test"),
        Some(&a.token),
        json!({"message": "x", "history": [{"role": "robot", "content": "?"}]}),
    )
    .await
    .expect_err(400, "validation_failed");
    s.post(
        &format!("/api/agents/{agent}/test"),
        Some(&a.token),
        json!({"message": "  "}),
    )
    .await
    .expect_err(400, "validation_failed");

    // Streaming: delta events that add up to the reply, then one done event.
    fake.push(Reply::tool_call(
        "search_knowledge",
        r#"{"query":"Lisbon opening hours"}"#,
    ));
    fake.push(Reply::text("The Lisbon shop opens at nine o'clock [1]."));
    let events = playground_stream(&s, &a.token, &agent, "When does the Lisbon shop open?").await;
    let (last, done) = events.last().expect("events");
    assert_eq!(last, "done", "{events:?}");
    let deltas: Vec<&Value> = events
        .iter()
        .filter(|(e, _)| e == "delta")
        .map(|(_, d)| d)
        .collect();
    assert!(deltas.len() > 1, "streamed in pieces: {events:?}");
    let text: String = deltas
        .iter()
        .filter_map(|d| d["content"].as_str())
        .collect();
    assert_eq!(text, "The Lisbon shop opens at nine o'clock [1].");
    assert_eq!(done["reply"], "The Lisbon shop opens at nine o'clock [1].");
    assert_eq!(
        done["citations"][0]["documentId"].as_str(),
        Some(doc.as_str())
    );
    assert!(done["usage"]["promptTokens"].as_u64().unwrap_or(0) > 0);
    assert!(done["latencyMs"].is_u64());
    assert_eq!(done["toolCalls"][0]["name"], "search_knowledge");
    assert_eq!(
        events.iter().filter(|(e, _)| e == "done").count(),
        1,
        "{events:?}"
    );
    let reqs = fake.requests();
    assert_eq!(reqs.last().expect("request")["stream"], true);

    // Another tenant cannot use this agent.
    let b = ai_tenant(&s, "other-play@x.test", &fake).await;
    playground(&s, &b.token, &agent, "hi")
        .await
        .expect_err(404, "agent_not_found");
}
