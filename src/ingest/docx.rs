//! DOCX text extraction: reads the ZIP package with bounded inflation and streams
//! `word/document.xml` through quick-xml, keeping headings (from paragraph styles), paragraphs,
//! lists and tables (one "cell | cell" line per row), plus title/author from `docProps/core.xml`.
//!
//! Why not docx-rs's reader: it inflates whole parts into memory with no limit and builds a
//! recursive tree, so a zip bomb or 100k nested elements would exhaust memory or the stack before
//! we could object. Here every byte inflated from the archive is counted against
//! `Limits::max_inflated_bytes` as it is produced (declared sizes are checked too, but never
//! trusted), and XML nesting is counted while streaming, failing with `TooDeep` past
//! `Limits::max_xml_depth`. Nothing recurses on the document's structure.

use super::{Collector, Error, Limits, Parsed};
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::rc::Rc;
use zip::ZipArchive;
use zip::result::ZipError;

type Archive<'a> = ZipArchive<Cursor<&'a [u8]>>;

fn open_archive(bytes: &[u8]) -> Result<Archive<'_>, Error> {
    ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| Error::Corrupt(format!("the ZIP container cannot be read ({e})")))
}

/// Inflation budget shared by every part read from one package.
struct Budget {
    left: Cell<u64>,
    tripped: Cell<bool>,
}

/// Counts bytes as the ZIP entry inflates them and fails the read once the budget is spent, so a
/// lying header cannot make us inflate more than we allow.
struct Counted<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                // The zip crate itself refuses to inflate an entry past its declared size
                // (zip 9: "File is larger than its declared uncompressed size"). That is a
                // bomb with a lying header, not damage. Matched on the message because the
                // crate has no error type for it; if the wording changes, the file is still
                // refused, as Corrupt.
                if e.kind() == io::ErrorKind::InvalidData
                    && e.to_string().contains("declared uncompressed size")
                {
                    self.budget.tripped.set(true);
                }
                return Err(e);
            }
        };
        let left = self.budget.left.get();
        if n as u64 > left {
            self.budget.tripped.set(true);
            return Err(io::Error::other("decompression limit reached"));
        }
        self.budget.left.set(left - n as u64);
        Ok(n)
    }
}

/// A DOCX (OPC) package with a shared inflation budget.
pub(super) struct Package<'a> {
    archive: Archive<'a>,
    budget: Rc<Budget>,
    max_depth: u32,
}

impl<'a> Package<'a> {
    pub(super) fn new(bytes: &'a [u8], max_inflated: u64, max_depth: u32) -> Result<Self, Error> {
        Ok(Self {
            archive: open_archive(bytes)?,
            budget: Rc::new(Budget {
                left: Cell::new(max_inflated),
                tripped: Cell::new(false),
            }),
            max_depth,
        })
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.archive.index_for_name(name).is_some()
    }

    /// Streams one part through `f`; `Ok(None)` when the part does not exist.
    fn with_part<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut dyn BufRead, u32) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        let file = match self.archive.by_name(name) {
            Ok(file) => file,
            Err(ZipError::FileNotFound) => return Ok(None),
            Err(ZipError::InvalidPassword) => return Err(Error::Encrypted),
            Err(e) => return Err(Error::Corrupt(format!("cannot open {name} ({e})"))),
        };
        if file.encrypted() {
            return Err(Error::Encrypted);
        }
        // Cheap early refusal on the declared size; the real guard is `Counted`.
        let declared = file.size();
        if declared > self.budget.left.get() {
            return Err(Error::DecompressionLimit);
        }
        let mut reader = BufReader::new(Counted {
            inner: file,
            budget: Rc::clone(&self.budget),
        });
        let result = f(&mut reader, self.max_depth);
        if self.budget.tripped.get() {
            return Err(Error::DecompressionLimit);
        }
        result.map(Some)
    }

    /// The main document part: the `officeDocument` relationship's target when it lives under
    /// `word/`, else the conventional `word/document.xml`.
    pub(super) fn main_part(&mut self) -> Result<Option<String>, Error> {
        let target = self
            .with_part("_rels/.rels", |r, depth| {
                let mut target = None;
                walk_xml(r, depth, |ev| {
                    if let Xml::Open(e) = ev
                        && e.local_name().as_ref() == b"Relationship"
                        && attr(e, b"Type").is_some_and(|t| t.ends_with("/officeDocument"))
                    {
                        target = attr(e, b"Target");
                    }
                    Ok(())
                })?;
                Ok(target)
            })
            // A broken relationships part is not fatal: fall back to the conventional name.
            .or_else(|e| match e {
                Error::Corrupt(_) => Ok(None),
                e => Err(e),
            })?
            .flatten()
            .map(|t| t.trim_start_matches('/').to_owned());
        if let Some(t) = target
            && t.starts_with("word/")
            && self.has(&t)
        {
            return Ok(Some(t));
        }
        Ok(self
            .has("word/document.xml")
            .then(|| "word/document.xml".to_owned()))
    }
}

pub(super) fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, Error> {
    let mut pkg = Package::new(bytes, limits.max_inflated_bytes, limits.max_xml_depth)?;
    let main = pkg.main_part()?.ok_or_else(|| {
        Error::Unsupported("ZIP archives that do not hold a Word document".to_owned())
    })?;
    let styles = optional(pkg.with_part("word/styles.xml", read_styles))?.unwrap_or_default();
    let (title, author) =
        optional(pkg.with_part("docProps/core.xml", read_core))?.unwrap_or_default();

    let mut body = Body::new(&styles, limits);
    pkg.with_part(&main, |r, depth| walk_xml(r, depth, |ev| body.on(ev)))?;
    body.flush_list()?;
    let title = title.or(body.title_paragraph.take());
    // docx-rs and some converters write a literal "unknown" creator.
    let author = author.filter(|a| !a.trim().eq_ignore_ascii_case("unknown"));
    Ok(body.out.into_parsed(title, author))
}

/// Styles and metadata are optional: a damaged one is skipped, but limits still apply.
fn optional<T>(r: Result<Option<T>, Error>) -> Result<Option<T>, Error> {
    match r {
        Err(Error::Corrupt(_)) => Ok(None),
        other => other,
    }
}

/// One streamed XML event, with entity and character references already resolved in text.
enum Xml<'e, 'b> {
    Open(&'e BytesStart<'b>),
    Close(&'e [u8]),
    Text(&'e str),
}

/// Streams XML events to `on`, tracking element depth and failing with `TooDeep` past
/// `max_depth`. Only the predefined XML entities are expanded, so entity-expansion bombs are
/// inert (a custom entity is dropped).
fn walk_xml(
    reader: &mut dyn BufRead,
    max_depth: u32,
    mut on: impl FnMut(Xml<'_, '_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut xml = Reader::from_reader(reader);
    let mut buf = Vec::new();
    let mut depth = 0u32;
    loop {
        let event = xml
            .read_event_into(&mut buf)
            .map_err(|e| Error::Corrupt(format!("invalid XML ({e})")))?;
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                depth += 1;
                if depth > max_depth {
                    return Err(Error::TooDeep);
                }
                on(Xml::Open(e))?;
                if matches!(event, Event::Empty(_)) {
                    on(Xml::Close(e.local_name().as_ref()))?;
                    depth -= 1;
                }
            }
            Event::End(e) => {
                on(Xml::Close(e.local_name().as_ref()))?;
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) => {
                let text = t
                    .decode()
                    .map_err(|e| Error::Corrupt(format!("invalid text encoding ({e})")))?;
                on(Xml::Text(&text))?;
            }
            Event::CData(t) => {
                let text = t
                    .decode()
                    .map_err(|e| Error::Corrupt(format!("invalid text encoding ({e})")))?;
                on(Xml::Text(&text))?;
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    _ => match &**r {
                        b"amp" => Some('&'),
                        b"lt" => Some('<'),
                        b"gt" => Some('>'),
                        b"quot" => Some('"'),
                        b"apos" => Some('\''),
                        _ => None,
                    },
                };
                if let Some(c) = resolved {
                    on(Xml::Text(c.encode_utf8(&mut [0u8; 4])))?;
                }
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
        buf.clear();
    }
}

fn attr(e: &BytesStart<'_>, local: &[u8]) -> Option<String> {
    e.attributes()
        .with_checks(false)
        .flatten()
        .find(|a| a.key.local_name().as_ref() == local)
        .and_then(|a| {
            a.normalized_value(XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

/// `docProps/core.xml`: (dc:title, dc:creator).
fn read_core(r: &mut dyn BufRead, depth: u32) -> Result<(Option<String>, Option<String>), Error> {
    let (mut title, mut creator) = (String::new(), String::new());
    let mut current: Option<bool> = None; // Some(true) = in title, Some(false) = in creator
    walk_xml(r, depth, |ev| {
        match ev {
            Xml::Open(e) => {
                current = match e.local_name().as_ref() {
                    b"title" => Some(true),
                    b"creator" => Some(false),
                    _ => None,
                }
            }
            Xml::Close(_) => current = None,
            Xml::Text(t) => match current {
                Some(true) if title.len() < 4096 => title.push_str(t),
                Some(false) if creator.len() < 4096 => creator.push_str(t),
                _ => {}
            },
        }
        Ok(())
    })?;
    let keep = |s: String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    Ok((keep(title), keep(creator)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heading {
    Title,
    Level(u8),
}

#[derive(Default)]
struct StyleDef {
    name: String,
    based_on: Option<String>,
    outline: Option<u8>,
    numbered: bool,
}

/// Paragraph styles from `word/styles.xml`, enough to recognise headings and list styles.
#[derive(Default)]
struct Styles(HashMap<String, StyleDef>);

/// Longest `basedOn` chain followed; real documents use a handful, loops exist in the wild.
const MAX_STYLE_CHAIN: usize = 16;

impl Styles {
    fn heading(&self, id: &str) -> Option<Heading> {
        let mut current = Some(id);
        for _ in 0..MAX_STYLE_CHAIN {
            let Some(id) = current else { break };
            if let Some(h) = heading_from_name(id) {
                return Some(h);
            }
            let def = self.0.get(id)?;
            if let Some(level) = def.outline {
                return Some(Heading::Level(level));
            }
            if let Some(h) = heading_from_name(&def.name) {
                return Some(h);
            }
            current = def.based_on.as_deref();
        }
        None
    }

    /// Table-of-contents entries (built-in styles "toc 1".."toc 9", "TOC Heading") repeat the
    /// headings with page numbers: noise for retrieval.
    fn is_toc(&self, id: &str) -> bool {
        let toc = |s: &str| s.trim().to_ascii_lowercase().starts_with("toc");
        toc(id) || self.0.get(id).is_some_and(|def| toc(&def.name))
    }

    fn numbered(&self, id: &str) -> bool {
        let mut current = Some(id);
        for _ in 0..MAX_STYLE_CHAIN {
            let Some(def) = current.and_then(|id| self.0.get(id)) else {
                return false;
            };
            if def.numbered {
                return true;
            }
            current = def.based_on.as_deref();
        }
        false
    }
}

/// Word's built-in names ("heading 1", "Title") and ids ("Heading1") are English in every
/// language version, so they identify headings even when the display name is localised.
fn heading_from_name(name: &str) -> Option<Heading> {
    let lower = name.trim().to_ascii_lowercase();
    if lower == "title" {
        return Some(Heading::Title);
    }
    let rest = lower.strip_prefix("heading")?.trim_start();
    let level: u8 = rest.parse().ok()?;
    (1..=9).contains(&level).then_some(Heading::Level(level))
}

/// `w:outlineLvl` is 0-based and 9 means body text.
fn outline_level(val: Option<String>) -> Option<u8> {
    let v: u8 = val?.trim().parse().ok()?;
    (v < 9).then_some(v + 1)
}

fn read_styles(r: &mut dyn BufRead, depth: u32) -> Result<Styles, Error> {
    let mut styles = Styles::default();
    let mut current: Option<(String, StyleDef)> = None;
    walk_xml(r, depth, |ev| {
        match ev {
            Xml::Open(e) => match e.local_name().as_ref() {
                b"style" => {
                    current = (attr(e, b"type").as_deref() == Some("paragraph"))
                        .then(|| attr(e, b"styleId"))
                        .flatten()
                        .map(|id| (id, StyleDef::default()));
                }
                b"name" => {
                    if let Some((_, def)) = current.as_mut() {
                        def.name = attr(e, b"val").unwrap_or_default();
                    }
                }
                b"basedOn" => {
                    if let Some((_, def)) = current.as_mut() {
                        def.based_on = attr(e, b"val");
                    }
                }
                b"outlineLvl" => {
                    if let Some((_, def)) = current.as_mut() {
                        def.outline = outline_level(attr(e, b"val"));
                    }
                }
                b"numPr" => {
                    if let Some((_, def)) = current.as_mut() {
                        def.numbered = true;
                    }
                }
                _ => {}
            },
            Xml::Close(b"style") => {
                if let Some((id, def)) = current.take() {
                    styles.0.insert(id, def);
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(styles)
}

#[derive(Default)]
struct Para {
    text: String,
    style: Option<String>,
    outline: Option<u8>,
    numbered: Option<bool>,
    list_level: u8,
}

#[derive(Default)]
struct Table {
    rows: Vec<String>,
    cells: Vec<String>,
    cell: Option<String>,
}

/// Walks `word/document.xml`. Paragraphs can nest (text boxes live inside a run of the outer
/// paragraph) and tables can nest inside cells, so both are stacks.
struct Body<'s> {
    styles: &'s Styles,
    out: Collector,
    paras: Vec<Para>,
    tables: Vec<Table>,
    /// Depth inside `w:t` elements: only their text is document text.
    in_text: u32,
    /// Depth inside property elements (`w:pPr`, `w:rPr`...), whose `w:tab` are tab stops.
    in_props: u32,
    /// Element depth of a skipped subtree (deleted text, `mc:Fallback` duplicates) and the
    /// current depth, to know when the subtree ends.
    skip_from: Option<u32>,
    depth: u32,
    list: Vec<String>,
    title_paragraph: Option<String>,
}

/// Longest text kept for one paragraph or table cell before we stop appending: a single
/// paragraph this long is hostile, and the character limit catches the rest.
const MAX_BLOCK_BYTES: usize = 16 * 1024 * 1024;

impl<'s> Body<'s> {
    fn new(styles: &'s Styles, limits: &Limits) -> Self {
        Self {
            styles,
            out: Collector::new(limits),
            paras: Vec::new(),
            tables: Vec::new(),
            in_text: 0,
            in_props: 0,
            skip_from: None,
            depth: 0,
            list: Vec::new(),
            title_paragraph: None,
        }
    }

    fn on(&mut self, ev: Xml<'_, '_>) -> Result<(), Error> {
        match ev {
            Xml::Open(e) => {
                self.depth += 1;
                if self.skip_from.is_some() {
                    return Ok(());
                }
                self.open(e);
            }
            Xml::Close(name) => {
                let depth = self.depth;
                self.depth = self.depth.saturating_sub(1);
                match self.skip_from {
                    Some(d) if d == depth => self.skip_from = None,
                    Some(_) => {}
                    None => self.close(name)?,
                }
            }
            Xml::Text(t) => {
                if self.skip_from.is_none()
                    && self.in_text > 0
                    && let Some(p) = self.paras.last_mut()
                {
                    push_limited(&mut p.text, t);
                }
            }
        }
        Ok(())
    }

    fn open(&mut self, e: &BytesStart<'_>) {
        let name = e.local_name();
        match name.as_ref() {
            // Deleted or moved-away revisions, and the legacy duplicate of drawing text boxes.
            b"del" | b"moveFrom" | b"Fallback" => self.skip_from = Some(self.depth),
            b"p" => self.paras.push(Para::default()),
            b"pPr" | b"rPr" | b"tblPr" | b"trPr" | b"tcPr" | b"sectPr" | b"tabs" => {
                self.in_props += 1
            }
            b"pStyle" => {
                if let Some(p) = self.paras.last_mut() {
                    p.style = attr(e, b"val");
                }
            }
            b"outlineLvl" => {
                if let Some(p) = self.paras.last_mut() {
                    p.outline = outline_level(attr(e, b"val"));
                }
            }
            b"numPr" => {
                if let Some(p) = self.paras.last_mut() {
                    p.numbered = Some(true);
                }
            }
            // numId 0 explicitly removes numbering inherited from the style.
            b"numId" => {
                if let Some(p) = self.paras.last_mut()
                    && attr(e, b"val").as_deref() == Some("0")
                {
                    p.numbered = Some(false);
                }
            }
            b"ilvl" => {
                if let Some(p) = self.paras.last_mut() {
                    p.list_level = attr(e, b"val")
                        .and_then(|v| v.parse::<u8>().ok())
                        .unwrap_or(0)
                        .min(8);
                }
            }
            b"t" => self.in_text += 1,
            b"tab" if self.in_props == 0 => self.push_char(' '),
            b"br" | b"cr" if self.in_props == 0 => self.push_char('\n'),
            b"noBreakHyphen" => self.push_char('-'),
            b"tbl" => self.tables.push(Table::default()),
            b"tr" => {
                if let Some(t) = self.tables.last_mut() {
                    t.cells.clear();
                }
            }
            b"tc" => {
                if let Some(t) = self.tables.last_mut() {
                    t.cell = Some(String::new());
                }
            }
            _ => {}
        }
    }

    fn push_char(&mut self, c: char) {
        if let Some(p) = self.paras.last_mut() {
            push_limited(&mut p.text, c.encode_utf8(&mut [0u8; 4]));
        }
    }

    fn close(&mut self, name: &[u8]) -> Result<(), Error> {
        match name {
            b"t" => self.in_text = self.in_text.saturating_sub(1),
            b"pPr" | b"rPr" | b"tblPr" | b"trPr" | b"tcPr" | b"sectPr" | b"tabs" => {
                self.in_props = self.in_props.saturating_sub(1)
            }
            b"p" => {
                if let Some(p) = self.paras.pop() {
                    self.paragraph(p)?;
                }
            }
            b"tc" => {
                if let Some(t) = self.tables.last_mut()
                    && let Some(cell) = t.cell.take()
                {
                    t.cells.push(super::collapse_whitespace(&cell));
                }
            }
            b"tr" => {
                if let Some(t) = self.tables.last_mut() {
                    let cells = std::mem::take(&mut t.cells);
                    if cells.iter().any(|c| !c.is_empty()) {
                        t.rows.push(cells.join(" | "));
                    }
                }
            }
            b"tbl" => {
                if let Some(t) = self.tables.pop() {
                    self.table(t)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn paragraph(&mut self, p: Para) -> Result<(), Error> {
        let text = p.text.trim();
        // Inside a table cell, paragraphs are the cell's text.
        if let Some(cell) = self.tables.last_mut().and_then(|t| t.cell.as_mut()) {
            if !text.is_empty() {
                if !cell.is_empty() {
                    cell.push(' ');
                }
                push_limited(cell, text);
            }
            return Ok(());
        }
        if text.is_empty() {
            return Ok(());
        }
        let style = p.style.as_deref();
        if style.is_some_and(|s| self.styles.is_toc(s)) {
            return Ok(());
        }
        let heading = p
            .outline
            .map(Heading::Level)
            .or_else(|| style.and_then(|s| self.styles.heading(s)));
        match heading {
            Some(Heading::Title) => {
                self.flush_list()?;
                if self.title_paragraph.is_none() {
                    self.title_paragraph = Some(text.to_owned());
                }
                self.out.heading(1, text)
            }
            Some(Heading::Level(level)) => {
                self.flush_list()?;
                self.out.heading(level, text)
            }
            None => {
                let numbered = p
                    .numbered
                    .unwrap_or_else(|| style.is_some_and(|s| self.styles.numbered(s)));
                if numbered {
                    let indent = "  ".repeat(usize::from(p.list_level));
                    self.list.push(format!("{indent}- {text}"));
                    Ok(())
                } else {
                    self.flush_list()?;
                    self.out.push(text, None)
                }
            }
        }
    }

    fn table(&mut self, t: Table) -> Result<(), Error> {
        if t.rows.is_empty() {
            return Ok(());
        }
        // A table nested in a cell becomes part of that cell's text.
        if let Some(cell) = self.tables.last_mut().and_then(|p| p.cell.as_mut()) {
            if !cell.is_empty() {
                cell.push(' ');
            }
            push_limited(cell, &t.rows.join("; "));
            return Ok(());
        }
        self.flush_list()?;
        self.out.push(&t.rows.join("\n"), None)
    }

    fn flush_list(&mut self) -> Result<(), Error> {
        if self.list.is_empty() {
            return Ok(());
        }
        let items = std::mem::take(&mut self.list).join("\n");
        self.out.push(&items, None)
    }
}

fn push_limited(buf: &mut String, text: &str) {
    if buf.len() + text.len() <= MAX_BLOCK_BYTES {
        buf.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::tests::fixtures;
    use crate::ingest::{Kind, parse};

    #[test]
    fn extracts_headings_paragraphs_lists_tables_and_metadata() {
        let bytes = fixtures::docx_handbook();
        let parsed = parse(Kind::Docx, &bytes, &Limits::default()).unwrap();
        assert_eq!(parsed.title.as_deref(), Some("Staff Handbook"));
        assert_eq!(parsed.author.as_deref(), Some("Ada Lovelace"));
        assert_eq!(parsed.pages, None);
        let find = |needle: &str| {
            parsed
                .sections
                .iter()
                .find(|s| s.text.contains(needle))
                .unwrap_or_else(|| panic!("no section with {needle:?} in {:#?}", parsed.sections))
        };
        let intro = find("Welcome to the company");
        assert_eq!(intro.headings, vec!["Staff Handbook".to_owned()]);
        let leave = find("25 days of paid leave");
        assert_eq!(leave.headings, vec!["Holidays".to_owned()]);
        let carry = find("carried over");
        assert_eq!(
            carry.headings,
            vec!["Holidays".to_owned(), "Carry-over".to_owned()]
        );
        let table = find("Name | Role | City");
        assert_eq!(
            table.text,
            "Name | Role | City\nAlice | Engineer | Rome\nBob | Designer | Oslo"
        );
        assert_eq!(table.headings, vec!["Contacts".to_owned()]);
        let list = find("- Laptop");
        assert_eq!(list.text, "- Laptop\n- Badge\n  - Visitor badge");
        // Headings are carried in the path, not repeated as body text.
        assert!(parsed.sections.iter().all(|s| s.text != "Holidays"));
        // Entities and non-ASCII text survive.
        find("Caf\u{e9} & Co <Ltd>");
    }

    #[test]
    fn table_of_contents_deleted_text_and_fallback_duplicates_are_skipped() {
        let xml = r#"<w:document xmlns:w="w" xmlns:mc="mc"><w:body>
            <w:p><w:pPr><w:pStyle w:val="TOC1"/></w:pPr><w:r><w:t>Introduction 1</w:t></w:r></w:p>
            <w:p><w:pPr><w:pStyle w:val="Heading1"/><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr><w:r><w:t>Introduction</w:t></w:r></w:p>
            <w:p><w:r><w:t xml:space="preserve">Kept </w:t></w:r><w:del><w:r><w:delText>deleted</w:delText></w:r></w:del><w:ins><w:r><w:t>inserted</w:t></w:r></w:ins>
              <w:r><mc:AlternateContent><mc:Choice><w:drawing><w:txbxContent><w:p><w:r><w:t>Box text</w:t></w:r></w:p></w:txbxContent></w:drawing></mc:Choice>
              <mc:Fallback><w:pict><w:txbxContent><w:p><w:r><w:t>Box text</w:t></w:r></w:p></w:txbxContent></w:pict></mc:Fallback></mc:AlternateContent></w:r></w:p>
            <w:p><w:pPr><w:outlineLvl w:val="1"/></w:pPr><w:r><w:t>Direct outline level</w:t></w:r></w:p>
            <w:p><w:r><w:t>Under it</w:t><w:tab/><w:t>tabbed</w:t></w:r></w:p>
        </w:body></w:document>"#;
        let parsed = parse(Kind::Docx, &fixtures::docx_raw(xml), &Limits::default()).unwrap();
        let got = fixtures::text_and_headings(&parsed);
        assert_eq!(
            got,
            vec![
                ("Box text", vec!["Introduction"]),
                ("Kept inserted", vec!["Introduction"]),
                (
                    "Under it tabbed",
                    vec!["Introduction", "Direct outline level"]
                ),
            ]
        );
    }

    #[test]
    fn zip_bomb_hits_the_inflation_limit() {
        // 16 MB of spaces inside a paragraph, streamed through the zip crate's writer, with a
        // 1 MB budget.
        let bomb = fixtures::docx_bomb(16 * 1024 * 1024);
        assert!(
            bomb.len() < 64 * 1024,
            "bomb should be small, is {}",
            bomb.len()
        );
        let limits = Limits {
            max_inflated_bytes: 1024 * 1024,
            ..Limits::default()
        };
        assert!(matches!(
            parse(Kind::Docx, &bomb, &limits),
            Err(Error::DecompressionLimit)
        ));
    }

    #[test]
    fn zip_bomb_with_lying_sizes_is_counted_not_trusted() {
        // Declares 1 KB uncompressed in both headers but inflates to 16 MB.
        let bomb = fixtures::docx_bomb_lying_size(16 * 1024 * 1024, 1024);
        let limits = Limits {
            max_inflated_bytes: 2 * 1024 * 1024,
            ..Limits::default()
        };
        assert!(matches!(
            parse(Kind::Docx, &bomb, &limits),
            Err(Error::DecompressionLimit)
        ));
    }

    #[test]
    fn gigabyte_zip_bomb_with_default_limits() {
        const GIB: u32 = 1 << 30;
        let honest = fixtures::docx_gigabyte_bomb(GIB);
        assert!(
            honest.len() < 2 * 1024 * 1024,
            "bomb is {} bytes",
            honest.len()
        );
        // Declared size over the budget: refused before inflating anything.
        let started = std::time::Instant::now();
        assert!(matches!(
            parse(Kind::Docx, &honest, &Limits::default()),
            Err(Error::DecompressionLimit)
        ));
        assert!(started.elapsed().as_millis() < 500);
        // Declared as 1 KB: refused as soon as the entry inflates past what it declared.
        let lying = fixtures::docx_gigabyte_bomb(1024);
        assert!(matches!(
            parse(Kind::Docx, &lying, &Limits::default()),
            Err(Error::DecompressionLimit)
        ));
    }

    #[test]
    fn deeply_nested_xml_is_refused_without_recursion() {
        let deep = fixtures::docx_nested(100_000);
        assert!(matches!(
            parse(Kind::Docx, &deep, &Limits::default()),
            Err(Error::TooDeep)
        ));
    }

    #[test]
    fn docx_without_text_is_empty_and_garbage_is_corrupt() {
        let empty = fixtures::docx_raw(
            r#"<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p/></w:body></w:document>"#,
        );
        assert!(matches!(
            parse(Kind::Docx, &empty, &Limits::default()),
            Err(Error::Empty)
        ));
        let broken = fixtures::docx_raw("<w:document><w:body><w:p><w:t>unclosed</w:body>");
        assert!(matches!(
            parse(Kind::Docx, &broken, &Limits::default()),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(
            parse(
                Kind::Docx,
                b"PK\x03\x04not really a zip",
                &Limits::default()
            ),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn entity_definitions_are_not_expanded() {
        let xml = r#"<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><w:document xmlns:w="x"><w:body><w:p><w:r><w:t>safe &b; text</w:t></w:r></w:p></w:body></w:document>"#;
        let parsed = parse(Kind::Docx, &fixtures::docx_raw(xml), &Limits::default()).unwrap();
        assert_eq!(parsed.sections[0].text, "safe  text");
    }
}
