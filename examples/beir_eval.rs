//! Retrieval quality of what ships: `Knowledge::search` with the product's defaults, on a
//! BEIR-layout folder.
//!
//! ```text
//! cargo run --example beir_eval -- --data <BEIR folder> \
//!     --model-dir <sentence-transformers ONNX dir> --ort <libonnxruntime.so> \
//!     [--modes keyword,vector,hybrid] [--cache <file>] [--runs <file>] [--limit N] \
//!     [--fusion default | default-nolookup | zscore:0.75 | zscore:0.75:0.35:0.2:3:all | minmax:0.7 | rrf:0.5]...
//! ```
//!
//! The app is built on a temporary data directory with the model; one tenant gets every
//! corpus passage as one document of one chunk (heading = title), written as the ingestion
//! pipeline writes it (`common/tenant.rs`). Every judged query is then searched through
//! `Knowledge::search` in each mode with `topK` 10: the product's candidate depth, its
//! keyword-lookup rule, its vector index (exact up to 4,096 vectors, the HNSW graph above)
//! and its default fusion. Passage vectors come from a cache keyed by the embedded text
//! (`--cache`, default one file per model under /tmp), so reruns skip the model; queries
//! are embedded by the product on every search, as in production.
//!
//! `--fusion` adds hybrid rows for other fusion settings, fused from the product's own
//! lists of the hybrid search itself (`Knowledge::search_explained`: one query embedding);
//! `--runs` writes each query's lists and lookup
//! evidence as JSON lines for offline analysis. Queries are split into two halves by a hash
//! of their id ("dev": even, "test": odd): choose settings on dev, report test. Query ids
//! of the form `group:id` (the mixed corpus) are also reported per group.

use aigentable::index::fusion::FusionMethod;
use aigentable::index::{FusionParams, Hit, fuse_lookup, lookup_share};
use aigentable::knowledge::{SearchMode, SearchQuery};
use aigentable::types::DocumentId;
use anyhow::{Result, anyhow, bail};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

#[path = "common/beir.rs"]
mod beir;
#[path = "common/tenant.rs"]
mod tenant;

const K: usize = 10;

struct Args {
    data: PathBuf,
    model_dir: PathBuf,
    ort: PathBuf,
    modes: Vec<SearchMode>,
    cache: Option<PathBuf>,
    runs: Option<PathBuf>,
    limit: usize,
    fusions: Vec<(String, FusionParams)>,
}

/// `default`, `default-nolookup`, or
/// `method:vector_weight[:floor:span[:lookup terms[:short terms|all[:long floor|none]]]]`
/// (fixed weight; no confidence floor, no lookup rule unless given; the floor applies to
/// queries of at most the default's short terms, longer ones have none unless given).
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
    if let Some(terms) = parts.get(5) {
        p.confidence_terms = match *terms {
            "all" => None,
            n => Some(n.parse()?),
        };
    }
    if let Some(floor) = parts.get(6) {
        p.long_query_floor = match *floor {
            "none" => None,
            f => Some(f.parse()?),
        };
    }
    Ok(p)
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
        modes: vec![SearchMode::Keyword, SearchMode::Vector, SearchMode::Hybrid],
        cache: None,
        runs: None,
        limit: usize::MAX,
        fusions: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = val()?.into(),
            "--model-dir" => a.model_dir = val()?.into(),
            "--ort" => a.ort = val()?.into(),
            "--cache" => a.cache = Some(val()?.into()),
            "--runs" => a.runs = Some(val()?.into()),
            "--limit" => a.limit = val()?.parse()?,
            "--modes" => {
                a.modes = val()?
                    .split(',')
                    .map(|m| match m {
                        "hybrid" => Ok(SearchMode::Hybrid),
                        "keyword" => Ok(SearchMode::Keyword),
                        "vector" => Ok(SearchMode::Vector),
                        other => Err(anyhow!("unknown mode {other}")),
                    })
                    .collect::<Result<_>>()?
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
    if a.model_dir.as_os_str().is_empty() || a.ort.as_os_str().is_empty() {
        bail!(
            "--model-dir and --ort are required (or AIGENTABLE_TEST_MODEL_DIR / AIGENTABLE_TEST_ORT_DYLIB)"
        );
    }
    Ok(a)
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

/// Sums of nDCG@10 and Recall@10 and a count, per (row, slice).
#[derive(Default)]
struct Sums(BTreeMap<(String, String), (f64, f64, usize)>);

impl Sums {
    fn add(&mut self, row: &str, slices: &[String], (n, r): (f64, f64)) {
        for s in slices {
            let e = self.0.entry((row.to_string(), s.clone())).or_default();
            e.0 += n;
            e.1 += r;
            e.2 += 1;
        }
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
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
    qids.truncate(a.limit);
    eprintln!(
        "{}: {} passages, {} judged queries",
        a.data.display(),
        corpus.len(),
        qids.len()
    );
    let cache = a
        .cache
        .clone()
        .unwrap_or_else(|| tenant::default_cache(&a.model_dir));
    let s = tenant::seed(&a.model_dir, &a.ort, &cache, &corpus).await?;
    eprintln!(
        "model {}: embedded {} passages in {:.1} s ({}); seeded {} passages in {:.1} s ({:.0}/s)",
        s.model_id,
        s.embedded,
        s.embed_secs,
        if s.embedded > 0 {
            format!("{:.1}/s", s.embedded as f64 / s.embed_secs.max(1e-9))
        } else {
            format!("all from {}", cache.display())
        },
        corpus.len(),
        s.seed_secs,
        corpus.len() as f64 / s.seed_secs.max(1e-9),
    );

    let s = std::sync::Arc::new(s);
    let names = {
        let s = s.clone();
        move |docs: &mut dyn Iterator<Item = DocumentId>| -> Vec<String> {
            docs.filter_map(|d| s.passage_of.get(&d).cloned()).collect()
        }
    };
    let mut runs_out = match &a.runs {
        Some(p) => Some(BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    let mut sums = Sums::default();
    let mut took: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut mismatches = 0usize;
    let started = Instant::now();
    for (i, qid) in qids.iter().enumerate() {
        let rel = &qrels[qid];
        let half = if crc32fast::hash(qid.as_bytes()).is_multiple_of(2) {
            "dev"
        } else {
            "test"
        };
        let mut slices = vec!["all".to_string(), half.to_string()];
        if let Some((group, _)) = qid.split_once(':') {
            slices.push(group.to_string());
        }
        let q = SearchQuery {
            query: queries[qid].clone(),
            documents: None,
            top_k: K,
            mode: SearchMode::Hybrid,
        };
        let explain = !a.fusions.is_empty() || runs_out.is_some();
        let mut hybrid = None;
        for mode in &a.modes {
            let (s2, q2) = (
                s.clone(),
                SearchQuery {
                    mode: *mode,
                    ..q.clone()
                },
            );
            let (r, input) = tokio::task::spawn_blocking(move || {
                if explain && q2.mode == SearchMode::Hybrid {
                    s2.knowledge.search_explained(&s2.caller, &q2)
                } else {
                    s2.knowledge.search(&s2.caller, &q2).map(|r| (r, None))
                }
            })
            .await?
            .map_err(|e| anyhow!("search: {e}"))?;
            if r.mode != *mode {
                bail!("{mode:?} search answered as {:?}: {:?}", r.mode, r.warnings);
            }
            let row = format!("{mode:?}").to_lowercase();
            took.entry(row.clone()).or_default().push(r.took_ms);
            let ranked = names(&mut r.data.iter().map(|h| h.document_id.clone()));
            sums.add(&row, &slices, metrics(&ranked, rel));
            if *mode == SearchMode::Hybrid {
                hybrid = Some((ranked, input));
            }
        }
        if explain {
            let Some((hybrid, Some(input))) = hybrid else {
                bail!("--fusion and --runs need the hybrid mode (and a hybrid answer for {qid})");
            };
            let hits = |h: &[Hit]| names(&mut h.iter().map(|h| h.document.clone()));
            for (name, p) in &a.fusions {
                let lookup = lookup_share(input.covered, input.terms, p);
                let fused = fuse_lookup(
                    &input.keyword,
                    &input.vector,
                    input.k,
                    p,
                    lookup,
                    input.terms,
                );
                let ranked = hits(&fused);
                if name == "default" && ranked != hybrid {
                    // The product's search and its own lists fused again must agree.
                    mismatches += 1;
                }
                sums.add(&format!("hybrid {name}"), &slices, metrics(&ranked, rel));
            }
            if let Some(w) = runs_out.as_mut() {
                let list = |hs: &[Hit]| -> Vec<(String, f32)> {
                    hs.iter()
                        .filter_map(|h| s.passage_of.get(&h.document).map(|p| (p.clone(), h.score)))
                        .collect()
                };
                let line = serde_json::json!({
                    "q": qid, "rel": rel, "kw": list(&input.keyword), "vec": list(&input.vector),
                    "terms": input.terms, "covered": input.covered,
                });
                writeln!(w, "{line}")?;
            }
        }
        if i % 200 == 0 {
            eprint!("\rsearched {}/{}", i + 1, qids.len());
        }
    }
    eprintln!(
        "\rsearched {} queries in {:.1} s",
        qids.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(mut w) = runs_out {
        w.flush()?;
    }
    if mismatches > 0 {
        eprintln!(
            "warning: {mismatches} queries where the default fusion of the explained lists differs from the search's (ties or a changed index)"
        );
    }
    println!("dataset: {} ({} passages)", a.data.display(), corpus.len());
    println!("model: {}", s.model_id);
    let slices: Vec<String> = {
        let mut v: Vec<String> = sums.0.keys().map(|(_, s)| s.clone()).collect();
        v.sort_by_key(|s| match s.as_str() {
            "all" => (0, s.clone()),
            "dev" => (1, s.clone()),
            "test" => (2, s.clone()),
            _ => (3, s.clone()),
        });
        v.dedup();
        v
    };
    print!("{:<32}", "nDCG@10 / Recall@10");
    for sl in &slices {
        let n = sums
            .0
            .iter()
            .find(|((_, s), _)| s == sl)
            .map_or(0, |(_, v)| v.2);
        print!(" {:>17}", format!("{sl} ({n})"));
    }
    println!();
    let rows: Vec<String> = {
        let mut v: Vec<String> = sums.0.keys().map(|(r, _)| r.clone()).collect();
        v.dedup();
        v
    };
    for row in rows {
        print!("{row:<32}");
        for sl in &slices {
            match sums.0.get(&(row.clone(), sl.clone())) {
                Some((n, r, c)) => print!(
                    " {:>17}",
                    format!("{:.4} / {:.4}", n / *c as f64, r / *c as f64)
                ),
                None => print!(" {:>17}", "-"),
            }
        }
        println!();
    }
    println!("query time in Knowledge::search (ms, p50 / p95; query embedding included):");
    for (row, mut v) in took {
        println!(
            "  {row:<8} {:.2} / {:.2}",
            percentile(&mut v, 0.5),
            percentile(&mut v, 0.95)
        );
    }
    Ok(())
}
