//! [`PluginManager`]: owns the runtime and the current configuration, builds new plugin
//! sets on reload (SIGHUP, `mgre reload`, file changes) and publishes them with one pointer
//! store into an `ArcSwap` that dataplane workers read between batches.
//!
//! Reloads are serialised; each builds from the set serving now, so a failing plugin keeps
//! its previous version. A rebuild that changes nothing and reports no error is not
//! published, so spurious file events do not flush flow caches.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::error::WatchError;
use crate::runtime::Runtime;
use crate::set::PluginSet;
use crate::spec::{PluginSpec, SiteContext};
use crate::watch::Watcher;

/// The daemon's handle on its plugins.
pub struct PluginManager {
    runtime: Runtime,
    current: ArcSwap<PluginSet>,
    inputs: Mutex<Inputs>,
}

struct Inputs {
    site: SiteContext,
    specs: Vec<PluginSpec>,
}

impl PluginManager {
    /// Loads `specs` and publishes the first set (plugins that fail are reported in its
    /// status and load errors).
    pub fn new(runtime: Runtime, site: SiteContext, specs: Vec<PluginSpec>) -> PluginManager {
        let set = runtime.build_set(&site, &specs, None);
        PluginManager {
            runtime,
            current: ArcSwap::from_pointee(set),
            inputs: Mutex::new(Inputs { site, specs }),
        }
    }

    /// The set serving now.
    pub fn current(&self) -> Arc<PluginSet> {
        self.current.load_full()
    }

    /// The published pointer, for workers: `worker.refresh(&manager.published().load())`
    /// between batches costs one atomic load when nothing changed.
    pub fn published(&self) -> &ArcSwap<PluginSet> {
        &self.current
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Rebuilds from the current configuration (re-reading every file) and publishes the
    /// result; returns the set serving afterwards.
    pub fn reload(&self) -> Arc<PluginSet> {
        let inputs = self.inputs.lock().unwrap_or_else(PoisonError::into_inner);
        self.rebuild(&inputs)
    }

    /// Replaces the configuration, then reloads.
    pub fn reconfigure(&self, site: SiteContext, specs: Vec<PluginSpec>) -> Arc<PluginSet> {
        let mut inputs = self.inputs.lock().unwrap_or_else(PoisonError::into_inner);
        *inputs = Inputs { site, specs };
        self.rebuild(&inputs)
    }

    /// Reloads whenever a file in a directory holding a configured plugin settles for
    /// `quiet` after changing (directories as configured now; watch again after
    /// `reconfigure` moves plugins). Stops when the `Watcher` or the manager is dropped.
    pub fn watch(self: &Arc<Self>, quiet: Duration) -> Result<Watcher, WatchError> {
        let dirs: Vec<PathBuf> = {
            let inputs = self.inputs.lock().unwrap_or_else(PoisonError::into_inner);
            inputs
                .specs
                .iter()
                .filter_map(|s| s.path.parent().map(|p| p.to_path_buf()))
                .collect()
        };
        let manager: Weak<PluginManager> = Arc::downgrade(self);
        Watcher::new(dirs, quiet, move |paths| {
            if let Some(manager) = manager.upgrade() {
                tracing::info!(paths = ?paths, "plugin files changed, reloading");
                manager.reload();
            }
        })
    }

    fn rebuild(&self, inputs: &Inputs) -> Arc<PluginSet> {
        let previous = self.current.load_full();
        let next = self
            .runtime
            .build_set(&inputs.site, &inputs.specs, Some(&previous));
        if next.load_errors().is_empty() && next.same_as(&previous) {
            tracing::debug!(generation = previous.generation(), "plugins unchanged");
            return previous;
        }
        let next = Arc::new(next);
        self.current.store(next.clone());
        tracing::info!(
            generation = next.generation(),
            failures = next.load_errors().len(),
            "plugin set published"
        );
        next
    }
}
