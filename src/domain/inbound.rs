//! Messaging channels' traffic rules: a provider's webhook delivery is stored raw, with its
//! processing job, in the commit that precedes the acknowledgement (deduplicated by the
//! provider's id); processing turns it into a contact's conversation message; a reply in
//! such a conversation is committed with its outbox job; deliveries that cannot be processed
//! are kept as dead letters an admin can replay. Talking to providers is channels/'s work.
//! Must not depend on api/ or channels/.

use super::{Error, PageReq, Result, Services};
use crate::auth::{Action, Caller, Denied};
use crate::events::Event;
use crate::jobs::Jobs;
use crate::model::*;
use crate::store::{Index, Page, WriteTx, make_ref, split_ref};
use crate::types::*;

/// The job kind processing one stored webhook delivery.
pub const JOB_INBOUND: &str = "channel_inbound";
/// The job kind handing one outgoing message to its channel's provider.
pub const JOB_SEND: &str = "channel_send";

/// What happened to a webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Stored and queued for processing.
    Queued(InboundId),
    /// Stored as a dead letter (the channel is paused).
    DeadLetter(InboundId),
    /// The provider sent this one before: nothing was stored.
    Duplicate,
}

/// The payload of an inbound job.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundPayload {
    pub channel_id: ChannelId,
    pub inbound_id: InboundId,
}

/// The payload of an outbox job: which message, and how many of its parts the provider
/// already accepted (recorded after each part, so a retry resumes after them).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendPayload {
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    #[serde(default)]
    pub sent_parts: u32,
}

/// What an outbox job has to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub channel: Channel,
    pub conversation: Conversation,
    pub message: Message,
}

fn inbound_key(t: &TenantId, ch: &ChannelId, external: &str) -> String {
    format!("{t}/{ch}/{external}")
}

fn contact_key(t: &TenantId, ch: &ChannelId, contact: &str) -> String {
    format!("{t}/{ch}/{contact}")
}

fn json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::Internal(e.to_string()))
}

impl Services {
    /// Stores a verified webhook delivery of `channel` before it is acknowledged: a new one
    /// with its processing job (or as a dead letter while the channel is paused), nothing
    /// for a provider id seen before. `caller` is the channel's webhook.
    pub fn accept_inbound(
        &self,
        caller: &Caller,
        channel: &Channel,
        external_id: &str,
        payload: String,
    ) -> Result<Accepted> {
        if caller.channel() != Some(&channel.id) || caller.tenant() != &channel.tenant_id {
            return Err(Error::denied(Denied::NotFound, "channel"));
        }
        caller
            .require(Action::Converse)
            .map_err(|d| Error::denied(d, "channel"))?;
        let t = channel.tenant_id.clone();
        let (accepted, job) = self.store.write(|tx| -> Result<_> {
            let key = inbound_key(&t, &channel.id, external_id);
            if tx.index_get(Index::InboundExternal, &key)?.is_some() {
                return Ok((Accepted::Duplicate, None));
            }
            // The stored channel decides (a pause may have committed since it was read).
            let Some(current) = tx.get::<Channel>(&t, channel.id.as_str())? else {
                return Err(Error::NotFound("channel"));
            };
            let now = self.clock.now();
            let paused = current.status == ChannelStatus::Paused;
            let ev = InboundEvent {
                id: InboundId::new(),
                tenant_id: t.clone(),
                channel_id: channel.id.clone(),
                external_id: external_id.to_string(),
                payload,
                status: if paused {
                    InboundStatus::DeadLetter
                } else {
                    InboundStatus::Queued
                },
                error: paused.then(|| crate::analytics::contrib::PAUSED_REASON.to_string()),
                received_at: now,
                updated_at: now,
            };
            Self::put_inbound(tx, &ev)?;
            tx.index_insert_new(
                Index::InboundExternal,
                &key,
                &make_ref(&t, &format!("{}/{}", channel.id, ev.id)),
            )?;
            if paused {
                return Ok((Accepted::DeadLetter(ev.id), None));
            }
            let job = Self::enqueue_inbound(tx, &t, &channel.id, &ev.id)?;
            Ok((Accepted::Queued(ev.id), Some(job)))
        })?;
        if let Some(job) = &job {
            self.jobs.wake(job);
        }
        Ok(accepted)
    }

    fn enqueue_inbound(
        tx: &WriteTx,
        t: &TenantId,
        channel: &ChannelId,
        id: &InboundId,
    ) -> Result<Job> {
        let payload = InboundPayload {
            channel_id: channel.clone(),
            inbound_id: id.clone(),
        };
        // One channel's deliveries are processed in the order they arrived.
        Ok(Jobs::enqueue_serial_in(
            tx,
            t,
            JOB_INBOUND,
            json(&payload)?,
            Some(format!("inbound:{channel}")),
        )?)
    }

    /// A stored delivery and its channel (`None` for the channel when it was deleted).
    pub fn inbound_event(
        &self,
        caller: &Caller,
        p: &InboundPayload,
    ) -> Result<Option<(InboundEvent, Option<Channel>)>> {
        caller
            .require(Action::Converse)
            .map_err(|d| Error::denied(d, "channel"))?;
        let t = caller.tenant();
        Ok(self.store.read(|tx| {
            let key = format!("{}/{}", p.channel_id, p.inbound_id);
            let Some(ev) = tx.get::<InboundEvent>(t, &key)? else {
                return Ok(None);
            };
            let ch = tx.get::<Channel>(t, p.channel_id.as_str())?;
            Ok(Some((ev, ch)))
        })?)
    }

    /// Marks a delivery processed, or a dead letter with the reason.
    pub fn finish_inbound(
        &self,
        caller: &Caller,
        p: &InboundPayload,
        outcome: std::result::Result<(), String>,
    ) -> Result<()> {
        caller
            .require(Action::Converse)
            .map_err(|d| Error::denied(d, "channel"))?;
        let t = caller.tenant().clone();
        self.store.write(|tx| -> Result<()> {
            let key = format!("{}/{}", p.channel_id, p.inbound_id);
            let Some(mut ev) = tx.get::<InboundEvent>(&t, &key)? else {
                return Ok(());
            };
            match outcome {
                Ok(()) => {
                    ev.status = InboundStatus::Processed;
                    ev.error = None;
                }
                Err(e) => {
                    ev.status = InboundStatus::DeadLetter;
                    ev.error = Some(e);
                }
            }
            ev.updated_at = self.clock.now();
            Self::put_inbound(tx, &ev)?;
            Ok(())
        })
    }

    /// The conversation a provider contact writes in: their latest one of this channel
    /// (a customer message reopens it when closed, as in the inbox), or a new one opened
    /// for them with the channel's agent. Safe to repeat: the contact index is written in
    /// the same commit as a new conversation.
    pub fn contact_conversation(
        &self,
        caller: &Caller,
        channel: &Channel,
        contact_id: &str,
        customer: Customer,
    ) -> Result<Conversation> {
        caller
            .require(Action::Converse)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant().clone();
        if channel.tenant_id != t {
            return Err(Error::NotFound("channel"));
        }
        let key = contact_key(&t, &channel.id, contact_id);
        let created = self.store.write(|tx| -> Result<_> {
            if let Some(r) = tx.index_get(Index::ChannelContact, &key)?
                && let Some((_, id)) = split_ref(&r)
                && let Some(conv) = tx.get::<Conversation>(&t, id)?
            {
                return Ok((conv, false));
            }
            let agent_id = channel.agent_id.clone().ok_or(Error::NotFound("agent"))?;
            if tx.get::<Agent>(&t, agent_id.as_str())?.is_none() {
                return Err(Error::NotFound("agent"));
            }
            let now = self.clock.now();
            let conv = Conversation {
                id: ConversationId::new(),
                tenant_id: t.clone(),
                agent_id,
                channel_id: Some(channel.id.clone()),
                customer: customer.clone(),
                status: ConversationStatus::Open,
                mode: ConversationMode::Ai,
                assignee_id: None,
                last_message_at: None,
                message_count: 0,
                created_at: now,
                closed_at: None,
                last_seq: 0,
                rating: None,
            };
            Self::put_conversation(tx, &conv)?;
            // Replaces the entry of a deleted conversation, if any.
            tx.index_remove(Index::ChannelContact, &key)?;
            tx.index_insert_new(Index::ChannelContact, &key, &make_ref(&t, conv.id.as_str()))?;
            Ok((conv, true))
        })?;
        let (conv, new) = created;
        if new {
            self.events.publish(Event::ConversationCreated {
                conversation: conv.clone(),
            });
        }
        Ok(conv)
    }

    /// Dead letters of a channel, oldest first.
    pub fn list_dead_letters(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        page: &PageReq,
    ) -> Result<Page<InboundEvent>> {
        caller
            .require(Action::ReadChannels)
            .map_err(|d| Error::denied(d, "channel"))?;
        let t = caller.tenant();
        let page = self.store.read(|tx| {
            if tx.get::<Channel>(t, channel.as_str())?.is_none() {
                return Ok(None);
            }
            tx.list_filtered::<InboundEvent>(
                t,
                Some(channel.as_str()),
                page.cursor.as_deref(),
                page.limit,
                false,
                |e| e.status == InboundStatus::DeadLetter,
            )
            .map(Some)
        })?;
        page.ok_or(Error::NotFound("channel"))
    }

    /// Queues a dead letter for processing again (the channel must be active by then to
    /// take it; otherwise it comes back as a dead letter with the reason).
    pub fn replay_dead_letter(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        id: &InboundId,
    ) -> Result<InboundEvent> {
        caller
            .require(Action::ManageChannels)
            .map_err(|d| Error::denied(d, "channel"))?;
        let t = caller.tenant().clone();
        let (ev, job) = self.store.write(|tx| -> Result<_> {
            if tx.get::<Channel>(&t, channel.as_str())?.is_none() {
                return Err(Error::NotFound("channel"));
            }
            let mut ev = tx
                .get::<InboundEvent>(&t, &format!("{channel}/{id}"))?
                .ok_or(Error::NotFound("dead_letter"))?;
            if ev.status != InboundStatus::DeadLetter {
                return Err(Error::Conflict(
                    "not_a_dead_letter",
                    "this delivery is not a dead letter (it was processed or is queued)".into(),
                    None,
                ));
            }
            ev.status = InboundStatus::Queued;
            ev.error = None;
            ev.updated_at = self.clock.now();
            Self::put_inbound(tx, &ev)?;
            let job = Self::enqueue_inbound(tx, &t, channel, &ev.id)?;
            Ok((ev, job))
        })?;
        self.jobs.wake(&job);
        Ok(ev)
    }

    /// Queues the outbox job of `msg` (an AI or human reply just appended to `conv`) when
    /// the conversation belongs to a messaging channel, and stores the message as `pending`
    /// until the provider accepts it; call inside the reply's commit and wake the job after
    /// it. Replies of one conversation leave in commit order.
    pub(super) fn queue_outbound(
        tx: &WriteTx,
        conv: &Conversation,
        msg: &mut Message,
    ) -> Result<Option<Job>> {
        if !matches!(msg.role, MessageRole::Ai | MessageRole::Human)
            || msg.status == MessageStatus::Failed
            || msg.content.trim().is_empty()
        {
            return Ok(None);
        }
        let Some(ch) = &conv.channel_id else {
            return Ok(None);
        };
        let Some(channel) = tx.get::<Channel>(&conv.tenant_id, ch.as_str())? else {
            return Ok(None);
        };
        if channel.kind == ChannelKind::Web {
            return Ok(None);
        }
        msg.status = MessageStatus::Pending;
        Self::put_message(tx, conv, msg)?;
        let payload = SendPayload {
            conversation_id: conv.id.clone(),
            message_id: msg.id.clone(),
            sent_parts: 0,
        };
        Ok(Some(Jobs::enqueue_serial_in(
            tx,
            &conv.tenant_id,
            JOB_SEND,
            json(&payload)?,
            Some(format!("outbox:{}", conv.id)),
        )?))
    }

    /// What an outbox job sends; `None` when the message, conversation or channel is gone.
    pub fn outgoing(&self, caller: &Caller, p: &SendPayload) -> Result<Option<Outgoing>> {
        caller
            .require(Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant();
        Ok(self.store.read(|tx| {
            let Some(conversation) = tx.get::<Conversation>(t, p.conversation_id.as_str())? else {
                return Ok(None);
            };
            let Some(message) =
                tx.get::<Message>(t, &format!("{}/{}", p.conversation_id, p.message_id))?
            else {
                return Ok(None);
            };
            let Some(channel) = conversation
                .channel_id
                .as_ref()
                .map(|c| tx.get::<Channel>(t, c.as_str()))
                .transpose()?
                .flatten()
            else {
                return Ok(None);
            };
            Ok(Some(Outgoing {
                channel,
                conversation,
                message,
            }))
        })?)
    }

    /// Records on the outbox job `job` that the provider accepted `sent_parts` parts.
    pub fn record_send_progress(
        &self,
        caller: &Caller,
        job: &JobId,
        sent_parts: u32,
    ) -> Result<()> {
        caller
            .require(Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant().clone();
        self.store.write(|tx| -> Result<()> {
            let Some(mut j) = tx.get::<Job>(&t, job.as_str())? else {
                return Ok(());
            };
            let Ok(mut p) = serde_json::from_value::<SendPayload>(j.payload.clone()) else {
                return Ok(());
            };
            p.sent_parts = sent_parts;
            j.payload = json(&p)?;
            tx.put(&j)?;
            Ok(())
        })
    }

    /// The provider accepted every part of an outgoing message: `pending` becomes `sent`
    /// (a status further along, set meanwhile, is kept) and `message_status` tells whoever
    /// watches.
    pub fn mark_outgoing_sent(&self, caller: &Caller, p: &SendPayload) -> Result<()> {
        caller
            .require(Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant().clone();
        let key = format!("{}/{}", p.conversation_id, p.message_id);
        let changed = self.store.write(|tx| -> Result<bool> {
            let Some(mut m) = tx.get::<Message>(&t, &key)? else {
                return Ok(false);
            };
            if m.status != MessageStatus::Pending {
                return Ok(false);
            }
            m.status = MessageStatus::Sent;
            Self::put_message_of(tx, &m)?;
            Ok(true)
        })?;
        if changed {
            self.events.publish(Event::MessageStatus {
                tenant_id: t,
                conversation_id: p.conversation_id.clone(),
                message_id: p.message_id.clone(),
                status: MessageStatus::Sent,
                error: None,
            });
        }
        Ok(())
    }

    /// An outgoing message could not be delivered: it becomes `failed` with the provider's
    /// error, and `message_status` tells whoever watches.
    pub fn fail_outgoing(&self, caller: &Caller, p: &SendPayload, error: &str) -> Result<()> {
        caller
            .require(Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant().clone();
        let key = format!("{}/{}", p.conversation_id, p.message_id);
        let changed = self.store.write(|tx| -> Result<bool> {
            let Some(mut m) = tx.get::<Message>(&t, &key)? else {
                return Ok(false);
            };
            m.status = MessageStatus::Failed;
            m.error = Some(error.to_string());
            Self::put_message_of(tx, &m)?;
            Ok(true)
        })?;
        if changed {
            self.events.publish(Event::MessageStatus {
                tenant_id: t,
                conversation_id: p.conversation_id.clone(),
                message_id: p.message_id.clone(),
                status: MessageStatus::Failed,
                error: Some(error.to_string()),
            });
        }
        Ok(())
    }
}
