//! The kernel's side of a plugin's handshake as a sans-IO state machine: frames in, frames to
//! send and an outcome out. `hello` (the name it was started as, a common protocol version) →
//! `welcome` (its settings, and its key if it serves encrypted data) → `register` (checked) →
//! `registered`. The connection task feeds it; the fuzz target `handshake` feeds it anything.

use p3ak_proto::{
    Credential, Envelope, ErrorKind, ErrorMessage, Message, ProtoError, Registered, Welcome,
};

use super::registration::{self, Registration, RegistrationError};

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The connection ended first.
    #[error("closed the connection before `{0}`")]
    Closed(&'static str),
    /// Another message came first.
    #[error("sent `{got}` instead of `{expected}`")]
    OutOfOrder {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// It said hello under another name.
    #[error("said hello as `{said}`, but was started as `{started}`")]
    WrongName {
        /// The name in `hello`.
        said: String,
        /// The configured name.
        started: String,
    },
    /// No protocol version in common.
    #[error("speaks protocol versions {0:?}, the kernel {kernel:?}", kernel = p3ak_proto::SUPPORTED_VERSIONS)]
    NoCommonVersion(Vec<u32>),
    /// Its registration was refused.
    #[error("invalid registration: {0}")]
    Registration(#[from] RegistrationError),
    /// A frame that is not a message.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Nothing came in time.
    #[error("no `{0}` in time")]
    Timeout(&'static str),
}

/// What the driver does next.
#[derive(Debug)]
pub enum Step {
    /// Send this, then feed the next frame.
    Send(Envelope),
    /// Send this, and the plugin is registered.
    Registered(Envelope, Registration),
    /// Send this (an error telling the plugin why), and give up.
    Refuse(Envelope, HandshakeError),
    /// Give up.
    Fail(HandshakeError),
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("kind", &self.kind)
            .field("actions", &self.actions.len())
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Hello,
    Register,
    Done,
}

/// One plugin's handshake.
pub struct Handshake {
    plugin: String,
    config: serde_json::Value,
    key: Option<Credential>,
    expect: Expect,
}

impl Handshake {
    /// The handshake of the plugin configured as `plugin`, to be welcomed with `config` (and
    /// `key`, for a plugin serving encrypted data).
    #[must_use]
    pub fn new(plugin: &str, config: serde_json::Value, key: Option<Credential>) -> Self {
        Self {
            plugin: plugin.to_owned(),
            config,
            key,
            expect: Expect::Hello,
        }
    }

    /// The message it waits for.
    #[must_use]
    pub fn expected(&self) -> &'static str {
        match self.expect {
            Expect::Hello => "hello",
            Expect::Register | Expect::Done => "register",
        }
    }

    /// Feeds what the connection gave: a message, the end of the stream, or a bad frame.
    pub fn receive(&mut self, frame: Result<Option<Envelope>, ProtoError>) -> Step {
        let expected = self.expected();
        let envelope = match frame {
            Ok(Some(envelope)) => envelope,
            Ok(None) => return self.fail(HandshakeError::Closed(expected)),
            Err(ProtoError::Version(v)) => {
                // A newer plugin deserves to hear why it is turned away.
                self.expect = Expect::Done;
                return Step::Refuse(
                    error(0, "unsupported protocol version"),
                    HandshakeError::Protocol(format!("unsupported protocol version {v}")),
                );
            }
            Err(e) => return self.fail(HandshakeError::Protocol(e.to_string())),
        };
        let id = envelope.id;
        match (self.expect, envelope.message) {
            (Expect::Hello, Message::Hello(hello)) => {
                if hello.plugin != self.plugin {
                    self.expect = Expect::Done;
                    return Step::Refuse(
                        error(id, "wrong plugin name"),
                        HandshakeError::WrongName {
                            said: hello.plugin,
                            started: self.plugin.clone(),
                        },
                    );
                }
                let Some(version) = p3ak_proto::negotiate(&hello.versions) else {
                    self.expect = Expect::Done;
                    return Step::Refuse(
                        error(id, "no common protocol version"),
                        HandshakeError::NoCommonVersion(hello.versions),
                    );
                };
                self.expect = Expect::Register;
                Step::Send(Envelope::new(
                    id,
                    Message::Welcome(Welcome {
                        version,
                        config: std::mem::take(&mut self.config),
                        key: self.key.take(),
                    }),
                ))
            }
            (Expect::Register, Message::Register(register)) => {
                self.expect = Expect::Done;
                match registration::validate(&self.plugin, register) {
                    Ok(registration) => Step::Registered(
                        Envelope::new(id, Message::Registered(Registered {})),
                        registration,
                    ),
                    Err(e) => Step::Refuse(error(id, &e.to_string()), e.into()),
                }
            }
            (Expect::Done, _) => self.fail(HandshakeError::Protocol(
                "a message after the handshake ended".to_owned(),
            )),
            (_, other) => self.fail(HandshakeError::OutOfOrder {
                expected,
                got: other.type_name(),
            }),
        }
    }

    fn fail(&mut self, error: HandshakeError) -> Step {
        self.expect = Expect::Done;
        Step::Fail(error)
    }
}

fn error(id: u64, message: &str) -> Envelope {
    Envelope::new(
        id,
        Message::Error(ErrorMessage {
            kind: ErrorKind::Invalid,
            message: message.to_owned(),
            retry_after_ms: None,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use p3ak_proto::{Hello, PluginKind, Register};

    fn hello(name: &str, versions: Vec<u32>) -> Result<Option<Envelope>, ProtoError> {
        Ok(Some(Envelope::new(
            7,
            Message::Hello(Hello {
                plugin: name.to_owned(),
                versions,
                software: None,
            }),
        )))
    }

    fn register(actions: serde_json::Value) -> Result<Option<Envelope>, ProtoError> {
        let register: Register = serde_json::from_value(serde_json::json!({
            "kind": "tool", "actions": actions,
        }))
        .unwrap();
        Ok(Some(Envelope::new(8, Message::Register(register))))
    }

    #[test]
    fn a_plugin_is_welcomed_with_its_settings_and_key_then_registered() {
        let mut handshake = Handshake::new(
            "files",
            serde_json::json!({"workspaces": "/w"}),
            Some(Credential::new("00ff".to_owned())),
        );
        let Step::Send(welcome) = handshake.receive(hello("files", vec![1])) else {
            panic!("no welcome");
        };
        assert_eq!(welcome.id, 7, "a reply repeats the id it answers");
        let Message::Welcome(welcome) = welcome.message else {
            panic!("not a welcome");
        };
        assert_eq!(welcome.config["workspaces"], "/w");
        assert_eq!(welcome.key.unwrap().expose(), "00ff");
        let step = handshake.receive(register(serde_json::json!([{
            "name": "read", "description": "read a file", "tier": "observe",
            "parameters": {"type": "object"},
        }])));
        let Step::Registered(reply, registration) = step else {
            panic!("not registered: {step:?}");
        };
        assert!(matches!(reply.message, Message::Registered(_)));
        assert_eq!(registration.kind, PluginKind::Tool);
        assert_eq!(registration.actions.len(), 1);
    }

    #[test]
    fn invariant_i7_a_plugin_cannot_register_under_another_name() {
        let mut handshake = Handshake::new("files", serde_json::Value::Null, None);
        let step = handshake.receive(hello("vault", vec![1]));
        assert!(
            matches!(&step, Step::Refuse(_, HandshakeError::WrongName { said, .. }) if said == "vault"),
            "{step:?}"
        );
        // Whatever it sends next is not taken.
        assert!(matches!(
            handshake.receive(register(serde_json::json!([]))),
            Step::Fail(HandshakeError::Protocol(_))
        ));
    }

    #[test]
    fn invariant_i9_out_of_order_closed_and_malformed_handshakes_fail_with_a_reason() {
        let mut h = Handshake::new("files", serde_json::Value::Null, None);
        assert!(matches!(
            h.receive(register(serde_json::json!([]))),
            Step::Fail(HandshakeError::OutOfOrder {
                expected: "hello",
                got: "register"
            })
        ));
        let mut h = Handshake::new("files", serde_json::Value::Null, None);
        assert!(matches!(
            h.receive(Ok(None)),
            Step::Fail(HandshakeError::Closed("hello"))
        ));
        let mut h = Handshake::new("files", serde_json::Value::Null, None);
        assert!(matches!(
            h.receive(hello("files", vec![99])),
            Step::Refuse(_, HandshakeError::NoCommonVersion(_))
        ));
        let mut h = Handshake::new("files", serde_json::Value::Null, None);
        assert!(matches!(
            h.receive(Err(ProtoError::Version(9))),
            Step::Refuse(..)
        ));
        let mut h = Handshake::new("files", serde_json::Value::Null, None);
        let _ = h.receive(hello("files", vec![1]));
        for bad in [
            serde_json::json!([{"name": "a.b", "description": "", "tier": "observe", "parameters": {"type": "object"}}]),
            serde_json::json!([{"name": "a__b", "description": "", "tier": "observe", "parameters": {"type": "object"}}]),
            serde_json::json!([{"name": "a", "description": "", "tier": "observe", "parameters": {"type": "string"}}]),
        ] {
            let mut h = Handshake::new("files", serde_json::Value::Null, None);
            let _ = h.receive(hello("files", vec![1]));
            assert!(
                matches!(
                    h.receive(register(bad.clone())),
                    Step::Refuse(_, HandshakeError::Registration(_))
                ),
                "{bad}"
            );
        }
    }

    /// The fuzz target's check, run here over deterministic inputs (CI builds the fuzz target
    /// but does not run it).
    mod fuzzed {
        use super::*;
        use crate::host::registration::{MAX_ACTIONS, MAX_DESCRIPTION, Registration, validate};
        use p3ak_proto::{FrameDecoder, PluginKind};

        include!("handshake_check.rs");

        /// xorshift64: the same inputs on every run, no dependency.
        struct Rng(u64);

        impl Rng {
            fn next(&mut self) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0
            }

            fn below(&mut self, n: usize) -> usize {
                usize::try_from(self.next() % n as u64).unwrap()
            }
        }

        /// Real frames, good and bad, one JSON payload each.
        const FRAMES: &[&str] = &[
            r#"{"v":1,"id":1,"type":"hello","plugin":"files","versions":[1]}"#,
            r#"{"v":1,"id":2,"type":"hello","plugin":"files","versions":[1,2,99]}"#,
            r#"{"v":1,"id":3,"type":"hello","plugin":"vault","versions":[1]}"#,
            r#"{"v":1,"id":4,"type":"hello","plugin":"files","versions":[99]}"#,
            r#"{"v":1,"id":5,"type":"register","kind":"tool","actions":[{"name":"read","description":"read","tier":"observe","parameters":{"type":"object"}}]}"#,
            r#"{"v":1,"id":6,"type":"register","kind":"tool","actions":[]}"#,
            r#"{"v":1,"id":7,"type":"register","kind":"provider","actions":[]}"#,
            r#"{"v":1,"id":8,"type":"register","kind":"connector","actions":[{"name":"x","description":"","tier":"observe","parameters":{"type":"object"}}]}"#,
            r#"{"v":1,"id":9,"type":"register","kind":"tool","actions":[{"name":"a.b","description":"","tier":"observe","parameters":{"type":"object"}}]}"#,
            r#"{"v":1,"id":10,"type":"register","kind":"tool","actions":[{"name":"a","description":"","tier":"observe","parameters":{"type":"object"}},{"name":"a","description":"","tier":"observe","parameters":{"type":"object"}}]}"#,
            r#"{"v":1,"id":11,"type":"register","kind":"tool","actions":[{"name":"a__b","description":"","tier":"observe","parameters":{"type":"string"}}]}"#,
            r#"{"v":1,"id":12,"type":"register","kind":"tool","actions":[{"name":"w","description":"","tier":"observe","parameters":{"type":"object","properties":{"p":{"type":"nope"}}}}]}"#,
            r#"{"v":1,"id":13,"type":"ping"}"#,
            r#"{"v":9,"id":14,"type":"hello","plugin":"files","versions":[9]}"#,
            r#"{"v":1,"id":15,"type":"hello","plugin":"files","versions":[1],"plugin":"vault"}"#,
            r#"{"v":1,"id":16,"type":"registered"}"#,
            r#"[1,2,3]"#,
            "",
        ];

        /// `count` frames picked from [`FRAMES`] (so repeated and out of order), one per line.
        fn frames(rng: &mut Rng, count: usize) -> Vec<u8> {
            let mut out = Vec::new();
            for i in 0..count {
                if i > 0 {
                    out.push(b'\n');
                }
                out.extend_from_slice(FRAMES[rng.below(FRAMES.len())].as_bytes());
            }
            out
        }

        #[test]
        fn invariant_i7_a_handshake_registers_only_what_validation_accepts() {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let mut registered = 0;
            for round in 0..4000 {
                let mode = u8::try_from(rng.next() & 0xFF).unwrap();
                let mut data = vec![mode];
                match round % 4 {
                    // Random bytes.
                    0 => {
                        let len = rng.below(256);
                        data.extend((0..len).map(|_| rng.next().to_le_bytes()[0]));
                    }
                    // Real frames, repeated and out of order.
                    1 | 2 => {
                        let count = 1 + rng.below(4);
                        data.extend(frames(&mut rng, count));
                    }
                    // Real frames with their headers, a byte flipped or the stream cut short.
                    _ => {
                        data[0] &= !2;
                        let count = 1 + rng.below(3);
                        let mut bytes = Vec::new();
                        for line in frames(&mut rng, count).split(|&b| b == b'\n') {
                            bytes.extend(frame(line));
                        }
                        let at = rng.below(bytes.len());
                        if rng.next().is_multiple_of(2) {
                            bytes[at] ^= 1 << rng.below(8);
                        } else {
                            bytes.truncate(at);
                        }
                        data.extend(bytes);
                    }
                }
                if run(&data) {
                    registered += 1;
                }
            }
            // The inputs reach the registration check, not only the refusals.
            assert!(registered > 0);
        }

        #[test]
        fn invariant_i7_a_full_handshake_in_every_read_size_registers() {
            let hello = FRAMES[0].as_bytes();
            let register = FRAMES[4].as_bytes();
            for read in 1..64u8 {
                let mut data = vec![(read << 2) | 2];
                data.extend_from_slice(hello);
                data.push(b'\n');
                data.extend_from_slice(register);
                assert!(run(&data), "read size {read}");
            }
        }
    }
}
