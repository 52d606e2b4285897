//! Zip containers (office formats) opened with bomb checks: entry count, declared total size,
//! per-entry compression ratio, and a hard cap on the bytes actually inflated.

use std::io::{Cursor, Read};

use zip::ZipArchive;
use zip::result::ZipError;

use crate::{ConvertError, Format, Limits};

/// Entries smaller than this are not ratio-checked (small XML compresses very well).
const RATIO_FLOOR: u64 = 1 << 20;

pub(crate) struct SafeZip<'a> {
    archive: ZipArchive<Cursor<&'a [u8]>>,
    format: Format,
    /// Bytes still allowed to inflate.
    remaining: u64,
    limit: u64,
}

/// Checks the central directory of `bytes` against `limits` without inflating anything.
pub(crate) fn check(format: Format, bytes: &[u8], limits: &Limits) -> Result<(), ConvertError> {
    open(format, bytes, limits).map(|_| ())
}

pub(crate) fn open<'a>(
    format: Format,
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<SafeZip<'a>, ConvertError> {
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(|e| zip_error(format, &e))?;
    if archive.len() > limits.max_zip_entries {
        return Err(ConvertError::ZipTooManyEntries {
            count: archive.len(),
            limit: limits.max_zip_entries,
        });
    }
    let limit = limits.max_zip_uncompressed_bytes;
    let mut total = 0u64;
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(|e| zip_error(format, &e))?;
        let size = entry.size();
        total = total.saturating_add(size);
        if total > limit {
            return Err(ConvertError::ZipTooLarge { limit });
        }
        if size > RATIO_FLOOR && size / entry.compressed_size().max(1) > limits.max_zip_ratio {
            return Err(ConvertError::ZipRatio {
                name: entry
                    .name()
                    .map(|n| n.chars().take(100).collect())
                    .unwrap_or_default(),
                limit: limits.max_zip_ratio,
            });
        }
    }
    Ok(SafeZip {
        archive,
        format,
        remaining: limit,
        limit,
    })
}

impl SafeZip<'_> {
    /// Entry names, in archive order.
    pub fn names(&self) -> Vec<String> {
        self.archive
            .file_names()
            .filter_map(Result::ok)
            .map(std::borrow::Cow::into_owned)
            .collect()
    }

    /// Reads an entry as UTF-8 text (invalid sequences replaced); `None` if it is absent.
    /// Inflation stops at the archive's remaining byte budget, whatever the entry declares.
    pub fn read_text(&mut self, name: &str) -> Result<Option<String>, ConvertError> {
        let format = self.format;
        let mut entry = match self.archive.by_name(name) {
            Ok(entry) => entry,
            Err(ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(zip_error(format, &e)),
        };
        let mut buf = Vec::new();
        (&mut entry)
            .take(self.remaining.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| ConvertError::malformed(format, format!("zip entry `{name}`: {e}")))?;
        let len = buf.len() as u64;
        if len > self.remaining {
            return Err(ConvertError::ZipTooLarge { limit: self.limit });
        }
        self.remaining -= len;
        Ok(Some(match String::from_utf8(buf) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }))
    }

    /// Reads an entry that must exist.
    pub fn require_text(&mut self, name: &str) -> Result<String, ConvertError> {
        self.read_text(name)?
            .ok_or_else(|| ConvertError::malformed(self.format, format!("missing `{name}`")))
    }
}

fn zip_error(format: Format, e: &ZipError) -> ConvertError {
    let msg = e.to_string().to_lowercase();
    if msg.contains("password") || msg.contains("encrypt") {
        return ConvertError::Encrypted { format };
    }
    ConvertError::malformed(format, format!("zip: {msg}"))
}
