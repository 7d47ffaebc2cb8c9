//! The content-stream interpreter: runs page and form XObject content streams, tracking the
//! graphics and text state, and turns shown strings into positioned lines of text.

use super::fonts::{FontInfo, Widths};
use super::{Error, Limits, get, get_dict, name_is, num};
use lopdf::content::Content;
use lopdf::{DecompressError, Dictionary, Document, Encoding, Object, ObjectId, Stream};
use std::collections::HashMap;
use std::rc::Rc;

const MAX_FORM_DEPTH: usize = 8;
const MAX_GSTATE_STACK: usize = 256;

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
pub(super) struct Line {
    pub(super) text: String,
    pub(super) size: f64,
    pub(super) y: f64,
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
            line.text = super::super::collapse_whitespace(&line.text);
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

/// Extracts the lines of text of one document's pages, within its inflation and character
/// budgets (shared by all pages).
pub(super) struct Extractor<'a> {
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
    pub(super) fn new(
        doc: &'a Document,
        shadows: &'a HashMap<ObjectId, Dictionary>,
        limits: &Limits,
    ) -> Self {
        Self {
            doc,
            shadows,
            fonts: HashMap::new(),
            inflate_left: limits.max_inflated_bytes,
            chars: 0,
            max_chars: limits.max_chars,
        }
    }

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

    /// The lines of text of one page, in content-stream order.
    pub(super) fn page(&mut self, page_id: ObjectId) -> Result<Vec<Line>, Error> {
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
