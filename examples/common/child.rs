//! Shared by the benchmarks that run each phase in a child process of their own (so each
//! reads its own `/proc/self/status`, [`mem`]): `bench_memory` and `bench_scale` (included with
//! `#[path]`; not an example of its own).

use anyhow::{Context, Result, bail};
use std::process::Command;
use std::time::{Duration, Instant};

/// Spawns `cmd` for `phase` and waits for it: an error when it fails, or when it runs
/// longer than `timeout` (then it is killed and reaped first).
pub fn run(mut cmd: Command, phase: &str, timeout: Duration) -> Result<()> {
    let mut child = cmd.spawn().context("spawning a child")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("the {phase} child failed: {status}");
            }
            return Ok(());
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the {phase} child took longer than {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Resident memory of this process (`/proc/self/status`), MiB; NaN where a field is missing.
pub struct Mem {
    /// VmRSS: resident now.
    pub rss: f64,
    /// RssAnon: the anonymous part of it (heap, arenas), not mapped files.
    pub anon: f64,
    /// VmHWM: the peak of VmRSS so far.
    pub hwm: f64,
}

/// Reads [`Mem`] of this process.
pub fn mem() -> Mem {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    Mem {
        rss: field("VmRSS:"),
        anon: field("RssAnon:"),
        hwm: field("VmHWM:"),
    }
}
