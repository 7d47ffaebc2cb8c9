//! A graph's changes since its last dump, as bytes, and applying them to the graph read back
//! from that dump: what lets a persist write what changed instead of the whole graph
//! (`../persist.rs` frames and checksums these bytes; this file owns only their layout).
//!
//! Layout ([`Format::Diffs`], delta version 2; little-endian): nodes before, nodes after,
//! entry point, level generator state (u64s); the levels of the nodes added; a count (u64) of
//! node records; then, in id order, per node how many ids it skips after the previous
//! record's (a LEB128 varint) and one record per layer, a tag and what it needs:
//! - `SAME`: the list as the files hold it;
//! - `WHOLE`: a count, then the ids (a node added since the files);
//! - `APPEND`: the files' list, then a count and that many ids more;
//! - `EDIT`: a count, then per place the index of an id in the files' list or, past its
//!   length, the length plus an id.
//!
//! An id is written as a varint of `after - 1 - id`: the nodes added lately, which most
//! rewrites add, take two bytes or fewer. A node's lists are compared with the ones the
//! files hold (saved by its first rewrite since, see `set_links`), so a node rewritten back
//! to what the files hold is not written, and one rewritten ten times is written once.
//!
//! Why: while a tenant fills, each insert rewrites up to 2M neighbours' lists, most of them by
//! appending the new node. Written whole (each list up to 2M four-byte ids, as
//! [`Format::WholeLists`] did: delta version 1, still read) a minute's delta held most of
//! the graph (BENCHMARKS.md, "Session 10: incremental persist" and "Session 11: finer
//! persist deltas").

use super::{Bytes, Graph, MAX_LEVEL, NO_ENTRY};
use std::sync::atomic::{AtomicU32, Ordering};

/// How a delta lays out the graph's changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::index::vector) enum Format {
    /// Delta version 1: each changed node's id (u32) and its lists whole (a u32 count, then
    /// u32 ids).
    WholeLists,
    /// Delta version 2: how each list differs from the files' (see the module docs).
    Diffs,
}

const SAME: u8 = 0;
const WHOLE: u8 = 1;
const APPEND: u8 = 2;
const EDIT: u8 = 3;

/// Appends `x` as LEB128: seven bits a byte, low first.
fn put_varint(b: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        b.push(x as u8 | 0x80);
        x >>= 7;
    }
    b.push(x as u8);
}

/// An id in a graph of `after` nodes, as [`Format::Diffs`] writes it: recent nodes are small.
fn put_id(b: &mut Vec<u8>, after: usize, id: u32) {
    put_varint(b, (after - 1 - id as usize) as u64);
}

/// Reads a count, then that many places, onto `list`, which then holds at most `max` ids
/// (an overfull list is an error): a place below `files.len()` is that entry of the files'
/// list (`EDIT`), any other an id as [`put_id`] wrote it in a graph of `after` nodes, plus
/// `files.len()`. `WHOLE` and `APPEND` pass no files' list, so every place is an id.
fn read_ids(
    r: &mut Bytes,
    list: &mut Vec<u32>,
    files: &[u32],
    max: usize,
    after: usize,
) -> Result<(), String> {
    let n = r.varint()?;
    if (list.len() as u64).saturating_add(n) > max as u64 {
        return Err("graph changes have an overfull link list".into());
    }
    for _ in 0..n {
        let v = r.varint()?;
        list.push(match v.checked_sub(files.len() as u64) {
            None => files[v as usize],
            Some(v) if v < after as u64 => (after as u64 - 1 - v) as u32,
            Some(_) => return Err("graph changes link to a missing node".into()),
        });
    }
    Ok(())
}

impl Graph {
    /// The start of a changes record, both versions: the node counts before and after, the
    /// entry point, the level generator's state and the new nodes' levels. Returns the
    /// counts (`before` clamped to the graph's size).
    fn encode_changes_header(&self, before: usize, b: &mut Vec<u8>) -> (usize, usize) {
        let (before, after) = (before.min(self.len()), self.len());
        for x in [before as u64, after as u64] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.extend_from_slice(&self.entry.load(Ordering::Acquire).to_le_bytes());
        b.extend_from_slice(&self.rng.to_le_bytes());
        b.extend_from_slice(&self.levels[before..]);
        (before, after)
    }

    /// Appends the changes since the graph had `before` nodes and
    /// [`clear_changes`](Self::clear_changes) last ran, as [`Format::Diffs`]; returns how
    /// many nodes' lists they hold (0: the lists are the files').
    pub fn encode_changes(&self, before: usize, b: &mut Vec<u8>) -> usize {
        let (before, after) = self.encode_changes_header(before, b);
        let mut saved = self.old_lists.lock().unwrap_or_else(|e| e.into_inner());
        saved.sort_unstable_by_key(|&(id, _)| id);
        // The saved lists are the files' only when the files were written at `before`
        // nodes (always, from `persist.rs`); otherwise every changed list goes whole.
        let diffable = self.kept.load(Ordering::Relaxed) == before;
        let count_at = b.len();
        b.extend_from_slice(&0u64.to_le_bytes());
        let (mut written, mut next) = (0usize, 0u32);
        let (mut rec, mut old, mut new) = (Vec::new(), Vec::new(), Vec::new());
        for id in self.rewritten(before).chain(before as u32..after as u32) {
            let files = saved
                .binary_search_by_key(&id, |&(x, _)| x)
                .ok()
                .filter(|_| diffable && (id as usize) < before)
                .map(|i| &*saved[i].1);
            rec.clear();
            let mut differs = false;
            let mut at = 0;
            for layer in 0..=self.levels[id as usize] as usize {
                self.links(id, layer, &mut new);
                let Some(files) = files else {
                    rec.push(WHOLE);
                    put_varint(&mut rec, new.len() as u64);
                    new.iter().for_each(|&x| put_id(&mut rec, after, x));
                    differs = true;
                    continue;
                };
                let n = files[at] as usize;
                old.clear();
                old.extend_from_slice(&files[at + 1..at + 1 + n]);
                at += 1 + n;
                if old == new {
                    rec.push(SAME);
                    continue;
                }
                differs = true;
                if new.starts_with(&old) {
                    rec.push(APPEND);
                    put_varint(&mut rec, (new.len() - old.len()) as u64);
                    new[old.len()..]
                        .iter()
                        .for_each(|&x| put_id(&mut rec, after, x));
                } else {
                    rec.push(EDIT);
                    put_varint(&mut rec, new.len() as u64);
                    for &x in &new {
                        match old.iter().position(|&y| y == x) {
                            Some(i) => put_varint(&mut rec, i as u64),
                            None => {
                                put_varint(&mut rec, (old.len() + after - 1 - x as usize) as u64)
                            }
                        }
                    }
                }
            }
            if differs {
                put_varint(b, u64::from(id - next));
                b.extend_from_slice(&rec);
                next = id + 1;
                written += 1;
            }
        }
        b[count_at..count_at + 8].copy_from_slice(&(written as u64).to_le_bytes());
        written
    }

    /// [`encode_changes`](Self::encode_changes) as [`Format::WholeLists`] (delta version 1)
    /// laid it out, as session 10 wrote it: every node rewritten or added since, its lists
    /// whole. Only tests write it, to check that the files of that version still load.
    #[cfg(test)]
    pub fn encode_changes_whole(&self, before: usize, b: &mut Vec<u8>) -> usize {
        let (before, after) = self.encode_changes_header(before, b);
        let nodes: Vec<u32> = self
            .rewritten(before)
            .chain(before as u32..after as u32)
            .collect();
        b.extend_from_slice(&(nodes.len() as u64).to_le_bytes());
        let mut buf = Vec::new();
        for &id in &nodes {
            b.extend_from_slice(&id.to_le_bytes());
            for layer in 0..=self.levels[id as usize] as usize {
                self.links(id, layer, &mut buf);
                b.extend_from_slice(&(buf.len() as u32).to_le_bytes());
                buf.iter()
                    .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
            }
        }
        nodes.len()
    }

    /// Nodes below `before` rewritten since [`clear_changes`](Self::clear_changes), in order.
    fn rewritten(&self, before: usize) -> impl Iterator<Item = u32> + '_ {
        self.changed
            .iter()
            .enumerate()
            .flat_map(|(w, word)| {
                let bits = word.load(Ordering::Relaxed);
                (0..64u32)
                    .filter(move |i| bits & (1u64 << i) != 0)
                    .map(move |i| w as u32 * 64 + i)
            })
            .filter(move |&id| (id as usize) < before)
    }

    /// Forgets which nodes changed and the lists saved for them: the files now hold every
    /// list as it is.
    pub fn clear_changes(&self) {
        self.changed
            .iter()
            .for_each(|w| w.store(0, Ordering::Relaxed));
        *self.old_lists.lock().unwrap_or_else(|e| e.into_inner()) = Vec::new();
        self.kept.store(self.len(), Ordering::Relaxed);
    }

    /// Applies [`encode_changes`](Self::encode_changes)' bytes (all of `bytes`, laid out as
    /// `format`) to the graph they were made after, checking every count and id so that
    /// damaged bytes are an error, never a panic or an out-of-range node later. Call
    /// [`changes_applied`](Self::changes_applied) after the last one.
    pub fn apply_changes(&mut self, bytes: &[u8], format: Format) -> Result<(), String> {
        let mut r = Bytes(bytes);
        let before = r.u64()? as usize;
        let after = r.u64()? as usize;
        let entry = r.u64()?;
        let rng = r.u64()?;
        if before != self.len() || after < before || after > u32::MAX as usize {
            return Err("graph changes do not follow the graph".into());
        }
        let levels = r.take(after - before)?;
        if levels.iter().any(|&l| l > MAX_LEVEL) {
            return Err("graph changes have a bad level".into());
        }
        self.grow(after);
        for (i, &l) in levels.iter().enumerate() {
            self.levels[before + i] = l;
            self.upper[before + i] = (0..l as usize * (self.m + 1))
                .map(|_| AtomicU32::new(0))
                .collect();
        }
        self.rng = rng;
        let count = r.u64()?;
        match format {
            Format::WholeLists => self.apply_whole_lists(&mut r, count, after)?,
            Format::Diffs => self.apply_diffs(&mut r, count, after)?,
        }
        if !r.0.is_empty() {
            return Err("graph changes have trailing bytes".into());
        }
        if entry != NO_ENTRY {
            let (node, level) = (entry as u32 as usize, (entry >> 32) as usize);
            if node >= after || self.levels[node] as usize != level {
                return Err("graph changes have a bad entry point".into());
            }
        } else if (0..after as u32).any(|x| self.block(x, 0)[0].load(Ordering::Relaxed) != 0) {
            return Err("graph changes have links but no entry point".into());
        }
        self.entry.store(entry, Ordering::Release);
        Ok(())
    }

    fn apply_whole_lists(&mut self, r: &mut Bytes, count: u64, after: usize) -> Result<(), String> {
        let mut ids = Vec::with_capacity(self.m0);
        for _ in 0..count {
            let id = r.u32()?;
            if id as usize >= after {
                return Err("graph changes name a missing node".into());
            }
            for layer in 0..=self.levels[id as usize] as usize {
                let n = r.u32()? as usize;
                if n > self.max_links(layer) {
                    return Err("graph changes have an overfull link list".into());
                }
                ids.clear();
                for _ in 0..n {
                    let x = r.u32()?;
                    if x as usize >= after {
                        return Err("graph changes link to a missing node".into());
                    }
                    ids.push(x);
                }
                self.store_links(id, layer, ids.iter().copied());
            }
        }
        Ok(())
    }

    fn apply_diffs(&mut self, r: &mut Bytes, count: u64, after: usize) -> Result<(), String> {
        let (mut old, mut new) = (Vec::new(), Vec::new());
        let mut next = 0u64;
        for _ in 0..count {
            let id = next.saturating_add(r.varint()?);
            if id >= after as u64 {
                return Err("graph changes name a missing node".into());
            }
            next = id + 1;
            let id = id as u32;
            for layer in 0..=self.levels[id as usize] as usize {
                let max = self.max_links(layer);
                new.clear();
                match r.u8()? {
                    SAME => continue,
                    WHOLE => read_ids(r, &mut new, &[], max, after)?,
                    APPEND => {
                        self.links(id, layer, &mut new);
                        read_ids(r, &mut new, &[], max, after)?;
                    }
                    EDIT => {
                        self.links(id, layer, &mut old);
                        read_ids(r, &mut new, &old, max, after)?;
                    }
                    _ => return Err("graph changes have an unknown list record".into()),
                }
                self.store_links(id, layer, new.iter().copied());
            }
        }
        Ok(())
    }

    /// Ends a load that applied changes: in-link counts from the lists, nothing changed
    /// since the files.
    pub fn changes_applied(&mut self) {
        self.recount_in_links();
        self.clear_changes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::vector::{from_f16, to_f16};

    fn vectors(seed: u64, n: usize, dims: usize) -> Vec<u16> {
        let mut s = seed;
        (0..n * dims)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                to_f16(((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5)
            })
            .collect()
    }

    /// Every node's level and lists, and the entry point.
    fn shape(g: &Graph) -> (u64, Vec<u8>, Vec<Vec<u32>>) {
        let mut lists = Vec::new();
        let mut buf = Vec::new();
        for id in 0..g.len() as u32 {
            for layer in 0..=g.levels[id as usize] as usize {
                g.links(id, layer, &mut buf);
                lists.push(buf.clone());
            }
        }
        (g.entry.load(Ordering::Relaxed), g.levels.clone(), lists)
    }

    fn in_links(g: &Graph) -> Vec<u32> {
        g.in_links
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    fn answers(g: &Graph, vs: &[u16], dims: usize) -> Vec<Vec<u32>> {
        vectors(2, 10, dims)
            .chunks_exact(dims)
            .map(|q| {
                let q: Vec<f32> = q.iter().map(|&h| from_f16(h)).collect();
                g.search(vs, &q, 20, None).iter().map(|x| x.id).collect()
            })
            .collect()
    }

    #[test]
    fn a_dump_plus_its_changes_is_the_graph_and_only_changed_nodes_are_written() {
        let (dims, n) = (8, 1200);
        let vs = vectors(1, n, dims);
        let mut g = Graph::new(dims, 6, 40);
        g.grow(1000);
        g.insert_parallel(&vs, &(0..1000).collect::<Vec<_>>(), 2);
        let base = g.encode();
        g.clear_changes();
        let mut none = Vec::new();
        assert_eq!(g.encode_changes(1000, &mut none), 0);
        // Two batches, each dumped as changes: a few nodes added, some lists rewritten; and
        // the same changes as format 1 (whole lists) applied to a second copy.
        let mut loaded = Graph::decode(&base, dims, 1000).unwrap();
        let mut loaded_v1 = Graph::decode(&base, dims, 1000).unwrap();
        for range in [1000..1010u32, 1010..1200] {
            g.grow(range.end as usize);
            let before = range.start as usize;
            g.insert_parallel(&vs, &range.collect::<Vec<_>>(), 2);
            let mut changes = Vec::new();
            let written = g.encode_changes(before, &mut changes);
            assert!(written >= g.len() - before, "{written}");
            if before == 1000 {
                // Ten inserts rewrote a few lists each (up to M per layer they joined), not
                // the graph.
                assert!(written <= 10 + 10 * 6 * 3, "{written}");
            }
            let mut whole = Vec::new();
            g.encode_changes_whole(before, &mut whole);
            // Most rewrites append the new node to a list: a few bytes, not the list.
            assert!(
                changes.len() * 3 < whole.len(),
                "{} bytes, whole lists {}",
                changes.len(),
                whole.len()
            );
            g.clear_changes();
            loaded.apply_changes(&changes, Format::Diffs).unwrap();
            loaded_v1.apply_changes(&whole, Format::WholeLists).unwrap();
        }
        for l in [&mut loaded, &mut loaded_v1] {
            l.changes_applied();
            assert_eq!(shape(l), shape(&g));
            assert_eq!(l.rng, g.rng);
            assert_eq!(answers(l, &vs, dims), answers(&g, &vs, dims));
            assert_eq!(in_links(l), in_links(&g));
        }
    }

    #[test]
    fn a_graph_grown_over_many_dumps_loads_back_the_same_and_each_delta_is_small() {
        // As a tenant fills between the minute's persists: each round's inserts rewrite
        // lists all over the graph (several times over for some), then a dump.
        let (dims, n, m) = (8, 4000, 6);
        let vs = vectors(3, n, dims);
        let mut g = Graph::new(dims, m, 40);
        g.grow(500);
        g.insert_parallel(&vs, &(0..500).collect::<Vec<_>>(), 2);
        let mut loaded = Graph::decode(&g.encode(), dims, 500).unwrap();
        g.clear_changes();
        for round in 0..14u32 {
            let range = 500 + round * 250..500 + (round + 1) * 250;
            let before = range.start as usize;
            g.grow(range.end as usize);
            g.insert_parallel(&vs, &range.collect::<Vec<_>>(), 2);
            let mut changes = Vec::new();
            g.encode_changes(before, &mut changes);
            // An insert writes its own lists (M ids and its upper layers') and adds itself
            // to up to 2M others: a couple of lists' worth of bytes (one list is 2M + 1
            // u32s), where whole lists wrote a dozen.
            let per_insert = changes.len() / 250;
            let list = (2 * m + 1) * 4;
            assert!(
                per_insert <= 2 * list,
                "round {round}: {per_insert} bytes an insert"
            );
            g.clear_changes();
            loaded.apply_changes(&changes, Format::Diffs).unwrap();
        }
        loaded.changes_applied();
        assert_eq!(shape(&loaded), shape(&g));
        assert_eq!(answers(&loaded, &vs, dims), answers(&g, &vs, dims));
        // A list rewritten and then back to what the files hold is not written.
        let mut buf = Vec::new();
        g.links(7, 0, &mut buf);
        let fewer = buf[1..].to_vec();
        g.relink(7, 0, &buf, &fewer);
        g.relink(7, 0, &fewer, &buf);
        assert_eq!(g.encode_changes(g.len(), &mut Vec::new()), 0);
    }

    #[test]
    fn damaged_changes_are_an_error() {
        let (dims, n) = (8, 300);
        let vs = vectors(3, n, dims);
        let mut g = Graph::new(dims, 4, 20);
        g.grow(200);
        g.insert_parallel(&vs, &(0..200).collect::<Vec<_>>(), 1);
        let base = g.encode();
        g.clear_changes();
        g.grow(n);
        g.insert_parallel(&vs, &(200..n as u32).collect::<Vec<_>>(), 1);
        let mut changes = Vec::new();
        g.encode_changes(200, &mut changes);
        let fresh = || Graph::decode(&base, dims, 200).unwrap();
        assert!(fresh().apply_changes(&changes, Format::Diffs).is_ok());
        // Truncated, or with a byte more.
        for bad in [
            &changes[..changes.len() - 1],
            &[changes.clone(), vec![0]].concat(),
        ] {
            assert!(fresh().apply_changes(bad, Format::Diffs).is_err());
        }
        // Read as the other format.
        assert!(fresh().apply_changes(&changes, Format::WholeLists).is_err());
        // Made after another graph (another node count).
        let mut g2 = fresh();
        g2.grow(201);
        assert!(g2.apply_changes(&changes, Format::Diffs).is_err());
        // One record by hand after the real header: node `x` (on layer 0 only), then
        // `list`. The first is sound; each other is damaged in one way.
        let header = &changes[..32 + (n - 200)];
        let x = (0..200u8).find(|&x| g.levels[x as usize] == 0).unwrap();
        let record = |list: &[u8]| [header, &1u64.to_le_bytes(), &[x], list].concat();
        let (full, over) = (2 * 4, 2 * 4 + 1);
        assert!(
            fresh()
                .apply_changes(&record(&[WHOLE, 1, 0]), Format::Diffs)
                .is_ok()
        );
        let missing = [0x80 | (n % 128) as u8, (n / 128) as u8];
        let damaged: [(&str, Vec<u8>); 5] = [
            (
                "a link to a missing node",
                [&[WHOLE, 1][..], &missing].concat(),
            ),
            ("an overfull list", [&[WHOLE, over][..], &[0; 9]].concat()),
            (
                "an overfull append",
                [&[APPEND, full][..], &[0; 8]].concat(),
            ),
            ("an unknown record", vec![9, 1, 0]),
            ("an overlong number", [&[WHOLE][..], &[0xff; 11]].concat()),
        ];
        for (what, list) in damaged {
            assert!(
                fresh()
                    .apply_changes(&record(&list), Format::Diffs)
                    .is_err(),
                "{what}"
            );
        }
        // Node ids past the graph.
        let far = [
            header,
            &1u64.to_le_bytes(),
            &[0x80 | (n % 128) as u8, (n / 128) as u8],
        ]
        .concat();
        assert!(fresh().apply_changes(&far, Format::Diffs).is_err());
    }
}
