//! The answering side of a [`Resolver`]: Resolution Requests a hub forwarded for this
//! spoke's prefixes (phase 3 destination side), Purge Requests from peers, and the Purge
//! Requests this spoke sends to the peers it answered when it shuts down. Split from the
//! requesting side; it shares the resolver's state and helpers.

use std::net::IpAddr;
use std::time::Duration;

use crate::prefix::Prefix;
use crate::wire::nhrp::{Body, Cie, NhrpRepr, Operation};

use super::super::resolution::{
    is_resolution_request, nat_address_of, negative_reply, resolution_reply,
};
use super::super::server::{family, host_len};
use super::super::{FLAG_PURGE_NO_REPLY, HOP_COUNT, code};
use super::{
    Outgoing, Resolver, ShortcutChange, ShortcutOrigin, ShortcutRemoval, normalised_len, secs,
};

impl Resolver {
    /// Handles a Resolution Request a hub forwarded (phase 3, destination side) from
    /// underlay address `from`. For a destination inside this spoke's prefixes (its own
    /// address included; the longest match answers) it returns the Resolution Reply to send
    /// directly to the requester — at the NBMA address the request's NAT extension reports
    /// for it, else its source NBMA address — and installs the reverse shortcut binding the
    /// requester's address (host prefix) to that NBMA address. A destination that is not ours
    /// is answered with a CIE code 12 NAK (so the requester stops retransmitting) and no
    /// shortcut.
    pub fn handle_resolution_request(
        &mut self,
        now: Duration,
        from: IpAddr,
        req: &NhrpRepr,
    ) -> (Option<Outgoing>, Vec<ShortcutChange>) {
        let (Some(src_proto), Some(dst_proto)) = (req.src_proto, req.dst_proto) else {
            self.counters.ignored += 1;
            return (None, Vec::new());
        };
        if !is_resolution_request(req)
            || req.nbma != family(self.config.nbma_address)
            || req.protocol != family(self.config.protocol_address)
        {
            self.counters.ignored += 1;
            return (None, Vec::new());
        }
        if !self.authenticated(req) {
            return (None, Vec::new());
        }
        let requester = nat_address_of(req, src_proto)
            .or(req.src_nbma)
            .unwrap_or(from);
        let secret = self.config.secret.clone();
        let own = self.own_host();
        let responder = Some(self.cie(&own, code::SUCCESS));
        let Some(prefix) = self.own_prefix(dst_proto) else {
            self.counters.refused += 1;
            let message = negative_reply(req, responder, secret.as_deref());
            return (
                Some(Outgoing {
                    to: requester,
                    message,
                }),
                Vec::new(),
            );
        };
        self.counters.answered += 1;
        let answer = self.cie(&prefix, code::SUCCESS);
        let message = resolution_reply(req, answer, responder, secret.as_deref());
        let asked = match &req.body {
            Body::Entries { cies, .. } => cies.first().map_or(0, |c| c.holding_time),
            _ => 0,
        };
        let holding_time = self.holding_time_or_default(asked);
        let peer = Prefix::new(src_proto, host_len(src_proto))
            .expect("a host prefix of the address's own family is valid");
        let changes = self.install(
            now,
            peer,
            requester,
            holding_time,
            ShortcutOrigin::Answered,
            src_proto,
        );
        let record = self.answered.entry(requester).or_insert(Answered {
            proto: src_proto,
            prefixes: Vec::new(),
            expires: now,
        });
        record.proto = src_proto;
        record.expires = now + secs(self.config.holding_time.get());
        if !record.prefixes.contains(&prefix) {
            record.prefixes.push(prefix);
        }
        (
            Some(Outgoing {
                to: requester,
                message,
            }),
            changes,
        )
    }

    /// Handles a Purge Request from underlay address `from`: removes every shortcut inside a
    /// prefix its CIEs name (protocol address and prefix length, the message's source
    /// protocol address and a host prefix by default) that points at the sender's underlay
    /// address `from` — the address the shortcut was learnt from, so the NBMA addresses the
    /// message claims cannot make one spoke purge another's shortcuts. Returns the Purge Reply
    /// (the request's CIEs, same request ID) unless the N flag asks for none.
    pub fn handle_purge_request(
        &mut self,
        _now: Duration,
        from: IpAddr,
        req: &NhrpRepr,
    ) -> (Option<Outgoing>, Vec<ShortcutChange>) {
        let (
            Some(src_proto),
            Body::Entries {
                op: Operation::PurgeRequest,
                flags,
                request_id,
                cies,
            },
        ) = (req.src_proto, &req.body)
        else {
            self.counters.ignored += 1;
            return (None, Vec::new());
        };
        if !self.authenticated(req) {
            return (None, Vec::new());
        }
        let mut changes = Vec::new();
        for cie in cies {
            let proto = cie.proto.unwrap_or(src_proto);
            let Ok(purged) = Prefix::new(proto, normalised_len(cie.prefix_len, proto)) else {
                continue;
            };
            let gone: Vec<_> = self
                .shortcuts
                .iter()
                .filter(|(_, e)| {
                    let s = &e.shortcut;
                    purged.len() <= s.prefix.len()
                        && purged.contains(s.prefix.addr())
                        && s.nbma == from
                })
                .map(|(k, _)| *k)
                .collect();
            for k in gone {
                if let Some(e) = self.shortcuts.remove(&k) {
                    self.counters.purged += 1;
                    changes.push(ShortcutChange::Removed {
                        shortcut: e.shortcut,
                        cause: ShortcutRemoval::Purged,
                    });
                }
            }
        }
        let reply = (flags & FLAG_PURGE_NO_REPLY == 0).then(|| Outgoing {
            to: from,
            message: NhrpRepr {
                hop_count: HOP_COUNT,
                body: Body::Entries {
                    op: Operation::PurgeReply,
                    flags: *flags,
                    request_id: *request_id,
                    cies: cies.clone(),
                },
                extensions: self.auth_extensions(),
                ..req.clone()
            },
        });
        (reply, changes)
    }

    /// Stops resolving and returns Purge Requests (N flag: no reply wanted) so that no
    /// other spoke keeps a shortcut to this one: to every spoke this resolver answered
    /// within the holding time it granted, naming the prefixes it answered with; and to
    /// every spoke it resolved (which installed a reverse shortcut to this spoke's address
    /// when answering), naming this spoke's address. The shortcuts stay listed; the caller
    /// is going away.
    #[must_use]
    pub fn shutdown(&mut self) -> Vec<Outgoing> {
        self.pending.clear();
        let answered = std::mem::take(&mut self.answered);
        let own = Prefix::new(
            self.config.protocol_address,
            host_len(self.config.protocol_address),
        )
        .expect("a host prefix of the address's own family is valid");
        let mut resolved: Vec<(IpAddr, IpAddr)> = self
            .shortcuts
            .values()
            .map(|e| &e.shortcut)
            .filter(|s| matches!(s.origin, ShortcutOrigin::Resolved { .. }))
            .map(|s| (s.nbma, s.prefix.addr()))
            .collect();
        resolved.sort();
        resolved.dedup_by_key(|(nbma, _)| *nbma);
        // One purge per spoke: what it was answered with, plus this spoke's address when
        // it also answered this spoke (and so holds a reverse shortcut to it).
        let mut targets: Vec<(IpAddr, IpAddr, Vec<Prefix>)> = answered
            .into_iter()
            .map(|(to, a)| (to, a.proto, a.prefixes))
            .collect();
        for (to, dst) in resolved {
            match targets.iter_mut().find(|(t, _, _)| *t == to) {
                Some((_, _, prefixes)) if !prefixes.contains(&own) => prefixes.push(own),
                Some(_) => {}
                None => targets.push((to, dst, vec![own])),
            }
        }
        targets
            .into_iter()
            .map(|(to, dst_proto, prefixes)| {
                let request_id = self.take_request_id();
                let cies = prefixes
                    .iter()
                    .map(|p| Cie {
                        holding_time: 0,
                        ..self.cie(p, code::SUCCESS)
                    })
                    .collect();
                Outgoing {
                    to,
                    message: self.message(
                        Some(dst_proto),
                        Operation::PurgeRequest,
                        FLAG_PURGE_NO_REPLY,
                        request_id,
                        cies,
                        self.auth_extensions(),
                    ),
                }
            })
            .collect()
    }
}

/// A peer this spoke answered.
#[derive(Clone, Debug)]
pub(super) struct Answered {
    pub(super) proto: IpAddr,
    pub(super) prefixes: Vec<Prefix>,
    pub(super) expires: Duration,
}
