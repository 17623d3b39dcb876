//! The TOML configuration: parsing with precise errors (file, line, column, key) and
//! validation into what the dataplane, the TUN and the daemon need.
//!
//! Unknown keys are rejected. Keys use the vocabulary of DMVPN/FRR operators (`nbma`, `nhs`,
//! `map`). Nothing here touches the system; `mgre check` runs exactly this code.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use mgre_proto::dataplane::OpenNhrp;
use mgre_proto::{DataplaneConfig, Encap, Peer, PeerId, Prefix, Role};
use serde::Deserialize;
use toml::Spanned;

/// Default GRE-in-UDP port (RFC 8086).
pub const GRE_UDP_PORT: u16 = 4754;

/// A configuration error pointing at the offending place.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// Dotted path of the offending key, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Control socket path.
    pub socket: PathBuf,
    /// Prometheus endpoint, if enabled.
    pub metrics: Option<SocketAddr>,
    /// Default log filter.
    pub log: Option<String>,
    /// TUN interface to create.
    pub tun: mgre_io::TunConfig,
    /// Local underlay address.
    pub nbma: IpAddr,
    /// GRE-in-UDP port.
    pub udp_port: u16,
    /// The tunnel's GRE key (what NHRP messages and NHRP-learnt peers use).
    pub gre_key: Option<u32>,
    /// Whether the tunnel sends GRE checksums (ditto).
    pub gre_checksum: bool,
    /// Dataplane worker threads (one TUN queue each).
    pub workers: usize,
    /// Whether any peer uses GRE-in-UDP.
    pub udp_needed: bool,
    /// Prefixes routed into the tunnel: every peer's map plus `routes`.
    pub routes: Vec<Prefix>,
    /// What the dataplane runs with.
    pub dataplane: DataplaneConfig,
    /// Policy plugins, when configured.
    pub plugins: Option<PluginsConfig>,
    /// Dynamic endpoint discovery, when configured.
    pub nhrp: Option<NhrpConfig>,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            position: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &src)
    }

    /// Parses and validates `src`, reporting errors against `file`.
    pub fn parse(file: &Path, src: &str) -> Result<Config, ConfigError> {
        let err = |span: Option<Range<usize>>, key: Option<&str>, message: String| ConfigError {
            file: file.to_owned(),
            position: span.map(|s| line_col(src, s.start)),
            key: key.map(str::to_owned),
            message,
        };
        let de = toml::Deserializer::parse(src)
            .map_err(|e| err(e.span(), None, e.message().to_owned()))?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            err(
                inner.span(),
                (path != ".").then_some(&path),
                inner.message().to_owned(),
            )
        })?;
        let base = file.parent().unwrap_or(Path::new("."));
        validate(raw, base, &|span, key, msg| err(Some(span), Some(key), msg))
    }
}

type ErrAt<'a> = dyn Fn(Range<usize>, &str, String) -> ConfigError + 'a;

fn validate(raw: RawConfig, base: &Path, err: &ErrAt<'_>) -> Result<Config, ConfigError> {
    let plugins = plugins::validate(raw.plugins, raw.plugin, base, err)?;
    if *raw.version.get_ref() != 1 {
        return Err(err(
            raw.version.span(),
            "version",
            format!("unsupported version {}, expected 1", raw.version.get_ref()),
        ));
    }
    let workers = *raw.daemon.workers.get_ref();
    let workers_span = raw.daemon.workers.span();
    if !(1..=MAX_WORKERS).contains(&workers) {
        return Err(err(
            raw.daemon.workers.span(),
            "daemon.workers",
            format!("workers must be between 1 and {MAX_WORKERS}"),
        ));
    }
    let t = raw.tunnel;
    let name = t.name.get_ref();
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
        return Err(err(
            t.name.span(),
            "tunnel.name",
            "interface name must be 1-15 characters without '/' or spaces".into(),
        ));
    }
    if let Some(m) = &raw.daemon.metrics
        && !m.get_ref().ip().is_loopback()
    {
        return Err(err(
            m.span(),
            "daemon.metrics",
            "metrics must listen on a loopback address".into(),
        ));
    }

    let mut ipv4 = None;
    let mut ipv6 = Vec::new();
    let (mut local_v4, mut local_v6) = (None, None);
    for (i, a) in t.address.iter().enumerate() {
        let key = format!("tunnel.address[{i}]");
        match (a.get_ref().0.addr(), a.get_ref().1) {
            (IpAddr::V4(v4), len) => {
                if ipv4.is_some() {
                    return Err(err(
                        a.span(),
                        &key,
                        "only one IPv4 tunnel address is supported".into(),
                    ));
                }
                ipv4 = Some((v4, len));
                local_v4 = Some(v4);
            }
            (IpAddr::V6(v6), len) => {
                ipv6.push((v6, len));
                local_v6.get_or_insert(v6);
            }
        }
    }

    let nbma = *t.nbma.get_ref();
    let mut peers: Vec<Peer> = Vec::with_capacity(raw.peer.len());
    let mut map = Vec::new();
    let mut routes: Vec<Prefix> = t.routes.iter().map(|p| p.0).collect();
    for (i, p) in raw.peer.iter().enumerate() {
        let pname = p.name.get_ref();
        if pname.is_empty() {
            return Err(err(
                p.name.span(),
                &format!("peer[{i}].name"),
                "peer name must not be empty".into(),
            ));
        }
        if peers.iter().any(|q| &q.name == pname) {
            return Err(err(
                p.name.span(),
                &format!("peer[{i}].name"),
                format!("duplicate peer name `{pname}`"),
            ));
        }
        let pnbma = *p.nbma.get_ref();
        if pnbma.is_ipv4() != nbma.is_ipv4() {
            return Err(err(
                p.nbma.span(),
                &format!("peer[{i}].nbma"),
                format!(
                    "peer underlay address {pnbma} is not of the same family as tunnel.nbma {nbma}"
                ),
            ));
        }
        if pnbma == nbma || peers.iter().any(|q| q.nbma == pnbma) {
            return Err(err(
                p.nbma.span(),
                &format!("peer[{i}].nbma"),
                format!("underlay address {pnbma} is already used"),
            ));
        }
        for prefix in &p.map {
            map.push((prefix.0, i as PeerId));
            routes.push(prefix.0);
        }
        peers.push(Peer {
            name: pname.clone(),
            nbma: pnbma,
            encap: p.encap,
            key: p.key.or(t.key),
            checksum: p.checksum.unwrap_or(t.checksum),
            sequence: p.sequence.unwrap_or(*t.sequence.get_ref()),
            udp_port: None,
            multicast: true,
        });
    }

    let mut nhs_peers = Vec::new();
    if let Some(n) = &raw.nhrp {
        if let Some(s) = &t.nhs
            && t.role == Role::Spoke
        {
            return Err(err(
                s.span(),
                "tunnel.nhs",
                "with [nhrp], the NHS are the [[nhrp.nhs]] entries; remove `tunnel.nhs`".into(),
            ));
        }
        for (i, nhs) in n.nhs.iter().enumerate() {
            let key = |field: &str| format!("nhrp.nhs[{i}].{field}");
            let pname = nhs.peer_name(i);
            if pname.is_empty() || peers.iter().any(|q| q.name == pname) {
                let span = nhs.name.as_ref().map_or(nhs.nbma.span(), Spanned::span);
                return Err(err(
                    span,
                    &key("name"),
                    format!("duplicate or empty peer name `{pname}`"),
                ));
            }
            let nnbma = *nhs.nbma.get_ref();
            if nnbma.is_ipv4() != nbma.is_ipv4() {
                return Err(err(
                    nhs.nbma.span(),
                    &key("nbma"),
                    format!(
                        "NHS underlay address {nnbma} is not of the family of tunnel.nbma {nbma}"
                    ),
                ));
            }
            if nnbma == nbma || peers.iter().any(|q| q.nbma == nnbma) {
                return Err(err(
                    nhs.nbma.span(),
                    &key("nbma"),
                    format!("underlay address {nnbma} is already used"),
                ));
            }
            let id = peers.len() as PeerId;
            for (j, a) in nhs.address.iter().enumerate() {
                let addr = *a.get_ref();
                if nhs.address[..j]
                    .iter()
                    .any(|b| b.get_ref().is_ipv4() == addr.is_ipv4())
                {
                    return Err(err(
                        a.span(),
                        &format!("nhrp.nhs[{i}].address[{j}]"),
                        "at most one overlay address per family".into(),
                    ));
                }
                let host = Prefix::new(addr, if addr.is_ipv4() { 32 } else { 128 })
                    .expect("host prefix of a valid address");
                map.push((host, id));
                routes.push(host);
            }
            peers.push(Peer {
                name: pname,
                nbma: nnbma,
                encap: nhs.encap,
                key: t.key,
                checksum: t.checksum,
                sequence: false,
                udp_port: None,
                multicast: true,
            });
            nhs_peers.push(id);
        }
    }
    let nhrp = match raw.nhrp {
        None => None,
        Some(n) => {
            if *t.sequence.get_ref() {
                return Err(err(
                    t.sequence.span(),
                    "tunnel.sequence",
                    "GRE sequence numbers cannot be used with [nhrp]: peers learnt at run time \
                     start with no sequence state"
                        .into(),
                ));
            }
            let families = (ipv4.is_some(), !ipv6.is_empty());
            let c = nhrp::validate(n, t.role == Role::Hub, nbma, families, &nhs_peers, err)?;
            Some(c)
        }
    };

    if workers > 1
        && let Some(p) = peers.iter().find(|p| p.sequence)
    {
        return Err(err(
            workers_span,
            "daemon.workers",
            format!(
                "peer `{}` uses GRE sequence numbers, which need workers = 1: several workers \
                 send and receive a tunnel's packets in parallel and cannot keep one sequence",
                p.name
            ),
        ));
    }

    let nhs = match (&t.nhs, t.role) {
        // A spoke's hubs, or a regional hub's core hubs.
        (None, _) if nhrp.is_some() => nhrp
            .iter()
            .flat_map(|n| &n.nhs)
            .min_by_key(|n| n.priority)
            .map(|n| n.peer),
        (None, _) => None,
        (Some(n), Role::Hub) => {
            return Err(err(
                n.span(),
                "tunnel.nhs",
                "a hub has no NHS; remove `nhs` or set role = \"spoke\"".into(),
            ));
        }
        (Some(n), Role::Spoke) => match peers.iter().position(|p| &p.name == n.get_ref()) {
            Some(i) => Some(i as PeerId),
            None => {
                return Err(err(
                    n.span(),
                    "tunnel.nhs",
                    format!("no [[peer]] named `{}`", n.get_ref()),
                ));
            }
        },
    };

    let underlay_mtu = t.underlay_mtu;
    let derived = peers
        .iter()
        .map(|p| p.inner_mtu(underlay_mtu))
        .min()
        // No configured peer (an NHRP hub): leave room for the largest header a learnt peer
        // can need, GRE-in-UDP with the tunnel's key and checksum.
        .unwrap_or_else(|| {
            let ip = if nbma.is_ipv4() { 20 } else { 40 };
            let gre = 4 + 4 * u16::from(t.key.is_some()) + 4 * u16::from(t.checksum);
            underlay_mtu.saturating_sub(ip + 8 + gre)
        });
    let tun_mtu = match &t.mtu {
        Some(m) => *m.get_ref(),
        None => derived,
    };
    if tun_mtu < 576 {
        let span = t.mtu.as_ref().map_or(0..0, |m| m.span());
        return Err(err(
            span,
            "tunnel.mtu",
            format!(
                "tunnel MTU {tun_mtu} is below 576 (underlay-mtu {underlay_mtu} minus overhead)"
            ),
        ));
    }
    if !ipv6.is_empty() && tun_mtu < 1280 {
        let span = t.mtu.as_ref().map_or(0..0, |m| m.span());
        return Err(err(
            span,
            "tunnel.mtu",
            format!(
                "tunnel MTU {tun_mtu} is below 1280, the IPv6 minimum, but IPv6 addresses are configured"
            ),
        ));
    }
    let mss_clamp = match t.mss_clamp {
        MssClamp::Enabled(false) => None,
        MssClamp::Enabled(true) => Some((tun_mtu - 40, tun_mtu - 60)),
        MssClamp::Value(v) => Some((v, v)),
    };
    let nhs_server = t.role == Role::Hub && nhrp.is_some();
    // With NHRP, peers (spokes, shortcut peers) come with the encapsulation they use, so
    // every node listens for both.
    let udp_needed = nhrp.is_some() || peers.iter().any(|p| p.encap == Encap::GreUdp);
    let families = usize::from(ipv4.is_some()) + usize::from(!ipv6.is_empty());
    let peer_capacity = peers.len()
        + match (&nhrp, nhs_server) {
            (Some(n), true) => n.max_entries * families.max(1),
            (Some(n), false) if n.shortcuts => n.max_shortcuts * families.max(1),
            _ => 0,
        };
    routes.sort_by_key(|p| (p.addr().is_ipv6(), p.addr(), p.len()));
    routes.dedup();

    Ok(Config {
        socket: raw.daemon.socket,
        metrics: raw.daemon.metrics.map(|m| *m.get_ref()),
        log: raw.daemon.log,
        tun: mgre_io::TunConfig {
            name: name.clone(),
            mtu: tun_mtu,
            ipv4,
            ipv6,
            offload: t.offload,
            queues: workers,
        },
        workers,
        nbma,
        udp_port: t.udp_port,
        gre_key: t.key,
        gre_checksum: t.checksum,
        udp_needed,
        routes,
        dataplane: DataplaneConfig {
            role: t.role,
            peers,
            map,
            nhs,
            local_v4,
            local_v6,
            underlay_mtu,
            tun_mtu,
            mss_clamp,
            // A hub learns spokes from their registrations; a spoke with shortcuts hears from
            // spokes it has not met yet (their answers to its resolutions, their requests
            // forwarded by the hub). The control path authenticates and matches them.
            open_nhrp: (nhs_server || nhrp.as_ref().is_some_and(|n| n.shortcuts))
                .then_some(OpenNhrp { key: t.key }),
            peer_capacity,
        },
        plugins,
        nhrp,
    })
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: Spanned<u32>,
    daemon: RawDaemon,
    tunnel: RawTunnel,
    #[serde(default)]
    peer: Vec<RawPeer>,
    plugins: Option<plugins::RawPlugins>,
    #[serde(default)]
    plugin: Vec<plugins::RawPlugin>,
    nhrp: Option<nhrp::RawNhrp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    socket: PathBuf,
    metrics: Option<Spanned<SocketAddr>>,
    log: Option<String>,
    #[serde(default = "default_workers")]
    workers: Spanned<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTunnel {
    name: Spanned<String>,
    #[serde(with = "role")]
    role: Role,
    #[serde(default)]
    address: Vec<Spanned<AddrWithLen>>,
    nbma: Spanned<IpAddr>,
    #[serde(default = "default_underlay_mtu")]
    underlay_mtu: u16,
    mtu: Option<Spanned<u16>>,
    key: Option<u32>,
    #[serde(default)]
    checksum: bool,
    #[serde(default = "default_off")]
    sequence: Spanned<bool>,
    #[serde(default)]
    mss_clamp: MssClamp,
    #[serde(default)]
    routes: Vec<PrefixStr>,
    nhs: Option<Spanned<String>>,
    #[serde(default = "default_udp_port")]
    udp_port: u16,
    #[serde(default = "default_offload")]
    offload: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: Spanned<String>,
    nbma: Spanned<IpAddr>,
    #[serde(default = "default_encap", with = "encap")]
    encap: Encap,
    key: Option<u32>,
    checksum: Option<bool>,
    sequence: Option<bool>,
    #[serde(default)]
    map: Vec<PrefixStr>,
}

/// `true`/`false` or an explicit MSS value.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum MssClamp {
    Enabled(bool),
    Value(u16),
}

impl Default for MssClamp {
    fn default() -> Self {
        MssClamp::Enabled(true)
    }
}

/// A prefix written as `a.b.c.d/n` or `x::/n`; a bare address means a host route.
#[derive(Deserialize, Clone, Copy)]
#[serde(try_from = "String")]
struct PrefixStr(pub(crate) Prefix);

impl TryFrom<String> for PrefixStr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse::<Prefix>()
            .map(PrefixStr)
            .map_err(|e| format!("invalid prefix `{s}`: {e}"))
    }
}

/// An interface address with its prefix length, e.g. `198.51.100.11/24`.
#[derive(Deserialize, Clone, Copy)]
#[serde(try_from = "String")]
struct AddrWithLen(Prefix, u8);

impl TryFrom<String> for AddrWithLen {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` needs a prefix length, e.g. 198.51.100.1/24"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|e| format!("invalid address `{a}`: {e}"))?;
        let len: u8 = l
            .parse()
            .map_err(|e| format!("invalid prefix length `{l}`: {e}"))?;
        let host =
            Prefix::new(addr, if addr.is_ipv4() { 32 } else { 128 }).map_err(|e| e.to_string())?;
        Prefix::new(addr, len).map_err(|e| format!("`{s}`: {e}"))?;
        Ok(AddrWithLen(host, len))
    }
}

fn default_underlay_mtu() -> u16 {
    1500
}
fn default_udp_port() -> u16 {
    GRE_UDP_PORT
}
fn default_off() -> Spanned<bool> {
    Spanned::new(0..0, false)
}
fn default_offload() -> bool {
    true
}
fn default_workers() -> Spanned<usize> {
    Spanned::new(0..0, 1)
}

/// Most dataplane workers a config may ask for.
const MAX_WORKERS: usize = 64;
fn default_encap() -> Encap {
    Encap::Gre
}

mod role {
    use mgre_proto::Role;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        match String::deserialize(d)?.as_str() {
            "hub" => Ok(Role::Hub),
            "spoke" => Ok(Role::Spoke),
            other => Err(serde::de::Error::custom(format!(
                "unknown role `{other}`, expected \"hub\" or \"spoke\""
            ))),
        }
    }
}

mod encap {
    use mgre_proto::Encap;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Encap, D::Error> {
        match String::deserialize(d)?.as_str() {
            "gre" => Ok(Encap::Gre),
            "gre-udp" => Ok(Encap::GreUdp),
            other => Err(serde::de::Error::custom(format!(
                "unknown encap `{other}`, expected \"gre\" or \"gre-udp\""
            ))),
        }
    }
}

mod nhrp;
mod plugins;
#[cfg(test)]
mod tests;

pub use nhrp::NhrpConfig;
pub use plugins::{Failure, Hook, PluginsConfig};
