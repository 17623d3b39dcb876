//! The example policy plugins change real forwarding: `voip-qos` marks the inner and the
//! outer (GRE) DSCP, `spoke-policy` denies spoke-to-spoke traffic on the hub and forces a
//! spoke's traffic through the hub despite a direct path, and `dscp-classifier` reports its
//! classes and counts them — each observed end to end with the real daemon in namespaces.
//!
//! The plugins are built from source for wasm32-unknown-unknown on first use
//! ([`plugin_wasm`]). Needs root and a built daemon, like every e2e test.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mgre_e2e::{
    PluginEntry, Site, SiteId, Tap, Topology, TopologyBuilder, counter, observe, ping,
    plugin_counter, plugin_number, plugin_wasm, plugins_section, send_udp, udp_deliveries,
    wait_until,
};
use serde_json::Value;

#[test]
fn voip_qos_marks_inner_and_outer_dscp() -> Result<()> {
    let topo = started(
        Topology::builder("vqos").plugin(
            SiteId::Spoke(1),
            PluginEntry::new("qos", VOIP_QOS).config("ttl-ms = 5000"),
        ),
        &[(SiteId::Spoke(1), "voip-qos", VOIP_QOS)],
    )?;
    let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
    ensure_ping(&topo, s1, s2.addrs.host_v4.into())?;
    ensure_active(s1, "qos")?;

    // Outer headers as they reach the hub; inner packets as they reach spoke2's LAN host.
    let (outer, (inner, ())) = observe(&hub.router, Tap::Tunnel, OBSERVE_MAX, || {
        observe(&s2.host, Tap::Plain, OBSERVE_MAX, || {
            for (port, _) in QOS_CASES {
                let to = SocketAddr::new(s2.addrs.host_v4.into(), port);
                send_udp(&s1.host, to, &vec![vec![0x5a; 64]; QOS_PACKETS])?;
            }
            Ok(())
        })
    })
    .with_context(|| topo.logs())?;

    for (port, dscp) in QOS_CASES {
        let seen = outer.to_port(port).count();
        ensure!(
            seen >= QOS_PACKETS,
            "the hub saw {seen} of {QOS_PACKETS} GRE packets for port {port}\n{}",
            topo.logs()
        );
        let outer_dscps = outer.outer_dscps(port);
        ensure!(
            outer_dscps == [dscp].into(),
            "port {port}: outer DSCP {outer_dscps:?} at the hub, want {{{dscp}}}"
        );
        let inner_dscps = inner.dscps(port);
        ensure!(
            inner_dscps == [dscp].into(),
            "port {port}: inner DSCP {inner_dscps:?} at spoke2's LAN host, want {{{dscp}}}"
        );
    }
    let status = s1.daemon().plugin("qos")?;
    for class in ["voice", "signalling", "best-effort"] {
        ensure!(
            plugin_counter(&status, class)? >= 1,
            "voip-qos counted no {class} flow: {status:#}"
        );
    }
    Ok(())
}

#[test]
fn spoke_policy_on_the_hub_denies_spoke_to_spoke() -> Result<()> {
    let topo = started(
        Topology::builder("deny").plugin(
            SiteId::Hub,
            PluginEntry::new("policy", SPOKE_POLICY).config(
                r#"default = "allow"

[[plugin.config.rule]]
from = "spoke1"
to = "spoke2"
action = "deny"
"#,
            ),
        ),
        &[(SiteId::Hub, "spoke-policy", SPOKE_POLICY)],
    )?;
    let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
    ensure_active(hub, "policy")?;
    // Spoke to hub is allowed (no rule matches: default allow), both families.
    for addr in host_addrs(hub) {
        ensure_ping(&topo, s1, addr)?;
    }

    let stats_before = hub.daemon().stats()?;
    let denied_before = plugin_counter(&hub.daemon().plugin("policy")?, "denied")?;
    for addr in host_addrs(s2) {
        ensure!(
            !ping(&s1.host, addr, DENIED_PINGS),
            "spoke1's LAN reached spoke2's {addr} through a denying hub"
        );
    }
    // Bidirectional by default: spoke2 cannot reach spoke1 either.
    ensure!(
        !ping(&s2.host, s1.addrs.host_v4.into(), DENIED_PINGS),
        "spoke2's LAN reached spoke1's"
    );
    let want = u64::from(3 * DENIED_PINGS);
    let dropped = counter_growth(hub, &stats_before, "/drops/policy-drop", want)?;
    ensure!(
        dropped >= want,
        "hub policy-drop grew by {dropped}, want >= {want}\n{}",
        topo.logs()
    );
    let denied = plugin_counter(&hub.daemon().plugin("policy")?, "denied")? - denied_before;
    ensure!(denied >= 1, "spoke-policy's `denied` counter did not grow");

    // Still allowed afterwards: spoke to hub LAN, and the hub itself forwards nothing denied.
    ensure_ping(&topo, s1, hub.addrs.host_v4.into())?;
    ensure_ping(&topo, s2, hub.addrs.host_v6.into())?;
    Ok(())
}

#[test]
fn spoke_policy_forces_traffic_via_the_hub() -> Result<()> {
    // Spokes 1 and 2 peer directly; spoke1 is restarted later with the plugin.
    let mut topo = Topology::builder("viahub").direct(1, 2).build()?;
    topo.start()?;
    let burst = u64::from(VIA_HUB_PINGS);
    {
        let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
        ensure_ping(&topo, s1, s2.addrs.host_v4.into())?;
        let hub_before = hub.daemon().stats()?;
        let direct_before = counter(&s2.daemon().peer("spoke1")?, "/rx_packets")?;
        ensure_pings(&topo, s1, s2.addrs.host_v4.into(), VIA_HUB_PINGS)?;
        let hairpin = counter(&hub.daemon().stats()?, "/hairpin/packets")?
            - counter(&hub_before, "/hairpin/packets")?;
        let direct = counter(&s2.daemon().peer("spoke1")?, "/rx_packets")? - direct_before;
        ensure!(
            hairpin == 0 && direct >= burst,
            "without a plugin the burst must go straight from spoke1 to spoke2: hub hairpin \
             +{hairpin}, spoke2 rx from spoke1 +{direct} (burst {burst})"
        );
    }

    // The same spoke1 with spoke-policy: spoke2's LAN only through the hub.
    topo.stop_site(SiteId::Spoke(1))?;
    let s1 = topo.spoke(1);
    let entry = PluginEntry::new("policy", SPOKE_POLICY).config(
        r#"[[plugin.config.rule]]
from = "local"
to = "spoke2"
action = "via-hub"
"#,
    );
    append_plugin(s1, &entry)?;
    s1.install_plugin(SPOKE_POLICY, &plugin_wasm("spoke-policy")?)?;
    topo.start_site(SiteId::Spoke(1))?;
    let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
    ensure_active(s1, "policy")?;
    ensure_ping(&topo, s1, s2.addrs.host_v4.into())?;

    let hub_before = hub.daemon().stats()?;
    ensure_pings(&topo, s1, s2.addrs.host_v4.into(), VIA_HUB_PINGS)?;
    let hairpin = counter_growth(hub, &hub_before, "/hairpin/packets", burst)?;
    ensure!(
        hairpin >= burst,
        "via-hub: the hub hairpinned {hairpin} packets for a burst of {burst}\n{}",
        topo.logs()
    );
    let via_hub = plugin_counter(&s1.daemon().plugin("policy")?, "via-hub")?;
    ensure!(via_hub >= 1, "spoke-policy counted no via-hub flow");
    // IPv6 too (the rule names the peer, whose map has both families).
    let hub_before = hub.daemon().stats()?;
    ensure_pings(&topo, s1, s2.addrs.host_v6.into(), VIA_HUB_PINGS)?;
    let hairpin = counter_growth(hub, &hub_before, "/hairpin/packets", burst)?;
    ensure!(hairpin >= burst, "via-hub over IPv6: hairpin +{hairpin}");
    Ok(())
}

#[test]
fn dscp_classifier_reports_classes_and_counts_them() -> Result<()> {
    let topo = started(
        Topology::builder("dscpc").plugin(
            SiteId::Hub,
            PluginEntry::new("classes", DSCP_CLASSIFIER).config(
                r#"classes = ["voice", "signalling", "bulk"]
ttl-ms = 0

[[plugin.config.rule]]
class = "voice"
protocol = "udp"
dst-port = "16384-32767"

[[plugin.config.rule]]
class = "signalling"
protocol = ["udp", "tcp"]
port = 5060

[[plugin.config.rule]]
class = "bulk"
protocol = "tcp"
dst-port = [873, "9000-9010"]
"#,
            ),
        ),
        &[(SiteId::Hub, "dscp-classifier", DSCP_CLASSIFIER)],
    )?;
    let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
    ensure_ping(&topo, s1, s2.addrs.host_v4.into())?;
    let before = ensure_active(hub, "classes")?;
    let classes: Vec<(u64, String)> = before["classes"]
        .as_array()
        .context("no classes")?
        .iter()
        .map(|c| {
            (
                c["id"].as_u64().unwrap_or(0),
                c["name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    ensure!(
        classes
            == [
                (1, "voice".into()),
                (2, "signalling".into()),
                (3, "bulk".into())
            ],
        "classes {classes:?}"
    );
    let names: Vec<&str> = before["counters"]
        .as_array()
        .context("no counters")?
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    ensure!(
        names == ["voice", "signalling", "bulk", "unmatched"],
        "counters {names:?}"
    );

    // Through the hub (transit) and to the hub's LAN (inbound): ttl 0, one call per packet.
    let delivered = udp_deliveries(
        &s1.host,
        &s2.host,
        s2.addrs.host_v4.into(),
        &[20000, 5060],
        CLASSIFIED_PACKETS,
        Duration::from_millis(5),
    )?;
    ensure!(
        delivered.values().all(|&n| n == CLASSIFIED_PACKETS),
        "deliveries {delivered:?}"
    );
    ensure_ping(&topo, s1, hub.addrs.host_v4.into())?;
    let after = hub.daemon().plugin("classes")?;
    let grew = |name: &str| -> Result<u64> {
        Ok(plugin_counter(&after, name)? - plugin_counter(&before, name)?)
    };
    let want = u64::from(CLASSIFIED_PACKETS);
    ensure!(
        grew("voice")? >= want && grew("signalling")? >= want,
        "voice +{}, signalling +{} for {want} packets each: {after:#}",
        grew("voice")?,
        grew("signalling")?
    );
    ensure!(
        grew("bulk")? == 0,
        "bulk counted without bulk traffic: {after:#}"
    );
    ensure!(
        grew("unmatched")? >= 3,
        "pings not counted as unmatched: {after:#}"
    );
    ensure!(
        plugin_number(&after, "packets")? >= 2 * want,
        "the plugin saw fewer packets than were classified: {after:#}"
    );

    // The table view names the plugin too.
    let table = mgre_e2e::run_ok(
        std::process::Command::new(mgre_e2e::mgre_bin())
            .args(["show", "plugins", "--socket"])
            .arg(hub.daemon().socket()),
        Duration::from_secs(10),
    )?;
    ensure!(
        table.contains("classes") && table.contains("active"),
        "{table}"
    );
    Ok(())
}

/// Builds the topology, installs `(site, package, file)` plugin files, starts every daemon.
#[test]
fn sighup_rereads_the_plugin_config_and_swaps_in_a_new_generation() -> Result<()> {
    let topo = started(
        Topology::builder("hup").spokes(1).plugin(
            SiteId::Hub,
            PluginEntry::new("classes", DSCP_CLASSIFIER).config(r#"classes = ["voice", "bulk"]"#),
        ),
        &[(SiteId::Hub, "dscp-classifier", DSCP_CLASSIFIER)],
    )?;
    let hub = topo.hub();
    let before = ensure_active(hub, "classes")?;
    let generation = before["generation"].as_u64().context("no generation")?;
    let config = std::fs::read_to_string(&hub.config)?;
    let edited = config.replace(
        r#"classes = ["voice", "bulk"]"#,
        r#"classes = ["voice", "video", "bulk"]"#,
    );
    ensure!(
        edited != config,
        "the plugin config line was not found in {}",
        hub.config.display()
    );
    std::fs::write(&hub.config, edited)?;
    hub.daemon().hangup()?;
    let after = hub.daemon().wait_plugin("classes", PLUGIN_WAIT, |s| {
        s["generation"].as_u64().is_some_and(|g| g > generation)
    })?;
    let names: Vec<&str> = after["classes"]
        .as_array()
        .context("no classes")?
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    ensure!(
        names == ["voice", "video", "bulk"],
        "classes after SIGHUP: {names:?}"
    );
    ensure!(hub.daemon().is_alive(), "the hub died on SIGHUP");
    ensure_ping(&topo, topo.spoke(1), hub.addrs.host_v4.into())?;
    Ok(())
}

fn started(builder: TopologyBuilder, files: &[(SiteId, &str, &str)]) -> Result<Topology> {
    let mut topo = builder.build()?;
    for (id, package, file) in files {
        topo.site(*id)
            .install_plugin(file, &plugin_wasm(package)?)?;
    }
    topo.start()?;
    Ok(topo)
}

/// Appends `[plugins]` and `entry` to a (stopped) site's config.
fn append_plugin(site: &Site, entry: &PluginEntry) -> Result<()> {
    let mut text = std::fs::read_to_string(&site.config)?;
    let dir = site
        .plugin_dir
        .to_str()
        .context("plugin dir is not UTF-8")?;
    text.push_str(&plugins_section(dir, &[entry]));
    std::fs::write(&site.config, text)?;
    Ok(())
}

/// Waits until plugin `name` is active on `site` and returns its status.
fn ensure_active(site: &Site, name: &str) -> Result<Value> {
    site.daemon()
        .wait_plugin(name, PLUGIN_WAIT, |s| s["state"] == "active")
}

fn ensure_ping(topo: &Topology, from: &Site, to: IpAddr) -> Result<()> {
    ensure_pings(topo, from, to, 3)
}

/// `count` pings that must all be answered (a lost one fails the burst accounting).
fn ensure_pings(topo: &Topology, from: &Site, to: IpAddr, count: u32) -> Result<()> {
    let family = if to.is_ipv4() { "-4" } else { "-6" };
    let out = from.host.exec_timeout(
        [
            "ping",
            family,
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.05",
            "-W",
            "2",
            &to.to_string(),
        ],
        Duration::from_secs(u64::from(count) + 15),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.contains(&format!("{count} received")),
        "{} LAN host: ping {to} x{count}: {stdout}\n{}",
        from.id.peer_name(),
        topo.logs()
    );
    Ok(())
}

fn host_addrs(site: &Site) -> [IpAddr; 2] {
    [site.addrs.host_v4.into(), site.addrs.host_v6.into()]
}

/// How much `site`'s stats counter at `pointer` has grown since `before`, waiting (bounded)
/// for it to reach `want` since counters settle just after the traffic.
fn counter_growth(site: &Site, before: &Value, pointer: &str, want: u64) -> Result<u64> {
    let start = counter(before, pointer)?;
    let mut grown = 0;
    wait_until(COUNTER_WAIT, POLL, || {
        grown = counter(&site.daemon().stats()?, pointer)? - start;
        Ok(grown >= want)
    })?;
    Ok(grown)
}

const VOIP_QOS: &str = "voip_qos.wasm";
const SPOKE_POLICY: &str = "spoke_policy.wasm";
const DSCP_CLASSIFIER: &str = "dscp_classifier.wasm";
/// Destination port and the DSCP voip-qos gives it by default: RTP → EF, SIP → CS3,
/// anything else → best effort (0).
const QOS_CASES: [(u16, u8); 3] = [(20000, 46), (5060, 24), (9999, 0)];
const QOS_PACKETS: usize = 20;
const DENIED_PINGS: u32 = 5;
const VIA_HUB_PINGS: u32 = 20;
const CLASSIFIED_PACKETS: u32 = 20;
const OBSERVE_MAX: Duration = Duration::from_secs(30);
const PLUGIN_WAIT: Duration = Duration::from_secs(20);
const COUNTER_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);
