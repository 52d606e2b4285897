//! `p3ak vault demo`: the whole life of a vault, on embedded sample documents, in a temporary
//! directory that is removed afterwards.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use p3ak_vault::{
    Access, KdfParams, NewDocument, NewKeys, Passphrase, Protection, Unlock, Vault, VaultError,
};
use serde::Serialize;

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct Args {}

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

#[derive(Serialize)]
struct Step {
    step: &'static str,
    detail: String,
    millis: u128,
}

struct Steps<'o> {
    out: &'o Output,
    steps: Vec<Step>,
}

impl Steps<'_> {
    fn run<T>(
        &mut self,
        step: &'static str,
        work: impl FnOnce() -> anyhow::Result<(T, String)>,
    ) -> anyhow::Result<T> {
        let start = Instant::now();
        let (value, detail) = work().with_context(|| format!("demo step `{step}` failed"))?;
        let millis = start.elapsed().as_millis();
        self.out
            .line(format!("{:<8} {detail}  ({millis} ms)", format!("{step}:")));
        self.steps.push(Step {
            step,
            detail,
            millis,
        });
        Ok(value)
    }
}

fn random_passphrase() -> anyhow::Result<Passphrase> {
    let bytes: [u8; 16] = p3ak_crypto::random_array()?;
    Ok(Passphrase::new(
        bytes.iter().map(|b| format!("{b:02x}")).collect(),
    ))
}

pub fn run(_args: Args, out: &Output) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("p3ak-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let path = dir.path().join("demo.vault");
    let marker = format!("p3ak-demo-marker-{}", hex_id()?);
    out.line(format!(
        "P3AK demo: a temporary encrypted vault at {}",
        path.display()
    ));
    let mut steps = Steps {
        out,
        steps: Vec::new(),
    };

    let first = random_passphrase()?;
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
        ensure!(
            found.len() == 2,
            "expected two finance documents, found {}",
            found.len()
        );
        Ok((
            (),
            format!("documents tagged kind=finance: {}", found.join("; ")),
        ))
    })?;

    steps.run("get", || {
        let id = ids.get(2).context("no third document")?;
        let (meta, content) = vault.get(id)?;
        let expected = contents.get(2).context("no third sample")?;
        ensure!(content.expose() == expected.as_bytes(), "content differs");
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
        let mut memory = p3ak_memory::Memory::open(&vault)?;
        let indexed = memory
            .ingest(Vec::new(), &p3ak_memory::IngestOptions::default(), &mut |_| {})?
            .caught_up;
        let query = "where does the surplus go";
        let mut request = p3ak_memory::SearchRequest::new(query);
        request.mode = p3ak_memory::Mode::Bm25;
        let results = memory.search(&request, None)?;
        let top = results.hits.first().context("no search result")?;
        let title = top.title.clone().unwrap_or_default();
        ensure!(
            title == "Quarterly budget review",
            "expected the budget review first, found `{title}`"
        );
        Ok((
            (),
            format!(
                "indexed {indexed} documents (the index is stored encrypted in the vault); \"{query}\" -> {title}"
            ),
        ))
    })?;

    steps.run("scan", || {
        let hits = scan_for(dir.path(), marker.as_bytes())?;
        ensure!(hits == 0, "found plaintext on disk in {hits} files");
        Ok((
            (),
            "searched every file in the vault directory for the documents' text: not found"
                .to_owned(),
        ))
    })?;

    let second = random_passphrase()?;
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
            Ok(_) => bail!("the old passphrase still opens the vault"),
            Err(e) => return Err(e.into()),
        }
        let vault = Vault::open(&path, Unlock::Passphrase(&second), Access::Read)?;
        let report = vault.verify(&mut |_, _| {})?;
        ensure!(
            report.is_ok(),
            "verify found problems: {:?}",
            report.problems
        );
        for (id, expected) in ids.iter().zip(&contents) {
            let (_, content) = vault.get(id)?;
            ensure!(
                content.expose() == expected.as_bytes(),
                "document {id} changed"
            );
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
        let mut kinds: Vec<(String, usize)> = Vec::new();
        for entry in &entries {
            match kinds.last_mut() {
                Some((kind, n)) if *kind == entry.kind => *n += 1,
                _ => kinds.push((entry.kind.clone(), 1)),
            }
        }
        let summary: Vec<String> = kinds
            .iter()
            .map(|(kind, n)| if *n == 1 { kind.clone() } else { format!("{kind} x{n}") })
            .collect();
        let checkpoint = vault.log_checkpoint().context("no signed checkpoint")?;
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

    out.json(&serde_json::json!({ "ok": true, "steps": steps.steps }));
    out.line("demo complete; the temporary vault is removed");
    Ok(())
}

fn hex_id() -> anyhow::Result<String> {
    let bytes: [u8; 8] = p3ak_crypto::random_array()?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Number of files under `dir` containing `needle`.
fn scan_for(dir: &Path, needle: &[u8]) -> anyhow::Result<usize> {
    let mut hits = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            hits += scan_for(&path, needle)?;
        } else if std::fs::read(&path)?
            .windows(needle.len())
            .any(|w| w == needle)
        {
            hits += 1;
        }
    }
    Ok(hits)
}
