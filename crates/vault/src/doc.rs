use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::VaultError;
use crate::store::DocInfo;

/// A document's id: 128 random bits, shown as 32 hex digits. Random, so an id says nothing
/// about the content it names.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocId(pub(crate) [u8; 16]);

impl DocId {
    pub(crate) fn generate() -> Result<Self, VaultError> {
        Ok(Self(p3ak_crypto::random_array()?))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocId({self})")
    }
}

impl FromStr for DocId {
    type Err = VaultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).map_err(|_| VaultError::InvalidId(s.to_owned()))?;
        Ok(Self(out))
    }
}

impl Serialize for DocId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for DocId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What the vault knows about a document besides its bytes. Stored encrypted, in the
/// document's first record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocMeta {
    pub id: DocId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Unix seconds.
    pub created: i64,
    pub size: u64,
    pub chunks: u32,
    /// Keyed hash of the content (HMAC-SHA256 under the vault's id key), for deduplication.
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Set on an internal object (a search index file, an embedding table): the namespace it
    /// belongs to. Objects are named by `title`, hidden from listings, never deduplicated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
}

/// One internal object of a space (see [`crate::Vault::objects`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
}

/// Longest space or object name, in bytes.
pub const MAX_OBJECT_NAME_LEN: usize = 512;

/// Checks a space or object name: 1 to 512 bytes, no control characters.
pub fn validate_object_name(name: &str) -> Result<(), VaultError> {
    if name.is_empty() || name.len() > MAX_OBJECT_NAME_LEN || name.chars().any(char::is_control) {
        return Err(VaultError::InvalidObjectName(
            name.chars().take(64).collect(),
        ));
    }
    Ok(())
}

/// A document to store.
pub struct NewDocument<'a> {
    pub content: &'a [u8],
    pub title: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Where it came from (a file name), for the operator.
    pub source: Option<String>,
}

impl<'a> NewDocument<'a> {
    pub fn new(content: &'a [u8]) -> Self {
        Self {
            content,
            title: None,
            tags: BTreeMap::new(),
            source: None,
        }
    }
}

/// Checks one tag key and value.
pub fn validate_tag(key: &str, value: &str) -> Result<(), VaultError> {
    let bad_key = key.is_empty()
        || key.chars().count() > 128
        || key.contains('=')
        || key.chars().any(char::is_control);
    if bad_key || value.chars().any(char::is_control) || value.len() > 4096 {
        return Err(VaultError::InvalidTag(format!("{key}={value}")));
    }
    Ok(())
}

/// Whether `put` stored something new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PutStatus {
    Created,
    /// The same content is already stored; its id is returned and nothing is written.
    Unchanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub id: DocId,
    pub status: PutStatus,
}

/// Which documents a listing keeps (`p3ak vault list --match … --tag …`).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Lowercased: matched against title and source, case-insensitively.
    needle: Option<String>,
    tags: Vec<(String, String)>,
}

impl ListFilter {
    /// Documents whose title or source contains `matching` (ignoring case), and that carry
    /// every tag of `tags`.
    #[must_use]
    pub fn new(matching: Option<&str>, tags: Vec<(String, String)>) -> Self {
        Self {
            needle: matching.map(str::to_lowercase),
            tags,
        }
    }

    #[must_use]
    pub fn matches(&self, doc: &DocInfo) -> bool {
        let named = self.needle.as_ref().is_none_or(|needle| {
            [&doc.title, &doc.source].iter().any(|f| {
                f.as_ref()
                    .is_some_and(|t| t.to_lowercase().contains(needle))
            })
        });
        named && self.tags.iter().all(|(k, v)| doc.tags.get(k) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(title: Option<&str>, source: Option<&str>, tags: &[(&str, &str)]) -> DocInfo {
        DocInfo {
            id: DocId([0; 16]),
            title: title.map(str::to_owned),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            created: 0,
            size: 0,
            source: source.map(str::to_owned),
            damaged: None,
        }
    }

    #[test]
    fn list_filter_matches_title_or_source_ignoring_case_and_every_tag() {
        let tagged = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let doc = info(
            Some("Budget 2027"),
            Some("notes.md"),
            &[("kind", "finance"), ("owner", "sam")],
        );
        assert!(ListFilter::default().matches(&doc));
        assert!(ListFilter::new(Some("BUDGET"), Vec::new()).matches(&doc));
        assert!(ListFilter::new(Some("notes"), Vec::new()).matches(&doc));
        assert!(!ListFilter::new(Some("lisbon"), Vec::new()).matches(&doc));
        assert!(
            ListFilter::new(None, tagged(&[("kind", "finance"), ("owner", "sam")])).matches(&doc)
        );
        assert!(
            !ListFilter::new(None, tagged(&[("kind", "finance"), ("owner", "alex")])).matches(&doc)
        );
        assert!(!ListFilter::new(Some("budget"), tagged(&[("kind", "it")])).matches(&doc));
        assert!(!ListFilter::new(Some("x"), Vec::new()).matches(&info(None, None, &[])));
    }

    #[test]
    fn id_parses_only_32_hex_digits() {
        let id: DocId = "00112233445566778899aabbccddeeff".parse().unwrap();
        assert_eq!(id.to_string(), "00112233445566778899aabbccddeeff");
        assert!("0011".parse::<DocId>().is_err());
        assert!("zz112233445566778899aabbccddeeff".parse::<DocId>().is_err());
    }

    #[test]
    fn tags_are_checked() {
        assert!(validate_tag("project", "p3ak").is_ok());
        assert!(validate_tag("", "x").is_err());
        assert!(validate_tag("a=b", "x").is_err());
        assert!(validate_tag("k", "line\nbreak").is_err());
    }
}
