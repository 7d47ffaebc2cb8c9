//! Running a turn for a conversation: history from the store, the answer (or the failure)
//! stored as a message, analytics recorded. Shared by the inbox API and the channels.

use super::{Engine, Turn, TurnError, TurnResult};
use crate::domain::analytics::{Outcome, TurnStats};
use crate::llm::ChatMessage;
use crate::model::*;
use crate::types::*;

/// Most earlier messages loaded for a turn; the token budget trims further.
pub const HISTORY_MESSAGES: usize = 100;

/// Earlier messages of a conversation (before `before`), oldest first, as chat messages.
pub fn history_of(msgs: &[Message]) -> Vec<ChatMessage> {
    msgs.iter()
        .filter(|m| m.status != MessageStatus::Failed && !m.content.trim().is_empty())
        .filter_map(|m| match m.role {
            MessageRole::Customer => Some(ChatMessage::user(m.content.clone())),
            MessageRole::Ai | MessageRole::Human => Some(ChatMessage::assistant(m.content.clone())),
            MessageRole::System => None,
        })
        .collect()
}

pub fn outcome_of(r: &TurnResult, fallback: Option<&str>) -> Outcome {
    if r.handoff.is_some() {
        Outcome::Handoff
    } else if r.no_sources || fallback.is_some_and(|f| r.reply.trim() == f.trim()) {
        Outcome::Fallback
    } else {
        Outcome::Answered
    }
}

impl Engine {
    /// Answers the customer message `msg` of a conversation and stores the reply (or a
    /// failed message with the reason). Never returns an error: failures become messages.
    pub async fn answer_in_conversation(&self, conv: &Conversation, msg: &Message) -> Message {
        let tenant = conv.tenant_id.clone();
        let svc = self.svc.clone();
        let (t2, cid, aid, mid) = (
            tenant.clone(),
            conv.id.clone(),
            conv.agent_id.clone(),
            msg.id.clone(),
        );
        let loaded = tokio::task::spawn_blocking(move || {
            svc.store.read(|tx| {
                let agent = tx.get::<Agent>(&t2, aid.as_str())?;
                let page = tx.list::<Message>(
                    &t2,
                    Some(cid.as_str()),
                    Some(&format!("{cid}/{mid}")),
                    HISTORY_MESSAGES,
                    true,
                )?;
                Ok((agent, page.items))
            })
        })
        .await;
        let (agent, mut earlier) = match loaded {
            Ok(Ok((Some(a), items))) => (a, items),
            _ => {
                return self
                    .store_failure(
                        conv,
                        "the conversation's agent no longer exists".into(),
                        String::new(),
                        0,
                        None,
                    )
                    .await;
            }
        };
        earlier.reverse();
        let turn = Turn {
            tenant: tenant.clone(),
            agent: agent.clone(),
            history: history_of(&earlier),
            message: msg.content.clone(),
        };
        match self.run(turn, None).await {
            Ok(r) => {
                let reply = Message {
                    id: MessageId::new(),
                    tenant_id: tenant.clone(),
                    conversation_id: conv.id.clone(),
                    role: MessageRole::Ai,
                    content: r.reply.clone(),
                    citations: r.citations.clone(),
                    usage: Some(r.usage.clone()),
                    status: MessageStatus::Sent,
                    error: None,
                    author_id: None,
                    created_at: now(),
                };
                let outcome = outcome_of(&r, agent.fallback_message.as_deref());
                let stats = TurnStats {
                    agent_id: agent.id.clone(),
                    conversation_id: Some(conv.id.clone()),
                    outcome,
                    prompt_tokens: r.usage.prompt_tokens,
                    completion_tokens: r.usage.completion_tokens,
                    latency_ms: r.latency_ms,
                    upstream_ms: r.upstream_ms,
                };
                self.persist(&tenant, reply, r.handoff.clone(), stats).await
            }
            Err(TurnError {
                message,
                partial,
                latency_ms,
            }) => {
                self.store_failure(conv, message, partial, latency_ms, Some(agent.id))
                    .await
            }
        }
    }

    async fn store_failure(
        &self,
        conv: &Conversation,
        reason: String,
        partial: String,
        latency_ms: u64,
        agent: Option<AgentId>,
    ) -> Message {
        tracing::warn!(conversation = %conv.id, reason = %reason, "AI reply failed");
        let failed = Message {
            id: MessageId::new(),
            tenant_id: conv.tenant_id.clone(),
            conversation_id: conv.id.clone(),
            role: MessageRole::Ai,
            content: partial,
            citations: vec![],
            usage: None,
            status: MessageStatus::Failed,
            error: Some(reason),
            author_id: None,
            created_at: now(),
        };
        let stats = TurnStats {
            agent_id: agent.unwrap_or_else(|| conv.agent_id.clone()),
            conversation_id: Some(conv.id.clone()),
            outcome: Outcome::Failed,
            prompt_tokens: 0,
            completion_tokens: 0,
            latency_ms,
            upstream_ms: 0,
        };
        self.persist(&conv.tenant_id, failed, None, stats).await
    }

    async fn persist(
        &self,
        tenant: &TenantId,
        msg: Message,
        handoff: Option<String>,
        stats: TurnStats,
    ) -> Message {
        let svc = self.svc.clone();
        let (t, m) = (tenant.clone(), msg.clone());
        let r = tokio::task::spawn_blocking(move || {
            svc.record_ai_message(&t, &m, handoff.as_deref())?;
            svc.record_turn(&t, &stats)
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "storing the AI reply failed"),
            Err(e) => tracing::error!(error = %e, "storing the AI reply panicked"),
        }
        msg
    }
}
