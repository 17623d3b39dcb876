//! TCP receive-offload coalescing (GRO) for packets about to be written to a TUN device that
//! carries the virtio-net header (`IFF_VNET_HDR` with TSO and checksum offloads): consecutive
//! in-order segments of one TCP flow in a write batch become one super-packet with a
//! `GSO_TCPV4`/`GSO_TCPV6` header and `NEEDS_CSUM`, which the kernel treats like a packet its
//! own GRO built. Everything else is written as it is behind an all-zero header.
//!
//! The rules follow Linux `tcp_gro_receive` and wireguard-go's `tcpGRO`: a segment joins the
//! newest item of its flow only when it continues it exactly (sequence number, ACK, header
//! fields, options, size rules), both checksums having been verified first. A packet of a
//! tracked flow that cannot join ends that item, so per-flow order is kept. Payloads are
//! appended in place into the buffer of the item's first frame; nothing here allocates after
//! [`Gro::new`], performs I/O or keeps state across batches.

use crate::wire::checksum;
use crate::wire::ip::PROTO_TCP;

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
}

impl Gro {
    /// A coalescer for batches of up to `capacity` frames (at most 65 536). Larger batches
    /// still work, but flows first seen beyond the `capacity`-th item are written uncoalesced.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_FRAMES);
        Gro {
            slots: vec![Slot::default(); (2 * capacity).next_power_of_two()].into_boxed_slice(),
            items: vec![Item::default(); capacity].into_boxed_slice(),
            epoch: 0,
        }
    }

    /// Coalesces `frames` (taken in the order given). Afterwards the virtio-net header of every
    /// frame to be written is at `buf[start - VNET_HDR_LEN..start]`, the `len` of frames that
    /// absorbed others has grown, and the indices of the frames to write, in order, are in
    /// `out[..n]`; returns `n`. Frames merged into another are not listed (their bytes are
    /// unchanged). Per-flow order is kept: a super-packet sits at its first segment's place.
    ///
    /// A coalesced frame has its IPv4 total length and header checksum (or IPv6 payload length)
    /// rewritten, PSH set if its last segment had it, and the pseudo-header sum in the TCP
    /// checksum field; its header says `NEEDS_CSUM` with `gso_size` the first segment's
    /// payload. Every other listed frame is untouched behind an all-zero header.
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
        let Some(seg) = parse(frames[i].packet()) else {
            return Placed::Alone;
        };
        let slot = self.find(&seg.key);
        let tracked = self.slots[slot].epoch == self.epoch;
        if tracked {
            let at = self.slots[slot].item as usize;
            let item = &mut self.items[at];
            match try_merge(frames, i, &seg, item) {
                Merge::Done => return Placed::Merged,
                // Not part of the stream as far as the receiver is concerned: the flow goes on.
                Merge::BadSegment => return Placed::Alone,
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
            tcp_hdr_len: seg.tcp_hdr_len as u8,
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
    /// The segment continues the item but its checksum is wrong: write it alone, keep the item.
    BadSegment,
    /// The segment does not continue the item (or the item's first segment is corrupt).
    No,
}

/// The fields of a TCP packet that GRO looks at.
struct Segment {
    key: FlowKey,
    /// A GRO candidate: no IPv4 options or fragmentation, only ACK (and PSH) set, a payload.
    mergeable: bool,
    ip_hdr_len: usize,
    tcp_hdr_len: usize,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: usize,
}

/// Parses a TCP packet whose flow GRO can tell: IPv4 (not a later fragment) or IPv6 with TCP as
/// the first next header, its length exactly the frame's. `None` for anything else. Only IPv4
/// without options or fragmentation and IPv6 can be `mergeable`.
fn parse(pkt: &[u8]) -> Option<Segment> {
    let first = *pkt.first()?;
    let (ip_hdr_len, key, candidate) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < IPV4_HDR_LEN
                || pkt.len() < ihl + TCP_HDR_LEN
                || usize::from(be16(pkt, 2)) != pkt.len()
                || pkt[6] & 0x1f != 0
                || pkt[7] != 0
                || pkt[9] != PROTO_TCP
            {
                return None;
            }
            let src = u128::from(u32::from_be_bytes([pkt[12], pkt[13], pkt[14], pkt[15]]));
            let dst = u128::from(u32::from_be_bytes([pkt[16], pkt[17], pkt[18], pkt[19]]));
            // Options or a first fragment (MF) still name the flow, but are never merged.
            let candidate = ihl == IPV4_HDR_LEN && pkt[6] & IPV4_MF == 0;
            (ihl, FlowKey::new(src, dst, false), candidate)
        }
        6 => {
            if pkt.len() < IPV6_HDR_LEN + TCP_HDR_LEN
                || usize::from(be16(pkt, 4)) != pkt.len() - IPV6_HDR_LEN
                || pkt[6] != PROTO_TCP
            {
                return None;
            }
            let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
            src.copy_from_slice(&pkt[8..24]);
            dst.copy_from_slice(&pkt[24..40]);
            let (src, dst) = (u128::from_be_bytes(src), u128::from_be_bytes(dst));
            (IPV6_HDR_LEN, FlowKey::new(src, dst, true), true)
        }
        _ => return None,
    };
    let tcp = &pkt[ip_hdr_len..];
    let tcp_hdr_len = usize::from(tcp[12] >> 4) * 4;
    if tcp_hdr_len < TCP_HDR_LEN || tcp.len() < tcp_hdr_len {
        return None;
    }
    let flags = tcp[13];
    let payload = tcp.len() - tcp_hdr_len;
    Some(Segment {
        key: FlowKey {
            ports: u32::from_be_bytes([tcp[0], tcp[1], tcp[2], tcp[3]]),
            ..key
        },
        mergeable: candidate && flags & !TCP_PSH == TCP_ACK && payload > 0,
        ip_hdr_len,
        tcp_hdr_len,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        ack: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
        flags,
        payload,
    })
}

/// Appends segment `frames[i]` to `item` if it continues it; `item.head < i`.
fn try_merge(frames: &mut [GroFrame], i: usize, seg: &Segment, item: &mut Item) -> Merge {
    let head = &frames[usize::from(item.head)];
    let (pkt, first) = (frames[i].packet(), head.packet());
    let hdrs = seg.ip_hdr_len + seg.tcp_hdr_len;
    if !seg.mergeable
        || item.closed
        || seg.seq != item.next_seq
        || seg.ack != item.ack
        || seg.tcp_hdr_len != usize::from(item.tcp_hdr_len)
        || seg.payload > usize::from(item.gso_size)
        || first.len() + seg.payload > MAX_PACKET
        || head.start + head.len + seg.payload > head.buf.len()
        || !same_headers(first, pkt, seg.ip_hdr_len, hdrs)
    {
        return Merge::No;
    }
    if !item.verified {
        if !checksums_valid(first, seg.ip_hdr_len) {
            return Merge::No;
        }
        item.verified = true;
    }
    if !checksums_valid(pkt, seg.ip_hdr_len) {
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
    // Linux flushes after a PSH, after a short segment (only the last may be short), and we
    // cap the segment count.
    item.closed = seg.flags & TCP_PSH != 0
        || seg.payload < usize::from(item.gso_size)
        || item.segments == MAX_SEGMENTS;
    Merge::Done
}

/// Whether the IP and TCP headers of `a` and `b` (same version and header lengths) allow
/// merging: IPv4 TOS, TTL, DF and reserved bit; IPv6 traffic class, flow label and hop limit;
/// TCP data offset and reserved bits, window and option bytes. The IPv4 ID is not compared.
fn same_headers(a: &[u8], b: &[u8], ip_hdr_len: usize, hdrs: usize) -> bool {
    let ip = if ip_hdr_len == IPV4_HDR_LEN {
        a[1] == b[1] && a[6] & 0xe0 == b[6] & 0xe0 && a[8] == b[8]
    } else {
        a[..4] == b[..4] && a[7] == b[7]
    };
    let (t, o) = (ip_hdr_len + 12, ip_hdr_len + TCP_HDR_LEN);
    ip && a[t] == b[t] && a[t + 2..t + 4] == b[t + 2..t + 4] && a[o..hdrs] == b[o..hdrs]
}

/// Verifies the IPv4 header checksum (for IPv4) and the TCP checksum of `pkt`.
fn checksums_valid(pkt: &[u8], ip_hdr_len: usize) -> bool {
    if ip_hdr_len == IPV4_HDR_LEN && checksum::checksum(&pkt[..IPV4_HDR_LEN]) != 0 {
        return false;
    }
    let sum = pseudo_header(pkt, ip_hdr_len, pkt.len() - ip_hdr_len);
    checksum::fold(checksum::accumulate(sum, &pkt[ip_hdr_len..])) == 0xffff
}

/// Sum of the TCP pseudo-header of `pkt` for a TCP length of `tcp_len` (≤ 65535). The source
/// and destination addresses are adjacent in both IPv4 (12..20) and IPv6 (8..40).
fn pseudo_header(pkt: &[u8], ip_hdr_len: usize, tcp_len: usize) -> u64 {
    let addrs = if ip_hdr_len == IPV4_HDR_LEN {
        &pkt[12..20]
    } else {
        &pkt[8..40]
    };
    checksum::accumulate(0, addrs) + u64::from(PROTO_TCP) + tcp_len as u64
}

/// Rewrites the headers of a coalesced item and writes its virtio-net header.
fn finish(frame: &mut GroFrame, item: &Item) {
    let (start, len) = (frame.start, frame.len);
    let ip_hdr_len = if item.v6 { IPV6_HDR_LEN } else { IPV4_HDR_LEN };
    let tcp_hdr_len = usize::from(item.tcp_hdr_len);
    let pkt = &mut frame.buf[start..start + len];
    // `len <= MAX_PACKET` was checked on every append.
    let gso_type = if item.v6 {
        pkt[4..6].copy_from_slice(&((len - IPV6_HDR_LEN) as u16).to_be_bytes());
        VNET_GSO_TCPV6
    } else {
        pkt[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        pkt[10..12].fill(0);
        let c = checksum::checksum(&pkt[..IPV4_HDR_LEN]);
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
        VNET_GSO_TCPV4
    };
    let partial = checksum::fold(pseudo_header(pkt, ip_hdr_len, len - ip_hdr_len));
    let at = ip_hdr_len + TCP_CSUM_OFFSET;
    pkt[at..at + 2].copy_from_slice(&partial.to_be_bytes());

    let hdr = &mut frame.buf[start - VNET_HDR_LEN..start];
    hdr[0] = VNET_F_NEEDS_CSUM;
    hdr[1] = gso_type;
    hdr[2..4].copy_from_slice(&((ip_hdr_len + tcp_hdr_len) as u16).to_le_bytes());
    hdr[4..6].copy_from_slice(&item.gso_size.to_le_bytes());
    hdr[6..8].copy_from_slice(&(ip_hdr_len as u16).to_le_bytes());
    hdr[8..10].copy_from_slice(&(TCP_CSUM_OFFSET as u16).to_le_bytes());
}

fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

/// What identifies a TCP flow: addresses (IPv4 in the low 32 bits), both ports, IP version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FlowKey {
    src: u128,
    dst: u128,
    /// Source port in the high half, destination port in the low half.
    ports: u32,
    v6: bool,
}

impl FlowKey {
    fn new(src: u128, dst: u128, v6: bool) -> Self {
        FlowKey {
            src,
            dst,
            ports: 0,
            v6,
        }
    }

    fn hash(&self) -> u64 {
        let mut h: u64 = 0x243f_6a88_85a3_08d3;
        let mut mix = |v: u64| h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31);
        mix(self.src as u64 ^ (self.src >> 64) as u64);
        mix(self.dst as u64 ^ (self.dst >> 64) as u64);
        mix(u64::from(self.ports) << 1 | u64::from(self.v6));
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
    tcp_hdr_len: u8,
    ack: u32,
    /// Sequence number the next segment must carry.
    next_seq: u32,
    /// Payload of the first segment; every later one but the last has exactly this size.
    gso_size: u16,
    segments: u16,
    /// The first segment's checksums were checked (done when the first merge is tried).
    verified: bool,
    /// Nothing more may be appended (PSH, short segment, segment cap, or a non-matching packet
    /// of the flow came along).
    closed: bool,
}

/// Most frames per batch (indices are `u16`).
const MAX_FRAMES: usize = 1 << 16;
const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;
const TCP_HDR_LEN: usize = 20;
const TCP_CSUM_OFFSET: usize = 16;
const IPV4_MF: u8 = 0x20;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

#[cfg(test)]
mod tests;
