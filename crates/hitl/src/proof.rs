//! The proof that a human gave a factor (invariant I8).
//!
//! A [`Proof`] is what a human gave: a "yes" on an authenticated channel, a tap in the console,
//! a verified PIN or TOTP code, a WebAuthn assertion with user verification, or both of the
//! last two at once. Its constructors are private to this crate: only the code that verified
//! the factor (the factor store, the console's session check, the WebAuthn ceremony) makes one.

use p3ak_approval::level::Factor;

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
