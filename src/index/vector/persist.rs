//! Persistence of the vector index: the on-disk layout, atomic generations, checksums and the
//! UNTRUSTED list. Loads verify every checksum, and the graph parser checks every id.
//!
//! On disk:
//! ```text
//! <dir>/MANIFEST                 format, model id and dimensions of everything below
//! <dir>/UNTRUSTED                tenants whose files are stale or invalid (see below)
//! <dir>/t-<hex tenant>/CURRENT   name of the current generation directory
//! <dir>/t-<hex tenant>/g<N>/     meta.bin, vectors.f16 or dead.f16 [, graph.bin]
//! ```
//! A generation is written to `g<N>.tmp`, synced, renamed, then `CURRENT` is replaced by
//! rename, so a crash leaves either the old or the new generation. A tenant is added to
//! `UNTRUSTED` (synced) before its first unpersisted change and removed when it is
//! persisted again, so after a crash its stale files (which could still hold deleted
//! chunks) are not served: it comes back empty and reported by
//! [`VectorIndex::tenants_needing_rebuild`](super::VectorIndex::tenants_needing_rebuild).
//!
//! Vectors: an index with a [`VectorSource`] (the store, which keeps every chunk's vector)
//! writes only the vectors of dead slots (`dead.f16`: tombstones still route graph walks,
//! and the store deleted them) and, in meta.bin, a checksum of the live slots' vectors in
//! slot order; a load takes the live ones from the source and checks that checksum, so a
//! graph is never served against vectors it was not built for. Without a source, or for a
//! tenant marked [`keep_own_vectors`](super::VectorIndex::keep_own_vectors), every slot's
//! vector is in `vectors.f16` (little-endian IEEE halves, as held in memory). `graph.bin`
//! holds links only. Older generations still load, and are marked changed so the next
//! persist rewrites them in this format (once, not at every start): meta version 3
//! (`vectors.f16` always), 2 (`vectors.f32` and `graph.bin`; the vectors are rounded to
//! halves on load) and 1 (graphs in hnsw_rs's format, which held a second copy of every
//! vector: ignored, and the graph is rebuilt in memory from `vectors.f32`). When a source
//! holds the same vectors as such a dump (each within rounding), it is adopted.

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
/// 4: `vectors.f16` or (vectors in the source) `dead.f16`, and `graph.bin`. 3:
/// `vectors.f16` and `graph.bin`. 2: `vectors.f32` and `graph.bin` (this crate's graph). 1:
/// `vectors.f32` and hnsw_rs graph files (ignored; rebuilt).
const META_VERSION: u32 = 4;
const VECTORS_FILE: &str = "vectors.f16";
const DEAD_FILE: &str = "dead.f16";
/// A vector from the source stands for a dumped one (older format) when their cosine is at
/// least this: rounding moves it by ~1e-7, another model's or text's vector by far more.
const SAME_VECTOR: f64 = 0.9999;
const GRAPH_FILE: &str = "graph.bin";

/// The MANIFEST text for vectors of `dims` dimensions made by `model_id`: an index whose
/// MANIFEST differs was made for something else and is rebuilt.
pub(super) fn manifest(dims: usize, model_id: &str) -> String {
    format!("{MANIFEST_FORMAT}\nmodel={model_id}\ndims={dims}\n")
}

/// Writes one tenant as a new generation under `tdir` and switches `CURRENT` to it;
/// `in_store`: the live vectors are left to the index's source.
pub(super) fn dump_tenant(
    tdir: &Path,
    t: &Tenant,
    dims: usize,
    model_id: &str,
    in_store: bool,
) -> Result<(), Error> {
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
    let (vectors_crc, live_crc) = if in_store {
        let dead = t
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.alive)
            .map(|(i, _)| t.vector(i as u32, dims));
        let crc = write_halves(&tmp.join(DEAD_FILE), dead)?;
        (crc, live_crc(t, dims))
    } else {
        let all = t.vectors.chunks(dims.max(1));
        (write_halves(&tmp.join(VECTORS_FILE), all)?, 0)
    };
    let (graph_name, graph_crc) = match &t.graph {
        None => (String::new(), 0),
        Some(g) => {
            let bytes = g.encode();
            write_synced(&tmp.join(GRAPH_FILE), &bytes)?;
            (GRAPH_FILE.to_string(), crc32fast::hash(&bytes))
        }
    };
    let meta = encode_meta(
        t,
        dims,
        model_id,
        vectors_crc,
        &graph_name,
        graph_crc,
        in_store.then_some(live_crc),
    );
    write_synced(&tmp.join("meta.bin"), &meta)?;
    sync_dir(&tmp)?;
    let gen_dir = tdir.join(&gen_name);
    fs::rename(&tmp, &gen_dir)?;
    write_atomic(&tdir.join("CURRENT"), format!("{gen_name}\n").as_bytes())?;
    // Older generations are garbage once CURRENT points past them.
    for entry in fs::read_dir(tdir)? {
        let entry = entry?;
        let name = entry.file_name();
        if entry.path().is_dir() && name.to_string_lossy() != gen_name {
            fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// Writes vectors as little-endian halves through a small buffer, synced; returns their
/// checksum.
fn write_halves<'a>(path: &Path, vectors: impl Iterator<Item = &'a [u16]>) -> Result<u32, Error> {
    let mut h = crc32fast::Hasher::new();
    let mut f = File::create(path)?;
    let mut buf = Vec::with_capacity(1 << 16);
    for v in vectors {
        buf.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        if buf.len() >= 1 << 16 {
            h.update(&buf);
            f.write_all(&buf)?;
            buf.clear();
        }
    }
    h.update(&buf);
    f.write_all(&buf)?;
    f.sync_all()?;
    Ok(h.finalize())
}

/// Checksum of the live slots' vectors in slot order: what a dump that leaves them to the
/// source promises they are.
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

fn encode_meta(
    t: &Tenant,
    dims: usize,
    model_id: &str,
    vectors_crc: u32,
    graph_name: &str,
    graph_crc: u32,
    live_in_store: Option<u32>,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + t.slots.len() * 80);
    b.extend_from_slice(META_MAGIC);
    b.extend_from_slice(&META_VERSION.to_le_bytes());
    b.extend_from_slice(&(dims as u64).to_le_bytes());
    put_str(&mut b, model_id);
    b.extend_from_slice(&(t.slots.len() as u64).to_le_bytes());
    for s in &t.slots {
        b.push(u8::from(s.alive));
        put_str(&mut b, s.chunk.as_str());
        put_str(&mut b, t.document(s).as_str());
    }
    b.extend_from_slice(&vectors_crc.to_le_bytes());
    put_str(&mut b, graph_name);
    b.extend_from_slice(&graph_crc.to_le_bytes());
    // Version 1's data checksum, unused since.
    b.extend_from_slice(&0u32.to_le_bytes());
    b.push(u8::from(live_in_store.is_some()));
    b.extend_from_slice(&live_in_store.unwrap_or(0).to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// A cursor over meta.bin whose every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("meta.bin is truncated".into());
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
}

/// A tenant read from its dump, before [`vectors_from_source`].
pub(super) struct Loaded {
    tenant: Tenant,
    /// The dump left the live vectors to the source: their checksum.
    live_in_store: Option<u32>,
}

/// Loads one tenant's current generation, verifying every checksum and every graph link
/// so that damaged files are an error (the tenant is rebuilt), never a panic. Live vectors
/// the dump left to the source are zeros until [`vectors_from_source`].
pub(super) fn load_tenant(tdir: &Path, dims: usize, model_id: &str) -> Result<Loaded, String> {
    let current = fs::read_to_string(tdir.join("CURRENT")).map_err(|e| format!("CURRENT: {e}"))?;
    let gen_dir = tdir.join(current.trim());
    let meta = fs::read(gen_dir.join("meta.bin")).map_err(|e| format!("meta.bin: {e}"))?;
    if meta.len() < 4 {
        return Err("meta.bin is truncated".into());
    }
    let (body, crc) = meta.split_at(meta.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("meta.bin checksum mismatch".into());
    }
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
    let n = r.u64()? as usize;
    let mut t = Tenant::default();
    let mut dead_slots = Vec::new();
    let mut alive_count = 0usize;
    let mut entries = Vec::with_capacity(n.min(1 << 24));
    for i in 0..n {
        let alive = r.u8()? == 1;
        let chunk = ChunkId::parse(&r.str()?).ok_or("meta.bin has a bad chunk id")?;
        let doc = DocumentId::parse(&r.str()?).ok_or("meta.bin has a bad document id")?;
        if alive {
            alive_count += 1;
        } else {
            dead_slots.push(i as u32);
        }
        entries.push((chunk, doc));
    }
    let vectors_crc = r.u32()?;
    let graph_name = r.str()?;
    let graph_crc = r.u32()?;
    let _v1_data_crc = r.u32()?;
    let live_in_store = if version >= 4 {
        let in_store = r.u8()? == 1;
        let crc = r.u32()?;
        in_store.then_some(crc)
    } else {
        None
    };

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
    for (chunk, doc) in entries {
        // Slots for alive and dead alike keep slot numbers (the graph's node ids); the
        // dead are killed below.
        t.push_slot(chunk, doc).map_err(|e| e.to_string())?;
    }
    for s in dead_slots {
        t.kill(s);
    }
    if t.live() != alive_count {
        return Err("meta.bin lists a live chunk twice".into());
    }
    if version >= 2 && !graph_name.is_empty() {
        if graph_name != GRAPH_FILE {
            return Err("meta.bin names an unknown graph file".into());
        }
        let bytes = fs::read(gen_dir.join(GRAPH_FILE)).map_err(|e| format!("{graph_name}: {e}"))?;
        if crc32fast::hash(&bytes) != graph_crc {
            return Err("graph file does not match meta.bin".into());
        }
        t.graph = Some(Graph::decode(&bytes, dims, n)?);
    }
    if version < META_VERSION {
        // Rewritten by the next persist. Not listed as untrusted: these files are still a
        // valid copy, so a crash before then only means converting them once more.
        t.outdated.store(true, std::sync::atomic::Ordering::Release);
    }
    Ok(Loaded {
        tenant: t,
        live_in_store,
    })
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
        Some(crc) => {
            if matched != t.live() {
                return Err(format!(
                    "the store holds {matched} of its {} vectors",
                    t.live()
                ));
            }
            if live_crc(&t, dims) != crc {
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
