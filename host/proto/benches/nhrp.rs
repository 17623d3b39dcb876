//! Cost of NHRP registration on a hub, in the sans-IO core: the whole per-message work
//! (`NhrpRepr::parse` of the request bytes, `RegistrationServer::handle_request`, `emit` of the
//! reply) for a refresh of an existing registration and for a fresh one, in tables of 1,
//! 10 000 and 100 000 registrations; the time for 10 000 and 100 000 simulated spokes to converge;
//! the heap bytes per registered spoke.
//!
//! Spoke `i` has NBMA address `2001:db8::1:1` + `i` and overlay address `2001:db8:1::1:1` +
//! `i`, FRR's defaults (unique, holding time 7200 s) and one hub (NBMA `2001:db8::1`, overlay
//! `2001:db8:1::1`). Both are IPv6 subranges of the documentation prefix `2001:db8::/32`: the
//! IPv4 documentation ranges hold 768 addresses, too few for 100 000 spokes, so the overlay is
//! IPv6 too (16-byte protocol addresses, /128 host registrations). Requests are the ones
//! `RegistrationClient` builds, emitted once up front. Convergence and heap use are one-shot
//! measurements printed to stderr before the criterion groups run; heap bytes come from a
//! counting global allocator (bytes allocated minus freed while the table is built from
//! requests).
//!
//! Run: `cargo bench -p mgre-proto --bench nhrp -- --warm-up-time 1 --measurement-time 3`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use mgre_proto::nhrp::{
    ClientConfig, NhsConfig, RegistrationClient, RegistrationServer, ServerConfig,
};
use mgre_proto::wire::nhrp::NhrpRepr;

#[global_allocator]
static ALLOC: Counting = Counting;

fn report_convergence_and_memory(_: &mut Criterion) {
    for n in SIZES {
        converge(n);
    }
    for n in SIZES {
        let requests = requests(0, n, HOLDING_TIME);
        let before = heap_in_use();
        let server = table(&requests);
        let bytes = heap_in_use().saturating_sub(before);
        eprintln!(
            "nhrp table, {} registrations: {bytes} heap bytes, {:.1} bytes/registration",
            server.len(),
            bytes as f64 / server.len() as f64
        );
    }
}

/// Parse, handle, emit of a refresh from a registered spoke, walking all spokes in order.
fn bench_refresh(c: &mut Criterion) {
    let mut group = c.benchmark_group("nhrp_refresh");
    for n in TABLE_SIZES {
        let requests = requests(0, n, HOLDING_TIME);
        let mut server = table(&requests);
        let now = Duration::from_secs(1);
        let mut reply = Vec::with_capacity(256);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % n;
                hub_step(&mut server, now, &requests[i], &mut reply)
            })
        });
        assert_eq!(server.len(), n);
        assert_eq!(server.counters().added, n as u64);
    }
    group.finish();
}

/// Parse, handle, emit of a first registration. Each chunk of `FRESH` new spokes registers
/// with a holding time of 1 s and is expired (not timed) before the next, so the table
/// holds between `n` and `n + FRESH` entries throughout.
fn bench_fresh(c: &mut Criterion) {
    let mut group = c.benchmark_group("nhrp_fresh");
    for n in TABLE_SIZES {
        let mut server = table(&requests(0, n, HOLDING_TIME));
        let fresh = requests(n, FRESH, 1);
        let now = Duration::from_secs(1);
        let mut reply = Vec::with_capacity(256);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let chunk = left.min(FRESH);
                    let start = Instant::now();
                    for request in &fresh[..chunk] {
                        hub_step(&mut server, now, request, &mut reply);
                    }
                    elapsed += start.elapsed();
                    let gone = server.expire(now + Duration::from_secs(1));
                    assert_eq!(gone.len(), chunk, "every fresh request registered");
                    left -= chunk;
                }
                elapsed
            })
        });
        assert_eq!(server.len(), n);
    }
    group.finish();
}

criterion_group!(
    benches,
    report_convergence_and_memory,
    bench_refresh,
    bench_fresh
);
criterion_main!(benches);

/// The hub's work for one message: parse the request, handle it, emit the reply.
fn hub_step(
    server: &mut RegistrationServer,
    now: Duration,
    request: &Request,
    reply: &mut Vec<u8>,
) {
    let msg = NhrpRepr::parse(black_box(&request.bytes)).expect("requests parse");
    let outcome = server.handle_request(now, request.nbma, &msg);
    reply.clear();
    outcome
        .reply
        .expect("a request is answered")
        .emit(reply)
        .expect("replies emit");
    black_box(&outcome.changes);
}

/// `n` clients start at t = 0; every message goes through emit and parse; delivery is
/// instant. Runs until every client is registered and prints the wall time.
fn converge(n: usize) {
    let mut server = RegistrationServer::new(hub_config(n));
    let mut clients: Vec<RegistrationClient> = (0..n)
        .map(|i| RegistrationClient::new(spoke_config(i, HOLDING_TIME)).expect("valid config"))
        .collect();
    let mut buf = Vec::with_capacity(256);
    let mut now = Duration::ZERO;
    let mut messages = 0u64;
    let start = Instant::now();
    let mut rounds = 0;
    loop {
        rounds += 1;
        for client in clients.iter_mut().filter(|c| c.active().is_none()) {
            let src = client.config().nbma_address;
            for t in client.poll(now) {
                buf.clear();
                t.message.emit(&mut buf).expect("requests emit");
                let request = NhrpRepr::parse(&buf).expect("requests parse");
                messages += 1;
                let Some(reply) = server.handle_request(now, src, &request).reply else {
                    continue;
                };
                buf.clear();
                reply.emit(&mut buf).expect("replies emit");
                let reply = NhrpRepr::parse(&buf).expect("replies parse");
                let _ = client.handle_reply(now, t.nhs, &reply);
            }
        }
        let pending = clients.iter().filter(|c| c.active().is_none());
        match pending.filter_map(RegistrationClient::poll_timeout).min() {
            Some(next) => now = now.max(next),
            None => break,
        }
    }
    let wall = start.elapsed();
    assert!(clients.iter().all(|c| c.active() == Some(HUB)));
    assert_eq!(server.len(), n);
    eprintln!(
        "nhrp convergence, {n} spokes: {:.3} s wall, {:.2} µs/registration, \
         {messages} requests, {rounds} round(s), simulated time {:?}",
        wall.as_secs_f64(),
        wall.as_secs_f64() * 1e6 / n as f64,
        now
    );
}

struct Request {
    nbma: IpAddr,
    bytes: Vec<u8>,
}

/// The first Registration Request of spokes `first..first + n`, on the wire.
fn requests(first: usize, n: usize, holding_time: u16) -> Vec<Request> {
    (first..first + n)
        .map(|i| {
            let config = spoke_config(i, holding_time);
            let nbma = config.nbma_address;
            let mut client = RegistrationClient::new(config).expect("valid config");
            let [t] = <[_; 1]>::try_from(client.poll(Duration::ZERO)).expect("one request");
            let mut bytes = Vec::new();
            t.message.emit(&mut bytes).expect("requests emit");
            Request { nbma, bytes }
        })
        .collect()
}

/// A hub that has handled every request at t = 0.
fn table(requests: &[Request]) -> RegistrationServer {
    let mut server = RegistrationServer::new(hub_config(requests.len()));
    let mut reply = Vec::with_capacity(256);
    for request in requests {
        hub_step(&mut server, Duration::ZERO, request, &mut reply);
    }
    assert_eq!(server.len(), requests.len());
    server
}

fn hub_config(n: usize) -> ServerConfig {
    ServerConfig {
        protocol_address: HUB_OVERLAY,
        nbma_address: HUB,
        allowed_nbma: Vec::new(),
        secret: None,
        max_holding_time: NonZeroU16::new(HOLDING_TIME).expect("not zero"),
        max_entries: n + FRESH,
    }
}

/// Spoke `i`: NBMA 2001:db8::1:1 + i, overlay 2001:db8:1::1:1 + i.
fn spoke_config(i: usize, holding_time: u16) -> ClientConfig {
    let i = u32::try_from(i).expect("fewer than 2^32 spokes");
    let nbma = IpAddr::V6(Ipv6Addr::from(
        u128::from(HUB_V6) + 0x1_0000 + u128::from(i),
    ));
    let overlay = IpAddr::V6(Ipv6Addr::from(
        u128::from(HUB_OVERLAY_V6) + 0x1_0000 + u128::from(i),
    ));
    ClientConfig {
        holding_time: NonZeroU16::new(holding_time).expect("not zero"),
        ..ClientConfig::new(
            nbma,
            overlay,
            vec![NhsConfig {
                nbma: HUB,
                protocol: Some(HUB_OVERLAY),
                priority: 0,
            }],
        )
    }
}

fn heap_in_use() -> usize {
    ALLOCATED.load(Ordering::Relaxed) - FREED.load(Ordering::Relaxed)
}

/// The system allocator, counting bytes handed out and given back.
struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; the counters have no effect on it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        FREED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        FREED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static FREED: AtomicUsize = AtomicUsize::new(0);

/// Spokes in the convergence and heap measurements.
const SIZES: [usize; 2] = [10_000, 100_000];
/// Registrations in the table for the per-message benches; 1 gives the cost that does not
/// depend on the table.
const TABLE_SIZES: [usize; 3] = [1, 10_000, 100_000];
/// Fresh registrations per chunk in `bench_fresh`.
const FRESH: usize = 1000;
/// FRR's default holding time, seconds; also the hub's maximum.
const HOLDING_TIME: u16 = 7200;
/// The hub's NBMA (underlay) address; spokes' follow it at `+ 0x1_0000 + i`.
const HUB_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const HUB: IpAddr = IpAddr::V6(HUB_V6);
/// The hub's overlay (protocol) address, in its own /48; spokes' follow it at `+ 0x1_0000 + i`.
const HUB_OVERLAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const HUB_OVERLAY: IpAddr = IpAddr::V6(HUB_OVERLAY_V6);
