//! Grants end to end on the road, in-process: a real policy, broker and vault, fakes for the
//! plugin and the approval desk (which answers the way the daemon would, "remember" included).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed step should fail loudly"
)]

use std::sync::Mutex;
use std::time::Duration;

use p3ak_approval::wire::Refusal;
use p3ak_crypto::Passphrase;
use p3ak_policy::{Declared, Policy, PolicyCell, Tier};
use p3ak_proto::{Invoke, Message, ToolCall, ToolResult};
use p3ak_vault::{KdfParams, Protection};
use serde_json::json;
use tokio::sync::mpsc;

use super::*;
use crate::KernelError;
use crate::audit::BoxFuture;
use crate::authorize::Enforcer;
use crate::broker::Broker;
use crate::host::HostError;
use crate::proposal::{OfferedAction, ToolTable, compile_schema, tool_name};
use crate::road::{ApprovalDesk, PluginLink, Plugins, Road, RoadParts};

const DAY: u64 = 86_400;

#[derive(Default)]
struct MemoryAudit {
    events: Mutex<Vec<AuditEvent>>,
}

impl MemoryAudit {
    fn kinds(&self) -> Vec<&'static str> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(AuditEvent::declared_kind)
            .collect()
    }
}

impl AuditSink for MemoryAudit {
    fn append_all(&self, batch: Vec<AuditEvent>) -> BoxFuture<'_, Result<u64, KernelError>> {
        Box::pin(async move {
            let mut events = self.events.lock().unwrap();
            let first = events.len() as u64;
            events.extend(batch);
            Ok(first)
        })
    }
}

#[derive(Default)]
struct Mail {
    sent: Mutex<Vec<Invoke>>,
}

impl PluginLink for Mail {
    fn request(
        &self,
        message: Message,
        _timeout: Duration,
        _chunks: Option<mpsc::Sender<String>>,
    ) -> BoxFuture<'_, Result<Message, HostError>> {
        Box::pin(async move {
            let Message::Invoke(invoke) = message else {
                panic!("not an invoke");
            };
            self.sent.lock().unwrap().push(invoke);
            Ok(Message::Result(ToolResult {
                output: json!("sent"),
            }))
        })
    }
}

struct OnlyMail(Arc<Mail>);

impl Plugins for OnlyMail {
    fn link(&self, name: &str) -> Option<Arc<dyn PluginLink>> {
        (name == "mail").then(|| Arc::clone(&self.0) as Arc<dyn PluginLink>)
    }
}

/// A clock the test moves.
struct Moving(Mutex<jiff::Zoned>);

impl Clock for Moving {
    fn now(&self) -> jiff::Zoned {
        self.0.lock().unwrap().clone()
    }
}

impl Moving {
    fn advance(&self, secs: u64) {
        let mut now = self.0.lock().unwrap();
        *now = now
            .checked_add(jiff::SignedDuration::from_secs(
                i64::try_from(secs).unwrap(),
            ))
            .unwrap();
    }
}

/// Approves what is staged, as the daemon would release it, with the owner's "remember"; or,
/// with `swap`, first replaces the running policy (an approval that was waiting across a
/// reload).
struct Desk {
    pending: Arc<PendingQueue>,
    grants: Arc<GrantBook>,
    audit: Arc<MemoryAudit>,
    clock: Arc<Moving>,
    remember: Mutex<Option<Remember>>,
    swap: Mutex<Option<(Arc<PolicyCell>, Policy)>>,
    staged: Mutex<Vec<Request>>,
}

impl ApprovalDesk for Desk {
    fn stage<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Request, KernelError>> {
        Box::pin(async move {
            self.staged.lock().unwrap().push(request.clone());
            if let Some((cell, policy)) = self.swap.lock().unwrap().take() {
                cell.replace(policy);
            }
            let remember = self.remember.lock().unwrap().take();
            let desk = ReleaseDesk {
                pending: &self.pending,
                grants: &self.grants,
                audit: self.audit.as_ref(),
                clock: self.clock.as_ref(),
            };
            desk.release(
                request,
                &request.binding(),
                vec!["console_tap".to_owned()],
                remember,
            )
            .await
            .unwrap();
            Ok(request.clone())
        })
    }

    fn withdraw(&self, _id: &str) {}
}

const POLICY: &str = "
version: 1
send:
  mail.send: { level: 2, crawfish: 0s }
";

struct Bench {
    road: Road,
    cell: Arc<PolicyCell>,
    mail: Arc<Mail>,
    desk: Arc<Desk>,
    audit: Arc<MemoryAudit>,
    clock: Arc<Moving>,
    grants: Arc<GrantBook>,
    table: ToolTable,
    _dir: tempfile::TempDir,
}

fn bench(policy: &str) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::create(
        &dir.path().join("kernel.vault"),
        Protection::Passphrase {
            passphrase: &Passphrase::new("grant test".into()),
            kdf: KdfParams {
                memory_kib: KdfParams::MIN_MEMORY_KIB,
                iterations: 1,
                parallelism: 1,
            },
        },
    )
    .unwrap();
    let vault = Arc::new(vault);
    let broker = Arc::new(Broker::load(&vault).unwrap());
    let grants = Arc::new(GrantBook::load(Arc::clone(&vault), 0).unwrap());
    let audit = Arc::new(MemoryAudit::default());
    let clock = Arc::new(Moving(Mutex::new(
        jiff::civil::date(2026, 12, 5)
            .at(12, 0, 0, 0)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap(),
    )));
    let pending = Arc::new(PendingQueue::default());
    let desk = Arc::new(Desk {
        pending: Arc::clone(&pending),
        grants: Arc::clone(&grants),
        audit: Arc::clone(&audit),
        clock: Arc::clone(&clock),
        remember: Mutex::new(None),
        swap: Mutex::new(None),
        staged: Mutex::new(Vec::new()),
    });
    let mail = Arc::new(Mail::default());
    let cell = Arc::new(PolicyCell::new(Policy::from_yaml(policy).unwrap()));
    let road = Road::new(RoadParts {
        enforcer: Enforcer::new(Arc::clone(&cell)),
        broker,
        audit: Arc::clone(&audit) as Arc<dyn AuditSink>,
        plugins: Arc::new(OnlyMail(Arc::clone(&mail))),
        desk: Arc::clone(&desk) as Arc<dyn ApprovalDesk>,
        pending,
        clock: Arc::clone(&clock) as Arc<dyn Clock>,
        tool_timeout: Duration::from_secs(5),
    })
    .with_grants(Arc::clone(&grants));
    let schema = json!({"type": "object"});
    let table = ToolTable::new([OfferedAction {
        tool_name: tool_name("mail.send"),
        action: "mail.send".to_owned(),
        plugin: "mail".to_owned(),
        plugin_action: "send".to_owned(),
        description: String::new(),
        validator: Arc::new(compile_schema(&schema).unwrap()),
        parameters: schema,
        declared: Declared::first_party(Tier::Act),
    }]);
    Bench {
        road,
        cell,
        mail,
        desk,
        audit,
        clock,
        grants,
        table,
        _dir: dir,
    }
}

impl Bench {
    async fn send(&self, to: &str, body: &str) -> String {
        let (events, _notices) = mpsc::unbounded_channel();
        let call = ToolCall {
            id: "call-1".to_owned(),
            name: tool_name("mail.send"),
            arguments: json!({"to": to, "body": body}),
        };
        self.road
            .handle_call(
                &crate::road::Caller {
                    agent: "assistant",
                    channel: "cli",
                    conversation: None,
                    sender: None,
                    chain: None,
                },
                &call,
                &self.table,
                &events,
            )
            .await
            .unwrap()
    }

    fn remember(&self, args: &[&str], for_secs: u64) {
        *self.desk.remember.lock().unwrap() = Some(Remember {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            for_secs,
        });
    }

    fn staged(&self) -> usize {
        self.desk.staged.lock().unwrap().len()
    }

    fn sent(&self) -> usize {
        self.mail.sent.lock().unwrap().len()
    }
}

fn staged_request(level: u8) -> Request {
    Request {
        id: "e1".to_owned(),
        agent: "assistant".to_owned(),
        action: "mail.send".to_owned(),
        args: json!({"to": "bob@example.com", "body": "hi"}),
        level,
        rules: vec![],
        category: "send".to_owned(),
        asked_ms: 1,
        expires_ms: 2,
        crawfish_secs: 0,
        confirm_twice: false,
        reasons: Vec::new(),
    }
}

#[tokio::test]
async fn an_approval_remembered_becomes_a_stored_audited_grant_pinning_the_approved_values() {
    let b = bench(POLICY);
    b.remember(&["to"], 30 * DAY);
    assert_eq!(b.send("bob@example.com", "hello").await, "\"sent\"");
    assert_eq!(b.sent(), 1);
    let grants = b.grants.list();
    assert_eq!(grants.len(), 1);
    let g = &grants[0];
    assert_eq!(g.action, "mail.send");
    assert_eq!(g.level, 2);
    assert_eq!(
        g.args,
        BTreeMap::from([("to".to_owned(), json!("bob@example.com"))])
    );
    let now = b.clock.unix_ms() / 1000;
    assert_eq!(
        g.expires_at - g.created_at,
        i64::try_from(30 * DAY).unwrap()
    );
    assert_eq!(g.created_at, now);
    // Minted before the approved action ran, and audited.
    let kinds = b.audit.kinds();
    let created = kinds.iter().position(|k| *k == "grant.created").unwrap();
    let executed = kinds.iter().position(|k| *k == "execution").unwrap();
    assert!(created < executed, "{kinds:?}");
    // Stored in the vault: a kernel that starts again still has it.
    let vault = Arc::clone(b.grants.vault.as_ref().unwrap());
    let reloaded = GrantBook::load(Arc::clone(&vault), now).unwrap();
    assert_eq!(reloaded.list(), grants);
    // Handed to the policy while it lasts, for this agent's calls only, and not after.
    let end = now + i64::try_from(30 * DAY).unwrap();
    assert_eq!(b.grants.live_for("assistant", now).len(), 1);
    assert_eq!(b.grants.live_for("intruder", now).len(), 0);
    assert_eq!(b.grants.live_for("assistant", end).len(), 0);
    // Once expired, the next start deletes it from the vault.
    assert!(
        GrantBook::load(Arc::clone(&vault), end)
            .unwrap()
            .list()
            .is_empty()
    );
    assert!(GrantBook::load(vault, now).unwrap().list().is_empty());
}

#[tokio::test]
async fn a_revoked_grant_is_gone_from_the_vault_and_the_policy() {
    let b = bench(POLICY);
    b.remember(&["to"], DAY);
    b.send("bob@example.com", "hello").await;
    let id = b.grants.list()[0].id.clone();
    let revoked = b.grants.revoke(&id).unwrap();
    assert_eq!(revoked.id, id);
    assert!(b.grants.live_for("assistant", 0).is_empty());
    let vault = Arc::clone(b.grants.vault.as_ref().unwrap());
    assert!(GrantBook::load(vault, 0).unwrap().list().is_empty());
    assert!(matches!(b.grants.revoke(&id), Err(GrantError::Unknown(_))));
}

#[tokio::test]
async fn level_five_is_never_remembered_even_if_the_release_claims_a_lower_level() {
    let pending = PendingQueue::default();
    let grants = Arc::new(GrantBook::in_memory());
    let audit = MemoryAudit::default();
    let clock = Moving(Mutex::new(jiff::Zoned::now()));
    let staged = staged_request(5);
    let ticket = pending.add(&staged);
    // The released copy's level is not bound: a daemon (or a spool file) that says 2 does
    // not make a level-5 approval rememberable.
    let mut released = staged.clone();
    released.level = 2;
    let desk = ReleaseDesk {
        pending: &pending,
        grants: &grants,
        audit: &audit,
        clock: &clock,
    };
    desk.release(
        &released,
        &staged.binding(),
        vec!["webauthn+pin".to_owned()],
        Some(Remember {
            args: vec!["to".to_owned()],
            for_secs: DAY,
        }),
    )
    .await
    .unwrap();
    assert!(grants.list().is_empty());
    assert_eq!(audit.kinds(), ["grant.refused"]);
    // The approval itself still stands.
    assert!(matches!(
        ticket.wait(&pending, Duration::from_secs(1)).await,
        Some(crate::pending::Resolution::Approved(_))
    ));
}

#[tokio::test]
async fn a_release_for_something_not_staged_mints_nothing() {
    let pending = PendingQueue::default();
    let grants = Arc::new(GrantBook::in_memory());
    let audit = MemoryAudit::default();
    let clock = Moving(Mutex::new(jiff::Zoned::now()));
    let staged = staged_request(2);
    let _ticket = pending.add(&staged);
    let mut other = staged.clone();
    other.args = json!({"to": "mallory@example.com", "body": "hi"});
    let desk = ReleaseDesk {
        pending: &pending,
        grants: &grants,
        audit: &audit,
        clock: &clock,
    };
    let remember = Remember {
        args: vec!["to".to_owned()],
        for_secs: DAY,
    };
    assert!(
        desk.release(&other, &other.binding(), vec![], Some(remember))
            .await
            .is_err()
    );
    assert!(grants.list().is_empty());
}

#[tokio::test]
async fn a_waiting_approval_keeps_the_verdict_it_was_decided_under_and_the_next_call_gets_the_new_policy()
 {
    let b = bench(POLICY);
    let stricter = Policy::from_yaml(
        "
version: 1
send:
  mail.send: { level: 2, crawfish: 0s }
forbid:
  - id: no-mail
    actions: [mail.send]
",
    )
    .unwrap();
    // The policy is swapped while the approval waits: the approved call still runs.
    *b.desk.swap.lock().unwrap() = Some((Arc::clone(&b.cell), stricter));
    assert_eq!(b.send("bob@example.com", "hello").await, "\"sent\"");
    assert_eq!(b.sent(), 1);
    // The next call is decided by the new policy.
    assert_eq!(
        b.send("bob@example.com", "again").await,
        crate::road::NOT_PERMITTED
    );
    assert_eq!(b.sent(), 1);
    assert_eq!(b.staged(), 1);
}

#[tokio::test]
async fn a_remembered_approval_lets_the_same_values_through_and_nothing_else() {
    let b = bench(POLICY);
    b.remember(&["to"], 30 * DAY);
    b.send("bob@example.com", "first").await;
    assert_eq!((b.staged(), b.sent()), (1, 1));
    // Same recipient, another body: no approval needed.
    assert_eq!(b.send("bob@example.com", "second").await, "\"sent\"");
    assert_eq!((b.staged(), b.sent()), (1, 2));
    let decision = b
        .audit
        .events
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|e| match e {
            AuditEvent::Decision { verdict, .. } => Some(verdict.rules.clone()),
            _ => None,
        })
        .unwrap();
    let id = b.grants.list()[0].id.clone();
    assert!(decision.contains(&format!("grant:{id}")), "{decision:?}");
    // Another recipient still asks.
    b.send("eve@example.com", "third").await;
    assert_eq!(b.staged(), 2);
    // Expired: asks again.
    b.clock.advance(30 * DAY);
    b.send("bob@example.com", "late").await;
    assert_eq!(b.staged(), 3);
}

#[tokio::test]
async fn a_revoked_grant_no_longer_applies() {
    let b = bench(POLICY);
    b.remember(&["to"], DAY);
    b.send("bob@example.com", "first").await;
    b.send("bob@example.com", "second").await;
    assert_eq!(b.staged(), 1, "the grant applies before it is revoked");
    let id = b.grants.list()[0].id.clone();
    b.grants.revoke(&id).unwrap();
    b.send("bob@example.com", "third").await;
    assert_eq!(b.staged(), 2);
}

#[test]
fn a_refusal_reaches_no_grant() {
    // The daemon's refusal hands nothing to mint from.
    let pending = PendingQueue::default();
    let staged = staged_request(2);
    let _ticket = pending.add(&staged);
    pending.refused(&staged.id, Refusal::Denied);
    assert!(
        pending
            .take_release(&staged, &staged.binding(), vec![])
            .is_err()
    );
}

#[tokio::test]
async fn the_escalation_staged_for_the_approver_carries_every_rule_with_its_why() {
    let b = bench(
        "
version: 1
send:
  mail.send:
    level: 1
    crawfish: 0s
    rules:
      - id: new-recipient
        when: { args.to: { like: '*@elsewhere.example' } }
        level: 2
        why: not one of our contacts
",
    );
    b.send("eve@elsewhere.example", "hi").await;
    let staged = b.desk.staged.lock().unwrap()[0].clone();
    assert_eq!(staged.level, 2);
    let reason = staged
        .reasons
        .iter()
        .find(|r| r.rule == "new-recipient")
        .unwrap_or_else(|| panic!("{:?}", staged.reasons));
    assert_eq!(reason.effect, "level 2");
    assert_eq!(reason.why.as_deref(), Some("not one of our contacts"));
}
