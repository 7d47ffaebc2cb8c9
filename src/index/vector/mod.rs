//! Per-tenant vector index: exact cosine search for small tenants, one HNSW graph per
//! tenant (`hnsw.rs`) above a size threshold, tombstones for deletion, atomic dumps.
//!
//! Owns `<dir>` and nothing else; must not depend on `api/`, `domain/` or `store/`. A
//! tenant's query only ever touches that tenant's vectors and graph.
//!
//! Each vector is held once in memory: a tenant's flat array of normalised vectors in half
//! precision (768 bytes for 384 dimensions), which exact search, filtered search,
//! compaction and the graph (links only) all read. Queries stay f32; a cosine against a
//! stored half is within ~1e-4 of the f32 one (see `simd.rs`).
//! Persistence (the on-disk layout, atomic generations, incremental deltas, checksums and
//! the UNTRUSTED list) lives in `persist.rs`; the dot product (SIMD chosen at run time) in
//! `simd.rs`. A tenant records what changed since its files were written (deleted slots
//! here, rewritten graph nodes in the graph), so a persist writes a delta proportional to
//! the change, not the whole tenant.
//!
//! The store keeps every chunk's vector too (as halves of what the embedder returned). An
//! index opened with a [`VectorSource`] over those does not write them again: its dumps hold
//! the slot list and the graph, and a load takes the vectors back from the source, checked
//! against a checksum of the very halves the graph was built for. So the index turns the
//! store's halves into its own in one fixed way ([`stored_form`]), on insert and on load
//! alike. A tenant whose vectors the store does not hold (the old model's index while a
//! tenant changes model: re-embedding overwrites the store's copy) is marked with
//! [`VectorIndex::keep_own_vectors`] and dumped whole, as without a source.

mod hnsw;
mod persist;
mod simd;

pub use simd::{Kernel, dot, from_f16, to_f16};

use super::{Error, Hit, MAX_K};
use crate::types::{ChunkId, DocumentId, TenantId};
use hnsw::Graph;
pub use persist::FoldRule;
use persist::{Journal, load_tenant, tenant_from_hex, write_atomic, write_untrusted};
#[cfg(test)]
pub(crate) use persist::{write_old_generation, writing_v1_deltas};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Where an index opened with [`VectorIndex::open_with_source`] reads back the vectors its
/// dumps leave out: the store's copy of each chunk's vector.
pub trait VectorSource: Send + Sync {
    /// Calls `each` with the chunk id and the vector (IEEE half bits, as the embedder's
    /// f32s rounded to halves) of every vector the store holds for `tenant`, whatever model
    /// made it: the index matches them to its slots and checks them.
    fn tenant_vectors(
        &self,
        tenant: &TenantId,
        each: &mut dyn FnMut(&ChunkId, &[u16]),
    ) -> Result<(), String>;
}

/// HNSW and search tuning. The defaults are the ones measured in `BENCHMARKS.md`.
#[derive(Clone, Debug)]
pub struct HnswParams {
    /// Links per node (M; 2M on the bottom layer), clamped to 2..=64.
    pub max_conn: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    /// Candidate list size while searching a tenant of up to `ef_grows_above` vectors
    /// (raised to k when k is larger).
    pub ef_search: usize,
    /// Above this many live vectors the search's candidate list grows with the square
    /// root of the tenant's size, `ef_search * sqrt(live / ef_grows_above)`, so recall
    /// holds as a tenant grows (`usize::MAX`: a fixed `ef_search`).
    pub ef_grows_above: usize,
    /// Tenants (or document-filtered sets) with at most this many live vectors are
    /// searched exactly; no graph is built below it.
    pub exact_max: usize,
    /// Compact (and rebuild the graph) when this fraction of slots is deleted.
    pub max_dead_ratio: f32,
}

impl HnswParams {
    /// The candidate list size of a graph search for `k` results in a tenant of `live`
    /// vectors (see [`ef_grows_above`](Self::ef_grows_above)).
    pub fn search_ef(&self, k: usize, live: usize) -> usize {
        let scale = (live as f64 / self.ef_grows_above as f64).sqrt().max(1.0);
        ((self.ef_search as f64 * scale) as usize).max(k)
    }
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            max_conn: 16,
            ef_construction: 100,
            ef_search: 64,
            ef_grows_above: EF_GROWS_ABOVE,
            exact_max: 4096,
            max_dead_ratio: 0.2,
        }
    }
}

/// Where the default search ef starts to grow (see [`HnswParams::ef_grows_above`]).
/// Recall@10 at a fixed ef 64 falls as a tenant grows (BENCHMARKS.md "Session 9"): on
/// stand-ins of real MiniLM vectors 0.968 at 10k, 0.953 at 300k and 0.819 at 1M (the 1M
/// tenant of `bench_scale`, where ef 128 gave 0.887); on harder low-rank vectors 0.92 at
/// 10k, 0.72 at 100k, 0.58 at 300k. The ef needed for a given recall grew about with the
/// square root of the size there, and a walk costs about linearly in ef (100k: 0.24 ms at
/// ef 64, 0.53 ms at 158), small next to the keyword half of a hybrid search at that size.
/// Growing from 16,384 gave 0.988 at 1M (ef 500) and ~0.988 at 100k (ef 158); from 10,000
/// it gives 0.990 at both (ef 640 and 202; BENCHMARKS.md "Session 12: ef at 1M").
const EF_GROWS_ABOVE: usize = 10_000;

struct Slot {
    chunk: ChunkId,
    /// Index into `Tenant::docs`: a document filter tests slots by number, not by id.
    doc: u32,
    alive: bool,
}

/// One tenant's vectors. Slots are append-only between compactions; the slot number is the
/// graph's node id, and `vectors[slot * dims..]` holds the normalised vector as IEEE half
/// bits (the only copy: the graph keeps links, and exact search, filtered search and
/// rebuilds read it too).
#[derive(Default)]
struct Tenant {
    slots: Vec<Slot>,
    vectors: Vec<u16>,
    by_chunk: HashMap<ChunkId, u32>,
    /// Live slots per document; a document is absent once it has none.
    by_doc: HashMap<DocumentId, Vec<u32>>,
    /// Document numbers (interned ids) used by slots, stable until the next compaction.
    docs: Vec<DocumentId>,
    doc_nums: HashMap<DocumentId, u32>,
    dead: usize,
    /// Covers every slot when present.
    graph: Option<Graph>,
    /// Changed since the last dump (and listed in UNTRUSTED).
    dirty: AtomicBool,
    /// Loaded from files of an older format, which are still valid: the next persist
    /// rewrites them (without listing the tenant in UNTRUSTED, unlike `dirty`).
    outdated: AtomicBool,
    /// Its files were missing, stale or invalid: served empty until `rebuild_tenant`.
    needs_rebuild: bool,
    /// Dump the vectors too even with a source: loaded from a dump that held them, and the
    /// source did not hold the same ones.
    own_vectors: bool,
    /// The current dump leaves the live vectors to the source.
    dumped_in_store: AtomicBool,
    /// What the files hold and which slots died since: a persist writes a delta from it.
    /// Locked by a persist (under the tenant's read lock); a writer reaches it directly.
    journal: Mutex<Journal>,
}

impl Tenant {
    fn live(&self) -> usize {
        self.slots.len() - self.dead
    }

    fn vector(&self, slot: u32, dims: usize) -> &[u16] {
        let s = slot as usize * dims;
        &self.vectors[s..s + dims]
    }

    fn kill(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if s.alive {
            s.alive = false;
            self.dead += 1;
            let journal = self.journal.get_mut().unwrap_or_else(|e| e.into_inner());
            if journal.disk.is_some() {
                journal.killed.push(slot);
            }
            if self.by_chunk.get(&s.chunk) == Some(&slot) {
                self.by_chunk.remove(&s.chunk);
            }
            let document = &self.docs[s.doc as usize];
            if let Some(list) = self.by_doc.get_mut(document) {
                list.retain(|&x| x != slot);
                if list.is_empty() {
                    self.by_doc.remove(document);
                }
            }
        }
    }

    /// Appends a slot with `v` (in [`stored_form`]).
    fn push_half(&mut self, chunk: ChunkId, document: DocumentId, v: &[u16]) -> Result<u32, Error> {
        let slot = self.push_slot(chunk, document)?;
        self.vectors.extend_from_slice(v);
        Ok(slot)
    }

    /// [`push_half`](Self::push_half) without the vector, for a loader that fills `vectors`
    /// itself.
    fn push_slot(&mut self, chunk: ChunkId, document: DocumentId) -> Result<u32, Error> {
        if let Some(&old) = self.by_chunk.get(&chunk) {
            self.kill(old);
        }
        let slot = u32::try_from(self.slots.len())
            .map_err(|_| Error::Invalid("too many vectors in one tenant".into()))?;
        let doc = match self.doc_nums.get(&document) {
            Some(&n) => n,
            None => {
                let n = u32::try_from(self.docs.len())
                    .map_err(|_| Error::Invalid("too many documents in one tenant".into()))?;
                self.docs.push(document.clone());
                self.doc_nums.insert(document.clone(), n);
                n
            }
        };
        self.by_chunk.insert(chunk.clone(), slot);
        self.by_doc.entry(document).or_default().push(slot);
        self.slots.push(Slot {
            chunk,
            doc,
            alive: true,
        });
        Ok(slot)
    }

    fn document(&self, slot: &Slot) -> &DocumentId {
        &self.docs[slot.doc as usize]
    }

    /// Replaces the graph by one built anew: its files cannot follow on from the old
    /// one's, so the next persist writes a new base.
    fn set_graph(&mut self, g: Graph) {
        self.graph = Some(g);
        self.journal
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .disk = None;
    }

    /// Drops dead slots, renumbers, and rebuilds the graph if the tenant is large enough.
    fn compact(&mut self, dims: usize, params: &HnswParams) {
        let old_slots = std::mem::take(&mut self.slots);
        let old_vectors = std::mem::take(&mut self.vectors);
        let old_docs = std::mem::take(&mut self.docs);
        let mut fresh = Tenant {
            slots: Vec::with_capacity(old_slots.len() - self.dead),
            vectors: Vec::with_capacity((old_slots.len() - self.dead) * dims),
            ..Tenant::default()
        };
        for (i, s) in old_slots.into_iter().enumerate() {
            if s.alive {
                let v = &old_vectors[i * dims..(i + 1) * dims];
                // Chunks are unique among live slots, so push never kills here.
                let document = old_docs[s.doc as usize].clone();
                let _ = fresh.push_half(s.chunk, document, v);
            }
        }
        fresh.graph = None;
        fresh.dirty = AtomicBool::new(self.dirty.load(Ordering::Relaxed));
        fresh.outdated = AtomicBool::new(self.outdated.load(Ordering::Relaxed));
        fresh.needs_rebuild = self.needs_rebuild;
        fresh.own_vectors = self.own_vectors;
        fresh.dumped_in_store = AtomicBool::new(self.dumped_in_store.load(Ordering::Relaxed));
        *self = fresh;
        if self.live() > params.exact_max {
            self.graph = Some(build_graph(self, dims, params));
        }
    }

    fn maybe_compact(&mut self, dims: usize, params: &HnswParams) {
        // Small tenants compact too (it frees memory), but not for a handful of deletions.
        if self.dead > 64 && self.dead as f32 > params.max_dead_ratio * self.slots.len() as f32 {
            self.compact(dims, params);
        }
    }
}

/// Threads for graph construction: every core (inserts run inside a blocking task).
fn build_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Builds a graph over every live slot (node id = slot), inserting on all cores.
fn build_graph(t: &Tenant, dims: usize, params: &HnswParams) -> Graph {
    let mut g = Graph::new(dims, params.max_conn, params.ef_construction);
    g.grow(t.slots.len());
    let live: Vec<u32> = t
        .slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.alive)
        .map(|(i, _)| i as u32)
        .collect();
    g.insert_parallel(&t.vectors, &live, build_threads());
    g
}

/// The form a vector is held in: rounded to halves as the store keeps it, normalised (the
/// sum in f64, in order, so every machine gets the same bits), rounded to halves again. A
/// vector read back from the store's halves takes the same steps and gets the same bits,
/// which is what lets a load check them against the checksum of a dump.
fn stored_form(v: &[f32], dims: usize) -> Result<Vec<u16>, Error> {
    checked(v, dims)?;
    let halves: Vec<u16> = v.iter().map(|&x| to_f16(x)).collect();
    stored_from_halves(&halves)
        .ok_or_else(|| Error::Invalid("vector has a component beyond half precision".into()))
}

/// [`stored_form`] of a vector given as the store's halves; `None` for a non-finite one.
/// Every vector of a tenant goes through here when its index loads from the store (a
/// million at 1M chunks), so the conversions run over whole slices (F16C where the CPU has
/// it); the arithmetic is the same, in the same order, as one value at a time.
fn stored_from_halves(h: &[u16]) -> Option<Vec<u16>> {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    let mut f = vec![0f32; h.len()];
    h.reinterpret_cast::<half::f16>()
        .convert_to_f32_slice(&mut f);
    let mut sum = 0f64;
    for &x in &f {
        let x = f64::from(x);
        if !x.is_finite() {
            return None;
        }
        sum += x * x;
    }
    let norm = sum.sqrt();
    // A zero vector has no direction: it is kept as zeros and scores 0 against everything.
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    for x in &mut f {
        *x = (f64::from(*x) * scale) as f32;
    }
    let mut out = vec![0u16; h.len()];
    out.reinterpret_cast_mut::<half::f16>()
        .convert_from_f32_slice(&f);
    Some(out)
}

/// Rejects a vector of the wrong length or with a non-finite value.
fn checked(v: &[f32], dims: usize) -> Result<(), Error> {
    if v.len() != dims {
        return Err(Error::Dimensions {
            expected: dims,
            got: v.len(),
        });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::Invalid(
            "vector has a NaN or infinite component".into(),
        ));
    }
    Ok(())
}

/// Normalises to unit length; rejects wrong lengths and non-finite values.
fn normalised(v: &[f32], dims: usize) -> Result<Vec<f32>, Error> {
    checked(v, dims)?;
    let norm = dot(v, v).sqrt();
    // A zero vector has no direction: it is kept as zeros and scores 0 against everything.
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    Ok(v.iter().map(|x| x * scale).collect())
}

/// Per-tenant cosine vector index. `Send + Sync`; tenants are locked independently.
pub struct VectorIndex {
    dir: PathBuf,
    dims: usize,
    model_id: String,
    params: HnswParams,
    tenants: RwLock<HashMap<TenantId, Arc<RwLock<Tenant>>>>,
    /// Hex names listed in `<dir>/UNTRUSTED`; the mutex also serialises rewriting it.
    untrusted: Mutex<HashSet<String>>,
    rebuild_all: bool,
    /// The store's copy of the vectors: dumps leave them out when set.
    source: Option<Arc<dyn VectorSource>>,
    /// Tenants whose dumps hold their vectors whatever the source ([`keep_own_vectors`]).
    ///
    /// [`keep_own_vectors`]: Self::keep_own_vectors
    kept: Mutex<HashSet<TenantId>>,
    /// What persists wrote since open: bases, deltas, bytes.
    written: [AtomicU64; 3],
    /// When a persist writes a new base rather than a delta.
    fold: FoldRule,
}

/// What an index's persists wrote since it was opened ([`VectorIndex::persisted`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistTotals {
    /// Tenants written whole (a new base: first dumps, format changes, compactions, and
    /// when the deltas would pass what [`FoldRule`] allows).
    pub bases: u64,
    /// Tenants written as a delta of what changed.
    pub deltas: u64,
    /// Bytes of both.
    pub bytes: u64,
}

impl VectorIndex {
    /// Opens `<dir>` (creating it) for vectors of `dims` dimensions made by `model_id`, with
    /// default [`HnswParams`]. All tenants are loaded now (their vectors are needed in
    /// memory to serve anyway). If the directory is new or was made for another model or
    /// dimension count, it is emptied and [`needs_rebuild_all`](Self::needs_rebuild_all) is
    /// true; a tenant whose files are missing pieces, corrupt or stale is loaded empty and
    /// listed by [`tenants_needing_rebuild`](Self::tenants_needing_rebuild).
    pub fn open(dir: &Path, dims: usize, model_id: &str) -> Result<Self, Error> {
        Self::open_with(dir, dims, model_id, HnswParams::default())
    }

    /// [`open`](Self::open) with explicit tuning.
    pub fn open_with(
        dir: &Path,
        dims: usize,
        model_id: &str,
        params: HnswParams,
    ) -> Result<Self, Error> {
        Self::open_with_source(dir, dims, model_id, params, None)
    }

    /// [`open_with`](Self::open_with) for an index whose vectors `source` also holds: dumps
    /// keep the graph and the slot list, not the vectors, and loads read them from
    /// `source`. A tenant whose vectors there are not the ones its graph was built for
    /// (missing, changed, from another model) is loaded empty and listed by
    /// [`tenants_needing_rebuild`](Self::tenants_needing_rebuild). Dumps that hold their
    /// vectors (older formats, [`keep_own_vectors`](Self::keep_own_vectors)) still load;
    /// when the source holds the same vectors, the next persist drops them from the dump.
    pub fn open_with_source(
        dir: &Path,
        dims: usize,
        model_id: &str,
        params: HnswParams,
        source: Option<Arc<dyn VectorSource>>,
    ) -> Result<Self, Error> {
        if dims == 0 {
            return Err(Error::Invalid("dimensions must be positive".into()));
        }
        fs::create_dir_all(dir)?;
        let manifest = persist::manifest(dims, model_id);
        let manifest_path = dir.join("MANIFEST");
        let rebuild_all = fs::read_to_string(&manifest_path).ok().as_deref() != Some(&manifest);
        if rebuild_all {
            tracing::info!(dir = %dir.display(), "vector index is new or for another model; starting empty");
            for entry in fs::read_dir(dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    fs::remove_dir_all(&path)?;
                } else {
                    fs::remove_file(&path)?;
                }
            }
            write_atomic(&manifest_path, manifest.as_bytes())?;
        }
        let untrusted: HashSet<String> = fs::read_to_string(dir.join("UNTRUSTED"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();

        let mut tenants = HashMap::new();
        let mut untrusted_now = untrusted.clone();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hex_name) = name.strip_prefix("t-") else {
                continue;
            };
            let Some(tenant) = tenant_from_hex(hex_name) else {
                tracing::warn!(dir = %entry.path().display(), "ignoring a vector index directory with an unreadable name");
                continue;
            };
            let loaded = if untrusted.contains(hex_name) {
                Err("changes were not persisted before the last stop".to_string())
            } else {
                load_tenant(&entry.path(), dims, model_id)
                    .and_then(|l| persist::vectors_from_source(l, source.as_deref(), &tenant, dims))
            };
            let t = match loaded {
                Ok(mut t) => {
                    // A dump without a graph (older format, or a lowered threshold) gets
                    // one now; the files stay as they are until the next change.
                    if t.graph.is_none() && t.live() > params.exact_max {
                        let g = build_graph(&t, dims, &params);
                        t.set_graph(g);
                    }
                    t
                }
                Err(reason) => {
                    tracing::warn!(tenant = %tenant, %reason, "vector index of tenant unusable; it needs a rebuild");
                    untrusted_now.insert(hex_name.to_string());
                    Tenant {
                        needs_rebuild: true,
                        dirty: AtomicBool::new(true),
                        ..Tenant::default()
                    }
                }
            };
            tenants.insert(tenant, Arc::new(RwLock::new(t)));
        }
        // Untrusted tenants whose directory is gone entirely still need a rebuild.
        for hex_name in &untrusted {
            if let Some(tenant) = tenant_from_hex(hex_name) {
                tenants.entry(tenant).or_insert_with(|| {
                    Arc::new(RwLock::new(Tenant {
                        needs_rebuild: true,
                        dirty: AtomicBool::new(true),
                        ..Tenant::default()
                    }))
                });
            }
        }
        if untrusted_now != untrusted {
            write_untrusted(dir, &untrusted_now)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            dims,
            model_id: model_id.to_string(),
            params,
            tenants: RwLock::new(tenants),
            untrusted: Mutex::new(untrusted_now),
            rebuild_all,
            source,
            kept: Mutex::new(HashSet::new()),
            written: Default::default(),
            fold: FoldRule::default(),
        })
    }

    /// This index with another rule for when a persist folds a tenant's deltas into a new
    /// base (the default is the one measured in `BENCHMARKS.md`).
    pub fn with_fold_rule(mut self, fold: FoldRule) -> Self {
        self.fold = fold;
        self
    }

    /// What this index's persists wrote since it was opened, for benchmarks and reports.
    pub fn persisted(&self) -> PersistTotals {
        let [bases, deltas, bytes] = &self.written;
        PersistTotals {
            bases: bases.load(Ordering::Relaxed),
            deltas: deltas.load(Ordering::Relaxed),
            bytes: bytes.load(Ordering::Relaxed),
        }
    }

    /// Dimensions every vector must have.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Bytes of vectors and graph links held across tenants (not the per-chunk ids, not
    /// spare capacity), for memory reports.
    pub fn memory_bytes(&self) -> usize {
        self.snapshot()
            .iter()
            .map(|(_, t)| {
                let t = read(t);
                t.vectors.len() * 2 + t.graph.as_ref().map_or(0, Graph::heap_bytes)
            })
            .sum()
    }

    /// True when `open` found no index for this model and dimension count: the caller
    /// must rebuild every tenant (ideally from a durable job, so a restart resumes it).
    pub fn needs_rebuild_all(&self) -> bool {
        self.rebuild_all
    }

    /// Tenants whose index was invalid or stale at open and has not been rebuilt since.
    pub fn tenants_needing_rebuild(&self) -> Vec<TenantId> {
        let mut ids: Vec<TenantId> = self
            .snapshot()
            .into_iter()
            .filter(|(_, t)| read(t).needs_rebuild)
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids
    }

    /// True when this tenant's index must be rebuilt from the store before it can be
    /// trusted: its files were unusable, or `open` found no index at all (a new or lost
    /// directory, a restored backup; see [`needs_rebuild_all`](Self::needs_rebuild_all)) and
    /// the tenant has had nothing since.
    pub fn needs_rebuild(&self, tenant: &TenantId) -> bool {
        match self.tenant(tenant) {
            Some(t) => read(&t).needs_rebuild,
            None => self.rebuild_all,
        }
    }

    /// Adds (or replaces, by chunk id) vectors of one tenant. Vectors are normalised; the
    /// tenant's graph is built once it grows past `exact_max` vectors.
    pub fn insert(
        &self,
        tenant: &TenantId,
        items: &[(ChunkId, DocumentId, Vec<f32>)],
    ) -> Result<(), Error> {
        if items.is_empty() {
            return Ok(());
        }
        let normed = items
            .iter()
            .map(|(_, _, v)| stored_form(v, self.dims))
            .collect::<Result<Vec<_>, _>>()?;
        let cell = self.tenant_or_create(tenant);
        let mut t = write(&cell);
        self.mark_dirty(tenant, &t)?;
        let mut new_slots = Vec::with_capacity(items.len());
        for ((chunk, doc, _), v) in items.iter().zip(&normed) {
            new_slots.push(t.push_half(chunk.clone(), doc.clone(), v)?);
        }
        let tenant = &mut *t;
        match &mut tenant.graph {
            Some(g) => {
                g.grow(tenant.slots.len());
                // Threads only pay off for larger batches.
                let threads = if new_slots.len() >= 64 {
                    build_threads()
                } else {
                    1
                };
                g.insert_parallel(&tenant.vectors, &new_slots, threads);
                t.maybe_compact(self.dims, &self.params);
            }
            None => {
                t.maybe_compact(self.dims, &self.params);
                if t.graph.is_none() && t.live() > self.params.exact_max {
                    let g = build_graph(&t, self.dims, &self.params);
                    t.set_graph(g);
                }
            }
        }
        Ok(())
    }

    /// Removes a document's vectors (tombstones; compacts past `max_dead_ratio`).
    pub fn delete_document(&self, tenant: &TenantId, doc: &DocumentId) -> Result<(), Error> {
        let Some(cell) = self.tenant(tenant) else {
            return Ok(());
        };
        let mut t = write(&cell);
        let Some(slots) = t.by_doc.get(doc).cloned() else {
            return Ok(());
        };
        self.kill_slots(tenant, &mut t, slots)
    }

    /// Removes some chunks' vectors (tombstones; compacts past `max_dead_ratio`); chunks the
    /// index does not hold are skipped.
    pub fn delete_chunks(&self, tenant: &TenantId, chunks: &[ChunkId]) -> Result<(), Error> {
        let Some(cell) = self.tenant(tenant) else {
            return Ok(());
        };
        let mut t = write(&cell);
        let slots: Vec<u32> = chunks
            .iter()
            .filter_map(|c| t.by_chunk.get(c).copied())
            .collect();
        if slots.is_empty() {
            return Ok(());
        }
        self.kill_slots(tenant, &mut t, slots)
    }

    /// Tombstones `slots` of the tenant `t` (recorded for the next persist first), then
    /// compacts it past `max_dead_ratio`.
    fn kill_slots(&self, tenant: &TenantId, t: &mut Tenant, slots: Vec<u32>) -> Result<(), Error> {
        self.mark_dirty(tenant, t)?;
        for s in slots {
            t.kill(s);
        }
        t.maybe_compact(self.dims, &self.params);
        Ok(())
    }

    /// Removes a tenant from memory and disk.
    pub fn delete_tenant(&self, tenant: &TenantId) -> Result<(), Error> {
        self.lock_kept().remove(tenant);
        let removed = self.write_tenants().remove(tenant);
        if let Some(cell) = removed {
            // Wait for in-flight users of the tenant before deleting its files.
            drop(write(&cell));
        }
        let tdir = self.tenant_dir(tenant);
        if tdir.exists() {
            fs::remove_dir_all(&tdir)?;
        }
        let mut untrusted = self.lock_untrusted();
        if untrusted.remove(&hex::encode(tenant.as_str())) {
            write_untrusted(&self.dir, &untrusted)?;
        }
        Ok(())
    }

    /// Replaces a tenant's vectors with `items` (e.g. from the store after
    /// [`needs_rebuild`](Self::needs_rebuild)), building the graph if it is large enough.
    pub fn rebuild_tenant(
        &self,
        tenant: &TenantId,
        items: impl Iterator<Item = (ChunkId, DocumentId, Vec<f32>)>,
    ) -> Result<(), Error> {
        let mut fresh = Tenant::default();
        for (chunk, doc, v) in items {
            let v = stored_form(&v, self.dims)?;
            fresh.push_half(chunk, doc, &v)?;
        }
        if fresh.dead > 0 {
            fresh.compact(self.dims, &self.params);
        } else if fresh.live() > self.params.exact_max {
            fresh.graph = Some(build_graph(&fresh, self.dims, &self.params));
        }
        let cell = self.tenant_or_create(tenant);
        let mut t = write(&cell);
        self.mark_dirty(tenant, &t)?;
        fresh.dirty = AtomicBool::new(true);
        fresh.own_vectors = t.own_vectors;
        fresh.dumped_in_store = AtomicBool::new(t.dumped_in_store.load(Ordering::Relaxed));
        *t = fresh;
        Ok(())
    }

    /// Top-`k` chunks of one tenant by cosine similarity (`score` = cosine), optionally
    /// restricted to some documents. Exact when the tenant or the filtered set is small,
    /// HNSW otherwise. Deleted chunks are never returned. `k` is capped at [`MAX_K`].
    pub fn search(
        &self,
        tenant: &TenantId,
        query: &[f32],
        filter_docs: Option<&[DocumentId]>,
        k: usize,
    ) -> Result<Vec<Hit>, Error> {
        let k = k.min(MAX_K);
        let q = normalised(query, self.dims)?;
        let Some(cell) = self.tenant(tenant) else {
            return Ok(Vec::new());
        };
        let t = read(&cell);
        if k == 0 || t.live() == 0 {
            return Ok(Vec::new());
        }
        let mut scored: Vec<(f32, u32)> = match filter_docs {
            Some(docs) => {
                // The filter's live documents, as a bitmap over document numbers (a few
                // hundred bytes) rather than a list of every allowed slot: building that
                // list cost several ms per query at 100k vectors.
                let mut allowed = vec![false; t.docs.len()];
                let mut chosen: Vec<&[u32]> = Vec::new();
                let mut allowed_slots = 0usize;
                for d in docs {
                    let (Some(&n), Some(list)) = (t.doc_nums.get(d), t.by_doc.get(d)) else {
                        continue;
                    };
                    if !std::mem::replace(&mut allowed[n as usize], true) {
                        chosen.push(list);
                        allowed_slots += list.len();
                    }
                }
                // Filtered graph walks lose recall when few nodes pass; exact search over
                // up to 1/8 of a large tenant is still cheaper than a bad answer.
                let exact_limit = self.params.exact_max.max(t.live() / 8);
                if chosen.is_empty() {
                    Vec::new()
                } else if chosen.len() == t.by_doc.len() {
                    // Every live document passes (an agent holding all of them): the
                    // filter excludes nothing, so search without it.
                    self.search_unfiltered(&t, &q, k)
                } else if allowed_slots <= exact_limit || t.graph.is_none() {
                    let slots = chosen.iter().flat_map(|l| l.iter().copied());
                    exact(&t, &q, slots, k, self.dims)
                } else {
                    let ef = self.ef(k, t.live()) * 2;
                    let slots = &t.slots;
                    let pass = |id: u32| {
                        slots
                            .get(id as usize)
                            .is_some_and(|s| s.alive && allowed[s.doc as usize])
                    };
                    match &t.graph {
                        Some(g) => g
                            .search(&t.vectors, &q, ef, Some(&pass))
                            .into_iter()
                            .map(|n| (1.0 - n.dist, n.id))
                            .collect(),
                        None => Vec::new(),
                    }
                }
            }
            None => self.search_unfiltered(&t, &q, k),
        };
        scored.retain(|&(_, s)| t.slots.get(s as usize).is_some_and(|s| s.alive));
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.truncate(k);
        Ok(scored
            .into_iter()
            .map(|(score, s)| {
                let slot = &t.slots[s as usize];
                Hit {
                    chunk: slot.chunk.clone(),
                    document: t.document(slot).clone(),
                    score,
                }
            })
            .collect())
    }

    /// Writes every changed tenant to disk: what changed as a delta beside its files, or a
    /// new generation switched atomically (see `persist.rs`). Call it periodically and on
    /// shutdown. Tenants that still need a rebuild are skipped: their files must stay
    /// untrusted.
    pub fn persist(&self) -> Result<(), Error> {
        for (id, cell) in self.snapshot() {
            self.persist_tenant(&id, &cell)?;
        }
        Ok(())
    }

    /// Makes a tenant's dumps hold its vectors even though the index has a source: the
    /// store is about to stop holding them (the tenant changes model, and re-embedding
    /// overwrites the store's copy while this index still answers its searches). A dump
    /// that left them to the store is rewritten now, before this returns (should that
    /// fail, the mark stays and the next [`persist`](Self::persist) writes them). Cheap
    /// when already marked.
    pub fn keep_own_vectors(&self, tenant: &TenantId) -> Result<(), Error> {
        if !self.lock_kept().insert(tenant.clone()) {
            return Ok(());
        }
        let Some(cell) = self.tenant(tenant) else {
            return Ok(());
        };
        {
            let t = read(&cell);
            if t.dumped_in_store.load(Ordering::Acquire) {
                t.outdated.store(true, Ordering::Release);
            }
        }
        self.persist_tenant(tenant, &cell)
    }

    fn persist_tenant(&self, id: &TenantId, cell: &Arc<RwLock<Tenant>>) -> Result<(), Error> {
        // Readers keep searching while a tenant is dumped; writers wait. The journal's lock
        // keeps two persists of one tenant (the minute's and a model change's) apart.
        let t = read(cell);
        let mut journal = t.journal.lock().unwrap_or_else(|e| e.into_inner());
        let outdated = t.outdated.load(Ordering::Acquire);
        if !(t.dirty.load(Ordering::Acquire) || outdated) || t.needs_rebuild {
            return Ok(());
        }
        // delete_tenant unmaps the tenant before it waits for this lock and removes its
        // files after: checking under the lock keeps a dump from resurrecting them.
        if !self.tenant(id).is_some_and(|c| Arc::ptr_eq(&c, cell)) {
            return Ok(());
        }
        let in_store = self.source.is_some() && !t.own_vectors && !self.lock_kept().contains(id);
        let written = persist::save_tenant(
            &self.tenant_dir(id),
            &t,
            &mut journal,
            self.dims,
            &self.model_id,
            in_store,
            (!outdated).then_some(&self.fold),
        )?;
        let kind = if written.base { 0 } else { 1 };
        if written.bytes > 0 {
            self.written[kind].fetch_add(1, Ordering::Relaxed);
            self.written[2].fetch_add(written.bytes, Ordering::Relaxed);
            tracing::debug!(tenant = %id, base = written.base, bytes = written.bytes, "vector index of tenant persisted");
        }
        t.dumped_in_store.store(in_store, Ordering::Release);
        t.dirty.store(false, Ordering::Release);
        t.outdated.store(false, Ordering::Release);
        let mut untrusted = self.lock_untrusted();
        if untrusted.remove(&hex::encode(id.as_str())) {
            write_untrusted(&self.dir, &untrusted)?;
        }
        Ok(())
    }

    /// Top candidates of the whole tenant (live slots only, possibly more than `k`).
    fn search_unfiltered(&self, t: &Tenant, q: &[f32], k: usize) -> Vec<(f32, u32)> {
        match &t.graph {
            Some(g) if t.live() > self.params.exact_max => {
                let ef = self.ef(k, t.live());
                let slots = &t.slots;
                // Tombstones still route the walk but never take a result place.
                let alive = |id: u32| slots.get(id as usize).is_some_and(|s| s.alive);
                let filter: Option<&dyn Fn(u32) -> bool> =
                    if t.dead > 0 { Some(&alive) } else { None };
                g.search(&t.vectors, q, ef, filter)
                    .into_iter()
                    .map(|n| (1.0 - n.dist, n.id))
                    .collect()
            }
            _ => exact(t, q, 0..t.slots.len() as u32, k, self.dims),
        }
    }

    fn ef(&self, k: usize, live: usize) -> usize {
        self.params.search_ef(k, live)
    }

    /// Lists the tenant in UNTRUSTED (synced) before its first unpersisted change.
    fn mark_dirty(&self, id: &TenantId, t: &Tenant) -> Result<(), Error> {
        if t.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut untrusted = self.lock_untrusted();
        if untrusted.insert(hex::encode(id.as_str())) {
            write_untrusted(&self.dir, &untrusted)?;
        }
        t.dirty.store(true, Ordering::Release);
        Ok(())
    }

    fn tenant_dir(&self, id: &TenantId) -> PathBuf {
        // Hex keeps any id (typed ids are UUIDs, but serde accepts any string) a plain,
        // non-traversing file name.
        self.dir.join(format!("t-{}", hex::encode(id.as_str())))
    }

    /// The tenants, copied out so no tenant lock is ever taken while the map is locked.
    fn snapshot(&self) -> Vec<(TenantId, Arc<RwLock<Tenant>>)> {
        self.read_tenants()
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    fn tenant(&self, id: &TenantId) -> Option<Arc<RwLock<Tenant>>> {
        self.read_tenants().get(id).cloned()
    }

    fn tenant_or_create(&self, id: &TenantId) -> Arc<RwLock<Tenant>> {
        if let Some(t) = self.tenant(id) {
            return t;
        }
        Arc::clone(self.write_tenants().entry(id.clone()).or_default())
    }

    // Locks: a panic inside an index operation leaves a tenant's slots and vectors
    // consistent (pushes append both before anything reads them), so poisoned locks are
    // reused rather than turning one panic into failures forever.
    fn read_tenants(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<TenantId, Arc<RwLock<Tenant>>>> {
        self.tenants.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_tenants(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<TenantId, Arc<RwLock<Tenant>>>> {
        self.tenants.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_untrusted(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.untrusted.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_kept(&self) -> std::sync::MutexGuard<'_, HashSet<TenantId>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn read(t: &RwLock<Tenant>) -> std::sync::RwLockReadGuard<'_, Tenant> {
    t.read().unwrap_or_else(|e| e.into_inner())
}

fn write(t: &RwLock<Tenant>) -> std::sync::RwLockWriteGuard<'_, Tenant> {
    t.write().unwrap_or_else(|e| e.into_inner())
}

/// Exact top-`k` over the given live-or-dead slots (dead ones are skipped).
fn exact(
    t: &Tenant,
    q: &[f32],
    slots: impl Iterator<Item = u32>,
    k: usize,
    dims: usize,
) -> Vec<(f32, u32)> {
    let mut scored: Vec<(f32, u32)> = slots
        .filter(|&s| t.slots.get(s as usize).is_some_and(|s| s.alive))
        .map(|s| (Kernel::best().dot_f16(q, t.vector(s, dims)), s))
        .collect();
    if scored.len() > k {
        scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        scored.truncate(k);
    }
    scored
}

#[cfg(test)]
mod stored_form_tests {
    use super::{from_f16, stored_from_halves, to_f16};

    /// The per-value form `stored_from_halves` had before it converted whole slices: data
    /// directories hold checksums of its output, so the two must agree bit for bit.
    fn one_at_a_time(h: &[u16]) -> Option<Vec<u16>> {
        let mut sum = 0f64;
        for &x in h {
            let x = f64::from(from_f16(x));
            if !x.is_finite() {
                return None;
            }
            sum += x * x;
        }
        let norm = sum.sqrt();
        let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        Some(
            h.iter()
                .map(|&x| to_f16((f64::from(from_f16(x)) * scale) as f32))
                .collect(),
        )
    }

    #[test]
    fn slice_conversions_give_the_bits_one_value_at_a_time_gave() {
        let mut z = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        let mut checked = 0;
        for round in 0..3_000 {
            let dims = [384, 768, 7, 1][round % 4];
            let h: Vec<u16> = (0..dims)
                .map(|_| match round % 5 {
                    // Any finite half, subnormals and signed zeros included.
                    0 => (next() as u16) & 0x7bff | (next() as u16 & 0x8000),
                    // Typical embedding components, then tiny ones (subnormal after scaling).
                    1 => to_f16((next() as i32 as f32) / 2.0e10),
                    2 => to_f16((next() as i32 as f32) / 2.0e15),
                    // Mostly zeros with one large component.
                    3 if next() % 50 == 0 => to_f16(60_000.0),
                    3 => 0,
                    _ => to_f16((next() % 1000) as f32 / 1000.0),
                })
                .collect();
            assert_eq!(stored_from_halves(&h), one_at_a_time(&h), "round {round}");
            checked += 1;
        }
        assert_eq!(checked, 3_000);
        // Non-finite halves are refused by both.
        assert_eq!(stored_from_halves(&[0x3c00, 0x7c00]), None);
        assert_eq!(stored_from_halves(&[0x7e00, 0]), None);
    }
}
