//! [`WorkerPlugins`]: one dataplane thread's instances of a [`PluginSet`] and the per-batch
//! entry point that runs the classify → mark → route chains over a batch of packet slots.
//!
//! Each instance has its own `Store` (a trap poisons a whole store). After a fault the store
//! is dropped and a fresh instance is made from the `InstancePre` at the plugin's next call;
//! repeated faults quarantine the plugin on this worker with exponential backoff (see
//! `instance`). Faults and quarantine apply the plugin's failure policy to the batch. Only
//! plugins with a packet hook get an instance here. Work per batch: one component call per
//! plugin and hook (the plugin puts its verdicts into a buffer its store reuses) and a pass
//! over the verdicts; in steady state nothing here allocates, takes a lock or logs.

use std::sync::Arc;
use std::time::Instant;

use mgre_sdk::abi::{
    CLASSIFY_SLOT, Classify, MARK_SLOT, Mark, PACKET_SLOT, ROUTE_SLOT, Route, RouteAction,
};

use crate::error::FaultKind;
use crate::instance::{Instance, realign};
use crate::runtime::QuarantinePolicy;
use crate::set::PluginSet;
use crate::spec::{FailurePolicy, Hook};

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
    /// Index-aligned with `set.plugins`; `Some` for plugins with a packet hook.
    instances: Vec<Option<Instance>>,
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
        let old = std::mem::take(&mut self.instances);
        let wanted =
            |p: &crate::load::LoadedPlugin| Hook::PACKET.iter().any(|h| p.hooks.contains(*h));
        self.instances = realign(old, set, wanted, Instant::now());
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
        for hook in Hook::PACKET {
            for &index in &set.chains[hook.index()] {
                // A plugin in a packet chain has a packet hook, hence an instance.
                let Some(instance) = instances[index].as_mut() else {
                    continue;
                };
                let failure = instance.plugin.spec.failure;
                let result = call(instance, hook, now, slots, set.quarantine());
                match result {
                    Ok(verdicts) => merge(hook, verdicts, slots, out),
                    Err(()) if failure == FailurePolicy::Closed => {
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
        // Not in `Hook::PACKET`: no verdicts to merge.
        Hook::Admission | Hook::Shortcut => {}
    }
}

/// Calls packet hook `hook` of `instance` on the batch and returns the verdicts it put
/// (`verdicts.put`), exactly one slot per packet; `Err` means "apply the failure policy".
fn call<'i>(
    instance: &'i mut Instance,
    hook: Hook,
    now: Instant,
    slots: &[u8],
    policy: QuarantinePolicy,
) -> Result<&'i [u8], ()> {
    let packets = slots.len() / PACKET_SLOT;
    let expected = packets * verdict_len(hook);
    instance.invoke(hook, now, policy, packets as u64, |bindings, store| {
        store.data_mut().verdicts.expect(expected);
        match hook {
            Hook::Classify => bindings.call_classify(store, slots),
            Hook::Mark => bindings.call_mark(store, slots),
            Hook::Route => bindings.call_route(store, slots),
            // Not in `Hook::PACKET`: never called here.
            Hook::Admission | Hook::Shortcut => Ok(()),
        }
    })?;
    let checked = instance.verdicts().map(|v| v.finish());
    match checked {
        Some(Ok(())) => Ok(instance.verdicts().map_or(&[][..], |v| v.data())),
        Some(Err(put)) => {
            let message = format!(
                "{put} for {packets} packets (want {} each)",
                verdict_len(hook)
            );
            instance.fault(
                hook.name(),
                FaultKind::BadOutput,
                message,
                now,
                Some(policy),
            );
            Err(())
        }
        None => Err(()), // unreachable: a successful call leaves the instance live
    }
}

fn verdict_len(hook: Hook) -> usize {
    match hook {
        Hook::Classify => CLASSIFY_SLOT,
        Hook::Mark => MARK_SLOT,
        Hook::Route => ROUTE_SLOT,
        Hook::Admission | Hook::Shortcut => 0,
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
        send::<crate::ControlHooks>();
        sync::<PluginSet>();
        sync::<crate::PluginManager>();
    }
}
