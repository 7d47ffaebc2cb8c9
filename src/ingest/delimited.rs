//! CSV/TSV: one section per data row, written with its header so each row reads on its own
//! ("name: Alice; city: Rome"). The delimiter (comma, semicolon, tab or pipe) is sniffed from
//! the header line, since European spreadsheets export with semicolons.

use super::{Collector, Error, Limits, Parsed, collapse_whitespace, utf8_text};

/// Longest cell value kept; a longer one is a blob, and is cut rather than rejected.
const MAX_CELL_CHARS: usize = 10_000;

pub(super) fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, Error> {
    let text = utf8_text(bytes)?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(sniff_delimiter(text))
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let header: Vec<String> = match records.next() {
        Some(Ok(record)) => record.iter().map(collapse_whitespace).collect(),
        Some(Err(e)) => return Err(csv_error(e)),
        None => return Err(Error::Empty),
    };
    let mut out = Collector::new(limits);
    let mut row_text = String::new();
    for record in records {
        let record = record.map_err(csv_error)?;
        row_text.clear();
        for (i, value) in record.iter().enumerate() {
            let value = collapse_whitespace(value);
            if value.is_empty() {
                continue;
            }
            let value = match value.char_indices().nth(MAX_CELL_CHARS) {
                Some((cut, _)) => &value[..cut],
                None => value.as_str(),
            };
            if !row_text.is_empty() {
                row_text.push_str("; ");
            }
            match header.get(i).filter(|h| !h.is_empty()) {
                Some(name) => row_text.push_str(name),
                None => row_text.push_str(&format!("column {}", i + 1)),
            }
            row_text.push_str(": ");
            row_text.push_str(value);
        }
        out.push(&row_text, None)?;
    }
    Ok(out.into_parsed(None, None))
}

fn csv_error(e: csv::Error) -> Error {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => Error::InvalidUtf8,
        _ => Error::Corrupt(format!("the CSV cannot be read ({e})")),
    }
}

/// Picks the candidate that appears most often in the first line, outside quotes.
fn sniff_delimiter(text: &str) -> u8 {
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0), (b'|', 0)];
    let mut quoted = false;
    for b in text.bytes().take(64 * 1024) {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => break,
            _ if !quoted => {
                if let Some(c) = counts.iter_mut().find(|(d, _)| *d == b) {
                    c.1 += 1;
                }
            }
            _ => {}
        }
    }
    counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .max_by_key(|(_, n)| *n)
        .map_or(b',', |(d, _)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Kind, parse};

    #[test]
    fn rows_carry_their_header() {
        let csv = "\u{feff}name,city,note\nAlice,Rome,\"likes, commas\"\nBob,,\n\n,,\nCarla,Oslo,x,extra\n";
        let parsed = parse(Kind::Csv, csv.as_bytes(), &Limits::default()).unwrap();
        let texts: Vec<_> = parsed.sections.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "name: Alice; city: Rome; note: likes, commas",
                "name: Bob",
                "name: Carla; city: Oslo; note: x; column 4: extra",
            ]
        );
    }

    #[test]
    fn sniffs_semicolons_and_tabs() {
        let parsed = parse(Kind::Csv, b"a;b\n1,5;2\n", &Limits::default()).unwrap();
        assert_eq!(parsed.sections[0].text, "a: 1,5; b: 2");
        let parsed = parse(Kind::Csv, b"a\tb\nx y\tz\n", &Limits::default()).unwrap();
        assert_eq!(parsed.sections[0].text, "a: x y; b: z");
    }

    #[test]
    fn header_only_is_empty_and_bad_bytes_are_invalid() {
        assert!(matches!(
            parse(Kind::Csv, b"a,b,c\n", &Limits::default()),
            Err(Error::Empty)
        ));
        assert!(matches!(
            parse(Kind::Csv, b"a,b\n\xFF,1\n", &Limits::default()),
            Err(Error::InvalidUtf8)
        ));
    }
}
