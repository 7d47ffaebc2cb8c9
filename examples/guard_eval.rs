//! Knowing when not to answer, and extractive answers, measured on a BEIR-layout folder
//! (BoolQ) through the product's code.
//!
//! ```text
//! cargo run --example guard_eval -- --data ../shared/eval/boolq_dev \
//!     --model-dir ../shared/models/all-MiniLM-L6-v2 \
//!     --ort ../shared/runtime/onnxruntime-1.32.0/libonnxruntime.so.1.32.0 \
//!     [--modes hybrid,keyword] [--limit N] [--cache FILE] [--dump FILE] \
//!     [--without article|passage] [--no-extractive] \
//!     [--scoring dense_weight:rank_penalty:keep_share]...
//! ```
//!
//! The tenant is seeded as `beir_eval` seeds it (`common/tenant.rs`: the product on a
//! temporary data directory with the model, one document of one chunk per passage, heading
//! = title), with passage vectors from the model's shared cache; sentence and question
//! vectors go into the same cache, keyed by their text.
//!
//! For every query, `Knowledge::agent_search` (what `Retrieve::retrieve` answers from: the
//! product's search and relevance guard) runs twice for an agent: once over every passage
//! (answerable: its passage is there), once without the question's passages (unanswerable).
//! "Without" is by default every passage of the question's article (BoolQ passages are
//! paragraphs of Wikipedia articles, and a sibling paragraph often answers the question
//! too); `--without passage` removes only the judged passage. Reported: how often the guard
//! lets the agent answer when it should and falls back when it should, with the default
//! thresholds and over a grid, per retrieval mode. `--no-extractive` skips the extractive
//! measurement (which embeds every sentence of the corpus once: slow with a large model).
//!
//! Extractive answers (hybrid, answerable questions the guard let through): the product's
//! sentence selection (`agent::extractive`) over the first sources, scored three ways
//! (term overlap only, as without a model; embeddings only; the default mix). The "key
//! sentence" of a question is the sentence of its gold passage sharing the most distinct
//! content terms with the question (ties: the earlier one); questions whose passage shares
//! none have no key sentence and are left out. A hit is an answer that quotes the key
//! sentence. The term-overlap scorer is close to the key sentence's own definition, so its
//! figure is optimistic; the embeddings-only scorer is the independent check.

use aigentable::agent::extractive::{self, Candidate, Scoring};
use aigentable::agent::{Retrieve, Source};
use aigentable::index::terms::content_terms;
use aigentable::knowledge::guard::{self, GuardParams};
use aigentable::model::{ActiveStatus, Agent, AnswerMode, RetrievalMode};
use aigentable::types::{AgentId, ChunkId, DocumentId};
use anyhow::{Result, anyhow, bail};
use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

#[path = "common/beir.rs"]
mod beir;
#[path = "common/tenant.rs"]
mod tenant;

const TOP_K: u32 = 8;
/// Extractive answers timed end to end (embedding included) per run.
const TIMED: usize = 200;

struct Args {
    data: PathBuf,
    model_dir: PathBuf,
    ort: PathBuf,
    modes: Vec<RetrievalMode>,
    limit: usize,
    cache: Option<PathBuf>,
    dump: Option<PathBuf>,
    /// Extra sentence scorings to compare (`dense_weight:rank_penalty:keep_share`).
    scorings: Vec<Scoring>,
    /// Measure extractive answers too (embeds every sentence of the corpus once).
    extractive: bool,
    /// Unanswerable = without every passage of the question's article (same title), not
    /// only its own passage.
    whole_article: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        data: PathBuf::new(),
        model_dir: std::env::var_os("AIGENTABLE_TEST_MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_default(),
        ort: std::env::var_os("AIGENTABLE_TEST_ORT_DYLIB")
            .map(PathBuf::from)
            .unwrap_or_default(),
        modes: vec![RetrievalMode::Hybrid, RetrievalMode::Keyword],
        limit: usize::MAX,
        cache: None,
        dump: None,
        scorings: Vec::new(),
        extractive: true,
        whole_article: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = val()?.into(),
            "--model-dir" => a.model_dir = val()?.into(),
            "--ort" => a.ort = val()?.into(),
            "--limit" => a.limit = val()?.parse()?,
            "--cache" => a.cache = Some(val()?.into()),
            "--dump" => a.dump = Some(val()?.into()),
            "--no-extractive" => a.extractive = false,
            "--without" => {
                a.whole_article = match val()?.as_str() {
                    "article" => true,
                    "passage" => false,
                    other => bail!("--without article|passage, not {other}"),
                }
            }
            "--scoring" => {
                let v = val()?;
                let p: Vec<f32> = v.split(':').map(str::parse).collect::<Result<_, _>>()?;
                let [dense_weight, rank_penalty, keep_share] = p[..] else {
                    bail!("--scoring dense_weight:rank_penalty:keep_share");
                };
                a.scorings.push(Scoring {
                    dense_weight,
                    rank_penalty,
                    keep_share,
                });
            }
            "--modes" => {
                a.modes = val()?
                    .split(',')
                    .map(|m| match m {
                        "hybrid" => Ok(RetrievalMode::Hybrid),
                        "keyword" => Ok(RetrievalMode::Keyword),
                        "vector" => Ok(RetrievalMode::Vector),
                        other => Err(anyhow!("unknown mode {other}")),
                    })
                    .collect::<Result<_>>()?
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if a.data.as_os_str().is_empty() {
        bail!("--data <BEIR folder> is required");
    }
    if a.model_dir.as_os_str().is_empty() || a.ort.as_os_str().is_empty() {
        bail!(
            "--model-dir and --ort are required (or AIGENTABLE_TEST_MODEL_DIR / AIGENTABLE_TEST_ORT_DYLIB)"
        );
    }
    Ok(a)
}

use beir::Doc as Passage;

/// One passage as the single source the extractor would see.
fn source_of(p: &Passage) -> Source {
    Source {
        chunk_id: ChunkId::new(),
        document_id: DocumentId::new(),
        document_name: p.title.clone(),
        text: p.text.clone(),
        page: None,
        headings: vec![p.title.clone()],
        score: 0.0,
    }
}

/// The key sentence of a passage for a question: the candidate sentence sharing the most
/// distinct content terms with it (the earlier on ties); `None` when none shares any.
fn key_sentence(query: &str, cands: &[Candidate]) -> Option<String> {
    let q: HashSet<String> = content_terms(query, usize::MAX).into_iter().collect();
    let mut best: Option<(usize, &Candidate)> = None;
    for c in cands {
        let n = content_terms(&c.text, usize::MAX)
            .iter()
            .filter(|t| q.contains(*t))
            .count();
        if n > 0 && best.is_none_or(|(b, _)| n > b) {
            best = Some((n, c));
        }
    }
    best.map(|(_, c)| c.text.clone())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n =
        a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 { dot / n } else { 0.0 }
}

#[derive(Default)]
struct Rates {
    answerable: usize,
    answered: usize,
    unanswerable: usize,
    fell_back: usize,
}

impl Rates {
    fn line(&self) -> String {
        format!(
            "answers when it should {:.1}% ({}/{}), falls back when it should {:.1}% ({}/{})",
            100.0 * self.answered as f64 / self.answerable.max(1) as f64,
            self.answered,
            self.answerable,
            100.0 * self.fell_back as f64 / self.unanswerable.max(1) as f64,
            self.fell_back,
            self.unanswerable
        )
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = args()?;
    let corpus: Vec<Passage> = beir::corpus(&a.data)?;
    let queries = beir::queries(&a.data)?;
    let mut gold: Vec<(String, String)> = Vec::new();
    let mut seen = HashSet::new();
    for r in beir::qrels(&a.data)? {
        if r.grade > 0 && queries.contains_key(&r.query) && seen.insert(r.query.clone()) {
            gold.push((r.query, r.doc));
        }
    }
    gold.sort();
    gold.truncate(a.limit);
    eprintln!(
        "{}: {} passages, {} questions",
        a.data.display(),
        corpus.len(),
        gold.len()
    );

    // The tenant: every passage seeded the way the pipeline writes chunks (common/tenant.rs),
    // passage vectors from the model's shared cache (the one beir_eval fills).
    let cache = a
        .cache
        .clone()
        .unwrap_or_else(|| tenant::default_cache(&a.model_dir));
    let seeded = tenant::seed(&a.model_dir, &a.ort, &cache, &corpus).await?;
    eprintln!(
        "model {}: embedded {} passages in {:.1} s; seeded {} passages in {:.1} s",
        seeded.model_id,
        seeded.embedded,
        seeded.embed_secs,
        corpus.len(),
        seeded.seed_secs
    );
    let k = seeded.knowledge.clone();
    let caller = seeded.caller.clone();
    let tenant_id = caller.tenant().clone();
    let space = k
        .space_for(&tenant_id)?
        .ok_or_else(|| anyhow!("no embedding model loaded"))?;
    let model_id = seeded.model_id.clone();
    let doc_of: HashMap<String, DocumentId> = seeded
        .passage_of
        .iter()
        .map(|(d, p)| (p.clone(), d.clone()))
        .collect();
    // The passages of each article (same title): "without" may remove them all.
    let mut article: HashMap<&str, Vec<DocumentId>> = HashMap::new();
    for p in &corpus {
        article
            .entry(p.title.as_str())
            .or_default()
            .push(doc_of[&p.id].clone());
    }
    let title_of: HashMap<&str, &str> = corpus
        .iter()
        .map(|p| (p.id.as_str(), p.title.as_str()))
        .collect();

    // Sentences of the passages (extractive answers) and questions, embedded by the
    // product's model; kept in the same cache, keyed by their text.
    let mut vecs = tenant::load_cache(&cache);
    let passage_cands: HashMap<String, Vec<Candidate>> = corpus
        .iter()
        .map(|p| (p.id.clone(), extractive::candidates(&[source_of(p)])))
        .collect();
    if a.extractive {
        let mut todo: Vec<String> = passage_cands
            .values()
            .flatten()
            .map(|c| c.text.clone())
            .filter(|t| !vecs.contains_key(t))
            .collect();
        todo.sort();
        todo.dedup();
        if !todo.is_empty() {
            let t0 = Instant::now();
            for (i, batch) in todo.chunks(64).enumerate() {
                let vs = space.embedder.embed(batch)?;
                for (t, v) in batch.iter().zip(vs) {
                    vecs.insert(t.clone(), v);
                }
                if i % 20 == 0 {
                    eprint!("\rembedding sentences: {}/{}", (i + 1) * 64, todo.len());
                }
            }
            eprintln!(
                "\rembedded {} sentences in {:.0} s",
                todo.len(),
                t0.elapsed().as_secs_f64()
            );
            tenant::save_cache(&cache, &vecs)?;
        }
    }
    let agent_id = AgentId::new();
    let all_docs: Vec<DocumentId> = corpus.iter().map(|p| doc_of[&p.id].clone()).collect();
    let now = time::OffsetDateTime::now_utc();
    let base_agent = Agent {
        id: agent_id.clone(),
        tenant_id: tenant_id.clone(),
        name: "Eval".into(),
        slug: "eval".into(),
        description: None,
        system_prompt: String::new(),
        model: None,
        temperature: 0.0,
        max_tokens: 256,
        top_k: TOP_K,
        retrieval_mode: RetrievalMode::Hybrid,
        answer_mode: AnswerMode::Extractive,
        document_ids: all_docs.clone(),
        greeting: None,
        fallback_message: None,
        language: None,
        tools: vec![],
        status: ActiveStatus::Active,
        created_at: now,
        updated_at: now,
    };
    let mut dump = match &a.dump {
        Some(p) => Some(BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };

    for mode in &a.modes {
        let mut agent = base_agent.clone();
        agent.retrieval_mode = *mode;
        let mut rates = Rates::default();
        let mut feats: Vec<(bool, f32, Option<f32>)> = Vec::new();
        // Extractive: (hits, with a key sentence) per scorer; and how often the gold
        // passage is among the sources the extractor reads.
        let mut scorers = vec![
            (
                "terms only (no model)",
                Scoring {
                    dense_weight: 0.0,
                    ..Scoring::default()
                },
                false,
            ),
            (
                "embeddings only",
                Scoring {
                    dense_weight: 1.0,
                    ..Scoring::default()
                },
                true,
            ),
            ("default mix", Scoring::default(), true),
        ];
        let names: Vec<String> = a.scorings.iter().map(|x| format!("{x:?}")).collect();
        for (x, name) in a.scorings.iter().zip(&names) {
            scorers.push((name.as_str(), x.clone(), x.dense_weight > 0.0));
        }
        let mut ext_hits = vec![0usize; scorers.len()];
        let mut ext_sentences = vec![0usize; scorers.len()];
        let mut ext_hits_gold_read = vec![0usize; scorers.len()];
        let (mut ext_total, mut ext_gold_read, mut no_key) = (0usize, 0usize, 0usize);
        let mut timings: Vec<(f64, usize)> = Vec::new();
        let t0 = Instant::now();
        for (i, (qid, pid)) in gold.iter().enumerate() {
            let q = &queries[qid];
            let gold_doc = &doc_of[pid];
            let (r, rel) = k
                .agent_search(&caller, &agent, q, TOP_K as usize)
                .map_err(|e| anyhow!(e))?;
            let mut without = agent.clone();
            let removed: &[DocumentId] = if a.whole_article {
                &article[title_of[pid.as_str()]]
            } else {
                std::slice::from_ref(gold_doc)
            };
            without.document_ids = all_docs
                .iter()
                .filter(|d| !removed.contains(d))
                .cloned()
                .collect();
            let (r2, rel2) = k
                .agent_search(&caller, &without, q, TOP_K as usize)
                .map_err(|e| anyhow!(e))?;
            rates.answerable += 1;
            rates.unanswerable += 1;
            rates.answered += usize::from(rel.relevant);
            rates.fell_back += usize::from(!rel2.relevant);
            feats.push((true, rel.coverage, rel.similarity));
            feats.push((false, rel2.coverage, rel2.similarity));
            if let Some(d) = dump.as_mut() {
                let rank = r.data.iter().position(|h| &h.document_id == gold_doc);
                let qv = match vecs.get(q) {
                    Some(v) => v.clone(),
                    None => {
                        let v = space.embedder.embed_query(q)?;
                        vecs.insert(q.clone(), v.clone());
                        v
                    }
                };
                let terms = guard::query_terms(q);
                let (docs, dfs) = k.text.doc_freqs(&tenant_id, &terms)?;
                let weights = guard::weights(docs, &dfs);
                let extra = |data: &[aigentable::knowledge::SearchHit]| {
                    let srcs: Vec<Source> = data
                        .iter()
                        .map(|h| Source {
                            chunk_id: h.chunk_id.clone(),
                            document_id: h.document_id.clone(),
                            document_name: h.document_name.clone(),
                            text: h.text.clone(),
                            page: h.page,
                            headings: h.headings.clone(),
                            score: h.score,
                        })
                        .collect();
                    let cands = extractive::candidates(&srcs);
                    let sent_cov = cands
                        .iter()
                        .map(|c| guard::coverage(&terms, &weights, &c.text))
                        .fold(0.0f32, f32::max);
                    let sent_sim = cands
                        .iter()
                        .filter_map(|c| vecs.get(&c.text))
                        .map(|v| cosine(v, &qv))
                        .fold(-1.0f32, f32::max);
                    let top = data.first().map_or(0.0, |h| h.score);
                    let second = data.get(1).map_or(0.0, |h| h.score);
                    serde_json::json!({"sent_cov": sent_cov, "sent_sim": sent_sim,
                        "top": top, "second": second})
                };
                writeln!(
                    d,
                    "{}",
                    serde_json::json!({"mode": format!("{mode:?}"), "q": qid,
                        "terms": terms.len(),
                        "cov": rel.coverage, "sim": rel.similarity, "rank": rank,
                        "with": extra(&r.data), "without": extra(&r2.data),
                        "cov_without": rel2.coverage, "sim_without": rel2.similarity})
                )?;
            }
            if a.extractive && *mode == RetrievalMode::Hybrid && rel.relevant {
                let Some(key) = key_sentence(q, &passage_cands[pid]) else {
                    no_key += 1;
                    continue;
                };
                let sources: Vec<Source> = r
                    .data
                    .iter()
                    .map(|h| Source {
                        chunk_id: h.chunk_id.clone(),
                        document_id: h.document_id.clone(),
                        document_name: h.document_name.clone(),
                        text: h.text.clone(),
                        page: h.page,
                        headings: h.headings.clone(),
                        score: h.score,
                    })
                    .collect();
                let gold_read = sources
                    .iter()
                    .take(extractive::MAX_SOURCES)
                    .any(|s| &s.document_id == gold_doc);
                let cands = extractive::candidates(&sources);
                if timings.len() < TIMED {
                    // What a turn adds to retrieval: the product's embedding of the query
                    // and the candidates (uncached), scoring and wording.
                    let texts: Vec<String> = cands.iter().map(|c| c.text.clone()).collect();
                    let t = Instant::now();
                    let v = k.embed(&caller, q, &texts);
                    let a = extractive::answer(
                        q,
                        &cands,
                        v.as_ref().map(|(q, v)| (q.as_slice(), v.as_slice())),
                    );
                    timings.push((t.elapsed().as_secs_f64() * 1000.0, cands.len()));
                    std::hint::black_box(a);
                }
                let qv = match vecs.get(q) {
                    Some(v) => v.clone(),
                    None => {
                        let v = space.embedder.embed_query(q)?;
                        vecs.insert(q.clone(), v.clone());
                        v
                    }
                };
                let svs: Option<Vec<Vec<f32>>> =
                    cands.iter().map(|c| vecs.get(&c.text).cloned()).collect();
                let svs = svs.ok_or_else(|| anyhow!("a sentence without a vector"))?;
                ext_total += 1;
                ext_gold_read += usize::from(gold_read);
                for (j, (_, scoring, dense)) in scorers.iter().enumerate() {
                    let vectors = dense.then_some((qv.as_slice(), svs.as_slice()));
                    let s = extractive::scores(q, &cands, vectors, scoring);
                    let sel = extractive::select(&cands, &s, scoring);
                    let hit = sel.chosen.iter().any(|c| c.text == key);
                    ext_hits[j] += usize::from(hit);
                    ext_sentences[j] += sel.chosen.len();
                    ext_hits_gold_read[j] += usize::from(hit && gold_read);
                }
            }
            if i % 200 == 0 {
                eprint!("\r{mode:?}: {}/{}", i + 1, gold.len());
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        eprintln!();
        println!(
            "\n## {mode:?} retrieval, model {model_id}, {} questions ({:.1} ms per search)",
            gold.len(),
            1000.0 * secs / (2 * gold.len()).max(1) as f64
        );
        println!("guard (defaults {:?}):", GuardParams::default());
        println!("  {}", rates.line());
        // The trade-off around the defaults: the best settings by their worse rate.
        let mut grid = Vec::new();
        let steps = |from: f32, to: f32, step: f32| {
            let mut v = Vec::new();
            let mut x = from;
            while x <= to + 1e-6 {
                v.push(x);
                x += step;
            }
            v
        };
        let mut settings = Vec::new();
        if *mode == RetrievalMode::Keyword {
            for &kc in &steps(0.3, 1.01, 0.05) {
                settings.push(GuardParams {
                    keyword_coverage: kc,
                    ..GuardParams::default()
                });
            }
        } else {
            for &cov in &steps(0.5, 1.01, 0.05) {
                for &sim in &steps(0.5, 0.8, 0.05) {
                    for &jc in &steps(0.3, cov, 0.05) {
                        for &js in &steps(0.4, sim, 0.05) {
                            settings.push(GuardParams {
                                coverage: cov,
                                similarity: sim,
                                joint_coverage: jc,
                                joint_similarity: js,
                                ..GuardParams::default()
                            });
                        }
                    }
                }
            }
        }
        for p in settings {
            let (mut yes, mut no, mut ny, mut nn) = (0, 0, 0, 0);
            for (answerable, c, s) in &feats {
                let v = guard::judge(*c, *s, &p);
                if *answerable {
                    ny += 1;
                    yes += usize::from(v);
                } else {
                    nn += 1;
                    no += usize::from(!v);
                }
            }
            let (ra, rf) = (yes as f64 / ny.max(1) as f64, no as f64 / nn.max(1) as f64);
            grid.push((ra.min(rf), ra, rf, p));
        }
        grid.sort_by(|x, y| y.0.total_cmp(&x.0));
        println!("  best settings on this set (by the worse of the two rates):");
        for (_, ra, rf, p) in grid.iter().take(5) {
            if *mode == RetrievalMode::Keyword {
                println!(
                    "    answers {:.1}%, falls back {:.1}%: keyword coverage {:.2}",
                    100.0 * ra,
                    100.0 * rf,
                    p.keyword_coverage
                );
            } else {
                println!(
                    "    answers {:.1}%, falls back {:.1}%: coverage {:.2}, similarity {:.2}, joint {:.2} & {:.2}",
                    100.0 * ra,
                    100.0 * rf,
                    p.coverage,
                    p.similarity,
                    p.joint_coverage,
                    p.joint_similarity
                );
            }
        }
        if *mode == RetrievalMode::Hybrid && ext_total > 0 {
            println!(
                "extractive: {ext_total} answered questions with a key sentence ({no_key} without one left out); gold passage among the {} sources read: {:.1}%",
                extractive::MAX_SOURCES,
                100.0 * ext_gold_read as f64 / ext_total as f64
            );
            let mut ms: Vec<f64> = timings.iter().map(|t| t.0).collect();
            ms.sort_by(f64::total_cmp);
            if !ms.is_empty() {
                let mean_cands =
                    timings.iter().map(|t| t.1).sum::<usize>() as f64 / timings.len() as f64;
                println!(
                    "  cost beyond retrieval ({} answers, {:.0} sentences each on average, embedding them with the model included): p50 {:.1} ms, p95 {:.1} ms",
                    ms.len(),
                    mean_cands,
                    ms[ms.len() / 2],
                    ms[ms.len() * 95 / 100]
                );
            }
            for (j, (name, _, _)) in scorers.iter().enumerate() {
                println!(
                    "  {name}: quotes the key sentence {:.1}% of answers; {:.1}% when the gold passage was read; {:.2} sentences per answer",
                    100.0 * ext_hits[j] as f64 / ext_total as f64,
                    100.0 * ext_hits_gold_read[j] as f64 / ext_gold_read.max(1) as f64,
                    ext_sentences[j] as f64 / ext_total as f64
                );
            }
        }
    }
    tenant::save_cache(&cache, &vecs)?;
    Ok(())
}
