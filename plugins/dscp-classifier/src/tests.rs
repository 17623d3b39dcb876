//! Native unit tests of the rule matching, ids, counters and config errors, mostly through the README example.

use mgre_sdk::abi::{Classify, Direction};
use mgre_sdk::testing::{self, Harness, PacketBuilder, ip, tcp, udp};

use super::DscpClassifier;

fn readme() -> Harness<DscpClassifier> {
    let config = testing::readme_config(include_str!("../README.md"), "dscp-classifier");
    Harness::init(testing::context().config(&config).build()).expect("the README example is valid")
}

fn with(toml: &str) -> Result<Harness<DscpClassifier>, String> {
    Harness::init(testing::context().config_toml(toml).build())
}

fn class_of(h: &mut Harness<DscpClassifier>, p: PacketBuilder) -> u32 {
    h.classify_one(p).class
}

#[test]
fn readme_example_declares_classes_in_order_and_counters() {
    let h = readme();
    let names = ["voice", "video", "signalling", "bulk", "best-effort"];
    let expected: Vec<(u32, String)> = (1..).zip(names.map(String::from)).collect();
    assert_eq!(h.info().classes, expected);
    assert_eq!(h.info().counters, [&names[..], &["unmatched"]].concat());
    assert_eq!(h.info().name, "dscp-classifier");
}

#[test]
fn readme_example_classifies() {
    let mut h = readme();
    let (voice, video, signalling, bulk, best_effort) = (1, 2, 3, 4, 5);
    let lan = "203.0.113.5";
    let cases = [
        (
            udp("198.51.100.7:4000", "203.0.113.66:4000").dscp(46),
            voice,
            "EF marked",
        ),
        (
            udp(&format!("{lan}:20000"), "203.0.113.66:40000"),
            voice,
            "RTP from the voice subnet",
        ),
        (
            udp("[2001:db8:1:10::5]:40000", "[2001:db8:2::9]:30000"),
            voice,
            "RTP, IPv6, dst port",
        ),
        (
            udp("203.0.113.20:20000", "203.0.113.66:20000"),
            best_effort,
            "RTP ports, other subnet",
        ),
        (
            tcp("203.0.113.20:40000", "203.0.113.66:443").dscp(36),
            video,
            "AF42",
        ),
        (
            tcp("203.0.113.20:5061", "203.0.113.66:40000"),
            signalling,
            "SIP-TLS, src port",
        ),
        (
            tcp("203.0.113.20:40000", "203.0.113.200:873"),
            bulk,
            "rsync to the hub site",
        ),
        (
            tcp("203.0.113.20:40000", "203.0.113.200:9005"),
            bulk,
            "port range",
        ),
        (
            tcp("203.0.113.20:40000", "203.0.113.200:873").direction(Direction::Transit),
            best_effort,
            "bulk is outbound only",
        ),
        (
            tcp("203.0.113.20:40000", "203.0.113.100:873"),
            best_effort,
            "not the hub site",
        ),
        (ip(1, "203.0.113.20", "203.0.113.66"), best_effort, "ICMP"),
    ];
    for (packet, class, why) in cases {
        assert_eq!(class_of(&mut h, packet), class, "{why}");
    }
}

#[test]
fn first_matching_rule_wins() {
    let mut h = readme();
    // EF *and* SIP port: the EF rule comes first.
    let p = udp("203.0.113.20:5060", "203.0.113.66:5060").dscp(46);
    assert_eq!(class_of(&mut h, p), 1);
    // Reorder: now signalling comes first.
    let mut h = with(
        r#"
        classes = ["voice", "signalling"]
        [[rule]]
        class = "signalling"
        port = 5060
        [[rule]]
        class = "voice"
        dscp = "ef"
        "#,
    )
    .unwrap();
    assert_eq!(class_of(&mut h, p), 2);
}

#[test]
fn ports_need_tcp_or_udp_with_ports() {
    let mut h = with(
        r#"
        classes = ["web"]
        [[rule]]
        class = "web"
        dst-port = "80-443"
        "#,
    )
    .unwrap();
    assert_eq!(class_of(&mut h, tcp("192.0.2.1:999", "192.0.2.2:443")), 1);
    assert_eq!(class_of(&mut h, udp("192.0.2.1:999", "192.0.2.2:80")), 1);
    assert_eq!(class_of(&mut h, tcp("192.0.2.1:999", "192.0.2.2:444")), 0);
    assert_eq!(
        class_of(&mut h, tcp("192.0.2.1:443", "192.0.2.2:999")),
        0,
        "src port"
    );
    let fragment = tcp("192.0.2.1:999", "192.0.2.2:443").later_fragment();
    assert_eq!(
        class_of(&mut h, fragment),
        0,
        "a later fragment has no ports"
    );
    // The slot shows port 0 for portless packets; a range containing 0 still must not match.
    let mut h = with("classes = [\"low\"]\n[[rule]]\nclass = \"low\"\nport = \"0-10\"").unwrap();
    assert_eq!(class_of(&mut h, tcp("192.0.2.1:5", "192.0.2.2:999")), 1);
    assert_eq!(class_of(&mut h, ip(47, "192.0.2.1", "192.0.2.2")), 0, "GRE");
    let fragment = tcp("192.0.2.1:5", "192.0.2.2:999").later_fragment();
    assert_eq!(class_of(&mut h, fragment), 0, "a later fragment's port 0");
}

#[test]
fn prefixes_match_by_family() {
    let mut h = with(
        r#"
        classes = ["site"]
        [[rule]]
        class = "site"
        src = ["10.1.0.0/16", "2001:db8:a::/48"]
        "#,
    )
    .unwrap();
    assert_eq!(class_of(&mut h, ip(6, "10.1.200.3", "192.0.2.2")), 1);
    assert_eq!(class_of(&mut h, ip(6, "10.2.0.1", "192.0.2.2")), 0);
    assert_eq!(
        class_of(&mut h, ip(6, "2001:db8:a:ffff::1", "2001:db8::2")),
        1
    );
    assert_eq!(class_of(&mut h, ip(6, "2001:db8:b::1", "2001:db8::2")), 0);
    assert_eq!(
        class_of(&mut h, ip(6, "::ffff:10.1.0.1", "::1")),
        0,
        "no cross-family match"
    );
}

#[test]
fn directions_and_dscp_lists() {
    let mut h = with(
        r#"
        classes = ["af4x-in"]
        [[rule]]
        class = "af4x-in"
        dscp = ["af41", 36, "af43"]
        direction = ["inbound", "transit"]
        "#,
    )
    .unwrap();
    let p = udp("192.0.2.1:1", "192.0.2.2:2");
    assert_eq!(
        class_of(&mut h, p.dscp(34).direction(Direction::Inbound)),
        1
    );
    assert_eq!(
        class_of(&mut h, p.dscp(38).direction(Direction::Transit)),
        1
    );
    assert_eq!(
        class_of(&mut h, p.dscp(36).direction(Direction::Outbound)),
        0
    );
    assert_eq!(
        class_of(&mut h, p.dscp(46).direction(Direction::Inbound)),
        0
    );
    assert_eq!(
        class_of(&mut h, p.dscp(34).ecn(3).direction(Direction::Inbound)),
        1,
        "ECN ignored"
    );
}

#[test]
fn ttl_defaults_to_5000_and_applies_to_no_opinion() {
    let mut h = with("classes = [\"a\"]\n[[rule]]\nclass = \"a\"\nprotocol = \"udp\"").unwrap();
    let v = h.classify([
        udp("192.0.2.1:1", "192.0.2.2:2"),
        tcp("192.0.2.1:1", "192.0.2.2:2"),
    ]);
    assert_eq!(
        v,
        [
            Classify {
                class: 1,
                ttl_ms: 5000
            },
            Classify {
                class: 0,
                ttl_ms: 5000
            }
        ]
    );
    let mut h = with("classes = [\"a\"]\nttl-ms = 0").unwrap();
    assert_eq!(h.classify_one(tcp("192.0.2.1:1", "192.0.2.2:2")).ttl_ms, 0);
}

#[test]
fn counters_per_class_and_unmatched() {
    let mut h = with(
        r#"
        classes = ["udp", "tcp"]
        [[rule]]
        class = "udp"
        protocol = "udp"
        [[rule]]
        class = "tcp"
        protocol = 6
        "#,
    )
    .unwrap();
    let u = udp("192.0.2.1:1", "192.0.2.2:2");
    let t = tcp("192.0.2.1:1", "192.0.2.2:2");
    let i = ip(1, "192.0.2.1", "192.0.2.2");
    h.classify([u, u, t, i, i, i]);
    assert_eq!(
        (h.counter("udp"), h.counter("tcp"), h.counter("unmatched")),
        (2, 1, 3)
    );
    // With a default class, unmatched packets count for it.
    let mut h = with("classes = [\"udp\", \"rest\"]\ndefault-class = \"rest\"\n[[rule]]\nclass = \"udp\"\nprotocol = \"udp\"").unwrap();
    h.classify([u, i, t]);
    assert_eq!(
        (h.counter("udp"), h.counter("rest"), h.counter("unmatched")),
        (1, 2, 0)
    );
}

#[test]
fn config_errors_name_the_key() {
    let cases = [
        ("", "config: missing field `classes`"),
        (
            "classes = []",
            "config key `classes`: declare at least one class",
        ),
        (
            "classes = [\"a\", \"a\"]",
            "config key `classes[1]`: class `a` is declared twice",
        ),
        (
            "classes = [\"unmatched\"]",
            "config key `classes[0]`: `unmatched` is reserved",
        ),
        (
            "classes = [\"\"]",
            "config key `classes[0]`: a class name cannot be empty",
        ),
        (
            "classes = [\"voice\"]\ndefault-class = \"video\"",
            "config key `default-class`: class `video` is not declared in `classes` (voice)",
        ),
        (
            "classes = [\"voice\"]\n[[rule]]\nclass = \"vioce\"\ndscp = 46",
            "config key `rule[0].class`: class `vioce` is not declared in `classes` (voice)",
        ),
        (
            "classes = [\"a\"]\n[[rule]]\nclass = \"a\"\ndscp = \"af44\"",
            "config key `rule[0].dscp`: invalid DSCP `af44`: a DSCP is a number in 0-63",
        ),
        (
            "classes = [\"a\"]\n[[rule]]\nclass = \"a\"\ndst-port = \"9-3\"",
            "config key `rule[0].dst-port`: invalid port or port range `9-3`: the first port is above the last",
        ),
        (
            "classes = [\"a\"]\n[[rule]]\nclass = \"a\"\nsrc = \"10.0.0.0/33\"",
            "config key `rule[0].src`: invalid prefix `10.0.0.0/33`",
        ),
        (
            "classes = [\"a\"]\n[[rule]]\nclass = \"a\"\nprotocol = \"quic\"",
            "config key `rule[0].protocol`: invalid protocol `quic`",
        ),
        (
            "classes = [\"a\"]\n[[rule]]\nclass = \"a\"\ndirection = \"out\"",
            "config key `rule[0].direction`: unknown variant `out`, expected one of `outbound`, `inbound`, `transit`",
        ),
        (
            "classes = [\"a\"]\n[[rule]]\nclass = \"a\"\nprotocol = \"icmp\"\ndst-port = 80",
            "config key `rule[0]`: ports only match TCP and UDP packets",
        ),
        (
            "classes = [\"a\"]\n[[rule]]\nclass = \"a\"\n[[rule]]\nclass = \"a\"\ndscp = 1",
            "config key `rule[0]`: the rule matches every packet",
        ),
        (
            "classes = [\"a\"]\n[[rule]]\nclass = \"a\"\ndscp-value = 1",
            "config key `rule[0].dscp-value`: unknown field `dscp-value`",
        ),
        (
            "classes = [\"a\"]\nttl-ms = -1",
            "config key `ttl-ms`: invalid value: integer `-1`",
        ),
    ];
    for (toml, expected) in cases {
        let err = with(toml).unwrap_err();
        assert!(
            err.starts_with(expected),
            "config:\n{toml}\nerror:    {err}\nexpected: {expected}"
        );
    }
}

#[test]
fn a_catch_all_rule_may_come_last() {
    let mut h = with(
        "classes = [\"a\", \"b\"]\n[[rule]]\nclass = \"a\"\ndscp = 1\n[[rule]]\nclass = \"b\"",
    )
    .unwrap();
    assert_eq!(class_of(&mut h, ip(1, "192.0.2.1", "192.0.2.2")), 2);
}
