//! Forwarding decisions of a multipoint GRE hub or spoke, over caller-owned frames.
//!
//! A frame is a byte buffer holding one packet at `frame[start..start + len]` with at least
//! [`HEADROOM`] bytes free before it, so encapsulation and ICMP errors are written in place.
//! Each path has two halves so a policy can decide in between: [`Dataplane::inspect_tun`] and
//! [`Dataplane::inspect_underlay`] validate (and decapsulate) a packet and find its default
//! peer; [`Dataplane::forward`] applies a [`Policy`] and encapsulates for a peer, delivers to
//! the TUN, answers with an ICMP error, or — on a hub — re-encapsulates straight to another
//! spoke (hairpin). [`Dataplane::from_tun`] and [`Dataplane::from_underlay`] chain both halves
//! with no policy. NHRP goes to the control path. Every drop is counted in [`WorkerStats`] under its
//! reason. Immutable after construction (share it between workers); per-worker mutable state
//! (GRE sequence numbers) lives in [`WorkerState`]. No I/O, no clock, no allocation per packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustc_hash::FxHashMap;

use crate::peer::{Peer, PeerId};
use crate::policy::{Action, Direction, Inspected, Policy, TxMarks};
use crate::prefix::{Prefix, PrefixTable};
use crate::stats::{DropReason, WorkerStats};
use crate::wire::gre::{self, GreError, GreRepr};
use crate::wire::icmp;
use crate::wire::ip::{self, Addr, IpMeta};

/// Free bytes a frame must have in front of a packet: the largest IPv4 outer header a raw
/// socket delivers is overwritten, then up to an ICMPv6 error prefix plus a GRE header.
pub const HEADROOM: usize = 128;

/// What this node is in the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepts spokes and forwards spoke-to-spoke traffic itself.
    Hub,
    /// Sends traffic with no better match to its NHS.
    Spoke,
}

/// Everything the dataplane needs, as validated by the daemon's config loader.
#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    /// Hub or spoke.
    pub role: Role,
    /// Peers; a [`PeerId`] is an index into this list.
    pub peers: Vec<Peer>,
    /// Overlay prefixes behind each peer (the static map).
    pub map: Vec<(Prefix, PeerId)>,
    /// Spoke: the peer taking traffic with no better match.
    pub nhs: Option<PeerId>,
    /// This node's overlay IPv4 address (source of ICMP errors).
    pub local_v4: Option<Ipv4Addr>,
    /// This node's overlay IPv6 address (source of ICMPv6 errors).
    pub local_v6: Option<Ipv6Addr>,
    /// Underlay MTU, from which per-peer inner MTUs derive.
    pub underlay_mtu: u16,
    /// The TUN MTU.
    pub tun_mtu: u16,
    /// Largest TCP MSS for IPv4 and IPv6 SYNs crossing the tunnel; `None` disables clamping.
    pub mss_clamp: Option<(u16, u16)>,
    /// NHRP from underlay addresses that are not peers (yet) goes to the control path —
    /// a hub learning its spokes — when it carries this tunnel's key; `None`: dropped as from
    /// an unknown peer.
    pub open_nhrp: Option<OpenNhrp>,
    /// Peer ids the workers' per-peer state and counters are sized for: at least
    /// `peers.len()`, more when peers are added at run time (later snapshots of the
    /// dataplane with more peers must stay within it).
    pub peer_capacity: usize,
}

/// Admission of NHRP from senders that are not peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenNhrp {
    /// The GRE key such messages must carry (the tunnel's key; `None`: no key).
    pub key: Option<u32>,
}

/// The outcome of the first half of a path: finished, or inspected and awaiting a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Nothing left to decide (dropped, or for the control path).
    Done(Verdict),
    /// Validated; call [`Dataplane::forward`] with a policy.
    Decide(Inspected),
}

/// What to do with a frame after a dataplane call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Send `frame[start..start + len]`, a GRE packet, to `peer` over its encapsulation;
    /// `flow` is the inner flow hash (GRE-in-UDP source-port entropy).
    Underlay {
        /// Destination peer.
        peer: PeerId,
        /// Start of the GRE packet in the frame.
        start: usize,
        /// Length of the GRE packet.
        len: usize,
        /// Inner flow hash.
        flow: u32,
        /// Outer traffic class and socket priority a policy asked for.
        marks: TxMarks,
    },
    /// Write `frame[start..start + len]`, an inner IP packet, to the TUN.
    Tun {
        /// Start of the packet in the frame.
        start: usize,
        /// Length of the packet.
        len: usize,
    },
    /// `frame[start..start + len]` is an NHRP message for the control path.
    Control {
        /// The peer it came from; `None` for a sender that is not a peer (see
        /// [`DataplaneConfig::open_nhrp`]).
        peer: Option<PeerId>,
        /// Start of the NHRP message in the frame.
        start: usize,
        /// Length of the NHRP message.
        len: usize,
    },
    /// `frame[start..start + len]` is an inner multicast or broadcast packet a hub
    /// replicates: a copy to every peer in [`Dataplane::multicast_peers`] except `ingress`
    /// (see [`Dataplane::encap_copy`]), and the frame itself to the TUN when `local`.
    Replicate {
        /// Start of the inner packet in the frame.
        start: usize,
        /// Length of the inner packet.
        len: usize,
        /// The peer it came from (`None`: this hub's TUN).
        ingress: Option<PeerId>,
        /// Also deliver it to this hub's TUN.
        local: bool,
    },
    /// Dropped; already counted under the reason.
    Drop(DropReason),
}

/// Mutable per-worker state: GRE sequence numbers per peer.
#[derive(Debug)]
pub struct WorkerState {
    tx_seq: Box<[u32]>,
    rx_seq: Box<[Option<u32>]>,
}

impl WorkerState {
    /// State for a worker of `dp` and of every later snapshot within its
    /// [`DataplaneConfig::peer_capacity`].
    pub fn new(dp: &Dataplane) -> Self {
        let n = dp.peers().len().max(dp.config().peer_capacity);
        WorkerState {
            tx_seq: vec![0; n].into(),
            rx_seq: vec![None; n].into(),
        }
    }
}

/// The immutable forwarding state of one tunnel.
#[derive(Debug)]
pub struct Dataplane {
    cfg: DataplaneConfig,
    endpoints: PrefixTable<PeerId>,
    by_nbma: FxHashMap<IpAddr, PeerId>,
    peer_mtu: Box<[u16]>,
    multicast_peers: Box<[PeerId]>,
}

impl Dataplane {
    /// Builds the tables. Later map entries for the same prefix replace earlier ones.
    pub fn new(cfg: DataplaneConfig) -> Self {
        let mut endpoints = PrefixTable::new();
        for (prefix, peer) in &cfg.map {
            endpoints.insert(*prefix, *peer);
        }
        let by_nbma = cfg
            .peers
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_vacant())
            .map(|(i, p)| (p.nbma, i as PeerId))
            .collect();
        let peer_mtu = cfg
            .peers
            .iter()
            .map(|p| p.inner_mtu(cfg.underlay_mtu))
            .collect();
        let multicast_peers = cfg
            .peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.multicast && !p.is_vacant())
            .map(|(i, _)| i as PeerId)
            .collect();
        Dataplane {
            cfg,
            endpoints,
            by_nbma,
            peer_mtu,
            multicast_peers,
        }
    }

    /// The configuration this dataplane was built from.
    pub fn config(&self) -> &DataplaneConfig {
        &self.cfg
    }

    /// All peers, indexed by [`PeerId`].
    pub fn peers(&self) -> &[Peer] {
        &self.cfg.peers
    }

    /// Largest inner packet that fits the path to `peer`.
    pub fn peer_mtu(&self, peer: PeerId) -> u16 {
        self.peer_mtu.get(peer as usize).copied().unwrap_or(0)
    }

    /// The peers a hub replicates inner multicast and broadcast to.
    pub fn multicast_peers(&self) -> &[PeerId] {
        &self.multicast_peers
    }

    /// Encapsulates a copy of the inner `packet` for `peer` into `out` (a buffer of at least
    /// [`HEADROOM`] + `packet.len()` bytes) and returns where the GRE packet is in it; `None`
    /// (counted as too-big) when the packet does not fit the peer's MTU and may not be
    /// fragmented, or `out` is too small. For a hub's multicast replication: the copies keep
    /// the inner TTL (the overlay is one link). Work: one copy and one GRE emit.
    pub fn encap_copy(
        &self,
        ws: &mut WorkerState,
        stats: &WorkerStats,
        peer: PeerId,
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<(usize, usize)> {
        let (start, len) = (HEADROOM, packet.len());
        let frame = out.get_mut(..start + len)?;
        let meta = ip::parse(packet).ok()?;
        if len > usize::from(self.peer_mtu(peer)) && meta.dont_fragment {
            stats.count_drop(DropReason::TooBig);
            return None;
        }
        frame[start..].copy_from_slice(packet);
        let flow = ip::flow_hash(packet, &meta);
        match self.encap(ws, peer, frame, start, len, flow, TxMarks::NONE) {
            Verdict::Underlay { start, len, .. } => Some((start, len)),
            _ => None,
        }
    }

    /// The peer an underlay address belongs to.
    pub fn peer_by_nbma(&self, nbma: IpAddr) -> Option<PeerId> {
        self.by_nbma.get(&nbma).copied()
    }

    /// The peer that receives packets for `dst`: the longest map match, else (spoke) the NHS.
    #[inline]
    pub fn route(&self, dst: Addr) -> Option<PeerId> {
        self.endpoints_lookup(dst).or(self.cfg.nhs)
    }

    /// The spoke a hub with redirect on tells to resolve the destination itself, for a
    /// packet it forwarded with `verdict`: the ingress peer of a hairpinned packet, or — on a
    /// regional hub — the peer owning the source of a packet the kernel routed from the TUN
    /// up to the core hub (a spoke's traffic to another region crosses the regional hub's
    /// routing table, since the dataplane leaves what no registration covers to the kernel).
    /// Work bound: one LPM lookup, only for the second kind.
    #[inline]
    pub fn redirect_source(&self, p: &Inspected, verdict: &Verdict) -> Option<PeerId> {
        let Verdict::Underlay { peer, .. } = *verdict else {
            return None;
        };
        match p.direction {
            Direction::Transit => p.ingress,
            Direction::Outbound if self.cfg.role == Role::Hub && self.cfg.nhs == Some(peer) => {
                self.endpoints_lookup(p.meta.src).filter(|s| *s != peer)
            }
            _ => None,
        }
    }

    /// Handles an inner packet read from the TUN at `frame[start..start + len]` with plain
    /// forwarding: [`Dataplane::inspect_tun`] then [`Dataplane::forward`] with no policy.
    ///
    /// Work bound: one IP header parse, one LPM lookup, one GRE header emit (plus one
    /// checksum pass when the peer uses GRE checksums).
    pub fn from_tun(
        &self,
        ws: &mut WorkerState,
        stats: &WorkerStats,
        frame: &mut [u8],
        start: usize,
        len: usize,
    ) -> Verdict {
        match self.inspect_tun(stats, frame, start, len) {
            Step::Done(v) => v,
            Step::Decide(p) => self.forward(ws, stats, frame, &p, &Policy::DEFAULT),
        }
    }

    /// Handles a packet received from the underlay address `src` with plain forwarding:
    /// [`Dataplane::inspect_underlay`] then [`Dataplane::forward`] with no policy.
    #[allow(clippy::too_many_arguments)]
    pub fn from_underlay(
        &self,
        ws: &mut WorkerState,
        stats: &WorkerStats,
        frame: &mut [u8],
        start: usize,
        len: usize,
        src: IpAddr,
        ipv4_header_included: bool,
    ) -> Verdict {
        match self.inspect_underlay(ws, stats, frame, start, len, src, ipv4_header_included) {
            Step::Done(v) => v,
            Step::Decide(p) => self.forward(ws, stats, frame, &p, &Policy::DEFAULT),
        }
    }

    /// First half of the TUN path: validates the inner packet at `frame[start..start + len]`
    /// and looks up its default peer. Work bound: one IP header parse, one LPM lookup.
    pub fn inspect_tun(&self, stats: &WorkerStats, frame: &[u8], start: usize, len: usize) -> Step {
        stats.tun_rx.count(len);
        let Some(pkt) = frame.get(start..start + len) else {
            return Step::Done(drop(stats, DropReason::InnerMalformed));
        };
        let Ok(meta) = ip::parse(pkt) else {
            return Step::Done(drop(stats, DropReason::InnerMalformed));
        };
        if self.cfg.role == Role::Hub && meta.dst.is_multicast_or_broadcast() {
            return Step::Done(Verdict::Replicate {
                start,
                len: meta.total_len,
                ingress: None,
                local: false,
            });
        }
        Step::Decide(Inspected {
            meta,
            start,
            len: meta.total_len,
            direction: Direction::Outbound,
            ingress: None,
            egress: self.route(meta.dst),
        })
    }

    /// First half of the underlay path: validates and decapsulates the packet received from
    /// `src` at `frame[start..start + len]` — the GRE packet, or, when `ipv4_header_included`
    /// (raw IPv4 sockets), the whole IPv4 datagram carrying it — and decides its default fate:
    /// the TUN, or (hub) another spoke. NHRP goes to the control path.
    ///
    /// Work bound: one GRE parse (plus one checksum pass if present), one IP header parse,
    /// on a hub one LPM lookup.
    #[allow(clippy::too_many_arguments)]
    pub fn inspect_underlay(
        &self,
        ws: &mut WorkerState,
        stats: &WorkerStats,
        frame: &[u8],
        mut start: usize,
        mut len: usize,
        src: IpAddr,
        ipv4_header_included: bool,
    ) -> Step {
        let done = |reason| Step::Done(drop(stats, reason));
        if ipv4_header_included {
            let Some(outer) = frame.get(start..start + len) else {
                return done(DropReason::Truncated);
            };
            let ihl = outer.first().map_or(0, |b| usize::from(b & 0xf) * 4);
            if outer.len() < 20 || ihl < 20 || ihl > outer.len() {
                return done(DropReason::Truncated);
            }
            let total = usize::from(u16::from_be_bytes([outer[2], outer[3]])).min(outer.len());
            if total < ihl {
                return done(DropReason::Truncated);
            }
            start += ihl;
            len = total - ihl;
        }
        let Some(packet) = frame.get(start..start + len) else {
            return done(DropReason::Truncated);
        };
        let repr = match GreRepr::parse(packet) {
            Ok(r) => r,
            Err(e) => return done(gre_drop_reason(e)),
        };
        let Some(peer) = self.peer_by_nbma(src) else {
            return match self.cfg.open_nhrp {
                Some(open) if repr.protocol == gre::PROTO_NHRP && repr.key == open.key => {
                    let hlen = repr.header_len();
                    Step::Done(Verdict::Control {
                        peer: None,
                        start: start + hlen,
                        len: len - hlen,
                    })
                }
                _ => done(DropReason::UnknownPeer),
            };
        };
        let p = &self.cfg.peers[peer as usize];
        if repr.key != p.key {
            return done(DropReason::KeyMismatch);
        }
        if p.sequence
            && let Some(seq) = repr.sequence
        {
            let last = &mut ws.rx_seq[peer as usize];
            // RFC 2890 §2.2: accept only sequence numbers newer than the last (serial arithmetic).
            if last.is_some_and(|l| (seq.wrapping_sub(l) as i32) <= 0) {
                return done(DropReason::OutOfSequence);
            }
            *last = Some(seq);
        }
        stats.rx.count(len);
        if let Some(ps) = stats.peer(peer) {
            ps.rx.count(len);
        }
        let hlen = repr.header_len();
        let (inner_start, inner_len) = (start + hlen, len - hlen);
        let version = match repr.protocol {
            gre::PROTO_IPV4 => 4,
            gre::PROTO_IPV6 => 6,
            gre::PROTO_NHRP => {
                return Step::Done(Verdict::Control {
                    peer: Some(peer),
                    start: inner_start,
                    len: inner_len,
                });
            }
            _ => return done(DropReason::UnsupportedProtocol),
        };
        let inner = &frame[inner_start..inner_start + inner_len];
        let meta = match ip::parse(inner) {
            Ok(m) if inner[0] >> 4 == version => m,
            _ => return done(DropReason::InnerMalformed),
        };
        if self.cfg.role == Role::Hub && meta.dst.is_multicast_or_broadcast() {
            return Step::Done(Verdict::Replicate {
                start: inner_start,
                len: meta.total_len,
                ingress: Some(peer),
                local: true,
            });
        }
        let transit = match self.cfg.role {
            Role::Hub => self.endpoints_lookup(meta.dst).filter(|d| *d != peer),
            Role::Spoke => None,
        };
        Step::Decide(Inspected {
            meta,
            start: inner_start,
            len: meta.total_len,
            direction: if transit.is_some() {
                Direction::Transit
            } else {
                Direction::Inbound
            },
            ingress: Some(peer),
            egress: transit,
        })
    }

    /// Second half of both paths: applies `policy` to an inspected packet and produces its
    /// verdict — encapsulation for a peer (with MTU check, TTL decrement when forwarding
    /// between peers, MSS clamping), delivery to the TUN, or a counted drop.
    ///
    /// Work bound: at most one GRE emit and one ICMP error build; no allocation.
    pub fn forward(
        &self,
        ws: &mut WorkerState,
        stats: &WorkerStats,
        frame: &mut [u8],
        p: &Inspected,
        policy: &Policy,
    ) -> Verdict {
        if policy.fail_closed {
            return drop(stats, DropReason::PluginFailClosed);
        }
        let dest = match policy.action {
            Action::Default => p.egress,
            Action::ViaNhs if p.direction == Direction::Outbound => self.cfg.nhs.or(p.egress),
            Action::ViaNhs => p.egress,
            Action::Peer(id)
                if self
                    .cfg
                    .peers
                    .get(id as usize)
                    .is_some_and(|p| !p.is_vacant()) =>
            {
                Some(id)
            }
            Action::Peer(_) => return drop(stats, DropReason::NoRoute),
            Action::Drop => return drop(stats, DropReason::PolicyDrop),
            Action::Local => None,
        };
        let (start, len, meta) = (p.start, p.len, &p.meta);
        if let Some(dscp) = policy.inner_dscp {
            ip::set_dscp(&mut frame[start..start + len], meta, dscp);
        }
        let marks = TxMarks {
            tos: policy
                .outer
                .map(|o| o.traffic_class(ip::traffic_class(&frame[start..start + len], meta))),
            priority: policy.priority,
        };
        match (p.direction, dest) {
            (Direction::Outbound, None) => drop(stats, DropReason::NoRoute),
            (Direction::Outbound, Some(peer)) => {
                let mtu = self.peer_mtu(peer);
                if len > usize::from(mtu) && meta.dont_fragment {
                    stats.count_drop(DropReason::TooBig);
                    return match self.too_big(stats, frame, start, len, meta, mtu) {
                        Some((s, l)) => Verdict::Tun { start: s, len: l },
                        None => Verdict::Drop(DropReason::TooBig),
                    };
                }
                self.clamp(stats, &mut frame[start..start + len], meta);
                let flow = ip::flow_hash(&frame[start..start + len], meta);
                self.encap(ws, peer, frame, start, len, flow, marks)
            }
            (_, None) => {
                self.clamp(stats, &mut frame[start..start + len], meta);
                Verdict::Tun { start, len }
            }
            (_, Some(to)) => self.hairpin(ws, stats, frame, p, to, marks),
        }
    }

    /// Forwards a decapsulated packet from one peer straight to peer `to` (a hub's
    /// spoke-to-spoke path, or wherever a policy sends a received packet).
    fn hairpin(
        &self,
        ws: &mut WorkerState,
        stats: &WorkerStats,
        frame: &mut [u8],
        p: &Inspected,
        to: PeerId,
        marks: TxMarks,
    ) -> Verdict {
        let (start, len, meta) = (p.start, p.len, &p.meta);
        let mtu = self.peer_mtu(to);
        if len > usize::from(mtu) && meta.dont_fragment {
            stats.count_drop(DropReason::TooBig);
            return match (self.too_big(stats, frame, start, len, meta, mtu), p.ingress) {
                (Some((s, l)), Some(from)) => {
                    let flow = ip::flow_hash(&frame[s..s + l], meta);
                    self.encap(ws, from, frame, s, l, flow, TxMarks::NONE)
                }
                _ => Verdict::Drop(DropReason::TooBig),
            };
        }
        if !ip::decrement_ttl(&mut frame[start..start + len], meta) {
            return drop(stats, DropReason::TtlExpired);
        }
        self.clamp(stats, &mut frame[start..start + len], meta);
        stats.hairpin.count(len);
        let flow = ip::flow_hash(&frame[start..start + len], meta);
        self.encap(ws, to, frame, start, len, flow, marks)
    }

    /// The peer whose map holds the longest prefix containing `dst` (no NHS fallback).
    fn endpoints_lookup(&self, dst: Addr) -> Option<PeerId> {
        match dst {
            Addr::V4(a) => self.endpoints.lookup_v4(a),
            Addr::V6(a) => self.endpoints.lookup_v6(a),
        }
    }

    /// Writes the GRE header for `peer` in front of the inner packet.
    #[allow(clippy::too_many_arguments)]
    fn encap(
        &self,
        ws: &mut WorkerState,
        peer: PeerId,
        frame: &mut [u8],
        start: usize,
        len: usize,
        flow: u32,
        marks: TxMarks,
    ) -> Verdict {
        let p = &self.cfg.peers[peer as usize];
        let protocol = if frame[start] >> 4 == 6 {
            gre::PROTO_IPV6
        } else {
            gre::PROTO_IPV4
        };
        let sequence = p.sequence.then(|| {
            let s = &mut ws.tx_seq[peer as usize];
            let cur = *s;
            *s = s.wrapping_add(1);
            cur
        });
        let repr = GreRepr {
            protocol,
            checksum: p.checksum,
            key: p.key,
            sequence,
        };
        let hlen = repr.header_len();
        let new_start = start - hlen;
        repr.emit(&mut frame[new_start..start + len]);
        Verdict::Underlay {
            peer,
            start: new_start,
            len: len + hlen,
            flow,
            marks,
        }
    }

    fn clamp(&self, stats: &WorkerStats, pkt: &mut [u8], meta: &IpMeta) {
        if let Some((v4, v6)) = self.cfg.mss_clamp {
            let max = if matches!(meta.dst, Addr::V4(_)) {
                v4
            } else {
                v6
            };
            if ip::clamp_mss(pkt, meta, max) {
                stats.mss_clamped.add(1);
            }
        }
    }

    fn too_big(
        &self,
        stats: &WorkerStats,
        frame: &mut [u8],
        start: usize,
        len: usize,
        meta: &IpMeta,
        mtu: u16,
    ) -> Option<(usize, usize)> {
        let src = match meta.dst {
            Addr::V4(_) => Addr::V4(self.cfg.local_v4?.into()),
            Addr::V6(_) => Addr::V6(self.cfg.local_v6?.into()),
        };
        let out = icmp::too_big(frame, start, len, meta, src, u32::from(mtu))?;
        stats.icmp_too_big.add(1);
        Some(out)
    }
}

fn drop(stats: &WorkerStats, reason: DropReason) -> Verdict {
    stats.count_drop(reason);
    Verdict::Drop(reason)
}

fn gre_drop_reason(e: GreError) -> DropReason {
    match e {
        GreError::Truncated => DropReason::Truncated,
        GreError::BadVersion => DropReason::BadVersion,
        GreError::RoutingPresent => DropReason::RoutingPresent,
        GreError::ReservedBits => DropReason::ReservedBits,
        GreError::BadChecksum => DropReason::BadChecksum,
    }
}

#[cfg(test)]
mod tests;
