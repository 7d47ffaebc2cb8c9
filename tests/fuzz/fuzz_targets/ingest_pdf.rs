//! The Pdf parser on arbitrary bytes: a result or an error, never a panic (the harness's
//! panic hook aborts even on panics `ingest::parse` would catch), a hang or unbounded memory.
#![no_main]

use aigentable::ingest::{Kind, Limits, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse(Kind::Pdf, data, &Limits::default());
});
