//! [`ControlHooks`]: the NHRP control thread's instances of a [`PluginSet`] and its two
//! entry points, [`ControlHooks::admit_registration`] and [`ControlHooks::shortcut_policy`],
//! which ask every plugin of the `admission` or `shortcut` chain in config order and combine
//! the answers.
//!
//! The control thread owns its instances, separate from the dataplane workers' (a plugin has
//! one instance per thread), and only for plugins that implement an NHRP hook. Limits, fault
//! accounting, re-instantiation and quarantine are the packet hooks' (see `instance`); a
//! failure applies the plugin's failure policy to that one decision. Calls are rare (one per
//! registration, refresh or resolution) and exchange typed records, so they allocate.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use mgre_sdk::nhrp::{
    ADMINISTRATIVELY_PROHIBITED, Admission, AdmissionAttributes, QosGroup, Refusal, Registration,
    ShortcutKind, ShortcutRequest, ShortcutVerdict,
};

use crate::bindings::wit;
use crate::instance::{Instance, realign};
use crate::load::LoadedPlugin;
use crate::set::PluginSet;
use crate::spec::{FailurePolicy, Hook};
use crate::stats::StatsShard;

/// The NHRP control thread's plugin instances. Build it on that thread from
/// `PluginManager::current()`, and call [`refresh`](ControlHooks::refresh) with
/// `manager.published().load()` before each decision (or each batch of control messages)
/// to follow reloads.
pub struct ControlHooks {
    set: Arc<PluginSet>,
    /// Index-aligned with `set.plugins`; `Some` for plugins with an NHRP hook.
    instances: Vec<Option<Instance>>,
}

impl ControlHooks {
    /// Instantiates and initialises every plugin of `set` that implements `admission` or
    /// `shortcut`. An instance that cannot be started is counted as a fault and retried at
    /// its next call.
    pub fn new(set: Arc<PluginSet>) -> ControlHooks {
        let mut c = ControlHooks {
            set: Arc::new(PluginSet::empty()),
            instances: Vec::new(),
        };
        c.refresh(&set);
        c
    }

    /// Switches to `set`, keeping the instances of plugins it shares with the current set
    /// and starting the others. Cheap (one pointer compare) if `set` is the current one.
    pub fn refresh(&mut self, set: &Arc<PluginSet>) {
        if Arc::ptr_eq(&self.set, set) {
            return;
        }
        let old = std::mem::take(&mut self.instances);
        let wanted = |p: &LoadedPlugin| Hook::CONTROL.iter().any(|h| p.hooks.contains(*h));
        self.instances = realign(old, set, wanted, Instant::now());
        self.set = set.clone();
    }

    /// The set these instances belong to.
    pub fn set(&self) -> &Arc<PluginSet> {
        &self.set
    }

    /// Whether any plugin would be asked about registrations (or a fail-closed plugin that
    /// might be is unavailable): when `false`, [`admit_registration`] accepts without
    /// attributes and the caller may skip it.
    ///
    /// [`admit_registration`]: ControlHooks::admit_registration
    pub fn has_admission(&self) -> bool {
        self.has(Hook::Admission)
    }

    /// Like [`has_admission`](ControlHooks::has_admission), for the shortcut hook.
    pub fn has_shortcut(&self) -> bool {
        self.has(Hook::Shortcut)
    }

    /// Asks every plugin of the `admission` chain, in config order, whether to register `req`.
    ///
    /// The first refusal wins and ends the chain. Accepted attributes are merged: a later
    /// plugin's QoS group or multicast flag overrides an earlier one's, and holding-time caps
    /// combine to the smallest ([`AdmissionAttributes::then`]). No plugin: accept without
    /// attributes. A plugin that fails (trap, deadline, memory cap, quarantine) counts as
    /// accepting without attributes if it is fail-open, and refuses with code 4
    /// (administratively prohibited) if it is fail-closed, as does a fail-closed plugin
    /// without a version to serve. `now` drives quarantine.
    pub fn admit_registration(&mut self, now: Instant, req: &Registration) -> Admission {
        if self.set.closed_unavailable_for(Hook::Admission) {
            return unavailable_refusal(&self.set);
        }
        let wit_req = registration_to_wit(req);
        let ControlHooks { set, instances } = self;
        let mut answer = Admission::accept();
        for &index in &set.chains[Hook::Admission.index()] {
            let Some(instance) = instances[index].as_mut() else {
                continue; // a plugin in the chain has an NHRP hook, hence an instance
            };
            let result = instance.invoke(Hook::Admission, now, set.quarantine(), 0, |b, store| {
                b.call_admit_registration(store, &wit_req)
            });
            let admission = match result {
                Ok(a) => admission_from_wit(a),
                Err(()) if instance.plugin.spec.failure == FailurePolicy::Closed => {
                    return Admission::Refuse(Refusal {
                        code: ADMINISTRATIVELY_PROHIBITED,
                        reason: format!(
                            "plugin {} failed and is fail-closed",
                            instance.plugin.spec.name
                        ),
                    });
                }
                Err(()) => continue,
            };
            if let Admission::Refuse(r) = &admission {
                StatsShard::add(&instance.shard.admission_refusals, 1);
                tracing::debug!(plugin = %instance.plugin.spec.name, code = r.code,
                    reason = %r.reason.escape_debug(), nbma = %req.nbma, "registration refused");
                return admission;
            }
            answer = answer.then(admission);
        }
        answer
    }

    /// Asks every plugin of the `shortcut` chain, in config order, whether the redirect or
    /// shortcut `req` may happen. Any deny wins (and ends the chain); no plugin: allow. A
    /// plugin that fails allows if fail-open and denies if fail-closed, as does a fail-closed
    /// plugin without a version to serve. `now` drives quarantine.
    pub fn shortcut_policy(&mut self, now: Instant, req: &ShortcutRequest) -> ShortcutVerdict {
        if self.set.closed_unavailable_for(Hook::Shortcut) {
            return ShortcutVerdict::Deny;
        }
        let wit_req = wit::ShortcutRequest {
            kind: match req.kind {
                ShortcutKind::Redirect => wit::ShortcutKind::Redirect,
                ShortcutKind::Resolution => wit::ShortcutKind::Resolution,
            },
            src: req.src.to_string(),
            dst: req.dst.to_string(),
        };
        let ControlHooks { set, instances } = self;
        for &index in &set.chains[Hook::Shortcut.index()] {
            let Some(instance) = instances[index].as_mut() else {
                continue; // a plugin in the chain has an NHRP hook, hence an instance
            };
            let result = instance.invoke(Hook::Shortcut, now, set.quarantine(), 0, |b, store| {
                b.call_shortcut_policy(store, &wit_req)
            });
            match result {
                Ok(wit::ShortcutVerdict::Allow) => {}
                Ok(wit::ShortcutVerdict::Deny) => {
                    StatsShard::add(&instance.shard.shortcut_denials, 1);
                    return ShortcutVerdict::Deny;
                }
                Err(()) if instance.plugin.spec.failure == FailurePolicy::Closed => {
                    return ShortcutVerdict::Deny;
                }
                Err(()) => {}
            }
        }
        ShortcutVerdict::Allow
    }

    /// [`shortcut_policy`](ControlHooks::shortcut_policy) for a `kind` from `src` to `dst`
    /// (overlay addresses), as a yes/no: `true` to let it happen.
    pub fn shortcut_allowed(
        &mut self,
        now: Instant,
        kind: ShortcutKind,
        src: IpAddr,
        dst: IpAddr,
    ) -> bool {
        let req = ShortcutRequest { kind, src, dst };
        self.shortcut_policy(now, &req) == ShortcutVerdict::Allow
    }

    fn has(&self, hook: Hook) -> bool {
        !self.set.chains[hook.index()].is_empty() || self.set.closed_unavailable_for(hook)
    }
}

fn unavailable_refusal(set: &PluginSet) -> Admission {
    Admission::Refuse(Refusal {
        code: ADMINISTRATIVELY_PROHIBITED,
        reason: format!(
            "fail-closed plugin(s) {} have no version to serve",
            set.closed_unavailable().join(", ")
        ),
    })
}

fn registration_to_wit(req: &Registration) -> wit::Registration {
    wit::Registration {
        prefixes: req.prefixes.iter().map(ToString::to_string).collect(),
        nbma: req.nbma.to_string(),
        source: req.source.to_string(),
        nat: req.nat,
        holding_time: req.holding_time,
        unique: req.unique,
    }
}

fn admission_from_wit(a: wit::Admission) -> Admission {
    match a {
        wit::Admission::Accept(a) => Admission::Accept(AdmissionAttributes {
            qos_group: a.qos_group.map(|g| QosGroup {
                id: g.id,
                name: g.name,
            }),
            multicast: a.multicast,
            holding_time_cap: a.holding_time_cap,
        }),
        wit::Admission::Refuse(r) => Admission::Refuse(Refusal {
            code: r.code,
            reason: r.reason,
        }),
    }
}
