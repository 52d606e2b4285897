//! The credential broker: secrets by name, injected just before execution, scrubbed from
//! everything that flows back (invariant I4).
//!
//! A tool call refers to a secret as `{"$secret": "NAME"}` anywhere in its arguments. The model
//! only ever sees and writes the name. After the enforcer (or a human) authorised the call, the
//! broker replaces each reference by the value for the plugin's eyes only; whatever comes back
//! — results, errors, plugin logs — passes through the [`Scrubber`], which replaces the value
//! and its base64, hex and URL-encoded forms by `[redacted]`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use p3ak_policy::Pattern;
use p3ak_vault::Vault;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::KernelError;

/// The object space secrets live in, inside the kernel's vault.
pub const SECRETS_SPACE: &str = "secrets";

/// What a scrubbed secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Shortest secret accepted: shorter ones could not be scrubbed without mangling ordinary text.
pub const MIN_SECRET_LEN: usize = 8;

/// The action a provider's credential is scoped by: `<plugin>.inference`.
pub const PROVIDER_ACTION: &str = "inference";

/// The key of a credential reference in tool arguments.
pub const REFERENCE_KEY: &str = "$secret";

/// A secret's value. Zeroized on drop; neither `Debug` nor `Clone`.
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// Wraps a value.
    #[must_use]
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

/// A secret's name and scopes, for listings: never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// The name tool calls use.
    pub name: String,
    /// Action patterns it may be injected into; empty means whatever the policy allows.
    pub scopes: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredSecret {
    value: String,
    #[serde(default)]
    scopes: Vec<String>,
}

impl Drop for StoredSecret {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

struct Entry {
    value: SecretValue,
    scopes: Vec<Pattern>,
    scope_text: Vec<String>,
}

/// Why a reference could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No secret of that name.
    #[error("credential `{0}` is not set")]
    Missing(String),
    /// The secret's scopes exclude the action.
    #[error("credential `{name}` is not scoped for `{action}`")]
    OutOfScope {
        /// The secret.
        name: String,
        /// The action.
        action: String,
    },
}

/// Holds the secrets in memory (loaded from the kernel's vault) and the scrubber built from them.
pub struct Broker {
    entries: RwLock<BTreeMap<String, Entry>>,
    scrubber: ArcSwap<Scrubber>,
}

impl Broker {
    /// Loads every secret from the kernel's vault.
    pub fn load(vault: &Vault) -> Result<Self, KernelError> {
        let mut entries = BTreeMap::new();
        for object in vault.objects(SECRETS_SPACE) {
            let Some(bytes) = vault.read_object(SECRETS_SPACE, &object.name)? else {
                continue;
            };
            let stored: StoredSecret = serde_json::from_slice(bytes.expose()).map_err(|e| {
                KernelError::Secret(format!("secret `{}` is unreadable: {e}", object.name))
            })?;
            let entry = entry_from(&stored)?;
            entries.insert(object.name.clone(), entry);
        }
        let broker = Self {
            entries: RwLock::new(entries),
            scrubber: ArcSwap::from_pointee(Scrubber::empty()),
        };
        broker.rebuild();
        Ok(broker)
    }

    /// Stores (or replaces) a secret in the vault and in memory.
    pub fn set(
        &self,
        vault: &Vault,
        name: &str,
        value: SecretValue,
        scopes: Vec<String>,
    ) -> Result<(), KernelError> {
        store_secret(vault, name, &value, &scopes)?;
        let stored = StoredSecret {
            value: value.expose().to_owned(),
            scopes,
        };
        let entry = entry_from(&stored)?;
        if let Ok(mut entries) = self.entries.write() {
            entries.insert(name.to_owned(), entry);
        }
        self.rebuild();
        Ok(())
    }

    /// Names and scopes.
    #[must_use]
    pub fn list(&self) -> Vec<SecretInfo> {
        self.entries
            .read()
            .map(|entries| {
                entries
                    .iter()
                    .map(|(name, e)| SecretInfo {
                        name: name.clone(),
                        scopes: e.scope_text.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The scrubber for everything that flows back.
    #[must_use]
    pub fn scrubber(&self) -> Arc<Scrubber> {
        self.scrubber.load_full()
    }

    /// Replaces every reference in `args` by its value, for `action`.
    pub(crate) fn inject(
        &self,
        action: &str,
        args: &serde_json::Value,
    ) -> Result<InjectedArgs, BrokerError> {
        let entries = self
            .entries
            .read()
            .map_err(|_| BrokerError::Missing(String::new()))?;
        let mut out = args.clone();
        inject_into(&mut out, &entries, action)?;
        Ok(InjectedArgs(out))
    }

    /// The value of credential `name` for provider plugin `plugin`, checked against the
    /// secret's scopes as the action `<plugin>.inference`.
    pub(crate) fn provider_credential(
        &self,
        name: &str,
        plugin: &str,
    ) -> Result<p3ak_proto::Credential, BrokerError> {
        let entries = self
            .entries
            .read()
            .map_err(|_| BrokerError::Missing(name.to_owned()))?;
        let entry = entries
            .get(name)
            .ok_or_else(|| BrokerError::Missing(name.to_owned()))?;
        let action = format!("{plugin}.{PROVIDER_ACTION}");
        if !entry.scopes.is_empty() && !entry.scopes.iter().any(|p| p.matches(&action)) {
            return Err(BrokerError::OutOfScope {
                name: name.to_owned(),
                action,
            });
        }
        Ok(p3ak_proto::Credential::new(entry.value.expose().to_owned()))
    }

    fn rebuild(&self) {
        let Ok(entries) = self.entries.read() else {
            return;
        };
        let scrubber = Scrubber::new(entries.values().map(|e| e.value.expose()));
        self.scrubber.store(Arc::new(scrubber));
    }
}

fn entry_from(stored: &StoredSecret) -> Result<Entry, KernelError> {
    let scopes = stored
        .scopes
        .iter()
        .map(|s| Pattern::parse(s).map_err(|e| KernelError::Secret(format!("scope `{s}`: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Entry {
        value: SecretValue::new(stored.value.clone()),
        scopes,
        scope_text: stored.scopes.clone(),
    })
}

/// Checks a secret's name, value and scopes, then writes it to the kernel's vault. Used by the
/// running kernel and by `p3ak secret set` when no kernel runs.
pub fn store_secret(
    vault: &Vault,
    name: &str,
    value: &SecretValue,
    scopes: &[String],
) -> Result<(), KernelError> {
    if !valid_secret_name(name) {
        return Err(KernelError::Secret(format!(
            "secret name `{name}`: use 1–64 letters, digits, `_` and `-`"
        )));
    }
    if value.expose().chars().count() < MIN_SECRET_LEN {
        return Err(KernelError::Secret(format!(
            "the value is too short: at least {MIN_SECRET_LEN} characters, so that it can be \
             scrubbed from text reliably"
        )));
    }
    if value.expose().contains(['\n', '\r']) {
        return Err(KernelError::Secret(
            "the value spans lines: give one line".to_owned(),
        ));
    }
    for scope in scopes {
        Pattern::parse(scope).map_err(|e| KernelError::Secret(format!("scope `{scope}`: {e}")))?;
    }
    let stored = StoredSecret {
        value: value.expose().to_owned(),
        scopes: scopes.to_vec(),
    };
    let bytes = Zeroizing::new(
        serde_json::to_vec(&stored).map_err(|e| KernelError::Secret(e.to_string()))?,
    );
    vault.transact(|tx| {
        tx.put_object(SECRETS_SPACE, name, &bytes)?;
        tx.log(
            "secret.set",
            serde_json::json!({"name": name, "scopes": scopes}),
        )
    })?;
    Ok(())
}

/// Lists secrets straight from a vault (no kernel running).
#[must_use]
pub fn list_stored(vault: &Vault) -> Vec<SecretInfo> {
    vault
        .objects(SECRETS_SPACE)
        .into_iter()
        .map(|object| {
            let scopes = vault
                .read_object(SECRETS_SPACE, &object.name)
                .ok()
                .flatten()
                .and_then(|bytes| serde_json::from_slice::<StoredSecret>(bytes.expose()).ok())
                .map(|s| s.scopes.clone())
                .unwrap_or_default();
            SecretInfo {
                name: object.name,
                scopes,
            }
        })
        .collect()
}

/// Secret names: what a `{"$secret": NAME}` may say.
#[must_use]
pub fn valid_secret_name(name: &str) -> bool {
    crate::config::valid_plugin_name(name)
}

/// The names `args` refers to, in order of first appearance. A malformed reference (an object
/// with `$secret` and other keys, or a name that is not a string or not valid) is an error that
/// may be shown to the model: it is about syntax, not policy.
pub fn references(args: &serde_json::Value) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    collect_references(args, &mut names)?;
    Ok(names)
}

fn collect_references(value: &serde_json::Value, names: &mut Vec<String>) -> Result<(), String> {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(name) = map.get(REFERENCE_KEY) {
                let serde_json::Value::String(name) = name else {
                    return Err("`$secret` must name a credential as a string".to_owned());
                };
                if map.len() != 1 {
                    return Err("an object with `$secret` may hold nothing else".to_owned());
                }
                if !valid_secret_name(name) {
                    return Err(format!("`{name}` is not a credential name"));
                }
                if !names.contains(name) {
                    names.push(name.clone());
                }
                return Ok(());
            }
            map.values().try_for_each(|v| collect_references(v, names))
        }
        serde_json::Value::Array(items) => {
            items.iter().try_for_each(|v| collect_references(v, names))
        }
        _ => Ok(()),
    }
}

fn inject_into(
    value: &mut serde_json::Value,
    entries: &BTreeMap<String, Entry>,
    action: &str,
) -> Result<(), BrokerError> {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(name)) = map.get(REFERENCE_KEY) {
                let entry = entries
                    .get(name)
                    .ok_or_else(|| BrokerError::Missing(name.clone()))?;
                if !entry.scopes.is_empty() && !entry.scopes.iter().any(|p| p.matches(action)) {
                    return Err(BrokerError::OutOfScope {
                        name: name.clone(),
                        action: action.to_owned(),
                    });
                }
                *value = serde_json::Value::String(entry.value.expose().to_owned());
                return Ok(());
            }
            map.values_mut()
                .try_for_each(|v| inject_into(v, entries, action))
        }
        serde_json::Value::Array(items) => items
            .iter_mut()
            .try_for_each(|v| inject_into(v, entries, action)),
        _ => Ok(()),
    }
}

/// Arguments with secret values in them. Zeroizes every string when dropped.
pub(crate) struct InjectedArgs(serde_json::Value);

impl InjectedArgs {
    pub(crate) fn value(&self) -> &serde_json::Value {
        &self.0
    }
}

impl Drop for InjectedArgs {
    fn drop(&mut self) {
        zeroize_value(&mut self.0);
    }
}

pub(crate) fn zeroize_value(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(zeroize_value),
        serde_json::Value::Object(map) => map.values_mut().for_each(zeroize_value),
        _ => {}
    }
}

/// Finds secret values, in every form we know, in text.
pub struct Scrubber {
    matcher: Option<AhoCorasick>,
}

impl Scrubber {
    /// A scrubber that finds nothing.
    #[must_use]
    pub fn empty() -> Self {
        Self { matcher: None }
    }

    /// A scrubber for these values.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles: Vec<String> = Vec::new();
        for value in values {
            needles.extend(forms(value));
        }
        needles.retain(|n| n.len() >= 4);
        needles.sort();
        needles.dedup();
        if needles.is_empty() {
            return Self::empty();
        }
        let matcher = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&needles)
            .ok();
        needles.iter_mut().for_each(Zeroize::zeroize);
        Self { matcher }
    }

    /// `text` with every secret replaced by [`REDACTED`].
    #[must_use]
    pub fn scrub(&self, text: &str) -> String {
        match &self.matcher {
            Some(m) => m.replace_all(text, &vec![REDACTED; m.patterns_len()]),
            None => text.to_owned(),
        }
    }

    /// Whether `text` holds a secret.
    #[must_use]
    pub fn finds(&self, text: &str) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.is_match(text))
    }

    /// Scrubs every string (keys too) in a JSON value.
    pub fn scrub_value(&self, value: &mut serde_json::Value) {
        if self.matcher.is_none() {
            return;
        }
        match value {
            serde_json::Value::String(s) if self.finds(s) => *s = self.scrub(s),
            serde_json::Value::String(_) => {}
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_value(v)),
            serde_json::Value::Object(map) => {
                let old = std::mem::take(map);
                for (key, mut v) in old {
                    self.scrub_value(&mut v);
                    map.insert(self.scrub(&key), v);
                }
            }
            _ => {}
        }
    }
}

/// The forms a value can take on its way back: itself, JSON-escaped, base64 (standard and
/// URL-safe, padded or not, and at each of the three byte alignments, so that
/// `base64("user:" + secret)` is caught too), hex (both cases) and URL-encoded.
fn forms(value: &str) -> Vec<String> {
    let bytes = value.as_bytes();
    let mut out = vec![value.to_owned()];
    if let Ok(json) = serde_json::to_string(value)
        && let Some(inner) = json.get(1..json.len().saturating_sub(1))
    {
        out.push(inner.to_owned());
    }
    for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        out.push(engine.encode(bytes));
    }
    for offset in 1..3usize {
        let mut shifted = vec![0u8; offset];
        shifted.extend_from_slice(bytes);
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&shifted);
            // Characters wholly made of the value's bits: from the first 6-bit group after the
            // prefix to the last complete one.
            let first = (8 * offset).div_ceil(6);
            let last = (8 * (offset + bytes.len())) / 6;
            if let Some(fragment) = encoded.get(first..last).filter(|f| f.len() >= 8) {
                out.push(fragment.to_owned());
            }
        }
        shifted.zeroize();
    }
    // Unaligned fragments of the aligned encodings too (`base64(secret + "…")`).
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        let encoded = engine.encode(bytes);
        let last = (8 * bytes.len()) / 6;
        if let Some(fragment) = encoded.get(..last).filter(|f| f.len() >= 8) {
            out.push(fragment.to_owned());
        }
    }
    out.push(hex::encode(bytes));
    out.push(hex::encode_upper(bytes));
    out.push(
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    );
    out.push(url::form_urlencoded::byte_serialize(bytes).collect());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "sk-live-4f9a8b7c6d5e";

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

    #[test]
    fn invariant_i4_json_values_are_scrubbed_keys_included() {
        let scrubber = Scrubber::new([SECRET]);
        let mut value = serde_json::json!({
            "headers": {"authorization": format!("Bearer {SECRET}")},
            SECRET: [1, format!("x{SECRET}y")],
        });
        scrubber.scrub_value(&mut value);
        let text = value.to_string();
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains(REDACTED));
    }

    #[test]
    fn references_are_strict() {
        let ok = serde_json::json!({"h": {"$secret": "api"}, "l": [{"$secret": "b"}, {"$secret": "api"}]});
        assert_eq!(references(&ok).unwrap(), vec!["api", "b"]);
        for bad in [
            serde_json::json!({"$secret": 5}),
            serde_json::json!({"$secret": "a", "x": 1}),
            serde_json::json!({"$secret": "has space"}),
        ] {
            assert!(references(&bad).is_err(), "{bad}");
        }
    }
}
