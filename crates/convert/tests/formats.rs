//! One test per format, each on a real sample file built here or committed under `fixtures/`.

#![cfg(test)]

mod common;

use p3ak_convert::{
    ChunkOptions, Converted, Format, Input, Limits, Location, chunk, convert, detect,
};
use std::path::Path;

fn conv(bytes: &[u8], name: &str) -> Converted {
    convert(&Input::new(bytes).with_name(name), &Limits::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn text(c: &Converted) -> String {
    c.sections
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn section_under<'a>(c: &'a Converted, path: &[&str]) -> &'a str {
    c.sections
        .iter()
        .find(|s| s.heading_path == path)
        .map(|s| s.text.as_str())
        .unwrap_or_else(|| panic!("no section under {path:?} in {:#?}", c.sections))
}

#[test]
fn markdown_headings_become_paths() {
    let md = b"---\ntitle: Front title\nauthor: me\n---\n# Guide\n\nIntro text.\n\n## Install\n\nRun `cargo build`.\n\n- one\n- two\n\n### Linux\n\nUse apt.\n\n## Use\n\n| a | b |\n|---|---|\n| 1 | 2 |\n";
    let c = conv(md, "guide.md");
    assert_eq!(c.format, Format::Markdown);
    assert_eq!(c.title.as_deref(), Some("Front title"));
    assert_eq!(c.metadata.get("author").map(String::as_str), Some("me"));
    assert_eq!(section_under(&c, &["Guide"]), "Intro text.");
    assert_eq!(
        section_under(&c, &["Guide", "Install"]),
        "Run cargo build.\n\n- one\n- two"
    );
    assert_eq!(
        section_under(&c, &["Guide", "Install", "Linux"]),
        "Use apt."
    );
    assert_eq!(section_under(&c, &["Guide", "Use"]), "a\tb\n1\t2");
}

#[test]
fn plain_text_keeps_lines() {
    let c = conv(b"first line\nsecond line\n\nthird\n", "notes.txt");
    assert_eq!(c.format, Format::PlainText);
    assert_eq!(text(&c), "first line\nsecond line\n\nthird");
    assert_eq!(c.sections[0].location, Location::Lines { start: 1, end: 4 });
    let chunks = chunk(
        &c,
        &ChunkOptions {
            target_chars: 24,
            max_chars: 48,
        },
    );
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[1].text, "third");
    assert_eq!(chunks[1].location, Location::Lines { start: 4, end: 4 });
}

#[test]
fn html_drops_scripts_and_keeps_headings() {
    let html = br#"<!DOCTYPE html><html><head><title>The Page</title><meta name="author" content="Ann"><style>p{color:red}</style></head>
<body><nav>menu</nav><h1>Main</h1><p>Hello   <b>world</b>.</p><script>alert('x')</script>
<h2>Sub</h2><ul><li>a</li><li>b</li></ul><table><tr><td>1</td><td>2</td></tr></table><pre>  keep
   spacing</pre></body></html>"#;
    let c = conv(html, "page.html");
    assert_eq!(c.title.as_deref(), Some("The Page"));
    assert_eq!(c.metadata.get("author").map(String::as_str), Some("Ann"));
    assert_eq!(section_under(&c, &["Main"]), "Hello world.");
    let sub = section_under(&c, &["Main", "Sub"]);
    assert!(sub.contains("- a\n- b"), "{sub}");
    assert!(sub.contains("1\t2"), "{sub}");
    assert!(sub.contains("  keep\n   spacing"), "{sub}");
    let all = text(&c);
    assert!(!all.contains("alert") && !all.contains("color") && !all.contains("menu"));
}

#[test]
fn pdf_pages_and_info() {
    let bytes = common::pdf(&["Page one text\nsecond line", "Page two text"]);
    assert_eq!(detect(None, &bytes), Format::Pdf);
    let c = conv(&bytes, "doc.pdf");
    assert_eq!(c.title.as_deref(), Some("Generated PDF"));
    assert_eq!(
        c.metadata.get("author").map(String::as_str),
        Some("Test Suite")
    );
    assert_eq!(c.metadata.get("pages").map(String::as_str), Some("2"));
    assert_eq!(c.sections.len(), 2);
    assert_eq!(c.sections[0].location, Location::Page { page: 1 });
    assert!(
        c.sections[0].text.contains("Page one text"),
        "{:?}",
        c.sections[0].text
    );
    assert!(c.sections[0].text.contains("second line"));
    assert!(c.sections[1].text.contains("Page two text"));
    assert_eq!(c.sections[1].location, Location::Page { page: 2 });
}

#[test]
fn docx_heading_styles_tables_metadata() {
    let body = [
        common::para(Some("Title"), "The Title"),
        common::para(Some("Heading1"), "Chapter"),
        common::para(None, "Body &amp; soul."),
        common::para(Some("berschrift2"), "Section"),
        common::para(None, "More text."),
        // A text box nested in a run, with its VML fallback duplicate.
        r#"<w:p><w:r><w:t>Before box.</w:t></w:r><w:r><mc:AlternateContent><mc:Choice><w:drawing><w:txbxContent><w:p><w:r><w:t>Boxed.</w:t></w:r></w:p></w:txbxContent></w:drawing></mc:Choice><mc:Fallback><w:pict><w:txbxContent><w:p><w:r><w:t>Boxed.</w:t></w:r></w:p></w:txbxContent></w:pict></mc:Fallback></mc:AlternateContent></w:r><w:r><w:t> After box.</w:t></w:r></w:p>"#.to_owned(),
        r#"<w:tbl><w:tr><w:tc><w:p><w:r><w:t>c1</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>c2</w:t></w:r></w:p></w:tc></w:tr></w:tbl>"#.to_owned(),
    ]
    .concat();
    let bytes = common::docx(&body);
    assert_eq!(detect(None, &bytes), Format::Docx);
    let c = conv(&bytes, "report.docx");
    assert_eq!(c.title.as_deref(), Some("Quarterly report"));
    assert_eq!(
        c.metadata.get("author").map(String::as_str),
        Some("Ann Author")
    );
    assert_eq!(section_under(&c, &["Chapter"]), "Body & soul.");
    assert_eq!(
        section_under(&c, &["Chapter", "Section"]),
        "More text.\n\nBoxed.\n\nBefore box. After box.\n\nc1\tc2"
    );
}

#[test]
fn pptx_one_section_per_slide() {
    let bytes = common::pptx(&[("Welcome", "First body"), ("Plan", "Second body")]);
    assert_eq!(detect(Some(Path::new("x.bin")), &bytes), Format::Pptx);
    let c = conv(&bytes, "deck.pptx");
    assert_eq!(c.sections.len(), 2);
    assert_eq!(c.sections[0].heading_path, vec!["Welcome".to_owned()]);
    assert_eq!(c.sections[0].location, Location::Slide { slide: 1 });
    assert_eq!(c.sections[0].text, "First body\nsecond line");
    assert_eq!(c.sections[1].heading_path, vec!["Plan".to_owned()]);
    assert_eq!(c.metadata.get("slides").map(String::as_str), Some("2"));
}

#[test]
fn odt_headings_and_meta() {
    let body = r#"<office:text><text:h text:outline-level="1">Top</text:h><text:p>Alpha<text:s text:c="2"/>beta<text:tab/>gamma</text:p><text:h text:outline-level="2">Inner</text:h><text:p>Delta <text:span>span</text:span><office:annotation><text:p>a comment</text:p></office:annotation></text:p></office:text>"#;
    let bytes = common::odf("application/vnd.oasis.opendocument.text", body);
    assert_eq!(detect(None, &bytes), Format::Odt);
    let c = conv(&bytes, "doc.odt");
    assert_eq!(c.title.as_deref(), Some("ODF sample"));
    assert_eq!(
        c.metadata.get("author").map(String::as_str),
        Some("Bo Writer")
    );
    assert_eq!(section_under(&c, &["Top"]), "Alpha  beta\tgamma");
    assert_eq!(section_under(&c, &["Top", "Inner"]), "Delta span");
}

#[test]
fn xlsx_sheets_rows() {
    let bytes = common::xlsx(&[
        (
            "Sales",
            vec![
                vec!["Region", "Total"],
                vec!["North", "12.5"],
                vec![],
                vec!["South", "7"],
            ],
        ),
        ("Empty", vec![]),
        ("Notes", vec![vec!["", "offset cell"]]),
    ]);
    assert_eq!(detect(None, &bytes), Format::Xlsx);
    let c = conv(&bytes, "book.xlsx");
    assert_eq!(c.metadata.get("sheets").map(String::as_str), Some("3"));
    assert_eq!(c.sections.len(), 2);
    assert_eq!(c.sections[0].heading_path, vec!["Sales".to_owned()]);
    assert_eq!(c.sections[0].text, "Region\tTotal\nNorth\t12.5\n\nSouth\t7");
    assert_eq!(
        c.sections[0].location,
        Location::Sheet {
            sheet: "Sales".into(),
            first_row: 1,
            last_row: 4
        }
    );
    let chunks = chunk(
        &c,
        &ChunkOptions {
            target_chars: 15,
            max_chars: 30,
        },
    );
    let south = chunks.iter().find(|ch| ch.text.contains("South")).unwrap();
    assert_eq!(
        south.location,
        Location::Sheet {
            sheet: "Sales".into(),
            first_row: 4,
            last_row: 4
        }
    );
    assert_eq!(c.sections[1].text, "offset cell");
}

#[test]
fn ods_sheets_rows_repeats() {
    let body = r#"<office:spreadsheet><table:table table:name="Data"><table:table-row><table:table-cell><text:p>name</text:p></table:table-cell><table:table-cell table:number-columns-repeated="2"><text:p>x</text:p></table:table-cell></table:table-row><table:table-row table:number-rows-repeated="1048570"><table:table-cell table:number-columns-repeated="16384"/></table:table-row><table:table-row><table:table-cell><text:p>last</text:p></table:table-cell></table:table-row></table:table></office:spreadsheet>"#;
    let bytes = common::odf("application/vnd.oasis.opendocument.spreadsheet", body);
    assert_eq!(detect(None, &bytes), Format::Ods);
    let c = conv(&bytes, "book.ods");
    assert_eq!(c.sections[0].heading_path, vec!["Data".to_owned()]);
    assert_eq!(c.sections[0].text, "name\tx\tx");
    // The far row starts its own section, located at its real row number.
    assert_eq!(c.sections[1].text, "last");
    assert_eq!(
        c.sections[1].location,
        Location::Sheet {
            sheet: "Data".into(),
            first_row: 1_048_572,
            last_row: 1_048_572
        }
    );
}

#[test]
fn csv_and_tsv_records() {
    let c = conv(b"name,note\nann,\"multi\nline\"\nbob,plain\n", "people.csv");
    assert_eq!(c.format, Format::Csv);
    assert_eq!(text(&c), "name\tnote\nann\tmulti line\nbob\tplain");
    assert_eq!(
        c.metadata.get("columns").map(String::as_str),
        Some("name\tnote")
    );
    assert_eq!(c.sections[0].location, Location::Lines { start: 1, end: 3 });
    let t = conv(b"a\tb\n1\t2\n", "t.tsv");
    assert_eq!(t.format, Format::Tsv);
    assert_eq!(text(&t), "a\tb\n1\t2");
}

#[test]
fn json_keys_as_paths() {
    let c = conv(
        br#"{"server": {"host": "example", "ports": [80, 443]}, "name": "demo", "empty": null}"#,
        "c.json",
    );
    assert_eq!(
        section_under(&c, &["server"]),
        "server.host: example\nserver.ports[0]: 80\nserver.ports[1]: 443"
    );
    assert_eq!(section_under(&c, &["name"]), "name: demo");
    let lines = conv(b"{\"a\":1}\n{\"a\":2}\n", "events.json");
    assert_eq!(text(&lines), "[0].a: 1\n[1].a: 2");
}

#[test]
fn yaml_documents() {
    let c = conv(
        b"title: Hello\nitems:\n  - one\n  - two\n1: numeric key\n",
        "c.yaml",
    );
    assert_eq!(section_under(&c, &["title"]), "title: Hello");
    assert_eq!(
        section_under(&c, &["items"]),
        "items[0]: one\nitems[1]: two"
    );
    assert_eq!(section_under(&c, &["1"]), "1: numeric key");
    let multi = conv(b"a: 1\n---\na: 2\n", "m.yml");
    assert_eq!(text(&multi), "[0].a: 1\n[1].a: 2");
}

#[test]
fn toml_tables() {
    let c = conv(b"title = \"Cfg\"\n[owner]\nname = \"Tom\"\ndob = 1979-05-27T07:32:00Z\n[[items]]\nid = 1\n", "c.toml");
    assert_eq!(
        section_under(&c, &["owner"]),
        "owner.dob: 1979-05-27T07:32:00Z\nowner.name: Tom"
    );
    assert_eq!(section_under(&c, &["items"]), "items[0].id: 1");
    assert_eq!(section_under(&c, &["title"]), "title: Cfg");
}

#[test]
fn xml_text_content() {
    let c = conv(b"<?xml version=\"1.0\"?><!DOCTYPE r><feed><title>Feed &amp; more</title><entry a=\"attr\"><p>One &#x41;</p><![CDATA[raw <b>]]></entry><!-- note --></feed>", "f.xml");
    assert_eq!(c.title.as_deref(), Some("Feed & more"));
    assert_eq!(text(&c), "Feed & more\nOne A\nraw <b>");
}

const EML: &str = "From: Ann <ann@example.com>\r\nTo: bob@example.com\r\nSubject: Re: invoice\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease find the invoice attached.\r\n--XX\r\nContent-Type: text/markdown; name=\"notes.md\"\r\nContent-Disposition: attachment; filename=\"notes.md\"\r\n\r\n# Notes\r\n\r\nPay by Friday.\r\n--XX\r\nContent-Type: application/octet-stream; name=\"blob.bin\"\r\nContent-Disposition: attachment; filename=\"blob.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n--XX--\r\n";

#[test]
fn eml_headers_body_attachments() {
    let c = conv(EML.as_bytes(), "mail.eml");
    assert_eq!(c.format, Format::Eml);
    assert_eq!(c.title.as_deref(), Some("Re: invoice"));
    assert_eq!(
        c.metadata.get("from").map(String::as_str),
        Some("Ann <ann@example.com>")
    );
    assert!(section_under(&c, &["Re: invoice"]).contains("From: Ann <ann@example.com>"));
    let body = c
        .sections
        .iter()
        .find(|s| matches!(&s.location, Location::Email { part, .. } if part == "body"))
        .unwrap();
    assert_eq!(body.text, "Please find the invoice attached.");
    assert_eq!(c.attachments.len(), 1);
    assert_eq!(c.attachments[0].name, "notes.md");
    assert_eq!(c.attachments[0].converted.format, Format::Markdown);
    assert!(
        c.warnings.iter().any(|w| w.contains("blob.bin")),
        "{:?}",
        c.warnings
    );
    let chunks = chunk(&c, &ChunkOptions::default());
    let note = chunks
        .iter()
        .find(|ch| ch.text == "Pay by Friday.")
        .unwrap();
    assert_eq!(
        note.heading_path,
        vec!["Re: invoice", "attachment: notes.md", "Notes"]
    );
}

#[test]
fn mbox_messages() {
    let mbox = "From ann@example.com Mon Jan  1 10:00:00 2024\nFrom: ann@example.com\nSubject: First\n\nHello one.\n\nFrom bob@example.com Mon Jan  1 11:00:00 2024\nFrom: bob@example.com\nSubject: Second\n\nHello two.\n";
    let c = conv(mbox.as_bytes(), "box.mbox");
    assert_eq!(c.metadata.get("messages").map(String::as_str), Some("2"));
    assert_eq!(detect(None, mbox.as_bytes()), Format::Mbox);
    let second = c
        .sections
        .iter()
        .find(|s| s.text.contains("Hello two."))
        .unwrap();
    assert_eq!(second.heading_path, vec!["Second".to_owned()]);
    assert_eq!(
        second.location,
        Location::Email {
            message: 2,
            part: "body".into()
        }
    );
}

#[test]
fn rtf_fixture() {
    let bytes = include_bytes!("fixtures/sample.rtf");
    let c = conv(bytes, "sample.rtf");
    assert_eq!(c.format, Format::Rtf);
    assert_eq!(c.title.as_deref(), Some("RTF sample"));
    let all = text(&c);
    assert!(all.contains("Hello RTF world."), "{all}");
    assert!(all.contains("Caf\u{e9} \u{20ac}5"), "{all}");
    assert!(all.contains("cell one\tcell two"), "{all}");
    assert!(!all.contains("Times New Roman"), "{all}");
}

#[test]
fn source_code_tagged_and_split_by_blocks() {
    let code = "use std::io;\n\nfn main() {\n    println!(\"hi\");\n}\n\nfn other() {}\n";
    let c = conv(code.as_bytes(), "src/main.rs");
    assert_eq!(c.format, Format::SourceCode);
    assert_eq!(c.language.as_deref(), Some("rust"));
    // Blank-line blocks are packed up to the target, never split inside.
    let chunks = chunk(
        &c,
        &ChunkOptions {
            target_chars: 50,
            max_chars: 80,
        },
    );
    assert_eq!(chunks.len(), 2);
    assert_eq!(
        chunks[0].text,
        "use std::io;\n\nfn main() {\n    println!(\"hi\");\n}"
    );
    assert_eq!(chunks[0].location, Location::Lines { start: 1, end: 5 });
    assert_eq!(chunks[1].text, "fn other() {}");
    assert_eq!(chunks[1].location, Location::Lines { start: 7, end: 7 });
}

#[test]
fn man_page_fixture() {
    let bytes = include_bytes!("fixtures/greet.1");
    let c = conv(bytes, "greet.1");
    assert_eq!(c.format, Format::Man);
    assert_eq!(c.title.as_deref(), Some("GREET(1)"));
    assert_eq!(section_under(&c, &["NAME"]), "greet - print a greeting");
    let synopsis = section_under(&c, &["SYNOPSIS"]);
    assert_eq!(synopsis, "greet [-n name]");
    let opts = section_under(&c, &["DESCRIPTION", "Options"]);
    assert!(
        opts.contains("-n name\nGreet name instead of the world."),
        "{opts}"
    );
}
