//! Knowledge search: keyword (BM25), vector (cosine) or hybrid (fused), always inside the
//! caller's tenant, optionally restricted to an agent's or a list of documents.
//!
//! A broken embedding model never breaks keyword search: keyword mode does not touch it,
//! hybrid degrades to keyword and says so in [`SearchResult::warnings`], and only vector mode
//! fails ([`SearchError::Unavailable`]).

use super::guard::{self, GuardParams, Relevance};
use super::{Error, Knowledge};
use crate::agent::{Retrieve, Retrieved, Source};
use crate::auth::{Action, Caller};
use crate::index::fusion::LOOKUP_HITS;
use crate::index::{Filter, FusionParams, Hit, fuse_lookup, lookup_share};
use crate::model::{Agent, Chunk, Document, RetrievalMode};
use crate::store::chunk_key;
use crate::types::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;
use utoipa::ToSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    #[default]
    Hybrid,
    Keyword,
    Vector,
}

#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub query: String,
    /// Restrict to these documents (an agent's, or the caller's list).
    pub documents: Option<Vec<DocumentId>>,
    pub top_k: usize,
    pub mode: SearchMode,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchHit {
    pub chunk_id: ChunkId,
    pub document_id: DocumentId,
    pub document_name: String,
    pub text: String,
    pub score: f32,
    pub page: Option<u32>,
    pub headings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchResult {
    pub data: Vec<SearchHit>,
    /// The mode actually used (hybrid falls back to keyword without embeddings, or when the
    /// tenant's embedding model is unavailable).
    pub mode: SearchMode,
    pub took_ms: f64,
    /// Why the results are not what the mode asked for (hybrid answered by keywords only
    /// because vector search is unavailable). Absent when there is nothing to say.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Best cosine similarity among vector hits, when vectors were searched.
    #[serde(skip)]
    pub best_similarity: Option<f32>,
    #[serde(skip)]
    pub keyword_hits: usize,
}

/// Vectors unavailable for a vector-only search.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("vector search needs an embedding model; none is configured (keyword search works)")]
    NoEmbeddings,
    /// The tenant's embedding model is configured but cannot be used now.
    #[error("vector search is unavailable: {0} (keyword search works)")]
    Unavailable(String),
    #[error(transparent)]
    Other(#[from] Error),
}

/// The input of a hybrid search's fusion; see [`Knowledge::search_explained`].
#[derive(Debug, Clone)]
pub struct FusionInput {
    /// BM25 hits, best first, at the search's candidate depth.
    pub keyword: Vec<Hit>,
    /// Cosine hits, best first, at the same depth.
    pub vector: Vec<Hit>,
    /// Whether one of the first [`LOOKUP_HITS`] keyword hits contains every query term
    /// (only looked up for queries short enough for [`lookup_share`] to count it).
    pub covered: bool,
    /// Distinct query terms, as the text index analyses them.
    pub terms: usize,
    /// Hits the search returns after fusion.
    pub k: usize,
}

/// What [`Knowledge::lists`] found for a search.
struct Lists {
    mode: SearchMode,
    warnings: Vec<String>,
    keyword: Vec<Hit>,
    vector: Vec<Hit>,
    k: usize,
}

impl Knowledge {
    /// Narrows a search's documents to those of an agent of the tenant: `documents` when
    /// given (keeping only the agent's), else all of the agent's. `None` when the tenant has
    /// no such agent. Needs [`Action::ReadDocuments`]. Blocking.
    pub fn agent_scope(
        &self,
        caller: &Caller,
        agent: &AgentId,
        documents: Option<Vec<DocumentId>>,
    ) -> Result<Option<Vec<DocumentId>>, Error> {
        require(caller, Action::ReadDocuments)?;
        let t = caller.tenant();
        let Some(agent) = self
            .svc
            .store
            .read(|tx| tx.get::<Agent>(t, agent.as_str()))?
        else {
            return Ok(None);
        };
        Ok(Some(match documents {
            Some(ds) => ds
                .into_iter()
                .filter(|d| agent.document_ids.contains(d))
                .collect(),
            None => agent.document_ids,
        }))
    }

    /// Searches the caller's tenant. Needs [`Action::ReadDocuments`]. Blocking.
    pub fn search(&self, caller: &Caller, q: &SearchQuery) -> Result<SearchResult, SearchError> {
        require(caller, Action::ReadDocuments)?;
        Ok(self.search_in(caller.tenant(), q, false)?.0)
    }

    /// [`search`](Self::search), and for a search answered in hybrid mode what its fusion
    /// fused: the product's own keyword and vector lists and lookup evidence, from the same
    /// single embedding of the query. For evaluating other fusion settings on exactly what
    /// the search saw (`examples/beir_eval.rs`). Needs [`Action::ReadDocuments`]. Blocking.
    pub fn search_explained(
        &self,
        caller: &Caller,
        q: &SearchQuery,
    ) -> Result<(SearchResult, Option<FusionInput>), SearchError> {
        require(caller, Action::ReadDocuments)?;
        self.search_in(caller.tenant(), q, true)
    }

    /// [`search`](Self::search) after the check; with `explain`, also the fusion input of a
    /// hybrid answer.
    fn search_in(
        &self,
        t: &TenantId,
        q: &SearchQuery,
        explain: bool,
    ) -> Result<(SearchResult, Option<FusionInput>), SearchError> {
        let started = Instant::now();
        let Some(lists) = self.lists(t, q)? else {
            let empty = SearchResult {
                data: vec![],
                mode: q.mode,
                took_ms: 0.0,
                warnings: vec![],
                best_similarity: None,
                keyword_hits: 0,
            };
            return Ok((empty, None));
        };
        let Lists {
            mode,
            warnings,
            keyword,
            vector,
            k,
        } = lists;
        let best_similarity = vector.first().map(|h| h.score);
        let keyword_hits = keyword.len();
        let mut input = None;
        let ranked: Vec<Hit> = match mode {
            SearchMode::Keyword => keyword.into_iter().take(k).collect(),
            SearchMode::Vector => vector.into_iter().take(k).collect(),
            SearchMode::Hybrid => {
                let params = FusionParams::default();
                let (covered, terms) = self.lookup_evidence(t, &q.query, &keyword, &params)?;
                let lookup = lookup_share(covered, terms, &params);
                let fused = fuse_lookup(&keyword, &vector, k, &params, lookup, terms);
                if explain {
                    input = Some(FusionInput {
                        keyword,
                        vector,
                        covered,
                        terms,
                        k,
                    });
                }
                fused
            }
        };
        let data = self.load_hits(t, &ranked)?;
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok((
            SearchResult {
                data,
                mode,
                took_ms,
                warnings,
                best_similarity,
                keyword_hits,
            },
            input,
        ))
    }

    /// The ranked lists a search needs for its mode (the mode it can actually serve), each
    /// `max(3k, 50)` deep for hybrid; `None` for a search that finds nothing by definition
    /// (an empty query or document list).
    fn lists(&self, t: &TenantId, q: &SearchQuery) -> Result<Option<Lists>, SearchError> {
        let k = q.top_k.clamp(1, 50);
        let wide = (3 * k).max(50);
        if q.documents.as_ref().is_some_and(|d| d.is_empty()) || q.query.trim().is_empty() {
            return Ok(None);
        }
        let mut warnings = Vec::new();
        // Keyword search never needs (or waits for) the embedding model.
        let space = match q.mode {
            SearchMode::Keyword => None,
            // During a change of model, the old model's complete index answers.
            _ => match self.search_space(t) {
                Ok(space) => space,
                Err(Error::Unavailable(reason)) if q.mode == SearchMode::Hybrid => {
                    warnings.push(degraded(&reason));
                    None
                }
                Err(Error::Unavailable(reason)) => return Err(SearchError::Unavailable(reason)),
                Err(e) => return Err(e.into()),
            },
        };
        let mut mode = match (q.mode, &space) {
            (SearchMode::Vector, None) => return Err(SearchError::NoEmbeddings),
            (SearchMode::Hybrid, None) => SearchMode::Keyword,
            (m, _) => m,
        };
        // The query vector first: when the model fails now, hybrid still answers by keywords.
        let query_vector = match &space {
            Some(space) if mode != SearchMode::Keyword => {
                match space.embedder.embed_query(&q.query) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        self.embedding_failed(t, space, &e);
                        if mode == SearchMode::Vector {
                            return Err(SearchError::Unavailable(e.to_string()));
                        }
                        warnings.push(degraded(&e.to_string()));
                        mode = SearchMode::Keyword;
                        None
                    }
                }
            }
            _ => None,
        };
        let filter = Filter {
            documents: q.documents.clone(),
            agent: None,
        };
        let depth = if mode == SearchMode::Hybrid { wide } else { k };
        let keyword = if mode != SearchMode::Vector {
            self.text
                .search(t, &q.query, &filter, depth)
                .map_err(Error::from)?
        } else {
            vec![]
        };
        let vector = match (&space, &query_vector) {
            (Some(space), Some(v)) => space
                .index
                .search(t, v, q.documents.as_deref(), depth)
                .map_err(Error::from)?,
            _ => vec![],
        };
        Ok(Some(Lists {
            mode,
            warnings,
            keyword,
            vector,
            k,
        }))
    }

    /// The inputs of [`lookup_share`]: whether one of the first [`LOOKUP_HITS`] keyword hits
    /// contains every query term, and the query's term count. Only short queries (those
    /// the rule can count) pay for reading their chunks.
    fn lookup_evidence(
        &self,
        t: &TenantId,
        query: &str,
        keyword: &[Hit],
        params: &FusionParams,
    ) -> Result<(bool, usize), Error> {
        let terms = self.text.term_count(query);
        if keyword.is_empty() || lookup_share(true, terms, params) == 0.0 {
            return Ok((false, terms));
        }
        let covered = self.svc.store.read(|tx| {
            for h in keyword.iter().take(LOOKUP_HITS) {
                if let Some(c) = tx.get::<Chunk>(t, &chunk_key(&h.document, &h.chunk))? {
                    let text = format!("{}\n{}", c.headings.join("\n"), c.text);
                    if self.text.coverage(query, &text).0 {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        })?;
        Ok((covered, terms))
    }

    /// Chunk text and document names for ranked hits; hits whose chunk is gone are dropped.
    fn load_hits(&self, t: &TenantId, hits: &[Hit]) -> Result<Vec<SearchHit>, Error> {
        Ok(self.svc.store.read(|tx| {
            let mut names: HashMap<DocumentId, Option<String>> = HashMap::new();
            let mut out = Vec::with_capacity(hits.len());
            for h in hits {
                let Some(c) = tx.get::<Chunk>(t, &chunk_key(&h.document, &h.chunk))? else {
                    continue;
                };
                let name = match names.get(&h.document) {
                    Some(n) => n.clone(),
                    None => {
                        let n = tx.get::<Document>(t, h.document.as_str())?.map(|d| d.name);
                        names.insert(h.document.clone(), n.clone());
                        n
                    }
                };
                let Some(document_name) = name else { continue };
                out.push(SearchHit {
                    chunk_id: c.id,
                    document_id: c.document_id,
                    document_name,
                    text: c.text,
                    score: h.score,
                    page: c.page,
                    headings: c.headings,
                });
            }
            Ok(out)
        })?)
    }
}

fn require(caller: &Caller, action: Action) -> Result<(), Error> {
    caller
        .require(action)
        .map_err(|d| crate::domain::Error::denied(d, "document").into())
}

/// The warning of a hybrid search answered by keywords only.
fn degraded(reason: &str) -> String {
    format!("vector search is unavailable ({reason}); these are keyword results only")
}

impl Knowledge {
    /// An agent's search of its own documents, and the relevance guard's verdict on it
    /// (see [`guard`](super::guard)). What [`Retrieve::retrieve`] answers from; public so
    /// the evaluation measures the product's guard. Needs [`Action::RunAgent`]. Blocking.
    pub fn agent_search(
        &self,
        caller: &Caller,
        agent: &Agent,
        query: &str,
        top_k: usize,
    ) -> Result<(SearchResult, Relevance), String> {
        caller
            .require(Action::RunAgent)
            .map_err(|_| "this caller may not run agents".to_string())?;
        let t = caller.tenant();
        if &agent.tenant_id != t {
            return Err("the agent belongs to another tenant".into());
        }
        let mode = match agent.retrieval_mode {
            RetrievalMode::Off => {
                return Ok((
                    SearchResult {
                        data: vec![],
                        mode: SearchMode::Keyword,
                        took_ms: 0.0,
                        warnings: vec![],
                        best_similarity: None,
                        keyword_hits: 0,
                    },
                    Relevance::default(),
                ));
            }
            RetrievalMode::Keyword => SearchMode::Keyword,
            RetrievalMode::Vector => SearchMode::Vector,
            RetrievalMode::Hybrid => SearchMode::Hybrid,
        };
        let q = SearchQuery {
            query: query.to_string(),
            documents: Some(agent.document_ids.clone()),
            top_k,
            mode,
        };
        let r = match self.search_in(t, &q, false) {
            Ok((r, _)) => r,
            // Without a (working) model, vector agents fall back to keywords rather than fail.
            Err(SearchError::NoEmbeddings | SearchError::Unavailable(_)) => {
                self.search_in(
                    t,
                    &SearchQuery {
                        mode: SearchMode::Keyword,
                        ..q
                    },
                    false,
                )
                .map_err(|e| e.to_string())?
                .0
            }
            Err(e) => return Err(e.to_string()),
        };
        let relevance = self.relevance(t, query, &r).map_err(|e| e.to_string())?;
        Ok((r, relevance))
    }

    /// The guard's evidence and verdict for a search's result.
    fn relevance(&self, t: &TenantId, query: &str, r: &SearchResult) -> Result<Relevance, Error> {
        let terms = guard::query_terms(query);
        let coverage = if terms.is_empty() || r.data.is_empty() {
            0.0
        } else {
            let (docs, dfs) = self.text.doc_freqs(t, &terms)?;
            let weights = guard::weights(docs, &dfs);
            r.data
                .iter()
                .take(guard::GUARD_HITS)
                .map(|h| {
                    let text = format!("{}\n{}", h.headings.join("\n"), h.text);
                    guard::coverage(&terms, &weights, &text)
                })
                .fold(0.0, f32::max)
        };
        let similarity = r.best_similarity;
        Ok(Relevance {
            coverage,
            similarity,
            relevant: !r.data.is_empty()
                && guard::judge(coverage, similarity, &GuardParams::default()),
        })
    }
}

impl Retrieve for Knowledge {
    /// Needs [`Action::RunAgent`], and only searches the agent's own tenant. Nothing when
    /// the relevance guard finds nothing that answers.
    fn retrieve(
        &self,
        caller: &Caller,
        agent: &Agent,
        query: &str,
        top_k: usize,
    ) -> Result<Retrieved, String> {
        let (r, relevance) = self.agent_search(caller, agent, query, top_k)?;
        if !relevance.relevant {
            return Ok(Retrieved::default());
        }
        Ok(Retrieved {
            sources: r
                .data
                .into_iter()
                .map(|h| Source {
                    chunk_id: h.chunk_id,
                    document_id: h.document_id,
                    document_name: h.document_name,
                    text: h.text,
                    page: h.page,
                    headings: h.headings,
                    score: h.score,
                })
                .collect(),
        })
    }

    /// The tenant's embedding model; `None` without one, or when it fails now (the
    /// extractive answer then scores sentences by their terms).
    fn embed(
        &self,
        caller: &Caller,
        query: &str,
        texts: &[String],
    ) -> Option<(Vec<f32>, Vec<Vec<f32>>)> {
        let space = self.space_for(caller.tenant()).ok().flatten()?;
        let q = space.embedder.embed_query(query).ok()?;
        let v = space.embedder.embed(texts).ok()?;
        (v.len() == texts.len()).then_some((q, v))
    }
}
