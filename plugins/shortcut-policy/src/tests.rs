//! Native unit tests: the README example, rule order, kinds, direction and config errors.

use mgre_sdk::Hooks;
use mgre_sdk::nhrp::ShortcutKind::{Redirect, Resolution};
use mgre_sdk::nhrp::ShortcutVerdict::{Allow, Deny};
use mgre_sdk::testing::{self, Harness};

use super::ShortcutPolicy;

fn readme() -> Harness<ShortcutPolicy> {
    let config = testing::readme_config(include_str!("../README.md"), "shortcut-policy");
    Harness::init(testing::context().config(&config).build()).expect("the README example loads")
}

fn init(toml: &str) -> Result<Harness<ShortcutPolicy>, String> {
    Harness::init(testing::context().config_toml(toml).build())
}

#[test]
fn readme_example_keeps_the_data_centre_on_the_hub_path() {
    let mut h = readme();
    assert_eq!(h.info().hooks, Hooks::SHORTCUT);
    for kind in [Redirect, Resolution] {
        assert_eq!(h.shortcut(kind, "203.0.113.10", "203.0.113.200"), Deny);
        assert_eq!(
            h.shortcut(kind, "203.0.113.200", "203.0.113.10"),
            Deny,
            "bidirectional"
        );
        assert_eq!(h.shortcut(kind, "2001:db8:1::1", "2001:db8:ff::53"), Deny);
        assert_eq!(h.shortcut(kind, "203.0.113.10", "203.0.113.70"), Allow);
        assert_eq!(h.shortcut(kind, "2001:db8:1::1", "2001:db8:2::1"), Allow);
    }
    assert_eq!(h.counter("denied"), 6);
    assert_eq!(h.counter("allowed"), 4);
}

#[test]
fn readme_example_first_match_wins_and_kinds_apply() {
    let mut h = readme();
    assert_eq!(
        h.shortcut(Redirect, "198.51.100.1", "198.51.100.2"),
        Allow,
        "lab among itself"
    );
    assert_eq!(h.shortcut(Redirect, "203.0.113.10", "198.51.100.2"), Deny);
    assert_eq!(
        h.shortcut(Redirect, "198.51.100.2", "203.0.113.10"),
        Deny,
        "bidirectional: out of the lab too"
    );
    assert_eq!(
        h.shortcut(Resolution, "203.0.113.10", "198.51.100.2"),
        Allow,
        "the rule is for redirects only"
    );
}

#[test]
fn one_way_rules_and_default_deny() {
    let mut h = init(
        r#"
        default = "deny"
        [[rule]]
        from = "203.0.113.0/26"
        to = "203.0.113.64/26"
        action = "allow"
        bidirectional = false
        "#,
    )
    .unwrap();
    assert_eq!(h.shortcut(Resolution, "203.0.113.1", "203.0.113.65"), Allow);
    assert_eq!(h.shortcut(Resolution, "203.0.113.65", "203.0.113.1"), Deny);
    assert_eq!(h.shortcut(Resolution, "2001:db8::1", "2001:db8::2"), Deny);
}

#[test]
fn an_empty_config_allows_everything() {
    let mut h = init("").unwrap();
    assert_eq!(h.shortcut(Redirect, "203.0.113.1", "203.0.113.200"), Allow);
}

#[test]
fn config_errors_name_the_key() {
    let err = init("[[rule]]\nto = []\naction = \"deny\"").unwrap_err();
    assert!(
        err.starts_with("config key `rule[0].to`: an empty list"),
        "{err}"
    );
    let err = init("[[rule]]\nkind = []\naction = \"deny\"").unwrap_err();
    assert!(
        err.starts_with("config key `rule[0].kind`: an empty list"),
        "{err}"
    );
    let err = init("[[rule]]\nto = \"203.0.113.0/33\"\naction = \"deny\"").unwrap_err();
    assert!(err.starts_with("config key `rule[0].to`"), "{err}");
    let err = init("[[rule]]\nkind = \"redirects\"\naction = \"deny\"").unwrap_err();
    assert!(err.starts_with("config key `rule[0].kind`"), "{err}");
    let err = init("[[rule]]\nto = \"203.0.113.0/24\"").unwrap_err();
    assert!(err.contains("missing field `action`"), "{err}");
}
