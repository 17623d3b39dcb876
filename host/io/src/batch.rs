//! Batches of frames and batched socket calls (`recvmmsg`/`sendmmsg`).
//!
//! A [`FrameBatch`] owns `n` frames of [`FRAME_SIZE`] bytes — room for a 64 KiB offload
//! super-packet plus headroom — allocated once. Received data lands at `headroom` so the
//! core can write headers in front of it. A [`SendQueue`] holds the `mmsghdr`/`iovec`/address
//! arrays for `sendmmsg`, also allocated once; it borrows the bytes to send only for the
//! duration of one [`SendQueue::send`] call.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Bytes per frame: headroom plus the largest IP packet (64 KiB) plus slack.
pub const FRAME_SIZE: usize = 256 + 65536;

/// A reusable batch of receive frames with their lengths and source addresses.
pub struct FrameBatch {
    frames: Vec<Box<[u8]>>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_storage>,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    headroom: usize,
}

impl std::fmt::Debug for FrameBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameBatch")
            .field("capacity", &self.frames.len())
            .finish()
    }
}

impl FrameBatch {
    /// Allocates `capacity` frames, data starting `headroom` bytes into each.
    pub fn new(capacity: usize, headroom: usize) -> Self {
        assert!(
            headroom < FRAME_SIZE / 2,
            "headroom leaves no room for data"
        );
        FrameBatch {
            frames: (0..capacity)
                .map(|_| vec![0u8; FRAME_SIZE].into_boxed_slice())
                .collect(),
            lens: vec![0; capacity],
            // SAFETY: sockaddr_storage, mmsghdr and iovec are plain C structs for which all-zero
            // bytes are a valid (empty) value.
            addrs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            hdrs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            headroom,
        }
    }

    /// Number of frames.
    pub fn capacity(&self) -> usize {
        self.frames.len()
    }

    /// Where received data starts in each frame.
    pub fn headroom(&self) -> usize {
        self.headroom
    }

    /// Frame `i`, whole (headroom included).
    pub fn frame_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.frames[i]
    }

    /// Frame `i`, whole.
    pub fn frame(&self, i: usize) -> &[u8] {
        &self.frames[i]
    }

    /// Length of the data received into frame `i` by the last receive.
    pub fn len(&self, i: usize) -> usize {
        self.lens[i]
    }

    /// Sets the data length of frame `i` (for sources that fill frames themselves, like TUN).
    pub fn set_len(&mut self, i: usize, len: usize) {
        self.lens[i] = len;
    }

    /// Source address of frame `i` from the last [`FrameBatch::recv_from`].
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        sockaddr_to_std(&self.addrs[i])
    }

    /// Receives up to `capacity` datagrams from non-blocking socket `fd` with one
    /// `recvmmsg`. Returns how many frames were filled; 0 when nothing was waiting.
    pub fn recv_from(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.frames.len();
        for i in 0..n {
            let frame = &mut self.frames[i];
            self.iovs[i] = libc::iovec {
                iov_base: frame[self.headroom..].as_mut_ptr().cast(),
                iov_len: frame.len() - self.headroom,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&raw mut self.addrs[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &raw mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: every header points at an iovec and sockaddr_storage owned by `self` that
        // live for the call; each iovec covers the writable tail of its own frame.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let got = r as usize;
        for i in 0..got {
            self.lens[i] = self.hdrs[i].msg_len as usize;
        }
        Ok(got)
    }
}

/// Reusable arrays for one `sendmmsg` per output.
pub struct SendQueue {
    failed: Vec<bool>,
    /// One control-message buffer per datagram (aligned for `cmsghdr`), for a per-packet TOS
    /// and socket priority.
    controls: Vec<[u64; 8]>,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
}

impl std::fmt::Debug for SendQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendQueue")
            .field("capacity", &self.hdrs.len())
            .finish()
    }
}

/// The outcome of one [`SendQueue::send`]: packets the kernel took, and the error that stopped
/// the rest, if any (each unsent packet is a transmit error for the caller to count).
#[derive(Debug)]
pub struct SendReport {
    /// Packets sent.
    pub sent: usize,
    /// Packets offered.
    pub offered: usize,
    /// First error, when not everything was sent.
    pub error: Option<io::Error>,
}

impl SendQueue {
    /// Room for `capacity` datagrams per call.
    pub fn new(capacity: usize) -> Self {
        SendQueue {
            failed: vec![false; capacity],
            controls: vec![[0; 8]; capacity],
            // SAFETY: all-zero is a valid value of these C structs.
            hdrs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            addrs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
        }
    }

    /// Sends every `(bytes, destination, tos, priority)` yielded by `items` (at most
    /// `capacity`) on `fd` with as few `sendmmsg` calls as the kernel allows; a `Some(tos)` sets
    /// that datagram's IPv4 TOS / IPv6 traffic class (DSCP << 2 | ECN), a `Some(priority)` its
    /// socket priority (`SO_PRIORITY`, which picks the qdisc band). A datagram the kernel
    /// rejects (e.g. no route) is skipped and counted as failed; the rest are still sent.
    pub fn send<'a>(
        &mut self,
        fd: RawFd,
        items: impl Iterator<Item = (&'a [u8], SocketAddr, Option<u8>, Option<u8>)>,
    ) -> SendReport {
        let mut n = 0;
        for (data, dst, tos, priority) in items.take(self.hdrs.len()) {
            self.iovs[n] = libc::iovec {
                iov_base: data.as_ptr() as *mut _,
                iov_len: data.len(),
            };
            let len = std_to_sockaddr(dst, &mut self.addrs[n]);
            let h = &mut self.hdrs[n].msg_hdr;
            h.msg_name = (&raw mut self.addrs[n]).cast();
            h.msg_namelen = len;
            h.msg_iov = &raw mut self.iovs[n];
            h.msg_iovlen = 1;
            let buf = &mut self.controls[n];
            let len = write_cmsgs(buf, dst.is_ipv4(), tos, priority);
            if len == 0 {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            } else {
                h.msg_control = buf.as_mut_ptr().cast();
                h.msg_controllen = len;
            }
            h.msg_flags = 0;
            self.failed[n] = false;
            n += 1;
        }
        let mut report = SendReport {
            sent: 0,
            offered: n,
            error: None,
        };
        let mut at = 0;
        while at < n {
            // SAFETY: headers [at, n) point at iovecs and addresses owned by `self`, and the
            // iovecs at byte slices borrowed for the whole of this call.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[at..].as_mut_ptr(),
                    (n - at) as libc::c_uint,
                    0,
                )
            };
            if r > 0 {
                report.sent += r as usize;
                at += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The datagram at `at` failed: skip it and carry on with the rest.
            report.error.get_or_insert(e);
            self.failed[at] = true;
            at += 1;
        }
        report
    }
}

impl SendQueue {
    /// Whether item `i` (in the order offered) of the last [`SendQueue::send`] failed.
    pub fn failed(&self, i: usize) -> bool {
        self.failed.get(i).copied().unwrap_or(false)
    }
}

/// Writes the `IP_TOS` / `IPV6_TCLASS` and `SO_PRIORITY` control messages asked for into
/// `buf`; returns their total length (0 for none).
fn write_cmsgs(buf: &mut [u64; 8], ipv4: bool, tos: Option<u8>, priority: Option<u8>) -> usize {
    let tclass = if ipv4 {
        (libc::IPPROTO_IP, libc::IP_TOS)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
    };
    let wanted = [
        tos.map(|t| (tclass, t)),
        priority.map(|p| ((libc::SOL_SOCKET, libc::SO_PRIORITY), p)),
    ];
    let mut used = 0;
    for ((level, ty), value) in wanted.into_iter().flatten() {
        // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic. The buffer is 64 bytes and 8-aligned; two
        // messages of CMSG_SPACE(4) = 24 bytes each fit, so the header and int payload written
        // at `used` stay inside it.
        unsafe {
            let space = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
            debug_assert!(used + space <= std::mem::size_of_val(buf));
            let hdr = buf
                .as_mut_ptr()
                .cast::<u8>()
                .add(used)
                .cast::<libc::cmsghdr>();
            (*hdr).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
            (*hdr).cmsg_level = level;
            (*hdr).cmsg_type = ty;
            std::ptr::write_unaligned(libc::CMSG_DATA(hdr).cast::<i32>(), i32::from(value));
            used += space;
        }
    }
    used
}

fn std_to_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr type.
            let sin =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = 0;
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn sockaddr_to_std(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                0,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The IP of a received datagram's source, with IPv4-mapped IPv6 addresses unmapped.
pub fn source_ip(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn loopback_roundtrip_in_batches() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = rx.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let mut q = SendQueue::new(16);
        let r = q.send(
            tx.as_raw_fd(),
            payloads.iter().enumerate().map(|(i, p)| {
                (
                    &p[..],
                    dst,
                    (i % 2 == 0).then_some(0xb8),
                    (i % 3 == 0).then_some(6),
                )
            }),
        );
        assert_eq!((r.sent, r.offered), (10, 10));
        assert!(r.error.is_none());
        let mut b = FrameBatch::new(4, 64);
        let mut got = Vec::new();
        for _ in 0..100 {
            let n = b.recv_from(rx.as_raw_fd()).unwrap();
            for i in 0..n {
                assert_eq!(b.source(i), Some(tx.local_addr().unwrap()));
                got.push(b.frame(i)[64..64 + b.len(i)].to_vec());
            }
            if got.len() == 10 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, payloads);
        assert_eq!(
            b.recv_from(rx.as_raw_fd()).unwrap(),
            0,
            "nothing left, non-blocking"
        );
    }

    #[test]
    fn unmaps_v4_mapped_sources() {
        let a: SocketAddr = "[::ffff:192.0.2.1]:4754".parse().unwrap();
        assert_eq!(source_ip(a), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
