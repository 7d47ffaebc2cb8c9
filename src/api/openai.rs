//! The OpenAI-compatible API: POST /v1/chat/completions and GET /v1/models, so OpenAI SDKs
//! talk to an agent unchanged (`model` = the agent's slug or id). Errors here use OpenAI's
//! error shape, not ours.

use super::AppState;
use super::error::ApiError;
use super::extract::{Auth, JsonLimit};
use crate::agent::{Turn, TurnError, TurnResult};
use crate::llm::ChatMessage;
use crate::model::ActiveStatus;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// An error in OpenAI's shape.
pub struct OaiError(StatusCode, String, &'static str, Option<String>);

impl IntoResponse for OaiError {
    fn into_response(self) -> Response {
        let kind = match self.0.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "invalid_request_error",
            429 => "rate_limit_error",
            402 => "insufficient_quota",
            400 | 413 | 415 | 422 => "invalid_request_error",
            _ => "api_error",
        };
        (
            self.0,
            axum::Json(json!({"error": {"message": self.1, "type": kind, "param": self.3, "code": self.2}})),
        )
            .into_response()
    }
}

impl From<ApiError> for OaiError {
    fn from(e: ApiError) -> Self {
        let code: &'static str = match e.status.as_u16() {
            401 => "invalid_api_key",
            403 => "insufficient_permissions",
            404 => "model_not_found",
            429 => "rate_limit_exceeded",
            413 => "payload_too_large",
            // The plan's AI replies are used up, or the subscription is inactive.
            402 if e.code == "subscription_inactive" => "subscription_inactive",
            402 => "insufficient_quota",
            400 | 415 | 422 => "invalid_request",
            _ => "server_error",
        };
        OaiError(e.status, e.message, code, None)
    }
}

/// `Auth` with OpenAI-shaped rejections.
pub struct OaiAuth(pub crate::auth::Caller);

impl FromRequestParts<AppState> for OaiAuth {
    type Rejection = OaiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, OaiError> {
        Auth::from_request_parts(parts, state)
            .await
            .map(|Auth(c)| OaiAuth(c))
            .map_err(|e| {
                if e.status == StatusCode::UNAUTHORIZED {
                    OaiError(
                        e.status,
                        "Incorrect or missing API key. Send it as `Authorization: Bearer ak_...`."
                            .into(),
                        "invalid_api_key",
                        None,
                    )
                } else {
                    e.into()
                }
            })
    }
}

#[derive(Deserialize)]
struct OaiMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct CompletionReq {
    model: String,
    messages: Vec<OaiMessage>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
}

/// The request body, read within the JSON body limit (BODY_LIMIT_BYTES), not the
/// router-wide upload limit, with OpenAI-shaped rejections.
pub struct CompletionBody(CompletionReq);

impl<S: Send + Sync> FromRequest<S> for CompletionBody {
    type Rejection = OaiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, OaiError> {
        let JsonLimit(limit) = req
            .extensions()
            .get::<JsonLimit>()
            .copied()
            .unwrap_or(JsonLimit(1024 * 1024));
        let body = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| {
                OaiError(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than {limit} bytes"),
                    "payload_too_large",
                    None,
                )
            })?;
        decode(&body).map(CompletionBody)
    }
}

fn decode(body: &[u8]) -> Result<CompletionReq, OaiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid request body: {e}"), "body"))
}

impl OaiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.0
    }
}

/// Decodes and checks a `/v1/chat/completions` body exactly as the route does before it
/// looks up the agent (`max_messages`: CHAT_MAX_MESSAGES). For the fuzz target: any input
/// gives `Ok` or an error with a 4xx status.
#[doc(hidden)]
pub fn check_completion_body(body: &[u8], max_messages: usize) -> Result<(), OaiError> {
    validate(decode(body)?, max_messages).map(|_| ())
}

/// Text of a message content: a string, or an array of `{type:"text", text}` parts.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn bad(msg: impl Into<String>, param: &str) -> OaiError {
    OaiError(
        StatusCode::BAD_REQUEST,
        msg.into(),
        "invalid_request",
        Some(param.into()),
    )
}

/// A checked request: the question, the history, and the caller's overrides.
struct Completion {
    model: String,
    history: Vec<ChatMessage>,
    question: String,
    stream: bool,
    include_usage: bool,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
}

/// Checks the request. The last user message is the question; earlier user/assistant turns
/// are history; the caller's system messages are ignored (the agent's own prompt applies).
fn validate(req: CompletionReq, max_messages: usize) -> Result<Completion, OaiError> {
    if req.messages.len() > max_messages {
        return Err(OaiError(
            StatusCode::BAD_REQUEST,
            format!(
                "at most {max_messages} messages per request (got {})",
                req.messages.len()
            ),
            "too_many_messages",
            Some("messages".into()),
        ));
    }
    if let Some(t) = req.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(bad("temperature must be between 0 and 2", "temperature"));
    }
    let mut history = Vec::new();
    let mut question = None;
    let n = req.messages.len();
    for (i, m) in req.messages.into_iter().enumerate() {
        let text = text_of(&m.content);
        match m.role.as_str() {
            "user" if i + 1 == n => question = Some(text),
            "user" => history.push(ChatMessage::user(text)),
            "assistant" => history.push(ChatMessage::assistant(text)),
            "system" | "developer" | "tool" | "function" => {}
            other => {
                return Err(bad(
                    format!("unknown role `{other}` in messages[{i}]"),
                    "messages",
                ));
            }
        }
    }
    let question = question.filter(|q| !q.trim().is_empty()).ok_or_else(|| {
        bad(
            "the last message must be a non-empty user message",
            "messages",
        )
    })?;
    Ok(Completion {
        model: req.model,
        history,
        question,
        stream: req.stream,
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        temperature: req.temperature,
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
    })
}

/// The active agent named by `model` (slug or id), with the caller's overrides applied.
async fn agent_for(
    state: &AppState,
    caller: crate::auth::Caller,
    c: &Completion,
) -> Result<crate::model::Agent, OaiError> {
    let model = c.model.clone();
    let unknown = |message: String| {
        OaiError(
            StatusCode::NOT_FOUND,
            message,
            "model_not_found",
            Some("model".into()),
        )
    };
    let mut agent = state
        .run(move |s| s.find_agent(&caller, &model))
        .await
        .map_err(|e| {
            // Only a missing agent is an unknown model; a role without access or our own
            // failure must not be reported as one.
            if e.status != StatusCode::NOT_FOUND {
                return OaiError::from(e);
            }
            unknown(format!(
                "The model `{}` does not exist: use an agent's slug or id (GET /v1/models).",
                c.model
            ))
        })?;
    if agent.status != ActiveStatus::Active {
        return Err(unknown(format!("The agent `{}` is inactive.", c.model)));
    }
    if let Some(t) = c.temperature {
        agent.temperature = t;
    }
    if let Some(m) = c.max_tokens {
        agent.max_tokens = m.clamp(1, 32_768);
    }
    Ok(agent)
}

/// The id, creation time and model name every answer and chunk carries.
#[derive(Clone)]
struct Meta {
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    fn new(model: String) -> Self {
        Meta {
            id: format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
            created: crate::auth::tokens::unix_now(),
            model,
        }
    }
}

fn usage_json(u: &crate::model::Usage) -> Value {
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.prompt_tokens + u.completion_tokens})
}

/// OpenAI chat completions against an agent.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body(content = Object, content_type = "application/json", description = "An OpenAI chat completion request: `model` (an agent's slug or id), `messages` [{role, content}] (the last one a user message), optional `stream` and `stream_options.include_usage`."),
    responses(
        (status = 200, description = "An OpenAI `chat.completion`, or `text/event-stream` of `chat.completion.chunk` events ending in `[DONE]` when `stream` is true", content((Object = "application/json"), (super::sse::SseEvent = "text/event-stream"))),
        (status = 400, body = Object, description = "OpenAI error shape `{error:{message,type,param,code}}`"),
        (status = 401, body = Object, description = "OpenAI error shape"),
        (status = 402, body = Object, description = "The tenant's plan allows no more AI replies this period, or its subscription is inactive (OpenAI error shape, code `insufficient_quota` or `subscription_inactive`)"),
        (status = 404, body = Object, description = "No agent with that `model` (OpenAI error shape)"),
        (status = 413, body = Object, description = "OpenAI error shape"),
        (status = 415, body = Object, description = "OpenAI error shape"),
        (status = 429, body = Object, description = "OpenAI error shape"),
        (status = 502, body = Object, description = "The model provider failed (OpenAI error shape)")))]
pub async fn chat_completions(
    State(state): State<AppState>,
    OaiAuth(caller): OaiAuth,
    CompletionBody(req): CompletionBody,
) -> Result<Response, OaiError> {
    let c = validate(req, state.config.chat_max_messages)?;
    let asker = caller.clone();
    let agent = agent_for(&state, caller, &c).await?;
    // An answer here is an AI reply like one in a conversation: it counts against the plan.
    let counted = asker.clone();
    state
        .run(move |s| s.reserve_ai_reply(&counted))
        .await
        .map_err(OaiError::from)?;
    let meta = Meta::new(agent.slug.clone());
    let turn = Turn {
        caller: asker,
        agent,
        history: c.history,
        message: c.question,
    };
    let engine = state.engine.clone();
    if c.stream {
        let framing = Chunks {
            meta,
            include_usage: c.include_usage,
        };
        return Ok(super::sse::relay(
            engine,
            turn,
            framing,
            super::sse::Record::Detached,
        ));
    }
    answer(&engine, turn, meta).await
}

/// The non-streaming answer: one `chat.completion`.
async fn answer(
    engine: &crate::agent::Engine,
    turn: Turn,
    meta: Meta,
) -> Result<Response, OaiError> {
    let (caller, agent) = (turn.caller.clone(), turn.agent.clone());
    let r = engine.run(turn, None).await;
    engine.record_detached(&caller, &agent, &r).await;
    let r = r.map_err(|e| OaiError(StatusCode::BAD_GATEWAY, e.message, "upstream_error", None))?;
    let body = json!({
        "id": meta.id, "object": "chat.completion", "created": meta.created, "model": meta.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": r.reply, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
        "usage": usage_json(&r.usage),
        "system_fingerprint": null,
        "citations": r.citations,
    });
    Ok(axum::Json(body).into_response())
}

/// The streaming answer's framing: `chat.completion.chunk` events, then `[DONE]`.
struct Chunks {
    meta: Meta,
    include_usage: bool,
}

impl Chunks {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({"id": self.meta.id, "object": "chat.completion.chunk", "created": self.meta.created, "model": self.meta.model, "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }
}

fn data(v: Value) -> Event {
    Event::default().data(v.to_string())
}

impl super::sse::Framing for Chunks {
    fn start(&mut self) -> Vec<Event> {
        vec![data(
            self.chunk(json!({"role": "assistant", "content": ""}), None),
        )]
    }
    fn delta(&mut self, text: String) -> Vec<Event> {
        vec![data(self.chunk(json!({"content": text}), None))]
    }
    fn done(&mut self, r: &TurnResult) -> Vec<Event> {
        let mut last = self.chunk(json!({}), Some("stop"));
        last["citations"] = serde_json::to_value(&r.citations).unwrap_or(Value::Null);
        let mut out = vec![data(last.clone())];
        if self.include_usage {
            last["choices"] = json!([]);
            last["usage"] = usage_json(&r.usage);
            out.push(data(last));
        }
        out
    }
    fn failed(&mut self, e: &TurnError) -> Vec<Event> {
        vec![data(
            json!({"error": {"message": e.message, "type": "api_error", "param": null, "code": "upstream_error"}}),
        )]
    }
    fn end(&mut self) -> Vec<Event> {
        vec![Event::default().data("[DONE]")]
    }
}

/// The caller's active agents as models.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses(
        (status = 200, body = Object, description = "`{object: \"list\", data: [{id (the agent's slug), object: \"model\", created, owned_by, name, agentId}]}`"),
        (status = 401, body = Object, description = "OpenAI error shape `{error:{message,type,param,code}}`")))]
pub async fn models(
    State(state): State<AppState>,
    OaiAuth(caller): OaiAuth,
) -> Result<Response, OaiError> {
    let page = crate::domain::PageReq {
        limit: crate::domain::PageReq::MAX,
        cursor: None,
    };
    let agents = state
        .run(move |s| s.list_agents(&caller, Some(ActiveStatus::Active), &page))
        .await
        .map_err(OaiError::from)?;
    let data: Vec<Value> = agents
        .items
        .iter()
        .map(|a| json!({"id": a.slug, "object": "model", "created": a.created_at.unix_timestamp(), "owned_by": "aigentable", "name": a.name, "agentId": a.id}))
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}
