//! /api/agents: agents CRUD (train and test live with the knowledge and agent engine).

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Auth, Json, Query, page_req};
use super::views::{AgentView, CitationView, Paged, UsageView, paged};
use crate::domain::agents::AgentInput;
use crate::model::{ActiveStatus, AnswerMode, RetrievalMode, ToolSpec};
use crate::types::{AgentId, DocumentId};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::double;
use super::sse::json_event;
use axum::response::sse::Event;

/// Agent fields; on create `name` is required, on update every field is optional.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentReq {
    /// Required on create.
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    /// a-z, 0-9 and -, not starting with -.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9][a-z0-9-]*$")]
    slug: Option<String>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    description: Option<Option<String>>,
    #[schema(max_length = 20000)]
    system_prompt: Option<String>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    model: Option<Option<String>>,
    #[schema(minimum = 0, maximum = 2)]
    temperature: Option<f32>,
    #[schema(minimum = 1, maximum = 32768)]
    max_tokens: Option<u32>,
    #[schema(minimum = 1, maximum = 50)]
    top_k: Option<u32>,
    retrieval_mode: Option<RetrievalMode>,
    /// `generate`, `extractive` or `auto` (the default on create).
    answer_mode: Option<AnswerMode>,
    #[schema(max_items = 1000)]
    document_ids: Option<Vec<DocumentId>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    greeting: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    fallback_message: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>, max_length = 35)]
    language: Option<Option<String>>,
    #[schema(max_items = 32)]
    tools: Option<Vec<ToolSpec>>,
    status: Option<ActiveStatus>,
}

impl From<AgentReq> for AgentInput {
    fn from(r: AgentReq) -> Self {
        AgentInput {
            name: r.name,
            slug: r.slug,
            description: r.description,
            system_prompt: r.system_prompt,
            model: r.model,
            temperature: r.temperature,
            max_tokens: r.max_tokens,
            top_k: r.top_k,
            retrieval_mode: r.retrieval_mode,
            answer_mode: r.answer_mode,
            document_ids: r.document_ids,
            greeting: r.greeting,
            fallback_message: r.fallback_message,
            language: r.language,
            tools: r.tools,
            status: r.status,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentListParams {
    status: Option<ActiveStatus>,
    limit: Option<String>,
    cursor: Option<String>,
}

pub fn agent_id(s: &str) -> ApiResult<AgentId> {
    AgentId::parse(s).ok_or_else(|| ApiError::invalid_id("id"))
}

#[utoipa::path(get, path = "/api/agents", tag = "agents", params(AgentListParams),
    responses((status = 200, body = Paged<AgentView>)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<AgentListParams>,
) -> ApiResult<axum::Json<Paged<AgentView>>> {
    let page = page_req(q.limit.as_deref(), q.cursor.as_deref())?;
    let status = q.status;
    let r = state
        .run(move |s| s.list_agents(&caller, status, &page))
        .await?;
    Ok(axum::Json(paged(r)))
}

#[utoipa::path(post, path = "/api/agents", tag = "agents", request_body = AgentReq,
    responses((status = 402, body = ErrorBody, description = "`plan_limit_reached` (details: limit, used, max) or `subscription_inactive`"), (status = 201, body = AgentView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Json(r): Json<AgentReq>,
) -> ApiResult<impl IntoResponse> {
    let a = state
        .run(move |s| s.create_agent(&caller, r.into()))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(AgentView::from(&a))))
}

#[utoipa::path(get, path = "/api/agents/{id}", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = AgentView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<AgentView>> {
    let id = agent_id(&id)?;
    let a = state.run(move |s| s.get_agent(&caller, &id)).await?;
    Ok(axum::Json(AgentView::from(&a)))
}

#[utoipa::path(put, path = "/api/agents/{id}", tag = "agents", params(("id" = String, Path)), request_body = AgentReq,
    responses((status = 200, body = AgentView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Json(r): Json<AgentReq>,
) -> ApiResult<axum::Json<AgentView>> {
    let id = agent_id(&id)?;
    let a = state
        .run(move |s| s.update_agent(&caller, &id, r.into()))
        .await?;
    Ok(axum::Json(AgentView::from(&a)))
}

#[utoipa::path(delete, path = "/api/agents/{id}", tag = "agents", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = agent_id(&id)?;
    state.run(move |s| s.delete_agent(&caller, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
pub struct HistoryItem {
    /// `user` / `customer`, or `assistant` / `ai`.
    role: String,
    content: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestReq {
    #[schema(min_length = 1, max_length = 32000)]
    message: String,
    #[serde(default)]
    #[schema(max_items = 200)]
    history: Vec<HistoryItem>,
    #[serde(default)]
    stream: bool,
}

/// The playground's answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResponse {
    reply: String,
    citations: Vec<CitationView>,
    usage: UsageView,
    /// The whole turn (retrieval, prompt, model calls), in ms.
    latency_ms: u64,
    /// The part of `latencyMs` spent waiting for the model provider, in ms (fractional).
    upstream_ms: f64,
    tool_calls: Vec<crate::agent::ToolCallRecord>,
    /// Set when the agent would hand the conversation to a person.
    handoff: Option<String>,
}

fn turn_for(
    agent: crate::model::Agent,
    caller: crate::auth::Caller,
    r: TestReq,
) -> ApiResult<crate::agent::Turn> {
    let mut c = crate::domain::Checks::default();
    c.check(!r.message.trim().is_empty(), "message", "must not be empty");
    c.check(
        r.message.chars().count() <= crate::domain::conversations::MAX_MESSAGE_CHARS,
        "message",
        "is too long",
    );
    c.check(r.history.len() <= 200, "history", "at most 200 messages");
    let mut history = Vec::new();
    for (i, h) in r.history.into_iter().enumerate() {
        match h.role.as_str() {
            "user" | "customer" => history.push(crate::llm::ChatMessage::user(h.content)),
            "assistant" | "ai" | "human" => {
                history.push(crate::llm::ChatMessage::assistant(h.content))
            }
            _ => c.fail(&format!("history[{i}].role"), "must be user or assistant"),
        }
    }
    c.finish().map_err(ApiError::from)?;
    Ok(crate::agent::Turn {
        caller,
        agent,
        history,
        message: r.message,
    })
}

/// The playground: ask the agent without creating a conversation. With `stream: true`, a
/// Server-Sent Events stream: `delta` events `{content}`, then one `done` event with
/// `{reply, citations, usage, latencyMs, upstreamMs, toolCalls}` (or an `error` event).
#[utoipa::path(post, path = "/api/agents/{id}/test", tag = "agents", params(("id" = String, Path)), request_body = TestReq,
    responses((status = 200, description = "JSON, or text/event-stream (`delta`, then `done` with the whole answer) when stream is true", content((TestResponse = "application/json"), (super::sse::SseEvent = "text/event-stream"))), (status = 402, body = ErrorBody, description = "`plan_limit_reached` (the plan's AI replies for the period are used up) or `subscription_inactive`"), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn test(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Json(r): Json<TestReq>,
) -> ApiResult<axum::response::Response> {
    let id = agent_id(&id)?;
    let asker = caller.clone();
    // The stored record (sealed tool secrets included), for the engine.
    let stored = state
        .run(move |s| s.find_agent(&caller, id.as_str()))
        .await?;
    let stream = r.stream;
    let counted = asker.clone();
    let turn = turn_for(stored, asker, r)?;
    // A playground answer costs the model as much as a customer's: it counts against the plan.
    state.run(move |s| s.reserve_ai_reply(&counted)).await?;
    let engine = state.engine.clone();
    if !stream {
        let res = engine
            .run(turn, None)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "upstream_failed", e.message))?;
        return Ok(axum::Json(TestResponse::from(res)).into_response());
    }
    Ok(super::sse::relay(
        engine,
        turn,
        Playground,
        super::sse::Record::No,
    ))
}

impl From<crate::agent::TurnResult> for TestResponse {
    fn from(res: crate::agent::TurnResult) -> Self {
        TestResponse {
            reply: res.reply,
            citations: res.citations.iter().map(CitationView::from).collect(),
            usage: UsageView::from(&res.usage),
            latency_ms: res.latency_ms,
            upstream_ms: res.upstream.as_secs_f64() * 1000.0,
            tool_calls: res.tool_calls,
            handoff: res.handoff,
        }
    }
}

/// The playground's events: `delta` `{content}`, then `done` (a [`TestResponse`]) or
/// `error` `{error: {code, message}}`.
struct Playground;

impl super::sse::Framing for Playground {
    fn delta(&mut self, text: String) -> Vec<Event> {
        vec![json_event(
            Some("delta"),
            &serde_json::json!({ "content": text }),
        )]
    }
    fn done(&mut self, r: &crate::agent::TurnResult) -> Vec<Event> {
        vec![json_event(Some("done"), &TestResponse::from(r.clone()))]
    }
    fn failed(&mut self, e: &crate::agent::TurnError) -> Vec<Event> {
        vec![json_event(
            Some("error"),
            &serde_json::json!({ "error": { "code": "upstream_failed", "message": e.message } }),
        )]
    }
}
