//! The knowledge base: uploads stored content-addressed, the ingestion pipeline (parse ->
//! chunk -> embed -> store -> index) run as durable jobs, document deletion, and hybrid
//! search (BM25 + vectors, fused). Owns the indexes and the embedders; the store stays the
//! source of truth (chunks keep their vectors), so every index can be rebuilt from it.

pub mod pipeline;
pub mod search;
pub mod settings;

use crate::domain::Services;
use crate::embed::{self, Embedder};
use crate::index::{TextIndex, VectorIndex};
use crate::ingest::{self, Chunker};
use crate::jobs::Jobs;
use crate::model::{Chunk, Tenant, TenantSettings};
use crate::types::TenantId;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use search::{SearchHit, SearchMode, SearchQuery, SearchResult};

pub const JOB_PROCESS: &str = "document.process";
pub const JOB_REEMBED: &str = "knowledge.reembed";
pub const JOB_TRAIN: &str = "agent.train";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's mistake or missing permission, as the domain words it.
    #[error(transparent)]
    Domain(#[from] crate::domain::Error),
    #[error(transparent)]
    Embed(#[from] embed::Error),
    #[error(transparent)]
    Index(#[from] crate::index::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Ingest(#[from] ingest::Error),
    #[error("{0}")]
    Io(String),
}

/// An embedding model with its vector index.
pub struct Space {
    pub embedder: Arc<dyn Embedder>,
    pub index: VectorIndex,
    pub description: String,
}

impl Space {
    pub fn model_id(&self) -> &str {
        self.embedder.model_id()
    }
}

pub struct Knowledge {
    pub svc: Arc<Services>,
    pub text: TextIndex,
    /// The server-wide embedding model, when one is configured or found.
    global: Option<Arc<Space>>,
    global_description: String,
    /// Spaces of tenants that override the embedding settings, by settings key.
    overrides: Mutex<HashMap<String, Arc<Space>>>,
    pub chunker: Chunker,
    pub limits: ingest::Limits,
    pub jobs: Arc<Jobs>,
    index_dir: PathBuf,
}

/// A directory-safe name for a model id.
fn dir_name(model_id: &str) -> String {
    model_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect()
}

impl Knowledge {
    /// Opens indexes and models. Blocking. Fails (with a message naming the path) when an
    /// explicitly configured model or runtime cannot be loaded.
    pub fn open(
        svc: Arc<Services>,
        jobs: Arc<Jobs>,
        settings: &embed::Settings,
    ) -> Result<Self, Error> {
        let cfg = svc.config.clone();
        let index_dir = cfg.data_dir.join("index");
        std::fs::create_dir_all(&index_dir)
            .map_err(|e| Error::Io(format!("cannot create {}: {e}", index_dir.display())))?;
        let text = TextIndex::open(&index_dir.join("text"))?;
        let resolved = embed::resolve(settings, &cfg.data_dir)?;
        let global_description = resolved.description.clone();
        let global = match resolved.embedder {
            Some(e) => Some(Arc::new(Self::space(&index_dir, e, resolved.description)?)),
            None => None,
        };
        // The chunker counts tokens like the local model when there is one.
        let tokenizer = settings
            .model_dir
            .clone()
            .or_else(|| {
                let d = cfg.data_dir.join("models/default");
                d.exists().then_some(d)
            })
            .map(|d| d.join("tokenizer.json"))
            .filter(|p| p.exists());
        let chunker = match tokenizer {
            Some(p) => Chunker::from_tokenizer_file(&p)?,
            None => Chunker::approximate(),
        };
        let limits = ingest::Limits {
            max_bytes: cfg.upload_max_bytes,
            max_pages: cfg.ingest_max_pages,
            ..ingest::Limits::default()
        };
        Ok(Knowledge {
            svc,
            text,
            global,
            global_description,
            overrides: Mutex::new(HashMap::new()),
            chunker,
            limits,
            jobs,
            index_dir,
        })
    }

    fn space(
        index_dir: &std::path::Path,
        e: Arc<dyn Embedder>,
        description: String,
    ) -> Result<Space, Error> {
        let mut dims = e.dimensions();
        if dims == 0 {
            // A remote model whose size is unknown until the first call.
            dims = e.embed_query("dimension probe")?.len();
        }
        let dir = index_dir.join("vectors").join(dir_name(e.model_id()));
        let index = VectorIndex::open(&dir, dims, e.model_id())?;
        Ok(Space {
            embedder: e,
            index,
            description,
        })
    }

    /// What GET /api/health says about embeddings.
    pub fn embeddings_description(&self) -> &str {
        &self.global_description
    }

    /// The global model's id and dimensions, without file paths (for the public health).
    pub fn global_model(&self) -> Option<(&str, usize)> {
        self.global
            .as_ref()
            .map(|s| (s.embedder.model_id(), s.embedder.dimensions()))
    }

    pub fn has_global_embedder(&self) -> bool {
        self.global.is_some()
    }

    /// The embedding space of a tenant: its override, else the global one.
    pub fn space_for(&self, tenant: &TenantId) -> Result<Option<Arc<Space>>, Error> {
        let settings = self
            .svc
            .tenant_settings(tenant)
            .map_err(|e| Error::Io(e.to_string()))?;
        let Some(over) = tenant_embed_settings(&settings, &self.svc) else {
            return Ok(self.global.clone());
        };
        if over.provider == Some(embed::Provider::None) {
            return Ok(None);
        }
        let key = serde_json::to_string(&over).unwrap_or_default()
            + over.api_key.as_deref().unwrap_or("");
        if let Some(s) = self
            .overrides
            .lock()
            .map_err(|_| Error::Io("poisoned".into()))?
            .get(&key)
        {
            return Ok(Some(s.clone()));
        }
        let resolved = embed::resolve(&over, &self.svc.config.data_dir)?;
        let Some(e) = resolved.embedder else {
            return Ok(None);
        };
        let space = Arc::new(Self::space(&self.index_dir, e, resolved.description)?);
        self.overrides
            .lock()
            .map_err(|_| Error::Io("poisoned".into()))?
            .insert(key, space.clone());
        Ok(Some(space))
    }

    /// Directory of a tenant's original files.
    pub(super) fn files_dir(&self, tenant: &TenantId) -> PathBuf {
        self.svc.tenant_dir(tenant).join("files")
    }

    /// Startup: rebuild missing or corrupt indexes from the store, and queue re-embedding
    /// for tenants whose vectors come from another model. Blocking.
    pub fn recover(&self) -> Result<(), Error> {
        let tenants = self.all_tenants()?;
        if self.text.needs_rebuild() {
            tracing::warn!("text index missing or damaged: rebuilding it from the store");
            for t in &tenants {
                self.reindex_text(t)?;
            }
        }
        for t in &tenants {
            let Some(space) = self.space_for(t)? else {
                continue;
            };
            let sample = self
                .svc
                .store
                .read(|tx| tx.list::<Chunk>(t, None, None, 1, false))?;
            let mismatched = sample
                .items
                .first()
                .is_some_and(|c| c.embedding_model.as_deref() != Some(space.model_id()));
            if mismatched {
                self.queue_reembed(t)?;
            } else if space.index.needs_rebuild(t) {
                tracing::warn!(tenant = %t, "vector index missing or damaged: rebuilding it from the store");
                self.reindex_vectors(t, &space)?;
            }
        }
        Ok(())
    }

    fn all_tenants(&self) -> Result<Vec<TenantId>, Error> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .svc
                .store
                .read(|tx| tx.tenants(after.as_deref(), 500))?;
            out.extend(page.items.iter().map(|t: &Tenant| t.id.clone()));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        Ok(out)
    }

    /// Rebuilds every index of every tenant from the store (`aigentable reindex`).
    pub fn reindex_all(&self) -> Result<usize, Error> {
        self.text.clear()?;
        let tenants = self.all_tenants()?;
        for t in &tenants {
            self.reindex_text(t)?;
            if let Some(space) = self.space_for(t)? {
                self.reindex_vectors(t, &space)?;
            }
        }
        Ok(tenants.len())
    }

    fn reindex_text(&self, t: &TenantId) -> Result<(), Error> {
        self.text.delete_tenant(t)?;
        let docs = self
            .svc
            .store
            .read(|tx| tx.scan::<crate::model::Document>(t, None, |_| true))?;
        for d in docs {
            let chunks = self
                .svc
                .store
                .read(|tx| tx.scan::<Chunk>(t, Some(d.id.as_str()), |_| true))?;
            let batch: Vec<_> = chunks
                .iter()
                .map(|c| pipeline::text_doc(c, &d.agent_ids))
                .collect();
            self.text.add(&batch)?;
        }
        Ok(())
    }

    fn reindex_vectors(&self, t: &TenantId, space: &Space) -> Result<(), Error> {
        let chunks = self
            .svc
            .store
            .read(|tx| tx.scan::<Chunk>(t, None, |_| true))?;
        let model = space.model_id().to_string();
        space.index.rebuild_tenant(
            t,
            chunks.into_iter().filter_map(|c| {
                let v = c.vector?;
                (c.embedding_model.as_deref() == Some(model.as_str())).then_some((
                    c.id,
                    c.document_id,
                    v,
                ))
            }),
        )?;
        Ok(())
    }

    /// Queues a background re-embedding of a tenant's chunks with its current model.
    pub(super) fn queue_reembed(&self, t: &TenantId) -> Result<(), Error> {
        let job = self
            .svc
            .store
            .write(|tx| Jobs::enqueue_in(tx, t, JOB_REEMBED, serde_json::json!({})))?;
        self.jobs.wake(&job);
        Ok(())
    }

    /// Drops every index entry of a tenant (the tenant is being deleted, by the domain's
    /// `delete_tenant` through [`crate::domain::TenantIndexes`]).
    fn forget_tenant(&self, t: &TenantId) -> Result<(), Error> {
        self.text.delete_tenant(t)?;
        if let Some(g) = &self.global {
            g.index.delete_tenant(t)?;
        }
        if let Ok(map) = self.overrides.lock() {
            for s in map.values() {
                s.index.delete_tenant(t)?;
            }
        }
        Ok(())
    }

    /// Writes dirty vector indexes to disk (periodically and at shutdown).
    pub fn persist(&self) {
        let mut spaces: Vec<Arc<Space>> = self.global.iter().cloned().collect();
        if let Ok(map) = self.overrides.lock() {
            spaces.extend(map.values().cloned());
        }
        for s in spaces {
            if let Err(e) = s.index.persist() {
                tracing::error!(error = %e, "persisting a vector index failed");
            }
        }
    }
}

/// A tenant's embedding override, with its API key opened.
fn tenant_embed_settings(s: &TenantSettings, svc: &Services) -> Option<embed::Settings> {
    let v = s.embeddings.as_ref()?.as_object()?;
    // The server's settings are the base (runtime path, lengths); the tenant's keys win.
    let global = svc.config.embed_settings();
    let mut base = serde_json::to_value(&global).ok()?;
    let obj = base.as_object_mut()?;
    for (k, val) in v {
        if k != "apiKeySealed" {
            obj.insert(k.clone(), val.clone());
        }
    }
    let mut set: embed::Settings = serde_json::from_value(base).ok()?;
    set.api_key = match v.get("apiKeySealed").and_then(|k| k.as_str()) {
        Some(sealed) => svc.sealer.open(sealed),
        None if set.provider == global.provider && set.base_url == global.base_url => {
            global.api_key
        }
        None => None,
    };
    // A URL the tenant chose is held to the tenant outbound policy; the operator's is trusted.
    if set.base_url != global.base_url {
        set.policy = svc.config.tenant_outbound();
    }
    Some(set)
}

impl crate::domain::TenantIndexes for Knowledge {
    fn forget_tenant(&self, tenant: &TenantId) -> Result<(), String> {
        Knowledge::forget_tenant(self, tenant).map_err(|e| e.to_string())
    }
}
