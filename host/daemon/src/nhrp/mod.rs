//! The NHRP control thread: the I/O shell around the sans-IO NHRP state machines.
//!
//! Workers hand it every NHRP message the dataplane routes to the control path (with the
//! underlay address and encapsulation it came over) and, on a hub with redirect on, the
//! first bytes of hairpinned packets the redirect limiter let through. A hub ([`hub`])
//! answers Registration and Purge Requests, answers or forwards Resolution Requests and
//! sends Traffic Indications; a spoke ([`spoke`]) registers with its NHSs and, with
//! shortcuts on, resolves redirected destinations and answers other spokes. Every change of
//! peers or prefixes republishes the dataplane snapshot the workers read between batches.
//! The thread sends on its own handles of worker 0's sockets: raw GRE, and the GRE-in-UDP
//! listener, so replies to a spoke behind NAT go back through the NAT's mapping.

mod hub;
mod peers;
mod spoke;
mod upstream;
pub mod view;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use mgre_io::GreSocket;
use mgre_plugin::{ControlHooks, PluginManager};
use mgre_proto::nhrp::{
    ClientConfig, NhsConfig, RegistrationClient, RegistrationServer, Resolver, ResolverConfig,
    ServerConfig, errors,
};
use mgre_proto::wire::gre::{self, GreRepr};
use mgre_proto::wire::nhrp::NhrpRepr;
use mgre_proto::{Dataplane, DataplaneConfig, Encap, Peer, PeerId, Prefix, WorkerStats};

use crate::config::{Config, NhrpConfig};
pub use hub::HubState;
use peers::DynamicPeers;
pub use spoke::SpokeState;
pub use upstream::Upstream;

/// Messages waiting for the control thread before workers start dropping them.
pub const QUEUE: usize = 4096;
/// Longest sleep of the control thread (how quickly it notices a stop request).
const TICK: Duration = Duration::from_millis(100);
/// Redirect limiter slots (source/destination pairs tracked at once).
pub const REDIRECT_SLOTS: usize = 4096;

/// What workers hand the control thread.
#[derive(Debug)]
pub enum ToControl {
    /// An NHRP message.
    Nhrp(Inbound),
    /// A hub forwarded this packet (its first bytes) from peer `ingress` to another spoke,
    /// and the redirect limiter allows a Traffic Indication for its addresses.
    Hairpinned {
        /// The spoke it came from.
        ingress: PeerId,
        /// The packet from its IP header, cut at the Traffic Indication's limit.
        packet: Vec<u8>,
    },
}

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
    /// Next Hop Server.
    Hub(HubState),
    /// Next Hop Client.
    Spoke(SpokeState),
}

impl Node {
    /// "hub" or "spoke", as `show` and metrics name the role.
    pub fn role(&self) -> &'static str {
        match self {
            Node::Hub(_) => "hub",
            Node::Spoke(_) => "spoke",
        }
    }

    /// The NHSs this node registers with (a regional hub's core hubs, a spoke's hubs).
    pub fn upstream(&self) -> &Upstream {
        match self {
            Node::Hub(h) => &h.upstream,
            Node::Spoke(s) => &s.upstream,
        }
    }
}

/// Control-path counters.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ControlCounters {
    /// Messages handled.
    pub received: u64,
    /// Messages that did not parse (bad checksum, truncated, …).
    pub malformed: u64,
    /// Messages not acted on because they carry a compulsory extension of an unknown type
    /// (each answered with an Error Indication, code 1).
    pub unrecognized_extensions: u64,
    /// Well-formed messages of a type this node does not act on.
    pub unsupported: u64,
    /// Error Indications received.
    pub error_indications: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages the kernel refused to send.
    pub send_errors: u64,
    /// Dataplane snapshots published.
    pub snapshots: u64,
    /// Hub: Traffic Indications sent (redirects).
    pub redirects: u64,
    /// Hub: Resolution Requests forwarded to the registered owner.
    pub resolutions_forwarded: u64,
    /// Hub: Resolution Requests answered for its own addresses.
    pub resolutions_answered: u64,
    /// Hub: Resolution Requests for unknown destinations (negative reply).
    pub resolutions_unresolved: u64,
    /// Regional hub: Resolution Requests for unknown destinations passed up to the core hub.
    pub resolutions_upstream: u64,
    /// Hub: Resolution Requests refused with an Error Indication.
    pub resolution_errors: u64,
    /// Redirects (hub) and resolutions (hub, spoke) a shortcut policy plugin denied.
    pub shortcuts_denied: u64,
}

/// The NHRP state shared with `mgre show` and the metrics scrape.
#[derive(Debug)]
pub struct NhrpState {
    /// Hub or spoke state.
    pub node: Node,
    /// Counters.
    pub counters: ControlCounters,
    /// The configured `network-id` (local only).
    pub network_id: u32,
    /// Time zero of the state machines' clocks.
    pub epoch: Instant,
}

impl NhrpState {
    /// Seconds from now until `t` (a state-machine time), saturating at 0.
    pub fn remaining(&self, t: Duration) -> u64 {
        t.saturating_sub(self.epoch.elapsed()).as_secs()
    }
}

/// Where a message goes.
#[derive(Debug, Clone, Copy)]
enum Dest {
    /// Back where a message came from (address, port and encapsulation as received).
    Reply(SocketAddr, Encap),
    /// To an underlay address: the way the dataplane reaches that peer (NAT port
    /// included), else the site's default encapsulation.
    Underlay(IpAddr),
}

/// Messages to send.
type Outbox = Vec<(NhrpRepr, Dest)>;

/// What the hub and spoke halves read while handling a message.
struct Ctx<'a> {
    /// Settings of learnt peers (key, checksum, default encapsulation).
    template: &'a Peer,
    workers: &'a [Arc<WorkerStats>],
    /// The dataplane snapshot in force.
    dp: &'a Dataplane,
    /// How many of its peers are configured ones.
    static_peers: usize,
}

impl Ctx<'_> {
    /// A peer's (rx packets, rx bytes, tx packets, tx bytes) summed over the workers.
    fn peer_counters(&self, id: PeerId) -> (u64, u64, u64, u64) {
        let rx = crate::snapshot::peer_count(self.workers, id, true);
        let tx = crate::snapshot::peer_count(self.workers, id, false);
        (rx.packets, rx.bytes, tx.packets, tx.bytes)
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
    rx: Receiver<ToControl>,
    sender: Sender,
    state: Arc<Mutex<NhrpState>>,
    dp: Arc<ArcSwap<Dataplane>>,
    base: DataplaneConfig,
    /// Settings of learnt peers (key, checksum, default encapsulation).
    template: Peer,
    workers: Vec<Arc<WorkerStats>>,
    stop: Arc<AtomicBool>,
    dirty: bool,
    /// The policy plugins' NHRP hooks (own instances, following hot reloads).
    hooks: Option<(Arc<PluginManager>, ControlHooks)>,
    /// This node's underlay address and tunnel addresses (one per family), the source of its
    /// Error Indications.
    nbma: IpAddr,
    own: Vec<IpAddr>,
}

impl Control {
    /// Builds the NHRP node of `cfg` (which must have `[nhrp]`), sending on handles of
    /// `gre` and `udp`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &Config,
        rx: Receiver<ToControl>,
        gre: GreSocket,
        udp: Option<UdpSocket>,
        dp: Arc<ArcSwap<Dataplane>>,
        workers: Vec<Arc<WorkerStats>>,
        stop: Arc<AtomicBool>,
        plugins: Option<Arc<PluginManager>>,
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
        // Learnt peers speak the tunnel's key and checksum; a spoke reaches its shortcut
        // peers over the encapsulation it uses to its preferred NHS until they answer over
        // another.
        let default_encap = base
            .nhs
            .map_or(Encap::Gre, |id| base.peers[id as usize].encap);
        let template = Peer {
            key: cfg.gre_key,
            checksum: cfg.gre_checksum,
            encap: default_encap,
            ..Peer::vacant()
        };
        let slots = base.peer_capacity.saturating_sub(base.peers.len());
        let upstream = Upstream {
            clients: if n.nhs.is_empty() {
                Vec::new()
            } else {
                own.iter()
                    .map(|&a| {
                        RegistrationClient::new(client_config(cfg, n, a))
                            .map_err(|e| anyhow::anyhow!("NHRP client configuration: {e}"))
                    })
                    .collect::<anyhow::Result<_>>()?
            },
            nhs_peers: n.nhs.iter().map(|s| (s.nbma, s.peer)).collect(),
        };
        let node = match base.role {
            mgre_proto::Role::Hub => Node::Hub(HubState {
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
                peers: DynamicPeers::new(base.peers.len(), slots),
                redirect: n.redirect,
                upstream,
            }),
            mgre_proto::Role::Spoke => Node::Spoke(SpokeState::new(
                upstream,
                if n.shortcuts {
                    own.iter()
                        .map(|&a| Resolver::new(resolver_config(cfg, n, a)))
                        .collect()
                } else {
                    Vec::new()
                },
                DynamicPeers::new(base.peers.len(), slots),
            )),
        };
        let state = Arc::new(Mutex::new(NhrpState {
            node,
            counters: ControlCounters::default(),
            network_id: n.network_id,
            epoch: Instant::now(),
        }));
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
            hooks: plugins.map(|m| {
                let hooks = ControlHooks::new(m.current());
                (m, hooks)
            }),
            nbma: cfg.nbma,
            own,
        };
        Ok((control, state))
    }

    /// Runs until the stop flag is set; a spoke then purges its registrations and the
    /// answers it gave.
    pub fn run(mut self) {
        loop {
            let wait = self.next_deadline().map_or(TICK, |d| d.min(TICK));
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

    /// Time until the next protocol timer.
    fn next_deadline(&self) -> Option<Duration> {
        let st = self.lock();
        let now = st.epoch.elapsed();
        let next = match &st.node {
            Node::Hub(h) => h.next_deadline(),
            Node::Spoke(s) => s.next_deadline(),
        };
        next.map(|t| t.saturating_sub(now))
    }

    fn handle(&mut self, m: ToControl) {
        if let Some((manager, hooks)) = &mut self.hooks {
            hooks.refresh(&manager.published().load());
        }
        let hooks = self.hooks.as_mut().map(|(_, h)| h);
        let dp = self.dp.load();
        let ctx = Ctx {
            template: &self.template,
            workers: &self.workers,
            dp: &dp,
            static_peers: self.base.peers.len(),
        };
        let mut out = Outbox::new();
        {
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let st = &mut *guard;
            let now = st.epoch.elapsed();
            match m {
                ToControl::Hairpinned { ingress, packet } => {
                    if let Node::Hub(h) = &mut st.node {
                        h.hairpinned(&mut st.counters, &ctx, ingress, &packet, hooks, &mut out);
                    }
                }
                ToControl::Nhrp(m) => match NhrpRepr::parse(&m.message) {
                    Err(e) => {
                        st.counters.malformed += 1;
                        tracing::debug!(from = %m.from, error = %e, "malformed NHRP message");
                    }
                    Ok(repr) => {
                        st.counters.received += 1;
                        // RFC 2332 §5.3: a message with a compulsory extension this node
                        // does not know is not acted on; its sender learns why.
                        let own = self.own.iter().find(|a| family_matches(**a, &repr));
                        if let Some(indication) = own.and_then(|&own| {
                            errors::check_compulsory(&repr, &m.message, self.nbma, own)
                        }) {
                            st.counters.unrecognized_extensions += 1;
                            tracing::debug!(
                                from = %m.from, op = repr.op_type(),
                                "NHRP message with an unknown compulsory extension refused"
                            );
                            out.push((indication, Dest::Reply(m.from, m.encap)));
                        } else {
                            self.dirty |= match &mut st.node {
                                Node::Hub(h) => h.handle(
                                    &mut st.counters,
                                    &ctx,
                                    now,
                                    &m,
                                    &repr,
                                    hooks,
                                    &mut out,
                                ),
                                Node::Spoke(s) => s.handle(
                                    &mut st.counters,
                                    &ctx,
                                    now,
                                    &m,
                                    &repr,
                                    hooks,
                                    &mut out,
                                ),
                            };
                        }
                    }
                },
            }
        }
        self.transmit(&dp, out);
    }

    /// Runs the state machines' timers.
    fn poll_timers(&mut self) {
        let dp = self.dp.load();
        let ctx = Ctx {
            template: &self.template,
            workers: &self.workers,
            dp: &dp,
            static_peers: self.base.peers.len(),
        };
        let mut out = Outbox::new();
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = st.epoch.elapsed();
            self.dirty |= match &mut st.node {
                Node::Hub(h) => h.poll(&ctx, now, &mut out),
                Node::Spoke(s) => s.poll(&ctx, now, &mut out),
            };
        }
        self.transmit(&dp, out);
    }

    fn transmit(&mut self, dp: &Dataplane, out: Outbox) {
        for (msg, dest) in out {
            let (to, encap) = match dest {
                Dest::Reply(to, encap) => (to, encap),
                Dest::Underlay(ip) => {
                    match dp.peer_by_nbma(ip).map(|id| &dp.peers()[id as usize]) {
                        Some(p) => (SocketAddr::new(ip, p.udp_port.unwrap_or(0)), p.encap),
                        None => (SocketAddr::new(ip, 0), self.template.encap),
                    }
                }
            };
            let result = self.sender.send(&msg, to, encap);
            let mut st = self.lock();
            match result {
                Ok(()) => st.counters.sent += 1,
                Err(e) => {
                    st.counters.send_errors += 1;
                    tracing::debug!(%to, error = %e, "sending NHRP failed");
                }
            }
        }
    }

    /// Rebuilds the dataplane from the configured peers plus what NHRP learnt, and
    /// publishes it to the workers.
    fn publish(&mut self) {
        self.dirty = false;
        let mut st = self.lock();
        let cfg = match &st.node {
            Node::Hub(h) => h.snapshot(&self.base),
            Node::Spoke(s) => s.snapshot(&self.base),
        };
        if cfg.nhs != self.dp.load().config().nhs
            && let Some(id) = cfg.nhs
        {
            tracing::info!(nhs = %cfg.peers[id as usize].name, "default NHS");
        }
        st.counters.snapshots += 1;
        drop(st);
        self.dp.store(Arc::new(Dataplane::new(cfg)));
    }

    /// A spoke withdraws its registrations and answers, a regional hub its registrations
    /// with core hubs (Purge Requests, no reply wanted).
    fn shutdown(&mut self) {
        let mut out = Outbox::new();
        match &mut self.lock().node {
            Node::Spoke(s) => s.shutdown(&mut out),
            Node::Hub(h) => h.shutdown(&mut out),
        }
        if !out.is_empty() {
            tracing::info!(
                purges = out.len(),
                "purging NHRP registrations and shortcuts"
            );
        }
        let dp = self.dp.load_full();
        self.transmit(&dp, out);
    }
}

/// The client configuration of a spoke (or regional hub) for its overlay address `own`.
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

pub(crate) fn family_matches(own: IpAddr, repr: &NhrpRepr) -> bool {
    matches!(
        (own, repr.protocol),
        (IpAddr::V4(_), mgre_proto::wire::nhrp::Family::Ipv4)
            | (IpAddr::V6(_), mgre_proto::wire::nhrp::Family::Ipv6)
    )
}

pub(crate) fn log_changes(changes: &[mgre_proto::nhrp::Change]) {
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

/// The resolver configuration of a spoke for its overlay address `own`: it answers for the
/// prefixes it registers.
fn resolver_config(cfg: &Config, n: &NhrpConfig, own: IpAddr) -> ResolverConfig {
    let mut c = ResolverConfig::new(cfg.nbma, own);
    c.prefixes = n
        .register
        .iter()
        .copied()
        .filter(|p: &Prefix| p.addr().is_ipv4() == own.is_ipv4())
        .collect();
    c.secret = n.secret.clone();
    c.holding_time = n.holdtime;
    c.idle_timeout = n.shortcut_idle;
    // Refresh a used shortcut a third of its holding time before it ends (at most FRR's 60 s).
    c.refresh_before = Duration::from_secs(u64::from(n.holdtime.get()) / 3).min(c.refresh_before);
    c.max_shortcuts = n.max_shortcuts;
    c.first_request_id = random_u32();
    c
}
