//! The HTTP side of the chat client: requests, timeouts, retries, streaming, size caps.

use super::error::{Error, redact};
use super::sse::{SseEvent, SseParser};
use super::tokens::{count_message_tokens, count_tokens};
use super::types::{ChatMessage, ChatRequest, ChatResponse, StreamEvent, Usage};
use super::wire::{Assembler, Chunk, Completion, ModelList};
use crate::config::Secret;
use crate::net::Policy;
use crate::net::upstream::{Next, RetryPolicy, read_error_body, retry_after, root_cause};
use crate::net::upstream::{error_message, message_in, sanitise};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde::Serialize;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A single SSE line or event larger than this is a protocol error (no sane chunk is).
pub const MAX_SSE_LINE: usize = 1024 * 1024;
/// Largest non-streamed answer body, and largest total of a streamed answer.
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Ceiling of the exponential backoff between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A Retry-After longer than this is not waited for: a customer is waiting for the answer,
/// so the caller gets `RateLimited` at once and can decide.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Distinct (connect timeout, outbound policy) pairs that get their own pooled HTTP client.
const MAX_POOLS: usize = 8;

/// A stream of chat events; dropping it aborts the upstream request.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, Error>> + Send>>;

/// Where and how to reach one OpenAI-compatible endpoint.
#[derive(Clone)]
pub struct Provider {
    /// Up to and including the version segment: `https://api.openai.com/v1`,
    /// `http://127.0.0.1:11434/v1` (Ollama), `http://host:8000/v1` (vLLM).
    pub base_url: String,
    /// Sent as a bearer token; `Secret` keeps it out of Debug output.
    pub api_key: Option<Secret>,
    /// Deadline of one whole non-streamed attempt, body included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Longest silence allowed in a stream, the wait for the response headers included.
    pub idle_timeout: Duration,
    /// Further attempts after the first on 429, 5xx and connection failures.
    pub max_retries: u32,
    /// First backoff delay; it doubles per attempt (up to 10 s), with jitter.
    pub retry_backoff: Duration,
    /// Where `base_url` may lead: [`Policy::Operator`] for the operator's own endpoint,
    /// the tenant policy for a tenant-set one.
    pub policy: Policy,
}

impl Provider {
    /// A provider with the default timeouts and retries.
    pub fn new(base_url: impl Into<String>, api_key: Option<Secret>) -> Self {
        Provider {
            base_url: base_url.into(),
            api_key,
            ..Provider::default()
        }
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, Error> {
        let s = format!("{}/{path}", self.base_url.trim().trim_end_matches('/'));
        let url = reqwest::Url::parse(&s)
            .map_err(|e| Error::Connect(format!("invalid base URL {:?}: {e}", self.base_url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Connect(format!(
                "invalid base URL {:?}: only http and https are supported",
                self.base_url
            )));
        }
        // Checked on every call, not only when the setting was saved: the allowlist may
        // have changed since.
        self.policy
            .check_url(&url)
            .map_err(|e| Error::Refused(e.to_string()))?;
        Ok(url)
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            base_delay: self.retry_backoff,
            max_delay: MAX_BACKOFF,
            max_retry_after: MAX_RETRY_AFTER,
        }
    }

    fn key(&self) -> Option<&str> {
        self.api_key
            .as_ref()
            .map(Secret::expose)
            .filter(|k| !k.is_empty())
    }

    fn redact(&self, text: String) -> String {
        redact(text, self.key())
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field(
                "base_url",
                &crate::net::upstream::display_url(&self.base_url),
            )
            .field("api_key", &self.api_key)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Default for Provider {
    fn default() -> Self {
        Provider {
            base_url: "https://api.openai.com/v1".into(),
            api_key: None,
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_retries: 3,
            retry_backoff: Duration::from_millis(500),
            policy: Policy::Operator,
        }
    }
}

/// The chat client. Cheap to clone; clones share connection pools.
#[derive(Clone, Default)]
pub struct Client {
    /// reqwest sets the connect timeout, resolver and redirect policy per client, not per
    /// request, so one pooled client is kept per distinct connect timeout and outbound
    /// policy (in practice one or two).
    pools: Arc<Mutex<Vec<(Duration, Policy, reqwest::Client)>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("llm::Client").finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    #[serde(flatten)]
    req: &'a ChatRequest,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

impl Client {
    pub fn new() -> Self {
        Self::default()
    }

    fn http(&self, p: &Provider) -> Result<reqwest::Client, Error> {
        // A poisoned lock only means another thread panicked mid-lookup; the list is
        // still valid.
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, c)) = pools
            .iter()
            .find(|(t, policy, _)| *t == p.connect_timeout && *policy == p.policy)
        {
            return Ok(c.clone());
        }
        let client = p
            .policy
            .client(true)
            .connect_timeout(p.connect_timeout)
            .build()
            .map_err(|e| Error::Connect(format!("cannot set up the HTTP client: {e}")))?;
        if pools.len() < MAX_POOLS {
            pools.push((p.connect_timeout, p.policy.clone(), client.clone()));
        }
        Ok(client)
    }

    fn post(
        &self,
        p: &Provider,
        url: reqwest::Url,
        body: Bytes,
        accept: &'static str,
    ) -> Result<reqwest::RequestBuilder, Error> {
        let mut rb = self
            .http(p)?
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, accept)
            .body(body);
        if let Some(k) = p.key() {
            // bearer_auth marks the header sensitive, so reqwest never prints it either.
            rb = rb.bearer_auth(k);
        }
        Ok(rb)
    }

    /// Non-streaming chat completion, retried on 429/5xx/connection failures.
    pub async fn chat(&self, p: &Provider, req: &ChatRequest) -> Result<ChatResponse, Error> {
        let url = p.url("chat/completions")?;
        let body = encode(req, false)?;
        let completion = self
            .fetch(p, || {
                self.post(p, url.clone(), body.clone(), "application/json")
            })
            .await?;
        let (model, message, finish_reason, usage) = parse_completion(p, &completion)?;
        let usage = match usage {
            Some(u) => u,
            None => estimate_usage(req.model.clone(), req.messages.clone(), message.clone()).await,
        };
        Ok(ChatResponse {
            message,
            finish_reason,
            usage,
            model: if model.is_empty() {
                req.model.clone()
            } else {
                model
            },
        })
    }

    /// Streaming chat completion: text deltas as they arrive, then one `Done` with the
    /// whole message and complete tool calls. Retries (429/5xx/connection failures) happen
    /// only before the first delta, so nothing the user saw is ever repeated. Dropping the
    /// stream aborts the upstream request.
    pub async fn chat_stream(&self, p: &Provider, req: &ChatRequest) -> Result<ChatStream, Error> {
        let url = p.url("chat/completions")?;
        let body = encode(req, true)?;
        let mut state = StreamState {
            client: self.clone(),
            provider: p.clone(),
            url,
            body,
            model: req.model.clone(),
            prompt: req.messages.clone(),
            retry: Retry::default(),
            response: None,
            parser: new_parser(),
            asm: Assembler::default(),
            pending: VecDeque::new(),
            yielded: false,
            finished: false,
            saw_done: false,
        };
        state.open().await?;
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            |mut s| async move {
                let item = s.next_event().await?;
                Some((item, s))
            },
        )))
    }

    /// Model ids the endpoint offers (`GET /models`), sorted.
    pub async fn list_models(&self, p: &Provider) -> Result<Vec<String>, Error> {
        let url = p.url("models")?;
        let body = self
            .fetch(p, || {
                let rb = self
                    .http(p)?
                    .get(url.clone())
                    .header(ACCEPT, "application/json");
                Ok(match p.key() {
                    Some(k) => rb.bearer_auth(k),
                    None => rb,
                })
            })
            .await?;
        let list: ModelList = serde_json::from_slice(&body).map_err(|e| {
            Error::Protocol(p.redact(format!(
                "invalid model list: {}",
                sanitise(&e.to_string(), 200)
            )))
        })?;
        let mut ids: Vec<String> = list.data.into_iter().map(|m| m.id).collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// One non-streamed exchange, retried: send, check the status, read the capped body;
    /// each attempt under `p.timeout`.
    async fn fetch(
        &self,
        p: &Provider,
        build: impl Fn() -> Result<reqwest::RequestBuilder, Error>,
    ) -> Result<Vec<u8>, Error> {
        let mut retry = Retry::default();
        loop {
            let attempt = async {
                let resp = build()?.send().await.map_err(|e| send_error(p, &e))?;
                let resp = check_status(p, resp).await?;
                read_capped(p, resp, MAX_BODY).await
            };
            match tokio::time::timeout(p.timeout, attempt).await {
                Ok(Ok(body)) => return Ok(body),
                Ok(Err(e)) => {
                    let retryable = e.is_retryable();
                    retry.after(p, e, retryable).await?;
                }
                // Not retried: the provider has the prompt and may still be working on it.
                Err(_) => return Err(Error::Timeout),
            }
        }
    }
}

fn encode(req: &ChatRequest, stream: bool) -> Result<Bytes, Error> {
    let wire = WireRequest {
        req,
        stream,
        // Without it OpenAI sends no usage at all in streams; servers that do not know the
        // option ignore it.
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
    };
    serde_json::to_vec(&wire)
        .map(Bytes::from)
        // Only non-finite temperatures or a non-serialisable tool schema can get here.
        .map_err(|e| Error::Protocol(format!("cannot encode the request: {e}")))
}

fn new_parser() -> SseParser {
    SseParser::new(MAX_SSE_LINE, MAX_SSE_LINE)
}

/// Counts attempts and sleeps between them.
#[derive(Default)]
struct Retry {
    attempt: u32,
}

impl Retry {
    /// Waits before the next attempt, or hands the error back when `retryable` is false,
    /// the attempts are used up or the server asked for too long a wait.
    async fn after(&mut self, p: &Provider, e: Error, retryable: bool) -> Result<(), Error> {
        let asked = match &e {
            Error::RateLimited { retry_after } => *retry_after,
            _ => None,
        };
        let delay = match p.retry_policy().next(self.attempt, retryable, asked) {
            Next::RetryAfter(d) => d,
            Next::GiveUp | Next::TooLong(_) => return Err(e),
        };
        self.attempt += 1;
        tracing::warn!(
            attempt = self.attempt,
            max_retries = p.max_retries,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            error = %e,
            "model provider call failed; retrying"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// Maps a failure to send (or to get response headers).
fn send_error(p: &Provider, e: &reqwest::Error) -> Error {
    if let Some(r) = crate::net::Refused::find(e) {
        return Error::Refused(r.to_string());
    }
    if e.is_timeout() && !e.is_connect() {
        return Error::Timeout;
    }
    let msg = p.redact(root_cause(e));
    if e.is_connect() {
        Error::Connect(msg)
    } else {
        Error::Connect(format!("the request failed: {msg}"))
    }
}

/// Turns a non-2xx response into the matching error.
async fn check_status(p: &Provider, resp: reqwest::Response) -> Result<reqwest::Response, Error> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = retry_after(resp.headers());
    let body = read_error_body(resp).await;
    let message = p.redact(error_message(status.as_u16(), &body));
    if status.as_u16() == 429 && !is_quota_error(&body) {
        tracing::debug!(%message, "model provider rate limit");
        return Err(Error::RateLimited { retry_after });
    }
    Err(Error::Upstream {
        status: status.as_u16(),
        message,
    })
}

/// OpenAI answers 429 both for "slow down" and for "no credit left"; waiting does not
/// fix the second, and its message is what the admin needs to see.
fn is_quota_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
        v["error"]["code"] == "insufficient_quota" || v["error"]["type"] == "insufficient_quota"
    })
}

/// Reads a whole body of at most `max` bytes.
async fn read_capped(
    p: &Provider,
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, Error> {
    let too_big = || {
        Error::Protocol(format!(
            "the answer is larger than {} MiB",
            max / (1024 * 1024)
        ))
    };
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_big());
    }
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > max {
                    return Err(too_big());
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf),
            Err(e) if e.is_timeout() => return Err(Error::Timeout),
            // The connection broke mid-answer; nothing reached the user yet, so this is
            // retried like a connection failure.
            Err(e) => {
                return Err(Error::Connect(format!(
                    "the connection broke while reading the answer: {}",
                    p.redact(root_cause(&e))
                )));
            }
        }
    }
}

type Parsed = (String, ChatMessage, Option<String>, Option<Usage>);

fn parse_completion(p: &Provider, body: &[u8]) -> Result<Parsed, Error> {
    let c: Completion = serde_json::from_slice(body).map_err(|e| {
        Error::Protocol(p.redact(format!(
            "invalid JSON in the answer: {}",
            sanitise(&e.to_string(), 200)
        )))
    })?;
    let Some(choice) = c.choices.into_iter().next() else {
        let detail = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| message_in(&v))
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        return Err(Error::Protocol(
            p.redact(format!("the answer has no choices{detail}")),
        ));
    };
    let message = normalise(choice.message.into_message());
    Ok((c.model, message, choice.finish_reason, c.usage))
}

/// Content is `None` only for a message that carries tool calls instead of text, so the
/// two ways of calling agree on what an empty answer looks like.
fn normalise(mut m: ChatMessage) -> ChatMessage {
    if m.content.is_none() && m.tool_calls.is_empty() {
        m.content = Some(String::new());
    }
    if m.content.as_deref() == Some("") && !m.tool_calls.is_empty() {
        m.content = None;
    }
    m
}

/// Usage by counting, for providers that report none. Tokenising is CPU work, and the first
/// use loads an encoding, so it runs off the async workers.
async fn estimate_usage(model: String, prompt: Vec<ChatMessage>, answer: ChatMessage) -> Usage {
    let task = tokio::task::spawn_blocking(move || {
        let completion = answer
            .content
            .as_deref()
            .map_or(0, |t| count_tokens(&model, t))
            + answer
                .tool_calls
                .iter()
                .map(|c| count_tokens(&model, &c.name) + count_tokens(&model, &c.arguments))
                .sum::<usize>();
        Usage {
            prompt_tokens: u32::try_from(count_message_tokens(&model, &prompt)).unwrap_or(u32::MAX),
            completion_tokens: u32::try_from(completion).unwrap_or(u32::MAX),
            estimated: true,
        }
    });
    task.await.unwrap_or(Usage {
        estimated: true,
        ..Usage::default()
    })
}

/// One attempt at a stream: the request up to its response headers. Takes fields, not the
/// state, so the future stays `Send` (the state holds a non-`Sync` body stream).
async fn open_once(
    client: &Client,
    p: &Provider,
    url: &reqwest::Url,
    body: &Bytes,
) -> Result<Body, Error> {
    let rb = client.post(p, url.clone(), body.clone(), "text/event-stream")?;
    let attempt = async {
        let resp = rb.send().await.map_err(|e| send_error(p, &e))?;
        check_status(p, resp).await
    };
    let resp = tokio::time::timeout(p.idle_timeout, attempt)
        .await
        .map_err(|_| Error::Timeout)??;
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    Ok(if is_json {
        Body::Json(resp)
    } else {
        Body::Sse(Box::pin(resp.bytes_stream()))
    })
}

type BodyStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

enum Body {
    Sse(BodyStream),
    /// The server ignored `stream: true` and sent a normal completion.
    Json(reqwest::Response),
}

/// A failure inside a stream, with whether a fresh attempt may fix it (only consulted
/// while nothing has been shown to the user).
struct Failure {
    error: Error,
    retryable: bool,
}

impl Failure {
    fn fatal(error: Error) -> Self {
        Failure {
            error,
            retryable: false,
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let retryable = error.is_retryable();
        Failure { error, retryable }
    }
}

struct StreamState {
    client: Client,
    provider: Provider,
    url: reqwest::Url,
    body: Bytes,
    model: String,
    /// Kept for estimating usage when the provider sends none.
    prompt: Vec<ChatMessage>,
    retry: Retry,
    response: Option<Body>,
    parser: SseParser,
    asm: Assembler,
    pending: VecDeque<StreamEvent>,
    /// A delta went out: from here on nothing is retried.
    yielded: bool,
    finished: bool,
    saw_done: bool,
}

impl StreamState {
    /// Sends the request until a 2xx arrives, retrying what is retryable.
    async fn open(&mut self) -> Result<(), Error> {
        loop {
            match open_once(&self.client, &self.provider, &self.url, &self.body).await {
                Ok(body) => {
                    self.response = Some(body);
                    return Ok(());
                }
                Err(e) => {
                    let retryable = e.is_retryable();
                    self.retry.after(&self.provider, e, retryable).await?;
                }
            }
        }
    }

    /// The next item for the consumer; `None` after `Done` or an error.
    async fn next_event(&mut self) -> Option<Result<StreamEvent, Error>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                if matches!(ev, StreamEvent::Delta(_)) {
                    self.yielded = true;
                }
                return Some(Ok(ev));
            }
            if self.finished {
                return None;
            }
            let Err(f) = self.step().await else { continue };
            // Release the connection now rather than when the consumer drops the stream.
            self.response = None;
            if self.yielded || !f.retryable {
                self.finished = true;
                return Some(Err(f.error));
            }
            // Nothing was shown yet: start over as if the request had failed outright.
            if let Err(e) = self.retry.after(&self.provider, f.error, true).await {
                self.finished = true;
                return Some(Err(e));
            }
            self.parser = new_parser();
            self.asm = Assembler::default();
            self.pending.clear();
            self.saw_done = false;
            if let Err(e) = self.open().await {
                self.finished = true;
                return Some(Err(e));
            }
        }
    }

    /// Reads once from the connection and queues what that produced.
    async fn step(&mut self) -> Result<(), Failure> {
        let p = &self.provider;
        match self.response.as_mut() {
            None => Err(Failure::fatal(Error::Protocol(
                "the stream is closed".into(),
            ))),
            Some(Body::Json(_)) => {
                let Some(Body::Json(resp)) = self.response.take() else {
                    return Err(Failure::fatal(Error::Protocol(
                        "the stream is closed".into(),
                    )));
                };
                let read = tokio::time::timeout(p.idle_timeout, read_capped(p, resp, MAX_BODY));
                let bytes = read.await.map_err(|_| Error::Timeout)??;
                let (model, message, finish_reason, usage) =
                    parse_completion(p, &bytes).map_err(Failure::fatal)?;
                if !model.is_empty() {
                    self.asm.model = model;
                }
                if let Some(text) = message.content.clone().filter(|t| !t.is_empty()) {
                    self.pending.push_back(StreamEvent::Delta(text));
                }
                let usage = match usage {
                    Some(u) => u,
                    None => {
                        estimate_usage(self.model.clone(), self.prompt.clone(), message.clone())
                            .await
                    }
                };
                self.pending.push_back(StreamEvent::Done {
                    message,
                    finish_reason,
                    usage: Some(usage),
                });
                self.finished = true;
                Ok(())
            }
            Some(Body::Sse(body)) => {
                let next = tokio::time::timeout(p.idle_timeout, body.next())
                    .await
                    .map_err(|_| Failure::fatal(Error::Timeout))?;
                let mut events = Vec::new();
                match next {
                    Some(Ok(bytes)) => self
                        .parser
                        .feed(&bytes, &mut events)
                        .map_err(|e| Failure::fatal(Error::Protocol(e.to_string())))?,
                    Some(Err(e)) => {
                        return Err(Failure {
                            error: Error::Protocol(format!(
                                "the stream broke: {}",
                                p.redact(root_cause(&e))
                            )),
                            retryable: true,
                        });
                    }
                    None => {
                        self.parser
                            .finish(&mut events)
                            .map_err(|e| Failure::fatal(Error::Protocol(e.to_string())))?;
                        for ev in events {
                            if self.saw_done {
                                break;
                            }
                            self.handle(ev)?;
                        }
                        // Some servers close right after the final chunk without [DONE];
                        // a finish reason says the answer is complete all the same.
                        if !self.saw_done && self.asm.finish_reason.is_none() {
                            return Err(Failure {
                                error: Error::Protocol("the stream ended before [DONE]".into()),
                                retryable: true,
                            });
                        }
                        return self.finish().await;
                    }
                }
                for ev in events {
                    self.handle(ev)?;
                    if self.saw_done {
                        return self.finish().await;
                    }
                }
                Ok(())
            }
        }
    }

    /// One SSE event: `[DONE]`, an error frame, or a chunk.
    fn handle(&mut self, ev: SseEvent) -> Result<(), Failure> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            self.saw_done = true;
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let p = &self.provider;
        let bad_json = |e: serde_json::Error| {
            Failure::fatal(Error::Protocol(p.redact(format!(
                "invalid JSON in the stream: {}",
                sanitise(&e.to_string(), 200)
            ))))
        };
        let error_value = if ev.event.as_deref() == Some("error") {
            Some(serde_json::from_str::<serde_json::Value>(data).map_err(bad_json)?)
        } else {
            let chunk: Chunk = serde_json::from_str(data).map_err(bad_json)?;
            match chunk.error {
                Some(err) => Some(serde_json::json!({ "error": err })),
                None => {
                    let text = self
                        .asm
                        .push(chunk, MAX_BODY)
                        .map_err(|m| Failure::fatal(Error::Protocol(m)))?;
                    if !text.is_empty() {
                        self.pending.push_back(StreamEvent::Delta(text));
                    }
                    None
                }
            }
        };
        if let Some(v) = error_value {
            let status = v["error"]["code"]
                .as_u64()
                .or_else(|| v["code"].as_u64())
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..600).contains(c))
                .unwrap_or(500);
            let message = p.redact(message_in(&v).unwrap_or_else(|| "error in the stream".into()));
            return Err(Error::Upstream { status, message }.into());
        }
        Ok(())
    }

    /// Queues `Done` and closes the connection.
    async fn finish(&mut self) -> Result<(), Failure> {
        self.response = None;
        self.finished = true;
        let asm = std::mem::take(&mut self.asm);
        let finish_reason = asm.finish_reason.clone();
        let reported = asm.usage;
        let message = normalise(asm.into_message());
        let usage = match reported {
            Some(u) => u,
            None => {
                estimate_usage(
                    self.model.clone(),
                    std::mem::take(&mut self.prompt),
                    message.clone(),
                )
                .await
            }
        };
        self.pending.push_back(StreamEvent::Done {
            message,
            finish_reason,
            usage: Some(usage),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_policy_is_the_providers() {
        let p = Provider {
            max_retries: 2,
            retry_backoff: Duration::from_millis(100),
            ..Provider::default()
        };
        let r = p.retry_policy();
        assert_eq!(
            (r.max_retries, r.base_delay),
            (2, Duration::from_millis(100))
        );
        assert_eq!(
            (r.max_delay, r.max_retry_after),
            (MAX_BACKOFF, MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn a_tenant_url_to_a_private_address_is_refused() {
        let mut p = Provider::new("http://169.254.169.254/v1", None);
        assert!(p.url("models").is_ok(), "the operator's own URL is trusted");
        p.policy = Policy::tenant(crate::net::Allowlist::default());
        let e = p.url("models").expect_err("refused");
        assert!(matches!(e, Error::Refused(_)), "{e:?}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn provider_debug_hides_the_key() {
        let p = Provider::new("http://x/v1", Some(Secret::new("sk-very-secret-key-123")));
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        assert!(dbg.contains("http://x/v1"));
        let p = Provider::new("https://user:hunter2@proxy.example/v1", None);
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn urls_join_and_bad_ones_are_errors() {
        let p = Provider::new("http://127.0.0.1:11434/v1/", None);
        assert_eq!(
            p.url("chat/completions").unwrap().as_str(),
            "http://127.0.0.1:11434/v1/chat/completions"
        );
        assert!(matches!(
            Provider::new("not a url", None).url("models"),
            Err(Error::Connect(_))
        ));
        assert!(matches!(
            Provider::new("ftp://x/v1", None).url("models"),
            Err(Error::Connect(_))
        ));
    }

    #[test]
    fn request_body_has_stream_settings() {
        let req = ChatRequest::new("m", vec![ChatMessage::user("hi")]);
        let v: serde_json::Value = serde_json::from_slice(&encode(&req, true).unwrap()).unwrap();
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "m");
        let v: serde_json::Value = serde_json::from_slice(&encode(&req, false).unwrap()).unwrap();
        assert_eq!(v["stream"], false);
        assert!(v.get("stream_options").is_none());
        assert!(v.get("tools").is_none());
    }

    #[test]
    fn quota_429_is_not_a_rate_limit() {
        assert!(is_quota_error(
            br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#
        ));
        assert!(!is_quota_error(
            br#"{"error":{"message":"Rate limit reached","code":"rate_limit_exceeded"}}"#
        ));
        assert!(!is_quota_error(b"garbage"));
    }

    #[test]
    fn empty_answers_normalise() {
        let m = normalise(ChatMessage {
            content: None,
            ..ChatMessage::assistant("")
        });
        assert_eq!(m.content.as_deref(), Some(""));
    }
}
