//! What a policy decision can change about a packet the dataplane has inspected: where it goes
//! (the endpoint table's choice, via the NHS, a given peer, local delivery, or a drop), its
//! inner DSCP and the outer header's traffic class. The daemon fills this from plugin verdicts;
//! [`Policy::DEFAULT`] reproduces plain forwarding.

use crate::peer::PeerId;
use crate::wire::ip::IpMeta;

/// Which way an inspected packet is going.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Read from this site's TUN, leaving over the tunnel.
    Outbound,
    /// Received from a peer, for this site's TUN.
    Inbound,
    /// Received from a peer and forwarded to another peer (a hub's hairpin).
    Transit,
}

/// A validated packet with the endpoint table's default decision, awaiting a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inspected {
    /// Inner packet metadata.
    pub meta: IpMeta,
    /// Start of the inner packet in the frame.
    pub start: usize,
    /// Length of the inner packet.
    pub len: usize,
    /// Direction.
    pub direction: Direction,
    /// Peer it came from (`None`: this site's TUN).
    pub ingress: Option<PeerId>,
    /// Peer the endpoint table chose (`None`: deliver to this site's TUN, or no route when
    /// outbound).
    pub egress: Option<PeerId>,
}

/// Where a policy sends a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Action {
    /// The endpoint table's decision.
    #[default]
    Default,
    /// A spoke's NHS even when a direct map entry exists (no change elsewhere).
    ViaNhs,
    /// This peer.
    Peer(PeerId),
    /// Drop, counted as `policy-drop`.
    Drop,
    /// Deliver to this site's TUN.
    Local,
}

/// The outer header's traffic class for a marked packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OuterMark {
    /// Outer DSCP; `None` copies the (possibly re-marked) inner DSCP.
    pub dscp: Option<u8>,
    /// Outer ECN; `None` copies the inner ECN.
    pub ecn: Option<u8>,
}

/// A policy decision for one packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Where it goes.
    pub action: Action,
    /// New inner DSCP.
    pub inner_dscp: Option<u8>,
    /// Outer traffic class; `None` leaves the underlay socket's default.
    pub outer: Option<OuterMark>,
    /// Socket priority (0–7) for the underlay send; `None` leaves the socket default.
    pub priority: Option<u8>,
    /// A fail-closed plugin failed on this packet's batch: drop it.
    pub fail_closed: bool,
}

/// Per-packet settings of the underlay send that a policy chose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxMarks {
    /// Outer traffic class (DSCP << 2 | ECN); `None` leaves the socket default.
    pub tos: Option<u8>,
    /// Socket priority; `None` leaves the socket default.
    pub priority: Option<u8>,
}

impl TxMarks {
    /// Socket defaults.
    pub const NONE: TxMarks = TxMarks {
        tos: None,
        priority: None,
    };
}

impl Policy {
    /// Plain forwarding.
    pub const DEFAULT: Policy = Policy {
        action: Action::Default,
        inner_dscp: None,
        outer: None,
        priority: None,
        fail_closed: false,
    };
}

impl OuterMark {
    /// The outer traffic-class byte given the inner one.
    pub fn traffic_class(&self, inner: u8) -> u8 {
        (self.dscp.unwrap_or(inner >> 2) & 0x3f) << 2 | (self.ecn.unwrap_or(inner & 3) & 3)
    }
}

/// Ports of a TCP/UDP packet (zeros otherwise), for flow keys and plugin slots.
pub fn ports(pkt: &[u8], meta: &IpMeta) -> (u16, u16) {
    use crate::wire::ip::{PROTO_TCP, PROTO_UDP};
    if !matches!(meta.protocol, PROTO_TCP | PROTO_UDP) {
        return (0, 0);
    }
    match meta.l4_offset.and_then(|o| pkt.get(o..o + 4)) {
        Some(p) => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ),
        None => (0, 0),
    }
}
