//! What a shell and `man` need, generated from the command line's own definition, so they can
//! never disagree with `--help`.

use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The folder to write into (created if missing), e.g. /usr/local/share/man/man1.
    out: PathBuf,
}

pub fn completions(args: &CompletionsArgs, out: &Output) -> anyhow::Result<()> {
    let mut command = crate::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "p3ak", &mut script);
    out.bytes(&script)?;
    Ok(())
}

pub fn man(args: &ManArgs, out: &Output) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    clap_mangen::generate_to(crate::Cli::command(), &args.out)
        .with_context(|| format!("cannot write the man pages into {}", args.out.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(&args.out)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("p3ak") && name.ends_with(".1"))
        .collect();
    pages.sort();
    if out.is_json() {
        out.json(&serde_json::json!({ "dir": args.out, "pages": pages }));
    } else {
        out.line(format!(
            "{} man pages in {}",
            pages.len(),
            args.out.display()
        ));
    }
    Ok(())
}
