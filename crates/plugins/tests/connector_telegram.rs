//! The `telegram` connector, the real plugin code, against a fake Bot API on loopback, with the
//! test as the kernel.

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
use p3ak_plugins::connectors::telegram;
use p3ak_proto::io::{read_message, write_message};
use p3ak_proto::{Credential, Envelope, ErrorKind, Message, Welcome};
use p3ak_sdk::PluginError;
use p3ak_testkit::chat::telegram::Fake;
use p3ak_testkit::chat::{ConnectorKernel, Sent};
use p3ak_testkit::plugin::{self, MAX, connection, spawn_child};
use serde_json::json;

const TOKEN: &str = "123456:AAF-secret-token-value";
const KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const WAIT: Duration = Duration::from_secs(15);

fn start(
    fake: &Fake,
    key: Option<&'static str>,
    extra: serde_json::Value,
) -> ConnectorKernel<PluginError> {
    let mut config = json!({ "base_url": fake.base_url() });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    ConnectorKernel::start("telegram", config, TOKEN, move |stream| {
        p3ak_sdk::connector::serve_with_key(
            stream,
            "telegram",
            p3ak_plugins::SOFTWARE,
            MAX,
            key,
            telegram::connector,
        )
    })
}

fn chat_key() -> ChatKey {
    ChatKey::from_hex(KEY, "telegram").unwrap()
}

#[test]
fn a_message_is_acknowledged_only_after_the_kernel_accepts_it() {
    let fake = Fake::start(TOKEN);
    let mut kernel = start(&fake, None, json!({}));
    // Other bots are ignored; the text arrives as written.
    fake.say_as_bot(-100, 55, "I am a bot");
    let text = "hi *bold* _it_ <b>x</b> @everyone [link](http://x)";
    let id = fake.say_direct(7, text);
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.conversation, "telegram:7");
    assert_eq!(inbound.sender, "telegram:7");
    assert_eq!(inbound.text, text);
    assert_eq!(inbound.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(inbound.sender_name.as_deref(), Some("User 7"));
    assert!(inbound.direct);
    // Not confirmed to Telegram while the kernel has not answered.
    let update = fake.update_id_of(&id);
    std::thread::sleep(Duration::from_millis(300));
    assert!(fake.confirmed_offset() <= update);
    kernel.accept(request);
    fake.wait_confirmed(update, WAIT);

    // A group message; a transient refusal is retried, then accepted.
    let id = fake.say(-1001, 8, "in the group");
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.conversation, "telegram:-1001");
    assert_eq!(inbound.sender, "telegram:8");
    assert!(!inbound.direct);
    kernel.kernel.send(
        request,
        Message::Error(p3ak_proto::ErrorMessage {
            kind: ErrorKind::RateLimited,
            message: "slow down".to_owned(),
            retry_after_ms: Some(50),
        }),
    );
    let (again, inbound) = kernel.inbound();
    assert_eq!(inbound.message_id.as_deref(), Some(id.as_str()));
    assert!(fake.confirmed_offset() <= fake.update_id_of(&id));
    kernel.accept(again);
    fake.wait_confirmed(fake.update_id_of(&id), WAIT);
    kernel.shutdown();
}

#[test]
fn long_inbound_texts_are_cut() {
    let fake = Fake::start(TOKEN);
    let mut kernel = start(&fake, None, json!({"max_message_bytes": 100}));
    fake.say_direct(7, &"x".repeat(500));
    let (request, inbound) = kernel.inbound();
    assert!(inbound.text.len() <= 100);
    assert!(
        inbound.text.contains("over the limit of 100"),
        "{}",
        inbound.text
    );
    kernel.accept(request);
    kernel.shutdown();
}

#[test]
fn outbound_is_posted_plain_then_edited_and_long_texts_are_split() {
    let fake = Fake::start(TOKEN);
    let mut kernel = start(&fake, None, json!({}));
    let text = "*not bold* <b>x</b> @everyone";
    let id = kernel.outbound("telegram:7", text, None, false).unwrap();
    let sent = fake.wait_sent(|s| s.id == id, WAIT);
    assert_eq!((sent.chat.as_str(), sent.text.as_str()), ("7", text));
    assert!(sent.body.get("parse_mode").is_none(), "{}", sent.body);
    assert!(sent.buttons.is_empty() && sent.links.is_empty());

    let edited = kernel
        .outbound("telegram:7", "*not bold* and more", Some(&id), false)
        .unwrap();
    assert_eq!(edited, id);
    let sent = fake.wait_sent(|s| s.edit && s.id == id, WAIT);
    assert_eq!(sent.text, "*not bold* and more");

    // Partial edits within a second of each other are coalesced.
    let before = fake.sent().len();
    kernel
        .outbound("telegram:7", "grow 1", Some(&id), true)
        .unwrap();
    kernel
        .outbound("telegram:7", "grow 2", Some(&id), true)
        .unwrap();
    assert_eq!(fake.sent().len(), before + 1);

    let long = format!("{}\n{}", "a".repeat(4000), "b".repeat(5000));
    let last = kernel
        .outbound("telegram:-1001", &long, None, false)
        .unwrap();
    let parts: Vec<Sent> = fake
        .sent()
        .into_iter()
        .filter(|s| s.chat == "-1001" && !s.edit)
        .collect();
    assert_eq!(parts.len(), 3, "{parts:#?}");
    assert_eq!(parts.last().unwrap().id, last);
    let joined: String = parts.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(joined, long);
    // Editing a split message edits its parts; a shorter text empties the surplus ones.
    let again = kernel
        .outbound("telegram:-1001", "short now", Some(&last), false)
        .unwrap();
    let first = fake.wait_sent(|s| s.edit && s.id == parts[0].id, WAIT);
    assert_eq!(first.text, "short now");
    assert_eq!(again, parts[0].id);
    fake.wait_sent(|s| s.edit && s.id == parts[2].id && s.text == "…", WAIT);
    assert!(
        !fake
            .sent()
            .iter()
            .any(|s| s.chat == "-1001" && !s.edit && s.text == "short now")
    );

    // Another connector's conversation is refused.
    let e = kernel.outbound("slack:C1", "x", None, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    kernel.shutdown();
}

#[test]
fn a_rate_limit_is_waited_out() {
    let fake = Fake::start(TOKEN);
    let mut kernel = start(&fake, None, json!({}));
    fake.rate_limit_next(1, Duration::from_secs(1));
    let started = Instant::now();
    let id = kernel
        .outbound("telegram:7", "after the wait", None, false)
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    let posted: Vec<Sent> = fake
        .sent()
        .into_iter()
        .filter(|s| s.text == "after the wait")
        .collect();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].id, id);
    // Too long a wait: the kernel hears `rate_limited` with the wait.
    fake.rate_limit_next(5, Duration::from_secs(120));
    let e = kernel
        .outbound("telegram:7", "never", None, false)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert_eq!(e.retry_after_ms, Some(120_000));
    kernel.shutdown();
}

fn announcement(kind: AnnouncementKind, text: &str) -> Announcement {
    Announcement {
        approval: "ap-1".to_owned(),
        kind,
        text: text.to_owned(),
        recipients: vec!["7".to_owned(), "8".to_owned()],
        buttons: vec![
            Button {
                label: "Approve".to_owned(),
                data: "p3ak:tok-approve".to_owned(),
            },
            Button {
                label: "Deny".to_owned(),
                data: "p3ak:tok-deny".to_owned(),
            },
        ],
        link: Some("https://p3ak.example/approve/ap-1".to_owned()),
        expires_at_ms: i64::MAX,
    }
}

#[test]
fn approvals_post_buttons_and_a_press_goes_sealed_to_the_kernel() {
    let fake = Fake::start(TOKEN);
    let key = chat_key();
    let mut kernel = start(&fake, Some(KEY), json!({}));
    let sealed = key
        .seal(
            Purpose::Announce,
            &announcement(AnnouncementKind::Pending, "Approve files.write?"),
        )
        .unwrap();
    assert_eq!(kernel.approval(&sealed).unwrap(), 2);
    let to_7 = fake.wait_sent(|s| s.chat == "7", WAIT);
    assert_eq!(to_7.text, "Approve files.write?");
    assert_eq!(
        to_7.buttons,
        vec![
            ("Approve".to_owned(), "p3ak:tok-approve".to_owned()),
            ("Deny".to_owned(), "p3ak:tok-deny".to_owned())
        ]
    );
    assert_eq!(to_7.links[0].1, "https://p3ak.example/approve/ap-1");
    let to_8 = fake.wait_sent(|s| s.chat == "8", WAIT);

    // A forged button: answered, and nothing reaches the kernel.
    let forged = fake.press_on(7, "7", &to_7.id, "rm -rf");
    let deadline = Instant::now() + WAIT;
    while !fake.answers().iter().any(|(id, _)| *id == forged) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(fake.answers()[0].1.contains("unknown button"));

    // The real press.
    let query = fake.press_on(7, "7", &to_7.id, "p3ak:tok-approve");
    let (request, message) = kernel.next_request();
    let Message::ApprovalPress(press) = message else {
        panic!("expected approval_press (the forged press must not come), got {message:?}")
    };
    let press: Press = key.open(Purpose::Press, &press.sealed).unwrap();
    assert_eq!(press.data, "p3ak:tok-approve");
    assert_eq!(press.presser, "7");
    let answer = PressAnswer {
        approval: Some("ap-1".to_owned()),
        outcome: PressOutcome::Approved,
        message: "Approved by you.".to_owned(),
    };
    kernel.answer(
        request,
        json!({ "sealed": key.seal(Purpose::Answer, &answer).unwrap() }),
    );
    let edited = fake.wait_sent(|s| s.edit && s.id == to_7.id, WAIT);
    assert_eq!(edited.text, "Approve files.write?\n\nApproved by you.");
    assert!(edited.buttons.is_empty() && edited.links.is_empty());
    // The other approver's copy says so too.
    fake.wait_sent(
        |s| s.edit && s.id == to_8.id && s.text.ends_with("Approved by you."),
        WAIT,
    );
    assert!(
        fake.answers()
            .iter()
            .any(|(id, text)| *id == query && text == "Approved by you.")
    );

    // Settled: every copy is edited to the final text.
    let sealed = key
        .seal(
            Purpose::Announce,
            &announcement(AnnouncementKind::Settled, "Done: approved."),
        )
        .unwrap();
    assert_eq!(kernel.approval(&sealed).unwrap(), 2);
    fake.wait_sent(
        |s| s.edit && s.id == to_8.id && s.text == "Done: approved.",
        WAIT,
    );

    // A seal for another connector does not open.
    let other = ChatKey::from_hex(KEY, "slack").unwrap();
    let sealed = other
        .seal(
            Purpose::Announce,
            &announcement(AnnouncementKind::Pending, "x"),
        )
        .unwrap();
    assert_eq!(
        kernel.approval(&sealed).unwrap_err().kind,
        ErrorKind::Invalid
    );
    kernel.shutdown();
}

#[test]
fn without_an_approval_key_approvals_are_refused() {
    let fake = Fake::start(TOKEN);
    let mut kernel = start(&fake, None, json!({}));
    let sealed = chat_key()
        .seal(
            Purpose::Announce,
            &announcement(AnnouncementKind::Pending, "x"),
        )
        .unwrap();
    let e = kernel.approval(&sealed).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(e.message, "no approval key");
    kernel.shutdown();
}

#[test]
fn documents_arrive_with_data_up_to_the_cap() {
    let fake = Fake::start(TOKEN);
    let mut kernel = start(&fake, None, json!({"max_attachment_bytes": 1000}));
    fake.send_document(7, "notes.txt", "text/plain", b"hello file", "see attached");
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.text, "see attached");
    let a = &inbound.attachments[0];
    assert_eq!(
        (a.name.as_str(), a.media_type.as_str(), a.size),
        ("notes.txt", "text/plain", 10)
    );
    assert_eq!(a.data.as_deref(), Some("aGVsbG8gZmlsZQ=="));
    kernel.accept(request);

    fake.send_document(7, "big.bin", "application/octet-stream", &[1u8; 5000], "");
    let (request, inbound) = kernel.inbound();
    let a = &inbound.attachments[0];
    assert_eq!((a.name.as_str(), a.size), ("big.bin", 5000));
    assert!(a.data.is_none());
    kernel.accept(request);
    kernel.shutdown();
}

/// Runs only as the child of `the_token_never_reaches_stderr`.
#[test]
#[ignore = "started as a child process by the_token_never_reaches_stderr"]
fn child_plugin() {
    if let Some(name) = plugin::child_plugin()
        && let Err(e) = p3ak_plugins::run(&name)
    {
        panic!("plugin failed: {e}");
    }
}

fn welcome(stream: &mut std::os::unix::net::UnixStream, base_url: &str, token: &str) {
    let _hello = read_message(stream, MAX).unwrap().unwrap();
    write_message(
        stream,
        &Envelope::new(
            0,
            Message::Welcome(Welcome {
                version: 1,
                config: json!({ "base_url": base_url }),
                key: Some(Credential::new(token.to_owned())),
            }),
        ),
        MAX,
    )
    .unwrap();
}

#[test]
fn the_token_never_reaches_stderr() {
    // A refused token: the connector stops, saying why, without the token.
    let fake = Fake::start(TOKEN);
    let wrong = "654321:AAF-wrong-token-value";
    let (mut stream, plugin) = connection();
    let child = spawn_child("child_plugin", "telegram", plugin);
    welcome(&mut stream, &fake.base_url(), wrong);
    let register = read_message(&mut stream, MAX).unwrap().unwrap();
    assert!(
        matches!(register.message, Message::Register(_)),
        "{register:?}"
    );
    write_message(
        &mut stream,
        &Envelope::new(0, Message::Registered(p3ak_proto::Registered {})),
        MAX,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = plugin::said(&output);
    assert!(!output.status.success());
    assert!(said.contains("401"), "{said}");
    assert!(
        !said.contains(wrong) && !said.contains("AAF-wrong"),
        "{said}"
    );

    // An unreachable API: logged failures, retried, never the URL with the token.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (mut stream, plugin) = connection();
    let mut child = spawn_child("child_plugin", "telegram", plugin);
    welcome(&mut stream, &url, TOKEN);
    let _register = read_message(&mut stream, MAX).unwrap().unwrap();
    write_message(
        &mut stream,
        &Envelope::new(0, Message::Registered(p3ak_proto::Registered {})),
        MAX,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    write_message(
        &mut stream,
        &Envelope::new(1, Message::Shutdown(p3ak_proto::Shutdown {})),
        MAX,
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let said = plugin::said(&output);
    assert!(said.contains("cannot connect"), "{said}");
    assert!(
        !said.contains(TOKEN) && !said.contains("AAF-secret"),
        "{said}"
    );
}

#[test]
fn a_bad_config_or_a_missing_token_is_refused() {
    let (sent, returned) = p3ak_testkit::plugin::FakeKernel::<PluginError>::start_failing(
        json!({"base_url": "http://api.telegram.example"}),
        Some(Credential::new(TOKEN.to_owned())),
        |stream| {
            p3ak_sdk::connector::serve_with_key(
                stream,
                "telegram",
                p3ak_plugins::SOFTWARE,
                MAX,
                None,
                telegram::connector,
            )
        },
    );
    assert!(sent.message.contains("loopback"), "{}", sent.message);
    assert!(matches!(returned, PluginError::Config(_)), "{returned}");

    let (sent, returned) =
        p3ak_testkit::plugin::FakeKernel::<PluginError>::start_failing(json!({}), None, |stream| {
            p3ak_sdk::connector::serve_with_key(
                stream,
                "telegram",
                p3ak_plugins::SOFTWARE,
                MAX,
                None,
                telegram::connector,
            )
        });
    assert!(
        sent.message.contains("no platform token"),
        "{}",
        sent.message
    );
    assert!(matches!(returned, PluginError::Key(_)), "{returned}");
}
