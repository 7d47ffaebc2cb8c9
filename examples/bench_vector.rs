//! Vector index benchmark: per-tenant query latency and recall@10 against exact search.
//!
//! ```text
//! cargo run --release --example bench_vector -- [--tenants 10] [--per-tenant 10000] \
//!     [--dims 384] [--queries 200] [--m 16] [--ef-construction 100] [--ef 32,48,64,96] \
//!     [--exact-max 4096] [--real <beir_eval cache>[,<cache>...]] [--json <file>]
//! ```
//!
//! Vectors are clustered like real embeddings: each tenant has 100 random centres and every
//! vector is a centre plus Gaussian noise of similar norm, so neighbourhoods are neither
//! trivial nor uniform noise. Queries are fresh points drawn the same way. The index is
//! built through `VectorIndex::insert` in batches of 1,000 (as ingest does), persisted,
//! then reopened once per `--ef` value (so load time is measured too). Ground truth is a
//! brute-force scan done here, outside the index. `--real` replaces the synthetic data by
//! real MiniLM embeddings from `beir_eval` caches (one tenant: all documents, up to
//! `--queries` queries); use `--exact-max 0` with it so the graph is searched. Each `--ef`
//! row searches with that ef; the `default` row with the product's rule, whose ef grows
//! with the tenant's size (`HnswParams::search_ef`).
//! `examples/anchors/side_by_side.py` writes such a file and runs this with `--json` to
//! compare with hnswlib and ChromaDB on the same vectors.
//!
//! Besides wall time, the build is reported in process CPU seconds (less sensitive to other
//! load on a shared machine), the exact row in GB/s of vectors scanned, and the index's own
//! heap (vectors and graph) next to the process' peak RSS.

use aigentable::index::vector::{Kernel, dot};
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
    json: Option<String>,
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
        json: None,
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
            "--json" => a.json = Some(v),
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

/// User + system CPU seconds of this process so far (Linux; 0 elsewhere).
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based); 11 and 12 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
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
        "{} tenants x {} vectors x {} dims, M={} ef_construction={}, exact below {}, dot kernel {}",
        a.tenants,
        a.per_tenant,
        a.dims,
        a.m,
        a.ef_construction,
        params.exact_max,
        Kernel::best().name()
    );
    let mut report = serde_json::json!({
        "vectors": a.tenants * a.per_tenant,
        "dims": a.dims,
        "kernel": Kernel::best().name(),
        "rssBeforeBuildMiB": status_mib("VmRSS:"),
        "rows": [],
    });

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
        let mut build_cpu = 0.0;
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
            let cpu = cpu_secs();
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
            build_cpu += cpu_secs() - cpu;
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
        let n = (a.tenants * a.per_tenant) as f64;
        println!(
            "build: {:.1}s total, {:.0} vectors/s; {:.1} CPU s ({:.0} vectors per CPU s)",
            build.as_secs_f64(),
            n / build.as_secs_f64(),
            build_cpu,
            n / build_cpu.max(1e-9)
        );
        let index_mib = idx.memory_bytes() as f64 / (1 << 20) as f64;
        println!(
            "index heap (vectors + graph): {index_mib:.1} MiB, {:.0} bytes per vector; process RSS {:.0} MiB, peak {:.0} MiB",
            idx.memory_bytes() as f64 / n,
            status_mib("VmRSS:"),
            status_mib("VmHWM:")
        );
        let start = Instant::now();
        idx.persist()?;
        let persist = start.elapsed().as_secs_f64();
        println!("persist: {persist:.2}s");
        report["buildSecs"] = build.as_secs_f64().into();
        report["buildCpuSecs"] = build_cpu.into();
        report["indexHeapMiB"] = index_mib.into();
        report["peakRssAfterBuildMiB"] = status_mib("VmHWM:").into();
        report["persistSecs"] = persist.into();
    }

    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>9}",
        "ef", "p50 (ms)", "p99 (ms)", "mean (ms)", "recall@10"
    );
    // `--ef` rows search with that ef whatever the tenant's size; the `default` row with
    // the product's rule (ef grows with the tenant's size).
    let mut configs: Vec<(String, HnswParams)> = a
        .efs
        .iter()
        .map(|&ef| {
            (
                ef.to_string(),
                HnswParams {
                    ef_search: ef,
                    ef_grows_above: usize::MAX,
                    ..params.clone()
                },
            )
        })
        .collect();
    println!(
        "(default: ef {} for a tenant of {} vectors)",
        params.search_ef(10, a.per_tenant),
        a.per_tenant
    );
    report["defaultEf"] = params.search_ef(10, a.per_tenant).into();
    configs.push(("default".into(), params.clone()));
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
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        let recall = found as f64 / total as f64;
        // For the exact row: bytes of vectors read per query over the median time (the
        // index holds halves: 2 bytes per dimension; the f32 equivalent is twice that).
        let scanned = if name == "exact" {
            let per_query = (a.per_tenant * a.dims * 2) as f64;
            let gbs = per_query / p50.as_secs_f64() / 1e9;
            format!("   {gbs:.1} GB/s of halves ({:.1} GB/s as f32)", gbs * 2.0)
        } else {
            String::new()
        };
        println!(
            "{:>8} {:>10.3} {:>10.3} {:>10.3} {:>9.4}   (load {:.2}s){scanned}",
            name,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            mean.as_secs_f64() * 1e3,
            recall,
            load.as_secs_f64()
        );
        if let Some(rows) = report["rows"].as_array_mut() {
            rows.push(serde_json::json!({
                "ef": name,
                "p50Ms": p50.as_secs_f64() * 1e3,
                "p99Ms": p99.as_secs_f64() * 1e3,
                "meanMs": mean.as_secs_f64() * 1e3,
                "recallAt10": recall,
                "loadSecs": load.as_secs_f64(),
            }));
        }
    }
    // Peak memory includes this benchmark's own copies of the data and ground truth.
    let vectors: usize = tenants.iter().map(|t| t.data.len()).sum();
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|l| l.starts_with("VmHWM"))
    {
        println!("{vectors} vectors; peak RSS of this process (index + bench copies): {line}");
    }
    report["peakRssMiB"] = status_mib("VmHWM:").into();
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
