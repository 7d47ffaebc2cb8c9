//! Retrieval indexes: BM25 over chunk text ([`text`]), per-tenant HNSW over chunk vectors
//! ([`vector`]) and rank fusion of the two ([`fusion`]).
//!
//! This module owns its directories on disk and nothing else. It must not depend on `api/`,
//! `domain/` or `store/`: callers feed it chunks and ids from the store and re-feed it when
//! an index reports that it needs a rebuild. Every method blocks (tantivy, HNSW and file
//! I/O are CPU or disk work): call them from `spawn_blocking` or a worker thread.

pub mod fusion;
pub mod terms;
pub mod text;
pub mod vector;

pub use fusion::{FusionParams, fuse, fuse_lookup, lookup_share};
pub use text::{Filter, TextDoc, TextIndex, TextParams};
pub use vector::{HnswParams, VectorIndex, VectorSource};

use crate::types::{ChunkId, DocumentId};

/// Largest `k` a search honours: result buffers are sized by `k`, so an absurd request
/// must not allocate without bound. Retrieval for a prompt needs a few dozen.
pub const MAX_K: usize = 10_000;

/// One ranked chunk. `score` is only comparable within the list that produced it: BM25 for
/// the text index, cosine similarity for the vector index, the fused score after [`fuse`].
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub chunk: ChunkId,
    pub document: DocumentId,
    pub score: f32,
}

/// Errors of the index layer. Corruption on open is not an error: the index is recreated
/// empty and reports that it needs a rebuild.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("index I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("text index error: {0}")]
    Text(#[from] tantivy::TantivyError),
    #[error("vector has {got} dimensions, the index expects {expected}")]
    Dimensions { expected: usize, got: usize },
    #[error("vector index error: {0}")]
    Vector(String),
    #[error("invalid index argument: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests;
