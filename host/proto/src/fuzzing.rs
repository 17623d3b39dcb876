//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the seed-corpus regression
//! test, so both drive exactly the same code.
//!
//! Each dataplane entry runs untrusted bytes through a fixed hub or spoke dataplane and checks
//! the invariants that must hold for any input: no panic, and any packet the dataplane emits
//! lies inside the frame and parses again as what it claims to be. [`nhrp`] does the same for
//! the NHRP parser and emitter.

use std::sync::OnceLock;

use crate::dataplane::{Dataplane, DataplaneConfig, HEADROOM, Role, Verdict, WorkerState};
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
    if sel & 1 != 0 && packet.len() >= nhrp::FIXED_LEN {
        let size = usize::from(u16::from_be_bytes([packet[10], packet[11]])).min(packet.len());
        packet[12..14].fill(0);
        let c = checksum::checksum(&packet[..size.max(nhrp::FIXED_LEN)]);
        packet[12..14].copy_from_slice(&c.to_be_bytes());
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
    }
}
