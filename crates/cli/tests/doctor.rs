//! `p3ak doctor` end to end: the real binary on temporary homes, broken on purpose.

#![cfg(test)]

use std::os::unix::fs::PermissionsExt;

use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::{Home, Kernel};
use serde_json::Value;

const PASS: &str = "doctor test passphrase";

/// Every check `p3ak doctor` runs, in order.
const CHECKS: [&str; 13] = [
    "landlock", "seccomp", "root", "ids", "modes", "disk", "config", "policy", "agents", "model",
    "audit", "kernel", "api",
];

/// The checks about the home's own files.
const HOME_CHECKS: [&str; 5] = ["modes", "config", "policy", "agents", "audit"];

/// `p3ak doctor --json` on `home`: its exit code and its one JSON document.
fn doctor(home: &Home) -> (i32, Value) {
    let out = home.run(&["doctor", "--json"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("--json is not one JSON document ({e}):\n{stdout}"));
    (out.status.code().unwrap(), report)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` check in {report:#}"))
}

fn detail(report: &Value, name: &str) -> String {
    check(report, name)["detail"].as_str().unwrap().to_owned()
}

#[test]
fn a_fresh_home_passes_every_home_check() {
    let home = Home::init(PASS);
    let (code, report) = doctor(&home);
    for name in HOME_CHECKS {
        assert_eq!(check(&report, name)["status"], "ok", "{name}: {report:#}");
    }
    assert_eq!(check(&report, "kernel")["status"], "warn");
    assert!(detail(&report, "kernel").contains("not running"));
    assert_eq!(check(&report, "api")["status"], "warn");
    // Exit 1 exactly when a check (here only a host check could) failed.
    let failed = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["status"] == "fail");
    assert_eq!(code, i32::from(failed), "{report:#}");
    assert_eq!(report["ok"], !failed);
}

#[test]
fn json_output_is_one_document_with_every_check_and_a_fix_for_each_problem() {
    let home = Home::init(PASS);
    let (_, report) = doctor(&home);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, CHECKS);
    for c in report["checks"].as_array().unwrap() {
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "warn", "fail"].contains(&status), "{c}");
        assert!(!c["detail"].as_str().unwrap().is_empty(), "{c}");
        assert_eq!(
            c["fix"].is_null(),
            status == "ok",
            "a fix exactly for problems: {c}"
        );
    }
    assert_eq!(report["home"], home.home().display().to_string());
}

#[test]
fn a_world_readable_vault_file_fails_naming_the_file_and_exits_1() {
    let home = Home::init(PASS);
    let vault = home.home().join("vaults/memory.vault");
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, report) = doctor(&home);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["ok"], false);
    assert_eq!(check(&report, "modes")["status"], "fail");
    assert!(
        detail(&report, "modes").contains(&vault.display().to_string()),
        "{report:#}"
    );
    assert!(
        check(&report, "modes")["fix"]
            .as_str()
            .unwrap()
            .contains("chmod")
    );
    // Text mode: a table, and the one error line naming the failed check.
    let out = home.run(&["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("FAIL  modes"), "{table}");
    assert!(table.contains("chmod -R o-rwx"), "{table}");
    let error = String::from_utf8(out.stderr).unwrap();
    assert!(
        error.contains("failed: ") && error.contains("modes"),
        "{error}"
    );
}

#[test]
fn a_broken_config_fails_naming_the_file_and_exits_1() {
    let home = Home::init(PASS);
    std::fs::write(home.home().join("config.toml"), "[kernel\nsandbox = 3\n").unwrap();
    let (code, report) = doctor(&home);
    assert_eq!(code, 1);
    assert_eq!(check(&report, "config")["status"], "fail");
    assert!(
        detail(&report, "config").contains("config.toml"),
        "{report:#}"
    );
    // Checks that need the config say so instead of guessing.
    assert_ne!(check(&report, "agents")["status"], "ok");
}

#[test]
fn a_policy_with_an_error_fails_naming_the_file_and_exits_1() {
    let home = Home::init(PASS);
    std::fs::write(
        home.home().join("policy.yaml"),
        "version: 1\nread:\n  files.read: { level: 9 }\n",
    )
    .unwrap();
    let (code, report) = doctor(&home);
    assert_eq!(code, 1);
    assert_eq!(check(&report, "policy")["status"], "fail");
    assert!(
        detail(&report, "policy").contains("policy.yaml"),
        "{report:#}"
    );
    assert!(
        check(&report, "policy")["fix"]
            .as_str()
            .unwrap()
            .contains("p3ak policy check")
    );
}

#[test]
fn an_agent_named_by_config_without_a_file_fails() {
    let home = Home::init(PASS);
    std::fs::remove_file(home.home().join("agents/assistant.toml")).unwrap();
    let (code, report) = doctor(&home);
    assert_eq!(code, 1);
    assert_eq!(check(&report, "agents")["status"], "fail");
    assert!(
        detail(&report, "agents").contains("assistant"),
        "{report:#}"
    );
}

#[test]
fn a_running_kernel_is_found_and_its_home_still_passes_the_mode_check() {
    let home = Home::init(PASS);
    std::fs::write(
        home.home().join("config.toml"),
        format!(
            "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n[plugins.files]\nbuiltin = \"files\"\n",
            sandbox_setting()
        ),
    )
    .unwrap();
    let mut kernel = Kernel::new(home);
    kernel.up();
    let (_, report) = doctor(&kernel);
    assert_eq!(check(&report, "kernel")["status"], "ok", "{report:#}");
    assert!(detail(&report, "kernel").contains("running (pid "));
    assert_eq!(check(&report, "modes")["status"], "ok", "{report:#}");
    assert!(kernel.stop().success());
}
