//! End to end: a real kernel with the `calendar` plugin logged in to a real Radicale (its
//! password a host-bound secret) and the `web` plugin, the scripted provider proposing the
//! calls, the policy deciding.

#![cfg(test)]

use std::time::{Duration, Instant};

use p3ak_testkit::http::HeaderRecorder;
use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::servers::radicale::Radicale;
use p3ak_testkit::{Home, Kernel, need};
use serde_json::{Value, json};

const PASS: &str = "calweb test passphrase";
const CALDAV_PASSWORD: &str = "radicale-password-of-the-owner";

const POLICY: &str = "version: 1
read:
  calendar.calendars: { level: 0 }
  calendar.events: { level: 0 }
  web.search: { level: 0 }
  web.fetch:
    level: 0
    rules:
      - id: no-localhost
        when: { args.url: { like: 'http://localhost*' } }
        reject: true
write:
  calendar.create: { level: 0 }
  calendar.move: { level: 0 }
destroy:
  calendar.delete: { level: 1, timeout: 60s }
";

const DENTIST: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n\
UID:dentist-2026\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260310T080000Z\r\n\
DTEND:20260310T090000Z\r\nSUMMARY:Dentist\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

fn call(name: &str, arguments: Value) -> Value {
    json!({"name": name, "arguments": arguments})
}

fn tools(calls: Vec<Value>) -> Value {
    json!({"content": "", "tool_calls": calls})
}

fn say(text: &str) -> Value {
    json!({ "content": text })
}

#[test]
#[ignore = "needs radicale"]
fn calendar_and_web_through_the_road() {
    need::radicale();
    let radicale = Radicale::start(
        "owner",
        CALDAV_PASSWORD,
        &[("work", "Work"), ("home", "Home")],
    );
    radicale.seed("work", "dentist-2026.ics", DENTIST);
    let page = HeaderRecorder::start("user-agent", 10, |_| {
        "<!doctype html><html><head><title>Tides</title></head><body><h1>Brest</h1>\
         <p>High tide at 06:12.</p></body></html>"
            .to_owned()
    });
    let searx = HeaderRecorder::start("user-agent", 10, |_| {
        json!({"query": "tides", "results": [
            {"title": "Tide <b>tables</b>", "url": "https://tides.example/", "content": "Every port"}
        ]})
        .to_string()
    });
    let blocked = HeaderRecorder::start("user-agent", 10, |_| "private".to_owned());

    let home = Home::init(PASS);
    let script = json!({"responses": [
        tools(vec![
            call("calendar__create", json!({"calendar": "work", "summary": "Budget review",
                "start": "2026-03-02T10:00:00Z", "end": "2026-03-02T11:00:00Z",
                "invitees": ["ann@example.com"]})),
            call("calendar__move", json!({"calendar": "work", "uid": "dentist-2026", "to": "home"})),
        ]),
        say("created and moved"),
        tools(vec![call("calendar__delete", json!({"calendar": "home", "uid": "dentist-2026"}))]),
        say("deleted"),
        tools(vec![
            call("web__fetch", json!({"url": format!("http://127.0.0.1:{}/tides", page.port)})),
            call("web__search", json!({"query": "tides"})),
        ]),
        say("read"),
        tools(vec![call("web__fetch", json!({"url": format!("http://localhost:{}/private", blocked.port)}))]),
        say("refused"),
    ]});
    home.write_scripted(POLICY, &script);
    let config = format!(
        "[kernel]\n{}ping_interval = \"1s\"\nping_timeout = \"2s\"\nrestart_limit = 3\n\
         tool_timeout = \"20s\"\n\n\
         [hitl]\nconsole = \"127.0.0.1:0\"\n\n\
         [plugins.model]\nbuiltin = \"scripted\"\n\
         config = {{ script = \"script.json\", record = \"requests.jsonl\" }}\n\n\
         [plugins.calendar]\nbuiltin = \"calendar\"\ncredential = \"caldav\"\n\
         config = {{ url = \"{}\", user = \"owner\", timeout_secs = 10 }}\n\n\
         [plugins.web]\nbuiltin = \"web\"\n\
         config = {{ timeout_secs = 10, search = {{ engine = \"searxng\", url = \"http://127.0.0.1:{}/\" }} }}\n",
        sandbox_setting(),
        radicale.url(),
        searx.port,
    );
    std::fs::write(home.home().join("config.toml"), config).unwrap();
    home.set_secret(
        "caldav",
        &["--host", "127.0.0.1", "--scope", "calendar.connect"],
        CALDAV_PASSWORD,
    );
    let mut k = Kernel::new(home);
    k.up();

    // Create and move: allowed, run at once.
    let reply = k.ok(&["chat", "-m", "add the budget review; move the dentist home"]);
    assert!(reply.contains("created and moved"), "{reply}");
    let results = k.tool_results(1);
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results[0].contains("\"uid\""), "{results:?}");
    assert!(results[1].contains("\"home\""), "{results:?}");
    let work = radicale.stored("work");
    assert_eq!(work.len(), 1, "{work:?}");
    assert!(work[0].1.contains("SUMMARY:Budget review"), "{work:?}");
    assert_eq!(radicale.stored("home").len(), 1);

    // Delete escalates and runs only after the owner's yes.
    let mut chat = k.cmd();
    chat.args(["chat", "-m", "delete the dentist"])
        .timeout(Duration::from_secs(60));
    let handle = std::thread::spawn(move || chat.output().unwrap());
    let item = k.wait_pending(1)[0].clone();
    assert_eq!(item["request"]["action"], "calendar.delete");
    assert_eq!(item["request"]["args"]["uid"], "dentist-2026");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(radicale.stored("home").len(), 1, "deleted before the yes");
    let id = item["request"]["id"].as_str().unwrap().to_owned();
    k.ok(&["approve", &id]);
    let out = handle.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !radicale.stored("home").is_empty() {
        assert!(Instant::now() < deadline, "not deleted after the yes");
        std::thread::sleep(Duration::from_millis(100));
    }
    // One conversation: each request carries the results so far, the newest last.
    let results = k.tool_results(3);
    assert!(results[2].contains("\"deleted\":true"), "{results:?}");

    // A page as text and a search.
    let reply = k.ok(&["chat", "-m", "tides?"]);
    assert!(reply.contains("read"), "{reply}");
    let results = k.tool_results(5)[3..].to_vec();
    assert!(results[0].contains("High tide at 06:12."), "{results:?}");
    assert!(results[0].contains("Tides"), "{results:?}");
    assert!(!results[0].contains("<h1>"), "{results:?}");
    assert!(results[1].contains("https://tides.example/"), "{results:?}");
    assert!(results[1].contains("Tide tables"), "{results:?}");
    assert_eq!(page.seen().len(), 1);
    assert_eq!(searx.seen().len(), 1);

    // A fetch the policy rejects never reaches the server.
    let reply = k.ok(&["chat", "-m", "read my private page"]);
    assert!(reply.contains("refused"), "{reply}");
    assert_eq!(k.tool_results(7)[5..], ["action not permitted"]);
    assert!(
        blocked.seen().is_empty(),
        "the rejected fetch reached the server"
    );
    // The password never reached the audit log.
    let audit = serde_json::to_string(&k.audit()).unwrap();
    assert!(!audit.contains(CALDAV_PASSWORD));
}
