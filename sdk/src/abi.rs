//! The byte layouts of the hot-path hooks: 64-byte packet slots in, fixed-size verdict slots
//! out, exactly as documented in `wit/policy.wit`. The host encodes packets and decodes
//! verdicts with this module; plugins read packets and write verdicts with it. Nothing here
//! allocates or panics on any input.
//!
//! Integers are little-endian; addresses are 16 bytes in network order, IPv4 as
//! `::ffff:a.b.c.d`.

use core::net::{IpAddr, Ipv6Addr};

use crate::net::Protocol;

/// Bytes per packet slot.
pub const PACKET_SLOT: usize = 64;
/// Bytes per classify verdict.
pub const CLASSIFY_SLOT: usize = 8;
/// Bytes per mark verdict.
pub const MARK_SLOT: usize = 12;
/// Bytes per route verdict.
pub const ROUTE_SLOT: usize = 24;
/// Peer id meaning "this site" (ingress from the TUN, or local delivery).
pub const NO_PEER: u16 = 0xffff;
/// "Keep" / "copy" marker in mark verdicts.
pub const UNCHANGED: u8 = 0xff;

/// Which way a packet is going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Read from this site's TUN, leaving over the tunnel.
    Outbound,
    /// Received from a peer, for this site.
    Inbound,
    /// A hub forwarding from one spoke to another.
    Transit,
}

impl Direction {
    const fn code(self) -> u8 {
        match self {
            Direction::Outbound => 0,
            Direction::Inbound => 1,
            Direction::Transit => 2,
        }
    }

    const fn from_code(c: u8) -> Direction {
        match c {
            1 => Direction::Inbound,
            2 => Direction::Transit,
            _ => Direction::Outbound,
        }
    }
}

/// Everything a packet slot carries, for the side that writes slots (the host, tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    /// Direction.
    pub direction: Direction,
    /// IP protocol.
    pub protocol: u8,
    /// DSCP << 2 | ECN.
    pub traffic_class: u8,
    /// TCP/UDP source port, 0 otherwise.
    pub src_port: u16,
    /// TCP/UDP destination port, 0 otherwise.
    pub dst_port: u16,
    /// IP total length.
    pub length: u16,
    /// TCP flags, 0 if not TCP.
    pub tcp_flags: u8,
    /// A later fragment (no ports).
    pub later_fragment: bool,
    /// DF set (always for IPv6).
    pub dont_fragment: bool,
    /// Peer the packet came from; `None` for this site's TUN.
    pub ingress_peer: Option<u16>,
    /// Peer the endpoint table chose; `None` for local delivery.
    pub egress_peer: Option<u16>,
    /// GRE key of the received packet.
    pub gre_key: Option<u32>,
    /// Class so far (0: unclassified).
    pub class: u32,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
}

impl PacketMeta {
    /// Writes this packet into a 64-byte slot.
    pub fn write(&self, slot: &mut [u8; PACKET_SLOT]) {
        *slot = [0; PACKET_SLOT];
        slot[0] = if self.dst.is_ipv4() { 4 } else { 6 };
        slot[1] = self.direction.code();
        slot[2] = self.protocol;
        slot[3] = self.traffic_class;
        slot[4..6].copy_from_slice(&self.src_port.to_le_bytes());
        slot[6..8].copy_from_slice(&self.dst_port.to_le_bytes());
        slot[8..10].copy_from_slice(&self.length.to_le_bytes());
        slot[10] = self.tcp_flags;
        slot[11] = u8::from(self.gre_key.is_some())
            | u8::from(self.later_fragment) << 1
            | u8::from(self.dont_fragment) << 2;
        slot[12..14].copy_from_slice(&self.ingress_peer.unwrap_or(NO_PEER).to_le_bytes());
        slot[14..16].copy_from_slice(&self.egress_peer.unwrap_or(NO_PEER).to_le_bytes());
        slot[16..20].copy_from_slice(&self.gre_key.unwrap_or(0).to_le_bytes());
        slot[20..24].copy_from_slice(&self.class.to_le_bytes());
        slot[32..48].copy_from_slice(&v6(self.src).octets());
        slot[48..64].copy_from_slice(&v6(self.dst).octets());
    }

    /// Reads a slot back (what a plugin sees, as one value).
    pub fn read(slot: &[u8; PACKET_SLOT]) -> PacketMeta {
        let p = Packet(slot);
        PacketMeta {
            direction: p.direction(),
            protocol: p.protocol(),
            traffic_class: p.traffic_class(),
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            length: p.length(),
            tcp_flags: p.tcp_flags(),
            later_fragment: p.later_fragment(),
            dont_fragment: p.dont_fragment(),
            ingress_peer: p.ingress_peer(),
            egress_peer: p.egress_peer(),
            gre_key: p.gre_key(),
            class: p.class(),
            src: p.src(),
            dst: p.dst(),
        }
    }
}

/// Zero-copy view of one packet slot.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a>(pub &'a [u8; PACKET_SLOT]);

impl Packet<'_> {
    /// IP version, 4 or 6.
    pub fn version(&self) -> u8 {
        self.0[0]
    }
    /// Direction.
    pub fn direction(&self) -> Direction {
        Direction::from_code(self.0[1])
    }
    /// IP protocol.
    pub fn protocol(&self) -> u8 {
        self.0[2]
    }
    /// DSCP << 2 | ECN.
    pub fn traffic_class(&self) -> u8 {
        self.0[3]
    }
    /// DSCP (0–63).
    pub fn dscp(&self) -> u8 {
        self.0[3] >> 2
    }
    /// ECN codepoint (0–3).
    pub fn ecn(&self) -> u8 {
        self.0[3] & 3
    }
    /// TCP/UDP source port, 0 otherwise.
    pub fn src_port(&self) -> u16 {
        self.u16(4)
    }
    /// TCP/UDP destination port, 0 otherwise.
    pub fn dst_port(&self) -> u16 {
        self.u16(6)
    }
    /// IP total length.
    pub fn length(&self) -> u16 {
        self.u16(8)
    }
    /// TCP flags.
    pub fn tcp_flags(&self) -> u8 {
        self.0[10]
    }
    /// A later fragment, without ports.
    pub fn later_fragment(&self) -> bool {
        self.0[11] & 2 != 0
    }
    /// DF set.
    pub fn dont_fragment(&self) -> bool {
        self.0[11] & 4 != 0
    }
    /// Peer the packet came from, `None` for this site's TUN.
    pub fn ingress_peer(&self) -> Option<u16> {
        Some(self.u16(12)).filter(|p| *p != NO_PEER)
    }
    /// Peer the endpoint table chose, `None` for local delivery.
    pub fn egress_peer(&self) -> Option<u16> {
        Some(self.u16(14)).filter(|p| *p != NO_PEER)
    }
    /// Whether the slot's ports are real: TCP or UDP, and not a later fragment.
    pub fn has_ports(&self) -> bool {
        Protocol(self.protocol()).has_ports() && !self.later_fragment()
    }
    /// GRE key of the received packet.
    pub fn gre_key(&self) -> Option<u32> {
        (self.0[11] & 1 != 0).then(|| self.u32(16))
    }
    /// Class so far (0: unclassified).
    pub fn class(&self) -> u32 {
        self.u32(20)
    }
    /// Source address.
    pub fn src(&self) -> IpAddr {
        self.addr(32)
    }
    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        self.addr(48)
    }

    fn u16(&self, o: usize) -> u16 {
        u16::from_le_bytes([self.0[o], self.0[o + 1]])
    }
    fn u32(&self, o: usize) -> u32 {
        u32::from_le_bytes([self.0[o], self.0[o + 1], self.0[o + 2], self.0[o + 3]])
    }
    fn addr(&self, o: usize) -> IpAddr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.0[o..o + 16]);
        let a = Ipv6Addr::from(a);
        match a.to_ipv4_mapped() {
            Some(v4) if self.version() == 4 => IpAddr::V4(v4),
            _ => IpAddr::V6(a),
        }
    }
}

/// Iterates the packet slots of a batch (a trailing partial slot is ignored).
pub fn packets(batch: &[u8]) -> impl ExactSizeIterator<Item = Packet<'_>> {
    batch.as_chunks::<PACKET_SLOT>().0.iter().map(Packet)
}

/// A classify verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Classify {
    /// Class id; 0 means no opinion.
    pub class: u32,
    /// How long the host may reuse this verdict for the flow, in ms (0: not at all).
    pub ttl_ms: u32,
}

impl Classify {
    /// Encodes into a slot.
    pub fn write(&self, out: &mut [u8; CLASSIFY_SLOT]) {
        out[0..4].copy_from_slice(&self.class.to_le_bytes());
        out[4..8].copy_from_slice(&self.ttl_ms.to_le_bytes());
    }
    /// Decodes a slot.
    pub fn read(s: &[u8; CLASSIFY_SLOT]) -> Self {
        Classify {
            class: le32(&s[0..4]),
            ttl_ms: le32(&s[4..8]),
        }
    }
}

/// A mark (QoS) verdict; `None` fields leave the packet as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    /// New inner DSCP.
    pub inner_dscp: Option<u8>,
    /// Outer DSCP (default: copied from the inner header).
    pub outer_dscp: Option<u8>,
    /// Outer ECN (default: copied from the inner header).
    pub outer_ecn: Option<u8>,
    /// Socket priority 0–7 for the underlay send.
    pub priority: Option<u8>,
    /// Rate class (0: none), a hint the host reports per class.
    pub rate_class: u16,
    /// Cache lifetime in ms (0: not cached).
    pub ttl_ms: u32,
}

impl Mark {
    /// Encodes into a slot.
    pub fn write(&self, out: &mut [u8; MARK_SLOT]) {
        out[0] = self.inner_dscp.map_or(UNCHANGED, |d| d & 0x3f);
        out[1] = self.outer_dscp.map_or(UNCHANGED, |d| d & 0x3f);
        out[2] = self.outer_ecn.map_or(UNCHANGED, |e| e & 3);
        out[3] = self.priority.map_or(UNCHANGED, |p| p & 7);
        out[4..6].copy_from_slice(&self.rate_class.to_le_bytes());
        out[6..8].fill(0);
        out[8..12].copy_from_slice(&self.ttl_ms.to_le_bytes());
    }
    /// Decodes a slot; out-of-range values count as "unchanged".
    pub fn read(s: &[u8; MARK_SLOT]) -> Self {
        let field = |v: u8, max: u8| (v <= max).then_some(v);
        Mark {
            inner_dscp: field(s[0], 63),
            outer_dscp: field(s[1], 63),
            outer_ecn: field(s[2], 3),
            priority: field(s[3], 7),
            rate_class: u16::from_le_bytes([s[4], s[5]]),
            ttl_ms: le32(&s[8..12]),
        }
    }
}

/// Where a route verdict sends a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RouteAction {
    /// What the endpoint table decided.
    #[default]
    Default,
    /// Through the hub (the spoke's NHS) even if a direct path exists.
    ViaHub,
    /// To this peer.
    Peer(u16),
    /// Drop (counted as a policy drop).
    Drop,
    /// Deliver to this site's own TUN.
    Local,
}

/// A route verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// The action.
    pub action: RouteAction,
    /// Cache lifetime in ms (0: not cached).
    pub ttl_ms: u32,
}

impl Route {
    /// Encodes into a slot.
    pub fn write(&self, out: &mut [u8; ROUTE_SLOT]) {
        *out = [0; ROUTE_SLOT];
        let (code, peer) = match self.action {
            RouteAction::Default => (0, 0),
            RouteAction::ViaHub => (1, 0),
            RouteAction::Peer(p) => (2, p),
            RouteAction::Drop => (3, 0),
            RouteAction::Local => (4, 0),
        };
        out[0] = code;
        out[2..4].copy_from_slice(&peer.to_le_bytes());
        out[4..8].copy_from_slice(&self.ttl_ms.to_le_bytes());
    }
    /// Decodes a slot; an unknown action counts as `Default`.
    pub fn read(s: &[u8; ROUTE_SLOT]) -> Self {
        let action = match s[0] {
            1 => RouteAction::ViaHub,
            2 => RouteAction::Peer(u16::from_le_bytes([s[2], s[3]])),
            3 => RouteAction::Drop,
            4 => RouteAction::Local,
            _ => RouteAction::Default,
        };
        Route {
            action,
            ttl_ms: le32(&s[4..8]),
        }
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    fn meta() -> PacketMeta {
        PacketMeta {
            direction: Direction::Transit,
            protocol: 17,
            traffic_class: 46 << 2 | 1,
            src_port: 5060,
            dst_port: 5061,
            length: 200,
            tcp_flags: 0,
            later_fragment: false,
            dont_fragment: true,
            ingress_peer: Some(2),
            egress_peer: None,
            gre_key: Some(42),
            class: 7,
            src: "2001:db8:1::2".parse().unwrap(),
            dst: "2001:db8:2::2".parse().unwrap(),
        }
    }

    #[test]
    fn packet_slot_roundtrip_and_view() {
        let mut slot = [0u8; PACKET_SLOT];
        meta().write(&mut slot);
        assert_eq!(PacketMeta::read(&slot), meta());
        let p = Packet(&slot);
        assert_eq!((p.dscp(), p.ecn(), p.version()), (46, 1, 6));
        assert_eq!(p.src(), "2001:db8:1::2".parse::<IpAddr>().unwrap());
        let mut v4 = meta();
        v4.src = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2));
        v4.dst = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66));
        v4.write(&mut slot);
        assert_eq!(Packet(&slot).version(), 4);
        assert_eq!(
            PacketMeta::read(&slot),
            v4,
            "IPv4 addresses come back unmapped"
        );
    }

    #[test]
    fn verdicts_roundtrip() {
        let c = Classify {
            class: 9,
            ttl_ms: 1000,
        };
        let mut b = [0u8; CLASSIFY_SLOT];
        c.write(&mut b);
        assert_eq!(Classify::read(&b), c);
        let m = Mark {
            inner_dscp: Some(46),
            outer_dscp: None,
            outer_ecn: Some(1),
            priority: Some(6),
            rate_class: 3,
            ttl_ms: 5,
        };
        let mut b = [0u8; MARK_SLOT];
        m.write(&mut b);
        assert_eq!(Mark::read(&b), m);
        for action in [
            RouteAction::Default,
            RouteAction::ViaHub,
            RouteAction::Peer(3),
            RouteAction::Drop,
            RouteAction::Local,
        ] {
            let r = Route { action, ttl_ms: 77 };
            let mut b = [0u8; ROUTE_SLOT];
            r.write(&mut b);
            assert_eq!(Route::read(&b), r);
        }
    }

    #[test]
    fn garbage_verdicts_decode_to_harmless_values() {
        assert_eq!(Mark::read(&[0xfe; MARK_SLOT]).inner_dscp, None);
        assert_eq!(
            Route::read(&[0x99; ROUTE_SLOT]).action,
            RouteAction::Default
        );
    }

    #[test]
    fn ports_exist_for_tcp_and_udp_first_fragments_only() {
        let mut slot = [0u8; PACKET_SLOT];
        let mut m = meta();
        for (protocol, later_fragment, ports) in [
            (17, false, true),
            (6, false, true),
            (6, true, false),
            (1, false, false),
        ] {
            m.protocol = protocol;
            m.later_fragment = later_fragment;
            m.write(&mut slot);
            assert_eq!(
                Packet(&slot).has_ports(),
                ports,
                "{protocol} {later_fragment}"
            );
        }
    }

    #[test]
    fn batches_ignore_partial_slots() {
        assert_eq!(packets(&[0u8; PACKET_SLOT * 3 + 5]).len(), 3);
    }
}
