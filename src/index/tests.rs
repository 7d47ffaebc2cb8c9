//! Unit tests of the index layer: tenancy, filters, deletion, persistence, corruption
//! recovery and fusion properties.

use super::*;
use crate::types::{AgentId, ChunkId, DocumentId, TenantId};

fn tdoc(tenant: &TenantId, doc: &DocumentId, text: &str, agents: &[AgentId]) -> TextDoc {
    TextDoc {
        tenant: tenant.clone(),
        document: doc.clone(),
        chunk: ChunkId::new(),
        agents: agents.to_vec(),
        text: text.to_string(),
        headings: vec!["Handbook".into()],
    }
}

fn all() -> Filter {
    Filter::default()
}

mod text {
    use super::*;

    #[test]
    fn fresh_index_needs_rebuild_and_reopened_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let idx = TextIndex::open(dir.path()).unwrap();
        assert!(idx.needs_rebuild());
        let t = TenantId::new();
        idx.add(&[tdoc(&t, &DocumentId::new(), "refund policy", &[])])
            .unwrap();
        drop(idx);
        let idx = TextIndex::open(dir.path()).unwrap();
        assert!(!idx.needs_rebuild());
        assert_eq!(idx.search(&t, "refund", &all(), 10).unwrap().len(), 1);
    }

    #[test]
    fn tenants_never_see_each_other_even_with_identical_text() {
        let dir = tempfile::tempdir().unwrap();
        let idx = TextIndex::open(dir.path()).unwrap();
        let (a, b) = (TenantId::new(), TenantId::new());
        let da = tdoc(
            &a,
            &DocumentId::new(),
            "opening hours are nine to five",
            &[],
        );
        let db = tdoc(
            &b,
            &DocumentId::new(),
            "opening hours are nine to five",
            &[],
        );
        idx.add(&[da.clone(), db.clone()]).unwrap();
        let hits = idx.search(&a, "opening hours", &all(), 10).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].chunk, da.chunk);
        let hits = idx.search(&b, "opening hours", &all(), 10).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].chunk, db.chunk);
        // A filter naming another tenant's document finds nothing.
        let f = Filter {
            documents: Some(vec![db.document.clone()]),
            agent: None,
        };
        assert!(idx.search(&a, "opening hours", &f, 10).unwrap().is_empty());
        assert!(
            idx.search(&TenantId::new(), "opening", &all(), 10)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_tenant_alone_in_the_index_stays_isolated_when_others_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let idx = TextIndex::open(dir.path()).unwrap();
        let (a, b) = (TenantId::new(), TenantId::new());
        let da = tdoc(&a, &DocumentId::new(), "delivery times", &[]);
        idx.add(std::slice::from_ref(&da)).unwrap();
        // a owns every document: the tenant clause is skipped for speed.
        assert_eq!(idx.search(&a, "delivery", &all(), 10).unwrap().len(), 1);
        assert!(idx.search(&b, "delivery", &all(), 10).unwrap().is_empty());
        idx.add(&[tdoc(&b, &DocumentId::new(), "delivery times", &[])])
            .unwrap();
        let hits = idx.search(&a, "delivery", &all(), 10).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].chunk, da.chunk);
        idx.delete_document(&a, &da.document).unwrap();
        assert!(idx.search(&a, "delivery", &all(), 10).unwrap().is_empty());
        assert_eq!(idx.search(&b, "delivery", &all(), 10).unwrap().len(), 1);
    }

    #[test]
    fn scores_use_the_tenants_own_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let idx = TextIndex::open(dir.path()).unwrap();
        let (a, b) = (TenantId::new(), TenantId::new());
        idx.add(&[
            tdoc(&a, &DocumentId::new(), "invoice overdue reminder", &[]),
            tdoc(&a, &DocumentId::new(), "shipping to europe", &[]),
        ])
        .unwrap();
        let before = idx.search(&a, "invoice", &all(), 1).unwrap()[0].score;
        // Another tenant making "invoice" common must not change tenant a's scores.
        let many: Vec<TextDoc> = (0..50)
            .map(|i| tdoc(&b, &DocumentId::new(), &format!("invoice number {i}"), &[]))
            .collect();
        idx.add(&many).unwrap();
        let after = idx.search(&a, "invoice", &all(), 1).unwrap()[0].score;
        assert!((before - after).abs() < 1e-6, "{before} vs {after}");
    }

    #[test]
    fn document_and_agent_filters() {
        let dir = tempfile::tempdir().unwrap();
        let idx = TextIndex::open(dir.path()).unwrap();
        let t = TenantId::new();
        let (sales, support) = (AgentId::new(), AgentId::new());
        let (d1, d2, d3) = (DocumentId::new(), DocumentId::new(), DocumentId::new());
        idx.add(&[
            tdoc(
                &t,
                &d1,
                "price list for widgets",
                std::slice::from_ref(&sales),
            ),
            tdoc(
                &t,
                &d2,
                "widgets repair guide",
                std::slice::from_ref(&support),
            ),
            tdoc(
                &t,
                &d3,
                "widgets overview",
                &[sales.clone(), support.clone()],
            ),
        ])
        .unwrap();
        let docs = |hits: Vec<Hit>| {
            let mut d: Vec<DocumentId> = hits.into_iter().map(|h| h.document).collect();
            d.sort();
            d
        };
        let mut expect = vec![d1.clone(), d3.clone()];
        expect.sort();
        let f = Filter {
            documents: None,
            agent: Some(sales.clone()),
        };
        assert_eq!(docs(idx.search(&t, "widgets", &f, 10).unwrap()), expect);
        let f = Filter {
            documents: Some(vec![d2.clone(), d3.clone()]),
            agent: Some(sales.clone()),
        };
        assert_eq!(docs(idx.search(&t, "widgets", &f, 10).unwrap()), vec![d3]);
        let f = Filter {
            documents: Some(vec![]),
            agent: None,
        };
        assert!(idx.search(&t, "widgets", &f, 10).unwrap().is_empty());
        let f = Filter {
            documents: None,
            agent: Some(AgentId::new()),
        };
        assert!(idx.search(&t, "widgets", &f, 10).unwrap().is_empty());
    }

    #[test]
    fn document_filters_covering_all_most_or_few_documents_are_exact() {
        let dir = tempfile::tempdir().unwrap();
        let idx = TextIndex::open(dir.path()).unwrap();
        let (t, other) = (TenantId::new(), TenantId::new());
        let docs: Vec<DocumentId> = (0..5).map(|_| DocumentId::new()).collect();
        let gone = DocumentId::new();
        let foreign = DocumentId::new();
        let mut batch: Vec<TextDoc> = Vec::new();
        for d in docs.iter().chain([&gone]) {
            for i in 0..3 {
                batch.push(tdoc(&t, d, &format!("widget manual part {i}"), &[]));
            }
        }
        batch.push(tdoc(&other, &foreign, "widget manual", &[]));
        idx.add(&batch).unwrap();
        idx.delete_document(&t, &gone).unwrap();
        let search = |documents: Vec<DocumentId>| {
            let f = Filter {
                documents: Some(documents),
                agent: None,
            };
            let mut d: Vec<DocumentId> = idx
                .search(&t, "widget manual", &f, 100)
                .unwrap()
                .into_iter()
                .map(|h| h.document)
                .collect();
            d.sort();
            d.dedup();
            d
        };
        let mut live = docs.clone();
        live.sort();
        // Every live document (plus a deleted, a foreign and an unknown one): no filter.
        let mut all_docs = docs.clone();
        all_docs.extend([gone.clone(), foreign.clone(), DocumentId::new()]);
        assert_eq!(search(all_docs), live);
        let unfiltered = idx.search(&t, "widget manual", &all(), 100).unwrap();
        assert_eq!(unfiltered.len(), 15);
        // Four of five (excluded by complement) and one of five (included).
        let mut most = docs[1..].to_vec();
        most.push(gone.clone());
        let mut want = docs[1..].to_vec();
        want.sort();
        assert_eq!(search(most), want);
        assert_eq!(search(vec![docs[2].clone()]), vec![docs[2].clone()]);
        // Nothing live: nothing, even for another tenant's document.
        assert!(search(vec![gone.clone()]).is_empty());
        assert!(search(vec![foreign.clone()]).is_empty());
    }

    #[test]
    fn deletes_stick_across_reopen_and_add_replaces_by_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (TenantId::new(), TenantId::new());
        let (d1, d2) = (DocumentId::new(), DocumentId::new());
        {
            let idx = TextIndex::open(dir.path()).unwrap();
            let mut c = tdoc(&a, &d1, "alpha beta", &[]);
            idx.add(std::slice::from_ref(&c)).unwrap();
            // Same chunk id again: replaced, not duplicated.
            c.text = "alpha gamma".into();
            idx.add(std::slice::from_ref(&c)).unwrap();
            assert!(idx.search(&a, "beta", &all(), 10).unwrap().is_empty());
            assert_eq!(idx.search(&a, "alpha", &all(), 10).unwrap().len(), 1);
            idx.add(&[
                tdoc(&a, &d2, "alpha delta", &[]),
                tdoc(&b, &d2, "alpha", &[]),
            ])
            .unwrap();
            idx.delete_document(&a, &d1).unwrap();
            let hits = idx.search(&a, "alpha", &all(), 10).unwrap();
            assert_eq!(hits.len(), 1);
            assert_eq!(hits[0].document, d2);
            idx.delete_tenant(&a).unwrap();
            assert!(idx.search(&a, "alpha", &all(), 10).unwrap().is_empty());
            assert_eq!(idx.search(&b, "alpha", &all(), 10).unwrap().len(), 1);
        }
        let idx = TextIndex::open(dir.path()).unwrap();
        assert!(idx.search(&a, "alpha", &all(), 10).unwrap().is_empty());
        assert_eq!(idx.search(&b, "alpha", &all(), 10).unwrap().len(), 1);
        idx.clear().unwrap();
        assert!(idx.search(&b, "alpha", &all(), 10).unwrap().is_empty());
    }

    /// Reprocessing a document: its new chunks replace the old in one commit, and only that
    /// document's (in that tenant) change.
    #[test]
    fn replacing_a_document_swaps_its_chunks_in_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let idx = TextIndex::open(dir.path()).unwrap();
        let (a, b) = (TenantId::new(), TenantId::new());
        let (d1, d2) = (DocumentId::new(), DocumentId::new());
        idx.add(&[
            tdoc(&a, &d1, "alpha kettle", &[]),
            tdoc(&a, &d1, "alpha teapot", &[]),
            tdoc(&a, &d2, "alpha other", &[]),
            tdoc(&b, &d1, "alpha elsewhere", &[]),
        ])
        .unwrap();
        let new = [
            tdoc(&a, &d1, "gamma kettle", &[]),
            tdoc(&a, &d1, "gamma teapot", &[]),
            tdoc(&a, &d1, "gamma mug", &[]),
        ];
        let before = idx.generation();
        idx.replace_document(&a, &d1, &new).unwrap();
        assert_eq!(idx.generation(), before + 1, "one commit");
        assert_eq!(idx.document_chunks(&a, &d1).unwrap(), 3);
        let old = idx.search(&a, "alpha", &all(), 10).unwrap();
        assert_eq!(
            old.iter().map(|h| &h.document).collect::<Vec<_>>(),
            [&d2],
            "the old chunks are gone, the other document stays"
        );
        let mut found: Vec<_> = idx
            .search(&a, "gamma", &all(), 10)
            .unwrap()
            .into_iter()
            .map(|h| h.chunk)
            .collect();
        let mut want: Vec<_> = new.iter().map(|d| d.chunk.clone()).collect();
        found.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        want.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        assert_eq!(found, want);
        assert_eq!(idx.search(&b, "alpha", &all(), 10).unwrap().len(), 1);
        // No chunks: the document is gone, in one commit too.
        idx.replace_document(&a, &d1, &[]).unwrap();
        assert_eq!(idx.generation(), before + 2);
        assert_eq!(idx.document_chunks(&a, &d1).unwrap(), 0);
    }

    #[test]
    fn query_text_is_never_parsed_as_syntax() {
        let dir = tempfile::tempdir().unwrap();
        let idx = TextIndex::open(dir.path()).unwrap();
        let t = TenantId::new();
        idx.add(&[tdoc(
            &t,
            &DocumentId::new(),
            "what is the return window",
            &[],
        )])
        .unwrap();
        for q in [
            "\"return",
            "return AND (",
            "-return +window:",
            "",
            "   ",
            "***",
        ] {
            let hits = idx.search(&t, q, &all(), 10).unwrap();
            assert!(hits.len() <= 1, "{q}");
        }
        assert_eq!(
            idx.search(&t, "Returns?", &all(), 10).unwrap().len(),
            1,
            "stemming and case folding apply to queries"
        );
        assert!(idx.search(&t, "return", &all(), 0).unwrap().is_empty());
    }

    #[test]
    fn corrupt_index_is_recreated_and_reports_rebuild() {
        let t = TenantId::new();
        for damage in ["meta", "segment"] {
            let dir = tempfile::tempdir().unwrap();
            {
                let idx = TextIndex::open(dir.path()).unwrap();
                idx.add(&[tdoc(&t, &DocumentId::new(), "warranty terms", &[])])
                    .unwrap();
            }
            if damage == "meta" {
                std::fs::write(dir.path().join("meta.json"), b"{ not json").unwrap();
            } else {
                // Flip bytes in the middle of every segment file.
                for e in std::fs::read_dir(dir.path()).unwrap() {
                    let p = e.unwrap().path();
                    let name = p.file_name().unwrap().to_string_lossy().to_string();
                    if name.ends_with(".idx") || name.ends_with(".term") {
                        let mut b = std::fs::read(&p).unwrap();
                        let mid = b.len() / 2;
                        b[mid] ^= 0xff;
                        std::fs::write(&p, b).unwrap();
                    }
                }
            }
            let idx = TextIndex::open(dir.path()).unwrap();
            assert!(idx.needs_rebuild(), "{damage}");
            assert!(idx.search(&t, "warranty", &all(), 10).unwrap().is_empty());
            idx.add(&[tdoc(&t, &DocumentId::new(), "warranty terms", &[])])
                .unwrap();
            assert_eq!(idx.search(&t, "warranty", &all(), 10).unwrap().len(), 1);
        }
    }
}

mod vector {
    use super::*;
    use crate::index::vector::{FoldRule, PersistTotals};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    const DIMS: usize = 16;

    /// Deterministic pseudo-random vectors (splitmix64).
    fn vecs(seed: u64, n: usize) -> Vec<Vec<f32>> {
        let mut s = seed;
        let mut next = move || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) as f64 / u64::MAX as f64) as f32 - 0.5
        };
        (0..n)
            .map(|_| (0..DIMS).map(|_| next()).collect())
            .collect()
    }

    fn small_graph() -> HnswParams {
        // Graph above 50 vectors so tests exercise HNSW, tombstones and compaction.
        HnswParams {
            exact_max: 50,
            ..HnswParams::default()
        }
    }

    type Item = (ChunkId, DocumentId, Vec<f32>);

    fn items(doc: &DocumentId, vs: &[Vec<f32>]) -> Vec<Item> {
        vs.iter()
            .map(|v| (ChunkId::new(), doc.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn tenants_never_see_each_other() {
        for params in [HnswParams::default(), small_graph()] {
            let dir = tempfile::tempdir().unwrap();
            let idx = VectorIndex::open_with(dir.path(), DIMS, "m", params).unwrap();
            let (a, b) = (TenantId::new(), TenantId::new());
            let vs = vecs(1, 200);
            let ia = items(&DocumentId::new(), &vs);
            let ib = items(&DocumentId::new(), &vs);
            idx.insert(&a, &ia).unwrap();
            idx.insert(&b, &ib).unwrap();
            let a_chunks: std::collections::HashSet<_> = ia.iter().map(|i| &i.0).collect();
            for q in vs.iter().take(20) {
                let hits = idx.search(&a, q, None, 10).unwrap();
                assert_eq!(hits.len(), 10);
                assert!(hits.iter().all(|h| a_chunks.contains(&h.chunk)));
            }
            let other = [ib[0].1.clone()];
            assert!(idx.search(&a, &vs[0], Some(&other), 10).unwrap().is_empty());
            assert!(
                idx.search(&TenantId::new(), &vs[0], None, 10)
                    .unwrap()
                    .is_empty()
            );
        }
    }

    #[test]
    fn the_search_ef_grows_with_the_square_root_of_a_large_tenant() {
        let p = HnswParams::default();
        let from = p.ef_grows_above;
        assert_eq!(p.search_ef(10, 5_000), p.ef_search);
        assert_eq!(p.search_ef(10, from), p.ef_search);
        assert_eq!(p.search_ef(10, 4 * from), 2 * p.ef_search);
        assert_eq!(p.search_ef(10, 64 * from), 8 * p.ef_search);
        // Never fewer candidates than results.
        assert_eq!(p.search_ef(200, 5_000), 200);
        let fixed = HnswParams {
            ef_grows_above: usize::MAX,
            ..p
        };
        assert_eq!(fixed.search_ef(10, 10_000_000), fixed.ef_search);
    }

    #[test]
    fn exact_and_graph_find_the_vector_itself_first() {
        for params in [HnswParams::default(), small_graph()] {
            let dir = tempfile::tempdir().unwrap();
            let idx = VectorIndex::open_with(dir.path(), DIMS, "m", params).unwrap();
            let t = TenantId::new();
            let vs = vecs(2, 300);
            let it = items(&DocumentId::new(), &vs);
            idx.insert(&t, &it).unwrap();
            for (i, v) in vs.iter().enumerate().take(50) {
                let hits = idx.search(&t, v, None, 5).unwrap();
                assert_eq!(hits[0].chunk, it[i].0);
                // Stored as halves: within ~1e-4 per 16 components of a cosine of 1.
                assert!((hits[0].score - 1.0).abs() < 5e-4);
                assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
            }
        }
    }

    /// An index with four documents of 100 vectors each (seeds `seed..seed + 4`), and the
    /// items inserted per document.
    fn four_documents(
        params: HnswParams,
        seed: u64,
    ) -> (
        tempfile::TempDir,
        VectorIndex,
        TenantId,
        Vec<DocumentId>,
        Vec<Vec<Item>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let idx = VectorIndex::open_with(dir.path(), DIMS, "m", params).unwrap();
        let t = TenantId::new();
        let docs: Vec<DocumentId> = (0..4).map(|_| DocumentId::new()).collect();
        let mut inserted = Vec::new();
        for (i, d) in docs.iter().enumerate() {
            let it = items(d, &vecs(seed + i as u64, 100));
            idx.insert(&t, &it).unwrap();
            inserted.push(it);
        }
        (dir, idx, t, docs, inserted)
    }

    #[test]
    fn document_filter_restricts_results() {
        for params in [HnswParams::default(), small_graph()] {
            let (_dir, idx, t, docs, _) = four_documents(params, 10);
            let q = &vecs(99, 1)[0];
            let want = [docs[1].clone(), docs[3].clone()];
            let hits = idx.search(&t, q, Some(&want), 30).unwrap();
            assert_eq!(hits.len(), 30);
            assert!(hits.iter().all(|h| want.contains(&h.document)));
            assert!(idx.search(&t, q, Some(&[]), 30).unwrap().is_empty());
        }
    }

    #[test]
    fn a_filter_covering_every_live_document_searches_like_no_filter() {
        for params in [HnswParams::default(), small_graph()] {
            let (_dir, idx, t, docs, _) = four_documents(params, 20);
            // Below the compaction threshold: the deleted document stays as tombstones.
            let small = DocumentId::new();
            idx.insert(&t, &items(&small, &vecs(30, 10))).unwrap();
            idx.delete_document(&t, &small).unwrap();
            // Every live document, in another order, with a duplicate, the deleted
            // document and one the index never saw.
            let mut all: Vec<DocumentId> = docs.iter().rev().cloned().collect();
            all.extend([docs[0].clone(), small.clone(), DocumentId::new()]);
            for q in vecs(31, 10).iter().chain(&vecs(30, 10)) {
                let filtered = idx.search(&t, q, Some(&all), 20).unwrap();
                let unfiltered = idx.search(&t, q, None, 20).unwrap();
                assert_eq!(filtered, unfiltered);
                assert_eq!(filtered.len(), 20);
                assert!(filtered.iter().all(|h| h.document != small));
            }
        }
    }

    #[test]
    fn a_partial_filter_returns_only_live_chunks_of_its_documents() {
        for params in [HnswParams::default(), small_graph()] {
            let (_dir, idx, t, docs, inserted) = four_documents(params, 40);
            // Re-insert ten chunks of docs[2] under docs[0]: their old slots (in docs[2],
            // which the filter allows) are tombstones that must not come back.
            let moved: Vec<Item> = inserted[2][..10]
                .iter()
                .map(|(c, _, v)| (c.clone(), docs[0].clone(), v.clone()))
                .collect();
            idx.insert(&t, &moved).unwrap();
            let gone = DocumentId::new();
            idx.insert(&t, &items(&gone, &vecs(49, 10))).unwrap();
            idx.delete_document(&t, &gone).unwrap();
            let want = [docs[2].clone(), docs[3].clone(), gone.clone()];
            for (i, q) in inserted[2].iter().map(|(_, _, v)| v).enumerate().take(30) {
                let hits = idx.search(&t, q, Some(&want), 20).unwrap();
                assert_eq!(hits.len(), 20);
                assert!(
                    hits.iter()
                        .all(|h| h.document == docs[2] || h.document == docs[3])
                );
                assert!(hits.iter().all(|h| !moved.iter().any(|m| m.0 == h.chunk)));
                if i >= 10 {
                    // A chunk still in docs[2] is its own nearest neighbour.
                    assert_eq!(hits[0].chunk, inserted[2][i].0);
                }
            }
        }
    }

    #[test]
    fn deleted_chunks_never_come_back_even_after_persist_and_reopen() {
        for params in [HnswParams::default(), small_graph()] {
            let dir = tempfile::tempdir().unwrap();
            let t = TenantId::new();
            let (keep, gone) = (DocumentId::new(), DocumentId::new());
            let vs = vecs(3, 120);
            {
                let idx = VectorIndex::open_with(dir.path(), DIMS, "m", params.clone()).unwrap();
                idx.insert(&t, &items(&keep, &vs[..100])).unwrap();
                idx.insert(&t, &items(&gone, &vs[100..])).unwrap();
                idx.persist().unwrap();
                idx.delete_document(&t, &gone).unwrap();
                for q in &vs[100..] {
                    let hits = idx.search(&t, q, None, 50).unwrap();
                    assert!(hits.iter().all(|h| h.document == keep));
                }
                idx.persist().unwrap();
            }
            let idx = VectorIndex::open_with(dir.path(), DIMS, "m", params).unwrap();
            assert!(idx.tenants_needing_rebuild().is_empty());
            for q in &vs[100..] {
                let hits = idx.search(&t, q, None, 50).unwrap();
                assert_eq!(hits.len(), 50);
                assert!(hits.iter().all(|h| h.document == keep));
            }
        }
    }

    #[test]
    fn heavy_deletion_compacts_and_stays_correct() {
        let dir = tempfile::tempdir().unwrap();
        let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
        let t = TenantId::new();
        let docs: Vec<DocumentId> = (0..10).map(|_| DocumentId::new()).collect();
        let vs = vecs(4, 600);
        for (i, d) in docs.iter().enumerate() {
            idx.insert(&t, &items(d, &vs[i * 60..(i + 1) * 60]))
                .unwrap();
        }
        for d in &docs[..7] {
            idx.delete_document(&t, d).unwrap();
        }
        for q in vs.iter().step_by(7) {
            let hits = idx.search(&t, q, None, 20).unwrap();
            assert_eq!(hits.len(), 20);
            assert!(hits.iter().all(|h| docs[7..].contains(&h.document)));
        }
        // The survivors are still found exactly.
        let hits = idx.search(&t, &vs[599], None, 1).unwrap();
        assert!((hits[0].score - 1.0).abs() < 5e-4);
    }

    #[test]
    fn persistence_round_trip_keeps_results() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (TenantId::new(), TenantId::new());
        let vs = vecs(5, 300);
        let qs = vecs(6, 20);
        let before: Vec<Vec<Hit>>;
        {
            let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
            assert!(idx.needs_rebuild_all());
            // No index found: every tenant is to be rebuilt (a restored backup, a lost
            // directory) until it has vectors again.
            assert!(idx.needs_rebuild(&a) && idx.needs_rebuild(&b));
            idx.insert(&a, &items(&DocumentId::new(), &vs)).unwrap();
            idx.rebuild_tenant(&b, items(&DocumentId::new(), &vs[..30]).into_iter())
                .unwrap();
            assert!(!idx.needs_rebuild(&a) && !idx.needs_rebuild(&b));
            before = qs
                .iter()
                .map(|q| idx.search(&a, q, None, 10).unwrap())
                .collect();
            idx.persist().unwrap();
        }
        let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
        assert!(!idx.needs_rebuild_all());
        assert!(idx.tenants_needing_rebuild().is_empty());
        assert!(!idx.needs_rebuild(&TenantId::new()));
        for (q, want) in qs.iter().zip(&before) {
            assert_eq!(&idx.search(&a, q, None, 10).unwrap(), want);
        }
        assert_eq!(idx.search(&b, &vs[0], None, 100).unwrap().len(), 30);
        // The loaded graph keeps accepting inserts.
        let extra = items(&DocumentId::new(), &vecs(7, 10));
        idx.insert(&a, &extra).unwrap();
        let hits = idx.search(&a, &extra[3].2, None, 1).unwrap();
        assert_eq!(hits[0].chunk, extra[3].0);
        idx.persist().unwrap();
        // Only the current generation is kept.
        let tdir = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.is_dir())
            .unwrap();
        let gens = std::fs::read_dir(tdir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_dir())
            .count();
        assert_eq!(gens, 1);
    }

    #[test]
    fn corrupt_tenant_files_mean_that_tenant_needs_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (TenantId::new(), TenantId::new());
        let vs = vecs(8, 100);
        {
            let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
            idx.insert(&a, &items(&DocumentId::new(), &vs)).unwrap();
            idx.insert(&b, &items(&DocumentId::new(), &vs)).unwrap();
            idx.persist().unwrap();
        }
        // Damage one file of tenant a's current generation at a time.
        let a_dir = dir.path().join(format!("t-{}", hex::encode(a.as_str())));
        for file in ["meta.bin", "vectors.f16", "graph.bin"] {
            let current = std::fs::read_to_string(a_dir.join("CURRENT")).unwrap();
            let p = a_dir.join(current.trim()).join(file);
            let orig = std::fs::read(&p).unwrap();
            let mut bad = orig.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x5a;
            std::fs::write(&p, &bad).unwrap();
            {
                let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
                assert_eq!(idx.tenants_needing_rebuild(), vec![a.clone()], "{file}");
                assert!(idx.needs_rebuild(&a) && !idx.needs_rebuild(&b));
                assert!(idx.search(&a, &vs[0], None, 5).unwrap().is_empty());
                assert_eq!(idx.search(&b, &vs[0], None, 5).unwrap().len(), 5);
                // Persisting does not make the unrebuilt tenant look valid.
                idx.persist().unwrap();
            }
            std::fs::write(&p, &orig).unwrap();
            // Still untrusted until rebuilt, even with the file repaired.
            let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
            assert!(idx.needs_rebuild(&a), "{file}");
            idx.rebuild_tenant(&a, items(&DocumentId::new(), &vs).into_iter())
                .unwrap();
            assert!(!idx.needs_rebuild(&a));
            assert_eq!(idx.search(&a, &vs[0], None, 5).unwrap().len(), 5);
            idx.persist().unwrap();
            drop(idx);
            let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
            assert!(idx.tenants_needing_rebuild().is_empty());
        }
    }

    #[test]
    fn unpersisted_changes_make_the_tenant_untrusted_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (TenantId::new(), TenantId::new());
        let gone = DocumentId::new();
        let vs = vecs(9, 40);
        {
            let idx = VectorIndex::open(dir.path(), DIMS, "m").unwrap();
            idx.insert(&a, &items(&gone, &vs)).unwrap();
            idx.insert(&b, &items(&DocumentId::new(), &vs)).unwrap();
            idx.persist().unwrap();
            idx.delete_document(&a, &gone).unwrap();
            // Dropped without persist: a crash.
        }
        let idx = VectorIndex::open(dir.path(), DIMS, "m").unwrap();
        assert_eq!(idx.tenants_needing_rebuild(), vec![a.clone()]);
        // The stale files (which still hold the deleted document) are not served.
        assert!(idx.search(&a, &vs[0], None, 5).unwrap().is_empty());
        assert_eq!(idx.search(&b, &vs[0], None, 5).unwrap().len(), 5);
    }

    #[test]
    fn other_model_or_dims_means_rebuild_all() {
        let dir = tempfile::tempdir().unwrap();
        let t = TenantId::new();
        {
            let idx = VectorIndex::open(dir.path(), DIMS, "m").unwrap();
            idx.insert(&t, &items(&DocumentId::new(), &vecs(1, 5)))
                .unwrap();
            idx.persist().unwrap();
        }
        let idx = VectorIndex::open(dir.path(), DIMS, "m").unwrap();
        assert!(!idx.needs_rebuild_all());
        drop(idx);
        let idx = VectorIndex::open(dir.path(), DIMS, "other-model").unwrap();
        assert!(idx.needs_rebuild_all());
        assert!(idx.search(&t, &vecs(1, 1)[0], None, 5).unwrap().is_empty());
        drop(idx);
        let idx = VectorIndex::open(dir.path(), DIMS * 2, "other-model").unwrap();
        assert!(idx.needs_rebuild_all());
    }

    #[test]
    fn bad_vectors_are_rejected_and_chunks_upsert() {
        let dir = tempfile::tempdir().unwrap();
        let idx = VectorIndex::open(dir.path(), DIMS, "m").unwrap();
        let t = TenantId::new();
        let d = DocumentId::new();
        let c = ChunkId::new();
        assert!(matches!(
            idx.insert(&t, &[(c.clone(), d.clone(), vec![1.0; DIMS + 1])]),
            Err(Error::Dimensions { .. })
        ));
        let mut nan = vec![1.0; DIMS];
        nan[3] = f32::NAN;
        assert!(idx.insert(&t, &[(c.clone(), d.clone(), nan)]).is_err());
        assert!(idx.search(&t, &[0.0; 3], None, 1).is_err());
        let vs = vecs(11, 2);
        idx.insert(&t, &[(c.clone(), d.clone(), vs[0].clone())])
            .unwrap();
        idx.insert(&t, &[(c.clone(), d.clone(), vs[1].clone())])
            .unwrap();
        let hits = idx.search(&t, &vs[0], None, 10).unwrap();
        assert_eq!(hits.len(), 1, "re-inserting a chunk replaces it");
        assert_eq!(hits[0].chunk, c);
        idx.delete_tenant(&t).unwrap();
        assert!(idx.search(&t, &vs[0], None, 10).unwrap().is_empty());
    }

    #[test]
    fn the_index_holds_each_vector_once() {
        // 384 dimensions, as MiniLM, held in half precision: 768 bytes per vector plus the
        // links; a second copy (as hnsw_rs kept), or f32, would add 768 bytes or more.
        let dims = 384;
        let dir = tempfile::tempdir().unwrap();
        let idx = VectorIndex::open_with(dir.path(), dims, "m", small_graph()).unwrap();
        let t = TenantId::new();
        let n = 1000;
        let vs: Vec<Vec<f32>> = vecs(11, n * dims / DIMS)
            .concat()
            .chunks_exact(dims)
            .map(<[f32]>::to_vec)
            .collect();
        idx.insert(&t, &items(&DocumentId::new(), &vs)).unwrap();
        let per_vector = idx.memory_bytes() / n;
        assert!(
            (dims * 2..dims * 2 + 300).contains(&per_vector),
            "{per_vector} bytes per vector"
        );
        // And it is a working graph.
        let hits = idx.search(&t, &vs[500], None, 1).unwrap();
        assert!((hits[0].score - 1.0).abs() < 1e-4);
    }

    /// Rewrites tenant `t`'s current generation as meta `version` wrote it: ids as text,
    /// `vectors.f32` instead of `vectors.f16` for versions 1 and 2, and for version 1
    /// hnsw_rs graph files instead of `graph.bin`. Returns the meta.bin path.
    fn make_old_generation(
        dir: &std::path::Path,
        t: &TenantId,
        version: u32,
    ) -> std::path::PathBuf {
        let tdir = dir.join(format!("t-{}", hex::encode(t.as_str())));
        crate::index::vector::write_old_generation(&tdir, DIMS, "m", version, false)
    }

    fn current_dir(dir: &std::path::Path, t: &TenantId) -> std::path::PathBuf {
        let tdir = dir.join(format!("t-{}", hex::encode(t.as_str())));
        let current = std::fs::read_to_string(tdir.join("CURRENT")).unwrap();
        tdir.join(current.trim())
    }

    fn current_files(dir: &std::path::Path, t: &TenantId) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(current_dir(dir, t))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn dumps_of_previous_formats_load_and_are_rewritten_once() {
        for version in [1u32, 2, 3, 4] {
            let dir = tempfile::tempdir().unwrap();
            let t = TenantId::new();
            let vs = vecs(12, 300);
            let it = items(&DocumentId::new(), &vs);
            {
                let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
                idx.insert(&t, &it).unwrap();
                idx.persist().unwrap();
            }
            let meta_path = make_old_generation(dir.path(), &t, version);
            let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
            assert!(idx.tenants_needing_rebuild().is_empty());
            for (i, v) in vs.iter().enumerate().step_by(13) {
                let hits = idx.search(&t, v, None, 3).unwrap();
                assert_eq!(hits[0].chunk, it[i].0, "version {version}");
            }
            // Nothing changed, yet the next persist writes the current format, so the
            // conversion (for version 1 a graph build) happens at one start, not at every one.
            idx.persist().unwrap();
            drop(idx);
            assert_eq!(
                current_files(dir.path(), &t),
                ["graph.bin", "meta.bin", "vectors.f16"],
                "version {version}"
            );
            let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
            assert!(idx.tenants_needing_rebuild().is_empty());
            let hits = idx.search(&t, &vs[26], None, 3).unwrap();
            assert_eq!(hits[0].chunk, it[26].0);
            drop(idx);
            // A version this build does not know is refused (the tenant is rebuilt).
            let meta_path = {
                let _ = meta_path;
                let tdir = dir.path().join(format!("t-{}", hex::encode(t.as_str())));
                let current = std::fs::read_to_string(tdir.join("CURRENT")).unwrap();
                tdir.join(current.trim()).join("meta.bin")
            };
            let mut meta = std::fs::read(&meta_path).unwrap();
            meta.truncate(meta.len() - 4);
            meta[4..8].copy_from_slice(&6u32.to_le_bytes());
            let crc = crc32fast::hash(&meta);
            meta.extend_from_slice(&crc.to_le_bytes());
            std::fs::write(&meta_path, &meta).unwrap();
            let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
            assert_eq!(idx.tenants_needing_rebuild(), vec![t]);
        }
    }

    #[test]
    fn an_old_dump_changed_before_its_rewrite_is_still_untrusted_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let t = TenantId::new();
        let gone = DocumentId::new();
        let vs = vecs(13, 80);
        {
            let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
            idx.insert(&t, &items(&gone, &vs)).unwrap();
            idx.persist().unwrap();
        }
        make_old_generation(dir.path(), &t, 2);
        {
            let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
            idx.delete_document(&t, &gone).unwrap();
            // Dropped without persist: a crash.
        }
        let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
        assert_eq!(idx.tenants_needing_rebuild(), vec![t.clone()]);
        assert!(idx.search(&t, &vs[0], None, 5).unwrap().is_empty());
    }

    /// The store's copy of the vectors as `VectorSource` sees it: each chunk's vector as
    /// the halves of what the embedder returned (`store::put_vector`).
    #[derive(Default)]
    struct Halves(Mutex<HashMap<ChunkId, Vec<u16>>>);

    impl Halves {
        fn put(&self, items: &[Item]) {
            let mut m = self.0.lock().unwrap();
            for (c, _, v) in items {
                m.insert(
                    c.clone(),
                    v.iter().map(|&x| crate::index::vector::to_f16(x)).collect(),
                );
            }
        }
    }

    impl VectorSource for Halves {
        fn tenant_vectors(
            &self,
            _tenant: &TenantId,
            each: &mut dyn FnMut(&ChunkId, &[u16]),
        ) -> Result<(), String> {
            for (c, v) in self.0.lock().unwrap().iter() {
                each(c, v);
            }
            Ok(())
        }
    }

    fn open_sourced(dir: &std::path::Path, source: &Arc<Halves>) -> VectorIndex {
        let source: Arc<dyn VectorSource> = source.clone();
        VectorIndex::open_with_source(dir, DIMS, "m", small_graph(), Some(source)).unwrap()
    }

    #[test]
    fn with_the_store_holding_the_vectors_dumps_keep_links_only_and_load_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Halves::default());
        let t = TenantId::new();
        let (keep, gone) = (DocumentId::new(), DocumentId::new());
        let vs = vecs(14, 300);
        let (kept, dropped) = (items(&keep, &vs[..280]), items(&gone, &vs[280..]));
        let qs = vecs(15, 20);
        let before: Vec<Vec<Hit>>;
        {
            let idx = open_sourced(dir.path(), &store);
            store.put(&kept);
            store.put(&dropped);
            idx.insert(&t, &kept).unwrap();
            idx.insert(&t, &dropped).unwrap();
            // Deleted: the store forgets them, the graph still routes through them.
            idx.delete_document(&t, &gone).unwrap();
            store
                .0
                .lock()
                .unwrap()
                .retain(|c, _| !dropped.iter().any(|d| &d.0 == c));
            before = qs
                .iter()
                .map(|q| idx.search(&t, q, None, 10).unwrap())
                .collect();
            idx.persist().unwrap();
        }
        assert_eq!(
            current_files(dir.path(), &t),
            ["dead.f16", "graph.bin", "meta.bin"]
        );
        let dead = current_dir(dir.path(), &t).join("dead.f16");
        assert_eq!(
            std::fs::metadata(&dead).unwrap().len(),
            20 * DIMS as u64 * 2
        );
        let idx = open_sourced(dir.path(), &store);
        assert!(idx.tenants_needing_rebuild().is_empty());
        for (q, want) in qs.iter().zip(&before) {
            assert_eq!(&idx.search(&t, q, None, 10).unwrap(), want);
        }
        // The same index without the store cannot serve the tenant: it is rebuilt.
        drop(idx);
        let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
        assert_eq!(idx.tenants_needing_rebuild(), vec![t.clone()]);
    }

    #[test]
    fn a_graph_is_never_served_against_vectors_it_was_not_built_for() {
        let vs = vecs(16, 200);
        let it = items(&DocumentId::new(), &vs);
        let other = vecs(17, 1);
        // The store lacks a vector; holds another vector for a chunk; holds one from
        // another model (other dimensions).
        type Vectors = HashMap<ChunkId, Vec<u16>>;
        let changes: [&dyn Fn(&mut Vectors); 3] = [
            &|m| {
                m.remove(&it[7].0);
            },
            &|m| {
                m.insert(
                    it[7].0.clone(),
                    other[0]
                        .iter()
                        .map(|&x| crate::index::vector::to_f16(x))
                        .collect(),
                );
            },
            &|m| {
                m.get_mut(&it[7].0).unwrap().push(0);
            },
        ];
        for (i, change) in changes.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Halves::default());
            let t = TenantId::new();
            {
                let idx = open_sourced(dir.path(), &store);
                store.put(&it);
                idx.insert(&t, &it).unwrap();
                idx.persist().unwrap();
            }
            change(&mut store.0.lock().unwrap());
            let idx = open_sourced(dir.path(), &store);
            assert_eq!(idx.tenants_needing_rebuild(), vec![t.clone()], "change {i}");
            assert!(idx.search(&t, &vs[0], None, 5).unwrap().is_empty());
        }
    }

    #[test]
    fn a_kept_tenant_dumps_its_vectors_and_outlives_the_stores_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Halves::default());
        let t = TenantId::new();
        let vs = vecs(18, 200);
        let it = items(&DocumentId::new(), &vs);
        {
            let idx = open_sourced(dir.path(), &store);
            store.put(&it);
            idx.insert(&t, &it).unwrap();
            idx.persist().unwrap();
            assert!(!current_files(dir.path(), &t).contains(&"vectors.f16".to_string()));
            // A change of model starts: the dump holds the vectors before this returns.
            idx.keep_own_vectors(&t).unwrap();
            assert_eq!(
                current_files(dir.path(), &t),
                ["graph.bin", "meta.bin", "vectors.f16"]
            );
            // Later dumps too.
            idx.insert(&t, &items(&DocumentId::new(), &vecs(19, 3)))
                .unwrap();
            idx.persist().unwrap();
            assert!(current_files(dir.path(), &t).contains(&"vectors.f16".to_string()));
        }
        // Re-embedding replaces the store's copy with the new model's vectors.
        store.put(&items(&DocumentId::new(), &vecs(20, 1)));
        let replaced: Vec<Item> = it
            .iter()
            .zip(vecs(21, 200))
            .map(|((c, d, _), v)| (c.clone(), d.clone(), v))
            .collect();
        store.put(&replaced);
        let idx = open_sourced(dir.path(), &store);
        assert!(idx.tenants_needing_rebuild().is_empty());
        let hits = idx.search(&t, &vs[42], None, 1).unwrap();
        assert_eq!(hits[0].chunk, it[42].0);
        // Its next dump still holds them: the store's are not its own.
        idx.insert(&t, &items(&DocumentId::new(), &vecs(22, 1)))
            .unwrap();
        idx.persist().unwrap();
        assert!(current_files(dir.path(), &t).contains(&"vectors.f16".to_string()));
    }

    #[test]
    fn a_dump_holding_its_vectors_gives_them_up_when_the_store_holds_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let t = TenantId::new();
        let vs = vecs(23, 200);
        let it = items(&DocumentId::new(), &vs);
        {
            // As the previous format wrote it: every vector in the dump.
            let idx = VectorIndex::open_with(dir.path(), DIMS, "m", small_graph()).unwrap();
            idx.insert(&t, &it).unwrap();
            idx.persist().unwrap();
        }
        make_old_generation(dir.path(), &t, 2);
        let store = Arc::new(Halves::default());
        store.put(&it);
        let idx = open_sourced(dir.path(), &store);
        assert!(idx.tenants_needing_rebuild().is_empty());
        idx.persist().unwrap();
        drop(idx);
        assert_eq!(
            current_files(dir.path(), &t),
            ["dead.f16", "graph.bin", "meta.bin"]
        );
        let idx = open_sourced(dir.path(), &store);
        assert!(idx.tenants_needing_rebuild().is_empty());
        let hits = idx.search(&t, &vs[9], None, 1).unwrap();
        assert_eq!(hits[0].chunk, it[9].0);
    }

    /// A graph from 50 vectors with short lists, so a debug build makes thousands of
    /// nodes quickly.
    fn lean_graph() -> HnswParams {
        HnswParams {
            max_conn: 8,
            ef_construction: 40,
            exact_max: 50,
            ..HnswParams::default()
        }
    }

    fn open_lean(dir: &std::path::Path, store: Option<&Arc<Halves>>) -> VectorIndex {
        let source = store.cloned().map(|s| s as Arc<dyn VectorSource>);
        VectorIndex::open_with_source(dir, DIMS, "m", lean_graph(), source).unwrap()
    }

    /// The current generation's base bytes and its delta files' sizes, in order.
    fn dump_sizes(dir: &std::path::Path, t: &TenantId) -> (u64, Vec<u64>) {
        let mut base = 0;
        let mut deltas = Vec::new();
        for name in current_files(dir, t) {
            let len = std::fs::metadata(current_dir(dir, t).join(&name))
                .unwrap()
                .len();
            if name.starts_with("delta-") {
                deltas.push(len);
            } else {
                base += len;
            }
        }
        (base, deltas)
    }

    /// Adds items to the index and, when there is one, to the store.
    fn add(idx: &VectorIndex, store: Option<&Arc<Halves>>, t: &TenantId, it: &[Item]) {
        if let Some(s) = store {
            s.put(it);
        }
        idx.insert(t, it).unwrap();
    }

    /// Deletes a document from the index and its vectors from the store.
    fn remove(idx: &VectorIndex, store: Option<&Arc<Halves>>, t: &TenantId, it: &[Item]) {
        if let Some(s) = store {
            s.0.lock()
                .unwrap()
                .retain(|c, _| !it.iter().any(|i| &i.0 == c));
        }
        idx.delete_document(t, &it[0].1).unwrap();
    }

    fn answers(idx: &VectorIndex, t: &TenantId, qs: &[Vec<f32>]) -> Vec<Vec<Hit>> {
        qs.iter()
            .map(|q| idx.search(t, q, None, 10).unwrap())
            .collect()
    }

    #[test]
    fn a_small_change_is_persisted_as_a_small_delta_and_loads_back() {
        for sourced in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Halves::default());
            let store = sourced.then_some(&store);
            let t = TenantId::new();
            let qs = vecs(41, 30);
            let vs = vecs(40, 5000);
            let idx = open_lean(dir.path(), store);
            // The last document is small: deleting it below is a small change.
            let parts: Vec<Vec<Item>> = vs
                .chunks(100)
                .enumerate()
                .map(|(i, p)| items(&DocumentId::new(), if i == 49 { &p[..5] } else { p }))
                .collect();
            parts.iter().for_each(|p| add(&idx, store, &t, p));
            idx.persist().unwrap();
            let (base, deltas) = dump_sizes(dir.path(), &t);
            assert!(deltas.is_empty());
            assert_eq!(
                idx.persisted(),
                PersistTotals {
                    bases: 1,
                    deltas: 0,
                    bytes: base
                }
            );
            // Ten chunks added, five deleted.
            remove(&idx, store, &t, &parts[49]);
            add(&idx, store, &t, &items(&DocumentId::new(), &vecs(42, 10)));
            idx.persist().unwrap();
            let (base_after, deltas) = dump_sizes(dir.path(), &t);
            assert_eq!(base_after, base, "sourced {sourced}");
            assert_eq!(deltas.len(), 1, "sourced {sourced}");
            // The whole tenant was written before: a change of 15 of ~4,900 chunks now
            // writes under a twentieth of it (the graph lists those inserts rewrote).
            assert!(
                deltas[0] * 20 < base,
                "sourced {sourced}: delta {} bytes, base {base}",
                deltas[0]
            );
            assert_eq!(
                idx.persisted(),
                PersistTotals {
                    bases: 1,
                    deltas: 1,
                    bytes: base + deltas[0]
                }
            );
            // Nothing changed: nothing written.
            idx.persist().unwrap();
            assert_eq!(idx.persisted().deltas, 1);
            let before = answers(&idx, &t, &qs);
            drop(idx);
            let idx = open_lean(dir.path(), store);
            assert!(
                idx.tenants_needing_rebuild().is_empty(),
                "sourced {sourced}"
            );
            assert_eq!(answers(&idx, &t, &qs), before, "sourced {sourced}");
            for (c, _, v) in &parts[49] {
                let hit = &idx.search(&t, v, None, 1).unwrap()[0];
                assert_ne!(&hit.chunk, c, "a deleted chunk came back");
            }
        }
    }

    /// Delta files of version 1 (each changed graph list whole, as session 10 wrote them)
    /// load from disk: an index reopened on a base and two of them answers as the one that
    /// wrote them, deleted chunks stay deleted, and a version 2 delta can follow them.
    #[test]
    fn version_1_deltas_on_disk_load_and_answer_as_before() {
        for sourced in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Halves::default());
            let store = sourced.then_some(&store);
            let t = TenantId::new();
            let qs = vecs(81, 30);
            let docs: Vec<Vec<Item>> = (0..20)
                .map(|i| items(&DocumentId::new(), &vecs(82 + i, 100)))
                .collect();
            let idx = open_lean(dir.path(), store);
            docs.iter().for_each(|d| add(&idx, store, &t, d));
            idx.persist().unwrap();
            crate::index::vector::writing_v1_deltas(|| {
                for round in 0..2u64 {
                    remove(&idx, store, &t, &docs[round as usize]);
                    add(
                        &idx,
                        store,
                        &t,
                        &items(&DocumentId::new(), &vecs(110 + round, 20)),
                    );
                    // A chunk re-embedded in place (same id, new vector).
                    let (c, d, _) = &docs[10 + round as usize][0];
                    let moved = vec![(c.clone(), d.clone(), vecs(120 + round, 1).remove(0))];
                    add(&idx, store, &t, &moved);
                    idx.persist().unwrap();
                }
            });
            let gen_dir = current_dir(dir.path(), &t);
            let versions: Vec<u32> = current_files(dir.path(), &t)
                .iter()
                .filter(|n| n.starts_with("delta-"))
                .map(|n| {
                    let b = std::fs::read(gen_dir.join(n)).unwrap();
                    u32::from_le_bytes([b[4], b[5], b[6], b[7]])
                })
                .collect();
            assert_eq!(versions, [1, 1], "sourced {sourced}");
            let before = answers(&idx, &t, &qs);
            drop(idx);

            let idx = open_lean(dir.path(), store);
            assert!(
                idx.tenants_needing_rebuild().is_empty(),
                "sourced {sourced}"
            );
            assert_eq!(answers(&idx, &t, &qs), before, "sourced {sourced}");
            for (c, _, v) in docs[..2].iter().flatten() {
                let hit = &idx.search(&t, v, None, 1).unwrap()[0];
                assert_ne!(
                    &hit.chunk, c,
                    "sourced {sourced}: a deleted chunk came back"
                );
            }
            // A change after them is written as version 2 and loads on top.
            remove(&idx, store, &t, &docs[2]);
            add(&idx, store, &t, &items(&DocumentId::new(), &vecs(130, 20)));
            idx.persist().unwrap();
            assert_eq!(
                dump_sizes(dir.path(), &t).1.len(),
                3,
                "sourced {sourced}: a delta, not a new base"
            );
            let before = answers(&idx, &t, &qs);
            drop(idx);
            let idx = open_lean(dir.path(), store);
            assert!(idx.tenants_needing_rebuild().is_empty());
            assert_eq!(answers(&idx, &t, &qs), before, "sourced {sourced}");
        }
    }

    #[test]
    fn restarts_between_deltas_answer_as_before_and_compaction_starts_a_new_base() {
        for sourced in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Halves::default());
            let store = sourced.then_some(&store);
            let t = TenantId::new();
            let qs = vecs(51, 20);
            let docs: Vec<Vec<Item>> = (0..20)
                .map(|i| items(&DocumentId::new(), &vecs(52 + i, 100)))
                .collect();
            {
                let idx = open_lean(dir.path(), store);
                docs.iter().for_each(|d| add(&idx, store, &t, d));
                idx.persist().unwrap();
            }
            let generation = current_dir(dir.path(), &t);
            for round in 0..3u64 {
                let idx = open_lean(dir.path(), store);
                assert!(idx.tenants_needing_rebuild().is_empty());
                remove(&idx, store, &t, &docs[round as usize]);
                add(
                    &idx,
                    store,
                    &t,
                    &items(&DocumentId::new(), &vecs(60 + round, 20)),
                );
                // A chunk re-embedded in place (same id, new vector).
                let (c, d, _) = &docs[10 + round as usize][0];
                let moved = vec![(c.clone(), d.clone(), vecs(70 + round, 1).remove(0))];
                add(&idx, store, &t, &moved);
                idx.persist().unwrap();
                let before = answers(&idx, &t, &qs);
                let moved_hit = idx.search(&t, &moved[0].2, None, 1).unwrap();
                drop(idx);
                let idx = open_lean(dir.path(), store);
                assert!(idx.tenants_needing_rebuild().is_empty(), "round {round}");
                assert_eq!(answers(&idx, &t, &qs), before, "round {round}");
                assert_eq!(idx.search(&t, &moved[0].2, None, 1).unwrap(), moved_hit);
                assert_eq!(current_dir(dir.path(), &t), generation);
                assert_eq!(dump_sizes(dir.path(), &t).1.len(), round as usize + 1);
            }
            // Deleting a fifth of the tenant compacts it (slots renumbered, a new graph):
            // that is a new base, and the old one's deltas go with it.
            let idx = open_lean(dir.path(), store);
            for d in &docs[3..8] {
                remove(&idx, store, &t, d);
            }
            idx.persist().unwrap();
            assert_eq!(idx.persisted().bases, 1);
            assert_ne!(current_dir(dir.path(), &t), generation);
            assert!(dump_sizes(dir.path(), &t).1.is_empty());
            let before = answers(&idx, &t, &qs);
            drop(idx);
            let idx = open_lean(dir.path(), store);
            assert!(idx.tenants_needing_rebuild().is_empty());
            assert_eq!(answers(&idx, &t, &qs), before);
        }
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.path().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    #[test]
    fn a_damaged_missing_or_misplaced_delta_means_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Halves::default());
        let (t, other) = (TenantId::new(), TenantId::new());
        let vs = vecs(80, 600);
        let later = items(&DocumentId::new(), &vecs(81, 10));
        {
            let idx = open_lean(dir.path(), Some(&store));
            add(&idx, Some(&store), &t, &items(&DocumentId::new(), &vs));
            add(&idx, Some(&store), &other, &items(&DocumentId::new(), &vs));
            idx.persist().unwrap();
            add(
                &idx,
                Some(&store),
                &t,
                &items(&DocumentId::new(), &vecs(82, 10)),
            );
            idx.persist().unwrap();
            add(&idx, Some(&store), &t, &later);
            idx.persist().unwrap();
            assert_eq!(idx.persisted().deltas, 2);
        }
        let name = |k: u32| format!("delta-{k:08}.bin");
        let gen_of = |root: &std::path::Path| current_dir(root, &t);
        type Damage<'a> = (&'a str, &'a dyn Fn(&std::path::Path));
        let damages: [Damage; 6] = [
            ("a flipped byte", &|g| {
                let p = g.join(name(1));
                let mut b = std::fs::read(&p).unwrap();
                let mid = b.len() / 2;
                b[mid] ^= 0x5a;
                std::fs::write(&p, b).unwrap();
            }),
            ("a torn end", &|g| {
                let p = g.join(name(2));
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() - 9]).unwrap();
            }),
            ("a gap", &|g| std::fs::remove_file(g.join(name(1))).unwrap()),
            ("swapped", &|g| {
                std::fs::rename(g.join(name(1)), g.join("x")).unwrap();
                std::fs::rename(g.join(name(2)), g.join(name(1))).unwrap();
                std::fs::rename(g.join("x"), g.join(name(2))).unwrap();
            }),
            ("another base's delta", &|g| {
                // The same delta under a base it was not made after: the second delta
                // copied over the first.
                std::fs::copy(g.join(name(2)), g.join(name(1))).unwrap();
            }),
            ("an empty file", &|g| {
                std::fs::write(g.join(name(2)), b"").unwrap()
            }),
        ];
        for (what, damage) in damages {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(dir.path(), copy.path());
            damage(&gen_of(copy.path()));
            let idx = open_lean(copy.path(), Some(&store));
            assert_eq!(idx.tenants_needing_rebuild(), vec![t.clone()], "{what}");
            assert!(
                idx.search(&t, &vs[0], None, 5).unwrap().is_empty(),
                "{what}"
            );
            assert_eq!(idx.search(&other, &vs[0], None, 5).unwrap().len(), 5);
        }
        // A delta whose write never finished (still under its temporary name) is no delta:
        // the files before it load.
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        std::fs::write(gen_of(copy.path()).join("delta-00000003.tmp"), b"half").unwrap();
        let idx = open_lean(copy.path(), Some(&store));
        assert!(idx.tenants_needing_rebuild().is_empty());
        let hit = &idx.search(&t, &later[4].2, None, 1).unwrap()[0];
        assert_eq!(hit.chunk, later[4].0);
        drop(idx);
        // The store's vector of a chunk a delta added is not the one the graph was built
        // for.
        store.put(&[(
            later[4].0.clone(),
            later[4].1.clone(),
            vecs(83, 1).remove(0),
        )]);
        let idx = open_lean(dir.path(), Some(&store));
        assert_eq!(idx.tenants_needing_rebuild(), vec![t.clone()]);
    }

    #[test]
    fn deltas_that_would_pass_the_rule_s_share_of_the_base_fold_into_a_new_one() {
        let ratio = FoldRule::default().max_delta_ratio;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Halves::default());
        let t = TenantId::new();
        let qs = vecs(91, 20);
        let idx = open_lean(dir.path(), Some(&store));
        add(
            &idx,
            Some(&store),
            &t,
            &items(&DocumentId::new(), &vecs(90, 1000)),
        );
        idx.persist().unwrap();
        let first = current_dir(dir.path(), &t);
        let (base, _) = dump_sizes(dir.path(), &t);
        // Each round adds 20 chunks to a base of 1,000 (a delta ~2% of it): enough rounds
        // for the deltas to pass the rule's share twice over.
        let rounds = (2.0 * ratio * 1000.0 / 20.0).ceil() as u64 + 10;
        let mut last_deltas = Vec::new();
        for i in 0..rounds {
            add(
                &idx,
                Some(&store),
                &t,
                &items(&DocumentId::new(), &vecs(100 + i, 20)),
            );
            idx.persist().unwrap();
            if current_dir(dir.path(), &t) != first {
                break;
            }
            last_deltas = dump_sizes(dir.path(), &t).1;
        }
        assert_ne!(
            current_dir(dir.path(), &t),
            first,
            "no new base after {rounds} deltas"
        );
        // Up to the fold the deltas stayed within the share; the next would not have, so
        // the fold came at the share, not earlier (the deltas are of similar sizes).
        let total: u64 = last_deltas.iter().sum();
        let share = base as f64 * ratio;
        let last = *last_deltas.last().unwrap();
        assert!(
            last_deltas.len() >= 2 && total as f64 <= share && (total + 3 * last) as f64 > share,
            "{last_deltas:?} {base}"
        );
        assert!(dump_sizes(dir.path(), &t).1.is_empty());
        let totals = idx.persisted();
        assert_eq!((totals.bases, totals.deltas), (2, last_deltas.len() as u64));
        let before = answers(&idx, &t, &qs);
        drop(idx);
        let idx = open_lean(dir.path(), Some(&store));
        assert!(idx.tenants_needing_rebuild().is_empty());
        assert_eq!(answers(&idx, &t, &qs), before);
    }

    #[test]
    fn a_base_takes_at_most_the_rule_s_number_of_deltas() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Halves::default());
        let t = TenantId::new();
        let qs = vecs(151, 20);
        let rule = FoldRule {
            max_deltas: 3,
            ..FoldRule::default()
        };
        let idx = open_lean(dir.path(), Some(&store)).with_fold_rule(rule);
        add(
            &idx,
            Some(&store),
            &t,
            &items(&DocumentId::new(), &vecs(150, 1000)),
        );
        idx.persist().unwrap();
        // One chunk a persist: each delta is tiny next to the base, so only the count folds.
        let mut kinds = Vec::new();
        for i in 0..7 {
            add(
                &idx,
                Some(&store),
                &t,
                &items(&DocumentId::new(), &vecs(160 + i, 1)),
            );
            let was = idx.persisted();
            idx.persist().unwrap();
            kinds.push(if idx.persisted().bases > was.bases {
                "base"
            } else {
                "delta"
            });
        }
        assert_eq!(
            kinds,
            ["delta", "delta", "delta", "base", "delta", "delta", "delta"]
        );
        assert_eq!(dump_sizes(dir.path(), &t).1.len(), 3);
        let before = answers(&idx, &t, &qs);
        drop(idx);
        let idx = open_lean(dir.path(), Some(&store)).with_fold_rule(rule);
        assert!(idx.tenants_needing_rebuild().is_empty());
        assert_eq!(answers(&idx, &t, &qs), before);
    }

    #[test]
    fn a_tenant_filled_over_many_persists_reopens_the_same_and_deltas_grow_with_the_chunks() {
        // As a tenant fills between the minute's persists: every insert rewrites lists all
        // over the graph, yet a delta costs about what the chunks it adds cost in a base,
        // and the files reopen as the index that wrote them, across restarts mid-fill.
        for sourced in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Halves::default());
            let store = sourced.then_some(&store);
            let t = TenantId::new();
            let qs = vecs(131, 30);
            let mut idx = open_lean(dir.path(), store);
            add(
                &idx,
                store,
                &t,
                &items(&DocumentId::new(), &vecs(130, 1000)),
            );
            idx.persist().unwrap();
            let (mut base, mut base_chunks) = (dump_sizes(dir.path(), &t).0, 1000u64);
            let mut deltas = 0;
            for round in 0..40u64 {
                if round == 20 {
                    let before = answers(&idx, &t, &qs);
                    drop(idx);
                    idx = open_lean(dir.path(), store);
                    assert!(idx.tenants_needing_rebuild().is_empty());
                    assert_eq!(answers(&idx, &t, &qs), before, "sourced {sourced}");
                }
                let batch = items(&DocumentId::new(), &vecs(140 + round, 50));
                add(&idx, store, &t, &batch);
                let was = idx.persisted();
                idx.persist().unwrap();
                let now = idx.persisted();
                if now.deltas > was.deltas {
                    // Per chunk added, at most twice what a base costs per chunk (slot,
                    // lists, vector when held): the new node's lists and the few bytes
                    // each list it joined grew by. (Whole rewritten lists were ~6 times a
                    // base's cost per chunk.)
                    let bytes = now.bytes - was.bytes;
                    assert!(
                        bytes * base_chunks <= 2 * base * 50,
                        "sourced {sourced}, round {round}: {bytes} bytes for 50 chunks, \
                         base {base} bytes for {base_chunks}"
                    );
                    deltas += 1;
                } else {
                    (base, base_chunks) = (dump_sizes(dir.path(), &t).0, 1050 + 50 * round);
                }
            }
            assert!(
                deltas >= 30,
                "sourced {sourced}: {deltas} deltas of 40 persists"
            );
            let before = answers(&idx, &t, &qs);
            let own: Vec<Vec<Hit>> = (0..40)
                .map(|round| idx.search(&t, &vecs(140 + round, 1)[0], None, 5).unwrap())
                .collect();
            drop(idx);
            let idx = open_lean(dir.path(), store);
            assert!(idx.tenants_needing_rebuild().is_empty());
            assert_eq!(answers(&idx, &t, &qs), before, "sourced {sourced}");
            for (round, hits) in own.iter().enumerate() {
                let again = idx.search(&t, &vecs(140 + round as u64, 1)[0], None, 5);
                assert_eq!(&again.unwrap(), hits);
            }
        }
    }

    #[test]
    fn a_version_4_dump_leaving_its_vectors_to_the_store_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let t = TenantId::new();
        let (keep, gone) = (
            items(&DocumentId::new(), &vecs(120, 200)),
            items(&DocumentId::new(), &vecs(121, 10)),
        );
        let qs = vecs(122, 10);
        let before;
        {
            let idx = open_lean(dir.path(), None);
            idx.insert(&t, &keep).unwrap();
            idx.insert(&t, &gone).unwrap();
            idx.delete_document(&t, &gone[0].1).unwrap();
            idx.persist().unwrap();
            before = answers(&idx, &t, &qs);
        }
        let tdir = dir.path().join(format!("t-{}", hex::encode(t.as_str())));
        crate::index::vector::write_old_generation(&tdir, DIMS, "m", 4, true);
        assert_eq!(
            current_files(dir.path(), &t),
            ["dead.f16", "graph.bin", "meta.bin"]
        );
        // Its check holds: a vector the graph was not built for means a rebuild.
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let changed = Arc::new(Halves::default());
        changed.put(&keep);
        changed.put(&[(keep[3].0.clone(), keep[3].1.clone(), vecs(123, 1).remove(0))]);
        let idx = open_lean(copy.path(), Some(&changed));
        assert_eq!(idx.tenants_needing_rebuild(), vec![t.clone()]);
        drop(idx);
        let store = Arc::new(Halves::default());
        store.put(&keep);
        let idx = open_lean(dir.path(), Some(&store));
        assert!(idx.tenants_needing_rebuild().is_empty());
        assert_eq!(answers(&idx, &t, &qs), before);
        // Rewritten once in this format, which loads too.
        idx.persist().unwrap();
        assert_eq!(idx.persisted().bases, 1);
        drop(idx);
        let idx = open_lean(dir.path(), Some(&store));
        assert!(idx.tenants_needing_rebuild().is_empty());
        assert_eq!(answers(&idx, &t, &qs), before);
    }
}

mod fusion {
    use super::*;
    use crate::index::fusion::FusionMethod;

    fn hits(scores: &[f32]) -> Vec<Hit> {
        scores
            .iter()
            .map(|&score| Hit {
                chunk: ChunkId::new(),
                document: DocumentId::new(),
                score,
            })
            .collect()
    }

    fn methods() -> Vec<FusionParams> {
        let mut out = vec![FusionParams::default()];
        for method in [
            FusionMethod::Rrf,
            FusionMethod::MinMax,
            FusionMethod::ZScore,
        ] {
            out.push(FusionParams::fixed(method, 0.5));
        }
        out
    }

    #[test]
    fn found_by_both_beats_found_by_one_at_the_same_ranks() {
        for p in methods() {
            let kw = hits(&[9.0, 7.0, 5.0, 3.0]);
            let mut vs = hits(&[0.8, 0.7, 0.6, 0.5]);
            // The second of each list is the same chunk.
            vs[1] = Hit {
                score: 0.7,
                ..kw[1].clone()
            };
            let out = fuse(&kw, &vs, 10, &p);
            let pos = |c: &ChunkId| out.iter().position(|h| &h.chunk == c).unwrap();
            assert!(pos(&kw[1].chunk) < pos(&kw[2].chunk), "{p:?}");
            assert!(pos(&kw[1].chunk) < pos(&vs[2].chunk), "{p:?}");
            assert_eq!(out.len(), 7, "union of both lists, once each");
        }
    }

    #[test]
    fn empty_lists() {
        for p in methods() {
            assert!(fuse(&[], &[], 10, &p).is_empty());
            let kw = hits(&[3.0, 2.0, 1.0]);
            let out = fuse(&kw, &[], 10, &p);
            let order: Vec<_> = out.iter().map(|h| h.chunk.clone()).collect();
            let want: Vec<_> = kw.iter().map(|h| h.chunk.clone()).collect();
            assert_eq!(order, want, "{p:?}");
            let vs = hits(&[0.9, 0.5]);
            let out = fuse(&[], &vs, 1, &p);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].chunk, vs[0].chunk);
            assert!(fuse(&kw, &vs, 0, &p).is_empty());
        }
    }

    #[test]
    fn output_is_sorted_truncated_and_deterministic() {
        for p in methods() {
            let kw = hits(&[5.0, 5.0, 4.0, 1.0, 0.5]);
            let vs = hits(&[0.5, 0.5, 0.49, 0.2]);
            let a = fuse(&kw, &vs, 6, &p);
            let b = fuse(&kw, &vs, 6, &p);
            assert_eq!(a, b);
            assert_eq!(a.len(), 6);
            assert!(a.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }

    #[test]
    fn single_element_and_constant_lists_do_not_produce_nan() {
        for p in methods() {
            let out = fuse(&hits(&[2.0]), &hits(&[0.3, 0.3]), 10, &p);
            assert_eq!(out.len(), 3);
            assert!(out.iter().all(|h| h.score.is_finite()), "{p:?}");
        }
    }

    /// A list of `n` cosines falling evenly from `top` by `step`.
    fn cosines(top: f32, step: f32, n: usize) -> Vec<Hit> {
        hits(&(0..n).map(|i| top - step * i as f32).collect::<Vec<_>>())
    }

    #[test]
    fn an_unconfident_vector_list_defers_to_keywords() {
        let p = FusionParams::default();
        let kw = hits(&[12.0, 6.0, 5.0]);
        // Top cosine under the floor: the embedding model did not recognise the query.
        let vs = cosines(0.34, 0.002, 50);
        let out = fuse(&kw, &vs, 6, &p);
        let order: Vec<_> = out.iter().take(3).map(|h| h.chunk.clone()).collect();
        let want: Vec<_> = kw.iter().map(|h| h.chunk.clone()).collect();
        assert_eq!(order, want);
        // A confident vector list moves its top hit first.
        let vs = cosines(0.9, 0.01, 50);
        let out = fuse(&kw, &vs, 6, &p);
        assert_eq!(out[0].chunk, vs[0].chunk);
    }

    #[test]
    fn a_long_question_has_a_lower_confidence_floor() {
        let p = FusionParams::default();
        let max = p
            .confidence_terms
            .expect("the default floor is for short queries");
        let floor = p.confidence_floor.expect("a floor");
        let long_floor = p.long_query_floor.expect("a floor for long queries");
        assert!(long_floor < floor);
        // Just under the short floor: the model did not recognise a short query (a name,
        // a code), so the vector list defers to keywords ...
        let kw = hits(&[6.0, 5.9, 5.8, 5.7, 5.6, 5.5]);
        let vs = cosines(floor - 0.001, 0.002, 50);
        let short = fuse_lookup(&kw, &vs, 6, &p, 0.0, max);
        assert_eq!(short[0].chunk, kw[0].chunk);
        // ... while a longer question is still ranked by meaning as well.
        let long = fuse_lookup(&kw, &vs, 6, &p, 0.0, max + 1);
        assert_eq!(long[0].chunk, vs[0].chunk);
        // Under both floors, keywords lead either way.
        let vs = cosines(long_floor - 0.01, 0.002, 50);
        let long = fuse_lookup(&kw, &vs, 6, &p, 0.0, max + 1);
        assert_eq!(long[0].chunk, kw[0].chunk);
    }

    #[test]
    fn a_query_handed_to_keywords_keeps_their_order_on_exact_ties() {
        let p = FusionParams::default();
        // Two near-duplicate passages tie exactly in BM25; the vector list has them the
        // other way round.
        let kw = hits(&[9.0, 9.0, 4.0]);
        let mut vs = cosines(0.9, 0.01, 50);
        vs[0] = Hit {
            score: 0.9,
            ..kw[1].clone()
        };
        vs[1] = Hit {
            score: 0.89,
            ..kw[0].clone()
        };
        let out = fuse_lookup(&kw, &vs, 3, &p, 1.0, 2);
        let order: Vec<_> = out.iter().map(|h| h.chunk.clone()).collect();
        let want: Vec<_> = kw.iter().map(|h| h.chunk.clone()).collect();
        assert_eq!(order, want, "a lookup is ranked as keyword search ranks it");
        // A question (no lookup) lets the vector list order them.
        let out = fuse_lookup(&kw, &vs, 3, &p, 0.0, 8);
        assert_eq!(out[0].chunk, kw[1].chunk);
    }

    #[test]
    fn a_lone_keyword_match_still_counts() {
        // One chunk matched the query terms at all; it is also the vector list's second.
        let kw = hits(&[7.5]);
        let mut vs = hits(&[0.80, 0.78, 0.70, 0.69, 0.65, 0.6, 0.55, 0.5]);
        vs[1] = Hit {
            score: 0.78,
            ..kw[0].clone()
        };
        let out = fuse(&kw, &vs, 3, &FusionParams::default());
        assert_eq!(out[0].chunk, kw[0].chunk);
    }

    #[test]
    fn a_short_fully_matched_query_is_led_by_keywords() {
        let p = FusionParams::default();
        assert_eq!(lookup_share(true, 2, &p), 1.0);
        assert_eq!(lookup_share(true, 3, &p), 1.0);
        assert!((lookup_share(true, 4, &p) - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(lookup_share(true, 6, &p), 0.0);
        assert_eq!(lookup_share(false, 2, &p), 0.0, "a term the best hit lacks");
        assert_eq!(lookup_share(true, 0, &p), 0.0);
        let off = FusionParams::fixed(FusionMethod::ZScore, 0.75);
        assert_eq!(lookup_share(true, 2, &off), 0.0);

        let kw = hits(&[12.0, 6.0, 5.0]);
        // A confident vector list that disagrees wins a question ...
        let vs = hits(&[0.9, 0.5, 0.45]);
        assert_eq!(fuse_lookup(&kw, &vs, 6, &p, 0.0, 2)[0].chunk, vs[0].chunk);
        // ... but not a lookup: the keyword order stands.
        let out = fuse_lookup(&kw, &vs, 6, &p, 1.0, 2);
        let order: Vec<_> = out.iter().take(3).map(|h| h.chunk.clone()).collect();
        let want: Vec<_> = kw.iter().map(|h| h.chunk.clone()).collect();
        assert_eq!(order, want);
    }

    #[test]
    fn coverage_uses_the_index_analyser() {
        let dir = tempfile::tempdir().unwrap();
        let idx = TextIndex::open(dir.path()).unwrap();
        let text = "Resetting the XR-200 router: hold the reset button for ten seconds.";
        // Stemmed and case-folded: "routers" and "Reset" match "router" and "Resetting".
        assert_eq!(idx.coverage("XR-200 routers Reset", text), (true, 4));
        assert_eq!(idx.coverage("XR-300 router", text), (false, 3));
        assert_eq!(idx.coverage("", text), (false, 0));
    }
}
