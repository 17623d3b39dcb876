//! NHRP end to end: spokes configured with nothing but their NHS register with the hub over
//! real namespaces, the hub builds its endpoint table from the registrations, refuses wrong
//! secrets and disallowed underlay addresses (and counts them), forgets spokes that purge
//! or stop refreshing; NAT, two hubs, phase 3 shortcuts (also across a regional hub),
//! multicast and policy plugins.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mgre_e2e::{Encap, NhrpOptions, Site, Topology, counter, ping, tcp_transfer, wait_until};
use mgre_proto::wire::nhrp::NhrpRepr;
use serde_json::Value;

/// How long registration may take (first request at start-up, retransmission after 1 s).
const REGISTER_WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(200);

/// The hub's registered (dynamic) entries.
fn dynamic(hub: &Site) -> Result<Vec<Value>> {
    let v = hub.daemon().nhrp()?;
    Ok(v["entries"]
        .as_array()
        .context("entries")?
        .iter()
        .filter(|e| e["type"] == "dynamic")
        .cloned()
        .collect())
}

/// Prefixes the hub has registered for underlay address `nbma`.
fn registered_for(hub: &Site, nbma: &str) -> Result<Vec<String>> {
    Ok(dynamic(hub)?
        .iter()
        .filter(|e| e["nbma"] == nbma)
        .filter_map(|e| e["protocol"].as_str().map(str::to_owned))
        .collect())
}

/// What a spoke registers: its tunnel addresses and its LAN prefixes.
fn expected(site: &Site) -> Vec<String> {
    let a = &site.addrs;
    let mut v = vec![
        format!("{}/32", a.tunnel_v4),
        format!("{}/128", a.tunnel_v6),
        format!("{}/26", a.lan_v4),
        format!("{}/64", a.lan_v6),
    ];
    v.sort();
    v
}

fn wait_registered(topo: &Topology, site: &Site) -> Result<()> {
    wait_entries(topo, topo.hub(), site, expected(site))
}

/// Waits until `server` holds exactly the `want` prefixes for `site`'s underlay address.
fn wait_entries(topo: &Topology, server: &Site, site: &Site, mut want: Vec<String>) -> Result<()> {
    let nbma = site.addrs.nbma.to_string();
    want.sort();
    let mut got = Vec::new();
    let ok = wait_until(REGISTER_WAIT, POLL, || {
        got = registered_for(server, &nbma)?;
        got.sort();
        Ok(got == want)
    })?;
    ensure!(
        ok,
        "{} did not register with {}: it has {got:?}, want {want:?}\n{}",
        site.id.peer_name(),
        server.id.peer_name(),
        topo.logs()
    );
    Ok(())
}

fn ensure_ping(topo: &Topology, from: &Site, to: IpAddr) -> Result<()> {
    ensure!(
        ping(&from.host, to, 3),
        "{} LAN host cannot ping {to}\n{}",
        from.id.peer_name(),
        topo.logs()
    );
    Ok(())
}

#[test]
fn spokes_with_only_an_nhs_register_and_reach_each_other_through_the_hub() -> Result<()> {
    let mut topo = Topology::builder("nhreg")
        .spokes(3)
        .encap(3, Encap::GreUdp)
        .key(42)
        .nhrp(NhrpOptions {
            secret: Some("dmvpn".into()),
            ..NhrpOptions::default()
        })
        .build()?;
    topo.start()?;
    for k in 1..=3 {
        wait_registered(&topo, topo.spoke(k))?;
    }
    // Every spoke is registered with the hub for both families.
    for k in 1..=3 {
        let nhs = topo.spoke(k).daemon().nhs()?;
        let servers = nhs["servers"].as_array().context("servers")?;
        ensure!(
            servers.len() == 2
                && servers
                    .iter()
                    .all(|s| s["state"] == "registered" && s["active"] == true),
            "spoke{k} NHS state: {nhs}"
        );
    }
    // The hub made one peer per spoke, with the encapsulation the spoke registered over.
    let peers = topo.hub().daemon().peers()?;
    let peers = peers.as_array().context("peers")?;
    ensure!(peers.len() == 3, "hub peers: {peers:?}");
    let spoke3 = peers
        .iter()
        .find(|p| p["nbma"] == topo.spoke(3).addrs.nbma.to_string())
        .context("no peer for spoke3")?;
    ensure!(spoke3["encap"] == "gre-udp", "spoke3 peer: {spoke3}");

    // LAN to LAN through the hub, both families, GRE to GRE and GRE to GRE-in-UDP.
    let (s1, s2, s3) = (topo.spoke(1), topo.spoke(2), topo.spoke(3));
    for (from, to) in [(s1, s2), (s2, s3), (s3, s1)] {
        ensure_ping(&topo, from, to.addrs.host_v4.into())?;
        ensure_ping(&topo, from, to.addrs.host_v6.into())?;
    }
    let (sent, received) = tcp_transfer(&s1.host, &s3.host, s3.addrs.host_v4.into(), 1 << 20)
        .with_context(|| topo.logs())?;
    ensure!(sent == received, "TCP payload corrupted spoke1 -> spoke3");
    let hub = topo.hub().daemon().stats()?;
    ensure!(
        counter(&hub, "/hairpin/bytes")? >= 1 << 20,
        "the hub did not hairpin the transfer: {hub}"
    );

    // A spoke that stops purges its registrations: the hub forgets it at once (not after
    // the 30 s holding time) and its peer slot goes.
    topo.stop_site(mgre_e2e::SiteId::Spoke(2))?;
    let nbma2 = topo.spoke(2).addrs.nbma.to_string();
    let gone = wait_until(Duration::from_secs(5), POLL, || {
        Ok(registered_for(topo.hub(), &nbma2)?.is_empty())
    })?;
    let v = topo.hub().daemon().nhrp()?;
    ensure!(
        gone,
        "spoke2's entries outlived its purge: {v}\n{}",
        topo.logs()
    );
    ensure!(
        counter(&v, "/counters/purged")? >= 4,
        "purges not counted: {v}"
    );
    let peers = topo.hub().daemon().peers()?;
    ensure!(
        peers.as_array().is_some_and(|p| p.len() == 2),
        "spoke2's peer still listed: {peers}"
    );
    // The others still reach each other.
    ensure_ping(&topo, topo.spoke(1), topo.spoke(3).addrs.host_v6.into())?;
    Ok(())
}

#[test]
fn wrong_secret_and_disallowed_underlay_are_refused_and_counted() -> Result<()> {
    let s1 = mgre_e2e::SiteAddrs::of(mgre_e2e::SiteId::Spoke(1)).nbma;
    let s2 = mgre_e2e::SiteAddrs::of(mgre_e2e::SiteId::Spoke(2)).nbma;
    let mut topo = Topology::builder("nhnak")
        .spokes(3)
        .nhrp(NhrpOptions {
            secret: Some("right".into()),
            allowed_nbma: vec![format!("{s1}/32"), format!("{s2}/32")],
            ..NhrpOptions::default()
        })
        .nhrp_secret(2, "wrong")
        .metrics(true)
        .build()?;
    topo.start()?;
    wait_registered(&topo, topo.spoke(1))?;
    // spoke3 (underlay not allowed) is refused with code 4 (administratively prohibited);
    // spoke2 (wrong secret) cannot even verify the refusal — it carries the hub's secret —
    // so it ignores it. Both keep retrying with backoff, unregistered.
    for (k, refused_with_nak) in [(2, false), (3, true)] {
        let mut nhs = Value::Null;
        let refused = wait_until(REGISTER_WAIT, POLL, || {
            nhs = topo.spoke(k).daemon().nhs()?;
            Ok(nhs["servers"].as_array().is_some_and(|s| {
                s.iter().all(|s| {
                    s["state"] == "registering"
                        && if refused_with_nak {
                            s["naks"].as_u64() >= Some(1) && s["last_nak"] == 4
                        } else {
                            s["ignored"].as_u64() >= Some(1) && s["registrations"] == 0
                        }
                })
            }))
        })?;
        ensure!(refused, "spoke{k} was not refused: {nhs}\n{}", topo.logs());
    }
    let v = topo.hub().daemon().nhrp()?;
    ensure!(counter(&v, "/counters/nak_authentication")? >= 2, "{v}");
    ensure!(counter(&v, "/counters/nak_prohibited_nbma")? >= 2, "{v}");
    for k in [2, 3] {
        let nbma = topo.spoke(k).addrs.nbma.to_string();
        ensure!(
            registered_for(topo.hub(), &nbma)?.is_empty(),
            "spoke{k} got entries: {v}"
        );
    }
    // The refusals are in the metrics by result.
    let text = topo
        .hub()
        .router
        .run(|| mgre_e2e::scrape(mgre_e2e::METRICS_ADDR))?;
    for result in ["nak-authentication", "nak-prohibited-nbma", "added"] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("mgre_nhrp_registrations_total{")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .with_context(|| format!("no registrations metric for {result}:\n{text}"))?;
        let n: f64 = line.rsplit(' ').next().unwrap_or("0").parse()?;
        ensure!(n >= 1.0, "{line}");
    }
    // And spoke1 is reachable while the others are not.
    ensure_ping(&topo, topo.spoke(1), topo.hub().addrs.host_v4.into())?;
    ensure!(
        !ping(&topo.spoke(3).host, topo.hub().addrs.host_v4.into(), 2),
        "a refused spoke reaches the hub's LAN"
    );
    Ok(())
}

#[test]
fn a_spoke_that_dies_without_purging_expires_at_its_holding_time() -> Result<()> {
    let holdtime = 6;
    let mut topo = Topology::builder("nhexp")
        .spokes(2)
        .nhrp(NhrpOptions {
            holdtime,
            ..NhrpOptions::default()
        })
        .build()?;
    topo.start()?;
    wait_registered(&topo, topo.spoke(1))?;
    wait_registered(&topo, topo.spoke(2))?;
    // Refreshes (every holdtime / 3) keep spoke1 registered across several holding times.
    topo.kill_site(mgre_e2e::SiteId::Spoke(2))?;
    let killed = std::time::Instant::now();
    let nbma2 = topo.spoke(2).addrs.nbma.to_string();
    let gone = wait_until(Duration::from_secs(u64::from(holdtime) + 5), POLL, || {
        Ok(registered_for(topo.hub(), &nbma2)?.is_empty())
    })?;
    let took = killed.elapsed();
    ensure!(gone, "spoke2 never expired\n{}", topo.logs());
    ensure!(
        took >= Duration::from_secs(u64::from(holdtime) / 3),
        "spoke2 vanished after {took:?}, before its holding time could run out"
    );
    std::thread::sleep(Duration::from_secs(u64::from(holdtime)));
    wait_registered(&topo, topo.spoke(1))?;
    let v = topo.hub().daemon().nhrp()?;
    ensure!(counter(&v, "/counters/expired")? >= 4, "{v}");
    ensure!(
        counter(&v, "/counters/refreshed")? >= 4,
        "spoke1 never refreshed: {v}"
    );
    Ok(())
}

#[test]
fn a_spoke_behind_nat_registers_over_gre_in_udp_and_is_reachable() -> Result<()> {
    let mut topo = Topology::builder("nhnat")
        .spokes(3)
        .encap(3, Encap::GreUdp)
        .behind_nat(3)
        .nhrp(NhrpOptions::default())
        .build()?;
    topo.start()?;
    for k in 1..=3 {
        wait_registered(&topo, topo.spoke(k))?;
    }
    let public = mgre_e2e::nat_public_nbma(3).to_string();
    let private = mgre_e2e::nat_private_nbma(3).to_string();
    // The hub sees the spoke's claimed (private) address and where its packets come from.
    let entries = dynamic(topo.hub())?;
    let natted: Vec<&Value> = entries.iter().filter(|e| e["nbma"] == private).collect();
    ensure!(
        natted.len() == 4
            && natted.iter().all(|e| e["underlay"] == public
                && e["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f == "nat"))),
        "hub's view of the NATed spoke: {entries:?}"
    );
    // The spoke learnt its post-NAT address from the registration reply.
    let nhs = topo.spoke(3).daemon().nhs()?;
    ensure!(
        nhs["servers"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["nat_nbma"] == public.as_str())),
        "spoke3 did not detect NAT: {nhs}"
    );
    // Reachable both ways: the hub sends to the NAT's mapping of the spoke's port.
    let (s1, s3) = (topo.spoke(1), topo.spoke(3));
    for (from, to) in [(s1, s3), (s3, s1)] {
        ensure_ping(&topo, from, to.addrs.host_v4.into())?;
        ensure_ping(&topo, from, to.addrs.host_v6.into())?;
    }
    ensure_ping(&topo, topo.hub(), s3.addrs.host_v4.into())?;
    let (sent, received) = tcp_transfer(&s1.host, &s3.host, s3.addrs.host_v4.into(), 1 << 20)
        .with_context(|| topo.logs())?;
    ensure!(sent == received, "TCP payload corrupted to the NATed spoke");
    Ok(())
}

#[test]
fn with_two_hubs_traffic_resumes_through_the_other_when_one_dies() -> Result<()> {
    // holdtime 6 s: refreshes every 2 s; a hub that leaves a refresh and one retransmission
    // (1 s, then 2 s backoff) unanswered counts as lost, so each spoke moves to the backup
    // hub at most holdtime/3 + 1 + 2 s after the hub dies.
    let holdtime = 6u64;
    let bound = Duration::from_secs(holdtime / 3 + 1 + 2 + 3);
    let mut topo = Topology::builder("nhtwo")
        .spokes(2)
        .backup_hub()
        .nhrp(NhrpOptions {
            holdtime: holdtime as u16,
            failover_after: Some(1),
            ..NhrpOptions::default()
        })
        .build()?;
    topo.start()?;
    let hub2 = mgre_e2e::SiteId::BackupHub;
    for k in 1..=2 {
        wait_registered(&topo, topo.spoke(k))?;
        let nbma = topo.spoke(k).addrs.nbma.to_string();
        let mut got = Vec::new();
        let ok = wait_until(REGISTER_WAIT, POLL, || {
            got = registered_for(topo.site(hub2), &nbma)?;
            Ok(got.len() == 4)
        })?;
        ensure!(
            ok,
            "spoke{k} not registered with hub2: {got:?}\n{}",
            topo.logs()
        );
    }
    let (s1, s2) = (topo.spoke(1), topo.spoke(2));
    let target: IpAddr = s2.addrs.host_v4.into();
    ensure_ping(&topo, s1, target)?;
    let via_hub = counter(&topo.hub().daemon().stats()?, "/hairpin/packets")?;
    ensure!(via_hub > 0, "traffic did not go through the preferred hub");
    let hub2_before = counter(&topo.site(hub2).daemon().stats()?, "/hairpin/packets")?;

    // Mid-stream: a ping every 200 ms runs while the preferred hub dies.
    let stream = std::thread::scope(|scope| -> Result<(bool, Duration)> {
        let pinger = scope.spawn(|| ping(&s1.host, target, 120));
        std::thread::sleep(Duration::from_secs(2));
        let killed = std::time::Instant::now();
        topo_kill(&topo)?;
        // Poll from a second host-side probe until the path works again.
        let resumed = wait_until(bound + Duration::from_secs(10), POLL, || {
            Ok(ping(&s1.host, target, 1))
        })?;
        let took = killed.elapsed();
        let _ = pinger.join();
        Ok((resumed, took))
    });
    let (resumed, took) = stream?;
    ensure!(
        resumed,
        "traffic never resumed after the hub died\n{}",
        topo.logs()
    );
    ensure!(
        took <= bound,
        "traffic resumed only after {took:?} (bound {bound:?})\n{}",
        topo.logs()
    );
    // Through the backup hub, which both spokes now name active.
    let hub2_after = counter(&topo.site(hub2).daemon().stats()?, "/hairpin/packets")?;
    ensure!(hub2_after > hub2_before, "the backup hub carried nothing");
    for k in 1..=2 {
        let nhs = topo.spoke(k).daemon().nhs()?;
        let active: Vec<&Value> = nhs["servers"]
            .as_array()
            .context("servers")?
            .iter()
            .filter(|s| s["active"] == true)
            .collect();
        ensure!(
            !active.is_empty() && active.iter().all(|s| s["nbma"] == "192.0.2.2"),
            "spoke{k} NHS state after failover: {nhs}"
        );
    }
    Ok(())
}

/// Kills the preferred hub's daemon (SIGKILL: it neither purges nor says goodbye).
fn topo_kill(topo: &Topology) -> Result<()> {
    let pid = topo.hub().daemon().pid().context("hub pid")?;
    // SAFETY: plain syscall on the PID of a daemon this test started and has not reaped.
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    ensure!(r == 0, "kill({pid}) failed");
    Ok(())
}

/// A spoke's shortcut entries (`mgre show nhrp` rows of type `shortcut`).
fn shortcuts(site: &Site) -> Result<Vec<Value>> {
    let v = site.daemon().nhrp()?;
    Ok(v["entries"]
        .as_array()
        .context("entries")?
        .iter()
        .filter(|e| e["type"] == "shortcut")
        .cloned()
        .collect())
}

fn has_shortcut(site: &Site, prefix: &str, nbma: &str) -> Result<bool> {
    Ok(shortcuts(site)?
        .iter()
        .any(|e| e["protocol"] == prefix && e["nbma"] == nbma))
}

#[test]
fn spoke_to_spoke_traffic_moves_from_the_hub_to_a_direct_shortcut() -> Result<()> {
    let idle = 6;
    let mut topo = Topology::builder("nhsc")
        .spokes(2)
        .nhrp(NhrpOptions {
            shortcuts: true,
            shortcut_idle: Some(idle),
            ..NhrpOptions::default()
        })
        .metrics(true)
        .build()?;
    topo.start()?;
    wait_registered(&topo, topo.spoke(1))?;
    wait_registered(&topo, topo.spoke(2))?;
    let (s1, s2) = (topo.spoke(1), topo.spoke(2));
    let (n1, n2) = (s1.addrs.nbma.to_string(), s2.addrs.nbma.to_string());
    let lan1 = format!("{}/26", s1.addrs.lan_v4);
    let lan2 = format!("{}/26", s2.addrs.lan_v4);
    let lan2_v6 = format!("{}/64", s2.addrs.lan_v6);

    // The first packets go through the hub, which redirects both spokes; they resolve each
    // other's LANs and install shortcuts.
    let hairpin_start = counter(&topo.hub().daemon().stats()?, "/hairpin/packets")?;
    ensure_ping(&topo, s1, s2.addrs.host_v4.into())?;
    ensure_ping(&topo, s1, s2.addrs.host_v6.into())?;
    let mut seen = (Vec::new(), Vec::new());
    let installed = wait_until(Duration::from_secs(15), POLL, || {
        // Keep a little traffic flowing while the resolutions run.
        ping(&s1.host, s2.addrs.host_v4.into(), 1);
        ping(&s1.host, s2.addrs.host_v6.into(), 1);
        seen = (shortcuts(s1)?, shortcuts(s2)?);
        Ok(has_shortcut(s1, &lan2, &n2)?
            && has_shortcut(s1, &lan2_v6, &n2)?
            && has_shortcut(s2, &lan1, &n1)?)
    })?;
    ensure!(
        installed,
        "no shortcuts: spoke1 {:?}, spoke2 {:?}\n{}",
        seen.0,
        seen.1,
        topo.logs()
    );
    ensure!(
        counter(&topo.hub().daemon().stats()?, "/hairpin/packets")? > hairpin_start,
        "the first packets should have crossed the hub"
    );
    let hub_metrics = topo
        .hub()
        .router
        .run(|| mgre_e2e::scrape(mgre_e2e::METRICS_ADDR))?;
    ensure!(
        hub_metrics
            .lines()
            .any(|l| l.starts_with("mgre_nhrp_redirects_total{") && !l.ends_with(" 0")),
        "no redirects in the hub's metrics"
    );

    // Now the transfer goes spoke to spoke: the hub's hairpin counter stands still while
    // spoke1's peer for spoke2 carries the bytes.
    let hub_before = counter(&topo.hub().daemon().stats()?, "/hairpin/packets")?;
    let peer_tx = |site: &Site, nbma: &str| -> Result<u64> {
        let peers = site.daemon().peers()?;
        Ok(peers
            .as_array()
            .context("peers")?
            .iter()
            .find(|p| p["nbma"] == nbma)
            .and_then(|p| p["tx_bytes"].as_u64())
            .unwrap_or(0))
    };
    let direct_before = peer_tx(s1, &n2)?;
    let bytes = 2 << 20;
    let (sent, received) = tcp_transfer(&s1.host, &s2.host, s2.addrs.host_v4.into(), bytes)
        .with_context(|| topo.logs())?;
    ensure!(sent == received, "TCP payload corrupted on the shortcut");
    let hub_after = counter(&topo.hub().daemon().stats()?, "/hairpin/packets")?;
    let direct = peer_tx(s1, &n2)? - direct_before;
    ensure!(
        hub_after - hub_before < 20,
        "the hub still forwarded {} packets of the transfer",
        hub_after - hub_before
    );
    ensure!(
        direct >= bytes as u64,
        "spoke1 sent only {direct} bytes to spoke2 directly"
    );

    // Idle shortcuts expire; the next packets take the hub again.
    let expired = wait_until(Duration::from_secs(idle + 8), POLL, || {
        Ok(!has_shortcut(s1, &lan2, &n2)?)
    })?;
    ensure!(
        expired,
        "spoke1's idle shortcut never expired: {:?}",
        shortcuts(s1)?
    );

    // A fresh shortcut, then spoke2 stops: its purge withdraws spoke1's shortcut at once.
    let again = wait_until(Duration::from_secs(15), POLL, || {
        ping(&s1.host, s2.addrs.host_v4.into(), 1);
        has_shortcut(s1, &lan2, &n2)
    })?;
    ensure!(again, "no second shortcut\n{}", topo.logs());
    topo.stop_site(mgre_e2e::SiteId::Spoke(2))?;
    let withdrawn = wait_until(Duration::from_secs(3), POLL, || {
        Ok(shortcuts(topo.spoke(1))?
            .iter()
            .all(|e| e["nbma"] != n2.as_str()))
    })?;
    ensure!(
        withdrawn,
        "spoke2's purge did not withdraw spoke1's shortcuts: {:?}",
        shortcuts(topo.spoke(1))?
    );
    Ok(())
}

#[test]
fn multicast_crosses_the_overlay_from_a_spoke_and_from_the_hub() -> Result<()> {
    use mgre_e2e::{multicast_received, multicast_receiver, multicast_send};
    let mut topo = Topology::builder("nhmc")
        .spokes(3)
        .encap(3, Encap::GreUdp)
        .nhrp(NhrpOptions::default())
        .build()?;
    topo.start()?;
    for k in 1..=3 {
        wait_registered(&topo, topo.spoke(k))?;
    }
    // Documentation multicast groups (RFC 5771 MCAST-TEST-NET, RFC 6676).
    let groups: [IpAddr; 2] = ["233.252.0.1".parse()?, "ff02::db8:0:1".parse()?];
    let port = 4999;
    for group in groups {
        // A routing-protocol-like hello from spoke1 reaches the hub (its TUN) and, through
        // the hub's replication, spoke2 (GRE) and spoke3 (GRE-in-UDP) — not spoke1 again.
        let listeners: Vec<(String, std::net::UdpSocket)> =
            [topo.hub(), topo.spoke(1), topo.spoke(2), topo.spoke(3)]
                .iter()
                .map(|s| {
                    Ok((
                        s.id.peer_name(),
                        multicast_receiver(&s.router, group, port, &s.tun)?,
                    ))
                })
                .collect::<Result<_>>()?;
        let tag = format!("from-spoke1-{group}");
        multicast_send(
            &topo.spoke(1).router,
            group,
            port,
            &topo.spoke(1).tun,
            &tag,
            5,
        )?;
        for (name, socket) in &listeners {
            let got = multicast_received(socket, &tag, Duration::from_secs(1));
            if name == "spoke1" {
                ensure!(
                    got.is_empty(),
                    "the hub sent spoke1's multicast back to it: {got:?}"
                );
            } else {
                ensure!(
                    got.len() >= 4,
                    "{name} received {} of 5 multicast datagrams to {group} from spoke1\n{}",
                    got.len(),
                    topo.logs()
                );
            }
        }
        // The hub's own hellos reach every spoke.
        let tag = format!("from-hub-{group}");
        multicast_send(&topo.hub().router, group, port, &topo.hub().tun, &tag, 5)?;
        for (name, socket) in listeners.iter().filter(|(n, _)| n != "hub") {
            let got = multicast_received(socket, &tag, Duration::from_secs(1));
            ensure!(
                got.len() >= 4,
                "{name} received {} of 5 multicast datagrams to {group} from the hub\n{}",
                got.len(),
                topo.logs()
            );
        }
    }
    Ok(())
}

#[test]
fn admission_and_shortcut_policy_plugins_decide_on_the_hub() -> Result<()> {
    use mgre_e2e::{PluginEntry, multicast_received, multicast_receiver, multicast_send};
    let admission = PluginEntry::new("admission", "nhrp_admission.wasm")
        .hooks(&["admission"])
        .config(
            r#"default = "refuse"
[[plugin.config.site]]
nbma = "192.0.2.11/32"
qos-group = { id = 10, name = "gold" }
multicast = false
holdtime-cap = 20
[[plugin.config.site]]
nbma = "192.0.2.12/32"
"#,
        );
    let policy = PluginEntry::new("shortcuts", "shortcut_policy.wasm")
        .hooks(&["shortcut"])
        .config(
            r#"default = "allow"
[[plugin.config.rule]]
to = "203.0.113.64/26"
action = "deny"
"#,
        );
    let mut topo = Topology::builder("nhpol")
        .spokes(3)
        .nhrp(NhrpOptions {
            shortcuts: true,
            ..NhrpOptions::default()
        })
        .plugin(mgre_e2e::SiteId::Hub, admission)
        .plugin(mgre_e2e::SiteId::Hub, policy)
        .build()?;
    let hub = topo.hub();
    hub.install_plugin(
        "nhrp_admission.wasm",
        &mgre_e2e::plugin_wasm("nhrp-admission")?,
    )?;
    hub.install_plugin(
        "shortcut_policy.wasm",
        &mgre_e2e::plugin_wasm("shortcut-policy")?,
    )?;
    topo.start()?;
    wait_registered(&topo, topo.spoke(1))?;
    wait_registered(&topo, topo.spoke(2))?;

    // spoke3 matches no site: refused by the plugin with code 4.
    let mut nhs = Value::Null;
    let refused = wait_until(REGISTER_WAIT, POLL, || {
        nhs = topo.spoke(3).daemon().nhs()?;
        Ok(nhs["servers"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["last_nak"] == 4)))
    })?;
    ensure!(refused, "spoke3 was not refused: {nhs}\n{}", topo.logs());
    let v = topo.hub().daemon().nhrp()?;
    ensure!(counter(&v, "/counters/nak_policy")? >= 1, "{v}");
    ensure!(
        registered_for(topo.hub(), &topo.spoke(3).addrs.nbma.to_string())?.is_empty(),
        "spoke3 got entries: {v}"
    );

    // spoke1's attributes: QoS group, out of the multicast map, holding time capped.
    let s1_entries: Vec<Value> = dynamic(topo.hub())?
        .into_iter()
        .filter(|e| e["nbma"] == "192.0.2.11")
        .collect();
    ensure!(
        s1_entries.iter().all(|e| e["qos_group"] == "gold"
            && e["holdtime"] == 20
            && e["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "no-multicast"))),
        "spoke1's entries: {s1_entries:?}"
    );
    let group: IpAddr = "233.252.0.1".parse()?;
    let listeners = [topo.spoke(1), topo.spoke(2)]
        .iter()
        .map(|s| multicast_receiver(&s.router, group, 4998, &s.tun))
        .collect::<Result<Vec<_>>>()?;
    multicast_send(&topo.hub().router, group, 4998, &topo.hub().tun, "hello", 5)?;
    let got: Vec<usize> = listeners
        .iter()
        .map(|l| multicast_received(l, "hello", Duration::from_secs(1)).len())
        .collect();
    ensure!(
        got[0] == 0 && got[1] >= 4,
        "multicast copies (spoke1 out of the map, spoke2 in): {got:?}"
    );

    // The shortcut policy denies shortcuts to spoke2's LAN: traffic keeps crossing the hub.
    let (s1, s2) = (topo.spoke(1), topo.spoke(2));
    let before = counter(&topo.hub().daemon().stats()?, "/hairpin/packets")?;
    for _ in 0..4 {
        ensure_ping(&topo, s1, s2.addrs.host_v4.into())?;
    }
    std::thread::sleep(Duration::from_secs(1));
    ensure!(
        shortcuts(s1)?.is_empty() && shortcuts(s2)?.is_empty(),
        "a denied shortcut was installed: {:?} {:?}",
        shortcuts(s1)?,
        shortcuts(s2)?
    );
    let stats = topo.hub().daemon().stats()?;
    ensure!(
        counter(&stats, "/hairpin/packets")? >= before + 8,
        "the pings did not cross the hub"
    );
    let v = topo.hub().daemon().nhrp()?;
    ensure!(counter(&v, "/counters/shortcuts_denied")? >= 1, "{v}");
    Ok(())
}

#[test]
fn a_regional_hub_registers_its_region_with_the_core_hub_and_spokes_shortcut_across_regions()
-> Result<()> {
    // Spoke 1 runs as a regional hub with spoke 2 behind it; spoke 3 registers with the hub,
    // which is the regional hub's core hub.
    let mut topo = Topology::builder("nhrg")
        .spokes(3)
        .encap(3, Encap::GreUdp)
        .regional_hub(1, &[2])
        .nhrp(NhrpOptions {
            secret: Some("dmvpn".into()),
            shortcuts: true,
            ..NhrpOptions::default()
        })
        .build()?;
    topo.start()?;
    let (core, regional) = (topo.hub(), topo.spoke(1));
    let (s2, s3) = (topo.spoke(2), topo.spoke(3));
    // The regional hub registers its tunnel addresses and its region's summaries (its own
    // LAN and spoke 2's) with the core hub; spoke 2 registers with the regional hub only.
    let r = &regional.addrs;
    let region = vec![
        format!("{}/32", r.tunnel_v4),
        format!("{}/128", r.tunnel_v6),
        "203.0.113.0/25".to_owned(),
        "2001:db8::/46".to_owned(),
    ];
    wait_entries(&topo, core, regional, region)?;
    wait_entries(&topo, regional, s2, expected(s2))?;
    wait_registered(&topo, s3)?;
    ensure!(
        registered_for(core, &s2.addrs.nbma.to_string())?.is_empty(),
        "spoke2 registered with the core hub"
    );
    let nhs = regional.daemon().nhs()?;
    ensure!(
        nhs["role"] == "hub"
            && nhs["servers"].as_array().is_some_and(|s| s.len() == 2
                && s.iter().all(
                    |s| s["state"] == "registered" && s["nbma"] == core.addrs.nbma.to_string()
                )),
        "regional hub's NHS state: {nhs}"
    );

    // Across regions: spoke 2 -> regional hub -> core hub -> spoke 3 and back, both
    // families; the regional hub's own LAN reaches both regions too.
    let hairpin =
        |site: &Site| -> Result<u64> { counter(&site.daemon().stats()?, "/hairpin/packets") };
    let core_start = hairpin(core)?;
    ensure_ping(&topo, s2, s3.addrs.host_v4.into())?;
    ensure_ping(&topo, s2, s3.addrs.host_v6.into())?;
    ensure_ping(&topo, regional, s3.addrs.host_v4.into())?;
    ensure_ping(&topo, regional, s2.addrs.host_v6.into())?;
    ensure!(
        hairpin(core)? > core_start,
        "the first packets should have crossed the core hub"
    );

    // Both hubs redirect; spoke 2's resolution of spoke 3's LAN goes up through the
    // regional hub to the core hub, spoke 3's down through both hubs to spoke 2, and each
    // answers the other directly.
    let (n2, n3) = (s2.addrs.nbma.to_string(), s3.addrs.nbma.to_string());
    let (lan2, lan3) = (
        format!("{}/26", s2.addrs.lan_v4),
        format!("{}/26", s3.addrs.lan_v4),
    );
    let lan2_v6 = format!("{}/64", s2.addrs.lan_v6);
    let mut seen = (Vec::new(), Vec::new());
    let installed = wait_until(Duration::from_secs(20), POLL, || {
        ping(&s2.host, s3.addrs.host_v4.into(), 1);
        ping(&s3.host, s2.addrs.host_v6.into(), 1);
        seen = (shortcuts(s2)?, shortcuts(s3)?);
        Ok(has_shortcut(s2, &lan3, &n3)?
            && has_shortcut(s3, &lan2, &n2)?
            && has_shortcut(s3, &lan2_v6, &n2)?)
    })?;
    ensure!(
        installed,
        "no shortcuts across regions: spoke2 {:?}, spoke3 {:?}\n{}",
        seen.0,
        seen.1,
        topo.logs()
    );
    let v = regional.daemon().nhrp()?;
    ensure!(
        counter(&v, "/counters/resolutions_upstream")? > 0,
        "the regional hub passed no resolution up: {v}"
    );

    // The transfer now goes spoke to spoke: neither hub forwards it.
    let before = (hairpin(core)?, hairpin(regional)?);
    let bytes = 2 << 20;
    let (sent, received) = tcp_transfer(&s2.host, &s3.host, s3.addrs.host_v4.into(), bytes)
        .with_context(|| topo.logs())?;
    ensure!(sent == received, "TCP payload corrupted on the shortcut");
    let after = (hairpin(core)?, hairpin(regional)?);
    ensure!(
        after.0 - before.0 < 20 && after.1 - before.1 < 20,
        "the hubs still forwarded the transfer: core {} and regional {} packets",
        after.0 - before.0,
        after.1 - before.1
    );

    // A regional hub that stops withdraws its region from the core hub at once.
    topo.stop_site(mgre_e2e::SiteId::Spoke(1))?;
    let nbma = topo.spoke(1).addrs.nbma.to_string();
    let gone = wait_until(Duration::from_secs(5), POLL, || {
        Ok(registered_for(topo.hub(), &nbma)?.is_empty())
    })?;
    ensure!(
        gone,
        "the regional hub's purge did not reach the core hub\n{}",
        topo.logs()
    );
    Ok(())
}

#[test]
fn a_message_with_an_unknown_compulsory_extension_gets_an_error_indication() -> Result<()> {
    use mgre_proto::wire::nhrp::{Body, Cie, Extension, ExtensionBody, Family, Operation};
    let mut topo = Topology::builder("nhext")
        .spokes(1)
        .nhrp(NhrpOptions {
            shortcuts: true,
            ..NhrpOptions::default()
        })
        .build()?;
    topo.start()?;
    wait_registered(&topo, topo.spoke(1))?;
    let (hub, spoke) = (topo.hub(), topo.spoke(1));
    // A Resolution Request for the spoke's LAN, as its NHS would forward it, but carrying a
    // compulsory extension of a type nobody defined (RFC 2332 §5.3): the spoke must not
    // answer it and must tell the sender with an Error Indication.
    let request = |extensions: Vec<Extension>| -> Result<Vec<u8>> {
        let repr = NhrpRepr {
            nbma: Family::Ipv4,
            protocol: Family::Ipv4,
            snap: [0; 5],
            hop_count: 16,
            src_nbma: Some(hub.addrs.nbma.into()),
            src_nbma_subaddress: Vec::new(),
            src_proto: Some(hub.addrs.tunnel_v4.into()),
            dst_proto: Some(spoke.addrs.host_v4.into()),
            body: Body::Entries {
                op: Operation::ResolutionRequest,
                flags: 0,
                request_id: 77,
                cies: vec![Cie {
                    code: 0,
                    prefix_len: 0,
                    mtu: 0,
                    holding_time: 30,
                    preference: 0,
                    nbma: None,
                    nbma_subaddress: Vec::new(),
                    proto: None,
                }],
            },
            extensions,
        };
        // GRE header: no flags, protocol NHRP (0x2001).
        let mut bytes = vec![0, 0, 0x20, 0x01];
        repr.emit(&mut bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(bytes)
    };
    let unknown = Extension {
        compulsory: true,
        body: ExtensionBody::Unknown {
            kind: 0x0123,
            data: vec![1, 2, 3, 4],
        },
    };
    let counters = |site: &Site| -> Result<Value> { Ok(site.daemon().nhrp()?["counters"].clone()) };
    let hub_errors = counters(hub)?["error_indications"].as_u64().unwrap_or(0);
    mgre_e2e::send_raw_gre(
        &hub.router,
        spoke.addrs.nbma.into(),
        &[request(vec![unknown])?],
    )?;
    let mut c = Value::Null;
    let refused = wait_until(Duration::from_secs(5), POLL, || {
        c = counters(spoke)?;
        Ok(c["unrecognized_extensions"] == 1)
    })?;
    ensure!(
        refused,
        "the spoke did not refuse the request: {c}\n{}",
        topo.logs()
    );
    ensure!(
        c["resolution_requests_answered"] == 0,
        "the spoke answered a request it must not act on: {c}"
    );
    let indicated = wait_until(Duration::from_secs(5), POLL, || {
        Ok(counters(hub)?["error_indications"].as_u64().unwrap_or(0) > hub_errors)
    })?;
    ensure!(
        indicated,
        "no Error Indication reached the hub\n{}",
        topo.logs()
    );

    // The same request without the extension is answered (so the refusal was the
    // extension's doing).
    mgre_e2e::send_raw_gre(
        &hub.router,
        spoke.addrs.nbma.into(),
        &[request(Vec::new())?],
    )?;
    let answered = wait_until(Duration::from_secs(5), POLL, || {
        c = counters(spoke)?;
        Ok(c["resolution_requests_answered"] == 1)
    })?;
    ensure!(
        answered,
        "the plain request was not answered: {c}\n{}",
        topo.logs()
    );
    Ok(())
}

#[test]
fn a_spoke_of_another_nhrp_network_cannot_register() -> Result<()> {
    // The hub and spoke1 are NHRP network 42 (their tunnel key); spoke2 is configured for
    // network 7 with the same hub as its NHS.
    let mut topo = Topology::builder("nhnet")
        .spokes(2)
        .key(42)
        .tunnel_key(mgre_e2e::SiteId::Spoke(2), 7)
        .nhrp(NhrpOptions::default())
        .build()?;
    topo.start()?;
    wait_registered(&topo, topo.spoke(1))?;
    let hub = topo.hub();
    let spoke2 = topo.spoke(2);
    let mut nhs = Value::Null;
    let retrying = wait_until(Duration::from_secs(10), POLL, || {
        nhs = spoke2.daemon().nhs()?;
        Ok(nhs["servers"].as_array().is_some_and(|s| {
            s.iter()
                .all(|s| s["state"] == "registering" && s["retransmissions"].as_u64() >= Some(1))
        }))
    })?;
    ensure!(
        retrying,
        "spoke2 should keep retrying: {nhs}\n{}",
        topo.logs()
    );
    ensure!(
        registered_for(hub, &spoke2.addrs.nbma.to_string())?.is_empty(),
        "the hub registered a spoke of another network"
    );
    // Its registrations never reached the hub's NHRP state: dropped and counted as from an
    // unknown peer.
    let stats = hub.daemon().stats()?;
    ensure!(
        counter(&stats, "/drops/unknown-peer")? >= 2,
        "the other network's registrations were not counted: {stats}"
    );
    let v = hub.daemon().nhrp()?;
    ensure!(v["network_id"] == 1, "network-id not shown: {v}");
    ensure!(
        !ping(&spoke2.host, topo.spoke(1).addrs.host_v4.into(), 2),
        "a spoke of another network reaches this one"
    );
    Ok(())
}
