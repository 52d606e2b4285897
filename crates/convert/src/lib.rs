//! P3AK document converters: one input in, normalized text sections out, then chunks.
//!
//! The crate is a pure library: it never prints, never exits and never touches the network.
//! It reads a file only in [`convert_file`], when asked to.
//!
//! ```
//! use p3ak_convert::{ChunkOptions, Input, Limits, chunk, convert};
//!
//! let input = Input::new(b"# Intro\n\nHello world.\n").with_name("notes.md");
//! let doc = convert(&input, &Limits::default())?;
//! let chunks = chunk(&doc, &ChunkOptions::default());
//! assert_eq!(chunks[0].heading_path, vec!["Intro".to_owned()]);
//! assert_eq!(chunks[0].text, "Hello world.");
//! # Ok::<(), p3ak_convert::ConvertError>(())
//! ```
//!
//! Every failure is a [`ConvertError`] with a one-line lowercase message; malformed input never
//! panics. [`Limits`] bound the input size, the output size, zip archives (office files) and the
//! nesting depth of email attachments. See `docs/formats.md` for what each format keeps.

#![forbid(unsafe_code)]

mod chunk;
mod code;
mod delimited;
mod detect;
mod doc;
mod html;
mod mail;
mod man;
mod markdown;
mod office;
mod pdf;
mod rtf;
mod sheet;
mod text;
mod tree;
mod xml;
mod zipsafe;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

pub use chunk::{Chunk, ChunkOptions, chunk};
pub use code::language_for_extension;
pub use detect::detect;

/// A document format this crate can convert (or [`Format::Unknown`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Format {
    /// CommonMark / GitHub-flavoured Markdown.
    Markdown,
    /// Plain text (UTF-8; invalid bytes replaced).
    PlainText,
    /// HTML or XHTML.
    Html,
    /// PDF (text layer only).
    Pdf,
    /// Word 2007+ (`.docx`).
    Docx,
    /// PowerPoint 2007+ (`.pptx`).
    Pptx,
    /// OpenDocument text (`.odt`).
    Odt,
    /// Excel 2007+ (`.xlsx`, `.xlsm`).
    Xlsx,
    /// OpenDocument spreadsheet (`.ods`).
    Ods,
    /// Comma-separated values.
    Csv,
    /// Tab-separated values.
    Tsv,
    /// JSON.
    Json,
    /// YAML (one or more documents).
    Yaml,
    /// TOML.
    Toml,
    /// Generic XML.
    Xml,
    /// One RFC 5322 email message (`.eml`).
    Eml,
    /// A Unix mailbox (`.mbox`) of many messages.
    Mbox,
    /// Rich Text Format.
    Rtf,
    /// Source code; the language tag is in [`Converted::language`].
    SourceCode,
    /// A roff man page (`.1`–`.9`, `.man`).
    Man,
    /// Not recognised; [`convert`] refuses it.
    Unknown,
}

impl Format {
    /// The short lowercase name used in messages and metadata (`pdf`, `docx`, …).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Markdown => "markdown",
            Self::PlainText => "text",
            Self::Html => "html",
            Self::Pdf => "pdf",
            Self::Docx => "docx",
            Self::Pptx => "pptx",
            Self::Odt => "odt",
            Self::Xlsx => "xlsx",
            Self::Ods => "ods",
            Self::Csv => "csv",
            Self::Tsv => "tsv",
            Self::Json => "json",
            Self::Yaml => "yaml",
            Self::Toml => "toml",
            Self::Xml => "xml",
            Self::Eml => "eml",
            Self::Mbox => "mbox",
            Self::Rtf => "rtf",
            Self::SourceCode => "code",
            Self::Man => "man",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Resource bounds for one [`convert`] call (attachments included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest input accepted, in bytes (default 64 MiB).
    pub max_input_bytes: usize,
    /// Most characters of text produced, attachments included (default 64 Mi); counted as
    /// UTF-8 bytes, so it bounds memory too.
    pub max_output_chars: usize,
    /// Most entries in a zip container: DOCX, PPTX, XLSX, ODT, ODS (default 10,000).
    pub max_zip_entries: usize,
    /// Most bytes a zip container may declare or inflate to, all entries together
    /// (default 256 MiB).
    pub max_zip_uncompressed_bytes: u64,
    /// Highest compression ratio of one zip entry larger than 1 MiB (default 100).
    pub max_zip_ratio: u64,
    /// Deepest nesting of attachments: an email inside an email inside … (default 4).
    pub max_depth: usize,
    /// Most decompressed bytes of one PDF page's content streams (default 32 MiB).
    pub max_pdf_page_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_input_bytes: 64 << 20,
            max_output_chars: 64 << 20,
            max_zip_entries: 10_000,
            max_zip_uncompressed_bytes: 256 << 20,
            max_zip_ratio: 100,
            max_depth: 4,
            max_pdf_page_bytes: 32 << 20,
        }
    }
}

/// One input to convert: its bytes, an optional file name (used for detection and the source
/// code language) and an optional forced format.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The raw bytes.
    pub bytes: &'a [u8],
    /// File name or path hint; only its extension and final component are used.
    pub name: Option<&'a str>,
    /// Skip detection and use this format.
    pub format: Option<Format>,
}

impl<'a> Input<'a> {
    /// An input with no name and no forced format.
    #[must_use]
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            name: None,
            format: None,
        }
    }

    /// Sets the file name hint.
    #[must_use]
    pub fn with_name(mut self, name: &'a str) -> Self {
        self.name = Some(name);
        self
    }

    /// Forces the format.
    #[must_use]
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }
}

/// Where a section or chunk sits in its source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Location {
    /// No finer location than the document (or attachment) itself.
    Document,
    /// Lines `start..=end`, 1-based (plain text, Markdown, source code, CSV rows, man pages).
    Lines {
        /// First line, 1-based.
        start: u32,
        /// Last line, inclusive.
        end: u32,
    },
    /// A PDF page, 1-based.
    Page {
        /// Page number, 1-based.
        page: u32,
    },
    /// Rows `first_row..=last_row` (1-based, as the spreadsheet shows them) of a sheet.
    Sheet {
        /// Sheet name.
        sheet: String,
        /// First row, 1-based.
        first_row: u32,
        /// Last row, inclusive.
        last_row: u32,
    },
    /// A presentation slide, 1-based.
    Slide {
        /// Slide number, 1-based.
        slide: u32,
    },
    /// A part of an email: `headers` or `body`; `message` is the 1-based index in an MBOX
    /// (1 for a single EML).
    Email {
        /// Message number in the mailbox, 1-based.
        message: u32,
        /// `headers` or `body`.
        part: String,
    },
}

/// A run of text under one heading path at one location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Enclosing headings, outermost first (empty before the first heading).
    pub heading_path: Vec<String>,
    /// Normalized text: `\n` line ends, no trailing spaces, no control characters.
    pub text: String,
    /// Where the text comes from.
    pub location: Location,
}

/// An attachment converted recursively (emails only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// File name from the email, or `attachment N`.
    pub name: String,
    /// Heading path the attachment's chunks are placed under, e.g.
    /// `["Re: invoice", "attachment: a.pdf"]`.
    pub heading_path: Vec<String>,
    /// The converted attachment.
    pub converted: Converted,
}

/// The result of [`convert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// The format used.
    pub format: Format,
    /// Document title when the format carries one (PDF info, DOCX core properties, HTML
    /// `<title>`, first Markdown `#` heading, email subject, man page `.TH`).
    pub title: Option<String>,
    /// Format metadata (author, dates, sender, page count, …); keys are lowercase.
    pub metadata: BTreeMap<String, String>,
    /// Source code language tag (`rust`, `python`, …), for [`Format::SourceCode`] only.
    pub language: Option<String>,
    /// The text, in document order.
    pub sections: Vec<Section>,
    /// Converted attachments (emails); depth is bounded by [`Limits::max_depth`].
    pub attachments: Vec<Attachment>,
    /// Things skipped on the way that did not fail the whole conversion (an unsupported
    /// attachment, a PDF page whose text could not be read, invalid UTF-8 replaced).
    pub warnings: Vec<String>,
}

impl Converted {
    pub(crate) fn new(format: Format) -> Self {
        Self {
            format,
            title: None,
            metadata: BTreeMap::new(),
            language: None,
            sections: Vec::new(),
            attachments: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Total characters of text in the sections and attachments.
    #[must_use]
    pub fn char_count(&self) -> usize {
        self.sections
            .iter()
            .map(|s| s.text.chars().count())
            .sum::<usize>()
            + self
                .attachments
                .iter()
                .map(|a| a.converted.char_count())
                .sum::<usize>()
    }
}

/// Why a conversion failed. Messages are one line, lowercase, without a trailing period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The input has no bytes.
    #[error("empty input")]
    Empty,
    /// The input is larger than [`Limits::max_input_bytes`].
    #[error("input is {size} bytes, over the limit of {limit}")]
    InputTooLarge {
        /// Input size.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// The text produced would exceed [`Limits::max_output_chars`].
    #[error("text output exceeds the limit of {limit} characters")]
    OutputTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The format was not recognised or cannot be converted.
    #[error("unsupported format")]
    Unsupported,
    /// A zip container has too many entries.
    #[error("zip archive has {count} entries, over the limit of {limit}")]
    ZipTooManyEntries {
        /// Entries found.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A zip container would inflate past [`Limits::max_zip_uncompressed_bytes`].
    #[error("zip archive inflates past the limit of {limit} bytes")]
    ZipTooLarge {
        /// The limit.
        limit: u64,
    },
    /// A zip entry compresses suspiciously well (a zip bomb).
    #[error("zip entry `{name}` has a compression ratio over {limit}")]
    ZipRatio {
        /// Entry name.
        name: String,
        /// The limit.
        limit: u64,
    },
    /// The document is encrypted or password protected.
    #[error("{format} is encrypted")]
    Encrypted {
        /// The format.
        format: Format,
    },
    /// The bytes are not valid for the format.
    #[error("invalid {format}: {reason}")]
    Malformed {
        /// The format.
        format: Format,
        /// One-line reason.
        reason: String,
    },
    /// Attachments nest deeper than [`Limits::max_depth`].
    #[error("attachments nest deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A file could not be read (only [`convert_file`]).
    #[error("cannot read file: {reason}")]
    Io {
        /// One-line reason.
        reason: String,
    },
    /// A third-party parser panicked; the panic was contained.
    #[error("{format} parser failed on this input")]
    ParserPanic {
        /// The format.
        format: Format,
    },
}

impl ConvertError {
    pub(crate) fn malformed(format: Format, reason: impl fmt::Display) -> Self {
        Self::Malformed {
            format,
            reason: one_line(&reason.to_string()),
        }
    }
}

/// Squashes a third-party message to one line without a trailing period.
pub(crate) fn one_line(s: &str) -> String {
    let first = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut out: String = first.chars().take(200).collect();
    while out.ends_with('.') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("unknown error");
    }
    out
}

/// Converts one input into sections.
///
/// The format is `input.format` when set, else [`detect`]ed from the name and the bytes.
///
/// # Errors
///
/// [`ConvertError`] on empty, oversized, unsupported or malformed input.
pub fn convert(input: &Input<'_>, limits: &Limits) -> Result<Converted, ConvertError> {
    let mut ctx = doc::Ctx::new(limits);
    convert_in(input, &mut ctx)
}

/// Reads `path` (refusing files over [`Limits::max_input_bytes`]) and converts it, using the
/// path for detection.
///
/// # Errors
///
/// [`ConvertError::Io`] when the file cannot be read, else as [`convert`].
pub fn convert_file(path: &Path, limits: &Limits) -> Result<Converted, ConvertError> {
    let io = |e: std::io::Error| ConvertError::Io {
        reason: one_line(&e.to_string().to_lowercase()),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > limits.max_input_bytes as u64 {
        return Err(ConvertError::InputTooLarge {
            size: meta.len(),
            limit: limits.max_input_bytes,
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let name = path.to_string_lossy();
    convert(&Input::new(&bytes).with_name(&name), limits)
}

/// Converts with a shared context (budget, depth); used recursively for attachments.
pub(crate) fn convert_in(
    input: &Input<'_>,
    ctx: &mut doc::Ctx<'_>,
) -> Result<Converted, ConvertError> {
    let limits = ctx.limits;
    if input.bytes.is_empty() {
        return Err(ConvertError::Empty);
    }
    if input.bytes.len() > limits.max_input_bytes {
        return Err(ConvertError::InputTooLarge {
            size: input.bytes.len() as u64,
            limit: limits.max_input_bytes,
        });
    }
    if ctx.depth > limits.max_depth {
        return Err(ConvertError::TooDeep {
            limit: limits.max_depth,
        });
    }
    let format = input
        .format
        .unwrap_or_else(|| detect(input.name.map(Path::new), input.bytes));
    // Third-party parsers are fuzzed, but a panic in one must not take the caller down.
    // The closure only borrows; on a panic the partial state is dropped, never reused.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        dispatch(format, input, ctx)
    }));
    let mut converted = result.unwrap_or(Err(ConvertError::ParserPanic { format }))?;
    converted.format = format;
    Ok(converted)
}

fn dispatch(
    format: Format,
    input: &Input<'_>,
    ctx: &mut doc::Ctx<'_>,
) -> Result<Converted, ConvertError> {
    let bytes = input.bytes;
    match format {
        Format::Markdown => markdown::convert(bytes, ctx),
        Format::PlainText => text::convert(bytes, ctx),
        Format::Html => html::convert(bytes, ctx),
        Format::Pdf => pdf::convert(bytes, ctx),
        Format::Docx => office::docx(bytes, ctx),
        Format::Pptx => office::pptx(bytes, ctx),
        Format::Odt => office::odt(bytes, ctx),
        Format::Xlsx | Format::Ods => sheet::convert(format, bytes, ctx),
        Format::Csv => delimited::convert(Format::Csv, b',', bytes, ctx),
        Format::Tsv => delimited::convert(Format::Tsv, b'\t', bytes, ctx),
        Format::Json => tree::json(bytes, ctx),
        Format::Yaml => tree::yaml(bytes, ctx),
        Format::Toml => tree::toml(bytes, ctx),
        Format::Xml => xml::convert(bytes, ctx),
        Format::Eml => mail::eml(bytes, ctx),
        Format::Mbox => mail::mbox(bytes, ctx),
        Format::Rtf => rtf::convert(bytes, ctx),
        Format::SourceCode => code::convert(input.name, bytes, ctx),
        Format::Man => man::convert(bytes, ctx),
        Format::Unknown => Err(ConvertError::Unsupported),
    }
}
