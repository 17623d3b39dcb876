//! Multicast between the LANs of NHRP spokes: a host on spoke1's LAN sends to a group, the
//! kernel of spoke1's router forwards it into the mgre tunnel (static multicast routes by
//! `smcrouted`), spoke1's daemon sends it to its NHS, the hub replicates it to every other
//! registered spoke (`map multicast dynamic`), and their kernels forward it from the tunnel
//! onto their LANs — IPv4 and IPv6. Needs `smcrouted` (Debian package `smcroute`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mgre_e2e::{
    Encap, NhrpOptions, Site, Smcroute, Tap, Topology, counter, multicast_received,
    multicast_receiver, multicast_send_hops, observe, wait_until,
};
use serde_json::Value;

#[test]
fn multicast_from_a_spoke_lan_host_reaches_the_lan_hosts_of_the_other_spokes() -> Result<()> {
    let mut topo = Topology::builder("lanmc")
        .spokes(3)
        .encap(3, Encap::GreUdp)
        .nhrp(NhrpOptions::default())
        .build()?;
    topo.start()?;
    for k in 1..=3 {
        wait_registered(&topo, topo.spoke(k))?;
    }
    let groups = GROUPS
        .iter()
        .map(|g| g.parse())
        .collect::<Result<Vec<IpAddr>, _>>()?;
    // Every spoke router forwards the groups between its LAN and its TUN, both ways; the
    // hub's kernel forwards no multicast (the hub's daemon replicates it).
    let routers = (1..=3)
        .map(|k| {
            let s = topo.spoke(k);
            let router = Smcroute::start(
                &s.router,
                topo.dir(),
                &s.id.peer_name(),
                (&s.lan_iface, &s.tun),
                &groups,
            )?;
            Ok((k, router))
        })
        .collect::<Result<Vec<_>>>()?;
    let (s1, s2, s3) = (topo.spoke(1), topo.spoke(2), topo.spoke(3));

    for group in groups {
        let listeners = [s1, s2, s3]
            .iter()
            .map(|s| multicast_receiver(&s.host, group, PORT, &s.host_iface))
            .collect::<Result<Vec<_>>>()?;
        let before = Counters::read(&topo)?;
        let tag = format!("lan1-{group}");
        // Tunnel packets arriving at spoke1's router while its LAN host sends: none may
        // carry the group's datagrams (the hub must not send them back to their source).
        let (arrived_at_s1, ()) = observe(&s1.router, Tap::Tunnel, CAPTURE_MAX, || {
            multicast_send_hops(&s1.host, group, PORT, &s1.host_iface, &tag, COUNT, HOPS)
        })?;
        let got: Vec<Vec<String>> = listeners
            .iter()
            .map(|l| multicast_received(l, &tag, RECEIVE_WAIT))
            .collect();
        let after = Counters::read(&topo)?;
        let why = || diagnostics(&topo, &routers, &before, &after);

        ensure!(
            got[0].is_empty(),
            "spoke1's LAN host got its own multicast to {group} back: {:?}\n{}",
            got[0],
            why()
        );
        let echoed = arrived_at_s1.to_port(PORT).count();
        ensure!(
            echoed == 0,
            "{echoed} tunnel packets to {group}:{PORT} came back to spoke1\n{}",
            why()
        );
        for (k, datagrams) in [(2, &got[1]), (3, &got[2])] {
            let distinct: BTreeSet<&String> = datagrams.iter().collect();
            ensure!(
                // One loss tolerated (like the other multicast tests); a duplicate would mean
                // a forwarding loop.
                datagrams.len() >= COUNT - 1 && distinct.len() == datagrams.len(),
                "spoke{k}'s LAN host received {} datagrams to {group} ({} distinct) of the \
                 {COUNT} spoke1's LAN host sent: {datagrams:?}\n{}",
                datagrams.len(),
                distinct.len(),
                why()
            );
        }
        // The path in the counters: spoke1's daemon read the datagrams from its TUN and
        // the hub got them from spoke1; the hub sent copies to spoke2 and spoke3, whose
        // daemons wrote them to their TUNs.
        let (n2, n3) = (got[1].len() as u64, got[2].len() as u64);
        let delta = after.minus(&before);
        ensure!(
            delta.s1_tun_rx >= n2.max(n3)
                && delta.hub_rx_from_s1 >= n2.max(n3)
                && delta.hub_tx_to_s2 >= n2
                && delta.hub_tx_to_s3 >= n3
                && delta.s2_tun_tx >= n2
                && delta.s3_tun_tx >= n3,
            "counters moved less than the datagrams received ({n2}, {n3}): {delta:?}\n{}",
            why()
        );
    }
    Ok(())
}

/// The counters along the path, from `mgre show stats|peers --json`.
#[derive(Debug)]
struct Counters {
    s1_tun_rx: u64,
    hub_rx_from_s1: u64,
    hub_tx_to_s2: u64,
    hub_tx_to_s3: u64,
    s2_tun_tx: u64,
    s3_tun_tx: u64,
}

impl Counters {
    fn read(topo: &Topology) -> Result<Self> {
        let hub_peers = topo.hub().daemon().peers()?;
        let hub_peer = |k: usize, field: &str| -> Result<u64> {
            let nbma = topo.spoke(k).addrs.nbma.to_string();
            hub_peers
                .as_array()
                .and_then(|peers| peers.iter().find(|p| p["nbma"] == nbma.as_str()))
                .and_then(|p| p[field].as_u64())
                .with_context(|| format!("no {field} of the hub's peer {nbma}: {hub_peers}"))
        };
        let tun = |k: usize, direction: &str| -> Result<u64> {
            counter(
                &topo.spoke(k).daemon().stats()?,
                &format!("/{direction}/packets"),
            )
        };
        Ok(Self {
            s1_tun_rx: tun(1, "tun_rx")?,
            hub_rx_from_s1: hub_peer(1, "rx_packets")?,
            hub_tx_to_s2: hub_peer(2, "tx_packets")?,
            hub_tx_to_s3: hub_peer(3, "tx_packets")?,
            s2_tun_tx: tun(2, "tun_tx")?,
            s3_tun_tx: tun(3, "tun_tx")?,
        })
    }

    /// How far each counter moved since `earlier`.
    fn minus(&self, earlier: &Self) -> Self {
        Self {
            s1_tun_rx: self.s1_tun_rx.saturating_sub(earlier.s1_tun_rx),
            hub_rx_from_s1: self.hub_rx_from_s1.saturating_sub(earlier.hub_rx_from_s1),
            hub_tx_to_s2: self.hub_tx_to_s2.saturating_sub(earlier.hub_tx_to_s2),
            hub_tx_to_s3: self.hub_tx_to_s3.saturating_sub(earlier.hub_tx_to_s3),
            s2_tun_tx: self.s2_tun_tx.saturating_sub(earlier.s2_tun_tx),
            s3_tun_tx: self.s3_tun_tx.saturating_sub(earlier.s3_tun_tx),
        }
    }
}

/// Waits until every NHS row of `site` (one per address family) is registered.
fn wait_registered(topo: &Topology, site: &Site) -> Result<()> {
    let mut nhs = Value::Null;
    let registered = wait_until(REGISTER_WAIT, POLL, || {
        nhs = site.daemon().nhs()?;
        Ok(nhs["servers"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s["state"] == "registered")))
    })?;
    ensure!(
        registered,
        "{} did not register: {nhs}\n{}",
        site.id.peer_name(),
        topo.logs()
    );
    Ok(())
}

/// For failure messages: the counters, each spoke's multicast router log and kernel
/// multicast routes, the daemon logs.
fn diagnostics(
    topo: &Topology,
    routers: &[(usize, Smcroute)],
    before: &Counters,
    after: &Counters,
) -> String {
    let mut text = format!("counters before {before:?}\ncounters after {after:?}\n");
    for (k, router) in routers {
        let ns = &topo.spoke(*k).router;
        let _ = writeln!(
            text,
            "--- spoke{k} smcrouted log ---\n{}",
            router.log_text()
        );
        for family in ["-4", "-6"] {
            let routes = ns
                .ip(&format!("{family} mroute show"))
                .unwrap_or_else(|e| format!("{e:#}"));
            let _ = writeln!(text, "--- spoke{k} ip {family} mroute ---\n{routes}");
        }
    }
    text + &topo.logs()
}

/// Documentation multicast groups: MCAST-TEST-NET (RFC 5771) and a global-scope group of
/// the RFC 6676 range.
const GROUPS: [&str; 2] = ["233.252.0.1", "ff0e::db8:0:1"];
const PORT: u16 = 4997;
/// Datagrams sent per group.
const COUNT: usize = 5;
/// The sender's TTL / hop limit: each spoke router's kernel forwarding takes one.
const HOPS: u32 = 8;
/// How long registration may take (first request at start-up, retransmission after 1 s).
const REGISTER_WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(200);
const RECEIVE_WAIT: Duration = Duration::from_secs(1);
/// Upper bound of the tunnel capture at spoke1 (sending takes about COUNT × 50 ms).
const CAPTURE_MAX: Duration = Duration::from_secs(10);
