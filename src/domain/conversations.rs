//! Conversations and messages: the inbox rules (AI or human mode, assignment, close and
//! reopen). Generating AI replies lives in agent/; this module stores what it decides.
//! A customer message that needs an answer is committed together with its turn job (the
//! durable queue runs it, one turn per conversation at a time); every write publishes its
//! events after commit.

use super::analytics::TurnStats;
use super::{Checks, Error, PageReq, Result, Services};
use crate::analytics::Deltas;
use crate::auth::{Action, Caller, Denied};
use crate::events::Event;
use crate::jobs::Jobs;
use crate::model::*;
use crate::store::{Index, Page, WriteTx, make_ref, split_ref};
use crate::types::*;

pub const MAX_MESSAGE_CHARS: usize = 32_000;

/// Longest accepted `clientId` (a sender's idempotency key).
pub const MAX_CLIENT_ID_CHARS: usize = 64;

/// The job kind of an AI turn answering one customer message.
pub const JOB_TURN: &str = "turn";

/// What a turn job answers (its payload). After the answer is stored, the job also records
/// which message answered and how long the provider took, in the same commit as the answer:
/// a retried job finds it and does not answer twice.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnPayload {
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_id: Option<MessageId>,
    #[serde(default)]
    pub upstream_us: u64,
}

impl TurnPayload {
    /// The payload of a turn job; `None` when it is not one.
    pub fn of(job: &Job) -> Option<TurnPayload> {
        serde_json::from_value(job.payload.clone()).ok()
    }
}

/// What a turn job has to do.
#[derive(Debug)]
pub enum TurnToRun {
    /// Answer this customer message of this conversation.
    Answer {
        conversation: Box<Conversation>,
        message: Box<Message>,
    },
    /// Nothing to answer, and why (for the log).
    Skip(&'static str),
}

/// The turn job that stores an answer, with the provider time to record on it.
#[derive(Debug, Clone)]
pub struct AnswerOf {
    pub job: JobId,
    pub upstream_us: u64,
}

#[derive(Debug, Default, Clone)]
pub struct ConversationFilter {
    pub status: Option<ConversationStatus>,
    pub agent_id: Option<AgentId>,
    pub channel_id: Option<ChannelId>,
    pub assignee_id: Option<UserId>,
}

/// Who takes over a conversation.
#[derive(Debug, Clone)]
pub enum AssignTo {
    User(UserId),
    Agent(AgentId),
}

/// The outcome of storing an incoming message.
#[derive(Debug, Clone)]
pub struct Posted {
    pub message: Message,
    pub conversation: Conversation,
    /// The agent must answer: a customer message in AI mode with an active agent.
    pub needs_ai_reply: bool,
    /// The queued turn job that will answer (when `needs_ai_reply`).
    pub turn_job: Option<JobId>,
    /// The `clientId` was already used in the conversation: `message` is the one stored
    /// then, and nothing was written now.
    pub duplicate: bool,
}

/// Messages committed after a point, in commit order.
#[derive(Debug, Clone)]
pub struct MessagesSince {
    pub conversation: Conversation,
    pub messages: Vec<Message>,
    /// More messages follow the last one (ask again from it).
    pub more: bool,
}

/// What marking a conversation read changed.
#[derive(Debug, Clone)]
pub enum ReadOutcome {
    /// A team member's read mark; messages after it.
    Staff { unread_count: u64 },
    /// A visitor read up to a message: the team's messages now `read`.
    Customer { now_read: Vec<MessageId> },
}

/// Where a replay starts.
#[derive(Clone, Copy)]
enum Since<'a> {
    /// After this message.
    Message(&'a MessageId),
    /// After the message numbered this (0: from the first).
    Seq(u64),
}

/// The index key of a sender's idempotency key in a conversation.
fn client_key(t: &TenantId, conv: &ConversationId, client_id: &str) -> String {
    format!("{t}/{conv}/{client_id}")
}

impl Services {
    /// Stores `msg` as the next message of `conv`: numbers it (`seq`, commit order: this
    /// runs inside the write transaction, and redb serialises writers), counts it, and
    /// records its `clientId`. The caller stores `conv` afterwards.
    pub(super) fn append(tx: &WriteTx, conv: &mut Conversation, msg: &mut Message) -> Result<()> {
        let mut d = Deltas::default();
        Self::append_into(tx, conv, msg, &mut d)?;
        Self::apply_deltas(tx, &conv.tenant_id, d)
    }

    /// [`append`](Self::append) adding the message's rollup changes to `d`, for a commit
    /// that applies the changes of all its writes once.
    fn append_into(
        tx: &WriteTx,
        conv: &mut Conversation,
        msg: &mut Message,
        d: &mut Deltas,
    ) -> Result<()> {
        conv.last_seq += 1;
        msg.seq = conv.last_seq;
        conv.message_count += 1;
        conv.last_message_at = Some(msg.created_at);
        Self::put_message_into(tx, conv, msg, d)?;
        if let Some(c) = &msg.client_id {
            let value = make_ref(&conv.tenant_id, &format!("{}/{}", conv.id, msg.id));
            tx.index_insert_new(
                Index::MessageClientId,
                &client_key(&conv.tenant_id, &conv.id, c),
                &value,
            )?;
        }
        Ok(())
    }

    fn load_conversation(tx: &WriteTx, t: &TenantId, id: &ConversationId) -> Result<Conversation> {
        tx.get::<Conversation>(t, id.as_str())?
            .ok_or(Error::NotFound("conversation"))
    }

    pub fn create_conversation(
        &self,
        caller: &Caller,
        agent_id: &AgentId,
        channel_id: Option<&ChannelId>,
        customer: Customer,
    ) -> Result<Conversation> {
        // The inbox and channels open conversations; a widget visitor has its one already.
        if caller.is_visitor() {
            return Err(Error::denied(Denied::Forbidden, "conversation"));
        }
        caller
            .require(Action::Converse)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let mut c = Checks::default();
        for (f, v, max) in [
            ("customer.name", &customer.name, 200),
            ("customer.email", &customer.email, 254),
            ("customer.externalId", &customer.external_id, 200),
        ] {
            if let Some(v) = v {
                c.check(v.chars().count() <= max, f, "is too long");
            }
        }
        c.finish()?;
        let t = caller.tenant().clone();
        let (conv, greeting) = self.store.write(|tx| -> Result<_> {
            let agent = tx
                .get::<Agent>(&t, agent_id.as_str())?
                .ok_or(Error::NotFound("agent"))?;
            if let Some(ch) = channel_id
                && tx.get::<Channel>(&t, ch.as_str())?.is_none()
            {
                return Err(Error::NotFound("channel"));
            }
            let now = self.clock.now();
            let conv = Conversation {
                id: ConversationId::new(),
                tenant_id: t.clone(),
                agent_id: agent.id.clone(),
                channel_id: channel_id.cloned(),
                customer,
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
            let mut d = Deltas::default();
            Self::put_conversation_into(tx, &conv, &mut d)?;
            if let Some(g) = agent.greeting.as_deref().filter(|g| !g.trim().is_empty()) {
                let mut m = Message {
                    id: MessageId::new(),
                    tenant_id: t.clone(),
                    conversation_id: conv.id.clone(),
                    role: MessageRole::Ai,
                    content: g.to_string(),
                    citations: vec![],
                    usage: None,
                    status: MessageStatus::Sent,
                    error: None,
                    error_code: None,
                    author_id: None,
                    created_at: now,
                    seq: 0,
                    client_id: None,
                    attachments: vec![],
                };
                let mut conv = conv.clone();
                Self::append_into(tx, &mut conv, &mut m, &mut d)?;
                Self::put_conversation_into(tx, &conv, &mut d)?;
                Self::apply_deltas(tx, &t, d)?;
                return Ok((conv, Some(m)));
            }
            Self::apply_deltas(tx, &t, d)?;
            Ok((conv, None))
        })?;
        self.events.publish(Event::ConversationCreated {
            conversation: conv.clone(),
        });
        if let Some(message) = greeting {
            self.events.publish(Event::MessageCreated {
                conversation: conv.clone(),
                message,
            });
        }
        Ok(conv)
    }

    /// Newest first.
    pub fn list_conversations(
        &self,
        caller: &Caller,
        f: &ConversationFilter,
        page: &PageReq,
    ) -> Result<Page<Conversation>> {
        caller
            .require(Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        Ok(self.store.read(|tx| {
            tx.list_filtered::<Conversation>(
                caller.tenant(),
                None,
                page.cursor.as_deref(),
                page.limit,
                true,
                |c| {
                    f.status.is_none_or(|s| c.status == s)
                        && f.agent_id.as_ref().is_none_or(|a| &c.agent_id == a)
                        && f.channel_id
                            .as_ref()
                            .is_none_or(|ch| c.channel_id.as_ref() == Some(ch))
                        && f.assignee_id
                            .as_ref()
                            .is_none_or(|u| c.assignee_id.as_ref() == Some(u))
                },
            )
        })?)
    }

    pub fn get_conversation(&self, caller: &Caller, id: &ConversationId) -> Result<Conversation> {
        caller
            .require(Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        self.store
            .read(|tx| tx.get::<Conversation>(caller.tenant(), id.as_str()))?
            .ok_or(Error::NotFound("conversation"))
    }

    /// A page of messages, newest first; `cursor` pages towards older messages.
    pub fn list_messages(
        &self,
        caller: &Caller,
        id: &ConversationId,
        page: &PageReq,
    ) -> Result<Page<Message>> {
        // A widget visitor reads its own conversation; everyone else works the inbox.
        let action = if caller.is_visitor() {
            Action::Converse
        } else {
            Action::WorkConversations
        };
        caller
            .require_conversation(id, action)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant();
        let page = self.store.read(|tx| {
            if tx.get::<Conversation>(t, id.as_str())?.is_none() {
                return Ok(None);
            }
            // Cursors are message ids; keys are `conversationId/messageId`.
            let after = page.cursor.as_ref().map(|c| format!("{id}/{c}"));
            let p = tx.list::<Message>(t, Some(id.as_str()), after.as_deref(), page.limit, true)?;
            let next = p
                .next
                .and_then(|k| k.rsplit('/').next().map(str::to_string));
            Ok(Some(Page {
                items: p.items,
                next,
            }))
        })?;
        page.ok_or(Error::NotFound("conversation"))
    }

    /// The conversation and its messages committed after `since` (from the first when
    /// `None`), in commit order, at most `limit` of them: what a client that reconnects
    /// missed. `since` must be a message of this conversation.
    pub fn messages_since(
        &self,
        caller: &Caller,
        id: &ConversationId,
        since: Option<&MessageId>,
        limit: usize,
    ) -> Result<MessagesSince> {
        self.read_since(
            caller,
            id,
            since.map_or(Since::Seq(0), Since::Message),
            limit,
        )
    }

    /// [`messages_since`](Self::messages_since) after the message numbered `seq` (a live
    /// subscriber refilling a gap from what it last delivered).
    pub fn messages_after_seq(
        &self,
        caller: &Caller,
        id: &ConversationId,
        seq: u64,
        limit: usize,
    ) -> Result<MessagesSince> {
        self.read_since(caller, id, Since::Seq(seq), limit)
    }

    fn read_since(
        &self,
        caller: &Caller,
        id: &ConversationId,
        since: Since<'_>,
        limit: usize,
    ) -> Result<MessagesSince> {
        let action = if caller.is_visitor() {
            Action::Converse
        } else {
            Action::WorkConversations
        };
        caller
            .require_conversation(id, action)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant();
        let limit = limit.max(1);
        let found = self.store.read(|tx| {
            let Some(conversation) = tx.get::<Conversation>(t, id.as_str())? else {
                return Ok(None);
            };
            let after = match since {
                Since::Seq(n) => n,
                Since::Message(m) => match tx.get::<Message>(t, &format!("{id}/{m}"))? {
                    Some(m) => m.seq,
                    None => return Ok(Some(Err(()))),
                },
            };
            // Caught up (the common reconnect): nothing to read.
            if after >= conversation.last_seq {
                return Ok(Some(Ok(MessagesSince {
                    conversation,
                    messages: vec![],
                    more: false,
                })));
            }
            // Keys are in id order, not commit order: read the range and sort.
            let mut messages =
                tx.scan::<Message>(t, Some(id.as_str()), |m: &Message| m.seq > after)?;
            messages.sort_by_key(|m| m.seq);
            let more = messages.len() > limit;
            messages.truncate(limit);
            Ok(Some(Ok(MessagesSince {
                conversation,
                messages,
                more,
            })))
        })?;
        match found {
            None => Err(Error::NotFound("conversation")),
            Some(Err(())) => Err(Error::Validation(vec![super::FieldError {
                field: "sinceMessageId".into(),
                message: "is not a message of this conversation".into(),
            }])),
            Some(Ok(r)) => Ok(r),
        }
    }

    /// Marks conversation `id` read up to `message`. A team member (or an API key, for its
    /// creator) moves their read mark (never backwards) and learns how many messages are
    /// after it; a widget visitor's read receipt turns the team's and the AI's messages up
    /// to it `read` (published as `message:status`).
    pub fn mark_read(
        &self,
        caller: &Caller,
        id: &ConversationId,
        message: &MessageId,
    ) -> Result<ReadOutcome> {
        let visitor = caller.is_visitor();
        let action = if visitor {
            Action::Converse
        } else {
            Action::WorkConversations
        };
        caller
            .require_conversation(id, action)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let user = caller.user().cloned();
        if !visitor && user.is_none() {
            return Err(Error::denied(Denied::Forbidden, "conversation"));
        }
        let t = caller.tenant().clone();
        let not_here = || {
            Error::Validation(vec![super::FieldError {
                field: "messageId".into(),
                message: "is not a message of this conversation".into(),
            }])
        };
        let (outcome, changed) = self.store.write(|tx| -> Result<_> {
            let conv = Self::load_conversation(tx, &t, id)?;
            let target = tx
                .get::<Message>(&t, &format!("{id}/{message}"))?
                .ok_or_else(not_here)?;
            if let Some(u) = user.filter(|_| !visitor) {
                let key = format!("{id}/{u}");
                let mut mark = tx.get::<ReadMark>(&t, &key)?.unwrap_or(ReadMark {
                    tenant_id: t.clone(),
                    conversation_id: id.clone(),
                    user_id: u,
                    seq: 0,
                    updated_at: now(),
                });
                if target.seq > mark.seq {
                    mark.seq = target.seq;
                    mark.updated_at = now();
                    tx.put(&mark)?;
                }
                let unread_count = conv.last_seq.saturating_sub(mark.seq);
                return Ok((ReadOutcome::Staff { unread_count }, vec![]));
            }
            let mut changed = Vec::new();
            let mut unread = tx.scan::<Message>(&t, Some(id.as_str()), |m: &Message| {
                m.seq <= target.seq
                    && matches!(m.role, MessageRole::Ai | MessageRole::Human)
                    && matches!(m.status, MessageStatus::Sent | MessageStatus::Delivered)
            })?;
            unread.sort_by_key(|m| m.seq);
            let mut d = Deltas::default();
            for mut m in unread {
                m.status = MessageStatus::Read;
                Self::put_message_into(tx, &conv, &m, &mut d)?;
                changed.push(m.id);
            }
            Self::apply_deltas(tx, &t, d)?;
            Ok((
                ReadOutcome::Customer {
                    now_read: changed.clone(),
                },
                changed,
            ))
        })?;
        for message_id in changed {
            self.events.publish(Event::MessageStatus {
                tenant_id: t.clone(),
                conversation_id: id.clone(),
                message_id,
                status: MessageStatus::Read,
                error: None,
                error_code: None,
            });
        }
        Ok(outcome)
    }

    /// Messages after the caller's read mark in each of `conversations` (people and API
    /// keys; empty for other callers).
    pub fn unread_counts(
        &self,
        caller: &Caller,
        conversations: &[Conversation],
    ) -> Result<std::collections::HashMap<ConversationId, u64>> {
        caller
            .require(Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let Some(u) = caller.user() else {
            return Ok(Default::default());
        };
        let t = caller.tenant();
        Ok(self.store.read(|tx| {
            let mut out = std::collections::HashMap::new();
            for c in conversations.iter().filter(|c| &c.tenant_id == t) {
                let read = tx
                    .get::<ReadMark>(t, &format!("{}/{u}", c.id))?
                    .map_or(0, |m| m.seq);
                out.insert(c.id.clone(), c.last_seq.saturating_sub(read));
            }
            Ok(out)
        })?)
    }

    /// Stores a customer or human message. A customer message reopens a closed conversation.
    /// With `client_id`, a resend is idempotent: when a message with that key is already
    /// stored in the conversation, it is returned (`duplicate`) and nothing is written, no
    /// event published and no second turn queued.
    pub fn post_message(
        &self,
        caller: &Caller,
        id: &ConversationId,
        role: MessageRole,
        content: &str,
        client_id: Option<&str>,
    ) -> Result<Posted> {
        self.post_message_with(caller, id, role, content, client_id, &[])
    }

    /// [`post_message`](Self::post_message) with the media a channel message brought
    /// (already stored in the data directory).
    pub fn post_message_with(
        &self,
        caller: &Caller,
        id: &ConversationId,
        role: MessageRole,
        content: &str,
        client_id: Option<&str>,
        attachments: &[Attachment],
    ) -> Result<Posted> {
        // The customer side (channels, visitors in their conversation, and staff) posts
        // customer messages; only people and keys working the inbox answer as a human.
        let action = if role == MessageRole::Customer {
            Action::Converse
        } else {
            Action::WorkConversations
        };
        caller
            .require_conversation(id, action)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let mut c = Checks::default();
        c.check(!content.trim().is_empty(), "content", "must not be empty");
        c.check(
            content.chars().count() <= MAX_MESSAGE_CHARS,
            "content",
            "is too long (32000 characters max)",
        );
        c.check(
            matches!(role, MessageRole::Customer | MessageRole::Human),
            "role",
            "must be customer or human",
        );
        if let Some(k) = client_id {
            c.check(
                !k.is_empty() && k.chars().count() <= MAX_CLIENT_ID_CHARS,
                "clientId",
                "must be 1 to 64 characters",
            );
        }
        c.finish()?;
        let t = caller.tenant().clone();
        let (posted, before, job) = self.store.write(|tx| -> Result<_> {
            let mut conv = Self::load_conversation(tx, &t, id)?;
            if let Some(k) = client_id
                && let Some(r) = tx.index_get(Index::MessageClientId, &client_key(&t, id, k))?
                && let Some((_, key)) = split_ref(&r)
                && let Some(message) = tx.get::<Message>(&t, key)?
            {
                let posted = Posted {
                    message,
                    conversation: conv.clone(),
                    needs_ai_reply: false,
                    turn_job: None,
                    duplicate: true,
                };
                return Ok((posted, conv, (None, None)));
            }
            let before = conv.clone();
            let now = self.clock.now();
            let mut msg = Message {
                id: MessageId::new(),
                tenant_id: t.clone(),
                conversation_id: conv.id.clone(),
                role,
                content: content.to_string(),
                citations: vec![],
                usage: None,
                status: MessageStatus::Sent,
                error: None,
                error_code: None,
                author_id: if role == MessageRole::Human {
                    caller.user().cloned()
                } else {
                    None
                },
                created_at: now,
                seq: 0,
                client_id: client_id.map(str::to_string),
                attachments: attachments.to_vec(),
            };
            if role == MessageRole::Customer && conv.status == ConversationStatus::Closed {
                conv.status = if conv.mode == ConversationMode::Human {
                    ConversationStatus::PendingHuman
                } else {
                    ConversationStatus::Open
                };
                conv.closed_at = None;
            }
            // A person answering takes the conversation over: the AI stops answering (it
            // would talk over them), and it is theirs unless someone already has it.
            if role == MessageRole::Human && conv.status != ConversationStatus::Closed {
                conv.mode = ConversationMode::Human;
                conv.status = ConversationStatus::Open;
                if conv.assignee_id.is_none() {
                    conv.assignee_id = caller.user().cloned();
                }
            }
            let mut d = Deltas::default();
            Self::append_into(tx, &mut conv, &mut msg, &mut d)?;
            Self::put_conversation_into(tx, &conv, &mut d)?;
            Self::apply_deltas(tx, &t, d)?;
            // Whoever answers has read the conversation up to their answer.
            if role == MessageRole::Human
                && let Some(u) = caller.user()
            {
                tx.put(&ReadMark {
                    tenant_id: t.clone(),
                    conversation_id: conv.id.clone(),
                    user_id: u.clone(),
                    seq: msg.seq,
                    updated_at: now,
                })?;
            }
            // A person's reply in a messaging channel leaves through the outbox, committed
            // with it.
            let outbound = Self::queue_outbound(tx, &conv, &mut msg)?;
            let needs_ai_reply = role == MessageRole::Customer
                && conv.mode == ConversationMode::Ai
                && tx
                    .get::<Agent>(&t, conv.agent_id.as_str())?
                    .is_some_and(|a| a.status == ActiveStatus::Active);
            // The turn is committed with the message: an acknowledged message is answered
            // even if the server stops before the answer.
            let job = if needs_ai_reply {
                let payload = TurnPayload {
                    conversation_id: conv.id.clone(),
                    message_id: msg.id.clone(),
                    reply_id: None,
                    upstream_us: 0,
                };
                Some(Jobs::enqueue_serial_in(
                    tx,
                    &t,
                    JOB_TURN,
                    serde_json::to_value(&payload).map_err(|e| Error::Internal(e.to_string()))?,
                    Some(format!("conversation:{}", conv.id)),
                )?)
            } else {
                None
            };
            Ok((
                Posted {
                    message: msg,
                    conversation: conv,
                    needs_ai_reply,
                    turn_job: job.as_ref().map(|j| j.id.clone()),
                    duplicate: false,
                },
                before,
                (job, outbound),
            ))
        })?;
        if posted.duplicate {
            return Ok(posted);
        }
        let (job, outbound) = job;
        self.events.publish(Event::MessageCreated {
            conversation: posted.conversation.clone(),
            message: posted.message.clone(),
        });
        if let Some(e) = Event::conversation_changed(&before, &posted.conversation) {
            self.events.publish(e);
        }
        for j in job.iter().chain(outbound.iter()) {
            self.jobs.wake(j);
        }
        Ok(posted)
    }

    /// What the turn job `job` (answering `p`) has to do: nothing when an earlier attempt
    /// already answered, the message or conversation is gone, or a person took over.
    pub fn turn_to_run(&self, caller: &Caller, job: &JobId, p: &TurnPayload) -> Result<TurnToRun> {
        caller
            .require(Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant();
        Ok(self.store.read(|tx| {
            let answered = tx
                .get::<Job>(t, job.as_str())?
                .as_ref()
                .and_then(TurnPayload::of)
                .is_some_and(|c| c.reply_id.is_some());
            if answered {
                return Ok(TurnToRun::Skip("already answered by an earlier attempt"));
            }
            let Some(conversation) = tx.get::<Conversation>(t, p.conversation_id.as_str())? else {
                return Ok(TurnToRun::Skip("the conversation was deleted"));
            };
            let key = format!("{}/{}", p.conversation_id, p.message_id);
            let Some(message) = tx.get::<Message>(t, &key)? else {
                return Ok(TurnToRun::Skip("the message was deleted"));
            };
            if conversation.mode == ConversationMode::Human {
                return Ok(TurnToRun::Skip("a person took the conversation"));
            }
            Ok(TurnToRun::Answer {
                conversation: Box::new(conversation),
                message: Box::new(message),
            })
        })?)
    }

    /// The answer a finished turn job stored, with the provider time of the turn; `None`
    /// when the turn stored no answer (a person took over, the conversation was deleted).
    pub fn turn_answer(&self, caller: &Caller, job: &JobId) -> Result<Option<(Message, u64)>> {
        caller
            .require(Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant();
        Ok(self.store.read(|tx| {
            let Some(p) = tx
                .get::<Job>(t, job.as_str())?
                .filter(|j| j.kind == JOB_TURN)
                .as_ref()
                .and_then(TurnPayload::of)
            else {
                return Ok(None);
            };
            let Some(reply) = &p.reply_id else {
                return Ok(None);
            };
            let key = format!("{}/{}", p.conversation_id, reply);
            Ok(tx.get::<Message>(t, &key)?.map(|m| (m, p.upstream_us)))
        })?)
    }

    /// Stores the agent's answer (or its failure) and, on handoff, moves the conversation
    /// to pending_human. With `of`, the answer is recorded on its turn job in the same
    /// commit, and nothing is stored (`Ok(None)`) when that job already has an answer: a
    /// retried turn never answers twice.
    pub fn record_ai_reply(
        &self,
        caller: &Caller,
        msg: &Message,
        handoff: Option<&str>,
        stats: &TurnStats,
        of: Option<&AnswerOf>,
    ) -> Result<Option<Conversation>> {
        caller
            .require_conversation(&msg.conversation_id, Action::RunAgent)
            .map_err(|d| Error::denied(d, "conversation"))?;
        if &msg.tenant_id != caller.tenant() {
            return Err(Error::NotFound("conversation"));
        }
        let tenant = caller.tenant();
        // One durable commit for the reply, the conversation and the turn's analytics: each
        // commit syncs the disk, and a turn used to make two of them here.
        let stored = self.store.write(|tx| -> Result<_> {
            if let Some(of) = of
                && !Self::mark_answered(tx, tenant, of, &msg.id)?
            {
                return Ok(None);
            }
            // The rollup changes of the turn, its reply, a handoff note and the
            // conversation touch the same hour keys: applied once, at the end.
            let mut d = Deltas::default();
            self.put_turn_into(tx, caller, stats, &mut d)?;
            let mut conv = Self::load_conversation(tx, tenant, &msg.conversation_id)?;
            let before = conv.clone();
            let mut msg = msg.clone();
            Self::append_into(tx, &mut conv, &mut msg, &mut d)?;
            // The answer leaves through the channel's outbox, committed with it.
            let outbound = Self::queue_outbound(tx, &conv, &mut msg)?;
            let mut handoff_note = None;
            if let Some(reason) = handoff {
                conv.status = ConversationStatus::PendingHuman;
                conv.mode = ConversationMode::Human;
                let mut note = Message {
                    id: MessageId::new(),
                    tenant_id: tenant.clone(),
                    conversation_id: conv.id.clone(),
                    role: MessageRole::System,
                    content: format!("Handed off to a person: {reason}"),
                    citations: vec![],
                    usage: None,
                    status: MessageStatus::Sent,
                    error: None,
                    error_code: None,
                    author_id: None,
                    created_at: self.clock.now(),
                    seq: 0,
                    client_id: None,
                    attachments: vec![],
                };
                let at = conv.last_message_at;
                Self::append_into(tx, &mut conv, &mut note, &mut d)?;
                // The answer's time stays the conversation's last message time.
                conv.last_message_at = at;
                handoff_note = Some(note);
            }
            Self::put_conversation_into(tx, &conv, &mut d)?;
            Self::apply_deltas(tx, tenant, d)?;
            Ok(Some((conv, before, msg, handoff_note, outbound)))
        })?;
        let Some((conv, before, msg, note, outbound)) = stored else {
            return Ok(None);
        };
        if let Some(j) = &outbound {
            self.jobs.wake(j);
        }
        for message in std::iter::once(msg).chain(note) {
            self.events.publish(Event::MessageCreated {
                conversation: conv.clone(),
                message,
            });
        }
        if let Some(e) = Event::conversation_changed(&before, &conv) {
            self.events.publish(e);
        }
        Ok(Some(conv))
    }

    /// Records `reply` as the answer of the turn job; false when it already has one.
    fn mark_answered(tx: &WriteTx, t: &TenantId, of: &AnswerOf, reply: &MessageId) -> Result<bool> {
        let Some(mut job) = tx.get::<Job>(t, of.job.as_str())? else {
            return Ok(true);
        };
        let Some(mut p) = TurnPayload::of(&job) else {
            return Ok(true);
        };
        if p.reply_id.is_some() {
            return Ok(false);
        }
        p.reply_id = Some(reply.clone());
        p.upstream_us = of.upstream_us;
        job.payload = serde_json::to_value(&p).map_err(|e| Error::Internal(e.to_string()))?;
        tx.put(&job)?;
        Ok(true)
    }

    /// What a turn of `conv` answering `msg` needs: the conversation's agent and its
    /// history (newest first, at most `limit`). `NotFound("agent")` when the agent is gone.
    ///
    /// The history is every message committed in the conversation when the turn starts,
    /// except `msg` itself and customer messages after it (those get their own turns).
    /// Ordering by id alone is not enough: when two customer messages are queued back to
    /// back, the answer to the first is committed after the second arrived, and the turn
    /// answering the second must still see it (turns of a conversation run in order).
    pub fn turn_context(
        &self,
        caller: &Caller,
        conv: &ConversationId,
        agent: &AgentId,
        msg: &MessageId,
        limit: usize,
    ) -> Result<(Agent, Vec<Message>)> {
        caller
            .require_conversation(conv, Action::RunAgent)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant();
        let (agent, page) = self.store.read(|tx| {
            let agent = tx.get::<Agent>(t, agent.as_str())?;
            let page =
                tx.list_filtered::<Message>(t, Some(conv.as_str()), None, limit, true, |m| {
                    m.id != *msg && !(m.role == MessageRole::Customer && m.id > *msg)
                })?;
            Ok((agent, page.items))
        })?;
        Ok((agent.ok_or(Error::NotFound("agent"))?, page))
    }

    pub fn assign_conversation(
        &self,
        caller: &Caller,
        id: &ConversationId,
        to: AssignTo,
    ) -> Result<Conversation> {
        caller
            .require(Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant().clone();
        let (conv, before, note) = self.store.write(|tx| -> Result<_> {
            let mut conv = Self::load_conversation(tx, &t, id)?;
            let before = conv.clone();
            let note = match &to {
                AssignTo::User(u) => {
                    let user = tx
                        .get::<User>(&t, u.as_str())?
                        .ok_or(Error::NotFound("user"))?;
                    conv.mode = ConversationMode::Human;
                    conv.assignee_id = Some(user.id.clone());
                    format!("Assigned to {}", user.name)
                }
                AssignTo::Agent(a) => {
                    let agent = tx
                        .get::<Agent>(&t, a.as_str())?
                        .ok_or(Error::NotFound("agent"))?;
                    conv.mode = ConversationMode::Ai;
                    conv.agent_id = agent.id.clone();
                    conv.assignee_id = None;
                    format!("Handed back to the AI agent {}", agent.name)
                }
            };
            if conv.status != ConversationStatus::Closed {
                conv.status = ConversationStatus::Open;
            }
            let now = self.clock.now();
            let mut note = Message {
                id: MessageId::new(),
                tenant_id: t.clone(),
                conversation_id: conv.id.clone(),
                role: MessageRole::System,
                content: note,
                citations: vec![],
                usage: None,
                status: MessageStatus::Sent,
                error: None,
                error_code: None,
                author_id: caller.user().cloned(),
                created_at: now,
                seq: 0,
                client_id: None,
                attachments: vec![],
            };
            let mut d = Deltas::default();
            Self::append_into(tx, &mut conv, &mut note, &mut d)?;
            Self::put_conversation_into(tx, &conv, &mut d)?;
            Self::apply_deltas(tx, &t, d)?;
            Ok((conv, before, note))
        })?;
        self.events.publish(Event::MessageCreated {
            conversation: conv.clone(),
            message: note,
        });
        if let Some(e) = Event::conversation_changed(&before, &conv) {
            self.events.publish(e);
        }
        Ok(conv)
    }

    pub fn close_conversation(&self, caller: &Caller, id: &ConversationId) -> Result<Conversation> {
        caller
            .require(Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant().clone();
        let (conv, before) = self.store.write(|tx| -> Result<_> {
            let mut conv = Self::load_conversation(tx, &t, id)?;
            let before = conv.clone();
            if conv.status != ConversationStatus::Closed {
                conv.status = ConversationStatus::Closed;
                conv.closed_at = Some(self.clock.now());
                Self::put_conversation(tx, &conv)?;
            }
            Ok((conv, before))
        })?;
        if let Some(e) = Event::conversation_changed(&before, &conv) {
            self.events.publish(e);
        }
        Ok(conv)
    }
}
