//! What the kernel and the HITL daemon say to each other: length-prefixed JSON frames (as in
//! the plugin protocol) over one socket pair, the daemon's end being its standard input. Only
//! the kernel holds the other end. Whoever starts the daemon (the warden as root, or the
//! kernel itself) writes the [`Start`] frame into that end before the kernel reads from it, and
//! reads the daemon's [`Started`] report from its standard output: the daemon's own key and
//! the console's login link never reach the kernel.
//!
//! The channel carries only what the kernel may do: stage a request, withdraw one, stop, and
//! relay sealed chat texts ([`crate::chat`]) it can neither read nor forge. The operator's
//! answers and factors go to the daemon by other ways (`p3ak_hitl::operator`, the console, a
//! connector's sealed press), so no factor passes through the kernel in the clear.

use serde::{Deserialize, Serialize};

use crate::binding::{Binding, Request};
use crate::remember::Remember;

/// Largest frame either side sends.
pub const MAX_FRAME: usize = 4 << 20;

/// What the daemon needs to start; the first frame on its channel, from whoever started it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    /// `P3AK_HOME`.
    pub home: String,
    /// The spool key for this run (hex, 32 bytes): staged files are sealed with it.
    pub spool_key: String,
    /// The key of the daemon's factor store (hex, 32 bytes), derived from the operator's
    /// passphrase by the starter; the kernel never holds it when it runs under its own uid.
    pub state_key: String,
    /// The key an older release kept the factor store under (hex), to reseal it once.
    #[serde(default)]
    pub previous_state_key: Option<String>,
    /// Spool categories to prepare under `staging/`.
    pub categories: Vec<String>,
    /// The uids that may use the operator socket.
    pub operators: Vec<u32>,
    /// The console's listen address (`127.0.0.1:7325`), or none for no console.
    #[serde(default)]
    pub console: Option<String>,
    /// The origin the console is reached at (`http://localhost:7325`).
    #[serde(default)]
    pub console_origin: Option<String>,
    /// Whether a non-loopback console address is allowed (`[hitl] console_public`).
    #[serde(default)]
    pub console_public: bool,
    /// The chat master key (hex, 32 bytes): each connector's [`crate::chat::ChatKey`] is
    /// derived from it. Derived by the starter; never given to the kernel.
    #[serde(default)]
    pub chat_key: Option<String>,
    /// The connector plugins that relay approvals (each got its key when it was started).
    #[serde(default)]
    pub connectors: Vec<String>,
}

impl Drop for Start {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.spool_key);
        zeroize::Zeroize::zeroize(&mut self.state_key);
        if let Some(key) = &mut self.chat_key {
            zeroize::Zeroize::zeroize(key);
        }
        if let Some(key) = &mut self.previous_state_key {
            zeroize::Zeroize::zeroize(key);
        }
    }
}

/// What the daemon tells whoever started it, on its standard output, once it is up: one JSON
/// line. The login link goes to the operator's terminal, never to the kernel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Started {
    /// The console's address, if it runs.
    #[serde(default)]
    pub console: Option<String>,
    /// A one-time link into the console.
    #[serde(default)]
    pub login_link: Option<String>,
    /// Why the console does not run, when it was asked for.
    #[serde(default)]
    pub console_error: Option<String>,
    /// Whether the factor store was resealed under the new key.
    #[serde(default)]
    pub resealed: bool,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(link) = &mut self.login_link {
            zeroize::Zeroize::zeroize(link);
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
    /// A connector relayed a button press, sealed by it ([`crate::chat::Press`]); answered by
    /// [`ToKernel::ChatAnswer`] with the same `id`.
    ChatPress {
        /// Correlation, chosen by the kernel.
        id: u64,
        /// The connector plugin's configured name.
        connector: String,
        /// The sealed press.
        sealed: String,
    },
    /// A connector (re)registered: announce what still waits to it again.
    ChatResend {
        /// The connector plugin's configured name.
        connector: String,
    },
    /// Stop.
    Shutdown,
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
        /// The request (boxed: it dwarfs the other messages).
        request: Box<Request>,
        /// Its binding.
        binding: Binding,
        /// The factors that approved it.
        factors: Vec<String>,
        /// The owner's "remember this", for the kernel to mint a grant from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remember: Option<Remember>,
    },
    /// Relay this sealed [`crate::chat::Announcement`] to connector `connector`.
    ChatAnnounce {
        /// The connector plugin's configured name.
        connector: String,
        /// The sealed announcement.
        sealed: String,
    },
    /// The answer to [`ToDaemon::ChatPress`] `id`: a sealed [`crate::chat::PressAnswer`], or
    /// none when the daemon has no key for that connector (it cannot seal anything for it).
    ChatAnswer {
        /// The press's correlation id.
        id: u64,
        /// The sealed answer.
        #[serde(default)]
        sealed: Option<String>,
    },
    /// Not approved: denied, expired, pulled back or unreadable. The agent hears the same
    /// opaque answer for each.
    Refused {
        /// The id.
        id: String,
        /// Why (for the audit log).
        ending: Refusal,
    },
}

/// Why the daemon refused an item (for the audit log; the agent hears the same for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The operator said no.
    Denied,
    /// Nobody answered in time.
    Expired,
    /// Pulled back in its undo window.
    PulledBack,
    /// The kernel withdrew it.
    Withdrawn,
    /// Its staged file was unreadable or invalid.
    Invalid,
    /// Its spool file could not be moved.
    Spool,
    /// Its approved file could not be read back.
    Unreadable,
}

impl Refusal {
    /// The word, as the audit log shows it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::PulledBack => "pulled_back",
            Self::Withdrawn => "withdrawn",
            Self::Invalid => "invalid",
            Self::Spool => "spool",
            Self::Unreadable => "unreadable",
        }
    }
}
