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

#[test]
fn schema_3_vectors_are_rewritten_compactly_and_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let t = TenantId::new();
    let doc = DocumentId::new();
    // 2,500 chunks: more than two of the migration's batches.
    let chunks: Vec<Chunk> = (0..2_500)
        .map(|i| Chunk {
            id: ChunkId::new(),
            tenant_id: t.clone(),
            document_id: doc.clone(),
            ordinal: i,
            text: format!("chunk {i}"),
            page: None,
            headings: vec![],
            token_count: 2,
            embedding_model: Some("m".into()),
            vector: (i % 3 != 0).then(|| vec![i as f32 * 0.25, -1.0, 0.1]),
        })
        .collect();
    {
        // Written the way schema 3 wrote them: the vector as a JSON number list.
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let tx = store.db.get().unwrap().begin_write().unwrap();
        {
            let mut table = tx.open_table(Chunk::TABLE).unwrap();
            for c in &chunks {
                let mut v = serde_json::to_value(c).unwrap();
                v["vector"] = serde_json::to_value(&c.vector).unwrap();
                let key = c.key_id();
                table
                    .insert(
                        (t.as_str(), key.as_str()),
                        serde_json::to_vec(&v).unwrap().as_slice(),
                    )
                    .unwrap();
            }
        }
        tx.open_table(META)
            .unwrap()
            .insert("schema_version", 3)
            .unwrap();
        tx.commit().unwrap();
    }
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let raw: Vec<Vec<u8>> = {
        let tx = redb::ReadableDatabase::begin_read(&*store.db.get().unwrap()).unwrap();
        let table = tx.open_table(Chunk::TABLE).unwrap();
        table
            .iter()
            .unwrap()
            .map(|e| e.unwrap().1.value().to_vec())
            .collect()
    };
    assert_eq!(raw.len(), chunks.len());
    assert!(
        raw.iter()
            .all(|b| !b.windows(10).any(|w| w == b"\"vector\":["))
    );
    for c in &chunks {
        let back: Chunk = store.read(|tx| tx.get(&t, &c.key_id())).unwrap().unwrap();
        // Schema 13 keeps the nearest halves.
        assert_eq!(back.vector, c.vector.as_ref().map(|v| halves(v)));
        assert_eq!(back.text, c.text);
    }
}

/// `v` rounded to the nearest halves, as schema 13 stores vectors.
fn halves(v: &[f32]) -> Vec<f32> {
    v.iter()
        .map(|&x| crate::half::from_f16(crate::half::to_f16(x)))
        .collect()
}

#[test]
fn schema_12_vectors_become_halves_once_and_the_rest_of_the_chunk_is_kept() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let t = TenantId::new();
    let doc = DocumentId::new();
    let vector = |i: u32| -> Vec<f32> {
        (0..384)
            .map(|d| ((i * 384 + d) as f32 * 0.37).sin() / 20.0)
            .collect()
    };
    // 1,500 chunks: more than one of the migration's batches; every third has no vector.
    let chunks: Vec<Chunk> = (0..1_500)
        .map(|i| Chunk {
            id: ChunkId::new(),
            tenant_id: t.clone(),
            document_id: doc.clone(),
            ordinal: i,
            text: format!("chunk \"vector\":\"{i}\" text"),
            page: Some(i),
            headings: vec![format!("Heading {i}")],
            token_count: 7,
            embedding_model: Some("m".into()),
            vector: (i % 3 != 0).then(|| vector(i)),
        })
        .collect();
    let schema_12_bytes = |c: &Chunk| {
        // The vector as schema 12 wrote it: base64 of little-endian f32s.
        let mut v = serde_json::to_value(c).unwrap();
        v["vector"] = match &c.vector {
            Some(x) => serde_json::json!(
                base64::engine::general_purpose::STANDARD
                    .encode(x.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>())
            ),
            None => serde_json::Value::Null,
        };
        serde_json::to_vec(&v).unwrap()
    };
    let before_bytes: usize = chunks.iter().map(|c| schema_12_bytes(c).len()).sum();
    {
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let tx = store.db.get().unwrap().begin_write().unwrap();
        {
            let mut table = tx.open_table(Chunk::TABLE).unwrap();
            for (i, c) in chunks.iter().enumerate() {
                // A few already in the new form: a re-run after a crash mid-way.
                let bytes = if i < 10 {
                    serde_json::to_vec(c).unwrap()
                } else {
                    schema_12_bytes(c)
                };
                table
                    .insert((t.as_str(), c.key_id().as_str()), bytes.as_slice())
                    .unwrap();
            }
        }
        tx.open_table(META)
            .unwrap()
            .insert("schema_version", 12)
            .unwrap();
        tx.commit().unwrap();
    }
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        crate::store::SCHEMA_VERSION
    );
    let raw: Vec<Vec<u8>> = {
        let tx = redb::ReadableDatabase::begin_read(&*store.db.get().unwrap()).unwrap();
        let table = tx.open_table(Chunk::TABLE).unwrap();
        table
            .iter()
            .unwrap()
            .map(|e| e.unwrap().1.value().to_vec())
            .collect()
    };
    assert_eq!(raw.len(), chunks.len());
    let with_vector = raw
        .iter()
        .filter(|b| b.windows(12).any(|w| w == b"\"vector\":\"h:"))
        .count();
    assert_eq!(
        with_vector,
        chunks.iter().filter(|c| c.vector.is_some()).count()
    );
    // About 1 KB less per 384-dimension vector.
    let after_bytes: usize = raw.iter().map(Vec::len).sum();
    assert!(
        after_bytes + 1_000 * with_vector < before_bytes,
        "{after_bytes} vs {before_bytes}"
    );
    for c in &chunks {
        let back: Chunk = store.read(|tx| tx.get(&t, &c.key_id())).unwrap().unwrap();
        assert_eq!(back.vector, c.vector.as_ref().map(|v| halves(v)));
        assert_eq!(back.text, c.text);
        assert_eq!(back.headings, c.headings);
        assert_eq!(back.page, c.page);
        assert_eq!(back.embedding_model, c.embedding_model);
        assert_eq!(back.document_id, c.document_id);
    }
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
