//! Shared by `bench_chat` and `bench_memory` (included with `#[path]`; not an example of
//! its own): a synthetic support-documentation corpus and the seeding of one tenant with
//! it, written the way the ingestion pipeline writes chunks.

use aigentable::index::TextDoc;
use aigentable::knowledge::Knowledge;
use aigentable::knowledge::pipeline::{index_vectors, put_chunks};
use aigentable::model::{Chunk, Document, DocumentStatus};
use aigentable::types::{AgentId, ChunkId, DocumentId, TenantId};
use anyhow::{Result, anyhow};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The model and corpus options both seeding benchmarks take, with their defaults.
#[derive(Clone)]
pub struct SeedArgs {
    pub model_dir: PathBuf,
    pub ort: PathBuf,
    pub spec: SeedSpec,
}

impl Default for SeedArgs {
    fn default() -> Self {
        SeedArgs {
            model_dir: PathBuf::from("/work/shared/models/all-MiniLM-L6-v2"),
            ort: PathBuf::from("/work/shared/runtime/onnxruntime-1.32.0/libonnxruntime.so.1.32.0"),
            spec: SeedSpec {
                docs: 500,
                chunks_per_doc: 200,
                words: 110,
                base_texts: 2000,
            },
        }
    }
}

impl SeedArgs {
    /// Takes `flag` when it is one of these options, reading its value with `value`;
    /// false for any other flag.
    pub fn take(
        &mut self,
        flag: &str,
        value: &mut dyn FnMut(&str) -> Result<String>,
    ) -> Result<bool> {
        match flag {
            "--model-dir" => self.model_dir = PathBuf::from(value(flag)?),
            "--ort" => self.ort = PathBuf::from(value(flag)?),
            "--docs" => self.spec.docs = value(flag)?.parse()?,
            "--chunks-per-doc" => self.spec.chunks_per_doc = value(flag)?.parse()?,
            "--words" => self.spec.words = value(flag)?.parse()?,
            "--base-texts" => self.spec.base_texts = value(flag)?.parse()?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Bounds every option (an agent holds at most 1000 documents).
    pub fn clamp(&mut self) {
        let s = &mut self.spec;
        s.docs = s.docs.clamp(1, 1000);
        s.chunks_per_doc = s.chunks_per_doc.clamp(1, 10_000);
        s.words = s.words.clamp(5, 1000);
        s.base_texts = s.base_texts.clamp(1, 100_000);
    }
}

/// What to seed.
#[derive(Clone)]
pub struct SeedSpec {
    /// Documents, each of `chunks_per_doc` chunks of about `words` words.
    pub docs: usize,
    pub chunks_per_doc: usize,
    pub words: usize,
    /// Distinct texts embedded with the real model; chunk vectors are these, perturbed.
    pub base_texts: usize,
}

const TOPICS: &[&str] = &[
    "shipping",
    "returns",
    "warranty",
    "billing",
    "invoices",
    "subscriptions",
    "delivery",
    "refunds",
    "accounts",
    "passwords",
    "discounts",
    "coupons",
    "gift cards",
    "payments",
    "installation",
    "maintenance",
    "cleaning",
    "batteries",
    "chargers",
    "firmware",
    "orders",
    "exchanges",
    "sizing",
    "allergens",
    "ingredients",
    "reservations",
    "appointments",
    "opening hours",
    "loyalty points",
    "privacy",
    "security",
    "insurance",
    "repairs",
    "spare parts",
    "assembly",
    "pickup",
    "tracking",
    "customs",
    "taxes",
    "bulk orders",
];
const NOUNS: &[&str] = &[
    "order",
    "parcel",
    "receipt",
    "label",
    "courier",
    "invoice",
    "card",
    "account",
    "profile",
    "router",
    "charger",
    "battery",
    "cable",
    "filter",
    "pump",
    "valve",
    "lid",
    "handle",
    "screen",
    "sensor",
    "remote",
    "adapter",
    "cartridge",
    "belt",
    "motor",
    "nozzle",
    "hose",
    "blade",
    "panel",
    "switch",
    "warehouse",
    "store",
    "counter",
    "manager",
    "technician",
    "customer",
    "voucher",
    "balance",
    "statement",
    "deposit",
    "booking",
    "table",
    "menu",
    "recipe",
    "sauce",
    "dough",
    "oven",
    "kettle",
    "grinder",
    "bottle",
    "jar",
    "box",
    "pallet",
    "form",
    "signature",
    "address",
    "postcode",
    "phone",
    "email",
    "password",
    "code",
    "serial number",
    "manual",
    "guide",
    "policy",
    "contract",
    "schedule",
    "calendar",
    "holiday",
    "weekend",
    "morning",
    "evening",
    "fee",
    "price",
    "discount",
    "tax",
    "refund",
];
const VERBS: &[&str] = &[
    "check",
    "replace",
    "reset",
    "clean",
    "update",
    "cancel",
    "return",
    "exchange",
    "track",
    "confirm",
    "verify",
    "register",
    "activate",
    "install",
    "remove",
    "charge",
    "refund",
    "ship",
    "deliver",
    "collect",
    "book",
    "reschedule",
    "repair",
    "inspect",
    "measure",
    "adjust",
    "tighten",
    "unlock",
    "renew",
    "transfer",
    "print",
    "scan",
    "sign",
    "store",
];
const ADJS: &[&str] = &[
    "new",
    "old",
    "damaged",
    "missing",
    "original",
    "spare",
    "standard",
    "express",
    "international",
    "local",
    "monthly",
    "annual",
    "free",
    "paid",
    "broken",
    "loose",
    "full",
    "empty",
    "sealed",
    "unused",
    "defective",
    "compatible",
    "official",
    "digital",
    "printed",
    "secure",
    "temporary",
    "permanent",
    "large",
    "small",
    "quick",
    "careful",
    "weekly",
];
const FILLER: &[&str] = &[
    "please",
    "usually",
    "within",
    "before",
    "after",
    "unless",
    "always",
    "only",
    "also",
    "then",
    "because",
    "however",
    "otherwise",
    "instead",
    "each",
    "every",
    "any",
    "your",
];

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

/// A sentence of plain support-documentation English.
fn sentence(rng: &mut StdRng, topic: &str) -> String {
    match rng.random_range(0..6) {
        0 => format!(
            "To {} the {} {}, {} open the {} page and {} the {}.",
            pick(rng, VERBS),
            pick(rng, ADJS),
            pick(rng, NOUNS),
            pick(rng, FILLER),
            topic,
            pick(rng, VERBS),
            pick(rng, NOUNS)
        ),
        1 => format!(
            "Our {} team can {} a {} {} within {} working days.",
            topic,
            pick(rng, VERBS),
            pick(rng, ADJS),
            pick(rng, NOUNS),
            rng.random_range(1..15)
        ),
        2 => format!(
            "If the {} is {}, {} {} the {} and contact the {} about {}.",
            pick(rng, NOUNS),
            pick(rng, ADJS),
            pick(rng, FILLER),
            pick(rng, VERBS),
            pick(rng, NOUNS),
            pick(rng, NOUNS),
            topic
        ),
        3 => format!(
            "The {} fee for {} is {} euros per {}, {} for {} customers.",
            pick(rng, ADJS),
            topic,
            rng.random_range(1..200),
            pick(rng, NOUNS),
            pick(rng, FILLER),
            pick(rng, ADJS)
        ),
        4 => format!(
            "You need the {} {} and the {} to {} a {} {}.",
            pick(rng, ADJS),
            pick(rng, NOUNS),
            pick(rng, NOUNS),
            pick(rng, VERBS),
            pick(rng, ADJS),
            pick(rng, NOUNS)
        ),
        _ => format!(
            "Model {}-{} {} {} the {} {} {} {}.",
            pick(rng, NOUNS).replace(' ', "").to_uppercase(),
            rng.random_range(100..9999),
            pick(rng, FILLER),
            pick(rng, VERBS),
            pick(rng, NOUNS),
            pick(rng, FILLER),
            pick(rng, ADJS),
            topic
        ),
    }
}

/// A chunk's text of about `words` words on `topic`.
fn chunk_text(rng: &mut StdRng, topic: &str, words: usize) -> String {
    let mut s = String::new();
    while s.split_whitespace().count() < words {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(&sentence(rng, topic));
    }
    s
}

/// A customer question from the corpus' vocabulary.
pub fn question(rng: &mut StdRng, n: usize) -> String {
    format!(
        "How do I {} the {} {} for {}? (ticket {n})",
        pick(rng, VERBS),
        pick(rng, ADJS),
        pick(rng, NOUNS),
        pick(rng, TOPICS)
    )
}

/// One standard normal sample (Box-Muller), without extra crates.
fn gauss(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random::<f32>().max(1e-12);
    let u2: f32 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

#[derive(Default)]
pub struct SeedReport {
    pub chunks: usize,
    pub text_bytes: usize,
    pub embed_base: Duration,
    pub store: Duration,
    pub text_index: Duration,
    pub vector_index: Duration,
    pub total: Duration,
}

/// Per-dimension standard deviation of the noise added to a base vector (before
/// normalising): cosine to the base is about 0.86 for 384 dimensions.
pub const PERTURB_SIGMA: f32 = 0.03;

/// Seeds `docs` x `chunks_per_doc` chunks into one tenant, the way the pipeline writes them:
/// Document and Chunk records and the chunks' vectors in one transaction per document
/// (`put_chunks`), then the text index (one commit per document: the pipeline's
/// `index_text` commits a delete first, which new documents do not need) and the vector
/// index (`index_vectors`, one insert per document).
/// Vectors: `base_texts` distinct synthetic texts embedded with the real model, each reused
/// for many chunks with Gaussian noise, normalised. Blocking.
pub fn seed(
    k: &Knowledge,
    tenant: &TenantId,
    agent: &AgentId,
    o: &SeedSpec,
    checkpoint: &dyn Fn(&str),
) -> Result<(Vec<DocumentId>, SeedReport)> {
    let started = Instant::now();
    let mut rep = SeedReport::default();
    let space = k
        .space_for(tenant)?
        .ok_or_else(|| anyhow!("no embedding model is loaded"))?;
    let model_id = space.model_id().to_string();
    let mut rng = StdRng::seed_from_u64(42);
    // Real embeddings of distinct texts.
    let t0 = Instant::now();
    let base_texts: Vec<String> = (0..o.base_texts)
        .map(|i| {
            let topic = TOPICS[i % TOPICS.len()];
            chunk_text(&mut rng, topic, o.words)
        })
        .collect();
    let mut base: Vec<Vec<f32>> = Vec::with_capacity(base_texts.len());
    for batch in base_texts.chunks(64) {
        base.extend(space.embedder.embed(batch)?);
    }
    drop(base_texts);
    rep.embed_base = t0.elapsed();
    checkpoint("after embedding the base texts (ONNX arenas warm)");
    eprintln!(
        "  embedded {} base texts in {:.1} s",
        base.len(),
        rep.embed_base.as_secs_f64()
    );
    let mut doc_ids = Vec::with_capacity(o.docs);
    for d in 0..o.docs {
        let doc_id = DocumentId::new();
        let topic = TOPICS[d % TOPICS.len()];
        let now = time::OffsetDateTime::now_utc();
        let mut chunks = Vec::with_capacity(o.chunks_per_doc);
        let mut vectors = Vec::with_capacity(o.chunks_per_doc);
        let mut size = 0usize;
        for i in 0..o.chunks_per_doc {
            let text = chunk_text(&mut rng, topic, o.words);
            size += text.len();
            // A base vector of the same topic, perturbed.
            let b = (rng.random_range(0..base.len().max(TOPICS.len()) / TOPICS.len())
                * TOPICS.len()
                + d % TOPICS.len())
                % base.len();
            let mut v: Vec<f32> = base[b]
                .iter()
                .map(|x| x + PERTURB_SIGMA * gauss(&mut rng))
                .collect();
            normalise(&mut v);
            chunks.push(Chunk {
                id: ChunkId::new(),
                tenant_id: tenant.clone(),
                document_id: doc_id.clone(),
                ordinal: i as u32,
                token_count: (text.split_whitespace().count() * 4 / 3) as u32,
                text,
                page: Some(1 + i as u32 / 4),
                headings: vec![
                    format!("{} guide {d}", topic),
                    format!("Section {}", 1 + i / 10),
                ],
                embedding_model: Some(model_id.clone()),
            });
            vectors.push(v);
        }
        rep.text_bytes += size;
        let doc = Document {
            id: doc_id.clone(),
            tenant_id: tenant.clone(),
            name: format!("{topic}-guide-{d}.txt"),
            mime_type: "text/plain".into(),
            size_bytes: size as u64,
            sha256: format!("{:064x}", rng.random::<u128>()),
            status: DocumentStatus::Ready,
            progress: 100,
            error: None,
            pages: Some(o.chunks_per_doc.div_ceil(4) as u32),
            chunk_count: chunks.len() as u32,
            title: Some(format!("{topic} guide {d}")),
            author: None,
            agent_ids: vec![agent.clone()],
            created_at: now,
            updated_at: now,
            processed_at: Some(now),
        };
        let t = Instant::now();
        k.svc.store.write(|tx| {
            tx.put(&doc)?;
            put_chunks(tx, &chunks, vectors.iter().map(|v| Some(v.as_slice())))
        })?;
        rep.store += t.elapsed();
        let t = Instant::now();
        let docs: Vec<TextDoc> = chunks
            .iter()
            .map(|c| TextDoc {
                tenant: tenant.clone(),
                document: doc_id.clone(),
                chunk: c.id.clone(),
                agents: vec![agent.clone()],
                text: c.text.clone(),
                headings: c.headings.clone(),
            })
            .collect();
        k.text.add(&docs)?;
        rep.text_index += t.elapsed();
        let t = Instant::now();
        let vectors = vectors.into_iter().map(Some).collect();
        index_vectors(&space.index, tenant, &doc_id, &chunks, vectors)?;
        rep.vector_index += t.elapsed();
        rep.chunks += chunks.len();
        doc_ids.push(doc_id);
        if d + 1 == o.docs / 2 {
            checkpoint("after seeding half the chunks");
        }
        if (d + 1).is_multiple_of(50) {
            eprintln!(
                "  seeded {} documents ({} chunks) in {:.1} s",
                d + 1,
                rep.chunks,
                started.elapsed().as_secs_f64()
            );
        }
    }
    rep.total = started.elapsed();
    Ok((doc_ids, rep))
}
