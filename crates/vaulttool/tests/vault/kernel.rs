//! The test plays the kernel: one end of a socket pair, the plugin's serve loop on the other
//! (as in `crates/plugins/tests/plugins/kernel.rs`, for this crate's one plugin).

use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use p3ak_proto::io::{read_message, write_message};
use p3ak_proto::{
    Credential, Envelope, ErrorMessage, Invoke, Message, Register, Registered, Shutdown, Welcome,
};
use p3ak_sdk::{Launch, PluginError};
use serde_json::Value;

pub const MAX: usize = p3ak_proto::DEFAULT_MAX_FRAME;

pub struct Kernel {
    pub stream: UnixStream,
    pub register: Register,
    thread: Option<JoinHandle<Result<(), PluginError>>>,
    next_id: u64,
}

/// Starts the plugin as `launch.plugin` and does the handshake with `config`, handing `key`
/// over in `welcome`.
pub fn start_keyed(
    builtin: &str,
    config: Value,
    launch: Launch,
    key: Option<Credential>,
) -> Kernel {
    let (plugin, stream) = UnixStream::pair().unwrap();
    let builtin = builtin.to_owned();
    let expected_name = launch.plugin.clone();
    let thread = std::thread::spawn(move || {
        assert_eq!(builtin, p3ak_vaulttool::NAME);
        p3ak_vaulttool::serve(plugin, launch)
    });
    let mut kernel = Kernel {
        stream,
        register: Register {
            kind: p3ak_proto::PluginKind::Tool,
            actions: Vec::new(),
        },
        thread: Some(thread),
        next_id: 100,
    };
    let Message::Hello(hello) = kernel.recv().message else {
        panic!("expected hello")
    };
    assert_eq!(hello.plugin, expected_name);
    assert_eq!(hello.versions, p3ak_proto::SUPPORTED_VERSIONS);
    assert!(hello.software.unwrap().starts_with("p3ak-plugins "));
    kernel.send(
        0,
        Message::Welcome(Welcome {
            version: 1,
            config,
            key,
        }),
    );
    match kernel.recv().message {
        Message::Register(register) => kernel.register = register,
        other => panic!("expected register, got {other:?}"),
    }
    kernel.send(0, Message::Registered(Registered {}));
    kernel
}

/// Starts a plugin whose config or key is refused: returns the error it sent and the one it
/// returned.
pub fn start_failing_keyed(
    builtin: &str,
    config: Value,
    launch: Launch,
    key: Option<Credential>,
) -> (ErrorMessage, PluginError) {
    let (plugin, stream) = UnixStream::pair().unwrap();
    let builtin = builtin.to_owned();
    let thread = std::thread::spawn(move || {
        assert_eq!(builtin, p3ak_vaulttool::NAME);
        p3ak_vaulttool::serve(plugin, launch)
    });
    let mut kernel = Kernel {
        stream,
        register: Register {
            kind: p3ak_proto::PluginKind::Tool,
            actions: Vec::new(),
        },
        thread: None,
        next_id: 1,
    };
    let _hello = kernel.recv();
    kernel.send(
        0,
        Message::Welcome(Welcome {
            version: 1,
            config,
            key,
        }),
    );
    let Message::Error(sent) = kernel.recv().message else {
        panic!("expected an error")
    };
    let returned = thread.join().unwrap().unwrap_err();
    (sent, returned)
}

impl Kernel {
    pub fn send(&mut self, id: u64, message: Message) {
        write_message(&mut self.stream, &Envelope::new(id, message), MAX).unwrap();
    }

    pub fn recv(&mut self) -> Envelope {
        read_message(&mut self.stream, MAX)
            .unwrap()
            .expect("a message")
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Invokes an action; the reply must carry the request's id.
    pub fn invoke(
        &mut self,
        agent: &str,
        action: &str,
        args: Value,
    ) -> Result<Value, ErrorMessage> {
        let id = self.fresh_id();
        self.send(
            id,
            Message::Invoke(Invoke {
                agent: agent.to_owned(),
                action: action.to_owned(),
                args,
                deadline_ms: None,
            }),
        );
        let reply = self.recv();
        assert_eq!(reply.id, id, "{reply:?}");
        match reply.message {
            Message::Result(result) => Ok(result.output),
            Message::Error(error) => Err(error),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    /// An invoke that must succeed.
    pub fn ok(&mut self, agent: &str, action: &str, args: Value) -> Value {
        match self.invoke(agent, action, args.clone()) {
            Ok(output) => output,
            Err(e) => panic!("{action} {args}: {e:?}"),
        }
    }

    /// An invoke that must fail with `invalid`; returns the message.
    pub fn invalid(&mut self, agent: &str, action: &str, args: Value) -> String {
        match self.invoke(agent, action, args.clone()) {
            Ok(output) => panic!("{action} {args} succeeded: {output}"),
            Err(e) => {
                assert_eq!(
                    e.kind,
                    p3ak_proto::ErrorKind::Invalid,
                    "{action} {args}: {e:?}"
                );
                e.message
            }
        }
    }

    /// Sends `shutdown`; the plugin must end cleanly.
    pub fn shutdown(mut self) {
        self.send(1, Message::Shutdown(Shutdown {}));
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap().unwrap();
        }
    }
}
