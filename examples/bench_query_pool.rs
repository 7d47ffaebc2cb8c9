//! Query-embedding latency with concurrent searchers: the product's `OnnxEmbedder` with one
//! session and no cache (how every search was served before: one session behind one lock)
//! against the session pool and the query cache. 8 searcher threads each embed their share
//! of real questions (`embed_query`, what a search does first), optionally while one
//! ingestion thread keeps embedding passages in batches, as a document upload does.
//!
//! ```text
//! cargo run --example bench_query_pool -- [--model-dir DIR] [--graph onnx/model.onnx]
//!     [--searchers 8] [--queries 200] [--distinct 200] [--ingest] [--configs 1x2,2x1,2x1+cache]
//! ```
//!
//! * `--model-dir DIR`  model folder (default $AIGENTABLE_TEST_MODEL_DIR, else
//!   ../shared/models/all-MiniLM-L6-v2); `--ort PATH` the runtime as in bench_embed
//! * `--graph FILE`     graph inside it (default `onnx/model.onnx`)
//! * `--questions PATH` JSONL with a `text` field (default ../shared/eval/boolq_dev/queries.jsonl)
//! * `--passages PATH`  JSONL for the ingestion thread (default ../shared/eval/boolq_dev/corpus.jsonl)
//! * `--searchers N`    concurrent searcher threads (default 8)
//! * `--queries N`      queries in all, shared among the searchers (default 200)
//! * `--distinct N`     distinct questions they are drawn from, round robin (default = `--queries`,
//!   so nothing repeats; fewer makes repeats for the cache)
//! * `--ingest`         one more thread embeds passages in batches of 32 meanwhile
//! * `--configs LIST`   `SESSIONSxTHREADS[+cache][+fixed]`, comma-separated (default
//!   `1x2,2x1,2x2,2x1+cache`); `1x2` without cache is the old behaviour on 2 cores. The
//!   pool opens sessions as searchers queue (warmed until all are open before timing);
//!   `+fixed` opens them all at load and keeps them (EMBEDDINGS_SESSION_IDLE_SECS=0, the
//!   behaviour before session 10)
//!
//! Reported per configuration: query p50/p95/p99/max in ms, queries/s, cache hits, and with
//! `--ingest` the passages/s the ingestion thread managed meanwhile.

use aigentable::embed::{Embedder, OnnxEmbedder, OnnxOptions};
use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

struct Opts {
    model_dir: PathBuf,
    ort: PathBuf,
    graph: String,
    questions: PathBuf,
    passages: PathBuf,
    searchers: usize,
    queries: usize,
    distinct: Option<usize>,
    ingest: bool,
    configs: Vec<String>,
}

fn opts() -> Result<Opts> {
    let env_or = |var: &str, default: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(default))
    };
    let mut o = Opts {
        model_dir: env_or(
            "AIGENTABLE_TEST_MODEL_DIR",
            "../shared/models/all-MiniLM-L6-v2",
        ),
        ort: env_or(
            "AIGENTABLE_TEST_ORT_DYLIB",
            "../shared/runtime/onnxruntime-1.32.0/libonnxruntime.so.1.32.0",
        ),
        graph: "onnx/model.onnx".into(),
        questions: PathBuf::from("../shared/eval/boolq_dev/queries.jsonl"),
        passages: PathBuf::from("../shared/eval/boolq_dev/corpus.jsonl"),
        searchers: 8,
        queries: 200,
        distinct: None,
        ingest: false,
        configs: ["1x2", "2x1", "2x2", "2x1+cache"]
            .map(String::from)
            .to_vec(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--model-dir" => o.model_dir = value()?.into(),
            "--ort" => o.ort = value()?.into(),
            "--graph" => o.graph = value()?,
            "--questions" => o.questions = value()?.into(),
            "--passages" => o.passages = value()?.into(),
            "--searchers" => o.searchers = value()?.parse()?,
            "--queries" => o.queries = value()?.parse()?,
            "--distinct" => o.distinct = Some(value()?.parse()?),
            "--ingest" => o.ingest = true,
            "--configs" => o.configs = value()?.split(',').map(str::to_string).collect(),
            other => {
                bail!("unknown option {other} (see the header of examples/bench_query_pool.rs)")
            }
        }
    }
    if o.searchers == 0 || o.queries == 0 || o.distinct == Some(0) {
        bail!("--searchers, --queries and --distinct must be at least 1");
    }
    Ok(o)
}

fn texts(path: &Path, n: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let out: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            v["text"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("a line without `text`"))
        })
        .collect::<Result<_>>()?;
    if out.len() < n {
        bail!("{} has only {} lines", path.display(), out.len());
    }
    Ok(out)
}

/// `SESSIONSxTHREADS[+cache][+fixed]`.
fn parse_config(c: &str) -> Result<(usize, usize, bool, bool)> {
    let (c, fixed) = match c.strip_suffix("+fixed") {
        Some(s) => (s, true),
        None => (c, false),
    };
    let (shape, cache) = match c.strip_suffix("+cache") {
        Some(s) => (s, true),
        None => (c, false),
    };
    let (s, t) = shape
        .split_once('x')
        .ok_or_else(|| anyhow!("config {c}: expected SESSIONSxTHREADS[+cache]"))?;
    Ok((s.parse()?, t.parse()?, cache, fixed))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn run(o: &Opts, config: &str, questions: &[String], passages: &[String]) -> Result<()> {
    let (sessions, threads, cache, fixed) = parse_config(config)?;
    let e = Arc::new(OnnxEmbedder::load_with(
        &o.model_dir,
        &o.ort,
        &OnnxOptions {
            max_length: 512,
            onnx_file: Some(o.graph.clone().into()),
            threads: Some(threads),
            sessions: Some(sessions),
            session_idle: if fixed {
                None
            } else {
                Some(aigentable::embed::DEFAULT_SESSION_IDLE)
            },
            query_cache: if cache { 1024 } else { 0 },
            ..OnnxOptions::default()
        },
    )?);
    // Warm-up: concurrent queries until the pool has opened all its sessions (it opens
    // them as callers queue), so the figures are those of a warmed pool.
    for round in 0..50 {
        std::thread::scope(|s| {
            for i in 0..sessions.max(2) * 2 {
                let e = &e;
                s.spawn(move || e.embed(&[format!("warm up {round} {i}")]));
            }
        });
        if e.open_sessions() >= sessions {
            break;
        }
    }
    eprintln!(
        "{config}: {} of {sessions} sessions open",
        e.open_sessions()
    );

    let distinct = o.distinct.unwrap_or(o.queries).min(questions.len());
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let ingested = AtomicUsize::new(0);
    let start = Instant::now();
    let mut latencies: Vec<f64> = std::thread::scope(|s| -> Result<Vec<f64>> {
        let ingest = o.ingest.then(|| {
            s.spawn(|| -> Result<()> {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<String> = (0..32)
                        .map(|k| passages[(i + k) % passages.len()].clone())
                        .collect();
                    e.embed(&batch)?;
                    ingested.fetch_add(batch.len(), Ordering::Relaxed);
                    i += 32;
                }
                Ok(())
            })
        });
        let searchers: Vec<_> = (0..o.searchers)
            .map(|_| {
                s.spawn(|| -> Result<Vec<f64>> {
                    let mut mine = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= o.queries {
                            return Ok(mine);
                        }
                        let q = &questions[n % distinct];
                        let t = Instant::now();
                        e.embed_query(q)?;
                        mine.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in searchers {
            all.extend(h.join().map_err(|_| anyhow!("a searcher panicked"))??);
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(h) = ingest {
            h.join()
                .map_err(|_| anyhow!("the ingestion thread panicked"))??;
        }
        Ok(all)
    })?;
    let wall = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let (_, hits, _) = e.query_cache_stats();
    println!(
        "| {config} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {hits} | {} |",
        o.queries,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0),
        o.queries as f64 / wall,
        if o.ingest {
            format!("{:.1}", ingested.load(Ordering::Relaxed) as f64 / wall)
        } else {
            "-".into()
        },
    );
    Ok(())
}

fn main() -> Result<()> {
    let o = opts()?;
    let questions = texts(&o.questions, o.distinct.unwrap_or(o.queries).max(1))?;
    let passages = if o.ingest {
        texts(&o.passages, 256)?
    } else {
        Vec::new()
    };
    println!(
        "{} ({}), {} searchers, {} queries over {} distinct questions{}",
        o.model_dir.display(),
        o.graph,
        o.searchers,
        o.queries,
        o.distinct.unwrap_or(o.queries),
        if o.ingest {
            ", one ingestion thread embedding passages in batches of 32 meanwhile"
        } else {
            ""
        }
    );
    println!();
    println!(
        "| sessions x threads | queries | p50 ms | p95 ms | p99 ms | max ms | queries/s | cache hits | passages/s ingested |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for c in &o.configs {
        run(&o, c, &questions, &passages)?;
    }
    Ok(())
}
