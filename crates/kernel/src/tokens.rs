//! API tokens: bearer credentials for the REST API and the MCP server, each with scopes and an
//! optional expiry.
//!
//! A token is shown once, when it is created: `p3ak_<id>_<secret>`. The kernel keeps only its
//! SHA-256 (the secret is 256 random bits, so a slow hash would add nothing) in its encrypted
//! vault (object space [`TOKENS_SPACE`]), and compares hashes in constant time. The id is not
//! secret: it names the token in lists, the audit log and rate limits.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use p3ak_vault::{Vault, VaultError};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::API_SCOPES;

/// The kernel vault's object space for tokens.
pub const TOKENS_SPACE: &str = "api-tokens";

/// Every token starts with this.
const PREFIX: &str = "p3ak_";
/// Hex characters of an id.
const ID_HEX: usize = 12;
/// Random bytes of a secret.
const SECRET_BYTES: usize = 32;
/// Longest token name.
const MAX_NAME: usize = 64;
/// Most tokens at once (each is a rate-limit key and a line in the console).
const MAX_TOKENS: usize = 1000;

/// A stored token: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Its id (12 hex characters).
    pub id: String,
    /// What the owner called it (`grafana`, `laptop-mcp`).
    pub name: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// When it was made (seconds since the Unix epoch).
    pub created_at: i64,
    /// When it stops working, if ever.
    pub expires_at: Option<i64>,
    /// SHA-256 of the whole token, hex.
    #[serde(rename = "sha256")]
    hash: String,
}

impl TokenRecord {
    /// Whether it works at `now`.
    #[must_use]
    pub fn live_at(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// What lists and the audit log show of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// When it was made.
    pub created_at: i64,
    /// When it stops working, if ever.
    pub expires_at: Option<i64>,
}

impl From<&TokenRecord> for TokenInfo {
    fn from(r: &TokenRecord) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            scopes: r.scopes.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

/// A token just made: the only time its secret exists outside the caller's hands.
pub struct IssuedToken {
    /// The record stored.
    pub record: TokenRecord,
    /// `p3ak_<id>_<secret>`, to show once.
    pub token: Zeroizing<String>,
}

/// Why a presented token is refused (what the caller is told is coarser: see the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// Not shaped like one of ours.
    #[error("the token is malformed")]
    Malformed,
    /// No such token, or the secret is wrong, or it was revoked.
    #[error("the token is not valid")]
    Unknown,
    /// It expired.
    #[error("the token has expired")]
    Expired,
}

/// Why a token cannot be made or revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// An unknown scope.
    #[error(
        "unknown scope `{0}` (known: status, vault:read, vault:write, chat, audit:read, tokens)"
    )]
    Scope(String),
    /// No scope given.
    #[error("a token needs at least one scope")]
    NoScope,
    /// A bad name.
    #[error("token name `{0}`: use 1 to 64 letters, digits, `_`, `-` and `.`")]
    Name(String),
    /// An expiry in the past.
    #[error("the expiry is not in the future")]
    Expiry,
    /// Too many tokens.
    #[error("there are already {MAX_TOKENS} tokens; revoke some first")]
    Full,
    /// No such token.
    #[error("no token `{0}`")]
    Unknown(String),
    /// The vault refused.
    #[error("cannot store the token: {0}")]
    Vault(#[from] VaultError),
    /// A stored token does not parse.
    #[error("stored token `{id}` is unreadable: {source}")]
    Unreadable {
        /// Its object name.
        id: String,
        /// Why.
        source: serde_json::Error,
    },
    /// No randomness.
    #[error("cannot make a token: {0}")]
    Random(#[source] p3ak_crypto::CryptoError),
}

/// The tokens, in memory and (unless built for tests) in the kernel's vault.
pub struct TokenBook {
    vault: Option<Arc<Vault>>,
    tokens: RwLock<BTreeMap<String, TokenRecord>>,
}

impl TokenBook {
    /// A book kept in memory only (tests).
    #[must_use]
    pub fn in_memory() -> Self {
        Self {
            vault: None,
            tokens: RwLock::new(BTreeMap::new()),
        }
    }

    /// Reads every token from the kernel's vault, deleting those expired before `now`.
    pub fn load(vault: Arc<Vault>, now: i64) -> Result<Self, TokenError> {
        let mut tokens = BTreeMap::new();
        let mut expired = Vec::new();
        for object in vault.objects(TOKENS_SPACE) {
            let Some(bytes) = vault.read_object(TOKENS_SPACE, &object.name)? else {
                continue;
            };
            let record: TokenRecord = serde_json::from_slice(bytes.expose()).map_err(|source| {
                TokenError::Unreadable {
                    id: object.name.clone(),
                    source,
                }
            })?;
            if record.live_at(now) {
                tokens.insert(record.id.clone(), record);
            } else {
                expired.push(object.name);
            }
        }
        if !expired.is_empty() {
            vault.transact(|tx| {
                for name in &expired {
                    tx.delete_object(TOKENS_SPACE, name)?;
                }
                Ok(())
            })?;
        }
        Ok(Self {
            vault: Some(vault),
            tokens: RwLock::new(tokens),
        })
    }

    /// Makes a token with `scopes`, valid until `expires_at` (if any), at `now`.
    pub fn create(
        &self,
        name: &str,
        scopes: &[String],
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<IssuedToken, TokenError> {
        if name.is_empty()
            || name.len() > MAX_NAME
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(TokenError::Name(name.to_owned()));
        }
        if scopes.is_empty() {
            return Err(TokenError::NoScope);
        }
        if let Some(scope) = scopes.iter().find(|s| !API_SCOPES.contains(&s.as_str())) {
            return Err(TokenError::Scope(scope.clone()));
        }
        if expires_at.is_some_and(|at| at <= now) {
            return Err(TokenError::Expiry);
        }
        if self.tokens.read().map(|t| t.len()).unwrap_or(0) >= MAX_TOKENS {
            return Err(TokenError::Full);
        }
        let id_bytes: [u8; ID_HEX / 2] = p3ak_crypto::random_array().map_err(TokenError::Random)?;
        let secret: Zeroizing<[u8; SECRET_BYTES]> =
            Zeroizing::new(p3ak_crypto::random_array().map_err(TokenError::Random)?);
        let id = hex::encode(id_bytes);
        let token = Zeroizing::new(format!(
            "{PREFIX}{id}_{}",
            data_encoding::BASE64URL_NOPAD.encode(secret.as_ref())
        ));
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let record = TokenRecord {
            id: id.clone(),
            name: name.to_owned(),
            scopes,
            created_at: now,
            expires_at,
            hash: hex::encode(p3ak_crypto::sha256(&[token.as_bytes()])),
        };
        if let Some(vault) = &self.vault {
            let bytes = serde_json::to_vec(&record).map_err(|source| TokenError::Unreadable {
                id: id.clone(),
                source,
            })?;
            vault.transact(|tx| tx.put_object(TOKENS_SPACE, &id, &bytes))?;
        }
        if let Ok(mut tokens) = self.tokens.write() {
            tokens.insert(id, record.clone());
        }
        Ok(IssuedToken { record, token })
    }

    /// Every token, by id (expired ones until the next start).
    #[must_use]
    pub fn list(&self) -> Vec<TokenInfo> {
        self.tokens
            .read()
            .map(|t| t.values().map(TokenInfo::from).collect())
            .unwrap_or_default()
    }

    /// Removes the token `id` (vault first, then memory): it stops working at once.
    pub fn revoke(&self, id: &str) -> Result<TokenRecord, TokenError> {
        let record = self
            .tokens
            .read()
            .ok()
            .and_then(|t| t.get(id).cloned())
            .ok_or_else(|| TokenError::Unknown(id.to_owned()))?;
        if let Some(vault) = &self.vault {
            vault.transact(|tx| tx.delete_object(TOKENS_SPACE, id).map(|_| ()))?;
        }
        if let Ok(mut tokens) = self.tokens.write() {
            tokens.remove(id);
        }
        Ok(record)
    }

    /// The token `presented` stands for, if it is one of ours and works at `now`.
    pub fn verify(&self, presented: &str, now: i64) -> Result<TokenRecord, TokenRefusal> {
        let id = token_id(presented).ok_or(TokenRefusal::Malformed)?;
        let record = self
            .tokens
            .read()
            .ok()
            .and_then(|t| t.get(id).cloned())
            .ok_or(TokenRefusal::Unknown)?;
        let hash = hex::encode(p3ak_crypto::sha256(&[presented.as_bytes()]));
        if !p3ak_crypto::constant_time_eq(hash.as_bytes(), record.hash.as_bytes()) {
            return Err(TokenRefusal::Unknown);
        }
        if !record.live_at(now) {
            return Err(TokenRefusal::Expired);
        }
        Ok(record)
    }
}

/// The id part of a token shaped like ours.
#[must_use]
pub fn token_id(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == ID_HEX
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_token_works_until_it_expires_or_is_revoked() {
        let book = TokenBook::in_memory();
        let issued = book
            .create("laptop", &scopes(&["vault:read"]), Some(2000), 1000)
            .unwrap();
        let record = book.verify(&issued.token, 1500).unwrap();
        assert_eq!(record.scopes, vec!["vault:read".to_owned()]);
        assert_eq!(book.verify(&issued.token, 2000), Err(TokenRefusal::Expired));
        book.revoke(&record.id).unwrap();
        assert_eq!(book.verify(&issued.token, 1500), Err(TokenRefusal::Unknown));
    }

    #[test]
    fn a_token_with_the_right_id_and_a_wrong_secret_is_refused() {
        let book = TokenBook::in_memory();
        let issued = book.create("a", &scopes(&["chat"]), None, 0).unwrap();
        let id = &issued.record.id;
        let forged = format!("p3ak_{id}_{}", "A".repeat(43));
        assert_eq!(book.verify(&forged, 1), Err(TokenRefusal::Unknown));
        assert_eq!(book.verify("p3ak_zz", 1), Err(TokenRefusal::Malformed));
        assert_eq!(book.verify("", 1), Err(TokenRefusal::Malformed));
    }

    #[test]
    fn bad_scopes_names_and_expiries_are_refused() {
        let book = TokenBook::in_memory();
        assert!(matches!(
            book.create("a", &scopes(&["root"]), None, 0),
            Err(TokenError::Scope(_))
        ));
        assert!(matches!(
            book.create("a", &[], None, 0),
            Err(TokenError::NoScope)
        ));
        assert!(matches!(
            book.create("a b", &scopes(&["chat"]), None, 0),
            Err(TokenError::Name(_))
        ));
        assert!(matches!(
            book.create("a", &scopes(&["chat"]), Some(5), 10),
            Err(TokenError::Expiry)
        ));
    }

    #[test]
    fn the_secret_is_not_stored() {
        let book = TokenBook::in_memory();
        let issued = book.create("a", &scopes(&["status"]), None, 0).unwrap();
        let stored = serde_json::to_string(&book.tokens.read().unwrap().clone()).unwrap();
        let secret = issued.token.rsplit_once('_').unwrap().1;
        assert!(!stored.contains(secret));
        assert!(stored.contains(&issued.record.id));
    }
}
