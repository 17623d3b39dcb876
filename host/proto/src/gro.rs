//! Receive-offload coalescing (GRO) for packets about to be written to a TUN device that
//! carries the virtio-net header (`IFF_VNET_HDR` with TSO and checksum offloads): consecutive
//! in-order segments of one TCP flow in a write batch become one super-packet with a
//! `GSO_TCPV4`/`GSO_TCPV6` header and `NEEDS_CSUM`, which the kernel treats like a packet its
//! own GRO built; with [`Gro::with_udp`] (for a TUN with USO on, Linux ≥ 6.2), consecutive
//! datagrams of one UDP flow likewise become one `GSO_UDP_L4` super-packet. Everything else is
//! written as it is behind an all-zero header.
//!
//! The rules follow Linux `tcp_gro_receive`/`udp_gro_receive` and wireguard-go's
//! `tcpGRO`/`udpGRO`: a segment joins the newest item of its flow only when it continues it
//! exactly (TCP: sequence number, ACK, header fields, options; UDP: IP header fields; both:
//! size rules), its checksums and the item's first segment's having been verified first. A
//! packet of a tracked flow that cannot join ends that item, so per-flow order is kept.
//! Payloads are appended in place into the buffer of the item's first frame; nothing here
//! allocates after [`Gro::new`], performs I/O or keeps state across batches.

use crate::wire::checksum;
use crate::wire::ip::{PROTO_TCP, PROTO_UDP};

/// Bytes of the virtio-net header written in front of each packet (`struct virtio_net_hdr`,
/// 10 bytes, little-endian fields: `flags` u8, `gso_type` u8, `hdr_len` u16, `gso_size` u16,
/// `csum_start` u16, `csum_offset` u16).
pub const VNET_HDR_LEN: usize = 10;

/// Most segments coalesced into one super-packet.
pub const MAX_SEGMENTS: u16 = 64;

/// Largest coalesced IP packet (IPv4 total length / IPv6 header plus payload length).
pub const MAX_PACKET: usize = 65535;

/// `virtio_net_hdr.flags`: the checksum at `csum_start + csum_offset` is to be completed.
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.gso_type`: not a GSO packet.
pub const VNET_GSO_NONE: u8 = 0;
/// `virtio_net_hdr.gso_type`: TCP over IPv4.
pub const VNET_GSO_TCPV4: u8 = 1;
/// `virtio_net_hdr.gso_type`: TCP over IPv6.
pub const VNET_GSO_TCPV6: u8 = 4;
/// `virtio_net_hdr.gso_type`: UDP over IPv4 or IPv6, cut into datagrams of `gso_size` payload
/// bytes (USO; the TUN accepts it only with `TUN_F_USO4`/`TUN_F_USO6` on, Linux ≥ 6.2).
pub const VNET_GSO_UDP_L4: u8 = 5;

/// One packet waiting for the TUN: the packet is `buf[start..start + len]`; at least
/// [`VNET_HDR_LEN`] bytes are free before `start`, and the packet may grow up to `buf.len()`.
pub struct GroFrame {
    /// The frame; owned by the caller, reused across batches.
    pub buf: Box<[u8]>,
    /// Offset of the packet's first byte (the IP header); `start >= VNET_HDR_LEN`.
    pub start: usize,
    /// Length of the packet; `start + len <= buf.len()`.
    pub len: usize,
}

impl GroFrame {
    /// The IP packet.
    pub fn packet(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// What to write to the TUN after [`Gro::coalesce`]: the virtio-net header and the packet.
    pub fn with_vnet_hdr(&self) -> &[u8] {
        &self.buf[self.start - VNET_HDR_LEN..self.start + self.len]
    }
}

impl std::fmt::Debug for GroFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroFrame")
            .field("capacity", &self.buf.len())
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

/// Coalescing state for one writer: a fixed-capacity flow table and item list, both allocated
/// in [`Gro::new`] and reset (not freed) by every [`Gro::coalesce`].
pub struct Gro {
    /// Open-addressed flow table, a power of two at least twice `items.len()`; a slot is in
    /// use when its `epoch` is the current batch's.
    slots: Box<[Slot]>,
    /// Items of the current batch, in the order they were started (`items[..used]`).
    items: Box<[Item]>,
    /// Number of the current batch; starts at 1 so zeroed slots are free.
    epoch: u32,
    /// UDP datagrams are coalesced too ([`Gro::with_udp`]).
    udp: bool,
}

impl Gro {
    /// A coalescer for batches of up to `capacity` frames (at most 65 536). Larger batches
    /// still work, but flows first seen beyond the `capacity`-th item are written uncoalesced.
    /// It coalesces TCP only; see [`Gro::with_udp`].
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_FRAMES);
        Gro {
            slots: vec![Slot::default(); (2 * capacity).next_power_of_two()].into_boxed_slice(),
            items: vec![Item::default(); capacity].into_boxed_slice(),
            epoch: 0,
            udp: false,
        }
    }

    /// This coalescer, also coalescing UDP datagrams (`on`) into `GSO_UDP_L4` super-packets, or
    /// not (the default: UDP is written as it is). Turn it on only when the TUN device has UDP
    /// segmentation offload (`TUN_F_USO4 | TUN_F_USO6`, Linux ≥ 6.2); an older kernel rejects
    /// such writes.
    #[must_use]
    pub fn with_udp(mut self, on: bool) -> Self {
        self.set_udp(on);
        self
    }

    /// Turns UDP coalescing on or off for the following batches, as [`Gro::with_udp`].
    pub fn set_udp(&mut self, on: bool) {
        self.udp = on;
    }

    /// Coalesces `frames` (taken in the order given). Afterwards the virtio-net header of every
    /// frame to be written is at `buf[start - VNET_HDR_LEN..start]`, the `len` of frames that
    /// absorbed others has grown, and the indices of the frames to write, in order, are in
    /// `out[..n]`; returns `n`. Frames merged into another are not listed (their bytes are
    /// unchanged). Per-flow order is kept: a super-packet sits at its first segment's place.
    ///
    /// A coalesced frame has its IPv4 total length and header checksum (or IPv6 payload length)
    /// rewritten and the pseudo-header sum (not complemented) in its TCP or UDP checksum field;
    /// a TCP one has PSH set if its last segment had it, a UDP one the UDP length of the whole
    /// (header and all payloads). Its header says `NEEDS_CSUM` and `GSO_TCPV4`, `GSO_TCPV6` or
    /// `GSO_UDP_L4`, with `gso_size` the first segment's payload, which every segment but the
    /// last has exactly. Every other listed frame is untouched behind an all-zero header.
    ///
    /// Work bound: per frame one header parse and one flow-table probe; per merged segment one
    /// checksum pass over it (and over its item's first segment once) and one payload copy.
    /// Never allocates.
    ///
    /// # Panics
    /// If `out` is shorter than `frames`, there are more than 65 536 frames, or a frame breaks
    /// the [`GroFrame`] layout (`VNET_HDR_LEN <= start`, `start + len <= buf.len()`) — all
    /// caller errors; no packet content can cause a panic.
    #[must_use]
    pub fn coalesce(&mut self, frames: &mut [GroFrame], out: &mut [u16]) -> usize {
        assert!(frames.len() <= MAX_FRAMES, "more than 65536 frames");
        assert!(out.len() >= frames.len(), "`out` is shorter than `frames`");
        self.next_epoch();
        let mut used = 0;
        let mut n = 0;
        for i in 0..frames.len() {
            match self.place(frames, i, &mut used) {
                Placed::Merged => {}
                Placed::Alone => {
                    frames[i].buf[frames[i].start - VNET_HDR_LEN..frames[i].start].fill(0);
                    // `i < MAX_FRAMES` was asserted above.
                    out[n] = i as u16;
                    n += 1;
                }
            }
        }
        for item in &self.items[..used] {
            if item.segments > 1 {
                finish(&mut frames[usize::from(item.head)], item);
            }
        }
        n
    }

    /// Merges frame `i` into its flow's current item, or records it as the start of a new one.
    fn place(&mut self, frames: &mut [GroFrame], i: usize, used: &mut usize) -> Placed {
        let Some(seg) = parse(frames[i].packet(), self.udp) else {
            return Placed::Alone;
        };
        let slot = self.find(&seg.key);
        let tracked = self.slots[slot].epoch == self.epoch;
        if tracked {
            let at = self.slots[slot].item as usize;
            let item = &mut self.items[at];
            match try_merge(frames, i, &seg, item) {
                Merge::Done => return Placed::Merged,
                // TCP: not part of the stream as far as the receiver is concerned, the flow goes
                // on. UDP (as wireguard-go): the datagram keeps its place and ends the item.
                Merge::BadSegment => {
                    item.closed |= seg.key.udp;
                    return Placed::Alone;
                }
                Merge::No => item.closed = true,
            }
        }
        if !seg.mergeable || *used == self.items.len() {
            return Placed::Alone;
        }
        // `i < MAX_FRAMES` (asserted by the caller) fits the u16; a TCP header is at most 60
        // bytes and the payload of a packet whose IP length field matched is below 65 536.
        self.items[*used] = Item {
            head: i as u16,
            v6: seg.key.v6,
            udp: seg.key.udp,
            l4_hdr_len: seg.l4_hdr_len as u8,
            ack: seg.ack,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            gso_size: seg.payload as u16,
            segments: 1,
            verified: false,
            closed: seg.flags & TCP_PSH != 0,
        };
        self.slots[slot] = Slot {
            epoch: self.epoch,
            key: seg.key,
            item: *used as u32,
        };
        *used += 1;
        Placed::Alone
    }

    /// The slot holding `key`, or the free slot where it belongs.
    ///
    /// Terminates: at most `items.len()` slots are in use (one per item at most) and there are
    /// at least twice as many slots.
    fn find(&self, key: &FlowKey) -> usize {
        let mask = self.slots.len() - 1;
        let mut s = key.hash() as usize & mask;
        loop {
            let slot = &self.slots[s];
            if slot.epoch != self.epoch || slot.key == *key {
                return s;
            }
            s = (s + 1) & mask;
        }
    }

    /// Empties the flow table by moving to the next epoch (clearing it once every 2^32 batches).
    fn next_epoch(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.slots.fill(Slot::default());
            self.epoch = 1;
        }
    }
}

impl std::fmt::Debug for Gro {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gro")
            .field("capacity", &self.items.len())
            .field("slots", &self.slots.len())
            .field("udp", &self.udp)
            .finish()
    }
}

/// What became of one frame.
enum Placed {
    /// Appended to an earlier frame; not written itself.
    Merged,
    /// Written as its own packet (possibly the start of an item).
    Alone,
}

/// Outcome of offering a segment to its flow's current item.
enum Merge {
    /// The payload was appended.
    Done,
    /// The segment continues the item but its checksum is wrong: write it alone.
    BadSegment,
    /// The segment does not continue the item (or the item's first segment is corrupt).
    No,
}

/// The fields of a TCP or UDP packet that GRO looks at.
struct Segment {
    key: FlowKey,
    /// A GRO candidate: no IPv4 options or fragmentation, a payload; TCP: only ACK (and PSH)
    /// set; UDP: a UDP length matching the IP length and a checksum (not zero).
    mergeable: bool,
    ip_hdr_len: usize,
    /// TCP header length, or the 8 bytes of the UDP header.
    l4_hdr_len: usize,
    /// TCP only (zero for UDP): sequence number, ACK number, flags.
    seq: u32,
    ack: u32,
    flags: u8,
    payload: usize,
}

/// Parses a TCP packet (or, if `udp`, a UDP packet) whose flow GRO can tell: IPv4 (not a later
/// fragment) or IPv6 with TCP/UDP as the first next header, its length exactly the frame's.
/// `None` for anything else. Only IPv4 without options or fragmentation and IPv6 can be
/// `mergeable`.
fn parse(pkt: &[u8], udp: bool) -> Option<Segment> {
    let first = *pkt.first()?;
    let wanted = |proto: u8| proto == PROTO_TCP || udp && proto == PROTO_UDP;
    let min_l4 = |proto: u8| {
        if proto == PROTO_TCP {
            TCP_HDR_LEN
        } else {
            UDP_HDR_LEN
        }
    };
    let (ip_hdr_len, proto, key, candidate) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < IPV4_HDR_LEN
                || pkt.len() < IPV4_HDR_LEN
                || !wanted(pkt[9])
                || pkt.len() < ihl + min_l4(pkt[9])
                || usize::from(be16(pkt, 2)) != pkt.len()
                || pkt[6] & 0x1f != 0
                || pkt[7] != 0
            {
                return None;
            }
            let src = u128::from(u32::from_be_bytes([pkt[12], pkt[13], pkt[14], pkt[15]]));
            let dst = u128::from(u32::from_be_bytes([pkt[16], pkt[17], pkt[18], pkt[19]]));
            // Options or a first fragment (MF) still name the flow, but are never merged.
            let candidate = ihl == IPV4_HDR_LEN && pkt[6] & IPV4_MF == 0;
            (ihl, pkt[9], FlowKey::new(src, dst, false), candidate)
        }
        6 => {
            if pkt.len() < IPV6_HDR_LEN
                || !wanted(pkt[6])
                || pkt.len() < IPV6_HDR_LEN + min_l4(pkt[6])
                || usize::from(be16(pkt, 4)) != pkt.len() - IPV6_HDR_LEN
            {
                return None;
            }
            let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
            src.copy_from_slice(&pkt[8..24]);
            dst.copy_from_slice(&pkt[24..40]);
            let (src, dst) = (u128::from_be_bytes(src), u128::from_be_bytes(dst));
            (IPV6_HDR_LEN, pkt[6], FlowKey::new(src, dst, true), true)
        }
        _ => return None,
    };
    let l4 = &pkt[ip_hdr_len..];
    let key = FlowKey {
        ports: u32::from_be_bytes([l4[0], l4[1], l4[2], l4[3]]),
        udp: proto == PROTO_UDP,
        ..key
    };
    if key.udp {
        // Linux merges no padded datagram (UDP length short of the IP length) and, like
        // wireguard-go, none without a checksum (zero: IPv4's "none", invalid over IPv6).
        let payload = l4.len() - UDP_HDR_LEN;
        return Some(Segment {
            key,
            mergeable: candidate
                && usize::from(be16(l4, 4)) == l4.len()
                && be16(l4, 6) != 0
                && payload > 0,
            ip_hdr_len,
            l4_hdr_len: UDP_HDR_LEN,
            seq: 0,
            ack: 0,
            flags: 0,
            payload,
        });
    }
    let tcp_hdr_len = usize::from(l4[12] >> 4) * 4;
    if tcp_hdr_len < TCP_HDR_LEN || l4.len() < tcp_hdr_len {
        return None;
    }
    let flags = l4[13];
    let payload = l4.len() - tcp_hdr_len;
    Some(Segment {
        key,
        mergeable: candidate && flags & !TCP_PSH == TCP_ACK && payload > 0,
        ip_hdr_len,
        l4_hdr_len: tcp_hdr_len,
        seq: u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
        ack: u32::from_be_bytes([l4[8], l4[9], l4[10], l4[11]]),
        flags,
        payload,
    })
}

/// Appends segment `frames[i]` to `item` if it continues it; `item.head < i`, and both are of
/// one flow (so of one IP version and transport protocol).
fn try_merge(frames: &mut [GroFrame], i: usize, seg: &Segment, item: &mut Item) -> Merge {
    let head = &frames[usize::from(item.head)];
    let (pkt, first) = (frames[i].packet(), head.packet());
    let hdrs = seg.ip_hdr_len + seg.l4_hdr_len;
    // Both mergeable, so of one IP header length. Any UDP datagram of the flow continues it
    // (Linux `udp_gro_receive_segment`); a TCP segment must follow on exactly.
    if !seg.mergeable
        || item.closed
        || seg.payload > usize::from(item.gso_size)
        || first.len() + seg.payload > MAX_PACKET
        || head.start + head.len + seg.payload > head.buf.len()
        || !same_ip_headers(first, pkt, seg.ip_hdr_len)
        || !seg.key.udp
            && (seg.seq != item.next_seq
                || seg.ack != item.ack
                || seg.l4_hdr_len != usize::from(item.l4_hdr_len)
                || !same_tcp_headers(first, pkt, seg.ip_hdr_len, hdrs))
    {
        return Merge::No;
    }
    let proto = if seg.key.udp { PROTO_UDP } else { PROTO_TCP };
    if !item.verified {
        if !checksums_valid(first, seg.ip_hdr_len, proto) {
            return Merge::No;
        }
        item.verified = true;
    }
    if !checksums_valid(pkt, seg.ip_hdr_len, proto) {
        return Merge::BadSegment;
    }

    let (before, rest) = frames.split_at_mut(i);
    let head = &mut before[usize::from(item.head)];
    let end = head.start + head.len;
    head.buf[end..end + seg.payload].copy_from_slice(&rest[0].packet()[hdrs..]);
    head.len += seg.payload;
    item.next_seq = item.next_seq.wrapping_add(seg.payload as u32);
    item.segments += 1;
    if seg.flags & TCP_PSH != 0 {
        head.buf[head.start + seg.ip_hdr_len + 13] |= TCP_PSH;
    }
    // Linux flushes after a PSH, after a short segment (only the last may be short), and caps
    // the segment count (`MAX_SKB_FRAGS` for TCP, `UDP_GRO_CNT_MAX` for UDP).
    item.closed = seg.flags & TCP_PSH != 0
        || seg.payload < usize::from(item.gso_size)
        || item.segments == MAX_SEGMENTS;
    Merge::Done
}

/// Whether the IP headers of `a` and `b` (same version and header length) allow merging:
/// IPv4 TOS, TTL, DF and reserved bit; IPv6 traffic class, flow label and hop limit. The IPv4
/// ID is not compared.
fn same_ip_headers(a: &[u8], b: &[u8], ip_hdr_len: usize) -> bool {
    if ip_hdr_len == IPV4_HDR_LEN {
        a[1] == b[1] && a[6] & 0xe0 == b[6] & 0xe0 && a[8] == b[8]
    } else {
        a[..4] == b[..4] && a[7] == b[7]
    }
}

/// Whether the TCP headers of `a` and `b` (same header lengths) allow merging: data offset and
/// reserved bits, window and option bytes.
fn same_tcp_headers(a: &[u8], b: &[u8], ip_hdr_len: usize, hdrs: usize) -> bool {
    let (t, o) = (ip_hdr_len + 12, ip_hdr_len + TCP_HDR_LEN);
    a[t] == b[t] && a[t + 2..t + 4] == b[t + 2..t + 4] && a[o..hdrs] == b[o..hdrs]
}

/// Verifies the IPv4 header checksum (for IPv4) and the TCP or UDP (`proto`) checksum of `pkt`.
fn checksums_valid(pkt: &[u8], ip_hdr_len: usize, proto: u8) -> bool {
    if ip_hdr_len == IPV4_HDR_LEN && checksum::checksum(&pkt[..IPV4_HDR_LEN]) != 0 {
        return false;
    }
    let sum = pseudo_header(pkt, ip_hdr_len, proto, pkt.len() - ip_hdr_len);
    checksum::fold(checksum::accumulate(sum, &pkt[ip_hdr_len..])) == 0xffff
}

/// Sum of the TCP or UDP (`proto`) pseudo-header of `pkt` for a transport length of `l4_len`
/// (≤ 65535). The source and destination addresses are adjacent in both IPv4 (12..20) and
/// IPv6 (8..40).
fn pseudo_header(pkt: &[u8], ip_hdr_len: usize, proto: u8, l4_len: usize) -> u64 {
    let addrs = if ip_hdr_len == IPV4_HDR_LEN {
        &pkt[12..20]
    } else {
        &pkt[8..40]
    };
    checksum::accumulate(0, addrs) + u64::from(proto) + l4_len as u64
}

/// Rewrites the headers of a coalesced item and writes its virtio-net header.
fn finish(frame: &mut GroFrame, item: &Item) {
    let (start, len) = (frame.start, frame.len);
    let ip_hdr_len = if item.v6 { IPV6_HDR_LEN } else { IPV4_HDR_LEN };
    let l4_len = len - ip_hdr_len;
    let pkt = &mut frame.buf[start..start + len];
    // `len <= MAX_PACKET` was checked on every append.
    if item.v6 {
        pkt[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    } else {
        pkt[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        pkt[10..12].fill(0);
        let c = checksum::checksum(&pkt[..IPV4_HDR_LEN]);
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let (gso_type, proto, csum_offset) = match (item.udp, item.v6) {
        (true, _) => (VNET_GSO_UDP_L4, PROTO_UDP, UDP_CSUM_OFFSET),
        (false, false) => (VNET_GSO_TCPV4, PROTO_TCP, TCP_CSUM_OFFSET),
        (false, true) => (VNET_GSO_TCPV6, PROTO_TCP, TCP_CSUM_OFFSET),
    };
    if item.udp {
        // The length of the whole, as Linux `udp_gro_complete` and wireguard-go write it;
        // segmentation gives each datagram its own.
        let at = ip_hdr_len + UDP_LEN_OFFSET;
        pkt[at..at + 2].copy_from_slice(&(l4_len as u16).to_be_bytes());
    }
    let partial = checksum::fold(pseudo_header(pkt, ip_hdr_len, proto, l4_len));
    let at = ip_hdr_len + csum_offset;
    pkt[at..at + 2].copy_from_slice(&partial.to_be_bytes());

    let hdr_len = ip_hdr_len + usize::from(item.l4_hdr_len);
    let hdr = &mut frame.buf[start - VNET_HDR_LEN..start];
    hdr[0] = VNET_F_NEEDS_CSUM;
    hdr[1] = gso_type;
    hdr[2..4].copy_from_slice(&(hdr_len as u16).to_le_bytes());
    hdr[4..6].copy_from_slice(&item.gso_size.to_le_bytes());
    hdr[6..8].copy_from_slice(&(ip_hdr_len as u16).to_le_bytes());
    hdr[8..10].copy_from_slice(&(csum_offset as u16).to_le_bytes());
}

fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

/// What identifies a flow: addresses (IPv4 in the low 32 bits), both ports, IP version and
/// transport protocol (TCP and UDP flows are apart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FlowKey {
    src: u128,
    dst: u128,
    /// Source port in the high half, destination port in the low half.
    ports: u32,
    v6: bool,
    udp: bool,
}

impl FlowKey {
    fn new(src: u128, dst: u128, v6: bool) -> Self {
        FlowKey {
            src,
            dst,
            ports: 0,
            v6,
            udp: false,
        }
    }

    fn hash(&self) -> u64 {
        let mut h: u64 = 0x243f_6a88_85a3_08d3;
        let mut mix = |v: u64| h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31);
        mix(self.src as u64 ^ (self.src >> 64) as u64);
        mix(self.dst as u64 ^ (self.dst >> 64) as u64);
        mix(u64::from(self.ports) << 2 | u64::from(self.udp) << 1 | u64::from(self.v6));
        h ^ (h >> 29)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    epoch: u32,
    key: FlowKey,
    /// Index of the flow's current item.
    item: u32,
}

/// A super-packet being built: its first frame and what the next segment must look like.
#[derive(Clone, Copy, Debug, Default)]
struct Item {
    /// Frame holding the first segment, into which later payloads are appended.
    head: u16,
    v6: bool,
    udp: bool,
    /// TCP header length, or the UDP header's 8 bytes.
    l4_hdr_len: u8,
    /// TCP only: ACK number and the sequence number the next segment must carry.
    ack: u32,
    next_seq: u32,
    /// Payload of the first segment; every later one but the last has exactly this size.
    gso_size: u16,
    segments: u16,
    /// The first segment's checksums were checked (done when the first merge is tried).
    verified: bool,
    /// Nothing more may be appended (PSH, short segment, segment cap, or a non-matching packet
    /// of the flow, for UDP also a corrupt one, came along).
    closed: bool,
}

/// Most frames per batch (indices are `u16`).
const MAX_FRAMES: usize = 1 << 16;
const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;
const TCP_HDR_LEN: usize = 20;
const TCP_CSUM_OFFSET: usize = 16;
const UDP_HDR_LEN: usize = 8;
const UDP_LEN_OFFSET: usize = 4;
const UDP_CSUM_OFFSET: usize = 6;
const IPV4_MF: u8 = 0x20;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

#[cfg(test)]
mod tests;
