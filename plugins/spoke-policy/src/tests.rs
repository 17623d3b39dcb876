//! Native unit tests of site resolution, rule order, via-hub, blackhole/local and config errors on the reference topology.

use mgre_sdk::abi::{Direction, Route, RouteAction};
use mgre_sdk::testing::{self, ContextBuilder, Harness, PacketBuilder, ip, tcp, udp};
use mgre_sdk::{Hooks, Role};

use super::SpokePolicy;

use RouteAction::{Default as Allow, Drop, Local, ViaHub};

const HUB: u16 = 0;
const SPOKE1: u16 = 1;
const SPOKE2: u16 = 2;
const SPOKE3: u16 = 3;

/// spoke1 of examples/: it knows only the hub.
fn spoke1() -> ContextBuilder {
    testing::context()
        .role(Role::Spoke)
        .address("198.51.100.11/24")
        .address("2001:db8:100::11/64")
        .peer(
            HUB,
            "hub",
            "192.0.2.1",
            &[
                "198.51.100.1/32",
                "2001:db8:100::1/128",
                "203.0.113.192/26",
                "2001:db8:ff::/64",
            ],
        )
}

/// The hub of examples/, plus a /27 inside spoke2's /26 that spoke3 serves.
fn hub() -> ContextBuilder {
    testing::context()
        .role(Role::Hub)
        .address("198.51.100.1/24")
        .peer(
            SPOKE1,
            "spoke1",
            "192.0.2.11",
            &["203.0.113.0/26", "2001:db8:1::/64"],
        )
        .peer(
            SPOKE2,
            "spoke2",
            "192.0.2.12",
            &["203.0.113.64/26", "2001:db8:2::/64"],
        )
        .peer(
            SPOKE3,
            "spoke3",
            "192.0.2.13",
            &["203.0.113.128/26", "203.0.113.96/27"],
        )
}

fn init(ctx: ContextBuilder, toml: &str) -> Result<Harness<SpokePolicy>, String> {
    Harness::init(ctx.config_toml(toml).build())
}

fn readme_on_spoke1() -> Harness<SpokePolicy> {
    let config = testing::readme_config(include_str!("../README.md"), "spoke-policy");
    Harness::init(spoke1().config(&config).build()).expect("the README example is valid")
}

/// A packet from this site's TUN towards `egress`.
fn out(src: &str, dst: &str, egress: u16) -> PacketBuilder {
    tcp(src, dst).egress(egress)
}

/// A packet from peer `ingress` to this site's TUN.
fn inbound(src: &str, dst: &str, ingress: u16) -> PacketBuilder {
    tcp(src, dst).ingress(ingress).direction(Direction::Inbound)
}

/// A packet the hub forwards from one spoke to another.
fn transit(src: &str, dst: &str, ingress: u16, egress: u16) -> PacketBuilder {
    tcp(src, dst)
        .ingress(ingress)
        .egress(egress)
        .direction(Direction::Transit)
}

fn action(h: &mut Harness<SpokePolicy>, p: PacketBuilder) -> RouteAction {
    h.route_one(p).action
}

#[test]
fn declares_route_and_counters() {
    let h = readme_on_spoke1();
    assert_eq!(h.info().hooks, Hooks::ROUTE);
    assert!(h.info().classes.is_empty());
    assert_eq!(
        h.info().counters,
        ["denied", "via-hub", "blackholed", "local"]
    );
}

#[test]
fn readme_example_on_spoke1() {
    let mut h = readme_on_spoke1();
    let cases = [
        (
            out("203.0.113.5:40000", "203.0.113.200:443", HUB),
            Allow,
            "to the hub site",
        ),
        (
            inbound("203.0.113.200:443", "203.0.113.5:40000", HUB),
            Allow,
            "reply from the hub site",
        ),
        (
            out("203.0.113.5:40000", "198.51.100.1:22", HUB),
            Allow,
            "the hub's tunnel address",
        ),
        (
            out("203.0.113.40:40000", "203.0.113.70:443", HUB),
            ViaHub,
            "payment to spoke2, no shortcut",
        ),
        (
            out("203.0.113.40:40000", "203.0.113.70:443", SPOKE2),
            ViaHub,
            "payment to spoke2, shortcut",
        ),
        (
            out("203.0.113.5:40000", "203.0.113.70:443", SPOKE2),
            Allow,
            "the rest of the site to spoke2",
        ),
        (
            out("[2001:db8:1::5]:40000", "[2001:db8:2::7]:443", SPOKE2),
            Allow,
            "IPv6 to spoke2",
        ),
        (
            inbound("203.0.113.70:443", "203.0.113.40:40000", SPOKE2),
            Allow,
            "to payment: arrived",
        ),
        (
            out("203.0.113.5:40000", "203.0.113.130:443", HUB),
            Drop,
            "spoke3 is denied by default",
        ),
        (
            inbound("203.0.113.130:443", "203.0.113.5:40000", HUB),
            Drop,
            "from spoke3 via the hub",
        ),
        (
            out("203.0.113.5:40000", "203.0.113.61:80", HUB),
            Drop,
            "blackhole",
        ),
        (
            out("[2001:db8:1::5]:1", "[2001:db8:1:dead::1]:2", HUB),
            Drop,
            "IPv6 blackhole",
        ),
        (
            inbound("203.0.113.200:1", "198.51.100.53:53", HUB),
            Local,
            "local service",
        ),
    ];
    for (packet, expected, why) in cases {
        assert_eq!(action(&mut h, packet), expected, "{why}");
    }
    let counts = ["denied", "via-hub", "blackholed", "local"].map(|c| h.counter(c));
    assert_eq!(counts, [2, 2, 2, 1]);
}

#[test]
fn verdicts_carry_the_ttl() {
    let mut h = init(spoke1(), "").unwrap();
    let p = out("203.0.113.5:1", "203.0.113.200:2", HUB);
    assert_eq!(
        h.route_one(p),
        Route {
            action: Allow,
            ttl_ms: 30_000
        }
    );
    let mut h = init(spoke1(), "ttl-ms = 1000\ndefault = \"deny\"").unwrap();
    assert_eq!(
        h.route_one(p),
        Route {
            action: Drop,
            ttl_ms: 1000
        }
    );
}

#[test]
fn blackhole_comes_before_local_and_rules() {
    let mut h = init(
        spoke1(),
        r#"
        blackhole = "10.9.0.0/16"
        local = ["10.9.9.0/24", "10.8.0.0/16"]
        [[rule]]
        to = "10.0.0.0/8"
        action = "via-hub"
        "#,
    )
    .unwrap();
    assert_eq!(
        action(&mut h, out("203.0.113.5:1", "10.9.9.9:2", HUB)),
        Drop
    );
    assert_eq!(
        action(&mut h, out("203.0.113.5:1", "10.8.1.1:2", HUB)),
        Local
    );
    assert_eq!(
        action(&mut h, out("203.0.113.5:1", "10.7.1.1:2", HUB)),
        ViaHub
    );
    assert_eq!(
        action(&mut h, out("203.0.113.5:1", "192.0.2.200:2", HUB)),
        Allow
    );
}

#[test]
fn peer_names_use_the_longest_map_prefix_on_the_hub() {
    let mut h = init(
        hub(),
        r#"
        [[rule]]
        from = "spoke1"
        to = "spoke2"
        action = "deny"
        "#,
    )
    .unwrap();
    let s1 = "203.0.113.5:40000";
    assert_eq!(
        action(&mut h, transit(s1, "203.0.113.70:80", SPOKE1, SPOKE2)),
        Drop
    );
    assert_eq!(
        action(&mut h, transit("203.0.113.70:80", s1, SPOKE2, SPOKE1)),
        Drop,
        "reverse"
    );
    assert_eq!(
        action(
            &mut h,
            transit("[2001:db8:2::7]:80", "[2001:db8:1::5]:1", SPOKE2, SPOKE1)
        ),
        Drop,
        "IPv6"
    );
    // 203.0.113.100 is in spoke2's /26 but spoke3's /27 is longer.
    assert_eq!(
        action(&mut h, transit(s1, "203.0.113.100:80", SPOKE1, SPOKE3)),
        Allow
    );
    assert_eq!(
        action(&mut h, transit(s1, "203.0.113.130:80", SPOKE1, SPOKE3)),
        Allow
    );
    // The path does not make the site: an unmapped source from spoke1 is nobody's.
    assert_eq!(
        action(
            &mut h,
            transit("192.0.2.99:1", "203.0.113.70:80", SPOKE1, SPOKE2)
        ),
        Allow
    );
    assert_eq!(h.counter("denied"), 3);
}

#[test]
fn local_means_this_nodes_tun() {
    let mut h = init(
        hub(),
        r#"
        default = "deny"
        [[rule]]
        from = "local"
        to = "any"
        action = "allow"
        "#,
    )
    .unwrap();
    assert_eq!(
        action(&mut h, out("203.0.113.200:1", "203.0.113.5:2", SPOKE1)),
        Allow
    );
    assert_eq!(
        action(&mut h, inbound("203.0.113.5:2", "203.0.113.200:1", SPOKE1)),
        Allow
    );
    assert_eq!(
        action(
            &mut h,
            transit("203.0.113.5:2", "203.0.113.70:1", SPOKE1, SPOKE2)
        ),
        Drop
    );
}

#[test]
fn one_way_rules() {
    let mut h = init(
        spoke1(),
        r#"
        [[rule]]
        from = "local"
        to = "203.0.113.64/26"
        action = "deny"
        bidirectional = false
        "#,
    )
    .unwrap();
    assert_eq!(
        action(&mut h, out("203.0.113.5:1", "203.0.113.70:2", HUB)),
        Drop
    );
    assert_eq!(
        action(&mut h, inbound("203.0.113.70:2", "203.0.113.5:1", HUB)),
        Allow
    );
}

#[test]
fn via_hub_is_allow_on_the_hub() {
    let rule = "[[rule]]\nfrom = \"spoke1\"\nto = \"spoke2\"\naction = \"via-hub\"";
    let mut h = init(hub(), rule).unwrap();
    assert_eq!(
        action(
            &mut h,
            transit("203.0.113.5:1", "203.0.113.70:2", SPOKE1, SPOKE2)
        ),
        Allow
    );
    assert_eq!(h.counter("via-hub"), 0);
    assert!(
        h.logs()
            .iter()
            .any(|(_, l)| l.contains("1 via-hub rule(s) act as `allow` on the hub"))
    );
}

#[test]
fn first_matching_rule_wins_and_any_matches_all() {
    let mut h = init(
        spoke1(),
        r#"
        [[rule]]
        to = "hub"
        action = "allow"
        [[rule]]
        from = "any"
        to = ["203.0.113.0/24", "any"]
        action = "deny"
        "#,
    )
    .unwrap();
    assert_eq!(
        action(&mut h, out("203.0.113.5:1", "203.0.113.200:2", HUB)),
        Allow
    );
    assert_eq!(
        action(&mut h, out("203.0.113.5:1", "192.0.2.77:2", HUB)),
        Drop
    );
    assert_eq!(
        action(&mut h, udp("203.0.113.5:1", "192.0.2.77:2").egress(HUB)),
        Drop
    );
    assert_eq!(
        action(&mut h, ip(1, "203.0.113.5", "192.0.2.77").egress(HUB)),
        Drop
    );
}

#[test]
fn config_errors_name_the_key() {
    let cases = [
        (
            "[[rule]]\nto = \"spoke9\"\naction = \"deny\"",
            "config key `rule[0].to`: `spoke9` is neither `any`, `local`, a prefix nor a known peer (peers: hub)",
        ),
        (
            "[[rule]]\nfrom = [\"local\", \"10.0.0.0/33\"]\naction = \"deny\"",
            "config key `rule[0].from`: invalid prefix `10.0.0.0/33`: the prefix length exceeds 32",
        ),
        (
            "[[rule]]\nfrom = []\naction = \"deny\"",
            "config key `rule[0].from`: an empty list matches nothing",
        ),
        (
            "[[rule]]\nto = \"hub\"\naction = \"reject\"",
            "config key `rule[0].action`: unknown variant `reject`, expected one of `allow`, `deny`, `via-hub`",
        ),
        (
            "[[rule]]\nto = \"hub\"",
            "config key `rule[0]`: missing field `action`",
        ),
        (
            "[[rule]]\naction = \"deny\"\n[[rule]]\nto = \"hub\"\naction = \"allow\"",
            "config key `rule[0]`: the rule matches every pair",
        ),
        (
            "default = \"drop\"",
            "config key `default`: unknown variant `drop`, expected `allow` or `deny`",
        ),
        (
            "blackhole = [\"203.0.113.0/24\", \"x\"]",
            "config key `blackhole[1]`: invalid prefix `x`",
        ),
        (
            "local = 5",
            "config key `local`: invalid type: integer `5`, expected prefix",
        ),
        (
            "[[rule]]\nto = \"hub\"\naction = \"deny\"\nboth-ways = true",
            "config key `rule[0].both-ways`: unknown field",
        ),
    ];
    for (toml, expected) in cases {
        let err = init(spoke1(), toml).unwrap_err();
        assert!(
            err.starts_with(expected),
            "config:\n{toml}\nerror:    {err}\nexpected: {expected}"
        );
    }
    let err = init(
        testing::context(),
        "[[rule]]\nto = \"hub\"\naction = \"deny\"",
    )
    .unwrap_err();
    assert!(err.contains("(peers: none)"), "{err}");
}
