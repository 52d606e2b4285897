//! `p3ak-proto`: the wire protocol between the kernel and its plugins, without any I/O.
//!
//! A connection carries frames: a 4-byte big-endian length, then that many bytes of UTF-8
//! JSON, one object per frame. Every object has `v` (protocol version), `id` (correlation:
//! a reply carries the id of the message it answers) and `type`. [`FrameDecoder`] turns a
//! byte stream into frames and refuses one over the limit as soon as its header arrives;
//! [`encode`] and [`decode`] turn [`Envelope`]s into frames and back. `docs/protocol.md` is
//! the contract and `docs/schema/` holds the JSON Schemas.
//!
//! ```
//! use p3ak_proto::{Envelope, FrameDecoder, Message, Ping, DEFAULT_MAX_FRAME, decode, encode};
//!
//! let frame = encode(&Envelope::new(7, Message::Ping(Ping {})), DEFAULT_MAX_FRAME)?;
//! let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
//! decoder.push(&frame);
//! let payload = decoder.next_frame()?.expect("one whole frame");
//! assert_eq!(decode(&payload)?.id, 7);
//! # Ok::<(), p3ak_proto::ProtoError>(())
//! ```

#![forbid(unsafe_code)]

mod codec;
pub mod io;
mod message;
mod strict;
#[cfg(feature = "tokio")]
pub mod tokio_io;

pub use codec::{FrameDecoder, decode, encode, encode_payload};
pub use message::*;
pub use strict::from_slice_strict;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Versions this crate can speak, newest first.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];

/// The default largest frame payload, in bytes (1 MiB).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Length of a frame header.
pub const HEADER_LEN: usize = 4;

/// Picks the newest version both sides speak, if any.
#[must_use]
pub fn negotiate(offered: &[u32]) -> Option<u32> {
    SUPPORTED_VERSIONS
        .iter()
        .copied()
        .find(|v| offered.contains(v))
}

/// What can go wrong on the wire. Every variant ends the connection except where the
/// receiver chooses otherwise.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A frame announced more bytes than the limit.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced payload length.
        size: u64,
        /// The receiver's limit.
        max: usize,
    },
    /// A frame with an empty payload.
    #[error("empty frame")]
    EmptyFrame,
    /// The payload is not UTF-8 JSON.
    #[error("frame is not valid JSON: {0}")]
    Json(String),
    /// The payload is JSON but not a valid message.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// The message names a protocol version this side does not speak.
    #[error("unsupported protocol version {0}")]
    Version(u64),
    /// The stream ended inside a frame.
    #[error("connection closed mid-frame ({0} bytes buffered)")]
    Truncated(usize),
    /// The underlying stream failed (only from [`io`] and `tokio_io`).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
