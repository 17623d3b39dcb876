//! Forwarding decisions of hub and spoke, driven with hand-built packets.

use super::*;
use crate::peer::Encap;
use crate::wire::checksum;
use crate::wire::ip::tests::tcp_syn_v4;

fn peer(name: &str, nbma: &str, key: Option<u32>) -> Peer {
    Peer {
        name: name.into(),
        nbma: nbma.parse().unwrap(),
        encap: Encap::Gre,
        key,
        checksum: false,
        sequence: false,
    }
}

fn hub() -> Dataplane {
    let mut s2 = peer("spoke2", "192.0.2.12", Some(7));
    s2.sequence = true;
    s2.checksum = true;
    Dataplane::new(DataplaneConfig {
        role: Role::Hub,
        peers: vec![peer("spoke1", "192.0.2.11", None), s2],
        map: vec![
            ("203.0.113.0/26".parse().unwrap(), 0),
            ("203.0.113.64/26".parse().unwrap(), 1),
        ],
        nhs: None,
        local_v4: Some("198.51.100.1".parse().unwrap()),
        local_v6: None,
        underlay_mtu: 1500,
        tun_mtu: 1476,
        mss_clamp: Some((1436, 1416)),
    })
}

fn spoke() -> Dataplane {
    Dataplane::new(DataplaneConfig {
        role: Role::Spoke,
        peers: vec![
            peer("hub", "192.0.2.1", Some(42)),
            peer("spoke3", "192.0.2.13", None),
        ],
        map: vec![("203.0.113.128/26".parse().unwrap(), 1)],
        nhs: Some(0),
        local_v4: Some("198.51.100.11".parse().unwrap()),
        local_v6: None,
        underlay_mtu: 1500,
        tun_mtu: 1400,
        mss_clamp: Some((1360, 1340)),
    })
}

/// An ICMP echo request from `src` to `dst`, `size` bytes, DF set.
fn echo(src: [u8; 4], dst: [u8; 4], size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 1;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20] = 8;
    p
}

fn framed(pkt: &[u8]) -> (Vec<u8>, usize) {
    let mut f = vec![0u8; HEADROOM + pkt.len() + 64];
    f[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
    (f, HEADROOM)
}

fn gre(repr: GreRepr, inner: &[u8]) -> Vec<u8> {
    let mut g = vec![0u8; repr.header_len() + inner.len()];
    g[repr.header_len()..].copy_from_slice(inner);
    repr.emit(&mut g);
    g
}

fn plain(protocol: u16, key: Option<u32>) -> GreRepr {
    GreRepr {
        protocol,
        checksum: false,
        key,
        sequence: None,
    }
}

const LAN1: [u8; 4] = [203, 0, 113, 2];
const LAN2: [u8; 4] = [203, 0, 113, 66];
const LAN3: [u8; 4] = [203, 0, 113, 130];

#[test]
fn spoke_sends_unmapped_traffic_to_its_nhs_with_the_hub_key() {
    let dp = spoke();
    let (mut ws, st) = (WorkerState::new(&dp), WorkerStats::new(2));
    let pkt = echo(LAN1, LAN2, 100);
    let (mut f, s) = framed(&pkt);
    let Verdict::Underlay {
        peer, start, len, ..
    } = dp.from_tun(&mut ws, &st, &mut f, s, pkt.len())
    else {
        panic!()
    };
    assert_eq!(peer, 0);
    let repr = GreRepr::parse(&f[start..start + len]).unwrap();
    assert_eq!(repr, plain(gre::PROTO_IPV4, Some(42)));
    assert_eq!(&f[start + 8..start + len], &pkt[..]);
}

#[test]
fn spoke_sends_mapped_traffic_directly() {
    let dp = spoke();
    let (mut ws, st) = (WorkerState::new(&dp), WorkerStats::new(2));
    let pkt = echo(LAN1, LAN3, 100);
    let (mut f, s) = framed(&pkt);
    assert!(matches!(
        dp.from_tun(&mut ws, &st, &mut f, s, pkt.len()),
        Verdict::Underlay { peer: 1, .. }
    ));
}

#[test]
fn hub_hairpins_spoke_to_spoke_with_ttl_decrement_and_egress_options() {
    let dp = hub();
    let (mut ws, st) = (WorkerState::new(&dp), WorkerStats::new(2));
    let inner = echo(LAN1, LAN2, 84);
    let g = gre(plain(gre::PROTO_IPV4, None), &inner);
    for expected_seq in 0..3 {
        let (mut f, s) = framed(&g);
        let v = dp.from_underlay(
            &mut ws,
            &st,
            &mut f,
            s,
            g.len(),
            "192.0.2.11".parse().unwrap(),
            false,
        );
        let Verdict::Underlay {
            peer: 1,
            start,
            len,
            ..
        } = v
        else {
            panic!("{v:?}")
        };
        let repr = GreRepr::parse(&f[start..start + len]).unwrap();
        assert_eq!(
            repr,
            GreRepr {
                protocol: gre::PROTO_IPV4,
                checksum: true,
                key: Some(7),
                sequence: Some(expected_seq)
            }
        );
        let out = &f[start + 16..start + len];
        assert_eq!(out[8], 63);
        assert_eq!(checksum::checksum(&out[..20]), 0);
    }
    assert_eq!(st.hairpin.packets.get(), 3);
    assert_eq!(st.peer(0).unwrap().rx.packets.get(), 3);
}

#[test]
fn hub_delivers_its_own_and_unknown_destinations_to_the_tun() {
    let dp = hub();
    let (mut ws, st) = (WorkerState::new(&dp), WorkerStats::new(2));
    let inner = echo(LAN1, [203, 0, 113, 194], 84);
    let g = gre(plain(gre::PROTO_IPV4, None), &inner);
    let (mut f, s) = framed(&g);
    let v = dp.from_underlay(
        &mut ws,
        &st,
        &mut f,
        s,
        g.len(),
        "192.0.2.11".parse().unwrap(),
        false,
    );
    assert_eq!(
        v,
        Verdict::Tun {
            start: s + 4,
            len: 84
        }
    );
    assert_eq!(&f[s + 4..s + 88], &inner[..]);
}

#[test]
fn strips_the_outer_ipv4_header_of_raw_sockets() {
    let dp = hub();
    let (mut ws, st) = (WorkerState::new(&dp), WorkerStats::new(2));
    let inner = echo(LAN1, [203, 0, 113, 194], 84);
    let g = gre(plain(gre::PROTO_IPV4, None), &inner);
    let mut outer = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 47, 0, 0, 192, 0, 2, 11, 192, 0, 2, 1,
    ];
    outer[2..4].copy_from_slice(&((20 + g.len()) as u16).to_be_bytes());
    outer.extend_from_slice(&g);
    let (mut f, s) = framed(&outer);
    let v = dp.from_underlay(
        &mut ws,
        &st,
        &mut f,
        s,
        outer.len(),
        "192.0.2.11".parse().unwrap(),
        true,
    );
    assert_eq!(
        v,
        Verdict::Tun {
            start: s + 24,
            len: 84
        }
    );
}

#[test]
fn underlay_drops_are_counted_by_reason() {
    let dp = hub();
    let (mut ws, st) = (WorkerState::new(&dp), WorkerStats::new(2));
    let inner = echo(LAN1, LAN2, 60);
    let from = |a: &str| a.parse::<IpAddr>().unwrap();
    let mut cases: Vec<(Vec<u8>, IpAddr, DropReason)> = vec![
        (vec![0, 0], from("192.0.2.11"), DropReason::Truncated),
        (
            gre(plain(gre::PROTO_IPV4, None), &inner),
            from("192.0.2.99"),
            DropReason::UnknownPeer,
        ),
        (
            gre(plain(gre::PROTO_IPV4, Some(1)), &inner),
            from("192.0.2.11"),
            DropReason::KeyMismatch,
        ),
        (
            gre(plain(gre::PROTO_IPV4, None), &inner),
            from("192.0.2.12"),
            DropReason::KeyMismatch,
        ),
        (
            gre(plain(0x6558, None), &inner),
            from("192.0.2.11"),
            DropReason::UnsupportedProtocol,
        ),
        (
            gre(plain(gre::PROTO_IPV6, None), &inner),
            from("192.0.2.11"),
            DropReason::InnerMalformed,
        ),
        (
            gre(plain(gre::PROTO_IPV4, None), &inner[..10]),
            from("192.0.2.11"),
            DropReason::InnerMalformed,
        ),
    ];
    let mut bad = gre(plain(gre::PROTO_IPV4, None), &inner);
    bad[1] = 1;
    cases.push((bad.clone(), from("192.0.2.11"), DropReason::BadVersion));
    bad[1] = 0;
    bad[0] = 0x40;
    cases.push((bad.clone(), from("192.0.2.11"), DropReason::RoutingPresent));
    bad[0] = 0x08;
    cases.push((bad, from("192.0.2.11"), DropReason::ReservedBits));
    let mut csum = gre(
        GreRepr {
            protocol: gre::PROTO_IPV4,
            checksum: true,
            key: None,
            sequence: None,
        },
        &inner,
    );
    csum[30] ^= 0xff;
    cases.push((csum, from("192.0.2.11"), DropReason::BadChecksum));
    for (pkt, src, reason) in cases {
        let before = st.drops(reason);
        let (mut f, s) = framed(&pkt);
        assert_eq!(
            dp.from_underlay(&mut ws, &st, &mut f, s, pkt.len(), src, false),
            Verdict::Drop(reason)
        );
        assert_eq!(st.drops(reason), before + 1, "{reason:?}");
    }
    assert_eq!(
        st.rx.packets.get(),
        3,
        "only the packets that passed the GRE and peer checks"
    );
}

#[test]
fn out_of_order_sequence_numbers_are_dropped() {
    let dp = hub();
    let (mut ws, st) = (WorkerState::new(&dp), WorkerStats::new(2));
    let inner = echo(LAN2, [203, 0, 113, 194], 60);
    let src: IpAddr = "192.0.2.12".parse().unwrap();
    let mut run = |seq: u32| {
        let g = gre(
            GreRepr {
                protocol: gre::PROTO_IPV4,
                checksum: false,
                key: Some(7),
                sequence: Some(seq),
            },
            &inner,
        );
        let (mut f, s) = framed(&g);
        dp.from_underlay(&mut ws, &st, &mut f, s, g.len(), src, false)
    };
    assert!(matches!(run(u32::MAX - 1), Verdict::Tun { .. }));
    assert!(matches!(run(u32::MAX), Verdict::Tun { .. }));
    assert!(matches!(run(0), Verdict::Tun { .. }), "wraps around");
    assert_eq!(run(0), Verdict::Drop(DropReason::OutOfSequence));
    assert_eq!(run(u32::MAX), Verdict::Drop(DropReason::OutOfSequence));
    assert!(matches!(run(5), Verdict::Tun { .. }));
}

#[test]
fn nhrp_goes_to_the_control_path() {
    let dp = hub();
    let (mut ws, st) = (WorkerState::new(&dp), WorkerStats::new(2));
    let g = gre(plain(gre::PROTO_NHRP, None), &[0u8; 20]);
    let (mut f, s) = framed(&g);
    let v = dp.from_underlay(
        &mut ws,
        &st,
        &mut f,
        s,
        g.len(),
        "192.0.2.11".parse().unwrap(),
        false,
    );
    assert_eq!(
        v,
        Verdict::Control {
            peer: 0,
            start: s + 4,
            len: 20
        }
    );
}

#[test]
fn too_big_with_df_from_tun_returns_frag_needed_into_the_tun() {
    let dp = spoke();
    let (mut ws, st) = (WorkerState::new(&dp), WorkerStats::new(2));
    let pkt = echo(LAN1, LAN2, 1480);
    let (mut f, s) = framed(&pkt);
    let Verdict::Tun { start, len } = dp.from_tun(&mut ws, &st, &mut f, s, pkt.len()) else {
        panic!()
    };
    let err = &f[start..start + len];
    assert_eq!(&err[16..20], &LAN1);
    assert_eq!(&err[12..16], &[198, 51, 100, 11]);
    assert_eq!(&err[20..22], &[3, 4]);
    assert_eq!(
        u16::from_be_bytes([err[26], err[27]]),
        1472,
        "inner MTU to the hub: 1500 - 20 - GRE with key (8)"
    );
    assert_eq!(st.drops(DropReason::TooBig), 1);
}

#[test]
fn too_big_without_df_is_sent_for_outer_fragmentation() {
    let dp = spoke();
    let (mut ws, st) = (WorkerState::new(&dp), WorkerStats::new(2));
    let mut pkt = echo(LAN1, LAN2, 1480);
    pkt[6] = 0;
    pkt[10..12].fill(0);
    let c = checksum::checksum(&pkt[..20]);
    pkt[10..12].copy_from_slice(&c.to_be_bytes());
    let (mut f, s) = framed(&pkt);
    assert!(matches!(
        dp.from_tun(&mut ws, &st, &mut f, s, pkt.len()),
        Verdict::Underlay { peer: 0, .. }
    ));
}

#[test]
fn hub_returns_frag_needed_to_the_ingress_spoke_when_egress_is_smaller() {
    let dp = hub();
    let (mut ws, st) = (WorkerState::new(&dp), WorkerStats::new(2));
    // Spoke2's path carries checksum + key + sequence: inner MTU 1464.
    let inner = echo(LAN1, LAN2, 1470);
    let g = gre(plain(gre::PROTO_IPV4, None), &inner);
    let (mut f, s) = framed(&g);
    let v = dp.from_underlay(
        &mut ws,
        &st,
        &mut f,
        s,
        g.len(),
        "192.0.2.11".parse().unwrap(),
        false,
    );
    let Verdict::Underlay {
        peer: 0,
        start,
        len,
        ..
    } = v
    else {
        panic!("{v:?}")
    };
    let err = &f[start + 4..start + len];
    assert_eq!(&err[20..22], &[3, 4]);
    assert_eq!(u16::from_be_bytes([err[26], err[27]]), 1464);
    assert_eq!(&err[16..20], &LAN1);
}

#[test]
fn mss_is_clamped_in_both_directions() {
    let dp = spoke();
    let (mut ws, st) = (WorkerState::new(&dp), WorkerStats::new(2));
    let syn = tcp_syn_v4(1460);
    let (mut f, s) = framed(&syn);
    let Verdict::Underlay { start, .. } = dp.from_tun(&mut ws, &st, &mut f, s, syn.len()) else {
        panic!()
    };
    assert_eq!(
        u16::from_be_bytes([f[start + 8 + 42], f[start + 8 + 43]]),
        1360
    );
    let g = gre(plain(gre::PROTO_IPV4, Some(42)), &syn);
    let (mut f, s) = framed(&g);
    let v = dp.from_underlay(
        &mut ws,
        &st,
        &mut f,
        s,
        g.len(),
        "192.0.2.1".parse().unwrap(),
        false,
    );
    let Verdict::Tun { start, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(u16::from_be_bytes([f[start + 42], f[start + 43]]), 1360);
    assert_eq!(st.mss_clamped.get(), 2);
}

#[test]
fn ttl_expiry_on_hairpin_is_counted() {
    let dp = hub();
    let (mut ws, st) = (WorkerState::new(&dp), WorkerStats::new(2));
    let mut inner = echo(LAN1, LAN2, 60);
    inner[8] = 1;
    let g = gre(plain(gre::PROTO_IPV4, None), &inner);
    let (mut f, s) = framed(&g);
    let v = dp.from_underlay(
        &mut ws,
        &st,
        &mut f,
        s,
        g.len(),
        "192.0.2.11".parse().unwrap(),
        false,
    );
    assert_eq!(v, Verdict::Drop(DropReason::TtlExpired));
}
