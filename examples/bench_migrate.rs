//! Migration benchmark (issue 14): opens an existing data directory with this build's store,
//! which runs the pending schema steps and the compaction they trigger, and prints how long
//! that took, the peak RSS, the store file's size and what each table's pages hold.
//!
//! ```text
//! /usr/bin/time -v cargo run --release --example bench_migrate -- DATA_DIR [CACHE_MIB]
//! ```
//!
//! The store in `DATA_DIR` is migrated in place: run it on a copy. `CACHE_MIB` is redb's page
//! cache (default 8, as `STORE_CACHE_MB`). Set `RUST_LOG=info` to see each step's and the
//! compaction's own log lines. Linux only (`/proc/self/status`).

use aigentable::store::Store;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .context("usage: bench_migrate DATA_DIR [CACHE_MIB]")?,
    );
    let cache_mib: usize = args.next().map_or(Ok(8), |a| a.parse())?;
    let file = dir.join("aigentable.redb");
    let size = || {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&file)?;
        anyhow::Ok((m.len(), m.blocks() * 512))
    };
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let (len, disk) = size()?;
    println!(
        "store file before: length {:.1} MiB, on disk {:.1} MiB",
        mib(len),
        mib(disk)
    );
    let started = Instant::now();
    let store = Store::open(&dir, cache_mib << 20)?;
    println!(
        "opened (migrations and compaction) in {:.1} s; schema {}; VmHWM {}",
        started.elapsed().as_secs_f64(),
        store.schema_version()?,
        status("VmHWM:")
    );
    let (len, disk) = size()?;
    println!(
        "store file after: length {:.1} MiB, on disk {:.1} MiB",
        mib(len),
        mib(disk)
    );
    println!(
        "\n| table | rows | stored MiB | redb metadata MiB | unused in pages MiB | pages MiB |"
    );
    println!("|---|---|---|---|---|---|");
    for t in store.table_sizes()? {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            t.name,
            t.rows,
            mib(t.stored_bytes),
            mib(t.metadata_bytes),
            mib(t.fragmented_bytes),
            mib(t.pages * 4096)
        );
    }
    Ok(())
}

/// One line of `/proc/self/status`, as it is written there.
fn status(name: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map_or_else(|| "?".into(), |v| v.trim().to_string())
}
