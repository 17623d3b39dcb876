//! The worker's policy stage: for each batch, packets whose flow has a cached verdict get it
//! from the flow cache; the rest are written as ABI packet slots and run through the plugin
//! chains in one call per hook, and the merged verdicts become dataplane [`Policy`]s (cached
//! for as long as the plugins allowed, keyed by the plugin generation).
//!
//! Built on the worker thread (plugin instances are per worker); nothing here allocates per
//! packet or per batch. A batch with flow-cache misses costs what `WorkerPlugins::run` costs:
//! one allocation per plugin and hook, in wasmtime (`host/plugin/tests/no_alloc.rs`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use mgre_io::FrameBatch;
use mgre_plugin::{PluginManager, PolicyVerdict, WorkerPlugins};
use mgre_proto::flowcache::{FlowCache, FlowKey};
use mgre_proto::policy::ports;
use mgre_proto::wire::ip;
use mgre_proto::{Action, Dataplane, Direction, Inspected, OuterMark, Policy};
use mgre_sdk::abi::{self, PACKET_SLOT, PacketMeta, RouteAction};

/// Flows remembered per worker.
const FLOW_CACHE_SLOTS: usize = 1 << 16;

/// One worker's plugins, flow cache and batch buffers.
pub struct PolicyStage {
    manager: Arc<PluginManager>,
    plugins: WorkerPlugins,
    cache: FlowCache<Policy>,
    slots: Vec<u8>,
    verdicts: Vec<PolicyVerdict>,
    /// Frame index and flow key of each slot in use.
    misses: Vec<(usize, FlowKey)>,
    epoch: Instant,
}

impl PolicyStage {
    /// Instantiates the manager's current plugins for this worker (call on the worker thread).
    pub fn new(manager: Arc<PluginManager>, batch: usize) -> Self {
        let plugins = WorkerPlugins::new(manager.current());
        PolicyStage {
            manager,
            plugins,
            cache: FlowCache::new(FLOW_CACHE_SLOTS),
            slots: vec![0; batch * PACKET_SLOT],
            verdicts: vec![PolicyVerdict::default(); batch],
            misses: Vec::with_capacity(batch),
            epoch: Instant::now(),
        }
    }

    /// Switches to a newly published plugin generation, if any (between batches: batches in
    /// flight finish on the generation they started with).
    pub fn refresh(&mut self) {
        self.plugins.refresh(&self.manager.published().load_full());
    }

    /// Fills `out[i]` for every frame `i` with `items[i] = Some(_)`.
    pub fn decide(
        &mut self,
        dp: &Dataplane,
        frames: &FrameBatch,
        items: &[Option<Inspected>],
        out: &mut [Policy],
    ) {
        if self.plugins.set().is_empty() {
            out.iter_mut().for_each(|p| *p = Policy::DEFAULT);
            return;
        }
        let now = Instant::now();
        let now_ms = now.duration_since(self.epoch).as_millis() as u64;
        let generation = self.plugins.generation();
        self.misses.clear();
        for (i, item) in items.iter().enumerate() {
            let Some(p) = item else { continue };
            let pkt = &frames.frame(i)[p.start..p.start + p.len];
            let key = flow_key(pkt, p);
            if let Some(policy) = self.cache.get(&key, now_ms, generation) {
                out[i] = policy;
                continue;
            }
            let k = self.misses.len();
            let slot: &mut [u8; PACKET_SLOT] = (&mut self.slots
                [k * PACKET_SLOT..(k + 1) * PACKET_SLOT])
                .try_into()
                .expect("slot is PACKET_SLOT bytes");
            let gre_key = p.ingress.and_then(|id| dp.peers().get(id as usize)?.key);
            packet_meta(pkt, p, key, gre_key).write(slot);
            self.misses.push((i, key));
        }
        let m = self.misses.len();
        if m == 0 {
            return;
        }
        self.plugins.run(
            now,
            &mut self.slots[..m * PACKET_SLOT],
            &mut self.verdicts[..m],
        );
        for (k, (i, key)) in self.misses.iter().enumerate() {
            let v = &self.verdicts[k];
            let policy = to_policy(v);
            out[*i] = policy;
            if !v.failed_closed {
                self.cache
                    .insert(*key, policy, now_ms, v.ttl_ms, generation);
            }
        }
    }
}

/// Maps merged plugin verdicts to what the dataplane applies.
fn to_policy(v: &PolicyVerdict) -> Policy {
    let action = match v.route {
        RouteAction::Default => Action::Default,
        RouteAction::ViaHub => Action::ViaNhs,
        RouteAction::Peer(id) => Action::Peer(u32::from(id)),
        RouteAction::Drop => Action::Drop,
        RouteAction::Local => Action::Local,
    };
    let m = &v.mark;
    let marked = m.inner_dscp.is_some() || m.outer_dscp.is_some() || m.outer_ecn.is_some();
    Policy {
        action,
        inner_dscp: m.inner_dscp,
        outer: marked.then_some(OuterMark {
            dscp: m.outer_dscp,
            ecn: m.outer_ecn,
        }),
        priority: m.priority,
        fail_closed: v.failed_closed,
    }
}

fn flow_key(pkt: &[u8], p: &Inspected) -> FlowKey {
    let (src_port, dst_port) = ports(pkt, &p.meta);
    FlowKey {
        src: p.meta.src,
        dst: p.meta.dst,
        src_port,
        dst_port,
        protocol: p.meta.protocol,
        direction: direction_code(p.direction),
        ingress: p.ingress.map_or(abi::NO_PEER, |id| id as u16),
        dscp: ip::traffic_class(pkt, &p.meta) >> 2,
    }
}

fn packet_meta(pkt: &[u8], p: &Inspected, key: FlowKey, gre_key: Option<u32>) -> PacketMeta {
    let tcp_flags = match (p.meta.protocol, p.meta.l4_offset) {
        (ip::PROTO_TCP, Some(o)) => pkt.get(o + 13).copied().unwrap_or(0),
        _ => 0,
    };
    PacketMeta {
        direction: match p.direction {
            Direction::Outbound => abi::Direction::Outbound,
            Direction::Inbound => abi::Direction::Inbound,
            Direction::Transit => abi::Direction::Transit,
        },
        protocol: p.meta.protocol,
        traffic_class: ip::traffic_class(pkt, &p.meta),
        src_port: key.src_port,
        dst_port: key.dst_port,
        length: p.len.min(usize::from(u16::MAX)) as u16,
        tcp_flags,
        later_fragment: p.meta.l4_offset.is_none(),
        dont_fragment: p.meta.dont_fragment,
        ingress_peer: p.ingress.map(|id| id as u16),
        egress_peer: p.egress.map(|id| id as u16),
        gre_key,
        class: 0,
        src: IpAddr::from(p.meta.src),
        dst: IpAddr::from(p.meta.dst),
    }
}

fn direction_code(d: Direction) -> u8 {
    match d {
        Direction::Outbound => 0,
        Direction::Inbound => 1,
        Direction::Transit => 2,
    }
}
