//! /api/conversations: the inbox.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Auth, Json, PageParams, Query, opt_id, page_req};
use super::views::{ConversationView, MessageView, Paged, paged};
use crate::domain::conversations::{AssignTo, ConversationFilter};
use crate::model::{ConversationStatus, Customer};
use crate::types::{AgentId, ChannelId, ConversationId, UserId};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateConversationReq {
    agent_id: AgentId,
    channel_id: Option<ChannelId>,
    customer: Option<Customer>,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ConversationListParams {
    status: Option<ConversationStatus>,
    agent_id: Option<String>,
    channel_id: Option<String>,
    assignee_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignReq {
    user_id: Option<String>,
    agent_id: Option<String>,
}

/// A conversation with its newest messages (oldest first among them).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationDetail {
    #[serde(flatten)]
    conversation: ConversationView,
    messages: Vec<MessageView>,
    /// Pass as `cursor` to GET /api/conversations/{id}/messages for older messages.
    older_messages_cursor: Option<String>,
}

pub fn conversation_id(s: &str) -> ApiResult<ConversationId> {
    ConversationId::parse(s).ok_or_else(|| ApiError::invalid_id("id"))
}

#[utoipa::path(post, path = "/api/conversations", tag = "conversations", request_body = CreateConversationReq,
    responses((status = 201, body = ConversationView), (status = 404, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Json(r): Json<CreateConversationReq>,
) -> ApiResult<impl IntoResponse> {
    let c = state
        .run(move |s| {
            s.create_conversation(
                &caller,
                &r.agent_id,
                r.channel_id.as_ref(),
                r.customer.unwrap_or_default(),
            )
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(ConversationView::from(&c))))
}

/// Conversations, newest first, filtered by status, agent, channel and assignee.
#[utoipa::path(get, path = "/api/conversations", tag = "conversations", params(ConversationListParams),
    responses((status = 200, body = Paged<ConversationView>)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<ConversationListParams>,
) -> ApiResult<axum::Json<Paged<ConversationView>>> {
    let page = page_req(q.limit.as_deref(), q.cursor.as_deref())?;
    let f = ConversationFilter {
        status: q.status,
        agent_id: opt_id(q.agent_id, "agentId", AgentId::parse)?,
        channel_id: opt_id(q.channel_id, "channelId", ChannelId::parse)?,
        assignee_id: opt_id(q.assignee_id, "assigneeId", UserId::parse)?,
    };
    let r = state
        .run(move |s| {
            let page = s.list_conversations(&caller, &f, &page)?;
            let unread = s.unread_counts(&caller, &page.items)?;
            Ok((page, unread))
        })
        .await?;
    let (page, unread) = r;
    let mut out: Paged<ConversationView> = paged(page);
    for v in &mut out.data {
        v.unread_count = unread.get(&v.id).copied();
    }
    Ok(axum::Json(out))
}

#[utoipa::path(get, path = "/api/conversations/{id}", tag = "conversations", params(("id" = String, Path)),
    responses((status = 200, body = ConversationDetail), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ConversationDetail>> {
    let id = conversation_id(&id)?;
    let (conversation, page, unread) = state
        .run(move |s| {
            let c = s.get_conversation(&caller, &id)?;
            let unread = s.unread_counts(&caller, std::slice::from_ref(&c))?;
            let p = s.list_messages(
                &caller,
                &id,
                &crate::domain::PageReq {
                    limit: 50,
                    cursor: None,
                },
            )?;
            Ok((c, p, unread))
        })
        .await?;
    let messages = page.items.iter().rev().map(MessageView::from).collect();
    let mut view = ConversationView::from(&conversation);
    view.unread_count = unread.get(&view.id).copied();
    Ok(axum::Json(ConversationDetail {
        conversation: view,
        messages,
        older_messages_cursor: page.next,
    }))
}

/// Messages, newest first; `cursor` pages towards older ones.
#[utoipa::path(get, path = "/api/conversations/{id}/messages", tag = "conversations", params(("id" = String, Path), PageParams),
    responses((status = 200, body = Paged<MessageView>), (status = 404, body = ErrorBody)))]
pub async fn messages(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(p): Query<PageParams>,
) -> ApiResult<axum::Json<Paged<MessageView>>> {
    let id = conversation_id(&id)?;
    let page = p.to_req()?;
    if let Some(c) = &page.cursor
        && crate::types::MessageId::parse(c).is_none()
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "cursor is not valid",
        ));
    }
    let r = state
        .run(move |s| s.list_messages(&caller, &id, &page))
        .await?;
    Ok(axum::Json(paged(r)))
}

/// Hand the conversation to a person (`userId`: the AI stops answering) or back to an AI agent (`agentId`).
#[utoipa::path(put, path = "/api/conversations/{id}/assign", tag = "conversations", params(("id" = String, Path)), request_body = AssignReq,
    responses((status = 200, body = ConversationView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn assign(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Json(r): Json<AssignReq>,
) -> ApiResult<axum::Json<ConversationView>> {
    let id = conversation_id(&id)?;
    let to = match (
        opt_id(r.user_id, "userId", UserId::parse)?,
        opt_id(r.agent_id, "agentId", AgentId::parse)?,
    ) {
        (Some(u), None) => AssignTo::User(u),
        (None, Some(a)) => AssignTo::Agent(a),
        _ => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", "give exactly one of userId or agentId")
                .with_details(serde_json::json!({"fields": [{"field": "userId", "message": "give exactly one of userId or agentId"}]})));
        }
    };
    let c = state
        .run(move |s| s.assign_conversation(&caller, &id, to))
        .await?;
    Ok(axum::Json(ConversationView::from(&c)))
}

#[utoipa::path(put, path = "/api/conversations/{id}/close", tag = "conversations", params(("id" = String, Path)),
    responses((status = 200, body = ConversationView), (status = 404, body = ErrorBody)))]
pub async fn close(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ConversationView>> {
    let id = conversation_id(&id)?;
    let c = state
        .run(move |s| s.close_conversation(&caller, &id))
        .await?;
    Ok(axum::Json(ConversationView::from(&c)))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostMessageReq {
    #[schema(min_length = 1, max_length = 32000)]
    content: String,
    /// `customer` (from the customer's side) or `human` (a person of the team).
    role: crate::model::MessageRole,
    /// Answer later instead of in this response (`reply: null`).
    #[serde(default, rename = "async")]
    is_async: bool,
    /// The sender's idempotency key (1-64 characters): a resend with the same key in this
    /// conversation answers with the message stored the first time, never a duplicate.
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PostMessageResponse {
    message: MessageView,
    /// The AI agent's answer (status `failed` with an `error` when the model call failed);
    /// null for human messages, in human mode, or with `async: true`.
    reply: Option<MessageView>,
    /// Where the time of this request went; only when `reply` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    timing: Option<TurnTiming>,
}

/// Time spent on a request that produced an AI reply, in milliseconds (fractional).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnTiming {
    /// From the parsed request to the stored reply: storing the message, retrieval,
    /// prompt assembly, the model calls and storing the reply.
    total_ms: f64,
    /// Waiting for the model provider (every model call of the turn).
    upstream_ms: f64,
    /// `totalMs - upstreamMs`: the server's own share.
    server_ms: f64,
}

/// Add a message. A customer message in AI mode makes the agent answer.
#[utoipa::path(post, path = "/api/conversations/{id}/messages", tag = "conversations", params(("id" = String, Path)), request_body = PostMessageReq,
    responses((status = 201, body = PostMessageResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn post_message(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Json(r): Json<PostMessageReq>,
) -> ApiResult<impl IntoResponse> {
    let started = std::time::Instant::now();
    let id = conversation_id(&id)?;
    let content = r.content;
    let role = r.role;
    let client_id = r.client_id;
    let tenant = caller.tenant().clone();
    let c2 = caller.clone();
    let posted = state
        .run(move |s| s.post_message(&caller, &id, role, &content, client_id.as_deref()))
        .await?;
    // The turn is a durable job committed with the message: it is answered even if this
    // client leaves or the server stops. A synchronous request waits for it.
    let job = match posted.turn_job {
        Some(job) if !r.is_async => job,
        _ => {
            // A resend of a stored message (same clientId) changes nothing: 200, not 201.
            let status = if posted.duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            return Ok((
                status,
                axum::Json(PostMessageResponse {
                    message: MessageView::from(&posted.message),
                    reply: None,
                    timing: None,
                }),
            ));
        }
    };
    let finished = state.jobs.finished(&tenant, &job).await;
    let answer = match finished {
        Some(_) => state.run(move |s| s.turn_answer(&c2, &job)).await?,
        // Shutting down: the turn resumes after the restart and answers then.
        None => None,
    };
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let total = started.elapsed();
    let (reply, timing) = match answer {
        Some((reply, upstream_us)) => {
            let upstream = std::time::Duration::from_micros(upstream_us).min(total);
            (
                Some(reply),
                Some(TurnTiming {
                    total_ms: ms(total),
                    upstream_ms: ms(upstream),
                    server_ms: ms(total.saturating_sub(upstream)),
                }),
            )
        }
        None => (None, None),
    };
    Ok((
        StatusCode::CREATED,
        axum::Json(PostMessageResponse {
            message: MessageView::from(&posted.message),
            reply: reply.as_ref().map(MessageView::from),
            timing,
        }),
    ))
}
