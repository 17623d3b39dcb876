//! DMVPN phase 3 shortcuts at a spoke, as a sans-IO state machine: the [`Resolver`] asks its
//! NHS to resolve destinations the hub told it about (Traffic Indication) or the daemon
//! wants, installs the shortcut (overlay prefix → peer's underlay address) from the
//! Resolution Reply the destination spoke sends directly, answers the Resolution Requests a
//! hub forwards to it for its own prefixes (and installs the reverse shortcut to the
//! requester), honours Purge Requests, expires shortcuts at their holding time or when idle,
//! refreshes the used ones before they expire and purges the shortcuts others hold to it when
//! it shuts down.
//!
//! Message layout follows FRR nhrpd (`nhrpd/nhrp_shortcut.c`
//! `nhrp_shortcut_send_resolution_req`, `nhrpd/nhrp_peer.c` `nhrp_handle_resolution_req`): the
//! request carries flags Q|A|S, one CIE without addresses holding the requester's holding time
//! and MTU, then empty NAT, Responder Address and transit extensions; the answering spoke
//! replies with its own NBMA address in the CIE and the prefix length of what it answers for,
//! and binds the requester's address to the NBMA address the NAT extension reports (else the
//! request's source NBMA address).
//!
//! Inputs are `handle_*` calls and [`Resolver::used`]; outputs are returned and drained with
//! [`Resolver::poll`] at the time [`Resolver::poll_timeout`] names. Every message goes to an
//! explicit underlay address ([`Outgoing::to`]): replies go straight to the requesting spoke,
//! not to an NHS, so the registration client's `Transmit { nhs, .. }` does not fit. No
//! sockets, no clock, no randomness: request IDs count up from the configuration's.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU16;
use std::time::Duration;

use crate::prefix::Prefix;
use crate::wire::nhrp::{Body, Cie, Extension, ExtensionBody, FIXED_LEN, NhrpRepr, Operation};

use super::resolution::{REQUEST_FLAGS, error_code::AUTHENTICATION_FAILURE};
use super::server::{family, host_len};
use super::{HOP_COUNT, auth, code};
use answer::Answered;

/// Configuration of a [`Resolver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverConfig {
    /// This spoke's underlay address (source NBMA address of its messages, NBMA address of
    /// its answers).
    pub nbma_address: IpAddr,
    /// This spoke's overlay address; always answered for, as a host prefix.
    pub protocol_address: IpAddr,
    /// The site prefixes this spoke answers Resolution Requests for (those it registers).
    pub prefixes: Vec<Prefix>,
    /// Cleartext secret sent in every message and required in every message received.
    pub secret: Option<Vec<u8>>,
    /// Holding time asked for in requests and granted in answers, in seconds (`holdtime`).
    pub holding_time: NonZeroU16,
    /// MTU announced in the CIEs (0: unspecified).
    pub mtu: u16,
    /// Wait after the first transmission of a request; doubles after each retransmission.
    pub retry_initial: Duration,
    /// Cap of that wait.
    pub retry_max: Duration,
    /// Retransmissions of an unanswered request before it is given up.
    pub max_retries: u32,
    /// A shortcut not reported used for this long is removed.
    pub idle_timeout: Duration,
    /// A shortcut used since its last resolution is resolved again this long before it
    /// expires.
    pub refresh_before: Duration,
    /// Most shortcuts (plus resolutions under way for new ones) held at once.
    pub max_shortcuts: usize,
    /// Request ID of the first request (the caller picks it at random); later ones count up.
    pub first_request_id: u32,
}

impl ResolverConfig {
    /// Defaults after FRR nhrpd: holding time 7200 s, retransmissions after 1, 2, 4, 8 s then
    /// given up, shortcuts idle after 120 s and refreshed 60 s before they expire, at most
    /// 1024 shortcuts.
    pub fn new(nbma_address: IpAddr, protocol_address: IpAddr) -> Self {
        ResolverConfig {
            nbma_address,
            protocol_address,
            prefixes: Vec::new(),
            secret: None,
            holding_time: NonZeroU16::new(7200).expect("7200 is not zero"),
            mtu: 0,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(8),
            max_retries: 3,
            idle_timeout: Duration::from_secs(120),
            refresh_before: Duration::from_secs(60),
            max_shortcuts: 1024,
            first_request_id: 1,
        }
    }
}

/// A message to send to an underlay address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Underlay destination: the NHS for requests, the requesting spoke for replies and
    /// purges.
    pub to: IpAddr,
    /// The message.
    pub message: NhrpRepr,
}

/// How a shortcut came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShortcutOrigin {
    /// This spoke resolved it through the NHS at this underlay address.
    Resolved {
        /// The NHS the request went to (and refreshes go to).
        nhs: IpAddr,
    },
    /// This spoke answered the peer's Resolution Request and bound the peer's address.
    Answered,
}

/// An overlay prefix reached directly at a peer's underlay address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortcut {
    /// The overlay prefix.
    pub prefix: Prefix,
    /// The peer's underlay address.
    pub nbma: IpAddr,
    /// When it expires unless resolved again.
    pub expires: Duration,
    /// Holding time granted, in seconds.
    pub holding_time: u16,
    /// When the daemon last reported it used (its installation counts as a use).
    pub last_used: Duration,
    /// How it came to be.
    pub origin: ShortcutOrigin,
}

/// A change to the shortcuts, for the daemon to mirror into the endpoint table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShortcutChange {
    /// A new shortcut.
    Added(Shortcut),
    /// Resolved again with the same peer: later expiry.
    Refreshed(Shortcut),
    /// A shortcut went away.
    Removed {
        /// The shortcut removed.
        shortcut: Shortcut,
        /// Why.
        cause: ShortcutRemoval,
    },
}

/// Why a shortcut went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShortcutRemoval {
    /// Its holding time ran out.
    Expired,
    /// Not used for the idle timeout.
    Idle,
    /// Its owner purged it.
    Purged,
    /// A newer answer binds the prefix to another peer (an `Added` follows).
    Replaced,
}

/// Monotonic counters of a [`Resolver`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolverCounters {
    /// Resolution Requests sent for the first time (new shortcuts and refreshes).
    pub requests: u64,
    /// Retransmissions of unanswered requests.
    pub retransmissions: u64,
    /// Requests given up after `max_retries` retransmissions.
    pub gave_up: u64,
    /// Requests of peers answered for one of this spoke's prefixes.
    pub answered: u64,
    /// Requests of peers for a destination not ours, answered with CIE code 12.
    pub refused: u64,
    /// Resolution Replies matched to a pending request.
    pub replies: u64,
    /// Of those, replies whose CIE carried a non-zero code (or none at all).
    pub naks: u64,
    /// The code of the last NAK.
    pub last_nak: Option<u8>,
    /// Pending requests given up because an NHS answered with an Error Indication.
    pub errors: u64,
    /// The code of the last such Error Indication.
    pub last_error: Option<u16>,
    /// Shortcuts added.
    pub added: u64,
    /// Shortcuts resolved again.
    pub refreshed: u64,
    /// Shortcuts removed at the end of their holding time.
    pub expired: u64,
    /// Shortcuts removed for being idle.
    pub idle: u64,
    /// Shortcuts removed by their owner's Purge Request.
    pub purged: u64,
    /// Shortcuts or resolutions refused because `max_shortcuts` was reached.
    pub over_limit: u64,
    /// Traffic Indications handled.
    pub indications: u64,
    /// Resolutions not started because a shortcut or pending request already covers the
    /// destination.
    pub deduplicated: u64,
    /// Messages dropped because their Authentication extension is missing or wrong.
    pub authentication_failures: u64,
    /// Messages of the wrong type or families, without the addresses they need, replies
    /// matching no pending request, indications without an IP packet, or destinations
    /// inside this spoke's own prefixes.
    pub ignored: u64,
}

/// The spoke's shortcut table and its resolutions under way.
#[derive(Clone, Debug)]
pub struct Resolver {
    config: ResolverConfig,
    next_request_id: u32,
    pending: BTreeMap<u32, Pending>,
    shortcuts: BTreeMap<(IpAddr, u8), Entry>,
    /// Peers this spoke answered, by underlay address: purged at shutdown.
    answered: BTreeMap<IpAddr, Answered>,
    counters: ResolverCounters,
}

impl Resolver {
    /// An empty table with `config`.
    pub fn new(config: ResolverConfig) -> Self {
        Resolver {
            next_request_id: config.first_request_id,
            config,
            pending: BTreeMap::new(),
            shortcuts: BTreeMap::new(),
            answered: BTreeMap::new(),
            counters: ResolverCounters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// The counters.
    pub fn counters(&self) -> &ResolverCounters {
        &self.counters
    }

    /// The shortcuts ordered by prefix (IPv4 first), for `mgre show nhrp`. Shortcuts past
    /// their expiry stay listed until [`Resolver::poll`] runs.
    pub fn shortcuts(&self) -> impl Iterator<Item = &Shortcut> + '_ {
        self.shortcuts.values().map(|e| &e.shortcut)
    }

    /// The shortcut with the longest prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&Shortcut> {
        self.covering(addr).map(|e| &e.shortcut)
    }

    /// Destinations whose resolution is under way, with the NHS asked.
    pub fn pending(&self) -> impl Iterator<Item = (IpAddr, IpAddr)> + '_ {
        self.pending.values().map(|p| (p.target, p.nhs))
    }

    /// Handles a Traffic Indication from the NHS at `nhs` (it hairpinned traffic of ours):
    /// resolves the destination of the IP packet it carries, as [`Resolver::resolve`] does.
    pub fn handle_traffic_indication(
        &mut self,
        now: Duration,
        nhs: IpAddr,
        ti: &NhrpRepr,
    ) -> Option<Outgoing> {
        let Body::TrafficIndication { packet, .. } = &ti.body else {
            self.counters.ignored += 1;
            return None;
        };
        if !self.authenticated(ti) {
            return None;
        }
        self.counters.indications += 1;
        let Some(dst) = packet_destination(packet) else {
            self.counters.ignored += 1;
            return None;
        };
        self.resolve(now, nhs, dst)
    }

    /// Starts resolving `dst` through the NHS at `nhs`: returns the Resolution Request, or
    /// `None` when a shortcut or a pending request already covers `dst` (counted as
    /// deduplicated), when `dst` is inside this spoke's own prefixes, when the families do not
    /// match this spoke's addresses, or when `max_shortcuts` is reached.
    pub fn resolve(&mut self, now: Duration, nhs: IpAddr, dst: IpAddr) -> Option<Outgoing> {
        if family(dst) != family(self.config.protocol_address)
            || family(nhs) != family(self.config.nbma_address)
            || self.own_prefix(dst).is_some()
        {
            self.counters.ignored += 1;
            return None;
        }
        if self.covering(dst).is_some() || self.pending.values().any(|p| p.target == dst) {
            self.counters.deduplicated += 1;
            return None;
        }
        if self.shortcuts.len() + self.pending.len() >= self.config.max_shortcuts {
            self.counters.over_limit += 1;
            return None;
        }
        Some(self.start(now, nhs, dst, None))
    }

    /// Handles a Resolution Reply that arrived from underlay address `from` (the answering
    /// spoke, or an NHS answering for itself): matches the pending request by request ID and
    /// destination, then installs the shortcut from its first CIE: the prefix of the CIE's
    /// length (0 or beyond the address width: a host prefix) around the resolved destination,
    /// reached at `from` when the answer came directly from the peer (which also covers a
    /// peer behind NAT, as FRR does) or at the CIE's NBMA address when the NHS answered. A
    /// non-zero code is a NAK: counted, no shortcut.
    pub fn handle_resolution_reply(
        &mut self,
        now: Duration,
        from: IpAddr,
        reply: &NhrpRepr,
    ) -> Vec<ShortcutChange> {
        let Body::Entries {
            op: Operation::ResolutionReply,
            request_id,
            cies,
            ..
        } = &reply.body
        else {
            self.counters.ignored += 1;
            return Vec::new();
        };
        if !self.authenticated(reply) {
            return Vec::new();
        }
        let Some(pending) = self
            .pending
            .get(request_id)
            .filter(|p| reply.dst_proto == Some(p.target))
        else {
            self.counters.ignored += 1;
            return Vec::new();
        };
        let pending = pending.clone();
        self.pending.remove(request_id);
        self.counters.replies += 1;
        let cie = match cies.first() {
            Some(cie) if cie.code == code::SUCCESS => cie,
            other => {
                self.counters.naks += 1;
                self.counters.last_nak =
                    Some(other.map_or(code::ADMINISTRATIVELY_PROHIBITED, |c| c.code));
                return Vec::new();
            }
        };
        let nbma = if from == pending.nhs {
            cie.nbma.unwrap_or(from)
        } else {
            from
        };
        let len = normalised_len(cie.prefix_len, pending.target);
        let Ok(prefix) = Prefix::new(pending.target, len) else {
            self.counters.ignored += 1;
            return Vec::new();
        };
        let holding_time = self.holding_time_or_default(cie.holding_time);
        let origin = ShortcutOrigin::Resolved { nhs: pending.nhs };
        self.install(now, prefix, nbma, holding_time, origin, pending.target)
    }

    /// Handles an Error Indication from underlay address `from` about one of this spoke's
    /// Resolution Requests (an NHS refused it: authentication failure, hop count, loop):
    /// the pending request it names by request ID is given up at once instead of being
    /// retransmitted. The indication must be authenticated unless its code is 11
    /// (authentication failure), which the sender cannot authenticate to us (as FRR nhrpd
    /// accepts it). Returns the error code when a pending request was dropped.
    pub fn handle_error_indication(
        &mut self,
        _now: Duration,
        _from: IpAddr,
        ei: &NhrpRepr,
    ) -> Option<u16> {
        let Body::ErrorIndication { code, packet, .. } = &ei.body else {
            self.counters.ignored += 1;
            return None;
        };
        if *code != AUTHENTICATION_FAILURE && !self.authenticated(ei) {
            return None;
        }
        // The packet in error starts with its fixed header (ar$op.type at byte 17); the
        // request ID follows the 4 bytes of lengths and flags of the mandatory part. The
        // copy may be cut, so it is read rather than parsed.
        let id = match (packet.get(17), packet.get(FIXED_LEN + 4..FIXED_LEN + 8)) {
            (Some(&OP_RESOLUTION_REQUEST), Some(&[a, b, c, d])) => u32::from_be_bytes([a, b, c, d]),
            _ => {
                self.counters.ignored += 1;
                return None;
            }
        };
        let Some(p) = self.pending.remove(&id) else {
            self.counters.ignored += 1;
            return None;
        };
        if let Some(entry) = p.refresh.and_then(|k| self.shortcuts.get_mut(&k)) {
            entry.refreshing = false;
        }
        self.counters.errors += 1;
        self.counters.last_error = Some(*code);
        Some(*code)
    }

    /// Reports that traffic went to the peer at underlay address `nbma` (the daemon saw its
    /// transmit counter grow): its shortcuts are no longer idle and will be refreshed before
    /// they expire. Work: one pass over the shortcuts.
    pub fn used(&mut self, now: Duration, nbma: IpAddr) {
        for e in self.shortcuts.values_mut() {
            if e.shortcut.nbma == nbma {
                e.shortcut.last_used = e.shortcut.last_used.max(now);
                e.used = true;
            }
        }
    }

    /// When [`Resolver::poll`] must be called next: the earliest retransmission, shortcut
    /// expiry, idle deadline or refresh. Work: one pass over the shortcuts and pending
    /// requests.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let shortcuts = self.shortcuts.values().flat_map(|e| {
            let s = &e.shortcut;
            [
                Some(s.expires),
                Some(s.last_used.saturating_add(self.config.idle_timeout)),
                self.refresh_at(e),
            ]
        });
        shortcuts
            .flatten()
            .chain(self.pending.values().map(|p| p.next_send))
            .chain(self.answered.values().map(|a| a.expires))
            .min()
    }

    /// Runs the timers due at `now`: removes expired and idle shortcuts, sends the refresh of
    /// used shortcuts about to expire, retransmits unanswered requests (same request ID, the
    /// wait doubling up to `retry_max`) and gives up on those out of retries. Call it at
    /// [`Resolver::poll_timeout`] (calling it earlier does no harm).
    #[must_use]
    pub fn poll(&mut self, now: Duration) -> (Vec<Outgoing>, Vec<ShortcutChange>) {
        let mut out = Vec::new();
        let mut changes = Vec::new();
        let idle_timeout = self.config.idle_timeout;
        let gone: Vec<_> = self
            .shortcuts
            .iter()
            .filter_map(|(k, e)| {
                if e.shortcut.expires <= now {
                    Some((*k, ShortcutRemoval::Expired))
                } else if e.shortcut.last_used.saturating_add(idle_timeout) <= now {
                    Some((*k, ShortcutRemoval::Idle))
                } else {
                    None
                }
            })
            .collect();
        for (k, cause) in gone {
            if let Some(e) = self.shortcuts.remove(&k) {
                match cause {
                    ShortcutRemoval::Idle => self.counters.idle += 1,
                    _ => self.counters.expired += 1,
                }
                changes.push(ShortcutChange::Removed {
                    shortcut: e.shortcut,
                    cause,
                });
            }
        }
        let refreshes: Vec<_> = self
            .shortcuts
            .iter()
            .filter(|(_, e)| self.refresh_at(e).is_some_and(|t| t <= now))
            .map(|(k, e)| (*k, e.target))
            .collect();
        for (k, target) in refreshes {
            let Some(entry) = self.shortcuts.get_mut(&k) else {
                continue;
            };
            let ShortcutOrigin::Resolved { nhs } = entry.shortcut.origin else {
                continue;
            };
            entry.refreshing = true;
            entry.used = false;
            out.push(self.start(now, nhs, target, Some(k)));
        }
        let due: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_send <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            if p.transmissions > self.config.max_retries {
                let refresh = p.refresh;
                self.pending.remove(&id);
                self.counters.gave_up += 1;
                if let Some(entry) = refresh.and_then(|k| self.shortcuts.get_mut(&k)) {
                    entry.refreshing = false;
                }
                continue;
            }
            p.transmissions += 1;
            p.next_send = now + backoff(&self.config, p.transmissions);
            self.counters.retransmissions += 1;
            out.push(Outgoing {
                to: p.nhs,
                message: p.message.clone(),
            });
        }
        self.answered.retain(|_, a| a.expires > now);
        (out, changes)
    }

    /// Sends a new Resolution Request for `target` to `nhs`; `refresh` names the shortcut it
    /// refreshes.
    fn start(
        &mut self,
        now: Duration,
        nhs: IpAddr,
        target: IpAddr,
        refresh: Option<(IpAddr, u8)>,
    ) -> Outgoing {
        let request_id = self.take_request_id();
        let own = Cie {
            code: code::SUCCESS,
            prefix_len: 0,
            mtu: self.config.mtu,
            holding_time: self.config.holding_time.get(),
            preference: 0,
            nbma: None,
            nbma_subaddress: Vec::new(),
            proto: None,
        };
        let mut extensions = vec![
            Extension {
                compulsory: false,
                body: ExtensionBody::NatAddress(Vec::new()),
            },
            compulsory(ExtensionBody::ResponderAddress(Vec::new())),
            compulsory(ExtensionBody::ForwardTransit(Vec::new())),
            compulsory(ExtensionBody::ReverseTransit(Vec::new())),
        ];
        extensions.extend(self.auth_extensions());
        let message = self.message(
            Some(target),
            Operation::ResolutionRequest,
            REQUEST_FLAGS,
            request_id,
            vec![own],
            extensions,
        );
        self.pending.insert(
            request_id,
            Pending {
                nhs,
                target,
                message: message.clone(),
                next_send: now + backoff(&self.config, 1),
                transmissions: 1,
                refresh,
            },
        );
        self.counters.requests += 1;
        Outgoing { to: nhs, message }
    }

    /// Installs or renews a shortcut; refused (counted) when new and the table is full.
    fn install(
        &mut self,
        now: Duration,
        prefix: Prefix,
        nbma: IpAddr,
        holding_time: u16,
        origin: ShortcutOrigin,
        target: IpAddr,
    ) -> Vec<ShortcutChange> {
        let k = (prefix.addr(), prefix.len());
        let shortcut = Shortcut {
            prefix,
            nbma,
            expires: now + secs(holding_time),
            holding_time,
            last_used: now,
            origin,
        };
        let mut changes = Vec::new();
        match self.shortcuts.get(&k) {
            Some(old) if old.shortcut.nbma == nbma => {
                self.counters.refreshed += 1;
                let shortcut = Shortcut {
                    last_used: old.shortcut.last_used,
                    ..shortcut
                };
                let used = old.used;
                changes.push(ShortcutChange::Refreshed(shortcut.clone()));
                self.shortcuts.insert(
                    k,
                    Entry {
                        shortcut,
                        target,
                        used,
                        refreshing: false,
                    },
                );
                return changes;
            }
            Some(_) => {
                if let Some(old) = self.shortcuts.remove(&k) {
                    changes.push(ShortcutChange::Removed {
                        shortcut: old.shortcut,
                        cause: ShortcutRemoval::Replaced,
                    });
                }
            }
            None if self.shortcuts.len() >= self.config.max_shortcuts => {
                self.counters.over_limit += 1;
                return changes;
            }
            None => {}
        }
        self.counters.added += 1;
        changes.push(ShortcutChange::Added(shortcut.clone()));
        self.shortcuts.insert(
            k,
            Entry {
                shortcut,
                target,
                used: false,
                refreshing: false,
            },
        );
        changes
    }

    /// When a used, resolved shortcut must be resolved again; `None` for the others.
    fn refresh_at(&self, e: &Entry) -> Option<Duration> {
        (e.used && !e.refreshing && matches!(e.shortcut.origin, ShortcutOrigin::Resolved { .. }))
            .then(|| {
                e.shortcut
                    .expires
                    .saturating_sub(self.config.refresh_before)
            })
    }

    /// The entry with the longest prefix containing `addr`. Work: one lookup per prefix
    /// length.
    fn covering(&self, addr: IpAddr) -> Option<&Entry> {
        (0..=host_len(addr)).rev().find_map(|len| {
            let p = Prefix::new(addr, len).ok()?;
            self.shortcuts.get(&(p.addr(), p.len()))
        })
    }

    /// The longest of this spoke's own prefixes (its host address included) containing
    /// `addr`.
    fn own_prefix(&self, addr: IpAddr) -> Option<Prefix> {
        std::iter::once(self.own_host())
            .chain(self.config.prefixes.iter().copied())
            .filter(|p| p.contains(addr))
            .max_by_key(|p| p.len())
    }

    fn own_host(&self) -> Prefix {
        let own = self.config.protocol_address;
        Prefix::new(own, host_len(own)).expect("a host prefix of the address's own family is valid")
    }

    /// This spoke's CIE for `prefix`: its NBMA address, the granted holding time and MTU.
    fn cie(&self, prefix: &Prefix, code: u8) -> Cie {
        Cie {
            code,
            prefix_len: prefix.len(),
            mtu: self.config.mtu,
            holding_time: self.config.holding_time.get(),
            preference: 0,
            nbma: Some(self.config.nbma_address),
            nbma_subaddress: Vec::new(),
            proto: Some(prefix.addr()),
        }
    }

    /// A message from this spoke.
    fn message(
        &self,
        dst_proto: Option<IpAddr>,
        op: Operation,
        flags: u16,
        request_id: u32,
        cies: Vec<Cie>,
        extensions: Vec<Extension>,
    ) -> NhrpRepr {
        NhrpRepr {
            nbma: family(self.config.nbma_address),
            protocol: family(self.config.protocol_address),
            snap: [0; 5],
            hop_count: HOP_COUNT,
            src_nbma: Some(self.config.nbma_address),
            src_nbma_subaddress: Vec::new(),
            src_proto: Some(self.config.protocol_address),
            dst_proto,
            body: Body::Entries {
                op,
                flags,
                request_id,
                cies,
            },
            extensions,
        }
    }

    fn auth_extensions(&self) -> Vec<Extension> {
        self.config
            .secret
            .as_deref()
            .map(auth::extension)
            .into_iter()
            .collect()
    }

    /// Whether `msg` passes authentication; counts a failure.
    fn authenticated(&mut self, msg: &NhrpRepr) -> bool {
        let ok = self
            .config
            .secret
            .as_deref()
            .is_none_or(|s| auth::verify(&msg.extensions, s));
        if !ok {
            self.counters.authentication_failures += 1;
        }
        ok
    }

    fn holding_time_or_default(&self, asked: u16) -> u16 {
        match asked {
            0 => self.config.holding_time.get(),
            t => t,
        }
    }

    fn take_request_id(&mut self) -> u32 {
        let id = self.next_request_id;
        self.next_request_id = id.wrapping_add(1);
        id
    }
}

/// A shortcut and its refresh state.
#[derive(Clone, Debug)]
struct Entry {
    shortcut: Shortcut,
    /// The destination it was resolved for (refreshes resolve it again).
    target: IpAddr,
    /// Reported used since it was last (re)resolved.
    used: bool,
    /// A refresh request is under way.
    refreshing: bool,
}

/// A Resolution Request awaiting its reply.
#[derive(Clone, Debug)]
struct Pending {
    nhs: IpAddr,
    target: IpAddr,
    message: NhrpRepr,
    next_send: Duration,
    /// Transmissions so far, the first included.
    transmissions: u32,
    /// The shortcut this request refreshes.
    refresh: Option<(IpAddr, u8)>,
}

/// The destination address of the IPv4 or IPv6 packet at the start of `packet`.
fn packet_destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// A CIE prefix length as a prefix: 0 or beyond the address width means a host prefix.
fn normalised_len(prefix_len: u8, addr: IpAddr) -> u8 {
    let host = host_len(addr);
    match prefix_len {
        0 => host,
        l => l.min(host),
    }
}

/// The wait after transmission number `attempt` (1-based): `retry_initial · 2^(attempt-1)`,
/// at most `retry_max`.
fn backoff(config: &ResolverConfig, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    config
        .retry_initial
        .saturating_mul(1 << doublings)
        .min(config.retry_max)
}

fn compulsory(body: ExtensionBody) -> Extension {
    Extension {
        compulsory: true,
        body,
    }
}

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}

/// ar$op.type of a Resolution Request.
const OP_RESOLUTION_REQUEST: u8 = 1;

mod answer;
#[cfg(test)]
mod tests;
