//! Running a turn for a conversation: history from the store, the answer (or the failure)
//! stored as a message, analytics recorded. Shared by the inbox API and the channels.
//! Turns run as durable jobs (`turn`, queued by the domain with the customer message) on the
//! interactive worker pool, one at a time per conversation; a turn cut by shutdown resumes
//! after the restart, and a retried turn whose answer was already stored does not answer
//! again.

use super::{Engine, Turn, TurnError, TurnResult};
use crate::auth::Caller;
use crate::domain::analytics::{Outcome, TurnStats};
use crate::domain::conversations::{AnswerOf, JOB_TURN, TurnPayload, TurnToRun};
use crate::events::{Event, Typist};
use crate::jobs::{Class, JobCtx, JobError, Jobs, Policy};
use crate::llm::ChatMessage;
use crate::model::*;
use crate::types::*;
use std::sync::Arc;
use std::time::Duration;

/// A conversation turn's stored answer.
pub struct Answer {
    /// The reply as stored (status `failed`, with the reason, when the turn failed).
    pub message: Message,
    /// Time spent waiting for the model provider during the turn.
    pub upstream: Duration,
}

/// Most earlier messages loaded for a turn; the token budget trims further.
pub const HISTORY_MESSAGES: usize = 100;

/// A turn's history (see `Services::turn_context`), oldest first, as chat messages.
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

/// True when none of `earlier` (the history of this turn) is an
/// answer of a turn, i.e. this turn opens the conversation for analytics. A greeting is
/// not a turn: it has no usage and never fails.
pub fn is_first_turn(earlier: &[Message]) -> bool {
    // A full page without a turn may hide one further back: do not count twice.
    earlier.len() < HISTORY_MESSAGES
        && !earlier.iter().any(|m| {
            m.role == MessageRole::Ai && (m.usage.is_some() || m.status == MessageStatus::Failed)
        })
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
    /// Registers the turn job's handler (and its give-up hook) on the interactive pool.
    /// `rt` runs the turn's async work from the worker thread.
    pub fn register_jobs(self: &Arc<Self>, jobs: &Jobs, rt: tokio::runtime::Handle) {
        let (me, rt2) = (self.clone(), rt.clone());
        jobs.register_with(
            JOB_TURN,
            Policy {
                class: Class::Interactive,
                max_attempts: 1,
            },
            Arc::new(move |ctx| me.turn_job(ctx, &rt2)),
        );
        let me = self.clone();
        jobs.register(
            &format!("{JOB_TURN}#failed"),
            Arc::new(move |ctx| {
                me.turn_gave_up(ctx, &rt);
                Ok(())
            }),
        );
    }

    /// Runs one turn job: answers its customer message unless an earlier attempt already
    /// did, the message or conversation is gone, or a person has taken the conversation.
    fn turn_job(&self, ctx: &JobCtx, rt: &tokio::runtime::Handle) -> Result<(), JobError> {
        let job = ctx.job;
        let Some(p) = TurnPayload::of(job) else {
            return Err(JobError::Failed("the turn job names no message".into()));
        };
        let caller = Caller::for_job(job);
        let (conv, msg) = match self.svc.turn_to_run(&caller, &job.id, &p) {
            Ok(TurnToRun::Answer {
                conversation,
                message,
            }) => (*conversation, *message),
            Ok(TurnToRun::Skip(why)) => {
                tracing::info!(why, "the turn has nothing to answer");
                return Ok(());
            }
            Err(e) => return Err(JobError::Failed(e.to_string().into())),
        };
        rt.block_on(async {
            tokio::select! {
                _ = self.answer_in_conversation(&caller, &conv, &msg, Some(&job.id)) => Ok(()),
                _ = ctx.cancelled() => Err(JobError::Interrupted),
            }
        })
    }

    /// A turn job failed for good (the server stopped during it every time): the customer's
    /// message gets a `failed` answer with the reason, unless it has an answer already.
    fn turn_gave_up(&self, ctx: &JobCtx, rt: &tokio::runtime::Handle) {
        let job = ctx.job;
        let Some(p) = TurnPayload::of(job) else {
            return;
        };
        if p.reply_id.is_some() {
            return;
        }
        let caller = Caller::for_job(job);
        let Ok(conv) = self.svc.get_conversation(&caller, &p.conversation_id) else {
            return;
        };
        let e = TurnError {
            message: job
                .error
                .clone()
                .unwrap_or_else(|| "the answer could not be produced".into()),
            partial: String::new(),
            latency_ms: 0,
            usage: Usage::default(),
            upstream: Duration::ZERO,
        };
        rt.block_on(self.store_failure(&caller, &conv, e, None, false, Some(&job.id)));
    }

    /// Answers the customer message `msg` of a conversation and stores the reply (or a
    /// failed message with the reason). Never returns an error: failures become messages.
    /// `caller` acts for the conversation's tenant (a job's, or the poster's). With `job`
    /// (the turn job answering it), the answer is stored only if that job has none yet, in
    /// the same commit that records it on the job.
    pub async fn answer_in_conversation(
        &self,
        caller: &Caller,
        conv: &Conversation,
        msg: &Message,
        job: Option<&JobId>,
    ) -> Answer {
        let tenant = caller.tenant().clone();
        let svc = self.svc.clone();
        let (c2, cid, aid, mid) = (
            caller.clone(),
            conv.id.clone(),
            conv.agent_id.clone(),
            msg.id.clone(),
        );
        let loaded = tokio::task::spawn_blocking(move || {
            svc.turn_context(&c2, &cid, &aid, &mid, HISTORY_MESSAGES)
        })
        .await;
        let (agent, mut earlier) = match loaded {
            Ok(Ok(loaded)) => loaded,
            _ => {
                let e = TurnError {
                    message: "the conversation's agent no longer exists".into(),
                    partial: String::new(),
                    latency_ms: 0,
                    usage: Usage::default(),
                    upstream: Duration::ZERO,
                };
                return self.store_failure(caller, conv, e, None, false, job).await;
            }
        };
        earlier.reverse();
        let first = is_first_turn(&earlier);
        // The plan's AI replies for the period: counted before the model is asked, so
        // parallel turns at the limit cannot both pass.
        let (svc, c2) = (self.svc.clone(), caller.clone());
        match tokio::task::spawn_blocking(move || svc.reserve_ai_reply(&c2)).await {
            Ok(Ok(())) => {}
            Ok(Err(crate::domain::Error::PaymentRequired(_, why, _))) => {
                return self
                    .answer_over_plan(caller, conv, &agent, first, job, &why)
                    .await;
            }
            other => {
                let message = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the plan's usage could not be checked".into(),
                };
                let e = TurnError {
                    message,
                    partial: String::new(),
                    latency_ms: 0,
                    usage: Usage::default(),
                    upstream: Duration::ZERO,
                };
                return self
                    .store_failure(caller, conv, e, Some(agent.id.clone()), first, job)
                    .await;
            }
        }
        let turn = Turn {
            caller: caller.clone(),
            agent: agent.clone(),
            history: history_of(&earlier),
            message: msg.content.clone(),
        };
        // The answer streams over the event bus as it is generated (sockets show it live),
        // under the id it will be stored with; the stored answer ends the stream.
        let reply_id = MessageId::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
        let bus = self.svc.events.clone();
        let (t2, c2, r2) = (tenant.clone(), conv.id.clone(), reply_id.clone());
        let pump = tokio::spawn(async move {
            while let Some(delta) = rx.recv().await {
                bus.publish(Event::AgentDelta {
                    tenant_id: t2.clone(),
                    conversation_id: c2.clone(),
                    message_id: r2.clone(),
                    delta,
                });
            }
        });
        let typing = |on: bool| Event::Typing {
            tenant_id: tenant.clone(),
            conversation_id: conv.id.clone(),
            who: Typist {
                kind: "ai",
                user_id: None,
                name: Some(agent.name.clone()),
            },
            typing: on,
        };
        self.svc.events.publish(typing(true));
        let result = self.run(turn, Some(tx)).await;
        // The sender went with the turn: the pump ends once the last delta is published,
        // so every delta precedes the stored answer.
        let _ = pump.await;
        self.svc.events.publish(typing(false));
        match result {
            Ok(r) => {
                let reply = Message {
                    id: reply_id,
                    tenant_id: tenant.clone(),
                    conversation_id: conv.id.clone(),
                    role: MessageRole::Ai,
                    content: r.reply.clone(),
                    citations: r.citations.clone(),
                    usage: Some(r.usage.clone()),
                    status: MessageStatus::Sent,
                    error: None,
                    error_code: None,
                    author_id: None,
                    created_at: self.svc.clock.now(),
                    seq: 0,
                    client_id: None,
                    attachments: vec![],
                };
                let outcome = outcome_of(&r, agent.fallback_message.as_deref());
                let stats = TurnStats {
                    agent_id: agent.id.clone(),
                    conversation_id: Some(conv.id.clone()),
                    outcome,
                    prompt_tokens: r.usage.prompt_tokens,
                    completion_tokens: r.usage.completion_tokens,
                    latency_ms: r.latency_ms,
                    upstream_ms: r.upstream.as_millis() as u64,
                    new_conversation: first,
                    tool_calls: r.tool_calls.len() as u32,
                    question: Some(msg.content.clone()),
                };
                let upstream = r.upstream;
                self.persist(caller, reply, r.handoff.clone(), stats, upstream, job)
                    .await
            }
            Err(e) => {
                self.store_failure_as(reply_id, caller, conv, e, Some(agent.id), first, job)
                    .await
            }
        }
    }

    /// The plan allows no AI reply now (the period's replies are used up, or the
    /// subscription is canceled): the customer gets the agent's fallback message and the
    /// conversation goes to a person (`pending_human`), so it is never silently dropped.
    async fn answer_over_plan(
        &self,
        caller: &Caller,
        conv: &Conversation,
        agent: &Agent,
        first: bool,
        job: Option<&JobId>,
        why: &str,
    ) -> Answer {
        tracing::warn!(conversation = %conv.id, reason = %why, "AI reply refused by the plan; handed to a person");
        let reply = Message {
            id: MessageId::new(),
            tenant_id: caller.tenant().clone(),
            conversation_id: conv.id.clone(),
            role: MessageRole::Ai,
            content: agent
                .fallback_message
                .clone()
                .unwrap_or_else(|| crate::domain::agents::DEFAULT_FALLBACK.into()),
            citations: vec![],
            usage: None,
            status: MessageStatus::Sent,
            error: None,
            error_code: None,
            author_id: None,
            created_at: self.svc.clock.now(),
            seq: 0,
            client_id: None,
            attachments: vec![],
        };
        let stats = TurnStats {
            agent_id: agent.id.clone(),
            conversation_id: Some(conv.id.clone()),
            outcome: Outcome::Handoff,
            prompt_tokens: 0,
            completion_tokens: 0,
            latency_ms: 0,
            upstream_ms: 0,
            new_conversation: first,
            // The plan stopped the AI: not a question the knowledge could not answer.
            tool_calls: 0,
            question: None,
        };
        let reason = format!("the plan allows no more AI replies now ({why})");
        self.persist(caller, reply, Some(reason), stats, Duration::ZERO, job)
            .await
    }

    /// Records a turn that belongs to no conversation (the /v1 API) in the agent's daily
    /// rollup. Failures to store are logged: the caller already has its answer.
    pub async fn record_detached(
        &self,
        caller: &Caller,
        agent: &Agent,
        r: &Result<TurnResult, TurnError>,
    ) {
        let stats = match r {
            Ok(r) => TurnStats {
                agent_id: agent.id.clone(),
                conversation_id: None,
                outcome: outcome_of(r, agent.fallback_message.as_deref()),
                prompt_tokens: r.usage.prompt_tokens,
                completion_tokens: r.usage.completion_tokens,
                latency_ms: r.latency_ms,
                upstream_ms: r.upstream.as_millis() as u64,
                new_conversation: false,
                tool_calls: r.tool_calls.len() as u32,
                question: None,
            },
            Err(e) => TurnStats {
                agent_id: agent.id.clone(),
                conversation_id: None,
                outcome: Outcome::Failed,
                prompt_tokens: e.usage.prompt_tokens,
                completion_tokens: e.usage.completion_tokens,
                latency_ms: e.latency_ms,
                upstream_ms: e.upstream.as_millis() as u64,
                new_conversation: false,
                tool_calls: 0,
                question: None,
            },
        };
        let (svc, c) = (self.svc.clone(), caller.clone());
        match tokio::task::spawn_blocking(move || svc.record_turn(&c, &stats)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "storing turn analytics failed"),
            Err(e) => tracing::error!(error = %e, "storing turn analytics panicked"),
        }
    }

    async fn store_failure(
        &self,
        caller: &Caller,
        conv: &Conversation,
        e: TurnError,
        agent: Option<AgentId>,
        first: bool,
        job: Option<&JobId>,
    ) -> Answer {
        self.store_failure_as(MessageId::new(), caller, conv, e, agent, first, job)
            .await
    }

    /// Stores a failed turn's answer under `id` (the id its stream was announced with).
    #[allow(clippy::too_many_arguments)]
    async fn store_failure_as(
        &self,
        id: MessageId,
        caller: &Caller,
        conv: &Conversation,
        e: TurnError,
        agent: Option<AgentId>,
        first: bool,
        job: Option<&JobId>,
    ) -> Answer {
        let upstream = e.upstream;
        tracing::warn!(conversation = %conv.id, reason = %e.message, "AI reply failed");
        let used = e.usage.prompt_tokens > 0 || e.usage.completion_tokens > 0;
        let stats = TurnStats {
            agent_id: agent.unwrap_or_else(|| conv.agent_id.clone()),
            conversation_id: Some(conv.id.clone()),
            outcome: Outcome::Failed,
            prompt_tokens: e.usage.prompt_tokens,
            completion_tokens: e.usage.completion_tokens,
            latency_ms: e.latency_ms,
            upstream_ms: e.upstream.as_millis() as u64,
            new_conversation: first,
            tool_calls: 0,
            question: None,
        };
        let failed = Message {
            id,
            tenant_id: caller.tenant().clone(),
            conversation_id: conv.id.clone(),
            role: MessageRole::Ai,
            content: e.partial,
            citations: vec![],
            // Tokens spent on the steps before the failure (tool rounds) were still used.
            usage: used.then_some(e.usage),
            status: MessageStatus::Failed,
            error: Some(e.message),
            error_code: None,
            author_id: None,
            created_at: self.svc.clock.now(),
            seq: 0,
            client_id: None,
            attachments: vec![],
        };
        self.persist(caller, failed, None, stats, upstream, job)
            .await
    }

    async fn persist(
        &self,
        caller: &Caller,
        msg: Message,
        handoff: Option<String>,
        stats: TurnStats,
        upstream: Duration,
        job: Option<&JobId>,
    ) -> Answer {
        let svc = self.svc.clone();
        let (c, m) = (caller.clone(), msg.clone());
        let of = job.map(|j| AnswerOf {
            job: j.clone(),
            upstream_us: upstream.as_micros() as u64,
        });
        let r = tokio::task::spawn_blocking(move || {
            svc.record_ai_reply(&c, &m, handoff.as_deref(), &stats, of.as_ref())
        })
        .await;
        match r {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => {
                tracing::info!("the message was already answered: this answer is dropped")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "storing the AI reply failed"),
            Err(e) => tracing::error!(error = %e, "storing the AI reply panicked"),
        }
        Answer {
            message: msg,
            upstream,
        }
    }
}
