//! The forms a secret is looked for in: its needles, the skeletons of its encodings.

use data_encoding::{BASE32_NOPAD, BASE32HEX_NOPAD, BASE64_NOPAD, Encoding};
use zeroize::Zeroizing;

use super::skeleton::skeleton;
use super::{MIN_SKELETON, MIN_VALUE_SKELETON};

/// Adds the needles of `value` to `out`.
pub(super) fn needles_for(value: &str, out: &mut Vec<Vec<u8>>) {
    let mut add = |form: &str, min: usize| {
        let mut sk = skeleton(form, true);
        if sk.bytes.len() >= min {
            out.push(std::mem::take(&mut sk.bytes));
        }
    };
    // The value as written: its JSON-escaped and URL-encoded forms have the same skeleton,
    // but for characters outside ASCII.
    add(value, MIN_VALUE_SKELETON);
    let encoded = Zeroizing::new(
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    );
    add(&encoded, MIN_VALUE_SKELETON);
    let utf16 = |big_endian: bool| -> Zeroizing<Vec<u8>> {
        Zeroizing::new(
            value
                .encode_utf16()
                .flat_map(|u| {
                    if big_endian {
                        u.to_be_bytes()
                    } else {
                        u.to_le_bytes()
                    }
                })
                .collect(),
        )
    };
    let representations = [
        Zeroizing::new(value.as_bytes().to_vec()),
        utf16(false),
        utf16(true),
    ];
    for bytes in &representations {
        add(&Zeroizing::new(hex::encode(bytes.as_slice())), MIN_SKELETON);
        for (encoding, group, bits) in [
            (&BASE64_NOPAD, 3, 6),
            (&BASE32_NOPAD, 5, 5),
            (&BASE32HEX_NOPAD, 5, 5),
        ] {
            add(&Zeroizing::new(encoding.encode(bytes)), MIN_SKELETON);
            for offset in 0..group {
                if let Some(fragment) = aligned_fragment(encoding, bytes, offset, bits) {
                    add(&fragment, MIN_SKELETON);
                }
            }
        }
    }
}

/// The characters of `encoding(offset zero bytes + bytes + anything)` made only of the bits of
/// `bytes`: what any text that encodes `bytes` at that alignment contains.
fn aligned_fragment(
    encoding: &Encoding,
    bytes: &[u8],
    offset: usize,
    bits: usize,
) -> Option<Zeroizing<String>> {
    let mut shifted = Zeroizing::new(vec![0u8; offset]);
    shifted.extend_from_slice(bytes);
    let encoded = Zeroizing::new(encoding.encode(&shifted));
    let first = (8 * offset).div_ceil(bits);
    let last = (8 * (offset + bytes.len())) / bits;
    encoded
        .get(first..last)
        .map(|fragment| Zeroizing::new(fragment.to_owned()))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    use crate::scrub::tests::{SECRET, each_redacted};
    use crate::scrub::{REDACTED, Scrubber};

    #[test]
    fn invariant_i4_every_encoding_of_a_secret_is_scrubbed() {
        let scrubber = Scrubber::new([SECRET]);
        let encodings = [
            SECRET.to_owned(),
            STANDARD.encode(SECRET),
            URL_SAFE_NO_PAD.encode(SECRET),
            STANDARD.encode(format!("user:{SECRET}")),
            STANDARD.encode(format!("ab{SECRET}")),
            STANDARD.encode(format!("{SECRET}:tail")),
            hex::encode(SECRET),
            hex::encode_upper(SECRET),
            url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect(),
            percent_encoding::utf8_percent_encode(SECRET, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        ];
        for encoded in encodings {
            let text = format!("Authorization: Basic {encoded} and more");
            let scrubbed = scrubber.scrub(&text);
            assert!(
                scrubbed.contains(REDACTED),
                "{encoded} survived in {scrubbed}"
            );
            assert!(
                !scrubbed.contains(&encoded),
                "{encoded} survived in {scrubbed}"
            );
        }
        assert_eq!(scrubber.scrub("nothing here"), "nothing here");
    }

    /// `encode(prefix + secret + suffix)` for the prefixes and suffixes that put the secret at
    /// every alignment of a 5-byte (base32) or 3-byte (base64) group.
    fn aligned(bytes: &[u8], encode: impl Fn(&[u8]) -> String) -> Vec<String> {
        let mut out = Vec::new();
        for prefix in ["", "a", "ab", "abc", "abcd", "user:"] {
            for suffix in ["", "!", "?!", ":tail"] {
                let mut whole = prefix.as_bytes().to_vec();
                whole.extend_from_slice(bytes);
                whole.extend_from_slice(suffix.as_bytes());
                out.push(encode(&whole));
            }
        }
        out
    }

    #[test]
    fn invariant_i4_base32_at_every_alignment_is_scrubbed() {
        let scrubber = Scrubber::new([SECRET]);
        let mut forms = Vec::new();
        for encoding in [
            &data_encoding::BASE32,
            &data_encoding::BASE32_NOPAD,
            &data_encoding::BASE32HEX,
            &data_encoding::BASE32HEX_NOPAD,
        ] {
            forms.extend(aligned(SECRET.as_bytes(), |b| encoding.encode(b)));
            forms.extend(aligned(SECRET.as_bytes(), |b| {
                encoding.encode(b).to_lowercase()
            }));
        }
        for form in &forms {
            let scrubbed = scrubber.scrub(&format!("token {form} end"));
            assert!(
                scrubbed.starts_with("token ") && scrubbed.ends_with(" end"),
                "{scrubbed}"
            );
            assert!(scrubbed.contains(REDACTED), "{form} survived: {scrubbed}");
            assert!(!scrubber.finds(&scrubbed), "{form} still found: {scrubbed}");
        }
        // The secret alone: nothing of it is left.
        each_redacted(
            &scrubber,
            &[
                data_encoding::BASE32.encode(SECRET.as_bytes()),
                data_encoding::BASE32_NOPAD
                    .encode(SECRET.as_bytes())
                    .to_lowercase(),
                data_encoding::BASE32HEX.encode(SECRET.as_bytes()),
            ],
        );
    }

    fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
        text.encode_utf16()
            .flat_map(|u| {
                if big_endian {
                    u.to_be_bytes()
                } else {
                    u.to_le_bytes()
                }
            })
            .collect()
    }

    #[test]
    fn invariant_i4_base64_of_utf16_is_scrubbed() {
        let scrubber = Scrubber::new([SECRET]);
        let mut forms = Vec::new();
        for big_endian in [false, true] {
            for engine in [&STANDARD, &URL_SAFE_NO_PAD] {
                forms.extend(aligned(&utf16(SECRET, big_endian), |b| engine.encode(b)));
                // As PowerShell's -EncodedCommand would carry it.
                forms.push(engine.encode(utf16(
                    &format!("$h = @{{Authorization = 'Bearer {SECRET}'}}"),
                    big_endian,
                )));
            }
            forms.push(hex::encode(utf16(SECRET, big_endian)));
            each_redacted(
                &scrubber,
                &[
                    STANDARD.encode(utf16(SECRET, big_endian)),
                    hex::encode(utf16(SECRET, big_endian)),
                ],
            );
        }
        for form in &forms {
            let scrubbed = scrubber.scrub(&format!("run {form} now"));
            assert!(scrubbed.contains(REDACTED), "{form} survived: {scrubbed}");
            assert!(
                !scrubber.finds(&scrubbed),
                "{form} still found in {scrubbed}"
            );
        }
    }

    #[test]
    fn invariant_i4_line_wrapped_base64_is_scrubbed() {
        let scrubber = Scrubber::new([SECRET]);
        let encoded = STANDARD.encode(format!(
            "-----BEGIN TOKEN-----\nuser=alice\nkey={SECRET}\n-----END TOKEN-----\n"
        ));
        let mut forms = Vec::new();
        for width in [4, 19, 64, 76] {
            for newline in ["\n", "\r\n", "\\n", "\\r\\n"] {
                let wrapped = encoded
                    .as_bytes()
                    .chunks(width)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join(newline);
                forms.push(wrapped);
            }
        }
        for form in &forms {
            let scrubbed = scrubber.scrub(&format!("body: {form}"));
            assert!(scrubbed.contains(REDACTED), "{form:?} survived: {scrubbed}");
            assert!(!scrubber.finds(&scrubbed), "{scrubbed}");
        }
    }
}
