//! /api/widget/{widgetKey}/...: the REST side of the website widget, for browsers on the
//! channel's allowed origins (CORS answers those origins only, see [`allow_origin`]). The
//! public config, a visitor's start (its token, shown once), and for a visitor holding a
//! token (`Authorization: Bearer vt_...`): its open conversation (reloads when sockets are
//! blocked), posting a message, and rating a closed conversation. Live traffic goes over
//! Socket.IO (src/realtime), which authenticates visitors the same way.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Client, Json};
use super::views::{ConversationView, MessageView, WidgetConfigView};
use crate::domain::visitors::{Identity, VisitorHello, VisitorSession};
use crate::types::ConversationId;
use axum::extract::{Path, State};
use axum::http::request::Parts as RequestParts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use tower_http::cors::AllowOrigin;
use utoipa::ToSchema;

/// The widget key of a widget route's path (`/api/widget/{key}/...`).
fn widget_key_of(path: &str) -> Option<&str> {
    path.strip_prefix("/api/widget/")?
        .split('/')
        .next()
        .filter(|k| !k.is_empty())
}

/// CORS origins: for widget routes, the origins the widget's channel allows (and this
/// server's own); for every other route, CORS_ORIGINS.
pub fn allow_origin(state: &AppState) -> AllowOrigin {
    let configured: Vec<HeaderValue> = state
        .config
        .cors_origin_list()
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let svc = state.svc.clone();
    AllowOrigin::async_predicate(move |origin: HeaderValue, parts: &RequestParts| {
        let key = widget_key_of(parts.uri.path()).map(str::to_string);
        let configured_ok = configured.contains(&origin);
        let svc = svc.clone();
        async move {
            let Some(key) = key else {
                return configured_ok;
            };
            let Ok(origin) = origin.to_str().map(str::to_string) else {
                return false;
            };
            tokio::task::spawn_blocking(move || svc.widget_cors_allowed(&key, &origin))
                .await
                .unwrap_or(false)
        }
    })
}

/// The browser origin a request speaks for: its `Origin` header, or `None` when there is
/// none or it is this server itself (a same-origin page such as the preview, also when
/// PUBLIC_URL is not set). What the widget's REST routes and its socket pass to the domain.
pub fn cross_origin(headers: &HeaderMap) -> Option<String> {
    let o = headers
        .get(header::ORIGIN)?
        .to_str()
        .ok()?
        .trim()
        .to_string();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(h) = host
        && (o.eq_ignore_ascii_case(&format!("http://{h}"))
            || o.eq_ignore_ascii_case(&format!("https://{h}")))
    {
        return None;
    }
    Some(o)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The visitor of the bearer token, rate limited per visitor.
async fn visitor(state: &AppState, key: String, headers: &HeaderMap) -> ApiResult<VisitorSession> {
    let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    let origin = cross_origin(headers);
    let session = state
        .run(move |s| s.visitor_session(&key, &token, origin.as_deref()))
        .await?;
    state
        .limits
        .visitor
        .check(&format!("v:{}", session.visitor.id))?;
    Ok(session)
}

/// The widget's public settings, for the widget to draw itself.
#[utoipa::path(get, path = "/api/widget/{widgetKey}/config", tag = "widget", security(()),
    params(("widgetKey" = String, Path)),
    responses((status = 200, body = WidgetConfigView), (status = 403, body = ErrorBody, description = "`origin_not_allowed`, `channel_paused`"),
        (status = 404, body = ErrorBody, description = "`widget_not_found`")))]
pub async fn config(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> ApiResult<axum::Json<WidgetConfigView>> {
    state
        .limits
        .api
        .check(&format!("w:{}", client.ip.as_deref().unwrap_or("")))?;
    let origin = cross_origin(&headers);
    let w = state
        .run(move |s| s.public_widget(&key, origin.as_deref()))
        .await?;
    WidgetConfigView::new(&w.channel, w.agent_name.as_deref())
        .map(axum::Json)
        .ok_or_else(|| crate::domain::Error::NotFound("widget").into())
}

/// The site's signature of its signed-in user: `hash` = hex HMAC-SHA256(identity secret,
/// `externalId`), made on the site's server.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityReq {
    #[schema(min_length = 1, max_length = 200)]
    external_id: String,
    hash: String,
}

/// Who the visitor says they are; all optional (the widget's pre-chat fields).
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VisitorReq {
    #[schema(max_length = 200)]
    name: Option<String>,
    email: Option<String>,
    identity: Option<IdentityReq>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VisitorResponse {
    visitor_id: String,
    /// Only when this request issued it (a new visitor or a new browser of a signed-in
    /// one): keep it (the widget stores it in localStorage); it is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    visitor_token: Option<String>,
    /// The visitor's open conversation, if any.
    conversation_id: Option<ConversationId>,
}

/// Start (or, with `Authorization: Bearer <visitorToken>`, update) a visitor: 201 with a new
/// token, 200 for a known one. New visitors are rate limited per client address.
#[utoipa::path(post, path = "/api/widget/{widgetKey}/visitors", tag = "widget", security(()),
    params(("widgetKey" = String, Path)), request_body = VisitorReq,
    responses((status = 201, body = VisitorResponse), (status = 200, body = VisitorResponse),
        (status = 401, body = ErrorBody, description = "`unauthorized` (unknown or expired token), `identity_required`, `identity_invalid`"),
        (status = 403, body = ErrorBody, description = "`origin_not_allowed`, `channel_paused`"), (status = 404, body = ErrorBody, description = "`widget_not_found`")))]
pub async fn start(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    Path(key): Path<String>,
    Json(r): Json<VisitorReq>,
) -> ApiResult<impl IntoResponse> {
    let token = bearer(&headers);
    if token.is_none() {
        state
            .limits
            .widget_ip
            .check(&format!("new:{}", client.ip.as_deref().unwrap_or("")))?;
    }
    let origin = cross_origin(&headers);
    let hello = VisitorHello {
        name: r.name,
        email: r.email,
        identity: r.identity.map(|i| Identity {
            external_id: i.external_id,
            hash: i.hash,
        }),
    };
    let session = state
        .run(move |s| s.authenticate_visitor(&key, token.as_deref(), origin.as_deref(), hello))
        .await?;
    state
        .limits
        .visitor
        .check(&format!("v:{}", session.visitor.id))?;
    let status = if session.new_token.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let caller = session.caller.clone();
    let open = state.run(move |s| s.visitor_conversation(&caller)).await?;
    Ok((
        status,
        axum::Json(VisitorResponse {
            visitor_id: session.visitor.id.to_string(),
            visitor_token: session.new_token,
            conversation_id: open.map(|c| c.id),
        }),
    ))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VisitorConversation {
    /// The open conversation; null when there is none (never written, or closed).
    conversation: Option<ConversationView>,
    /// Its newest messages (at most 100), oldest first.
    messages: Vec<MessageView>,
    /// Older messages exist beyond these.
    more: bool,
}

/// The visitor's open conversation and its latest messages (for reloads when sockets are
/// blocked).
#[utoipa::path(get, path = "/api/widget/{widgetKey}/conversation", tag = "widget", security(("visitorToken" = [])),
    params(("widgetKey" = String, Path)),
    responses((status = 200, body = VisitorConversation), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn conversation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> ApiResult<axum::Json<VisitorConversation>> {
    let session = visitor(&state, key, &headers).await?;
    let out = state
        .run(move |s| {
            let (_, caller) = s.current_visitor(&session.caller)?;
            let Some(conv) = s.visitor_conversation(&caller)? else {
                return Ok(None);
            };
            let page = s.list_messages(
                &caller,
                &conv.id,
                &crate::domain::PageReq {
                    limit: 100,
                    cursor: None,
                },
            )?;
            Ok(Some((conv, page)))
        })
        .await?;
    Ok(axum::Json(match out {
        None => VisitorConversation {
            conversation: None,
            messages: vec![],
            more: false,
        },
        Some((conv, page)) => VisitorConversation {
            conversation: Some(ConversationView::from(&conv)),
            messages: page.items.iter().rev().map(MessageView::from).collect(),
            more: page.next.is_some(),
        },
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VisitorMessageReq {
    #[schema(min_length = 1, max_length = 32000)]
    content: String,
    /// The sender's idempotency key (at most 64 characters): a resend with the same key
    /// returns the stored message instead of a second one.
    #[schema(max_length = 64)]
    client_id: Option<String>,
    /// The visitor's current conversation; omitted: the open one, or a new one.
    conversation_id: Option<ConversationId>,
}

#[derive(Serialize, ToSchema)]
pub struct VisitorMessageResponse {
    message: MessageView,
    conversation: ConversationView,
}

/// Post the visitor's message (the REST twin of the socket's `send_message`): the first
/// message opens a conversation with the widget's agent; the answer arrives over the socket
/// (or the next GET of the conversation).
#[utoipa::path(post, path = "/api/widget/{widgetKey}/messages", tag = "widget", security(("visitorToken" = [])),
    params(("widgetKey" = String, Path)), request_body = VisitorMessageReq,
    responses((status = 201, body = VisitorMessageResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn post_message(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Json(r): Json<VisitorMessageReq>,
) -> ApiResult<impl IntoResponse> {
    let session = visitor(&state, key, &headers).await?;
    let (posted, _) = state
        .run(move |s| {
            s.post_visitor_message(
                &session.caller,
                r.conversation_id.as_ref(),
                &r.content,
                r.client_id.as_deref(),
            )
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(VisitorMessageResponse {
            message: MessageView::from(&posted.message),
            conversation: ConversationView::from(&posted.conversation),
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RatingReq {
    /// 1 (bad) to 5 (great).
    #[schema(minimum = 1, maximum = 5)]
    rating: u8,
    #[schema(max_length = 1000)]
    comment: Option<String>,
}

/// Rate a closed conversation of the visitor (CSAT 1-5, optional comment). Accepted once the
/// conversation is closed; a later rating replaces the earlier one. The team sees it on the
/// conversation (`rating`) and live (`conversation_update` with `changed: ["rating"]`).
#[utoipa::path(post, path = "/api/widget/{widgetKey}/conversations/{id}/rating", tag = "widget", security(("visitorToken" = [])),
    params(("widgetKey" = String, Path), ("id" = String, Path)), request_body = RatingReq,
    responses((status = 200, body = ConversationView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "`conversation_not_found`: not the visitor's"),
        (status = 409, body = ErrorBody, description = "`conversation_not_closed`")))]
pub async fn rate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((key, id)): Path<(String, String)>,
    Json(r): Json<RatingReq>,
) -> ApiResult<axum::Json<ConversationView>> {
    let id = ConversationId::parse(&id).ok_or_else(|| ApiError::invalid_id("id"))?;
    let session = visitor(&state, key, &headers).await?;
    let c = state
        .run(move |s| s.rate_conversation(&session.caller, &id, r.rating, r.comment.as_deref()))
        .await?;
    Ok(axum::Json(ConversationView::from(&c)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn widget_keys_come_from_widget_paths_only() {
        assert_eq!(
            super::widget_key_of("/api/widget/wk_a/config"),
            Some("wk_a")
        );
        assert_eq!(super::widget_key_of("/api/widget/wk_a"), Some("wk_a"));
        assert_eq!(super::widget_key_of("/api/widget/"), None);
        assert_eq!(super::widget_key_of("/api/agents"), None);
    }
}
