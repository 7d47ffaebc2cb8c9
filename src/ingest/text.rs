//! Plain text (paragraphs split at blank lines) and Markdown (pulldown-cmark events: `#`
//! headings build the heading path; paragraphs, lists, tables and code blocks become sections).

use super::{Collector, Error, Limits, Parsed, utf8_text};
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

pub(super) fn parse_plain(bytes: &[u8], limits: &Limits) -> Result<Parsed, Error> {
    let text = utf8_text(bytes)?;
    let mut out = Collector::new(limits);
    let mut para = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            out.push(&para, None)?;
            para.clear();
        } else {
            para.push_str(line);
            para.push('\n');
        }
    }
    out.push(&para, None)?;
    Ok(out.into_parsed(None, None))
}

/// Deepest list indentation rendered; deeper items keep this indent (the structure of a list
/// nested 10,000 levels deep is not worth reproducing).
const MAX_LIST_INDENT: usize = 8;

pub(super) fn parse_markdown(bytes: &[u8], limits: &Limits) -> Result<Parsed, Error> {
    let text = utf8_text(bytes)?;
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS;
    let mut out = Collector::new(limits);
    let mut md = Markdown::default();
    for event in Parser::new_ext(text, options) {
        md.on(event, &mut out)?;
    }
    md.flush(&mut out)?;
    let title = md.meta_title.or(md.first_h1);
    Ok(out.into_parsed(title, md.meta_author))
}

#[derive(Default)]
struct Markdown {
    /// Text of the current top-level block.
    block: String,
    /// Heading text while inside a heading.
    heading: Option<String>,
    /// Open lists: the next number for ordered ones.
    lists: Vec<Option<u64>>,
    /// Nesting of containers (block quotes, tables, footnotes) that hold several blocks; a
    /// section is emitted only when the outermost one closes.
    containers: usize,
    in_metadata: bool,
    metadata: String,
    meta_title: Option<String>,
    meta_author: Option<String>,
    first_h1: Option<String>,
    cells: usize,
    /// Right after a list marker, where a paragraph must not start a new line.
    fresh_item: bool,
}

impl Markdown {
    fn on(&mut self, event: Event<'_>, out: &mut Collector) -> Result<(), Error> {
        match event {
            Event::Start(tag) => self.start(tag, out)?,
            Event::End(tag) => self.end(tag, out)?,
            Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => {
                self.text(&t)
            }
            Event::Html(t) | Event::InlineHtml(t) => {
                let stripped = strip_tags(&t);
                self.text(&stripped);
            }
            Event::SoftBreak => self.text(" "),
            Event::HardBreak => self.text("\n"),
            Event::Rule => self.flush(out)?,
            Event::TaskListMarker(done) => self.text(if done { "[x] " } else { "[ ] " }),
            Event::FootnoteReference(_) => {}
        }
        Ok(())
    }

    fn text(&mut self, t: &str) {
        if self.in_metadata {
            self.metadata.push_str(t);
        } else if let Some(h) = self.heading.as_mut() {
            h.push_str(t);
        } else {
            self.block.push_str(t);
            if !t.is_empty() {
                self.fresh_item = false;
            }
        }
    }

    fn newline(&mut self) {
        if !self.block.is_empty() && !self.block.ends_with('\n') {
            self.block.push('\n');
        }
    }

    fn in_block_container(&self) -> bool {
        self.containers > 0 || !self.lists.is_empty()
    }

    fn start(&mut self, tag: Tag<'_>, out: &mut Collector) -> Result<(), Error> {
        match tag {
            Tag::Heading { .. } => {
                self.flush(out)?;
                self.heading = Some(String::new());
            }
            Tag::Paragraph if self.in_block_container() && !self.fresh_item => self.newline(),
            Tag::CodeBlock(_) | Tag::HtmlBlock => {
                if self.in_block_container() {
                    self.newline();
                } else {
                    self.flush(out)?;
                }
            }
            Tag::List(start) => {
                if self.lists.is_empty() && self.containers == 0 {
                    self.flush(out)?;
                }
                self.lists.push(start);
            }
            Tag::Item => {
                self.newline();
                let depth = self.lists.len().saturating_sub(1).min(MAX_LIST_INDENT);
                let indent = "  ".repeat(depth);
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let m = format!("{n}. ");
                        *n = n.saturating_add(1);
                        m
                    }
                    _ => "- ".to_owned(),
                };
                self.block.push_str(&indent);
                self.block.push_str(&marker);
                self.fresh_item = true;
            }
            Tag::BlockQuote(_)
            | Tag::Table(_)
            | Tag::FootnoteDefinition(_)
            | Tag::DefinitionList => {
                if !self.in_block_container() {
                    self.flush(out)?;
                }
                self.containers += 1;
            }
            Tag::TableHead | Tag::TableRow => {
                self.newline();
                self.cells = 0;
            }
            Tag::TableCell => {
                if self.cells > 0 {
                    self.block.push_str(" | ");
                }
                self.cells += 1;
            }
            Tag::DefinitionListTitle | Tag::DefinitionListDefinition => self.newline(),
            Tag::MetadataBlock(_) => self.in_metadata = true,
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self, tag: TagEnd, out: &mut Collector) -> Result<(), Error> {
        match tag {
            TagEnd::Heading(level) => {
                let text = self.heading.take().unwrap_or_default();
                let level = heading_level(level);
                if level == 1 && self.first_h1.is_none() && !text.trim().is_empty() {
                    self.first_h1 = Some(text.trim().to_owned());
                }
                out.heading(level, &text)?;
            }
            TagEnd::Paragraph | TagEnd::CodeBlock | TagEnd::HtmlBlock
                if !self.in_block_container() =>
            {
                self.flush(out)?;
            }
            TagEnd::List(_) => {
                self.lists.pop();
                if !self.in_block_container() {
                    self.flush(out)?;
                }
            }
            TagEnd::BlockQuote(_)
            | TagEnd::Table
            | TagEnd::FootnoteDefinition
            | TagEnd::DefinitionList => {
                self.containers = self.containers.saturating_sub(1);
                if !self.in_block_container() {
                    self.flush(out)?;
                }
            }
            TagEnd::MetadataBlock(_) => {
                self.in_metadata = false;
                self.read_metadata();
            }
            _ => {}
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Collector) -> Result<(), Error> {
        let block = std::mem::take(&mut self.block);
        out.push(&block, None)
    }

    /// Front matter: only `title:` and `author:` matter to us.
    fn read_metadata(&mut self) {
        for line in self.metadata.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim().trim_matches(['"', '\'']).trim();
            if value.is_empty() {
                continue;
            }
            match key.trim().to_ascii_lowercase().as_str() {
                "title" => self.meta_title = Some(value.to_owned()),
                "author" => self.meta_author = Some(value.to_owned()),
                _ => {}
            }
        }
        self.metadata.clear();
    }
}

fn heading_level(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

/// Drops `<...>` tags and comments from raw HTML inside Markdown, keeping the text between them.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = if after.starts_with("<!--") {
            after.find("-->").map(|i| i + 3)
        } else {
            after.find('>').map(|i| i + 1)
        };
        match end {
            Some(end) => rest = &after[end..],
            None => {
                // A lone '<' is text ("a < b").
                out.push('<');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::tests::fixtures;
    use crate::ingest::{Kind, parse};

    #[test]
    fn plain_text_splits_paragraphs_and_strips_bom() {
        let text = "\u{feff}First line\nstill first.\r\n\r\n\r\nSecond paragraph \u{e9}t\u{e9}.\n";
        let parsed = parse(Kind::Text, text.as_bytes(), &Limits::default()).unwrap();
        let texts: Vec<_> = parsed.sections.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "First line\nstill first.",
                "Second paragraph \u{e9}t\u{e9}."
            ]
        );
        assert!(
            parsed
                .sections
                .iter()
                .all(|s| s.headings.is_empty() && s.page.is_none())
        );
    }

    #[test]
    fn plain_text_errors() {
        let limits = Limits::default();
        assert!(matches!(parse(Kind::Text, b"", &limits), Err(Error::Empty)));
        assert!(matches!(
            parse(Kind::Text, b" \n\n\t", &limits),
            Err(Error::Empty)
        ));
        assert!(matches!(
            parse(Kind::Text, b"ok \xC3\x28 bad", &limits),
            Err(Error::InvalidUtf8)
        ));
        let small = Limits {
            max_chars: 10,
            ..Limits::default()
        };
        assert!(matches!(
            parse(Kind::Text, b"01234567890123", &small),
            Err(Error::TooLarge(_))
        ));
        let tiny = Limits {
            max_bytes: 4,
            ..Limits::default()
        };
        assert!(matches!(
            parse(Kind::Text, b"12345", &tiny),
            Err(Error::TooLarge(_))
        ));
    }

    #[test]
    fn markdown_headings_lists_tables_and_code() {
        let md = "---\ntitle: \"Ops Guide\"\nauthor: Grace\n---\n\nIntro text.\n\n# Setup\n\nInstall *the* tool.\n\n## Linux\n\n- one\n- two\n  1. nested\n\n```sh\ncargo build --release\n```\n\n| key | value |\n|-----|-------|\n| port | 8080 |\n\n# Usage\n\n> quoted <b>bold</b> text\n";
        let parsed = parse(Kind::Markdown, md.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(parsed.title.as_deref(), Some("Ops Guide"));
        assert_eq!(parsed.author.as_deref(), Some("Grace"));
        let got = fixtures::text_and_headings(&parsed);
        assert_eq!(
            got,
            vec![
                ("Intro text.", vec![]),
                ("Install the tool.", vec!["Setup"]),
                ("- one\n- two\n  1. nested", vec!["Setup", "Linux"]),
                ("cargo build --release", vec!["Setup", "Linux"]),
                ("key | value\nport | 8080", vec!["Setup", "Linux"]),
                ("quoted bold text", vec!["Usage"]),
            ]
        );
    }

    #[test]
    fn markdown_title_falls_back_to_first_h1_and_survives_deep_nesting() {
        let parsed = parse(Kind::Markdown, b"# Hello\n\nworld\n", &Limits::default()).unwrap();
        assert_eq!(parsed.title.as_deref(), Some("Hello"));
        let deep = format!("{}deep\n", "> ".repeat(20_000));
        let parsed = parse(Kind::Markdown, deep.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(parsed.sections[0].text, "deep");
        let lists: String = (0..2_000)
            .map(|i| format!("{}- item\n", "  ".repeat(i)))
            .collect();
        assert!(parse(Kind::Markdown, lists.as_bytes(), &Limits::default()).is_ok());
    }

    #[test]
    fn strip_tags_keeps_text() {
        assert_eq!(
            strip_tags("<p align=center>Hi <!-- x --> there</p> a < b"),
            "Hi  there a < b"
        );
    }
}
