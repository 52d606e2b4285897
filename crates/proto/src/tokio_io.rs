//! Frames over tokio streams (feature `tokio`): the async twin of [`crate::io`], built on the
//! same sans-IO [`FrameDecoder`].
//!
//! [`FrameReader`] calls [`FrameDecoder::finish`] when its stream ends, so a stream cut inside
//! a frame is [`ProtoError::Truncated`], never a clean end.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::{
    Envelope, FrameDecoder, ProtoError, decode, encode, encode_payload, from_slice_strict,
};

/// How much one read asks the stream for.
const READ_CHUNK: usize = 64 * 1024;

/// Reads length-prefixed frames from an async stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
    buf: Zeroizing<Vec<u8>>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader that refuses payloads over `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            decoder: FrameDecoder::new(max),
            buf: Zeroizing::new(vec![0u8; READ_CHUNK]),
        }
    }

    /// The next payload; `None` when the stream ends cleanly between frames. Wiped on drop:
    /// payloads may carry secrets.
    ///
    /// # Errors
    ///
    /// An oversized or empty frame, a stream that ends inside a frame, or a failed read.
    pub async fn read_payload(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, ProtoError> {
        loop {
            if let Some(payload) = self.decoder.next_frame()? {
                return Ok(Some(Zeroizing::new(payload)));
            }
            let n = self.inner.read(&mut self.buf).await?;
            if n == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
            self.decoder.push(self.buf.get(..n).unwrap_or_default());
        }
    }

    /// The next plugin-protocol message ([`decode`]); `None` at a clean end.
    ///
    /// # Errors
    ///
    /// As [`Self::read_payload`], and a payload that is not a valid message.
    pub async fn read_message(&mut self) -> Result<Option<Envelope>, ProtoError> {
        match self.read_payload().await? {
            Some(payload) => decode(&payload).map(Some),
            None => Ok(None),
        }
    }

    /// The next payload as `T`, parsed strictly ([`from_slice_strict`]); `None` at a clean
    /// end. For channels that frame their own JSON types the way the plugin protocol does.
    ///
    /// # Errors
    ///
    /// As [`Self::read_payload`], and a payload that is not a `T`.
    pub async fn read_json<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ProtoError> {
        match self.read_payload().await? {
            Some(payload) => from_slice_strict(&payload).map(Some),
            None => Ok(None),
        }
    }

    /// The stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Writes one already-serialised payload as a frame and flushes.
///
/// # Errors
///
/// An empty or oversized payload, or a failed write.
pub async fn write_payload<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
    max: usize,
) -> Result<(), ProtoError> {
    let frame = Zeroizing::new(encode_payload(payload, max)?);
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Writes one plugin-protocol message and flushes.
///
/// # Errors
///
/// As [`write_payload`], and a message that does not serialise.
pub async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    envelope: &Envelope,
    max: usize,
) -> Result<(), ProtoError> {
    let frame = Zeroizing::new(encode(envelope, max)?);
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Writes `value` as one JSON frame and flushes.
///
/// # Errors
///
/// As [`write_payload`], and a value that does not serialise.
pub async fn write_json<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    value: &T,
    max: usize,
) -> Result<(), ProtoError> {
    let payload =
        Zeroizing::new(serde_json::to_vec(value).map_err(|e| ProtoError::Invalid(e.to_string()))?);
    write_payload(writer, &payload, max).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::{Message, Ping};

    fn frame(id: u64) -> Vec<u8> {
        encode(&Envelope::new(id, Message::Ping(Ping {})), 1024).unwrap()
    }

    #[tokio::test]
    async fn invariant_i9_a_frame_cut_at_the_end_of_the_stream_is_an_error() {
        let mut bytes = frame(1);
        let whole = bytes.len();
        bytes.extend_from_slice(&frame(2));
        // The second frame loses its last byte, then the stream ends.
        bytes.pop();
        let mut reader = FrameReader::new(bytes.as_slice(), 1024);
        assert_eq!(reader.read_message().await.unwrap().unwrap().id, 1);
        let err = reader.read_message().await.unwrap_err();
        assert!(
            matches!(err, ProtoError::Truncated(n) if n == bytes.len() - whole),
            "{err}"
        );
        // A header cut short is no clean end either.
        let mut reader = FrameReader::new(&[0u8, 0][..], 1024);
        assert!(matches!(
            reader.read_payload().await,
            Err(ProtoError::Truncated(2))
        ));
    }

    #[tokio::test]
    async fn a_stream_that_ends_between_frames_ends_cleanly() {
        let mut bytes = frame(1);
        bytes.extend_from_slice(&frame(2));
        let mut reader = FrameReader::new(bytes.as_slice(), 1024);
        assert_eq!(reader.read_message().await.unwrap().unwrap().id, 1);
        assert_eq!(reader.read_message().await.unwrap().unwrap().id, 2);
        assert!(reader.read_message().await.unwrap().is_none());
        let mut empty = FrameReader::new(&[][..], 1024);
        assert!(empty.read_payload().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn invariant_i9_an_oversized_frame_is_refused_from_its_header() {
        // Only the header: the body is never waited for.
        let header = (1u32 << 20).to_be_bytes();
        let mut reader = FrameReader::new(&header[..], 1024);
        assert!(matches!(
            reader.read_payload().await,
            Err(ProtoError::FrameTooLarge { size, max: 1024 }) if size == 1 << 20
        ));
        let mut sink = Vec::new();
        assert!(matches!(
            write_payload(&mut sink, &[b'x'; 1025], 1024).await,
            Err(ProtoError::FrameTooLarge { .. })
        ));
        assert!(sink.is_empty());
    }

    #[tokio::test]
    async fn json_frames_round_trip_strictly() {
        #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Note {
            text: String,
        }
        let mut sink = Vec::new();
        let note = Note {
            text: "hello".to_owned(),
        };
        write_json(&mut sink, &note, 1024).await.unwrap();
        write_payload(&mut sink, br#"{"text":"a","text":"b"}"#, 1024)
            .await
            .unwrap();
        let mut reader = FrameReader::new(sink.as_slice(), 1024);
        assert_eq!(reader.read_json::<Note>().await.unwrap(), Some(note));
        // A repeated member is refused, as everywhere on the wire.
        assert!(reader.read_json::<Note>().await.is_err());
    }
}
