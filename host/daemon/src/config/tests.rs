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

const NHRP_SPOKE: &str = r#"version = 1

[daemon]
socket = "/run/mgre/s1.sock"

[tunnel]
name = "mgre0"
role = "spoke"
address = ["198.51.100.11/24", "2001:db8:100::11/64"]
nbma = "192.0.2.11"
key = 42
routes = ["203.0.113.0/24"]

[nhrp]
holdtime = 300
secret = "dmvpn"
register = ["203.0.113.0/26", "2001:db8:1::/64"]

[[nhrp.nhs]]
name = "hub-a"
nbma = "192.0.2.1"
address = ["198.51.100.1", "2001:db8:100::1"]
priority = 2

[[nhrp.nhs]]
name = "hub-b"
nbma = "192.0.2.2"
encap = "gre-udp"
priority = 1
"#;

const NHRP_HUB: &str = r#"version = 1

[daemon]
socket = "/run/mgre/hub.sock"

[tunnel]
name = "mgre0"
role = "hub"
address = ["198.51.100.1/24"]
nbma = "192.0.2.1"
key = 42
routes = ["203.0.113.0/24"]

[nhrp]
holdtime = 600
allowed-nbma = ["192.0.2.0/24"]
max-entries = 100
"#;

#[test]
fn nhrp_spoke_gets_its_nhs_as_peers_and_defaults_to_the_preferred_one() {
    let c = parse(NHRP_SPOKE).unwrap();
    let n = c.nhrp.as_ref().unwrap();
    assert_eq!(n.holdtime.get(), 300);
    assert_eq!(n.secret.as_deref(), Some(&b"dmvpn"[..]));
    assert_eq!(n.register.len(), 2);
    let names: Vec<&str> = c.dataplane.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["hub-a", "hub-b"]);
    assert_eq!(c.dataplane.peers[1].encap, Encap::GreUdp);
    assert_eq!(c.dataplane.peers[0].key, Some(42));
    // hub-b has the lower priority value: traffic defaults to it until NHRP says otherwise.
    assert_eq!(c.dataplane.nhs, Some(1));
    // The NHS's overlay addresses are host routes to it.
    assert!(
        c.dataplane
            .map
            .iter()
            .any(|(p, id)| p.to_string() == "198.51.100.1/32" && *id == 0)
    );
    assert!(c.udp_needed);
    assert!(c.dataplane.open_nhrp.is_none());
}

#[test]
fn nhrp_hub_accepts_unknown_senders_and_sizes_peer_slots() {
    let c = parse(NHRP_HUB).unwrap();
    assert_eq!(c.dataplane.open_nhrp.map(|o| o.key), Some(Some(42)));
    assert_eq!(c.dataplane.peer_capacity, 100);
    assert!(
        c.udp_needed,
        "a hub listens for GRE-in-UDP registrations too"
    );
    let n = c.nhrp.unwrap();
    assert_eq!(n.allowed_nbma[0].to_string(), "192.0.2.0/24");
    assert_eq!(n.network_id, 1, "default network-id");
    let c = parse(&NHRP_HUB.replace("[nhrp]\n", "[nhrp]\nnetwork-id = 4000000000\n")).unwrap();
    assert_eq!(c.nhrp.unwrap().network_id, 4_000_000_000);
}

#[test]
fn nhrp_regional_hub_registers_with_its_core_hub() {
    let c = parse(&format!(
        "{}register = [\"203.0.113.0/25\"]\n\n[[nhrp.nhs]]\nname = \"core\"\nnbma = \"192.0.2.100\"\naddress = [\"198.51.100.100\"]\n",
        NHRP_HUB
    ))
    .unwrap();
    let n = c.nhrp.as_ref().unwrap();
    assert_eq!(n.register[0].to_string(), "203.0.113.0/25");
    assert_eq!(n.nhs.len(), 1);
    // The core hub is a configured peer and the default route; spokes still get slots.
    assert_eq!(c.dataplane.peers[0].name, "core");
    assert_eq!(c.dataplane.nhs, Some(0));
    assert_eq!(c.dataplane.peer_capacity, 101);
    assert!(c.dataplane.open_nhrp.is_some());
}

#[test]
fn nhrp_errors() {
    expect_err(
        &NHRP_SPOKE.replace(
            "routes = [\"203.0.113.0/24\"]",
            "routes = []\nnhs = \"hub-a\"",
        ),
        13,
        "tunnel.nhs",
        "remove `tunnel.nhs`",
    );
    expect_err(
        &NHRP_SPOKE.replace("holdtime = 300", "holdtime = 0"),
        15,
        "nhrp.holdtime",
        "at least 1 second",
    );
    expect_err(
        &NHRP_SPOKE.replace("nbma = \"192.0.2.2\"", "nbma = \"2001:db8::2\""),
        27,
        "nhrp.nhs[1].nbma",
        "not of the family",
    );
    expect_err(
        &NHRP_SPOKE.replace("nbma = \"192.0.2.2\"", "nbma = \"192.0.2.1\""),
        27,
        "nhrp.nhs[1].nbma",
        "already used",
    );
    expect_err(
        &NHRP_SPOKE.replace(
            "secret = \"dmvpn\"",
            &format!("secret = \"{}\"", "x".repeat(65)),
        ),
        16,
        "nhrp.secret",
        "1 to 64 bytes",
    );
    expect_err(
        &NHRP_SPOKE.replace(", \"2001:db8:100::11/64\"", ""),
        17,
        "nhrp.register[1]",
        "no address of its family",
    );
    expect_err(
        &NHRP_HUB.replace("max-entries = 100", "register = [\"203.0.113.0/26\"]"),
        17,
        "nhrp.register",
        "only with core hubs",
    );
    expect_err(
        &NHRP_HUB.replace("[nhrp]\n", "[nhrp]\nnetwork-id = 0\n"),
        15,
        "nhrp.network-id",
        "1 to 4294967295",
    );
    expect_err(
        &NHRP_HUB.replace("192.0.2.0/24\"]", "2001:db8::/32\"]"),
        16,
        "nhrp.allowed-nbma[0]",
        "not of the family",
    );
    expect_err(
        &NHRP_HUB.replace("key = 42", "key = 42\nsequence = true"),
        12,
        "tunnel.sequence",
        "cannot be used with [nhrp]",
    );
    expect_err(
        &NHRP_SPOKE.replace("[[nhrp.nhs]]", "[[nhrp.nhz]]"),
        19,
        "nhrp.nhz",
        "unknown field",
    );
}
