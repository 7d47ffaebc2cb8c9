//! Retrieval quality of `index::{TextIndex, VectorIndex, fuse}` on a BEIR-layout folder.
//!
//! ```text
//! cargo run --release --example beir_eval -- --data <BEIR folder> \
//!     --model-dir <sentence-transformers ONNX dir> --ort <libonnxruntime.so> \
//!     [--modes keyword,vector,hybrid] [--depth 100] [--cache <file>] [--runs <file>] \
//!     [--fusion default | default-nolookup | zscore:0.75 | zscore:0.75:0.4:0.2:3 | minmax:0.7 | rrf:0.5]... \
//!     [--headings-boost 0.3,1] [--max-length 512] [--prf beta:depth]...
//! ```
//!
//! Each corpus document becomes one chunk of one document of one tenant (headings = title,
//! text = text) and goes through the product's `TextIndex` / `VectorIndex` / `fuse`.
//! Embeddings are computed by the product's `OnnxEmbedder` (mean pooling; `--max-length`
//! tokens, default the product's; vectors of "title text") and cached in `--cache` (default
//! under /tmp, keyed by data, model and max length) so reruns skip the model. The cache does
//! not record the max length: use one cache file per setting.
//! Prints nDCG@10 and Recall@10 per mode; `--fusion` may be repeated to compare fusion
//! settings on the same runs; `--runs` writes each query's keyword and vector lists as
//! JSON lines for offline analysis; `--prf` adds hybrid runs with Rocchio pseudo-relevance
//! feedback on the query vector (an experiment, see BENCHMARKS.md).

use aigentable::embed::{Embedder as _, OnnxEmbedder};
use aigentable::index::fusion::{FusionMethod, LOOKUP_HITS};
use aigentable::index::{
    Filter, FusionParams, Hit, TextDoc, TextIndex, TextParams, VectorIndex, fuse_lookup,
    lookup_share,
};
use aigentable::types::{ChunkId, DocumentId, TenantId};
use anyhow::{Result, anyhow, bail};
use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "common/beir.rs"]
mod beir;
use beir::Doc;

const K: usize = 10;
const BATCH: usize = 32;

struct Args {
    data: PathBuf,
    model_dir: PathBuf,
    ort: PathBuf,
    modes: Vec<String>,
    depth: usize,
    cache: Option<PathBuf>,
    runs: Option<PathBuf>,
    fusions: Vec<(String, FusionParams)>,
    headings_boosts: Vec<f32>,
    prf: Vec<(f32, usize)>,
    max_length: usize,
    sentences: usize,
    mixes: Vec<f32>,
}

/// `default`, `default-nolookup`, or `method:vector_weight[:floor:span[:lookup terms]]`
/// (fixed weight, no confidence floor and no lookup rule unless given).
fn parse_fusion(s: &str) -> Result<FusionParams> {
    if s == "default" {
        return Ok(FusionParams::default());
    }
    if s == "default-nolookup" {
        return Ok(FusionParams {
            lookup_terms: None,
            ..FusionParams::default()
        });
    }
    let parts: Vec<&str> = s.split(':').collect();
    let method = match parts[0] {
        "zscore" => FusionMethod::ZScore,
        "minmax" => FusionMethod::MinMax,
        "rrf" => FusionMethod::Rrf,
        other => bail!("unknown fusion method {other}"),
    };
    let weight = parts.get(1).map_or(Ok(0.5), |w| w.parse())?;
    let mut p = FusionParams::fixed(method, weight);
    if let (Some(floor), Some(span)) = (parts.get(2), parts.get(3)) {
        p.confidence_floor = Some(floor.parse()?);
        p.confidence_span = span.parse()?;
    }
    if let Some(terms) = parts.get(4) {
        p.lookup_terms = Some(terms.parse()?);
    }
    Ok(p)
}

fn args() -> Result<Args> {
    let mut a = Args {
        data: PathBuf::new(),
        model_dir: PathBuf::new(),
        ort: PathBuf::new(),
        modes: vec!["keyword".into(), "vector".into(), "hybrid".into()],
        depth: 100,
        cache: None,
        runs: None,
        fusions: Vec::new(),
        headings_boosts: vec![TextParams::default().headings_boost],
        prf: Vec::new(),
        max_length: aigentable::config::Config::default()
            .embed_settings()
            .max_length,
        sentences: 0,
        mixes: vec![0.5],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = val()?.into(),
            "--model-dir" => a.model_dir = val()?.into(),
            "--ort" => a.ort = val()?.into(),
            "--modes" => a.modes = val()?.split(',').map(str::to_string).collect(),
            "--depth" => a.depth = val()?.parse()?,
            "--cache" => a.cache = Some(val()?.into()),
            "--runs" => a.runs = Some(val()?.into()),
            "--headings-boost" => {
                a.headings_boosts = val()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--max-length" => a.max_length = val()?.parse()?,
            "--sentences" => a.sentences = val()?.parse()?,
            "--mix" => {
                a.mixes = val()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--prf" => {
                let v = val()?;
                let (b, d) = v.split_once(':').unwrap_or((&v, "3"));
                a.prf.push((b.parse()?, d.parse()?));
            }
            "--fusion" => {
                let v = val()?;
                let p = parse_fusion(&v)?;
                a.fusions.push((v, p));
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if a.data.as_os_str().is_empty() {
        bail!("--data <BEIR folder> is required");
    }
    Ok(a)
}

/// The product's embedder (`OnnxEmbedder`), as the knowledge pipeline loads it.
struct Embedder(OnnxEmbedder);

impl Embedder {
    fn new(model_dir: &Path, ort: &Path, max_length: usize) -> Result<Self> {
        Ok(Self(
            OnnxEmbedder::load(model_dir, ort, BATCH, max_length)
                .map_err(|e| anyhow!("loading the model: {e}"))?,
        ))
    }

    fn embed(&mut self, texts: &[String], what: &str) -> Result<Vec<Vec<f32>>> {
        let start = Instant::now();
        let mut out = Vec::with_capacity(texts.len());
        for (i, batch) in texts.chunks(BATCH * 8).enumerate() {
            out.extend(self.0.embed(batch).map_err(|e| anyhow!("embedding: {e}"))?);
            if i % 3 == 0 {
                eprint!("\r{what}: {}/{}", out.len(), texts.len());
            }
        }
        eprintln!(
            "\r{what}: {} in {:.1}s",
            texts.len(),
            start.elapsed().as_secs_f32()
        );
        Ok(out)
    }
}

/// Cache: u64 count, u64 dims, then per item (u32 id len, id, dims x f32 LE).
fn load_cache(path: &Path) -> Option<HashMap<String, Vec<f32>>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .read_to_end(&mut bytes)
        .ok()?;
    let mut pos = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(pos..pos + n)?;
        pos += n;
        Some(s)
    };
    let n = u64::from_le_bytes(take(8)?.try_into().ok()?) as usize;
    let dims = u64::from_le_bytes(take(8)?.try_into().ok()?) as usize;
    let mut out = HashMap::with_capacity(n);
    for _ in 0..n {
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let id = String::from_utf8(take(len)?.to_vec()).ok()?;
        let v = take(dims * 4)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(id, v);
    }
    Some(out)
}

fn save_cache(path: &Path, items: &HashMap<String, Vec<f32>>) -> Result<()> {
    let dims = items.values().next().map_or(0, Vec::len);
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
    w.write_all(&(items.len() as u64).to_le_bytes())?;
    w.write_all(&(dims as u64).to_le_bytes())?;
    for (id, v) in items {
        w.write_all(&(id.len() as u32).to_le_bytes())?;
        w.write_all(id.as_bytes())?;
        for x in v {
            w.write_all(&x.to_le_bytes())?;
        }
    }
    w.flush()?;
    drop(w);
    std::fs::rename(tmp, path)?;
    Ok(())
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

/// nDCG@10 with graded qrels, and Recall@10.
fn metrics(ranked: &[String], rel: &HashMap<String, i64>) -> (f64, f64) {
    let dcg: f64 = ranked
        .iter()
        .take(K)
        .enumerate()
        .map(|(i, id)| {
            let g = *rel.get(id).unwrap_or(&0) as f64;
            (2f64.powf(g) - 1.0) / ((i + 2) as f64).log2()
        })
        .sum();
    let mut gains: Vec<i64> = rel.values().copied().filter(|&g| g > 0).collect();
    gains.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = gains
        .iter()
        .take(K)
        .enumerate()
        .map(|(i, &g)| (2f64.powf(g as f64) - 1.0) / ((i + 2) as f64).log2())
        .sum();
    let relevant = gains.len();
    let found = ranked
        .iter()
        .take(K)
        .filter(|id| rel.get(*id).is_some_and(|&g| g > 0))
        .count();
    let ndcg = if idcg > 0.0 { dcg / idcg } else { 0.0 };
    let recall = if relevant > 0 {
        found as f64 / relevant as f64
    } else {
        0.0
    };
    (ndcg, recall)
}

fn main() -> Result<()> {
    let a = args()?;
    let corpus = beir::corpus(&a.data)?;
    let queries = beir::queries(&a.data)?;
    let mut qrels: HashMap<String, HashMap<String, i64>> = HashMap::new();
    for r in beir::qrels(&a.data)? {
        qrels.entry(r.query).or_default().insert(r.doc, r.grade);
    }
    let mut qids: Vec<String> = qrels
        .keys()
        .filter(|q| queries.contains_key(*q))
        .cloned()
        .collect();
    qids.sort();
    eprintln!(
        "{}: {} documents, {} judged queries",
        a.data.display(),
        corpus.len(),
        qids.len()
    );

    let need_vectors = a.modes.iter().any(|m| m != "keyword");
    let mut doc_vecs = HashMap::new();
    let mut query_vecs = HashMap::new();
    let mut window_keys: HashMap<String, Vec<String>> = HashMap::new();
    let mut window_vecs: HashMap<String, Vec<Vec<f32>>> = HashMap::new();
    if need_vectors {
        let cache = a.cache.clone().unwrap_or_else(|| {
            let key = format!(
                "{}|{}|{}",
                a.data.display(),
                a.model_dir.display(),
                a.max_length
            );
            PathBuf::from(format!(
                "/tmp/aig-beir-{:08x}.vec",
                crc32fast::hash(key.as_bytes())
            ))
        });
        let mut all = load_cache(&cache).unwrap_or_default();
        let doc_key = |d: &Doc| format!("d:{}", d.id);
        let q_key = |q: &str| format!("q:{q}");
        // Only what the cache lacks is embedded, so variants sharing a corpus (or a
        // corpus with new queries) reuse the expensive part.
        let docs_todo: Vec<&Doc> = corpus
            .iter()
            .filter(|d| !all.contains_key(&doc_key(d)))
            .collect();
        let queries_todo: Vec<&String> = qids
            .iter()
            .filter(|q| !all.contains_key(&q_key(q)))
            .collect();
        if docs_todo.is_empty() && queries_todo.is_empty() {
            eprintln!("embeddings from {}", cache.display());
        } else {
            let mut e = Embedder::new(&a.model_dir, &a.ort, a.max_length)?;
            let texts: Vec<String> = docs_todo
                .iter()
                .map(|d| format!("{} {}", d.title, d.text).trim().to_string())
                .collect();
            for (d, v) in docs_todo.iter().zip(e.embed(&texts, "corpus")?) {
                all.insert(doc_key(d), v);
            }
            let qtexts: Vec<String> = queries_todo.iter().map(|q| queries[*q].clone()).collect();
            for (q, v) in queries_todo.iter().zip(e.embed(&qtexts, "queries")?) {
                all.insert(q_key(q), v);
            }
            save_cache(&cache, &all)?;
            eprintln!("embeddings cached in {}", cache.display());
        }
        if a.sentences > 0 {
            // Windows of whole sentences of at most `sentences` characters, each embedded
            // with the title, for passages longer than one window.
            let splitter = text_splitter::TextSplitter::new(a.sentences);
            let mut todo: Vec<(String, String)> = Vec::new();
            for d in &corpus {
                let ws: Vec<&str> = splitter.chunks(&d.text).collect();
                if ws.len() < 2 {
                    continue;
                }
                let mut keys = Vec::new();
                for (i, w) in ws.iter().enumerate() {
                    let key = format!("s{}:{}:{i}", a.sentences, d.id);
                    if !all.contains_key(&key) {
                        todo.push((key.clone(), format!("{} {}", d.title, w).trim().to_string()));
                    }
                    keys.push(key);
                }
                window_keys.insert(d.id.clone(), keys);
            }
            if !todo.is_empty() {
                let mut e = Embedder::new(&a.model_dir, &a.ort, a.max_length)?;
                let texts: Vec<String> = todo.iter().map(|t| t.1.clone()).collect();
                for ((key, _), v) in todo.iter().zip(e.embed(&texts, "windows")?) {
                    all.insert(key.clone(), v);
                }
                save_cache(&cache, &all)?;
            }
            for (d, keys) in &window_keys {
                window_vecs.insert(
                    d.clone(),
                    keys.iter().map(|k| normalised(&all[k])).collect::<Vec<_>>(),
                );
            }
        }
        for d in &corpus {
            doc_vecs.insert(d.id.clone(), all[&doc_key(d)].clone());
        }
        for q in &qids {
            query_vecs.insert(q.clone(), all[&q_key(q)].clone());
        }
    }

    // The product's indexes, in a throwaway directory.
    let tmp = tempfile::tempdir()?;
    let tenant = TenantId::new();
    let mut by_chunk: HashMap<ChunkId, String> = HashMap::new();
    let mut text_docs = Vec::with_capacity(corpus.len());
    let mut vec_items = Vec::with_capacity(corpus.len());
    for d in &corpus {
        let chunk = ChunkId::new();
        let document = DocumentId::new();
        by_chunk.insert(chunk.clone(), d.id.clone());
        text_docs.push(TextDoc {
            tenant: tenant.clone(),
            document: document.clone(),
            chunk: chunk.clone(),
            agents: Vec::new(),
            text: d.text.clone(),
            headings: if d.title.is_empty() {
                Vec::new()
            } else {
                vec![d.title.clone()]
            },
        });
        if let Some(v) = doc_vecs.get(&d.id) {
            vec_items.push((chunk, document, v.clone()));
        }
    }
    let start = Instant::now();
    let mut texts = Vec::new();
    for (i, &hb) in a.headings_boosts.iter().enumerate() {
        let params = TextParams { headings_boost: hb };
        let text = TextIndex::open_with(&tmp.path().join(format!("text{i}")), params)?;
        for batch in text_docs.chunks(1000) {
            text.add(batch)?;
        }
        let label = if a.headings_boosts.len() > 1 {
            format!(" hb={hb}")
        } else {
            String::new()
        };
        texts.push((label, text));
    }
    eprintln!("text index: {:.1}s", start.elapsed().as_secs_f32());
    let dims = doc_vecs.values().next().map_or(1, Vec::len);
    let vectors = VectorIndex::open(&tmp.path().join("vectors"), dims, "eval")?;
    let start = Instant::now();
    for batch in vec_items.chunks(1000) {
        vectors.insert(&tenant, batch)?;
    }
    eprintln!("vector index: {:.1}s", start.elapsed().as_secs_f32());

    let mut fusions = a.fusions.clone();
    if fusions.is_empty() {
        fusions.push(("default".into(), FusionParams::default()));
    }
    let mut runs_out = match &a.runs {
        Some(p) => Some(BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    let names = |hits: &[Hit]| -> Vec<String> {
        hits.iter()
            .filter_map(|h| by_chunk.get(&h.chunk).cloned())
            .collect()
    };
    let mut sums: HashMap<String, (f64, f64)> = HashMap::new();
    let by_id: HashMap<&str, &Doc> = corpus.iter().map(|d| (d.id.as_str(), d)).collect();
    let start = Instant::now();
    for q in &qids {
        let rel = &qrels[q];
        let vs = match query_vecs.get(q) {
            Some(v) => vectors.search(&tenant, v, None, a.depth)?,
            None => Vec::new(),
        };
        let mut add = |mode: String, ranked: Vec<String>| {
            let (n, r) = metrics(&ranked, rel);
            let e = sums.entry(mode).or_default();
            e.0 += n;
            e.1 += r;
        };
        if a.modes.iter().any(|m| m == "vector") {
            add("vector".into(), names(&vs));
        }
        let mut first_kw = Vec::new();
        for (label, text) in &texts {
            let kw = if a.modes.iter().any(|m| m != "vector") {
                text.search(&tenant, &queries[q], &Filter::default(), a.depth)?
            } else {
                Vec::new()
            };
            if a.modes.iter().any(|m| m == "keyword") {
                add(format!("keyword{label}"), names(&kw));
            }
            if a.modes.iter().any(|m| m == "hybrid") {
                // The keyword-lookup rule reads the first keyword hits, as the product does.
                let mut covered = false;
                let mut terms = 0;
                for h in kw.iter().take(LOOKUP_HITS) {
                    let best_text = by_chunk
                        .get(&h.chunk)
                        .and_then(|id| by_id.get(id.as_str()))
                        .map(|d| format!("{}\n{}", d.title, d.text))
                        .unwrap_or_default();
                    let (c, t) = text.coverage(&queries[q], &best_text);
                    covered |= c;
                    terms = t;
                }
                for (name, p) in &fusions {
                    let lookup = lookup_share(covered, terms, p);
                    let fused = fuse_lookup(&kw, &vs, K, p, lookup);
                    for &(beta, depth) in &a.prf {
                        // Rocchio on the fused top: the query vector moved towards the
                        // vectors of the first `depth` fused hits, searched again, fused again.
                        let Some(qv) = query_vecs.get(q) else {
                            continue;
                        };
                        let mut nv = qv.clone();
                        for h in fused.iter().take(depth) {
                            if let Some(dv) = by_chunk.get(&h.chunk).and_then(|d| doc_vecs.get(d)) {
                                for (x, y) in nv.iter_mut().zip(dv) {
                                    *x += beta * y / depth as f32;
                                }
                            }
                        }
                        let norm = nv.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                        nv.iter_mut().for_each(|x| *x /= norm);
                        let vs2 = vectors.search(&tenant, &nv, None, a.depth)?;
                        add(
                            format!("hybrid {name} prf{beta}:{depth}{label}"),
                            names(&fuse_lookup(&kw, &vs2, K, p, lookup)),
                        );
                        // The same, with the confidence taken from the original query.
                        let mut vs3 = vs2.clone();
                        if let (Some(top), Some(first)) = (vs.first(), vs3.first()) {
                            let shift = first.score - top.score;
                            vs3.iter_mut().for_each(|h| h.score -= shift);
                        }
                        add(
                            format!("hybrid {name} prfc{beta}:{depth}{label}"),
                            names(&fuse_lookup(&kw, &vs3, K, p, lookup)),
                        );
                    }
                    add(format!("hybrid {name}{label}"), names(&fused));
                    if !window_vecs.is_empty()
                        && let Some(qv) = query_vecs.get(q)
                    {
                        let qv = normalised(qv);
                        let dot = |x: &[f32]| x.iter().zip(&qv).map(|(a, b)| a * b).sum::<f32>();
                        for &mix in &a.mixes {
                            // The vector list re-scored exactly: (1 - mix) * passage cosine +
                            // mix * best window cosine, over every document.
                            let mut scored: Vec<Hit> = vec_items
                                .iter()
                                .map(|(chunk, document, v)| {
                                    let p = dot(&normalised(v));
                                    let id = &by_chunk[chunk];
                                    let w = window_vecs.get(id).map_or(p, |ws| {
                                        ws.iter().map(|w| dot(w)).fold(f32::MIN, f32::max)
                                    });
                                    Hit {
                                        chunk: chunk.clone(),
                                        document: document.clone(),
                                        score: (1.0 - mix) * p + mix * w,
                                    }
                                })
                                .collect();
                            scored.sort_by(|x, y| y.score.total_cmp(&x.score));
                            scored.truncate(a.depth);
                            if label.is_empty() && name == &fusions[0].0 {
                                add(format!("vector maxp{mix}"), names(&scored));
                            }
                            add(
                                format!("hybrid {name} maxp{mix}{label}"),
                                names(&fuse_lookup(&kw, &scored, K, p, lookup)),
                            );
                        }
                    }
                }
            }
            if first_kw.is_empty() {
                first_kw = kw;
            }
        }
        let kw = first_kw;
        if let Some(w) = runs_out.as_mut() {
            let list = |hits: &[Hit]| -> Vec<(String, f32)> {
                hits.iter()
                    .filter_map(|h| by_chunk.get(&h.chunk).map(|n| (n.clone(), h.score)))
                    .collect()
            };
            let line = serde_json::json!({
                "q": q, "rel": rel, "keyword": list(&kw), "vector": list(&vs)
            });
            writeln!(w, "{line}")?;
        }
    }
    eprintln!(
        "searched {} queries in {:.1}s",
        qids.len(),
        start.elapsed().as_secs_f32()
    );
    let n = qids.len().max(1) as f64;
    let mut modes: Vec<_> = sums.into_iter().collect();
    modes.sort_by(|a, b| a.0.cmp(&b.0));
    println!("dataset: {}", a.data.display());
    println!("{:<24} {:>9} {:>10}", "mode", "nDCG@10", "Recall@10");
    for (mode, (nd, rc)) in modes {
        println!("{:<24} {:>9.4} {:>10.4}", mode, nd / n, rc / n);
    }
    Ok(())
}
