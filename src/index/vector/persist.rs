//! Persistence of the vector index: the on-disk layout, atomic generations, incremental
//! deltas, checksums and the UNTRUSTED list. Loads verify every checksum, and the graph
//! parsers check every id.
//!
//! On disk:
//! ```text
//! <dir>/MANIFEST                 format, model id and dimensions of everything below
//! <dir>/UNTRUSTED                tenants whose files are stale or invalid (see below)
//! <dir>/t-<hex tenant>/CURRENT   name of the current generation directory
//! <dir>/t-<hex tenant>/g<N>/     meta.bin, vectors.f16 or dead.f16 [, graph.bin]: the base
//! <dir>/t-<hex tenant>/g<N>/delta-<K>.bin   what changed after the base and deltas 1..K-1
//! ```
//! A generation is written to `g<N>.tmp`, synced, renamed, then `CURRENT` is replaced by
//! rename, so a crash leaves either the old or the new generation. A tenant is added to
//! `UNTRUSTED` (synced) before its first unpersisted change and removed when it is
//! persisted again, so after a crash its stale files (which could still hold deleted
//! chunks) are not served: it comes back empty and reported by
//! [`VectorIndex::tenants_needing_rebuild`](super::VectorIndex::tenants_needing_rebuild).
//!
//! Deltas: a persist writes only what changed since the last one when it can: the slots
//! added (binary ids), the slots deleted, the vectors the files must hold for them, and
//! the graph's added nodes' lists and how each rewritten list differs from the files'
//! (`hnsw/delta.rs`: mostly an id appended, a few bytes), as one checksummed file
//! written to a temporary name, synced and renamed. A load applies the base, then deltas
//! 1, 2, ... in order; each names the slot, document and node counts it follows, so a
//! delta applied to anything but the state it was made after is an error, as is a
//! damaged one or a gap: the tenant is then rebuilt from the store. When the deltas
//! would together pass the base's size (or 512 of them: [`FoldRule`]), the persist
//! writes a new base instead (a new generation), so the bytes written stay within a
//! small multiple of the bytes changed and a load reads at most ~2 bases (about one while
//! a tenant fills: a delta costs what its chunks cost in a base). A change that renumbers
//! slots or replaces the graph (compaction, a rebuild, a first graph) also starts a new
//! base.
//!
//! Vectors: an index with a [`VectorSource`] (the store, which keeps every chunk's vector)
//! writes only the vectors of dead slots (`dead.f16` and in deltas: tombstones still route
//! graph walks, and the store deleted them) and a checksum of the live slots' vectors; a
//! load takes the live ones from the source and checks that checksum, so a graph is never
//! served against vectors it was not built for. The checksum (meta version 5) is a sum
//! over live slots of a mix of the slot number and the CRC of its vector, so a delta
//! updates it from the slots it adds and deletes alone. Without a source, or for a tenant
//! marked [`keep_own_vectors`](super::VectorIndex::keep_own_vectors), every slot's vector
//! is in `vectors.f16` (little-endian IEEE halves, as held in memory) and the deltas.
//! `graph.bin` holds links only. Older generations still load, and are marked changed so
//! the next persist rewrites them in this format (once, not at every start): meta version
//! 4 (ids as text, a CRC of the live vectors in slot order), 3 (`vectors.f16` always), 2
//! (`vectors.f32` and `graph.bin`; the vectors are rounded to halves on load) and 1
//! (graphs in hnsw_rs's format, which held a second copy of every vector: ignored, and the
//! graph is rebuilt in memory from `vectors.f32`). When a source holds the same vectors as
//! such a dump (each within rounding), it is adopted.

use super::hnsw::Format as GraphFormat;
use super::simd::{from_f16, to_f16};
use super::{Graph, Tenant, VectorSource, stored_from_halves};
use crate::index::Error;
use crate::types::{ChunkId, DocumentId, TenantId};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::Path;

const MANIFEST_FORMAT: &str = "aigentable-vector-index 1";
const META_MAGIC: &[u8; 4] = b"AIGV";
/// 5: ids as 16 bytes (documents numbered in a table), the live vectors' checksum as a
/// sum over slots, and deltas may follow. 4: `vectors.f16` or (vectors in the source)
/// `dead.f16`, and `graph.bin`, ids as text. 3: `vectors.f16` and `graph.bin`. 2:
/// `vectors.f32` and `graph.bin` (this crate's graph). 1: `vectors.f32` and hnsw_rs graph
/// files (ignored; rebuilt).
const META_VERSION: u32 = 5;
const DELTA_MAGIC: &[u8; 4] = b"AIGD";
/// 2: the graph's changes as how each list differs from the files' (`hnsw/delta.rs`). 1:
/// every changed node's lists whole (still read).
const DELTA_VERSION: u32 = 2;
/// When a persist writes a new base (a new generation) instead of another delta: the
/// trade between the bytes a tenant's persists write and what a start reads and applies
/// (BENCHMARKS.md, "when to fold deltas into a new base").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FoldRule {
    /// A new base once the deltas would together pass this many times the base's bytes.
    /// While a tenant grows, its bases follow each other at sizes (1 + r) apart, so the
    /// bases written add up to about (1 + r) / r times the last (besides each chunk once
    /// in a delta), and a start reads at most (1 + r) bases (about one while the deltas
    /// only add chunks, which cost in a delta what they cost in a base).
    pub max_delta_ratio: f64,
    /// ... or once a base has this many deltas: each is a file to open at start, and small
    /// edits (a few KiB each) would otherwise pile up for days on a large base.
    pub max_deltas: u32,
}

impl Default for FoldRule {
    /// Deltas up to the base's size, at most 512 of them.
    fn default() -> Self {
        Self {
            max_delta_ratio: 1.0,
            max_deltas: 512,
        }
    }
}

impl FoldRule {
    /// A base with `deltas` deltas of `delta_bytes` in all may take one more of `bytes`.
    fn room(&self, base_bytes: u64, deltas: u32, delta_bytes: u64, bytes: u64) -> bool {
        deltas < self.max_deltas
            && (delta_bytes + bytes) as f64 <= base_bytes as f64 * self.max_delta_ratio
    }
}
const VECTORS_FILE: &str = "vectors.f16";
const DEAD_FILE: &str = "dead.f16";
/// A vector from the source stands for a dumped one (older format) when their cosine is at
/// least this: rounding moves it by ~1e-7, another model's or text's vector by far more.
const SAME_VECTOR: f64 = 0.9999;
const GRAPH_FILE: &str = "graph.bin";

/// What a tenant's current files hold, so that a persist can append a delta to them.
#[derive(Clone, Debug)]
pub(super) struct OnDisk {
    /// The generation directory's name.
    generation: String,
    /// Slots, documents and graph nodes (None: no graph) the files cover.
    slots: usize,
    docs: usize,
    graph_nodes: Option<usize>,
    /// The live vectors are left to the source.
    in_store: bool,
    /// [`live_sum`] of the live slots, when `in_store`.
    live_sum: u64,
    deltas: u32,
    base_bytes: u64,
    delta_bytes: u64,
}

/// A tenant's record of what its files hold and what changed since (kept beside the
/// tenant, under its own lock so a persist can update it while readers search).
#[derive(Default)]
pub(super) struct Journal {
    /// None: the next persist writes a new base.
    pub(super) disk: Option<OnDisk>,
    /// Slots deleted since the files were written (each once: a slot dies once).
    pub(super) killed: Vec<u32>,
}

/// What one persist of one tenant wrote.
pub(super) struct Written {
    /// A new base (else a delta, or nothing when nothing had changed).
    pub(super) base: bool,
    pub(super) bytes: u64,
}

/// The MANIFEST text for vectors of `dims` dimensions made by `model_id`: an index whose
/// MANIFEST differs was made for something else and is rebuilt.
pub(super) fn manifest(dims: usize, model_id: &str) -> String {
    format!("{MANIFEST_FORMAT}\nmodel={model_id}\ndims={dims}\n")
}

/// Writes what changed in `t` since its files were written: a delta when `journal` says
/// what they hold and `fold` leaves room for it next to the base, else a new base (also
/// when `fold` is None: the files are of an older format). `in_store`: the live vectors
/// are left to the index's source. On success the journal describes the new files and
/// nothing is recorded as changed; on failure it forgets the files (a failure can leave
/// them anywhere between the old and the new), so the next persist writes a new base.
pub(super) fn save_tenant(
    tdir: &Path,
    t: &Tenant,
    journal: &mut Journal,
    dims: usize,
    model_id: &str,
    in_store: bool,
    fold: Option<&FoldRule>,
) -> Result<Written, Error> {
    let disk = journal.disk.take();
    let follows = fold.zip(disk.as_ref()).filter(|(_, d)| {
        d.in_store == in_store
            && d.slots <= t.slots.len()
            && d.docs <= t.docs.len()
            && match (&t.graph, d.graph_nodes) {
                (Some(g), Some(n)) => n <= g.len(),
                (None, None) => true,
                _ => false,
            }
    });
    if let Some((fold, disk)) = follows {
        match encode_delta(t, disk, &journal.killed, dims)? {
            None => {
                journal.disk = Some(disk.clone());
                forget_changes(t, journal);
                return Ok(Written {
                    base: false,
                    bytes: 0,
                });
            }
            Some((bytes, live_sum))
                if fold.room(
                    disk.base_bytes,
                    disk.deltas,
                    disk.delta_bytes,
                    bytes.len() as u64,
                ) =>
            {
                let seq = disk.deltas + 1;
                write_atomic(&tdir.join(&disk.generation).join(delta_name(seq)), &bytes)?;
                let mut next = disk.clone();
                next.slots = t.slots.len();
                next.docs = t.docs.len();
                next.graph_nodes = t.graph.as_ref().map(Graph::len);
                next.live_sum = live_sum;
                next.deltas = seq;
                next.delta_bytes += bytes.len() as u64;
                journal.disk = Some(next);
                forget_changes(t, journal);
                return Ok(Written {
                    base: false,
                    bytes: bytes.len() as u64,
                });
            }
            Some(_) => {}
        }
    }
    let disk = dump_tenant(tdir, t, dims, model_id, in_store)?;
    let bytes = disk.base_bytes;
    journal.disk = Some(disk);
    forget_changes(t, journal);
    Ok(Written { base: true, bytes })
}

fn forget_changes(t: &Tenant, journal: &mut Journal) {
    journal.killed.clear();
    if let Some(g) = &t.graph {
        g.clear_changes();
    }
}

fn delta_name(seq: u32) -> String {
    format!("delta-{seq:08}.bin")
}

/// Writes one tenant as a new base (a new generation) under `tdir` and switches `CURRENT`
/// to it; `in_store`: the live vectors are left to the index's source.
fn dump_tenant(
    tdir: &Path,
    t: &Tenant,
    dims: usize,
    model_id: &str,
    in_store: bool,
) -> Result<OnDisk, Error> {
    fs::create_dir_all(tdir)?;
    let current = fs::read_to_string(tdir.join("CURRENT")).unwrap_or_default();
    let next = current
        .trim()
        .strip_prefix('g')
        .and_then(|n| u64::from_str_radix(n, 16).ok())
        .map_or(1, |n| n + 1);
    let gen_name = format!("g{next:016x}");
    let tmp = tdir.join(format!("{gen_name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;

    // Streamed through a small buffer: a second in-memory copy of every vector would
    // double the index's memory while it is dumped.
    let (vectors_crc, vector_bytes, live) = if in_store {
        let dead = t
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.alive)
            .map(|(i, _)| t.vector(i as u32, dims));
        let (crc, n) = write_halves(&tmp.join(DEAD_FILE), dead)?;
        (crc, n, live_sum(t, dims))
    } else {
        let all = t.vectors.chunks(dims.max(1));
        let (crc, n) = write_halves(&tmp.join(VECTORS_FILE), all)?;
        (crc, n, 0)
    };
    let (graph_name, graph_crc, graph_bytes) = match &t.graph {
        None => (String::new(), 0, 0),
        Some(g) => {
            let bytes = g.encode();
            write_synced(&tmp.join(GRAPH_FILE), &bytes)?;
            (
                GRAPH_FILE.to_string(),
                crc32fast::hash(&bytes),
                bytes.len() as u64,
            )
        }
    };
    let meta = encode_meta(
        t,
        dims,
        model_id,
        vectors_crc,
        &graph_name,
        graph_crc,
        in_store.then_some(live),
    )?;
    write_synced(&tmp.join("meta.bin"), &meta)?;
    sync_dir(&tmp)?;
    let gen_dir = tdir.join(&gen_name);
    fs::rename(&tmp, &gen_dir)?;
    write_atomic(&tdir.join("CURRENT"), format!("{gen_name}\n").as_bytes())?;
    // Older generations (and their deltas) are garbage once CURRENT points past them.
    for entry in fs::read_dir(tdir)? {
        let entry = entry?;
        let name = entry.file_name();
        if entry.path().is_dir() && name.to_string_lossy() != gen_name {
            fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(OnDisk {
        generation: gen_name,
        slots: t.slots.len(),
        docs: t.docs.len(),
        graph_nodes: t.graph.as_ref().map(Graph::len),
        in_store,
        live_sum: live,
        deltas: 0,
        base_bytes: meta.len() as u64 + vector_bytes + graph_bytes,
        delta_bytes: 0,
    })
}

/// Writes vectors as little-endian halves through a small buffer, synced; returns their
/// checksum and byte count.
fn write_halves<'a>(
    path: &Path,
    vectors: impl Iterator<Item = &'a [u16]>,
) -> Result<(u32, u64), Error> {
    let mut h = crc32fast::Hasher::new();
    let mut f = File::create(path)?;
    let mut buf = Vec::with_capacity(1 << 16);
    let mut total = 0u64;
    for v in vectors {
        buf.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        if buf.len() >= 1 << 16 {
            h.update(&buf);
            f.write_all(&buf)?;
            total += buf.len() as u64;
            buf.clear();
        }
    }
    h.update(&buf);
    f.write_all(&buf)?;
    total += buf.len() as u64;
    f.sync_all()?;
    Ok((h.finalize(), total))
}

/// Checksum of the live slots' vectors in slot order (meta version 4's).
fn live_crc(t: &Tenant, dims: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let mut buf = Vec::with_capacity(dims * 2);
    for (i, s) in t.slots.iter().enumerate() {
        if s.alive {
            buf.clear();
            buf.extend(
                t.vector(i as u32, dims)
                    .iter()
                    .flat_map(|x| x.to_le_bytes()),
            );
            h.update(&buf);
        }
    }
    h.finalize()
}

/// One live slot's part of [`live_sum`]: the CRC of its vector and its number, mixed by a
/// bijection (splitmix64's finaliser), so a slot whose vector or number differs always
/// changes the sum.
fn slot_term(slot: u32, v: &[u16], buf: &mut Vec<u8>) -> u64 {
    buf.clear();
    buf.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    let mut z = u64::from(slot) << 32 | u64::from(crc32fast::hash(buf));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Checksum of the live slots' vectors what a dump that leaves them to the source promises
/// they are (meta version 5): the wrapping sum of [`slot_term`] over live slots, which a
/// delta updates from the slots it adds and deletes alone.
fn live_sum(t: &Tenant, dims: usize) -> u64 {
    let mut buf = Vec::with_capacity(dims * 2);
    t.slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.alive)
        .fold(0u64, |sum, (i, _)| {
            sum.wrapping_add(slot_term(i as u32, t.vector(i as u32, dims), &mut buf))
        })
}

/// Cosine of two vectors of halves (their norms are 1 only to rounding).
fn cosine(a: &[u16], b: &[u16]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(from_f16(x)), f64::from(from_f16(y)));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        // Two zero vectors are the same; a zero and another are not.
        return if aa == bb { 1.0 } else { 0.0 };
    }
    ab / (aa * bb).sqrt()
}

pub(super) fn tenant_from_hex(name: &str) -> Option<TenantId> {
    let bytes = hex::decode(name).ok()?;
    TenantId::parse(std::str::from_utf8(&bytes).ok()?)
}

pub(super) fn write_untrusted(dir: &Path, set: &HashSet<String>) -> Result<(), Error> {
    let mut names: Vec<&str> = set.iter().map(String::as_str).collect();
    names.sort_unstable();
    let mut body = names.join("\n");
    body.push('\n');
    write_atomic(&dir.join("UNTRUSTED"), body.as_bytes())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// temp + fsync + rename + fsync(dir): readers see the old or the new file, never half.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// An id's 16 bytes (ids are UUIDs; see `types.rs`).
fn id_bytes(s: &str) -> Result<[u8; 16], Error> {
    uuid::Uuid::parse_str(s)
        .map(|u| *u.as_bytes())
        .map_err(|_| Error::Invalid(format!("id {s:?} is not a UUID")))
}

fn id_text(b: &[u8]) -> String {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    uuid::Uuid::from_bytes(a).hyphenated().to_string()
}

/// One slot as meta.bin (version 5) and deltas hold it: alive, chunk id, document number.
fn put_slot(b: &mut Vec<u8>, s: &super::Slot) -> Result<(), Error> {
    b.push(u8::from(s.alive));
    b.extend_from_slice(&id_bytes(s.chunk.as_str())?);
    b.extend_from_slice(&s.doc.to_le_bytes());
    Ok(())
}

fn encode_meta(
    t: &Tenant,
    dims: usize,
    model_id: &str,
    vectors_crc: u32,
    graph_name: &str,
    graph_crc: u32,
    live_in_store: Option<u64>,
) -> Result<Vec<u8>, Error> {
    let mut b = Vec::with_capacity(64 + t.docs.len() * 16 + t.slots.len() * 21);
    b.extend_from_slice(META_MAGIC);
    b.extend_from_slice(&META_VERSION.to_le_bytes());
    b.extend_from_slice(&(dims as u64).to_le_bytes());
    put_str(&mut b, model_id);
    b.extend_from_slice(&(t.docs.len() as u64).to_le_bytes());
    for d in &t.docs {
        b.extend_from_slice(&id_bytes(d.as_str())?);
    }
    b.extend_from_slice(&(t.slots.len() as u64).to_le_bytes());
    for s in &t.slots {
        put_slot(&mut b, s)?;
    }
    b.extend_from_slice(&vectors_crc.to_le_bytes());
    put_str(&mut b, graph_name);
    b.extend_from_slice(&graph_crc.to_le_bytes());
    b.push(u8::from(live_in_store.is_some()));
    b.extend_from_slice(&live_in_store.unwrap_or(0).to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    Ok(b)
}

/// Rewrites the current generation under `tdir` (a dump holding its vectors, without
/// deltas) as meta `version` (1 to 4) wrote it, for tests of loading older dumps: ids as
/// text; `vectors.f32` for versions 1 and 2 and hnsw_rs graph files for 1; for version 4
/// with `in_store`, only the dead slots' vectors and a CRC of the live ones. Returns the
/// meta.bin path.
#[cfg(test)]
pub(crate) fn write_old_generation(
    tdir: &Path,
    dims: usize,
    model_id: &str,
    version: u32,
    in_store: bool,
) -> std::path::PathBuf {
    let loaded = load_tenant(tdir, dims, model_id).expect("a current generation");
    let t = loaded.tenant;
    assert!(
        loaded.live_in_store.is_none(),
        "the dump must hold its vectors"
    );
    let current = fs::read_to_string(tdir.join("CURRENT")).unwrap();
    let gen_dir = tdir.join(current.trim());
    for e in fs::read_dir(&gen_dir).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    let halves = |slots: &mut dyn Iterator<Item = usize>| -> Vec<u8> {
        slots
            .flat_map(|i| t.vector(i as u32, dims).to_vec())
            .flat_map(|x| x.to_le_bytes())
            .collect()
    };
    let (file, bytes) = if version <= 2 {
        let f32s: Vec<u8> = t
            .vectors
            .iter()
            .flat_map(|&x| from_f16(x).to_le_bytes())
            .collect();
        ("vectors.f32", f32s)
    } else if version == 4 && in_store {
        let dead = &mut (0..t.slots.len()).filter(|&i| !t.slots[i].alive);
        (DEAD_FILE, halves(dead))
    } else {
        (VECTORS_FILE, halves(&mut (0..t.slots.len())))
    };
    fs::write(gen_dir.join(file), &bytes).unwrap();
    let (graph_name, graph_crc) = match (&t.graph, version) {
        (None, _) => (String::new(), 0),
        (Some(_), 1) => {
            fs::write(gen_dir.join("graph.hnsw.graph"), b"old format").unwrap();
            ("graph".to_string(), 0)
        }
        (Some(g), _) => {
            let g = g.encode();
            fs::write(gen_dir.join(GRAPH_FILE), &g).unwrap();
            (GRAPH_FILE.to_string(), crc32fast::hash(&g))
        }
    };
    let mut b = Vec::new();
    b.extend_from_slice(META_MAGIC);
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&(dims as u64).to_le_bytes());
    put_str(&mut b, model_id);
    b.extend_from_slice(&(t.slots.len() as u64).to_le_bytes());
    for s in &t.slots {
        b.push(u8::from(s.alive));
        put_str(&mut b, s.chunk.as_str());
        put_str(&mut b, t.document(s).as_str());
    }
    b.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    put_str(&mut b, &graph_name);
    b.extend_from_slice(&graph_crc.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    if version == 4 {
        b.push(u8::from(in_store));
        let crc = if in_store { live_crc(&t, dims) } else { 0 };
        b.extend_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let meta = gen_dir.join("meta.bin");
    fs::write(&meta, &b).unwrap();
    meta
}

/// Encodes the changes since `disk` (slots added, `killed`, the graph's changed nodes) as
/// one delta file's bytes, with the live checksum after it; None when nothing changed.
fn encode_delta(
    t: &Tenant,
    disk: &OnDisk,
    killed: &[u32],
    dims: usize,
) -> Result<Option<(Vec<u8>, u64)>, Error> {
    let (s0, s1) = (disk.slots, t.slots.len());
    let old_kills: Vec<u32> = killed
        .iter()
        .copied()
        .filter(|&k| (k as usize) < s0)
        .collect();
    let new_dead: Vec<u32> = (s0..s1)
        .filter(|&i| !t.slots[i].alive)
        .map(|i| i as u32)
        .collect();
    let mut b = Vec::with_capacity(64 + (s1 - s0) * (21 + dims * 2));
    b.extend_from_slice(DELTA_MAGIC);
    b.extend_from_slice(&delta_version().to_le_bytes());
    b.extend_from_slice(&(disk.deltas + 1).to_le_bytes());
    for x in [s0, s1, disk.docs, t.docs.len()] {
        b.extend_from_slice(&(x as u64).to_le_bytes());
    }
    for d in &t.docs[disk.docs..] {
        b.extend_from_slice(&id_bytes(d.as_str())?);
    }
    for s in &t.slots[s0..] {
        put_slot(&mut b, s)?;
    }
    b.extend_from_slice(&(old_kills.len() as u64).to_le_bytes());
    old_kills
        .iter()
        .for_each(|k| b.extend_from_slice(&k.to_le_bytes()));
    let put_vector = |b: &mut Vec<u8>, slot: u32| {
        t.vector(slot, dims)
            .iter()
            .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
    };
    let mut sum = disk.live_sum;
    if disk.in_store {
        // The store deleted these: the files keep them for the graph's walks.
        b.extend_from_slice(&((old_kills.len() + new_dead.len()) as u64).to_le_bytes());
        for &slot in old_kills.iter().chain(&new_dead) {
            b.extend_from_slice(&slot.to_le_bytes());
            put_vector(&mut b, slot);
        }
        let mut buf = Vec::with_capacity(dims * 2);
        for &k in &old_kills {
            sum = sum.wrapping_sub(slot_term(k, t.vector(k, dims), &mut buf));
        }
        for i in (s0..s1).filter(|&i| t.slots[i].alive) {
            sum = sum.wrapping_add(slot_term(i as u32, t.vector(i as u32, dims), &mut buf));
        }
    } else {
        for slot in s0..s1 {
            put_vector(&mut b, slot as u32);
        }
    }
    b.extend_from_slice(&(t.live() as u64).to_le_bytes());
    b.extend_from_slice(&sum.to_le_bytes());
    let mut graph_nodes = 0;
    match &t.graph {
        Some(g) => {
            b.push(1);
            graph_nodes = put_graph_changes(g, disk.graph_nodes.unwrap_or(0), &mut b);
        }
        None => b.push(0),
    }
    if s0 == s1 && old_kills.is_empty() && disk.docs == t.docs.len() && graph_nodes == 0 {
        return Ok(None);
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    Ok(Some((b, sum)))
}

#[cfg(test)]
thread_local! {
    /// Set by [`writing_v1_deltas`]: the deltas this thread writes are version 1.
    static V1_DELTAS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the deltas that persists on this thread write laid out as delta version
/// 1 was (the same frame; the graph's changed lists whole, as session 10 wrote them), for
/// tests that files of that version still load.
#[cfg(test)]
pub(crate) fn writing_v1_deltas<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            V1_DELTAS.with(|v| v.set(false));
        }
    }
    V1_DELTAS.with(|v| v.set(true));
    let _reset = Reset;
    f()
}

/// The version a delta written now has: [`DELTA_VERSION`] (tests may write 1).
fn delta_version() -> u32 {
    #[cfg(test)]
    if V1_DELTAS.with(std::cell::Cell::get) {
        return 1;
    }
    DELTA_VERSION
}

/// Appends the graph's changes since it had `before` nodes as [`delta_version`] lays them
/// out; returns how many nodes' lists they hold.
fn put_graph_changes(g: &Graph, before: usize, b: &mut Vec<u8>) -> usize {
    #[cfg(test)]
    if V1_DELTAS.with(std::cell::Cell::get) {
        return g.encode_changes_whole(before, b);
    }
    g.encode_changes(before, b)
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// A cursor over meta.bin or a delta whose every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("file is truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let lo = u64::from(self.u32()?);
        let hi = u64::from(self.u32()?);
        Ok(lo | (hi << 32))
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "meta.bin has a bad string".into())
    }
    /// `n` as a count of items of `width` bytes each, refused when the rest is shorter (a
    /// damaged count must not reserve memory for it).
    fn count(&mut self, width: usize) -> Result<usize, String> {
        let n = self.u64()?;
        if n > (self.0.len() / width.max(1)) as u64 {
            return Err("file is truncated".into());
        }
        Ok(n as usize)
    }
    fn id(&mut self) -> Result<String, String> {
        Ok(id_text(self.take(16)?))
    }
}

/// Checks a file's trailing CRC; the body before it.
fn checked_body<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8], String> {
    if bytes.len() < 4 {
        return Err(format!("{what} is truncated"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(format!("{what} checksum mismatch"));
    }
    Ok(body)
}

/// What a dump that leaves the live vectors to the source says they are.
#[derive(Clone, Copy)]
enum LiveCheck {
    /// Version 4: [`live_crc`].
    Crc(u32),
    /// Version 5: [`live_sum`].
    Sum(u64),
}

/// A tenant read from its dump, before [`vectors_from_source`].
pub(super) struct Loaded {
    tenant: Tenant,
    /// The dump left the live vectors to the source: their checksum.
    live_in_store: Option<LiveCheck>,
}

/// Loads one tenant's current generation and its deltas, verifying every checksum and
/// every graph link so that damaged files are an error (the tenant is rebuilt), never a
/// panic. Live vectors the dump left to the source are zeros until
/// [`vectors_from_source`].
pub(super) fn load_tenant(tdir: &Path, dims: usize, model_id: &str) -> Result<Loaded, String> {
    let current = fs::read_to_string(tdir.join("CURRENT")).map_err(|e| format!("CURRENT: {e}"))?;
    let gen_name = current.trim().to_string();
    let gen_dir = tdir.join(&gen_name);
    let meta = fs::read(gen_dir.join("meta.bin")).map_err(|e| format!("meta.bin: {e}"))?;
    let body = checked_body(&meta, "meta.bin")?;
    let mut r = Reader(body);
    if r.take(4)? != META_MAGIC {
        return Err("meta.bin has another format".into());
    }
    let version = r.u32()?;
    if !(1..=META_VERSION).contains(&version) {
        return Err("meta.bin has another format".into());
    }
    if r.u64()? != dims as u64 || r.str()? != model_id {
        return Err("made for another model or dimension count".into());
    }
    let mut t = Tenant::default();
    let mut entries: Vec<(bool, ChunkId, DocumentId)> = Vec::new();
    if version >= 5 {
        let docs = r.count(16)?;
        for _ in 0..docs {
            let doc = DocumentId::parse(&r.id()?).ok_or("meta.bin has a bad document id")?;
            add_document(&mut t, doc)?;
        }
        let n = r.count(21)?;
        entries.reserve(n);
        for _ in 0..n {
            entries.push(read_slot(&mut r, &t)?);
        }
    } else {
        let n = r.u64()? as usize;
        entries.reserve(n.min(1 << 24));
        for _ in 0..n {
            let alive = r.u8()? == 1;
            let chunk = ChunkId::parse(&r.str()?).ok_or("meta.bin has a bad chunk id")?;
            let doc = DocumentId::parse(&r.str()?).ok_or("meta.bin has a bad document id")?;
            entries.push((alive, chunk, doc));
        }
    }
    let n = entries.len();
    let dead_slots: Vec<u32> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.0)
        .map(|(i, _)| i as u32)
        .collect();
    let alive_count = n - dead_slots.len();
    let vectors_crc = r.u32()?;
    let graph_name = r.str()?;
    let graph_crc = r.u32()?;
    if version <= 4 {
        let _v1_data_crc = r.u32()?;
    }
    let live_in_store = match version {
        5.. => {
            let in_store = r.u8()? == 1;
            let sum = r.u64()?;
            in_store.then_some(LiveCheck::Sum(sum))
        }
        4 => {
            let in_store = r.u8()? == 1;
            let crc = r.u32()?;
            in_store.then_some(LiveCheck::Crc(crc))
        }
        _ => None,
    };
    if !r.0.is_empty() {
        return Err("meta.bin has trailing bytes".into());
    }

    // Decoded straight into the tenant's array through a small buffer: the file is never
    // in memory whole beside the vectors.
    let (file_name, width, count) = match (version, live_in_store) {
        (4.., Some(_)) => (DEAD_FILE, 2, dead_slots.len()),
        (3.., None) => (VECTORS_FILE, 2, n),
        _ => ("vectors.f32", 4, n),
    };
    let path = gen_dir.join(file_name);
    let file = File::open(&path).map_err(|e| format!("{file_name}: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("{file_name}: {e}"))?
        .len();
    let want_bytes = count
        .checked_mul(dims)
        .and_then(|x| x.checked_mul(width))
        .ok_or("meta.bin has an impossible vector count")?;
    if len != want_bytes as u64 {
        return Err(format!("{file_name} does not match meta.bin"));
    }
    let mut file_vectors = Vec::with_capacity(count * dims);
    let mut rd = BufReader::with_capacity(1 << 16, file);
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut left = want_bytes;
    while left > 0 {
        let want = left.min(buf.len());
        rd.read_exact(&mut buf[..want])
            .map_err(|e| format!("{file_name}: {e}"))?;
        h.update(&buf[..want]);
        if width == 2 {
            file_vectors.extend(
                buf[..want]
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]])),
            );
        } else {
            file_vectors.extend(
                buf[..want]
                    .chunks_exact(4)
                    .map(|b| to_f16(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            );
        }
        left -= want;
    }
    if h.finalize() != vectors_crc {
        return Err(format!("{file_name} does not match meta.bin"));
    }
    if live_in_store.is_some() {
        // Dead slots' vectors from the file, live ones zero until the source fills them.
        t.vectors = vec![0; n * dims];
        for (k, &slot) in dead_slots.iter().enumerate() {
            let at = slot as usize * dims;
            t.vectors[at..at + dims].copy_from_slice(&file_vectors[k * dims..(k + 1) * dims]);
        }
    } else {
        t.vectors = file_vectors;
    }
    let docs = t.docs.len();
    for (_, chunk, doc) in entries {
        // Slots for alive and dead alike keep slot numbers (the graph's node ids); the
        // dead are killed below.
        t.push_slot(chunk, doc).map_err(|e| e.to_string())?;
    }
    if version >= 5 && t.docs.len() != docs {
        return Err("meta.bin names a document its table lacks".into());
    }
    for s in dead_slots {
        t.kill(s);
    }
    if t.live() != alive_count {
        return Err("meta.bin lists a live chunk twice".into());
    }
    let mut graph_bytes = 0u64;
    if version >= 2 && !graph_name.is_empty() {
        if graph_name != GRAPH_FILE {
            return Err("meta.bin names an unknown graph file".into());
        }
        let bytes = fs::read(gen_dir.join(GRAPH_FILE)).map_err(|e| format!("{graph_name}: {e}"))?;
        if crc32fast::hash(&bytes) != graph_crc {
            return Err("graph file does not match meta.bin".into());
        }
        t.graph = Some(Graph::decode(&bytes, dims, n)?);
        graph_bytes = bytes.len() as u64;
    }
    if version < META_VERSION {
        // Rewritten by the next persist. Not listed as untrusted: these files are still a
        // valid copy, so a crash before then only means converting them once more.
        t.outdated.store(true, std::sync::atomic::Ordering::Release);
        return Ok(Loaded {
            tenant: t,
            live_in_store,
        });
    }
    let mut disk = OnDisk {
        generation: gen_name,
        slots: n,
        docs: t.docs.len(),
        graph_nodes: t.graph.as_ref().map(Graph::len),
        in_store: live_in_store.is_some(),
        live_sum: match live_in_store {
            Some(LiveCheck::Sum(s)) => s,
            _ => 0,
        },
        deltas: 0,
        base_bytes: meta.len() as u64 + len + graph_bytes,
        delta_bytes: 0,
    };
    apply_deltas(&gen_dir, &mut t, &mut disk, dims)?;
    if let Some(g) = &mut t.graph {
        g.changes_applied();
    }
    let live_in_store = disk.in_store.then_some(LiveCheck::Sum(disk.live_sum));
    t.journal.get_mut().unwrap_or_else(|e| e.into_inner()).disk = Some(disk);
    Ok(Loaded {
        tenant: t,
        live_in_store,
    })
}

/// Interns a document from a table in files: its number is its place there.
fn add_document(t: &mut Tenant, doc: DocumentId) -> Result<(), String> {
    let n = t.docs.len() as u32;
    if t.doc_nums.insert(doc.clone(), n).is_some() {
        return Err("a document is listed twice".into());
    }
    t.docs.push(doc);
    Ok(())
}

/// One slot as [`put_slot`] wrote it, its document number checked against the table.
fn read_slot(r: &mut Reader, t: &Tenant) -> Result<(bool, ChunkId, DocumentId), String> {
    let alive = r.u8()? == 1;
    let chunk = ChunkId::parse(&r.id()?).ok_or("a bad chunk id")?;
    let doc = t
        .docs
        .get(r.u32()? as usize)
        .ok_or("a slot names a missing document")?
        .clone();
    Ok((alive, chunk, doc))
}

/// Applies the generation's deltas 1, 2, ... in order to a tenant loaded from its base.
fn apply_deltas(
    gen_dir: &Path,
    t: &mut Tenant,
    disk: &mut OnDisk,
    dims: usize,
) -> Result<(), String> {
    loop {
        let seq = disk.deltas + 1;
        let path = gen_dir.join(delta_name(seq));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(format!("{}: {e}", delta_name(seq))),
        };
        apply_delta(&bytes, seq, t, disk, dims).map_err(|e| format!("{}: {e}", delta_name(seq)))?;
        disk.deltas = seq;
        disk.delta_bytes += bytes.len() as u64;
    }
    // A later delta after a missing one: the files lost a change.
    for entry in fs::read_dir(gen_dir).map_err(|e| e.to_string())? {
        let name = entry.map_err(|e| e.to_string())?.file_name();
        let later = name
            .to_str()
            .and_then(|n| {
                n.strip_prefix("delta-")?
                    .strip_suffix(".bin")?
                    .parse::<u32>()
                    .ok()
            })
            .is_some_and(|k| k > disk.deltas);
        if later {
            return Err(format!("delta {} is missing", disk.deltas + 1));
        }
    }
    Ok(())
}

/// Applies one delta (`encode_delta`'s bytes) to the tenant its files describe so far.
fn apply_delta(
    bytes: &[u8],
    seq: u32,
    t: &mut Tenant,
    disk: &mut OnDisk,
    dims: usize,
) -> Result<(), String> {
    let mut r = Reader(checked_body(bytes, "delta")?);
    if r.take(4)? != DELTA_MAGIC {
        return Err("another format".into());
    }
    let format = match r.u32()? {
        1 => GraphFormat::WholeLists,
        DELTA_VERSION => GraphFormat::Diffs,
        _ => return Err("another format".into()),
    };
    let (file_seq, s0, s1, d0, d1) = (r.u32()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
    if file_seq != seq
        || s0 != t.slots.len() as u64
        || d0 != t.docs.len() as u64
        || s1 < s0
        || d1 < d0
    {
        return Err("it does not follow the files before it".into());
    }
    if (d1 - d0) > (r.0.len() / 16) as u64 || (s1 - s0) > (r.0.len() / 21) as u64 {
        return Err("file is truncated".into());
    }
    for _ in d0..d1 {
        let doc = DocumentId::parse(&r.id()?).ok_or("a bad document id")?;
        add_document(t, doc)?;
    }
    let mut new_dead = Vec::new();
    for i in s0..s1 {
        let (alive, chunk, doc) = read_slot(&mut r, t)?;
        t.push_slot(chunk, doc).map_err(|e| e.to_string())?;
        if !alive {
            new_dead.push(i as u32);
        }
    }
    let (s0, s1) = (s0 as usize, s1 as usize);
    let kills = r.count(4)?;
    for _ in 0..kills {
        let k = r.u32()?;
        if k as usize >= s0 {
            return Err("it deletes a slot it does not follow".into());
        }
        t.kill(k);
    }
    if disk.in_store {
        t.vectors.resize(s1 * dims, 0);
        let dead = r.count(4 + dims * 2)?;
        for _ in 0..dead {
            let slot = r.u32()? as usize;
            if slot >= s1 {
                return Err("a vector of a missing slot".into());
            }
            let v = r.take(dims * 2)?;
            for (x, b) in t.vectors[slot * dims..(slot + 1) * dims]
                .iter_mut()
                .zip(v.chunks_exact(2))
            {
                *x = u16::from_le_bytes([b[0], b[1]]);
            }
        }
    } else {
        let v = r.take((s1 - s0) * dims * 2)?;
        t.vectors
            .extend(v.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])));
    }
    for s in new_dead {
        t.kill(s);
    }
    let live = r.u64()?;
    let sum = r.u64()?;
    if t.live() as u64 != live {
        return Err("its live count does not match".into());
    }
    match (r.u8()?, &mut t.graph) {
        (1, Some(g)) => g.apply_changes(r.0, format)?,
        (0, None) if r.0.is_empty() => {}
        _ => return Err("its graph does not match the files before it".into()),
    }
    disk.slots = s1;
    disk.docs = t.docs.len();
    disk.graph_nodes = t.graph.as_ref().map(Graph::len);
    disk.live_sum = sum;
    Ok(())
}

/// Completes a [`load_tenant`] with `source`, the store's copy of the tenant's vectors. A
/// dump that left the live vectors to the source needs every one of them, and their
/// checksum must be the dump's (else an error: the tenant is rebuilt). A dump that holds
/// its vectors adopts the source's when every live one is there and the same vector (to
/// rounding): the next persist then leaves them out. Otherwise the tenant keeps its own.
pub(super) fn vectors_from_source(
    loaded: Loaded,
    source: Option<&dyn VectorSource>,
    id: &TenantId,
    dims: usize,
) -> Result<Tenant, String> {
    use std::sync::atomic::Ordering;
    let Loaded {
        tenant: mut t,
        live_in_store,
    } = loaded;
    let Some(source) = source else {
        return match live_in_store {
            Some(_) => Err("its vectors are in the store, which this index cannot read".into()),
            None => Ok(t),
        };
    };
    let mut seen = vec![false; t.slots.len()];
    let mut matched = 0usize;
    let mut unequal = 0usize;
    {
        let Tenant {
            by_chunk, vectors, ..
        } = &mut t;
        source.tenant_vectors(id, &mut |chunk, halves| {
            let Some(&slot) = by_chunk.get(chunk) else {
                return;
            };
            let slot = slot as usize;
            if halves.len() != dims || std::mem::replace(&mut seen[slot], true) {
                return;
            }
            let Some(v) = stored_from_halves(halves) else {
                return;
            };
            let have = &mut vectors[slot * dims..(slot + 1) * dims];
            if live_in_store.is_none() && cosine(have, &v) < SAME_VECTOR {
                unequal += 1;
                return;
            }
            have.copy_from_slice(&v);
            matched += 1;
        })?;
    }
    match live_in_store {
        Some(check) => {
            if matched != t.live() {
                return Err(format!(
                    "the store holds {matched} of its {} vectors",
                    t.live()
                ));
            }
            let same = match check {
                LiveCheck::Crc(crc) => live_crc(&t, dims) == crc,
                LiveCheck::Sum(sum) => live_sum(&t, dims) == sum,
            };
            if !same {
                return Err("the store's vectors are not the ones its graph was built for".into());
            }
            t.dumped_in_store.store(true, Ordering::Release);
        }
        None if matched == t.live() && unequal == 0 => {
            // The store holds the same vectors: leave them out of the next dump.
            t.outdated.store(true, Ordering::Release);
        }
        None => t.own_vectors = true,
    }
    Ok(t)
}
