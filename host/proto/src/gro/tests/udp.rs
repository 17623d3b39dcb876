//! UDP GRO (`Gro::with_udp`) driven with hand-built datagrams, its reference segmentation, and
//! a property test re-segmenting mixed TCP and UDP traffic — where, unlike TCP's, a UDP flow's
//! corrupt datagrams must keep their place too.

use proptest::prelude::*;

use super::*;

/// A UDP datagram to build: the IP header fields and ports are `ip`'s (a TCP template whose
/// TCP fields are unused); payload byte `k` of datagram number `seq` is `(7 * seq + k) ^
/// sport`, so every datagram of a flow differs from the others.
#[derive(Clone, Debug)]
struct Udp {
    ip: Tcp,
    seq: u32,
    payload: usize,
    /// Bytes after the datagram inside the IP packet (the UDP length falls short of the IP's).
    padding: usize,
    /// The UDP length claims one byte more than the IP packet holds.
    long: bool,
    /// A zero checksum ("none" over IPv4).
    no_csum: bool,
    /// Flip a bit after the checksum is computed.
    bad_csum: bool,
}

impl Udp {
    fn v4(payload: usize) -> Udp {
        Udp {
            ip: Tcp::v4(0, 0).with(|t| t.dport = 4433),
            seq: 0,
            payload,
            padding: 0,
            long: false,
            no_csum: false,
            bad_csum: false,
        }
    }

    fn v6(payload: usize) -> Udp {
        Udp {
            ip: Tcp::v6(0, 0).with(|t| t.dport = 4433),
            ..Udp::v4(payload)
        }
    }

    fn with(&self, f: impl FnOnce(&mut Udp)) -> Udp {
        let mut u = self.clone();
        f(&mut u);
        u
    }

    /// The datagram `k` places on in the flow.
    fn nth(&self, k: u32) -> Udp {
        self.with(|u| u.seq += k)
    }

    /// This datagram and the `n - 1` following it (same size).
    fn run(&self, n: u32) -> Vec<Vec<u8>> {
        (0..n).map(|k| self.nth(k).build()).collect()
    }

    fn build(&self) -> Vec<u8> {
        let iph = self.ip.ip_hdr_len();
        let ulen = UDP_HDR_LEN + self.payload;
        let mut p = vec![0u8; iph + ulen + self.padding];
        self.ip.emit_ip(&mut p, 17);
        let u = &mut p[iph..];
        u[0..2].copy_from_slice(&self.ip.sport.to_be_bytes());
        u[2..4].copy_from_slice(&self.ip.dport.to_be_bytes());
        u[4..6].copy_from_slice(&((ulen + usize::from(self.long)) as u16).to_be_bytes());
        for (k, b) in u[8..ulen].iter_mut().enumerate() {
            *b = (7 * self.seq as usize + k) as u8 ^ self.ip.sport as u8;
        }
        if !self.no_csum {
            set_udp_checksum(&mut p[..iph + ulen], iph);
        }
        if self.bad_csum {
            p[iph + ulen - 1] ^= 0x10;
        }
        p
    }
}

/// Sets the UDP checksum of datagram `p` (IP header of `iph` bytes, no padding), sending a
/// computed zero as all ones (RFC 768).
fn set_udp_checksum(p: &mut [u8], iph: usize) {
    p[iph + 6..iph + 8].fill(0);
    let sum = pseudo(p, p.len() - iph);
    let c = match !checksum::fold(checksum::accumulate(sum, &p[iph..])) {
        0 => 0xffff,
        c => c,
    };
    p[iph + 6..iph + 8].copy_from_slice(&c.to_be_bytes());
}

fn run_udp(pkts: &[Vec<u8>]) -> (Vec<GroFrame>, Vec<u16>) {
    run_with(pkts, HEAD + 65536, true)
}

/// Reference segmentation of a `GSO_UDP_L4` frame (Linux `__udp_gso_segment`), after checking
/// its headers: datagrams of `gso_size` payload bytes (the last may be shorter) with the
/// super-packet's headers, fresh lengths and checksums (the IPv4 ID left as the first's).
pub(super) fn resegment(f: &GroFrame) -> Vec<Vec<u8>> {
    let h = vnet_hdr(f);
    let p = f.packet();
    let v6 = p[0] >> 4 == 6;
    let iph = if v6 { 40 } else { 20 };
    let hdrs = iph + UDP_HDR_LEN;
    assert_eq!(
        h,
        VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: VNET_GSO_UDP_L4,
            hdr_len: hdrs as u16,
            gso_size: h.gso_size,
            csum_start: iph as u16,
            csum_offset: 6,
        }
    );
    assert!(p.len() <= 65535);
    if v6 {
        assert_eq!(p[6], 17);
        assert_eq!(usize::from(be16(p, 4)), p.len() - 40, "IPv6 payload length");
    } else {
        assert_eq!(p[9], 17);
        assert_eq!(usize::from(be16(p, 2)), p.len(), "IPv4 total length");
        assert_eq!(checksum::checksum(&p[..20]), 0, "IPv4 header checksum");
    }
    assert_eq!(usize::from(be16(p, iph + 4)), p.len() - iph, "UDP length");
    let partial = checksum::fold(pseudo(p, p.len() - iph));
    assert_eq!(be16(p, iph + 6), partial, "UDP pseudo-header sum");
    let gso = usize::from(h.gso_size);
    let payload = &p[hdrs..];
    assert!(
        gso > 0 && payload.len() > gso,
        "coalesced frame of one datagram"
    );
    let n = payload.len().div_ceil(gso);
    assert!(n <= usize::from(MAX_SEGMENTS), "{n} datagrams");

    payload
        .chunks(gso)
        .map(|chunk| {
            let mut s = [&p[..hdrs], chunk].concat();
            let len = s.len();
            if v6 {
                s[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            } else {
                s[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                s[10..12].fill(0);
                let c = checksum::checksum(&s[..20]);
                s[10..12].copy_from_slice(&c.to_be_bytes());
            }
            s[iph + 4..iph + 6].copy_from_slice(&((len - iph) as u16).to_be_bytes());
            set_udp_checksum(&mut s, iph);
            s
        })
        .collect()
}

#[test]
fn merges_a_run_of_one_flow_v4() {
    let pkts = Udp::v4(1200).run(10);
    let (fs, out) = run_udp(&pkts);
    assert_eq!(out, [0]);
    let f = &fs[0];
    assert_eq!(f.len, 28 + 12_000);
    assert_eq!(
        vnet_hdr(f),
        VnetHdr {
            flags: 1,
            gso_type: 5,
            hdr_len: 28,
            gso_size: 1200,
            csum_start: 20,
            csum_offset: 6
        }
    );
    assert_eq!(be16(f.packet(), 24), 8 + 12_000, "UDP length of the whole");
    let want: Vec<u8> = pkts.iter().flat_map(|p| p[28..].to_vec()).collect();
    assert_eq!(&f.packet()[28..], &want[..]);
    flows_match(&pkts, &[0; 10], &[false; 10], &fs, &out);
}

#[test]
fn merges_a_run_of_one_flow_v6() {
    let pkts = Udp::v6(1232).run(5);
    let (fs, out) = run_udp(&pkts);
    assert_eq!(out, [0]);
    assert_eq!(
        vnet_hdr(&fs[0]),
        VnetHdr {
            flags: 1,
            gso_type: 5,
            hdr_len: 48,
            gso_size: 1232,
            csum_start: 40,
            csum_offset: 6
        }
    );
    assert_eq!(fs[0].len, 48 + 5 * 1232);
    assert_eq!(be16(fs[0].packet(), 44), 8 + 5 * 1232);
    flows_match(&pkts, &[0; 5], &[false; 5], &fs, &out);
}

#[test]
fn udp_is_off_by_default() {
    let udp = Udp::v4(1200).run(8);
    let tcp = Tcp::v4(0, 1200).run(8);
    let pkts: Vec<_> = udp.into_iter().zip(tcp).flat_map(|(u, t)| [u, t]).collect();
    // The TCP segments merge into frame 1; every datagram is written as it is.
    let off = [0, 1, 2, 4, 6, 8, 10, 12, 14];
    let (fs, out) = run(&pkts);
    assert_eq!(out, off);
    assert_eq!(vnet_hdr(&fs[1]).gso_type, VNET_GSO_TCPV4);

    // `set_udp` turns it on (and off) for later batches.
    let mut gro = Gro::new(16);
    for (on, want) in [(true, &[0, 1][..]), (false, &off[..])] {
        gro.set_udp(on);
        let mut fs = frames(&pkts, HEAD + 65536);
        let mut out = vec![0u16; pkts.len()];
        let n = gro.coalesce(&mut fs, &mut out);
        check_output(&pkts, &fs, &out[..n]);
        assert_eq!(&out[..n], want, "udp {on}");
    }
}

#[test]
fn udp_and_tcp_flows_are_apart() {
    // Same addresses and ports, TCP and UDP interleaved: two items.
    let u = Udp::v4(1000).with(|u| u.ip.dport = 5201);
    let t = Tcp::v4(0, 1000);
    let mut pkts = Vec::new();
    for k in 0..6u32 {
        pkts.push(t.with(|t| t.seq = k * 1000).build());
        pkts.push(u.nth(k).build());
    }
    let (fs, out) = run_udp(&pkts);
    assert_eq!(out, [0, 1]);
    assert_eq!(segments(&fs, &out), [6, 6]);
    let flow: Vec<usize> = (0..12).map(|i| i % 2).collect();
    flows_match(&pkts, &flow, &[false; 12], &fs, &out);
}

#[test]
fn interleaved_flows_merge_separately_in_order() {
    let a = Udp::v4(1200);
    let b = Udp::v4(1000).with(|u| u.ip.sport = 40001);
    let c = Udp::v6(1200);
    let d = Udp::v6(1200).with(|u| u.ip.dport = 443);
    let (mut pkts, mut flow) = (Vec::new(), Vec::new());
    for k in 0..8 {
        for (i, u) in [&a, &b, &c, &d].into_iter().enumerate() {
            pkts.push(u.nth(k).build());
            flow.push(i);
        }
    }
    let (fs, out) = run_udp(&pkts);
    assert_eq!(out, [0, 1, 2, 3]);
    assert_eq!(segments(&fs, &out), [8, 8, 8, 8]);
    flows_match(&pkts, &flow, &vec![false; pkts.len()], &fs, &out);
}

#[test]
fn short_datagram_ends_the_item_and_larger_one_starts_a_new_one() {
    let u = Udp::v4(1000);
    let pkts = vec![
        u.build(),
        u.nth(1).build(),
        u.nth(2).with(|u| u.payload = 300).build(), // short: appended, closes
        u.nth(3).build(),
        u.nth(4).with(|u| u.payload = 1200).build(), // larger: new item
        u.nth(5).with(|u| u.payload = 1200).build(),
        u.nth(6).with(|u| u.payload = 1).build(),
    ];
    let (fs, out) = run_udp(&pkts);
    assert_eq!(out, [0, 3, 4]);
    assert_eq!(segments(&fs, &out), [3, 1, 3]);
    assert_eq!(vnet_hdr(&fs[0]).gso_size, 1000);
    assert_eq!(vnet_hdr(&fs[4]).gso_size, 1200);
    flows_match(&pkts, &[0; 7], &[false; 7], &fs, &out);
}

#[test]
fn header_changes_start_new_items() {
    let v4 = Udp::v4(500);
    let v6 = Udp::v6(500);
    let cases: Vec<(&str, &Udp, Udp)> = vec![
        ("tos (CE)", &v4, v4.with(|u| u.ip.tos = 3)),
        ("ttl", &v4, v4.with(|u| u.ip.ttl = 63)),
        ("df", &v4, v4.with(|u| u.ip.df = false)),
        ("traffic class", &v6, v6.with(|u| u.ip.tos = 0x20)),
        ("flow label", &v6, v6.with(|u| u.ip.flow_label = 1)),
        ("hop limit", &v6, v6.with(|u| u.ip.ttl = 1)),
    ];
    for (what, base, changed) in cases {
        let pkts = vec![
            base.build(),
            base.nth(1).build(),
            changed.nth(2).build(),
            changed.nth(3).build(),
        ];
        let (fs, out) = run_udp(&pkts);
        assert_eq!(out, [0, 2], "{what}");
        assert_eq!(segments(&fs, &out), [2, 2], "{what}");
    }
    // The IPv4 ID is not compared.
    let pkts: Vec<_> = (0..4u16)
        .map(|k| v4.nth(k.into()).with(|u| u.ip.id = 9 * k).build())
        .collect();
    assert_eq!(run_udp(&pkts).1, [0]);
}

#[test]
fn unmergeable_datagrams_of_the_flow_end_the_item() {
    let u = Udp::v4(800);
    let cases: Vec<(&str, Udp)> = vec![
        ("ip options", u.with(|u| u.ip.ip_opts = 4)),
        ("first fragment", u.with(|u| u.ip.mf = true)),
        ("no checksum", u.with(|u| u.no_csum = true)),
        ("padding", u.with(|u| u.padding = 4)),
        ("udp length too long", u.with(|u| u.long = true)),
        ("no payload", u.with(|u| u.payload = 0)),
        ("v6 no checksum", Udp::v6(800).with(|u| u.no_csum = true)),
    ];
    for (what, odd) in cases {
        let base = if odd.ip.v6 { Udp::v6(800) } else { u.clone() };
        let pkts = vec![
            base.build(),
            base.nth(1).build(),
            odd.nth(2).build(),
            base.nth(3).build(),
            base.nth(4).build(),
        ];
        let (fs, out) = run_udp(&pkts);
        assert_eq!(out, [0, 2, 3], "{what}");
        assert_eq!(segments(&fs, &out), [2, 1, 2], "{what}");
        flows_match(&pkts, &[0; 5], &[false; 5], &fs, &out);
        // Nor does one start an item.
        let pkts = vec![odd.build(), odd.nth(1).build()];
        assert_eq!(run_udp(&pkts).1, [0, 1], "{what}");
    }
}

#[test]
fn corrupt_datagrams_keep_their_place_and_end_the_item() {
    let u = Udp::v4(1000);
    for bad in [
        u.with(|u| u.bad_csum = true),
        u.with(|u| u.ip.bad_ip_csum = true),
    ] {
        // In the middle: written alone where it was; the next datagram starts a new item.
        let pkts = vec![
            u.build(),
            u.nth(1).build(),
            bad.nth(2).build(),
            u.nth(3).build(),
            u.nth(4).build(),
        ];
        let (fs, out) = run_udp(&pkts);
        assert_eq!(out, [0, 2, 3]);
        assert_eq!(segments(&fs, &out), [2, 1, 2]);
        flows_match(&pkts, &[0; 5], &[false; 5], &fs, &out);

        // First: written alone, the rest merge behind it.
        let pkts = vec![bad.build(), u.nth(1).build(), u.nth(2).build()];
        let (fs, out) = run_udp(&pkts);
        assert_eq!(out, [0, 1]);
        assert_eq!(segments(&fs, &out), [1, 2]);
    }
    let v6 = Udp::v6(1000);
    let pkts = vec![v6.build(), v6.nth(1).with(|u| u.bad_csum = true).build()];
    assert_eq!(run_udp(&pkts).1, [0, 1]);
}

#[test]
fn a_computed_zero_checksum_sent_as_ones_merges() {
    // Find a datagram whose checksum computes to zero (sent as 0xffff).
    let u = (0..u16::MAX)
        .map(|port| Udp::v4(64).with(|u| u.ip.sport = port))
        .find(|u| be16(&u.build(), 26) == 0xffff)
        .expect("a port giving checksum 0xffff");
    let pkts = vec![u.build(), u.build()];
    let (fs, out) = run_udp(&pkts);
    assert_eq!(out, [0]);
    flows_match(&pkts, &[0; 2], &[false; 2], &fs, &out);
    // The same bytes without a checksum would pass verification (zero is "none" over IPv4,
    // not a computed zero), but are not merged.
    let none = u.with(|u| u.no_csum = true).build();
    assert_eq!(run_udp(&[none.clone(), none]).1, [0, 1]);
}

#[test]
fn caps_at_64_datagrams() {
    let pkts = Udp::v6(100).run(150);
    let (fs, out) = run_udp(&pkts);
    assert_eq!(out, [0, 64, 128]);
    assert_eq!(segments(&fs, &out), [64, 64, 22]);
}

#[test]
fn caps_at_65535_bytes() {
    // 28 + 46 * 1400 = 64 428 fits, 47 datagrams would not.
    let pkts = Udp::v4(1400).run(50);
    let (fs, out) = run_udp(&pkts);
    assert_eq!(out, [0, 46]);
    assert_eq!(segments(&fs, &out), [46, 4]);
    // Exactly 65 535: 28 + 13 * 5039.
    let pkts = Udp::v4(5039).run(14);
    let (fs, out) = run_udp(&pkts);
    assert_eq!(out, [0, 13]);
    assert_eq!(fs[0].len, 65535);
    // IPv6: header and payload together within 65 535 as well: 48 + 3 * 21 829.
    let pkts = Udp::v6(21_829).run(4);
    let (fs, out) = run_udp(&pkts);
    assert_eq!(out, [0, 3]);
    assert_eq!(fs[0].len, 65535);
}

#[test]
fn stops_when_the_frame_is_full() {
    let pkts = Udp::v4(1000).run(6);
    // Room for the first datagram and two more payloads.
    let (fs, out) = run_with(&pkts, HEAD + 1028 + 2000 + 999, true);
    assert_eq!(out, [0, 3]);
    assert_eq!(segments(&fs, &out), [3, 3]);
}

#[test]
fn other_packets_are_written_untouched() {
    let u = Udp::v4(1000);
    let trailing = {
        let mut p = u.build();
        p.extend_from_slice(&[0; 6]);
        p
    };
    let later_fragment = {
        let mut p = u.build();
        p[7] = 0x10;
        p[10..12].fill(0);
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    };
    let v6_ext = {
        let mut p = Udp::v6(1000).build();
        p[6] = 44; // a fragment header first
        p
    };
    let pkts = vec![
        trailing.clone(),
        trailing,
        later_fragment.clone(),
        later_fragment,
        v6_ext.clone(),
        v6_ext,
        vec![0x45, 0, 0, 27, 0, 0, 0, 0, 64, 17],
        vec![0x60; 47],
    ];
    let (_, out) = run_udp(&pkts);
    assert_eq!(out.len(), pkts.len());
}

/// What happens to a UDP flow at one step of the generated traffic.
#[derive(Clone, Copy, Debug)]
enum UdpStep {
    /// The next full-size datagram.
    Full,
    /// `n % 70 + 1` full-size datagrams in a row.
    Burst(usize),
    /// A datagram of `n % (size + 200)` bytes (often short, sometimes larger, rarely empty).
    Sized(usize),
    BadChecksum,
    /// (A bad UDP checksum over IPv6.)
    BadIpChecksum,
    NoChecksum,
    Padding,
    LongLength,
    /// IPv4 options (IPv4) or a first fragment (MF set).
    IpOptions,
    FirstFragment,
    /// Toggle CE in the TOS/traffic class, for this datagram on.
    Ce,
    /// Lower the TTL/hop limit, for this datagram on.
    Ttl,
    /// Change the flow label (IPv6) or DF (IPv4), for this datagram on.
    Label,
}

fn udp_step() -> impl Strategy<Value = UdpStep> {
    prop_oneof![
        40 => Just(UdpStep::Full),
        2 => any::<usize>().prop_map(UdpStep::Burst),
        4 => any::<usize>().prop_map(UdpStep::Sized),
        1 => Just(UdpStep::BadChecksum),
        1 => Just(UdpStep::BadIpChecksum),
        1 => Just(UdpStep::NoChecksum),
        1 => Just(UdpStep::Padding),
        1 => Just(UdpStep::LongLength),
        1 => Just(UdpStep::IpOptions),
        1 => Just(UdpStep::FirstFragment),
        1 => Just(UdpStep::Ce),
        1 => Just(UdpStep::Ttl),
        1 => Just(UdpStep::Label),
    ]
}

/// A generated UDP flow: IP version and datagram payload size.
fn udp_flow() -> impl Strategy<Value = (bool, usize)> {
    (
        any::<bool>(),
        prop::sample::select(vec![1, 8, 100, 1200, 1472]),
    )
}

/// Builds UDP traffic: the packets and each one's flow. Flow `u` has the ports of the TCP
/// flow `u` of [`traffic`] (so protocols must be told apart).
fn udp_traffic(flows: &[(bool, usize)], steps: &[(usize, UdpStep)]) -> (Vec<Vec<u8>>, Vec<usize>) {
    let mut state: Vec<Udp> = flows
        .iter()
        .enumerate()
        .map(|(i, &(v6, size))| {
            let base = if v6 { Udp::v6(size) } else { Udp::v4(size) };
            base.with(|u| (u.ip.sport, u.ip.dport) = (30000 + i as u16, 5201))
        })
        .collect();
    let (mut pkts, mut flow) = (Vec::new(), Vec::new());
    let steps = steps.iter().flat_map(|&(f, step)| match step {
        UdpStep::Burst(n) => vec![(f, UdpStep::Full); n % 70 + 1],
        step => vec![(f, step)],
    });
    for (f, step) in steps {
        let f = f % flows.len();
        let size = flows[f].1;
        let u = &mut state[f];
        u.seq += 1;
        u.ip.id = u.ip.id.wrapping_add(1);
        match step {
            UdpStep::Ce => u.ip.tos ^= 3,
            UdpStep::Ttl => u.ip.ttl = u.ip.ttl.wrapping_sub(1),
            UdpStep::Label if u.ip.v6 => u.ip.flow_label ^= 0x100,
            UdpStep::Label => u.ip.df = !u.ip.df,
            _ => {}
        }
        let d = u.with(|d| match step {
            UdpStep::Sized(n) => d.payload = n % (size + 200),
            UdpStep::BadChecksum => d.bad_csum = true,
            UdpStep::BadIpChecksum if d.ip.v6 => d.bad_csum = true,
            UdpStep::BadIpChecksum => d.ip.bad_ip_csum = true,
            UdpStep::NoChecksum => d.no_csum = true,
            UdpStep::Padding => d.padding = 1 + d.seq as usize % 8,
            UdpStep::LongLength => d.long = true,
            UdpStep::IpOptions if !d.ip.v6 => d.ip.ip_opts = 8,
            UdpStep::FirstFragment if !d.ip.v6 => d.ip.mf = true,
            _ => {}
        });
        pkts.push(d.build());
        flow.push(f);
    }
    (pkts, flow)
}

/// Interleaves two packet lists (each keeping its order) as `picks` say: `true` takes the next
/// of `a`, `false` the next of `b`; what is left over follows.
fn interleave<T: Clone>(a: &[T], b: &[T], picks: &[bool]) -> Vec<T> {
    let (mut ia, mut ib) = (a.iter(), b.iter());
    let mut out: Vec<T> = picks
        .iter()
        .filter_map(|&p| if p { ia.next() } else { ib.next() })
        .cloned()
        .collect();
    out.extend(ia.cloned());
    out.extend(ib.cloned());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Mixed TCP and UDP traffic with UDP coalescing on: re-segmenting gives back every flow's
    /// packets in order — for UDP flows including the corrupt datagrams, which must keep their
    /// place. With UDP off, the same traffic merges no UDP at all.
    #[test]
    fn mixed_traffic_resegments_to_the_input(
        tcp_flows in prop::collection::vec(flow(), 1..4),
        tcp_steps in prop::collection::vec((0..3usize, step()), 0..100),
        udp_flows in prop::collection::vec(udp_flow(), 1..4),
        udp_steps in prop::collection::vec((0..3usize, udp_step()), 0..100),
        picks in prop::collection::vec(any::<bool>(), 0..300),
        cap in prop::sample::select(vec![HEAD + 1800, HEAD + 9000, HEAD + 65536]),
    ) {
        let (tcp, tcp_flow, tcp_bad) = traffic(&tcp_flows, &tcp_steps);
        let (udp, udp_flow) = udp_traffic(&udp_flows, &udp_steps);
        // TCP flows (and their stray packets) are 0..2 * n, UDP flows come after.
        let base = 2 * tcp_flows.len();
        let tagged = |pkts: Vec<Vec<u8>>, flow: Vec<usize>, bad: Vec<bool>, off: usize| {
            pkts.into_iter()
                .zip(flow)
                .zip(bad)
                .map(|((p, f), b)| (p, f + off, b))
                .collect::<Vec<_>>()
        };
        let udp_len = udp.len();
        let all = interleave(
            &tagged(tcp, tcp_flow, tcp_bad, 0),
            &tagged(udp, udp_flow, vec![false; udp_len], base),
            &picks,
        );
        let pkts: Vec<Vec<u8>> = all.iter().map(|(p, _, _)| p.clone()).collect();
        let flow: Vec<usize> = all.iter().map(|&(_, f, _)| f).collect();
        let bad: Vec<bool> = all.iter().map(|&(_, _, b)| b).collect();

        let (fs, out) = run_with(&pkts, cap, true);
        flows_match(&pkts, &flow, &bad, &fs, &out);

        let (fs, out) = run_with(&pkts, cap, false);
        for &o in &out {
            if flow[usize::from(o)] >= base {
                prop_assert_eq!(vnet_hdr(&fs[usize::from(o)]).gso_type, VNET_GSO_NONE);
            }
        }
        flows_match(&pkts, &flow, &bad, &fs, &out);
    }

    /// Arbitrary bytes starting like an IPv4/IPv6 UDP header never cause a panic with UDP on,
    /// and what is not a valid merge is written untouched.
    #[test]
    fn arbitrary_bytes_are_safe(
        pkts in prop::collection::vec(
            (prop::sample::select(vec![0x45u8, 0x46, 0x60]), prop::collection::vec(any::<u8>(), 0..120)),
            0..40,
        ),
    ) {
        let pkts: Vec<Vec<u8>> = pkts
            .into_iter()
            .map(|(first, mut rest)| {
                rest.insert(0, first);
                let len = rest.len();
                if first == 0x60 && len >= 8 {
                    rest[4..6].copy_from_slice(&(len.saturating_sub(40) as u16).to_be_bytes());
                    rest[6] = 17;
                } else if len >= 10 {
                    rest[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                    rest[9] = 17;
                }
                rest
            })
            .collect();
        run_with(&pkts, HEAD + 256, true);
    }
}
