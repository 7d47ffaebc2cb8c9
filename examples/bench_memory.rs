//! Memory benchmark (issue 3): resident memory (VmRSS) of the server with the real embedding
//! model loaded and 100k chunks (384-dimension vectors) indexed in one tenant.
//!
//! ```text
//! cargo run --release --example bench_memory -- [options]
//! ```
//!
//! Options (all optional):
//!
//! * `--model-dir DIR`     embedding model (default /work/shared/models/all-MiniLM-L6-v2)
//! * `--ort PATH`          ONNX Runtime library
//!   (default /work/shared/runtime/onnxruntime-1.32.0/libonnxruntime.so.1.32.0)
//! * `--docs N`            documents to seed (default 500)
//! * `--chunks-per-doc N`  chunks per document (default 200)
//! * `--words N`           words per chunk (default 110)
//! * `--base-texts N`      distinct texts embedded with the real model (default 2000)
//! * `--searches N`        hybrid searches after seeding (default 50)
//! * `--idle-secs N`       idle wait before the last reading (default 12)
//!
//! The parent process only sequences two children, each a server built in-process with
//! `aigentable::build` on 127.0.0.1 and one data directory, and each reading its own
//! `/proc/self/status`:
//!
//! 1. `seed`: fresh data dir; RSS at start, after building the app (model loaded), after
//!    the first inference, while and after seeding (the seeding's own garbage is counted:
//!    this is what a server that just ingested 100k chunks holds), after searches, idle.
//! 2. `reopen`: the same data dir opened by a fresh process, as after a restart: RSS after
//!    opening, after the first search (indexes loaded), after more searches, idle.
//!
//! Linux only. Every phase is bounded by a count; children are killed after 30 minutes.

use aigentable::config::Config;
use aigentable::knowledge::Knowledge;
use aigentable::types::{AgentId, TenantId};
use anyhow::{Result, anyhow, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

#[path = "common/child.rs"]
mod child;
#[path = "common/seed.rs"]
mod seed;
#[path = "common/size.rs"]
mod size;
use seed::{SeedArgs, question, seed};
use size::du;

/// Upper bound of a child process' run.
const CHILD_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Clone)]
struct Opts {
    seed: SeedArgs,
    searches: usize,
    idle_secs: u64,
    /// `seed DIR` or `reopen DIR` in a child; None in the parent.
    phase: Option<(String, PathBuf)>,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        seed: SeedArgs::default(),
        searches: 50,
        idle_secs: 12,
        phase: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| anyhow!("{name} needs a value"));
        if o.seed.take(&a, &mut value)? {
            continue;
        }
        match a.as_str() {
            "--searches" => o.searches = value("--searches")?.parse()?,
            "--idle-secs" => o.idle_secs = value("--idle-secs")?.parse()?,
            "--phase" => {
                let p = value("--phase")?;
                let d = value("--phase")?;
                o.phase = Some((p, PathBuf::from(d)));
            }
            "-h" | "--help" => {
                println!("usage: bench_memory [options]; see the top of examples/bench_memory.rs");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    o.seed.clamp();
    o.searches = o.searches.clamp(1, 10_000);
    o.idle_secs = o.idle_secs.min(600);
    Ok(o)
}

fn row(phase: &str, what: &str) {
    let child::Mem { rss, anon, hwm } = child::mem();
    let file = status_mib("RssFile:");
    println!("| {phase} | {what} | {rss:.0} | {anon:.0} | {file:.0} | {hwm:.0} |");
}

/// One field of `/proc/self/status` in MiB (NaN when missing).
fn status_mib(name: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn config(o: &Opts, data: &Path) -> Config {
    Config {
        data_dir: data.to_path_buf(),
        rate_limit_auth_per_min: 0,
        rate_limit_api_per_min: 0,
        rate_limit_upload_per_min: 0,
        jwt_expires_in: "4h".into(),
        embeddings_provider: Some("onnx".into()),
        embeddings_model_dir: Some(o.seed.model_dir.clone()),
        ort_dylib_path: Some(o.seed.ort.clone()),
        job_workers: 1,
        log_level: "warn".into(),
        shutdown_timeout_secs: 5,
        // As the server reads it, to measure other cache sizes.
        store_cache_mb: std::env::var("STORE_CACHE_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(Config::default().store_cache_mb),
        ..Config::default()
    }
}

struct Running {
    base: String,
    http: reqwest::Client,
    knowledge: std::sync::Arc<Knowledge>,
    store: std::sync::Arc<aigentable::store::Store>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(o: &Opts, data: &Path) -> Result<Running> {
    let app = aigentable::build(config(o, data)).await?;
    let knowledge = app.state.knowledge.clone();
    let store = app.state.svc.store.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        aigentable::serve_with_listener(app, listener, async {
            let _ = rx.await;
        })
        .await
    });
    Ok(Running {
        base,
        http: reqwest::Client::new(),
        knowledge,
        store,
        stop,
        task,
    })
}

async fn post(r: &Running, token: Option<&str>, path: &str, body: Value) -> Result<Value> {
    let mut rb = r
        .http
        .post(format!("{}{path}", r.base))
        .timeout(Duration::from_secs(60))
        .json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let resp = rb.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("POST {path}: {status}: {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Hybrid searches through the API, one at a time: the mean hits per search and the
/// latency of each, milliseconds (sorted).
async fn searches(r: &Running, token: &str, n: usize, seed: u64) -> Result<(f64, Vec<f64>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut hits = 0usize;
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let q = question(&mut rng, i);
        let t = Instant::now();
        let v = post(
            r,
            Some(token),
            "/api/knowledge/search",
            json!({"query": q, "mode": "hybrid", "topK": 8}),
        )
        .await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        hits += v["data"].as_array().map(Vec::len).unwrap_or(0);
    }
    ms.sort_by(f64::total_cmp);
    Ok((hits as f64 / n.max(1) as f64, ms))
}

/// "p50 X ms, p99 Y ms" of sorted latencies.
fn quantiles(ms: &[f64]) -> String {
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    if ms.is_empty() {
        return "no searches".into();
    }
    format!("p50 {:.1} ms, p99 {:.1} ms", at(0.5), at(0.99))
}

async fn stop(r: Running) {
    let _ = r.stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), r.task).await;
}

async fn phase_seed(o: &Opts, data: &Path) -> Result<()> {
    row("seed", "process start (tokio runtime, nothing built)");
    let r = start(o, data).await?;
    row(
        "seed",
        "app built: store open, ONNX model loaded, no inference yet",
    );
    let reg = post(
        &r,
        None,
        "/api/auth/register",
        json!({"email": "bench@example.com", "password": "bench-password-123",
            "name": "Bench", "tenantName": "Bench Shop"}),
    )
    .await?;
    let token = reg["accessToken"]
        .as_str()
        .ok_or_else(|| anyhow!("register failed: {reg}"))?
        .to_string();
    std::fs::write(data.join("bench-token"), &token)?;
    let tenant = reg["user"]["tenantId"]
        .as_str()
        .and_then(TenantId::parse)
        .ok_or_else(|| anyhow!("no tenant id"))?;
    let agent = post(
        &r,
        Some(&token),
        "/api/agents",
        json!({"name": "Support", "retrievalMode": "hybrid"}),
    )
    .await?;
    let agent = agent["id"]
        .as_str()
        .and_then(AgentId::parse)
        .ok_or_else(|| anyhow!("no agent id"))?;
    {
        let k = r.knowledge.clone();
        let t = tenant.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let s = k.space_for(&t)?.ok_or_else(|| anyhow!("no model"))?;
            s.embedder.embed_query("warm up the model")?;
            Ok(())
        })
        .await??;
    }
    row("seed", "after the first inference (one query embedded)");
    let (k, t, a, o2) = (
        r.knowledge.clone(),
        tenant.clone(),
        agent.clone(),
        o.clone(),
    );
    let started = Instant::now();
    let (_docs, rep) = tokio::task::spawn_blocking(move || {
        seed(&k, &t, &a, &o2.seed.spec, &|what: &str| row("seed", what))
    })
    .await??;
    row(
        "seed",
        &format!(
            "after seeding {} chunks ({:.0} s; store + text index + vector index)",
            rep.chunks,
            started.elapsed().as_secs_f64()
        ),
    );
    let k = r.knowledge.clone();
    tokio::task::spawn_blocking(move || k.persist()).await?;
    row("seed", "after persisting the vector index");
    let (hits, ms) = searches(&r, &token, o.searches, 1).await?;
    row(
        "seed",
        &format!(
            "after {} hybrid searches ({hits:.1} hits each; {})",
            o.searches,
            quantiles(&ms)
        ),
    );
    tokio::time::sleep(Duration::from_secs(o.idle_secs)).await;
    row("seed", &format!("idle {} s later", o.idle_secs));
    stop(r).await;
    Ok(())
}

async fn phase_reopen(o: &Opts, data: &Path) -> Result<()> {
    row("reopen", "process start");
    let started = Instant::now();
    let r = start(o, data).await?;
    let built = started.elapsed().as_secs_f64();
    row(
        "reopen",
        &format!("app built on the seeded data dir (model loaded; {built:.1} s)"),
    );
    let token = std::fs::read_to_string(data.join("bench-token"))?;
    let (hits, ms) = searches(&r, &token, 1, 2).await?;
    row(
        "reopen",
        &format!(
            "after the first hybrid search ({hits:.0} hits, {:.0} ms)",
            ms[0]
        ),
    );
    let (hits, ms) = searches(&r, &token, o.searches, 3).await?;
    row(
        "reopen",
        &format!(
            "after {} more hybrid searches ({hits:.1} hits each; {})",
            o.searches,
            quantiles(&ms)
        ),
    );
    tokio::time::sleep(Duration::from_secs(o.idle_secs)).await;
    row("reopen", &format!("idle {} s later", o.idle_secs));
    print_table_sizes(&r.store)?;
    stop(r).await;
    Ok(())
}

/// What each store table holds: rows, bytes per row as stored (key + value), redb's own
/// bookkeeping and the free space inside its pages.
fn print_table_sizes(store: &aigentable::store::Store) -> Result<()> {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "\n| table | rows | stored MiB | bytes per row | redb metadata MiB | unused in pages MiB | pages MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for t in store.table_sizes()? {
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} |",
            t.name,
            t.rows,
            mib(t.stored_bytes),
            t.stored_bytes as f64 / t.rows.max(1) as f64,
            mib(t.metadata_bytes),
            mib(t.fragmented_bytes),
            mib(t.pages * 4096)
        );
    }
    println!();
    Ok(())
}

fn run_child(o: &Opts, phase: &str, data: &Path) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--phase", phase])
        .arg(data)
        .arg("--model-dir")
        .arg(&o.seed.model_dir)
        .arg("--ort")
        .arg(&o.seed.ort);
    for (k, v) in [
        ("--docs", o.seed.spec.docs.to_string()),
        ("--chunks-per-doc", o.seed.spec.chunks_per_doc.to_string()),
        ("--words", o.seed.spec.words.to_string()),
        ("--base-texts", o.seed.spec.base_texts.to_string()),
        ("--searches", o.searches.to_string()),
        ("--idle-secs", o.idle_secs.to_string()),
    ] {
        cmd.arg(k).arg(v);
    }
    child::run(cmd, phase, CHILD_TIMEOUT)
}

fn main() -> Result<()> {
    // As the server's main does: the malloc arenas are part of what is measured.
    let malloc = aigentable::malloc::tune();
    let o = parse_args()?;
    if let Some((phase, data)) = o.phase.clone() {
        let rt = tokio::runtime::Runtime::new()?;
        return rt.block_on(async {
            match phase.as_str() {
                "seed" => phase_seed(&o, &data).await,
                "reopen" => phase_reopen(&o, &data).await,
                other => bail!("unknown phase {other}"),
            }
        });
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    println!(
        "corpus: {} documents x {} chunks, ~{} words each; vectors: {} real all-MiniLM-L6-v2 \
         embeddings, perturbed and reused (raw f32 vectors alone: {:.0} MiB); malloc: {malloc:?}\n",
        o.seed.spec.docs,
        o.seed.spec.chunks_per_doc,
        o.seed.spec.words,
        o.seed.spec.base_texts,
        (o.seed.spec.docs * o.seed.spec.chunks_per_doc * 384 * 4) as f64 / (1024.0 * 1024.0)
    );
    println!("| process | point | VmRSS MiB | RssAnon MiB | RssFile MiB | VmHWM (peak) MiB |");
    println!("|---|---|---|---|---|---|");
    run_child(&o, "seed", &data)?;
    println!(
        "\nafter seeding: store {}, data dir {}\n",
        du(&data.join("aigentable.redb")),
        du(&data)
    );
    run_child(&o, "reopen", &data)?;
    println!(
        "\nafter the reopen: store {}, text index {}, vector index {}, data dir total {}",
        du(&data.join("aigentable.redb")),
        du(&data.join("index/text")),
        du(&data.join("index/vectors")),
        du(&data)
    );
    Ok(())
}
