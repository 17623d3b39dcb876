//! A point-in-time view of the running tunnel for `mgre show` and the metrics scrape:
//! counters summed across workers, joined with the peer table.

use std::sync::Arc;

use mgre_proto::stats::Traffic;
use mgre_proto::{Dataplane, DropReason, WorkerStats};
use serde::Serialize;

/// What the control socket and the metrics endpoint read.
pub struct Shared {
    /// The forwarding state (republished as NHRP learns peers).
    pub dataplane: Arc<arc_swap::ArcSwap<Dataplane>>,
    /// Number of configured peers (the rest are learnt through NHRP).
    pub static_peers: usize,
    /// NHRP state, when configured.
    pub nhrp: Option<Arc<std::sync::Mutex<crate::nhrp::NhrpState>>>,
    /// One counter set per dataplane worker.
    pub workers: Vec<Arc<WorkerStats>>,
    /// TUN interface name.
    pub tun_name: String,
    /// The config file (re-read by plugin reloads).
    pub config_file: std::path::PathBuf,
    /// Policy plugins, when configured.
    pub plugins: Option<Arc<mgre_plugin::PluginManager>>,
    /// Whether the TUN runs with the virtio-net header (TSO/GRO), and with USO as well.
    pub tun_offload: (bool, bool),
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("tun_name", &self.tun_name)
            .field("workers", &self.workers.len())
            .finish()
    }
}

/// Packets and bytes.
#[derive(Debug, Serialize, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// `mgre show stats`.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// GRE packets accepted from the underlay.
    pub rx: Count,
    /// GRE packets sent to the underlay.
    pub tx: Count,
    /// Packets read from the TUN.
    pub tun_rx: Count,
    /// Packets written to the TUN.
    pub tun_tx: Count,
    /// Hub hairpin forwarding.
    pub hairpin: Count,
    /// NHRP packets seen.
    pub nhrp: u64,
    /// SYNs whose MSS was clamped.
    pub mss_clamped: u64,
    /// ICMP too-big errors generated.
    pub icmp_too_big: u64,
    /// Dataplane workers.
    pub workers: usize,
    /// Segmentation/coalescing offload state and activity.
    pub offload: Offload,
    /// Heap allocations made by the dataplane workers' loops (zero per packet by design;
    /// plugin calls allocate once per call).
    pub heap_allocations: u64,
    /// Drops by reason, every reason present.
    pub drops: serde_json::Map<String, serde_json::Value>,
}

/// Offload state and counters: whether the TUN offloads, and how often the super-packet paths
/// were taken.
#[derive(Debug, Serialize, Default, Clone, Copy, PartialEq, Eq)]
pub struct Offload {
    /// TUN virtio-net header with TSO and checksum offload on.
    pub tun_tso: bool,
    /// TUN UDP segmentation offload (USO) on as well.
    pub tun_uso: bool,
    /// TUN reads that brought a super-packet (split into segments).
    pub tun_gso_reads: u64,
    /// UDP receives that brought a coalesced train of datagrams.
    pub udp_gro_trains: u64,
    /// UDP sends that carried a train of datagrams in one message.
    pub udp_gso_trains: u64,
}

/// One row of `mgre show peers`.
#[derive(Debug, Serialize)]
pub struct PeerRow {
    /// Peer name.
    pub name: String,
    /// Underlay address.
    pub nbma: String,
    /// Encapsulation.
    pub encap: &'static str,
    /// GRE key.
    pub key: Option<u32>,
    /// Overlay prefixes behind the peer.
    pub map: Vec<String>,
    /// Inner MTU of the path.
    pub mtu: u16,
    /// Packets received from the peer.
    pub rx_packets: u64,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Packets sent to the peer.
    pub tx_packets: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
}

impl Shared {
    fn sum(&self, pick: impl Fn(&WorkerStats) -> &Traffic) -> Count {
        self.workers.iter().fold(Count::default(), |c, w| {
            let t = pick(w);
            Count {
                packets: c.packets + t.packets.get(),
                bytes: c.bytes + t.bytes.get(),
            }
        })
    }

    /// Total drops under `reason` across workers.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.workers.iter().map(|w| w.drops(reason)).sum()
    }

    /// Summed counters.
    pub fn stats(&self) -> Stats {
        Stats {
            rx: self.sum(|w| &w.rx),
            tx: self.sum(|w| &w.tx),
            tun_rx: self.sum(|w| &w.tun_rx),
            tun_tx: self.sum(|w| &w.tun_tx),
            hairpin: self.sum(|w| &w.hairpin),
            nhrp: self.workers.iter().map(|w| w.nhrp.get()).sum(),
            mss_clamped: self.workers.iter().map(|w| w.mss_clamped.get()).sum(),
            icmp_too_big: self.workers.iter().map(|w| w.icmp_too_big.get()).sum(),
            heap_allocations: self.workers.iter().map(|w| w.heap_allocations.get()).sum(),
            workers: self.workers.len(),
            offload: Offload {
                tun_tso: self.tun_offload.0,
                tun_uso: self.tun_offload.1,
                tun_gso_reads: self.workers.iter().map(|w| w.tun_gso_reads.get()).sum(),
                udp_gro_trains: self.workers.iter().map(|w| w.udp_gro_trains.get()).sum(),
                udp_gso_trains: self.workers.iter().map(|w| w.udp_gso_trains.get()).sum(),
            },
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.as_str().to_owned(), self.drops(*r).into()))
                .collect(),
        }
    }

    /// The peer table with per-peer counters (vacant slots of departed NHRP peers left out).
    pub fn peers(&self) -> Vec<PeerRow> {
        let dp = self.dataplane.load();
        let nhrp = self
            .nhrp
            .as_ref()
            .map(|n| n.lock().unwrap_or_else(|p| p.into_inner()));
        dp.peers()
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_vacant())
            .map(|(i, p)| {
                let id = i as u32;
                let (brp, brb, btp, btb) = match nhrp.as_deref().map(|n| &n.node) {
                    Some(crate::nhrp::Node::Hub(h)) => h.peers.baseline(id),
                    _ => (0, 0, 0, 0),
                };
                let rx = self.sum_peer(id, true);
                let tx = self.sum_peer(id, false);
                let rx = Count {
                    packets: rx.packets.saturating_sub(brp),
                    bytes: rx.bytes.saturating_sub(brb),
                };
                let tx = Count {
                    packets: tx.packets.saturating_sub(btp),
                    bytes: tx.bytes.saturating_sub(btb),
                };
                PeerRow {
                    name: p.name.clone(),
                    nbma: p.nbma.to_string(),
                    encap: p.encap.as_str(),
                    key: p.key,
                    map: dp
                        .config()
                        .map
                        .iter()
                        .filter(|(_, peer)| *peer == id)
                        .map(|(pr, _)| pr.to_string())
                        .collect(),
                    mtu: dp.peer_mtu(id),
                    rx_packets: rx.packets,
                    rx_bytes: rx.bytes,
                    tx_packets: tx.packets,
                    tx_bytes: tx.bytes,
                }
            })
            .collect()
    }

    fn sum_peer(&self, id: u32, rx: bool) -> Count {
        peer_count(&self.workers, id, rx)
    }
}

/// Peer `id`'s received (`rx`) or sent traffic summed over the workers' counters.
pub fn peer_count(workers: &[Arc<WorkerStats>], id: u32, rx: bool) -> Count {
    workers
        .iter()
        .filter_map(|w| w.peer(id))
        .fold(Count::default(), |c, p| {
            let t = if rx { &p.rx } else { &p.tx };
            Count {
                packets: c.packets + t.packets.get(),
                bytes: c.bytes + t.bytes.get(),
            }
        })
}
