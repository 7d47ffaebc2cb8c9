//! A tenant's change of embedding model at 10k chunks, measured: search must not lose its
//! vectors while the chunks are re-embedded (issue 14).
//!
//! Seeds one tenant with boolq's passages plus filler passages up to `--chunks` (default
//! 10,000; the filler is the other texts of the MiniLM vector cache that `beir_eval` keeps,
//! so seeding embeds nothing new), then changes the tenant's model through
//! `Knowledge::put_embedding_settings` (what `PUT /api/settings/embeddings` calls) and asks
//! judged boolq questions through `Knowledge::search` (hybrid, the product's defaults) for as
//! long as the re-embedding job runs, polling the progress the settings page reports.
//! Reports: queries answered during the switch and how many of them had vector hits (goal:
//! all), hit@10 before / during / after, the re-embedding rate, RSS.
//!
//! The new model is `--to DIR` (a model folder, e.g. all-mpnet-base-v2), or by default the
//! int8 graph of the MiniLM folder installed as a model folder of its own (another model id,
//! so every chunk is re-embedded; ~6x quicker than mpnet, so 10k chunks fit in minutes).
//!
//! ```text
//! nice cargo run --example bench_switch -- --model-dir ../shared/models/all-MiniLM-L6-v2 \
//!     --ort ../shared/runtime/onnxruntime-1.32.0/libonnxruntime.so.1.32.0 \
//!     --data ../shared/eval/boolq_dev [--to ../shared/models/all-mpnet-base-v2] [--chunks 10000] [--queries 300]
//! ```

#[path = "common/beir.rs"]
mod beir;
#[path = "common/tenant.rs"]
mod tenant;

use aigentable::domain::settings::EmbeddingSettingsPatch;
use aigentable::knowledge::pipeline::embed_text;
use aigentable::knowledge::{Knowledge, SearchMode, SearchQuery};
use anyhow::{Context, Result, anyhow};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

struct Args {
    model_dir: PathBuf,
    ort: PathBuf,
    data: PathBuf,
    to: Option<PathBuf>,
    chunks: usize,
    queries: usize,
    /// EMBEDDINGS_SESSIONS for both models (0: the product's default).
    sessions: usize,
    /// EMBEDDINGS_QUERY_CACHE (None: the product's default).
    query_cache: Option<usize>,
}

fn args() -> Result<Args> {
    let mut a = std::env::args().skip(1);
    let mut out = Args {
        model_dir: PathBuf::new(),
        ort: PathBuf::new(),
        data: PathBuf::new(),
        to: None,
        chunks: 10_000,
        queries: 300,
        sessions: 0,
        query_cache: None,
    };
    while let Some(k) = a.next() {
        let mut v = || a.next().ok_or_else(|| anyhow!("{k} needs a value"));
        match k.as_str() {
            "--model-dir" => out.model_dir = v()?.into(),
            "--ort" => out.ort = v()?.into(),
            "--data" => out.data = v()?.into(),
            "--to" => out.to = Some(v()?.into()),
            "--chunks" => out.chunks = v()?.parse()?,
            "--queries" => out.queries = v()?.parse()?,
            "--sessions" => out.sessions = v()?.parse()?,
            "--query-cache" => out.query_cache = Some(v()?.parse()?),
            other => return Err(anyhow!("unknown argument {other}")),
        }
    }
    if out.model_dir.as_os_str().is_empty()
        || out.ort.as_os_str().is_empty()
        || out.data.as_os_str().is_empty()
    {
        return Err(anyhow!("--model-dir, --ort and --data are required"));
    }
    Ok(out)
}

/// The named fields of this process' `/proc/self/status`, MiB (0 where missing).
fn status_mib<const N: usize>(keys: [&str; N]) -> [f64; N] {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    keys.map(|key| {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    })
}

/// Resident and peak resident memory of this process, MiB.
fn rss() -> (f64, f64) {
    let [rss, hwm] = status_mib(["VmRSS:", "VmHWM:"]);
    (rss, hwm)
}

/// One phase of the run as the memory sampler saw it (MiB).
struct Phase {
    name: String,
    samples: usize,
    rss_max: f64,
    rss_last: f64,
    anon_max: f64,
    file_max: f64,
}

/// Samples VmRSS, RssAnon and RssFile of this process every 200 ms, per named phase, so the
/// growth can be placed (model load, re-embedding batches, after).
struct Sampler {
    phases: Arc<std::sync::Mutex<Vec<Phase>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start() -> Self {
        let phases = Arc::new(std::sync::Mutex::new(Vec::<Phase>::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p2, s2) = (phases.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                let [rss, anon, file] = status_mib(["VmRSS:", "RssAnon:", "RssFile:"]);
                if let Some(p) = p2.lock().expect("sampler").last_mut() {
                    p.samples += 1;
                    p.rss_max = p.rss_max.max(rss);
                    p.rss_last = rss;
                    p.anon_max = p.anon_max.max(anon);
                    p.file_max = p.file_max.max(file);
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
        let s = Sampler {
            phases,
            stop,
            thread,
        };
        s.phase("seeded, before questions");
        s
    }

    fn phase(&self, name: &str) {
        self.phases.lock().expect("sampler").push(Phase {
            name: name.into(),
            samples: 0,
            rss_max: 0.0,
            rss_last: 0.0,
            anon_max: 0.0,
            file_max: 0.0,
        });
    }

    fn stop(self) -> Vec<Phase> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.thread.join();
        std::mem::take(&mut *self.phases.lock().expect("sampler"))
    }
}

/// Installs `src` as `<data>/models/<name>`: the whole folder, or (`int8_only`) every file
/// but the fp32 graph, so that the folder runs its int8 graph.
fn install(src: &Path, models: &Path, name: &str, int8_only: bool) -> Result<()> {
    let dst = models.join(name);
    std::fs::create_dir_all(&dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let n = e.file_name();
        if int8_only && n == "onnx" {
            std::fs::create_dir_all(dst.join("onnx"))?;
            std::os::unix::fs::symlink(
                e.path().join("model_quantized.onnx"),
                dst.join("onnx/model_quantized.onnx"),
            )?;
        } else {
            std::os::unix::fs::symlink(e.path(), dst.join(&n))?;
        }
    }
    Ok(())
}

/// One judged question: its text and the document holding its passage.
struct Judged {
    text: String,
    passage: String,
}

#[derive(Default)]
struct Tally {
    queries: usize,
    hits: usize,
    with_vectors: usize,
    ms: Vec<f64>,
}

impl Tally {
    fn hit_rate(&self) -> f64 {
        self.hits as f64 / self.queries.max(1) as f64
    }
    fn p50(&self) -> f64 {
        let mut ms = self.ms.clone();
        ms.sort_by(f64::total_cmp);
        ms.get(ms.len() / 2).copied().unwrap_or(0.0)
    }
    /// Counts one answer of [`ask`].
    fn add(&mut self, (hit, vectors, ms): (bool, bool, f64)) {
        self.queries += 1;
        self.hits += hit as usize;
        self.with_vectors += vectors as usize;
        self.ms.push(ms);
    }
}

/// Every judged question once, on a blocking thread (the phases before and after a switch).
async fn ask_each(
    k: &Arc<Knowledge>,
    caller: &aigentable::auth::Caller,
    passage_of: &Arc<HashMap<aigentable::types::DocumentId, String>>,
    judged: &Arc<Vec<Judged>>,
) -> Result<Tally> {
    let (k, c, p, j) = (
        k.clone(),
        caller.clone(),
        passage_of.clone(),
        judged.clone(),
    );
    tokio::task::spawn_blocking(move || -> Result<Tally> {
        let mut t = Tally::default();
        for q in j.iter() {
            t.add(ask(&k, &c, &p, q)?);
        }
        Ok(t)
    })
    .await?
}

/// One hybrid search with the product's defaults: (judged passage in the top 10, vector
/// hits present, ms).
fn ask(
    k: &Knowledge,
    caller: &aigentable::auth::Caller,
    passage_of: &HashMap<aigentable::types::DocumentId, String>,
    q: &Judged,
) -> Result<(bool, bool, f64)> {
    let t0 = Instant::now();
    let r = k
        .search(
            caller,
            &SearchQuery {
                query: q.text.clone(),
                documents: None,
                top_k: 10,
                mode: SearchMode::Hybrid,
            },
        )
        .map_err(|e| anyhow!("search: {e}"))?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let hit = r
        .data
        .iter()
        .any(|h| passage_of.get(&h.document_id) == Some(&q.passage));
    let vectors = r.mode == SearchMode::Hybrid && r.best_similarity.is_some();
    Ok((hit, vectors, ms))
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let boolq = beir::corpus(&a.data)?;
    let queries = beir::queries(&a.data)?;
    let mut judged: Vec<Judged> = beir::qrels(&a.data)?
        .into_iter()
        .filter(|r| r.grade > 0)
        .filter_map(|r| {
            Some(Judged {
                text: queries.get(&r.query)?.clone(),
                passage: r.doc,
            })
        })
        .collect();
    judged.sort_by(|x, y| x.text.cmp(&y.text));
    judged.dedup_by(|x, y| x.text == y.text);

    // Filler: the cache's other texts (title line, then text), in a stable order.
    let cache = tenant::default_cache(&a.model_dir);
    let mut corpus = boolq;
    let taken: HashSet<String> = corpus
        .iter()
        .map(|p| {
            let h = if p.title.is_empty() {
                vec![]
            } else {
                vec![p.title.clone()]
            };
            embed_text(&h, &p.text)
        })
        .collect();
    let mut filler: Vec<String> = tenant::load_cache(&cache)
        .into_keys()
        .filter(|t| !taken.contains(t))
        .collect();
    filler.sort();
    for (i, t) in filler
        .into_iter()
        .take(a.chunks.saturating_sub(corpus.len()))
        .enumerate()
    {
        let (title, text) = match t.split_once('\n') {
            Some((h, b)) => (h.to_string(), b.to_string()),
            None => (String::new(), t),
        };
        corpus.push(beir::Doc {
            id: format!("filler-{i}"),
            title,
            text,
        });
    }
    // Fewer chunks than boolq has: its first passages, and the questions about them.
    corpus.truncate(a.chunks);
    let present: HashSet<&str> = corpus.iter().map(|p| p.id.as_str()).collect();
    judged.retain(|j| present.contains(j.passage.as_str()));
    judged.truncate(a.queries);
    eprintln!(
        "seeding {} chunks ({} filler) with {}",
        corpus.len(),
        corpus.len().saturating_sub(2939),
        a.model_dir.display()
    );
    let (sessions, query_cache) = (a.sessions, a.query_cache);
    let seeded = tenant::seed_with(&a.model_dir, &a.ort, &cache, &corpus, |c| {
        c.embeddings_sessions = sessions;
        if let Some(n) = query_cache {
            c.embeddings_query_cache = n;
        }
    })
    .await?;
    let sampler = Sampler::start();
    eprintln!(
        "seeded in {:.1} s ({} embedded now)",
        seeded.seed_secs + seeded.embed_secs,
        seeded.embedded
    );
    let k = seeded.knowledge.clone();
    let caller = seeded.caller.clone();
    let tenant_id = caller.tenant().clone();
    k.jobs.start(aigentable::jobs::Class::Background, 1);
    let models = k.svc.config.data_dir.join("models");
    let (folder, target) = match &a.to {
        Some(dir) => {
            install(dir, &models, "target", false)?;
            ("target", dir.display().to_string())
        }
        None => {
            install(&a.model_dir, &models, "minilm-int8", true)?;
            (
                "minilm-int8",
                "the int8 graph of the same folder".to_string(),
            )
        }
    };
    let passage_of = Arc::new(seeded.passage_of.clone());
    let judged = Arc::new(judged);

    let before = ask_each(&k, &caller, &passage_of, &judged).await?;
    let rss_before = rss();
    eprintln!(
        "before: hit@10 {:.4} over {} questions, p50 {:.1} ms",
        before.hit_rate(),
        before.queries,
        before.p50()
    );

    sampler.phase("switch: settings change (new model loaded and tried)");
    // The switch, then questions for as long as re-embedding runs.
    let (k2, c2) = (k.clone(), caller.clone());
    let folder2 = folder.to_string();
    let t_switch = Instant::now();
    let view = tokio::task::spawn_blocking(move || {
        k2.put_embedding_settings(
            &c2,
            EmbeddingSettingsPatch {
                provider: Some(Some("onnx".into())),
                model_folder: Some(Some(folder2)),
                base_url: None,
                model: None,
                api_key: None,
            },
        )
    })
    .await?
    .map_err(|e| anyhow!("switch: {e}"))?;
    let put_secs = t_switch.elapsed().as_secs_f64();
    let view = serde_json::to_value(&view)?;
    eprintln!("switched in {put_secs:.1} s: {view}");
    let (k2, c2, p2, j2, t2) = (
        k.clone(),
        caller.clone(),
        passage_of.clone(),
        judged.clone(),
        tenant_id.clone(),
    );
    sampler.phase("re-embedding, questions to the old model");
    let (during, peak, done_secs) =
        tokio::task::spawn_blocking(move || -> Result<(Tally, f64, f64)> {
            let mut t = Tally::default();
            let mut peak = 0.0f64;
            let mut last_report = Instant::now();
            for q in j2.iter().cycle() {
                let Some(p) = k2.reembed_progress(&t2) else {
                    break;
                };
                let answer = ask(&k2, &c2, &p2, q)?;
                // Counted only when the switch was still under way after the answer too.
                if k2.reembed_progress(&t2).is_none() {
                    break;
                }
                t.add(answer);
                peak = peak.max(rss().0);
                if last_report.elapsed().as_secs() >= 10 {
                    eprintln!(
                        "  {}/{} re-embedded, {} questions so far, {} with vector hits",
                        p.done, p.total, t.queries, t.with_vectors
                    );
                    last_report = Instant::now();
                }
            }
            Ok((t, peak, t_switch.elapsed().as_secs_f64()))
        })
        .await??;
    sampler.phase("after: questions to the new model");
    let after = ask_each(&k, &caller, &passage_of, &judged).await?;
    let rss_after = rss();
    sampler.phase("idle after (3 s)");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let phases = sampler.stop();
    let space = k
        .search_space(&tenant_id)?
        .context("no embedding space after the switch")?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("## bench_switch");
    println!(
        "tenant: {} chunks ({} boolq passages + filler); from {} to {} ({target})",
        corpus.len(),
        2939.min(corpus.len()),
        seeded.model_id,
        space.model_id()
    );
    println!(
        "re-embedding: {} chunks in {:.1} s = {:.1} chunks/s (settings change itself {:.1} s)",
        corpus.len(),
        done_secs,
        corpus.len() as f64 / done_secs.max(1e-9),
        put_secs
    );
    println!(
        "questions during the switch: {}, with vector hits {} ({:.1}%)",
        during.queries,
        during.with_vectors,
        100.0 * during.with_vectors as f64 / during.queries.max(1) as f64
    );
    for (name, t) in [("before", &before), ("during", &during), ("after", &after)] {
        println!(
            "hit@10 {name}: {:.4} over {} questions (vector hits in {}), p50 {:.1} ms",
            t.hit_rate(),
            t.queries,
            t.with_vectors,
            t.p50()
        );
    }
    println!(
        "RSS MiB: before the switch {:.0} (peak so far {:.0}), highest sampled during {:.0}, after {:.0} (process peak {:.0})",
        rss_before.0, rss_before.1, peak, rss_after.0, rss_after.1
    );
    println!(
        "sessions per model: {}; query cache: {}",
        if a.sessions == 0 {
            "default".to_string()
        } else {
            a.sessions.to_string()
        },
        a.query_cache
            .map(|n| n.to_string())
            .unwrap_or_else(|| "default".into())
    );
    println!("| phase | samples | VmRSS max | VmRSS last | RssAnon max | RssFile max |");
    println!("|---|---|---|---|---|---|");
    for p in phases {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            p.name, p.samples, p.rss_max, p.rss_last, p.anon_max, p.file_max
        );
    }
    println!("load average at the end: {}", load.trim());
    Ok(())
}
