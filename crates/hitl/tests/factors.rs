//! The factor store through its public API: lockout, replay, enrollment, sealing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use p3ak_crypto::{KdfParams, Key};
use p3ak_hitl::factors::{CurrentFactor, FILE_NAME, Factors, StoredPasskey};
use p3ak_hitl::level::Factor;
use p3ak_hitl::pin::Pin;
use p3ak_hitl::totp::{self, Enrollment};
use p3ak_hitl::{FactorError, HitlError};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The cheapest Argon2id cost the store accepts.
const CHEAP: KdfParams = KdfParams {
    memory_kib: KdfParams::MIN_MEMORY_KIB,
    iterations: 1,
    parallelism: 1,
};
/// 2023-11-14T22:13:20Z, on a 30 s boundary.
const T0: i64 = 1_700_000_010_000;
const PIN: &str = "correct-pin";

fn key(byte: u8) -> Key {
    Key::from_bytes(&mut [byte; 32])
}

fn open(dir: &Path) -> Result<Factors> {
    Ok(Factors::open_with_kdf(dir, &key(7), CHEAP)?)
}

fn pin(text: &str) -> Result<Pin> {
    Ok(Pin::new(text.to_owned())?)
}

fn with_pin(dir: &Path) -> Result<Factors> {
    let mut f = open(dir)?;
    f.set_pin(&pin(PIN)?, None, T0)?;
    Ok(f)
}

/// A 6-digit code that is not `right`.
fn other_than(right: &str) -> &'static str {
    if right == "000000" {
        "000001"
    } else {
        "000000"
    }
}

fn enroll_totp(f: &mut Factors, current: Option<CurrentFactor<'_>>) -> Result<Enrollment> {
    let enrollment = f.totp_begin_enrollment_with("operator", current, T0)?;
    f.totp_confirm(&totp::code_for(&enrollment.secret_base32, T0)?, T0)?;
    Ok(enrollment)
}

fn locked_for(e: &HitlError) -> Option<u64> {
    match e {
        HitlError::LockedOut { seconds } => Some(*seconds),
        _ => None,
    }
}

/// Five wrong PINs in a row, the fifth at `at`.
fn five_wrong(f: &mut Factors, at: i64) -> Result {
    for i in 0..5 {
        let e = f
            .verify_pin(&pin("wrong-pin")?, "test", at)
            .err()
            .ok_or("a wrong PIN was accepted")?;
        assert!(
            matches!(
                &e,
                HitlError::Factor(
                    FactorError::Wrong { factor: "PIN", .. }
                        | FactorError::WrongLocked { factor: "PIN", .. }
                )
            ) && e.to_string().starts_with("wrong PIN"),
            "try {i}: {e}"
        );
    }
    Ok(())
}

#[test]
fn invariant_i8_five_wrong_pins_lock_out() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = with_pin(dir.path())?;
    five_wrong(&mut f, T0)?;
    assert_eq!(f.failures(), 5);

    // the right PIN is refused while locked, the same way a wrong one is
    let right = f.verify_pin(&pin(PIN)?, "test", T0 + 1_000).err();
    let wrong = f.verify_pin(&pin("wrong-pin")?, "test", T0 + 1_000).err();
    assert_eq!(right.as_ref().and_then(locked_for), Some(29));
    assert_eq!(wrong.as_ref().and_then(locked_for), Some(29));
    // tries while locked are not counted
    assert_eq!(f.failures(), 5);
    assert_eq!(f.lockout_status(T0 + 1_000).locked_for_seconds, Some(29));

    // after the lock, the right PIN works and resets the count
    let proof = f.verify_pin(&pin(PIN)?, "cli uid=1000", T0 + 30_000)?;
    assert_eq!(proof.factor(), Factor::Pin);
    assert_eq!(proof.channel(), "cli uid=1000");
    assert_eq!(f.failures(), 0);
    assert_eq!(f.lockout_status(T0 + 30_000).locked_for_seconds, None);
    Ok(())
}

#[test]
fn invariant_i8_each_wrong_try_after_a_lock_doubles_the_next_one() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = with_pin(dir.path())?;
    five_wrong(&mut f, T0)?;
    assert_eq!(f.lockout_status(T0).locked_for_seconds, Some(30));

    // one wrong try after the first lock locks again, twice as long
    let mut now = T0 + 30_000;
    let e = f.verify_pin(&pin("wrong-pin")?, "test", now).err();
    assert!(
        matches!(
            &e,
            Some(HitlError::Factor(FactorError::WrongLocked {
                seconds: 60,
                ..
            }))
        ) && e
            .as_ref()
            .is_some_and(|e| e.to_string().contains("locked for 60 s")),
        "{e:?}"
    );
    for expected in [120, 240, 480, 960, 1920, 3600, 3600] {
        now += 3_600_000;
        assert!(f.verify_pin(&pin("wrong-pin")?, "test", now).is_err());
        assert_eq!(f.lockout_status(now).locked_for_seconds, Some(expected));
    }
    // the right PIN after the lock resets everything: five more tries before the next lock
    now += 3_600_000;
    f.verify_pin(&pin(PIN)?, "test", now)?;
    five_wrong(&mut f, now)?;
    assert_eq!(f.lockout_status(now).locked_for_seconds, Some(30));
    Ok(())
}

#[test]
fn invariant_i8_a_restart_does_not_reset_the_lockout() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = with_pin(dir.path())?;
    for _ in 0..3 {
        assert!(f.verify_pin(&pin("wrong-pin")?, "test", T0).is_err());
    }
    drop(f);
    let mut f = open(dir.path())?;
    assert_eq!(f.failures(), 3);
    assert!(f.verify_pin(&pin("wrong-pin")?, "test", T0).is_err());
    assert!(f.verify_pin(&pin("wrong-pin")?, "test", T0).is_err());
    drop(f);
    let mut f = open(dir.path())?;
    let e = f.verify_pin(&pin(PIN)?, "test", T0 + 10_000).err();
    assert_eq!(e.as_ref().and_then(locked_for), Some(20));
    Ok(())
}

#[test]
fn invariant_i8_a_clock_set_back_does_not_lock_for_the_jump() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = with_pin(dir.path())?;
    five_wrong(&mut f, T0)?;
    // a year back: still locked, but for the lock's own length, not a year
    let back = T0 - 365 * 86_400_000;
    let e = f.verify_pin(&pin(PIN)?, "test", back).err();
    assert_eq!(e.as_ref().and_then(locked_for), Some(30));
    f.verify_pin(&pin(PIN)?, "test", back + 30_000)?;
    Ok(())
}

#[test]
fn invariant_i8_pin_and_totp_share_one_counter() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = with_pin(dir.path())?;
    let p = pin(PIN)?;
    let enrollment = enroll_totp(&mut f, Some(CurrentFactor::Pin(&p)))?;
    let now = T0 + 60_000;
    let right = totp::code_for(&enrollment.secret_base32, now)?;
    for _ in 0..3 {
        assert!(f.verify_pin(&pin("wrong-pin")?, "test", now).is_err());
    }
    for _ in 0..2 {
        let e = f.verify_totp(other_than(&right), "test", now).err();
        assert!(
            matches!(
                &e,
                Some(HitlError::Factor(
                    FactorError::Wrong {
                        factor: "TOTP code",
                        ..
                    } | FactorError::WrongLocked {
                        factor: "TOTP code",
                        ..
                    }
                ))
            ) && e
                .as_ref()
                .is_some_and(|e| e.to_string().starts_with("wrong TOTP code")),
            "{e:?}"
        );
    }
    // locked: the right code is refused too
    let e = f.verify_totp(&right, "test", now).err();
    assert_eq!(e.as_ref().and_then(locked_for), Some(30));
    // the L5 PIN half is held by the same lock
    let e = f.verify_pin_for_webauthn(&p, now).err();
    assert!(e.as_ref().and_then(locked_for).is_some());
    Ok(())
}

#[test]
fn invariant_i8_the_pin_half_of_level_5_counts_like_a_pin() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = with_pin(dir.path())?;
    assert!(f.verify_pin_for_webauthn(&pin("wrong-pin")?, T0).is_err());
    assert_eq!(f.failures(), 1);
    f.verify_pin_for_webauthn(&pin(PIN)?, T0)?;
    assert_eq!(f.failures(), 0);
    Ok(())
}

#[test]
fn invariant_i8_a_totp_code_cannot_be_replayed() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = open(dir.path())?;
    let enrollment = enroll_totp(&mut f, None)?;
    assert!(f.totp_is_active());

    // the confirming code is spent already
    let confirming = totp::code_for(&enrollment.secret_base32, T0)?;
    assert!(f.verify_totp(&confirming, "test", T0).is_err());

    let now = T0 + 60_000;
    let code = totp::code_for(&enrollment.secret_base32, now)?;
    let proof = f.verify_totp(&code, "cli uid=1000", now)?;
    assert_eq!(proof.factor(), Factor::Totp);
    assert!(f.verify_totp(&code, "test", now).is_err(), "same step");
    assert!(
        f.verify_totp(&code, "test", now + 30_000).is_err(),
        "inside the skew"
    );
    // nor after a restart
    drop(f);
    let mut f = open(dir.path())?;
    assert!(
        f.verify_totp(&code, "test", now).is_err(),
        "after a restart"
    );
    // the next step's code works
    let next = totp::code_for(&enrollment.secret_base32, now + 30_000)?;
    f.verify_totp(&next, "test", now + 30_000)?;
    Ok(())
}

#[test]
fn totp_accepts_one_step_of_skew_and_spaces() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = open(dir.path())?;
    let enrollment = enroll_totp(&mut f, None)?;
    let now = T0 + 300_000;
    let late = totp::code_for(&enrollment.secret_base32, now - 30_000)?;
    f.verify_totp(&late, "test", now)?;
    let early = totp::code_for(&enrollment.secret_base32, now + 30_000)?;
    let spaced = format!(
        "{} {}",
        early.get(..3).unwrap_or(""),
        early.get(3..).unwrap_or("")
    );
    f.verify_totp(&spaced, "test", now)?;
    let far = totp::code_for(&enrollment.secret_base32, now + 120_000)?;
    assert!(f.verify_totp(&far, "test", now).is_err());
    // a malformed code is refused without counting
    let before = f.failures();
    assert!(matches!(
        f.verify_totp("12345", "test", now),
        Err(HitlError::Factor(FactorError::TotpCodeForm { .. }))
    ));
    assert_eq!(f.failures(), before);
    Ok(())
}

#[test]
fn totp_enrollment_is_active_only_after_a_confirming_code() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = open(dir.path())?;
    let enrollment = f.totp_begin_enrollment_with("ops@example.org", None, T0)?;
    assert!(
        enrollment
            .uri
            .starts_with("otpauth://totp/P3AK:ops%40example.org?secret=")
    );
    assert!(
        enrollment
            .uri
            .ends_with("&issuer=P3AK&algorithm=SHA1&digits=6&period=30")
    );
    assert!(enrollment.uri.contains(&enrollment.secret_base32));
    assert_eq!(enrollment.secret_base32.len(), 32);
    assert!(!f.totp_is_active());
    assert!(f.totp_is_pending(T0));
    let code = totp::code_for(&enrollment.secret_base32, T0)?;
    assert!(
        matches!(f.verify_totp(&code, "test", T0), Err(e @ HitlError::Factor(FactorError::NoTotp)) if e.to_string().contains("not set up"))
    );

    // a wrong code does not confirm (and counts)
    assert!(f.totp_confirm(other_than(&code), T0).is_err());
    assert_eq!(f.failures(), 1);
    assert!(!f.totp_is_active());
    // a pending enrollment survives a restart
    drop(f);
    let mut f = open(dir.path())?;
    f.totp_confirm(&code, T0)?;
    assert!(f.totp_is_active());
    assert!(!f.totp_is_pending(T0));
    assert_eq!(f.failures(), 0);
    assert!(
        matches!(f.totp_confirm(&code, T0), Err(e @ HitlError::Factor(FactorError::NoTotpEnrollment)) if e.to_string().contains("no TOTP enrollment"))
    );
    Ok(())
}

#[test]
fn a_totp_enrollment_expires() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = open(dir.path())?;
    let enrollment = f.totp_begin_enrollment_with("operator", None, T0)?;
    let late = T0 + totp::ENROLLMENT_TTL_MS + 1;
    let code = totp::code_for(&enrollment.secret_base32, late)?;
    assert!(
        matches!(f.totp_confirm(&code, late), Err(e @ HitlError::Factor(FactorError::TotpEnrollmentExpired)) if e.to_string().contains("expired"))
    );
    assert!(!f.totp_is_active());
    assert!(!f.totp_is_pending(late));
    Ok(())
}

#[test]
fn invariant_i8_setting_a_pin_when_one_exists_needs_the_current_one() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = with_pin(dir.path())?;
    let new = pin("a-new-pin")?;
    assert!(
        matches!(f.set_pin(&new, None, T0), Err(e @ HitlError::Factor(FactorError::PinNeededForChange)) if e.to_string().contains("current PIN"))
    );
    let wrong = pin("wrong-pin")?;
    assert!(f.set_pin(&new, Some(&wrong), T0).is_err());
    assert_eq!(f.failures(), 1, "a wrong current PIN counts");
    f.set_pin(&new, Some(&pin(PIN)?), T0)?;
    assert!(f.verify_pin(&pin(PIN)?, "test", T0).is_err());
    f.verify_pin(&new, "test", T0)?;
    // enrolling TOTP needs it too
    assert!(f.totp_begin_enrollment("operator", None, T0).is_err());
    f.totp_begin_enrollment("operator", Some(&new), T0)?;
    Ok(())
}

#[test]
fn invariant_i8_with_only_totp_changes_need_a_code() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = open(dir.path())?;
    let enrollment = enroll_totp(&mut f, None)?;
    let new = pin(PIN)?;
    // no PIN can be added, nor TOTP re-enrolled, by whoever reaches the store without a code
    assert!(
        matches!(f.set_pin(&new, None, T0), Err(e @ HitlError::Factor(FactorError::TotpNeededForChange)) if e.to_string().contains("TOTP code"))
    );
    assert!(f.totp_begin_enrollment_with("attacker", None, T0).is_err());
    assert!(
        matches!(f.set_pin_with(&new, Some(CurrentFactor::Pin(&new)), T0), Err(e @ HitlError::Factor(FactorError::NoPin)) if e.to_string().contains("no PIN is set"))
    );
    assert!(!f.pin_is_set());
    let now = T0 + 60_000;
    let code = totp::code_for(&enrollment.secret_base32, now)?;
    f.set_pin_with(&new, Some(CurrentFactor::Totp(&code)), now)?;
    assert!(f.pin_is_set());
    // the code that authorized the change is spent
    assert!(f.verify_totp(&code, "test", now).is_err());
    Ok(())
}

#[test]
fn no_pin_set_says_how_to_set_one_and_does_not_count() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = open(dir.path())?;
    assert!(!f.pin_is_set());
    let e = f
        .verify_pin(&pin(PIN)?, "test", T0)
        .err()
        .ok_or("accepted")?;
    assert_eq!(e.to_string(), "no PIN is set: `p3ak hitl pin set`");
    assert_eq!(f.failures(), 0);
    Ok(())
}

#[test]
fn pins_are_validated() {
    for (bad, why) in [
        ("12345", "at least 6"),
        ("aaaaaaa", "repeated"),
        ("12345\n", "at least 6"),
    ] {
        let e = Pin::new(bad.to_owned()).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|m| m.contains(why)),
            "{bad:?}: {e:?}"
        );
    }
    assert!(Pin::new("x".repeat(129)).is_err());
    assert!(Pin::new("246810\n".to_owned()).is_ok());
}

#[test]
fn state_survives_reopen() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = with_pin(dir.path())?;
    let key = StoredPasskey {
        name: "yubikey".to_owned(),
        added_ms: T0,
        passkey: serde_json::json!({"cred": {"id": "abc"}}),
    };
    f.add_passkey(key.clone())?;
    assert!(f.verify_pin(&pin("wrong-pin")?, "test", T0).is_err());
    drop(f);

    let mut f = open(dir.path())?;
    assert!(f.pin_is_set());
    assert_eq!(f.passkeys(), std::slice::from_ref(&key));
    assert_eq!(f.failures(), 1);
    f.verify_pin(&pin(PIN)?, "test", T0)?;

    let renamed = StoredPasskey {
        name: "laptop".to_owned(),
        ..key
    };
    f.replace_passkeys(vec![renamed.clone()])?;
    drop(f);
    let f = open(dir.path())?;
    assert_eq!(f.passkeys(), [renamed]);
    assert_eq!(f.failures(), 0);
    Ok(())
}

#[test]
fn invariant_i6_no_plaintext_at_rest() -> Result {
    let dir = tempfile::tempdir()?;
    let mut f = with_pin(dir.path())?;
    f.add_passkey(StoredPasskey {
        name: "yubikey-in-the-drawer".to_owned(),
        added_ms: T0,
        passkey: serde_json::json!({}),
    })?;
    let p = pin(PIN)?;
    let enrollment = enroll_totp(&mut f, Some(CurrentFactor::Pin(&p)))?;
    let path = dir.path().join(FILE_NAME);
    assert_eq!(f.path(), path);
    let bytes = std::fs::read(&path)?;
    for needle in [
        b"yubikey-in-the-drawer".as_slice(),
        b"passkeys",
        b"failures",
        enrollment.secret_base32.as_bytes(),
    ] {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle));
    }
    assert_eq!(
        std::fs::metadata(&path)?.permissions().mode() & 0o777,
        0o600
    );
    // no temporary file is left behind
    let names: Vec<_> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(names, [FILE_NAME]);
    Ok(())
}

#[test]
fn invariant_i9_a_wrong_key_is_corrupt_and_the_file_is_untouched() -> Result {
    let dir = tempfile::tempdir()?;
    drop(with_pin(dir.path())?);
    let path = dir.path().join(FILE_NAME);
    let before = std::fs::read(&path)?;
    let e = Factors::open_with_kdf(dir.path(), &key(8), CHEAP).err();
    assert!(
        matches!(&e, Some(HitlError::Corrupt { reason, .. }) if reason.contains("wrong key")),
        "{e:?}"
    );
    assert_eq!(std::fs::read(&path)?, before);
    // the right key still opens it
    assert!(open(dir.path())?.pin_is_set());
    Ok(())
}

#[test]
fn invariant_i9_a_truncated_or_changed_file_is_corrupt_and_untouched() -> Result {
    let dir = tempfile::tempdir()?;
    drop(with_pin(dir.path())?);
    let path = dir.path().join(FILE_NAME);
    let good = std::fs::read(&path)?;
    let mut damaged: Vec<Vec<u8>> = [0, 1, 12, 27, 28, good.len() - 1]
        .iter()
        .map(|&n| good.get(..n).unwrap_or_default().to_vec())
        .collect();
    for i in [0, 11, 12, good.len() / 2, good.len() - 1] {
        let mut flipped = good.clone();
        if let Some(b) = flipped.get_mut(i) {
            *b ^= 0x01;
        }
        damaged.push(flipped);
    }
    let mut longer = good.clone();
    longer.push(0);
    damaged.push(longer);
    for bad in damaged {
        std::fs::write(&path, &bad)?;
        let e = open(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains(FILE_NAME) && !e.contains('\n'),
            "{} bytes: {e}",
            bad.len()
        );
        assert_eq!(std::fs::read(&path)?, bad, "the file was rewritten");
    }
    Ok(())
}

#[test]
fn a_cost_below_the_floor_is_refused() {
    let dir = tempfile::tempdir();
    let weak = KdfParams {
        memory_kib: KdfParams::MIN_MEMORY_KIB - 1,
        ..CHEAP
    };
    if let Ok(dir) = dir {
        assert!(matches!(
            Factors::open_with_kdf(dir.path(), &key(7), weak),
            Err(HitlError::Crypto(_))
        ));
    }
}
