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

use super::{Collector, Error, Limits, Parsed};
use lopdf::content::Content;
use lopdf::{
    DecompressError, Dictionary, Document, Encoding, LoadOptions, Object, ObjectId, Stream,
};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// Per-stream inflation cap while loading. Object and xref streams of real files are far
/// smaller; the cap keeps one crafted stream from holding hundreds of MB during the load.
const LOAD_STREAM_CAP: u64 = 64 * 1024 * 1024;
const MAX_FORM_DEPTH: usize = 8;
const MAX_GSTATE_STACK: usize = 256;
const MAX_OUTLINE_ITEMS: usize = 10_000;
const MAX_NAMED_DESTS: usize = 100_000;
/// A heading longer than this, or spanning more lines, is a large-print paragraph.
const MAX_HEADING_CHARS: usize = 200;
const MAX_HEADING_LINES: usize = 3;

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
    let outline = outline(&doc, &pages);

    let shadows = to_unicode_shadows(&doc);
    let mut extractor = Extractor {
        doc: &doc,
        shadows: &shadows,
        fonts: HashMap::new(),
        inflate_left: limits.max_inflated_bytes,
        chars: 0,
        max_chars: limits.max_chars,
    };
    let mut page_lines = Vec::with_capacity(pages.len());
    for page_id in &pages {
        page_lines.push(extractor.page(*page_id)?);
    }
    if page_lines.iter().all(Vec::is_empty) {
        return Err(Error::ImageOnly);
    }
    let out = assemble(&page_lines, &outline, limits)?;
    let title = title.or_else(|| first_page_title(&page_lines));
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

/// Fonts that have a ToUnicode CMap but also an `/Encoding` lopdf would prefer: text
/// extraction should use the CMap (ISO 32000 9.10.2 puts it first, and subset fonts often have
/// meaningless glyph names in their Differences). lopdf picks `/Encoding` whenever present, so
/// for those fonts we give it a copy of the font dictionary without one. The copies live for
/// the whole extraction because lopdf's `Encoding` borrows the dictionary it came from.
fn to_unicode_shadows(doc: &Document) -> HashMap<ObjectId, Dictionary> {
    let mut shadows = HashMap::new();
    for (id, obj) in &doc.objects {
        let Ok(dict) = obj.as_dict() else { continue };
        if !dict.has_type(b"Font") || !dict.has(b"ToUnicode") {
            continue;
        }
        let identity = matches!(
            dict.get(b"Encoding").and_then(Object::as_name),
            Ok(b"Identity-H" | b"Identity-V")
        );
        if dict.has(b"Encoding") && !identity {
            let mut shadow = dict.clone();
            shadow.remove(b"Encoding");
            shadows.insert(*id, shadow);
        }
    }
    shadows
}

type Matrix = [f64; 6];
const IDENTITY: Matrix = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];

fn mul(a: &Matrix, b: &Matrix) -> Matrix {
    [
        a[0] * b[0] + a[1] * b[2],
        a[0] * b[1] + a[1] * b[3],
        a[2] * b[0] + a[3] * b[2],
        a[2] * b[1] + a[3] * b[3],
        a[4] * b[0] + a[5] * b[2] + b[4],
        a[4] * b[1] + a[5] * b[3] + b[5],
    ]
}

fn translate(tx: f64, ty: f64) -> Matrix {
    [1.0, 0.0, 0.0, 1.0, tx, ty]
}

fn matrix(operands: &[Object]) -> Option<Matrix> {
    if operands.len() < 6 {
        return None;
    }
    let mut m = [0.0; 6];
    for (slot, obj) in m.iter_mut().zip(operands) {
        *slot = num(obj)?;
    }
    Some(m)
}

/// Glyph widths in thousandths of an em, to know where a run of text ends (so the gap to the
/// next run tells a word break from kerning).
enum Widths {
    Simple {
        first: i64,
        widths: Vec<f64>,
        missing: f64,
    },
    Cid {
        default: f64,
        map: HashMap<u32, f64>,
    },
}

const MAX_CID_WIDTHS: usize = 65_536;

impl Widths {
    fn of(&self, code: u32) -> f64 {
        match self {
            Widths::Simple {
                first,
                widths,
                missing,
            } => usize::try_from(i64::from(code) - first)
                .ok()
                .and_then(|i| widths.get(i))
                .copied()
                .unwrap_or(*missing),
            Widths::Cid { default, map } => map.get(&code).copied().unwrap_or(*default),
        }
    }

    fn read(doc: &Document, font: &Dictionary) -> Self {
        if name_is(font, b"Subtype", b"Type0") {
            let descendant = get(doc, font, b"DescendantFonts")
                .and_then(|o| o.as_array().ok())
                .and_then(|a| a.first())
                .and_then(|o| deref(doc, o))
                .and_then(|o| o.as_dict().ok());
            let default = descendant
                .and_then(|d| get(doc, d, b"DW"))
                .and_then(num)
                .unwrap_or(1000.0);
            let mut map = HashMap::new();
            if let Some(w) = descendant
                .and_then(|d| get(doc, d, b"W"))
                .and_then(|o| o.as_array().ok())
            {
                read_cid_widths(doc, w, &mut map);
            }
            return Widths::Cid { default, map };
        }
        let monospace = get(doc, font, b"BaseFont")
            .and_then(|o| o.as_name().ok())
            .is_some_and(|n| contains(n, b"Courier"));
        let fallback = if monospace { 600.0 } else { 500.0 };
        let missing = get_dict(doc, font, b"FontDescriptor")
            .and_then(|d| get(doc, d, b"MissingWidth"))
            .and_then(num)
            .filter(|w| *w > 0.0)
            .unwrap_or(fallback);
        let first = get(doc, font, b"FirstChar")
            .and_then(|o| o.as_i64().ok())
            .unwrap_or(0);
        let widths = get(doc, font, b"Widths")
            .and_then(|o| o.as_array().ok())
            .map(|a| {
                a.iter()
                    .take(256)
                    .map(|w| deref(doc, w).and_then(num).unwrap_or(missing))
                    .collect()
            })
            .unwrap_or_default();
        Widths::Simple {
            first,
            widths,
            missing,
        }
    }
}

/// `/W` is `[c [w1 w2 ...]  cfirst clast w ...]`.
fn read_cid_widths(doc: &Document, w: &[Object], map: &mut HashMap<u32, f64>) {
    let mut i = 0;
    while i < w.len() && map.len() < MAX_CID_WIDTHS {
        let Some(start) = deref(doc, &w[i]).and_then(|o| o.as_i64().ok()) else {
            return;
        };
        match w.get(i + 1).and_then(|o| deref(doc, o)) {
            Some(Object::Array(list)) => {
                for (k, width) in list.iter().enumerate().take(MAX_CID_WIDTHS) {
                    if let (Ok(code), Some(width)) = (u32::try_from(start + k as i64), num(width)) {
                        map.insert(code, width);
                    }
                }
                i += 2;
            }
            Some(end) => {
                let (Some(end), Some(width)) = (
                    end.as_i64().ok(),
                    w.get(i + 2).and_then(|o| deref(doc, o)).and_then(num),
                ) else {
                    return;
                };
                let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(end)) else {
                    return;
                };
                for code in start..=end.min(start.saturating_add(MAX_CID_WIDTHS as u32)) {
                    map.insert(code, width);
                }
                i += 3;
            }
            None => return,
        }
    }
}

struct FontInfo<'a> {
    encoding: Option<Encoding<'a>>,
    two_byte: bool,
    widths: Widths,
}

#[derive(Clone)]
struct GState<'a> {
    ctm: Matrix,
    font: Option<Rc<FontInfo<'a>>>,
    size: f64,
    char_space: f64,
    word_space: f64,
    hscale: f64,
    leading: f64,
    rise: f64,
}

impl GState<'_> {
    fn new(ctm: Matrix) -> Self {
        Self {
            ctm,
            font: None,
            size: 0.0,
            char_space: 0.0,
            word_space: 0.0,
            hscale: 1.0,
            leading: 0.0,
            rise: 0.0,
        }
    }
}

/// A line of text on a page, in device space (y grows upwards).
struct Line {
    text: String,
    size: f64,
    y: f64,
}

/// Joins text runs into lines: a run on the same baseline continues the line (with a space if
/// it starts after a word-sized gap), a run elsewhere starts a new one.
#[derive(Default)]
struct LineBuilder {
    lines: Vec<Line>,
    current: Option<Line>,
    end_x: f64,
}

impl LineBuilder {
    fn push(&mut self, text: &str, x: f64, y: f64, end_x: f64, size: f64) {
        if let Some(line) = self.current.as_mut() {
            let tolerance = 0.5 * size.max(line.size).max(1.0);
            if (y - line.y).abs() <= tolerance {
                let gap = x - self.end_x;
                if gap > 0.2 * size.max(1.0) && !line.text.ends_with(' ') && !text.starts_with(' ')
                {
                    line.text.push(' ');
                }
                line.text.push_str(text);
                line.size = line.size.max(size);
                self.end_x = end_x;
                return;
            }
            self.end_line();
        }
        self.current = Some(Line {
            text: text.to_owned(),
            size,
            y,
        });
        self.end_x = end_x;
    }

    fn end_line(&mut self) {
        if let Some(mut line) = self.current.take() {
            line.text = super::collapse_whitespace(&line.text);
            if !line.text.is_empty() {
                self.lines.push(line);
            }
        }
    }

    fn finish(mut self) -> Vec<Line> {
        self.end_line();
        self.lines
    }
}

struct Extractor<'a> {
    doc: &'a Document,
    shadows: &'a HashMap<ObjectId, Dictionary>,
    fonts: HashMap<ObjectId, Rc<FontInfo<'a>>>,
    inflate_left: u64,
    chars: usize,
    max_chars: usize,
}

fn limit_error(e: lopdf::Error) -> Option<Error> {
    matches!(
        e,
        lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. })
    )
    .then_some(Error::DecompressionLimit)
}

impl<'a> Extractor<'a> {
    fn left(&self) -> usize {
        usize::try_from(self.inflate_left).unwrap_or(usize::MAX)
    }

    fn charge(&mut self, n: usize) -> Result<(), Error> {
        let n = n as u64;
        if n > self.inflate_left {
            return Err(Error::DecompressionLimit);
        }
        self.inflate_left -= n;
        Ok(())
    }

    fn page(&mut self, page_id: ObjectId) -> Result<Vec<Line>, Error> {
        let content = match self.doc.get_page_content_with_limit(page_id, self.left()) {
            Ok(content) => content,
            Err(e) => return limit_error(e).map_or(Ok(Vec::new()), Err),
        };
        self.charge(content.len())?;
        let mut resources = Vec::new();
        if let Ok((direct, ids)) = self.doc.get_page_resources(page_id) {
            resources.extend(direct);
            resources.extend(
                ids.into_iter()
                    .filter_map(|id| self.doc.get_dictionary(id).ok()),
            );
        }
        let mut lines = LineBuilder::default();
        self.run(&content, &resources, IDENTITY, &mut lines, &mut Vec::new())?;
        Ok(lines.finish())
    }

    /// Interprets one content stream (a page's or a form's), feeding text runs to `lines`.
    fn run(
        &mut self,
        content: &[u8],
        resources: &[&'a Dictionary],
        ctm: Matrix,
        lines: &mut LineBuilder,
        forms: &mut Vec<ObjectId>,
    ) -> Result<(), Error> {
        let mut gs = GState::new(ctm);
        let mut saved: Vec<GState<'a>> = Vec::new();
        let mut tm = IDENTITY;
        let mut tlm = IDENTITY;
        for op in Content::decode_iter(content) {
            // A syntax error ends the stream; what came before it is still good text.
            let Ok(op) = op else { break };
            let ops = &op.operands;
            let n = |i: usize| ops.get(i).and_then(num);
            match op.operator.as_str() {
                // Past the cap, extra saves are dropped (and their restores pop older
                // states): hostile nesting costs accuracy, not memory.
                "q" if saved.len() < MAX_GSTATE_STACK => saved.push(gs.clone()),
                "Q" => {
                    if let Some(s) = saved.pop() {
                        gs = s;
                    }
                }
                "cm" => {
                    if let Some(m) = matrix(ops) {
                        gs.ctm = mul(&m, &gs.ctm);
                    }
                }
                "BT" => {
                    tm = IDENTITY;
                    tlm = IDENTITY;
                }
                "Tf" => {
                    if let Some(name) = ops.first().and_then(|o| o.as_name().ok()) {
                        gs.font = self.font(resources, name)?;
                    }
                    gs.size = n(1).unwrap_or(gs.size);
                }
                "Tc" => gs.char_space = n(0).unwrap_or(gs.char_space),
                "Tw" => gs.word_space = n(0).unwrap_or(gs.word_space),
                "Tz" => gs.hscale = n(0).map_or(gs.hscale, |s| s / 100.0),
                "TL" => gs.leading = n(0).unwrap_or(gs.leading),
                "Ts" => gs.rise = n(0).unwrap_or(gs.rise),
                "Td" | "TD" => {
                    let (tx, ty) = (n(0).unwrap_or(0.0), n(1).unwrap_or(0.0));
                    if op.operator == "TD" {
                        gs.leading = -ty;
                    }
                    tlm = mul(&translate(tx, ty), &tlm);
                    tm = tlm;
                }
                "Tm" => {
                    if let Some(m) = matrix(ops) {
                        tlm = m;
                        tm = m;
                    }
                }
                "T*" => {
                    tlm = mul(&translate(0.0, -gs.leading), &tlm);
                    tm = tlm;
                }
                "Tj" => {
                    if let Some(Object::String(bytes, _)) = ops.first() {
                        self.show(bytes, &gs, &mut tm, lines)?;
                    }
                }
                "'" | "\"" => {
                    let text_at = if op.operator == "'" {
                        0
                    } else {
                        gs.word_space = n(0).unwrap_or(gs.word_space);
                        gs.char_space = n(1).unwrap_or(gs.char_space);
                        2
                    };
                    tlm = mul(&translate(0.0, -gs.leading), &tlm);
                    tm = tlm;
                    if let Some(Object::String(bytes, _)) = ops.get(text_at) {
                        self.show(bytes, &gs, &mut tm, lines)?;
                    }
                }
                "TJ" => {
                    let Some(Object::Array(items)) = ops.first() else {
                        continue;
                    };
                    for item in items {
                        match item {
                            Object::String(bytes, _) => self.show(bytes, &gs, &mut tm, lines)?,
                            other => {
                                if let Some(adjust) = num(other) {
                                    let tx = -adjust / 1000.0 * gs.size * gs.hscale;
                                    tm = mul(&translate(tx, 0.0), &tm);
                                }
                            }
                        }
                    }
                }
                "Do" => {
                    if let Some(name) = ops.first().and_then(|o| o.as_name().ok()) {
                        self.form(name, resources, &gs.ctm, lines, forms)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Shows one string: decodes it, works out where it starts and ends on the page, and
    /// advances the text matrix past it.
    fn show(
        &mut self,
        bytes: &[u8],
        gs: &GState<'a>,
        tm: &mut Matrix,
        lines: &mut LineBuilder,
    ) -> Result<(), Error> {
        let Some(font) = gs.font.as_ref() else {
            return Ok(());
        };
        let start = mul(tm, &gs.ctm);
        let x = start[4] + gs.rise * start[2];
        let y = start[5] + gs.rise * start[3];
        let scale = (start[2] * start[2] + start[3] * start[3]).sqrt();
        let size = (gs.size * scale).abs();

        let mut advance = 0.0;
        let mut add = |code: u32, single_byte_space: bool| {
            let w = font.widths.of(code) / 1000.0 * gs.size + gs.char_space;
            let w = if single_byte_space {
                w + gs.word_space
            } else {
                w
            };
            advance += w * gs.hscale;
        };
        if font.two_byte {
            for pair in bytes.chunks(2) {
                let code = pair.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
                add(code, false);
            }
        } else {
            for b in bytes {
                add(u32::from(*b), *b == b' ');
            }
        }
        *tm = mul(&translate(advance, 0.0), tm);
        let end = mul(tm, &gs.ctm);

        let Some(text) = font
            .encoding
            .as_ref()
            .and_then(|e| e.bytes_to_string(bytes).ok())
        else {
            return Ok(());
        };
        let text = text.replace(['\u{0}', '\u{fffd}'], "");
        if text.is_empty() {
            return Ok(());
        }
        self.chars = self.chars.saturating_add(text.chars().count());
        if self.chars > self.max_chars {
            return Err(Error::TooLarge(format!(
                "it has more than {} characters of text",
                self.max_chars
            )));
        }
        lines.push(&text, x, y, end[4], size);
        Ok(())
    }

    fn resource(
        &self,
        resources: &[&'a Dictionary],
        category: &[u8],
        name: &[u8],
    ) -> Option<&'a Object> {
        resources
            .iter()
            .find_map(|res| get_dict(self.doc, res, category).and_then(|d| d.get(name).ok()))
    }

    fn font(
        &mut self,
        resources: &[&'a Dictionary],
        name: &[u8],
    ) -> Result<Option<Rc<FontInfo<'a>>>, Error> {
        let Some(obj) = self.resource(resources, b"Font", name) else {
            return Ok(None);
        };
        let (id, dict) = match obj {
            Object::Reference(id) => match self.doc.get_dictionary(*id) {
                Ok(dict) => (Some(*id), dict),
                Err(_) => return Ok(None),
            },
            Object::Dictionary(dict) => (None, dict),
            _ => return Ok(None),
        };
        if let Some(font) = id.and_then(|id| self.fonts.get(&id)) {
            return Ok(Some(Rc::clone(font)));
        }
        // lopdf bounds the CMap it inflates but does not report its size: measure it (into a
        // sink, no allocation) so it counts against the document's budget.
        if let Some(Object::Stream(cmap)) = get(self.doc, dict, b"ToUnicode") {
            let inflated = if cmap.filters().is_ok_and(|f| !f.is_empty()) {
                match cmap.decompress_to_writer(&mut std::io::sink(), self.left()) {
                    Ok(n) => n,
                    Err(e) => match limit_error(e) {
                        Some(limit) => return Err(limit),
                        None => 0,
                    },
                }
            } else {
                cmap.content.len()
            };
            self.charge(inflated)?;
        }
        // lopdf falls back to StandardEncoding when a CMap does not parse; then the font's own
        // /Encoding is the better guess.
        let shadow = match id.and_then(|id| self.shadows.get(&id)) {
            Some(shadow) => match self.encoding(shadow)? {
                Some(e @ Encoding::UnicodeMapEncoding(_)) => Some(e),
                _ => None,
            },
            None => None,
        };
        let encoding = match shadow {
            Some(e) => Some(e),
            None => self.encoding(dict)?,
        };
        let font = Rc::new(FontInfo {
            encoding,
            two_byte: name_is(dict, b"Subtype", b"Type0"),
            widths: Widths::read(self.doc, dict),
        });
        if let Some(id) = id {
            self.fonts.insert(id, Rc::clone(&font));
        }
        Ok(Some(font))
    }

    fn encoding(&self, font: &'a Dictionary) -> Result<Option<Encoding<'a>>, Error> {
        match font.get_font_encoding_with_limit(self.doc, self.left()) {
            Ok(encoding) => Ok(Some(encoding)),
            Err(e) => limit_error(e).map_or(Ok(None), Err),
        }
    }

    /// Runs a form XObject (text drawn through `Do`), bounded in depth and cut at cycles.
    fn form(
        &mut self,
        name: &[u8],
        resources: &[&'a Dictionary],
        ctm: &Matrix,
        lines: &mut LineBuilder,
        forms: &mut Vec<ObjectId>,
    ) -> Result<(), Error> {
        if forms.len() >= MAX_FORM_DEPTH {
            return Ok(());
        }
        let Some(id) = self
            .resource(resources, b"XObject", name)
            .and_then(|o| o.as_reference().ok())
        else {
            return Ok(());
        };
        if forms.contains(&id) {
            return Ok(());
        }
        let Ok(stream) = self.doc.get_object(id).and_then(Object::as_stream) else {
            return Ok(());
        };
        if !name_is(&stream.dict, b"Subtype", b"Form") {
            return Ok(());
        }
        let Some(content) = self.inflate(stream)? else {
            return Ok(());
        };
        let form_matrix = get(self.doc, &stream.dict, b"Matrix")
            .and_then(|o| o.as_array().ok())
            .and_then(|a| matrix(a))
            .unwrap_or(IDENTITY);
        // A form without resources of its own uses its parent's (ISO 32000 7.8.3).
        let mut form_resources: Vec<&'a Dictionary> = Vec::new();
        form_resources.extend(get_dict(self.doc, &stream.dict, b"Resources"));
        form_resources.extend_from_slice(resources);
        forms.push(id);
        let result = self.run(
            &content,
            &form_resources,
            mul(&form_matrix, ctm),
            lines,
            forms,
        );
        forms.pop();
        result
    }

    fn inflate(&mut self, stream: &Stream) -> Result<Option<Vec<u8>>, Error> {
        if !stream.filters().is_ok_and(|f| !f.is_empty()) {
            self.charge(stream.content.len())?;
            return Ok(Some(stream.content.clone()));
        }
        match stream.decompressed_content_with_limit(self.left()) {
            Ok(data) => {
                self.charge(data.len())?;
                Ok(Some(data))
            }
            Err(e) => limit_error(e).map_or(Ok(None), Err),
        }
    }
}

/// An outline (bookmark) entry that points at a page of this document.
struct OutlineEntry {
    level: u8,
    title: String,
    page: usize,
}

/// The document outline in reading order, walked without recursion and with cycle detection
/// (lopdf's `get_toc` follows `/Next` without one).
fn outline(doc: &Document, pages: &[ObjectId]) -> Vec<OutlineEntry> {
    let page_index: HashMap<ObjectId, usize> =
        pages.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let Some(catalog) = doc.catalog().ok() else {
        return Vec::new();
    };
    let Some(first) = get_dict(doc, catalog, b"Outlines")
        .and_then(|o| o.get(b"First").ok())
        .and_then(|o| o.as_reference().ok())
    else {
        return Vec::new();
    };
    let mut named: Option<HashMap<Vec<u8>, &Object>> = None;
    let mut entries = Vec::new();
    let mut visited = HashSet::new();
    let mut stack = vec![(first, 1u8)];
    while let Some((id, level)) = stack.pop() {
        if visited.len() >= MAX_OUTLINE_ITEMS || !visited.insert(id) {
            continue;
        }
        let Ok(item) = doc.get_dictionary(id) else {
            continue;
        };
        // Siblings after children: push `Next` first so `First` pops before it.
        if let Ok(next) = item.get(b"Next").and_then(Object::as_reference) {
            stack.push((next, level));
        }
        if let Ok(child) = item.get(b"First").and_then(Object::as_reference) {
            stack.push((child, level.saturating_add(1)));
        }
        let Some(title) = get(doc, item, b"Title")
            .and_then(|o| lopdf::decode_text_string(o).ok())
            .map(|t| super::collapse_whitespace(&t))
            .filter(|t| !t.is_empty())
        else {
            continue;
        };
        let dest = get(doc, item, b"Dest").or_else(|| {
            get_dict(doc, item, b"A")
                .filter(|a| name_is(a, b"S", b"GoTo"))
                .and_then(|a| get(doc, a, b"D"))
        });
        if let Some(page) = dest
            .and_then(|d| dest_page(doc, catalog, d, &mut named))
            .and_then(|p| page_index.get(&p))
        {
            entries.push(OutlineEntry {
                level,
                title,
                page: *page,
            });
        }
    }
    entries
}

/// The page a destination points at: an explicit `[page /XYZ ...]` array, or a name looked up
/// in the catalog's `/Dests` or the `/Names /Dests` name tree.
fn dest_page<'a>(
    doc: &'a Document,
    catalog: &'a Dictionary,
    dest: &'a Object,
    named: &mut Option<HashMap<Vec<u8>, &'a Object>>,
) -> Option<ObjectId> {
    let mut dest = dest;
    // Named destination -> array or `<< /D array >>`; a few hops at most.
    for _ in 0..4 {
        match dest {
            Object::Array(a) => return a.first().and_then(|o| o.as_reference().ok()),
            Object::Dictionary(d) => dest = get(doc, d, b"D")?,
            Object::Name(name) | Object::String(name, _) => {
                let names = named.get_or_insert_with(|| named_destinations(doc, catalog));
                dest = names.get(name.as_slice()).and_then(|o| deref(doc, o))?;
            }
            _ => return None,
        }
    }
    None
}

fn named_destinations<'a>(
    doc: &'a Document,
    catalog: &'a Dictionary,
) -> HashMap<Vec<u8>, &'a Object> {
    let mut map = HashMap::new();
    if let Some(dests) = get_dict(doc, catalog, b"Dests") {
        for (k, v) in dests.iter().take(MAX_NAMED_DESTS) {
            map.insert(k.clone(), v);
        }
    }
    let Some(root) = get_dict(doc, catalog, b"Names").and_then(|n| get_dict(doc, n, b"Dests"))
    else {
        return map;
    };
    let mut stack = vec![root];
    let mut seen = 0usize;
    while let Some(node) = stack.pop() {
        seen += 1;
        if seen > MAX_NAMED_DESTS || map.len() >= MAX_NAMED_DESTS {
            break;
        }
        if let Some(names) = get(doc, node, b"Names").and_then(|o| o.as_array().ok()) {
            for pair in names.chunks(2) {
                if let [Object::String(key, _), value] = pair {
                    map.insert(key.clone(), value);
                }
            }
        }
        if let Some(kids) = get(doc, node, b"Kids").and_then(|o| o.as_array().ok()) {
            stack.extend(
                kids.iter()
                    .filter_map(|k| deref(doc, k))
                    .filter_map(|k| k.as_dict().ok()),
            );
        }
    }
    map
}

/// Font sizes rounded to half a point, as map keys.
fn size_key(size: f64) -> i64 {
    (size * 2.0).round() as i64
}

/// The most common text size, weighted by characters: the body text.
fn body_size(pages: &[Vec<Line>]) -> i64 {
    let mut histogram: HashMap<i64, usize> = HashMap::new();
    for line in pages.iter().flatten() {
        *histogram.entry(size_key(line.size)).or_default() += line.text.chars().count();
    }
    histogram
        .into_iter()
        .max_by_key(|(size, chars)| (*chars, -*size))
        .map_or(0, |(size, _)| size)
}

/// Heading levels by font size, when there is no outline: sizes clearly above the body size
/// (at least 15% and 1pt larger), largest first, capped at six levels.
fn size_levels(pages: &[Vec<Line>], body: i64) -> HashMap<i64, u8> {
    let mut sizes: Vec<i64> = pages
        .iter()
        .flatten()
        .map(|l| size_key(l.size))
        .filter(|s| (*s as f64) >= body as f64 * 1.15 && *s - body >= 2)
        .collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.dedup();
    sizes
        .into_iter()
        .enumerate()
        .map(|(i, s)| (s, u8::try_from(i + 1).unwrap_or(6).min(6)))
        .collect()
}

/// Lowercase letters and digits only, for matching outline titles to the lines they label.
fn match_key(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// How a line relates to an outline title.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TitleMatch {
    /// The line is the heading ("2.1 ASN.1 syntax" for the title "ASN.1 syntax").
    Whole,
    /// The line starts with the heading and goes on with body text.
    Start,
}

fn title_match(line: &str, title_key: &str) -> Option<TitleMatch> {
    if title_key.is_empty() {
        return None;
    }
    let line = match_key(line);
    if line == title_key {
        return Some(TitleMatch::Whole);
    }
    // Section numbers the outline leaves out: "2.1", "A.1", "Chapter 3", "Appendix B".
    if let Some(prefix) = line.strip_suffix(title_key) {
        let numbered = {
            let digits = prefix.trim_start_matches(|c: char| c.is_ascii_lowercase());
            let word = &prefix[..prefix.len() - digits.len()];
            let word_ok = word.len() <= 1
                || matches!(
                    word,
                    "chapter" | "section" | "part" | "appendix" | "appendixa"
                );
            word_ok && digits.chars().all(|c| c.is_ascii_digit()) && prefix.len() <= 12
        };
        let appendix = matches!(prefix, "appendix" | "chapter" | "part" | "section")
            || prefix
                .strip_prefix("appendix")
                .is_some_and(|r| r.len() == 1);
        if !prefix.is_empty() && (numbered || appendix) {
            return Some(TitleMatch::Whole);
        }
    }
    (title_key.len() >= 4 && line.starts_with(title_key)).then_some(TitleMatch::Start)
}

/// Normalised text of a line for spotting running headers and footers: digits dropped (page
/// numbers change), whitespace and case ignored.
fn furniture_key(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_ascii_digit() && !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Lines to drop as page furniture: among the first two and last two lines of each page,
/// those whose text (ignoring digits) recurs at the top or bottom of at least three pages,
/// like running titles, "Chapter 2: ..." headers and page numbers.
fn furniture(pages: &[Vec<Line>]) -> Vec<Vec<bool>> {
    const EDGE: usize = 2;
    const MIN_PAGES: usize = 3;
    let mut drop: Vec<Vec<bool>> = pages.iter().map(|l| vec![false; l.len()]).collect();
    if pages.iter().filter(|l| !l.is_empty()).count() < MIN_PAGES + 1 {
        return drop;
    }
    let edges = |lines: &[Line]| -> Vec<usize> {
        let mut idx: Vec<usize> = (0..lines.len().min(EDGE)).collect();
        idx.extend(lines.len().saturating_sub(EDGE).max(EDGE.min(lines.len()))..lines.len());
        idx
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    for lines in pages {
        let keys: HashSet<String> = edges(lines)
            .into_iter()
            .map(|i| furniture_key(&lines[i].text))
            .collect();
        for key in keys {
            *counts.entry(key).or_default() += 1;
        }
    }
    for (lines, flags) in pages.iter().zip(drop.iter_mut()) {
        for i in edges(lines) {
            let key = furniture_key(&lines[i].text);
            if key.chars().count() <= 80 && counts.get(&key).is_some_and(|n| *n >= MIN_PAGES) {
                flags[i] = true;
            }
        }
    }
    drop
}

/// A title for documents without one in their Info dictionary: the largest text on the first
/// page, if it stands out from the body text.
fn first_page_title(pages: &[Vec<Line>]) -> Option<String> {
    let body = body_size(pages);
    let first = pages.first()?;
    let top = first
        .iter()
        .max_by(|a, b| a.size.total_cmp(&b.size))
        .filter(|l| (size_key(l.size) as f64) >= body as f64 * 1.15)?;
    let title: Vec<&str> = first
        .iter()
        .filter(|l| size_key(l.size) == size_key(top.size))
        .map(|l| l.text.as_str())
        .take(MAX_HEADING_LINES)
        .collect();
    Some(title.join(" ")).filter(|t| t.chars().count() <= MAX_HEADING_CHARS)
}

/// Turns each page's lines into paragraphs under the heading path.
fn assemble(
    pages: &[Vec<Line>],
    outline: &[OutlineEntry],
    limits: &Limits,
) -> Result<Collector, Error> {
    let mut out = Collector::new(limits);
    let levels = if outline.is_empty() {
        size_levels(pages, body_size(pages))
    } else {
        HashMap::new()
    };
    let furniture = furniture(pages);
    for (index, lines) in pages.iter().enumerate() {
        let page = Some(u32::try_from(index + 1).unwrap_or(u32::MAX));
        // Running headers, footers and page numbers are not content.
        let mut consumed = furniture[index].clone();
        // Outline entries for this page, anchored to the line that shows their title, or (if
        // no line does) to where the previous entry was found.
        let mut before: Vec<Vec<&OutlineEntry>> = vec![Vec::new(); lines.len() + 1];
        let mut cursor = 0;
        for entry in outline.iter().filter(|e| e.page == index) {
            let key = match_key(&entry.title);
            let found = (cursor..lines.len())
                .filter(|&k| !consumed[k])
                .find_map(|k| title_match(&lines[k].text, &key).map(|m| (k, m)));
            match found {
                Some((k, how)) => {
                    before[k].push(entry);
                    consumed[k] = how == TitleMatch::Whole;
                    cursor = k + 1;
                }
                None => before[cursor].push(entry),
            }
        }

        let mut para = Paragraph::default();
        let mut heading = PendingHeading::default();
        for (k, line) in lines.iter().enumerate() {
            if !before[k].is_empty() {
                para.flush(&mut out, page)?;
                for entry in &before[k] {
                    out.heading(entry.level, &entry.title)?;
                }
            }
            if consumed[k] {
                continue;
            }
            if let Some(level) = levels.get(&size_key(line.size)).copied() {
                para.flush(&mut out, page)?;
                if !heading.extend(level, line) {
                    heading.commit(&mut out, page)?;
                    heading.start(level, line);
                }
                continue;
            }
            heading.commit(&mut out, page)?;
            para.add(line, &mut out, page)?;
        }
        heading.commit(&mut out, page)?;
        para.flush(&mut out, page)?;
        for entry in &before[lines.len()] {
            out.heading(entry.level, &entry.title)?;
        }
    }
    Ok(out)
}

/// Consecutive lines of one heading size, committed as a heading, or as a paragraph if they
/// are too long to be one.
#[derive(Default)]
struct PendingHeading {
    level: u8,
    text: String,
    lines: usize,
    y: f64,
}

impl PendingHeading {
    fn start(&mut self, level: u8, line: &Line) {
        *self = Self {
            level,
            text: line.text.clone(),
            lines: 1,
            y: line.y,
        };
    }

    fn extend(&mut self, level: u8, line: &Line) -> bool {
        let adjacent = (self.y - line.y).abs() <= 2.0 * line.size.max(1.0);
        if self.lines == 0 || self.level != level || !adjacent {
            return false;
        }
        self.text.push(' ');
        self.text.push_str(&line.text);
        self.lines += 1;
        self.y = line.y;
        true
    }

    fn commit(&mut self, out: &mut Collector, page: Option<u32>) -> Result<(), Error> {
        if self.lines == 0 {
            return Ok(());
        }
        let pending = std::mem::take(self);
        if pending.lines > MAX_HEADING_LINES
            || pending.text.chars().count() > MAX_HEADING_CHARS
            || !pending.text.chars().any(char::is_alphabetic)
        {
            out.push(&pending.text, page)
        } else {
            out.heading(pending.level, &pending.text)
        }
    }
}

/// Lines joined into a paragraph until a larger vertical gap, a jump upwards (next column) or a
/// change of font size.
#[derive(Default)]
struct Paragraph {
    text: String,
    y: f64,
    size: f64,
}

impl Paragraph {
    fn add(&mut self, line: &Line, out: &mut Collector, page: Option<u32>) -> Result<(), Error> {
        if !self.text.is_empty() {
            let gap = self.y - line.y;
            let size = self.size.max(line.size).max(1.0);
            let breaks = gap > 1.8 * size
                || gap < -0.3 * size
                || (line.size - self.size).abs() > 0.2 * self.size.max(1.0);
            if breaks {
                self.flush(out, page)?;
            }
        }
        if self.text.is_empty() {
            self.text.push_str(&line.text);
            self.size = line.size;
        } else if self.text.ends_with('-')
            && line.text.chars().next().is_some_and(char::is_lowercase)
        {
            // A word hyphenated across lines: keep the hyphen, drop the break.
            self.text.push_str(&line.text);
        } else {
            self.text.push(' ');
            self.text.push_str(&line.text);
        }
        self.y = line.y;
        Ok(())
    }

    fn flush(&mut self, out: &mut Collector, page: Option<u32>) -> Result<(), Error> {
        let text = std::mem::take(&mut self.text);
        out.push(&text, page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::tests::fixtures::{self, Pdf};
    use crate::ingest::{Kind, Section, parse};
    use flate2::Compression;
    use flate2::write::ZlibEncoder;
    use lopdf::{EncryptionState, EncryptionVersion, Permissions, StringFormat, dictionary};
    use std::io::Write;

    fn sections(parsed: &Parsed) -> Vec<(&str, Option<u32>, Vec<&str>)> {
        parsed
            .sections
            .iter()
            .map(|s: &Section| {
                let headings = s.headings.iter().map(String::as_str).collect();
                (s.text.as_str(), s.page, headings)
            })
            .collect()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A zlib stream inflating to `mib` MiB of spaces (truncated after that: readers stop at
    /// our limit first).
    fn flate_bomb(mib: usize) -> Vec<u8> {
        let mut bomb = vec![0x78, 0x9C];
        bomb.extend(fixtures::deflate_spaces(b"", mib));
        bomb
    }

    #[test]
    fn headings_from_font_sizes_pages_and_metadata() {
        let parsed = parse(Kind::Pdf, &fixtures::pdf_policy(false), &Limits::default()).unwrap();
        assert_eq!(parsed.title.as_deref(), Some("Travel Policy.docx"));
        assert_eq!(parsed.author.as_deref(), Some("J\u{f6}rg M\u{fc}ller"));
        assert_eq!(parsed.pages, Some(3));
        assert_eq!(
            sections(&parsed),
            vec![
                (
                    "This policy explains how staff book and claim business travel. It applies to everyone.",
                    Some(1),
                    vec!["Travel Policy"]
                ),
                (
                    "Book trains at least two weeks ahead. Flights need approval from a manager for the caf\u{e9} budget.",
                    Some(1),
                    vec!["Travel Policy", "Booking"]
                ),
                (
                    "Hotels are booked through the travel desk, which keeps a list of preferred partners.",
                    Some(2),
                    vec!["Travel Policy", "Booking"]
                ),
                (
                    "Meals are refunded up to 40 euros per day.",
                    Some(2),
                    vec!["Travel Policy", "Expenses", "Meals"]
                ),
                (
                    "Keep every receipt for seven years.",
                    Some(3),
                    vec!["Travel Policy", "Expenses", "Receipts"]
                ),
            ]
        );
    }

    #[test]
    fn headings_from_the_outline_including_named_destinations() {
        let parsed = parse(Kind::Pdf, &fixtures::pdf_policy(true), &Limits::default()).unwrap();
        let got = sections(&parsed);
        assert_eq!(got[0], ("Travel Policy", Some(1), vec![]));
        let find = |needle: &str| got.iter().find(|s| s.0.contains(needle)).unwrap().clone();
        assert_eq!(find("Book trains").2, vec!["Booking"]);
        assert_eq!(find("Hotels are").2, vec!["Booking"]);
        assert_eq!(find("Meals are").2, vec!["Expenses", "Meals"]);
        assert_eq!(find("Keep every").2, vec!["Expenses", "Receipts"]);
        // Bookmarked headings are not repeated as body text.
        assert!(got.iter().all(|s| s.0 != "Booking" && s.0 != "Meals"));
    }

    #[test]
    fn running_headers_dropped_numbered_bookmarks_matched_title_from_first_page() {
        let mut pdf = Pdf::new();
        let bodies = [
            ("1 Scope", "This handbook covers every office."),
            ("1.2 Audience", "Managers and staff alike."),
            ("2 Leave", "Leave is booked in the portal."),
            ("2.1 Sick leave", "Call your manager before nine."),
        ];
        for (i, (heading, body)) in bodies.iter().enumerate() {
            let footer = format!("Page {}", i + 1);
            let mut lines = vec![(9.0, "ACME Handbook 2024"), (11.0, "")];
            if i == 0 {
                lines.push((20.0, "ACME Staff Handbook"));
            }
            lines.extend([
                (11.0, *heading),
                (11.0, *body),
                (11.0, ""),
                (9.0, footer.as_str()),
            ]);
            pdf.text_page(&lines);
        }
        pdf.bookmark(1, "Scope", 0, false);
        pdf.bookmark(2, "Audience", 1, false);
        pdf.bookmark(1, "2 Leave", 2, false);
        pdf.bookmark(2, "Sick leave", 3, false);
        let parsed = parse(Kind::Pdf, &pdf.finish(true), &Limits::default()).unwrap();
        assert_eq!(parsed.title.as_deref(), Some("ACME Staff Handbook"));
        assert_eq!(
            sections(&parsed),
            vec![
                ("ACME Staff Handbook", Some(1), vec![]),
                ("This handbook covers every office.", Some(1), vec!["Scope"]),
                (
                    "Managers and staff alike.",
                    Some(2),
                    vec!["Scope", "Audience"]
                ),
                ("Leave is booked in the portal.", Some(3), vec!["2 Leave"]),
                (
                    "Call your manager before nine.",
                    Some(4),
                    vec!["2 Leave", "Sick leave"]
                ),
            ]
        );
    }

    #[test]
    fn title_matching_accepts_section_numbers_only() {
        let key = match_key("ASN.1 syntax");
        assert!(title_match("2.1 ASN.1 syntax", &key) == Some(TitleMatch::Whole));
        assert!(title_match("A.1 ASN.1 syntax", &key) == Some(TitleMatch::Whole));
        assert!(title_match("Chapter 3 ASN.1 syntax", &key) == Some(TitleMatch::Whole));
        assert!(title_match("ASN.1 syntax rules are strict", &key) == Some(TitleMatch::Start));
        assert!(title_match("The ASN.1 syntax", &key).is_none());
        assert!(title_match("anything", "").is_none());
    }

    /// ToUnicode CMaps (compressed, 2-byte Identity-H and 1-byte), a font whose /Encoding would
    /// give wrong text, TJ kerning vs word gaps, Td-positioned words and a form XObject.
    #[test]
    fn encodings_spacing_and_form_xobjects() {
        let mut pdf = Pdf::new();
        let cmap2 = b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /T def\n1 begincodespacerange <0000> <FFFF> endcodespacerange\n6 beginbfchar <0001> <0047> <0002> <0072> <0003> <00FC> <0004> <00DF> <0005> <4E16> <0006> <754C> endbfchar\nendcmap CMapName currentdict /CMap defineresource pop end end";
        let cmap1 = b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /U def\n1 begincodespacerange <00> <FF> endcodespacerange\n2 beginbfchar <41> <0051> <42> <007A> endbfchar\nendcmap CMapName currentdict /CMap defineresource pop end end";
        let to_unicode2 = pdf
            .doc
            .add_object(Stream::new(Dictionary::new(), cmap2.to_vec()));
        let to_unicode1 = pdf
            .doc
            .add_object(Stream::new(Dictionary::new(), cmap1.to_vec()));
        let type0 = pdf.doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type0", "BaseFont" => "Test", "Encoding" => "Identity-H",
            "DescendantFonts" => vec![Object::Dictionary(dictionary! {
                "Type" => "Font", "Subtype" => "CIDFontType2", "BaseFont" => "Test", "DW" => 600,
                "CIDSystemInfo" => dictionary! {
                    "Registry" => Object::string_literal("Adobe"),
                    "Ordering" => Object::string_literal("Identity"),
                    "Supplement" => 0,
                },
            })],
            "ToUnicode" => to_unicode2,
        });
        let subset = pdf.doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "ABCDEF+Subset",
            "Encoding" => dictionary! {
                "Type" => "Encoding",
                "Differences" => vec![65.into(), "g17".into(), "g18".into()],
            },
            "ToUnicode" => to_unicode1,
        });
        let helvetica = pdf.doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        });
        let courier = pdf.doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Courier",
        });
        let form = pdf.doc.add_object(Stream::new(
            dictionary! {
                "Type" => "XObject", "Subtype" => "Form",
                "BBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
                "Resources" => dictionary! { "Font" => dictionary! { "F1" => helvetica } },
            },
            b"BT /F1 12 Tf 72 500 Td (Inside a form) Tj ET".to_vec(),
        ));
        let content = b"BT /F3 14 Tf 1 0 0 1 72 700 Tm <000100020003000400050006> Tj ET\n\
            BT /F4 12 Tf 1 0 0 1 72 680 Tm (AB) Tj ET\n\
            BT /F2 12 Tf 1 0 0 1 72 660 Tm [(Hel) -20 (lo) -400 (world)] TJ ET\n\
            BT /F2 12 Tf 72 640 Td (Split) Tj 60 0 Td (words) Tj ET\n\
            q 1 0 0 1 0 -100 cm /Fm1 Do Q\n";
        let content_id = pdf
            .doc
            .add_object(Stream::new(Dictionary::new(), content.to_vec()));
        let page = pdf.page_with_content(content_id);
        let resources = dictionary! {
            "Font" => dictionary! { "F2" => courier, "F3" => type0, "F4" => subset },
            "XObject" => dictionary! { "Fm1" => form },
        };
        pdf.doc
            .get_object_mut(page)
            .and_then(Object::as_dict_mut)
            .unwrap()
            .set("Resources", resources);
        let bytes = pdf.finish(true);
        let parsed = parse(Kind::Pdf, &bytes, &Limits::default()).unwrap();
        assert_eq!(
            sections(&parsed),
            vec![
                (
                    "Qz Hello world Split words",
                    Some(1),
                    vec!["Gr\u{fc}\u{df}\u{4e16}\u{754c}"]
                ),
                (
                    "Inside a form",
                    Some(1),
                    vec!["Gr\u{fc}\u{df}\u{4e16}\u{754c}"]
                ),
            ]
        );
    }

    #[test]
    fn encrypted_pdfs_are_refused_unless_they_open_without_a_password() {
        let encrypt = |user: &str| {
            let mut doc = Document::load_mem(&fixtures::pdf_policy(false)).unwrap();
            let id = Object::String(b"0123456789abcdef".to_vec(), StringFormat::Literal);
            doc.trailer.set("ID", vec![id.clone(), id]);
            let state = EncryptionState::try_from(EncryptionVersion::V2 {
                document: &doc,
                owner_password: "owner",
                user_password: user,
                key_length: 128,
                permissions: Permissions::all(),
            })
            .unwrap();
            doc.encrypt(&state).unwrap();
            let mut out = Vec::new();
            doc.save_to(&mut out).unwrap();
            out
        };
        assert!(matches!(
            parse(Kind::Pdf, &encrypt("secret"), &Limits::default()),
            Err(Error::Encrypted)
        ));
        // Permission-only protection (empty user password) opens like any viewer would.
        let parsed = parse(Kind::Pdf, &encrypt(""), &Limits::default()).unwrap();
        assert!(
            parsed
                .sections
                .iter()
                .any(|s| s.text.contains("Keep every receipt"))
        );

        // A trailer /Encrypt entry that lopdf cannot make sense of.
        let mut doc = Document::load_mem(&fixtures::pdf_policy(false)).unwrap();
        let encrypt_dict = doc.add_object(dictionary! {
            "Filter" => "Standard", "V" => 1, "R" => 2, "P" => -4,
            "O" => Object::string_literal(vec![7u8; 32]),
            "U" => Object::string_literal(vec![9u8; 32]),
        });
        doc.trailer.set("Encrypt", encrypt_dict);
        let mut fake = Vec::new();
        doc.save_to(&mut fake).unwrap();
        assert!(matches!(
            parse(Kind::Pdf, &fake, &Limits::default()),
            Err(Error::Encrypted)
        ));
    }

    #[test]
    fn image_only_pdf() {
        let mut pdf = Pdf::new();
        pdf.page(b"0 0 1 rg 10 10 100 100 re f".to_vec());
        pdf.page(b"BT ET".to_vec());
        assert!(matches!(
            parse(Kind::Pdf, &pdf.finish(true), &Limits::default()),
            Err(Error::ImageOnly)
        ));
    }

    #[test]
    fn ten_thousand_pages_fail_fast() {
        let bytes = fixtures::pdf_many_pages(10_000, 10_000);
        let started = std::time::Instant::now();
        let result = parse(Kind::Pdf, &bytes, &Limits::default());
        assert!(
            matches!(
                result,
                Err(Error::TooManyPages {
                    pages: 10_000,
                    max: 2000
                })
            ),
            "{result:?}"
        );
        assert!(
            started.elapsed().as_secs() < 5,
            "took {:?}",
            started.elapsed()
        );
        // A /Count that lies is caught by counting while enumerating (up to max + 1).
        let lying = fixtures::pdf_many_pages(2_500, 1);
        assert!(matches!(
            parse(Kind::Pdf, &lying, &Limits::default()),
            Err(Error::TooManyPages {
                pages: 2001,
                max: 2000
            })
        ));
        let small = Limits {
            max_pages: 2,
            ..Limits::default()
        };
        assert!(matches!(
            parse(Kind::Pdf, &fixtures::pdf_policy(false), &small),
            Err(Error::TooManyPages { pages: 3, max: 2 })
        ));
    }

    #[test]
    fn corrupt_and_truncated_pdfs() {
        assert!(matches!(
            parse(
                Kind::Pdf,
                b"%PDF-1.7\nthis is not a PDF at all",
                &Limits::default()
            ),
            Err(Error::Corrupt(_))
        ));
        let good = fixtures::pdf_policy(true);
        for cut in [10, good.len() / 3, good.len() / 2, good.len() - 40] {
            match parse(Kind::Pdf, &good[..cut], &Limits::default()) {
                Ok(_) | Err(Error::Corrupt(_) | Error::ImageOnly) => {}
                Err(e) => panic!("unexpected error at cut {cut}: {e:?}"),
            }
        }
    }

    #[test]
    fn content_stream_bomb_hits_the_inflation_limit() {
        let mut pdf = Pdf::new();
        let bomb = flate_bomb(8);
        assert!(bomb.len() < 64 * 1024);
        let stream =
            Stream::new(dictionary! { "Filter" => "FlateDecode" }, bomb).with_compression(false);
        let id = pdf.doc.add_object(stream);
        pdf.page_with_content(id);
        let bytes = pdf.finish(false);
        let limits = Limits {
            max_inflated_bytes: 1024 * 1024,
            ..Limits::default()
        };
        assert!(matches!(
            parse(Kind::Pdf, &bytes, &limits),
            Err(Error::DecompressionLimit)
        ));
        // The budget is per document: many pages under the per-page size still add up.
        let mut pdf = Pdf::new();
        let text = b"BT /F1 12 Tf 72 700 Td (ok) Tj ET ".repeat(1_000);
        for _ in 0..40 {
            let s = Stream::new(dictionary! { "Filter" => "FlateDecode" }, zlib(&text))
                .with_compression(false);
            let id = pdf.doc.add_object(s);
            pdf.page_with_content(id);
        }
        let bytes = pdf.finish(false);
        assert!(parse(Kind::Pdf, &bytes, &Limits::default()).is_ok());
        assert!(matches!(
            parse(Kind::Pdf, &bytes, &limits),
            Err(Error::DecompressionLimit)
        ));
    }

    #[test]
    fn gigabyte_content_stream_with_default_limits() {
        // zlib header + deflate data for ~1 GiB of spaces, about 1 MB on disk.
        let bomb = flate_bomb(1024);
        assert!(bomb.len() < 2 * 1024 * 1024);
        let mut pdf = Pdf::new();
        let stream =
            Stream::new(dictionary! { "Filter" => "FlateDecode" }, bomb).with_compression(false);
        let id = pdf.doc.add_object(stream);
        pdf.page_with_content(id);
        let bytes = pdf.finish(false);
        assert!(matches!(
            parse(Kind::Pdf, &bytes, &Limits::default()),
            Err(Error::DecompressionLimit)
        ));
    }

    #[test]
    fn to_unicode_bomb_hits_the_inflation_limit() {
        let mut pdf = Pdf::new();
        let bomb = flate_bomb(8);
        let cmap = pdf.doc.add_object(
            Stream::new(dictionary! { "Filter" => "FlateDecode" }, bomb).with_compression(false),
        );
        let font = pdf.doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica", "ToUnicode" => cmap,
        });
        let content = pdf.doc.add_object(Stream::new(
            Dictionary::new(),
            b"BT /F9 12 Tf (x) Tj ET".to_vec(),
        ));
        let page = pdf.page_with_content(content);
        pdf.doc
            .get_object_mut(page)
            .and_then(Object::as_dict_mut)
            .unwrap()
            .set(
                "Resources",
                dictionary! { "Font" => dictionary! { "F9" => font } },
            );
        let bytes = pdf.finish(false);
        let limits = Limits {
            max_inflated_bytes: 1024 * 1024,
            ..Limits::default()
        };
        assert!(matches!(
            parse(Kind::Pdf, &bytes, &limits),
            Err(Error::DecompressionLimit)
        ));
    }

    #[test]
    fn load_time_stream_bomb_hits_the_inflation_limit() {
        // A cross-reference stream (decoded while loading) that inflates to 8 MB.
        let bomb = flate_bomb(8);
        let mut pdf = b"%PDF-1.5\n".to_vec();
        let offset = pdf.len();
        pdf.extend_from_slice(
            format!(
                "1 0 obj\n<< /Type /XRef /Size 1 /W [1 1 1] /Root 1 0 R /Filter /FlateDecode /Length {} >>\nstream\n",
                bomb.len()
            )
            .as_bytes(),
        );
        pdf.extend_from_slice(&bomb);
        pdf.extend_from_slice(
            format!("\nendstream\nendobj\nstartxref\n{offset}\n%%EOF").as_bytes(),
        );
        let limits = Limits {
            max_inflated_bytes: 1024 * 1024,
            ..Limits::default()
        };
        assert!(matches!(
            parse(Kind::Pdf, &pdf, &limits),
            Err(Error::DecompressionLimit)
        ));
    }

    #[test]
    fn character_limit_applies_to_pdfs() {
        let limits = Limits {
            max_chars: 50,
            ..Limits::default()
        };
        assert!(matches!(
            parse(Kind::Pdf, &fixtures::pdf_policy(false), &limits),
            Err(Error::TooLarge(_))
        ));
    }
}
