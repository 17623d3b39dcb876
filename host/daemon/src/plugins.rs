//! Connects the config's plugin sections to the plugin host: turns them into plugin specs and
//! the site context plugins are initialised with, starts the manager (and the directory
//! watcher), reloads on SIGHUP / `mgre reload` after re-reading the config file, and renders
//! `mgre show plugins`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mgre_plugin::{
    FailurePolicy, Hook as PluginHook, PluginManager, PluginSet, PluginSpec, PluginState, Runtime,
    RuntimeConfig, SiteContext, Watcher,
};
use mgre_proto::Role;
use serde_json::{Value, json};

use crate::config::{Config, Failure, Hook, PluginsConfig};

/// How long a changed plugin file must stay quiet before it is reloaded.
const WATCH_QUIET: Duration = Duration::from_millis(200);

/// A running plugin host.
pub struct Plugins {
    /// The manager workers read from.
    pub manager: Arc<PluginManager>,
    /// Keeps the directory watch alive.
    _watcher: Option<Watcher>,
}

/// Starts the plugin host for `cfg`, if it configures plugins. Plugins that fail to load are
/// reported (log, `mgre show plugins`) and the daemon runs: a fail-open one is skipped, a
/// fail-closed one drops every packet of the plugin stage until a version of it loads.
pub fn start(cfg: &Config) -> anyhow::Result<Option<Plugins>> {
    let Some(pc) = &cfg.plugins else {
        return Ok(None);
    };
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: pc.cache_dir.clone(),
        ..RuntimeConfig::default()
    })
    .context("starting the plugin runtime")?;
    let manager = Arc::new(PluginManager::new(runtime, site(cfg), specs(pc)));
    report(&manager.current());
    let watcher = if pc.watch {
        Some(
            manager
                .watch(WATCH_QUIET)
                .with_context(|| format!("watching {}", pc.dir.display()))?,
        )
    } else {
        None
    };
    Ok(Some(Plugins {
        manager,
        _watcher: watcher,
    }))
}

/// Re-reads the config file's plugin sections and reloads every plugin file; a config that
/// no longer parses leaves the serving plugins untouched. Returns the resulting status.
pub fn reload(config_file: &Path, manager: &PluginManager) -> anyhow::Result<Value> {
    let cfg = Config::load(config_file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let specs = cfg.plugins.as_ref().map(specs).unwrap_or_default();
    let set = manager.reconfigure(site(&cfg), specs);
    report(&set);
    Ok(status(&set))
}

/// Loads every configured plugin once (compile, link, `init` with its config), as
/// `mgre check` does; returns one error line per plugin that fails.
pub fn check(cfg: &Config) -> anyhow::Result<Vec<String>> {
    let Some(pc) = &cfg.plugins else {
        return Ok(Vec::new());
    };
    let runtime = Runtime::new(RuntimeConfig::default()).context("starting the plugin runtime")?;
    let set = runtime.build_set(&site(cfg), &specs(pc), None);
    Ok(set.load_errors().iter().map(ToString::to_string).collect())
}

/// `mgre show plugins --json`.
pub fn status(set: &PluginSet) -> Value {
    let plugins: Vec<Value> = set
        .status()
        .into_iter()
        .map(|s| {
            let state = match s.state {
                PluginState::Active => "active",
                PluginState::Quarantined => "quarantined",
                PluginState::FailedToLoad { serving_previous: true } => "failed-to-load (previous version serving)",
                PluginState::FailedToLoad { serving_previous: false } => "failed-to-load",
            };
            json!({
                "name": s.name,
                "plugin": s.plugin_name,
                "version": s.version,
                "hooks": s.hooks.to_string(),
                "generation": s.loaded_generation,
                "hash": s.content_hash.map(|h| h.to_string()),
                "from_cache": s.from_cache,
                "load_ms": s.load_time.map(|t| t.as_secs_f64() * 1e3),
                "state": state,
                "last_error": s.last_error,
                "reload_failures": s.reload_failures,
                "calls": s.stats.calls,
                "packets": s.stats.packets,
                "mean_ns_per_packet": s.stats.mean_ns_per_packet(),
                "traps": s.stats.traps,
                "deadline_hits": s.stats.deadline_hits,
                "memory_limit_hits": s.stats.memory_limit_hits,
                "bad_outputs": s.stats.bad_outputs,
                "reinstantiations": s.stats.reinstantiations,
                "quarantines": s.stats.quarantines,
                "skipped_batches": s.stats.skipped_batches,
                "classes": s.classes.iter().map(|(id, name)| json!({"id": id, "name": name})).collect::<Vec<_>>(),
                "counters": s.counters.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "generation": set.generation(),
        "reload_failures": set.reload_failures(),
        "closed_unavailable": set.closed_unavailable(),
        "load_errors": set.load_errors().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "plugins": plugins,
    })
}

fn report(set: &PluginSet) {
    for e in set.load_errors() {
        tracing::error!(error = %e, generation = set.generation(), "plugin failed to load");
    }
}

fn specs(pc: &PluginsConfig) -> Vec<PluginSpec> {
    pc.plugins
        .iter()
        .map(|p| PluginSpec {
            name: p.name.clone(),
            path: p.file.clone(),
            hooks: p.hooks.as_ref().map(|hs| {
                hs.iter()
                    .map(|h| match h {
                        Hook::Classify => PluginHook::Classify,
                        Hook::Mark => PluginHook::Mark,
                        Hook::Route => PluginHook::Route,
                        Hook::Admission => PluginHook::Admission,
                        Hook::Shortcut => PluginHook::Shortcut,
                    })
                    .collect()
            }),
            failure: match p.failure {
                Failure::Open => FailurePolicy::Open,
                Failure::Closed => FailurePolicy::Closed,
            },
            memory_limit_bytes: p.memory_limit_bytes,
            deadline: p.deadline,
            config_json: p.config_json.clone(),
        })
        .collect()
}

fn site(cfg: &Config) -> SiteContext {
    let dp = &cfg.dataplane;
    let mut addresses: Vec<String> = cfg
        .tun
        .ipv4
        .iter()
        .map(|(a, l)| format!("{a}/{l}"))
        .collect();
    addresses.extend(cfg.tun.ipv6.iter().map(|(a, l)| format!("{a}/{l}")));
    SiteContext {
        role: match dp.role {
            Role::Hub => mgre_plugin::Role::Hub,
            Role::Spoke => mgre_plugin::Role::Spoke,
        },
        addresses,
        peers: dp
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| mgre_plugin::Peer {
                id: i as u16,
                name: p.name.clone(),
                nbma: p.nbma.to_string(),
                prefixes: dp
                    .map
                    .iter()
                    .filter(|(_, id)| *id as usize == i)
                    .map(|(pr, _)| pr.to_string())
                    .collect(),
            })
            .collect(),
    }
}
