//! `calendar` against a real Radicale on loopback.

use p3ak_proto::ErrorKind;
use p3ak_testkit::servers::radicale::Radicale;
use serde_json::{Value, json};

use crate::kernel::{Kernel, start_with_key};

const PASSWORD: &str = "pw-of-the-owner";

fn setup() -> (Radicale, Kernel) {
    p3ak_testkit::need::radicale();
    let server = Radicale::start("owner", PASSWORD, &[("work", "Work"), ("home", "Home")]);
    let kernel = start_with_key(
        "calendar",
        json!({"url": server.url(), "user": "owner", "timeout_secs": 10}),
        PASSWORD,
    );
    (server, kernel)
}

fn events(kernel: &mut Kernel, calendar: &str, from: &str, to: &str) -> Vec<Value> {
    let out = kernel.ok(
        "a",
        "events",
        json!({"calendar": calendar, "from": from, "to": to}),
    );
    assert_eq!(out["truncated"], false);
    out["events"].as_array().unwrap().clone()
}

#[test]
#[ignore = "needs radicale"]
fn discover_create_list_update_move_delete() {
    let (server, mut kernel) = setup();
    let tiers: Vec<_> = kernel
        .register
        .actions
        .iter()
        .map(|a| (a.name.clone(), a.tier))
        .collect();
    assert!(tiers.contains(&("delete".to_owned(), p3ak_proto::Tier::Commit)));
    assert!(tiers.contains(&("events".to_owned(), p3ak_proto::Tier::Observe)));
    assert!(tiers.contains(&("create".to_owned(), p3ak_proto::Tier::Act)));

    let out = kernel.ok("a", "calendars", json!({}));
    let mut calendars = out["calendars"].as_array().unwrap().clone();
    calendars.sort_by_key(|c| c["id"].as_str().unwrap().to_owned());
    assert_eq!(
        calendars,
        vec![
            json!({"id": "home", "name": "Home", "components": ["VEVENT"]}),
            json!({"id": "work", "name": "Work", "components": ["VEVENT"]}),
        ]
    );

    let created = kernel.ok(
        "a",
        "create",
        json!({"calendar": "work", "summary": "Budget review, Q1; draft",
               "start": "2026-03-02T10:00:00+01:00", "end": "2026-03-02T11:30:00+01:00",
               "location": "Room 4", "description": "Bring the numbers.\nAll of them.",
               "invitees": ["ann@example.com", "bob@partner.example"]}),
    );
    let uid = created["uid"].as_str().unwrap().to_owned();
    assert!(created["etag"].is_string(), "{created}");
    let day = kernel.ok(
        "a",
        "create",
        json!({"calendar": "work", "summary": "Offsite", "start": "2026-03-05", "end": "2026-03-06"}),
    );
    // On the server: a real iCalendar object named after the uid.
    let stored = server.stored("work");
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored.iter().any(|(name, text)| {
        *name == format!("{uid}.ics")
            && text
                .replace("\r\n ", "")
                .contains("RSVP=TRUE:mailto:ann@example.com")
    }));

    // The time range filters.
    let listed = events(&mut kernel, "work", "2026-03-02", "2026-03-02");
    assert_eq!(listed.len(), 1, "{listed:?}");
    let event = &listed[0];
    assert_eq!(event["uid"], uid);
    assert_eq!(event["summary"], "Budget review, Q1; draft");
    assert_eq!(event["start"], "2026-03-02T09:00:00Z");
    assert_eq!(event["end"], "2026-03-02T10:30:00Z");
    assert_eq!(event["all_day"], false);
    assert_eq!(event["location"], "Room 4");
    assert_eq!(event["description"], "Bring the numbers.\nAll of them.");
    assert_eq!(
        event["invitees"],
        json!(["ann@example.com", "bob@partner.example"])
    );
    assert_eq!(event["recurrence"], Value::Null);
    let all = events(
        &mut kernel,
        "work",
        "2026-03-01T00:00:00Z",
        "2026-03-31T00:00:00Z",
    );
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["uid"], day["uid"]);
    assert_eq!(
        (&all[1]["start"], &all[1]["end"], &all[1]["all_day"]),
        (&json!("2026-03-05"), &json!("2026-03-06"), &json!(true))
    );
    assert!(events(&mut kernel, "work", "2026-04-01", "2026-04-30").is_empty());
    assert!(events(&mut kernel, "home", "2026-03-01", "2026-03-31").is_empty());

    // Update: only what is given changes; a stale etag is a conflict, not an overwrite.
    let stale = event["etag"].as_str().unwrap().to_owned();
    let updated = kernel.ok(
        "a",
        "update",
        json!({"calendar": "work", "uid": uid, "etag": stale, "summary": "Budget review",
               "end": "2026-03-02T12:00:00Z"}),
    );
    assert_ne!(updated["etag"], json!(stale));
    let event = &events(&mut kernel, "work", "2026-03-02", "2026-03-02")[0];
    assert_eq!(event["summary"], "Budget review");
    assert_eq!(event["start"], "2026-03-02T09:00:00Z");
    assert_eq!(event["end"], "2026-03-02T12:00:00Z");
    assert_eq!(event["location"], "Room 4");
    assert_eq!(event["invitees"].as_array().unwrap().len(), 2);
    let conflict = kernel
        .invoke(
            "a",
            "update",
            json!({"calendar": "work", "uid": uid, "etag": stale, "summary": "Overwritten"}),
        )
        .unwrap_err();
    assert_eq!(conflict.kind, ErrorKind::Permanent);
    assert!(
        conflict.message.contains("changed on the server"),
        "{conflict:?}"
    );
    assert_eq!(
        events(&mut kernel, "work", "2026-03-02", "2026-03-02")[0]["summary"],
        "Budget review"
    );

    // Move to the other calendar.
    let moved = kernel.ok(
        "a",
        "move",
        json!({"calendar": "work", "uid": uid, "to": "home"}),
    );
    assert_eq!(moved["calendar"], "home");
    assert_eq!(
        events(&mut kernel, "work", "2026-03-02", "2026-03-02").len(),
        0
    );
    let there = events(&mut kernel, "home", "2026-03-02", "2026-03-02");
    assert_eq!(there[0]["uid"], uid);
    assert_eq!(server.stored("home").len(), 1);

    // Delete.
    let stale = kernel
        .invoke(
            "a",
            "delete",
            json!({"calendar": "home", "uid": uid, "etag": "\"not-the-etag\""}),
        )
        .unwrap_err();
    assert!(stale.message.contains("changed on the server"), "{stale:?}");
    kernel.ok("a", "delete", json!({"calendar": "home", "uid": uid}));
    assert!(events(&mut kernel, "home", "2026-03-01", "2026-03-31").is_empty());
    assert!(server.stored("home").is_empty());
    let gone = kernel.invalid("a", "delete", json!({"calendar": "home", "uid": uid}));
    assert!(gone.contains("no event"), "{gone}");
    kernel.shutdown();
}

#[test]
#[ignore = "needs radicale"]
fn bad_inputs_are_clear_errors() {
    let (server, mut kernel) = setup();
    let ok = json!({"calendar": "work", "summary": "x", "start": "2026-03-02T10:00:00Z",
                    "end": "2026-03-02T11:00:00Z"});
    let with = |key: &str, value: Value| {
        let mut args = ok.clone();
        args[key] = value;
        args
    };
    for (args, expected) in [
        (with("start", json!("tomorrow")), "not RFC 3339"),
        (with("end", json!("2026-13-01")), "not RFC 3339"),
        (with("end", json!("2026-03-02T09:00:00Z")), "before"),
        (with("end", json!("2026-03-03")), "both be dates"),
        (with("calendar", json!("nope")), "no calendar `nope`"),
        (with("calendar", json!("../owner")), "`..`"),
        (with("invitees", json!(["not-an-email"])), "not an email"),
        (
            with("invitees", json!(["a@x.org\r\nATTENDEE:mailto:evil@x.org"])),
            "not an email",
        ),
        (with("invitees", json!("a@x.org")), "array"),
        (with("summary", json!("")), "summary"),
        (with("colour", json!("red")), "colour"),
    ] {
        let message = kernel.invalid("a", "create", args.clone());
        assert!(message.contains(expected), "{args}: {message}");
    }
    for uid in ["../work/x", "a/b", "..", ""] {
        let message = kernel.invalid(
            "a",
            "update",
            json!({"calendar": "work", "uid": uid, "summary": "y"}),
        );
        assert!(message.contains("uid"), "{uid}: {message}");
    }
    let message = kernel.invalid(
        "a",
        "events",
        json!({"calendar": "work", "from": "2026-03-02", "to": "2026-03-01"}),
    );
    assert!(message.contains("after"), "{message}");
    let message = kernel.invalid(
        "a",
        "move",
        json!({"calendar": "work", "uid": "x", "to": "work"}),
    );
    assert!(message.contains("`to`"), "{message}");
    assert!(server.stored("work").is_empty());
    kernel.shutdown();
}

#[test]
#[ignore = "needs radicale"]
fn a_wrong_password_is_an_auth_error() {
    p3ak_testkit::need::radicale();
    let server = Radicale::start("owner", PASSWORD, &[("work", "Work")]);
    let mut kernel = start_with_key(
        "calendar",
        json!({"url": server.url(), "user": "owner", "timeout_secs": 10}),
        "not-the-password",
    );
    let e = kernel.invoke("a", "calendars", json!({})).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e:?}");
    assert!(e.message.contains("refused the login"), "{e:?}");
    assert!(!e.message.contains("not-the-password"));
    kernel.shutdown();
}

/// A hostile "CalDAV server" on loopback: every request gets `status` and `body`.
fn hostile(status: u16, body: String) -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut request = vec![0; length];
            let _ = reader.read_exact(&mut request);
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn hostile_servers_get_clear_errors() {
    let multistatus = |inner: &str| {
        format!(
            "<?xml version=\"1.0\"?><d:multistatus xmlns:d=\"DAV:\" \
             xmlns:c=\"urn:ietf:params:xml:ns:caldav\">{inner}</d:multistatus>"
        )
    };
    let home_elsewhere = multistatus(
        "<d:response><d:href>/</d:href><d:propstat><d:prop><c:calendar-home-set>\
         <d:href>http://elsewhere.invalid/owner/</d:href></c:calendar-home-set></d:prop>\
         <d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>",
    );
    for (status, body, expected) in [
        (
            207,
            multistatus(&"<d:response/>".repeat(5000)),
            "max_response",
        ),
        (
            207,
            "<?xml version=\"1.0\"?><!DOCTYPE d [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\
             <d:multistatus xmlns:d=\"DAV:\"><d:response><d:href>&x;</d:href></d:response>\
             </d:multistatus>"
                .to_owned(),
            "unknown XML entity",
        ),
        (
            207,
            "<d:multistatus xmlns:d=\"DAV:\"><d:response>".to_owned(),
            "XML",
        ),
        (207, home_elsewhere, "another host"),
        (301, String::new(), "not a multistatus"),
        (200, "hello".to_owned(), "not a multistatus"),
    ] {
        let port = hostile(status, body);
        let mut kernel = start_with_key(
            "calendar",
            json!({"url": format!("http://127.0.0.1:{port}/"), "user": "owner",
                   "timeout_secs": 5, "max_response": 20000}),
            PASSWORD,
        );
        let e = kernel.invoke("a", "calendars", json!({})).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent, "{e:?}");
        assert!(e.message.contains(expected), "{expected}: {e:?}");
        assert!(!e.message.contains("root:"), "{e:?}");
        kernel.shutdown();
    }
}
