//! Error Indications for unknown compulsory extensions, the echo of non-compulsory ones, and
//! that neither the server nor the client acts on a message in error.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;
use std::time::Duration;

use super::*;
use crate::nhrp::{
    ClientConfig, FLAG_NAT, FLAG_UNIQUE, NhsConfig, RegistrationClient, RegistrationServer,
    ReplyIgnored, ReplyOutcome, ServerConfig,
};
use crate::wire::nhrp::{Cie, Family, Operation};

fn ip(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, d))
}

fn nbma(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, d))
}

const HUB: u8 = 1;
const SPOKE: u8 = 11;

fn server() -> RegistrationServer {
    RegistrationServer::new(ServerConfig {
        protocol_address: ip(HUB),
        nbma_address: nbma(HUB),
        allowed_nbma: Vec::new(),
        secret: None,
        max_holding_time: NonZeroU16::new(600).unwrap(),
        max_entries: 10,
    })
}

fn ext(compulsory: bool, body: ExtensionBody) -> Extension {
    Extension { compulsory, body }
}

fn unknown(compulsory: bool, kind: u16, data: &[u8]) -> Extension {
    ext(
        compulsory,
        ExtensionBody::Unknown {
            kind,
            data: data.to_vec(),
        },
    )
}

/// A Registration Request from the spoke as FRR sends it (empty transit and responder
/// records, a NAT extension with one CIE), followed by `extra`.
fn registration(op: Operation, extra: Vec<Extension>) -> NhrpRepr {
    let mut extensions = vec![
        ext(true, ExtensionBody::ForwardTransit(Vec::new())),
        ext(true, ExtensionBody::ReverseTransit(Vec::new())),
        ext(true, ExtensionBody::ResponderAddress(Vec::new())),
        ext(
            false,
            ExtensionBody::NatAddress(vec![Cie {
                code: 0,
                prefix_len: 32,
                mtu: 0,
                holding_time: 0,
                preference: 0,
                nbma: Some(nbma(SPOKE)),
                nbma_subaddress: Vec::new(),
                proto: Some(ip(SPOKE)),
            }]),
        ),
    ];
    extensions.extend(extra);
    NhrpRepr {
        nbma: Family::Ipv4,
        protocol: Family::Ipv4,
        snap: [0; 5],
        hop_count: 255,
        src_nbma: Some(nbma(SPOKE)),
        src_nbma_subaddress: Vec::new(),
        src_proto: Some(ip(SPOKE)),
        dst_proto: Some(ip(HUB)),
        body: Body::Entries {
            op,
            flags: FLAG_UNIQUE | FLAG_NAT,
            request_id: 42,
            cies: vec![Cie {
                code: 0,
                prefix_len: 0xff,
                mtu: 1400,
                holding_time: 300,
                preference: 0,
                nbma: None,
                nbma_subaddress: Vec::new(),
                proto: None,
            }],
        },
        extensions,
    }
}

fn wire(m: &NhrpRepr) -> Vec<u8> {
    let mut out = Vec::new();
    m.emit(&mut out).unwrap();
    out
}

#[test]
fn non_compulsory_unknown_extensions_are_echoed_vendor_private_is_not() {
    let mut s = server();
    let req = registration(
        Operation::RegistrationRequest,
        vec![
            unknown(false, 0x42, b"optional"),
            ext(
                false,
                ExtensionBody::VendorPrivate(b"\0\0\x09vendor".to_vec()),
            ),
            unknown(false, 0x1234, b""),
        ],
    );
    let out = s.handle_request(Duration::ZERO, nbma(SPOKE), &req);
    let reply = out.reply.expect("a reply");
    assert_eq!(reply.op_type(), 4);
    assert_eq!(s.len(), 1);
    let echoed: Vec<&Extension> = reply
        .extensions
        .iter()
        .filter(|e| matches!(e.body, ExtensionBody::Unknown { .. }))
        .collect();
    assert_eq!(
        echoed,
        [
            &unknown(false, 0x42, b"optional"),
            &unknown(false, 0x1234, b"")
        ]
    );
    assert!(
        !reply
            .extensions
            .iter()
            .any(|e| matches!(e.body, ExtensionBody::VendorPrivate(_)))
    );
    // In request order, after the ones before them.
    let kinds: Vec<u16> = reply.extensions.iter().map(Extension::kind).collect();
    assert_eq!(kinds, [4, 5, 3, 9, 0x42, 0x1234]);
    assert_eq!(NhrpRepr::parse(&wire(&reply)), Ok(reply));
    assert_eq!(s.error_indications(), 0);
}

#[test]
fn a_compulsory_unknown_extension_gets_an_error_indication_and_no_registration() {
    let mut s = server();
    let req = registration(
        Operation::RegistrationRequest,
        vec![
            unknown(false, 0x42, b"fine"),
            unknown(true, 0x123, b"compulsory?"),
            unknown(true, 0x124, b"second"),
        ],
    );
    let raw = wire(&req);
    let req = NhrpRepr::parse(&raw).unwrap();
    let extoff = usize::from(u16::from_be_bytes([raw[14], raw[15]]));
    // Forward, reverse, responder (4 bytes each), NAT (4 + a 20-byte CIE), 0x42 (4 + 4).
    let expected = extoff + 4 + 4 + 4 + 24 + 8;
    assert_eq!(&raw[expected..expected + 2], &(0x8123u16).to_be_bytes());

    let out = s.handle_request(Duration::ZERO, nbma(SPOKE), &req);
    let ei = out.reply.expect("an Error Indication");
    assert!(out.changes.is_empty());
    assert!(s.is_empty(), "the request was acted on");
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.counters().requests, 0);
    assert_eq!(s.error_indications(), 1);
    // RFC 2332 §5.2.7: from the responder, to the source of the packet in error, code 1,
    // the offset of the offending extension, the packet itself; no extensions.
    assert_eq!(ei.op_type(), 7);
    assert_eq!(ei.src_nbma, Some(nbma(HUB)));
    assert_eq!(ei.src_proto, Some(ip(HUB)));
    assert_eq!(ei.dst_proto, Some(ip(SPOKE)));
    assert!(ei.extensions.is_empty());
    assert_eq!(
        ei.body,
        Body::ErrorIndication {
            code: UNRECOGNIZED_EXTENSION,
            offset: expected as u16,
            packet: raw.clone(),
        }
    );
    assert_eq!(NhrpRepr::parse(&wire(&ei)), Ok(ei.clone()));
    // The raw-byte entry point agrees.
    assert_eq!(check_compulsory(&req, &raw, nbma(HUB), ip(HUB)), Some(ei));
}

#[test]
fn raw_and_parsed_offsets_agree() {
    let v6: IpAddr = "2001:db8::11".parse().unwrap();
    let mut cases = vec![
        registration(
            Operation::RegistrationRequest,
            vec![unknown(true, 0x7fff, b"")],
        ),
        registration(Operation::PurgeRequest, vec![unknown(true, 0x10, &[1; 33])]),
        registration(Operation::ResolutionRequest, Vec::new()),
    ];
    let mut first = registration(Operation::RegistrationRequest, Vec::new());
    first.extensions.insert(0, unknown(true, 0x99, b"x"));
    cases.push(first);
    let mut six = registration(
        Operation::RegistrationReply,
        vec![
            ext(true, super::super::auth::extension(b"s").body),
            unknown(true, 0x55, b"y"),
        ],
    );
    six.protocol = Family::Ipv6;
    six.src_proto = Some(v6);
    six.dst_proto = Some(v6);
    six.extensions.remove(3); // the IPv4 NAT CIE
    cases.push(six);
    for req in cases {
        let raw = wire(&req);
        let parsed = NhrpRepr::parse(&raw).unwrap();
        let by_raw = check_compulsory(&parsed, &raw, nbma(HUB), ip(HUB));
        let by_repr = check_compulsory_parsed(&parsed, nbma(HUB), ip(HUB));
        assert_eq!(by_raw, by_repr, "{req:?}");
        if let Some(i) = unrecognized_compulsory(&parsed) {
            let off = extension_offset(&parsed, i);
            let kind = parsed.extensions[i].kind() | 0x8000;
            assert_eq!(&raw[off..off + 2], &kind.to_be_bytes());
            let ei = by_raw.unwrap();
            // An IPv6 message gets no IPv4 source protocol address, but still a destination.
            assert_eq!(ei.src_proto.is_some(), parsed.protocol == Family::Ipv4);
            assert_eq!(ei.dst_proto, parsed.src_proto);
            assert_eq!(NhrpRepr::parse(&wire(&ei)), Ok(ei));
        } else {
            assert_eq!(by_raw, None);
        }
    }
}

#[test]
fn known_compulsory_extensions_and_error_indications_pass() {
    let req = registration(Operation::RegistrationRequest, Vec::new());
    assert_eq!(check_compulsory_parsed(&req, nbma(HUB), ip(HUB)), None);
    let about = wire(&registration(
        Operation::RegistrationRequest,
        vec![unknown(true, 0x123, b"")],
    ));
    let mut ei = registration(
        Operation::RegistrationRequest,
        vec![unknown(true, 0x123, b"")],
    );
    ei.body = Body::ErrorIndication {
        code: 1,
        offset: 20,
        packet: about,
    };
    assert_eq!(unrecognized_compulsory(&ei), None);
    assert_eq!(check_compulsory(&ei, &wire(&ei), nbma(HUB), ip(HUB)), None);
}

#[test]
fn a_huge_packet_in_error_is_cut_to_fit() {
    let empty = registration(
        Operation::RegistrationRequest,
        vec![unknown(true, 0x123, b"")],
    );
    let fill = usize::from(u16::MAX) - empty.buffer_len();
    let big = unknown(true, 0x123, &vec![7; fill]);
    let req = registration(Operation::RegistrationRequest, vec![big]);
    let raw = wire(&req);
    assert_eq!(raw.len(), usize::from(u16::MAX));
    let ei = check_compulsory(&req, &raw, nbma(HUB), ip(HUB)).unwrap();
    assert_eq!(ei.buffer_len(), usize::from(u16::MAX));
    let Body::ErrorIndication { packet, .. } = &ei.body else {
        panic!("not an Error Indication");
    };
    assert_eq!(packet[..], raw[..packet.len()]);
    assert_eq!(NhrpRepr::parse(&wire(&ei)), Ok(ei.clone()));
    assert_eq!(check_compulsory_parsed(&req, nbma(HUB), ip(HUB)), Some(ei));
}

#[test]
fn a_purge_in_error_purges_nothing() {
    let mut s = server();
    let req = registration(Operation::RegistrationRequest, Vec::new());
    let _ = s.handle_request(Duration::ZERO, nbma(SPOKE), &req);
    assert_eq!(s.len(), 1);
    let mut purge = registration(
        Operation::PurgeRequest,
        vec![unknown(true, 0x300, b"purge?")],
    );
    if let Body::Entries { cies, .. } = &mut purge.body {
        cies[0].proto = Some(ip(SPOKE));
        cies[0].prefix_len = 32;
    }
    let out = s.handle_purge(Duration::from_secs(1), nbma(SPOKE), &purge);
    assert_eq!(out.reply.map(|r| r.op_type()), Some(7));
    assert!(out.changes.is_empty());
    assert_eq!(s.len(), 1);
    assert_eq!(s.counters().purged, 0);
    assert_eq!(s.error_indications(), 1);
}

#[test]
fn the_client_does_not_act_on_a_reply_in_error() {
    let hub = NhsConfig {
        nbma: nbma(HUB),
        protocol: Some(ip(HUB)),
        priority: 0,
    };
    let mut c =
        RegistrationClient::new(ClientConfig::new(nbma(SPOKE), ip(SPOKE), vec![hub])).unwrap();
    let mut s = server();
    let tx = c.poll(Duration::ZERO);
    let reply = s
        .handle_request(Duration::ZERO, nbma(SPOKE), &tx[0].message)
        .reply
        .unwrap();
    let mut bad = reply.clone();
    bad.extensions.push(unknown(true, 0x123, b"!"));
    let t = Duration::from_millis(10);
    assert_eq!(
        c.handle_reply(t, nbma(HUB), &bad),
        ReplyOutcome::Ignored(ReplyIgnored::UnrecognizedExtension)
    );
    assert_eq!(c.active(), None);
    assert_eq!(c.statuses().next().unwrap().counters.ignored_replies, 1);
    // The same reply without it registers.
    assert!(matches!(
        c.handle_reply(t, nbma(HUB), &reply),
        ReplyOutcome::Registered { .. }
    ));
    assert_eq!(c.active(), Some(nbma(HUB)));
}
