//! TOTP codes (RFC 6238): the headless level 3 factor, for an operator without a console at
//! hand.
//!
//! The parameters are the ones every authenticator app understands: HMAC-SHA1, 6 digits, a
//! 30 s step, and one step of clock skew either way. The HMAC and the RFC 4226 truncation come
//! from `totp-rs` (without its `std`, `alloc` or random features; P3AK draws the secret from
//! the system CSPRNG itself). What the crate leaves to its caller is done here:
//!
//! - **Replay** (RFC 6238 §5.2): a code is accepted once. The step it matched is remembered and
//!   a code for that step or an earlier one is refused, so a code seen over a shoulder or in a
//!   log is worthless once used (invariant I8).
//! - **Enrollment**: a 20-byte secret (RFC 4226's recommended 160 bits), shown once as base32
//!   and as an `otpauth://` URI, and only active after a first valid code proves the app has it.
//!
//! Secrets live in zeroizing buffers with neither `Debug` nor `Clone` (invariant I4); at rest
//! they exist only inside the sealed factor store (invariant I6).

use std::fmt::Write as _;

use data_encoding::BASE32_NOPAD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use totp_rs::{Algorithm, Builder, Secret};
use zeroize::{Zeroize, Zeroizing};

use crate::{FactorError, HitlError};

/// Digits in a code.
pub const DIGITS: u8 = 6;
/// Seconds a code is current.
pub const STEP_SECONDS: u64 = 30;
/// Steps of clock skew accepted either way.
pub const SKEW_STEPS: u64 = 1;
/// Secret length in bytes (160 bits).
pub const SECRET_LEN: usize = 20;
/// The issuer shown in authenticator apps.
pub const ISSUER: &str = "P3AK";
/// How long a started enrollment waits for its confirming code.
pub const ENROLLMENT_TTL_MS: i64 = 10 * 60 * 1000;
/// The longest account name in an enrollment URI.
pub const MAX_ACCOUNT_CHARS: usize = 64;

/// What stays unencoded in the URI's account name: RFC 3986's unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A TOTP shared secret. Zeroized on drop; no `Debug`, no `Clone`.
pub(crate) struct TotpSecret(Zeroizing<[u8; SECRET_LEN]>);

impl TotpSecret {
    /// A fresh secret from the system CSPRNG.
    pub(crate) fn generate() -> Result<Self, HitlError> {
        let mut bytes = p3ak_crypto::random_array::<SECRET_LEN>()?;
        let secret = Self(Zeroizing::new(bytes));
        bytes.zeroize();
        Ok(secret)
    }

    fn from_base32(text: &str) -> Result<Self, HitlError> {
        let bytes = base32_decode(text)?;
        let array: [u8; SECRET_LEN] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| FactorError::TotpSecretLength {
                    expected: SECRET_LEN,
                    len: bytes.len(),
                })?;
        Ok(Self(Zeroizing::new(array)))
    }

    /// The secret in base32 (RFC 4648, no padding), as authenticator apps take it.
    pub(crate) fn base32(&self) -> Zeroizing<String> {
        base32_encode(self.0.as_ref())
    }

    /// The code for `unix_seconds` with `digits` digits (6 to 8).
    fn code_at(&self, digits: u8, unix_seconds: u64) -> Result<Zeroizing<String>, HitlError> {
        let totp = Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(digits)
            .with_step_duration(STEP_SECONDS)
            .with_secret(Secret::new_stack(*self.0))
            .build()
            .map_err(FactorError::TotpCompute)?;
        let mut out = Zeroizing::new(String::with_capacity(usize::from(digits)));
        write!(out, "{}", totp.generate(unix_seconds)).map_err(FactorError::TotpFormat)?;
        Ok(out)
    }

    /// The step in the skew window around `unix_seconds` that `code` matches, if it is later
    /// than `after`. Every step of the window is computed and compared in constant time.
    fn matching_step(
        &self,
        code: &str,
        unix_seconds: u64,
        after: Option<u64>,
    ) -> Result<Option<u64>, HitlError> {
        let origin = unix_seconds / STEP_SECONDS;
        let mut found = None;
        for step in origin.saturating_sub(SKEW_STEPS)..=origin.saturating_add(SKEW_STEPS) {
            let expected = self.code_at(DIGITS, step.saturating_mul(STEP_SECONDS))?;
            let fresh = after.is_none_or(|last| step > last);
            if p3ak_crypto::constant_time_eq(expected.as_bytes(), code.as_bytes())
                && fresh
                && found.is_none()
            {
                found = Some(step);
            }
        }
        Ok(found)
    }
}

impl serde::Serialize for TotpSecret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for TotpSecret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut bytes = <[u8; SECRET_LEN]>::deserialize(deserializer)?;
        let secret = Self(Zeroizing::new(bytes));
        bytes.zeroize();
        Ok(secret)
    }
}

/// An active TOTP enrollment, as sealed in the factor store.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TotpRecord {
    secret: TotpSecret,
    account: String,
    active_since_ms: i64,
    /// The last step a code was accepted for; codes for it or earlier are refused.
    last_step: Option<u64>,
}

impl TotpRecord {
    /// Checks `code` (already [`normalize`]d) at `now_ms`; on a match, remembers its step so
    /// it cannot be used again. The caller persists the record before acting on `true`.
    pub(crate) fn accept(&mut self, code: &str, now_ms: i64) -> Result<bool, HitlError> {
        let step = self
            .secret
            .matching_step(code, unix_seconds(now_ms)?, self.last_step)?;
        if let Some(step) = step {
            self.last_step = Some(step);
        }
        Ok(step.is_some())
    }
}

/// A started enrollment, waiting for the code that confirms the app has the secret.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PendingTotp {
    secret: TotpSecret,
    account: String,
    begun_ms: i64,
}

impl PendingTotp {
    /// A fresh secret for `account`, with what to show the operator.
    pub(crate) fn begin(account: &str, now_ms: i64) -> Result<(Self, Enrollment), HitlError> {
        check_account(account)?;
        let secret = TotpSecret::generate()?;
        let enrollment = Enrollment::new(account, &secret);
        Ok((
            Self {
                secret,
                account: account.to_owned(),
                begun_ms: now_ms,
            },
            enrollment,
        ))
    }

    /// True once the enrollment waited longer than [`ENROLLMENT_TTL_MS`] (or the clock went
    /// back past its start).
    pub(crate) fn expired(&self, now_ms: i64) -> bool {
        let age = now_ms.saturating_sub(self.begun_ms);
        !(0..=ENROLLMENT_TTL_MS).contains(&age)
    }

    /// The step the confirming code matches, if it does.
    pub(crate) fn confirming_step(
        &self,
        code: &str,
        now_ms: i64,
    ) -> Result<Option<u64>, HitlError> {
        self.secret.matching_step(code, unix_seconds(now_ms)?, None)
    }

    /// The active record after a code for `step` confirmed it; the record remembers the step,
    /// so the confirming code cannot approve anything afterwards.
    pub(crate) fn activate(self, step: u64, now_ms: i64) -> TotpRecord {
        TotpRecord {
            secret: self.secret,
            account: self.account,
            active_since_ms: now_ms,
            last_step: Some(step),
        }
    }
}

/// What the operator gets when enrollment starts: the secret to type into an authenticator
/// app, or the URI to scan as a QR code. Shown once; both strings are zeroized on drop.
/// No `Debug`, no `Clone`.
pub struct Enrollment {
    /// `otpauth://totp/P3AK:<account>?secret=…&issuer=P3AK&algorithm=SHA1&digits=6&period=30`
    pub uri: String,
    /// The secret in base32 (RFC 4648, no padding).
    pub secret_base32: String,
}

impl Enrollment {
    fn new(account: &str, secret: &TotpSecret) -> Self {
        let secret_base32 = secret.base32();
        let mut uri = String::with_capacity(128);
        uri.push_str("otpauth://totp/");
        uri.push_str(ISSUER);
        uri.push(':');
        uri.extend(utf8_percent_encode(account, UNRESERVED));
        uri.push_str("?secret=");
        uri.push_str(&secret_base32);
        uri.push_str("&issuer=");
        uri.push_str(ISSUER);
        let _ = write!(uri, "&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}");
        Self {
            uri,
            secret_base32: secret_base32.as_str().to_owned(),
        }
    }
}

impl Drop for Enrollment {
    fn drop(&mut self) {
        self.uri.zeroize();
        self.secret_base32.zeroize();
    }
}

/// The current code for a base32 secret at `now_ms`: what an authenticator app shows. For
/// tests and tools; the daemon never needs it.
pub fn code_for(secret_base32: &str, now_ms: i64) -> Result<String, HitlError> {
    let secret = TotpSecret::from_base32(secret_base32)?;
    let code = secret.code_at(DIGITS, unix_seconds(now_ms)?)?;
    Ok(code.as_str().to_owned())
}

/// A code as typed, without spaces (apps show `123 456`); refused unless it is 6 ASCII digits.
/// The format is public, so a malformed code is not counted as a wrong try.
pub(crate) fn normalize(code: &str) -> Result<Zeroizing<String>, HitlError> {
    let mut out = Zeroizing::new(String::with_capacity(code.len()));
    out.extend(code.chars().filter(|c| !c.is_whitespace()));
    if out.len() != usize::from(DIGITS) || !out.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FactorError::TotpCodeForm { digits: DIGITS }.into());
    }
    Ok(out)
}

/// Milliseconds since the epoch to whole seconds; refused before 1970.
fn unix_seconds(now_ms: i64) -> Result<u64, HitlError> {
    u64::try_from(now_ms.div_euclid(1000)).map_err(|_| FactorError::ClockBefore1970.into())
}

fn check_account(account: &str) -> Result<(), HitlError> {
    let count = account.chars().count();
    if count == 0 || count > MAX_ACCOUNT_CHARS {
        return Err(FactorError::TotpAccountLength {
            max: MAX_ACCOUNT_CHARS,
        }
        .into());
    }
    if account.chars().any(|c| c == ':' || c.is_control()) {
        return Err(FactorError::TotpAccountChars {
            account: account.to_owned(),
        }
        .into());
    }
    Ok(())
}

/// Base32 (RFC 4648, no padding) into a zeroizing string sized up front, so no copy of the
/// secret is left behind by a reallocation.
fn base32_encode(bytes: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(BASE32_NOPAD.encode_len(bytes.len())));
    BASE32_NOPAD.encode_append(bytes, &mut out);
    out
}

/// Decodes base32 (either case; spaces and `=` padding ignored).
fn base32_decode(text: &str) -> Result<Zeroizing<Vec<u8>>, HitlError> {
    let mut clean = Zeroizing::new(String::with_capacity(text.len()));
    clean.extend(
        text.chars()
            .filter(|c| !c.is_whitespace() && *c != '=')
            .map(|c| c.to_ascii_uppercase()),
    );
    let invalid = |e: data_encoding::DecodeError| {
        HitlError::Factor(match e.kind {
            data_encoding::DecodeKind::Symbol => FactorError::TotpSecretSymbol(e),
            _ => FactorError::TotpSecretBase32(e),
        })
    };
    let len = BASE32_NOPAD.decode_len(clean.len()).map_err(invalid)?;
    let mut out = Zeroizing::new(vec![0u8; len]);
    let n = BASE32_NOPAD
        .decode_mut(clean.as_bytes(), &mut out)
        .map_err(|partial| invalid(partial.error))?;
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B's SHA-1 seed.
    fn rfc_secret() -> TotpSecret {
        TotpSecret(Zeroizing::new(*b"12345678901234567890"))
    }

    #[test]
    fn rfc6238_appendix_b_sha1_vectors() -> Result<(), HitlError> {
        let secret = rfc_secret();
        for (time, code) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(secret.code_at(8, time)?.as_str(), code, "time {time}");
            // the 6-digit code is the low 6 digits of the same number
            assert_eq!(
                secret.code_at(6, time)?.as_str(),
                code.get(2..).unwrap_or_default(),
                "time {time}"
            );
        }
        Ok(())
    }

    #[test]
    fn base32_round_trips_and_matches_rfc4648() -> Result<(), HitlError> {
        // RFC 4648 §10 vectors (without padding)
        for (plain, encoded) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()).as_str(), encoded);
            assert_eq!(base32_decode(encoded)?.as_slice(), plain.as_bytes());
        }
        assert_eq!(
            rfc_secret().base32().as_str(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        assert_eq!(base32_decode("mzxw 6ytb oi==")?.as_slice(), b"foobar");
        assert!(base32_decode("MZXW1").is_err());
        Ok(())
    }

    #[test]
    fn one_step_of_skew_either_way_is_accepted() -> Result<(), HitlError> {
        let secret = rfc_secret();
        let t = 1_111_111_111;
        let step = t / STEP_SECONDS;
        let code = secret.code_at(DIGITS, t)?;
        assert_eq!(secret.matching_step(&code, t, None)?, Some(step));
        assert_eq!(secret.matching_step(&code, t - 30, None)?, Some(step));
        assert_eq!(secret.matching_step(&code, t + 30, None)?, Some(step));
        assert_eq!(secret.matching_step(&code, t + 60, None)?, None);
        assert_eq!(secret.matching_step(&code, t - 60, None)?, None);
        Ok(())
    }

    #[test]
    fn invariant_i8_a_totp_code_is_accepted_once() -> Result<(), HitlError> {
        let mut record = TotpRecord {
            secret: rfc_secret(),
            account: "operator".to_owned(),
            active_since_ms: 0,
            last_step: None,
        };
        let t = 1_234_567_890_u64;
        let now_ms = i64::try_from(t * 1000).unwrap_or_default();
        let code = record.secret.code_at(DIGITS, t)?;
        assert!(record.accept(&code, now_ms)?);
        assert!(!record.accept(&code, now_ms)?, "replayed in the same step");
        assert!(
            !record.accept(&code, now_ms + 30_000)?,
            "replayed in the next step"
        );
        // the previous step's code is older than the accepted one: refused too
        let older = record.secret.code_at(DIGITS, t - 30)?;
        assert!(!record.accept(&older, now_ms)?);
        // the next step's code is fresh
        let next = record.secret.code_at(DIGITS, t + 30)?;
        assert!(record.accept(&next, now_ms + 30_000)?);
        Ok(())
    }

    #[test]
    fn codes_are_normalized_and_checked_for_form() -> Result<(), HitlError> {
        assert_eq!(normalize(" 123 456\n")?.as_str(), "123456");
        for bad in ["12345", "1234567", "12345a", "１２３４５６", ""] {
            assert!(
                matches!(
                    normalize(bad),
                    Err(HitlError::Factor(FactorError::TotpCodeForm { .. }))
                ),
                "{bad}"
            );
        }
        Ok(())
    }

    #[test]
    fn enrollment_uri_has_the_standard_form() -> Result<(), HitlError> {
        let (pending, enrollment) = PendingTotp::begin("ops@example.org", 5)?;
        let b32 = enrollment.secret_base32.clone();
        assert_eq!(b32.len(), 32);
        assert_eq!(
            enrollment.uri,
            format!(
                "otpauth://totp/P3AK:ops%40example.org?secret={b32}&issuer=P3AK&algorithm=SHA1&digits=6&period=30"
            )
        );
        assert_eq!(pending.secret.base32().as_str(), b32);
        assert!(!pending.expired(5 + ENROLLMENT_TTL_MS));
        assert!(pending.expired(6 + ENROLLMENT_TTL_MS));
        assert!(pending.expired(4));
        assert!(PendingTotp::begin("a:b", 0).is_err());
        assert!(PendingTotp::begin("", 0).is_err());
        Ok(())
    }

    #[test]
    fn code_for_matches_what_the_record_accepts() -> Result<(), HitlError> {
        let (pending, enrollment) = PendingTotp::begin("operator", 0)?;
        let now_ms = 1_700_000_000_000;
        let wrong = if code_for(&enrollment.secret_base32, now_ms)? == "000000" {
            "000001"
        } else {
            "000000"
        };
        assert_eq!(pending.confirming_step(wrong, now_ms)?, None);
        let code = code_for(&enrollment.secret_base32, now_ms)?;
        let step = pending.confirming_step(&code, now_ms)?;
        assert_eq!(step, Some(1_700_000_000 / STEP_SECONDS));
        let mut record = pending.activate(step.unwrap_or_default(), now_ms);
        // the confirming code is spent
        assert!(!record.accept(&code, now_ms)?);
        Ok(())
    }
}
