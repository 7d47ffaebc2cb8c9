//! The local admin socket `<data>/admin.sock`: how `aigentable backup` reaches a server that
//! runs on the same data directory (redb locks the store file, so a second process cannot
//! open it). Only processes that may enter the data directory (0700: the server's user and
//! root) can connect; there is no other authentication.
//!
//! Protocol: the client sends one JSON line `{"op":"backup"}`; the server answers one JSON
//! line (`{"ok":true}` or `{"ok":false,"error":"..."}`) and, when ok, the archive's bytes
//! until it closes the connection. The client checks the archive it received (a server
//! failing half way leaves a truncated archive, which fails the check).

use super::{Error, Result};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The socket's file name in the data directory.
pub const SOCKET_NAME: &str = "admin.sock";

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Request {
    Backup,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Listens on `<data_dir>/admin.sock` until the returned task is aborted (the socket file is
/// removed then by [`Listening`]'s drop). A failure to listen is logged, not fatal: the
/// server works without it, only `aigentable backup` cannot reach it.
#[cfg(unix)]
pub fn listen(store: Arc<Store>, data_dir: PathBuf) -> Option<Listening> {
    let path = data_dir.join(SOCKET_NAME);
    // A socket file left by a server that was killed: nobody listens on it any more (this
    // process holds the store lock, so no other server runs here).
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the admin socket; `aigentable backup` cannot reach this server (scheduled backups still work)");
            return None;
        }
    };
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let Ok(stream) = stream.into_std() else {
                continue;
            };
            let (store, dir) = (store.clone(), data_dir.clone());
            tokio::task::spawn_blocking(move || {
                if let Err(e) = handle(stream, &store, &dir) {
                    tracing::warn!(error = %e, "admin socket request failed");
                }
            });
        }
    });
    Some(Listening { task, path })
}

/// The running socket listener; dropping it stops it and removes the socket file.
pub struct Listening {
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(unix)]
fn handle(stream: std::os::unix::net::UnixStream, store: &Store, dir: &Path) -> Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?).take(4096);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut out = std::io::BufWriter::new(stream);
    match serde_json::from_str::<Request>(line.trim()) {
        Ok(Request::Backup) => {
            writeln!(
                out,
                "{}",
                json(&Answer {
                    ok: true,
                    error: None
                })
            )?;
            let s = super::backup_full(store, dir, &mut out)?;
            out.flush()?;
            tracing::info!(files = s.files, "backup written to the admin socket");
        }
        Err(e) => {
            writeln!(
                out,
                "{}",
                json(&Answer {
                    ok: false,
                    error: Some(format!("bad request: {e}")),
                })
            )?;
        }
    }
    Ok(())
}

fn json(a: &Answer) -> String {
    serde_json::to_string(a).unwrap_or_else(|_| "{\"ok\":false}".into())
}

/// Asks a server running on `data_dir` for a backup and copies it to `out`. `Ok(false)`
/// when no server listens there (no socket, or a stale one).
#[cfg(unix)]
pub fn request_backup(data_dir: &Path, out: &mut impl Write) -> Result<bool> {
    let path = data_dir.join(SOCKET_NAME);
    let stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    let mut w = stream.try_clone()?;
    writeln!(
        w,
        "{}",
        serde_json::to_string(&Request::Backup).map_err(Error::json)?
    )?;
    w.flush()?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let a: Answer = serde_json::from_str(line.trim())
        .map_err(|_| Error::Damaged("the server's admin socket gave no answer".into()))?;
    if !a.ok {
        return Err(Error::Conflict(a.error.unwrap_or_else(|| "refused".into())));
    }
    std::io::copy(&mut r, out)?;
    Ok(true)
}
