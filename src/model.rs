//! The whole data model, as stored records. Every tenant-scoped record carries its tenant id
//! and is keyed in the store by `(tenant_id, id)`, so a tenant's data is one key range.
//!
//! Records are what the store keeps, serialised whole (serde here describes the stored form,
//! never what a client sees). The API shapes its own views from them in `api::views`; a
//! record is never a response body, so a field added here never reaches a client by
//! accident. Shared enums and request value types (`ToolSpec`, `Customer`) keep `ToSchema`.

use crate::types::*;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// A business using the platform.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    pub status: TenantStatus,
    #[serde(default)]
    pub settings: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    Suspended,
}

/// A tenant's provider settings (one record per tenant). Secrets in it are sealed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSettings {
    pub tenant_id: TenantId,
    #[serde(default)]
    pub ai: AiSettings,
    /// Per-tenant override of the global embedding settings (JSON of `embed::Settings`).
    #[serde(default)]
    pub embeddings: Option<serde_json::Value>,
    /// A change of embedding model whose re-embedding has not finished: until it has, the
    /// tenant's searches keep using the model it had before (knowledge::mod). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_switch: Option<EmbeddingSwitch>,
}

/// The model a tenant's searches keep using while its chunks are re-embedded for a new one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingSwitch {
    /// The embedding override in force before the change (`None`: the server's model).
    pub from: Option<serde_json::Value>,
    /// The model id of `from`: its index holds a vector of every chunk of the tenant.
    pub from_model_id: String,
}

/// Chat model provider override; unset fields fall back to the global configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AiSettings {
    pub base_url: Option<String>,
    /// Sealed with the data key; never returned.
    pub api_key_sealed: Option<String>,
    pub model: Option<String>,
    /// Context window of the model in tokens, for history trimming.
    pub context_window: Option<u32>,
}

/// A person who signs in. Platform admins live in the platform pseudo-tenant.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub password_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_login_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("role", &self.role)
            .field("password_hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// One signed-in device: owns the current refresh token (stored as a keyed hash).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: SessionId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub refresh_hash: String,
    /// Hashes of refresh tokens already rotated away; presenting one is token reuse.
    #[serde(default)]
    pub previous_hashes: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_used_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub revoked_reason: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// An invitation to join a tenant; the token is only ever stored hashed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invitation {
    pub id: InvitationId,
    pub tenant_id: TenantId,
    pub email: String,
    pub role: Role,
    pub name: Option<String>,
    /// Keyed hash of the token; the key of its row in the token index.
    pub token_hash: String,
    pub invited_by: Option<UserId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub accepted_at: Option<OffsetDateTime>,
}

/// A single-use password reset token (hashed), valid for one hour.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordReset {
    pub id: PasswordResetId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub token_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub used_at: Option<OffsetDateTime>,
}

/// A long-lived key for programs. The secret is shown once; only its hash is kept.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: String,
    /// First characters of the key, for recognising it in a list (`ak_AbCd1234`).
    pub prefix: String,
    pub key_hash: String,
    pub role: Role,
    pub created_by: Option<UserId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("prefix", &self.prefix)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalMode {
    Hybrid,
    Keyword,
    Vector,
    Off,
}

/// How an agent words its answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    /// The model writes the answer from the retrieved sources.
    Generate,
    /// No model: the answer is the retrieved passages' sentences that answer, quoted with
    /// their citations ("From our documents: ...").
    Extractive,
    /// `generate` when the tenant's model provider is configured and not known to be
    /// down, else `extractive`.
    #[default]
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActiveStatus {
    Active,
    Inactive,
}

/// An AI agent: personality, model settings, knowledge and tools.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
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
    /// Absent in agents stored before answer modes existed: `auto`.
    #[serde(default)]
    pub answer_mode: AnswerMode,
    #[serde(default)]
    pub document_ids: Vec<DocumentId>,
    pub greeting: Option<String>,
    pub fallback_message: Option<String>,
    pub language: Option<String>,
    /// Enabled tools: the built-ins and tenant-defined HTTP tools.
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    pub status: ActiveStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A tool an agent may call.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolSpec {
    /// Search the agent's knowledge again with the model's own query.
    SearchKnowledge,
    /// Hand the conversation to a person (status pending_human) with a reason.
    HandoffToHuman,
    /// A tenant-defined HTTP endpoint, called server-side.
    Http(HttpTool),
}

/// A tenant-defined HTTP tool.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpTool {
    /// Function name shown to the model: `[a-zA-Z0-9_-]{1,64}`.
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    #[serde(default)]
    pub parameters: serde_json::Value,
    pub url: String,
    /// GET, POST, PUT, PATCH or DELETE. GET sends arguments as the query string.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers. Values are secrets: sealed at rest, never shown again.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Allow loopback and private-network URLs (off by default: SSRF protection).
    #[serde(default)]
    pub allow_private_network: bool,
    /// Per-call timeout, default 10 s, max 60 s.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

fn default_method() -> String {
    "POST".into()
}

/// Per-agent, per-day rollup of conversation turns (latency, tokens, outcomes).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentAnalytics {
    /// `<agentId>:<YYYY-MM-DD>`.
    pub id: String,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub day: String,
    pub turns: u64,
    pub failed_turns: u64,
    pub handoffs: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_latency_ms: u64,
    pub conversations: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DocumentStatus {
    Queued,
    Processing,
    Ready,
    Failed,
}

/// An uploaded file of the knowledge base. The original lives content-addressed on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub id: DocumentId,
    pub tenant_id: TenantId,
    pub name: String,
    pub mime_type: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub status: DocumentStatus,
    pub progress: u8,
    pub error: Option<String>,
    pub pages: Option<u32>,
    pub chunk_count: u32,
    pub title: Option<String>,
    pub author: Option<String>,
    #[serde(default)]
    pub agent_ids: Vec<AgentId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub processed_at: Option<OffsetDateTime>,
}

/// A retrievable piece of a document and where it came from (its vector is kept apart).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chunk {
    pub id: ChunkId,
    pub tenant_id: TenantId,
    pub document_id: DocumentId,
    pub ordinal: u32,
    pub text: String,
    pub page: Option<u32>,
    #[serde(default)]
    pub headings: Vec<String>,
    pub token_count: u32,
    /// The embedding model id that made the chunk's vector, which the store keeps apart
    /// (`WriteTx::put_vector`, schema 14); vectors of different models never mix.
    pub embedding_model: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Web,
    Whatsapp,
    Messenger,
    Instagram,
    Telegram,
}

/// Whether a channel takes customers' messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelStatus {
    Active,
    /// Turned off by an admin: the widget (or webhook) refuses new messages.
    Paused,
    /// The provider refused us; `Channel::last_error` says why (channels issue).
    Error,
}

/// Where customers talk to an agent. Settings are per type (`web` for the website widget;
/// `config` keeps the public settings of the other types); credentials are sealed one by
/// one with the data directory's key and never sent to clients.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub id: ChannelId,
    pub tenant_id: TenantId,
    pub agent_id: Option<AgentId>,
    pub kind: ChannelKind,
    pub name: String,
    pub status: ChannelStatus,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The website widget's settings (type `web`).
    #[serde(default)]
    pub web: Option<WebSettings>,
    /// Public, non-secret settings of the other types (page id, phone number id ...).
    #[serde(default)]
    pub config: serde_json::Value,
    /// Credential name -> value sealed with the data key (web: `identitySecret`).
    #[serde(default)]
    pub credentials: std::collections::BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// The website widget's settings (stored; the API has its own view of them).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebSettings {
    /// Public key the embed code carries; unique across the install.
    pub widget_key: String,
    /// Normalised origins (`https://shop.example.com`, `https://*.example.com`).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub greeting: Option<String>,
    #[serde(default)]
    pub theme: WidgetTheme,
    pub language: Option<String>,
    #[serde(default)]
    pub pre_chat: PreChat,
    #[serde(default)]
    pub identity: FieldMode,
}

/// How the widget looks.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WidgetTheme {
    /// `#rrggbb`.
    pub color: String,
    pub title: Option<String>,
    pub avatar_url: Option<String>,
    pub position: WidgetPosition,
}

impl Default for WidgetTheme {
    fn default() -> Self {
        WidgetTheme {
            color: "#2563eb".into(),
            title: None,
            avatar_url: None,
            position: WidgetPosition::BottomRight,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WidgetPosition {
    #[default]
    BottomRight,
    BottomLeft,
}

/// Fields the widget asks for before the first message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreChat {
    pub name: FieldMode,
    pub email: FieldMode,
}

/// Whether something is asked for: not at all, optionally, or required. Also the
/// widget's identity verification mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldMode {
    #[default]
    Off,
    Optional,
    Required,
}

/// A website-widget visitor: one browser (or, with identity verification, one person of
/// the site). Its token is stored only as a keyed hash.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Visitor {
    pub id: VisitorId,
    pub tenant_id: TenantId,
    pub channel_id: ChannelId,
    /// Keyed hashes of this visitor's live tokens (one per browser), newest last.
    pub token_hashes: Vec<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    /// The site's id of the person, verified by the identity HMAC.
    pub external_id: Option<String>,
    /// The conversation the visitor talks in (the newest one).
    pub conversation_id: Option<ConversationId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
}

impl std::fmt::Debug for Visitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Visitor")
            .field("id", &self.id)
            .field("channel_id", &self.channel_id)
            .field("conversation_id", &self.conversation_id)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub name: Option<String>,
    pub email: Option<String>,
    pub external_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    Open,
    PendingHuman,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConversationMode {
    Ai,
    Human,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: ConversationId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub channel_id: Option<ChannelId>,
    #[serde(default)]
    pub customer: Customer,
    pub status: ConversationStatus,
    pub mode: ConversationMode,
    pub assignee_id: Option<UserId>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_message_at: Option<OffsetDateTime>,
    pub message_count: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    /// The `seq` of the last message committed in the conversation (0: none yet).
    #[serde(default)]
    pub last_seq: u64,
    /// The customer's satisfaction rating (widget CSAT), once given.
    #[serde(default)]
    pub rating: Option<Rating>,
}

/// A customer's satisfaction rating of a closed conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rating {
    /// 1 (bad) to 5 (great).
    pub score: u8,
    pub comment: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub rated_at: OffsetDateTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    Customer,
    Ai,
    Human,
    System,
}

/// Why a reply in a messaging channel failed, for clients to act on (a message's `error`
/// says it in words for people).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageErrorCode {
    /// The server stopped, or the provider's answer was lost, while the reply was being
    /// sent: the customer may have it. Check the chat before resending.
    DeliveryUnknown,
    /// The provider refused the reply, or the outbox gave up retrying: not sent.
    SendFailed,
    /// Outside the provider's messaging window (WhatsApp's, Messenger's 24 hours): not sent.
    OutsideMessagingWindow,
    /// The provider took the reply, then reported that it could not deliver it.
    ProviderFailed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// A reply in a messaging channel (Telegram ...) committed and waiting in the outbox for
    /// the provider to accept it; `sent` once it did, `failed` (with the provider's error)
    /// when it gave up.
    Pending,
    Sent,
    Delivered,
    Read,
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Citation {
    pub document_id: DocumentId,
    pub document_name: String,
    pub chunk_id: ChunkId,
    pub page: Option<u32>,
    /// The chunk's heading path in its document, outermost first (empty when it has none).
    /// Messages stored before this field existed read back with none.
    #[serde(default)]
    pub headings: Vec<String>,
    pub snippet: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// One message of a conversation. Keyed by `(tenant, conversationId/messageId)` so a
/// conversation's messages are one ordered range.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    pub role: MessageRole,
    pub content: String,
    #[serde(default)]
    pub citations: Vec<Citation>,
    pub usage: Option<Usage>,
    pub status: MessageStatus,
    pub error: Option<String>,
    /// What kind of failure `error` describes (set with it on a failed reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<MessageErrorCode>,
    pub author_id: Option<UserId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Commit order within the conversation (1, 2, 3 ...), assigned in the transaction that
    /// stores the message. Ids are not commit order: an AI answer's id is chosen while it
    /// streams, before messages posted meanwhile commit.
    #[serde(default)]
    pub seq: u64,
    /// The sender's idempotency key: a resend with the same key in the conversation gets
    /// this message back instead of a new one.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Media a customer sent through a messaging channel, stored in the data directory
    /// (`media/<tenantId>/<attachmentId>`).
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

/// A file that came with a channel message (an image, a voice message, a document).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// Unique in the tenant; names the stored file.
    pub id: String,
    /// `image`, `audio`, `video`, `document`, `sticker`.
    pub kind: String,
    pub mime_type: Option<String>,
    pub file_name: Option<String>,
    pub size: u64,
}

/// How far a team member has read a conversation. Keyed `conversationId/userId`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadMark {
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    /// The `seq` of the last message read.
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A live-update subscription (webhook target or socket room) of a tenant.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: SubscriptionId,
    pub tenant_id: TenantId,
    pub user_id: Option<UserId>,
    /// Event names, e.g. `message.created`.
    pub events: Vec<String>,
    pub target: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A raw analytics event (conversation started, message, handoff, resolution ...).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsEvent {
    pub id: AnalyticsEventId,
    pub tenant_id: TenantId,
    pub kind: String,
    pub agent_id: Option<AgentId>,
    pub conversation_id: Option<ConversationId>,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Done,
    Failed,
}

/// A unit of durable background work; a restart resumes queued and running jobs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub kind: String,
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Jobs with the same key run one at a time, in queue order (one conversation's turns).
    #[serde(default)]
    pub serial: Option<String>,
    pub status: JobStatus,
    pub progress: u8,
    pub attempts: u32,
    pub error: Option<String>,
    /// What kind of failure `error` describes, when the handler said (the outbox does: its
    /// gave-up hook gives the failed reply this code). Absent on jobs stored before codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<MessageErrorCode>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Where a provider's webhook delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InboundStatus {
    /// Acknowledged to the provider; its processing job is queued.
    Queued,
    /// Turned into conversation messages (or found to carry nothing to store).
    Processed,
    /// Kept aside: the channel was paused or gone, or the payload could not be processed.
    /// An admin can replay it.
    DeadLetter,
}

/// One webhook delivery of a messaging provider, stored raw before it is acknowledged.
/// Keyed `channelId/id` so a channel's deliveries are one range.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundEvent {
    pub id: InboundId,
    pub tenant_id: TenantId,
    pub channel_id: ChannelId,
    /// The provider's id of the delivery (Telegram: `update_id`), the deduplication key.
    pub external_id: String,
    /// The body exactly as received.
    pub payload: String,
    pub status: InboundStatus,
    /// Why it is a dead letter.
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The parts of a queued delivery (one per contact, see `domain::inbound`) whose job
    /// has not finished yet; it is processed once none is left. Empty: one job for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_parts: Vec<String>,
}

/// One entry of the audit log: who did what to which target, when, from where, and how it
/// ended. Kept under the tenant it concerns (install-wide entries, such as a failed sign-in
/// for an unknown email or a tenant's deletion, under the platform scope). Never holds a
/// secret: settings changes name the keys that changed, credential changes only that they
/// changed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub id: AuditId,
    pub tenant_id: TenantId,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `auth.login`, `api_key.created`, ... (see `domain::audit::AuditAction`).
    pub action: String,
    /// `success` or `failure`.
    pub outcome: String,
    pub actor: AuditActor,
    pub target: Option<AuditTarget>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Action-specific facts (changed setting keys, old and new role, a failure's reason).
    #[serde(default)]
    pub details: serde_json::Value,
    /// How many identical events this entry stands for (repeated sign-in failures from one
    /// address are coalesced), and when the last of them happened.
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_at: Option<OffsetDateTime>,
}

fn one() -> u32 {
    1
}

/// Who acted, as known when the entry was written (an email stays readable after the user
/// is removed).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditActor {
    /// `user`, `api_key`, `anonymous` (a sign-in attempt, a reset link) or `system`.
    pub kind: String,
    pub user_id: Option<UserId>,
    pub email: Option<String>,
    pub api_key_id: Option<ApiKeyId>,
    pub role: Option<Role>,
}

/// What an action was done to.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditTarget {
    /// `user`, `invitation`, `api_key`, `tenant`, `channel`, `settings`.
    pub kind: String,
    pub id: Option<String>,
    /// A human-readable name (an email, a key's or channel's name).
    pub label: Option<String>,
}

/// Limits of a plan; `None` is unlimited. The names are a public contract (the API's
/// `limits` keys and the `limit` of a `plan_limit_reached` refusal).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanLimits {
    #[serde(default)]
    pub agents: Option<u64>,
    #[serde(default)]
    pub documents: Option<u64>,
    #[serde(default)]
    pub storage_bytes: Option<u64>,
    /// AI replies per subscription period.
    #[serde(default)]
    pub messages_per_month: Option<u64>,
    #[serde(default)]
    pub channels: Option<u64>,
    /// Users of the tenant (pending invitations included).
    #[serde(default)]
    pub seats: Option<u64>,
    #[serde(default)]
    pub api_keys: Option<u64>,
}

/// An operator-defined plan. Plans are platform records: stored under the platform
/// pseudo-tenant ([`TenantId::platform`]), keyed by plan id.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub id: PlanId,
    /// Always the platform tenant (plans belong to the install, not to a business).
    pub tenant_id: TenantId,
    pub name: String,
    #[serde(default)]
    pub limits: PlanLimits,
    pub price_text: Option<String>,
    /// The plan new tenants get (at most one stored plan has it; none: the built-in one).
    #[serde(default)]
    pub is_default: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// What a tenant's subscription allows: see README "Plans and limits".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Active,
    Trialing,
    /// Payment is late: what exists keeps working (AI replies included), nothing new is
    /// created.
    PastDue,
    /// Nothing new is created and the AI no longer replies (a person takes over).
    Canceled,
}

/// A tenant's plan subscription (one per tenant, keyed by the tenant) with the usage
/// counters of its current period. Made lazily, on the default plan, the first time the
/// tenant's usage is read or checked.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantPlan {
    pub tenant_id: TenantId,
    pub plan_id: PlanId,
    pub status: SubscriptionStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub period_start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub period_end: OffsetDateTime,
    /// AI replies in the current period.
    #[serde(default)]
    pub messages: u64,
    /// Thresholds (80, 100) already announced this period, per limit name, so each
    /// crossing is announced once.
    #[serde(default)]
    pub announced: std::collections::BTreeMap<String, u8>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// One hour of one dimension's analytics figures of a tenant (see `crate::analytics`).
/// Keyed `dim/bucket`: `dim` is `all`, `agent:<id>` or `channel:<id>`, `bucket` the UTC
/// hour `YYYYMMDDHH`, so a range read for one agent or channel reads only its keys.
/// Counters and histograms are named (`msg.customer`, `h.frt` ...) so a new figure needs
/// no new record type; zero entries are dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsRollup {
    pub tenant_id: TenantId,
    pub dim: String,
    pub bucket: String,
    #[serde(default)]
    pub counts: std::collections::BTreeMap<String, i64>,
    /// Histogram name -> bucket index (`crate::analytics::Hist`) -> count.
    #[serde(default)]
    pub hists: std::collections::BTreeMap<String, std::collections::BTreeMap<u16, i64>>,
}

/// What analytics know of one conversation: a snapshot of the fields its figures come
/// from, plus what the conversation record does not keep (when it was first answered,
/// handed to a person, how often it was reopened). Keyed by the conversation id. The
/// rollups hold exactly the sum of every stats record's contribution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationStats {
    pub tenant_id: TenantId,
    pub conversation_id: ConversationId,
    pub agent_id: AgentId,
    pub channel_id: Option<ChannelId>,
    pub status: ConversationStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub first_customer_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub first_response_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub handed_off_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub reopens: u32,
    #[serde(default)]
    pub rating: Option<u8>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub rated_at: Option<OffsetDateTime>,
}

/// A question the agent could not answer (fallback) or handed to a person: the raw
/// material of the knowledge-gaps report. Keyed `<unix ms, 13 digits>-<id>` (time order).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeGap {
    pub id: AnalyticsEventId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub conversation_id: Option<ConversationId>,
    pub question: String,
    /// `fallback` or `handoff`.
    pub outcome: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}
