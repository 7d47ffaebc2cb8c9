//! The knowledge base: uploads stored content-addressed, the ingestion pipeline (parse ->
//! chunk -> embed -> store -> index) run as durable jobs, document deletion, and hybrid
//! search (BM25 + vectors, fused). Owns the indexes and the embedders; the store stays the
//! source of truth (chunks keep their vectors), so every index can be rebuilt from it.
//!
//! One tenant never stops the server: a tenant whose embedding model cannot be loaded or
//! whose endpoint answers nonsense has its vector search marked unavailable (an [`Outage`],
//! shown by health, the log and its settings page) while keyword search and every other
//! tenant carry on. A changed setting is tried at once; the same one again after
//! [`RETRY_UNAVAILABLE`].

pub mod guard;
pub mod pipeline;
pub mod search;
pub mod settings;

use crate::auth::Caller;
use crate::domain::Services;
use crate::embed::{self, Embedder};
use crate::index::{HnswParams, TextIndex, VectorIndex, VectorSource};
use crate::ingest::{self, Chunker};
use crate::jobs::Jobs;
use crate::model::{Chunk, EmbeddingSwitch, Tenant, TenantSettings};
use crate::types::{ChunkId, TenantId, Timestamp};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use utoipa::ToSchema;

pub use search::{SearchHit, SearchMode, SearchQuery, SearchResult};

pub const JOB_PROCESS: &str = "document.process";
pub const JOB_REEMBED: &str = "knowledge.reembed";
pub const JOB_TRAIN: &str = "agent.train";
/// Removes a deleted document's chunks from the indexes. Queued in the delete's own
/// transaction, so a crash or a full disk between the store's commit and the indexes' never
/// leaves them behind for good.
pub const JOB_UNINDEX: &str = "document.unindex";
/// Attempts of [`JOB_UNINDEX`] before it gives up (the last ~17 minutes after the first):
/// long enough for an operator to free a full disk.
pub const UNINDEX_ATTEMPTS: u32 = 10;

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
    /// The tenant's embedding model cannot be used now; keyword search still works.
    #[error("embeddings unavailable: {0}")]
    Unavailable(String),
}

/// How long a tenant's failing embedding setting is left alone before a use tries it again
/// (a changed setting is tried at once), so a dead endpoint costs one try a minute, not one
/// per search or upload.
pub const RETRY_UNAVAILABLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a tenant's vector search is unavailable.
#[derive(Clone, Debug)]
struct Outage {
    /// The settings it happened with; other settings are tried at once.
    key: String,
    reason: String,
    since: Timestamp,
    retry_at: Timestamp,
}

/// A tenant whose vector search is unavailable, as health shows it to platform admins.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VectorOutage {
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub since: Timestamp,
}

/// Whether a tenant's vector search works, as health and its settings page show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum VectorStatus {
    /// Hybrid and vector search work.
    Ok { model_id: String },
    /// No embedding model is configured: keyword search only, by choice.
    Off,
    /// The configured model cannot be used now: keyword search only until it can.
    Unavailable { reason: String },
}

/// A tenant's model change as loaded: the switch recorded in its settings and the old
/// space it names, or why that model cannot be loaded (then the tenant's searches are
/// keyword-only until re-embedding ends: the new model's index is still partial).
#[derive(Clone)]
struct Switch {
    record: EmbeddingSwitch,
    from: Result<Arc<Space>, Missing>,
}

/// Why the old model of a change cannot answer searches, and when loading it is tried again.
#[derive(Clone, Debug)]
struct Missing {
    reason: String,
    retry_at: Timestamp,
}

/// What answers a tenant's searches while it changes model.
pub(crate) enum Bridge {
    /// No change of model under way.
    None,
    /// The old model and its complete index.
    Old(Arc<Space>),
    /// A change is under way but its old model cannot be loaded: keyword search until it
    /// ends, for this reason.
    Missing(String),
}

/// A model the server used by default, recorded so that after the operator changes it the
/// previous one can be loaded again to answer searches while tenants are re-embedded.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerModel {
    model_id: String,
    settings: embed::Settings,
}

/// The server's models, newest first, in `<data>/index/`.
const SERVER_MODELS_FILE: &str = "server-models.json";
/// Server models remembered (each a few hundred bytes).
const SERVER_MODELS_KEPT: usize = 8;

/// How far a tenant's re-embedding has come: chunks with a vector of the new model, of all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
}

/// An embedding model with its vector index.
pub struct Space {
    pub embedder: Arc<dyn Embedder>,
    pub index: VectorIndex,
    pub description: String,
    /// The tenant settings it was made from (empty for the server's own model).
    key: String,
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
    /// The folder of the global model when it is local (discovery may have chosen it).
    global_model_dir: Option<std::path::PathBuf>,
    /// The global model's graph file (canonical), when it is local.
    global_graph: Option<PathBuf>,
    /// Earlier server models (not the current one), newest first: see [`ServerModel`].
    previous_server_models: Vec<ServerModel>,
    /// Spaces of tenants that override the embedding settings, by settings key.
    overrides: Mutex<HashMap<String, Arc<Space>>>,
    /// One lock per settings key while its space loads: two loads of one key would open the
    /// same index folder twice (startup recovery runs beside the first searches).
    loading: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Tenants whose vector search is unavailable, and why.
    outages: Mutex<HashMap<TenantId, Outage>>,
    /// Tenants changing model: the old space that answers their searches meanwhile, loaded
    /// from the switch recorded in their settings.
    switches: Mutex<HashMap<TenantId, Switch>>,
    /// Re-embedding progress of tenants, while it runs (or is queued).
    reembedding: Mutex<HashMap<TenantId, Progress>>,
    pub chunker: Chunker,
    pub limits: ingest::Limits,
    pub jobs: Arc<Jobs>,
    index_dir: PathBuf,
}

/// The folder of a model's vector index under the data directory's `index/`.
fn vector_dir(index_dir: &std::path::Path, model_id: &str) -> PathBuf {
    index_dir.join("vectors").join(dir_name(model_id))
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

/// The store's copy of the chunk vectors, which the vector indexes read back at open
/// instead of keeping a second copy in their dumps.
struct StoreVectors(Arc<crate::store::Store>);

impl VectorSource for StoreVectors {
    fn tenant_vectors(
        &self,
        tenant: &TenantId,
        each: &mut dyn FnMut(&ChunkId, &[u16]),
    ) -> Result<(), String> {
        self.0
            .read(|tx| {
                tx.for_each_vector_halves(tenant, |key, halves| {
                    // Keys are `<document>/<chunk>` (store::chunk_key).
                    if let Some(chunk) = key.rsplit('/').next().and_then(ChunkId::parse) {
                        each(&chunk, halves);
                    }
                })
            })
            .map_err(|e| e.to_string())
    }
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
        let global_model_dir = resolved.model_dir.clone();
        let global_graph = resolved.source.as_ref().and_then(|s| {
            let dir = std::fs::canonicalize(s.model_dir.as_ref()?).ok()?;
            Some(dir.join(s.onnx_file.as_ref()?))
        });
        let current = match (&resolved.embedder, &resolved.source) {
            (Some(e), Some(settings)) => Some(ServerModel {
                model_id: e.model_id().to_string(),
                settings: settings.clone(),
            }),
            _ => None,
        };
        let previous_server_models = record_server_model(&index_dir, current);
        let global = match resolved.embedder {
            Some(e) => Some(Arc::new(Self::space(
                &index_dir,
                &svc,
                e,
                resolved.description,
                String::new(),
            )?)),
            None => None,
        };
        // The chunker counts tokens like the local model when there is one.
        let tokenizer = global_model_dir
            .clone()
            .or_else(|| settings.model_dir.clone())
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
            global_model_dir,
            global_graph,
            previous_server_models,
            overrides: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            outages: Mutex::new(HashMap::new()),
            switches: Mutex::new(HashMap::new()),
            reembedding: Mutex::new(HashMap::new()),
            chunker,
            limits,
            jobs,
            index_dir,
        })
    }

    fn space(
        index_dir: &std::path::Path,
        svc: &Arc<Services>,
        e: Arc<dyn Embedder>,
        description: String,
        key: String,
    ) -> Result<Space, Error> {
        let mut dims = e.dimensions();
        if dims == 0 {
            // A remote model whose size is unknown until the first call.
            dims = e.embed_query("dimension probe")?.len();
        }
        let dir = vector_dir(index_dir, e.model_id());
        // The store keeps every chunk's vector: the index's dumps leave them to it.
        let source: Arc<dyn VectorSource> = Arc::new(StoreVectors(Arc::clone(&svc.store)));
        let index = VectorIndex::open_with_source(
            &dir,
            dims,
            e.model_id(),
            HnswParams::default(),
            Some(source),
        )?;
        Ok(Space {
            embedder: e,
            index,
            description,
            key,
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

    /// The local model folder of the global model, when it is one (GET /api/models).
    pub fn global_model_dir(&self) -> Option<&std::path::Path> {
        self.global_model_dir.as_deref()
    }

    /// The store's copy of the chunk vectors, as the vector indexes read it back at open:
    /// for a second [`VectorIndex`] opened on a model's index directory (benchmarks).
    pub fn vector_source(&self) -> Arc<dyn VectorSource> {
        Arc::new(StoreVectors(Arc::clone(&self.svc.store)))
    }

    /// The directory of a model's vector index (benchmarks open a second index on it).
    pub fn vector_index_dir(&self, model_id: &str) -> PathBuf {
        vector_dir(&self.index_dir, model_id)
    }

    pub fn has_global_embedder(&self) -> bool {
        self.global.is_some()
    }

    /// The embedding space of a tenant: its override, else the global one; `None` when the
    /// tenant has no embedding model (keyword search only). [`Error::Unavailable`] when its
    /// model cannot be used now (recorded as an outage, and not tried again with the same
    /// settings before [`RETRY_UNAVAILABLE`]). Blocking (may load a model or call an endpoint).
    pub fn space_for(&self, tenant: &TenantId) -> Result<Option<Arc<Space>>, Error> {
        let settings = self
            .svc
            .tenant_settings(tenant)
            .map_err(|e| Error::Io(e.to_string()))?;
        let over = tenant_embed_settings(&settings, &self.svc);
        let key = over.as_ref().map(settings_key).unwrap_or_default();
        let retrying = match self.outage_for(tenant, &key) {
            OutageCheck::None => false,
            OutageCheck::Wait(reason) => return Err(Error::Unavailable(reason)),
            OutageCheck::Retry => true,
        };
        let space = match &over {
            None => self.global.clone(),
            Some(over) => match self.override_space(over, &key, false) {
                Ok(space) => space,
                Err(e) => {
                    let reason = e.to_string();
                    self.mark_unavailable(tenant, &key, &reason);
                    return Err(Error::Unavailable(reason));
                }
            },
        };
        if retrying {
            // The same settings failed before: only a working call clears the outage.
            if let Some(space) = &space
                && let Err(reason) = probe(space)
            {
                self.mark_unavailable(tenant, &key, &reason);
                return Err(Error::Unavailable(reason));
            }
            self.clear_outage(tenant);
            if let Some(space) = &space
                && let Err(e) = self.recover_tenant(tenant, space, false)
            {
                tracing::error!(tenant = %tenant, error = %e, "restoring the vector index of a tenant failed");
            }
        }
        Ok(space)
    }

    /// The space that answers a tenant's searches: while a change of model is re-embedding
    /// the tenant's chunks, the old model's (its index still holds every chunk; the new one
    /// fills up meanwhile), else [`space_for`](Self::space_for). [`Error::Unavailable`] while
    /// a change runs whose old model cannot be loaded (keyword search until it ends: the new
    /// index is still partial). Blocking.
    pub fn search_space(&self, tenant: &TenantId) -> Result<Option<Arc<Space>>, Error> {
        match self.bridge(tenant)? {
            Bridge::Old(from) => Ok(Some(from)),
            Bridge::Missing(reason) => Err(Error::Unavailable(reason)),
            Bridge::None => self.space_for(tenant),
        }
    }

    /// The old model's space while a tenant's change of model re-embeds; `None` otherwise
    /// (or when the old model cannot be loaded: logged). Loads it after a restart.
    pub(crate) fn switch_from(&self, tenant: &TenantId) -> Result<Option<Arc<Space>>, Error> {
        Ok(match self.bridge(tenant)? {
            Bridge::Old(from) => Some(from),
            Bridge::None | Bridge::Missing(_) => None,
        })
    }

    /// What answers a tenant's searches while it changes model (loads the old model after a
    /// restart; one that could not be loaded is tried again after [`RETRY_UNAVAILABLE`]).
    pub(crate) fn bridge(&self, tenant: &TenantId) -> Result<Bridge, Error> {
        let settings = self
            .svc
            .tenant_settings(tenant)
            .map_err(|e| Error::Io(e.to_string()))?;
        let Some(record) = settings.embedding_switch else {
            lock(&self.switches).remove(tenant);
            return Ok(Bridge::None);
        };
        // Recorded before a change that did not happen (or was undone): nothing to bridge.
        // A tenant on the server's model bridges when the server's model is another now.
        let same_model = match &record.from {
            None => self.global_model().map(|(id, _)| id) == Some(record.from_model_id.as_str()),
            Some(_) => true,
        };
        if record.from == settings.embeddings && same_model {
            return Ok(Bridge::None);
        }
        let now = self.svc.clock.now();
        if let Some(sw) = lock(&self.switches).get(tenant)
            && sw.record == record
        {
            match &sw.from {
                Ok(from) => return Ok(Bridge::Old(from.clone())),
                Err(m) if now < m.retry_at => return Ok(Bridge::Missing(m.reason.clone())),
                Err(_) => {}
            }
        }
        let from = self
            .load_switch_from(tenant, &record)
            .map_err(|reason| Missing {
                reason,
                retry_at: now + RETRY_UNAVAILABLE,
            });
        let bridge = match &from {
            Ok(s) => {
                // Re-embedding overwrites the store's copy of these vectors while the old
                // index still answers: from now on its dumps must hold them itself. A dump
                // that fails now is retried by the next persist; searches go on meanwhile.
                if let Err(e) = s.index.keep_own_vectors(tenant) {
                    tracing::warn!(tenant = %tenant, error = %e, "saving the previous model's vectors of a tenant failed; the next save of its index retries");
                }
                Bridge::Old(s.clone())
            }
            Err(m) => Bridge::Missing(m.reason.clone()),
        };
        lock(&self.switches).insert(tenant.clone(), Switch { record, from });
        Ok(bridge)
    }

    /// The space a recorded switch names, checked to be the model it was made with; `Err`
    /// says (and has logged) why it cannot be used.
    fn load_switch_from(
        &self,
        tenant: &TenantId,
        record: &EmbeddingSwitch,
    ) -> Result<Arc<Space>, String> {
        let model = &record.from_model_id;
        let loaded = match &record.from {
            None => match &self.global {
                Some(g) if g.model_id() == model => Ok(Some(g.clone())),
                // The operator changed the server's model since: load the previous one.
                _ => self.previous_server_space(model).map(Some),
            },
            Some(v) => {
                let candidate = TenantSettings {
                    tenant_id: tenant.clone(),
                    embeddings: Some(v.clone()),
                    ..TenantSettings::default()
                };
                match tenant_embed_settings(&candidate, &self.svc) {
                    Some(over) => self
                        .override_space(&over, &settings_key(&over), false)
                        .map_err(|e| e.to_string()),
                    None => Ok(None),
                }
            }
        };
        let follows_server = self
            .svc
            .tenant_settings(tenant)
            .is_ok_and(|s| s.embeddings.is_none());
        let to = match self.global_model() {
            Some((id, _)) if follows_server => id.to_string(),
            _ => "the new model".into(),
        };
        let space = match loaded {
            Ok(Some(s)) if s.model_id() == model => s,
            Ok(other) => {
                let reason = format!(
                    "the previous embedding model {model} is gone ({}); keyword search until re-embedding with {to} ends",
                    match other {
                        Some(s) => format!("its settings now load {}", s.model_id()),
                        None => "its settings load no model".into(),
                    }
                );
                tracing::warn!(tenant = %tenant, model = %model, "{reason}");
                return Err(reason);
            }
            Err(e) => {
                let reason = format!(
                    "the previous embedding model {model} cannot be loaded: {e}; keyword search until re-embedding with {to} ends"
                );
                tracing::warn!(tenant = %tenant, model = %model, "{reason}");
                return Err(reason);
            }
        };
        if space.index.needs_rebuild(tenant) {
            // Lost in a crash: the store still has the old vectors of chunks not yet
            // re-embedded; the others are found by keywords until the switch ends.
            tracing::warn!(tenant = %tenant, "the old model's vector index of a tenant changing model was damaged: rebuilt from the vectors the store still holds");
            if let Err(e) = self.reindex_vectors(tenant, &space) {
                tracing::error!(tenant = %tenant, error = %e, "rebuilding the old model's vector index failed");
            }
        }
        Ok(space)
    }

    /// A model the server used by default before, loaded again (once; cached like a tenant
    /// override under `server:<model id>`) from the settings recorded when it was the
    /// server's, else from any installed model folder that holds it (`<data>/models`, the
    /// bundle's, the current model's neighbours). `Err` says where it looked. Blocking.
    fn previous_server_space(&self, model_id: &str) -> Result<Arc<Space>, String> {
        let key = format!("server:{model_id}");
        if let Some(s) = lock(&self.overrides).get(&key).cloned() {
            return Ok(s);
        }
        let gate = lock(&self.loading).entry(key.clone()).or_default().clone();
        let _loading = lock(&gate);
        if let Some(s) = lock(&self.overrides).get(&key).cloned() {
            return Ok(s);
        }
        let data_dir = &self.svc.config.data_dir;
        let mut why = Vec::new();
        let mut found = None;
        for m in self
            .previous_server_models
            .iter()
            .filter(|m| m.model_id == model_id)
        {
            let graph = m.settings.model_dir.as_ref().and_then(|d| {
                Some(
                    std::fs::canonicalize(d)
                        .ok()?
                        .join(m.settings.onnx_file.as_ref()?),
                )
            });
            let at = m
                .settings
                .model_dir
                .as_ref()
                .map(|d| d.display().to_string())
                .or_else(|| m.settings.base_url.clone())
                .unwrap_or_default();
            if graph.is_some() && graph == self.global_graph {
                // The same files now hold the server's new model.
                why.push(format!("{at} now holds the server's current model"));
                continue;
            }
            // One ONNX Runtime per process: the one loaded now, whatever it was then.
            let settings = embed::Settings {
                ort_dylib_path: embed::ort_loaded_path()
                    .map(std::path::Path::to_path_buf)
                    .or_else(|| m.settings.ort_dylib_path.clone()),
                ..m.settings.clone()
            };
            // The key is never recorded: the server's own, when it is the same service.
            let global = self.svc.config.embed_settings();
            let settings = embed::Settings {
                api_key: (settings.provider == Some(embed::Provider::Openai)
                    && settings.base_url == global.base_url)
                    .then_some(global.api_key)
                    .flatten(),
                ..settings
            };
            match embed::resolve(&settings, data_dir) {
                Ok(r) if r.embedder.as_ref().map(|e| e.model_id()) == Some(model_id) => {
                    found = Some(r);
                    break;
                }
                Ok(r) => why.push(format!(
                    "{at} now holds {}",
                    r.embedder
                        .as_ref()
                        .map(|e| e.model_id())
                        .unwrap_or("no model")
                )),
                Err(e) => why.push(format!("{at}: {e}")),
            }
        }
        if found.is_none() {
            let mut roots: Vec<PathBuf> = embed::model_roots(data_dir, embed::exe_dir().as_deref())
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            // Folders beside the current one (EMBEDDINGS_MODEL_DIR=/opt/models/<name>).
            if let Some(parent) = self.global_model_dir.as_deref().and_then(|d| d.parent())
                && !roots.iter().any(|r| r == parent)
            {
                roots.push(parent.to_path_buf());
            }
            match embed::find_by_id(
                model_id,
                &self.svc.config.embed_settings(),
                data_dir,
                &roots,
                self.global_graph.as_deref(),
            ) {
                Ok(r) => found = Some(r),
                Err(e) => why.push(e),
            }
        }
        let Some(resolved) = found else {
            return Err(format!("not found: {}", why.join("; ")));
        };
        let e = resolved.embedder.ok_or("no model")?;
        let space = Self::space(
            &self.index_dir,
            &self.svc,
            e,
            resolved.description,
            key.clone(),
        )
        .map_err(|e| e.to_string())?;
        probe(&space)?;
        tracing::info!(model = %model_id, "loaded the server's previous embedding model: it answers searches of tenants not yet re-embedded");
        let space = Arc::new(space);
        lock(&self.overrides).insert(key, space.clone());
        Ok(space)
    }

    /// Records (or clears) a tenant's switch in its settings; nothing for a deleted tenant.
    fn set_switch(&self, t: &TenantId, record: Option<EmbeddingSwitch>) -> Result<(), Error> {
        self.svc.store.write(|tx| {
            let mut s = match tx.get::<TenantSettings>(t, "")? {
                Some(s) => s,
                None if record.is_none() => return Ok::<_, crate::store::Error>(()),
                None => TenantSettings {
                    tenant_id: t.clone(),
                    ..TenantSettings::default()
                },
            };
            if s.embedding_switch != record {
                s.embedding_switch = record.clone();
                tx.put(&s)?;
            }
            Ok(())
        })?;
        if record.is_none() {
            lock(&self.switches).remove(t);
        }
        Ok(())
    }

    /// Ends a tenant's switch once every chunk has a vector of `to` in its index, unless
    /// its settings changed since `started_with` (a newer change has its own re-embedding):
    /// searches move to `to` in one step, then the old space forgets the tenant (its files
    /// go; the model leaves memory when no tenant uses it any more).
    fn end_switch(
        &self,
        t: &TenantId,
        to: &Space,
        started_with: &Option<serde_json::Value>,
    ) -> Result<bool, Error> {
        let ended = self.svc.store.write(|tx| {
            let Some(mut s) = tx.get::<TenantSettings>(t, "")? else {
                return Ok::<_, crate::store::Error>(true);
            };
            if &s.embeddings != started_with {
                return Ok(false);
            }
            if s.embedding_switch.take().is_some() {
                tx.put(&s)?;
            }
            Ok(true)
        })?;
        if !ended {
            return Ok(false);
        }
        let old = lock(&self.switches).remove(t);
        lock(&self.reembedding).remove(t);
        let mut released = Vec::new();
        for space in self.spaces() {
            if space.model_id() != to.model_id() {
                space.index.delete_tenant(t)?;
                if !space.key.is_empty() {
                    released.push(space.key.clone());
                }
            }
        }
        if let Some(Switch { from: Ok(from), .. }) = old {
            tracing::info!(tenant = %t, from = %from.model_id(), to = %to.model_id(), "re-embedding done: searches use the new model");
        }
        self.release_unused(&released);
        Ok(true)
    }

    /// Drops cached override spaces that no tenant uses (now or as a switch's old model),
    /// so an old model leaves memory after the last tenant moved away from it.
    fn release_unused(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let Ok(tenants) = self.all_tenants() else {
            return;
        };
        let mut used = std::collections::HashSet::new();
        for t in &tenants {
            let Ok(s) = self.svc.tenant_settings(t) else {
                return;
            };
            if let Some(over) = tenant_embed_settings(&s, &self.svc) {
                used.insert(settings_key(&over));
            }
            if let Some(w) = &s.embedding_switch
                && w.from.is_none()
            {
                used.insert(format!("server:{}", w.from_model_id));
            }
            if let Some(Some(from)) = s.embedding_switch.map(|w| w.from) {
                let candidate = TenantSettings {
                    tenant_id: t.clone(),
                    embeddings: Some(from),
                    ..TenantSettings::default()
                };
                if let Some(over) = tenant_embed_settings(&candidate, &self.svc) {
                    used.insert(settings_key(&over));
                }
            }
        }
        let mut overrides = lock(&self.overrides);
        for k in keys {
            if !used.contains(k) {
                overrides.remove(k);
            }
        }
    }

    /// A tenant's re-embedding progress, while it runs or is queued.
    pub fn reembed_progress(&self, t: &TenantId) -> Option<Progress> {
        lock(&self.reembedding).get(t).copied()
    }

    fn set_progress(&self, t: &TenantId, p: Option<Progress>) {
        let mut map = lock(&self.reembedding);
        match p {
            Some(p) => {
                map.insert(t.clone(), p);
            }
            None => {
                map.remove(t);
            }
        }
    }

    /// Chunks of a tenant with a vector of `model`, and all its chunks. Blocking (reads
    /// every chunk record).
    fn count_embedded(&self, t: &TenantId, model: &str) -> Result<Progress, Error> {
        let mut p = Progress::default();
        self.svc.store.read(|tx| {
            tx.scan::<Chunk>(t, None, |c| {
                p.total += 1;
                if c.embedding_model.as_deref() == Some(model) {
                    p.done += 1;
                }
                false
            })
        })?;
        Ok(p)
    }

    /// A tenant override's space, from the cache or loaded (and tried once) now; `try_cached`
    /// tries a cached one too (before settings are saved: it may have stopped working).
    fn override_space(
        &self,
        over: &embed::Settings,
        key: &str,
        try_cached: bool,
    ) -> Result<Option<Arc<Space>>, Error> {
        if over.provider == Some(embed::Provider::None) {
            return Ok(None);
        }
        let cached = lock(&self.overrides).get(key).cloned();
        if let Some(s) = cached {
            if try_cached {
                probe(&s).map_err(Error::Unavailable)?;
            }
            return Ok(Some(s));
        }
        let gate = lock(&self.loading)
            .entry(key.to_string())
            .or_default()
            .clone();
        let _loading = lock(&gate);
        // Loaded by whoever held the gate before us.
        if let Some(s) = lock(&self.overrides).get(key).cloned() {
            return Ok(Some(s));
        }
        let resolved = embed::resolve(over, &self.svc.config.data_dir)?;
        let Some(e) = resolved.embedder else {
            return Ok(None);
        };
        let space = Self::space(
            &self.index_dir,
            &self.svc,
            e,
            resolved.description,
            key.to_string(),
        )?;
        // A model that loads but answers nonsense is no use: try it before keeping it.
        probe(&space).map_err(Error::Unavailable)?;
        let space = Arc::new(space);
        lock(&self.overrides).insert(key.to_string(), space.clone());
        Ok(Some(space))
    }

    fn outage_for(&self, tenant: &TenantId, key: &str) -> OutageCheck {
        let mut outages = lock(&self.outages);
        let Some(o) = outages.get(tenant) else {
            return OutageCheck::None;
        };
        if o.key != key {
            // The settings changed since: try the new ones as if nothing had failed.
            outages.remove(tenant);
            return OutageCheck::None;
        }
        if self.svc.clock.now() < o.retry_at {
            OutageCheck::Wait(o.reason.clone())
        } else {
            OutageCheck::Retry
        }
    }

    /// Records that a tenant's vector search failed (its model did not load, or a call to
    /// it failed) so that uses skip it until [`RETRY_UNAVAILABLE`] has passed.
    fn mark_unavailable(&self, tenant: &TenantId, key: &str, reason: &str) {
        let now = self.svc.clock.now();
        let retry_at = now + RETRY_UNAVAILABLE;
        let mut outages = lock(&self.outages);
        match outages.get_mut(tenant) {
            Some(o) if o.key == key => {
                o.reason = reason.to_string();
                o.retry_at = retry_at;
            }
            _ => {
                tracing::warn!(tenant = %tenant, reason = %reason, "vector search of this tenant is unavailable; its keyword search and other tenants are not affected");
                outages.insert(
                    tenant.clone(),
                    Outage {
                        key: key.to_string(),
                        reason: reason.to_string(),
                        since: now,
                        retry_at,
                    },
                );
            }
        }
    }

    /// A call to `space` failed for `tenant` (a search or an upload's embedding): vector
    /// search of the tenant is unavailable until the retry time or a settings change.
    pub(crate) fn embedding_failed(&self, tenant: &TenantId, space: &Space, e: &embed::Error) {
        self.mark_unavailable(tenant, &space.key, &e.to_string());
    }

    fn clear_outage(&self, tenant: &TenantId) {
        if lock(&self.outages).remove(tenant).is_some() {
            tracing::info!(tenant = %tenant, "vector search of this tenant works again");
        }
    }

    /// Whether the caller's tenant's vector search works now. Blocking (may load a model).
    pub fn vector_search_status(&self, caller: &Caller) -> Result<VectorStatus, Error> {
        self.vector_status(caller.tenant())
    }

    /// Whether a tenant's vector search works now. Blocking (may load a model).
    fn vector_status(&self, tenant: &TenantId) -> Result<VectorStatus, Error> {
        if let Bridge::Missing(reason) = self.bridge(tenant)? {
            return Ok(VectorStatus::Unavailable { reason });
        }
        Ok(match self.space_for(tenant) {
            Ok(Some(space)) => VectorStatus::Ok {
                model_id: space.model_id().to_string(),
            },
            Ok(None) => VectorStatus::Off,
            Err(Error::Unavailable(reason)) => VectorStatus::Unavailable { reason },
            Err(e) => return Err(e),
        })
    }

    /// Every tenant whose vector search is unavailable, oldest first: for platform admins
    /// (`None` for anyone else).
    pub fn vector_outages(&self, caller: &Caller) -> Option<Vec<VectorOutage>> {
        if !caller.is_platform_admin() {
            return None;
        }
        let mut out: Vec<VectorOutage> = lock(&self.outages)
            .iter()
            .map(|(t, o)| VectorOutage {
                tenant_id: t.clone(),
                reason: o.reason.clone(),
                since: o.since,
            })
            .collect();
        out.sort_by(|a, b| a.since.cmp(&b.since).then(a.tenant_id.cmp(&b.tenant_id)));
        Some(out)
    }

    /// Directory of a tenant's original files.
    pub(super) fn files_dir(&self, tenant: &TenantId) -> PathBuf {
        self.svc.tenant_dir(tenant).join("files")
    }

    /// Startup: rebuild missing or corrupt indexes from the store, and queue re-embedding
    /// for tenants whose vectors come from another model. Blocking. A tenant whose indexes
    /// cannot be restored (its embedding model does not load or answers nonsense) is logged
    /// and left keyword-only; it never stops the others or the server.
    ///
    /// Tenants with embedding settings of their own are restored on a background thread
    /// after the others: their model may be a remote endpoint that hangs until its timeout
    /// (and retries), and the port must not wait for it. Until then such a tenant's first
    /// search loads its model itself.
    pub fn recover(self: &Arc<Self>) -> Result<(), Error> {
        let tenants = self.all_tenants()?;
        if self.text.needs_rebuild() {
            tracing::warn!("text index missing or damaged: rebuilding it from the store");
            for t in &tenants {
                if let Err(e) = self.reindex_text(t) {
                    tracing::error!(tenant = %t, error = %e, "rebuilding the text index of a tenant failed; run `aigentable reindex`");
                }
            }
        }
        let (own, shared): (Vec<TenantId>, Vec<TenantId>) = tenants
            .into_iter()
            .partition(|t| self.has_own_embeddings(t));
        for t in &shared {
            self.recover_vectors(t, false);
        }
        if !own.is_empty() {
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("recover-tenants".into())
                .spawn(move || {
                    for t in &own {
                        me.recover_vectors(t, false);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the tenant recovery thread; tenants with their own embedding model recover at their first search");
            }
        }
        Ok(())
    }

    /// Whether a tenant has embedding settings of its own (not the server's model), or is
    /// changing model (its old model may be its own).
    fn has_own_embeddings(&self, t: &TenantId) -> bool {
        self.svc.tenant_settings(t).is_ok_and(|s| {
            s.embedding_switch.is_some() || tenant_embed_settings(&s, &self.svc).is_some()
        })
    }

    /// Restores one tenant's vectors at startup (`imported`: a tenant the vector index has
    /// never seen, built from the store whatever the index says); failures are logged (and
    /// recorded as an outage by [`space_for`](Self::space_for)), never returned.
    fn recover_vectors(&self, t: &TenantId, imported: bool) {
        let restored = match self.space_for(t) {
            Ok(Some(space)) => self.recover_tenant(t, &space, imported),
            Ok(None) => Ok(()),
            // Recorded and logged as an outage by space_for.
            Err(Error::Unavailable(_)) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = restored {
            tracing::error!(tenant = %t, error = %e, "restoring the vector index of a tenant failed");
        }
    }

    /// Brings a tenant's vectors in line with `space`: re-embedding queued when its chunks
    /// come from another model or a change of model had not finished (its old model is
    /// loaded to answer searches meanwhile), the index rebuilt from the store when it is
    /// missing or stale, or when `imported` (an index that already serves other tenants
    /// does not know it lacks one it never saw).
    fn recover_tenant(&self, t: &TenantId, space: &Space, imported: bool) -> Result<(), Error> {
        self.switch_from(t)?;
        // Present even when the old model no longer loads: the re-embedding must still end.
        let switching = lock(&self.switches).contains_key(t);
        if switching {
            if self.reembed_progress(t).is_none() {
                let p = self.count_embedded(t, space.model_id())?;
                self.set_progress(t, Some(p));
            }
            return self.queue_reembed(t);
        }
        let sample = self
            .svc
            .store
            .read(|tx| tx.list::<Chunk>(t, None, None, 1, false))?;
        let previous = sample
            .items
            .first()
            .map(|c| c.embedding_model.clone())
            .filter(|m| m.as_deref() != Some(space.model_id()));
        if let Some(previous) = previous {
            // The operator changed the server's model: a tenant on it bridges like a change
            // of its own, its searches answered by the previous model until re-embedded.
            let follows_server = space.key.is_empty()
                && self
                    .svc
                    .tenant_settings(t)
                    .is_ok_and(|s| s.embeddings.is_none() && s.embedding_switch.is_none());
            if let Some(from_model_id) = previous.filter(|_| follows_server) {
                tracing::info!(tenant = %t, from = %from_model_id, to = %space.model_id(), "the server's embedding model changed: re-embedding this tenant's chunks while the previous model answers its searches");
                self.set_switch(
                    t,
                    Some(EmbeddingSwitch {
                        from: None,
                        from_model_id,
                    }),
                )?;
                self.bridge(t)?;
                let p = self.count_embedded(t, space.model_id())?;
                self.set_progress(t, Some(p));
            }
            self.queue_reembed(t)?;
        } else if imported {
            self.reindex_vectors(t, space)?;
        } else if space.index.needs_rebuild(t) {
            tracing::warn!(tenant = %t, "vector index missing or damaged: rebuilding it from the store");
            self.reindex_vectors(t, space)?;
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
            // One tenant's unusable model leaves its vectors alone, not the others'.
            match self.space_for(t) {
                Ok(Some(space)) => self.reindex_vectors(t, &space)?,
                Ok(None) => {}
                Err(Error::Unavailable(reason)) => {
                    tracing::error!(tenant = %t, reason = %reason, "vector index of a tenant not rebuilt: its embedding model is unavailable");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(tenants.len())
    }

    /// Builds a tenant's indexes from the store (a tenant just imported). Blocking.
    pub fn index_tenant(&self, t: &TenantId) -> Result<(), Error> {
        self.reindex_text(t)?;
        self.recover_vectors(t, true);
        Ok(())
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
        let model = space.model_id();
        // One snapshot: the ids of the chunks embedded by this model, then their vectors
        // (only ids are gathered from the records: their text is not needed here).
        let items = self.svc.store.read(|tx| {
            let mut ours = HashMap::new();
            tx.scan::<Chunk>(t, None, |c| {
                if c.embedding_model.as_deref() == Some(model) {
                    ours.insert(
                        crate::store::chunk_key(&c.document_id, &c.id),
                        (c.id.clone(), c.document_id.clone()),
                    );
                }
                false
            })?;
            let mut items = Vec::with_capacity(ours.len());
            tx.for_each_vector(t, |key, v| {
                if let Some((c, d)) = ours.remove(key) {
                    items.push((c, d, v));
                }
                Ok(())
            })?;
            Ok(items)
        })?;
        space.index.rebuild_tenant(t, items.into_iter())?;
        Ok(())
    }

    /// Queues a background re-embedding of a tenant's chunks with its current model. One
    /// runs at a time per tenant: a later one finds the earlier one's work done.
    pub(super) fn queue_reembed(&self, t: &TenantId) -> Result<(), Error> {
        let job = self.svc.store.write(|tx| {
            Jobs::enqueue_serial_in(
                tx,
                t,
                JOB_REEMBED,
                serde_json::json!({}),
                Some(format!("{JOB_REEMBED}/{t}")),
            )
        })?;
        self.jobs.wake(&job);
        Ok(())
    }

    /// Drops every index entry of a tenant (the tenant is being deleted, by the domain's
    /// `delete_tenant` through [`crate::domain::TenantIndexes`]).
    fn forget_tenant(&self, t: &TenantId) -> Result<(), Error> {
        lock(&self.outages).remove(t);
        lock(&self.switches).remove(t);
        lock(&self.reembedding).remove(t);
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

    /// Every loaded space: the server's and the tenant overrides in use.
    fn spaces(&self) -> Vec<Arc<Space>> {
        let mut spaces: Vec<Arc<Space>> = self.global.iter().cloned().collect();
        spaces.extend(lock(&self.overrides).values().cloned());
        spaces
    }

    /// Writes dirty vector indexes to disk (periodically and at shutdown).
    pub fn persist(&self) {
        for s in self.spaces() {
            if let Err(e) = s.index.persist() {
                tracing::error!(error = %e, "persisting a vector index failed");
            }
        }
    }
}

/// Records the server's current model (`None`: keyword only) at the head of
/// `<index>/server-models.json` and returns the earlier ones, newest first. A file that
/// cannot be read or written costs only the bridge of a later change of the server's model
/// (logged); it never stops the server.
fn record_server_model(
    index_dir: &std::path::Path,
    current: Option<ServerModel>,
) -> Vec<ServerModel> {
    let path = index_dir.join(SERVER_MODELS_FILE);
    let mut models: Vec<ServerModel> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "the record of earlier server embedding models does not parse; starting a new one");
            Vec::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the record of earlier server embedding models");
            Vec::new()
        }
    };
    let Some(current) = current else {
        return models;
    };
    models.retain(|m| m.model_id != current.model_id);
    let previous = models.clone();
    models.insert(0, current);
    models.truncate(SERVER_MODELS_KEPT);
    let tmp = path.with_extension("json.tmp");
    let written = serde_json::to_vec_pretty(&models)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot record the server's embedding model; a later change of it will not find this one by its settings");
    }
    previous
}

enum OutageCheck {
    None,
    /// Still failing: not tried again before the retry time.
    Wait(String),
    /// The retry time has passed: try the same settings again.
    Retry,
}

/// One embedding call, to learn that a space's model answers with vectors of its index's
/// width (a model that loads is not yet one that works).
fn probe(space: &Space) -> Result<(), String> {
    let v = space
        .embedder
        .embed_query("dimension probe")
        .map_err(|e| e.to_string())?;
    if v.len() != space.index.dims() {
        return Err(format!(
            "{} returned {}-dimensional vectors, expected {}",
            space.model_id(),
            v.len(),
            space.index.dims()
        ));
    }
    Ok(())
}

/// The cache key of a tenant override: the settings, key included (a new key is new settings).
fn settings_key(over: &embed::Settings) -> String {
    serde_json::to_string(over).unwrap_or_default() + over.api_key.as_deref().unwrap_or("")
}

/// Locks ignoring poison: the maps hold plain values that a panicking holder cannot leave
/// half-written.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn model(id: &str, dir: &str) -> ServerModel {
        ServerModel {
            model_id: id.into(),
            settings: embed::Settings {
                provider: Some(embed::Provider::Onnx),
                model_dir: Some(dir.into()),
                onnx_file: Some("onnx/model.onnx".into()),
                api_key: Some("sk-never-written".into()),
                ..embed::Settings::default()
            },
        }
    }

    #[test]
    fn server_models_are_recorded_newest_first_without_keys() {
        let dir = tempfile::tempdir().unwrap();
        // The first start knows no earlier model; keyword-only starts record nothing.
        assert!(record_server_model(dir.path(), Some(model("onnx:a:fp32:1", "/m/a"))).is_empty());
        let earlier = record_server_model(dir.path(), None);
        assert_eq!(earlier.len(), 1);
        // A change: the earlier model is returned with the settings that load it again.
        let earlier = record_server_model(dir.path(), Some(model("onnx:b:int8:2", "/m/b")));
        assert_eq!(earlier.len(), 1);
        assert_eq!(earlier[0].model_id, "onnx:a:fp32:1");
        assert_eq!(
            earlier[0].settings.model_dir.as_deref(),
            Some(std::path::Path::new("/m/a"))
        );
        let file = std::fs::read_to_string(dir.path().join(SERVER_MODELS_FILE)).unwrap();
        assert!(!file.contains("sk-never-written"), "{file}");
        // Back to the first: it moves to the head, listed once.
        let earlier = record_server_model(dir.path(), Some(model("onnx:a:fp32:1", "/m/a")));
        let ids: Vec<&str> = earlier.iter().map(|m| m.model_id.as_str()).collect();
        assert_eq!(ids, ["onnx:b:int8:2"]);
        // Bounded.
        for i in 0..20 {
            record_server_model(dir.path(), Some(model(&format!("onnx:m{i}:fp32:0"), "/m")));
        }
        let earlier = record_server_model(dir.path(), None);
        assert_eq!(earlier.len(), SERVER_MODELS_KEPT);
        assert_eq!(earlier[0].model_id, "onnx:m19:fp32:0");
    }

    #[test]
    fn a_damaged_record_of_server_models_is_replaced_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SERVER_MODELS_FILE), "{not json").unwrap();
        assert!(record_server_model(dir.path(), Some(model("onnx:a:fp32:1", "/m/a"))).is_empty());
        let earlier = record_server_model(dir.path(), Some(model("onnx:b:fp32:1", "/m/b")));
        assert_eq!(earlier[0].model_id, "onnx:a:fp32:1");
    }
}
