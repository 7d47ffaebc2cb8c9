//! Conversations and messages: the inbox rules (AI or human mode, assignment, close and
//! reopen). Generating AI replies lives in agent/; this module stores what it decides.

use super::analytics::TurnStats;
use super::{Checks, Error, PageReq, Result, Services};
use crate::auth::{Action, Caller};
use crate::model::*;
use crate::store::{Page, WriteTx};
use crate::types::*;

pub const MAX_MESSAGE_CHARS: usize = 32_000;

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
}

impl Services {
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
        caller
            .require(Action::WorkConversations)
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
        self.store.write(|tx| {
            let agent = tx
                .get::<Agent>(&t, agent_id.as_str())?
                .ok_or(Error::NotFound("agent"))?;
            if let Some(ch) = channel_id
                && tx.get::<Channel>(&t, ch.as_str())?.is_none()
            {
                return Err(Error::NotFound("channel"));
            }
            let now = now();
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
            };
            tx.put(&conv)?;
            if let Some(g) = agent.greeting.as_deref().filter(|g| !g.trim().is_empty()) {
                let m = Message {
                    id: MessageId::new(),
                    tenant_id: t.clone(),
                    conversation_id: conv.id.clone(),
                    role: MessageRole::Ai,
                    content: g.to_string(),
                    citations: vec![],
                    usage: None,
                    status: MessageStatus::Sent,
                    error: None,
                    author_id: None,
                    created_at: now,
                };
                tx.put(&m)?;
                let mut conv = conv.clone();
                conv.message_count = 1;
                conv.last_message_at = Some(now);
                tx.put(&conv)?;
                return Ok(conv);
            }
            Ok(conv)
        })
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
        caller
            .require(Action::WorkConversations)
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

    /// Stores a customer or human message. A customer message reopens a closed conversation.
    pub fn post_message(
        &self,
        caller: &Caller,
        id: &ConversationId,
        role: MessageRole,
        content: &str,
    ) -> Result<Posted> {
        caller
            .require(Action::WorkConversations)
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
        c.finish()?;
        let t = caller.tenant().clone();
        self.store.write(|tx| {
            let mut conv = Self::load_conversation(tx, &t, id)?;
            let now = now();
            let msg = Message {
                id: MessageId::new(),
                tenant_id: t.clone(),
                conversation_id: conv.id.clone(),
                role,
                content: content.to_string(),
                citations: vec![],
                usage: None,
                status: MessageStatus::Sent,
                error: None,
                author_id: if role == MessageRole::Human {
                    caller.user().cloned()
                } else {
                    None
                },
                created_at: now,
            };
            tx.put(&msg)?;
            if role == MessageRole::Customer && conv.status == ConversationStatus::Closed {
                conv.status = if conv.mode == ConversationMode::Human {
                    ConversationStatus::PendingHuman
                } else {
                    ConversationStatus::Open
                };
                conv.closed_at = None;
            }
            conv.message_count += 1;
            conv.last_message_at = Some(now);
            tx.put(&conv)?;
            let needs_ai_reply = role == MessageRole::Customer
                && conv.mode == ConversationMode::Ai
                && tx
                    .get::<Agent>(&t, conv.agent_id.as_str())?
                    .is_some_and(|a| a.status == ActiveStatus::Active);
            Ok(Posted {
                message: msg,
                conversation: conv,
                needs_ai_reply,
            })
        })
    }

    /// Stores the agent's answer (or its failure) and, on handoff, moves the conversation
    /// to pending_human.
    pub fn record_ai_reply(
        &self,
        caller: &Caller,
        msg: &Message,
        handoff: Option<&str>,
        stats: &TurnStats,
    ) -> Result<Conversation> {
        caller
            .require_conversation(&msg.conversation_id, Action::RunAgent)
            .map_err(|d| Error::denied(d, "conversation"))?;
        if &msg.tenant_id != caller.tenant() {
            return Err(Error::NotFound("conversation"));
        }
        let tenant = caller.tenant();
        // One durable commit for the reply, the conversation and the turn's analytics: each
        // commit syncs the disk, and a turn used to make two of them here.
        self.store.write(|tx| {
            Self::put_turn(tx, tenant, stats)?;
            let mut conv = Self::load_conversation(tx, tenant, &msg.conversation_id)?;
            tx.put(msg)?;
            conv.message_count += 1;
            conv.last_message_at = Some(msg.created_at);
            if let Some(reason) = handoff {
                conv.status = ConversationStatus::PendingHuman;
                conv.mode = ConversationMode::Human;
                let note = Message {
                    id: MessageId::new(),
                    tenant_id: tenant.clone(),
                    conversation_id: conv.id.clone(),
                    role: MessageRole::System,
                    content: format!("Handed off to a person: {reason}"),
                    citations: vec![],
                    usage: None,
                    status: MessageStatus::Sent,
                    error: None,
                    author_id: None,
                    created_at: now(),
                };
                tx.put(&note)?;
                conv.message_count += 1;
            }
            tx.put(&conv)?;
            Ok(conv)
        })
    }

    /// What a turn of `conv` answering `msg` needs: the conversation's agent and the
    /// messages before `msg` (newest first, at most `limit`). `NotFound("agent")` when the
    /// agent is gone.
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
            let page = tx.list::<Message>(
                t,
                Some(conv.as_str()),
                Some(&format!("{conv}/{msg}")),
                limit,
                true,
            )?;
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
        self.store.write(|tx| {
            let mut conv = Self::load_conversation(tx, &t, id)?;
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
            let now = now();
            tx.put(&Message {
                id: MessageId::new(),
                tenant_id: t.clone(),
                conversation_id: conv.id.clone(),
                role: MessageRole::System,
                content: note,
                citations: vec![],
                usage: None,
                status: MessageStatus::Sent,
                error: None,
                author_id: caller.user().cloned(),
                created_at: now,
            })?;
            conv.message_count += 1;
            conv.last_message_at = Some(now);
            tx.put(&conv)?;
            Ok(conv)
        })
    }

    pub fn close_conversation(&self, caller: &Caller, id: &ConversationId) -> Result<Conversation> {
        caller
            .require(Action::WorkConversations)
            .map_err(|d| Error::denied(d, "conversation"))?;
        let t = caller.tenant().clone();
        self.store.write(|tx| {
            let mut conv = Self::load_conversation(tx, &t, id)?;
            if conv.status != ConversationStatus::Closed {
                conv.status = ConversationStatus::Closed;
                conv.closed_at = Some(now());
                tx.put(&conv)?;
            }
            Ok(conv)
        })
    }
}
