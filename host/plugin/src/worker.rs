//! [`WorkerPlugins`]: one dataplane thread's instances of a [`PluginSet`] and the per-batch
//! entry point that runs the classify → mark → route chains over a batch of packet slots.
//!
//! Each instance has its own `Store` (a trap poisons a whole store). After a fault the store
//! is dropped and a fresh instance is made from the `InstancePre` at the plugin's next call;
//! repeated faults quarantine the plugin on this worker with exponential backoff. Faults and
//! quarantine apply the plugin's failure policy to the batch. Work per batch: one component
//! call per plugin and hook (the call returns one `Vec` — per batch, never per packet) and a
//! pass over the verdicts; nothing here allocates per packet, takes a lock or logs per packet.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mgre_sdk::abi::{
    CLASSIFY_SLOT, Classify, MARK_SLOT, Mark, PACKET_SLOT, ROUTE_SLOT, Route, RouteAction,
};

use crate::error::{FaultKind, describe};
use crate::load::{Live, LoadedPlugin, StartError};
use crate::runtime::QuarantinePolicy;
use crate::set::PluginSet;
use crate::spec::{FailurePolicy, Hook};
use crate::stats::StatsShard;

/// The merged policy for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyVerdict {
    /// Class id (0: unclassified); the last non-zero classify verdict wins.
    pub class: u32,
    /// QoS marks; a later plugin overrides the fields it sets. Its `ttl_ms` is unused
    /// (see `ttl_ms` below).
    pub mark: Mark,
    /// The first non-`Default` route action in chain order.
    pub route: RouteAction,
    /// How long this verdict may be reused for the flow, in ms: the minimum over every
    /// verdict that contributed, 0 if any said 0 or a plugin failed on the batch, and
    /// [`TTL_UNTIL_RELOAD`] if no plugin was called.
    pub ttl_ms: u32,
    /// A fail-closed plugin failed on this packet's batch: drop the packet.
    pub failed_closed: bool,
}

/// `PolicyVerdict::ttl_ms` when no plugin had a say: valid until the generation changes.
pub const TTL_UNTIL_RELOAD: u32 = u32::MAX;

impl Default for PolicyVerdict {
    /// No opinion, unclassified, valid until reload.
    fn default() -> PolicyVerdict {
        PolicyVerdict::start(0)
    }
}

impl PolicyVerdict {
    fn start(class: u32) -> PolicyVerdict {
        PolicyVerdict {
            class,
            mark: Mark::default(),
            route: RouteAction::Default,
            ttl_ms: TTL_UNTIL_RELOAD,
            failed_closed: false,
        }
    }
}

/// One worker's instances of a plugin set. Build it on the worker thread; it is not shared.
pub struct WorkerPlugins {
    set: Arc<PluginSet>,
    /// Index-aligned with `set.plugins`.
    instances: Vec<Instance>,
}

impl WorkerPlugins {
    /// Instantiates and initialises every plugin of `set` (about 15 µs plus `init` each).
    /// An instance that cannot be started is counted as a fault and retried at its next
    /// call.
    pub fn new(set: Arc<PluginSet>) -> WorkerPlugins {
        let mut w = WorkerPlugins {
            set: Arc::new(PluginSet::empty()),
            instances: Vec::new(),
        };
        w.refresh(&set);
        w
    }

    /// Switches to `set`, keeping the live instances (and quarantine state) of plugins it
    /// shares with the current set and starting the others. Cheap if `set` is the current
    /// one: call it between batches with whatever the daemon published.
    pub fn refresh(&mut self, set: &Arc<PluginSet>) {
        if Arc::ptr_eq(&self.set, set) {
            return;
        }
        let mut old = std::mem::take(&mut self.instances);
        let now = Instant::now();
        self.instances = set
            .plugins
            .iter()
            .map(
                |plugin| match old.iter().position(|i| Arc::ptr_eq(&i.plugin, plugin)) {
                    Some(pos) => old.swap_remove(pos),
                    None => Instance::new(plugin.clone(), now),
                },
            )
            .collect();
        self.set = set.clone();
    }

    /// The set these instances belong to.
    pub fn set(&self) -> &Arc<PluginSet> {
        &self.set
    }

    /// The set's generation (for flow-cache keys).
    pub fn generation(&self) -> u64 {
        self.set.generation()
    }

    /// Runs the chains once over a batch.
    ///
    /// `slots` holds n 64-byte packet slots (`mgre_sdk::abi::PacketMeta::write`); `out`
    /// receives n verdicts. Classify runs first, and after each classifier the class so
    /// far is written into every slot (offset 20), so later classifiers, mark and route see
    /// it. When a fail-closed plugin fails, every verdict gets `failed_closed` and the rest
    /// of the chain is skipped. `now` drives quarantine (any monotonic clock; CPU deadlines
    /// use the runtime's epoch ticker).
    ///
    /// # Panics
    /// If `slots.len()` is not `64 * out.len()`: a caller bug, not a packet property.
    pub fn run(&mut self, now: Instant, slots: &mut [u8], out: &mut [PolicyVerdict]) {
        assert_eq!(
            slots.len(),
            out.len() * PACKET_SLOT,
            "slots must hold exactly one 64-byte slot per verdict"
        );
        let (packets, _) = slots.as_chunks::<PACKET_SLOT>();
        for (v, p) in out.iter_mut().zip(packets) {
            *v = PolicyVerdict::start(read_class(p));
        }
        if out.is_empty() {
            return;
        }
        if !self.set.closed_unavailable().is_empty() {
            for v in out.iter_mut() {
                v.failed_closed = true;
                v.ttl_ms = 0;
            }
            return;
        }
        let WorkerPlugins { set, instances } = self;
        for hook in Hook::ALL {
            for &index in &set.chains[hook.index()] {
                let instance = &mut instances[index];
                let result = instance.call(hook, now, slots, set.quarantine());
                match result {
                    Ok(verdicts) => merge(hook, &verdicts, slots, out),
                    Err(()) if instance.plugin.spec.failure == FailurePolicy::Closed => {
                        for v in out.iter_mut() {
                            v.failed_closed = true;
                            v.ttl_ms = 0;
                        }
                        return;
                    }
                    Err(()) => {
                        for v in out.iter_mut() {
                            v.ttl_ms = 0;
                        }
                    }
                }
            }
        }
    }
}

/// Folds one plugin's verdicts for `hook` into `out`. `verdicts` has the right length.
fn merge(hook: Hook, verdicts: &[u8], slots: &mut [u8], out: &mut [PolicyVerdict]) {
    match hook {
        Hook::Classify => {
            let (vs, _) = verdicts.as_chunks::<CLASSIFY_SLOT>();
            let (packets, _) = slots.as_chunks_mut::<PACKET_SLOT>();
            for ((o, v), p) in out.iter_mut().zip(vs).zip(packets) {
                let c = Classify::read(v);
                if c.class != 0 {
                    o.class = c.class;
                    p[CLASS_OFFSET..CLASS_OFFSET + 4].copy_from_slice(&c.class.to_le_bytes());
                }
                o.ttl_ms = o.ttl_ms.min(c.ttl_ms);
            }
        }
        Hook::Mark => {
            let (vs, _) = verdicts.as_chunks::<MARK_SLOT>();
            for (o, v) in out.iter_mut().zip(vs) {
                let m = Mark::read(v);
                let into = &mut o.mark;
                into.inner_dscp = m.inner_dscp.or(into.inner_dscp);
                into.outer_dscp = m.outer_dscp.or(into.outer_dscp);
                into.outer_ecn = m.outer_ecn.or(into.outer_ecn);
                into.priority = m.priority.or(into.priority);
                if m.rate_class != 0 {
                    into.rate_class = m.rate_class;
                }
                o.ttl_ms = o.ttl_ms.min(m.ttl_ms);
            }
        }
        Hook::Route => {
            let (vs, _) = verdicts.as_chunks::<ROUTE_SLOT>();
            for (o, v) in out.iter_mut().zip(vs) {
                // Once decided, later plugins' verdicts neither change nor limit it.
                if o.route == RouteAction::Default {
                    let r = Route::read(v);
                    o.route = r.action;
                    o.ttl_ms = o.ttl_ms.min(r.ttl_ms);
                }
            }
        }
    }
}

/// One plugin's instance on this worker.
struct Instance {
    plugin: Arc<LoadedPlugin>,
    /// `None` after a fault, until the next call re-instantiates.
    live: Option<Live>,
    shard: Arc<StatsShard>,
    quarantine: Quarantine,
}

impl Instance {
    fn new(plugin: Arc<LoadedPlugin>, now: Instant) -> Instance {
        let mut instance = Instance {
            shard: plugin.stats.shard(),
            plugin,
            live: None,
            quarantine: Quarantine::default(),
        };
        match instance.plugin.start() {
            Ok(live) => instance.live = Some(live),
            Err(e) => {
                // Counted only; the next call retries and quarantines if it keeps failing.
                let (kind, message) = start_fault(e);
                instance.fault("start", kind, message, now, None);
            }
        }
        instance
    }

    /// Calls `hook` on the batch; `Err` means "apply the failure policy".
    fn call(
        &mut self,
        hook: Hook,
        now: Instant,
        slots: &[u8],
        policy: QuarantinePolicy,
    ) -> Result<Vec<u8>, ()> {
        if self.quarantine.active(now, &self.shard) {
            StatsShard::add(&self.shard.skipped_batches, 1);
            return Err(());
        }
        if self.live.is_none() {
            match self.plugin.start() {
                Ok(live) => {
                    StatsShard::add(&self.shard.reinstantiations, 1);
                    self.live = Some(live);
                }
                Err(e) => {
                    let (kind, message) = start_fault(e);
                    self.fault(hook.name(), kind, message, now, Some(policy));
                    StatsShard::add(&self.shard.skipped_batches, 1);
                    return Err(());
                }
            }
        }
        let Some(live) = self.live.as_mut() else {
            return Err(()); // unreachable: started just above
        };
        let packets = slots.len() / PACKET_SLOT;
        live.store.data_mut().limiter.memory_denied = false;
        live.store.set_epoch_deadline(self.plugin.deadline_ticks);
        let started = Instant::now();
        let result = match hook {
            Hook::Classify => live.bindings.call_classify(&mut live.store, slots),
            Hook::Mark => live.bindings.call_mark(&mut live.store, slots),
            Hook::Route => live.bindings.call_route(&mut live.store, slots),
        };
        let elapsed = started.elapsed();
        let shard = &self.shard;
        StatsShard::add(&shard.calls, 1);
        StatsShard::add(&shard.packets, packets as u64);
        StatsShard::add(
            &shard.call_ns,
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        );
        match result {
            Ok(verdicts) if verdicts.len() == packets * verdict_len(hook) => Ok(verdicts),
            Ok(verdicts) => {
                let message = format!(
                    "{} bytes of verdicts for {packets} packets (want {} each)",
                    verdicts.len(),
                    verdict_len(hook)
                );
                self.fault(
                    hook.name(),
                    FaultKind::BadOutput,
                    message,
                    now,
                    Some(policy),
                );
                Err(())
            }
            Err(e) => {
                let kind = FaultKind::of(&e, live.store.data().limiter.memory_denied);
                let message = describe(&e);
                // The store is poisoned: drop it, re-instantiate at the next call.
                self.live = None;
                self.fault(hook.name(), kind, message, now, Some(policy));
                Err(())
            }
        }
    }

    /// Counts a fault during `during` (a hook name or "start"), records it and maybe starts
    /// a quarantine (`policy` `None`: count only).
    fn fault(
        &mut self,
        during: &'static str,
        kind: FaultKind,
        message: String,
        now: Instant,
        policy: Option<QuarantinePolicy>,
    ) {
        self.shard.fault(kind);
        let name = &self.plugin.spec.name;
        tracing::warn!(plugin = %name, during, fault = %kind, error = %message, "plugin fault");
        self.plugin
            .stats
            .set_last_fault(format!("{during}: {kind}: {message}"));
        let Some(policy) = policy else { return };
        if let Some(length) = self.quarantine.record_fault(now, &policy) {
            StatsShard::add(&self.shard.quarantines, 1);
            self.shard.quarantined.store(true, Relaxed);
            tracing::warn!(plugin = %name, seconds = length.as_secs_f64(), "plugin quarantined");
        }
    }
}

/// Fault tracking and backoff of one instance (see [`QuarantinePolicy`]).
#[derive(Debug, Default)]
struct Quarantine {
    window_start: Option<Instant>,
    faults_in_window: u32,
    until: Option<Instant>,
    /// The next quarantine's length (zero: not yet set).
    backoff: Duration,
    /// When the instance was last faulting or quarantined.
    last_trouble: Option<Instant>,
}

impl Quarantine {
    /// Whether calls are skipped at `now`; clears an expired quarantine.
    fn active(&mut self, now: Instant, shard: &StatsShard) -> bool {
        match self.until {
            Some(until) if now < until => true,
            Some(_) => {
                self.until = None;
                shard.quarantined.store(false, Relaxed);
                false
            }
            None => false,
        }
    }

    /// Records a fault; returns the quarantine length if this fault starts one.
    fn record_fault(&mut self, now: Instant, policy: &QuarantinePolicy) -> Option<Duration> {
        let clean = self
            .last_trouble
            .is_none_or(|t| now.saturating_duration_since(t) >= policy.reset_after);
        if clean || self.backoff.is_zero() {
            self.backoff = policy.initial;
        }
        self.last_trouble = Some(now);
        let window_open = self
            .window_start
            .is_some_and(|s| now.saturating_duration_since(s) <= policy.window);
        if !window_open {
            self.window_start = Some(now);
            self.faults_in_window = 0;
        }
        self.faults_in_window += 1;
        if self.faults_in_window < policy.faults.max(1) {
            return None;
        }
        let length = self.backoff;
        self.until = Some(now + length);
        self.last_trouble = self.until;
        self.backoff = (length * 2).min(policy.max);
        self.window_start = None;
        self.faults_in_window = 0;
        Some(length)
    }
}

fn start_fault(e: StartError) -> (FaultKind, String) {
    match e {
        StartError::Instantiate(kind, m) | StartError::InitFault(kind, m) => {
            let kind = if kind == FaultKind::Trap {
                FaultKind::Instantiate
            } else {
                kind
            };
            (kind, m)
        }
        StartError::InitRefused(m) => (FaultKind::Instantiate, format!("init refused: {m}")),
    }
}

fn verdict_len(hook: Hook) -> usize {
    match hook {
        Hook::Classify => CLASSIFY_SLOT,
        Hook::Mark => MARK_SLOT,
        Hook::Route => ROUTE_SLOT,
    }
}

fn read_class(slot: &[u8; PACKET_SLOT]) -> u32 {
    let c = &slot[CLASS_OFFSET..CLASS_OFFSET + 4];
    u32::from_le_bytes([c[0], c[1], c[2], c[3]])
}

/// Offset of the "class id so far" field in a packet slot.
const CLASS_OFFSET: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_can_be_moved_and_sets_shared_across_threads() {
        fn send<T: Send>() {}
        fn sync<T: Send + Sync>() {}
        send::<WorkerPlugins>();
        sync::<PluginSet>();
        sync::<crate::PluginManager>();
    }

    fn policy() -> QuarantinePolicy {
        QuarantinePolicy {
            faults: 3,
            window: Duration::from_secs(10),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            reset_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn quarantine_backs_off_exponentially_and_resets() {
        let p = policy();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut q = Quarantine::default();
        assert_eq!(q.record_fault(at(0), &p), None);
        assert_eq!(q.record_fault(at(1), &p), None);
        assert_eq!(q.record_fault(at(2), &p), Some(Duration::from_secs(1)));
        for (start, want) in [(10, 2), (20, 4), (30, 4)] {
            assert_eq!(q.record_fault(at(start), &p), None);
            assert_eq!(q.record_fault(at(start), &p), None);
            assert_eq!(
                q.record_fault(at(start), &p),
                Some(Duration::from_secs(want))
            );
        }
        // A clean minute after the last quarantine ended: back to the initial length.
        for s in [100, 100] {
            assert_eq!(q.record_fault(at(s), &p), None);
        }
        assert_eq!(q.record_fault(at(100), &p), Some(Duration::from_secs(1)));
    }

    #[test]
    fn faults_spread_beyond_the_window_do_not_quarantine() {
        let p = policy();
        let t0 = Instant::now();
        let mut q = Quarantine::default();
        for s in [0, 11, 22, 33] {
            assert_eq!(q.record_fault(t0 + Duration::from_secs(s), &p), None);
        }
    }
}
