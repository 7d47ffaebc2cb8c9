//! The real embedding model for tests, from the environment: `AIGENTABLE_TEST_MODEL_DIR` (a
//! model folder with tokenizer.json) and `AIGENTABLE_TEST_ORT_DYLIB` (the ONNX Runtime
//! library). One definition for the unit tests (`crate::test_model`) and the integration
//! tests (`tests/integration/main.rs` includes this file), so both skip and fail alike.
//!
//! Without the assets a test is skipped, and says so on the process's stderr: libtest
//! captures the output of `print!`/`eprint!` in passing tests, not writes to the stderr
//! handle, so the line shows in `cargo test` output. With `AIGENTABLE_REQUIRE_MODEL=1`
//! (`.ci/run` sets it when it finds the assets) a missing asset fails the test instead: a
//! model that CI has must never be skipped silently.
//!
//! Test-only: must not depend on anything of the crate.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

/// Environment flag that turns a missing model or runtime into a test failure.
pub const REQUIRE_MODEL: &str = "AIGENTABLE_REQUIRE_MODEL";
/// Environment variable naming the model folder.
pub const MODEL_DIR: &str = "AIGENTABLE_TEST_MODEL_DIR";
/// Environment variable naming the ONNX Runtime library.
pub const ORT_DYLIB: &str = "AIGENTABLE_TEST_ORT_DYLIB";
/// Environment variable naming an all-mpnet-base-v2 folder (the second local model).
pub const MPNET_DIR: &str = "AIGENTABLE_TEST_MPNET_DIR";

/// The model folder, for tests that need only its tokenizer; `None` (after saying so) when
/// it is not available. `test` names the test in the message.
pub fn model_dir(test: &str) -> Option<PathBuf> {
    match find_model_dir() {
        Ok(dir) => Some(dir),
        Err(why) => skip(test, &why),
    }
}

/// The model folder and the ONNX Runtime library; `None` (after saying so) when either is
/// not available.
pub fn model_and_runtime(test: &str) -> Option<(PathBuf, PathBuf)> {
    let found = find_model_dir().and_then(|dir| {
        let ort = env_path(ORT_DYLIB)?;
        if ort.is_file() {
            Ok((dir, ort))
        } else {
            Err(format!("{ORT_DYLIB}={} is not a file", ort.display()))
        }
    });
    match found {
        Ok(assets) => Some(assets),
        Err(why) => skip(test, &why),
    }
}

/// The all-mpnet-base-v2 folder ([`MPNET_DIR`]) and the ONNX Runtime library; `None` (after
/// saying so) when either is not available.
pub fn mpnet_and_runtime(test: &str) -> Option<(PathBuf, PathBuf)> {
    let found = env_path(MPNET_DIR).and_then(|dir| {
        if !dir.join("tokenizer.json").is_file() {
            return Err(format!(
                "{MPNET_DIR}={} has no tokenizer.json",
                dir.display()
            ));
        }
        let ort = env_path(ORT_DYLIB)?;
        if ort.is_file() {
            Ok((dir, ort))
        } else {
            Err(format!("{ORT_DYLIB}={} is not a file", ort.display()))
        }
    });
    match found {
        Ok(assets) => Some(assets),
        Err(why) => skip(test, &why),
    }
}

fn find_model_dir() -> Result<PathBuf, String> {
    let dir = env_path(MODEL_DIR)?;
    if dir.join("tokenizer.json").is_file() {
        Ok(dir)
    } else {
        Err(format!(
            "{MODEL_DIR}={} has no tokenizer.json",
            dir.display()
        ))
    }
}

fn env_path(var: &str) -> Result<PathBuf, String> {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
        _ => Err(format!("{var} is not set")),
    }
}

fn required() -> bool {
    std::env::var_os(REQUIRE_MODEL).is_some_and(|v| !v.is_empty() && v != "0")
}

fn skip<T>(test: &str, why: &str) -> Option<T> {
    if required() {
        panic!(
            "{test} needs the real embedding model and {REQUIRE_MODEL} is set, but {why} \
             (set {MODEL_DIR} to a model folder such as all-MiniLM-L6-v2 and {ORT_DYLIB} to \
             libonnxruntime.so)"
        );
    }
    // The stderr handle, not eprintln!: libtest would capture the macro's output.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (set {MODEL_DIR} and {ORT_DYLIB} to run it; \
         {REQUIRE_MODEL}=1 makes this a failure)"
    );
    None
}
