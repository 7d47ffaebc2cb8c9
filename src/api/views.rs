//! What clients see: every JSON response body of the API is one of these types (or one of
//! the views re-exported below: settings and search results the domain and knowledge layers
//! compute, never records).
//!
//! The records of `crate::model` are what the store keeps; they do not derive `ToSchema` and
//! are never serialised to a client. Each view here is built from its record by an explicit
//! `From` conversion that names every field it copies, so a record that gains a field (a hash,
//! a job payload, a sealed secret) changes nothing on the wire until someone adds it here.
//! Depends on `model` and `types` only.

use crate::model::{
    ActiveStatus, Agent, AnswerMode, ApiKey, Channel, ChannelKind, ChannelStatus, Chunk, Citation,
    Conversation, ConversationMode, ConversationStatus, Customer, Document, DocumentStatus,
    FieldMode, HttpTool, Invitation, Job, JobStatus, Message, MessageErrorCode, MessageRole,
    MessageStatus, Rating, RetrievalMode, Tenant, TenantStatus, ToolSpec, Usage, User, WebSettings,
    WidgetPosition,
};
use crate::types::*;
use serde::Serialize;
use std::collections::BTreeMap;
use time::OffsetDateTime;
use utoipa::ToSchema;

pub use crate::domain::Paged;
pub use crate::domain::settings::AiSettingsView;
pub use crate::knowledge::SearchResult;
pub use crate::knowledge::settings::EmbeddingSettingsView;

/// Shown instead of a tool header's value: header values are secrets. The domain takes the
/// same mask back on update to mean "keep the stored value".
pub use crate::domain::agents::MASK as HEADER_MASK;

/// Maps a page of records to a page of views.
pub fn paged<R, V: ToSchema + for<'a> From<&'a R>>(p: crate::store::Page<R>) -> Paged<V> {
    Paged {
        data: p.items.iter().map(V::from).collect(),
        next_cursor: p.next,
    }
}

/// A tenant (business).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    pub status: TenantStatus,
    /// Free-form settings of the tenant (JSON object).
    pub settings: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        TenantView {
            id: t.id.clone(),
            name: t.name.clone(),
            slug: t.slug.clone(),
            status: t.status,
            settings: t.settings.clone(),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// An invitation (never its token or the token's hash).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvitationView {
    pub id: InvitationId,
    pub tenant_id: TenantId,
    pub email: String,
    pub role: Role,
    pub name: Option<String>,
    pub invited_by: Option<UserId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub accepted_at: Option<OffsetDateTime>,
}

impl From<&Invitation> for InvitationView {
    fn from(i: &Invitation) -> Self {
        InvitationView {
            id: i.id.clone(),
            tenant_id: i.tenant_id.clone(),
            email: i.email.clone(),
            role: i.role,
            name: i.name.clone(),
            invited_by: i.invited_by.clone(),
            created_at: i.created_at,
            expires_at: i.expires_at,
            accepted_at: i.accepted_at,
        }
    }
}

/// An AI agent.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    pub id: AgentId,
    pub tenant_id: TenantId,
    pub name: String,
    pub slug: String,
    pub description: Option<String>,
    pub system_prompt: String,
    pub model: Option<String>,
    pub temperature: f32,
    pub max_tokens: u32,
    pub top_k: u32,
    pub retrieval_mode: RetrievalMode,
    pub answer_mode: AnswerMode,
    pub document_ids: Vec<DocumentId>,
    pub greeting: Option<String>,
    pub fallback_message: Option<String>,
    pub language: Option<String>,
    pub tools: Vec<ToolView>,
    pub status: ActiveStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&Agent> for AgentView {
    fn from(a: &Agent) -> Self {
        AgentView {
            id: a.id.clone(),
            tenant_id: a.tenant_id.clone(),
            name: a.name.clone(),
            slug: a.slug.clone(),
            description: a.description.clone(),
            system_prompt: a.system_prompt.clone(),
            model: a.model.clone(),
            temperature: a.temperature,
            max_tokens: a.max_tokens,
            top_k: a.top_k,
            retrieval_mode: a.retrieval_mode,
            answer_mode: a.answer_mode,
            document_ids: a.document_ids.clone(),
            greeting: a.greeting.clone(),
            fallback_message: a.fallback_message.clone(),
            language: a.language.clone(),
            tools: a.tools.iter().map(ToolView::from).collect(),
            status: a.status,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// A tool an agent may call, as shown (header values masked).
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolView {
    /// Search the agent's knowledge again with the model's own query.
    SearchKnowledge,
    /// Hand the conversation to a person (status pending_human) with a reason.
    HandoffToHuman,
    /// A tenant-defined HTTP endpoint, called server-side.
    Http(HttpToolView),
}

impl From<&ToolSpec> for ToolView {
    fn from(t: &ToolSpec) -> Self {
        match t {
            ToolSpec::SearchKnowledge => ToolView::SearchKnowledge,
            ToolSpec::HandoffToHuman => ToolView::HandoffToHuman,
            ToolSpec::Http(h) => ToolView::Http(HttpToolView::from(h)),
        }
    }
}

/// A tenant-defined HTTP tool; header values are always the mask `********`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpToolView {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
    pub url: String,
    pub method: String,
    /// Header names with masked values; send the mask back to keep a stored value.
    pub headers: BTreeMap<String, String>,
    pub allow_private_network: bool,
    pub timeout_ms: Option<u64>,
}

impl From<&HttpTool> for HttpToolView {
    fn from(h: &HttpTool) -> Self {
        HttpToolView {
            name: h.name.clone(),
            description: h.description.clone(),
            parameters: h.parameters.clone(),
            url: h.url.clone(),
            method: h.method.clone(),
            headers: h
                .headers
                .keys()
                .map(|k| (k.clone(), HEADER_MASK.to_string()))
                .collect(),
            allow_private_network: h.allow_private_network,
            timeout_ms: h.timeout_ms,
        }
    }
}

/// An uploaded document of the knowledge base.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentView {
    pub id: DocumentId,
    pub tenant_id: TenantId,
    pub name: String,
    pub mime_type: String,
    pub size_bytes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    pub status: DocumentStatus,
    /// 0-100.
    pub progress: u8,
    pub error: Option<String>,
    pub pages: Option<u32>,
    pub chunk_count: u32,
    pub title: Option<String>,
    pub author: Option<String>,
    pub agent_ids: Vec<AgentId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub processed_at: Option<OffsetDateTime>,
}

impl From<&Document> for DocumentView {
    fn from(d: &Document) -> Self {
        DocumentView {
            id: d.id.clone(),
            tenant_id: d.tenant_id.clone(),
            name: d.name.clone(),
            mime_type: d.mime_type.clone(),
            size_bytes: d.size_bytes,
            sha256: d.sha256.clone(),
            status: d.status,
            progress: d.progress,
            error: d.error.clone(),
            pages: d.pages,
            chunk_count: d.chunk_count,
            title: d.title.clone(),
            author: d.author.clone(),
            agent_ids: d.agent_ids.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            processed_at: d.processed_at,
        }
    }
}

/// A retrievable piece of a document (never its vector).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChunkView {
    pub id: ChunkId,
    pub ordinal: u32,
    pub text: String,
    pub page: Option<u32>,
    pub headings: Vec<String>,
    pub token_count: u32,
    pub embedding_model: Option<String>,
}

impl From<&Chunk> for ChunkView {
    fn from(c: &Chunk) -> Self {
        ChunkView {
            id: c.id.clone(),
            ordinal: c.ordinal,
            text: c.text.clone(),
            page: c.page,
            headings: c.headings.clone(),
            token_count: c.token_count,
            embedding_model: c.embedding_model.clone(),
        }
    }
}

/// A background job, for polling (never its payload or attempt count).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: JobId,
    pub tenant_id: TenantId,
    /// `process_document`, `train_agent`, ...
    pub kind: String,
    pub status: JobStatus,
    /// 0-100.
    pub progress: u8,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> Self {
        JobView {
            id: j.id.clone(),
            tenant_id: j.tenant_id.clone(),
            kind: j.kind.clone(),
            status: j.status,
            progress: j.progress,
            error: j.error.clone(),
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }
}

/// Who the customer of a conversation is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerView {
    pub name: Option<String>,
    pub email: Option<String>,
    pub external_id: Option<String>,
}

impl From<&Customer> for CustomerView {
    fn from(c: &Customer) -> Self {
        CustomerView {
            name: c.name.clone(),
            email: c.email.clone(),
            external_id: c.external_id.clone(),
        }
    }
}

/// A conversation of the inbox.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationView {
    pub id: ConversationId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub channel_id: Option<ChannelId>,
    pub customer: CustomerView,
    pub status: ConversationStatus,
    pub mode: ConversationMode,
    pub assignee_id: Option<UserId>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_message_at: Option<OffsetDateTime>,
    pub message_count: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    /// The customer's satisfaction rating (web widget), once given.
    pub rating: Option<RatingView>,
    /// The `seq` of the conversation's last message (0: none yet).
    pub last_seq: u64,
    /// Messages after the calling team member's read mark (REST reads by a person or key;
    /// absent in socket events, where `lastSeq` and `mark_read` tell the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_count: Option<u64>,
}

/// A customer's satisfaction rating of a closed conversation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RatingView {
    /// 1 (bad) to 5 (great).
    pub rating: u8,
    pub comment: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub rated_at: OffsetDateTime,
}

impl From<&Rating> for RatingView {
    fn from(r: &Rating) -> Self {
        RatingView {
            rating: r.score,
            comment: r.comment.clone(),
            rated_at: r.rated_at,
        }
    }
}

impl From<&Conversation> for ConversationView {
    fn from(c: &Conversation) -> Self {
        ConversationView {
            id: c.id.clone(),
            tenant_id: c.tenant_id.clone(),
            agent_id: c.agent_id.clone(),
            channel_id: c.channel_id.clone(),
            customer: CustomerView::from(&c.customer),
            status: c.status,
            mode: c.mode,
            assignee_id: c.assignee_id.clone(),
            last_message_at: c.last_message_at,
            message_count: c.message_count,
            created_at: c.created_at,
            closed_at: c.closed_at,
            rating: c.rating.as_ref().map(RatingView::from),
            last_seq: c.last_seq,
            unread_count: None,
        }
    }
}

/// Where an answer came from.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CitationView {
    pub document_id: DocumentId,
    pub document_name: String,
    pub chunk_id: ChunkId,
    pub page: Option<u32>,
    /// The chunk's heading path in its document, outermost first.
    pub headings: Vec<String>,
    pub snippet: String,
}

impl From<&Citation> for CitationView {
    fn from(c: &Citation) -> Self {
        CitationView {
            document_id: c.document_id.clone(),
            document_name: c.document_name.clone(),
            chunk_id: c.chunk_id.clone(),
            page: c.page,
            headings: c.headings.clone(),
            snippet: c.snippet.clone(),
        }
    }
}

/// Tokens a model call used.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

impl From<&Usage> for UsageView {
    fn from(u: &Usage) -> Self {
        UsageView {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    pub role: MessageRole,
    pub content: String,
    pub citations: Vec<CitationView>,
    pub usage: Option<UsageView>,
    pub status: MessageStatus,
    pub error: Option<String>,
    /// What kind of failure `error` describes, on a failed reply in a messaging channel:
    /// `delivery_unknown` (the customer may have it: check the chat before resending),
    /// `send_failed`, `outside_messaging_window` or `provider_failed`.
    pub error_code: Option<MessageErrorCode>,
    pub author_id: Option<UserId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Commit order within the conversation (1, 2, 3 ...): the order to show and replay in.
    pub seq: u64,
    /// The sender's idempotency key, when it sent one.
    pub client_id: Option<String>,
    /// Media a customer sent through a messaging channel; download each with
    /// `GET /api/conversations/{id}/messages/{messageId}/attachments/{attachmentId}`.
    pub attachments: Vec<AttachmentView>,
}

/// A file that came with a channel message.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentView {
    pub id: String,
    /// `image`, `audio`, `video`, `document`, `sticker`.
    pub kind: String,
    pub mime_type: Option<String>,
    pub file_name: Option<String>,
    /// Bytes.
    pub size: u64,
}

/// What kind of failure a message's `error` describes: its code, or for a reply failed
/// before codes were stored, `delivery_unknown` read off the error's prefix (the only code
/// those words carried; any other such failure shows none).
fn failure_code(m: &Message) -> Option<MessageErrorCode> {
    if m.status != MessageStatus::Failed {
        return None;
    }
    m.error_code.or_else(|| {
        m.error
            .as_deref()
            .is_some_and(crate::domain::inbound::is_delivery_unknown)
            .then_some(MessageErrorCode::DeliveryUnknown)
    })
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> Self {
        MessageView {
            id: m.id.clone(),
            tenant_id: m.tenant_id.clone(),
            conversation_id: m.conversation_id.clone(),
            role: m.role,
            content: m.content.clone(),
            citations: m.citations.iter().map(CitationView::from).collect(),
            usage: m.usage.as_ref().map(UsageView::from),
            status: m.status,
            error: m.error.clone(),
            error_code: failure_code(m),
            author_id: m.author_id.clone(),
            created_at: m.created_at,
            seq: m.seq,
            client_id: m.client_id.clone(),
            attachments: m
                .attachments
                .iter()
                .map(|a| AttachmentView {
                    id: a.id.clone(),
                    kind: a.kind.clone(),
                    mime_type: a.mime_type.clone(),
                    file_name: a.file_name.clone(),
                    size: a.size,
                })
                .collect(),
        }
    }
}

/// Whether a write-only credential has a value.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CredentialState {
    Set,
    Unset,
}

/// The look of a web widget.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetThemeView {
    /// `#rrggbb`.
    pub color: String,
    pub title: Option<String>,
    pub avatar_url: Option<String>,
    pub position: WidgetPosition,
}

/// Fields asked before the first message: `off`, `optional` or `required`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreChatView {
    pub name: FieldMode,
    pub email: FieldMode,
}

/// Identity verification of a web widget's visitors: `off`, `optional` or `required`.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityView {
    pub mode: FieldMode,
}

/// The settings of a `web` channel (the website widget).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebSettingsView {
    /// Public key of the widget (in the embed code).
    pub widget_key: String,
    /// Origins whose pages may use the widget (this server's own origin always may).
    pub allowed_origins: Vec<String>,
    pub greeting: Option<String>,
    pub theme: WidgetThemeView,
    pub language: Option<String>,
    pub pre_chat: PreChatView,
    pub identity: IdentityView,
}

impl From<&WebSettings> for WebSettingsView {
    fn from(w: &WebSettings) -> Self {
        WebSettingsView {
            widget_key: w.widget_key.clone(),
            allowed_origins: w.allowed_origins.clone(),
            greeting: w.greeting.clone(),
            theme: WidgetThemeView {
                color: w.theme.color.clone(),
                title: w.theme.title.clone(),
                avatar_url: w.theme.avatar_url.clone(),
                position: w.theme.position,
            },
            language: w.language.clone(),
            pre_chat: PreChatView {
                name: w.pre_chat.name,
                email: w.pre_chat.email,
            },
            identity: IdentityView { mode: w.identity },
        }
    }
}

/// A channel: where customers talk to an agent. Credentials show only whether they are set.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelView {
    pub id: ChannelId,
    pub tenant_id: TenantId,
    #[serde(rename = "type")]
    pub kind: ChannelKind,
    pub name: String,
    pub agent_id: Option<AgentId>,
    pub status: ChannelStatus,
    pub last_error: Option<String>,
    /// Per type; for `web`, the widget's settings.
    #[schema(value_type = WebSettingsView)]
    pub settings: serde_json::Value,
    /// Each credential's name and whether it is set (web: `identitySecret`).
    pub credentials: BTreeMap<String, CredentialState>,
    /// `web`: the script tag to paste into the site's pages.
    pub embed_code: Option<String>,
    /// Messaging types: where the provider delivers (absolute, from PUBLIC_URL); for
    /// `telegram` it is registered with Telegram by the server itself.
    pub webhook_url: Option<String>,
    /// `web`: the identity secret, only in the answer of the request that generated it
    /// (turning verification on, or rotating it). Keep it on the site's server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_secret: Option<String>,
    /// WhatsApp, Messenger, Instagram: the token to paste into the Meta app's webhook
    /// settings (Meta sends it back in the verification handshake). Shown to the tenant's
    /// users on every read; null for other types.
    pub verify_token: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl ChannelView {
    /// The view of `c`, with `base` (PUBLIC_URL or the request's own) for the embed code and
    /// the identity secret this request generated, if any.
    pub fn new(c: &Channel, base: &str, new_identity_secret: Option<String>) -> Self {
        // The credentials an admin sets for the type; ones the server keeps for itself
        // (Telegram's webhook secret) are not listed.
        let names: &[&str] = match c.kind {
            ChannelKind::Web => &[crate::domain::channels::IDENTITY_SECRET],
            ChannelKind::Telegram => &[crate::domain::channels::BOT_TOKEN],
            ChannelKind::Whatsapp => &[
                crate::domain::channels::ACCESS_TOKEN,
                crate::domain::channels::APP_SECRET,
            ],
            ChannelKind::Messenger | ChannelKind::Instagram => &[
                crate::domain::channels::PAGE_ACCESS_TOKEN,
                crate::domain::channels::APP_SECRET,
            ],
        };
        let mut credentials = BTreeMap::new();
        for name in names {
            let state = if c.credentials.contains_key(*name) {
                CredentialState::Set
            } else {
                CredentialState::Unset
            };
            credentials.insert(name.to_string(), state);
        }
        let settings = match &c.web {
            Some(w) => serde_json::to_value(WebSettingsView::from(w)).unwrap_or_default(),
            None => c.config.clone(),
        };
        ChannelView {
            id: c.id.clone(),
            tenant_id: c.tenant_id.clone(),
            kind: c.kind,
            name: c.name.clone(),
            agent_id: c.agent_id.clone(),
            status: c.status,
            last_error: c.last_error.clone(),
            settings,
            credentials,
            embed_code: c.web.as_ref().map(|w| embed_code(base, &w.widget_key)),
            webhook_url: crate::channels::webhook_url(base, c),
            identity_secret: new_identity_secret,
            verify_token: None,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// The script tag that puts a widget on a page.
pub fn embed_code(base: &str, widget_key: &str) -> String {
    format!(
        r#"<script src="{}/widget.js" data-widget-key="{widget_key}" async></script>"#,
        base.trim_end_matches('/')
    )
}

/// What a widget shows before anyone talks: its public settings (no secrets, no origins).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetConfigView {
    pub widget_key: String,
    pub title: Option<String>,
    pub color: String,
    pub avatar_url: Option<String>,
    pub position: WidgetPosition,
    pub greeting: Option<String>,
    pub language: Option<String>,
    pub pre_chat: PreChatView,
    /// `off`, `optional` or `required`: whether the page must sign its user's id.
    pub identity_mode: FieldMode,
    /// The name of the agent that answers.
    pub agent_name: Option<String>,
}

impl WidgetConfigView {
    /// The public settings of a web channel; `None` for other types.
    pub fn new(c: &Channel, agent_name: Option<&str>) -> Option<Self> {
        let w = c.web.as_ref()?;
        Some(WidgetConfigView {
            widget_key: w.widget_key.clone(),
            title: w.theme.title.clone().or_else(|| Some(c.name.clone())),
            color: w.theme.color.clone(),
            avatar_url: w.theme.avatar_url.clone(),
            position: w.theme.position,
            greeting: w.greeting.clone(),
            language: w.language.clone(),
            pre_chat: PreChatView {
                name: w.pre_chat.name,
                email: w.pre_chat.email,
            },
            identity_mode: w.identity,
            agent_name: agent_name.map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::now;

    #[test]
    fn internal_fields_of_records_never_reach_a_view() {
        let inv = Invitation {
            id: InvitationId::new(),
            tenant_id: TenantId::new(),
            email: "a@example.com".into(),
            role: Role::TenantUser,
            name: None,
            token_hash: "secret-hash".into(),
            invited_by: None,
            created_at: now(),
            expires_at: now(),
            accepted_at: None,
        };
        let v = serde_json::to_value(InvitationView::from(&inv)).unwrap();
        assert!(v.get("tokenHash").is_none());
        assert!(!v.to_string().contains("secret-hash"));
        assert_eq!(v["email"], "a@example.com");

        let job = Job {
            id: JobId::new(),
            tenant_id: TenantId::new(),
            kind: "process_document".into(),
            payload: serde_json::json!({"path": "/data/originals/x"}),
            serial: Some("conversation:x".into()),
            status: JobStatus::Queued,
            progress: 0,
            attempts: 3,
            error: None,
            error_code: Some(MessageErrorCode::SendFailed),
            created_at: now(),
            updated_at: now(),
        };
        let v = serde_json::to_value(JobView::from(&job)).unwrap();
        assert!(v.get("payload").is_none() && v.get("attempts").is_none());
        assert!(
            v.get("errorCode").is_none(),
            "a record's field is not a view's"
        );
        assert_eq!(v["kind"], "process_document");
    }

    #[test]
    fn channel_credentials_show_only_whether_they_are_set() {
        let c = Channel {
            id: ChannelId::new(),
            tenant_id: TenantId::new(),
            agent_id: None,
            kind: ChannelKind::Web,
            name: "Site".into(),
            status: ChannelStatus::Active,
            last_error: None,
            web: Some(WebSettings {
                widget_key: "wk_abc".into(),
                allowed_origins: vec!["https://a.test".into()],
                greeting: None,
                theme: Default::default(),
                language: None,
                pre_chat: Default::default(),
                identity: FieldMode::Required,
            }),
            config: serde_json::Value::Null,
            credentials: [("identitySecret".to_string(), "v1:sealed-bytes".to_string())].into(),
            created_at: now(),
            updated_at: now(),
        };
        let v = serde_json::to_value(ChannelView::new(&c, "https://chat.test/", None)).unwrap();
        assert!(!v.to_string().contains("sealed-bytes"));
        assert_eq!(v["credentials"]["identitySecret"], "set");
        assert!(v.get("identitySecret").is_none());
        assert_eq!(v["type"], "web");
        assert_eq!(
            v["embedCode"],
            r#"<script src="https://chat.test/widget.js" data-widget-key="wk_abc" async></script>"#
        );
        let public = serde_json::to_value(WidgetConfigView::new(&c, Some("Ava"))).unwrap();
        assert!(public.get("allowedOrigins").is_none());
        assert_eq!(public["identityMode"], "required");
        assert_eq!(public["title"], "Site");
    }

    #[test]
    fn tool_header_values_are_masked() {
        let tool = ToolSpec::Http(HttpTool {
            name: "crm".into(),
            description: "d".into(),
            parameters: serde_json::json!({"type": "object"}),
            url: "https://crm.example.com".into(),
            method: "POST".into(),
            headers: [("Authorization".to_string(), "sealed:abc".to_string())].into(),
            allow_private_network: false,
            timeout_ms: None,
        });
        let v = serde_json::to_value(ToolView::from(&tool)).unwrap();
        assert_eq!(v["type"], "http");
        assert_eq!(v["headers"]["Authorization"], HEADER_MASK);
    }
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: UserId,
    pub tenant_id: Option<TenantId>,
    pub email: String,
    pub name: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_login_at: Option<Timestamp>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            tenant_id: (!u.tenant_id.is_platform()).then(|| u.tenant_id.clone()),
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role,
            created_at: u.created_at,
            updated_at: u.updated_at,
            last_login_at: u.last_login_at,
        }
    }
}

/// A key as listed (never the secret).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub name: String,
    pub prefix: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    pub created_by: Option<UserId>,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(k: &ApiKey) -> Self {
        ApiKeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            role: k.role,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            expires_at: k.expires_at,
            created_by: k.created_by.clone(),
        }
    }
}
