//! A chat message's way through the kernel: a person writes to the bot (a loopback fake of
//! Telegram's Bot API), the `telegram` connector plugin long-polls it, the kernel pairs,
//! admits (its `inbound` entry durable), runs a turn on the scripted provider (streaming) and
//! sends the first streamed piece back; the fake records the bot's `sendMessage`. What is
//! measured is the time from the message being available to the first piece of the reply
//! arriving at the platform: the kernel's and the connector's overhead, with a provider that
//! answers at once.
//!
//! `cargo bench -p p3ak --bench connector`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use p3ak_testkit::chat::telegram::Fake;
use p3ak_testkit::home::p3ak_path;
use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::{Home, Kernel};

const TOKEN: &str = "123456:bench-token-AbCdEf";
const MESSAGES: usize = 300;

fn main() {
    let fake = Fake::start(TOKEN);
    let home = Home::init("bench passphrase");
    let responses: Vec<serde_json::Value> = (0..=MESSAGES + 1)
        .map(|i| serde_json::json!({"chunks": [format!("pong {i}"), " and the rest of the reply"]}))
        .collect();
    home.write_scripted(
        "version: 1\n",
        &serde_json::json!({ "responses": responses }),
    );
    std::fs::write(
        home.home().join("config.toml"),
        format!(
            "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n\
             [connectors]\nper_minute = 100000\nburst = 10000\n\n\
             [plugins.model]\nbuiltin = \"scripted\"\nconfig = {{ script = \"script.json\" }}\n\n\
             [plugins.telegram]\nbuiltin = \"telegram\"\ncredential = \"telegram\"\n\
             config = {{ base_url = \"{}\" }}\n",
            sandbox_setting(),
            fake.base_url()
        ),
    )
    .unwrap();
    let mut child = Command::new(p3ak_path())
        .args(["secret", "set", "telegram"])
        .env("P3AK_HOME", home.home())
        .env("P3AK_PASSPHRASE", home.pass())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{TOKEN}").unwrap();
    assert!(child.wait().unwrap().success());
    let mut kernel = Kernel::new(home);
    kernel.up();

    fake.say_direct(7, "hello");
    let prompt = fake.wait_sent(
        |s| s.text.contains("p3ak connectors pair"),
        Duration::from_secs(30),
    );
    let code = prompt.text.rsplit(' ').next().unwrap().trim().to_owned();
    kernel.ok(&["connectors", "pair", &code, "--no-approve"]);
    fake.say_direct(7, "warm up");
    fake.wait_sent(|s| s.text.contains("pong 0"), Duration::from_secs(30));

    let mut times = Vec::with_capacity(MESSAGES);
    for i in 1..=MESSAGES {
        let wanted = format!("pong {i}");
        let started = Instant::now();
        fake.say_direct(7, &format!("ping {i}"));
        fake.wait_sent(|s| s.text.starts_with(&wanted), Duration::from_secs(30));
        times.push(started.elapsed());
        // The rest of the reply lands before the next message.
        std::thread::sleep(Duration::from_millis(20));
    }
    times.sort();
    report(
        "chat: message available -> first streamed piece at the platform",
        &times,
    );
    kernel.stop();
}

#[expect(clippy::print_stdout, reason = "a benchmark prints its figures")]
fn report(what: &str, sorted: &[Duration]) {
    let at = |q: f64| {
        let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(i).copied().unwrap_or_default().as_secs_f64() * 1e3
    };
    println!(
        "{what}: n={} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        sorted.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
