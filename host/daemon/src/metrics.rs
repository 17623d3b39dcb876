//! Prometheus metrics over HTTP (`GET /metrics`) on a loopback address: packets and bytes per
//! peer and direction, totals, and drops by reason, read from the workers' counters at
//! scrape time (nothing is copied on the packet path).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::snapshot::{PeerRow, Shared};
use mgre_proto::DropReason;

/// Serves scrapes until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut registry = Registry::with_prefix("mgre");
    registry.register_collector(Box::new(TunnelCollector(shared)));
    let registry = Arc::new(registry);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut req = [0u8; 2048];
            let mut got = 0;
            let read = async {
                while got < req.len() {
                    match stream.read(&mut req[got..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                    if req[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .is_err()
            {
                return;
            }
            let head = String::from_utf8_lossy(&req[..got]);
            let response = if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?")
            {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    Err(_) => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
                }
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// A per-peer metric family: name, help text and which counter of the peer row it reads.
type PeerFamily = (&'static str, &'static str, fn(&PeerRow) -> u64);

#[derive(Debug)]
struct TunnelCollector(Arc<Shared>);

impl Collector for TunnelCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        let tun = self.0.tun_name.as_str();
        for (name, help, unit_packets) in [
            ("packets", "Packets by path and direction", true),
            ("bytes", "Bytes by path and direction", false),
        ] {
            let mut fam = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (path, c) in [
                ("underlay_rx", s.rx),
                ("underlay_tx", s.tx),
                ("tun_rx", s.tun_rx),
                ("tun_tx", s.tun_tx),
                ("hairpin", s.hairpin),
            ] {
                let v = if unit_packets { c.packets } else { c.bytes };
                let labels = [("tunnel", tun), ("path", path)];
                ConstCounter::new(v).encode(fam.encode_family(&labels)?)?;
            }
        }
        let peers = self.0.peers();
        let per_peer: [PeerFamily; 4] = [
            ("peer_rx_packets", "Packets received from a peer", |p| {
                p.rx_packets
            }),
            ("peer_rx_bytes", "Bytes received from a peer", |p| {
                p.rx_bytes
            }),
            ("peer_tx_packets", "Packets sent to a peer", |p| {
                p.tx_packets
            }),
            ("peer_tx_bytes", "Bytes sent to a peer", |p| p.tx_bytes),
        ];
        for (name, help, value) in per_peer {
            let mut fam = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for p in &peers {
                let labels = [
                    ("tunnel", tun),
                    ("peer", p.name.as_str()),
                    ("nbma", p.nbma.as_str()),
                ];
                ConstCounter::new(value(p)).encode(fam.encode_family(&labels)?)?;
            }
        }
        let mut fam = enc.encode_descriptor(
            "drops",
            "Dropped packets by reason",
            None,
            MetricType::Counter,
        )?;
        for r in DropReason::ALL {
            let labels = [("tunnel", tun), ("reason", r.as_str())];
            ConstCounter::new(self.0.drops(r)).encode(fam.encode_family(&labels)?)?;
        }
        for (name, help, v) in [
            ("nhrp_packets", "NHRP packets received", s.nhrp),
            (
                "mss_clamped",
                "TCP SYNs whose MSS was clamped",
                s.mss_clamped,
            ),
            (
                "icmp_too_big",
                "ICMP too-big errors generated",
                s.icmp_too_big,
            ),
            (
                "heap_allocations",
                "Heap allocations made by the dataplane workers' loops",
                s.heap_allocations,
            ),
            (
                "offload_tun_gso_reads",
                "TUN reads that brought a super-packet split into segments",
                s.offload.tun_gso_reads,
            ),
            (
                "offload_udp_gro_trains",
                "UDP receives that brought a coalesced train of datagrams",
                s.offload.udp_gro_trains,
            ),
            (
                "offload_udp_gso_trains",
                "UDP sends that carried a train of datagrams in one message",
                s.offload.udp_gso_trains,
            ),
        ] {
            let mut fam = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v).encode(fam.encode_family(&[("tunnel", tun)])?)?;
        }
        let mut fam = enc.encode_descriptor(
            "workers",
            "Dataplane worker threads",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(s.workers as i64).encode(fam.encode_family(&[("tunnel", tun)])?)?;
        let mut fam = enc.encode_descriptor(
            "tun_offload",
            "TUN segmentation offload in use (1) or not (0), by kind",
            None,
            MetricType::Gauge,
        )?;
        for (kind, on) in [("tso", s.offload.tun_tso), ("uso", s.offload.tun_uso)] {
            ConstGauge::new(i64::from(on))
                .encode(fam.encode_family(&[("tunnel", tun), ("kind", kind)])?)?;
        }
        if let Some(m) = &self.0.plugins {
            encode_plugins(&mut enc, &m.current())?;
        }
        if let Some(n) = &self.0.nhrp {
            let st = n.lock().unwrap_or_else(|p| p.into_inner());
            encode_nhrp(&mut enc, tun, &st)?;
        }
        Ok(())
    }
}

/// NHRP metrics: messages, a hub's registrations by result and table size, a spoke's
/// registration state and counters per NHS.
fn encode_nhrp(
    enc: &mut DescriptorEncoder,
    tun: &str,
    st: &crate::nhrp::NhrpState,
) -> Result<(), std::fmt::Error> {
    let c = &st.counters;
    let role = st.node.role();
    let network_id = st.network_id.to_string();
    let mut fam = enc.encode_descriptor(
        "nhrp_info",
        "NHRP role and network-id of the tunnel (always 1)",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(1).encode(fam.encode_family(&[
        ("tunnel", tun),
        ("role", role),
        ("network_id", network_id.as_str()),
    ])?)?;
    let mut fam = enc.encode_descriptor(
        "nhrp_messages",
        "NHRP messages handled by the control path, by outcome",
        None,
        MetricType::Counter,
    )?;
    for (kind, v) in [
        ("received", c.received),
        ("malformed", c.malformed),
        ("unrecognized-extension", c.unrecognized_extensions),
        ("unsupported", c.unsupported),
        ("sent", c.sent),
        ("send-error", c.send_errors),
        ("error-indication", c.error_indications),
    ] {
        ConstCounter::new(v).encode(fam.encode_family(&[("tunnel", tun), ("kind", kind)])?)?;
    }
    match &st.node {
        crate::nhrp::Node::Hub(hub) => {
            let (servers, peers) = (&hub.servers, &hub.peers);
            let mut fam = enc.encode_descriptor(
                "nhrp_resolutions",
                "Resolution Requests a hub handled, by result",
                None,
                MetricType::Counter,
            )?;
            for (result, v) in [
                ("forwarded", c.resolutions_forwarded),
                ("answered", c.resolutions_answered),
                ("unresolved", c.resolutions_unresolved),
                ("upstream", c.resolutions_upstream),
                ("error", c.resolution_errors),
            ] {
                ConstCounter::new(v)
                    .encode(fam.encode_family(&[("tunnel", tun), ("result", result)])?)?;
            }
            let mut fam = enc.encode_descriptor(
                "nhrp_redirects",
                "Traffic Indications sent to spokes whose traffic the hub forwarded",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(c.redirects).encode(fam.encode_family(&[("tunnel", tun)])?)?;
            let h = crate::nhrp::view::hub_counters(st).unwrap_or_default();
            let mut fam = enc.encode_descriptor(
                "nhrp_registrations",
                "Registration Request entries a hub handled, by result",
                None,
                MetricType::Counter,
            )?;
            for (result, v) in [
                ("added", h.added),
                ("refreshed", h.refreshed),
                ("replaced", h.replaced),
                ("nak-authentication", h.nak_authentication),
                ("nak-prohibited-nbma", h.nak_prohibited_nbma),
                ("nak-insufficient-resources", h.nak_insufficient_resources),
                ("nak-unique", h.nak_unique),
                ("nak-policy", h.nak_policy),
            ] {
                ConstCounter::new(v)
                    .encode(fam.encode_family(&[("tunnel", tun), ("result", result)])?)?;
            }
            let mut fam = enc.encode_descriptor(
                "nhrp_removals",
                "Registered entries removed, by cause",
                None,
                MetricType::Counter,
            )?;
            for (cause, v) in [("expired", h.expired), ("purged", h.purged)] {
                ConstCounter::new(v)
                    .encode(fam.encode_family(&[("tunnel", tun), ("cause", cause)])?)?;
            }
            let entries: usize = servers.iter().map(|s| s.len()).sum();
            for (name, help, v) in [
                ("nhrp_entries", "Registered overlay prefixes", entries),
                (
                    "nhrp_spokes",
                    "Spokes (underlay addresses) with a registration",
                    peers.len(),
                ),
            ] {
                let mut fam = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(v as i64).encode(fam.encode_family(&[("tunnel", tun)])?)?;
            }
        }
        crate::nhrp::Node::Spoke(spoke) => {
            if let Some(rc) = crate::nhrp::view::resolver_counters(st) {
                let mut fam = enc.encode_descriptor(
                    "nhrp_shortcut_events",
                    "A spoke's resolutions and shortcuts, by event",
                    None,
                    MetricType::Counter,
                )?;
                for (event, v) in rc {
                    let event = event.replace('_', "-");
                    ConstCounter::new(v.as_u64().unwrap_or(0)).encode(
                        fam.encode_family(&[("tunnel", tun), ("event", event.as_str())])?,
                    )?;
                }
                let shortcuts: usize = spoke.resolvers.iter().map(|r| r.shortcuts().count()).sum();
                let mut fam = enc.encode_descriptor(
                    "nhrp_shortcuts",
                    "Shortcuts installed",
                    None,
                    MetricType::Gauge,
                )?;
                ConstGauge::new(shortcuts as i64).encode(fam.encode_family(&[("tunnel", tun)])?)?;
            }
        }
    }
    let statuses: Vec<_> = st
        .node
        .upstream()
        .statuses()
        .map(|(family, s)| (family, s.nbma.to_string(), s))
        .collect();
    let mut fam = enc.encode_descriptor(
        "nhrp_nhs_registered",
        "1 while registered with the NHS",
        None,
        MetricType::Gauge,
    )?;
    for (family, nhs, s) in &statuses {
        let on = matches!(s.state, mgre_proto::nhrp::NhsState::Registered { .. });
        ConstGauge::new(i64::from(on)).encode(fam.encode_family(&[
            ("tunnel", tun),
            ("nhs", nhs.as_str()),
            ("family", family),
        ])?)?;
    }
    let mut fam = enc.encode_descriptor(
        "nhrp_nhs_replies",
        "Registration Replies from the NHS, by result",
        None,
        MetricType::Counter,
    )?;
    for (family, nhs, s) in &statuses {
        for (result, v) in [
            ("success", s.counters.registrations),
            ("nak", s.counters.naks),
        ] {
            ConstCounter::new(v).encode(fam.encode_family(&[
                ("tunnel", tun),
                ("nhs", nhs.as_str()),
                ("family", family),
                ("result", result),
            ])?)?;
        }
    }
    let mut fam = enc.encode_descriptor(
        "nhrp_nhs_requests",
        "Registration Requests sent to the NHS (new IDs and retransmissions)",
        None,
        MetricType::Counter,
    )?;
    for (family, nhs, s) in &statuses {
        for (kind, v) in [
            ("new", s.counters.requests),
            ("retransmission", s.counters.retransmissions),
        ] {
            ConstCounter::new(v).encode(fam.encode_family(&[
                ("tunnel", tun),
                ("nhs", nhs.as_str()),
                ("family", family),
                ("kind", kind),
            ])?)?;
        }
    }
    Ok(())
}

/// A per-plugin counter family: name, help text and which statistic it reads.
type PluginFamily = (
    &'static str,
    &'static str,
    fn(&mgre_plugin::PluginStats) -> u64,
);

/// Per-plugin metrics: calls, packets, time, faults by kind, quarantines, state, generation,
/// reload failures and the plugin's own counters.
fn encode_plugins(
    enc: &mut DescriptorEncoder,
    set: &mgre_plugin::PluginSet,
) -> Result<(), std::fmt::Error> {
    let status = set.status();
    let counters: [PluginFamily; 4] = [
        ("plugin_calls", "Plugin hook calls", |s| s.calls),
        (
            "plugin_packets",
            "Packets passed to plugin hook calls",
            |s| s.packets,
        ),
        (
            "plugin_quarantines",
            "Times a worker quarantined the plugin",
            |s| s.quarantines,
        ),
        (
            "plugin_skipped_batches",
            "Batches the failure policy handled without calling the plugin",
            |s| s.skipped_batches,
        ),
    ];
    for (name, help, value) in counters {
        let mut fam = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for p in &status {
            ConstCounter::new(value(&p.stats))
                .encode(fam.encode_family(&[("plugin", p.name.as_str())])?)?;
        }
    }
    let mut fam = enc.encode_descriptor(
        "plugin_call_seconds",
        "Time spent in plugin hook calls",
        None,
        MetricType::Counter,
    )?;
    for p in &status {
        ConstCounter::new(p.stats.call_ns as f64 / 1e9)
            .encode(fam.encode_family(&[("plugin", p.name.as_str())])?)?;
    }
    let mut fam = enc.encode_descriptor(
        "plugin_faults",
        "Plugin faults by kind",
        None,
        MetricType::Counter,
    )?;
    for p in &status {
        let st = &p.stats;
        for (kind, v) in [
            ("trap", st.traps),
            ("deadline", st.deadline_hits),
            ("memory-limit", st.memory_limit_hits),
            ("bad-output", st.bad_outputs),
            ("instantiate", st.instantiate_failures),
        ] {
            ConstCounter::new(v)
                .encode(fam.encode_family(&[("plugin", p.name.as_str()), ("kind", kind)])?)?;
        }
    }
    let mut fam = enc.encode_descriptor(
        "plugin_reload_failures",
        "Failed loads of a plugin across reloads",
        None,
        MetricType::Counter,
    )?;
    for p in &status {
        ConstCounter::new(p.reload_failures)
            .encode(fam.encode_family(&[("plugin", p.name.as_str())])?)?;
    }
    let mut fam = enc.encode_descriptor(
        "plugin_state",
        "1 for the plugin's current state",
        None,
        MetricType::Gauge,
    )?;
    for p in &status {
        let state = match p.state {
            mgre_plugin::PluginState::Active => "active",
            mgre_plugin::PluginState::Quarantined => "quarantined",
            mgre_plugin::PluginState::FailedToLoad { .. } => "failed-to-load",
        };
        ConstGauge::new(1i64)
            .encode(fam.encode_family(&[("plugin", p.name.as_str()), ("state", state)])?)?;
    }
    let mut fam = enc.encode_descriptor(
        "plugin_generation",
        "Generation the serving version was loaded in",
        None,
        MetricType::Gauge,
    )?;
    for p in &status {
        if let Some(g) = p.loaded_generation {
            ConstGauge::new(g as i64).encode(fam.encode_family(&[("plugin", p.name.as_str())])?)?;
        }
    }
    let mut fam = enc.encode_descriptor(
        "plugin_counter",
        "Counters a plugin keeps itself",
        None,
        MetricType::Counter,
    )?;
    for p in &status {
        for (counter, v) in &p.counters {
            ConstCounter::new(*v).encode(
                fam.encode_family(&[("plugin", p.name.as_str()), ("counter", counter.as_str())])?,
            )?;
        }
    }
    Ok(())
}
