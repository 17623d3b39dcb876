//! The hub (NHS) half of the control thread: registrations and purges into the
//! registration tables and dynamic peers, resolution requests answered or forwarded to the
//! registered owner (DMVPN phase 3), and Traffic Indications for hairpinned traffic. A
//! regional hub is also a client of core hubs (hierarchical DMVPN): it registers its
//! region's prefixes with them, routes what it has no registration for to the active one,
//! and passes resolution requests it cannot answer up to it.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mgre_plugin::{Admission, ControlHooks, ShortcutKind};

use mgre_proto::nhrp::resolution::requester_address;
use mgre_proto::nhrp::{
    Change, FLAG_UNIQUE, RegistrationServer, RemovalCause, ResolutionOutcome, requested_prefixes,
    traffic_indication,
};
use mgre_proto::wire::nhrp::{Body, NhrpRepr, Operation};
use mgre_proto::{DataplaneConfig, PeerId};

use super::peers::{DynamicPeers, underlay};
use super::upstream::Upstream;
use super::{ControlCounters, Ctx, Dest, Inbound, Outbox, family_matches, log_changes};

/// What a hub keeps.
#[derive(Debug)]
pub struct HubState {
    /// IPv4 and/or IPv6 registration tables.
    pub servers: Vec<RegistrationServer>,
    /// One peer per registered spoke.
    pub peers: DynamicPeers,
    /// Whether hairpinned traffic triggers Traffic Indications.
    pub redirect: bool,
    /// Registrations with core hubs (none unless `[[nhrp.nhs]]` is configured).
    pub upstream: Upstream,
}

impl HubState {
    /// When the next entry expires or a registration upstream is due.
    pub(super) fn next_deadline(&self) -> Option<Duration> {
        let servers = self.servers.iter().filter_map(|s| s.poll_timeout());
        servers.chain(self.upstream.next_deadline()).min()
    }

    /// Handles one NHRP message, asking the policy plugins (`hooks`) about registrations
    /// and resolutions; returns whether the endpoint table changed.
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
        let op = match &repr.body {
            Body::Entries {
                op: Operation::RegistrationReply,
                ..
            } => return self.upstream.handle_reply(counters, now, from, repr),
            Body::Entries {
                op: Operation::PurgeReply,
                ..
            } => return false,
            Body::Entries { op, .. } => *op,
            Body::ErrorIndication { code, .. } => {
                counters.error_indications += 1;
                tracing::debug!(from = %m.from, code, "NHRP Error Indication");
                return false;
            }
            Body::TrafficIndication { .. } => {
                counters.unsupported += 1;
                return false;
            }
        };
        let Some(server) = self
            .servers
            .iter_mut()
            .find(|s| family_matches(s.config().protocol_address, repr))
        else {
            counters.unsupported += 1;
            return false;
        };
        let dest = |to: IpAddr| {
            if to == from {
                Dest::Reply(m.from, m.encap)
            } else {
                Dest::Underlay(to)
            }
        };
        let mut attributes = None;
        let outcome = match op {
            Operation::RegistrationRequest => {
                let mut req = Cow::Borrowed(repr);
                if let Some(h) = hooks.filter(|h| h.has_admission()) {
                    match h.admit_registration(Instant::now(), &registration(repr, from)) {
                        Admission::Refuse(r) => {
                            tracing::warn!(
                                from = %m.from, code = r.code, reason = %r.reason,
                                "NHRP registration refused by policy"
                            );
                            if let Some(reply) = server.refuse(repr, r.code) {
                                out.push((reply, Dest::Reply(m.from, m.encap)));
                            }
                            return false;
                        }
                        Admission::Accept(a) => {
                            if let Some(cap) = a.holding_time_cap {
                                cap_holding_time(req.to_mut(), cap);
                            }
                            attributes = Some((a.multicast, a.qos_group.map(|q| q.name)));
                        }
                    }
                }
                server.handle_request(now, from, &req)
            }
            Operation::PurgeRequest => server.handle_purge(now, from, repr),
            Operation::ResolutionRequest => {
                if let (Some(h), Some(src), Some(dst)) = (hooks, repr.src_proto, repr.dst_proto)
                    && h.has_shortcut()
                    && !h.shortcut_allowed(Instant::now(), ShortcutKind::Resolution, src, dst)
                {
                    counters.shortcuts_denied += 1;
                    tracing::debug!(%src, %dst, "resolution denied by policy");
                    let to = requester_address(repr, from);
                    out.push((server.negative_resolution_reply(repr), dest(to)));
                    return false;
                }
                let mut outcome = server.handle_resolution_request(now, from, repr);
                // Not ours: up to the core hub, unless that is where it came from.
                if let ResolutionOutcome::Unresolved = outcome
                    && let Some(up) = self.upstream.active_for(server.config().protocol_address)
                    && !self.upstream.is_nhs(from)
                {
                    outcome = server.forward_upstream(from, repr, up);
                    if let ResolutionOutcome::Forward { .. } = outcome {
                        counters.resolutions_upstream += 1;
                        tracing::debug!(nhs = %up, dst = ?repr.dst_proto, "resolution passed upstream");
                    }
                }
                let (message, to) = match outcome {
                    ResolutionOutcome::Forward { to, message } => {
                        if !self.upstream.is_nhs(to) {
                            counters.resolutions_forwarded += 1;
                        }
                        (message, to)
                    }
                    ResolutionOutcome::Reply { to, message } => {
                        counters.resolutions_answered += 1;
                        (message, to)
                    }
                    ResolutionOutcome::Error { to, message } => {
                        counters.resolution_errors += 1;
                        (message, to)
                    }
                    ResolutionOutcome::Unresolved => {
                        counters.resolutions_unresolved += 1;
                        let to = requester_address(repr, from);
                        (server.negative_resolution_reply(repr), to)
                    }
                    ResolutionOutcome::Ignored => {
                        counters.unsupported += 1;
                        return false;
                    }
                };
                out.push((message, dest(to)));
                return false;
            }
            _ => {
                counters.unsupported += 1;
                tracing::debug!(from = %m.from, op = repr.op_type(), "NHRP message not handled by a hub");
                return false;
            }
        };
        self.peers.seen(m.from, m.encap);
        log_changes(&outcome.changes);
        let changed = !outcome.changes.is_empty();
        if changed {
            let counters = |id: PeerId| ctx.peer_counters(id);
            self.peers.apply(&outcome.changes, ctx.template, &counters);
        }
        if let Some((multicast, qos_group)) = attributes {
            self.peers.set_attributes(from, multicast, qos_group);
        }
        if let Some(reply) = outcome.reply {
            log_refusal(&reply, m);
            out.push((reply, Dest::Reply(m.from, m.encap)));
        }
        changed
    }

    /// A worker hairpinned `packet` (its first bytes) from peer `ingress` and the redirect
    /// limiter let a Traffic Indication through: tell the sending spoke to resolve the
    /// destination itself.
    pub(super) fn hairpinned(
        &mut self,
        counters: &mut ControlCounters,
        ctx: &Ctx<'_>,
        ingress: PeerId,
        packet: &[u8],
        hooks: Option<&mut ControlHooks>,
        out: &mut Outbox,
    ) {
        // Traffic from a core hub is not redirected: the core hub redirects its own.
        if !self.redirect || self.upstream.is_nhs_peer(ingress) {
            return;
        }
        let Some(peer) = ctx
            .dp
            .peers()
            .get(ingress as usize)
            .filter(|p| !p.is_vacant())
        else {
            return;
        };
        let Some((src, dst)) = packet_addresses(packet) else {
            return;
        };
        if let Some(h) = hooks
            && h.has_shortcut()
            && !h.shortcut_allowed(Instant::now(), ShortcutKind::Redirect, src, dst)
        {
            counters.shortcuts_denied += 1;
            return;
        }
        let Some(server) = self
            .servers
            .iter()
            .find(|s| s.config().protocol_address.is_ipv4() == src.is_ipv4())
        else {
            return;
        };
        let own = server.config();
        let message = traffic_indication(
            own.nbma_address,
            own.protocol_address,
            src,
            packet,
            own.secret.as_deref(),
        );
        counters.redirects += 1;
        tracing::debug!(spoke = %peer.nbma, %src, "NHRP Traffic Indication (redirect)");
        out.push((message, Dest::Underlay(peer.nbma)));
    }

    /// Expires entries whose holding time ran out and sends the registrations upstream
    /// that are due; returns whether the endpoint table or the active core hub changed.
    pub(super) fn poll(&mut self, ctx: &Ctx<'_>, now: Duration, out: &mut Outbox) -> bool {
        let mut changed = self.upstream.poll(now, out);
        for s in &mut self.servers {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                let changes: Vec<Change> = s
                    .expire(now)
                    .into_iter()
                    .map(|registration| Change::Removed {
                        registration,
                        cause: RemovalCause::Expired,
                    })
                    .collect();
                log_changes(&changes);
                let counters = |id: PeerId| ctx.peer_counters(id);
                self.peers.apply(&changes, ctx.template, &counters);
                changed |= !changes.is_empty();
            }
        }
        changed
    }

    /// The dataplane: configured peers plus one per registered spoke, its prefixes mapped,
    /// and the default route at the active core hub if any.
    pub(super) fn snapshot(&self, base: &DataplaneConfig) -> DataplaneConfig {
        let entries = self
            .servers
            .iter()
            .flat_map(|s| s.entries())
            .map(|r| (r.prefix, underlay(r)));
        let mut cfg = self.peers.snapshot(base, entries);
        if let Some(id) = self.upstream.active_peer() {
            cfg.nhs = Some(id);
        }
        cfg
    }

    /// Stops: Purge Requests withdrawing the registrations with core hubs.
    pub(super) fn shutdown(&mut self, out: &mut Outbox) {
        self.upstream.shutdown(out);
    }
}

/// The source and destination addresses of an IPv4 or IPv6 packet.
pub(super) fn packet_addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 => {
            let s: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some((IpAddr::from(s), IpAddr::from(d)))
        }
        6 => {
            let s: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some((IpAddr::from(s), IpAddr::from(d)))
        }
        _ => None,
    }
}

/// What the admission hook is told about a Registration Request from underlay `from`.
fn registration(req: &NhrpRepr, from: IpAddr) -> mgre_plugin::Registration {
    let (flags, holding_time) = match &req.body {
        Body::Entries { flags, cies, .. } => (*flags, cies.first().map_or(0, |c| c.holding_time)),
        _ => (0, 0),
    };
    let nbma = req.src_nbma.unwrap_or(from);
    mgre_plugin::Registration {
        prefixes: requested_prefixes(req)
            .iter()
            .filter_map(|p| mgre_sdk::net::Prefix::new(p.addr(), p.len()).ok())
            .collect(),
        nbma,
        source: from,
        nat: nbma != from,
        holding_time,
        unique: flags & FLAG_UNIQUE != 0,
    }
}

/// Lowers the holding time every CIE of `req` asks for to at most `cap` seconds (a CIE
/// asking for 0, "the server's maximum", gets `cap`).
fn cap_holding_time(req: &mut NhrpRepr, cap: u16) {
    if let Body::Entries { cies, .. } = &mut req.body {
        for c in cies {
            c.holding_time = match c.holding_time {
                0 => cap,
                t => t.min(cap),
            };
        }
    }
}

fn log_refusal(reply: &NhrpRepr, m: &Inbound) {
    if let Body::Entries { cies, .. } = &reply.body
        && let Some(c) = cies.iter().find(|c| c.code != 0)
    {
        tracing::warn!(from = %m.from, code = c.code, "NHRP registration refused");
    }
}
