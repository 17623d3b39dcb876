//! `WorkerPlugins::run` allocates nothing in steady state: with the real fixture plugins,
//! after a warm-up, batches of 1, 64 and 128 packets run under a counting global allocator
//! and must not allocate at all — neither with plugins called nor on paths that call none (no
//! plugins, a quarantined plugin, a fail-closed plugin that never loaded).
//!
//! This holds because the packet hooks return nothing: a plugin hands its verdicts over with
//! the `verdicts.put` import, which the host defines with a borrowed `WasmList<u8>` and copies
//! from guest memory into a buffer its store reuses. (A hook returning `list<u8>` costs one
//! host allocation per call: wasmtime lifts a result list into a fresh `Vec<u8>` and then
//! runs the guest's post-return, which frees the guest copy.) Lowering the packet slots into
//! the guest allocates in guest memory only.
//!
//! `cargo test --release -p mgre-plugin --test no_alloc -- --nocapture` prints the numbers;
//! `MGRE_ALLOC_BACKTRACE=N` shows where the first N allocations of each measurement come from.

mod common;
#[path = "../../proto/tests/common/counting_alloc.rs"]
mod counting_alloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mgre_plugin::{
    FailurePolicy, PluginSet, PluginSpec, PolicyVerdict, SiteContext, WorkerPlugins,
};

use common::*;
use counting_alloc::{Allocs, CountingAlloc, measure, print_traces};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Measured batches per batch size.
const BATCHES: usize = 1_000;
/// Batches run before measuring.
const WARMUP: usize = 200;
/// Batch sizes measured.
const SIZES: [usize; 3] = [1, 64, 128];

#[test]
fn plugin_chains_allocate_nothing() {
    let rt = runtime();
    let chains: [(&str, Vec<PluginSpec>); 2] = [
        (
            "classify, 1 plugin",
            vec![spec("good", "good", r#"{"hooks": "classify"}"#)],
        ),
        (
            "classify+mark+route, 2 plugins",
            vec![
                spec("first", "good", r#"{"dscp": 10, "drop-port": 22}"#),
                spec(
                    "second",
                    "good",
                    r#"{"class-offset": 10, "priority": 6, "peer": 7}"#,
                ),
            ],
        ),
    ];
    for (name, specs) in chains {
        let set = build(&rt, &specs);
        let mut w = WorkerPlugins::new(set.clone());
        assert_zero(name, &mut w, Instant::now);
        let statuses = set.status();
        assert!(
            statuses
                .iter()
                .all(|s| s.stats.faults() == 0 && s.stats.calls > 0),
            "{name}: a plugin faulted or was not called: {statuses:?}"
        );
    }
}

#[test]
fn batches_that_call_no_plugin_allocate_nothing() {
    let rt = runtime();

    let mut w = WorkerPlugins::new(Arc::new(PluginSet::empty()));
    assert_zero("no plugins", &mut w, Instant::now);

    // Three faults in the window quarantine the plugin for 1 s; measuring at a fixed time
    // keeps it quarantined, so every batch is skipped.
    let set = build(&rt, &[spec("trap", "trap", "{}")]);
    let mut w = WorkerPlugins::new(set.clone());
    let t0 = Instant::now();
    for ms in [0, 10, 20] {
        let mut slots = batch(&[(UDP, TRIGGER)]);
        let mut out = [PolicyVerdict::default()];
        w.run(t0 + Duration::from_millis(ms), &mut slots, &mut out);
    }
    assert_eq!(set.status()[0].stats.quarantines, 1);
    let during = t0 + Duration::from_millis(500);
    assert_zero("quarantined plugin (skipped)", &mut w, || during);

    let mut missing = spec_at("gone", PathBuf::from("/nonexistent/gone.wasm"), "{}");
    missing.failure = FailurePolicy::Closed;
    let set = Arc::new(rt.build_set(&SiteContext::default(), &[missing], None));
    assert!(!set.closed_unavailable().is_empty());
    let mut w = WorkerPlugins::new(set);
    assert_zero("fail-closed plugin never loaded", &mut w, Instant::now);
}

/// Runs `WARMUP` batches of `n` packets, then measures `BATCHES` more at times from `now`.
fn steady(w: &mut WorkerPlugins, n: usize, now: impl Fn() -> Instant) -> Allocs {
    let packets: Vec<(u8, u16)> = (0..n)
        .map(|i| if i % 2 == 0 { (UDP, 5060) } else { (TCP, 443) })
        .collect();
    let mut slots = batch(&packets);
    let mut out = vec![PolicyVerdict::default(); n];
    for _ in 0..WARMUP {
        w.run(now(), &mut slots, &mut out);
    }
    let ((), allocs) = measure(|| {
        for _ in 0..BATCHES {
            w.run(now(), &mut slots, &mut out);
        }
    });
    allocs
}

/// Every batch size must run without a single allocation.
fn assert_zero(name: &str, w: &mut WorkerPlugins, now: impl Fn() -> Instant + Copy) {
    for n in SIZES {
        let allocs = steady(w, n, now);
        report(&format!("{name}, batch {n}"), n, allocs);
        if allocs.count != 0 {
            print_traces();
        }
        assert_eq!(allocs.count, 0, "{name}, batch {n}: allocations");
    }
}

fn report(name: &str, n: usize, allocs: Allocs) {
    let packets = BATCHES * n;
    println!(
        "{name}: {BATCHES} batches, {packets} packets, {} allocations ({} bytes): \
         {:.2} per batch, {:.4} per packet",
        allocs.count,
        allocs.bytes,
        allocs.count as f64 / BATCHES as f64,
        allocs.count as f64 / packets as f64,
    );
}

fn build(rt: &mgre_plugin::Runtime, specs: &[PluginSpec]) -> Arc<PluginSet> {
    let set = rt.build_set(&SiteContext::default(), specs, None);
    assert!(set.load_errors().is_empty(), "{:?}", set.load_errors());
    Arc::new(set)
}
