//! Underlay sockets: a raw socket for GRE over IP protocol 47 and the UDP sockets of
//! GRE-in-UDP (RFC 8086).
//!
//! GRE-in-UDP wants a source port derived from the inner flow (ECMP entropy) while still
//! letting the kernel build UDP headers and segment trains of datagrams (UDP GSO). One socket
//! cannot send from many ports, so [`UdpSockets`] keeps a small pool of sockets bound to
//! distinct ephemeral ports and picks one by flow hash; receiving happens on the well-known
//! port, with UDP GRO on so the kernel hands over trains of datagrams in one buffer. With
//! several workers each binds its own listener with `SO_REUSEPORT`, and the kernel spreads
//! the flows (by their per-flow source ports) across them.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// IP protocol number of GRE.
pub const IPPROTO_GRE: i32 = 47;

/// A raw GRE socket bound to the local underlay address.
///
/// IPv4 raw sockets deliver the outer IPv4 header with each datagram; IPv6 ones do not
/// ([`GreSocket::includes_ip_header`]). Sends carry just the GRE packet; the kernel adds the
/// outer header, fragmenting it when the inner packet allowed fragmentation.
#[derive(Debug)]
pub struct GreSocket {
    socket: Socket,
    ipv4: bool,
}

impl GreSocket {
    /// Opens and binds the raw socket on `local` (needs CAP_NET_RAW).
    pub fn bind(local: IpAddr, buffer_bytes: usize) -> io::Result<Self> {
        let domain = if local.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(IPPROTO_GRE)))?;
        socket.bind(&SocketAddr::new(local, 0).into())?;
        socket.set_nonblocking(true)?;
        allow_fragmentation(&socket, local.is_ipv4())?;
        size_buffers(&socket, buffer_bytes);
        Ok(GreSocket {
            socket,
            ipv4: local.is_ipv4(),
        })
    }

    /// Whether received datagrams start with the outer IPv4 header.
    pub fn includes_ip_header(&self) -> bool {
        self.ipv4
    }
}

impl AsRawFd for GreSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The GRE-in-UDP sockets: one bound to the well-known port for receiving, a pool bound to
/// ephemeral ports for sending with per-flow source ports.
#[derive(Debug)]
pub struct UdpSockets {
    listen: Socket,
    pool: Vec<Socket>,
    gro: bool,
}

impl UdpSockets {
    /// Binds the listening socket on `local:port` (shared with other workers' listeners when
    /// `reuse_port`) and `pool_size` (≥ 1) sending sockets on ephemeral ports of `local`.
    pub fn bind(
        local: IpAddr,
        port: u16,
        pool_size: usize,
        buffer_bytes: usize,
        reuse_port: bool,
    ) -> io::Result<Self> {
        let listen = udp_socket(SocketAddr::new(local, port), buffer_bytes, reuse_port)?;
        // UDP GRO needs Linux 5.0; without it every datagram arrives on its own.
        let gro =
            setsockopt_int(listen.as_raw_fd(), libc::SOL_UDP, crate::batch::UDP_GRO, 1).is_ok();
        let pool = (0..pool_size.max(1))
            .map(|_| udp_socket(SocketAddr::new(local, 0), buffer_bytes, false))
            .collect::<io::Result<Vec<_>>>()?;
        for s in &pool {
            // Replies always go to the well-known port; keep the pool's receive queues tiny.
            let _ = s.set_recv_buffer_size(4096);
        }
        Ok(UdpSockets { listen, pool, gro })
    }

    /// Whether the listener receives coalesced trains (UDP GRO).
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// The socket that receives GRE-in-UDP.
    pub fn listen_fd(&self) -> RawFd {
        self.listen.as_raw_fd()
    }

    /// Number of sending sockets.
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// The sending socket for pool slot `i` (flow hash modulo [`UdpSockets::pool_len`]).
    pub fn send_fd(&self, i: usize) -> RawFd {
        self.pool[i % self.pool.len()].as_raw_fd()
    }

    /// Local source ports of the pool, for diagnostics.
    pub fn source_ports(&self) -> Vec<u16> {
        self.pool
            .iter()
            .filter_map(|s| s.local_addr().ok()?.as_socket())
            .map(|a| a.port())
            .collect()
    }
}

fn udp_socket(addr: SocketAddr, buffer_bytes: usize, reuse_port: bool) -> io::Result<Socket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    allow_fragmentation(&s, addr.is_ipv4())?;
    size_buffers(&s, buffer_bytes);
    Ok(s)
}

/// Lets the kernel fragment the outer packet: inner packets that forbade fragmentation were
/// already answered with a too-big error by the core, so what reaches the socket may be split.
fn allow_fragmentation(s: &Socket, ipv4: bool) -> io::Result<()> {
    let (level, name, value) = if ipv4 {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DONT,
        )
    } else {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DONT,
        )
    };
    setsockopt_int(s.as_raw_fd(), level, name, value)
}

/// Asks for large socket buffers; as root the kernel's `rmem_max`/`wmem_max` caps are
/// bypassed with the FORCE variants. Failure leaves the defaults (not fatal).
fn size_buffers(s: &Socket, bytes: usize) {
    let fd = s.as_raw_fd();
    let v = bytes.min(i32::MAX as usize) as i32;
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v).is_err() {
        let _ = s.set_recv_buffer_size(bytes);
    }
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v).is_err() {
        let _ = s.set_send_buffer_size(bytes);
    }
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to a live i32 and its exact size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_pool_has_distinct_ports() {
        let s = UdpSockets::bind("127.0.0.1".parse().unwrap(), 0, 4, 1 << 20, false).unwrap();
        let mut ports = s.source_ports();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 4);
        assert_eq!(s.pool_len(), 4);
        assert_ne!(s.send_fd(0), s.send_fd(1));
        assert_eq!(s.send_fd(0), s.send_fd(4));
    }
}
