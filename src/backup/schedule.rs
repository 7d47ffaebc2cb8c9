//! Scheduled backups inside `serve`: every `BACKUP_EVERY` a full backup into `BACKUP_DIR`,
//! written atomically (a hidden temp file, synced, then renamed), keeping the `BACKUP_KEEP`
//! newest. Off when `BACKUP_DIR` is unset. A failure is logged and shown in `/api/health`.

use crate::store::Store;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use utoipa::ToSchema;

const PREFIX: &str = "aigentable-backup-";
const SUFFIX: &str = ".tar.gz";

/// The outcome of the latest scheduled backup (`backups` in `GET /api/health`, platform
/// admins only: it names a path on the server).
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// `ok`, `failed`, or `pending` before the first run.
    pub status: String,
    /// When the latest backup finished (rfc3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_at: Option<String>,
    /// The file it wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_file: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Consecutive failures.
    pub failures: u32,
}

/// The scheduler's settings and last outcome.
pub struct Scheduler {
    pub dir: PathBuf,
    pub every: Duration,
    pub keep: usize,
    status: Mutex<BackupStatus>,
}

impl Scheduler {
    pub fn new(dir: PathBuf, every: Duration, keep: usize) -> Self {
        Scheduler {
            dir,
            every,
            keep: keep.max(1),
            status: Mutex::new(BackupStatus {
                status: "pending".into(),
                ..Default::default()
            }),
        }
    }

    pub fn status(&self) -> BackupStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes one backup now and prunes old ones; records the outcome. Blocking.
    pub fn run_once(&self, store: &Store, data_dir: &Path) -> super::Result<PathBuf> {
        let r = self.write(store, data_dir);
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            Ok(p) => {
                *st = BackupStatus {
                    status: "ok".into(),
                    last_at: Some(crate::types::now().to_string()),
                    last_file: Some(p.display().to_string()),
                    error: None,
                    failures: 0,
                };
                tracing::info!(file = %p.display(), "scheduled backup written");
            }
            Err(e) => {
                st.status = "failed".into();
                st.error = Some(e.to_string());
                st.failures += 1;
                tracing::error!(dir = %self.dir.display(), error = %e, "scheduled backup failed");
            }
        }
        r
    }

    fn write(&self, store: &Store, data_dir: &Path) -> super::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default();
        // UUIDv7 after the stamp: names sort in creation order also within one second.
        let name = format!("{PREFIX}{stamp}-{}{SUFFIX}", uuid::Uuid::now_v7());
        let path = self.dir.join(&name);
        write_atomically(&path, |f| {
            super::backup_full(store, data_dir, f).map(|_| ())
        })?;
        self.prune()?;
        Ok(path)
    }

    /// Removes all but the `keep` newest scheduled backups (only files this scheduler names).
    fn prune(&self) -> std::io::Result<()> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
            .collect();
        names.sort();
        let extra = names.len().saturating_sub(self.keep);
        for n in &names[..extra] {
            std::fs::remove_file(self.dir.join(n))?;
        }
        Ok(())
    }
}

/// Writes `path` through a hidden temp file beside it: synced, then renamed, so a reader
/// never sees a partial archive under the final name. The temp file is removed on failure.
pub fn write_atomically(
    path: &Path,
    f: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> super::Result<()>,
) -> super::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.partial",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("backup"),
        uuid::Uuid::now_v7()
    ));
    let r = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        // The archive holds customer data and (full backups) the install's keys.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&tmp)?;
        {
            let mut w = std::io::BufWriter::new(&file);
            f(&mut w)?;
            std::io::Write::flush(&mut w)?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Parses `BACKUP_EVERY` (`6h`, `30m`, `1d`; humantime).
pub fn parse_every(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{e}"))?;
    if d < Duration::from_secs(60) {
        return Err("at least 1m".into());
    }
    Ok(d)
}
