//! The Next Hop Client side of NHRP registration: registers this node's overlay address and
//! site prefixes, bound to its underlay (NBMA) address, with every configured Next Hop
//! Server, refreshes each registration at a third of its holding time, retransmits
//! unanswered requests with exponential backoff (same request ID), and tracks which server is
//! active: the most preferred one currently registered. A server that leaves a request
//! unanswered after the configured number of retransmissions, or whose registration expires,
//! stops counting as registered, so the next one takes over until it answers again.
//!
//! Inputs are [`RegistrationClient::handle_reply`] calls; outputs are drained with
//! [`RegistrationClient::poll`] at the time [`RegistrationClient::poll_timeout`] names. No
//! sockets, no clock, no randomness: the first request ID comes from the configuration.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU16;
use std::time::Duration;

use crate::prefix::Prefix;
use crate::wire::nhrp::{Body, Cie, Extension, ExtensionBody, NhrpRepr, Operation};

use super::server::{family, host_len};
use super::{FLAG_NAT, FLAG_PURGE_NO_REPLY, FLAG_UNIQUE, HOP_COUNT, auth, code, errors};

/// One Next Hop Server to register with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NhsConfig {
    /// Its underlay address: where requests go and replies come from.
    pub nbma: IpAddr,
    /// Its overlay address, used as destination protocol address; `None` uses the client's
    /// own (RFC 2332 allows either).
    pub protocol: Option<IpAddr>,
    /// Preference as in Cisco's `ip nhrp nhs … priority`: lower is preferred; ties go to the
    /// one listed first.
    pub priority: u8,
}

/// Configuration of a [`RegistrationClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// This node's underlay address (source NBMA address of its requests).
    pub nbma_address: IpAddr,
    /// This node's overlay address, always registered as a host entry.
    pub protocol_address: IpAddr,
    /// Further overlay addresses and site prefixes registered with it (one CIE each).
    pub prefixes: Vec<Prefix>,
    /// The servers, in configuration order.
    pub nhs: Vec<NhsConfig>,
    /// Holding time asked for, in seconds (`holdtime`).
    pub holding_time: NonZeroU16,
    /// MTU announced in the CIEs (0: unspecified).
    pub mtu: u16,
    /// Whether to register with the U (unique) flag.
    pub unique: bool,
    /// Cleartext secret sent in every request and required in every reply.
    pub secret: Option<Vec<u8>>,
    /// Wait after the first transmission of a request; doubles after each retransmission.
    pub retry_initial: Duration,
    /// Cap of that wait.
    pub retry_max: Duration,
    /// Retransmissions left unanswered after which a registered server counts as down.
    pub failover_after: u32,
    /// Request ID of the first request (the caller picks it at random); later ones count up.
    pub first_request_id: u32,
}

/// Why a [`ClientConfig`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientConfigError {
    /// No server is configured.
    NoNhs,
    /// A server's underlay address is not of the family of `nbma_address`.
    NbmaFamilyMismatch,
    /// A server's overlay address or a prefix is not of the family of `protocol_address`.
    ProtocolFamilyMismatch,
    /// `retry_initial` or `retry_max` is zero.
    ZeroRetryInterval,
}

/// A message to send to a server's underlay address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The server's underlay address.
    pub nhs: IpAddr,
    /// The Registration or Purge Request.
    pub message: NhrpRepr,
}

/// Registration state of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NhsState {
    /// Not registering (before the first poll, after shutdown).
    Idle,
    /// Not registered; a request is being (re)transmitted.
    Registering {
        /// Transmissions of the current attempt so far (retransmissions and requests after a
        /// NAK included); 0 before the first.
        attempt: u32,
        /// When the next transmission is due.
        next_retry: Duration,
    },
    /// Registered; refreshes (with their retransmissions) run in this state.
    Registered {
        /// When the registration lapses unless refreshed.
        expires: Duration,
        /// When the refresh starts.
        refresh_at: Duration,
    },
}

/// Counters of one server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NhsCounters {
    /// Requests sent with a new request ID.
    pub requests: u64,
    /// Retransmissions (same request ID).
    pub retransmissions: u64,
    /// Successful Registration Replies.
    pub registrations: u64,
    /// Replies with a NAK code.
    pub naks: u64,
    /// The code of the last NAK.
    pub last_nak: Option<u8>,
    /// Registrations given up because the server stopped answering.
    pub lost: u64,
    /// Registrations that reached their expiry.
    pub expired: u64,
    /// Replies from it that were ignored.
    pub ignored_replies: u64,
}

/// What [`RegistrationClient::statuses`] reports per server, for `mgre show nhrp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NhsStatus {
    /// The server's underlay address.
    pub nbma: IpAddr,
    /// Its configured priority.
    pub priority: u8,
    /// Its registration state.
    pub state: NhsState,
    /// Whether it is the active server.
    pub active: bool,
    /// The post-NAT underlay address it reported for this node, if it differs from
    /// `nbma_address`.
    pub nat_nbma: Option<IpAddr>,
    /// Its counters.
    pub counters: NhsCounters,
}

/// What [`RegistrationClient::handle_reply`] made of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyOutcome {
    /// Every CIE succeeded: registered for `holding_time` seconds (the shortest granted).
    Registered {
        /// Holding time granted, in seconds.
        holding_time: u16,
    },
    /// A CIE carried NAK `code`; the next request (new ID) follows after the backoff.
    Nak {
        /// The first non-zero CIE code.
        code: u8,
    },
    /// The message changed nothing.
    Ignored(ReplyIgnored),
}

/// Why a reply was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyIgnored {
    /// It came from an address that is not a configured server, or after shutdown.
    UnknownNhs,
    /// It is not a Registration Reply.
    NotARegistrationReply,
    /// Its request ID is not that of the request outstanding to this server.
    UnexpectedRequestId,
    /// It has no CIE.
    NoEntries,
    /// A secret is configured and the reply does not carry it.
    BadAuthentication,
    /// It carries a compulsory extension of an unknown type, so it must not be acted on
    /// (RFC 2332 §5.3); the caller may answer with
    /// [`check_compulsory`](super::errors::check_compulsory)'s Error Indication.
    UnrecognizedExtension,
}

/// The registrations of one NHC with its servers.
#[derive(Clone, Debug)]
pub struct RegistrationClient {
    config: ClientConfig,
    nhs: Vec<Nhs>,
    next_request_id: u32,
    stopped: bool,
}

impl ClientConfig {
    /// A configuration with FRR's defaults: holding time 7200 s, unique, no MTU, no secret,
    /// retransmissions after 1 s doubling up to 64 s, a server counts as down after 3
    /// unanswered retransmissions, first request ID 1.
    pub fn new(nbma_address: IpAddr, protocol_address: IpAddr, nhs: Vec<NhsConfig>) -> Self {
        ClientConfig {
            nbma_address,
            protocol_address,
            prefixes: Vec::new(),
            nhs,
            holding_time: NonZeroU16::new(7200).expect("7200 is not zero"),
            mtu: 0,
            unique: true,
            secret: None,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(64),
            failover_after: 3,
            first_request_id: 1,
        }
    }
}

impl RegistrationClient {
    /// A client that sends its first requests on the first [`RegistrationClient::poll`].
    pub fn new(config: ClientConfig) -> Result<Self, ClientConfigError> {
        if config.nhs.is_empty() {
            return Err(ClientConfigError::NoNhs);
        }
        let nbma = family(config.nbma_address);
        let proto = family(config.protocol_address);
        if config.nhs.iter().any(|n| family(n.nbma) != nbma) {
            return Err(ClientConfigError::NbmaFamilyMismatch);
        }
        if config
            .nhs
            .iter()
            .filter_map(|n| n.protocol)
            .chain(config.prefixes.iter().map(Prefix::addr))
            .any(|a| family(a) != proto)
        {
            return Err(ClientConfigError::ProtocolFamilyMismatch);
        }
        if config.retry_initial.is_zero() || config.retry_max.is_zero() {
            return Err(ClientConfigError::ZeroRetryInterval);
        }
        let nhs = config
            .nhs
            .iter()
            .map(|c| Nhs {
                config: c.clone(),
                registered: None,
                cycle: Some(Cycle {
                    request_id: None,
                    attempt: 0,
                    next_send: Duration::ZERO,
                }),
                nat_nbma: None,
                counters: NhsCounters::default(),
            })
            .collect();
        Ok(RegistrationClient {
            next_request_id: config.first_request_id,
            config,
            nhs,
            stopped: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// When [`RegistrationClient::poll`] must next be called; `None` after shutdown.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.stopped {
            return None;
        }
        self.nhs
            .iter()
            .flat_map(|n| {
                let refresh = n.registered.filter(|_| n.cycle.is_none());
                [
                    n.cycle.map(|c| c.next_send),
                    n.registered.map(|r| r.expires),
                    refresh.map(|r| r.refresh_at),
                ]
            })
            .flatten()
            .min()
    }

    /// Runs the timers due at `now` and returns the requests to send: first registrations,
    /// refreshes at a third of the granted holding time, retransmissions (same request ID)
    /// after 1, 2, 4 … s up to `retry_max`. Call it at [`RegistrationClient::poll_timeout`]
    /// (earlier calls are harmless). Work: one pass over the servers.
    #[must_use]
    pub fn poll(&mut self, now: Duration) -> Vec<Transmit> {
        let mut out = Vec::new();
        if self.stopped {
            return out;
        }
        let config = &self.config;
        for nhs in &mut self.nhs {
            if nhs.registered.is_some_and(|r| now >= r.expires) {
                nhs.registered = None;
                nhs.counters.expired += 1;
            }
            if nhs.cycle.is_none() {
                let start = match nhs.registered {
                    None => Some(now),
                    Some(r) if now >= r.refresh_at => Some(r.refresh_at),
                    Some(_) => None,
                };
                nhs.cycle = start.map(|next_send| Cycle {
                    request_id: None,
                    attempt: 0,
                    next_send,
                });
            }
            let Some(cycle) = nhs.cycle.as_mut() else {
                continue;
            };
            if now < cycle.next_send {
                continue;
            }
            if cycle.attempt > config.failover_after && nhs.registered.take().is_some() {
                nhs.counters.lost += 1;
            }
            cycle.attempt += 1;
            cycle.next_send = now + backoff(config, cycle.attempt);
            let request_id = match cycle.request_id {
                Some(id) => {
                    nhs.counters.retransmissions += 1;
                    id
                }
                None => {
                    let id = self.next_request_id;
                    self.next_request_id = id.wrapping_add(1);
                    cycle.request_id = Some(id);
                    nhs.counters.requests += 1;
                    id
                }
            };
            out.push(Transmit {
                nhs: nhs.config.nbma,
                message: registration_request(config, &nhs.config, request_id),
            });
        }
        out
    }

    /// Handles a message that arrived from underlay address `from_nhs`: a Registration Reply
    /// matching the request outstanding to that server registers it (every CIE code 0) or
    /// counts a NAK and schedules a new request after the backoff.
    pub fn handle_reply(
        &mut self,
        now: Duration,
        from_nhs: IpAddr,
        reply: &NhrpRepr,
    ) -> ReplyOutcome {
        let config = &self.config;
        let Some(nhs) = self
            .nhs
            .iter_mut()
            .find(|n| n.config.nbma == from_nhs)
            .filter(|_| !self.stopped)
        else {
            return ReplyOutcome::Ignored(ReplyIgnored::UnknownNhs);
        };
        let ignored = |nhs: &mut Nhs, why| {
            nhs.counters.ignored_replies += 1;
            ReplyOutcome::Ignored(why)
        };
        let (request_id, cies) = match &reply.body {
            Body::Entries {
                op: Operation::RegistrationReply,
                request_id,
                cies,
                ..
            } => (*request_id, cies),
            _ => return ignored(nhs, ReplyIgnored::NotARegistrationReply),
        };
        if errors::unrecognized_compulsory(reply).is_some() {
            return ignored(nhs, ReplyIgnored::UnrecognizedExtension);
        }
        if nhs.cycle.is_none_or(|c| c.request_id != Some(request_id)) {
            return ignored(nhs, ReplyIgnored::UnexpectedRequestId);
        }
        if cies.is_empty() {
            return ignored(nhs, ReplyIgnored::NoEntries);
        }
        if let Some(secret) = &config.secret
            && !auth::verify(&reply.extensions, secret)
        {
            return ignored(nhs, ReplyIgnored::BadAuthentication);
        }
        if let Some(nak) = cies.iter().map(|c| c.code).find(|&c| c != code::SUCCESS) {
            if let Some(cycle) = nhs.cycle.as_mut() {
                cycle.request_id = None;
                cycle.next_send = now + backoff(config, cycle.attempt);
            }
            nhs.counters.naks += 1;
            nhs.counters.last_nak = Some(nak);
            return ReplyOutcome::Nak { code: nak };
        }
        let holding_time = cies
            .iter()
            .map(|c| c.holding_time)
            .filter(|&t| t != 0)
            .min()
            .unwrap_or(config.holding_time.get());
        let held = Duration::from_secs(u64::from(holding_time));
        nhs.registered = Some(Registered {
            expires: now + held,
            refresh_at: now + held / 3,
        });
        nhs.cycle = None;
        nhs.nat_nbma = reported_nat_address(config, reply);
        nhs.counters.registrations += 1;
        ReplyOutcome::Registered { holding_time }
    }

    /// The underlay address of the active server: the most preferred registered one.
    pub fn active(&self) -> Option<IpAddr> {
        self.active_index().map(|i| self.nhs[i].config.nbma)
    }

    /// State and counters of every server, in configuration order.
    pub fn statuses(&self) -> impl Iterator<Item = NhsStatus> + '_ {
        let active = self.active_index();
        self.nhs.iter().enumerate().map(move |(i, n)| NhsStatus {
            nbma: n.config.nbma,
            priority: n.config.priority,
            state: n.state(),
            active: active == Some(i),
            nat_nbma: n.nat_nbma,
            counters: n.counters,
        })
    }

    /// Stops registering and returns a Purge Request (N flag set: no reply wanted) for each
    /// server that holds or may hold a registration. Afterwards every server is
    /// [`NhsState::Idle`] and `poll` returns nothing.
    #[must_use]
    pub fn shutdown(&mut self) -> Vec<Transmit> {
        let mut out = Vec::new();
        if self.stopped {
            return out;
        }
        self.stopped = true;
        for nhs in &mut self.nhs {
            let held = nhs.registered.take().is_some();
            let pending = nhs.cycle.take().is_some();
            if held || pending {
                let id = self.next_request_id;
                self.next_request_id = id.wrapping_add(1);
                out.push(Transmit {
                    nhs: nhs.config.nbma,
                    message: purge_request(&self.config, &nhs.config, id),
                });
            }
        }
        out
    }

    fn active_index(&self) -> Option<usize> {
        self.nhs
            .iter()
            .enumerate()
            .filter(|(_, n)| n.registered.is_some())
            .min_by_key(|(_, n)| n.config.priority)
            .map(|(i, _)| i)
    }
}

impl fmt::Display for ClientConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientConfigError::NoNhs => "no NHS configured",
            ClientConfigError::NbmaFamilyMismatch => {
                "an NHS underlay address is not of the family of the local one"
            }
            ClientConfigError::ProtocolFamilyMismatch => {
                "an NHS overlay address or a prefix is not of the family of the local one"
            }
            ClientConfigError::ZeroRetryInterval => "retry interval is zero",
        })
    }
}

impl std::error::Error for ClientConfigError {}

/// Per-server state.
#[derive(Clone, Debug)]
struct Nhs {
    config: NhsConfig,
    registered: Option<Registered>,
    /// The request being (re)transmitted, if any.
    cycle: Option<Cycle>,
    nat_nbma: Option<IpAddr>,
    counters: NhsCounters,
}

#[derive(Clone, Copy, Debug)]
struct Registered {
    expires: Duration,
    refresh_at: Duration,
}

/// One registration attempt: a request and its retransmissions, and the requests that follow
/// a NAK, until a successful reply.
#[derive(Clone, Copy, Debug)]
struct Cycle {
    /// ID of the outstanding request; `None` after a NAK (the next send takes a new one).
    request_id: Option<u32>,
    /// Transmissions so far.
    attempt: u32,
    next_send: Duration,
}

impl Nhs {
    fn state(&self) -> NhsState {
        match (self.registered, self.cycle) {
            (Some(r), _) => NhsState::Registered {
                expires: r.expires,
                refresh_at: r.refresh_at,
            },
            (None, Some(c)) => NhsState::Registering {
                attempt: c.attempt,
                next_retry: c.next_send,
            },
            (None, None) => NhsState::Idle,
        }
    }
}

/// The wait after transmission number `attempt` (1-based): `retry_initial · 2^(attempt-1)`,
/// at most `retry_max`.
fn backoff(config: &ClientConfig, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    config
        .retry_initial
        .saturating_mul(1 << doublings)
        .min(config.retry_max)
}

/// A Registration Request laid out as FRR nhrpd sends it: U and NAT flags, a first CIE
/// without addresses (the message's source addresses, prefix length 0xff when unique), one
/// CIE per extra prefix, empty transit/responder records, an empty NAT extension, then the
/// Authentication extension.
fn registration_request(config: &ClientConfig, nhs: &NhsConfig, request_id: u32) -> NhrpRepr {
    let own = Cie {
        code: code::SUCCESS,
        prefix_len: if config.unique {
            0xff
        } else {
            host_len(config.protocol_address)
        },
        mtu: config.mtu,
        holding_time: config.holding_time.get(),
        preference: 0,
        nbma: None,
        nbma_subaddress: Vec::new(),
        proto: None,
    };
    let cies = std::iter::once(own)
        .chain(config.prefixes.iter().map(|p| prefix_cie(config, p)))
        .collect();
    let mut extensions = vec![
        compulsory(ExtensionBody::ForwardTransit(Vec::new())),
        compulsory(ExtensionBody::ReverseTransit(Vec::new())),
        compulsory(ExtensionBody::ResponderAddress(Vec::new())),
        Extension {
            compulsory: false,
            body: ExtensionBody::NatAddress(Vec::new()),
        },
    ];
    extensions.extend(config.secret.as_deref().map(auth::extension));
    let flags = FLAG_NAT | if config.unique { FLAG_UNIQUE } else { 0 };
    request(
        config,
        nhs,
        Operation::RegistrationRequest,
        flags,
        request_id,
        cies,
        extensions,
    )
}

/// A Purge Request (no reply wanted) naming every registered prefix with this node's NBMA
/// address.
fn purge_request(config: &ClientConfig, nhs: &NhsConfig, request_id: u32) -> NhrpRepr {
    let own = Prefix::new(config.protocol_address, host_len(config.protocol_address))
        .expect("a host prefix of the address's own family is valid");
    let cies = std::iter::once(&own)
        .chain(&config.prefixes)
        .map(|p| Cie {
            nbma: Some(config.nbma_address),
            holding_time: 0,
            ..prefix_cie(config, p)
        })
        .collect();
    let extensions = config
        .secret
        .as_deref()
        .map(auth::extension)
        .into_iter()
        .collect();
    request(
        config,
        nhs,
        Operation::PurgeRequest,
        FLAG_PURGE_NO_REPLY,
        request_id,
        cies,
        extensions,
    )
}

fn prefix_cie(config: &ClientConfig, p: &Prefix) -> Cie {
    Cie {
        code: code::SUCCESS,
        prefix_len: p.len(),
        mtu: config.mtu,
        holding_time: config.holding_time.get(),
        preference: 0,
        nbma: None,
        nbma_subaddress: Vec::new(),
        proto: Some(p.addr()),
    }
}

fn request(
    config: &ClientConfig,
    nhs: &NhsConfig,
    op: Operation,
    flags: u16,
    request_id: u32,
    cies: Vec<Cie>,
    extensions: Vec<Extension>,
) -> NhrpRepr {
    NhrpRepr {
        nbma: family(config.nbma_address),
        protocol: family(config.protocol_address),
        snap: [0; 5],
        hop_count: HOP_COUNT,
        src_nbma: Some(config.nbma_address),
        src_nbma_subaddress: Vec::new(),
        src_proto: Some(config.protocol_address),
        dst_proto: Some(nhs.protocol.unwrap_or(config.protocol_address)),
        body: Body::Entries {
            op,
            flags,
            request_id,
            cies,
        },
        extensions,
    }
}

fn compulsory(body: ExtensionBody) -> Extension {
    Extension {
        compulsory: true,
        body,
    }
}

/// The post-NAT address a reply's NAT extension reports for this node: the last CIE for its
/// protocol address (FRR appends the observed address after echoing the request's CIEs),
/// when it differs from the configured underlay address.
fn reported_nat_address(config: &ClientConfig, reply: &NhrpRepr) -> Option<IpAddr> {
    reply
        .extensions
        .iter()
        .filter_map(|e| match &e.body {
            ExtensionBody::NatAddress(cies) => Some(cies),
            _ => None,
        })
        .flatten()
        .filter(|c| c.proto == Some(config.protocol_address))
        .filter_map(|c| c.nbma)
        .next_back()
        .filter(|&a| a != config.nbma_address)
}

#[cfg(test)]
mod tests;
