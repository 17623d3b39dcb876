use std::net::Ipv4Addr;
use std::num::NonZeroU16;

use super::*;
use crate::nhrp::ServerConfig;
use crate::wire::nhrp::Family;

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const HUB_NBMA: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const HUB_PROTO: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
const A_NBMA: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11));
const A_PROTO: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 11));
const B_NBMA: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 12));
const B_PROTO: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 12));

fn hub(secret: Option<&[u8]>) -> RegistrationServer {
    RegistrationServer::new(ServerConfig {
        protocol_address: HUB_PROTO,
        nbma_address: HUB_NBMA,
        allowed_nbma: Vec::new(),
        secret: secret.map(<[u8]>::to_vec),
        max_holding_time: NonZeroU16::new(600).unwrap(),
        max_entries: 100,
    })
}

fn cie(proto: Option<IpAddr>, prefix_len: u8) -> Cie {
    Cie {
        code: 0,
        prefix_len,
        mtu: 0,
        holding_time: 60,
        preference: 0,
        nbma: None,
        nbma_subaddress: Vec::new(),
        proto,
    }
}

fn message(
    op: Operation,
    nbma: IpAddr,
    proto: IpAddr,
    dst: IpAddr,
    cies: Vec<Cie>,
    extensions: Vec<Extension>,
) -> NhrpRepr {
    NhrpRepr {
        nbma: Family::Ipv4,
        protocol: Family::Ipv4,
        snap: [0; 5],
        hop_count: 255,
        src_nbma: Some(nbma),
        src_nbma_subaddress: Vec::new(),
        src_proto: Some(proto),
        dst_proto: Some(dst),
        body: Body::Entries {
            op,
            flags: REQUEST_FLAGS,
            request_id: 7,
            cies,
        },
        extensions,
    }
}

/// Registers `proto` (host) and `lan` for a spoke claiming `nbma`, seen at `seen`.
fn register(
    server: &mut RegistrationServer,
    secret: Option<&[u8]>,
    nbma: IpAddr,
    seen: IpAddr,
    proto: IpAddr,
    lan: Option<(IpAddr, u8)>,
) {
    let mut cies = vec![cie(None, 32)];
    cies.extend(lan.map(|(a, l)| cie(Some(a), l)));
    let req = message(
        Operation::RegistrationRequest,
        nbma,
        proto,
        HUB_PROTO,
        cies,
        secret.map(auth::extension).into_iter().collect(),
    );
    let out = server.handle_request(Duration::ZERO, seen, &req);
    assert!(!out.changes.is_empty());
}

fn transit_extensions(secret: Option<&[u8]>) -> Vec<Extension> {
    let mut e = vec![
        Extension {
            compulsory: false,
            body: ExtensionBody::NatAddress(Vec::new()),
        },
        Extension {
            compulsory: true,
            body: ExtensionBody::ResponderAddress(Vec::new()),
        },
        Extension {
            compulsory: true,
            body: ExtensionBody::ForwardTransit(Vec::new()),
        },
        Extension {
            compulsory: true,
            body: ExtensionBody::ReverseTransit(Vec::new()),
        },
    ];
    e.extend(secret.map(auth::extension));
    e
}

fn resolution_request(dst: IpAddr, secret: Option<&[u8]>) -> NhrpRepr {
    message(
        Operation::ResolutionRequest,
        A_NBMA,
        A_PROTO,
        dst,
        vec![cie(None, 0)],
        transit_extensions(secret),
    )
}

fn forward_transit(msg: &NhrpRepr) -> Vec<IpAddr> {
    msg.extensions
        .iter()
        .find_map(|e| match &e.body {
            ExtensionBody::ForwardTransit(c) => Some(c.iter().filter_map(|c| c.nbma).collect()),
            _ => None,
        })
        .unwrap_or_default()
}

fn error_code_of(outcome: &ResolutionOutcome) -> Option<u16> {
    match outcome {
        ResolutionOutcome::Error {
            message:
                NhrpRepr {
                    body: Body::ErrorIndication { code, .. },
                    ..
                },
            ..
        } => Some(*code),
        _ => None,
    }
}

#[test]
fn a_destination_in_a_registered_prefix_is_forwarded_to_its_spoke() {
    let secret = Some(&b"dmvpn"[..]);
    let mut server = hub(secret);
    register(
        &mut server,
        secret,
        B_NBMA,
        B_NBMA,
        B_PROTO,
        Some((ip(192, 0, 2, 0), 24)),
    );
    let req = resolution_request(ip(192, 0, 2, 5), secret);
    let ResolutionOutcome::Forward { to, message } =
        server.handle_resolution_request(secs(1), A_NBMA, &req)
    else {
        panic!("forwarded")
    };
    assert_eq!(to, B_NBMA);
    assert_eq!(message.hop_count, 254);
    assert_eq!(forward_transit(&message), [HUB_NBMA]);
    assert_eq!(
        (message.src_nbma, message.src_proto),
        (Some(A_NBMA), Some(A_PROTO))
    );
    assert_eq!(message.body, req.body);
    assert!(auth::verify(&message.extensions, b"dmvpn"));
    let auths = message
        .extensions
        .iter()
        .filter(|e| matches!(e.body, ExtensionBody::Authentication(_)))
        .count();
    assert_eq!(auths, 1);
    // The host entry of the spoke resolves as well; an expired entry does not.
    assert!(matches!(
        server.handle_resolution_request(secs(1), A_NBMA, &resolution_request(B_PROTO, secret)),
        ResolutionOutcome::Forward { to: B_NBMA, .. }
    ));
    assert_eq!(
        server.handle_resolution_request(secs(60), A_NBMA, &req),
        ResolutionOutcome::Unresolved
    );
}

#[test]
fn spokes_behind_nat_are_reached_and_reported_at_their_public_address() {
    let mut server = hub(None);
    let b_public = ip(192, 0, 2, 200);
    let a_public = ip(192, 0, 2, 100);
    register(&mut server, None, B_NBMA, b_public, B_PROTO, None);
    register(&mut server, None, A_NBMA, a_public, A_PROTO, None);
    let out =
        server.handle_resolution_request(secs(1), a_public, &resolution_request(B_PROTO, None));
    let ResolutionOutcome::Forward { to, message } = out else {
        panic!("forwarded")
    };
    assert_eq!(to, b_public);
    assert_eq!(nat_address_of(&message, A_PROTO), Some(a_public));
}

#[test]
fn the_servers_own_address_is_answered_by_the_server() {
    let server = hub(None);
    let req = resolution_request(HUB_PROTO, None);
    let ResolutionOutcome::Reply { to, message } =
        server.handle_resolution_request(secs(1), A_NBMA, &req)
    else {
        panic!("answered")
    };
    assert_eq!(to, A_NBMA);
    let Body::Entries {
        op,
        flags,
        request_id,
        cies,
    } = &message.body
    else {
        panic!("entries")
    };
    assert_eq!(*op, Operation::ResolutionReply);
    assert_eq!(*request_id, 7);
    assert_eq!(
        *flags,
        FLAG_SOURCE_IS_ROUTER | FLAG_SOURCE_STABLE | FLAG_AUTHORITATIVE | FLAG_DESTINATION_STABLE
    );
    assert_eq!(
        (
            cies[0].code,
            cies[0].nbma,
            cies[0].proto,
            cies[0].prefix_len
        ),
        (0, Some(HUB_NBMA), Some(HUB_PROTO), 32)
    );
    assert_eq!(
        (message.src_proto, message.dst_proto),
        (Some(A_PROTO), Some(HUB_PROTO))
    );
    let responder = message.extensions.iter().find_map(|e| match &e.body {
        ExtensionBody::ResponderAddress(c) => Some(c.clone()),
        _ => None,
    });
    assert_eq!(responder, Some(cies.clone()));
}

#[test]
fn an_unknown_destination_is_unresolved_and_can_be_refused_with_code_12() {
    let server = hub(Some(b"s"));
    let req = resolution_request(ip(192, 0, 2, 9), Some(b"s"));
    assert_eq!(
        server.handle_resolution_request(secs(1), A_NBMA, &req),
        ResolutionOutcome::Unresolved
    );
    let nak = server.negative_resolution_reply(&req);
    let Body::Entries { op, cies, .. } = &nak.body else {
        panic!("entries")
    };
    assert_eq!(*op, Operation::ResolutionReply);
    assert_eq!(
        (cies[0].code, cies[0].proto, cies[0].nbma),
        (NO_BINDING_EXISTS, Some(ip(192, 0, 2, 9)), None)
    );
    assert!(auth::verify(&nak.extensions, b"s"));
}

#[test]
fn a_request_without_the_secret_gets_an_authentication_failure() {
    let mut server = hub(Some(b"right"));
    register(&mut server, Some(b"right"), B_NBMA, B_NBMA, B_PROTO, None);
    for wrong in [None, Some(&b"wrong"[..])] {
        let out =
            server.handle_resolution_request(secs(1), A_NBMA, &resolution_request(B_PROTO, wrong));
        assert_eq!(
            error_code_of(&out),
            Some(error_code::AUTHENTICATION_FAILURE)
        );
        let ResolutionOutcome::Error { to, message } = out else {
            unreachable!()
        };
        assert_eq!((to, message.dst_proto), (A_NBMA, Some(A_PROTO)));
        // The indication carries the offending request, which parses back.
        let Body::ErrorIndication { packet, .. } = &message.body else {
            unreachable!()
        };
        assert_eq!(
            NhrpRepr::parse(packet).unwrap(),
            resolution_request(B_PROTO, wrong)
        );
    }
}

#[test]
fn hop_count_zero_and_loops_are_not_forwarded() {
    let mut server = hub(None);
    register(&mut server, None, B_NBMA, B_NBMA, B_PROTO, None);
    let mut req = resolution_request(B_PROTO, None);
    req.hop_count = 0;
    let out = server.handle_resolution_request(secs(1), A_NBMA, &req);
    assert_eq!(error_code_of(&out), Some(error_code::HOP_COUNT_EXCEEDED));

    // The request already passed this server, or already passed the spoke it would go to.
    for seen in [HUB_NBMA, B_NBMA] {
        let mut req = resolution_request(B_PROTO, None);
        for e in &mut req.extensions {
            if let ExtensionBody::ForwardTransit(c) = &mut e.body {
                let mut transit = cie(Some(HUB_PROTO), 32);
                transit.nbma = Some(seen);
                c.push(transit);
            }
        }
        let out = server.handle_resolution_request(secs(1), A_NBMA, &req);
        assert_eq!(error_code_of(&out), Some(error_code::LOOP_DETECTED));
    }
}

#[test]
fn an_unresolved_request_goes_upstream_and_one_coming_back_is_a_loop() {
    const CORE: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
    let server = hub(Some(&b"dmvpn"[..]));
    let req = resolution_request(B_PROTO, Some(&b"dmvpn"[..]));
    assert!(matches!(
        server.handle_resolution_request(secs(1), A_NBMA, &req),
        ResolutionOutcome::Unresolved
    ));
    let ResolutionOutcome::Forward { to, message } = server.forward_upstream(A_NBMA, &req, CORE)
    else {
        panic!("not forwarded upstream");
    };
    assert_eq!(to, CORE);
    assert_eq!(forward_transit(&message), [HUB_NBMA]);
    assert_eq!(message.hop_count, req.hop_count - 1);
    assert!(auth::verify(&message.extensions, b"dmvpn"));
    // The core hub sent it back down (it names the core already): a loop, reported to the
    // sender with an Error Indication.
    let mut looped = req.clone();
    for e in &mut looped.extensions {
        if let ExtensionBody::ForwardTransit(c) = &mut e.body {
            let mut transit = cie(Some(HUB_PROTO), 32);
            transit.nbma = Some(CORE);
            c.push(transit);
        }
    }
    let out = server.forward_upstream(CORE, &looped, CORE);
    assert_eq!(error_code_of(&out), Some(error_code::LOOP_DETECTED));
    assert!(matches!(out, ResolutionOutcome::Error { to: CORE, .. }));
    let mut spent = req;
    spent.hop_count = 0;
    let out = server.forward_upstream(A_NBMA, &spent, CORE);
    assert_eq!(error_code_of(&out), Some(error_code::HOP_COUNT_EXCEEDED));
}

#[test]
fn forwarding_records_every_transit_server_in_order_and_adds_the_record_if_missing() {
    let regional = TransitNhs {
        nbma: ip(198, 51, 100, 2),
        protocol: ip(203, 0, 113, 2),
        holding_time: 300,
        secret: None,
    };
    let core = TransitNhs {
        nbma: HUB_NBMA,
        protocol: HUB_PROTO,
        holding_time: 600,
        secret: Some(b"core"),
    };
    let mut bare = resolution_request(B_PROTO, Some(b"edge"));
    bare.extensions
        .retain(|e| !matches!(e.body, ExtensionBody::ForwardTransit(_)));
    let once = forward_resolution(&bare, &regional, HUB_NBMA).unwrap();
    assert_eq!(forward_transit(&once), [regional.nbma]);
    assert!(
        !once
            .extensions
            .iter()
            .any(|e| matches!(e.body, ExtensionBody::Authentication(_)))
    );
    let twice = forward_resolution(&once, &core, B_NBMA).unwrap();
    assert_eq!(forward_transit(&twice), [regional.nbma, HUB_NBMA]);
    assert_eq!(twice.hop_count, 253);
    assert!(auth::verify(&twice.extensions, b"core"));
    assert_eq!(
        forward_resolution(&twice, &regional, HUB_NBMA),
        Err(ForwardError::LoopDetected)
    );
    let mut spent = twice.clone();
    spent.hop_count = 0;
    assert_eq!(
        forward_resolution(&spent, &regional, B_NBMA),
        Err(ForwardError::HopCountExceeded)
    );
}

#[test]
fn other_messages_and_families_are_ignored() {
    let server = hub(None);
    let mut reg = resolution_request(B_PROTO, None);
    reg.body = Body::Entries {
        op: Operation::RegistrationRequest,
        flags: 0,
        request_id: 1,
        cies: Vec::new(),
    };
    assert_eq!(
        server.handle_resolution_request(secs(1), A_NBMA, &reg),
        ResolutionOutcome::Ignored
    );
    let v6 = "2001:db8::1".parse().unwrap();
    assert_eq!(
        server.handle_resolution_request(secs(1), v6, &resolution_request(B_PROTO, None)),
        ResolutionOutcome::Ignored
    );
    let mut no_dst = resolution_request(B_PROTO, None);
    no_dst.dst_proto = None;
    assert_eq!(
        server.handle_resolution_request(secs(1), A_NBMA, &no_dst),
        ResolutionOutcome::Ignored
    );
}

#[test]
fn answers_go_straight_to_the_requester() {
    let regional = ip(198, 51, 100, 2);
    let direct = resolution_request(HUB_PROTO, None);
    // Straight from the requester: back where it came from (its post-NAT address, say).
    assert_eq!(
        requester_address(&direct, ip(192, 0, 2, 7)),
        ip(192, 0, 2, 7)
    );
    // Through another NHS: to the requester's own NBMA address, or the NAT address the
    // first hub reported for it.
    let via = TransitNhs {
        nbma: regional,
        protocol: ip(203, 0, 113, 2),
        holding_time: 60,
        secret: None,
    };
    let mut forwarded = forward_resolution(&direct, &via, HUB_NBMA).unwrap();
    assert_eq!(requester_address(&forwarded, regional), A_NBMA);
    fill_empty_nat_extension(&mut forwarded, Some(nat_cie(ip(192, 0, 2, 7), A_PROTO)));
    assert_eq!(requester_address(&forwarded, regional), ip(192, 0, 2, 7));
    // The core hub answering for its own address answers the requester, not the regional
    // hub.
    let server = hub(None);
    let forwarded = forward_resolution(&direct, &via, HUB_NBMA).unwrap();
    assert!(matches!(
        server.handle_resolution_request(secs(1), regional, &forwarded),
        ResolutionOutcome::Reply { to: A_NBMA, .. }
    ));
}
