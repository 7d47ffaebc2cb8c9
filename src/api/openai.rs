//! The OpenAI-compatible API: POST /v1/chat/completions and GET /v1/models, so OpenAI SDKs
//! talk to an agent unchanged (`model` = the agent's slug or id). Errors here use OpenAI's
//! error shape, not ours.

use super::AppState;
use super::error::ApiError;
use super::extract::Auth;
use crate::agent::Turn;
use crate::llm::ChatMessage;
use crate::model::ActiveStatus;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
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
            413 => "request_too_large",
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

/// OpenAI chat completions against an agent.
pub async fn chat_completions(
    State(state): State<AppState>,
    OaiAuth(caller): OaiAuth,
    body: axum::body::Bytes,
) -> Result<Response, OaiError> {
    let req: CompletionReq = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("invalid request body: {e}"), "body"))?;
    let tenant = caller.tenant().clone();
    let model = req.model.clone();
    let mut agent = state
        .run(move |s| s.find_agent(&caller, &model))
        .await
        .map_err(|e| {
            // Only a missing agent is an unknown model; a role without access or our own
            // failure must not be reported as one.
            if e.status != StatusCode::NOT_FOUND {
                return OaiError::from(e);
            }
            OaiError(
                StatusCode::NOT_FOUND,
                format!(
                    "The model `{}` does not exist: use an agent's slug or id (GET /v1/models).",
                    req.model
                ),
                "model_not_found",
                Some("model".into()),
            )
        })?;
    if agent.status != ActiveStatus::Active {
        return Err(OaiError(
            StatusCode::NOT_FOUND,
            format!("The agent `{}` is inactive.", req.model),
            "model_not_found",
            Some("model".into()),
        ));
    }
    if let Some(t) = req.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(bad("temperature must be between 0 and 2", "temperature"));
        }
        agent.temperature = t;
    }
    if let Some(m) = req.max_completion_tokens.or(req.max_tokens) {
        agent.max_tokens = m.clamp(1, 32_768);
    }
    // The last user message is the question; earlier user/assistant turns are history.
    // The caller's system messages are ignored: the agent's own prompt applies.
    let mut history = Vec::new();
    let mut question = None;
    for (i, m) in req.messages.iter().enumerate() {
        let text = text_of(&m.content);
        match m.role.as_str() {
            "user" if i + 1 == req.messages.len() => question = Some(text),
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
    let id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());
    let created = crate::auth::tokens::unix_now();
    let slug = agent.slug.clone();
    let stats_agent = agent.clone();
    let stats_tenant = tenant.clone();
    let turn = Turn {
        tenant,
        agent,
        history,
        message: question,
    };
    let engine = state.engine.clone();
    if !req.stream {
        let r = engine.run(turn, None).await;
        engine
            .record_detached(&stats_tenant, &stats_agent, &r)
            .await;
        let r =
            r.map_err(|e| OaiError(StatusCode::BAD_GATEWAY, e.message, "upstream_error", None))?;
        let body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": slug,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": r.reply, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens, "total_tokens": r.usage.prompt_tokens + r.usage.completion_tokens},
            "system_fingerprint": null,
            "citations": r.citations,
        });
        return Ok(axum::Json(body).into_response());
    }
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
    let (ev_tx, ev_rx) = tokio::sync::mpsc::channel::<Result<Event, std::convert::Infallible>>(64);
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": slug, "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    tokio::spawn(async move {
        let send = |v: Value| {
            let ev_tx = ev_tx.clone();
            async move {
                ev_tx
                    .send(Ok(Event::default().data(v.to_string())))
                    .await
                    .is_ok()
            }
        };
        if !send(chunk(json!({"role": "assistant", "content": ""}), None)).await {
            return;
        }
        let run = engine.run(turn, Some(tx));
        tokio::pin!(run);
        let mut result = None;
        loop {
            tokio::select! {
                d = rx.recv() => match d {
                    Some(d) => { if !send(chunk(json!({"content": d}), None)).await { return; } }
                    None => { if result.is_some() { break; } }
                },
                r = &mut run, if result.is_none() => { result = Some(r); }
            }
        }
        if let Some(r) = &result {
            engine.record_detached(&stats_tenant, &stats_agent, r).await;
        }
        match result {
            Some(Ok(r)) => {
                let mut last = chunk(json!({}), Some("stop"));
                last["citations"] = serde_json::to_value(&r.citations).unwrap_or(Value::Null);
                if !send(last.clone()).await {
                    return;
                }
                if include_usage {
                    let mut u = last;
                    u["choices"] = json!([]);
                    u["usage"] = json!({"prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens, "total_tokens": r.usage.prompt_tokens + r.usage.completion_tokens});
                    if !send(u).await {
                        return;
                    }
                }
            }
            Some(Err(e)) => {
                let _ = send(json!({"error": {"message": e.message, "type": "api_error", "param": null, "code": "upstream_error"}})).await;
            }
            None => {}
        }
        let _ = ev_tx.send(Ok(Event::default().data("[DONE]"))).await;
    });
    Ok(Sse::new(tokio_stream::wrappers::ReceiverStream::new(ev_rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The caller's active agents as models.
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
