//! A [`PluginSet`]: one immutable generation of loaded plugins, shared by every worker
//! through an `Arc`, with the per-hook chains in config order and each plugin's status.
//!
//! Building a set never fails as a whole: a plugin whose load fails keeps its previous
//! version serving (if it had one) and the failure is reported in its status. Unchanged
//! plugins (same file hash, spec and site) are reused, not recompiled nor re-initialised.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::error::LoadError;
use crate::load::{ContentHash, LoadedPlugin};
use crate::runtime::{QuarantinePolicy, Runtime};
use crate::spec::{FailurePolicy, Hook, Hooks, PluginSpec, SiteContext};
use crate::stats::PluginStats;

/// One generation of plugins.
pub struct PluginSet {
    generation: u64,
    quarantine: QuarantinePolicy,
    entries: Vec<Entry>,
    /// Plugins serving in this generation, in config order.
    pub(crate) plugins: Vec<Arc<LoadedPlugin>>,
    /// Per hook (`Hook::index`), indices into `plugins`, in config order.
    pub(crate) chains: [Vec<usize>; 5],
    errors: Vec<LoadError>,
    reload_failures: u64,
    /// Fail-closed plugins with no version to serve (never loaded successfully): while any
    /// exists, every packet that reaches the plugin stage is dropped, as if it had failed.
    closed_unavailable: Vec<String>,
    /// The hooks those plugins are selected for (all when their spec selects none): the
    /// NHRP hooks among them refuse and deny.
    closed_unavailable_hooks: Hooks,
}

/// One configured plugin and what became of it.
struct Entry {
    name: String,
    serving: Option<Arc<LoadedPlugin>>,
    /// This build's load error, as text.
    error: Option<String>,
    reload_failures: u64,
}

/// The state of one configured plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginState {
    /// Loaded and called.
    Active,
    /// Loaded, but at least one worker is skipping it after repeated faults.
    Quarantined,
    /// The latest load failed; an earlier version keeps serving if `serving_previous`.
    FailedToLoad {
        /// Whether an earlier version is still in the chains.
        serving_previous: bool,
    },
}

/// What `mgre show plugins` and the metrics need to know about one configured plugin.
#[derive(Clone, Debug)]
pub struct PluginStatus {
    /// The configured name.
    pub name: String,
    /// `plugin-info.name` and `.version` of the serving version.
    pub plugin_name: Option<String>,
    /// See `plugin_name`.
    pub version: Option<String>,
    /// Hooks the plugin declares in `plugin-info`.
    pub declared_hooks: Hooks,
    /// Hooks the chains call (declared by the plugin and selected by the spec).
    pub hooks: Hooks,
    /// Classes the plugin may assign, `(id, name)`.
    pub classes: Vec<(u32, String)>,
    /// Generation the serving version was loaded in.
    pub loaded_generation: Option<u64>,
    /// sha256 of the serving version's file.
    pub content_hash: Option<ContentHash>,
    /// Whether the serving version's code came from the artifact cache.
    pub from_cache: bool,
    /// How long loading the serving version took.
    pub load_time: Option<Duration>,
    /// Active, quarantined, or failed to load.
    pub state: PluginState,
    /// This build's load error, else the serving version's latest fault.
    pub last_error: Option<String>,
    /// Failed loads of this plugin across reloads.
    pub reload_failures: u64,
    /// Call statistics of the serving version.
    pub stats: PluginStats,
    /// The plugin's own counters, `(name, value)`.
    pub counters: Vec<(String, u64)>,
}

impl PluginSet {
    /// A set without plugins (generation 0).
    pub fn empty() -> PluginSet {
        PluginSet {
            generation: 0,
            quarantine: QuarantinePolicy::default(),
            entries: Vec::new(),
            plugins: Vec::new(),
            chains: Default::default(),
            errors: Vec::new(),
            reload_failures: 0,
            closed_unavailable: Vec::new(),
            closed_unavailable_hooks: Hooks::NONE,
        }
    }

    /// The generation: greater than that of every set built before it by the same runtime.
    /// Flow caches key verdicts by it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether no packet hook will be called and nothing is blocked (the dataplane may skip
    /// the plugin stage; the NHRP hooks may still have chains).
    pub fn is_empty(&self) -> bool {
        Hook::PACKET
            .iter()
            .all(|h| self.chains[h.index()].is_empty())
            && self.closed_unavailable.is_empty()
    }

    /// Fail-closed plugins that have no version to serve; while any is listed, every packet
    /// of the plugin stage gets `failed_closed`.
    pub fn closed_unavailable(&self) -> &[String] {
        &self.closed_unavailable
    }

    /// Names of the plugins the chain of `hook` calls, in order.
    pub fn chain(&self, hook: Hook) -> impl Iterator<Item = &str> {
        self.chains[hook.index()]
            .iter()
            .map(|&i| self.plugins[i].spec.name.as_str())
    }

    /// Errors of this build, one per plugin that failed to load.
    pub fn load_errors(&self) -> &[LoadError] {
        &self.errors
    }

    /// Failed plugin loads over all builds of this lineage.
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures
    }

    /// The status of every configured plugin, in config order (statistics are read now).
    pub fn status(&self) -> Vec<PluginStatus> {
        self.entries.iter().map(Entry::status).collect()
    }

    /// Whether `other` serves exactly the same plugin versions with the same outcome, so
    /// publishing it would change nothing.
    pub fn same_as(&self, other: &PluginSet) -> bool {
        self.entries.len() == other.entries.len()
            && self.entries.iter().zip(&other.entries).all(|(a, b)| {
                a.name == b.name
                    && a.error == b.error
                    && match (&a.serving, &b.serving) {
                        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                        (None, None) => true,
                        _ => false,
                    }
            })
    }

    pub(crate) fn quarantine(&self) -> QuarantinePolicy {
        self.quarantine
    }

    /// Whether a fail-closed plugin that may implement `hook` has no version to serve.
    pub(crate) fn closed_unavailable_for(&self, hook: Hook) -> bool {
        self.closed_unavailable_hooks.contains(hook)
    }
}

impl Runtime {
    /// Builds the next generation from `specs` (chain order) given the one serving now.
    ///
    /// Off the fast path: reads and hashes every file, and compiles, links and initialises
    /// the changed ones (milliseconds each; less with a warm artifact cache).
    pub fn build_set(
        &self,
        site: &SiteContext,
        specs: &[PluginSpec],
        previous: Option<&PluginSet>,
    ) -> PluginSet {
        let generation = self.next_generation(previous.map_or(0, PluginSet::generation));
        let mut entries: Vec<Entry> = Vec::with_capacity(specs.len());
        let mut errors = Vec::new();
        let mut failures = previous.map_or(0, |p| p.reload_failures);
        for spec in specs {
            let before = previous.and_then(|p| p.entries.iter().find(|e| e.name == spec.name));
            let kept = before.and_then(|e| e.serving.clone());
            let result = if entries.iter().any(|e| e.name == spec.name) {
                Err(LoadError::DuplicateName {
                    plugin: spec.name.clone(),
                })
            } else {
                self.read(spec).and_then(|file| match &kept {
                    Some(old) if old.matches(spec, site, &file.hash) => Ok(old.clone()),
                    _ => self.load(spec, site, &file, generation).map(Arc::new),
                })
            };
            let mut entry = Entry {
                name: spec.name.clone(),
                serving: None,
                error: None,
                reload_failures: before.map_or(0, |e| e.reload_failures),
            };
            match result {
                Ok(plugin) => entry.serving = Some(plugin),
                Err(e) => {
                    tracing::warn!(plugin = %spec.name, step = %e.step(), error = %e,
                        serving_previous = kept.is_some(), "plugin load failed");
                    failures += 1;
                    entry.reload_failures += 1;
                    entry.error = Some(e.to_string());
                    // A duplicate's predecessor belongs to the first entry of that name.
                    if !matches!(e, LoadError::DuplicateName { .. }) {
                        entry.serving = kept;
                    }
                    errors.push(e);
                }
            }
            entries.push(entry);
        }
        let unavailable: Vec<&PluginSpec> = specs
            .iter()
            .zip(&entries)
            .filter(|(spec, e)| spec.failure == FailurePolicy::Closed && e.serving.is_none())
            .map(|(spec, _)| spec)
            .collect();
        let closed_unavailable = unavailable.iter().map(|s| s.name.clone()).collect();
        let closed_unavailable_hooks = unavailable
            .iter()
            .flat_map(|s| s.hooks.unwrap_or(Hooks::ALL).iter())
            .collect();
        let plugins: Vec<_> = entries.iter().filter_map(|e| e.serving.clone()).collect();
        let chains = Hook::ALL.map(|hook| {
            (0..plugins.len())
                .filter(|&i| plugins[i].hooks.contains(hook))
                .collect()
        });
        PluginSet {
            generation,
            quarantine: self.config.quarantine,
            entries,
            plugins,
            chains,
            errors,
            reload_failures: failures,
            closed_unavailable,
            closed_unavailable_hooks,
        }
    }
}

impl Entry {
    fn status(&self) -> PluginStatus {
        let p = self.serving.as_deref();
        let mut stats = p.map(|p| p.stats.snapshot()).unwrap_or_default();
        if let Some(p) = p {
            stats.log_suppressed = p.shared.log_suppressed.load(Relaxed);
        }
        let state = if self.error.is_some() {
            PluginState::FailedToLoad {
                serving_previous: p.is_some(),
            }
        } else if p.is_some_and(|p| p.stats.quarantined()) {
            PluginState::Quarantined
        } else {
            PluginState::Active
        };
        PluginStatus {
            name: self.name.clone(),
            plugin_name: p.map(|p| p.plugin_name.clone()),
            version: p.map(|p| p.version.clone()),
            declared_hooks: p.map_or(Hooks::NONE, |p| p.declared),
            hooks: p.map_or(Hooks::NONE, |p| p.hooks),
            classes: p.map(|p| p.classes.clone()).unwrap_or_default(),
            loaded_generation: p.map(|p| p.generation),
            content_hash: p.map(|p| p.hash),
            from_cache: p.is_some_and(|p| p.from_cache),
            load_time: p.map(|p| p.load_time),
            state,
            last_error: self
                .error
                .clone()
                .or_else(|| p.and_then(|p| p.stats.last_fault())),
            reload_failures: self.reload_failures,
            stats,
            counters: p.map(|p| p.shared.counters.snapshot()).unwrap_or_default(),
        }
    }
}
