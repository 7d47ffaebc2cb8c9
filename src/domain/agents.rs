//! Agents: personality, model settings, knowledge and tools. Slugs are unique per tenant.

use super::{Checks, Error, PageReq, Result, Services, slugify};
use crate::auth::{Action, Caller};
use crate::model::*;
use crate::store::{Index, Page, WriteTx, make_ref};
use crate::types::*;

pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a friendly, concise customer assistant for this business. Answer only from the provided sources and the conversation; when the sources do not contain the answer, say so.";
pub const DEFAULT_FALLBACK: &str = "I'm sorry, I don't have that information. Would you like me to connect you with a member of our team?";
/// Shown instead of a sealed header value.
pub const MASK: &str = "********";

/// Fields of a create or update; `None` leaves a field as it is (or at its default).
#[derive(Default, Debug, Clone)]
pub struct AgentInput {
    pub name: Option<String>,
    pub slug: Option<String>,
    pub description: Option<Option<String>>,
    pub system_prompt: Option<String>,
    pub model: Option<Option<String>>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub top_k: Option<u32>,
    pub retrieval_mode: Option<RetrievalMode>,
    pub answer_mode: Option<AnswerMode>,
    pub document_ids: Option<Vec<DocumentId>>,
    pub greeting: Option<Option<String>>,
    pub fallback_message: Option<Option<String>>,
    pub language: Option<Option<String>>,
    pub tools: Option<Vec<ToolSpec>>,
    pub status: Option<ActiveStatus>,
}

pub fn default_tools() -> Vec<ToolSpec> {
    vec![ToolSpec::SearchKnowledge, ToolSpec::HandoffToHuman]
}

fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
}

fn valid_tool_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Services {
    fn check_agent_input(&self, c: &mut Checks, i: &AgentInput) {
        if let Some(n) = &i.name {
            c.text("name", n, 200);
        }
        if let Some(s) = &i.slug {
            c.check(
                valid_slug(s),
                "slug",
                "must be 1-64 characters of a-z, 0-9 and -",
            );
        }
        if let Some(Some(d)) = &i.description {
            c.check(
                d.chars().count() <= 2000,
                "description",
                "must be at most 2000 characters",
            );
        }
        if let Some(p) = &i.system_prompt {
            c.check(
                p.chars().count() <= 20_000,
                "systemPrompt",
                "must be at most 20000 characters",
            );
        }
        if let Some(t) = i.temperature {
            c.check(
                (0.0..=2.0).contains(&t),
                "temperature",
                "must be between 0 and 2",
            );
        }
        if let Some(m) = i.max_tokens {
            c.check(
                (1..=32_768).contains(&m),
                "maxTokens",
                "must be between 1 and 32768",
            );
        }
        if let Some(k) = i.top_k {
            c.check((1..=50).contains(&k), "topK", "must be between 1 and 50");
        }
        for (field, v) in [
            ("greeting", &i.greeting),
            ("fallbackMessage", &i.fallback_message),
        ] {
            if let Some(Some(s)) = v {
                c.check(
                    s.chars().count() <= 2000,
                    field,
                    "must be at most 2000 characters",
                );
            }
        }
        if let Some(Some(l)) = &i.language {
            c.check(
                l.len() <= 35,
                "language",
                "must be a language tag such as en or pt-BR",
            );
        }
        if let Some(ids) = &i.document_ids {
            c.check(ids.len() <= 1000, "documentIds", "at most 1000 documents");
        }
        if let Some(tools) = &i.tools {
            let mut names = std::collections::HashSet::new();
            for (n, t) in tools.iter().enumerate() {
                let name = match t {
                    ToolSpec::SearchKnowledge => "search_knowledge".to_string(),
                    ToolSpec::HandoffToHuman => "handoff_to_human".to_string(),
                    ToolSpec::Http(h) => {
                        let f = |x: &str| format!("tools[{n}].{x}");
                        c.check(
                            valid_tool_name(&h.name),
                            &f("name"),
                            "must be 1-64 characters of a-z, A-Z, 0-9, _ and -",
                        );
                        c.text(&f("description"), &h.description, 1000);
                        c.check(
                            h.parameters.is_null()
                                || h.parameters.get("type").and_then(|v| v.as_str())
                                    == Some("object"),
                            &f("parameters"),
                            "must be a JSON Schema of type object",
                        );
                        if !h.parameters.is_null()
                            && jsonschema::validator_for(&h.parameters).is_err()
                        {
                            c.fail(&f("parameters"), "is not a valid JSON Schema");
                        }
                        let url_ok = url::Url::parse(&h.url)
                            .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                            .unwrap_or(false);
                        c.check(url_ok, &f("url"), "must be an absolute http(s) URL");
                        // What needs no DNS is refused now (a private address written in the
                        // URL); names are checked, and their answers pinned, on every call.
                        if url_ok
                            && let Ok(u) = url::Url::parse(&h.url)
                            && let Err(e) = self.config.tool_outbound().check_url(&u)
                        {
                            c.fail(&f("url"), e.to_string());
                        }
                        c.check(
                            !h.allow_private_network,
                            &f("allowPrivateNetwork"),
                            "only the server operator can let tools reach private networks \
                             (ALLOW_PRIVATE_TOOL_URLS or OUTBOUND_ALLOWED_PRIVATE_HOSTS)",
                        );
                        c.check(
                            matches!(
                                h.method.to_ascii_uppercase().as_str(),
                                "GET" | "POST" | "PUT" | "PATCH" | "DELETE"
                            ),
                            &f("method"),
                            "must be GET, POST, PUT, PATCH or DELETE",
                        );
                        c.check(h.headers.len() <= 20, &f("headers"), "at most 20 headers");
                        for k in h.headers.keys() {
                            c.check(
                                axum::http::HeaderName::from_bytes(k.as_bytes()).is_ok(),
                                &f("headers"),
                                "header names must be valid HTTP header names",
                            );
                            c.check(
                                !crate::agent::tools::is_reserved_header(k),
                                &f(&format!("headers.{k}")),
                                "Host and the framing headers (Content-Length, \
                                 Transfer-Encoding, Connection, ...) are set by the server",
                            );
                        }
                        c.check(
                            h.timeout_ms.is_none_or(|t| (100..=60_000).contains(&t)),
                            &f("timeoutMs"),
                            "must be between 100 and 60000",
                        );
                        h.name.clone()
                    }
                };
                if !names.insert(name.clone()) {
                    c.fail(&format!("tools[{n}]"), format!("duplicate tool `{name}`"));
                }
            }
            c.check(tools.len() <= 32, "tools", "at most 32 tools");
        }
    }

    /// Seals new header values; keeps the stored value where the client sent back the mask,
    /// but only for the same tool at the same origin: a stored secret never follows a
    /// changed URL, it has to be sent again.
    fn seal_tools(&self, tools: Vec<ToolSpec>, old: &[ToolSpec]) -> Result<Vec<ToolSpec>> {
        let origin = |u: &str| url::Url::parse(u).map(|u| u.origin().ascii_serialization());
        let mut c = Checks::default();
        let sealed = tools
            .into_iter()
            .enumerate()
            .map(|(n, t)| match t {
                ToolSpec::Http(mut h) => {
                    let prev = old.iter().find_map(|o| match o {
                        ToolSpec::Http(p) if p.name == h.name => Some(p),
                        _ => None,
                    });
                    let same_origin = prev.is_some_and(|p| origin(&p.url) == origin(&h.url));
                    for (k, v) in h.headers.iter_mut() {
                        if v != MASK {
                            *v = self.sealer.seal(v);
                            continue;
                        }
                        let field = format!("tools[{n}].headers.{k}");
                        match prev.and_then(|p| p.headers.get(k)) {
                            Some(stored) if same_origin => *v = stored.clone(),
                            Some(_) => c.fail(
                                &field,
                                "the tool's URL points to a new origin: send this header's \
                                 value again (a stored secret never follows a changed URL)",
                            ),
                            None => c.fail(
                                &field,
                                "send the value: the mask only keeps a value stored before",
                            ),
                        }
                    }
                    ToolSpec::Http(h)
                }
                other => other,
            })
            .collect();
        c.finish()?;
        Ok(sealed)
    }

    /// The agent as shown to clients: header values masked.
    pub fn agent_view(a: &Agent) -> Agent {
        let mut a = a.clone();
        for t in a.tools.iter_mut() {
            if let ToolSpec::Http(h) = t {
                for v in h.headers.values_mut() {
                    *v = MASK.into();
                }
                // Ignored since only the operator decides (a value stored before is never
                // shown, so it is not sent back and refused).
                h.allow_private_network = false;
            }
        }
        a
    }

    fn check_documents(tx: &WriteTx, tenant: &TenantId, ids: &[DocumentId]) -> Result<()> {
        let mut c = Checks::default();
        for id in ids {
            if tx.get::<Document>(tenant, id.as_str())?.is_none() {
                c.fail("documentIds", format!("document {id} not found"));
            }
        }
        c.finish()
    }

    pub fn list_agents(
        &self,
        caller: &Caller,
        status: Option<ActiveStatus>,
        page: &PageReq,
    ) -> Result<Page<Agent>> {
        caller
            .require(Action::ReadAgents)
            .map_err(|d| Error::denied(d, "agent"))?;
        let p = self.store.read(|tx| {
            tx.list_filtered::<Agent>(
                caller.tenant(),
                None,
                page.cursor.as_deref(),
                page.limit,
                false,
                |a| status.is_none_or(|s| a.status == s),
            )
        })?;
        Ok(Page {
            items: p.items.iter().map(Self::agent_view).collect(),
            next: p.next,
        })
    }

    pub fn get_agent(&self, caller: &Caller, id: &AgentId) -> Result<Agent> {
        caller
            .require(Action::ReadAgents)
            .map_err(|d| Error::denied(d, "agent"))?;
        self.store
            .read(|tx| tx.get::<Agent>(caller.tenant(), id.as_str()))?
            .map(|a| Self::agent_view(&a))
            .ok_or(Error::NotFound("agent"))
    }

    /// Finds an agent of the caller's tenant by id or slug (for `model` in /v1).
    pub fn find_agent(&self, caller: &Caller, id_or_slug: &str) -> Result<Agent> {
        caller
            .require(Action::ReadAgents)
            .map_err(|d| Error::denied(d, "agent"))?;
        let t = caller.tenant();
        self.store
            .read(|tx| {
                if let Some(id) = AgentId::parse(id_or_slug)
                    && let Some(a) = tx.get::<Agent>(t, id.as_str())?
                {
                    return Ok(Some(a));
                }
                match tx.index_get(Index::AgentSlug, &make_ref(t, id_or_slug))? {
                    Some(r) => match crate::store::split_ref(&r) {
                        Some((_, aid)) => tx.get::<Agent>(t, aid),
                        None => Ok(None),
                    },
                    None => Ok(None),
                }
            })?
            .ok_or(Error::NotFound("agent"))
    }

    pub fn create_agent(&self, caller: &Caller, input: AgentInput) -> Result<Agent> {
        caller
            .require(Action::ManageAgents)
            .map_err(|d| Error::denied(d, "agent"))?;
        let mut c = Checks::default();
        match &input.name {
            Some(_) => {}
            None => c.fail("name", "is required"),
        }
        self.check_agent_input(&mut c, &input);
        c.finish()?;
        let name = input.name.clone().unwrap_or_default().trim().to_string();
        let now = now();
        let tenant = caller.tenant().clone();
        let tools = self.seal_tools(input.tools.clone().unwrap_or_else(default_tools), &[])?;
        let agent = Agent {
            id: AgentId::new(),
            tenant_id: tenant.clone(),
            slug: input
                .slug
                .clone()
                .unwrap_or_else(|| slugify(&name))
                .chars()
                .take(64)
                .collect(),
            name,
            description: input.description.clone().flatten(),
            system_prompt: input
                .system_prompt
                .clone()
                .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.into()),
            model: input.model.clone().flatten(),
            temperature: input.temperature.unwrap_or(0.3),
            max_tokens: input.max_tokens.unwrap_or(1024),
            top_k: input.top_k.unwrap_or(8),
            retrieval_mode: input.retrieval_mode.unwrap_or(RetrievalMode::Hybrid),
            answer_mode: input.answer_mode.unwrap_or_default(),
            document_ids: input.document_ids.clone().unwrap_or_default(),
            greeting: input.greeting.clone().flatten(),
            fallback_message: Some(
                input
                    .fallback_message
                    .clone()
                    .flatten()
                    .unwrap_or_else(|| DEFAULT_FALLBACK.into()),
            ),
            language: input.language.clone().flatten(),
            tools,
            status: input.status.unwrap_or(ActiveStatus::Active),
            created_at: now,
            updated_at: now,
        };
        let explicit_slug = input.slug.is_some();
        let (agent, crossed) = self.store.write(|tx| {
            // In the creating transaction: two creates at limit-1 cannot both pass.
            let crossed = self.use_quota(tx, &tenant, super::plans::Limit::Agents, 1)?;
            Self::check_documents(tx, &tenant, &agent.document_ids)?;
            let mut agent = agent.clone();
            // A generated slug gets a numeric suffix on collision; an explicit one is a 409.
            let base = agent.slug.clone();
            for n in 2..1000 {
                if tx.index_insert_new(
                    Index::AgentSlug,
                    &make_ref(&tenant, &agent.slug),
                    &make_ref(&tenant, agent.id.as_str()),
                )? {
                    tx.put(&agent)?;
                    Self::link_documents(tx, &agent, &[])?;
                    return Ok((Self::agent_view(&agent), crossed));
                }
                if explicit_slug {
                    break;
                }
                agent.slug = format!("{base}-{n}");
            }
            Err(Error::Conflict(
                "slug_taken",
                format!("another agent already uses the slug `{}`", agent.slug),
                None,
            ))
        })?;
        self.announce(crossed);
        Ok(agent)
    }

    pub fn update_agent(&self, caller: &Caller, id: &AgentId, input: AgentInput) -> Result<Agent> {
        caller
            .require(Action::ManageAgents)
            .map_err(|d| Error::denied(d, "agent"))?;
        let mut c = Checks::default();
        self.check_agent_input(&mut c, &input);
        c.finish()?;
        let tenant = caller.tenant().clone();
        self.store.write(|tx| {
            let mut a = tx
                .get::<Agent>(&tenant, id.as_str())?
                .ok_or(Error::NotFound("agent"))?;
            let old_docs = a.document_ids.clone();
            if let Some(s) = &input.slug
                && s != &a.slug
            {
                if !tx.index_insert_new(
                    Index::AgentSlug,
                    &make_ref(&tenant, s),
                    &make_ref(&tenant, a.id.as_str()),
                )? {
                    return Err(Error::Conflict(
                        "slug_taken",
                        format!("another agent already uses the slug `{s}`"),
                        None,
                    ));
                }
                tx.index_remove(Index::AgentSlug, &make_ref(&tenant, &a.slug))?;
                a.slug = s.clone();
            }
            if let Some(v) = input.name {
                a.name = v.trim().into();
            }
            if let Some(v) = input.description {
                a.description = v;
            }
            if let Some(v) = input.system_prompt {
                a.system_prompt = v;
            }
            if let Some(v) = input.model {
                a.model = v;
            }
            if let Some(v) = input.temperature {
                a.temperature = v;
            }
            if let Some(v) = input.max_tokens {
                a.max_tokens = v;
            }
            if let Some(v) = input.top_k {
                a.top_k = v;
            }
            if let Some(v) = input.retrieval_mode {
                a.retrieval_mode = v;
            }
            if let Some(v) = input.answer_mode {
                a.answer_mode = v;
            }
            if let Some(v) = input.document_ids {
                Self::check_documents(tx, &tenant, &v)?;
                a.document_ids = v;
            }
            if let Some(v) = input.greeting {
                a.greeting = v;
            }
            if let Some(v) = input.fallback_message {
                a.fallback_message = v;
            }
            if let Some(v) = input.language {
                a.language = v;
            }
            if let Some(v) = input.tools {
                a.tools = self.seal_tools(v, &a.tools)?;
            }
            if let Some(v) = input.status {
                a.status = v;
            }
            a.updated_at = now();
            tx.put(&a)?;
            Self::link_documents(tx, &a, &old_docs)?;
            Ok(Self::agent_view(&a))
        })
    }

    pub fn delete_agent(&self, caller: &Caller, id: &AgentId) -> Result<()> {
        caller
            .require(Action::ManageAgents)
            .map_err(|d| Error::denied(d, "agent"))?;
        let tenant = caller.tenant().clone();
        self.store.write(|tx| {
            let mut a = tx
                .get::<Agent>(&tenant, id.as_str())?
                .ok_or(Error::NotFound("agent"))?;
            tx.index_remove(Index::AgentSlug, &make_ref(&tenant, &a.slug))?;
            let old = std::mem::take(&mut a.document_ids);
            Self::link_documents(tx, &a, &old)?;
            tx.delete::<Agent>(&tenant, id.as_str())?;
            Ok(())
        })
    }

    /// Keeps `Document.agentIds` in step with `Agent.documentIds` (both directions are read:
    /// the agent's list for prompts, the document's for index filters).
    pub(crate) fn link_documents(tx: &WriteTx, agent: &Agent, old: &[DocumentId]) -> Result<()> {
        for d in old.iter().filter(|d| !agent.document_ids.contains(d)) {
            if let Some(mut doc) = tx.get::<Document>(&agent.tenant_id, d.as_str())? {
                doc.agent_ids.retain(|a| a != &agent.id);
                tx.put(&doc)?;
            }
        }
        for d in agent.document_ids.iter().filter(|d| !old.contains(d)) {
            if let Some(mut doc) = tx.get::<Document>(&agent.tenant_id, d.as_str())?
                && !doc.agent_ids.contains(&agent.id)
            {
                doc.agent_ids.push(agent.id.clone());
                tx.put(&doc)?;
            }
        }
        Ok(())
    }
}
