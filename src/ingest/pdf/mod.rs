//! PDF text extraction with lopdf: text per page in content-stream order (the producer's
//! reading order; we do not re-sort by position, which scrambles multi-column layouts), decoded
//! through lopdf's font encodings (ToUnicode CMaps, WinAnsi/MacRoman/Standard, Differences),
//! with line and word breaks recovered from text positions, headings from the outline
//! (bookmarks) or, without one, from font sizes larger than the body text, running headers,
//! footers and page numbers dropped, and title/author from the Info dictionary.
//!
//! Bounds, and why they hold:
//! - Page count: `/Count` of the page tree is checked right after loading, and pages are then
//!   enumerated lazily up to `max_pages + 1`, so a lying `/Count` cannot make us walk more.
//!   Loading itself parses every object of the file (lopdf has no lazy mode), which is bounded
//!   by `max_bytes`: a 10,000-page file with a shared content stream loads in milliseconds.
//! - Decompression: lopdf 0.47 bounds each stream it inflates while loading (object and xref
//!   streams) via `LoadOptions::max_decompressed_size`; we set it to the smaller of
//!   `max_inflated_bytes` and 64 MB. That bound is per stream (lopdf has no total for the
//!   load), so memory stays bounded while a file packed with many near-limit object streams
//!   can still cost CPU. Everything inflated afterwards (page content, form XObjects,
//!   ToUnicode CMaps) goes through lopdf's `*_with_limit` calls against the document's
//!   remaining `max_inflated_bytes` budget, so that total is bounded.
//! - Recursion: form XObjects nest at most 8 deep (cycles are cut), the graphics-state stack is
//!   capped, and the outline is walked with an explicit stack and a visited set.
//! - Encrypted files: lopdf opens files encrypted with an empty user password (permission-only
//!   "protection" that every viewer opens silently); anything that needs a password is
//!   `Error::Encrypted`.

mod fonts;
mod interpreter;
mod layout;
mod outline;
#[cfg(test)]
mod tests;

use super::{Error, Limits, Parsed};
use interpreter::Extractor;
use lopdf::{DecompressError, Dictionary, Document, LoadOptions, Object, ObjectId};

/// Per-stream inflation cap while loading. Object and xref streams of real files are far
/// smaller; the cap keeps one crafted stream from holding hundreds of MB during the load.
const LOAD_STREAM_CAP: u64 = 64 * 1024 * 1024;

pub(super) fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, Error> {
    let per_stream = limits.max_inflated_bytes.min(LOAD_STREAM_CAP);
    let options = LoadOptions {
        max_decompressed_size: Some(usize::try_from(per_stream).unwrap_or(usize::MAX)),
        ..LoadOptions::default()
    };
    let doc = Document::load_mem_with_options(bytes, options).map_err(|e| load_error(e, bytes))?;
    // lopdf removes /Encrypt once it has decrypted with the empty password; if it is still
    // there, the file needs a password we do not have.
    if doc.trailer.has(b"Encrypt") {
        return Err(Error::Encrypted);
    }
    let pages = page_ids(&doc, limits.max_pages)?;
    if pages.is_empty() {
        return Err(Error::Corrupt("the PDF has no pages".to_owned()));
    }
    let (title, author) = info(&doc);
    let outline = outline::outline(&doc, &pages);

    let shadows = fonts::to_unicode_shadows(&doc);
    let mut extractor = Extractor::new(&doc, &shadows, limits);
    let mut page_lines = Vec::with_capacity(pages.len());
    for page_id in &pages {
        page_lines.push(extractor.page(*page_id)?);
    }
    if page_lines.iter().all(Vec::is_empty) {
        return Err(Error::ImageOnly);
    }
    let out = layout::assemble(&page_lines, &outline, limits)?;
    let title = title.or_else(|| layout::first_page_title(&page_lines));
    let mut parsed = out.into_parsed(title, author);
    parsed.pages = Some(u32::try_from(pages.len()).unwrap_or(u32::MAX));
    Ok(parsed)
}

fn load_error(e: lopdf::Error, bytes: &[u8]) -> Error {
    match e {
        lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. }) => {
            Error::DecompressionLimit
        }
        lopdf::Error::Decryption(_)
        | lopdf::Error::InvalidPassword
        | lopdf::Error::UnsupportedSecurityHandler(_) => Error::Encrypted,
        // A malformed or unsupported encryption dictionary fails in many ways; the file still
        // says what it is.
        _ if contains(bytes, b"/Encrypt") => Error::Encrypted,
        e => Error::Corrupt(format!("the PDF cannot be read ({e})")),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn deref<'a>(doc: &'a Document, obj: &'a Object) -> Option<&'a Object> {
    doc.dereference(obj).ok().map(|(_, o)| o)
}

fn get<'a>(doc: &'a Document, dict: &'a Dictionary, key: &[u8]) -> Option<&'a Object> {
    dict.get(key).ok().and_then(|o| deref(doc, o))
}

fn get_dict<'a>(doc: &'a Document, dict: &'a Dictionary, key: &[u8]) -> Option<&'a Dictionary> {
    get(doc, dict, key).and_then(|o| o.as_dict().ok())
}

fn name_is(dict: &Dictionary, key: &[u8], value: &[u8]) -> bool {
    dict.get(key)
        .and_then(Object::as_name)
        .is_ok_and(|n| n == value)
}

fn num(obj: &Object) -> Option<f64> {
    match obj {
        Object::Integer(i) => Some(*i as f64),
        Object::Real(r) if r.is_finite() => Some(f64::from(*r)),
        _ => None,
    }
}

fn page_ids(doc: &Document, max_pages: u32) -> Result<Vec<ObjectId>, Error> {
    let declared = doc
        .catalog()
        .ok()
        .and_then(|c| get_dict(doc, c, b"Pages"))
        .and_then(|p| get(doc, p, b"Count"))
        .and_then(|c| c.as_i64().ok())
        .map(|c| u32::try_from(c.max(0)).unwrap_or(u32::MAX));
    if let Some(count) = declared
        && count > max_pages
    {
        return Err(Error::TooManyPages {
            pages: count,
            max: max_pages,
        });
    }
    let limit = usize::try_from(max_pages)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let pages: Vec<ObjectId> = doc.page_iter().take(limit).collect();
    if pages.len() > limit - 1 {
        return Err(Error::TooManyPages {
            pages: u32::try_from(pages.len()).unwrap_or(u32::MAX),
            max: max_pages,
        });
    }
    Ok(pages)
}

fn info(doc: &Document) -> (Option<String>, Option<String>) {
    let Some(info) = doc
        .trailer
        .get(b"Info")
        .ok()
        .and_then(|o| deref(doc, o))
        .and_then(|o| o.as_dict().ok())
    else {
        return (None, None);
    };
    let field = |key: &[u8]| {
        get(doc, info, key)
            .and_then(|o| lopdf::decode_text_string(o).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    // Word's PDF export titles documents "Microsoft Word - file.docx".
    let title = field(b"Title").map(|t| {
        t.strip_prefix("Microsoft Word - ")
            .map(str::to_owned)
            .unwrap_or(t)
    });
    (title, field(b"Author"))
}
