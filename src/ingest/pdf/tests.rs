use crate::ingest::tests::fixtures::{self, Pdf};
use crate::ingest::{Error, Kind, Limits, Parsed, Section, parse};
use flate2::Compression;
use flate2::write::ZlibEncoder;
use lopdf::{
    Dictionary, Document, EncryptionState, EncryptionVersion, Object, Permissions, Stream,
    StringFormat, dictionary,
};
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
    pdf.extend_from_slice(format!("\nendstream\nendobj\nstartxref\n{offset}\n%%EOF").as_bytes());
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
