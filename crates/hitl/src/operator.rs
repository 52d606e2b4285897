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
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::HitlError;
use crate::wire::{MAX_FRAME, OperatorAnswer, OperatorRequest};

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
            .map_err(|e| HitlError::Daemon(format!("bad answer: {e}")))?
        {
            let payload = zeroize::Zeroizing::new(payload);
            return decode(&payload);
        }
        let n = stream
            .read(&mut buf)
            .map_err(HitlError::io("cannot read the daemon's answer"))?;
        if n == 0 {
            decoder
                .finish()
                .map_err(|e| HitlError::Daemon(format!("bad answer: {e}")))?;
            return Err(HitlError::Daemon(
                "the approval daemon closed the connection without answering".to_owned(),
            ));
        }
        decoder.push(buf.get(..n).unwrap_or_default());
    }
}

fn write_frame_blocking<T: Serialize>(
    stream: &mut UnixStream,
    message: &T,
) -> Result<(), HitlError> {
    let payload = zeroize::Zeroizing::new(
        serde_json::to_vec(message).map_err(|e| HitlError::Daemon(e.to_string()))?,
    );
    let frame = zeroize::Zeroizing::new(
        p3ak_proto::encode_payload(&payload, MAX_FRAME)
            .map_err(|e| HitlError::Daemon(e.to_string()))?,
    );
    stream
        .write_all(&frame)
        .map_err(HitlError::io("cannot send to the approval daemon"))
}

pub(crate) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, HitlError> {
    p3ak_proto::from_slice_strict(payload)
        .map_err(|e| HitlError::Daemon(format!("bad message: {e}")))
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
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    let mut buf = zeroize::Zeroizing::new(vec![0u8; 16 * 1024]);
    let read = async {
        loop {
            if let Some(payload) = decoder
                .next_frame()
                .map_err(|e| HitlError::Daemon(format!("bad request: {e}")))?
            {
                let payload = zeroize::Zeroizing::new(payload);
                return decode::<OperatorRequest>(&payload);
            }
            let n = stream
                .read(&mut buf)
                .await
                .map_err(HitlError::io("cannot read the request"))?;
            if n == 0 {
                decoder
                    .finish()
                    .map_err(|e| HitlError::Daemon(format!("bad request: {e}")))?;
                return Err(HitlError::Daemon(
                    "the connection closed before a request".to_owned(),
                ));
            }
            decoder.push(buf.get(..n).unwrap_or_default());
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, read)
        .await
        .map_err(|_| HitlError::Daemon("no request in time".to_owned()))?
}

/// Writes one answer.
pub(crate) async fn write_answer(
    stream: &mut tokio::net::UnixStream,
    answer: &OperatorAnswer,
) -> Result<(), HitlError> {
    let payload = zeroize::Zeroizing::new(
        serde_json::to_vec(answer).map_err(|e| HitlError::Daemon(e.to_string()))?,
    );
    let frame = zeroize::Zeroizing::new(
        p3ak_proto::encode_payload(&payload, MAX_FRAME)
            .map_err(|e| HitlError::Daemon(e.to_string()))?,
    );
    stream
        .write_all(&frame)
        .await
        .map_err(HitlError::io("cannot answer"))
}
