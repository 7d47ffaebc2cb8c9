//! Shared by `beir_eval` and `guard_eval` (included with `#[path]`; not an example of its own): the product
//! on a temporary data directory with an ONNX embedding model, one registered tenant, and a
//! BEIR corpus seeded into it the way the ingestion pipeline writes chunks (one document of
//! one chunk per passage, heading = the passage's title, the vector of the pipeline's
//! [`embed_text`]), so searches go through `Knowledge::search` exactly as the API's do.
//!
//! Vectors come from a cache file keyed by the embedded text (so one file serves every data
//! set embedded with one model, and a corpus built from other corpora costs nothing new);
//! what the cache lacks is embedded with the product's embedder and added to it.

use super::beir::Doc;
use aigentable::auth::Caller;
use aigentable::config::Config;
use aigentable::domain::ClientMeta;
use aigentable::domain::auth::RegisterInput;
use aigentable::index::TextDoc;
use aigentable::knowledge::Knowledge;
use aigentable::knowledge::pipeline::embed_text;
use aigentable::model::{Chunk, Document, DocumentStatus};
use aigentable::types::{ChunkId, DocumentId, SessionId};
use anyhow::{Result, anyhow};
use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Cache: u64 count, u64 dims, then per item (u32 key len, key, dims x f32 LE).
pub fn load_cache(path: &Path) -> HashMap<String, Vec<f32>> {
    let mut bytes = Vec::new();
    if std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .is_err()
    {
        return HashMap::new();
    }
    let mut pos = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(pos..pos + n)?;
        pos += n;
        Some(s)
    };
    let mut out = HashMap::new();
    let word = |b: Option<&[u8]>| b.and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let (Some(n), Some(dims)) = (word(take(8)), word(take(8))) else {
        return out;
    };
    for _ in 0..n {
        let Some(len) = take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
        else {
            break;
        };
        let Some(key) = take(len as usize).map(|b| String::from_utf8_lossy(b).into_owned()) else {
            break;
        };
        let Some(v) = take(dims as usize * 4) else {
            break;
        };
        let v = v
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(key, v);
    }
    out
}

/// Writes the cache (atomically: a temporary file renamed over it).
pub fn save_cache(path: &Path, items: &HashMap<String, Vec<f32>>) -> Result<()> {
    let dims = items.values().next().map_or(0, Vec::len);
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
    w.write_all(&(items.len() as u64).to_le_bytes())?;
    w.write_all(&(dims as u64).to_le_bytes())?;
    for (k, v) in items {
        w.write_all(&(k.len() as u32).to_le_bytes())?;
        w.write_all(k.as_bytes())?;
        for x in v {
            w.write_all(&x.to_le_bytes())?;
        }
    }
    w.flush()?;
    drop(w);
    std::fs::rename(tmp, path)?;
    Ok(())
}

/// The product with one seeded tenant.
pub struct Seeded {
    pub knowledge: std::sync::Arc<Knowledge>,
    pub caller: Caller,
    /// Document -> corpus passage id.
    pub passage_of: HashMap<DocumentId, String>,
    /// The tenant's embedding model id.
    pub model_id: String,
    /// Passages embedded now (not from the cache), and the seconds that took.
    pub embedded: usize,
    pub embed_secs: f64,
    /// Seconds to write the passages into the store and both indexes.
    pub seed_secs: f64,
    _app: aigentable::App,
    _dir: tempfile::TempDir,
}

/// Builds the app with the model and seeds `corpus` into a new tenant; `cache` holds
/// vectors by embedded text (see the module header).
#[allow(dead_code)]
pub async fn seed(model_dir: &Path, ort: &Path, cache: &Path, corpus: &[Doc]) -> Result<Seeded> {
    seed_with(model_dir, ort, cache, corpus, |_| {}).await
}

/// [`seed`] with the configuration adjusted by `tweak` before the app is built.
#[allow(dead_code)]
pub async fn seed_with(
    model_dir: &Path,
    ort: &Path,
    cache: &Path,
    corpus: &[Doc],
    tweak: impl FnOnce(&mut Config),
) -> Result<Seeded> {
    let dir = tempfile::tempdir()?;
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        embeddings_provider: Some("onnx".into()),
        embeddings_model_dir: Some(model_dir.to_path_buf()),
        ort_dylib_path: Some(ort.to_path_buf()),
        job_workers: 1,
        log_level: "warn".into(),
        ..Config::default()
    };
    tweak(&mut config);
    let app = aigentable::build(config).await?;
    let k = app.state.knowledge.clone();
    let svc = k.svc.clone();
    let signed = tokio::task::spawn_blocking(move || {
        svc.register(
            RegisterInput {
                email: "eval@example.com".into(),
                password: "eval-password-123".into(),
                name: "Eval".into(),
                tenant_name: "Eval".into(),
            },
            &ClientMeta {
                ip: None,
                user_agent: None,
            },
        )
    })
    .await?
    .map_err(|e| anyhow!("register: {e}"))?;
    let caller = Caller::staff_session(&signed.user, SessionId::new());
    let tenant = signed.user.tenant_id.clone();
    let space = k
        .space_for(&tenant)?
        .ok_or_else(|| anyhow!("no embedding model loaded"))?;
    let model_id = space.model_id().to_string();

    // Vectors: what the pipeline embeds for each passage's chunk.
    let headings = |p: &Doc| -> Vec<String> {
        if p.title.is_empty() {
            Vec::new()
        } else {
            vec![p.title.clone()]
        }
    };
    let mut vecs = load_cache(cache);
    let mut todo: Vec<String> = corpus
        .iter()
        .map(|p| embed_text(&headings(p), &p.text))
        .filter(|t| !vecs.contains_key(t))
        .collect();
    todo.sort();
    todo.dedup();
    let t0 = Instant::now();
    if !todo.is_empty() {
        let space = Arc::clone(&space);
        let texts = todo.clone();
        let out = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<f32>>> {
            let mut out = Vec::with_capacity(texts.len());
            for (i, batch) in texts.chunks(64).enumerate() {
                out.extend(space.embedder.embed(batch)?);
                if i % 10 == 0 {
                    eprint!("\rembedding: {}/{}", out.len(), texts.len());
                }
            }
            Ok(out)
        })
        .await??;
        eprintln!();
        for (t, v) in todo.iter().zip(out) {
            vecs.insert(t.clone(), v);
        }
        save_cache(cache, &vecs)?;
    }
    let embed_secs = t0.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let mut passage_of = HashMap::new();
    for batch in corpus.chunks(500) {
        let now = time::OffsetDateTime::now_utc();
        let mut records = Vec::new();
        for p in batch {
            let doc_id = DocumentId::new();
            passage_of.insert(doc_id.clone(), p.id.clone());
            let v = vecs
                .get(&embed_text(&headings(p), &p.text))
                .cloned()
                .ok_or_else(|| anyhow!("no vector for {}", p.id))?;
            let chunk = Chunk {
                id: ChunkId::new(),
                tenant_id: tenant.clone(),
                document_id: doc_id.clone(),
                ordinal: 0,
                token_count: (p.text.split_whitespace().count() * 4 / 3) as u32,
                text: p.text.clone(),
                page: None,
                headings: headings(p),
                embedding_model: Some(model_id.clone()),
            };
            let doc = Document {
                id: doc_id.clone(),
                tenant_id: tenant.clone(),
                name: format!("{}.txt", p.id),
                mime_type: "text/plain".into(),
                size_bytes: p.text.len() as u64,
                sha256: format!("{:064x}", crc32fast::hash(p.id.as_bytes())),
                status: DocumentStatus::Ready,
                progress: 100,
                error: None,
                pages: None,
                chunk_count: 1,
                title: (!p.title.is_empty()).then(|| p.title.clone()),
                author: None,
                agent_ids: vec![],
                created_at: now,
                updated_at: now,
                processed_at: Some(now),
            };
            records.push((doc, chunk, v));
        }
        let k2 = k.clone();
        let tenant2 = tenant.clone();
        let space2 = Arc::clone(&space);
        tokio::task::spawn_blocking(move || -> Result<()> {
            k2.svc.store.write(|tx| {
                for (d, c, v) in &records {
                    tx.put(d)?;
                    tx.put(c)?;
                    tx.put_vector(c, v)?;
                }
                Ok::<_, aigentable::store::Error>(())
            })?;
            let docs: Vec<TextDoc> = records
                .iter()
                .map(|(_, c, _)| TextDoc {
                    tenant: tenant2.clone(),
                    document: c.document_id.clone(),
                    chunk: c.id.clone(),
                    agents: vec![],
                    text: c.text.clone(),
                    headings: c.headings.clone(),
                })
                .collect();
            k2.text.add(&docs)?;
            let items: Vec<_> = records
                .into_iter()
                .map(|(_, c, v)| (c.id, c.document_id, v))
                .collect();
            space2.index.insert(&tenant2, &items)?;
            Ok(())
        })
        .await??;
    }
    let seed_secs = t0.elapsed().as_secs_f64();
    Ok(Seeded {
        knowledge: k,
        caller,
        passage_of,
        model_id,
        embedded: todo.len(),
        embed_secs,
        seed_secs,
        _app: app,
        _dir: dir,
    })
}

/// The default cache file of a model folder: one per model, shared by every data set.
pub fn default_cache(model_dir: &Path) -> PathBuf {
    let name = model_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    PathBuf::from(format!("/tmp/aig-eval-{name}.vec"))
}
