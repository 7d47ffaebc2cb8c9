//! /api/channels: where customers talk to agents. Types `web` (the website widget) and
//! `telegram` are managed here; WhatsApp, Messenger and Instagram answer 400
//! `unsupported_channel_type` for now. TENANT_ADMIN manages, TENANT_USER reads. Also the
//! providers' webhooks (`/webhooks/telegram/{channelId}`: no JWT, the channel's secret),
//! the provider test and the dead letters.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Auth, Json, Query, double, page_req, parse_json};
use super::views::{ChannelView, Paged};
use crate::domain::channels::{ChannelInput, Saved, WebInput};
use crate::domain::inbound::Accepted;
use crate::model::{ChannelKind, ChannelStatus, FieldMode, WidgetPosition};
use crate::model::{InboundEvent, InboundStatus};
use crate::types::{AgentId, ChannelId, InboundId};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A channel to create (`type`, `name`, `agentId` required) or update (any field).
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelReq {
    /// `web` (the others: `whatsapp`, `messenger`, `instagram`, `telegram` are not
    /// available yet). Cannot change on update.
    #[serde(rename = "type")]
    #[schema(value_type = Option<ChannelKind>)]
    kind: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
    /// The agent that answers.
    agent_id: Option<AgentId>,
    /// `active` or `paused`.
    status: Option<ChannelStatus>,
    /// Per type; for `web` a [`WebSettingsReq`].
    #[schema(value_type = Option<WebSettingsReq>)]
    settings: Option<serde_json::Value>,
    /// Write-only secrets per type; for `web` a [`WebCredentialsReq`].
    #[schema(value_type = Option<WebCredentialsReq>)]
    credentials: Option<serde_json::Value>,
}

/// The web widget's settings; on update, absent fields keep their value.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebSettingsReq {
    /// Origins whose pages may use the widget, like `https://shop.example.com`, or
    /// `https://*.example.com` for any subdomain (at most 50).
    #[schema(max_items = 50)]
    allowed_origins: Option<Vec<String>>,
    /// Shown before the first message and stored as the conversation's first message.
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    greeting: Option<Option<String>>,
    theme: Option<ThemeReq>,
    /// A language tag such as `en` or `pt-BR`.
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>, max_length = 35)]
    language: Option<Option<String>>,
    pre_chat: Option<PreChatReq>,
    identity: Option<IdentitySettingsReq>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThemeReq {
    /// `#rrggbb` or `#rgb`.
    color: Option<String>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>, max_length = 100)]
    title: Option<Option<String>>,
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    avatar_url: Option<Option<String>>,
    position: Option<WidgetPosition>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PreChatReq {
    name: Option<FieldMode>,
    email: Option<FieldMode>,
}

/// Identity verification: `optional` or `required` makes an HMAC secret the first time
/// (answered once as `identitySecret`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettingsReq {
    mode: FieldMode,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebCredentialsReq {
    /// An identity secret of your own (32-256 characters), or null to remove it (only
    /// with verification off). Usually left to the server (see the rotate route).
    #[serde(default, deserialize_with = "double")]
    #[schema(value_type = Option<String>)]
    identity_secret: Option<Option<String>>,
}

/// A Telegram channel's credentials.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelegramCredentialsReq {
    /// The bot's token from @BotFather (`123456:ABC-...`). Setting it (again) registers
    /// the webhook with Telegram.
    bot_token: Option<String>,
}

/// A Telegram channel has no settings of its own: what getMe tells (`botId`,
/// `botUsername`, `botName`) is kept in them, read-only; echoing them back is accepted and
/// changes nothing.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// The read-only fields are parsed so an echoed GET body is accepted; they are never applied.
#[allow(dead_code)]
pub struct TelegramSettingsReq {
    /// Read-only (ignored).
    #[schema(value_type = Option<Object>)]
    bot_id: Option<serde_json::Value>,
    /// Read-only (ignored).
    #[schema(value_type = Option<Object>)]
    bot_username: Option<serde_json::Value>,
    /// Read-only (ignored).
    #[schema(value_type = Option<Object>)]
    bot_name: Option<serde_json::Value>,
}

/// A WhatsApp channel's credentials (write-only).
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WhatsappCredentialsReq {
    /// The Cloud API access token (a system user's permanent token).
    access_token: Option<String>,
    /// The Meta app's secret: webhooks are verified with it (`X-Hub-Signature-256`).
    app_secret: Option<String>,
    /// The token to enter in the app's webhook settings; generated when absent on create.
    verify_token: Option<String>,
}

/// A Messenger or Instagram channel's credentials (write-only).
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PageCredentialsReq {
    /// The Facebook page's access token.
    page_access_token: Option<String>,
    /// The Meta app's secret: webhooks are verified with it (`X-Hub-Signature-256`).
    app_secret: Option<String>,
    /// The token to enter in the app's webhook settings; generated when absent on create.
    verify_token: Option<String>,
}

/// A WhatsApp channel's settings. `displayPhoneNumber`, `verifiedName`, `qualityRating`
/// are filled by the test and read-only (accepted and ignored).
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// The read-only fields are parsed so an echoed GET body is accepted; they are never applied.
#[allow(dead_code)]
pub struct WhatsappSettingsReq {
    /// The phone number's id from the WhatsApp Manager (not the number itself).
    phone_number_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    display_phone_number: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    verified_name: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    quality_rating: Option<serde_json::Value>,
}

/// A Messenger channel's settings. `pageName` is filled by the test (read-only).
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// The read-only fields are parsed so an echoed GET body is accepted; they are never applied.
#[allow(dead_code)]
pub struct MessengerSettingsReq {
    /// The Facebook page's id.
    page_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    page_name: Option<serde_json::Value>,
}

/// An Instagram channel's settings. `username` and `name` are filled by the test
/// (read-only).
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// The read-only fields are parsed so an echoed GET body is accepted; they are never applied.
#[allow(dead_code)]
pub struct InstagramSettingsReq {
    /// The Instagram professional account's id.
    instagram_account_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    username: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    name: Option<serde_json::Value>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChannelListParams {
    /// Only channels of this type.
    #[serde(rename = "type")]
    #[param(value_type = Option<ChannelKind>)]
    kind: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn channel_id(s: &str) -> ApiResult<ChannelId> {
    ChannelId::parse(s).ok_or_else(|| ApiError::invalid_id("id"))
}

fn kind(s: &str) -> ApiResult<ChannelKind> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", "some fields are invalid")
            .with_details(serde_json::json!({"fields": [{"field": "type", "message": "must be web, whatsapp, messenger, instagram or telegram"}]}))
    })
}

/// Parses a nested part of the body with the body's error shapes, naming fields from the
/// body's root (`settings.theme.color`).
fn part<T: DeserializeOwned>(v: serde_json::Value, prefix: &str) -> ApiResult<T> {
    let bytes = serde_json::to_vec(&v).map_err(|_| ApiError::internal())?;
    parse_json(&bytes).map_err(|mut e| {
        if e.code == "malformed_json" {
            e = ApiError::new(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                "some fields are invalid",
            )
            .with_details(
                serde_json::json!({"fields": [{"field": prefix, "message": "must be an object"}]}),
            );
        } else if let Some(fields) = e
            .details
            .as_mut()
            .and_then(|d| d.get_mut("fields"))
            .and_then(|f| f.as_array_mut())
        {
            for f in fields {
                let name = f["field"].as_str().unwrap_or("").trim_start_matches('.');
                f["field"] = serde_json::Value::String(if name.is_empty() {
                    prefix.to_string()
                } else {
                    format!("{prefix}.{name}")
                });
            }
        } else if let Some(p) = e.details.as_mut().and_then(|d| d.get_mut("param")) {
            *p = serde_json::Value::String(format!(
                "{prefix}.{}",
                p.as_str().unwrap_or("").trim_start_matches('.')
            ));
        }
        e
    })
}

impl ChannelReq {
    fn into_input(self, current: Option<ChannelKind>) -> ApiResult<ChannelInput> {
        let requested = self.kind.as_deref().map(kind).transpose()?;
        let k = requested.or(current);
        let mut input = ChannelInput {
            kind: requested,
            name: self.name,
            agent_id: self.agent_id,
            status: self.status,
            ..Default::default()
        };
        // Settings and credentials are per type: other types are refused by the domain
        // before their settings would matter.
        if let Some(kind) = k.filter(|k| crate::domain::channels::is_meta(*k)) {
            if let Some(s) = self.settings {
                input.meta.account_id = match kind {
                    ChannelKind::Whatsapp => {
                        part::<WhatsappSettingsReq>(s, "settings")?.phone_number_id
                    }
                    ChannelKind::Messenger => part::<MessengerSettingsReq>(s, "settings")?.page_id,
                    _ => part::<InstagramSettingsReq>(s, "settings")?.instagram_account_id,
                };
            }
            if let Some(c) = self.credentials {
                if kind == ChannelKind::Whatsapp {
                    let c: WhatsappCredentialsReq = part(c, "credentials")?;
                    input.meta.access_token = c.access_token;
                    input.meta.app_secret = c.app_secret;
                    input.meta.verify_token = c.verify_token;
                } else {
                    let c: PageCredentialsReq = part(c, "credentials")?;
                    input.meta.access_token = c.page_access_token;
                    input.meta.app_secret = c.app_secret;
                    input.meta.verify_token = c.verify_token;
                }
            }
            return Ok(input);
        }
        if k == Some(ChannelKind::Telegram) {
            if let Some(s) = self.settings {
                let _: TelegramSettingsReq = part(s, "settings")?;
            }
            if let Some(c) = self.credentials {
                let c: TelegramCredentialsReq = part(c, "credentials")?;
                input.bot_token = c.bot_token;
            }
            return Ok(input);
        }
        if k != Some(ChannelKind::Web) {
            return Ok(input);
        }
        if let Some(s) = self.settings {
            let w: WebSettingsReq = part(s, "settings")?;
            let theme = w.theme.unwrap_or_default();
            let pre = w.pre_chat.unwrap_or_default();
            input.web = Some(WebInput {
                allowed_origins: w.allowed_origins,
                greeting: w.greeting,
                color: theme.color,
                title: theme.title,
                avatar_url: theme.avatar_url,
                position: theme.position,
                language: w.language,
                pre_chat_name: pre.name,
                pre_chat_email: pre.email,
                identity: w.identity.map(|i| i.mode),
            });
        }
        if let Some(c) = self.credentials {
            let c: WebCredentialsReq = part(c, "credentials")?;
            input.identity_secret = c.identity_secret;
        }
        Ok(input)
    }
}

/// The base URL of this server for embed codes: PUBLIC_URL, else the request's own host.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.config.public_url {
        return u.trim_end_matches('/').to_string();
    }
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(h)
            if !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c)) =>
        {
            format!("http://{h}")
        }
        _ => state.svc.public_url(),
    }
}

fn view(state: &AppState, headers: &HeaderMap, saved: Saved) -> ChannelView {
    channel_view(
        state,
        &saved.channel,
        &base_url(state, headers),
        saved.new_identity_secret,
    )
}

/// The view of a channel with its Meta verify token (opened from its sealed form).
fn channel_view(
    state: &AppState,
    c: &crate::model::Channel,
    base: &str,
    new_identity_secret: Option<String>,
) -> ChannelView {
    let mut v = ChannelView::new(c, base, new_identity_secret);
    if crate::domain::channels::is_meta(c.kind) {
        v.verify_token = state
            .svc
            .channel_secret(c, crate::domain::channels::VERIFY_TOKEN);
    }
    v
}

/// Channels of the tenant, oldest first, optionally of one type.
#[utoipa::path(get, path = "/api/channels", tag = "channels", params(ChannelListParams),
    responses((status = 200, body = Paged<ChannelView>), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    Query(q): Query<ChannelListParams>,
) -> ApiResult<axum::Json<Paged<ChannelView>>> {
    let page = page_req(q.limit.as_deref(), q.cursor.as_deref())?;
    let k = match q.kind.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(kind(s).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "type must be web, whatsapp, messenger, instagram or telegram",
            )
        })?),
        None => None,
    };
    let p = state
        .run(move |s| s.list_channels(&caller, k, &page))
        .await?;
    let base = base_url(&state, &headers);
    Ok(axum::Json(Paged {
        data: p
            .items
            .iter()
            .map(|c| channel_view(&state, c, &base, None))
            .collect(),
        next_cursor: p.next,
    }))
}

/// Create a channel. For `web`, the answer carries the widget key and the embed code (and
/// `identitySecret`, once, when identity verification was turned on).
#[utoipa::path(post, path = "/api/channels", tag = "channels", request_body = ChannelReq,
    responses((status = 402, body = ErrorBody, description = "`plan_limit_reached` (details: limit, used, max) or `subscription_inactive`"), (status = 201, body = ChannelView), (status = 400, body = ErrorBody, description = "`unsupported_channel_type` for types other than web; `validation_failed`"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "`agent_not_found`")))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    Json(r): Json<ChannelReq>,
) -> ApiResult<impl IntoResponse> {
    if !caller.allowed(crate::auth::Action::ManageChannels) {
        return Err(crate::domain::Error::denied(crate::auth::Denied::Forbidden, "channel").into());
    }
    let input = r.into_input(None)?;
    let c2 = caller.clone();
    let mut saved = state.run(move |s| s.create_channel(&c2, input)).await?;
    // Registering the webhook is part of creating a messaging channel: its outcome is in
    // the answer (status `error` with Telegram's words when it refused).
    if saved.channel.kind == ChannelKind::Telegram {
        let base = base_url(&state, &headers);
        saved.channel = state
            .channels
            .set_up(&caller, &saved.channel.id, &base)
            .await?;
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(view(&state, &headers, saved)),
    ))
}

#[utoipa::path(get, path = "/api/channels/{id}", tag = "channels", params(("id" = String, Path)),
    responses((status = 200, body = ChannelView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ChannelView>> {
    let id = channel_id(&id)?;
    let c = state.run(move |s| s.get_channel(&caller, &id)).await?;
    Ok(axum::Json(channel_view(
        &state,
        &c,
        &base_url(&state, &headers),
        None,
    )))
}

/// Update a channel: only the fields given change (nested settings too).
#[utoipa::path(put, path = "/api/channels/{id}", tag = "channels", params(("id" = String, Path)), request_body = ChannelReq,
    responses((status = 200, body = ChannelView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`channel_changed`: changed meanwhile by someone else")))]
pub async fn update(
    State(state): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(r): Json<ChannelReq>,
) -> ApiResult<axum::Json<ChannelView>> {
    let id = channel_id(&id)?;
    let reader = caller.clone();
    let read_id = id.clone();
    // The stored type decides how settings are read (and a foreign id is 404 first).
    let current = state.run(move |s| s.get_channel(&reader, &read_id)).await?;
    if !caller.allowed(crate::auth::Action::ManageChannels) {
        return Err(crate::domain::Error::denied(crate::auth::Denied::Forbidden, "channel").into());
    }
    let input = r.into_input(Some(current.kind))?;
    let new_token = input.bot_token.is_some();
    let (c2, id2) = (caller.clone(), id.clone());
    let mut saved = state
        .run(move |s| s.update_channel(&c2, &id2, input))
        .await?;
    if new_token {
        let base = base_url(&state, &headers);
        saved.channel = state.channels.set_up(&caller, &id, &base).await?;
    }
    Ok(axum::Json(view(&state, &headers, saved)))
}

/// Delete a channel. A web widget stops at once; its visitors are forgotten, their
/// conversations stay in the inbox.
#[utoipa::path(delete, path = "/api/channels/{id}", tag = "channels", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = channel_id(&id)?;
    state.run(move |s| s.delete_channel(&caller, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace a web widget's identity secret with a new one, answered once as
/// `identitySecret`. Signatures made with the old secret stop verifying at once.
#[utoipa::path(post, path = "/api/channels/{id}/identity-secret", tag = "channels", params(("id" = String, Path)),
    responses((status = 200, body = ChannelView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rotate_identity_secret(
    State(state): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ChannelView>> {
    let id = channel_id(&id)?;
    let saved = state
        .run(move |s| s.rotate_identity_secret(&caller, &id))
        .await?;
    Ok(axum::Json(view(&state, &headers, saved)))
}

/// What the provider said about the channel's credentials.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTestView {
    /// True when the provider accepted the credentials.
    pub ok: bool,
    /// What the provider told about the account (Telegram: `botId`, `botUsername`,
    /// `botName`).
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
    /// The provider's refusal in plain words.
    pub error: Option<String>,
    /// The channel after the test (status `error` with the message when it failed).
    pub channel: ChannelView,
}

/// Ask the provider about the channel's account with the stored credentials (Telegram:
/// getMe). 200 either way: `ok` says whether the provider accepted them.
#[utoipa::path(post, path = "/api/channels/{id}/test", tag = "channels", params(("id" = String, Path)),
    responses((status = 200, body = ChannelTestView), (status = 400, body = ErrorBody, description = "`unsupported_channel_type` (web)"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn test(
    State(state): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ChannelTestView>> {
    let id = channel_id(&id)?;
    let (c2, id2) = (caller.clone(), id.clone());
    // A foreign id is 404 before the role is looked at.
    state.run(move |s| s.get_channel(&c2, &id2)).await?;
    if !caller.allowed(crate::auth::Action::ManageChannels) {
        return Err(crate::domain::Error::denied(crate::auth::Denied::Forbidden, "channel").into());
    }
    let (channel, outcome) = state.channels.test(&caller, &id).await?;
    let base = base_url(&state, &headers);
    let (ok, details, error) = match outcome {
        Ok(d) => (true, Some(d), None),
        Err(e) => (false, None, Some(e)),
    };
    Ok(axum::Json(ChannelTestView {
        ok,
        details,
        error,
        channel: channel_view(&state, &channel, &base, None),
    }))
}

/// A stored webhook delivery that could not be processed.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterView {
    pub id: InboundId,
    pub channel_id: ChannelId,
    /// The provider's id of the delivery (Telegram: update_id).
    pub external_id: String,
    pub status: InboundStatus,
    /// Why it could not be processed.
    pub error: Option<String>,
    /// The body exactly as the provider sent it.
    pub payload: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub received_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: time::OffsetDateTime,
}

impl From<InboundEvent> for DeadLetterView {
    fn from(e: InboundEvent) -> Self {
        DeadLetterView {
            id: e.id,
            channel_id: e.channel_id,
            external_id: e.external_id,
            status: e.status,
            error: e.error,
            payload: e.payload,
            received_at: e.received_at,
            updated_at: e.updated_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    limit: Option<String>,
    cursor: Option<String>,
}

/// Webhook deliveries of the channel kept aside (the channel was paused or deleted, or the
/// payload could not be processed), oldest first.
#[utoipa::path(get, path = "/api/channels/{id}/dead-letters", tag = "channels", params(("id" = String, Path), PageParams),
    responses((status = 200, body = Paged<DeadLetterView>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn dead_letters(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(q): Query<PageParams>,
) -> ApiResult<axum::Json<Paged<DeadLetterView>>> {
    let id = channel_id(&id)?;
    let page = page_req(q.limit.as_deref(), q.cursor.as_deref())?;
    let p = state
        .run(move |s| s.list_dead_letters(&caller, &id, &page))
        .await?;
    Ok(axum::Json(Paged {
        data: p.items.into_iter().map(DeadLetterView::from).collect(),
        next_cursor: p.next,
    }))
}

/// Process a dead letter again (after resuming the channel, say). 202: it is queued.
#[utoipa::path(post, path = "/api/channels/{id}/dead-letters/{deadLetterId}/replay", tag = "channels",
    params(("id" = String, Path), ("deadLetterId" = String, Path)),
    responses((status = 202, body = DeadLetterView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`not_a_dead_letter`")))]
pub async fn replay_dead_letter(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, dl)): Path<(String, String)>,
) -> ApiResult<(StatusCode, axum::Json<DeadLetterView>)> {
    let id = channel_id(&id)?;
    let dl = InboundId::parse(&dl).ok_or_else(|| ApiError::invalid_id("deadLetterId"))?;
    let ev = state
        .run(move |s| s.replay_dead_letter(&caller, &id, &dl))
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(ev.into())))
}

/// Whether a webhook declares its body as `application/json` (parameters ignored).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Telegram delivers a bot's updates here (registered by the server with setWebhook). The
/// `X-Telegram-Bot-Api-Secret-Token` header must carry the channel's secret (401
/// `invalid_signature` otherwise, nothing stored). The update is stored with its
/// processing job before the 200; a repeated `update_id` stores nothing again.
#[utoipa::path(post, path = "/webhooks/telegram/{channelId}", tag = "channels", security(()),
    params(("channelId" = String, Path)), request_body = Object,
    responses((status = 200, description = "Stored (or already stored)"), (status = 400, body = ErrorBody, description = "`malformed_json`, `validation_failed` (no update_id)"),
        (status = 401, body = ErrorBody, description = "`invalid_signature`"), (status = 404, body = ErrorBody, description = "`channel_not_found`"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn telegram_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<axum::Json<serde_json::Value>> {
    use crate::api::error_codes::ErrorCode;
    let limit = state.config.telegram_webhook_max_bytes;
    let Some(channel) = webhook_channel(&state, &id, ChannelKind::Telegram).await? else {
        return Err(unrouted(&state, ChannelKind::Telegram, &id, body, limit).await);
    };
    // Verified before anything else is read: a forged request costs no parsing.
    let sent = headers
        .get("x-telegram-bot-api-secret-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let expected = state
        .svc
        .channel_secret(&channel, crate::domain::channels::WEBHOOK_SECRET);
    let verified = match expected {
        Some(e) => !sent.is_empty() && crate::auth::tokens::ct_eq(sent, &e),
        None => false,
    };
    if !verified {
        tracing::warn!(channel = %channel.id, "Telegram webhook without the channel's secret refused");
        return Err(ApiError::of(
            ErrorCode::InvalidSignature,
            "the X-Telegram-Bot-Api-Secret-Token header does not carry this channel's secret",
        ));
    }
    if !is_json(&headers) {
        return Err(ApiError::of(
            ErrorCode::UnsupportedMediaType,
            "send the update as application/json",
        ));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::of(
            ErrorCode::PayloadTooLarge,
            format!("a Telegram update may be at most {limit} bytes (TELEGRAM_WEBHOOK_MAX_BYTES)"),
        )
    })?;
    let raw = String::from_utf8(Vec::from(bytes))
        .map_err(|_| ApiError::of(ErrorCode::MalformedJson, "the body is not UTF-8 text"))?;
    // Parsing is CPU work: with the store write, off the async workers. serde_json's own
    // recursion limit refuses absurdly nested bodies.
    let caller = crate::auth::Caller::channel_webhook(&channel);
    let media_max = state.config.channel_media_max_bytes;
    let accepted = state
        .run(move |s| {
            let v: serde_json::Value = serde_json::from_str(&raw).map_err(|e| {
                crate::domain::Error::Invalid(
                    "malformed_json",
                    format!("the body is not valid JSON: {e}"),
                )
            })?;
            let Some(update) = crate::channels::telegram::update_id(&v) else {
                return Err(crate::domain::Error::Validation(vec![
                    crate::domain::FieldError {
                        field: "update_id".into(),
                        message: "is required (a Telegram update)".into(),
                    },
                ]));
            };
            // One chat's updates in order, different chats side by side.
            let parts = match crate::channels::telegram::incoming(&v, media_max) {
                Ok(Some(m)) => vec![crate::domain::inbound::InboundPart::Contact(m.chat_id)],
                _ => vec![],
            };
            s.accept_inbound(&caller, &channel, &update.to_string(), raw, parts)
        })
        .await?;
    Ok(accepted_body(&accepted))
}

/// A webhook's 200 body: `{ok, outcome: queued|dead_letter|duplicate}`.
fn accepted_body(accepted: &Accepted) -> axum::Json<serde_json::Value> {
    let outcome = match accepted {
        Accepted::Queued(_) => "queued",
        Accepted::DeadLetter(_) => "dead_letter",
        Accepted::Duplicate => "duplicate",
    };
    axum::Json(serde_json::json!({"ok": true, "outcome": outcome}))
}

/// A delivery for a channel id no channel has: kept (cut, bounded) in the platform's list
/// of unroutable deliveries, then answered 404 like before.
async fn unrouted(
    state: &AppState,
    kind: ChannelKind,
    id: &str,
    body: axum::body::Body,
    limit: usize,
) -> ApiError {
    use crate::api::error_codes::ErrorCode;
    let not_found = ApiError::of(
        ErrorCode::ChannelNotFound,
        format!("no {} channel has this webhook", provider_name(kind)),
    );
    // An id no channel could ever have had is not worth keeping.
    let Some(cid) = ChannelId::parse(id) else {
        return not_found;
    };
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return not_found;
    };
    let provider = provider_name(kind).to_ascii_lowercase();
    if let Err(e) = state
        .run(move |s| s.keep_unrouted(&provider, &cid, &bytes))
        .await
    {
        tracing::error!(error = ?e, "keeping a delivery to an unknown channel failed");
    }
    not_found
}

/// Deliveries that reached a webhook URL of a channel that does not exist (deleted, or a
/// provider still configured with an old URL), newest 200 kept, each cut to 16 KiB. They
/// were not verified (no channel, no secret). Platform admins only.
#[utoipa::path(get, path = "/api/platform/dead-letters", tag = "channels", params(PageParams),
    responses((status = 200, body = Paged<DeadLetterView>), (status = 403, body = ErrorBody)))]
pub async fn platform_dead_letters(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Query(q): Query<PageParams>,
) -> ApiResult<axum::Json<Paged<DeadLetterView>>> {
    let page = page_req(q.limit.as_deref(), q.cursor.as_deref())?;
    let p = state.run(move |s| s.list_unrouted(&caller, &page)).await?;
    Ok(axum::Json(Paged {
        data: p.items.into_iter().map(DeadLetterView::from).collect(),
        next_cursor: p.next,
    }))
}

/// Meta's verification handshake (`hub.mode`, `hub.verify_token`, `hub.challenge`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HubParams {
    #[serde(rename = "hub.mode")]
    #[param(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    #[param(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    #[param(rename = "hub.challenge")]
    challenge: Option<String>,
}

fn provider_name(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Whatsapp => "WhatsApp",
        ChannelKind::Messenger => "Messenger",
        ChannelKind::Instagram => "Instagram",
        ChannelKind::Telegram => "Telegram",
        ChannelKind::Web => "web",
    }
}

/// The channel of kind `kind` a webhook URL's id names, if any.
async fn webhook_channel(
    state: &AppState,
    id: &str,
    kind: ChannelKind,
) -> ApiResult<Option<crate::model::Channel>> {
    let lookup = id.to_string();
    state
        .run(move |s| s.channel_for_webhook(&lookup, kind))
        .await
}

async fn meta_channel(
    state: &AppState,
    id: &str,
    kind: ChannelKind,
) -> ApiResult<crate::model::Channel> {
    use crate::api::error_codes::ErrorCode;
    webhook_channel(state, id, kind).await?.ok_or_else(|| {
        ApiError::of(
            ErrorCode::ChannelNotFound,
            format!("no {} channel has this webhook", provider_name(kind)),
        )
    })
}

/// Answers Meta's subscription handshake: the challenge when the verify token is the
/// channel's, 403 otherwise.
async fn meta_verify(
    state: AppState,
    id: String,
    kind: ChannelKind,
    q: HubParams,
) -> ApiResult<axum::response::Response> {
    use crate::api::error_codes::ErrorCode;
    let channel = meta_channel(&state, &id, kind).await?;
    let expected = state
        .svc
        .channel_secret(&channel, crate::domain::channels::VERIFY_TOKEN);
    let given = q.verify_token.unwrap_or_default();
    let ok = q.mode.as_deref() == Some("subscribe")
        && expected.is_some_and(|e| !given.is_empty() && crate::auth::tokens::ct_eq(&given, &e));
    if !ok {
        return Err(ApiError::of(
            ErrorCode::Forbidden,
            "hub.mode must be subscribe and hub.verify_token this channel's verify token",
        ));
    }
    let challenge = q.challenge.unwrap_or_default();
    // Echoed as plain text; only the characters Meta uses, so nothing else is reflected.
    if challenge.is_empty()
        || challenge.len() > 256
        || !challenge
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "hub.challenge must be 1 to 256 letters, digits, - _ or .",
        ));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        challenge,
    )
        .into_response())
}

/// Stores a signed Meta delivery before the 200: the raw body, with its processing job
/// (every entry, message and status in it is processed there). The same body again stores
/// nothing; single messages are deduplicated by their wamid/mid when processed.
async fn meta_webhook(
    state: AppState,
    id: String,
    kind: ChannelKind,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<axum::Json<serde_json::Value>> {
    use crate::api::error_codes::ErrorCode;
    let limit = state.config.meta_webhook_max_bytes;
    let Some(channel) = webhook_channel(&state, &id, kind).await? else {
        return Err(unrouted(&state, kind, &id, body, limit).await);
    };
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::of(
            ErrorCode::PayloadTooLarge,
            format!("a webhook body may be at most {limit} bytes (META_WEBHOOK_MAX_BYTES)"),
        )
    })?;
    // The signature covers the raw bytes: checked before anything is parsed or stored.
    let sent = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let verified = match state
        .svc
        .channel_secret(&channel, crate::domain::channels::APP_SECRET)
    {
        Some(secret) if !sent.is_empty() => {
            crate::channels::meta::signature_ok(&secret, &bytes, sent)
        }
        _ => false,
    };
    if !verified {
        tracing::warn!(channel = %channel.id, "{} webhook without a valid signature refused", provider_name(kind));
        return Err(ApiError::of(
            ErrorCode::InvalidSignature,
            "X-Hub-Signature-256 is missing or is not the HMAC-SHA256 of the body with this channel's app secret",
        ));
    }
    if !is_json(&headers) {
        return Err(ApiError::of(
            ErrorCode::UnsupportedMediaType,
            "send the webhook as application/json",
        ));
    }
    let raw = String::from_utf8(Vec::from(bytes))
        .map_err(|_| ApiError::of(ErrorCode::MalformedJson, "the body is not UTF-8 text"))?;
    let caller = crate::auth::Caller::channel_webhook(&channel);
    let accepted = state
        .run(move |s| {
            // serde_json's recursion limit refuses absurdly nested bodies.
            let v: serde_json::Value = serde_json::from_str(&raw).map_err(|e| {
                crate::domain::Error::Invalid(
                    "malformed_json",
                    format!("the body is not valid JSON: {e}"),
                )
            })?;
            // Every account's items (the job leaves out other accounts'), so every item
            // falls in one part: one per contact, processed side by side.
            let parts = match crate::channels::meta::items(kind, &v, "") {
                Ok((items, _)) => crate::channels::meta::parts(&items),
                Err(e) => {
                    return Err(crate::domain::Error::Validation(vec![
                        crate::domain::FieldError {
                            field: "object".into(),
                            message: e,
                        },
                    ]));
                }
            };
            use sha2::Digest;
            let digest = hex::encode(sha2::Sha256::digest(raw.as_bytes()));
            s.accept_inbound(&caller, &channel, &format!("sha256:{digest}"), raw, parts)
        })
        .await?;
    Ok(accepted_body(&accepted))
}

macro_rules! meta_routes {
    ($verify:ident, $post:ident, $kind:expr, $path:literal, $name:literal) => {
        #[doc = concat!("Meta's webhook verification handshake for a ", $name, " channel: answers `hub.challenge` as text when `hub.mode` is `subscribe` and `hub.verify_token` is the channel's verify token (403 `forbidden` otherwise).")]
        #[utoipa::path(get, path = $path, tag = "channels", security(()),
            params(("channelId" = String, Path), HubParams),
            responses((status = 200, description = "The challenge, as text/plain", content_type = "text/plain", body = String),
                (status = 400, body = ErrorBody, description = "`invalid_query`"), (status = 403, body = ErrorBody, description = "`forbidden`: wrong mode or verify token"),
                (status = 404, body = ErrorBody, description = "`channel_not_found`")))]
        pub async fn $verify(
            State(state): State<AppState>,
            Path(id): Path<String>,
            Query(q): Query<HubParams>,
        ) -> ApiResult<axum::response::Response> {
            meta_verify(state, id, $kind, q).await
        }

        #[doc = concat!("Meta delivers a ", $name, " channel's messages and statuses here. `X-Hub-Signature-256` must be the HMAC-SHA256 of the raw body with the channel's app secret (401 `invalid_signature` otherwise, nothing stored). The body is stored with its processing job before the 200; every entry, message and status in it is processed; the same body again stores nothing (`outcome: duplicate`) and each message is stored once by its provider id.")]
        #[utoipa::path(post, path = $path, tag = "channels", security(()),
            params(("channelId" = String, Path)), request_body = Object,
            responses((status = 200, description = "Stored (or already stored): `{ok, outcome: queued|duplicate|dead_letter}`", body = Object),
                (status = 400, body = ErrorBody, description = "`malformed_json`, `validation_failed` (not this provider's payload)"),
                (status = 401, body = ErrorBody, description = "`invalid_signature`"), (status = 404, body = ErrorBody, description = "`channel_not_found`"),
                (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
        pub async fn $post(
            State(state): State<AppState>,
            Path(id): Path<String>,
            headers: HeaderMap,
            body: axum::body::Body,
        ) -> ApiResult<axum::Json<serde_json::Value>> {
            meta_webhook(state, id, $kind, headers, body).await
        }
    };
}

meta_routes!(
    whatsapp_verify,
    whatsapp_webhook,
    ChannelKind::Whatsapp,
    "/webhooks/whatsapp/{channelId}",
    "WhatsApp"
);
meta_routes!(
    messenger_verify,
    messenger_webhook,
    ChannelKind::Messenger,
    "/webhooks/messenger/{channelId}",
    "Messenger"
);
meta_routes!(
    instagram_verify,
    instagram_webhook,
    ChannelKind::Instagram,
    "/webhooks/instagram/{channelId}",
    "Instagram"
);

/// A WhatsApp template message to send.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateReq {
    /// The template's name as approved in the WhatsApp Manager (`order_update`).
    #[schema(min_length = 1, max_length = 512)]
    name: String,
    /// Its language code (`en_US`, `pt_BR`).
    #[schema(min_length = 2, max_length = 15)]
    language: String,
    /// The body's `{{1}}`, `{{2}}` ... values, in order.
    #[serde(default)]
    #[schema(max_items = 20)]
    parameters: Vec<String>,
}

/// Send a WhatsApp template in a WhatsApp conversation: the one kind of message WhatsApp
/// takes more than 24 hours after the customer's last message. Stored as a human message
/// (`pending` until WhatsApp accepts it, then `sent`/`delivered`/`read`, or `failed` with
/// WhatsApp's words) describing the template; a person sending it takes the conversation.
#[utoipa::path(post, path = "/api/conversations/{id}/whatsapp-template", tag = "conversations", params(("id" = String, Path)), request_body = TemplateReq,
    responses((status = 201, body = crate::api::views::MessageView), (status = 400, body = ErrorBody, description = "`validation_failed`; `unsupported_channel_type` (not a WhatsApp conversation)"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "`conversation_not_found`")))]
pub async fn whatsapp_template(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Json(r): Json<TemplateReq>,
) -> ApiResult<(StatusCode, axum::Json<crate::api::views::MessageView>)> {
    let id = crate::types::ConversationId::parse(&id).ok_or_else(|| ApiError::invalid_id("id"))?;
    let t = crate::domain::inbound::Template {
        name: r.name.trim().to_string(),
        language: r.language.trim().to_string(),
        parameters: r.parameters,
    };
    let m = state.run(move |s| s.post_template(&caller, &id, t)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(crate::api::views::MessageView::from(&m)),
    ))
}

/// Resend a reply that failed in a messaging channel's conversation: the provider refused
/// it, the outbox gave up, or the server stopped while sending it and it is not known
/// whether the customer got it (`delivery_unknown`: check the chat first). The same
/// message goes back to `pending` and is sent whole through the outbox (a
/// `message_status` event follows each change); outside the provider's messaging window it
/// is refused as a new reply would be.
#[utoipa::path(post, path = "/api/conversations/{id}/messages/{messageId}/resend", tag = "conversations",
    params(("id" = String, Path), ("messageId" = String, Path)),
    responses((status = 200, body = crate::api::views::MessageView, description = "The message, `pending` again"),
        (status = 400, body = ErrorBody, description = "`invalid_id`"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "`conversation_not_found`, `message_not_found`"),
        (status = 409, body = ErrorBody, description = "`message_not_resendable` (not a failed reply of a messaging channel), `outside_messaging_window`")))]
pub async fn resend_message(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, msg)): Path<(String, String)>,
) -> ApiResult<axum::Json<crate::api::views::MessageView>> {
    let id = crate::types::ConversationId::parse(&id).ok_or_else(|| ApiError::invalid_id("id"))?;
    let msg =
        crate::types::MessageId::parse(&msg).ok_or_else(|| ApiError::invalid_id("messageId"))?;
    let m = state
        .run(move |s| s.resend_message(&caller, &id, &msg))
        .await?;
    Ok(axum::Json(crate::api::views::MessageView::from(&m)))
}

/// Download a file a customer sent through a messaging channel (an image, a voice message,
/// a document). Staff only (the visitor widget has no access). Always served as a download
/// (`Content-Disposition: attachment`, `nosniff`, a sandboxing CSP), never rendered inline
/// from this origin.
#[utoipa::path(get, path = "/api/conversations/{id}/messages/{messageId}/attachments/{attachmentId}", tag = "conversations",
    params(("id" = String, Path), ("messageId" = String, Path), ("attachmentId" = String, Path)),
    responses((status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "`conversation_not_found`, `message_not_found`, `attachment_not_found`")))]
pub async fn attachment(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((id, msg, att)): Path<(String, String, String)>,
) -> ApiResult<axum::response::Response> {
    use crate::api::error_codes::ErrorCode;
    let id = crate::types::ConversationId::parse(&id).ok_or_else(|| ApiError::invalid_id("id"))?;
    let msg =
        crate::types::MessageId::parse(&msg).ok_or_else(|| ApiError::invalid_id("messageId"))?;
    let (a, path) = state
        .run(move |s| s.attachment(&caller, &id, &msg, &att))
        .await?;
    // Files are capped at CHANNEL_MEDIA_MAX_BYTES when fetched, so reading one whole is
    // bounded.
    let bytes = tokio::fs::read(&path).await.map_err(|_| {
        ApiError::of(
            ErrorCode::AttachmentNotFound,
            "the attachment's file is no longer stored",
        )
    })?;
    let mime = a
        .mime_type
        .as_deref()
        .filter(|m| {
            m.len() <= 100
                && m.contains('/')
                && m.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/+-.".contains(c))
        })
        .unwrap_or("application/octet-stream")
        .to_string();
    let name: String = a
        .file_name
        .clone()
        .unwrap_or_else(|| a.id.clone())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._- ".contains(*c))
        .take(100)
        .collect();
    let name = if name.trim().is_empty() {
        a.id.clone()
    } else {
        name
    };
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (
                header::CONTENT_SECURITY_POLICY,
                "sandbox; default-src 'none'".to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}
