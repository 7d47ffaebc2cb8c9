//! Retrieval quality of `index::{TextIndex, VectorIndex, fuse}` on a BEIR-layout folder.
//!
//! ```text
//! cargo run --release --example beir_eval -- --data <BEIR folder> \
//!     --model-dir <sentence-transformers ONNX dir> --ort <libonnxruntime.so> \
//!     [--modes keyword,vector,hybrid] [--depth 100] [--cache <file>] [--runs <file>] \
//!     [--fusion default | zscore:0.75 | zscore:0.75:0.4:0.2 | minmax:0.7 | rrf:0.5]... \
//!     [--headings-boost 0.3,1]
//! ```
//!
//! Each corpus document becomes one chunk of one document of one tenant (headings = title,
//! text = text) and goes through the product's `TextIndex` / `VectorIndex` / `fuse`.
//! Embeddings are computed with fastembed (mean pooling, max length 256, vectors of
//! "title text") and cached in `--cache` (default under /tmp) so reruns skip the model.
//! Prints nDCG@10 and Recall@10 per mode; `--fusion` may be repeated to compare fusion
//! settings on the same runs; `--runs` writes each query's keyword and vector lists as
//! JSON lines for offline analysis.

use aigentable::index::fusion::FusionMethod;
use aigentable::index::{
    Filter, FusionParams, Hit, TextDoc, TextIndex, TextParams, VectorIndex, fuse,
};
use aigentable::types::{ChunkId, DocumentId, TenantId};
use anyhow::{Context, Result, anyhow, bail};
use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const K: usize = 10;
const BATCH: usize = 32;
const MAX_LENGTH: usize = 256;

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
}

/// `default`, or `method:vector_weight[:floor:span]` (fixed weight without floor).
fn parse_fusion(s: &str) -> Result<FusionParams> {
    if s == "default" {
        return Ok(FusionParams::default());
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

struct Doc {
    id: String,
    title: String,
    text: String,
}

fn read_jsonl(path: &Path) -> Result<Vec<serde_json::Value>> {
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line?;
        if !line.trim().is_empty() {
            out.push(serde_json::from_str(&line)?);
        }
    }
    Ok(out)
}

fn field(v: &serde_json::Value, k: &str) -> String {
    match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

struct Embedder(TextEmbedding);

impl Embedder {
    fn new(model_dir: &Path, ort: &Path) -> Result<Self> {
        if !ort.is_file() {
            bail!("ONNX Runtime library not found at {}", ort.display());
        }
        let builder = ort::init_from(ort).map_err(|e| anyhow!("loading ONNX Runtime: {e}"))?;
        drop(builder);
        let read = |name: &str| {
            std::fs::read(model_dir.join(name))
                .with_context(|| format!("reading {}", model_dir.join(name).display()))
        };
        let onnx = read("onnx/model.onnx")?;
        let files = TokenizerFiles {
            tokenizer_file: read("tokenizer.json")?,
            config_file: read("config.json")?,
            special_tokens_map_file: read("special_tokens_map.json")?,
            tokenizer_config_file: read("tokenizer_config.json")?,
        };
        let model = UserDefinedEmbeddingModel::new(onnx, files).with_pooling(Pooling::Mean);
        let te = TextEmbedding::try_new_from_user_defined(
            model,
            InitOptionsUserDefined::new().with_max_length(MAX_LENGTH),
        )
        .map_err(|e| anyhow!("loading the model: {e}"))?;
        Ok(Self(te))
    }

    fn embed(&mut self, texts: &[String], what: &str) -> Result<Vec<Vec<f32>>> {
        let start = Instant::now();
        let mut out = Vec::with_capacity(texts.len());
        for (i, batch) in texts.chunks(BATCH).enumerate() {
            out.extend(
                self.0
                    .embed(batch, Some(BATCH))
                    .map_err(|e| anyhow!("embedding: {e}"))?,
            );
            if i % 20 == 0 {
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
    let corpus: Vec<Doc> = read_jsonl(&a.data.join("corpus.jsonl"))?
        .iter()
        .map(|v| Doc {
            id: field(v, "_id"),
            title: field(v, "title"),
            text: field(v, "text"),
        })
        .collect();
    let queries: HashMap<String, String> = read_jsonl(&a.data.join("queries.jsonl"))?
        .iter()
        .map(|v| (field(v, "_id"), field(v, "text")))
        .collect();
    let mut qrels: HashMap<String, HashMap<String, i64>> = HashMap::new();
    let qrels_path = a.data.join("qrels").join("test.tsv");
    for (i, line) in std::fs::read_to_string(&qrels_path)
        .with_context(|| format!("reading {}", qrels_path.display()))?
        .lines()
        .enumerate()
    {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 3 || (i == 0 && cols[2].parse::<i64>().is_err()) {
            continue;
        }
        qrels
            .entry(cols[0].to_string())
            .or_default()
            .insert(cols[1].to_string(), cols[2].trim().parse()?);
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
    if need_vectors {
        let cache = a.cache.clone().unwrap_or_else(|| {
            let key = format!("{}|{}", a.data.display(), a.model_dir.display());
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
            let mut e = Embedder::new(&a.model_dir, &a.ort)?;
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
                for (name, p) in &fusions {
                    add(
                        format!("hybrid {name}{label}"),
                        names(&fuse(&kw, &vs, K, p)),
                    );
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
