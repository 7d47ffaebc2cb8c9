//! Fusion of a keyword (BM25) ranking and a vector (cosine) ranking into one ranking.
//!
//! Pure functions over [`Hit`] lists; depends on nothing but `types`.
//!
//! The default (measured in `BENCHMARKS.md`) is a convex combination of z-scores
//! whose vector weight follows the vector list's own confidence: the best cosine of the
//! query. Z-scores alone make any list look decisive, including a dense list that matches
//! nothing well (a query of rare words, names or codes); the top cosine says whether the
//! embedding model recognised the query at all, so below a floor the ranking falls back to
//! BM25 and above floor + span the vector list gets its full weight. The floor is lower for
//! longer questions than for short queries (what a model fails to recognise is short: a
//! name, a code). Short queries whose every term one of the first keyword hits contains (a
//! lookup of a name or code) are ranked by the keyword list alone: see [`lookup_share`].

use super::Hit;
use crate::types::ChunkId;
use std::collections::HashMap;

/// How scores are normalised before they are combined.
#[derive(Clone, Debug, PartialEq)]
pub enum FusionMethod {
    /// Weighted reciprocal rank fusion: `w / (rrf_k + rank)` summed over lists.
    Rrf,
    /// Convex combination of min-max normalised scores.
    MinMax,
    /// Convex combination of z-score normalised scores (the default).
    ZScore,
}

/// Fusion settings. The default is the one setting evaluated on every data set.
#[derive(Clone, Debug, PartialEq)]
pub struct FusionParams {
    pub method: FusionMethod,
    /// Weight of the vector list in [0, 1] when it is confident; the keyword list always
    /// gets `1 - vector_weight`.
    pub vector_weight: f32,
    /// Query-adaptive vector weight: with `Some(floor)`, the vector weight is scaled by
    /// `clamp((top cosine - floor) / confidence_span, 0, 1)`. The values are calibrated for
    /// all-MiniLM-L6-v2 cosines; another embedding model needs its own (or `None`).
    pub confidence_floor: Option<f32>,
    /// See `confidence_floor`.
    pub confidence_span: f32,
    /// `confidence_floor` applies to queries of at most this many distinct terms, and
    /// `long_query_floor` to longer ones (`None`: `confidence_floor` to every query). What
    /// an embedding model fails to recognise is short: a name, a code, a few rare words; a
    /// longer question it scores low (forum questions score low with every model) still
    /// gains from the vector list, and depends less on the floor's model-specific cosine.
    pub confidence_terms: Option<usize>,
    /// The floor of queries longer than `confidence_terms` (`None`: no floor for them).
    pub long_query_floor: Option<f32>,
    /// The rank offset of RRF.
    pub rrf_k: f32,
    /// Keyword lookups: a query of at most this many terms, all of which occur in one of
    /// the keyword list's first [`LOOKUP_HITS`] hits, is ranked by the keyword list alone; the effect fades out
    /// over the next [`LOOKUP_FADE`] terms. `None` turns it off. See [`lookup_share`].
    pub lookup_terms: Option<usize>,
}

/// Terms over which the keyword-lookup rule fades out; see [`FusionParams::lookup_terms`].
pub const LOOKUP_FADE: usize = 3;

/// Keyword hits searched for one that contains every query term; see
/// [`FusionParams::lookup_terms`]. (1 hit: 0.002 under BM25 on keyword-only queries; 3: even.)
pub const LOOKUP_HITS: usize = 3;

/// How much a query is a keyword lookup, in [0, 1]: 1 for a short query (at most
/// `lookup_terms` terms) whose every term occurs in one of the keyword list's first hits
/// (`covered`, see [`LOOKUP_HITS`]), falling
/// linearly to 0 over the next [`LOOKUP_FADE`] terms; 0 when a term is missing. Short exact
/// queries (names, codes, jargon) are where an embedding model has least to go on and BM25
/// is most reliable; a long question that happens to share all its words with one passage
/// still leaves the vector list its say.
pub fn lookup_share(covered: bool, terms: usize, params: &FusionParams) -> f32 {
    match params.lookup_terms {
        Some(max) if covered && terms > 0 => {
            let fade = (max + LOOKUP_FADE) as f32 - terms as f32;
            (fade / LOOKUP_FADE as f32).clamp(0.0, 1.0)
        }
        _ => 0.0,
    }
}

impl Default for FusionParams {
    fn default() -> Self {
        Self {
            method: FusionMethod::ZScore,
            vector_weight: 0.75,
            confidence_floor: Some(0.35),
            confidence_span: 0.2,
            confidence_terms: Some(4),
            long_query_floor: Some(0.25),
            rrf_k: 60.0,
            lookup_terms: Some(3),
        }
    }
}

impl FusionParams {
    /// The fixed-weight variant of a method, for comparisons.
    pub fn fixed(method: FusionMethod, vector_weight: f32) -> Self {
        Self {
            method,
            vector_weight,
            confidence_floor: None,
            long_query_floor: None,
            lookup_terms: None,
            ..Self::default()
        }
    }
}

/// Fuses a keyword ranking and a vector ranking (each best first, as returned by the
/// indexes) into the top `k` of one ranking, best first. Chunks found by both lists gain
/// from both; a chunk missing from one list gets that list's lowest contribution. Ties
/// break on the rank in the list with the larger weight for this query, then the other
/// list's, so the output is deterministic.
/// Pass each list with the same depth of at least `max(3k, 50)` hits, so the
/// normalisation sees the score distribution rather than just its head. The vector list's
/// scores must be cosines (as [`VectorIndex`](super::VectorIndex) returns) for the
/// confidence weighting to mean anything.
pub fn fuse(keyword: &[Hit], vector: &[Hit], k: usize, params: &FusionParams) -> Vec<Hit> {
    fuse_lookup(keyword, vector, k, params, 0.0, 0)
}

/// [`fuse`] for a query of `terms` distinct terms (as the text index analyses them; 0 when
/// unknown, which counts as short) that is a keyword lookup to the degree `lookup` (in
/// [0, 1], from [`lookup_share`]): the vector list's weight is scaled by `1 - lookup`, and
/// by its confidence against the floor of the query's length
/// ([`FusionParams::confidence_terms`]).
pub fn fuse_lookup(
    keyword: &[Hit],
    vector: &[Hit],
    k: usize,
    params: &FusionParams,
    lookup: f32,
    terms: usize,
) -> Vec<Hit> {
    if k == 0 {
        return Vec::new();
    }
    let full = params.vector_weight.clamp(0.0, 1.0);
    let wk = 1.0 - full;
    // Normalised scores per list, and the value for a chunk the list did not return.
    let ((kw, kw_missing), (vw, vw_missing)) = match params.method {
        FusionMethod::Rrf => (
            (rrf(keyword, params.rrf_k), 0.0),
            (rrf(vector, params.rrf_k), 0.0),
        ),
        FusionMethod::MinMax => {
            let (k, v) = (min_max(keyword), min_max(vector));
            let (km, vm) = (min_of(&k), min_of(&v));
            ((k, km), (v, vm))
        }
        FusionMethod::ZScore => {
            let n = keyword.len().max(vector.len());
            // BM25 of a chunk matching no query term is exactly 0; below the vector
            // list's last hit nothing is known, so it is not padded.
            (z_score(keyword, n, 0.0), z_score(vector, 0, 0.0))
        }
    };
    let floor = match params.confidence_terms {
        Some(max) if terms > max => params.long_query_floor,
        _ => params.confidence_floor,
    };
    let wv = match (floor, vector.first()) {
        (Some(floor), Some(top)) => {
            let span = params.confidence_span.max(f32::EPSILON);
            full * ((top.score - floor) / span).clamp(0.0, 1.0)
        }
        _ => full,
    } * (1.0 - lookup.clamp(0.0, 1.0));
    struct Entry<'a> {
        hit: &'a Hit,
        k: Option<(usize, f32)>,
        v: Option<(usize, f32)>,
    }
    let mut by_chunk: HashMap<&ChunkId, Entry<'_>> = HashMap::new();
    for (rank, (h, s)) in keyword.iter().zip(&kw).enumerate() {
        by_chunk.entry(&h.chunk).or_insert(Entry {
            hit: h,
            k: Some((rank, *s)),
            v: None,
        });
    }
    for (rank, (h, s)) in vector.iter().zip(&vw).enumerate() {
        let e = by_chunk.entry(&h.chunk).or_insert(Entry {
            hit: h,
            k: None,
            v: None,
        });
        if e.v.is_none() {
            e.v = Some((rank, *s));
        }
    }
    let mut fused: Vec<(f32, usize, usize, &Hit)> = by_chunk
        .into_values()
        .map(|e| {
            let ks = e.k.map_or(kw_missing, |x| x.1);
            let vs = e.v.map_or(vw_missing, |x| x.1);
            let score = wk * ks + wv * vs;
            let vr = e.v.map_or(usize::MAX, |x| x.0);
            let kr = e.k.map_or(usize::MAX, |x| x.0);
            (score, vr, kr, e.hit)
        })
        .collect();
    // Ties break on the rank in the heavier list, so a query handed to BM25 (a lookup, or
    // an unrecognised query) comes out exactly in keyword order: exact BM25 ties are
    // common between near-duplicate passages.
    let keyword_first = wk > wv;
    fused.sort_by(|a, b| {
        let ranks = if keyword_first {
            a.2.cmp(&b.2).then(a.1.cmp(&b.1))
        } else {
            a.1.cmp(&b.1).then(a.2.cmp(&b.2))
        };
        b.0.total_cmp(&a.0)
            .then(ranks)
            .then_with(|| a.3.chunk.cmp(&b.3.chunk))
    });
    fused.truncate(k);
    fused
        .into_iter()
        .map(|(score, _, _, h)| Hit {
            chunk: h.chunk.clone(),
            document: h.document.clone(),
            score,
        })
        .collect()
}

fn rrf(list: &[Hit], k: f32) -> Vec<f32> {
    (0..list.len())
        .map(|r| 1.0 / (k + r as f32 + 1.0))
        .collect()
}

fn min_max(list: &[Hit]) -> Vec<f32> {
    let (lo, hi) = list
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), h| {
            (lo.min(h.score), hi.max(h.score))
        });
    let span = hi - lo;
    list.iter()
        .map(|h| {
            if span > 0.0 {
                (h.score - lo) / span
            } else {
                1.0
            }
        })
        .collect()
}

/// Margin (in standard deviations) below a list's lowest z-score for chunks it did not
/// return.
const MISSING_MARGIN: f32 = 0.1;

/// Z-scores of a list, and the z-score given to chunks the list did not return (just
/// under its lowest value). `pad_to` > len counts the missing entries as `floor` in the statistics: a
/// BM25 list shorter than the other list means the rest of the tenant scored 0, and
/// counting those zeros keeps a lone keyword match from looking average.
fn z_score(list: &[Hit], pad_to: usize, floor: f32) -> (Vec<f32>, f32) {
    if list.is_empty() {
        return (Vec::new(), 0.0);
    }
    let pad = pad_to.saturating_sub(list.len());
    let n = (list.len() + pad) as f64;
    let floor = f64::from(floor);
    let sum = list.iter().map(|h| f64::from(h.score)).sum::<f64>() + pad as f64 * floor;
    let mean = sum / n;
    let sq = list
        .iter()
        .map(|h| (f64::from(h.score) - mean).powi(2))
        .sum::<f64>()
        + pad as f64 * (floor - mean).powi(2);
    let sd = (sq / n).sqrt();
    let z = |x: f64| {
        if sd > 0.0 {
            ((x - mean) / sd) as f32
        } else {
            0.0
        }
    };
    let mut lowest = list
        .iter()
        .map(|h| f64::from(h.score))
        .fold(f64::INFINITY, f64::min);
    if pad > 0 {
        lowest = lowest.min(floor);
    }
    // Not returned is a little worse than the worst returned: without the margin a chunk
    // missing from one list ties with that list's last hit.
    (
        list.iter().map(|h| z(f64::from(h.score))).collect(),
        z(lowest) - MISSING_MARGIN,
    )
}

/// The contribution of a min-max list for a chunk it did not return: its minimum.
fn min_of(normalised: &[f32]) -> f32 {
    normalised
        .iter()
        .copied()
        .fold(f32::INFINITY, f32::min)
        .min(0.0)
}
