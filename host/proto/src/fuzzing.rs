//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the seed-corpus regression
//! test, so both drive exactly the same code.
//!
//! Each dataplane entry runs untrusted bytes through a fixed hub or spoke dataplane and checks
//! the invariants that must hold for any input: no panic, and any packet the dataplane emits
//! lies inside the frame and parses again as what it claims to be. [`nhrp`] does the same for
//! the NHRP parser and emitter, [`nhrp_server`] for the NHRP registration state machines.

use std::net::IpAddr;
use std::num::NonZeroU16;
use std::sync::OnceLock;
use std::time::Duration;

use crate::dataplane::{Dataplane, DataplaneConfig, HEADROOM, Role, Verdict, WorkerState};
use crate::nhrp::{
    Change, ClientConfig, NhsConfig, Outcome, RegistrationClient, RegistrationServer, RemovalCause,
    ReplyOutcome, ServerConfig, errors,
};
use crate::peer::{Encap, Peer};
use crate::stats::WorkerStats;
use crate::wire::gre::GreRepr;
use crate::wire::nhrp::{self, NhrpRepr};
use crate::wire::{checksum, ip};

/// Feeds `data` to the underlay receive path of a hub with three spokes (plain, keyed with
/// checksums and sequence numbers, GRE-in-UDP). The first input byte picks the sending spoke
/// (bits 0–1) and whether an outer IPv4 header is included (bit 2).
pub fn underlay_rx(data: &[u8]) {
    let Some((&sel, packet)) = data.split_first() else {
        return;
    };
    let dp = hub();
    let sources = ["192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.99"];
    let src = sources[usize::from(sel & 3)]
        .parse()
        .expect("literal address");
    let mut frame = vec![0u8; HEADROOM + packet.len() + 64];
    frame[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
    let mut ws = WorkerState::new(dp);
    let stats = WorkerStats::new(dp.peers().len());
    let v = dp.from_underlay(
        &mut ws,
        &stats,
        &mut frame,
        HEADROOM,
        packet.len(),
        src,
        sel & 4 != 0,
    );
    check(&frame, v);
}

/// Feeds `data` to the TUN receive path of a spoke (inner parsing, MSS clamping, too-big
/// errors, encapsulation).
pub fn tun_rx(data: &[u8]) {
    static SPOKE: OnceLock<Dataplane> = OnceLock::new();
    let dp = SPOKE.get_or_init(|| {
        Dataplane::new(DataplaneConfig {
            role: Role::Spoke,
            peers: vec![peer("hub", "192.0.2.1", Some(1), true, true, Encap::Gre)],
            map: vec![],
            nhs: Some(0),
            local_v4: Some("198.51.100.11".parse().expect("literal")),
            local_v6: Some("2001:db8:100::11".parse().expect("literal")),
            underlay_mtu: 1400,
            tun_mtu: 1300,
            mss_clamp: Some((1260, 1240)),
            open_nhrp: None,
            peer_capacity: 0,
        })
    });
    let mut frame = vec![0u8; HEADROOM + data.len() + 64];
    frame[HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
    let mut ws = WorkerState::new(dp);
    let stats = WorkerStats::new(1);
    let v = dp.from_tun(&mut ws, &stats, &mut frame, HEADROOM, data.len());
    check(&frame, v);
}

/// Feeds `data` to the TUN-write coalescer (GRO, TCP and UDP on) as one batch: each packet is
/// a 2-byte big-endian length (capped by what is left) followed by its bytes; at most 64
/// packets, each in a frame with room to grow that depends on its length. Checks that the
/// write list is ordered, distinct and in bounds, that every listed frame stays inside its
/// buffer, and that a frame with a GSO header holds an IP packet whose length fields match.
/// Returns how many super-packets the batch produced.
pub fn tun_gro(data: &[u8]) -> usize {
    use crate::gro::{Gro, GroFrame, VNET_HDR_LEN};
    let mut frames = Vec::new();
    let mut rest = data;
    while frames.len() < 64 && rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let packet = &rest[2..2 + len];
        rest = &rest[2 + len..];
        // Room for a few more segments, less for odd lengths, to reach the "buffer full" rule.
        let room = if len % 2 == 0 { 8 * 1500 } else { 64 };
        let mut buf = vec![0u8; VNET_HDR_LEN + len + room].into_boxed_slice();
        buf[VNET_HDR_LEN..VNET_HDR_LEN + len].copy_from_slice(packet);
        frames.push(GroFrame {
            buf,
            start: VNET_HDR_LEN,
            len,
        });
    }
    let originals: Vec<Vec<u8>> = frames.iter().map(|f| f.packet().to_vec()).collect();
    let mut gro = Gro::new(64).with_udp(true);
    let mut out = [0u16; 64];
    let n = gro.coalesce(&mut frames, &mut out);
    assert!(n <= frames.len(), "more writes than frames");
    assert!(
        out[..n].windows(2).all(|w| w[0] < w[1]),
        "writes out of order or repeated"
    );
    let mut merged = 0;
    for &k in &out[..n] {
        let f = &frames[usize::from(k)];
        let written = f.with_vnet_hdr();
        assert_eq!(written.len(), VNET_HDR_LEN + f.len);
        let (hdr, packet) = written.split_at(VNET_HDR_LEN);
        if hdr[1] == 0 {
            assert_eq!(
                packet,
                &originals[usize::from(k)][..],
                "uncoalesced packet changed"
            );
        } else {
            let parsed = ip::parse(packet).expect("coalesced packet parses");
            assert_eq!(parsed.total_len, packet.len(), "coalesced length fields");
            merged += 1;
        }
    }
    merged
}

/// Parses an NHRP message and, when it parses, emits it again and checks that the emitted
/// bytes have the announced length, a valid checksum and parse back to the same message.
/// The first input byte is a selector: with bit 0 set, ar$chksum is repaired before parsing
/// so the fuzzer reaches the structural checks behind the checksum; the rest is the message.
/// Returns whether the message parsed.
pub fn nhrp(data: &[u8]) -> bool {
    let Some((&sel, packet)) = data.split_first() else {
        return false;
    };
    let mut packet = packet.to_vec();
    if sel & 1 != 0 {
        repair_nhrp_checksum(&mut packet);
    }
    let Ok(repr) = NhrpRepr::parse(&packet) else {
        return false;
    };
    let mut out = Vec::new();
    match repr.emit(&mut out) {
        Ok(()) => {}
        // A list without its End extension re-emits 4 bytes longer, which may not fit.
        Err(nhrp::NhrpEmitError::TooLong) => {
            assert!(
                repr.buffer_len() > usize::from(u16::MAX),
                "spurious TooLong"
            );
            return true;
        }
        Err(e) => panic!("a parsed message must emit: {e}"),
    }
    assert_eq!(out.len(), repr.buffer_len(), "emitted length");
    assert_eq!(checksum::checksum(&out), 0, "emitted checksum");
    assert_eq!(NhrpRepr::parse(&out), Ok(repr), "re-parse differs");
    true
}

/// What one [`nhrp_server`] run reached, so the corpus test can tell that its seeds exercise
/// the handlers and not only the parser.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NhrpServerRun {
    /// Input messages that parsed.
    pub parsed: usize,
    /// Replies the server sent (to input messages and to the client's requests).
    pub replies: usize,
    /// Error Indications among them.
    pub error_indications: usize,
    /// Successful registrations of the simulated client.
    pub registrations: usize,
}

/// Drives a hub's [`RegistrationServer`] and a spoke's [`RegistrationClient`] with a sequence of
/// untrusted messages on a simulated clock and checks the invariants that must hold after
/// every step: no panic; the table never exceeds its limit; every entry outlives the time of
/// the last handler call; the expiry index agrees with the table (`poll_timeout` is `None`
/// exactly when the table is empty, else the earliest expiry); every message either side
/// sends emits, has a valid checksum and parses back to itself; an Error Indication changes
/// nothing but expiries, and the raw-byte and parsed offsets of its extension agree.
///
/// Input: one configuration byte (bit 0: both sides use a secret; bit 1: the client registers
/// a site prefix as well), then records of one control byte, a 2-byte big-endian length
/// (capped by what is left) and a message, at most 64 records. Control byte: bits 0-1 pick the
/// underlay source (the client's address, another IPv4 spoke, an IPv6 spoke, the hub), bits
/// 2-4 advance the clock (0, 10 ms, 1 s, 5 s, 10 s, 30 s, 1 min, 5 min) first, bit 5 repairs
/// the NHRP checksum, bit 6 sends the message to the client (as a reply from the source)
/// instead of the server, bit 7 then lets the client poll and runs its requests through the
/// server and the replies back over emit/parse. At the end the client shuts down and its
/// purges must remove every entry it owns.
pub fn nhrp_server(data: &[u8]) -> NhrpServerRun {
    const STEPS_MS: [u64; 8] = [0, 10, 1_000, 5_000, 10_000, 30_000, 60_000, 300_000];
    let Some((&conf, mut rest)) = data.split_first() else {
        return NhrpServerRun::default();
    };
    let addr = |s: &str| -> IpAddr { s.parse().expect("literal address") };
    let hub_nbma = addr("198.51.100.1");
    let hub_proto = addr("203.0.113.1");
    let spoke_nbma = addr("198.51.100.11");
    let spoke_proto = addr("203.0.113.11");
    let sources = [
        spoke_nbma,
        addr("198.51.100.12"),
        addr("2001:db8:100::12"),
        hub_nbma,
    ];
    let secret = (conf & 1 != 0).then(|| b"dmvpn".to_vec());
    let mut server = RegistrationServer::new(ServerConfig {
        protocol_address: hub_proto,
        nbma_address: hub_nbma,
        allowed_nbma: Vec::new(),
        secret: secret.clone(),
        max_holding_time: NonZeroU16::new(30).expect("not zero"),
        max_entries: 4,
    });
    let mut client_config = ClientConfig::new(
        spoke_nbma,
        spoke_proto,
        vec![NhsConfig {
            nbma: hub_nbma,
            protocol: Some(hub_proto),
            priority: 0,
        }],
    );
    client_config.secret = secret;
    client_config.holding_time = NonZeroU16::new(30).expect("not zero");
    if conf & 2 != 0 {
        client_config.prefixes = vec!["203.0.113.128/26".parse().expect("literal prefix")];
    }
    let mut client = RegistrationClient::new(client_config).expect("valid client config");
    let mut run = NhrpServerRun::default();
    let mut now = Duration::ZERO;

    let mut records = 0;
    while records < 64 && rest.len() >= 3 {
        records += 1;
        let ctl = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let mut message = rest[3..3 + len].to_vec();
        rest = &rest[3 + len..];
        now += Duration::from_millis(STEPS_MS[usize::from(ctl >> 2 & 7)]);
        let src = sources[usize::from(ctl & 3)];
        if ctl & 0x20 != 0 {
            repair_nhrp_checksum(&mut message);
        }
        if let Ok(repr) = NhrpRepr::parse(&message) {
            run.parsed += 1;
            let by_raw = errors::check_compulsory(&repr, &message, hub_nbma, hub_proto);
            let by_repr = errors::check_compulsory_parsed(&repr, hub_nbma, hub_proto);
            assert_eq!(
                by_raw.as_ref().map(error_offset),
                by_repr.as_ref().map(error_offset),
                "raw and parsed Error Indication offsets differ"
            );
            if ctl & 0x40 != 0 {
                let _ = client.handle_reply(now, src, &repr);
            } else {
                let out = if repr.op_type() == 5 {
                    server.handle_purge(now, src, &repr)
                } else {
                    server.handle_request(now, src, &repr)
                };
                check_server(&server, now, &out, &mut run);
            }
        }
        if ctl & 0x80 != 0 {
            for t in client.poll(now) {
                let request = round_trip(&t.message);
                let out = server.handle_request(now, spoke_nbma, &request);
                check_server(&server, now, &out, &mut run);
                if let Some(reply) = out.reply {
                    let reply = round_trip(&reply);
                    if let ReplyOutcome::Registered { .. } = client.handle_reply(now, t.nhs, &reply)
                    {
                        run.registrations += 1;
                    }
                }
            }
        }
        assert!(
            client.poll_timeout().is_some(),
            "a running client has a timer"
        );
    }

    // Shutdown: the purges (no reply wanted) remove everything the client owns.
    for t in client.shutdown() {
        let purge = round_trip(&t.message);
        let out = server.handle_purge(now, spoke_nbma, &purge);
        check_server(&server, now, &out, &mut run);
    }
    let host = crate::prefix::Prefix::new(spoke_proto, 32).expect("host prefix");
    assert!(
        server
            .entry(&host)
            .is_none_or(|r| r.nbma != spoke_nbma || r.nat_nbma.is_some()),
        "the client's purge left its entry"
    );
    run
}

fn check_server(
    server: &RegistrationServer,
    now: Duration,
    out: &Outcome,
    run: &mut NhrpServerRun,
) {
    assert!(
        server.len() <= server.config().max_entries,
        "table over its limit"
    );
    assert_eq!(
        server.poll_timeout(),
        server.entries().map(|r| r.expires).min(),
        "expiry index out of step with the table"
    );
    assert!(
        server.entries().all(|r| r.expires > now),
        "an expired entry survived a handler"
    );
    if let Some(reply) = &out.reply {
        run.replies += 1;
        let _ = round_trip(reply);
        if reply.op_type() == 7 {
            run.error_indications += 1;
            assert!(
                out.changes.iter().all(|c| matches!(
                    c,
                    Change::Removed {
                        cause: RemovalCause::Expired,
                        ..
                    }
                )),
                "a message in error changed the table"
            );
        }
    }
}

/// Emits `m`, checks length and checksum, and parses it back (must be equal). A message
/// too long to emit must really be over 65535 bytes; it is returned as is.
fn round_trip(m: &NhrpRepr) -> NhrpRepr {
    let mut out = Vec::new();
    match m.emit(&mut out) {
        Ok(()) => {}
        Err(nhrp::NhrpEmitError::TooLong) => {
            assert!(m.buffer_len() > usize::from(u16::MAX), "spurious TooLong");
            return m.clone();
        }
        Err(e) => panic!("a message built by the NHRP state machines must emit: {e}"),
    }
    assert_eq!(out.len(), m.buffer_len(), "emitted length");
    assert_eq!(checksum::checksum(&out), 0, "emitted checksum");
    let parsed = NhrpRepr::parse(&out).expect("an emitted message parses");
    assert_eq!(&parsed, m, "re-parse differs");
    parsed
}

fn error_offset(m: &NhrpRepr) -> u16 {
    match m.body {
        nhrp::Body::ErrorIndication { offset, .. } => offset,
        _ => panic!("not an Error Indication"),
    }
}

/// Rewrites ar$chksum so the fuzzer reaches the checks behind it.
fn repair_nhrp_checksum(packet: &mut [u8]) {
    if packet.len() >= nhrp::FIXED_LEN {
        let size = usize::from(u16::from_be_bytes([packet[10], packet[11]])).min(packet.len());
        packet[12..14].fill(0);
        let c = checksum::checksum(&packet[..size.max(nhrp::FIXED_LEN)]);
        packet[12..14].copy_from_slice(&c.to_be_bytes());
    }
}

fn check(frame: &[u8], v: Verdict) {
    match v {
        Verdict::Underlay { start, len, .. } => {
            let out = frame
                .get(start..start + len)
                .expect("emitted packet inside the frame");
            let repr = GreRepr::parse(out).expect("emitted GRE parses");
            ip::parse(&out[repr.header_len()..]).expect("emitted inner packet parses");
        }
        Verdict::Tun { start, len } => {
            let out = frame
                .get(start..start + len)
                .expect("delivered packet inside the frame");
            ip::parse(out).expect("delivered packet parses");
        }
        Verdict::Control { start, len, .. } => {
            frame
                .get(start..start + len)
                .expect("control message inside the frame");
        }
        Verdict::Replicate { start, len, .. } => {
            let out = frame
                .get(start..start + len)
                .expect("replicated packet inside the frame");
            ip::parse(out).expect("replicated packet parses");
        }
        Verdict::Drop(_) => {}
    }
}

fn hub() -> &'static Dataplane {
    static HUB: OnceLock<Dataplane> = OnceLock::new();
    HUB.get_or_init(|| {
        Dataplane::new(DataplaneConfig {
            role: Role::Hub,
            peers: vec![
                peer("spoke1", "192.0.2.11", None, false, false, Encap::Gre),
                peer("spoke2", "192.0.2.12", Some(42), true, true, Encap::Gre),
                peer("spoke3", "192.0.2.13", Some(7), false, false, Encap::GreUdp),
            ],
            map: [
                ("203.0.113.0/26", 0),
                ("203.0.113.64/26", 1),
                ("203.0.113.128/26", 2),
                ("2001:db8:1::/64", 0),
                ("2001:db8:2::/64", 1),
            ]
            .iter()
            .map(|(p, id)| (p.parse().expect("literal prefix"), *id))
            .collect(),
            nhs: None,
            local_v4: Some("198.51.100.1".parse().expect("literal")),
            local_v6: Some("2001:db8:100::1".parse().expect("literal")),
            underlay_mtu: 1500,
            tun_mtu: 1460,
            mss_clamp: Some((1420, 1400)),
            open_nhrp: None,
            peer_capacity: 0,
        })
    })
}

fn peer(
    name: &str,
    nbma: &str,
    key: Option<u32>,
    checksum: bool,
    sequence: bool,
    encap: Encap,
) -> Peer {
    Peer {
        name: name.into(),
        nbma: nbma.parse().expect("literal address"),
        encap,
        key,
        checksum,
        sequence,
        udp_port: None,
        multicast: true,
    }
}
