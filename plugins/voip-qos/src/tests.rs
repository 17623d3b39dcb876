//! Native unit tests of classification precedence, marks per class, overrides and config errors, through the SDK harness.

use mgre_sdk::abi::{Classify, Mark};
use mgre_sdk::testing::{self, Harness, PacketBuilder, ip, tcp, udp};
use mgre_sdk::{Hooks, Level};

use super::VoipQos;

const VOICE: u32 = 1;
const SIGNALLING: u32 = 2;
const VIDEO: u32 = 3;
const BULK: u32 = 4;
const BEST_EFFORT: u32 = 0;

fn defaults() -> Harness<VoipQos> {
    Harness::init(testing::context().build()).expect("an empty config is valid")
}

fn with(toml: &str) -> Result<Harness<VoipQos>, String> {
    Harness::init(testing::context().config_toml(toml).build())
}

fn readme() -> Harness<VoipQos> {
    let config = testing::readme_config(include_str!("../README.md"), "voip-qos");
    Harness::init(testing::context().config(&config).build()).expect("the README example is valid")
}

fn class_of(h: &mut Harness<VoipQos>, p: PacketBuilder) -> u32 {
    h.classify_one(p).class
}

fn mark(dscp: Option<u8>, priority: Option<u8>, rate_class: u16) -> Mark {
    Mark {
        inner_dscp: dscp,
        outer_dscp: dscp,
        outer_ecn: None,
        priority,
        rate_class,
        ttl_ms: 5000,
    }
}

#[test]
fn declares_classify_and_mark_with_four_classes() {
    let h = defaults();
    assert_eq!(h.info().hooks, Hooks::CLASSIFY | Hooks::MARK);
    let classes: Vec<(u32, &str)> = h
        .info()
        .classes
        .iter()
        .map(|(i, n)| (*i, n.as_str()))
        .collect();
    assert_eq!(
        classes,
        [(1, "voice"), (2, "signalling"), (3, "video"), (4, "bulk")]
    );
    assert_eq!(
        h.info().counters,
        ["voice", "signalling", "video", "bulk", "best-effort"]
    );
}

#[test]
fn default_classification() {
    let mut h = defaults();
    let cases = [
        (
            udp("192.0.2.10:20000", "198.51.100.7:31000"),
            VOICE,
            "RTP both ports",
        ),
        (
            udp("192.0.2.10:40000", "198.51.100.7:16384"),
            VOICE,
            "RTP dst port, range start",
        ),
        (
            udp("192.0.2.10:32767", "198.51.100.7:40000"),
            VOICE,
            "RTP src port, range end",
        ),
        (
            udp("192.0.2.10:40000", "198.51.100.7:32768"),
            BEST_EFFORT,
            "above the RTP range",
        ),
        (
            tcp("192.0.2.10:20000", "198.51.100.7:20000"),
            BEST_EFFORT,
            "RTP ports over TCP",
        ),
        (
            udp("192.0.2.10:5060", "198.51.100.7:5060"),
            SIGNALLING,
            "SIP/UDP",
        ),
        (
            tcp("192.0.2.10:40000", "198.51.100.7:5060"),
            SIGNALLING,
            "SIP/TCP",
        ),
        (
            tcp("[2001:db8::1]:5061", "[2001:db8::2]:40000"),
            SIGNALLING,
            "SIP-TLS reply, IPv6",
        ),
        (
            udp("192.0.2.10:40000", "198.51.100.7:5061"),
            BEST_EFFORT,
            "TLS port over UDP",
        ),
        (udp("192.0.2.10:5004", "198.51.100.7:40000"), VIDEO, "video"),
        (tcp("192.0.2.10:40000", "198.51.100.7:873"), BULK, "rsync"),
        (tcp("192.0.2.10:20", "198.51.100.7:40000"), BULK, "FTP data"),
        (
            udp("192.0.2.10:40000", "198.51.100.7:873"),
            BEST_EFFORT,
            "bulk ports are TCP",
        ),
        (
            tcp("192.0.2.10:40000", "198.51.100.7:443").dscp(8),
            BULK,
            "already CS1",
        ),
        (
            ip(1, "192.0.2.10", "198.51.100.7").dscp(8),
            BULK,
            "CS1 without ports",
        ),
        (
            tcp("192.0.2.10:40000", "198.51.100.7:443").dscp(46),
            BEST_EFFORT,
            "EF is not trusted",
        ),
        (ip(1, "192.0.2.10", "198.51.100.7"), BEST_EFFORT, "ICMP"),
        (
            udp("192.0.2.10:20000", "198.51.100.7:20000").later_fragment(),
            BEST_EFFORT,
            "fragment",
        ),
    ];
    for (packet, class, why) in cases {
        assert_eq!(class_of(&mut h, packet), class, "{why}");
    }
}

#[test]
fn precedence_signalling_then_video_then_voice() {
    let mut h = with("video-ports = \"20000-20099\"").unwrap();
    assert_eq!(
        class_of(&mut h, udp("192.0.2.1:20050", "192.0.2.2:30000")),
        VIDEO,
        "video inside the RTP range"
    );
    assert_eq!(
        class_of(&mut h, udp("192.0.2.1:20100", "192.0.2.2:30000")),
        VOICE
    );
    assert_eq!(
        class_of(&mut h, udp("192.0.2.1:5060", "192.0.2.2:20050")),
        SIGNALLING
    );
    let mut h = with("bulk-ports = 5060").unwrap();
    assert_eq!(
        class_of(&mut h, tcp("192.0.2.1:5060", "192.0.2.2:40000")),
        SIGNALLING
    );
    // Port rules come before DSCP-based bulk.
    assert_eq!(
        class_of(&mut h, udp("192.0.2.1:20000", "192.0.2.2:40000").dscp(8)),
        VOICE
    );
}

#[test]
fn default_marks_per_class() {
    let mut h = defaults();
    let packets = [
        udp("192.0.2.1:20000", "192.0.2.2:20000"),
        udp("192.0.2.1:5060", "192.0.2.2:5060"),
        udp("192.0.2.1:5004", "192.0.2.2:40000"),
        tcp("192.0.2.1:40000", "192.0.2.2:21"),
        tcp("192.0.2.1:40000", "192.0.2.2:443").dscp(46),
    ];
    let marks = h.mark(packets);
    assert_eq!(
        marks,
        [
            mark(Some(46), Some(6), 1),
            mark(Some(24), Some(4), 2),
            mark(Some(34), Some(4), 3),
            mark(Some(8), Some(1), 4),
            mark(Some(0), None, 0),
        ]
    );
}

#[test]
fn mark_ignores_the_class_a_previous_classifier_set() {
    let mut h = defaults();
    let rtp = udp("192.0.2.1:20000", "192.0.2.2:20000");
    assert_eq!(h.mark_one(rtp.class(BULK)), h.mark_one(rtp));
    assert_eq!(h.mark_one(rtp.class(99)).inner_dscp, Some(46));
}

#[test]
fn readme_example_overrides_ports_and_marks() {
    let mut h = readme();
    assert_eq!(
        class_of(&mut h, udp("192.0.2.1:50050", "192.0.2.2:40000")),
        VIDEO
    );
    assert_eq!(
        class_of(&mut h, tcp("192.0.2.1:40000", "192.0.2.2:9005")),
        BULK
    );
    assert_eq!(
        class_of(&mut h, ip(17, "192.0.2.1", "192.0.2.2").dscp(1)),
        BULK,
        "LE"
    );
    // best-effort keeps the packet's DSCP.
    let m = h.mark_one(tcp("192.0.2.1:40000", "192.0.2.2:443").dscp(18));
    assert_eq!(m, mark(None, None, 0));
    let started = h.logs();
    assert!(
        started.iter().any(|(level, line)| *level == Level::Info
            && line.contains("voice (class 1, rate class 1): dscp ef, priority 6, 2000 kbit/s")
            && line.contains(
                "best-effort (class 0, rate class 0): dscp keep, priority none, no rate"
            )),
        "{started:?}"
    );
}

#[test]
fn config_overrides_dscp_priority_and_ttl() {
    let mut h = with(
        r#"
        ttl-ms = 100
        voice = { dscp = 40, priority = 7 }
        bulk = { dscp = "af11" }
        best-effort = { dscp = 0, priority = 0 }
        "#,
    )
    .unwrap();
    let rtp = udp("192.0.2.1:20000", "192.0.2.2:20000");
    assert_eq!(
        h.classify_one(rtp),
        Classify {
            class: VOICE,
            ttl_ms: 100
        }
    );
    let m = h.mark_one(rtp);
    assert_eq!(
        (m.inner_dscp, m.outer_dscp, m.priority, m.ttl_ms),
        (Some(40), Some(40), Some(7), 100)
    );
    let m = h.mark_one(tcp("192.0.2.1:40000", "192.0.2.2:873"));
    assert_eq!(
        (m.inner_dscp, m.priority),
        (Some(10), Some(1)),
        "priority keeps its default"
    );
    let m = h.mark_one(ip(1, "192.0.2.1", "192.0.2.2"));
    assert_eq!((m.inner_dscp, m.priority), (Some(0), Some(0)));
}

#[test]
fn empty_port_list_disables_a_rule() {
    let mut h = with("rtp-ports = []\nbulk-dscp = []").unwrap();
    assert_eq!(
        class_of(&mut h, udp("192.0.2.1:20000", "192.0.2.2:20000")),
        BEST_EFFORT
    );
    assert_eq!(
        class_of(&mut h, ip(1, "192.0.2.1", "192.0.2.2").dscp(8)),
        BEST_EFFORT
    );
}

#[test]
fn counters_count_classify_calls_per_class() {
    let mut h = defaults();
    let rtp = udp("192.0.2.1:20000", "192.0.2.2:20000");
    let other = ip(1, "192.0.2.1", "192.0.2.2");
    h.classify([rtp, rtp, other]);
    h.mark([rtp, other]);
    assert_eq!(
        (
            h.counter("voice"),
            h.counter("best-effort"),
            h.counter("bulk")
        ),
        (2, 1, 0)
    );
}

#[test]
fn config_errors_name_the_key() {
    let cases = [
        (
            "voice = { priority = 9 }",
            "config key `voice.priority`: 9 is not a socket priority (0-7)",
        ),
        (
            "best-effort = { priority = 8 }",
            "config key `best-effort.priority`: 8 is not a socket priority",
        ),
        (
            "voice = { dscp = \"ef2\" }",
            "config key `voice.dscp`: invalid DSCP `ef2`: a DSCP is a number",
        ),
        (
            "video = { dscp = 64 }",
            "config key `video.dscp`: invalid DSCP 64: not in 0-63",
        ),
        (
            "rtp-ports = \"32767-16384\"",
            "config key `rtp-ports`: invalid port or port range `32767-16384`",
        ),
        (
            "sip-ports = [5060, 70000]",
            "config key `sip-ports[1]`: invalid port or port range 70000",
        ),
        (
            "bulk-dscp = \"cs9\"",
            "config key `bulk-dscp`: invalid DSCP `cs9`",
        ),
        (
            "voice = { rate = 1 }",
            "config key `voice.rate`: unknown field `rate`",
        ),
        (
            "rtp_ports = 1",
            "config key `rtp_ports`: unknown field `rtp_ports`",
        ),
        (
            "ttl-ms = \"5s\"",
            "config key `ttl-ms`: invalid type: string \"5s\", expected u32",
        ),
    ];
    for (toml, expected) in cases {
        let err = with(toml).unwrap_err();
        assert!(
            err.starts_with(expected),
            "config: {toml}\nerror:    {err}\nexpected: {expected}"
        );
    }
}
