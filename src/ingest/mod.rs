//! Document ingestion: file-type detection, parsers (PDF, DOCX, plain text, Markdown, HTML, CSV)
//! and the token-aware chunker. Pure functions over bytes; the only I/O is reading a tokenizer
//! file. Must not depend on `api`, `domain` or `store` (it is used below them).
//!
//! Everything here handles hostile input: every parser works within [`Limits`] (input size,
//! pages, bytes inflated from ZIP entries and PDF streams, XML nesting, extracted characters),
//! nothing recurses on input structure, and [`parse`] turns a panic inside a third-party parser
//! into [`Error::Corrupt`] as a last line of defence. Parsing is CPU work: callers run it on a
//! blocking thread, never on the async workers.
//!
//! Headings are not repeated in [`Section::text`]; they travel in [`Section::headings`] (and so
//! in [`ChunkText::headings`]) for the caller to show or embed as context.

mod chunk;
mod delimited;
mod detect;
mod docx;
mod html;
mod pdf;
#[cfg(test)]
mod tests;
mod text;

pub use chunk::{ChunkText, Chunker};
pub use detect::detect;

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Resource limits for one document. The defaults suit a 2-core server with a few GB of RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted upload, in bytes.
    pub max_bytes: u64,
    /// Most pages a PDF may have; checked before any page is read.
    pub max_pages: u32,
    /// Total bytes that may be inflated from ZIP entries (DOCX) or PDF streams for one document.
    pub max_inflated_bytes: u64,
    /// Deepest element nesting accepted in XML (DOCX) and HTML.
    pub max_xml_depth: u32,
    /// Most characters of text one document may yield.
    pub max_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 50 * 1024 * 1024,
            max_pages: 2000,
            max_inflated_bytes: 200 * 1024 * 1024,
            max_xml_depth: 256,
            max_chars: 20_000_000,
        }
    }
}

/// A document type we can parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pdf,
    Docx,
    Text,
    Markdown,
    Html,
    Csv,
}

impl Kind {
    /// The canonical MIME type of this kind.
    pub fn mime(self) -> &'static str {
        match self {
            Kind::Pdf => "application/pdf",
            Kind::Docx => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            Kind::Text => "text/plain",
            Kind::Markdown => "text/markdown",
            Kind::Html => "text/html",
            Kind::Csv => "text/csv",
        }
    }
}

/// A block of text (a paragraph, a list, a table's rows) with where it sits in the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub text: String,
    /// 1-based page number, for paged formats (PDF).
    pub page: Option<u32>,
    /// The heading path above this block, outermost first.
    pub headings: Vec<String>,
}

/// The text of a document, as sections in reading order, plus its metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub title: Option<String>,
    pub author: Option<String>,
    /// Page count, for paged formats (PDF).
    pub pages: Option<u32>,
    pub sections: Vec<Section>,
}

/// Why a document could not be ingested. Each message is meant for the person who uploaded it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("this type of file is not supported: {0}")]
    Unsupported(String),
    #[error("the file is empty or contains no text")]
    Empty,
    #[error("the document is encrypted or password-protected; upload an unprotected copy")]
    Encrypted,
    #[error(
        "the PDF has no extractable text (scanned images?); run it through OCR and upload it again"
    )]
    ImageOnly,
    #[error("the document is too large: {0}")]
    TooLarge(String),
    #[error("the PDF has {pages} pages; at most {max} pages are accepted")]
    TooManyPages { pages: u32, max: u32 },
    #[error("the file is damaged or not a valid document: {0}")]
    Corrupt(String),
    #[error("the text is not valid UTF-8; save it with UTF-8 encoding and upload it again")]
    InvalidUtf8,
    #[error("the document is nested too deeply to be processed safely")]
    TooDeep,
    #[error("the document expands to too much data when decompressed (a possible zip bomb)")]
    DecompressionLimit,
}

/// Parses a document of a known kind (see [`detect`]) into sections.
///
/// Fails with [`Error::Empty`] when the document has no text at all (for PDFs with pages but no
/// text: [`Error::ImageOnly`]).
pub fn parse(kind: Kind, bytes: &[u8], limits: &Limits) -> Result<Parsed, Error> {
    if bytes.is_empty() {
        return Err(Error::Empty);
    }
    check_size(bytes, limits)?;
    // A panic in a third-party parser on hostile input must not take the worker down with it.
    let result = catch_unwind(AssertUnwindSafe(|| match kind {
        Kind::Pdf => pdf::parse(bytes, limits),
        Kind::Docx => docx::parse(bytes, limits),
        Kind::Text => text::parse_plain(bytes, limits),
        Kind::Markdown => text::parse_markdown(bytes, limits),
        Kind::Html => html::parse(bytes, limits),
        Kind::Csv => delimited::parse(bytes, limits),
    }));
    let parsed = match result {
        Ok(parsed) => parsed?,
        Err(_) => {
            return Err(Error::Corrupt(
                "the parser failed on this file's contents".to_owned(),
            ));
        }
    };
    if parsed.sections.is_empty() {
        return Err(if kind == Kind::Pdf {
            Error::ImageOnly
        } else {
            Error::Empty
        });
    }
    Ok(parsed)
}

fn check_size(bytes: &[u8], limits: &Limits) -> Result<(), Error> {
    let len = bytes.len() as u64;
    if len > limits.max_bytes {
        return Err(Error::TooLarge(format!(
            "the file is {}, the limit is {}",
            human_bytes(len),
            human_bytes(limits.max_bytes)
        )));
    }
    Ok(())
}

fn human_bytes(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if n >= MIB {
        format!("{:.1} MB", n as f64 / MIB as f64)
    } else {
        format!("{n} bytes")
    }
}

/// Strips a UTF-8 byte order mark and validates the rest as UTF-8.
fn utf8_text(bytes: &[u8]) -> Result<&str, Error> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|_| Error::InvalidUtf8)
}

/// The heading path while walking a document: a stack of (level, text).
#[derive(Default)]
struct HeadingStack(Vec<(u8, String)>);

impl HeadingStack {
    /// A heading at `level` (1 = outermost) replaces every open heading at that level or deeper.
    /// Skipped levels (an h3 right under an h1) simply nest under the nearest outer heading.
    fn set(&mut self, level: u8, text: &str) {
        let text = clean_heading(text);
        if text.is_empty() {
            return;
        }
        while self.0.last().is_some_and(|(l, _)| *l >= level) {
            self.0.pop();
        }
        self.0.push((level, text));
    }

    fn path(&self) -> Vec<String> {
        self.0.iter().map(|(_, t)| t.clone()).collect()
    }
}

/// Longest heading kept; anything longer is a misdetected paragraph, not a title.
const MAX_HEADING_CHARS: usize = 300;

fn clean_heading(text: &str) -> String {
    let collapsed = collapse_whitespace(text);
    match collapsed.char_indices().nth(MAX_HEADING_CHARS) {
        Some((cut, _)) => collapsed[..cut].trim_end().to_owned(),
        None => collapsed,
    }
}

/// Collapses every run of whitespace to one space and trims the ends.
fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Collects sections while enforcing `max_chars`, so a parser stops as soon as a document yields
/// more text than we accept instead of building it all first.
struct Collector {
    sections: Vec<Section>,
    headings: HeadingStack,
    chars: usize,
    max_chars: usize,
}

impl Collector {
    fn new(limits: &Limits) -> Self {
        Self {
            sections: Vec::new(),
            headings: HeadingStack::default(),
            chars: 0,
            max_chars: limits.max_chars,
        }
    }

    fn count(&mut self, text: &str) -> Result<(), Error> {
        self.chars = self.chars.saturating_add(text.chars().count());
        if self.chars > self.max_chars {
            return Err(Error::TooLarge(format!(
                "it has more than {} characters of text",
                self.max_chars
            )));
        }
        Ok(())
    }

    fn heading(&mut self, level: u8, text: &str) -> Result<(), Error> {
        self.count(text)?;
        self.headings.set(level, text);
        Ok(())
    }

    /// Adds a block under the current heading path; blank blocks are dropped.
    fn push(&mut self, text: &str, page: Option<u32>) -> Result<(), Error> {
        let text = clean_block(text);
        if text.is_empty() {
            return Ok(());
        }
        self.count(&text)?;
        self.sections.push(Section {
            text,
            page,
            headings: self.headings.path(),
        });
        Ok(())
    }

    fn into_parsed(self, title: Option<String>, author: Option<String>) -> Parsed {
        Parsed {
            title: title.map(|t| clean_heading(&t)).filter(|t| !t.is_empty()),
            author: author
                .map(|a| collapse_whitespace(&a))
                .filter(|a| !a.is_empty()),
            pages: None,
            sections: self.sections,
        }
    }
}

/// Normalises a block: unified newlines, no control characters (they confuse tokenizers and
/// are never meaningful in extracted text), no trailing spaces, at most one blank line in a
/// row, trimmed.
fn clean_block(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0usize;
    for line in text.split('\n') {
        let line: String = line
            .chars()
            .filter(|c| *c == '\t' || !c.is_control())
            .collect();
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank_run += 1;
            if blank_run > 1 || out.is_empty() {
                continue;
            }
            out.push('\n');
            continue;
        }
        blank_run = 0;
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
    }
    out.trim().to_owned()
}
