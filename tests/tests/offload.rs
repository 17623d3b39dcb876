//! Segmentation offload end to end — the TUN's virtio-net header (TSO/USO split on read, GRO
//! on write) and UDP GSO/GRO on the underlay — proven in the reference topology with the real
//! daemon:
//!
//! - TSO super-packets that the kernel hands a spoke's TUN cross the hub and arrive as
//!   byte-identical TCP streams at the far LAN, IPv4 and IPv6, over plain GRE and GRE-in-UDP.
//!   The counters show the offload paths were taken: the sending daemon split super-packets
//!   (`offload.tun_gso_reads`, and the TUN's kernel tx count, one per super-packet, stays well
//!   below the daemon's segment count) and the receiving daemon coalesced (the TUN's kernel rx
//!   count, one per write, stays well below the packets the daemon handed to it).
//! - GRO-coalesced writes carry correct checksums: the receiving spoke's LAN veth does no
//!   checksum or segmentation offload, so the kernel segments and checksums in software from
//!   what the daemon wrote and the LAN host verifies every checksum; no error counter of the
//!   router or the host may move, and a capture on the veth checks every TCP checksum in
//!   userspace as well.
//! - Mixed-flow batches keep per-flow order: concurrent UDP flows sent in bursts (one datagram
//!   at a time, and as UDP GSO super-packets) never reorder within a flow.
//! - With `offload = false` on every site the same transfers stay byte-identical and no
//!   super-packet is ever read or written.
//!
//! They need root, a built daemon (`cargo build --release -p mgre`) and `ethtool`.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use mgre_e2e::packet::{inet_checksum, transport_checksum};
use mgre_e2e::{
    Encap, Netns, PacketSocket, Site, Topology, TopologyBuilder, counter, join, ping, tcp_transfer,
};
use serde_json::{Value, json};
use socket2::{Domain, Protocol, Socket, Type};

#[test]
fn tso_super_packets_cross_plain_gre_byte_identical() -> Result<()> {
    bulk_transfers_are_offloaded("otsog", Encap::Gre)
}

#[test]
fn tso_super_packets_cross_gre_in_udp_byte_identical() -> Result<()> {
    bulk_transfers_are_offloaded("otsou", Encap::GreUdp)
}

#[test]
fn gro_coalesced_writes_carry_correct_checksums_over_gre() -> Result<()> {
    coalesced_writes_verify_in_software("ocsg", Encap::Gre)
}

#[test]
fn gro_coalesced_writes_carry_correct_checksums_over_gre_in_udp() -> Result<()> {
    coalesced_writes_verify_in_software("ocsu", Encap::GreUdp)
}

#[test]
fn mixed_udp_flows_keep_per_flow_order_over_gre() -> Result<()> {
    udp_flows_stay_in_order("oordg", Encap::Gre)
}

#[test]
fn mixed_udp_flows_keep_per_flow_order_over_gre_in_udp() -> Result<()> {
    udp_flows_stay_in_order("oordu", Encap::GreUdp)
}

#[test]
fn transfers_stay_byte_identical_with_offload_off() -> Result<()> {
    // Spoke 1 reaches the hub over GRE-in-UDP, spoke 2 over plain GRE: both encapsulations.
    let topo = started(
        Topology::builder("ooff")
            .offload(false)
            .encap(1, Encap::GreUdp),
    )?;
    let (s1, s2) = (topo.spoke(1), topo.spoke(2));
    for (addr, bytes) in transfers_to(s2) {
        let growth = transfer(&topo, s1, s2, addr, bytes)?;
        let table = growth.table(&topo);
        for site in topo.sites() {
            let reads = counter(
                &growth.after.0[site.id.index()],
                "/daemon/offload/tun_gso_reads",
            )?;
            ensure!(
                reads == 0,
                "{} split {reads} super-packets with offload off:\n{table}",
                site.id.peer_name()
            );
        }
        // Without TSO every packet the kernel hands over is one the daemon counts, and
        // without coalescing every packet the daemon hands over is one write.
        let (kernel_tx, tun_rx) = (
            growth.of(s1, KERNEL_TX)?,
            growth.of(s1, "/daemon/tun_rx/packets")?,
        );
        ensure!(
            kernel_tx + SNAPSHOT_SLACK >= tun_rx,
            "spoke1's TUN handed over {kernel_tx} packets, the daemon read {tun_rx}: \
             super-packets with offload off?\n{table}"
        );
        let (kernel_rx, tun_tx) = (
            growth.of(s2, KERNEL_RX)?,
            growth.of(s2, "/daemon/tun_tx/packets")?,
        );
        // The hub replicates its kernel's own IPv6 multicast (MLD, router solicitations) to
        // the spokes, so a write can land between the two counter reads: allow a few.
        ensure!(
            kernel_rx + SNAPSHOT_SLACK >= tun_tx,
            "spoke2's TUN took {kernel_rx} writes for {tun_tx} packets: coalesced with \
             offload off?\n{table}"
        );
    }
    Ok(())
}

/// Test 1: v4 and v6 bulk transfers spoke 1 → hub → spoke 2, with `encap` on both spokes.
fn bulk_transfers_are_offloaded(tag: &str, encap: Encap) -> Result<()> {
    let topo = started(Topology::builder(tag).encap(1, encap).encap(2, encap))?;
    let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
    for (addr, bytes) in transfers_to(s2) {
        let growth = transfer(&topo, s1, s2, addr, bytes)?;
        ensure_split_and_coalesced(&topo, &growth, s1, s2, addr)?;
        if encap == Encap::GreUdp {
            let table = growth.table(&topo);
            for (site, pointer) in [
                (s1, UDP_GSO_TRAINS),
                (hub, UDP_GRO_TRAINS),
                (hub, UDP_GSO_TRAINS),
                (s2, UDP_GRO_TRAINS),
            ] {
                ensure!(
                    growth.of(site, pointer)? > 0,
                    "{} {pointer} did not grow over the {addr} transfer:\n{table}",
                    site.id.peer_name()
                );
            }
        }
    }
    Ok(())
}

/// Test 2: the transfers of test 1, with spoke 2's LAN veth checksumming and segmenting in
/// software and every error counter and checksum on the far side watched.
fn coalesced_writes_verify_in_software(tag: &str, encap: Encap) -> Result<()> {
    let topo = started(Topology::builder(tag).encap(1, encap).encap(2, encap))?;
    let (s1, s2) = (topo.spoke(1), topo.spoke(2));
    software_offloads_only(&s2.router, &s2.lan_iface)?;
    ensure_host_counts_bad_checksums(s2)?;

    for (addr, bytes) in transfers_to(s2) {
        let errors_before = error_counters(s2)?;
        let (tally, growth) = capture_checksums(&s2.router, &s2.lan_iface, addr, || {
            transfer(&topo, s1, s2, addr, bytes)
        })?;
        let errors_after = error_counters(s2)?;
        ensure_split_and_coalesced(&topo, &growth, s1, s2, addr)?;
        let grown: Vec<String> = errors_after
            .iter()
            .filter_map(|(name, after)| {
                let before = errors_before.get(name).copied().unwrap_or(0);
                (*after > before).then(|| format!("{name}: {before} -> {after}"))
            })
            .collect();
        ensure!(
            grown.is_empty(),
            "error counters on spoke2's side grew over the {addr} transfer: {grown:?}\n{}",
            growth.table(&topo)
        );
        ensure!(
            tally.bad == 0 && tally.verified >= MIN_VERIFIED,
            "TCP checksums towards {addr} on {}: {tally:?} (want none bad, at least \
             {MIN_VERIFIED} verified)",
            s2.lan_iface
        );
        ensure!(
            tally.largest <= LAN_MTU,
            "a {}-byte packet left {} although its segmentation offload is off: the capture \
             did not see software-segmented packets",
            tally.largest,
            s2.lan_iface
        );
        eprintln!("{addr}: checksums {tally:?}");
    }
    Ok(())
}

/// Test 3: [`FLOWS`] concurrent UDP flows, each sent in bursts, first one datagram per
/// send, then one UDP GSO super-packet per burst.
fn udp_flows_stay_in_order(tag: &str, encap: Encap) -> Result<()> {
    let topo = started(Topology::builder(tag).encap(1, encap).encap(2, encap))?;
    let (s1, s2) = (topo.spoke(1), topo.spoke(2));
    let to = IpAddr::from(s2.addrs.host_v4);
    // Resolves the neighbours on the way, so that the first burst is not lost to ARP.
    ensure!(
        ping(&s1.host, to, 2),
        "spoke1 LAN host cannot ping {to}\n{}",
        topo.logs()
    );
    // A queue that holds a whole flood: the sender outruns the daemon, so its reads bring
    // long mixed-flow batches, and they are not cut short by the queue overflowing.
    s1.router
        .ip(&format!("link set dev {} txqueuelen {TUN_QUEUE}", s1.tun))?;
    for sending in [Sending::OneByOne, Sending::Segmented] {
        let before = Snapshot::take(&topo)?;
        let started_at = Instant::now();
        let report = udp_flows(&s1.host, &s2.host, to, sending)?;
        let growth = Growth {
            before,
            after: Snapshot::take(&topo)?,
        };
        eprintln!(
            "{sending:?} over {encap:?} in {:?}: {report:?}\n{}",
            started_at.elapsed(),
            growth.table(&topo)
        );
        ensure!(
            report.reordered.iter().all(|&r| r == 0),
            "{sending:?}: datagrams reordered within a flow: {report:?}\n{}",
            growth.table(&topo)
        );
        ensure!(
            report.duplicates.iter().all(|&d| d == 0),
            "{sending:?}: duplicated datagrams: {report:?}"
        );
        // Losses are allowed, but each flow must deliver enough for order to mean something.
        ensure!(
            report.received.iter().all(|&r| r >= MIN_RECEIVED_PER_FLOW),
            "{sending:?}: a flow delivered fewer than {MIN_RECEIVED_PER_FLOW} of {PER_FLOW} \
             datagrams: {report:?}\n{}\n{}",
            growth.table(&topo),
            topo.logs()
        );
        // The batches really went through the offload paths: spoke 2 coalesced UDP writes,
        // and spoke 1 split the UDP GSO bursts.
        let (kernel_rx, tun_tx) = (
            growth.of(s2, KERNEL_RX)?,
            growth.of(s2, "/daemon/tun_tx/packets")?,
        );
        ensure!(
            kernel_rx < tun_tx,
            "{sending:?}: spoke2's TUN took {kernel_rx} writes for {tun_tx} datagrams: no \
             coalescing\n{}",
            growth.table(&topo)
        );
        if sending == Sending::Segmented {
            let reads = growth.of(s1, TUN_GSO_READS)?;
            ensure!(
                reads > 0,
                "spoke1 split no UDP super-packets:\n{}",
                growth.table(&topo)
            );
        }
    }
    Ok(())
}

/// What a transfer must show on the sending spoke `from` and the receiving spoke `to`.
fn ensure_split_and_coalesced(
    topo: &Topology,
    growth: &Growth,
    from: &Site,
    to: &Site,
    addr: IpAddr,
) -> Result<()> {
    let table = growth.table(topo);
    let reads = growth.of(from, TUN_GSO_READS)?;
    ensure!(
        reads >= MIN_SUPER_PACKETS,
        "{} split only {reads} super-packets over the {addr} transfer:\n{table}",
        from.id.peer_name()
    );
    let (kernel_tx, tun_rx) = (
        growth.of(from, KERNEL_TX)?,
        growth.of(from, "/daemon/tun_rx/packets")?,
    );
    ensure!(
        kernel_tx * CLEARLY_FEWER <= tun_rx,
        "{}'s TUN handed over {kernel_tx} packets for the daemon's {tun_rx} segments: no TSO?\n\
         {table}",
        from.id.peer_name()
    );
    let (kernel_rx, tun_tx) = (
        growth.of(to, KERNEL_RX)?,
        growth.of(to, "/daemon/tun_tx/packets")?,
    );
    ensure!(
        kernel_rx * CLEARLY_FEWER <= tun_tx,
        "{}'s TUN took {kernel_rx} writes for the daemon's {tun_tx} packets: no coalescing?\n\
         {table}",
        to.id.peer_name()
    );
    // The fast path allocates nothing per packet: the daemons' own per-thread count of the
    // workers' heap allocations stays (near) flat over thousands of packets.
    for site in [from, topo.hub(), to] {
        let allocations = growth.of(site, "/daemon/heap_allocations")?;
        let packets = growth.of(site, "/daemon/tun_rx/packets")?
            + growth.of(site, "/daemon/tun_tx/packets")?
            + growth.of(site, "/daemon/hairpin/packets")?;
        ensure!(
            allocations * 1000 <= packets,
            "{}'s workers made {allocations} heap allocations for {packets} packets:\n{table}",
            site.id.peer_name()
        );
    }
    let refused = growth.of(to, "/kernel/stats64/rx/dropped")?
        + growth.of(to, "/kernel/stats64/rx/errors")?;
    ensure!(
        refused == 0,
        "{}'s TUN refused {refused} writes:\n{table}",
        to.id.peer_name()
    );
    Ok(())
}

/// Builds the topology and starts every daemon.
fn started(builder: TopologyBuilder) -> Result<Topology> {
    let mut topo = builder.build()?;
    topo.start()?;
    Ok(topo)
}

/// The transfers each test makes to `site`'s LAN host: IPv4, then IPv6.
fn transfers_to(site: &Site) -> [(IpAddr, usize); 2] {
    [
        (site.addrs.host_v4.into(), TRANSFER_BYTES_V4),
        (site.addrs.host_v6.into(), TRANSFER_BYTES_V6),
    ]
}

/// Sends `bytes` over TCP from `from`'s LAN host to `addr` on `to`'s, insists on identical
/// digests, and returns how every site's counters grew meanwhile.
fn transfer(topo: &Topology, from: &Site, to: &Site, addr: IpAddr, bytes: usize) -> Result<Growth> {
    let before = Snapshot::take(topo)?;
    let started_at = Instant::now();
    let (sent, received) =
        tcp_transfer(&from.host, &to.host, addr, bytes).with_context(|| topo.logs())?;
    let elapsed = started_at.elapsed();
    let growth = Growth {
        before,
        after: Snapshot::take(topo)?,
    };
    ensure!(
        sent == received,
        "{bytes} bytes to {addr} arrived altered\n{}",
        growth.table(topo)
    );
    eprintln!(
        "{bytes} bytes to {addr} byte-identical in {elapsed:?}\n{}",
        growth.table(topo)
    );
    Ok(growth)
}

/// Every site's daemon counters (under `/daemon`, `mgre show stats --json`) and its TUN's
/// kernel counters (under `/kernel`, `ip -s -j link show`), read one after the other.
struct Snapshot(Vec<Value>);

impl Snapshot {
    fn take(topo: &Topology) -> Result<Self> {
        topo.sites()
            .iter()
            .map(|site| {
                let daemon = site.daemon().stats()?;
                let text = site
                    .router
                    .ip(&format!("-s -j link show dev {}", site.tun))?;
                let link: Value = serde_json::from_str(&text)
                    .with_context(|| format!("ip -j link printed {text:?}"))?;
                let kernel = link.get(0).cloned().context("ip -j link: empty list")?;
                Ok(json!({ "daemon": daemon, "kernel": kernel }))
            })
            .collect::<Result<_>>()
            .map(Self)
    }
}

/// How counters grew between two snapshots.
struct Growth {
    before: Snapshot,
    after: Snapshot,
}

impl Growth {
    /// Growth of `site`'s counter at `pointer` (`/daemon/…` or `/kernel/…`).
    fn of(&self, site: &Site, pointer: &str) -> Result<u64> {
        let i = site.id.index();
        let (before, after) = (
            counter(&self.before.0[i], pointer)?,
            counter(&self.after.0[i], pointer)?,
        );
        Ok(after.saturating_sub(before))
    }

    /// One line per site with the growth of every counter these tests look at, and the
    /// drop reasons that grew; for messages.
    fn table(&self, topo: &Topology) -> String {
        let mut text = String::new();
        for site in topo.sites() {
            text.push_str(&format!("  {:7}", site.id.peer_name()));
            for (name, pointer) in SHOWN {
                let value = self
                    .of(site, pointer)
                    .map_or_else(|e| format!("?({e})"), |v| v.to_string());
                text.push_str(&format!(" {name}={value}"));
            }
            let i = site.id.index();
            if let Some(drops) = self.after.0[i]
                .pointer("/daemon/drops")
                .and_then(Value::as_object)
            {
                for (reason, after) in drops {
                    let before = self.before.0[i]
                        .pointer(&format!("/daemon/drops/{reason}"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    let after = after.as_u64().unwrap_or(0);
                    if after > before {
                        text.push_str(&format!(" drop:{reason}={}", after - before));
                    }
                }
            }
            text.push('\n');
        }
        text
    }
}

/// Turns off checksum and segmentation offload of `iface` in `ns` and checks it took.
fn software_offloads_only(ns: &Netns, iface: &str) -> Result<()> {
    let out = ns
        .exec([
            "ethtool", "-K", iface, "tx", "off", "tso", "off", "gso", "off",
        ])
        .context("running ethtool (tests/run.sh installs it)")?;
    ensure!(
        out.status.success(),
        "ethtool -K {iface} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let out = ns.exec(["ethtool", "-k", iface])?;
    let features = String::from_utf8_lossy(&out.stdout);
    for feature in [
        "tx-checksumming: off",
        "tcp-segmentation-offload: off",
        "generic-segmentation-offload: off",
    ] {
        ensure!(
            features.lines().any(|line| line.starts_with(feature)),
            "{iface} still offloads, no {feature:?} in:\n{features}"
        );
    }
    Ok(())
}

/// Control for the error counters: a TCP segment with a wrong checksum, sent by `site`'s
/// router to its LAN host, must raise the host's `Tcp.InCsumErrors`.
fn ensure_host_counts_bad_checksums(site: &Site) -> Result<()> {
    let before = proc_counters(&site.host)?;
    let (src, dst) = (site.addrs.router_v4, site.addrs.host_v4);
    // An ACK from port 9 to port 9 whose checksum is the right one with bits flipped.
    let mut segment = [0u8; 20];
    segment[..4].copy_from_slice(&[0, 9, 0, 9]);
    segment[12] = 0x50;
    segment[13] = 0x10;
    let mut pseudo = [src.octets(), dst.octets()].concat();
    pseudo.extend_from_slice(&[0, IPPROTO_TCP, 0, segment.len() as u8]);
    pseudo.extend_from_slice(&segment);
    let wrong = inet_checksum(&pseudo) ^ 0x5a5a;
    segment[16..18].copy_from_slice(&wrong.to_be_bytes());
    site.router.run(|| {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::new(src.into(), 0).into())?;
        socket
            .send_to(&segment, &SocketAddr::new(dst.into(), 0).into())
            .context("raw TCP send")?;
        Ok(())
    })?;
    let mut now = before.clone();
    let counted = mgre_e2e::wait_until(COUNTER_WAIT, POLL, || {
        now = proc_counters(&site.host)?;
        Ok(now.get("Tcp.InCsumErrors") > before.get("Tcp.InCsumErrors"))
    })?;
    ensure!(
        counted,
        "the LAN host of {} did not count a bad TCP checksum: Tcp.InCsumErrors {:?} -> {:?}",
        site.id.peer_name(),
        before.get("Tcp.InCsumErrors"),
        now.get("Tcp.InCsumErrors")
    );
    Ok(())
}

/// The error counters of `site`'s router and LAN host namespaces, keyed "router …"/"host …".
fn error_counters(site: &Site) -> Result<BTreeMap<String, u64>> {
    let mut errors = BTreeMap::new();
    for (place, ns) in [("router", &site.router), ("host", &site.host)] {
        let all = proc_counters(ns)?;
        for name in ERROR_COUNTERS {
            let value = all
                .get(name)
                .with_context(|| format!("no {name} in the {place}'s /proc/net counters"))?;
            errors.insert(format!("{place} {name}"), *value);
        }
    }
    Ok(errors)
}

/// The SNMP counters of `ns`: `/proc/net/snmp` and `/proc/net/netstat` as `Table.Name`,
/// `/proc/net/snmp6` under its own names.
fn proc_counters(ns: &Netns) -> Result<BTreeMap<String, u64>> {
    let out = ns.exec([
        "cat",
        "/proc/net/snmp",
        "/proc/net/netstat",
        "/proc/net/snmp6",
    ])?;
    ensure!(
        out.status.success(),
        "reading /proc/net in {}: {}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut counters = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((table, names)) = line.split_once(':') {
            // A header line; the next line holds the values under the same table name.
            let Some(values) = lines
                .next()
                .and_then(|values| values.strip_prefix(table))
                .and_then(|values| values.strip_prefix(':'))
            else {
                bail!("{table}: header without values in {}", ns.name());
            };
            for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
                if let Ok(value) = value.parse() {
                    counters.insert(format!("{table}.{name}"), value);
                }
            }
        } else if let [name, value] = line.split_whitespace().collect::<Vec<_>>()[..]
            && let Ok(value) = value.parse()
        {
            counters.insert(name.to_owned(), value);
        }
    }
    Ok(counters)
}

/// TCP checksums checked on an interface.
#[derive(Debug, Default, Clone, Copy)]
struct ChecksumTally {
    /// Segments whose checksum verified.
    verified: u64,
    /// Segments whose checksum did not.
    bad: u64,
    /// Largest packet seen, in bytes.
    largest: usize,
}

/// Captures on `iface` in `ns` while `traffic` runs and checks the TCP checksum of every
/// packet to `dst` seen there (at most [`MAX_CHECKED`]; the capture may miss some).
fn capture_checksums<T>(
    ns: &Netns,
    iface: &str,
    dst: IpAddr,
    traffic: impl FnOnce() -> Result<T>,
) -> Result<(ChecksumTally, T)> {
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel();
    thread::scope(|scope| {
        let stop = &stop;
        let capture = ns.spawn(scope, move || {
            let socket = PacketSocket::open(iface)?;
            force_receive_buffer(&socket, CAPTURE_BUFFER)?;
            ready_tx.send(())?;
            let deadline = Instant::now() + CAPTURE_DEADLINE;
            let mut tally = ChecksumTally::default();
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && tally.verified + tally.bad < MAX_CHECKED
            {
                let Some(n) = socket.recv(&mut buf)? else {
                    continue;
                };
                let packet = &buf[..n];
                if destination(packet) != Some(dst) {
                    continue;
                }
                tally.largest = tally.largest.max(n);
                match transport_checksum(packet) {
                    Some((IPPROTO_TCP, true)) => tally.verified += 1,
                    Some((IPPROTO_TCP, false)) => tally.bad += 1,
                    _ => {}
                }
            }
            Ok(tally)
        });
        let outcome = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => traffic(),
            Err(e) => Err(e).context("the capture never started"),
        };
        stop.store(true, Ordering::Relaxed);
        let tally = join(capture).context("capture")?;
        Ok((tally, outcome?))
    })
}

/// The destination address of an IPv4 or IPv6 packet.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => <[u8; 4]>::try_from(packet.get(16..20)?)
            .ok()
            .map(IpAddr::from),
        6 => <[u8; 16]>::try_from(packet.get(24..40)?)
            .ok()
            .map(IpAddr::from),
        _ => None,
    }
}

/// How the UDP flows' datagrams leave the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    /// One `send` per datagram.
    OneByOne,
    /// One `send` per burst, split by UDP GSO (`UDP_SEGMENT`) into [`BURST`] datagrams.
    Segmented,
}

/// What the receiver of [`udp_flows`] saw, per flow.
#[derive(Debug, Default)]
struct FlowsReport {
    /// Distinct datagrams received.
    received: Vec<u32>,
    /// Datagrams that arrived after one of the same flow with a higher sequence number.
    reordered: Vec<u32>,
    /// Extra copies.
    duplicates: Vec<u32>,
    /// The first reordering: flow, highest sequence seen before, the late one.
    first_reorder: Option<(usize, u32, u32)>,
}

/// Sends [`FLOWS`] flows of [`PER_FLOW`] datagrams of [`DATAGRAM`] bytes (flow and sequence
/// number first) from distinct ports in `src` to a socket on `to` in `dst`, as fast as
/// possible in bursts of [`BURST`] per flow, flows taking turns, and reports what arrived.
fn udp_flows(src: &Netns, dst: &Netns, to: IpAddr, sending: Sending) -> Result<FlowsReport> {
    let sender_done = AtomicBool::new(false);
    let (port_tx, port_rx) = mpsc::channel();
    thread::scope(|scope| {
        let sender_done = &sender_done;
        let receiver = dst.spawn(scope, move || receive_flows(to, port_tx, sender_done));
        let sender = src.spawn(scope, move || {
            let outcome = port_rx
                .recv_timeout(READY_TIMEOUT)
                .context("the receiver never bound")
                .and_then(|port| send_flows(SocketAddr::new(to, port), sending));
            sender_done.store(true, Ordering::Release);
            outcome
        });
        let sent = join(sender).context("UDP sender");
        let report = join(receiver).context("UDP receiver")?;
        sent?;
        Ok(report)
    })
}

fn send_flows(to: SocketAddr, sending: Sending) -> Result<()> {
    let unspecified = if to.is_ipv4() {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u16; 8])
    };
    let sockets = (0..FLOWS)
        .map(|_| {
            let socket = UdpSocket::bind((unspecified, 0))?;
            socket.connect(to)?;
            if sending == Sending::Segmented {
                set_int_option(&socket, libc::SOL_UDP, libc::UDP_SEGMENT, DATAGRAM)?;
            }
            Ok(socket)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut burst = vec![0u8; DATAGRAM * BURST as usize];
    for round in 0..PER_FLOW / BURST {
        for (flow, socket) in sockets.iter().enumerate() {
            for (k, datagram) in burst.chunks_mut(DATAGRAM).enumerate() {
                let seq = round * BURST + k as u32;
                datagram[..4].copy_from_slice(&(flow as u32).to_be_bytes());
                datagram[4..8].copy_from_slice(&seq.to_be_bytes());
            }
            match sending {
                Sending::OneByOne => {
                    for datagram in burst.chunks(DATAGRAM) {
                        socket.send(datagram).context("UDP send")?;
                    }
                }
                Sending::Segmented => {
                    socket.send(&burst).context("UDP GSO send")?;
                }
            }
        }
    }
    Ok(())
}

fn receive_flows(
    at: IpAddr,
    port_tx: mpsc::Sender<u16>,
    sender_done: &AtomicBool,
) -> Result<FlowsReport> {
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(at, 0)),
        Type::DGRAM,
        None,
    )?;
    force_receive_buffer(&socket, RECEIVE_BUFFER)?;
    socket.bind(&SocketAddr::new(at, 0).into())?;
    let socket = UdpSocket::from(socket);
    socket.set_read_timeout(Some(RECV_POLL))?;
    port_tx.send(socket.local_addr()?.port())?;

    let flows = FLOWS as usize;
    let mut seen = vec![vec![false; PER_FLOW as usize]; flows];
    let mut highest: Vec<Option<u32>> = vec![None; flows];
    let mut report = FlowsReport {
        received: vec![0; flows],
        reordered: vec![0; flows],
        duplicates: vec![0; flows],
        first_reorder: None,
    };
    let deadline = Instant::now() + FLOWS_DEADLINE;
    let mut quiet_since = Instant::now();
    let mut buf = vec![0u8; 2048];
    while Instant::now() < deadline && report.received.iter().sum::<u32>() < FLOWS * PER_FLOW {
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if sender_done.load(Ordering::Acquire) && quiet_since.elapsed() > DRAIN {
                    break;
                }
                continue;
            }
            Err(e) => return Err(e).context("UDP receive"),
        };
        quiet_since = Instant::now();
        let Some((flow, seq)) = buf.get(..8).filter(|_| n >= 8).map(|b| {
            (
                u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize,
                u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            )
        }) else {
            continue;
        };
        let Some(slot) = seen.get_mut(flow).and_then(|s| s.get_mut(seq as usize)) else {
            bail!("datagram from unknown flow {flow} / sequence {seq}");
        };
        if *slot {
            report.duplicates[flow] += 1;
            continue;
        }
        *slot = true;
        report.received[flow] += 1;
        match highest[flow] {
            Some(h) if seq < h => {
                report.reordered[flow] += 1;
                report.first_reorder.get_or_insert((flow, h, seq));
            }
            _ => highest[flow] = Some(seq),
        }
    }
    Ok(report)
}

/// `SO_RCVBUFFORCE` (root may exceed `net.core.rmem_max`).
fn force_receive_buffer(socket: &impl AsFd, bytes: usize) -> Result<()> {
    set_int_option(socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes)
}

fn set_int_option(socket: &impl AsFd, level: i32, name: i32, value: usize) -> Result<()> {
    let value = libc::c_int::try_from(value)?;
    // SAFETY: the descriptor is open for the call; `value` is a c_int and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context(format!("setsockopt {level}/{name}"));
    }
    Ok(())
}

/// Growth columns of [`Growth::table`]: name, pointer.
const SHOWN: [(&str, &str); 11] = [
    ("tun_rx", "/daemon/tun_rx/packets"),
    ("tun_tx", "/daemon/tun_tx/packets"),
    ("gso_reads", TUN_GSO_READS),
    ("udp_gso", UDP_GSO_TRAINS),
    ("udp_gro", UDP_GRO_TRAINS),
    ("hairpin", "/daemon/hairpin/packets"),
    ("kernel_tx", KERNEL_TX),
    ("kernel_tx_dropped", "/kernel/stats64/tx/dropped"),
    ("kernel_rx", KERNEL_RX),
    ("kernel_rx_dropped", "/kernel/stats64/rx/dropped"),
    ("kernel_rx_errors", "/kernel/stats64/rx/errors"),
];
const TUN_GSO_READS: &str = "/daemon/offload/tun_gso_reads";
const UDP_GSO_TRAINS: &str = "/daemon/offload/udp_gso_trains";
const UDP_GRO_TRAINS: &str = "/daemon/offload/udp_gro_trains";
/// Packets the kernel handed to the daemon through the TUN (a super-packet counts once).
const KERNEL_TX: &str = "/kernel/stats64/tx/packets";
/// Writes of the daemon to the TUN (a coalesced super-packet counts once).
const KERNEL_RX: &str = "/kernel/stats64/rx/packets";
/// Counters that a corrupt or malformed packet raises, in the router and the LAN host.
const ERROR_COUNTERS: [&str; 9] = [
    "Ip.InHdrErrors",
    "IpExt.InCsumErrors",
    "IpExt.InTruncatedPkts",
    "Tcp.InCsumErrors",
    "Tcp.InErrs",
    "Udp.InCsumErrors",
    "Ip6InHdrErrors",
    "Ip6InTruncatedPkts",
    "Udp6InCsumErrors",
];
/// Bytes of the IPv4 transfer (16 MiB and change, so the last segment is short).
const TRANSFER_BYTES_V4: usize = 16 * 1024 * 1024 + 777;
/// Bytes of the IPv6 transfer.
const TRANSFER_BYTES_V6: usize = 8 * 1024 * 1024 + 333;
/// Fewest super-packets a sending spoke must split per transfer.
const MIN_SUPER_PACKETS: u64 = 20;
/// "Clearly fewer": kernel-side packets times this must not exceed the daemon's count.
const CLEARLY_FEWER: u64 = 2;
/// Fewest TCP checksums the capture must verify per transfer.
const MIN_VERIFIED: u64 = 1000;
/// Most TCP checksums one capture checks.
const MAX_CHECKED: u64 = 100_000;
/// MTU of the LAN veths.
const LAN_MTU: usize = 1500;
const CAPTURE_BUFFER: usize = 32 << 20;
const CAPTURE_DEADLINE: Duration = Duration::from_secs(150);
const IPPROTO_TCP: u8 = 6;
/// Concurrent UDP flows.
const FLOWS: u32 = 8;
/// Datagrams per flow and sending mode (8 × 1280 × 2 modes: 20 480 in all).
const PER_FLOW: u32 = 1280;
/// Datagrams per flow per turn.
const BURST: u32 = 8;
/// Bytes per UDP datagram (fits every tunnel's MTU).
const DATAGRAM: usize = 1200;
/// Fewest datagrams each flow must deliver.
const MIN_RECEIVED_PER_FLOW: u32 = PER_FLOW / 4;
/// Spoke 1's TUN queue length in the UDP tests (packets; a super-packet counts once).
const TUN_QUEUE: u32 = 2 * FLOWS * PER_FLOW;
const RECEIVE_BUFFER: usize = 32 << 20;
const RECV_POLL: Duration = Duration::from_millis(100);
/// How long the UDP receiver waits after the last datagram once the sender is done.
const DRAIN: Duration = Duration::from_secs(2);
const FLOWS_DEADLINE: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const COUNTER_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);

/// Packets of background traffic (the hub's replicated link-local multicast) that may fall
/// between reading the kernel's and the daemon's counters.
const SNAPSHOT_SLACK: u64 = 4;
