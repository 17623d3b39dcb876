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
///
/// Every raw socket of a protocol gets its own copy of each datagram, so with several workers
/// each worker's socket carries a classic-BPF filter that keeps only its share
/// ([`GreSocket::bind_shard`]): over IPv4, a hash of the outer source and destination
/// addresses modulo the worker count, so each peer's packets stay on one worker and in
/// order. IPv6 raw sockets see no outer header; there worker 0 receives everything and the
/// others only send.
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

    /// Like [`GreSocket::bind`] for worker `shard` of `shards`: receives only that worker's
    /// share of the GRE traffic (see the type's documentation).
    pub fn bind_shard(
        local: IpAddr,
        buffer_bytes: usize,
        shard: u32,
        shards: u32,
    ) -> io::Result<Self> {
        let s = Self::bind(local, buffer_bytes)?;
        if shards > 1 {
            let program = steering_program(local.is_ipv4(), shard, shards);
            attach_filter(s.socket.as_raw_fd(), &program)?;
        }
        Ok(s)
    }

    /// Whether received datagrams start with the outer IPv4 header.
    pub fn includes_ip_header(&self) -> bool {
        self.ipv4
    }

    /// Another handle on the same socket (a `dup`), for a thread that only sends on it —
    /// the control path's NHRP messages — while a worker keeps receiving.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(GreSocket {
            socket: self.socket.try_clone()?,
            ipv4: self.ipv4,
        })
    }

    /// Sends one GRE packet (GRE header onwards) to `dst`.
    pub fn send_to(&self, packet: &[u8], dst: IpAddr) -> io::Result<usize> {
        self.socket.send_to(packet, &SocketAddr::new(dst, 0).into())
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

    /// Another handle on the listening socket (a `dup`), for a thread that only sends from
    /// the well-known port — NHRP, whose replies must reach the listener through any NAT —
    /// while a worker keeps receiving on it.
    pub fn listener_clone(&self) -> io::Result<std::net::UdpSocket> {
        Ok(self.listen.try_clone()?.into())
    }

    /// Sends one datagram to `dst`: from the listener (the well-known port) when
    /// `from_listener`, else from pool slot `slot`. For the slow path (multicast copies);
    /// bulk traffic goes through [`crate::SendQueue`].
    pub fn send_to(
        &self,
        from_listener: bool,
        slot: usize,
        datagram: &[u8],
        dst: SocketAddr,
    ) -> io::Result<usize> {
        let socket = if from_listener {
            &self.listen
        } else {
            &self.pool[slot % self.pool.len()]
        };
        socket.send_to(datagram, &dst.into())
    }

    /// The port the listener is bound to.
    pub fn listen_port(&self) -> u16 {
        self.listen
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map_or(0, |a| a.port())
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

/// The classic-BPF program that keeps worker `shard`'s share of raw GRE datagrams: over IPv4,
/// `fold(src ^ dst) % shards == shard`; over IPv6 (no outer header to hash), all for worker 0.
pub fn steering_program(ipv4: bool, shard: u32, shards: u32) -> Vec<libc::sock_filter> {
    use bpf::*;
    const ACCEPT: u32 = 0x0004_0000;
    if !ipv4 {
        return vec![stmt(RET | K, if shard == 0 { ACCEPT } else { 0 })];
    }
    vec![
        stmt(LD | W | ABS, 12), // outer source address
        stmt(ST, 0),
        stmt(LD | W | ABS, 16), // outer destination address
        stmt(LDX | MEM, 0),
        stmt(ALU | XOR | X, 0),
        stmt(ST, 0),
        stmt(ALU | RSH | K, 16),
        stmt(LDX | MEM, 0),
        stmt(ALU | XOR | X, 0),
        stmt(ST, 0),
        stmt(ALU | RSH | K, 8),
        stmt(LDX | MEM, 0),
        stmt(ALU | XOR | X, 0),
        stmt(ALU | AND | K, 0xffff),
        stmt(ALU | MOD | K, shards),
        jump(JMP | JEQ | K, shard, 0, 1),
        stmt(RET | K, ACCEPT),
        stmt(RET | K, 0),
    ]
}

/// The worker a datagram from `src` to `dst` lands on under [`steering_program`] (the same
/// arithmetic, for tests and diagnostics).
pub fn steering_shard(src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr, shards: u32) -> u32 {
    let mut a = u32::from(src) ^ u32::from(dst);
    a ^= a >> 16;
    a ^= a >> 8;
    (a & 0xffff) % shards.max(1)
}

/// Classic BPF opcodes (`linux/filter.h`).
mod bpf {
    pub const LD: u16 = 0x00;
    pub const LDX: u16 = 0x01;
    pub const ST: u16 = 0x02;
    pub const ALU: u16 = 0x04;
    pub const JMP: u16 = 0x05;
    pub const RET: u16 = 0x06;
    pub const W: u16 = 0x00;
    pub const ABS: u16 = 0x20;
    pub const MEM: u16 = 0x60;
    pub const AND: u16 = 0x50;
    pub const RSH: u16 = 0x70;
    pub const MOD: u16 = 0x90;
    pub const XOR: u16 = 0xa0;
    pub const JEQ: u16 = 0x10;
    pub const K: u16 = 0x00;
    pub const X: u16 = 0x08;

    pub fn stmt(code: u16, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    pub fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }
}

fn attach_filter(fd: RawFd, program: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `program`, alive for the call; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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

    /// Each of `shards` loopback raw GRE sockets receives exactly the datagrams its filter
    /// claims, and together they receive every datagram once.
    #[test]
    fn raw_gre_steering_gives_each_datagram_to_exactly_one_worker() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let shards = 3;
        let socks: Vec<GreSocket> = (0..shards)
            .map(|i| GreSocket::bind_shard(local, 1 << 20, i, shards).unwrap())
            .collect();
        // Sources across 127/8 reach a socket bound to 127.0.0.1 through `lo`.
        let sources: Vec<std::net::Ipv4Addr> = (1..=12u8)
            .map(|i| std::net::Ipv4Addr::new(127, 0, i, 1))
            .collect();
        for (i, src) in sources.iter().enumerate() {
            let s =
                Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_GRE))).unwrap();
            s.bind(&SocketAddr::new((*src).into(), 0).into()).unwrap();
            let gre = [0u8, 0, 0x08, 0, i as u8];
            s.send_to(&gre, &SocketAddr::new(local, 0).into()).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut seen = vec![None; sources.len()];
        for (shard, sock) in socks.iter().enumerate() {
            let mut b = crate::FrameBatch::new(16, 0);
            let n = b.recv_from(sock.as_raw_fd()).unwrap();
            for k in 0..n {
                let ihl = usize::from(b.frame(k)[0] & 0xf) * 4;
                let tag = usize::from(b.frame(k)[ihl + 4]);
                assert!(seen[tag].is_none(), "datagram {tag} delivered twice");
                seen[tag] = Some(shard as u32);
            }
        }
        for (i, src) in sources.iter().enumerate() {
            let want = steering_shard(*src, "127.0.0.1".parse().unwrap(), shards);
            assert_eq!(seen[i], Some(want), "datagram from {src}");
        }
        let used: std::collections::BTreeSet<_> = seen.iter().flatten().collect();
        assert!(
            used.len() > 1,
            "12 sources spread over more than one worker"
        );
    }

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
