//! Vector index benchmark: per-tenant query latency and recall@10 against exact search.
//!
//! ```text
//! cargo run --release --example bench_vector -- [--tenants 10] [--per-tenant 10000] \
//!     [--dims 384] [--queries 200] [--m 16] [--ef-construction 100] [--ef 32,48,64,96] \
//!     [--exact-max 4096] [--real <beir_eval cache>[,<cache>...]]
//! ```
//!
//! Vectors are clustered like real embeddings: each tenant has 100 random centres and every
//! vector is a centre plus Gaussian noise of similar norm, so neighbourhoods are neither
//! trivial nor uniform noise. Queries are fresh points drawn the same way. The index is
//! built through `VectorIndex::insert` in batches of 1,000 (as ingest does), persisted,
//! then reopened once per `--ef` value (so load time is measured too). Ground truth is a
//! brute-force scan done here, outside the index. `--real` replaces the synthetic data by
//! real MiniLM embeddings from `beir_eval` caches (one tenant: all documents, up to
//! `--queries` queries); use `--exact-max 0` with it so the graph is searched.

use aigentable::index::vector::dot;
use aigentable::index::{HnswParams, VectorIndex};
use aigentable::types::{ChunkId, DocumentId, TenantId};
use anyhow::{Result, anyhow, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

struct Args {
    tenants: usize,
    per_tenant: usize,
    dims: usize,
    queries: usize,
    m: usize,
    ef_construction: usize,
    efs: Vec<usize>,
    exact_max: usize,
    real: Vec<String>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        tenants: 10,
        per_tenant: 10_000,
        dims: 384,
        queries: 200,
        m: HnswParams::default().max_conn,
        ef_construction: HnswParams::default().ef_construction,
        efs: vec![32, 48, 64, 96],
        exact_max: HnswParams::default().exact_max,
        real: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--tenants" => a.tenants = v.parse()?,
            "--per-tenant" => a.per_tenant = v.parse()?,
            "--dims" => a.dims = v.parse()?,
            "--queries" => a.queries = v.parse()?,
            "--m" => a.m = v.parse()?,
            "--ef-construction" => a.ef_construction = v.parse()?,
            "--exact-max" => a.exact_max = v.parse()?,
            "--real" => a.real = v.split(',').map(str::to_string).collect(),
            "--ef" => a.efs = v.split(',').map(str::parse).collect::<Result<_, _>>()?,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn gaussian(rng: &mut StdRng) -> f32 {
    // Box-Muller; the tiny offset keeps ln away from 0.
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

/// A clustered data set: `n` points around `centres` random centres.
fn clustered(rng: &mut StdRng, n: usize, centres: &[Vec<f32>]) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| {
            let c = &centres[rng.random_range(0..centres.len())];
            let mut v: Vec<f32> = c.iter().map(|x| x + 0.08 * gaussian(rng)).collect();
            normalise(&mut v);
            v
        })
        .collect()
}

/// Real embeddings from `beir_eval` caches: documents (`d:` keys) and queries (`q:`).
type Vectors = Vec<Vec<f32>>;

fn read_caches(paths: &[String], max_queries: usize) -> Result<(Vectors, Vectors)> {
    let (mut docs, mut queries) = (Vec::new(), Vec::new());
    for p in paths {
        let b = std::fs::read(p)?;
        let mut pos = 0usize;
        let mut take = |n: usize| -> Result<&[u8]> {
            let s = b
                .get(pos..pos + n)
                .ok_or_else(|| anyhow!("{p}: truncated"))?;
            pos += n;
            Ok(s)
        };
        let u64_at = |s: &[u8]| -> Result<usize> { Ok(u64::from_le_bytes(s.try_into()?) as usize) };
        let n = u64_at(take(8)?)?;
        let dims = u64_at(take(8)?)?;
        for _ in 0..n {
            let len = u32::from_le_bytes(take(4)?.try_into()?) as usize;
            let is_doc = take(len)?.starts_with(b"d:");
            let v: Vec<f32> = take(dims * 4)?
                .chunks_exact(4)
                .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                .collect();
            if is_doc {
                docs.push(v);
            } else if queries.len() < max_queries {
                queries.push(v);
            }
        }
    }
    Ok((docs, queries))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<()> {
    let mut a = args()?;
    let mut rng = StdRng::seed_from_u64(42);
    let dir = tempfile::tempdir()?;
    let params = HnswParams {
        max_conn: a.m,
        ef_construction: a.ef_construction,
        exact_max: a.exact_max,
        ..HnswParams::default()
    };
    let real = if a.real.is_empty() {
        None
    } else {
        let (docs, queries) = read_caches(&a.real, a.queries)?;
        a.tenants = 1;
        a.per_tenant = docs.len();
        a.dims = docs.first().map_or(0, Vec::len);
        Some((docs, queries))
    };
    println!(
        "{} tenants x {} vectors x {} dims, M={} ef_construction={}, exact below {}",
        a.tenants, a.per_tenant, a.dims, a.m, a.ef_construction, params.exact_max
    );

    struct T {
        id: TenantId,
        data: Vec<Vec<f32>>,
        queries: Vec<Vec<f32>>,
        truth: Vec<Vec<ChunkId>>,
    }
    let mut tenants = Vec::new();
    {
        let idx = VectorIndex::open_with(dir.path(), a.dims, "bench", params.clone())?;
        let mut build = Duration::ZERO;
        for _ in 0..a.tenants {
            let centres: Vec<Vec<f32>> = (0..100)
                .map(|_| {
                    let mut c: Vec<f32> = (0..a.dims).map(|_| gaussian(&mut rng)).collect();
                    normalise(&mut c);
                    c.iter_mut()
                        .for_each(|x| *x *= 0.08 * (a.dims as f32).sqrt());
                    c
                })
                .collect();
            let (data, queries) = match &real {
                Some((d, q)) => (d.clone(), q.clone()),
                None => (
                    clustered(&mut rng, a.per_tenant, &centres),
                    clustered(&mut rng, a.queries, &centres),
                ),
            };
            let id = TenantId::new();
            let chunks: Vec<ChunkId> = (0..data.len()).map(|_| ChunkId::new()).collect();
            let start = Instant::now();
            for (i, batch) in data.chunks(1000).enumerate() {
                let doc = DocumentId::new();
                let items: Vec<_> = batch
                    .iter()
                    .enumerate()
                    .map(|(j, v)| (chunks[i * 1000 + j].clone(), doc.clone(), v.clone()))
                    .collect();
                idx.insert(&id, &items)?;
            }
            build += start.elapsed();
            let truth = queries
                .iter()
                .map(|q| {
                    let mut s: Vec<(f32, usize)> = data
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (dot(q, v), i))
                        .collect();
                    s.sort_by(|x, y| y.0.total_cmp(&x.0));
                    s.iter().take(10).map(|&(_, i)| chunks[i].clone()).collect()
                })
                .collect();
            tenants.push(T {
                id,
                data,
                queries,
                truth,
            });
        }
        println!(
            "build: {:.1}s total, {:.0} vectors/s",
            build.as_secs_f64(),
            (a.tenants * a.per_tenant) as f64 / build.as_secs_f64()
        );
        let start = Instant::now();
        idx.persist()?;
        println!("persist: {:.2}s", start.elapsed().as_secs_f64());
    }

    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>9}",
        "ef", "p50 (ms)", "p99 (ms)", "mean (ms)", "recall@10"
    );
    let mut configs: Vec<(String, HnswParams)> = a
        .efs
        .iter()
        .map(|&ef| {
            (
                ef.to_string(),
                HnswParams {
                    ef_search: ef,
                    ..params.clone()
                },
            )
        })
        .collect();
    configs.push((
        "exact".into(),
        HnswParams {
            exact_max: usize::MAX,
            ..params.clone()
        },
    ));
    for (name, p) in configs {
        let start = Instant::now();
        let idx = VectorIndex::open_with(dir.path(), a.dims, "bench", p)?;
        let load = start.elapsed();
        if !idx.tenants_needing_rebuild().is_empty() {
            bail!("reload lost tenants");
        }
        let mut lat = Vec::new();
        let mut found = 0usize;
        let mut total = 0usize;
        // Warm-up pass so page faults and allocator growth are not timed.
        for t in &tenants {
            idx.search(&t.id, &t.queries[0], None, 10)?;
        }
        for t in &tenants {
            for (q, truth) in t.queries.iter().zip(&t.truth) {
                let start = Instant::now();
                let hits = idx.search(&t.id, q, None, 10)?;
                lat.push(start.elapsed());
                found += hits.iter().filter(|h| truth.contains(&h.chunk)).count();
                total += truth.len();
            }
        }
        lat.sort();
        let mean = lat.iter().sum::<Duration>() / lat.len() as u32;
        println!(
            "{:>8} {:>10.3} {:>10.3} {:>10.3} {:>9.4}   (load {:.2}s)",
            name,
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            mean.as_secs_f64() * 1e3,
            found as f64 / total as f64,
            load.as_secs_f64()
        );
    }
    // Peak memory includes this benchmark's own copies of the data and ground truth.
    let vectors: usize = tenants.iter().map(|t| t.data.len()).sum();
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|l| l.starts_with("VmHWM"))
    {
        println!("{vectors} vectors; peak RSS of this process (index + bench copies): {line}");
    }
    Ok(())
}
