//! Levels and the factors that satisfy them (DESIGN.md's HITL table, invariant I8).
//!
//! The proof that a factor was verified (`p3ak_hitl::level::Proof`) stays in the daemon's
//! crate, whose factor code alone makes one; the kernel only needs to name a level's factor.

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
