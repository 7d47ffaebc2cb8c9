//! Raw table access for backups and tenant moves: every row of every table read out of one
//! consistent snapshot, and rows written back into a store. It knows nothing of archives (that
//! is `crate::backup`) and nothing of record types: rows travel as the bytes the store keeps,
//! except compact chunk records (schema 15), which travel as the JSON they stand for and are
//! compacted again when written (`export_value`, `import_value`).

use super::{Error, META, RECORD_TABLES, Result, Store};
use crate::types::TenantId;
use redb::{ReadableTable, TableDefinition, TableHandle};
use std::ops::Bound;
use std::path::Path;

/// The key and value types of a table; every table of the store is one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `(tenantId, id) -> JSON bytes` (as rows travel; the store keeps chunks compact)
    Record,
    /// `key -> "tenantId/id"`
    Index,
    /// `name -> u64` (the `meta` table: schema version)
    Meta,
    /// `(tenantId, table) -> u64` (the per-tenant row counts of counted tables)
    Count,
    /// `(tenantId, id) -> raw bytes`, not JSON (`chunk_vectors`: little-endian halves)
    Bytes,
}

/// One row as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Record {
        tenant: String,
        id: String,
        value: Vec<u8>,
    },
    Index {
        key: String,
        value: String,
    },
    Meta {
        key: String,
        value: u64,
    },
    Count {
        tenant: String,
        name: String,
        value: u64,
    },
    Bytes {
        tenant: String,
        id: String,
        value: Vec<u8>,
    },
}

/// Every table this build knows, with its kind, in a fixed order (records first).
pub fn tables() -> Vec<(String, Kind)> {
    let mut v: Vec<(String, Kind)> = RECORD_TABLES
        .iter()
        .map(|t| (t.name().to_string(), Kind::Record))
        .collect();
    v.extend(
        super::Index::ALL
            .iter()
            .map(|i| (i.table().name().to_string(), Kind::Index)),
    );
    v.push((super::CHUNK_VECTORS.name().to_string(), Kind::Bytes));
    v.push((super::COUNTS.name().to_string(), Kind::Count));
    v.push((META.name().to_string(), Kind::Meta));
    v
}

type RecordDef<'a> = TableDefinition<'a, (&'static str, &'static str), &'static [u8]>;
type IndexDef<'a> = TableDefinition<'a, &'static str, &'static str>;
type MetaDef<'a> = TableDefinition<'a, &'static str, u64>;
type CountDef<'a> = TableDefinition<'a, (&'static str, &'static str), u64>;

/// The rows of one tenant in a table keyed `(tenantId, id)`, in key order (every row
/// without a tenant).
fn tenant_range<'t, V: redb::Value + 'static>(
    t: &'t redb::ReadOnlyTable<(&'static str, &'static str), V>,
    tenant: Option<&TenantId>,
) -> Result<redb::Range<'t, (&'static str, &'static str), V>> {
    let range = match tenant {
        Some(tid) => {
            let upper = format!("{tid}\0");
            t.range::<(&str, &str)>((
                Bound::Included((tid.as_str(), "")),
                Bound::Excluded((upper.as_str(), "")),
            ))
        }
        None => t.range::<(&str, &str)>(..),
    };
    range.map_err(Error::from)
}

fn kind_of(name: &str) -> Option<Kind> {
    tables()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| k)
}

/// A read snapshot for dumping: what every table held at one commit.
pub struct Snapshot(redb::ReadTransaction);

impl Store {
    /// Opens a snapshot; writers carry on meanwhile (redb MVCC), and nothing they commit
    /// later is seen through it.
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot(self.begin_read()?))
    }
}

impl Snapshot {
    /// The tables in the file, with their kinds. A table this build does not know is an
    /// error: a backup that silently left one out would lose data.
    pub fn tables(&self) -> Result<Vec<(String, Kind)>> {
        let mut out = Vec::new();
        for t in self.0.list_tables()? {
            let name = t.name().to_string();
            match kind_of(&name) {
                Some(k) => out.push((name, k)),
                None => return Err(Error::UnknownTable(name)),
            }
        }
        // The documented order (records, indexes, meta), so archives are diffable.
        let order = tables();
        out.sort_by_key(|(n, _)| order.iter().position(|(o, _)| o == n));
        Ok(out)
    }

    /// Calls `f` with every row of `table` in key order; with `tenant`, only that tenant's
    /// rows (its key range in record tables; entries whose key or value starts with
    /// `tenantId/` in indexes; nothing of `meta`). Stops at the first error of `f`.
    pub fn for_each<E: From<Error>>(
        &self,
        table: &str,
        kind: Kind,
        tenant: Option<&TenantId>,
        mut f: impl FnMut(Row) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        match kind {
            Kind::Record | Kind::Bytes => {
                let def: RecordDef = TableDefinition::new(table);
                let t = self.0.open_table(def).map_err(Error::from)?;
                let range = tenant_range(&t, tenant)?;
                for e in range {
                    let (k, v) = e.map_err(Error::from)?;
                    let (tn, id) = k.value();
                    let (tenant, id, value) = (tn.to_string(), id.to_string(), v.value());
                    f(if kind == Kind::Bytes {
                        Row::Bytes {
                            tenant,
                            id,
                            value: value.to_vec(),
                        }
                    } else {
                        // Archives carry records as JSON, whatever form the store keeps.
                        let value = match super::export_value(table, &tenant, &id, value)? {
                            Some(json) => json,
                            None => value.to_vec(),
                        };
                        Row::Record { tenant, id, value }
                    })?;
                }
            }
            Kind::Index => {
                let def: IndexDef = TableDefinition::new(table);
                let t = self.0.open_table(def).map_err(Error::from)?;
                let needle = tenant.map(|t| format!("{t}/"));
                for e in t.iter().map_err(Error::from)? {
                    let (k, v) = e.map_err(Error::from)?;
                    let (k, v) = (k.value(), v.value());
                    if let Some(n) = &needle
                        && !k.starts_with(n.as_str())
                        && !v.starts_with(n.as_str())
                    {
                        continue;
                    }
                    f(Row::Index {
                        key: k.to_string(),
                        value: v.to_string(),
                    })?;
                }
            }
            Kind::Count => {
                let def: CountDef = TableDefinition::new(table);
                let t = self.0.open_table(def).map_err(Error::from)?;
                let range = tenant_range(&t, tenant)?;
                for e in range {
                    let (k, v) = e.map_err(Error::from)?;
                    let (tn, name) = k.value();
                    f(Row::Count {
                        tenant: tn.to_string(),
                        name: name.to_string(),
                        value: v.value(),
                    })?;
                }
            }
            Kind::Meta => {
                if tenant.is_some() {
                    return Ok(());
                }
                let def: MetaDef = TableDefinition::new(table);
                let t = self.0.open_table(def).map_err(Error::from)?;
                for e in t.iter().map_err(Error::from)? {
                    let (k, v) = e.map_err(Error::from)?;
                    f(Row::Meta {
                        key: k.value().to_string(),
                        value: v.value(),
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The store's view through this snapshot, for typed reads (e.g. which files the
    /// snapshotted documents reference).
    pub fn get<R: super::Record>(&self, tenant: &TenantId, id: &str) -> Result<Option<R>> {
        let t = self.0.open_table(R::TABLE)?;
        match t.get((tenant.as_str(), id))? {
            Some(v) => Ok(Some(super::decode(tenant.as_str(), id, v.value())?)),
            None => Ok(None),
        }
    }
}

/// Writes rows into a store file, in transactions of bounded size. Used by restore (into a
/// new file, before any migration runs) and by tenant import (into the live store, after
/// checking nothing collides; see [`Store::import_rows`]).
pub struct RawWriter {
    db: redb::Database,
}

impl RawWriter {
    /// Creates `<dir>/aigentable.redb`, which must not exist yet. No migration runs: the rows
    /// written (including `meta`) say which schema they are; [`Store::open`] upgrades them.
    pub fn create(dir: &Path) -> Result<Self> {
        let path = dir.join("aigentable.redb");
        super::make_private(dir, &path).map_err(|e| Error::Db(redb::StorageError::Io(e).into()))?;
        let db = redb::Builder::new().create(&path)?;
        Ok(RawWriter { db })
    }

    /// Writes a batch of rows of one table in one transaction. An empty batch still creates
    /// the table (a restored store has every table the source had).
    pub fn write(&self, table: &str, kind: Kind, rows: &[Row]) -> Result<()> {
        let tx = self.db.begin_write()?;
        write_rows(&tx, table, kind, rows)?;
        tx.commit()?;
        Ok(())
    }
}

fn write_rows(tx: &redb::WriteTransaction, table: &str, kind: Kind, rows: &[Row]) -> Result<()> {
    match kind {
        Kind::Record | Kind::Bytes => {
            let def: RecordDef = TableDefinition::new(table);
            let mut t = tx.open_table(def)?;
            for r in rows {
                if let Row::Record { tenant, id, value } | Row::Bytes { tenant, id, value } = r {
                    let compact = match r {
                        Row::Record { .. } => super::import_value(table, tenant, id, value),
                        _ => None,
                    };
                    let value = compact.as_deref().unwrap_or(value);
                    t.insert((tenant.as_str(), id.as_str()), value)?;
                }
            }
        }
        Kind::Index => {
            let def: IndexDef = TableDefinition::new(table);
            let mut t = tx.open_table(def)?;
            for r in rows {
                if let Row::Index { key, value } = r {
                    t.insert(key.as_str(), value.as_str())?;
                }
            }
        }
        Kind::Meta => {
            let def: MetaDef = TableDefinition::new(table);
            let mut t = tx.open_table(def)?;
            for r in rows {
                if let Row::Meta { key, value } = r {
                    t.insert(key.as_str(), *value)?;
                }
            }
        }
        Kind::Count => {
            let def: CountDef = TableDefinition::new(table);
            let mut t = tx.open_table(def)?;
            for r in rows {
                if let Row::Count {
                    tenant,
                    name,
                    value,
                } = r
                {
                    t.insert((tenant.as_str(), name.as_str()), *value)?;
                }
            }
        }
    }
    Ok(())
}

/// Why an import into a live store was refused.
#[derive(Debug)]
pub enum ImportConflict {
    /// A record with this tenant id exists already.
    TenantExists,
    /// A unique index entry is taken by someone else (e.g. an email of another tenant).
    IndexTaken { table: String, key: String },
}

impl Store {
    /// Copies one tenant's rows out of `src` (another store's snapshot) into this store, all
    /// in one transaction, so an import is all or nothing. Refused, with nothing written,
    /// when the tenant exists or a unique key is taken. Rows stream from `src`: memory stays
    /// bounded whatever the tenant's size. `skip` names tables left out (credentials bound to
    /// the source install's keys). Every row passes through `map` on its way (an import under
    /// a new tenant id rewrites them); `target` is the tenant id the rows have after it.
    pub fn import_tenant(
        &self,
        src: &Snapshot,
        tenant: &TenantId,
        skip: &[&str],
        target: &TenantId,
        map: impl Fn(Row) -> Row,
    ) -> Result<std::result::Result<u64, ImportConflict>> {
        let tables: Vec<(String, Kind)> = src
            .tables()?
            .into_iter()
            .filter(|(n, k)| *k != Kind::Meta && !skip.contains(&n.as_str()))
            .collect();
        self.check_space(0)?;
        let tx = self.begin_write()?;
        {
            let t = tx.open_table(<crate::model::Tenant as super::Record>::TABLE)?;
            if t.get((target.as_str(), ""))?.is_some() {
                return Ok(Err(ImportConflict::TenantExists));
            }
        }
        // First pass: every unique key the tenant brings must be free here.
        for (name, kind) in &tables {
            if *kind != Kind::Index {
                continue;
            }
            let def: IndexDef = TableDefinition::new(name);
            let t = tx.open_table(def)?;
            let mut conflict = None;
            src.for_each::<Error>(name, *kind, Some(tenant), |r| {
                if conflict.is_some() {
                    return Ok(());
                }
                if let Row::Index { key, .. } = &map(r)
                    && t.get(key.as_str())?.is_some()
                {
                    conflict = Some(ImportConflict::IndexTaken {
                        table: name.clone(),
                        key: key.clone(),
                    });
                }
                Ok(())
            })?;
            if let Some(c) = conflict {
                return Ok(Err(c));
            }
        }
        let mut n = 0u64;
        for (name, kind) in &tables {
            let mut batch = Vec::with_capacity(256);
            src.for_each::<Error>(name, *kind, Some(tenant), |r| {
                // The count of a table left out is left out with it.
                if let Row::Count { name: counted, .. } = &r
                    && skip.contains(&counted.split('#').next().unwrap_or_default())
                {
                    return Ok(());
                }
                batch.push(map(r));
                if batch.len() == 256 {
                    write_rows(&tx, name, *kind, &batch)?;
                    n += batch.len() as u64;
                    batch.clear();
                }
                Ok(())
            })?;
            write_rows(&tx, name, *kind, &batch)?;
            n += batch.len() as u64;
        }
        tx.commit().map_err(|e| self.db.note(e.into()))?;
        Ok(Ok(n))
    }
}

/// Files removals deferred while a backup copies files (see [`Store::pin_files`]).
#[derive(Default)]
pub(super) struct Pins(std::sync::Mutex<PinState>);

#[derive(Default)]
struct PinState {
    active: usize,
    deferred: Vec<std::path::PathBuf>,
}

/// While alive, removals of stored files (a deleted document's original, a deleted tenant's
/// folder) wait, so a backup finds every file its snapshot references. Dropping the last pin
/// carries the waiting removals out, except for a path that records reference again by then
/// (the same content uploaded anew, the tenant imported again).
pub struct FilePin<'a>(&'a Store);

fn lock_pins(m: &std::sync::Mutex<PinState>) -> std::sync::MutexGuard<'_, PinState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn remove_path(path: &Path) -> std::io::Result<()> {
    let r = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl Drop for FilePin<'_> {
    fn drop(&mut self) {
        let todo = {
            let mut st = lock_pins(&self.0.pins.0);
            st.active -= 1;
            if st.active > 0 {
                return;
            }
            std::mem::take(&mut st.deferred)
        };
        for p in todo {
            if self.0.referenced_again(&p) {
                continue;
            }
            if let Err(e) = remove_path(&p) {
                tracing::warn!(path = %p.display(), error = %e, "removing a file after the backup failed");
            }
        }
    }
}

impl Store {
    /// Pins the stored files: see [`FilePin`]. Take it BEFORE the snapshot.
    pub fn pin_files(&self) -> FilePin<'_> {
        lock_pins(&self.pins.0).active += 1;
        FilePin(self)
    }

    /// Removes a stored file or folder that committed records no longer reference (a
    /// deleted document's original, a deleted tenant's folder), or, while a backup is
    /// copying files, once it is done. A missing path is fine.
    pub fn remove_stored(&self, path: &Path) -> std::io::Result<()> {
        {
            let mut st = lock_pins(&self.pins.0);
            if st.active > 0 {
                st.deferred.push(path.to_path_buf());
                return Ok(());
            }
        }
        remove_path(path)
    }

    /// Whether `.../tenants/<t>/files/<sha>`, `.../tenants/<t>` or `.../media/<t>` is referenced by records
    /// (again). On a read error: yes (keeping a file is the safe side).
    fn referenced_again(&self, p: &Path) -> bool {
        let parts: Vec<&str> = p
            .components()
            .rev()
            .take(4)
            .filter_map(|c| c.as_os_str().to_str())
            .collect();
        let tenant_of = |s: &str| TenantId::parse(s);
        let check = match parts.as_slice() {
            [sha, "files", t, "tenants"] => tenant_of(t).map(|t| {
                self.read(|tx| tx.index_get(super::Index::DocumentSha, &super::make_ref(&t, sha)))
                    .map(|v| v.is_some())
            }),
            // A tenant's folder, or its channel media folder (`<data>/media/<t>`).
            [t, "tenants" | "media", ..] => tenant_of(t).map(|t| {
                self.read(|tx| tx.get::<crate::model::Tenant>(&t, ""))
                    .map(|v| v.is_some())
            }),
            _ => None,
        };
        check.is_some_and(|r| r.unwrap_or(true))
    }
}
