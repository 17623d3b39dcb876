//! The server's admission rules, codes, counters, NAT detection, refresh, expiry and purge,
//! on hand-built requests.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::wire::nhrp::Family;

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn config() -> ServerConfig {
    ServerConfig {
        protocol_address: ip(203, 0, 113, 1),
        nbma_address: ip(198, 51, 100, 1),
        allowed_nbma: Vec::new(),
        secret: None,
        max_holding_time: NonZeroU16::new(600).unwrap(),
        max_entries: 100,
    }
}

fn host_cie(holding_time: u16) -> Cie {
    Cie {
        code: 0,
        prefix_len: 0xff,
        mtu: 1400,
        holding_time,
        preference: 0,
        nbma: None,
        nbma_subaddress: Vec::new(),
        proto: None,
    }
}

fn site_cie(addr: IpAddr, len: u8) -> Cie {
    Cie {
        prefix_len: len,
        proto: Some(addr),
        ..host_cie(300)
    }
}

/// A request from spoke `n` (overlay 203.0.113.n, NBMA 198.51.100.n).
fn request(op: Operation, n: u8, flags: u16, id: u32, cies: Vec<Cie>) -> NhrpRepr {
    NhrpRepr {
        nbma: Family::Ipv4,
        protocol: Family::Ipv4,
        snap: [0; 5],
        hop_count: 255,
        src_nbma: Some(ip(198, 51, 100, n)),
        src_nbma_subaddress: Vec::new(),
        src_proto: Some(ip(203, 0, 113, n)),
        dst_proto: Some(ip(203, 0, 113, 1)),
        body: Body::Entries {
            op,
            flags,
            request_id: id,
            cies,
        },
        extensions: Vec::new(),
    }
}

fn registration(n: u8, id: u32, cies: Vec<Cie>) -> NhrpRepr {
    request(
        Operation::RegistrationRequest,
        n,
        FLAG_UNIQUE | FLAG_NAT,
        id,
        cies,
    )
}

fn codes(outcome: &Outcome) -> Vec<u8> {
    match &outcome.reply.as_ref().expect("a reply").body {
        Body::Entries { cies, .. } => cies.iter().map(|c| c.code).collect(),
        other => panic!("not entries: {other:?}"),
    }
}

fn prefix(s: &str) -> Prefix {
    s.parse().unwrap()
}

#[test]
fn registers_the_host_and_a_site_prefix() {
    let mut s = RegistrationServer::new(config());
    let req = registration(
        11,
        42,
        vec![host_cie(7200), site_cie(ip(203, 0, 113, 64), 26)],
    );
    let out = s.handle_request(secs(100), ip(198, 51, 100, 11), &req);
    let reply = out.reply.as_ref().unwrap();
    assert_eq!(reply.op_type(), 4);
    assert_eq!(reply.src_nbma, Some(ip(198, 51, 100, 11)));
    assert_eq!(reply.src_proto, Some(ip(203, 0, 113, 11)));
    assert_eq!(reply.dst_proto, Some(ip(203, 0, 113, 1)));
    let Body::Entries {
        flags,
        request_id,
        cies,
        ..
    } = &reply.body
    else {
        panic!("entries")
    };
    assert_eq!((*flags, *request_id), (FLAG_UNIQUE | FLAG_NAT, 42));
    assert_eq!(codes(&out), [code::SUCCESS, code::SUCCESS]);
    // 7200 is clamped to the maximum; 300 is granted as asked.
    assert_eq!((cies[0].holding_time, cies[1].holding_time), (600, 300));

    let host = s.entry(&prefix("203.0.113.11/32")).unwrap().clone();
    assert_eq!(host.nbma, ip(198, 51, 100, 11));
    assert_eq!(host.nat_nbma, None);
    assert_eq!(host.expires, secs(700));
    assert_eq!((host.request_id, host.unique, host.mtu), (42, true, 1400));
    let site = s.entry(&prefix("203.0.113.64/26")).unwrap().clone();
    assert_eq!(site.expires, secs(400));
    assert_eq!(out.changes, [Change::Added(host), Change::Added(site)]);
    assert_eq!(s.entries().count(), 2);
    assert_eq!(s.poll_timeout(), Some(secs(400)));
    assert_eq!((s.counters().requests, s.counters().added), (1, 2));
}

#[test]
fn a_zero_holding_time_gets_the_maximum() {
    let mut s = RegistrationServer::new(config());
    let out = s.handle_request(
        secs(0),
        ip(198, 51, 100, 11),
        &registration(11, 1, vec![host_cie(0)]),
    );
    assert_eq!(codes(&out), [0]);
    assert_eq!(
        s.entry(&prefix("203.0.113.11/32")).unwrap().holding_time,
        600
    );
}

#[test]
fn a_refresh_from_the_same_nbma_extends_the_expiry() {
    let mut s = RegistrationServer::new(config());
    let src = ip(198, 51, 100, 11);
    let _ = s.handle_request(secs(0), src, &registration(11, 1, vec![host_cie(60)]));
    let out = s.handle_request(secs(20), src, &registration(11, 2, vec![host_cie(60)]));
    let entry = s.entry(&prefix("203.0.113.11/32")).unwrap().clone();
    assert_eq!((entry.expires, entry.request_id), (secs(80), 2));
    assert_eq!(out.changes, [Change::Refreshed(entry)]);
    assert_eq!((s.counters().added, s.counters().refreshed), (1, 1));
}

#[test]
fn a_unique_entry_of_another_nbma_is_refused_with_code_14() {
    let mut s = RegistrationServer::new(config());
    let _ = s.handle_request(
        secs(0),
        ip(198, 51, 100, 11),
        &registration(11, 1, vec![host_cie(60)]),
    );
    // Spoke 12 claims 203.0.113.11 from its own NBMA address, with and without the U flag.
    let mut thief = registration(12, 7, vec![site_cie(ip(203, 0, 113, 11), 32)]);
    let out = s.handle_request(secs(1), ip(198, 51, 100, 12), &thief);
    assert_eq!(codes(&out), [code::UNIQUE_ADDRESS_REGISTERED]);
    thief.body = match thief.body {
        Body::Entries { cies, .. } => Body::Entries {
            op: Operation::RegistrationRequest,
            flags: 0,
            request_id: 8,
            cies,
        },
        other => other,
    };
    let out = s.handle_request(secs(2), ip(198, 51, 100, 12), &thief);
    assert_eq!(codes(&out), [14]);
    assert!(out.changes.is_empty());
    assert_eq!(s.counters().nak_unique, 2);
    assert_eq!(
        s.entry(&prefix("203.0.113.11/32")).unwrap().nbma,
        ip(198, 51, 100, 11)
    );
}

#[test]
fn a_non_unique_entry_is_taken_over() {
    let mut s = RegistrationServer::new(config());
    let owner = request(Operation::RegistrationRequest, 11, 0, 1, vec![host_cie(60)]);
    let _ = s.handle_request(secs(0), ip(198, 51, 100, 11), &owner);
    let other = registration(12, 2, vec![site_cie(ip(203, 0, 113, 11), 32)]);
    let out = s.handle_request(secs(1), ip(198, 51, 100, 12), &other);
    assert_eq!(codes(&out), [0]);
    let Change::Replaced { old, new } = &out.changes[0] else {
        panic!("{:?}", out.changes)
    };
    assert_eq!(
        (old.nbma, new.nbma),
        (ip(198, 51, 100, 11), ip(198, 51, 100, 12))
    );
    assert_eq!(s.counters().replaced, 1);
}

#[test]
fn a_disallowed_underlay_source_is_refused_with_code_4() {
    let mut s = RegistrationServer::new(ServerConfig {
        allowed_nbma: vec![prefix("198.51.100.0/24")],
        ..config()
    });
    let req = registration(
        11,
        1,
        vec![host_cie(60), site_cie(ip(203, 0, 113, 128), 25)],
    );
    let out = s.handle_request(secs(0), ip(192, 0, 2, 11), &req);
    assert_eq!(codes(&out), [code::ADMINISTRATIVELY_PROHIBITED; 2]);
    assert!(s.is_empty());
    assert_eq!(s.counters().nak_prohibited_nbma, 1);
    let out = s.handle_request(secs(0), ip(198, 51, 100, 11), &req);
    assert_eq!(codes(&out), [0, 0]);
    assert_eq!(s.counters().nak_prohibited_nbma, 1);
}

#[test]
fn a_missing_or_wrong_secret_is_refused_with_code_4() {
    let mut s = RegistrationServer::new(ServerConfig {
        secret: Some(b"s3cret".to_vec()),
        ..config()
    });
    let src = ip(198, 51, 100, 11);
    let mut req = registration(11, 1, vec![host_cie(60)]);
    let out = s.handle_request(secs(0), src, &req);
    assert_eq!(codes(&out), [4]);
    req.extensions.push(auth::extension(b"guess"));
    let out = s.handle_request(secs(0), src, &req);
    assert_eq!(codes(&out), [4]);
    assert!(s.is_empty());
    assert_eq!(s.counters().nak_authentication, 2);

    req.extensions = vec![auth::extension(b"s3cret")];
    let out = s.handle_request(secs(0), src, &req);
    assert_eq!(codes(&out), [0]);
    // The reply authenticates itself too.
    assert!(auth::verify(&out.reply.unwrap().extensions, b"s3cret"));
    assert_eq!(s.counters().nak_authentication, 2);
}

#[test]
fn a_full_table_refuses_new_prefixes_with_code_5_but_still_refreshes() {
    let mut s = RegistrationServer::new(ServerConfig {
        max_entries: 1,
        ..config()
    });
    let src = ip(198, 51, 100, 11);
    let req = registration(11, 1, vec![host_cie(60), site_cie(ip(203, 0, 113, 64), 26)]);
    let out = s.handle_request(secs(0), src, &req);
    assert_eq!(codes(&out), [code::SUCCESS, code::INSUFFICIENT_RESOURCES]);
    let out = s.handle_request(secs(1), src, &req);
    assert_eq!(codes(&out), [0, 5]);
    assert_eq!(s.counters().nak_insufficient_resources, 2);
    assert_eq!(s.counters().refreshed, 1);
    assert_eq!(s.len(), 1);
}

#[test]
fn nat_is_detected_recorded_and_echoed() {
    let mut s = RegistrationServer::new(config());
    let mut req = registration(11, 1, vec![host_cie(60)]);
    req.src_nbma = Some(ip(192, 0, 2, 2));
    let own_nat_cie = Cie {
        nbma: Some(ip(192, 0, 2, 2)),
        proto: Some(ip(203, 0, 113, 11)),
        prefix_len: 32,
        ..host_cie(0)
    };
    req.extensions = vec![Extension {
        compulsory: false,
        body: ExtensionBody::NatAddress(vec![own_nat_cie.clone()]),
    }];
    let public = ip(198, 51, 100, 7);
    let out = s.handle_request(secs(0), public, &req);
    assert_eq!(codes(&out), [0]);
    let entry = s.entry(&prefix("203.0.113.11/32")).unwrap();
    assert_eq!(
        (entry.nbma, entry.nat_nbma),
        (ip(192, 0, 2, 2), Some(public))
    );
    assert_eq!(s.counters().nat_detected, 1);
    let reply = out.reply.unwrap();
    assert_eq!(
        reply.extensions,
        [Extension {
            compulsory: false,
            body: ExtensionBody::NatAddress(vec![
                own_nat_cie,
                Cie {
                    code: 0,
                    prefix_len: 32,
                    mtu: 0,
                    holding_time: 0,
                    preference: 0,
                    nbma: Some(public),
                    nbma_subaddress: Vec::new(),
                    proto: Some(ip(203, 0, 113, 11)),
                }
            ]),
        }]
    );
    // Without the NAT extension the reply carries none, but the entry still records NAT.
    req.extensions.clear();
    let out = s.handle_request(secs(1), public, &req);
    assert!(out.reply.unwrap().extensions.is_empty());
    assert!(matches!(&out.changes[..], [Change::Refreshed(r)] if r.nat_nbma == Some(public)));
}

#[test]
fn responder_and_transit_extensions_are_answered() {
    let mut s = RegistrationServer::new(config());
    let mut req = registration(11, 1, vec![host_cie(60)]);
    req.extensions = vec![
        Extension {
            compulsory: true,
            body: ExtensionBody::ForwardTransit(Vec::new()),
        },
        Extension {
            compulsory: true,
            body: ExtensionBody::ResponderAddress(Vec::new()),
        },
        Extension {
            compulsory: false,
            body: ExtensionBody::VendorPrivate(vec![1, 2, 3]),
        },
    ];
    let reply = s
        .handle_request(secs(0), ip(198, 51, 100, 11), &req)
        .reply
        .unwrap();
    assert_eq!(reply.extensions.len(), 2);
    assert_eq!(reply.extensions[0], req.extensions[0]);
    let ExtensionBody::ResponderAddress(cies) = &reply.extensions[1].body else {
        panic!("{:?}", reply.extensions)
    };
    assert_eq!(cies[0].nbma, Some(ip(198, 51, 100, 1)));
    assert_eq!(cies[0].proto, Some(ip(203, 0, 113, 1)));
    assert_eq!(cies[0].holding_time, 600);
}

#[test]
fn entries_expire_exactly_at_their_holding_time() {
    let mut s = RegistrationServer::new(config());
    let _ = s.handle_request(
        secs(10),
        ip(198, 51, 100, 11),
        &registration(11, 1, vec![host_cie(60)]),
    );
    assert!(s.expire(secs(70) - Duration::from_nanos(1)).is_empty());
    let gone = s.expire(secs(70));
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].prefix, prefix("203.0.113.11/32"));
    assert!(s.is_empty());
    assert_eq!(s.counters().expired, 1);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_handler_reports_expiries_it_notices() {
    let mut s = RegistrationServer::new(config());
    let _ = s.handle_request(
        secs(0),
        ip(198, 51, 100, 11),
        &registration(11, 1, vec![host_cie(60)]),
    );
    let out = s.handle_request(
        secs(60),
        ip(198, 51, 100, 12),
        &registration(12, 1, vec![host_cie(60)]),
    );
    assert!(matches!(
        &out.changes[..],
        [
            Change::Removed {
                cause: RemovalCause::Expired,
                ..
            },
            Change::Added(_)
        ]
    ));
}

#[test]
fn only_the_owner_can_purge() {
    let mut s = RegistrationServer::new(config());
    let src = ip(198, 51, 100, 11);
    let _ = s.handle_request(
        secs(0),
        src,
        &registration(11, 1, vec![host_cie(60), site_cie(ip(203, 0, 113, 64), 26)]),
    );
    let purge_cies = vec![Cie {
        nbma: Some(src),
        ..site_cie(ip(203, 0, 113, 11), 32)
    }];
    // Spoke 12 tries to purge spoke 11's host entry, claiming spoke 11's NBMA address.
    let forged = request(Operation::PurgeRequest, 11, 0, 9, purge_cies.clone());
    let out = s.handle_purge(secs(1), ip(198, 51, 100, 12), &forged);
    assert!(out.changes.is_empty());
    assert_eq!(s.counters().purge_refused, 1);
    assert_eq!(s.len(), 2);

    let purge = request(Operation::PurgeRequest, 11, 0, 10, purge_cies.clone());
    let out = s.handle_purge(secs(1), src, &purge);
    let reply = out.reply.unwrap();
    assert_eq!(reply.op_type(), 6);
    assert!(
        matches!(&reply.body, Body::Entries { request_id: 10, cies, .. } if *cies == purge_cies)
    );
    assert!(matches!(
        &out.changes[..],
        [Change::Removed { cause: RemovalCause::Purged, registration }]
            if registration.prefix == prefix("203.0.113.11/32")
    ));
    assert_eq!(s.counters().purged, 1);

    let quiet = request(
        Operation::PurgeRequest,
        11,
        FLAG_PURGE_NO_REPLY,
        11,
        vec![site_cie(ip(203, 0, 113, 64), 26)],
    );
    let out = s.handle_purge(secs(2), src, &quiet);
    assert_eq!(out.reply, None);
    assert!(s.is_empty());
    assert_eq!(s.counters().purged, 2);
}

#[test]
fn a_purge_needs_the_secret() {
    let mut s = RegistrationServer::new(ServerConfig {
        secret: Some(b"k".to_vec()),
        ..config()
    });
    let src = ip(198, 51, 100, 11);
    let mut req = registration(11, 1, vec![host_cie(60)]);
    req.extensions.push(auth::extension(b"k"));
    let _ = s.handle_request(secs(0), src, &req);
    let purge = request(Operation::PurgeRequest, 11, 0, 2, vec![host_cie(0)]);
    let out = s.handle_purge(secs(1), src, &purge);
    assert_eq!((out.reply, s.len()), (None, 1));
    assert_eq!(s.counters().nak_authentication, 1);
}

#[test]
fn other_messages_are_ignored() {
    let mut s = RegistrationServer::new(config());
    let src = ip(198, 51, 100, 11);
    let resolution = request(Operation::ResolutionRequest, 11, 0, 1, vec![host_cie(0)]);
    assert_eq!(
        s.handle_request(secs(0), src, &resolution),
        Outcome::default()
    );
    assert_eq!(
        s.handle_purge(secs(0), src, &resolution),
        Outcome::default()
    );
    let mut anonymous = registration(11, 1, vec![host_cie(0)]);
    anonymous.src_proto = None;
    assert_eq!(
        s.handle_request(secs(0), src, &anonymous),
        Outcome::default()
    );
    // An IPv6 underlay source cannot be echoed in an IPv4-NBMA message.
    let v6: IpAddr = "2001:db8::11".parse().unwrap();
    assert_eq!(
        s.handle_request(secs(0), v6, &registration(11, 1, vec![host_cie(0)])),
        Outcome::default()
    );
    assert_eq!(s.counters().ignored, 4);
    assert_eq!(s.counters().requests, 0);
    assert!(s.is_empty());
}

#[test]
fn a_policy_refusal_naks_every_cie_and_leaves_the_table_alone() {
    let mut hub = RegistrationServer::new(config());
    let req = registration(11, 1, vec![host_cie(300), site_cie(ip(192, 0, 2, 0), 24)]);
    let prefixes: Vec<String> = requested_prefixes(&req)
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(prefixes, ["203.0.113.11/32", "192.0.2.0/24"]);
    let reply = hub.refuse(&req, 4).expect("a registration request");
    let Body::Entries { op, cies, .. } = &reply.body else {
        panic!("{reply:?}")
    };
    assert_eq!(*op, Operation::RegistrationReply);
    assert!(cies.iter().all(|c| c.code == 4));
    assert_eq!(hub.len(), 0);
    assert_eq!(hub.counters().nak_policy, 1);
    let mut buf = Vec::new();
    reply.emit(&mut buf).unwrap();
    assert_eq!(NhrpRepr::parse(&buf).unwrap(), reply);
}
