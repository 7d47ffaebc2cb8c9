//! How much room files take, for the benchmarks that report a data directory's size:
//! `bench_memory` and `bench_scale` (included with `#[path]`; not an example of its own).
//! Both figures, because they differ: redb extends its file by doubling it, and the new
//! half is a hole (no blocks on disk) until pages are written there.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

const MIB: f64 = 1024.0 * 1024.0;

/// Files' total length, and what they take on the disk (their blocks: `st_blocks * 512`,
/// at most the length, so a file's last part-filled block is not counted whole).
#[derive(Clone, Copy, Debug, Default)]
pub struct Size {
    pub len: u64,
    pub disk: u64,
}

impl Size {
    /// One file's (or a folder entry's) size from its metadata.
    pub fn of(m: &std::fs::Metadata) -> Size {
        Size {
            len: m.len(),
            disk: (m.blocks() * 512).min(m.len()),
        }
    }

    pub fn len_mib(&self) -> f64 {
        self.len as f64 / MIB
    }

    pub fn disk_mib(&self) -> f64 {
        self.disk as f64 / MIB
    }
}

impl std::ops::AddAssign for Size {
    fn add_assign(&mut self, o: Size) {
        self.len += o.len;
        self.disk += o.disk;
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} MiB ({:.0} MiB on disk)",
            self.len_mib(),
            self.disk_mib()
        )
    }
}

/// The size of `p`: a file's own, or the total of the files under a folder (zero when
/// `p` is missing). Stops after 100,000 folders, a guard against a runaway walk.
pub fn du(p: &Path) -> Size {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => {}
        Ok(m) => return Size::of(&m),
        Err(_) => return Size::default(),
    }
    let mut total = Size::default();
    let mut stack = vec![p.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        seen += 1;
        if seen > 100_000 {
            break;
        }
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += Size::of(&m),
                Err(_) => {}
            }
        }
    }
    total
}
