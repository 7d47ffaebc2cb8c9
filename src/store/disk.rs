//! Disk trouble: a full disk (or quota) and a read-only data directory.
//!
//! redb latches an I/O error of a write: from then on every operation of that `Database`,
//! reads included, fails until it is reopened. So writes are refused BEFORE they reach redb
//! when the filesystem of the data directory is read-only or has less free space than the
//! reserve (`DISK_RESERVE_MB`): the request gets 507/503, nothing is written, reads go on,
//! and writes work again as soon as space is back. Should a write still fail on the disk
//! (someone else filled it between the check and the commit), the database is reopened at
//! the next operation; acknowledged commits are durable and survive that.
//!
//! A filesystem can turn read-only under a running server without its mount saying so: ext4
//! with `errors=remount-ro` marks itself "emergency read-only" after an error, and statvfs
//! still reports it writable. Opening a file for writing is refused there (EROFS), so every
//! write first opens the small probe file [`WRITE_PROBE`] for writing (two syscalls; nothing
//! is written to it).

use super::view::View;
use super::{Error, Result, Store};
use redb::ReadableDatabase;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

/// The file in the data directory whose opening for writing tells whether the filesystem
/// takes writes (see the module header). Never written to.
pub const WRITE_PROBE: &str = ".write-probe";

/// What the data directory's filesystem allows now, for health reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskState {
    Ok,
    /// Less free space than the reserve: writes answer 507.
    Full,
    /// Read-only: writes answer 503.
    ReadOnly,
}

impl DiskState {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskState::Ok => "ok",
            DiskState::Full => "full",
            DiskState::ReadOnly => "readOnly",
        }
    }
}

/// Opens the store file; `Locked` when another process has it.
pub(super) fn open_db(path: &Path, cache_bytes: usize) -> Result<redb::Database> {
    redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked {
                path: path.to_path_buf(),
            },
            other => other.into(),
        })
}

/// The database handle, replaced after a disk error.
pub(super) struct Db {
    inner: RwLock<Option<Handle>>,
    /// An I/O error was latched: reopen before the next use.
    failed: AtomicBool,
    /// The handle is a read-only view (see `view`): a write reopens the file first.
    viewing: AtomicBool,
    cache_bytes: usize,
    /// Writes are refused while less than this many bytes are free.
    reserve: AtomicU64,
    /// Bumped at every reopen: commits not yet durable in an earlier epoch are lost.
    epoch: AtomicU64,
}

/// The open database: the store file, or a read-only view of it.
enum Handle {
    File(redb::Database),
    View(View),
}

impl Handle {
    fn db(&self) -> &redb::Database {
        match self {
            Handle::File(db) => db,
            Handle::View(v) => &v.db,
        }
    }

    /// Lets go of the file; a view stops reading it at once (see `view`).
    fn close(self) {
        match self {
            Handle::File(db) => drop(db),
            Handle::View(v) => v.close(),
        }
    }
}

/// A read guard on a database that is there.
pub(super) struct DbGuard<'a>(RwLockReadGuard<'a, Option<Handle>>);

impl std::ops::Deref for DbGuard<'_> {
    type Target = redb::Database;
    fn deref(&self) -> &redb::Database {
        self.0
            .as_ref()
            .expect("BUG: DbGuard made only for an open database")
            .db()
    }
}

fn is_disk_error(e: &Error) -> bool {
    matches!(e, Error::Db(redb::Error::Io(_) | redb::Error::PreviousIo))
}

impl Db {
    pub(super) fn new(db: redb::Database, cache_bytes: usize) -> Self {
        Db {
            inner: RwLock::new(Some(Handle::File(db))),
            failed: AtomicBool::new(false),
            viewing: AtomicBool::new(false),
            cache_bytes,
            reserve: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
        }
    }

    /// How many times the database was reopened (see `group`). Read while a write
    /// transaction is open, it names the database instance that transaction commits to (a
    /// reopen cannot happen while one is open).
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The open database (tests and migrations reach redb through it).
    pub(super) fn get(&self) -> Result<DbGuard<'_>> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            return Err(Error::Unavailable(
                "it is retried at the next request".into(),
            ));
        }
        Ok(DbGuard(g))
    }

    /// Passes `e` on, remembering a latched I/O error so the next use reopens.
    pub(super) fn note(&self, e: Error) -> Error {
        if is_disk_error(&e) && !self.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(error = %e, "a store operation failed on the disk; the store is reopened at the next request");
        }
        e
    }

    /// Whether the handle must be replaced before a read (`write` false) or a write.
    fn stale(&self, write: bool) -> bool {
        self.failed.load(Ordering::Acquire) || (write && self.viewing.load(Ordering::Acquire))
    }

    /// Reopens the database after a latched I/O error, or (for a write) when only a view is
    /// open. When the file cannot be opened for writing (the disk is read-only or full: the
    /// repair that every reopen after a failed commit needs writes), a read-only view of it
    /// takes its place, so reads go on with everything acknowledged, and the next write tries
    /// the file again. In-flight transactions of a failed handle may keep its file lock until
    /// they end; the reopen is then tried again at the next use.
    fn heal(&self, path: &Path, write: bool) -> Result<()> {
        if !self.stale(write) {
            return Ok(());
        }
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if !self.stale(write) {
            return Ok(());
        }
        let was_viewing = self.viewing.load(Ordering::Acquire);
        // The old handle must close (its file lock with it) before the file opens again.
        if let Some(h) = g.take() {
            h.close();
        }
        let e = match open_db(path, self.cache_bytes) {
            Ok(db) => {
                *g = Some(Handle::File(db));
                self.reopened(false);
                tracing::info!("store reopened after a disk error");
                return Ok(());
            }
            Err(e) => e,
        };
        match View::open(path, self.cache_bytes) {
            Ok(view) => {
                *g = Some(Handle::View(view));
                self.reopened(true);
                if !was_viewing {
                    tracing::warn!(error = %e, "the store cannot be opened for writing; reads go on from its last durable commit, and the next write once the disk takes writes reopens it");
                }
            }
            Err(ve) => {
                tracing::warn!(error = %e, view = %ve, "reopening the store failed; trying again at the next request");
                return Err(Error::Unavailable(e.to_string()));
            }
        }
        if !write {
            return Ok(());
        }
        // The write is told why: the disk's own error (507 / 503 read-only) when there is one.
        Err(match e.io_kind() {
            Some(_) => e,
            None => Error::Unavailable(e.to_string()),
        })
    }

    fn reopened(&self, view: bool) {
        metrics::counter!("store_reopens_total", "view" => if view { "yes" } else { "no" })
            .increment(1);
        self.viewing.store(view, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.failed.store(false, Ordering::Release);
    }

    /// Whether only a read-only view of the store is open (writes reopen the file first).
    pub(super) fn viewing(&self) -> bool {
        self.viewing.load(Ordering::Acquire)
    }
}

impl Store {
    pub(super) fn begin_read(&self) -> Result<redb::ReadTransaction> {
        self.db.heal(&self.path, false)?;
        let db = self.db.get()?;
        db.begin_read().map_err(|e| self.db.note(e.into()))
    }

    pub(super) fn begin_write(&self) -> Result<redb::WriteTransaction> {
        self.db.heal(&self.path, true)?;
        let db = self.db.get()?;
        db.begin_write().map_err(|e| self.db.note(e.into()))
    }

    /// Writes are refused (507 `insufficient_storage`) while fewer than `bytes` are free on
    /// the data directory's filesystem (`DISK_RESERVE_MB`).
    pub fn set_disk_reserve(&self, bytes: u64) {
        self.db.reserve.store(bytes, Ordering::Relaxed);
    }

    /// `Err(Disk)` when the data directory's filesystem is read-only, or has less free space
    /// than the reserve plus `extra` bytes (a file about to be written). Cheap (statvfs).
    pub fn check_space(&self, extra: u64) -> Result<()> {
        #[cfg(unix)]
        {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            let Ok(st) = rustix::fs::statvfs(dir) else {
                return Ok(());
            };
            if st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
                return Err(Error::Disk(std::io::Error::from(
                    std::io::ErrorKind::ReadOnlyFilesystem,
                )));
            }
            // Not the store file itself: closing any descriptor of it would drop the
            // process's POSIX locks on it.
            use std::os::unix::fs::OpenOptionsExt;
            let probe = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(dir.join(WRITE_PROBE));
            if let Err(e) = probe
                && e.kind() == std::io::ErrorKind::ReadOnlyFilesystem
            {
                return Err(Error::Disk(e));
            }
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let need = self
                .db
                .reserve
                .load(Ordering::Relaxed)
                .saturating_add(extra);
            if free < need {
                return Err(Error::Disk(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!("{free} bytes free, {need} needed"),
                )));
            }
        }
        #[cfg(not(unix))]
        let _ = extra;
        Ok(())
    }
}

impl Store {
    /// How many times the store file was reopened after a disk error (a read-only view
    /// counts; see `view`).
    pub fn reopens(&self) -> u64 {
        self.db.epoch()
    }

    /// Whether reads are served from a read-only view of the store file because it could not
    /// be reopened for writing yet; the next write tries again.
    pub fn read_only_view(&self) -> bool {
        self.db.viewing()
    }

    /// Whether writes go through now (see [`check_space`](Self::check_space)). Blocking
    /// (statvfs and an open).
    pub fn disk_state(&self) -> DiskState {
        match self.check_space(0).err().and_then(|e| e.io_kind()) {
            Some(std::io::ErrorKind::ReadOnlyFilesystem) => DiskState::ReadOnly,
            Some(std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) => {
                DiskState::Full
            }
            _ => DiskState::Ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Error, Store};

    #[test]
    fn writes_are_refused_below_the_reserve_and_reads_go_on() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path(), 1 << 20).expect("open");
        store
            .write(|_| Ok::<_, Error>(()))
            .expect("a write with room");
        store.set_disk_reserve(u64::MAX);
        let e = store.write(|_| Ok::<_, Error>(())).expect_err("refused");
        assert_eq!(e.io_kind(), Some(std::io::ErrorKind::StorageFull), "{e}");
        assert_eq!(
            store.schema_version().expect("reads go on"),
            super::super::SCHEMA_VERSION
        );
        store.set_disk_reserve(0);
        store.write(|_| Ok::<_, Error>(())).expect("writes again");
    }

    #[test]
    fn reads_go_on_from_a_view_while_the_file_cannot_be_reopened_and_writes_come_back() {
        use super::super::Index;
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path(), 1 << 20).expect("open");
        let put = |k: &str| store.write(|tx| tx.index_insert_new(Index::WidgetKey, k, "t/v"));
        let get = |k: &str| store.read(|tx| tx.index_get(Index::WidgetKey, k));
        assert!(put("acked").expect("write"));
        // A write transaction of the failed handle outlives it: the file stays locked, so
        // the reopen for writing fails, as it does on a read-only or full disk.
        let held = {
            let db = store.db.get().expect("db");
            db.begin_write().expect("tx")
        };
        let _ = store.db.note(Error::Db(redb::Error::PreviousIo));
        assert_eq!(
            get("acked").expect("a read goes on").as_deref(),
            Some("t/v")
        );
        assert!(store.read_only_view());
        let reopens = store.reopens();
        assert!(reopens >= 1);
        let e = put("refused").expect_err("no write through a view");
        assert!(matches!(e, Error::Unavailable(_)), "{e}");
        assert_eq!(get("refused").expect("read"), None);
        // The file is free again: the next write reopens it for writing.
        drop(held);
        assert!(put("after").expect("writes again"));
        assert!(!store.read_only_view());
        assert!(store.reopens() > reopens);
        assert_eq!(get("acked").expect("read").as_deref(), Some("t/v"));
        drop(store);
        let store = Store::open(dir.path(), 1 << 20).expect("open again");
        let get = |k: &str| store.read(|tx| tx.index_get(Index::WidgetKey, k));
        assert_eq!(get("acked").expect("read").as_deref(), Some("t/v"));
        assert_eq!(get("after").expect("read").as_deref(), Some("t/v"));
        assert_eq!(get("refused").expect("read"), None);
    }
}
