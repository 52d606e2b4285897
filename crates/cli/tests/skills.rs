//! End-to-end tests of skills (docs/skills.md): a real kernel, the real `skills` plugin and the
//! scripted provider. A skill in the home's `skills/` is listed to the model, loaded through
//! `skills.load`, and its script runs through `skills.run` as a policed action; its slash
//! command becomes a turn; a broken one is left out, audited and shown by `p3ak skills`.

#![cfg(test)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::{Home, Kernel, need};
use serde_json::{Value, json};

const PASS: &str = "skills test passphrase";

const SKILL: &str = "---
description: Writes the weekly report from the notes in the workspace.
command: report
scripts:
  count:
    file: scripts/count.sh
    description: Counts its arguments and echoes its input
    timeout: 10s
---
# Weekly report

Follow the house style: three bullet points, then the numbers.
";

/// Echoes its arguments (one per line) and its input, leaves a marker in the working
/// directory (the agent's workspace) and says who it runs as.
const COUNT: &str = "#!/bin/sh
touch ran-marker
for a in \"$@\"; do echo \"arg:$a\"; done
echo \"stdin:$(cat)\"
echo \"uid:$(id -u)\"
echo \"home:$HOME\"
";

const ALLOW: &str = "version: 1
read:
  skills.load: { level: 0 }
system:
  skills.run: { level: 0 }
";

const REJECT_RUN: &str = "version: 1
read:
  skills.load: { level: 0 }
system:
  skills.run:
    level: 0
    rules:
      - id: never-count
        when: { args.script: { eq: count } }
        reject: true
";

/// A home with the skill `weekly-report` (and any `extra` skill folders), this policy, the
/// scripted provider `model` recording its requests, and the `skills` plugin.
fn kernel(policy: &str, responses: Vec<Value>, extra: &[(&str, &str)]) -> Kernel {
    let home = Home::init(PASS);
    home.write_scripted(policy, &json!({ "responses": responses }));
    write_skill(&home.home(), "weekly-report", SKILL, Some(COUNT));
    for (dir, text) in extra {
        write_skill(&home.home(), dir, text, None);
    }
    let config = format!(
        "[kernel]\n{}ping_interval = \"1s\"\nping_timeout = \"2s\"\nrestart_limit = 3\n\
         tool_timeout = \"15s\"\n\n\
         [hitl]\nconsole = \"127.0.0.1:0\"\n\n\
         [plugins.skills]\nbuiltin = \"skills\"\n\n\
         [plugins.model]\nbuiltin = \"scripted\"\n\
         config = {{ script = \"script.json\", record = \"requests.jsonl\" }}\n",
        sandbox_setting()
    );
    std::fs::write(home.home().join("config.toml"), config).unwrap();
    Kernel::new(home)
}

fn write_skill(home: &Path, dir: &str, text: &str, script: Option<&str>) {
    let folder = home.join("skills").join(dir);
    std::fs::create_dir_all(folder.join("scripts")).unwrap();
    std::fs::write(folder.join("SKILL.md"), text).unwrap();
    if let Some(script) = script {
        let path = folder.join("scripts/count.sh");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn call(name: &str, arguments: Value) -> Value {
    json!({"content": "", "tool_calls": [{"name": name, "arguments": arguments}]})
}

fn say(text: &str) -> Value {
    json!({ "content": text })
}

fn load_and_run() -> Vec<Value> {
    vec![
        call("skills__load", json!({"name": "weekly-report"})),
        call(
            "skills__run",
            json!({"skill": "weekly-report", "script": "count",
                   "args": ["two words", "$(reboot)"], "stdin": "the notes"}),
        ),
        say("report written"),
    ]
}

fn marker(k: &Kernel) -> std::path::PathBuf {
    k.home().join("workspaces/assistant/ran-marker")
}

#[test]
fn a_skill_is_listed_to_the_model_loaded_and_its_script_runs_as_a_policed_action() {
    let mut k = kernel(ALLOW, load_and_run(), &[]);
    k.up();
    let reply = k.ok(&["chat", "-m", "write this week's report"]);
    assert!(reply.contains("report written"), "{reply}");
    let requests = k.requests();
    // The model saw the skill's name and description, and how to load it.
    let system = requests[0]["system"].as_str().unwrap();
    assert!(
        system.contains(
            "- weekly-report — Writes the weekly report from the notes in the workspace."
        ),
        "{system}"
    );
    assert!(system.contains("skills.load"), "{system}");
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(offered.contains(&"skills__load") && offered.contains(&"skills__run"));
    // `load` gave the body and the scripts.
    let loaded: Value = serde_json::from_str(&k.tool_results(1)[0]).unwrap();
    assert!(
        loaded["instructions"]
            .as_str()
            .unwrap()
            .starts_with("# Weekly report\n\nFollow the house style"),
        "{loaded}"
    );
    assert_eq!(loaded["scripts"][0]["name"], "count");
    // `run` ran the script with its arguments as argv (no shell), its input, in the workspace.
    let ran: Value = serde_json::from_str(&k.tool_results(2)[1]).unwrap();
    let stdout = ran["stdout"].as_str().unwrap();
    assert_eq!(ran["exit_code"], 0, "{ran}");
    assert!(
        stdout.contains("arg:two words\narg:$(reboot)\n"),
        "{stdout}"
    );
    assert!(stdout.contains("stdin:the notes"), "{stdout}");
    assert!(stdout.contains("/workspaces/assistant"), "{stdout}");
    assert!(marker(&k).exists());
    // Both went down the road: proposed, decided, executed.
    let decided: Vec<String> = k
        .audit()
        .iter()
        .filter(|e| e["kind"] == "decision")
        .map(|e| {
            e["payload"]["action"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        decided.iter().any(|a| a == "skills.run") && decided.iter().any(|a| a == "skills.load"),
        "{decided:?}"
    );
}

#[test]
fn a_script_run_the_policy_rejects_is_not_permitted_and_does_not_run() {
    let mut k = kernel(REJECT_RUN, load_and_run(), &[]);
    k.up();
    k.ok(&["chat", "-m", "write this week's report"]);
    assert!(k.tool_results(1)[0].contains("house style"));
    assert_eq!(k.tool_results(2)[1], "action not permitted");
    assert!(!marker(&k).exists(), "the rejected script ran");
    let record = std::fs::read_to_string(k.home().join("requests.jsonl")).unwrap();
    assert!(
        !record.contains("never-count"),
        "a rule id reached the model"
    );
}

#[test]
fn a_skills_slash_command_becomes_a_turn_whose_message_is_its_body_and_the_text() {
    let mut k = kernel(ALLOW, vec![say("here is the report")], &[]);
    k.up();
    let reply = k.ok(&["chat", "-m", "/report the week of the fair"]);
    assert!(reply.contains("here is the report"), "{reply}");
    let requests = k.requests();
    let messages = requests[0]["messages"].as_array().unwrap();
    let last = messages.last().unwrap()["content"].as_str().unwrap();
    assert!(
        last.starts_with("# Weekly report\n\nFollow the house style")
            && last.ends_with("\n\nthe week of the fair"),
        "{last}"
    );
    // A command no skill claims is an ordinary message.
    assert!(!last.contains("/report"));
}

#[test]
fn a_broken_skill_is_left_out_audited_and_shown_with_its_error() {
    let mut k = kernel(
        ALLOW,
        vec![say("fine")],
        &[
            ("no-description", "---\nname: notes\n---\nbody\n"),
            ("steals-help", "---\ndescription: x\ncommand: help\n---\n"),
        ],
    );
    k.up();
    k.ok(&["chat", "-m", "hello"]);
    let system = k.requests()[0]["system"].as_str().unwrap().to_owned();
    assert!(system.contains("weekly-report"), "{system}");
    assert!(!system.contains("- notes"), "{system}");
    let invalid: Vec<Value> = k
        .audit()
        .into_iter()
        .filter(|e| e["kind"] == "skill.invalid")
        .collect();
    assert_eq!(invalid.len(), 2, "{invalid:?}");
    assert_eq!(invalid[0]["payload"]["dir"], "no-description");
    // `p3ak skills` reads the home without the kernel: the good one, and each error (exit 1).
    let out = k.run(&["--json", "skills"]);
    assert_eq!(out.status.code(), Some(1));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["skills"][0]["name"], "weekly-report");
    assert_eq!(listed["skills"][0]["command"], "report");
    let errors: Vec<&str> = listed["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["error"].as_str().unwrap())
        .collect();
    assert!(
        errors[0].contains("`description` is required"),
        "{errors:?}"
    );
    assert!(errors[1].contains("built-in command"), "{errors:?}");
    let text = String::from_utf8(k.run(&["skills"]).stdout).unwrap();
    assert!(
        text.contains("weekly-report — Writes the weekly report"),
        "{text}"
    );
    assert!(text.contains("invalid: `"), "{text}");
    let shown = k.json(&["skills", "show", "weekly-report"]);
    assert!(shown["body"].as_str().unwrap().contains("house style"));
    assert_eq!(shown["scripts"]["count"]["timeout_secs"], 10);
    let out = k.run(&["skills", "show", "nothing"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
#[ignore = "needs root"]
fn as_root_a_skills_script_runs_sandboxed_under_the_plugins_own_uid() {
    need::root();
    let mut k = kernel(ALLOW, load_and_run(), &[]);
    k.up();
    k.ok(&["chat", "-m", "write this week's report"]);
    let ran: Value = serde_json::from_str(&k.tool_results(2)[1]).unwrap();
    let stdout = ran["stdout"].as_str().unwrap();
    let uid: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("uid:"))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(uid, 0, "the script ran as root");
    assert_eq!(k.plugin_status("skills")["state"], "running");
    let start = k
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "plugin.start" && e["payload"]["plugin"] == "skills")
        .unwrap();
    assert_eq!(start["payload"]["sandbox"]["class"], "shell");
    assert_eq!(start["payload"]["sandbox"]["uid"], uid);
}
