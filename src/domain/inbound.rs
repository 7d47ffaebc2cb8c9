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
    /// The items of the delivery this job processes; absent: all of them (a replay, or a
    /// job queued by an earlier version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<InboundPart>,
}

/// A share of a delivery's items processed by one job. A delivery is split by contact so
/// different customers' messages are processed side by side while one customer's are
/// processed in the order they arrived (one serial key per contact): a channel's throughput
/// is not one delivery at a time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "id")]
pub enum InboundPart {
    /// The messages and read receipts of one contact (the provider's chat or sender id).
    Contact(String),
    /// Delivery statuses of messages we sent: they need no order (a status never moves
    /// back), so they run beside everything else.
    Statuses,
}

impl InboundPart {
    /// Its entry in the delivery's `pending_parts`.
    pub fn key(&self) -> String {
        match self {
            InboundPart::Contact(c) => format!("c:{c}"),
            InboundPart::Statuses => "s".into(),
        }
    }

    /// The jobs that must run one at a time, in order.
    fn serial(&self, channel: &ChannelId) -> Option<String> {
        match self {
            InboundPart::Contact(c) => Some(format!("inbound:{channel}:{c}")),
            InboundPart::Statuses => None,
        }
    }
}

/// Whether the job of `p` still has work in delivery `ev`: the delivery is queued and the
/// job's part not finished (a job run again after a crash between finishing its part and
/// ending finds it done).
pub fn inbound_pending(ev: &InboundEvent, p: &InboundPayload) -> bool {
    ev.status == InboundStatus::Queued
        && match &p.part {
            Some(part) => ev.pending_parts.contains(&part.key()),
            None => true,
        }
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
    /// The part being handed to the provider: recorded (durably) before the call and
    /// cleared with its outcome. Found still set when the job runs again, the server
    /// stopped during that call and whether the provider took the part is unknown: the
    /// message is failed with [`DELIVERY_UNKNOWN`] instead of being sent a second time
    /// (neither provider takes an idempotency key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// A WhatsApp template to send instead of the message's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
}

/// A WhatsApp message template (pre-approved by Meta), the only thing WhatsApp lets a
/// business send outside the 24-hour customer-service window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    pub name: String,
    pub language: String,
    #[serde(default)]
    pub parameters: Vec<String>,
}

/// The error of a reply whose send may or may not have reached the provider (the server
/// stopped during the call, or the call broke after the request went out): it is not sent
/// again on its own, a person checks the chat and resends it (`.../resend`). The text
/// starts with a stable code.
pub const DELIVERY_UNKNOWN: &str = "delivery_unknown: the server stopped while sending this reply, so it is not known whether the customer got it; check the chat and resend it if it is missing";

/// [`DELIVERY_UNKNOWN`] for a call that broke after the request went out, with what broke.
pub fn delivery_unknown(what: &str) -> String {
    format!(
        "delivery_unknown: the provider's answer was lost ({what}), so it is not known whether the customer got this reply; check the chat and resend it if it is missing"
    )
}

/// Whether an error is [`DELIVERY_UNKNOWN`] or made by [`delivery_unknown`]: how a reply
/// failed before codes were stored tells its code (the outbox gives one since).
pub fn is_delivery_unknown(reason: &str) -> bool {
    reason.starts_with("delivery_unknown:")
}

/// Why a delivery of a paused channel is not processed (a dead letter to replay).
pub const CHANNEL_PAUSED: &str = "the channel is paused; resume it and replay this delivery";

/// How long after the customer's last message WhatsApp, Messenger and Instagram take
/// free-form replies.
pub const MESSAGING_WINDOW: time::Duration = time::Duration::hours(24);
/// How long Messenger and Instagram take a person's reply tagged HUMAN_AGENT.
pub const HUMAN_AGENT_WINDOW: time::Duration = time::Duration::days(7);

/// Whether a reply of `role` in a channel of `kind` may still be sent at `now`, given the
/// customer's last message; `Ok(true)` when it needs the HUMAN_AGENT tag, `Err` with the
/// reason when the window is closed.
pub fn window_check(
    kind: ChannelKind,
    role: MessageRole,
    last_customer_at: Option<time::OffsetDateTime>,
    now: time::OffsetDateTime,
) -> std::result::Result<bool, String> {
    if !super::channels::is_meta(kind) {
        return Ok(false);
    }
    let age = last_customer_at.map(|t| now - t);
    if age.is_some_and(|a| a <= MESSAGING_WINDOW) {
        return Ok(false);
    }
    let tagged = kind != ChannelKind::Whatsapp && role == MessageRole::Human;
    if tagged && age.is_some_and(|a| a <= HUMAN_AGENT_WINDOW) {
        return Ok(true);
    }
    Err(match kind {
        ChannelKind::Whatsapp => "the customer's last message is more than 24 hours old: WhatsApp takes only template messages now (POST /api/conversations/{id}/whatsapp-template)".into(),
        _ if tagged => "the customer's last message is more than 7 days old: the provider takes no reply until the customer writes again".into(),
        _ => "the customer's last message is more than 24 hours old: the provider takes no automatic reply until the customer writes again (a person can still answer for 7 days)".into(),
    })
}

/// What an outbox job has to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub channel: Channel,
    pub conversation: Conversation,
    pub message: Message,
    /// When the customer last wrote (the messaging window runs from it).
    pub last_customer_at: Option<time::OffsetDateTime>,
}

/// When the customer last wrote in the conversation `$conv` (read or write transaction).
macro_rules! last_customer_at {
    ($tx:expr, $t:expr, $conv:expr) => {
        $tx.list_filtered::<Message>($t, Some($conv.as_str()), None, 1, true, |m| {
            m.role == MessageRole::Customer
        })
        .map(|p| p.items.first().map(|m| m.created_at))
    };
}

fn inbound_key(t: &TenantId, ch: &ChannelId, external: &str) -> String {
    format!("{t}/{ch}/{external}")
}

/// The index key of a message we sent, by the provider's id for it (kept in the inbound
/// index, apart from deliveries by the `out:` prefix).
fn sent_key(t: &TenantId, ch: &ChannelId, provider_id: &str) -> String {
    format!("{t}/{ch}/out:{provider_id}")
}

/// Most deliveries to unknown channel ids kept for platform admins (the oldest go first).
pub const UNROUTED_MAX: usize = 200;
/// Bytes of such a delivery's body that are kept (unverified: anyone can send one).
pub const UNROUTED_PAYLOAD_MAX: usize = 16 * 1024;

/// The pseudo-tenant that holds deliveries no channel could take (no tenant's rows are
/// keyed by the nil id).
fn unrouted_tenant() -> TenantId {
    TenantId::parse("00000000-0000-0000-0000-000000000000")
        .expect("BUG: the nil UUID is a tenant id")
}

/// How far along a delivery status is; statuses never move back.
fn rank(s: MessageStatus) -> u8 {
    match s {
        MessageStatus::Pending => 0,
        MessageStatus::Sent => 1,
        MessageStatus::Delivered => 2,
        MessageStatus::Read => 3,
        MessageStatus::Failed => 4,
    }
}

/// Whether a message at `current` moves to `new`: forward only; `failed` only before
/// the message was delivered (a late failure report of a read message is stale), and
/// nothing moves a failed message.
pub fn status_advances(current: MessageStatus, new: MessageStatus) -> bool {
    match (current, new) {
        (MessageStatus::Failed, _) => false,
        (c, MessageStatus::Failed) => rank(c) <= rank(MessageStatus::Sent),
        (c, n) => rank(n) > rank(c),
    }
}

fn contact_key(t: &TenantId, ch: &ChannelId, contact: &str) -> String {
    format!("{t}/{ch}/{contact}")
}

fn json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::Internal(e.to_string()))
}

impl Services {
    /// Stores a verified webhook delivery of `channel` before it is acknowledged: a new one
    /// with its processing jobs, one per part of `parts` (one job for all when empty), or
    /// as a dead letter while the channel is paused; nothing for a provider id seen before.
    /// `caller` is the channel's webhook.
    pub fn accept_inbound(
        &self,
        caller: &Caller,
        channel: &Channel,
        external_id: &str,
        payload: String,
        parts: Vec<InboundPart>,
    ) -> Result<Accepted> {
        if caller.channel() != Some(&channel.id) || caller.tenant() != &channel.tenant_id {
            return Err(Error::denied(Denied::NotFound, "channel"));
        }
        caller
            .require(Action::Converse)
            .map_err(|d| Error::denied(d, "channel"))?;
        let t = channel.tenant_id.clone();
        // The provider waits for this commit (Meta asks for fast answers): it goes before
        // the job queue's bookkeeping.
        let (accepted, jobs) = self.store.write_urgent(|tx| -> Result<_> {
            let key = inbound_key(&t, &channel.id, external_id);
            if tx.index_get(Index::InboundExternal, &key)?.is_some() {
                return Ok((Accepted::Duplicate, vec![]));
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
                pending_parts: if paused {
                    vec![]
                } else {
                    parts.iter().map(InboundPart::key).collect()
                },
            };
            Self::put_inbound(tx, &ev)?;
            tx.index_insert_new(
                Index::InboundExternal,
                &key,
                &make_ref(&t, &format!("{}/{}", channel.id, ev.id)),
            )?;
            if paused {
                return Ok((Accepted::DeadLetter(ev.id), vec![]));
            }
            let jobs = if parts.is_empty() {
                vec![Self::enqueue_inbound(tx, &t, &channel.id, &ev.id, None)?]
            } else {
                parts
                    .into_iter()
                    .map(|part| Self::enqueue_inbound(tx, &t, &channel.id, &ev.id, Some(part)))
                    .collect::<Result<Vec<_>>>()?
            };
            Ok((Accepted::Queued(ev.id), jobs))
        })?;
        for job in &jobs {
            self.jobs.wake(job);
        }
        Ok(accepted)
    }

    fn enqueue_inbound(
        tx: &WriteTx,
        t: &TenantId,
        channel: &ChannelId,
        id: &InboundId,
        part: Option<InboundPart>,
    ) -> Result<Job> {
        // One contact's deliveries are processed in the order they arrived (a whole
        // delivery, without parts, in the channel's order).
        let serial = match &part {
            Some(p) => p.serial(channel),
            None => Some(format!("inbound:{channel}")),
        };
        let payload = InboundPayload {
            channel_id: channel.clone(),
            inbound_id: id.clone(),
            part,
        };
        Ok(Jobs::enqueue_serial_in(
            tx,
            t,
            JOB_INBOUND,
            json(&payload)?,
            serial,
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

    /// Marks the job's part of a delivery done (the delivery is processed once every part
    /// is), or the delivery a dead letter with the reason.
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
                    if let Some(part) = &p.part {
                        ev.pending_parts.retain(|k| *k != part.key());
                    } else {
                        ev.pending_parts.clear();
                    }
                    // A part that failed made it a dead letter: the others finishing
                    // later do not hide that.
                    if ev.pending_parts.is_empty() && ev.status == InboundStatus::Queued {
                        ev.status = InboundStatus::Processed;
                        ev.error = None;
                    }
                }
                Err(e) => {
                    ev.status = InboundStatus::DeadLetter;
                    ev.error = Some(e);
                    ev.pending_parts.clear();
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
            // The stored channel decides, in the same transaction as the conversation: one
            // deleted or paused since the job read it gets no conversation (its delivery
            // becomes a dead letter, or goes with the channel).
            let current = tx
                .get::<Channel>(&t, channel.id.as_str())?
                .ok_or(Error::NotFound("channel"))?;
            if current.status == ChannelStatus::Paused {
                return Err(Error::Forbidden("channel_paused", CHANNEL_PAUSED.into()));
            }
            if let Some(r) = tx.index_get(Index::ChannelContact, &key)?
                && let Some((_, id)) = split_ref(&r)
                && let Some(conv) = tx.get::<Conversation>(&t, id)?
            {
                return Ok((conv, false));
            }
            let agent_id = current.agent_id.clone().ok_or(Error::NotFound("agent"))?;
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
            ev.pending_parts.clear();
            ev.updated_at = self.clock.now();
            Self::put_inbound(tx, &ev)?;
            // Processed whole, again: what a part already stored is recognised by its
            // provider id and not stored twice.
            let job = Self::enqueue_inbound(tx, &t, channel, &ev.id, None)?;
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
        Self::queue_outbound_with(tx, conv, msg, None)
    }

    /// [`queue_outbound`](Self::queue_outbound) of a WhatsApp template (which no window
    /// limits) or of a text. Outside the messaging window a person's reply is refused with
    /// `outside_messaging_window` (nothing is committed); an AI reply is stored `failed`
    /// with the reason (the turn itself succeeded, the provider would refuse it).
    fn queue_outbound_with(
        tx: &WriteTx,
        conv: &Conversation,
        msg: &mut Message,
        template: Option<Template>,
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
        if template.is_none() && super::channels::is_meta(channel.kind) {
            let last = last_customer_at!(tx, &conv.tenant_id, &conv.id)?;
            if let Err(reason) = window_check(channel.kind, msg.role, last, now()) {
                if msg.role == MessageRole::Human {
                    return Err(Error::Conflict(
                        "outside_messaging_window",
                        reason,
                        Some(serde_json::json!({
                            "lastCustomerMessageAt": last.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
                        })),
                    ));
                }
                msg.status = MessageStatus::Failed;
                msg.error = Some(reason);
                msg.error_code = Some(MessageErrorCode::OutsideMessagingWindow);
                Self::put_message(tx, conv, msg)?;
                return Ok(None);
            }
        }
        msg.status = MessageStatus::Pending;
        Self::put_message(tx, conv, msg)?;
        let payload = SendPayload {
            conversation_id: conv.id.clone(),
            message_id: msg.id.clone(),
            sent_parts: 0,
            attempt: None,
            template,
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
            let last_customer_at = last_customer_at!(tx, t, &conversation.id)?;
            Ok(Some(Outgoing {
                channel,
                conversation,
                message,
                last_customer_at,
            }))
        })?)
    }

    /// Records on the outbox job `job` that the provider accepted `sent_parts` parts, and
    /// the provider's id of the part just sent (`provider_id`, WhatsApp's wamid or Meta's
    /// mid) so its delivery statuses find the message.
    pub fn record_send_progress(
        &self,
        caller: &Caller,
        job: &JobId,
        sent_parts: u32,
        provider_id: Option<(&ChannelId, &str)>,
    ) -> Result<()> {
        self.update_send_payload(caller, job, |tx, t, p| {
            if let Some((ch, id)) = provider_id.filter(|(_, id)| !id.is_empty()) {
                tx.index_remove(Index::InboundExternal, &sent_key(t, ch, id))?;
                tx.index_insert_new(
                    Index::InboundExternal,
                    &sent_key(t, ch, id),
                    &make_ref(t, &format!("{}/{}", p.conversation_id, p.message_id)),
                )?;
            }
            p.sent_parts = sent_parts;
            p.attempt = None;
            Ok(true)
        })
    }

    /// Records on the outbox job `job` that part `attempt` is being handed to the provider
    /// (before the call: durable when this returns), or, with `None`, that the call ended
    /// without the provider taking it (refused, or never sent), so a retry may send it.
    pub fn record_send_attempt(
        &self,
        caller: &Caller,
        job: &JobId,
        attempt: Option<u32>,
    ) -> Result<()> {
        self.update_send_payload(caller, job, |_, _, p| {
            let changed = p.attempt != attempt;
            p.attempt = attempt;
            Ok(changed)
        })
    }

    /// Changes the payload of the outbox job `job` in one write: nothing when the job or its
    /// payload is gone, or when `change` answers that it changed nothing.
    fn update_send_payload(
        &self,
        caller: &Caller,
        job: &JobId,
        change: impl FnOnce(&crate::store::WriteTx, &TenantId, &mut SendPayload) -> Result<bool>,
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
            if change(tx, &t, &mut p)? {
                j.payload = json(&p)?;
                tx.put(&j)?;
            }
            Ok(())
        })
    }

    /// A person resends a reply that failed (the provider refused it, it gave up, or the
    /// server stopped while sending it: `delivery_unknown`): the same message goes back to
    /// `pending` and into the conversation's outbox, sent whole (every part again), after
    /// the replies queued before it. Only a failed AI or human reply of a messaging
    /// channel's conversation can be resent; outside the messaging window it is refused as
    /// a new reply would be. A WhatsApp template is resent by sending the template again.
    pub fn resend_message(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        message: &MessageId,
    ) -> Result<Message> {
        caller
            .require_conversation(conversation, Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant().clone();
        let (msg, job) = self.store.write(|tx| -> Result<_> {
            let conv = tx
                .get::<Conversation>(&t, conversation.as_str())?
                .ok_or(Error::NotFound("conversation"))?;
            let mut msg = tx
                .get::<Message>(&t, &format!("{conversation}/{message}"))?
                .ok_or(Error::NotFound("message"))?;
            let not = |why: &str| Error::Conflict("message_not_resendable", why.into(), None);
            if !matches!(msg.role, MessageRole::Ai | MessageRole::Human) {
                return Err(not("only a reply (AI or human) can be resent"));
            }
            if msg.status != MessageStatus::Failed {
                return Err(not("only a failed reply can be resent"));
            }
            if msg.content.starts_with("[WhatsApp template ") {
                return Err(not("a template is resent by sending the template again"));
            }
            let channel = match &conv.channel_id {
                Some(ch) => tx.get::<Channel>(&t, ch.as_str())?,
                None => None,
            };
            let Some(channel) = channel.filter(|c| c.kind != ChannelKind::Web) else {
                return Err(not(
                    "only a reply in a messaging channel's conversation (with its channel) can be resent",
                ));
            };
            // Outside the window an AI reply would be stored failed again: refused as a
            // person's new reply is, so the person learns why.
            let last = last_customer_at!(tx, &t, &conv.id)?;
            if let Err(reason) = window_check(channel.kind, msg.role, last, now()) {
                return Err(Error::Conflict("outside_messaging_window", reason, None));
            }
            msg.status = MessageStatus::Pending;
            msg.error = None;
            msg.error_code = None;
            let job = Self::queue_outbound(tx, &conv, &mut msg)?
                .ok_or_else(|| not("the reply has nothing to send"))?;
            Ok((msg, job))
        })?;
        self.jobs.wake(&job);
        self.events.publish(Event::MessageStatus {
            tenant_id: t,
            conversation_id: conversation.clone(),
            message_id: message.clone(),
            status: msg.status,
            error: None,
            error_code: None,
        });
        Ok(msg)
    }

    /// The provider accepted every part of an outgoing message: `pending` becomes `sent`
    /// (a status further along, set meanwhile, is kept) and `message_status` tells whoever
    /// watches.
    pub fn mark_outgoing_sent(&self, caller: &Caller, p: &SendPayload) -> Result<()> {
        self.set_outgoing_status(caller, p, MessageStatus::Sent, None)
    }

    /// An outgoing message could not be delivered: it becomes `failed` with the outbox's
    /// reason (the provider's words) and code, and `message_status` tells whoever watches.
    pub fn fail_outgoing(
        &self,
        caller: &Caller,
        p: &SendPayload,
        code: MessageErrorCode,
        error: &str,
    ) -> Result<()> {
        self.set_outgoing_status(caller, p, MessageStatus::Failed, Some((code, error)))
    }

    /// Sets the outcome of a send on the stored message and publishes `message_status`.
    /// `sent` only replaces `pending`; `failed` (with `error`) replaces anything.
    fn set_outgoing_status(
        &self,
        caller: &Caller,
        p: &SendPayload,
        status: MessageStatus,
        failure: Option<(MessageErrorCode, &str)>,
    ) -> Result<()> {
        caller
            .require(Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant().clone();
        let key = format!("{}/{}", p.conversation_id, p.message_id);
        let code = failure.map(|(c, _)| c);
        let error = failure.map(|(_, e)| e.to_string());
        let changed = self.store.write(|tx| -> Result<bool> {
            let Some(mut m) = tx.get::<Message>(&t, &key)? else {
                return Ok(false);
            };
            if status == MessageStatus::Sent && m.status != MessageStatus::Pending {
                return Ok(false);
            }
            m.status = status;
            if status == MessageStatus::Failed {
                m.error = error.clone();
                m.error_code = code;
            }
            Self::put_message_of(tx, &m)?;
            Ok(true)
        })?;
        if changed {
            self.events.publish(Event::MessageStatus {
                tenant_id: t,
                conversation_id: p.conversation_id.clone(),
                message_id: p.message_id.clone(),
                status,
                error,
                error_code: code,
            });
        }
        Ok(())
    }

    /// A provider's status for a message we sent (`provider_id`: wamid, mid) moves the
    /// stored message forward (never back: statuses arrive out of order) and publishes
    /// `message_status`. An id we do not know (not ours, or sent before ids were kept) is
    /// ignored.
    pub fn provider_status(
        &self,
        caller: &Caller,
        channel: &Channel,
        provider_id: &str,
        status: MessageStatus,
        error: Option<String>,
    ) -> Result<()> {
        caller
            .require(Action::Converse)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant().clone();
        if channel.tenant_id != t {
            return Err(Error::NotFound("channel"));
        }
        let changed = self.store.write(|tx| -> Result<Option<Message>> {
            let Some(r) = tx.index_get(
                Index::InboundExternal,
                &sent_key(&t, &channel.id, provider_id),
            )?
            else {
                return Ok(None);
            };
            let Some((_, key)) = split_ref(&r) else {
                return Ok(None);
            };
            let Some(mut m) = tx.get::<Message>(&t, key)? else {
                return Ok(None);
            };
            if !status_advances(m.status, status) {
                return Ok(None);
            }
            m.status = status;
            if status == MessageStatus::Failed {
                m.error = error.clone();
                m.error_code = Some(MessageErrorCode::ProviderFailed);
            }
            Self::put_message_of(tx, &m)?;
            Ok(Some(m))
        })?;
        if let Some(m) = changed {
            self.events.publish(Event::MessageStatus {
                tenant_id: t,
                conversation_id: m.conversation_id,
                message_id: m.id,
                status: m.status,
                error: m.error,
                error_code: m.error_code,
            });
        }
        Ok(())
    }

    /// The contact read everything we sent them up to `watermark` (Messenger's read
    /// receipts name a time, not messages): those replies become `read`.
    pub fn provider_read(
        &self,
        caller: &Caller,
        channel: &Channel,
        contact_id: &str,
        watermark: time::OffsetDateTime,
    ) -> Result<()> {
        caller
            .require(Action::Converse)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant().clone();
        if channel.tenant_id != t {
            return Err(Error::NotFound("channel"));
        }
        let key = contact_key(&t, &channel.id, contact_id);
        let changed = self.store.write(|tx| -> Result<Vec<Message>> {
            let Some(r) = tx.index_get(Index::ChannelContact, &key)? else {
                return Ok(vec![]);
            };
            let Some((_, conv)) = split_ref(&r) else {
                return Ok(vec![]);
            };
            let Some(conversation) = tx.get::<Conversation>(&t, conv)? else {
                return Ok(vec![]);
            };
            let mut out = Vec::new();
            for mut m in tx.scan::<Message>(&t, Some(conv), |m| {
                matches!(m.role, MessageRole::Ai | MessageRole::Human)
                    && matches!(m.status, MessageStatus::Sent | MessageStatus::Delivered)
                    && m.created_at <= watermark
            })? {
                m.status = MessageStatus::Read;
                Self::put_message(tx, &conversation, &m)?;
                out.push(m);
            }
            Ok(out)
        })?;
        for m in changed {
            self.events.publish(Event::MessageStatus {
                tenant_id: t.clone(),
                conversation_id: m.conversation_id,
                message_id: m.id,
                status: m.status,
                error: None,
                error_code: None,
            });
        }
        Ok(())
    }

    /// A person sends a WhatsApp template in a WhatsApp conversation (allowed outside the
    /// 24-hour window): stored as a human message describing the template, `pending` until
    /// WhatsApp accepts it, sent through the outbox.
    pub fn post_template(
        &self,
        caller: &Caller,
        id: &ConversationId,
        template: Template,
    ) -> Result<Message> {
        caller
            .require_conversation(id, Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let mut c = super::Checks::default();
        let name_ok = !template.name.is_empty()
            && template.name.len() <= 512
            && template
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        c.check(
            name_ok,
            "name",
            "must be the template's name as approved (lower case letters, digits and _)",
        );
        let lang_ok = (2..=15).contains(&template.language.len())
            && template
                .language
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        c.check(lang_ok, "language", "must be a language code like en_US");
        c.check(
            template.parameters.len() <= 20,
            "parameters",
            "at most 20 parameters",
        );
        for (i, p) in template.parameters.iter().enumerate() {
            c.check(
                !p.trim().is_empty() && p.chars().count() <= 1024,
                &format!("parameters[{i}]"),
                "must be 1 to 1024 characters",
            );
        }
        c.finish()?;
        let t = caller.tenant().clone();
        let (msg, conv, before, job) = self.store.write(|tx| -> Result<_> {
            let mut conv = tx
                .get::<Conversation>(&t, id.as_str())?
                .ok_or(Error::NotFound("conversation"))?;
            let channel = match &conv.channel_id {
                Some(ch) => tx.get::<Channel>(&t, ch.as_str())?,
                None => None,
            };
            if channel.as_ref().map(|c| c.kind) != Some(ChannelKind::Whatsapp) {
                return Err(Error::Invalid(
                    "unsupported_channel_type",
                    "templates are sent only in conversations of a WhatsApp channel".into(),
                ));
            }
            let before = conv.clone();
            let params = if template.parameters.is_empty() {
                String::new()
            } else {
                format!(": {}", template.parameters.join(" | "))
            };
            let mut msg = Message {
                id: MessageId::new(),
                tenant_id: t.clone(),
                conversation_id: conv.id.clone(),
                role: MessageRole::Human,
                content: format!(
                    "[WhatsApp template {} ({})]{params}",
                    template.name, template.language
                ),
                citations: vec![],
                usage: None,
                status: MessageStatus::Pending,
                error: None,
                error_code: None,
                author_id: caller.user().cloned(),
                created_at: now(),
                seq: 0,
                client_id: None,
                attachments: vec![],
            };
            // A person writing takes the conversation over, as with any human reply.
            if conv.status != ConversationStatus::Closed {
                conv.mode = ConversationMode::Human;
                conv.status = ConversationStatus::Open;
                if conv.assignee_id.is_none() {
                    conv.assignee_id = caller.user().cloned();
                }
            }
            Self::append(tx, &mut conv, &mut msg)?;
            tx.put(&conv)?;
            let job = Self::queue_outbound_with(tx, &conv, &mut msg, Some(template.clone()))?;
            Ok((msg, conv, before, job))
        })?;
        self.events.publish(Event::MessageCreated {
            conversation: conv.clone(),
            message: msg.clone(),
        });
        if let Some(e) = Event::conversation_changed(&before, &conv) {
            self.events.publish(e);
        }
        if let Some(j) = &job {
            self.jobs.wake(j);
        }
        Ok(msg)
    }

    /// Where the media files of tenant `t` are kept: `<DATA_DIR>/media/<tenantId>`.
    pub(super) fn media_dir(&self, t: &TenantId) -> std::path::PathBuf {
        self.config.data_dir.join("media").join(t.as_str())
    }

    /// Where the media file `id` of tenant `t` is kept: `<DATA_DIR>/media/<tenantId>/<id>`.
    fn attachment_path(&self, t: &TenantId, id: &str) -> std::path::PathBuf {
        self.media_dir(t).join(id)
    }

    /// Inside the deletion of a channel: takes the attachments off the messages of its
    /// conversation `conv` (their text stays, and says what had arrived) and returns the
    /// ids of the files to remove once that is committed ([`remove_media`](Self::remove_media)).
    pub(super) fn take_conversation_media(
        tx: &WriteTx,
        t: &TenantId,
        conv: &ConversationId,
    ) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for mut m in tx.scan::<Message>(t, Some(conv.as_str()), |m| !m.attachments.is_empty())? {
            ids.extend(m.attachments.drain(..).map(|a| a.id));
            tx.put(&m)?;
        }
        Ok(ids)
    }

    /// Removes media files of tenant `t` that no message references any more (after the
    /// commit that took them off). A file that cannot be removed is logged: the channel's
    /// deletion stands.
    pub(super) fn remove_media(&self, t: &TenantId, ids: &[String]) {
        for id in ids {
            // Ids are hex digests (see `save_attachment`); anything else is no file of ours.
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
                continue;
            }
            let path = self.attachment_path(t, id);
            if let Err(e) = self.store.remove_stored(&path) {
                tracing::warn!(tenant = %t, path = %path.display(), error = %e, "could not remove a deleted channel's media file");
            }
        }
    }

    /// Stores a fetched media file (written aside, then renamed: a crash leaves no half
    /// file under the name). Ids are hex digests, never paths.
    pub fn save_attachment(&self, t: &TenantId, id: &str, bytes: &[u8]) -> Result<()> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Internal("an attachment id must be hex".into()));
        }
        let path = self.attachment_path(t, id);
        let io = |e: std::io::Error| Error::Internal(format!("storing media: {e}"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("part");
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }

    /// An attachment of a message, and where its file is, for staff reading the
    /// conversation (a foreign or missing id answers not found).
    pub fn attachment(
        &self,
        caller: &Caller,
        conv: &ConversationId,
        msg: &MessageId,
        id: &str,
    ) -> Result<(Attachment, std::path::PathBuf)> {
        caller
            .require_conversation(conv, Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant();
        let m = self.store.read(|tx| {
            if tx.get::<Conversation>(t, conv.as_str())?.is_none() {
                return Ok(Err(Error::NotFound("conversation")));
            }
            Ok(tx
                .get::<Message>(t, &format!("{conv}/{msg}"))?
                .ok_or(Error::NotFound("message")))
        })??;
        let a = m
            .attachments
            .into_iter()
            .find(|a| a.id == id)
            .ok_or(Error::NotFound("attachment"))?;
        let path = self.attachment_path(t, &a.id);
        Ok((a, path))
    }

    /// Keeps a webhook delivery addressed to a channel id no channel has (deleted, or a
    /// provider still pointed at an old URL) where platform admins can see it: at most
    /// [`UNROUTED_MAX`] of them, the oldest dropped first, each cut to
    /// [`UNROUTED_PAYLOAD_MAX`] bytes (nobody could verify it: it carries no tenant's
    /// secret). Called by the webhook routes before they answer 404.
    pub fn keep_unrouted(&self, provider: &str, channel: &ChannelId, body: &[u8]) -> Result<()> {
        let t = unrouted_tenant();
        let cut = body.len() > UNROUTED_PAYLOAD_MAX;
        let payload =
            String::from_utf8_lossy(&body[..body.len().min(UNROUTED_PAYLOAD_MAX)]).into_owned();
        let now = now();
        let ev = InboundEvent {
            id: InboundId::new(),
            tenant_id: t.clone(),
            channel_id: channel.clone(),
            external_id: provider.to_string(),
            payload,
            status: InboundStatus::DeadLetter,
            error: Some(format!(
                "no {provider} channel has this webhook (it was deleted, or the provider still uses an old URL); not verified{}",
                if cut {
                    "; the body was cut to 16 KiB"
                } else {
                    ""
                }
            )),
            received_at: now,
            updated_at: now,
            pending_parts: vec![],
        };
        self.store.write(|tx| -> Result<()> {
            tx.put(&ev)?;
            let mut all = tx.scan::<InboundEvent>(&t, None, |_| true)?;
            if all.len() > UNROUTED_MAX {
                all.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
                for old in &all[..all.len() - UNROUTED_MAX] {
                    tx.delete::<InboundEvent>(&t, &format!("{}/{}", old.channel_id, old.id))?;
                }
            }
            Ok(())
        })
    }

    /// Deliveries to unknown channels, for platform admins only.
    pub fn list_unrouted(&self, caller: &Caller, page: &PageReq) -> Result<Page<InboundEvent>> {
        if !caller.is_platform_admin() {
            return Err(Error::denied(Denied::Forbidden, "dead_letter"));
        }
        let t = unrouted_tenant();
        Ok(self.store.read(|tx| {
            tx.list_filtered::<InboundEvent>(
                &t,
                None,
                page.cursor.as_deref(),
                page.limit,
                false,
                |_| true,
            )
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::caller_tests::{Shop, named, shop};
    use crate::domain::channels::ChannelInput;

    #[test]
    fn a_channel_paused_or_deleted_while_its_job_runs_gets_no_conversation() {
        let Shop {
            s,
            tenant,
            admin,
            agent,
            dir: _dir,
        } = shop(named("Ava"));
        let channel = s
            .create_channel(
                &admin,
                ChannelInput {
                    kind: Some(ChannelKind::Telegram),
                    name: Some("Bot".into()),
                    agent_id: Some(agent.id.clone()),
                    bot_token: Some("123456:ABCdefGHIjklMNOpqrSTUvwx".into()),
                    ..Default::default()
                },
            )
            .expect("channel")
            .channel;
        // `channel` is what a running inbound job read before the admin acted.
        let webhook = Caller::channel_webhook(&channel);
        let customer = |id: &str| Customer {
            name: Some(id.into()),
            email: None,
            external_id: Some(id.into()),
        };
        let conversations = || {
            s.store
                .read(|tx| tx.scan::<Conversation>(&tenant.id, None, |_| true))
                .expect("read")
                .len()
        };
        s.contact_conversation(&webhook, &channel, "known", customer("known"))
            .expect("an active channel opens a conversation");
        assert_eq!(conversations(), 1);

        let pause = |status| {
            s.update_channel(
                &admin,
                &channel.id,
                ChannelInput {
                    status: Some(status),
                    ..Default::default()
                },
            )
            .expect("status changed")
        };
        pause(ChannelStatus::Paused);
        for contact in ["new", "known"] {
            let e = s
                .contact_conversation(&webhook, &channel, contact, customer(contact))
                .expect_err("paused meanwhile");
            assert!(
                matches!(e, Error::Forbidden("channel_paused", ref m) if m == CHANNEL_PAUSED),
                "{e:?}"
            );
        }
        assert_eq!(conversations(), 1, "nothing opened while paused");

        pause(ChannelStatus::Active);
        s.delete_channel(&admin, &channel.id).expect("deleted");
        for contact in ["new", "known"] {
            let e = s
                .contact_conversation(&webhook, &channel, contact, customer(contact))
                .expect_err("deleted meanwhile");
            assert!(matches!(e, Error::NotFound("channel")), "{e:?}");
        }
        assert_eq!(
            conversations(),
            1,
            "the inbox keeps the old conversation and gets no new one"
        );
    }
}
