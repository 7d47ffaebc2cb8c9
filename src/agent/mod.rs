//! The agent engine: retrieval-augmented answers with numbered sources and citations, a
//! bounded tool-calling loop (search_knowledge, handoff_to_human, tenant HTTP tools),
//! streaming of the final answer, and per-turn analytics. Built on llm/ and domain/.

pub mod extractive;
pub mod prompt;
pub mod tools;
pub mod turns;

use crate::auth::Caller;
use crate::domain::Services;
use crate::llm::{self, ChatMessage, ChatRequest, Provider, StreamEvent};
use crate::model::{Agent, Citation, RetrievalMode, ToolSpec, Usage};
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
        caller: &Caller,
        agent: &Agent,
        query: &str,
        top_k: usize,
    ) -> Result<Retrieved, String>;

    /// Embeddings of `query` and of `texts` with the tenant's embedding model, to score
    /// the sentences of an extractive answer; `None` without a (working) model.
    fn embed(
        &self,
        _caller: &Caller,
        _query: &str,
        _texts: &[String],
    ) -> Option<(Vec<f32>, Vec<Vec<f32>>)> {
        None
    }
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
    /// Who asks: the model settings and the knowledge are the caller's tenant's.
    pub caller: Caller,
    pub agent: Agent,
    /// Earlier messages, oldest first (user/assistant).
    pub history: Vec<ChatMessage>,
    pub message: String,
}

/// The outcome of [`Engine::test_provider`].
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderTest {
    /// True when the model answered.
    pub ok: bool,
    /// The endpoint that was called (without credentials).
    pub base_url: String,
    /// The default model that was asked.
    pub model: String,
    /// The start of the model's answer.
    pub reply: Option<String>,
    /// How long the test completion took.
    pub latency_ms: u64,
    /// The models the endpoint offers (`GET /models`), when it lists them.
    pub models: Option<Vec<String>>,
    /// Why the test failed, in plain words (the provider's own message included).
    pub error: Option<String>,
}

pub struct Engine {
    pub svc: Arc<Services>,
    pub llm: llm::Client,
    pub retriever: Arc<dyn Retrieve>,
    /// Model providers that recently failed as down (see [`extractive::ProviderHealth`]).
    pub health: extractive::ProviderHealth,
}

/// A turn's prompt, ready for the model: what [`Engine::prepare`] hands to the steps.
struct Prepared {
    provider: Provider,
    model: String,
    context_window: usize,
    uses_knowledge: bool,
    sources: Vec<Source>,
    tool_defs: Vec<llm::ToolDef>,
    /// Tokens the tool definitions take in every request.
    tools_tokens: usize,
    messages: Vec<ChatMessage>,
    history_dropped: usize,
}

/// What the model steps of a turn produced.
#[derive(Default)]
struct Steps {
    reply: Option<String>,
    usage: Usage,
    upstream: Duration,
    records: Vec<ToolCallRecord>,
    handoff: Option<String>,
}

/// A failed turn before or between model steps (nothing billed yet).
fn failure(started: Instant, message: String, partial: String) -> TurnError {
    TurnError {
        message,
        partial,
        latency_ms: started.elapsed().as_millis() as u64,
        usage: Usage::default(),
        upstream: Duration::ZERO,
    }
}

/// Runs blocking work (store reads, token counting) on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("blocking task failed: {e}"))
}

impl Engine {
    /// The tenant's model provider, default model and context window (a store read, done
    /// on the blocking pool).
    async fn provider(&self, caller: &Caller) -> Result<(Provider, String, u32), String> {
        let (svc, c) = (self.svc.clone(), caller.clone());
        let eff = blocking(move || svc.effective_ai(&c))
            .await?
            .map_err(|e| format!("cannot read the model settings: {e}"))?;
        let mut p = Provider::new(eff.base_url, eff.api_key.map(crate::config::Secret::new));
        if eff.tenant_url {
            p.policy = self.svc.config.tenant_outbound();
        }
        let t = Duration::from_secs(self.svc.config.llm_timeout_secs.max(1));
        p.timeout = t;
        p.idle_timeout = t.min(Duration::from_secs(60)).max(Duration::from_secs(1));
        Ok((p, eff.model, eff.context_window))
    }

    /// Tries the tenant's saved model provider with one tiny request: a completion of a
    /// few tokens with the default model (the key, the URL and the model all have to work),
    /// then the endpoint's model list, which some providers do not offer. No retries and a
    /// short deadline: an admin is waiting for the answer.
    pub async fn test_provider(&self, caller: &Caller) -> Result<ProviderTest, String> {
        let (mut p, model, _) = self.provider(caller).await?;
        p.max_retries = 0;
        let t = p.timeout.min(Duration::from_secs(20));
        p.timeout = t;
        p.idle_timeout = t;
        let mut req = ChatRequest::new(
            model.clone(),
            vec![ChatMessage::user("Reply with the single word: OK")],
        );
        req.max_tokens = Some(5);
        let started = Instant::now();
        let chat = self.llm.chat(&p, &req).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let mut out = ProviderTest {
            ok: false,
            base_url: crate::net::upstream::display_url(&p.base_url),
            model,
            reply: None,
            latency_ms,
            models: None,
            error: None,
        };
        match chat {
            Ok(r) => {
                out.ok = true;
                out.reply = Some(
                    r.message
                        .content
                        .unwrap_or_default()
                        .chars()
                        .take(200)
                        .collect(),
                );
            }
            Err(e) => {
                out.error = Some(e.user_message());
                return Ok(out);
            }
        }
        // Best effort: a provider without GET /models still works for answers.
        out.models = self.llm.list_models(&p).await.ok();
        Ok(out)
    }

    async fn retrieve(
        &self,
        caller: &Caller,
        agent: &Agent,
        query: &str,
    ) -> Result<Retrieved, String> {
        let (r, t, a, q) = (
            self.retriever.clone(),
            caller.clone(),
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
        // The agent's answer mode: generated by the model, or extracted from the sources.
        let route = self.route(&turn).await;
        if route == extractive::Route::Extractive {
            return self.extractive(&turn, deltas.as_ref(), started).await;
        }
        match self.generate(&turn, deltas.clone(), started).await {
            Err(e) if self.extract_instead(&route, &e, started) => {
                tracing::warn!(reason = %e.message, "the model provider is down: answering from the documents");
                self.extractive(&turn, deltas.as_ref(), started).await
            }
            r => r,
        }
    }

    /// A turn answered by the model.
    async fn generate(
        &self,
        turn: &Turn,
        deltas: Option<mpsc::Sender<String>>,
        started: Instant,
    ) -> Result<TurnResult, TurnError> {
        let mut prepared = self.prepare(turn, started).await?;
        let steps = self
            .steps(turn, &mut prepared, deltas.as_ref(), started)
            .await?;
        self.health.answered(&prepared.provider.base_url);
        Ok(self.finish(turn, prepared, steps, deltas, started).await)
    }

    /// The provider, the sources and the prompt of a turn. Token counting (of sources,
    /// history and tool definitions) runs on the blocking pool.
    async fn prepare(&self, turn: &Turn, started: Instant) -> Result<Prepared, TurnError> {
        let fail = |message: String| failure(started, message, String::new());
        let (provider, default_model, context_window) =
            self.provider(&turn.caller).await.map_err(fail)?;
        let agent = &turn.agent;
        let model = agent.model.clone().unwrap_or(default_model);
        let uses_knowledge =
            agent.retrieval_mode != RetrievalMode::Off && !agent.document_ids.is_empty();
        let sources = if uses_knowledge {
            self.retrieve(&turn.caller, agent, &turn.message)
                .await
                .map_err(|e| fail(format!("knowledge search failed: {e}")))?
                .sources
        } else {
            Vec::new()
        };
        let (agent, history, message) = (
            turn.agent.clone(),
            turn.history.clone(),
            turn.message.clone(),
        );
        blocking(move || {
            let mut sources = sources;
            let context_window = context_window as usize;
            let max_answer = agent.max_tokens as usize;
            prompt::fit_sources(&model, &mut sources, context_window, max_answer);
            let can_handoff = agent.tools.contains(&ToolSpec::HandoffToHuman);
            let system = prompt::system_message(&agent, &sources, uses_knowledge, can_handoff);
            let tool_defs = tools::definitions(&agent.tools, uses_knowledge);
            let tools_tokens = llm::count_tokens(
                &model,
                &serde_json::to_string(&tool_defs).unwrap_or_default(),
            );
            let (messages, history_dropped) = prompt::assemble(
                &model,
                system,
                &history,
                &message,
                context_window,
                max_answer,
                tools_tokens,
            );
            Prepared {
                provider,
                model,
                context_window,
                uses_knowledge,
                sources,
                tool_defs,
                tools_tokens,
                messages,
                history_dropped,
            }
        })
        .await
        .map_err(fail)
    }

    /// The model steps: up to [`MAX_STEPS`] calls, each either the answer or a tool round.
    async fn steps(
        &self,
        turn: &Turn,
        p: &mut Prepared,
        deltas: Option<&mpsc::Sender<String>>,
        started: Instant,
    ) -> Result<Steps, TurnError> {
        let agent = &turn.agent;
        let mut out = Steps::default();
        let mut streamed = String::new();
        for step in 0..MAX_STEPS {
            let last = step + 1 == MAX_STEPS || out.handoff.is_some();
            let mut req = ChatRequest::new(p.model.clone(), p.messages.clone());
            req.temperature = Some(agent.temperature);
            req.max_tokens = Some(agent.max_tokens);
            if !p.tool_defs.is_empty() && !last {
                req.tools = p.tool_defs.clone();
            }
            let t0 = Instant::now();
            let step = self
                .call_model(&p.provider, &req, deltas, &mut streamed, started)
                .await;
            out.upstream += t0.elapsed();
            let (message, step_usage) = step.map_err(|e| TurnError {
                usage: out.usage.clone(),
                upstream: out.upstream,
                ..e
            })?;
            if let Some(u) = step_usage {
                out.usage.prompt_tokens += u.prompt_tokens;
                out.usage.completion_tokens += u.completion_tokens;
            }
            if message.tool_calls.is_empty() || last {
                out.reply = Some(message.content.clone().unwrap_or_default());
                break;
            }
            self.tool_round(turn, p, message, &mut out).await;
        }
        Ok(out)
    }

    /// One model call; with `deltas`, streamed (the answer's text goes out as it comes).
    async fn call_model(
        &self,
        provider: &Provider,
        req: &ChatRequest,
        deltas: Option<&mpsc::Sender<String>>,
        streamed: &mut String,
        started: Instant,
    ) -> Result<(ChatMessage, Option<llm::Usage>), TurnError> {
        let Some(tx) = deltas else {
            let r = self
                .llm
                .chat(provider, req)
                .await
                .map_err(|e| self.upstream_failure(provider, &e, started, streamed))?;
            return Ok((r.message, Some(r.usage)));
        };
        let mut stream = self
            .llm
            .chat_stream(provider, req)
            .await
            .map_err(|e| self.upstream_failure(provider, &e, started, streamed))?;
        let mut done = None;
        while let Some(ev) = stream.next().await {
            match ev.map_err(|e| self.upstream_failure(provider, &e, started, streamed))? {
                StreamEvent::Delta(d) => {
                    streamed.push_str(&d);
                    if tx.send(d).await.is_err() {
                        // The client went away: dropping the stream aborts upstream.
                        return Err(failure(
                            started,
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
            failure(
                started,
                "the model's stream ended without a final message".into(),
                streamed.clone(),
            )
        })
    }

    /// A failed model call as a turn error; a failure saying the provider is down is
    /// remembered (agents in `auto` answer from their documents meanwhile).
    fn upstream_failure(
        &self,
        provider: &Provider,
        e: &llm::Error,
        started: Instant,
        streamed: &str,
    ) -> TurnError {
        self.health.failed(&provider.base_url, e);
        failure(started, e.user_message(), streamed.to_string())
    }

    /// Runs the tool calls of `message` and appends them and their results (fitted to the
    /// room left in the context window) to the prompt.
    async fn tool_round(
        &self,
        turn: &Turn,
        p: &mut Prepared,
        message: ChatMessage,
        out: &mut Steps,
    ) {
        p.messages.push(message.clone());
        for call in &message.tool_calls {
            let (ok, result) = self
                .run_tool(turn, call, &mut p.sources, &mut out.handoff)
                .await;
            out.records.push(ToolCallRecord {
                name: call.name.clone(),
                arguments: call.arguments.chars().take(2000).collect(),
                ok,
                result: result.chars().take(500).collect(),
            });
            // History was trimmed to the window; tool results must fit in what is left.
            // Counting tokens of the whole prompt is CPU work: off the async workers.
            let (model, messages) = (p.model.clone(), p.messages.clone());
            let (tools_tokens, window) = (p.tools_tokens, p.context_window);
            let max_answer = turn.agent.max_tokens as usize;
            let fitted = blocking(move || {
                let room = prompt::room_left(&model, &messages, tools_tokens, window, max_answer);
                prompt::fit_tool_result(&model, result, room)
            })
            .await
            .unwrap_or_else(|e| format!("error: {e}"));
            p.messages
                .push(ChatMessage::tool_result(call.id.clone(), fitted));
        }
    }

    /// The reply (or the fallback), its citations, and the result.
    async fn finish(
        &self,
        turn: &Turn,
        p: Prepared,
        steps: Steps,
        deltas: Option<mpsc::Sender<String>>,
        started: Instant,
    ) -> TurnResult {
        let mut reply = steps.reply.unwrap_or_default();
        if reply.trim().is_empty() {
            reply = if steps.handoff.is_some() {
                "I'm connecting you with a member of our team; they will reply here shortly.".into()
            } else {
                turn.agent
                    .fallback_message
                    .clone()
                    .unwrap_or_else(|| crate::domain::agents::DEFAULT_FALLBACK.into())
            };
            if let Some(tx) = &deltas {
                let _ = tx.send(reply.clone()).await;
            }
        }
        let citations = prompt::citations(&reply, &p.sources);
        TurnResult {
            reply,
            citations,
            usage: steps.usage,
            tool_calls: steps.records,
            handoff: steps.handoff,
            latency_ms: started.elapsed().as_millis() as u64,
            upstream: steps.upstream,
            history_dropped: p.history_dropped,
            no_sources: p.uses_knowledge && p.sources.is_empty(),
        }
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
                match self.retrieve(&turn.caller, &turn.agent, q).await {
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
