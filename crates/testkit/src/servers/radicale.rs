//! Radicale, a CalDAV server (`python3 -m radicale`), on a free loopback port with htpasswd
//! logins (plain, test only) and calendars seeded as collection folders.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Radicale; killed on drop.
pub struct Radicale {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
    user: String,
}

impl Radicale {
    /// Starts Radicale with one user and `calendars` (`(id, display name)`) in the user's
    /// home; waits (at most 20 s) until it accepts connections.
    pub fn start(user: &str, password: &str, calendars: &[(&str, &str)]) -> Self {
        crate::need::radicale();
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let home = storage.join("collection-root").join(user);
        for (id, name) in calendars {
            let folder = home.join(id);
            fs::create_dir_all(&folder).unwrap();
            let props = serde_json::json!({
                "tag": "VCALENDAR",
                "D:displayname": name,
                "C:supported-calendar-component-set": "VEVENT",
            });
            fs::write(folder.join(".Radicale.props"), props.to_string()).unwrap();
        }
        fs::write(dir.path().join("users"), format!("{user}:{password}\n")).unwrap();
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let config = format!(
            "[server]\nhosts = 127.0.0.1:{port}\n\
             [auth]\ntype = htpasswd\nhtpasswd_filename = {users}\nhtpasswd_encryption = plain\ndelay = 0\n\
             [rights]\ntype = owner_only\n\
             [storage]\nfilesystem_folder = {storage}\n\
             [logging]\nlevel = warning\n",
            users = dir.path().join("users").display(),
            storage = storage.display(),
        );
        let config_path = dir.path().join("config");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("python3")
            .args(["-m", "radicale", "--config"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Self {
            port,
            dir,
            child,
            user: user.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("radicale exited ({status}): {}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "radicale did not start within 20 s: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// What Radicale wrote to its log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Puts an iCalendar object straight into calendar `id`'s folder, as `file`.
    pub fn seed(&self, id: &str, file: &str, ics: &str) {
        fs::write(self.folder(id).join(file), ics).unwrap();
    }

    fn folder(&self, id: &str) -> PathBuf {
        self.dir
            .path()
            .join("storage/collection-root")
            .join(&self.user)
            .join(id)
    }

    /// The iCalendar files stored in calendar `id`, by file name, sorted.
    pub fn stored(&self, id: &str) -> Vec<(String, String)> {
        let folder = self.folder(id);
        let mut out: Vec<(String, String)> = fs::read_dir(folder)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".ics"))
                    .map(|e| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            fs::read_to_string(e.path()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

impl Drop for Radicale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
