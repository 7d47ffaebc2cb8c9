//! Per-turn analytics: a daily rollup per agent (AgentAnalytics) plus raw events.

use super::{Error, Result, Services};
use crate::auth::{Action, Caller};
use crate::model::{AgentAnalytics, AnalyticsEvent};
use crate::store::WriteTx;
use crate::types::*;

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    Fallback,
    Handoff,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Fallback => "fallback",
            Outcome::Handoff => "handoff",
            Outcome::Failed => "failed",
        }
    }
}

/// One turn's numbers.
#[derive(Debug, Clone)]
pub struct TurnStats {
    pub agent_id: AgentId,
    pub conversation_id: Option<ConversationId>,
    pub outcome: Outcome,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub latency_ms: u64,
    pub upstream_ms: u64,
    /// The agent's first turn in this conversation: the conversation counts towards the
    /// day's `conversations` (once, so rollups of several days add up).
    pub new_conversation: bool,
}

impl Services {
    /// Adds a turn to the agent's rollup of today (UTC) and stores the raw event.
    pub fn record_turn(&self, caller: &Caller, s: &TurnStats) -> Result<()> {
        caller
            .require(Action::RunAgent)
            .map_err(|d| Error::denied(d, "agent"))?;
        self.store
            .write(|tx| Self::put_turn(tx, caller.tenant(), s))
    }

    /// [`record_turn`](Self::record_turn) inside a caller's transaction, so a turn's reply
    /// and its analytics are one commit. Unchecked: for domain functions that checked.
    pub(super) fn put_turn(tx: &WriteTx, tenant: &TenantId, s: &TurnStats) -> Result<()> {
        let now = now();
        let day = format!(
            "{:04}-{:02}-{:02}",
            now.year(),
            u8::from(now.month()),
            now.day()
        );
        let id = format!("{}:{day}", s.agent_id);
        let mut a = tx
            .get::<AgentAnalytics>(tenant, &id)?
            .unwrap_or_else(|| AgentAnalytics {
                id: id.clone(),
                tenant_id: tenant.clone(),
                agent_id: s.agent_id.clone(),
                day: day.clone(),
                turns: 0,
                failed_turns: 0,
                handoffs: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
                total_latency_ms: 0,
                conversations: 0,
            });
        a.turns += 1;
        a.failed_turns += (s.outcome == Outcome::Failed) as u64;
        a.handoffs += (s.outcome == Outcome::Handoff) as u64;
        a.conversations += s.new_conversation as u64;
        a.prompt_tokens += s.prompt_tokens as u64;
        a.completion_tokens += s.completion_tokens as u64;
        a.total_latency_ms += s.latency_ms;
        tx.put(&a)?;
        tx.put(&AnalyticsEvent {
            id: AnalyticsEventId::new(),
            tenant_id: tenant.clone(),
            kind: "turn".into(),
            agent_id: Some(s.agent_id.clone()),
            conversation_id: s.conversation_id.clone(),
            data: serde_json::json!({
                "outcome": s.outcome.as_str(),
                "promptTokens": s.prompt_tokens,
                "completionTokens": s.completion_tokens,
                "latencyMs": s.latency_ms,
                "upstreamMs": s.upstream_ms,
            }),
            created_at: now,
        })?;
        Ok(())
    }

    /// The daily rollups of an agent (oldest first).
    pub fn agent_analytics(&self, caller: &Caller, agent: &AgentId) -> Result<Vec<AgentAnalytics>> {
        caller
            .require(Action::ReadAnalytics)
            .map_err(|d| Error::denied(d, "agent"))?;
        Ok(self.store.read(|tx| {
            tx.scan::<AgentAnalytics>(caller.tenant(), None, |a| &a.agent_id == agent)
        })?)
    }
}
