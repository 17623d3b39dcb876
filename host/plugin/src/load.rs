//! Loading one plugin, off the fast path: read the file, hash it, turn a core module into a
//! component, compile it (or take the cached artifact), link it against the `plugin` world,
//! then instantiate it once and call `init` to prove it works. Each step fails with a
//! [`LoadError`] naming the plugin and the step.
//!
//! The result, a [`LoadedPlugin`], is immutable and shared by every worker; workers create
//! their own instances from its `InstancePre` (see `worker`).

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::Component;

use crate::bindings::{
    HostState, InitContext, MAX_COUNTERS, PeerInfo, Plugin, PluginInfo, PluginPre, PluginShared,
    WitHooks, new_store,
};
use crate::error::{FaultKind, LoadError, describe};
use crate::runtime::Runtime;
use crate::spec::{Hook, Hooks, PluginSpec, SiteContext};
use crate::stats::Stats;

/// The sha256 of a plugin file.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash(pub [u8; 32]);

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::cache::hex(&self.0))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

/// A plugin file read from disk.
pub(crate) struct PluginFile {
    pub(crate) bytes: Vec<u8>,
    pub(crate) hash: ContentHash,
}

/// A plugin that loaded and initialised: everything a worker needs to make instances.
pub(crate) struct LoadedPlugin {
    pub(crate) spec: PluginSpec,
    pub(crate) site: SiteContext,
    pub(crate) hash: ContentHash,
    /// The set generation this version was loaded in.
    pub(crate) generation: u64,
    pub(crate) pre: PluginPre<HostState>,
    pub(crate) init_ctx: InitContext,
    /// `plugin-info.name` and `.version`.
    pub(crate) plugin_name: String,
    pub(crate) version: String,
    /// What the plugin declared.
    pub(crate) declared: Hooks,
    /// What the chains call: declared and selected by the spec.
    pub(crate) hooks: Hooks,
    /// The classes the plugin may assign.
    pub(crate) classes: Vec<(u32, String)>,
    pub(crate) shared: Arc<PluginShared>,
    pub(crate) stats: Stats,
    pub(crate) deadline_ticks: u64,
    pub(crate) init_ticks: u64,
    pub(crate) from_cache: bool,
    pub(crate) load_time: Duration,
}

/// A live instance: its own store (a trap poisons the whole store) and bindings.
pub(crate) struct Live {
    pub(crate) store: Store<HostState>,
    pub(crate) bindings: Plugin,
}

/// Why an instance could not be started.
pub(crate) enum StartError {
    Instantiate(FaultKind, String),
    InitFault(FaultKind, String),
    InitRefused(String),
}

impl LoadedPlugin {
    /// Whether this version can be reused for `spec` and `site` with file `hash`.
    pub(crate) fn matches(
        &self,
        spec: &PluginSpec,
        site: &SiteContext,
        hash: &ContentHash,
    ) -> bool {
        self.hash == *hash && self.spec == *spec && self.site == *site
    }

    /// A fresh, initialised instance.
    pub(crate) fn start(&self) -> Result<Live, StartError> {
        start(
            &self.pre,
            &self.shared,
            self.spec.memory_limit_bytes,
            self.init_ticks,
            &self.init_ctx,
        )
        .map(|(live, _)| live)
    }
}

impl Runtime {
    /// Reads a plugin file and hashes it.
    pub(crate) fn read(&self, spec: &PluginSpec) -> Result<PluginFile, LoadError> {
        let limit = self.config.max_plugin_bytes;
        let read_err = |source| LoadError::Read {
            plugin: spec.name.clone(),
            path: spec.path.clone(),
            source,
        };
        let mut file = File::open(&spec.path).map_err(read_err)?;
        let size = file.metadata().map_err(read_err)?.len();
        if size > limit {
            return Err(LoadError::TooLarge {
                plugin: spec.name.clone(),
                path: spec.path.clone(),
                size,
                limit,
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        // `take`: the file may grow while we read it.
        (&mut file)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > limit {
            return Err(LoadError::TooLarge {
                plugin: spec.name.clone(),
                path: spec.path.clone(),
                size: bytes.len() as u64,
                limit,
            });
        }
        let hash = ContentHash(Sha256::digest(&bytes).into());
        Ok(PluginFile { bytes, hash })
    }

    /// Runs every load step after `read` for `spec`, as set generation `generation`.
    pub(crate) fn load(
        &self,
        spec: &PluginSpec,
        site: &SiteContext,
        file: &PluginFile,
        generation: u64,
    ) -> Result<LoadedPlugin, LoadError> {
        let started = Instant::now();
        let plugin = || spec.name.clone();
        let (component, from_cache) = self.compile(spec, file)?;

        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(PluginPre::new)
            .map_err(|e| LoadError::Link {
                plugin: plugin(),
                reason: format!("{e:#}"),
            })?;

        let shared = Arc::new(PluginShared::new(&spec.name, self.config.log_lines_per_sec));
        let init_ticks = self.ticks(self.config.init_deadline);
        let init_ctx = init_context(spec, site);
        let (_probe, info) = start(
            &pre,
            &shared,
            spec.memory_limit_bytes,
            init_ticks,
            &init_ctx,
        )
        .map_err(|e| match e {
            StartError::Instantiate(_, reason) => LoadError::Instantiate {
                plugin: plugin(),
                reason,
            },
            StartError::InitFault(kind, reason) => LoadError::InitFault {
                plugin: plugin(),
                kind,
                reason,
            },
            StartError::InitRefused(message) => LoadError::InitRefused {
                plugin: plugin(),
                message,
            },
        })?;
        check_info(&info).map_err(|reason| LoadError::InvalidInfo {
            plugin: plugin(),
            reason,
        })?;
        shared.counters.declare(&info.counters);

        let declared = hooks_of(info.hooks);
        let selected = spec.hooks.unwrap_or(Hooks::ALL);
        let hooks = declared.intersection(selected);
        for hook in selected.iter().filter(|h| !declared.contains(*h)) {
            if spec.hooks.is_some() {
                tracing::warn!(plugin = %spec.name, %hook,
                    "hook selected in the config but not implemented by the plugin");
            }
        }
        let loaded = LoadedPlugin {
            spec: spec.clone(),
            site: site.clone(),
            hash: file.hash,
            generation,
            pre,
            init_ctx,
            plugin_name: info.name,
            version: info.version,
            declared,
            hooks,
            classes: info.classes.into_iter().map(|c| (c.id, c.name)).collect(),
            shared,
            stats: Stats::default(),
            deadline_ticks: self.ticks(spec.deadline),
            init_ticks,
            from_cache,
            load_time: started.elapsed(),
        };
        tracing::info!(plugin = %spec.name, name = %loaded.plugin_name,
            version = %loaded.version, hooks = %hooks, generation, from_cache,
            load_ms = loaded.load_time.as_secs_f64() * 1e3, hash = %file.hash, "plugin loaded");
        Ok(loaded)
    }

    /// The compiled component, from the cache when possible; `true` if it came from there.
    fn compile(
        &self,
        spec: &PluginSpec,
        file: &PluginFile,
    ) -> Result<(Component, bool), LoadError> {
        let compile_err = |e: wasmtime::Error| LoadError::Compile {
            plugin: spec.name.clone(),
            reason: format!("{e:#}"),
        };
        let Some(cache) = &self.cache else {
            let bytes = component_bytes(spec, &file.bytes)?;
            return Component::new(&self.engine, &bytes)
                .map(|c| (c, false))
                .map_err(compile_err);
        };
        let key = crate::cache::ArtifactCache::key(&self.engine, &file.hash.0);
        if let Some(component) = cache.load(&self.engine, &key) {
            return Ok((component, true));
        }
        let bytes = component_bytes(spec, &file.bytes)?;
        let artifact = self
            .engine
            .precompile_component(&bytes)
            .map_err(compile_err)?;
        cache.store(&key, &artifact);
        // SAFETY: `artifact` was produced just now by this engine from validated input.
        let component = unsafe { Component::deserialize(&self.engine, &artifact) };
        component.map(|c| (c, false)).map_err(compile_err)
    }
}

/// Instantiates from `pre` in a fresh store and calls `init`.
fn start(
    pre: &PluginPre<HostState>,
    shared: &Arc<PluginShared>,
    memory_limit_bytes: usize,
    init_ticks: u64,
    ctx: &InitContext,
) -> Result<(Live, PluginInfo), StartError> {
    let mut store = new_store(pre.engine(), shared, memory_limit_bytes, init_ticks);
    let bindings = pre.instantiate(&mut store).map_err(|e| {
        let kind = FaultKind::of(&e, store.data().limiter.memory_denied);
        StartError::Instantiate(kind, describe(&e))
    })?;
    store.set_epoch_deadline(init_ticks);
    match bindings.call_init(&mut store, ctx) {
        Ok(Ok(info)) => Ok((Live { store, bindings }, info)),
        Ok(Err(message)) => Err(StartError::InitRefused(message)),
        Err(e) => {
            let kind = FaultKind::of(&e, store.data().limiter.memory_denied);
            Err(StartError::InitFault(kind, describe(&e)))
        }
    }
}

/// The component to compile: the file itself, or the core module componentized.
fn component_bytes<'a>(spec: &PluginSpec, bytes: &'a [u8]) -> Result<Cow<'a, [u8]>, LoadError> {
    let decode_err = |reason: String| LoadError::Decode {
        plugin: spec.name.clone(),
        reason,
    };
    let is_component = wasmparser::Parser::is_component(bytes);
    if !is_component && !wasmparser::Parser::is_core_wasm(bytes) {
        return Err(decode_err(
            "not a WebAssembly module or component (bad magic or version)".into(),
        ));
    }
    // A full structural pass first: truncation is reported here rather than found by the
    // componentizer, which slices section ranges unchecked (wit-component 0.254 panics on a
    // truncated code section).
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        payload.map_err(|e| decode_err(format!("malformed or truncated: {e}")))?;
    }
    if is_component {
        return Ok(Cow::Borrowed(bytes));
    }
    let encode = || {
        wit_component::ComponentEncoder::default()
            .module(bytes)
            .and_then(|e| e.validate(true).encode())
    };
    // Belt and braces: a componentizer bug must not take the daemon down.
    match std::panic::catch_unwind(encode) {
        Ok(Ok(component)) => Ok(Cow::Owned(component)),
        Ok(Err(e)) => Err(decode_err(format!("componentizing the core module: {e:#}"))),
        Err(_) => Err(decode_err(
            "componentizing the core module: the componentizer panicked".into(),
        )),
    }
}

fn init_context(spec: &PluginSpec, site: &SiteContext) -> InitContext {
    InitContext {
        config: spec.config_json.clone(),
        role: site.role.name().to_owned(),
        addresses: site.addresses.clone(),
        peers: site
            .peers
            .iter()
            .map(|p| PeerInfo {
                id: p.id,
                name: p.name.clone(),
                nbma: p.nbma.clone(),
                prefixes: p.prefixes.clone(),
            })
            .collect(),
    }
}

fn hooks_of(h: WitHooks) -> Hooks {
    [
        (WitHooks::CLASSIFY, Hook::Classify),
        (WitHooks::MARK, Hook::Mark),
        (WitHooks::ROUTE, Hook::Route),
        (WitHooks::ADMISSION, Hook::Admission),
        (WitHooks::SHORTCUT, Hook::Shortcut),
    ]
    .into_iter()
    .filter(|(flag, _)| h.contains(*flag))
    .map(|(_, hook)| hook)
    .collect()
}

fn check_info(info: &PluginInfo) -> Result<(), String> {
    if info.counters.len() > MAX_COUNTERS {
        return Err(format!(
            "{} counters declared, at most {MAX_COUNTERS} allowed",
            info.counters.len()
        ));
    }
    if let Some(c) = info.classes.iter().find(|c| c.id == 0) {
        return Err(format!(
            "class {:?} has id 0, which means \"no opinion\"",
            c.name
        ));
    }
    Ok(())
}
