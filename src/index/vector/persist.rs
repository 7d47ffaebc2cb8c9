//! Persistence of the vector index: the on-disk layout, atomic generations, checksums and the
//! UNTRUSTED list. Loads verify every checksum, and the graph parser checks every id.
//!
//! On disk:
//! ```text
//! <dir>/MANIFEST                 format, model id and dimensions of everything below
//! <dir>/UNTRUSTED                tenants whose files are stale or invalid (see below)
//! <dir>/t-<hex tenant>/CURRENT   name of the current generation directory
//! <dir>/t-<hex tenant>/g<N>/     meta.bin, vectors.f16 [, graph.bin]
//! ```
//! A generation is written to `g<N>.tmp`, synced, renamed, then `CURRENT` is replaced by
//! rename, so a crash leaves either the old or the new generation. A tenant is added to
//! `UNTRUSTED` (synced) before its first unpersisted change and removed when it is
//! persisted again, so after a crash its stale files (which could still hold deleted
//! chunks) are not served: it comes back empty and reported by
//! [`VectorIndex::tenants_needing_rebuild`](super::VectorIndex::tenants_needing_rebuild).
//!
//! Vectors are on disk once per tenant (`vectors.f16`: little-endian IEEE halves, as held
//! in memory); `graph.bin` holds links only. Older generations still load, and are marked
//! changed so the next persist rewrites them in this format (once, not at every start):
//! meta version 2 (`vectors.f32` and `graph.bin`; the vectors are rounded to halves on
//! load) and version 1 (graphs in hnsw_rs's format, which held a second copy of every
//! vector: ignored, and the graph is rebuilt in memory from `vectors.f32`).

use super::simd::to_f16;
use super::{Graph, Tenant};
use crate::index::Error;
use crate::types::{ChunkId, DocumentId, TenantId};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::Path;

const MANIFEST_FORMAT: &str = "aigentable-vector-index 1";
const META_MAGIC: &[u8; 4] = b"AIGV";
/// 3: `vectors.f16` and `graph.bin`. 2: `vectors.f32` and `graph.bin` (this crate's
/// graph). 1: `vectors.f32` and hnsw_rs graph files (ignored; rebuilt).
const META_VERSION: u32 = 3;
const VECTORS_FILE: &str = "vectors.f16";
const GRAPH_FILE: &str = "graph.bin";

/// The MANIFEST text for vectors of `dims` dimensions made by `model_id`: an index whose
/// MANIFEST differs was made for something else and is rebuilt.
pub(super) fn manifest(dims: usize, model_id: &str) -> String {
    format!("{MANIFEST_FORMAT}\nmodel={model_id}\ndims={dims}\n")
}

/// Writes one tenant as a new generation under `tdir` and switches `CURRENT` to it.
pub(super) fn dump_tenant(
    tdir: &Path,
    t: &Tenant,
    dims: usize,
    model_id: &str,
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
    let vectors_crc = {
        let mut h = crc32fast::Hasher::new();
        let mut f = File::create(tmp.join(VECTORS_FILE))?;
        let mut buf = Vec::with_capacity(1 << 16);
        for part in t.vectors.chunks(1 << 15) {
            buf.clear();
            buf.extend(part.iter().flat_map(|x| x.to_le_bytes()));
            h.update(&buf);
            f.write_all(&buf)?;
        }
        f.sync_all()?;
        h.finalize()
    };
    let (graph_name, graph_crc) = match &t.graph {
        None => (String::new(), 0),
        Some(g) => {
            let bytes = g.encode();
            write_synced(&tmp.join(GRAPH_FILE), &bytes)?;
            (GRAPH_FILE.to_string(), crc32fast::hash(&bytes))
        }
    };
    let meta = encode_meta(t, dims, model_id, vectors_crc, &graph_name, graph_crc, 0);
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
    data_crc: u32,
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
    b.extend_from_slice(&data_crc.to_le_bytes());
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

/// Loads one tenant's current generation, verifying every checksum and every graph link
/// so that damaged files are an error (the tenant is rebuilt), never a panic.
pub(super) fn load_tenant(tdir: &Path, dims: usize, model_id: &str) -> Result<Tenant, String> {
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

    // Decoded straight into the tenant's array through a small buffer: the file is never
    // in memory whole beside the vectors.
    let (file_name, width) = if version == META_VERSION {
        (VECTORS_FILE, 2)
    } else {
        ("vectors.f32", 4)
    };
    let path = gen_dir.join(file_name);
    let file = File::open(&path).map_err(|e| format!("{file_name}: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("{file_name}: {e}"))?
        .len();
    let want_bytes = n
        .checked_mul(dims)
        .and_then(|x| x.checked_mul(width))
        .ok_or("meta.bin has an impossible vector count")?;
    if len != want_bytes as u64 {
        return Err(format!("{file_name} does not match meta.bin"));
    }
    t.vectors.reserve_exact(n * dims);
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
            t.vectors.extend(
                buf[..want]
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]])),
            );
        } else {
            t.vectors.extend(
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
    Ok(t)
}
