//! The spoke (NHC) half of the control thread: registrations with the NHSs (failover to the
//! most preferred one registered), and — with shortcuts on — DMVPN phase 3: a Traffic
//! Indication from the hub makes it resolve the destination, other spokes' resolutions for
//! its prefixes are answered directly, and the resulting shortcuts become peers of their own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mgre_plugin::{ControlHooks, ShortcutKind};

use mgre_proto::nhrp::{Resolver, ShortcutChange};
use mgre_proto::wire::nhrp::{Body, NhrpRepr, Operation};
use mgre_proto::{DataplaneConfig, PeerId};

use super::peers::DynamicPeers;
use super::upstream::Upstream;
use super::{ControlCounters, Ctx, Dest, Inbound, Outbox, family_matches};

/// How often shortcut peers' counters are read to tell the resolvers what is in use.
const USAGE_CHECK: Duration = Duration::from_secs(1);

/// What a spoke keeps.
#[derive(Debug)]
pub struct SpokeState {
    /// Registrations with the NHSs.
    pub upstream: Upstream,
    /// IPv4 and/or IPv6 resolvers (empty with shortcuts off).
    pub resolvers: Vec<Resolver>,
    /// One peer per shortcut peer.
    pub shortcuts: DynamicPeers,
    /// Transmitted packets per shortcut peer at the last usage check.
    last_tx: HashMap<PeerId, u64>,
    next_usage_check: Duration,
}

impl SpokeState {
    /// A spoke registering through `clients`, resolving through `resolvers`.
    pub(super) fn new(
        upstream: Upstream,
        resolvers: Vec<Resolver>,
        shortcuts: DynamicPeers,
    ) -> Self {
        SpokeState {
            upstream,
            resolvers,
            shortcuts,
            last_tx: HashMap::new(),
            next_usage_check: Duration::ZERO,
        }
    }

    /// When a timer is next due.
    pub(super) fn next_deadline(&self) -> Option<Duration> {
        let resolvers = self.resolvers.iter().filter_map(|r| r.poll_timeout());
        let usage = (self.shortcuts.len() > 0).then_some(self.next_usage_check);
        self.upstream
            .next_deadline()
            .into_iter()
            .chain(resolvers)
            .chain(usage)
            .min()
    }

    /// Handles one NHRP message (asking the policy plugins, `hooks`, before resolving a
    /// redirected destination); returns whether the endpoint table changed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle(
        &mut self,
        counters: &mut ControlCounters,
        ctx: &Ctx<'_>,
        now: Duration,
        m: &Inbound,
        repr: &NhrpRepr,
        hooks: Option<&mut ControlHooks>,
        out: &mut Outbox,
    ) -> bool {
        let from = m.from.ip();
        let dest = |to: IpAddr| {
            if to == from {
                Dest::Reply(m.from, m.encap)
            } else {
                Dest::Underlay(to)
            }
        };
        if !self.upstream.is_nhs(from) {
            self.shortcuts.seen(m.from, m.encap);
        }
        let resolver = self
            .resolvers
            .iter_mut()
            .find(|r| family_matches(r.config().protocol_address, repr));
        let mut changes = Vec::new();
        match (&repr.body, resolver) {
            (
                Body::Entries {
                    op: Operation::RegistrationReply,
                    ..
                },
                _,
            ) => {
                return self.upstream.handle_reply(counters, now, from, repr);
            }
            (
                Body::Entries {
                    op: Operation::PurgeReply,
                    ..
                },
                _,
            ) => return false,
            (Body::TrafficIndication { packet, .. }, Some(r)) => {
                if let (Some(h), Some((_, dst))) = (hooks, super::hub::packet_addresses(packet))
                    && h.has_shortcut()
                    && !h.shortcut_allowed(
                        Instant::now(),
                        ShortcutKind::Resolution,
                        r.config().protocol_address,
                        dst,
                    )
                {
                    counters.shortcuts_denied += 1;
                    tracing::debug!(%dst, "shortcut denied by policy");
                    return false;
                }
                if let Some(o) = r.handle_traffic_indication(now, from, repr) {
                    tracing::debug!(nhs = %from, "NHRP Traffic Indication: resolving");
                    out.push((o.message, dest(o.to)));
                }
            }
            (
                Body::Entries {
                    op: Operation::ResolutionRequest,
                    ..
                },
                Some(r),
            ) => {
                let (reply, c) = r.handle_resolution_request(now, from, repr);
                if let Some(o) = reply {
                    out.push((o.message, dest(o.to)));
                }
                changes = c;
            }
            (
                Body::Entries {
                    op: Operation::ResolutionReply,
                    ..
                },
                Some(r),
            ) => {
                changes = r.handle_resolution_reply(now, from, repr);
            }
            (
                Body::Entries {
                    op: Operation::PurgeRequest,
                    ..
                },
                Some(r),
            ) => {
                let (reply, c) = r.handle_purge_request(now, from, repr);
                if let Some(o) = reply {
                    out.push((o.message, dest(o.to)));
                }
                changes = c;
            }
            (Body::ErrorIndication { code, .. }, r) => {
                counters.error_indications += 1;
                tracing::debug!(from = %m.from, code, "NHRP Error Indication");
                if let Some(r) = r {
                    r.handle_error_indication(now, from, repr);
                }
                return false;
            }
            _ => {
                counters.unsupported += 1;
                tracing::debug!(from = %m.from, op = repr.op_type(), "NHRP message not handled by this spoke");
                return false;
            }
        }
        self.apply(ctx, &changes)
    }

    /// Runs the timers: registrations and their refreshes, resolution retransmissions,
    /// shortcut expiry and refresh, and usage of shortcut peers. Returns whether the
    /// endpoint table changed.
    pub(super) fn poll(&mut self, ctx: &Ctx<'_>, now: Duration, out: &mut Outbox) -> bool {
        let changed = self.upstream.poll(now, out);
        if now >= self.next_usage_check {
            self.next_usage_check = now + USAGE_CHECK;
            for (addr, id) in self.shortcuts.live().collect::<Vec<_>>() {
                let tx = ctx.peer_counters(id).2;
                if self.last_tx.insert(id, tx).is_some_and(|last| tx > last) {
                    for r in &mut self.resolvers {
                        r.used(now, addr);
                    }
                }
            }
        }
        let mut changes = Vec::new();
        for r in &mut self.resolvers {
            if r.poll_timeout().is_some_and(|t| t <= now) {
                let (sends, c) = r.poll(now);
                for o in sends {
                    out.push((o.message, Dest::Underlay(o.to)));
                }
                changes.extend(c);
            }
        }
        changed | self.apply(ctx, &changes)
    }

    /// The dataplane: configured peers, shortcut peers with their prefixes, and the default
    /// route at the active NHS.
    pub(super) fn snapshot(&self, base: &DataplaneConfig) -> DataplaneConfig {
        let configured: HashMap<IpAddr, PeerId> = base
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.nbma, i as PeerId))
            .collect();
        let shortcuts: Vec<_> = self
            .resolvers
            .iter()
            .flat_map(Resolver::shortcuts)
            .map(|s| (s.prefix, s.nbma))
            .collect();
        let mut cfg = self.shortcuts.snapshot(
            base,
            shortcuts
                .iter()
                .copied()
                .filter(|(_, a)| !configured.contains_key(a)),
        );
        // A shortcut to a configured peer (e.g. the NHS answering for its own LAN) maps
        // straight to that peer.
        cfg.map.extend(
            shortcuts
                .iter()
                .filter_map(|(p, a)| Some((*p, *configured.get(a)?))),
        );
        if let Some(id) = self.upstream.active_peer() {
            cfg.nhs = Some(id);
        }
        cfg
    }

    /// Stops: Purge Requests for the registrations (to the NHSs) and for the answers given
    /// to other spokes (so they drop their shortcuts to this one).
    pub(super) fn shutdown(&mut self, out: &mut Outbox) {
        self.upstream.shutdown(out);
        for r in &mut self.resolvers {
            for o in r.shutdown() {
                out.push((o.message, Dest::Underlay(o.to)));
            }
        }
    }

    fn apply(&mut self, ctx: &Ctx<'_>, changes: &[ShortcutChange]) -> bool {
        if changes.is_empty() {
            return false;
        }
        for c in changes {
            match c {
                ShortcutChange::Added(s) => tracing::info!(
                    prefix = %s.prefix, nbma = %s.nbma, holdtime = s.holding_time, origin = ?s.origin,
                    "NHRP shortcut"
                ),
                ShortcutChange::Refreshed(s) => {
                    tracing::debug!(prefix = %s.prefix, nbma = %s.nbma, "NHRP shortcut refreshed")
                }
                ShortcutChange::Removed { shortcut, cause } => tracing::info!(
                    prefix = %shortcut.prefix, nbma = %shortcut.nbma, ?cause,
                    "NHRP shortcut removed"
                ),
            }
        }
        let nhs: Vec<IpAddr> = ctx.dp.config().peers.iter().map(|p| p.nbma).collect();
        let configured = |a: IpAddr| nhs[..ctx.static_peers].contains(&a);
        let counters = |id: PeerId| ctx.peer_counters(id);
        self.shortcuts
            .apply_shortcuts(changes, ctx.template, &counters, &configured)
    }
}
