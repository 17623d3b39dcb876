//! Per-plugin statistics. Each worker writes its own cache-line-aligned shard with plain
//! relaxed load+store (a single writer needs no atomic read-modify-write); readers sum the
//! shards. Shards outlive their workers, so totals never go backwards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::FaultKind;

/// A snapshot of one plugin's statistics, summed over all workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PluginStats {
    /// Packet hook calls made (classify, mark, route).
    pub calls: u64,
    /// Packets passed to those calls.
    pub packets: u64,
    /// Time spent in those calls, in ns.
    pub call_ns: u64,
    /// `admit-registration` calls made.
    pub admission_calls: u64,
    /// Registrations the plugin refused (failures under fail-closed not included).
    pub admission_refusals: u64,
    /// `shortcut-policy` calls made.
    pub shortcut_calls: u64,
    /// Redirects and shortcuts the plugin denied (failures under fail-closed not included).
    pub shortcut_denials: u64,
    /// Time spent in the NHRP hook calls, in ns.
    pub control_call_ns: u64,
    /// Calls that trapped (other than deadline and memory cap).
    pub traps: u64,
    /// Calls interrupted at their CPU deadline.
    pub deadline_hits: u64,
    /// Calls that hit the memory cap.
    pub memory_limit_hits: u64,
    /// Calls that put verdicts of the wrong total length.
    pub bad_outputs: u64,
    /// Failed attempts to create or initialise a fresh instance.
    pub instantiate_failures: u64,
    /// Fresh instances created after a fault.
    pub reinstantiations: u64,
    /// Times a worker quarantined the plugin.
    pub quarantines: u64,
    /// Batches the failure policy was applied to without calling the plugin (quarantine or
    /// no instance).
    pub skipped_batches: u64,
    /// Log lines dropped by the rate limit.
    pub log_suppressed: u64,
}

impl PluginStats {
    /// Mean time in the plugin per packet, in ns; `None` before the first packet.
    pub fn mean_ns_per_packet(&self) -> Option<f64> {
        (self.packets > 0).then(|| self.call_ns as f64 / self.packets as f64)
    }

    /// All faults, of every kind.
    pub fn faults(&self) -> u64 {
        self.traps
            + self.deadline_hits
            + self.memory_limit_hits
            + self.bad_outputs
            + self.instantiate_failures
    }
}

/// Statistics of one loaded plugin: the worker shards and the last fault.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    shards: Mutex<Vec<Arc<StatsShard>>>,
    last_fault: Mutex<Option<String>>,
}

impl Stats {
    /// A new shard for one worker.
    pub(crate) fn shard(&self) -> Arc<StatsShard> {
        let shard = Arc::new(StatsShard::default());
        lock(&self.shards).push(shard.clone());
        shard
    }

    /// Records the message of the latest fault (rare: faults are bounded by quarantine).
    pub(crate) fn set_last_fault(&self, message: String) {
        *lock(&self.last_fault) = Some(message);
    }

    pub(crate) fn last_fault(&self) -> Option<String> {
        lock(&self.last_fault).clone()
    }

    /// Whether any worker has the plugin in quarantine.
    pub(crate) fn quarantined(&self) -> bool {
        lock(&self.shards)
            .iter()
            .any(|s| s.quarantined.load(Relaxed))
    }

    /// The sum over all shards.
    pub(crate) fn snapshot(&self) -> PluginStats {
        let mut t = PluginStats::default();
        for s in lock(&self.shards).iter() {
            let get = |c: &AtomicU64| c.load(Relaxed);
            t.calls += get(&s.calls);
            t.packets += get(&s.packets);
            t.call_ns += get(&s.call_ns);
            t.admission_calls += get(&s.admission_calls);
            t.admission_refusals += get(&s.admission_refusals);
            t.shortcut_calls += get(&s.shortcut_calls);
            t.shortcut_denials += get(&s.shortcut_denials);
            t.control_call_ns += get(&s.control_call_ns);
            t.traps += get(&s.traps);
            t.deadline_hits += get(&s.deadline_hits);
            t.memory_limit_hits += get(&s.memory_limit_hits);
            t.bad_outputs += get(&s.bad_outputs);
            t.instantiate_failures += get(&s.instantiate_failures);
            t.reinstantiations += get(&s.reinstantiations);
            t.quarantines += get(&s.quarantines);
            t.skipped_batches += get(&s.skipped_batches);
        }
        t
    }
}

/// One thread's counters for one plugin (a dataplane worker or the NHRP control thread).
/// Written only by that thread.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct StatsShard {
    pub(crate) calls: AtomicU64,
    pub(crate) packets: AtomicU64,
    pub(crate) call_ns: AtomicU64,
    pub(crate) admission_calls: AtomicU64,
    pub(crate) admission_refusals: AtomicU64,
    pub(crate) shortcut_calls: AtomicU64,
    pub(crate) shortcut_denials: AtomicU64,
    pub(crate) control_call_ns: AtomicU64,
    pub(crate) traps: AtomicU64,
    pub(crate) deadline_hits: AtomicU64,
    pub(crate) memory_limit_hits: AtomicU64,
    pub(crate) bad_outputs: AtomicU64,
    pub(crate) instantiate_failures: AtomicU64,
    pub(crate) reinstantiations: AtomicU64,
    pub(crate) quarantines: AtomicU64,
    pub(crate) skipped_batches: AtomicU64,
    pub(crate) quarantined: AtomicBool,
}

impl StatsShard {
    /// Adds `n` to a counter of this shard (single writer: no read-modify-write needed).
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Counts one fault of `kind`.
    pub(crate) fn fault(&self, kind: FaultKind) {
        let counter = match kind {
            FaultKind::Trap => &self.traps,
            FaultKind::Deadline => &self.deadline_hits,
            FaultKind::MemoryLimit => &self.memory_limit_hits,
            FaultKind::BadOutput => &self.bad_outputs,
            FaultKind::Instantiate => &self.instantiate_failures,
        };
        StatsShard::add(counter, 1);
    }
}

/// Statistics stay readable even if a thread panicked while holding the lock.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
