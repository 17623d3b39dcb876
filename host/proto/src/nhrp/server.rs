//! The Next Hop Server side of NHRP registration: validates Registration Requests, keeps the
//! table of registered overlay prefixes and the underlay (NBMA) addresses that reach them,
//! answers with Registration Replies, honours Purge Requests and expires stale entries.
//!
//! Admission is per request (cleartext secret, allowed underlay prefixes) and per CIE (entry
//! limit, uniqueness). A client whose claimed NBMA address differs from the underlay source of
//! its packet is behind NAT: the entry records the post-NAT address and, when the request
//! carries the Cisco/FRR NAT extension, the reply echoes it there (as FRR nhrpd does). This
//! module only decides: it never sends, and it learns the time from its callers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::num::NonZeroU16;
use std::time::Duration;

use crate::prefix::Prefix;
use crate::wire::nhrp::{Body, Cie, Extension, ExtensionBody, Family, NhrpRepr, Operation};

use super::{FLAG_NAT, FLAG_PURGE_NO_REPLY, FLAG_UNIQUE, HOP_COUNT, auth, code, errors};

/// Configuration of a [`RegistrationServer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The server's own overlay address: the destination protocol address of its replies and
    /// the protocol address of its Responder Address CIE (for messages of its family).
    pub protocol_address: IpAddr,
    /// The server's own underlay address, reported in the Responder Address CIE.
    pub nbma_address: IpAddr,
    /// Underlay prefixes a registering client's packets may come from (the address the packet
    /// arrived from, i.e. the post-NAT one). Empty allows any address.
    pub allowed_nbma: Vec<Prefix>,
    /// Cleartext secret every request must carry in its Authentication extension; it is also
    /// put into every reply. `None` disables authentication.
    pub secret: Option<Vec<u8>>,
    /// Upper bound of the holding time granted, in seconds; a CIE asking for 0 gets this.
    pub max_holding_time: NonZeroU16,
    /// Most entries the table holds; registrations of new prefixes beyond it are refused
    /// with code 5 (insufficient resources).
    pub max_entries: usize,
}

/// One registered binding: an overlay prefix and the underlay address serving it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The registered overlay prefix (the CIE's protocol address and prefix length).
    pub prefix: Prefix,
    /// The NBMA address the client claimed (its CIE's, else the message's source NBMA).
    pub nbma: IpAddr,
    /// The underlay address the request actually came from, when it differs from `nbma`
    /// (the client is behind NAT).
    pub nat_nbma: Option<IpAddr>,
    /// When the entry expires unless refreshed.
    pub expires: Duration,
    /// Holding time granted, in seconds.
    pub holding_time: u16,
    /// Request ID of the request that created or last refreshed the entry.
    pub request_id: u32,
    /// Whether it was registered with the U (unique) flag.
    pub unique: bool,
    /// MTU announced in the CIE (0: unspecified).
    pub mtu: u16,
}

/// A change to the registration table, for the daemon to mirror into the endpoint table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A prefix was registered for the first time (or again after it expired).
    Added(Registration),
    /// The owner refreshed its entry: same addresses, later expiry.
    Refreshed(Registration),
    /// A non-unique entry now points at another client.
    Replaced {
        /// The entry before.
        old: Registration,
        /// The entry now.
        new: Registration,
    },
    /// An entry left the table.
    Removed {
        /// The entry removed.
        registration: Registration,
        /// Why.
        cause: RemovalCause,
    },
}

/// Why an entry left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemovalCause {
    /// Its holding time ran out.
    Expired,
    /// Its owner sent a Purge Request.
    Purged,
}

/// What handling one message produced.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[must_use]
pub struct Outcome {
    /// The reply to send to the underlay address the message came from; `None` when the
    /// message was ignored (see [`ServerCounters::ignored`]) or asked for no reply. For a
    /// message carrying a compulsory extension of an unknown type it is the Error Indication
    /// (see [`RegistrationServer::error_indications`]) and the message was not acted on.
    pub reply: Option<NhrpRepr>,
    /// Table changes, in order (expiries noticed on the way come first).
    pub changes: Vec<Change>,
}

/// Monotonic counters of a [`RegistrationServer`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// Registration Requests answered.
    pub requests: u64,
    /// CIEs that created an entry.
    pub added: u64,
    /// CIEs that refreshed an entry of the same client.
    pub refreshed: u64,
    /// CIEs that took over a non-unique entry of another client.
    pub replaced: u64,
    /// Requests refused with code 4 because their underlay source is not allowed.
    pub nak_prohibited_nbma: u64,
    /// Requests refused with code 4 (registration) or ignored (purge) because the
    /// Authentication extension is missing or wrong.
    pub nak_authentication: u64,
    /// CIEs refused with code 5 because the table is full.
    pub nak_insufficient_resources: u64,
    /// CIEs refused with code 14 because another client holds the prefix uniquely.
    pub nak_unique: u64,
    /// Requests an admission policy refused ([`RegistrationServer::refuse`]).
    pub nak_policy: u64,
    /// Requests whose claimed NBMA address differs from their underlay source.
    pub nat_detected: u64,
    /// Entries removed because their holding time ran out.
    pub expired: u64,
    /// Entries removed by their owner's Purge Request.
    pub purged: u64,
    /// Purge CIEs naming an entry that belongs to another client (left in place).
    pub purge_refused: u64,
    /// Messages of the wrong type, without a source protocol address, or whose underlay
    /// source is of another family than their NBMA addresses.
    pub ignored: u64,
}

/// The NHS registration table and its admission policy.
#[derive(Clone, Debug)]
pub struct RegistrationServer {
    config: ServerConfig,
    table: BTreeMap<(IpAddr, u8), Registration>,
    /// The table's keys ordered by expiry, so expiring and the next timeout cost
    /// O(log n) per entry instead of a pass over the table.
    by_expiry: BTreeSet<(Duration, (IpAddr, u8))>,
    counters: ServerCounters,
    error_indications: u64,
}

impl RegistrationServer {
    /// An empty table with `config`.
    pub fn new(config: ServerConfig) -> Self {
        RegistrationServer {
            config,
            table: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            counters: ServerCounters::default(),
            error_indications: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The counters.
    pub fn counters(&self) -> &ServerCounters {
        &self.counters
    }

    /// Requests answered with an Error Indication (code 1) instead of being acted on,
    /// because they carry a compulsory extension of an unknown type. Kept outside
    /// [`ServerCounters`] until the daemon's counter aggregation knows the field.
    pub fn error_indications(&self) -> u64 {
        self.error_indications
    }

    /// The registered entries ordered by prefix (IPv4 first), for `mgre show nhrp`. Entries
    /// past their expiry stay listed until [`RegistrationServer::expire`] or a handler runs.
    pub fn entries(&self) -> impl Iterator<Item = &Registration> + '_ {
        self.table.values()
    }

    /// The entry registered for exactly `prefix`.
    pub fn entry(&self, prefix: &Prefix) -> Option<&Registration> {
        self.table.get(&key(prefix))
    }

    /// The live entry (expiry after `now`) with the longest registered prefix containing
    /// `addr`, as an NHS resolves a destination. Work: one O(log n) table lookup per prefix
    /// length of `addr`'s family.
    pub fn longest_match(&self, addr: IpAddr, now: Duration) -> Option<&Registration> {
        (0..=host_len(addr)).rev().find_map(|len| {
            let prefix = Prefix::new(addr, len).ok()?;
            self.table.get(&key(&prefix)).filter(|r| r.expires > now)
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// When the next entry expires: the caller must call [`RegistrationServer::expire`] then
    /// (or pass a later `now` to a handler). Work: O(log n).
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.by_expiry.first().map(|(t, _)| *t)
    }

    /// Removes and returns the entries whose expiry is at or before `now`. Work: O(log n) per
    /// expired entry.
    pub fn expire(&mut self, now: Duration) -> Vec<Registration> {
        let mut out = Vec::new();
        while let Some(&(t, k)) = self.by_expiry.first()
            && t <= now
        {
            self.by_expiry.pop_first();
            if let Some(r) = self.table.remove(&k) {
                out.push(r);
            }
        }
        self.counters.expired += out.len() as u64;
        out
    }

    /// Inserts or replaces the entry under `k`, keeping the expiry index in step.
    fn insert_entry(&mut self, k: (IpAddr, u8), r: Registration) {
        self.by_expiry.insert((r.expires, k));
        if let Some(old) = self.table.insert(k, r)
            && self
                .table
                .get(&k)
                .is_some_and(|new| new.expires != old.expires)
        {
            self.by_expiry.remove(&(old.expires, k));
        }
    }

    /// Removes the entry under `k` and its expiry index record.
    fn remove_entry(&mut self, k: &(IpAddr, u8)) -> Option<Registration> {
        let r = self.table.remove(k)?;
        self.by_expiry.remove(&(r.expires, *k));
        Some(r)
    }

    /// Handles a Registration Request that arrived from underlay address `src_nbma` and
    /// returns the Registration Reply to send back there (same request ID, flags U and NAT
    /// copied, one CIE per request CIE with its code and, on success, the granted holding
    /// time) and the table changes.
    ///
    /// Each CIE registers `proto/prefix_len` (the message's source protocol address when the
    /// CIE has none; a prefix length of 0 or beyond the address width means a host prefix)
    /// for its NBMA address (the message's source NBMA address when the CIE has none).
    /// Refusals: code 4 for every CIE when authentication fails or `src_nbma` is not allowed;
    /// code 14 when another client holds the prefix with the U flag (whatever the new
    /// request's flag); code 5 when a new prefix would exceed the entry limit.
    ///
    /// Extensions (RFC 2332 §5.3): Responder Address is answered, transit lists and
    /// non-compulsory unknown extensions are echoed, NAT is echoed with the observed address
    /// appended, Authentication is regenerated, Vendor-Private is dropped. A request carrying
    /// a compulsory extension of an unknown type is not acted on: the reply is the Error
    /// Indication of [`errors::check_compulsory_parsed`].
    pub fn handle_request(&mut self, now: Duration, src_nbma: IpAddr, req: &NhrpRepr) -> Outcome {
        let mut changes = self.expire_changes(now);
        let (flags, request_id, cies) = match &req.body {
            Body::Entries {
                op: Operation::RegistrationRequest,
                flags,
                request_id,
                cies,
            } => (*flags, *request_id, cies),
            _ => return self.ignore(changes),
        };
        let Some(src_proto) = req.src_proto else {
            return self.ignore(changes);
        };
        if family(src_nbma) != req.nbma {
            return self.ignore(changes);
        }
        if let Some(indication) = self.check_compulsory(req) {
            return Outcome {
                reply: Some(indication),
                changes,
            };
        }
        self.counters.requests += 1;
        let claimed = req.src_nbma.unwrap_or(src_nbma);
        let nat_nbma = (claimed != src_nbma).then_some(src_nbma);
        if nat_nbma.is_some() {
            self.counters.nat_detected += 1;
        }
        let refusal = if !self.authenticated(req) {
            self.counters.nak_authentication += 1;
            Some(code::ADMINISTRATIVELY_PROHIBITED)
        } else if !self.allowed(src_nbma) {
            self.counters.nak_prohibited_nbma += 1;
            Some(code::ADMINISTRATIVELY_PROHIBITED)
        } else {
            None
        };
        let binding = Binding {
            now,
            claimed,
            nat_nbma,
            src_proto,
            request_id,
            unique: flags & FLAG_UNIQUE != 0,
        };
        let mut reply_cies = Vec::with_capacity(cies.len());
        for cie in cies {
            let mut answer = cie.clone();
            answer.code = match refusal {
                Some(code) => code,
                None => match self.register(&binding, cie) {
                    Ok(change) => {
                        if let Change::Added(r)
                        | Change::Refreshed(r)
                        | Change::Replaced { new: r, .. } = &change
                        {
                            answer.holding_time = r.holding_time;
                        }
                        changes.push(change);
                        code::SUCCESS
                    }
                    Err(code) => code,
                },
            };
            reply_cies.push(answer);
        }
        let mut extensions = Vec::new();
        for e in &req.extensions {
            let body = match &e.body {
                ExtensionBody::ResponderAddress(_) => {
                    ExtensionBody::ResponderAddress(self.responder_cie(req).into_iter().collect())
                }
                ExtensionBody::ForwardTransit(_) | ExtensionBody::ReverseTransit(_) => {
                    e.body.clone()
                }
                ExtensionBody::NatAddress(cies) => {
                    let mut cies = cies.clone();
                    if let Some(observed) = nat_nbma {
                        cies.push(nat_cie(observed, src_proto));
                    }
                    ExtensionBody::NatAddress(cies)
                }
                // RFC 2332 §5.3: a non-compulsory extension the responder does not
                // recognise is not an error; it travels back unchanged (FRR nhrpd's
                // nhrp_ext_reply copies it too). Compulsory ones never get here: the
                // request was answered with an Error Indication above.
                ExtensionBody::Unknown { .. } => e.body.clone(),
                // Regenerated hop by hop below.
                ExtensionBody::Authentication(_) => continue,
                // RFC 2332 §5.3.5: a receiver that does not handle the Vendor-Private
                // extension "may completely ignore" it, so it is not echoed (FRR copies it).
                ExtensionBody::VendorPrivate(_) => continue,
            };
            extensions.push(Extension {
                compulsory: e.compulsory,
                body,
            });
        }
        let reply = self.reply_to(
            req,
            Operation::RegistrationReply,
            flags & (FLAG_UNIQUE | FLAG_NAT),
            request_id,
            reply_cies,
            extensions,
        );
        Outcome {
            reply: Some(reply),
            changes,
        }
    }

    /// The Registration Reply refusing every CIE of the Registration Request `req` with
    /// NAK `code`, as an admission policy decided before the table saw it (counted as
    /// `nak_policy`; the table is unchanged). `None` when `req` is not a Registration
    /// Request with a source protocol address.
    pub fn refuse(&mut self, req: &NhrpRepr, code: u8) -> Option<NhrpRepr> {
        let Body::Entries {
            op: Operation::RegistrationRequest,
            flags,
            request_id,
            cies,
        } = &req.body
        else {
            return None;
        };
        req.src_proto?;
        self.counters.nak_policy += 1;
        let cies = cies.iter().map(|c| Cie { code, ..c.clone() }).collect();
        Some(self.reply_to(
            req,
            Operation::RegistrationReply,
            flags & (FLAG_UNIQUE | FLAG_NAT),
            *request_id,
            cies,
            Vec::new(),
        ))
    }

    /// Handles a Purge Request that arrived from underlay address `src_nbma`: removes each
    /// entry its CIEs name (protocol address and prefix length, defaulting as in
    /// [`RegistrationServer::handle_request`]) if it belongs to the sender, i.e. has the
    /// NBMA address the CIE (or message) claims and is reached at `src_nbma`. Returns the
    /// Purge Reply (the request's CIEs, same request ID) unless the N flag asks for none.
    /// A request failing authentication is ignored; one carrying a compulsory extension of an
    /// unknown type is answered with an Error Indication, as in `handle_request`.
    pub fn handle_purge(&mut self, now: Duration, src_nbma: IpAddr, req: &NhrpRepr) -> Outcome {
        let mut changes = self.expire_changes(now);
        let (flags, request_id, cies) = match &req.body {
            Body::Entries {
                op: Operation::PurgeRequest,
                flags,
                request_id,
                cies,
            } => (*flags, *request_id, cies),
            _ => return self.ignore(changes),
        };
        let Some(src_proto) = req.src_proto else {
            return self.ignore(changes);
        };
        if let Some(indication) = self.check_compulsory(req) {
            return Outcome {
                reply: Some(indication),
                changes,
            };
        }
        if !self.authenticated(req) {
            self.counters.nak_authentication += 1;
            return Outcome {
                reply: None,
                changes,
            };
        }
        let claimed = req.src_nbma.unwrap_or(src_nbma);
        for cie in cies {
            let Some(prefix) = cie_prefix(cie, src_proto) else {
                continue;
            };
            let k = key(&prefix);
            let nbma = cie.nbma.unwrap_or(claimed);
            match self.table.get(&k) {
                Some(r) if r.nbma == nbma && r.nat_nbma.unwrap_or(r.nbma) == src_nbma => {
                    if let Some(registration) = self.remove_entry(&k) {
                        self.counters.purged += 1;
                        changes.push(Change::Removed {
                            registration,
                            cause: RemovalCause::Purged,
                        });
                    }
                }
                Some(_) => self.counters.purge_refused += 1,
                None => {}
            }
        }
        let reply = (flags & FLAG_PURGE_NO_REPLY == 0).then(|| {
            self.reply_to(
                req,
                Operation::PurgeReply,
                flags,
                request_id,
                cies.clone(),
                Vec::new(),
            )
        });
        Outcome { reply, changes }
    }

    /// Applies one admitted CIE to the table.
    fn register(&mut self, b: &Binding, cie: &Cie) -> Result<Change, u8> {
        let prefix = cie_prefix(cie, b.src_proto).ok_or(code::ADMINISTRATIVELY_PROHIBITED)?;
        let max = self.config.max_holding_time.get();
        let holding_time = match cie.holding_time {
            0 => max,
            t => t.min(max),
        };
        let new = Registration {
            prefix,
            nbma: cie.nbma.unwrap_or(b.claimed),
            nat_nbma: b.nat_nbma,
            expires: b.now + Duration::from_secs(u64::from(holding_time)),
            holding_time,
            request_id: b.request_id,
            unique: b.unique,
            mtu: cie.mtu,
        };
        let k = key(&prefix);
        let change = match self.table.get(&k) {
            Some(old) if old.nbma == new.nbma && old.nat_nbma == new.nat_nbma => {
                self.counters.refreshed += 1;
                Change::Refreshed(new.clone())
            }
            Some(old) if old.unique => {
                self.counters.nak_unique += 1;
                return Err(code::UNIQUE_ADDRESS_REGISTERED);
            }
            Some(old) => {
                self.counters.replaced += 1;
                Change::Replaced {
                    old: old.clone(),
                    new: new.clone(),
                }
            }
            None if self.table.len() >= self.config.max_entries => {
                self.counters.nak_insufficient_resources += 1;
                return Err(code::INSUFFICIENT_RESOURCES);
            }
            None => {
                self.counters.added += 1;
                Change::Added(new.clone())
            }
        };
        self.insert_entry(k, new);
        Ok(change)
    }

    fn expire_changes(&mut self, now: Duration) -> Vec<Change> {
        self.expire(now)
            .into_iter()
            .map(|registration| Change::Removed {
                registration,
                cause: RemovalCause::Expired,
            })
            .collect()
    }

    /// The Error Indication answering `req` if it carries a compulsory extension of an
    /// unknown type (counted), from this server's addresses.
    fn check_compulsory(&mut self, req: &NhrpRepr) -> Option<NhrpRepr> {
        let indication = errors::check_compulsory_parsed(
            req,
            self.config.nbma_address,
            self.config.protocol_address,
        );
        self.error_indications += u64::from(indication.is_some());
        indication
    }

    fn ignore(&mut self, changes: Vec<Change>) -> Outcome {
        self.counters.ignored += 1;
        Outcome {
            reply: None,
            changes,
        }
    }

    fn authenticated(&self, req: &NhrpRepr) -> bool {
        self.config
            .secret
            .as_deref()
            .is_none_or(|s| auth::verify(&req.extensions, s))
    }

    fn allowed(&self, src_nbma: IpAddr) -> bool {
        self.config.allowed_nbma.is_empty()
            || self
                .config
                .allowed_nbma
                .iter()
                .any(|p| p.contains(src_nbma))
    }

    /// This server's CIE for the Responder Address extension, if its addresses are of the
    /// message's families.
    fn responder_cie(&self, req: &NhrpRepr) -> Option<Cie> {
        let proto = self.config.protocol_address;
        let nbma = self.config.nbma_address;
        (family(proto) == req.protocol && family(nbma) == req.nbma).then(|| Cie {
            code: code::SUCCESS,
            prefix_len: host_len(proto),
            mtu: 0,
            holding_time: self.config.max_holding_time.get(),
            preference: 0,
            nbma: Some(nbma),
            nbma_subaddress: Vec::new(),
            proto: Some(proto),
        })
    }

    /// A reply carrying the request's source addresses, this server as destination and, when
    /// a secret is configured, the Authentication extension last.
    fn reply_to(
        &self,
        req: &NhrpRepr,
        op: Operation,
        flags: u16,
        request_id: u32,
        cies: Vec<Cie>,
        mut extensions: Vec<Extension>,
    ) -> NhrpRepr {
        if let Some(secret) = &self.config.secret {
            extensions.push(auth::extension(secret));
        }
        let own = self.config.protocol_address;
        NhrpRepr {
            nbma: req.nbma,
            protocol: req.protocol,
            snap: req.snap,
            hop_count: HOP_COUNT,
            src_nbma: req.src_nbma,
            src_nbma_subaddress: req.src_nbma_subaddress.clone(),
            src_proto: req.src_proto,
            dst_proto: (family(own) == req.protocol).then_some(own),
            body: Body::Entries {
                op,
                flags,
                request_id,
                cies,
            },
            extensions,
        }
    }
}

/// The request-wide facts a CIE is registered with.
struct Binding {
    now: Duration,
    claimed: IpAddr,
    nat_nbma: Option<IpAddr>,
    src_proto: IpAddr,
    request_id: u32,
    unique: bool,
}

/// The overlay prefixes a Registration Request asks for, one per CIE (as
/// [`RegistrationServer::handle_request`] would register them), for an admission policy.
pub fn requested_prefixes(req: &NhrpRepr) -> Vec<Prefix> {
    match (&req.body, req.src_proto) {
        (Body::Entries { cies, .. }, Some(src)) => {
            cies.iter().filter_map(|c| cie_prefix(c, src)).collect()
        }
        _ => Vec::new(),
    }
}

/// The prefix a CIE names; `None` only if its address and length cannot form one.
fn cie_prefix(cie: &Cie, src_proto: IpAddr) -> Option<Prefix> {
    let proto = cie.proto.unwrap_or(src_proto);
    let host = host_len(proto);
    let len = match cie.prefix_len {
        0 => host,
        l => l.min(host),
    };
    Prefix::new(proto, len).ok()
}

/// The CIE of the NAT extension telling a client the address its packets arrive from.
fn nat_cie(observed: IpAddr, src_proto: IpAddr) -> Cie {
    Cie {
        code: code::SUCCESS,
        prefix_len: host_len(src_proto),
        mtu: 0,
        holding_time: 0,
        preference: 0,
        nbma: Some(observed),
        nbma_subaddress: Vec::new(),
        proto: Some(src_proto),
    }
}

fn key(prefix: &Prefix) -> (IpAddr, u8) {
    (prefix.addr(), prefix.len())
}

pub(super) fn family(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

pub(super) fn host_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

#[cfg(test)]
mod tests;
