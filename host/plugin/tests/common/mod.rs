//! Shared helpers of the plugin-host tests and benches: builds the fixture guests in
//! `tests/fixtures/` and the example plugins of `plugins/` (real wasm, once per process) and
//! makes specs and packet batches.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use mgre_plugin::{FailurePolicy, PluginSpec, QuarantinePolicy, Runtime, RuntimeConfig};
use mgre_sdk::abi::{Direction, PACKET_SLOT, PacketMeta};

/// The fixture guests.
pub const FIXTURES: [&str; 6] = ["good", "trap", "spin", "hog", "recurse", "otherworld"];

/// Path of the built core module of fixture `name`, building all fixtures on first use.
pub fn fixture(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(build_fixtures);
    dir.join(format!("fixture_{name}.wasm"))
}

/// The bytes of fixture `name`.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture was built")
}

/// The example plugins of `plugins/`, built together (the list and the command are those of
/// `tests/src/wasm.rs`, so both share the artifacts in `target/plugins`).
pub const EXAMPLE_PLUGINS: [&str; 5] = [
    "dscp-classifier",
    "voip-qos",
    "spoke-policy",
    "nhrp-admission",
    "shortcut-policy",
];

/// Path of the built core module of example plugin `package`, building all of them on first
/// use.
pub fn example_plugin(package: &str) -> PathBuf {
    assert!(
        EXAMPLE_PLUGINS.contains(&package),
        "{package} is no example plugin"
    );
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(build_example_plugins);
    dir.join(format!("{}.wasm", package.replace('-', "_")))
}

fn build_example_plugins() -> PathBuf {
    let target = target_dir().join("plugins");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "--quiet",
        "--release",
        "--target",
        "wasm32-unknown-unknown",
    ]);
    for package in EXAMPLE_PLUGINS {
        cmd.args(["-p", package]);
    }
    let status = cmd
        .arg("--target-dir")
        .arg(&target)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .status()
        .expect("run cargo to build the example plugins");
    assert!(status.success(), "building the example plugins failed");
    target.join("wasm32-unknown-unknown/release")
}

fn build_fixtures() -> PathBuf {
    let target = target_dir().join("fixtures");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in FIXTURES {
        let manifest = root.join(name).join("Cargo.toml");
        let status = Command::new(&cargo)
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
            ])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("run cargo to build the wasm fixtures");
        assert!(status.success(), "building fixture {name} failed");
    }
    target.join("wasm32-unknown-unknown/release")
}

/// The workspace's target directory (`$CARGO_TARGET_DIR` if set).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return dir.into();
    }
    match option_env!("CARGO_TARGET_TMPDIR") {
        Some(tmp) => Path::new(tmp).parent().expect("target/tmp").to_owned(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

/// A scratch directory under the target directory (private, as the cache requires).
pub fn scratch(name: &str) -> PathBuf {
    let base = target_dir().join("tmp/mgre-plugin-tests");
    std::fs::create_dir_all(&base).expect("create scratch base");
    let dir = tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(&base)
        .expect("create scratch dir");
    dir.keep()
}

/// A runtime with a shared artifact cache (persisting across runs, like production) and a
/// quick quarantine for tests.
pub fn runtime() -> Runtime {
    Runtime::new(config()).expect("runtime")
}

/// The configuration `runtime` uses.
pub fn config() -> RuntimeConfig {
    let cache = target_dir().join("tmp/mgre-plugin-test-cache");
    RuntimeConfig {
        cache_dir: Some(cache),
        init_deadline: Duration::from_millis(200),
        quarantine: QuarantinePolicy {
            faults: 3,
            window: Duration::from_secs(10),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            reset_after: Duration::from_secs(60),
        },
        ..RuntimeConfig::default()
    }
}

/// A fail-open spec for fixture `fixture` named `name` with `config_json`.
pub fn spec(name: &str, fixture_name: &str, config_json: &str) -> PluginSpec {
    spec_at(name, fixture(fixture_name), config_json)
}

/// A fail-open spec for the file at `path`.
pub fn spec_at(name: &str, path: PathBuf, config_json: &str) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        path,
        hooks: None,
        failure: FailurePolicy::Open,
        memory_limit_bytes: 8 << 20,
        deadline: Duration::from_millis(20),
        config_json: config_json.into(),
    }
}

/// A batch of packet slots: one IPv4 packet per `(protocol, dst_port)`.
pub fn batch(packets: &[(u8, u16)]) -> Vec<u8> {
    let mut slots = vec![0u8; packets.len() * PACKET_SLOT];
    for ((protocol, dst_port), slot) in packets.iter().zip(slots.chunks_exact_mut(PACKET_SLOT)) {
        let meta = PacketMeta {
            direction: Direction::Outbound,
            protocol: *protocol,
            traffic_class: 0,
            src_port: 40000,
            dst_port: *dst_port,
            length: 100,
            tcp_flags: 0,
            later_fragment: false,
            dont_fragment: true,
            ingress_peer: None,
            egress_peer: Some(1),
            gre_key: None,
            class: 0,
            src: IpAddr::from([10, 0, 0, 1]),
            dst: IpAddr::from([10, 0, 1, 1]),
        };
        meta.write(slot.try_into().expect("64-byte chunk"));
    }
    slots
}

/// UDP, TCP and ICMP protocol numbers.
pub const UDP: u8 = 17;
/// TCP.
pub const TCP: u8 = 6;
/// ICMP.
pub const ICMP: u8 = 1;
/// The destination port that makes hostile fixtures misbehave in `classify`.
pub const TRIGGER: u16 = 666;
