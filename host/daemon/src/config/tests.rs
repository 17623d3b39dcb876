//! Config parsing and validation, including the exact error positions operators see.

use super::*;

const SPOKE: &str = r#"version = 1

[daemon]
socket = "/run/mgre/s1.sock"

[tunnel]
name = "mgre0"
role = "spoke"
address = ["198.51.100.11/24", "2001:db8:100::11/64"]
nbma = "192.0.2.11"
key = 42
routes = ["203.0.113.0/24", "2001:db8::/32"]
nhs = "hub"

[[peer]]
name = "hub"
nbma = "192.0.2.1"
map = ["198.51.100.1/32", "203.0.113.192/26"]

[[peer]]
name = "spoke3"
nbma = "192.0.2.13"
encap = "gre-udp"
key = 7
map = ["203.0.113.128/26"]
"#;

fn parse(src: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("site.toml"), src)
}

#[test]
fn valid_spoke() {
    let c = parse(SPOKE).unwrap();
    assert_eq!(c.dataplane.role, Role::Spoke);
    assert_eq!(c.dataplane.nhs, Some(0));
    assert_eq!(
        c.dataplane.peers[0].key,
        Some(42),
        "tunnel key is the default"
    );
    assert_eq!(c.dataplane.peers[1].key, Some(7), "peer key overrides");
    // Smallest path: GRE-in-UDP with key: 1500 - 20 - 8 - 8.
    assert_eq!(c.tun.mtu, 1464);
    assert_eq!(c.dataplane.mss_clamp, Some((1424, 1404)));
    assert!(c.udp_needed);
    assert_eq!(c.routes.len(), 5);
    assert_eq!(c.tun.ipv4, Some(("198.51.100.11".parse().unwrap(), 24)));
}

fn expect_err(src: &str, line: usize, key: &str, needle: &str) {
    let e = parse(src).expect_err("config must be rejected");
    let text = e.to_string();
    assert_eq!(e.position.map(|p| p.0), Some(line), "{text}");
    assert_eq!(e.key.as_deref(), Some(key), "{text}");
    assert!(text.starts_with(&format!("site.toml:{line}:")), "{text}");
    assert!(text.contains(needle), "{text}");
}

#[test]
fn unknown_key_names_line_and_key() {
    expect_err(
        &SPOKE.replace("key = 42", "kee = 42"),
        11,
        "tunnel.kee",
        "unknown field",
    );
}

#[test]
fn bad_prefix_in_map() {
    expect_err(
        &SPOKE.replace("203.0.113.128/26", "203.0.113.128/33"),
        25,
        "peer[1].map[0]",
        "invalid prefix",
    );
}

#[test]
fn unsupported_version() {
    expect_err(
        &SPOKE.replace("version = 1", "version = 2"),
        1,
        "version",
        "unsupported version 2",
    );
}

#[test]
fn nhs_must_name_a_peer() {
    expect_err(
        &SPOKE.replace("nhs = \"hub\"", "nhs = \"hubb\""),
        13,
        "tunnel.nhs",
        "no [[peer]] named `hubb`",
    );
}

#[test]
fn hub_has_no_nhs() {
    expect_err(
        &SPOKE.replace("role = \"spoke\"", "role = \"hub\""),
        13,
        "tunnel.nhs",
        "a hub has no NHS",
    );
}

#[test]
fn bad_encap_and_role_values() {
    expect_err(
        &SPOKE.replace("\"gre-udp\"", "\"vxlan\""),
        23,
        "peer[1].encap",
        "unknown encap",
    );
    expect_err(
        &SPOKE.replace("role = \"spoke\"", "role = \"router\""),
        8,
        "tunnel.role",
        "unknown role",
    );
}

#[test]
fn duplicate_peers_and_family_mismatch() {
    expect_err(
        &SPOKE.replace("name = \"spoke3\"", "name = \"hub\""),
        21,
        "peer[1].name",
        "duplicate peer name",
    );
    expect_err(
        &SPOKE.replace("nbma = \"192.0.2.13\"", "nbma = \"2001:db8::13\""),
        22,
        "peer[1].nbma",
        "same family",
    );
}

#[test]
fn metrics_only_on_loopback() {
    let src = SPOKE.replace(
        "socket = \"/run/mgre/s1.sock\"",
        "socket = \"/run/mgre/s1.sock\"\nmetrics = \"192.0.2.11:9100\"",
    );
    expect_err(&src, 5, "daemon.metrics", "loopback");
}

#[test]
fn mtu_override_and_ipv6_minimum() {
    let c = parse(&SPOKE.replace("key = 42", "key = 42\nmtu = 1400")).unwrap();
    assert_eq!(c.tun.mtu, 1400);
    expect_err(
        &SPOKE.replace("key = 42", "key = 42\nmtu = 1200"),
        12,
        "tunnel.mtu",
        "IPv6 minimum",
    );
}

#[test]
fn syntax_error_has_a_position() {
    let e = parse("version = 1\n[daemon\n").expect_err("syntax error");
    assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
}

const PLUGINS: &str = r#"
[plugins]
dir = "plugins"
memory-limit-mib = 16

[[plugin]]
name = "qos"
file = "voip_qos.wasm"
failure = "closed"
deadline-ms = 2
config = { rtp-ports = [16384, 32767], voice-dscp = 46 }

[[plugin]]
name = "policy"
file = "spoke_policy.wasm"
hooks = ["route"]
"#;

#[test]
fn plugin_sections() {
    let c = Config::parse(
        Path::new("/etc/mgre/hub.toml"),
        &format!("{SPOKE}{PLUGINS}"),
    )
    .unwrap();
    let p = c.plugins.unwrap();
    assert_eq!(p.dir, Path::new("/etc/mgre/plugins"));
    assert!(p.watch);
    assert_eq!(p.plugins.len(), 2);
    let qos = &p.plugins[0];
    assert_eq!(qos.file, Path::new("/etc/mgre/plugins/voip_qos.wasm"));
    assert_eq!(qos.failure, Failure::Closed);
    assert_eq!(qos.memory_limit_bytes, 16 << 20);
    assert_eq!(qos.deadline, std::time::Duration::from_millis(2));
    let cfg: serde_json::Value = serde_json::from_str(&qos.config_json).unwrap();
    assert_eq!(cfg["voice-dscp"], 46);
    assert_eq!(p.plugins[1].hooks, Some(vec![Hook::Route]));
    assert_eq!(p.plugins[1].failure, Failure::Open);
    assert_eq!(p.plugins[1].config_json, "{}");
}

#[test]
fn plugin_errors() {
    let src = format!("{SPOKE}{PLUGINS}");
    expect_err(
        &src.replace("\"route\"]", "\"routing\"]"),
        41,
        "plugin[1].hooks[0]",
        "unknown variant",
    );
    expect_err(
        &src.replace("voip_qos.wasm", "../voip_qos.wasm"),
        33,
        "plugin[0].file",
        "inside plugins.dir",
    );
    expect_err(
        &src.replace("failure = \"closed\"", "failure = \"maybe\""),
        34,
        "plugin[0].failure",
        "unknown variant",
    );
    expect_err(
        &src.replace("deadline-ms = 2", "deadline-ms = 0"),
        35,
        "plugin[0].deadline-ms",
        "must be 1..=",
    );
    expect_err(
        &src.replace("name = \"policy\"", "name = \"qos\""),
        39,
        "plugin[1].name",
        "used twice",
    );
}

#[test]
fn workers_and_offload_default_and_parse() {
    let c = parse(SPOKE).unwrap();
    assert_eq!((c.workers, c.tun.queues, c.tun.offload), (1, 1, true));
    let src = SPOKE
        .replace("[daemon]\n", "[daemon]\nworkers = 4\n")
        .replace("nhs = \"hub\"\n", "nhs = \"hub\"\noffload = false\n");
    let c = parse(&src).unwrap();
    assert_eq!((c.workers, c.tun.queues, c.tun.offload), (4, 4, false));
}

#[test]
fn workers_out_of_range_are_rejected() {
    for bad in ["0", "65"] {
        let src = SPOKE.replace("[daemon]\n", &format!("[daemon]\nworkers = {bad}\n"));
        expect_err(&src, 4, "daemon.workers", "between 1 and 64");
    }
}

#[test]
fn sequence_numbers_need_a_single_worker() {
    let src = SPOKE
        .replace("[daemon]\n", "[daemon]\nworkers = 2\n")
        .replace("key = 42\n", "key = 42\nsequence = true\n");
    expect_err(&src, 4, "daemon.workers", "need workers = 1");
}
