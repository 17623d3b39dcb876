//! NHRP messages (RFC 2332), carried over GRE with protocol type 0x2001, for IPv4/IPv6 NBMA
//! (underlay) and IPv4/IPv6 protocol (overlay) addresses.
//!
//! [`NhrpPacket`] is a zero-copy view of the 20-byte fixed header; [`NhrpRepr`] is a whole
//! validated message (mandatory part, Client Information Entries, extensions) with `parse`,
//! `buffer_len` and `emit`. Message types 1–6 carry CIEs, Error Indication (7) and Traffic
//! Indication (8, the DMVPN phase 3 redirect as sent by Cisco and FRR nhrpd) carry the packet
//! that caused them. Extensions keep their order and compulsory bit; unknown ones are kept as
//! raw bytes so a responder can echo or refuse them. This is control-plane code: the repr owns
//! small vectors. Parsing never panics, does work linear in the input and allocates at most
//! in proportion to it. Nothing here performs I/O or keeps state.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum;

/// GRE protocol type of NHRP.
pub use super::gre::PROTO_NHRP;

/// Length of the fixed header.
pub const FIXED_LEN: usize = 20;
/// Length of the mandatory-part header (before its addresses).
pub const MANDATORY_LEN: usize = 8;
/// Length of a CIE header (before its addresses).
pub const CIE_LEN: usize = 12;
/// The only NHRP version (ar$op.version).
pub const VERSION: u8 = 1;
/// Compulsory bit of an extension type.
pub const EXT_COMPULSORY: u16 = 0x8000;

/// Why an NHRP packet was rejected by [`NhrpRepr::parse`]. One variant per cause, so the
/// daemon can count drops by reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NhrpError {
    /// Shorter than the fixed header, or than the ar$pktsz it announces.
    Truncated,
    /// ar$pktsz is smaller than the fixed header.
    BadPacketSize,
    /// ar$chksum does not verify over the ar$pktsz bytes.
    BadChecksum,
    /// ar$op.version is not 1.
    BadVersion,
    /// ar$afn is neither 1 (IPv4) nor 2 (IPv6).
    UnsupportedAfn,
    /// ar$pro.type is neither 0x0800 nor 0x86DD.
    UnsupportedProtocol,
    /// ar$op.type is not 1–8.
    UnsupportedType,
    /// A type/length octet has the E.164 bit (0x40) or the reserved bit (0x80) set; only
    /// IP NBMA addresses (NSAP form) are supported.
    UnsupportedAddressType,
    /// An address length is neither 0 nor the width of its family.
    BadAddressLength,
    /// ar$extoff points into the fixed header or past the end of the packet.
    BadExtensionOffset,
    /// The mandatory part or one of its addresses runs past ar$extoff or the packet end.
    MandatoryOverrun,
    /// A CIE header or one of its addresses runs past the end of its list.
    CieOverrun,
    /// An extension header or value runs past the end of the packet.
    ExtensionOverrun,
}

/// Why an [`NhrpRepr`] cannot be emitted (a caller bug, never input-driven).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NhrpEmitError {
    /// An address does not match the family of its field (NBMA or protocol).
    FamilyMismatch,
    /// A subaddress is longer than 63 bytes (the 6-bit length of its type/length octet).
    SubaddressTooLong,
    /// An [`ExtensionBody::Unknown`] uses a known or out-of-range type number.
    NotUnknownExtension,
    /// The message would exceed 65535 bytes.
    TooLong,
}

/// Address family of the NBMA (ar$afn) or protocol (ar$pro.type) addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4: afn 1, protocol type 0x0800, 4-byte addresses.
    Ipv4,
    /// IPv6: afn 2, protocol type 0x86DD, 16-byte addresses.
    Ipv6,
}

/// Message type (ar$op.type) of the messages that carry CIEs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// 1.
    ResolutionRequest,
    /// 2.
    ResolutionReply,
    /// 3.
    RegistrationRequest,
    /// 4.
    RegistrationReply,
    /// 5.
    PurgeRequest,
    /// 6.
    PurgeReply,
}

/// What follows the common addresses of the mandatory part.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Body {
    /// Types 1–6: flags, request ID and Client Information Entries.
    Entries {
        /// Message type.
        op: Operation,
        /// Type-specific flags (e.g. Q/A/D/U/S for resolution, U for registration).
        flags: u16,
        /// Request ID, echoed in the reply.
        request_id: u32,
        /// Client Information Entries, in order.
        cies: Vec<Cie>,
    },
    /// Type 7: an error about a received packet. The 16-bit unused word before the code is
    /// ignored on parse and sent as zero (FRR nhrpd copies the offending packet's flags there).
    ErrorIndication {
        /// Error code (1 unrecognized extension, 6 unreachable, 7 protocol error, …).
        code: u16,
        /// Offset into `packet` where the error was found.
        offset: u16,
        /// The NHRP packet in error (or its leading part).
        packet: Vec<u8>,
    },
    /// Type 8: traffic to `dst_proto` took a suboptimal path (DMVPN redirect). Laid out as
    /// FRR nhrpd sends it: the traffic code in the flags word, the 32-bit request ID word
    /// ignored on parse and sent as zero, then the addresses and the triggering packet.
    TrafficIndication {
        /// Traffic code (0 in what FRR and Cisco send).
        code: u16,
        /// The data packet (from its IP header) that triggered the indication.
        packet: Vec<u8>,
    },
}

/// A Client Information Entry. Its 16-bit unused field is ignored on parse and sent as zero.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cie {
    /// Code (0 success; NAK causes in replies).
    pub code: u8,
    /// Prefix length of the protocol address.
    pub prefix_len: u8,
    /// MTU (0 when unspecified).
    pub mtu: u16,
    /// Holding time in seconds.
    pub holding_time: u16,
    /// Preference.
    pub preference: u8,
    /// Client NBMA address (length 0 when absent).
    pub nbma: Option<IpAddr>,
    /// Client NBMA subaddress (normally empty for IP).
    pub nbma_subaddress: Vec<u8>,
    /// Client protocol address (length 0 when absent).
    pub proto: Option<IpAddr>,
}

/// One extension, in wire order. The End extension is implicit: emitted after the last one,
/// and parsing stops at it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Extension {
    /// The compulsory bit as received (or to send).
    pub compulsory: bool,
    /// Type and value.
    pub body: ExtensionBody,
}

/// Type and value of an [`Extension`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExtensionBody {
    /// Type 3: the responder's CIE (none in a request).
    ResponderAddress(Vec<Cie>),
    /// Type 4: NHSs the request passed through.
    ForwardTransit(Vec<Cie>),
    /// Type 5: NHSs the reply passed through.
    ReverseTransit(Vec<Cie>),
    /// Type 7: SPI and authentication data, raw.
    Authentication(Vec<u8>),
    /// Type 8: vendor ID and data, raw.
    VendorPrivate(Vec<u8>),
    /// Type 9 (Cisco/nhrpd): the NAT-translated NBMA address as seen by the peer, as CIEs.
    NatAddress(Vec<Cie>),
    /// Any other type, kept verbatim so it can be echoed or refused.
    Unknown {
        /// Type number (15 bits, not 0, 3, 4, 5, 7, 8 or 9).
        kind: u16,
        /// Value.
        data: Vec<u8>,
    },
}

/// A validated NHRP message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NhrpRepr {
    /// Family of the NBMA addresses (ar$afn).
    pub nbma: Family,
    /// Family of the protocol addresses (ar$pro.type).
    pub protocol: Family,
    /// ar$pro.snap, carried verbatim (zero for the EtherType protocol types).
    pub snap: [u8; 5],
    /// ar$hopcnt.
    pub hop_count: u8,
    /// Source NBMA address.
    pub src_nbma: Option<IpAddr>,
    /// Source NBMA subaddress.
    pub src_nbma_subaddress: Vec<u8>,
    /// Source protocol address.
    pub src_proto: Option<IpAddr>,
    /// Destination protocol address.
    pub dst_proto: Option<IpAddr>,
    /// Type-specific rest of the mandatory part.
    pub body: Body,
    /// Extensions in wire order, without the End extension.
    pub extensions: Vec<Extension>,
}

/// Zero-copy view of an NHRP fixed header.
///
/// After [`NhrpPacket::new_checked`] succeeds no accessor panics, and `packet()` is the
/// ar$pktsz bytes of the message.
#[derive(Debug, Clone, Copy)]
pub struct NhrpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NhrpPacket<T> {
    /// Wraps a buffer without checking it; accessors may panic on short input.
    pub const fn new_unchecked(buffer: T) -> Self {
        NhrpPacket { buffer }
    }

    /// Wraps a buffer, checking it holds the fixed header and the ar$pktsz bytes it announces.
    pub fn new_checked(buffer: T) -> Result<Self, NhrpError> {
        let p = NhrpPacket { buffer };
        let len = p.buffer.as_ref().len();
        if len < FIXED_LEN {
            return Err(NhrpError::Truncated);
        }
        if p.packet_size() < FIXED_LEN {
            return Err(NhrpError::BadPacketSize);
        }
        if p.packet_size() > len {
            return Err(NhrpError::Truncated);
        }
        Ok(p)
    }

    /// ar$afn.
    pub fn afn(&self) -> u16 {
        self.u16_at(0)
    }
    /// ar$pro.type.
    pub fn protocol_type(&self) -> u16 {
        self.u16_at(2)
    }
    /// ar$pro.snap.
    pub fn snap(&self) -> [u8; 5] {
        let d = self.buffer.as_ref();
        [d[4], d[5], d[6], d[7], d[8]]
    }
    /// ar$hopcnt.
    pub fn hop_count(&self) -> u8 {
        self.buffer.as_ref()[9]
    }
    /// ar$pktsz.
    pub fn packet_size(&self) -> usize {
        usize::from(self.u16_at(10))
    }
    /// ar$chksum.
    pub fn checksum_field(&self) -> u16 {
        self.u16_at(12)
    }
    /// ar$extoff (0: no extensions).
    pub fn extension_offset(&self) -> usize {
        usize::from(self.u16_at(14))
    }
    /// ar$op.version.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[16]
    }
    /// ar$op.type.
    pub fn op_type(&self) -> u8 {
        self.buffer.as_ref()[17]
    }
    /// ar$shtl: type/length of the source NBMA address.
    pub fn shtl(&self) -> u8 {
        self.buffer.as_ref()[18]
    }
    /// ar$sstl: type/length of the source NBMA subaddress.
    pub fn sstl(&self) -> u8 {
        self.buffer.as_ref()[19]
    }
    /// True when the checksum verifies over the ar$pktsz bytes.
    ///
    /// For an odd length it also accepts the checksum FRR nhrpd (and opennhrp) compute on
    /// little-endian hosts: they sum native 16-bit words and add the odd last byte as
    /// `htons(byte)`, i.e. as the low-order byte of a big-endian word where RFC 1071 pads it
    /// as the high-order byte. Even lengths (everything but an Error or Traffic Indication
    /// carrying an odd-length packet) have one valid checksum.
    pub fn verify_checksum(&self) -> bool {
        let packet = self.packet();
        if checksum::checksum(packet) == 0 {
            return true;
        }
        match packet.split_last() {
            Some((&last, even)) if packet.len() % 2 == 1 => {
                checksum::fold(checksum::accumulate(0, even) + u64::from(last)) == 0xffff
            }
            _ => false,
        }
    }
    /// The ar$pktsz bytes of the message (trailing link padding excluded).
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.packet_size()]
    }

    fn u16_at(&self, off: usize) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[off], d[off + 1]])
    }
}

impl NhrpRepr {
    /// Parses and validates the NHRP message at the start of `data` (bytes past ar$pktsz are
    /// ignored as link padding).
    ///
    /// Work bound: one checksum pass plus one pass over the message; allocation at most
    /// proportional to its length. Extensions end at the End extension (bytes after it are
    /// ignored) or, leniently, at the end of the packet.
    pub fn parse(data: &[u8]) -> Result<NhrpRepr, NhrpError> {
        let p = NhrpPacket::new_checked(data)?;
        if p.version() != VERSION {
            return Err(NhrpError::BadVersion);
        }
        if !p.verify_checksum() {
            return Err(NhrpError::BadChecksum);
        }
        let nbma = match p.afn() {
            AFN_IPV4 => Family::Ipv4,
            AFN_IPV6 => Family::Ipv6,
            _ => return Err(NhrpError::UnsupportedAfn),
        };
        let protocol = match p.protocol_type() {
            super::gre::PROTO_IPV4 => Family::Ipv4,
            super::gre::PROTO_IPV6 => Family::Ipv6,
            _ => return Err(NhrpError::UnsupportedProtocol),
        };
        let op = p.op_type();
        if !(1..=8).contains(&op) {
            return Err(NhrpError::UnsupportedType);
        }
        let src_nbma_len = type_len(p.shtl())?;
        let src_sub_len = type_len(p.sstl())?;
        let packet = p.packet();
        let extoff = p.extension_offset();
        let mandatory_end = match extoff {
            0 => packet.len(),
            off if off < FIXED_LEN || off > packet.len() => {
                return Err(NhrpError::BadExtensionOffset);
            }
            off => off,
        };

        let mut r = Reader::new(
            &packet[FIXED_LEN..mandatory_end],
            NhrpError::MandatoryOverrun,
        );
        let src_proto_len = usize::from(r.u8()?);
        let dst_proto_len = usize::from(r.u8()?);
        let word16 = r.u16()?;
        let word32 = r.u32()?;
        let src_nbma = address(r.take(src_nbma_len)?, nbma)?;
        let src_nbma_subaddress = r.take(src_sub_len)?.to_vec();
        let src_proto = address(r.take(src_proto_len)?, protocol)?;
        let dst_proto = address(r.take(dst_proto_len)?, protocol)?;
        let rest = r.rest();
        let body = match op {
            7 => Body::ErrorIndication {
                code: (word32 >> 16) as u16,
                offset: word32 as u16,
                packet: rest.to_vec(),
            },
            8 => Body::TrafficIndication {
                code: word16,
                packet: rest.to_vec(),
            },
            _ => Body::Entries {
                op: Operation::from_u8(op).ok_or(NhrpError::UnsupportedType)?,
                flags: word16,
                request_id: word32,
                cies: parse_cies(rest, nbma, protocol)?,
            },
        };
        let extensions = if extoff == 0 {
            Vec::new()
        } else {
            parse_extensions(&packet[extoff..], nbma, protocol)?
        };
        Ok(NhrpRepr {
            nbma,
            protocol,
            snap: p.snap(),
            hop_count: p.hop_count(),
            src_nbma,
            src_nbma_subaddress,
            src_proto,
            dst_proto,
            body,
            extensions,
        })
    }

    /// ar$op.type of this message (1–8).
    pub fn op_type(&self) -> u8 {
        match &self.body {
            Body::Entries { op, .. } => op.to_u8(),
            Body::ErrorIndication { .. } => 7,
            Body::TrafficIndication { .. } => 8,
        }
    }

    /// Length of the message [`NhrpRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let mut len = FIXED_LEN
            + MANDATORY_LEN
            + addr_len(self.src_nbma)
            + self.src_nbma_subaddress.len()
            + addr_len(self.src_proto)
            + addr_len(self.dst_proto);
        len += match &self.body {
            Body::Entries { cies, .. } => cies_len(cies),
            Body::ErrorIndication { packet, .. } | Body::TrafficIndication { packet, .. } => {
                packet.len()
            }
        };
        if !self.extensions.is_empty() {
            len += self
                .extensions
                .iter()
                .map(|e| EXT_HEADER_LEN + e.value_len())
                .sum::<usize>()
                + EXT_HEADER_LEN;
        }
        len
    }

    /// Appends the message to `buf`, computing ar$pktsz, ar$extoff (and an End extension when
    /// there are extensions) and ar$chksum over the appended bytes. On error `buf` is left as
    /// it was.
    pub fn emit(&self, buf: &mut Vec<u8>) -> Result<(), NhrpEmitError> {
        self.check()?;
        if self.buffer_len() > usize::from(u16::MAX) {
            return Err(NhrpEmitError::TooLong);
        }
        let start = buf.len();
        buf.extend_from_slice(&afn(self.nbma).to_be_bytes());
        buf.extend_from_slice(&protocol_type(self.protocol).to_be_bytes());
        buf.extend_from_slice(&self.snap);
        buf.push(self.hop_count);
        buf.extend_from_slice(&[0; 6]); // pktsz, chksum, extoff: filled below
        buf.push(VERSION);
        buf.push(self.op_type());
        buf.push(addr_len(self.src_nbma) as u8);
        buf.push(self.src_nbma_subaddress.len() as u8);

        buf.push(addr_len(self.src_proto) as u8);
        buf.push(addr_len(self.dst_proto) as u8);
        let (word16, word32) = match &self.body {
            Body::Entries {
                flags, request_id, ..
            } => (*flags, *request_id),
            Body::ErrorIndication { code, offset, .. } => {
                (0, u32::from(*code) << 16 | u32::from(*offset))
            }
            Body::TrafficIndication { code, .. } => (*code, 0),
        };
        buf.extend_from_slice(&word16.to_be_bytes());
        buf.extend_from_slice(&word32.to_be_bytes());
        put_addr(buf, self.src_nbma);
        buf.extend_from_slice(&self.src_nbma_subaddress);
        put_addr(buf, self.src_proto);
        put_addr(buf, self.dst_proto);
        match &self.body {
            Body::Entries { cies, .. } => cies.iter().for_each(|c| c.emit(buf)),
            Body::ErrorIndication { packet, .. } | Body::TrafficIndication { packet, .. } => {
                buf.extend_from_slice(packet);
            }
        }
        if !self.extensions.is_empty() {
            let extoff = (buf.len() - start) as u16;
            buf[start + 14..start + 16].copy_from_slice(&extoff.to_be_bytes());
            for e in &self.extensions {
                e.emit(buf);
            }
            buf.extend_from_slice(&(EXT_COMPULSORY | EXT_END).to_be_bytes());
            buf.extend_from_slice(&[0, 0]);
        }
        // Fits: buffer_len() was checked against u16::MAX and equals what was written.
        let size = (buf.len() - start) as u16;
        buf[start + 10..start + 12].copy_from_slice(&size.to_be_bytes());
        let c = checksum::checksum(&buf[start..]);
        buf[start + 12..start + 14].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }

    fn check(&self) -> Result<(), NhrpEmitError> {
        check_addr(self.src_nbma, self.nbma)?;
        check_addr(self.src_proto, self.protocol)?;
        check_addr(self.dst_proto, self.protocol)?;
        if self.src_nbma_subaddress.len() > usize::from(TL_LEN_MASK) {
            return Err(NhrpEmitError::SubaddressTooLong);
        }
        if let Body::Entries { cies, .. } = &self.body {
            cies.iter()
                .try_for_each(|c| c.check(self.nbma, self.protocol))?;
        }
        for e in &self.extensions {
            match &e.body {
                ExtensionBody::ResponderAddress(cies)
                | ExtensionBody::ForwardTransit(cies)
                | ExtensionBody::ReverseTransit(cies)
                | ExtensionBody::NatAddress(cies) => cies
                    .iter()
                    .try_for_each(|c| c.check(self.nbma, self.protocol))?,
                ExtensionBody::Unknown { kind, .. } => {
                    if *kind & EXT_COMPULSORY != 0 || is_known_extension(*kind) {
                        return Err(NhrpEmitError::NotUnknownExtension);
                    }
                }
                ExtensionBody::Authentication(_) | ExtensionBody::VendorPrivate(_) => {}
            }
        }
        Ok(())
    }
}

impl Operation {
    /// The ar$op.type number.
    pub const fn to_u8(self) -> u8 {
        match self {
            Operation::ResolutionRequest => 1,
            Operation::ResolutionReply => 2,
            Operation::RegistrationRequest => 3,
            Operation::RegistrationReply => 4,
            Operation::PurgeRequest => 5,
            Operation::PurgeReply => 6,
        }
    }

    /// The operation numbered `op`, if it carries CIEs (1–6).
    pub const fn from_u8(op: u8) -> Option<Operation> {
        Some(match op {
            1 => Operation::ResolutionRequest,
            2 => Operation::ResolutionReply,
            3 => Operation::RegistrationRequest,
            4 => Operation::RegistrationReply,
            5 => Operation::PurgeRequest,
            6 => Operation::PurgeReply,
            _ => return None,
        })
    }
}

impl Extension {
    /// Whether the compulsory bit is set: a receiver that does not understand a compulsory
    /// extension must answer with an Error Indication (code 1) instead of processing it.
    pub fn compulsory(&self) -> bool {
        self.compulsory
    }

    /// The 15-bit type number.
    pub fn kind(&self) -> u16 {
        match &self.body {
            ExtensionBody::ResponderAddress(_) => EXT_RESPONDER_ADDRESS,
            ExtensionBody::ForwardTransit(_) => EXT_FORWARD_TRANSIT,
            ExtensionBody::ReverseTransit(_) => EXT_REVERSE_TRANSIT,
            ExtensionBody::Authentication(_) => EXT_AUTHENTICATION,
            ExtensionBody::VendorPrivate(_) => EXT_VENDOR_PRIVATE,
            ExtensionBody::NatAddress(_) => EXT_NAT_ADDRESS,
            ExtensionBody::Unknown { kind, .. } => *kind,
        }
    }

    fn value_len(&self) -> usize {
        match &self.body {
            ExtensionBody::ResponderAddress(cies)
            | ExtensionBody::ForwardTransit(cies)
            | ExtensionBody::ReverseTransit(cies)
            | ExtensionBody::NatAddress(cies) => cies_len(cies),
            ExtensionBody::Authentication(data)
            | ExtensionBody::VendorPrivate(data)
            | ExtensionBody::Unknown { data, .. } => data.len(),
        }
    }

    fn emit(&self, buf: &mut Vec<u8>) {
        let kind = self.kind() | if self.compulsory { EXT_COMPULSORY } else { 0 };
        buf.extend_from_slice(&kind.to_be_bytes());
        // Fits: the whole message was checked against u16::MAX.
        buf.extend_from_slice(&(self.value_len() as u16).to_be_bytes());
        match &self.body {
            ExtensionBody::ResponderAddress(cies)
            | ExtensionBody::ForwardTransit(cies)
            | ExtensionBody::ReverseTransit(cies)
            | ExtensionBody::NatAddress(cies) => cies.iter().for_each(|c| c.emit(buf)),
            ExtensionBody::Authentication(data)
            | ExtensionBody::VendorPrivate(data)
            | ExtensionBody::Unknown { data, .. } => buf.extend_from_slice(data),
        }
    }
}

impl Cie {
    /// Length of this CIE on the wire.
    pub fn buffer_len(&self) -> usize {
        CIE_LEN + addr_len(self.nbma) + self.nbma_subaddress.len() + addr_len(self.proto)
    }

    fn parse(r: &mut Reader<'_>, nbma: Family, protocol: Family) -> Result<Cie, NhrpError> {
        let code = r.u8()?;
        let prefix_len = r.u8()?;
        let _unused = r.u16()?;
        let mtu = r.u16()?;
        let holding_time = r.u16()?;
        let nbma_len = type_len(r.u8()?)?;
        let sub_len = type_len(r.u8()?)?;
        let proto_len = usize::from(r.u8()?);
        let preference = r.u8()?;
        Ok(Cie {
            code,
            prefix_len,
            mtu,
            holding_time,
            preference,
            nbma: address(r.take(nbma_len)?, nbma)?,
            nbma_subaddress: r.take(sub_len)?.to_vec(),
            proto: address(r.take(proto_len)?, protocol)?,
        })
    }

    fn emit(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&[self.code, self.prefix_len, 0, 0]);
        buf.extend_from_slice(&self.mtu.to_be_bytes());
        buf.extend_from_slice(&self.holding_time.to_be_bytes());
        buf.extend_from_slice(&[
            addr_len(self.nbma) as u8,
            self.nbma_subaddress.len() as u8,
            addr_len(self.proto) as u8,
            self.preference,
        ]);
        put_addr(buf, self.nbma);
        buf.extend_from_slice(&self.nbma_subaddress);
        put_addr(buf, self.proto);
    }

    fn check(&self, nbma: Family, protocol: Family) -> Result<(), NhrpEmitError> {
        check_addr(self.nbma, nbma)?;
        check_addr(self.proto, protocol)?;
        if self.nbma_subaddress.len() > usize::from(TL_LEN_MASK) {
            return Err(NhrpEmitError::SubaddressTooLong);
        }
        Ok(())
    }
}

impl Family {
    /// Address width in bytes.
    pub const fn addr_len(self) -> usize {
        match self {
            Family::Ipv4 => 4,
            Family::Ipv6 => 16,
        }
    }
}

impl fmt::Display for NhrpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NhrpError::Truncated => "NHRP packet truncated",
            NhrpError::BadPacketSize => "NHRP packet size smaller than the fixed header",
            NhrpError::BadChecksum => "NHRP checksum mismatch",
            NhrpError::BadVersion => "NHRP version is not 1",
            NhrpError::UnsupportedAfn => "NHRP NBMA address family is not IPv4 or IPv6",
            NhrpError::UnsupportedProtocol => "NHRP protocol type is not IPv4 or IPv6",
            NhrpError::UnsupportedType => "NHRP message type is not 1-8",
            NhrpError::UnsupportedAddressType => "NHRP address type/length octet is not NSAP",
            NhrpError::BadAddressLength => "NHRP address length does not match its family",
            NhrpError::BadExtensionOffset => "NHRP extension offset outside the packet",
            NhrpError::MandatoryOverrun => "NHRP mandatory part runs past its end",
            NhrpError::CieOverrun => "NHRP client information entry runs past its end",
            NhrpError::ExtensionOverrun => "NHRP extension runs past the packet end",
        })
    }
}

impl std::error::Error for NhrpError {}

impl fmt::Display for NhrpEmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NhrpEmitError::FamilyMismatch => "address does not match the family of its field",
            NhrpEmitError::SubaddressTooLong => "NBMA subaddress longer than 63 bytes",
            NhrpEmitError::NotUnknownExtension => "unknown extension uses a known type number",
            NhrpEmitError::TooLong => "NHRP message longer than 65535 bytes",
        })
    }
}

impl std::error::Error for NhrpEmitError {}

/// A bounds-checked big-endian cursor; every read past the end yields `err`.
struct Reader<'a> {
    data: &'a [u8],
    err: NhrpError,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], err: NhrpError) -> Self {
        Reader { data, err }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], NhrpError> {
        if n > self.data.len() {
            return Err(self.err);
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, NhrpError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, NhrpError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, NhrpError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

fn parse_cies(data: &[u8], nbma: Family, protocol: Family) -> Result<Vec<Cie>, NhrpError> {
    let mut r = Reader::new(data, NhrpError::CieOverrun);
    let mut cies = Vec::new();
    while !r.data.is_empty() {
        cies.push(Cie::parse(&mut r, nbma, protocol)?);
    }
    Ok(cies)
}

fn parse_extensions(
    data: &[u8],
    nbma: Family,
    protocol: Family,
) -> Result<Vec<Extension>, NhrpError> {
    let mut r = Reader::new(data, NhrpError::ExtensionOverrun);
    let mut extensions = Vec::new();
    while !r.data.is_empty() {
        let kind = r.u16()?;
        let len = usize::from(r.u16()?);
        let value = r.take(len)?;
        let compulsory = kind & EXT_COMPULSORY != 0;
        let body = match kind & !EXT_COMPULSORY {
            EXT_END => break,
            EXT_RESPONDER_ADDRESS => {
                ExtensionBody::ResponderAddress(parse_cies(value, nbma, protocol)?)
            }
            EXT_FORWARD_TRANSIT => {
                ExtensionBody::ForwardTransit(parse_cies(value, nbma, protocol)?)
            }
            EXT_REVERSE_TRANSIT => {
                ExtensionBody::ReverseTransit(parse_cies(value, nbma, protocol)?)
            }
            EXT_AUTHENTICATION => ExtensionBody::Authentication(value.to_vec()),
            EXT_VENDOR_PRIVATE => ExtensionBody::VendorPrivate(value.to_vec()),
            EXT_NAT_ADDRESS => ExtensionBody::NatAddress(parse_cies(value, nbma, protocol)?),
            other => ExtensionBody::Unknown {
                kind: other,
                data: value.to_vec(),
            },
        };
        extensions.push(Extension { compulsory, body });
    }
    Ok(extensions)
}

/// Length from a type/length octet (shtl, sstl, CIE t/l); only the NSAP form is accepted.
fn type_len(tl: u8) -> Result<usize, NhrpError> {
    if tl & !TL_LEN_MASK != 0 {
        return Err(NhrpError::UnsupportedAddressType);
    }
    Ok(usize::from(tl))
}

fn address(bytes: &[u8], family: Family) -> Result<Option<IpAddr>, NhrpError> {
    match (family, bytes.len()) {
        (_, 0) => Ok(None),
        (Family::Ipv4, 4) => Ok(Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        )))),
        (Family::Ipv6, 16) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(bytes);
            Ok(Some(IpAddr::V6(Ipv6Addr::from(a))))
        }
        _ => Err(NhrpError::BadAddressLength),
    }
}

fn check_addr(addr: Option<IpAddr>, family: Family) -> Result<(), NhrpEmitError> {
    match (addr, family) {
        (None, _) | (Some(IpAddr::V4(_)), Family::Ipv4) | (Some(IpAddr::V6(_)), Family::Ipv6) => {
            Ok(())
        }
        _ => Err(NhrpEmitError::FamilyMismatch),
    }
}

fn addr_len(addr: Option<IpAddr>) -> usize {
    match addr {
        None => 0,
        Some(IpAddr::V4(_)) => 4,
        Some(IpAddr::V6(_)) => 16,
    }
}

fn put_addr(buf: &mut Vec<u8>, addr: Option<IpAddr>) {
    match addr {
        None => {}
        Some(IpAddr::V4(a)) => buf.extend_from_slice(&a.octets()),
        Some(IpAddr::V6(a)) => buf.extend_from_slice(&a.octets()),
    }
}

fn cies_len(cies: &[Cie]) -> usize {
    cies.iter().map(Cie::buffer_len).sum()
}

const fn afn(family: Family) -> u16 {
    match family {
        Family::Ipv4 => AFN_IPV4,
        Family::Ipv6 => AFN_IPV6,
    }
}

const fn protocol_type(family: Family) -> u16 {
    match family {
        Family::Ipv4 => super::gre::PROTO_IPV4,
        Family::Ipv6 => super::gre::PROTO_IPV6,
    }
}

fn is_known_extension(kind: u16) -> bool {
    matches!(
        kind,
        EXT_END
            | EXT_RESPONDER_ADDRESS
            | EXT_FORWARD_TRANSIT
            | EXT_REVERSE_TRANSIT
            | EXT_AUTHENTICATION
            | EXT_VENDOR_PRIVATE
            | EXT_NAT_ADDRESS
    )
}

/// IANA address family numbers (ar$afn).
const AFN_IPV4: u16 = 1;
const AFN_IPV6: u16 = 2;
/// Length bits of a type/length octet; 0x40 is the E.164 type bit, 0x80 reserved.
const TL_LEN_MASK: u8 = 0x3f;
const EXT_HEADER_LEN: usize = 4;
/// Extension types (RFC 2332 §5.3; 9 is the Cisco/nhrpd NAT address extension).
const EXT_END: u16 = 0;
const EXT_RESPONDER_ADDRESS: u16 = 3;
const EXT_FORWARD_TRANSIT: u16 = 4;
const EXT_REVERSE_TRANSIT: u16 = 5;
const EXT_AUTHENTICATION: u16 = 7;
const EXT_VENDOR_PRIVATE: u16 = 8;
const EXT_NAT_ADDRESS: u16 = 9;

#[cfg(test)]
mod tests;
