//! The `discord` connector, the real plugin code, against a fake Discord (REST and Gateway) on
//! loopback, with the test as the kernel.

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
use p3ak_plugins::connectors::discord;
use p3ak_proto::io::{read_message, write_message};
use p3ak_proto::{Credential, Envelope, ErrorKind, ErrorMessage, Message, Welcome};
use p3ak_sdk::PluginError;
use p3ak_testkit::chat::discord::Fake;
use p3ak_testkit::chat::{ConnectorKernel, Sent};
use p3ak_testkit::plugin::{self, MAX, connection, spawn_child};
use serde_json::json;

const TOKEN: &str = "MTAwMA.discord-secret-token";
const KEY: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";
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
    let kernel = ConnectorKernel::start("discord", config, TOKEN, move |stream| {
        p3ak_sdk::connector::serve_with_key(
            stream,
            "discord",
            p3ak_plugins::SOFTWARE,
            MAX,
            key,
            discord::connector,
        )
    });
    fake.wait_sessions(1, WAIT);
    kernel
}

#[test]
fn a_message_becomes_an_inbound_and_is_redelivered_until_accepted() {
    let fake = Fake::start(TOKEN);
    let mut kernel = start(&fake, None, json!({}));
    fake.say_as_bot("42", "77", "beep");
    let text = "hi *bold* @everyone <@1> `x`";
    let id = fake.say_direct("7", text);
    let (request, inbound) = kernel.inbound();
    assert_eq!(
        inbound.conversation,
        format!("discord:{}", fake.dm_channel("7"))
    );
    assert_eq!(inbound.sender, "discord:7");
    assert_eq!(inbound.text, text);
    assert_eq!(inbound.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(inbound.sender_name.as_deref(), Some("User 7"));
    assert!(inbound.direct);
    // A transient failure: the same message comes again, until accepted.
    kernel.kernel.send(
        request,
        Message::Error(ErrorMessage {
            kind: ErrorKind::Transient,
            message: "busy".to_owned(),
            retry_after_ms: None,
        }),
    );
    let (again, inbound) = kernel.inbound();
    assert_eq!(inbound.message_id.as_deref(), Some(id.as_str()));
    kernel.accept(again);

    let id = fake.say("42", "8", "in a guild channel");
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.conversation, "discord:42");
    assert_eq!(inbound.sender, "discord:8");
    assert_eq!(inbound.message_id.as_deref(), Some(id.as_str()));
    assert!(!inbound.direct);
    kernel.accept(request);
    kernel.shutdown();
}

#[test]
fn outbound_is_posted_literally_then_edited_and_split() {
    let fake = Fake::start(TOKEN);
    let mut kernel = start(&fake, None, json!({}));
    let text = "**not bold** @everyone <@123> [x](https://evil.example) # no heading";
    let id = kernel.outbound("discord:42", text, None, false).unwrap();
    let sent = fake.wait_sent(|s| s.id == id, WAIT);
    assert_eq!(sent.text, text);
    assert_eq!(sent.body["allowed_mentions"], json!({"parse": []}));
    assert_eq!(sent.body["flags"], json!(4));
    let content = sent.body["content"].as_str().unwrap();
    assert!(
        content.contains("\\*\\*not bold\\*\\*") && content.contains("\\@everyone"),
        "{content}"
    );
    assert!(sent.buttons.is_empty() && sent.links.is_empty());

    let edited = kernel
        .outbound("discord:42", "now _longer_", Some(&id), false)
        .unwrap();
    assert_eq!(edited, id);
    let sent = fake.wait_sent(|s| s.edit && s.id == id, WAIT);
    assert_eq!(sent.text, "now _longer_");
    assert_eq!(sent.body["components"], json!([]));

    let long = "word ".repeat(500);
    let last = kernel.outbound("discord:43", &long, None, false).unwrap();
    let parts: Vec<Sent> = fake.sent().into_iter().filter(|s| s.chat == "43").collect();
    assert_eq!(parts.len(), 3, "{parts:#?}");
    assert_eq!(parts.last().unwrap().id, last);
    assert_eq!(
        parts.iter().map(|s| s.text.as_str()).collect::<String>(),
        long
    );
    kernel.shutdown();
}

#[test]
fn a_rate_limit_is_waited_out() {
    let fake = Fake::start(TOKEN);
    let mut kernel = start(&fake, None, json!({}));
    fake.rate_limit_next(2, Duration::from_millis(400));
    let started = Instant::now();
    let id = kernel
        .outbound("discord:42", "patience", None, false)
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(800));
    let posted: Vec<Sent> = fake
        .sent()
        .into_iter()
        .filter(|s| s.text == "patience")
        .collect();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].id, id);
    kernel.shutdown();
}

fn announcement(kind: AnnouncementKind, text: &str) -> Announcement {
    Announcement {
        approval: "ap-9".to_owned(),
        kind,
        text: text.to_owned(),
        recipients: vec!["7".to_owned(), "8".to_owned()],
        buttons: vec![
            Button {
                label: "Approve".to_owned(),
                data: "p3ak:yes".to_owned(),
            },
            Button {
                label: "Deny".to_owned(),
                data: "p3ak:no".to_owned(),
            },
        ],
        link: Some("https://p3ak.example/a/9".to_owned()),
        expires_at_ms: i64::MAX,
    }
}

#[test]
fn approvals_go_to_dms_with_buttons_and_a_press_goes_sealed_to_the_kernel() {
    let fake = Fake::start(TOKEN);
    let key = ChatKey::from_hex(KEY, "discord").unwrap();
    let mut kernel = start(&fake, Some(KEY), json!({}));
    let sealed = key
        .seal(
            Purpose::Announce,
            &announcement(AnnouncementKind::Pending, "Run shell.run?"),
        )
        .unwrap();
    assert_eq!(kernel.approval(&sealed).unwrap(), 2);
    let dm7 = fake.dm_channel("7");
    let to_7 = fake.wait_sent(|s| s.chat == dm7, WAIT);
    assert_eq!(to_7.text, "Run shell.run?");
    assert_eq!(
        to_7.buttons,
        vec![
            ("Approve".to_owned(), "p3ak:yes".to_owned()),
            ("Deny".to_owned(), "p3ak:no".to_owned())
        ]
    );
    assert_eq!(to_7.links[0].1, "https://p3ak.example/a/9");
    let dm8 = fake.dm_channel("8");
    let to_8 = fake.wait_sent(|s| s.chat == dm8, WAIT);

    // A forged button: answered to the presser alone, nothing to the kernel.
    let forged = fake.press_on("7", &to_7.id, "approve-everything");
    let deadline = Instant::now() + WAIT;
    while !fake.answers().iter().any(|(id, _, _)| *id == forged) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, kind, text) = fake.answers()[0].clone();
    assert_eq!((kind, text.as_str()), (4, "unknown button"));

    let interaction = fake.press_on("7", &to_7.id, "p3ak:no");
    let (request, message) = kernel.next_request();
    let Message::ApprovalPress(press) = message else {
        panic!("expected approval_press, got {message:?}")
    };
    let press: Press = key.open(Purpose::Press, &press.sealed).unwrap();
    assert_eq!(
        (press.data.as_str(), press.presser.as_str()),
        ("p3ak:no", "7")
    );
    let answer = PressAnswer {
        approval: Some("ap-9".to_owned()),
        outcome: PressOutcome::Denied,
        message: "Denied.".to_owned(),
    };
    kernel.answer(
        request,
        json!({"sealed": key.seal(Purpose::Answer, &answer).unwrap()}),
    );
    let edited = fake.wait_sent(|s| s.edit && s.id == to_7.id, WAIT);
    assert_eq!(edited.text, "Run shell.run?\n\nDenied.");
    assert!(edited.buttons.is_empty() && edited.links.is_empty());
    assert!(
        fake.answers()
            .iter()
            .any(|(id, kind, _)| *id == interaction && *kind == 7)
    );
    fake.wait_sent(
        |s| s.edit && s.id == to_8.id && s.text.ends_with("Denied."),
        WAIT,
    );
    kernel.shutdown();
}

#[test]
fn a_dropped_gateway_connection_resumes_without_delivering_twice() {
    let fake = Fake::start(TOKEN);
    let mut kernel = start(&fake, None, json!({}));
    let first = fake.say("42", "7", "before the drop");
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.message_id.as_deref(), Some(first.as_str()));
    kernel.accept(request);
    fake.drop_connection();
    let second = fake.say("42", "7", "during the drop");
    fake.wait_sessions(2, WAIT);
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.message_id.as_deref(), Some(second.as_str()));
    kernel.accept(request);
    let third = fake.say("42", "7", "after");
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.message_id.as_deref(), Some(third.as_str()));
    kernel.accept(request);
    assert_eq!((fake.identifies(), fake.resumes()), (1, 1));
    // Heartbeats keep the connection (the fake asks for one a second).
    let deadline = Instant::now() + WAIT;
    while fake.heartbeats() == 0 {
        assert!(Instant::now() < deadline, "no heartbeat");
        std::thread::sleep(Duration::from_millis(50));
    }
    kernel.shutdown();
}

#[test]
fn an_invalid_session_identifies_again() {
    let fake = Fake::start(TOKEN);
    let mut kernel = start(&fake, None, json!({}));
    fake.end_session();
    fake.drop_connection();
    // The RESUME is refused; after the wait Discord asks for, a new session.
    let deadline = Instant::now() + WAIT;
    while fake.identifies() < 2 {
        assert!(Instant::now() < deadline, "did not identify again");
        std::thread::sleep(Duration::from_millis(20));
    }
    let id = fake.say("42", "7", "new session");
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.message_id.as_deref(), Some(id.as_str()));
    kernel.accept(request);
    kernel.shutdown();
}

#[test]
fn attachments_arrive_with_data_up_to_the_cap() {
    let fake = Fake::start(TOKEN);
    let mut kernel = start(&fake, None, json!({"max_attachment_bytes": 1000}));
    fake.send_attachment("7", "a.txt", "text/plain", b"hello file", "here");
    let (request, inbound) = kernel.inbound();
    let a = &inbound.attachments[0];
    assert_eq!(
        (a.name.as_str(), a.media_type.as_str(), a.size),
        ("a.txt", "text/plain", 10)
    );
    assert_eq!(a.data.as_deref(), Some("aGVsbG8gZmlsZQ=="));
    kernel.accept(request);
    fake.send_attachment("7", "big.bin", "application/octet-stream", &[0u8; 4000], "");
    let (request, inbound) = kernel.inbound();
    assert_eq!(inbound.attachments[0].size, 4000);
    assert!(inbound.attachments[0].data.is_none());
    kernel.accept(request);
    kernel.shutdown();
}

/// Runs only as the child of `a_refused_token_stops_the_connector_without_showing_it`.
#[test]
#[ignore = "started as a child process by a_refused_token_stops_the_connector_without_showing_it"]
fn child_plugin() {
    if let Some(name) = plugin::child_plugin()
        && let Err(e) = p3ak_plugins::run(&name)
    {
        panic!("plugin failed: {e}");
    }
}

#[test]
fn a_refused_token_stops_the_connector_without_showing_it() {
    let fake = Fake::start(TOKEN);
    let wrong = "MTAwMA.wrong-secret-token";
    let (mut stream, plugin) = connection();
    let child = spawn_child("child_plugin", "discord", plugin);
    let _hello = read_message(&mut stream, MAX).unwrap().unwrap();
    write_message(
        &mut stream,
        &Envelope::new(
            0,
            Message::Welcome(Welcome {
                version: 1,
                config: json!({ "base_url": fake.base_url() }),
                key: Some(Credential::new(wrong.to_owned())),
            }),
        ),
        MAX,
    )
    .unwrap();
    let _register = read_message(&mut stream, MAX).unwrap().unwrap();
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
        !said.contains(wrong) && !said.contains("wrong-secret"),
        "{said}"
    );
}
