//! The `slack` connector, the real plugin code, against a fake Slack (Web API and Socket Mode)
//! on loopback, with the test as the kernel.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::time::{Duration, Instant};

use p3ak_approval::chat::{
    Announcement, AnnouncementKind, Button, ChatKey, Press, PressAnswer, PressOutcome, Purpose,
};
use p3ak_plugins::connectors::slack;
use p3ak_proto::io::write_message;
use p3ak_proto::{
    Approval, Credential, Envelope, ErrorKind, ErrorMessage, Inbound, Message, Outbound, ToolResult,
};
use p3ak_sdk::PluginError;
use p3ak_testkit::chat::slack::Fake;
use p3ak_testkit::plugin::{self, FakeKernel, MAX, connection, spawn_child};
use serde_json::{Value, json};

const APP_TOKEN: &str = "xapp-1-A0001-app-secret-value";
const BOT_TOKEN: &str = "xoxb-1-bot-secret-value";
const KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const WAIT: Duration = Duration::from_secs(15);

fn token() -> String {
    format!("{APP_TOKEN} {BOT_TOKEN}")
}

/// The kernel's side of a connector connection.
struct Kernel {
    kernel: FakeKernel<PluginError>,
    next_id: u64,
}

impl Kernel {
    fn start(fake: &Fake, key: Option<&'static str>, extra: Value) -> Self {
        let mut config = json!({ "base_url": fake.base_url() });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        let kernel = FakeKernel::start(
            "slack",
            config,
            Some(Credential::new(token())),
            move |stream| {
                p3ak_sdk::connector::serve_with_key(
                    stream,
                    "slack",
                    p3ak_plugins::SOFTWARE,
                    MAX,
                    key,
                    slack::build,
                )
            },
        );
        kernel.stream.set_read_timeout(Some(WAIT)).unwrap();
        Self {
            kernel,
            next_id: 1000,
        }
    }

    /// The connector's next request to the kernel.
    fn next_request(&mut self) -> (u64, Message) {
        let envelope = self.kernel.recv();
        (envelope.id, envelope.message)
    }

    fn inbound(&mut self) -> (u64, Inbound) {
        match self.next_request() {
            (id, Message::Inbound(inbound)) => (id, inbound),
            other => panic!("expected inbound, got {other:?}"),
        }
    }

    fn answer(&mut self, id: u64, output: Value) {
        self.kernel.send(id, Message::Result(ToolResult { output }));
    }

    fn accept(&mut self, id: u64) {
        self.answer(id, json!({"accepted": true}));
    }

    /// Sends `message` and waits for its answer.
    fn request(&mut self, message: Message) -> Result<Value, ErrorMessage> {
        self.next_id += 1;
        let id = self.next_id;
        self.kernel.send(id, message);
        let reply = self.kernel.recv();
        assert_eq!(reply.id, id, "{reply:?}");
        match reply.message {
            Message::Result(result) => Ok(result.output),
            Message::Error(error) => Err(error),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    fn outbound(
        &mut self,
        conversation: &str,
        text: &str,
        edit: Option<&str>,
        partial: bool,
    ) -> Result<String, ErrorMessage> {
        self.request(Message::Outbound(Outbound {
            conversation: conversation.to_owned(),
            text: text.to_owned(),
            edit: edit.map(str::to_owned),
            partial,
        }))
        .map(|output| output["message_id"].as_str().unwrap().to_owned())
    }

    fn shutdown(self) {
        self.kernel.shutdown();
    }
}

fn chat_key() -> ChatKey {
    ChatKey::from_hex(KEY, "slack").unwrap()
}

#[test]
fn a_message_arrives_with_its_ids_and_is_acknowledged_only_after_the_kernel_accepts_it() {
    let fake = Fake::start(&token());
    let mut kernel = Kernel::start(&fake, None, json!({}));
    let text = "a < b & c > d <@U2> *bold*";
    let ts = fake.say("C1", "U1", text);
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.conversation, "slack:C1");
    assert_eq!(inbound.sender, "slack:U1");
    assert_eq!(inbound.text, text);
    assert_eq!(inbound.message_id, Some(format!("C1:{ts}")));
    assert!(!inbound.direct);
    // Not acknowledged to Slack while the kernel has not answered.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!fake.acked(&ts));
    kernel.accept(request);
    fake.wait_acked(&ts, WAIT);

    // In a thread: the conversation is the thread's.
    let reply = fake.say_in_thread("C1", &ts, "U1", "in the thread");
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.conversation, format!("slack:C1:{ts}"));
    assert_eq!(inbound.message_id, Some(format!("C1:{reply}")));
    kernel.accept(request);
    fake.wait_acked(&reply, WAIT);

    // A DM is direct; a transient refusal by the kernel is retried, then accepted.
    let dm = fake.say_direct("U3", "just us");
    let (request, inbound) = kernel.inbound();
    assert_eq!(
        inbound.conversation,
        format!("slack:{}", Fake::dm_channel("U3"))
    );
    assert_eq!(inbound.sender, "slack:U3");
    assert!(inbound.direct);
    kernel.kernel.send(
        request,
        Message::Error(ErrorMessage {
            kind: ErrorKind::RateLimited,
            message: "slow down".to_owned(),
            retry_after_ms: Some(50),
        }),
    );
    let (again, inbound) = kernel.inbound();
    assert_eq!(
        inbound.message_id,
        Some(format!("{}:{dm}", Fake::dm_channel("U3")))
    );
    assert!(!fake.acked(&dm));
    kernel.accept(again);
    fake.wait_acked(&dm, WAIT);
    fake.wait_all_acked(WAIT);
    kernel.shutdown();
}

#[test]
fn outbound_is_posted_literally_then_edited_and_long_texts_are_split() {
    let fake = Fake::start(&token());
    let mut kernel = Kernel::start(&fake, None, json!({}));
    let text = "<!channel> *not bold* & <https://evil.example|click> @here";
    let id = kernel.outbound("slack:C1", text, None, false).unwrap();
    let sent = fake.wait_sent(|s| s.id == id, WAIT);
    assert_eq!(sent.chat, "C1");
    assert!(
        !sent.text.contains('<') && !sent.text.contains('>'),
        "{}",
        sent.text
    );
    assert_eq!(sent.shown(), text);
    assert!(!sent.mrkdwn && !sent.unfurl_links);
    assert!(sent.buttons.is_empty() && sent.links.is_empty());

    let edited = kernel
        .outbound("slack:C1", "grown & edited", Some(&id), false)
        .unwrap();
    assert_eq!(edited, id);
    let sent = fake.wait_sent(|s| s.edit && s.id == id, WAIT);
    assert_eq!(sent.shown(), "grown & edited");

    // Partial edits within a second of each other are coalesced.
    let before = fake.sent().len();
    kernel
        .outbound("slack:C1", "grow 1", Some(&id), true)
        .unwrap();
    kernel
        .outbound("slack:C1", "grow 2", Some(&id), true)
        .unwrap();
    assert_eq!(fake.sent().len(), before + 1);

    // A reply in a thread goes to the thread.
    let threaded = kernel
        .outbound("slack:C1:1700000000.000001", "in thread", None, false)
        .unwrap();
    let sent = fake.wait_sent(|s| s.id == threaded, WAIT);
    assert_eq!(sent.thread.as_deref(), Some("1700000000.000001"));

    let long = format!("{}\n{}", "a".repeat(3990), "b<".repeat(3000));
    let last = kernel.outbound("slack:C2", &long, None, false).unwrap();
    let parts: Vec<_> = fake.sent().into_iter().filter(|s| s.chat == "C2").collect();
    assert_eq!(
        parts.len(),
        3,
        "{:?}",
        parts.iter().map(|p| p.text.len()).collect::<Vec<_>>()
    );
    assert_eq!(parts.last().unwrap().id, last);
    let joined: String = parts.iter().map(|s| s.shown()).collect();
    assert_eq!(joined, long);

    // Another connector's conversation is refused.
    let e = kernel.outbound("telegram:7", "x", None, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    // The bot's own posts came back as events and were not passed to the kernel.
    fake.wait_all_acked(WAIT);
    kernel.shutdown();
}

#[test]
fn a_rate_limit_is_waited_out() {
    let fake = Fake::start(&token());
    let mut kernel = Kernel::start(&fake, None, json!({}));
    // Wait for the connection, so the rate limit hits the post.
    fake.wait_connections(1, WAIT);
    fake.rate_limit_next(1, Duration::from_secs(1));
    let started = Instant::now();
    let id = kernel
        .outbound("slack:C1", "patience", None, false)
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(fake.wait_sent(|s| s.id == id, WAIT).text, "patience");
    kernel.shutdown();
}

fn announcement(kind: AnnouncementKind, text: &str) -> Announcement {
    Announcement {
        approval: "ap-1".to_owned(),
        kind,
        text: text.to_owned(),
        recipients: vec!["U9".to_owned()],
        buttons: if kind == AnnouncementKind::Settled {
            Vec::new()
        } else {
            vec![
                Button {
                    label: "Approve".to_owned(),
                    data: "p3ak:tok-approve".to_owned(),
                },
                Button {
                    label: "Deny".to_owned(),
                    data: "p3ak:tok-deny".to_owned(),
                },
            ]
        },
        link: Some("https://console.example/approvals/ap-1".to_owned()),
        expires_at_ms: i64::MAX,
    }
}

fn approval(kernel: &mut Kernel, announcement: &Announcement) -> Result<Value, ErrorMessage> {
    let sealed = chat_key().seal(Purpose::Announce, announcement).unwrap();
    kernel.request(Message::Approval(Approval { sealed }))
}

#[test]
fn an_approval_is_shown_with_buttons_and_a_press_goes_to_the_daemon_and_back() {
    let fake = Fake::start(&token());
    let mut kernel = Kernel::start(&fake, Some(KEY), json!({}));
    let text = "shell.run `rm -rf <tmp>` & more";
    let posted = approval(&mut kernel, &announcement(AnnouncementKind::Pending, text)).unwrap();
    assert_eq!(posted, json!({"posted": 1}));
    let card = fake.wait_sent(|s| !s.buttons.is_empty(), WAIT);
    assert_eq!(card.chat, Fake::dm_channel("U9"));
    assert_eq!(card.text, text, "a plain_text section shows the text as is");
    assert_eq!(
        card.buttons,
        vec![
            ("Approve".to_owned(), "p3ak:tok-approve".to_owned()),
            ("Deny".to_owned(), "p3ak:tok-deny".to_owned())
        ]
    );
    assert_eq!(card.links.len(), 1);
    assert_eq!(card.links[0].1, "https://console.example/approvals/ap-1");

    fake.press("U9", "p3ak:tok-approve");
    let (request, message) = kernel.next_request();
    let Message::ApprovalPress(press) = message else {
        panic!("expected approval_press, got {message:?}")
    };
    let press: Press = chat_key().open(Purpose::Press, &press.sealed).unwrap();
    assert_eq!(press.data, "p3ak:tok-approve");
    assert_eq!(press.presser, "U9");
    assert!(press.at_ms > 0);
    let answer = PressAnswer {
        approval: Some("ap-1".to_owned()),
        outcome: PressOutcome::Approved,
        message: "Approved by you.".to_owned(),
    };
    let sealed = chat_key().seal(Purpose::Answer, &answer).unwrap();
    kernel.answer(request, json!({ "sealed": sealed }));
    let edited = fake.wait_sent(|s| s.edit && s.id == card.id, WAIT);
    assert!(edited.buttons.is_empty());
    assert!(edited.shown().starts_with(text), "{}", edited.text);
    assert!(
        edited.shown().ends_with("Approved by you."),
        "{}",
        edited.text
    );
    fake.wait_all_acked(WAIT);

    // Settled: the message loses its buttons for good.
    let settled = announcement(AnnouncementKind::Settled, "done: approved");
    assert_eq!(
        approval(&mut kernel, &settled).unwrap(),
        json!({"posted": 1})
    );
    let last = fake.wait_sent(|s| s.edit && s.shown() == "done: approved", WAIT);
    assert_eq!(last.id, card.id);
    assert!(last.buttons.is_empty());
    kernel.shutdown();
}

#[test]
fn a_foreign_press_never_reaches_the_kernel_and_no_key_means_no_approvals() {
    let fake = Fake::start(&token());
    let mut kernel = Kernel::start(&fake, None, json!({}));
    let e = approval(&mut kernel, &announcement(AnnouncementKind::Pending, "x")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.contains("no approval key"), "{}", e.message);

    let id = kernel.outbound("slack:C1", "hello", None, false).unwrap();
    fake.press_on("U1", "C1", &id, "evil:call-the-kernel");
    let told = fake.wait_sent(|s| s.ephemeral_to.is_some(), WAIT);
    assert_eq!(told.ephemeral_to.as_deref(), Some("U1"));
    assert_eq!(told.text, "unknown button");
    fake.wait_all_acked(WAIT);
    // The next thing the kernel hears is a person's message, not the press.
    let ts = fake.say("C1", "U1", "after");
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.message_id, Some(format!("C1:{ts}")));
    kernel.accept(request);
    kernel.shutdown();
}

#[test]
fn after_a_disconnect_or_a_drop_it_reconnects_and_delivers_nothing_twice() {
    let fake = Fake::start(&token());
    fake.set_ack_timeout(Duration::from_millis(500));
    let mut kernel = Kernel::start(&fake, None, json!({}));
    let first = fake.say("C1", "U1", "one");
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.text, "one");
    kernel.accept(request);
    fake.wait_acked(&first, WAIT);

    // Slack asks for a new connection.
    fake.disconnect();
    fake.wait_connections(2, WAIT);

    // The socket drops while the kernel holds a message: the acknowledgement cannot go out
    // on it, so Slack delivers the message again (after the ack timeout, and on the new
    // connection); it is acknowledged, not passed on a second time.
    let second = fake.say("C1", "U1", "two");
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.text, "two");
    fake.drop_connection();
    std::thread::sleep(Duration::from_millis(700));
    assert!(!fake.acked(&second));
    kernel.accept(request);
    fake.wait_connections(3, WAIT);
    fake.wait_acked(&second, WAIT);

    let third = fake.say("C1", "U1", "three");
    let (request, inbound) = kernel.inbound();
    assert_eq!(
        inbound.message_id,
        Some(format!("C1:{third}")),
        "no duplicate came first"
    );
    kernel.accept(request);
    fake.wait_all_acked(WAIT);
    assert!(fake.deliveries() >= 4, "{} deliveries", fake.deliveries());
    kernel.shutdown();
}

#[test]
fn attachments_come_with_their_data_within_the_cap_and_without_over_it() {
    let fake = Fake::start(&token());
    let mut kernel = Kernel::start(&fake, None, json!({"max_attachment_bytes": 1000}));
    fake.say_with_file(
        "C1",
        "U1",
        "a note",
        "note.txt",
        "text/plain",
        b"hello file",
    );
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.text, "a note");
    assert_eq!(inbound.attachments.len(), 1);
    let attachment = &inbound.attachments[0];
    assert_eq!(
        (
            attachment.name.as_str(),
            attachment.media_type.as_str(),
            attachment.size
        ),
        ("note.txt", "text/plain", 10)
    );
    assert_eq!(attachment.data.as_deref(), Some("aGVsbG8gZmlsZQ=="));
    kernel.accept(request);

    fake.say_with_file(
        "C1",
        "U1",
        "",
        "big.bin",
        "application/octet-stream",
        &[7; 5000],
    );
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.attachments[0].size, 5000);
    assert_eq!(inbound.attachments[0].data, None);
    kernel.accept(request);
    fake.wait_all_acked(WAIT);
    kernel.shutdown();
}

/// Runs only as the child of `the_tokens_never_reach_the_log`.
#[test]
#[ignore = "started as a child process by the_tokens_never_reach_the_log"]
fn child_plugin() {
    if let Some(name) = plugin::child_plugin()
        && let Err(e) = p3ak_plugins::run(&name)
    {
        panic!("plugin failed: {e}");
    }
}

fn send(stream: &mut std::os::unix::net::UnixStream, id: u64, message: Message) {
    write_message(stream, &Envelope::new(id, message), MAX).unwrap();
}

#[test]
fn the_tokens_never_reach_the_log() {
    let fake = Fake::start(&token());
    // A working connector that loses its socket logs about it.
    let (mut stream, child_end) = connection();
    let child = spawn_child("child_plugin", "slack", child_end);
    stream.set_read_timeout(Some(WAIT)).unwrap();
    plugin::handshake(
        &mut stream,
        "my-slack",
        json!({ "base_url": fake.base_url() }),
        Some(Credential::new(token())),
    );
    fake.wait_connections(1, WAIT);
    fake.drop_connection();
    fake.wait_connections(2, WAIT);
    send(&mut stream, 1, Message::Shutdown(p3ak_proto::Shutdown {}));
    let output = child.wait_with_output().unwrap();
    let said = plugin::said(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("socket"), "{said}");

    // A wrong bot token stops the connector with an error that does not repeat it.
    let wrong = format!("{APP_TOKEN} xoxb-wrong-secret-value");
    let (mut stream, child_end) = connection();
    let child = spawn_child("child_plugin", "slack", child_end);
    stream.set_read_timeout(Some(WAIT)).unwrap();
    plugin::handshake(
        &mut stream,
        "my-slack",
        json!({ "base_url": fake.base_url() }),
        Some(Credential::new(wrong.clone())),
    );
    let output = child.wait_with_output().unwrap();
    let wrong_said = plugin::said(&output);
    assert!(!output.status.success());
    assert!(wrong_said.contains("invalid_auth"), "{wrong_said}");
    for (text, secret) in [
        (&said, APP_TOKEN),
        (&said, BOT_TOKEN),
        (&wrong_said, APP_TOKEN),
        (&wrong_said, "xoxb-wrong-secret-value"),
        (&wrong_said, "secret-value"),
    ] {
        assert!(!text.contains(secret), "{secret} in: {text}");
    }
}

#[test]
fn a_bad_credential_or_config_is_refused_at_the_handshake() {
    let fake = Fake::start(&token());
    let serve = |stream| {
        p3ak_sdk::connector::serve_with_key(
            stream,
            "slack",
            p3ak_plugins::SOFTWARE,
            MAX,
            None,
            slack::build,
        )
    };
    let (sent, _) = FakeKernel::start_failing(
        json!({ "base_url": fake.base_url() }),
        Some(Credential::new(BOT_TOKEN.to_owned())),
        serve,
    );
    assert!(sent.message.contains("app token"), "{}", sent.message);
    assert!(!sent.message.contains(BOT_TOKEN));
    let (sent, _) = FakeKernel::start_failing(
        json!({ "base_url": "http://slack.example/api/" }),
        Some(Credential::new(token())),
        serve,
    );
    assert!(sent.message.contains("https"), "{}", sent.message);
}
