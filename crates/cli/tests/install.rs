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
    let home = kernel_home();

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

/// The listening sockets on `port` (from /proc/net/tcp and tcp6) and the pids holding them.
fn holders_of_listening_port(port: u16) -> Vec<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap().lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields[1].rsplit(':').next().unwrap();
            if u16::from_str_radix(local_port, 16).unwrap() == port && fields[3] == "0A" {
                inodes.push(format!("socket:[{}]", fields[9]));
            }
        }
    }
    assert!(!inodes.is_empty(), "nothing listens on {port}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| inodes.iter().any(|i| target.to_string_lossy() == *i))
        });
        if holds {
            pids.push(pid);
        }
    }
    pids
}

fn get_healthz(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: p3ak\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A home whose kernel runs one plugin and no console.
fn kernel_home() -> Home {
    let home = Home::init(PASS);
    std::fs::write(
        home.home().join("config.toml"),
        format!(
            "[kernel]\n{}\n[hitl]\nconsole = \"off\"\n\n[plugins.files]\nbuiltin = \"files\"\n",
            sandbox_setting()
        ),
    )
    .unwrap();
    home
}

fn socket_activate(home: &Home, address: &str) -> std::process::Child {
    Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(address)
        .arg(format!("--setenv=P3AK_HOME={}", home.home().display()))
        .arg(format!("--setenv=P3AK_PASSPHRASE={}", home.pass()))
        .arg(p3ak_testkit::home::p3ak_path())
        .arg("up")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(home.path("kernel.log")).unwrap())
        .spawn()
        .unwrap()
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian's systemd)"]
fn socket_activation_serves_the_api_on_systemds_socket_held_by_the_kernel_alone() {
    p3ak_testkit::need::systemd_socket_activate();
    let home = kernel_home();
    let port = free_port();
    let mut activator = socket_activate(&home, &format!("127.0.0.1:{port}"));
    let log = || std::fs::read_to_string(home.path("kernel.log")).unwrap_or_default();

    // The port is open before P3AK is (the activator, like systemd, starts it at the first
    // connection): the first request waits in the backlog and is answered.
    let started = Instant::now();
    let answer = loop {
        if let Some(answer) = get_healthz(port).filter(|a| a.starts_with("HTTP/1.1 200")) {
            break answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no answer on the activated socket:\n{}",
            log()
        );
        assert!(
            activator.try_wait().unwrap().is_none(),
            "p3ak up exited:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(answer.contains("\"ok\""), "{answer}");
    assert!(
        log().contains(&format!("127.0.0.1:{port}")),
        "the start report names it:\n{}",
        log()
    );

    // Handed over, not shared: the kernel holds the socket, the warden closed its copy, and
    // neither the approval daemon nor a plugin inherited it.
    let kernel_pid: u32 = std::fs::read_to_string(home.home().join("run/kernel.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        holders_of_listening_port(port),
        vec![kernel_pid],
        "{}",
        log()
    );

    let term = Command::new("kill")
        .args(["-TERM", &activator.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = activator.wait().unwrap();
    assert!(status.success(), "{status}:\n{}", log());
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian's systemd)"]
fn an_activated_socket_beyond_loopback_is_refused_in_one_line() {
    p3ak_testkit::need::systemd_socket_activate();
    let home = kernel_home();
    let port = free_port();
    let mut activator = socket_activate(&home, &format!("0.0.0.0:{port}"));
    // Like systemd, the activator starts the service at the first connection.
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the activator never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = activator.wait().unwrap();
    let log = std::fs::read_to_string(home.path("kernel.log")).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains("not a loopback address"), "{log}");
}

#[test]
fn under_systemd_p3ak_up_says_ready_once_the_api_answers() {
    let home = kernel_home();
    let notify_path = home.path("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut up = Command::new(p3ak_testkit::home::p3ak_path())
        .arg("up")
        .env("P3AK_HOME", home.home())
        .env("P3AK_PASSPHRASE", home.pass())
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(home.path("kernel.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(home.path("kernel.log")).unwrap_or_default();

    let mut message = [0_u8; 4096];
    let n = notify
        .recv(&mut message)
        .unwrap_or_else(|e| panic!("no notification ({e}):\n{}", log()));
    let message = String::from_utf8_lossy(&message[..n]).into_owned();
    assert!(message.lines().any(|l| l == "READY=1"), "{message:?}");
    // Ready means ready: the API answers at once, no waiting.
    let health = home.run(&["health"]);
    assert!(health.status.success(), "{}\n{}", stderr(&health), log());

    let term = Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(up.wait().unwrap().success(), "{}", log());
}
