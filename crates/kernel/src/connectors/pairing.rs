//! Who may talk to an agent through a chat connector: identities the owner paired, kept in the
//! kernel's vault, and the one-time codes that strangers are shown instead of an answer.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use p3ak_vault::Vault;
use serde::{Deserialize, Serialize};

use crate::KernelError;

/// The object space the connectors' state lives in.
pub(crate) const SPACE: &str = "connectors";
const PAIRED: &str = "paired";

/// The letters of a pairing code: Crockford's base32 without look-alikes.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// An identity the owner paired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paired {
    /// `CONNECTOR:<platform user id>`.
    pub identity: String,
    /// The connector.
    pub connector: String,
    /// The name the platform showed when it was paired (not trusted, for people).
    #[serde(default)]
    pub name: Option<String>,
    /// The direct conversation with them, where notices go.
    pub conversation: String,
    /// When (ms since the epoch).
    pub paired_at_ms: i64,
}

/// A code shown to an unpaired sender, waiting for the owner's `p3ak connectors pair`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Waiting {
    /// The code, as shown (`7G4K-Q2MD`).
    pub code: String,
    /// Who was shown it.
    pub identity: String,
    /// The connector.
    pub connector: String,
    /// Their display name.
    pub name: Option<String>,
    /// Seconds left.
    pub expires_in_secs: u64,
}

struct Code {
    identity: String,
    connector: String,
    name: Option<String>,
    conversation: String,
    expires: Instant,
}

/// The pairings and the codes waiting.
pub(crate) struct Pairings {
    paired: Mutex<BTreeMap<String, Paired>>,
    codes: Mutex<BTreeMap<String, Code>>,
    ttl: Duration,
}

/// What an unpaired sender's message leads to.
pub(crate) enum Stranger {
    /// Show them this code (new, or theirs expired).
    Prompt(String),
    /// They were shown a code that is still valid: say nothing more.
    Quiet,
}

impl Pairings {
    /// The pairings stored in `vault`.
    pub(crate) fn load(vault: &Vault, ttl: Duration) -> Result<Self, KernelError> {
        let paired: Vec<Paired> = match vault.read_object(SPACE, PAIRED)? {
            Some(bytes) => serde_json::from_slice(bytes.expose())
                .map_err(|e| KernelError::Connector(format!("stored pairings unreadable: {e}")))?,
            None => Vec::new(),
        };
        Ok(Self {
            paired: Mutex::new(
                paired
                    .into_iter()
                    .map(|p| (p.identity.clone(), p))
                    .collect(),
            ),
            codes: Mutex::new(BTreeMap::new()),
            ttl,
        })
    }

    /// Whether `identity` was paired.
    pub(crate) fn is_paired(&self, identity: &str) -> bool {
        self.paired.lock().is_ok_and(|p| p.contains_key(identity))
    }

    /// Every pairing.
    pub(crate) fn list(&self) -> Vec<Paired> {
        self.paired
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The codes still valid.
    pub(crate) fn waiting(&self) -> Vec<Waiting> {
        let now = Instant::now();
        self.codes
            .lock()
            .map(|codes| {
                codes
                    .iter()
                    .filter(|(_, c)| c.expires > now)
                    .map(|(code, c)| Waiting {
                        code: code.clone(),
                        identity: c.identity.clone(),
                        connector: c.connector.clone(),
                        name: c.name.clone(),
                        expires_in_secs: c.expires.duration_since(now).as_secs(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A stranger wrote: a code for them, unless they hold a valid one already.
    pub(crate) fn stranger(
        &self,
        connector: &str,
        identity: &str,
        name: Option<&str>,
        conversation: &str,
    ) -> Result<Stranger, KernelError> {
        let Ok(mut codes) = self.codes.lock() else {
            return Ok(Stranger::Quiet);
        };
        let now = Instant::now();
        codes.retain(|_, c| c.expires > now);
        if codes.values().any(|c| c.identity == identity) {
            return Ok(Stranger::Quiet);
        }
        let code = new_code()?;
        codes.insert(
            code.clone(),
            Code {
                identity: identity.to_owned(),
                connector: connector.to_owned(),
                name: name.map(str::to_owned),
                conversation: conversation.to_owned(),
                expires: now + self.ttl,
            },
        );
        Ok(Stranger::Prompt(code))
    }

    /// The owner confirms a code: its identity is paired and stored. A code works once.
    pub(crate) fn confirm(
        &self,
        vault: &Vault,
        code: &str,
        now_ms: i64,
    ) -> Result<Paired, KernelError> {
        let wanted = normalise(code);
        let found = {
            let Ok(mut codes) = self.codes.lock() else {
                return Err(KernelError::Connector(
                    "pairing state unavailable".to_owned(),
                ));
            };
            let now = Instant::now();
            codes.retain(|_, c| c.expires > now);
            let key = codes.keys().find(|k| normalise(k) == wanted).cloned();
            key.and_then(|k| codes.remove(&k))
        };
        let Some(code) = found else {
            return Err(KernelError::Connector(format!(
                "no pairing code `{code}` is waiting (codes expire; ask them to write again)"
            )));
        };
        let paired = Paired {
            identity: code.identity,
            connector: code.connector,
            name: code.name,
            conversation: code.conversation,
            paired_at_ms: now_ms,
        };
        self.change(vault, |all| {
            all.insert(paired.identity.clone(), paired.clone());
        })?;
        Ok(paired)
    }

    /// Ends a pairing; false when there was none.
    pub(crate) fn unpair(&self, vault: &Vault, identity: &str) -> Result<bool, KernelError> {
        let mut removed = false;
        self.change(vault, |all| removed = all.remove(identity).is_some())?;
        Ok(removed)
    }

    /// Applies `edit` to the pairings and stores them; the change holds only once stored.
    fn change(
        &self,
        vault: &Vault,
        edit: impl FnOnce(&mut BTreeMap<String, Paired>),
    ) -> Result<(), KernelError> {
        let Ok(mut paired) = self.paired.lock() else {
            return Err(KernelError::Connector(
                "pairing state unavailable".to_owned(),
            ));
        };
        let mut next = paired.clone();
        edit(&mut next);
        let list: Vec<&Paired> = next.values().collect();
        let bytes = serde_json::to_vec(&list)
            .map_err(|e| KernelError::Connector(format!("cannot encode pairings: {e}")))?;
        vault.transact(|tx| tx.put_object(SPACE, PAIRED, &bytes))?;
        *paired = next;
        Ok(())
    }
}

/// A fresh code: 40 random bits, shown as two groups of four.
fn new_code() -> Result<String, KernelError> {
    let bytes: [u8; 5] = p3ak_crypto::random_array()
        .map_err(|e| KernelError::Connector(format!("no randomness for a pairing code: {e}")))?;
    let bits = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let letter = |i: u64| {
        ALPHABET
            .get(usize::try_from((bits >> (i * 5)) & 31).unwrap_or(0))
            .map_or('0', |b| char::from(*b))
    };
    let first: String = (4..8).rev().map(letter).collect();
    let second: String = (0..4).rev().map(letter).collect();
    Ok(format!("{first}-{second}"))
}

/// Codes compare without case, dashes or spaces, and with the look-alikes folded.
fn normalise(code: &str) -> String {
    code.chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_two_groups_of_four_from_the_alphabet_and_compare_loosely() {
        let code = new_code().unwrap();
        assert_eq!(code.len(), 9);
        assert!(
            code.chars()
                .all(|c| c == '-' || ALPHABET.contains(&(c as u8)))
        );
        assert_eq!(
            normalise(&code.to_lowercase().replace('-', " ")),
            normalise(&code)
        );
        assert_eq!(normalise("o1l-I"), "0111");
    }
}
