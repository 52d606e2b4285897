//! The kernel's end of a plugin connection, played by a test: a socket pair with the plugin's
//! serve loop in a thread ([`FakeKernel`]), or the plugin in a child process that gets its
//! connection on standard input and its environment as the kernel gives them ([`spawn_child`]).

use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use p3ak_proto::io::{read_message, write_message};
use p3ak_proto::{
    Credential, Envelope, ErrorKind, ErrorMessage, InferenceRequest, InferenceResponse, Invoke,
    Message, Register, Registered, Shutdown, Welcome,
};
use serde_json::Value;

/// The frame limit both ends use.
pub const MAX: usize = p3ak_proto::DEFAULT_MAX_FRAME;

/// The kernel's side of the handshake on `stream`: expects `hello` from `expected_name` (a
/// first-party plugin, by its `software`), sends `welcome` with `config` and `key`, expects
/// `register`, sends `registered`. Returns the registration.
pub fn handshake(
    stream: &mut UnixStream,
    expected_name: &str,
    config: Value,
    key: Option<Credential>,
) -> Register {
    let hello = recv(stream);
    let Message::Hello(hello) = hello.message else {
        panic!("expected hello, got {hello:?}")
    };
    assert_eq!(hello.plugin, expected_name);
    assert_eq!(hello.versions, p3ak_proto::SUPPORTED_VERSIONS);
    assert!(hello.software.unwrap().starts_with("p3ak-plugins "));
    send(stream, 0, welcome(config, key));
    let register = match recv(stream).message {
        Message::Register(register) => register,
        other => panic!("expected register, got {other:?}"),
    };
    send(stream, 0, Message::Registered(Registered {}));
    register
}

fn welcome(config: Value, key: Option<Credential>) -> Message {
    Message::Welcome(Welcome {
        version: 1,
        config,
        key,
    })
}

fn send(stream: &mut UnixStream, id: u64, message: Message) {
    write_message(stream, &Envelope::new(id, message), MAX).unwrap();
}

fn recv(stream: &mut UnixStream) -> Envelope {
    read_message(stream, MAX).unwrap().expect("a message")
}

/// A plugin's serve loop in a thread, the test at the other end of its socket pair. `E` is the
/// error the serve loop returns.
pub struct FakeKernel<E> {
    pub stream: UnixStream,
    pub register: Register,
    thread: Option<JoinHandle<Result<(), E>>>,
    next_id: u64,
}

impl<E: std::fmt::Debug + Send + 'static> FakeKernel<E> {
    /// Runs `serve` on one end of a socket pair and does the handshake (see [`handshake`]).
    pub fn start(
        expected_name: &str,
        config: Value,
        key: Option<Credential>,
        serve: impl FnOnce(UnixStream) -> Result<(), E> + Send + 'static,
    ) -> Self {
        let (plugin, mut stream) = UnixStream::pair().unwrap();
        let thread = std::thread::spawn(move || serve(plugin));
        let register = handshake(&mut stream, expected_name, config, key);
        Self {
            stream,
            register,
            thread: Some(thread),
            next_id: 100,
        }
    }

    /// Runs `serve` for a plugin whose `config` or `key` is refused: returns the error it sent
    /// and the one it returned.
    pub fn start_failing(
        config: Value,
        key: Option<Credential>,
        serve: impl FnOnce(UnixStream) -> Result<(), E> + Send + 'static,
    ) -> (ErrorMessage, E) {
        let (plugin, mut stream) = UnixStream::pair().unwrap();
        let thread = std::thread::spawn(move || serve(plugin));
        let _hello = recv(&mut stream);
        send(&mut stream, 0, welcome(config, key));
        let Message::Error(sent) = recv(&mut stream).message else {
            panic!("expected an error")
        };
        let returned = thread.join().unwrap().unwrap_err();
        (sent, returned)
    }

    pub fn send(&mut self, id: u64, message: Message) {
        send(&mut self.stream, id, message);
    }

    pub fn recv(&mut self) -> Envelope {
        recv(&mut self.stream)
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
                assert_eq!(e.kind, ErrorKind::Invalid, "{action} {args}: {e:?}");
                e.message
            }
        }
    }

    /// Sends an inference request: the stream chunks, then the answer.
    pub fn infer(
        &mut self,
        request: InferenceRequest,
    ) -> (Vec<String>, Result<InferenceResponse, ErrorMessage>) {
        let id = self.fresh_id();
        self.send(id, Message::InferenceRequest(request));
        let mut chunks = Vec::new();
        loop {
            let reply = self.recv();
            assert_eq!(reply.id, id, "{reply:?}");
            match reply.message {
                Message::StreamChunk(chunk) => chunks.push(chunk.text),
                Message::InferenceResponse(response) => return (chunks, Ok(response)),
                Message::Error(error) => return (chunks, Err(error)),
                other => panic!("unexpected reply {other:?}"),
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

/// The environment variable that tells the test binary, started again by [`spawn_child`], to
/// run as plugin `<value>`.
pub const CHILD_VAR: &str = "P3AK_TEST_CHILD";

/// The plugin the test binary was started as by [`spawn_child`], if it was.
#[must_use]
pub fn child_plugin() -> Option<String> {
    std::env::var(CHILD_VAR).ok()
}

/// Starts this test binary again, running only the ignored test `test` (say `run::child_plugin`,
/// which calls the plugin's `run` when [`child_plugin`] is set), as plugin `name` (named
/// `my-<name>`) under the kernel's environment, `stdin` its standard input.
pub fn spawn_child(test: &str, name: &str, stdin: Stdio) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env(CHILD_VAR, name)
        .env("P3AK_PLUGIN_NAME", format!("my-{name}"))
        .env("P3AK_MAX_FRAME", "65536")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A socket pair: the kernel's end, and the plugin's as its standard input.
pub fn connection() -> (UnixStream, Stdio) {
    let (kernel, plugin) = UnixStream::pair().unwrap();
    (kernel, Stdio::from(std::os::fd::OwnedFd::from(plugin)))
}

/// What a child wrote, both streams.
#[must_use]
pub fn said(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
