//! The NHRP control-path hooks through [`ControlHooks`] with real plugins: the example plugins
//! `nhrp-admission` and `shortcut-policy` and the fixture guests (`good` for chains, `trap` and
//! `spin` for failures): admission accept/refuse/attributes, chain merging, shortcut
//! allow/deny, failure policies, fail-closed plugins that never loaded, and hot reload.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use mgre_plugin::{
    ADMINISTRATIVELY_PROHIBITED, Admission, ControlHooks, FailurePolicy, Hook, Hooks,
    PluginManager, PluginSet, PluginSpec, PluginStats, Registration, Runtime, ShortcutKind,
    SiteContext,
};
use mgre_sdk::nhrp::Refusal;

use common::*;

fn build(runtime: &Runtime, specs: &[PluginSpec]) -> Arc<PluginSet> {
    let set = runtime.build_set(&SiteContext::default(), specs, None);
    assert!(set.load_errors().is_empty(), "{:?}", set.load_errors());
    Arc::new(set)
}

fn stats(set: &PluginSet, name: &str) -> PluginStats {
    set.status()
        .into_iter()
        .find(|s| s.name == name)
        .expect("plugin in status")
        .stats
}

fn counter(set: &PluginSet, plugin: &str, counter: &str) -> u64 {
    let st = set.status().into_iter().find(|s| s.name == plugin).unwrap();
    st.counters
        .iter()
        .find(|(n, _)| n == counter)
        .map(|(_, v)| *v)
        .expect("counter")
}

/// A registration of `prefixes` from `nbma`, not behind NAT, asking for 7200 s.
fn registration(prefixes: &[&str], nbma: &str) -> Registration {
    let nbma: IpAddr = nbma.parse().unwrap();
    Registration {
        prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        nbma,
        source: nbma,
        nat: false,
        holding_time: 7200,
        unique: true,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn qos_group(a: &Admission) -> Option<(u32, &str)> {
    match a {
        Admission::Accept(a) => a.qos_group.as_ref().map(|g| (g.id, g.name.as_str())),
        Admission::Refuse(r) => panic!("refused: {r:?}"),
    }
}

const ADMISSION_CONFIG: &str = r#"{
    "overlay": ["203.0.113.0/24", "2001:db8:1000::/48"],
    "default": "refuse",
    "multicast": false,
    "holdtime-cap": 7200,
    "site": [
        {"nbma": "198.51.100.0/28", "prefixes": "203.0.113.192/26",
         "qos-group": {"id": 10, "name": "dc-gold"}, "multicast": true},
        {"nbma": "192.0.2.0/25", "prefixes": "203.0.113.0/25",
         "qos-group": {"id": 20, "name": "branch-silver"}, "holdtime-cap": 1800}
    ]
}"#;

#[test]
fn nhrp_admission_accepts_refuses_and_attaches_attributes() {
    let rt = runtime();
    let set = build(
        &rt,
        &[
            spec_at("classifier", example_plugin("voip-qos"), "{}"),
            spec_at(
                "admission",
                example_plugin("nhrp-admission"),
                ADMISSION_CONFIG,
            ),
        ],
    );
    assert_eq!(
        set.chain(Hook::Admission).collect::<Vec<_>>(),
        ["admission"]
    );
    assert_eq!(set.chain(Hook::Shortcut).count(), 0);
    let mut c = ControlHooks::new(set.clone());
    assert!(c.has_admission() && !c.has_shortcut());
    let now = Instant::now();

    let dc = c.admit_registration(now, &registration(&["203.0.113.192/26"], "198.51.100.3"));
    assert_eq!(qos_group(&dc), Some((10, "dc-gold")));
    let Admission::Accept(dc) = dc else {
        unreachable!()
    };
    assert_eq!(
        (dc.multicast, dc.holding_time_cap),
        (Some(true), Some(7200))
    );

    let branch = c.admit_registration(now, &registration(&["203.0.113.8/29"], "192.0.2.20"));
    assert_eq!(qos_group(&branch), Some((20, "branch-silver")));
    let Admission::Accept(branch) = branch else {
        unreachable!()
    };
    assert_eq!(
        (branch.multicast, branch.holding_time_cap),
        (Some(false), Some(1800))
    );
    assert_eq!(branch.granted_holding_time(7200), 1800);

    let outside = c.admit_registration(now, &registration(&["198.51.100.0/24"], "192.0.2.20"));
    assert_eq!(
        outside,
        Admission::Refuse(Refusal {
            code: ADMINISTRATIVELY_PROHIBITED,
            reason: "198.51.100.0/24 is outside the overlay".into()
        })
    );
    let unknown = c.admit_registration(now, &registration(&["203.0.113.8/29"], "203.0.113.99"));
    assert!(!unknown.is_accept());

    let st = stats(&set, "admission");
    assert_eq!((st.admission_calls, st.admission_refusals), (4, 2));
    assert_eq!((st.calls, st.packets, st.faults()), (0, 0, 0));
    assert!(st.control_call_ns > 0);
    assert_eq!(counter(&set, "admission", "accepted"), 2);
    assert_eq!(counter(&set, "admission", "refused-overlay"), 1);
    assert_eq!(stats(&set, "classifier").admission_calls, 0);
}

#[test]
fn admission_chains_merge_attributes_and_stop_at_the_first_refusal() {
    let rt = runtime();
    let first = spec(
        "first",
        "good",
        r#"{"qos-group": 1, "multicast": 1, "holdtime-cap": 900}"#,
    );
    let second = spec("second", "good", r#"{"qos-group": 2, "holdtime-cap": 600}"#);
    let set = build(&rt, &[first.clone(), second.clone()]);
    let mut c = ControlHooks::new(set);
    let Admission::Accept(a) = c.admit_registration(
        Instant::now(),
        &registration(&["203.0.113.0/26"], "192.0.2.1"),
    ) else {
        panic!("refused")
    };
    assert_eq!(a.qos_group.map(|g| (g.id, g.name)), Some((2, "g2".into())));
    assert_eq!(a.multicast, Some(true), "the second has no opinion");
    assert_eq!(a.holding_time_cap, Some(600), "the smallest cap");

    let refuse5 = spec("refuse5", "good", r#"{"refuse-code": 5}"#);
    let refuse6 = spec("refuse6", "good", r#"{"refuse-code": 6}"#);
    let set = build(&rt, &[first, refuse5, refuse6, second]);
    let mut c = ControlHooks::new(set.clone());
    let answer = c.admit_registration(
        Instant::now(),
        &registration(&["203.0.113.0/26"], "192.0.2.1"),
    );
    assert_eq!(
        answer,
        Admission::Refuse(Refusal {
            code: 5,
            reason: "refused by the good fixture".into()
        })
    );
    assert_eq!(stats(&set, "first").admission_calls, 1);
    assert_eq!(stats(&set, "refuse5").admission_refusals, 1);
    assert_eq!(
        stats(&set, "refuse6").admission_calls,
        0,
        "the chain stopped"
    );
    assert_eq!(stats(&set, "second").admission_calls, 0);
}

const SHORTCUT_CONFIG: &str = r#"{
    "rule": [
        {"to": ["203.0.113.192/26", "2001:db8:ff::/64"], "action": "deny"},
        {"to": "198.51.100.0/24", "kind": "redirect", "action": "deny"}
    ]
}"#;

#[test]
fn shortcut_policy_allows_and_denies() {
    let rt = runtime();
    let set = build(
        &rt,
        &[spec_at(
            "shortcuts",
            example_plugin("shortcut-policy"),
            SHORTCUT_CONFIG,
        )],
    );
    let mut c = ControlHooks::new(set.clone());
    assert!(c.has_shortcut() && !c.has_admission());
    let now = Instant::now();
    let mut allowed = |kind, src, dst| c.shortcut_allowed(now, kind, ip(src), ip(dst));
    use ShortcutKind::{Redirect, Resolution};
    assert!(!allowed(Redirect, "203.0.113.10", "203.0.113.200"));
    assert!(!allowed(Resolution, "203.0.113.200", "203.0.113.10"));
    assert!(!allowed(Resolution, "2001:db8:1::1", "2001:db8:ff::1"));
    assert!(allowed(Resolution, "203.0.113.10", "203.0.113.70"));
    assert!(!allowed(Redirect, "203.0.113.10", "198.51.100.7"));
    assert!(allowed(Resolution, "203.0.113.10", "198.51.100.7"));
    let st = stats(&set, "shortcuts");
    assert_eq!((st.shortcut_calls, st.shortcut_denials), (6, 4));
    assert_eq!(counter(&set, "shortcuts", "denied"), 4);
    assert_eq!(counter(&set, "shortcuts", "allowed"), 2);

    // Any deny in the chain wins; a plugin without the hook is not asked.
    let set = build(
        &rt,
        &[
            spec(
                "no-shortcut",
                "good",
                r#"{"hooks": "admission", "deny-shortcuts": 1}"#,
            ),
            spec_at("shortcuts", example_plugin("shortcut-policy"), "{}"),
            spec("deny-all", "good", r#"{"deny-shortcuts": 1}"#),
        ],
    );
    assert_eq!(
        set.chain(Hook::Shortcut).collect::<Vec<_>>(),
        ["shortcuts", "deny-all"]
    );
    let mut c = ControlHooks::new(set.clone());
    assert!(!c.shortcut_allowed(now, Resolution, ip("203.0.113.1"), ip("203.0.113.70")));
    assert_eq!(stats(&set, "no-shortcut").shortcut_calls, 0);
    assert_eq!(stats(&set, "shortcuts").shortcut_calls, 1);
    assert_eq!(stats(&set, "deny-all").shortcut_denials, 1);
}

#[test]
fn failing_nhrp_hooks_apply_the_failure_policy() {
    let rt = runtime();
    for fixture in ["trap", "spin"] {
        for failure in [FailurePolicy::Open, FailurePolicy::Closed] {
            let mut hostile = spec(fixture, fixture, "{}");
            hostile.failure = failure;
            let set = build(&rt, &[spec("good", "good", r#"{"qos-group": 7}"#), hostile]);
            let mut c = ControlHooks::new(set.clone());
            let now = Instant::now();
            let mut trigger = registration(&["203.0.113.0/26"], "192.0.2.1");
            trigger.holding_time = 666;
            let answer = c.admit_registration(now, &trigger);
            let dst = ip("192.0.2.66");
            let shortcut = c.shortcut_allowed(now, ShortcutKind::Redirect, ip("192.0.2.1"), dst);
            match failure {
                FailurePolicy::Open => {
                    assert_eq!(
                        qos_group(&answer),
                        Some((7, "g7")),
                        "{fixture}: as if it had no opinion"
                    );
                    assert!(shortcut, "{fixture}: fail-open allows");
                }
                FailurePolicy::Closed => {
                    let Admission::Refuse(r) = answer else {
                        panic!("{fixture}: fail-closed accepted")
                    };
                    assert_eq!(r.code, ADMINISTRATIVELY_PROHIBITED);
                    assert!(r.reason.contains(fixture), "{}", r.reason);
                    assert!(!shortcut, "{fixture}: fail-closed denies");
                }
            }
            let st = stats(&set, fixture);
            let faults = if fixture == "trap" {
                st.traps
            } else {
                st.deadline_hits
            };
            assert_eq!(faults, 2, "{fixture} {failure:?}: {st:?}");
            // The instance is replaced and answers normally afterwards.
            let fine = registration(&["203.0.113.0/26"], "192.0.2.1");
            assert_eq!(
                qos_group(&c.admit_registration(now, &fine)),
                Some((7, "g7"))
            );
            let st = stats(&set, fixture);
            assert_eq!(
                (st.reinstantiations, st.admission_calls),
                (2, 2),
                "{fixture}"
            );
        }
    }
}

#[test]
fn an_unavailable_fail_closed_plugin_refuses_unless_selected_for_packets_only() {
    let rt = runtime();
    let mut missing = spec("missing", "good", "{}");
    missing.path = scratch("missing").join("absent.wasm");
    missing.failure = FailurePolicy::Closed;
    let set = Arc::new(rt.build_set(&SiteContext::default(), &[missing.clone()], None));
    assert_eq!(set.closed_unavailable(), ["missing"]);
    let mut c = ControlHooks::new(set);
    let now = Instant::now();
    let req = registration(&["203.0.113.0/26"], "192.0.2.1");
    let Admission::Refuse(r) = c.admit_registration(now, &req) else {
        panic!("accepted")
    };
    assert!(r.reason.contains("missing"), "{}", r.reason);
    assert!(!c.shortcut_allowed(
        now,
        ShortcutKind::Resolution,
        ip("192.0.2.1"),
        ip("192.0.2.2")
    ));

    missing.hooks = Some(Hooks::only(Hook::Classify));
    let set = Arc::new(rt.build_set(&SiteContext::default(), &[missing], None));
    let mut c = ControlHooks::new(set);
    assert!(!c.has_admission());
    assert!(c.admit_registration(now, &req).is_accept());
    assert!(c.shortcut_allowed(
        now,
        ShortcutKind::Resolution,
        ip("192.0.2.1"),
        ip("192.0.2.2")
    ));
}

#[test]
fn hot_reload_reaches_the_control_thread() {
    let manager = PluginManager::new(
        runtime(),
        SiteContext::default(),
        vec![spec("good", "good", r#"{"qos-group": 1}"#)],
    );
    let mut c = ControlHooks::new(manager.current());
    let req = registration(&["203.0.113.0/26"], "192.0.2.1");
    let now = Instant::now();
    assert_eq!(qos_group(&c.admit_registration(now, &req)), Some((1, "g1")));
    let first = c.set().generation();

    // Unchanged: nothing is published, the instance stays.
    manager.reload();
    c.refresh(&manager.published().load());
    assert_eq!(c.set().generation(), first);

    manager.reconfigure(
        SiteContext::default(),
        vec![spec(
            "good",
            "good",
            r#"{"qos-group": 2, "deny-shortcuts": 1}"#,
        )],
    );
    c.refresh(&manager.published().load());
    assert!(c.set().generation() > first);
    assert_eq!(qos_group(&c.admit_registration(now, &req)), Some((2, "g2")));
    assert!(!c.shortcut_allowed(
        now,
        ShortcutKind::Redirect,
        ip("203.0.113.1"),
        ip("203.0.113.70")
    ));

    manager.reconfigure(SiteContext::default(), Vec::new());
    c.refresh(&manager.published().load());
    assert!(!c.has_admission());
    assert_eq!(qos_group(&c.admit_registration(now, &req)), None);
}
