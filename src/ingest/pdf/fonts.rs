//! Fonts for text extraction: which encoding decodes a font's strings and how wide its glyphs are.

use super::{contains, deref, get, get_dict, name_is, num};
use lopdf::{Dictionary, Document, Encoding, Object, ObjectId};
use std::collections::HashMap;

/// Fonts that have a ToUnicode CMap but also an `/Encoding` lopdf would prefer: text
/// extraction should use the CMap (ISO 32000 9.10.2 puts it first, and subset fonts often have
/// meaningless glyph names in their Differences). lopdf picks `/Encoding` whenever present, so
/// for those fonts we give it a copy of the font dictionary without one. The copies live for
/// the whole extraction because lopdf's `Encoding` borrows the dictionary it came from.
pub(super) fn to_unicode_shadows(doc: &Document) -> HashMap<ObjectId, Dictionary> {
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

/// Glyph widths in thousandths of an em, to know where a run of text ends (so the gap to the
/// next run tells a word break from kerning).
pub(super) enum Widths {
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
    pub(super) fn of(&self, code: u32) -> f64 {
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

    pub(super) fn read(doc: &Document, font: &Dictionary) -> Self {
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

/// What the interpreter needs of a font: how to decode its strings and how far they advance.
pub(super) struct FontInfo<'a> {
    pub(super) encoding: Option<Encoding<'a>>,
    pub(super) two_byte: bool,
    pub(super) widths: Widths,
}
