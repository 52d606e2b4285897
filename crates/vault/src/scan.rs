//! Reading the record log: on open (fast: content records are only framed, not decrypted) and
//! on verify (deep: every record is authenticated).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use p3ak_audit::{Chain, Checkpoint, Signer, Tip};
use p3ak_crypto::{Key, SecretBytes, TAG_LEN};
use serde::{Deserialize, Serialize};

use crate::doc::{DocId, DocMeta};
use crate::error::{Result, VaultError};
use crate::format::{
    self, CommitSlot, Encryption, HEADER_LEN, Header, RECORD_HEADER_LEN, RecordHeader, kind,
};
use crate::seal::Sealer;

/// Where a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLoc {
    pub offset: u64,
    pub header: RecordHeader,
}

#[derive(Clone)]
pub(crate) struct DocEntry {
    pub(crate) meta: DocMeta,
    /// Index of the metadata record: the document's place in insertion order.
    pub(crate) seq: u64,
    pub(crate) chunks: Vec<RecordLoc>,
    pub(crate) damage: Option<String>,
}

impl DocEntry {
    /// An object's name (its title); empty for a document without one.
    pub(crate) fn object_name(&self) -> String {
        self.meta.title.clone().unwrap_or_default()
    }

    /// What listings show of it.
    pub(crate) fn info(&self) -> crate::DocInfo {
        crate::DocInfo {
            id: self.meta.id,
            title: self.meta.title.clone(),
            tags: self.meta.tags.clone(),
            created: self.meta.created,
            size: self.meta.size,
            source: self.meta.source.clone(),
            damaged: self.damage.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct DeleteRecord {
    pub(crate) id: DocId,
}

/// One damaged place in the file.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    pub offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<DocId>,
    pub what: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.record {
            Some(record) => write!(f, "record {record} at byte {}", self.offset)?,
            None => write!(f, "byte {}", self.offset)?,
        }
        if let Some(doc) = &self.document {
            write!(f, " (document {doc})")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// Committed records missing from the end of the file.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Truncation {
    pub committed_end: u64,
    pub file_len: u64,
}

/// What reading the record log found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpenReport {
    /// Bytes after the last complete record that were never committed (an interrupted write);
    /// a writer cuts them away.
    pub torn_tail_bytes: u64,
    /// Zeros after the last record: space a writer wrote ahead of its records (kept).
    pub preallocated_bytes: u64,
    /// Complete, authentic records written after the last commit (a crash between writing them
    /// and committing): kept.
    pub recovered_records: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncation>,
    pub no_intact_commit_slot: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub damage: Vec<Damage>,
    /// Highest nonce counter seen in any record header.
    #[serde(skip)]
    pub(crate) max_counter: Option<u64>,
}

impl OpenReport {
    /// One line describing damage that makes the vault unsafe to append to, if any.
    pub fn damage_summary(&self) -> Option<String> {
        if let Some(t) = &self.truncated {
            return Some(format!(
                "file is {} bytes but {} were committed: the end was cut off",
                t.file_len, t.committed_end
            ));
        }
        if self.no_intact_commit_slot {
            return Some("no intact commit slot".into());
        }
        self.damage.first().map(|d| match self.damage.len() {
            1 => d.to_string(),
            n => format!("{d}, and {} more", n - 1),
        })
    }
}

/// What `verify` reports.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The header's encryption status, by name (`none` for a plaintext vault).
    pub encryption: &'static str,
    pub documents: usize,
    /// Internal objects (search index files, embeddings), verified like documents.
    pub objects: usize,
    pub records: u64,
    pub bytes: u64,
    /// Entries in the audit log, and how many the header's signed checkpoint covers.
    pub log_entries: u64,
    pub log_checkpoint: Option<u64>,
    /// Problems, first one first. Empty means the vault is intact.
    pub problems: Vec<String>,
    /// Things worth knowing that are not damage.
    pub warnings: Vec<String>,
}

impl VerifyReport {
    pub(crate) fn new(header: &Header, intact: &[(usize, CommitSlot)], scan: Scan) -> Self {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        if !header.reserved_is_zero {
            problems.push("header: reserved bytes are not zero (damage, or a key slot this build cannot read)".to_owned());
        }
        for (i, name) in ["A", "B"].iter().enumerate() {
            if !intact.iter().any(|(slot, _)| *slot == i) {
                problems.push(format!(
                    "header: commit slot {name} failed its check (damage, or a commit interrupted by a crash)"
                ));
            }
        }
        if let Some(t) = &scan.report.truncated {
            problems.push(format!(
                "file is {} bytes but {} were committed: the end was cut off",
                t.file_len, t.committed_end
            ));
        }
        problems.extend(scan.report.damage.iter().map(ToString::to_string));
        let header_cp = intact.first().and_then(|(_, slot)| slot.checkpoint);
        let public = scan.log.signer().map(|s| s.public_key());
        match (header_cp, public) {
            (_, None) => problems.push("log: the signing key is missing".to_owned()),
            (None, Some(_)) => problems.push("log: the header holds no checkpoint".to_owned()),
            (Some(cp), Some(key)) => {
                if let Err(e) = cp.verify_against(&header.prefix.vault_id, &scan.log.chain, &key) {
                    problems.push(format!("log: header {e}"));
                }
                let later = |last: Option<Checkpoint>| last.filter(|last| last.size > cp.size);
                if let Some(last) = later(scan.log.last_committed_checkpoint) {
                    problems.push(format!(
                        "log: the header's checkpoint covers {} entries but the committed log holds a later one covering {}: an older header was put back",
                        cp.size, last.size
                    ));
                } else if let Some(last) = later(scan.log.last_checkpoint) {
                    // A commit syncs its records, then writes its slot, which the next sync
                    // makes durable; a writer's open rewrites the slot durably. So a crash
                    // leaves at most one closed batch after the header's commit point.
                    if scan.log.recovered_batches > 1 {
                        problems.push(format!(
                            "log: the header's checkpoint covers {} entries but {} later commits follow it, up to {} entries (a crash leaves at most one): an older header was put back",
                            cp.size, scan.log.recovered_batches, last.size
                        ));
                    } else {
                        warnings.push(format!(
                            "the last commit's slot was not written (a crash after its records were synced): its log up to {} entries is recovered, and the next writer records it in the header",
                            last.size
                        ));
                    }
                }
            }
        }
        if scan.report.torn_tail_bytes > 0 {
            warnings.push(format!(
                "{} bytes after the last commit belong to an interrupted write; the next write drops them",
                scan.report.torn_tail_bytes
            ));
        }
        if scan.report.recovered_records > 0 {
            warnings.push(format!(
                "{} complete records after the last commit were recovered",
                scan.report.recovered_records
            ));
        }
        if header.prefix.encryption == Encryption::None {
            warnings.push(
                "the vault is not encrypted: its records are plaintext and their checks catch accidents, not tampering".to_owned(),
            );
        }
        Self {
            encryption: header.prefix.encryption.name(),
            documents: scan
                .docs
                .values()
                .filter(|e| e.meta.space.is_none())
                .count(),
            objects: scan
                .docs
                .values()
                .filter(|e| {
                    e.meta
                        .space
                        .as_deref()
                        .is_some_and(|s| !crate::canary::is_reserved_space(s))
                })
                .count(),
            records: scan.accepted_count,
            bytes: scan.accepted_end,
            log_entries: scan.log.chain.len(),
            log_checkpoint: header_cp.map(|cp| cp.size),
            problems,
            warnings,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The audit log as read from the records.
#[derive(Default)]
pub(crate) struct LogScan {
    pub(crate) chain: Chain,
    /// Where each entry's record is, by sequence number.
    pub(crate) locs: Vec<RecordLoc>,
    /// The signing key seed.
    pub(crate) seed: Option<SecretBytes>,
    /// Its public key, computed once when a deep scan first checks a checkpoint (a scalar
    /// multiplication: once per checkpoint record made opening cost grow with every commit).
    pub(crate) public_key: Option<[u8; 32]>,
    /// The last checkpoint record in the log.
    pub(crate) last_checkpoint: Option<Checkpoint>,
    /// The last checkpoint record before the header's commit point.
    pub(crate) last_committed_checkpoint: Option<Checkpoint>,
    /// Batches after the commit point kept because their checkpoint closes them.
    pub(crate) recovered_batches: u64,
    /// Set at the first broken link; later entries are not read.
    pub(crate) broken: bool,
}

impl LogScan {
    pub(crate) fn signer(&self) -> Option<Signer> {
        let seed = self.seed.as_ref()?;
        Some(Signer::from_seed(&Key::from_slice(seed.expose()).ok()?))
    }
}

pub(crate) struct Scan {
    pub(crate) log: LogScan,
    pub(crate) docs: BTreeMap<DocId, DocEntry>,
    /// Offset just past the last complete unit (document or tombstone) that is kept.
    pub(crate) accepted_end: u64,
    pub(crate) accepted_count: u64,
    pub(crate) report: OpenReport,
}

pub(crate) enum BodyError {
    Io(io::Error),
    Auth,
}

/// Reads and authenticates one record body; returns its plaintext (kind byte first).
pub(crate) fn read_record_body(
    file: &File,
    header: &Header,
    sealer: &Sealer,
    loc: &RecordLoc,
) -> std::result::Result<SecretBytes, BodyError> {
    let len = loc.header.body_len as usize;
    let mut body = SecretBytes::new(vec![0u8; len]);
    file.read_exact_at(body.expose_mut(), loc.offset + RECORD_HEADER_LEN as u64)
        .map_err(BodyError::Io)?;
    if sealer.open(
        &header.prefix.vault_id,
        loc.offset,
        &loc.header,
        body.expose_mut(),
    ) {
        Ok(body)
    } else {
        Err(BodyError::Auth)
    }
}

struct Pending {
    entry: DocEntry,
    start: u64,
}

struct Scanner<'a> {
    file: &'a File,
    file_len: u64,
    committed_end: u64,
    header: &'a Header,
    sealer: &'a Sealer,
    /// Verify signatures too (the deep scan of `verify`).
    deep: bool,
    /// Past the commit point: the batch being read.
    tail: Option<TailBatch>,
    /// Set when the rest of the file is an unusable tail.
    stop: bool,
    /// End of the last record kept (committed, or closed by a checkpoint after the commit).
    accepted_end: u64,
    accepted_count: u64,
    docs: BTreeMap<DocId, DocEntry>,
    pending: Option<Pending>,
    /// Content records after a damaged document are expected; don't report each one.
    orphans_expected: bool,
    report: OpenReport,
    log: LogScan,
}

/// Reads the record log. IO errors fail; damage is reported, never fatal.
pub(crate) fn scan(
    file: &File,
    file_len: u64,
    header: &Header,
    sealer: &Sealer,
    intact: &[(usize, CommitSlot)],
    deep: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Scan> {
    let committed = intact.first().map(|(_, s)| *s);
    let committed_end = committed.map_or(HEADER_LEN as u64, |c| {
        c.committed_end.max(HEADER_LEN as u64)
    });
    let mut s = Scanner {
        file,
        file_len,
        committed_end,
        header,
        sealer,
        deep,
        docs: BTreeMap::new(),
        pending: None,
        orphans_expected: false,
        log: LogScan::default(),
        tail: None,
        stop: false,
        accepted_end: HEADER_LEN as u64,
        accepted_count: 0,
        report: OpenReport {
            no_intact_commit_slot: committed.is_none(),
            ..OpenReport::default()
        },
    };
    if file_len < committed_end {
        s.report.truncated = Some(Truncation {
            committed_end,
            file_len,
        });
    }
    let io_err = |e| VaultError::io("cannot read vault")(e);
    let mut pos = HEADER_LEN as u64;
    let mut index = 0u64;
    let total = file_len.saturating_sub(HEADER_LEN as u64);
    while !s.stop {
        if deep {
            progress(pos.saturating_sub(HEADER_LEN as u64).min(total), total);
        }
        if let Some(c) = committed
            && pos == committed_end
            && index != c.record_count
        {
            s.damage(
                pos,
                None,
                format!(
                    "{index} records precede the commit point, the commit says {}",
                    c.record_count
                ),
            );
        }
        if pos >= file_len {
            break;
        }
        let in_committed = pos < committed_end;
        if !in_committed && s.tail.is_none() {
            s.tail = Some(TailBatch::new(s.log.chain.tip()));
        }
        let header = s.read_header(pos).map_err(io_err)?.filter(|h| {
            h.index == index
                && pos
                    .checked_add(h.total_len())
                    .is_some_and(|e| e <= file_len)
        });
        let Some(rh) = header else {
            if !in_committed {
                break;
            }
            s.damage(pos, Some(index), "record header unreadable".into());
            s.fail_pending("a record of it is unreadable");
            match s.resync(pos + 1, index).map_err(io_err)? {
                Some((loc, body)) => {
                    pos = loc.offset + loc.header.total_len();
                    index = loc.header.index + 1;
                    s.apply(loc, body);
                    if s.pending.is_none() && s.tail.is_none() {
                        s.accepted_end = pos;
                        s.accepted_count = index;
                    }
                    continue;
                }
                None => break,
            }
        };
        s.report.max_counter = s.report.max_counter.max(Some(rh.counter));
        let loc = RecordLoc {
            offset: pos,
            header: rh,
        };
        if !deep && in_committed && s.pending.is_some() {
            s.chunk(loc);
        } else {
            match read_record_body(file, s.header, s.sealer, &loc) {
                Ok(body) => s.apply(loc, body),
                // Past the commit point the file may shrink under a reader (a writer closing
                // gives back the space it wrote ahead): the end of what is there.
                Err(BodyError::Io(e))
                    if !in_committed && e.kind() == io::ErrorKind::UnexpectedEof =>
                {
                    break;
                }
                Err(BodyError::Io(e)) => return Err(io_err(e)),
                Err(BodyError::Auth) if !in_committed => break,
                Err(BodyError::Auth) => {
                    let doc = s.pending.as_ref().map(|p| p.entry.meta.id);
                    s.report.damage.push(Damage {
                        offset: pos,
                        record: Some(index),
                        document: doc,
                        what: "failed authentication".into(),
                    });
                    s.fail_pending("a record of it failed authentication");
                }
            }
        }
        pos += rh.total_len();
        index += 1;
        if in_committed && s.pending.is_none() {
            if pos > committed_end {
                s.damage(
                    loc.offset,
                    Some(loc.header.index),
                    "the record straddles the commit point".into(),
                );
            }
            s.accepted_end = pos;
            s.accepted_count = index;
        }
    }
    if let Some(p) = s.pending.take()
        && p.start < committed_end
        && s.tail.is_none()
    {
        s.pending = Some(p);
        s.fail_pending("its content is missing (the file ends early)");
    }
    if s.accepted_end >= committed_end {
        let tail = file_len.saturating_sub(s.accepted_end);
        if s.only_zeros_from(s.accepted_end).map_err(io_err)? {
            s.report.preallocated_bytes = tail;
        } else {
            s.report.torn_tail_bytes = tail;
        }
    }
    if let Some(c) = committed
        && s.accepted_end > committed_end
    {
        s.report.recovered_records = s.accepted_count.saturating_sub(c.record_count);
    }
    if deep {
        progress(total, total);
    }
    Ok(Scan {
        log: s.log,
        docs: s.docs,
        accepted_end: s.accepted_end,
        accepted_count: s.accepted_count,
        report: s.report,
    })
}

/// Records after the commit point, held back until a checkpoint record closes their batch.
struct TailBatch {
    tip: Tip,
    entries: Vec<(Vec<u8>, RecordLoc)>,
    docs: Vec<DocEntry>,
    deletes: Vec<DocId>,
}

impl TailBatch {
    fn new(tip: Tip) -> Self {
        Self {
            tip,
            entries: Vec::new(),
            docs: Vec::new(),
            deletes: Vec::new(),
        }
    }
}

impl Scanner<'_> {
    fn read_header(&self, pos: u64) -> io::Result<Option<RecordHeader>> {
        if pos + RECORD_HEADER_LEN as u64 > self.file_len {
            return Ok(None);
        }
        let mut buf = [0u8; RECORD_HEADER_LEN];
        match self.file.read_exact_at(&mut buf, pos) {
            Ok(()) => Ok(RecordHeader::parse(&buf)),
            // Shrunk under a reader after the commit point (see the body read in `scan`).
            Err(e) if pos >= self.committed_end && e.kind() == io::ErrorKind::UnexpectedEof => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the file holds only zero bytes from `from` to its end: space written ahead,
    /// not an interrupted write.
    fn only_zeros_from(&self, from: u64) -> io::Result<bool> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut pos = from;
        while pos < self.file_len {
            let want = usize::try_from((self.file_len - pos).min(buf.len() as u64)).unwrap_or(0);
            let window = buf.get_mut(..want).unwrap_or_default();
            let got = self.file.read_at(window, pos)?;
            if got == 0 {
                // The file shrank while being read: what remains was all zeros.
                return Ok(true);
            }
            if window.get(..got).is_some_and(|w| w.iter().any(|&b| b != 0)) {
                return Ok(false);
            }
            pos += got as u64;
        }
        Ok(true)
    }

    fn damage(&mut self, offset: u64, record: Option<u64>, what: String) {
        self.report.damage.push(Damage {
            offset,
            record,
            document: None,
            what,
        });
    }

    /// Marks the document being read as damaged and keeps it, so it is listed as such.
    fn fail_pending(&mut self, reason: &str) {
        if self.tail.is_some() {
            // After the commit point an unfinished document is part of a torn batch.
            if self.pending.take().is_some() {
                self.stop = true;
            }
            return;
        }
        if let Some(mut p) = self.pending.take() {
            p.entry.damage = Some(reason.to_owned());
            self.docs.insert(p.entry.meta.id, p.entry);
            self.orphans_expected = true;
        }
    }

    fn chunk(&mut self, loc: RecordLoc) {
        let Some(pending) = self.pending.as_mut() else {
            if !self.orphans_expected {
                self.damage(
                    loc.offset,
                    Some(loc.header.index),
                    "content record without a document".into(),
                );
                self.orphans_expected = true;
            }
            return;
        };
        pending.entry.chunks.push(loc);
        if pending.entry.chunks.len() as u64 == u64::from(pending.entry.meta.chunks) {
            self.finish();
        }
    }

    fn finish(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let mut entry = p.entry;
        let stored: u64 = entry
            .chunks
            .iter()
            .map(|c| u64::from(c.header.body_len).saturating_sub(1 + TAG_LEN as u64))
            .sum();
        if stored != entry.meta.size {
            entry.damage = Some(format!(
                "content is {stored} bytes, metadata says {}",
                entry.meta.size
            ));
        }
        self.orphans_expected = false;
        match self.tail.as_mut() {
            Some(tail) => tail.docs.push(entry),
            None => {
                self.docs.insert(entry.meta.id, entry);
            }
        }
    }

    fn apply(&mut self, loc: RecordLoc, body: SecretBytes) {
        let Some((&kind, payload)) = body.expose().split_first() else {
            self.damage(loc.offset, Some(loc.header.index), "empty record".into());
            return;
        };
        match kind {
            kind::DOC_CHUNK => self.chunk(loc),
            kind::DOC_META => {
                self.fail_pending("it is followed by another document before its content ends");
                match serde_json::from_slice::<DocMeta>(payload) {
                    Ok(meta) => {
                        let chunks = meta.chunks;
                        self.pending = Some(Pending {
                            entry: DocEntry {
                                meta,
                                seq: loc.header.index,
                                chunks: Vec::new(),
                                damage: None,
                            },
                            start: loc.offset,
                        });
                        self.orphans_expected = false;
                        if chunks == 0 {
                            self.finish();
                        }
                    }
                    Err(e) => {
                        self.damage(
                            loc.offset,
                            Some(loc.header.index),
                            format!("metadata unreadable: {e}"),
                        );
                        self.orphans_expected = true;
                    }
                }
            }
            kind::DELETE => {
                self.fail_pending("it is followed by a deletion before its content ends");
                match serde_json::from_slice::<DeleteRecord>(payload) {
                    Ok(del) => match self.tail.as_mut() {
                        Some(tail) => tail.deletes.push(del.id),
                        None => {
                            self.docs.remove(&del.id);
                        }
                    },
                    Err(e) => self.damage(
                        loc.offset,
                        Some(loc.header.index),
                        format!("deletion unreadable: {e}"),
                    ),
                }
            }
            kind::LOG_ENTRY => {
                self.fail_pending("it is followed by a log entry before its content ends");
                if self.log.broken {
                    return;
                }
                if let Some(tail) = self.tail.as_mut() {
                    match tail.tip.push_checked(payload) {
                        Ok(_) => tail.entries.push((payload.to_vec(), loc)),
                        Err(_) => self.stop = true,
                    }
                    return;
                }
                match self.log.chain.push(payload) {
                    Ok(_) => self.log.locs.push(loc),
                    Err(e) => {
                        self.damage(loc.offset, Some(loc.header.index), format!("log {e}"));
                        self.log.broken = true;
                    }
                }
            }
            kind::LOG_KEY => {
                if payload.len() == 32 && self.log.seed.is_none() {
                    self.log.seed = Some(SecretBytes::new(payload.to_vec()));
                } else {
                    self.damage(
                        loc.offset,
                        Some(loc.header.index),
                        "unexpected log key".into(),
                    );
                }
            }
            kind::CHECKPOINT => self.checkpoint(loc, payload),
            other => self.damage(
                loc.offset,
                Some(loc.header.index),
                format!("unknown record kind {other}"),
            ),
        }
    }

    fn checkpoint(&mut self, loc: RecordLoc, payload: &[u8]) {
        if self.log.broken {
            return;
        }
        let vault_id = self.header.prefix.vault_id;
        let Some(cp) = Checkpoint::from_bytes(payload) else {
            return self.checkpoint_failed(loc, "unreadable".into());
        };
        if self.deep {
            if self.log.public_key.is_none() {
                self.log.public_key = self.log.signer().map(|s| s.public_key());
            }
            let checked = self
                .log
                .public_key
                .ok_or_else(|| "no log key to check it with".to_owned())
                .and_then(|key| cp.verify_signature(&key).map_err(|e| e.to_string()));
            if let Err(reason) = checked {
                return self.checkpoint_failed(loc, reason);
            }
        }
        if let Some(mut tail) = self.tail.take() {
            // A batch after the commit point counts only when its checkpoint closes it.
            if self.pending.is_some() || !cp.matches_tip(&vault_id, &tail.tip) {
                self.stop = true;
                self.tail = Some(tail);
                return;
            }
            for (bytes, entry_loc) in tail.entries.drain(..) {
                if self.log.chain.push(&bytes).is_ok() {
                    self.log.locs.push(entry_loc);
                }
            }
            for entry in tail.docs.drain(..) {
                self.docs.insert(entry.meta.id, entry);
            }
            for id in tail.deletes.drain(..) {
                self.docs.remove(&id);
            }
            self.log.last_checkpoint = Some(cp);
            self.log.recovered_batches += 1;
            self.accepted_end = loc.offset + loc.header.total_len();
            self.accepted_count = loc.header.index + 1;
            self.tail = Some(TailBatch::new(self.log.chain.tip()));
            return;
        }
        if cp.size != self.log.chain.len() {
            let reason = format!(
                "covers {} entries but follows entry {}",
                cp.size,
                self.log.chain.len()
            );
            return self.checkpoint_failed(loc, reason);
        }
        match cp.matches(&vault_id, &self.log.chain) {
            Ok(()) => {
                self.log.last_checkpoint = Some(cp);
                self.log.last_committed_checkpoint = Some(cp);
            }
            Err(e) => self.checkpoint_failed(loc, e.to_string()),
        }
    }

    fn checkpoint_failed(&mut self, loc: RecordLoc, reason: String) {
        if self.tail.is_some() {
            self.stop = true;
            return;
        }
        self.damage(
            loc.offset,
            Some(loc.header.index),
            format!("log checkpoint: {reason}"),
        );
    }

    /// After damage, finds the next authentic record at or after `from`.
    fn resync(
        &mut self,
        from: u64,
        min_index: u64,
    ) -> io::Result<Option<(RecordLoc, SecretBytes)>> {
        const WINDOW: usize = 64 * 1024;
        let mut start = from;
        let mut buf = vec![0u8; WINDOW + RECORD_HEADER_LEN];
        while start + RECORD_HEADER_LEN as u64 <= self.file_len {
            let len = usize::try_from((self.file_len - start).min(buf.len() as u64)).unwrap_or(0);
            let window = buf.get_mut(..len).unwrap_or_default();
            self.file.read_exact_at(window, start)?;
            let mut at = 0usize;
            while let Some(found) = window
                .get(at..)
                .and_then(|w| w.windows(4).position(|m| m == format::RECORD_MAGIC))
            {
                let offset = start + (at + found) as u64;
                at += found + 1;
                let Some(h) = window
                    .get(at - 1..)
                    .and_then(RecordHeader::parse)
                    .filter(|h| h.index >= min_index && offset + h.total_len() <= self.file_len)
                else {
                    continue;
                };
                let loc = RecordLoc { offset, header: h };
                match read_record_body(self.file, self.header, self.sealer, &loc) {
                    Ok(body) => {
                        self.report.max_counter = self.report.max_counter.max(Some(h.counter));
                        return Ok(Some((loc, body)));
                    }
                    Err(BodyError::Io(e)) => return Err(e),
                    Err(BodyError::Auth) => {}
                }
            }
            if len < buf.len() {
                break;
            }
            start += WINDOW as u64;
        }
        Ok(None)
    }
}
