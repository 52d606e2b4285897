//! WebAuthn for the console: passkeys registered on the keys page, and assertions that approve
//! one pending item (level 4, or level 5 together with the PIN).
//!
//! Built on `webauthn-rs`'s passkey flows, which ask for user verification (Touch ID, Face ID,
//! a security key's PIN) and refuse an assertion without it. The relying party is the
//! console's origin host (`localhost` by default; WebAuthn refuses IP addresses); an
//! `http://localhost` origin is accepted as it is (browsers treat localhost as a secure
//! context), so no builder option is needed.
//!
//! A ceremony's state stays in the daemon, keyed by the console session (and, for an approval,
//! the item's id), and is consumed by the first finish: a second finish with the same state is
//! refused, and a state older than [`CEREMONY_TTL_MS`] is dropped.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use serde_json::json;
use url::Url;
use webauthn_rs::prelude::{
    CreationChallengeResponse, CredentialID, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Uuid, Webauthn,
    WebauthnBuilder,
};

use crate::binding::Binding;
use crate::daemon::Service;
use crate::desk::{Approved, Stage};
use crate::factors::StoredPasskey;
use crate::level::{Factor, Proof};
use crate::pin::Pin;
use crate::{FactorError, HitlError, WebauthnSetupError};

/// How long a started ceremony may wait for its finish.
pub const CEREMONY_TTL_MS: i64 = 120_000;
/// The longest name a passkey may have.
pub const MAX_NAME_LEN: usize = 64;
/// At most this many ceremonies wait at once (oldest dropped first).
const MAX_CEREMONIES: usize = 64;

/// The one operator the console knows. A passkey's user handle; it identifies nobody.
const OPERATOR: Uuid = Uuid::from_u128(0x7033_616b_6869_746c_6f70_6572_6174_6f72);

struct Registering {
    state: PasskeyRegistration,
    name: String,
    started_ms: i64,
}

struct Approving {
    state: PasskeyAuthentication,
    binding: Binding,
    started_ms: i64,
}

#[derive(Default)]
struct Waiting {
    registrations: HashMap<String, Registering>,
    approvals: HashMap<(String, String), Approving>,
}

impl Waiting {
    fn expire(&mut self, now_ms: i64) {
        let live = |started: i64| now_ms.saturating_sub(started) < CEREMONY_TTL_MS;
        self.registrations.retain(|_, r| live(r.started_ms));
        self.approvals.retain(|_, a| live(a.started_ms));
        while self.registrations.len() > MAX_CEREMONIES {
            let Some(oldest) = self
                .registrations
                .iter()
                .min_by_key(|(_, r)| r.started_ms)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.registrations.remove(&oldest);
        }
        while self.approvals.len() > MAX_CEREMONIES {
            let Some(oldest) = self
                .approvals
                .iter()
                .min_by_key(|(_, a)| a.started_ms)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.approvals.remove(&oldest);
        }
    }
}

/// The console's relying party and its ceremonies in progress.
pub struct Ceremonies {
    webauthn: Webauthn,
    waiting: Mutex<Waiting>,
}

impl Ceremonies {
    /// The relying party for a console reached at `origin`: its host is the RP id.
    pub fn new(origin: &Url) -> Result<Self, WebauthnSetupError> {
        let rp_id = origin
            .domain()
            .ok_or_else(|| WebauthnSetupError::NoHostName {
                host: origin.host_str().unwrap_or_default().to_owned(),
            })?;
        let webauthn = WebauthnBuilder::new(rp_id, origin)
            .and_then(|b| b.rp_name("P3AK").build())
            .map_err(|source| WebauthnSetupError::RelyingParty {
                origin: origin.clone(),
                source,
            })?;
        Ok(Self {
            webauthn,
            waiting: Mutex::new(Waiting::default()),
        })
    }

    fn waiting(&self, now_ms: i64) -> Result<MutexGuard<'_, Waiting>, HitlError> {
        let mut waiting = self.waiting.lock().map_err(|_| HitlError::Poisoned {
            what: "the WebAuthn state",
        })?;
        waiting.expire(now_ms);
        Ok(waiting)
    }

    /// Starts registering a passkey named `name` for the console session `session`.
    ///
    /// Adding a factor must not be easier than using one: when a PIN is set, it is asked for
    /// (and counts towards the lockout); when keys exist but no PIN, another key is refused.
    pub fn start_registration(
        &self,
        service: &Service,
        session: &str,
        channel: &str,
        name: &str,
        pin: Option<&Pin>,
    ) -> Result<CreationChallengeResponse, HitlError> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_LEN
            || name.chars().any(char::is_control)
        {
            return Err(FactorError::KeyName { max: MAX_NAME_LEN }.into());
        }
        let (pin_set, stored) =
            service.with_factors(|f| Ok((f.pin_is_set(), f.passkeys().to_vec())))?;
        if stored.iter().any(|k| k.name == name) {
            return Err(FactorError::KeyExists {
                name: name.to_owned(),
            }
            .into());
        }
        match (pin_set, pin) {
            (true, Some(pin)) => {
                service.verify_pin(pin, channel)?;
            }
            (true, None) => {
                return Err(FactorError::PinNeededForKey.into());
            }
            (false, _) if !stored.is_empty() => {
                return Err(FactorError::PinFirst.into());
            }
            (false, _) => {}
        }
        let exclude: Vec<CredentialID> = parse_all(&stored)?
            .iter()
            .map(|p| p.cred_id().clone())
            .collect();
        let (challenge, state) = self
            .webauthn
            .start_passkey_registration(OPERATOR, "operator", "P3AK operator", Some(exclude))
            .map_err(|e| refused("cannot start a registration", e))?;
        let now = service.now_ms();
        self.waiting(now)?.registrations.insert(
            session.to_owned(),
            Registering {
                state,
                name: name.to_owned(),
                started_ms: now,
            },
        );
        Ok(challenge)
    }

    /// Finishes the session's registration: the new key is stored. Returns its name.
    pub fn finish_registration(
        &self,
        service: &Service,
        session: &str,
        channel: &str,
        credential: &RegisterPublicKeyCredential,
    ) -> Result<String, HitlError> {
        let registering = self
            .waiting(service.now_ms())?
            .registrations
            .remove(session)
            .ok_or(FactorError::NoRegistration)?;
        let result = self
            .webauthn
            .finish_passkey_registration(credential, &registering.state)
            .map_err(|e| refused("the new key's answer was refused", e))
            .and_then(|passkey| {
                let value = serde_json::to_value(&passkey).map_err(HitlError::StoreKey)?;
                let name = registering.name.clone();
                service.with_factors(|f| {
                    let known = parse_all(f.passkeys())?;
                    if known.iter().any(|k| k.cred_id() == passkey.cred_id()) {
                        return Err(FactorError::KeyRegistered.into());
                    }
                    f.add_passkey(StoredPasskey {
                        name,
                        added_ms: service.now_ms(),
                        passkey: value,
                    })
                })
            });
        match &result {
            Ok(()) => service.audit(
                "hitl.passkey.added",
                json!({"name": registering.name, "channel": channel}),
            ),
            Err(e) => service.audit(
                "hitl.passkey.refused",
                json!({"name": registering.name, "channel": channel, "error": e.to_string()}),
            ),
        }
        result.map(|()| registering.name)
    }

    /// Starts an assertion that will approve `id`, which must be the action `binding` names
    /// and still waiting.
    pub fn start_approval(
        &self,
        service: &Service,
        session: &str,
        id: &str,
        binding: &Binding,
    ) -> Result<RequestChallengeResponse, HitlError> {
        let view = service
            .get(id)
            .ok_or_else(|| HitlError::Unknown(id.to_owned()))?;
        if !view.binding.matches(binding) {
            return Err(HitlError::Mismatch { id: id.to_owned() });
        }
        if !matches!(view.stage, Stage::Waiting { .. }) {
            return Err(HitlError::AlreadyApproved(id.to_owned()));
        }
        let passkeys = parse_all(&service.with_factors(|f| Ok(f.passkeys().to_vec()))?)?;
        if passkeys.is_empty() {
            return Err(FactorError::NoKeys.into());
        }
        let (challenge, state) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|e| refused("cannot start the security key check", e))?;
        let now = service.now_ms();
        self.waiting(now)?.approvals.insert(
            (session.to_owned(), id.to_owned()),
            Approving {
                state,
                binding: view.binding,
                started_ms: now,
            },
        );
        Ok(challenge)
    }

    /// Finishes the session's assertion for `id` and, when it holds, approves `id` with it
    /// (with the PIN too when one is given: the level 5 factor). The stored key's counter
    /// is updated.
    pub fn finish_approval(
        &self,
        service: &Service,
        session: &str,
        channel: &str,
        id: &str,
        credential: &PublicKeyCredential,
        pin: Option<&Pin>,
    ) -> Result<Approved, HitlError> {
        let approving = self
            .waiting(service.now_ms())?
            .approvals
            .remove(&(session.to_owned(), id.to_owned()))
            .ok_or_else(|| FactorError::NoKeyCheck { id: id.to_owned() })?;
        let checked = self.check_assertion(service, credential, &approving.state);
        match &checked {
            Ok(()) => service.audit(
                "hitl.factor.ok",
                json!({"factor": Factor::WebAuthn, "channel": channel, "id": id}),
            ),
            Err(e) => service.audit(
                "hitl.factor.failed",
                json!({"factor": Factor::WebAuthn, "channel": channel, "id": id, "error": e.to_string()}),
            ),
        }
        checked?;
        let factor = match pin {
            Some(pin) => {
                service.check_pin_for_webauthn(pin, channel)?;
                Factor::WebAuthnAndPin
            }
            None => Factor::WebAuthn,
        };
        service.approve(id, &approving.binding, Proof::verified(factor, channel))
    }

    fn check_assertion(
        &self,
        service: &Service,
        credential: &PublicKeyCredential,
        state: &PasskeyAuthentication,
    ) -> Result<(), HitlError> {
        let result = self
            .webauthn
            .finish_passkey_authentication(credential, state)
            .map_err(|e| refused("the security key's answer was refused", e))?;
        if !result.user_verified() {
            return Err(FactorError::NotVerified.into());
        }
        if !result.needs_update() {
            return Ok(());
        }
        service.with_factors(|f| {
            let mut stored = f.passkeys().to_vec();
            let mut changed = false;
            for entry in &mut stored {
                let mut passkey = parse(entry)?;
                if passkey.update_credential(&result) == Some(true) {
                    entry.passkey = serde_json::to_value(&passkey).map_err(HitlError::StoreKey)?;
                    changed = true;
                }
            }
            if changed {
                f.replace_passkeys(stored)?;
            }
            Ok(())
        })
    }
}

fn parse(stored: &StoredPasskey) -> Result<Passkey, HitlError> {
    serde_json::from_value(stored.passkey.clone()).map_err(|source| {
        FactorError::StoredKeyUnreadable {
            name: stored.name.clone(),
            source,
        }
        .into()
    })
}

fn parse_all(stored: &[StoredPasskey]) -> Result<Vec<Passkey>, HitlError> {
    stored.iter().map(parse).collect()
}

fn refused(what: &'static str, source: webauthn_rs::prelude::WebauthnError) -> HitlError {
    FactorError::Refused { what, source }.into()
}

/// webauthn-rs's messages start with a capital; ours do not.
pub(crate) fn lower(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_is_a_relying_party_and_an_ip_address_is_not() {
        let ok = Url::parse("http://localhost:7325").unwrap();
        assert!(Ceremonies::new(&ok).is_ok());
        let ip = Url::parse("http://127.0.0.1:7325").unwrap();
        let err = Ceremonies::new(&ip).err().unwrap().to_string();
        assert!(err.contains("host name"), "{err}");
    }

    #[test]
    fn messages_start_lowercase() {
        assert_eq!(lower("Invalid thing"), "invalid thing");
        assert_eq!(lower(""), "");
    }
}
