//! BM25 keyword index over chunks, one tantivy index shared by all tenants.
//!
//! Owns `<dir>` and nothing else; must not depend on `api/`, `domain/` or `store/`.
//! Tenancy: every query carries a mandatory tenant clause, and BM25 statistics (document
//! count, average length, document frequencies) are computed inside the tenant, so neither
//! the results nor their scores depend on other tenants' data.

use super::{Error, MAX_K};
use crate::types::{AgentId, ChunkId, DocumentId, TenantId};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    Bm25StatisticsProvider, BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, TermQuery,
    TermSetQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer,
};
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TERMINATED, TantivyDocument,
    Term,
};

/// Name under which our analyzer is registered; it is part of the schema.
const ANALYZER: &str = "aig_en";
/// One indexing thread keeps ingest from starving queries on a 2-core machine; 32 MB is
/// above tantivy's 15 MB per-thread floor and bounds the writer's memory.
const WRITER_THREADS: usize = 1;
const WRITER_BUDGET: usize = 32_000_000;
/// Queries are user text; past this many distinct terms the extra clauses only cost time.
const MAX_QUERY_TERMS: usize = 64;

/// One chunk to index. `agents` lists the agents whose knowledge base holds the document;
/// an agent-filtered search only returns chunks whose list contains that agent.
#[derive(Clone, Debug)]
pub struct TextDoc {
    pub tenant: TenantId,
    pub document: DocumentId,
    pub chunk: ChunkId,
    pub agents: Vec<AgentId>,
    pub text: String,
    pub headings: Vec<String>,
}

/// Optional restrictions of a search inside its tenant. Both set means both apply.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only chunks of these documents (an empty list matches nothing).
    pub documents: Option<Vec<DocumentId>>,
    /// Only chunks of documents assigned to this agent.
    pub agent: Option<AgentId>,
}

pub use super::Hit;

/// Query-time tuning of the text index.
#[derive(Clone, Debug)]
pub struct TextParams {
    /// Headings are also indexed in `body`; a query term matching them again in their own
    /// field adds this fraction of that field's BM25, lifting chunks under a matching
    /// section or document title.
    pub headings_boost: f32,
}

impl Default for TextParams {
    fn default() -> Self {
        Self {
            headings_boost: 0.3,
        }
    }
}

#[derive(Clone, Copy)]
struct Fields {
    /// Raw tenant id: the mandatory filter of every query, and delete-by-tenant.
    tenant: Field,
    /// `tenant/document`: delete-by-document and the document filter, scoped to the tenant.
    doc_key: Field,
    /// `tenant/chunk`: makes `add` an upsert of the chunk.
    chunk_key: Field,
    /// Agent ids the chunk's document is assigned to (multi-valued).
    agent: Field,
    /// Stored ids returned in hits.
    document: Field,
    chunk: Field,
    /// Headings followed by the chunk text: the BM25 field.
    body: Field,
    headings: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    // Positions are not indexed: queries are bags of words, and positions would roughly
    // double the postings size.
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        tenant: b.add_text_field("tenant", STRING),
        doc_key: b.add_text_field("doc_key", STRING),
        chunk_key: b.add_text_field("chunk_key", STRING),
        agent: b.add_text_field("agent", STRING),
        document: b.add_text_field("document", STORED),
        chunk: b.add_text_field("chunk", STORED),
        body: b.add_text_field("body", text.clone()),
        headings: b.add_text_field("headings", text),
    };
    (b.build(), fields)
}

/// Unicode word splitting, lower-casing, accent folding and English stemming. Stemming is
/// worth +0.01 nDCG@10 on the BoolQ evaluation; for other languages it is mostly a no-op.
fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

fn key(tenant: &TenantId, id: &str) -> String {
    format!("{}/{}", tenant.as_str(), id)
}

/// BM25 index of chunks for all tenants. `Send + Sync`; writes are serialised on one
/// `IndexWriter`, searches run concurrently on the latest committed state.
pub struct TextIndex {
    dir: PathBuf,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    analyzer: TextAnalyzer,
    params: TextParams,
    needs_rebuild: bool,
    /// Per-tenant statistics for the current searcher generation; see [`StatsCache`].
    tenant_stats: Mutex<StatsCache>,
}

/// BM25 statistics of tenants, valid for one searcher generation (any commit clears it).
/// Document frequencies inside a tenant cost an intersection each, and query terms repeat
/// (the common words of a language), so they are cached too, up to `MAX_CACHED_TERMS`.
#[derive(Default)]
struct StatsCache {
    generation: Option<u64>,
    /// tenant -> (live documents, body tokens)
    totals: HashMap<String, (u64, u64)>,
    /// (tenant, term) -> documents of the tenant containing the term
    doc_freqs: HashMap<(String, Term), u64>,
    /// tenant -> `doc_key`s (`tenant/document`) with at least one live chunk
    documents: HashMap<String, Arc<HashSet<String>>>,
}

const MAX_CACHED_TERMS: usize = 50_000;

impl StatsCache {
    fn at(&mut self, generation: u64) -> &mut Self {
        if self.generation != Some(generation) {
            *self = StatsCache {
                generation: Some(generation),
                ..StatsCache::default()
            };
        }
        self
    }
}

impl TextIndex {
    /// Opens `<dir>` (creating it). A missing, corrupt or other-schema index is recreated
    /// empty and [`needs_rebuild`](Self::needs_rebuild) says so, so the caller re-feeds it
    /// from the store. A lock held by another process is an error, not corruption.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Self::open_with(dir, TextParams::default())
    }

    /// [`open`](Self::open) with explicit tuning.
    pub fn open_with(dir: &Path, params: TextParams) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
        let (index, needs_rebuild) = match open_existing(dir, &schema) {
            Ok(Some(index)) => (index, false),
            Ok(None) => (Index::create_in_dir(dir, schema.clone())?, true),
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), %reason, "text index unusable; recreating it empty");
                wipe_dir(dir)?;
                (Index::create_in_dir(dir, schema.clone())?, true)
            }
        };
        index.tokenizers().register(ANALYZER, analyzer());
        let writer = index.writer_with_num_threads(WRITER_THREADS, WRITER_BUDGET)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            reader,
            writer: Mutex::new(writer),
            fields,
            analyzer: analyzer(),
            params,
            needs_rebuild,
            tenant_stats: Mutex::new(StatsCache::default()),
        })
    }

    /// True when `open` found no usable index and created an empty one.
    pub fn needs_rebuild(&self) -> bool {
        self.needs_rebuild
    }

    /// The directory this index owns.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds (or replaces, by chunk id) chunks, then commits: results are visible when this
    /// returns. A commit costs a few milliseconds and creates a segment that background
    /// merges fold away, so callers should pass a whole document's chunks per call rather
    /// than one chunk at a time. To change a document's agents, add its chunks again.
    pub fn add(&self, docs: &[TextDoc]) -> Result<(), Error> {
        if docs.is_empty() {
            return Ok(());
        }
        let mut writer = self.lock_writer();
        self.queue_adds(&writer, docs)?;
        self.commit(&mut writer)
    }

    /// Replaces every chunk of one document of one tenant with `docs` (that document's new
    /// chunks; none removes it), in one commit: a search sees the old chunks or the new,
    /// never neither, and a crash leaves one or the other. Tantivy applies a delete to the
    /// documents added before it only, so the new chunks, added after, stay.
    pub fn replace_document(
        &self,
        tenant: &TenantId,
        doc: &DocumentId,
        docs: &[TextDoc],
    ) -> Result<(), Error> {
        debug_assert!(
            docs.iter()
                .all(|d| d.tenant == *tenant && d.document == *doc)
        );
        let mut writer = self.lock_writer();
        writer.delete_term(Term::from_field_text(
            self.fields.doc_key,
            &key(tenant, doc.as_str()),
        ));
        self.queue_adds(&writer, docs)?;
        self.commit(&mut writer)
    }

    /// Queues `docs` on the writer, each replacing the chunk of the same id, for the caller's
    /// commit.
    fn queue_adds(&self, writer: &IndexWriter, docs: &[TextDoc]) -> Result<(), Error> {
        let f = self.fields;
        for d in docs {
            let chunk_key = key(&d.tenant, d.chunk.as_str());
            writer.delete_term(Term::from_field_text(f.chunk_key, &chunk_key));
            let mut doc = TantivyDocument::default();
            doc.add_text(f.tenant, d.tenant.as_str());
            doc.add_text(f.doc_key, key(&d.tenant, d.document.as_str()));
            doc.add_text(f.chunk_key, &chunk_key);
            for a in &d.agents {
                doc.add_text(f.agent, a.as_str());
            }
            doc.add_text(f.document, d.document.as_str());
            doc.add_text(f.chunk, d.chunk.as_str());
            let headings = d.headings.join("\n");
            doc.add_text(f.body, format!("{headings}\n{}", d.text));
            doc.add_text(f.headings, headings);
            writer.add_document(doc)?;
        }
        Ok(())
    }

    /// The searcher generation: one more after each commit (tests count commits with it).
    #[cfg(test)]
    pub(crate) fn generation(&self) -> u64 {
        self.reader.searcher().generation().generation_id()
    }

    /// Removes every chunk of one document of one tenant, and commits.
    pub fn delete_document(&self, tenant: &TenantId, doc: &DocumentId) -> Result<(), Error> {
        let mut writer = self.lock_writer();
        writer.delete_term(Term::from_field_text(
            self.fields.doc_key,
            &key(tenant, doc.as_str()),
        ));
        self.commit(&mut writer)
    }

    /// How many chunks of one document of one tenant the index holds (committed, not
    /// deleted).
    pub fn document_chunks(&self, tenant: &TenantId, doc: &DocumentId) -> Result<usize, Error> {
        let q = TermQuery::new(
            Term::from_field_text(self.fields.doc_key, &key(tenant, doc.as_str())),
            IndexRecordOption::Basic,
        );
        Ok(self.reader.searcher().search(&q, &Count)?)
    }

    /// Removes every chunk of a tenant, and commits.
    pub fn delete_tenant(&self, tenant: &TenantId) -> Result<(), Error> {
        let mut writer = self.lock_writer();
        writer.delete_term(Term::from_field_text(self.fields.tenant, tenant.as_str()));
        self.commit(&mut writer)
    }

    /// Removes everything (before a full rebuild), and commits.
    pub fn clear(&self) -> Result<(), Error> {
        let mut writer = self.lock_writer();
        writer.delete_all_documents()?;
        self.commit(&mut writer)
    }

    /// BM25 top-`k` chunks of one tenant, optionally restricted to documents and/or an
    /// agent. Never returns other tenants' chunks. The query is plain user text: it is
    /// tokenised like the indexed text, never parsed as query syntax, so it cannot fail on
    /// quotes or operators. Chunks matching no query term are not returned. `k` is capped
    /// at [`MAX_K`].
    pub fn search(
        &self,
        tenant: &TenantId,
        query: &str,
        filter: &Filter,
        k: usize,
    ) -> Result<Vec<Hit>, Error> {
        let f = self.fields;
        let k = k.min(MAX_K);
        let terms = self.query_terms(query);
        if k == 0 || terms.is_empty() {
            return Ok(Vec::new());
        }
        let mut text: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(terms.len() * 2);
        for t in &terms {
            text.push((
                Occur::Should,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.body, t),
                    IndexRecordOption::WithFreqs,
                )),
            ));
            if self.params.headings_boost > 0.0 {
                text.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(
                        Box::new(TermQuery::new(
                            Term::from_field_text(f.headings, t),
                            IndexRecordOption::WithFreqs,
                        )),
                        self.params.headings_boost,
                    )),
                ));
            }
        }
        let tenant_term = Term::from_field_text(f.tenant, tenant.as_str());
        let searcher = self.reader.searcher();
        let (docs, tokens) = self.tenant_totals(&searcher, &tenant_term)?;
        if docs == 0 {
            return Ok(Vec::new());
        }
        let text_query: Box<dyn Query> = Box::new(BooleanQuery::new(text));
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(4);
        // The tenant clause is mandatory, except when this tenant owns every live document
        // of `searcher` (a fixed snapshot, the one searched below): then it filters nothing
        // and only costs time, because it turns off tantivy's top-k pruning.
        if docs != searcher.num_docs() {
            clauses.push((
                Occur::Must,
                filter_clause(TermQuery::new(
                    tenant_term.clone(),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if let Some(docs) = &filter.documents {
            // Only the filter's documents that have live chunks matter. When they are all
            // of the tenant's (an agent holding every document) the clause filters nothing
            // and, like the tenant clause, would only turn off top-k pruning: dropped.
            // When most are, excluding the few others reads fewer postings than including
            // the many.
            let live = self.tenant_documents(&searcher, tenant)?;
            let wanted: HashSet<String> = docs
                .iter()
                .map(|d| key(tenant, d.as_str()))
                .filter(|k| live.contains(k))
                .collect();
            if wanted.is_empty() {
                return Ok(Vec::new());
            }
            if wanted.len() < live.len() {
                let term = |k: &String| Term::from_field_text(f.doc_key, k);
                if live.len() - wanted.len() < wanted.len() {
                    let others = live.iter().filter(|k| !wanted.contains(*k)).map(term);
                    clauses.push((Occur::MustNot, Box::new(TermSetQuery::new(others))));
                } else {
                    let keys = wanted.iter().map(term);
                    clauses.push((Occur::Must, filter_clause(TermSetQuery::new(keys))));
                }
            }
        }
        if let Some(agent) = &filter.agent {
            clauses.push((
                Occur::Must,
                filter_clause(TermQuery::new(
                    Term::from_field_text(f.agent, agent.as_str()),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        let query: Box<dyn Query> = if clauses.is_empty() {
            text_query
        } else {
            clauses.push((Occur::Must, text_query));
            Box::new(BooleanQuery::new(clauses))
        };
        let stats = TenantStats {
            searcher: &searcher,
            cache: &self.tenant_stats,
            tenant: tenant_term,
            body: f.body,
            docs,
            tokens,
        };
        let top = searcher.search_with_statistics_provider(
            query.as_ref(),
            &TopDocs::with_limit(k).order_by_score(),
            &stats,
        )?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let chunk = doc
                .get_first(f.chunk)
                .and_then(|v| v.as_str())
                .and_then(ChunkId::parse);
            let document = doc
                .get_first(f.document)
                .and_then(|v| v.as_str())
                .and_then(DocumentId::parse);
            // Ids are written by `add` from typed ids; one that does not parse means a
            // damaged document, which is skipped rather than failing the search.
            if let (Some(chunk), Some(document)) = (chunk, document) {
                hits.push(Hit {
                    chunk,
                    document,
                    score,
                });
            }
        }
        Ok(hits)
    }

    /// Query text -> distinct analysed terms, in first-seen order.
    /// Whether every term of `query` (as this index analyses it) occurs in `text`, and how
    /// many distinct terms the query has: the input of [`lookup_share`](super::fusion::lookup_share).
    pub fn coverage(&self, query: &str, text: &str) -> (bool, usize) {
        let terms = self.query_terms(query);
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut missing: HashSet<&str> = terms.iter().map(String::as_str).collect();
        while !missing.is_empty() && stream.advance() {
            missing.remove(stream.token().text.as_str());
        }
        (missing.is_empty() && !terms.is_empty(), terms.len())
    }

    /// The number of live chunks of `tenant` and, for each of `terms` (analysed terms, as
    /// [`terms::content_terms`](super::terms::content_terms) returns them), how many of
    /// them contain it: the inputs of an inverse document frequency inside the tenant.
    pub fn doc_freqs(&self, tenant: &TenantId, terms: &[String]) -> Result<(u64, Vec<u64>), Error> {
        let searcher = self.reader.searcher();
        let tenant_term = Term::from_field_text(self.fields.tenant, tenant.as_str());
        let (docs, tokens) = self.tenant_totals(&searcher, &tenant_term)?;
        if docs == 0 {
            return Ok((0, vec![0; terms.len()]));
        }
        let stats = TenantStats {
            searcher: &searcher,
            cache: &self.tenant_stats,
            tenant: tenant_term,
            body: self.fields.body,
            docs,
            tokens,
        };
        let mut out = Vec::with_capacity(terms.len());
        for t in terms {
            out.push(stats.doc_freq(&Term::from_field_text(self.fields.body, t))?);
        }
        Ok((docs, out))
    }

    /// Distinct terms of `query` as this index analyses it.
    pub fn term_count(&self, query: &str) -> usize {
        self.query_terms(query).len()
    }

    fn query_terms(&self, query: &str) -> Vec<String> {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(query);
        let mut seen = HashSet::new();
        let mut terms = Vec::new();
        while stream.advance() {
            let t = &stream.token().text;
            if terms.len() < MAX_QUERY_TERMS && seen.insert(t.clone()) {
                terms.push(t.clone());
            }
        }
        terms
    }

    /// (live documents, body tokens) of one tenant, cached per searcher generation.
    fn tenant_totals(&self, searcher: &Searcher, tenant: &Term) -> Result<(u64, u64), Error> {
        let generation = searcher.generation().generation_id();
        let name = tenant_name(tenant);
        if let Some(v) = self.lock_stats().at(generation).totals.get(&name) {
            return Ok(*v);
        }
        let mut docs = 0u64;
        let mut tokens = 0u64;
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(self.fields.tenant)?;
            let Some(mut postings) = inverted.read_postings(tenant, IndexRecordOption::Basic)?
            else {
                continue;
            };
            let norms = segment.get_fieldnorms_reader(self.fields.body)?;
            let mut doc = postings.doc();
            while doc != TERMINATED {
                if !segment.is_deleted(doc) {
                    docs += 1;
                    tokens += u64::from(norms.fieldnorm(doc));
                }
                doc = postings.advance();
            }
        }
        self.lock_stats()
            .at(generation)
            .totals
            .insert(name, (docs, tokens));
        Ok((docs, tokens))
    }

    /// `doc_key`s of one tenant's documents that have a live chunk in `searcher`, cached
    /// per searcher generation. Reads the tenant's range of the `doc_key` term dictionary
    /// (one term per document and segment), not the chunks.
    fn tenant_documents(
        &self,
        searcher: &Searcher,
        tenant: &TenantId,
    ) -> Result<Arc<HashSet<String>>, Error> {
        let generation = searcher.generation().generation_id();
        if let Some(v) = self
            .lock_stats()
            .at(generation)
            .documents
            .get(tenant.as_str())
        {
            return Ok(Arc::clone(v));
        }
        // Keys are `tenant/document`; '0' is the byte after '/'.
        let from = format!("{}/", tenant.as_str());
        let to = format!("{}0", tenant.as_str());
        let mut live = HashSet::new();
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(self.fields.doc_key)?;
            let mut terms = inverted.terms().range().ge(&from).lt(&to).into_stream()?;
            while terms.advance() {
                let Ok(k) = std::str::from_utf8(terms.key()) else {
                    continue;
                };
                if live.contains(k) {
                    continue;
                }
                let mut postings = inverted
                    .read_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)?;
                let mut doc = postings.doc();
                while doc != TERMINATED && segment.is_deleted(doc) {
                    doc = postings.advance();
                }
                if doc != TERMINATED {
                    live.insert(k.to_string());
                }
            }
        }
        let live = Arc::new(live);
        self.lock_stats()
            .at(generation)
            .documents
            .insert(tenant.as_str().to_string(), Arc::clone(&live));
        Ok(live)
    }

    fn commit(&self, writer: &mut IndexWriter) -> Result<(), Error> {
        writer.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        // A panic while holding the writer leaves nothing half-applied that a later commit
        // would expose (uncommitted operations are discarded on rollback/drop), so a
        // poisoned lock is safe to reuse.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, StatsCache> {
        self.tenant_stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A filter that must match but adds nothing to the score.
fn filter_clause(q: impl Query) -> Box<dyn Query> {
    Box::new(ConstScoreQuery::new(Box::new(q), 0.0))
}

/// BM25 statistics restricted to one tenant.
struct TenantStats<'a> {
    searcher: &'a Searcher,
    cache: &'a Mutex<StatsCache>,
    tenant: Term,
    body: Field,
    docs: u64,
    tokens: u64,
}

impl Bm25StatisticsProvider for TenantStats<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        if field == self.body {
            Ok(self.tokens)
        } else {
            // Headings: scale the index-wide count to the tenant's share of documents;
            // only its average length matters and that is similar across tenants.
            let all = self.searcher.total_num_tokens(field)?;
            let total_docs = self.searcher.num_docs().max(1);
            Ok(all.saturating_mul(self.docs) / total_docs)
        }
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        // Every live document is this tenant's: the index-wide count is the tenant's.
        // (Its count includes deleted documents not merged away yet, hence the clamp:
        // tantivy asserts doc_freq <= total_num_docs.)
        if self.docs == self.searcher.num_docs() {
            return Ok(self.searcher.doc_freq(term)?.min(self.docs));
        }
        let generation = self.searcher.generation().generation_id();
        let key = (tenant_name(&self.tenant), term.clone());
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&n) = cache.at(generation).doc_freqs.get(&key) {
            return Ok(n);
        }
        drop(cache);
        let both = BooleanQuery::intersection(vec![
            Box::new(TermQuery::new(term.clone(), IndexRecordOption::Basic)) as Box<dyn Query>,
            Box::new(TermQuery::new(
                self.tenant.clone(),
                IndexRecordOption::Basic,
            )),
        ]);
        let n = self.searcher.search(&both, &Count)? as u64;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let cache = cache.at(generation);
        if cache.doc_freqs.len() >= MAX_CACHED_TERMS {
            cache.doc_freqs.clear();
        }
        cache.doc_freqs.insert(key, n);
        Ok(n)
    }
}

fn tenant_name(tenant: &Term) -> String {
    tenant.value().as_str().unwrap_or_default().to_string()
}

/// `Ok(None)`: no index here yet. `Err(reason)`: an index that cannot be used.
fn open_existing(dir: &Path, expected: &Schema) -> Result<Option<Index>, String> {
    if !dir.join("meta.json").exists() {
        return Ok(None);
    }
    let index = Index::open_in_dir(dir).map_err(|e| e.to_string())?;
    if index.schema() != *expected {
        return Err("schema differs from this version's".into());
    }
    // Reads every file once; cheap next to the rebuild it saves from serving garbage.
    let corrupt = index.validate_checksum().map_err(|e| e.to_string())?;
    if !corrupt.is_empty() {
        return Err(format!("corrupt files: {corrupt:?}"));
    }
    Ok(Some(index))
}

/// Empties `dir` (it is ours alone) so a fresh index can be created in it.
fn wipe_dir(dir: &Path) -> Result<(), Error> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
