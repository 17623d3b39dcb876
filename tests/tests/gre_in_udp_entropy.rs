//! GRE-in-UDP source ports carry inner-flow entropy (RFC 8086 §3.2): different inner flows
//! leave a spoke from different UDP source ports, every packet of one flow from the same one,
//! always to destination port 4754.

use std::collections::{BTreeMap, BTreeSet};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mgre_e2e::{Encap, Topology};
use socket2::{Domain, Protocol, Socket, Type};

const FLOWS: u16 = 16;
const PER_FLOW: usize = 3;
const FIRST_PORT: u16 = 40_000;

#[test]
fn inner_flows_spread_over_outer_source_ports() -> Result<()> {
    let mut topo = Topology::builder("ent")
        .encap(1, Encap::GreUdp)
        .encap(2, Encap::GreUdp)
        .build()?;
    topo.start()?;
    let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
    let spoke1_nbma = s1.addrs.nbma;
    let dst = SocketAddr::new(s2.addrs.host_v4.into(), 9);

    // A raw UDP socket in the hub's namespace sees a copy of every UDP datagram arriving there.
    let seen = std::thread::scope(|scope| -> Result<BTreeMap<u16, BTreeSet<u16>>> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let capture = hub.router.spawn(scope, move || {
            let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))?;
            sock.set_read_timeout(Some(Duration::from_millis(200)))?;
            ready_tx.send(())?;
            let mut flows: BTreeMap<u16, BTreeSet<u16>> = BTreeMap::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
            while Instant::now() < deadline
                && flows.values().map(BTreeSet::len).sum::<usize>() < usize::from(FLOWS)
            {
                let Ok(n) = sock.recv(&mut buf) else { continue };
                // SAFETY: recv initialised the first n bytes.
                let pkt: Vec<u8> = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                if let Some((outer_src, inner_src)) = parse(&pkt, spoke1_nbma.octets()) {
                    flows.entry(inner_src).or_default().insert(outer_src);
                }
            }
            Ok(flows)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("capture did not start")?;
        let sender = s1.host.spawn(scope, move || {
            for i in 0..FLOWS {
                let sock = UdpSocket::bind(("0.0.0.0", FIRST_PORT + i))?;
                for _ in 0..PER_FLOW {
                    sock.send_to(b"entropy probe", dst)?;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Ok(())
        });
        mgre_e2e::join(sender)?;
        mgre_e2e::join(capture)
    })?;

    ensure!(
        seen.len() == usize::from(FLOWS),
        "saw {} of {FLOWS} inner flows: {seen:?}\n{}",
        seen.len(),
        topo.logs()
    );
    for (inner, outer) in &seen {
        ensure!(
            outer.len() == 1,
            "inner flow from port {inner} used outer ports {outer:?}"
        );
    }
    let distinct: BTreeSet<u16> = seen.values().flatten().copied().collect();
    ensure!(
        distinct.len() >= 4,
        "{FLOWS} flows used only outer source ports {distinct:?}"
    );
    Ok(())
}

/// From an IPv4/UDP datagram sent by `from` to port 4754 and carrying GRE + IPv4/UDP, the outer
/// UDP source port and the inner UDP source port.
fn parse(pkt: &[u8], from: [u8; 4]) -> Option<(u16, u16)> {
    let be16 = |b: &[u8], o: usize| Some(u16::from_be_bytes([*b.get(o)?, *b.get(o + 1)?]));
    let ihl = usize::from(pkt.first()? & 0xf) * 4;
    if pkt.get(12..16)? != from || be16(pkt, ihl + 2)? != 4754 {
        return None;
    }
    let gre = ihl + 8;
    let flags = be16(pkt, gre)?;
    if be16(pkt, gre + 2)? != 0x0800 {
        return None;
    }
    let options = [0x8000u16, 0x2000, 0x1000]
        .iter()
        .filter(|f| flags & **f != 0)
        .count();
    let inner = gre + 4 + 4 * options;
    if *pkt.get(inner + 9)? != 17 {
        return None;
    }
    let inner_l4 = inner + usize::from(pkt.get(inner)? & 0xf) * 4;
    Some((be16(pkt, ihl)?, be16(pkt, inner_l4)?))
}
