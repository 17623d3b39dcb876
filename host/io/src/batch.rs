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
    /// Control-message space per frame (for the UDP GRO segment size).
    controls: Vec<[u64; 4]>,
    /// Segment size of each frame's coalesced datagrams (0: one datagram).
    segments: Vec<u16>,
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
            controls: vec![[0; 4]; capacity],
            segments: vec![0; capacity],
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

    /// All frames and their lengths, for sources that fill several frames per call.
    pub fn frames_and_lens_mut(&mut self) -> (&mut [Box<[u8]>], &mut [usize]) {
        (&mut self.frames, &mut self.lens)
    }

    /// Exchanges frame `i` with `other` (same size): hands a filled frame on without copying.
    pub fn swap_frame(&mut self, i: usize, other: &mut Box<[u8]>) {
        debug_assert_eq!(other.len(), self.frames[i].len());
        std::mem::swap(&mut self.frames[i], other);
    }

    /// For a socket with UDP GRO on: the size of the datagrams the kernel coalesced into
    /// frame `i` by the last [`FrameBatch::recv_from`] (the last one may be shorter), or
    /// `None` when the frame holds a single datagram.
    pub fn segment_size(&self, i: usize) -> Option<usize> {
        match self.segments[i] {
            0 => None,
            s => Some(usize::from(s)),
        }
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
            h.msg_control = self.controls[i].as_mut_ptr().cast();
            h.msg_controllen = std::mem::size_of_val(&self.controls[i]);
            h.msg_flags = 0;
        }
        // SAFETY: every header points at an iovec, sockaddr_storage and control buffer owned by
        // `self` that live for the call; each iovec covers the writable tail of its own frame.
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
            self.segments[i] = gro_segment_size(&self.hdrs[i].msg_hdr);
        }
        Ok(got)
    }
}

/// `SOL_UDP` option / control message: UDP GRO (receive) segment size.
pub const UDP_GRO: i32 = 104;
/// `SOL_UDP` control message: UDP GSO (send) segment size.
pub const UDP_SEGMENT: i32 = 103;

/// The UDP GRO segment size in a received message's control data (0 when absent).
fn gro_segment_size(h: &libc::msghdr) -> u16 {
    // SAFETY: the kernel filled `msg_control` up to `msg_controllen` with well-formed cmsgs;
    // CMSG_FIRSTHDR/NXTHDR stay within it and CMSG_DATA of a UDP_GRO message holds an int.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>());
                return u16::try_from(v).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    0
}

/// Most datagrams one UDP GSO send may carry (the kernel's `UDP_MAX_SEGMENTS` is 64 on older
/// kernels, 128 on newer).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes one UDP GSO send may carry (a UDP length field, less headers).
pub const GSO_MAX_BYTES: usize = 65_000;

/// Reusable arrays for one `sendmmsg` per output.
///
/// With UDP segmentation offload on ([`SendQueue::send`]'s `gso`), consecutive datagrams to
/// the same destination with the same marks and the same size (the last may be shorter) go
/// out as one message: one iovec each and a `UDP_SEGMENT` control message, so the kernel (or
/// the device) builds the UDP/IP headers of the whole train at once.
pub struct SendQueue {
    /// Per message: whether the kernel refused it.
    failed: Vec<bool>,
    /// Per item: the message that carries it.
    item_msg: Vec<u16>,
    /// One control-message buffer per message (aligned for `cmsghdr`): TOS, priority, segment.
    controls: Vec<[u64; 12]>,
    hdrs: Vec<libc::mmsghdr>,
    /// Per item.
    iovs: Vec<libc::iovec>,
    /// Per message.
    addrs: Vec<libc::sockaddr_storage>,
    /// Messages of the last send that carried more than one datagram.
    trains: usize,
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
    /// Datagrams sent.
    pub sent: usize,
    /// Datagrams offered.
    pub offered: usize,
    /// `sendmmsg` messages the datagrams went out in (fewer than `offered` with GSO).
    pub messages: usize,
    /// First error, when not everything was sent.
    pub error: Option<io::Error>,
}

/// One message being built.
struct Group {
    dst: SocketAddr,
    tos: Option<u8>,
    priority: Option<u8>,
    segment: usize,
    count: usize,
    bytes: usize,
    closed: bool,
}

impl SendQueue {
    /// Room for `capacity` datagrams per call.
    pub fn new(capacity: usize) -> Self {
        SendQueue {
            failed: vec![false; capacity],
            item_msg: vec![0; capacity],
            controls: vec![[0; 12]; capacity],
            // SAFETY: all-zero is a valid value of these C structs.
            hdrs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            addrs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            trains: 0,
        }
    }

    /// Sends every `(bytes, destination, tos, priority)` yielded by `items` (at most
    /// `capacity`) on `fd` with as few `sendmmsg` calls as the kernel allows; a `Some(tos)` sets
    /// that datagram's IPv4 TOS / IPv6 traffic class (DSCP << 2 | ECN), a `Some(priority)` its
    /// socket priority (`SO_PRIORITY`, which picks the qdisc band). `gso: Some(max)` (UDP
    /// sockets only) coalesces runs of datagrams of at most `max` bytes into UDP GSO messages.
    /// A message the kernel rejects (e.g. no route) is skipped and its datagrams counted as
    /// failed; the rest are still sent.
    pub fn send<'a>(
        &mut self,
        fd: RawFd,
        items: impl Iterator<Item = (&'a [u8], SocketAddr, Option<u8>, Option<u8>)>,
        gso: Option<usize>,
    ) -> SendReport {
        let mut n = 0;
        let mut msgs = 0;
        self.trains = 0;
        let mut group: Option<Group> = None;
        for (data, dst, tos, priority) in items.take(self.iovs.len()) {
            self.iovs[n] = libc::iovec {
                iov_base: data.as_ptr() as *mut _,
                iov_len: data.len(),
            };
            let joins = match (&group, gso) {
                (Some(g), Some(max)) => {
                    !g.closed
                        && g.dst == dst
                        && g.tos == tos
                        && g.priority == priority
                        && g.count < GSO_MAX_SEGMENTS
                        && data.len() <= g.segment
                        && g.segment <= max
                        && g.bytes + data.len() <= GSO_MAX_BYTES
                }
                _ => false,
            };
            if joins {
                let g = group.as_mut().expect("joins implies a group");
                g.count += 1;
                g.bytes += data.len();
                g.closed = data.len() < g.segment;
            } else {
                if let Some(g) = group.take() {
                    self.seal(msgs - 1, &g);
                }
                let m = msgs;
                msgs += 1;
                let len = std_to_sockaddr(dst, &mut self.addrs[m]);
                let h = &mut self.hdrs[m].msg_hdr;
                h.msg_name = (&raw mut self.addrs[m]).cast();
                h.msg_namelen = len;
                h.msg_iov = &raw mut self.iovs[n];
                h.msg_flags = 0;
                self.failed[m] = false;
                group = Some(Group {
                    dst,
                    tos,
                    priority,
                    segment: data.len(),
                    count: 1,
                    bytes: data.len(),
                    closed: false,
                });
            }
            self.item_msg[n] = (msgs - 1) as u16;
            n += 1;
        }
        if let Some(g) = group.take() {
            self.seal(msgs - 1, &g);
        }
        let mut report = SendReport {
            sent: 0,
            offered: n,
            messages: msgs,
            error: None,
        };
        let mut at = 0;
        while at < msgs {
            // SAFETY: headers [at, msgs) point at iovecs, addresses and control buffers owned by
            // `self`, and the iovecs at byte slices borrowed for the whole of this call.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[at..].as_mut_ptr(),
                    (msgs - at) as libc::c_uint,
                    0,
                )
            };
            if r > 0 {
                for m in at..at + r as usize {
                    report.sent += self.hdrs[m].msg_hdr.msg_iovlen;
                }
                at += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The message at `at` failed: skip it and carry on with the rest.
            report.error.get_or_insert(e);
            self.failed[at] = true;
            at += 1;
        }
        report
    }

    /// Completes message `m` from its group: iovec count and control messages.
    fn seal(&mut self, m: usize, g: &Group) {
        let segment = (g.count > 1).then_some(g.segment as u16);
        self.trains += usize::from(g.count > 1);
        let buf = &mut self.controls[m];
        let len = write_cmsgs(buf, g.dst.is_ipv4(), g.tos, g.priority, segment);
        let h = &mut self.hdrs[m].msg_hdr;
        h.msg_iovlen = g.count;
        if len == 0 {
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
        } else {
            h.msg_control = buf.as_mut_ptr().cast();
            h.msg_controllen = len;
        }
    }

    /// Messages of the last [`SendQueue::send`] that carried more than one datagram.
    pub fn trains(&self) -> usize {
        self.trains
    }

    /// Whether item `i` (in the order offered) of the last [`SendQueue::send`] failed.
    pub fn failed(&self, i: usize) -> bool {
        self.item_msg
            .get(i)
            .is_some_and(|&m| self.failed[usize::from(m)])
    }
}

/// Writes the `IP_TOS` / `IPV6_TCLASS`, `SO_PRIORITY` and `UDP_SEGMENT` control messages asked
/// for into `buf`; returns their total length (0 for none).
fn write_cmsgs(
    buf: &mut [u64; 12],
    ipv4: bool,
    tos: Option<u8>,
    priority: Option<u8>,
    segment: Option<u16>,
) -> usize {
    let tclass = if ipv4 {
        (libc::IPPROTO_IP, libc::IP_TOS)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
    };
    let mut used = 0;
    if let Some(t) = tos {
        used += put_cmsg(buf, used, tclass, &i32::from(t).to_ne_bytes());
    }
    if let Some(p) = priority {
        used += put_cmsg(
            buf,
            used,
            (libc::SOL_SOCKET, libc::SO_PRIORITY),
            &i32::from(p).to_ne_bytes(),
        );
    }
    if let Some(s) = segment {
        used += put_cmsg(buf, used, (libc::SOL_UDP, UDP_SEGMENT), &s.to_ne_bytes());
    }
    used
}

/// Writes one control message with `data` at byte `at` of `buf`; returns its space.
fn put_cmsg(buf: &mut [u64; 12], at: usize, (level, ty): (i32, i32), data: &[u8]) -> usize {
    // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic. The buffer is 96 bytes and 8-aligned; at most
    // three messages of CMSG_SPACE(≤ 4) = 24 bytes each are written, so the header and payload
    // written at `at` stay inside it.
    unsafe {
        let space = libc::CMSG_SPACE(data.len() as u32) as usize;
        assert!(at + space <= std::mem::size_of_val(buf));
        let hdr = buf
            .as_mut_ptr()
            .cast::<u8>()
            .add(at)
            .cast::<libc::cmsghdr>();
        (*hdr).cmsg_len = libc::CMSG_LEN(data.len() as u32) as _;
        (*hdr).cmsg_level = level;
        (*hdr).cmsg_type = ty;
        std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(hdr), data.len());
        space
    }
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
            None,
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

    /// Receives until `want` datagrams arrived (splitting coalesced trains); returns them and
    /// how many receive buffers carried more than one.
    fn recv_datagrams(fd: RawFd, want: usize) -> (Vec<Vec<u8>>, usize) {
        let mut b = FrameBatch::new(8, 0);
        let (mut got, mut trains) = (Vec::new(), 0);
        for _ in 0..200 {
            let n = b.recv_from(fd).unwrap();
            for i in 0..n {
                let data = &b.frame(i)[..b.len(i)];
                let seg = b.segment_size(i).unwrap_or(data.len());
                trains += usize::from(seg < data.len());
                got.extend(data.chunks(seg).map(<[u8]>::to_vec));
            }
            if got.len() >= want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        (got, trains)
    }

    #[test]
    fn gso_trains_go_out_as_one_message_and_arrive_in_order() {
        let rx =
            crate::UdpSockets::bind("127.0.0.1".parse().unwrap(), 0, 1, 1 << 22, false).unwrap();
        assert!(rx.gro(), "UDP GRO is available on this kernel");
        let dst = SocketAddr::new("127.0.0.1".parse().unwrap(), rx.listen_port());
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // 20 full segments, a short tail, then two more that must start a new message.
        let mut payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1200]).collect();
        payloads.push(vec![0xee; 300]);
        payloads.push(vec![0xaa; 1200]);
        payloads.push(vec![0xab; 1200]);
        let mut q = SendQueue::new(64);
        let r = q.send(
            tx.as_raw_fd(),
            payloads.iter().map(|p| (&p[..], dst, None, None)),
            Some(1400),
        );
        assert_eq!((r.sent, r.offered), (23, 23));
        assert_eq!(r.messages, 2, "two trains: 20 + tail, then 2");
        assert_eq!(q.trains(), 2);
        let (got, trains) = recv_datagrams(rx.listen_fd(), 23);
        assert_eq!(got, payloads, "every datagram, in order");
        assert!(trains >= 1, "the receiver saw coalesced trains");
    }

    #[test]
    fn gso_never_joins_different_marks_sizes_or_oversized_segments() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = rx.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = vec![1u8; 1000];
        let b = vec![2u8; 1100];
        let mut q = SendQueue::new(16);
        let items = [
            (&a[..], dst, None, None),
            (&a[..], dst, Some(0xb8), None),    // other TOS
            (&a[..], dst, Some(0xb8), Some(3)), // other priority
            (&b[..], dst, Some(0xb8), Some(3)), // larger than the train's segment
            (&b[..], dst, Some(0xb8), Some(3)), // joins the previous one
        ];
        let r = q.send(tx.as_raw_fd(), items.iter().copied(), Some(1400));
        assert_eq!((r.sent, r.messages), (5, 4));
        let r = q.send(tx.as_raw_fd(), items[3..].iter().copied(), Some(1050));
        assert_eq!(r.messages, 2, "segments above the limit go alone");
        let r = q.send(tx.as_raw_fd(), items[3..].iter().copied(), None);
        assert_eq!(r.messages, 2, "no GSO: one message per datagram");
    }

    #[test]
    fn unmaps_v4_mapped_sources() {
        let a: SocketAddr = "[::ffff:192.0.2.1]:4754".parse().unwrap();
        assert_eq!(source_ip(a), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
