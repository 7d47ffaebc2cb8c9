//! Ordered schema migrations, run before the server binds its port.
//!
//! A step reads the data as the version it upgrades from wrote it, with frozen per-version
//! types private to this module (`v3`, `v4`, ...), never with today's `crate::model` structs:
//! those move on, and a migration must keep meaning what it meant when it was written. The
//! frozen types name only the fields the step changes and carry every other field through
//! untouched (`#[serde(flatten)]` into a JSON map). Table names are frozen here too.

use super::{Error, Index, META, RECORD_TABLES, RecordTable, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;

/// The schema this build writes. Bump it with a new step in `STEPS`.
pub const SCHEMA_VERSION: u64 = 15;

enum Step {
    /// Runs in the transaction that records the new version.
    Schema(fn(&redb::WriteTransaction) -> Result<()>),
    /// Rewrites records in transactions of its own (bounded memory); must be safe to run
    /// again after a crash, since the version is recorded only once it has finished.
    Rewrite(fn(&Database) -> Result<()>),
}

/// `STEPS[i]` upgrades a store at version `i` to `i + 1`.
const STEPS: &[Step] = &[
    Step::Schema(v1_initial),
    Step::Schema(v2_job_queue),
    Step::Schema(v3_tenant_settings),
    Step::Rewrite(v4_compact_vectors),
    Step::Schema(v5_invitation_token_hashes),
    Step::Rewrite(v6_message_seq),
    Step::Schema(v7_web_channels_and_visitors),
    Step::Schema(v8_read_marks),
    Step::Schema(v9_channel_inbound),
    Step::Schema(v10_audit_log),
    Step::Schema(v11_plans_and_counts),
    Step::Schema(v12_analytics_rollups),
    Step::Rewrite(v13_half_vectors),
    Step::Rewrite(v14_vectors_table),
    Step::Rewrite(v15_compact_chunks),
];

const CHUNKS: RecordTable = TableDefinition::new("chunks");
const CHUNK_VECTORS: RecordTable = TableDefinition::new("chunk_vectors");
const RECORD_COUNTS: TableDefinition<'static, (&'static str, &'static str), u64> =
    TableDefinition::new("record_counts");
const INBOUND_EVENTS: RecordTable = TableDefinition::new("inbound_events");
const INVITATIONS: RecordTable = TableDefinition::new("invitations");
const TENANT_SETTINGS: RecordTable = TableDefinition::new("tenant_settings");
const IDX_INVITATION_TOKEN: super::IndexTable = TableDefinition::new("idx_invitation_token");
const MESSAGES: RecordTable = TableDefinition::new("messages");
const CONVERSATIONS: RecordTable = TableDefinition::new("conversations");
const IDX_MESSAGE_CLIENT_ID: super::IndexTable = TableDefinition::new("idx_message_client_id");
const CHANNELS: RecordTable = TableDefinition::new("channels");
const VISITORS: RecordTable = TableDefinition::new("visitors");
const READ_MARKS: RecordTable = TableDefinition::new("read_marks");
const IDX_WIDGET_KEY: super::IndexTable = TableDefinition::new("idx_widget_key");
const IDX_VISITOR_TOKEN: super::IndexTable = TableDefinition::new("idx_visitor_token");
const IDX_VISITOR_EXTERNAL: super::IndexTable = TableDefinition::new("idx_visitor_external");

/// Records as schema 3 wrote them.
mod v3 {
    use serde::Deserialize;

    /// A chunk whose vector is a JSON number list.
    #[derive(Deserialize)]
    pub struct Chunk {
        #[serde(default)]
        pub vector: Option<Vec<f32>>,
        #[serde(flatten)]
        pub rest: serde_json::Map<String, serde_json::Value>,
    }
}

/// Records as schema 4 wrote them.
mod v4 {
    use serde::{Deserialize, Serialize};

    /// A chunk whose vector is base64 of little-endian f32s.
    #[derive(Serialize)]
    pub struct Chunk {
        pub vector: Option<String>,
        #[serde(flatten)]
        pub rest: serde_json::Map<String, serde_json::Value>,
    }

    /// An invitation; schema 4 never wrote `tokenHash` (it was kept off the wire with
    /// `skip_serializing`, which also kept it out of the store).
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Invitation {
        #[serde(default)]
        pub token_hash: Option<String>,
        #[serde(flatten)]
        pub rest: serde_json::Map<String, serde_json::Value>,
    }
}

/// Records as schema 5 writes them.
mod v5 {
    use serde::Serialize;

    /// An invitation with the keyed hash of its token (empty once no token index row
    /// refers to it: accepted, or its row already gone).
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Invitation {
        pub token_hash: String,
        #[serde(flatten)]
        pub rest: serde_json::Map<String, serde_json::Value>,
    }
}

/// Records as schema 6 writes them (only the fields its step sets).
mod v6 {
    use serde::Serialize;

    /// A message with its commit order in the conversation.
    #[derive(Serialize)]
    pub struct Message {
        pub seq: u64,
        #[serde(flatten)]
        pub rest: serde_json::Map<String, serde_json::Value>,
    }

    /// A conversation with the `seq` of its last message.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Conversation {
        pub last_seq: u64,
        #[serde(flatten)]
        pub rest: serde_json::Map<String, serde_json::Value>,
    }
}

/// Records as schema 7 writes them.
mod v7 {
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    /// A channel as schema 6 wrote it: status `active`/`inactive`, one sealed string of
    /// credentials.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct OldChannel {
        pub status: String,
        #[serde(default)]
        pub sealed_credentials: Option<String>,
        #[serde(flatten)]
        pub rest: serde_json::Map<String, serde_json::Value>,
    }

    /// A channel with status `active`/`paused`/`error` and credentials sealed one by one.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Channel {
        pub status: String,
        pub credentials: BTreeMap<String, String>,
        #[serde(flatten)]
        pub rest: serde_json::Map<String, serde_json::Value>,
    }
}

fn corrupt(table: &'static str) -> impl Fn(serde_json::Error) -> Error {
    move |source| Error::Corrupt { table, source }
}

/// Creates every table of the data model.
fn v1_initial(tx: &redb::WriteTransaction) -> Result<()> {
    for def in RECORD_TABLES {
        tx.open_table(*def)?;
    }
    for idx in Index::ALL {
        tx.open_table(idx.table())?;
    }
    Ok(())
}

/// Adds the durable job queue index.
fn v2_job_queue(tx: &redb::WriteTransaction) -> Result<()> {
    tx.open_table(Index::JobQueue.table())?;
    Ok(())
}

/// Adds per-tenant provider settings.
fn v3_tenant_settings(tx: &redb::WriteTransaction) -> Result<()> {
    tx.open_table(TENANT_SETTINGS)?;
    Ok(())
}

/// Up to `n` rows of a record table in key order after `after` (from the start when
/// `None`): the batches of the steps that rewrite every record, one transaction each.
fn rows_after(
    tx: &redb::WriteTransaction,
    table: RecordTable,
    after: Option<&(String, String)>,
    n: usize,
) -> Result<Vec<(String, String, Vec<u8>)>> {
    let t = tx.open_table(table)?;
    let lower = match after {
        Some((a, b)) => Bound::Excluded((a.as_str(), b.as_str())),
        None => Bound::Unbounded,
    };
    t.range::<(&str, &str)>((lower, Bound::Unbounded))?
        .take(n)
        .map(|e| {
            let (k, v) = e?;
            let (tenant, id) = k.value();
            Ok((tenant.to_string(), id.to_string(), v.value().to_vec()))
        })
        .collect()
}

/// Rows of a record table a batch at a time, in key order, one write transaction per batch
/// of [`REWRITE_BATCH`]: `f` rewrites a batch in the transaction, which is then committed
/// (so a crash leaves whole batches, and every step is written to be re-run over them).
fn in_batches(
    db: &Database,
    table: RecordTable,
    mut f: impl FnMut(&redb::WriteTransaction, &[(String, String, Vec<u8>)]) -> Result<()>,
) -> Result<()> {
    let mut after: Option<(String, String)> = None;
    loop {
        let tx = db.begin_write()?;
        let batch = rows_after(&tx, table, after.as_ref(), REWRITE_BATCH)?;
        f(&tx, &batch)?;
        tx.commit()?;
        let full = batch.len() == REWRITE_BATCH;
        match batch.into_iter().last() {
            Some((tenant, id, _)) if full => after = Some((tenant, id)),
            _ => return Ok(()),
        }
    }
}

/// Records per transaction of the steps that rewrite every record of a table.
const REWRITE_BATCH: usize = 1_000;

/// Rewrites every chunk so its vector is stored as base64 bytes instead of a JSON number
/// list (about a third of the size), 1,000 chunks per transaction.
fn v4_compact_vectors(db: &Database) -> Result<()> {
    use base64::Engine as _;
    in_batches(db, CHUNKS, |tx, batch| {
        let mut t = tx.open_table(CHUNKS)?;
        for (tenant, id, bytes) in batch {
            if super::codec::is_compact(bytes) || !bytes.windows(10).any(|w| w == b"\"vector\":[") {
                continue; // already compact (a re-run after a crash)
            }
            let old: v3::Chunk = serde_json::from_slice(bytes).map_err(corrupt("chunks"))?;
            let new = v4::Chunk {
                vector: old.vector.map(|v| {
                    let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    base64::engine::general_purpose::STANDARD.encode(b)
                }),
                rest: old.rest,
            };
            let out = serde_json::to_vec(&new).map_err(corrupt("chunks"))?;
            t.insert((tenant.as_str(), id.as_str()), out.as_slice())?;
        }
        Ok(())
    })
}

/// Stores each invitation's token hash, which schema 4 dropped on write. The hash survives
/// as the key of the invitation's row in the token index, so it is read back from there;
/// index rows whose invitation no longer exists (left behind by revocations that removed
/// the key "" instead of the real one) are removed.
fn v5_invitation_token_hashes(tx: &redb::WriteTransaction) -> Result<()> {
    let mut idx = tx.open_table(IDX_INVITATION_TOKEN)?;
    let mut by_ref: HashMap<String, String> = HashMap::new();
    for e in idx.iter()? {
        let (k, v) = e?;
        by_ref.insert(v.value().to_string(), k.value().to_string());
    }
    let mut invitations = tx.open_table(INVITATIONS)?;
    let rows: Vec<(String, String, Vec<u8>)> = invitations
        .iter()?
        .map(|e| {
            let (k, v) = e?;
            let (tenant, id) = k.value();
            Ok((tenant.to_string(), id.to_string(), v.value().to_vec()))
        })
        .collect::<Result<_>>()?;
    for (tenant, id, bytes) in rows {
        let old: v4::Invitation = serde_json::from_slice(&bytes).map_err(corrupt("invitations"))?;
        let hash = by_ref
            .remove(&format!("{tenant}/{id}"))
            .or(old.token_hash.filter(|h| !h.is_empty()))
            .unwrap_or_default();
        let new = v5::Invitation {
            token_hash: hash,
            rest: old.rest,
        };
        let out = serde_json::to_vec(&new).map_err(corrupt("invitations"))?;
        invitations.insert((tenant.as_str(), id.as_str()), out.as_slice())?;
    }
    // What is left in `by_ref` points at invitations that are gone.
    for hash in by_ref.values() {
        idx.remove(hash.as_str())?;
    }
    Ok(())
}

/// Rewrites every row of `table` with `f` (tenant, key id, record as a JSON map), 1,000
/// rows per transaction, in key order.
fn rewrite_rows(
    db: &Database,
    table: RecordTable,
    name: &'static str,
    mut f: impl FnMut(&str, &str, serde_json::Map<String, serde_json::Value>) -> Result<Vec<u8>>,
) -> Result<()> {
    in_batches(db, table, |tx, batch| {
        let mut t = tx.open_table(table)?;
        for (tenant, id, bytes) in batch {
            if super::codec::is_compact(bytes) {
                continue; // a compact chunk (restored from a newer archive): not JSON
            }
            let map = serde_json::from_slice(bytes).map_err(corrupt(name))?;
            let out = f(tenant, id, map)?;
            t.insert((tenant.as_str(), id.as_str()), out.as_slice())?;
        }
        Ok(())
    })
}

/// Numbers every stored message in commit order within its conversation (`seq`: 1, 2, ...;
/// before schema 6 the id order was the best record of it) and stores the last number on
/// the conversation; adds the index of senders' idempotency keys. Deterministic, so a
/// re-run after a crash writes the same numbers.
fn v6_message_seq(db: &Database) -> Result<()> {
    {
        let tx = db.begin_write()?;
        tx.open_table(IDX_MESSAGE_CLIENT_ID)?;
        tx.commit()?;
    }
    // Keys are `conversationId/messageId`: one conversation's messages are one range.
    let mut last: HashMap<(String, String), u64> = HashMap::new();
    rewrite_rows(db, MESSAGES, "messages", |tenant, id, mut rest| {
        let conv = id.split('/').next().unwrap_or_default().to_string();
        let n = last.entry((tenant.to_string(), conv)).or_insert(0);
        *n += 1;
        rest.remove("seq");
        serde_json::to_vec(&v6::Message { seq: *n, rest }).map_err(corrupt("messages"))
    })?;
    rewrite_rows(
        db,
        CONVERSATIONS,
        "conversations",
        |tenant, id, mut rest| {
            rest.remove("lastSeq");
            let last_seq = last
                .get(&(tenant.to_string(), id.to_string()))
                .copied()
                .unwrap_or(0);
            serde_json::to_vec(&v6::Conversation { last_seq, rest })
                .map_err(corrupt("conversations"))
        },
    )
}

/// Adds website-widget visitors and their lookups (widget key, visitor token, verified
/// identity), and moves channels to per-credential sealing and the active/paused/error
/// statuses (`inactive` becomes `paused`; an old single sealed credential is kept as
/// `legacy`).
fn v7_web_channels_and_visitors(tx: &redb::WriteTransaction) -> Result<()> {
    tx.open_table(VISITORS)?;
    for idx in [IDX_WIDGET_KEY, IDX_VISITOR_TOKEN, IDX_VISITOR_EXTERNAL] {
        tx.open_table(idx)?;
    }
    let mut channels = tx.open_table(CHANNELS)?;
    let rows: Vec<(String, String, Vec<u8>)> = channels
        .iter()?
        .map(|e| {
            let (k, v) = e?;
            let (tenant, id) = k.value();
            Ok((tenant.to_string(), id.to_string(), v.value().to_vec()))
        })
        .collect::<Result<_>>()?;
    for (tenant, id, bytes) in rows {
        let old: v7::OldChannel = serde_json::from_slice(&bytes).map_err(corrupt("channels"))?;
        if old.rest.contains_key("credentials") {
            continue; // already in the new shape
        }
        let status = match old.status.as_str() {
            "inactive" => "paused".to_string(),
            other => other.to_string(),
        };
        let new = v7::Channel {
            status,
            credentials: old
                .sealed_credentials
                .map(|s| ("legacy".to_string(), s))
                .into_iter()
                .collect(),
            rest: old.rest,
        };
        let out = serde_json::to_vec(&new).map_err(corrupt("channels"))?;
        channels.insert((tenant.as_str(), id.as_str()), out.as_slice())?;
    }
    Ok(())
}

/// Adds the team's read marks of conversations.
fn v8_read_marks(tx: &redb::WriteTransaction) -> Result<()> {
    tx.open_table(READ_MARKS)?;
    Ok(())
}

/// Adds messaging channels' webhook deliveries and their lookups.
fn v9_channel_inbound(tx: &redb::WriteTransaction) -> Result<()> {
    tx.open_table(INBOUND_EVENTS)?;
    for name in [
        "idx_channel_webhook",
        "idx_inbound_external",
        "idx_channel_contact",
    ] {
        tx.open_table(super::IndexTable::new(name))?;
    }
    Ok(())
}

/// Adds the audit log and its install-wide time index.
fn v10_audit_log(tx: &redb::WriteTransaction) -> Result<()> {
    tx.open_table(RecordTable::new("audit_log"))?;
    tx.open_table(super::IndexTable::new("idx_audit_time"))?;
    Ok(())
}

/// Records as schema 11 reads them.
mod v11 {
    use serde::Deserialize;

    /// A document's size (the weight summed per tenant for plan storage limits).
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Document {
        #[serde(default)]
        pub size_bytes: u64,
    }
}

/// Adds plans, tenants' plan subscriptions and the per-tenant row counts of the tables plan
/// limits count (users, API keys, agents, documents with their bytes, channels), counted
/// once here from the rows; from now on every write keeps them.
fn v11_plans_and_counts(tx: &redb::WriteTransaction) -> Result<()> {
    tx.open_table(RecordTable::new("plans"))?;
    tx.open_table(RecordTable::new("tenant_plans"))?;
    let mut counts: HashMap<(String, String), u64> = HashMap::new();
    for name in ["users", "api_keys", "agents", "documents", "channels"] {
        let t = tx.open_table(RecordTable::new(name))?;
        for e in t.iter()? {
            let (k, v) = e?;
            let tenant = k.value().0.to_string();
            *counts
                .entry((tenant.clone(), name.to_string()))
                .or_default() += 1;
            if name == "documents" {
                let d: v11::Document =
                    serde_json::from_slice(v.value()).map_err(corrupt("documents"))?;
                *counts
                    .entry((tenant, format!("{name}#weight")))
                    .or_default() += d.size_bytes;
            }
        }
    }
    let mut c = tx.open_table(RECORD_COUNTS)?;
    c.retain(|_, _| false)?;
    for ((tenant, key), n) in counts {
        if n > 0 {
            c.insert((tenant.as_str(), key.as_str()), n)?;
        }
    }
    Ok(())
}

/// Adds the hourly analytics rollups, per-conversation analytics and knowledge gaps. They
/// start empty; the server fills them from the stored conversations, messages and turn
/// events at its first start (`Services::rebuild_analytics_if_empty`), as
/// `aigentable analytics rebuild` does.
fn v12_analytics_rollups(tx: &redb::WriteTransaction) -> Result<()> {
    for name in [
        "analytics_rollups",
        "analytics_conversations",
        "analytics_gaps",
    ] {
        tx.open_table(RecordTable::new(name))?;
    }
    Ok(())
}

/// Rewrites every chunk's vector from base64 of f32s (or, never migrated by step 4, a
/// number list) to `"h:"` + base64 of the nearest IEEE halves: half the bytes, and what the
/// vector index holds anyway. A vector already in that form is kept (a re-run after a
/// crash); a chunk without a vector is kept as it is.
fn v13_half_vectors(db: &Database) -> Result<()> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    const HALVES: &str = "h:";
    let bad = |what: &str| Error::Corrupt {
        table: "chunks",
        source: <serde_json::Error as serde::de::Error>::custom(what),
    };
    rewrite_rows(db, CHUNKS, "chunks", |_, _, mut map| {
        let floats: Option<Vec<f32>> = match map.get("vector") {
            Some(serde_json::Value::String(s)) if !s.starts_with(HALVES) => {
                let bytes = STANDARD
                    .decode(s)
                    .map_err(|_| bad("a chunk vector is not base64"))?;
                if bytes.len() % 4 != 0 {
                    return Err(bad("a chunk vector is not a whole number of f32s"));
                }
                Some(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                )
            }
            Some(serde_json::Value::Array(list)) => Some(
                list.iter()
                    .map(|x| x.as_f64().map(|x| x as f32))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad("a chunk vector list holds a non-number"))?,
            ),
            _ => None,
        };
        if let Some(v) = floats {
            let bytes: Vec<u8> = v
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
                .collect();
            let mut out = String::from(HALVES);
            STANDARD.encode_string(bytes, &mut out);
            map.insert("vector".into(), serde_json::Value::String(out));
        }
        serde_json::to_vec(&map).map_err(corrupt("chunks"))
    })
}

/// Moves every chunk's vector out of its record into the `chunk_vectors` table (same key,
/// the value raw little-endian halves), so records of text alone pack several to a redb
/// page. Reads the three forms earlier schemas wrote (`"h:"` + base64 of halves, base64 of
/// f32s, a number list); a record without `vector` is left alone (a re-run after a crash).
/// 1,000 chunks per transaction.
fn v14_vectors_table(db: &Database) -> Result<()> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let bad = |what: &str| Error::Corrupt {
        table: "chunks",
        source: <serde_json::Error as serde::de::Error>::custom(what),
    };
    let halves = |v: &serde_json::Value| -> Result<Option<Vec<u8>>> {
        let floats: Vec<f32> = match v {
            serde_json::Value::Null => return Ok(None),
            serde_json::Value::String(s) => {
                if let Some(h) = s.strip_prefix("h:") {
                    let bytes = STANDARD
                        .decode(h)
                        .map_err(|_| bad("a chunk vector is not base64"))?;
                    if bytes.len() % 2 != 0 {
                        return Err(bad("a chunk vector is not a whole number of halves"));
                    }
                    return Ok(Some(bytes));
                }
                let bytes = STANDARD
                    .decode(s)
                    .map_err(|_| bad("a chunk vector is not base64"))?;
                if bytes.len() % 4 != 0 {
                    return Err(bad("a chunk vector is not a whole number of f32s"));
                }
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            }
            serde_json::Value::Array(list) => list
                .iter()
                .map(|x| x.as_f64().map(|x| x as f32))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("a chunk vector list holds a non-number"))?,
            _ => return Err(bad("a chunk vector is neither a string nor a list")),
        };
        Ok(Some(
            floats
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
                .collect(),
        ))
    };
    {
        let tx = db.begin_write()?;
        tx.open_table(CHUNK_VECTORS)?;
        tx.commit()?;
    }
    in_batches(db, CHUNKS, |tx, batch| {
        let mut t = tx.open_table(CHUNKS)?;
        let mut vectors = tx.open_table(CHUNK_VECTORS)?;
        for (tenant, id, bytes) in batch {
            if super::codec::is_compact(bytes) || !bytes.windows(9).any(|w| w == b"\"vector\":") {
                continue; // moved already (a re-run after a crash)
            }
            let mut map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(bytes).map_err(corrupt("chunks"))?;
            let Some(v) = map.remove("vector") else {
                continue; // the text of a chunk said `"vector":`
            };
            if let Some(h) = halves(&v)? {
                vectors.insert((tenant.as_str(), id.as_str()), h.as_slice())?;
            }
            let out = serde_json::to_vec(&map).map_err(corrupt("chunks"))?;
            t.insert((tenant.as_str(), id.as_str()), out.as_slice())?;
        }
        Ok(())
    })
}

/// Where step 15 writes the compact chunks before they take the place of [`CHUNKS`].
const CHUNKS_V15: RecordTable = TableDefinition::new("chunks_v15");

/// Rewrites every chunk record from JSON to the compact form of `codec.rs`: the ids left to
/// the key, the small fields as varints, the text zstd-compressed (BENCHMARKS.md, "Session
/// 10"). A record already compact is kept, and so is one that is not schema 14's layout
/// field for field (readers still take JSON).
///
/// The records go into a new table in key order, 1,000 per transaction, and one last
/// transaction deletes the old table and gives the new one its name. Appending fills each
/// page; rewriting the records in place (removing a batch and inserting it again) split
/// pages in the middle of the tree and left the table a third empty, which the compaction
/// at open cannot mend: it moves pages, it does not merge them (BENCHMARKS.md, "Session
/// 12"). Until that last commit the old table is the data and the new one a copy of a
/// prefix of it, so a run cut short resumes after the new table's last key (nothing writes
/// the chunks before the store is migrated); after it, only the new table is left, and a
/// run cut short before the version is recorded copies the compact records once more.
fn v15_compact_chunks(db: &Database) -> Result<()> {
    v15_copy_compact(db, usize::MAX)?;
    let tx = db.begin_write()?;
    tx.delete_table(CHUNKS)?;
    tx.rename_table(CHUNKS_V15, CHUNKS)?;
    tx.commit()?;
    Ok(())
}

/// Step 15's copy into [`CHUNKS_V15`], at most `batches` transactions of it (a test stops
/// it there to play a crash).
fn v15_copy_compact(db: &Database, batches: usize) -> Result<()> {
    let mut after = {
        let tx = db.begin_write()?;
        let last = tx.open_table(CHUNKS_V15)?.last()?.map(|(k, _)| {
            let (tenant, id) = k.value();
            (tenant.to_string(), id.to_string())
        });
        tx.commit()?;
        last
    };
    for _ in 0..batches {
        let tx = db.begin_write()?;
        let batch = rows_after(&tx, CHUNKS, after.as_ref(), REWRITE_BATCH)?;
        {
            let mut new = tx.open_table(CHUNKS_V15)?;
            for (tenant, id, bytes) in &batch {
                let compact = Some(bytes)
                    .filter(|b| !super::codec::is_compact(b))
                    .and_then(|b| super::codec::compact_v14_json(tenant, id, b));
                let out = compact.as_deref().unwrap_or(bytes);
                new.insert((tenant.as_str(), id.as_str()), out)?;
            }
        }
        tx.commit()?;
        let full = batch.len() == REWRITE_BATCH;
        match batch.into_iter().last() {
            Some((tenant, id, _)) if full => after = Some((tenant, id)),
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Plays a crash in step 15 on a schema-14 store: the copy stops after `batches`
/// transactions, and with `usize::MAX` the step runs whole but the version is not recorded.
#[cfg(test)]
pub(super) fn v15_cut_short(db: &Database, batches: usize) -> Result<()> {
    if batches == usize::MAX {
        v15_compact_chunks(db)
    } else {
        v15_copy_compact(db, batches)
    }
}

/// Brings the store to [`SCHEMA_VERSION`]; true when a step rewrote records (the file is
/// then worth compacting).
pub(super) fn run(db: &Database, path: &Path) -> Result<bool> {
    let found = {
        let tx = db.begin_read()?;
        match tx.open_table(META) {
            Ok(t) => t.get("schema_version")?.map(|v| v.value()).unwrap_or(0),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(e.into()),
        }
    };
    if found > SCHEMA_VERSION {
        return Err(Error::TooNew {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    let mut rewrote = false;
    for (i, step) in STEPS.iter().enumerate().skip(found as usize) {
        let to = i as u64 + 1;
        if let Step::Rewrite(rewrite) = step {
            rewrite(db)?;
            // A new store runs every step over no records: nothing to compact.
            rewrote |= found > 0;
        }
        let tx = db.begin_write()?;
        if let Step::Schema(schema) = step {
            schema(&tx)?;
        }
        tx.open_table(META)?.insert("schema_version", to)?;
        tx.commit()?;
        tracing::info!(from = i, to, "migrated store schema");
    }
    Ok(rewrote)
}

#[cfg(test)]
mod tests {
    use super::super::{Store, WriteTx};
    use super::*;
    use crate::model::Invitation;
    use crate::types::*;

    fn invitation(t: &TenantId) -> Invitation {
        Invitation {
            id: InvitationId::new(),
            tenant_id: t.clone(),
            email: "new@example.com".into(),
            role: Role::TenantUser,
            name: None,
            token_hash: "hash-of-live-token".into(),
            invited_by: None,
            created_at: now(),
            expires_at: now(),
            accepted_at: None,
        }
    }

    #[test]
    fn schema_4_invitations_get_their_hash_back_and_orphan_token_rows_go() {
        let dir = tempfile::tempdir().unwrap();
        let t = TenantId::new();
        let live = invitation(&t);
        {
            // Written the way schema 4 wrote them: no tokenHash in the record, the hash only
            // as the key of the index row; plus a row left behind by a revocation.
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let tx = store.db.get().unwrap().begin_write().unwrap();
            {
                let mut v = serde_json::to_value(&live).unwrap();
                v.as_object_mut().unwrap().remove("tokenHash");
                let mut table = tx.open_table(INVITATIONS).unwrap();
                table
                    .insert(
                        (t.as_str(), live.id.as_str()),
                        serde_json::to_vec(&v).unwrap().as_slice(),
                    )
                    .unwrap();
                let mut idx = tx.open_table(IDX_INVITATION_TOKEN).unwrap();
                idx.insert("hash-of-live-token", format!("{t}/{}", live.id).as_str())
                    .unwrap();
                idx.insert(
                    "hash-of-revoked-token",
                    format!("{t}/{}", InvitationId::new()).as_str(),
                )
                .unwrap();
            }
            tx.open_table(META)
                .unwrap()
                .insert("schema_version", 4)
                .unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let back: Invitation = store
            .read(|tx| tx.get(&t, live.id.as_str()))
            .unwrap()
            .unwrap();
        assert_eq!(back.token_hash, "hash-of-live-token");
        assert_eq!(back.email, live.email);
        let rows = store
            .read(|tx| tx.index_entries(Index::InvitationToken, None, 10))
            .unwrap();
        assert_eq!(
            rows,
            [("hash-of-live-token".to_string(), format!("{t}/{}", live.id))]
        );
        // Written whole now: the hash survives another write and read.
        store.write(|tx: &WriteTx| tx.put(&back)).unwrap();
        let again: Invitation = store
            .read(|tx| tx.get(&t, live.id.as_str()))
            .unwrap()
            .unwrap();
        assert_eq!(again.token_hash, "hash-of-live-token");
    }

    #[test]
    fn schema_5_messages_get_their_commit_order() {
        use crate::model::{Conversation, Message};
        let dir = tempfile::tempdir().unwrap();
        let t = TenantId::new();
        let conv = ConversationId::new();
        let ids: Vec<MessageId> = (0..3).map(|_| MessageId::new()).collect();
        {
            // As schema 5 wrote them: no seq on messages, no lastSeq on the conversation.
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let tx = store.db.get().unwrap().begin_write().unwrap();
            {
                let mut m = tx.open_table(MESSAGES).unwrap();
                for (i, id) in ids.iter().enumerate() {
                    let v = serde_json::json!({
                        "id": id, "tenantId": t, "conversationId": conv, "role": "customer",
                        "content": format!("m{i}"), "usage": null, "status": "sent",
                        "error": null, "authorId": null, "createdAt": "2026-01-01T00:00:00Z"
                    });
                    m.insert(
                        (t.as_str(), format!("{conv}/{id}").as_str()),
                        serde_json::to_vec(&v).unwrap().as_slice(),
                    )
                    .unwrap();
                }
                let v = serde_json::json!({
                    "id": conv, "tenantId": t, "agentId": AgentId::new(), "channelId": null,
                    "status": "open", "mode": "ai", "assigneeId": null, "messageCount": 3,
                    "createdAt": "2026-01-01T00:00:00Z"
                });
                tx.open_table(CONVERSATIONS)
                    .unwrap()
                    .insert(
                        (t.as_str(), conv.as_str()),
                        serde_json::to_vec(&v).unwrap().as_slice(),
                    )
                    .unwrap();
            }
            tx.open_table(META)
                .unwrap()
                .insert("schema_version", 5)
                .unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let msgs: Vec<Message> = store
            .read(|tx| tx.scan(&t, Some(conv.as_str()), |_: &Message| true))
            .unwrap();
        let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(msgs[2].content, "m2");
        let c: Conversation = store.read(|tx| tx.get(&t, conv.as_str())).unwrap().unwrap();
        assert_eq!(c.last_seq, 3);
        assert_eq!(c.message_count, 3);
        // The client-id index exists (reads of it do not fail on a migrated store).
        assert_eq!(
            store
                .read(|tx| tx.index_get(Index::MessageClientId, "x"))
                .unwrap(),
            None
        );
    }

    #[test]
    fn schema_6_channels_get_the_new_statuses_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let t = TenantId::new();
        let id = ChannelId::new();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let tx = store.db.get().unwrap().begin_write().unwrap();
            {
                let old = serde_json::json!({
                    "id": id, "tenantId": t, "agentId": null, "kind": "telegram",
                    "name": "bot", "status": "inactive", "config": {"x": 1},
                    "sealedCredentials": "v1:abc",
                    "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"
                });
                let mut table = tx.open_table(CHANNELS).unwrap();
                table
                    .insert(
                        (t.as_str(), id.as_str()),
                        serde_json::to_vec(&old).unwrap().as_slice(),
                    )
                    .unwrap();
            }
            tx.open_table(META)
                .unwrap()
                .insert("schema_version", 6)
                .unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let ch: crate::model::Channel = store.read(|tx| tx.get(&t, id.as_str())).unwrap().unwrap();
        assert_eq!(ch.status, crate::model::ChannelStatus::Paused);
        assert_eq!(
            ch.credentials.get("legacy").map(String::as_str),
            Some("v1:abc")
        );
        assert_eq!(ch.config["x"], 1);
        assert!(ch.web.is_none());
        // The new tables exist: reading them does not fail.
        let visitors = store
            .read(|tx| tx.list::<crate::model::Visitor>(&t, None, None, 10, false))
            .unwrap();
        assert!(visitors.items.is_empty());
        assert_eq!(
            store
                .read(|tx| tx.index_get(Index::WidgetKey, "wk_x"))
                .unwrap(),
            None
        );
    }

    #[test]
    fn schema_10_stores_get_their_row_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (t, u) = (TenantId::new(), TenantId::new());
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let tx = store.db.get().unwrap().begin_write().unwrap();
            {
                let mut docs = tx.open_table(RecordTable::new("documents")).unwrap();
                for (tenant, size) in [(&t, 10), (&t, 20), (&u, 5)] {
                    let id = DocumentId::new();
                    let row = serde_json::json!({"id": id, "tenantId": tenant, "sizeBytes": size});
                    docs.insert(
                        (tenant.as_str(), id.as_str()),
                        serde_json::to_vec(&row).unwrap().as_slice(),
                    )
                    .unwrap();
                }
                let mut agents = tx.open_table(RecordTable::new("agents")).unwrap();
                let id = AgentId::new();
                agents
                    .insert((t.as_str(), id.as_str()), b"{}".as_slice())
                    .unwrap();
            }
            // As schema 10 left it: no counts at all.
            tx.delete_table(RECORD_COUNTS).unwrap();
            tx.open_table(META)
                .unwrap()
                .insert("schema_version", 10)
                .unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let got = store
            .read(|tx| {
                Ok((
                    tx.count::<crate::model::Document>(&t)?,
                    tx.weight_sum::<crate::model::Document>(&t)?,
                    tx.count::<crate::model::Agent>(&t)?,
                    tx.count::<crate::model::Document>(&u)?,
                    tx.weight_sum::<crate::model::Document>(&u)?,
                    tx.count::<crate::model::Agent>(&u)?,
                ))
            })
            .unwrap();
        assert_eq!(got, (2, 30, 1, 1, 5, 0));
    }
}
