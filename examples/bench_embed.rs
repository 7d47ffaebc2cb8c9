//! Embedding throughput: `OnnxEmbedder` (fastembed over ONNX Runtime, behind our lock and
//! batching) against a raw ONNX Runtime session driven by hand, on real passages. Same graph
//! file, batch size, max length, thread count, graph optimisation level and tokenisation
//! (tokenizer.json with fastembed's padding/truncation), so the ratio is the cost of our layer.
//! Goal: ours >= 95% of raw. Runs the fp32 and the int8 graph.
//!
//! ```text
//! AIGENTABLE_TEST_MODEL_DIR=/path/to/all-MiniLM-L6-v2 \
//! AIGENTABLE_TEST_ORT_DYLIB=/path/to/libonnxruntime.so.1.32.0 \
//! cargo run --release --example bench_embed -- [--corpus corpus.jsonl] [--texts 384]
//! ```
//!
//! Options (all optional):
//!
//! * `--model-dir DIR`   model folder (default $AIGENTABLE_TEST_MODEL_DIR, else
//!   ../shared/models/all-MiniLM-L6-v2)
//! * `--ort PATH`        ONNX Runtime library (default $AIGENTABLE_TEST_ORT_DYLIB, else
//!   ../shared/runtime/onnxruntime-1.32.0/libonnxruntime.so.1.32.0)
//! * `--corpus PATH`     JSONL with a `text` field per line (default
//!   ../shared/eval/boolq_dev/corpus.jsonl)
//! * `--texts N`         passages per round (default 384)
//! * `--batch N`         texts per session run (default 32)
//! * `--max-length N`    tokens per text (default 256)
//! * `--threads N`       intra-op threads (default: available cores)
//! * `--rounds N`        timed passes over the passages (default 3)
//! * `--graphs LIST`     comma-separated graphs to compare (default
//!   `onnx/model.onnx,onnx/model_quantized.onnx`; all-mpnet-base-v2 ships only the second)
//! * `--memory`          instead: load ours once (`--keep-int8 0|1`, default 1) with one
//!   session and print RSS before/after loading and after embedding the passages once, and
//!   texts/s; `--save FILE` writes the vectors, `--compare FILE` prints min/mean cosine to a
//!   saved run. One configuration per process, since freed memory does not always go back
//!   to the system. The raw session compared with ours runs the graph ours runs (rewritten
//!   when ours keeps int8 weights), so the ratio stays the cost of our layer.
//!
//! Each batch is embedded by both implementations back to back (flipping which goes first), so
//! that load from other work on the machine hits both alike. Reported: texts/s over all passes,
//! their ratio, the median of the per-batch ratios (robust to bursts of outside load), and the
//! ratio of process CPU time spent (not inflated by waiting for a busy CPU).

use aigentable::embed::{Embedder, OnnxEmbedder, OnnxOptions, keep_int8_weights, ort_environment};
use anyhow::{Context, Result, anyhow, bail};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

struct Opts {
    model_dir: PathBuf,
    ort: PathBuf,
    corpus: PathBuf,
    texts: usize,
    batch: usize,
    max_length: usize,
    threads: usize,
    rounds: usize,
    graphs: Vec<String>,
    memory: bool,
    keep_int8: bool,
    save: Option<PathBuf>,
    compare: Option<PathBuf>,
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
        corpus: PathBuf::from("../shared/eval/boolq_dev/corpus.jsonl"),
        texts: 384,
        batch: 32,
        max_length: 256,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rounds: 3,
        graphs: vec!["onnx/model.onnx".into(), "onnx/model_quantized.onnx".into()],
        memory: false,
        keep_int8: true,
        save: None,
        compare: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--model-dir" => o.model_dir = value()?.into(),
            "--ort" => o.ort = value()?.into(),
            "--corpus" => o.corpus = value()?.into(),
            "--texts" => o.texts = value()?.parse()?,
            "--batch" => o.batch = value()?.parse()?,
            "--max-length" => o.max_length = value()?.parse()?,
            "--threads" => o.threads = value()?.parse()?,
            "--rounds" => o.rounds = value()?.parse()?,
            "--graphs" => o.graphs = value()?.split(',').map(str::to_string).collect(),
            "--memory" => o.memory = true,
            "--keep-int8" => o.keep_int8 = value()? != "0",
            "--save" => o.save = Some(value()?.into()),
            "--compare" => o.compare = Some(value()?.into()),
            other => bail!("unknown option {other} (see the header of examples/bench_embed.rs)"),
        }
    }
    if o.texts == 0 || o.batch == 0 || o.rounds == 0 || o.threads == 0 {
        bail!("--texts, --batch, --rounds and --threads must be at least 1");
    }
    Ok(o)
}

/// The first `n` passages of a BEIR-style corpus.jsonl.
fn passages(path: &Path, n: usize) -> Result<Vec<String>> {
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
        bail!("{} has only {} passages", path.display(), out.len());
    }
    Ok(out)
}

/// ONNX Runtime used directly: tokenise, run, mean-pool, normalise.
struct Raw {
    session: Session,
    tokenizer: Tokenizer,
    token_type_ids: bool,
}

impl Raw {
    fn new(
        model_dir: &Path,
        graph: &Path,
        ort: &Path,
        max_length: usize,
        threads: usize,
        keep_int8: bool,
    ) -> Result<Self> {
        let env = ort_environment(ort)?;
        let mut bytes = std::fs::read(graph).with_context(|| format!("{}", graph.display()))?;
        if keep_int8 && let Some(rewritten) = keep_int8_weights(&bytes)? {
            bytes = rewritten;
        }
        // The session options fastembed applies: level-3 optimisation, N intra-op threads.
        let session = Session::builder(&env)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| anyhow!("{e}"))?
            .with_intra_threads(threads)
            .map_err(|e| anyhow!("{e}"))?
            .commit_from_memory(&bytes)?;
        let token_type_ids = session
            .inputs()
            .iter()
            .any(|i| i.name() == "token_type_ids");

        // The tokenizer set up as fastembed does for a user-defined model.
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(model_dir.join("tokenizer_config.json"))?)?;
        let model_max = cfg["model_max_length"].as_f64().unwrap_or(512.0) as usize;
        let pad_token = cfg["pad_token"].as_str().unwrap_or("[PAD]").to_string();
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(model_dir.join("config.json"))?)?;
        let mut tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))
            .map_err(|e| anyhow!("tokenizer.json: {e}"))?;
        let pad_id = config["pad_token_id"]
            .as_u64()
            .map(|v| v as u32)
            .or_else(|| tokenizer.token_to_id(&pad_token))
            .unwrap_or(0);
        tokenizer
            .with_padding(Some(PaddingParams {
                strategy: PaddingStrategy::BatchLongest,
                pad_token,
                pad_id,
                ..Default::default()
            }))
            .with_truncation(Some(TruncationParams {
                max_length: max_length.min(model_max),
                ..Default::default()
            }))
            .map_err(|e| anyhow!("{e}"))?;
        Ok(Raw {
            session,
            tokenizer,
            token_type_ids,
        })
    }

    fn embed_batch(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow!("{e}"))?;
        let batch = encodings.len();
        let seq = encodings.first().map_or(0, |e| e.len());
        let mut ids = Vec::with_capacity(batch * seq);
        let mut mask = Vec::with_capacity(batch * seq);
        let mut types = Vec::with_capacity(batch * seq);
        for e in &encodings {
            ids.extend(e.get_ids().iter().map(|&x| x as i64));
            mask.extend(e.get_attention_mask().iter().map(|&x| x as i64));
            types.extend(e.get_type_ids().iter().map(|&x| x as i64));
        }
        let shape = [batch, seq];
        let mut inputs = ort::inputs![
            "input_ids" => Tensor::from_array((shape, ids))?,
            "attention_mask" => Tensor::from_array((shape, mask.clone()))?,
        ];
        if self.token_type_ids {
            inputs.push((
                "token_type_ids".into(),
                Tensor::from_array((shape, types))?.into(),
            ));
        }
        let outputs = self.session.run(inputs)?;
        let (out_shape, hidden) = outputs[0].try_extract_tensor::<f32>()?;
        let dims = *out_shape.last().ok_or_else(|| anyhow!("scalar output"))? as usize;
        let mut vectors = Vec::with_capacity(batch);
        for b in 0..batch {
            let mut v = vec![0.0f32; dims];
            let mut count = 0.0f32;
            for t in 0..seq {
                if mask[b * seq + t] == 0 {
                    continue;
                }
                count += 1.0;
                let row = &hidden[(b * seq + t) * dims..(b * seq + t + 1) * dims];
                for (acc, x) in v.iter_mut().zip(row) {
                    *acc += x;
                }
            }
            let count = count.max(1.0);
            v.iter_mut().for_each(|x| *x /= count);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt() + 1e-12;
            v.iter_mut().for_each(|x| *x /= norm);
            vectors.push(v);
        }
        Ok(vectors)
    }

    fn embed(&mut self, texts: &[String], batch: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(batch) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }
}

/// User + system CPU time of this process (all threads, ONNX Runtime's included) in clock
/// ticks, from /proc/self/stat; 0 where that is unavailable. Unlike wall time it does not count
/// time spent waiting for the CPU while other work on the machine runs.
fn process_cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn bench_graph(o: &Opts, texts: &[String], graph_file: &str, label: &str) -> Result<()> {
    let graph = o.model_dir.join(graph_file);
    let ours = OnnxEmbedder::load_with(
        &o.model_dir,
        &o.ort,
        &OnnxOptions {
            batch_size: o.batch,
            max_length: o.max_length,
            onnx_file: Some(graph_file.into()),
            threads: Some(o.threads),
            // One session and no query cache: the layer as a single caller sees it.
            sessions: Some(1),
            // Fixed: no keeper replacing the session between timed rounds.
            session_idle: None,
            query_cache: 0,
            keep_int8: o.keep_int8,
        },
    )?;
    let mut raw = Raw::new(
        &o.model_dir,
        &graph,
        &o.ort,
        o.max_length,
        o.threads,
        o.keep_int8,
    )?;

    // Warm-up, and proof that both compute the same thing.
    let warm = &texts[..o.batch.min(texts.len())];
    let a = ours.embed(warm)?;
    let b = raw.embed(warm, o.batch)?;
    let min_cos = a
        .iter()
        .zip(&b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>())
        .fold(f32::INFINITY, f32::min);

    // Interleaved per batch (flipping which goes first), so that load from other work on the
    // machine, which comes and goes over seconds, hits both implementations alike.
    let (mut t_ours, mut t_raw) = (Duration::ZERO, Duration::ZERO);
    let (mut cpu_ours, mut cpu_raw) = (0u64, 0u64);
    let mut ratios = Vec::new();
    let mut i = 0usize;
    for _ in 0..o.rounds {
        for chunk in texts.chunks(o.batch) {
            let (mut d_ours, mut d_raw) = (Duration::ZERO, Duration::ZERO);
            for step in 0..2 {
                let start = Instant::now();
                let cpu_start = process_cpu_ticks();
                if (i + step).is_multiple_of(2) {
                    ours.embed(chunk)?;
                    d_ours = start.elapsed();
                    cpu_ours += process_cpu_ticks().saturating_sub(cpu_start);
                } else {
                    raw.embed_batch(chunk)?;
                    d_raw = start.elapsed();
                    cpu_raw += process_cpu_ticks().saturating_sub(cpu_start);
                }
            }
            t_ours += d_ours;
            t_raw += d_raw;
            ratios.push(d_raw.as_secs_f64() / d_ours.as_secs_f64());
            i += 1;
        }
    }
    ratios.sort_by(f64::total_cmp);
    let n = (texts.len() * o.rounds) as f64;
    let (rate_ours, rate_raw) = (n / t_ours.as_secs_f64(), n / t_raw.as_secs_f64());
    println!(
        "| {label} | {} | {rate_ours:.1} | {rate_raw:.1} | {:.3} | {:.3} | {:.3} | {min_cos:.6} |",
        ours.model_id(),
        rate_ours / rate_raw,
        ratios[ratios.len() / 2],
        cpu_raw as f64 / cpu_ours.max(1) as f64,
    );
    Ok(())
}

fn main() -> Result<()> {
    let o = opts()?;
    let texts = passages(&o.corpus, o.texts)?;
    if o.memory {
        return memory(&o, &texts);
    }
    let words: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
    println!(
        "{} passages from {} (mean {:.0} words), batch {}, max_length {}, {} intra-op threads, {} rounds each",
        texts.len(),
        o.corpus.display(),
        words as f64 / texts.len() as f64,
        o.batch,
        o.max_length,
        o.threads,
        o.rounds
    );
    println!();
    println!(
        "| graph | model id | ours (texts/s) | raw (texts/s) | ours/raw | median per-batch ratio | CPU-time ratio raw/ours | min cos(ours, raw) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for g in &o.graphs {
        bench_graph(&o, &texts, g, &aigentable::embed::variant_of(Path::new(g)))?;
    }
    Ok(())
}

/// Resident and peak resident memory of this process, MiB (VmRSS, VmHWM).
fn rss_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `--memory`: one configuration of ours, its memory, speed and vectors.
fn memory(o: &Opts, texts: &[String]) -> Result<()> {
    let graph = o
        .graphs
        .last()
        .ok_or_else(|| anyhow!("--graphs is empty"))?;
    let before = rss_mib();
    let start = Instant::now();
    let ours = OnnxEmbedder::load_with(
        &o.model_dir,
        &o.ort,
        &OnnxOptions {
            batch_size: o.batch,
            max_length: o.max_length,
            onnx_file: Some(graph.into()),
            threads: Some(o.threads),
            sessions: Some(1),
            // Fixed: no keeper replacing the session between timed rounds.
            session_idle: None,
            query_cache: 0,
            keep_int8: o.keep_int8,
        },
    )?;
    let load = start.elapsed();
    let loaded = rss_mib();
    let start = Instant::now();
    let vectors = ours.embed(texts)?;
    let rate = texts.len() as f64 / start.elapsed().as_secs_f64();
    let after = rss_mib();
    let queries: Vec<String> = texts
        .iter()
        .take(20)
        .map(|t| t.chars().take(60).collect())
        .collect();
    let mut q_ms: Vec<f64> = Vec::new();
    for q in &queries {
        let start = Instant::now();
        ours.embed_query(q)?;
        q_ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    q_ms.sort_by(f64::total_cmp);
    let cos = match &o.compare {
        Some(path) => {
            let other: Vec<Vec<f32>> = serde_json::from_slice(&std::fs::read(path)?)?;
            let cs: Vec<f32> = vectors
                .iter()
                .zip(&other)
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
                .collect();
            format!(
                "{:.5} / {:.5}",
                cs.iter().copied().fold(f32::INFINITY, f32::min),
                cs.iter().sum::<f32>() / cs.len().max(1) as f32
            )
        }
        None => "-".into(),
    };
    if let Some(path) = &o.save {
        std::fs::write(path, serde_json::to_vec(&vectors)?)?;
    }
    println!(
        "| {} | keep int8 {} | {} int8 weights | {} MiB | {} MiB (peak {}) | {} MiB (peak {}) | {:.1} s | {rate:.2} | {:.0} | {cos} |",
        ours.model_id(),
        o.keep_int8,
        ours.int8_weights(),
        before.0,
        loaded.0,
        loaded.1,
        after.0,
        after.1,
        load.as_secs_f64(),
        q_ms[q_ms.len() / 2],
    );
    Ok(())
}
