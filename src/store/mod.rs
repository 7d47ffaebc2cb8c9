//! The only module that talks to redb: table definitions, tenant-first keys, transactions,
//! migrations. Callers see typed records and never a redb type.
//!
//! Layout: every tenant-scoped table is keyed `(tenant_id, id)`, so one tenant's rows form a
//! contiguous key range (listing in creation order comes free because ids are UUIDv7, and
//! deleting a tenant is a range delete). Global unique lookups (email, token hashes) are
//! `&str -> "tenantId/id"` index tables.

mod audit;
mod codec;
mod disk;
mod dump;
mod gate;
mod group;
mod migrate;
mod view;

use crate::model::*;
use crate::types::TenantId;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::Cell;
use std::ops::Bound;
use std::path::{Path, PathBuf};

pub use disk::{DiskState, WRITE_PROBE};
pub use dump::{FilePin, ImportConflict, Kind, RawWriter, Row, Snapshot};
pub use migrate::SCHEMA_VERSION;

/// Makes every file and directory this process creates from now on private to its user
/// (0600 / 0700): the data directory holds the store, uploaded originals, indexes and logs,
/// and libraries (redb, tantivy, the log appender) create their files with the umask.
/// Called once at startup, before the data directory is touched.
pub fn private_files() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// The data directory 0700 and the store file 0600, also when an older version (or another
/// umask) created them readable by others.
fn make_private(dir: &Path, file: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        // Create it with the right mode rather than fixing it after redb wrote to it.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(file)?;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = (dir, file);
    Ok(())
}

pub type RecordTable = TableDefinition<'static, (&'static str, &'static str), &'static [u8]>;
pub type IndexTable = TableDefinition<'static, &'static str, &'static str>;

pub(crate) const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage error: {0}")]
    Db(#[from] redb::Error),
    #[error(
        "the data directory {path} was written by a newer aigentable (schema {found}, this build knows up to {known}); refusing to open it. Upgrade aigentable or use another --data-dir."
    )]
    TooNew {
        path: PathBuf,
        found: u64,
        known: u64,
    },
    #[error("the store at {path} is in use by another aigentable process")]
    Locked { path: PathBuf },
    #[error("the disk refused a write: {0}")]
    Disk(std::io::Error),
    #[error("the store could not be reopened after a disk error: {0}")]
    Unavailable(String),
    #[error("the store holds a table this build does not know: {0}")]
    UnknownTable(String),
    #[error("corrupt record in {table}: {source}")]
    Corrupt {
        table: &'static str,
        source: serde_json::Error,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl Error {
    /// The kind of the I/O error underneath, when a write failed on the disk (full,
    /// read-only, over quota), so the API can say so.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Error::Db(redb::Error::Io(io)) | Error::Disk(io) => Some(io.kind()),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stored, tenant-scoped record.
pub trait Record: Serialize + DeserializeOwned {
    const TABLE: RecordTable;
    fn tenant(&self) -> &TenantId;
    /// The second key part: the record id, or `parentId/id` for records listed under a parent.
    fn key_id(&self) -> String;
    /// Whether the store keeps a per-tenant count of this table's rows (see
    /// [`ReadTx::count`]), updated in the same transaction as every insert and removal.
    const COUNTED: bool = false;
    /// For counted tables: a size the store also sums per tenant (a document's bytes).
    fn weight(&self) -> u64 {
        0
    }
    /// Whether rows of [`CHUNK_VECTORS`] under the same key belong to this record: they are
    /// deleted with it (one record type, chunks, has them).
    const VECTORS: bool = false;
    /// The bytes the store keeps for this record: JSON, unless the type has a denser form
    /// (chunks: `codec.rs`).
    fn to_stored(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }
    /// A record from its key and the bytes the store keeps.
    fn from_stored(tenant: &str, id: &str, bytes: &[u8]) -> serde_json::Result<Self> {
        let _ = (tenant, id);
        serde_json::from_slice(bytes)
    }
}

/// Chunk vectors, apart from the chunk records: `(tenantId, "documentId/chunkId")` (the
/// chunk's own key) -> little-endian IEEE halves (768 bytes for 384 dimensions). Not JSON.
///
/// Kept out of the records because redb gives any value over ~2 KB a 4 KiB page of its
/// own: a chunk of ~110 words plus its vector took a page each, while apart, several
/// records and several vectors share a page (BENCHMARKS.md, "vectors in their own table").
/// Written by [`WriteTx::put_vector`]; removed with their chunk by every delete.
pub(crate) const CHUNK_VECTORS: RecordTable = TableDefinition::new("chunk_vectors");

/// A vector as [`CHUNK_VECTORS`] keeps it.
fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
        .collect()
}

/// The f32 values of a stored vector (the halves' exact values).
fn vector_from_bytes(b: &[u8]) -> Result<Vec<f32>> {
    if !b.len().is_multiple_of(2) {
        return Err(Error::Corrupt {
            table: CHUNK_VECTORS.name(),
            source: <serde_json::Error as serde::de::Error>::custom(
                "a vector is not a whole number of halves",
            ),
        });
    }
    Ok(b.chunks_exact(2)
        .map(|h| half::f16::from_le_bytes([h[0], h[1]]).to_f32())
        .collect())
}

/// One table's share of the store file ([`Store::table_sizes`]).
#[derive(Debug, Clone)]
pub struct TableSize {
    pub name: String,
    pub rows: u64,
    /// Keys and values as stored.
    pub stored_bytes: u64,
    /// redb's own per-entry and per-page bookkeeping.
    pub metadata_bytes: u64,
    /// Unused space inside the table's pages.
    pub fragmented_bytes: u64,
    /// Leaf and branch pages.
    pub pages: u64,
}

/// Per-tenant row counts (and summed weights) of the counted tables: `(tenantId, name)` ->
/// count, where `name` is the table's name, or `<table>#weight` for the sum of weights.
/// Kept by [`WriteTx::put`] and the deletes, so plan limits are checked in O(1).
pub(crate) const COUNTS: TableDefinition<'static, (&'static str, &'static str), u64> =
    TableDefinition::new("record_counts");

fn weight_key(table: &str) -> String {
    format!("{table}#weight")
}

macro_rules! record {
    ($ty:ty, $name:literal, |$r:ident| $key:expr) => {
        impl Record for $ty {
            const TABLE: RecordTable = TableDefinition::new($name);
            fn tenant(&self) -> &TenantId {
                &self.tenant_id
            }
            fn key_id(&self) -> String {
                let $r = self;
                $key
            }
        }
    };
    ($ty:ty, $name:literal, |$r:ident| $key:expr, counted) => {
        record!($ty, $name, |$r| $key, counted, |_w| 0);
    };
    ($ty:ty, $name:literal, |$r:ident| $key:expr, counted, |$w:ident| $weight:expr) => {
        impl Record for $ty {
            const TABLE: RecordTable = TableDefinition::new($name);
            const COUNTED: bool = true;
            fn tenant(&self) -> &TenantId {
                &self.tenant_id
            }
            fn key_id(&self) -> String {
                let $r = self;
                $key
            }
            fn weight(&self) -> u64 {
                let $w = self;
                $weight
            }
        }
    };
}

impl Record for Tenant {
    const TABLE: RecordTable = TableDefinition::new("tenants");
    fn tenant(&self) -> &TenantId {
        &self.id
    }
    fn key_id(&self) -> String {
        String::new()
    }
}
record!(TenantSettings, "tenant_settings", |_r| String::new());
record!(User, "users", |r| r.id.to_string(), counted);
/// The store key of a chunk: under its document, so a document's chunks are one range.
pub fn chunk_key(document: &crate::types::DocumentId, chunk: &crate::types::ChunkId) -> String {
    format!("{document}/{chunk}")
}

record!(Session, "sessions", |r| r.id.to_string());
record!(Invitation, "invitations", |r| r.id.to_string());
record!(PasswordReset, "password_resets", |r| r.id.to_string());
record!(ApiKey, "api_keys", |r| r.id.to_string(), counted);
record!(Agent, "agents", |r| r.id.to_string(), counted);
record!(AgentAnalytics, "agent_analytics", |r| r.id.clone());
record!(Document, "documents", |r| r.id.to_string(), counted, |d| d
    .size_bytes);
impl Record for Chunk {
    const TABLE: RecordTable = TableDefinition::new("chunks");
    const VECTORS: bool = true;
    fn tenant(&self) -> &TenantId {
        &self.tenant_id
    }
    fn key_id(&self) -> String {
        chunk_key(&self.document_id, &self.id)
    }
    /// The compact form (schema 15): the ids are the key's, the text zstd-compressed.
    fn to_stored(&self) -> serde_json::Result<Vec<u8>> {
        Ok(codec::encode_chunk(&codec::ChunkRef {
            ordinal: self.ordinal,
            page: self.page,
            token_count: self.token_count,
            embedding_model: self.embedding_model.as_deref(),
            headings: &self.headings,
            text: &self.text,
        }))
    }
    /// The compact form, or JSON as schema 14 and earlier wrote chunks (a restore writes
    /// rows as the archive has them; the next migration compacts them).
    fn from_stored(tenant: &str, id: &str, bytes: &[u8]) -> serde_json::Result<Self> {
        if !codec::is_compact(bytes) {
            return serde_json::from_slice(bytes);
        }
        fn bad(what: impl std::fmt::Display) -> serde_json::Error {
            <serde_json::Error as serde::de::Error>::custom(what)
        }
        let f = codec::decode_chunk(bytes).map_err(bad)?;
        let (document, chunk) = id
            .split_once('/')
            .ok_or_else(|| bad("a chunk key without its document"))?;
        Ok(Chunk {
            id: crate::types::ChunkId::parse(chunk).ok_or_else(|| bad("chunk id in the key"))?,
            tenant_id: TenantId::parse(tenant).ok_or_else(|| bad("tenant id in the key"))?,
            document_id: crate::types::DocumentId::parse(document)
                .ok_or_else(|| bad("document id in the key"))?,
            ordinal: f.ordinal,
            text: f.text,
            page: f.page,
            headings: f.headings,
            token_count: f.token_count,
            embedding_model: f.embedding_model,
        })
    }
}

/// A record row as backups and tenant exports carry it: JSON whatever the store keeps (a
/// compact chunk is written out as the JSON it stands for), so archives read the same across
/// versions. `None`: the stored bytes are that JSON already.
pub(crate) fn export_value(
    table: &str,
    tenant: &str,
    id: &str,
    bytes: &[u8],
) -> Result<Option<Vec<u8>>> {
    if table != Chunk::TABLE.name() || !codec::is_compact(bytes) {
        return Ok(None);
    }
    let chunk: Chunk = decode(tenant, id, bytes)?;
    serde_json::to_vec(&chunk)
        .map(Some)
        .map_err(|source| Error::Corrupt {
            table: Chunk::TABLE.name(),
            source,
        })
}

/// The bytes to store for a record row coming from an archive or another store (see
/// [`export_value`]): a chunk in schema 14's JSON layout is compacted; anything else (other
/// tables, a chunk of an older layout, which a migration step upgrades) is kept as it is.
pub(crate) fn import_value(table: &str, tenant: &str, id: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    if table != Chunk::TABLE.name() || codec::is_compact(bytes) {
        return None;
    }
    codec::compact_v14_json(tenant, id, bytes)
}
record!(Channel, "channels", |r| r.id.to_string(), counted);
record!(Conversation, "conversations", |r| r.id.to_string());
record!(Message, "messages", |r| format!(
    "{}/{}",
    r.conversation_id, r.id
));
record!(Visitor, "visitors", |r| r.id.to_string());
record!(ReadMark, "read_marks", |r| format!(
    "{}/{}",
    r.conversation_id, r.user_id
));
record!(Subscription, "subscriptions", |r| r.id.to_string());
record!(Plan, "plans", |r| r.id.to_string());
record!(TenantPlan, "tenant_plans", |_r| String::new());
record!(AnalyticsEvent, "analytics_events", |r| r.id.to_string());
record!(AnalyticsRollup, "analytics_rollups", |r| format!(
    "{}/{}",
    r.dim, r.bucket
));
record!(ConversationStats, "analytics_conversations", |r| r
    .conversation_id
    .to_string());
record!(KnowledgeGap, "analytics_gaps", |r| gap_key(
    &r.created_at,
    &r.id
));

/// The store key of a knowledge gap: its time first (13-digit unix ms), so a time range
/// is a key range.
pub fn gap_key(at: &time::OffsetDateTime, id: &crate::types::AnalyticsEventId) -> String {
    let ms = (at.unix_timestamp_nanos() / 1_000_000).max(0);
    format!("{ms:013}-{id}")
}
record!(Job, "jobs", |r| r.id.to_string());
record!(InboundEvent, "inbound_events", |r| format!(
    "{}/{}",
    r.channel_id, r.id
));
record!(AuditRecord, "audit_log", |r| r.id.to_string());

/// Every record table; used by migrations and by whole-tenant operations.
pub(crate) const RECORD_TABLES: &[RecordTable] = &[
    Tenant::TABLE,
    TenantSettings::TABLE,
    User::TABLE,
    Session::TABLE,
    Invitation::TABLE,
    PasswordReset::TABLE,
    ApiKey::TABLE,
    Agent::TABLE,
    AgentAnalytics::TABLE,
    Document::TABLE,
    Chunk::TABLE,
    Channel::TABLE,
    Conversation::TABLE,
    Message::TABLE,
    Visitor::TABLE,
    ReadMark::TABLE,
    Subscription::TABLE,
    Plan::TABLE,
    TenantPlan::TABLE,
    AnalyticsEvent::TABLE,
    AnalyticsRollup::TABLE,
    ConversationStats::TABLE,
    KnowledgeGap::TABLE,
    Job::TABLE,
    InboundEvent::TABLE,
    AuditRecord::TABLE,
];

/// Unique lookups. Values are `tenantId/id`; keys of tenant-scoped indexes start with
/// `tenantId/` themselves.
#[derive(Clone, Copy, Debug)]
pub enum Index {
    /// lower-cased email -> user (emails are unique across the install: login is by email).
    UserEmail,
    /// keyed hash of an API key -> key
    ApiKeyHash,
    /// keyed hash of an invitation token -> invitation
    InvitationToken,
    /// keyed hash of a reset token -> password reset
    ResetToken,
    /// `tenantId/slug` -> agent
    AgentSlug,
    /// `tenantId/sha256` -> document
    DocumentSha,
    /// job id -> `tenantId/jobId` for every queued or running job (FIFO by UUIDv7 id).
    JobQueue,
    /// `tenantId/conversationId/clientId` -> `tenantId/conversationId/messageId`: the
    /// message a sender's idempotency key already stored.
    MessageClientId,
    /// public widget key -> `tenantId/channelId` (unique across the install).
    WidgetKey,
    /// keyed hash of a visitor token -> `tenantId/visitorId`
    VisitorToken,
    /// `tenantId/channelId/externalId` (verified identity) -> `tenantId/visitorId`
    VisitorExternal,
    /// channel id -> `tenantId/channelId` for channels with a provider webhook (the
    /// webhook URL names only the channel).
    ChannelWebhook,
    /// `tenantId/channelId/providerId` (Telegram update_id, Meta wamid/mid) ->
    /// `tenantId/channelId/inboundId`: a provider's retry is recognised and stores nothing.
    InboundExternal,
    /// `tenantId/channelId/contactId` (the provider's chat or sender id) ->
    /// `tenantId/conversationId`: the contact's latest conversation.
    ChannelContact,
    /// audit entry id -> `tenantId/id`: every tenant's audit log in time order, for the
    /// platform admin's view and the retention sweep.
    AuditTime,
}

impl Index {
    pub(crate) const ALL: [Index; 15] = [
        Index::UserEmail,
        Index::ApiKeyHash,
        Index::InvitationToken,
        Index::ResetToken,
        Index::AgentSlug,
        Index::DocumentSha,
        Index::JobQueue,
        Index::MessageClientId,
        Index::WidgetKey,
        Index::VisitorToken,
        Index::VisitorExternal,
        Index::ChannelWebhook,
        Index::InboundExternal,
        Index::ChannelContact,
        Index::AuditTime,
    ];
    pub(crate) fn table(self) -> IndexTable {
        match self {
            Index::UserEmail => TableDefinition::new("idx_user_email"),
            Index::ApiKeyHash => TableDefinition::new("idx_api_key_hash"),
            Index::InvitationToken => TableDefinition::new("idx_invitation_token"),
            Index::ResetToken => TableDefinition::new("idx_reset_token"),
            Index::AgentSlug => TableDefinition::new("idx_agent_slug"),
            Index::DocumentSha => TableDefinition::new("idx_document_sha"),
            Index::JobQueue => TableDefinition::new("idx_job_queue"),
            Index::MessageClientId => TableDefinition::new("idx_message_client_id"),
            Index::WidgetKey => TableDefinition::new("idx_widget_key"),
            Index::VisitorToken => TableDefinition::new("idx_visitor_token"),
            Index::VisitorExternal => TableDefinition::new("idx_visitor_external"),
            Index::ChannelWebhook => TableDefinition::new("idx_channel_webhook"),
            Index::InboundExternal => TableDefinition::new("idx_inbound_external"),
            Index::ChannelContact => TableDefinition::new("idx_channel_contact"),
            Index::AuditTime => TableDefinition::new("idx_audit_time"),
        }
    }
}

/// Splits an index value `tenantId/id`.
pub fn split_ref(v: &str) -> Option<(TenantId, &str)> {
    let (t, id) = v.split_once('/')?;
    Some((TenantId::parse(t)?, id))
}

pub fn make_ref(tenant: &TenantId, id: &str) -> String {
    format!("{tenant}/{id}")
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The key id to pass as `after` for the next page; `None` at the end.
    pub next: Option<String>,
}

type KeyBound<'a> = Bound<(&'a str, &'a str)>;

/// Key bounds covering exactly one tenant's rows, optionally under a `parent/` prefix.
fn tenant_bounds<'a>(
    tenant: &'a str,
    prefix: &'a str,
    upper_tenant: &'a str,
    upper_prefix: &'a str,
) -> (KeyBound<'a>, KeyBound<'a>) {
    if prefix.is_empty() {
        (
            Bound::Included((tenant, "")),
            Bound::Excluded((upper_tenant, "")),
        )
    } else {
        (
            Bound::Included((tenant, prefix)),
            Bound::Excluded((tenant, upper_prefix)),
        )
    }
}

/// A record from its key and stored bytes.
fn decode<R: Record>(tenant: &str, id: &str, bytes: &[u8]) -> Result<R> {
    R::from_stored(tenant, id, bytes).map_err(|source| Error::Corrupt {
        table: R::TABLE.name(),
        source,
    })
}

/// Free pages worth a compaction at open: at least this share of the file...
const COMPACT_FREE_SHARE: f64 = 0.2;
/// ...and at least this many bytes (a small store is not worth the wait).
const COMPACT_FREE_MIN: u64 = 32 << 20;

/// META key: the file's size when its free pages were last counted.
const FREE_CHECKED_AT: &str = "free_pages_checked_at_bytes";

/// Bytes the store file takes on the disk: its length less the holes in it. redb grows the
/// file by doubling it (up to 4 GiB) and only extends it, so a file that just grew is half
/// hole, which takes no room and which no compaction is needed for.
fn on_disk(meta: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (meta.blocks() * 512).min(meta.len())
    }
    #[cfg(not(unix))]
    {
        meta.len()
    }
}

/// The store file's bytes on the disk (see [`on_disk`]) and how many of them are in no page
/// redb has allocated (freed by deletes and copy-on-write commits, reused by later writes,
/// never given back without a compaction), or `None` when not worth counting: counting
/// reads every page of the file, so it happens only once the file has grown by a quarter
/// since the last count (recorded before a compaction, so a compacted file is counted again
/// past 5/4 of its size before it).
fn free_bytes(db: &redb::Database, path: &Path) -> Result<Option<(u64, u64)>> {
    let meta = std::fs::metadata(path).ok();
    let file = meta.as_ref().map_or(0, |m| m.len());
    if file < 2 * COMPACT_FREE_MIN {
        return Ok(None);
    }
    let tx = db.begin_write()?;
    let checked = tx
        .open_table(META)?
        .get(FREE_CHECKED_AT)?
        .map(|v| v.value());
    if checked.is_some_and(|c| file <= c + c / 4) {
        tx.abort()?;
        return Ok(None);
    }
    let stats = tx.stats()?;
    let used = stats.allocated_pages() * stats.page_size() as u64;
    tx.open_table(META)?.insert(FREE_CHECKED_AT, file)?;
    tx.commit()?;
    let written = meta.as_ref().map_or(file, on_disk);
    Ok(Some((written, written.saturating_sub(used))))
}

/// Whether a file of `file` bytes with `free` of them unused is worth compacting at open.
fn worth_compacting(file: u64, free: u64) -> bool {
    free >= COMPACT_FREE_MIN && free as f64 >= COMPACT_FREE_SHARE * file as f64
}

/// Compacts the store file: redb reuses freed pages but never gives them back to the file
/// system, so a migration that rewrote every chunk or a large delete would otherwise leave
/// the file at its largest for good. (A bulk load's copy-on-write commits free as many pages
/// as they write, but the next commits reuse them: 100k chunks left 0.1 MiB free.) Needs
/// exclusive access, so it runs at open, before anything is served.
fn compact(db: &mut redb::Database, path: &Path, why: &str) -> Result<()> {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let before = size(path);
    tracing::info!(path = %path.display(), bytes = before, why, "compacting the store");
    let started = std::time::Instant::now();
    // Moves pages down until nothing moves (redb loops inside), then trims the file.
    db.compact().map_err(|e| Error::Db(e.into()))?;
    tracing::info!(
        path = %path.display(),
        before,
        after = size(path),
        ms = started.elapsed().as_millis() as u64,
        "compacted the store"
    );
    // No write here: a commit right after compacting takes fresh pages at the end of the
    // file again (measured: a 9.9 MB file back to 19.8 MB).
    Ok(())
}

/// The embedded database of one data directory.
pub struct Store {
    /// The database, reopened after a disk error (see `disk`).
    db: disk::Db,
    path: PathBuf,
    pins: dump::Pins,
    /// Shares one fsync among the writes committed at the same time (see `group`).
    flush: group::Flush,
    /// Who gets the write transaction next (see `gate`).
    gate: gate::Gate,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) `<dir>/aigentable.redb` and runs pending migrations. A store written
    /// by a newer version is refused.
    pub fn open(dir: &Path, cache_bytes: usize) -> Result<Self> {
        let path = dir.join("aigentable.redb");
        make_private(dir, &path).map_err(|e| Error::Db(redb::StorageError::Io(e).into()))?;
        let mut db = disk::open_db(&path, cache_bytes)?;
        if migrate::run(&db, &path)? {
            compact(&mut db, &path, "a migration rewrote records")?;
        } else {
            // Pages written and freed since, not the hole a growth left (after a bulk load
            // of 100k chunks: a 272 MiB file, 163.5 MiB of it on disk, was compacted to
            // 163.4 MiB at the next start, which took ~50 s longer; BENCHMARKS.md, session 11).
            if free_bytes(&db, &path)?.is_some_and(|(file, free)| worth_compacting(file, free)) {
                compact(&mut db, &path, "much of the file is free pages")?;
            }
        }
        Ok(Store {
            db: disk::Db::new(db, cache_bytes),
            path,
            pins: Default::default(),
            flush: Default::default(),
            gate: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version on disk.
    pub fn schema_version(&self) -> Result<u64> {
        let tx = self.begin_read()?;
        let meta = tx.open_table(META)?;
        Ok(meta.get("schema_version")?.map(|v| v.value()).unwrap_or(0))
    }

    /// What each non-empty record table (and the vectors table) holds, for the memory and
    /// disk benchmarks: rows, the bytes of their keys and values, and the pages redb uses.
    pub fn table_sizes(&self) -> Result<Vec<TableSize>> {
        let tx = self.begin_read()?;
        let mut out = Vec::new();
        for def in RECORD_TABLES.iter().chain([&CHUNK_VECTORS]) {
            let t = match tx.open_table(*def) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let rows = t.len()?;
            if rows == 0 {
                continue;
            }
            let st = t.stats()?;
            out.push(TableSize {
                name: def.name().to_string(),
                rows,
                stored_bytes: st.stored_bytes(),
                metadata_bytes: st.metadata_bytes(),
                fragmented_bytes: st.fragmented_bytes(),
                pages: st.leaf_pages() + st.branch_pages(),
            });
        }
        Ok(out)
    }

    /// Reads inside one consistent snapshot.
    pub fn read<T>(&self, f: impl FnOnce(&ReadTx) -> Result<T>) -> Result<T> {
        let tx = ReadTx(self.begin_read()?);
        f(&tx)
    }

    /// Runs `f` in one write transaction, committed (durably) only when `f` returns `Ok`.
    /// Errors of type `E` (a caller's domain error) abort the transaction as well.
    ///
    /// Returns once the commit is on the disk. Writes committed at the same time share one
    /// fsync (group commit, see `group`): under concurrent load a write costs its own
    /// commit plus a share of one fsync, not an fsync each. A transaction that wrote nothing
    /// is not committed and waits for no fsync of its own, only (when needed) for the
    /// commits it read to be durable.
    pub fn write<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&WriteTx) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.write_with(false, f)
    }

    /// [`write`](Self::write) that goes before the writers waiting without urgency: for
    /// what a client is waiting on under a deadline (a provider's webhook, acknowledged
    /// only once stored), while job bookkeeping can wait its turn.
    pub fn write_urgent<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&WriteTx) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.write_with(true, f)
    }

    fn write_with<T, E: From<Error>>(
        &self,
        urgent: bool,
        f: impl FnOnce(&WriteTx) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        // Refused before redb sees a full or read-only disk (which would fail the database
        // for reads too): see `disk`.
        self.check_space(0)?;
        let asked = std::time::Instant::now();
        let turn = self.gate.enter(urgent);
        let mut tx = self.begin_write()?;
        metrics::histogram!("store_write_wait_seconds", "urgent" => if urgent { "yes" } else { "no" })
            .record(asked.elapsed().as_secs_f64());
        let epoch = self.db.epoch();
        tx.set_durability(redb::Durability::None)
            .map_err(|e| Error::Db(e.into()))?;
        let tx = WriteTx(tx, Cell::new(false));
        let out = f(&tx)?;
        let ticket = if tx.1.get() {
            // Handed out before the commit, with the transaction open: a transaction that
            // begins later finds every commit it can read covered by `last()`.
            let ticket = self.flush.committed(epoch);
            let committed = tx.0.commit().map_err(Error::from);
            committed.map_err(|e| self.db.note(e))?;
            metrics::counter!("store_commits_total").increment(1);
            ticket
        } else {
            // Nothing written: no commit and no fsync of its own. What `f` read may still be
            // a commit that is not durable yet (a webhook stored a moment ago, found again by
            // the provider's retry), so the answer waits for it as a write would: usually it
            // is durable already and this returns at once.
            let seen = self.flush.seen(epoch);
            drop(tx);
            metrics::counter!("store_noop_writes_total").increment(1);
            seen
        };
        drop(turn);
        let committed = std::time::Instant::now();
        self.flush.wait(ticket, || self.sync())?;
        metrics::histogram!("store_durable_wait_seconds").record(committed.elapsed().as_secs_f64());
        Ok(out)
    }

    /// One durable commit (empty: it makes every commit before it durable); the database
    /// epoch it was made in and the last commit ticket it covers.
    fn sync(&self) -> Result<(u64, u64)> {
        // Every writer that committed is waiting for this one: it goes first.
        let _turn = self.gate.enter(true);
        let tx = self.begin_write()?;
        let epoch = self.db.epoch();
        // Read with the transaction open: every ticket up to here belongs to a transaction
        // that has ended (committed, or failed and harmless), so this commit covers them.
        let upto = self.flush.last();
        tx.commit().map_err(|e| self.db.note(e.into()))?;
        metrics::counter!("store_syncs_total").increment(1);
        Ok((epoch, upto))
    }
}

macro_rules! read_ops {
    () => {
        /// One record by tenant and key id.
        pub fn get<R: Record>(&self, tenant: &TenantId, id: &str) -> Result<Option<R>> {
            let t = self.0.open_table(R::TABLE)?;
            match t.get((tenant.as_str(), id))? {
                Some(v) => Ok(Some(decode(tenant.as_str(), id, v.value())?)),
                None => Ok(None),
            }
        }

        /// Up to `limit` records of a tenant (under `parent/` when given) after key id `after`,
        /// oldest first, or newest first with `reverse`.
        pub fn list<R: Record>(
            &self,
            tenant: &TenantId,
            parent: Option<&str>,
            after: Option<&str>,
            limit: usize,
            reverse: bool,
        ) -> Result<Page<R>> {
            self.list_filtered(tenant, parent, after, limit, reverse, |_: &R| true)
        }

        /// Like `list`, keeping only records that pass `keep` (the page is still `limit` long).
        pub fn list_filtered<R: Record>(
            &self,
            tenant: &TenantId,
            parent: Option<&str>,
            after: Option<&str>,
            limit: usize,
            reverse: bool,
            mut keep: impl FnMut(&R) -> bool,
        ) -> Result<Page<R>> {
            let t = self.0.open_table(R::TABLE)?;
            let upper_tenant = format!("{tenant}\0");
            let prefix = parent.map(|p| format!("{p}/")).unwrap_or_default();
            let upper_prefix = parent.map(|p| format!("{p}0")).unwrap_or_default();
            let (mut lo, mut hi) =
                tenant_bounds(tenant.as_str(), &prefix, &upper_tenant, &upper_prefix);
            if let Some(a) = after {
                if reverse {
                    hi = Bound::Excluded((tenant.as_str(), a));
                } else {
                    lo = Bound::Excluded((tenant.as_str(), a));
                }
            }
            let iter = t.range::<(&str, &str)>((lo, hi))?;
            let mut items = Vec::with_capacity(limit.min(256));
            let mut last_key = None;
            let mut more = false;
            let mut step = |entry: std::result::Result<
                (
                    redb::AccessGuard<'_, (&str, &str)>,
                    redb::AccessGuard<'_, &[u8]>,
                ),
                redb::StorageError,
            >|
             -> Result<bool> {
                let (k, v) = entry?;
                let (tn, id) = k.value();
                let rec: R = decode(tn, id, v.value())?;
                if !keep(&rec) {
                    return Ok(true);
                }
                if items.len() == limit {
                    more = true;
                    return Ok(false);
                }
                last_key = Some(k.value().1.to_string());
                items.push(rec);
                Ok(true)
            };
            if reverse {
                for e in iter.rev() {
                    if !step(e)? {
                        break;
                    }
                }
            } else {
                for e in iter {
                    if !step(e)? {
                        break;
                    }
                }
            }
            Ok(Page {
                items,
                next: if more { last_key } else { None },
            })
        }

        /// Every record of a tenant (under `parent/`) that passes `keep`.
        pub fn scan<R: Record>(
            &self,
            tenant: &TenantId,
            parent: Option<&str>,
            keep: impl FnMut(&R) -> bool,
        ) -> Result<Vec<R>> {
            Ok(self
                .list_filtered(tenant, parent, None, usize::MAX, false, keep)?
                .items)
        }

        /// The stored vector of a chunk (by tenant and [`chunk_key`]), if it has one.
        pub fn vector(&self, tenant: &TenantId, key: &str) -> Result<Option<Vec<f32>>> {
            let t = self.0.open_table(CHUNK_VECTORS)?;
            match t.get((tenant.as_str(), key))? {
                Some(v) => Ok(Some(vector_from_bytes(v.value())?)),
                None => Ok(None),
            }
        }

        /// Calls `f` with the [`chunk_key`] and vector of every chunk of a tenant that has
        /// one, in key order (one vector in memory at a time).
        pub fn for_each_vector(
            &self,
            tenant: &TenantId,
            mut f: impl FnMut(&str, Vec<f32>) -> Result<()>,
        ) -> Result<()> {
            let t = self.0.open_table(CHUNK_VECTORS)?;
            let upper = format!("{tenant}\0");
            for e in t.range::<(&str, &str)>((
                Bound::Included((tenant.as_str(), "")),
                Bound::Excluded((upper.as_str(), "")),
            ))? {
                let (k, v) = e?;
                f(k.value().1, vector_from_bytes(v.value())?)?;
            }
            Ok(())
        }

        /// [`for_each_vector`](Self::for_each_vector) with the vector as stored: IEEE half
        /// bits (no conversion, no allocation per vector).
        pub fn for_each_vector_halves(
            &self,
            tenant: &TenantId,
            mut f: impl FnMut(&str, &[u16]),
        ) -> Result<()> {
            let t = self.0.open_table(CHUNK_VECTORS)?;
            let upper = format!("{tenant}\0");
            let mut halves = Vec::new();
            for e in t.range::<(&str, &str)>((
                Bound::Included((tenant.as_str(), "")),
                Bound::Excluded((upper.as_str(), "")),
            ))? {
                let (k, v) = e?;
                let bytes = v.value();
                if !bytes.len().is_multiple_of(2) {
                    vector_from_bytes(bytes)?;
                }
                halves.clear();
                halves.extend(
                    bytes
                        .chunks_exact(2)
                        .map(|h| u16::from_le_bytes([h[0], h[1]])),
                );
                f(k.value().1, &halves);
            }
            Ok(())
        }

        /// How many rows of a counted table (`R::COUNTED`) the tenant has. O(1).
        pub fn count<R: Record>(&self, tenant: &TenantId) -> Result<u64> {
            debug_assert!(
                R::COUNTED,
                "BUG: {} is not a counted table",
                R::TABLE.name()
            );
            let c = self.0.open_table(COUNTS)?;
            Ok(c.get((tenant.as_str(), R::TABLE.name()))?
                .map(|v| v.value())
                .unwrap_or(0))
        }

        /// The sum of `weight()` over a tenant's rows of a counted table. O(1).
        pub fn weight_sum<R: Record>(&self, tenant: &TenantId) -> Result<u64> {
            let c = self.0.open_table(COUNTS)?;
            let key = weight_key(R::TABLE.name());
            Ok(c.get((tenant.as_str(), key.as_str()))?
                .map(|v| v.value())
                .unwrap_or(0))
        }

        /// How many records of a whole table (all tenants) pass `keep`. A full scan: for
        /// small platform-wide tables and rare operator actions only.
        pub fn count_where<R: Record>(&self, mut keep: impl FnMut(&R) -> bool) -> Result<u64> {
            let t = self.0.open_table(R::TABLE)?;
            let mut n = 0;
            for e in t.iter()? {
                let (k, v) = e?;
                let (tn, id) = k.value();
                if keep(&decode::<R>(tn, id, v.value())?) {
                    n += 1;
                }
            }
            Ok(n)
        }

        /// Every record of a tenant whose key id is in `[from, to)`, in key order (for
        /// records keyed by a sortable prefix: analytics buckets, time-keyed events).
        pub fn range<R: Record>(&self, tenant: &TenantId, from: &str, to: &str) -> Result<Vec<R>> {
            let t = self.0.open_table(R::TABLE)?;
            let mut out = Vec::new();
            if from >= to {
                return Ok(out);
            }
            for e in t.range::<(&str, &str)>((tenant.as_str(), from)..(tenant.as_str(), to))? {
                let (k, v) = e?;
                let (tn, id) = k.value();
                out.push(decode(tn, id, v.value())?);
            }
            Ok(out)
        }

        /// Number of records in a whole table (all tenants).
        pub fn count_all<R: Record>(&self) -> Result<u64> {
            Ok(self.0.open_table(R::TABLE)?.len()?)
        }

        /// Every tenant record, oldest first, after `after`.
        pub fn tenants(&self, after: Option<&str>, limit: usize) -> Result<Page<Tenant>> {
            let t = self.0.open_table(Tenant::TABLE)?;
            let lo = match after {
                Some(a) => Bound::Excluded((a, "")),
                None => Bound::Unbounded,
            };
            let mut items = Vec::new();
            let mut more = false;
            for e in t.range::<(&str, &str)>((lo, Bound::Unbounded))? {
                let (k, v) = e?;
                if items.len() == limit {
                    more = true;
                    break;
                }
                let (tn, id) = k.value();
                items.push(decode::<Tenant>(tn, id, v.value())?);
            }
            let next = if more {
                items.last().map(|t: &Tenant| t.id.to_string())
            } else {
                None
            };
            Ok(Page { items, next })
        }

        /// The `tenantId/id` stored under `key` in a unique index.
        pub fn index_get(&self, index: Index, key: &str) -> Result<Option<String>> {
            let t = self.0.open_table(index.table())?;
            Ok(t.get(key)?.map(|v| v.value().to_string()))
        }

        /// Up to `limit` entries of an index in key order, after `after`.
        pub fn index_entries(
            &self,
            index: Index,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<(String, String)>> {
            let t = self.0.open_table(index.table())?;
            let lo = match after {
                Some(a) => Bound::Excluded(a),
                None => Bound::Unbounded,
            };
            let mut out = Vec::new();
            for e in t.range::<&str>((lo, Bound::Unbounded))? {
                let (k, v) = e?;
                out.push((k.value().to_string(), v.value().to_string()));
                if out.len() == limit {
                    break;
                }
            }
            Ok(out)
        }

        /// How many rows (records and index entries) still mention this tenant. Zero after
        /// the tenant is deleted.
        pub fn tenant_footprint(&self, tenant: &TenantId) -> Result<u64> {
            let mut n = 0;
            let upper = format!("{tenant}\0");
            for def in RECORD_TABLES.iter().chain([&CHUNK_VECTORS]) {
                let t = self.0.open_table(*def)?;
                n += t
                    .range::<(&str, &str)>((
                        Bound::Included((tenant.as_str(), "")),
                        Bound::Excluded((upper.as_str(), "")),
                    ))?
                    .count() as u64;
            }
            n += self
                .0
                .open_table(COUNTS)?
                .range::<(&str, &str)>((
                    Bound::Included((tenant.as_str(), "")),
                    Bound::Excluded((upper.as_str(), "")),
                ))?
                .count() as u64;
            let needle = format!("{tenant}/");
            for idx in Index::ALL {
                let t = self.0.open_table(idx.table())?;
                for e in t.iter()? {
                    let (k, v) = e?;
                    if k.value().starts_with(&needle) || v.value().starts_with(&needle) {
                        n += 1;
                    }
                }
            }
            Ok(n)
        }
    };
}

/// A read snapshot.
pub struct ReadTx(redb::ReadTransaction);

impl ReadTx {
    read_ops!();
}

/// A write transaction; see [`Store::write`]. The flag records that something was written
/// (set by every method that changes a table), so a transaction that wrote nothing is
/// dropped instead of committed.
pub struct WriteTx(redb::WriteTransaction, Cell<bool>);

impl WriteTx {
    read_ops!();

    /// Notes that this transaction changed a table: it must be committed.
    fn wrote(&self) {
        self.1.set(true);
    }

    /// Inserts or replaces a record.
    pub fn put<R: Record>(&self, rec: &R) -> Result<()> {
        let bytes = rec.to_stored().map_err(|source| Error::Corrupt {
            table: R::TABLE.name(),
            source,
        })?;
        let mut t = self.0.open_table(R::TABLE)?;
        self.wrote();
        let key = rec.key_id();
        let old_weight = match t.insert((rec.tenant().as_str(), key.as_str()), bytes.as_slice())? {
            Some(v) if R::COUNTED => Some(Some(
                decode::<R>(rec.tenant().as_str(), &key, v.value())?.weight(),
            )),
            Some(_) => Some(None),
            None => None,
        };
        drop(t);
        if R::COUNTED {
            let old_weight = old_weight.map(|w| w.unwrap_or(0));
            let (rows, weight) = match old_weight {
                None => (1, rec.weight() as i128),
                Some(w) => (0, rec.weight() as i128 - w as i128),
            };
            self.add_count::<R>(rec.tenant(), rows, weight)?;
        }
        Ok(())
    }

    /// Stores the vector of a chunk (replacing any it had), as halves; see
    /// [`CHUNK_VECTORS`]. Deleting the chunk deletes it.
    pub fn put_vector(&self, chunk: &Chunk, v: &[f32]) -> Result<()> {
        let mut t = self.0.open_table(CHUNK_VECTORS)?;
        self.wrote();
        t.insert(
            (chunk.tenant().as_str(), chunk.key_id().as_str()),
            vector_bytes(v).as_slice(),
        )?;
        Ok(())
    }

    /// Adds to a tenant's row count and weight sum of table `R` (saturating at zero).
    fn add_count<R: Record>(&self, tenant: &TenantId, rows: i128, weight: i128) -> Result<()> {
        let mut c = self.0.open_table(COUNTS)?;
        let name = R::TABLE.name();
        let wk = weight_key(name);
        for (key, delta) in [(name, rows), (wk.as_str(), weight)] {
            if delta == 0 {
                continue;
            }
            let cur = c
                .get((tenant.as_str(), key))?
                .map(|v| v.value())
                .unwrap_or(0);
            let next = (cur as i128 + delta).clamp(0, u64::MAX as i128) as u64;
            self.wrote();
            if next == 0 {
                c.remove((tenant.as_str(), key))?;
            } else {
                c.insert((tenant.as_str(), key), next)?;
            }
        }
        Ok(())
    }

    /// Removes a record; true when it existed.
    pub fn delete<R: Record>(&self, tenant: &TenantId, id: &str) -> Result<bool> {
        let mut t = self.0.open_table(R::TABLE)?;
        let weight = match t.remove((tenant.as_str(), id))? {
            None => return Ok(false),
            Some(old) if R::COUNTED => decode::<R>(tenant.as_str(), id, old.value())?.weight(),
            Some(_) => 0,
        };
        self.wrote();
        drop(t);
        if R::VECTORS {
            self.0
                .open_table(CHUNK_VECTORS)?
                .remove((tenant.as_str(), id))?;
        }
        if R::COUNTED {
            self.add_count::<R>(tenant, -1, -(weight as i128))?;
        }
        Ok(true)
    }

    /// Removes every record of a tenant under `parent/`. Returns how many.
    pub fn delete_under<R: Record>(&self, tenant: &TenantId, parent: &str) -> Result<u64> {
        let mut t = self.0.open_table(R::TABLE)?;
        let prefix = format!("{parent}/");
        let upper = format!("{parent}0");
        let mut n = 0;
        let mut w: u64 = 0;
        let mut bad = None;
        t.retain_in::<(&str, &str), _>(
            (tenant.as_str(), prefix.as_str())..(tenant.as_str(), upper.as_str()),
            |k, v| {
                n += 1;
                if R::COUNTED {
                    match decode::<R>(k.0, k.1, v) {
                        Ok(r) => w = w.saturating_add(r.weight()),
                        Err(e) => bad = Some(e),
                    }
                }
                false
            },
        )?;
        if let Some(e) = bad {
            return Err(e);
        }
        if n > 0 {
            self.wrote();
        }
        if R::VECTORS {
            // Also the vectors of chunks whose record is gone (none should be).
            let mut v = self.0.open_table(CHUNK_VECTORS)?;
            let mut gone = 0;
            v.retain_in::<(&str, &str), _>(
                (tenant.as_str(), prefix.as_str())..(tenant.as_str(), upper.as_str()),
                |_, _| {
                    gone += 1;
                    false
                },
            )?;
            if gone > 0 {
                self.wrote();
            }
        }
        if R::COUNTED && n > 0 {
            drop(t);
            self.add_count::<R>(tenant, -(n as i128), -(w as i128))?;
        }
        Ok(n)
    }

    /// Sets a unique index entry; false (and nothing written) when the key is taken.
    pub fn index_insert_new(&self, index: Index, key: &str, value: &str) -> Result<bool> {
        let mut t = self.0.open_table(index.table())?;
        if t.get(key)?.is_some() {
            return Ok(false);
        }
        self.wrote();
        t.insert(key, value)?;
        Ok(true)
    }

    pub fn index_remove(&self, index: Index, key: &str) -> Result<()> {
        let mut t = self.0.open_table(index.table())?;
        if t.remove(key)?.is_some() {
            self.wrote();
        }
        Ok(())
    }

    /// Removes every record and index entry of a tenant. Returns the number of rows removed.
    pub fn delete_tenant(&self, tenant: &TenantId) -> Result<u64> {
        let mut n = 0;
        let upper = format!("{tenant}\0");
        for def in RECORD_TABLES.iter().chain([&CHUNK_VECTORS]) {
            let mut t = self.0.open_table(*def)?;
            t.retain_in::<(&str, &str), _>((tenant.as_str(), "")..(upper.as_str(), ""), |_, _| {
                n += 1;
                false
            })?;
        }
        {
            let mut c = self.0.open_table(COUNTS)?;
            c.retain_in::<(&str, &str), _>((tenant.as_str(), "")..(upper.as_str(), ""), |_, _| {
                n += 1;
                false
            })?;
        }
        let needle = format!("{tenant}/");
        for idx in Index::ALL {
            let mut t = self.0.open_table(idx.table())?;
            t.retain(|k, v| {
                let hit = k.starts_with(&needle) || v.starts_with(&needle);
                n += hit as u64;
                !hit
            })?;
        }
        if n > 0 {
            self.wrote();
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
