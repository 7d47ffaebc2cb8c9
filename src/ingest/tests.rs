//! Test fixtures generated in code (PDFs with lopdf, DOCX with docx-rs, ZIPs with the zip
//! crate) and end-to-end tests: detect -> parse -> chunk for every format.

pub(crate) mod fixtures {
    use lopdf::{Dictionary, Document, Object, ObjectId, Stream, StringFormat, dictionary};
    use std::io::{Cursor, Read, Write};
    use zip::write::SimpleFileOptions;

    /// Each parsed section as (text, heading path), for comparing with an expected outline.
    pub fn text_and_headings(parsed: &crate::ingest::Parsed) -> Vec<(&str, Vec<&str>)> {
        parsed
            .sections
            .iter()
            .map(|s| {
                (
                    s.text.as_str(),
                    s.headings.iter().map(String::as_str).collect(),
                )
            })
            .collect()
    }

    fn deflated() -> SimpleFileOptions {
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated)
    }

    pub fn zip_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            zip.start_file(*name, deflated()).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    const CONTENT_TYPES: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#;
    const RELS: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>"#;

    /// A minimal DOCX around a hand-written `word/document.xml`.
    pub fn docx_raw(document_xml: &str) -> Vec<u8> {
        zip_with(&[
            ("[Content_Types].xml", CONTENT_TYPES.as_bytes()),
            ("_rels/.rels", RELS.as_bytes()),
            ("word/document.xml", document_xml.as_bytes()),
        ])
    }

    fn write_bomb_document<W: Write>(w: &mut W, spaces: usize) {
        w.write_all(br#"<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>"#).unwrap();
        let chunk = vec![b' '; 64 * 1024];
        let mut left = spaces;
        while left > 0 {
            let n = left.min(chunk.len());
            w.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        w.write_all(b"</w:t></w:r></w:p></w:body></w:document>")
            .unwrap();
    }

    /// A DOCX whose document.xml is `spaces` spaces inside one paragraph, streamed into the
    /// archive (never held in memory).
    pub fn docx_bomb(spaces: usize) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("[Content_Types].xml", deflated()).unwrap();
        zip.write_all(CONTENT_TYPES.as_bytes()).unwrap();
        let options = deflated().large_file(spaces > u32::MAX as usize / 2);
        zip.start_file("word/document.xml", options).unwrap();
        write_bomb_document(&mut zip, spaces);
        zip.finish().unwrap().into_inner()
    }

    /// A one-entry DOCX whose headers claim `declared` uncompressed bytes while the entry
    /// really inflates to about `spaces` bytes.
    pub fn docx_bomb_lying_size(spaces: usize, declared: u32) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("word/document.xml", deflated()).unwrap();
        write_bomb_document(&mut zip, spaces);
        let mut bytes = zip.finish().unwrap().into_inner();
        let local = find(&bytes, b"PK\x03\x04").unwrap();
        bytes[local + 22..local + 26].copy_from_slice(&declared.to_le_bytes());
        let central = find(&bytes, b"PK\x01\x02").unwrap();
        bytes[central + 24..central + 28].copy_from_slice(&declared.to_le_bytes());
        bytes
    }

    /// Raw deflate data that inflates to `prefix` followed by about `mib` MiB of spaces, built
    /// without compressing a gigabyte: after a sync flush, the encoding of 1 MiB of spaces
    /// only refers back into a window that is all spaces, so one segment can be repeated. The
    /// stream has no final block: a reader hits our limit long before the missing end.
    pub fn deflate_spaces(prefix: &[u8], mib: usize) -> Vec<u8> {
        use flate2::write::DeflateEncoder;
        let mut enc = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(prefix).unwrap();
        enc.write_all(&[b' '; 64 * 1024]).unwrap();
        enc.flush().unwrap();
        let head = enc.get_ref().len();
        enc.write_all(&vec![b' '; 1024 * 1024]).unwrap();
        enc.flush().unwrap();
        let segment = enc.get_ref()[head..].to_vec();
        let mut out = enc.get_ref()[..head].to_vec();
        for _ in 0..mib {
            out.extend_from_slice(&segment);
        }
        out
    }

    /// A hand-written one-entry ZIP (stored as deflate) holding `word/document.xml` that
    /// inflates to about 1 GiB of spaces, declaring `declared` uncompressed bytes.
    pub fn docx_gigabyte_bomb(declared: u32) -> Vec<u8> {
        let name = b"word/document.xml";
        let data = deflate_spaces(
            br#"<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>"#,
            1024,
        );
        let compressed = u32::try_from(data.len()).unwrap();
        let mut zip = Vec::new();
        let header = |zip: &mut Vec<u8>, central: bool| {
            zip.extend_from_slice(if central {
                b"PK\x01\x02"
            } else {
                b"PK\x03\x04"
            });
            if central {
                zip.extend_from_slice(&20u16.to_le_bytes()); // made by
            }
            zip.extend_from_slice(&20u16.to_le_bytes()); // needed
            zip.extend_from_slice(&0u16.to_le_bytes()); // flags
            zip.extend_from_slice(&8u16.to_le_bytes()); // deflate
            zip.extend_from_slice(&[0, 0, 0x21, 0]); // time, date
            zip.extend_from_slice(&0u32.to_le_bytes()); // crc (never checked: we stop first)
            zip.extend_from_slice(&compressed.to_le_bytes());
            zip.extend_from_slice(&declared.to_le_bytes());
            zip.extend_from_slice(&(name.len() as u16).to_le_bytes());
            zip.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central {
                zip.extend_from_slice(&[0; 6]); // comment len, disk, internal attrs
                zip.extend_from_slice(&0u32.to_le_bytes()); // external attrs
                zip.extend_from_slice(&0u32.to_le_bytes()); // local header offset
            }
            zip.extend_from_slice(name);
        };
        header(&mut zip, false);
        zip.extend_from_slice(&data);
        let central_at = zip.len();
        header(&mut zip, true);
        let central_len = zip.len() - central_at;
        zip.extend_from_slice(b"PK\x05\x06");
        zip.extend_from_slice(&[0; 4]);
        zip.extend_from_slice(&1u16.to_le_bytes());
        zip.extend_from_slice(&1u16.to_le_bytes());
        zip.extend_from_slice(&(central_len as u32).to_le_bytes());
        zip.extend_from_slice(&(central_at as u32).to_le_bytes());
        zip.extend_from_slice(&0u16.to_le_bytes());
        zip
    }

    /// A DOCX with `depth` nested elements in document.xml.
    pub fn docx_nested(depth: usize) -> Vec<u8> {
        let mut xml = String::from(r#"<w:document xmlns:w="x"><w:body>"#);
        xml.push_str(&"<w:sdt>".repeat(depth));
        xml.push_str(&"</w:sdt>".repeat(depth));
        xml.push_str("</w:body></w:document>");
        docx_raw(&xml)
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// A handbook built with docx-rs's writer: Title, Heading1/Heading2 sections, a nested
    /// bulleted list, a table, and core properties (title, creator).
    pub fn docx_handbook() -> Vec<u8> {
        use docx_rs::*;
        let p = |text: &str| Paragraph::new().add_run(Run::new().add_text(text));
        let cell = |text: &str| TableCell::new().add_paragraph(p(text));
        let row = |cells: [&str; 3]| TableRow::new(cells.iter().map(|c| cell(c)).collect());
        let bullet = |level: usize| {
            Level::new(
                level,
                Start::new(1),
                NumberFormat::new("bullet"),
                LevelText::new("\u{2022}"),
                LevelJc::new("left"),
            )
        };
        let docx = Docx::new()
            .add_style(Style::new("Title", StyleType::Paragraph).name("Title"))
            .add_style(Style::new("Heading1", StyleType::Paragraph).name("Heading 1"))
            .add_style(Style::new("Heading2", StyleType::Paragraph).name("Heading 2"))
            .add_abstract_numbering(
                AbstractNumbering::new(7)
                    .add_level(bullet(0))
                    .add_level(bullet(1)),
            )
            .add_numbering(Numbering::new(7, 7))
            .add_paragraph(p("Staff Handbook").style("Title"))
            .add_paragraph(p(
                "Welcome to the company. Caf\u{e9} & Co <Ltd> is glad to have you.",
            ))
            .add_paragraph(p("Holidays").style("Heading1"))
            .add_paragraph(p("Everyone gets 25 days of paid leave per year."))
            .add_paragraph(p("Carry-over").style("Heading2"))
            .add_paragraph(p("Up to five days can be carried over."))
            .add_paragraph(p("Equipment").style("Heading1"))
            .add_paragraph(p("Laptop").numbering(NumberingId::new(7), IndentLevel::new(0)))
            .add_paragraph(p("Badge").numbering(NumberingId::new(7), IndentLevel::new(0)))
            .add_paragraph(p("Visitor badge").numbering(NumberingId::new(7), IndentLevel::new(1)))
            .add_paragraph(p("Contacts").style("Heading1"))
            .add_table(Table::new(vec![
                row(["Name", "Role", "City"]),
                row(["Alice", "Engineer", "Rome"]),
                row(["Bob", "Designer", "Oslo"]),
            ]));
        let mut out = Cursor::new(Vec::new());
        docx.build().pack(&mut out).unwrap();
        // docx-rs's writer cannot set dc:title / dc:creator: replace core.xml.
        let core = r#"<?xml version="1.0" encoding="UTF-8"?><cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Staff Handbook</dc:title><dc:creator>Ada Lovelace</dc:creator></cp:coreProperties>"#;
        replace_entry(&out.into_inner(), "docProps/core.xml", core.as_bytes())
    }

    fn replace_entry(zip_bytes: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
        let mut archive = zip::ZipArchive::new(Cursor::new(zip_bytes)).unwrap();
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let mut replaced = false;
        for i in 0..archive.len() {
            let mut file = archive.by_index(i).unwrap();
            let entry = file.name().unwrap().to_string();
            out.start_file(entry.as_str(), deflated()).unwrap();
            if entry == name {
                out.write_all(data).unwrap();
                replaced = true;
            } else {
                let mut buf = Vec::new();
                file.read_to_end(&mut buf).unwrap();
                out.write_all(&buf).unwrap();
            }
        }
        if !replaced {
            out.start_file(name, deflated()).unwrap();
            out.write_all(data).unwrap();
        }
        out.finish().unwrap().into_inner()
    }

    /// Builds PDFs with lopdf: Helvetica (WinAnsi) as /F1, Courier as /F2, pages from raw
    /// content or from (font size, text) lines.
    pub struct Pdf {
        pub doc: Document,
        pages_id: ObjectId,
        pub resources_id: ObjectId,
        pub kids: Vec<ObjectId>,
        outline: Vec<(u8, String, usize, bool)>,
    }

    /// Encodes text as a PDF literal string in WinAnsi (Latin-1 for the characters we use).
    pub fn pdf_string(text: &str) -> Vec<u8> {
        let mut out = vec![b'('];
        for c in text.chars() {
            match c {
                '(' | ')' | '\\' => {
                    out.push(b'\\');
                    out.push(c as u8);
                }
                c if (c as u32) < 256 => out.push(c as u8),
                _ => out.push(b'?'),
            }
        }
        out.push(b')');
        out
    }

    impl Pdf {
        pub fn new() -> Self {
            let mut doc = Document::with_version("1.5");
            let pages_id = doc.new_object_id();
            let helvetica = doc.add_object(dictionary! {
                "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
                "Encoding" => "WinAnsiEncoding",
            });
            let courier = doc.add_object(dictionary! {
                "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Courier",
            });
            let resources_id = doc.add_object(dictionary! {
                "Font" => dictionary! { "F1" => helvetica, "F2" => courier },
            });
            Self {
                doc,
                pages_id,
                resources_id,
                kids: Vec::new(),
                outline: Vec::new(),
            }
        }

        pub fn page(&mut self, content: Vec<u8>) -> ObjectId {
            let content_id = self.doc.add_object(Stream::new(Dictionary::new(), content));
            self.page_with_content(content_id)
        }

        pub fn page_with_content(&mut self, content_id: ObjectId) -> ObjectId {
            let page = self.doc.add_object(dictionary! {
                "Type" => "Page", "Parent" => self.pages_id, "Contents" => content_id,
            });
            self.kids.push(page);
            page
        }

        /// Lines top to bottom in Helvetica; an empty text leaves a paragraph gap.
        pub fn text_page(&mut self, lines: &[(f64, &str)]) -> ObjectId {
            let mut content = b"BT\n".to_vec();
            let mut y = 800.0;
            for (size, text) in lines {
                if text.is_empty() {
                    y -= size * 1.5;
                    continue;
                }
                content.extend_from_slice(format!("/F1 {size} Tf 1 0 0 1 72 {y} Tm ").as_bytes());
                content.extend_from_slice(&pdf_string(text));
                content.extend_from_slice(b" Tj\n");
                y -= size * 1.3;
            }
            content.extend_from_slice(b"ET\n");
            self.page(content)
        }

        pub fn info(&mut self, title: &str, author: &str) {
            let info = self.doc.add_object(dictionary! {
                "Title" => Object::string_literal(title),
                "Author" => Object::String(
                    // UTF-16BE with BOM, as real producers write non-ASCII names.
                    std::iter::once(0xFEFFu16).chain(author.encode_utf16()).flat_map(u16::to_be_bytes).collect(),
                    StringFormat::Hexadecimal,
                ),
            });
            self.doc.trailer.set("Info", info);
        }

        /// An outline entry (level 1 = top) pointing at page `page` (0-based); `named` makes it
        /// use a named destination from the catalog's /Dests.
        pub fn bookmark(&mut self, level: u8, title: &str, page: usize, named: bool) {
            self.outline.push((level, title.to_owned(), page, named));
        }

        fn build_outline(&mut self) -> Option<(ObjectId, Dictionary)> {
            if self.outline.is_empty() {
                return None;
            }
            let root = self.doc.new_object_id();
            let ids: Vec<ObjectId> = self
                .outline
                .iter()
                .map(|_| self.doc.new_object_id())
                .collect();
            // Parent of each item: the nearest earlier item with a smaller level.
            let parents: Vec<Option<usize>> = (0..self.outline.len())
                .map(|i| {
                    (0..i)
                        .rev()
                        .find(|&j| self.outline[j].0 < self.outline[i].0)
                })
                .collect();
            let children = |parent: Option<usize>| -> Vec<usize> {
                (0..self.outline.len())
                    .filter(|&i| parents[i] == parent)
                    .collect()
            };
            let mut dests = Dictionary::new();
            for (i, (_, title, page, named)) in self.outline.iter().enumerate() {
                let siblings = children(parents[i]);
                let pos = siblings.iter().position(|&s| s == i).unwrap();
                let explicit = Object::Array(vec![
                    self.kids[*page].into(),
                    "XYZ".into(),
                    Object::Null,
                    Object::Null,
                    Object::Null,
                ]);
                let dest = if *named {
                    let name = format!("dest{i}");
                    dests.set(name.as_bytes().to_vec(), explicit);
                    Object::Name(name.into_bytes())
                } else {
                    explicit
                };
                let mut item = dictionary! {
                    "Title" => Object::string_literal(title.as_str()),
                    "Parent" => parents[i].map_or(root, |p| ids[p]),
                    "Dest" => dest,
                };
                if pos > 0 {
                    item.set("Prev", ids[siblings[pos - 1]]);
                }
                if let Some(next) = siblings.get(pos + 1) {
                    item.set("Next", ids[*next]);
                }
                let kids = children(Some(i));
                if let (Some(first), Some(last)) = (kids.first(), kids.last()) {
                    item.set("First", ids[*first]);
                    item.set("Last", ids[*last]);
                    item.set("Count", kids.len() as i64);
                }
                self.doc.objects.insert(ids[i], Object::Dictionary(item));
            }
            let top = children(None);
            self.doc.objects.insert(
                root,
                Object::Dictionary(dictionary! {
                    "Type" => "Outlines",
                    "First" => ids[top[0]],
                    "Last" => ids[*top.last().unwrap()],
                    "Count" => top.len() as i64,
                }),
            );
            Some((root, dests))
        }

        pub fn finish(self, compress: bool) -> Vec<u8> {
            let count = self.kids.len() as i64;
            self.finish_with_count(compress, count)
        }

        pub fn finish_with_count(mut self, compress: bool, count: i64) -> Vec<u8> {
            let outline = self.build_outline();
            let kids: Vec<Object> = self.kids.iter().map(|id| (*id).into()).collect();
            self.doc.objects.insert(
                self.pages_id,
                Object::Dictionary(dictionary! {
                    "Type" => "Pages", "Kids" => kids, "Count" => count,
                    "Resources" => self.resources_id,
                    "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
                }),
            );
            let mut catalog = dictionary! { "Type" => "Catalog", "Pages" => self.pages_id };
            if let Some((root, dests)) = outline {
                catalog.set("Outlines", root);
                if !dests.is_empty() {
                    catalog.set("Dests", dests);
                }
            }
            let catalog_id = self.doc.add_object(catalog);
            self.doc.trailer.set("Root", catalog_id);
            if compress {
                self.doc.compress();
            }
            let mut out = Vec::new();
            self.doc.save_to(&mut out).unwrap();
            out
        }
    }

    /// A three-page policy: title and section sizes above 11pt body text, paragraphs, and
    /// (optionally) bookmarks.
    pub fn pdf_policy(with_outline: bool) -> Vec<u8> {
        let mut pdf = Pdf::new();
        pdf.info(
            "Microsoft Word - Travel Policy.docx",
            "J\u{f6}rg M\u{fc}ller",
        );
        pdf.text_page(&[
            (24.0, "Travel Policy"),
            (11.0, ""),
            (11.0, "This policy explains how staff book and claim"),
            (11.0, "business travel. It applies to everyone."),
            (11.0, ""),
            (16.0, "Booking"),
            (11.0, "Book trains at least two weeks ahead. Flights"),
            (
                11.0,
                "need approval from a manager for the caf\u{e9} budget.",
            ),
        ]);
        pdf.text_page(&[
            (11.0, "Hotels are booked through the travel desk, which"),
            (11.0, "keeps a list of preferred partners."),
            (11.0, ""),
            (16.0, "Expenses"),
            (13.0, "Meals"),
            (11.0, "Meals are refunded up to 40 euros per day."),
        ]);
        pdf.text_page(&[
            (13.0, "Receipts"),
            (11.0, "Keep every receipt for seven years."),
        ]);
        if with_outline {
            pdf.bookmark(1, "Booking", 0, false);
            pdf.bookmark(1, "Expenses", 1, true);
            pdf.bookmark(2, "Meals", 1, false);
            pdf.bookmark(2, "Receipts", 2, false);
        }
        pdf.finish(true)
    }

    /// A PDF of `pages` pages sharing one empty content stream, declaring `count` pages.
    pub fn pdf_many_pages(pages: usize, count: i64) -> Vec<u8> {
        let mut pdf = Pdf::new();
        let content = pdf
            .doc
            .add_object(Stream::new(Dictionary::new(), Vec::new()));
        for _ in 0..pages {
            pdf.page_with_content(content);
        }
        pdf.finish_with_count(false, count)
    }
}

use super::*;

fn chunk_all(chunker: &Chunker, parsed: &Parsed) -> Vec<ChunkText> {
    let chunks = chunker.chunk(parsed, 400, 60);
    for c in &chunks {
        assert!(
            c.token_count as usize <= 400,
            "chunk over budget: {}",
            c.token_count
        );
        assert!(c.token_count > 0);
        assert!(!c.text.trim().is_empty());
    }
    chunks
}

/// Every format through detect -> parse -> chunk.
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let md = "# Guide\n\nFirst part.\n\n## Details\n\nMore text here.\n";
    let html = "<html><body><h1>Guide</h1><p>First part.</p><h2>Details</h2><p>More text here.</p></body></html>";
    vec![
        ("policy.pdf", fixtures::pdf_policy(true)),
        ("handbook.docx", fixtures::docx_handbook()),
        ("guide.md", md.as_bytes().to_vec()),
        ("guide.html", html.as_bytes().to_vec()),
        ("people.csv", b"name,city\nAlice,Rome\nBob,Oslo\n".to_vec()),
        ("notes.txt", b"one\n\ntwo\n".to_vec()),
    ]
}

#[test]
fn every_format_detects_parses_and_chunks() {
    let expected = [
        Kind::Pdf,
        Kind::Docx,
        Kind::Markdown,
        Kind::Html,
        Kind::Csv,
        Kind::Text,
    ];
    let chunker = Chunker::approximate();
    for ((name, bytes), kind) in corpus().into_iter().zip(expected) {
        assert_eq!(detect(&bytes, name, None).unwrap(), kind, "{name}");
        let parsed = parse(kind, &bytes, &Limits::default()).unwrap();
        let chunks = chunk_all(&chunker, &parsed);
        assert!(!chunks.is_empty(), "{name}");
        // Small documents: one chunk per (page, heading path) group.
        let mut groups: Vec<(Option<u32>, &Vec<String>)> = Vec::new();
        for s in &parsed.sections {
            if groups.last() != Some(&(s.page, &s.headings)) {
                groups.push((s.page, &s.headings));
            }
        }
        assert_eq!(chunks.len(), groups.len(), "{name}: {chunks:#?}");
    }
}

#[test]
fn markdown_and_html_agree_on_structure() {
    let corpus = corpus();
    let md = parse(Kind::Markdown, &corpus[2].1, &Limits::default()).unwrap();
    let html = parse(Kind::Html, &corpus[3].1, &Limits::default()).unwrap();
    assert_eq!(md.sections, html.sections);
    assert_eq!(
        md.sections[1].headings,
        vec!["Guide".to_owned(), "Details".to_owned()]
    );
}

#[test]
fn real_tokenizer_end_to_end() {
    let Some(dir) = crate::test_model::model_dir("ingest::tests::real_tokenizer_end_to_end") else {
        return;
    };
    let chunker = Chunker::from_tokenizer_file(&dir.join("tokenizer.json")).unwrap();
    for (name, bytes) in corpus() {
        let kind = detect(&bytes, name, None).unwrap();
        let parsed = parse(kind, &bytes, &Limits::default()).unwrap();
        for c in chunk_all(&chunker, &parsed) {
            assert_eq!(
                c.token_count as usize,
                chunker.count_tokens(&c.text),
                "{name}"
            );
        }
    }
    // A long document fills chunks close to the budget.
    let paragraph = "Refunds are processed within five working days after the returned item arrives at our warehouse. ";
    let text: String = (0..200).map(|i| format!("{paragraph}\n\n{i}. ")).collect();
    let parsed = parse(Kind::Text, text.as_bytes(), &Limits::default()).unwrap();
    let chunks = chunk_all(&chunker, &parsed);
    let full = &chunks[..chunks.len() - 1];
    assert!(
        full.iter().all(|c| c.token_count >= 300),
        "{:?}",
        full.iter().map(|c| c.token_count).collect::<Vec<_>>()
    );
}

#[test]
fn zero_bytes_are_empty_for_every_kind() {
    for kind in [
        Kind::Pdf,
        Kind::Docx,
        Kind::Text,
        Kind::Markdown,
        Kind::Html,
        Kind::Csv,
    ] {
        assert!(
            matches!(parse(kind, b"", &Limits::default()), Err(Error::Empty)),
            "{kind:?}"
        );
    }
}

/// Cheap mutation fuzzing: flipped bytes and truncations of valid files must give a result or
/// an error, never a panic, hang or abort.
#[test]
fn mutated_inputs_never_panic() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for (name, bytes) in corpus() {
        let kind = detect(&bytes, name, None).unwrap();
        for round in 0..60 {
            let mut mutated = bytes.clone();
            if round % 3 == 0 {
                mutated.truncate((next() as usize) % bytes.len());
            } else {
                for _ in 0..1 + next() % 8 {
                    let i = (next() as usize) % mutated.len();
                    mutated[i] = next() as u8;
                }
            }
            let _ = detect(&mutated, name, None);
            let _ = parse(kind, &mutated, &Limits::default());
        }
    }
}

#[test]
fn limits_default_values() {
    let l = Limits::default();
    assert_eq!(
        (
            l.max_bytes,
            l.max_pages,
            l.max_inflated_bytes,
            l.max_xml_depth,
            l.max_chars
        ),
        (50 * 1024 * 1024, 2000, 200 * 1024 * 1024, 256, 20_000_000)
    );
    assert_eq!(
        Kind::Docx.mime(),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    );
    assert_eq!(
        Error::ImageOnly.to_string(),
        "the PDF has no extractable text (scanned images?); run it through OCR and upload it again"
    );
}

/// The fuzz targets' seed documents (tests/fuzz/seeds/ingest_*), one per fixture above: each
/// committed seed must still be a valid document of its target's kind, so the fuzzer starts
/// from real structure. `AIGENTABLE_WRITE_FUZZ_SEEDS=1 cargo test --lib fuzz_seeds` rewrites
/// them from the fixtures.
#[test]
fn fuzz_seeds_are_valid_fixture_documents() {
    let md = "---\ntitle: \"Ops Guide\"\nauthor: Grace\n---\n\nIntro text.\n\n# Setup\n\nInstall *the* tool.\n\n## Linux\n\n- one\n- two\n  1. nested\n\n```sh\ncargo build --release\n```\n\n| key | value |\n|-----|-------|\n| port | 8080 |\n\n# Usage\n\n> quoted <b>bold</b> text\n";
    let html = "<!DOCTYPE html><html><head><title>Guide</title><meta name=\"author\" content=\"Ada\"><style>p{}</style></head><body><nav>menu</nav><h1>Guide</h1><p>First <b>part</b> &amp; more.</p><ul><li>one<ul><li>two</li></ul></li></ul><table><tr><th>k</th><td>v</td></tr></table><h2>Details</h2><pre>code\n  block</pre><script>x()</script></body></html>";
    let seeds: Vec<(&str, &str, Kind, Vec<u8>)> = vec![
        (
            "ingest_pdf",
            "policy.pdf",
            Kind::Pdf,
            fixtures::pdf_policy(true),
        ),
        (
            "ingest_pdf",
            "plain.pdf",
            Kind::Pdf,
            fixtures::pdf_policy(false),
        ),
        (
            "ingest_docx",
            "handbook.docx",
            Kind::Docx,
            fixtures::docx_handbook(),
        ),
        (
            "ingest_docx",
            "raw.docx",
            Kind::Docx,
            fixtures::docx_raw(
                r#"<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Title</w:t></w:r></w:p><w:p><w:r><w:t xml:space="preserve">Body text </w:t></w:r><w:r><w:tab/><w:t>here.</w:t></w:r></w:p><w:tbl><w:tr><w:tc><w:p><w:r><w:t>cell</w:t></w:r></w:p></w:tc></w:tr></w:tbl></w:body></w:document>"#,
            ),
        ),
        (
            "ingest_markdown",
            "guide.md",
            Kind::Markdown,
            md.as_bytes().to_vec(),
        ),
        (
            "ingest_html",
            "guide.html",
            Kind::Html,
            html.as_bytes().to_vec(),
        ),
        (
            "ingest_csv",
            "people.csv",
            Kind::Csv,
            b"name,city,note\nAlice,Rome,\"says \"\"hi\"\"\"\nBob,Oslo,\"two\nlines\"\n".to_vec(),
        ),
        (
            "ingest_csv",
            "semicolons.csv",
            Kind::Csv,
            b"a;b\n1;2\n3;4\n".to_vec(),
        ),
        (
            "ingest_text",
            "notes.txt",
            Kind::Text,
            b"\x00\xEF\xBB\xBFone\r\n\r\ntwo\n\n  three\n".to_vec(),
        ),
        (
            "ingest_text",
            "guide.md",
            Kind::Markdown,
            [b"\x01".as_slice(), md.as_bytes()].concat(),
        ),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/seeds");
    let write = std::env::var_os("AIGENTABLE_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, kind, bytes) in seeds {
        let path = dir.join(target).join(name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let seed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // ingest_text seeds start with the byte that picks the file name.
        let doc = if target == "ingest_text" {
            &seed[1..]
        } else {
            &seed[..]
        };
        let name = if target == "ingest_text" {
            name
        } else {
            "upload"
        };
        if target != "ingest_text" {
            assert_eq!(
                detect(doc, name, Some(kind.mime())).unwrap(),
                kind,
                "{}",
                path.display()
            );
        }
        let parsed = parse(kind, doc, &Limits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!parsed.sections.is_empty(), "{}", path.display());
    }
}
