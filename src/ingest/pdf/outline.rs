//! The document outline (bookmarks): entries with their level, title and target page.

use super::{deref, get, get_dict, name_is};
use lopdf::{Dictionary, Document, Object, ObjectId};
use std::collections::{HashMap, HashSet};

const MAX_OUTLINE_ITEMS: usize = 10_000;
const MAX_NAMED_DESTS: usize = 100_000;

/// An outline (bookmark) entry that points at a page of this document.
pub(super) struct OutlineEntry {
    pub(super) level: u8,
    pub(super) title: String,
    /// Index into the document's pages.
    pub(super) page: usize,
}

/// The document outline in reading order, walked without recursion and with cycle detection
/// (lopdf's `get_toc` follows `/Next` without one).
pub(super) fn outline(doc: &Document, pages: &[ObjectId]) -> Vec<OutlineEntry> {
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
            .map(|t| super::super::collapse_whitespace(&t))
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
