//! HTML text extraction with html5ever (through scraper): scripts, styles and other non-text
//! elements dropped, h1-h6 kept as the heading path, block elements as separate sections,
//! tables as "cell | cell" rows, entities decoded by the parser.
//!
//! html5ever builds the tree without recursion, and we walk it with an explicit stack, so deep
//! nesting cannot overflow the stack. Very deep nesting is still refused (`TooDeep`): a cheap
//! tag scan runs first because html5ever's scope checks walk the stack of open elements and
//! turn 100k nested elements into quadratic work.

use super::{Collector, Error, Limits, Parsed, collapse_whitespace, utf8_text};
use scraper::{Html, Node};

pub(super) fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, Error> {
    let text = utf8_text(bytes)?;
    // The scan is approximate (sloppy HTML leaves tags unclosed), so it gets some slack; the
    // exact check on the built tree below applies the real limit.
    if nesting_exceeds(text, limits.max_xml_depth.saturating_mul(2)) {
        return Err(Error::TooDeep);
    }
    let doc = Html::parse_document(text);
    let (title, author) = metadata(&doc);
    let mut walker = Walker {
        out: Collector::new(limits),
        block: String::new(),
        heading: None,
        pre: 0,
        table: 0,
        cells: 0,
        first_h1: None,
    };

    // Iterative depth-first walk: (node, closing?).
    let mut stack = vec![(doc.tree.root(), false)];
    let mut depth = 0u32;
    while let Some((node, closing)) = stack.pop() {
        if closing {
            depth = depth.saturating_sub(1);
            if let Node::Element(el) = node.value() {
                walker.close(el.name())?;
            }
            continue;
        }
        match node.value() {
            Node::Text(t) => {
                walker.text(t);
                continue;
            }
            Node::Element(el) => {
                if skipped(el.name()) || el.attr("hidden").is_some() {
                    continue;
                }
                depth += 1;
                if depth > limits.max_xml_depth {
                    return Err(Error::TooDeep);
                }
                walker.open(el.name())?;
            }
            Node::Document | Node::Fragment => {}
            _ => continue,
        }
        stack.push((node, true));
        let children: Vec<_> = node.children().collect();
        stack.extend(children.into_iter().rev().map(|c| (c, false)));
    }
    walker.flush()?;
    let title = title.or(walker.first_h1.take());
    Ok(walker.out.into_parsed(title, author))
}

/// Elements whose content is never document text.
fn skipped(name: &str) -> bool {
    matches!(
        name,
        "head"
            | "script"
            | "style"
            | "noscript"
            | "template"
            | "iframe"
            | "object"
            | "embed"
            | "svg"
            | "canvas"
            | "select"
            | "datalist"
            | "video"
            | "audio"
            | "map"
    )
}

fn is_block(name: &str) -> bool {
    matches!(
        name,
        "address"
            | "article"
            | "aside"
            | "blockquote"
            | "body"
            | "caption"
            | "center"
            | "dd"
            | "details"
            | "dialog"
            | "div"
            | "dl"
            | "dt"
            | "fieldset"
            | "figcaption"
            | "figure"
            | "footer"
            | "form"
            | "header"
            | "hgroup"
            | "hr"
            | "html"
            | "legend"
            | "main"
            | "menu"
            | "nav"
            | "ol"
            | "p"
            | "pre"
            | "section"
            | "summary"
            | "ul"
    )
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

fn metadata(doc: &Html) -> (Option<String>, Option<String>) {
    let mut title = None;
    let mut author = None;
    for node in doc.tree.nodes() {
        let Node::Element(el) = node.value() else {
            continue;
        };
        match el.name() {
            "title" if title.is_none() => {
                let text: String = node
                    .children()
                    .filter_map(|c| c.value().as_text().map(|t| t.to_string()))
                    .collect();
                title = Some(collapse_whitespace(&text)).filter(|t| !t.is_empty());
            }
            "meta"
                if author.is_none()
                    && el
                        .attr("name")
                        .is_some_and(|n| n.eq_ignore_ascii_case("author")) =>
            {
                author = el.attr("content").map(collapse_whitespace);
            }
            _ => {}
        }
    }
    (title, author)
}

struct Walker {
    out: Collector,
    block: String,
    heading: Option<(u8, String)>,
    /// Depth inside `<pre>`: whitespace is kept there.
    pre: u32,
    /// Depth inside tables: a table is one section, its rows one line each.
    table: u32,
    cells: usize,
    first_h1: Option<String>,
}

impl Walker {
    fn target(&mut self) -> &mut String {
        match self.heading.as_mut() {
            Some((_, h)) => h,
            None => &mut self.block,
        }
    }

    fn text(&mut self, t: &str) {
        if self.pre > 0 {
            self.target().push_str(t);
            return;
        }
        let target = self.target();
        let after_space = target.is_empty() || target.ends_with(char::is_whitespace);
        if t.starts_with(char::is_whitespace) && !after_space {
            target.push(' ');
        }
        let mut words = t.split_whitespace().peekable();
        let any = words.peek().is_some();
        while let Some(w) = words.next() {
            target.push_str(w);
            if words.peek().is_some() {
                target.push(' ');
            }
        }
        if any && t.ends_with(char::is_whitespace) {
            target.push(' ');
        }
    }

    fn newline(&mut self) {
        let target = self.target();
        let trimmed = target.trim_end_matches(' ').len();
        target.truncate(trimmed);
        if !target.is_empty() && !target.ends_with('\n') {
            target.push('\n');
        }
    }

    /// Ends the current block: a section of its own, except inside a table (one section) or a
    /// heading (its text).
    fn boundary(&mut self) -> Result<(), Error> {
        if self.table > 0 || self.heading.is_some() {
            let target = self.target();
            if !target.is_empty() && !target.ends_with(char::is_whitespace) {
                target.push(' ');
            }
            return Ok(());
        }
        self.flush()
    }

    fn flush(&mut self) -> Result<(), Error> {
        let block = std::mem::take(&mut self.block);
        self.out.push(&block, None)
    }

    fn open(&mut self, name: &str) -> Result<(), Error> {
        if let Some(level) = heading_level(name)
            && self.heading.is_none()
        {
            self.boundary()?;
            if self.table == 0 {
                self.heading = Some((level, String::new()));
            }
            return Ok(());
        }
        match name {
            "br" => self.newline(),
            "pre" => {
                self.boundary()?;
                self.pre += 1;
            }
            "li" => {
                if self.table > 0 {
                    self.boundary()?;
                } else {
                    self.newline();
                    self.block.push_str("- ");
                }
            }
            "table" => {
                if self.table == 0 {
                    self.flush()?;
                }
                self.table += 1;
            }
            "tr" => {
                self.newline();
                self.cells = 0;
            }
            "td" | "th" => {
                if self.cells > 0 {
                    let target = self.target();
                    let trimmed = target.trim_end().len();
                    target.truncate(trimmed);
                    target.push_str(" | ");
                }
                self.cells += 1;
            }
            n if is_block(n) => self.boundary()?,
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, name: &str) -> Result<(), Error> {
        if let Some(level) = heading_level(name)
            && let Some((open_level, _)) = self.heading.as_ref()
            && *open_level == level
        {
            let (level, text) = self.heading.take().unwrap_or_default();
            if level == 1 && self.first_h1.is_none() {
                self.first_h1 = Some(collapse_whitespace(&text)).filter(|t| !t.is_empty());
            }
            return self.out.heading(level, &text);
        }
        match name {
            "pre" => {
                self.pre = self.pre.saturating_sub(1);
                self.boundary()?;
            }
            "table" => {
                self.table = self.table.saturating_sub(1);
                if self.table == 0 {
                    self.flush()?;
                }
            }
            "tr" => self.newline(),
            // A list item ends its line; the list's own close ends the section.
            "li" if self.table == 0 => self.newline(),
            n if is_block(n) => self.boundary()?,
            _ => {}
        }
        Ok(())
    }
}

/// Whether tag nesting in `html` goes deeper than `max`, by a linear scan that ignores void
/// elements, elements whose end tag is optional, comments and raw-text content.
fn nesting_exceeds(html: &str, max: u32) -> bool {
    const UNCOUNTED: &[&str] = &[
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
        "source", "track", "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody",
        "tfoot", "option", "optgroup", "rt", "rp", "colgroup", "caption", "html", "head", "body",
        "!doctype",
    ];
    const RAW_TEXT: &[&str] = &["script", "style", "textarea", "title", "xmp", "plaintext"];
    let bytes = html.as_bytes();
    let mut depth = 0u32;
    let mut i = 0usize;
    while let Some(off) = memchr(b'<', &bytes[i..]) {
        i += off + 1;
        if bytes[i..].starts_with(b"!--") {
            match find(&bytes[i..], b"-->") {
                Some(end) => i += end + 3,
                None => return false,
            }
            continue;
        }
        let closing = bytes.get(i) == Some(&b'/');
        let name_start = if closing { i + 1 } else { i };
        let name_len = bytes[name_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'!' || **b == b'-')
            .count();
        if name_len == 0 {
            continue;
        }
        let name = html[name_start..name_start + name_len].to_ascii_lowercase();
        let Some(gt) = memchr(b'>', &bytes[name_start..]) else {
            return false;
        };
        let self_closing = gt > 0 && bytes[name_start + gt - 1] == b'/';
        i = name_start + gt + 1;
        if UNCOUNTED.contains(&name.as_str()) || self_closing {
            continue;
        }
        if closing {
            depth = depth.saturating_sub(1);
            continue;
        }
        if RAW_TEXT.contains(&name.as_str()) {
            let end = format!("</{name}");
            match find_ignore_case(&bytes[i..], end.as_bytes()) {
                Some(pos) => i += pos,
                None => return false,
            }
            continue;
        }
        depth += 1;
        if depth > max {
            return true;
        }
    }
    false
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::tests::fixtures;
    use crate::ingest::{Kind, parse};

    const PAGE: &str = r#"<!DOCTYPE html>
<html><head><title>Shop &amp; Care</title><meta name="Author" content="Linus">
<style>body { color: red }</style><script>var secret = "do not index";</script></head>
<body>
<nav>Home</nav>
<h1>Returns</h1>
<p>You can return items within <b>30&nbsp;days</b>.<br>Keep the receipt.</p>
<noscript>Enable JS</noscript>
<template><p>template text</p></template>
<h2>Refunds</h2>
<div>Refunds take 5 days.<div>Nested &lt;div&gt; text.</div></div>
<ul><li>Card</li><li>Cash <i>only</i> in store</li></ul>
<table><tr><th>Item</th><th>Days</th></tr><tr><td>Shoes</td><td>30</td></tr></table>
<h1>Contact</h1><pre>Phone:
  555-0100</pre>
<p hidden>hidden text</p>
</body></html>"#;

    #[test]
    fn extracts_text_headings_tables_and_metadata() {
        let parsed = parse(Kind::Html, PAGE.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(parsed.title.as_deref(), Some("Shop & Care"));
        assert_eq!(parsed.author.as_deref(), Some("Linus"));
        let got = fixtures::text_and_headings(&parsed);
        assert_eq!(
            got,
            vec![
                ("Home", vec![]),
                (
                    "You can return items within 30 days.\nKeep the receipt.",
                    vec!["Returns"]
                ),
                ("Refunds take 5 days.", vec!["Returns", "Refunds"]),
                ("Nested <div> text.", vec!["Returns", "Refunds"]),
                ("- Card\n- Cash only in store", vec!["Returns", "Refunds"]),
                ("Item | Days\nShoes | 30", vec!["Returns", "Refunds"]),
                ("Phone:\n  555-0100", vec!["Contact"]),
            ]
        );
        let all: String = parsed.sections.iter().map(|s| s.text.as_str()).collect();
        for hidden in [
            "secret",
            "color",
            "Enable JS",
            "template text",
            "hidden text",
        ] {
            assert!(!all.contains(hidden), "{hidden} leaked into {all}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_quickly() {
        let deep = format!(
            "<html><body>{}x{}</body></html>",
            "<div>".repeat(100_000),
            "</div>".repeat(100_000)
        );
        let started = std::time::Instant::now();
        assert!(matches!(
            parse(Kind::Html, deep.as_bytes(), &Limits::default()),
            Err(Error::TooDeep)
        ));
        assert!(started.elapsed().as_secs() < 5);
        // Unclosed paragraphs and list items are normal HTML, not nesting.
        let flat = format!(
            "<ul>{}</ul>{}",
            "<li>item".repeat(5_000),
            "<p>para".repeat(5_000)
        );
        assert!(parse(Kind::Html, flat.as_bytes(), &Limits::default()).is_ok());
    }

    #[test]
    fn html_without_text_is_empty() {
        let html = b"<html><head><title>t</title></head><body><script>x()</script></body></html>";
        assert!(matches!(
            parse(Kind::Html, html, &Limits::default()),
            Err(Error::Empty)
        ));
    }
}
