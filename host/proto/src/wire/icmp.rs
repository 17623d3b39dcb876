//! ICMP "Fragmentation Needed" (RFC 792/1191) and ICMPv6 "Packet Too Big" (RFC 4443) built in
//! place in front of the offending packet, which becomes the quoted data.
//!
//! The caller's frame must have [`ERROR_PREFIX_V6`] bytes of headroom before the packet. The
//! rules against ICMP storms are applied: no error about an ICMP error, a non-first fragment,
//! a broadcast/multicast (IPv4) destination, or an unspecified/multicast source.

use super::checksum;
use super::ip::{Addr, IpMeta, PROTO_ICMP, PROTO_ICMPV6};

/// Bytes an IPv4 error adds in front of the quoted packet (IPv4 + ICMP header).
pub const ERROR_PREFIX_V4: usize = 28;
/// Bytes an IPv6 error adds in front of the quoted packet (IPv6 + ICMPv6 header).
pub const ERROR_PREFIX_V6: usize = 48;

/// Rewrites `frame[start..start + len]` (an IP packet described by `meta`) into a too-big
/// error from `src` back to the packet's source, advertising `mtu`. Returns the error's
/// `(start, len)` in `frame`, or `None` when no error may be sent (see module doc) or `src`
/// is of the other family.
pub fn too_big(
    frame: &mut [u8],
    start: usize,
    len: usize,
    meta: &IpMeta,
    src: Addr,
    mtu: u32,
) -> Option<(usize, usize)> {
    let pkt = frame.get(start..start + len)?;
    if meta.l4_offset.is_none() || is_icmp_error(pkt, meta) {
        return None;
    }
    match (meta.src, src) {
        (Addr::V4(orig_src), Addr::V4(src)) => {
            if orig_src == 0
                || meta.src.is_multicast_or_broadcast()
                || meta.dst.is_multicast_or_broadcast()
            {
                return None;
            }
            let new_start = start.checked_sub(ERROR_PREFIX_V4)?;
            let quote = len.min(576 - ERROR_PREFIX_V4);
            let total = ERROR_PREFIX_V4 + quote;
            let out = &mut frame[new_start..new_start + total];
            out[..12].copy_from_slice(&[0x45, 0xc0, 0, 0, 0, 0, 0, 0, 64, PROTO_ICMP, 0, 0]);
            out[12..16].copy_from_slice(&src.to_be_bytes());
            out[16..20].copy_from_slice(&orig_src.to_be_bytes());
            out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            let c = checksum::checksum(&out[..20]);
            out[10..12].copy_from_slice(&c.to_be_bytes());
            let mtu = mtu.min(u32::from(u16::MAX)) as u16;
            out[20..28].copy_from_slice(&[3, 4, 0, 0, 0, 0, (mtu >> 8) as u8, mtu as u8]);
            let c = checksum::checksum(&out[20..]);
            out[22..24].copy_from_slice(&c.to_be_bytes());
            Some((new_start, total))
        }
        (Addr::V6(orig_src), Addr::V6(src)) => {
            if orig_src == 0 || meta.src.is_multicast_or_broadcast() {
                return None;
            }
            let new_start = start.checked_sub(ERROR_PREFIX_V6)?;
            let quote = len.min(MIN_MTU_V6 - ERROR_PREFIX_V6);
            let total = ERROR_PREFIX_V6 + quote;
            let out = &mut frame[new_start..new_start + total];
            let upper = (8 + quote) as u16;
            out[..8].copy_from_slice(&[
                0x60,
                0,
                0,
                0,
                (upper >> 8) as u8,
                upper as u8,
                PROTO_ICMPV6,
                64,
            ]);
            out[8..24].copy_from_slice(&src.to_be_bytes());
            out[24..40].copy_from_slice(&orig_src.to_be_bytes());
            out[40..44].copy_from_slice(&[2, 0, 0, 0]);
            out[44..48].copy_from_slice(&mtu.to_be_bytes());
            let sum = checksum::pseudo_v6(
                &src.to_be_bytes(),
                &orig_src.to_be_bytes(),
                PROTO_ICMPV6,
                u32::from(upper),
            );
            let c = !checksum::fold(checksum::accumulate(sum, &out[40..]));
            out[42..44].copy_from_slice(&c.to_be_bytes());
            Some((new_start, total))
        }
        _ => None,
    }
}

fn is_icmp_error(pkt: &[u8], meta: &IpMeta) -> bool {
    let ty = meta.l4_offset.and_then(|o| pkt.get(o)).copied();
    match (meta.protocol, ty) {
        // Echo reply/request, timestamp and info messages are queries; the rest are errors.
        (PROTO_ICMP, Some(t)) => !matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18),
        (PROTO_ICMPV6, Some(t)) => t < 128,
        (PROTO_ICMP | PROTO_ICMPV6, None) => true,
        _ => false,
    }
}

/// The IPv6 minimum MTU, which bounds an ICMPv6 error's size.
const MIN_MTU_V6: usize = 1280;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::{self, tests::tcp_syn_v4};

    #[test]
    fn builds_valid_frag_needed() {
        let pkt = tcp_syn_v4(1460);
        let mut frame = vec![0u8; 64 + pkt.len()];
        frame[64..].copy_from_slice(&pkt);
        let meta = ip::parse(&pkt).unwrap();
        let src = Addr::V4(0xc633_6401);
        let (s, l) = too_big(&mut frame, 64, pkt.len(), &meta, src, 1400).unwrap();
        assert_eq!((s, l), (36, 28 + pkt.len()));
        let out = &frame[s..s + l];
        assert_eq!(checksum::checksum(&out[..20]), 0);
        assert_eq!(checksum::checksum(&out[20..]), 0);
        assert_eq!(&out[20..22], &[3, 4]);
        assert_eq!(u16::from_be_bytes([out[26], out[27]]), 1400);
        assert_eq!(
            &out[16..20],
            &pkt[12..16],
            "sent back to the original source"
        );
        assert_eq!(&out[28..], &pkt[..]);
        // The error itself must never trigger another error.
        let err = out.to_vec();
        let em = ip::parse(&err).unwrap();
        let mut f2 = vec![0u8; 64 + err.len()];
        f2[64..].copy_from_slice(&err);
        assert_eq!(too_big(&mut f2, 64, err.len(), &em, src, 1400), None);
    }

    #[test]
    fn builds_valid_packet_too_big() {
        let mut pkt = vec![0u8; 1500];
        pkt[0] = 0x60;
        pkt[4..6].copy_from_slice(&1460u16.to_be_bytes());
        pkt[6] = 17;
        pkt[7] = 64;
        pkt[8..24].copy_from_slice(&0x2001_0db8_0001_0000_0000_0000_0000_0002u128.to_be_bytes());
        pkt[24..40].copy_from_slice(&0x2001_0db8_0002_0000_0000_0000_0000_0002u128.to_be_bytes());
        let meta = ip::parse(&pkt).unwrap();
        let mut frame = vec![0u8; 64 + pkt.len()];
        frame[64..].copy_from_slice(&pkt);
        let src = Addr::V6(0x2001_0db8_0100_0000_0000_0000_0000_0001);
        let (s, l) = too_big(&mut frame, 64, pkt.len(), &meta, src, 1400).unwrap();
        assert_eq!(l, 1280);
        let out = &frame[s..s + l];
        let sum = checksum::pseudo_v6(
            out[8..24].try_into().unwrap(),
            out[24..40].try_into().unwrap(),
            58,
            (l - 40) as u32,
        );
        assert_eq!(
            checksum::fold(checksum::accumulate(sum, &out[40..])),
            0xffff
        );
        assert_eq!(&out[40..42], &[2, 0]);
        assert_eq!(u32::from_be_bytes(out[44..48].try_into().unwrap()), 1400);
    }
}
