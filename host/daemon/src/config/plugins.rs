//! The `[plugins]` table and `[[plugin]]` entries: where plugin files live, their limits,
//! failure policies and their own config sections (handed to each plugin's `init` as JSON).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ErrAt;

/// A policy hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// Classification.
    Classify,
    /// QoS marking.
    Mark,
    /// Routing policy.
    Route,
    /// NHRP registration admission (hub).
    Admission,
    /// NHRP redirect/shortcut policy.
    Shortcut,
}

/// What happens to a batch when a plugin fails on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// Forward as if the plugin had no opinion.
    #[default]
    Open,
    /// Drop the batch's packets.
    Closed,
}

/// Validated plugin settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginsConfig {
    /// Directory holding the `.wasm` files (watched for changes).
    pub dir: PathBuf,
    /// Where precompiled artifacts are cached, if anywhere.
    pub cache_dir: Option<PathBuf>,
    /// Reload automatically when files in `dir` change.
    pub watch: bool,
    /// The plugins, in chain order.
    pub plugins: Vec<PluginConfig>,
}

/// One `[[plugin]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginConfig {
    /// Unique name.
    pub name: String,
    /// Absolute path of the `.wasm` file.
    pub file: PathBuf,
    /// Hooks to use (`None`: every hook the plugin implements).
    pub hooks: Option<Vec<Hook>>,
    /// Failure policy.
    pub failure: Failure,
    /// Linear-memory cap.
    pub memory_limit_bytes: usize,
    /// CPU deadline per call.
    pub deadline: Duration,
    /// The plugin's own config section as JSON (`{}` when absent).
    pub config_json: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawPlugins {
    dir: Spanned<PathBuf>,
    cache_dir: Option<PathBuf>,
    #[serde(default = "yes")]
    watch: bool,
    #[serde(default = "default_memory_mib")]
    memory_limit_mib: u32,
    #[serde(default = "default_deadline_ms")]
    deadline_ms: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawPlugin {
    name: Spanned<String>,
    file: Spanned<PathBuf>,
    hooks: Option<Vec<Hook>>,
    #[serde(default)]
    failure: Failure,
    memory_limit_mib: Option<Spanned<u32>>,
    deadline_ms: Option<Spanned<u32>>,
    #[serde(default)]
    config: Option<toml::Table>,
}

/// Validates the plugin sections; relative paths are taken from the config file's directory.
pub(super) fn validate(
    raw: Option<RawPlugins>,
    entries: Vec<RawPlugin>,
    base: &Path,
    err: &ErrAt<'_>,
) -> Result<Option<PluginsConfig>, super::ConfigError> {
    let Some(raw) = raw else {
        return match entries.first() {
            None => Ok(None),
            Some(p) => Err(err(
                p.name.span(),
                "plugin[0]",
                "[[plugin]] entries need a [plugins] table with `dir`".into(),
            )),
        };
    };
    let dir = base.join(raw.dir.get_ref());
    if raw.memory_limit_mib == 0 || raw.memory_limit_mib > MAX_MEMORY_MIB {
        return Err(err(
            raw.dir.span(),
            "plugins.memory-limit-mib",
            format!("must be 1..={MAX_MEMORY_MIB}"),
        ));
    }
    let mut plugins: Vec<PluginConfig> = Vec::with_capacity(entries.len());
    for (i, p) in entries.into_iter().enumerate() {
        let name = p.name.get_ref();
        if name.is_empty() || plugins.iter().any(|q| &q.name == name) {
            return Err(err(
                p.name.span(),
                &format!("plugin[{i}].name"),
                format!("plugin name `{name}` is empty or used twice"),
            ));
        }
        let file = p.file.get_ref();
        if file.is_absolute()
            || file
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(err(
                p.file.span(),
                &format!("plugin[{i}].file"),
                "must be a path inside plugins.dir (relative, without `..`)".into(),
            ));
        }
        let memory = p
            .memory_limit_mib
            .as_ref()
            .map_or(raw.memory_limit_mib, |m| *m.get_ref());
        if memory == 0 || memory > MAX_MEMORY_MIB {
            let span = p.memory_limit_mib.as_ref().map_or(0..0, |m| m.span());
            return Err(err(
                span,
                &format!("plugin[{i}].memory-limit-mib"),
                format!("must be 1..={MAX_MEMORY_MIB}"),
            ));
        }
        let deadline = p
            .deadline_ms
            .as_ref()
            .map_or(raw.deadline_ms, |d| *d.get_ref());
        if deadline == 0 || deadline > MAX_DEADLINE_MS {
            let span = p.deadline_ms.as_ref().map_or(0..0, |d| d.span());
            return Err(err(
                span,
                &format!("plugin[{i}].deadline-ms"),
                format!("must be 1..={MAX_DEADLINE_MS}"),
            ));
        }
        let config_json = match &p.config {
            Some(t) => serde_json::to_string(t)
                .map_err(|e| err(p.name.span(), &format!("plugin[{i}].config"), e.to_string()))?,
            None => "{}".to_owned(),
        };
        plugins.push(PluginConfig {
            name: name.clone(),
            file: dir.join(file),
            hooks: p.hooks,
            failure: p.failure,
            memory_limit_bytes: memory as usize * 1024 * 1024,
            deadline: Duration::from_millis(u64::from(deadline)),
            config_json,
        });
    }
    Ok(Some(PluginsConfig {
        dir,
        cache_dir: raw.cache_dir.map(|c| base.join(c)),
        watch: raw.watch,
        plugins,
    }))
}

fn yes() -> bool {
    true
}
fn default_memory_mib() -> u32 {
    32
}
fn default_deadline_ms() -> u32 {
    5
}

const MAX_MEMORY_MIB: u32 = 4096;
const MAX_DEADLINE_MS: u32 = 1000;
