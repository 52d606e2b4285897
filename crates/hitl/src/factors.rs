//! The HITL daemon's factor store: the PIN's hash, the TOTP secret, the registered passkeys and
//! the count of wrong tries, in one sealed file.
//!
//! **At rest** (invariant I6) the state is JSON sealed with AES-256-GCM under the caller's key:
//! `<dir>/factors.sealed` is a random 12-byte nonce followed by the ciphertext and its tag, with
//! the fixed associated data [`FORMAT_TAG`]. A fresh random nonce per write keeps nonces apart
//! under one key (a collision is a 2^-32 event only after some 2^32 writes). Every write goes
//! to a temporary file in the same directory (0600), is synced, then renamed over the old one,
//! so a crash leaves the old state or the new one, never half of either. A file that does not
//! open (wrong key, changed, cut short) is [`HitlError::Corrupt`] and is left as it is
//! (invariant I9).
//!
//! **Guessing** (invariant I8) is limited by one counter shared by every PIN and TOTP check:
//! after [`LOCKOUT_AFTER`] wrong tries in a row every check is refused for
//! [`FIRST_LOCK_SECONDS`], and each further wrong try after a lock ends doubles the lock, up to
//! [`MAX_LOCK_SECONDS`]. While locked even the right factor is refused, without being checked,
//! so a lock reveals nothing. The try is counted (and persisted) *before* the factor is
//! checked, so killing the daemon mid-check does not buy a free guess, and a restart does not
//! reset the counter. The right factor resets it.
//!
//! **Changing factors** is never easier than using one: once a PIN or a TOTP enrollment exists,
//! setting a PIN or enrolling TOTP needs a [`CurrentFactor`] (either one), checked and counted
//! like any other try. The first factor can be set without one; the daemon decides which
//! channels may do that.
//!
//! Times are passed in (`now_ms`, milliseconds since the epoch) so the daemon uses its clock
//! and tests need no sleeping.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use p3ak_crypto::{AeadKey, KdfParams, Key, NONCE_LEN, TAG_LEN};
use zeroize::Zeroizing;

use crate::level::{Factor, Proof};
use crate::pin::{Pin, PinRecord};
use crate::totp::{self, Enrollment, PendingTotp, TotpRecord};
use crate::{FactorError, HitlError};

/// The store's file name inside its directory.
pub const FILE_NAME: &str = "factors.sealed";
/// Associated data of the seal: binds the ciphertext to this format and version.
pub const FORMAT_TAG: &[u8] = b"p3ak-hitl-factors-v1";
/// Wrong tries in a row before checks lock.
pub const LOCKOUT_AFTER: u32 = 5;
/// The first lock's length.
pub const FIRST_LOCK_SECONDS: u64 = 30;
/// The longest lock.
pub const MAX_LOCK_SECONDS: u64 = 3600;
/// A store larger than this is refused unread (passkeys are a few hundred bytes each).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

const FORMAT_VERSION: u32 = 1;
const FIRST_LOCK_MS: i64 = 30_000;
const MAX_LOCK_MS: i64 = 3_600_000;

/// A registered WebAuthn passkey, serialised by the WebAuthn module. Not secret: a passkey is a
/// public key, a credential id and a signature counter.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredPasskey {
    /// The operator's name for it (`yubikey`, `laptop`).
    pub name: String,
    /// When it was registered.
    pub added_ms: i64,
    /// `webauthn_rs::prelude::Passkey` as JSON.
    pub passkey: serde_json::Value,
}

/// Proof of a factor that is already set, asked for before factors change.
pub enum CurrentFactor<'a> {
    /// The current PIN.
    Pin(&'a Pin),
    /// A current TOTP code.
    Totp(&'a str),
}

/// The lockout as the operator should see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Lockout {
    /// Wrong tries in a row so far.
    pub failures: u32,
    /// Seconds until checks are allowed again, when locked.
    pub locked_for_seconds: Option<u64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    version: u32,
    pin: Option<PinRecord>,
    totp: Option<TotpRecord>,
    totp_pending: Option<PendingTotp>,
    passkeys: Vec<StoredPasskey>,
    failures: u32,
    locked_until_ms: i64,
    /// Who may answer approvals from a chat: `NAME:<platform user id>` (absent before chat
    /// approvals existed).
    #[serde(default)]
    approvers: Vec<String>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: FORMAT_VERSION,
            pin: None,
            totp: None,
            totp_pending: None,
            passkeys: Vec::new(),
            failures: 0,
            locked_until_ms: 0,
            approvers: Vec::new(),
        }
    }
}

/// The persistent factor store. Every change is on disk before the method returns.
/// Methods take `&mut self`: the daemon keeps it behind one lock. A PIN check is an Argon2id
/// hash (a fraction of a second at the default cost), best run off the async threads.
pub struct Factors {
    path: PathBuf,
    aead: AeadKey,
    kdf: KdfParams,
    state: State,
}

impl Factors {
    /// Opens `<dir>/factors.sealed` under `key`, or starts empty when it does not exist yet
    /// (`dir` is created 0700 if missing). New PINs are hashed with
    /// [`KdfParams::RFC9106_SECOND`].
    pub fn open(dir: &Path, key: &Key) -> Result<Self, HitlError> {
        Self::open_with_kdf(dir, key, KdfParams::RFC9106_SECOND)
    }

    /// [`open`](Self::open) with another Argon2id cost for new PIN hashes (tests use the
    /// floor). Refused below [`KdfParams::MIN_MEMORY_KIB`] or outside the accepted range.
    pub fn open_with_kdf(dir: &Path, key: &Key, kdf: KdfParams) -> Result<Self, HitlError> {
        kdf.validate()?;
        let aead = AeadKey::new(key)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(HitlError::io(format!("creating `{}`", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let state = match read_limited(&path)? {
            Some(sealed) => unseal(&aead, &path, sealed)?,
            None => State::default(),
        };
        Ok(Self {
            path,
            aead,
            kdf,
            state,
        })
    }

    /// Seals the store under `key` from now on (written at once).
    pub fn reseal(&mut self, key: &Key) -> Result<(), HitlError> {
        let old = std::mem::replace(&mut self.aead, AeadKey::new(key)?);
        self.persist().inspect_err(|_| {
            self.aead = old;
        })
    }

    /// The sealed file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    // ---- PIN ----

    /// True when a PIN is set.
    #[must_use]
    pub fn pin_is_set(&self) -> bool {
        self.state.pin.is_some()
    }

    /// Sets the PIN. Once a PIN is set, `current` must be it (a wrong one counts as a wrong
    /// try). When only TOTP is set up this is refused: use [`set_pin_with`](Self::set_pin_with)
    /// and a code.
    pub fn set_pin(
        &mut self,
        new: &Pin,
        current: Option<&Pin>,
        now_ms: i64,
    ) -> Result<(), HitlError> {
        self.set_pin_with(new, current.map(CurrentFactor::Pin), now_ms)
    }

    /// Sets the PIN. Once a PIN or TOTP is set, `current` must prove one of them (a wrong one
    /// counts as a wrong try).
    pub fn set_pin_with(
        &mut self,
        new: &Pin,
        current: Option<CurrentFactor<'_>>,
        now_ms: i64,
    ) -> Result<(), HitlError> {
        self.authorize_change(current, now_ms)?;
        let record = PinRecord::create(new, self.kdf)?;
        let old = self.state.pin.replace(record);
        self.persist().inspect_err(|_| self.state.pin = old)
    }

    /// Checks a PIN: the level 3 proof.
    pub fn verify_pin(
        &mut self,
        pin: &Pin,
        channel: &str,
        now_ms: i64,
    ) -> Result<Proof, HitlError> {
        self.check_pin(pin, now_ms)?;
        Ok(Proof::verified(Factor::Pin, channel))
    }

    /// Checks the PIN half of a level 5 approval, counted like any other try; the WebAuthn
    /// module makes the proof once the assertion checks too.
    pub fn verify_pin_for_webauthn(&mut self, pin: &Pin, now_ms: i64) -> Result<(), HitlError> {
        self.check_pin(pin, now_ms)
    }

    fn check_pin(&mut self, pin: &Pin, now_ms: i64) -> Result<(), HitlError> {
        if self.state.pin.is_none() {
            return Err(FactorError::NoPin.into());
        }
        let right = self.attempt(now_ms, |state| {
            state
                .pin
                .as_ref()
                .map_or(Ok(false), |record| record.verify(pin))
        })?;
        if !right {
            return Err(self.wrong("PIN", now_ms));
        }
        self.upgrade_pin_hash(pin);
        Ok(())
    }

    /// After a right PIN: rehash it when the store's cost is now higher than the hash's.
    /// Best effort; the old hash stays valid when this fails.
    fn upgrade_pin_hash(&mut self, pin: &Pin) {
        let Some(stored) = self.state.pin.as_ref().map(PinRecord::params) else {
            return;
        };
        let stronger = self.kdf != stored
            && self.kdf.memory_kib >= stored.memory_kib
            && self.kdf.iterations >= stored.iterations
            && self.kdf.parallelism >= stored.parallelism;
        if !stronger {
            return;
        }
        if let Ok(record) = PinRecord::create(pin, self.kdf) {
            let old = self.state.pin.replace(record);
            if self.persist().is_err() {
                self.state.pin = old;
            }
        }
    }

    // ---- TOTP ----

    /// True when a TOTP enrollment is confirmed and codes approve level 3.
    #[must_use]
    pub fn totp_is_active(&self) -> bool {
        self.state.totp.is_some()
    }

    /// True when an enrollment was started and waits for its confirming code.
    #[must_use]
    pub fn totp_is_pending(&self, now_ms: i64) -> bool {
        self.state
            .totp_pending
            .as_ref()
            .is_some_and(|p| !p.expired(now_ms))
    }

    /// Starts a TOTP enrollment for `account` (shown in the authenticator app). Once a PIN is
    /// set, `current_pin` must be it. When only TOTP is set up this is refused: use
    /// [`totp_begin_enrollment_with`](Self::totp_begin_enrollment_with) and a code.
    pub fn totp_begin_enrollment(
        &mut self,
        account: &str,
        current_pin: Option<&Pin>,
        now_ms: i64,
    ) -> Result<Enrollment, HitlError> {
        self.totp_begin_enrollment_with(account, current_pin.map(CurrentFactor::Pin), now_ms)
    }

    /// Starts a TOTP enrollment for `account` (shown in the authenticator app). Once a PIN or
    /// TOTP is set, `current` must prove one of them. The new secret replaces any enrollment
    /// still waiting; an active one keeps working until [`totp_confirm`](Self::totp_confirm).
    pub fn totp_begin_enrollment_with(
        &mut self,
        account: &str,
        current: Option<CurrentFactor<'_>>,
        now_ms: i64,
    ) -> Result<Enrollment, HitlError> {
        self.authorize_change(current, now_ms)?;
        let (pending, enrollment) = PendingTotp::begin(account, now_ms)?;
        let old = self.state.totp_pending.replace(pending);
        self.persist()
            .inspect_err(|_| self.state.totp_pending = old)?;
        Ok(enrollment)
    }

    /// Confirms the waiting enrollment with a first code from the app, which makes it active
    /// (replacing an older one). A wrong code counts as a wrong try; the confirming code cannot
    /// be used again.
    pub fn totp_confirm(&mut self, code: &str, now_ms: i64) -> Result<(), HitlError> {
        let Some(pending) = self.state.totp_pending.as_ref() else {
            return Err(FactorError::NoTotpEnrollment.into());
        };
        if pending.expired(now_ms) {
            self.state.totp_pending = None;
            self.persist()?;
            return Err(FactorError::TotpEnrollmentExpired.into());
        }
        let code = totp::normalize(code)?;
        let right = self.attempt(now_ms, |state| {
            let step = match state.totp_pending.as_ref() {
                Some(pending) => pending.confirming_step(&code, now_ms)?,
                None => None,
            };
            match (step, state.totp_pending.take()) {
                (Some(step), Some(pending)) => {
                    state.totp = Some(pending.activate(step, now_ms));
                    Ok(true)
                }
                (_, pending) => {
                    state.totp_pending = pending;
                    Ok(false)
                }
            }
        })?;
        if right {
            Ok(())
        } else {
            Err(self.wrong("TOTP code", now_ms))
        }
    }

    /// Checks a TOTP code: the headless level 3 proof. A code is accepted once.
    pub fn verify_totp(
        &mut self,
        code: &str,
        channel: &str,
        now_ms: i64,
    ) -> Result<Proof, HitlError> {
        self.check_totp(code, now_ms)?;
        Ok(Proof::verified(Factor::Totp, channel))
    }

    fn check_totp(&mut self, code: &str, now_ms: i64) -> Result<(), HitlError> {
        if self.state.totp.is_none() {
            return Err(FactorError::NoTotp.into());
        }
        let code = totp::normalize(code)?;
        let right = self.attempt(now_ms, |state| {
            state
                .totp
                .as_mut()
                .map_or(Ok(false), |record| record.accept(&code, now_ms))
        })?;
        if right {
            Ok(())
        } else {
            Err(self.wrong("TOTP code", now_ms))
        }
    }

    // ---- passkeys ----

    /// The registered passkeys, oldest first.
    #[must_use]
    pub fn passkeys(&self) -> &[StoredPasskey] {
        &self.state.passkeys
    }

    /// Adds a passkey (the WebAuthn module checked it is new, and who may add one).
    pub fn add_passkey(&mut self, passkey: StoredPasskey) -> Result<(), HitlError> {
        self.state.passkeys.push(passkey);
        self.persist().inspect_err(|_| {
            self.state.passkeys.pop();
        })
    }

    /// Replaces the passkeys (updated signature counters, a removed key).
    pub fn replace_passkeys(&mut self, passkeys: Vec<StoredPasskey>) -> Result<(), HitlError> {
        let old = std::mem::replace(&mut self.state.passkeys, passkeys);
        self.persist().inspect_err(|_| self.state.passkeys = old)
    }

    // ---- lockout ----

    /// Wrong PIN and TOTP tries in a row.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.state.failures
    }

    /// The lockout for display.
    #[must_use]
    pub fn lockout_status(&self, now_ms: i64) -> Lockout {
        let left = self.state.locked_until_ms.saturating_sub(now_ms);
        Lockout {
            failures: self.state.failures,
            locked_for_seconds: (left > 0)
                .then(|| whole_seconds(left.min(lock_ms(self.state.failures)))),
        }
    }

    /// Refuses while locked. A lock further away than its own length means the clock went
    /// back: it is moved to end one length from now instead of lasting for the jump.
    fn gate(&mut self, now_ms: i64) -> Result<(), HitlError> {
        let mut left = self.state.locked_until_ms.saturating_sub(now_ms);
        if left <= 0 {
            return Ok(());
        }
        let longest = lock_ms(self.state.failures);
        if left > longest {
            self.state.locked_until_ms = now_ms.saturating_add(longest);
            self.persist()?;
            left = longest;
        }
        Err(HitlError::LockedOut {
            seconds: whole_seconds(left),
        })
    }

    /// One counted try: refused while locked; counted and persisted before `check` runs;
    /// then reset (right) or locked as the count says (wrong), and persisted again.
    fn attempt(
        &mut self,
        now_ms: i64,
        check: impl FnOnce(&mut State) -> Result<bool, HitlError>,
    ) -> Result<bool, HitlError> {
        self.gate(now_ms)?;
        self.state.failures = self.state.failures.saturating_add(1);
        self.persist()?;
        let right = check(&mut self.state)?;
        if right {
            self.state.failures = 0;
            self.state.locked_until_ms = 0;
        } else if self.state.failures >= LOCKOUT_AFTER {
            self.state.locked_until_ms = now_ms.saturating_add(lock_ms(self.state.failures));
        }
        self.persist()?;
        Ok(right)
    }

    /// The error for a wrong factor, saying how many tries are left or how long the lock is.
    fn wrong(&self, factor: &'static str, now_ms: i64) -> HitlError {
        match self.lockout_status(now_ms).locked_for_seconds {
            Some(seconds) => FactorError::WrongLocked { factor, seconds }.into(),
            None => FactorError::Wrong {
                factor,
                left: LOCKOUT_AFTER.saturating_sub(self.state.failures),
            }
            .into(),
        }
    }

    /// Once any PIN or TOTP exists, a change needs one of them.
    fn authorize_change(
        &mut self,
        current: Option<CurrentFactor<'_>>,
        now_ms: i64,
    ) -> Result<(), HitlError> {
        if self.state.pin.is_none() && self.state.totp.is_none() {
            return Ok(());
        }
        match current {
            Some(CurrentFactor::Pin(pin)) => self.check_pin(pin, now_ms),
            Some(CurrentFactor::Totp(code)) => self.check_totp(code, now_ms),
            None if self.state.pin.is_some() => Err(FactorError::PinNeededForChange.into()),
            None => Err(FactorError::TotpNeededForChange.into()),
        }
    }

    // ---- chat approvers ----

    /// Who may answer approvals from a chat (`telegram:7`), sorted.
    #[must_use]
    pub fn approvers(&self) -> &[String] {
        &self.state.approvers
    }

    /// Adds an approver (checked with [`crate::chat::check_approver`]); false when it already
    /// was one.
    pub fn add_approver(&mut self, id: &str) -> Result<bool, HitlError> {
        crate::chat::check_approver(id)?;
        if self.state.approvers.iter().any(|a| a == id) {
            return Ok(false);
        }
        let old = self.state.approvers.clone();
        self.state.approvers.push(id.to_owned());
        self.state.approvers.sort();
        self.persist().inspect_err(|_| self.state.approvers = old)?;
        Ok(true)
    }

    /// Removes an approver; false when it was none.
    pub fn remove_approver(&mut self, id: &str) -> Result<bool, HitlError> {
        let Some(at) = self.state.approvers.iter().position(|a| a == id) else {
            return Ok(false);
        };
        let removed = self.state.approvers.remove(at);
        self.persist()
            .inspect_err(|_| self.state.approvers.insert(at, removed.clone()))?;
        Ok(true)
    }

    // ---- the file ----

    /// Seals the state and replaces the file atomically.
    fn persist(&self) -> Result<(), HitlError> {
        let sealed = seal(&self.aead, &self.state)?;
        write_atomically(&self.path, &sealed)
    }
}

/// The lock after `failures` wrong tries in a row: 30 s at the 5th, doubling, capped at 1 h.
fn lock_ms(failures: u32) -> i64 {
    let doublings = failures.saturating_sub(LOCKOUT_AFTER).min(16);
    FIRST_LOCK_MS
        .saturating_mul(1_i64 << doublings)
        .min(MAX_LOCK_MS)
}

fn whole_seconds(ms: i64) -> u64 {
    u64::try_from(ms.saturating_add(999) / 1000).unwrap_or(0)
}

/// Counts what serde_json writes, so the plaintext buffer is allocated once at its final size
/// and never reallocated (a reallocation would leave an unzeroized copy behind).
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn seal(aead: &AeadKey, state: &State) -> Result<Vec<u8>, HitlError> {
    let encode_error = HitlError::EncodeFactors;
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, state).map_err(encode_error)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(counter.0.saturating_add(TAG_LEN)));
    serde_json::to_writer(&mut *buf, state).map_err(encode_error)?;
    let nonce = p3ak_crypto::random_array::<NONCE_LEN>()?;
    aead.seal_in_place(nonce, FORMAT_TAG, &mut buf)?;
    let mut out = Vec::with_capacity(NONCE_LEN.saturating_add(buf.len()));
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    Ok(out)
}

fn unseal(aead: &AeadKey, path: &Path, sealed: Vec<u8>) -> Result<State, HitlError> {
    let corrupt = |reason: String| HitlError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let len = sealed.len();
    let Some((nonce, body)) = sealed
        .split_first_chunk::<NONCE_LEN>()
        .filter(|(_, body)| body.len() >= TAG_LEN)
    else {
        return Err(corrupt(format!(
            "{len} bytes is too short for a sealed factor store (cut short?)"
        )));
    };
    let mut plain = Zeroizing::new(body.to_vec());
    aead.open_in_place(*nonce, FORMAT_TAG, &mut plain)
        .map_err(|_| {
            corrupt(
                "the factor store does not open: wrong key, or the file was changed or cut short"
                    .to_owned(),
            )
        })?;
    // serde_json's messages can quote the input; only its position is reported, so no secret
    // reaches a log (invariant I4)
    let state: State = serde_json::from_slice(&plain).map_err(|e| {
        corrupt(format!(
            "the sealed factor store does not parse (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if state.version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "factor store format version {} is not {FORMAT_VERSION} (written by another P3AK version)",
            state.version
        )));
    }
    Ok(state)
}

/// The file's bytes, `None` when it does not exist; refused above [`MAX_FILE_BYTES`].
fn read_limited(path: &Path) -> Result<Option<Vec<u8>>, HitlError> {
    let context = || format!("reading `{}`", path.display());
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(HitlError::io(context())(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(HitlError::io(context()))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_FILE_BYTES {
        return Err(HitlError::Corrupt {
            path: path.to_owned(),
            reason: format!("larger than {MAX_FILE_BYTES} bytes: not a factor store"),
        });
    }
    Ok(Some(bytes))
}

/// Temporary file (0600) in the same directory, synced, renamed over `path`, directory synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), HitlError> {
    p3ak_crypto::write_private(path, bytes).map_err(|e| {
        let (context, source) = e.into_parts();
        HitlError::Io { context, source }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_grow_from_30_seconds_to_an_hour() {
        let secs: Vec<i64> = (4..=14).map(|f| lock_ms(f) / 1000).collect();
        assert_eq!(
            secs,
            [30, 30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
        );
        assert_eq!(lock_ms(u32::MAX), MAX_LOCK_MS);
        assert_eq!(whole_seconds(1), 1);
        assert_eq!(whole_seconds(30_000), 30);
        assert_eq!(whole_seconds(29_001), 30);
    }

    #[test]
    fn the_seal_round_trips_and_names_its_format() -> Result<(), HitlError> {
        let aead = AeadKey::new(&Key::from_bytes(&mut [3; 32]))?;
        let state = State {
            failures: 2,
            ..State::default()
        };
        let sealed = seal(&aead, &state)?;
        assert!(
            !sealed.windows(8).any(|w| w == b"failures"),
            "plaintext at rest"
        );
        let back = unseal(&aead, Path::new("x"), sealed.clone())?;
        assert_eq!(back.failures, 2);
        // two seals of the same state differ (fresh nonce)
        assert_ne!(
            seal(&aead, &state)?.get(..NONCE_LEN),
            sealed.get(..NONCE_LEN)
        );
        Ok(())
    }
}
