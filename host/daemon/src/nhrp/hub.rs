//! The hub (NHS) half of the control thread: registrations and purges into the
//! registration tables and dynamic peers, resolution requests answered or forwarded to the
//! registered owner (DMVPN phase 3), and Traffic Indications for hairpinned traffic.

use std::net::IpAddr;
use std::time::Duration;

use mgre_proto::nhrp::resolution::requester_address;
use mgre_proto::nhrp::{
    Change, RegistrationServer, RemovalCause, ResolutionOutcome, traffic_indication,
};
use mgre_proto::wire::nhrp::{Body, NhrpRepr, Operation};
use mgre_proto::{DataplaneConfig, PeerId};

use super::peers::{DynamicPeers, underlay};
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
}

impl HubState {
    /// When the next entry expires.
    pub(super) fn next_deadline(&self) -> Option<Duration> {
        self.servers.iter().filter_map(|s| s.poll_timeout()).min()
    }

    /// Handles one NHRP message; returns whether the endpoint table changed.
    pub(super) fn handle(
        &mut self,
        counters: &mut ControlCounters,
        ctx: &Ctx<'_>,
        now: Duration,
        m: &Inbound,
        repr: &NhrpRepr,
        out: &mut Outbox,
    ) -> bool {
        let op = match &repr.body {
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
        let from = m.from.ip();
        let dest = |to: IpAddr| {
            if to == from {
                Dest::Reply(m.from, m.encap)
            } else {
                Dest::Underlay(to)
            }
        };
        let outcome = match op {
            Operation::RegistrationRequest => server.handle_request(now, from, repr),
            Operation::PurgeRequest => server.handle_purge(now, from, repr),
            Operation::ResolutionRequest => {
                let (message, to) = match server.handle_resolution_request(now, from, repr) {
                    ResolutionOutcome::Forward { to, message } => {
                        counters.resolutions_forwarded += 1;
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
        out: &mut Outbox,
    ) {
        if !self.redirect {
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
        let Some(src) = packet_source(packet) else {
            return;
        };
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

    /// Expires entries whose holding time ran out; returns whether any went.
    pub(super) fn poll(&mut self, ctx: &Ctx<'_>, now: Duration) -> bool {
        let mut changed = false;
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

    /// The dataplane: configured peers plus one per registered spoke, its prefixes mapped.
    pub(super) fn snapshot(&self, base: &DataplaneConfig) -> DataplaneConfig {
        let entries = self
            .servers
            .iter()
            .flat_map(|s| s.entries())
            .map(|r| (r.prefix, underlay(r)));
        self.peers.snapshot(base, entries)
    }
}

/// The source address of an IPv4 or IPv6 packet.
fn packet_source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        6 => {
            let b: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

fn log_refusal(reply: &NhrpRepr, m: &Inbound) {
    if let Body::Entries { cies, .. } = &reply.body
        && let Some(c) = cies.iter().find(|c| c.code != 0)
    {
        tracing::warn!(from = %m.from, code = c.code, "NHRP registration refused");
    }
}
