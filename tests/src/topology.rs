//! The reference topology of `docs/contract.md`, built out of network namespaces.
//!
//! One underlay namespace holds a Linux bridge; the hub and each spoke are router
//! namespaces with a veth into that bridge (underlay 192.0.2.0/24) and a veth to a LAN-host
//! namespace behind them. [`TopologyBuilder`] also renders every site's `mgre` config, and
//! [`Topology`] starts and stops the daemons. Every device is created directly inside a
//! namespace the topology owns (`ip -n`); nothing is ever added to the host's namespace,
//! and only documentation addresses are used. Dropping a [`Topology`] — also while a test
//! unwinds — stops its daemons, then deletes its namespaces and scratch directory.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use anyhow::{Context, Result, bail};

use crate::daemon::Daemon;
use crate::names::{Namer, TempDir};
use crate::netns::Netns;
use crate::plugins::{PluginEntry, plugins_section, quote};

mod nat;
mod nhrp;
pub use nat::{nat_gateway, nat_private_nbma, nat_public_nbma};

/// How a spoke and the hub encapsulate traffic between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encap {
    /// Plain GRE, IP protocol 47.
    #[default]
    Gre,
    /// GRE-in-UDP (RFC 8086).
    GreUdp,
}

impl Encap {
    /// The config spelling: `"gre"` or `"gre-udp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gre => "gre",
            Self::GreUdp => "gre-udp",
        }
    }
}

/// One site of the reference topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteId {
    /// The hub (underlay .1, LAN 203.0.113.192/26).
    Hub,
    /// Spoke `k`, 1 ..= [`MAX_SPOKES`].
    Spoke(usize),
    /// A second hub (underlay .2, the same LAN addresses as the hub), only in NHRP
    /// topologies built with [`TopologyBuilder::backup_hub`]: every spoke registers with
    /// both and prefers the hub.
    BackupHub,
}

impl SiteId {
    /// The `[[peer]] name` other sites use for this one: `hub`, `spoke1`, …
    pub fn peer_name(self) -> String {
        match self {
            Self::Hub => "hub".to_owned(),
            Self::Spoke(k) => format!("spoke{k}"),
            Self::BackupHub => "hub2".to_owned(),
        }
    }

    /// Index in device names: 0 for the hub, `k` for spoke `k`, [`MAX_SPOKES`] + 1 for the
    /// backup hub (also the order of [`Topology::sites`]).
    pub fn index(self) -> usize {
        match self {
            Self::Hub => 0,
            Self::Spoke(k) => k,
            Self::BackupHub => MAX_SPOKES + 1,
        }
    }
}

/// The addresses the contract assigns to a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteAddrs {
    /// Underlay (NBMA) address in 192.0.2.0/24.
    pub nbma: Ipv4Addr,
    /// Overlay address in 198.51.100.0/24.
    pub tunnel_v4: Ipv4Addr,
    /// Overlay address in 2001:db8:100::/64.
    pub tunnel_v6: Ipv6Addr,
    /// LAN network address (prefix length [`LAN_V4_LEN`]).
    pub lan_v4: Ipv4Addr,
    /// LAN network address (prefix length [`LAN_V6_LEN`]).
    pub lan_v6: Ipv6Addr,
    /// The router's (hub's or spoke's) LAN address, the LAN host's gateway.
    pub router_v4: Ipv4Addr,
    /// The router's IPv6 LAN address.
    pub router_v6: Ipv6Addr,
    /// The LAN host's address.
    pub host_v4: Ipv4Addr,
    /// The LAN host's IPv6 address.
    pub host_v6: Ipv6Addr,
}

impl SiteAddrs {
    /// The contract's addresses for `id`.
    ///
    /// # Panics
    /// For a spoke number outside 1 ..= [`MAX_SPOKES`].
    pub fn of(id: SiteId) -> Self {
        let (host_octet, lan_base, lan_v6_net) = match id {
            SiteId::Hub => (1u8, 192u8, 0xffu16),
            SiteId::BackupHub => (2u8, 192u8, 0xffu16),
            SiteId::Spoke(k) => {
                assert!(
                    (1..=MAX_SPOKES).contains(&k),
                    "spoke {k} outside 1..={MAX_SPOKES}"
                );
                let k = k as u8;
                (10 + k, 64 * (k - 1), u16::from(k))
            }
        };
        // The contract writes ::11 for spoke 1: the decimal digits read as hex.
        let tunnel_v6_host =
            u16::from_str_radix(&host_octet.to_string(), 16).expect("decimal digits are hex");
        let lan_v6 = Ipv6Addr::new(0x2001, 0xdb8, lan_v6_net, 0, 0, 0, 0, 0);
        let in_lan_v6 = |host: u16| Ipv6Addr::new(0x2001, 0xdb8, lan_v6_net, 0, 0, 0, 0, host);
        Self {
            nbma: Ipv4Addr::new(192, 0, 2, host_octet),
            tunnel_v4: Ipv4Addr::new(198, 51, 100, host_octet),
            tunnel_v6: Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, tunnel_v6_host),
            lan_v4: Ipv4Addr::new(203, 0, 113, lan_base),
            lan_v6,
            router_v4: Ipv4Addr::new(203, 0, 113, lan_base + 1),
            router_v6: in_lan_v6(1),
            host_v4: Ipv4Addr::new(203, 0, 113, lan_base + 2),
            host_v6: in_lan_v6(2),
        }
    }

    /// What a peer's `map` holds for this site: tunnel /32 and /128, LAN v4 and v6.
    pub fn map(&self) -> [String; 4] {
        [
            format!("{}/32", self.tunnel_v4),
            format!("{}/128", self.tunnel_v6),
            format!("{}/{LAN_V4_LEN}", self.lan_v4),
            format!("{}/{LAN_V6_LEN}", self.lan_v6),
        ]
    }
}

/// Per-spoke choices (the hub's `[[peer]]` for the spoke and the spoke's for the hub).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpokeOptions {
    /// Encapsulation between this spoke and the hub.
    pub encap: Encap,
    /// Per-peer GRE key on both ends (overrides the topology-wide key).
    pub key: Option<u32>,
}

/// NHRP mode of a topology: the hub runs an NHS with no `[[peer]]` for the spokes, and each
/// spoke is configured with nothing but the hub as its `[[nhrp.nhs]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NhrpOptions {
    /// `holdtime` on every site (seconds).
    pub holdtime: u16,
    /// `secret` on every site.
    pub secret: Option<String>,
    /// The hub's `allowed-nbma`.
    pub allowed_nbma: Vec<String>,
    /// The spokes' `failover-after` (absent: the daemon's default).
    pub failover_after: Option<u32>,
    /// DMVPN phase 3: `redirect` on the hubs and `shortcuts` on the spokes.
    pub shortcuts: bool,
    /// The spokes' `shortcut-idle` in seconds (absent: the daemon's default).
    pub shortcut_idle: Option<u64>,
}

impl Default for NhrpOptions {
    fn default() -> Self {
        NhrpOptions {
            holdtime: 30,
            secret: None,
            allowed_nbma: Vec::new(),
            failover_after: None,
            shortcuts: false,
            shortcut_idle: None,
        }
    }
}

/// Options of a [`Topology`]; also renders configs without building anything.
#[derive(Debug, Clone)]
pub struct TopologyBuilder {
    tag: String,
    spokes: Vec<SpokeOptions>,
    key: Option<u32>,
    checksum: Option<bool>,
    sequence: Option<bool>,
    offload: Option<bool>,
    metrics: bool,
    log: String,
    /// Spoke pairs with a direct `[[peer]]` for each other.
    direct: Vec<(usize, usize)>,
    /// `[[plugin]]` entries per site, in chain order.
    plugins: Vec<(SiteId, PluginEntry)>,
    /// Raw TOML appended to a site's config.
    extra: Vec<(SiteId, String)>,
    /// NHRP instead of static maps.
    nhrp: Option<NhrpOptions>,
    /// Spokes whose NHRP secret differs from the topology's.
    nhrp_secrets: Vec<(usize, String)>,
    /// Spokes whose underlay sits behind a masquerading NAT router.
    behind_nat: Vec<usize>,
    /// A second hub (NHRP only).
    backup_hub: bool,
    /// Regional hubs (spoke numbers) and the spokes registering with each (NHRP only).
    regions: Vec<(usize, Vec<usize>)>,
    /// Sites whose `tunnel.key` differs from the topology's.
    tunnel_keys: Vec<(SiteId, u32)>,
}

impl TopologyBuilder {
    /// Number of spokes (1 ..= [`MAX_SPOKES`]; default 2). Resets per-spoke options, so
    /// call it before [`Self::encap`] and [`Self::spoke_key`].
    pub fn spokes(mut self, count: usize) -> Self {
        assert!(
            (1..=MAX_SPOKES).contains(&count),
            "spokes must be 1..={MAX_SPOKES}"
        );
        self.spokes = vec![SpokeOptions::default(); count];
        self
    }

    /// Encapsulation between spoke `k` and the hub.
    pub fn encap(mut self, k: usize, encap: Encap) -> Self {
        self.spoke_mut(k).encap = encap;
        self
    }

    /// Per-peer GRE key between spoke `k` and the hub.
    pub fn spoke_key(mut self, k: usize, key: u32) -> Self {
        self.spoke_mut(k).key = Some(key);
        self
    }

    /// `[tunnel] key` on every site.
    pub fn key(mut self, key: u32) -> Self {
        self.key = Some(key);
        self
    }

    /// `[tunnel] checksum` on every site (absent: the daemon's default).
    pub fn checksum(mut self, on: bool) -> Self {
        self.checksum = Some(on);
        self
    }

    /// `[tunnel] sequence` on every site (absent: the daemon's default).
    pub fn sequence(mut self, on: bool) -> Self {
        self.sequence = Some(on);
        self
    }

    /// `[tunnel] offload` on every site (absent: the daemon's default, on).
    pub fn offload(mut self, on: bool) -> Self {
        self.offload = Some(on);
        self
    }

    /// Enables `[daemon] metrics` on every site at [`METRICS_ADDR`] (each site's own loopback).
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// `[daemon] log` filter on every site (default `debug`).
    pub fn log(mut self, filter: &str) -> Self {
        self.log = filter.to_owned();
        self
    }

    /// Gives spokes `a` and `b` a `[[peer]]` for each other (plain GRE, the topology-wide
    /// key, the other's `map`), so traffic between their LANs goes straight from one to the
    /// other instead of through the hub.
    ///
    /// # Panics
    /// If `a == b` or either is not a spoke of this builder (call [`Self::spokes`] first).
    pub fn direct(mut self, a: usize, b: usize) -> Self {
        assert_ne!(a, b, "a spoke cannot peer with itself");
        self.spoke_mut(a);
        self.spoke_mut(b);
        self.direct.push((a, b));
        self
    }

    /// Adds a `[[plugin]]` entry to site `id`'s config (after any added before: chain
    /// order). The first one also adds `[plugins] dir`, the site's [`Site::plugin_dir`].
    pub fn plugin(mut self, id: SiteId, entry: PluginEntry) -> Self {
        self.plugins.push((id, entry));
        self
    }

    /// Runs the topology with NHRP (see [`NhrpOptions`]) instead of static maps.
    pub fn nhrp(mut self, options: NhrpOptions) -> Self {
        self.nhrp = Some(options);
        self
    }

    /// Puts spoke `k` behind a NAT router namespace that masquerades (nftables) its underlay
    /// traffic: the spoke's own underlay address becomes [`nat_private_nbma`]`(k)` on a
    /// private /30, the NAT router's public address [`nat_public_nbma`]`(k)` on the
    /// underlay bridge. Only meaningful with [`Self::nhrp`] (the hub learns the spoke from
    /// its registrations).
    pub fn behind_nat(mut self, k: usize) -> Self {
        self.spoke_mut(k);
        self.behind_nat.push(k);
        self
    }

    /// Adds [`SiteId::BackupHub`]: a second NHS every spoke registers with (priority 2; the
    /// hub has 1). Only meaningful with [`Self::nhrp`].
    pub fn backup_hub(mut self) -> Self {
        self.backup_hub = true;
        self
    }

    /// Runs spoke `r` as a regional hub: a hub for spokes `members` (they register with it
    /// instead of the hub) and itself a client of the hub, with which it registers the
    /// smallest prefixes covering its region's LANs. Only meaningful with [`Self::nhrp`].
    pub fn regional_hub(mut self, r: usize, members: &[usize]) -> Self {
        for k in std::iter::once(r).chain(members.iter().copied()) {
            self.spoke_mut(k);
        }
        self.regions.push((r, members.to_vec()));
        self
    }

    /// Gives site `id` its own `tunnel.key` (with NHRP: puts it in another NBMA network).
    pub fn tunnel_key(mut self, id: SiteId, key: u32) -> Self {
        self.tunnel_keys.push((id, key));
        self
    }

    /// The addresses of site `id` in this topology (a spoke behind NAT has its private
    /// underlay address).
    pub fn addrs(&self, id: SiteId) -> SiteAddrs {
        let mut a = SiteAddrs::of(id);
        if let SiteId::Spoke(k) = id
            && self.behind_nat.contains(&k)
        {
            a.nbma = nat_private_nbma(k);
        }
        a
    }

    /// Gives spoke `k` its own NHRP `secret` (e.g. a wrong one).
    pub fn nhrp_secret(mut self, k: usize, secret: &str) -> Self {
        self.spoke_mut(k);
        self.nhrp_secrets.push((k, secret.to_owned()));
        self
    }

    /// Appends raw TOML to site `id`'s config, after the peers and plugins.
    pub fn site_toml(mut self, id: SiteId, toml: &str) -> Self {
        self.extra.push((id, toml.to_owned()));
        self
    }

    /// The sites this builder describes: the hub, then spokes 1 ..= N.
    pub fn site_ids(&self) -> Vec<SiteId> {
        std::iter::once(SiteId::Hub)
            .chain((1..=self.spokes.len()).map(SiteId::Spoke))
            .chain(self.backup_hub.then_some(SiteId::BackupHub))
            .collect()
    }

    /// The config TOML of site `id`, with control socket `socket` and TUN name `tun`.
    /// Metrics stay off. Pure: creates nothing.
    pub fn render_config(&self, id: SiteId, socket: &Path, tun: &str) -> String {
        let me = self.addrs(id);
        let mut toml = String::new();
        let mut line = |text: String| {
            toml.push_str(&text);
            toml.push('\n');
        };
        line("version = 1".into());
        line(String::new());
        line("[daemon]".into());
        line(format!("socket = {}", quote(&socket.display().to_string())));
        line(format!("log = {}", quote(&self.log)));
        if self.metrics {
            line(format!("metrics = {}", quote(METRICS_ADDR)));
        }
        // `MGRE_TEST_WORKERS=N` runs every daemon with N workers (the suite's multi-worker
        // pass); sequence numbers need one worker, so those topologies keep one.
        if let Some(n) = test_workers()
            && self.sequence != Some(true)
        {
            line(format!("workers = {n}"));
        }
        line(String::new());
        line("[tunnel]".into());
        line(format!("name = {}", quote(tun)));
        let hub_role = match id {
            SiteId::Hub | SiteId::BackupHub => true,
            SiteId::Spoke(k) => self.is_regional_hub(k),
        };
        let role = if hub_role { "hub" } else { "spoke" };
        line(format!("role = {}", quote(role)));
        line(format!(
            "address = {}",
            list(&[
                format!("{}/24", me.tunnel_v4),
                format!("{}/64", me.tunnel_v6)
            ])
        ));
        line(format!("nbma = {}", quote(&me.nbma.to_string())));
        let key = self
            .tunnel_keys
            .iter()
            .find(|(site, _)| *site == id)
            .map(|(_, k)| *k)
            .or(self.key);
        if let Some(key) = key {
            line(format!("key = {key}"));
        }
        if let Some(on) = self.checksum {
            line(format!("checksum = {on}"));
        }
        if let Some(on) = self.sequence {
            line(format!("sequence = {on}"));
        }
        if let Some(on) = self.offload {
            line(format!("offload = {on}"));
        }
        let nhrp = self.nhrp.as_ref();
        match (id, nhrp) {
            (SiteId::Hub | SiteId::BackupHub, None) => line("routes = []".into()),
            (SiteId::Hub | SiteId::BackupHub, Some(_)) => line(format!(
                "routes = {}",
                list(&SPOKE_ROUTES.map(str::to_owned))
            )),
            (SiteId::Spoke(_), _) => {
                line(format!(
                    "routes = {}",
                    list(&SPOKE_ROUTES.map(str::to_owned))
                ));
                if nhrp.is_none() {
                    line(format!("nhs = {}", quote("hub")));
                }
            }
        }
        if let Some(n) = nhrp {
            let section = self.nhrp_section(id, n);
            line(section.trim_end().to_owned());
        }
        let peers: Vec<(SiteId, SpokeOptions)> = match (id, nhrp) {
            (SiteId::Hub | SiteId::BackupHub, Some(_)) => Vec::new(),
            (SiteId::Hub | SiteId::BackupHub, None) => (1..=self.spokes.len())
                .map(|k| (SiteId::Spoke(k), self.spokes[k - 1]))
                .collect(),
            (SiteId::Spoke(k), Some(_)) => self
                .direct_partners(k)
                .map(|other| (SiteId::Spoke(other), SpokeOptions::default()))
                .collect(),
            (SiteId::Spoke(k), None) => std::iter::once((SiteId::Hub, self.spokes[k - 1]))
                .chain(self.direct_partners(k).map(|other| {
                    // Spoke to spoke: plain GRE and the topology-wide key on both ends.
                    (SiteId::Spoke(other), SpokeOptions::default())
                }))
                .collect(),
        };
        for (peer, options) in peers {
            let addrs = SiteAddrs::of(peer);
            line(String::new());
            line("[[peer]]".into());
            line(format!("name = {}", quote(&peer.peer_name())));
            line(format!("nbma = {}", quote(&addrs.nbma.to_string())));
            line(format!("encap = {}", quote(options.encap.as_str())));
            if let Some(key) = options.key {
                line(format!("key = {key}"));
            }
            line(format!("map = {}", list(&addrs.map())));
        }
        let plugins: Vec<&PluginEntry> = self
            .plugins
            .iter()
            .filter(|(site, _)| *site == id)
            .map(|(_, entry)| entry)
            .collect();
        if !plugins.is_empty() {
            toml.push_str(&plugins_section(&plugin_dir_name(id), &plugins));
        }
        for (_, text) in self.extra.iter().filter(|(site, _)| *site == id) {
            toml.push('\n');
            toml.push_str(text.trim_end());
            toml.push('\n');
        }
        toml
    }

    /// Builds the namespaces, links and addresses, and writes every site's config into
    /// a fresh scratch directory. Daemons are not started (see [`Topology::start`]).
    /// On failure everything created so far is removed.
    pub fn build(self) -> Result<Topology> {
        let names = Namer::new(&self.tag);
        let dir = TempDir::for_namer(&names)?;
        let underlay = Netns::new(names.netns("u"))?;
        let bridge = names.device('r', 0);
        underlay.ip(&format!("link add {bridge} type bridge"))?;
        underlay.ip(&format!("link set {bridge} up"))?;
        let mut sites = Vec::new();
        for id in self.site_ids() {
            let site = Site::build(&self, id, &names, &underlay, &bridge, dir.path())
                .with_context(|| format!("building {}", id.peer_name()))?;
            sites.push(site);
        }
        Ok(Topology {
            sites,
            underlay,
            names,
            dir,
        })
    }

    /// The spokes that [`Self::direct`] paired with spoke `k`, in the order given.
    fn direct_partners(&self, k: usize) -> impl Iterator<Item = usize> + '_ {
        self.direct.iter().filter_map(move |&(a, b)| {
            if a == k {
                Some(b)
            } else if b == k {
                Some(a)
            } else {
                None
            }
        })
    }

    fn spoke_mut(&mut self, k: usize) -> &mut SpokeOptions {
        let count = self.spokes.len();
        assert!((1..=count).contains(&k), "spoke {k} outside 1..={count}");
        &mut self.spokes[k - 1]
    }
}

/// A built reference topology: namespaces, links, configs, and the daemons once started.
#[derive(Debug)]
pub struct Topology {
    // Field order is drop order: daemons and site namespaces first, the bridge, the files.
    sites: Vec<Site>,
    underlay: Netns,
    names: Namer,
    dir: TempDir,
}

impl Topology {
    /// A builder for test `tag` (1 to 6 chars of `[a-z0-9]`, part of every name) with two
    /// plain-GRE spokes, no key, the daemon's checksum/sequence/offload defaults, log `debug`.
    pub fn builder(tag: &str) -> TopologyBuilder {
        TopologyBuilder {
            tag: tag.to_owned(),
            spokes: vec![SpokeOptions::default(); 2],
            key: None,
            checksum: None,
            sequence: None,
            offload: None,
            metrics: false,
            log: "debug".to_owned(),
            direct: Vec::new(),
            plugins: Vec::new(),
            extra: Vec::new(),
            nhrp: None,
            nhrp_secrets: Vec::new(),
            behind_nat: Vec::new(),
            backup_hub: false,
            regions: Vec::new(),
            tunnel_keys: Vec::new(),
        }
    }

    /// Starts the daemon of every site (hub first), each waited for until it answers.
    pub fn start(&mut self) -> Result<()> {
        for index in 0..self.sites.len() {
            self.sites[index].start()?;
        }
        Ok(())
    }

    /// Starts the daemon of one site.
    pub fn start_site(&mut self, id: SiteId) -> Result<()> {
        self.site_mut(id).start()
    }

    /// Stops the daemon of one site and returns its exit status.
    pub fn stop_site(&mut self, id: SiteId) -> Result<ExitStatus> {
        let site = self.site_mut(id);
        let mut daemon = site.daemon.take().context("daemon not running")?;
        daemon.stop()
    }

    /// Kills site `id`'s daemon with SIGKILL (a crash: nothing is cleaned up or withdrawn).
    pub fn kill_site(&mut self, id: SiteId) -> Result<ExitStatus> {
        let site = self.site_mut(id);
        let mut daemon = site.daemon.take().context("daemon not running")?;
        daemon.kill()
    }

    /// The hub.
    pub fn hub(&self) -> &Site {
        &self.sites[0]
    }

    /// Spoke `k` (1-based).
    pub fn spoke(&self, k: usize) -> &Site {
        self.site(SiteId::Spoke(k))
    }

    /// Site `id`.
    ///
    /// # Panics
    /// If the topology has no such site.
    pub fn site(&self, id: SiteId) -> &Site {
        self.sites
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no site {id:?}"))
    }

    /// All sites: the hub, then spokes in order, then the backup hub if any.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// The namespace holding the underlay bridge.
    pub fn underlay(&self) -> &Netns {
        &self.underlay
    }

    /// The scratch directory (configs, control sockets, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The namer, to make further unique names for this test.
    pub fn names(&self) -> &Namer {
        &self.names
    }

    /// Names of every namespace of this topology.
    pub fn netns_names(&self) -> Vec<String> {
        let sites = self
            .sites
            .iter()
            .flat_map(|site| [&site.router, &site.host]);
        std::iter::once(&self.underlay)
            .chain(sites)
            .map(|ns| ns.name().to_owned())
            .collect()
    }

    /// The tails of all running daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for site in &self.sites {
            if let Some(daemon) = &site.daemon {
                let _ = writeln!(
                    text,
                    "--- log of {} ---\n{}",
                    site.id.peer_name(),
                    daemon.log_tail(LOG_TAIL)
                );
            }
        }
        text
    }

    fn site_mut(&mut self, id: SiteId) -> &mut Site {
        self.sites
            .iter_mut()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no site {id:?}"))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Stop daemons before their namespaces go, and show their logs; libtest only
        // prints captured output when the test fails.
        for site in &mut self.sites {
            if let Some(mut daemon) = site.daemon.take() {
                let status = daemon.stop();
                eprintln!(
                    "--- {} daemon stopped: {status:?}; log tail ---\n{}",
                    site.id.peer_name(),
                    daemon.log_tail(LOG_TAIL)
                );
            }
        }
    }
}

/// One site: a router namespace (hub or spoke) and the LAN host behind it.
#[derive(Debug)]
pub struct Site {
    // First field: the daemon must stop before the namespaces are deleted.
    daemon: Option<Daemon>,
    /// Which site this is.
    pub id: SiteId,
    /// Its addresses.
    pub addrs: SiteAddrs,
    /// The hub's or spoke's namespace (where `mgre` runs).
    pub router: Netns,
    /// The LAN host's namespace.
    pub host: Netns,
    /// The NAT router's namespace, for a spoke behind NAT.
    pub nat: Option<Netns>,
    /// The TUN name in the config.
    pub tun: String,
    /// The router's underlay interface.
    pub underlay_iface: String,
    /// The router's LAN interface.
    pub lan_iface: String,
    /// The LAN host's interface.
    pub host_iface: String,
    /// Encapsulation towards the hub (the hub itself: [`Encap::Gre`], meaningless).
    pub encap: Encap,
    /// Config file.
    pub config: PathBuf,
    /// Control socket.
    pub socket: PathBuf,
    /// Daemon log file.
    pub log: PathBuf,
    /// The plugin directory (`[plugins] dir` when the builder gave this site plugins);
    /// always created, empty until a test puts files there.
    pub plugin_dir: PathBuf,
}

impl Site {
    /// The running daemon.
    ///
    /// # Panics
    /// If it was not started (a bug in the test).
    pub fn daemon(&self) -> &Daemon {
        self.daemon
            .as_ref()
            .unwrap_or_else(|| panic!("{} daemon not started", self.id.peer_name()))
    }

    /// Whether a daemon runs here.
    pub fn is_running(&self) -> bool {
        self.daemon.is_some()
    }

    /// The MTU of the TUN, from `ip link show` in the router namespace.
    pub fn tun_mtu(&self) -> Result<u32> {
        let out = self.router.ip(&format!("-o link show dev {}", self.tun))?;
        let mut words = out.split_whitespace();
        words
            .by_ref()
            .find(|word| *word == "mtu")
            .and_then(|_| words.next())
            .and_then(|mtu| mtu.parse().ok())
            .with_context(|| format!("no mtu in {out:?}"))
    }

    /// Whether the TUN device exists in the router namespace.
    pub fn tun_exists(&self) -> bool {
        self.router
            .ip(&format!("link show dev {}", self.tun))
            .is_ok()
    }

    /// Path of `file` in this site's plugin directory.
    pub fn plugin_path(&self, file: &str) -> PathBuf {
        self.plugin_dir.join(file)
    }

    /// Puts `bytes` into the plugin directory as `file` the way deploy tools do: written to
    /// a hidden temporary file (which the daemon's watcher ignores), then renamed over
    /// `file` in one step. Returns when the rename has completed.
    pub fn replace_plugin(&self, file: &str, bytes: &[u8]) -> Result<()> {
        let path = self.plugin_path(file);
        let tmp = self.plugin_dir.join(format!(".{file}.tmp"));
        fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }

    /// Copies the wasm file at `from` into the plugin directory as `file` (see
    /// [`Self::replace_plugin`]).
    pub fn install_plugin(&self, file: &str, from: &Path) -> Result<()> {
        let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
        self.replace_plugin(file, &bytes)
    }

    fn start(&mut self) -> Result<()> {
        if self.daemon.is_some() {
            bail!("{} daemon already running", self.id.peer_name());
        }
        let daemon = Daemon::start(&self.router, &self.config, &self.socket, &self.log)
            .with_context(|| format!("starting the {} daemon", self.id.peer_name()))?;
        self.daemon = Some(daemon);
        Ok(())
    }

    fn build(
        spec: &TopologyBuilder,
        id: SiteId,
        names: &Namer,
        underlay: &Netns,
        bridge: &str,
        dir: &Path,
    ) -> Result<Self> {
        let index = id.index();
        let role = match id {
            SiteId::Hub => "hub".to_owned(),
            SiteId::BackupHub => "hubb".to_owned(),
            SiteId::Spoke(k) => format!("s{k}"),
        };
        let addrs = spec.addrs(id);
        let router = Netns::new(names.netns(&role))?;
        let host = Netns::new(names.netns(&format!("{role}l")))?;
        router.sysctl(&[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ])?;
        host.sysctl(&[
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ])?;

        // Underlay: router veth <-> bridge port in the underlay namespace (or, behind NAT,
        // router veth <-> NAT router, whose own veth goes to the bridge).
        let underlay_iface = names.device('u', index);
        let port = names.device('p', index);
        let nat = match id {
            SiteId::Spoke(k) if spec.behind_nat.contains(&k) => Some(nat::router(
                &nat::Wiring {
                    names,
                    role: &role,
                    index,
                    router: &router,
                    underlay,
                    bridge,
                    underlay_iface: &underlay_iface,
                    port: &port,
                },
                k,
                addrs.nbma,
            )?),
            _ => {
                router.ip(&format!(
                    "link add {underlay_iface} type veth peer name {port} netns {}",
                    underlay.name()
                ))?;
                underlay.ip(&format!("link set {port} master {bridge} up"))?;
                router.ip(&format!("addr add {}/24 dev {underlay_iface}", addrs.nbma))?;
                router.ip(&format!("link set {underlay_iface} up"))?;
                None
            }
        };

        // LAN: router veth <-> host veth.
        let lan_iface = names.device('l', index);
        let host_iface = names.device('h', index);
        router.ip(&format!(
            "link add {lan_iface} type veth peer name {host_iface} netns {}",
            host.name()
        ))?;
        router.ip(&format!(
            "addr add {}/{LAN_V4_LEN} dev {lan_iface}",
            addrs.router_v4
        ))?;
        router.ip(&format!(
            "-6 addr add {}/{LAN_V6_LEN} dev {lan_iface} nodad",
            addrs.router_v6
        ))?;
        router.ip(&format!("link set {lan_iface} up"))?;
        host.ip(&format!(
            "addr add {}/{LAN_V4_LEN} dev {host_iface}",
            addrs.host_v4
        ))?;
        host.ip(&format!(
            "-6 addr add {}/{LAN_V6_LEN} dev {host_iface} nodad",
            addrs.host_v6
        ))?;
        host.ip(&format!("link set {host_iface} up"))?;
        host.ip(&format!("route add default via {}", addrs.router_v4))?;
        host.ip(&format!("-6 route add default via {}", addrs.router_v6))?;

        let peer_name = id.peer_name();
        let tun = names.device('t', index);
        let config = dir.join(format!("{peer_name}.toml"));
        let socket = dir.join(format!("{peer_name}.sock"));
        let log = dir.join(format!("{peer_name}.log"));
        let plugin_dir = dir.join(plugin_dir_name(id));
        fs::create_dir_all(&plugin_dir)
            .with_context(|| format!("creating {}", plugin_dir.display()))?;
        fs::write(&config, spec.render_config(id, &socket, &tun))
            .with_context(|| format!("writing {}", config.display()))?;
        let encap = match id {
            SiteId::Hub | SiteId::BackupHub => Encap::Gre,
            SiteId::Spoke(k) => spec.spokes[k - 1].encap,
        };
        Ok(Self {
            daemon: None,
            id,
            addrs,
            router,
            host,
            nat,
            tun,
            underlay_iface,
            lan_iface,
            host_iface,
            encap,
            config,
            socket,
            log,
            plugin_dir,
        })
    }
}

/// The plugin directory of site `id`, relative to the config file (so the rendered config
/// does not depend on where the scratch directory is).
fn plugin_dir_name(id: SiteId) -> String {
    format!("{}-plugins", id.peer_name())
}

/// A one-line TOML array of strings.
fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| quote(item)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The most spokes the contract's LAN plan has room for.
pub const MAX_SPOKES: usize = 3;
/// Where every site serves Prometheus metrics when [`TopologyBuilder::metrics`] is on.
pub const METRICS_ADDR: &str = "127.0.0.1:9100";
/// Prefix length of every IPv4 LAN.
pub const LAN_V4_LEN: u8 = 26;
/// Prefix length of every IPv6 LAN.
pub const LAN_V6_LEN: u8 = 64;
/// A spoke's `routes`: everything of the test ranges goes into the tunnel (its own LAN
/// stays local through the more specific connected routes).
pub const SPOKE_ROUTES: [&str; 2] = ["203.0.113.0/24", "2001:db8::/32"];
/// Bytes of each daemon log quoted in failure output.
const LOG_TAIL: usize = 16 * 1024;

/// The worker count `MGRE_TEST_WORKERS` asks every daemon to run with, if set.
pub fn test_workers() -> Option<usize> {
    std::env::var("MGRE_TEST_WORKERS")
        .ok()?
        .parse()
        .ok()
        .filter(|n| *n > 1)
}
