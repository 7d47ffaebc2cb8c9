//! A compact HNSW graph (Malkov & Yashunin, 2016) over vectors its caller owns.
//!
//! The graph stores links only: node `i` is the caller's vector `i` (`vectors[i * dims..]`,
//! half precision; queries are f32), so each vector is kept once, in the tenant's flat array that exact search, filtered
//! search and compaction read too. Links are plain `u32`s in fixed-size blocks (layer 0:
//! one flat array, `2M` links per node; upper layers: one small block per node above 0),
//! about 150 bytes per node instead of a separately allocated `Arc` per link. The visited
//! set is an epoch-stamped array taken from a pool, not a hash set.
//!
//! Inserts may run on several threads at once (`insert_parallel`): link lists are atomics,
//! each node's list is rewritten under that node's mutex, and a node raising the top level
//! holds a graph-wide mutex, as in hnswlib. Readers never lock: a list read while it is
//! rewritten may be a mix of old and new links, which only ever name existing nodes. A new
//! node sets all its own lists before any other list names it, and after each batch nodes
//! left without a way in are linked back (`repair`), so every inserted node stays
//! reachable from the entry point.
//! Deletion is the caller's business (tombstones filtered at search, compaction rebuilds).
//! Every rewritten list marks its node as changed (its first rewrite since the last dump
//! saves the lists the dump holds), so a dump can write only how lists changed since the
//! last one (`delta.rs`).
//! Depends on nothing but `std` and the dot product in `simd.rs`.

use super::simd::{Kernel, prefetch, widen};
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

mod delta;

pub(super) use delta::Format;

/// The highest layer a node may get (a level above this is clamped; with M >= 4 and 2^32
/// nodes the expected top layer is 16).
pub(super) const MAX_LEVEL: u8 = 15;
const NO_ENTRY: u64 = u64::MAX;
const GRAPH_MAGIC: &[u8; 4] = b"AIGH";
const GRAPH_VERSION: u32 = 1;
/// Nodes a new graph links one at a time before parallel inserts start.
const SERIAL_HEAD: usize = 256;
/// How many neighbours ahead of the one being scored a walk prefetches.
const PREFETCH_AHEAD: usize = 2;

/// A node id and its distance to the query (`1 - cosine` on normalised vectors).
#[derive(Clone, Copy, Debug)]
pub(super) struct Near {
    pub dist: f32,
    pub id: u32,
}

impl PartialEq for Near {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == CmpOrdering::Equal
    }
}
impl Eq for Near {}
impl PartialOrd for Near {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Near {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        self.dist.total_cmp(&o.dist).then(self.id.cmp(&o.id))
    }
}

/// A [`Near`] packed into one integer that orders as `Near` does (distance, then id): the
/// distance's bits with the sign folded (IEEE floats then compare as unsigned integers, in
/// `f32::total_cmp`'s order) above the id. The walk's heaps compare these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key(u64);

impl Key {
    /// Orders after every real key: "no bound yet".
    const MAX: Key = Key(u64::MAX);

    fn new(dist: f32, id: u32) -> Self {
        let b = dist.to_bits();
        let ordered = if b >> 31 == 1 { !b } else { b | 1 << 31 };
        Key(u64::from(ordered) << 32 | u64::from(id))
    }

    fn id(self) -> u32 {
        self.0 as u32
    }

    fn near(self) -> Near {
        let o = (self.0 >> 32) as u32;
        let b = if o >> 31 == 1 { o & !(1 << 31) } else { !o };
        Near {
            dist: f32::from_bits(b),
            id: self.id(),
        }
    }
}

/// Epoch-stamped visited marks: clearing is one increment, not a pass over every node.
#[derive(Default)]
struct Visited {
    marks: Vec<u32>,
    epoch: u32,
}

impl Visited {
    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
    }

    /// True the first time `id` is seen since the last reset.
    fn first_visit(&mut self, id: u32) -> bool {
        let m = &mut self.marks[id as usize];
        if *m == self.epoch {
            false
        } else {
            *m = self.epoch;
            true
        }
    }
}

/// An HNSW graph over `len()` nodes; node `i` is vector `i` of the slice every call gets.
pub(super) struct Graph {
    dims: usize,
    /// Links per node on layers above 0 (M).
    m: usize,
    /// Links per node on layer 0 (2M).
    m0: usize,
    ef_construction: usize,
    /// Layer 0: node `i` owns words `i * (m0 + 1)..`: a count, then up to `m0` ids.
    links0: Vec<AtomicU32>,
    /// Layers 1..=level of node `i`: `level` blocks of `m + 1` words (count, ids); empty
    /// for the ~94% of nodes that live on layer 0 only.
    upper: Vec<Box<[AtomicU32]>>,
    levels: Vec<u8>,
    /// Serialises rewrites of one node's lists.
    locks: Vec<Mutex<()>>,
    /// `node | level << 32`, or `NO_ENTRY` while the graph is empty.
    entry: AtomicU64,
    /// Held by an insert whose node becomes the new top (rare).
    top: Mutex<()>,
    /// Splitmix64 state for levels: a graph built from the same inserts is the same graph.
    rng: u64,
    visited: Mutex<Vec<Visited>>,
    kernel: Kernel,
    /// Nodes linked so far (all of them after a decode): tells an empty graph, whose first
    /// nodes must go in alone, from one a batch is added to.
    linked: AtomicUsize,
    /// Layer-0 in-links of each node: how many lists name it. Every node but the entry
    /// needs one, or no walk reaches it (see [`repair`](Self::repair)).
    in_links: Vec<AtomicU32>,
    /// Nodes whose last in-link a rewrite removed during inserts, for `repair` to check.
    lost: Mutex<Vec<u32>>,
    /// `linked` when `repair` last walked the whole graph for unreachable nodes.
    swept: AtomicUsize,
    /// One bit per node whose lists were rewritten since [`clear_changes`]: what an
    /// incremental dump writes (`delta.rs`).
    ///
    /// [`clear_changes`]: Self::clear_changes
    changed: Vec<AtomicU64>,
    /// Nodes the files held at the last [`clear_changes`] (0 before the first: a graph
    /// never dumped is written whole).
    ///
    /// [`clear_changes`]: Self::clear_changes
    kept: AtomicUsize,
    /// The lists of each node below `kept` as the files hold them, saved by its first
    /// rewrite since [`clear_changes`] (`node`, then per layer a count and its ids): a
    /// dump writes how a list differs from these, not the list.
    ///
    /// [`clear_changes`]: Self::clear_changes
    old_lists: Mutex<Vec<(u32, Box<[u32]>)>>,
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    // The mutexes guard no data (the lists are atomics), so poisoning carries no meaning.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Graph {
    /// An empty graph for `dims`-dimensional vectors with `m` links per node (2m on layer 0).
    pub fn new(dims: usize, m: usize, ef_construction: usize) -> Self {
        let m = m.clamp(2, 64);
        Self {
            dims,
            m,
            m0: 2 * m,
            ef_construction: ef_construction.max(m),
            links0: Vec::new(),
            upper: Vec::new(),
            levels: Vec::new(),
            locks: Vec::new(),
            entry: AtomicU64::new(NO_ENTRY),
            top: Mutex::new(()),
            rng: 0x5eed_0000_0000_0001,
            visited: Mutex::new(Vec::new()),
            kernel: Kernel::best(),
            linked: AtomicUsize::new(0),
            in_links: Vec::new(),
            lost: Mutex::new(Vec::new()),
            swept: AtomicUsize::new(0),
            changed: Vec::new(),
            kept: AtomicUsize::new(0),
            old_lists: Mutex::new(Vec::new()),
        }
    }

    /// Number of nodes (inserted or reserved by [`grow`](Self::grow)).
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Bytes the graph's nodes use (links, levels, in-link counts, locks, the lists saved
    /// for the next dump; not spare capacity).
    pub fn heap_bytes(&self) -> usize {
        let upper: usize = self.upper.iter().map(|b| b.len() * 4).sum();
        let saved: usize = (self.old_lists.lock().unwrap_or_else(|e| e.into_inner()))
            .iter()
            .map(|(_, l)| l.len() * 4 + std::mem::size_of::<(u32, Box<[u32]>)>())
            .sum();
        self.links0.len() * 4
            + upper
            + saved
            + self.len()
                * (std::mem::size_of::<Box<[AtomicU32]>>()
                    + 1
                    + 4
                    + std::mem::size_of::<Mutex<()>>())
    }

    fn next_random(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        // 53 random bits in (0, 1]: never 0, so ln() is finite.
        (((z ^ (z >> 31)) >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Adds nodes up to `n` (unlinked, with their levels drawn); insert them next.
    pub fn grow(&mut self, n: usize) {
        let mult = 1.0 / (self.m as f64).ln();
        let add = n.saturating_sub(self.len());
        self.levels.reserve(add);
        self.links0.reserve(add * (self.m0 + 1));
        self.upper.reserve(add);
        self.locks.reserve(add);
        self.in_links.reserve(add);
        while self.len() < n {
            let level = (-self.next_random().ln() * mult)
                .floor()
                .min(MAX_LEVEL as f64) as u8;
            self.levels.push(level);
            self.links0.extend((0..=self.m0).map(|_| AtomicU32::new(0)));
            self.upper.push(
                (0..level as usize * (self.m + 1))
                    .map(|_| AtomicU32::new(0))
                    .collect(),
            );
            self.locks.push(Mutex::new(()));
            self.in_links.push(AtomicU32::new(0));
        }
        self.changed
            .resize_with(self.len().div_ceil(64), || AtomicU64::new(0));
    }

    fn block(&self, id: u32, layer: usize) -> &[AtomicU32] {
        if layer == 0 {
            let s = id as usize * (self.m0 + 1);
            &self.links0[s..s + self.m0 + 1]
        } else {
            let s = (layer - 1) * (self.m + 1);
            &self.upper[id as usize][s..s + self.m + 1]
        }
    }

    fn max_links(&self, layer: usize) -> usize {
        if layer == 0 { self.m0 } else { self.m }
    }

    /// Copies a node's links on one layer into `out`.
    fn links(&self, id: u32, layer: usize, out: &mut Vec<u32>) {
        out.clear();
        let b = self.block(id, layer);
        let n = (b[0].load(Ordering::Relaxed) as usize).min(b.len() - 1);
        out.extend(b[1..=n].iter().map(|x| x.load(Ordering::Relaxed)));
    }

    /// Replaces node `id`'s list on `layer`, recording the change for the next dump. The
    /// caller holds `id`'s lock (or the graph mutably), so the first rewrite since the
    /// last dump saves the lists the files hold before any of them changes.
    fn set_links(&self, id: u32, layer: usize, ids: impl ExactSizeIterator<Item = u32>) {
        let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
        if self.changed[word].load(Ordering::Relaxed) & bit == 0 {
            if (id as usize) < self.kept.load(Ordering::Relaxed) {
                self.save_lists(id);
            }
            self.changed[word].fetch_or(bit, Ordering::Relaxed);
        }
        self.store_links(id, layer, ids);
    }

    /// [`set_links`](Self::set_links) without recording it (a load applying its files).
    fn store_links(&self, id: u32, layer: usize, ids: impl ExactSizeIterator<Item = u32>) {
        let b = self.block(id, layer);
        let n = ids.len().min(b.len() - 1);
        for (slot, x) in b[1..].iter().zip(ids) {
            slot.store(x, Ordering::Relaxed);
        }
        b[0].store(n as u32, Ordering::Relaxed);
    }

    /// Saves node `id`'s lists on every layer into `old_lists`.
    fn save_lists(&self, id: u32) {
        let mut saved = Vec::with_capacity(self.m0 + 1);
        for layer in 0..=self.levels[id as usize] as usize {
            let b = self.block(id, layer);
            let n = (b[0].load(Ordering::Relaxed) as usize).min(b.len() - 1);
            saved.extend(b[..=n].iter().map(|x| x.load(Ordering::Relaxed)));
        }
        self.old_lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, saved.into_boxed_slice()));
    }

    /// Replaces node `id`'s list on `layer` (`old`, as read under its lock) by `new`,
    /// keeping layer 0's in-link counts: a node whose last in-link goes is noted for
    /// [`repair`](Self::repair). The caller holds `id`'s lock.
    fn relink(&self, id: u32, layer: usize, old: &[u32], new: &[u32]) {
        self.set_links(id, layer, new.iter().copied());
        if layer != 0 {
            return;
        }
        for &x in new.iter().filter(|x| !old.contains(x)) {
            self.in_links[x as usize].fetch_add(1, Ordering::Relaxed);
        }
        for &x in old.iter().filter(|x| !new.contains(x)) {
            if self.in_links[x as usize].fetch_sub(1, Ordering::Relaxed) == 1 {
                self.lost.lock().unwrap_or_else(|e| e.into_inner()).push(x);
            }
        }
    }

    fn vector<'v>(&self, vectors: &'v [u16], id: u32) -> &'v [u16] {
        let s = id as usize * self.dims;
        &vectors[s..s + self.dims]
    }

    fn dist(&self, vectors: &[u16], q: &[f32], id: u32) -> f32 {
        1.0 - self.kernel.dot_f16(q, self.vector(vectors, id))
    }

    /// The distance between a stored vector and node `id`'s (both halves, nothing widened).
    fn dist_halves(&self, vectors: &[u16], v: &[u16], id: u32) -> f32 {
        1.0 - self.kernel.dot_halves(v, self.vector(vectors, id))
    }

    fn entry(&self) -> Option<(u32, usize)> {
        let e = self.entry.load(Ordering::Acquire);
        (e != NO_ENTRY).then_some((e as u32, (e >> 32) as usize))
    }

    fn take_visited(&self) -> Visited {
        let mut v = self
            .visited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        v.reset(self.len());
        v
    }

    fn give_visited(&self, v: Visited) {
        self.visited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(v);
    }

    /// Greedy descent on one layer: the closest node reachable from `cur`.
    fn greedy(&self, vectors: &[u16], q: &[f32], mut cur: Near, layer: usize) -> Near {
        let mut buf = Vec::with_capacity(self.m + 1);
        loop {
            let mut moved = false;
            self.links(cur.id, layer, &mut buf);
            for &n in &buf {
                let d = self.dist(vectors, q, n);
                if d < cur.dist {
                    cur = Near { dist: d, id: n };
                    moved = true;
                }
            }
            if !moved {
                return cur;
            }
        }
    }

    /// Best-first search of one layer from `start`, returning up to `ef` nodes that pass
    /// `filter` (every node routes; only passing ones are results), nearest first.
    ///
    /// Most of a large graph's build is spent here, waiting for memory, so the loop reads
    /// each expanded node's list where it lies (no copy), keeps both heaps as packed
    /// integers ([`Key`]: one compare instead of a float compare and a tie-break), and asks
    /// for the next candidate's list and the next vectors while it scores this one.
    #[allow(clippy::too_many_arguments)]
    fn search_layer(
        &self,
        vectors: &[u16],
        q: &[f32],
        start: Near,
        ef: usize,
        layer: usize,
        visited: &mut Visited,
        filter: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Near> {
        let passes = |id: u32| filter.is_none_or(|f| f(id));
        let mut candidates: BinaryHeap<Reverse<Key>> = BinaryHeap::with_capacity(ef * 2);
        let mut results: BinaryHeap<Key> = BinaryHeap::with_capacity(ef + 1);
        visited.first_visit(start.id);
        let start = Key::new(start.dist, start.id);
        candidates.push(Reverse(start));
        if passes(start.id()) {
            results.push(start);
        }
        // The farthest result once `ef` are held: nothing farther can enter.
        let mut bound = if results.len() >= ef { start } else { Key::MAX };
        let mut fresh = Vec::with_capacity(self.m0);
        while let Some(Reverse(c)) = candidates.pop() {
            if c > bound {
                break;
            }
            let b = self.block(c.id(), layer);
            if let Some(Reverse(next)) = candidates.peek() {
                prefetch(self.block(next.id(), layer));
            }
            let count = (b[0].load(Ordering::Relaxed) as usize).min(b.len() - 1);
            fresh.clear();
            for x in &b[1..=count] {
                let n = x.load(Ordering::Relaxed);
                if visited.first_visit(n) {
                    fresh.push(n);
                }
            }
            // Vectors of a large tenant are mostly not in cache: start loading the next
            // ones while scoring this one.
            for &n in fresh.iter().take(PREFETCH_AHEAD) {
                prefetch(self.vector(vectors, n));
            }
            for (j, &n) in fresh.iter().enumerate() {
                if let Some(&ahead) = fresh.get(j + PREFETCH_AHEAD) {
                    prefetch(self.vector(vectors, ahead));
                }
                let near = Key::new(self.dist(vectors, q, n), n);
                if near < bound {
                    candidates.push(Reverse(near));
                    if passes(n) {
                        results.push(near);
                        if results.len() > ef {
                            results.pop();
                        }
                        if results.len() >= ef {
                            bound = *results.peek().expect("BUG: ef >= 1 results held");
                        }
                    }
                }
            }
        }
        let mut out: Vec<Near> = results.into_vec().into_iter().map(Key::near).collect();
        out.sort_unstable();
        out
    }

    /// The `ef` (or fewer) nearest nodes to `q` that pass `filter`, nearest first. `q` must
    /// be normalised like the vectors.
    pub fn search(
        &self,
        vectors: &[u16],
        q: &[f32],
        ef: usize,
        filter: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Near> {
        let Some((ep, top)) = self.entry() else {
            return Vec::new();
        };
        let mut cur = Near {
            dist: self.dist(vectors, q, ep),
            id: ep,
        };
        for layer in (1..=top).rev() {
            cur = self.greedy(vectors, q, cur, layer);
        }
        let mut visited = self.take_visited();
        let found = self.search_layer(vectors, q, cur, ef.max(1), 0, &mut visited, filter);
        self.give_visited(visited);
        found
    }

    /// The neighbour-selection heuristic: walk candidates nearest first and keep one only if
    /// it is closer to the base than to every neighbour already kept (spreads links across
    /// directions, which keeps clustered data navigable). With `fill`, places the heuristic
    /// left empty go to the nearest candidates it passed over (hnswlib's
    /// `keepPrunedConnections`): used for a new node's own links, where a dense cluster
    /// (near-duplicate passages) otherwise leaves it one or two links and the walk misses its
    /// neighbourhood (mixed corpus, pubmedqa questions: recall@10 at ef 64 0.980 -> 0.995,
    /// same build and query cost; BENCHMARKS.md). Not for rewriting a full neighbour's list:
    /// there it doubled the build time for no further recall.
    fn select(&self, vectors: &[u16], sorted: &[Near], max: usize, fill: bool) -> Vec<Near> {
        let mut kept: Vec<Near> = Vec::with_capacity(max);
        for &c in sorted {
            if kept.len() >= max {
                break;
            }
            let cv = self.vector(vectors, c.id);
            if kept
                .iter()
                .all(|k| self.dist_halves(vectors, cv, k.id) >= c.dist)
            {
                kept.push(c);
            }
        }
        if fill && kept.len() < max {
            for &c in sorted {
                if kept.len() >= max {
                    break;
                }
                if !kept.iter().any(|k| k.id == c.id) {
                    kept.push(c);
                }
            }
        }
        kept
    }

    /// Links node `id` into the graph. Its vector must be in `vectors` and its node reserved
    /// by [`grow`](Self::grow); each node is inserted once.
    pub fn insert(&self, vectors: &[u16], id: u32) {
        self.linked.fetch_add(1, Ordering::Relaxed);
        let level = self.levels[id as usize] as usize;
        let mut top_guard = None;
        let mut entry = self.entry();
        if entry.is_none_or(|(_, top)| level > top) {
            top_guard = Some(lock(&self.top));
            entry = self.entry();
        }
        let Some((ep, top)) = entry else {
            self.entry
                .store(u64::from(id) | ((level as u64) << 32), Ordering::Release);
            return;
        };
        let mut q = Vec::with_capacity(self.dims);
        widen(self.vector(vectors, id), &mut q);
        let q = q.as_slice();
        let mut cur = Near {
            dist: self.dist(vectors, q, ep),
            id: ep,
        };
        for layer in (level + 1..=top).rev() {
            cur = self.greedy(vectors, q, cur, layer);
        }
        let mut visited = self.take_visited();
        let mut buf = Vec::with_capacity(self.m0 + 1);
        let mut new_ids = Vec::with_capacity(self.m0 + 1);
        let mut chosen_per_layer = Vec::with_capacity(level.min(top) + 1);
        for layer in (0..=level.min(top)).rev() {
            visited.reset(self.len());
            let found = self.search_layer(
                vectors,
                q,
                cur,
                self.ef_construction,
                layer,
                &mut visited,
                None,
            );
            let chosen = self.select(vectors, &found, self.m, true);
            {
                // No list names the new node yet, so its own lists are empty until here.
                let _g = lock(&self.locks[id as usize]);
                new_ids.clear();
                new_ids.extend(chosen.iter().map(|n| n.id));
                self.relink(id, layer, &[], &new_ids);
            }
            if let Some(&nearest) = found.first() {
                cur = nearest;
            }
            chosen_per_layer.push((layer, chosen));
        }
        // Only now do other lists name the new node (layer 0 first): a concurrent insert
        // that walks through it finds every one of its own lists set. Linked layer by layer
        // on the way down, a node found on an upper layer could still have an empty layer
        // 0, and an insert descending through it then linked to it alone (a parallel build
        // left such a node unreachable by search, though still linked).
        for (layer, chosen) in chosen_per_layer.iter().rev() {
            let (layer, max) = (*layer, self.max_links(*layer));
            for n in chosen {
                let _g = lock(&self.locks[n.id as usize]);
                self.links(n.id, layer, &mut buf);
                if buf.contains(&id) {
                    continue;
                }
                new_ids.clear();
                if buf.len() < max {
                    new_ids.extend(buf.iter().copied().chain([id]));
                } else {
                    // Full: re-choose its links among the old ones and the new node.
                    let nv = self.vector(vectors, n.id);
                    let mut cands: Vec<Near> = buf
                        .iter()
                        .map(|&x| Near {
                            dist: self.dist_halves(vectors, nv, x),
                            id: x,
                        })
                        .collect();
                    cands.push(Near { dist: n.dist, id });
                    cands.sort_unstable();
                    let kept = self.select(vectors, &cands, max, false);
                    new_ids.extend(kept.iter().map(|k| k.id));
                }
                self.relink(n.id, layer, &buf, &new_ids);
            }
        }
        self.give_visited(visited);
        if level > top {
            self.entry
                .store(u64::from(id) | ((level as u64) << 32), Ordering::Release);
        }
        drop(top_guard);
    }

    /// Inserts `ids` on up to `threads` threads (hnswlib-style parallel construction), then
    /// links back any node the batch left without a way in; returns how many it relinked.
    pub fn insert_parallel(&self, vectors: &[u16], ids: &[u32], threads: usize) -> usize {
        let threads = threads.clamp(1, ids.len().max(1));
        // The first nodes of a graph go in alone so the others start from a connected core.
        // Only those: a batch added to a graph that has them runs on every thread at once
        // (starting each batch with 256 serial inserts kept a 100k build near one core).
        let head = if threads > 1 {
            SERIAL_HEAD.saturating_sub(self.linked.load(Ordering::Relaxed))
        } else {
            ids.len()
        }
        .min(ids.len());
        for &id in &ids[..head] {
            self.insert(vectors, id);
        }
        let rest = &ids[head..];
        if !rest.is_empty() {
            let next = AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&id) = rest.get(i) else { break };
                            self.insert(vectors, id);
                        }
                    });
                }
            });
        }
        self.repair(vectors, ids)
    }

    /// Links back every node that no layer-0 list names any more: the batch's own nodes
    /// (each neighbour's heuristic may have passed a new node over) and the nodes whose
    /// last in-link a rewrite removed. Such a node keeps its own links but no walk reaches
    /// it, so a search for its very vector misses it (a parallel build left one now and
    /// then: its inserts race for the same neighbours' places). Nodes that only link one
    /// another (an island) keep their in-links, so every time the graph has grown by a
    /// sixteenth a walk over all of layer 0 finds and links them too (linear in the graph,
    /// so amortised to a few node visits per insert). Runs after the batch, on one thread,
    /// so it sees the final lists; returns how many nodes it linked.
    fn repair(&self, vectors: &[u16], batch: &[u32]) -> usize {
        let mut suspects =
            std::mem::take(&mut *self.lost.lock().unwrap_or_else(|e| e.into_inner()));
        suspects.extend_from_slice(batch);
        let entry = self.entry().map(|(e, _)| e);
        let mut linked = 0;
        for o in suspects {
            if Some(o) != entry
                && self.in_links[o as usize].load(Ordering::Relaxed) == 0
                && self.link_orphan(vectors, o)
            {
                linked += 1;
            }
        }
        let now = self.linked.load(Ordering::Relaxed);
        if (now - self.swept.load(Ordering::Relaxed)) * 16 >= now {
            // Linking may take a place from a node whose other in-links turn out to come
            // from the unreached part only: walk again until nothing is left (in practice
            // once).
            for _ in 0..4 {
                let lost = self.unreached();
                if lost.is_empty() {
                    break;
                }
                linked += lost
                    .into_iter()
                    .filter(|&o| self.link_orphan(vectors, o))
                    .count();
            }
            self.swept.store(now, Ordering::Relaxed);
        }
        linked
    }

    /// Inserted nodes that no layer-0 walk from the entry point reaches.
    fn unreached(&self) -> Vec<u32> {
        let Some((entry, _)) = self.entry() else {
            return Vec::new();
        };
        let mut seen = vec![false; self.len()];
        seen[entry as usize] = true;
        let mut stack = vec![entry];
        let mut buf = Vec::with_capacity(self.m0);
        while let Some(x) = stack.pop() {
            self.links(x, 0, &mut buf);
            for &y in &buf {
                if !std::mem::replace(&mut seen[y as usize], true) {
                    stack.push(y);
                }
            }
        }
        // A node with no links of its own is not inserted (a reserved or deleted slot):
        // every inserted node links at least to the node its search started from.
        (0..self.len() as u32)
            .filter(|&x| !seen[x as usize] && self.block(x, 0)[0].load(Ordering::Relaxed) > 0)
            .collect()
    }

    /// Gives node `o` an in-link from one of the nodes a search for its vector reaches,
    /// nearest first: a free place in that node's list, else the place of its farthest
    /// link that is farther than `o` and whose node keeps another in-link (so no node
    /// loses its last one); failing that, any such link of the nearest node that has one.
    /// False if no reached node could take it.
    fn link_orphan(&self, vectors: &[u16], o: u32) -> bool {
        let mut q = Vec::with_capacity(self.dims);
        widen(self.vector(vectors, o), &mut q);
        let found = self.search(vectors, &q, self.ef_construction, None);
        let mut buf = Vec::with_capacity(self.m0);
        let mut nv = Vec::with_capacity(self.dims);
        for strict in [true, false] {
            for n in found.iter().filter(|n| n.id != o) {
                let _g = lock(&self.locks[n.id as usize]);
                self.links(n.id, 0, &mut buf);
                let mut new = buf.clone();
                if buf.len() < self.m0 {
                    new.push(o);
                } else {
                    widen(self.vector(vectors, n.id), &mut nv);
                    let farthest = buf
                        .iter()
                        .enumerate()
                        .filter(|&(_, &x)| self.in_links[x as usize].load(Ordering::Relaxed) >= 2)
                        .map(|(i, &x)| (self.dist(vectors, &nv, x), i))
                        .max_by(|a, b| a.0.total_cmp(&b.0));
                    match farthest {
                        Some((d, i)) if d > n.dist || !strict => new[i] = o,
                        _ => continue,
                    }
                }
                self.relink(n.id, 0, &buf, &new);
                return true;
            }
        }
        false
    }

    /// The graph as bytes (little-endian): a header, levels, layer-0 links, upper links.
    pub fn encode(&self) -> Vec<u8> {
        let upper_words: usize = self.upper.iter().map(|b| b.len()).sum();
        let mut b = Vec::with_capacity(64 + self.len() + (self.links0.len() + upper_words) * 4);
        b.extend_from_slice(GRAPH_MAGIC);
        b.extend_from_slice(&GRAPH_VERSION.to_le_bytes());
        for x in [self.dims, self.m, self.ef_construction, self.len()] {
            b.extend_from_slice(&(x as u64).to_le_bytes());
        }
        b.extend_from_slice(&self.entry.load(Ordering::Acquire).to_le_bytes());
        b.extend_from_slice(&self.rng.to_le_bytes());
        b.extend_from_slice(&self.levels);
        for w in self
            .links0
            .iter()
            .chain(self.upper.iter().flat_map(|u| u.iter()))
        {
            b.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        b
    }

    /// Parses [`encode`](Self::encode)'s output, checking every count and id so that a
    /// damaged file is an error, never a panic or an out-of-range node later.
    pub fn decode(bytes: &[u8], dims: usize, nodes: usize) -> Result<Self, String> {
        let mut r = Bytes(bytes);
        if r.take(4)? != GRAPH_MAGIC || r.u32()? != GRAPH_VERSION {
            return Err("graph file has another format".into());
        }
        let file_dims = r.u64()? as usize;
        let m = r.u64()? as usize;
        let ef_construction = r.u64()? as usize;
        let n = r.u64()? as usize;
        let entry = r.u64()?;
        let rng = r.u64()?;
        if file_dims != dims || n != nodes || !(2..=64).contains(&m) {
            return Err("graph file does not match its vectors".into());
        }
        let mut g = Graph::new(dims, m, ef_construction);
        g.rng = rng;
        let levels = r.take(n)?.to_vec();
        if levels.iter().any(|&l| l > MAX_LEVEL) {
            return Err("graph file has a bad level".into());
        }
        let mut links0 = Vec::with_capacity(n * (g.m0 + 1));
        for _ in 0..n {
            r.block(g.m0, n, &mut links0)?;
        }
        let mut upper = Vec::with_capacity(n);
        for &l in &levels {
            let mut u = Vec::with_capacity(l as usize * (m + 1));
            for _ in 0..l {
                r.block(m, n, &mut u)?;
            }
            upper.push(u.into_boxed_slice());
        }
        if !r.0.is_empty() {
            return Err("graph file has trailing bytes".into());
        }
        if entry != NO_ENTRY {
            let (node, level) = (entry as u32 as usize, (entry >> 32) as usize);
            if node >= n || levels[node] as usize != level {
                return Err("graph file has a bad entry point".into());
            }
        } else if links0.iter().any(|w| w.load(Ordering::Relaxed) != 0) {
            return Err("graph file has links but no entry point".into());
        }
        g.entry = AtomicU64::new(entry);
        g.locks = (0..n).map(|_| Mutex::new(())).collect();
        g.levels = levels;
        g.links0 = links0;
        g.upper = upper;
        g.changed = (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        g.kept = AtomicUsize::new(n);
        g.recount_in_links();
        Ok(g)
    }

    /// Counts layer-0 in-links from the lists, after they were read from files; every node
    /// counts as linked.
    fn recount_in_links(&mut self) {
        let n = self.len();
        self.in_links = (0..n).map(|_| AtomicU32::new(0)).collect();
        for i in 0..n {
            let b = self.block(i as u32, 0);
            let count = b[0].load(Ordering::Relaxed) as usize;
            for x in &b[1..=count] {
                self.in_links[x.load(Ordering::Relaxed) as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.linked = AtomicUsize::new(n);
    }
}

/// A bounds-checked cursor over a graph file.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("graph file is truncated".into());
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

    /// A LEB128 varint (`delta.rs`) of at most 64 bits.
    fn varint(&mut self) -> Result<u64, String> {
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err("graph file has an overlong number".into());
            }
            x |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(x);
            }
        }
        Err("graph file has an overlong number".into())
    }

    /// One link block (a count, then `max` ids) whose ids must all be below `nodes`.
    fn block(&mut self, max: usize, nodes: usize, out: &mut Vec<AtomicU32>) -> Result<(), String> {
        let count = self.u32()?;
        if count as usize > max {
            return Err("graph file has an overfull link list".into());
        }
        out.push(AtomicU32::new(count));
        for _ in 0..max {
            let id = self.u32()?;
            if id as usize >= nodes {
                return Err("graph file links to a missing node".into());
            }
            out.push(AtomicU32::new(id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::simd::{from_f16, to_f16};
    use super::*;

    fn halves(v: &[f32]) -> Vec<u16> {
        v.iter().map(|&x| to_f16(x)).collect()
    }

    fn unit_vectors(seed: u64, n: usize, dims: usize) -> Vec<f32> {
        let mut s = seed;
        let mut out = Vec::with_capacity(n * dims);
        for _ in 0..n {
            let v: Vec<f32> = (0..dims)
                .map(|_| {
                    s = s
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                })
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            out.extend(v.iter().map(|x| x / norm));
        }
        out
    }

    fn exact_top(vectors: &[f32], dims: usize, q: &[f32], k: usize) -> Vec<u32> {
        let mut all: Vec<Near> = vectors
            .chunks_exact(dims)
            .enumerate()
            .map(|(i, v)| Near {
                dist: 1.0 - super::super::simd::dot(q, v),
                id: i as u32,
            })
            .collect();
        all.sort_unstable();
        all.iter().take(k).map(|n| n.id).collect()
    }

    /// Recall@10 of the graph over the stored halves against f32 brute force.
    fn recall(g: &Graph, vectors: &[f32], queries: &[f32], dims: usize, ef: usize) -> f64 {
        let stored = halves(vectors);
        let (mut hit, mut total) = (0, 0);
        for q in queries.chunks_exact(dims) {
            let truth = exact_top(vectors, dims, q, 10);
            let got: Vec<u32> = g
                .search(&stored, q, ef, None)
                .iter()
                .map(|n| n.id)
                .collect();
            hit += truth
                .iter()
                .filter(|t| got[..got.len().min(10)].contains(t))
                .count();
            total += 10;
        }
        hit as f64 / total as f64
    }

    #[test]
    fn packed_keys_order_and_round_trip_as_near_does() {
        // The walk's heaps compare packed keys; results come back as `Near`s: both orders
        // must agree, ties broken by id, for distances on either side of 0 (rounding can
        // put `1 - cosine` of a vector with itself just below 0).
        let dists = [-0.5, -1e-7, -0.0, 0.0, 1e-7, 0.25, 1.0, 2.0, f32::INFINITY];
        let mut nears: Vec<Near> = dists
            .iter()
            .flat_map(|&dist| [7u32, 0, u32::MAX].map(|id| Near { dist, id }))
            .collect();
        let mut keys: Vec<Key> = nears.iter().map(|n| Key::new(n.dist, n.id)).collect();
        nears.sort_unstable();
        keys.sort_unstable();
        let back: Vec<Near> = keys.iter().map(|k| k.near()).collect();
        for (b, n) in back.iter().zip(&nears) {
            assert_eq!((b.dist.to_bits(), b.id), (n.dist.to_bits(), n.id));
        }
        assert!(keys.iter().all(|&k| k < Key::MAX));
    }

    #[test]
    fn a_new_node_keeps_links_the_heuristic_passed_over() {
        // Three near-duplicates in one direction from the base: the heuristic keeps only the
        // nearest (the other two are closer to it than to the base); filling keeps all three,
        // nearest first, so a node in a dense cluster is not left with one way in.
        let dims = 4;
        let unit = |v: [f32; 4]| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.map(|x| x / n)
        };
        let base = unit([1.0, 0.0, 0.0, 0.0]);
        let near: Vec<f32> = [
            unit([1.0, 0.50, 0.0, 0.0]),
            unit([1.0, 0.52, 0.0, 0.0]),
            unit([1.0, 0.54, 0.0, 0.01]),
        ]
        .concat();
        let stored = halves(&near);
        let g = Graph::new(dims, 16, 100);
        let mut sorted: Vec<Near> = (0..3u32)
            .map(|id| Near {
                dist: g.dist(&stored, &base, id),
                id,
            })
            .collect();
        sorted.sort_unstable();
        let ids = |v: Vec<Near>| v.iter().map(|n| n.id).collect::<Vec<_>>();
        assert_eq!(ids(g.select(&stored, &sorted, 3, false)), vec![0]);
        assert_eq!(ids(g.select(&stored, &sorted, 3, true)), vec![0, 1, 2]);
        assert_eq!(ids(g.select(&stored, &sorted, 2, true)), vec![0, 1]);
    }

    #[test]
    fn serial_and_parallel_builds_find_true_neighbours() {
        let dims = 32;
        let n = 3000;
        let vectors = unit_vectors(1, n, dims);
        let stored = halves(&vectors);
        let queries = unit_vectors(2, 100, dims);
        for threads in [1, 4] {
            let mut g = Graph::new(dims, 16, 100);
            g.grow(n);
            let ids: Vec<u32> = (0..n as u32).collect();
            g.insert_parallel(&stored, &ids, threads);
            let r = recall(&g, &vectors, &queries, dims, 64);
            assert!(r >= 0.95, "recall {r} with {threads} threads");
            // Every node is found as its own nearest neighbour: `repair` relinks the
            // nodes a build left without a way in (a parallel build made one now and then).
            let missed: Vec<u32> = (0..n as u32)
                .filter(|&id| {
                    let q: Vec<f32> = g.vector(&stored, id).iter().map(|&h| from_f16(h)).collect();
                    g.search(&stored, &q, 32, None)[0].id != id
                })
                .collect();
            assert!(missed.is_empty(), "{threads} threads: {missed:?} not found");
            assert_eq!(g.unreached().len(), 0, "{threads} threads");
        }
    }

    /// In-link counts as `relink` keeps them, recounted from the lists.
    fn counted_in_links(g: &Graph) -> Vec<u32> {
        let mut counts = vec![0u32; g.len()];
        let mut buf = Vec::new();
        for x in 0..g.len() as u32 {
            g.links(x, 0, &mut buf);
            buf.iter().for_each(|&y| counts[y as usize] += 1);
        }
        counts
    }

    #[test]
    fn a_node_left_without_in_links_is_linked_back() {
        // Clustered data on many threads, as a large tenant's batches go in: after every
        // batch no node is unreachable and the kept in-link counts match the lists.
        let dims = 16;
        let n = 4000;
        let vectors = unit_vectors(11, n, dims);
        let stored = halves(&vectors);
        let mut g = Graph::new(dims, 4, 16);
        for batch in (0..n as u32).collect::<Vec<_>>().chunks(500) {
            g.grow(batch[batch.len() - 1] as usize + 1);
            g.insert_parallel(&stored, batch, 4);
            assert_eq!(g.unreached().len(), 0);
            let kept: Vec<u32> = g
                .in_links
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            assert_eq!(kept, counted_in_links(&g));
        }
        // Cut every way into one node by hand, as a race between inserts can: the next
        // batch's repair must link it back, without cutting off another node.
        let (entry, _) = g.entry().unwrap();
        let victim = (0..n as u32)
            .find(|&x| x != entry && g.levels[x as usize] == 0)
            .unwrap();
        let mut buf = Vec::new();
        for x in 0..n as u32 {
            g.links(x, 0, &mut buf);
            if buf.contains(&victim) {
                let new: Vec<u32> = buf.iter().copied().filter(|&y| y != victim).collect();
                g.relink(x, 0, &buf, &new);
            }
        }
        assert_eq!(g.in_links[victim as usize].load(Ordering::Relaxed), 0);
        assert_eq!(g.unreached(), vec![victim]);
        let more = unit_vectors(12, 10, dims);
        let stored = [stored, halves(&more)].concat();
        g.grow(n + 10);
        assert!(g.insert_parallel(&stored, &(n as u32..n as u32 + 10).collect::<Vec<_>>(), 2) >= 1);
        assert_eq!(g.unreached().len(), 0);
        assert!(g.in_links[victim as usize].load(Ordering::Relaxed) >= 1);
        let q: Vec<f32> = g
            .vector(&stored, victim)
            .iter()
            .map(|&h| from_f16(h))
            .collect();
        assert_eq!(g.search(&stored, &q, 32, None)[0].id, victim);
        // Decoding recounts the in-links from the lists.
        let back = Graph::decode(&g.encode(), dims, n + 10).unwrap();
        let kept: Vec<u32> = back
            .in_links
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert_eq!(kept, counted_in_links(&g));
    }

    #[test]
    fn a_graph_grown_batch_by_batch_on_many_threads_finds_true_neighbours() {
        // As the index grows a tenant: batches appended to a graph that already has its
        // serial core are inserted on every thread from their first node.
        let dims = 32;
        let n = 3000;
        let vectors = unit_vectors(7, n, dims);
        let stored = halves(&vectors);
        let queries = unit_vectors(8, 100, dims);
        let mut g = Graph::new(dims, 16, 100);
        for batch in (0..n as u32).collect::<Vec<_>>().chunks(100) {
            g.grow(batch[batch.len() - 1] as usize + 1);
            g.insert_parallel(&stored, batch, 4);
        }
        assert_eq!(g.linked.load(Ordering::Relaxed), n);
        let r = recall(&g, &vectors, &queries, dims, 64);
        assert!(r >= 0.95, "recall {r}");
        let decoded = Graph::decode(&g.encode(), dims, n).unwrap();
        assert_eq!(decoded.linked.load(Ordering::Relaxed), n);
    }

    #[test]
    fn filtered_search_returns_only_passing_nodes() {
        let dims = 16;
        let n = 2000;
        let vectors = unit_vectors(3, n, dims);
        let stored = halves(&vectors);
        let mut g = Graph::new(dims, 8, 64);
        g.grow(n);
        g.insert_parallel(&stored, &(0..n as u32).collect::<Vec<_>>(), 2);
        let even = |id: u32| id.is_multiple_of(2);
        for q in unit_vectors(4, 20, dims).chunks_exact(dims) {
            let got = g.search(&stored, q, 40, Some(&even));
            assert_eq!(got.len(), 40);
            assert!(got.iter().all(|n| n.id.is_multiple_of(2)));
            assert!(got.windows(2).all(|w| w[0].dist <= w[1].dist));
        }
        assert!(
            g.search(&stored, &vectors[..dims], 10, Some(&|_| false))
                .is_empty()
        );
    }

    #[test]
    fn encode_decode_round_trips_and_damage_is_an_error() {
        let dims = 8;
        let n = 500;
        let vectors = halves(&unit_vectors(5, n, dims));
        let mut g = Graph::new(dims, 6, 40);
        g.grow(n);
        g.insert_parallel(&vectors, &(0..n as u32).collect::<Vec<_>>(), 1);
        let bytes = g.encode();
        let back = Graph::decode(&bytes, dims, n).unwrap();
        assert_eq!(back.encode(), bytes);
        for q in unit_vectors(6, 10, dims).chunks_exact(dims) {
            let a: Vec<u32> = g
                .search(&vectors, q, 20, None)
                .iter()
                .map(|x| x.id)
                .collect();
            let b: Vec<u32> = back
                .search(&vectors, q, 20, None)
                .iter()
                .map(|x| x.id)
                .collect();
            assert_eq!(a, b);
        }
        assert!(Graph::decode(&bytes, dims, n + 1).is_err());
        assert!(Graph::decode(&bytes, dims + 1, n).is_err());
        assert!(Graph::decode(&bytes[..bytes.len() - 1], dims, n).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Graph::decode(&longer, dims, n).is_err());
        // A link to a node that does not exist.
        let mut bad = bytes.clone();
        let first_link = 4 + 4 + 6 * 8 + n + 4;
        bad[first_link..first_link + 4].copy_from_slice(&(n as u32).to_le_bytes());
        assert!(Graph::decode(&bad, dims, n).is_err());
        // A count past the list's capacity.
        let mut bad = bytes;
        bad[first_link - 4..first_link].copy_from_slice(&1000u32.to_le_bytes());
        assert!(Graph::decode(&bad, dims, n).is_err());
    }

    #[test]
    fn an_empty_graph_answers_nothing() {
        let g = Graph::new(4, 16, 100);
        assert!(g.search(&[], &[1.0, 0.0, 0.0, 0.0], 10, None).is_empty());
        let back = Graph::decode(&g.encode(), 4, 0).unwrap();
        assert_eq!(back.len(), 0);
    }
}
