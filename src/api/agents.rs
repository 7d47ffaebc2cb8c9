//! /api/agents: agents CRUD (train and test live with the knowledge and agent engine).

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Auth, Json, PageParams, Query};
use crate::domain::Paged;
use crate::domain::agents::AgentInput;
use crate::model::{ActiveStatus, Agent, RetrievalMode, ToolSpec};
use crate::types::{AgentId, DocumentId};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Deserializer};
use utoipa::{IntoParams, ToSchema};

/// `null` and absent are different for nullable fields: absent keeps, null clears.
fn double<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// Agent fields; on create `name` is required, on update every field is optional.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentReq {
    name: Option<String>,
    slug: Option<String>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    system_prompt: Option<String>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    model: Option<Option<String>>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    top_k: Option<u32>,
    retrieval_mode: Option<RetrievalMode>,
    document_ids: Option<Vec<DocumentId>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    greeting: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    fallback_message: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    language: Option<Option<String>>,
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
    responses((status = 200, body = Paged<Agent>)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<AgentListParams>,
) -> ApiResult<axum::Json<Paged<Agent>>> {
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .to_req()?;
    let status = q.status;
    let r = state
        .run(move |s| s.list_agents(&caller, status, &page))
        .await?;
    Ok(axum::Json(Paged {
        data: r.items,
        next_cursor: r.next,
    }))
}

#[utoipa::path(post, path = "/api/agents", tag = "agents", request_body = AgentReq,
    responses((status = 201, body = Agent), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Json(r): Json<AgentReq>,
) -> ApiResult<impl IntoResponse> {
    let a = state
        .run(move |s| s.create_agent(&caller, r.into()))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(a)))
}

#[utoipa::path(get, path = "/api/agents/{id}", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Agent>> {
    let id = agent_id(&id)?;
    Ok(axum::Json(
        state.run(move |s| s.get_agent(&caller, &id)).await?,
    ))
}

#[utoipa::path(put, path = "/api/agents/{id}", tag = "agents", params(("id" = String, Path)), request_body = AgentReq,
    responses((status = 200, body = Agent), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Json(r): Json<AgentReq>,
) -> ApiResult<axum::Json<Agent>> {
    let id = agent_id(&id)?;
    Ok(axum::Json(
        state
            .run(move |s| s.update_agent(&caller, &id, r.into()))
            .await?,
    ))
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
