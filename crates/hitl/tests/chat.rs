//! Approvals in a chat, the daemon's side: announcements it seals for each connector, presses
//! it opens and checks, and what the kernel (which only relays) cannot do with either.

#![cfg(test)]
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed step should fail loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use p3ak_crypto::{KdfParams, Key};
use p3ak_hitl::binding::Request;
use p3ak_hitl::chat::{
    Announcement, AnnouncementKind, ChatKey, MAX_PRESS_AGE_MS, Press, PressAnswer, PressOutcome,
    Purpose,
};
use p3ak_hitl::daemon::{Service, ServiceOptions, now_ms};
use p3ak_hitl::factors::Factors;
use p3ak_hitl::spool::{Spool, SpoolKey, write_staged};
use p3ak_hitl::wire::{OperatorAnswer, OperatorRequest, ToKernel};
use tokio::sync::mpsc::UnboundedReceiver;

const APPROVER: &str = "7";

struct Setup {
    dir: tempfile::TempDir,
    spool: Spool,
    key: SpoolKey,
    master: Key,
    service: Arc<Service>,
    to_kernel: UnboundedReceiver<ToKernel>,
    /// Audit events heard so far: (event, data).
    audit: Vec<(String, serde_json::Value)>,
    /// Other messages heard so far.
    heard: Vec<ToKernel>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path().join("spool"));
    spool.prepare(&["write".to_owned()], None).unwrap();
    let state = Key::generate().unwrap();
    let factors = open_factors(dir.path(), &state);
    let key = SpoolKey::generate().unwrap();
    let (service, to_kernel) = Service::new(ServiceOptions {
        spool: spool.clone(),
        spool_key: SpoolKey::from_hex(&key.to_hex()).unwrap(),
        factors,
    })
    .unwrap();
    let master = Key::generate().unwrap();
    service
        .enable_chat(&master, &["telegram".to_owned(), "slack".to_owned()])
        .unwrap();
    service
        .add_approver(&format!("telegram:{APPROVER}"), "test")
        .unwrap();
    Setup {
        dir,
        spool,
        key,
        master,
        service,
        to_kernel,
        audit: Vec::new(),
        heard: Vec::new(),
    }
}

fn open_factors(dir: &std::path::Path, state: &Key) -> Factors {
    Factors::open_with_kdf(
        &dir.join("hitl"),
        state,
        KdfParams {
            memory_kib: KdfParams::MIN_MEMORY_KIB,
            iterations: 1,
            parallelism: 1,
        },
    )
    .unwrap()
}

fn request(id: &str, level: u8, crawfish_secs: u64) -> Request {
    let now = now_ms();
    Request {
        id: id.to_owned(),
        agent: "assistant".to_owned(),
        action: "files.write".to_owned(),
        args: serde_json::json!({"path": "a.txt", "content": "hi"}),
        level,
        rules: vec!["write.files.write".to_owned()],
        category: "write".to_owned(),
        asked_ms: now,
        expires_ms: now + 60_000,
        crawfish_secs,
        confirm_twice: false,
        reasons: Vec::new(),
    }
}

impl Setup {
    fn connector(&self, name: &str) -> ChatKey {
        ChatKey::derive(&self.master, name).unwrap()
    }

    fn stage(&mut self, request: &Request) {
        write_staged(
            &self.spool,
            &request.category,
            &request.id,
            &self.key.seal(request).unwrap(),
        )
        .unwrap();
        self.service
            .admit_staged(&request.id, &request.category)
            .unwrap();
    }

    fn drain(&mut self) {
        while let Ok(message) = self.to_kernel.try_recv() {
            match message {
                ToKernel::Audit { event, data } => self.audit.push((event, data)),
                other => self.heard.push(other),
            }
        }
    }

    /// Every announcement relayed so far for `connector`, opened with its key.
    fn announcements(&mut self, connector: &str) -> Vec<Announcement> {
        self.drain();
        let key = self.connector(connector);
        self.heard
            .iter()
            .filter_map(|m| match m {
                ToKernel::ChatAnnounce {
                    connector: to,
                    sealed,
                } if to == connector => Some(key.open(Purpose::Announce, sealed).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn last(&mut self, connector: &str, kind: AnnouncementKind) -> Announcement {
        self.announcements(connector)
            .into_iter()
            .rev()
            .find(|a| a.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} announcement for {connector}"))
    }

    fn button(&mut self, label: &str, kind: AnnouncementKind) -> String {
        let announcement = self.last("telegram", kind);
        announcement
            .buttons
            .iter()
            .find(|b| b.label == label)
            .unwrap_or_else(|| panic!("no {label} button in {announcement:?}"))
            .data
            .clone()
    }

    fn sealed_press(&self, data: &str, presser: &str) -> String {
        self.connector("telegram")
            .seal(
                Purpose::Press,
                &Press {
                    data: data.to_owned(),
                    presser: presser.to_owned(),
                    at_ms: now_ms(),
                },
            )
            .unwrap()
    }

    fn press(&mut self, connector: &str, sealed: &str) -> PressAnswer {
        let answer = self.service.chat_press(connector, sealed).unwrap();
        self.connector(connector)
            .open(Purpose::Answer, &answer)
            .unwrap()
    }

    fn releases(&mut self, id: &str) -> usize {
        self.drain();
        self.heard
            .iter()
            .filter(|m| matches!(m, ToKernel::Released { request, .. } if request.id == id))
            .count()
    }

    fn refusals(&mut self) -> Vec<String> {
        self.drain();
        self.audit
            .iter()
            .filter(|(e, _)| e == "hitl.chat.refused")
            .map(|(_, d)| d["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

#[test]
fn a_level_one_press_by_an_approver_approves_and_the_action_is_released_once() {
    let mut s = setup();
    s.stage(&request("r1", 1, 0));
    let pending = s.last("telegram", AnnouncementKind::Pending);
    assert_eq!(pending.approval, "r1");
    assert_eq!(pending.recipients, [APPROVER]);
    let labels: Vec<&str> = pending.buttons.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["Approve", "Deny"]);
    assert!(pending.link.is_none(), "level 1 needs no console");
    for words in ["assistant", "files.write", "a.txt", "level 1", "expires"] {
        assert!(pending.text.contains(words), "{words} in {}", pending.text);
    }
    for button in &pending.buttons {
        assert!(button.data.starts_with("p3ak:") && button.data.len() <= 64);
    }
    // Slack has no approvers: it hears nothing.
    assert!(s.announcements("slack").is_empty());

    let approve = s.button("Approve", AnnouncementKind::Pending);
    let sealed = s.sealed_press(&approve, APPROVER);
    let answer = s.press("telegram", &sealed);
    assert_eq!(answer.outcome, PressOutcome::Approved, "{answer:?}");
    assert_eq!(answer.approval.as_deref(), Some("r1"));
    assert_eq!(s.releases("r1"), 1);
    let history = s.service.history();
    assert_eq!(history[0].confirmations[0].channel, "chat:telegram");
    let approval = s.audit.iter().find(|(e, _)| e == "hitl.approval").unwrap();
    assert_eq!(approval.1["channel"], "chat:telegram");
    let settled = s.last("telegram", AnnouncementKind::Settled);
    assert!(settled.buttons.is_empty());
    assert!(settled.text.contains("released"), "{}", settled.text);

    // The same press again: refused, audited, nothing released twice.
    let again = s.press("telegram", &sealed);
    assert_eq!(again.outcome, PressOutcome::Refused);
    assert!(again.message.contains("unknown or was already used"));
    assert_eq!(s.refusals(), ["unknown_token"]);
    assert_eq!(s.releases("r1"), 1);
}

#[test]
fn invariant_i8_a_press_sealed_with_another_key_or_altered_is_refused_and_audited() {
    let mut s = setup();
    s.stage(&request("r2", 1, 0));
    let approve = s.button("Approve", AnnouncementKind::Pending);
    let press = Press {
        data: approve.clone(),
        presser: APPROVER.to_owned(),
        at_ms: now_ms(),
    };
    // Sealed by slack's key, relayed as telegram's; and sealed by telegram, relayed as slack's.
    let by_slack = s.connector("slack").seal(Purpose::Press, &press).unwrap();
    assert_eq!(
        s.press("telegram", &by_slack).outcome,
        PressOutcome::Refused
    );
    let by_telegram = s.sealed_press(&approve, APPROVER);
    assert_eq!(
        s.press("slack", &by_telegram).outcome,
        PressOutcome::Refused
    );
    // Under a key from another master (a kernel guessing), and altered in transit.
    let other = ChatKey::derive(&Key::generate().unwrap(), "telegram").unwrap();
    let forged = other.seal(Purpose::Press, &press).unwrap();
    assert_eq!(s.press("telegram", &forged).outcome, PressOutcome::Refused);
    let mut altered = by_telegram.clone().into_bytes();
    let at = altered.len() - 3;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    assert_eq!(s.press("telegram", &altered).outcome, PressOutcome::Refused);
    // An announcement passed off as a press.
    let ToKernel::ChatAnnounce { sealed, .. } = s
        .heard
        .iter()
        .find(|m| matches!(m, ToKernel::ChatAnnounce { .. }))
        .unwrap()
        .clone()
    else {
        unreachable!()
    };
    assert_eq!(s.press("telegram", &sealed).outcome, PressOutcome::Refused);
    assert_eq!(s.refusals(), ["seal"; 5]);
    assert_eq!(s.releases("r2"), 0);
    // An unknown connector gets no answer at all (the daemon cannot seal one), audited too.
    assert!(s.service.chat_press("discord", &by_telegram).is_none());
    assert_eq!(s.refusals().last().unwrap(), "unknown_connector");
    // The genuine press still works.
    assert_eq!(
        s.press("telegram", &by_telegram).outcome,
        PressOutcome::Approved
    );
}

#[test]
fn a_non_approvers_press_is_refused_and_leaves_the_button_working() {
    let mut s = setup();
    s.stage(&request("r3", 1, 0));
    let approve = s.button("Approve", AnnouncementKind::Pending);
    let stranger = s.sealed_press(&approve, "666");
    let answer = s.press("telegram", &stranger);
    assert_eq!(answer.outcome, PressOutcome::Refused);
    assert!(answer.message.contains("not an approver"));
    assert_eq!(s.refusals(), ["not_approver"]);
    assert!(s.service.get("r3").is_some(), "still waiting");
    // An approver on another connector is not one here either.
    s.service.add_approver("slack:666", "test").unwrap();
    assert_eq!(
        s.press("telegram", &s.sealed_press(&approve, "666"))
            .outcome,
        PressOutcome::Refused
    );
    let mine = s.sealed_press(&approve, APPROVER);
    assert_eq!(s.press("telegram", &mine).outcome, PressOutcome::Approved);
}

#[test]
fn a_stale_press_is_refused() {
    let mut s = setup();
    s.stage(&request("r4", 1, 0));
    let approve = s.button("Approve", AnnouncementKind::Pending);
    let old = s
        .connector("telegram")
        .seal(
            Purpose::Press,
            &Press {
                data: approve,
                presser: APPROVER.to_owned(),
                at_ms: now_ms() - MAX_PRESS_AGE_MS - 1_000,
            },
        )
        .unwrap();
    assert_eq!(s.press("telegram", &old).outcome, PressOutcome::Refused);
    assert_eq!(s.refusals(), ["stale"]);
    assert!(s.service.get("r4").is_some());
}

#[test]
fn invariant_i8_a_level_three_approval_has_no_approve_button_but_deny_works() {
    let mut s = setup();
    s.stage(&request("r5", 3, 0));
    let pending = s.last("telegram", AnnouncementKind::Pending);
    let labels: Vec<&str> = pending.buttons.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["Deny"]);
    assert!(pending.text.contains("PIN"), "{}", pending.text);
    let deny = s.button("Deny", AnnouncementKind::Pending);
    let answer = s.press("telegram", &s.sealed_press(&deny, APPROVER));
    assert_eq!(answer.outcome, PressOutcome::Denied);
    assert!(s.service.get("r5").is_none());
    assert!(s.spool.rejected().join("r5").exists());
    let settled = s.last("telegram", AnnouncementKind::Settled);
    assert!(
        settled.text.contains("denied (chat:telegram)"),
        "{}",
        settled.text
    );
}

#[test]
fn invariant_i8_pull_back_works_in_the_undo_window_and_not_after_it() {
    let mut s = setup();
    s.stage(&request("u1", 1, 30));
    let approve = s.button("Approve", AnnouncementKind::Pending);
    let answer = s.press("telegram", &s.sealed_press(&approve, APPROVER));
    assert_eq!(answer.outcome, PressOutcome::Approved);
    assert!(
        answer.message.contains("pull it back"),
        "{}",
        answer.message
    );
    let undo = s.last("telegram", AnnouncementKind::Undo);
    assert_eq!(undo.buttons.len(), 1);
    let pull = s.button("Pull back", AnnouncementKind::Undo);
    // The approve button's sibling (deny) is void now.
    let deny = s
        .last("telegram", AnnouncementKind::Pending)
        .buttons
        .iter()
        .find(|b| b.label == "Deny")
        .unwrap()
        .data
        .clone();
    assert_eq!(
        s.press("telegram", &s.sealed_press(&deny, APPROVER))
            .outcome,
        PressOutcome::Refused
    );
    let answer = s.press("telegram", &s.sealed_press(&pull, APPROVER));
    assert_eq!(answer.outcome, PressOutcome::PulledBack);
    assert!(s.spool.rejected().join("u1").exists());
    assert_eq!(s.releases("u1"), 0);

    // With a one-second window, a press after it is refused and the action runs.
    s.stage(&request("u2", 1, 1));
    let approve = s.button("Approve", AnnouncementKind::Pending);
    assert_eq!(
        s.press("telegram", &s.sealed_press(&approve, APPROVER))
            .outcome,
        PressOutcome::Approved
    );
    let pull = s.button("Pull back", AnnouncementKind::Undo);
    std::thread::sleep(Duration::from_millis(1_200));
    let late = s.press("telegram", &s.sealed_press(&pull, APPROVER));
    assert_eq!(late.outcome, PressOutcome::Refused, "{late:?}");
    assert_eq!(s.releases("u2"), 1);
}

#[test]
fn settling_by_the_cli_announces_settled_and_voids_the_buttons() {
    let mut s = setup();
    s.stage(&request("c1", 1, 0));
    let approve = s.button("Approve", AnnouncementKind::Pending);
    let answer = s.service.operator(
        &OperatorRequest::Approve {
            id: "c1".to_owned(),
            pin: None,
            totp: None,
            remember: None,
        },
        "cli uid=1000",
    );
    assert!(matches!(answer, OperatorAnswer::Done { .. }), "{answer:?}");
    let settled = s.last("telegram", AnnouncementKind::Settled);
    assert_eq!(settled.approval, "c1");
    assert!(settled.buttons.is_empty());
    assert_eq!(
        s.press("telegram", &s.sealed_press(&approve, APPROVER))
            .outcome,
        PressOutcome::Refused
    );
    assert_eq!(s.releases("c1"), 1);
}

#[test]
fn a_resend_announces_what_waits_with_fresh_buttons() {
    let mut s = setup();
    s.stage(&request("w1", 1, 0));
    let old = s.button("Approve", AnnouncementKind::Pending);
    s.service.chat_resend("telegram");
    let new = s.button("Approve", AnnouncementKind::Pending);
    assert_ne!(old, new);
    assert_eq!(
        s.press("telegram", &s.sealed_press(&old, APPROVER)).outcome,
        PressOutcome::Refused
    );
    assert_eq!(
        s.press("telegram", &s.sealed_press(&new, APPROVER)).outcome,
        PressOutcome::Approved
    );
}

#[test]
fn approvers_are_kept_sealed_audited_and_checked() {
    let mut s = setup();
    let state = Key::generate().unwrap();
    // The store of this setup is under another key: use a fresh one to check persistence.
    let dir = s.dir.path().join("other");
    let mut factors = open_factors(&dir, &state);
    assert!(factors.add_approver("telegram:42").unwrap());
    assert!(!factors.add_approver("telegram:42").unwrap());
    assert!(factors.add_approver("not an id").is_err());
    drop(factors);
    let sealed = std::fs::read(dir.join("hitl").join("factors.sealed")).unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("telegram:42"));
    let mut factors = open_factors(&dir, &state);
    assert_eq!(factors.approvers(), ["telegram:42"]);
    assert!(factors.remove_approver("telegram:42").unwrap());
    assert!(factors.approvers().is_empty());

    let listed = s.service.operator(&OperatorRequest::Approvers, "cli");
    assert!(
        matches!(&listed, OperatorAnswer::Approvers { approvers } if approvers == &["telegram:7"]),
        "{listed:?}"
    );
    s.service.operator(
        &OperatorRequest::ApproversRemove {
            id: "telegram:7".to_owned(),
        },
        "cli",
    );
    s.drain();
    let events: Vec<&str> = s.audit.iter().map(|(e, _)| e.as_str()).collect();
    assert!(events.contains(&"hitl.approver.added"), "{events:?}");
    assert!(events.contains(&"hitl.approver.removed"), "{events:?}");
    // Without approvers nothing is announced.
    s.heard.clear();
    s.stage(&request("n1", 1, 0));
    assert!(s.announcements("telegram").is_empty());
}

/// The kernel's end of the daemon's channel: everything the kernel can send is a `ToDaemon`
/// frame, and none of them mints a token or approves. A kernel that relays a press it made up
/// (it has no connector's key) or replays an announcement is refused, audited, and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_i8_the_kernels_end_of_the_channel_cannot_mint_a_token_or_approve() {
    use std::os::unix::fs::MetadataExt;

    use p3ak_hitl::wire::{MAX_FRAME, Start, ToDaemon};
    use p3ak_proto::tokio_io::{FrameReader, write_json};

    let home = tempfile::tempdir().unwrap();
    let me = std::fs::metadata(home.path()).unwrap().uid();
    let state = Key::generate().unwrap();
    let master = Key::generate().unwrap();
    let spool_key = SpoolKey::generate().unwrap();
    let (kernel_end, daemon_end) = tokio::net::UnixStream::pair().unwrap();
    let daemon = tokio::spawn(p3ak_hitl::daemon::run(daemon_end, std::io::sink()));
    let (input, mut output) = kernel_end.into_split();
    let start = Start {
        home: home.path().display().to_string(),
        spool_key: spool_key.to_hex().to_string(),
        state_key: hex::encode(state.expose()),
        previous_state_key: None,
        categories: vec!["write".to_owned()],
        operators: vec![me],
        console: None,
        console_origin: None,
        console_public: false,
        chat_key: Some(hex::encode(master.expose())),
        connectors: vec!["telegram".to_owned()],
    };
    write_json(&mut output, &start, MAX_FRAME).await.unwrap();
    let mut reader = FrameReader::new(input, MAX_FRAME);
    async fn next_of(reader: &mut FrameReader<tokio::net::unix::OwnedReadHalf>) -> ToKernel {
        loop {
            let message: ToKernel =
                tokio::time::timeout(Duration::from_secs(10), reader.read_json())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
            if !matches!(message, ToKernel::Audit { .. }) {
                return message;
            }
        }
    }
    macro_rules! next {
        () => {
            next_of(&mut reader)
        };
    }
    assert!(matches!(next!().await, ToKernel::Ready { .. }));

    // The operator (not the kernel) adds an approver on the operator socket.
    let socket = p3ak_hitl::operator::socket_path(&home.path().join("hitl"));
    tokio::task::spawn_blocking(move || {
        p3ak_hitl::operator::add_approver(&socket, "telegram:7").unwrap()
    })
    .await
    .unwrap();

    let request = request("k1", 1, 0);
    let spool = Spool::new(home.path().join("spool"));
    write_staged(&spool, "write", "k1", &spool_key.seal(&request).unwrap()).unwrap();
    let staged = ToDaemon::Staged {
        id: "k1".to_owned(),
        category: "write".to_owned(),
    };
    write_json(&mut output, &staged, MAX_FRAME).await.unwrap();
    let ToKernel::ChatAnnounce { connector, sealed } = next!().await else {
        panic!("no announcement");
    };
    assert_eq!(connector, "telegram");
    // What the kernel relays does not read as JSON, and names no token.
    assert!(serde_json::from_str::<serde_json::Value>(&sealed).is_err());
    assert!(!sealed.contains("p3ak:"));

    // The kernel's tries: the announcement itself as a press, a press sealed under a key it
    // might have made up, and a made-up button.
    let made_up = ChatKey::derive(&Key::generate().unwrap(), "telegram").unwrap();
    let forged = made_up
        .seal(
            Purpose::Press,
            &Press {
                data: "p3ak:AAAAAAAAAAAAAAAAAAAAAA".to_owned(),
                presser: "7".to_owned(),
                at_ms: now_ms(),
            },
        )
        .unwrap();
    let real_key = ChatKey::derive(&master, "telegram").unwrap();
    for (id, sealed) in [(1, sealed.clone()), (2, forged)] {
        let press = ToDaemon::ChatPress {
            id,
            connector: "telegram".to_owned(),
            sealed,
        };
        write_json(&mut output, &press, MAX_FRAME).await.unwrap();
        let ToKernel::ChatAnswer {
            id: answered,
            sealed: Some(answer),
        } = next!().await
        else {
            panic!("no answer");
        };
        assert_eq!(answered, id);
        let answer: PressAnswer = real_key.open(Purpose::Answer, &answer).unwrap();
        assert_eq!(answer.outcome, PressOutcome::Refused);
    }
    // A guessed token, even sealed with the real key (which the kernel does not have).
    let guessed = real_key
        .seal(
            Purpose::Press,
            &Press {
                data: "p3ak:AAAAAAAAAAAAAAAAAAAAAA".to_owned(),
                presser: "7".to_owned(),
                at_ms: now_ms(),
            },
        )
        .unwrap();
    let press = ToDaemon::ChatPress {
        id: 3,
        connector: "telegram".to_owned(),
        sealed: guessed,
    };
    write_json(&mut output, &press, MAX_FRAME).await.unwrap();
    let ToKernel::ChatAnswer {
        sealed: Some(answer),
        ..
    } = next!().await
    else {
        panic!("no answer");
    };
    let answer: PressAnswer = real_key.open(Purpose::Answer, &answer).unwrap();
    assert_eq!(answer.outcome, PressOutcome::Refused);

    // Still waiting: nothing was approved. Stop; the item is withdrawn, never released.
    write_json(&mut output, &ToDaemon::Shutdown, MAX_FRAME)
        .await
        .unwrap();
    loop {
        match next!().await {
            ToKernel::Refused { id, ending } => {
                assert_eq!((id.as_str(), ending.as_str()), ("k1", "withdrawn"));
                break;
            }
            ToKernel::Released { .. } => panic!("released"),
            _ => {}
        }
    }
    tokio::time::timeout(Duration::from_secs(10), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
