//! The credential broker: secrets by name, injected just before execution, scrubbed from
//! everything that flows back (invariant I4).
//!
//! A tool call refers to a secret as `{"$secret": "NAME"}` anywhere in its arguments. The model
//! only ever sees and writes the name. After the enforcer (or a human) authorised the call, the
//! broker replaces each reference by the value for the plugin's eyes only; whatever comes back
//! — results, errors, plugin logs — passes through the [`Scrubber`] (see [`crate::scrub`]),
//! which replaces the value in every form it knows by `[redacted]`.
//!
//! A secret may be *bound* to hosts (`p3ak secret set NAME --host api.example.com --host
//! '*.example.org'`): the broker then injects it only into a call whose arguments hold at
//! least one URL and whose every URL has a host within the binding. A call with no URL, or
//! with one whose host cannot be read, cannot show where the value would go: refused. A
//! provider's key bound so goes only to a provider whose config names its `base_url` within
//! the binding. The check covers URLs only: a tool that reaches other hosts by other means (a
//! shell command naming a bare host) is kept in check by scopes and the policy.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use p3ak_policy::Pattern;
use p3ak_vault::Vault;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

pub use crate::scrub::{REDACTED, Scrubber};
use crate::{KernelError, SecretError};

mod destinations;

use destinations::Destinations;
pub use destinations::valid_host_pattern;

/// The object space secrets live in, inside the kernel's vault.
pub const SECRETS_SPACE: &str = "secrets";

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

/// A secret's name, scopes and hosts, for listings: never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// The name tool calls use.
    pub name: String,
    /// Action patterns it may be injected into; empty means whatever the policy allows.
    pub scopes: Vec<String>,
    /// Host patterns it may be sent to; empty means unbound.
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredSecret {
    value: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    hosts: Vec<String>,
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
    /// Host patterns, lower-case; empty: unbound.
    hosts: Vec<String>,
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
    /// The secret is bound to hosts and the call sends it to another.
    #[error("credential `{name}` is bound to other hosts than `{host}`")]
    HostNotAllowed {
        /// The secret.
        name: String,
        /// The host outside its binding.
        host: String,
    },
    /// The secret is bound to hosts and the call names no URL: where it goes cannot be checked.
    #[error("credential `{name}` is bound to hosts and the call names no URL to check")]
    NoDestination {
        /// The secret.
        name: String,
    },
    /// The secret is bound to hosts and a URL of the call has no host that can be read.
    #[error("credential `{name}` is bound to hosts and a URL of the call has no readable host")]
    UnreadableUrl {
        /// The secret.
        name: String,
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
            let stored: StoredSecret =
                serde_json::from_slice(bytes.expose()).map_err(|source| {
                    SecretError::Unreadable {
                        name: object.name.clone(),
                        source,
                    }
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
        hosts: Vec<String>,
    ) -> Result<(), KernelError> {
        let hosts = store_secret(vault, name, &value, &scopes, &hosts)?;
        let stored = StoredSecret {
            value: value.expose().to_owned(),
            scopes,
            hosts,
        };
        let entry = entry_from(&stored)?;
        if let Ok(mut entries) = self.entries.write() {
            entries.insert(name.to_owned(), entry);
        }
        self.rebuild();
        Ok(())
    }

    /// Names, scopes and hosts.
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
                        hosts: e.hosts.clone(),
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

    /// Replaces every reference in `args` by its value, for `action`. A secret bound to hosts
    /// is injected only if every URL in `args` is on one of them, and there is one.
    pub(crate) fn inject(
        &self,
        action: &str,
        args: &serde_json::Value,
    ) -> Result<InjectedArgs, BrokerError> {
        let entries = self
            .entries
            .read()
            .map_err(|_| BrokerError::Missing(String::new()))?;
        let destinations = Destinations::of(args);
        let mut out = InjectedArgs(args.clone());
        inject_into(&mut out.0, &entries, action, &destinations)?;
        Ok(out)
    }

    /// The value of credential `name` for provider plugin `plugin`, checked against the
    /// secret's scopes as the action `<plugin>.inference`, and, if it is bound to hosts,
    /// against the URLs of the plugin's `config` (its `base_url`).
    pub(crate) fn provider_credential(
        &self,
        name: &str,
        plugin: &str,
        config: &serde_json::Value,
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
        Destinations::of(config).allow(name, &entry.hosts)?;
        Ok(p3ak_proto::Credential::new(entry.value.expose().to_owned()))
    }

    /// The value of credential `name` for plugin `plugin`, handed over in `welcome`: a
    /// connector's platform token, or a tool's login (a mail or calendar password, a search
    /// API key). Checked against the secret's scopes as the action `<plugin>.connect`; when
    /// `config` is given (a tool's), a secret bound to hosts goes only to a plugin whose
    /// config names at least one URL and only URLs within the binding. A connector's config
    /// is not checked: it talks to its one platform.
    pub(crate) fn plugin_credential(
        &self,
        name: &str,
        plugin: &str,
        config: Option<&serde_json::Value>,
    ) -> Result<p3ak_proto::Credential, BrokerError> {
        let entries = self
            .entries
            .read()
            .map_err(|_| BrokerError::Missing(name.to_owned()))?;
        let entry = entries
            .get(name)
            .ok_or_else(|| BrokerError::Missing(name.to_owned()))?;
        let action = format!("{plugin}.connect");
        if !entry.scopes.is_empty() && !entry.scopes.iter().any(|p| p.matches(&action)) {
            return Err(BrokerError::OutOfScope {
                name: name.to_owned(),
                action,
            });
        }
        if let Some(config) = config {
            Destinations::of(config).allow(name, &entry.hosts)?;
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

fn scope_error(scope: &str, reason: String) -> SecretError {
    SecretError::Scope {
        scope: scope.to_owned(),
        reason,
    }
}

fn entry_from(stored: &StoredSecret) -> Result<Entry, KernelError> {
    let scopes = stored
        .scopes
        .iter()
        .map(|s| Pattern::parse(s).map_err(|reason| scope_error(s, reason)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Entry {
        value: SecretValue::new(stored.value.clone()),
        scopes,
        scope_text: stored.scopes.clone(),
        hosts: checked_hosts(&stored.hosts)?,
    })
}

/// Host patterns, checked and lower-cased.
fn checked_hosts(hosts: &[String]) -> Result<Vec<String>, KernelError> {
    hosts
        .iter()
        .map(|h| {
            if let Ok(ip) = h.parse::<std::net::Ipv6Addr>() {
                Ok(ip.to_string())
            } else if valid_host_pattern(h) {
                Ok(h.to_ascii_lowercase())
            } else {
                Err(SecretError::Host { host: h.clone() }.into())
            }
        })
        .collect()
}

/// Checks a secret's name, value, scopes and hosts, then writes it to the kernel's vault; returns
/// the hosts as stored (lower-case). Used by the running kernel and by `p3ak secret set` when no
/// kernel runs.
pub fn store_secret(
    vault: &Vault,
    name: &str,
    value: &SecretValue,
    scopes: &[String],
    hosts: &[String],
) -> Result<Vec<String>, KernelError> {
    if !valid_secret_name(name) {
        return Err(SecretError::Name {
            name: name.to_owned(),
        }
        .into());
    }
    if value.expose().chars().count() < MIN_SECRET_LEN {
        return Err(SecretError::TooShort {
            min: MIN_SECRET_LEN,
        }
        .into());
    }
    if value.expose().contains(['\n', '\r']) {
        return Err(SecretError::MultiLine.into());
    }
    for scope in scopes {
        Pattern::parse(scope).map_err(|reason| scope_error(scope, reason))?;
    }
    let hosts = checked_hosts(hosts)?;
    let stored = StoredSecret {
        value: value.expose().to_owned(),
        scopes: scopes.to_vec(),
        hosts: hosts.clone(),
    };
    let bytes = Zeroizing::new(serde_json::to_vec(&stored).map_err(SecretError::Encode)?);
    vault.transact(|tx| {
        tx.put_object(SECRETS_SPACE, name, &bytes)?;
        tx.log(
            "secret.set",
            serde_json::json!({"name": name, "scopes": scopes, "hosts": hosts}),
        )
    })?;
    Ok(hosts)
}

/// Lists secrets straight from a vault (no kernel running).
#[must_use]
pub fn list_stored(vault: &Vault) -> Vec<SecretInfo> {
    vault
        .objects(SECRETS_SPACE)
        .into_iter()
        .map(|object| {
            let (scopes, hosts) = vault
                .read_object(SECRETS_SPACE, &object.name)
                .ok()
                .flatten()
                .and_then(|bytes| serde_json::from_slice::<StoredSecret>(bytes.expose()).ok())
                .map(|s| (s.scopes.clone(), s.hosts.clone()))
                .unwrap_or_default();
            SecretInfo {
                name: object.name,
                scopes,
                hosts,
            }
        })
        .collect()
}

/// Secret names: what a `{"$secret": NAME}` may say.
#[must_use]
pub fn valid_secret_name(name: &str) -> bool {
    crate::config::valid_plugin_name(name)
}

/// Why a credential reference is malformed (about syntax, not policy: the model may hear it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// `{"$secret": 1}`.
    #[error("`$secret` must name a credential as a string")]
    NotAString,
    /// `{"$secret": "a", "b": 1}`.
    #[error("an object with `$secret` may hold nothing else")]
    NotAlone,
    /// A name that is not a credential name.
    #[error("`{0}` is not a credential name")]
    BadName(String),
}

/// The names `args` refers to, in order of first appearance. A malformed reference (an object
/// with `$secret` and other keys, or a name that is not a string or not valid) is an error that
/// may be shown to the model: it is about syntax, not policy.
pub fn references(args: &serde_json::Value) -> Result<Vec<String>, ReferenceError> {
    let mut names = Vec::new();
    collect_references(args, &mut names)?;
    Ok(names)
}

fn collect_references(
    value: &serde_json::Value,
    names: &mut Vec<String>,
) -> Result<(), ReferenceError> {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(name) = map.get(REFERENCE_KEY) {
                let serde_json::Value::String(name) = name else {
                    return Err(ReferenceError::NotAString);
                };
                if map.len() != 1 {
                    return Err(ReferenceError::NotAlone);
                }
                if !valid_secret_name(name) {
                    return Err(ReferenceError::BadName(name.clone()));
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
    destinations: &Destinations,
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
                destinations.allow(name, &entry.hosts)?;
                *value = serde_json::Value::String(entry.value.expose().to_owned());
                return Ok(());
            }
            map.values_mut()
                .try_for_each(|v| inject_into(v, entries, action, destinations))
        }
        serde_json::Value::Array(items) => items
            .iter_mut()
            .try_for_each(|v| inject_into(v, entries, action, destinations)),
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

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use super::destinations::host_matches;
    use super::*;

    const SECRET: &str = "sk-live-4f9a8b7c6d5e";

    #[test]
    fn a_bad_scope_or_host_is_refused_with_its_reason() {
        let stored = |scopes: &[&str], hosts: &[&str]| StoredSecret {
            value: SECRET.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        };
        let Err(e) = entry_from(&stored(&[], &["not a host"])) else {
            panic!("a host with a space was accepted");
        };
        assert!(
            matches!(&e, KernelError::Secret(SecretError::Host { host }) if host == "not a host")
        );
        assert!(
            e.to_string()
                .starts_with("host `not a host`: expected a host name")
        );
        let Err(e) = entry_from(&stored(&["bad pattern!"], &[])) else {
            panic!("a malformed scope was accepted");
        };
        assert!(
            matches!(&e, KernelError::Secret(SecretError::Scope { scope, .. }) if scope == "bad pattern!")
        );
        assert!(e.to_string().starts_with("scope `bad pattern!`: "));
    }

    /// A broker holding one secret `api` with these hosts, and `plain` with none.
    fn broker(hosts: &[&str]) -> Broker {
        let mut entries = BTreeMap::new();
        for (name, hosts) in [("api", hosts), ("plain", &[][..])] {
            let stored = StoredSecret {
                value: SECRET.to_owned(),
                scopes: Vec::new(),
                hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            };
            entries.insert(name.to_owned(), entry_from(&stored).unwrap());
        }
        let broker = Broker {
            entries: RwLock::new(entries),
            scrubber: ArcSwap::from_pointee(Scrubber::empty()),
        };
        broker.rebuild();
        broker
    }

    fn call(url: serde_json::Value, name: &str) -> serde_json::Value {
        serde_json::json!({"url": url, "headers": {"x-api-key": {"$secret": name}}})
    }

    const BOUND: [&str; 2] = ["api.example.com", "*.example.org"];

    #[test]
    fn invariant_i4_a_bound_credential_goes_to_its_hosts() {
        let broker = broker(&BOUND);
        for url in [
            serde_json::json!("https://api.example.com/v1/send"),
            serde_json::json!("https://API.Example.COM./v1"),
            serde_json::json!("https://eu.example.org:8443/x?y=https://api.example.com/"),
            serde_json::json!(["https://a.example.org/", "http://b.c.example.org/"]),
        ] {
            let injected = broker.inject("http.request", &call(url.clone(), "api"));
            let injected = injected.unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(injected.value()["headers"]["x-api-key"], SECRET, "{url}");
        }
    }

    #[test]
    fn invariant_i4_a_bound_credential_is_refused_for_other_hosts() {
        let broker = broker(&BOUND);
        for url in [
            serde_json::json!("https://evil.example/"),
            serde_json::json!("https://api.example.com.evil.example/"),
            serde_json::json!("https://api.example.com@evil.example/"),
            serde_json::json!("https://example.org/"),
            serde_json::json!("https://notexample.org/"),
            serde_json::json!(["https://api.example.com/", "https://evil.example/"]),
            // A URL anywhere in a string counts, not only a whole-string one.
            serde_json::json!({"to": "https://api.example.com/", "then": "post it to ftp://evil.example/x"}),
        ] {
            match broker.inject("http.request", &call(url.clone(), "api")) {
                Err(BrokerError::HostNotAllowed { name, host }) => {
                    assert_eq!(name, "api");
                    assert!(
                        host.contains("evil") || host.ends_with("example.org"),
                        "{host}"
                    );
                }
                Err(e) => panic!("{url}: {e}"),
                Ok(_) => panic!("{url}: injected"),
            }
        }
    }

    #[test]
    fn invariant_i4_a_bound_credential_without_a_url_is_refused() {
        let broker = broker(&BOUND);
        for args in [
            serde_json::json!({"cmd": "curl api.example.com", "k": {"$secret": "api"}}),
            serde_json::json!({"k": {"$secret": "api"}}),
        ] {
            match broker.inject("shell.run", &args) {
                Err(BrokerError::NoDestination { name }) => assert_eq!(name, "api"),
                Err(e) => panic!("{args}: {e}"),
                Ok(_) => panic!("{args}: injected"),
            }
        }
        // A URL whose host cannot be read proves nothing either.
        for url in ["https://", "file:///etc/passwd", "://api.example.com/"] {
            let args = call(serde_json::json!([url, "https://api.example.com/"]), "api");
            assert!(
                matches!(
                    broker.inject("http.request", &args),
                    Err(BrokerError::UnreadableUrl { .. })
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn invariant_i4_an_unbound_credential_is_injected_as_before() {
        let broker = broker(&BOUND);
        for args in [
            call(serde_json::json!("https://evil.example/"), "plain"),
            serde_json::json!({"k": {"$secret": "plain"}}),
        ] {
            let injected = broker.inject("http.request", &args).unwrap();
            assert_eq!(injected.value().to_string().matches(SECRET).count(), 1);
        }
        // Nor does an unbound one in the same call escape the bound one's check.
        let both = serde_json::json!({"url": "https://evil.example/",
            "a": {"$secret": "plain"}, "b": {"$secret": "api"}});
        assert!(broker.inject("http.request", &both).is_err());
    }

    #[test]
    fn invariant_i4_a_bound_provider_key_goes_only_to_its_configured_base_url() {
        let broker = broker(&BOUND);
        let config = |url: &str| serde_json::json!({"base_url": url, "model": "m"});
        assert!(
            broker
                .provider_credential("api", "claude", &config("https://api.example.com/v1"))
                .is_ok()
        );
        assert!(matches!(
            broker.provider_credential("api", "claude", &config("https://evil.example/v1")),
            Err(BrokerError::HostNotAllowed { .. })
        ));
        // The plugin's built-in default is not known here: a bound key needs `base_url`.
        assert!(matches!(
            broker.provider_credential("api", "claude", &serde_json::json!({"model": "m"})),
            Err(BrokerError::NoDestination { .. })
        ));
        assert!(
            broker
                .provider_credential("plain", "claude", &serde_json::json!({}))
                .is_ok()
        );
    }

    #[test]
    fn invariant_i4_a_bound_tool_login_goes_only_to_a_plugin_whose_servers_are_within_the_binding()
    {
        let broker = broker(&BOUND);
        let config = |imap: &str, smtp: &str| serde_json::json!({"imap": imap, "smtp": smtp});
        let within = config("imaps://api.example.com:993", "smtps://api.example.com:465");
        assert!(
            broker
                .plugin_credential("api", "mail", Some(&within))
                .is_ok()
        );
        // One server elsewhere is enough to refuse: the password would go there too.
        let one_out = config("imaps://api.example.com:993", "smtps://evil.example:465");
        assert!(matches!(
            broker.plugin_credential("api", "mail", Some(&one_out)),
            Err(BrokerError::HostNotAllowed { .. })
        ));
        assert!(matches!(
            broker.plugin_credential("api", "mail", Some(&serde_json::json!({"user": "me"}))),
            Err(BrokerError::NoDestination { .. })
        ));
        // A connector's config is not checked (it talks to its one platform); an unbound
        // secret goes to any tool.
        assert!(broker.plugin_credential("api", "telegram", None).is_ok());
        assert!(
            broker
                .plugin_credential("plain", "mail", Some(&one_out))
                .is_ok()
        );
    }

    #[test]
    fn host_patterns_are_checked() {
        for good in [
            "api.example.com",
            "*.example.org",
            "127.0.0.1",
            "::1",
            "API.Example.com",
        ] {
            assert!(valid_host_pattern(good), "{good}");
        }
        for bad in [
            "",
            "*",
            "*.",
            "https://api.example.com",
            "api.example.com/x",
            "a..b",
            "exa mple.com",
            "*.*.example.com",
            "bücher.example",
            "api.example.com:443",
        ] {
            assert!(!valid_host_pattern(bad), "{bad}");
        }
        assert!(host_matches("api.example.org", "*.example.org"));
        assert!(!host_matches("example.org", "*.example.org"));
        assert!(!host_matches("evilexample.org", "*.example.org"));
        assert!(host_matches("::1", "::1"));
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
