//! [`QueryCache`]: a bounded least-recently-used map from query text to its embedding, one per
//! loaded model (it lives in the embedder, so vectors of different models never meet).
//!
//! A query embedding is the largest cost of a search turn; customers and widgets repeat the
//! same questions ("opening hours", "reset password"), so a small cache saves most of them.
//! Memory is bounded by the entry count: `capacity x (dimensions x 4 bytes + text)`, e.g.
//! 1,024 entries of a 768-dimension model take ~3 MB.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

/// Queries longer than this are not cached (they are rarely repeated, and the text is part of
/// the key, so it would dominate the cache's memory).
const MAX_CACHED_QUERY_BYTES: usize = 1024;

/// A bounded LRU of query embeddings. Thread-safe; lookups and inserts are O(log n).
pub struct QueryCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// text -> (vector, last use tick)
    map: HashMap<String, (Arc<Vec<f32>>, u64)>,
    /// last use tick -> text, oldest first.
    order: BTreeMap<u64, String>,
    tick: u64,
    hits: u64,
    misses: u64,
}

impl QueryCache {
    /// A cache holding at most `capacity` queries; 0 turns caching off.
    pub fn new(capacity: usize) -> Self {
        QueryCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The cached vector of `text`, marking it recently used.
    pub fn get(&self, text: &str) -> Option<Arc<Vec<f32>>> {
        if self.capacity == 0 {
            return None;
        }
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.tick += 1;
        let tick = g.tick;
        let Some((v, last)) = g.map.get_mut(text) else {
            g.misses += 1;
            return None;
        };
        let (v, old) = (v.clone(), std::mem::replace(last, tick));
        g.order.remove(&old);
        g.order.insert(tick, text.to_string());
        g.hits += 1;
        Some(v)
    }

    /// Remembers `text`'s vector, evicting the least recently used entry when full.
    pub fn put(&self, text: &str, v: Arc<Vec<f32>>) {
        if self.capacity == 0 || text.len() > MAX_CACHED_QUERY_BYTES {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.tick += 1;
        let tick = g.tick;
        if let Some((_, old)) = g.map.insert(text.to_string(), (v, tick)) {
            g.order.remove(&old);
        }
        g.order.insert(tick, text.to_string());
        while g.map.len() > self.capacity {
            let Some((_, oldest)) = g.order.pop_first() else {
                break;
            };
            g.map.remove(&oldest);
        }
    }

    /// (entries, hits, misses) so far.
    pub fn stats(&self) -> (usize, u64, u64) {
        let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (g.map.len(), g.hits, g.misses)
    }

    /// The configured bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: f32) -> Arc<Vec<f32>> {
        Arc::new(vec![x])
    }

    #[test]
    fn keeps_the_most_recently_used_within_its_bound() {
        let c = QueryCache::new(2);
        c.put("a", v(1.0));
        c.put("b", v(2.0));
        assert_eq!(*c.get("a").unwrap(), vec![1.0]); // a is now newer than b
        c.put("c", v(3.0)); // evicts b
        assert!(c.get("b").is_none());
        assert_eq!(*c.get("a").unwrap(), vec![1.0]);
        assert_eq!(*c.get("c").unwrap(), vec![3.0]);
        c.put("c", v(4.0)); // replacing does not grow it
        assert_eq!(c.stats().0, 2);
        assert_eq!(*c.get("c").unwrap(), vec![4.0]);
        let (_, hits, misses) = c.stats();
        assert_eq!((hits, misses), (4, 1));
    }

    #[test]
    fn zero_capacity_and_long_queries_are_not_cached() {
        let off = QueryCache::new(0);
        off.put("a", v(1.0));
        assert!(off.get("a").is_none());
        let c = QueryCache::new(8);
        let long = "x".repeat(MAX_CACHED_QUERY_BYTES + 1);
        c.put(&long, v(1.0));
        assert!(c.get(&long).is_none());
        assert_eq!(c.stats().0, 0);
    }

    #[test]
    fn many_inserts_stay_bounded() {
        let c = QueryCache::new(16);
        for i in 0..1000 {
            c.put(&format!("q{i}"), v(i as f32));
        }
        let g = c.inner.lock().unwrap();
        assert_eq!(g.map.len(), 16);
        assert_eq!(g.order.len(), 16);
        assert!(g.map.contains_key("q999") && !g.map.contains_key("q983"));
    }
}
