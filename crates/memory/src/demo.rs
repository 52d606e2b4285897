//! The scripted walk behind `p3ak vault demo`: the whole life of a vault, on embedded sample
//! documents, in a temporary directory that is removed afterwards.
//!
//! Create, put, list, get, search, scan the disk for plaintext, rekey, verify and read the
//! vault's own audit log. Each step checks what it did; the caller prints: [`run`] reports
//! each step as a [`DemoEvent`] when it is done.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use p3ak_vault::{
    Access, DocId, KdfParams, NewDocument, NewKeys, Passphrase, Protection, Unlock, Vault,
    VaultError,
};
use serde::Serialize;

use crate::{IngestOptions, Memory, MemoryError, Mode, SearchRequest};

/// Why the demo stopped: it could not start, or one of its steps failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot create a temporary directory")]
    TempDir(#[source] std::io::Error),
    #[error(transparent)]
    Crypto(#[from] p3ak_crypto::CryptoError),
    #[error("demo step `{step}` failed")]
    Step {
        step: &'static str,
        #[source]
        source: StepError,
    },
}

/// What went wrong inside one step: an error of the libraries, or a check that did not hold.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("expected two finance documents, found {0}")]
    FinanceDocuments(usize),
    #[error("no {0}")]
    Missing(&'static str),
    #[error("content differs")]
    ContentDiffers,
    #[error("expected the budget review first, found `{0}`")]
    WrongFirstHit(String),
    #[error("found plaintext on disk in {0} files")]
    PlaintextOnDisk(usize),
    #[error("the old passphrase still opens the vault")]
    OldPassphraseOpens,
    #[error("verify found problems: {0:?}")]
    VerifyProblems(Vec<String>),
    #[error("document {0} changed")]
    DocumentChanged(DocId),
}

/// One step done, as it is printed and as `--json` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: &'static str,
    pub detail: String,
    pub millis: u128,
}

/// What the demo reports while it runs, in order.
pub enum DemoEvent<'a> {
    /// The temporary vault's path, before the first step.
    Started(&'a Path),
    /// A step is done.
    Step(&'a Step),
}

/// An embedded sample document. The demo appends a unique marker line to each, used to prove
/// that no plaintext reached the disk.
struct Sample {
    title: &'static str,
    tags: &'static [(&'static str, &'static str)],
    text: &'static str,
}

const SAMPLES: &[Sample] = &[
    Sample {
        title: "Household budget 2027",
        tags: &[("kind", "finance"), ("owner", "alex")],
        text: "Rent 1,450.00 a month; groceries about 600.00; savings target 20%.\n",
    },
    Sample {
        title: "Router admin notes",
        tags: &[("kind", "it"), ("owner", "alex")],
        text: "The router lives in the hall cupboard. Firmware updated in October.\n",
    },
    Sample {
        title: "Trip to Lisbon",
        tags: &[("kind", "travel"), ("owner", "sam")],
        text: "Flights on the 14th, back on the 21st. Hotel near Alfama; book the tram tour.\n",
    },
    Sample {
        title: "Quarterly budget review",
        tags: &[("kind", "finance"), ("owner", "sam")],
        text: "Q3 spending came in 4% under budget; move the surplus to the emergency fund.\n",
    },
];

/// Times each step, reports it and keeps it for the summary.
struct Steps<'e> {
    on_event: &'e mut dyn FnMut(DemoEvent<'_>),
    steps: Vec<Step>,
}

impl Steps<'_> {
    fn run<T>(
        &mut self,
        step: &'static str,
        work: impl FnOnce() -> Result<(T, String), StepError>,
    ) -> Result<T, DemoError> {
        let start = Instant::now();
        let (value, detail) = work().map_err(|source| DemoError::Step { step, source })?;
        let done = Step {
            step,
            detail,
            millis: start.elapsed().as_millis(),
        };
        (self.on_event)(DemoEvent::Step(&done));
        self.steps.push(done);
        Ok(value)
    }
}

fn random_hex<const N: usize>() -> Result<String, p3ak_crypto::CryptoError> {
    let bytes: [u8; N] = p3ak_crypto::random_array()?;
    Ok(hex::encode(bytes))
}

/// Runs every step in a fresh temporary directory, removed when it returns; returns the steps.
pub fn run(on_event: &mut dyn FnMut(DemoEvent<'_>)) -> Result<Vec<Step>, DemoError> {
    let dir = tempfile::Builder::new()
        .prefix("p3ak-demo-")
        .tempdir()
        .map_err(DemoError::TempDir)?;
    let path = dir.path().join("demo.vault");
    let marker = format!("p3ak-demo-marker-{}", random_hex::<8>()?);
    on_event(DemoEvent::Started(&path));
    let mut steps = Steps {
        on_event,
        steps: Vec::new(),
    };

    let first = Passphrase::new(random_hex::<16>()?);
    let vault = steps.run("create", || {
        let kdf = KdfParams::RFC9106_SECOND;
        let vault = Vault::create(
            &path,
            Protection::Passphrase {
                passphrase: &first,
                kdf,
            },
        )?;
        let detail = format!(
            "AES-256-GCM vault; passphrase stretched with Argon2id ({} MiB, {} passes, {} lanes)",
            kdf.memory_kib / 1024,
            kdf.iterations,
            kdf.parallelism
        );
        Ok((vault, detail))
    })?;

    let contents: Vec<String> = SAMPLES
        .iter()
        .map(|sample| format!("{}{marker}\n", sample.text))
        .collect();
    let ids = steps.run("put", || {
        let docs = SAMPLES
            .iter()
            .zip(&contents)
            .map(|(sample, text)| NewDocument {
                content: text.as_bytes(),
                title: Some(sample.title.to_owned()),
                tags: sample
                    .tags
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
                source: None,
            });
        let outcomes = vault.put_batch(docs)?;
        let ids: Vec<_> = outcomes.iter().map(|o| o.id).collect();
        Ok((
            ids,
            format!("stored {} documents in one commit", outcomes.len()),
        ))
    })?;

    steps.run("list", || {
        let found: Vec<String> = vault
            .list()
            .into_iter()
            .filter(|d| d.tags.get("kind").map(String::as_str) == Some("finance"))
            .map(|d| d.title.unwrap_or_default())
            .collect();
        if found.len() != 2 {
            return Err(StepError::FinanceDocuments(found.len()));
        }
        Ok((
            (),
            format!("documents tagged kind=finance: {}", found.join("; ")),
        ))
    })?;

    steps.run("get", || {
        let id = ids.get(2).ok_or(StepError::Missing("third document"))?;
        let (meta, content) = vault.get(id)?;
        let expected = contents.get(2).ok_or(StepError::Missing("third sample"))?;
        if content.expose() != expected.as_bytes() {
            return Err(StepError::ContentDiffers);
        }
        let first_line = String::from_utf8_lossy(content.expose())
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        Ok((
            (),
            format!("{} -> \"{}\"", meta.title.unwrap_or_default(), first_line),
        ))
    })?;

    steps.run("search", || {
        let mut memory = Memory::open(&vault)?;
        let indexed = memory
            .ingest(Vec::new(), &IngestOptions::default(), &mut |_| {})?
            .caught_up;
        let query = "where does the surplus go";
        let mut request = SearchRequest::new(query);
        request.mode = Mode::Bm25;
        let results = memory.search(&request, None)?;
        let top = results
            .hits
            .first()
            .ok_or(StepError::Missing("search result"))?;
        let title = top.title.clone().unwrap_or_default();
        if title != "Quarterly budget review" {
            return Err(StepError::WrongFirstHit(title));
        }
        Ok((
            (),
            format!(
                "indexed {indexed} documents (the index is stored encrypted in the vault); \"{query}\" -> {title}"
            ),
        ))
    })?;

    steps.run("scan", || {
        let hits = files_containing(dir.path(), marker.as_bytes())?;
        if hits != 0 {
            return Err(StepError::PlaintextOnDisk(hits));
        }
        Ok((
            (),
            "searched every file in the vault directory for the documents' text: not found"
                .to_owned(),
        ))
    })?;

    let second = Passphrase::new(random_hex::<16>()?);
    steps.run("rekey", || {
        let report = vault.rewrite(
            NewKeys::Passphrase {
                passphrase: &second,
                kdf: KdfParams::RFC9106_SECOND,
            },
            &mut |_, _| {},
        )?;
        Ok((
            (),
            format!(
                "new passphrase and new master key; {} documents re-encrypted",
                report.documents
            ),
        ))
    })?;

    steps.run("verify", || {
        match Vault::open(&path, Unlock::Passphrase(&first), Access::Read) {
            Err(VaultError::WrongPassphrase) => {}
            Ok(_) => return Err(StepError::OldPassphraseOpens),
            Err(e) => return Err(e.into()),
        }
        let vault = Vault::open(&path, Unlock::Passphrase(&second), Access::Read)?;
        let report = vault.verify(&mut |_, _| {})?;
        if !report.is_ok() {
            return Err(StepError::VerifyProblems(report.problems));
        }
        for (id, expected) in ids.iter().zip(&contents) {
            let (_, content) = vault.get(id)?;
            if content.expose() != expected.as_bytes() {
                return Err(StepError::DocumentChanged(*id));
            }
        }
        Ok((
            (),
            format!(
                "old passphrase refused; {} documents, {} records authenticated, contents intact",
                report.documents, report.records
            ),
        ))
    })?;

    steps.run("audit", || {
        let vault = Vault::open(&path, Unlock::Passphrase(&second), Access::Read)?;
        let entries = vault.log_entries(0, u64::MAX)?;
        let kinds = runs(entries.iter().map(|entry| entry.kind.as_str()));
        let summary: Vec<String> = kinds
            .iter()
            .map(|(kind, n)| {
                if *n == 1 {
                    (*kind).to_owned()
                } else {
                    format!("{kind} x{n}")
                }
            })
            .collect();
        let checkpoint = vault
            .log_checkpoint()
            .ok_or(StepError::Missing("signed checkpoint"))?;
        let proof = vault.log_inclusion_proof(1)?;
        Ok((
            (),
            format!(
                "{} log entries ({}); Ed25519-signed checkpoint covers {}; inclusion proof of entry 1 ({} hashes) checked",
                entries.len(),
                summary.join(", "),
                checkpoint.size,
                proof.proof.0.len()
            ),
        ))
    })?;

    Ok(steps.steps)
}

/// Runs of equal neighbours, each with its length: `a a b a` gives `a×2, b×1, a×1`.
fn runs<'a>(items: impl Iterator<Item = &'a str>) -> Vec<(&'a str, usize)> {
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for item in items {
        match runs.last_mut() {
            Some((last, n)) if *last == item => *n += 1,
            _ => runs.push((item, 1)),
        }
    }
    runs
}

/// Number of files under `dir` containing `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> std::io::Result<usize> {
    let mut hits = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            hits += files_containing(&path, needle)?;
        } else if std::fs::read(&path)?
            .windows(needle.len())
            .any(|w| w == needle)
        {
            hits += 1;
        }
    }
    Ok(hits)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn the_demo_walks_every_step_and_removes_its_vault() {
        let mut vault = None;
        let mut reported = Vec::new();
        let steps = run(&mut |event| match event {
            DemoEvent::Started(path) => vault = Some(path.to_owned()),
            DemoEvent::Step(step) => reported.push(step.step),
        })
        .unwrap();
        let names: Vec<_> = steps.iter().map(|s| s.step).collect();
        assert_eq!(
            names,
            [
                "create", "put", "list", "get", "search", "scan", "rekey", "verify", "audit"
            ]
        );
        assert_eq!(reported, names, "each step is reported as it is done");
        let vault = vault.unwrap();
        assert!(!vault.exists(), "the temporary vault is removed");
        assert!(!vault.parent().unwrap().exists());
    }

    #[test]
    fn runs_count_equal_neighbours() {
        assert_eq!(
            runs(["a", "a", "b", "a"].into_iter()),
            [("a", 2), ("b", 1), ("a", 1)]
        );
        assert!(runs(std::iter::empty()).is_empty());
    }
}
