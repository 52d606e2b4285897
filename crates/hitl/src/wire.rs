//! What the kernel and the HITL daemon say to each other: length-prefixed JSON frames (as in
//! the plugin protocol) over the daemon's stdin (kernel → daemon) and stdout (daemon → kernel).
//! Only the kernel holds those pipes, so the channel needs no further authentication.

use serde::{Deserialize, Serialize};

use crate::binding::{Binding, Request};
use crate::desk::{Decided, View};

/// Largest frame either side sends.
pub const MAX_FRAME: usize = 4 << 20;

/// What the daemon needs to start; the first frame the kernel sends.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    /// `P3AK_HOME`.
    pub home: String,
    /// The spool key for this run (hex, 32 bytes): staged files are sealed with it.
    pub spool_key: String,
    /// The key of the daemon's factor store (hex, 32 bytes).
    pub state_key: String,
    /// Spool categories to prepare under `staging/`.
    pub categories: Vec<String>,
    /// The console's listen address (`127.0.0.1:7325`), or none for no console.
    #[serde(default)]
    pub console: Option<String>,
    /// The origin the console is reached at (`http://localhost:7325`).
    #[serde(default)]
    pub console_origin: Option<String>,
    /// Whether a non-loopback console address is allowed (`[hitl] console_public`).
    #[serde(default)]
    pub console_public: bool,
    /// The one-time login token `p3ak up` printed.
    #[serde(default)]
    pub login_token: Option<String>,
}

impl Drop for Start {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.spool_key);
        zeroize::Zeroize::zeroize(&mut self.state_key);
        if let Some(token) = &mut self.login_token {
            zeroize::Zeroize::zeroize(token);
        }
    }
}

/// Kernel → daemon.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToDaemon {
    /// A request was written to `staging/<category>/<id>`.
    Staged {
        /// Its id.
        id: String,
        /// Its category.
        category: String,
    },
    /// The kernel stopped waiting for `id`.
    Withdraw {
        /// Its id.
        id: String,
    },
    /// An operator request relayed from the control socket; answered by [`ToKernel::Answer`]
    /// with the same `call`.
    Operator {
        /// Correlation.
        call: u64,
        /// Who (the control socket's peer).
        channel: String,
        /// What.
        request: OperatorRequest,
    },
    /// Stop.
    Shutdown,
}

/// An operator's request to the daemon.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum OperatorRequest {
    /// What waits, and what sits in its undo window.
    Pending,
    /// Approve (L1 without a factor, L3 with a PIN or TOTP code).
    Approve {
        /// The id.
        id: String,
        /// A PIN, if given.
        #[serde(default)]
        pin: Option<String>,
        /// A TOTP code, if given.
        #[serde(default)]
        totp: Option<String>,
    },
    /// Deny.
    Deny {
        /// The id.
        id: String,
    },
    /// Pull back an approved action in its undo window.
    PullBack {
        /// The id.
        id: String,
    },
    /// Decided items.
    History,
    /// Set (or change) the PIN.
    PinSet {
        /// The new PIN.
        pin: String,
        /// The current one, when one is set.
        #[serde(default)]
        current: Option<String>,
        /// Or a current TOTP code.
        #[serde(default)]
        current_totp: Option<String>,
    },
    /// Start TOTP enrollment.
    TotpEnroll {
        /// The PIN, when a factor is set.
        #[serde(default)]
        pin: Option<String>,
        /// Or a current TOTP code.
        #[serde(default)]
        totp: Option<String>,
    },
    /// Confirm TOTP enrollment with a first code.
    TotpConfirm {
        /// The code.
        code: String,
    },
    /// A fresh one-time console login link.
    Login,
    /// Which factors are set up.
    Factors,
}

impl Drop for OperatorRequest {
    fn drop(&mut self) {
        let z = |s: &mut Option<String>| {
            if let Some(s) = s {
                zeroize::Zeroize::zeroize(s);
            }
        };
        match self {
            Self::Approve { pin, totp, .. } => {
                z(pin);
                z(totp);
            }
            Self::PinSet {
                pin,
                current,
                current_totp,
            } => {
                zeroize::Zeroize::zeroize(pin);
                z(current);
                z(current_totp);
            }
            Self::TotpEnroll { pin, totp } => {
                z(pin);
                z(totp);
            }
            _ => {}
        }
    }
}

/// Daemon → kernel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToKernel {
    /// The daemon is up.
    Ready {
        /// The console's address, if it runs.
        #[serde(default)]
        console: Option<String>,
    },
    /// Record this in the audit log.
    Audit {
        /// The event name (`hitl.approve`, `hitl.pin.lockout` …).
        event: String,
        /// Its details (never a factor's value).
        data: serde_json::Value,
    },
    /// An approved action left its undo window: the request as read back from `outbox/`.
    Released {
        /// The request.
        request: Request,
        /// Its binding.
        binding: Binding,
        /// The factors that approved it.
        factors: Vec<String>,
    },
    /// Not approved: denied, expired, pulled back or unreadable. The agent hears the same
    /// opaque answer for each.
    Refused {
        /// The id.
        id: String,
        /// Why (for the audit log).
        ending: String,
    },
    /// The answer to an operator request.
    Answer {
        /// Correlation.
        call: u64,
        /// The answer.
        answer: OperatorAnswer,
    },
}

/// An answer to an operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OperatorAnswer {
    /// Done; what was done.
    Done {
        /// In words.
        message: String,
    },
    /// Items on the desk.
    Pending {
        /// The items.
        items: Vec<View>,
    },
    /// Decided items.
    History {
        /// Newest first.
        items: Vec<Decided>,
    },
    /// TOTP enrollment started.
    Enrollment {
        /// `otpauth://` URI.
        uri: String,
        /// The base32 secret.
        secret: String,
    },
    /// Failed.
    Error {
        /// Why.
        message: String,
    },
}
