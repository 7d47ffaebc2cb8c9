//! Shared by the benchmarks that run each phase in a child process of their own (so each
//! reads its own `/proc/self/status`): `bench_memory` and `bench_scale` (included with
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
