//! Hostile and broken plugins are contained by the real daemon: a plugin that traps, spins
//! past its deadline, exhausts its memory cap or its stack is counted under the right fault,
//! quarantined, and its failure policy applies — fail-open forwards everything, fail-closed
//! drops the batches it failed on (`plugin-fail-closed`) and traffic recovers — while the
//! daemon keeps running. A plugin of the wrong world or one that faults in `init` is
//! reported as failed to load and traffic flows. A plugin file truncated during a reload
//! leaves the previous version serving until a complete file arrives.
//!
//! The hostile guests are the fixtures of `host/plugin/tests/fixtures/` (they misbehave on a
//! packet to port 666, or in `init` with "init" in their config), built on first use.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mgre_e2e::{
    Failure, PluginEntry, Site, SiteId, Topology, TopologyBuilder, counter, fixture_wasm, ping,
    plugin_counter, plugin_number, plugin_wasm, udp_deliveries, wait_until, with_custom_section,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

#[test]
fn a_trapping_plugin_is_contained() -> Result<()> {
    hostile("trap", "htrap", "traps")
}

#[test]
fn a_spinning_plugin_hits_its_deadline() -> Result<()> {
    hostile("spin", "hspin", "deadline_hits")
}

#[test]
fn a_memory_hog_hits_its_cap() -> Result<()> {
    hostile("hog", "hhog", "memory_limit_hits")
}

#[test]
fn a_recursing_plugin_is_contained() -> Result<()> {
    hostile("recurse", "hrec", "traps")
}

#[test]
fn a_plugin_of_another_world_fails_to_load_and_traffic_flows() -> Result<()> {
    failed_to_load("otherworld", "hworld", "", "link")
}

#[test]
fn a_plugin_faulting_in_init_fails_to_load_and_traffic_flows() -> Result<()> {
    failed_to_load("trap", "hinit", "init = 1", "init")
}

#[test]
fn a_fail_closed_plugin_that_never_loaded_blocks_traffic() -> Result<()> {
    let wasm = fs::read(fixture_wasm("trap")?)?;
    let entry = hostile_entry(Failure::Closed).config("init = 1");
    let topo = started(
        Topology::builder("hclo")
            .spokes(1)
            .plugin(SiteId::Hub, entry),
        &wasm,
    )?;
    let (hub, s1) = (topo.hub(), topo.spoke(1));
    let doc = hub.daemon().plugins()?;
    ensure!(
        doc["closed_unavailable"] == serde_json::json!([PLUGIN]),
        "{doc:#}"
    );
    let before = counter(&hub.daemon().stats()?, "/drops/plugin-fail-closed")?;
    ensure!(
        !ping(&s1.host, hub.addrs.host_v4.into(), 3),
        "a fail-closed plugin that never loaded let traffic through"
    );
    let after = counter(&hub.daemon().stats()?, "/drops/plugin-fail-closed")?;
    ensure!(
        after >= before + 3,
        "plugin-fail-closed {before} -> {after}"
    );
    ensure!(hub.daemon().is_alive(), "the hub daemon died");
    Ok(())
}

#[test]
fn a_truncated_plugin_file_keeps_the_old_version_serving() -> Result<()> {
    let full = fs::read(plugin_wasm("dscp-classifier")?)?;
    let topo = started(
        Topology::builder("htrunc").spokes(1).plugin(
            SiteId::Hub,
            PluginEntry::new(PLUGIN, FILE).config(
                r#"classes = ["probe"]
ttl-ms = 0

[[plugin.config.rule]]
class = "probe"
protocol = "udp"
dst-port = 7000
"#,
            ),
        ),
        &full,
    )?;
    let (hub, s1) = (topo.hub(), topo.spoke(1));
    let path = hub.plugin_path(FILE);
    let first = ensure_active(hub)?;
    let (generation, hash) = serving(&first)?;
    ensure!(
        hash == sha256_hex(&full),
        "hash {hash} is not the file's sha256"
    );
    ensure_probes_classified(&topo)?;

    // 1. Overwritten in place with its first half: the reload fails, the old one serves.
    fs::write(&path, &full[..full.len() / 2])?;
    let failed = hub.daemon().wait_plugin(PLUGIN, RELOAD_WAIT, |s| {
        plugin_number(s, "reload_failures").is_ok_and(|n| n >= 1)
    })?;
    let doc = hub.daemon().plugins()?;
    ensure!(
        serving(&failed)? == (generation, hash.clone()),
        "a truncated file replaced the serving version: {failed:#}"
    );
    ensure!(
        failed["state"] == "failed-to-load (previous version serving)",
        "state after truncation: {failed:#}"
    );
    ensure!(
        doc["reload_failures"].as_u64() >= Some(1)
            && doc["load_errors"].as_array().is_some_and(|e| !e.is_empty()),
        "truncation not reported: {doc:#}"
    );
    ensure_probes_classified(&topo)?;
    // An explicit reload reads the same half file: fails (non-zero exit), old one serves.
    let out = hub.daemon().reload()?;
    ensure!(
        !out.status.success(),
        "`mgre reload` succeeded on a truncated plugin file: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let after_reload = hub.daemon().plugin(PLUGIN)?;
    ensure!(
        serving(&after_reload)? == (generation, hash.clone())
            && plugin_number(&after_reload, "reload_failures")?
                > plugin_number(&failed, "reload_failures")?,
        "after `mgre reload`: {after_reload:#}"
    );

    // 2. The complete file (a new version: same code, one custom section more) arrives.
    let second = with_custom_section(&full, SECTION, b"1")?;
    fs::write(&path, &second)?;
    let replaced = wait_for_version(hub, generation, &second)?;
    let (generation, _) = serving(&replaced)?;
    ensure!(replaced["state"] == "active", "{replaced:#}");
    ensure!(
        hub.daemon().plugins()?["load_errors"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "load errors remain after a good file"
    );
    ensure_probes_classified(&topo)?;

    // 3. Truncate, then write slowly in chunks with pauses longer than the watcher's quiet
    //    period: every partial state the watcher sees fails; only the whole file serves.
    let third = with_custom_section(&full, SECTION, b"2")?;
    let failures_before = plugin_number(&hub.daemon().plugin(PLUGIN)?, "reload_failures")?;
    let mut file = fs::File::create(&path)?; // truncates
    let mut served = Vec::new();
    for chunk in third.chunks(third.len().div_ceil(SLOW_CHUNKS)) {
        file.write_all(chunk)?;
        file.flush()?;
        let pause_end = Instant::now() + SLOW_PAUSE;
        while Instant::now() < pause_end {
            served.push(serving(&hub.daemon().plugin(PLUGIN)?)?);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(file);
    let last = wait_for_version(hub, generation, &third)?;
    let unexpected: Vec<_> = served
        .iter()
        .filter(|(g, h)| *g != generation && *h != sha256_hex(&third))
        .collect();
    ensure!(
        unexpected.is_empty(),
        "a partial file served during the slow write: {unexpected:?}"
    );
    ensure!(
        plugin_number(&last, "reload_failures")? > failures_before,
        "the watcher never tried a partial file (pauses {SLOW_PAUSE:?}): {last:#}"
    );
    ensure_probes_classified(&topo)?;
    ensure!(
        ping(&s1.host, hub.addrs.host_v4.into(), 2),
        "traffic stopped"
    );
    Ok(())
}

/// Fixture `fixture` on the hub, fail-open, then (after a config change and `mgre reload`)
/// fail-closed; `kind` is the status field its fault is counted in.
fn hostile(fixture: &str, tag: &str, kind: &str) -> Result<()> {
    let wasm = fs::read(fixture_wasm(fixture)?)?;
    let entry = hostile_entry(Failure::Open);
    let topo = started(
        Topology::builder(tag).spokes(1).plugin(SiteId::Hub, entry),
        &wasm,
    )?;
    let (hub, s1) = (topo.hub(), topo.spoke(1));
    let to: IpAddr = hub.addrs.host_v4.into();
    ensure_active(hub)?;
    ensure!(ping(&s1.host, to, 2), "no traffic before any trigger");

    // Fail-open: triggers and normal traffic alike are delivered.
    let delivered = udp_deliveries(
        &s1.host,
        &hub.host,
        to,
        &[TRIGGER, NORMAL],
        TRIGGERS,
        TRIGGER_GAP,
    )
    .with_context(|| topo.logs())?;
    ensure!(
        delivered.values().all(|&n| n == TRIGGERS),
        "{fixture}, fail-open: deliveries per port {delivered:?}, want {TRIGGERS} each\n{}",
        topo.logs()
    );
    let status = hub.daemon().wait_plugin(PLUGIN, STATUS_WAIT, |s| {
        plugin_number(s, kind).is_ok_and(|n| n >= QUARANTINE_FAULTS)
            && plugin_number(s, "quarantines").is_ok_and(|n| n >= 1)
    })?;
    let other_faults: u64 = ["traps", "deadline_hits", "memory_limit_hits"]
        .into_iter()
        .filter(|field| *field != kind)
        .map(|field| plugin_number(&status, field).unwrap_or(0))
        .sum();
    ensure!(
        other_faults == 0,
        "{fixture}: faults counted under the wrong kind: {status:#}"
    );
    ensure!(hub.daemon().is_alive(), "the hub daemon died");
    ensure!(
        ping(&s1.host, to, 2),
        "{fixture}: ping after fail-open faults"
    );

    // Fail-closed, same plugin: the config changes, `mgre reload` loads a fresh version.
    let config = fs::read_to_string(&hub.config)?;
    fs::write(
        &hub.config,
        config.replace("failure = \"open\"", "failure = \"closed\""),
    )?;
    let out = hub.daemon().reload()?;
    ensure!(
        out.status.success(),
        "mgre reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = hub.daemon().plugin(PLUGIN)?;
    ensure!(
        plugin_number(&fresh, kind)? == 0 && fresh["state"] == "active",
        "{fixture}: reload did not load a fresh fail-closed version: {fresh:#}"
    );
    ensure!(ping(&s1.host, to, 2), "{fixture}: no traffic after reload");

    let before = hub.daemon().stats()?;
    let delivered = udp_deliveries(&s1.host, &hub.host, to, &[TRIGGER], TRIGGERS, TRIGGER_GAP)?;
    ensure!(
        delivered[&TRIGGER] == 0,
        "{fixture}, fail-closed: {} triggering datagrams delivered",
        delivered[&TRIGGER]
    );
    let mut dropped = 0;
    wait_until(COUNTER_WAIT, POLL, || {
        dropped = counter(&hub.daemon().stats()?, "/drops/plugin-fail-closed")?
            - counter(&before, "/drops/plugin-fail-closed")?;
        Ok(dropped >= u64::from(TRIGGERS))
    })?;
    ensure!(
        dropped >= u64::from(TRIGGERS),
        "{fixture}: plugin-fail-closed grew by {dropped} for {TRIGGERS} triggers"
    );
    let status = hub.daemon().plugin(PLUGIN)?;
    ensure!(
        plugin_number(&status, kind)? >= 1,
        "{fixture}: fail-closed fault not counted: {status:#}"
    );
    // Recovery: once the quarantine ends, normal traffic flows again.
    let recovered = wait_until(RECOVERY_WAIT, Duration::from_millis(200), || {
        Ok(ping(&s1.host, to, 1))
    })?;
    ensure!(
        recovered,
        "{fixture}: traffic did not recover within {RECOVERY_WAIT:?}\n{}",
        topo.logs()
    );
    ensure!(hub.daemon().is_alive(), "the hub daemon died");
    Ok(())
}

/// Fixture `fixture` (config `config`) on the hub must fail to load at `step`; the daemon
/// runs and forwards.
fn failed_to_load(fixture: &str, tag: &str, config: &str, step: &str) -> Result<()> {
    let wasm = fs::read(fixture_wasm(fixture)?)?;
    let entry = hostile_entry(Failure::Open).config(config);
    let topo = started(
        Topology::builder(tag).spokes(1).plugin(SiteId::Hub, entry),
        &wasm,
    )?;
    let (hub, s1) = (topo.hub(), topo.spoke(1));
    let status = hub.daemon().plugin(PLUGIN)?;
    ensure!(
        status["state"] == "failed-to-load" && status["generation"].is_null(),
        "{fixture}: {status:#}"
    );
    let doc = hub.daemon().plugins()?;
    let errors = doc["load_errors"].as_array().context("load_errors")?;
    ensure!(
        errors.len() == 1 && errors[0].as_str().is_some_and(|e| e.contains(step)),
        "{fixture}: load errors {errors:?}, want one mentioning {step:?}"
    );
    ensure!(
        ping(&s1.host, hub.addrs.host_v4.into(), 3),
        "{fixture}: no traffic"
    );
    let delivered = udp_deliveries(
        &s1.host,
        &hub.host,
        hub.addrs.host_v4.into(),
        &[TRIGGER, NORMAL],
        5,
        Duration::from_millis(10),
    )?;
    ensure!(
        delivered.values().all(|&n| n == 5),
        "{fixture}: {delivered:?}"
    );
    ensure!(hub.daemon().is_alive(), "the hub daemon died");
    Ok(())
}

fn hostile_entry(failure: Failure) -> PluginEntry {
    PluginEntry::new(PLUGIN, FILE)
        .failure(failure)
        .deadline_ms(DEADLINE_MS)
        .memory_limit_mib(MEMORY_MIB)
}

/// Builds the topology, puts `wasm` into the hub's plugin directory, starts the daemons.
fn started(builder: TopologyBuilder, wasm: &[u8]) -> Result<Topology> {
    let mut topo = builder.build()?;
    topo.hub().replace_plugin(FILE, wasm)?;
    topo.start()?;
    Ok(topo)
}

fn ensure_active(site: &Site) -> Result<Value> {
    site.daemon()
        .wait_plugin(PLUGIN, STATUS_WAIT, |s| s["state"] == "active")
}

/// Waits until the hub serves a generation other than `old`, and checks it is `bytes`.
fn wait_for_version(site: &Site, old: u64, bytes: &[u8]) -> Result<Value> {
    let status = site.daemon().wait_plugin(PLUGIN, RELOAD_WAIT, |s| {
        s["generation"].as_u64().is_some_and(|g| g != old)
    })?;
    let (_, hash) = serving(&status)?;
    ensure!(
        hash == sha256_hex(bytes),
        "serving {hash}, want the new file's {}",
        sha256_hex(bytes)
    );
    Ok(status)
}

/// The serving version's generation and hash.
fn serving(status: &Value) -> Result<(u64, String)> {
    Ok((
        plugin_number(status, "generation")?,
        status["hash"]
            .as_str()
            .with_context(|| format!("no hash in {status}"))?
            .to_owned(),
    ))
}

/// Sends probes spoke1 → hub LAN and checks the serving version classified each one.
///
/// One probe goes first: the worker adopts a newly published generation between batches
/// only after its next wake-up, so the first batch after a swap may still meet the previous
/// version (whose counters the status no longer shows).
fn ensure_probes_classified(topo: &Topology) -> Result<()> {
    let (hub, s1) = (topo.hub(), topo.spoke(1));
    let send = |count: u32| {
        udp_deliveries(
            &s1.host,
            &hub.host,
            hub.addrs.host_v4.into(),
            &[PROBE_PORT],
            count,
            Duration::from_millis(5),
        )
    };
    let warm_up = send(1)?;
    ensure!(warm_up[&PROBE_PORT] == 1, "warm-up probe {warm_up:?}");
    let before = plugin_counter(&hub.daemon().plugin(PLUGIN)?, "probe")?;
    let delivered = send(PROBES)?;
    ensure!(delivered[&PROBE_PORT] == PROBES, "probes {delivered:?}");
    let after = plugin_counter(&hub.daemon().plugin(PLUGIN)?, "probe")?;
    ensure!(
        after.checked_sub(before) == Some(u64::from(PROBES)),
        "probe counter {before} -> {after} for {PROBES} probes (ttl 0: one call each)"
    );
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const PLUGIN: &str = "guest";
const FILE: &str = "guest.wasm";
const TRIGGER: u16 = 666;
const NORMAL: u16 = 7001;
const PROBE_PORT: u16 = 7000;
const PROBES: u32 = 5;
/// Triggering datagrams per phase, one every `TRIGGER_GAP` (separate batches).
const TRIGGERS: u32 = 10;
const TRIGGER_GAP: Duration = Duration::from_millis(30);
/// Faults within the daemon's quarantine window that start a quarantine (its default).
const QUARANTINE_FAULTS: u64 = 3;
const DEADLINE_MS: u32 = 10;
const MEMORY_MIB: u32 = 8;
const SECTION: &str = "mgre-e2e-version";
const SLOW_CHUNKS: usize = 4;
/// Longer than the daemon's 200 ms watch quiet period.
const SLOW_PAUSE: Duration = Duration::from_millis(500);
const STATUS_WAIT: Duration = Duration::from_secs(20);
const RELOAD_WAIT: Duration = Duration::from_secs(15);
const RECOVERY_WAIT: Duration = Duration::from_secs(20);
const COUNTER_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);
