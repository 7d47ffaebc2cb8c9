//! Type detection and the plain-text parser: `detect` on arbitrary bytes under a file name and
//! declared MIME type chosen by the first byte, then whatever kind it detects is parsed.
#![no_main]

use aigentable::ingest::{Kind, Limits, detect, parse};
use libfuzzer_sys::fuzz_target;

const NAMES: [(&str, Option<&str>); 8] = [
    ("notes.txt", None),
    ("guide.md", Some("text/markdown")),
    ("page.html", None),
    ("people.csv", Some("text/csv; charset=utf-8")),
    ("upload", Some("application/octet-stream")),
    ("report.docx", None),
    ("scan.pdf", Some("application/pdf")),
    ("", Some("text/html")),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let (name, mime) = NAMES[usize::from(pick) % NAMES.len()];
    let limits = Limits::default();
    match detect(bytes, name, mime) {
        Ok(kind) => {
            let _ = parse(kind, bytes, &limits);
        }
        // Whatever detection says, the text parser must cope with the bytes on its own.
        Err(_) => {
            let _ = parse(Kind::Text, bytes, &limits);
        }
    }
});
