//! Blocking helpers over any `Read`/`Write`, for plugins that need no async runtime.

use std::io::{Read, Write};

use crate::{Envelope, HEADER_LEN, ProtoError, decode, encode};

/// Reads one message. `Ok(None)` when the stream ends cleanly between frames.
pub fn read_message<R: Read>(reader: &mut R, max: usize) -> Result<Option<Envelope>, ProtoError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let rest = header.get_mut(filled..).unwrap_or_default();
        match reader.read(rest) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(ProtoError::Truncated(filled)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let size = u32::from_be_bytes(header);
    let len = usize::try_from(size).unwrap_or(usize::MAX);
    if len > max {
        return Err(ProtoError::FrameTooLarge {
            size: u64::from(size),
            max,
        });
    }
    if len == 0 {
        return Err(ProtoError::EmptyFrame);
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtoError::Truncated(HEADER_LEN)
        } else {
            ProtoError::Io(e)
        }
    })?;
    decode(&payload).map(Some)
}

/// Writes one message and flushes.
pub fn write_message<W: Write>(
    writer: &mut W,
    envelope: &Envelope,
    max: usize,
) -> Result<(), ProtoError> {
    let frame = encode(envelope, max)?;
    writer.write_all(&frame)?;
    writer.flush()?;
    Ok(())
}
