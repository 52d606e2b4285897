//! Approvals in a chat: what the approval daemon and a chat connector say to each other through
//! the kernel, sealed so that the kernel relays them and can neither read nor forge them.
//!
//! ```text
//! daemon ── Announcement (sealed) ──▶ kernel ──▶ connector ──▶ the approver's chat, with buttons
//! daemon ◀── Press (sealed) ──────── kernel ◀── connector ◀── the approver presses one
//! daemon ── PressAnswer (sealed) ───▶ kernel ──▶ connector ──▶ "approved"
//! ```
//!
//! The warden derives one [`ChatKey`] per connector from a key only it and the daemon hold, and
//! gives it to the connector's process in [`APPROVAL_KEY_ENV`] when it starts it; the kernel
//! never has it (as root: another uid). A button's data is a one-time token minted by the
//! daemon for one approval's binding; a press names the token and the platform identity that
//! pressed it, which the daemon checks against its approvers. Each seal binds its purpose and
//! the connector's name, so a press cannot pass for an announcement or travel to another
//! connector. Nonces are random (96 bits): a key seals a few messages per approval, far below
//! the birthday bound.

use data_encoding::BASE64URL_NOPAD;
use p3ak_crypto::{AeadKey, Key, NONCE_LEN};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ApprovalError;

/// The environment variable in which a connector receives its key (hex).
pub const APPROVAL_KEY_ENV: &str = "P3AK_APPROVAL_KEY";

/// What every approval button's data starts with: a connector sends such a press to the daemon
/// (as `approval_press`), never to the kernel as a message.
pub const BUTTON_PREFIX: &str = "p3ak:";

/// The longest sealed text accepted (an announcement carries the action's arguments).
pub const MAX_SEALED: usize = 64 * 1024;

const VERSION: u8 = 1;

/// What a sealed text is for; bound into its authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Daemon → connector: [`Announcement`].
    Announce,
    /// Connector → daemon: [`Press`].
    Press,
    /// Daemon → connector: [`PressAnswer`].
    Answer,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Announce => b"announce",
            Self::Press => b"press",
            Self::Answer => b"answer",
        }
    }
}

/// One connector's key for approvals. Zeroized on drop; never printed or cloned.
pub struct ChatKey {
    aead: AeadKey,
    raw: Key,
    connector: String,
}

impl ChatKey {
    /// The key of connector `connector`, derived from the daemon's chat master key.
    pub fn derive(master: &Key, connector: &str) -> Result<Self, ApprovalError> {
        let raw =
            p3ak_crypto::derive_subkey(master, b"p3ak chat approvals v1", connector.as_bytes())?;
        Self::new(raw, connector)
    }

    /// From its hex form (the connector's environment).
    pub fn from_hex(text: &str, connector: &str) -> Result<Self, ApprovalError> {
        let bytes =
            zeroize::Zeroizing::new(hex::decode(text.trim()).map_err(ApprovalError::KeyNotHex)?);
        Self::new(Key::from_slice(&bytes)?, connector)
    }

    fn new(raw: Key, connector: &str) -> Result<Self, ApprovalError> {
        Ok(Self {
            aead: AeadKey::new(&raw)?,
            raw,
            connector: connector.to_owned(),
        })
    }

    /// Its hex form, for the connector's environment only.
    #[must_use]
    pub fn to_hex(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(hex::encode(self.raw.expose()))
    }

    /// The connector it belongs to.
    #[must_use]
    pub fn connector(&self) -> &str {
        &self.connector
    }

    /// Seals `value` for `purpose` (base64url, no padding).
    pub fn seal<T: Serialize>(&self, purpose: Purpose, value: &T) -> Result<String, ApprovalError> {
        let mut body =
            zeroize::Zeroizing::new(serde_json::to_vec(value).map_err(ApprovalError::Encode)?);
        let nonce: [u8; NONCE_LEN] = p3ak_crypto::random_array()?;
        let mut sealed = std::mem::take(&mut *body);
        self.aead
            .seal_in_place(nonce, &self.aad(purpose), &mut sealed)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(BASE64URL_NOPAD.encode(&out))
    }

    /// Opens a text sealed for `purpose` with this key.
    pub fn open<T: DeserializeOwned>(
        &self,
        purpose: Purpose,
        sealed: &str,
    ) -> Result<T, ApprovalError> {
        if sealed.len() > MAX_SEALED {
            return Err(ApprovalError::Sealed("too long"));
        }
        let bytes = BASE64URL_NOPAD
            .decode(sealed.as_bytes())
            .map_err(|_| ApprovalError::Sealed("not base64url"))?;
        let (version, rest) = bytes.split_first().ok_or(ApprovalError::Sealed("empty"))?;
        if *version != VERSION {
            return Err(ApprovalError::Sealed("unknown version"));
        }
        let (nonce, body) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(ApprovalError::Sealed("truncated"))?;
        let mut body = zeroize::Zeroizing::new(body.to_vec());
        self.aead
            .open_in_place(*nonce, &self.aad(purpose), &mut body)
            .map_err(|_| {
                ApprovalError::Sealed(
                    "it does not authenticate (another key, purpose or connector, or altered)",
                )
            })?;
        serde_json::from_slice(&body).map_err(|_| ApprovalError::Sealed("not the expected message"))
    }

    fn aad(&self, purpose: Purpose) -> Vec<u8> {
        [
            b"p3ak-chat-approval\0".as_slice(),
            purpose.label(),
            b"\0",
            self.connector.as_bytes(),
        ]
        .concat()
    }
}

/// What an announcement is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnnouncementKind {
    /// An action waits for approval.
    Pending,
    /// An approved action waits out its undo window; the button pulls it back.
    Undo,
    /// It was settled (approved, denied, timed out, pulled back) — the buttons are void.
    Settled,
}

/// A button under an announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Button {
    /// Its label (`Approve`).
    pub label: String,
    /// What the platform hands back when it is pressed: [`BUTTON_PREFIX`] + a one-time token.
    pub data: String,
}

/// Daemon → connector: show this to the approvers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    /// The approval's id.
    pub approval: String,
    /// What it is about.
    pub kind: AnnouncementKind,
    /// The text to show, written by the daemon (action, arguments, level, why, undo window).
    pub text: String,
    /// The platform user ids (without the connector's prefix) to send it to, directly.
    pub recipients: Vec<String>,
    /// Buttons (level 1 approve/deny; pull back): pressing one is a [`Press`].
    #[serde(default)]
    pub buttons: Vec<Button>,
    /// A link to the console (levels 2–5), shown as a link button.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// When the buttons stop working (ms since the epoch).
    pub expires_at_ms: i64,
}

/// Connector → daemon: a button was pressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Press {
    /// The button's data, as the platform handed it back.
    pub data: String,
    /// The platform user id that pressed it, as the platform authenticated them.
    pub presser: String,
    /// When the connector received it (ms since the epoch).
    pub at_ms: i64,
}

/// What became of a press.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PressOutcome {
    /// The action is approved.
    Approved,
    /// The action is denied.
    Denied,
    /// The approved action was pulled back within its undo window.
    PulledBack,
    /// Nothing happened: an unknown, used or expired token, or someone who is not an approver.
    Refused,
}

/// Daemon → connector: the answer to a press.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PressAnswer {
    /// The approval's id, when the token named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// What happened.
    pub outcome: PressOutcome,
    /// One line for the person who pressed.
    pub message: String,
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "tests: a failed step should fail loudly"
)]
mod tests {
    use super::*;

    fn master() -> Key {
        Key::from_slice(&[7u8; 32]).unwrap()
    }

    fn press() -> Press {
        Press {
            data: format!("{BUTTON_PREFIX}abc"),
            presser: "42".to_owned(),
            at_ms: 1,
        }
    }

    #[test]
    fn a_sealed_press_opens_with_the_same_connectors_key_and_purpose_only() {
        let key = ChatKey::derive(&master(), "telegram").unwrap();
        let sealed = key.seal(Purpose::Press, &press()).unwrap();
        let again = ChatKey::from_hex(&key.to_hex(), "telegram").unwrap();
        assert_eq!(
            again.open::<Press>(Purpose::Press, &sealed).unwrap(),
            press()
        );

        let other = ChatKey::derive(&master(), "slack").unwrap();
        assert!(other.open::<Press>(Purpose::Press, &sealed).is_err());
        // The same key bytes under another connector's name do not open it either.
        let renamed = ChatKey::from_hex(&key.to_hex(), "slack").unwrap();
        assert!(renamed.open::<Press>(Purpose::Press, &sealed).is_err());
        assert!(key.open::<Press>(Purpose::Announce, &sealed).is_err());
    }

    #[test]
    fn an_altered_or_malformed_seal_is_an_error() {
        let key = ChatKey::derive(&master(), "telegram").unwrap();
        let sealed = key.seal(Purpose::Press, &press()).unwrap();
        let mut bytes = BASE64URL_NOPAD.decode(sealed.as_bytes()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let altered = BASE64URL_NOPAD.encode(&bytes);
        for bad in [
            altered.as_str(),
            "",
            "!!",
            "AQ",
            &"A".repeat(MAX_SEALED + 1),
        ] {
            assert!(key.open::<Press>(Purpose::Press, bad).is_err(), "{bad:.20}");
        }
    }
}
