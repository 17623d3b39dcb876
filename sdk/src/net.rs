//! Network vocabulary for plugin configs and packet matching: IP prefixes, port ranges, DSCP
//! code points and IP protocols, each parsed from the strings operators write
//! (`203.0.113.0/26`, `16384-32767`, `ef`, `udp`) and, with the `serde` feature,
//! deserialisable from config.
//!
//! This module is `no_std`, allocates nothing and never panics; matching is a few integer
//! operations. It knows nothing about packets or plugins.

use core::fmt;
use core::net::IpAddr;
use core::str::FromStr;

/// An IPv4 or IPv6 prefix, host bits zero. A bare address parses as a host prefix (/32, /128).
///
/// An IPv4 prefix contains only IPv4 addresses and an IPv6 prefix only IPv6 ones
/// ([`crate::abi::Packet`] returns IPv4 addresses unmapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// The prefix of length `len` containing `addr` (host bits are zeroed).
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        match addr {
            IpAddr::V4(a) if len <= 32 => Ok(Prefix {
                addr: IpAddr::V4((u32::from(a) & mask32(len)).into()),
                len,
            }),
            IpAddr::V6(a) if len <= 128 => Ok(Prefix {
                addr: IpAddr::V6((u128::from(a) & mask128(len)).into()),
                len,
            }),
            _ => Err(PrefixError::LengthOutOfRange),
        }
    }

    /// The prefix holding exactly `addr`.
    pub fn host(addr: IpAddr) -> Prefix {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Prefix { addr, len }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` lies inside this prefix (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => u32::from(a) & mask32(self.len) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                u128::from(a) & mask128(self.len) == u128::from(net)
            }
            _ => false,
        }
    }

    /// Whether `other` lies wholly inside this prefix (it is this prefix or a more specific
    /// one of the same family).
    pub fn covers(&self, other: Prefix) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| PrefixError::InvalidAddress)?;
        match len {
            None => Ok(Prefix::host(addr)),
            Some(l) => Prefix::new(addr, l.parse().map_err(|_| PrefixError::InvalidLength)?),
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Why a prefix did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    InvalidAddress,
    /// The part after `/` is not a number.
    InvalidLength,
    /// The length exceeds 32 (IPv4) or 128 (IPv6).
    LengthOutOfRange,
}

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrefixError::InvalidAddress => "not an IPv4 or IPv6 address",
            PrefixError::InvalidLength => "the prefix length is not a number",
            PrefixError::LengthOutOfRange => "the prefix length exceeds 32 (IPv4) or 128 (IPv6)",
        })
    }
}

impl core::error::Error for PrefixError {}

/// An inclusive range of TCP/UDP ports, written `5060` or `16384-32767`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// `first..=last`; `None` if `first > last`.
    pub const fn new(first: u16, last: u16) -> Option<PortRange> {
        if first <= last {
            Some(PortRange { first, last })
        } else {
            None
        }
    }

    /// A single port.
    pub const fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// First port of the range.
    pub const fn first(&self) -> u16 {
        self.first
    }

    /// Last port of the range (inclusive).
    pub const fn last(&self) -> u16 {
        self.last
    }

    /// Whether `port` is in the range.
    pub const fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<PortRange, PortRangeError> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| PortRangeError::InvalidPort)
        };
        match s.split_once('-') {
            None => Ok(PortRange::single(port(s)?)),
            Some((a, b)) => PortRange::new(port(a)?, port(b)?).ok_or(PortRangeError::Reversed),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Why a port range did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRangeError {
    /// A port is not a number in 0–65535.
    InvalidPort,
    /// The first port is above the last.
    Reversed,
}

impl fmt::Display for PortRangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortRangeError::InvalidPort => "a port must be a number in 0-65535",
            PortRangeError::Reversed => "the first port is above the last",
        })
    }
}

impl core::error::Error for PortRangeError {}

/// A DSCP code point (0–63), written as a number or by name: `default`/`be`, `cs0`–`cs7`,
/// `af11`–`af43`, `ef`, `va` (voice-admit, RFC 5865), `le` (lower effort, RFC 8622).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dscp(u8);

impl Dscp {
    /// Default forwarding (best effort), 0.
    pub const DEFAULT: Dscp = Dscp(0);
    /// Class selector 1 (low-priority data, "scavenger"), 8.
    pub const CS1: Dscp = Dscp(8);
    /// Class selector 3 (call signalling), 24.
    pub const CS3: Dscp = Dscp(24);
    /// Assured forwarding 41 (interactive video), 34.
    pub const AF41: Dscp = Dscp(34);
    /// Expedited forwarding (voice), 46.
    pub const EF: Dscp = Dscp(46);

    /// `value` if it is a valid code point (0–63).
    pub const fn new(value: u8) -> Option<Dscp> {
        if value < 64 { Some(Dscp(value)) } else { None }
    }

    /// The code point, 0–63.
    pub const fn value(self) -> u8 {
        self.0
    }
}

impl FromStr for Dscp {
    type Err = DscpError;

    fn from_str(s: &str) -> Result<Dscp, DscpError> {
        if let Ok(n) = s.parse::<u8>() {
            return Dscp::new(n).ok_or(DscpError);
        }
        let named = |n: &str| s.eq_ignore_ascii_case(n);
        let value = if named("default") || named("be") {
            0
        } else if named("ef") {
            46
        } else if named("va") {
            44
        } else if named("le") {
            1
        } else if let Some(rest) = strip_prefix_ignore_case(s, "cs") {
            match rest.as_bytes() {
                [d @ b'0'..=b'7'] => (d - b'0') * 8,
                _ => return Err(DscpError),
            }
        } else if let Some(rest) = strip_prefix_ignore_case(s, "af") {
            match rest.as_bytes() {
                [c @ b'1'..=b'4', p @ b'1'..=b'3'] => (c - b'0') * 8 + (p - b'0') * 2,
                _ => return Err(DscpError),
            }
        } else {
            return Err(DscpError);
        };
        Ok(Dscp(value))
    }
}

impl fmt::Display for Dscp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("default"),
            1 => f.write_str("le"),
            44 => f.write_str("va"),
            46 => f.write_str("ef"),
            v if v % 8 == 0 => write!(f, "cs{}", v / 8),
            v if (1..=4).contains(&(v / 8)) && matches!(v % 8, 2 | 4 | 6) => {
                write!(f, "af{}{}", v / 8, v % 8 / 2)
            }
            v => write!(f, "{v}"),
        }
    }
}

/// A DSCP that is neither a number in 0–63 nor a known name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DscpError;

impl fmt::Display for DscpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a DSCP is a number in 0-63 or a name: default, be, cs0-cs7, af11-af43, ef, va, le",
        )
    }
}

impl core::error::Error for DscpError {}

/// An IP protocol number, written as a number (0–255) or by name: `icmp`, `tcp`, `udp`, `gre`,
/// `esp`, `ah`, `icmpv6` (also `ipv6-icmp`), `ospf`, `sctp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Protocol(pub u8);

impl Protocol {
    /// ICMP, 1.
    pub const ICMP: Protocol = Protocol(1);
    /// TCP, 6.
    pub const TCP: Protocol = Protocol(6);
    /// UDP, 17.
    pub const UDP: Protocol = Protocol(17);
    /// ICMPv6, 58.
    pub const ICMPV6: Protocol = Protocol(58);

    const NAMES: [(&'static str, u8); 10] = [
        ("icmp", 1),
        ("tcp", 6),
        ("udp", 17),
        ("gre", 47),
        ("esp", 50),
        ("ah", 51),
        ("icmpv6", 58),
        ("ipv6-icmp", 58),
        ("ospf", 89),
        ("sctp", 132),
    ];

    /// Whether packets of this protocol carry the ports a packet slot shows (TCP, UDP).
    pub const fn has_ports(self) -> bool {
        matches!(self.0, 6 | 17)
    }
}

impl FromStr for Protocol {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Protocol, ProtocolError> {
        if let Ok(n) = s.parse::<u8>() {
            return Ok(Protocol(n));
        }
        Protocol::NAMES
            .iter()
            .find(|(name, _)| s.eq_ignore_ascii_case(name))
            .map(|(_, n)| Protocol(*n))
            .ok_or(ProtocolError)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Protocol::NAMES.iter().find(|(_, n)| *n == self.0) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A protocol that is neither a number in 0–255 nor a known name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolError;

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a protocol is a number in 0-255 or a name: icmp, tcp, udp, gre, esp, ah, icmpv6, ospf, sctp",
        )
    }
}

impl core::error::Error for ProtocolError {}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// Config parsing: each type reads from a string; ports and DSCPs also from an integer.
#[cfg(feature = "serde")]
mod de {
    use core::fmt;
    use core::marker::PhantomData;
    use core::str::FromStr;

    use serde::de::{self, Deserialize, Deserializer, Visitor};

    use super::{Dscp, DscpError, PortRange, PortRangeError, Prefix, Protocol, ProtocolError};

    /// A type read from config: its `FromStr` form, or an integer if `from_int` is given.
    trait Scalar: FromStr<Err: fmt::Display> {
        /// What the config expects, for error messages.
        const WHAT: &'static str;
        /// The value of an integer in config; `None` if integers are not accepted.
        fn from_int(_v: u64) -> Option<Result<Self, Self::Err>> {
            None
        }
    }

    impl Scalar for Prefix {
        const WHAT: &'static str = "prefix";
    }

    impl Scalar for PortRange {
        const WHAT: &'static str = "port or port range";
        fn from_int(v: u64) -> Option<Result<Self, PortRangeError>> {
            Some(
                u16::try_from(v)
                    .map(PortRange::single)
                    .map_err(|_| PortRangeError::InvalidPort),
            )
        }
    }

    impl Scalar for Dscp {
        const WHAT: &'static str = "DSCP";
        fn from_int(v: u64) -> Option<Result<Self, DscpError>> {
            Some(u8::try_from(v).ok().and_then(Dscp::new).ok_or(DscpError))
        }
    }

    impl Scalar for Protocol {
        const WHAT: &'static str = "protocol";
        fn from_int(v: u64) -> Option<Result<Self, ProtocolError>> {
            Some(u8::try_from(v).map(Protocol).map_err(|_| ProtocolError))
        }
    }

    struct ScalarVisitor<T>(PhantomData<T>);

    impl<T: Scalar> Visitor<'_> for ScalarVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(T::WHAT)
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            s.parse()
                .map_err(|e| E::custom(format_args!("invalid {} `{s}`: {e}", T::WHAT)))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            match T::from_int(v) {
                Some(r) => r.map_err(|e| E::custom(format_args!("invalid {} {v}: {e}", T::WHAT))),
                None => Err(E::invalid_type(de::Unexpected::Unsigned(v), &self)),
            }
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
            }
        }
    }

    macro_rules! deserialize_scalar {
        ($($t:ty),*) => {$(
            impl<'de> Deserialize<'de> for $t {
                fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                    d.deserialize_any(ScalarVisitor(PhantomData))
                }
            }
        )*};
    }

    deserialize_scalar!(Prefix, PortRange, Dscp, Protocol);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_parse_normalise_and_match() {
        let p: Prefix = "203.0.113.77/26".parse().unwrap();
        assert_eq!(
            p,
            "203.0.113.64/26".parse().unwrap(),
            "host bits are zeroed"
        );
        assert!(p.contains(ip("203.0.113.127")));
        assert!(!p.contains(ip("203.0.113.128")));
        assert!(
            !p.contains(ip("::ffff:203.0.113.70")),
            "no cross-family match"
        );
        let h: Prefix = "2001:db8::1".parse().unwrap();
        assert_eq!(h.prefix_len(), 128);
        assert!(h.contains(ip("2001:db8::1")) && !h.contains(ip("2001:db8::2")));
        let all: Prefix = "::/0".parse().unwrap();
        assert!(all.contains(ip("2001:db8::2")) && !all.contains(ip("192.0.2.1")));
        assert!(
            "0.0.0.0/0"
                .parse::<Prefix>()
                .unwrap()
                .contains(ip("192.0.2.1"))
        );
        assert_eq!(p.to_string(), "203.0.113.64/26");
    }

    #[test]
    fn covers_means_same_or_more_specific_of_the_same_family() {
        let net: Prefix = "203.0.113.0/24".parse().unwrap();
        for inside in ["203.0.113.0/24", "203.0.113.64/26", "203.0.113.9"] {
            assert!(net.covers(inside.parse().unwrap()), "{inside}");
        }
        for outside in [
            "203.0.112.0/23",
            "198.51.100.0/26",
            "2001:db8::/64",
            "0.0.0.0/0",
        ] {
            assert!(!net.covers(outside.parse().unwrap()), "{outside}");
        }
    }

    #[test]
    fn bad_prefixes_say_why() {
        assert_eq!(
            "10.0.0.0/33".parse::<Prefix>(),
            Err(PrefixError::LengthOutOfRange)
        );
        assert_eq!(
            "10.0.0/8".parse::<Prefix>(),
            Err(PrefixError::InvalidAddress)
        );
        assert_eq!(
            "10.0.0.0/x".parse::<Prefix>(),
            Err(PrefixError::InvalidLength)
        );
        assert_eq!(
            "2001:db8::/129".parse::<Prefix>(),
            Err(PrefixError::LengthOutOfRange)
        );
    }

    #[test]
    fn port_ranges() {
        let r: PortRange = "16384-32767".parse().unwrap();
        assert!(r.contains(16384) && r.contains(32767) && !r.contains(32768));
        assert_eq!("5060".parse::<PortRange>(), Ok(PortRange::single(5060)));
        assert_eq!("9-3".parse::<PortRange>(), Err(PortRangeError::Reversed));
        assert_eq!(
            "70000".parse::<PortRange>(),
            Err(PortRangeError::InvalidPort)
        );
        assert_eq!(r.to_string(), "16384-32767");
    }

    #[test]
    fn dscp_names_and_numbers() {
        for (s, v) in [
            ("ef", 46),
            ("EF", 46),
            ("af41", 34),
            ("af11", 10),
            ("af43", 38),
            ("cs1", 8),
            ("cs3", 24),
            ("cs7", 56),
            ("default", 0),
            ("be", 0),
            ("va", 44),
            ("le", 1),
            ("63", 63),
        ] {
            assert_eq!(s.parse::<Dscp>().map(Dscp::value), Ok(v), "{s}");
            assert_eq!(
                Dscp(v).to_string().parse::<Dscp>(),
                Ok(Dscp(v)),
                "Display round trip of {v}"
            );
        }
        for bad in ["64", "af44", "af51", "cs8", "efx", "", "aé1"] {
            assert_eq!(bad.parse::<Dscp>(), Err(DscpError), "{bad}");
        }
    }

    #[test]
    fn protocols() {
        assert_eq!("UDP".parse(), Ok(Protocol::UDP));
        assert_eq!("ipv6-icmp".parse(), Ok(Protocol::ICMPV6));
        assert_eq!(
            "132".parse::<Protocol>().map(|p| p.to_string()),
            Ok("sctp".into())
        );
        assert_eq!("256".parse::<Protocol>(), Err(ProtocolError));
        assert!(Protocol::TCP.has_ports() && !Protocol::ICMP.has_ports());
    }
}
