// The check shared by the fuzz target `handshake` (fuzz/fuzz_targets/handshake.rs) and the
// unit test in `handshake.rs`, included by both so that they check the same thing. Expects in
// scope: `Envelope`, `FrameDecoder`, `Message`, `PluginKind` (p3ak_proto), `Handshake`,
// `Step` (handshake), `Registration`, `validate`, `MAX_ACTIONS`, `MAX_DESCRIPTION`
// (registration).

/// The plugin the handshakes are for.
const PLUGIN: &str = "files";

/// Largest frame, small so that oversized headers are common.
const MAX_FRAME: usize = 1 << 16;

/// What the checker knows of one handshake so far.
#[derive(Default)]
struct Seen {
    welcomed: bool,
    ended: bool,
    registered: bool,
}

/// Checks one step of the state machine against what it was fed.
fn check(seen: &mut Seen, fed: Option<&Envelope>, step: &Step) {
    if seen.ended {
        assert!(
            matches!(step, Step::Fail(_) | Step::Refuse(..)),
            "a step after the end: {step:?}"
        );
        return;
    }
    match step {
        Step::Send(reply) => {
            let Some(Envelope {
                id,
                message: Message::Hello(hello),
                ..
            }) = fed
            else {
                panic!("a welcome to something else than hello: {fed:?}");
            };
            assert!(!seen.welcomed, "welcomed twice");
            assert_eq!(hello.plugin, PLUGIN, "welcomed under another name");
            assert_eq!(reply.id, *id, "a welcome answers its hello");
            let Message::Welcome(welcome) = &reply.message else {
                panic!("sent {reply:?} instead of a welcome");
            };
            assert!(
                hello.versions.contains(&welcome.version)
                    && p3ak_proto::SUPPORTED_VERSIONS.contains(&welcome.version),
                "version {} is not common",
                welcome.version
            );
            seen.welcomed = true;
        }
        Step::Registered(reply, registration) => {
            assert!(seen.welcomed && !seen.registered, "registered without a welcome");
            let Some(Envelope {
                id,
                message: Message::Register(register),
                ..
            }) = fed
            else {
                panic!("registered on something else than register: {fed:?}");
            };
            assert_eq!(reply.id, *id, "`registered` answers its register");
            assert!(matches!(reply.message, Message::Registered(_)));
            // The host's own validation accepts it, with the same result...
            let again = validate(PLUGIN, register.clone());
            let Ok(again) = again else {
                panic!("registered what validation refuses: {again:?}");
            };
            let names = |r: &Registration| -> Vec<String> {
                r.actions.iter().map(|a| a.spec.name.clone()).collect()
            };
            assert_eq!(again.kind, registration.kind);
            assert_eq!(names(&again), names(registration));
            assert_eq!(registration.kind, register.kind);
            // ...and what it promises holds.
            assert!(registration.kind == PluginKind::Tool || registration.actions.is_empty());
            assert!(registration.actions.len() <= MAX_ACTIONS);
            let mut unique = std::collections::HashSet::new();
            for action in &registration.actions {
                let name = &action.spec.name;
                assert!(!name.contains('.') && !name.contains("__"), "{name}");
                assert!(
                    p3ak_policy::valid_action_name(&format!("{PLUGIN}.{name}")),
                    "{name}"
                );
                assert!(unique.insert(name.clone()), "{name} twice");
                assert!(action.spec.description.len() <= MAX_DESCRIPTION);
            }
            seen.registered = true;
            seen.ended = true;
        }
        Step::Refuse(reply, _) => {
            assert!(matches!(reply.message, Message::Error(_)), "{reply:?}");
            seen.ended = true;
        }
        Step::Fail(_) => seen.ended = true,
    }
}

/// A frame: the length header, then `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Runs `data` as a plugin's side of a connection through the handshake, as the host reads
/// it (frame decoder, then the strict message decoder), checking every step. The first byte
/// picks how: bit 0 puts a valid hello first, bit 1 frames each line of the rest itself (so
/// that JSON reaches the decoder), the rest is the size of each read. Returns whether the
/// plugin was registered.
fn run(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    let mut stream = Vec::new();
    if mode & 1 == 1 {
        stream.extend(frame(
            br#"{"v":1,"id":1,"type":"hello","plugin":"files","versions":[1]}"#,
        ));
    }
    if mode & 2 == 2 {
        for line in rest.split(|&b| b == b'\n') {
            stream.extend(frame(line));
        }
    } else {
        stream.extend_from_slice(rest);
    }
    let read = usize::from(mode >> 2).max(1);
    let mut handshake = Handshake::new(PLUGIN, serde_json::json!({"k": 1}), None);
    let mut seen = Seen::default();
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    for chunk in stream.chunks(read) {
        decoder.push(chunk);
        loop {
            let (fed, step) = match decoder.next_frame() {
                Ok(Some(payload)) => match p3ak_proto::decode(&payload) {
                    Ok(envelope) => {
                        let step = handshake.receive(Ok(Some(envelope.clone())));
                        (Some(envelope), step)
                    }
                    Err(e) => (None, handshake.receive(Err(e))),
                },
                Ok(None) => break,
                Err(e) => {
                    // A bad frame ends the connection.
                    let step = handshake.receive(Err(e));
                    check(&mut seen, None, &step);
                    return seen.registered;
                }
            };
            check(&mut seen, fed.as_ref(), &step);
            // The host stops at the end; carrying on checks that nothing more is accepted.
        }
    }
    let end = decoder.finish().map(|()| None);
    let step = handshake.receive(end);
    check(&mut seen, None, &step);
    seen.registered
}
