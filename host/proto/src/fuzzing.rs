//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the seed-corpus regression
//! test, so both drive exactly the same code.
//!
//! Each entry runs untrusted bytes through a fixed hub or spoke dataplane and checks the
//! invariants that must hold for any input: no panic, and any packet the dataplane emits lies
//! inside the frame and parses again as what it claims to be.

use std::sync::OnceLock;

use crate::dataplane::{Dataplane, DataplaneConfig, HEADROOM, Role, Verdict, WorkerState};
use crate::peer::{Encap, Peer};
use crate::stats::WorkerStats;
use crate::wire::gre::GreRepr;
use crate::wire::ip;

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
        })
    });
    let mut frame = vec![0u8; HEADROOM + data.len() + 64];
    frame[HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
    let mut ws = WorkerState::new(dp);
    let stats = WorkerStats::new(1);
    let v = dp.from_tun(&mut ws, &stats, &mut frame, HEADROOM, data.len());
    check(&frame, v);
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
    }
}
