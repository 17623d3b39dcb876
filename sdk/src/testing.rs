//! Native unit tests for plugins: packets from readable values ([`udp`], [`tcp`], [`ip`]), NHRP
//! registrations ([`registration`]), an init context with peers ([`context`]), config
//! straight from a README ([`readme_config`]), and a [`Harness`] that drives a plugin through
//! the same glue as the wasm exports (WIT records, 64-byte slots, encoded verdicts, buffered
//! counters).
//!
//! Test helpers: they panic on malformed input and on plugin mistakes the host would punish
//! (an undeclared hook or counter). Counters and logs are kept per thread; each `#[test]` runs
//! on its own thread. Not available in wasm.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::abi::{
    CLASSIFY_SLOT, Classify, Direction, MARK_SLOT, Mark, PACKET_SLOT, PacketMeta, ROUTE_SLOT, Route,
};
use crate::bindings::mgre::policy::types as wit;
use crate::glue::{Runner, hook_pairs};
use crate::host::{Level, imp};
use crate::net::Prefix;
use crate::nhrp::{
    Admission, AdmissionAttributes, QosGroup, Refusal, Registration, ShortcutKind, ShortcutRequest,
    ShortcutVerdict,
};
use crate::plugin::{Hooks, Info, InitContext, PeerInfo, Plugin, Role};

/// A UDP packet from `src` to `dst`, each `addr:port` (`[v6]:port` for IPv6); outbound, from
/// this site's TUN, DSCP 0, DF set, 100 bytes.
pub fn udp(src: &str, dst: &str) -> PacketBuilder {
    PacketBuilder::with_ports(17, src, dst)
}

/// A TCP packet from `src` to `dst` (`addr:port`); otherwise like [`udp`].
pub fn tcp(src: &str, dst: &str) -> PacketBuilder {
    PacketBuilder::with_ports(6, src, dst)
}

/// A packet of IP protocol `protocol` (e.g. 1 for ICMP) from `src` to `dst` (bare
/// addresses), without ports; otherwise like [`udp`].
pub fn ip(protocol: u8, src: &str, dst: &str) -> PacketBuilder {
    let (src, dst) = (
        parse::<IpAddr>(src, "address"),
        parse::<IpAddr>(dst, "address"),
    );
    PacketBuilder::new(protocol, src, dst, 0, 0)
}

/// A packet slot under construction; every method changes one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketBuilder(PacketMeta);

impl PacketBuilder {
    fn new(protocol: u8, src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> Self {
        assert_eq!(
            src.is_ipv4(),
            dst.is_ipv4(),
            "source and destination families differ"
        );
        PacketBuilder(PacketMeta {
            direction: Direction::Outbound,
            protocol,
            traffic_class: 0,
            src_port,
            dst_port,
            length: 100,
            tcp_flags: 0,
            later_fragment: false,
            dont_fragment: true,
            ingress_peer: None,
            egress_peer: None,
            gre_key: None,
            class: 0,
            src,
            dst,
        })
    }

    fn with_ports(protocol: u8, src: &str, dst: &str) -> Self {
        let (src, dst) = (
            parse::<SocketAddr>(src, "addr:port"),
            parse::<SocketAddr>(dst, "addr:port"),
        );
        PacketBuilder::new(protocol, src.ip(), dst.ip(), src.port(), dst.port())
    }

    /// DSCP (0–63); keeps the ECN bits.
    pub fn dscp(mut self, dscp: u8) -> Self {
        assert!(dscp < 64, "DSCP {dscp} is above 63");
        self.0.traffic_class = dscp << 2 | (self.0.traffic_class & 3);
        self
    }

    /// ECN codepoint (0–3); keeps the DSCP.
    pub fn ecn(mut self, ecn: u8) -> Self {
        assert!(ecn < 4, "ECN {ecn} is above 3");
        self.0.traffic_class = (self.0.traffic_class & !3) | ecn;
        self
    }

    /// Direction.
    pub fn direction(mut self, direction: Direction) -> Self {
        self.0.direction = direction;
        self
    }

    /// Received from peer `peer` (default: from this site's TUN).
    pub fn ingress(mut self, peer: u16) -> Self {
        self.0.ingress_peer = Some(peer);
        self
    }

    /// The endpoint table chose peer `peer` (default: none, local delivery).
    pub fn egress(mut self, peer: u16) -> Self {
        self.0.egress_peer = Some(peer);
        self
    }

    /// Class so far, as set by an earlier classify hook.
    pub fn class(mut self, class: u32) -> Self {
        self.0.class = class;
        self
    }

    /// IP total length.
    pub fn length(mut self, length: u16) -> Self {
        self.0.length = length;
        self
    }

    /// TCP flags.
    pub fn tcp_flags(mut self, flags: u8) -> Self {
        self.0.tcp_flags = flags;
        self
    }

    /// GRE key of the received packet.
    pub fn gre_key(mut self, key: u32) -> Self {
        self.0.gre_key = Some(key);
        self
    }

    /// A later fragment: the host cannot see its ports, so they read as 0.
    pub fn later_fragment(mut self) -> Self {
        self.0.later_fragment = true;
        self.0.src_port = 0;
        self.0.dst_port = 0;
        self
    }

    /// The packet as a value.
    pub fn meta(self) -> PacketMeta {
        self.0
    }

    /// The packet as a 64-byte slot.
    pub fn slot(self) -> [u8; PACKET_SLOT] {
        let mut slot = [0; PACKET_SLOT];
        self.0.write(&mut slot);
        slot
    }
}

impl From<PacketBuilder> for PacketMeta {
    fn from(p: PacketBuilder) -> PacketMeta {
        p.0
    }
}

/// A batch as the host sends it: the packets' 64-byte slots back to back.
pub fn batch<T: Into<PacketMeta>>(packets: impl IntoIterator<Item = T>) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        let mut slot = [0; PACKET_SLOT];
        p.into().write(&mut slot);
        out.extend_from_slice(&slot);
    }
    out
}

/// A registration of `prefixes` (`"net/len"`, a bare address is a host prefix) by a spoke
/// at NBMA address `nbma`, not behind NAT (`source` = `nbma`), holding time 7200 s, unique
/// flag clear.
pub fn registration(prefixes: &[&str], nbma: &str) -> RegistrationBuilder {
    let nbma = parse(nbma, "NBMA address");
    RegistrationBuilder(Registration {
        prefixes: prefixes
            .iter()
            .map(|p| parse::<Prefix>(p, "prefix"))
            .collect(),
        nbma,
        source: nbma,
        nat: false,
        holding_time: 7200,
        unique: false,
    })
}

/// A [`Registration`] under construction; see [`registration`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationBuilder(Registration);

impl RegistrationBuilder {
    /// The request came from `source` (behind NAT): sets the NAT flag too.
    pub fn behind_nat(mut self, source: &str) -> Self {
        self.0.source = parse(source, "source address");
        self.0.nat = true;
        self
    }

    /// The requested holding time, in seconds.
    pub fn holding_time(mut self, seconds: u16) -> Self {
        self.0.holding_time = seconds;
        self
    }

    /// Sets the unique flag.
    pub fn unique(mut self) -> Self {
        self.0.unique = true;
        self
    }

    /// The registration.
    pub fn build(self) -> Registration {
        self.0
    }
}

impl From<RegistrationBuilder> for Registration {
    fn from(b: RegistrationBuilder) -> Registration {
        b.0
    }
}

/// An [`InitContext`] builder: role spoke, no addresses, no peers, config `{}`.
pub fn context() -> ContextBuilder {
    ContextBuilder(InitContext {
        config: "{}".into(),
        role: Role::Spoke,
        addresses: Vec::new(),
        peers: Vec::new(),
    })
}

/// Builds an [`InitContext`]; see [`context`].
#[derive(Clone, Debug)]
pub struct ContextBuilder(InitContext);

impl ContextBuilder {
    /// The plugin config as JSON.
    pub fn config(mut self, json: &str) -> Self {
        self.0.config = json.into();
        self
    }

    /// The plugin config as the TOML the operator writes under `[plugin.config]`; converted
    /// to JSON like the daemon does.
    pub fn config_toml(mut self, toml: &str) -> Self {
        let table: toml::Table = toml::from_str(toml).unwrap_or_else(|e| panic!("bad TOML: {e}"));
        self.0.config = to_json(&table);
        self
    }

    /// This site's role.
    pub fn role(mut self, role: Role) -> Self {
        self.0.role = role;
        self
    }

    /// Adds an overlay address of this site (`198.51.100.11` or `198.51.100.11/24`).
    pub fn address(mut self, address: &str) -> Self {
        let a = address.split_once('/').map_or(address, |(a, _)| a);
        self.0.addresses.push(parse(a, "address"));
        self
    }

    /// Adds a peer with its id, name, NBMA address and the prefixes behind it.
    pub fn peer(mut self, id: u16, name: &str, nbma: &str, prefixes: &[&str]) -> Self {
        self.0.peers.push(PeerInfo {
            id,
            name: name.into(),
            nbma: parse(nbma, "NBMA address"),
            prefixes: prefixes
                .iter()
                .map(|p| parse::<Prefix>(p, "prefix"))
                .collect(),
        });
        self
    }

    /// The context.
    pub fn build(self) -> InitContext {
        self.0
    }
}

/// The `config` table of the `[[plugin]]` named `plugin` in the first ` ```toml ` block of
/// `markdown` that has one, as JSON. Lets a plugin's tests load the exact example its README
/// shows:
///
/// ```toml
/// [[plugin]]
/// name = "voip-qos"
/// file = "voip_qos.wasm"
///
/// [plugin.config]
/// ttl-ms = 5000
/// ```
pub fn readme_config(markdown: &str, plugin: &str) -> String {
    for block in markdown.split("```toml").skip(1) {
        let Some((block, _)) = block.split_once("```") else {
            continue;
        };
        let doc: toml::Table = toml::from_str(block)
            .unwrap_or_else(|e| panic!("a ```toml block does not parse: {e}\n{block}"));
        let plugins = doc.get("plugin").and_then(toml::Value::as_array);
        for p in plugins.into_iter().flatten() {
            if p.get("name").and_then(toml::Value::as_str) == Some(plugin) {
                return match p.get("config") {
                    Some(config) => to_json(config),
                    None => "{}".into(),
                };
            }
        }
    }
    panic!("no ```toml block declares a [[plugin]] named `{plugin}`")
}

/// What the plugin counted on this thread so far (buffered deltas included), by counter id.
pub fn counters() -> Vec<u64> {
    crate::host::flush_counters();
    imp::counters()
}

/// What the plugin logged on this thread so far.
pub fn logs() -> Vec<(Level, String)> {
    imp::logs()
}

/// Forgets this thread's counters and logs ([`Harness::init`] does this).
pub fn reset() {
    imp::reset();
}

/// Drives a plugin exactly like the wasm exports do: `init` goes through the WIT records,
/// hooks get encoded 64-byte slots and return encoded verdicts, counters are buffered and
/// flushed per call. The typed methods decode the verdicts again.
pub struct Harness<P> {
    runner: Runner<P>,
    info: Info,
}

impl<P: Plugin> Harness<P> {
    /// Initialises the plugin as the host would; resets this thread's counters and logs.
    pub fn init(ctx: InitContext) -> Result<Harness<P>, String> {
        reset();
        let mut runner = Runner::new();
        let info = runner.init(context_to_wit(&ctx))?;
        let harness = Harness {
            runner,
            info: info_from_wit(info),
        };
        harness.check_counters();
        Ok(harness)
    }

    /// What `init` returned.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The plugin itself.
    pub fn plugin(&mut self) -> &mut P {
        self.runner
            .plugin()
            .expect("a harness exists only after a successful init")
    }

    /// Runs the classify hook over a batch.
    pub fn classify<T: Into<PacketMeta>>(
        &mut self,
        packets: impl IntoIterator<Item = T>,
    ) -> Vec<Classify> {
        self.require(Hooks::CLASSIFY, "classify");
        let batch = batch(packets);
        let out = self.runner.classify(&batch).to_vec();
        self.check_counters();
        out.as_chunks::<CLASSIFY_SLOT>()
            .0
            .iter()
            .map(Classify::read)
            .collect()
    }

    /// Runs the mark hook over a batch.
    pub fn mark<T: Into<PacketMeta>>(&mut self, packets: impl IntoIterator<Item = T>) -> Vec<Mark> {
        self.require(Hooks::MARK, "mark");
        let batch = batch(packets);
        let out = self.runner.mark(&batch).to_vec();
        self.check_counters();
        out.as_chunks::<MARK_SLOT>()
            .0
            .iter()
            .map(Mark::read)
            .collect()
    }

    /// Runs the route hook over a batch.
    pub fn route<T: Into<PacketMeta>>(
        &mut self,
        packets: impl IntoIterator<Item = T>,
    ) -> Vec<Route> {
        self.require(Hooks::ROUTE, "route");
        let batch = batch(packets);
        let out = self.runner.route(&batch).to_vec();
        self.check_counters();
        out.as_chunks::<ROUTE_SLOT>()
            .0
            .iter()
            .map(Route::read)
            .collect()
    }

    /// Runs the admission hook on one registration (through the WIT records).
    pub fn admit(&mut self, req: impl Into<Registration>) -> Admission {
        self.require(Hooks::ADMISSION, "admission");
        let out = self
            .runner
            .admit_registration(registration_to_wit(&req.into()));
        self.check_counters();
        admission_from_wit(out)
    }

    /// Runs the shortcut hook on one request; `src` and `dst` are bare overlay addresses.
    pub fn shortcut(&mut self, kind: ShortcutKind, src: &str, dst: &str) -> ShortcutVerdict {
        self.require(Hooks::SHORTCUT, "shortcut");
        let req = ShortcutRequest {
            kind,
            src: parse(src, "address"),
            dst: parse(dst, "address"),
        };
        let out = self.runner.shortcut_policy(wit::ShortcutRequest {
            kind: match req.kind {
                ShortcutKind::Redirect => wit::ShortcutKind::Redirect,
                ShortcutKind::Resolution => wit::ShortcutKind::Resolution,
            },
            src: req.src.to_string(),
            dst: req.dst.to_string(),
        });
        self.check_counters();
        match out {
            wit::ShortcutVerdict::Allow => ShortcutVerdict::Allow,
            wit::ShortcutVerdict::Deny => ShortcutVerdict::Deny,
        }
    }

    /// Classifies one packet.
    pub fn classify_one(&mut self, packet: impl Into<PacketMeta>) -> Classify {
        self.classify([packet.into()])[0]
    }

    /// Marks one packet.
    pub fn mark_one(&mut self, packet: impl Into<PacketMeta>) -> Mark {
        self.mark([packet.into()])[0]
    }

    /// Routes one packet.
    pub fn route_one(&mut self, packet: impl Into<PacketMeta>) -> Route {
        self.route([packet.into()])[0]
    }

    /// The value of the counter named `name`, which the plugin must declare.
    pub fn counter(&self, name: &str) -> u64 {
        let id = self
            .info
            .counters
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no counter `{name}`; declared: {:?}", self.info.counters));
        counters().get(id).copied().unwrap_or(0)
    }

    /// The id of the class named `name`, which the plugin must declare.
    pub fn class_id(&self, name: &str) -> u32 {
        self.info
            .classes
            .iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| *id)
            .unwrap_or_else(|| panic!("no class `{name}`; declared: {:?}", self.info.classes))
    }

    /// What the plugin logged since `init`.
    pub fn logs(&self) -> Vec<(Level, String)> {
        logs()
    }

    fn require(&self, hook: Hooks, name: &str) {
        assert!(
            self.info.hooks.contains(hook),
            "the plugin does not declare the {name} hook, so the host would never call it"
        );
    }

    fn check_counters(&self) {
        let used = imp::counters().len();
        assert!(
            used <= self.info.counters.len(),
            "the plugin counted on counter id {} but declares only {:?}",
            used - 1,
            self.info.counters
        );
    }
}

impl<P> fmt::Debug for Harness<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn parse<T: std::str::FromStr<Err: fmt::Display>>(s: &str, what: &str) -> T {
    s.parse()
        .unwrap_or_else(|e| panic!("bad {what} `{s}`: {e}"))
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("TOML values convert to JSON")
}

/// The context as the host sends it.
pub(crate) fn context_to_wit(ctx: &InitContext) -> wit::InitContext {
    wit::InitContext {
        config: ctx.config.clone(),
        role: ctx.role.as_str().into(),
        addresses: ctx.addresses.iter().map(ToString::to_string).collect(),
        peers: ctx
            .peers
            .iter()
            .map(|p| wit::PeerInfo {
                id: p.id,
                name: p.name.clone(),
                nbma: p.nbma.to_string(),
                prefixes: p.prefixes.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    }
}

/// The registration as the host sends it.
pub(crate) fn registration_to_wit(req: &Registration) -> wit::Registration {
    wit::Registration {
        prefixes: req.prefixes.iter().map(ToString::to_string).collect(),
        nbma: req.nbma.to_string(),
        source: req.source.to_string(),
        nat: req.nat,
        holding_time: req.holding_time,
        unique: req.unique,
    }
}

/// The admission as the host receives it.
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

/// The info as the host receives it.
fn info_from_wit(info: wit::PluginInfo) -> Info {
    let mut hooks = Hooks::NONE;
    for (ours, theirs) in hook_pairs() {
        if info.hooks.bits() & theirs.bits() != 0 {
            hooks |= ours;
        }
    }
    Info {
        name: info.name,
        version: info.version,
        hooks,
        classes: info.classes.into_iter().map(|c| (c.id, c.name)).collect(),
        counters: info.counters,
    }
}
