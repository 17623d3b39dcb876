//! A constant-rate, sequence-numbered UDP stream between two namespaces, to prove that
//! something done while it runs (plugin swaps, reloads) loses, duplicates or delays nothing;
//! and [`udp_deliveries`], which counts per destination port what a burst delivers.
//!
//! [`udp_stream`] starts a receiver in the destination namespace and a paced sender in the
//! source namespace, runs the caller's action on the calling thread, stops the sender when
//! the action returns, and waits (bounded) for stragglers. Bounded in packets
//! (`max_packets`), in time (the sender stops at `max_packets`; the receiver gives up
//! [`DRAIN_TIMEOUT`] after the sender has stopped) and it only sends to the address given.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use socket2::{Domain, Socket, Type};

use crate::netns::{Netns, join};

/// What the receiver of a [`udp_stream`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    /// Datagrams sent (sequence numbers `0..sent`).
    pub sent: u32,
    /// Distinct sequence numbers received.
    pub received: u32,
    /// Datagrams received more than once (extra copies).
    pub duplicates: u32,
    /// Datagrams that arrived after one with a higher sequence number.
    pub reordered: u32,
    /// Sequence numbers never received, in order (at most [`MAX_LISTED`]).
    pub missing: Vec<u32>,
    /// How many were never received.
    pub missing_count: u32,
    /// How long the sender ran.
    pub duration: Duration,
}

impl StreamReport {
    /// Whether every datagram arrived exactly once.
    pub fn is_perfect(&self) -> bool {
        self.received == self.sent && self.duplicates == 0 && self.missing_count == 0
    }
}

/// Streams `rate` datagrams per second of [`PAYLOAD`] bytes (a big-endian sequence number
/// first) from an ephemeral port in `src` to `to` (an address of `dst`, bound there by the
/// receiver) while `action` runs, for at most `max_packets` datagrams. The sender starts
/// before `action` is called and stops when it returns; then the receiver waits up to
/// [`DRAIN_TIMEOUT`] for the rest.
pub fn udp_stream<T>(
    src: &Netns,
    dst: &Netns,
    to: SocketAddr,
    rate: u32,
    max_packets: u32,
    action: impl FnOnce() -> Result<T>,
) -> Result<(StreamReport, T)> {
    ensure!(rate > 0 && max_packets > 0, "empty stream");
    let stop = AtomicBool::new(false);
    let sent = AtomicU32::new(0);
    let sender_done = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel();
    thread::scope(|scope| {
        let (stop, sent, sender_done) = (&stop, &sent, &sender_done);
        // Even if the sender died without saying so, the receiver stops in time.
        let give_up = Instant::now() + Duration::from_secs(1) / rate * max_packets + GIVE_UP_MARGIN;
        let receiver = dst.spawn(scope, move || {
            receive(to, max_packets, sent, sender_done, give_up, ready_tx)
        });
        let ready = ready_rx
            .recv_timeout(READY_TIMEOUT)
            .context("the stream receiver never bound");
        let sender = src.spawn(scope, move || {
            let outcome = ready.and_then(|()| send(to, rate, max_packets, stop, sent));
            sender_done.store(true, Ordering::Release);
            outcome
        });
        let outcome = action();
        stop.store(true, Ordering::Relaxed);
        let duration = join(sender).context("stream sender");
        let counts = join(receiver).context("stream receiver");
        let (duration, counts, outcome) = (duration?, counts?, outcome?);
        let total = sent.load(Ordering::Acquire);
        Ok((report(&counts.0, counts.1, total, duration), outcome))
    })
}

/// Sends `per_port` datagrams to each of `ports` of `addr` from one ephemeral port in `src`
/// (round robin, one every `gap`), and counts per port what sockets bound to `addr` in `dst`
/// receive, waiting up to [`DELIVERY_SETTLE`] after the last send for the rest.
pub fn udp_deliveries(
    src: &Netns,
    dst: &Netns,
    addr: IpAddr,
    ports: &[u16],
    per_port: u32,
    gap: Duration,
) -> Result<BTreeMap<u16, u32>> {
    let expected = per_port * ports.len() as u32;
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel();
    thread::scope(|scope| {
        let stop = &stop;
        let give_up = Instant::now() + gap * expected + DELIVERY_SETTLE + GIVE_UP_MARGIN;
        let receiver = dst.spawn(scope, move || {
            let sockets = ports
                .iter()
                .map(|&port| {
                    let socket = UdpSocket::bind((addr, port))
                        .with_context(|| format!("binding {addr} port {port}"))?;
                    socket.set_nonblocking(true)?;
                    Ok((port, socket))
                })
                .collect::<Result<Vec<_>>>()?;
            let _ = ready_tx.send(());
            let mut counts: BTreeMap<u16, u32> = ports.iter().map(|&p| (p, 0)).collect();
            let mut stopped_at: Option<Instant> = None;
            let mut buf = [0u8; 2048];
            while Instant::now() < give_up {
                if stop.load(Ordering::Acquire) {
                    let since = *stopped_at.get_or_insert_with(Instant::now);
                    if counts.values().sum::<u32>() >= expected || since.elapsed() > DELIVERY_SETTLE
                    {
                        break;
                    }
                }
                let mut any = false;
                for (port, socket) in &sockets {
                    while socket.recv(&mut buf).is_ok() {
                        *counts.entry(*port).or_default() += 1;
                        any = true;
                    }
                }
                if !any {
                    thread::sleep(Duration::from_millis(5));
                }
            }
            Ok(counts)
        });
        let sender = src.spawn(scope, move || {
            let outcome = ready_rx
                .recv_timeout(READY_TIMEOUT)
                .context("the receiver never bound")
                .and_then(|()| {
                    let socket = UdpSocket::bind((unspecified(addr), 0))?;
                    for round in 0..per_port {
                        for &port in ports {
                            socket
                                .send_to(&round.to_be_bytes(), (addr, port))
                                .with_context(|| format!("sending to port {port}"))?;
                            thread::sleep(gap);
                        }
                    }
                    Ok(())
                });
            stop.store(true, Ordering::Release);
            outcome
        });
        let sent = join(sender).context("UDP sender");
        let counts = join(receiver).context("UDP receiver")?;
        sent?;
        Ok(counts)
    })
}

/// The unspecified address of `addr`'s family.
fn unspecified(addr: IpAddr) -> IpAddr {
    if addr.is_ipv4() {
        [0u8; 4].into()
    } else {
        [0u16; 8].into()
    }
}

/// Sends until `stop` or `max_packets`; records the count in `sent`; returns how long.
fn send(
    to: SocketAddr,
    rate: u32,
    max_packets: u32,
    stop: &AtomicBool,
    sent: &AtomicU32,
) -> Result<Duration> {
    let socket = UdpSocket::bind((unspecified(to.ip()), 0)).context("stream sender socket")?;
    let interval = Duration::from_secs(1) / rate;
    let mut payload = [0u8; PAYLOAD];
    let started = Instant::now();
    for seq in 0..max_packets {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let due = started + interval * seq;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        payload[..4].copy_from_slice(&seq.to_be_bytes());
        socket
            .send_to(&payload, to)
            .with_context(|| format!("sending datagram {seq}"))?;
        sent.store(seq + 1, Ordering::Release);
    }
    Ok(started.elapsed())
}

/// Receives until every sent datagram is in, or [`DRAIN_TIMEOUT`] after the sender
/// stopped. Returns per-sequence counts and the number of reordered arrivals.
fn receive(
    at: SocketAddr,
    max_packets: u32,
    sent: &AtomicU32,
    sender_done: &AtomicBool,
    give_up: Instant,
    ready: mpsc::Sender<()>,
) -> Result<(Vec<u8>, u32)> {
    let socket = Socket::new(Domain::for_address(at), Type::DGRAM, None)?;
    socket.set_recv_buffer_size(RECV_BUFFER)?;
    socket
        .bind(&at.into())
        .with_context(|| format!("binding {at}"))?;
    let socket = UdpSocket::from(socket);
    socket.set_read_timeout(Some(RECV_POLL))?;
    let _ = ready.send(());
    let mut counts = vec![0u8; max_packets as usize];
    let (mut distinct, mut highest, mut reordered) = (0u32, None::<u32>, 0u32);
    let mut buf = [0u8; 2048];
    let mut done_at: Option<Instant> = None;
    while Instant::now() < give_up {
        if sender_done.load(Ordering::Acquire) {
            let since = *done_at.get_or_insert_with(Instant::now);
            if distinct >= sent.load(Ordering::Acquire) || since.elapsed() > DRAIN_TIMEOUT {
                break;
            }
        }
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e).context("stream receive"),
        };
        let Some(seq) = buf
            .get(..4)
            .filter(|_| n >= 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            continue;
        };
        let Some(count) = counts.get_mut(seq as usize) else {
            continue;
        };
        if *count == 0 {
            distinct += 1;
        }
        *count = count.saturating_add(1);
        match highest {
            Some(h) if seq < h => reordered += 1,
            _ => highest = Some(seq),
        }
    }
    Ok((counts, reordered))
}

fn report(counts: &[u8], reordered: u32, sent: u32, duration: Duration) -> StreamReport {
    let sent_counts = &counts[..(sent as usize).min(counts.len())];
    let missing_all = sent_counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == 0)
        .map(|(seq, _)| seq as u32);
    StreamReport {
        sent,
        received: sent_counts.iter().filter(|c| **c > 0).count() as u32,
        duplicates: sent_counts
            .iter()
            .map(|c| u32::from(c.saturating_sub(1)))
            .sum(),
        reordered,
        missing: missing_all.clone().take(MAX_LISTED).collect(),
        missing_count: missing_all.count() as u32,
        duration,
    }
}

/// How long [`udp_deliveries`] waits for datagrams after the last send.
pub const DELIVERY_SETTLE: Duration = Duration::from_secs(2);
/// Bytes per datagram.
pub const PAYLOAD: usize = 64;
/// How long the receiver waits for stragglers after the sender stopped.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Most missing sequence numbers a report lists.
pub const MAX_LISTED: usize = 50;
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The receiver stops this long after the stream's scheduled end, whatever happens.
const GIVE_UP_MARGIN: Duration = Duration::from_secs(30);
const RECV_POLL: Duration = Duration::from_millis(100);
const RECV_BUFFER: usize = 4 << 20;
