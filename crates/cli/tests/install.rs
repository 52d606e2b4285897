//! What an install needs from the binary: `--version` with its commit, shell completions, man
//! pages, and `p3ak health` for service managers' probes.

#![cfg(test)]

use std::process::Command;
use std::time::{Duration, Instant};

use p3ak_testkit::kernel::sandbox_setting;
use p3ak_testkit::{Home, Kernel};

const PASS: &str = "install test passphrase";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let home = Home::new(PASS);
    let out = home.run(&["--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let version = stdout(&out);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(head.status.success(), "these tests run in a git checkout");
    let commit = String::from_utf8(head.stdout).unwrap().trim().to_owned();
    assert!(
        version.starts_with(&format!("p3ak {} ({commit} ", env!("CARGO_PKG_VERSION"))),
        "{version:?} does not name commit {commit}"
    );
    // Subcommands say the same.
    let sub = stdout(&home.run(&["vault", "--version"]));
    assert!(sub.contains(&commit), "{sub}");
}

#[test]
fn completions_cover_every_shell_and_bash_parses_its_script() {
    let home = Home::new(PASS);
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = home.run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in ["vault", "ingest", "completions", "passphrase-file"] {
            assert!(script.contains(word), "{shell}'s script lacks {word}");
        }
        // Hidden commands stay hidden.
        assert!(!script.contains("kernel_child"), "{shell}");
    }
    let script = home.path("p3ak.bash");
    std::fs::write(&script, stdout(&home.run(&["completions", "bash"]))).unwrap();
    let parsed = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(parsed.status.success(), "bash -n: {}", stderr(&parsed));
    // And a completion works: `p3ak vault cr<TAB>` offers `create`.
    let probe = format!(
        "source {}; COMP_WORDS=(p3ak vault cr); COMP_CWORD=2; COMP_LINE='p3ak vault cr'; \
         COMP_POINT=${{#COMP_LINE}}; _p3ak p3ak cr vault; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let offered = Command::new("bash").arg("-c").arg(probe).output().unwrap();
    assert!(
        stdout(&offered).lines().any(|l| l == "create"),
        "bash offered {:?} ({})",
        stdout(&offered),
        stderr(&offered)
    );

    let bad = home.run(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = stderr(&bad);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("tcsh"), "{err}");
}

#[test]
fn man_pages_for_every_visible_command() {
    let home = Home::new(PASS);
    let dir = home.path("man1");
    let out = home.run(&["man", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("man pages in"), "{}", stdout(&out));
    for page in [
        "p3ak.1",
        "p3ak-vault.1",
        "p3ak-vault-put.1",
        "p3ak-up.1",
        "p3ak-health.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not roff"
        );
    }
    let put = std::fs::read_to_string(dir.join("p3ak-vault-put.1")).unwrap();
    assert!(put.contains("tag"), "the page lists the command's options");
    // Hidden commands get no page.
    assert!(!dir.join("p3ak-kernel.1").exists());
    assert!(!dir.join("p3ak-plugin.1").exists());

    // `man` renders them, if it is installed (it is in CI).
    if Command::new("man").arg("--version").output().is_ok() {
        let rendered = Command::new("man")
            .arg("-l")
            .arg(dir.join("p3ak-vault.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(rendered.status.success(), "{}", stderr(&rendered));
        assert!(
            stdout(&rendered).contains("p3ak-vault"),
            "{}",
            stdout(&rendered)
        );
    }

    // A folder that cannot be made is one line and exit 1.
    let file = home.path("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let bad = home.run(&["man", file.join("man1").to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(stderr(&bad).lines().count(), 1, "{}", stderr(&bad));
}

#[test]
fn health_is_ok_while_the_kernel_runs_and_one_line_otherwise() {
    let home = Home::init(PASS);
    std::fs::write(
        home.home().join("config.toml"),
        format!(
            "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n[plugins.files]\nbuiltin = \"files\"\n",
            sandbox_setting()
        ),
    )
    .unwrap();

    // Nothing runs: exit 1, one line, the socket named.
    let down = home.run(&["health"]);
    assert_eq!(down.status.code(), Some(1));
    let err = stderr(&down);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("api.sock"), "{err}");

    let mut kernel = Kernel::new(home);
    kernel.up();
    // The API socket follows the control socket: healthy within the minute.
    let started = Instant::now();
    let up = loop {
        let out = kernel.run(&["health", "--json"]);
        if out.status.success() {
            break out;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never healthy: {}\n{}",
            stderr(&out),
            kernel.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let report: serde_json::Value = serde_json::from_slice(&up.stdout).unwrap();
    assert_eq!(report["healthy"], true, "{report}");
    assert!(kernel.stop().success());
    assert_eq!(kernel.run(&["health"]).status.code(), Some(1));
}
