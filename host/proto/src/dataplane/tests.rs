//! Forwarding decisions of hub and spoke, driven with hand-built packets.

use super::*;
use crate::peer::Encap;
use crate::policy::{Action, OuterMark, Policy, TxMarks};
use crate::wire::checksum;
use crate::wire::ip::tests::tcp_syn_v4;

/// One dataplane with its worker state and counters, fed one packet at a time.
struct Node {
    dp: Dataplane,
    ws: WorkerState,
    st: WorkerStats,
}

impl Node {
    fn new(dp: Dataplane) -> Self {
        let ws = WorkerState::new(&dp);
        let st = WorkerStats::new(dp.peers().len());
        Node { dp, ws, st }
    }

    /// Runs `pkt` through `from_tun`; returns the verdict and the frame it refers to.
    fn tun(&mut self, pkt: &[u8]) -> (Verdict, Vec<u8>) {
        let mut f = framed(pkt);
        let v = self
            .dp
            .from_tun(&mut self.ws, &self.st, &mut f, HEADROOM, pkt.len());
        (v, f)
    }

    /// Runs `pkt` through `from_underlay` as if sent by `src`.
    fn underlay(&mut self, pkt: &[u8], src: &str) -> (Verdict, Vec<u8>) {
        self.underlay_raw(pkt, src, false)
    }

    /// Runs `pkt` through `inspect_tun` and `forward` with `policy`.
    fn tun_with(&mut self, pkt: &[u8], policy: Policy) -> (Verdict, Vec<u8>) {
        let mut f = framed(pkt);
        let v = match self.dp.inspect_tun(&self.st, &f, HEADROOM, pkt.len()) {
            Step::Done(v) => v,
            Step::Decide(p) => self.dp.forward(&mut self.ws, &self.st, &mut f, &p, &policy),
        };
        (v, f)
    }

    /// Runs `pkt` from `src` through `inspect_underlay` and `forward` with `policy`.
    fn underlay_with(&mut self, pkt: &[u8], src: &str, policy: Policy) -> (Verdict, Vec<u8>) {
        let mut f = framed(pkt);
        let src = src.parse().expect("test address");
        let v = match self.dp.inspect_underlay(
            &mut self.ws,
            &self.st,
            &f,
            HEADROOM,
            pkt.len(),
            src,
            false,
        ) {
            Step::Done(v) => v,
            Step::Decide(p) => self.dp.forward(&mut self.ws, &self.st, &mut f, &p, &policy),
        };
        (v, f)
    }

    fn underlay_raw(&mut self, pkt: &[u8], src: &str, ip_header: bool) -> (Verdict, Vec<u8>) {
        let mut f = framed(pkt);
        let src = src.parse().expect("test address");
        let v = self.dp.from_underlay(
            &mut self.ws,
            &self.st,
            &mut f,
            HEADROOM,
            pkt.len(),
            src,
            ip_header,
        );
        (v, f)
    }
}

/// The bytes a verdict refers to.
fn out(v: Verdict, f: &[u8]) -> &[u8] {
    match v {
        Verdict::Underlay { start, len, .. }
        | Verdict::Tun { start, len }
        | Verdict::Control { start, len, .. }
        | Verdict::Replicate { start, len, .. } => &f[start..start + len],
        Verdict::Drop(r) => panic!("dropped: {r:?}"),
    }
}

fn peer(name: &str, nbma: &str, key: Option<u32>) -> Peer {
    Peer {
        name: name.into(),
        nbma: nbma.parse().unwrap(),
        encap: Encap::Gre,
        key,
        checksum: false,
        sequence: false,
        udp_port: None,
        multicast: true,
    }
}

/// A hub with spoke1 (plain GRE) and spoke2 (key 7, checksum, sequence numbers).
fn hub() -> Node {
    let mut s2 = peer("spoke2", "192.0.2.12", Some(7));
    s2.sequence = true;
    s2.checksum = true;
    Node::new(Dataplane::new(DataplaneConfig {
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
        open_nhrp: None,
        peer_capacity: 0,
    }))
}

/// A spoke whose NHS is the hub (key 42), with a direct map entry for spoke3.
fn spoke() -> Node {
    Node::new(Dataplane::new(DataplaneConfig {
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
        open_nhrp: None,
        peer_capacity: 0,
    }))
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
    fix_ipv4_checksum(&mut p);
    p[20] = 8;
    p
}

fn fix_ipv4_checksum(p: &mut [u8]) {
    p[10..12].fill(0);
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

fn framed(pkt: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HEADROOM + pkt.len() + 64];
    f[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
    f
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
const HUB_LAN: [u8; 4] = [203, 0, 113, 194];

#[test]
fn spoke_sends_unmapped_traffic_to_its_nhs_with_the_hub_key() {
    let mut n = spoke();
    let pkt = echo(LAN1, LAN2, 100);
    let (v, f) = n.tun(&pkt);
    assert!(matches!(v, Verdict::Underlay { peer: 0, .. }), "{v:?}");
    let sent = out(v, &f);
    assert_eq!(GreRepr::parse(sent), Ok(plain(gre::PROTO_IPV4, Some(42))));
    assert_eq!(&sent[8..], &pkt[..]);
}

#[test]
fn spoke_sends_mapped_traffic_directly() {
    let mut n = spoke();
    assert!(matches!(
        n.tun(&echo(LAN1, LAN3, 100)).0,
        Verdict::Underlay { peer: 1, .. }
    ));
}

#[test]
fn hub_hairpins_spoke_to_spoke_with_ttl_decrement_and_egress_options() {
    let mut n = hub();
    let g = gre(plain(gre::PROTO_IPV4, None), &echo(LAN1, LAN2, 84));
    for expected_seq in 0..3 {
        let (v, f) = n.underlay(&g, "192.0.2.11");
        assert!(matches!(v, Verdict::Underlay { peer: 1, .. }), "{v:?}");
        let sent = out(v, &f);
        let repr = GreRepr::parse(sent).unwrap();
        let expected = GreRepr {
            protocol: gre::PROTO_IPV4,
            checksum: true,
            key: Some(7),
            sequence: Some(expected_seq),
        };
        assert_eq!(repr, expected);
        let inner = &sent[16..];
        assert_eq!(inner[8], 63);
        assert_eq!(checksum::checksum(&inner[..20]), 0);
    }
    assert_eq!(n.st.hairpin.packets.get(), 3);
    assert_eq!(n.st.peer(0).unwrap().rx.packets.get(), 3);
}

#[test]
fn hub_delivers_its_own_and_unknown_destinations_to_the_tun() {
    let mut n = hub();
    let inner = echo(LAN1, HUB_LAN, 84);
    let (v, f) = n.underlay(&gre(plain(gre::PROTO_IPV4, None), &inner), "192.0.2.11");
    assert_eq!(
        v,
        Verdict::Tun {
            start: HEADROOM + 4,
            len: 84
        }
    );
    assert_eq!(out(v, &f), &inner[..]);
}

#[test]
fn strips_the_outer_ipv4_header_of_raw_sockets() {
    let mut n = hub();
    let g = gre(plain(gre::PROTO_IPV4, None), &echo(LAN1, HUB_LAN, 84));
    let mut outer = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 47, 0, 0, 192, 0, 2, 11, 192, 0, 2, 1,
    ];
    outer[2..4].copy_from_slice(&((20 + g.len()) as u16).to_be_bytes());
    outer.extend_from_slice(&g);
    let (v, _) = n.underlay_raw(&outer, "192.0.2.11", true);
    assert_eq!(
        v,
        Verdict::Tun {
            start: HEADROOM + 24,
            len: 84
        }
    );
}

#[test]
fn underlay_drops_are_counted_by_reason() {
    let mut n = hub();
    let inner = echo(LAN1, LAN2, 60);
    let ok = gre(plain(gre::PROTO_IPV4, None), &inner);
    let with_flags = |b0: u8, b1: u8| {
        let mut p = ok.clone();
        p[0] = b0;
        p[1] = b1;
        p
    };
    let mut bad_sum = gre(
        GreRepr {
            protocol: gre::PROTO_IPV4,
            checksum: true,
            key: None,
            sequence: None,
        },
        &inner,
    );
    bad_sum[30] ^= 0xff;
    let cases: Vec<(Vec<u8>, &str, DropReason)> = vec![
        (vec![0, 0], "192.0.2.11", DropReason::Truncated),
        (ok.clone(), "192.0.2.99", DropReason::UnknownPeer),
        (
            gre(plain(gre::PROTO_IPV4, Some(1)), &inner),
            "192.0.2.11",
            DropReason::KeyMismatch,
        ),
        (ok.clone(), "192.0.2.12", DropReason::KeyMismatch),
        (
            gre(plain(0x6558, None), &inner),
            "192.0.2.11",
            DropReason::UnsupportedProtocol,
        ),
        (
            gre(plain(gre::PROTO_IPV6, None), &inner),
            "192.0.2.11",
            DropReason::InnerMalformed,
        ),
        (
            gre(plain(gre::PROTO_IPV4, None), &inner[..10]),
            "192.0.2.11",
            DropReason::InnerMalformed,
        ),
        (with_flags(0, 1), "192.0.2.11", DropReason::BadVersion),
        (
            with_flags(0x40, 0),
            "192.0.2.11",
            DropReason::RoutingPresent,
        ),
        (with_flags(0x08, 0), "192.0.2.11", DropReason::ReservedBits),
        (bad_sum, "192.0.2.11", DropReason::BadChecksum),
    ];
    for (pkt, src, reason) in cases {
        let before = n.st.drops(reason);
        assert_eq!(n.underlay(&pkt, src).0, Verdict::Drop(reason));
        assert_eq!(n.st.drops(reason), before + 1, "{reason:?}");
    }
    assert_eq!(
        n.st.rx.packets.get(),
        3,
        "only the packets that passed the GRE and peer checks"
    );
}

#[test]
fn out_of_order_sequence_numbers_are_dropped() {
    let mut n = hub();
    let inner = echo(LAN2, HUB_LAN, 60);
    let mut run = |seq: u32| {
        let repr = GreRepr {
            protocol: gre::PROTO_IPV4,
            checksum: false,
            key: Some(7),
            sequence: Some(seq),
        };
        n.underlay(&gre(repr, &inner), "192.0.2.12").0
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
    let mut n = hub();
    let (v, _) = n.underlay(&gre(plain(gre::PROTO_NHRP, None), &[0u8; 20]), "192.0.2.11");
    assert_eq!(
        v,
        Verdict::Control {
            peer: Some(0),
            start: HEADROOM + 4,
            len: 20
        }
    );
}

#[test]
fn nhrp_from_unknown_senders_reaches_the_control_path_only_when_open_and_keyed() {
    let closed = hub();
    let mut open_cfg = closed.dp.config().clone();
    open_cfg.open_nhrp = Some(OpenNhrp { key: Some(7) });
    for (cfg, key, proto, want) in [
        (closed.dp.config().clone(), Some(7), gre::PROTO_NHRP, None),
        (
            open_cfg.clone(),
            Some(7),
            gre::PROTO_NHRP,
            Some(HEADROOM + 8),
        ),
        (open_cfg.clone(), Some(8), gre::PROTO_NHRP, None),
        (open_cfg.clone(), None, gre::PROTO_NHRP, None),
        (open_cfg.clone(), Some(7), gre::PROTO_IPV4, None),
    ] {
        let mut n = Node::new(Dataplane::new(cfg));
        let (v, _) = n.underlay(&gre(plain(proto, key), &[0u8; 20]), "192.0.2.99");
        match want {
            Some(start) => assert_eq!(
                v,
                Verdict::Control {
                    peer: None,
                    start,
                    len: 20
                }
            ),
            None => assert_eq!(v, Verdict::Drop(DropReason::UnknownPeer)),
        }
    }
}

#[test]
fn vacant_peer_slots_are_never_matched_or_routed_to() {
    let mut cfg = hub().dp.config().clone();
    cfg.peers.push(Peer::vacant());
    let vacant = (cfg.peers.len() - 1) as u32;
    let dp = Dataplane::new(cfg);
    assert_eq!(dp.peer_by_nbma("0.0.0.0".parse().unwrap()), None);
    let mut n = Node::new(dp);
    let (v, _) = n.tun_with(&echo(LAN1, LAN3, 100), policy(Action::Peer(vacant)));
    assert_eq!(v, Verdict::Drop(DropReason::NoRoute));
}

#[test]
fn too_big_with_df_from_tun_returns_frag_needed_into_the_tun() {
    let mut n = spoke();
    let (v, f) = n.tun(&echo(LAN1, LAN2, 1480));
    assert!(matches!(v, Verdict::Tun { .. }), "{v:?}");
    let err = out(v, &f);
    assert_eq!(&err[16..20], &LAN1);
    assert_eq!(&err[12..16], &[198, 51, 100, 11]);
    assert_eq!(&err[20..22], &[3, 4]);
    assert_eq!(
        u16::from_be_bytes([err[26], err[27]]),
        1472,
        "inner MTU to the hub: 1500 - 20 - GRE with key (8)"
    );
    assert_eq!(n.st.drops(DropReason::TooBig), 1);
}

#[test]
fn too_big_without_df_is_sent_for_outer_fragmentation() {
    let mut n = spoke();
    let mut pkt = echo(LAN1, LAN2, 1480);
    pkt[6] = 0;
    fix_ipv4_checksum(&mut pkt);
    assert!(matches!(n.tun(&pkt).0, Verdict::Underlay { peer: 0, .. }));
}

#[test]
fn hub_returns_frag_needed_to_the_ingress_spoke_when_egress_is_smaller() {
    let mut n = hub();
    // Spoke2's path carries checksum + key + sequence: inner MTU 1464.
    let (v, f) = n.underlay(
        &gre(plain(gre::PROTO_IPV4, None), &echo(LAN1, LAN2, 1470)),
        "192.0.2.11",
    );
    assert!(matches!(v, Verdict::Underlay { peer: 0, .. }), "{v:?}");
    let err = &out(v, &f)[4..];
    assert_eq!(&err[20..22], &[3, 4]);
    assert_eq!(u16::from_be_bytes([err[26], err[27]]), 1464);
    assert_eq!(&err[16..20], &LAN1);
}

#[test]
fn mss_is_clamped_in_both_directions() {
    let mut n = spoke();
    let syn = tcp_syn_v4(1460);
    let (v, f) = n.tun(&syn);
    let sent = out(v, &f);
    assert_eq!(u16::from_be_bytes([sent[8 + 42], sent[8 + 43]]), 1360);
    let (v, f) = n.underlay(&gre(plain(gre::PROTO_IPV4, Some(42)), &syn), "192.0.2.1");
    assert!(matches!(v, Verdict::Tun { .. }), "{v:?}");
    let delivered = out(v, &f);
    assert_eq!(u16::from_be_bytes([delivered[42], delivered[43]]), 1360);
    assert_eq!(n.st.mss_clamped.get(), 2);
}

#[test]
fn ttl_expiry_on_hairpin_is_counted() {
    let mut n = hub();
    let mut inner = echo(LAN1, LAN2, 60);
    inner[8] = 1;
    fix_ipv4_checksum(&mut inner);
    let (v, _) = n.underlay(&gre(plain(gre::PROTO_IPV4, None), &inner), "192.0.2.11");
    assert_eq!(v, Verdict::Drop(DropReason::TtlExpired));
    assert_eq!(n.st.drops(DropReason::TtlExpired), 1);
}

fn policy(action: Action) -> Policy {
    Policy {
        action,
        ..Policy::DEFAULT
    }
}

#[test]
fn policy_via_nhs_overrides_a_direct_map_entry() {
    let mut n = spoke();
    let pkt = echo(LAN1, LAN3, 100);
    assert!(matches!(
        n.tun_with(&pkt, Policy::DEFAULT).0,
        Verdict::Underlay { peer: 1, .. }
    ));
    assert!(matches!(
        n.tun_with(&pkt, policy(Action::ViaNhs)).0,
        Verdict::Underlay { peer: 0, .. }
    ));
    assert!(matches!(
        n.tun_with(&pkt, policy(Action::Peer(0))).0,
        Verdict::Underlay { peer: 0, .. }
    ));
}

#[test]
fn policy_drops_and_fail_closed_are_counted_apart() {
    let mut n = hub();
    let g = gre(plain(gre::PROTO_IPV4, None), &echo(LAN1, LAN2, 84));
    assert_eq!(
        n.underlay_with(&g, "192.0.2.11", policy(Action::Drop)).0,
        Verdict::Drop(DropReason::PolicyDrop)
    );
    let closed = Policy {
        fail_closed: true,
        ..Policy::DEFAULT
    };
    assert_eq!(
        n.underlay_with(&g, "192.0.2.11", closed).0,
        Verdict::Drop(DropReason::PluginFailClosed)
    );
    assert_eq!(n.st.drops(DropReason::PolicyDrop), 1);
    assert_eq!(n.st.drops(DropReason::PluginFailClosed), 1);
    assert_eq!(n.st.hairpin.packets.get(), 0);
}

#[test]
fn policy_local_delivery_stops_a_hub_hairpin() {
    let mut n = hub();
    let inner = echo(LAN1, LAN2, 84);
    let (v, f) = n.underlay_with(
        &gre(plain(gre::PROTO_IPV4, None), &inner),
        "192.0.2.11",
        policy(Action::Local),
    );
    assert!(matches!(v, Verdict::Tun { .. }), "{v:?}");
    assert_eq!(
        out(v, &f),
        &inner[..],
        "delivered unchanged (no TTL decrement)"
    );
}

#[test]
fn hub_can_route_unmapped_outbound_traffic_to_a_chosen_peer() {
    let mut n = hub();
    let pkt = echo(HUB_LAN, [198, 51, 100, 200], 84);
    assert_eq!(
        n.tun_with(&pkt, Policy::DEFAULT).0,
        Verdict::Drop(DropReason::NoRoute)
    );
    assert!(matches!(
        n.tun_with(&pkt, policy(Action::Peer(1))).0,
        Verdict::Underlay { peer: 1, .. }
    ));
    assert_eq!(
        n.tun_with(&pkt, policy(Action::Peer(9))).0,
        Verdict::Drop(DropReason::NoRoute),
        "unknown peer id"
    );
}

#[test]
fn marks_rewrite_the_inner_dscp_and_set_the_outer_traffic_class() {
    let mut n = spoke();
    let mut pkt = echo(LAN1, LAN2, 100);
    pkt[1] = 1; // ECN ECT(1), DSCP 0
    fix_ipv4_checksum(&mut pkt);
    let copy = Policy {
        inner_dscp: Some(46),
        outer: Some(OuterMark::default()),
        ..Policy::DEFAULT
    };
    let (v, f) = n.tun_with(&pkt, copy);
    let Verdict::Underlay { marks, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(
        marks.tos,
        Some(46 << 2 | 1),
        "outer copies the re-marked inner DSCP and the ECN"
    );
    let inner = &out(v, &f)[8..];
    assert_eq!(inner[1], 46 << 2 | 1);
    assert_eq!(
        checksum::checksum(&inner[..20]),
        0,
        "inner header checksum still valid"
    );
    let explicit = Policy {
        priority: Some(6),
        outer: Some(OuterMark {
            dscp: Some(34),
            ecn: Some(0),
        }),
        ..Policy::DEFAULT
    };
    let Verdict::Underlay { marks, .. } = n.tun_with(&pkt, explicit).0 else {
        panic!()
    };
    assert_eq!(
        marks,
        TxMarks {
            tos: Some(34 << 2),
            priority: Some(6)
        }
    );
    let Verdict::Underlay { marks, .. } = n.tun_with(&pkt, Policy::DEFAULT).0 else {
        panic!()
    };
    assert_eq!(marks, TxMarks::NONE, "no mark: socket defaults");
}

#[test]
fn a_hub_replicates_multicast_from_its_tun_and_from_spokes() {
    let mut n = hub();
    let mut group = echo(LAN1, [239, 1, 1, 1], 100);
    group[8] = 1;
    fix_ipv4_checksum(&mut group);
    let (v, f) = n.tun(&group);
    assert_eq!(
        v,
        Verdict::Replicate {
            start: HEADROOM,
            len: 100,
            ingress: None,
            local: false
        }
    );
    assert_eq!(out(v, &f), &group[..]);
    assert_eq!(n.dp.multicast_peers(), &[0, 1]);
    // From spoke 0: to the hub's TUN and the other spokes, unchanged (TTL 1 survives).
    let (v, f) = n.underlay(&gre(plain(gre::PROTO_IPV4, None), &group), "192.0.2.11");
    assert!(
        matches!(
            v,
            Verdict::Replicate {
                ingress: Some(0),
                local: true,
                ..
            }
        ),
        "{v:?}"
    );
    assert_eq!(out(v, &f), &group[..]);
    // Each copy is encapsulated for its peer.
    let mut buf = vec![0u8; HEADROOM + 200];
    let (s, l) =
        n.dp.encap_copy(&mut n.ws, &n.st, 1, &group, &mut buf)
            .expect("copy");
    let repr = GreRepr::parse(&buf[s..s + l]).unwrap();
    assert_eq!((repr.protocol, repr.key), (gre::PROTO_IPV4, Some(7)));
    assert_eq!(&buf[s + repr.header_len()..s + l], &group[..]);
    // Broadcast too; a spoke does not replicate (its multicast goes to the NHS).
    let bcast = echo(LAN1, [255, 255, 255, 255], 60);
    assert!(matches!(n.tun(&bcast).0, Verdict::Replicate { .. }));
    let mut s = spoke();
    assert!(matches!(s.tun(&group).0, Verdict::Underlay { peer: 0, .. }));
}

#[test]
fn peers_out_of_the_multicast_map_get_no_copies() {
    let mut cfg = hub().dp.config().clone();
    cfg.peers[0].multicast = false;
    cfg.peers.push(Peer::vacant());
    let dp = Dataplane::new(cfg);
    assert_eq!(dp.multicast_peers(), &[1]);
}

/// A regional hub: the core hub (its NHS, peer 0) and one registered spoke (peer 1).
fn regional_hub() -> Node {
    Node::new(Dataplane::new(DataplaneConfig {
        role: Role::Hub,
        peers: vec![
            peer("core", "192.0.2.100", None),
            peer("spoke2", "192.0.2.12", None),
        ],
        map: vec![("203.0.113.64/26".parse().unwrap(), 1)],
        nhs: Some(0),
        local_v4: Some("198.51.100.11".parse().unwrap()),
        local_v6: None,
        underlay_mtu: 1500,
        tun_mtu: 1476,
        mss_clamp: None,
        open_nhrp: None,
        peer_capacity: 0,
    }))
}

/// The redirect source of `pkt` read from the TUN (`from` = None) or received from `from`.
fn redirect_source(n: &mut Node, pkt: &[u8], from: Option<&str>) -> Option<PeerId> {
    let mut f = framed(pkt);
    let step = match from {
        None => n.dp.inspect_tun(&n.st, &f, HEADROOM, pkt.len()),
        Some(src) => n.dp.inspect_underlay(
            &mut n.ws,
            &n.st,
            &f,
            HEADROOM,
            pkt.len(),
            src.parse().unwrap(),
            false,
        ),
    };
    let Step::Decide(p) = step else {
        panic!("not forwarded: {step:?}");
    };
    let v = n.dp.forward(&mut n.ws, &n.st, &mut f, &p, &Policy::DEFAULT);
    n.dp.redirect_source(&p, &v)
}

#[test]
fn redirect_source_is_the_hairpinning_spoke_or_the_spoke_behind_a_regional_hubs_upstream_traffic() {
    // A plain hub: the spoke a packet came from when it goes out to another spoke.
    let mut h = hub();
    let g = gre(plain(gre::PROTO_IPV4, None), &echo(LAN1, LAN2, 84));
    assert_eq!(redirect_source(&mut h, &g, Some("192.0.2.11")), Some(0));
    // Its own traffic to a spoke is no hairpin.
    assert_eq!(
        redirect_source(&mut h, &echo(HUB_LAN, LAN2, 84), None),
        None
    );

    let mut r = regional_hub();
    // A spoke's packet for another region: no registration covers it, so the dataplane
    // hands it to the kernel (which routes it back into the tunnel)...
    let g = gre(plain(gre::PROTO_IPV4, None), &echo(LAN2, LAN3, 84));
    assert_eq!(redirect_source(&mut r, &g, Some("192.0.2.12")), None);
    // ... and when it comes back from the TUN towards the core hub, its source names the
    // spoke to redirect.
    assert_eq!(
        redirect_source(&mut r, &echo(LAN2, LAN3, 84), None),
        Some(1)
    );
    // The regional hub's own LAN going upstream: nobody to redirect.
    assert_eq!(
        redirect_source(&mut r, &echo(HUB_LAN, LAN3, 84), None),
        None
    );
    // Traffic from the core hub to a spoke hairpins with the core hub as its source (the
    // control path does not redirect core hubs).
    let g = gre(plain(gre::PROTO_IPV4, None), &echo(LAN3, LAN2, 84));
    assert_eq!(redirect_source(&mut r, &g, Some("192.0.2.100")), Some(0));
}
