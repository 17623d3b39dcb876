//! `mgre-plugin`: the host of mgre's sandboxed WebAssembly policy plugins (world
//! `mgre:policy/plugin@0.2.0`, see `wit/policy.wit`).
//!
//! Off the fast path, a [`Runtime`] loads plugins — read, hash, componentize, compile (with
//! a private precompiled-artifact cache), link, probe `init` — into an immutable, `Arc`-shared
//! [`PluginSet`] generation; a [`PluginManager`] rebuilds it on reload or file change
//! ([`Watcher`]) and publishes it with `arc-swap`. On the fast path, each dataplane thread
//! owns a [`WorkerPlugins`] whose [`run`](WorkerPlugins::run) calls every hook chain once per
//! batch and merges the verdicts into [`PolicyVerdict`]s. The NHRP control thread owns a
//! [`ControlHooks`], which asks the `admission` and `shortcut` chains about registrations
//! ([`ControlHooks::admit_registration`]) and redirects/shortcuts
//! ([`ControlHooks::shortcut_policy`]), following reloads the same way.
//!
//! Plugins get no ambient authority: the linker offers only the `host` interface (rate-
//! limited logging, their own counters). Each instance has its own store with a memory cap
//! and a CPU deadline per call (epoch interruption); a trap costs one batch its verdicts
//! (failure policy open or closed), then the instance is replaced, and repeated faults
//! quarantine the plugin with exponential backoff.
//!
//! This crate does no packet I/O and knows nothing of the tunnel beyond the ABI slots.
//!
//! ```no_run
//! # use std::time::{Duration, Instant};
//! # use mgre_plugin::*;
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let spec = PluginSpec {
//!     name: "voice".into(),
//!     path: "/etc/mgre/plugins/voice.wasm".into(),
//!     hooks: None,
//!     failure: FailurePolicy::Open,
//!     memory_limit_bytes: 16 << 20,
//!     deadline: Duration::from_millis(5),
//!     config_json: "{}".into(),
//! };
//! let manager = std::sync::Arc::new(PluginManager::new(runtime, SiteContext::default(), vec![spec]));
//! let _watcher = manager.watch(Duration::from_millis(200))?;
//! // On each dataplane thread:
//! let mut plugins = WorkerPlugins::new(manager.current());
//! let (mut slots, mut verdicts) = (vec![0u8; 64 * 32], vec![PolicyVerdict::default(); 32]);
//! loop {
//!     plugins.refresh(&manager.published().load());
//!     plugins.run(Instant::now(), &mut slots, &mut verdicts);
//! #   break;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bindings;
mod cache;
mod control;
mod error;
mod instance;
mod load;
mod manager;
mod runtime;
mod set;
mod spec;
mod stats;
mod watch;
mod worker;

pub use control::ControlHooks;
pub use error::{FaultKind, LoadError, LoadStep, RuntimeError, WatchError};
pub use load::ContentHash;
pub use manager::PluginManager;
/// The NHRP hooks' values, shared with plugins (see `mgre_sdk::nhrp`).
pub use mgre_sdk::nhrp::{
    ADMINISTRATIVELY_PROHIBITED, Admission, AdmissionAttributes, QosGroup, Refusal, Registration,
    ShortcutKind, ShortcutRequest, ShortcutVerdict,
};
pub use runtime::{QuarantinePolicy, Runtime, RuntimeConfig};
pub use set::{PluginSet, PluginState, PluginStatus};
pub use spec::{FailurePolicy, Hook, Hooks, Peer, PluginSpec, Role, SiteContext, UnknownHook};
pub use stats::PluginStats;
pub use watch::Watcher;
pub use worker::{PolicyVerdict, TTL_UNTIL_RELOAD, WorkerPlugins};
