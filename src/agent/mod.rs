//! The agent engine: retrieval-augmented answers with numbered sources and citations, a
//! bounded tool-calling loop (search_knowledge, handoff_to_human, tenant HTTP tools),
//! streaming of the final answer, and per-turn analytics. Built on llm/ and domain/.

pub mod prompt;
pub mod tools;
pub mod turns;

use crate::domain::Services;
use crate::llm::{self, ChatMessage, ChatRequest, Provider, StreamEvent};
use crate::model::{Agent, Citation, RetrievalMode, ToolSpec, Usage};
use crate::types::TenantId;
use futures::StreamExt;
pub use prompt::Source;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use utoipa::ToSchema;

/// Most model calls in one turn (tool rounds plus the final answer).
pub const MAX_STEPS: usize = 6;

/// Finds the chunks that answer a query, for an agent. Blocking (runs on worker threads).
pub trait Retrieve: Send + Sync {
    /// Sources for `query`, best first, restricted to the agent's documents. `relevant` is
    /// false when nothing passed the relevance bar (the list may then be empty).
    fn retrieve(
        &self,
        tenant: &TenantId,
        agent: &Agent,
        query: &str,
        top_k: usize,
    ) -> Result<Retrieved, String>;
}

#[derive(Debug, Default, Clone)]
pub struct Retrieved {
    pub sources: Vec<Source>,
}

/// One tool call made during a turn.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolCallRecord {
    pub name: String,
    pub arguments: String,
    pub ok: bool,
    /// The start of what the tool returned (or why it failed).
    pub result: String,
}

/// What a turn produced.
#[derive(Debug, Clone)]
pub struct TurnResult {
    pub reply: String,
    pub citations: Vec<Citation>,
    pub usage: Usage,
    pub tool_calls: Vec<ToolCallRecord>,
    /// Set when the model handed the conversation to a person.
    pub handoff: Option<String>,
    pub latency_ms: u64,
    /// Time spent waiting for the model provider, included in `latency_ms`.
    pub upstream: Duration,
    pub history_dropped: usize,
    /// No relevant source was found for a knowledge agent.
    pub no_sources: bool,
}

/// A failed turn, with a reason fit to show admins.
#[derive(Debug, Clone)]
pub struct TurnError {
    pub message: String,
    /// Text already streamed to the user before the failure.
    pub partial: String,
    pub latency_ms: u64,
    /// Tokens the model reported for the steps that completed before the failure (tool
    /// rounds): they were used and billed even though the turn failed.
    pub usage: Usage,
    /// Time spent waiting for the model provider, included in `latency_ms`.
    pub upstream: Duration,
}

/// One turn to answer.
pub struct Turn {
    pub tenant: TenantId,
    pub agent: Agent,
    /// Earlier messages, oldest first (user/assistant).
    pub history: Vec<ChatMessage>,
    pub message: String,
}

pub struct Engine {
    pub svc: Arc<Services>,
    pub llm: llm::Client,
    pub retriever: Arc<dyn Retrieve>,
}

impl Engine {
    fn provider(&self, tenant: &TenantId) -> Result<(Provider, String, u32), TurnError> {
        let eff = self.svc.effective_ai(tenant).map_err(|e| TurnError {
            message: format!("cannot read the model settings: {e}"),
            partial: String::new(),
            latency_ms: 0,
            usage: Usage::default(),
            upstream: Duration::ZERO,
        })?;
        let mut p = Provider::new(eff.base_url, eff.api_key.map(crate::config::Secret::new));
        if eff.tenant_url {
            p.policy = self.svc.config.tenant_outbound();
        }
        let t = Duration::from_secs(self.svc.config.llm_timeout_secs.max(1));
        p.timeout = t;
        p.idle_timeout = t.min(Duration::from_secs(60)).max(Duration::from_secs(1));
        Ok((p, eff.model, eff.context_window))
    }

    async fn retrieve(
        &self,
        tenant: &TenantId,
        agent: &Agent,
        query: &str,
    ) -> Result<Retrieved, String> {
        let (r, t, a, q) = (
            self.retriever.clone(),
            tenant.clone(),
            agent.clone(),
            query.to_string(),
        );
        let k = agent.top_k as usize;
        tokio::task::spawn_blocking(move || r.retrieve(&t, &a, &q, k))
            .await
            .map_err(|e| format!("retrieval task failed: {e}"))?
    }

    /// Answers one message. With `deltas`, the final answer's text is sent as it arrives;
    /// the turn stops early (and its upstream request is aborted) when the receiver is gone.
    pub async fn run(
        &self,
        turn: Turn,
        deltas: Option<mpsc::Sender<String>>,
    ) -> Result<TurnResult, TurnError> {
        let started = Instant::now();
        let fail = |message: String, partial: String| TurnError {
            message,
            partial,
            latency_ms: started.elapsed().as_millis() as u64,
            usage: Usage::default(),
            upstream: Duration::ZERO,
        };
        let (provider, default_model, context_window) = self.provider(&turn.tenant)?;
        let agent = &turn.agent;
        let model = agent.model.clone().unwrap_or(default_model);
        let uses_knowledge =
            agent.retrieval_mode != RetrievalMode::Off && !agent.document_ids.is_empty();
        let mut sources = if uses_knowledge {
            self.retrieve(&turn.tenant, agent, &turn.message)
                .await
                .map_err(|e| fail(format!("knowledge search failed: {e}"), String::new()))?
                .sources
        } else {
            Vec::new()
        };
        prompt::fit_sources(
            &model,
            &mut sources,
            context_window as usize,
            agent.max_tokens as usize,
        );
        let can_handoff = agent.tools.contains(&ToolSpec::HandoffToHuman);
        let system = prompt::system_message(agent, &sources, uses_knowledge, can_handoff);
        let tool_defs = tools::definitions(&agent.tools, uses_knowledge);
        let tools_tokens = llm::count_tokens(
            &model,
            &serde_json::to_string(&tool_defs).unwrap_or_default(),
        );
        let (mut messages, history_dropped) = prompt::assemble(
            &model,
            system,
            &turn.history,
            &turn.message,
            context_window as usize,
            agent.max_tokens as usize,
            tools_tokens,
        );
        let mut usage = Usage::default();
        let mut upstream = Duration::ZERO;
        let mut records = Vec::new();
        let mut handoff: Option<String> = None;
        let mut streamed = String::new();
        let mut reply = None;
        for step in 0..MAX_STEPS {
            let last = step + 1 == MAX_STEPS || handoff.is_some();
            let mut req = ChatRequest::new(model.clone(), messages.clone());
            req.temperature = Some(agent.temperature);
            req.max_tokens = Some(agent.max_tokens);
            if !tool_defs.is_empty() && !last {
                req.tools = tool_defs.clone();
            }
            let t0 = Instant::now();
            let step = async {
                Ok(match &deltas {
                    None => {
                        let r = self
                            .llm
                            .chat(&provider, &req)
                            .await
                            .map_err(|e| fail(e.user_message(), streamed.clone()))?;
                        (r.message, Some(r.usage))
                    }
                    Some(tx) => {
                        let mut stream = self
                            .llm
                            .chat_stream(&provider, &req)
                            .await
                            .map_err(|e| fail(e.user_message(), streamed.clone()))?;
                        let mut done = None;
                        while let Some(ev) = stream.next().await {
                            match ev.map_err(|e| fail(e.user_message(), streamed.clone()))? {
                                StreamEvent::Delta(d) => {
                                    streamed.push_str(&d);
                                    if tx.send(d).await.is_err() {
                                        // The client went away: dropping the stream aborts upstream.
                                        return Err(fail(
                                            "cancelled: the client disconnected".into(),
                                            streamed.clone(),
                                        ));
                                    }
                                }
                                StreamEvent::Done { message, usage, .. } => {
                                    done = Some((message, usage));
                                }
                            }
                        }
                        done.ok_or_else(|| {
                            fail(
                                "the model's stream ended without a final message".into(),
                                streamed.clone(),
                            )
                        })?
                    }
                })
            };
            let step: Result<_, TurnError> = step.await;
            upstream += t0.elapsed();
            let (message, step_usage) = step.map_err(|e| TurnError {
                usage: usage.clone(),
                upstream,
                ..e
            })?;
            if let Some(u) = step_usage {
                usage.prompt_tokens += u.prompt_tokens;
                usage.completion_tokens += u.completion_tokens;
            }
            if message.tool_calls.is_empty() || last {
                reply = Some(message.content.clone().unwrap_or_default());
                break;
            }
            messages.push(message.clone());
            for call in &message.tool_calls {
                let (ok, result) = self.run_tool(&turn, call, &mut sources, &mut handoff).await;
                records.push(ToolCallRecord {
                    name: call.name.clone(),
                    arguments: call.arguments.chars().take(2000).collect(),
                    ok,
                    result: result.chars().take(500).collect(),
                });
                // History was trimmed to the window; tool results must fit in what is left.
                let room = prompt::room_left(
                    &model,
                    &messages,
                    tools_tokens,
                    context_window as usize,
                    agent.max_tokens as usize,
                );
                let result = prompt::fit_tool_result(&model, result, room);
                messages.push(ChatMessage::tool_result(call.id.clone(), result));
            }
        }
        let mut reply = reply.unwrap_or_default();
        if reply.trim().is_empty() {
            reply = if handoff.is_some() {
                "I'm connecting you with a member of our team; they will reply here shortly.".into()
            } else {
                agent
                    .fallback_message
                    .clone()
                    .unwrap_or_else(|| crate::domain::agents::DEFAULT_FALLBACK.into())
            };
            if let Some(tx) = &deltas {
                let _ = tx.send(reply.clone()).await;
            }
        }
        let citations = prompt::citations(&reply, &sources);
        Ok(TurnResult {
            reply,
            citations,
            usage,
            tool_calls: records,
            handoff,
            latency_ms: started.elapsed().as_millis() as u64,
            upstream,
            history_dropped,
            no_sources: uses_knowledge && sources.is_empty(),
        })
    }

    /// Runs one tool call; returns (ok, text for the model).
    async fn run_tool(
        &self,
        turn: &Turn,
        call: &llm::ToolCall,
        sources: &mut Vec<Source>,
        handoff: &mut Option<String>,
    ) -> (bool, String) {
        let args: serde_json::Value = serde_json::from_str(if call.arguments.trim().is_empty() {
            "{}"
        } else {
            &call.arguments
        })
        .unwrap_or(serde_json::Value::Null);
        match call.name.as_str() {
            tools::SEARCH_KNOWLEDGE if turn.agent.tools.contains(&ToolSpec::SearchKnowledge) => {
                let Some(q) = args
                    .get("query")
                    .and_then(|v| v.as_str())
                    .filter(|q| !q.trim().is_empty())
                else {
                    return (
                        false,
                        "error: `query` (a non-empty string) is required".into(),
                    );
                };
                match self.retrieve(&turn.tenant, &turn.agent, q).await {
                    Ok(r) => {
                        let fresh: Vec<Source> = r
                            .sources
                            .into_iter()
                            .filter(|s| !sources.iter().any(|o| o.chunk_id == s.chunk_id))
                            .collect();
                        if fresh.is_empty() {
                            return (true, "No further sources found.".into());
                        }
                        let block = prompt::source_block(&fresh, sources.len() + 1);
                        sources.extend(fresh);
                        (
                            true,
                            format!("More sources (cite them by number):\n\n{block}"),
                        )
                    }
                    Err(e) => (false, format!("error: {e}")),
                }
            }
            tools::HANDOFF if turn.agent.tools.contains(&ToolSpec::HandoffToHuman) => {
                let reason = args
                    .get("reason")
                    .and_then(|v| v.as_str())
                    .filter(|r| !r.trim().is_empty())
                    .unwrap_or("the customer asked for a person")
                    .chars()
                    .take(500)
                    .collect::<String>();
                *handoff = Some(reason);
                (true, "The conversation is now waiting for a person of the team. Tell the customer briefly that someone will reply here soon.".into())
            }
            name => {
                let tool = turn.agent.tools.iter().find_map(|t| match t {
                    ToolSpec::Http(h) if h.name == name => Some(h),
                    _ => None,
                });
                match tool {
                    Some(h) => match tools::call_http(
                        h,
                        &call.arguments,
                        &self.svc.sealer,
                        &self.svc.config.tool_outbound(),
                    )
                    .await
                    {
                        Ok(body) => (true, body),
                        Err(e) => (false, format!("error: {e}")),
                    },
                    None => (false, format!("error: there is no tool named `{name}`")),
                }
            }
        }
    }
}
