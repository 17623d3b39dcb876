//! NHRP as other implementations read it: a spoke's underlay is captured while it
//! registers, gets a Traffic Indication, resolves another spoke, is answered directly and
//! purged, and Wireshark's NHRP dissector (tshark, an independent RFC 2332 implementation)
//! decodes every message of the capture: the expected types, good checksums, addresses as
//! configured, nothing malformed.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use mgre_e2e::{Capture, NhrpOptions, SiteId, Topology, ping, run_ok, wait_until};

const POLL: Duration = Duration::from_millis(200);

/// One decoded NHRP message: the fields asked of tshark, by name.
type Row = std::collections::BTreeMap<&'static str, String>;

const FIELDS: [&str; 13] = [
    "frame.number",
    "ip.proto",
    "nhrp.hdr.op.type",
    "nhrp.hdr.pro.type",
    "nhrp.ext.type",
    "nhrp.auth_ext.spi",
    "nhrp.hdr.chksum.status",
    "nhrp.src.nbma.addr",
    "nhrp.src.prot.addr",
    "nhrp.dst.prot.addr",
    "nhrp.code",
    "_ws.malformed",
    "_ws.expert.message",
];

fn decode(pcap: &std::path::Path) -> Result<Vec<Row>> {
    let mut args = vec![
        "-r".to_owned(),
        pcap.display().to_string(),
        "-Y".into(),
        "nhrp".into(),
        "-T".into(),
        "fields".into(),
        "-E".into(),
        "separator=|".into(),
        "-E".into(),
        "occurrence=a".into(),
        "-E".into(),
        "aggregator=,".into(),
    ];
    for f in FIELDS {
        args.push("-e".into());
        args.push(f.into());
    }
    let out = run_ok(Command::new("tshark").args(&args), Duration::from_secs(60))?;
    Ok(out
        .lines()
        .map(|l| {
            FIELDS
                .iter()
                .copied()
                .zip(l.split('|').map(str::to_owned))
                .collect()
        })
        .collect())
}

#[test]
fn tshark_decodes_every_nhrp_message_of_registration_shortcuts_and_purge() -> Result<()> {
    let mut topo = Topology::builder("nhdec")
        .spokes(2)
        .key(42)
        .nhrp(NhrpOptions {
            secret: Some("dmvpn".into()),
            shortcuts: true,
            ..NhrpOptions::default()
        })
        .build()?;
    let s1 = topo.spoke(1);
    let capture = Capture::start(&s1.router, &s1.underlay_iface)?;
    topo.start()?;
    let (s1, s2) = (topo.spoke(1), topo.spoke(2));
    let registered = |k: usize| -> Result<bool> {
        let nhs = topo.spoke(k).daemon().nhs()?;
        Ok(nhs["servers"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s["state"] == "registered")))
    };
    ensure!(
        wait_until(Duration::from_secs(20), POLL, || Ok(
            registered(1)? && registered(2)?
        ))?,
        "spokes did not register\n{}",
        topo.logs()
    );
    // Spoke-to-spoke traffic: redirect, resolution through the hub, direct answer.
    let lan2 = format!("{}/26", s2.addrs.lan_v4);
    let shortcut = wait_until(Duration::from_secs(15), POLL, || {
        ping(&s1.host, s2.addrs.host_v4.into(), 1);
        let v = s1.daemon().nhrp()?;
        Ok(v["entries"].as_array().is_some_and(|e| {
            e.iter()
                .any(|e| e["type"] == "shortcut" && e["protocol"] == lan2)
        }))
    })?;
    ensure!(shortcut, "no shortcut\n{}", topo.logs());
    // Spoke 2 stops: it purges its answer at spoke 1; then spoke 1 stops and purges its
    // registration at the hub.
    topo.stop_site(SiteId::Spoke(2))?;
    topo.stop_site(SiteId::Spoke(1))?;
    let (s1, s2) = (topo.spoke(1), topo.spoke(2));
    let pcap = topo.dir().join("spoke1-underlay.pcap");
    let packets = capture.finish(&pcap)?;
    ensure!(packets > 0, "nothing captured");

    let rows = decode(&pcap)?;
    let ops: BTreeSet<u8> = rows
        .iter()
        .filter_map(|r| r["nhrp.hdr.op.type"].parse().ok())
        .collect();
    // 1/2 resolution request/reply, 3/4 registration request/reply, 5 purge request,
    // 8 traffic indication.
    for op in [1, 2, 3, 4, 5, 8] {
        ensure!(
            ops.contains(&op),
            "no NHRP message of type {op} decoded (types seen: {ops:?}); capture {}",
            pcap.display()
        );
    }
    for r in &rows {
        // Checksum status 1 = good (0 would be unverified, 2 bad).
        ensure!(
            r["nhrp.hdr.chksum.status"] == "1",
            "checksum not good: {r:?}"
        );
        ensure!(
            r["nhrp.ext.type"].split(',').any(|t| t == "0x0007"),
            "no authentication extension: {r:?}"
        );
        if r["nhrp.hdr.pro.type"] == "0x0800" {
            // Cisco/FRR cleartext authentication: Wireshark shows its 4-byte type 1 as the
            // SPI.
            ensure!(
                r["_ws.malformed"].is_empty() && r["_ws.expert.message"].is_empty(),
                "tshark flags a message: {r:?}"
            );
            ensure!(
                r["nhrp.auth_ext.spi"] == "1",
                "not cleartext authentication: {r:?}"
            );
        } else {
            // Wireshark reads the authentication extension with RFC 2332's layout, whose
            // source address field is as long as a protocol address: 16 bytes for IPv6,
            // more than the 4-byte type and secret that Cisco and FRR send (as does mgre).
            // That is its only complaint.
            ensure!(
                r["_ws.expert.message"] == "Incomplete Authentication Extension",
                "tshark flags an IPv6 message: {r:?}"
            );
        }
    }
    // Registration Requests carry spoke 1's configured addresses; every Registration Reply
    // to it says success.
    let (nbma1, tun1) = (s1.addrs.nbma.to_string(), s1.addrs.tunnel_v4.to_string());
    let requests: Vec<&Row> = rows
        .iter()
        .filter(|r| r["nhrp.hdr.op.type"] == "3")
        .collect();
    ensure!(
        requests
            .iter()
            .any(|r| r["nhrp.src.nbma.addr"] == nbma1 && r["nhrp.src.prot.addr"] == tun1),
        "no registration request from {nbma1}/{tun1}: {requests:?}"
    );
    for r in rows.iter().filter(|r| r["nhrp.hdr.op.type"] == "4") {
        ensure!(
            r["nhrp.code"].split(',').all(|c| c == "0"),
            "registration refused: {r:?}"
        );
    }
    // The Traffic Indication comes from the hub.
    let hub_nbma = topo.hub().addrs.nbma.to_string();
    ensure!(
        rows.iter()
            .any(|r| r["nhrp.hdr.op.type"] == "8" && r["nhrp.src.nbma.addr"] == hub_nbma),
        "no traffic indication from the hub"
    );
    // The Resolution Reply comes straight from spoke 2.
    let nbma2 = s2.addrs.nbma.to_string();
    ensure!(
        rows.iter()
            .any(|r| r["nhrp.hdr.op.type"] == "2" && r["nhrp.src.nbma.addr"] == nbma2),
        "no resolution reply from spoke 2"
    );
    Ok(())
}
