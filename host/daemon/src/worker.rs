//! The dataplane worker: one thread that polls the TUN and the underlay sockets, moves packets
//! in batches through the sans-IO core, and sends the results with one batched call per
//! output. All buffers are allocated when the worker starts; the loop allocates nothing.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mgre_io::{FrameBatch, GreSocket, SendQueue, Tun, UdpSockets};
use mgre_plugin::PluginManager;
use mgre_proto::dataplane::HEADROOM;
use mgre_proto::{
    Dataplane, DropReason, Encap, Inspected, Policy, Step, Verdict, WorkerState, WorkerStats,
};

use crate::policy::PolicyStage;

/// Frames per batch.
pub const BATCH: usize = 64;
/// Batches drained from one source before the others get a turn.
const ROUNDS_PER_WAKEUP: usize = 8;
/// Poll timeout: how quickly the worker notices a stop request.
const POLL_MS: i32 = 100;

/// Everything one worker owns or shares.
pub struct Worker {
    /// Forwarding state.
    pub dp: Arc<Dataplane>,
    /// This worker's counters (it is their only writer).
    pub stats: Arc<WorkerStats>,
    /// The TUN device.
    pub tun: Arc<Tun>,
    /// Raw GRE socket.
    pub gre: GreSocket,
    /// GRE-in-UDP sockets, when any peer uses them.
    pub udp: Option<UdpSockets>,
    /// Destination port for GRE-in-UDP.
    pub udp_port: u16,
    /// Set to stop the loop.
    pub stop: Arc<AtomicBool>,
    /// Policy plugins, when configured.
    pub plugins: Option<Arc<PluginManager>>,
}

/// Which batch a dispatch works on.
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
    ws: WorkerState,
    lane: Lane,
    queue: SendQueue,
    policy: Option<PolicyStage>,
}

impl Worker {
    /// Runs until the stop flag is set.
    pub fn run(self) {
        let mut l = Local {
            ws: WorkerState::new(&self.dp),
            lane: Lane::new(),
            queue: SendQueue::new(BATCH),
            policy: self.plugins.clone().map(|m| PolicyStage::new(m, BATCH)),
        };
        let mut fds = vec![pollfd(self.tun.as_raw_fd()), pollfd(self.gre.as_raw_fd())];
        if let Some(u) = &self.udp {
            fds.push(pollfd(u.listen_fd()));
        }
        while !self.stop.load(Ordering::Relaxed) {
            // SAFETY: `fds` is a live, correctly sized array of pollfd.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
            // Pick up a newly published plugin generation before the batch that follows.
            if let Some(p) = &mut l.policy {
                p.refresh();
            }
            if r <= 0 {
                continue;
            }
            if fds[0].revents != 0 {
                self.drain_tun(&mut l);
            }
            if fds[1].revents != 0 {
                let (fd, hdr) = (self.gre.as_raw_fd(), self.gre.includes_ip_header());
                self.drain_underlay(&mut l, fd, hdr);
            }
            if fds.len() > 2 && fds[2].revents != 0 {
                self.drain_underlay(&mut l, fds[2].fd, false);
            }
        }
    }

    fn drain_tun(&self, l: &mut Local) {
        for _ in 0..ROUNDS_PER_WAKEUP {
            let n = match self.tun.recv_batch(&mut l.lane.batch) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "tun read failed");
                    return;
                }
            };
            for i in 0..n {
                let len = l.lane.batch.len(i);
                let step = self
                    .dp
                    .inspect_tun(&self.stats, l.lane.batch.frame(i), HEADROOM, len);
                l.lane.set_step(i, step);
            }
            self.decide_and_forward(l, n);
            self.dispatch(&l.lane, n, &mut l.queue);
            if n < BATCH {
                return;
            }
        }
    }

    fn drain_underlay(&self, l: &mut Local, fd: RawFd, ip_header: bool) {
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
                    Some(src) => self.dp.inspect_underlay(
                        &mut l.ws,
                        &self.stats,
                        l.lane.batch.frame(i),
                        HEADROOM,
                        len,
                        mgre_io::batch::source_ip(src),
                        ip_header,
                    ),
                    None => {
                        self.stats.count_drop(DropReason::UnknownPeer);
                        Step::Done(Verdict::Drop(DropReason::UnknownPeer))
                    }
                };
                l.lane.set_step(i, step);
            }
            self.decide_and_forward(l, n);
            self.dispatch(&l.lane, n, &mut l.queue);
            if n < BATCH {
                return;
            }
        }
    }

    /// Asks the policy stage (when plugins are configured) about every inspected frame of the
    /// batch, then completes each with its policy.
    fn decide_and_forward(&self, l: &mut Local, n: usize) {
        let lane = &mut l.lane;
        match &mut l.policy {
            Some(stage) => stage.decide(
                &self.dp,
                &lane.batch,
                &lane.inspected[..n],
                &mut lane.policies[..n],
            ),
            None => lane.policies[..n].fill(Policy::DEFAULT),
        }
        for i in 0..n {
            if let Some(p) = lane.inspected[i] {
                let frame = lane.batch.frame_mut(i);
                lane.verdicts[i] =
                    self.dp
                        .forward(&mut l.ws, &self.stats, frame, &p, &lane.policies[i]);
            }
        }
    }

    /// Carries out the verdicts of the first `n` frames: TUN writes, control-path hand-off,
    /// and one batched send per underlay socket.
    fn dispatch(&self, lane: &Lane, n: usize, queue: &mut SendQueue) {
        let verdicts = &lane.verdicts[..n];
        let batch = &lane.batch;
        let mut any_gre = false;
        let mut any_udp = false;
        for (i, v) in verdicts.iter().enumerate() {
            match *v {
                Verdict::Tun { start, len } => {
                    match self.tun.send(&batch.frame(i)[start..start + len]) {
                        Ok(()) => self.stats.tun_tx.count(len),
                        Err(_) => self.stats.count_drop(DropReason::TxError),
                    }
                }
                Verdict::Control { .. } => {
                    // The NHRP control path is not implemented yet: count and drop.
                    self.stats.nhrp.add(1);
                    self.stats.count_drop(DropReason::NhrpUnhandled);
                }
                Verdict::Underlay { peer, .. } => match self.dp.peers()[peer as usize].encap {
                    Encap::Gre => any_gre = true,
                    Encap::GreUdp => any_udp = true,
                },
                Verdict::Drop(_) => {}
            }
        }
        if any_gre {
            self.send(
                queue,
                self.gre.as_raw_fd(),
                lane,
                n,
                |encap, _| encap == Encap::Gre,
                0,
            );
        }
        if any_udp && let Some(udp) = &self.udp {
            let slots = udp.pool_len();
            for slot in 0..slots {
                let pick =
                    |encap, flow: u32| encap == Encap::GreUdp && flow as usize % slots == slot;
                self.send(queue, udp.send_fd(slot), lane, n, pick, self.udp_port);
            }
        }
    }

    /// Sends the underlay verdicts selected by `pick(encap, flow)` on `fd`.
    fn send(
        &self,
        queue: &mut SendQueue,
        fd: RawFd,
        lane: &Lane,
        n: usize,
        pick: impl Fn(Encap, u32) -> bool,
        port: u16,
    ) {
        let peers = self.dp.peers();
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
                    } if pick(peers[peer as usize].encap, flow) => {
                        Some((i, peer, start, len, marks))
                    }
                    _ => None,
                })
        };
        let items = selected().map(|(i, peer, start, len, marks)| {
            (
                &lane.batch.frame(i)[start..start + len],
                SocketAddr::new(peers[peer as usize].nbma, port),
                marks.tos,
                marks.priority,
            )
        });
        let report = queue.send(fd, items);
        if report.offered == 0 {
            return;
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
