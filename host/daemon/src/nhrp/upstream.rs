//! Registrations with the NHSs a node is a client of: a spoke's hubs, or a regional hub's
//! core hubs (hierarchical DMVPN). Refresh, retry, priority failover and the purge on
//! shutdown are the sans-IO [`RegistrationClient`]s'; this keeps them per overlay family
//! and knows which configured peer each NHS is.

use std::net::IpAddr;
use std::time::Duration;

use mgre_proto::PeerId;
use mgre_proto::nhrp::{NhsStatus, RegistrationClient, ReplyOutcome};
use mgre_proto::wire::nhrp::NhrpRepr;

use super::{ControlCounters, Dest, Outbox, family_matches};

/// A node's registrations with its NHSs (none on a hub without `[[nhrp.nhs]]`).
#[derive(Debug, Default)]
pub struct Upstream {
    /// IPv4 and/or IPv6 registration clients.
    pub clients: Vec<RegistrationClient>,
    /// Peer id of each NHS, by underlay address.
    pub nhs_peers: Vec<(IpAddr, PeerId)>,
}

impl Upstream {
    /// When a registration timer is next due.
    pub(super) fn next_deadline(&self) -> Option<Duration> {
        self.clients.iter().filter_map(|c| c.poll_timeout()).min()
    }

    /// Every NHS's status per overlay family ("ipv4" / "ipv6"), for `show nhs` and metrics.
    pub fn statuses(&self) -> impl Iterator<Item = (&'static str, NhsStatus)> + '_ {
        self.clients.iter().flat_map(|c| {
            let family = if c.config().protocol_address.is_ipv4() {
                "ipv4"
            } else {
                "ipv6"
            };
            c.statuses().map(move |s| (family, s))
        })
    }

    /// Whether underlay address `a` is one of the NHSs.
    pub(super) fn is_nhs(&self, a: IpAddr) -> bool {
        self.nhs_peers.iter().any(|(n, _)| *n == a)
    }

    /// Whether peer `id` is one of the NHSs.
    pub fn is_nhs_peer(&self, id: PeerId) -> bool {
        self.nhs_peers.iter().any(|(_, n)| *n == id)
    }

    /// The underlay address of the NHS in use for `own`'s family: the most preferred one
    /// registered.
    pub(super) fn active_for(&self, own: IpAddr) -> Option<IpAddr> {
        self.clients
            .iter()
            .find(|c| c.config().protocol_address.is_ipv4() == own.is_ipv4())
            .and_then(RegistrationClient::active)
    }

    /// The peer the dataplane's default route points at: the active NHS.
    pub(super) fn active_peer(&self) -> Option<PeerId> {
        let active = self.clients.iter().find_map(RegistrationClient::active)?;
        self.nhs_peers
            .iter()
            .find(|(a, _)| *a == active)
            .map(|(_, id)| *id)
    }

    /// Handles a Registration Reply from `from`; returns whether the active NHS changed.
    pub(super) fn handle_reply(
        &mut self,
        counters: &mut ControlCounters,
        now: Duration,
        from: IpAddr,
        repr: &NhrpRepr,
    ) -> bool {
        let Some(client) = self
            .clients
            .iter_mut()
            .find(|c| family_matches(c.config().protocol_address, repr))
        else {
            counters.unsupported += 1;
            return false;
        };
        let before = client.active();
        match client.handle_reply(now, from, repr) {
            ReplyOutcome::Registered { holding_time } => {
                tracing::debug!(nhs = %from, holding_time, "registered with NHS")
            }
            ReplyOutcome::Nak { code } => {
                tracing::warn!(nhs = %from, code, "NHS refused the registration")
            }
            ReplyOutcome::Ignored(why) => {
                tracing::debug!(nhs = %from, ?why, "NHRP reply ignored")
            }
        }
        client.active() != before
    }

    /// Sends the registrations and refreshes that are due; returns whether the active NHS
    /// changed.
    pub(super) fn poll(&mut self, now: Duration, out: &mut Outbox) -> bool {
        let mut changed = false;
        for c in &mut self.clients {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                let before = c.active();
                for t in c.poll(now) {
                    out.push((t.message, Dest::Underlay(t.nhs)));
                }
                changed |= c.active() != before;
            }
        }
        changed
    }

    /// Purge Requests withdrawing every registration.
    pub(super) fn shutdown(&mut self, out: &mut Outbox) {
        for c in &mut self.clients {
            for t in c.shutdown() {
                out.push((t.message, Dest::Underlay(t.nhs)));
            }
        }
    }
}
