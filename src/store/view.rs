//! A read-only view of the store file, for reads while the file cannot be opened for writing
//! (the filesystem turned read-only, or filled up, in the middle of a commit).
//!
//! redb opens a file that was not closed cleanly only through a repair, and a repair writes
//! (the allocator state, the header); its read-only open refuses such a file. So the view
//! opens the file read-only under a backend that keeps every write in memory: the repair runs
//! there, nothing reaches the disk, and reads see the file's last durable commit, which is
//! everything that was acknowledged. Memory is bounded: the view refuses writes past a limit
//! (the repair needs a few pages; nothing else writes to a view).
//!
//! A view is replaced by a writable handle as soon as the disk takes writes again. From then
//! on the file changes under it, so it is closed first: every later read of the file through
//! it fails (a read transaction still open on it gets an error, never a page of the new
//! state).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The unit of the in-memory copy of written bytes.
const BLOCK: u64 = 4096;

/// A view never keeps less than this in memory for the repair's writes, whatever the cache.
const MIN_WRITE_LIMIT: usize = 16 << 20;

struct State {
    /// The length redb sees.
    len: u64,
    /// Bytes of the file at or past this offset do not count (a `set_len` shrank the view
    /// below them): they read as zeros, as new bytes must.
    cut: u64,
    /// Written blocks by index, each `BLOCK` bytes.
    blocks: BTreeMap<u64, Box<[u8]>>,
}

/// The storage backend of a view: reads from the file, writes to memory.
struct Overlay {
    file: Mutex<File>,
    state: Mutex<State>,
    closed: Arc<AtomicBool>,
    /// At most this many written blocks are kept.
    max_blocks: usize,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("blocks", &lock(&self.state).blocks.len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Overlay {
    fn check_open(&self) -> std::io::Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(std::io::Error::other(
                "the read-only view of the store was replaced by a writable handle",
            ));
        }
        Ok(())
    }

    /// The file's bytes at `offset` into `out`, zeros past the file's end or the cut; no
    /// written block applied.
    fn read_base(&self, st: &State, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let mut file = lock(&self.file);
        let file_len = file.metadata()?.len().min(st.cut);
        let from_file = file_len.saturating_sub(offset).min(out.len() as u64) as usize;
        if from_file > 0 {
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut out[..from_file])?;
        }
        out[from_file..].fill(0);
        Ok(())
    }
}

impl redb::StorageBackend for Overlay {
    fn len(&self) -> std::io::Result<u64> {
        self.check_open()?;
        Ok(lock(&self.state).len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.check_open()?;
        let st = lock(&self.state);
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|e| *e <= st.len)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        self.read_base(&st, offset, out)?;
        if out.is_empty() {
            return Ok(());
        }
        for (&b, block) in st.blocks.range(offset / BLOCK..=(end - 1) / BLOCK) {
            let start = b * BLOCK;
            let lo = start.max(offset);
            let hi = (start + BLOCK).min(end);
            out[(lo - offset) as usize..(hi - offset) as usize]
                .copy_from_slice(&block[(lo - start) as usize..(hi - start) as usize]);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check_open()?;
        let mut st = lock(&self.state);
        if len < st.len {
            st.cut = st.cut.min(len);
            // Whole blocks past the end go; the block the end falls in keeps its head only.
            let first_gone = len.div_ceil(BLOCK);
            st.blocks.split_off(&first_gone);
            if !len.is_multiple_of(BLOCK)
                && let Some(block) = st.blocks.get_mut(&(len / BLOCK))
            {
                block[(len % BLOCK) as usize..].fill(0);
            }
        }
        st.len = len;
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        // Nothing of a view is ever made durable.
        self.check_open()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check_open()?;
        let mut st = lock(&self.state);
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        if data.is_empty() {
            return Ok(());
        }
        for b in offset / BLOCK..=(end - 1) / BLOCK {
            let start = b * BLOCK;
            if !st.blocks.contains_key(&b) {
                if st.blocks.len() >= self.max_blocks {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::OutOfMemory,
                        "the read-only view of the store would keep too much in memory",
                    ));
                }
                let mut block = vec![0u8; BLOCK as usize].into_boxed_slice();
                let base = st.len.min(start + BLOCK).saturating_sub(start) as usize;
                self.read_base(&st, start, &mut block[..base])?;
                st.blocks.insert(b, block);
            }
            let lo = start.max(offset);
            let hi = (start + BLOCK).min(end);
            let block = st.blocks.get_mut(&b).expect("BUG: block inserted above");
            block[(lo - start) as usize..(hi - start) as usize]
                .copy_from_slice(&data[(lo - offset) as usize..(hi - offset) as usize]);
        }
        st.len = st.len.max(end);
        Ok(())
    }

    fn close(&self) -> std::io::Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

/// A view of the store file: the database, and the switch that closes it (see the module
/// header).
pub(super) struct View {
    pub(super) db: redb::Database,
    closed: Arc<AtomicBool>,
}

impl View {
    /// Opens a view of `path`, repairing it in memory when it was not closed cleanly.
    /// `cache_bytes` is redb's page cache, and (at least 16 MiB) the bound on the repair's
    /// writes kept in memory.
    pub(super) fn open(path: &Path, cache_bytes: usize) -> Result<View, redb::DatabaseError> {
        let file = File::open(path).map_err(|e| redb::DatabaseError::Storage(e.into()))?;
        let len = file
            .metadata()
            .map_err(|e| redb::DatabaseError::Storage(e.into()))?
            .len();
        let closed = Arc::new(AtomicBool::new(false));
        let backend = Overlay {
            file: Mutex::new(file),
            state: Mutex::new(State {
                len,
                cut: u64::MAX,
                blocks: BTreeMap::new(),
            }),
            closed: closed.clone(),
            max_blocks: cache_bytes.max(MIN_WRITE_LIMIT) / BLOCK as usize,
        };
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create_with_backend(backend)?;
        Ok(View { db, closed })
    }

    /// Drops the database (its shutdown writes go to memory) and stops every later read of
    /// the file through it: a read transaction still open gets an error from now on.
    pub(super) fn close(self) {
        let View { db, closed } = self;
        drop(db);
        closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::StorageBackend;

    fn overlay(bytes: &[u8]) -> (tempfile::TempDir, Overlay) {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f");
        std::fs::write(&p, bytes).expect("write");
        let o = Overlay {
            file: Mutex::new(File::open(&p).expect("open")),
            state: Mutex::new(State {
                len: bytes.len() as u64,
                cut: u64::MAX,
                blocks: BTreeMap::new(),
            }),
            closed: Arc::new(AtomicBool::new(false)),
            max_blocks: 4,
        };
        (dir, o)
    }

    fn read(o: &Overlay, offset: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0xAA; n];
        o.read(offset, &mut v).expect("read");
        v
    }

    #[test]
    fn writes_stay_in_memory_and_read_back_over_the_file() {
        let file: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let (dir, o) = overlay(&file);
        o.write(4090, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
            .expect("write");
        let mut want = file.clone();
        want[4090..4100].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(read(&o, 0, 10_000), want);
        assert_eq!(read(&o, 4095, 3), want[4095..4098]);
        // The file itself is untouched.
        assert_eq!(std::fs::read(dir.path().join("f")).expect("read"), file);
        // Growing reads zeros; a write past the end grows.
        o.set_len(12_000).expect("grow");
        assert_eq!(read(&o, 9_998, 4), [file[9_998], file[9_999], 0, 0]);
        o.write(13_000, &[9]).expect("write past the end");
        assert_eq!(o.len().expect("len"), 13_001);
        // Shrinking then growing: the cut part reads as zeros, not as the file's old bytes.
        o.set_len(100).expect("shrink");
        o.set_len(5_000).expect("grow");
        assert!(read(&o, 100, 4_900).iter().all(|b| *b == 0));
        assert_eq!(read(&o, 0, 100), file[..100]);
        // Reads past the end fail.
        assert!(o.read(4_999, &mut [0; 2]).is_err());
    }

    #[test]
    fn memory_is_bounded_and_a_closed_view_reads_nothing() {
        let (_dir, o) = overlay(&[0; 100_000]);
        for b in 0..4 {
            o.write(b * BLOCK, &[1]).expect("within the limit");
        }
        // Rewriting a kept block is free; a fifth block is refused.
        o.write(0, &[2]).expect("same block");
        let e = o.write(10 * BLOCK, &[1]).expect_err("over the limit");
        assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory);
        o.close().expect("close");
        assert!(o.read(0, &mut [0; 1]).is_err());
    }

    #[test]
    fn a_store_that_was_not_closed_cleanly_is_read_through_a_view() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("db.redb");
        const T: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("t");
        let db = redb::Database::create(&path).expect("create");
        let tx = db.begin_write().expect("tx");
        tx.open_table(T).expect("t").insert("a", 1).expect("insert");
        tx.commit().expect("commit");
        // A crash: the handle is never closed, so the file needs a repair, which redb's
        // read-only open refuses.
        std::mem::forget(db);
        let before = std::fs::read(&path).expect("read");
        let view = View::open(&path, 1 << 20).expect("view");
        let tx = redb::ReadableDatabase::begin_read(&view.db).expect("read");
        let t = tx.open_table(T).expect("t");
        assert_eq!(t.get("a").expect("get").map(|v| v.value()), Some(1));
        drop((t, tx));
        view.close();
        assert_eq!(
            std::fs::read(&path).expect("read"),
            before,
            "the view wrote nothing to the file"
        );
    }
}
