//! Traffic generators and observers that run inside test namespaces.
//!
//! Pings go through the system `ping`; TCP transfers, raw GRE/UDP injection and SYN capture
//! run on `setns(2)` threads ([`Netns::spawn`]). Every loop here is bounded in count and in
//! time, and every destination is whatever address the caller gives — the tests only give
//! documentation addresses inside their own namespaces.

use std::io::{self, Read, Write};
use std::mem;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use sha2::{Digest as _, Sha256};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::{Netns, join};
use crate::packet;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// Pings `addr` from `ns` `count` times (0.2 s apart, 2 s reply timeout); true if the
/// system `ping` reports success (at least one reply).
pub fn ping(ns: &Netns, addr: IpAddr, count: u32) -> bool {
    let family = if addr.is_ipv4() { "-4" } else { "-6" };
    let count_arg = count.max(1).to_string();
    let addr_arg = addr.to_string();
    let bound = Duration::from_secs(u64::from(count) + 10);
    let args = [
        "ping", family, "-n", "-q", "-c", &count_arg, "-i", "0.2", "-W", "2", &addr_arg,
    ];
    match ns.exec_timeout(args, bound) {
        Ok(out) => out.status.success(),
        Err(e) => {
            eprintln!("ping {addr} in {}: {e:#}", ns.name());
            false
        }
    }
}

/// Sends `bytes` of deterministic pseudo-random data over TCP from a client in `src` to a
/// server bound to `dst_addr` in `dst`, and returns the SHA-256 of what was sent and of
/// what was received (equal when the path is byte-exact).
///
/// Bounded: connect 5 s, each read/write 10 s, the whole receive [`TRANSFER_DEADLINE`].
pub fn tcp_transfer(
    src: &Netns,
    dst: &Netns,
    dst_addr: IpAddr,
    bytes: usize,
) -> Result<(Digest, Digest)> {
    let (port_tx, port_rx) = mpsc::channel();
    thread::scope(|scope| {
        let server = dst.spawn(scope, move || receive_digest(dst_addr, port_tx));
        let client = src.spawn(scope, move || {
            let port = port_rx
                .recv_timeout(HANDSHAKE_TIMEOUT)
                .context("server never listened")?;
            send_payload(SocketAddr::new(dst_addr, port), bytes)
        });
        let (sent, (received, received_len)) = both(
            join(client).context("TCP client"),
            join(server).context("TCP server"),
        )?;
        ensure!(
            received_len == bytes,
            "server received {received_len} of {bytes} bytes"
        );
        Ok((sent, received))
    })
}

/// Sends each of `packets` as the payload of a raw IP protocol-47 (GRE) datagram from `ns`
/// to `dst`; the kernel adds the outer IP header.
pub fn send_raw_gre(ns: &Netns, dst: IpAddr, packets: &[Vec<u8>]) -> Result<()> {
    ns.run(|| {
        let socket = Socket::new(
            Domain::for_address(SocketAddr::new(dst, 0)),
            Type::RAW,
            Some(Protocol::from(IPPROTO_GRE)),
        )
        .context("raw GRE socket")?;
        let to = SockAddr::from(SocketAddr::new(dst, 0));
        for packet in packets {
            socket.send_to(packet, &to).context("sending raw GRE")?;
        }
        Ok(())
    })
}

/// Sends each of `packets` as one UDP datagram from `ns` (ephemeral port) to `dst`.
pub fn send_udp(ns: &Netns, dst: SocketAddr, packets: &[Vec<u8>]) -> Result<()> {
    ns.run(|| {
        let unspecified: IpAddr = if dst.is_ipv4() {
            [0u8; 4].into()
        } else {
            [0u16; 8].into()
        };
        let socket = UdpSocket::bind((unspecified, 0)).context("UDP socket")?;
        for packet in packets {
            socket.send_to(packet, dst).context("sending UDP")?;
        }
        Ok(())
    })
}

/// Connects over TCP from `src` to `dst_addr` in `dst`, captures the SYN as it arrives on
/// `dst_iface` (an AF_PACKET socket in `dst`) and returns its MSS option.
///
/// Bounded by [`CAPTURE_TIMEOUT`]; fails if no SYN is seen or it carries no MSS.
pub fn syn_mss(src: &Netns, dst: &Netns, dst_iface: &str, dst_addr: IpAddr) -> Result<u16> {
    let (port_tx, port_rx) = mpsc::channel();
    thread::scope(|scope| {
        let capture = dst.spawn(scope, move || capture_syn_mss(dst_iface, dst_addr, port_tx));
        let client = src.spawn(scope, move || {
            let port = port_rx
                .recv_timeout(HANDSHAKE_TIMEOUT)
                .context("capture never started")?;
            // Only the SYN matters; a failed handshake shows up as a missing capture.
            let _ = TcpStream::connect_timeout(&SocketAddr::new(dst_addr, port), CONNECT_TIMEOUT);
            Ok(())
        });
        let (mss, ()) = both(join(capture), join(client).context("TCP client"))?;
        Ok(mss)
    })
}

/// Server half of [`tcp_transfer`]: listens on an ephemeral port, reports it, accepts one
/// connection and hashes everything until EOF.
fn receive_digest(addr: IpAddr, port_tx: mpsc::Sender<u16>) -> Result<(Digest, usize)> {
    let listener = TcpListener::bind((addr, 0)).with_context(|| format!("binding {addr}"))?;
    listener.set_nonblocking(true)?;
    port_tx.send(listener.local_addr()?.port())?;
    let accept_deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ensure!(Instant::now() < accept_deadline, "no connection to {addr}");
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).context("accept"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let deadline = Instant::now() + TRANSFER_DEADLINE;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0usize;
    loop {
        ensure!(
            Instant::now() < deadline,
            "transfer still running after {TRANSFER_DEADLINE:?}"
        );
        let n = stream
            .read(&mut buf)
            .with_context(|| format!("reading after {total} bytes"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n;
    }
    Ok((finish(hasher), total))
}

/// Client half of [`tcp_transfer`].
fn send_payload(to: SocketAddr, bytes: usize) -> Result<Digest> {
    let mut stream = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)
        .with_context(|| format!("connecting {to}"))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut payload = Payload::new();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let chunk = &mut buf[..left.min(CHUNK)];
        payload.fill(chunk);
        hasher.update(&*chunk);
        stream
            .write_all(chunk)
            .with_context(|| format!("writing, {left} bytes left"))?;
        left -= chunk.len();
    }
    stream.shutdown(Shutdown::Write)?;
    Ok(finish(hasher))
}

/// Capture half of [`syn_mss`].
fn capture_syn_mss(iface: &str, addr: IpAddr, port_tx: mpsc::Sender<u16>) -> Result<u16> {
    // The listener lets the handshake complete instead of drawing a RST.
    let listener = TcpListener::bind((addr, 0)).with_context(|| format!("binding {addr}"))?;
    let port = listener.local_addr()?.port();
    let capture = PacketSocket::open(iface)?;
    port_tx.send(port)?;
    let deadline = Instant::now() + CAPTURE_TIMEOUT;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        let Some(len) = capture.recv(&mut buf)? else {
            continue;
        };
        match packet::syn_mss(&buf[..len], port) {
            Some(Some(mss)) => return Ok(mss),
            Some(None) => bail!("SYN to port {port} on {iface} carries no MSS option"),
            None => {}
        }
    }
    bail!("no SYN to {addr} port {port} seen on {iface} within {CAPTURE_TIMEOUT:?}")
}

/// An AF_PACKET/SOCK_DGRAM socket bound to one interface: yields network-layer packets in
/// both directions. Outgoing packets are seen as the device gets them, after the kernel's
/// own segmentation and checksumming for that device.
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a capture on `iface` of the calling thread's namespace (200 ms receive timeout).
    pub fn open(iface: &str) -> Result<Self> {
        let name = std::ffi::CString::new(iface)?;
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        ensure!(
            ifindex != 0,
            "no interface {iface}: {}",
            io::Error::last_os_error()
        );
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain syscall with constant arguments.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(protocol)) };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("AF_PACKET socket");
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = i32::try_from(ifindex)?;
        // SAFETY: `addr` is a valid sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("binding AF_PACKET socket");
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: `timeout` is a valid timeval and the length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("SO_RCVTIMEO");
        }
        Ok(Self { fd })
    }

    /// One packet into `buf`; `None` when the 200 ms receive timeout passed.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => {
                Ok(None)
            }
            _ => Err(err).context("AF_PACKET recv"),
        }
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), the same on every run.
struct Payload {
    state: u64,
}

impl Payload {
    fn new() -> Self {
        Self {
            state: 0x6d67_7265_2d65_3265,
        }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let word = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Both results, or an error naming every failure (the first one seen is often only a
/// consequence of the other).
fn both<A, B>(a: Result<A>, b: Result<B>) -> Result<(A, B)> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(anyhow!("{a:#}; and also: {b:#}")),
    }
}

fn finish(hasher: Sha256) -> Digest {
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&hasher.finalize());
    digest
}

/// Longest time a whole TCP transfer may take on the receiving side.
pub const TRANSFER_DEADLINE: Duration = Duration::from_secs(120);
/// Longest time [`syn_mss`] listens for the SYN.
pub const CAPTURE_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const CHUNK: usize = 64 * 1024;
const IPPROTO_GRE: i32 = 47;

/// A UDP socket in `ns` that has joined multicast `group` on interface `iface` and receives
/// on `port` (bound to the wildcard address, reading with a short timeout).
pub fn multicast_receiver(ns: &Netns, group: IpAddr, port: u16, iface: &str) -> Result<UdpSocket> {
    let iface = iface.to_owned();
    ns.run(move || {
        let index = if_index(&iface)?;
        let socket = match group {
            IpAddr::V4(g) => {
                let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
                s.set_reuse_address(true)?;
                s.bind(&SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port).into())?;
                s.join_multicast_v4_n(&g, &socket2::InterfaceIndexOrAddress::Index(index))?;
                s
            }
            IpAddr::V6(g) => {
                let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
                s.set_reuse_address(true)?;
                s.set_only_v6(true)?;
                s.bind(&SocketAddr::new(IpAddr::from([0u16; 8]), port).into())?;
                s.join_multicast_v6(&g, index)?;
                s
            }
        };
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(UdpSocket::from(socket))
    })
}

/// Sends `count` datagrams `"<tag>-<n>"` to multicast `group`:`port` out of interface
/// `iface` of `ns` (hop limit 1, like a routing protocol's hellos; no local loopback),
/// 50 ms apart.
pub fn multicast_send(
    ns: &Netns,
    group: IpAddr,
    port: u16,
    iface: &str,
    tag: &str,
    count: usize,
) -> Result<()> {
    multicast_send_hops(ns, group, port, iface, tag, count, 1)
}

/// Datagrams starting with `tag` that `socket` receives within `wait`.
pub fn multicast_received(socket: &UdpSocket, tag: &str, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.starts_with(tag) {
                got.push(text);
            }
        }
    }
    got
}

/// The index of interface `name` in the current namespace.
fn if_index(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    ensure!(index != 0, "no interface {name}");
    Ok(index)
}

/// Like [`multicast_send`], with TTL / hop limit `hops`: more than 1 lets multicast
/// routers forward the datagrams beyond the sender's link.
pub fn multicast_send_hops(
    ns: &Netns,
    group: IpAddr,
    port: u16,
    iface: &str,
    tag: &str,
    count: usize,
    hops: u32,
) -> Result<()> {
    let (iface, tag) = (iface.to_owned(), tag.to_owned());
    ns.run(move || {
        let domain = if group.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        s.bind_device(Some(iface.as_bytes()))?;
        // No local loopback copy: a receiver in the sender's namespace sees only what
        // comes back over the tunnel.
        if group.is_ipv4() {
            s.set_multicast_ttl_v4(hops)?;
            s.set_multicast_loop_v4(false)?;
        } else {
            s.set_multicast_if_v6(if_index(&iface)?)?;
            s.set_multicast_hops_v6(hops)?;
            s.set_multicast_loop_v6(false)?;
        }
        let dst: SockAddr = SocketAddr::new(group, port).into();
        for n in 0..count {
            s.send_to(format!("{tag}-{n}").as_bytes(), &dst)
                .with_context(|| format!("sending to {group} on {iface}"))?;
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    })
}
