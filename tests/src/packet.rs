//! Hand-built test packets and small parsers for what the harness captures.
//!
//! Pure byte manipulation: no sockets, no namespaces. The parsers only read packets the
//! harness captured itself and must never panic on short input.

use std::net::Ipv4Addr;

/// The Internet checksum (RFC 1071) of `data`, ready to store big-endian.
pub fn inet_checksum(data: &[u8]) -> u16 {
    !fold(ones_sum(data, 0))
}

/// If `packet` (a complete IPv4 or IPv6 datagram, IPv6 without extension headers) carries
/// TCP or UDP, its protocol and whether the transport checksum over the pseudo-header
/// verifies (a UDP-over-IPv4 checksum of zero, "none sent", counts as verified). `None` for
/// other protocols, fragments, and packets shorter than their IP length says.
pub fn transport_checksum(packet: &[u8]) -> Option<(u8, bool)> {
    let (protocol, pseudo, segment) = match packet.first()? >> 4 {
        4 => {
            let header_len = usize::from(packet[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
            let fragment = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x3fff;
            if fragment != 0 || total < header_len {
                return None;
            }
            let protocol = *packet.get(9)?;
            let segment = packet.get(header_len..total)?;
            let length = u16::try_from(segment.len()).ok()?;
            let pseudo = ones_sum(packet.get(12..20)?, 0) + u32::from(protocol) + u32::from(length);
            (protocol, pseudo, segment)
        }
        6 => {
            let length = u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]);
            let protocol = *packet.get(6)?;
            let segment = packet.get(IPV6_HEADER..IPV6_HEADER + usize::from(length))?;
            let pseudo = ones_sum(packet.get(8..40)?, 0) + u32::from(protocol) + u32::from(length);
            (protocol, pseudo, segment)
        }
        _ => return None,
    };
    let checksum_at = match protocol {
        IPPROTO_TCP if segment.len() >= TCP_HEADER => 16,
        IPPROTO_UDP if segment.len() >= UDP_HEADER => 6,
        _ => return None,
    };
    let stored = u16::from_be_bytes([segment[checksum_at], segment[checksum_at + 1]]);
    if protocol == IPPROTO_UDP && stored == 0 && packet[0] >> 4 == 4 {
        return Some((protocol, true));
    }
    Some((protocol, fold(ones_sum(segment, pseudo)) == 0xffff))
}

/// A complete IPv4 packet holding an ICMP echo request with `payload_len` pattern bytes.
pub fn ipv4_icmp_echo(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    seq: u16,
    payload_len: usize,
) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&ident.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend((0..payload_len).map(|i| i as u8));
    let sum = inet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let total = u16::try_from(IPV4_HEADER + icmp.len()).expect("test packet fits IPv4");
    let mut packet = vec![0x45, 0];
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0x40, 0, 64, IPPROTO_ICMP, 0, 0]); // id, DF, TTL, proto
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    let sum = inet_checksum(&packet);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(&icmp);
    packet
}

/// If `packet` (an IPv4 or IPv6 datagram, no link header) is a TCP SYN without ACK to
/// `dst_port`, its MSS option: `Some(Some(mss))`, or `Some(None)` when it has none.
/// `None` for any other packet, including malformed ones.
pub fn syn_mss(packet: &[u8], dst_port: u16) -> Option<Option<u16>> {
    let tcp = match packet.first()? >> 4 {
        4 => {
            let header_len = usize::from(packet[0] & 0x0f) * 4;
            (*packet.get(9)? == IPPROTO_TCP).then_some(())?;
            packet.get(header_len..)?
        }
        // Only a bare IPv6 header: the harness never adds extension headers.
        6 => {
            (*packet.get(6)? == IPPROTO_TCP).then_some(())?;
            packet.get(IPV6_HEADER..)?
        }
        _ => return None,
    };
    let port = u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]);
    let flags = *tcp.get(13)?;
    if port != dst_port || flags & TCP_SYN == 0 || flags & TCP_ACK != 0 {
        return None;
    }
    let data_offset = usize::from(tcp.get(12)? >> 4) * 4;
    let mut options = tcp.get(TCP_HEADER..data_offset)?;
    while let Some(&kind) = options.first() {
        match kind {
            TCPOPT_END => break,
            TCPOPT_NOP => options = &options[1..],
            _ => {
                let len = usize::from(*options.get(1)?);
                if len < 2 || len > options.len() {
                    return None;
                }
                if kind == TCPOPT_MSS && len == 4 {
                    return Some(Some(u16::from_be_bytes([options[2], options[3]])));
                }
                options = &options[len..];
            }
        }
    }
    Some(None)
}

/// What [`parse_tunnelled`] and [`parse_ip`] read from a captured packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The outer IPv4 header's TOS byte (DSCP << 2 | ECN); `None` for a packet that was
    /// not tunnelled.
    pub outer_tos: Option<u8>,
    /// The (inner) IP packet's TOS / traffic-class byte.
    pub tos: u8,
    /// Its IP protocol (IPv6: the first next header).
    pub protocol: u8,
    /// TCP/UDP source port (0 for other protocols and later fragments).
    pub src_port: u16,
    /// TCP/UDP destination port (0 likewise).
    pub dst_port: u16,
}

/// Parses an IPv4 packet (as a raw socket delivers it, header included) carrying GRE
/// (protocol 47) or GRE-in-UDP (UDP to `gre_udp_port`), and the IPv4 or IPv6 packet inside.
/// `None` for anything else or anything malformed.
pub fn parse_tunnelled(packet: &[u8], gre_udp_port: u16) -> Option<Seen> {
    if packet.first()? >> 4 != 4 {
        return None;
    }
    let outer_tos = *packet.get(1)?;
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    let payload = packet.get(header_len..)?;
    let gre = match *packet.get(9)? {
        IPPROTO_GRE => payload,
        IPPROTO_UDP if u16::from_be_bytes([*payload.get(2)?, *payload.get(3)?]) == gre_udp_port => {
            payload.get(UDP_HEADER..)?
        }
        _ => return None,
    };
    let flags = *gre.first()?;
    let mut gre_len = GRE_HEADER;
    for (bit, word) in [(GRE_C | GRE_R, 4), (GRE_K, 4), (GRE_S, 4)] {
        if flags & bit != 0 {
            gre_len += word;
        }
    }
    match u16::from_be_bytes([*gre.get(2)?, *gre.get(3)?]) {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => {}
        _ => return None,
    }
    let inner = parse_ip(gre.get(gre_len..)?)?;
    Some(Seen {
        outer_tos: Some(outer_tos),
        ..inner
    })
}

/// Parses a plain IPv4 or IPv6 packet (IPv6 without extension headers).
pub fn parse_ip(packet: &[u8]) -> Option<Seen> {
    let (tos, protocol, l4) = match packet.first()? >> 4 {
        4 => {
            let header_len = usize::from(packet[0] & 0x0f) * 4;
            let fragment_offset = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x1fff;
            let l4 = (fragment_offset == 0)
                .then(|| packet.get(header_len..))
                .flatten();
            (*packet.get(1)?, *packet.get(9)?, l4)
        }
        6 => {
            let tc = (packet[0] & 0x0f) << 4 | packet.get(1)? >> 4;
            (tc, *packet.get(6)?, packet.get(IPV6_HEADER..))
        }
        _ => return None,
    };
    let ports = match (protocol, l4) {
        (IPPROTO_TCP | IPPROTO_UDP, Some(l4)) if l4.len() >= 4 => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
        _ => (0, 0),
    };
    Some(Seen {
        outer_tos: None,
        tos,
        protocol,
        src_port: ports.0,
        dst_port: ports.1,
    })
}

/// `initial` plus the big-endian 16-bit words of `data` (an odd last byte padded with zero),
/// not yet folded. Inputs up to 64 KiB cannot overflow.
fn ones_sum(data: &[u8], initial: u32) -> u32 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Folds the carries of a one's-complement sum into 16 bits.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const TCP_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const GRE_HEADER: usize = 4;
const GRE_C: u8 = 0x80;
const GRE_R: u8 = 0x40;
const GRE_K: u8 = 0x20;
const GRE_S: u8 = 0x10;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_GRE: u8 = 47;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const TCPOPT_END: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MSS: u8 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_valid_packet_is_zero() {
        let packet = ipv4_icmp_echo(
            Ipv4Addr::new(203, 0, 113, 2),
            Ipv4Addr::new(203, 0, 113, 194),
            7,
            1,
            33,
        );
        assert_eq!(packet.len(), 20 + 8 + 33);
        assert_eq!(inet_checksum(&packet[..20]), 0);
        assert_eq!(inet_checksum(&packet[20..]), 0);
    }

    #[test]
    fn transport_checksums_verify_and_catch_a_flipped_bit() {
        // IPv4/TCP, 20-byte header and 5 payload bytes; checksum computed by hand below.
        let mut v4 = vec![0x45, 0, 0, 45, 0, 0, 0x40, 0, 64, IPPROTO_TCP, 0, 0];
        v4.extend_from_slice(&[203, 0, 113, 2, 203, 0, 113, 66]);
        v4.extend_from_slice(&[0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0]);
        v4.extend_from_slice(&[0x50, TCP_ACK, 0xff, 0xff, 0, 0, 0, 0]);
        v4.extend_from_slice(b"hello");
        let mut pseudo = v4[12..20].to_vec();
        pseudo.extend_from_slice(&[0, IPPROTO_TCP, 0, 25]);
        pseudo.extend_from_slice(&v4[20..]);
        let sum = inet_checksum(&pseudo);
        v4[36..38].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(transport_checksum(&v4), Some((IPPROTO_TCP, true)));
        let mut bad = v4.clone();
        bad[44] ^= 0x01;
        assert_eq!(transport_checksum(&bad), Some((IPPROTO_TCP, false)));
        // Trailing bytes beyond the IP length (link padding) are ignored.
        let mut padded = v4.clone();
        padded.extend_from_slice(&[0xaa; 7]);
        assert_eq!(transport_checksum(&padded), Some((IPPROTO_TCP, true)));

        // IPv6/UDP with 3 payload bytes.
        let mut v6 = vec![0x60, 0, 0, 0, 0, 11, IPPROTO_UDP, 64];
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        v6.extend_from_slice(&[0x9c, 0x40, 0x4e, 0x20, 0, 11, 0, 0, 1, 2, 3]);
        let mut pseudo = v6[8..40].to_vec();
        pseudo.extend_from_slice(&[0, 0, 0, 11, 0, 0, 0, IPPROTO_UDP]);
        pseudo.extend_from_slice(&v6[40..]);
        let sum = inet_checksum(&pseudo);
        v6[46..48].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(transport_checksum(&v6), Some((IPPROTO_UDP, true)));
        v6[41] ^= 0x80;
        assert_eq!(transport_checksum(&v6), Some((IPPROTO_UDP, false)));
        // Short input never panics.
        for len in 0..v4.len() {
            assert_eq!(transport_checksum(&v4[..len]), None);
        }
        for len in 0..v6.len() {
            assert_eq!(transport_checksum(&v6[..len]), None);
        }
    }

    #[test]
    fn tunnelled_packets_yield_outer_tos_and_inner_ports() {
        let mut inner = vec![0x45, 0xb8, 0, 28, 0, 0, 0x40, 0, 64, IPPROTO_UDP, 0, 0];
        inner.extend_from_slice(&[203, 0, 113, 2, 203, 0, 113, 66]);
        inner.extend_from_slice(&[0x9c, 0x40, 0x4e, 0x20, 0, 8, 0, 0]); // 40000 -> 20000
        let outer = |protocol: u8, tos: u8, payload: &[u8]| {
            let mut p = vec![0x45, tos, 0, 0, 0, 0, 0x40, 0, 64, protocol, 0, 0];
            p.extend_from_slice(&[192, 0, 2, 11, 192, 0, 2, 1]);
            p.extend_from_slice(payload);
            p
        };
        // GRE with a key.
        let mut gre = vec![GRE_K, 0, 0x08, 0x00, 0, 0, 0, 42];
        gre.extend_from_slice(&inner);
        let seen = parse_tunnelled(&outer(IPPROTO_GRE, 0xb8, &gre), 4754).expect("GRE");
        assert_eq!(
            seen,
            Seen {
                outer_tos: Some(0xb8),
                tos: 0xb8,
                protocol: IPPROTO_UDP,
                src_port: 40000,
                dst_port: 20000
            }
        );
        // GRE-in-UDP to the right port only.
        let mut udp = vec![0xc0, 0x00, 0x12, 0x92, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        udp.extend_from_slice(&inner);
        let seen = parse_tunnelled(&outer(IPPROTO_UDP, 0x60, &udp), 4754).expect("GRE-in-UDP");
        assert_eq!((seen.outer_tos, seen.dst_port), (Some(0x60), 20000));
        assert_eq!(parse_tunnelled(&outer(IPPROTO_UDP, 0x60, &udp), 4755), None);
        // Short input never panics.
        let full = outer(IPPROTO_GRE, 0, &gre);
        for len in 0..full.len() {
            let _ = parse_tunnelled(&full[..len], 4754);
        }
    }

    #[test]
    fn syn_mss_finds_the_option_and_ignores_others() {
        let mut syn = vec![0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, IPPROTO_TCP, 0, 0];
        syn.extend_from_slice(&[203, 0, 113, 2, 203, 0, 113, 66]);
        syn.extend_from_slice(&[0x9c, 0x40, 0x1f, 0x90]); // ports 40000 -> 8080
        syn.extend_from_slice(&[0; 8]); // seq, ack
        syn.extend_from_slice(&[0x60, TCP_SYN, 0xff, 0xff, 0, 0, 0, 0]);
        syn.extend_from_slice(&[TCPOPT_MSS, 4, 0x05, 0xb4]); // 1460
        assert_eq!(syn_mss(&syn, 8080), Some(Some(1460)));
        assert_eq!(syn_mss(&syn, 8081), None);
        assert_eq!(syn_mss(&syn[..30], 8080), None);
        syn[33] = TCP_SYN | TCP_ACK;
        assert_eq!(syn_mss(&syn, 8080), None);
    }
}
