//! The fast path allocates nothing: every per-packet path of the dataplane (encapsulation,
//! decapsulation, the hub's hairpin, both policy halves with a non-default policy, ICMP
//! too-big generation, MSS clamping, drops), the hub's redirect limiter, the flow cache and
//! TCP and UDP coalescing (GRO, 10 000 batches each) run 10 000 packets after a warm-up under
//! a counting global allocator, and each must make zero heap allocations.
//!
//! `cargo test --release -p mgre-proto --test no_alloc -- --nocapture` prints one line per
//! path; `MGRE_ALLOC_BACKTRACE=N` shows where the first N allocations come from.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use mgre_proto::dataplane::HEADROOM;
use mgre_proto::flowcache::{FlowCache, FlowKey};
use mgre_proto::gro::{Gro, GroFrame};
use mgre_proto::nhrp::RedirectLimiter;
use mgre_proto::wire::checksum;
use mgre_proto::wire::gre::{GreRepr, PROTO_IPV4, PROTO_IPV6};
use mgre_proto::wire::ip::Addr;
use mgre_proto::{
    Action, Dataplane, DataplaneConfig, DropReason, Encap, OuterMark, Peer, Policy, Prefix, Role,
    Step, TxMarks, Verdict, WorkerState, WorkerStats,
};

use counting_alloc::{CountingAlloc, measure, print_traces};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Packets per measured path.
const N: usize = 10_000;
/// Packets run through a path before measuring.
const WARMUP: usize = 1_000;

#[test]
fn encapsulation_allocates_nothing() {
    let mut n = Node::new(spoke());
    let mut v4 = Frame::new(&udp_v4(LAN1, LAN2, 1400));
    path("encap v4 (tun→gre)", || {
        let v = n.tun(&mut v4);
        assert!(matches!(v, Verdict::Underlay { peer: 0, .. }), "{v:?}");
    });
    let mut v6 = Frame::new(&udp_v6(LAN1_V6, LAN3_V6, 1400));
    path("encap v6 (tun→gre)", || {
        let v = n.tun(&mut v6);
        assert!(matches!(v, Verdict::Underlay { peer: 1, .. }), "{v:?}");
    });
}

#[test]
fn decapsulation_allocates_nothing() {
    let mut n = Node::new(spoke());
    let mut f = Frame::new(&gre(Some(42), &udp_v4(LAN2, LAN1, 1400)));
    path("decap (gre→tun)", || {
        let v = n.underlay(&mut f, HUB);
        assert!(matches!(v, Verdict::Tun { .. }), "{v:?}");
    });
}

#[test]
fn hub_hairpin_allocates_nothing() {
    let mut n = Node::new(hub());
    // To spoke2: GRE checksum, key and sequence number on the way out.
    let mut f = Frame::new(&gre(None, &udp_v4(LAN1, LAN2, 1400)));
    path("hairpin (gre→gre, csum+key+seq)", || {
        let v = n.underlay(&mut f, SPOKE1);
        assert!(matches!(v, Verdict::Underlay { peer: 1, .. }), "{v:?}");
    });
    assert_eq!(n.st.hairpin.packets.get(), (WARMUP + N) as u64);
}

#[test]
fn policy_halves_allocate_nothing() {
    let marked = Policy {
        action: Action::Default,
        inner_dscp: Some(46),
        outer: Some(OuterMark {
            dscp: Some(34),
            ecn: None,
        }),
        priority: Some(5),
        fail_closed: false,
    };
    let want = TxMarks {
        tos: Some(34 << 2),
        priority: Some(5),
    };

    let mut n = Node::new(spoke());
    let mut f = Frame::new(&udp_v4(LAN1, LAN3, 1400));
    let via_nhs = Policy {
        action: Action::ViaNhs,
        ..marked
    };
    path("inspect_tun + forward (via NHS, DSCP, mark)", || {
        let v = n.tun_with(&mut f, &via_nhs);
        assert!(
            matches!(v, Verdict::Underlay { peer: 0, marks, .. } if marks == want),
            "{v:?}"
        );
    });

    let mut h = Node::new(hub());
    let mut f = Frame::new(&gre(None, &udp_v4(LAN1, LAN2, 1400)));
    path("inspect_underlay + forward (transit, DSCP, mark)", || {
        let v = h.underlay_with(&mut f, SPOKE1, &marked);
        assert!(
            matches!(v, Verdict::Underlay { peer: 1, marks, .. } if marks == want),
            "{v:?}"
        );
    });
    let local = Policy {
        action: Action::Local,
        ..marked
    };
    path("inspect_underlay + forward (local, DSCP)", || {
        let v = h.underlay_with(&mut f, SPOKE1, &local);
        assert!(matches!(v, Verdict::Tun { .. }), "{v:?}");
    });
    let drop = Policy {
        action: Action::Drop,
        ..Policy::DEFAULT
    };
    path("inspect_underlay + forward (policy drop)", || {
        let v = h.underlay_with(&mut f, SPOKE1, &drop);
        assert_eq!(v, Verdict::Drop(DropReason::PolicyDrop));
    });
}

#[test]
fn icmp_too_big_allocates_nothing() {
    let mut n = Node::new(spoke());
    let mut f = Frame::new(&udp_v4(LAN1, LAN2, 1480));
    path("icmp frag-needed (tun)", || {
        let v = n.tun(&mut f);
        assert!(matches!(v, Verdict::Tun { .. }), "{v:?}");
    });
    let mut f = Frame::new(&udp_v6(LAN1_V6, LAN3_V6, 1480));
    path("icmpv6 packet-too-big (tun)", || {
        let v = n.tun(&mut f);
        assert!(matches!(v, Verdict::Tun { .. }), "{v:?}");
    });
    assert_eq!(n.st.icmp_too_big.get(), 2 * (WARMUP + N) as u64);

    // Spoke2's path is smaller (checksum, key, sequence): the error goes back to spoke1.
    let mut h = Node::new(hub());
    let mut f = Frame::new(&gre(None, &udp_v4(LAN1, LAN2, 1470)));
    path("icmp frag-needed (hairpin, back to ingress)", || {
        let v = h.underlay(&mut f, SPOKE1);
        assert!(matches!(v, Verdict::Underlay { peer: 0, .. }), "{v:?}");
    });
    assert_eq!(h.st.icmp_too_big.get(), (WARMUP + N) as u64);
}

#[test]
fn mss_clamping_allocates_nothing() {
    let mut n = Node::new(spoke());
    let mut out = Frame::new(&tcp_syn_v4(1460));
    path("mss clamp (syn, tun→gre)", || {
        let v = n.tun(&mut out);
        assert!(matches!(v, Verdict::Underlay { .. }), "{v:?}");
    });
    let mut back = Frame::new(&gre(Some(42), &tcp_syn_v4(1460)));
    path("mss clamp (syn, gre→tun)", || {
        let v = n.underlay(&mut back, HUB);
        assert!(matches!(v, Verdict::Tun { .. }), "{v:?}");
    });
    assert_eq!(n.st.mss_clamped.get(), 2 * (WARMUP + N) as u64);
}

#[test]
fn drops_allocate_nothing() {
    let mut n = Node::new(hub());
    let mut f = Frame::new(&gre(Some(1), &udp_v4(LAN1, LAN2, 100)));
    path("drop (key mismatch)", || {
        assert_eq!(
            n.underlay(&mut f, SPOKE1),
            Verdict::Drop(DropReason::KeyMismatch)
        );
    });
    path("drop (unknown peer)", || {
        assert_eq!(
            n.underlay(&mut f, "192.0.2.99".parse().expect("address")),
            Verdict::Drop(DropReason::UnknownPeer)
        );
    });
}

#[test]
fn flow_cache_allocates_nothing() {
    let key = |i: usize| FlowKey {
        src: Addr::V4(0xcb00_7102),
        dst: Addr::V4(0xcb00_7142 ^ (i as u32 >> 16)),
        src_port: i as u16,
        dst_port: 5060,
        protocol: 17,
        direction: 0,
        ingress: u16::MAX,
        dscp: 46,
    };
    let mut cache = FlowCache::<Policy>::new(1 << 16);
    let mut i = 0;
    path("flowcache insert + hit", || {
        i += 1;
        cache.insert(key(i), Policy::DEFAULT, 0, 60_000, 1);
        assert_eq!(cache.get(&key(i), 1, 1), Some(Policy::DEFAULT));
    });
    path("flowcache miss", || {
        i += 1;
        assert_eq!(cache.get(&key(i), 1, 1), None);
    });
}

#[test]
fn gro_allocates_nothing() {
    // Per batch: 24 segments each of an IPv4 and an IPv6 flow, interleaved, with a UDP packet
    // and a segment with a bad checksum among them; frames restored before every batch.
    let mut batch: Vec<Vec<u8>> = Vec::new();
    for k in 0..24u32 {
        batch.push(tcp_segment(false, k * 1400, 1400));
        batch.push(tcp_segment(true, k * 1400, 1400));
    }
    batch.insert(7, udp_v4(LAN1, LAN2, 1400));
    let mut bad = tcp_segment(false, 24 * 1400, 1400);
    bad[100] ^= 1;
    batch.push(bad);
    let mut frames: Vec<GroFrame> = batch
        .iter()
        .map(|_| GroFrame {
            buf: vec![0u8; HEADROOM + 65536].into_boxed_slice(),
            start: HEADROOM,
            len: 0,
        })
        .collect();
    let mut out = vec![0u16; frames.len()];
    let mut gro = Gro::new(frames.len());
    path("gro (50-packet batch, 2 TCP flows)", || {
        for (f, p) in frames.iter_mut().zip(&batch) {
            f.buf[HEADROOM..HEADROOM + p.len()].copy_from_slice(p);
            f.len = p.len();
        }
        let n = gro.coalesce(&mut frames, &mut out);
        assert_eq!(&out[..n], [0, 1, 7, 49], "written frames");
        assert_eq!(frames[0].len, 40 + 24 * 1400);
    });
}

#[test]
fn udp_gro_allocates_nothing() {
    // Per batch, with UDP coalescing on: 24 datagrams each of an IPv4 and an IPv6 UDP flow and
    // 24 segments of a TCP flow, interleaved, then a datagram with a bad checksum; frames
    // restored before every batch.
    let mut batch: Vec<Vec<u8>> = Vec::new();
    for k in 0..24u8 {
        batch.push(udp_datagram(false, k, 1200));
        batch.push(udp_datagram(true, k, 1200));
        batch.push(tcp_segment(false, u32::from(k) * 1400, 1400));
    }
    let mut bad = udp_datagram(false, 24, 1200);
    bad[100] ^= 1;
    batch.push(bad);
    let mut frames: Vec<GroFrame> = batch
        .iter()
        .map(|_| GroFrame {
            buf: vec![0u8; HEADROOM + 65536].into_boxed_slice(),
            start: HEADROOM,
            len: 0,
        })
        .collect();
    let mut out = vec![0u16; frames.len()];
    let mut gro = Gro::new(frames.len()).with_udp(true);
    path(
        "gro with udp (73-packet batch, 2 UDP flows, 1 TCP flow)",
        || {
            for (f, p) in frames.iter_mut().zip(&batch) {
                f.buf[HEADROOM..HEADROOM + p.len()].copy_from_slice(p);
                f.len = p.len();
            }
            let n = gro.coalesce(&mut frames, &mut out);
            assert_eq!(&out[..n], [0, 1, 2, 72], "written frames");
            assert_eq!(frames[0].len, 28 + 24 * 1200);
            assert_eq!(frames[1].len, 48 + 24 * 1200);
        },
    );
}

#[test]
fn redirect_limiter_allocates_nothing() {
    // The hub asks once per hairpinned packet: mostly refusals for a live pair, some new
    // pairs (a fresh source every 16th packet), some pairs whose interval ran out.
    let limiter = RedirectLimiter::new(4096, Duration::from_secs(8), 0x5eed);
    let mut i: u32 = 0;
    let mut allowed = 0u32;
    path("redirect limiter (hairpin → traffic indication?)", || {
        i += 1;
        let now = Duration::from_millis(u64::from(i) * 3);
        let src = IpAddr::V4(Ipv4Addr::from(0xcb00_7100 | (i >> 4) & 0x3f));
        let dst = IpAddr::from(LAN2);
        allowed += u32::from(limiter.allow(now, src, dst));
    });
    assert!(allowed > 0 && allowed < i / 4, "{allowed} of {i} allowed");
}

#[test]
fn the_counter_sees_allocations_on_this_thread_only() {
    let ((), allocs) = measure(|| drop(std::hint::black_box(vec![0u8; 100])));
    assert_eq!(allocs.count, 1, "the counting allocator is not installed");
    // Spawning allocates on this thread; what the new thread allocates is not counted.
    let spawn = |f: fn()| measure(|| std::thread::spawn(f).join().expect("thread")).1;
    spawn(|| ());
    let empty = spawn(|| ());
    let allocating = spawn(|| drop(std::hint::black_box(vec![0u8; 100])));
    assert_eq!(
        allocating, empty,
        "another thread's allocations were counted"
    );
}

/// Runs `packet` `WARMUP` times, then `N` times counting allocations; prints the count and
/// fails unless it is zero.
fn path(name: &str, mut packet: impl FnMut()) {
    (0..WARMUP).for_each(|_| packet());
    let ((), allocs) = measure(|| (0..N).for_each(|_| packet()));
    println!(
        "{name}: {N} packets, {} allocations ({} bytes)",
        allocs.count, allocs.bytes
    );
    if allocs.count != 0 {
        print_traces();
    }
    assert_eq!(allocs.count, 0, "{name}: heap allocations on the fast path");
}

/// One dataplane with its worker state and counters.
struct Node {
    dp: Dataplane,
    ws: WorkerState,
    st: WorkerStats,
}

impl Node {
    fn new(dp: Dataplane) -> Node {
        let ws = WorkerState::new(&dp);
        let st = WorkerStats::new(dp.peers().len());
        Node { dp, ws, st }
    }

    fn tun(&mut self, f: &mut Frame) -> Verdict {
        let len = f.len;
        self.dp
            .from_tun(&mut self.ws, &self.st, f.fresh(), HEADROOM, len)
    }

    fn underlay(&mut self, f: &mut Frame, src: IpAddr) -> Verdict {
        let len = f.len;
        self.dp
            .from_underlay(&mut self.ws, &self.st, f.fresh(), HEADROOM, len, src, false)
    }

    fn tun_with(&mut self, f: &mut Frame, policy: &Policy) -> Verdict {
        let len = f.len;
        let frame = f.fresh();
        match self.dp.inspect_tun(&self.st, frame, HEADROOM, len) {
            Step::Done(v) => v,
            Step::Decide(p) => self.dp.forward(&mut self.ws, &self.st, frame, &p, policy),
        }
    }

    fn underlay_with(&mut self, f: &mut Frame, src: IpAddr, policy: &Policy) -> Verdict {
        let len = f.len;
        let frame = f.fresh();
        let step =
            self.dp
                .inspect_underlay(&mut self.ws, &self.st, frame, HEADROOM, len, src, false);
        match step {
            Step::Done(v) => v,
            Step::Decide(p) => self.dp.forward(&mut self.ws, &self.st, frame, &p, policy),
        }
    }
}

/// A packet in a frame with headroom, restored before every use (paths rewrite in place:
/// TTL, DSCP, MSS, ICMP errors), as a receive ring would hand over a fresh buffer.
struct Frame {
    template: Vec<u8>,
    work: Vec<u8>,
    len: usize,
}

impl Frame {
    fn new(pkt: &[u8]) -> Frame {
        let mut template = vec![0u8; HEADROOM + pkt.len() + 64];
        template[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
        Frame {
            work: template.clone(),
            template,
            len: pkt.len(),
        }
    }

    fn fresh(&mut self) -> &mut [u8] {
        self.work.copy_from_slice(&self.template);
        &mut self.work
    }
}

fn peer(name: &str, nbma: IpAddr, key: Option<u32>) -> Peer {
    Peer {
        name: name.into(),
        nbma,
        encap: Encap::Gre,
        key,
        checksum: false,
        sequence: false,
        udp_port: None,
        multicast: true,
    }
}

/// Random /24 and /32 entries, so lookups run against a table of realistic depth.
fn filler(n: u32, peer: u32) -> impl Iterator<Item = (Prefix, u32)> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n).map(move |_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let len = if x & 1 == 0 { 32 } else { 24 };
        let prefix = Prefix::new(std::net::Ipv4Addr::from(x).into(), len).expect("valid length");
        (prefix, peer)
    })
}

/// A hub with spoke1 (plain GRE) and spoke2 (key 7, checksum, sequence numbers).
fn hub() -> Dataplane {
    let mut s2 = peer("spoke2", SPOKE2, Some(7));
    s2.sequence = true;
    s2.checksum = true;
    let mut map = vec![
        ("203.0.113.0/26".parse().expect("prefix"), 0),
        ("203.0.113.64/26".parse().expect("prefix"), 1),
        ("2001:db8:1::/48".parse().expect("prefix"), 0),
    ];
    map.extend(filler(10_000, 0));
    Dataplane::new(DataplaneConfig {
        role: Role::Hub,
        peers: vec![peer("spoke1", SPOKE1, None), s2],
        map,
        nhs: None,
        local_v4: Some("198.51.100.1".parse().expect("address")),
        local_v6: Some("2001:db8:100::1".parse().expect("address")),
        underlay_mtu: 1500,
        tun_mtu: 1476,
        mss_clamp: Some((1436, 1416)),
        open_nhrp: None,
        peer_capacity: 0,
    })
}

/// A spoke whose NHS is the hub (key 42), with direct map entries for spoke3.
fn spoke() -> Dataplane {
    let mut map = vec![
        ("203.0.113.128/26".parse().expect("prefix"), 1),
        ("2001:db8:3::/48".parse().expect("prefix"), 1),
    ];
    map.extend(filler(10_000, 0));
    Dataplane::new(DataplaneConfig {
        role: Role::Spoke,
        peers: vec![
            peer("hub", HUB, Some(42)),
            peer("spoke3", "192.0.2.13".parse().expect("address"), None),
        ],
        map,
        nhs: Some(0),
        local_v4: Some("198.51.100.11".parse().expect("address")),
        local_v6: Some("2001:db8:100::11".parse().expect("address")),
        underlay_mtu: 1500,
        tun_mtu: 1400,
        mss_clamp: Some((1360, 1340)),
        open_nhrp: None,
        peer_capacity: 0,
    })
}

/// A UDP/IPv4 packet of `size` bytes with DF set and a valid header checksum.
fn udp_v4(src: [u8; 4], dst: [u8; 4], size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..24].copy_from_slice(&[0x30, 0x39, 0x13, 0x89]);
    p
}

/// A UDP/IPv6 packet of `size` bytes.
fn udp_v6(src: [u8; 16], dst: [u8; 16], size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((size - 40) as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src);
    p[24..40].copy_from_slice(&dst);
    p[40..44].copy_from_slice(&[0x30, 0x39, 0x13, 0x89]);
    p
}

/// An IPv4 TCP SYN from LAN1 to LAN2 with one MSS option and correct checksums.
fn tcp_syn_v4(mss: u16) -> Vec<u8> {
    let mut p = vec![0u8; 44];
    p[..20].copy_from_slice(&[
        0x45, 0, 0, 44, 0, 1, 0x40, 0, 64, 6, 0, 0, 203, 0, 113, 2, 203, 0, 113, 66,
    ]);
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut p[20..];
    tcp[0..4].copy_from_slice(&[0x30, 0x39, 0x00, 0x50]);
    tcp[12] = 6 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&[0xff, 0xff]);
    tcp[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
    let sum = checksum::pseudo_v4(&LAN1, &LAN2, 6, 24);
    let c = !checksum::fold(checksum::accumulate(sum, &p[20..]));
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

/// A TCP segment (ACK, `payload` bytes) from LAN1 to LAN2 or LAN1_V6 to LAN3_V6, with
/// correct checksums.
fn tcp_segment(v6: bool, seq: u32, payload: usize) -> Vec<u8> {
    let iph = if v6 { 40 } else { 20 };
    let mut p = vec![0u8; iph + 20 + payload];
    let len = p.len();
    let sum = if v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[8..24].copy_from_slice(&LAN1_V6);
        p[24..40].copy_from_slice(&LAN3_V6);
        checksum::pseudo_v6(&LAN1_V6, &LAN3_V6, 6, (len - 40) as u32)
    } else {
        p[..12].copy_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0]);
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[12..16].copy_from_slice(&LAN1);
        p[16..20].copy_from_slice(&LAN2);
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        checksum::pseudo_v4(&LAN1, &LAN2, 6, (len - 20) as u16)
    };
    let tcp = &mut p[iph..];
    tcp[0..4].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&7u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10; // ACK
    tcp[14..16].copy_from_slice(&[0x01, 0xf6]);
    for (i, b) in tcp[20..].iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    let c = !checksum::fold(checksum::accumulate(sum, tcp));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    p
}

/// UDP datagram number `k` (`payload` bytes) from LAN1 to LAN2 or LAN1_V6 to LAN3_V6, with
/// correct lengths and checksums.
fn udp_datagram(v6: bool, k: u8, payload: usize) -> Vec<u8> {
    let iph = if v6 { 40 } else { 20 };
    let ulen = 8 + payload;
    let mut p = vec![0u8; iph + ulen];
    let sum = if v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(ulen as u16).to_be_bytes());
        p[6] = 17;
        p[7] = 64;
        p[8..24].copy_from_slice(&LAN1_V6);
        p[24..40].copy_from_slice(&LAN3_V6);
        checksum::pseudo_v6(&LAN1_V6, &LAN3_V6, 17, ulen as u32)
    } else {
        p[..12].copy_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0]);
        p[2..4].copy_from_slice(&((iph + ulen) as u16).to_be_bytes());
        p[12..16].copy_from_slice(&LAN1);
        p[16..20].copy_from_slice(&LAN2);
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        checksum::pseudo_v4(&LAN1, &LAN2, 17, ulen as u16)
    };
    let udp = &mut p[iph..];
    udp[0..4].copy_from_slice(&[0x30, 0x39, 0x11, 0x51]);
    udp[4..6].copy_from_slice(&(ulen as u16).to_be_bytes());
    for (i, b) in udp[8..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(k);
    }
    let c = match !checksum::fold(checksum::accumulate(sum, udp)) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    p
}

/// A GRE packet (IPv4 or IPv6 by the inner version) with `key` around `inner`.
fn gre(key: Option<u32>, inner: &[u8]) -> Vec<u8> {
    let repr = GreRepr {
        protocol: if inner[0] >> 4 == 6 {
            PROTO_IPV6
        } else {
            PROTO_IPV4
        },
        checksum: false,
        key,
        sequence: None,
    };
    let mut g = vec![0u8; repr.header_len() + inner.len()];
    g[repr.header_len()..].copy_from_slice(inner);
    repr.emit(&mut g);
    g
}

const HUB: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
const SPOKE1: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 11));
const SPOKE2: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 12));
const LAN1: [u8; 4] = [203, 0, 113, 2];
const LAN2: [u8; 4] = [203, 0, 113, 66];
const LAN3: [u8; 4] = [203, 0, 113, 130];
const LAN1_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const LAN3_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
