//! Names the commit `p3ak --version` reports. A build outside a git checkout (a source tarball)
//! takes `P3AK_BUILD_COMMIT` from the environment, or says "unknown commit".

// Cargo reads a build script's instructions from its standard output.
#![allow(clippy::print_stdout)]

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=P3AK_BUILD_COMMIT");
    // A new commit or a checkout moves HEAD or the branch it points at: describe again.
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &branch])
    {
        println!("cargo:rerun-if-changed={p}");
    }

    let described = std::env::var("P3AK_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
            let date = git(&["log", "-1", "--format=%cs", "HEAD"]).unwrap_or_default();
            Some(format!("{commit} {date}").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown commit".to_owned());
    println!(
        "cargo:rustc-env=P3AK_LONG_VERSION={} ({described})",
        env!("CARGO_PKG_VERSION")
    );
}
