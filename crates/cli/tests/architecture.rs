//! The crate graph stays the one `ARCHITECTURE.md` documents: every dependency edge between
//! the workspace's crates is in its "Crate graph" table, every crate is listed, and no normal
//! dependency is on a test-only crate. The table is the allowed list, so doc and code cannot
//! drift apart.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One row of the table.
#[derive(Debug)]
struct Row {
    path: String,
    kind: String,
    allowed: BTreeSet<String>,
}

/// One workspace crate as cargo sees it.
#[derive(Debug)]
struct Package {
    path: String,
    /// Workspace crates among its normal and build dependencies.
    deps: BTreeSet<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cell(text: &str) -> String {
    text.trim().trim_matches('`').to_owned()
}

/// The rows of the table under `## Crate graph`.
fn table(markdown: &str) -> BTreeMap<String, Row> {
    let section = markdown
        .split("\n## ")
        .find(|s| s.starts_with("Crate graph"))
        .expect("ARCHITECTURE.md has a `## Crate graph` section");
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with('|')).skip(2) {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
        assert_eq!(cells.len(), 4, "a crate graph row has 4 cells: {line}");
        let allowed = match cells[3].trim() {
            "—" | "-" | "" => BTreeSet::new(),
            list => list.split(',').map(cell).collect(),
        };
        let name = cell(cells[0]);
        let row = Row {
            path: cell(cells[1]),
            kind: cell(cells[2]),
            allowed,
        };
        assert!(
            ["library", "binary", "test-only"].contains(&row.kind.as_str()),
            "`{name}`: kind `{}` is not library, binary or test-only",
            row.kind
        );
        assert!(
            rows.insert(name.clone(), row).is_none(),
            "`{name}` is listed twice"
        );
    }
    assert!(!rows.is_empty(), "the crate graph table has no rows");
    rows
}

/// The workspace's crates and their edges, from `cargo metadata`.
fn workspace() -> BTreeMap<String, Package> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let root = root().canonicalize().unwrap();
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    packages
        .iter()
        .map(|p| {
            let manifest = Path::new(p["manifest_path"].as_str().unwrap());
            let dir = manifest.parent().unwrap().strip_prefix(&root).unwrap();
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .filter(|name| names.contains(name))
                .collect();
            (
                p["name"].as_str().unwrap().to_owned(),
                Package {
                    path: dir.to_string_lossy().into_owned(),
                    deps,
                },
            )
        })
        .collect()
}

/// Every way `packages` leaves `rows`, one line each.
fn violations(rows: &BTreeMap<String, Row>, packages: &BTreeMap<String, Package>) -> Vec<String> {
    let mut found = Vec::new();
    for (name, package) in packages {
        let Some(row) = rows.get(name) else {
            found.push(format!("`{name}` ({}) is not in the table", package.path));
            continue;
        };
        if row.path != package.path {
            found.push(format!(
                "`{name}` lives in `{}`, the table says `{}`",
                package.path, row.path
            ));
        }
        for dep in &package.deps {
            if !row.allowed.contains(dep) {
                found.push(format!(
                    "`{name}` depends on `{dep}`, which the table does not allow"
                ));
            }
            if rows.get(dep).is_some_and(|r| r.kind == "test-only") {
                found.push(format!("`{name}` depends on the test-only crate `{dep}`"));
            }
        }
    }
    for (name, row) in rows {
        if !packages.contains_key(name) {
            found.push(format!(
                "the table lists `{name}`, which is not in the workspace"
            ));
        }
        for dep in &row.allowed {
            if !rows.contains_key(dep) {
                found.push(format!(
                    "`{name}` may depend on `{dep}`, which the table does not list"
                ));
            }
        }
    }
    found
}

#[test]
fn the_crate_graph_is_the_documented_one() {
    let markdown = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let rows = table(&markdown);
    let packages = workspace();
    let found = violations(&rows, &packages);
    assert!(
        found.is_empty(),
        "the crate graph left ARCHITECTURE.md's table:\n{}",
        found.join("\n")
    );
    // The split this table exists for: the kernel links neither the daemon nor first-party
    // plugins, and the plugins reach the vault only through their own crate.
    assert!(!packages["p3ak-kernel"].deps.contains("p3ak-hitl"));
    assert!(!packages["p3ak-plugins"].deps.contains("p3ak-vault"));
    assert!(!packages["p3ak-plugins"].deps.contains("p3ak-memory"));
}

#[test]
fn a_drifted_graph_is_reported() {
    let rows = table(
        "# Architecture\n\n## Crate graph\n\n| crate | path | kind | may depend on |\n|---|---|---|---|\n\
         | `a` | `crates/a` | library | — |\n| `b` | `crates/b` | library | `a` |\n\
         | `t` | `tests/t` | test-only | — |\n| `gone` | `crates/gone` | library | `nowhere` |\n",
    );
    let package = |path: &str, deps: &[&str]| Package {
        path: path.to_owned(),
        deps: deps.iter().map(|d| (*d).to_owned()).collect(),
    };
    let packages = BTreeMap::from([
        ("a".to_owned(), package("crates/a", &["b"])),
        ("b".to_owned(), package("crates/b", &["a", "t"])),
        ("t".to_owned(), package("tests/t", &[])),
        ("new".to_owned(), package("crates/new", &[])),
    ]);
    let found = violations(&rows, &packages);
    for expected in [
        "`a` depends on `b`, which the table does not allow",
        "`b` depends on the test-only crate `t`",
        "`new` (crates/new) is not in the table",
        "the table lists `gone`, which is not in the workspace",
        "`gone` may depend on `nowhere`, which the table does not list",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "{expected}\n{found:#?}"
        );
    }
}
