//! The dataplane worker: one thread that polls the TUN and the underlay sockets, moves packets
//! in batches through the sans-IO core, and sends the results with one batched call per
//! output. All buffers are allocated when the worker starts; the loop allocates nothing.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mgre_io::{FrameBatch, GreSocket, SendQueue, Tun, UdpSockets};
use mgre_proto::dataplane::HEADROOM;
use mgre_proto::{Dataplane, DropReason, Encap, Verdict, WorkerState, WorkerStats};

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
}

/// Which batch a dispatch works on.
struct Lane {
    batch: FrameBatch,
    verdicts: Vec<Verdict>,
}

impl Lane {
    fn new() -> Self {
        Lane {
            batch: FrameBatch::new(BATCH, HEADROOM),
            verdicts: vec![Verdict::Drop(DropReason::TxError); BATCH],
        }
    }
}

impl Worker {
    /// Runs until the stop flag is set.
    pub fn run(self) {
        let mut ws = WorkerState::new(&self.dp);
        let mut lane = Lane::new();
        let mut queue = SendQueue::new(BATCH);
        let mut fds = vec![pollfd(self.tun.as_raw_fd()), pollfd(self.gre.as_raw_fd())];
        if let Some(u) = &self.udp {
            fds.push(pollfd(u.listen_fd()));
        }
        while !self.stop.load(Ordering::Relaxed) {
            // SAFETY: `fds` is a live, correctly sized array of pollfd.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
            if r <= 0 {
                continue;
            }
            if fds[0].revents != 0 {
                self.drain_tun(&mut ws, &mut lane, &mut queue);
            }
            if fds[1].revents != 0 {
                let (fd, hdr) = (self.gre.as_raw_fd(), self.gre.includes_ip_header());
                self.drain_underlay(&mut ws, &mut lane, &mut queue, fd, hdr);
            }
            if fds.len() > 2 && fds[2].revents != 0 {
                self.drain_underlay(&mut ws, &mut lane, &mut queue, fds[2].fd, false);
            }
        }
    }

    fn drain_tun(&self, ws: &mut WorkerState, lane: &mut Lane, queue: &mut SendQueue) {
        for _ in 0..ROUNDS_PER_WAKEUP {
            let n = match self.tun.recv_batch(&mut lane.batch) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "tun read failed");
                    return;
                }
            };
            for i in 0..n {
                let len = lane.batch.len(i);
                lane.verdicts[i] =
                    self.dp
                        .from_tun(ws, &self.stats, lane.batch.frame_mut(i), HEADROOM, len);
            }
            self.dispatch(lane, n, queue);
            if n < BATCH {
                return;
            }
        }
    }

    fn drain_underlay(
        &self,
        ws: &mut WorkerState,
        lane: &mut Lane,
        queue: &mut SendQueue,
        fd: RawFd,
        ip_header: bool,
    ) {
        for _ in 0..ROUNDS_PER_WAKEUP {
            let n = match lane.batch.recv_from(fd) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "underlay receive failed");
                    return;
                }
            };
            for i in 0..n {
                let len = lane.batch.len(i);
                lane.verdicts[i] = match lane.batch.source(i) {
                    Some(src) => {
                        let src = mgre_io::batch::source_ip(src);
                        self.dp.from_underlay(
                            ws,
                            &self.stats,
                            lane.batch.frame_mut(i),
                            HEADROOM,
                            len,
                            src,
                            ip_header,
                        )
                    }
                    None => {
                        self.stats.count_drop(DropReason::UnknownPeer);
                        Verdict::Drop(DropReason::UnknownPeer)
                    }
                };
            }
            self.dispatch(lane, n, queue);
            if n < BATCH {
                return;
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
                        tos,
                    } if pick(peers[peer as usize].encap, flow) => Some((i, peer, start, len, tos)),
                    _ => None,
                })
        };
        let items = selected().map(|(i, peer, start, len, tos)| {
            (
                &lane.batch.frame(i)[start..start + len],
                SocketAddr::new(peers[peer as usize].nbma, port),
                tos,
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
