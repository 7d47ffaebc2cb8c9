//! A backup or tenant-export archive as `aigentable restore`, `aigentable tenant import` and
//! `POST /api/tenants/import` read it (`backup::verify`: the tar, the header, entry names
//! (no `..`), size limits, the table rows, the manifest and every checksum). The fuzzer's
//! bytes are the tar; they are gzipped here (stored, not deflated) so that mutations reach
//! the tar and JSON layers instead of breaking the deflate stream. Any input gives a summary
//! or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(data).expect("in memory");
    let archive = gz.finish().expect("in memory");
    if let Ok(s) = aigentable::backup::verify(&archive[..], &aigentable::backup::Limits::default())
    {
        // Whatever verifies lists only what it holds: no more entries than the input has
        // 512-byte tar headers.
        let entries = s.tables.len() as u64 + s.files + s.media;
        assert!(entries <= data.len() as u64 / 512, "{s:?}");
    }
});
