//! Hybrid query latency: BM25 top-50 + vector top-50 + `fuse` to top-10, on 100k chunks.
//! Query embedding is excluded (it belongs to `embed`).
//!
//! ```text
//! cargo run --release --example bench_hybrid -- [--tenants 10] [--per-tenant 10000] \
//!     [--dims 384] [--queries 500] [--depth 50]
//! ```
//!
//! Chunk text is ~120 words drawn from a 30,000-word Zipf vocabulary (like natural
//! language: a few very common words, a long tail), queries are 3-8 words drawn the same
//! way; vectors are clustered as in `bench_vector`. Text is added 1,000 chunks per commit.

use aigentable::index::vector::dot;
use aigentable::index::{Filter, FusionParams, TextDoc, TextIndex, VectorIndex, fuse};
use aigentable::types::{ChunkId, DocumentId, TenantId};
use anyhow::{Result, anyhow, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

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

/// Pseudo-words: distinct, pronounceable-ish, no collisions with stemming quirks.
fn vocabulary(n: usize) -> Vec<String> {
    const SYL: [&str; 20] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi", "pa", "do", "fe", "gu", "hi", "jo",
        "be", "co", "di", "fu", "ga",
    ];
    (0..n)
        .map(|mut i| {
            let mut w = String::new();
            loop {
                w.push_str(SYL[i % 20]);
                i /= 20;
                if i == 0 {
                    break;
                }
            }
            w.push('x');
            w
        })
        .collect()
}

/// Zipf(1.0) sampler by inverse CDF over precomputed cumulative weights.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize) -> Self {
        let mut acc = 0.0;
        Zipf(
            (1..=n)
                .map(|r| {
                    acc += 1.0 / r as f64;
                    acc
                })
                .collect(),
        )
    }
    fn sample(&self, rng: &mut StdRng) -> usize {
        let total = self.0[self.0.len() - 1];
        let x = rng.random::<f64>() * total;
        self.0.partition_point(|&c| c < x).min(self.0.len() - 1)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<()> {
    let (mut tenants_n, mut per_tenant, mut dims, mut queries, mut depth) =
        (10usize, 10_000usize, 384usize, 500usize, 50usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v: usize = it
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value"))?
            .parse()?;
        match flag.as_str() {
            "--tenants" => tenants_n = v,
            "--per-tenant" => per_tenant = v,
            "--dims" => dims = v,
            "--queries" => queries = v,
            "--depth" => depth = v,
            other => bail!("unknown argument {other}"),
        }
    }
    let mut rng = StdRng::seed_from_u64(7);
    let vocab = vocabulary(30_000);
    let zipf = Zipf::new(vocab.len());
    let dir = tempfile::tempdir()?;
    let text = TextIndex::open(&dir.path().join("text"))?;
    let vectors = VectorIndex::open(&dir.path().join("vectors"), dims, "bench")?;
    println!(
        "{tenants_n} tenants x {per_tenant} chunks ({} total), {dims} dims, depth {depth}",
        tenants_n * per_tenant
    );

    let mut tenants = Vec::new();
    let (mut t_text, mut t_vec) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..tenants_n {
        let tenant = TenantId::new();
        let centres: Vec<Vec<f32>> = (0..100)
            .map(|_| {
                let mut c: Vec<f32> = (0..dims).map(|_| gaussian(&mut rng)).collect();
                normalise(&mut c);
                c.iter_mut().for_each(|x| *x *= 0.08 * (dims as f32).sqrt());
                c
            })
            .collect();
        let point = |rng: &mut StdRng| {
            let c = &centres[rng.random_range(0..centres.len())];
            let mut v: Vec<f32> = c.iter().map(|x| x + 0.08 * gaussian(rng)).collect();
            normalise(&mut v);
            v
        };
        let mut start = 0;
        while start < per_tenant {
            let n = 1000.min(per_tenant - start);
            let doc = DocumentId::new();
            let mut docs = Vec::with_capacity(n);
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                let chunk = ChunkId::new();
                let words: Vec<&str> = (0..120)
                    .map(|_| vocab[zipf.sample(&mut rng)].as_str())
                    .collect();
                docs.push(TextDoc {
                    tenant: tenant.clone(),
                    document: doc.clone(),
                    chunk: chunk.clone(),
                    agents: Vec::new(),
                    text: words.join(" "),
                    headings: vec![vocab[zipf.sample(&mut rng)].clone()],
                });
                items.push((chunk, doc.clone(), point(&mut rng)));
            }
            let s = Instant::now();
            text.add(&docs)?;
            t_text += s.elapsed();
            let s = Instant::now();
            vectors.insert(&tenant, &items)?;
            t_vec += s.elapsed();
            start += n;
        }
        let qs: Vec<(String, Vec<f32>)> = (0..queries / tenants_n.max(1))
            .map(|_| {
                let len = rng.random_range(3..=8);
                let q: Vec<&str> = (0..len)
                    .map(|_| vocab[zipf.sample(&mut rng)].as_str())
                    .collect();
                (q.join(" "), point(&mut rng))
            })
            .collect();
        tenants.push((tenant, qs));
    }
    println!(
        "indexing: text {:.1}s ({:.0} chunks/s), vectors {:.1}s ({:.0} vectors/s)",
        t_text.as_secs_f64(),
        (tenants_n * per_tenant) as f64 / t_text.as_secs_f64(),
        t_vec.as_secs_f64(),
        (tenants_n * per_tenant) as f64 / t_vec.as_secs_f64()
    );

    let params = FusionParams::default();
    let filter = Filter::default();
    // Warm-up: one query per tenant.
    for (t, qs) in &tenants {
        text.search(t, &qs[0].0, &filter, depth)?;
        vectors.search(t, &qs[0].1, None, depth)?;
    }
    let (mut lk, mut lv, mut lf, mut lt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut returned = 0usize;
    for (t, qs) in &tenants {
        for (q, v) in qs {
            let s0 = Instant::now();
            let kw = text.search(t, q, &filter, depth)?;
            let s1 = Instant::now();
            let vs = vectors.search(t, v, None, depth)?;
            let s2 = Instant::now();
            let fused = fuse(&kw, &vs, 10, &params);
            let s3 = Instant::now();
            returned += fused.len();
            lk.push(s1 - s0);
            lv.push(s2 - s1);
            lf.push(s3 - s2);
            lt.push(s3 - s0);
        }
    }
    println!(
        "{:>8} {:>10} {:>10} {:>10}",
        "stage", "p50 (ms)", "p99 (ms)", "mean (ms)"
    );
    for (name, l) in [
        ("bm25", &mut lk),
        ("vector", &mut lv),
        ("fuse", &mut lf),
        ("hybrid", &mut lt),
    ] {
        l.sort();
        let mean = l.iter().sum::<Duration>() / l.len().max(1) as u32;
        println!(
            "{:>8} {:>10.3} {:>10.3} {:>10.3}",
            name,
            percentile(l, 0.5).as_secs_f64() * 1e3,
            percentile(l, 0.99).as_secs_f64() * 1e3,
            mean.as_secs_f64() * 1e3
        );
    }
    println!("{} queries, {returned} results", lt.len());
    Ok(())
}
