//! A graph's changes since its last dump, as bytes, and applying them to the graph read back
//! from that dump: what lets a persist write what changed instead of the whole graph
//! (`../persist.rs` frames and checksums these bytes; this file owns only their layout).
//!
//! Layout (little-endian): nodes before, nodes after, entry point, level generator state;
//! the levels of the nodes added; then, for every node added or rewritten since the last
//! [`clear_changes`](Graph::clear_changes), its id and each of its layers' lists (a count,
//! then that many ids). Lists are written whole: a node's list is at most 2M ids.

use super::{Bytes, Graph, MAX_LEVEL, NO_ENTRY};
use std::sync::atomic::{AtomicU32, Ordering};

impl Graph {
    /// Appends the changes since the graph had `before` nodes and
    /// [`clear_changes`](Self::clear_changes) last ran; returns how many nodes' lists they
    /// hold.
    pub fn encode_changes(&self, before: usize, b: &mut Vec<u8>) -> usize {
        let before = before.min(self.len());
        for x in [before as u64, self.len() as u64] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.extend_from_slice(&self.entry.load(Ordering::Acquire).to_le_bytes());
        b.extend_from_slice(&self.rng.to_le_bytes());
        b.extend_from_slice(&self.levels[before..]);
        let rewritten = self
            .changed
            .iter()
            .enumerate()
            .flat_map(|(w, word)| {
                let bits = word.load(Ordering::Relaxed);
                (0..64u32)
                    .filter(move |i| bits & (1u64 << i) != 0)
                    .map(move |i| w as u32 * 64 + i)
            })
            .filter(|&id| (id as usize) < before);
        let nodes: Vec<u32> = rewritten.chain(before as u32..self.len() as u32).collect();
        b.extend_from_slice(&(nodes.len() as u64).to_le_bytes());
        let mut buf = Vec::with_capacity(self.m0);
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

    /// Forgets which nodes changed: the files now hold every list as it is.
    pub fn clear_changes(&self) {
        self.changed
            .iter()
            .for_each(|w| w.store(0, Ordering::Relaxed));
    }

    /// Applies [`encode_changes`](Self::encode_changes)' bytes (all of `bytes`) to the graph
    /// they were made after, checking every count and id so that damaged bytes are an
    /// error, never a panic or an out-of-range node later. Call
    /// [`changes_applied`](Self::changes_applied) after the last one.
    pub fn apply_changes(&mut self, bytes: &[u8]) -> Result<(), String> {
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
                self.set_links(id, layer, ids.iter().copied());
            }
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
        // Two batches, each dumped as changes: a few nodes added, some lists rewritten.
        let mut loaded = Graph::decode(&base, dims, 1000).unwrap();
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
            g.clear_changes();
            loaded.apply_changes(&changes).unwrap();
        }
        loaded.changes_applied();
        assert_eq!(shape(&loaded), shape(&g));
        assert_eq!(loaded.rng, g.rng);
        for q in vectors(2, 10, dims).chunks_exact(dims) {
            let q: Vec<f32> = q.iter().map(|&h| from_f16(h)).collect();
            let a: Vec<u32> = g.search(&vs, &q, 20, None).iter().map(|x| x.id).collect();
            let b: Vec<u32> = loaded
                .search(&vs, &q, 20, None)
                .iter()
                .map(|x| x.id)
                .collect();
            assert_eq!(a, b);
        }
        let kept: Vec<u32> = loaded
            .in_links
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let truth: Vec<u32> = g
            .in_links
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert_eq!(kept, truth);
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
        assert!(fresh().apply_changes(&changes).is_ok());
        // Truncated, or with a byte more.
        assert!(
            fresh()
                .apply_changes(&changes[..changes.len() - 1])
                .is_err()
        );
        let mut longer = changes.clone();
        longer.push(0);
        assert!(fresh().apply_changes(&longer).is_err());
        // Made after another graph (another node count).
        let mut g2 = fresh();
        g2.grow(201);
        assert!(g2.apply_changes(&changes).is_err());
        // A link to a node that does not exist: the first id of the first list.
        let first_list = 8 * 4 + (n - 200) + 8 + 4 + 4;
        let mut bad = changes.clone();
        bad[first_list..first_list + 4].copy_from_slice(&(n as u32).to_le_bytes());
        assert!(fresh().apply_changes(&bad).is_err());
        // A count past the list's capacity.
        let mut bad = changes;
        bad[first_list - 4..first_list].copy_from_slice(&1000u32.to_le_bytes());
        assert!(fresh().apply_changes(&bad).is_err());
    }
}
