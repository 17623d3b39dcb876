//! I/O shell of mgre: the TUN device, the underlay sockets (raw GRE over IP protocol 47 and
//! GRE-in-UDP) and batched send/receive over caller-visible frames.
//!
//! This layer moves bytes and nothing else: it makes no forwarding decision and keeps no
//! protocol state. Frames are allocated once per worker and reused; no call here allocates
//! per packet. Linux only.

pub mod batch;
pub mod sockets;
pub mod tun;

pub use batch::{FRAME_SIZE, FrameBatch, SendQueue};
pub use sockets::{GreSocket, UdpSockets};
pub use tun::{MAX_SEGMENTS, Tun, TunConfig, TunQueue, TunRead, TunRx, TunTx};
