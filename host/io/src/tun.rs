//! The tunnel's TUN interface, created with `tun-rs` for its virtio-net offload and multi-queue
//! support.
//!
//! With offload on, the device carries a virtio-net header and the kernel hands us TCP (and,
//! from Linux 6.2, UDP) super-packets of up to 64 KiB: [`TunQueue::recv_into`] splits each into
//! MTU-sized segments with correct checksums (GSO, tun-rs), and [`TunQueue::send`] coalesces
//! consecutive segments of a TCP (or, with USO, UDP) flow back into super-packets before writing (GRO, the
//! allocation-free [`mgre_proto::gro`]), so a bulk flow costs one syscall per ~64 KiB in each
//! direction instead of one per packet. With several queues
//! (`IFF_MULTI_QUEUE`) the kernel spreads flows over them by flow hash; each worker owns one.
//!
//! Packets are raw IP (no packet-information header). Queues are non-blocking. The interface
//! disappears when the last queue is dropped.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};

use mgre_proto::gro::{Gro, GroFrame, VNET_HDR_LEN};
use tun_rs::{DeviceBuilder, SyncDevice, VIRTIO_NET_HDR_LEN};

const _: () = assert!(
    VIRTIO_NET_HDR_LEN == VNET_HDR_LEN,
    "virtio-net header sizes agree"
);

use crate::batch::{FRAME_SIZE, FrameBatch};

/// Most segments one super-packet read from the TUN may split into. The daemon caps the
/// device's `gso_max_segs` at this, and a worker reads only while this many frames are free.
pub const MAX_SEGMENTS: usize = 64;

/// Transmit queue length of the interface (packets the kernel queues for the daemon to read);
/// the TUN default of 500 overflows under bursts from a fast LAN sender.
pub const TX_QUEUE_LEN: u32 = 1000;

/// How to create the TUN interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// Interface MTU.
    pub mtu: u16,
    /// The IPv4 address with its prefix length, if any.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// IPv6 addresses with prefix lengths.
    pub ipv6: Vec<(Ipv6Addr, u8)>,
    /// Virtio-net header with TSO/USO and checksum offload (GSO/GRO in userspace).
    pub offload: bool,
    /// Number of queues (one per worker); more than one opens the device multi-queue.
    pub queues: usize,
}

/// The TUN interface and its queues.
pub struct Tun {
    name: String,
    offload: bool,
    udp_offload: bool,
    queues: Vec<TunQueue>,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun")
            .field("name", &self.name)
            .field("offload", &self.offload)
            .field("queues", &self.queues.len())
            .finish()
    }
}

impl Tun {
    /// Creates the interface with its queues, assigns its addresses and MTU, and brings it up.
    pub fn create(cfg: &TunConfig) -> io::Result<Self> {
        let queues = cfg.queues.max(1);
        let mut b = DeviceBuilder::new()
            .name(cfg.name.clone())
            .mtu(cfg.mtu)
            .packet_information(false)
            .offload(cfg.offload)
            .multi_queue(queues > 1)
            .enable(true);
        if let Some((addr, len)) = cfg.ipv4 {
            b = b.ipv4(addr, len, None);
        }
        for (addr, len) in &cfg.ipv6 {
            b = b.ipv6(*addr, *len);
        }
        let first = b.build_sync()?;
        if first.tx_queue_len()? < TX_QUEUE_LEN {
            first.set_tx_queue_len(TX_QUEUE_LEN)?;
        }
        let name = first.name()?;
        let offload = first.tcp_gso();
        let udp_offload = first.udp_gso();
        let mut devs = Vec::with_capacity(queues);
        for _ in 1..queues {
            devs.push(first.try_clone()?);
        }
        devs.insert(0, first);
        let queues = devs
            .into_iter()
            .map(|dev| {
                dev.set_nonblocking(true)?;
                Ok(TunQueue {
                    dev,
                    offload,
                    udp_offload,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Tun {
            name,
            offload,
            udp_offload,
            queues,
        })
    }

    /// The kernel's name for the interface.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the virtio-net header (TSO, checksum offload) is on.
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Whether UDP segmentation offload (USO, Linux ≥ 6.2) is on as well.
    pub fn udp_offload(&self) -> bool {
        self.udp_offload
    }

    /// Hands out the queues, one per worker. Called once; later calls return none.
    pub fn take_queues(&mut self) -> Vec<TunQueue> {
        std::mem::take(&mut self.queues)
    }
}

/// One queue of the TUN device, owned by one worker.
pub struct TunQueue {
    dev: SyncDevice,
    offload: bool,
    udp_offload: bool,
}

impl std::fmt::Debug for TunQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunQueue")
            .field("fd", &self.dev.as_raw_fd())
            .finish()
    }
}

/// What one read from the TUN produced.
#[derive(Debug)]
pub enum TunRead {
    /// Nothing was waiting.
    Empty,
    /// This many packets (segments of one super-packet, or one plain packet) were placed.
    Packets(usize),
    /// A packet was read but could not be split (bad virtio-net header or offsets); it is lost.
    Malformed(io::Error),
}

impl TunQueue {
    /// Reads one packet or super-packet and places its segments, each at the batch's headroom,
    /// in frames `from..` of `batch` (setting their lengths). The caller keeps at least
    /// [`MAX_SEGMENTS`] frames free from `from` on.
    pub fn recv_into(
        &self,
        rx: &mut TunRx,
        batch: &mut FrameBatch,
        from: usize,
    ) -> io::Result<TunRead> {
        let headroom = batch.headroom();
        let (frames, lens) = batch.frames_and_lens_mut();
        let (frames, lens) = (&mut frames[from..], &mut lens[from..]);
        loop {
            let r = self.dev.recv_multiple(&mut rx.raw, frames, lens, headroom);
            return match r {
                Ok(n) => Ok(TunRead::Packets(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(TunRead::Empty),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error().is_some() => Err(e),
                // Not an OS error: the read worked and the split refused the packet.
                Err(e) => Ok(TunRead::Malformed(e)),
            };
        }
    }

    /// Writes the packets queued in `tx`, coalescing consecutive segments of a TCP flow into
    /// super-packets when offload is on, and empties `tx`. Returns how many writes it took, or
    /// the first write error (the other writes are still attempted).
    pub fn send(&self, tx: &mut TunTx) -> io::Result<usize> {
        let n = tx.len;
        tx.len = 0;
        let frames = &mut tx.frames[..n];
        let mut first_error = None;
        let mut write = |bytes: &[u8]| {
            if let Err(e) = self.dev.send(bytes) {
                first_error.get_or_insert(e);
            }
        };
        let writes = if self.offload {
            let w = tx.gro.coalesce(frames, &mut tx.order[..n]);
            for &k in &tx.order[..w] {
                write(frames[usize::from(k)].with_vnet_hdr());
            }
            w
        } else {
            for f in frames.iter() {
                write(f.packet());
            }
            n
        };
        first_error.map_or(Ok(writes), Err)
    }

    /// A write queue for this TUN queue: coalesces TCP, and UDP too when the device has USO.
    pub fn tx(&self, capacity: usize) -> TunTx {
        let mut tx = TunTx::new(capacity);
        tx.gro.set_udp(self.udp_offload);
        tx
    }
}

impl AsRawFd for TunQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }
}

/// A worker's receive buffer for one raw TUN read (virtio-net header + 64 KiB).
pub struct TunRx {
    raw: Box<[u8]>,
}

impl Default for TunRx {
    fn default() -> Self {
        TunRx {
            raw: vec![0; VIRTIO_NET_HDR_LEN + 65536].into_boxed_slice(),
        }
    }
}

impl std::fmt::Debug for TunRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TunRx")
    }
}

/// Packets waiting to be written to the TUN, with the GRO state that coalesces them.
///
/// [`TunTx::push`] takes a frame out of a [`FrameBatch`] by swapping buffers (no copy): the
/// batch gets one of this queue's spare frames in exchange.
pub struct TunTx {
    frames: Vec<GroFrame>,
    len: usize,
    gro: Gro,
    /// Write order from the last coalescing.
    order: Vec<u16>,
}

impl std::fmt::Debug for TunTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunTx")
            .field("capacity", &self.frames.len())
            .field("len", &self.len)
            .finish()
    }
}

impl TunTx {
    /// Room for `capacity` packets per write batch.
    pub fn new(capacity: usize) -> Self {
        TunTx {
            frames: (0..capacity)
                .map(|_| GroFrame {
                    buf: vec![0; FRAME_SIZE].into_boxed_slice(),
                    start: VNET_HDR_LEN,
                    len: 0,
                })
                .collect(),
            len: 0,
            gro: Gro::new(capacity),
            order: vec![0; capacity],
        }
    }

    /// Queues the packet at `start..start + len` of frame `i` of `batch` (taking the frame).
    /// Returns false when full (the packet was not taken). `start` must leave room for the
    /// virtio-net header in front of the packet.
    pub fn push(&mut self, batch: &mut FrameBatch, i: usize, start: usize, len: usize) -> bool {
        if self.len == self.frames.len() || start < VNET_HDR_LEN {
            return false;
        }
        let out = &mut self.frames[self.len];
        batch.swap_frame(i, &mut out.buf);
        out.start = start;
        out.len = len;
        self.len += 1;
        true
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
