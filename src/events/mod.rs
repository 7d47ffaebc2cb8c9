//! The in-process event bus: typed events, each belonging to one tenant, published by the
//! domain (and the job queue) after the write they describe has committed. Sockets, webhooks
//! and the UI are only subscribers; a handler never publishes.
//!
//! Tenancy by construction: every event names its tenant (taken from the records it carries,
//! so it cannot be published to another tenant), the bus keeps one channel per tenant, and
//! [`Bus::subscribe`] takes the caller, so a subscriber can only ever receive its own
//! tenant's events. Memory is bounded: each tenant's channel keeps at most `capacity` events;
//! a subscriber that falls further behind is told how many it missed ([`Recv::Lagged`]) and
//! should refetch what it shows.
//! Depends on model/, types/ and auth/ (for [`Caller`]) only.

use crate::auth::Caller;
use crate::model::{Conversation, DocumentStatus, JobStatus, Message, MessageStatus};
use crate::types::{ConversationId, DocumentId, JobId, MessageId, TenantId, UserId};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events kept per tenant for slow subscribers before they lag (`SOCKET_TENANT_BACKLOG`).
/// tokio allocates the whole buffer (~40 bytes a slot) while the tenant has a subscriber,
/// so it is a per-tenant cost that small tenants with a few sockets pay in full; 256 holds
/// more than a second of a busy tenant's events, and a socket that still falls behind
/// refills its messages from the store.
pub const DEFAULT_CAPACITY: usize = 256;

/// A field of a conversation whose change is worth showing live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConversationField {
    Status,
    Mode,
    Assignee,
    Agent,
    /// The customer's satisfaction rating (widget CSAT).
    Rating,
}

/// A team member's presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    Online,
    Away,
    Offline,
}

/// Who is typing: `kind` is `customer`, `human` or `ai`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Typist {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Something that happened in a tenant, after commit.
// Events travel in an `Arc` (one allocation per publish, shared by every subscriber), so
// the size difference between variants costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Event {
    /// A conversation was opened (with the greeting already counted).
    ConversationCreated { conversation: Conversation },
    /// A message was stored: the message as stored and its conversation as it is now (for
    /// the inbox list: last message time, count, status).
    MessageCreated {
        conversation: Conversation,
        message: Message,
    },
    /// A stored message's delivery status changed (channels: delivered, read, failed).
    MessageStatus {
        tenant_id: TenantId,
        conversation_id: ConversationId,
        message_id: MessageId,
        status: MessageStatus,
        error: Option<String>,
        error_code: Option<crate::model::MessageErrorCode>,
    },
    /// Status, mode, assignee, agent or rating of a conversation changed (closed, reopened,
    /// handed off, assigned, rated); `changed` lists which.
    ConversationChanged {
        conversation: Conversation,
        changed: Vec<ConversationField>,
    },
    /// A document's processing status or progress changed.
    DocumentStatus {
        tenant_id: TenantId,
        document_id: DocumentId,
        status: DocumentStatus,
        progress: u8,
        error: Option<String>,
    },
    /// A background job started, progressed or finished.
    JobProgress {
        tenant_id: TenantId,
        job_id: JobId,
        kind: String,
        status: JobStatus,
        progress: u8,
    },
    /// Ephemeral (nothing is stored): a piece of an AI answer being generated; `message_id`
    /// is the id the answer will have when it is stored.
    AgentDelta {
        tenant_id: TenantId,
        conversation_id: ConversationId,
        message_id: MessageId,
        delta: String,
    },
    /// Ephemeral: someone started or stopped typing in a conversation.
    Typing {
        tenant_id: TenantId,
        conversation_id: ConversationId,
        who: Typist,
        typing: bool,
    },
    /// Ephemeral: a team member came online, went away or offline.
    Presence {
        tenant_id: TenantId,
        user_id: UserId,
        name: String,
        status: PresenceStatus,
    },
    /// The tenant's usage of a plan limit reached 80% or 100% of it (once per crossing per
    /// period). `limit` is the limit's API name (`agents`, `messagesPerMonth`, ...).
    UsageThreshold {
        tenant_id: TenantId,
        limit: &'static str,
        used: u64,
        max: u64,
        percent: u64,
        threshold: u8,
    },
}

impl Event {
    /// The tenant the event belongs to.
    pub fn tenant(&self) -> &TenantId {
        match self {
            Event::ConversationCreated { conversation }
            | Event::ConversationChanged { conversation, .. } => &conversation.tenant_id,
            Event::MessageCreated { message, .. } => &message.tenant_id,
            Event::MessageStatus { tenant_id, .. }
            | Event::DocumentStatus { tenant_id, .. }
            | Event::JobProgress { tenant_id, .. }
            | Event::AgentDelta { tenant_id, .. }
            | Event::Typing { tenant_id, .. }
            | Event::Presence { tenant_id, .. }
            | Event::UsageThreshold { tenant_id, .. } => tenant_id,
        }
    }

    /// The event's name for subscribers (Socket.IO event names): a public contract.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ConversationCreated { .. } => "conversation:created",
            Event::MessageCreated { .. } => "message:created",
            Event::MessageStatus { .. } => "message:status",
            Event::ConversationChanged { .. } => "conversation:changed",
            Event::DocumentStatus { .. } => "document:status",
            Event::JobProgress { .. } => "job:progress",
            Event::AgentDelta { .. } => "agent:delta",
            Event::Typing { .. } => "conversation:typing",
            Event::Presence { .. } => "user:presence",
            Event::UsageThreshold { .. } => "usage:threshold",
        }
    }

    /// A `ConversationChanged` event when `after` differs from `before` in a field a live
    /// inbox shows; `None` when nothing visible changed.
    pub fn conversation_changed(before: &Conversation, after: &Conversation) -> Option<Event> {
        let mut changed = Vec::new();
        if before.status != after.status {
            changed.push(ConversationField::Status);
        }
        if before.mode != after.mode {
            changed.push(ConversationField::Mode);
        }
        if before.assignee_id != after.assignee_id {
            changed.push(ConversationField::Assignee);
        }
        if before.agent_id != after.agent_id {
            changed.push(ConversationField::Agent);
        }
        if before.rating != after.rating {
            changed.push(ConversationField::Rating);
        }
        (!changed.is_empty()).then(|| Event::ConversationChanged {
            conversation: after.clone(),
            changed,
        })
    }
}

/// What a subscriber receives next.
#[derive(Debug)]
pub enum Recv {
    Event(Arc<Event>),
    /// The subscriber was too slow: this many events of its tenant were dropped for it.
    Lagged(u64),
    /// The bus is gone (server shutting down).
    Closed,
}

/// The bus. Cheap to clone; all clones share the channels.
#[derive(Clone)]
pub struct Bus {
    channels: Arc<Mutex<HashMap<TenantId, broadcast::Sender<Arc<Event>>>>>,
    capacity: usize,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new(DEFAULT_CAPACITY)
    }
}

impl Bus {
    /// A bus keeping at most `capacity` undelivered events per tenant.
    pub fn new(capacity: usize) -> Self {
        Bus {
            channels: Arc::new(Mutex::new(HashMap::new())),
            capacity: capacity.max(1),
        }
    }

    /// Publishes to the event's own tenant. Call only after the write it describes has
    /// committed. Never blocks; without subscribers the event is dropped.
    pub fn publish(&self, event: Event) {
        let mut map = self.channels.lock().expect("BUG: poisoned event bus");
        let tenant = event.tenant().clone();
        if let Some(tx) = map.get(&tenant)
            && tx.send(Arc::new(event)).is_err()
        {
            // Every subscriber of this tenant is gone: forget the channel.
            map.remove(&tenant);
        }
    }

    /// Subscribes to the events of the caller's tenant, and only those.
    pub fn subscribe(&self, caller: &Caller) -> Subscription {
        let tenant = caller.tenant().clone();
        let mut map = self.channels.lock().expect("BUG: poisoned event bus");
        let rx = match map.get(&tenant) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(self.capacity);
                map.insert(tenant.clone(), tx);
                rx
            }
        };
        Subscription { tenant, rx }
    }

    /// Tenants with at least one live subscriber channel (for metrics and tests).
    pub fn channel_count(&self) -> usize {
        self.channels.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// One subscriber's stream of its tenant's events.
pub struct Subscription {
    tenant: TenantId,
    rx: broadcast::Receiver<Arc<Event>>,
}

impl Subscription {
    /// The tenant this subscription receives events of.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Waits for the next event.
    pub async fn recv(&mut self) -> Recv {
        match self.rx.recv().await {
            Ok(e) => Recv::Event(e),
            Err(broadcast::error::RecvError::Lagged(n)) => Recv::Lagged(n),
            Err(broadcast::error::RecvError::Closed) => Recv::Closed,
        }
    }

    /// The next event if one is already there, without waiting.
    pub fn try_recv(&mut self) -> Option<Recv> {
        match self.rx.try_recv() {
            Ok(e) => Some(Recv::Event(e)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Recv::Lagged(n)),
            Err(broadcast::error::TryRecvError::Closed) => Some(Recv::Closed),
            Err(broadcast::error::TryRecvError::Empty) => None,
        }
    }
}

#[cfg(test)]
mod tests;
