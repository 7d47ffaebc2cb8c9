//! Fold-rule benchmark (issue 14): what the vector index's persists write while one tenant
//! fills, and what its files then cost a start, for a given [`FoldRule`] (when a persist
//! writes a new base instead of another delta). The vector index alone, with its vectors in
//! a source as the server keeps them in the store (dumps hold the graph and slots), so a
//! fill takes minutes rather than the hour `bench_scale` needs for the whole pipeline.
//!
//! ```text
//! cargo build --config 'profile.dev.package.aigentable.opt-level=3' --example bench_fold
//! bench_fold fill --dir DIR [--chunks 200000] [--per-persist 5600] [--ratio 0.5]
//!     [--max-deltas 512] [--per-doc 200] [--dims 384]
//! bench_fold edit --dir DIR [--edits 64] [--edit-chunks 10] [--ratio ..] [--max-deltas ..]
//! bench_fold load --dir DIR [--repeat 3]
//! ```
//!
//! * `fill`: a fresh index in `DIR/index`; documents of `--per-doc` chunks inserted one by
//!   one (as the pipeline's `index_vectors` does), the index persisted each time
//!   `--per-persist` chunks were added since the last persist (the server persists once a
//!   minute: 5,600 chunks a minute is helper wD's 200k fill through `bench_scale`), and once
//!   at the end. Prints each persist (a base or a delta, bytes, ms) and the totals.
//! * `edit`: opens the index (a start), then `--edits` times adds a document of
//!   `--edit-chunks` chunks and persists: the once-a-minute small change.
//! * `load`: opens the index `--repeat` times in this process, each timed (wall, and CPU
//!   seconds of this thread from `/proc/thread-self/schedstat`, which also gives the time
//!   spent waiting for a core), with RSS after the first.
//!
//! Vectors: 100 random centres, each chunk a centre plus Gaussian noise, normalised (as
//! `bench_vector`); chunk `i`'s vector, id and document depend on `i` alone, so `load` and
//! `edit` rebuild the source the fill had. `DIR/chunks` holds how many there are.
//!
//! Linux only.

use aigentable::index::vector::{FoldRule, dot, to_f16};
use aigentable::index::{HnswParams, VectorIndex, VectorSource};
use aigentable::types::{ChunkId, DocumentId, TenantId};
use anyhow::{Context, Result, anyhow, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

const MODEL: &str = "bench-fold";
const CENTRES: usize = 100;

struct Args {
    cmd: String,
    dir: PathBuf,
    chunks: usize,
    per_persist: usize,
    per_doc: usize,
    dims: usize,
    fold: FoldRule,
    edits: usize,
    edit_chunks: usize,
    repeat: usize,
}

fn args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().ok_or_else(|| anyhow!("fill, edit or load"))?;
    let mut a = Args {
        cmd,
        dir: PathBuf::new(),
        chunks: 200_000,
        per_persist: 5_600,
        per_doc: 200,
        dims: 384,
        fold: FoldRule::default(),
        edits: 64,
        edit_chunks: 10,
        repeat: 3,
    };
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(v),
            "--chunks" => a.chunks = v.parse()?,
            "--per-persist" => a.per_persist = v.parse()?,
            "--per-doc" => a.per_doc = v.parse()?,
            "--dims" => a.dims = v.parse()?,
            "--ratio" => a.fold.max_delta_ratio = v.parse()?,
            "--max-deltas" => a.fold.max_deltas = v.parse()?,
            "--edits" => a.edits = v.parse()?,
            "--edit-chunks" => a.edit_chunks = v.parse()?,
            "--repeat" => a.repeat = v.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if a.dir.as_os_str().is_empty() {
        bail!("--dir is required");
    }
    Ok(a)
}

fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random::<f32>() + 1e-9;
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

fn normalise(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The fixed data set: chunk `i`'s vector and id from `i` alone.
struct Data {
    centres: Vec<Vec<f32>>,
}

impl Data {
    fn new(dims: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(7);
        let centres = (0..CENTRES)
            .map(|_| {
                let mut c: Vec<f32> = (0..dims).map(|_| gaussian(&mut rng)).collect();
                normalise(&mut c);
                c
            })
            .collect();
        Self { centres }
    }
    fn vector(&self, i: usize) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(0x5eed_0000_0000 + i as u64);
        let c = &self.centres[rng.random_range(0..CENTRES)];
        let mut v: Vec<f32> = c.iter().map(|x| x + 0.08 * gaussian(&mut rng)).collect();
        normalise(&mut v);
        v
    }
    fn chunk(i: usize) -> ChunkId {
        ChunkId::parse(&uuid::Uuid::from_u128(1 << 64 | i as u128).to_string()).expect("a UUID")
    }
}

/// Document number `n`'s id.
fn doc(n: usize) -> DocumentId {
    DocumentId::parse(&uuid::Uuid::from_u128(2 << 64 | n as u128).to_string()).expect("a UUID")
}

fn tenant() -> TenantId {
    TenantId::parse(&uuid::Uuid::from_u128(3 << 64).to_string()).expect("a UUID")
}

/// The store's copy of the vectors, as halves.
#[derive(Default)]
struct Source(RwLock<Vec<(ChunkId, Vec<u16>)>>);

impl Source {
    fn add(&self, chunk: ChunkId, v: &[f32]) {
        let halves = v.iter().map(|&x| to_f16(x)).collect();
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((chunk, halves));
    }
}

impl VectorSource for Source {
    fn tenant_vectors(
        &self,
        _tenant: &TenantId,
        each: &mut dyn FnMut(&ChunkId, &[u16]),
    ) -> Result<(), String> {
        for (c, v) in self.0.read().unwrap_or_else(|e| e.into_inner()).iter() {
            each(c, v);
        }
        Ok(())
    }
}

/// User + system CPU seconds of this process so far.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based); 11 and 12 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// This thread's time on a core and waiting for one, seconds.
fn thread_sched() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = s
        .split_whitespace()
        .map(|x| x.parse::<f64>().unwrap_or(0.0));
    (f.next().unwrap_or(0.0) / 1e9, f.next().unwrap_or(0.0) / 1e9)
}

fn status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Files under the index directory: bytes in all, the base's files and the deltas.
fn on_disk(dir: &Path) -> Result<(u64, usize, u64)> {
    let (mut bytes, mut deltas, mut delta_bytes) = (0, 0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let md = e.metadata()?;
            if md.is_dir() {
                stack.push(e.path());
            } else {
                bytes += md.len();
                if e.file_name().to_string_lossy().starts_with("delta-") {
                    deltas += 1;
                    delta_bytes += md.len();
                }
            }
        }
    }
    Ok((bytes, deltas, delta_bytes))
}

fn open(a: &Args, source: &Arc<Source>) -> Result<VectorIndex> {
    let src: Arc<dyn VectorSource> = source.clone();
    Ok(VectorIndex::open_with_source(
        &a.dir.join("index"),
        a.dims,
        MODEL,
        HnswParams::default(),
        Some(src),
    )?
    .with_fold_rule(a.fold))
}

fn chunks_file(a: &Args) -> PathBuf {
    a.dir.join("chunks")
}

/// How many chunks the fill and edits in `--dir` inserted.
fn filled(a: &Args) -> Result<usize> {
    Ok(std::fs::read_to_string(chunks_file(a))
        .context("no fill in --dir")?
        .trim()
        .parse()?)
}

/// The source of the first `n` chunks.
fn source_of(data: &Data, n: usize) -> Arc<Source> {
    let s = Arc::new(Source::default());
    for i in 0..n {
        s.add(Data::chunk(i), &data.vector(i));
    }
    s
}

/// Inserts chunks `from..to` as documents of `per_doc` chunks numbered from `first_doc`,
/// one by one; persists every `per_persist` chunks (0: only at the end) and at the end.
#[allow(clippy::too_many_arguments)]
fn insert_range(
    data: &Data,
    idx: &VectorIndex,
    source: &Source,
    from: usize,
    to: usize,
    per_doc: usize,
    first_doc: usize,
    per_persist: usize,
) -> Result<()> {
    let t = tenant();
    let mut since = 0;
    let mut i = from;
    while i < to {
        let end = (i + per_doc).min(to);
        let d = doc(first_doc + (i - from) / per_doc);
        let items: Vec<_> = (i..end)
            .map(|k| {
                let v = data.vector(k);
                source.add(Data::chunk(k), &v);
                (Data::chunk(k), d.clone(), v)
            })
            .collect();
        idx.insert(&t, &items)?;
        since += end - i;
        i = end;
        if (per_persist > 0 && since >= per_persist) || i == to {
            persist(idx, i)?;
            since = 0;
        }
    }
    Ok(())
}

fn persist(idx: &VectorIndex, chunks: usize) -> Result<()> {
    let was = idx.persisted();
    let (t0, c0) = (Instant::now(), cpu_secs());
    idx.persist()?;
    let (ms, cpu) = (t0.elapsed().as_secs_f64() * 1e3, cpu_secs() - c0);
    let now = idx.persisted();
    let kind = if now.bases > was.bases {
        "base"
    } else if now.deltas > was.deltas {
        "delta"
    } else {
        "none"
    };
    println!(
        "persist chunks={chunks} kind={kind} bytes={} ms={ms:.0} cpu_s={cpu:.2} total_bytes={} bases={} deltas={} load={}",
        now.bytes - was.bytes,
        now.bytes,
        now.bases,
        now.deltas,
        load_avg()
    );
    Ok(())
}

fn summary(a: &Args, what: &str, idx: &VectorIndex, t0: Instant, c0: f64) -> Result<()> {
    let p = idx.persisted();
    let (disk, deltas, delta_bytes) = on_disk(&a.dir.join("index"))?;
    println!(
        "{what} fold={:?} wall_s={:.1} cpu_s={:.1} written_bytes={} written_MiB={:.1} bases={} deltas={} \
         disk_bytes={disk} disk_MiB={:.1} files_deltas={deltas} delta_MiB={:.1} rss_MiB={:.0} hwm_MiB={:.0} load={}",
        a.fold,
        t0.elapsed().as_secs_f64(),
        cpu_secs() - c0,
        p.bytes,
        p.bytes as f64 / 1048576.0,
        p.bases,
        p.deltas,
        disk as f64 / 1048576.0,
        delta_bytes as f64 / 1048576.0,
        status_mib("VmRSS:"),
        status_mib("VmHWM:"),
        load_avg()
    );
    Ok(())
}

fn main() -> Result<()> {
    let a = args()?;
    let data = Data::new(a.dims);
    match a.cmd.as_str() {
        "fill" => {
            if a.dir.join("index").exists() {
                bail!("{} already holds an index", a.dir.display());
            }
            std::fs::create_dir_all(&a.dir)?;
            let source = Arc::new(Source::default());
            let idx = open(&a, &source)?;
            let (t0, c0) = (Instant::now(), cpu_secs());
            insert_range(
                &data,
                &idx,
                &source,
                0,
                a.chunks,
                a.per_doc,
                0,
                a.per_persist,
            )?;
            std::fs::write(chunks_file(&a), a.chunks.to_string())?;
            summary(&a, "fill", &idx, t0, c0)?;
        }
        "edit" => {
            let n = filled(&a)?;
            let source = source_of(&data, n);
            let idx = open(&a, &source)?;
            if !idx.tenants_needing_rebuild().is_empty() {
                bail!("the index did not load");
            }
            let (t0, c0) = (Instant::now(), cpu_secs());
            let mut at = n;
            for _ in 0..a.edits {
                let to = at + a.edit_chunks;
                insert_range(&data, &idx, &source, at, to, a.edit_chunks, 1 << 40 | at, 0)?;
                at = to;
                std::fs::write(chunks_file(&a), at.to_string())?;
            }
            summary(&a, "edit", &idx, t0, c0)?;
        }
        "load" => {
            let n = filled(&a)?;
            let source = source_of(&data, n);
            let (disk, deltas, delta_bytes) = on_disk(&a.dir.join("index"))?;
            let rss0 = status_mib("VmRSS:");
            for round in 0..a.repeat {
                let (t0, c0, (on0, wait0)) = (Instant::now(), cpu_secs(), thread_sched());
                let idx = open(&a, &source)?;
                let wall = t0.elapsed().as_secs_f64();
                let (on1, wait1) = thread_sched();
                let cpu = cpu_secs() - c0;
                if !idx.tenants_needing_rebuild().is_empty() {
                    bail!("the index did not load");
                }
                let rss = status_mib("VmRSS:");
                println!(
                    "load round={round} chunks={n} disk_bytes={disk} disk_MiB={:.1} deltas={deltas} delta_MiB={:.1} \
                     wall_s={wall:.3} thread_cpu_s={:.3} thread_wait_s={:.3} process_cpu_s={cpu:.2} \
                     rss_before_MiB={rss0:.0} rss_MiB={rss:.0} index_MiB={:.0} load={}",
                    disk as f64 / 1048576.0,
                    delta_bytes as f64 / 1048576.0,
                    on1 - on0,
                    wait1 - wait0,
                    idx.memory_bytes() as f64 / 1048576.0,
                    load_avg()
                );
            }
        }
        other => bail!("unknown command {other}"),
    }
    Ok(())
}
