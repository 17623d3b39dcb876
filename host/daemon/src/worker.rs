//! A dataplane worker: one thread that polls its TUN queue and underlay sockets, moves packets
//! in batches through the sans-IO core, and sends the results with one batched call per
//! output. All buffers are allocated when the worker starts; the loop allocates nothing.
//!
//! Offloads meet here: a TUN read may bring a 64 KiB TCP super-packet, split into segments
//! (GSO) straight into the batch's frames; a UDP receive may bring a train of coalesced
//! datagrams (UDP GRO), split into frames too; GRE-in-UDP sends go out as UDP GSO trains; TUN
//! writes coalesce consecutive segments of a flow back into super-packets (GRO). In between,
//! every packet takes the same per-packet path as without offload.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use arc_swap::ArcSwap;
use mgre_io::{
    FrameBatch, GreSocket, MAX_SEGMENTS, SendQueue, TunQueue, TunRead, TunRx, TunTx, UdpSockets,
};
use mgre_plugin::PluginManager;
use mgre_proto::dataplane::HEADROOM;
use mgre_proto::nhrp::RedirectLimiter;
use mgre_proto::nhrp::redirect::INDICATION_PACKET_LEN;
use mgre_proto::{
    Dataplane, DropReason, Encap, Inspected, Peer, Policy, Step, Verdict, WorkerState, WorkerStats,
};

use crate::nhrp::{Inbound, ToControl};
use crate::policy::PolicyStage;

/// Frames per batch: room for a couple of TUN super-packets' segments.
pub const BATCH: usize = 128;
/// Coalesced UDP receive buffers per `recvmmsg` (each up to 64 KiB of datagrams).
const GRO_BUFFERS: usize = 8;
/// Batches drained from one source before the others get a turn.
const ROUNDS_PER_WAKEUP: usize = 8;
/// Poll timeout: how quickly the worker notices a stop request.
const POLL_MS: i32 = 100;

/// Everything one worker owns or shares.
pub struct Worker {
    /// Forwarding state, republished when NHRP changes the peers; read once per wakeup.
    pub dp: Arc<ArcSwap<Dataplane>>,
    /// Where NHRP messages go (the control thread), when NHRP is configured.
    pub control: Option<SyncSender<ToControl>>,
    /// Hub with redirect on: the limiter deciding which hairpinned packets trigger a
    /// Traffic Indication (shared by all workers), and the epoch of its clock.
    pub redirect: Option<(Arc<RedirectLimiter>, Instant)>,
    /// This worker's counters (it is their only writer).
    pub stats: Arc<WorkerStats>,
    /// This worker's TUN queue.
    pub tun: TunQueue,
    /// This worker's raw GRE socket (receiving its share of the GRE traffic).
    pub gre: GreSocket,
    /// This worker's GRE-in-UDP sockets, when any peer uses them.
    pub udp: Option<UdpSockets>,
    /// Destination port for GRE-in-UDP.
    pub udp_port: u16,
    /// Largest GRE-in-UDP payload the underlay carries unfragmented (UDP GSO segment limit).
    pub udp_max_payload: usize,
    /// Set to stop the loop.
    pub stop: Arc<AtomicBool>,
    /// Policy plugins, when configured.
    pub plugins: Option<Arc<PluginManager>>,
}

/// One batch of frames in flight and what was decided about each.
struct Lane {
    batch: FrameBatch,
    verdicts: Vec<Verdict>,
    /// Frames awaiting a policy decision, and the decisions.
    inspected: Vec<Option<Inspected>>,
    policies: Vec<Policy>,
}

impl Lane {
    /// Records the first half's outcome for frame `i`.
    fn set_step(&mut self, i: usize, step: Step) {
        match step {
            Step::Done(v) => {
                self.verdicts[i] = v;
                self.inspected[i] = None;
            }
            Step::Decide(p) => self.inspected[i] = Some(p),
        }
    }

    fn new() -> Self {
        Lane {
            batch: FrameBatch::new(BATCH, HEADROOM),
            verdicts: vec![Verdict::Drop(DropReason::TxError); BATCH],
            inspected: vec![None; BATCH],
            policies: vec![Policy::DEFAULT; BATCH],
        }
    }
}

/// The worker thread's own mutable state.
struct Local {
    /// The dataplane snapshot this wakeup works with.
    dp: Arc<Dataplane>,
    ws: WorkerState,
    lane: Lane,
    queue: SendQueue,
    policy: Option<PolicyStage>,
    tun_rx: TunRx,
    tun_tx: TunTx,
    /// Receive buffers for coalesced UDP trains (when the listener has UDP GRO).
    gro: Option<FrameBatch>,
    /// Where a hub encapsulates each copy of a replicated multicast packet.
    copy: Box<[u8]>,
}

impl Worker {
    /// Runs until the stop flag is set.
    pub fn run(self) {
        let dp = self.dp.load_full();
        let mut l = Local {
            ws: WorkerState::new(&dp),
            dp,
            lane: Lane::new(),
            queue: SendQueue::new(BATCH),
            policy: self.plugins.clone().map(|m| PolicyStage::new(m, BATCH)),
            tun_rx: TunRx::default(),
            tun_tx: self.tun.tx(BATCH),
            gro: self
                .udp
                .as_ref()
                .filter(|u| u.gro())
                .map(|_| FrameBatch::new(GRO_BUFFERS, 0)),
            copy: vec![0u8; HEADROOM + usize::from(u16::MAX)].into_boxed_slice(),
        };
        let tun_fd = self.tun.as_raw_fd();
        let gre_fd = Some(self.gre.as_raw_fd());
        let udp_fd = self.udp.as_ref().map(UdpSockets::listen_fd);
        let mut fds: Vec<libc::pollfd> = [Some(tun_fd), gre_fd, udp_fd]
            .into_iter()
            .flatten()
            .map(pollfd)
            .collect();
        // Allocations before the loop (buffers, plugin instances) are the start-up cost; the
        // published count is what the loop itself allocates.
        let base = crate::alloc_count::thread_allocations();
        while !self.stop.load(Ordering::Relaxed) {
            self.stats
                .heap_allocations
                .set(crate::alloc_count::thread_allocations() - base);
            // SAFETY: `fds` is a live, correctly sized array of pollfd.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
            // Pick up a newly published plugin generation and dataplane snapshot before the
            // batch that follows.
            if let Some(p) = &mut l.policy {
                p.refresh();
            }
            let current = self.dp.load();
            if !Arc::ptr_eq(&current, &l.dp) {
                l.dp = arc_swap::Guard::into_inner(current);
            }
            if r <= 0 {
                continue;
            }
            for fd in fds.iter().filter(|p| p.revents != 0).map(|p| p.fd) {
                if fd == tun_fd {
                    self.drain_tun(&mut l);
                } else if Some(fd) == gre_fd {
                    self.drain_underlay(&mut l, fd, self.gre.includes_ip_header());
                } else if l.gro.is_some() {
                    self.drain_udp_gro(&mut l, fd);
                } else {
                    self.drain_underlay(&mut l, fd, false);
                }
            }
        }
    }

    /// Reads TUN packets (splitting super-packets) until the queue is empty or the round
    /// budget is spent, forwarding a batch whenever fewer than a super-packet's worth of
    /// frames are left.
    fn drain_tun(&self, l: &mut Local) {
        for _ in 0..ROUNDS_PER_WAKEUP {
            let mut n = 0;
            let mut empty = false;
            while n + MAX_SEGMENTS <= BATCH {
                match self.tun.recv_into(&mut l.tun_rx, &mut l.lane.batch, n) {
                    Ok(TunRead::Packets(k)) => {
                        if k > 1 {
                            self.stats.tun_gso_reads.add(1);
                        }
                        for i in n..n + k {
                            let len = l.lane.batch.len(i);
                            let step =
                                l.dp.inspect_tun(&self.stats, l.lane.batch.frame(i), HEADROOM, len);
                            l.lane.set_step(i, step);
                        }
                        n += k;
                    }
                    Ok(TunRead::Empty) => {
                        empty = true;
                        break;
                    }
                    Ok(TunRead::Malformed(e)) => {
                        tracing::debug!(error = %e, "tun super-packet could not be split");
                        self.stats.count_drop(DropReason::OffloadInvalid);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "tun read failed");
                        empty = true;
                        break;
                    }
                }
            }
            if n > 0 {
                self.finish(l, n);
            }
            if empty {
                return;
            }
        }
    }

    /// Receives datagrams straight into the batch (raw GRE, or UDP without GRO).
    fn drain_underlay(&self, l: &mut Local, fd: RawFd, ip_header: bool) {
        let encap = if ip_header || fd == self.gre.as_raw_fd() {
            Encap::Gre
        } else {
            Encap::GreUdp
        };
        for _ in 0..ROUNDS_PER_WAKEUP {
            let n = match l.lane.batch.recv_from(fd) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "underlay receive failed");
                    return;
                }
            };
            for i in 0..n {
                let len = l.lane.batch.len(i);
                let step = match l.lane.batch.source(i) {
                    Some(src) => {
                        let step = l.dp.inspect_underlay(
                            &mut l.ws,
                            &self.stats,
                            l.lane.batch.frame(i),
                            HEADROOM,
                            len,
                            mgre_io::batch::source_ip(src),
                            ip_header,
                        );
                        self.to_control(&step, l.lane.batch.frame(i), src, encap);
                        step
                    }
                    None => {
                        self.stats.count_drop(DropReason::UnknownPeer);
                        Step::Done(Verdict::Drop(DropReason::UnknownPeer))
                    }
                };
                l.lane.set_step(i, step);
            }
            if n > 0 {
                self.finish(l, n);
            }
            if n < BATCH {
                return;
            }
        }
    }

    /// Receives coalesced UDP trains and splits each datagram into its own frame (copying it
    /// behind the headroom the core needs), forwarding whenever the batch fills.
    fn drain_udp_gro(&self, l: &mut Local, fd: RawFd) {
        let Some(mut gro) = l.gro.take() else {
            return;
        };
        for _ in 0..ROUNDS_PER_WAKEUP {
            let m = match gro.recv_from(fd) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "underlay receive failed");
                    break;
                }
            };
            let mut n = 0;
            for j in 0..m {
                let len = gro.len(j);
                let data = &gro.frame(j)[..len];
                let src = gro.source(j);
                let segment = gro.segment_size(j).unwrap_or(len).max(1);
                if segment < len {
                    self.stats.udp_gro_trains.add(1);
                }
                for datagram in data.chunks(segment) {
                    if n == BATCH {
                        self.finish(l, n);
                        n = 0;
                    }
                    let frame = l.lane.batch.frame_mut(n);
                    frame[HEADROOM..HEADROOM + datagram.len()].copy_from_slice(datagram);
                    l.lane.batch.set_len(n, datagram.len());
                    let step = match src {
                        Some(src) => {
                            let step = l.dp.inspect_underlay(
                                &mut l.ws,
                                &self.stats,
                                l.lane.batch.frame(n),
                                HEADROOM,
                                datagram.len(),
                                mgre_io::batch::source_ip(src),
                                false,
                            );
                            self.to_control(&step, l.lane.batch.frame(n), src, Encap::GreUdp);
                            step
                        }
                        None => {
                            self.stats.count_drop(DropReason::UnknownPeer);
                            Step::Done(Verdict::Drop(DropReason::UnknownPeer))
                        }
                    };
                    l.lane.set_step(n, step);
                    n += 1;
                }
            }
            if n > 0 {
                self.finish(l, n);
            }
            if m < GRO_BUFFERS {
                break;
            }
        }
        l.gro = Some(gro);
    }

    /// Decides and forwards the first `n` inspected frames, then carries out the verdicts.
    fn finish(&self, l: &mut Local, n: usize) {
        self.decide_and_forward(l, n);
        self.dispatch(l, n);
    }

    /// Asks the policy stage (when plugins are configured) about every inspected frame of the
    /// batch, then completes each with its policy.
    fn decide_and_forward(&self, l: &mut Local, n: usize) {
        let lane = &mut l.lane;
        match &mut l.policy {
            Some(stage) => stage.decide(
                &l.dp,
                &lane.batch,
                &lane.inspected[..n],
                &mut lane.policies[..n],
            ),
            None => lane.policies[..n].fill(Policy::DEFAULT),
        }
        let mut now = None;
        for i in 0..n {
            if let Some(p) = lane.inspected[i] {
                let frame = lane.batch.frame_mut(i);
                lane.verdicts[i] =
                    l.dp.forward(&mut l.ws, &self.stats, frame, &p, &lane.policies[i]);
                if let Some((limiter, epoch)) = &self.redirect
                    && let Some(ingress) = l.dp.redirect_source(&p, &lane.verdicts[i])
                {
                    let now = *now.get_or_insert_with(|| epoch.elapsed());
                    if limiter.allow(now, p.meta.src.into(), p.meta.dst.into()) {
                        // The inner packet is still in place behind the new GRE header.
                        let end = p.start + p.len.min(INDICATION_PACKET_LEN);
                        let packet = lane.batch.frame(i)[p.start..end].to_vec();
                        self.hand_over(ToControl::Hairpinned { ingress, packet });
                    }
                }
            }
        }
    }

    /// Carries out the verdicts of the first `n` frames: one coalescing TUN write batch, the
    /// control-path hand-off, and one batched send per underlay socket.
    fn dispatch(&self, l: &mut Local, n: usize) {
        let lane = &mut l.lane;
        let mut any_gre = false;
        let mut any_udp = false;
        for i in 0..n {
            match lane.verdicts[i] {
                Verdict::Replicate {
                    start,
                    len,
                    ingress,
                    local,
                } => {
                    let packet = &lane.batch.frame(i)[start..start + len];
                    self.replicate(&l.dp, &mut l.ws, &mut l.copy, packet, ingress);
                    if local {
                        if l.tun_tx.push(&mut lane.batch, i, start, len) {
                            self.stats.tun_tx.count(len);
                        } else {
                            self.stats.count_drop(DropReason::TxError);
                        }
                    }
                }
                Verdict::Tun { start, len } => {
                    if l.tun_tx.push(&mut lane.batch, i, start, len) {
                        self.stats.tun_tx.count(len);
                    } else {
                        self.stats.count_drop(DropReason::TxError);
                    }
                }
                // Handed to the control path when inspected.
                Verdict::Control { .. } | Verdict::Drop(_) => {}
                Verdict::Underlay { peer, .. } => match l.dp.peers()[peer as usize].encap {
                    Encap::Gre => any_gre = true,
                    Encap::GreUdp => any_udp = true,
                },
            }
        }
        if !l.tun_tx.is_empty()
            && let Err(e) = self.tun.send(&mut l.tun_tx)
        {
            tracing::debug!(error = %e, "tun write failed");
            self.stats.count_drop(DropReason::TxError);
        }
        let lane = &l.lane;
        let peers = l.dp.peers();
        if any_gre {
            let pick = |p: &Peer, _| p.encap == Encap::Gre;
            self.send(
                &mut l.queue,
                self.gre.as_raw_fd(),
                lane,
                n,
                peers,
                pick,
                None,
            );
        }
        if any_udp && let Some(udp) = &self.udp {
            let slots = udp.pool_len();
            let gso = Some(self.udp_max_payload);
            for slot in 0..slots {
                let pick = |p: &Peer, flow: u32| {
                    p.encap == Encap::GreUdp
                        && p.udp_port.is_none()
                        && flow as usize % slots == slot
                };
                let fd = udp.send_fd(slot);
                self.send(&mut l.queue, fd, lane, n, peers, pick, gso);
            }
            // Peers behind NAT: from the well-known port, to the port their NAT mapped.
            let pick = |p: &Peer, _| p.encap == Encap::GreUdp && p.udp_port.is_some();
            self.send(&mut l.queue, udp.listen_fd(), lane, n, peers, pick, gso);
        }
    }

    /// Sends a copy of the inner multicast/broadcast `packet` to every peer in the hub's
    /// multicast map except `ingress`, one datagram each (multicast is rare: routing
    /// protocol hellos), encapsulated in `copy`.
    fn replicate(
        &self,
        dp: &Dataplane,
        ws: &mut WorkerState,
        copy: &mut [u8],
        packet: &[u8],
        ingress: Option<u32>,
    ) {
        for &peer in dp.multicast_peers() {
            if Some(peer) == ingress {
                continue;
            }
            let Some((start, len)) = dp.encap_copy(ws, &self.stats, peer, packet, copy) else {
                continue;
            };
            let p = &dp.peers()[peer as usize];
            let datagram = &copy[start..start + len];
            let sent = match (p.encap, &self.udp) {
                (Encap::Gre, _) => self.gre.send_to(datagram, p.nbma),
                (Encap::GreUdp, Some(udp)) => {
                    let dst = SocketAddr::new(p.nbma, p.udp_port.unwrap_or(self.udp_port));
                    udp.send_to(p.udp_port.is_some(), peer as usize, datagram, dst)
                }
                (Encap::GreUdp, None) => continue,
            };
            match sent {
                Ok(_) => {
                    self.stats.tx.count(len);
                    if let Some(ps) = self.stats.peer(peer) {
                        ps.tx.count(len);
                    }
                }
                Err(e) => {
                    tracing::trace!(error = %e, "multicast copy not sent");
                    self.stats.count_drop(DropReason::TxError);
                }
            }
        }
    }

    /// Hands an NHRP message the core routed to the control path over to the control thread
    /// (a copy: NHRP is rare and off the fast path). Counted as `nhrp`; when nothing takes
    /// it (no NHRP configured, or the control thread's queue is full) also as the drop
    /// `nhrp-unhandled`.
    fn to_control(&self, step: &Step, frame: &[u8], from: SocketAddr, encap: Encap) {
        let Step::Done(Verdict::Control { start, len, .. }) = *step else {
            return;
        };
        self.stats.nhrp.add(1);
        let message = Inbound {
            message: frame[start..start + len].to_vec(),
            from,
            encap,
        };
        if !self.hand_over(ToControl::Nhrp(message)) {
            self.stats.count_drop(DropReason::NhrpUnhandled);
        }
    }

    /// Queues `m` for the control thread; false when there is none or its queue is full.
    fn hand_over(&self, m: ToControl) -> bool {
        self.control.as_ref().is_some_and(|c| c.try_send(m).is_ok())
    }

    /// Sends the underlay verdicts selected by `pick(peer, flow)` on `fd`.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        queue: &mut SendQueue,
        fd: RawFd,
        lane: &Lane,
        n: usize,
        peers: &[Peer],
        pick: impl Fn(&Peer, u32) -> bool,
        gso: Option<usize>,
    ) {
        let selected = || {
            lane.verdicts[..n]
                .iter()
                .enumerate()
                .filter_map(|(i, v)| match *v {
                    Verdict::Underlay {
                        peer,
                        start,
                        len,
                        flow,
                        marks,
                    } if pick(&peers[peer as usize], flow) => Some((i, peer, start, len, marks)),
                    _ => None,
                })
        };
        let items = selected().map(|(i, peer, start, len, marks)| {
            let p = &peers[peer as usize];
            let port = match p.encap {
                Encap::Gre => 0,
                Encap::GreUdp => p.udp_port.unwrap_or(self.udp_port),
            };
            (
                &lane.batch.frame(i)[start..start + len],
                SocketAddr::new(p.nbma, port),
                marks.tos,
                marks.priority,
            )
        });
        let report = queue.send(fd, items, gso);
        if report.offered == 0 {
            return;
        }
        if report.messages < report.offered {
            self.stats.udp_gso_trains.add(queue.trains() as u64);
        }
        if let Some(e) = &report.error {
            tracing::trace!(error = %e, "underlay send failed");
        }
        for (k, (_, peer, _, len, _)) in selected().enumerate() {
            if queue.failed(k) {
                self.stats.count_drop(DropReason::TxError);
            } else {
                self.stats.tx.count(len);
                if let Some(p) = self.stats.peer(peer) {
                    p.tx.count(len);
                }
            }
        }
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
