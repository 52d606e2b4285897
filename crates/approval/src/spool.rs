//! The spool under `P3AK_HOME/spool`, where file permissions (not an if-statement) keep the
//! kernel from approving its own actions.
//!
//! ```text
//! spool/                 0710  daemon : writer     the writer may pass, not list
//!   staging/             0710  daemon : writer
//!     <category>/        0730  daemon : writer     the writer may create, not list
//!       <id>             0004  writer              sealed; its writer cannot read it back
//!   outbox/              0700  daemon              approved, in its undo window
//!   sent/                0700  daemon              released to the executor
//!   rejected/            0700  daemon              denied, expired, pulled back
//! ```
//!
//! The *writer* is the kernel's spool identity: as root the kernel stages through a short-lived
//! process under its own uid (`p3ak hitl stage`), because root passes every permission check;
//! without root the kernel, the writer and the daemon are one user and the layout is the same
//! but binds nobody but plugins. Staged files are sealed (AES-256-GCM, a key per run that the
//! kernel hands the daemon), so no action's arguments lie on disk in plaintext (I6).

use std::fs::{DirBuilder, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use p3ak_crypto::{AeadKey, Key, NONCE_LEN};

use crate::ApprovalError;
use crate::binding::Request;

/// Magic at the start of a staged file.
const MAGIC: &[u8; 8] = b"P3AKSPL1";
/// Largest staged file the daemon reads.
pub const MAX_STAGED: u64 = 4 << 20;
/// The category every spool has, for actions whose group has no directory.
pub const OTHER: &str = "other";

/// Who owns what, when running as root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owners {
    /// The daemon's uid and gid.
    pub daemon: (u32, u32),
    /// The writer's gid (the group of `staging/<category>/`).
    pub writer_gid: u32,
}

/// The spool's paths.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// The spool at `root` (`P3AK_HOME/spool`).
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `staging/`.
    #[must_use]
    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }
    /// `staging/<category>/`.
    #[must_use]
    pub fn category(&self, category: &str) -> PathBuf {
        self.staging().join(category)
    }
    /// `outbox/`.
    #[must_use]
    pub fn outbox(&self) -> PathBuf {
        self.root.join("outbox")
    }
    /// `sent/`.
    #[must_use]
    pub fn sent(&self) -> PathBuf {
        self.root.join("sent")
    }
    /// `rejected/`.
    #[must_use]
    pub fn rejected(&self) -> PathBuf {
        self.root.join("rejected")
    }

    /// Makes sure `staging/<category>/` exists with its mode (and owners, given them).
    pub fn prepare_category(
        &self,
        category: &str,
        owners: Option<Owners>,
    ) -> Result<(), ApprovalError> {
        let dir = self.category(category);
        if !crate::binding::is_token(category, 64) {
            return Err(ApprovalError::InvalidRequest {
                id: category.to_owned(),
                reason: "a spool category is 1–64 letters, digits, `-` or `_`".to_owned(),
            });
        }
        if dir.is_dir() {
            return Ok(());
        }
        self.prepare(&[category.to_owned()], owners)
    }

    /// Creates the layout (and `other` among the categories) with its modes, and, given
    /// `owners` (as root), its owners. Existing directories get their modes and owners reset.
    pub fn prepare(
        &self,
        categories: &[String],
        owners: Option<Owners>,
    ) -> Result<(), ApprovalError> {
        let mut dirs: Vec<(PathBuf, u32, bool)> = vec![
            (self.root.clone(), 0o710, true),
            (self.staging(), 0o710, true),
            (self.outbox(), 0o700, false),
            (self.sent(), 0o700, false),
            (self.rejected(), 0o700, false),
        ];
        let mut names: Vec<&str> = categories.iter().map(String::as_str).collect();
        names.push(OTHER);
        names.sort_unstable();
        names.dedup();
        for name in names {
            if !crate::binding::is_token(name, 64) {
                return Err(ApprovalError::InvalidRequest {
                    id: name.to_owned(),
                    reason: "a spool category is 1–64 letters, digits, `-` or `_`".to_owned(),
                });
            }
            dirs.push((self.category(name), 0o730, true));
        }
        for (dir, mode, writer_group) in dirs {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(ApprovalError::io(format!(
                    "cannot create `{}`",
                    dir.display()
                )))?;
            if let Some(owners) = owners {
                let gid = if writer_group {
                    owners.writer_gid
                } else {
                    owners.daemon.1
                };
                std::os::unix::fs::lchown(&dir, Some(owners.daemon.0), Some(gid)).map_err(
                    ApprovalError::io(format!("cannot give `{}` to the daemon", dir.display())),
                )?;
            }
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).map_err(
                ApprovalError::io(format!("cannot set the mode of `{}`", dir.display())),
            )?;
        }
        Ok(())
    }
}

/// The spool's key for one run.
pub struct SpoolKey {
    key: AeadKey,
    raw: Key,
}

impl SpoolKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, ApprovalError> {
        Self::from_key(Key::generate()?)
    }

    /// From its hex form (the daemon's start message).
    pub fn from_hex(text: &str) -> Result<Self, ApprovalError> {
        let bytes =
            zeroize::Zeroizing::new(hex::decode(text.trim()).map_err(ApprovalError::KeyNotHex)?);
        Self::from_key(Key::from_slice(&bytes)?)
    }

    fn from_key(raw: Key) -> Result<Self, ApprovalError> {
        Ok(Self {
            key: AeadKey::new(&raw)?,
            raw,
        })
    }

    /// Its hex form, for the daemon's start message only.
    #[must_use]
    pub fn to_hex(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(hex::encode(self.raw.expose()))
    }

    /// Seals a request into the bytes of its staged file.
    pub fn seal(&self, request: &Request) -> Result<Vec<u8>, ApprovalError> {
        let mut plain =
            zeroize::Zeroizing::new(serde_json::to_vec(request).map_err(ApprovalError::Encode)?);
        let nonce: [u8; NONCE_LEN] = p3ak_crypto::random_array()?;
        let mut body = std::mem::take(&mut *plain);
        self.key
            .seal_in_place(nonce, &aad(&request.category, &request.id), &mut body)?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a staged file's bytes; the request must carry the id and category it was filed
    /// under.
    pub fn open(
        &self,
        bytes: &[u8],
        category: &str,
        id: &str,
        path: &Path,
    ) -> Result<Request, ApprovalError> {
        let corrupt = |reason: &'static str| ApprovalError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| corrupt("not a staged request"))?;
        let (nonce, body) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(|| corrupt("truncated"))?;
        let mut body = zeroize::Zeroizing::new(body.to_vec());
        self.key
            .open_in_place(*nonce, &aad(category, id), &mut body)
            .map_err(|_| {
                corrupt("it does not authenticate (not sealed for this run, or altered)")
            })?;
        let request: Request =
            serde_json::from_slice(&body).map_err(|source| ApprovalError::NotARequest {
                path: path.to_owned(),
                source,
            })?;
        if request.id != id || request.category != category {
            return Err(corrupt("filed under another id or category"));
        }
        request.validate()?;
        Ok(request)
    }
}

fn aad(category: &str, id: &str) -> Vec<u8> {
    [MAGIC.as_slice(), category.as_bytes(), b"\0", id.as_bytes()].concat()
}

/// Writes one staged file: created new, never overwritten, and unreadable to its writer when
/// the staging directory belongs to someone else (the daemon reads it as "other").
pub fn write_staged(
    spool: &Spool,
    category: &str,
    id: &str,
    bytes: &[u8],
) -> Result<PathBuf, ApprovalError> {
    for (what, value) in [("id", id), ("category", category)] {
        if !crate::binding::is_token(value, 64) {
            return Err(ApprovalError::InvalidRequest {
                id: id.to_owned(),
                reason: format!("the {what} `{value}` is not 1–64 letters, digits, `-` or `_`"),
            });
        }
    }
    let dir = spool.category(category);
    let path = dir.join(id);
    // Stat through the path works with search permission alone; listing is not needed.
    let shared = std::fs::metadata(&dir)
        .map(|m| m.uid() != rustix::process::geteuid().as_raw())
        .map_err(ApprovalError::io(format!(
            "cannot reach `{}`",
            dir.display()
        )))?;
    let mode = if shared { 0o004 } else { 0o400 };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .map_err(ApprovalError::io(format!(
            "cannot stage `{}`",
            path.display()
        )))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(ApprovalError::io(format!(
            "cannot write `{}`",
            path.display()
        )))?;
    Ok(path)
}

/// [`write_staged`] for a request read from `reader` (how `p3ak hitl stage` gets it on its
/// standard input), refusing one over [`MAX_STAGED`] bytes before anything is written.
pub fn stage_from(
    spool: &Spool,
    category: &str,
    id: &str,
    reader: impl Read,
) -> Result<PathBuf, ApprovalError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_STAGED + 1)
        .read_to_end(&mut bytes)
        .map_err(ApprovalError::io("cannot read the request to stage"))?;
    if bytes.len() as u64 > MAX_STAGED {
        return Err(ApprovalError::TooLarge);
    }
    write_staged(spool, category, id, &bytes)
}

/// Reads a staged (or outbox) file, refusing anything but a regular file of sane size.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ApprovalError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(ApprovalError::io(format!(
            "cannot read `{}`",
            path.display()
        )))?;
    let meta = file.metadata().map_err(ApprovalError::io(format!(
        "cannot read `{}`",
        path.display()
    )))?;
    if !meta.is_file() || meta.len() > MAX_STAGED {
        return Err(ApprovalError::NotAFile(path.to_owned()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STAGED)
        .read_to_end(&mut bytes)
        .map_err(ApprovalError::io(format!(
            "cannot read `{}`",
            path.display()
        )))?;
    Ok(bytes)
}

/// Moves a spool file; the destination must not exist.
pub fn move_file(from: &Path, to_dir: &Path) -> Result<PathBuf, ApprovalError> {
    let name = from
        .file_name()
        .ok_or_else(|| ApprovalError::NoFileName(from.to_owned()))?;
    let to = to_dir.join(name);
    if to.exists() {
        return Err(ApprovalError::Exists(to));
    }
    std::fs::rename(from, &to).map_err(ApprovalError::io(format!(
        "cannot move `{}` to `{}`",
        from.display(),
        to_dir.display()
    )))?;
    Ok(to)
}
