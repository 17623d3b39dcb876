//! The NHRP control thread: the I/O shell around the sans-IO registration state machines.
//!
//! Workers hand it every NHRP message the dataplane routes to the control path (with the
//! underlay address and encapsulation it came over). A hub answers Registration and Purge
//! Requests with its [`RegistrationServer`]s (one per overlay address family) and mirrors
//! the registration table into dynamic peers and endpoint entries; a spoke registers with its
//! NHSs through [`RegistrationClient`]s and points its default route at the active one.
//! Every change republishes the dataplane snapshot the workers read between batches. The
//! thread sends on its own handles of worker 0's sockets: raw GRE, and the GRE-in-UDP
//! listener, so replies to a spoke behind NAT go back through the NAT's mapping.

mod peers;
pub mod view;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use mgre_io::GreSocket;
use mgre_proto::nhrp::{
    ClientConfig, NhsConfig, RegistrationClient, RegistrationServer, ReplyOutcome, ServerConfig,
    Transmit,
};
use mgre_proto::wire::gre::{self, GreRepr};
use mgre_proto::wire::nhrp::{Body, NhrpRepr, Operation};
use mgre_proto::{Dataplane, DataplaneConfig, Encap, Peer, PeerId, Prefix, WorkerStats};

use crate::config::{Config, NhrpConfig};
use peers::DynamicPeers;

/// Messages waiting for the control thread before workers start dropping them.
pub const QUEUE: usize = 4096;
/// Longest sleep of the control thread (how quickly it notices a stop request).
const TICK: Duration = Duration::from_millis(100);

/// An NHRP message a worker received.
#[derive(Debug)]
pub struct Inbound {
    /// The NHRP message (after the GRE header).
    pub message: Vec<u8>,
    /// The underlay address (and UDP port) it came from.
    pub from: SocketAddr,
    /// The encapsulation it came over.
    pub encap: Encap,
}

/// What this node does in NHRP.
#[derive(Debug)]
pub enum Node {
    /// Next Hop Server: the registration tables (one per address family) and the peers
    /// they created.
    Hub {
        /// IPv4 and/or IPv6 tables.
        servers: Vec<RegistrationServer>,
        /// Dynamic peers.
        peers: DynamicPeers,
    },
    /// Next Hop Client: the registrations (one client per address family).
    Spoke {
        /// IPv4 and/or IPv6 clients.
        clients: Vec<RegistrationClient>,
        /// Peer id of each NHS, by underlay address.
        nhs_peers: Vec<(IpAddr, PeerId)>,
    },
}

/// Control-path counters.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ControlCounters {
    /// Messages handled.
    pub received: u64,
    /// Messages that did not parse (bad checksum, truncated, …).
    pub malformed: u64,
    /// Well-formed messages of a type this node does not act on.
    pub unsupported: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages the kernel refused to send.
    pub send_errors: u64,
    /// Dataplane snapshots published.
    pub snapshots: u64,
}

/// The NHRP state shared with `mgre show` and the metrics scrape.
#[derive(Debug)]
pub struct NhrpState {
    /// Hub or spoke state.
    pub node: Node,
    /// Counters.
    pub counters: ControlCounters,
    /// Time zero of the state machines' clocks.
    pub epoch: Instant,
}

impl NhrpState {
    /// Seconds from now until `t` (a state-machine time), saturating at 0.
    pub fn remaining(&self, t: Duration) -> u64 {
        t.saturating_sub(self.epoch.elapsed()).as_secs()
    }
}

/// Sends NHRP messages over the underlay.
struct Sender {
    gre: GreSocket,
    udp: Option<UdpSocket>,
    udp_port: u16,
    header: GreRepr,
    buf: Vec<u8>,
}

impl Sender {
    /// Emits `message` behind a GRE header and sends it to `to` over `encap` (for GRE-in-UDP
    /// to `to`'s port, or the well-known one when it is 0).
    fn send(&mut self, message: &NhrpRepr, to: SocketAddr, encap: Encap) -> std::io::Result<()> {
        let hlen = self.header.header_len();
        self.buf.clear();
        self.buf.resize(hlen, 0);
        message
            .emit(&mut self.buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        self.header.emit(&mut self.buf);
        match (encap, &self.udp) {
            (Encap::Gre, _) => self.gre.send_to(&self.buf, to.ip()).map(drop),
            (Encap::GreUdp, Some(udp)) => {
                let port = if to.port() == 0 {
                    self.udp_port
                } else {
                    to.port()
                };
                udp.send_to(&self.buf, SocketAddr::new(to.ip(), port))
                    .map(drop)
            }
            (Encap::GreUdp, None) => Err(std::io::Error::other("no GRE-in-UDP socket")),
        }
    }
}

/// Everything the control thread owns.
pub struct Control {
    rx: Receiver<Inbound>,
    sender: Sender,
    state: Arc<Mutex<NhrpState>>,
    dp: Arc<ArcSwap<Dataplane>>,
    base: DataplaneConfig,
    /// Settings of dynamic peers (key, checksum).
    template: Peer,
    workers: Vec<Arc<WorkerStats>>,
    stop: Arc<AtomicBool>,
    dirty: bool,
}

impl Control {
    /// Builds the NHRP node of `cfg` (which must have `[nhrp]`), sending on handles of
    /// `gre` and `udp`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &Config,
        rx: Receiver<Inbound>,
        gre: GreSocket,
        udp: Option<UdpSocket>,
        dp: Arc<ArcSwap<Dataplane>>,
        workers: Vec<Arc<WorkerStats>>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<(Control, Arc<Mutex<NhrpState>>)> {
        let n = cfg.nhrp.as_ref().expect("Control::new needs [nhrp]");
        let base = cfg.dataplane.clone();
        let own: Vec<IpAddr> = cfg
            .tun
            .ipv4
            .iter()
            .map(|(a, _)| IpAddr::V4(*a))
            .chain(cfg.tun.ipv6.first().map(|(a, _)| IpAddr::V6(*a)))
            .collect();
        let node = match base.role {
            mgre_proto::Role::Hub => Node::Hub {
                servers: own
                    .iter()
                    .map(|&protocol_address| {
                        RegistrationServer::new(ServerConfig {
                            protocol_address,
                            nbma_address: cfg.nbma,
                            allowed_nbma: n.allowed_nbma.clone(),
                            secret: n.secret.clone(),
                            max_holding_time: n.holdtime,
                            max_entries: n.max_entries,
                        })
                    })
                    .collect(),
                peers: DynamicPeers::new(base.peers.len(), base.peer_capacity - base.peers.len()),
            },
            mgre_proto::Role::Spoke => Node::Spoke {
                clients: own
                    .iter()
                    .map(|&a| client_config(cfg, n, a))
                    .map(|c| {
                        RegistrationClient::new(c)
                            .map_err(|e| anyhow::anyhow!("NHRP client configuration: {e}"))
                    })
                    .collect::<anyhow::Result<_>>()?,
                nhs_peers: n.nhs.iter().map(|s| (s.nbma, s.peer)).collect(),
            },
        };
        let state = Arc::new(Mutex::new(NhrpState {
            node,
            counters: ControlCounters::default(),
            epoch: Instant::now(),
        }));
        let template = Peer {
            key: base.open_nhrp.and_then(|o| o.key),
            checksum: cfg.gre_checksum,
            ..Peer::vacant()
        };
        let header = GreRepr {
            protocol: gre::PROTO_NHRP,
            checksum: cfg.gre_checksum,
            key: cfg.gre_key,
            sequence: None,
        };
        let control = Control {
            rx,
            sender: Sender {
                gre,
                udp,
                udp_port: cfg.udp_port,
                header,
                buf: Vec::with_capacity(2048),
            },
            state: state.clone(),
            dp,
            base,
            template,
            workers,
            stop,
            dirty: false,
        };
        Ok((control, state))
    }

    /// Runs until the stop flag is set; a spoke then purges its registrations.
    pub fn run(mut self) {
        loop {
            let deadline = self.next_deadline();
            let wait = deadline.map_or(TICK, |d| d.min(TICK));
            match self.rx.recv_timeout(wait) {
                Ok(m) => {
                    self.handle(m);
                    // Drain what else is queued before republishing once.
                    while let Ok(m) = self.rx.try_recv() {
                        self.handle(m);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.poll_timers();
            if self.dirty {
                self.publish();
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        self.shutdown();
    }

    fn lock(&self) -> MutexGuard<'_, NhrpState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Duration {
        self.lock().epoch.elapsed()
    }

    /// Time until the next protocol timer.
    fn next_deadline(&self) -> Option<Duration> {
        let st = self.lock();
        let now = st.epoch.elapsed();
        let next = match &st.node {
            Node::Hub { servers, .. } => servers.iter().filter_map(|s| s.poll_timeout()).min(),
            Node::Spoke { clients, .. } => clients.iter().filter_map(|c| c.poll_timeout()).min(),
        };
        next.map(|t| t.saturating_sub(now))
    }

    fn handle(&mut self, m: Inbound) {
        let now = self.now();
        let repr = match NhrpRepr::parse(&m.message) {
            Ok(r) => r,
            Err(e) => {
                self.lock().counters.malformed += 1;
                tracing::debug!(from = %m.from, error = %e, "malformed NHRP message");
                return;
            }
        };
        let op = match &repr.body {
            Body::Entries { op, .. } => Some(*op),
            _ => None,
        };
        let mut out: Vec<(NhrpRepr, SocketAddr, Encap)> = Vec::new();
        {
            let workers = &self.workers;
            let template = &self.template;
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let st = &mut *guard;
            st.counters.received += 1;
            match &mut st.node {
                Node::Hub { servers, peers } => {
                    let Some(server) = servers
                        .iter_mut()
                        .find(|s| family_matches(s.config().protocol_address, &repr))
                    else {
                        st.counters.unsupported += 1;
                        return;
                    };
                    let outcome = match op {
                        Some(Operation::RegistrationRequest) => {
                            server.handle_request(now, m.from.ip(), &repr)
                        }
                        Some(Operation::PurgeRequest) => {
                            server.handle_purge(now, m.from.ip(), &repr)
                        }
                        _ => {
                            st.counters.unsupported += 1;
                            tracing::debug!(from = %m.from, op = repr.op_type(), "NHRP message not handled by a hub");
                            return;
                        }
                    };
                    peers.seen(m.from, m.encap);
                    log_changes(&outcome.changes);
                    if !outcome.changes.is_empty() {
                        let counters = |id: PeerId| peer_counters(workers, id);
                        peers.apply(&outcome.changes, template, &counters);
                        self.dirty = true;
                    }
                    if let Some(reply) = outcome.reply {
                        log_refusal(&reply, m.from);
                        out.push((reply, m.from, m.encap));
                    }
                }
                Node::Spoke { clients, .. } => match op {
                    Some(Operation::RegistrationReply) => {
                        let Some(client) = clients
                            .iter_mut()
                            .find(|c| family_matches(c.config().protocol_address, &repr))
                        else {
                            st.counters.unsupported += 1;
                            return;
                        };
                        let before = client.active();
                        match client.handle_reply(now, m.from.ip(), &repr) {
                            ReplyOutcome::Registered { holding_time } => tracing::debug!(
                                nhs = %m.from.ip(), holding_time, "registered with NHS"
                            ),
                            ReplyOutcome::Nak { code } => tracing::warn!(
                                nhs = %m.from.ip(), code, "NHS refused the registration"
                            ),
                            ReplyOutcome::Ignored(why) => {
                                tracing::debug!(nhs = %m.from.ip(), ?why, "NHRP reply ignored")
                            }
                        }
                        if client.active() != before {
                            self.dirty = true;
                        }
                    }
                    Some(Operation::PurgeReply) => {}
                    _ => {
                        st.counters.unsupported += 1;
                        tracing::debug!(from = %m.from, op = repr.op_type(), "NHRP message not handled by a spoke");
                    }
                },
            }
        }
        for (msg, to, encap) in out {
            self.transmit(&msg, to, encap);
        }
    }

    /// Runs the state machines' timers: expiries on a hub, (re)registrations on a spoke.
    fn poll_timers(&mut self) {
        let now = self.now();
        let mut out = Vec::new();
        {
            let workers = &self.workers;
            let template = &self.template;
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            match &mut guard.node {
                Node::Hub { servers, peers } => {
                    for s in servers.iter_mut() {
                        if s.poll_timeout().is_some_and(|t| t <= now) {
                            let changes: Vec<_> = s
                                .expire(now)
                                .into_iter()
                                .map(|registration| mgre_proto::nhrp::Change::Removed {
                                    registration,
                                    cause: mgre_proto::nhrp::RemovalCause::Expired,
                                })
                                .collect();
                            log_changes(&changes);
                            let counters = |id: PeerId| peer_counters(workers, id);
                            peers.apply(&changes, template, &counters);
                            self.dirty = true;
                        }
                    }
                }
                Node::Spoke { clients, .. } => {
                    for c in clients.iter_mut() {
                        if c.poll_timeout().is_some_and(|t| t <= now) {
                            let before = c.active();
                            out.extend(c.poll(now));
                            if c.active() != before {
                                self.dirty = true;
                            }
                        }
                    }
                }
            }
        }
        self.send_transmits(out);
    }

    fn send_transmits(&mut self, out: Vec<Transmit>) {
        for t in out {
            let encap = self
                .base
                .peers
                .iter()
                .find(|p| p.nbma == t.nhs)
                .map_or(Encap::Gre, |p| p.encap);
            self.transmit(&t.message, SocketAddr::new(t.nhs, 0), encap);
        }
    }

    fn transmit(&mut self, msg: &NhrpRepr, to: SocketAddr, encap: Encap) {
        let result = self.sender.send(msg, to, encap);
        let mut st = self.lock();
        match result {
            Ok(()) => st.counters.sent += 1,
            Err(e) => {
                st.counters.send_errors += 1;
                tracing::debug!(%to, error = %e, "sending NHRP failed");
            }
        }
    }

    /// Rebuilds the dataplane from the configured peers plus what NHRP learnt, and
    /// publishes it to the workers.
    fn publish(&mut self) {
        self.dirty = false;
        let mut st = self.lock();
        let cfg = match &st.node {
            Node::Hub { servers, peers } => {
                peers.snapshot(&self.base, servers.iter().flat_map(|s| s.entries()))
            }
            Node::Spoke { clients, nhs_peers } => {
                let mut cfg = self.base.clone();
                if let Some(active) = clients.iter().find_map(RegistrationClient::active)
                    && let Some((_, id)) = nhs_peers.iter().find(|(a, _)| *a == active)
                {
                    cfg.nhs = Some(*id);
                }
                cfg
            }
        };
        if let Node::Spoke { .. } = &st.node
            && let Some(id) = cfg.nhs
        {
            tracing::info!(nhs = %cfg.peers[id as usize].name, "default NHS");
        }
        st.counters.snapshots += 1;
        drop(st);
        self.dp.store(Arc::new(Dataplane::new(cfg)));
    }

    /// A spoke withdraws its registrations (Purge Requests, no reply wanted).
    fn shutdown(&mut self) {
        let out: Vec<Transmit> = {
            let mut st = self.lock();
            match &mut st.node {
                Node::Spoke { clients, .. } => {
                    clients.iter_mut().flat_map(|c| c.shutdown()).collect()
                }
                Node::Hub { .. } => Vec::new(),
            }
        };
        if !out.is_empty() {
            tracing::info!(purges = out.len(), "purging NHRP registrations");
        }
        self.send_transmits(out);
    }
}

/// The client configuration of a spoke for its overlay address `own`.
fn client_config(cfg: &Config, n: &NhrpConfig, own: IpAddr) -> ClientConfig {
    let nhs = n
        .nhs
        .iter()
        .map(|s| NhsConfig {
            nbma: s.nbma,
            protocol: s
                .addresses
                .iter()
                .copied()
                .find(|a| a.is_ipv4() == own.is_ipv4()),
            priority: s.priority,
        })
        .collect();
    let mut c = ClientConfig::new(cfg.nbma, own, nhs);
    c.prefixes = n
        .register
        .iter()
        .copied()
        .filter(|p: &Prefix| p.addr().is_ipv4() == own.is_ipv4())
        .collect();
    c.holding_time = n.holdtime;
    c.secret = n.secret.clone();
    c.retry_max = n.retry_max;
    c.failover_after = n.failover_after;
    c.first_request_id = random_u32();
    c
}

/// A request ID base that differs between daemon runs (RFC 2332 wants IDs unique per
/// source; a restarted spoke must not reuse its predecessor's).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) as u32
}

fn family_matches(own: IpAddr, repr: &NhrpRepr) -> bool {
    matches!(
        (own, repr.protocol),
        (IpAddr::V4(_), mgre_proto::wire::nhrp::Family::Ipv4)
            | (IpAddr::V6(_), mgre_proto::wire::nhrp::Family::Ipv6)
    )
}

/// A peer's (rx packets, rx bytes, tx packets, tx bytes) summed over the workers.
fn peer_counters(workers: &[Arc<WorkerStats>], id: PeerId) -> (u64, u64, u64, u64) {
    workers
        .iter()
        .filter_map(|w| w.peer(id))
        .fold((0, 0, 0, 0), |(a, b, c, d), p| {
            (
                a + p.rx.packets.get(),
                b + p.rx.bytes.get(),
                c + p.tx.packets.get(),
                d + p.tx.bytes.get(),
            )
        })
}

fn log_changes(changes: &[mgre_proto::nhrp::Change]) {
    use mgre_proto::nhrp::Change;
    for c in changes {
        match c {
            Change::Added(r) => tracing::info!(
                prefix = %r.prefix, nbma = %r.nbma, nat = ?r.nat_nbma, holdtime = r.holding_time,
                "NHRP registration"
            ),
            Change::Refreshed(r) => {
                tracing::debug!(prefix = %r.prefix, nbma = %r.nbma, "NHRP registration refreshed")
            }
            Change::Replaced { old, new } => tracing::info!(
                prefix = %new.prefix, from = %old.nbma, to = %new.nbma, "NHRP registration moved"
            ),
            Change::Removed {
                registration,
                cause,
            } => tracing::info!(
                prefix = %registration.prefix, nbma = %registration.nbma, ?cause,
                "NHRP registration removed"
            ),
        }
    }
}

fn log_refusal(reply: &NhrpRepr, to: SocketAddr) {
    if let Body::Entries { cies, .. } = &reply.body
        && let Some(c) = cies.iter().find(|c| c.code != 0)
    {
        tracing::warn!(%to, code = c.code, "NHRP registration refused");
    }
}
