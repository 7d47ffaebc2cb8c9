//! Answers without a language model: the retrieved passages' sentences that answer the
//! question, quoted with their citations ("From our documents: ... [1]"), or the agent's
//! fallback message when nothing relevant was found. Also decides, per turn, whether an
//! agent in `auto` answer mode generates or extracts (no provider configured, or the
//! provider known to be down), and remembers which providers are down.
//!
//! Sentence selection is pure (no I/O, no model): [`candidates`] splits the best sources
//! into sentences, [`select`] scores them against the query (cosine of sentence embeddings
//! when the tenant has an embedding model, BM25-style overlap of content terms always) and
//! keeps the best few, [`compose`] words the answer. Built on the engine's retrieval; must
//! not depend on `api/`.

use super::{Engine, Source, Turn, TurnError, TurnResult, failure, prompt};
use crate::index::terms::content_tokens;
use crate::llm::{self, Provider};
use crate::model::{AnswerMode, RetrievalMode, Usage};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How every extractive answer starts: the customer must see that these are quotes from the
/// business's documents, not a composed answer.
pub const PREFIX: &str = "From our documents: ";
/// Sources whose sentences compete for the answer (the retrieval's best first).
pub const MAX_SOURCES: usize = 3;
/// Sentences scored at most (bounds the embedding work of a turn).
pub const MAX_CANDIDATES: usize = 60;
/// Sentences in an answer at most.
pub const MAX_SENTENCES: usize = 3;
/// Longest answer text (without the prefix and citation markers), in characters; a single
/// longer sentence is cut at a word boundary.
pub const MAX_CHARS: usize = 700;
/// Sentences shorter than this (after trimming) are not answers ("Yes.", list markers).
const MIN_SENTENCE_CHARS: usize = 12;
/// How long a provider that failed as down (unreachable, timeout, 5xx) is not asked again
/// by agents in `auto` mode; after it the next turn tries it again.
pub const DOWN_FOR: Duration = Duration::from_secs(60);
/// Distinct provider addresses remembered as down at most.
const MAX_DOWN: usize = 1024;

/// How sentences are scored; the default is the one measured in BENCHMARKS.md.
#[derive(Clone, Debug, PartialEq)]
pub struct Scoring {
    /// Weight of the sentence embedding's cosine to the query (when embeddings are there);
    /// the term overlap gets the rest.
    pub dense_weight: f32,
    /// Subtracted per rank of the sentence's source (0 for the best source): the retrieval
    /// ranking already says which passage is likeliest to answer.
    pub rank_penalty: f32,
    /// Sentences beside the best one are kept when they score at least this share of it.
    pub keep_share: f32,
}

impl Default for Scoring {
    fn default() -> Self {
        Scoring {
            dense_weight: 0.5,
            rank_penalty: 0.05,
            keep_share: 0.85,
        }
    }
}

/// A sentence of one of the sources.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Index of its source in the retrieval's list (0 = best).
    pub source: usize,
    /// Its position among the source's sentences.
    pub position: usize,
    pub text: String,
}

/// The sentences chosen for an answer, in answer order (by source, then position).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
    pub chosen: Vec<Candidate>,
}

/// Abbreviations after which a full stop does not end a sentence (lower case, no dot).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "eg", "ie", "e.g", "i.e", "no",
    "nos", "fig", "approx", "inc", "ltd", "co", "corp", "dept", "est", "mt", "ft", "jan", "feb",
    "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
];

/// Splits text into sentences: after `.`, `!` or `?` (and closing quotes or brackets)
/// followed by white space and not by a lower-case letter, unless the word before the stop
/// is an abbreviation or an initial; at blank lines; and before lines that start a list
/// item or a heading. Other line breaks are wrapping inside a sentence (PDF text).
pub fn sentences(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut start = 0usize;
    fn push<'a>(text: &'a str, from: usize, to: usize, out: &mut Vec<&'a str>) {
        let s = text[from..to].trim();
        if !s.is_empty() {
            out.push(s);
        }
    }
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        if c == '\n' {
            let rest = &text[pos + 1..];
            let next_line = rest.trim_start_matches([' ', '\t', '\r']);
            if next_line.starts_with('\n') || starts_block(next_line) {
                push(text, start, pos, &mut out);
                start = pos + 1;
            }
        } else if matches!(c, '.' | '!' | '?' | '。' | '！' | '？') {
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j].1, '"' | '\'' | '”' | '’' | ')' | ']') {
                j += 1;
            }
            let end = chars.get(j).map_or(text.len(), |x| x.0);
            let followed = chars.get(j).is_none_or(|x| x.1.is_whitespace());
            let next = chars[j.min(chars.len())..]
                .iter()
                .map(|x| x.1)
                .find(|c| !c.is_whitespace());
            let lower_next = next.is_some_and(|n| n.is_lowercase());
            if followed && !lower_next && !(c == '.' && abbreviation_before(text, pos)) {
                push(text, start, end, &mut out);
                start = end;
                i = j;
                continue;
            }
        }
        i += 1;
    }
    push(text, start, text.len(), &mut out);
    out
}

/// A line that starts a list item, a heading or a table row.
fn starts_block(line: &str) -> bool {
    let mut cs = line.chars();
    match cs.next() {
        Some('-' | '*' | '•' | '#' | '|' | '>') => true,
        Some(d) if d.is_ascii_digit() => {
            let rest: String = cs.take_while(|c| !c.is_whitespace()).collect();
            rest.trim_start_matches(|c: char| c.is_ascii_digit())
                .starts_with(['.', ')'])
                && rest.trim_start_matches(|c: char| c.is_ascii_digit()).len() == 1
        }
        _ => false,
    }
}

/// The word before the full stop at byte `dot` is an abbreviation or a single letter.
fn abbreviation_before(text: &str, dot: usize) -> bool {
    let before = &text[..dot];
    let word = before
        .rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    let w = word.to_lowercase();
    (w.chars().count() == 1 && w.chars().all(char::is_alphabetic))
        || ABBREVIATIONS.contains(&w.as_str())
}

/// The sentences of the best [`MAX_SOURCES`] sources, at most [`MAX_CANDIDATES`], in
/// source order.
pub fn candidates(sources: &[Source]) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (source, s) in sources.iter().take(MAX_SOURCES).enumerate() {
        for (position, text) in sentences(&s.text).into_iter().enumerate() {
            if out.len() == MAX_CANDIDATES {
                return out;
            }
            if text.chars().count() >= MIN_SENTENCE_CHARS {
                out.push(Candidate {
                    source,
                    position,
                    text: text.to_string(),
                });
            }
        }
    }
    out
}

/// BM25-style overlap of each candidate with the query's content terms, in [0, 1]: the
/// sum over query terms in the sentence of idf x saturated tf (length-normalised), divided
/// by the most the query's terms could score. Document frequencies are counted over the
/// candidates, so a term every sentence repeats (the passage's topic) weighs little and the
/// terms that tell the sentences apart decide.
pub fn term_scores(query: &str, cands: &[Candidate]) -> Vec<f32> {
    const K1: f32 = 1.2;
    const B: f32 = 0.75;
    let mut seen = HashSet::new();
    let q: Vec<String> = content_tokens(query)
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect();
    let docs: Vec<Vec<String>> = cands.iter().map(|c| content_tokens(&c.text)).collect();
    if q.is_empty() || docs.is_empty() {
        return vec![0.0; cands.len()];
    }
    let n = docs.len() as f32;
    let avg = (docs.iter().map(Vec::len).sum::<usize>() as f32 / n).max(1.0);
    let idf: Vec<f32> = q
        .iter()
        .map(|t| {
            let df = docs.iter().filter(|d| d.contains(t)).count() as f32;
            (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
        })
        .collect();
    let most: f32 = idf.iter().sum::<f32>() * (K1 + 1.0);
    docs.iter()
        .map(|d| {
            let mut tf: HashMap<&str, f32> = HashMap::new();
            for t in d {
                *tf.entry(t.as_str()).or_default() += 1.0;
            }
            let norm = K1 * (1.0 - B + B * d.len() as f32 / avg);
            let s: f32 = q
                .iter()
                .zip(&idf)
                .filter_map(|(t, w)| tf.get(t.as_str()).map(|f| w * f * (K1 + 1.0) / (f + norm)))
                .sum();
            if most > 0.0 { s / most } else { 0.0 }
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na > 0.0 && nb > 0.0 {
        dot / (na.sqrt() * nb.sqrt())
    } else {
        0.0
    }
}

/// Scores of the candidates against the query: term overlap, mixed with the cosine of
/// their embeddings when `vectors` holds the query's and each candidate's (same order),
/// minus the source-rank penalty.
pub fn scores(
    query: &str,
    cands: &[Candidate],
    vectors: Option<(&[f32], &[Vec<f32>])>,
    scoring: &Scoring,
) -> Vec<f32> {
    let terms = term_scores(query, cands);
    let w = scoring.dense_weight.clamp(0.0, 1.0);
    cands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let lexical = terms[i];
            let s = match vectors {
                Some((q, vs)) if vs.len() == cands.len() => {
                    w * cosine(q, &vs[i]) + (1.0 - w) * lexical
                }
                _ => lexical,
            };
            s - scoring.rank_penalty * c.source as f32
        })
        .collect()
}

/// The best-scoring sentence, and up to [`MAX_SENTENCES`] - 1 more that score at least
/// `keep_share` of it, within [`MAX_CHARS`]; in answer order (source, then position).
/// Empty only when there are no candidates.
pub fn select(cands: &[Candidate], scores: &[f32], scoring: &Scoring) -> Selection {
    let mut order: Vec<usize> = (0..cands.len().min(scores.len())).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let Some(&best) = order.first() else {
        return Selection::default();
    };
    let bar = if scores[best] > 0.0 {
        scores[best] * scoring.keep_share
    } else {
        f32::INFINITY
    };
    let mut chosen = vec![best];
    let mut chars = cands[best].text.chars().count();
    for &i in &order[1..] {
        if chosen.len() == MAX_SENTENCES || scores[i] < bar {
            break;
        }
        let n = cands[i].text.chars().count();
        if chars + n > MAX_CHARS {
            continue;
        }
        chars += n;
        chosen.push(i);
    }
    chosen.sort_by_key(|&i| (cands[i].source, cands[i].position));
    Selection {
        chosen: chosen.into_iter().map(|i| cands[i].clone()).collect(),
    }
}

/// The answer: [`PREFIX`], the chosen sentences, and after each source's sentences its
/// citation marker `[n]` (n = source index + 1, as [`prompt::citations`] reads them back).
pub fn compose(sel: &Selection) -> String {
    let mut out = String::from(PREFIX);
    let mut budget = MAX_CHARS;
    for (i, c) in sel.chosen.iter().enumerate() {
        let text = cut(&c.text, budget);
        budget = budget.saturating_sub(text.chars().count());
        out.push_str(&text);
        let last_of_source = sel.chosen.get(i + 1).is_none_or(|n| n.source != c.source);
        if last_of_source {
            out.push_str(&format!(" [{}]", c.source + 1));
        }
        if i + 1 < sel.chosen.len() {
            out.push(' ');
        }
    }
    out
}

/// `text` cut to at most `max` characters at a word boundary, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max.saturating_sub(1)).collect();
    let head = match head.rfind(char::is_whitespace) {
        Some(at) if at > 0 => head[..at].trim_end().to_string(),
        _ => head,
    };
    format!("{head}…")
}

/// The extractive answer to `query` from the candidates, `None` when there is no sentence
/// to quote: no candidates, or (without embeddings) none sharing a content term with the
/// query. `vectors` as for [`scores`].
pub fn answer(
    query: &str,
    cands: &[Candidate],
    vectors: Option<(&[f32], &[Vec<f32>])>,
) -> Option<String> {
    let scoring = Scoring::default();
    if vectors.is_none() && term_scores(query, cands).iter().all(|s| *s <= 0.0) {
        return None;
    }
    let s = scores(query, cands, vectors, &scoring);
    let sel = select(cands, &s, &scoring);
    (!sel.chosen.is_empty()).then(|| compose(&sel))
}

/// A turn's route once the agent's answer mode is resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Route {
    Generate,
    Extractive,
    /// `auto` with a configured provider: generate, and answer extractively instead if
    /// the provider (at this base URL) turns out to be down before anything was streamed.
    GenerateOrExtract(String),
}

/// Whether a model provider is configured at all: a key, or an endpoint other than
/// OpenAI's default (Ollama, vLLM and other local servers need no key).
pub fn configured(p: &Provider) -> bool {
    p.api_key.is_some()
        || p.base_url.trim().trim_end_matches('/') != crate::config::DEFAULT_OPENAI_BASE_URL
}

/// A provider failure that says the provider is down (not a mistake of the request or the
/// settings): unreachable, no answer in time, a 5xx, or rate limiting past the retries.
pub fn is_down(e: &llm::Error) -> bool {
    match e {
        llm::Error::Timeout | llm::Error::Connect(_) | llm::Error::RateLimited { .. } => true,
        llm::Error::Upstream { status, .. } => *status >= 500,
        _ => false,
    }
}

/// Model providers (by base URL) that recently failed as down, shared by every tenant
/// using the same endpoint.
#[derive(Default)]
pub struct ProviderHealth {
    down: Mutex<HashMap<String, Instant>>,
}

impl ProviderHealth {
    fn key(base_url: &str) -> String {
        base_url.trim().trim_end_matches('/').to_string()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // Only timestamps are kept: a poisoned map is still consistent.
        self.down.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failure of the provider at `base_url` if it says the provider is down.
    pub fn failed(&self, base_url: &str, e: &llm::Error) {
        if !is_down(e) {
            return;
        }
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_DOWN {
            map.retain(|_, at| now.duration_since(*at) < DOWN_FOR);
            if map.len() >= MAX_DOWN {
                map.clear();
            }
        }
        map.insert(Self::key(base_url), now);
    }

    /// The provider answered: it is not down.
    pub fn answered(&self, base_url: &str) {
        let key = Self::key(base_url);
        let mut map = self.lock();
        if map.contains_key(&key) {
            map.remove(&key);
        }
    }

    /// Failed as down within [`DOWN_FOR`].
    pub fn is_down(&self, base_url: &str) -> bool {
        self.lock()
            .get(&Self::key(base_url))
            .is_some_and(|at| at.elapsed() < DOWN_FOR)
    }

    /// Failed as down at or after `since` (during a turn that started then).
    pub fn down_since(&self, base_url: &str, since: Instant) -> bool {
        self.lock()
            .get(&Self::key(base_url))
            .is_some_and(|at| *at >= since)
    }
}

/// Whether a turn of `agent` searches knowledge at all.
fn uses_knowledge(turn: &Turn) -> bool {
    turn.agent.retrieval_mode != RetrievalMode::Off && !turn.agent.document_ids.is_empty()
}

impl Engine {
    /// Resolves the agent's answer mode for this turn. `auto` extracts when no provider is
    /// configured; with knowledge to quote, also while the provider is known to be down
    /// (an agent without knowledge could only say its fallback message: it keeps trying
    /// the model, and its failures stay visible).
    pub(super) async fn route(&self, turn: &Turn) -> Route {
        match turn.agent.answer_mode {
            AnswerMode::Generate => Route::Generate,
            AnswerMode::Extractive => Route::Extractive,
            AnswerMode::Auto => match self.provider(&turn.caller).await {
                Ok((p, _, _)) if !configured(&p) => Route::Extractive,
                Ok((p, _, _)) if uses_knowledge(turn) && self.health.is_down(&p.base_url) => {
                    Route::Extractive
                }
                Ok((p, _, _)) if uses_knowledge(turn) => Route::GenerateOrExtract(p.base_url),
                // Settings that cannot be read fail the generating turn with the reason.
                _ => Route::Generate,
            },
        }
    }

    /// A failed generating turn of `route` that should be answered extractively instead:
    /// the provider went down during it and nothing reached the customer yet.
    pub(super) fn extract_instead(&self, route: &Route, e: &TurnError, started: Instant) -> bool {
        match route {
            Route::GenerateOrExtract(url) => {
                e.partial.is_empty() && self.health.down_since(url, started)
            }
            _ => false,
        }
    }

    /// Answers a turn extractively: the sources' sentences that answer, with citations, or
    /// the fallback message. With `deltas`, the answer is sent in pieces like a generated
    /// one.
    pub(super) async fn extractive(
        &self,
        turn: &Turn,
        deltas: Option<&mpsc::Sender<String>>,
        started: Instant,
    ) -> Result<TurnResult, TurnError> {
        let fail = |message: String| failure(started, message, String::new());
        let sources = if uses_knowledge(turn) {
            self.retrieve(&turn.caller, &turn.agent, &turn.message)
                .await
                .map_err(|e| fail(format!("knowledge search failed: {e}")))?
                .sources
        } else {
            Vec::new()
        };
        let (retriever, caller, query) = (
            self.retriever.clone(),
            turn.caller.clone(),
            turn.message.clone(),
        );
        let srcs = sources.clone();
        let reply = tokio::task::spawn_blocking(move || {
            let cands = candidates(&srcs);
            if cands.is_empty() {
                return None;
            }
            let texts: Vec<String> = cands.iter().map(|c| c.text.clone()).collect();
            let vectors = retriever.embed(&caller, &query, &texts);
            answer(
                &query,
                &cands,
                vectors.as_ref().map(|(q, v)| (q.as_slice(), v.as_slice())),
            )
        })
        .await
        .map_err(|e| fail(format!("extracting the answer failed: {e}")))?;
        let no_sources = reply.is_none();
        let reply = reply.unwrap_or_else(|| {
            turn.agent
                .fallback_message
                .clone()
                .filter(|f| !f.trim().is_empty())
                .unwrap_or_else(|| crate::domain::agents::DEFAULT_FALLBACK.into())
        });
        if let Some(tx) = deltas {
            let mut sent = String::new();
            for piece in pieces(&reply) {
                sent.push_str(piece);
                if tx.send(piece.to_string()).await.is_err() {
                    return Err(failure(
                        started,
                        "cancelled: the client disconnected".into(),
                        sent,
                    ));
                }
            }
        }
        let citations = prompt::citations(&reply, &sources);
        Ok(TurnResult {
            reply,
            citations,
            usage: Usage::default(),
            tool_calls: Vec::new(),
            handoff: None,
            latency_ms: started.elapsed().as_millis() as u64,
            upstream: Duration::ZERO,
            history_dropped: 0,
            no_sources: uses_knowledge(turn) && (sources.is_empty() || no_sources),
        })
    }
}

/// The answer in streaming pieces of a few words each (white space kept, so the pieces
/// join to the answer).
fn pieces(text: &str) -> Vec<&str> {
    const WORDS: usize = 6;
    let mut out = Vec::new();
    let mut start = 0;
    let mut words = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                words += 1;
                in_word = false;
                if words == WORDS {
                    out.push(&text[start..i]);
                    start = i;
                    words = 0;
                }
            }
        } else {
            in_word = true;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChunkId, DocumentId};

    fn src(text: &str) -> Source {
        Source {
            chunk_id: ChunkId::new(),
            document_id: DocumentId::new(),
            document_name: "guide.md".into(),
            text: text.into(),
            page: None,
            headings: vec![],
            score: 1.0,
        }
    }

    #[test]
    fn sentences_split_at_stops_blank_lines_and_list_items_not_abbreviations() {
        let t = "Dr. Smith opened the shop in 1998. It sells e.g. chairs and tables! Prices \
                 start at 3.50 euros per item.\n\nOpening hours\n- Monday to Friday: 9 to 6\n- \
                 Saturday: 10 to 2\nThe U.S. store is closed. \"Really?\" She asked.";
        let s = sentences(t);
        assert_eq!(
            s,
            [
                "Dr. Smith opened the shop in 1998.",
                "It sells e.g. chairs and tables!",
                "Prices start at 3.50 euros per item.",
                "Opening hours",
                "- Monday to Friday: 9 to 6",
                "- Saturday: 10 to 2\nThe U.S. store is closed.",
                "\"Really?\"",
                "She asked.",
            ]
        );
        // A wrapped line is one sentence; a stop before a lower-case word is not an end.
        assert_eq!(
            sentences("The warranty covers\nall parts. approx. two years"),
            ["The warranty covers\nall parts. approx. two years"]
        );
        assert!(sentences("  \n\n ").is_empty());
    }

    #[test]
    fn the_sentence_that_answers_is_chosen_and_cited() {
        let sources = vec![
            src(
                "Our Lisbon shop is in the old town. The Lisbon shop opens at nine o'clock on weekdays. Parking is free for customers.",
            ),
            src("Returns are accepted within 30 days of purchase. Keep the receipt."),
        ];
        let cands = candidates(&sources);
        assert_eq!(cands.len(), 5);
        let a = answer("When does the Lisbon shop open?", &cands, None).expect("an answer");
        assert_eq!(
            a,
            "From our documents: The Lisbon shop opens at nine o'clock on weekdays. [1]"
        );
        let c = prompt::citations(&a, &sources);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].chunk_id, sources[0].chunk_id);
        // From the second source when it is the one that answers.
        let a = answer("how many days do I have to return a purchase", &cands, None)
            .expect("an answer");
        assert!(a.starts_with(PREFIX), "{a}");
        assert!(a.contains("within 30 days") && a.ends_with("[2]"), "{a}");
        assert!(!a.contains("Lisbon"), "{a}");
    }

    #[test]
    fn embeddings_decide_when_given_and_terms_otherwise() {
        let cands = candidates(&[src(
            "The store sells garden furniture. Delivery takes three to five working days.",
        )]);
        // No shared content term: without vectors the first sentence wins the tie...
        let s = scores(
            "how long until my order arrives",
            &cands,
            None,
            &Scoring::default(),
        );
        assert_eq!(s, [0.0, 0.0]);
        assert_eq!(
            answer("how long until my order arrives", &cands, None),
            None
        );
        // ...with vectors the sentence closest in meaning does.
        let q = vec![1.0, 0.0];
        let vs = vec![vec![0.1, 1.0], vec![0.9, 0.2]];
        let s = scores(
            "how long until my order arrives",
            &cands,
            Some((&q, &vs)),
            &Scoring::default(),
        );
        let sel = select(&cands, &s, &Scoring::default());
        assert_eq!(sel.chosen.len(), 1);
        assert!(sel.chosen[0].text.starts_with("Delivery"), "{sel:?}");
    }

    #[test]
    fn close_runners_up_are_kept_in_document_order_within_bounds() {
        let sources = vec![
            src("Shipping to Spain costs 5 euros. Shipping to France costs 7 euros. We love cats."),
            src("Shipping to Italy costs 9 euros."),
        ];
        let cands = candidates(&sources);
        let scoring = Scoring {
            rank_penalty: 0.0,
            ..Scoring::default()
        };
        let s = scores("shipping costs", &cands, None, &scoring);
        let sel = select(&cands, &s, &scoring);
        let texts: Vec<&str> = sel.chosen.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Shipping to Spain costs 5 euros.",
                "Shipping to France costs 7 euros.",
                "Shipping to Italy costs 9 euros."
            ]
        );
        assert_eq!(
            compose(&sel),
            "From our documents: Shipping to Spain costs 5 euros. Shipping to France costs 7 euros. [1] Shipping to Italy costs 9 euros. [2]"
        );
        // One very long sentence is cut at a word boundary.
        let long = format!("Shipping {}.", "really ".repeat(200));
        let cands = candidates(&[src(&long)]);
        let a = answer("shipping", &cands, None).expect("answer");
        assert!(
            a.chars().count() <= PREFIX.len() + MAX_CHARS + 5,
            "{}",
            a.len()
        );
        assert!(a.ends_with("… [1]"), "{a}");
        assert!(answer("anything", &[], None).is_none());
    }

    #[test]
    fn providers_are_down_after_outage_failures_only() {
        let h = ProviderHealth::default();
        let t0 = Instant::now();
        h.failed(
            "http://x/v1",
            &llm::Error::Upstream {
                status: 400,
                message: String::new(),
            },
        );
        assert!(!h.is_down("http://x/v1"));
        h.failed("http://x/v1/", &llm::Error::Connect("refused".into()));
        assert!(h.is_down("http://x/v1") && h.down_since("http://x/v1", t0));
        assert!(!h.is_down("http://y/v1"));
        h.answered("http://x/v1");
        assert!(!h.is_down("http://x/v1"));
        assert!(is_down(&llm::Error::Upstream {
            status: 503,
            message: String::new()
        }));
        assert!(!is_down(&llm::Error::Protocol("bad".into())));
        let mut p = Provider::new("https://api.openai.com/v1/", None);
        assert!(!configured(&p));
        p.base_url = "http://127.0.0.1:11434/v1".into();
        assert!(configured(&p));
    }

    #[test]
    fn pieces_join_to_the_answer() {
        let a = "From our documents: one two three four five six seven eight nine. [1]";
        let p = pieces(a);
        assert!(p.len() > 1);
        assert_eq!(p.concat(), a);
    }
}
