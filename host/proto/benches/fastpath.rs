//! Per-packet cost of the sans-IO fast path: encapsulation (TUN → GRE), decapsulation
//! (GRE → TUN) and the hub's hairpin (GRE → GRE), with a 1-entry and a 1M-entry endpoint map.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mgre_proto::dataplane::HEADROOM;
use mgre_proto::wire::checksum;
use mgre_proto::wire::gre::{GreRepr, PROTO_IPV4};
use mgre_proto::{Dataplane, DataplaneConfig, Encap, Peer, Prefix, Role, WorkerState, WorkerStats};

fn peer(i: u32, key: Option<u32>) -> Peer {
    let nbma = std::net::Ipv4Addr::from(0xc000_0200u32 + 10 + i);
    Peer {
        name: format!("p{i}"),
        nbma: nbma.into(),
        encap: Encap::Gre,
        key,
        checksum: false,
        sequence: false,
        udp_port: None,
        multicast: true,
    }
}

/// A hub (or spoke) with two peers owning 203.0.113.0/26 and .64/26, plus `extra` random /24
/// and /32 table entries so lookups run against a table of realistic size and depth.
fn dataplane(role: Role, extra: u32) -> Dataplane {
    let mut map: Vec<(Prefix, u32)> = vec![
        ("203.0.113.0/26".parse().unwrap(), 0),
        ("203.0.113.64/26".parse().unwrap(), 1),
    ];
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..extra {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let len = if x & 1 == 0 { 32 } else { 24 };
        map.push((
            Prefix::new(std::net::Ipv4Addr::from(x).into(), len).unwrap(),
            1,
        ));
    }
    Dataplane::new(DataplaneConfig {
        role,
        peers: vec![peer(1, Some(42)), peer(2, Some(42))],
        map,
        nhs: (role == Role::Spoke).then_some(0),
        local_v4: Some("198.51.100.1".parse().unwrap()),
        local_v6: None,
        underlay_mtu: 1500,
        tun_mtu: 1468,
        mss_clamp: Some((1428, 1408)),
        open_nhrp: None,
        peer_capacity: 0,
    })
}

fn udp_v4(src: [u8; 4], dst: [u8; 4], size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..24].copy_from_slice(&[0x30, 0x39, 0x13, 0x89]);
    p
}

fn framed(pkt: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HEADROOM + pkt.len() + 64];
    f[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
    f
}

fn bench(c: &mut Criterion) {
    for (label, extra) in [("1-entry", 0), ("1M-entry", 1_000_000)] {
        let spoke = dataplane(Role::Spoke, extra);
        let hub = dataplane(Role::Hub, extra);
        for size in [64usize, 1400] {
            let mut g = c.benchmark_group(format!("fastpath/{label}/{size}B"));
            g.throughput(Throughput::Elements(1));
            let pkt = udp_v4([203, 0, 113, 2], [203, 0, 113, 66], size);

            let (mut ws, st) = (WorkerState::new(&spoke), WorkerStats::new(2));
            let mut f = framed(&pkt);
            g.bench_function("encap (tun→gre)", |b| {
                b.iter(|| {
                    black_box(spoke.from_tun(&mut ws, &st, black_box(&mut f), HEADROOM, size))
                })
            });

            let repr = GreRepr {
                protocol: PROTO_IPV4,
                checksum: false,
                key: Some(42),
                sequence: None,
            };
            let mut gre = vec![0u8; 8 + size];
            gre[8..].copy_from_slice(&pkt);
            repr.emit(&mut gre);
            let mut f = framed(&gre);
            let from = "192.0.2.11".parse().unwrap();
            g.bench_function("decap (gre→tun)", |b| {
                b.iter(|| {
                    black_box(spoke.from_underlay(
                        &mut ws,
                        &st,
                        black_box(&mut f),
                        HEADROOM,
                        gre.len(),
                        from,
                        false,
                    ))
                })
            });

            let (mut hws, hst) = (WorkerState::new(&hub), WorkerStats::new(2));
            let template = framed(&gre);
            g.bench_function("hairpin (gre→gre)", |b| {
                // The hairpin decrements the TTL in place, so every iteration gets a fresh frame.
                b.iter_batched_ref(
                    || template.clone(),
                    |f| {
                        black_box(hub.from_underlay(
                            &mut hws,
                            &hst,
                            f,
                            HEADROOM,
                            gre.len(),
                            from,
                            false,
                        ))
                    },
                    BatchSize::SmallInput,
                )
            });
            g.finish();
        }
    }
}

/// The per-packet cost of a flow-cache probe (what a steady flow pays instead of a plugin call).
fn flow_cache(c: &mut Criterion) {
    use mgre_proto::flowcache::{FlowCache, FlowKey};
    use mgre_proto::wire::ip::Addr;
    let key = |i: u32| FlowKey {
        src: Addr::V4(0xcb00_7102),
        dst: Addr::V4(0xcb00_7142 ^ (i >> 16)),
        src_port: i as u16,
        dst_port: 5060,
        protocol: 17,
        direction: 0,
        ingress: u16::MAX,
        dscp: 46,
    };
    let mut cache = FlowCache::new(1 << 16);
    for i in 0..10_000 {
        cache.insert(key(i), i, 0, 60_000, 1);
    }
    let keys: Vec<FlowKey> = (0..10_000).map(key).collect();
    let mut g = c.benchmark_group("flowcache");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("hit (10k flows, 64k slots)", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(cache.get(black_box(&keys[i]), 1, 1))
        })
    });
    let misses: Vec<FlowKey> = (20_000..30_000).map(key).collect();
    g.bench_function("miss", |b| {
        b.iter(|| {
            i = (i + 1) % misses.len();
            black_box(cache.get(black_box(&misses[i]), 1, 1))
        })
    });
    g.finish();
}

criterion_group!(benches, bench, flow_cache);
criterion_main!(benches);
