//! Levels and the proofs that satisfy them (DESIGN.md's HITL table, invariant I8).
//!
//! A [`Proof`] is what a human gave: a "yes" on an authenticated channel, a tap in the console,
//! a verified PIN or TOTP code, a WebAuthn assertion with user verification, or both of the
//! last two at once. Its constructors are private to this crate: only the code that verified
//! the factor (the factor store, the console's session check, the WebAuthn ceremony) makes one.

use std::fmt;

/// The highest approval level.
pub const MAX_LEVEL: u8 = 5;

/// What kind of factor a proof came from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    /// The operator said yes on an authenticated channel (L1).
    OperatorYes,
    /// A tap on approve in the logged-in web console (L2).
    ConsoleTap,
    /// A PIN, checked against its Argon2id hash (L3).
    Pin,
    /// A TOTP code (RFC 6238), the headless alternative to a PIN (L3).
    Totp,
    /// A WebAuthn assertion with user verification (L4).
    WebAuthn,
    /// A WebAuthn assertion with user verification and a PIN, in one submission (L5).
    WebAuthnAndPin,
}

impl Factor {
    /// The highest level this factor satisfies.
    #[must_use]
    pub fn strength(self) -> u8 {
        match self {
            Self::OperatorYes => 1,
            Self::ConsoleTap => 2,
            Self::Pin | Self::Totp => 3,
            Self::WebAuthn => 4,
            Self::WebAuthnAndPin => 5,
        }
    }

    /// What a level asks for, in words the operator understands.
    #[must_use]
    pub fn needed_for(level: u8) -> &'static str {
        match level {
            0 => "nothing (logged only)",
            1 => "your yes (`p3ak approve ID`, the chat, or the console)",
            2 => "a tap on approve in the web console",
            3 => "your PIN or a TOTP code (`p3ak approve ID --pin`, or the console)",
            4 => "a security key, Touch ID or Face ID in the web console",
            _ => "a security key with your PIN in the web console, twice",
        }
    }
}

impl fmt::Display for Factor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OperatorYes => "operator yes",
            Self::ConsoleTap => "console tap",
            Self::Pin => "PIN",
            Self::Totp => "TOTP code",
            Self::WebAuthn => "WebAuthn",
            Self::WebAuthnAndPin => "WebAuthn + PIN",
        })
    }
}

/// A verified human answer, with where it came from. Not `Clone`: one proof, one use.
#[derive(Debug, PartialEq, Eq)]
pub struct Proof {
    factor: Factor,
    channel: String,
}

impl Proof {
    /// Only code in this crate that has verified the factor makes a proof.
    pub(crate) fn verified(factor: Factor, channel: impl Into<String>) -> Self {
        Self {
            factor,
            channel: channel.into(),
        }
    }

    /// The operator's yes on the operator socket, whose peer uid the daemon checked: the L1
    /// proof. Public for the daemon's tests and benches; it is worth nothing outside the
    /// daemon's process, whose desk alone takes proofs.
    #[must_use]
    pub fn operator_yes(channel: impl Into<String>) -> Self {
        Self::verified(Factor::OperatorYes, channel)
    }

    /// The factor.
    #[must_use]
    pub fn factor(&self) -> Factor {
        self.factor
    }

    /// Where it was given (`cli uid=1000`, `console session 3f…`).
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The highest level it satisfies.
    #[must_use]
    pub fn strength(&self) -> u8 {
        self.factor.strength()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strengths_rise_with_the_table() {
        let all = [
            Factor::OperatorYes,
            Factor::ConsoleTap,
            Factor::Pin,
            Factor::Totp,
            Factor::WebAuthn,
            Factor::WebAuthnAndPin,
        ];
        let strengths: Vec<u8> = all.iter().map(|f| f.strength()).collect();
        assert_eq!(strengths, [1, 2, 3, 3, 4, 5]);
    }
}
