//! Inner IP packet metadata and in-place rewrites: what the forwarding decision needs from
//! an IPv4 or IPv6 packet (addresses, protocol, ports, DF), a flow hash for ECMP entropy,
//! TTL/hop-limit decrement and TCP MSS clamping with incremental checksum updates.
//!
//! Zero-copy: everything works on the caller's bytes; no accessor panics on short input.

use super::checksum;

/// An IP address as plain bits, the form the endpoint table is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    /// IPv4 address, host order.
    V4(u32),
    /// IPv6 address, host order.
    V6(u128),
}

impl Addr {
    /// True for IPv4 multicast/limited broadcast and IPv6 multicast destinations.
    pub fn is_multicast_or_broadcast(&self) -> bool {
        match *self {
            Addr::V4(a) => a >> 28 == 0xe || a == u32::MAX,
            Addr::V6(a) => a >> 120 == 0xff,
        }
    }
}

impl From<Addr> for std::net::IpAddr {
    fn from(a: Addr) -> Self {
        match a {
            Addr::V4(a) => std::net::IpAddr::V4(a.into()),
            Addr::V6(a) => std::net::IpAddr::V6(a.into()),
        }
    }
}

impl From<std::net::IpAddr> for Addr {
    fn from(a: std::net::IpAddr) -> Self {
        match a {
            std::net::IpAddr::V4(a) => Addr::V4(a.into()),
            std::net::IpAddr::V6(a) => Addr::V6(a.into()),
        }
    }
}

/// Why an inner packet could not be understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerMalformed;

/// What forwarding needs to know about an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpMeta {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Upper-layer protocol (after IPv6 extension headers when they could be walked).
    pub protocol: u8,
    /// Offset of the upper-layer header, when the packet carries one (not a later fragment).
    pub l4_offset: Option<usize>,
    /// Length of the IP packet as its header states it (≤ buffer length).
    pub total_len: usize,
    /// IPv4 DF bit; always true for IPv6, which routers never fragment.
    pub dont_fragment: bool,
}

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// Parses the IPv4 or IPv6 header at the start of `pkt`.
///
/// Work bound: constant for IPv4; at most [`MAX_EXT_HEADERS`] extension headers for IPv6.
pub fn parse(pkt: &[u8]) -> Result<IpMeta, InnerMalformed> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => parse_v4(pkt),
        Some(6) => parse_v6(pkt),
        _ => Err(InnerMalformed),
    }
}

fn parse_v4(pkt: &[u8]) -> Result<IpMeta, InnerMalformed> {
    if pkt.len() < 20 {
        return Err(InnerMalformed);
    }
    let ihl = usize::from(pkt[0] & 0xf) * 4;
    let total_len = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if ihl < 20 || total_len < ihl || total_len > pkt.len() {
        return Err(InnerMalformed);
    }
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
    let first_fragment = frag & 0x1fff == 0;
    Ok(IpMeta {
        src: Addr::V4(u32::from_be_bytes([pkt[12], pkt[13], pkt[14], pkt[15]])),
        dst: Addr::V4(u32::from_be_bytes([pkt[16], pkt[17], pkt[18], pkt[19]])),
        protocol: pkt[9],
        l4_offset: first_fragment.then_some(ihl),
        total_len,
        dont_fragment: frag & 0x4000 != 0,
    })
}

fn parse_v6(pkt: &[u8]) -> Result<IpMeta, InnerMalformed> {
    if pkt.len() < 40 {
        return Err(InnerMalformed);
    }
    let total_len = 40 + usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
    if total_len > pkt.len() {
        return Err(InnerMalformed);
    }
    let mut next = pkt[6];
    let mut off = 40;
    let mut l4 = None;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-octet units beyond the first.
            0 | 43 | 60 => {
                let Some(h) = pkt.get(off..off + 2) else {
                    break;
                };
                next = h[0];
                off += 8 + usize::from(h[1]) * 8;
            }
            // Fragment header: only the first fragment carries the upper-layer header.
            44 => {
                let Some(h) = pkt.get(off..off + 8) else {
                    break;
                };
                next = h[0];
                off += 8;
                if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                    break;
                }
            }
            _ => {
                l4 = (off <= total_len).then_some(off);
                break;
            }
        }
    }
    let a = |o: usize| u128::from_be_bytes(pkt[o..o + 16].try_into().unwrap_or([0; 16]));
    Ok(IpMeta {
        src: Addr::V6(a(8)),
        dst: Addr::V6(a(24)),
        protocol: next,
        l4_offset: l4,
        total_len,
        dont_fragment: true,
    })
}

/// A 32-bit hash of the flow (addresses, protocol, ports) for ECMP entropy and worker pinning.
/// Stable for all packets of one flow, including fragments' first packet.
pub fn flow_hash(pkt: &[u8], meta: &IpMeta) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(meta.protocol);
    let mix = |h: u64, v: u64| (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    match (meta.src, meta.dst) {
        (Addr::V4(s), Addr::V4(d)) => h = mix(h, (u64::from(s) << 32) | u64::from(d)),
        (s, d) => {
            for a in [s, d] {
                let v = match a {
                    Addr::V4(a) => u128::from(a),
                    Addr::V6(a) => a,
                };
                h = mix(mix(h, v as u64), (v >> 64) as u64);
            }
        }
    }
    if matches!(meta.protocol, PROTO_TCP | PROTO_UDP)
        && let Some(ports) = meta.l4_offset.and_then(|o| pkt.get(o..o + 4))
    {
        h = mix(
            h,
            u64::from(u32::from_be_bytes([ports[0], ports[1], ports[2], ports[3]])),
        );
    }
    (h ^ (h >> 32)) as u32
}

/// Decrements the IPv4 TTL (fixing the header checksum) or IPv6 hop limit.
/// Returns false, leaving the packet unchanged, when it would expire (TTL ≤ 1).
pub fn decrement_ttl(pkt: &mut [u8], meta: &IpMeta) -> bool {
    match meta.dst {
        Addr::V4(_) => {
            if pkt[8] <= 1 {
                return false;
            }
            let old = u16::from_be_bytes([pkt[8], pkt[9]]);
            pkt[8] -= 1;
            let new = u16::from_be_bytes([pkt[8], pkt[9]]);
            let c = checksum::update16(u16::from_be_bytes([pkt[10], pkt[11]]), old, new);
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
            true
        }
        Addr::V6(_) => {
            if pkt[7] <= 1 {
                return false;
            }
            pkt[7] -= 1;
            true
        }
    }
}

/// Lowers the MSS option of a TCP SYN to at most `max_mss`, updating the TCP checksum.
/// Returns true when the packet was changed. Non-SYN, non-TCP and option-less packets are
/// left alone. Work bound: at most 40 bytes of TCP options scanned.
pub fn clamp_mss(pkt: &mut [u8], meta: &IpMeta, max_mss: u16) -> bool {
    if meta.protocol != PROTO_TCP {
        return false;
    }
    let Some(off) = meta.l4_offset else {
        return false;
    };
    let Some(tcp) = pkt.get_mut(off..meta.total_len) else {
        return false;
    };
    if tcp.len() < 20 || tcp[13] & TCP_SYN == 0 {
        return false;
    }
    let data_off = usize::from(tcp[12] >> 4) * 4;
    if data_off < 20 || data_off > tcp.len() {
        return false;
    }
    let mut i = 20;
    while i < data_off {
        match tcp[i] {
            0 => return false,
            1 => i += 1,
            kind => {
                let Some(&len) = tcp.get(i + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || i + len > data_off {
                    return false;
                }
                if kind == 2 && len == 4 {
                    let old = u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]);
                    if old <= max_mss {
                        return false;
                    }
                    tcp[i + 2..i + 4].copy_from_slice(&max_mss.to_be_bytes());
                    let c =
                        checksum::update16(u16::from_be_bytes([tcp[16], tcp[17]]), old, max_mss);
                    tcp[16..18].copy_from_slice(&c.to_be_bytes());
                    return true;
                }
                i += len;
            }
        }
    }
    false
}

/// The traffic-class byte (DSCP << 2 | ECN) of an IPv4 or IPv6 packet.
pub fn traffic_class(pkt: &[u8], meta: &IpMeta) -> u8 {
    match meta.dst {
        Addr::V4(_) => pkt[1],
        Addr::V6(_) => (pkt[0] << 4) | (pkt[1] >> 4),
    }
}

/// Sets the DSCP (keeping ECN), fixing the IPv4 header checksum incrementally.
pub fn set_dscp(pkt: &mut [u8], meta: &IpMeta, dscp: u8) {
    let tc = (dscp & 0x3f) << 2 | (traffic_class(pkt, meta) & 3);
    match meta.dst {
        Addr::V4(_) => {
            let old = u16::from_be_bytes([pkt[0], pkt[1]]);
            pkt[1] = tc;
            let new = u16::from_be_bytes([pkt[0], pkt[1]]);
            let c = checksum::update16(u16::from_be_bytes([pkt[10], pkt[11]]), old, new);
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
        }
        Addr::V6(_) => {
            pkt[0] = (pkt[0] & 0xf0) | (tc >> 4);
            pkt[1] = (pkt[1] & 0x0f) | (tc << 4);
        }
    }
}

/// Most IPv6 extension headers walked to find the upper-layer header.
pub const MAX_EXT_HEADERS: usize = 6;
const TCP_SYN: u8 = 0x02;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An IPv4 TCP SYN with one MSS option, correct checksums.
    pub(crate) fn tcp_syn_v4(mss: u16) -> Vec<u8> {
        let mut p = vec![0u8; 44];
        p[..20].copy_from_slice(&[
            0x45, 0, 0, 44, 0, 1, 0x40, 0, 64, 6, 0, 0, 203, 0, 113, 2, 203, 0, 113, 66,
        ]);
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let tcp = &mut p[20..];
        tcp[0..4].copy_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        tcp[12] = 6 << 4;
        tcp[13] = TCP_SYN;
        tcp[14..16].copy_from_slice(&[0xff, 0xff]);
        tcp[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
        fix_tcp_checksum_v4(&mut p);
        p
    }

    pub(crate) fn fix_tcp_checksum_v4(p: &mut [u8]) {
        p[36..38].fill(0);
        let (src, dst) = ([p[12], p[13], p[14], p[15]], [p[16], p[17], p[18], p[19]]);
        let sum = checksum::pseudo_v4(&src, &dst, 6, (p.len() - 20) as u16);
        let c = !checksum::fold(checksum::accumulate(sum, &p[20..]));
        p[36..38].copy_from_slice(&c.to_be_bytes());
    }

    fn tcp_valid_v4(p: &[u8]) -> bool {
        let (src, dst) = ([p[12], p[13], p[14], p[15]], [p[16], p[17], p[18], p[19]]);
        let sum = checksum::pseudo_v4(&src, &dst, 6, (p.len() - 20) as u16);
        checksum::fold(checksum::accumulate(sum, &p[20..])) == 0xffff
    }

    #[test]
    fn parses_v4() {
        let p = tcp_syn_v4(1460);
        let m = parse(&p).unwrap();
        assert_eq!(m.dst, Addr::V4(0xcb00_7142));
        assert_eq!(m.protocol, PROTO_TCP);
        assert_eq!(m.l4_offset, Some(20));
        assert!(m.dont_fragment);
    }

    #[test]
    fn rejects_short_and_inconsistent() {
        assert_eq!(parse(&[]), Err(InnerMalformed));
        assert_eq!(parse(&[0x45; 10]), Err(InnerMalformed));
        let mut p = tcp_syn_v4(1460);
        p[3] = 200; // total length beyond buffer
        assert_eq!(parse(&p), Err(InnerMalformed));
        assert_eq!(parse(&[0x75; 40]), Err(InnerMalformed));
    }

    #[test]
    fn clamps_mss_with_valid_checksum() {
        let mut p = tcp_syn_v4(1460);
        let m = parse(&p).unwrap();
        assert!(clamp_mss(&mut p, &m, 1360));
        assert_eq!(u16::from_be_bytes([p[42], p[43]]), 1360);
        assert!(tcp_valid_v4(&p));
        // Already small enough: untouched.
        assert!(!clamp_mss(&mut p, &m, 1400));
    }

    #[test]
    fn ttl_decrement_keeps_header_checksum_valid() {
        let mut p = tcp_syn_v4(1460);
        let m = parse(&p).unwrap();
        assert!(decrement_ttl(&mut p, &m));
        assert_eq!(p[8], 63);
        assert_eq!(checksum::checksum(&p[..20]), 0);
        p[8] = 1;
        assert!(!decrement_ttl(&mut p, &m));
    }

    #[test]
    fn sets_dscp_keeping_ecn_and_checksum() {
        let mut p = tcp_syn_v4(1460);
        p[1] = 0b0000_0010;
        p[10..12].fill(0);
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let m = parse(&p).unwrap();
        set_dscp(&mut p, &m, 46);
        assert_eq!(traffic_class(&p, &m), 46 << 2 | 2);
        assert_eq!(checksum::checksum(&p[..20]), 0);
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[1] = 0x1f; // ECN 1, flow label bits
        v6[4..6].copy_from_slice(&0u16.to_be_bytes());
        let m6 = parse(&v6).unwrap();
        set_dscp(&mut v6, &m6, 34);
        assert_eq!(traffic_class(&v6, &m6), 34 << 2 | 1);
        assert_eq!(v6[1] & 0x0f, 0x0f, "flow label untouched");
        assert_eq!(v6[0] >> 4, 6);
    }

    #[test]
    fn parses_v6_through_extension_headers() {
        let mut p = vec![0u8; 40 + 8 + 20];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&28u16.to_be_bytes());
        p[6] = 0; // hop-by-hop
        p[7] = 64;
        p[40] = PROTO_TCP;
        let m = parse(&p).unwrap();
        assert_eq!(m.protocol, PROTO_TCP);
        assert_eq!(m.l4_offset, Some(48));
    }

    #[test]
    fn flow_hash_depends_on_ports() {
        let a = tcp_syn_v4(1460);
        let mut b = a.clone();
        b[21] ^= 1;
        let (ma, mb) = (parse(&a).unwrap(), parse(&b).unwrap());
        assert_eq!(flow_hash(&a, &ma), flow_hash(&a.clone(), &ma));
        assert_ne!(flow_hash(&a, &ma), flow_hash(&b, &mb));
    }
}
