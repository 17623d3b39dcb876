//! `WorkerPlugins::run` never allocates per packet: with the real fixture plugins, after a
//! warm-up, batches of 1, 64 and 128 packets run under a counting global allocator.
//!
//! The one allocation left is wasmtime's, not ours: a hook returns `list<u8>`, and
//! wasmtime's typed-function call lifts it into a fresh `Vec<u8>`
//! (`Lift::linear_lift_list_from_memory`), then runs the guest's post-return, which frees the
//! guest copy — so the list cannot be borrowed in place. That is one allocation of exactly
//! the verdict bytes per plugin per hook per batch. The tests bound it per batch (at most one
//! allocation per component call, at most the verdict bytes) and check that the count does
//! not grow with the batch size. Paths that call no plugin (no plugins, a quarantined
//! plugin, a fail-closed plugin that never loaded) must allocate nothing at all.
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
use mgre_sdk::abi::{CLASSIFY_SLOT, MARK_SLOT, ROUTE_SLOT};

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
fn plugin_chains_allocate_once_per_call_never_per_packet() {
    let rt = runtime();
    let chains: [(&str, Vec<PluginSpec>, &[usize]); 2] = [
        (
            "classify, 1 plugin",
            vec![spec("good", "good", r#"{"hooks": "classify"}"#)],
            &[CLASSIFY_SLOT],
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
            &[
                CLASSIFY_SLOT,
                CLASSIFY_SLOT,
                MARK_SLOT,
                MARK_SLOT,
                ROUTE_SLOT,
                ROUTE_SLOT,
            ],
        ),
    ];
    for (name, specs, calls) in chains {
        let set = build(&rt, &specs);
        let mut w = WorkerPlugins::new(set.clone());
        let mut per_batch = Vec::new();
        for n in SIZES {
            let allocs = steady(&mut w, n, Instant::now);
            report(&format!("{name}, batch {n}"), n, allocs);
            let verdict_bytes: usize = calls.iter().map(|slot| slot * n).sum();
            let within = allocs.count <= (calls.len() * BATCHES) as u64
                && allocs.bytes <= (verdict_bytes * BATCHES) as u64;
            if !within {
                print_traces();
            }
            assert!(
                within,
                "{name}, batch {n}: {allocs:?} over {BATCHES} batches; the bound is one \
                 allocation of the verdict list per call ({} calls, {verdict_bytes} bytes a batch)",
                calls.len()
            );
            per_batch.push(allocs.count);
        }
        assert!(
            per_batch.windows(2).all(|w| w[0] == w[1]),
            "{name}: allocations grow with the batch size {SIZES:?}: {per_batch:?}"
        );
        assert!(
            set.status().iter().all(|s| s.stats.faults() == 0),
            "{name}: a plugin faulted"
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
