//! Native unit tests: the README example end to end, rule order, NAT, attributes and config
//! errors.

use mgre_sdk::Hooks;
use mgre_sdk::nhrp::{ADMINISTRATIVELY_PROHIBITED, Admission, AdmissionAttributes, Refusal};
use mgre_sdk::testing::{self, Harness, registration};

use super::NhrpAdmission;

fn readme() -> Harness<NhrpAdmission> {
    let config = testing::readme_config(include_str!("../README.md"), "nhrp-admission");
    let ctx = testing::context()
        .role(mgre_sdk::Role::Hub)
        .config(&config)
        .build();
    Harness::init(ctx).expect("the README example loads")
}

fn init(toml: &str) -> Result<Harness<NhrpAdmission>, String> {
    Harness::init(testing::context().config_toml(toml).build())
}

fn accepted(a: Admission) -> AdmissionAttributes {
    match a {
        Admission::Accept(attributes) => attributes,
        Admission::Refuse(r) => panic!("refused: {r:?}"),
    }
}

fn refused(a: Admission) -> String {
    match a {
        Admission::Refuse(Refusal { code, reason }) => {
            assert_eq!(code, ADMINISTRATIVELY_PROHIBITED);
            reason
        }
        Admission::Accept(a) => panic!("accepted: {a:?}"),
    }
}

#[test]
fn readme_example_gives_each_site_its_attributes() {
    let mut h = readme();
    assert_eq!(h.info().hooks, Hooks::ADMISSION);
    let dc = accepted(h.admit(registration(
        &["203.0.113.192/26", "2001:db8:1000:ff::/64"],
        "198.51.100.5",
    )));
    let group = dc.qos_group.as_ref().map(|g| (g.id, g.name.as_str()));
    assert_eq!(group, Some((10, "dc-gold")));
    assert_eq!(
        dc.multicast,
        Some(true),
        "the site overrides the top-level `false`"
    );
    assert_eq!(dc.holding_time_cap, Some(7200), "the top-level cap");

    let branch = accepted(h.admit(registration(&["203.0.113.16/28"], "192.0.2.40")));
    let group = branch.qos_group.as_ref().map(|g| (g.id, g.name.as_str()));
    assert_eq!(group, Some((20, "branch-silver")));
    assert_eq!(branch.multicast, Some(false), "the top-level value");
    assert_eq!(branch.holding_time_cap, Some(1800), "the smaller cap");
    assert_eq!(branch.granted_holding_time(7200), 1800);
    assert_eq!(h.counter("accepted"), 2);
}

#[test]
fn readme_example_refuses_what_it_should() {
    let mut h = readme();
    let outside = refused(h.admit(registration(&["198.51.100.128/25"], "192.0.2.40")));
    assert_eq!(outside, "198.51.100.128/25 is outside the overlay");
    let wrong_block = refused(h.admit(registration(
        &["203.0.113.0/28", "203.0.113.200/29"],
        "192.0.2.40",
    )));
    assert_eq!(
        wrong_block,
        "203.0.113.200/29 is not allowed for NBMA 192.0.2.40"
    );
    let unknown = refused(h.admit(registration(&["203.0.113.16/28"], "203.0.113.250")));
    assert_eq!(
        unknown,
        "no site matches NBMA 203.0.113.250 (source 203.0.113.250)"
    );
    let v6_outside = refused(h.admit(registration(&["2001:db8:2000::/64"], "192.0.2.40")));
    assert!(v6_outside.contains("outside the overlay"), "{v6_outside}");
    assert_eq!(h.counter("refused-overlay"), 2);
    assert_eq!(h.counter("refused-prefix"), 1);
    assert_eq!(h.counter("refused-unmatched"), 1);
    assert_eq!(h.counter("accepted"), 0);
}

#[test]
fn sites_match_in_order_on_nbma_and_source() {
    let mut h = init(
        r#"
        [[site]]
        nbma = "192.0.2.0/24"
        source = "198.51.100.0/24"
        qos-group = { id = 1, name = "nat-branch" }

        [[site]]
        nbma = "192.0.2.0/24"
        qos-group = { id = 2, name = "branch" }

        [[site]]
        source = "203.0.113.0/24"
        qos-group = { id = 3, name = "by-source" }
        "#,
    )
    .unwrap();
    let group = |a: Admission| accepted(a).qos_group.map(|g| g.id);
    let behind_nat = registration(&["203.0.113.0/28"], "192.0.2.9").behind_nat("198.51.100.9");
    assert_eq!(group(h.admit(behind_nat)), Some(1));
    assert_eq!(
        group(h.admit(registration(&["203.0.113.0/28"], "192.0.2.9"))),
        Some(2)
    );
    let by_source = registration(&["2001:db8::/64"], "2001:db8:ffff::1").behind_nat("203.0.113.77");
    assert_eq!(group(h.admit(by_source)), Some(3));
    assert_eq!(
        group(h.admit(registration(&["2001:db8::/64"], "2001:db8:ffff::1"))),
        None,
        "no site: accepted by default, without attributes"
    );
}

#[test]
fn nat_can_be_refused() {
    let mut h = init("refuse-nat = true").unwrap();
    let reason =
        refused(h.admit(registration(&["203.0.113.0/28"], "192.0.2.9").behind_nat("198.51.100.9")));
    assert_eq!(reason, "192.0.2.9 registers from behind NAT (198.51.100.9)");
    assert!(
        h.admit(registration(&["203.0.113.0/28"], "192.0.2.9"))
            .is_accept()
    );
    assert_eq!(h.counter("refused-nat"), 1);
}

#[test]
fn an_empty_config_accepts_everything_without_attributes() {
    let mut h = init("").unwrap();
    let a = accepted(h.admit(registration(&["0.0.0.0/0"], "192.0.2.1").unique()));
    assert_eq!(a, AdmissionAttributes::default());
}

#[test]
fn config_errors_name_the_key() {
    let err = init("[[site]]\nmulticast = true").unwrap_err();
    assert_eq!(
        err,
        "config key `site[0]`: a site needs `nbma` or `source` (the addresses it is for)"
    );
    let err = init(
        "overlay = \"203.0.113.0/24\"\n[[site]]\nnbma = \"192.0.2.0/24\"\nprefixes = \"198.51.100.0/24\"",
    )
    .unwrap_err();
    assert!(
        err.starts_with("config key `site[0].prefixes`: 198.51.100.0/24 is outside every"),
        "{err}"
    );
    let err = init("[[site]]\nnbma = \"192.0.2.0/24\"\nprefixes = []").unwrap_err();
    assert!(err.contains("an empty list allows nothing"), "{err}");
    let err = init("holdtime-cap = 70000").unwrap_err();
    assert!(err.starts_with("config key `holdtime-cap`"), "{err}");
    let err = init("[[site]]\nnbma = \"192.0.2.0/33\"").unwrap_err();
    assert!(err.starts_with("config key `site[0].nbma`"), "{err}");
    let err = init("default = \"maybe\"").unwrap_err();
    assert!(
        err.starts_with("config key `default`: unknown variant `maybe`"),
        "{err}"
    );
}
