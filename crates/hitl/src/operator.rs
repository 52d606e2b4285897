//! The operator's own way to the approval daemon: a Unix socket in the daemon's directory
//! (`P3AK_HOME/hitl/operator.sock`). `p3ak pending`, `approve`, `deny` and `p3ak hitl …` send
//! one [`OperatorRequest`] per connection and read one [`OperatorAnswer`] — the kernel is not
//! on this path, so no factor (a yes, a PIN, a TOTP code) and no enrolment passes through it.
//!
//! The daemon checks every peer with `SO_PEERCRED`: only the operators' uids are served (the
//! user who started `p3ak up`, and those listed in `[hitl] operators`). When the kernel runs
//! under its own uid (as root: see the warden), that uid is never an operator, so a kernel
//! that is taken over cannot approve its own actions, mint a console link or read a TOTP
//! secret; every refused peer is audited.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use p3ak_proto::FrameDecoder;
use p3ak_proto::tokio_io::{FrameReader, write_json};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::HitlError;
use crate::desk::{Decided, View};
use crate::wire::MAX_FRAME;

/// Lets `id` (`telegram:7`) answer approvals from a chat, through the daemon at `socket`:
/// what `p3ak hitl approvers add` and `p3ak connectors pair` call. Returns the daemon's words.
pub fn add_approver(socket: &Path, id: &str) -> Result<String, HitlError> {
    match call(socket, &OperatorRequest::ApproversAdd { id: id.to_owned() })? {
        OperatorAnswer::Done { message } => Ok(message),
        OperatorAnswer::Error { message } => Err(HitlError::Refused { message }),
        _ => Err(HitlError::UnexpectedAnswer),
    }
}

/// The socket's file name in the daemon's directory.
pub const SOCKET: &str = "operator.sock";

/// How long a request may take (a PIN costs an Argon2id hash).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The operator socket of the daemon whose directory is `hitl_dir` (`P3AK_HOME/hitl`).
#[must_use]
pub fn socket_path(hitl_dir: &Path) -> PathBuf {
    hitl_dir.join(SOCKET)
}

/// Sends one request to the daemon at `socket` and returns its answer. An answer that is an
/// error stays an [`OperatorAnswer::Error`]: the caller decides how to show it.
pub fn call(socket: &Path, request: &OperatorRequest) -> Result<OperatorAnswer, HitlError> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(HitlError::NotRunning {
                socket: socket.to_owned(),
            });
        }
        Err(e) => {
            return Err(HitlError::Io {
                context: format!("cannot reach `{}`", socket.display()),
                source: e,
            });
        }
    };
    stream
        .set_read_timeout(Some(CALL_TIMEOUT))
        .map_err(HitlError::io("cannot set a timeout"))?;
    write_frame_blocking(&mut stream, request)?;
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    let mut buf = zeroize::Zeroizing::new(vec![0u8; 16 * 1024]);
    loop {
        if let Some(payload) = decoder
            .next_frame()
            .map_err(HitlError::frame("bad answer"))?
        {
            let payload = zeroize::Zeroizing::new(payload);
            return decode(&payload);
        }
        let n = stream
            .read(&mut buf)
            .map_err(HitlError::io("cannot read the daemon's answer"))?;
        if n == 0 {
            decoder.finish().map_err(HitlError::frame("bad answer"))?;
            return Err(HitlError::ClosedWithoutAnswer);
        }
        decoder.push(buf.get(..n).unwrap_or_default());
    }
}

fn write_frame_blocking<T: Serialize>(
    stream: &mut UnixStream,
    message: &T,
) -> Result<(), HitlError> {
    let payload = zeroize::Zeroizing::new(serde_json::to_vec(message).map_err(HitlError::Encode)?);
    let frame = zeroize::Zeroizing::new(
        p3ak_proto::encode_payload(&payload, MAX_FRAME).map_err(HitlError::FrameSize)?,
    );
    stream
        .write_all(&frame)
        .map_err(HitlError::io("cannot send to the approval daemon"))
}

pub(crate) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, HitlError> {
    p3ak_proto::from_slice_strict(payload).map_err(HitlError::frame("bad message"))
}

/// Who is on the other end of an operator connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its uid.
    pub uid: u32,
    /// Its pid, when the kernel says.
    pub pid: Option<i32>,
}

impl Peer {
    /// How approvals name the channel: `cli uid=1000 pid=4242`.
    #[must_use]
    pub fn channel(&self) -> String {
        match self.pid {
            Some(pid) => format!("cli uid={} pid={pid}", self.uid),
            None => format!("cli uid={}", self.uid),
        }
    }
}

/// Reads one request from an accepted connection (within `CALL_TIMEOUT`).
pub(crate) async fn read_request(
    stream: &mut tokio::net::UnixStream,
) -> Result<OperatorRequest, HitlError> {
    let mut reader = FrameReader::new(stream, MAX_FRAME);
    let read = async {
        reader
            .read_json::<OperatorRequest>()
            .await
            .map_err(HitlError::frame("bad request"))?
            .ok_or(HitlError::ClosedBeforeRequest)
    };
    tokio::time::timeout(CALL_TIMEOUT, read)
        .await
        .map_err(|_| HitlError::RequestTimeout)?
}

/// Writes one answer.
pub(crate) async fn write_answer(
    stream: &mut tokio::net::UnixStream,
    answer: &OperatorAnswer,
) -> Result<(), HitlError> {
    write_json(stream, answer, MAX_FRAME)
        .await
        .map_err(HitlError::frame("cannot answer"))
}

/// An operator's request to the daemon, on the operator socket (this module).
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
        /// Allow calls like this one for a while (`--remember ARG --for 30d`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remember: Option<crate::remember::Remember>,
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
    /// Who may answer approvals from a chat.
    Approvers,
    /// Let `id` (`telegram:7`) answer approvals from a chat.
    ApproversAdd {
        /// `NAME:<platform user id>`.
        id: String,
    },
    /// No longer let `id` answer approvals from a chat.
    ApproversRemove {
        /// `NAME:<platform user id>`.
        id: String,
    },
}

impl OperatorRequest {
    /// The request's name, for the audit log (never its factors).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approve { .. } => "approve",
            Self::Deny { .. } => "deny",
            Self::PullBack { .. } => "pull_back",
            Self::History => "history",
            Self::PinSet { .. } => "pin_set",
            Self::TotpEnroll { .. } => "totp_enroll",
            Self::TotpConfirm { .. } => "totp_confirm",
            Self::Login => "login",
            Self::Factors => "factors",
            Self::Approvers => "approvers",
            Self::ApproversAdd { .. } => "approvers_add",
            Self::ApproversRemove { .. } => "approvers_remove",
        }
    }
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
    /// Who may answer approvals from a chat.
    Approvers {
        /// `NAME:<platform user id>`, sorted.
        approvers: Vec<String>,
    },
    /// Failed.
    Error {
        /// Why.
        message: String,
    },
}
