//! End-to-end tests of `mgre` in the reference topology of `docs/contract.md`.
//!
//! Each test builds its own topology in fresh namespaces (names carry the PID and a
//! per-test tag, so tests run in parallel), starts the real `mgre` binary in them and
//! checks what a user can observe: reachability through the hub, byte-exact TCP, the
//! counters of `mgre show`, MSS clamping, and `mgre check` diagnostics. They need root and
//! a built daemon: `cargo build --release -p mgre` first (or set `MGRE_BIN`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mgre_e2e::packet::{inet_checksum, ipv4_icmp_echo};
use mgre_e2e::{
    Encap, Site, SiteId, TempDir, Topology, TopologyBuilder, counter, mgre_check, ping,
    send_raw_gre, send_udp, syn_mss, tcp_transfer, wait_until,
};

#[test]
fn lan_to_lan_through_the_hub() -> Result<()> {
    let topo = started(Topology::builder("l2l"))?;
    let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
    ensure_lan_to_lan(&topo, s1, s2)?;
    ensure_lan_to_lan(&topo, s2, s1)?;

    let before = hub.daemon().stats()?;
    let (sent, received) =
        tcp_transfer(&s1.host, &s2.host, s2.addrs.host_v4.into(), TRANSFER_BYTES)
            .with_context(|| topo.logs())?;
    ensure!(
        sent == received,
        "TCP payload corrupted between the spokes' LANs"
    );
    let (sent, received) = tcp_transfer(
        &s2.host,
        &s1.host,
        s1.addrs.host_v6.into(),
        TRANSFER_BYTES_V6,
    )
    .with_context(|| topo.logs())?;
    ensure!(
        sent == received,
        "TCP payload (IPv6) corrupted between the spokes' LANs"
    );

    // Hub-side counters settle right after the last segment; allow them a moment.
    let mut after = before.clone();
    let grown = wait_until(COUNTER_WAIT, POLL, || {
        after = hub.daemon().stats()?;
        Ok(
            counter(&after, "/hairpin/bytes")? - counter(&before, "/hairpin/bytes")?
                >= (TRANSFER_BYTES + TRANSFER_BYTES_V6) as u64,
        )
    })?;
    let packets = counter(&after, "/hairpin/packets")? - counter(&before, "/hairpin/packets")?;
    ensure!(
        grown && packets > 0,
        "hub hairpin did not carry the transfers: before {before}\nafter {after}"
    );
    Ok(())
}

#[test]
fn spoke_lan_reaches_the_hub_lan() -> Result<()> {
    let mut topo = started(Topology::builder("s2h"))?;
    let (hub, s1) = (topo.hub(), topo.spoke(1));
    for addr in host_addrs(hub) {
        ensure_ping(&topo, s1, addr)?;
    }
    for addr in host_addrs(s1) {
        ensure_ping(&topo, hub, addr)?;
    }

    // Contract: SIGTERM ends the daemon with exit 0 and it removes its TUN.
    let status = topo.stop_site(SiteId::Hub)?;
    ensure!(
        status.success(),
        "hub daemon exited with {status} after SIGTERM"
    );
    ensure!(
        !topo.hub().tun_exists(),
        "hub TUN {} still there after exit",
        topo.hub().tun
    );
    Ok(())
}

#[test]
fn lan_to_lan_over_gre_in_udp() -> Result<()> {
    let topo = started(
        Topology::builder("udp")
            .encap(1, Encap::GreUdp)
            .encap(2, Encap::GreUdp),
    )?;
    let (s1, s2) = (topo.spoke(1), topo.spoke(2));
    ensure_lan_to_lan(&topo, s1, s2)?;
    ensure_lan_to_lan(&topo, s2, s1)?;
    let hub_peer = s1.daemon().peer("hub")?;
    ensure!(
        hub_peer["encap"] == "gre-udp",
        "spoke1's hub peer: {hub_peer}"
    );
    Ok(())
}

#[test]
fn lan_to_lan_with_mixed_encapsulation() -> Result<()> {
    let topo = started(Topology::builder("mix").encap(2, Encap::GreUdp))?;
    let (s1, s2) = (topo.spoke(1), topo.spoke(2));
    ensure_lan_to_lan(&topo, s1, s2)?;
    ensure_lan_to_lan(&topo, s2, s1)?;
    let spoke2 = topo.hub().daemon().peer("spoke2")?;
    ensure!(spoke2["encap"] == "gre-udp", "hub's spoke2 peer: {spoke2}");
    Ok(())
}

#[test]
fn traffic_flows_with_a_key_on_all_sites() -> Result<()> {
    let topo = started(Topology::builder("key").key(42))?;
    let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
    ensure_lan_to_lan(&topo, s1, s2)?;
    for addr in host_addrs(hub) {
        ensure_ping(&topo, s2, addr)?;
    }
    let hub_peer = s1.daemon().peer("hub")?;
    ensure!(hub_peer["key"] == 42, "spoke1's hub peer: {hub_peer}");
    Ok(())
}

#[test]
fn traffic_flows_with_per_spoke_keys() -> Result<()> {
    let topo = started(Topology::builder("pkey").spoke_key(1, 7).spoke_key(2, 9))?;
    let (s1, s2) = (topo.spoke(1), topo.spoke(2));
    ensure_lan_to_lan(&topo, s1, s2)?;
    let spoke2 = topo.hub().daemon().peer("spoke2")?;
    ensure!(spoke2["key"] == 9, "hub's spoke2 peer: {spoke2}");
    Ok(())
}

#[test]
fn malformed_gre_is_dropped_and_counted() -> Result<()> {
    // Checksums and sequence numbers off, so each crafted packet differs from what the
    // hub expects from spoke1 by exactly the one defect under test.
    let topo = started(
        Topology::builder("bad")
            .key(KEY)
            .checksum(false)
            .sequence(false),
    )?;
    let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
    ensure_lan_to_lan(&topo, s1, s2)?;

    let inner = ipv4_icmp_echo(s1.addrs.host_v4, hub.addrs.host_v4, 0x6d67, 1, 32);
    let valid = Gre {
        key: Some(KEY),
        ..Gre::default()
    };
    let burst = |packet: Vec<u8>| vec![packet; BURST];

    // Control: the same packet without a defect is accepted and reaches the hub's TUN,
    // which shows the crafted packets are otherwise what the hub wants.
    let before = hub.daemon().stats()?;
    send_raw_gre(
        &s1.router,
        hub.addrs.nbma.into(),
        &burst(valid.emit(&inner)),
    )?;
    ensure_counter_grows(&topo, &before, "/tun_tx/packets")?;

    let cases = [
        (
            "key-mismatch",
            Gre {
                key: Some(KEY + 1),
                ..valid
            }
            .emit(&inner),
        ),
        (
            "bad-checksum",
            Gre {
                checksum: Checksum::Corrupt,
                ..valid
            }
            .emit(&inner),
        ),
        (
            "bad-version",
            Gre {
                version: 1,
                ..valid
            }
            .emit(&inner),
        ),
        (
            "routing-present",
            Gre {
                routing: true,
                ..valid
            }
            .emit(&inner),
        ),
        (
            "reserved-bits",
            Gre {
                reserved_bit4: true,
                ..valid
            }
            .emit(&inner),
        ),
        ("truncated", vec![0x00, 0x00]),
    ];
    for (reason, packet) in cases {
        let before = hub.daemon().stats()?;
        send_raw_gre(&s1.router, hub.addrs.nbma.into(), &burst(packet))?;
        ensure_counter_grows(&topo, &before, &format!("/drops/{reason}"))?;
        ensure!(
            ping(&s1.host, s2.addrs.host_v4.into(), 2),
            "LAN-to-LAN ping failed after the {reason} burst\n{}",
            topo.logs()
        );
    }
    Ok(())
}

#[test]
fn malformed_gre_in_udp_is_dropped_and_counted() -> Result<()> {
    let topo = started(
        Topology::builder("badudp")
            .encap(1, Encap::GreUdp)
            .checksum(false)
            .sequence(false),
    )?;
    let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
    ensure_lan_to_lan(&topo, s1, s2)?;
    let to = SocketAddr::new(hub.addrs.nbma.into(), GRE_UDP_PORT);
    let inner = ipv4_icmp_echo(s1.addrs.host_v4, hub.addrs.host_v4, 0x6d67, 2, 32);
    let cases = [
        ("truncated", vec![0x00, 0x00]),
        (
            "bad-version",
            Gre {
                version: 1,
                ..Gre::default()
            }
            .emit(&inner),
        ),
    ];
    for (reason, packet) in cases {
        let before = hub.daemon().stats()?;
        send_udp(&s1.router, to, &vec![packet; BURST])?;
        ensure_counter_grows(&topo, &before, &format!("/drops/{reason}"))?;
        ensure!(
            ping(&s1.host, s2.addrs.host_v4.into(), 2),
            "LAN-to-LAN ping failed after the {reason} burst\n{}",
            topo.logs()
        );
    }
    Ok(())
}

#[test]
fn tcp_syn_mss_is_clamped_to_the_tunnel() -> Result<()> {
    let topo = started(Topology::builder("mss"))?;
    let (s1, s2) = (topo.spoke(1), topo.spoke(2));
    ensure_lan_to_lan(&topo, s1, s2)?;
    let peer_mtu = s1.daemon().peer("hub")?["mtu"]
        .as_u64()
        .context("spoke1's hub peer has no numeric mtu")?;
    let mtu = peer_mtu.min(u64::from(s1.tun_mtu()?));
    let clamped_before = mss_clamped(&topo)?;

    for (addr, ip_and_tcp, lan_mss) in [
        (IpAddr::from(s2.addrs.host_v4), 40, 1460),
        (s2.addrs.host_v6.into(), 60, 1440),
    ] {
        let mss = u64::from(
            syn_mss(&s1.host, &s2.host, &s2.host_iface, addr).with_context(|| topo.logs())?,
        );
        ensure!(
            mss + ip_and_tcp <= mtu && mss < lan_mss,
            "SYN to {addr} arrived with MSS {mss}; tunnel MTU {mtu} allows {}",
            mtu - ip_and_tcp
        );
    }
    let clamped_after = mss_clamped(&topo)?;
    ensure!(
        clamped_after >= clamped_before + 2,
        "mss_clamped went {clamped_before} -> {clamped_after} over two SYNs"
    );
    Ok(())
}

#[test]
fn check_accepts_the_generated_configs() -> Result<()> {
    let dir = TempDir::new("chkok")?;
    let spec = Topology::builder("chkok").key(42).encap(2, Encap::GreUdp);
    for id in spec.site_ids() {
        let path = write_config(dir.path(), &spec, id, |text| text)?;
        let out = mgre_check(&path)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && stdout.contains(&format!("{}: ok", path.display())),
            "mgre check {} -> {}\nstdout: {stdout}\nstderr: {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[test]
fn check_rejects_an_unknown_key() -> Result<()> {
    expect_rejection("chkunk", "bogus-knob", |text| {
        let mut lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|line| *line == "[tunnel]")
            .expect("[tunnel]")
            + 1;
        lines.insert(at, "bogus-knob = 1");
        (lines.join("\n") + "\n", at + 1)
    })
}

#[test]
fn check_rejects_a_bad_map_prefix() -> Result<()> {
    expect_rejection("chkmap", "map", |text| {
        replace_on_line(text, "\"203.0.113.192/26\"", "\"203.0.113.300/26\"")
    })
}

#[test]
fn check_rejects_version_2() -> Result<()> {
    expect_rejection("chkver", "version", |text| {
        replace_on_line(text, "version = 1", "version = 2")
    })
}

#[test]
fn check_rejects_nhs_naming_a_missing_peer() -> Result<()> {
    expect_rejection("chknhs", "nhs", |text| {
        replace_on_line(text, "nhs = \"hub\"", "nhs = \"nowhere\"")
    })
}

/// A hand-built GRE header (RFC 2784 / RFC 2890 layout, RFC 1701 for the R bit).
#[derive(Debug, Clone, Copy, Default)]
struct Gre {
    checksum: Checksum,
    /// R bit: RFC 1701 source routing, deprecated; brings the checksum/offset word.
    routing: bool,
    /// Bit 4 (RFC 1701's strict source route), in the range RFC 2784 says MUST be discarded.
    reserved_bit4: bool,
    version: u8,
    key: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Checksum {
    #[default]
    Absent,
    Corrupt,
}

impl Gre {
    /// The header followed by `payload` (an IPv4 packet: protocol type 0x0800).
    fn emit(self, payload: &[u8]) -> Vec<u8> {
        let with_checksum = self.checksum != Checksum::Absent;
        let mut flags = 0u8;
        if with_checksum {
            flags |= 0x80;
        }
        if self.routing {
            flags |= 0x40;
        }
        if self.key.is_some() {
            flags |= 0x20;
        }
        if self.reserved_bit4 {
            flags |= 0x08;
        }
        let mut packet = vec![flags, self.version & 0x07, 0x08, 0x00];
        if with_checksum || self.routing {
            packet.extend_from_slice(&[0, 0, 0, 0]); // checksum, reserved1/offset
        }
        if let Some(key) = self.key {
            packet.extend_from_slice(&key.to_be_bytes());
        }
        packet.extend_from_slice(payload);
        if self.checksum == Checksum::Corrupt {
            let wrong = inet_checksum(&packet) ^ 0x5a5a;
            packet[4..6].copy_from_slice(&wrong.to_be_bytes());
        }
        packet
    }
}

/// Builds the topology and starts every daemon.
fn started(builder: TopologyBuilder) -> Result<Topology> {
    let mut topo = builder.build()?;
    topo.start()?;
    Ok(topo)
}

/// The LAN host behind `from` pings `to`'s LAN host over IPv4 and IPv6.
fn ensure_lan_to_lan(topo: &Topology, from: &Site, to: &Site) -> Result<()> {
    for addr in host_addrs(to) {
        ensure_ping(topo, from, addr)?;
    }
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

fn host_addrs(site: &Site) -> [IpAddr; 2] {
    [site.addrs.host_v4.into(), site.addrs.host_v6.into()]
}

/// Waits until the hub's counter at `pointer` exceeds its value in `before` by [`BURST`].
fn ensure_counter_grows(topo: &Topology, before: &serde_json::Value, pointer: &str) -> Result<()> {
    let start = counter(before, pointer)?;
    let mut now = start;
    let grown = wait_until(COUNTER_WAIT, POLL, || {
        now = counter(&topo.hub().daemon().stats()?, pointer)?;
        Ok(now >= start + BURST as u64)
    })?;
    ensure!(
        grown,
        "hub {pointer} went {start} -> {now} after a burst of {BURST}\n{}",
        topo.logs()
    );
    Ok(())
}

/// `mss_clamped` summed over all sites.
fn mss_clamped(topo: &Topology) -> Result<u64> {
    let mut total = 0;
    for site in topo.sites() {
        total += counter(&site.daemon().stats()?, "/mss_clamped")?;
    }
    Ok(total)
}

/// Renders site `id`'s config (TUN `mgre0`, socket in `dir`), lets `edit` change the text
/// and writes it to `dir`.
fn write_config(
    dir: &Path,
    spec: &TopologyBuilder,
    id: SiteId,
    edit: impl FnOnce(String) -> String,
) -> Result<PathBuf> {
    let name = id.peer_name();
    let text = spec.render_config(id, &dir.join(format!("{name}.sock")), "mgre0");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, edit(text)).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Breaks spoke1's config with `edit` (which returns the new text and the 1-based line it
/// broke) and expects `mgre check` to exit 1 naming the file, that line and `key`.
fn expect_rejection(
    tag: &str,
    key: &str,
    edit: impl FnOnce(&str) -> (String, usize),
) -> Result<()> {
    let dir = TempDir::new(tag)?;
    let mut line = 0;
    let path = write_config(
        dir.path(),
        &Topology::builder(tag),
        SiteId::Spoke(1),
        |text| {
            let (text, broken) = edit(&text);
            line = broken;
            text
        },
    )?;
    ensure!(line > 0, "the edit found nothing to break");
    let out = mgre_check(&path)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let location = format!("{}:{line}:", path.display());
    ensure!(
        out.status.code() == Some(1) && stderr.contains(&location) && stderr.contains(key),
        "mgre check {} -> {}; want exit 1 with {location:?} and key {key:?} on stderr:\n\
         {stderr}\nconfig:\n{}",
        path.display(),
        out.status,
        std::fs::read_to_string(&path).unwrap_or_default()
    );
    Ok(())
}

/// Replaces `from` by `to` and reports the 1-based line where it was (0: not found).
fn replace_on_line(text: &str, from: &str, to: &str) -> (String, usize) {
    let line = text
        .lines()
        .position(|line| line.contains(from))
        .map_or(0, |index| index + 1);
    (text.replacen(from, to, 1), line)
}

/// The GRE key of the key and malformed-packet tests.
const KEY: u32 = 42;
/// Packets per malformed burst; the matching drop counter must grow by at least this.
const BURST: usize = 16;
/// Bytes of the IPv4 spoke-to-spoke transfer (a little over 10 MB).
const TRANSFER_BYTES: usize = 10 * 1024 * 1024 + 4321;
/// Bytes of the IPv6 transfer.
const TRANSFER_BYTES_V6: usize = 2 * 1024 * 1024 + 1234;
/// RFC 8086's GRE-in-UDP port, the contract's `udp-port` default.
const GRE_UDP_PORT: u16 = 4754;
const COUNTER_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);
