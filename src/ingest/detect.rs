//! File-type detection from the bytes themselves; the file name and declared MIME type only
//! choose between the text flavours (plain, Markdown, HTML, CSV).

use super::{Error, Kind, docx};

/// Works out what a file is from its bytes (magic numbers, a ZIP holding a Word document,
/// UTF-8 validity, HTML sniffing). The file name and the declared MIME type are trusted only to
/// tell plain text, Markdown, CSV and HTML apart: a binary file renamed `.txt` is still binary.
///
/// Fails with [`Error::Unsupported`] (with a reason a user can act on) for images, executables,
/// archives and other binary data, [`Error::InvalidUtf8`] for text in another encoding,
/// [`Error::Encrypted`] for a password-protected Word file and [`Error::Empty`] for no bytes.
///
/// It reads at most the ZIP directory and `_rels/.rels` (1 MB budget) and validates UTF-8
/// over the whole input; it does not apply `Limits::max_bytes`, so bound the upload first.
pub fn detect(bytes: &[u8], file_name: &str, declared_mime: Option<&str>) -> Result<Kind, Error> {
    if bytes.is_empty() {
        return Err(Error::Empty);
    }
    // PDF readers accept the header anywhere in the first KB (some files have junk before it).
    if find(&bytes[..bytes.len().min(1024)], b"%PDF-").is_some() {
        return Ok(Kind::Pdf);
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return zip_kind(bytes);
    }
    let ext = extension(file_name);
    if bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        // Word stores a password-protected .docx inside an OLE2 container; anything else in
        // that container is a legacy binary Office file.
        let says_docx = matches!(ext.as_deref(), Some("docx" | "docm"))
            || declared_mime.is_some_and(|m| base_mime(m) == Kind::Docx.mime());
        if says_docx {
            return Err(Error::Encrypted);
        }
        return Err(Error::Unsupported(
            "legacy Microsoft Office files (.doc, .xls, .ppt); save it as .docx or PDF".to_owned(),
        ));
    }
    if let Some(what) = binary_magic(bytes) {
        return Err(Error::Unsupported(what.to_owned()));
    }
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(Error::Unsupported(
            "UTF-16 text; save it as UTF-8 and upload it again".to_owned(),
        ));
    }
    if looks_binary(bytes) {
        return Err(Error::Unsupported(
            "binary data (this is not a text file)".to_owned(),
        ));
    }
    let text = super::utf8_text(bytes)?;
    if text.trim().is_empty() {
        return Err(Error::Empty);
    }
    if let Some(kind) = ext.as_deref().and_then(kind_from_extension) {
        return Ok(kind);
    }
    if let Some(kind) = declared_mime.and_then(kind_from_mime) {
        return Ok(kind);
    }
    Ok(if looks_like_html(text) {
        Kind::Html
    } else {
        Kind::Text
    })
}

fn zip_kind(bytes: &[u8]) -> Result<Kind, Error> {
    // Detection reads at most `_rels/.rels`: a 1 MB budget is plenty.
    let mut package = docx::Package::new(bytes, 1024 * 1024, 64)?;
    if package.main_part()?.is_some() {
        return Ok(Kind::Docx);
    }
    let has = |name: &str| package.has(name);
    let reason = if has("xl/workbook.xml") {
        "Excel workbooks (.xlsx); export the sheet as CSV"
    } else if has("ppt/presentation.xml") {
        "PowerPoint presentations (.pptx); export it as PDF"
    } else if has("content.xml") && has("mimetype") {
        "OpenDocument files; save it as .docx or PDF"
    } else if has("META-INF/container.xml") {
        "EPUB books; convert it to PDF"
    } else {
        "ZIP archives; upload the documents inside it one by one"
    };
    Err(Error::Unsupported(reason.to_owned()))
}

/// Recognisable binary formats, named so the user knows what we saw.
fn binary_magic(bytes: &[u8]) -> Option<&'static str> {
    const TABLE: &[(&[u8], &str)] = &[
        (b"\x89PNG", "PNG images"),
        (b"\xFF\xD8\xFF", "JPEG images"),
        (b"GIF87a", "GIF images"),
        (b"GIF89a", "GIF images"),
        (b"BM", "BMP images"),
        (b"II*\x00", "TIFF images"),
        (b"MM\x00*", "TIFF images"),
        (b"\x00\x00\x01\x00", "icons"),
        (b"\x7FELF", "executables"),
        (b"MZ", "executables"),
        (b"\xCF\xFA\xED\xFE", "executables"),
        (b"\xCA\xFE\xBA\xBE", "executables"),
        (b"\x00asm", "WebAssembly modules"),
        (b"\x1F\x8B", "gzip archives"),
        (b"BZh", "bzip2 archives"),
        (b"\xFD7zXZ\x00", "xz archives"),
        (b"7z\xBC\xAF\x27\x1C", "7-Zip archives"),
        (b"Rar!", "RAR archives"),
        (b"\x28\xB5\x2F\xFD", "zstd archives"),
        (b"OggS", "audio/video files"),
        (b"fLaC", "audio files"),
        (b"ID3", "audio files"),
        (b"SQLite format 3\x00", "SQLite databases"),
        (b"{\\rtf", "RTF documents; save it as .docx or PDF"),
        (b"%!PS", "PostScript files; convert it to PDF"),
    ];
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" {
        return Some(match &bytes[8..12] {
            b"WEBP" => "WebP images",
            b"WAVE" => "audio files",
            _ => "audio/video files",
        });
    }
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        return Some("audio/video or HEIC image files");
    }
    TABLE
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
        .map(|(_, what)| *what)
}

/// Text files have no NUL bytes and almost no control characters; binary formats we do not
/// know by their magic number have plenty of both within the first few KB.
fn looks_binary(bytes: &[u8]) -> bool {
    let sample = &bytes[..bytes.len().min(64 * 1024)];
    if sample.contains(&0) {
        return true;
    }
    let controls = sample
        .iter()
        .filter(|b| **b < 0x20 && !matches!(**b, b'\t' | b'\n' | b'\r' | 0x0C | 0x1B))
        .count();
    controls * 100 > sample.len()
}

fn extension(file_name: &str) -> Option<String> {
    let name = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty()).then(|| ext.to_ascii_lowercase())
}

fn kind_from_extension(ext: &str) -> Option<Kind> {
    Some(match ext {
        "md" | "markdown" | "mdown" | "mkd" | "mkdn" => Kind::Markdown,
        "html" | "htm" | "xhtml" => Kind::Html,
        "csv" | "tsv" => Kind::Csv,
        "txt" | "text" => Kind::Text,
        _ => return None,
    })
}

fn base_mime(mime: &str) -> String {
    mime.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn kind_from_mime(mime: &str) -> Option<Kind> {
    Some(match base_mime(mime).as_str() {
        "text/markdown" | "text/x-markdown" => Kind::Markdown,
        "text/html" | "application/xhtml+xml" => Kind::Html,
        "text/csv" | "application/csv" | "text/tab-separated-values" => Kind::Csv,
        "text/plain" => Kind::Text,
        _ => return None,
    })
}

fn looks_like_html(text: &str) -> bool {
    let head: String = text
        .trim_start()
        .chars()
        .take(2048)
        .collect::<String>()
        .to_ascii_lowercase();
    head.starts_with("<!doctype html")
        || head.starts_with("<html")
        || (head.starts_with('<') && (head.contains("<body") || head.contains("<head")))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_bytes_and_uses_names_only_for_text_flavours() {
        assert_eq!(detect(b"%PDF-1.7\n...", "x.txt", None).unwrap(), Kind::Pdf);
        assert_eq!(
            detect(b"# Title\n", "notes.md", None).unwrap(),
            Kind::Markdown
        );
        assert_eq!(detect(b"a,b\n1,2\n", "t.CSV", None).unwrap(), Kind::Csv);
        assert_eq!(detect(b"a\tb\n1\t2\n", "t.tsv", None).unwrap(), Kind::Csv);
        assert_eq!(
            detect(b"hello", "upload", Some("text/markdown; charset=utf-8")).unwrap(),
            Kind::Markdown
        );
        assert_eq!(
            detect(b"<!DOCTYPE html><p>x</p>", "page", None).unwrap(),
            Kind::Html
        );
        assert_eq!(
            detect(b"<html><body>x</body></html>", "p.htm", None).unwrap(),
            Kind::Html
        );
        // A name that says text wins over sniffing: HTML source saved as .txt stays source.
        assert_eq!(
            detect(b"<html><body>x</body></html>", "p.txt", None).unwrap(),
            Kind::Text
        );
        assert_eq!(
            detect(
                "caf\u{e9}\n".as_bytes(),
                "x",
                Some("application/octet-stream")
            )
            .unwrap(),
            Kind::Text
        );
        assert_eq!(
            detect(b"\xEF\xBB\xBFhello", "a.txt", None).unwrap(),
            Kind::Text
        );
    }

    #[test]
    fn rejects_binary_and_bad_text() {
        assert!(matches!(detect(b"", "a.txt", None), Err(Error::Empty)));
        assert!(matches!(
            detect(b"   \n\t", "a.txt", None),
            Err(Error::Empty)
        ));
        let png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR";
        assert!(
            matches!(detect(png, "a.txt", Some("text/plain")), Err(Error::Unsupported(r)) if r.contains("PNG"))
        );
        assert!(matches!(
            detect(b"MZ\x90\x00\x03", "setup.txt", None),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            detect(b"\x7FELF\x02\x01", "a.md", None),
            Err(Error::Unsupported(_))
        ));
        let mut random = vec![0u8; 4096];
        let mut x = 0x1234_5678u32;
        for b in &mut random {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        assert!(
            matches!(detect(&random, "data.txt", None), Err(Error::Unsupported(r)) if r.contains("binary"))
        );
        // Latin-1 text: not binary, but not UTF-8 either.
        assert!(matches!(
            detect(b"caf\xE9 cr\xE8me\n", "menu.txt", None),
            Err(Error::InvalidUtf8)
        ));
        assert!(matches!(
            detect(b"\xFF\xFEh\x00i\x00", "u16.txt", None),
            Err(Error::Unsupported(_))
        ));
        let ole = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0, 0];
        assert!(matches!(
            detect(&ole, "secret.docx", None),
            Err(Error::Encrypted)
        ));
        assert!(matches!(
            detect(&ole, "old.doc", None),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn tells_word_documents_from_other_zips() {
        let docx = crate::ingest::tests::fixtures::docx_handbook();
        assert_eq!(detect(&docx, "handbook.bin", None).unwrap(), Kind::Docx);
        let xlsx =
            crate::ingest::tests::fixtures::zip_with(&[("xl/workbook.xml", b"<w/>".as_slice())]);
        assert!(
            matches!(detect(&xlsx, "a.docx", None), Err(Error::Unsupported(r)) if r.contains("Excel"))
        );
        let other = crate::ingest::tests::fixtures::zip_with(&[("readme.txt", b"hi".as_slice())]);
        assert!(
            matches!(detect(&other, "a.docx", None), Err(Error::Unsupported(r)) if r.contains("ZIP"))
        );
        assert!(matches!(
            detect(b"PK\x03\x04garbage", "a.docx", None),
            Err(Error::Corrupt(_))
        ));
    }
}
