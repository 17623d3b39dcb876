//! Cost of `WorkerPlugins::run` per packet with real plugins: one classify-only plugin, and
//! the full classify → mark → route chain of two plugins, for batches of 1, 32 and 128.
//!
//! `cargo bench -p mgre-plugin --bench chain` (builds the fixture guests first).

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mgre_plugin::{PluginSet, PolicyVerdict, SiteContext, WorkerPlugins};

use common::*;

const BATCHES: [usize; 3] = [1, 32, 128];

fn sets() -> Vec<(&'static str, Arc<PluginSet>)> {
    let rt = runtime();
    let site = SiteContext::default();
    let classify = rt.build_set(
        &site,
        &[spec("good", "good", r#"{"hooks": "classify"}"#)],
        None,
    );
    let chain = rt.build_set(
        &site,
        &[
            spec("first", "good", r#"{"dscp": 10, "drop-port": 22}"#),
            spec(
                "second",
                "good",
                r#"{"class-offset": 10, "priority": 6, "peer": 7}"#,
            ),
        ],
        None,
    );
    // The runtime (and its epoch ticker) must outlive the sets' use: leak it for the bench.
    std::mem::forget(rt);
    vec![
        ("classify-1-plugin", Arc::new(classify)),
        ("chain-2-plugins-3-hooks", Arc::new(chain)),
    ]
}

fn packets(n: usize) -> Vec<(u8, u16)> {
    (0..n)
        .map(|i| if i % 2 == 0 { (UDP, 5060) } else { (TCP, 443) })
        .collect()
}

fn bench(c: &mut Criterion) {
    let sets = sets();
    // A quick table first, in the units the architecture notes use.
    for (name, set) in &sets {
        let mut w = WorkerPlugins::new(set.clone());
        for n in BATCHES {
            let mut slots = batch(&packets(n));
            let mut out = vec![PolicyVerdict::default(); n];
            let iters = 200_000 / n + 1000;
            for _ in 0..1000 {
                w.run(Instant::now(), &mut slots, &mut out);
            }
            let started = Instant::now();
            for _ in 0..iters {
                w.run(Instant::now(), black_box(&mut slots), &mut out);
            }
            let ns = started.elapsed().as_nanos() as f64;
            println!(
                "{name:<24} batch {n:>3}: {:>7.1} ns/packet {:>8.1} ns/batch",
                ns / (iters * n) as f64,
                ns / iters as f64
            );
        }
        let s = &set.status()[0].stats;
        println!(
            "{name:<24} plugin-reported mean: {:.1} ns/packet per call",
            s.mean_ns_per_packet().unwrap_or(0.0)
        );
    }

    for (name, set) in &sets {
        let mut group = c.benchmark_group(*name);
        let mut w = WorkerPlugins::new(set.clone());
        for n in BATCHES {
            let mut slots = batch(&packets(n));
            let mut out = vec![PolicyVerdict::default(); n];
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| w.run(Instant::now(), black_box(&mut slots), &mut out))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
