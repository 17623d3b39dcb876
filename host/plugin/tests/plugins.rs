//! Loading real plugins and running their chains: verdict merging, hook selection, and the
//! containment of hostile guests (trap, infinite loop, memory hog, deep recursion, malformed
//! verdicts, wrong world, truncated files).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mgre_plugin::{
    FailurePolicy, FaultKind, Hook, Hooks, LoadError, LoadStep, PluginSet, PluginSpec, PluginState,
    PluginStats, PolicyVerdict, Runtime, RuntimeConfig, SiteContext, TTL_UNTIL_RELOAD,
    WorkerPlugins,
};
use mgre_sdk::abi::{Mark, RouteAction};

use common::*;

fn build(runtime: &Runtime, specs: &[PluginSpec]) -> Arc<PluginSet> {
    let set = runtime.build_set(&SiteContext::default(), specs, None);
    assert!(set.load_errors().is_empty(), "{:?}", set.load_errors());
    Arc::new(set)
}

fn run(
    w: &mut WorkerPlugins,
    now: Instant,
    packets: &[(u8, u16)],
) -> (Vec<u8>, Vec<PolicyVerdict>) {
    let mut slots = batch(packets);
    let mut out = vec![PolicyVerdict::default(); packets.len()];
    w.run(now, &mut slots, &mut out);
    (slots, out)
}

fn stats(set: &PluginSet, name: &str) -> PluginStats {
    status(set, name).stats
}

fn status(set: &PluginSet, name: &str) -> mgre_plugin::PluginStatus {
    set.status()
        .into_iter()
        .find(|s| s.name == name)
        .expect("plugin in status")
}

fn counter(set: &PluginSet, plugin: &str, counter: &str) -> u64 {
    let st = status(set, plugin);
    st.counters
        .iter()
        .find(|(n, _)| n == counter)
        .map(|(_, v)| *v)
        .expect("counter")
}

fn slot_class(slots: &[u8], i: usize) -> u32 {
    let o = i * 64 + 20;
    u32::from_le_bytes(slots[o..o + 4].try_into().unwrap())
}

#[test]
fn good_plugin_classifies_marks_and_routes() {
    let rt = runtime();
    let set = build(
        &rt,
        &[spec(
            "good",
            "good",
            r#"{"dscp": 46, "priority": 6, "drop-port": 22}"#,
        )],
    );
    assert_eq!(set.chain(Hook::Classify).collect::<Vec<_>>(), ["good"]);
    let mut w = WorkerPlugins::new(set.clone());
    let (slots, out) = run(&mut w, Instant::now(), &[(UDP, 5060), (TCP, 22), (ICMP, 0)]);

    assert_eq!(out.iter().map(|v| v.class).collect::<Vec<_>>(), [1, 2, 0]);
    assert_eq!(
        (0..3).map(|i| slot_class(&slots, i)).collect::<Vec<_>>(),
        [1, 2, 0]
    );
    let marked = Mark {
        inner_dscp: Some(46),
        priority: Some(6),
        ..Mark::default()
    };
    assert_eq!(out[0].mark, marked);
    assert_eq!(out[1].mark, marked);
    assert_eq!(
        out[2].mark,
        Mark::default(),
        "unclassified packets are not marked"
    );
    assert_eq!(
        out.iter().map(|v| v.route).collect::<Vec<_>>(),
        [
            RouteAction::Default,
            RouteAction::Drop,
            RouteAction::Default
        ]
    );
    assert!(
        out.iter().all(|v| v.ttl_ms == 500 && !v.failed_closed),
        "{out:?}"
    );

    let st = status(&set, "good");
    assert_eq!(st.state, PluginState::Active);
    assert_eq!(
        (st.plugin_name.as_deref(), st.version.as_deref()),
        (Some("good"), Some("1.0.0"))
    );
    assert_eq!(st.hooks, Hooks::ALL);
    assert_eq!(st.classes, [(1, "udp".to_string()), (2, "tcp".to_string())]);
    assert_eq!(st.stats.calls, 3);
    assert_eq!(st.stats.packets, 9);
    assert_eq!(st.stats.faults(), 0);
    assert!(st.stats.mean_ns_per_packet().is_some());
    assert_eq!(counter(&set, "good", "packets"), 3);
    assert_eq!(counter(&set, "good", "mark-calls"), 1);
    assert_eq!(counter(&set, "good", "route-calls"), 1);
}

#[test]
fn empty_batches_and_empty_sets_are_fine() {
    let rt = runtime();
    let set = build(&rt, &[spec("good", "good", "{}")]);
    let mut w = WorkerPlugins::new(set.clone());
    let (_, out) = run(&mut w, Instant::now(), &[]);
    assert!(out.is_empty());
    assert_eq!(stats(&set, "good").calls, 0, "no call for an empty batch");

    let mut none = WorkerPlugins::new(Arc::new(PluginSet::empty()));
    let (_, out) = run(&mut none, Instant::now(), &[(UDP, 1)]);
    assert_eq!(
        out[0],
        PolicyVerdict {
            ttl_ms: TTL_UNTIL_RELOAD,
            ..PolicyVerdict::default()
        }
    );
}

#[test]
fn undeclared_and_unselected_hooks_are_never_called() {
    let rt = runtime();
    let only_classify = Hooks::only(Hook::Classify);
    let mut selected = spec("selected", "good", "{}");
    selected.hooks = Some(only_classify);
    let set = build(
        &rt,
        &[
            spec("declared", "good", r#"{"hooks": "classify"}"#),
            selected,
        ],
    );
    assert_eq!(
        set.chain(Hook::Classify).collect::<Vec<_>>(),
        ["declared", "selected"]
    );
    assert_eq!(
        set.chain(Hook::Mark).count() + set.chain(Hook::Route).count(),
        0
    );
    let st = status(&set, "declared");
    assert_eq!(
        (st.declared_hooks, st.hooks),
        (only_classify, only_classify)
    );
    let st = status(&set, "selected");
    assert_eq!((st.declared_hooks, st.hooks), (Hooks::ALL, only_classify));

    let mut w = WorkerPlugins::new(set.clone());
    for _ in 0..3 {
        run(&mut w, Instant::now(), &[(UDP, 1), (TCP, 2)]);
    }
    for name in ["declared", "selected"] {
        assert_eq!(counter(&set, name, "packets"), 6);
        assert_eq!(counter(&set, name, "mark-calls"), 0);
        assert_eq!(counter(&set, name, "route-calls"), 0);
    }
}

#[test]
fn chains_merge_in_config_order() {
    let rt = runtime();
    let first = spec(
        "first",
        "good",
        r#"{"dscp": 10, "priority": 1, "drop-port": 22, "classify-ttl": 900}"#,
    );
    let second = spec(
        "second",
        "good",
        r#"{"class-offset": 10, "priority": 6, "peer": 7, "mark-ttl": 300}"#,
    );
    let set = build(&rt, &[first, second]);
    let mut w = WorkerPlugins::new(set);
    let (slots, out) = run(&mut w, Instant::now(), &[(UDP, 53), (TCP, 22), (ICMP, 0)]);

    // Later non-zero classes override; the slots carry the final class.
    assert_eq!(out.iter().map(|v| v.class).collect::<Vec<_>>(), [11, 12, 0]);
    assert_eq!(slot_class(&slots, 0), 11);
    // Mark: the second overrides the fields it sets (priority), the first's DSCP stays.
    let merged = Mark {
        inner_dscp: Some(10),
        priority: Some(6),
        ..Mark::default()
    };
    assert_eq!(
        (out[0].mark, out[1].mark, out[2].mark),
        (merged, merged, Mark::default())
    );
    // Route: the first non-default action wins.
    assert_eq!(
        out.iter().map(|v| v.route).collect::<Vec<_>>(),
        [
            RouteAction::Peer(7),
            RouteAction::Drop,
            RouteAction::Peer(7)
        ]
    );
    // TTL: the minimum over all contributing verdicts (second's mark-ttl 300).
    assert!(out.iter().all(|v| v.ttl_ms == 300), "{out:?}");
}

#[test]
fn a_zero_ttl_verdict_forbids_caching() {
    let rt = runtime();
    let set = build(&rt, &[spec("good", "good", r#"{"route-ttl": 0}"#)]);
    let mut w = WorkerPlugins::new(set);
    let (_, out) = run(&mut w, Instant::now(), &[(UDP, 1)]);
    assert_eq!(out[0].ttl_ms, 0);
}

/// Each hostile fixture, the fault kind it must be counted as, and a memory cap.
const HOSTILE: [(&str, FaultKind); 4] = [
    ("trap", FaultKind::Trap),
    ("spin", FaultKind::Deadline),
    ("hog", FaultKind::MemoryLimit),
    ("recurse", FaultKind::Trap),
];

fn fault_count(s: &PluginStats, kind: FaultKind) -> u64 {
    match kind {
        FaultKind::Trap => s.traps,
        FaultKind::Deadline => s.deadline_hits,
        FaultKind::MemoryLimit => s.memory_limit_hits,
        FaultKind::BadOutput => s.bad_outputs,
        FaultKind::Instantiate => s.instantiate_failures,
    }
}

#[test]
fn hostile_plugins_are_contained_fail_open() {
    hostile_plugins_are_contained(FailurePolicy::Open);
}

#[test]
fn hostile_plugins_are_contained_fail_closed() {
    hostile_plugins_are_contained(FailurePolicy::Closed);
}

fn hostile_plugins_are_contained(policy: FailurePolicy) {
    let rt = runtime();
    for (fixture_name, kind) in HOSTILE {
        let mut hostile = spec(fixture_name, fixture_name, "{}");
        hostile.failure = policy;
        // A well-behaved classifier first: its verdicts survive a fail-open fault.
        let set = build(
            &rt,
            &[spec("good", "good", r#"{"hooks": "classify"}"#), hostile],
        );
        let mut w = WorkerPlugins::new(set.clone());

        let (_, ok) = run(&mut w, Instant::now(), &[(UDP, 1)]);
        assert_eq!(
            ok[0].class, 9,
            "{fixture_name}: the hostile plugin classifies normally"
        );

        let started = Instant::now();
        let (_, out) = run(&mut w, Instant::now(), &[(UDP, TRIGGER), (TCP, 80)]);
        let took = started.elapsed();
        let s = stats(&set, fixture_name);
        assert_eq!(fault_count(&s, kind), 1, "{fixture_name}: {s:?}");
        assert_eq!(s.faults(), 1, "{fixture_name}: one fault only: {s:?}");
        assert!(
            took < Duration::from_secs(2),
            "{fixture_name}: stopped in {took:?}"
        );
        for v in &out {
            assert_eq!(
                v.ttl_ms, 0,
                "{fixture_name}: a faulted batch must not be cached"
            );
            assert_eq!(
                v.failed_closed,
                policy == FailurePolicy::Closed,
                "{fixture_name}"
            );
        }
        if policy == FailurePolicy::Open {
            // As if the hostile plugin had no opinion: the good plugin's classes stand.
            assert_eq!(
                out.iter().map(|v| v.class).collect::<Vec<_>>(),
                [1, 2],
                "{fixture_name}"
            );
        }
        let last = status(&set, fixture_name)
            .last_error
            .expect("fault recorded");
        println!("{fixture_name}: stopped after {took:?}: {last}");
        if fixture_name == "recurse" {
            assert!(last.contains("call stack exhausted"), "{last}");
        }

        // A fresh instance serves the next batch.
        let (_, again) = run(&mut w, Instant::now(), &[(UDP, 1), (TCP, 2)]);
        assert!(
            again.iter().all(|v| v.class == 9 && !v.failed_closed),
            "{fixture_name}: {again:?}"
        );
        let s = stats(&set, fixture_name);
        assert_eq!(s.reinstantiations, 1, "{fixture_name}: {s:?}");
        assert_eq!(status(&set, fixture_name).state, PluginState::Active);
        assert_eq!(stats(&set, "good").faults(), 0);
    }
}

#[test]
fn malformed_verdicts_are_a_fault_but_keep_the_instance() {
    let rt = runtime();
    let mut closed = spec("trap", "trap", "{}");
    closed.failure = FailurePolicy::Closed;
    let set = build(&rt, &[closed]);
    let mut w = WorkerPlugins::new(set.clone());
    let (_, out) = run(&mut w, Instant::now(), &[(UDP, 667), (UDP, 1)]);
    assert!(out.iter().all(|v| v.failed_closed));
    let (_, out) = run(&mut w, Instant::now(), &[(UDP, 1)]);
    assert_eq!(out[0].class, 9);
    let s = stats(&set, "trap");
    assert_eq!((s.bad_outputs, s.reinstantiations, s.faults()), (1, 0, 1));
    assert!(
        status(&set, "trap")
            .last_error
            .unwrap()
            .contains("malformed verdicts")
    );
}

#[test]
fn repeated_faults_quarantine_with_backoff() {
    let rt = runtime(); // quarantine: 3 faults in 10 s -> 1 s, then 2 s, ...
    let set = build(&rt, &[spec("trap", "trap", "{}")]);
    let mut w = WorkerPlugins::new(set.clone());
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);

    for ms in [0, 10, 20] {
        run(&mut w, at(ms), &[(UDP, TRIGGER)]);
    }
    let s = stats(&set, "trap");
    assert_eq!((s.traps, s.quarantines), (3, 1));
    assert_eq!(status(&set, "trap").state, PluginState::Quarantined);

    // Quarantined: not called, failure policy (open: no opinion, not cacheable).
    let (_, out) = run(&mut w, at(500), &[(UDP, 1)]);
    assert_eq!((out[0].class, out[0].ttl_ms), (0, 0));
    let s = stats(&set, "trap");
    assert_eq!((s.calls, s.skipped_batches), (3, 1));

    // After the backoff it is called again, on a fresh instance.
    let (_, out) = run(&mut w, at(1100), &[(UDP, 1)]);
    assert_eq!(out[0].class, 9);
    assert_eq!(status(&set, "trap").state, PluginState::Active);

    // Three more faults: quarantined twice as long.
    for ms in [1200, 1210, 1220] {
        run(&mut w, at(ms), &[(UDP, TRIGGER)]);
    }
    run(&mut w, at(2300), &[(UDP, 1)]);
    assert_eq!(
        stats(&set, "trap").skipped_batches,
        2,
        "still quarantined after 1.08 s"
    );
    let (_, out) = run(&mut w, at(3300), &[(UDP, 1)]);
    assert_eq!(out[0].class, 9);
    let s = stats(&set, "trap");
    assert_eq!((s.traps, s.quarantines, s.skipped_batches), (6, 2, 2));
}

#[test]
fn load_errors_name_the_plugin_and_the_step() {
    let rt = Runtime::new(RuntimeConfig {
        init_deadline: Duration::from_millis(50),
        ..config()
    })
    .unwrap();
    let dir = scratch("load-errors");
    let good = fixture_bytes("good");
    let truncated = dir.join("truncated.wasm");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"#!/bin/sh\necho not wasm\n").unwrap();
    let mut tiny = spec("tiny-memory", "good", "{}");
    tiny.memory_limit_bytes = 64 << 10;

    let cases: Vec<(PluginSpec, LoadStep, &str)> = vec![
        (
            spec_at("missing", dir.join("nope.wasm"), "{}"),
            LoadStep::Read,
            "No such file",
        ),
        (
            spec_at("garbage", garbage, "{}"),
            LoadStep::Decode,
            "not a WebAssembly",
        ),
        (
            spec_at("truncated", truncated, "{}"),
            LoadStep::Decode,
            "truncated",
        ),
        (
            spec("otherworld", "otherworld", "{}"),
            LoadStep::Link,
            "mgre:policy/plugin",
        ),
        (tiny, LoadStep::Instantiate, ""),
        (
            spec("refuses", "good", r#"{"fail-init": 1}"#),
            LoadStep::Init,
            "fail-init requested",
        ),
        (
            spec("init-trap", "trap", r#"{"init": 1}"#),
            LoadStep::Init,
            "(trap)",
        ),
        (
            spec("init-spin", "spin", r#"{"init": 1}"#),
            LoadStep::Init,
            "(deadline exceeded)",
        ),
        (
            spec("init-hog", "hog", r#"{"init": 1}"#),
            LoadStep::Init,
            "(memory limit)",
        ),
        (
            spec("init-recurse", "recurse", r#"{"init": 1}"#),
            LoadStep::Init,
            "call stack exhausted",
        ),
    ];
    let specs: Vec<PluginSpec> = cases.iter().map(|(s, _, _)| s.clone()).collect();
    let set = rt.build_set(&SiteContext::default(), &specs, None);
    assert_eq!(set.load_errors().len(), cases.len());
    for ((spec, step, needle), err) in cases.iter().zip(set.load_errors()) {
        println!("{err}");
        assert_eq!(err.plugin(), spec.name);
        assert_eq!(err.step(), *step, "{err}");
        let text = err.to_string();
        assert!(text.contains(&spec.name) && text.contains(needle), "{text}");
    }
    assert!(matches!(
        &set.load_errors()[8],
        LoadError::InitFault {
            kind: FaultKind::MemoryLimit,
            ..
        }
    ));
    assert!(set.is_empty());
    assert_eq!(set.reload_failures(), cases.len() as u64);
    for st in set.status() {
        assert_eq!(
            st.state,
            PluginState::FailedToLoad {
                serving_previous: false
            }
        );
        assert_eq!(st.reload_failures, 1);
        assert!(st.last_error.is_some());
    }
    // The runtime is unharmed.
    let set = build(&rt, &[spec("good", "good", "{}")]);
    let (_, out) = run(&mut WorkerPlugins::new(set), Instant::now(), &[(TCP, 1)]);
    assert_eq!(out[0].class, 2);
}

#[test]
fn duplicate_names_are_refused() {
    let rt = runtime();
    let set = rt.build_set(
        &SiteContext::default(),
        &[spec("x", "good", "{}"), spec("x", "trap", "{}")],
        None,
    );
    assert_eq!(set.load_errors().len(), 1);
    assert!(matches!(
        set.load_errors()[0],
        LoadError::DuplicateName { .. }
    ));
    assert_eq!(set.chain(Hook::Classify).collect::<Vec<_>>(), ["x"]);
}

#[test]
fn an_already_componentized_file_is_accepted() {
    let component = wit_component::ComponentEncoder::default()
        .module(&fixture_bytes("good"))
        .unwrap()
        .validate(true)
        .encode()
        .unwrap();
    let path = scratch("component").join("good.component.wasm");
    std::fs::write(&path, &component).unwrap();
    let rt = runtime();
    let set = build(&rt, &[spec_at("component", path.clone(), "{}")]);
    let (_, out) = run(&mut WorkerPlugins::new(set), Instant::now(), &[(UDP, 1)]);
    assert_eq!(out[0].class, 1);

    // A truncated component is a decode error too.
    std::fs::write(&path, &component[..component.len() - 100]).unwrap();
    let set = rt.build_set(
        &SiteContext::default(),
        &[spec_at("component", path, "{}")],
        None,
    );
    assert_eq!(
        set.load_errors()[0].step(),
        LoadStep::Decode,
        "{}",
        set.load_errors()[0]
    );
}

#[test]
fn workers_on_several_threads_share_counters_and_stats() {
    let rt = runtime();
    let set = build(&rt, &[spec("good", "good", "{}")]);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let set = set.clone();
            std::thread::spawn(move || {
                let mut w = WorkerPlugins::new(set);
                for _ in 0..50 {
                    let (_, out) = run(&mut w, Instant::now(), &[(UDP, 1); 32]);
                    assert!(out.iter().all(|v| v.class == 1));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(counter(&set, "good", "packets"), 2 * 50 * 32);
    let s = stats(&set, "good");
    assert_eq!((s.calls, s.packets), (2 * 50 * 3, 2 * 50 * 32 * 3));
}

#[test]
fn dropping_the_runtime_stops_its_ticker() {
    let started = Instant::now();
    drop(runtime());
    assert!(started.elapsed() < Duration::from_secs(1));
}
