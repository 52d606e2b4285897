//! `p3ak skills`: the skills in the home's `skills/` (docs/skills.md), read from disk as the
//! kernel reads them at start — no kernel needed.

use anyhow::bail;
use clap::Subcommand;
use p3ak_kernel::skills::{Skill, Skills};

use super::kernel::home;
use crate::output::{Output, Reported};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One skill: its description, command, agents, scripts and instructions.
    Show {
        /// The skill's name.
        name: String,
    },
}

pub fn run(command: Option<Command>, out: &Output) -> anyhow::Result<()> {
    let home = home()?;
    let skills = Skills::discover(&home.skills());
    match command {
        None => list(&skills, &home.skills(), out),
        Some(Command::Show { name }) => show(&skills, &name, out),
    }
}

fn list(skills: &Skills, root: &std::path::Path, out: &Output) -> anyhow::Result<()> {
    out.json(&serde_json::json!({
        "skills": skills.skills,
        "invalid": skills.invalid,
    }));
    if skills.skills.is_empty() && skills.invalid.is_empty() {
        out.line(format!(
            "No skills in `{}`: each is a folder with a SKILL.md (docs/skills.md).",
            root.display()
        ));
    }
    for skill in &skills.skills {
        let mut extra = Vec::new();
        if let Some(command) = &skill.command {
            extra.push(format!("/{command}"));
        }
        if !skill.scripts.is_empty() {
            let names: Vec<&str> = skill.scripts.keys().map(String::as_str).collect();
            extra.push(format!("scripts: {}", names.join(", ")));
        }
        if let Some(agents) = &skill.agents {
            extra.push(format!("agents: {}", agents.join(", ")));
        }
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(" [{}]", extra.join("; "))
        };
        out.line(format!("{} — {}{extra}", skill.name, skill.description));
    }
    for invalid in &skills.invalid {
        out.line(format!("invalid: {}", invalid.error));
    }
    if !skills.invalid.is_empty() {
        return Err(Reported(format!(
            "{} skill folder(s) are invalid and left out",
            skills.invalid.len()
        ))
        .into());
    }
    Ok(())
}

fn show(skills: &Skills, name: &str, out: &Output) -> anyhow::Result<()> {
    let Some(skill) = skills.get(name) else {
        if let Some(invalid) = skills.invalid.iter().find(|i| i.dir == name) {
            bail!("skill `{name}` is invalid: {}", invalid.error);
        }
        bail!("no skill `{name}`: `p3ak skills` lists them");
    };
    out.json(&shown(skill));
    out.line(format!("{} — {}", skill.name, skill.description));
    out.line(format!("folder: skills/{}", skill.dir));
    if let Some(command) = &skill.command {
        out.line(format!("command: /{command}"));
    }
    out.line(format!(
        "agents: {}",
        skill
            .agents
            .as_ref()
            .map_or_else(|| "all".to_owned(), |a| a.join(", "))
    ));
    for (name, script) in &skill.scripts {
        out.line(format!(
            "script {name}: {} ({} s) {}",
            script.file, script.timeout_secs, script.description
        ));
    }
    out.line("");
    out.line(&skill.body);
    Ok(())
}

fn shown(skill: &Skill) -> serde_json::Value {
    let mut value = serde_json::to_value(skill).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("body".to_owned(), serde_json::json!(skill.body));
    }
    value
}
