//! Everything the binary prints goes through here: text or JSON on stdout, warnings and errors
//! on stderr, progress bars only on a terminal.

use std::fmt::Display;
use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

pub struct Output {
    json: bool,
}

/// A failure the command's own output already reported (in JSON mode nothing more is
/// printed; in text mode its message is the error line). The exit code is still 1.
#[derive(Debug)]
pub struct Reported(pub String);

impl Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reported {}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// One line of text on stdout (text mode only).
    pub fn line(&self, text: impl Display) {
        if !self.json {
            let _ = writeln!(std::io::stdout().lock(), "{text}");
        }
    }

    /// Raw bytes on stdout (document content).
    pub fn bytes(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()
    }

    /// A value as JSON on stdout (JSON mode only).
    pub fn json<T: Serialize>(&self, value: &T) {
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = serde_json::to_writer_pretty(&mut out, value);
            let _ = writeln!(out);
        }
    }

    /// A warning on stderr, in either mode.
    pub fn warn(&self, text: impl Display) {
        let _ = writeln!(
            std::io::stderr().lock(),
            "warning: {}",
            sanitize(&text.to_string())
        );
    }

    /// The one-line error that ends a failed command.
    pub fn error(&self, error: &anyhow::Error) {
        let message = sanitize(&error_line(error));
        if self.json && error.downcast_ref::<Reported>().is_some() {
            // Its JSON document already says so: stdout stays one document.
            return;
        }
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = serde_json::to_writer(&mut out, &serde_json::json!({ "error": message }));
            let _ = writeln!(out);
        } else {
            let _ = writeln!(std::io::stderr().lock(), "error: {message}");
        }
    }

    /// A progress bar on stderr when it is a terminal and output is text; hidden otherwise.
    pub fn progress(&self, what: &str) -> ProgressBar {
        if self.json || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(what.to_owned());
        bar
    }
}

impl Output {
    /// A progress bar counting bytes (with a rate), for downloads and ingest.
    pub fn progress_bytes(&self, what: &str) -> ProgressBar {
        let bar = self.progress(what);
        if bar.is_hidden() {
            return bar;
        }
        let style = ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta} left) {msg}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(what.to_owned());
        bar.set_message(String::new());
        bar
    }
}

/// The callback that drives `bar` from a library's (done, total) progress reports.
pub fn track(bar: &ProgressBar) -> impl FnMut(u64, u64) + '_ {
    move |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    }
}

/// Makes untrusted text (titles, file names, error details) safe for a terminal: control
/// characters are shown escaped instead of being interpreted.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`sanitize`] for multi-line text a person reads (a model's reply): newlines and tabs stay,
/// every other control character (escape sequences above all) is escaped.
pub fn sanitize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Unix seconds as an RFC 3339 UTC timestamp.
pub fn timestamp(unix: i64) -> String {
    let Ok(secs) = u64::try_from(unix) else {
        return unix.to_string();
    };
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Unix milliseconds as an RFC 3339 UTC timestamp with milliseconds.
pub fn timestamp_ms(unix_ms: i64) -> String {
    let Ok(ms) = u64::try_from(unix_ms) else {
        return unix_ms.to_string();
    };
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// An error and its causes on one line, as `{:#}` prints them, except that a cause the line
/// already ends with is not repeated: the libraries' messages show their cause (they also travel
/// as text) and keep it as their `source`.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// A byte count for people.
pub fn bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Like the libraries' errors: shows its cause and keeps it as its source.
    #[derive(Debug)]
    struct ShowsCause {
        source: std::io::Error,
    }

    impl std::fmt::Display for ShowsCause {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot open `x`: {}", self.source)
        }
    }

    impl std::error::Error for ShowsCause {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn error_line_shows_each_cause_once() {
        let cause = || std::io::Error::other("disk on fire");
        let shown = anyhow::Error::new(ShowsCause { source: cause() });
        assert_eq!(error_line(&shown), "cannot open `x`: disk on fire");
        let context = anyhow::Error::new(cause()).context("cannot open `y`");
        assert_eq!(error_line(&context), "cannot open `y`: disk on fire");
        let both = anyhow::Error::new(ShowsCause { source: cause() }).context("vault");
        assert_eq!(error_line(&both), "vault: cannot open `x`: disk on fire");
    }

    #[test]
    fn sanitize_escapes_terminal_controls() {
        assert_eq!(sanitize("a\u{1b}[31mb\nc"), "a\\u{1b}[31mb\\nc");
        assert_eq!(sanitize("plain — ünïcode"), "plain — ünïcode");
        assert_eq!(
            sanitize_text("line\n\tnext\u{1b}[2J\r"),
            "line\n\tnext\\u{1b}[2J\\r"
        );
    }
}
