//! GRE header (RFC 2784 with the key and sequence extensions of RFC 2890).
//!
//! [`GrePacket`] is a zero-copy view over caller bytes; [`GreRepr`] is the validated,
//! decoded header with `parse`, `header_len` and `emit`. Receiver rules enforced by
//! [`GreRepr::parse`]: version must be 0, the routing bit (bit 1) and reserved bits 4–5 must be
//! clear (bits 6–12 are ignored, as RFC 2784 requires), and a present checksum must verify over
//! the whole GRE packet. Nothing here allocates or panics on untrusted input.

use super::checksum;

/// EtherType of an IPv4 payload.
pub const PROTO_IPV4: u16 = 0x0800;
/// EtherType of an IPv6 payload.
pub const PROTO_IPV6: u16 = 0x86dd;
/// Protocol type of NHRP (RFC 2332) carried over GRE.
pub const PROTO_NHRP: u16 = 0x2001;
/// Largest GRE header this code emits or accepts: base + checksum + key + sequence.
pub const MAX_HEADER_LEN: usize = 16;

/// Why a GRE packet was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GreError {
    /// Shorter than the header its flags announce.
    Truncated,
    /// Version field is not 0.
    BadVersion,
    /// Routing bit (RFC 1701 R) set.
    RoutingPresent,
    /// Reserved bit 4 or 5 set.
    ReservedBits,
    /// Checksum present and wrong.
    BadChecksum,
}

/// Zero-copy view of a GRE packet (header and payload).
///
/// After [`GrePacket::new_checked`] succeeds no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// Wraps a buffer without checking it; accessors may panic on short input.
    pub const fn new_unchecked(buffer: T) -> Self {
        GrePacket { buffer }
    }

    /// Wraps a buffer, checking it holds the full header its flags announce.
    pub fn new_checked(buffer: T) -> Result<Self, GreError> {
        let p = GrePacket { buffer };
        let data = p.buffer.as_ref();
        if data.len() < BASE_LEN || data.len() < p.header_len() {
            return Err(GreError::Truncated);
        }
        Ok(p)
    }

    fn flags(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[0], d[1]])
    }

    /// C bit: checksum field present.
    pub fn has_checksum(&self) -> bool {
        self.flags() & FLAG_C != 0
    }
    /// R bit (RFC 1701 routing present); always dropped.
    pub fn has_routing(&self) -> bool {
        self.flags() & FLAG_R != 0
    }
    /// K bit: key field present.
    pub fn has_key(&self) -> bool {
        self.flags() & FLAG_K != 0
    }
    /// S bit: sequence number present.
    pub fn has_sequence(&self) -> bool {
        self.flags() & FLAG_S != 0
    }
    /// Reserved bits 4 and 5 (must be zero on receive).
    pub fn reserved_bits(&self) -> u16 {
        self.flags() & RESERVED_MUST_BE_ZERO
    }
    /// Version field (bits 13–15).
    pub fn version(&self) -> u8 {
        (self.flags() & 0x7) as u8
    }
    /// Protocol type (EtherType) of the payload.
    pub fn protocol(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[2], d[3]])
    }
    /// Header length implied by the C, K and S flags.
    pub fn header_len(&self) -> usize {
        let present = [self.has_checksum(), self.has_key(), self.has_sequence()];
        BASE_LEN + 4 * present.iter().filter(|p| **p).count()
    }
    /// Checksum field, if present.
    pub fn checksum_field(&self) -> Option<u16> {
        let d = self.buffer.as_ref();
        self.has_checksum()
            .then(|| u16::from_be_bytes([d[4], d[5]]))
    }
    /// Key field, if present.
    pub fn key(&self) -> Option<u32> {
        let off = BASE_LEN + if self.has_checksum() { 4 } else { 0 };
        self.has_key().then(|| read_u32(self.buffer.as_ref(), off))
    }
    /// Sequence number, if present.
    pub fn sequence(&self) -> Option<u32> {
        let off = BASE_LEN + 4 * usize::from(self.has_checksum()) + 4 * usize::from(self.has_key());
        self.has_sequence()
            .then(|| read_u32(self.buffer.as_ref(), off))
    }
    /// True when no checksum is present or the present one verifies over the whole packet.
    pub fn verify_checksum(&self) -> bool {
        !self.has_checksum() || checksum::checksum(self.buffer.as_ref()) == 0
    }
    /// The payload after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// A validated GRE header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GreRepr {
    /// Protocol type (EtherType) of the payload.
    pub protocol: u16,
    /// Whether the checksum field is present (computed on emit, verified on parse).
    pub checksum: bool,
    /// Key (RFC 2890), if present.
    pub key: Option<u32>,
    /// Sequence number (RFC 2890), if present.
    pub sequence: Option<u32>,
}

impl GreRepr {
    /// Parses and validates the GRE packet in `packet` (header and payload).
    ///
    /// Work bound: one checksum pass over `packet` when the C bit is set, else constant.
    pub fn parse(packet: &[u8]) -> Result<GreRepr, GreError> {
        let p = GrePacket::new_checked(packet)?;
        if p.version() != 0 {
            return Err(GreError::BadVersion);
        }
        if p.has_routing() {
            return Err(GreError::RoutingPresent);
        }
        if p.reserved_bits() != 0 {
            return Err(GreError::ReservedBits);
        }
        if !p.verify_checksum() {
            return Err(GreError::BadChecksum);
        }
        Ok(GreRepr {
            protocol: p.protocol(),
            checksum: p.has_checksum(),
            key: p.key(),
            sequence: p.sequence(),
        })
    }

    /// Length of the header this repr emits.
    pub const fn header_len(&self) -> usize {
        BASE_LEN
            + if self.checksum { 4 } else { 0 }
            + if self.key.is_some() { 4 } else { 0 }
            + if self.sequence.is_some() { 4 } else { 0 }
    }

    /// Writes the header into `packet[..header_len()]`; `packet[header_len()..]` must already
    /// hold the payload, because the checksum (when enabled) covers it.
    ///
    /// # Panics
    /// If `packet` is shorter than `header_len()`: a caller bug, never input-driven.
    pub fn emit(&self, packet: &mut [u8]) {
        let mut flags = 0u16;
        if self.checksum {
            flags |= FLAG_C;
        }
        if self.key.is_some() {
            flags |= FLAG_K;
        }
        if self.sequence.is_some() {
            flags |= FLAG_S;
        }
        packet[0..2].copy_from_slice(&flags.to_be_bytes());
        packet[2..4].copy_from_slice(&self.protocol.to_be_bytes());
        let mut off = BASE_LEN;
        if self.checksum {
            packet[off..off + 4].fill(0);
            off += 4;
        }
        if let Some(key) = self.key {
            packet[off..off + 4].copy_from_slice(&key.to_be_bytes());
            off += 4;
        }
        if let Some(seq) = self.sequence {
            packet[off..off + 4].copy_from_slice(&seq.to_be_bytes());
        }
        if self.checksum {
            let c = checksum::checksum(packet);
            packet[4..6].copy_from_slice(&c.to_be_bytes());
        }
    }
}

fn read_u32(d: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([d[off], d[off + 1], d[off + 2], d[off + 3]])
}

const BASE_LEN: usize = 4;
const FLAG_C: u16 = 0x8000;
const FLAG_R: u16 = 0x4000;
const FLAG_K: u16 = 0x2000;
const FLAG_S: u16 = 0x1000;
/// Bits 4 and 5: RFC 2784 says a receiver must drop packets with bits 1–5 set unless it
/// implements RFC 1701; bits 2 and 3 are K and S (RFC 2890) and bit 1 is reported separately.
const RESERVED_MUST_BE_ZERO: u16 = 0x0c00;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet(repr: &GreRepr, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; repr.header_len() + payload.len()];
        buf[repr.header_len()..].copy_from_slice(payload);
        repr.emit(&mut buf);
        buf
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(protocol: u16, csum: bool, key: Option<u32>, sequence: Option<u32>,
                                payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let repr = GreRepr { protocol, checksum: csum, key, sequence };
            let buf = packet(&repr, &payload);
            prop_assert_eq!(GreRepr::parse(&buf), Ok(repr));
            let view = GrePacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(view.payload(), &payload[..]);
        }

        #[test]
        fn checksum_detects_any_single_byte_change(key: Option<u32>, pos in 0usize..64, delta in 1u8..=255,
                                payload in proptest::collection::vec(any::<u8>(), 48..64)) {
            let repr = GreRepr { protocol: PROTO_IPV4, checksum: true, key, sequence: None };
            let mut buf = packet(&repr, &payload);
            let pos = pos % buf.len();
            // Flipping a byte inside the flags would change the layout; check only the rest.
            prop_assume!(pos >= 2);
            buf[pos] = buf[pos].wrapping_add(delta);
            prop_assert_eq!(GreRepr::parse(&buf), Err(GreError::BadChecksum));
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = GreRepr::parse(&data);
        }
    }

    #[test]
    fn all_flag_combinations_roundtrip() {
        for bits in 0..8u8 {
            let repr = GreRepr {
                protocol: PROTO_IPV6,
                checksum: bits & 1 != 0,
                key: (bits & 2 != 0).then_some(0xdead_beef),
                sequence: (bits & 4 != 0).then_some(7),
            };
            let buf = packet(&repr, b"payload!");
            assert_eq!(buf.len(), repr.header_len() + 8);
            assert_eq!(GreRepr::parse(&buf), Ok(repr));
        }
    }

    #[test]
    fn known_bytes_key_and_sequence() {
        let buf = [0x30, 0x00, 0x08, 0x00, 0, 0, 0, 42, 0, 0, 1, 0];
        let repr = GreRepr::parse(&buf).unwrap();
        assert_eq!(
            repr,
            GreRepr {
                protocol: PROTO_IPV4,
                checksum: false,
                key: Some(42),
                sequence: Some(256)
            }
        );
    }

    #[test]
    fn rejects_each_malformed_class() {
        assert_eq!(GreRepr::parse(&[0x00, 0x00]), Err(GreError::Truncated));
        // K bit set but no key field.
        assert_eq!(
            GreRepr::parse(&[0x20, 0x00, 0x08, 0x00, 0, 0]),
            Err(GreError::Truncated)
        );
        assert_eq!(
            GreRepr::parse(&[0x00, 0x01, 0x08, 0x00]),
            Err(GreError::BadVersion)
        );
        assert_eq!(
            GreRepr::parse(&[0x40, 0x00, 0x08, 0x00]),
            Err(GreError::RoutingPresent)
        );
        assert_eq!(
            GreRepr::parse(&[0x08, 0x00, 0x08, 0x00]),
            Err(GreError::ReservedBits)
        );
        assert_eq!(
            GreRepr::parse(&[0x04, 0x00, 0x08, 0x00]),
            Err(GreError::ReservedBits)
        );
        let mut bad = packet(
            &GreRepr {
                protocol: PROTO_IPV4,
                checksum: true,
                key: None,
                sequence: None,
            },
            b"abcd",
        );
        bad[5] ^= 1;
        assert_eq!(GreRepr::parse(&bad), Err(GreError::BadChecksum));
    }

    #[test]
    fn ignores_bits_6_to_12() {
        let buf = [0x03, 0xf8, 0x86, 0xdd, 1, 2, 3];
        assert_eq!(GreRepr::parse(&buf).map(|r| r.protocol), Ok(PROTO_IPV6));
    }
}
