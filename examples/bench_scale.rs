//! Scale benchmark (issue 14): one tenant with 1,000,000 chunks, through the product's own
//! store, text index and vector index: ingestion rate by stage, hybrid query p50/p99 through
//! `Knowledge::search` with the product defaults (the query embedding timed apart), RSS
//! steady and peak, the data directory by part, recall@10 of the vector index against exact
//! search, and startup time (open + load of the large tenant).
//!
//! ```text
//! cargo build --config 'profile.dev.package.aigentable.opt-level=3' --example bench_scale
//! ./target/debug/examples/bench_scale --pool /tmp/scale/pool --chunks 1000000 [options]
//! ```
//!
//! (BENCHMARKS.md, "Scale", also builds redb and tantivy at opt-level 3: unoptimised, they
//! measure the build profile rather than the product.)
//!
//! Options (all optional but `--pool`):
//!
//! * `--pool DIR[,DIR..]`   BEIR-layout folders whose passages are the text source
//!   (BENCHMARKS.md, "Scale", says how the pool was made); `boolq_dev` (below) is added
//! * `--boolq DIR`          boolq_dev in BEIR layout: part of the pool, and its questions are
//!   the queries (default /work/shared/eval/boolq_dev)
//! * `--chunks N`           chunks in the tenant (default 1,000,000)
//! * `--chunks-per-doc N`   chunks per document (default 200)
//! * `--sample N`           chunks embedded with the real model, fp32 and int8 (default 2,000)
//! * `--embed-passages N`   pool passages the vector cache lacks that the embed phase embeds
//!   (default 3,200); passages left without a vector leave the pool
//! * `--queries N`          hybrid searches timed (default 1,000)
//! * `--recall-queries N`   queries for recall@10 against exact search (default 300)
//! * `--ef LIST`            extra ef_search values for the recall table (default 128,256)
//! * `--work DIR`           vectors cache, sample and data directory (default /tmp/bench-scale)
//! * `--phases LIST`        of embed,int8,seed,reopen,edits (default the first four, in that
//!   order)
//! * `--model-dir DIR`, `--ort PATH` the embedding model and ONNX Runtime
//!
//! The parent sequences child processes, each reading its own `/proc/self/status`:
//!
//! 1. `embed`: the server with all-MiniLM-L6-v2 (fp32, the default graph) embeds every pool
//!    passage that the vector cache lacks, then the first `--sample` chunks of the corpus
//!    (timed: the model's real rate on these chunks), and measures how close each sample
//!    chunk's real vector is to the stand-in built for it (below).
//! 2. `int8`: the same sample embedded with the int8 graph (rate, cosine to fp32).
//! 3. `seed`: a fresh data directory, a served app (its once-a-minute persist of the vector
//!    index runs, as in production), one registered tenant, and `--chunks` chunks written
//!    document by document with the ingestion pipeline's own stages (src/knowledge/
//!    pipeline.rs): one store transaction with the document, its chunks and their vectors
//!    (`put_chunks`), `Knowledge::index_text` (`TextIndex::delete_document` + `add`),
//!    `index_vectors` (`VectorIndex::delete_document` + `insert`). Per-stage time, RSS and
//!    load every tenth.
//! 4. `reopen`: a fresh process opens the data directory (startup = `aigentable::build`:
//!    store, migrations, text index, vector index load, model load), then times hybrid
//!    searches: the query embedding (`embed_query`, which fills the model's query cache),
//!    then `Knowledge::search` (hybrid, topK 8, which finds the vector in the cache), and
//!    the BM25 and vector lists alone at the product's candidate depth; then recall@10 of
//!    the vector index (`HnswParams::default`) against the same vectors searched exactly.
//! 5. `edits` (only when asked for): what small changes cost the once-a-minute persist: a
//!    fresh process opens the data directory (startup timed), persists, then adds a document
//!    of 10 chunks, deletes one of `--chunks-per-doc`, replaces one (delete, then add as
//!    many new chunks), each followed by a persist (bytes and time, as a delta or a new
//!    base); then a second start on the files those persists left (startup timed again).
//!
//! The seed phase prints, every tenth, what the vector index's persists wrote so far
//! (`VectorIndex::persisted`: the server's minute persist while the tenant fills).
//!
//! Text: the pool's passages split into sentences; chunk `i` (seeded by `i`) is a run of
//! sentences of one passage from a random sentence on, continued by a run from a nearby
//! passage, to 100-150 words; duplicates are redrawn, so every chunk is distinct.
//!
//! Vectors: the first `--sample` chunks keep their real fp32 vectors. Every other chunk gets
//! a stand-in: the word-weighted mean of the real vectors of the passages its words come
//! from, plus isotropic Gaussian noise, normalised. The noise is calibrated on the sample:
//! sigma = sqrt((1/c^2 - 1)/dims), where c is the mean cosine between a sample chunk's real
//! vector and its noise-free mean, so a stand-in sits as far from its mean as real chunks do.
//!
//! Linux only. Every phase is bounded by counts; a child is killed after 3 hours.

use aigentable::auth::Caller;
use aigentable::config::Config;
use aigentable::domain::ClientMeta;
use aigentable::domain::auth::RegisterInput;
use aigentable::index::{HnswParams, VectorIndex};
use aigentable::knowledge::pipeline::{embed_text, index_vectors, put_chunks};
use aigentable::knowledge::{Knowledge, SearchMode, SearchQuery};
use aigentable::model::{Chunk, Document, DocumentStatus};
use aigentable::types::{ChunkId, DocumentId, SessionId, TenantId};
use anyhow::{Context, Result, anyhow, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "common/beir.rs"]
mod beir;
#[path = "common/child.rs"]
mod child;
#[path = "common/size.rs"]
mod size;
#[allow(dead_code)]
#[path = "common/tenant.rs"]
mod tenant;
use size::du;

/// Upper bound of a child process' run.
const CHILD_TIMEOUT: Duration = Duration::from_secs(3 * 3600);
/// Texts per embedding call, as the ingestion pipeline (`EMBED_BATCH`).
const EMBED_BATCH: usize = 32;
/// What a chat turn and the search API ask for by default.
const TOP_K: usize = 8;
/// The candidate depth of a hybrid search with topK 8: `max(3k, 50)` (src/knowledge/search.rs).
const DEPTH: usize = 50;
const EMAIL: &str = "scale@example.com";
const PASSWORD: &str = "scale-password-123";

#[derive(Clone)]
struct Opts {
    pool: Vec<PathBuf>,
    boolq: PathBuf,
    chunks: usize,
    per_doc: usize,
    sample: usize,
    embed_passages: usize,
    queries: usize,
    recall_queries: usize,
    ef: Vec<usize>,
    work: PathBuf,
    phases: Vec<String>,
    model_dir: PathBuf,
    ort: PathBuf,
    /// The phase a child runs; None in the parent.
    child: Option<String>,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        pool: Vec::new(),
        boolq: PathBuf::from("/work/shared/eval/boolq_dev"),
        chunks: 1_000_000,
        per_doc: 200,
        sample: 2_000,
        embed_passages: 3_200,
        queries: 1_000,
        recall_queries: 300,
        ef: vec![128, 256],
        work: PathBuf::from("/tmp/bench-scale"),
        phases: ["embed", "int8", "seed", "reopen"]
            .map(String::from)
            .to_vec(),
        model_dir: PathBuf::from("/work/shared/models/all-MiniLM-L6-v2"),
        ort: PathBuf::from("/work/shared/runtime/onnxruntime-1.32.0/libonnxruntime.so.1.32.0"),
        child: None,
    };
    let list = |s: String| -> Vec<String> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match a.as_str() {
            "--pool" => o.pool = list(value(&a)?).into_iter().map(PathBuf::from).collect(),
            "--boolq" => o.boolq = PathBuf::from(value(&a)?),
            "--chunks" => o.chunks = value(&a)?.parse()?,
            "--chunks-per-doc" => o.per_doc = value(&a)?.parse()?,
            "--sample" => o.sample = value(&a)?.parse()?,
            "--embed-passages" => o.embed_passages = value(&a)?.parse()?,
            "--queries" => o.queries = value(&a)?.parse()?,
            "--recall-queries" => o.recall_queries = value(&a)?.parse()?,
            "--ef" => {
                o.ef = list(value(&a)?)
                    .iter()
                    .map(|x| x.parse())
                    .collect::<Result<_, _>>()?
            }
            "--work" => o.work = PathBuf::from(value(&a)?),
            "--phases" => o.phases = list(value(&a)?),
            "--model-dir" => o.model_dir = PathBuf::from(value(&a)?),
            "--ort" => o.ort = PathBuf::from(value(&a)?),
            "--child" => o.child = Some(value(&a)?),
            "-h" | "--help" => {
                println!("usage: bench_scale [options]; see the top of examples/bench_scale.rs");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    o.chunks = o.chunks.clamp(1, 5_000_000);
    o.per_doc = o.per_doc.clamp(1, 10_000);
    o.sample = o.sample.clamp(1, o.chunks.min(100_000));
    o.queries = o.queries.clamp(1, 100_000);
    o.recall_queries = o.recall_queries.clamp(1, 10_000);
    o.ef.retain(|&e| (1..=4096).contains(&e));
    for p in &o.phases {
        if !["embed", "int8", "seed", "reopen", "edits"].contains(&p.as_str()) {
            bail!("unknown phase {p}");
        }
    }
    Ok(o)
}

// ---------------------------------------------------------------- measuring

/// The 1-minute load average.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Process CPU seconds (user + system) of this process, from /proc/self/stat.
fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn row(phase: &str, what: &str) {
    let child::Mem { rss, anon, hwm } = child::mem();
    println!(
        "| {phase} | {what} | {rss:.0} | {anon:.0} | {hwm:.0} | {} |",
        load()
    );
}

const MIB: f64 = 1024.0 * 1024.0;

/// The data directory's parts, each as its files' length and what they take on disk.
fn disk(data: &Path) {
    println!(
        "\nsizes: store (redb) {}, text index {}, vector index {}, data dir total {}",
        du(&data.join("aigentable.redb")),
        du(&data.join("index/text")),
        du(&data.join("index/vectors")),
        du(data)
    );
}

/// p50, p99 and mean of `xs` (milliseconds).
fn stats(xs: &mut [f64]) -> (f64, f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), xs.iter().sum::<f64>() / xs.len() as f64)
}

// ---------------------------------------------------------------- the corpus

/// The pool: every passage with a vector, split into sentences.
struct Pool {
    /// Sentences of each passage, in order.
    passages: Vec<Vec<String>>,
    /// What is embedded for each passage (the key of its vector in the cache): the text,
    /// after its title as a heading when it has one (as `common/tenant.rs` seeds them).
    keys: Vec<String>,
}

/// Every passage of the pool folders and boolq_dev (whitespace normalised, duplicates and
/// texts under 80 bytes dropped); with `cache`, only those with a vector in it.
fn load_pool(o: &Opts, cache: Option<&HashMap<String, Vec<f32>>>) -> Result<Pool> {
    let mut seen = HashSet::new();
    let mut pool = Pool {
        passages: Vec::new(),
        keys: Vec::new(),
    };
    for dir in o.pool.iter().chain(std::iter::once(&o.boolq)) {
        for d in beir::corpus(dir)? {
            let text = d.text.split_whitespace().collect::<Vec<_>>().join(" ");
            let key = if d.title.is_empty() {
                text.clone()
            } else {
                embed_text(std::slice::from_ref(&d.title), &d.text)
            };
            if text.len() < 80 || cache.is_some_and(|c| !c.contains_key(&key)) {
                continue;
            }
            if seen.insert(text.clone()) {
                pool.passages.push(sentences(&text));
                pool.keys.push(key);
            }
        }
    }
    if pool.keys.is_empty() {
        bail!("the pool is empty (see --pool; the embed phase makes its vectors)");
    }
    Ok(pool)
}

/// Splits at sentence ends; a sentence longer than 40 words is cut into pieces of 40.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for w in text.split_whitespace() {
        cur.push(w);
        let end = w.len() > 2 && (w.ends_with('.') || w.ends_with('?') || w.ends_with('!'));
        if end || cur.len() >= 40 {
            out.push(cur.join(" "));
            cur.clear();
        }
    }
    if !cur.is_empty() {
        out.push(cur.join(" "));
    }
    out
}

/// One generated chunk: its text and the words it took from each passage.
struct GenChunk {
    text: String,
    sources: Vec<(usize, usize)>,
}

/// Chunk `i` of the corpus; `taken` holds the hashes of the chunks made so far (a
/// duplicate is drawn again with the next attempt's seed).
fn gen_chunk(pool: &Pool, i: usize, taken: &mut HashSet<u64>) -> GenChunk {
    let n = pool.passages.len();
    for attempt in 0u64.. {
        let mut rng = StdRng::seed_from_u64(((i as u64) << 8) ^ attempt ^ 0x5ca1e);
        let target = rng.random_range(100..=150usize);
        let first_share = rng.random_range(0.4..0.8f64);
        let mut p = rng.random_range(0..n);
        let mut s = rng.random_range(0..pool.passages[p].len());
        let mut words = 0usize;
        let mut parts: Vec<&str> = Vec::new();
        let mut sources: Vec<(usize, usize)> = Vec::new();
        let mut switched = false;
        let mut hops = 0;
        while words < target && hops < 64 {
            let moved_on = s >= pool.passages[p].len();
            let share_done = !switched && words as f64 >= first_share * target as f64;
            if moved_on || share_done {
                // A nearby passage, from a random sentence.
                p = (p + 1 + rng.random_range(0..16usize)) % n;
                s = rng.random_range(0..pool.passages[p].len());
                switched = true;
                hops += 1;
                continue;
            }
            let sentence = &pool.passages[p][s];
            let w = sentence.split_whitespace().count();
            parts.push(sentence);
            words += w;
            match sources.last_mut() {
                Some((q, c)) if *q == p => *c += w,
                _ => sources.push((p, w)),
            }
            s += 1;
        }
        let text = parts.join(" ");
        let mut h = std::hash::DefaultHasher::new();
        text.hash(&mut h);
        if taken.insert(h.finish()) {
            return GenChunk { text, sources };
        }
    }
    unreachable!("an unbounded loop returns")
}

/// The word-weighted mean of the sources' passage vectors, normalised.
fn mixture(c: &GenChunk, passage_vecs: &[Vec<f32>], dims: usize) -> Vec<f32> {
    let mut m = vec![0f32; dims];
    for &(p, w) in &c.sources {
        for (a, b) in m.iter_mut().zip(&passage_vecs[p]) {
            *a += w as f32 * b;
        }
    }
    normalise(&mut m);
    m
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    d / (na * nb).max(1e-12)
}

/// One standard normal sample (Box-Muller).
fn gauss(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random::<f32>().max(1e-12);
    let u2: f32 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// Chunk `i`'s stand-in vector: its mixture plus noise of `sigma` per dimension.
fn stand_in(
    i: usize,
    c: &GenChunk,
    passage_vecs: &[Vec<f32>],
    dims: usize,
    sigma: f32,
) -> Vec<f32> {
    let mut v = mixture(c, passage_vecs, dims);
    let mut rng = StdRng::seed_from_u64(i as u64 ^ 0x7e57);
    v.iter_mut().for_each(|x| *x += sigma * gauss(&mut rng));
    normalise(&mut v);
    v
}

// ---------------------------------------------------------------- files between phases

fn vec_cache(o: &Opts) -> PathBuf {
    o.work.join("vectors.vec")
}

fn calibration(o: &Opts) -> PathBuf {
    o.work.join("calibration.json")
}

fn data_dir(o: &Opts) -> PathBuf {
    o.work.join("data")
}

/// The passages' vectors (from the cache), in pool order.
fn passage_vectors(pool: &Pool, cache: &HashMap<String, Vec<f32>>) -> Result<Vec<Vec<f32>>> {
    pool.keys
        .iter()
        .map(|k| {
            cache
                .get(k)
                .cloned()
                .ok_or_else(|| anyhow!("no vector for a pool passage: run the embed phase"))
        })
        .collect()
}

// ---------------------------------------------------------------- the product

fn config(o: &Opts, data: &Path, onnx_file: Option<&str>) -> Config {
    Config {
        data_dir: data.to_path_buf(),
        rate_limit_auth_per_min: 0,
        rate_limit_api_per_min: 0,
        rate_limit_upload_per_min: 0,
        embeddings_provider: Some("onnx".into()),
        embeddings_model_dir: Some(o.model_dir.clone()),
        embeddings_onnx_file: onnx_file.map(PathBuf::from),
        ort_dylib_path: Some(o.ort.clone()),
        job_workers: 1,
        log_level: "warn".into(),
        shutdown_timeout_secs: 30,
        ..Config::default()
    }
}

struct Running {
    knowledge: Arc<Knowledge>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<()>>,
}

/// Builds and serves the app on 127.0.0.1 (so its periodic tasks run); the build time.
async fn start(o: &Opts, data: &Path, onnx_file: Option<&str>) -> Result<(Running, f64)> {
    let t0 = Instant::now();
    let app = aigentable::build(config(o, data, onnx_file)).await?;
    let built = t0.elapsed().as_secs_f64();
    let knowledge = app.state.knowledge.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        aigentable::serve_with_listener(app, listener, async {
            let _ = rx.await;
        })
        .await
    });
    Ok((
        Running {
            knowledge,
            stop,
            task,
        },
        built,
    ))
}

/// Graceful stop (the server persists its vector indexes); seconds it took.
async fn stop(r: Running) -> f64 {
    let t0 = Instant::now();
    let _ = r.stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(600), r.task).await;
    t0.elapsed().as_secs_f64()
}

/// Embeds `texts` with the product's embedder in pipeline-sized batches; vectors and seconds.
fn embed_all(
    k: &Knowledge,
    t: &TenantId,
    texts: &[String],
    what: &str,
) -> Result<(Vec<Vec<f32>>, f64)> {
    let space = k
        .space_for(t)?
        .ok_or_else(|| anyhow!("no embedding model"))?;
    let t0 = Instant::now();
    let mut out = Vec::with_capacity(texts.len());
    for (b, batch) in texts.chunks(EMBED_BATCH).enumerate() {
        out.extend(space.embedder.embed(batch)?);
        if b % 50 == 0 {
            eprint!("\r  {what}: {}/{}", out.len(), texts.len());
        }
    }
    eprintln!();
    Ok((out, t0.elapsed().as_secs_f64()))
}

fn register(k: &Knowledge) -> Result<(Caller, TenantId)> {
    let signed = k
        .svc
        .register(
            RegisterInput {
                email: EMAIL.into(),
                password: PASSWORD.into(),
                name: "Scale".into(),
                tenant_name: "Scale".into(),
            },
            &ClientMeta {
                ip: None,
                user_agent: None,
            },
        )
        .map_err(|e| anyhow!("register: {e}"))?;
    let tenant = signed.user.tenant_id.clone();
    Ok((
        Caller::staff_session(&signed.user, SessionId::new()),
        tenant,
    ))
}

fn login(k: &Knowledge) -> Result<(Caller, TenantId)> {
    let signed = k
        .svc
        .login(
            EMAIL,
            PASSWORD,
            &ClientMeta {
                ip: None,
                user_agent: None,
            },
        )
        .map_err(|e| anyhow!("login: {e}"))?;
    let tenant = signed.user.tenant_id.clone();
    Ok((
        Caller::staff_session(&signed.user, SessionId::new()),
        tenant,
    ))
}

/// Runs blocking work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await?
}

// ---------------------------------------------------------------- phases

/// Phase 1 (fp32) and 2 (int8): the real model on the pool and the sample.
async fn phase_embed(o: &Opts, int8: bool) -> Result<()> {
    let name = if int8 { "int8" } else { "embed" };
    let data = o.work.join(format!("data-{name}"));
    let _ = std::fs::remove_dir_all(&data);
    let graph = int8.then_some("onnx/model_quantized.onnx");
    row(name, "process start");
    let (r, built) = start(o, &data, graph).await?;
    row(
        name,
        &format!("app built on an empty data dir in {built:.2} s (model loaded)"),
    );
    let k = r.knowledge.clone();
    let o2 = o.clone();
    blocking(move || {
        let (_, tenant) = register(&k)?;
        let space = k.space_for(&tenant)?.ok_or_else(|| anyhow!("no model"))?;
        println!("model: {}", space.model_id());
        let mut cache = tenant::load_cache(&vec_cache(&o2));
        if !int8 {
            let all = load_pool(&o2, None)?;
            // Vectors found in the cache must be this model's: a few are embedded again.
            let cached: Vec<String> = all
                .keys
                .iter()
                .filter(|t| cache.contains_key(*t))
                .take(16)
                .cloned()
                .collect();
            if !cached.is_empty() {
                let (vs, _) = embed_all(&k, &tenant, &cached, "cache check")?;
                let min = cached
                    .iter()
                    .zip(&vs)
                    .map(|(t, v)| cos(&cache[t], v))
                    .fold(f32::INFINITY, f32::min);
                println!(
                    "pool: {} passages, {} with a cached vector (min cosine of 16 re-embedded: {min:.6})",
                    all.keys.len(),
                    all.keys.iter().filter(|t| cache.contains_key(*t)).count()
                );
                if min < 0.999 {
                    bail!("the vector cache holds another model's vectors");
                }
            }
            // Passages the cache lacks, up to --embed-passages (the rest leave the pool).
            let todo: Vec<String> = all
                .keys
                .iter()
                .filter(|t| !cache.contains_key(*t))
                .take(o2.embed_passages)
                .cloned()
                .collect();
            let words: usize = todo.iter().map(|t| t.split_whitespace().count()).sum();
            if !todo.is_empty() {
                let cpu0 = cpu_secs();
                let (vs, secs) = embed_all(&k, &tenant, &todo, "passages")?;
                println!(
                    "embedded {} pool passages ({:.0} words each) in {secs:.0} s: {:.2} passages/s \
                     ({:.2} per CPU second; load {})",
                    todo.len(),
                    words as f64 / todo.len() as f64,
                    todo.len() as f64 / secs,
                    todo.len() as f64 / (cpu_secs() - cpu0).max(1e-9),
                    load()
                );
                for (t, v) in todo.into_iter().zip(vs) {
                    cache.insert(t, v);
                }
                tenant::save_cache(&vec_cache(&o2), &cache)?;
            }
        }
        let pool = load_pool(&o2, Some(&cache))?;
        println!(
            "pool with vectors: {} passages, {} sentences, {} words",
            pool.keys.len(),
            pool.passages.iter().map(Vec::len).sum::<usize>(),
            pool.passages
                .iter()
                .flatten()
                .map(|s| s.split_whitespace().count())
                .sum::<usize>()
        );
        let passage_vecs = passage_vectors(&pool, &cache)?;
        let dims = space.embedder.dimensions();
        // The sample: the corpus' first chunks, embedded as the pipeline embeds them.
        let mut taken = HashSet::new();
        let sample: Vec<GenChunk> = (0..o2.sample).map(|i| gen_chunk(&pool, i, &mut taken)).collect();
        let texts: Vec<String> = sample.iter().map(|c| embed_text(&[], &c.text)).collect();
        let words: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
        let cpu0 = cpu_secs();
        let (vs, secs) = embed_all(&k, &tenant, &texts, "sample")?;
        let cpu = cpu_secs() - cpu0;
        row(name, &format!("after embedding the {} sample chunks", texts.len()));
        println!(
            "{name}: {} sample chunks ({:.0} words each) in {secs:.1} s = **{:.1} chunks/s** \
             ({:.1} chunks per CPU second; load {})",
            texts.len(),
            words as f64 / texts.len() as f64,
            texts.len() as f64 / secs,
            texts.len() as f64 / cpu.max(1e-9),
            load()
        );
        if int8 {
            let mut c: Vec<f64> = texts
                .iter()
                .zip(&vs)
                .filter_map(|(t, v)| cache.get(t).map(|f| cos(f, v) as f64))
                .collect();
            let (p50, _, mean) = stats(&mut c);
            let min = c.first().copied().unwrap_or(f64::NAN);
            println!("int8 vs fp32 on the sample: cosine min {min:.4}, median {p50:.4}, mean {mean:.4}");
            return Ok(());
        }
        // How close the stand-in's mean is to the real vector.
        let mut c: Vec<f64> = sample
            .iter()
            .zip(&vs)
            .map(|(g, v)| cos(&mixture(g, &passage_vecs, dims), v) as f64)
            .collect();
        let (p50, _, mean) = stats(&mut c);
        let p5 = c[c.len() / 20];
        let sigma = ((1.0 / (mean * mean) - 1.0) / dims as f64).sqrt();
        // Check the stand-ins against the real vectors once more, noise included.
        let mut c2: Vec<f64> = sample
            .iter()
            .zip(&vs)
            .enumerate()
            .map(|(i, (g, v))| cos(&stand_in(i, g, &passage_vecs, dims, sigma as f32), v) as f64)
            .collect();
        let (p50b, _, meanb) = stats(&mut c2);
        println!(
            "stand-ins on the sample: cos(real, word-weighted passage mean) mean {mean:.4}, \
             median {p50:.4}, 5th percentile {p5:.4}; noise sigma {sigma:.5} per dimension; \
             cos(real, stand-in with noise) mean {meanb:.4}, median {p50b:.4}"
        );
        for (t, v) in texts.iter().zip(vs) {
            cache.insert(t.clone(), v);
        }
        tenant::save_cache(&vec_cache(&o2), &cache)?;
        std::fs::write(
            calibration(&o2),
            serde_json::json!({"sigma": sigma, "cosMean": mean, "sample": o2.sample}).to_string(),
        )?;
        Ok(())
    })
    .await?;
    stop(r).await;
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

#[derive(Default, Clone, Copy)]
struct Stages {
    store: f64,
    text: f64,
    vector: f64,
}

/// Phase 3: the tenant, ingested.
async fn phase_seed(o: &Opts) -> Result<()> {
    let data = data_dir(o);
    let _ = std::fs::remove_dir_all(&data);
    row("seed", "process start");
    let (r, built) = start(o, &data, None).await?;
    row("seed", &format!("app built in {built:.2} s (model loaded)"));
    let k = r.knowledge.clone();
    let o2 = o.clone();
    blocking(move || seed(&k, &o2)).await?;
    let k = r.knowledge.clone();
    let t0 = Instant::now();
    blocking(move || {
        k.persist();
        Ok(())
    })
    .await?;
    row(
        "seed",
        &format!(
            "after persisting the vector index ({:.1} s)",
            t0.elapsed().as_secs_f64()
        ),
    );
    let secs = stop(r).await;
    row("seed", &format!("after a graceful stop ({secs:.1} s)"));
    disk(&data);
    Ok(())
}

fn seed(k: &Knowledge, o: &Opts) -> Result<()> {
    let (_, tenant) = register(k)?;
    let space = k.space_for(&tenant)?.ok_or_else(|| anyhow!("no model"))?;
    let model_id = space.model_id().to_string();
    let dims = space.embedder.dimensions();
    let cache = tenant::load_cache(&vec_cache(o));
    let pool = load_pool(o, Some(&cache))?;
    let passage_vecs = passage_vectors(&pool, &cache)?;
    let cal: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(calibration(o)).context("calibration: run the embed phase")?,
    )?;
    let sigma = cal["sigma"].as_f64().ok_or_else(|| anyhow!("no sigma"))? as f32;
    let sample = cal["sample"].as_u64().unwrap_or(0) as usize;
    let index_dir = k.vector_index_dir(&model_id);
    println!(
        "\ncorpus: {} chunks in {} documents of {}; pool {} passages; vectors: the first {} \
         chunks real ({model_id}), the rest stand-ins (sigma {sigma:.5})\n",
        o.chunks,
        o.chunks.div_ceil(o.per_doc),
        o.per_doc,
        pool.keys.len(),
        sample.min(o.chunks)
    );
    row(
        "seed",
        "before ingesting (the benchmark's pool and passage vectors loaded)",
    );
    println!(
        "| chunks | wall s | chunks/s (wall, last step) | store chunks/s | text chunks/s | vector chunks/s | VmRSS MiB | peak MiB | load | persists so far: bases + deltas | MiB they wrote | vector index MiB (on disk) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    // Documents are generated on a thread of their own, a few ahead (it works while the
    // store waits for its fsync), so the benchmark's text generation is not on the path.
    type Batch = (Document, Vec<Chunk>, Vec<Vec<f32>>);
    let (send, docs) = std::sync::mpsc::sync_channel::<Batch>(4);
    let started = Instant::now();
    let cpu0 = cpu_secs();
    let (generate, real_used) = std::thread::scope(|scope| -> Result<(f64, usize)> {
        let tenant = &tenant;
        let producer = scope.spawn(move || {
            let mut cache = Some(cache);
            let mut taken = HashSet::with_capacity(o.chunks);
            let (mut secs, mut real_used, mut done, mut d) = (0f64, 0usize, 0usize, 0usize);
            while done < o.chunks {
                let t = Instant::now();
                let n = o.per_doc.min(o.chunks - done);
                let doc_id = DocumentId::new();
                let now = time::OffsetDateTime::now_utc();
                let mut chunks = Vec::with_capacity(n);
                let mut vectors = Vec::with_capacity(n);
                let mut size = 0usize;
                for j in 0..n {
                    let i = done + j;
                    let g = gen_chunk(&pool, i, &mut taken);
                    // The sample's real vectors are cached under their embedded text.
                    let real = match &cache {
                        Some(c) if i < sample => c.get(&embed_text(&[], &g.text)),
                        _ => None,
                    };
                    let v = match real {
                        Some(v) => {
                            real_used += 1;
                            v.clone()
                        }
                        None => stand_in(i, &g, &passage_vecs, dims, sigma),
                    };
                    size += g.text.len();
                    chunks.push(Chunk {
                        id: ChunkId::new(),
                        tenant_id: tenant.clone(),
                        document_id: doc_id.clone(),
                        ordinal: j as u32,
                        // The chunker records the model tokenizer's count; words * 4/3 here.
                        token_count: (g.text.split_whitespace().count() * 4 / 3) as u32,
                        text: g.text,
                        page: None,
                        headings: vec![],
                        embedding_model: Some(model_id.clone()),
                    });
                    vectors.push(v);
                }
                let doc = Document {
                    id: doc_id,
                    tenant_id: tenant.clone(),
                    name: format!("scale-{d}.txt"),
                    mime_type: "text/plain".into(),
                    size_bytes: size as u64,
                    sha256: format!("{:064x}", d as u128 * 0x9e37_79b9_7f4a_7c15),
                    status: DocumentStatus::Ready,
                    progress: 100,
                    error: None,
                    pages: None,
                    chunk_count: n as u32,
                    title: None,
                    author: None,
                    agent_ids: vec![],
                    created_at: now,
                    updated_at: now,
                    processed_at: Some(now),
                };
                done += n;
                d += 1;
                if done >= sample {
                    // Only the sample needed the cache.
                    cache = None;
                }
                secs += t.elapsed().as_secs_f64();
                if send.send((doc, chunks, vectors)).is_err() {
                    break;
                }
            }
            (secs, real_used)
        });
        let step = (o.chunks / 10).max(1);
        let mut total = Stages::default();
        let mut last = (0usize, 0f64, Stages::default());
        let mut done = 0usize;
        for (doc, chunks, vectors) in docs {
            let n = chunks.len();
            ingest(k, &space.index, tenant, doc, chunks, vectors, &mut total)?;
            done += n;
            if done / step != (done - n) / step || done == o.chunks {
                let (c0, w0, s0) = last;
                let wall = started.elapsed().as_secs_f64();
                let dc = (done - c0) as f64;
                let child::Mem { rss, hwm, .. } = child::mem();
                let on_disk = du(&index_dir);
                let p = space.index.persisted();
                println!(
                    "| {done} | {wall:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {rss:.0} | {hwm:.0} | {} | {} + {} | {:.1} | {:.1} ({:.1}) |",
                    dc / (wall - w0),
                    dc / (total.store - s0.store),
                    dc / (total.text - s0.text),
                    dc / (total.vector - s0.vector),
                    load(),
                    p.bases,
                    p.deltas,
                    p.bytes as f64 / MIB,
                    on_disk.len_mib(),
                    on_disk.disk_mib(),
                );
                last = (done, wall, total);
            }
        }
        let (generate, real_used) = producer
            .join()
            .map_err(|_| anyhow!("the generating thread panicked"))?;
        let wall = started.elapsed().as_secs_f64();
        let c = done as f64;
        println!(
            "\ningested {done} chunks in {wall:.0} s wall ({:.0} CPU s of this process, text \
             generation included): **{:.0} chunks/s** overall; by stage (chunks per second of \
             that stage): store {:.0} ({:.0} s), text index {:.0} ({:.0} s), vector index {:.0} \
             ({:.0} s)",
            cpu_secs() - cpu0,
            c / wall,
            c / total.store,
            total.store,
            c / total.text,
            total.text,
            c / total.vector,
            total.vector,
        );
        Ok((generate, real_used))
    })?;
    println!(
        "text generation (the benchmark's own, on its own thread): {generate:.0} s; real \
         vectors used: {real_used}"
    );
    row("seed", &format!("after ingesting {} chunks", o.chunks));
    Ok(())
}

/// Writes one document as the pipeline does after embedding (`process_document`'s store
/// transaction, then `index_chunks`), with the pipeline's own stages, adding each stage's
/// seconds to `total`.
fn ingest(
    k: &Knowledge,
    index: &VectorIndex,
    tenant: &TenantId,
    doc: Document,
    chunks: Vec<Chunk>,
    vectors: Vec<Vec<f32>>,
    total: &mut Stages,
) -> Result<()> {
    let doc_id = doc.id.clone();
    let t = Instant::now();
    k.svc.store.write(|tx| {
        tx.put(&doc)?;
        put_chunks(tx, &chunks, vectors.iter().map(|v| Some(v.as_slice())))
    })?;
    total.store += t.elapsed().as_secs_f64();
    let t = Instant::now();
    k.index_text(tenant, &doc_id, &chunks, &[])?;
    total.text += t.elapsed().as_secs_f64();
    let t = Instant::now();
    let vectors = vectors.into_iter().map(Some).collect();
    index_vectors(index, tenant, &doc_id, &chunks, vectors)?;
    total.vector += t.elapsed().as_secs_f64();
    Ok(())
}

/// Phase 5: small edits after the tenant is full, and what each persist writes.
async fn phase_edits(o: &Opts) -> Result<()> {
    let data = data_dir(o);
    row("edits", "process start");
    let (r, built) = start(o, &data, None).await?;
    row(
        "edits",
        &format!("app built on the data dir in **{built:.2} s** (store, indexes, model)"),
    );
    let k = r.knowledge.clone();
    let o2 = o.clone();
    blocking(move || edits(&k, &o2)).await?;
    let secs = stop(r).await;
    row("edits", &format!("after a graceful stop ({secs:.1} s)"));
    let (r, built) = start(o, &data, None).await?;
    row(
        "edits",
        &format!("app built again on the files the edits left in **{built:.2} s**"),
    );
    let k = r.knowledge.clone();
    blocking(move || {
        let (_, tenant) = login(&k)?;
        let space = k.space_for(&tenant)?.ok_or_else(|| anyhow!("no model"))?;
        if space.index.needs_rebuild(&tenant) {
            bail!("the tenant's vector index did not load after the edits");
        }
        Ok(())
    })
    .await?;
    stop(r).await;
    disk(&data);
    Ok(())
}

fn edits(k: &Knowledge, o: &Opts) -> Result<()> {
    let (caller, tenant) = login(k)?;
    let space = k.space_for(&tenant)?.ok_or_else(|| anyhow!("no model"))?;
    let model_id = space.model_id().to_string();
    let dims = space.embedder.dimensions();
    if space.index.needs_rebuild(&tenant) {
        bail!("the tenant's vector index did not load (run the seed phase)");
    }
    let cache = tenant::load_cache(&vec_cache(o));
    let pool = load_pool(o, Some(&cache))?;
    let passage_vecs = passage_vectors(&pool, &cache)?;
    let cal: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(calibration(o)).context("calibration: run the embed phase")?,
    )?;
    let sigma = cal["sigma"].as_f64().ok_or_else(|| anyhow!("no sigma"))? as f32;
    // New chunks continue the corpus' numbering.
    let mut taken = HashSet::new();
    let mut next = o.chunks;
    let mut new_doc = |n: usize| -> (Document, Vec<Chunk>, Vec<Vec<f32>>) {
        let doc_id = DocumentId::new();
        let now = time::OffsetDateTime::now_utc();
        let (mut chunks, mut vectors) = (Vec::new(), Vec::new());
        for j in 0..n {
            let g = gen_chunk(&pool, next, &mut taken);
            vectors.push(stand_in(next, &g, &passage_vecs, dims, sigma));
            next += 1;
            chunks.push(Chunk {
                id: ChunkId::new(),
                tenant_id: tenant.clone(),
                document_id: doc_id.clone(),
                ordinal: j as u32,
                token_count: (g.text.split_whitespace().count() * 4 / 3) as u32,
                text: g.text,
                page: None,
                headings: vec![],
                embedding_model: Some(model_id.clone()),
            });
        }
        let doc = Document {
            id: doc_id,
            tenant_id: tenant.clone(),
            name: format!("edit-{next}.txt"),
            mime_type: "text/plain".into(),
            size_bytes: chunks.iter().map(|c| c.text.len() as u64).sum(),
            sha256: format!("{:064x}", next as u128 * 0x9e37_79b9_7f4a_7c15 + 1),
            status: DocumentStatus::Ready,
            progress: 100,
            error: None,
            pages: None,
            chunk_count: n as u32,
            title: None,
            author: None,
            agent_ids: vec![],
            created_at: now,
            updated_at: now,
            processed_at: Some(now),
        };
        (doc, chunks, vectors)
    };
    // A seeded document to delete: the one holding the nearest chunk to a vector.
    let some_document = |seed: usize| -> Result<DocumentId> {
        let v = &passage_vecs[seed % passage_vecs.len()];
        let hits = space.index.search(&tenant, v, None, 1)?;
        Ok(hits
            .first()
            .ok_or_else(|| anyhow!("the tenant is empty"))?
            .document
            .clone())
    };
    // Whatever the start left to write (a format change rewrites once) goes first.
    let t0 = Instant::now();
    k.persist();
    let p = space.index.persisted();
    println!(
        "
first persist after the start: {} bases + {} deltas, {:.1} MiB, {:.2} s
",
        p.bases,
        p.deltas,
        p.bytes as f64 / MIB,
        t0.elapsed().as_secs_f64()
    );
    println!("| edit | chunks changed | persist writes | bytes | persist ms | load |");
    println!("|---|---|---|---|---|---|");
    let mut stages = Stages::default();
    let per_doc = o.per_doc;
    for step in 0..6 {
        let before = space.index.persisted();
        let (what, changed) = match step % 3 {
            0 => {
                let (d, c, v) = new_doc(10);
                ingest(k, &space.index, &tenant, d, c, v, &mut stages)?;
                ("add a document of 10 chunks", 10)
            }
            1 => {
                let d = some_document(step)?;
                k.delete_document(&caller, &d)?;
                ("delete a document", per_doc)
            }
            _ => {
                let d = some_document(step)?;
                k.delete_document(&caller, &d)?;
                let (d, c, v) = new_doc(per_doc);
                ingest(k, &space.index, &tenant, d, c, v, &mut stages)?;
                ("replace a document (delete, add as many)", 2 * per_doc)
            }
        };
        let t0 = Instant::now();
        k.persist();
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let after = space.index.persisted();
        let kind = match (after.bases - before.bases, after.deltas - before.deltas) {
            (0, 1) => "a delta".to_string(),
            (1, 0) => "a new base".to_string(),
            (b, d) => format!("{b} bases + {d} deltas"),
        };
        println!(
            "| {what} | {changed} | {kind} | {:.0} KiB | {ms:.0} | {} |",
            (after.bytes - before.bytes) as f64 / 1024.0,
            load()
        );
    }
    Ok(())
}

/// Phase 4: startup, searches, recall.
async fn phase_reopen(o: &Opts) -> Result<()> {
    let data = data_dir(o);
    row("reopen", "process start");
    let (r, built) = start(o, &data, None).await?;
    row(
        "reopen",
        &format!("app built on the data dir in **{built:.2} s** (store, indexes, model)"),
    );
    let k = r.knowledge.clone();
    let o2 = o.clone();
    blocking(move || searches(&k, &o2)).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    row("reopen", "idle 10 s later");
    let k = r.knowledge.clone();
    let o2 = o.clone();
    blocking(move || recall(&k, &o2)).await?;
    stop(r).await;
    disk(&data);
    Ok(())
}

/// The boolq questions in id order.
fn questions(o: &Opts) -> Result<Vec<String>> {
    let mut qs: Vec<(String, String)> = beir::queries(&o.boolq)?.into_iter().collect();
    qs.sort();
    Ok(qs.into_iter().map(|(_, q)| q).collect())
}

fn searches(k: &Knowledge, o: &Opts) -> Result<()> {
    let (caller, tenant) = login(k)?;
    let space = k.space_for(&tenant)?.ok_or_else(|| anyhow!("no model"))?;
    let qs = questions(o)?;
    let search = |q: &str| {
        k.search(
            &caller,
            &SearchQuery {
                query: q.to_string(),
                documents: None,
                top_k: TOP_K,
                mode: SearchMode::Hybrid,
            },
        )
    };
    // The first search after startup, query embedding included (a cold model and indexes).
    let t0 = Instant::now();
    let first = search("how many chunks does the largest tenant hold")?;
    println!(
        "\nfirst hybrid search after startup (query embedding included): {:.1} ms, {} hits, mode {:?}",
        t0.elapsed().as_secs_f64() * 1000.0,
        first.data.len(),
        first.mode
    );
    row("reopen", "after the first hybrid search");
    let n = o.queries.min(qs.len());
    let (mut emb, mut hyb, mut bm25, mut vec) = (vec![], vec![], vec![], vec![]);
    let mut hits = 0usize;
    let load0 = load();
    for q in &qs[..n] {
        let t = Instant::now();
        let v = space.embedder.embed_query(q)?;
        emb.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let res = search(q)?;
        hyb.push(t.elapsed().as_secs_f64() * 1000.0);
        if res.mode != SearchMode::Hybrid {
            bail!(
                "a search was answered in {:?} mode: {:?}",
                res.mode,
                res.warnings
            );
        }
        hits += res.data.len();
        let t = Instant::now();
        k.text
            .search(&tenant, q, &aigentable::index::Filter::default(), DEPTH)?;
        bm25.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        space.index.search(&tenant, &v, None, DEPTH)?;
        vec.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "\n{n} boolq questions, hybrid, topK {TOP_K} (load {load0} before, {} after; {:.1} hits each):\n",
        load(),
        hits as f64 / n as f64
    );
    println!("| what | p50 ms | p99 ms | mean ms |");
    println!("|---|---|---|---|");
    for (what, xs) in [
        ("query embedding (`embed_query`, not cached)", &mut emb),
        (
            "**`Knowledge::search` hybrid, query vector cached**",
            &mut hyb,
        ),
        ("BM25 list alone (`TextIndex::search`, depth 50)", &mut bm25),
        (
            "vector list alone (`VectorIndex::search`, depth 50)",
            &mut vec,
        ),
    ] {
        let (p50, p99, mean) = stats(xs);
        println!("| {what} | {p50:.2} | {p99:.2} | {mean:.2} |");
    }
    row("reopen", &format!("after {n} hybrid searches"));
    Ok(())
}

fn recall(k: &Knowledge, o: &Opts) -> Result<()> {
    let (_, tenant) = login(k)?;
    let space = k.space_for(&tenant)?.ok_or_else(|| anyhow!("no model"))?;
    let qs = questions(o)?;
    let n = o.recall_queries.min(qs.len());
    // Queries after those timed above (not in the query cache).
    let start = o.queries.min(qs.len().saturating_sub(n));
    let mut vs = Vec::with_capacity(n);
    for q in &qs[start..start + n] {
        vs.push(space.embedder.embed_query(q)?);
    }
    let dir = k.vector_index_dir(space.model_id());
    let dims = space.embedder.dimensions();
    let t0 = Instant::now();
    // With the store as its source, as the server's index: the dumps leave the vectors there.
    let exact = VectorIndex::open_with_source(
        &dir,
        dims,
        space.model_id(),
        HnswParams {
            exact_max: usize::MAX,
            ..HnswParams::default()
        },
        Some(k.vector_source()),
    )?;
    println!(
        "\nrecall@10 of the vector index against exact search: {n} boolq questions \
         (second index opened for exact search in {:.1} s)\n",
        t0.elapsed().as_secs_f64()
    );
    let mut truth = Vec::with_capacity(n);
    let mut exact_ms = Vec::with_capacity(n);
    for v in &vs {
        let t = Instant::now();
        let hits = exact.search(&tenant, v, None, 10)?;
        exact_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        truth.push(hits.into_iter().map(|h| h.chunk).collect::<HashSet<_>>());
    }
    drop(exact);
    println!("| ef_search | p50 ms | p99 ms | recall@10 | load |");
    println!("|---|---|---|---|---|");
    let measure = |idx: &VectorIndex, label: &str| -> Result<()> {
        let mut ms = Vec::with_capacity(n);
        let mut found = 0usize;
        for (v, t) in vs.iter().zip(&truth) {
            let s = Instant::now();
            let hits = idx.search(&tenant, v, None, 10)?;
            ms.push(s.elapsed().as_secs_f64() * 1000.0);
            found += hits.iter().filter(|h| t.contains(&h.chunk)).count();
        }
        let (p50, p99, _) = stats(&mut ms);
        let denom: usize = truth.iter().map(HashSet::len).sum();
        println!(
            "| {label} | {p50:.3} | {p99:.3} | {:.4} | {} |",
            found as f64 / denom.max(1) as f64,
            load()
        );
        Ok(())
    };
    measure(
        &space.index,
        "default (grows with size; the server's own index)",
    )?;
    for &ef in &o.ef {
        let idx = VectorIndex::open_with_source(
            &dir,
            dims,
            space.model_id(),
            HnswParams {
                ef_search: ef,
                ef_grows_above: usize::MAX,
                ..HnswParams::default()
            },
            Some(k.vector_source()),
        )?;
        measure(&idx, &ef.to_string())?;
    }
    let (p50, p99, _) = stats(&mut exact_ms);
    println!("| exact | {p50:.3} | {p99:.3} | 1.0000 | {} |", load());
    Ok(())
}

// ---------------------------------------------------------------- the parent

fn run_child(o: &Opts, phase: &str) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--child", phase]);
    let pool: Vec<String> = o.pool.iter().map(|p| p.display().to_string()).collect();
    let ef: Vec<String> = o.ef.iter().map(usize::to_string).collect();
    for (k, v) in [
        ("--pool", pool.join(",")),
        ("--boolq", o.boolq.display().to_string()),
        ("--chunks", o.chunks.to_string()),
        ("--chunks-per-doc", o.per_doc.to_string()),
        ("--sample", o.sample.to_string()),
        ("--embed-passages", o.embed_passages.to_string()),
        ("--queries", o.queries.to_string()),
        ("--recall-queries", o.recall_queries.to_string()),
        ("--ef", ef.join(",")),
        ("--work", o.work.display().to_string()),
        ("--model-dir", o.model_dir.display().to_string()),
        ("--ort", o.ort.display().to_string()),
    ] {
        cmd.arg(k).arg(v);
    }
    child::run(cmd, phase, CHILD_TIMEOUT)
}

fn main() -> Result<()> {
    // As the server's main does: the malloc arenas are part of what is measured.
    let malloc = aigentable::malloc::tune();
    let o = parse_args()?;
    if let Some(phase) = o.child.clone() {
        let rt = tokio::runtime::Runtime::new()?;
        return rt.block_on(async {
            match phase.as_str() {
                "embed" => phase_embed(&o, false).await,
                "int8" => phase_embed(&o, true).await,
                "seed" => phase_seed(&o).await,
                "reopen" => phase_reopen(&o).await,
                "edits" => phase_edits(&o).await,
                other => bail!("unknown phase {other}"),
            }
        });
    }
    std::fs::create_dir_all(&o.work)?;
    println!("malloc: {malloc:?}\n");
    println!("| process | point | VmRSS MiB | RssAnon MiB | VmHWM (peak) MiB | load |");
    println!("|---|---|---|---|---|---|");
    for phase in &o.phases {
        run_child(&o, phase)?;
    }
    Ok(())
}
