//! Frames: length-prefixed JSON.

use crate::{
    Envelope, HEADER_LEN, Message, PROTOCOL_VERSION, ProtoError, SUPPORTED_VERSIONS,
    from_slice_strict,
};

/// Splits a byte stream into frame payloads. Push bytes as they arrive; pull whole payloads.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder that refuses payloads over `max` bytes.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            max,
            buf: Vec::new(),
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole payload, `None` if more bytes are needed. An oversized or empty frame
    /// is an error as soon as its header is seen, before its body is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtoError> {
        let Some(header) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut len = [0u8; HEADER_LEN];
        len.copy_from_slice(header);
        let size = u32::from_be_bytes(len);
        let size_usize = usize::try_from(size).map_err(|_| ProtoError::FrameTooLarge {
            size: u64::from(size),
            max: self.max,
        })?;
        if size_usize > self.max {
            return Err(ProtoError::FrameTooLarge {
                size: u64::from(size),
                max: self.max,
            });
        }
        if size == 0 {
            return Err(ProtoError::EmptyFrame);
        }
        let end = HEADER_LEN + size_usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let payload = self.buf.get(HEADER_LEN..end).map(<[u8]>::to_vec);
        self.buf.drain(..end);
        Ok(payload)
    }

    /// Call when the stream ends: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), ProtoError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::Truncated(self.buf.len()))
        }
    }
}

/// Encodes a message as one frame (header included), refusing one over `max` bytes.
pub fn encode(envelope: &Envelope, max: usize) -> Result<Vec<u8>, ProtoError> {
    let mut object = serde_json::Map::new();
    object.insert("v".to_owned(), envelope.v.into());
    object.insert("id".to_owned(), envelope.id.into());
    let body =
        serde_json::to_value(&envelope.message).map_err(|e| ProtoError::Invalid(e.to_string()))?;
    match body {
        serde_json::Value::Object(fields) => object.extend(fields),
        _ => return Err(ProtoError::Invalid("message is not an object".to_owned())),
    }
    let payload = serde_json::to_vec(&serde_json::Value::Object(object))
        .map_err(|e| ProtoError::Invalid(e.to_string()))?;
    encode_payload(&payload, max)
}

/// Frames an already-serialised payload.
pub fn encode_payload(payload: &[u8], max: usize) -> Result<Vec<u8>, ProtoError> {
    if payload.is_empty() {
        return Err(ProtoError::EmptyFrame);
    }
    let too_large = || ProtoError::FrameTooLarge {
        size: payload.len() as u64,
        max,
    };
    if payload.len() > max {
        return Err(too_large());
    }
    let len = u32::try_from(payload.len()).map_err(|_| too_large())?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Decodes one frame payload. Strict: unknown types and unknown fields are errors, and so are
/// a member name repeated in any object (see [`from_slice_strict`]) and a version this side
/// does not speak.
pub fn decode(payload: &[u8]) -> Result<Envelope, ProtoError> {
    std::str::from_utf8(payload).map_err(|e| ProtoError::Json(e.to_string()))?;
    let value: serde_json::Value = from_slice_strict(payload)?;
    let serde_json::Value::Object(mut object) = value else {
        return Err(ProtoError::Invalid(
            "a message must be a JSON object".to_owned(),
        ));
    };
    let v = match object.remove("v") {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| ProtoError::Invalid("`v` must be a positive integer".to_owned()))?,
        Some(_) => return Err(ProtoError::Invalid("`v` must be an integer".to_owned())),
        None => return Err(ProtoError::Invalid("missing `v`".to_owned())),
    };
    let version = u32::try_from(v).map_err(|_| ProtoError::Version(v))?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(ProtoError::Version(v));
    }
    let id = match object.remove("id") {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| ProtoError::Invalid("`id` must be a non-negative integer".to_owned()))?,
        Some(_) => return Err(ProtoError::Invalid("`id` must be an integer".to_owned())),
        None => return Err(ProtoError::Invalid("missing `id`".to_owned())),
    };
    let message: Message = serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| ProtoError::Invalid(e.to_string()))?;
    Ok(Envelope {
        v: version,
        id,
        message,
    })
}

impl Envelope {
    /// A message at the current protocol version.
    #[must_use]
    pub fn new(id: u64, message: Message) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, ErrorMessage, Ping, ToolResult};

    #[test]
    fn round_trip_in_pieces() {
        let frame = encode(&Envelope::new(3, Message::Ping(Ping {})), 1024).unwrap();
        let mut decoder = FrameDecoder::new(1024);
        for byte in &frame {
            assert!(decoder.next_frame().unwrap().is_none());
            decoder.push(std::slice::from_ref(byte));
        }
        let payload = decoder.next_frame().unwrap().unwrap();
        assert_eq!(decode(&payload).unwrap().id, 3);
        decoder.finish().unwrap();
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut decoder = FrameDecoder::new(16);
        decoder.push(&(2u32 << 30).to_be_bytes());
        assert!(matches!(
            decoder.next_frame(),
            Err(ProtoError::FrameTooLarge { size, max: 16 }) if size == 2 << 30
        ));
        assert!(encode_payload(&[b'x'; 17], 16).is_err());
    }

    #[test]
    fn strict_decoding() {
        let bad: &[&[u8]] = &[
            b"not json",
            b"[1]",
            br#"{"id":1,"type":"ping"}"#,
            br#"{"v":1,"type":"ping"}"#,
            br#"{"v":99,"id":1,"type":"ping"}"#,
            br#"{"v":1,"id":1,"type":"teleport"}"#,
            br#"{"v":1,"id":1,"type":"ping","extra":true}"#,
            br#"{"v":1,"id":-1,"type":"ping"}"#,
            b"\xff\xfe",
        ];
        for payload in bad {
            assert!(
                decode(payload).is_err(),
                "{:?}",
                String::from_utf8_lossy(payload)
            );
        }
        let ok = decode(br#"{"v":1,"id":9,"type":"error","kind":"rate_limited","message":"slow down","retry_after_ms":500}"#).unwrap();
        assert!(matches!(
            ok.message,
            Message::Error(ErrorMessage {
                kind: ErrorKind::RateLimited,
                retry_after_ms: Some(500),
                ..
            })
        ));
        let result = decode(br#"{"v":1,"id":2,"type":"result","output":{"n":1}}"#).unwrap();
        assert!(matches!(result.message, Message::Result(ToolResult { .. })));
    }

    #[test]
    fn negotiation_picks_a_common_version() {
        assert_eq!(crate::negotiate(&[3, 1]), Some(1));
        assert_eq!(crate::negotiate(&[2]), None);
    }
}
