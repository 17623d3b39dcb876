//! DMVPN phase 3 redirect on a hub: when a packet from one spoke is hairpinned to another, the
//! hub tells the sender's side, with an NHRP Traffic Indication, that a shortcut exists
//! ([`traffic_indication`]), at most once per (source, destination) pair per interval
//! ([`RedirectLimiter`]).
//!
//! The limiter is meant for the dataplane workers: after construction it never allocates,
//! takes no lock and does a fixed amount of work per call. Building the indication is control
//! work (it allocates the message) and belongs after the limiter said yes. Nothing here reads
//! a clock, sends or logs.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::wire::nhrp::{Body, Family, NhrpRepr};

use super::auth;

/// Rate limit of Traffic Indications per (source, destination) pair, shared by any number of
/// dataplane workers.
///
/// A fixed table of `buckets × 8` 64-bit slots, allocated once by [`RedirectLimiter::new`].
/// A pair hashes (keyed by the caller's seed, so senders cannot aim at one bucket without
/// knowing it) to one bucket of eight slots, 64 bytes, and to a 24-bit fingerprint; a slot
/// holds a fingerprint and the time of the last indication allowed for it.
///
/// Guarantees: a pair is never allowed twice within `interval`, except that two workers
/// racing on the same new pair may both be allowed once (slots are updated with one
/// compare-and-swap, never with a retry loop), and except for a pair whose fingerprint
/// collides with another live pair of its bucket (chance 2⁻²⁴ per pair), which is then
/// limited together with it. When all eight slots of a bucket are live, a new pair is
/// refused until one of them ages out, so under a flood of distinct pairs indications are
/// delayed (by at most `interval` per bucket turnover), never multiplied.
#[derive(Debug)]
pub struct RedirectLimiter {
    slots: Box<[AtomicU64]>,
    /// Bucket count minus one (the count is a power of two).
    mask: usize,
    interval_ms: u64,
    seed: u64,
}

impl RedirectLimiter {
    /// A limiter with room for about `capacity` live pairs (rounded up to whole buckets of
    /// eight, a power-of-two number of buckets, at least one), allowing one indication per
    /// pair per `interval` (clamped to about 17 years). FRR's documented setup allows 4 per
    /// minute per pair of /24s; Cisco's `ip nhrp redirect timeout` defaults to 8 s. `seed`
    /// keys the hash: pick it at random at startup.
    pub fn new(capacity: usize, interval: Duration, seed: u64) -> Self {
        let buckets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        let interval_ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .min(MAX_INTERVAL_MS);
        RedirectLimiter {
            slots: (0..buckets * WAYS).map(|_| AtomicU64::new(EMPTY)).collect(),
            mask: buckets - 1,
            interval_ms,
            seed,
        }
    }

    /// Whether a Traffic Indication about traffic from `src` to `dst` may be sent at `now`;
    /// a `true` records it, so the pair is refused until `now + interval`. `now` must not go
    /// backwards (a time before a slot's record counts as expired).
    ///
    /// Work bound: one keyed hash of the two addresses, at most eight relaxed loads from one
    /// 64-byte bucket and at most one compare-and-swap. No allocation, no lock.
    pub fn allow(&self, now: Duration, src: IpAddr, dst: IpAddr) -> bool {
        let now_ms = (now.as_millis() as u64) & TIME_MASK;
        let h = self.hash(src, dst);
        // The low bits pick the bucket, the top 24 bits are the fingerprint (never 0: that
        // marks an empty slot).
        let fingerprint = (h >> TIME_BITS).max(1);
        let start = (h as usize & self.mask) * WAYS;
        let bucket = &self.slots[start..start + WAYS];
        let fresh = (fingerprint << TIME_BITS) | now_ms;
        let mut reusable = None;
        for slot in bucket {
            let v = slot.load(Ordering::Relaxed);
            let age = now_ms.wrapping_sub(v & TIME_MASK) & TIME_MASK;
            let live = v != EMPTY && age < self.interval_ms;
            if v >> TIME_BITS == fingerprint {
                return !live && swap(slot, v, fresh);
            }
            if !live && reusable.is_none() {
                reusable = Some((slot, v));
            }
        }
        reusable.is_some_and(|(slot, v)| swap(slot, v, fresh))
    }

    /// Slots in the table (live pairs it can hold when they spread evenly).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// A keyed 64-bit mix of the pair (not cryptographic; the key only spreads pairs that a
    /// sender could otherwise choose to collide).
    fn hash(&self, src: IpAddr, dst: IpAddr) -> u64 {
        let mut h = self.seed ^ 0x243f_6a88_85a3_08d3;
        let mut mix = |v: u64| {
            h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 29;
        };
        for addr in [src, dst] {
            let (hi, lo) = match addr {
                IpAddr::V4(a) => (4, u64::from(u32::from(a))),
                IpAddr::V6(a) => {
                    let v = u128::from(a);
                    ((v >> 64) as u64 ^ (6 << 56), v as u64)
                }
            };
            mix(hi);
            mix(lo);
        }
        // Final avalanche (MurmurHash3's fmix64) so every input bit reaches the top bits.
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// The Traffic Indication a hub sends, as FRR nhrpd builds it in `nhrp_peer_send_indication`
/// (nhrpd/nhrp_peer.c): source NBMA and protocol addresses are the hub's own (`own_nbma`,
/// `own_proto`), the destination protocol address is the *source* of the redirected packet
/// (`to_proto`; the indication travels back to the spoke that sent it), hop count 1, code 0,
/// then the packet that triggered it. nhrpd gets that packet from the kernel's NFLOG with the
/// `--nflog-range 128` its documentation prescribes, so at most the first
/// [`INDICATION_PACKET_LEN`] bytes of `packet` (its IP header and the start of its payload)
/// are carried. With a `secret`, the cleartext Authentication extension follows
/// (`nhrp_packet_complete` adds it to every message it completes); without one there are no
/// extensions.
///
/// The message families follow `own_nbma` and `own_proto`; `to_proto` must be of the
/// family of `own_proto`, or [`NhrpRepr::emit`] refuses the message.
pub fn traffic_indication(
    own_nbma: IpAddr,
    own_proto: IpAddr,
    to_proto: IpAddr,
    packet: &[u8],
    secret: Option<&[u8]>,
) -> NhrpRepr {
    NhrpRepr {
        nbma: family(own_nbma),
        protocol: family(own_proto),
        snap: [0; 5],
        hop_count: INDICATION_HOP_COUNT,
        src_nbma: Some(own_nbma),
        src_nbma_subaddress: Vec::new(),
        src_proto: Some(own_proto),
        dst_proto: Some(to_proto),
        body: Body::TrafficIndication {
            code: TRAFFIC_CODE,
            packet: packet[..packet.len().min(INDICATION_PACKET_LEN)].to_vec(),
        },
        extensions: secret.map(auth::extension).into_iter().collect(),
    }
}

/// Most bytes of the redirected packet a Traffic Indication carries (FRR's NFLOG range).
pub const INDICATION_PACKET_LEN: usize = 128;

fn family(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

fn swap(slot: &AtomicU64, current: u64, new: u64) -> bool {
    slot.compare_exchange(current, new, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
}

/// Slots per bucket: eight 64-bit words, one cache line.
const WAYS: usize = 8;
/// Low bits of a slot holding the time in milliseconds (wrapping every ~34.8 years).
const TIME_BITS: u32 = 40;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
/// Longest interval the wrapping time arithmetic supports.
const MAX_INTERVAL_MS: u64 = 1 << (TIME_BITS - 1);
const EMPTY: u64 = 0;
/// ar$hopcnt of a Traffic Indication (FRR: `hdr->hop_count = 1`).
const INDICATION_HOP_COUNT: u8 = 1;
/// Traffic code of the redirect (0 in what FRR and Cisco send).
const TRAFFIC_CODE: u16 = 0;

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::wire::nhrp::{Extension, ExtensionBody};

    fn v4(d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, d))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn one_indication_per_pair_per_interval() {
        let l = RedirectLimiter::new(64, Duration::from_secs(8), 7);
        assert!(l.allow(ms(1000), v4(2), v4(66)));
        assert!(!l.allow(ms(1001), v4(2), v4(66)));
        assert!(!l.allow(ms(8999), v4(2), v4(66)));
        // Direction matters: the reverse pair is a different redirect.
        assert!(l.allow(ms(1002), v4(66), v4(2)));
        assert!(l.allow(ms(9000), v4(2), v4(66)));
        assert!(!l.allow(ms(9000), v4(2), v4(66)));
    }

    #[test]
    fn ipv6_pairs_are_limited_too() {
        let a: IpAddr = "2001:db8:1::2".parse().unwrap();
        let b: IpAddr = "2001:db8:2::2".parse().unwrap();
        let l = RedirectLimiter::new(8, Duration::from_secs(1), 1);
        assert!(l.allow(ms(0), a, b));
        assert!(!l.allow(ms(999), a, b));
        assert!(l.allow(ms(1000), a, b));
    }

    #[test]
    fn a_full_bucket_refuses_new_pairs_until_one_ages_out() {
        // One bucket of eight slots: the ninth live pair is refused, never evicting.
        let l = RedirectLimiter::new(1, Duration::from_secs(10), 3);
        assert_eq!(l.capacity(), 8);
        let allowed: Vec<bool> = (0..9).map(|d| l.allow(ms(0), v4(d), v4(200))).collect();
        assert_eq!(allowed.iter().filter(|&&a| a).count(), 8);
        assert!(!allowed[8]);
        for d in 0..8 {
            assert!(!l.allow(ms(1), v4(d), v4(200)), "pair {d} evicted");
        }
        assert!(l.allow(ms(10_000), v4(8), v4(200)));
    }

    #[test]
    fn many_pairs_each_get_exactly_one() {
        let l = RedirectLimiter::new(4096, Duration::from_secs(60), 0x5eed);
        let pairs = (0..1000u32).map(|i| {
            let src = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i as u16));
            (src, v4((i % 251) as u8))
        });
        let first = pairs.clone().filter(|&(s, d)| l.allow(ms(5), s, d)).count();
        let again = pairs.filter(|&(s, d)| l.allow(ms(6), s, d)).count();
        assert!(first >= 990, "only {first} of 1000 pairs allowed");
        assert_eq!(again, 0);
    }

    #[test]
    fn a_zero_interval_always_allows() {
        let l = RedirectLimiter::new(8, Duration::ZERO, 0);
        assert!(l.allow(ms(1), v4(1), v4(2)));
        assert!(l.allow(ms(1), v4(1), v4(2)));
    }

    #[test]
    fn the_indication_is_laid_out_as_frr_sends_it() {
        let own_nbma: IpAddr = "198.51.100.1".parse().unwrap();
        let own_proto = v4(1);
        let sender = v4(11);
        // An IPv4 packet of 200 bytes from the sender's side: only 128 bytes travel.
        let mut packet = vec![0x45, 0, 0, 200];
        packet.resize(200, 0xab);
        let ti = traffic_indication(own_nbma, own_proto, sender, &packet, Some(b"dmvpn"));
        // FRR nhrpd, nhrp_peer.c nhrp_peer_send_indication(): nhrp_packet_push(zb,
        // NHRP_PACKET_TRAFFIC_INDICATION, &nifp->nbma, &if_ad->addr, &dst) with dst the
        // packet's source, hdr->hop_count = 1, the NFLOG'd packet (--nflog-range 128) copied
        // after the header, nhrp_packet_complete() adding the Authentication extension.
        assert_eq!(ti.op_type(), 8);
        assert_eq!(ti.nbma, Family::Ipv4);
        assert_eq!(ti.protocol, Family::Ipv4);
        assert_eq!(ti.hop_count, 1);
        assert_eq!(ti.src_nbma, Some(own_nbma));
        assert_eq!(ti.src_proto, Some(own_proto));
        assert_eq!(ti.dst_proto, Some(sender));
        assert_eq!(
            ti.body,
            Body::TrafficIndication {
                code: 0,
                packet: packet[..128].to_vec()
            }
        );
        assert_eq!(
            ti.extensions,
            vec![Extension {
                compulsory: true,
                body: ExtensionBody::Authentication(b"\0\0\0\x01dmvpn".to_vec()),
            }]
        );
        let mut wire = Vec::new();
        ti.emit(&mut wire).unwrap();
        assert_eq!(wire.len(), ti.buffer_len());
        // Fixed header: hop count 1, type 8; mandatory part: the code in the flags word,
        // a zero request-ID word.
        assert_eq!(wire[9], 1);
        assert_eq!(wire[17], 8);
        assert_eq!(&wire[22..28], &[0, 0, 0, 0, 0, 0]);
        assert_eq!(NhrpRepr::parse(&wire), Ok(ti));
    }

    #[test]
    fn without_a_secret_there_are_no_extensions() {
        let own_nbma: IpAddr = "2001:db8:100::1".parse().unwrap();
        let ti = traffic_indication(own_nbma, v4(1), v4(11), &[0x45; 20], None);
        assert_eq!(ti.nbma, Family::Ipv6);
        assert!(ti.extensions.is_empty());
        let mut wire = Vec::new();
        ti.emit(&mut wire).unwrap();
        assert_eq!(u16::from_be_bytes([wire[14], wire[15]]), 0, "ar$extoff");
        assert_eq!(NhrpRepr::parse(&wire), Ok(ti));
    }
}
