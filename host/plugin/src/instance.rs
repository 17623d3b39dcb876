//! One plugin's instance on one thread and what keeps it in check: its own `Store` (a trap
//! poisons a whole store), re-instantiation from the `InstancePre` after a fault, the CPU
//! deadline and memory cap around every call, fault accounting, and quarantine with
//! exponential backoff after repeated faults. Dataplane workers ([`crate::WorkerPlugins`])
//! and the NHRP control thread ([`crate::ControlHooks`]) both call plugins through
//! [`Instance::invoke`]; what a call's result means is theirs to decide.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use wasmtime::Store;

use crate::bindings::{HostState, Plugin, Verdicts};
use crate::error::{FaultKind, describe};
use crate::load::{Live, LoadedPlugin, StartError};
use crate::runtime::QuarantinePolicy;
use crate::set::PluginSet;
use crate::spec::Hook;
use crate::stats::StatsShard;

/// `old`'s instances re-aligned with `set.plugins`: an instance of a plugin `set` still
/// serves is kept (with its quarantine state); a plugin `wanted` by this thread that has none
/// gets a fresh one; the others get `None`.
pub(crate) fn realign(
    mut old: Vec<Option<Instance>>,
    set: &PluginSet,
    wanted: impl Fn(&LoadedPlugin) -> bool,
    now: Instant,
) -> Vec<Option<Instance>> {
    set.plugins
        .iter()
        .map(|plugin| {
            if !wanted(plugin) {
                return None;
            }
            let kept = old
                .iter()
                .position(|i| i.as_ref().is_some_and(|i| Arc::ptr_eq(&i.plugin, plugin)));
            match kept {
                Some(pos) => old.swap_remove(pos),
                None => Some(Instance::new(plugin.clone(), now)),
            }
        })
        .collect()
}

/// One plugin's instance on one thread (a dataplane worker or the NHRP control thread).
pub(crate) struct Instance {
    pub(crate) plugin: Arc<LoadedPlugin>,
    /// `None` after a fault, until the next call re-instantiates.
    live: Option<Live>,
    pub(crate) shard: Arc<StatsShard>,
    quarantine: Quarantine,
}

impl Instance {
    /// Starts an instance of `plugin`; a failure is counted and retried at the first call.
    pub(crate) fn new(plugin: Arc<LoadedPlugin>, now: Instant) -> Instance {
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

    /// Calls `call` on a live instance (starting one if the last call faulted) under the
    /// plugin's CPU deadline and memory cap, and counts the call for `hook` (with `packets`
    /// packets, 0 for the control hooks). `Err` means
    /// "apply the failure policy": the instance is quarantined, could not be started, or
    /// trapped (then its store is dropped and the next call starts a fresh one).
    pub(crate) fn invoke<R>(
        &mut self,
        hook: Hook,
        now: Instant,
        policy: QuarantinePolicy,
        packets: u64,
        call: impl FnOnce(&Plugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, ()> {
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
        live.store.data_mut().limiter.memory_denied = false;
        live.store.set_epoch_deadline(self.plugin.deadline_ticks);
        let started = Instant::now();
        let result = call(&live.bindings, &mut live.store);
        let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let shard = &self.shard;
        let (calls, time) = match hook {
            Hook::Classify | Hook::Mark | Hook::Route => (&shard.calls, &shard.call_ns),
            Hook::Admission => (&shard.admission_calls, &shard.control_call_ns),
            Hook::Shortcut => (&shard.shortcut_calls, &shard.control_call_ns),
        };
        StatsShard::add(calls, 1);
        StatsShard::add(time, elapsed);
        StatsShard::add(&shard.packets, packets);
        match result {
            Ok(r) => Ok(r),
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

    /// The verdict buffer of the live instance (`None` after a fault).
    pub(crate) fn verdicts(&mut self) -> Option<&mut Verdicts> {
        self.live.as_mut().map(|l| &mut l.store.data_mut().verdicts)
    }

    /// Counts a fault during `during` (a hook name or "start"), records it and maybe starts
    /// a quarantine (`policy` `None`: count only).
    pub(crate) fn fault(
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

#[cfg(test)]
mod tests {
    use super::*;

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
