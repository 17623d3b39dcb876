//! The client's request layout, retransmission schedule, refresh, NAK handling, failover
//! between prioritised servers, NAT learning and shutdown, with replies built by hand.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::wire::nhrp::Family;

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const PRIMARY: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const SECONDARY: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));

fn config() -> ClientConfig {
    ClientConfig {
        holding_time: NonZeroU16::new(30).unwrap(),
        first_request_id: 100,
        ..ClientConfig::new(
            ip(198, 51, 100, 11),
            ip(203, 0, 113, 11),
            vec![
                NhsConfig {
                    nbma: PRIMARY,
                    protocol: Some(ip(203, 0, 113, 1)),
                    priority: 0,
                },
                NhsConfig {
                    nbma: SECONDARY,
                    protocol: None,
                    priority: 10,
                },
            ],
        )
    }
}

fn one_nhs() -> ClientConfig {
    let mut c = config();
    c.nhs.truncate(1);
    c
}

fn request_id(t: &Transmit) -> u32 {
    match t.message.body {
        Body::Entries { request_id, .. } => request_id,
        _ => panic!("not entries"),
    }
}

/// The reply a server would give to `t`, every CIE with `code` and `holding_time`.
fn reply(t: &Transmit, code: u8, holding_time: u16) -> NhrpRepr {
    let mut r = t.message.clone();
    if let Body::Entries { op, cies, .. } = &mut r.body {
        *op = Operation::RegistrationReply;
        for c in cies {
            c.code = code;
            c.holding_time = holding_time;
        }
    }
    r.extensions.clear();
    r
}

fn state(c: &RegistrationClient, nhs: IpAddr) -> NhsState {
    c.statuses().find(|s| s.nbma == nhs).unwrap().state
}

fn counters(c: &RegistrationClient, nhs: IpAddr) -> NhsCounters {
    c.statuses().find(|s| s.nbma == nhs).unwrap().counters
}

#[test]
fn the_first_poll_registers_with_every_server_as_frr_does() {
    let mut config = config();
    config.prefixes = vec!["203.0.113.64/26".parse().unwrap()];
    config.secret = Some(b"k".to_vec());
    config.mtu = 1400;
    let mut c = RegistrationClient::new(config).unwrap();
    assert_eq!(c.poll_timeout(), Some(Duration::ZERO));
    let out = c.poll(secs(0));
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].nhs, out[1].nhs), (PRIMARY, SECONDARY));
    assert_eq!((request_id(&out[0]), request_id(&out[1])), (100, 101));
    let m = &out[0].message;
    assert_eq!(
        (m.nbma, m.protocol, m.op_type()),
        (Family::Ipv4, Family::Ipv4, 3)
    );
    assert_eq!(m.src_nbma, Some(ip(198, 51, 100, 11)));
    assert_eq!(m.src_proto, Some(ip(203, 0, 113, 11)));
    assert_eq!(m.dst_proto, Some(ip(203, 0, 113, 1)));
    // Without a configured overlay address the server is addressed by our own.
    assert_eq!(out[1].message.dst_proto, Some(ip(203, 0, 113, 11)));
    let Body::Entries { flags, cies, .. } = &m.body else {
        panic!("entries")
    };
    assert_eq!(*flags, FLAG_UNIQUE | FLAG_NAT);
    assert_eq!(cies.len(), 2);
    assert_eq!(
        (cies[0].prefix_len, cies[0].nbma, cies[0].proto),
        (0xff, None, None)
    );
    assert_eq!((cies[0].holding_time, cies[0].mtu), (30, 1400));
    assert_eq!(
        (cies[1].prefix_len, cies[1].proto),
        (26, Some(ip(203, 0, 113, 64)))
    );
    let kinds: Vec<_> = m
        .extensions
        .iter()
        .map(|e| (e.kind(), e.compulsory))
        .collect();
    assert_eq!(
        kinds,
        [(4, true), (5, true), (3, true), (9, false), (7, true)]
    );
    assert!(auth::verify(&m.extensions, b"k"));
    // The message is emittable.
    let mut buf = Vec::new();
    m.emit(&mut buf).unwrap();
    assert!(c.poll(secs(0)).is_empty());
}

#[test]
fn retransmissions_keep_the_request_id_and_back_off_exponentially_to_the_cap() {
    let mut c = RegistrationClient::new(one_nhs()).unwrap();
    let mut sent = Vec::new();
    let mut now = Duration::ZERO;
    while now <= secs(300) {
        for t in c.poll(now) {
            sent.push((now.as_secs(), request_id(&t)));
        }
        now = c.poll_timeout().unwrap();
    }
    let times: Vec<u64> = sent.iter().map(|s| s.0).collect();
    assert_eq!(times, [0, 1, 3, 7, 15, 31, 63, 127, 191, 255]);
    assert!(sent.iter().all(|s| s.1 == 100));
    assert_eq!(
        state(&c, PRIMARY),
        NhsState::Registering {
            attempt: 10,
            next_retry: secs(319)
        }
    );
    let k = counters(&c, PRIMARY);
    assert_eq!((k.requests, k.retransmissions), (1, 9));
    // Polling between the deadlines sends nothing.
    assert!(c.poll(secs(318)).is_empty());
}

#[test]
fn the_backoff_cap_is_configurable() {
    let mut config = one_nhs();
    config.retry_initial = Duration::from_millis(500);
    config.retry_max = secs(3);
    let mut c = RegistrationClient::new(config).unwrap();
    let mut times = Vec::new();
    let mut now = Duration::ZERO;
    while now <= secs(12) {
        if !c.poll(now).is_empty() {
            times.push(now.as_millis());
        }
        now = c.poll_timeout().unwrap();
    }
    assert_eq!(times, [0, 500, 1500, 3500, 6500, 9500]);
}

#[test]
fn a_success_registers_and_refreshes_at_a_third_of_the_holding_time() {
    let mut c = RegistrationClient::new(one_nhs()).unwrap();
    let t = c.poll(secs(0)).remove(0);
    // A late reply to a retransmission still matches: same request ID.
    assert_eq!(c.poll(secs(1)).len(), 1);
    assert_eq!(
        c.handle_reply(secs(2), PRIMARY, &reply(&t, 0, 27)),
        ReplyOutcome::Registered { holding_time: 27 }
    );
    assert_eq!(
        state(&c, PRIMARY),
        NhsState::Registered {
            expires: secs(29),
            refresh_at: secs(11)
        }
    );
    assert_eq!(c.active(), Some(PRIMARY));
    assert_eq!(c.poll_timeout(), Some(secs(11)));
    assert!(c.poll(secs(10)).is_empty());
    let refresh = c.poll(secs(11));
    assert_eq!(request_id(&refresh[0]), 101);
    // Refreshing keeps the server registered and active.
    assert!(matches!(state(&c, PRIMARY), NhsState::Registered { .. }));
    assert_eq!(c.active(), Some(PRIMARY));
    // The old request ID no longer matches.
    assert_eq!(
        c.handle_reply(secs(11), PRIMARY, &reply(&t, 0, 27)),
        ReplyOutcome::Ignored(ReplyIgnored::UnexpectedRequestId)
    );
    let _ = c.handle_reply(secs(11), PRIMARY, &reply(&refresh[0], 0, 30));
    assert_eq!(
        state(&c, PRIMARY),
        NhsState::Registered {
            expires: secs(41),
            refresh_at: secs(21)
        }
    );
    assert_eq!(counters(&c, PRIMARY).registrations, 2);
}

#[test]
fn a_nak_is_counted_and_the_next_request_follows_after_the_backoff() {
    let mut c = RegistrationClient::new(one_nhs()).unwrap();
    let t = c.poll(secs(0)).remove(0);
    assert_eq!(c.poll(secs(1)).len(), 1);
    assert_eq!(
        c.handle_reply(
            secs(1),
            PRIMARY,
            &reply(&t, code::ADMINISTRATIVELY_PROHIBITED, 0)
        ),
        ReplyOutcome::Nak { code: 4 }
    );
    let k = counters(&c, PRIMARY);
    assert_eq!((k.naks, k.last_nak), (1, Some(4)));
    assert_eq!(c.active(), None);
    // Two transmissions so far: the next waits 2 s and carries a new request ID.
    assert_eq!(c.poll_timeout(), Some(secs(3)));
    assert!(c.poll(secs(2)).is_empty());
    let next = c.poll(secs(3));
    assert_eq!(request_id(&next[0]), 101);
    assert_eq!(
        c.handle_reply(secs(3), PRIMARY, &reply(&next[0], 14, 0)),
        ReplyOutcome::Nak { code: 14 }
    );
    assert_eq!(counters(&c, PRIMARY).last_nak, Some(14));
    assert_eq!(c.poll_timeout(), Some(secs(7)));
}

#[test]
fn stray_messages_are_ignored() {
    let mut config = one_nhs();
    config.secret = Some(b"k".to_vec());
    let mut c = RegistrationClient::new(config).unwrap();
    let t = c.poll(secs(0)).remove(0);
    let good = reply(&t, 0, 30);
    assert_eq!(
        c.handle_reply(secs(0), ip(192, 0, 2, 1), &good),
        ReplyOutcome::Ignored(ReplyIgnored::UnknownNhs)
    );
    assert_eq!(
        c.handle_reply(secs(0), PRIMARY, &t.message),
        ReplyOutcome::Ignored(ReplyIgnored::NotARegistrationReply)
    );
    let mut empty = good.clone();
    if let Body::Entries { cies, .. } = &mut empty.body {
        cies.clear();
    }
    assert_eq!(
        c.handle_reply(secs(0), PRIMARY, &empty),
        ReplyOutcome::Ignored(ReplyIgnored::NoEntries)
    );
    // No secret in the reply.
    assert_eq!(
        c.handle_reply(secs(0), PRIMARY, &good),
        ReplyOutcome::Ignored(ReplyIgnored::BadAuthentication)
    );
    assert_eq!(counters(&c, PRIMARY).ignored_replies, 3);
    let mut signed = good;
    signed.extensions.push(auth::extension(b"k"));
    assert_eq!(
        c.handle_reply(secs(0), PRIMARY, &signed),
        ReplyOutcome::Registered { holding_time: 30 }
    );
}

#[test]
fn the_preferred_server_is_active_and_an_unanswering_one_is_given_up() {
    let mut c = RegistrationClient::new(config()).unwrap();
    for t in c.poll(secs(0)) {
        let _ = c.handle_reply(secs(0), t.nhs, &reply(&t, 0, 30));
    }
    assert_eq!(c.active(), Some(PRIMARY));
    assert!(c.statuses().next().unwrap().active);
    // Refreshes at 10 s: the secondary answers, the primary does not.
    let mut primary_sends = Vec::new();
    let mut now = secs(10);
    while now <= secs(40) {
        for t in c.poll(now) {
            if t.nhs == SECONDARY {
                let _ = c.handle_reply(now, SECONDARY, &reply(&t, 0, 30));
            } else {
                primary_sends.push((now.as_secs(), request_id(&t)));
            }
        }
        if now < secs(25) {
            assert_eq!(c.active(), Some(PRIMARY), "at {now:?}");
        }
        now = c.poll_timeout().unwrap();
    }
    // Sent at 10 and retransmitted 3 times; given up 15 s after the first send, before the
    // registration would have expired at 30 s.
    assert_eq!(
        primary_sends,
        [(10, 102), (11, 102), (13, 102), (17, 102), (25, 102)]
    );
    assert_eq!(c.active(), Some(SECONDARY));
    let k = counters(&c, PRIMARY);
    assert_eq!((k.lost, k.expired), (1, 0));
    assert!(matches!(
        state(&c, PRIMARY),
        NhsState::Registering { attempt: 5, next_retry } if next_retry == secs(41)
    ));
    // The primary answers its next retransmission: it is active again.
    let t = c
        .poll(secs(41))
        .into_iter()
        .find(|t| t.nhs == PRIMARY)
        .unwrap();
    assert_eq!(request_id(&t), 102);
    let _ = c.handle_reply(secs(41), PRIMARY, &reply(&t, 0, 30));
    assert_eq!(c.active(), Some(PRIMARY));
}

#[test]
fn an_expired_registration_is_dropped_even_with_a_lenient_failover() {
    let mut config = one_nhs();
    config.failover_after = 100;
    let mut c = RegistrationClient::new(config).unwrap();
    let t = c.poll(secs(0)).remove(0);
    let _ = c.handle_reply(secs(0), PRIMARY, &reply(&t, 0, 30));
    let mut now = secs(10);
    while now < secs(30) {
        let _ = c.poll(now);
        now = c.poll_timeout().unwrap();
    }
    assert_eq!(now, secs(30));
    assert_eq!(c.active(), Some(PRIMARY));
    let _ = c.poll(now);
    assert_eq!(c.active(), None);
    assert_eq!(counters(&c, PRIMARY).expired, 1);
}

#[test]
fn the_nat_address_reported_by_the_server_is_kept() {
    let mut c = RegistrationClient::new(one_nhs()).unwrap();
    let t = c.poll(secs(0)).remove(0);
    let mut r = reply(&t, 0, 30);
    let cie = |nbma| Cie {
        code: 0,
        prefix_len: 32,
        mtu: 0,
        holding_time: 0,
        preference: 0,
        nbma: Some(nbma),
        nbma_subaddress: Vec::new(),
        proto: Some(ip(203, 0, 113, 11)),
    };
    r.extensions.push(Extension {
        compulsory: false,
        body: ExtensionBody::NatAddress(vec![cie(ip(198, 51, 100, 11)), cie(ip(198, 51, 100, 7))]),
    });
    let _ = c.handle_reply(secs(0), PRIMARY, &r);
    assert_eq!(
        c.statuses().next().unwrap().nat_nbma,
        Some(ip(198, 51, 100, 7))
    );
}

#[test]
fn shutdown_purges_every_registration_and_goes_idle() {
    let mut config = config();
    config.prefixes = vec!["203.0.113.64/26".parse().unwrap()];
    let mut c = RegistrationClient::new(config).unwrap();
    let out = c.poll(secs(0));
    let _ = c.handle_reply(secs(0), PRIMARY, &reply(&out[0], 0, 30));
    let purges = c.shutdown();
    assert_eq!(purges.len(), 2);
    let m = &purges[0].message;
    assert_eq!(m.op_type(), 5);
    let Body::Entries { flags, cies, .. } = &m.body else {
        panic!("entries")
    };
    assert_eq!(*flags, FLAG_PURGE_NO_REPLY);
    let named: Vec<_> = cies
        .iter()
        .map(|c| (c.proto, c.prefix_len, c.nbma))
        .collect();
    assert_eq!(
        named,
        [
            (Some(ip(203, 0, 113, 11)), 32, Some(ip(198, 51, 100, 11))),
            (Some(ip(203, 0, 113, 64)), 26, Some(ip(198, 51, 100, 11))),
        ]
    );
    assert!(c.statuses().all(|s| s.state == NhsState::Idle));
    assert_eq!((c.active(), c.poll_timeout()), (None, None));
    assert!(c.poll(secs(100)).is_empty());
    assert!(c.shutdown().is_empty());
    assert_eq!(
        c.handle_reply(secs(0), PRIMARY, &reply(&out[0], 0, 30)),
        ReplyOutcome::Ignored(ReplyIgnored::UnknownNhs)
    );
}

#[test]
fn inconsistent_configurations_are_refused() {
    let err = |f: fn(&mut ClientConfig)| {
        let mut c = config();
        f(&mut c);
        RegistrationClient::new(c).err()
    };
    assert_eq!(err(|c| c.nhs.clear()), Some(ClientConfigError::NoNhs));
    assert_eq!(
        err(|c| c.nhs[0].nbma = "2001:db8::1".parse().unwrap()),
        Some(ClientConfigError::NbmaFamilyMismatch)
    );
    assert_eq!(
        err(|c| c.prefixes.push("2001:db8::/48".parse().unwrap())),
        Some(ClientConfigError::ProtocolFamilyMismatch)
    );
    assert_eq!(
        err(|c| c.retry_initial = Duration::ZERO),
        Some(ClientConfigError::ZeroRetryInterval)
    );
    assert_eq!(err(|_| {}), None);
}
