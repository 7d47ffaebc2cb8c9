//! Persistence of the vector index: the on-disk layout, atomic generations, checksums and the
//! UNTRUSTED list. Loads verify every checksum before hnsw_rs parses anything.
//!
//! On disk:
//! ```text
//! <dir>/MANIFEST                 format, model id and dimensions of everything below
//! <dir>/UNTRUSTED                tenants whose files are stale or invalid (see below)
//! <dir>/t-<hex tenant>/CURRENT   name of the current generation directory
//! <dir>/t-<hex tenant>/g<N>/     meta.bin, vectors.f32 [, graph.hnsw.graph, graph.hnsw.data]
//! ```
//! A generation is written to `g<N>.tmp`, synced, renamed, then `CURRENT` is replaced by
//! rename, so a crash leaves either the old or the new generation. A tenant is added to
//! `UNTRUSTED` (synced) before its first unpersisted change and removed when it is
//! persisted again, so after a crash its stale files (which could still hold deleted
//! chunks) are not served: it comes back empty and reported by
//! [`VectorIndex::tenants_needing_rebuild`](super::VectorIndex::tenants_needing_rebuild).

use super::{CosineDist, LoadedGraph, Tenant, TenantGraph};
use crate::index::Error;
use crate::types::{ChunkId, DocumentId, TenantId};
use hnsw_rs::prelude::{AnnT, HnswIo};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

const MANIFEST_FORMAT: &str = "aigentable-vector-index 1";
const META_MAGIC: &[u8; 4] = b"AIGV";
const META_VERSION: u32 = 1;
const GRAPH_BASENAME: &str = "graph";

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

    let mut vec_bytes = Vec::with_capacity(t.vectors.len() * 4);
    for x in &t.vectors {
        vec_bytes.extend_from_slice(&x.to_le_bytes());
    }
    write_synced(&tmp.join("vectors.f32"), &vec_bytes)?;
    let (graph_name, graph_crc, data_crc) = match &t.graph {
        None => (String::new(), 0, 0),
        Some(g) => {
            let dump = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                g.with(|g| g.file_dump(&tmp, GRAPH_BASENAME))
            }));
            let name = match dump {
                Ok(Ok(name)) => name,
                Ok(Err(e)) => return Err(Error::Vector(format!("graph dump failed: {e}"))),
                Err(_) => return Err(Error::Vector("graph dump panicked".into())),
            };
            let graph_crc = sync_and_crc(&tmp.join(format!("{name}.hnsw.graph")))?;
            let data_crc = sync_and_crc(&tmp.join(format!("{name}.hnsw.data")))?;
            (name, graph_crc, data_crc)
        }
    };
    let meta = encode_meta(
        t,
        dims,
        model_id,
        crc32fast::hash(&vec_bytes),
        &graph_name,
        graph_crc,
        data_crc,
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

fn sync_and_crc(path: &Path) -> Result<u32, Error> {
    let f = File::options().read(true).write(true).open(path)?;
    f.sync_all()?;
    crc_of(path)
}

fn crc_of(path: &Path) -> Result<u32, Error> {
    let mut f = File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize())
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

/// Loads one tenant's current generation, verifying every checksum first so that hnsw_rs
/// (which panics on malformed input) only ever parses files we wrote completely.
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
    if r.take(4)? != META_MAGIC || r.u32()? != META_VERSION {
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
    let data_crc = r.u32()?;

    let bytes = fs::read(gen_dir.join("vectors.f32")).map_err(|e| format!("vectors.f32: {e}"))?;
    if bytes.len() != n * dims * 4 || crc32fast::hash(&bytes) != vectors_crc {
        return Err("vectors.f32 does not match meta.bin".into());
    }
    let vectors: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    for (i, (chunk, doc)) in entries.into_iter().enumerate() {
        // Push alive and dead alike to keep slot numbers (the graph's data ids), then kill.
        t.push(chunk, doc, &vectors[i * dims..(i + 1) * dims])
            .map_err(|e| e.to_string())?;
    }
    for s in dead_slots {
        t.kill(s);
    }
    if t.live() != alive_count {
        return Err("meta.bin lists a live chunk twice".into());
    }
    if !graph_name.is_empty() {
        let graph_path = gen_dir.join(format!("{graph_name}.hnsw.graph"));
        let data_path = gen_dir.join(format!("{graph_name}.hnsw.data"));
        if crc_of(&graph_path).map_err(|e| e.to_string())? != graph_crc
            || crc_of(&data_path).map_err(|e| e.to_string())? != data_crc
        {
            return Err("graph files do not match meta.bin".into());
        }
        let io = HnswIo::new(&gen_dir, &graph_name);
        let loaded = std::panic::catch_unwind(|| {
            LoadedGraph::try_new(io, |io| io.load_hnsw_with_dist(CosineDist))
        });
        let graph = match loaded {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => return Err(format!("graph load failed: {e}")),
            Err(_) => return Err("graph load panicked".into()),
        };
        let points = graph.with_dependent(|_, g| g.get_nb_point());
        if points != n {
            return Err(format!("graph has {points} points, meta.bin {n}"));
        }
        t.graph = Some(TenantGraph::Loaded(graph));
    }
    Ok(t)
}
