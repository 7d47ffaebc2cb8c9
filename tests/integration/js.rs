//! The stock JavaScript clients the realtime and browser tests drive the server with:
//! socket.io-client 4 (run by node) and headless Chromium (driven by playwright-core), both
//! from `tests/js` (`npm ci` there; `.ci/run` does it when npm is present).
//!
//! Without node, the packages or the browser a test is skipped and says so on stderr (the
//! line shows in `cargo test` output). With `AIGENTABLE_REQUIRE_JS=1` (`.ci/run` sets it when
//! it installed them) a missing piece fails the test instead.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

/// Environment flag that turns a missing node, package or browser into a test failure.
pub const REQUIRE_JS: &str = "AIGENTABLE_REQUIRE_JS";
/// Environment variable naming the Chromium binary (default: `/usr/bin/chromium`).
pub const CHROMIUM: &str = "AIGENTABLE_TEST_CHROMIUM";

/// `tests/js`, with its packages installed and node on PATH; `None` (after saying so) when
/// not available. Run scripts there with `node` and `current_dir(js_dir)`.
pub fn node_clients(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        return skip(test, "node is not on PATH (install Node.js 20+)");
    }
    if !dir.join("node_modules/socket.io-client").is_dir() {
        return skip(
            test,
            "tests/js has no node_modules (run `npm ci` in tests/js)",
        );
    }
    Some(dir)
}

/// `tests/js` and the Chromium binary for browser tests; `None` (after saying so) when
/// either is missing.
pub fn browser(test: &str) -> Option<(PathBuf, PathBuf)> {
    let dir = node_clients(test)?;
    if !dir.join("node_modules/playwright-core").is_dir() {
        return skip(
            test,
            "tests/js has no playwright-core (run `npm ci` in tests/js)",
        );
    }
    let chromium = std::env::var_os(CHROMIUM)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        return skip(
            test,
            &format!(
                "no browser at {} (Debian: `apt-get install chromium`, or set {CHROMIUM})",
                chromium.display()
            ),
        );
    }
    Some((dir, chromium))
}

fn required() -> bool {
    std::env::var_os(REQUIRE_JS).is_some_and(|v| !v.is_empty() && v != "0")
}

fn skip<T>(test: &str, why: &str) -> Option<T> {
    if required() {
        panic!("{test} needs the JavaScript clients and {REQUIRE_JS} is set, but {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    None
}
