//! The chat client (`aigentable::llm`) against the fake OpenAI-compatible server: wire
//! format, streaming, tool calls, retries, timeouts, cancellation and size caps.

use crate::fake_openai::{ECHO_PREFIX, FakeOpenAi, Reply};
use aigentable::config::Secret;
use aigentable::llm::{
    ChatMessage, ChatRequest, ChatStream, Client, Error, MAX_SSE_LINE, Provider, StreamEvent,
    ToolCall, ToolDef, Usage, count_message_tokens, count_tokens,
};
use futures_util::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-0123456789abcdefghij";

/// Fast settings: tests wait milliseconds, not the production defaults.
fn provider(fake: &FakeOpenAi) -> Provider {
    Provider {
        base_url: fake.base_url(),
        api_key: Some(Secret::new(KEY)),
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        max_retries: 3,
        retry_backoff: Duration::from_millis(10),
        ..Provider::default()
    }
}

/// 5 + 5 words: the fake's `prompt_tokens`.
fn request() -> ChatRequest {
    ChatRequest::new(
        "gpt-4o-mini",
        vec![
            ChatMessage::system("You are a helpful assistant."),
            ChatMessage::user("What are your opening hours?"),
        ],
    )
}

/// Everything a stream yields: the deltas, the final event, and the error that ended it.
struct Collected {
    deltas: Vec<String>,
    done: Option<StreamEvent>,
    error: Option<Error>,
}

async fn collect(mut s: ChatStream) -> Collected {
    let mut c = Collected {
        deltas: Vec::new(),
        done: None,
        error: None,
    };
    while let Some(item) = s.next().await {
        assert!(c.done.is_none() && c.error.is_none(), "item after the end");
        match item {
            Ok(StreamEvent::Delta(d)) => c.deltas.push(d),
            Ok(done @ StreamEvent::Done { .. }) => c.done = Some(done),
            Err(e) => c.error = Some(e),
        }
    }
    c
}

fn done_parts(c: &Collected) -> (ChatMessage, Option<String>, Usage) {
    match c.done.clone() {
        Some(StreamEvent::Done {
            message,
            finish_reason,
            usage,
        }) => (message, finish_reason, usage.expect("usage")),
        other => panic!("no Done event: {other:?}, error {:?}", c.error),
    }
}

#[tokio::test]
async fn llm_chat_returns_text_usage_and_sends_openai_request() {
    let fake = FakeOpenAi::start().await;
    fake.require_api_key(Some(KEY));
    fake.push(Reply::text("Hello there, friend."));
    let client = Client::new();
    let resp = client.chat(&provider(&fake), &request()).await.unwrap();
    assert_eq!(resp.message, ChatMessage::assistant("Hello there, friend."));
    assert_eq!(resp.finish_reason.as_deref(), Some("stop"));
    assert_eq!(resp.model, "gpt-4o-mini");
    assert_eq!(
        resp.usage,
        Usage {
            prompt_tokens: 10,
            completion_tokens: 3,
            estimated: false
        }
    );
    let rec = fake.recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(
        rec[0].authorization.as_deref(),
        Some(&*format!("Bearer {KEY}"))
    );
    let body = &rec[0].body;
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["stream"], false);
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "You are a helpful assistant."},
               {"role": "user", "content": "What are your opening hours?"}])
    );
    assert!(body.get("tools").is_none());
    assert_eq!(
        fake.last_prompt(),
        "You are a helpful assistant.\nWhat are your opening hours?"
    );
}

#[tokio::test]
async fn llm_empty_queue_echoes_the_last_user_message() {
    let fake = FakeOpenAi::start().await;
    let resp = Client::new()
        .chat(&provider(&fake), &request())
        .await
        .unwrap();
    assert_eq!(
        resp.message.content.unwrap(),
        format!("{ECHO_PREFIX}What are your opening hours?")
    );
}

#[tokio::test]
async fn llm_stream_yields_deltas_then_done_with_full_text_and_usage() {
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::text("The quick brown fox jumps"));
    let s = Client::new()
        .chat_stream(&provider(&fake), &request())
        .await
        .unwrap();
    let c = collect(s).await;
    assert!(c.error.is_none(), "{:?}", c.error);
    assert_eq!(c.deltas, vec!["The ", "quick ", "brown ", "fox ", "jumps"]);
    let (message, finish, usage) = done_parts(&c);
    assert_eq!(message, ChatMessage::assistant("The quick brown fox jumps"));
    assert_eq!(finish.as_deref(), Some("stop"));
    assert_eq!(
        usage,
        Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            estimated: false
        }
    );
    let body = &fake.requests()[0];
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn llm_missing_usage_is_estimated_with_the_tokenizer() {
    let fake = FakeOpenAi::start().await;
    fake.set_send_usage(false);
    let p = provider(&fake);
    let req = request();
    let expected_prompt = count_message_tokens("gpt-4o-mini", &req.messages);

    fake.push(Reply::text("We open at nine."));
    let resp = Client::new().chat(&p, &req).await.unwrap();
    assert!(resp.usage.estimated);
    assert_eq!(resp.usage.prompt_tokens as usize, expected_prompt);
    assert_eq!(
        resp.usage.completion_tokens as usize,
        count_tokens("gpt-4o-mini", "We open at nine.")
    );

    fake.push(Reply::text("We open at nine."));
    let c = collect(Client::new().chat_stream(&p, &req).await.unwrap()).await;
    let (_, _, usage) = done_parts(&c);
    assert_eq!(usage, resp.usage);
}

fn weather_tool() -> ToolDef {
    ToolDef {
        name: "get_weather".into(),
        description: "Current weather in a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

#[tokio::test]
async fn llm_tool_calls_non_stream() {
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::ToolCalls(vec![
        ("get_weather".into(), r#"{"city":"Paris"}"#.into()),
        ("get_weather".into(), r#"{"city":"Oslo"}"#.into()),
    ]));
    let mut req = request();
    req.tools = vec![weather_tool()];
    req.tool_choice = Some(json!("auto"));
    let resp = Client::new().chat(&provider(&fake), &req).await.unwrap();
    assert_eq!(resp.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(resp.message.content, None);
    let calls = &resp.message.tool_calls;
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].name, "get_weather");
    assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
    assert_eq!(calls[1].arguments, r#"{"city":"Oslo"}"#);
    assert!(!calls[0].id.is_empty() && calls[0].id != calls[1].id);
    let body = &fake.requests()[0];
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {"name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    );
    assert_eq!(body["tool_choice"], "auto");
}

#[tokio::test]
async fn llm_streamed_tool_calls_are_assembled_and_round_trip() {
    let fake = FakeOpenAi::start().await;
    let args = r#"{"city":"Paris","unit":"celsius"}"#;
    fake.push(Reply::ToolCalls(vec![
        ("get_weather".into(), args.into()),
        ("lookup_faq".into(), r#"{"q":"hours"}"#.into()),
    ]));
    let p = provider(&fake);
    let client = Client::new();
    let mut req = request();
    req.tools = vec![weather_tool()];
    let c = collect(client.chat_stream(&p, &req).await.unwrap()).await;
    assert!(c.error.is_none(), "{:?}", c.error);
    assert!(c.deltas.is_empty(), "tool calls are not shown as text");
    let (message, finish, _) = done_parts(&c);
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(message.tool_calls.len(), 2);
    assert_eq!(message.tool_calls[0].name, "get_weather");
    assert_eq!(message.tool_calls[0].arguments, args);
    assert_eq!(message.tool_calls[1].name, "lookup_faq");
    assert_eq!(message.tool_calls[1].arguments, r#"{"q":"hours"}"#);

    // The next turn carries the call and its result back in OpenAI's shape.
    let id = message.tool_calls[0].id.clone();
    req.messages.push(message.clone());
    req.messages
        .push(ChatMessage::tool_result(&id, r#"{"temp":21}"#));
    fake.push(Reply::text("It is 21 degrees in Paris."));
    let resp = client.chat(&p, &req).await.unwrap();
    assert_eq!(
        resp.message.content.as_deref(),
        Some("It is 21 degrees in Paris.")
    );
    let sent = &fake.requests()[1]["messages"];
    assert_eq!(sent[2]["role"], "assistant");
    assert!(sent[2].get("content").is_none());
    assert_eq!(sent[2]["tool_calls"][0]["id"], id.as_str());
    assert_eq!(sent[2]["tool_calls"][0]["type"], "function");
    assert_eq!(sent[2]["tool_calls"][0]["function"]["arguments"], args);
    assert_eq!(
        sent[3],
        json!({"role": "tool", "content": "{\"temp\":21}", "tool_call_id": id})
    );
}

#[tokio::test]
async fn llm_retries_5xx_then_succeeds() {
    let fake = FakeOpenAi::start().await;
    let p = provider(&fake);
    fake.push(Reply::error(500, "temporary failure"));
    fake.push(Reply::text("ok"));
    let resp = Client::new().chat(&p, &request()).await.unwrap();
    assert_eq!(resp.message.content.as_deref(), Some("ok"));
    assert_eq!(fake.requests().len(), 2);

    fake.push(Reply::error(503, "overloaded"));
    fake.push(Reply::error(502, "bad gateway"));
    fake.push(Reply::text("streamed ok"));
    let c = collect(Client::new().chat_stream(&p, &request()).await.unwrap()).await;
    assert_eq!(c.deltas.concat(), "streamed ok");
    assert_eq!(fake.requests().len(), 5);
}

#[tokio::test]
async fn llm_429_honours_retry_after() {
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::rate_limited(1));
    fake.push(Reply::text("after the wait"));
    let started = Instant::now();
    let resp = Client::new()
        .chat(&provider(&fake), &request())
        .await
        .unwrap();
    assert_eq!(resp.message.content.as_deref(), Some("after the wait"));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited only {:?}",
        started.elapsed()
    );
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn llm_429_without_retries_left_is_rate_limited() {
    let fake = FakeOpenAi::start().await;
    let p = Provider {
        max_retries: 0,
        ..provider(&fake)
    };
    fake.push(Reply::rate_limited(7));
    let err = Client::new().chat(&p, &request()).await.unwrap_err();
    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)),
        "{err:?}"
    );
    assert!(err.user_message().contains("retry after 7s"));

    // "Out of credit" is also a 429, but waiting does not fix it: no retry, message kept.
    let p = provider(&fake);
    fake.push(Reply::Status(
        429,
        json!({"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota", "code": "insufficient_quota"}}).to_string(),
        None,
    ));
    let err = Client::new().chat(&p, &request()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Upstream { status: 429, message } if message == "You exceeded your current quota."),
        "{err:?}"
    );
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn llm_exhausted_5xx_is_upstream_error_with_upstream_message() {
    let fake = FakeOpenAi::start().await;
    let p = Provider {
        max_retries: 2,
        ..provider(&fake)
    };
    for _ in 0..3 {
        fake.push(Reply::error(
            500,
            "The server had an error while processing your request.",
        ));
    }
    fake.push(Reply::text("not reached"));
    let err = Client::new().chat(&p, &request()).await.unwrap_err();
    match &err {
        Error::Upstream { status, message } => {
            assert_eq!(*status, 500);
            assert_eq!(
                message,
                "The server had an error while processing your request."
            );
        }
        other => panic!("expected Upstream, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), 3, "1 attempt + 2 retries");
    assert_eq!(
        err.user_message(),
        "The model provider returned HTTP 500: The server had an error while processing your request."
    );
}

#[tokio::test]
async fn llm_client_errors_are_not_retried_and_never_show_the_key() {
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::Status(
        401,
        json!({"error": {"message": format!("Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com/account/api-keys."),
            "type": "invalid_request_error", "code": "invalid_api_key"}})
        .to_string(),
        None,
    ));
    let err = Client::new()
        .chat(&provider(&fake), &request())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Upstream { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(fake.requests().len(), 1);
    for shown in [format!("{err:?}"), err.to_string(), err.user_message()] {
        assert!(!shown.contains(KEY), "key leaked: {shown}");
    }
    assert!(err.user_message().contains("Check the API key"));
    assert!(!format!("{:?}", provider(&fake)).contains(KEY));
}

#[tokio::test]
async fn llm_hang_times_out_within_the_configured_timeout() {
    let fake = FakeOpenAi::start().await;
    let p = Provider {
        timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        ..provider(&fake)
    };
    fake.push(Reply::Hang);
    let started = Instant::now();
    let err = Client::new().chat(&p, &request()).await.unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fake.requests().len(), 1, "timeouts are not retried");

    fake.push(Reply::Hang);
    let started = Instant::now();
    let err = Client::new().chat_stream(&p, &request()).await.err();
    assert!(matches!(err, Some(Error::Timeout)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn llm_stream_gap_longer_than_idle_timeout_is_a_timeout() {
    let fake = FakeOpenAi::start().await;
    fake.set_chunk_delay(Duration::from_millis(1500));
    fake.push(Reply::text("slow answer"));
    let p = Provider {
        idle_timeout: Duration::from_millis(200),
        ..provider(&fake)
    };
    let started = Instant::now();
    // The headers may or may not beat the first gap; either way it ends in Timeout.
    let err = match Client::new().chat_stream(&p, &request()).await {
        Err(e) => e,
        Ok(s) => {
            let c = collect(s).await;
            assert!(c.deltas.is_empty() && c.done.is_none());
            c.error.expect("an error")
        }
    };
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(1400));
}

#[tokio::test]
async fn llm_broken_stream_after_deltas_is_protocol_error_without_retry() {
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::BrokenStream);
    fake.push(Reply::text("must not be requested"));
    let c = collect(
        Client::new()
            .chat_stream(&provider(&fake), &request())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(c.deltas, vec!["This answer ", "breaks off"]);
    assert!(c.done.is_none());
    assert!(matches!(c.error, Some(Error::Protocol(_))), "{:?}", c.error);
    assert_eq!(fake.requests().len(), 1, "no retry once tokens were shown");
}

#[tokio::test]
async fn llm_stream_broken_before_any_delta_is_retried() {
    let fake = FakeOpenAi::start().await;
    // Headers and a keep-alive comment, then the end without [DONE].
    fake.push(Reply::raw_sse(": keep-alive\n\n"));
    fake.push(Reply::text("recovered"));
    let c = collect(
        Client::new()
            .chat_stream(&provider(&fake), &request())
            .await
            .unwrap(),
    )
    .await;
    assert!(c.error.is_none(), "{:?}", c.error);
    assert_eq!(c.deltas.concat(), "recovered");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn llm_broken_non_stream_body_is_retried() {
    let fake = FakeOpenAi::start().await;
    fake.push(Reply::BrokenStream);
    fake.push(Reply::text("second try"));
    let resp = Client::new()
        .chat(&provider(&fake), &request())
        .await
        .unwrap();
    assert_eq!(resp.message.content.as_deref(), Some("second try"));
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn llm_dropping_the_stream_aborts_the_upstream_request() {
    let fake = FakeOpenAi::start().await;
    fake.set_chunk_delay(Duration::from_millis(50));
    let long = "word ".repeat(200);
    fake.push(Reply::Text(long));
    let mut s = Client::new()
        .chat_stream(&provider(&fake), &request())
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(matches!(s.next().await, Some(Ok(StreamEvent::Delta(_)))));
    }
    assert_eq!(fake.disconnects(), 0);
    drop(s);
    assert!(
        fake.wait_for_disconnects(1, Duration::from_secs(5)).await,
        "the fake never saw the client go away"
    );
}

#[tokio::test]
async fn llm_oversized_or_garbage_answers_are_protocol_errors() {
    let fake = FakeOpenAi::start().await;
    let p = provider(&fake);
    let client = Client::new();

    // One SSE line over the cap, with no newline ever.
    let mut huge = b"data: ".to_vec();
    huge.resize(MAX_SSE_LINE + 100, b'a');
    fake.push(Reply::raw_sse(huge));
    let c = collect(client.chat_stream(&p, &request()).await.unwrap()).await;
    assert!(matches!(c.error, Some(Error::Protocol(_))), "{:?}", c.error);

    // A non-stream body over 8 MiB.
    fake.push(Reply::Raw {
        status: 200,
        content_type: "application/json".into(),
        body: vec![b' '; 9 * 1024 * 1024],
    });
    let err = client.chat(&p, &request()).await.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");

    // Bad JSON in a stream and in a body, invalid UTF-8, no choices.
    let garbage: Vec<Reply> = vec![
        Reply::raw_sse("data: {not json}\n\n"),
        Reply::raw_sse(b"data: \xff\xfe\xfd\n\n".to_vec()),
        Reply::raw_sse("data: {\"choices\": 5}\n\n"),
    ];
    for g in garbage {
        fake.push(g);
        let c = collect(client.chat_stream(&p, &request()).await.unwrap()).await;
        assert!(matches!(c.error, Some(Error::Protocol(_))), "{:?}", c.error);
    }
    for body in ["<html>502</html>", "{\"choices\": []}", "[1,2,3]", ""] {
        fake.push(Reply::Raw {
            status: 200,
            content_type: "application/json".into(),
            body: body.into(),
        });
        let err = client.chat(&p, &request()).await.unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{body}: {err:?}");
    }
    // None of these were retried: they would fail the same way again.
    assert_eq!(fake.requests().len(), 9);

    // Pseudo-random bytes: any error is fine, a panic or a hang is not.
    let mut x: u32 = 0x9E37_79B9;
    for _ in 0..20 {
        let bytes: Vec<u8> = (0..512)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x & 0xff) as u8
            })
            .collect();
        fake.push(Reply::raw_sse(bytes));
        let p = Provider {
            max_retries: 0,
            ..p.clone()
        };
        if let Ok(s) = client.chat_stream(&p, &request()).await {
            let _ = collect(s).await;
        }
    }
}

#[tokio::test]
async fn llm_error_event_in_stream_is_upstream_error() {
    let fake = FakeOpenAi::start().await;
    let p = Provider {
        max_retries: 0,
        ..provider(&fake)
    };
    fake.push(Reply::raw_sse(
        "data: {\"error\":{\"message\":\"model overloaded\",\"type\":\"server_error\"}}\n\n",
    ));
    let c = collect(Client::new().chat_stream(&p, &request()).await.unwrap()).await;
    assert!(
        matches!(&c.error, Some(Error::Upstream { status: 500, message }) if message == "model overloaded"),
        "{:?}",
        c.error
    );
}

#[tokio::test]
async fn llm_server_that_ignores_stream_flag_still_works() {
    let fake = FakeOpenAi::start().await;
    let body = json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole answer"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
    fake.push(Reply::Raw {
        status: 200,
        content_type: "application/json".into(),
        body: body.to_string().into(),
    });
    let c = collect(
        Client::new()
            .chat_stream(&provider(&fake), &request())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(c.deltas, vec!["whole answer"]);
    let (message, _, usage) = done_parts(&c);
    assert_eq!(message.content.as_deref(), Some("whole answer"));
    assert_eq!(usage.completion_tokens, 2);
}

#[tokio::test]
async fn llm_list_models() {
    let fake = FakeOpenAi::start().await;
    fake.require_api_key(Some(KEY));
    fake.set_models(&["llama3.1:8b", "gpt-4o-mini", "llama3.1:8b"]);
    let models = Client::new().list_models(&provider(&fake)).await.unwrap();
    assert_eq!(models, vec!["gpt-4o-mini", "llama3.1:8b"]);

    // A wrong key is a 401 with a hint, not a retry loop.
    let p = Provider {
        api_key: Some(Secret::new("sk-wrong-key-000000000000")),
        ..provider(&fake)
    };
    let err = Client::new().list_models(&p).await.unwrap_err();
    assert!(
        matches!(err, Error::Upstream { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(fake.recorded().len(), 2);
}

#[tokio::test]
async fn llm_unreachable_provider_is_connect_error() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let p = Provider {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        max_retries: 1,
        retry_backoff: Duration::from_millis(10),
        ..Provider::default()
    };
    let err = Client::new().chat(&p, &request()).await.unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err:?}");
    assert!(err.user_message().contains("Check the base URL"));
    let err = Client::new().chat_stream(&p, &request()).await.err();
    assert!(matches!(err, Some(Error::Connect(_))), "{err:?}");
    let err = Client::new()
        .chat(&Provider::new("no scheme here", None), &request())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err:?}");
}

#[tokio::test]
async fn llm_token_counting_sanity() {
    assert_eq!(count_tokens("gpt-4o", ""), 0);
    let short = count_tokens("gpt-4o", "Opening hours are 9 to 5.");
    let long = count_tokens("gpt-4o", &"Opening hours are 9 to 5. ".repeat(20));
    assert!(short > 3 && short < 12, "{short}");
    assert!(long > short * 15);
    // Unknown local models fall back to cl100k rather than failing.
    assert!(count_tokens("llama3.1:8b", "Opening hours are 9 to 5.") > 3);
    let call = ChatMessage {
        tool_calls: vec![ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: "{}".into(),
        }],
        content: None,
        ..ChatMessage::assistant("")
    };
    assert!(count_message_tokens("gpt-4o", &[call]) > 5);
}

#[tokio::test]
async fn llm_tenant_policy_refuses_private_addresses_without_a_request() {
    let fake = FakeOpenAi::start().await;
    let strict = aigentable::net::Policy::tenant(aigentable::net::Allowlist::default());
    let p = Provider {
        policy: strict,
        ..provider(&fake)
    };
    let err = Client::new().chat(&p, &request()).await.unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err:?}");
    assert!(err.user_message().contains("not allowed"), "{err}");
    let err = Client::new().chat_stream(&p, &request()).await.err();
    assert!(matches!(err, Some(Error::Refused(_))), "{err:?}");
    assert!(
        fake.recorded().is_empty(),
        "nothing was sent, nothing retried"
    );
    // The operator's allowlist opens the host again.
    let allowed = aigentable::net::Allowlist::parse("127.0.0.1").unwrap();
    let p = Provider {
        policy: aigentable::net::Policy::tenant(allowed),
        ..provider(&fake)
    };
    fake.push(Reply::text("Hello."));
    let r = Client::new().chat(&p, &request()).await.unwrap();
    assert_eq!(r.message.content.as_deref(), Some("Hello."));
}
