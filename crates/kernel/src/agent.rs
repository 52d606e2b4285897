//! Agent files: `agents/<name>.toml`.

use std::collections::BTreeMap;
use std::path::Path;

use p3ak_policy::Pattern;
use serde::Deserialize;

use crate::KernelError;
use crate::config::{one_line, valid_plugin_name};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    tools: Vec<String>,
    #[serde(default = "default_memory")]
    memory: usize,
    #[serde(default)]
    description: String,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default = "default_context_tokens")]
    context_tokens: usize,
    #[serde(default)]
    subscribe: Vec<String>,
}

fn default_context_tokens() -> usize {
    24_000
}

fn default_memory() -> usize {
    3
}

/// One agent.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Its name (the file's stem); the policy's `agents:` refer to it.
    pub name: String,
    /// System prompt.
    pub prompt: String,
    /// The provider plugin.
    pub provider: Option<String>,
    /// The model to ask the provider for.
    pub model: Option<String>,
    /// Actions it is offered.
    pub tools: Vec<Pattern>,
    /// Passages of memory to include per message.
    pub memory: usize,
    /// One line on what it does: other agents see it when they route or delegate.
    pub description: String,
    /// For a board: the agents a board meeting asks (empty: every agent with a provider
    /// but the board and the router).
    pub members: Vec<String>,
    /// How many tokens of conversation its prompt may carry (estimated); older turns beyond
    /// it are summarised into the session.
    pub context_tokens: usize,
    /// State-bus topics whose new events its prompt shows (docs/bus.md).
    pub subscribe: Vec<crate::bus::TopicPattern>,
}

impl Agent {
    /// Whether this agent is offered `action`.
    #[must_use]
    pub fn offers(&self, action: &str) -> bool {
        self.tools.iter().any(|p| p.matches(action))
    }
}

/// Reads every `*.toml` in `dir`. An invalid file is an error naming it.
pub fn load_agents(dir: &Path) -> Result<BTreeMap<String, Agent>, KernelError> {
    let mut agents = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(agents),
        Err(e) => {
            return Err(KernelError::Io {
                context: format!("cannot read `{}`", dir.display()),
                source: e,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(KernelError::io(format!("cannot read `{}`", dir.display())))?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let agent = load_agent(&path)?;
        agents.insert(agent.name.clone(), agent);
    }
    Ok(agents)
}

/// Reads one agent file.
pub fn load_agent(path: &Path) -> Result<Agent, KernelError> {
    let error = |message: String| KernelError::Config {
        path: path.to_owned(),
        message,
    };
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| valid_plugin_name(s))
        .ok_or_else(|| error("agent file names use letters, digits, `_` and `-`".to_owned()))?
        .to_owned();
    if name == crate::api::API_AGENT {
        return Err(error(format!(
            "the agent name `{name}` is reserved for the API's calls: rename the file"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(KernelError::io(format!("cannot read `{}`", path.display())))?;
    let raw: RawAgent = toml::from_str(&text).map_err(|e| error(one_line(&e.to_string())))?;
    let tools = raw
        .tools
        .iter()
        .map(|t| Pattern::parse(t).map_err(|e| error(format!("tools: `{t}`: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(provider) = raw.provider.as_ref().filter(|p| !valid_plugin_name(p)) {
        return Err(error(format!("provider `{provider}` is not a plugin name")));
    }
    if raw.memory > 20 {
        return Err(error("memory must be at most 20 passages".to_owned()));
    }
    let description = raw.description.trim().to_owned();
    if description.len() > 300 || description.contains('\n') {
        return Err(error(
            "description must be one line of at most 300 bytes".to_owned(),
        ));
    }
    if !(1_000..=2_000_000).contains(&raw.context_tokens) {
        return Err(error(
            "context_tokens must be between 1000 and 2000000".to_owned(),
        ));
    }
    if let Some(member) = raw.members.iter().find(|m| !valid_plugin_name(m)) {
        return Err(error(format!("members: `{member}` is not an agent name")));
    }
    let subscribe = raw
        .subscribe
        .iter()
        .map(|t| crate::bus::TopicPattern::parse(t).map_err(|e| error(format!("subscribe: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Agent {
        name,
        subscribe,
        prompt: raw.prompt.trim().to_owned(),
        provider: raw.provider.filter(|p| !p.is_empty()),
        model: raw.model.filter(|m| !m.is_empty()),
        tools,
        memory: raw.memory,
        description,
        members: raw.members,
        context_tokens: raw.context_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_file_named_api_is_refused_it_is_the_apis_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api.toml"), crate::home::DEFAULT_AGENT).unwrap();
        let err = load_agents(dir.path()).unwrap_err().to_string();
        assert!(err.contains("`api` is reserved"), "{err}");
        assert!(err.contains("api.toml"), "{err}");
    }

    #[test]
    fn the_default_agent_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("assistant.toml"),
            crate::home::DEFAULT_AGENT,
        )
        .unwrap();
        let agents = load_agents(dir.path()).unwrap();
        let agent = agents.get("assistant").unwrap();
        assert!(agent.offers("files.read"));
        assert!(!agent.offers("shell.run"));
        assert_eq!(agent.provider, None);
    }

    #[test]
    fn bad_agent_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "tools = [\"not a pattern\"]\n").unwrap();
        assert!(load_agent(&path).unwrap_err().to_string().contains("tools"));
        std::fs::write(&path, "promt = \"typo\"\n").unwrap();
        assert!(load_agent(&path).unwrap_err().to_string().contains("promt"));
    }
}
