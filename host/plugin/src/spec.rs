//! What the daemon tells the plugin host: which plugins to load with which limits and
//! failure policies ([`PluginSpec`]), and the site facts every plugin's `init` receives
//! ([`SiteContext`]). Plain data: no I/O, no wasm.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// One plugin to load, in chain order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginSpec {
    /// Unique name, used in logs, metrics and `mgre show`.
    pub name: String,
    /// The `.wasm` file: a core module built for `wasm32-unknown-unknown` with `wit-bindgen`
    /// (componentized at load time) or a component of world `mgre:policy/plugin@0.2.0`.
    pub path: PathBuf,
    /// Hooks to use; `None` uses every hook the plugin declares. A hook is called only if
    /// the plugin declares it and this selects it.
    pub hooks: Option<Hooks>,
    /// What happens to a batch (or an NHRP decision) when the plugin fails on it.
    pub failure: FailurePolicy,
    /// Cap on the plugin's linear memory, including its initial size (a Rust guest starts
    /// at about 1.1 MiB).
    pub memory_limit_bytes: usize,
    /// CPU deadline per hook call, enforced by epoch interruption (rounded up to the
    /// runtime's tick, plus one tick).
    pub deadline: Duration,
    /// The plugin's own configuration, handed to `init` as JSON.
    pub config_json: String,
}

/// What the host does when a plugin fails on a call (trap, deadline, memory cap, malformed
/// verdicts) or is quarantined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FailurePolicy {
    /// As if the plugin had no opinion: forward the batch, accept the registration (without
    /// this plugin's attributes), allow the shortcut.
    #[default]
    Open,
    /// Drop the batch's packets (`PolicyVerdict::failed_closed`), refuse the registration
    /// (administratively prohibited), deny the shortcut.
    Closed,
}

/// One policy hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Assigns a class id.
    Classify,
    /// QoS marking.
    Mark,
    /// Routing policy.
    Route,
    /// NHRP registration admission (control path, hubs).
    Admission,
    /// NHRP redirect/shortcut policy (control path).
    Shortcut,
}

impl Hook {
    /// All hooks: the packet hooks in the order the chain runs them, then the NHRP hooks.
    pub const ALL: [Hook; 5] = [
        Hook::Classify,
        Hook::Mark,
        Hook::Route,
        Hook::Admission,
        Hook::Shortcut,
    ];

    /// The hooks the dataplane runs per batch, in chain order.
    pub const PACKET: [Hook; 3] = [Hook::Classify, Hook::Mark, Hook::Route];

    /// The hooks the NHRP control thread runs ([`crate::ControlHooks`]).
    pub const CONTROL: [Hook; 2] = [Hook::Admission, Hook::Shortcut];

    /// The hook's WIT name.
    pub const fn name(self) -> &'static str {
        match self {
            Hook::Classify => "classify",
            Hook::Mark => "mark",
            Hook::Route => "route",
            Hook::Admission => "admission",
            Hook::Shortcut => "shortcut",
        }
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            Hook::Classify => 0,
            Hook::Mark => 1,
            Hook::Route => 2,
            Hook::Admission => 3,
            Hook::Shortcut => 4,
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown hook name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown hook {0:?} (expected classify, mark, route, admission or shortcut)")]
pub struct UnknownHook(pub String);

impl FromStr for Hook {
    type Err = UnknownHook;

    fn from_str(s: &str) -> Result<Hook, UnknownHook> {
        Hook::ALL
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or_else(|| UnknownHook(s.to_owned()))
    }
}

/// A set of hooks.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Hooks(u8);

impl Hooks {
    /// No hook.
    pub const NONE: Hooks = Hooks(0);
    /// Every hook.
    pub const ALL: Hooks = Hooks(0b1_1111);

    /// The set holding `hook`.
    pub const fn only(hook: Hook) -> Hooks {
        Hooks(1 << hook.index())
    }

    /// Whether `hook` is in the set.
    pub const fn contains(self, hook: Hook) -> bool {
        self.0 & (1 << hook.index()) != 0
    }

    /// This set plus `hook`.
    #[must_use]
    pub const fn with(self, hook: Hook) -> Hooks {
        Hooks(self.0 | 1 << hook.index())
    }

    /// Hooks in both sets.
    #[must_use]
    pub const fn intersection(self, other: Hooks) -> Hooks {
        Hooks(self.0 & other.0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The hooks in the set, in chain order.
    pub fn iter(self) -> impl Iterator<Item = Hook> {
        Hook::ALL.into_iter().filter(move |h| self.contains(*h))
    }
}

impl FromIterator<Hook> for Hooks {
    fn from_iter<I: IntoIterator<Item = Hook>>(iter: I) -> Hooks {
        iter.into_iter().fold(Hooks::NONE, Hooks::with)
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for h in self.iter() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(h.name())?;
        }
        Ok(())
    }
}

/// This site's role in the DMVPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A hub (NHS).
    Hub,
    /// A spoke.
    Spoke,
}

impl Role {
    /// The WIT spelling (`"hub"` / `"spoke"`).
    pub const fn name(self) -> &'static str {
        match self {
            Role::Hub => "hub",
            Role::Spoke => "spoke",
        }
    }
}

/// A peer of the tunnel, as route verdicts name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Id used in packet and verdict slots.
    pub id: u16,
    /// Operator-given name.
    pub name: String,
    /// Underlay (NBMA) address.
    pub nbma: String,
    /// Overlay prefixes behind the peer.
    pub prefixes: Vec<String>,
}

/// The site facts every plugin's `init` receives besides its own config. A change here
/// re-initialises every plugin on the next reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteContext {
    /// Hub or spoke.
    pub role: Role,
    /// This site's overlay addresses.
    pub addresses: Vec<String>,
    /// The tunnel's configured peers.
    pub peers: Vec<Peer>,
}

impl Default for SiteContext {
    fn default() -> SiteContext {
        SiteContext {
            role: Role::Spoke,
            addresses: Vec::new(),
            peers: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_sets() {
        let h: Hooks = [Hook::Route, Hook::Classify].into_iter().collect();
        assert_eq!(h.to_string(), "classify,route");
        assert!(!h.contains(Hook::Mark));
        assert_eq!(
            h.intersection(Hooks::only(Hook::Route)),
            Hooks::only(Hook::Route)
        );
        assert_eq!("mark".parse::<Hook>(), Ok(Hook::Mark));
        assert_eq!("admission".parse::<Hook>(), Ok(Hook::Admission));
        assert_eq!(Hook::ALL.into_iter().collect::<Hooks>(), Hooks::ALL);
        assert_eq!(
            Hooks::ALL.to_string(),
            "classify,mark,route,admission,shortcut"
        );
        assert!("qos".parse::<Hook>().is_err());
    }
}
