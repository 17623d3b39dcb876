//! What a plugin author implements ([`Plugin`]) and the plain types it exchanges with the host
//! at initialisation ([`InitContext`] in, [`Info`] out). These mirror the WIT records of
//! `wit/policy.wit` so that plugin code and its native tests never touch generated bindings.
//!
//! Nothing here runs per packet except the trait's hook methods themselves.

use std::fmt;
use std::net::IpAddr;
use std::ops::{BitOr, BitOrAssign};

use serde::de::DeserializeOwned;

use crate::abi::{Classify, Mark, Packet, Route};
use crate::net::Prefix;
use crate::nhrp::{Admission, Registration, ShortcutRequest, ShortcutVerdict};

/// A policy plugin: built once per instance by [`Plugin::init`], then asked for one verdict
/// per packet by the hooks it declares in [`Info::hooks`].
///
/// Register the type with [`export_plugin!`](crate::export_plugin). The host calls hooks
/// with batches; the SDK calls the methods below once per packet of the batch and encodes the
/// verdicts, without allocating per packet. Hook methods should not allocate or log either;
/// count with [`counter_add`](crate::counter_add) instead.
///
/// The NHRP hooks ([`Plugin::admit_registration`], [`Plugin::shortcut_policy`]) run on the
/// daemon's control thread, once per registration or resolution, with typed values.
///
/// A hook the plugin does not declare is never called by the host; its default method
/// returns the "no opinion" verdict (accept without attributes, allow).
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from its context (config, peers). An `Err` rejects the plugin; make
    /// the message say exactly which config key is wrong and why.
    fn init(ctx: InitContext) -> Result<(Self, Info), String>;

    /// Assigns a traffic class (one of [`Info::classes`], or 0 for no opinion).
    fn classify(&mut self, packet: Packet<'_>) -> Classify {
        let _ = packet;
        Classify::default()
    }

    /// Sets QoS marks (DSCP, priority, rate class); `packet.class()` is the class so far.
    fn mark(&mut self, packet: Packet<'_>) -> Mark {
        let _ = packet;
        Mark::default()
    }

    /// Overrides the forwarding decision (via hub, a peer, drop, local delivery).
    fn route(&mut self, packet: Packet<'_>) -> Route {
        let _ = packet;
        Route::default()
    }

    /// On a hub: admits (with attributes: QoS group, multicast, holding-time cap) or refuses
    /// one NHRP registration, refreshes included. Declare [`Hooks::ADMISSION`].
    fn admit_registration(&mut self, req: &Registration) -> Admission {
        let _ = req;
        Admission::accept()
    }

    /// Allows or denies one redirect or shortcut between two overlay addresses. Declare
    /// [`Hooks::SHORTCUT`].
    fn shortcut_policy(&mut self, req: &ShortcutRequest) -> ShortcutVerdict {
        let _ = req;
        ShortcutVerdict::Allow
    }
}

/// What `init` receives: the plugin's config and a description of the tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitContext {
    /// The plugin's own config section as JSON (`{}` when it has none); see
    /// [`InitContext::parse_config`].
    pub config: String,
    /// This site's role.
    pub role: Role,
    /// This site's overlay (tunnel) addresses.
    pub addresses: Vec<IpAddr>,
    /// The tunnel's peers.
    pub peers: Vec<PeerInfo>,
}

impl InitContext {
    /// Deserialises [`InitContext::config`]; an empty string or `null` reads as `{}`.
    ///
    /// The error names the offending key by path, e.g.
    /// ``config key `rule[2].dst-port`: invalid port or port range `80-20`: the first port is
    /// above the last``, because the operator wrote TOML and the JSON's line numbers mean
    /// nothing to them.
    pub fn parse_config<T: DeserializeOwned>(&self) -> Result<T, String> {
        let text = match self.config.trim() {
            "" | "null" => "{}",
            t => t,
        };
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // serde_json appends " at line L column C" of the generated JSON: drop it.
            let msg = inner.to_string();
            let msg = match msg.rfind(" at line ") {
                Some(i) if inner.line() != 0 => msg[..i].to_string(),
                _ => msg,
            };
            if path == "." {
                format!("config: {msg}")
            } else {
                format!("config key `{path}`: {msg}")
            }
        })
    }

    /// The peer called `name`.
    pub fn peer_named(&self, name: &str) -> Option<&PeerInfo> {
        self.peers.iter().find(|p| p.name == name)
    }

    /// The peer with id `id`.
    pub fn peer(&self, id: u16) -> Option<&PeerInfo> {
        self.peers.iter().find(|p| p.id == id)
    }
}

/// This site's role in the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The next-hop server that spokes register with and that forwards between them.
    Hub,
    /// A site behind a hub.
    Spoke,
}

impl Role {
    /// `"hub"` or `"spoke"`, as in the WIT record and the mgre config.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hub => "hub",
            Role::Spoke => "spoke",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer of the tunnel, as packet slots (`ingress_peer`, `egress_peer`) and route verdicts
/// (`RouteAction::Peer`) name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Id used in packet and verdict slots.
    pub id: u16,
    /// Operator-given name (`[[peer]] name` in the mgre config).
    pub name: String,
    /// Underlay (NBMA) address.
    pub nbma: IpAddr,
    /// Overlay prefixes behind the peer (its `map`).
    pub prefixes: Vec<Prefix>,
}

/// What `init` returns: who the plugin is and what it may report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// Plugin name (shown in `mgre show`, logs and metrics).
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Hooks the plugin implements; the host calls only these.
    pub hooks: Hooks,
    /// Classes the plugin may assign: `(id, name)`, ids non-zero and distinct.
    pub classes: Vec<(u32, String)>,
    /// Counter names; [`counter_add`](crate::counter_add) ids index this list.
    pub counters: Vec<String>,
}

impl Info {
    /// An `Info` without classes or counters, e.g.
    /// `Info::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), Hooks::ROUTE)`.
    pub fn new(name: impl Into<String>, version: impl Into<String>, hooks: Hooks) -> Info {
        Info {
            name: name.into(),
            version: version.into(),
            hooks,
            classes: Vec::new(),
            counters: Vec::new(),
        }
    }

    /// Checks what the host relies on: class ids are non-zero and distinct.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (i, (id, name)) in self.classes.iter().enumerate() {
            if *id == 0 {
                return Err(format!("class `{name}` has id 0, which means \"no class\""));
            }
            if self.classes[..i].iter().any(|(other, _)| other == id) {
                return Err(format!("class id {id} is declared twice"));
            }
        }
        Ok(())
    }
}

/// A set of hooks: `Hooks::CLASSIFY | Hooks::MARK`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Hooks(u8);

impl Hooks {
    /// No hook.
    pub const NONE: Hooks = Hooks(0);
    /// The classify hook.
    pub const CLASSIFY: Hooks = Hooks(1);
    /// The mark (QoS) hook.
    pub const MARK: Hooks = Hooks(2);
    /// The route hook.
    pub const ROUTE: Hooks = Hooks(4);
    /// The NHRP registration admission hook ([`Plugin::admit_registration`]).
    pub const ADMISSION: Hooks = Hooks(8);
    /// The NHRP shortcut policy hook ([`Plugin::shortcut_policy`]).
    pub const SHORTCUT: Hooks = Hooks(16);

    /// Whether every hook of `other` is in `self`.
    pub const fn contains(self, other: Hooks) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Hooks {
    type Output = Hooks;
    fn bitor(self, rhs: Hooks) -> Hooks {
        Hooks(self.0 | rhs.0)
    }
}

impl BitOrAssign for Hooks {
    fn bitor_assign(&mut self, rhs: Hooks) {
        self.0 |= rhs.0;
    }
}
