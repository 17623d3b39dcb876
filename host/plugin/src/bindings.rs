//! The host side of `wit/policy.wit`: the generated bindings, the data each plugin `Store`
//! carries, the imports a plugin may call (`host`: rate-limited logging and its own counters;
//! `verdicts.put`: the packet hooks' verdicts, copied from guest memory into a buffer the
//! store reuses) and the resource limiter that records why a guest ran out of memory.
//!
//! Nothing here calls into a plugin, and no import can fail or trap: a misbehaving plugin is
//! ignored (unknown counter ids) or throttled (log lines), never given a way to poison its host.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use wasmtime::component::{HasSelf, Linker, WasmList};
use wasmtime::{Engine, ResourceLimiter, Store, StoreContextMut, StoreLimits, StoreLimitsBuilder};

wasmtime::component::bindgen!({
    world: "plugin",
    // Relative to this crate's manifest: the same WIT files the SDK generates from.
    path: "../../wit",
});

pub(crate) use mgre::policy::host::Level;
/// The WIT types of the NHRP hooks (named like the `mgre_sdk::nhrp` types they mirror).
pub(crate) use mgre::policy::types as wit;
// `InitContext` and `PluginInfo` are in scope already: the world `use`s them.
pub(crate) use mgre::policy::types::{Hooks as WitHooks, PeerInfo};

/// What every instance of one loaded plugin shares, across all workers.
#[derive(Debug)]
pub(crate) struct PluginShared {
    /// The operator's name for the plugin (`PluginSpec::name`).
    pub(crate) name: String,
    /// The plugin's counters, declared by `plugin-info.counters`.
    pub(crate) counters: Counters,
    /// Token bucket for `log`.
    pub(crate) log: LogLimiter,
    /// Log lines dropped by the limiter.
    pub(crate) log_suppressed: AtomicU64,
}

impl PluginShared {
    pub(crate) fn new(name: &str, log_lines_per_sec: u32) -> PluginShared {
        PluginShared {
            name: name.to_owned(),
            counters: Counters::default(),
            log: LogLimiter::new(log_lines_per_sec),
            log_suppressed: AtomicU64::new(0),
        }
    }
}

/// A plugin's own counters: names fixed by the first successful `init`, values shared by all
/// instances (one relaxed atomic add per `counter-add` call, which plugins make per batch).
#[derive(Debug)]
pub(crate) struct Counters {
    names: OnceLock<Vec<String>>,
    declared: AtomicUsize,
    values: [AtomicU64; MAX_COUNTERS],
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            names: OnceLock::new(),
            declared: AtomicUsize::new(0),
            values: [const { AtomicU64::new(0) }; MAX_COUNTERS],
        }
    }
}

impl Counters {
    /// Fixes the counter names (the first call wins; later `init`s of the same plugin
    /// declare the same list).
    pub(crate) fn declare(&self, names: &[String]) {
        if self.names.set(names.to_vec()).is_ok() {
            self.declared.store(names.len().min(MAX_COUNTERS), Relaxed);
        }
    }

    /// `(name, value)` for every declared counter.
    pub(crate) fn snapshot(&self) -> Vec<(String, u64)> {
        let names = self.names.get().map_or(&[][..], Vec::as_slice);
        names
            .iter()
            .zip(&self.values)
            .map(|(n, v)| (n.clone(), v.load(Relaxed)))
            .collect()
    }

    fn add(&self, id: u32, delta: u64) {
        let id = id as usize;
        if id < self.declared.load(Relaxed) {
            self.values[id].fetch_add(delta, Relaxed);
        }
    }
}

/// A lock-free token bucket (GCRA): `rate` lines per second with a burst of `rate` lines.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    base: Instant,
    /// Nanoseconds between lines; 0 disables logging.
    interval_ns: u64,
    /// Burst tolerance in nanoseconds.
    tolerance_ns: u64,
    /// Theoretical arrival time of the next line, in ns since `base`.
    tat_ns: AtomicU64,
}

impl LogLimiter {
    fn new(rate: u32) -> LogLimiter {
        let interval_ns = if rate == 0 {
            0
        } else {
            1_000_000_000 / u64::from(rate)
        };
        LogLimiter {
            base: Instant::now(),
            interval_ns,
            tolerance_ns: interval_ns * u64::from(rate.saturating_sub(1)),
            tat_ns: AtomicU64::new(0),
        }
    }

    /// Whether one more line may be written now.
    fn admit(&self) -> bool {
        if self.interval_ns == 0 {
            return false;
        }
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut tat = self.tat_ns.load(Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance_ns {
                return false;
            }
            match self
                .tat_ns
                .compare_exchange_weak(tat, start + self.interval_ns, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(current) => tat = current,
            }
        }
    }
}

/// The `T` of every plugin `Store`: one per instance.
pub(crate) struct HostState {
    pub(crate) shared: Arc<PluginShared>,
    pub(crate) limiter: PluginLimiter,
    pub(crate) verdicts: Verdicts,
}

/// The verdicts of the packet hook call in progress, as `verdicts.put` delivered them.
///
/// The buffer is reused for every call of the instance: after it has grown to the largest
/// batch's verdicts, `put` copies from guest memory without allocating.
#[derive(Debug, Default)]
pub(crate) struct Verdicts {
    data: Vec<u8>,
    /// Bytes the call in progress may put; 0 outside packet hook calls.
    limit: usize,
    /// `put` offered more than `limit` bytes.
    overflowed: bool,
}

impl Verdicts {
    /// Prepares for a packet hook call that must put exactly `len` bytes.
    pub(crate) fn expect(&mut self, len: usize) {
        self.data.clear();
        self.data.reserve(len);
        self.limit = len;
        self.overflowed = false;
    }

    /// Closes the call (later `put`s overflow) and checks it put exactly the expected
    /// bytes; `Err` describes what it put instead.
    pub(crate) fn finish(&mut self) -> Result<(), String> {
        let expected = std::mem::take(&mut self.limit);
        if self.overflowed {
            return Err(format!("more than {expected} bytes of verdicts"));
        }
        if self.data.len() != expected {
            return Err(format!("{} bytes of verdicts", self.data.len()));
        }
        Ok(())
    }

    /// What the last call put.
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }

    fn put(&mut self, bytes: &[u8]) {
        if self.overflowed || self.data.len() + bytes.len() > self.limit {
            self.overflowed = true;
            return;
        }
        self.data.extend_from_slice(bytes);
    }
}

/// Adds the plugin world's imports to `linker`: the generated `host` and `types`, and
/// `verdicts.put`, defined by hand so that it borrows the list in guest memory ([`WasmList`])
/// instead of receiving a fresh `Vec` (what the generated binding would pass).
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    mgre::policy::host::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    mgre::policy::types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    linker.instance(VERDICTS_INTERFACE)?.func_wrap(
        "put",
        |mut store: StoreContextMut<'_, HostState>, (data,): (WasmList<u8>,)| {
            let mut verdicts = std::mem::take(&mut store.data_mut().verdicts);
            verdicts.put(data.as_le_slice(&store));
            store.data_mut().verdicts = verdicts;
            Ok(())
        },
    )
}

/// The instance name of the `verdicts` interface.
const VERDICTS_INTERFACE: &str = "mgre:policy/verdicts@0.2.0";

/// Creates a store for one instance of a plugin, with its memory cap and a first epoch
/// deadline (the initial deadline is "now", which would interrupt even instantiation).
pub(crate) fn new_store(
    engine: &Engine,
    shared: &Arc<PluginShared>,
    memory_limit_bytes: usize,
    deadline_ticks: u64,
) -> Store<HostState> {
    let limits = StoreLimitsBuilder::new()
        .memory_size(memory_limit_bytes)
        // Counts core instances: a componentized module is 3 (module, shim, fixups).
        .instances(MAX_CORE_INSTANCES)
        .memories(1)
        .tables(MAX_TABLES)
        .build();
    let state = HostState {
        shared: shared.clone(),
        limiter: PluginLimiter {
            inner: limits,
            memory_denied: false,
        },
        verdicts: Verdicts::default(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(deadline_ticks);
    store
}

/// Wraps `StoreLimits` to remember a refused `memory.grow`: a Rust guest turns that into an
/// abort (`unreachable`), which would otherwise look like any other trap.
pub(crate) struct PluginLimiter {
    inner: StoreLimits,
    /// Set when a grow was refused; cleared before every call.
    pub(crate) memory_denied: bool,
}

impl ResourceLimiter for PluginLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.memory_denied = true;
        }
        allowed
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl mgre::policy::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let shared = &self.shared;
        if !shared.log.admit() {
            shared.log_suppressed.fetch_add(1, Relaxed);
            return;
        }
        let message = truncate(&message, MAX_LOG_BYTES);
        // `escape_debug`: a plugin must not be able to forge log lines with newlines.
        let message = message.escape_debug();
        let plugin = shared.name.as_str();
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn counter_add(&mut self, id: u32, delta: u64) {
        self.shared.counters.add(id, delta);
    }
}

impl mgre::policy::types::Host for HostState {}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Most counters a plugin may declare.
pub(crate) const MAX_COUNTERS: usize = 64;
/// Longest log line kept, in bytes.
const MAX_LOG_BYTES: usize = 1024;
/// Core instances one plugin component may create.
const MAX_CORE_INSTANCES: usize = 8;
/// Tables one plugin component may create.
const MAX_TABLES: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_allows_a_burst_then_throttles() {
        let l = LogLimiter::new(20);
        let admitted = (0..100).filter(|_| l.admit()).count();
        assert_eq!(admitted, 20);
        assert!(!LogLimiter::new(0).admit());
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn undeclared_counters_are_ignored() {
        let c = Counters::default();
        c.add(0, 5);
        c.declare(&["a".into(), "b".into()]);
        c.add(1, 2);
        c.add(2, 9);
        c.add(u32::MAX, 9);
        assert_eq!(c.snapshot(), vec![("a".into(), 0), ("b".into(), 2)]);
    }
}
