//! NHRP Error Indications (RFC 2332 §5.2.7) for messages carrying a compulsory extension this
//! implementation does not recognise (§5.3: "If set, and the NHS does not recognize the type
//! code, the NHRP 'request' is considered to be in error"): such a message must not be acted
//! on, and its sender gets an Error Indication with code 1 (Unrecognized Extension) pointing
//! at the offending extension.
//!
//! Non-compulsory unknown extensions are not an error: responders echo them (see
//! [`RegistrationServer::handle_request`](super::RegistrationServer::handle_request)). This
//! module only builds messages; it keeps no state and sends nothing.

use std::net::IpAddr;

use crate::wire::nhrp::{
    self, Body, Extension, ExtensionBody, FIXED_LEN, MANDATORY_LEN, NhrpPacket, NhrpRepr,
};

use super::HOP_COUNT;
use super::server::family;

/// Error code 1: a compulsory extension was not recognised (RFC 2332 §5.2.7).
pub const UNRECOGNIZED_EXTENSION: u16 = 1;

/// Checks `req`, parsed from `raw`, for a compulsory extension of an unknown type. `None` when
/// there is none (or `req` is itself an Error Indication, which is never answered with
/// one); otherwise the Error Indication to send back to where `req` came from: code 1, the
/// offset of the first such extension's header counted from the start of the fixed header,
/// and `raw`'s ar$pktsz bytes as the packet in error (cut so the indication fits in 65535
/// bytes). Addresses as RFC 2332 §5.2.7 gives them: the source NBMA and protocol addresses
/// are the responder's (`own_nbma`, `own_proto`; left out, length 0, when not of the
/// message's families), the destination protocol address is the source protocol address of
/// `req`. No extensions (FRR nhrpd adds none either: "Don't add extension according to
/// RFC").
///
/// If `raw` is not the message `req` was parsed from, the offset and bytes come from `req`
/// as [`check_compulsory_parsed`] computes them.
pub fn check_compulsory(
    req: &NhrpRepr,
    raw: &[u8],
    own_nbma: IpAddr,
    own_proto: IpAddr,
) -> Option<NhrpRepr> {
    let index = unrecognized_compulsory(req)?;
    match raw_extension_offset(raw, index) {
        Some(offset) => {
            // raw_extension_offset checked the header: ar$pktsz bytes are there.
            let size = NhrpPacket::new_unchecked(raw).packet_size();
            Some(error_indication(
                req,
                own_nbma,
                own_proto,
                offset,
                &raw[..size],
            ))
        }
        None => check_compulsory_parsed(req, own_nbma, own_proto),
    }
}

/// [`check_compulsory`] for a caller that holds only the parsed message: the offset is
/// computed from the lengths of the mandatory part and the extensions before the offending
/// one (equal to the raw one for every message [`NhrpRepr::parse`] accepts, since the
/// mandatory part ends exactly at ar$extoff and extensions are kept in wire order), and the
/// packet in error is `req` emitted again (which differs from the received bytes only in
/// what parsing drops: link padding, bytes after the End extension, a missing End extension).
pub fn check_compulsory_parsed(
    req: &NhrpRepr,
    own_nbma: IpAddr,
    own_proto: IpAddr,
) -> Option<NhrpRepr> {
    let index = unrecognized_compulsory(req)?;
    let mut packet = Vec::new();
    // A parsed message emits unless its End extension pushes it past 65535 bytes; the
    // packet in error is then cut below anyway, so the bytes without it do.
    if req.emit(&mut packet).is_err() {
        packet.clear();
    }
    let offset = extension_offset(req, index);
    Some(error_indication(req, own_nbma, own_proto, offset, &packet))
}

/// Index of the first compulsory extension of an unknown type in `req`, unless `req` is an
/// Error Indication.
pub fn unrecognized_compulsory(req: &NhrpRepr) -> Option<usize> {
    if matches!(req.body, Body::ErrorIndication { .. }) {
        return None;
    }
    req.extensions
        .iter()
        .position(|e| e.compulsory && matches!(e.body, ExtensionBody::Unknown { .. }))
}

/// Offset of extension `index` of `req` from the start of its fixed header, as
/// [`NhrpRepr::emit`] lays the message out.
pub fn extension_offset(req: &NhrpRepr, index: usize) -> usize {
    let headers: usize = req.extensions.iter().map(wire_len).sum();
    // buffer_len() is the mandatory part plus, with extensions, their headers and values
    // and the End extension.
    let end = if req.extensions.is_empty() {
        0
    } else {
        EXT_HEADER_LEN
    };
    let extoff = req.buffer_len() - headers - end;
    extoff + req.extensions[..index].iter().map(wire_len).sum::<usize>()
}

/// The Error Indication about `packet` (cut to fit), sent back to `req`'s source.
fn error_indication(
    req: &NhrpRepr,
    own_nbma: IpAddr,
    own_proto: IpAddr,
    offset: usize,
    packet: &[u8],
) -> NhrpRepr {
    let src_nbma = (family(own_nbma) == req.nbma).then_some(own_nbma);
    let src_proto = (family(own_proto) == req.protocol).then_some(own_proto);
    let mut ei = NhrpRepr {
        nbma: req.nbma,
        protocol: req.protocol,
        snap: req.snap,
        hop_count: HOP_COUNT,
        src_nbma,
        src_nbma_subaddress: Vec::new(),
        src_proto,
        dst_proto: req.src_proto,
        body: Body::ErrorIndication {
            code: UNRECOGNIZED_EXTENSION,
            offset: u16::try_from(offset).unwrap_or(u16::MAX),
            packet: Vec::new(),
        },
        extensions: Vec::new(),
    };
    let room = usize::from(u16::MAX) - ei.buffer_len();
    if let Body::ErrorIndication { packet: p, .. } = &mut ei.body {
        p.extend_from_slice(&packet[..packet.len().min(room)]);
    }
    ei
}

/// Offset of extension `index` in `raw`, walking the extension headers from ar$extoff;
/// `None` if `raw` does not hold that many extensions.
fn raw_extension_offset(raw: &[u8], index: usize) -> Option<usize> {
    let p = NhrpPacket::new_checked(raw).ok()?;
    let packet = p.packet();
    let mut pos = p.extension_offset();
    if pos < FIXED_LEN + MANDATORY_LEN {
        return None;
    }
    for _ in 0..index {
        let header = packet.get(pos..pos + EXT_HEADER_LEN)?;
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        pos += EXT_HEADER_LEN + len;
    }
    packet.get(pos..pos + EXT_HEADER_LEN).map(|_| pos)
}

/// Length of an extension on the wire: header and value.
fn wire_len(e: &Extension) -> usize {
    let value = match &e.body {
        ExtensionBody::ResponderAddress(cies)
        | ExtensionBody::ForwardTransit(cies)
        | ExtensionBody::ReverseTransit(cies)
        | ExtensionBody::NatAddress(cies) => cies.iter().map(nhrp::Cie::buffer_len).sum(),
        ExtensionBody::Authentication(data)
        | ExtensionBody::VendorPrivate(data)
        | ExtensionBody::Unknown { data, .. } => data.len(),
    };
    EXT_HEADER_LEN + value
}

/// Type and length words of an extension.
const EXT_HEADER_LEN: usize = 4;

#[cfg(test)]
mod tests;
