//! NHRP address resolution at a Next Hop Server (RFC 2332 §5.2.1–§5.2.2, §5.3.4) in the
//! DMVPN phase 3 style of FRR nhrpd: a hub that holds the registration of the destination
//! does not answer for it but forwards the Resolution Request to the spoke that registered
//! it, which answers the requester directly (see [`super::shortcut`]). Also the pieces both
//! sides share: the resolution flags, the forwarding step (hop count, Forward Transit NHS
//! Record, loop detection, authentication regenerated hop by hop) and the reply layout.
//!
//! Interop notes, from FRR `nhrpd/nhrp_peer.c` (`nhrp_handle_resolution_req`,
//! `nhrp_peer_forward`) and `nhrpd/nhrp_shortcut.c`: requests carry Q|A|S, replies copy Q|S
//! and add D|A; a request received with hop count 0 is not forwarded; a Forward Transit
//! record that already names this server or the next hop is a loop; the Authentication
//! extension is never copied but regenerated with the forwarder's secret; an empty NAT
//! extension of a forwarded request is filled with the requester's post-NAT address when the
//! forwarder knows it. Where FRR drops silently (hop count, loop, failed authentication) this
//! module answers with an Error Indication (codes 15, 3 and 11 of RFC 2332 §5.2.7, the last as
//! FRR itself does for failed authentication), so the requester's operator sees why.
//!
//! This module only decides: it never sends, keeps no state of its own and learns the time
//! from its callers.

use std::net::IpAddr;
use std::time::Duration;

use crate::wire::nhrp::{Body, Cie, Extension, ExtensionBody, NhrpRepr, Operation};

use super::server::{RegistrationServer, family, host_len};
use super::{HOP_COUNT, auth, code};

/// Resolution flag Q: the requester is a router (RFC 2332 §5.2.1, FRR
/// `NHRP_FLAG_RESOLUTION_SOURCE_IS_ROUTER`).
pub const FLAG_SOURCE_IS_ROUTER: u16 = 0x8000;
/// Resolution flag A: an authoritative answer is wanted / given.
pub const FLAG_AUTHORITATIVE: u16 = 0x4000;
/// Resolution flag D: the destination's binding is stable.
pub const FLAG_DESTINATION_STABLE: u16 = 0x2000;
/// Resolution flag U: the binding is unique.
pub const FLAG_RESOLUTION_UNIQUE: u16 = 0x1000;
/// Resolution flag S: the source's binding is stable.
pub const FLAG_SOURCE_STABLE: u16 = 0x0800;
/// The flags of a Resolution Request as FRR nhrpd sends it.
pub const REQUEST_FLAGS: u16 = FLAG_SOURCE_IS_ROUTER | FLAG_AUTHORITATIVE | FLAG_SOURCE_STABLE;

/// Resolution Reply CIE code 12: no internetworking-layer address to NBMA address binding
/// exists (RFC 2332 §5.2.2). FRR nhrpd names its code 11 `NHRP_CODE_NO_BINDING_EXISTS`; any
/// non-zero code is a NAK to a requester.
pub const NO_BINDING_EXISTS: u8 = 12;

/// Error Indication codes used here (RFC 2332 §5.2.7, FRR `NHRP_ERROR_*`).
pub mod error_code {
    /// A request came back to an NHS it already passed.
    pub const LOOP_DETECTED: u16 = 3;
    /// The Authentication extension is missing or wrong.
    pub const AUTHENTICATION_FAILURE: u16 = 11;
    /// The hop count ran out before the request reached an answer.
    pub const HOP_COUNT_EXCEEDED: u16 = 15;
}

/// What an NHS does with a Resolution Request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum ResolutionOutcome {
    /// Phase 3: send `message` (the forwarded request) to `to`, the underlay address of the
    /// spoke that registered the destination (its post-NAT address when it registered from
    /// behind NAT).
    Forward {
        /// Underlay destination.
        to: IpAddr,
        /// The request, hop count decremented, this server appended to its Forward Transit
        /// NHS Record, authentication regenerated.
        message: NhrpRepr,
    },
    /// Send the Resolution Reply `message` to `to`, the requester (see
    /// [`requester_address`]): the destination is this server's own address.
    Reply {
        /// Underlay destination.
        to: IpAddr,
        /// The Resolution Reply.
        message: NhrpRepr,
    },
    /// Send the Error Indication `message` back to `to`, the underlay address the request
    /// came from (failed authentication, hop count exhausted or a forwarding loop).
    Error {
        /// Underlay destination.
        to: IpAddr,
        /// The Error Indication; its code says why.
        message: NhrpRepr,
    },
    /// No registration covers the destination. The caller forwards the request to its own
    /// upstream NHS with [`RegistrationServer::forward_upstream`] (a regional hub in a
    /// hierarchy) or answers
    /// with [`RegistrationServer::negative_resolution_reply`] sent to [`requester_address`].
    Unresolved,
    /// The message is not a Resolution Request this server can handle: another type, no
    /// source or destination protocol address, an underlay source of another family than
    /// its NBMA addresses, or families the server has no address in.
    Ignored,
}

/// Why [`forward_resolution`] refused to forward a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForwardError {
    /// The request arrived with hop count 0.
    HopCountExceeded,
    /// Its Forward Transit NHS Record already names the forwarder or the next hop.
    LoopDetected,
}

impl ForwardError {
    /// The Error Indication code reporting it.
    pub fn error_code(self) -> u16 {
        match self {
            ForwardError::HopCountExceeded => error_code::HOP_COUNT_EXCEEDED,
            ForwardError::LoopDetected => error_code::LOOP_DETECTED,
        }
    }
}

/// The NHS a request passes through, as [`forward_resolution`] records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransitNhs<'a> {
    /// Its underlay address.
    pub nbma: IpAddr,
    /// Its overlay address.
    pub protocol: IpAddr,
    /// Holding time of its transit CIE, in seconds.
    pub holding_time: u16,
    /// The secret the forwarded message is authenticated with, if any.
    pub secret: Option<&'a [u8]>,
}

impl RegistrationServer {
    /// Handles a Resolution Request that arrived from underlay address `src_nbma`.
    ///
    /// In order: authentication (a configured secret must be present, else an Error
    /// Indication code 11); the server's own protocol address is answered with a Resolution
    /// Reply carrying the server's CIE; a destination inside a registered prefix (longest
    /// match, live entries only) is forwarded to the registering spoke (phase 3, as FRR
    /// nhrpd); anything else is [`ResolutionOutcome::Unresolved`]. Work: the prefix lookup,
    /// O(w log n) for address width w, plus copying the message.
    pub fn handle_resolution_request(
        &self,
        now: Duration,
        src_nbma: IpAddr,
        req: &NhrpRepr,
    ) -> ResolutionOutcome {
        let config = self.config();
        let (Some(src_proto), Some(dst_proto)) = (req.src_proto, req.dst_proto) else {
            return ResolutionOutcome::Ignored;
        };
        let own_families = family(config.nbma_address) == req.nbma
            && family(config.protocol_address) == req.protocol;
        if !is_resolution_request(req) || family(src_nbma) != req.nbma || !own_families {
            return ResolutionOutcome::Ignored;
        }
        let transit = self.transit();
        if let Some(secret) = transit.secret
            && !auth::verify(&req.extensions, secret)
        {
            return ResolutionOutcome::Error {
                to: src_nbma,
                message: error_indication(req, &transit, error_code::AUTHENTICATION_FAILURE),
            };
        }
        if dst_proto == config.protocol_address {
            let answer = transit_cie(&transit);
            return ResolutionOutcome::Reply {
                to: requester_address(req, src_nbma),
                message: resolution_reply(req, answer.clone(), Some(answer), transit.secret),
            };
        }
        let Some(owner) = self.longest_match(dst_proto, now) else {
            return ResolutionOutcome::Unresolved;
        };
        let to = owner.nat_nbma.unwrap_or(owner.nbma);
        match forward_resolution(req, &transit, to) {
            Ok(mut message) => {
                let requester_nat = self
                    .longest_match(src_proto, now)
                    .and_then(|r| r.nat_nbma)
                    .map(|nat| nat_cie(nat, src_proto));
                fill_empty_nat_extension(&mut message, requester_nat);
                ResolutionOutcome::Forward { to, message }
            }
            Err(e) => ResolutionOutcome::Error {
                to: src_nbma,
                message: error_indication(req, &transit, e.error_code()),
            },
        }
    }

    /// This server as a transit NHS, for [`forward_resolution`] of requests it could not
    /// resolve itself.
    pub fn transit(&self) -> TransitNhs<'_> {
        let config = self.config();
        TransitNhs {
            nbma: config.nbma_address,
            protocol: config.protocol_address,
            holding_time: config.max_holding_time.get(),
            secret: config.secret.as_deref(),
        }
    }

    /// A request [`Self::handle_resolution_request`] left [`ResolutionOutcome::Unresolved`],
    /// passed on to this server's own NHS at underlay address `upstream` (a regional hub
    /// asking its core hub, hierarchical DMVPN): [`ResolutionOutcome::Forward`] with this
    /// server in the Forward Transit NHS Record, or [`ResolutionOutcome::Error`] back to
    /// `src_nbma` when the hop count ran out or the request already passed `upstream` or
    /// this server (a loop).
    pub fn forward_upstream(
        &self,
        src_nbma: IpAddr,
        req: &NhrpRepr,
        upstream: IpAddr,
    ) -> ResolutionOutcome {
        let transit = self.transit();
        match forward_resolution(req, &transit, upstream) {
            Ok(message) => ResolutionOutcome::Forward {
                to: upstream,
                message,
            },
            Err(e) => ResolutionOutcome::Error {
                to: src_nbma,
                message: error_indication(req, &transit, e.error_code()),
            },
        }
    }

    /// The negative Resolution Reply (CIE code 12, [`NO_BINDING_EXISTS`]) to a request this
    /// server could not resolve and has no upstream NHS for; send it to
    /// [`requester_address`].
    pub fn negative_resolution_reply(&self, req: &NhrpRepr) -> NhrpRepr {
        let transit = self.transit();
        let responder = (family(transit.nbma) == req.nbma
            && family(transit.protocol) == req.protocol)
            .then(|| transit_cie(&transit));
        negative_reply(req, responder, transit.secret)
    }
}

/// `req` as `via` forwards it to the NHS or client at underlay address `to`: hop count
/// decremented, `via`'s CIE appended to the Forward Transit NHS Record (one is added if the
/// request has none), every other extension copied except Authentication, which is
/// regenerated with `via`'s secret. Refused when the hop count is already 0 or the record
/// names `via` or `to` (a loop). Usable by a hub and by a hub that is itself a client of an
/// upstream hub.
pub fn forward_resolution(
    req: &NhrpRepr,
    via: &TransitNhs<'_>,
    to: IpAddr,
) -> Result<NhrpRepr, ForwardError> {
    let hop_count = req
        .hop_count
        .checked_sub(1)
        .ok_or(ForwardError::HopCountExceeded)?;
    let mut extensions = Vec::with_capacity(req.extensions.len() + 2);
    let mut recorded = false;
    for e in &req.extensions {
        let body = match &e.body {
            ExtensionBody::Authentication(_) => continue,
            ExtensionBody::ForwardTransit(cies) if !recorded => {
                if cies
                    .iter()
                    .any(|c| c.nbma == Some(via.nbma) || c.nbma == Some(to))
                {
                    return Err(ForwardError::LoopDetected);
                }
                recorded = true;
                let mut cies = cies.clone();
                cies.push(transit_cie(via));
                ExtensionBody::ForwardTransit(cies)
            }
            other => other.clone(),
        };
        extensions.push(Extension {
            compulsory: e.compulsory,
            body,
        });
    }
    if !recorded {
        extensions.push(Extension {
            compulsory: true,
            body: ExtensionBody::ForwardTransit(vec![transit_cie(via)]),
        });
    }
    extensions.extend(via.secret.map(auth::extension));
    Ok(NhrpRepr {
        hop_count,
        extensions,
        ..req.clone()
    })
}

/// The Resolution Reply to `req` with the one CIE `answer`, laid out as FRR nhrpd answers:
/// the request's source and destination addresses and request ID, flags Q and S copied and
/// D and A set; the Responder Address extension carries `responder`; Forward and Reverse
/// Transit records are copied as received (RFC 2332 §5.3.3: the responder copies them,
/// NHSs forwarding the reply append to the reverse one); the NAT extension is answered empty
/// (the responder does not know its own post-NAT address here); Authentication is
/// regenerated with `secret`; vendor and unknown extensions are not echoed.
pub fn resolution_reply(
    req: &NhrpRepr,
    answer: Cie,
    responder: Option<Cie>,
    secret: Option<&[u8]>,
) -> NhrpRepr {
    let (flags, request_id) = match &req.body {
        Body::Entries {
            flags, request_id, ..
        } => (*flags, *request_id),
        _ => (0, 0),
    };
    let mut extensions = Vec::with_capacity(req.extensions.len() + 1);
    for e in &req.extensions {
        let body = match &e.body {
            ExtensionBody::ResponderAddress(_) => {
                ExtensionBody::ResponderAddress(responder.iter().cloned().collect())
            }
            ExtensionBody::ForwardTransit(_) | ExtensionBody::ReverseTransit(_) => e.body.clone(),
            ExtensionBody::NatAddress(_) => ExtensionBody::NatAddress(Vec::new()),
            ExtensionBody::Authentication(_)
            | ExtensionBody::VendorPrivate(_)
            | ExtensionBody::Unknown { .. } => continue,
        };
        extensions.push(Extension {
            compulsory: e.compulsory,
            body,
        });
    }
    extensions.extend(secret.map(auth::extension));
    NhrpRepr {
        nbma: req.nbma,
        protocol: req.protocol,
        snap: req.snap,
        hop_count: HOP_COUNT,
        src_nbma: req.src_nbma,
        src_nbma_subaddress: req.src_nbma_subaddress.clone(),
        src_proto: req.src_proto,
        dst_proto: req.dst_proto,
        body: Body::Entries {
            op: Operation::ResolutionReply,
            flags: (flags & (FLAG_SOURCE_IS_ROUTER | FLAG_SOURCE_STABLE))
                | FLAG_DESTINATION_STABLE
                | FLAG_AUTHORITATIVE,
            request_id,
            cies: vec![answer],
        },
        extensions,
    }
}

/// The Resolution Reply refusing `req` with CIE code 12 for its destination (host prefix,
/// no NBMA address, holding time 0).
pub fn negative_reply(req: &NhrpRepr, responder: Option<Cie>, secret: Option<&[u8]>) -> NhrpRepr {
    let answer = Cie {
        code: NO_BINDING_EXISTS,
        prefix_len: req.dst_proto.map_or(0, host_len),
        mtu: 0,
        holding_time: 0,
        preference: 0,
        nbma: None,
        nbma_subaddress: Vec::new(),
        proto: req.dst_proto,
    };
    resolution_reply(req, answer, responder, secret)
}

/// Where the answer to `req`, received from underlay address `src_nbma`, goes: straight to
/// the requester, like every phase 3 answer, rather than back along the NHS path. That is the
/// post-NAT address the request's NAT extension reports for the requester if any, else
/// `src_nbma` when the request came directly from the requester (its Forward Transit NHS
/// Record is empty or absent), else the request's source NBMA address.
pub fn requester_address(req: &NhrpRepr, src_nbma: IpAddr) -> IpAddr {
    let nat = req.src_proto.and_then(|p| nat_address_of(req, p));
    let forwarded = req
        .extensions
        .iter()
        .any(|e| matches!(&e.body, ExtensionBody::ForwardTransit(cies) if !cies.is_empty()));
    nat.or(forwarded.then_some(req.src_nbma).flatten())
        .unwrap_or(src_nbma)
}

/// Whether `req` is a Resolution Request.
pub(super) fn is_resolution_request(req: &NhrpRepr) -> bool {
    matches!(
        req.body,
        Body::Entries {
            op: Operation::ResolutionRequest,
            ..
        }
    )
}

/// The CIE the NAT extension uses to tell where `proto`'s owner is really reached.
pub(super) fn nat_cie(nat: IpAddr, proto: IpAddr) -> Cie {
    Cie {
        code: code::SUCCESS,
        prefix_len: host_len(proto),
        mtu: 0,
        holding_time: 0,
        preference: 0,
        nbma: Some(nat),
        nbma_subaddress: Vec::new(),
        proto: Some(proto),
    }
}

/// The post-NAT address the NAT extension of `msg` reports for `proto`, if any.
pub(super) fn nat_address_of(msg: &NhrpRepr, proto: IpAddr) -> Option<IpAddr> {
    msg.extensions
        .iter()
        .filter_map(|e| match &e.body {
            ExtensionBody::NatAddress(cies) => Some(cies),
            _ => None,
        })
        .flatten()
        .filter(|c| c.proto == Some(proto))
        .find_map(|c| c.nbma)
}

/// An Error Indication from `from` about `req`, addressed to the request's source protocol
/// address, carrying the request as emitted.
fn error_indication(req: &NhrpRepr, from: &TransitNhs<'_>, code: u16) -> NhrpRepr {
    let mut packet = Vec::with_capacity(req.buffer_len());
    // A parsed message always emits again; should it not, the indication carries no copy.
    if req.emit(&mut packet).is_err() {
        packet.clear();
    }
    NhrpRepr {
        nbma: req.nbma,
        protocol: req.protocol,
        snap: req.snap,
        hop_count: HOP_COUNT,
        src_nbma: Some(from.nbma),
        src_nbma_subaddress: Vec::new(),
        src_proto: Some(from.protocol),
        dst_proto: req.src_proto,
        body: Body::ErrorIndication {
            code,
            offset: 0,
            packet,
        },
        extensions: from.secret.map(auth::extension).into_iter().collect(),
    }
}

/// The CIE naming a transit or responding NHS.
fn transit_cie(via: &TransitNhs<'_>) -> Cie {
    Cie {
        code: code::SUCCESS,
        prefix_len: host_len(via.protocol),
        mtu: 0,
        holding_time: via.holding_time,
        preference: 0,
        nbma: Some(via.nbma),
        nbma_subaddress: Vec::new(),
        proto: Some(via.protocol),
    }
}

/// Puts `cie` into the NAT extension of `msg` if that extension is present and empty (FRR
/// `nhrp_peer_forward`).
fn fill_empty_nat_extension(msg: &mut NhrpRepr, cie: Option<Cie>) {
    let Some(cie) = cie else { return };
    for e in &mut msg.extensions {
        if let ExtensionBody::NatAddress(cies) = &mut e.body
            && cies.is_empty()
        {
            cies.push(cie);
            return;
        }
    }
}

#[cfg(test)]
mod tests;
