//! Properties of the frame codec: no input makes it panic, every message survives a round
//! trip, and a byte stream cut anywhere reassembles into the same messages.

use p3ak_proto::{
    ActionSpec, Approval, ApprovalPress, Attachment, ChatMessage, DEFAULT_MAX_FRAME, Envelope,
    ErrorKind, ErrorMessage, FrameDecoder, HEADER_LEN, Hello, Inbound, InferenceRequest,
    InferenceResponse, Invoke, Message, Outbound, Ping, PluginKind, Pong, ProtoError, Register,
    Registered, Role, Shutdown, StopReason, StreamChunk, Tier, ToolCall, ToolDefinition,
    ToolResult, Usage, Welcome, decode, encode,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use serde_json::Value;

/// Any text, control characters and astral planes included.
fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

/// JSON without floats (which need not survive a text round trip exactly).
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((text(), inner), 0..4).prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    vec((text(), json()), 0..4).prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
}

fn tier() -> impl Strategy<Value = Tier> {
    prop_oneof![Just(Tier::Observe), Just(Tier::Act), Just(Tier::Commit)]
}

fn kind() -> impl Strategy<Value = PluginKind> {
    prop_oneof![
        Just(PluginKind::Connector),
        Just(PluginKind::Tool),
        Just(PluginKind::Provider)
    ]
}

fn error_kind() -> impl Strategy<Value = ErrorKind> {
    prop_oneof![
        Just(ErrorKind::Transient),
        Just(ErrorKind::Permanent),
        Just(ErrorKind::RateLimited),
        Just(ErrorKind::Auth),
        Just(ErrorKind::Invalid),
        Just(ErrorKind::Rejected),
    ]
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::User), Just(Role::Assistant), Just(Role::Tool)]
}

fn stop() -> impl Strategy<Value = StopReason> {
    prop_oneof![
        Just(StopReason::EndTurn),
        Just(StopReason::ToolUse),
        Just(StopReason::MaxTokens),
        Just(StopReason::Refusal),
    ]
}

fn tool_call() -> impl Strategy<Value = ToolCall> {
    (text(), text(), object()).prop_map(|(id, name, arguments)| ToolCall {
        id,
        name,
        arguments,
    })
}

fn chat_message() -> impl Strategy<Value = ChatMessage> {
    (role(), text(), vec(tool_call(), 0..3), option::of(text())).prop_map(
        |(role, content, tool_calls, tool_call_id)| ChatMessage {
            role,
            content,
            tool_calls,
            tool_call_id,
        },
    )
}

fn action() -> impl Strategy<Value = ActionSpec> {
    (text(), text(), object(), tier()).prop_map(|(name, description, parameters, tier)| {
        ActionSpec {
            name,
            description,
            parameters,
            tier,
        }
    })
}

/// Any message of any type.
fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (text(), vec(any::<u32>(), 0..4), option::of(text())).prop_map(
            |(plugin, versions, software)| Message::Hello(Hello {
                plugin,
                versions,
                software
            })
        ),
        (any::<u32>(), json()).prop_map(|(version, config)| Message::Welcome(Welcome {
            version,
            config,
            key: None,
        })),
        (kind(), vec(action(), 0..3))
            .prop_map(|(kind, actions)| Message::Register(Register { kind, actions })),
        Just(Message::Registered(Registered {})),
        (text(), text(), json(), option::of(any::<u64>())).prop_map(
            |(agent, action, args, deadline_ms)| Message::Invoke(Invoke {
                agent,
                action,
                args,
                deadline_ms
            })
        ),
        json().prop_map(|output| Message::Result(ToolResult { output })),
        text().prop_map(|text| Message::StreamChunk(StreamChunk { text })),
        (error_kind(), text(), option::of(any::<u64>())).prop_map(
            |(kind, message, retry_after_ms)| Message::Error(ErrorMessage {
                kind,
                message,
                retry_after_ms
            })
        ),
        (
            (text(), text(), text(), option::of(text())),
            (option::of(text()), option::of(text()), any::<bool>()),
            vec(
                (text(), text(), any::<u64>(), option::of(text())).prop_map(
                    |(name, media_type, size, data)| Attachment {
                        name,
                        media_type,
                        size,
                        data
                    }
                ),
                0..2
            ),
        )
            .prop_map(
                |(
                    (conversation, sender, text, agent),
                    (message_id, sender_name, direct),
                    attachments,
                )| {
                    Message::Inbound(Inbound {
                        conversation,
                        sender,
                        text,
                        agent,
                        message_id,
                        sender_name,
                        direct,
                        attachments,
                    })
                }
            ),
        (text(), text(), option::of(text()), any::<bool>()).prop_map(
            |(conversation, text, edit, partial)| Message::Outbound(Outbound {
                conversation,
                text,
                edit,
                partial
            })
        ),
        text().prop_map(|sealed| Message::Approval(Approval { sealed })),
        text().prop_map(|sealed| Message::ApprovalPress(ApprovalPress { sealed })),
        (
            option::of(text()),
            text(),
            vec(chat_message(), 0..3),
            vec(
                (text(), text(), object()).prop_map(|(name, description, parameters)| {
                    ToolDefinition {
                        name,
                        description,
                        parameters,
                    }
                }),
                0..3
            ),
            any::<bool>()
        )
            .prop_map(|(model, system, messages, tools, stream)| {
                Message::InferenceRequest(InferenceRequest {
                    model,
                    system,
                    messages,
                    tools,
                    stream,
                    credential: None,
                })
            }),
        (
            text(),
            vec(tool_call(), 0..3),
            stop(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(content, tool_calls, stop, input_tokens, output_tokens)| {
                Message::InferenceResponse(InferenceResponse {
                    content,
                    tool_calls,
                    stop,
                    usage: Usage {
                        input_tokens,
                        output_tokens,
                    },
                })
            }),
        Just(Message::Ping(Ping {})),
        Just(Message::Pong(Pong {})),
        Just(Message::Shutdown(Shutdown {})),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (any::<u64>(), message()).prop_map(|(id, message)| Envelope::new(id, message))
}

/// Feeds `chunks` in order and decodes every whole frame; stops at the first error, as a
/// receiver that closes the connection would.
fn drain(decoder: &mut FrameDecoder, chunks: &[&[u8]]) -> Result<Vec<Envelope>, ProtoError> {
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(payload) = decoder.next_frame()? {
            out.push(decode(&payload)?);
        }
    }
    decoder.finish()?;
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        chunks in vec(vec(any::<u8>(), 0..64), 0..8),
        max in 0usize..96,
    ) {
        let mut decoder = FrameDecoder::new(max);
        for chunk in &chunks {
            decoder.push(chunk);
            loop {
                match decoder.next_frame() {
                    Ok(Some(payload)) => {
                        prop_assert!(!payload.is_empty() && payload.len() <= max);
                        let _ = decode(&payload);
                    }
                    Ok(None) => break,
                    // An error repeats until the caller gives up: nothing is skipped silently.
                    Err(_) => {
                        prop_assert!(decoder.next_frame().is_err());
                        break;
                    }
                }
            }
        }
        let _ = decoder.finish();
    }

    #[test]
    fn framed_garbage_never_panics(payloads in vec(vec(any::<u8>(), 1..48), 1..6)) {
        // Well-framed payloads of arbitrary bytes reach `decode`, which must answer, not panic.
        let mut decoder = FrameDecoder::new(64);
        for payload in &payloads {
            decoder.push(&p3ak_proto::encode_payload(payload, 64).unwrap());
            let got = decoder.next_frame().unwrap().unwrap();
            prop_assert_eq!(&got, payload);
            let _ = decode(&got);
        }
    }

    #[test]
    fn messages_round_trip(envelope in envelope()) {
        let frame = encode(&envelope, DEFAULT_MAX_FRAME).unwrap();
        let len = u32::from_be_bytes(frame[..HEADER_LEN].try_into().unwrap()) as usize;
        prop_assert_eq!(len, frame.len() - HEADER_LEN);
        prop_assert_eq!(&decode(&frame[HEADER_LEN..]).unwrap(), &envelope);
        let mut reader = std::io::Cursor::new(&frame);
        let read = p3ak_proto::io::read_message(&mut reader, DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(read.as_ref(), Some(&envelope));
        prop_assert!(p3ak_proto::io::read_message(&mut reader, DEFAULT_MAX_FRAME).unwrap().is_none());
        // A limit one byte short of the payload refuses it on both sides.
        let short = frame.len() - HEADER_LEN - 1;
        prop_assert!(
            matches!(encode(&envelope, short), Err(ProtoError::FrameTooLarge { .. })),
            "encode refuses it"
        );
        let mut decoder = FrameDecoder::new(short);
        decoder.push(&frame[..HEADER_LEN]);
        prop_assert!(
            matches!(decoder.next_frame(), Err(ProtoError::FrameTooLarge { .. })),
            "refused from the header alone"
        );
    }

}

proptest! {
    // Each case decodes the whole stream once per byte of it: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn streams_split_anywhere_reassemble(envelopes in vec(envelope(), 1..4)) {
        let stream: Vec<u8> = envelopes
            .iter()
            .flat_map(|e| encode(e, DEFAULT_MAX_FRAME).unwrap())
            .collect();
        for cut in 0..=stream.len() {
            let (head, tail) = stream.split_at(cut);
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
            prop_assert_eq!(&drain(&mut decoder, &[head, tail]).unwrap(), &envelopes, "cut at {}", cut);
        }
        // A stream cut short is reported by `finish`, never taken for whole messages.
        if let Some(short) = stream.len().checked_sub(1) {
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
            prop_assert!(
                matches!(drain(&mut decoder, &[&stream[..short]]), Err(ProtoError::Truncated(_))),
                "a truncated stream is an error"
            );
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn streams_in_random_chunks_reassemble(
        envelopes in vec(envelope(), 1..6),
        sizes in vec(1usize..32, 1..64),
    ) {
        let stream: Vec<u8> = envelopes
            .iter()
            .flat_map(|e| encode(e, DEFAULT_MAX_FRAME).unwrap())
            .collect();
        let mut chunks = Vec::new();
        let mut at = 0;
        for size in sizes.iter().cycle() {
            if at >= stream.len() {
                break;
            }
            let end = (at + size).min(stream.len());
            chunks.push(&stream[at..end]);
            at = end;
        }
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        prop_assert_eq!(&drain(&mut decoder, &chunks).unwrap(), &envelopes);
    }
}

#[test]
fn empty_and_oversized_frames_are_refused() {
    let mut decoder = FrameDecoder::new(8);
    decoder.push(&[0, 0, 0, 0]);
    assert!(matches!(decoder.next_frame(), Err(ProtoError::EmptyFrame)));
    assert!(matches!(
        p3ak_proto::encode_payload(b"", 8),
        Err(ProtoError::EmptyFrame)
    ));
    let mut decoder = FrameDecoder::new(8);
    decoder.push(&[0, 0, 0, 9]);
    assert!(matches!(
        decoder.next_frame(),
        Err(ProtoError::FrameTooLarge { size: 9, max: 8 })
    ));
    let mut reader = std::io::Cursor::new([0u8, 0, 0, 9, 1, 2, 3]);
    assert!(matches!(
        p3ak_proto::io::read_message(&mut reader, 8),
        Err(ProtoError::FrameTooLarge { size: 9, max: 8 })
    ));
}

#[test]
fn a_credential_travels_as_a_string_and_never_debug_prints() {
    let request = InferenceRequest {
        model: None,
        system: String::new(),
        messages: Vec::new(),
        tools: Vec::new(),
        stream: false,
        credential: Some(p3ak_proto::Credential::new(
            "sk-live-abcdef123456".to_owned(),
        )),
    };
    let envelope = Envelope::new(7, Message::InferenceRequest(request));
    let frame = encode(&envelope, DEFAULT_MAX_FRAME).unwrap();
    let text = String::from_utf8_lossy(&frame[HEADER_LEN..]).into_owned();
    assert!(
        text.contains(r#""credential":"sk-live-abcdef123456""#),
        "{text}"
    );
    assert_eq!(decode(&frame[HEADER_LEN..]).unwrap(), envelope);
    let shown = format!("{envelope:?}");
    assert!(!shown.contains("sk-live"), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
}
