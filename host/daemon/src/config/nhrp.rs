//! The `[nhrp]` table: dynamic endpoint discovery. On a hub it turns on the Next Hop Server
//! (registrations from spokes build the endpoint table); on a spoke it lists the Next Hop
//! Servers (`[[nhrp.nhs]]`) to register with, which become configured peers next to any
//! `[[peer]]` entries. A hub with `[[nhrp.nhs]]` is a regional hub: a client of those core
//! hubs as well (hierarchical DMVPN).

use std::net::IpAddr;
use std::num::NonZeroU16;
use std::time::Duration;

use mgre_proto::{Encap, PeerId, Prefix};
use serde::Deserialize;
use toml::Spanned;

use super::{ErrAt, PrefixStr};

/// Longest cleartext secret accepted (RFC 2332 sets no limit; Cisco truncates at 8 bytes).
const MAX_SECRET: usize = 64;

/// Validated NHRP settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NhrpConfig {
    /// The NBMA network (NHRP domain) this tunnel belongs to: a local identifier as FRR's
    /// and Cisco's `network-id`, never sent. On the wire the network is the tunnel's GRE
    /// key: NHRP carrying another key is another network's and never reaches this node's
    /// NHRP state.
    pub network_id: u32,
    /// Spoke: holding time asked for; hub: the most granted. Seconds.
    pub holdtime: NonZeroU16,
    /// Cleartext authentication secret required in both directions.
    pub secret: Option<Vec<u8>>,
    /// Spoke, regional hub: prefixes registered besides the tunnel addresses.
    pub register: Vec<Prefix>,
    /// Hub: underlay prefixes registrations may come from (empty: any).
    pub allowed_nbma: Vec<Prefix>,
    /// Hub: most registered prefixes per address family.
    pub max_entries: usize,
    /// Spoke, regional hub: the servers, in configuration order.
    pub nhs: Vec<NhsEntry>,
    /// Spoke, regional hub: cap of the retransmission backoff.
    pub retry_max: Duration,
    /// Spoke, regional hub: unanswered retransmissions after which a server counts as down.
    pub failover_after: u32,
    /// Hub: send Traffic Indications (DMVPN phase 3 redirect) to spokes whose traffic it
    /// forwards to another spoke.
    pub redirect: bool,
    /// Hub: at most one Traffic Indication per source/destination pair per this interval.
    pub redirect_interval: Duration,
    /// Spoke: answer Traffic Indications by resolving the destination and installing a
    /// direct shortcut (and answer other spokes' resolutions for its own prefixes).
    pub shortcuts: bool,
    /// Spoke: a shortcut unused for this long is removed.
    pub shortcut_idle: Duration,
    /// Spoke: most shortcuts at once.
    pub max_shortcuts: usize,
}

/// One `[[nhrp.nhs]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NhsEntry {
    /// The dataplane peer the server is.
    pub peer: PeerId,
    /// Its underlay address.
    pub nbma: IpAddr,
    /// Its overlay addresses (at most one per family).
    pub addresses: Vec<IpAddr>,
    /// Lower is preferred.
    pub priority: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawNhrp {
    #[serde(default = "default_network_id")]
    network_id: Spanned<u32>,
    #[serde(default = "default_holdtime")]
    holdtime: Spanned<u16>,
    secret: Option<Spanned<String>>,
    #[serde(default)]
    register: Vec<Spanned<PrefixStr>>,
    #[serde(default)]
    allowed_nbma: Vec<Spanned<PrefixStr>>,
    #[serde(default = "default_max_entries")]
    max_entries: Spanned<usize>,
    #[serde(default)]
    pub(super) nhs: Vec<RawNhs>,
    #[serde(default = "default_retry_max")]
    retry_max: Spanned<u64>,
    #[serde(default = "default_failover_after")]
    failover_after: u32,
    #[serde(default = "super::default_off")]
    redirect: Spanned<bool>,
    #[serde(default = "default_redirect_interval_ms")]
    redirect_interval_ms: u64,
    #[serde(default = "super::default_off")]
    shortcuts: Spanned<bool>,
    #[serde(default = "default_shortcut_idle")]
    shortcut_idle: Spanned<u64>,
    #[serde(default = "default_max_shortcuts")]
    max_shortcuts: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawNhs {
    pub(super) name: Option<Spanned<String>>,
    pub(super) nbma: Spanned<IpAddr>,
    #[serde(default)]
    pub(super) address: Vec<Spanned<IpAddr>>,
    #[serde(default)]
    pub(super) priority: u8,
    #[serde(default = "super::default_encap", with = "super::encap")]
    pub(super) encap: Encap,
}

impl RawNhs {
    /// The peer name of the `i`th server.
    pub(super) fn peer_name(&self, i: usize) -> String {
        self.name
            .as_ref()
            .map_or_else(|| format!("nhs{}", i + 1), |n| n.get_ref().clone())
    }
}

fn default_network_id() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}
fn default_holdtime() -> Spanned<u16> {
    Spanned::new(0..0, 7200)
}
fn default_max_entries() -> Spanned<usize> {
    Spanned::new(0..0, 4096)
}
fn default_retry_max() -> Spanned<u64> {
    Spanned::new(0..0, 64)
}
fn default_failover_after() -> u32 {
    3
}
fn default_redirect_interval_ms() -> u64 {
    2000
}
fn default_shortcut_idle() -> Spanned<u64> {
    Spanned::new(0..0, 120)
}
fn default_max_shortcuts() -> usize {
    1024
}

/// Validates `raw` for a node of role `hub` (else spoke) with underlay address `nbma` and
/// tunnel addresses of the families flagged; `nhs_peers[i]` is the peer id the config loader
/// gave `raw.nhs[i]`.
pub(super) fn validate(
    raw: RawNhrp,
    hub: bool,
    nbma: IpAddr,
    (has_v4, has_v6): (bool, bool),
    nhs_peers: &[PeerId],
    err: &ErrAt<'_>,
) -> Result<NhrpConfig, super::ConfigError> {
    let holdtime = NonZeroU16::new(*raw.holdtime.get_ref()).ok_or_else(|| {
        err(
            raw.holdtime.span(),
            "nhrp.holdtime",
            "holdtime must be at least 1 second".into(),
        )
    })?;
    let secret = match raw.secret {
        None => None,
        Some(s) if (1..=MAX_SECRET).contains(&s.get_ref().len()) => {
            Some(s.into_inner().into_bytes())
        }
        Some(s) => {
            return Err(err(
                s.span(),
                "nhrp.secret",
                format!("secret must be 1 to {MAX_SECRET} bytes"),
            ));
        }
    };
    if *raw.max_entries.get_ref() == 0 || *raw.max_entries.get_ref() > 1 << 20 {
        return Err(err(
            raw.max_entries.span(),
            "nhrp.max-entries",
            "max-entries must be between 1 and 1048576".into(),
        ));
    }
    if *raw.retry_max.get_ref() == 0 {
        return Err(err(
            raw.retry_max.span(),
            "nhrp.retry-max",
            "retry-max must be at least 1 second".into(),
        ));
    }
    let mut allowed_nbma = Vec::with_capacity(raw.allowed_nbma.len());
    for (i, p) in raw.allowed_nbma.iter().enumerate() {
        let prefix = p.get_ref().0;
        if prefix.addr().is_ipv4() != nbma.is_ipv4() {
            return Err(err(
                p.span(),
                &format!("nhrp.allowed-nbma[{i}]"),
                format!("{prefix} is not of the family of tunnel.nbma {nbma}"),
            ));
        }
        allowed_nbma.push(prefix);
    }
    if hub {
        if *raw.shortcuts.get_ref() {
            return Err(err(
                raw.shortcuts.span(),
                "nhrp.shortcuts",
                "shortcuts is a spoke setting (a hub uses `redirect`)".into(),
            ));
        }
        if let Some(r) = raw.register.first()
            && raw.nhs.is_empty()
        {
            return Err(err(
                r.span(),
                "nhrp.register",
                "a hub registers its prefixes only with core hubs: add [[nhrp.nhs]] or remove \
                 `register`"
                    .into(),
            ));
        }
    } else {
        if raw.nhs.is_empty() {
            return Err(err(
                raw.holdtime.span(),
                "nhrp.nhs",
                "a spoke with [nhrp] needs at least one [[nhrp.nhs]]".into(),
            ));
        }
        if *raw.redirect.get_ref() {
            return Err(err(
                raw.redirect.span(),
                "nhrp.redirect",
                "redirect is a hub setting (a spoke uses `shortcuts`)".into(),
            ));
        }
        if !allowed_nbma.is_empty() {
            return Err(err(
                raw.allowed_nbma[0].span(),
                "nhrp.allowed-nbma",
                "allowed-nbma is a hub setting".into(),
            ));
        }
    }
    for (i, r) in raw.register.iter().enumerate() {
        let p = r.get_ref().0;
        if !(if p.addr().is_ipv4() { has_v4 } else { has_v6 }) {
            return Err(err(
                r.span(),
                &format!("nhrp.register[{i}]"),
                format!("cannot register {p}: the tunnel has no address of its family"),
            ));
        }
    }
    if *raw.network_id.get_ref() == 0 {
        return Err(err(
            raw.network_id.span(),
            "nhrp.network-id",
            "network-id must be 1 to 4294967295".into(),
        ));
    }
    if raw.max_shortcuts == 0 {
        return Err(err(
            raw.holdtime.span(),
            "nhrp.max-shortcuts",
            "max-shortcuts must be at least 1 (turn shortcuts off with `shortcuts = false`)".into(),
        ));
    }
    if raw.redirect_interval_ms < 100 {
        return Err(err(
            raw.holdtime.span(),
            "nhrp.redirect-interval-ms",
            "redirect-interval-ms must be at least 100: it bounds the Traffic Indications \
             per source/destination pair"
                .into(),
        ));
    }
    if *raw.shortcut_idle.get_ref() == 0 {
        return Err(err(
            raw.shortcut_idle.span(),
            "nhrp.shortcut-idle",
            "shortcut-idle must be at least 1 second".into(),
        ));
    }
    let nhs = raw
        .nhs
        .iter()
        .zip(nhs_peers)
        .map(|(n, &peer)| NhsEntry {
            peer,
            nbma: *n.nbma.get_ref(),
            addresses: n.address.iter().map(|a| *a.get_ref()).collect(),
            priority: n.priority,
        })
        .collect();
    Ok(NhrpConfig {
        network_id: *raw.network_id.get_ref(),
        holdtime,
        secret,
        register: raw.register.iter().map(|p| p.get_ref().0).collect(),
        allowed_nbma,
        max_entries: *raw.max_entries.get_ref(),
        nhs,
        retry_max: Duration::from_secs(*raw.retry_max.get_ref()),
        failover_after: raw.failover_after,
        redirect: *raw.redirect.get_ref(),
        redirect_interval: Duration::from_millis(raw.redirect_interval_ms),
        shortcuts: *raw.shortcuts.get_ref(),
        shortcut_idle: Duration::from_secs(*raw.shortcut_idle.get_ref()),
        max_shortcuts: raw.max_shortcuts,
    })
}
