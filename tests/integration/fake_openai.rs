//! A scriptable OpenAI-compatible server for tests: the model-provider edge we do not own.
//!
//! ```ignore
//! let fake = FakeOpenAi::start().await;
//! fake.push(Reply::Text("Hello there".into()));
//! // point the code under test at fake.base_url() ("http://127.0.0.1:PORT/v1") ...
//! assert!(fake.requests()[0]["messages"].to_string().contains("opening hours"));
//! ```
//!
//! `POST /v1/chat/completions` answers from a queue of [`Reply`]s (one per request, in
//! order), in OpenAI's exact wire format: a `chat.completion` object, or with `"stream":
//! true` an SSE stream of `chat.completion.chunk`s (role chunk, content pieces, finish
//! chunk, usage chunk when `stream_options.include_usage` is set, `data: [DONE]`). When the
//! queue is empty it answers `Echo: <last user message>`. `GET /v1/models` lists models.
//! Every request is recorded. Usage numbers are deterministic: `prompt_tokens` = words in all
//! message contents, `completion_tokens` = pieces the answer was streamed in.

#![allow(dead_code)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Prefix of the answer given when the script queue is empty.
pub const ECHO_PREFIX: &str = "Echo: ";
/// The model list served by default.
pub const DEFAULT_MODELS: &[&str] = &["fake-large", "fake-small"];

/// What the fake answers to the next chat request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A text answer, streamed in several pieces when streaming.
    Text(String),
    /// Tool calls `(name, arguments JSON text)`; streamed arguments come in small fragments.
    ToolCalls(Vec<(String, String)>),
    /// An error status with this raw body and an optional `Retry-After` (seconds).
    Status(u16, String, Option<u64>),
    /// Never answers (until the fake is dropped): for timeouts.
    Hang,
    /// Sends a few content chunks (non-stream: half a JSON body), then drops the connection
    /// without `[DONE]`.
    BrokenStream,
    /// Exactly these bytes, for malformed and oversized answers.
    Raw {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
}

impl Reply {
    pub fn text(s: &str) -> Reply {
        Reply::Text(s.to_string())
    }
    pub fn tool_call(name: &str, args: &str) -> Reply {
        Reply::ToolCalls(vec![(name.to_string(), args.to_string())])
    }
    /// An error status with an OpenAI-shaped error body carrying `message`.
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::Status(status, openai_error(message, "server_error"), None)
    }
    /// 429 with `Retry-After: secs`.
    pub fn rate_limited(secs: u64) -> Reply {
        Reply::Status(
            429,
            openai_error("Rate limit reached", "rate_limit_exceeded"),
            Some(secs),
        )
    }
    /// An SSE body of exactly these bytes.
    pub fn raw_sse(body: impl Into<Vec<u8>>) -> Reply {
        Reply::Raw {
            status: 200,
            content_type: "text/event-stream".into(),
            body: body.into(),
        }
    }
}

fn openai_error(message: &str, code: &str) -> String {
    json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}})
        .to_string()
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The raw `Authorization` header.
    pub authorization: Option<String>,
    /// The JSON body (`Null` for GET or a body that is not JSON).
    pub body: Value,
}

struct Inner {
    queue: Mutex<VecDeque<Reply>>,
    log: Mutex<Vec<Recorded>>,
    chunk_delay: Mutex<Duration>,
    send_usage: AtomicBool,
    models: Mutex<Vec<String>>,
    api_key: Mutex<Option<String>>,
    /// Streams whose client went away before the last byte.
    disconnects: AtomicUsize,
    seq: AtomicUsize,
    shutdown: Notify,
    /// False while [`FakeOpenAi::hold`] keeps chat answers back.
    open: tokio::sync::watch::Sender<bool>,
}

/// The running fake. Dropping it stops accepting connections and releases hanging replies.
pub struct FakeOpenAi {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
        self.inner.shutdown.notify_waiters();
        self.inner.open.send_replace(true);
    }
}

impl FakeOpenAi {
    /// Starts on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> FakeOpenAi {
        let inner = Arc::new(Inner {
            queue: Mutex::new(VecDeque::new()),
            log: Mutex::new(Vec::new()),
            chunk_delay: Mutex::new(Duration::ZERO),
            send_usage: AtomicBool::new(true),
            models: Mutex::new(DEFAULT_MODELS.iter().map(|m| m.to_string()).collect()),
            api_key: Mutex::new(None),
            disconnects: AtomicUsize::new(0),
            seq: AtomicUsize::new(0),
            shutdown: Notify::new(),
            open: tokio::sync::watch::channel(true).0,
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(inner.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake openai");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeOpenAi { addr, inner, task }
    }

    /// `http://127.0.0.1:PORT/v1`, the form OpenAI clients take as base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Keeps every chat answer back (requests are still recorded) until [`release`]: the
    /// test decides when an upstream call ends.
    ///
    /// [`release`]: Self::release
    pub fn hold(&self) {
        self.inner.open.send_replace(false);
    }

    /// Lets held and coming chat requests be answered.
    pub fn release(&self) {
        self.inner.open.send_replace(true);
    }

    /// Queues the answer to a coming chat request.
    pub fn push(&self, reply: Reply) {
        self.inner.queue.lock().expect("lock").push_back(reply);
    }

    /// Bodies of all chat-completion requests so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.recorded()
            .into_iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .map(|r| r.body)
            .collect()
    }

    /// All message contents of the last chat request, one per line: what the model was
    /// shown (e.g. to check that a retrieved chunk reached the prompt).
    pub fn last_prompt(&self) -> String {
        let Some(body) = self.requests().pop() else {
            return String::new();
        };
        body["messages"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| m["content"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }

    /// Waits (bounded) until at least `n` chat requests arrived; for code under test that
    /// calls the model in the background. Returns the bodies so far.
    pub async fn wait_for_requests(&self, n: usize, within: Duration) -> Vec<Value> {
        let end = Instant::now() + within;
        loop {
            let reqs = self.requests();
            if reqs.len() >= n || Instant::now() >= end {
                return reqs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every request (chat and models) with path and Authorization header.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.inner.log.lock().expect("lock").clone()
    }

    /// Pause before each streamed chunk (and before a non-stream answer).
    pub fn set_chunk_delay(&self, d: Duration) {
        *self.inner.chunk_delay.lock().expect("lock") = d;
    }

    /// Whether usage is sent (non-stream: `usage`; stream: the final usage chunk, which is
    /// only ever sent when the request asked with `stream_options.include_usage`).
    pub fn set_send_usage(&self, on: bool) {
        self.inner.send_usage.store(on, Ordering::SeqCst);
    }

    pub fn set_models(&self, models: &[&str]) {
        *self.inner.models.lock().expect("lock") = models.iter().map(|m| m.to_string()).collect();
    }

    /// Requires `Authorization: Bearer <key>` (401 `invalid_api_key` otherwise).
    pub fn require_api_key(&self, key: Option<&str>) {
        *self.inner.api_key.lock().expect("lock") = key.map(str::to_string);
    }

    /// Streams the client abandoned before their end.
    pub fn disconnects(&self) -> usize {
        self.inner.disconnects.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until at least `n` streams were abandoned by their client.
    pub async fn wait_for_disconnects(&self, n: usize, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.disconnects() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.disconnects() >= n
    }
}

fn record(inner: &Inner, method: &str, path: &str, headers: &HeaderMap, body: Value) {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    inner.log.lock().expect("lock").push(Recorded {
        method: method.into(),
        path: path.into(),
        authorization,
        body,
    });
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn unauthorized(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    let want = inner.api_key.lock().expect("lock").clone()?;
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if got == Some(format!("Bearer {want}").as_str()) {
        return None;
    }
    Some(json_response(
        StatusCode::UNAUTHORIZED,
        openai_error("Incorrect API key provided.", "invalid_api_key"),
    ))
}

async fn models(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    record(&inner, "GET", "/v1/models", &headers, Value::Null);
    if let Some(r) = unauthorized(&inner, &headers) {
        return r;
    }
    let data: Vec<Value> = inner
        .models
        .lock()
        .expect("lock")
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}))
        .collect();
    json_response(
        StatusCode::OK,
        json!({"object": "list", "data": data}).to_string(),
    )
}

async fn chat(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(
        &inner,
        "POST",
        "/v1/chat/completions",
        &headers,
        parsed.clone(),
    );
    if let Some(r) = unauthorized(&inner, &headers) {
        return r;
    }
    let _ = inner.open.subscribe().wait_for(|open| *open).await;
    let (Some(model), Some(messages)) = (parsed["model"].as_str(), parsed["messages"].as_array())
    else {
        return json_response(
            StatusCode::BAD_REQUEST,
            openai_error("'model' and 'messages' are required", "invalid_request"),
        );
    };
    let reply = inner.queue.lock().expect("lock").pop_front();
    let reply = reply.unwrap_or_else(|| {
        let last_user = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .and_then(|m| m["content"].as_str())
            .unwrap_or("");
        Reply::Text(format!("{ECHO_PREFIX}{last_user}"))
    });
    let ctx = Ctx {
        id: format!(
            "chatcmpl-fake{}",
            inner.seq.fetch_add(1, Ordering::SeqCst) + 1
        ),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: model.to_string(),
        prompt_tokens: messages
            .iter()
            .filter_map(|m| m["content"].as_str())
            .map(|c| c.split_whitespace().count())
            .sum(),
        usage: inner.send_usage.load(Ordering::SeqCst),
        stream_usage: parsed["stream_options"]["include_usage"] == true,
    };
    let delay = *inner.chunk_delay.lock().expect("lock");
    let stream = parsed["stream"] == true;
    match reply {
        Reply::Status(code, body, retry_after) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = json_response(status, body);
            if let Some(s) = retry_after {
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    s.to_string().parse().expect("header value"),
                );
            }
            resp
        }
        Reply::Hang => {
            tokio::select! {
                _ = inner.shutdown.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
            json_response(StatusCode::GATEWAY_TIMEOUT, openai_error("hung", "timeout"))
        }
        Reply::Raw {
            status,
            content_type,
            body,
        } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            [(header::CONTENT_TYPE, content_type)],
            body,
        )
            .into_response(),
        Reply::BrokenStream if !stream => {
            let frames = vec![
                Frame::Data(r#"{"id":"chatcmpl-broken","object":"chat.comp"#.into()),
                Frame::Break,
            ];
            frames_response(&inner, frames, delay, "application/json")
        }
        Reply::Text(text) if !stream => {
            tokio::time::sleep(delay).await;
            let pieces = split_text(&text).len();
            let message = json!({"role": "assistant", "content": text, "refusal": null});
            json_response(StatusCode::OK, ctx.completion(message, "stop", pieces))
        }
        Reply::ToolCalls(calls) if !stream => {
            tokio::time::sleep(delay).await;
            let tool_calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, (name, args))| {
                    json!({"id": ctx.call_id(i), "type": "function",
                        "function": {"name": name, "arguments": args}})
                })
                .collect();
            let message = json!({"role": "assistant", "content": null, "tool_calls": tool_calls, "refusal": null});
            json_response(
                StatusCode::OK,
                ctx.completion(message, "tool_calls", calls.len()),
            )
        }
        Reply::Text(text) => {
            let pieces = split_text(&text);
            let mut frames = vec![ctx.chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
            )];
            for p in &pieces {
                frames.push(ctx.chunk(json!({"content": p}), None));
            }
            frames.push(ctx.chunk(json!({}), Some("stop")));
            frames.extend(ctx.stream_end(pieces.len()));
            frames_response(&inner, frames, delay, "text/event-stream")
        }
        Reply::ToolCalls(calls) => {
            let mut frames = vec![ctx.chunk(
                json!({"role": "assistant", "content": null, "refusal": null}),
                None,
            )];
            let mut pieces = 0;
            for (i, (name, args)) in calls.iter().enumerate() {
                frames.push(ctx.chunk(
                    json!({"tool_calls": [{"index": i, "id": ctx.call_id(i), "type": "function",
                        "function": {"name": name, "arguments": ""}}]}),
                    None,
                ));
                for frag in split_chars(args, 4) {
                    pieces += 1;
                    frames.push(ctx.chunk(
                        json!({"tool_calls": [{"index": i, "function": {"arguments": frag}}]}),
                        None,
                    ));
                }
            }
            frames.push(ctx.chunk(json!({}), Some("tool_calls")));
            frames.extend(ctx.stream_end(pieces));
            frames_response(&inner, frames, delay, "text/event-stream")
        }
        Reply::BrokenStream => {
            let frames = vec![
                ctx.chunk(
                    json!({"role": "assistant", "content": "", "refusal": null}),
                    None,
                ),
                ctx.chunk(json!({"content": "This answer "}), None),
                ctx.chunk(json!({"content": "breaks off"}), None),
                Frame::Break,
            ];
            frames_response(&inner, frames, delay, "text/event-stream")
        }
    }
}

/// Per-request values shared by the frames of one answer.
struct Ctx {
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
    usage: bool,
    stream_usage: bool,
}

impl Ctx {
    fn call_id(&self, i: usize) -> String {
        format!("call_{}_{i}", self.id.trim_start_matches("chatcmpl-"))
    }

    fn usage_json(&self, completion: usize) -> Value {
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion})
    }

    fn completion(&self, message: Value, finish: &str, completion_tokens: usize) -> String {
        let mut v = json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "system_fingerprint": "fp_fake",
        });
        if self.usage {
            v["usage"] = self.usage_json(completion_tokens);
        }
        v.to_string()
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Frame {
        let mut v = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        // With include_usage OpenAI puts `"usage": null` on every chunk but the last.
        if self.stream_usage {
            v["usage"] = Value::Null;
        }
        Frame::Data(format!("data: {v}\n\n"))
    }

    /// The usage chunk (when asked for) and `[DONE]`.
    fn stream_end(&self, completion_tokens: usize) -> Vec<Frame> {
        let mut frames = Vec::new();
        if self.stream_usage && self.usage {
            let v = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": "fp_fake", "choices": [],
                "usage": self.usage_json(completion_tokens),
            });
            frames.push(Frame::Data(format!("data: {v}\n\n")));
        }
        frames.push(Frame::Data("data: [DONE]\n\n".into()));
        frames
    }
}

/// Words (with their trailing space), long words cut to 8 characters: several pieces for
/// any ordinary sentence.
fn split_text(text: &str) -> Vec<String> {
    text.split_inclusive(' ')
        .flat_map(|w| split_chars(w, 8))
        .collect()
}

fn split_chars(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

enum Frame {
    Data(String),
    /// Abort the connection (no terminating chunk).
    Break,
}

/// Counts a disconnect when the response body is dropped before its end.
struct Guard {
    inner: Arc<Inner>,
    done: bool,
}

impl Guard {
    /// The body reached its scripted end: dropping the guard now is no disconnect.
    fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.inner.disconnects.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn frames_response(
    inner: &Arc<Inner>,
    frames: Vec<Frame>,
    delay: Duration,
    content_type: &'static str,
) -> Response {
    let state = (
        VecDeque::from(frames),
        Guard {
            inner: inner.clone(),
            done: false,
        },
    );
    let body = futures_util::stream::unfold(state, move |(mut frames, mut guard)| async move {
        let Some(frame) = frames.pop_front() else {
            guard.finish();
            return None;
        };
        tokio::time::sleep(delay).await;
        match frame {
            Frame::Data(s) => Some((Ok(Bytes::from(s)), (frames, guard))),
            Frame::Break => {
                // Breaking is the script, not a client disconnect. Ending the stream here
                // drops the guard; later frames are never sent.
                guard.finish();
                frames.clear();
                Some((
                    Err(std::io::Error::other("broken on purpose")),
                    (frames, guard),
                ))
            }
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
