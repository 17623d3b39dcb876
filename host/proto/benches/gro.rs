//! Per-packet cost of coalescing (GRO) before the TUN write: a batch of 64 TCP segments of
//! 1400 payload bytes from one flow, from four interleaved flows, 64 UDP packets with UDP
//! coalescing off (nothing to merge: the parse-and-pass cost), and 64 datagrams of 1200 bytes
//! from one UDP flow with it on. Only `Gro::coalesce` is timed; restoring the frames between
//! batches is not. Divide the batch time by 64 for ns per packet.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mgre_proto::gro::{Gro, GroFrame};
use mgre_proto::wire::checksum;

const BATCH: usize = 64;
const PAYLOAD: usize = 1400;
const UDP_PAYLOAD: usize = 1200;
const HEADROOM: usize = 128;

/// An IPv4 TCP segment (ACK) of flow `flow` carrying `PAYLOAD` bytes at `seq`.
fn segment(flow: u16, seq: u32) -> Vec<u8> {
    let len = 40 + PAYLOAD;
    let mut p = vec![0u8; len];
    let (src, dst) = ([203, 0, 113, 2], [203, 0, 113, 66]);
    p[..12].copy_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut p[20..];
    tcp[0..2].copy_from_slice(&(40000 + flow).to_be_bytes());
    tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10;
    tcp[14..16].copy_from_slice(&502u16.to_be_bytes());
    for (i, b) in tcp[20..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    let sum = checksum::pseudo_v4(&src, &dst, 6, (len - 20) as u16);
    let c = !checksum::fold(checksum::accumulate(sum, tcp));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    p
}

/// An IPv4 UDP datagram of `UDP_PAYLOAD` bytes, number `k` of its flow.
fn datagram(k: u8) -> Vec<u8> {
    let ulen = 8 + UDP_PAYLOAD;
    let mut p = vec![0u8; 20 + ulen];
    let (src, dst) = ([203, 0, 113, 2], [203, 0, 113, 66]);
    p[..12].copy_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0]);
    p[2..4].copy_from_slice(&((20 + ulen) as u16).to_be_bytes());
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut p[20..];
    udp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&4433u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(ulen as u16).to_be_bytes());
    for (i, b) in udp[8..].iter_mut().enumerate() {
        *b = (i * 7) as u8 ^ k;
    }
    let sum = checksum::pseudo_v4(&src, &dst, 17, ulen as u16);
    let c = match !checksum::fold(checksum::accumulate(sum, udp)) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    p
}

/// Times `coalesce` over `batch` (UDP coalescing on if `udp`), restoring the frames before each
/// run (untimed).
fn bench_batch(c: &mut Criterion, name: &str, batch: &[Vec<u8>], udp: bool) {
    let mut frames: Vec<GroFrame> = batch
        .iter()
        .map(|_| GroFrame {
            buf: vec![0u8; HEADROOM + 65536].into_boxed_slice(),
            start: HEADROOM,
            len: 0,
        })
        .collect();
    let mut out = vec![0u16; batch.len()];
    let mut gro = Gro::new(batch.len()).with_udp(udp);
    let mut g = c.benchmark_group("gro");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for (f, p) in frames.iter_mut().zip(batch) {
                    f.buf[HEADROOM..HEADROOM + p.len()].copy_from_slice(p);
                    f.len = p.len();
                }
                let t = Instant::now();
                black_box(gro.coalesce(black_box(&mut frames), &mut out));
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let one: Vec<_> = (0..BATCH as u32)
        .map(|k| segment(0, k * PAYLOAD as u32))
        .collect();
    bench_batch(c, "64x1400B, 1 flow", &one, false);

    let four: Vec<_> = (0..BATCH as u32)
        .map(|k| segment((k % 4) as u16, (k / 4) * PAYLOAD as u32))
        .collect();
    bench_batch(c, "64x1400B, 4 interleaved flows", &four, false);

    let udp: Vec<_> = one
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p[9] = 17;
            p
        })
        .collect();
    bench_batch(c, "64x1400B, UDP (nothing to merge)", &udp, false);

    let datagrams: Vec<_> = (0..BATCH as u8).map(datagram).collect();
    bench_batch(c, "64x1200B UDP, 1 flow, UDP on", &datagrams, true);
}

criterion_group!(benches, bench);
criterion_main!(benches);
