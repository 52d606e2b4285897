//! The control socket (`run/control.sock`): how `p3ak chat`, `secret`, `status`,
//! `hitl rekey`, `policy apply` and `policy grants` talk to a running kernel. Frames as in the plugin protocol (4-byte length +
//! JSON); one request per connection, answered by one or more events, the last of which is
//! final. Only the operators' uids are served (checked with `SO_PEERCRED`). Approvals do not
//! come this way: they go to the approval daemon's own socket.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use p3ak_proto::FrameDecoder;
use serde::{Deserialize, Serialize};

use crate::broker::SecretInfo;
use crate::host::PluginStatus;
use crate::{ControlError, KernelError};

/// Largest control frame.
pub const MAX_CONTROL_FRAME: usize = 4 << 20;

/// A request to the kernel.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// A chat message; answered by notices and chunks, then a reply.
    Chat {
        /// The agent, or the default one.
        #[serde(default)]
        agent: Option<String>,
        /// The conversation.
        conversation: String,
        /// The text.
        text: String,
    },
    /// A board meeting: the question to several agents at once, then the board's synthesis;
    /// answered by approval notices, then the report.
    Board {
        /// The question.
        question: String,
        /// The members to ask (none: the board's own list).
        #[serde(default)]
        members: Vec<String>,
        /// The conversation it belongs to.
        conversation: String,
    },
    /// Events of the state bus whose topic matches.
    Bus {
        /// A topic pattern (`*`, `crest.*`, a topic).
        topic: String,
        /// Only events after this sequence number.
        #[serde(default)]
        after: Option<u64>,
        /// At most this many.
        limit: usize,
        /// The newest `limit` (a tail) rather than the oldest.
        #[serde(default)]
        newest: bool,
    },
    /// Start a CREST goal (docs/crest.md) and run its Focus phase; answered by notices, then
    /// the phase's report.
    CrestStart {
        /// The goal, in the owner's words.
        goal: String,
        /// Its id (none: from its first words).
        #[serde(default)]
        id: Option<String>,
        /// The agent that works on it (none: the default agent).
        #[serde(default)]
        agent: Option<String>,
    },
    /// Run a goal's next phase, or the one named; answered by notices, then the report.
    CrestNext {
        /// The goal.
        id: String,
        /// The phase, when not the goal's next.
        #[serde(default)]
        phase: Option<crate::crest::Phase>,
        /// The owner's note for the phase (say, this month's figure).
        #[serde(default)]
        note: Option<String>,
    },
    /// The goals, or the one named.
    CrestStatus {
        /// The goal.
        #[serde(default)]
        id: Option<String>,
    },
    /// Stage a rekey of the memory vault now, at the schedule's level; answered once it ran
    /// or was refused.
    Rekey,
    /// Store a secret.
    SecretSet {
        /// Its name.
        name: String,
        /// Its value (zeroized by the kernel after storing).
        value: String,
        /// Action patterns it may be used with.
        #[serde(default)]
        scopes: Vec<String>,
        /// Host patterns it may be sent to; none: unbound.
        #[serde(default)]
        hosts: Vec<String>,
    },
    /// Names, scopes and hosts of the secrets.
    SecretList,
    /// Plugins and pending approvals.
    Status,
    /// Check a new policy and, if it compiles, make it the running one and write it to
    /// `policy.yaml`; the old one stays on any error.
    PolicyApply {
        /// The policy file's text.
        text: String,
    },
    /// The remembered approvals (grants).
    GrantList,
    /// Revoke a grant.
    GrantRevoke {
        /// Its id.
        id: String,
    },
    /// The chat connectors, their pairings and the pairing codes waiting.
    Connectors,
    /// Pair the chat identity a pairing code was shown to.
    Pair {
        /// The code (`7G4K-Q2MD`; case, dashes and spaces do not matter).
        code: String,
    },
    /// End a pairing.
    Unpair {
        /// The identity (`telegram:7`).
        identity: String,
    },
    /// Make an API token.
    TokenCreate {
        /// What to call it.
        name: String,
        /// What it may do.
        scopes: Vec<String>,
        /// Seconds until it expires; none: never.
        #[serde(default)]
        expires_in: Option<u64>,
    },
    /// The API tokens.
    TokenList,
    /// Revoke an API token.
    TokenRevoke {
        /// Its id.
        id: String,
    },
    /// The schedules: each one's next run and last run.
    Schedules,
    /// Stop the kernel.
    Shutdown,
}

/// A secret shown once (a new API token): zeroized when dropped, never in `Debug`.
#[derive(Clone)]
pub struct ShownOnce(pub zeroize::Zeroizing<String>);

impl Serialize for ShownOnce {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ShownOnce {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(zeroize::Zeroizing::new(s)))
    }
}

impl std::fmt::Debug for ShownOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShownOnce(…)")
    }
}

impl Drop for ControlRequest {
    fn drop(&mut self) {
        if let Self::SecretSet { value, .. } = self {
            zeroize::Zeroize::zeroize(value);
        }
    }
}

/// The kernel's state, for `p3ak status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelStatus {
    /// The kernel's pid.
    pub pid: u32,
    /// Its home.
    pub home: String,
    /// The plugins.
    pub plugins: Vec<serde_json::Value>,
    /// What waits for approval.
    pub pending: usize,
    /// Agents by name.
    pub agents: Vec<String>,
    /// The approval daemon: pid, whether it runs, whether its console does.
    #[serde(default)]
    pub hitl: serde_json::Value,
    /// Tokens used since the start, summed over turns.
    pub usage: p3ak_proto::Usage,
    /// The same, by provider plugin.
    #[serde(default)]
    pub usage_by_provider: std::collections::BTreeMap<String, p3ak_proto::Usage>,
}

/// Tokens used since the kernel started.
#[derive(Debug, Clone, Default)]
pub(crate) struct UsageTotals {
    /// Over every provider.
    pub(crate) all: p3ak_proto::Usage,
    /// By provider plugin.
    pub(crate) by_provider: std::collections::BTreeMap<String, p3ak_proto::Usage>,
}

/// One event of an answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ControlEvent {
    /// Something the person should know mid-turn (an approval is needed).
    Notice {
        /// The text.
        text: String,
    },
    /// An approval is needed mid-turn: the chat may ask its operator right there.
    Approval {
        /// The escalation's id.
        id: String,
        /// Its level.
        level: u8,
        /// What to show.
        text: String,
        /// The policy's `notify:` channels for it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        notify: Vec<String>,
    },
    /// Part of the reply, as the model produces it.
    Chunk {
        /// The text.
        text: String,
    },
    /// The turn's reply (final).
    Reply {
        /// The text.
        text: String,
    },
    /// Secrets (final).
    Secrets {
        /// Names and scopes.
        items: Vec<SecretInfo>,
    },
    /// Status (final).
    Status(KernelStatus),
    /// A policy was applied (final).
    PolicyApplied {
        /// SHA-256 of its text (hex), as audited.
        sha256: String,
        /// How many rules it holds.
        rules: usize,
        /// Its warnings, one line each.
        warnings: Vec<String>,
    },
    /// The grants (final).
    Grants {
        /// Every grant, expired ones included.
        items: Vec<crate::grants::GrantRecord>,
        /// Now, seconds since the Unix epoch, to tell which have expired.
        now: i64,
    },
    /// The connectors (final).
    Connectors {
        /// Each connector.
        items: Vec<crate::connectors::ConnectorStatus>,
        /// Paired identities.
        paired: Vec<crate::connectors::Paired>,
        /// Codes shown and not yet confirmed.
        waiting: Vec<crate::connectors::Waiting>,
    },
    /// A token was made (final): the only time it is shown.
    TokenCreated {
        /// The token.
        token: ShownOnce,
        /// What it is.
        info: crate::tokens::TokenInfo,
    },
    /// The API tokens (final).
    Tokens {
        /// Each token.
        items: Vec<crate::tokens::TokenInfo>,
        /// Now, seconds since the Unix epoch, to tell which have expired.
        now: i64,
    },
    /// The schedules (final).
    Schedules {
        /// Each schedule, by name.
        items: Vec<crate::schedule::ScheduleStatus>,
    },
    /// An identity was paired (final).
    Paired(crate::connectors::Paired),
    /// A board meeting's report.
    Board(crate::harness::BoardReport),
    /// A CREST phase ran (final).
    CrestPhase(Box<crate::crest::PhaseReport>),
    /// CREST goals (final).
    Crest {
        /// By id.
        goals: Vec<crate::crest::Goal>,
    },
    /// Events of the state bus.
    Bus {
        /// Oldest first.
        events: Vec<crate::bus::Event>,
    },
    /// The request was done (final).
    Done {
        /// What was done.
        message: String,
    },
    /// The request failed (final).
    Error {
        /// Why.
        message: String,
    },
}

impl ControlEvent {
    /// Whether this ends the answer.
    #[must_use]
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            Self::Notice { .. } | Self::Chunk { .. } | Self::Approval { .. }
        )
    }
}

/// Converts host statuses to JSON rows.
pub(crate) fn plugin_rows(status: Vec<PluginStatus>) -> Vec<serde_json::Value> {
    status
        .into_iter()
        .filter_map(|s| serde_json::to_value(s).ok())
        .collect()
}

/// Sends one request to the kernel listening on `socket` and calls `on_event` for every event
/// until the final one, which it returns.
pub fn call(
    socket: &Path,
    request: &ControlRequest,
    mut on_event: impl FnMut(&ControlEvent),
) -> Result<ControlEvent, KernelError> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(KernelError::NotRunning {
                socket: socket.to_owned(),
            });
        }
        Err(e) => return Err(ControlError::Connect(e).into()),
    };
    let payload =
        zeroize::Zeroizing::new(serde_json::to_vec(request).map_err(ControlError::Encode)?);
    let frame = zeroize::Zeroizing::new(
        p3ak_proto::encode_payload(&payload, MAX_CONTROL_FRAME).map_err(ControlError::Frame)?,
    );
    stream.write_all(&frame).map_err(ControlError::Send)?;
    let mut decoder = FrameDecoder::new(MAX_CONTROL_FRAME);
    let mut buf = vec![0u8; 64 * 1024];
    // A chat turn may wait for an approval for as long as the policy says; no read timeout.
    stream
        .set_read_timeout(None::<Duration>)
        .map_err(ControlError::Socket)?;
    loop {
        while let Some(payload) = decoder.next_frame().map_err(ControlError::Frame)? {
            let event: ControlEvent =
                p3ak_proto::from_slice_strict(&payload).map_err(ControlError::Answer)?;
            if event.is_final() {
                return Ok(event);
            }
            on_event(&event);
        }
        let n = std::io::Read::read(&mut stream, &mut buf).map_err(ControlError::Read)?;
        if n == 0 {
            return Err(ControlError::Closed.into());
        }
        decoder.push(buf.get(..n).unwrap_or_default());
    }
}
