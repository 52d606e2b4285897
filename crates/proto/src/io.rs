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
    // An `invoke` carries injected secrets: wipe the raw bytes once decoded.
    let mut payload = zeroize::Zeroizing::new(vec![0u8; len]);
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

/// Takes the connection a process was started with on its standard input (a plugin's to the
/// kernel, the approval daemon's), and puts `/dev/null` in its place, so that programs the
/// process starts do not inherit the connection. The returned descriptor is close-on-exec.
///
/// # Errors
///
/// When standard input is not a socket (the process was not started by the kernel), or the
/// descriptor cannot be duplicated.
pub fn take_stdin_socket() -> Result<std::os::fd::OwnedFd, ProtoError> {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let stat = rustix::fs::fstat(stdin.as_fd()).map_err(std::io::Error::from)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Err(ProtoError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "standard input is not a socket: this program is started by the p3ak kernel, \
             which hands it its connection there",
        )));
    }
    let connection = stdin.as_fd().try_clone_to_owned()?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null).map_err(std::io::Error::from)?;
    Ok(connection)
}
