//! The process-wide plugin runtime: one wasmtime `Engine` (cranelift, epoch interruption,
//! a bounded wasm stack), the `Linker` that offers plugins the `host` imports and nothing
//! else, the optional artifact cache, the generation counter and the epoch ticker thread
//! that makes CPU deadlines fire. Dropping the [`Runtime`] stops the ticker.
//!
//! Everything here runs off the fast path; workers only see what it builds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, OptLevel};

use crate::bindings::HostState;
use crate::cache::ArtifactCache;
use crate::error::RuntimeError;

/// Settings of the runtime, shared by every plugin.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Directory for precompiled artifacts (created 0700; must be private). `None`: compile
    /// on every load.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Epoch tick: the granularity of CPU deadlines.
    pub epoch_tick: Duration,
    /// Native stack budget for wasm frames; deeper recursion traps. The calling thread needs
    /// this much stack plus room for host frames.
    pub max_wasm_stack: usize,
    /// CPU deadline for `init` (instantiation included).
    pub init_deadline: Duration,
    /// Log lines per second each plugin may write (also its burst); more are counted and
    /// dropped.
    pub log_lines_per_sec: u32,
    /// Largest plugin file accepted.
    pub max_plugin_bytes: u64,
    /// When a faulting plugin is skipped.
    pub quarantine: QuarantinePolicy,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            cache_dir: None,
            epoch_tick: Duration::from_millis(1),
            max_wasm_stack: 256 << 10,
            init_deadline: Duration::from_secs(1),
            log_lines_per_sec: 20,
            max_plugin_bytes: 64 << 20,
            quarantine: QuarantinePolicy::default(),
        }
    }
}

/// Quarantine with exponential backoff: `faults` faults of one plugin instance within
/// `window` make its worker skip it for `initial`, doubling on each new quarantine up to
/// `max`; after `reset_after` without a fault the backoff starts at `initial` again. While
/// skipped, the plugin's failure policy applies to every batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuarantinePolicy {
    /// Faults that trigger a quarantine.
    pub faults: u32,
    /// Window in which they must occur.
    pub window: Duration,
    /// First quarantine length.
    pub initial: Duration,
    /// Longest quarantine.
    pub max: Duration,
    /// Fault-free time after which the backoff resets.
    pub reset_after: Duration,
}

impl Default for QuarantinePolicy {
    fn default() -> QuarantinePolicy {
        QuarantinePolicy {
            faults: 3,
            window: Duration::from_secs(10),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// The plugin runtime. Build [`PluginSet`](crate::PluginSet)s with
/// [`Runtime::build_set`] (or let a [`PluginManager`](crate::PluginManager) do it).
///
/// Keep it alive as long as any set or worker built from it is used: its ticker thread is
/// what interrupts runaway plugins.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) config: RuntimeConfig,
    pub(crate) cache: Option<ArtifactCache>,
    generation: AtomicU64,
    ticker: Ticker,
}

impl Runtime {
    /// Creates the engine, opens the cache directory and starts the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            .cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&cfg).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        crate::bindings::add_to_linker(&mut linker)
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let cache = config
            .cache_dir
            .as_deref()
            .map(ArtifactCache::open)
            .transpose()?;
        let ticker = Ticker::start(engine.clone(), config.epoch_tick)?;
        Ok(Runtime {
            engine,
            linker,
            config,
            cache,
            generation: AtomicU64::new(0),
            ticker,
        })
    }

    /// The runtime's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Where the cached artifact of a plugin file with this content hash lives (whether or
    /// not it exists); `None` without a cache directory.
    pub fn artifact_path(&self, content_hash: &crate::ContentHash) -> Option<std::path::PathBuf> {
        let cache = self.cache.as_ref()?;
        Some(cache.path(&ArtifactCache::key(&self.engine, &content_hash.0)))
    }

    /// A generation number greater than every one handed out before and than `previous`.
    pub(crate) fn next_generation(&self, previous: u64) -> u64 {
        self.generation.fetch_max(previous, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Epoch ticks to allow for `d`: rounded up, plus one because the next tick may be
    /// imminent when the deadline is set.
    pub(crate) fn ticks(&self, d: Duration) -> u64 {
        let tick = self.ticker.tick.as_nanos().max(1);
        u64::try_from(d.as_nanos().div_ceil(tick))
            .unwrap_or(u64::MAX / 2)
            .saturating_add(1)
    }
}

/// The thread that advances the engine's epoch every tick.
struct Ticker {
    tick: Duration,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> Result<Ticker, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mgre-plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(RuntimeError::Ticker)?;
        Ok(Ticker {
            tick,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
