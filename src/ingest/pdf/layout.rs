//! Layout: page lines into headings and paragraphs (outline titles or font sizes for headings),
//! running headers and footers dropped, a title from the first page when the Info has none.

use super::interpreter::Line;
use super::outline::OutlineEntry;
use super::{Error, Limits};
use crate::ingest::Collector;
use std::collections::{HashMap, HashSet};

/// A heading longer than this, or spanning more lines, is a large-print paragraph.
const MAX_HEADING_CHARS: usize = 200;
const MAX_HEADING_LINES: usize = 3;

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
pub(super) fn first_page_title(pages: &[Vec<Line>]) -> Option<String> {
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
pub(super) fn assemble(
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
}
