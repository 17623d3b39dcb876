//! Observers of packet markings: which TOS (DSCP and ECN) the packets of each destination
//! port carried, on the tunnel's outer header or on the packet itself.
//!
//! [`observe`] opens raw IPv4 sockets in a namespace (IP protocol 47 and UDP for the
//! [`Tap::Tunnel`] tap, UDP and TCP for [`Tap::Plain`]) — raw sockets receive a copy of every
//! matching packet addressed to the namespace without taking it from its real receiver — then
//! runs the caller's traffic and keeps capturing for a short settle time. Capture is bounded
//! in time ([`observe`]'s `max`) and in packets ([`MAX_CAPTURED`]); it never sends anything.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::{Netns, join};
use crate::packet::{Seen, parse_ip, parse_tunnelled};

/// What an observer captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tap {
    /// GRE (IP protocol 47) and GRE-in-UDP (to [`GRE_UDP_PORT`]) arriving at the namespace:
    /// the outer header's TOS and the inner packet. Put it where the tunnel ends (a hub's
    /// or spoke's router namespace).
    Tunnel,
    /// Plain UDP and TCP arriving at the namespace (a LAN host): the packet's own TOS.
    Plain,
}

/// Packets one observer saw, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Every parsed packet.
    pub packets: Vec<Seen>,
}

impl Observation {
    /// The packets to destination port `port`.
    pub fn to_port(&self, port: u16) -> impl Iterator<Item = &Seen> {
        self.packets.iter().filter(move |s| s.dst_port == port)
    }

    /// DSCPs of the outer headers of packets to `port` (empty for a [`Tap::Plain`] capture).
    pub fn outer_dscps(&self, port: u16) -> BTreeSet<u8> {
        self.to_port(port)
            .filter_map(|s| s.outer_tos.map(|tos| tos >> 2))
            .collect()
    }

    /// DSCPs of the (inner) packets to `port`.
    pub fn dscps(&self, port: u16) -> BTreeSet<u8> {
        self.to_port(port).map(|s| s.tos >> 2).collect()
    }

    /// Per destination port, the outer TOS bytes seen (the inner ones for a plain capture).
    pub fn tos_by_port(&self) -> BTreeMap<u16, BTreeSet<u8>> {
        let mut map: BTreeMap<u16, BTreeSet<u8>> = BTreeMap::new();
        for s in &self.packets {
            map.entry(s.dst_port)
                .or_default()
                .insert(s.outer_tos.unwrap_or(s.tos));
        }
        map
    }
}

/// Captures `tap` in `ns` while `traffic` runs on the calling thread, then for
/// [`SETTLE`] more (packets still in flight), at most `max` in all. Returns what was seen
/// and `traffic`'s result. Capture starts before `traffic` is called.
pub fn observe<T>(
    ns: &Netns,
    tap: Tap,
    max: Duration,
    traffic: impl FnOnce() -> Result<T>,
) -> Result<(Observation, T)> {
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel();
    thread::scope(|scope| {
        let stop = &stop;
        let capture = ns.spawn(scope, move || capture(tap, max, stop, ready_tx));
        let started = ready_rx.recv_timeout(READY_TIMEOUT);
        // Stop the capture on every path, also when the traffic fails.
        let outcome = match started {
            Ok(()) => traffic().inspect(|_| thread::sleep(SETTLE)),
            Err(e) => Err(e).context("the capture never started"),
        };
        stop.store(true, Ordering::Relaxed);
        let seen = join(capture).context("capture thread")?;
        Ok((seen, outcome?))
    })
}

fn capture(
    tap: Tap,
    max: Duration,
    stop: &AtomicBool,
    ready: mpsc::Sender<()>,
) -> Result<Observation> {
    let protocols: [i32; 2] = match tap {
        Tap::Tunnel => [IPPROTO_GRE, libc::IPPROTO_UDP],
        Tap::Plain => [libc::IPPROTO_UDP, libc::IPPROTO_TCP],
    };
    let sockets = protocols
        .iter()
        .map(|&protocol| {
            let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(protocol)))
                .with_context(|| format!("raw socket for IP protocol {protocol}"))?;
            socket.set_nonblocking(true)?;
            socket.set_recv_buffer_size(RECV_BUFFER)?;
            Ok(socket)
        })
        .collect::<Result<Vec<_>>>()?;
    let _ = ready.send(());
    let deadline = Instant::now() + max;
    let mut seen = Observation::default();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed)
        && Instant::now() < deadline
        && seen.packets.len() < MAX_CAPTURED
    {
        let mut fds: Vec<libc::pollfd> = sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live, correctly sized array of pollfd.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
        if rc <= 0 {
            continue;
        }
        for mut socket in &sockets {
            // Drain what is queued now; the outer loop re-checks stop and deadline.
            for _ in 0..DRAIN_PER_WAKEUP {
                let n = match socket.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).context("raw socket read"),
                };
                let packet = &buf[..n];
                let parsed = match tap {
                    Tap::Tunnel => parse_tunnelled(packet, GRE_UDP_PORT),
                    Tap::Plain => parse_ip(packet),
                };
                if let Some(s) = parsed
                    && seen.packets.len() < MAX_CAPTURED
                {
                    seen.packets.push(s);
                }
            }
        }
    }
    Ok(seen)
}

/// The GRE-in-UDP port the [`Tap::Tunnel`] tap recognises (the daemon's default).
pub const GRE_UDP_PORT: u16 = 4754;
/// Most packets one observation keeps.
pub const MAX_CAPTURED: usize = 200_000;
/// How long capture continues after the traffic function returns.
pub const SETTLE: Duration = Duration::from_millis(300);
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_MS: i32 = 50;
const DRAIN_PER_WAKEUP: usize = 256;
const RECV_BUFFER: usize = 4 << 20;
const IPPROTO_GRE: i32 = 47;
