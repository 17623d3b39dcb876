//! End-to-end tests of what sits around plain forwarding: GRE checksums and sequence numbers on
//! a bulk transfer, the hub's ICMP too-big errors when the egress spoke's path is smaller than
//! the ingress one, and the Prometheus endpoint.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mgre_e2e::{
    Encap, METRICS_ADDR, Site, Topology, counter, ping, scrape, tcp_transfer, wait_until,
};

#[test]
fn checksums_and_sequence_numbers_carry_a_bulk_transfer() -> Result<()> {
    let mut topo = Topology::builder("csq")
        .key(7)
        .checksum(true)
        .sequence(true)
        .build()?;
    topo.start()?;
    let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
    let (sent, received) = tcp_transfer(
        &s1.host,
        &s2.host,
        s2.addrs.host_v4.into(),
        10 * 1024 * 1024,
    )
    .with_context(|| topo.logs())?;
    ensure!(
        sent == received,
        "TCP payload corrupted with checksums and sequence numbers on"
    );
    let stats = hub.daemon().stats()?;
    ensure!(
        counter(&stats, "/hairpin/packets")? > 1000,
        "transfer did not cross the hub: {stats}"
    );
    for reason in ["bad-checksum", "key-mismatch", "out-of-sequence"] {
        ensure!(
            counter(&stats, &format!("/drops/{reason}"))? == 0,
            "unexpected {reason} drops: {stats}"
        );
    }
    // Every site announces the 12 extra GRE header bytes in its path MTU.
    let peer = hub.daemon().peer("spoke1")?;
    ensure!(peer["mtu"] == 1500 - 20 - 16, "hub→spoke1 path MTU: {peer}");
    Ok(())
}

#[test]
fn hub_answers_too_big_when_the_egress_spoke_path_is_smaller() -> Result<()> {
    // spoke1 reaches the hub over plain GRE (inner MTU 1476); spoke2 over GRE-in-UDP (1468).
    let mut topo = Topology::builder("ptb").encap(2, Encap::GreUdp).build()?;
    topo.start()?;
    let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
    ensure!(s1.tun_mtu()? == 1476, "spoke1 TUN MTU {}", s1.tun_mtu()?);
    for (dst, payload, header) in [
        (IpAddr::from(s2.addrs.host_v4), 1448, 28),
        (s2.addrs.host_v6.into(), 1428, 48),
    ] {
        ensure!(
            payload + header == 1476,
            "probe must fill spoke1's tunnel exactly"
        );
        let before = hub.daemon().stats()?;
        // DF probes of 1476 bytes fit spoke1's tunnel but not the hub's path to spoke2.
        probe(s1, dst, payload);
        let mut after = before.clone();
        let sent = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            after = hub.daemon().stats()?;
            Ok(counter(&after, "/icmp_too_big")? > counter(&before, "/icmp_too_big")?)
        })?;
        ensure!(
            sent,
            "hub sent no too-big error for {dst}: {after}\n{}",
            topo.logs()
        );
        ensure!(
            counter(&after, "/drops/too-big")? > counter(&before, "/drops/too-big")?,
            "{after}"
        );
        // The LAN host learnt the smaller path MTU from the hub's error...
        let learnt = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            Ok(route_mtu(s1, dst)? == Some(1468))
        })?;
        ensure!(
            learnt,
            "spoke1's LAN host did not learn MTU 1468 for {dst}: {:?}",
            route_mtu(s1, dst)?
        );
        // ...and packets that fit it get through.
        ensure!(
            ping(&s1.host, dst, 2),
            "no reply at the reduced size to {dst}"
        );
    }
    Ok(())
}

#[test]
fn metrics_export_peer_counters_and_drop_reasons() -> Result<()> {
    let mut topo = Topology::builder("met").metrics(true).build()?;
    topo.start()?;
    let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
    ensure!(
        ping(&s1.host, s2.addrs.host_v4.into(), 3),
        "no LAN-to-LAN reachability\n{}",
        topo.logs()
    );
    let text = hub.router.run(|| scrape(METRICS_ADDR))?;
    for family in [
        "mgre_packets_total",
        "mgre_bytes_total",
        "mgre_peer_tx_packets_total",
        "mgre_drops_total",
    ] {
        ensure!(
            text.contains(&format!("# TYPE {}", family.trim_end_matches("_total"))),
            "{family} missing:\n{text}"
        );
    }
    let rx_spoke1 = sample(&text, "mgre_peer_rx_packets_total", "peer=\"spoke1\"")?;
    let tx_spoke2 = sample(&text, "mgre_peer_tx_packets_total", "peer=\"spoke2\"")?;
    ensure!(
        rx_spoke1 >= 3 && tx_spoke2 >= 3,
        "per-peer counters did not move:\n{text}"
    );
    let hairpin = sample(&text, "mgre_packets_total", "path=\"hairpin\"")?;
    ensure!(hairpin >= 6, "hairpin {hairpin}:\n{text}");
    for reason in [
        "truncated",
        "key-mismatch",
        "bad-checksum",
        "unknown-peer",
        "no-route",
    ] {
        sample(&text, "mgre_drops_total", &format!("reason=\"{reason}\""))?;
    }
    // The same numbers as the control socket.
    let stats = hub.daemon().stats()?;
    ensure!(counter(&stats, "/hairpin/packets")? >= hairpin, "{stats}");
    Ok(())
}

/// Sends three DF pings of `payload` bytes from `site`'s LAN host (failures are expected:
/// the point is the ICMP error they provoke).
fn probe(site: &Site, dst: IpAddr, payload: usize) {
    let family = if dst.is_ipv4() { "-4" } else { "-6" };
    let _ = site.host.exec_timeout(
        [
            "ping",
            family,
            "-n",
            "-q",
            "-M",
            "do",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-s",
            &payload.to_string(),
            &dst.to_string(),
        ],
        Duration::from_secs(10),
    );
}

/// The path MTU the LAN host's kernel has cached towards `dst`, if any.
fn route_mtu(site: &Site, dst: IpAddr) -> Result<Option<u32>> {
    let out = site.host.exec(["ip", "route", "get", &dst.to_string()])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mtu" {
            return Ok(words.next().and_then(|m| m.parse().ok()));
        }
    }
    Ok(None)
}

/// The value of the first sample of `family` whose labels contain `label`.
fn sample(text: &str, family: &str, label: &str) -> Result<u64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .with_context(|| format!("no {family} sample with {label}:\n{text}"))
}
