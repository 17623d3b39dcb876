use super::*;
use crate::nhrp::resolution::{FLAG_AUTHORITATIVE, FLAG_SOURCE_IS_ROUTER, FLAG_SOURCE_STABLE};
use crate::wire::nhrp::Family;

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn prefix(s: &str) -> Prefix {
    s.parse().unwrap()
}

const NHS: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const A_NBMA: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11));
const A_PROTO: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 11));
const B_NBMA: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 12));
const B_PROTO: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 12));

fn config(nbma: IpAddr, proto: IpAddr) -> ResolverConfig {
    ResolverConfig {
        holding_time: NonZeroU16::new(300).unwrap(),
        idle_timeout: secs(100),
        refresh_before: secs(30),
        first_request_id: 500,
        ..ResolverConfig::new(nbma, proto)
    }
}

fn spoke_a() -> Resolver {
    Resolver::new(config(A_NBMA, A_PROTO))
}

fn spoke_b() -> Resolver {
    Resolver::new(ResolverConfig {
        prefixes: vec![prefix("192.0.2.0/24"), prefix("192.0.2.128/25")],
        ..config(B_NBMA, B_PROTO)
    })
}

/// A minimal IPv4 header from `src` to `dst`.
fn ipv4_packet(dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 203, 0, 113, 11];
    p.extend_from_slice(&dst.octets());
    p
}

fn traffic_indication(dst: Ipv4Addr) -> NhrpRepr {
    NhrpRepr {
        nbma: Family::Ipv4,
        protocol: Family::Ipv4,
        snap: [0; 5],
        hop_count: 1,
        src_nbma: Some(NHS),
        src_nbma_subaddress: Vec::new(),
        src_proto: Some(ip(203, 0, 113, 1)),
        dst_proto: Some(A_PROTO),
        body: Body::TrafficIndication {
            code: 0,
            packet: ipv4_packet(dst),
        },
        extensions: Vec::new(),
    }
}

fn request_id(msg: &NhrpRepr) -> u32 {
    match msg.body {
        Body::Entries { request_id, .. } => request_id,
        _ => panic!("entries"),
    }
}

fn first_cie(msg: &NhrpRepr) -> &Cie {
    match &msg.body {
        Body::Entries { cies, .. } => &cies[0],
        _ => panic!("entries"),
    }
}

/// A resolves `dst`, B answers directly; returns A's and B's changes.
fn resolve_through_b(
    a: &mut Resolver,
    b: &mut Resolver,
    now: Duration,
    dst: IpAddr,
) -> (Vec<ShortcutChange>, Vec<ShortcutChange>) {
    let req = a.resolve(now, NHS, dst).expect("request");
    let (reply, b_changes) = b.handle_resolution_request(now, NHS, &req.message);
    let reply = reply.expect("reply");
    assert_eq!(reply.to, A_NBMA);
    (
        a.handle_resolution_reply(now, B_NBMA, &reply.message),
        b_changes,
    )
}

#[test]
fn a_traffic_indication_starts_one_resolution_for_its_destination() {
    let mut a = spoke_a();
    let out = a
        .handle_traffic_indication(
            secs(1),
            NHS,
            &traffic_indication(Ipv4Addr::new(192, 0, 2, 5)),
        )
        .expect("request");
    assert_eq!(out.to, NHS);
    let m = &out.message;
    assert_eq!(m.dst_proto, Some(ip(192, 0, 2, 5)));
    assert_eq!((m.src_nbma, m.src_proto), (Some(A_NBMA), Some(A_PROTO)));
    let Body::Entries {
        op, flags, cies, ..
    } = &m.body
    else {
        panic!("entries")
    };
    assert_eq!(*op, Operation::ResolutionRequest);
    assert_eq!(
        *flags,
        FLAG_SOURCE_IS_ROUTER | FLAG_AUTHORITATIVE | FLAG_SOURCE_STABLE
    );
    assert_eq!(request_id(m), 500);
    assert_eq!(
        (cies[0].holding_time, cies[0].nbma, cies[0].proto),
        (300, None, None)
    );
    // The same destination again: deduplicated while pending; another one starts.
    let again = a.handle_traffic_indication(
        secs(2),
        NHS,
        &traffic_indication(Ipv4Addr::new(192, 0, 2, 5)),
    );
    assert_eq!(again, None);
    let other = a.resolve(secs(2), NHS, ip(192, 0, 2, 6)).unwrap();
    assert_eq!(request_id(&other.message), 501);
    // Our own address never needs resolving; neither does a packet without an IP header.
    assert_eq!(a.resolve(secs(2), NHS, A_PROTO), None);
    let mut junk = traffic_indication(Ipv4Addr::new(192, 0, 2, 7));
    junk.body = Body::TrafficIndication {
        code: 0,
        packet: vec![0x45, 0],
    };
    assert_eq!(a.handle_traffic_indication(secs(2), NHS, &junk), None);
    let c = a.counters();
    assert_eq!(
        (c.indications, c.deduplicated, c.requests, c.ignored),
        (3, 1, 2, 2)
    );
}

#[test]
fn unanswered_requests_are_retransmitted_with_backoff_then_given_up() {
    let mut a = Resolver::new(ResolverConfig {
        retry_initial: secs(1),
        retry_max: secs(4),
        max_retries: 3,
        ..config(A_NBMA, A_PROTO)
    });
    let first = a.resolve(secs(0), NHS, B_PROTO).unwrap();
    let mut sent = Vec::new();
    while let Some(t) = a.poll_timeout() {
        let (out, changes) = a.poll(t);
        assert!(changes.is_empty());
        sent.extend(
            out.into_iter()
                .map(|o| (t.as_secs(), request_id(&o.message))),
        );
    }
    // Sent at 0, retransmitted at 1, 3 (wait 2) and 7 (wait 4, the cap), given up at 11.
    assert_eq!(sent, [(1, 500), (3, 500), (7, 500)]);
    assert_eq!(request_id(&first.message), 500);
    let c = a.counters();
    assert_eq!((c.requests, c.retransmissions, c.gave_up), (1, 3, 1));
    assert_eq!(a.pending().count(), 0);
    // Once given up, the destination can be resolved again with a new ID.
    let retry = a.resolve(secs(20), NHS, B_PROTO).unwrap();
    assert_eq!(request_id(&retry.message), 501);
}

#[test]
fn the_destination_spoke_answers_for_its_longest_prefix_and_binds_the_requester() {
    let mut a = spoke_a();
    let mut b = spoke_b();
    let (a_changes, b_changes) = resolve_through_b(&mut a, &mut b, secs(5), ip(192, 0, 2, 200));
    let expected_a = Shortcut {
        prefix: prefix("192.0.2.128/25"),
        nbma: B_NBMA,
        expires: secs(305),
        holding_time: 300,
        last_used: secs(5),
        origin: ShortcutOrigin::Resolved { nhs: NHS },
    };
    assert_eq!(a_changes, [ShortcutChange::Added(expected_a.clone())]);
    assert_eq!(a.lookup(ip(192, 0, 2, 201)), Some(&expected_a));
    assert_eq!(a.lookup(ip(192, 0, 2, 1)), None);
    assert_eq!(
        b_changes,
        [ShortcutChange::Added(Shortcut {
            prefix: prefix("203.0.113.11/32"),
            nbma: A_NBMA,
            expires: secs(305),
            holding_time: 300,
            last_used: secs(5),
            origin: ShortcutOrigin::Answered,
        })]
    );
    assert_eq!((a.counters().replies, b.counters().answered), (1, 1));
    // A destination covered by the shortcut is not resolved again.
    assert_eq!(a.resolve(secs(6), NHS, ip(192, 0, 2, 250)), None);
    assert_eq!(a.counters().deduplicated, 1);
}

#[test]
fn the_reply_goes_to_the_nat_address_the_hub_reported() {
    let mut a = spoke_a();
    let mut b = spoke_b();
    let public = ip(192, 0, 2, 99);
    let mut req = a.resolve(secs(0), NHS, B_PROTO).unwrap().message;
    for e in &mut req.extensions {
        if let ExtensionBody::NatAddress(c) = &mut e.body {
            c.push(crate::nhrp::resolution::nat_cie(public, A_PROTO));
        }
    }
    let (reply, changes) = b.handle_resolution_request(secs(0), NHS, &req);
    let reply = reply.unwrap();
    assert_eq!(reply.to, public);
    assert!(matches!(&changes[..], [ShortcutChange::Added(s)] if s.nbma == public));
    let cie = first_cie(&reply.message);
    assert_eq!(
        (cie.code, cie.nbma, cie.proto, cie.prefix_len),
        (0, Some(B_NBMA), Some(B_PROTO), 32)
    );
}

#[test]
fn a_request_for_someone_elses_address_is_refused_with_code_12() {
    let mut a = spoke_a();
    let mut b = spoke_b();
    let req = a.resolve(secs(0), NHS, ip(198, 18, 0, 1)).unwrap();
    let (reply, changes) = b.handle_resolution_request(secs(0), NHS, &req.message);
    assert!(changes.is_empty());
    let reply = reply.unwrap();
    assert_eq!(first_cie(&reply.message).code, 12);
    assert!(
        a.handle_resolution_reply(secs(0), B_NBMA, &reply.message)
            .is_empty()
    );
    let c = a.counters();
    assert_eq!(
        (c.replies, c.naks, c.last_nak, c.added),
        (1, 1, Some(12), 0)
    );
    assert_eq!(b.counters().refused, 1);
    assert_eq!(a.pending().count(), 0);
}

#[test]
fn replies_that_match_nothing_or_fail_authentication_are_ignored() {
    let secret = Some(b"s3".to_vec());
    let mut a = Resolver::new(ResolverConfig {
        secret: secret.clone(),
        ..config(A_NBMA, A_PROTO)
    });
    let mut b = Resolver::new(ResolverConfig {
        secret: Some(b"other".to_vec()),
        ..config(B_NBMA, B_PROTO)
    });
    let req = a.resolve(secs(0), NHS, B_PROTO).unwrap();
    // B does not share A's secret: it drops the request.
    assert_eq!(
        b.handle_resolution_request(secs(0), NHS, &req.message),
        (None, Vec::new())
    );
    assert_eq!(b.counters().authentication_failures, 1);
    let mut b = Resolver::new(ResolverConfig {
        secret,
        ..config(B_NBMA, B_PROTO)
    });
    let reply = b
        .handle_resolution_request(secs(0), NHS, &req.message)
        .0
        .unwrap();
    let mut stray = reply.message.clone();
    stray.body = match stray.body {
        Body::Entries {
            op, flags, cies, ..
        } => Body::Entries {
            op,
            flags,
            request_id: 9999,
            cies,
        },
        other => other,
    };
    assert!(
        a.handle_resolution_reply(secs(0), B_NBMA, &stray)
            .is_empty()
    );
    assert_eq!(a.counters().ignored, 1);
    assert_eq!(
        a.handle_resolution_reply(secs(0), B_NBMA, &reply.message)
            .len(),
        1
    );
}

#[test]
fn idle_shortcuts_go_and_used_ones_are_refreshed_before_they_expire() {
    let mut a = spoke_a();
    let mut b = spoke_b();
    resolve_through_b(&mut a, &mut b, secs(0), ip(192, 0, 2, 1));
    resolve_through_b(&mut a, &mut b, secs(0), B_PROTO);
    // Traffic keeps going to B every 50 s; nothing is idle, and at 270 s (300 − 30) the used
    // shortcuts are resolved again with fresh request IDs.
    let mut t = secs(0);
    let mut refreshes = Vec::new();
    while t < secs(300) {
        t += secs(50);
        a.used(t.min(secs(299)), B_NBMA);
        while let Some(next) = a.poll_timeout().filter(|&n| n <= t.min(secs(299))) {
            let (out, changes) = a.poll(next);
            assert!(changes.is_empty(), "{changes:?}");
            for o in out {
                refreshes.push((next.as_secs(), o.message.dst_proto));
                let (reply, _) = b.handle_resolution_request(next, NHS, &o.message);
                let changes = a.handle_resolution_reply(next, B_NBMA, &reply.unwrap().message);
                assert!(matches!(&changes[..], [ShortcutChange::Refreshed(_)]));
            }
        }
    }
    assert_eq!(
        refreshes,
        [(270, Some(ip(192, 0, 2, 1))), (270, Some(B_PROTO))]
    );
    assert!(a.shortcuts().all(|s| s.expires == secs(570)));
    // Then traffic stops: the shortcuts go 100 s after their last use (299 s).
    let (_, changes) = a.poll(secs(399));
    let causes: Vec<_> = changes
        .iter()
        .map(|c| match c {
            ShortcutChange::Removed { cause, .. } => *cause,
            _ => panic!("{c:?}"),
        })
        .collect();
    assert_eq!(causes, [ShortcutRemoval::Idle, ShortcutRemoval::Idle]);
    assert_eq!(a.counters().idle, 2);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn an_unused_shortcut_is_not_refreshed_and_expires_with_its_holding_time() {
    let mut a = Resolver::new(ResolverConfig {
        idle_timeout: secs(1000),
        ..config(A_NBMA, A_PROTO)
    });
    let mut b = spoke_b();
    resolve_through_b(&mut a, &mut b, secs(0), B_PROTO);
    assert_eq!(a.poll_timeout(), Some(secs(300)));
    let (out, changes) = a.poll(secs(300));
    assert!(out.is_empty());
    assert!(matches!(
        &changes[..],
        [ShortcutChange::Removed {
            cause: ShortcutRemoval::Expired,
            ..
        }]
    ));
    assert_eq!(a.counters().expired, 1);
}

#[test]
fn a_purge_from_the_owner_removes_its_shortcuts_and_shutdown_sends_them() {
    let mut a = spoke_a();
    let mut b = spoke_b();
    resolve_through_b(&mut a, &mut b, secs(0), ip(192, 0, 2, 1));
    resolve_through_b(&mut a, &mut b, secs(0), B_PROTO);
    assert_eq!(a.shortcuts().count(), 2);
    let purges = b.shutdown();
    assert_eq!(purges.len(), 1);
    assert_eq!(purges[0].to, A_NBMA);
    let (reply, changes) = a.handle_purge_request(secs(1), B_NBMA, &purges[0].message);
    assert_eq!(reply, None, "the N flag asks for no reply");
    assert_eq!(changes.len(), 2);
    assert_eq!(a.shortcuts().count(), 0);
    assert_eq!(a.counters().purged, 2);
    assert!(b.shutdown().is_empty());

    // A purge asking for a reply gets one; a stranger cannot purge B's shortcuts.
    resolve_through_b(&mut a, &mut b, secs(2), B_PROTO);
    let mut purge = purges[0].message.clone();
    if let Body::Entries { flags, .. } = &mut purge.body {
        *flags = 0;
    }
    let stranger = ip(198, 51, 100, 66);
    let mut forged = purge.clone();
    forged.src_nbma = Some(stranger);
    let (_, changes) = a.handle_purge_request(secs(3), stranger, &forged);
    assert!(changes.is_empty());
    let (reply, changes) = a.handle_purge_request(secs(3), B_NBMA, &purge);
    assert_eq!(changes.len(), 1);
    let reply = reply.unwrap();
    assert_eq!(reply.to, B_NBMA);
    assert!(matches!(
        reply.message.body,
        Body::Entries {
            op: Operation::PurgeReply,
            ..
        }
    ));
}

#[test]
fn shutdown_also_withdraws_the_reverse_shortcuts_of_the_spokes_it_resolved() {
    let mut a = spoke_a();
    let mut b = spoke_b();
    resolve_through_b(&mut a, &mut b, secs(0), B_PROTO);
    resolve_through_b(&mut a, &mut b, secs(0), ip(192, 0, 2, 1));
    assert_eq!(
        b.shortcuts().count(),
        1,
        "B answered A: reverse shortcut to A"
    );
    let purges = a.shutdown();
    assert_eq!(purges.len(), 1, "one purge per resolved spoke");
    assert_eq!(purges[0].to, B_NBMA);
    let (reply, changes) = b.handle_purge_request(secs(1), A_NBMA, &purges[0].message);
    assert_eq!(reply, None);
    assert_eq!(changes.len(), 1);
    assert_eq!(b.shortcuts().count(), 0);

    // Both ways at once: A resolved B's LAN and B resolved A's LAN. B's one purge to A
    // names what B answered with and B's own address (A's reverse shortcut to B).
    let mut a = Resolver::new(ResolverConfig {
        prefixes: vec![prefix("203.0.113.64/26")],
        ..config(A_NBMA, A_PROTO)
    });
    let mut b = spoke_b();
    resolve_through_b(&mut a, &mut b, secs(0), ip(192, 0, 2, 5));
    let request = b
        .resolve(secs(0), NHS, ip(203, 0, 113, 70))
        .expect("b resolves a's LAN");
    let (answer, _) = a.handle_resolution_request(secs(0), NHS, &request.message);
    let answer = answer.expect("a answers b");
    assert!(
        !b.handle_resolution_reply(secs(0), A_NBMA, &answer.message)
            .is_empty()
    );
    assert_eq!(
        a.shortcuts().count(),
        2,
        "a: resolved LAN of b + reverse to b"
    );
    let purges = b.shutdown();
    assert_eq!(purges.len(), 1, "one purge per spoke: {purges:?}");
    a.handle_purge_request(secs(1), B_NBMA, &purges[0].message);
    assert_eq!(
        a.shortcuts().count(),
        0,
        "a keeps {:?}",
        a.shortcuts().collect::<Vec<_>>()
    );
}

#[test]
fn the_shortcut_limit_refuses_new_resolutions() {
    let mut a = Resolver::new(ResolverConfig {
        max_shortcuts: 1,
        ..config(A_NBMA, A_PROTO)
    });
    let mut b = spoke_b();
    assert!(a.resolve(secs(0), NHS, ip(192, 0, 2, 1)).is_some());
    assert_eq!(a.resolve(secs(0), NHS, B_PROTO), None);
    let mut a2 = Resolver::new(ResolverConfig {
        max_shortcuts: 1,
        ..config(A_NBMA, A_PROTO)
    });
    resolve_through_b(&mut a2, &mut b, secs(0), B_PROTO);
    assert_eq!(a2.resolve(secs(0), NHS, ip(192, 0, 2, 1)), None);
    assert_eq!((a.counters().over_limit, a2.counters().over_limit), (1, 1));
}

#[test]
fn packet_destinations_of_both_families() {
    assert_eq!(
        packet_destination(&ipv4_packet(Ipv4Addr::new(192, 0, 2, 3))),
        Some(ip(192, 0, 2, 3))
    );
    let mut v6 = vec![0x60; 40];
    let dst: Ipv6Addr = "2001:db8::7".parse().unwrap();
    v6[24..40].copy_from_slice(&dst.octets());
    assert_eq!(packet_destination(&v6), Some(IpAddr::V6(dst)));
    assert_eq!(packet_destination(&v6[..39]), None);
    assert_eq!(packet_destination(&[]), None);
    assert_eq!(packet_destination(&[0x50; 40]), None);
}

#[test]
fn ipv6_overlay_and_underlay_work_the_same() {
    let v6 = |s: &str| -> IpAddr { s.parse().unwrap() };
    let nhs = v6("2001:db8:100::1");
    let (a_nbma, b_nbma) = (v6("2001:db8:100::11"), v6("2001:db8:100::12"));
    let mut a = Resolver::new(config(a_nbma, v6("2001:db8:200::11")));
    let mut b = Resolver::new(ResolverConfig {
        prefixes: vec![prefix("2001:db8:300::/48")],
        ..config(b_nbma, v6("2001:db8:200::12"))
    });
    let req = a.resolve(secs(0), nhs, v6("2001:db8:300::5")).unwrap();
    assert_eq!(req.message.nbma, Family::Ipv6);
    // Through the wire and back, as the peers see it.
    let wire = |m: &NhrpRepr| {
        let mut buf = Vec::new();
        m.emit(&mut buf).unwrap();
        NhrpRepr::parse(&buf).unwrap()
    };
    let (reply, b_changes) = b.handle_resolution_request(secs(0), nhs, &wire(&req.message));
    let reply = reply.unwrap();
    assert_eq!(reply.to, a_nbma);
    let changes = a.handle_resolution_reply(secs(0), b_nbma, &wire(&reply.message));
    assert!(matches!(&changes[..], [ShortcutChange::Added(s)]
        if s.prefix == prefix("2001:db8:300::/48") && s.nbma == b_nbma));
    assert!(matches!(&b_changes[..], [ShortcutChange::Added(s)]
        if s.prefix == prefix("2001:db8:200::11/128") && s.nbma == a_nbma));
    // An IPv4 destination is not this resolver's business.
    assert_eq!(a.resolve(secs(0), nhs, ip(192, 0, 2, 1)), None);
}

#[test]
fn an_error_indication_about_a_pending_request_ends_it() {
    let secret = Some(b"s".to_vec());
    let mut a = Resolver::new(ResolverConfig {
        secret: secret.clone(),
        ..config(A_NBMA, A_PROTO)
    });
    let req = a.resolve(secs(0), NHS, B_PROTO).unwrap().message;
    let mut packet = Vec::new();
    req.emit(&mut packet).unwrap();
    let indication = |code: u16, packet: Vec<u8>, authenticated: bool| NhrpRepr {
        hop_count: 255,
        src_nbma: Some(NHS),
        src_proto: Some(ip(203, 0, 113, 1)),
        dst_proto: Some(A_PROTO),
        body: Body::ErrorIndication {
            code,
            offset: 0,
            packet,
        },
        extensions: if authenticated {
            vec![auth::extension(b"s")]
        } else {
            Vec::new()
        },
        ..req.clone()
    };
    // Unauthenticated (other than code 11), cut too short, or about another request: ignored.
    assert_eq!(
        a.handle_error_indication(secs(1), NHS, &indication(15, packet.clone(), false)),
        None
    );
    assert_eq!(
        a.handle_error_indication(secs(1), NHS, &indication(15, packet[..27].to_vec(), true)),
        None
    );
    let mut other = packet.clone();
    other[27] ^= 1;
    assert_eq!(
        a.handle_error_indication(secs(1), NHS, &indication(15, other, true)),
        None
    );
    assert_eq!(a.pending().count(), 1);
    assert_eq!(
        a.handle_error_indication(secs(1), NHS, &indication(15, packet, true)),
        Some(15)
    );
    assert_eq!(a.pending().count(), 0);
    assert_eq!(a.poll_timeout(), None);
    let k = a.counters();
    assert_eq!(
        (k.errors, k.last_error, k.authentication_failures),
        (1, Some(15), 1)
    );
}
