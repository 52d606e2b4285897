//! A mail host on loopback for `p3ak demo mail` and the mail plugin's tests: a real Dovecot
//! (IMAP, and IMAPS with a self-signed certificate made for the occasion) and an SMTP sink
//! (Python's `aiosmtpd`, which keeps every message it is given in a maildir).
//!
//! Everything lives in one directory the caller owns; dropping the host stops both servers.
//! As root, Dovecot's own users from Debian's package (`dovecot`, `dovenull`) run its services
//! and the mailbox belongs to `nobody` (Dovecot refuses root for both); otherwise everything
//! runs as the calling user.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Dovecot's binaries, as Debian installs them.
pub const DOVECOT: &str = "/usr/sbin/dovecot";
/// Dovecot's admin tool (delivers the seeded messages).
pub const DOVEADM: &str = "/usr/bin/doveadm";
/// How to install what the host needs, for messages.
pub const INSTALL_HINT: &str = "apt-get install dovecot-imapd openssl; \
                                python3 -m pip install aiosmtpd";

/// The mailbox's owner.
const USER: &str = "owner@home.example";
/// The unprivileged uid Dovecot keeps the mailbox under when run as root.
const NOBODY: u32 = 65534;
/// How long a server may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Dovecot and an SMTP sink, running.
pub struct MailHost {
    dir: PathBuf,
    password: String,
    imap_port: u16,
    imaps_port: u16,
    smtp_port: u16,
    dovecot: Option<Child>,
    sink: Option<Child>,
}

impl MailHost {
    /// Whether this machine has what the host needs: Dovecot, `doveadm`, `openssl` and
    /// Python's `aiosmtpd`. The error says what is missing and how to install it.
    pub fn available() -> Result<(), String> {
        let mut missing = Vec::new();
        for program in [DOVECOT, DOVEADM] {
            if !Path::new(program).is_file() {
                missing.push(program.to_owned());
            }
        }
        if !runs("openssl", &["version"]) {
            missing.push("openssl".to_owned());
        }
        if !runs("python3", &["-c", "import aiosmtpd"]) {
            missing.push("python3 with aiosmtpd".to_owned());
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "missing {} (install: {INSTALL_HINT})",
                missing.join(", ")
            ))
        }
    }

    /// Starts both servers with their files under `dir` (which must exist and be empty of
    /// them), a fresh password for [`USER`], and waits until each answers.
    pub fn start(dir: &Path) -> std::io::Result<Self> {
        Self::available().map_err(std::io::Error::other)?;
        let dir = dir.to_owned();
        for sub in ["run", "state", "mail", "sink"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let password =
            hex::encode(p3ak_crypto::random_array::<12>().map_err(std::io::Error::other)?);
        let (imap_port, imaps_port, smtp_port) = (free_port()?, free_port()?, free_port()?);
        make_certificate(&dir)?;
        std::fs::write(dir.join("users"), format!("{USER}:{{PLAIN}}{password}\n"))?;
        let root = rustix::process::geteuid().is_root();
        let (mail_uid, mail_gid) = if root {
            // The mailbox's owner must reach it through the directory.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
            std::os::unix::fs::chown(dir.join("mail"), Some(NOBODY), Some(NOBODY))?;
            (NOBODY, NOBODY)
        } else {
            (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            )
        };
        let config = dovecot_config(&dir, root, (mail_uid, mail_gid), (imap_port, imaps_port));
        std::fs::write(dir.join("dovecot.conf"), config)?;
        let log = std::fs::File::create(dir.join("dovecot.out"))?;
        let dovecot = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(dir.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let sink_log = std::fs::File::create(dir.join("sink.out"))?;
        let sink = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{smtp_port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.join("sink/maildir"))
            .stdin(Stdio::null())
            .stdout(sink_log.try_clone()?)
            .stderr(sink_log)
            .spawn()?;
        let host = Self {
            dir,
            password,
            imap_port,
            imaps_port,
            smtp_port,
            dovecot: Some(dovecot),
            sink: Some(sink),
        };
        host.wait_for(imap_port, b"* OK")?;
        host.wait_for(smtp_port, b"220")?;
        Ok(host)
    }

    /// `imap://127.0.0.1:PORT` (plain; loopback only).
    #[must_use]
    pub fn imap_url(&self) -> String {
        format!("imap://127.0.0.1:{}", self.imap_port)
    }

    /// `imaps://127.0.0.1:PORT` (TLS with the certificate at [`MailHost::ca_file`]).
    #[must_use]
    pub fn imaps_url(&self) -> String {
        format!("imaps://127.0.0.1:{}", self.imaps_port)
    }

    /// `smtp://127.0.0.1:PORT` (the sink; plain).
    #[must_use]
    pub fn smtp_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.smtp_port)
    }

    /// The self-signed certificate (PEM) Dovecot's IMAPS presents, for 127.0.0.1.
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The mailbox's login.
    #[must_use]
    pub fn user(&self) -> &str {
        USER
    }

    /// The mailbox's password.
    #[must_use]
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Puts a message (RFC 5322 bytes) into `folder` (`INBOX`, `Archive`, …), as delivery
    /// would: UIDs follow the order of the calls.
    pub fn deliver(&self, folder: &str, raw: &[u8]) -> std::io::Result<()> {
        let mut child = Command::new(DOVEADM)
            .arg("-c")
            .arg(self.dir.join("dovecot.conf"))
            .args(["save", "-u", USER, "-m", folder])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(raw)?;
        }
        let out = child.wait_with_output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "doveadm save into {folder} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Every message the SMTP sink received, oldest first.
    pub fn received(&self) -> std::io::Result<Vec<Vec<u8>>> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            match std::fs::read_dir(self.dir.join("sink/maildir").join(sub)) {
                Ok(entries) => {
                    for entry in entries {
                        let entry = entry?;
                        let modified = entry.metadata()?.modified()?;
                        files.push((modified, entry.file_name(), entry.path()));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        files.sort();
        files
            .into_iter()
            .map(|(_, _, path)| std::fs::read(path))
            .collect()
    }

    /// Waits until the server on `port` greets with `greeting`, or says why not.
    fn wait_for(&self, port: u16, greeting: &[u8]) -> std::io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if let Ok(mut stream) = TcpStream::connect(address) {
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut buffer = [0u8; 64];
                let read = stream.read(&mut buffer).unwrap_or(0);
                if buffer.get(..read).is_some_and(|b| b.starts_with(greeting)) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let log =
                    |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "the server on port {port} did not start: {} {} {}",
                    log("dovecot.out").trim(),
                    log("dovecot.log").trim(),
                    log("sink.out").trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for MailHost {
    fn drop(&mut self) {
        for child in [self.dovecot.take(), self.sink.take()]
            .into_iter()
            .flatten()
        {
            stop(child);
        }
    }
}

/// Asks a server to stop (SIGTERM: Dovecot's master then stops its services), and kills it
/// if it has not within two seconds.
fn stop(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id())
        && let Some(pid) = rustix::process::Pid::from_raw(pid)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A self-signed certificate for 127.0.0.1 (`cert.pem`, `key.pem`), valid for two days.
fn make_certificate(dir: &Path) -> std::io::Result<()> {
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            // Not a CA: rustls (webpki) refuses a CA certificate as the server's own.
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "openssl could not make a certificate: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn dovecot_config(dir: &Path, root: bool, (uid, gid): (u32, u32), ports: (u16, u16)) -> String {
    let d = dir.display();
    let (internal, login) = if root {
        ("dovecot".to_owned(), "dovenull".to_owned())
    } else {
        let me = current_user_name().unwrap_or_else(|| uid.to_string());
        (me.clone(), me)
    };
    format!(
        r"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {internal}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:{d}/mail/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \Drafts
    auto = create
  }}
  mailbox Sent {{
    special_use = \Sent
    auto = create
  }}
  mailbox Archive {{
    special_use = \Archive
    auto = create
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  chroot =
}}
",
        imap = ports.0,
        imaps = ports.1,
    )
}

/// The calling user's name, from the password database.
fn current_user_name() -> Option<String> {
    let uid = rustix::process::geteuid().as_raw().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == uid).then(|| name.to_owned())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs Dovecot and aiosmtpd"]
    fn the_mail_host_serves_imap_and_keeps_what_smtp_is_given() {
        MailHost::available().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let host = MailHost::start(dir.path()).unwrap();
        host.deliver(
            "INBOX",
            b"From: a@b.example\r\nSubject: one\r\n\r\nbody\r\n",
        )
        .unwrap();
        // IMAP: log in over plain IMAP and see the message.
        let mut imap = TcpStream::connect(("127.0.0.1", host.imap_port)).unwrap();
        imap.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let login = format!(
            "a LOGIN {} {}\r\nb STATUS INBOX (MESSAGES)\r\nc LOGOUT\r\n",
            host.user(),
            host.password()
        );
        imap.write_all(login.as_bytes()).unwrap();
        let mut said = String::new();
        let _ = imap.read_to_string(&mut said);
        assert!(said.contains("(MESSAGES 1)"), "{said}");
        // SMTP: hand the sink a message and find it.
        let mut smtp = TcpStream::connect(("127.0.0.1", host.smtp_port)).unwrap();
        smtp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = std::io::BufReader::new(smtp.try_clone().unwrap());
        let mut line = String::new();
        let mut expect = |reader: &mut std::io::BufReader<TcpStream>, code: &str| loop {
            line.clear();
            std::io::BufRead::read_line(reader, &mut line).unwrap();
            assert!(line.starts_with(code), "{line}");
            if line.as_bytes().get(3) == Some(&b' ') {
                break;
            }
        };
        expect(&mut reader, "220");
        for (command, code) in [
            ("EHLO test\r\n", "250"),
            ("MAIL FROM:<a@b.example>\r\n", "250"),
            ("RCPT TO:<c@d.example>\r\n", "250"),
            ("DATA\r\n", "354"),
            ("Subject: two\r\n\r\nhello\r\n.\r\n", "250"),
        ] {
            smtp.write_all(command.as_bytes()).unwrap();
            expect(&mut reader, code);
        }
        let received = host.received().unwrap();
        assert_eq!(received.len(), 1);
        assert!(String::from_utf8_lossy(&received[0]).contains("Subject: two"));
    }
}
