//! Dataplane counters: packets and bytes per direction and per peer, and drops by reason.
//!
//! Each worker thread owns one [`WorkerStats`] and is its only writer, so a counter update is
//! a relaxed load and store (no locked instruction); readers (the metrics scrape, `mgre show`)
//! load the values at any time and sum across workers. Never share one `WorkerStats` between
//! two writing threads.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why the dataplane dropped a packet. Every drop is counted under exactly one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Underlay packet shorter than its headers announce.
    Truncated,
    /// GRE version field not 0.
    BadVersion,
    /// GRE routing bit set.
    RoutingPresent,
    /// GRE reserved bits 4–5 set.
    ReservedBits,
    /// GRE checksum present and wrong.
    BadChecksum,
    /// GRE key absent, present or different from the one configured for the peer.
    KeyMismatch,
    /// Underlay source is not a configured peer.
    UnknownPeer,
    /// GRE sequence number not newer than the last one accepted from the peer.
    OutOfSequence,
    /// GRE protocol type other than IPv4, IPv6 or NHRP.
    UnsupportedProtocol,
    /// Inner packet not a well-formed IPv4/IPv6 packet, or not of the announced type.
    InnerMalformed,
    /// No peer for the destination and no NHS to default to.
    NoRoute,
    /// Hop limit exhausted on the hub's hairpin path.
    TtlExpired,
    /// Inner packet larger than the path MTU with DF (ICMP error sent where allowed).
    TooBig,
    /// The kernel refused to send the packet.
    TxError,
    /// NHRP message received; the control path does not speak NHRP yet.
    NhrpUnhandled,
    /// A policy plugin decided to drop the packet.
    PolicyDrop,
    /// A fail-closed policy plugin failed (trap, deadline, quarantine) on the packet's batch.
    PluginFailClosed,
    /// A TUN super-packet whose virtio-net header or offsets could not be split.
    OffloadInvalid,
}

impl DropReason {
    /// Every reason, in display order.
    pub const ALL: [DropReason; 18] = [
        DropReason::Truncated,
        DropReason::BadVersion,
        DropReason::RoutingPresent,
        DropReason::ReservedBits,
        DropReason::BadChecksum,
        DropReason::KeyMismatch,
        DropReason::UnknownPeer,
        DropReason::OutOfSequence,
        DropReason::UnsupportedProtocol,
        DropReason::InnerMalformed,
        DropReason::NoRoute,
        DropReason::TtlExpired,
        DropReason::TooBig,
        DropReason::TxError,
        DropReason::NhrpUnhandled,
        DropReason::PolicyDrop,
        DropReason::PluginFailClosed,
        DropReason::OffloadInvalid,
    ];

    /// Stable kebab-case label used in metrics and `mgre show stats`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadVersion => "bad-version",
            DropReason::RoutingPresent => "routing-present",
            DropReason::ReservedBits => "reserved-bits",
            DropReason::BadChecksum => "bad-checksum",
            DropReason::KeyMismatch => "key-mismatch",
            DropReason::UnknownPeer => "unknown-peer",
            DropReason::OutOfSequence => "out-of-sequence",
            DropReason::UnsupportedProtocol => "unsupported-protocol",
            DropReason::InnerMalformed => "inner-malformed",
            DropReason::NoRoute => "no-route",
            DropReason::TtlExpired => "ttl-expired",
            DropReason::TooBig => "too-big",
            DropReason::TxError => "tx-error",
            DropReason::NhrpUnhandled => "nhrp-unhandled",
            DropReason::PolicyDrop => "policy-drop",
            DropReason::PluginFailClosed => "plugin-fail-closed",
            DropReason::OffloadInvalid => "offload-invalid",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// A monotonically increasing counter with a single writer (see the module doc).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker thread may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Sets the value (for a count kept elsewhere and published). Only the owner may call this.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Packets and bytes in one direction.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Packets.
    pub packets: Counter,
    /// Bytes (inner packet bytes for TUN directions, GRE packet bytes for the underlay).
    pub bytes: Counter,
}

impl Traffic {
    /// Counts one packet of `len` bytes.
    #[inline]
    pub fn count(&self, len: usize) {
        self.packets.add(1);
        self.bytes.add(len as u64);
    }
}

/// Traffic exchanged with one peer.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Accepted from the peer.
    pub rx: Traffic,
    /// Sent to the peer.
    pub tx: Traffic,
}

/// All counters of one dataplane worker.
#[derive(Debug)]
pub struct WorkerStats {
    /// Accepted GRE packets from the underlay.
    pub rx: Traffic,
    /// GRE packets sent to the underlay.
    pub tx: Traffic,
    /// Packets read from the TUN.
    pub tun_rx: Traffic,
    /// Packets written to the TUN.
    pub tun_tx: Traffic,
    /// Hub: packets re-encapsulated to another spoke without touching the TUN.
    pub hairpin: Traffic,
    /// NHRP packets handed to the control path.
    pub nhrp: Counter,
    /// TCP SYNs whose MSS was lowered.
    pub mss_clamped: Counter,
    /// ICMP too-big errors generated.
    pub icmp_too_big: Counter,
    /// Offload: TUN reads that brought a super-packet (split into segments in userspace).
    pub tun_gso_reads: Counter,
    /// Offload: UDP receives that brought a coalesced train of datagrams (UDP GRO).
    pub udp_gro_trains: Counter,
    /// Offload: UDP sends that carried a train of datagrams in one message (UDP GSO).
    pub udp_gso_trains: Counter,
    /// Heap allocations the worker thread made since it started (published by the I/O shell,
    /// which can count them; the fast path is meant to make none per packet).
    pub heap_allocations: Counter,
    drops: [Counter; DropReason::ALL.len()],
    peers: Box<[PeerStats]>,
}

impl WorkerStats {
    /// Counters for a worker serving `peers` peers.
    pub fn new(peers: usize) -> Self {
        WorkerStats {
            rx: Traffic::default(),
            tx: Traffic::default(),
            tun_rx: Traffic::default(),
            tun_tx: Traffic::default(),
            hairpin: Traffic::default(),
            nhrp: Counter::default(),
            mss_clamped: Counter::default(),
            icmp_too_big: Counter::default(),
            tun_gso_reads: Counter::default(),
            udp_gro_trains: Counter::default(),
            udp_gso_trains: Counter::default(),
            heap_allocations: Counter::default(),
            drops: Default::default(),
            peers: (0..peers).map(|_| PeerStats::default()).collect(),
        }
    }

    /// Counts one drop.
    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason.index()].add(1);
    }

    /// Drops counted under `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].get()
    }

    /// Counters of peer `id`; `None` for an id this worker was not sized for.
    #[inline]
    pub fn peer(&self, id: u32) -> Option<&PeerStats> {
        self.peers.get(id as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_indexed_in_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(
                DropReason::ALL
                    .iter()
                    .filter(|o| o.as_str() == r.as_str())
                    .count(),
                1
            );
        }
    }

    #[test]
    fn counts() {
        let s = WorkerStats::new(2);
        s.count_drop(DropReason::KeyMismatch);
        s.count_drop(DropReason::KeyMismatch);
        s.peer(1).unwrap().tx.count(100);
        assert_eq!(s.drops(DropReason::KeyMismatch), 2);
        assert_eq!(s.drops(DropReason::Truncated), 0);
        assert_eq!(s.peer(1).unwrap().tx.bytes.get(), 100);
        assert!(s.peer(2).is_none());
    }
}
