use super::*;
use crate::types::*;

fn tenant(name: &str) -> Tenant {
    Tenant {
        id: TenantId::new(),
        name: name.into(),
        slug: name.into(),
        status: TenantStatus::Active,
        settings: serde_json::Value::Null,
        created_at: now(),
        updated_at: now(),
    }
}

fn key(t: &TenantId, name: &str) -> ApiKey {
    ApiKey {
        id: ApiKeyId::new(),
        tenant_id: t.clone(),
        name: name.into(),
        prefix: "ak_x".into(),
        key_hash: format!("hash-{name}"),
        role: Role::TenantUser,
        created_by: None,
        created_at: now(),
        last_used_at: None,
        expires_at: None,
    }
}

#[test]
fn pages_in_creation_order_and_stay_inside_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let (a, b) = (tenant("a"), tenant("b"));
    store
        .write(|tx| {
            tx.put(&a)?;
            tx.put(&b)?;
            for i in 0..5 {
                tx.put(&key(&a.id, &format!("a{i}")))?;
                tx.put(&key(&b.id, &format!("b{i}")))?;
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    let (p1, p2) = store
        .read(|tx| {
            let p1 = tx.list::<ApiKey>(&a.id, None, None, 3, false)?;
            let p2 = tx.list::<ApiKey>(&a.id, None, p1.next.as_deref(), 3, false)?;
            Ok((p1, p2))
        })
        .unwrap();
    let names: Vec<_> = p1
        .items
        .iter()
        .chain(&p2.items)
        .map(|k| k.name.clone())
        .collect();
    assert_eq!(names, ["a0", "a1", "a2", "a3", "a4"]);
    assert!(p2.next.is_none());
    let newest = store
        .read(|tx| tx.list::<ApiKey>(&b.id, None, None, 2, true))
        .unwrap();
    let names: Vec<_> = newest.items.iter().map(|k| k.name.clone()).collect();
    assert_eq!(names, ["b4", "b3"]);
}

#[test]
fn deleting_a_tenant_leaves_nothing_and_spares_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let (a, b) = (tenant("a"), tenant("b"));
    store
        .write(|tx| {
            for t in [&a, &b] {
                tx.put(t)?;
                let k = key(&t.id, "k");
                tx.index_insert_new(
                    Index::ApiKeyHash,
                    &format!("h{}", t.id),
                    &make_ref(&t.id, k.id.as_str()),
                )?;
                tx.put(&k)?;
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    assert!(store.read(|tx| tx.tenant_footprint(&a.id)).unwrap() >= 3);
    store.write(|tx| tx.delete_tenant(&a.id)).unwrap();
    assert_eq!(store.read(|tx| tx.tenant_footprint(&a.id)).unwrap(), 0);
    // The tenant, its key, the key's index row and the tenant's count of keys.
    assert_eq!(store.read(|tx| tx.tenant_footprint(&b.id)).unwrap(), 4);
}

#[test]
fn counted_tables_keep_their_per_tenant_counts_in_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let (a, b) = (tenant("a"), tenant("b"));
    let keys: Vec<ApiKey> = (0..4).map(|i| key(&a.id, &format!("k{i}"))).collect();
    store
        .write(|tx| {
            for k in &keys {
                tx.put(k)?;
                // Replacing a row is not a new row.
                tx.put(k)?;
            }
            tx.put(&key(&b.id, "theirs"))?;
            Ok::<_, Error>(())
        })
        .unwrap();
    let count = |t: &TenantId| store.read(|tx| tx.count::<ApiKey>(t)).unwrap();
    assert_eq!((count(&a.id), count(&b.id)), (4, 1));
    store
        .write(|tx| {
            assert!(tx.delete::<ApiKey>(&a.id, keys[0].id.as_str())?);
            assert!(!tx.delete::<ApiKey>(&a.id, keys[0].id.as_str())?);
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(count(&a.id), 3);
    // A failed transaction changes no count.
    let _ = store.write(|tx| {
        tx.put(&key(&a.id, "never"))?;
        Err::<(), Error>(Error::Locked {
            path: Default::default(),
        })
    });
    assert_eq!(count(&a.id), 3);
    store.write(|tx| tx.delete_tenant(&a.id)).unwrap();
    assert_eq!((count(&a.id), count(&b.id)), (0, 1));
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let tx = store.db.get().unwrap().begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("schema_version", SCHEMA_VERSION + 1)
            .unwrap();
        tx.commit().unwrap();
    }
    let err = Store::open(dir.path(), 1 << 20).unwrap_err();
    assert!(matches!(err, Error::TooNew { .. }), "{err}");
    assert!(err.to_string().contains("newer aigentable"));
}

#[test]
fn failed_transactions_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let a = tenant("a");
    let r: Result<()> = store.write(|tx| {
        tx.put(&a)?;
        Err(Error::Locked { path: "x".into() })
    });
    assert!(r.is_err());
    assert!(
        store
            .read(|tx| tx.get::<Tenant>(&a.id, ""))
            .unwrap()
            .is_none()
    );
}

fn chunk(t: &TenantId, doc: &DocumentId, i: u32, text: String) -> Chunk {
    Chunk {
        id: ChunkId::new(),
        tenant_id: t.clone(),
        document_id: doc.clone(),
        ordinal: i,
        text,
        page: Some(i),
        headings: vec![format!("Heading {i}")],
        token_count: 7,
        embedding_model: Some("m".into()),
    }
}

/// `v` rounded to the nearest halves, as the store keeps vectors.
fn halves(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// Writes chunk records as an older schema did (`vector` inside the record, in the form
/// `vector_json` gives) and sets the schema version; returns the store file's size.
fn write_old_chunks(
    dir: &Path,
    version: u64,
    chunks: &[(Chunk, Option<Vec<f32>>)],
    vector_json: impl Fn(usize, &[f32]) -> serde_json::Value,
) -> u64 {
    {
        let store = Store::open(dir, 1 << 20).unwrap();
        // 500 rows per transaction, as ingestion commits: the file grows as it would.
        for (n, part) in chunks.chunks(500).enumerate() {
            let tx = store.db.get().unwrap().begin_write().unwrap();
            {
                let mut table = tx.open_table(Chunk::TABLE).unwrap();
                for (i, (c, v)) in part.iter().enumerate() {
                    let mut json = serde_json::to_value(c).unwrap();
                    json["vector"] = match v {
                        Some(v) => vector_json(n * 500 + i, v),
                        None => serde_json::Value::Null,
                    };
                    table
                        .insert(
                            (c.tenant_id.as_str(), c.key_id().as_str()),
                            serde_json::to_vec(&json).unwrap().as_slice(),
                        )
                        .unwrap();
                }
            }
            tx.open_table(META)
                .unwrap()
                .insert("schema_version", version)
                .unwrap();
            tx.commit().unwrap();
        }
    }
    std::fs::metadata(dir.join("aigentable.redb"))
        .unwrap()
        .len()
}

/// Every chunk record, as raw bytes.
fn raw_chunks(store: &Store) -> Vec<Vec<u8>> {
    let tx = redb::ReadableDatabase::begin_read(&*store.db.get().unwrap()).unwrap();
    let table = tx.open_table(Chunk::TABLE).unwrap();
    table
        .iter()
        .unwrap()
        .map(|e| e.unwrap().1.value().to_vec())
        .collect()
}

/// After a migration: no record holds a vector any more, each chunk's vector is in the
/// vectors table as its nearest halves, and the rest of each chunk is kept.
fn assert_moved(store: &Store, chunks: &[(Chunk, Option<Vec<f32>>)]) {
    assert_eq!(
        store.schema_version().unwrap(),
        crate::store::SCHEMA_VERSION
    );
    let raw = raw_chunks(store);
    assert_eq!(raw.len(), chunks.len());
    // Step 15 leaves every record compact: ids in the key, no room for a vector.
    assert!(
        raw.iter().all(|b| codec::is_compact(b)),
        "a record is still JSON"
    );
    for (c, v) in chunks {
        let t = &c.tenant_id;
        let back: Chunk = store.read(|tx| tx.get(t, &c.key_id())).unwrap().unwrap();
        assert_eq!(back.text, c.text);
        assert_eq!(back.headings, c.headings);
        assert_eq!(back.page, c.page);
        assert_eq!(back.embedding_model, c.embedding_model);
        assert_eq!(back.document_id, c.document_id);
        let stored = store.read(|tx| tx.vector(t, &c.key_id())).unwrap();
        assert_eq!(stored, v.as_ref().map(|v| halves(v)));
    }
}

#[test]
fn schema_3_vectors_move_to_their_own_table() {
    let dir = tempfile::tempdir().unwrap();
    let t = TenantId::new();
    let doc = DocumentId::new();
    // 2,500 chunks: more than two of the migration's batches.
    let chunks: Vec<_> = (0..2_500)
        .map(|i| {
            let v = (i % 3 != 0).then(|| vec![i as f32 * 0.25, -1.0, 0.1]);
            (chunk(&t, &doc, i, format!("chunk {i}")), v)
        })
        .collect();
    // As schema 3 wrote them: the vector as a JSON number list.
    write_old_chunks(dir.path(), 3, &chunks, |_, v| serde_json::json!(v));
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    assert_moved(&store, &chunks);
}

#[test]
fn schema_12_and_13_vectors_move_to_their_own_table_and_the_file_shrinks() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let dir = tempfile::tempdir().unwrap();
    let (t, u) = (TenantId::new(), TenantId::new());
    let doc = DocumentId::new();
    let vector = |i: u32| -> Vec<f32> {
        (0..384)
            .map(|d| ((i * 384 + d) as f32 * 0.37).sin() / 20.0)
            .collect()
    };
    // 3,000 chunks of two tenants: more than one of the migration's batches; every third
    // has no vector; the text mentions "vector": too.
    let chunks: Vec<_> = (0..3_000)
        .map(|i| {
            let tenant = if i % 2 == 0 { &t } else { &u };
            let c = chunk(tenant, &doc, i, format!("chunk \"vector\":\"{i}\" text"));
            (c, (i % 3 != 0).then(|| vector(i)))
        })
        .collect();
    // Schema 12's base64 of f32s, and (a re-run after a crash in step 13) some in step 13's
    // "h:" form: step 13 then step 14 run.
    let old_form = |i: usize, v: &[f32]| {
        if i < 700 {
            let h: Vec<u8> = v
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
                .collect();
            serde_json::json!(format!("h:{}", STANDARD.encode(h)))
        } else {
            let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            serde_json::json!(STANDARD.encode(b))
        }
    };
    write_old_chunks(dir.path(), 12, &chunks, old_form);
    // The same store migrated without the compaction that follows in `Store::open`.
    let plain = tempfile::tempdir().unwrap();
    write_old_chunks(plain.path(), 12, &chunks, old_form);
    let path = plain.path().join("aigentable.redb");
    assert!(migrate::run(&disk::open_db(&path, 1 << 20).unwrap(), &path).unwrap());
    let uncompacted = std::fs::metadata(&path).unwrap().len();

    let store = Store::open(dir.path(), 1 << 20).unwrap();
    assert_moved(&store, &chunks);
    // Compacted once after the rewrite: redb keeps the pages the rewrite freed otherwise.
    let compacted = std::fs::metadata(dir.path().join("aigentable.redb"))
        .unwrap()
        .len();
    assert!(
        compacted * 4 < uncompacted * 3,
        "{compacted} bytes compacted, {uncompacted} not"
    );
    drop(store);
    // Opening it again migrates nothing and keeps everything.
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    assert_moved(&store, &chunks);
}

/// `batches` commits of `per_batch` chunks of `doc` with `len` bytes of random text each.
/// Random: the store compresses chunk texts, and these must take their room.
fn noisy_chunks(
    store: &Store,
    t: &TenantId,
    doc: &DocumentId,
    batches: u32,
    per_batch: u32,
    len: usize,
) {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut noise = |n: usize| -> String {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + (x % 90) as u8)
            })
            .collect()
    };
    for batch in 0..batches {
        store
            .write(|tx| {
                for i in 0..per_batch {
                    let text = format!("{i:05} {}", noise(len));
                    tx.put(&chunk(t, doc, batch * per_batch + i, text))?;
                }
                Ok::<_, Error>(())
            })
            .unwrap();
    }
}

#[cfg(unix)]
#[test]
fn a_store_that_just_grew_is_not_compacted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aigentable.redb");
    let t = tenant("a");
    {
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        store.write(|tx| tx.put(&t)).unwrap();
        // ~75 MB of small chunks in 300 commits, as ingestion writes them: past 64 MiB redb
        // doubles the file to 128 MiB.
        noisy_chunks(&store, &t.id, &DocumentId::new(), 300, 200, 1_500);
    }
    let meta = std::fs::metadata(&path).unwrap();
    let before = meta.len();
    if before < on_disk(&meta) + (32 << 20) {
        eprintln!(
            "no hole in the file ({before} bytes long, {} on disk): nothing to show",
            on_disk(&meta)
        );
        return;
    }
    // A fifth of the file and over 32 MiB unused, but never written: a compaction would take
    // seconds at every such start and give no room back.
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
    assert!(
        store
            .read(|tx| tx.get::<Tenant>(&t.id, ""))
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_store_mostly_free_pages_is_compacted_at_open() {
    assert!(
        !worth_compacting(100 << 20, 10 << 20),
        "a tenth free: not worth the wait"
    );
    assert!(
        !worth_compacting(60 << 20, 30 << 20),
        "small: not worth the wait"
    );
    assert!(worth_compacting(200 << 20, 60 << 20));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aigentable.redb");
    let t = tenant("a");
    let doc = DocumentId::new();
    {
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        store.write(|tx| tx.put(&t)).unwrap();
        // ~48 MB of chunks in a few commits, then the document's chunks go.
        noisy_chunks(&store, &t.id, &doc, 6, 400, 20_400);
        store
            .write(|tx| tx.delete_under::<Chunk>(&t.id, doc.as_str()))
            .unwrap();
    }
    let before = std::fs::metadata(&path).unwrap().len();
    assert!(before > 40 << 20, "{before}");
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(
        after * 4 < before,
        "{after} bytes after opening, {before} before"
    );
    // Nothing else went, and the store works on.
    assert!(
        store
            .read(|tx| tx.get::<Tenant>(&t.id, ""))
            .unwrap()
            .is_some()
    );
    store
        .write(|tx| tx.put(&chunk(&t.id, &doc, 1, "again".into())))
        .unwrap();
}

#[test]
fn vectors_go_with_their_chunks_and_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let (a, b) = (tenant("a"), tenant("b"));
    let (d1, d2) = (DocumentId::new(), DocumentId::new());
    let c = |t: &Tenant, d: &DocumentId, i: u32| chunk(&t.id, d, i, format!("c{i}"));
    let (a1, a2, a3, b1) = (c(&a, &d1, 1), c(&a, &d2, 2), c(&a, &d2, 3), c(&b, &d1, 4));
    store
        .write(|tx| {
            tx.put(&a)?;
            tx.put(&b)?;
            for (i, ch) in [&a1, &a2, &a3, &b1].into_iter().enumerate() {
                tx.put(ch)?;
                tx.put_vector(ch, &[i as f32, 0.5])?;
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    let vectors = |t: &Tenant| {
        let mut keys = Vec::new();
        store
            .read(|tx| {
                tx.for_each_vector(&t.id, |k, v| {
                    keys.push((k.to_string(), v));
                    Ok(())
                })
            })
            .unwrap();
        keys
    };
    assert_eq!(vectors(&a).len(), 3);
    assert_eq!(
        store.read(|tx| tx.vector(&a.id, &a2.key_id())).unwrap(),
        Some(vec![1.0, 0.5])
    );
    // A document's chunks go with their vectors.
    store
        .write(|tx| tx.delete_under::<Chunk>(&a.id, d2.as_str()))
        .unwrap();
    assert_eq!(vectors(&a), [(a1.key_id(), vec![0.0, 0.5])]);
    // One chunk.
    store
        .write(|tx| tx.delete::<Chunk>(&a.id, &a1.key_id()))
        .unwrap();
    assert!(vectors(&a).is_empty());
    store.write(|tx| tx.put_vector(&a3, &[2.0, 2.0])).unwrap();
    // The tenant, with every vector (one left behind by a chunk deleted elsewhere).
    store.write(|tx| tx.delete_tenant(&a.id)).unwrap();
    assert_eq!(store.read(|tx| tx.tenant_footprint(&a.id)).unwrap(), 0);
    assert!(vectors(&a).is_empty());
    // The other tenant's vector is untouched.
    assert_eq!(vectors(&b), [(b1.key_id(), vec![3.0, 0.5])]);
}

#[test]
fn a_write_that_changes_nothing_is_not_committed_and_waits_for_no_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let a = tenant("a");
    let k = key(&a.id, "k");
    let syncs = |n: u64| {
        assert_eq!(store.flush.syncs(), n, "durable commits");
    };
    store
        .write(|tx| {
            tx.put(&a)?;
            tx.index_insert_new(Index::ApiKeyHash, "h", "v")?;
            Ok::<_, Error>(())
        })
        .unwrap();
    syncs(1);
    // Reads, a delete of nothing, a taken unique key, removing an absent index entry,
    // deleting under an empty parent: nothing written, nothing committed.
    let found = store
        .write(|tx| {
            let found = tx.get::<Tenant>(&a.id, "")?.is_some();
            assert!(!tx.delete::<ApiKey>(&a.id, k.id.as_str())?);
            assert!(!tx.index_insert_new(Index::ApiKeyHash, "h", "other")?);
            tx.index_remove(Index::ApiKeyHash, "absent")?;
            assert_eq!(tx.delete_under::<Message>(&a.id, "nothing")?, 0);
            assert_eq!(tx.delete_tenant(&TenantId::new())?, 0);
            Ok::<_, Error>(found)
        })
        .unwrap();
    assert!(found);
    syncs(1);
    // Each kind of change is committed (one durable commit each here: nothing concurrent).
    type Change<'a> = &'a dyn Fn(&WriteTx) -> Result<()>;
    let changes: [Change; 4] = [
        &|tx| tx.put(&k),
        &|tx| tx.delete::<ApiKey>(&a.id, k.id.as_str()).map(drop),
        &|tx| tx.index_insert_new(Index::ApiKeyHash, "h2", "v").map(drop),
        &|tx| tx.index_remove(Index::ApiKeyHash, "h2"),
    ];
    for (i, change) in changes.iter().enumerate() {
        store.write(|tx| change(tx)).unwrap();
        syncs(2 + i as u64);
    }
    assert_eq!(
        store
            .read(|tx| tx.index_get(Index::ApiKeyHash, "h2"))
            .unwrap(),
        None
    );
}

#[test]
fn a_write_that_changes_nothing_still_waits_for_what_it_read_to_be_durable() {
    // Another writer's commit is made but not durable yet (its writer has not waited): a
    // transaction that reads it and writes nothing (a provider's retry finding its
    // webhook stored) must not answer before that commit is on the disk.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let a = tenant("a");
    {
        let mut tx = store.begin_write().unwrap();
        tx.set_durability(redb::Durability::None).unwrap();
        let tx = WriteTx(tx, Cell::new(false));
        tx.put(&a).unwrap();
        let _ticket = store.flush.committed(store.db.epoch());
        tx.0.commit().unwrap();
    }
    assert_eq!(store.flush.syncs(), 0);
    let found = store
        .write(|tx| Ok::<_, Error>(tx.get::<Tenant>(&a.id, "")?.is_some()))
        .unwrap();
    assert!(found);
    assert_eq!(store.flush.syncs(), 1, "the no-op write made it durable");
    store
        .write(|tx| Ok::<_, Error>(tx.get::<Tenant>(&a.id, "")?.is_some()))
        .unwrap();
    assert_eq!(store.flush.syncs(), 1, "durable already: no wait");
}

#[test]
fn concurrent_writes_are_all_durable() {
    // Group commit: each write returns only once a durable commit covers it, whoever led it.
    let dir = tempfile::tempdir().unwrap();
    let t = tenant("g");
    {
        let store = std::sync::Arc::new(Store::open(dir.path(), 1 << 20).unwrap());
        store
            .write(|tx| {
                tx.put(&t)?;
                Ok::<_, Error>(())
            })
            .unwrap();
        let gate = std::sync::Arc::new(std::sync::Barrier::new(8));
        let hs: Vec<_> = (0..8)
            .map(|w| {
                let (store, gate, t) = (store.clone(), gate.clone(), t.id.clone());
                std::thread::spawn(move || {
                    for i in 0..20 {
                        gate.wait();
                        store
                            .write(|tx| {
                                tx.put(&key(&t, &format!("w{w}-{i}")))?;
                                Ok::<_, Error>(())
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let n = store
        .read(|tx| Ok(tx.scan::<ApiKey>(&t.id, None, |_| true)?.len()))
        .unwrap();
    assert_eq!(n, 160);
}

/// Realistic chunk text: varied prose of about 110 words (what the store mostly holds).
fn prose(i: u32) -> String {
    const WORDS: &[&str] = &[
        "refund",
        "order",
        "delivery",
        "customer",
        "account",
        "invoice",
        "within",
        "days",
        "support",
        "the",
        "a",
        "of",
        "to",
        "and",
        "is",
        "for",
        "your",
        "we",
        "can",
        "when",
        "password",
        "shipping",
        "warehouse",
        "returned",
        "payment",
        "card",
        "transfer",
        "subscription",
        "cancel",
        "renewal",
        "plan",
        "upgrade",
        "device",
        "battery",
        "warranty",
    ];
    let mut x = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut s = String::new();
    for w in 0..110 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
        s.push_str(if w % 14 == 13 { ". " } else { " " });
    }
    format!("{i}: {s}")
}

/// Writes chunks as schema 14 kept them (records as JSON, vectors in their own table) and
/// sets the version to 14.
fn write_v14_chunks(dir: &Path, chunks: &[Chunk], odd: Option<(&Chunk, &str)>) {
    let store = Store::open(dir, 1 << 20).unwrap();
    for part in chunks.chunks(500) {
        let tx = store.db.get().unwrap().begin_write().unwrap();
        {
            let mut table = tx.open_table(Chunk::TABLE).unwrap();
            let mut vectors = tx.open_table(CHUNK_VECTORS).unwrap();
            for c in part {
                let key = (c.tenant_id.as_str(), c.key_id());
                let json = serde_json::to_vec(c).unwrap();
                table
                    .insert((key.0, key.1.as_str()), json.as_slice())
                    .unwrap();
                let v = vector_bytes(&[c.ordinal as f32, 0.5, -0.25]);
                vectors
                    .insert((key.0, key.1.as_str()), v.as_slice())
                    .unwrap();
            }
            if let Some((c, json)) = odd {
                table
                    .insert((c.tenant_id.as_str(), c.key_id().as_str()), json.as_bytes())
                    .unwrap();
            }
        }
        tx.open_table(META)
            .unwrap()
            .insert("schema_version", 14)
            .unwrap();
        tx.commit().unwrap();
    }
}

#[test]
fn schema_14_chunks_become_compact_read_the_same_and_export_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let (t, u) = (TenantId::new(), TenantId::new());
    let docs = [DocumentId::new(), DocumentId::new()];
    // 2,500 chunks of two tenants (more than two of the step's batches), every field in use:
    // no page, several headings, no model, an empty text.
    let chunks: Vec<Chunk> = (0..2_500u32)
        .map(|i| {
            let mut c = chunk(
                if i % 2 == 0 { &t } else { &u },
                &docs[(i % 3 % 2) as usize],
                i,
                if i == 7 { String::new() } else { prose(i) },
            );
            if i % 5 == 0 {
                c.page = None;
                c.embedding_model = None;
                c.headings = vec!["Billing".into(), "Refunds — über".into()];
            }
            c
        })
        .collect();
    // A record with a field schema 14 never wrote: left as JSON, still readable.
    let mut odd = chunk(&t, &docs[0], 9_999, "odd".into());
    odd.embedding_model = Some("other".into());
    let mut odd_json = serde_json::to_value(&odd).unwrap();
    odd_json["futureField"] = serde_json::json!(1);
    let odd_json = odd_json.to_string();
    write_v14_chunks(dir.path(), &chunks, Some((&odd, &odd_json)));
    let json_store = std::fs::metadata(dir.path().join("aigentable.redb"))
        .unwrap()
        .len();

    // The same store, half of it compact already: a re-run after a crash in the step.
    let rerun = tempfile::tempdir().unwrap();
    write_v14_chunks(rerun.path(), &chunks, None);
    {
        let path = rerun.path().join("aigentable.redb");
        let db = disk::open_db(&path, 1 << 20).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut table = tx.open_table(Chunk::TABLE).unwrap();
            for c in chunks.iter().step_by(2) {
                let b = c.to_stored().unwrap();
                table
                    .insert((c.tenant_id.as_str(), c.key_id().as_str()), b.as_slice())
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    for d in [dir.path(), rerun.path()] {
        let store = Store::open(d, 1 << 20).unwrap();
        assert_eq!(store.schema_version().unwrap(), 15);
        for c in &chunks {
            let back: Chunk = store
                .read(|tx| tx.get(&c.tenant_id, &c.key_id()))
                .unwrap()
                .unwrap();
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(c).unwrap()
            );
            // Vectors are untouched.
            let v = store
                .read(|tx| tx.vector(&c.tenant_id, &c.key_id()))
                .unwrap();
            assert_eq!(v, Some(halves(&[c.ordinal as f32, 0.5, -0.25])));
        }
        // Listing a document's chunks decodes each from its key.
        let listed: Vec<Chunk> = store
            .read(|tx| tx.scan(&t, Some(docs[0].as_str()), |_: &Chunk| true))
            .unwrap();
        let expected = chunks
            .iter()
            .filter(|c| c.tenant_id == t && c.document_id == docs[0])
            .count()
            + usize::from(d == dir.path());
        assert_eq!(listed.len(), expected);
        let raw = raw_chunks(&store);
        let json_rows = raw.iter().filter(|b| !codec::is_compact(b)).count();
        assert_eq!(
            json_rows,
            usize::from(d == dir.path()),
            "only the odd one stays JSON"
        );
    }
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let odd_back: Chunk = store.read(|tx| tx.get(&t, &odd.key_id())).unwrap().unwrap();
    assert_eq!(odd_back.embedding_model.as_deref(), Some("other"));

    // Smaller on disk: the ids and field names are gone and the text is compressed.
    let compact_store = std::fs::metadata(dir.path().join("aigentable.redb"))
        .unwrap()
        .len();
    assert!(
        compact_store * 4 < json_store * 3,
        "{compact_store} bytes compact, {json_store} as JSON"
    );

    // Backups and exports see the JSON they always saw, and writing those rows into another
    // store (a restore, an import) stores them compact again.
    let snap = store.snapshot().unwrap();
    let mut rows = Vec::new();
    snap.for_each::<Error>(Chunk::TABLE.name(), Kind::Record, Some(&u), |r| {
        rows.push(r);
        Ok(())
    })
    .unwrap();
    assert_eq!(
        rows.len(),
        chunks.iter().filter(|c| c.tenant_id == u).count()
    );
    for r in &rows {
        let Row::Record { id, value, .. } = r else {
            panic!("not a record row")
        };
        let c = chunks.iter().find(|c| &c.key_id() == id).unwrap();
        assert_eq!(value, &serde_json::to_vec(c).unwrap());
    }
    let restored = tempfile::tempdir().unwrap();
    let w = RawWriter::create(restored.path()).unwrap();
    w.write(Chunk::TABLE.name(), Kind::Record, &rows).unwrap();
    drop(w);
    let path = restored.path().join("aigentable.redb");
    let db = disk::open_db(&path, 1 << 20).unwrap();
    let tx = redb::ReadableDatabase::begin_read(&db).unwrap();
    let table = tx.open_table(Chunk::TABLE).unwrap();
    for r in &rows {
        let Row::Record { tenant, id, .. } = r else {
            unreachable!()
        };
        let b = table.get((tenant.as_str(), id.as_str())).unwrap().unwrap();
        assert!(codec::is_compact(b.value()));
    }
}

/// The share of the chunks table's pages that holds nothing.
fn chunks_unused_share(store: &Store) -> f64 {
    let t = store
        .table_sizes()
        .unwrap()
        .into_iter()
        .find(|t| t.name == Chunk::TABLE.name())
        .unwrap();
    t.fragmented_bytes as f64 / (t.pages * 4096) as f64
}

/// `n` chunks of one document id, alternating between two tenants (as two tenants
/// ingesting at once write them); with the first tenant and the document.
fn two_tenants_chunks(n: u32) -> ((TenantId, DocumentId), Vec<Chunk>) {
    let (t, u) = (TenantId::new(), TenantId::new());
    let doc = DocumentId::new();
    let chunks = (0..n)
        .map(|i| chunk(if i % 2 == 0 { &t } else { &u }, &doc, i, prose(i)))
        .collect();
    ((t, doc), chunks)
}

#[test]
fn step_15_leaves_the_chunks_table_dense() {
    // Five of the step's batches, two tenants.
    let (_, chunks) = two_tenants_chunks(5_000);
    let dir = tempfile::tempdir().unwrap();
    write_v14_chunks(dir.path(), &chunks, None);
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(raw_chunks(&store).len(), 5_000);
    // Removing each batch and inserting it again in place left 37% of these pages unused
    // (100k chunks: 35 of 91 MiB; the same written compact by one ingestion: 4 of 59).
    let unused = chunks_unused_share(&store);
    assert!(
        unused < 0.15,
        "{:.0}% of the chunks table's pages unused",
        unused * 100.0
    );
}

#[test]
fn step_15_cut_short_anywhere_finishes_at_the_next_open_and_loses_nothing() {
    let ((t, doc), chunks) = two_tenants_chunks(2_500);
    let odd = chunk(&t, &doc, 9_999, "odd".into());
    let mut odd_json = serde_json::to_value(&odd).unwrap();
    odd_json["futureField"] = serde_json::json!(1);
    let odd_json = odd_json.to_string();
    // 2,501 rows: the step copies them in three transactions, then swaps the tables. Cut
    // after none of them (the new table made, empty), the first, all three (the copy done,
    // the old table still in place), and after the swap (the version not yet recorded).
    for cut in [0, 1, 3, usize::MAX] {
        let dir = tempfile::tempdir().unwrap();
        write_v14_chunks(dir.path(), &chunks, Some((&odd, &odd_json)));
        let path = dir.path().join("aigentable.redb");
        {
            let db = disk::open_db(&path, 1 << 20).unwrap();
            migrate::v15_cut_short(&db, cut).unwrap();
            let tx = redb::ReadableDatabase::begin_read(&db).unwrap();
            let version = tx.open_table(META).unwrap().get("schema_version").unwrap();
            assert_eq!(version.unwrap().value(), 14);
            // Until the swap the old table is the data, untouched.
            let json = tx
                .open_table(Chunk::TABLE)
                .unwrap()
                .iter()
                .unwrap()
                .filter(|e| !codec::is_compact(e.as_ref().unwrap().1.value()))
                .count();
            assert_eq!(json, if cut == usize::MAX { 1 } else { 2_501 }, "cut {cut}");
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.schema_version().unwrap(), 15);
        let raw = raw_chunks(&store);
        assert_eq!(raw.len(), 2_501, "cut {cut}");
        assert_eq!(raw.iter().filter(|b| !codec::is_compact(b)).count(), 1);
        for c in chunks.iter().chain([&odd]) {
            let back: Chunk = store
                .read(|tx| tx.get(&c.tenant_id, &c.key_id()))
                .unwrap()
                .unwrap();
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(c).unwrap()
            );
        }
        // The new table went with the swap (a backup refuses tables it does not know).
        let tables = store.snapshot().unwrap().tables().unwrap();
        assert!(tables.iter().any(|(n, _)| n == Chunk::TABLE.name()));
        assert!(chunks_unused_share(&store) < 0.15, "cut {cut}");
    }
}
