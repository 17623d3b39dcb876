//! Policy plugins in the e2e topology: the `[[plugin]]` config entries a test gives a site
//! ([`PluginEntry`], [`plugins_section`], rendered by the topology builder) and readers for what
//! `mgre show plugins --json` reports ([`plugin_status`], [`plugin_counter`]).
//!
//! Pure: renders text and reads JSON; files and daemons are the topology's business.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde_json::Value;

/// A plugin's failure policy (`failure = "open" | "closed"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Failure {
    /// Forward as if the plugin had no opinion (the daemon's default).
    #[default]
    Open,
    /// Drop the batch the plugin failed on.
    Closed,
}

impl Failure {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// One `[[plugin]]` entry of a site's config; its `file` lives in the site's plugin
/// directory ([`crate::Site::plugin_dir`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEntry {
    name: String,
    file: String,
    failure: Option<Failure>,
    hooks: Option<Vec<String>>,
    deadline_ms: Option<u32>,
    memory_limit_mib: Option<u32>,
    config: String,
}

impl PluginEntry {
    /// Plugin `name` loaded from `file` (a name inside the site's plugin directory), with
    /// the daemon's defaults for everything else and no `[plugin.config]`.
    pub fn new(name: &str, file: &str) -> Self {
        Self {
            name: name.to_owned(),
            file: file.to_owned(),
            failure: None,
            hooks: None,
            deadline_ms: None,
            memory_limit_mib: None,
            config: String::new(),
        }
    }

    /// `failure = "open" | "closed"`.
    pub fn failure(mut self, failure: Failure) -> Self {
        self.failure = Some(failure);
        self
    }

    /// `hooks = [...]`.
    pub fn hooks(mut self, hooks: &[&str]) -> Self {
        self.hooks = Some(hooks.iter().map(|&h| h.to_owned()).collect());
        self
    }

    /// `deadline-ms`: the CPU deadline per call.
    pub fn deadline_ms(mut self, ms: u32) -> Self {
        self.deadline_ms = Some(ms);
        self
    }

    /// `memory-limit-mib`: the linear-memory cap.
    pub fn memory_limit_mib(mut self, mib: u32) -> Self {
        self.memory_limit_mib = Some(mib);
        self
    }

    /// The plugin's own config: TOML placed right after a `[plugin.config]` header (keys
    /// first, then any `[plugin.config.x]` / `[[plugin.config.rule]]` tables).
    pub fn config(mut self, toml: &str) -> Self {
        self.config = toml.to_owned();
        self
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `[[plugin]]` table (and its `[plugin.config]`), newline-terminated.
    pub fn render(&self) -> String {
        let mut toml = String::from("\n[[plugin]]\n");
        let _ = writeln!(toml, "name = {}", quote(&self.name));
        let _ = writeln!(toml, "file = {}", quote(&self.file));
        if let Some(failure) = self.failure {
            let _ = writeln!(toml, "failure = {}", quote(failure.as_str()));
        }
        if let Some(hooks) = &self.hooks {
            let quoted: Vec<String> = hooks.iter().map(|h| quote(h)).collect();
            let _ = writeln!(toml, "hooks = [{}]", quoted.join(", "));
        }
        if let Some(ms) = self.deadline_ms {
            let _ = writeln!(toml, "deadline-ms = {ms}");
        }
        if let Some(mib) = self.memory_limit_mib {
            let _ = writeln!(toml, "memory-limit-mib = {mib}");
        }
        if !self.config.trim().is_empty() {
            toml.push_str("\n[plugin.config]\n");
            toml.push_str(self.config.trim_end());
            toml.push('\n');
        }
        toml
    }
}

/// A `[plugins]` table with `dir` (relative paths are taken from the config file's
/// directory) followed by `entries`, to append to a site's config.
pub fn plugins_section(dir: &str, entries: &[&PluginEntry]) -> String {
    let mut toml = format!("\n[plugins]\ndir = {}\n", quote(dir));
    for entry in entries {
        toml.push_str(&entry.render());
    }
    toml
}

/// The entry for plugin `name` in a `mgre show plugins --json` document.
pub fn plugin_status(plugins: &Value, name: &str) -> Result<Value> {
    plugins["plugins"]
        .as_array()
        .and_then(|list| list.iter().find(|p| p["name"] == name))
        .cloned()
        .with_context(|| format!("no plugin {name:?} in {plugins}"))
}

/// The plugin's own counter `counter` (from its `counters` list) in a status entry.
pub fn plugin_counter(status: &Value, counter: &str) -> Result<u64> {
    status["counters"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["name"] == counter))
        .and_then(|c| c["value"].as_u64())
        .with_context(|| format!("no counter {counter:?} in {status}"))
}

/// A numeric field (`traps`, `generation`, …) of a status entry.
pub fn plugin_number(status: &Value, field: &str) -> Result<u64> {
    status[field]
        .as_u64()
        .with_context(|| format!("no number {field:?} in {status}"))
}

/// A TOML basic string.
pub(crate) fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_renders_every_key_and_the_config_table() {
        let text = PluginEntry::new("qos", "voip_qos.wasm")
            .failure(Failure::Closed)
            .hooks(&["classify", "mark"])
            .deadline_ms(10)
            .memory_limit_mib(8)
            .config("ttl-ms = 0\n[plugin.config.voice]\ndscp = \"ef\"\n")
            .render();
        assert_eq!(
            text,
            "\n[[plugin]]\nname = \"qos\"\nfile = \"voip_qos.wasm\"\nfailure = \"closed\"\n\
             hooks = [\"classify\", \"mark\"]\ndeadline-ms = 10\nmemory-limit-mib = 8\n\n\
             [plugin.config]\nttl-ms = 0\n[plugin.config.voice]\ndscp = \"ef\"\n"
        );
    }

    #[test]
    fn status_readers_find_plugins_and_counters() {
        let doc = serde_json::json!({"plugins": [
            {"name": "a", "traps": 3, "counters": [{"name": "denied", "value": 7}]}
        ]});
        let a = plugin_status(&doc, "a").expect("a");
        assert_eq!(plugin_counter(&a, "denied").expect("counter"), 7);
        assert_eq!(plugin_number(&a, "traps").expect("traps"), 3);
        assert!(plugin_status(&doc, "b").is_err());
        assert!(plugin_counter(&a, "via-hub").is_err());
    }
}
