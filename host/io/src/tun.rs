//! The tunnel's TUN interface, created with `tun-rs` (chosen for its virtio-net offload and
//! multi-queue support, which the performance work switches on).
//!
//! Packets are raw IP (no packet-information header). The device is non-blocking; reads are
//! drained in batches into a [`FrameBatch`]. Dropping the [`Tun`] deletes the interface.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};

use tun_rs::{DeviceBuilder, SyncDevice};

use crate::batch::FrameBatch;

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
}

/// An open, up, non-blocking TUN interface.
pub struct Tun {
    dev: SyncDevice,
    name: String,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun").field("name", &self.name).finish()
    }
}

impl Tun {
    /// Creates the interface, assigns its addresses and MTU, and brings it up.
    pub fn create(cfg: &TunConfig) -> io::Result<Self> {
        let mut b = DeviceBuilder::new()
            .name(cfg.name.clone())
            .mtu(cfg.mtu)
            .packet_information(false)
            .enable(true);
        if let Some((addr, len)) = cfg.ipv4 {
            b = b.ipv4(addr, len, None);
        }
        for (addr, len) in &cfg.ipv6 {
            b = b.ipv6(*addr, *len);
        }
        let dev = b.build_sync()?;
        dev.set_nonblocking(true)?;
        let name = dev.name()?;
        Ok(Tun { dev, name })
    }

    /// The kernel's name for the interface.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads packets until the device is empty or `batch` is full. Returns how many frames
    /// were filled (data at the batch's headroom); 0 when nothing was waiting.
    pub fn recv_batch(&self, batch: &mut FrameBatch) -> io::Result<usize> {
        let headroom = batch.headroom();
        let mut n = 0;
        while n < batch.capacity() {
            match self.dev.recv(&mut batch.frame_mut(n)[headroom..]) {
                Ok(len) => {
                    batch.set_len(n, len);
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if n > 0 => {
                    tracing::debug!(error = %e, "tun read stopped a batch early");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Writes one IP packet.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        self.dev.send(packet).map(|_| ())
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }
}
