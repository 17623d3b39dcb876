//! Longest-prefix-match cost of `PrefixTable`: ns per `lookup_v4` at 1, 1 000 and 1 000 000
//! entries and per `lookup_v6` at 1 000 and 1 000 000, for addresses that hit and that miss.
//!
//! Tables are random but deterministic (xorshift, fixed seed) with a realistic length mix:
//! IPv4 mostly /32 and /24 with the rest spread over /16–/31; IPv6 mostly /128, /64 and /48.
//! Probe addresses come from a precomputed array walked in order, so address generation is
//! not measured. Heap bytes per entry are printed to stderr once per table.
//!
//! Run: `cargo bench -p mgre-proto --bench lookup -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use mgre_proto::prefix::{Prefix, PrefixTable};

fn bench_v4(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup_v4");
    for n in V4_SIZES {
        let mut rng = XorShift::new(SEED ^ n as u64);
        let (table, prefixes) = build_table(n, &mut rng, random_v4_prefix);
        report_heap("v4", &table);
        let hits: Vec<u32> = (0..PROBES)
            .map(|_| {
                let Prefix::V4 { addr, len } = prefixes[rng.below(prefixes.len())] else {
                    unreachable!("v4 table holds only v4 prefixes")
                };
                addr | (rng.next() as u32 & host_mask_v4(len))
            })
            .collect();
        let misses = miss_addresses(&mut rng, |rng| rng.next() as u32, |a| table.lookup_v4(a));
        assert!(hits.iter().all(|&a| table.lookup_v4(a).is_some()));
        for (kind, addrs) in [("hit", &hits), ("miss", &misses)] {
            group.bench_with_input(BenchmarkId::new(kind, n), addrs, |b, addrs| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & (PROBES - 1);
                    table.lookup_v4(black_box(addrs[i]))
                })
            });
        }
    }
    group.finish();
}

fn bench_v6(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup_v6");
    for n in V6_SIZES {
        let mut rng = XorShift::new(SEED ^ n as u64 ^ 6);
        let (table, prefixes) = build_table(n, &mut rng, random_v6_prefix);
        report_heap("v6", &table);
        let hits: Vec<u128> = (0..PROBES)
            .map(|_| {
                let Prefix::V6 { addr, len } = prefixes[rng.below(prefixes.len())] else {
                    unreachable!("v6 table holds only v6 prefixes")
                };
                addr | (rng.next_u128() & host_mask_v6(len))
            })
            .collect();
        let misses = miss_addresses(&mut rng, XorShift::next_u128, |a| table.lookup_v6(a));
        assert!(hits.iter().all(|&a| table.lookup_v6(a).is_some()));
        for (kind, addrs) in [("hit", &hits), ("miss", &misses)] {
            group.bench_with_input(BenchmarkId::new(kind, n), addrs, |b, addrs| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & (PROBES - 1);
                    table.lookup_v6(black_box(addrs[i]))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_v4, bench_v6);
criterion_main!(benches);

/// Inserts random prefixes until the table holds `n` distinct ones; returns them too.
fn build_table(
    n: usize,
    rng: &mut XorShift,
    random_prefix: fn(&mut XorShift) -> Prefix,
) -> (PrefixTable<u32>, Vec<Prefix>) {
    let mut table = PrefixTable::new();
    let mut prefixes = Vec::with_capacity(n);
    while table.len() < n {
        let p = random_prefix(rng);
        if table.insert(p, prefixes.len() as u32).is_none() {
            prefixes.push(p);
        }
    }
    (table, prefixes)
}

/// `PROBES` random addresses that match nothing in the table.
fn miss_addresses<A: Copy>(
    rng: &mut XorShift,
    random: impl Fn(&mut XorShift) -> A,
    lookup: impl Fn(A) -> Option<u32>,
) -> Vec<A> {
    let mut out = Vec::with_capacity(PROBES);
    while out.len() < PROBES {
        let a = random(rng);
        if lookup(a).is_none() {
            out.push(a);
        }
    }
    out
}

fn report_heap(family: &str, table: &PrefixTable<u32>) {
    let bytes = table.heap_bytes();
    eprintln!(
        "prefix table {family}, {} entries: {bytes} heap bytes, {:.1} bytes/entry",
        table.len(),
        bytes as f64 / table.len() as f64
    );
}

/// IPv4: 45 % /32, 40 % /24, 15 % spread evenly over /16–/31 (a /24 or /32 there too).
fn random_v4_prefix(rng: &mut XorShift) -> Prefix {
    let len = match rng.below(100) {
        0..45 => 32,
        45..85 => 24,
        _ => 16 + rng.below(16) as u8,
    };
    let addr = IpAddr::V4((rng.next() as u32).into());
    Prefix::new(addr, len).expect("length is at most 32")
}

/// IPv6: 40 % /128, 30 % /64, 10 % /56, 15 % /48, 5 % /32, all inside 2000::/3.
fn random_v6_prefix(rng: &mut XorShift) -> Prefix {
    let len = match rng.below(100) {
        0..40 => 128,
        40..70 => 64,
        70..80 => 56,
        80..95 => 48,
        _ => 32,
    };
    let addr = (rng.next_u128() >> 3) | (1 << 125);
    Prefix::new(IpAddr::V6(addr.into()), len).expect("length is at most 128")
}

fn host_mask_v4(len: u8) -> u32 {
    u32::MAX.checked_shr(u32::from(len)).unwrap_or(0)
}

fn host_mask_v6(len: u8) -> u128 {
    u128::MAX.checked_shr(u32::from(len)).unwrap_or(0)
}

/// Marsaglia's xorshift64: deterministic, dependency-free, good enough for test data.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn next_u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }

    /// Roughly uniform in `0..n` (modulo bias is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const V4_SIZES: [usize; 3] = [1, 1_000, 1_000_000];
const V6_SIZES: [usize; 2] = [1_000, 1_000_000];
/// Probe addresses per table and kind; a power of two so the index wraps with a mask.
const PROBES: usize = 4096;
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
