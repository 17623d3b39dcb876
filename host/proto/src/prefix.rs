//! IP prefixes and a longest-prefix-match table over them, for IPv4 and IPv6.
//!
//! The endpoint table uses [`PrefixTable`] to find the peer that serves an inner destination
//! address. The table keeps one hash map per prefix length that is actually present, ordered
//! longest first, so a lookup costs at most one hash probe per present length and does not
//! allocate; it scales from one entry to millions. This module is pure data structure: it must
//! not do I/O, read a clock, log or lock.

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::BitAnd;
use std::str::FromStr;

use rustc_hash::FxHashMap;

/// An IPv4 or IPv6 prefix: a network address and a length in bits.
///
/// [`Prefix::new`] and [`FromStr`] validate the length and zero the host bits, so two
/// prefixes covering the same addresses compare equal. The variant fields are public for
/// pattern matching; a value built by hand with host bits set or an oversized length is not
/// normalised (see [`PrefixTable::insert`] for how the table treats one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prefix {
    /// An IPv4 prefix; `addr` is the address in host byte order, `len` is at most 32.
    V4 {
        /// Network address, host bits zero.
        addr: u32,
        /// Prefix length in bits, `0..=32`.
        len: u8,
    },
    /// An IPv6 prefix; `addr` is the address in host byte order, `len` is at most 128.
    V6 {
        /// Network address, host bits zero.
        addr: u128,
        /// Prefix length in bits, `0..=128`.
        len: u8,
    },
}

impl Prefix {
    /// Builds the prefix of length `len` containing `addr`, zeroing the host bits.
    ///
    /// Fails with [`PrefixError::LengthOutOfRange`] if `len` exceeds 32 for IPv4 or 128 for
    /// IPv6.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        match addr {
            IpAddr::V4(a) if len <= u32::BITS_U8 => Ok(Prefix::V4 {
                addr: u32::from(a) & u32::mask(len),
                len,
            }),
            IpAddr::V6(a) if len <= u128::BITS_U8 => Ok(Prefix::V6 {
                addr: u128::from(a) & u128::mask(len),
                len,
            }),
            _ => Err(PrefixError::LengthOutOfRange),
        }
    }

    /// The network address (host bits zero for a normalised prefix).
    pub fn addr(&self) -> IpAddr {
        match *self {
            Prefix::V4 { addr, .. } => IpAddr::V4(Ipv4Addr::from(addr)),
            Prefix::V6 { addr, .. } => IpAddr::V6(Ipv6Addr::from(addr)),
        }
    }

    /// The prefix length in bits.
    #[allow(
        clippy::len_without_is_empty,
        reason = "a prefix length, not a collection size"
    )]
    pub fn len(&self) -> u8 {
        match *self {
            Prefix::V4 { len, .. } | Prefix::V6 { len, .. } => len,
        }
    }

    /// Whether `addr` lies inside this prefix.
    ///
    /// The families are kept apart: an IPv4 prefix never contains an IPv6 address, not even
    /// an IPv4-mapped one, and vice versa.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (*self, addr) {
            (Prefix::V4 { addr: net, len }, IpAddr::V4(a)) => {
                (u32::from(a) ^ net) & u32::mask(len) == 0
            }
            (Prefix::V6 { addr: net, len }, IpAddr::V6(a)) => {
                (u128::from(a) ^ net) & u128::mask(len) == 0
            }
            _ => false,
        }
    }
}

/// Formats as `address/length`, e.g. `203.0.113.0/26` or `2001:db8::/32`.
impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len())
    }
}

/// Parses `a.b.c.d/n` or `x:y::z/n`; a bare address without `/n` is a host route (/32 or
/// /128). Host bits in the address are zeroed, so `10.1.2.3/8` parses as `10.0.0.0/8`. The
/// length must be plain decimal digits (no sign, no spaces).
impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| PrefixError::Malformed)?;
        let len = match len {
            Some(len) => parse_len(len)?,
            None => match addr {
                IpAddr::V4(_) => u32::BITS_U8,
                IpAddr::V6(_) => u128::BITS_U8,
            },
        };
        Prefix::new(addr, len)
    }
}

/// Why a prefix was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixError {
    /// The length exceeds the address width: more than 32 for IPv4 or 128 for IPv6.
    LengthOutOfRange,
    /// The text is not an address optionally followed by `/` and a decimal length.
    Malformed,
}

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrefixError::LengthOutOfRange => "prefix length exceeds the address width",
            PrefixError::Malformed => "malformed prefix, expected address[/length]",
        })
    }
}

impl std::error::Error for PrefixError {}

/// A longest-prefix-match table from IPv4 and IPv6 prefixes to small `Copy` values.
///
/// Each address family keeps one hash map per prefix length present in the table, keyed by
/// the masked network address, in a list sorted longest length first. A lookup walks that
/// list, masks the address and probes each map until one hits: at most one hash probe per
/// distinct length present (≤ 33 for IPv4, ≤ 129 for IPv6), no allocation, no scan over
/// entries. Lengths with no entries hold no map at all.
#[derive(Clone, Debug)]
pub struct PrefixTable<V> {
    v4: Family<u32, V>,
    v6: Family<u128, V>,
}

impl<V: Copy> PrefixTable<V> {
    /// An empty table; allocates nothing until the first insert.
    pub fn new() -> Self {
        PrefixTable {
            v4: Family::new(),
            v6: Family::new(),
        }
    }

    /// Maps `p` to `v`, returning the value it replaced, if any.
    ///
    /// Host bits set in a hand-built `p` are ignored.
    ///
    /// # Panics
    /// If `p` was built by hand with a length beyond the address width (more than 32 for
    /// IPv4, 128 for IPv6); [`Prefix::new`] and [`FromStr`] never produce such a prefix.
    pub fn insert(&mut self, p: Prefix, v: V) -> Option<V> {
        match p {
            Prefix::V4 { addr, len } => self.v4.insert(addr, len, v),
            Prefix::V6 { addr, len } => self.v6.insert(addr, len, v),
        }
    }

    /// Removes exactly `p` (not shorter or longer prefixes), returning its value.
    pub fn remove(&mut self, p: &Prefix) -> Option<V> {
        match *p {
            Prefix::V4 { addr, len } => self.v4.remove(addr, len),
            Prefix::V6 { addr, len } => self.v6.remove(addr, len),
        }
    }

    /// The value stored for exactly `p`, without longest-prefix matching.
    pub fn get(&self, p: &Prefix) -> Option<V> {
        match *p {
            Prefix::V4 { addr, len } => self.v4.get(addr, len),
            Prefix::V6 { addr, len } => self.v6.get(addr, len),
        }
    }

    /// The value of the longest IPv4 prefix containing `addr` (host byte order).
    ///
    /// Work bound: one hash probe per distinct IPv4 length present, longest first; stops at
    /// the first hit. Does not allocate.
    #[inline]
    pub fn lookup_v4(&self, addr: u32) -> Option<V> {
        self.v4.lookup(addr)
    }

    /// The value of the longest IPv6 prefix containing `addr` (host byte order).
    ///
    /// Work bound: one hash probe per distinct IPv6 length present, longest first; stops at
    /// the first hit. Does not allocate.
    #[inline]
    pub fn lookup_v6(&self, addr: u128) -> Option<V> {
        self.v6.lookup(addr)
    }

    /// The value of the longest prefix of the same family containing `addr`.
    ///
    /// Dispatches to [`lookup_v4`](Self::lookup_v4) or [`lookup_v6`](Self::lookup_v6); an
    /// IPv4-mapped IPv6 address is looked up as IPv6.
    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> Option<V> {
        match addr {
            IpAddr::V4(a) => self.lookup_v4(u32::from(a)),
            IpAddr::V6(a) => self.lookup_v6(u128::from(a)),
        }
    }

    /// Number of prefixes stored, both families.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether the table holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.v4.levels.is_empty() && self.v6.levels.is_empty()
    }

    /// Every stored prefix with its value: IPv4 first, then IPv6, each family longest length
    /// first; the order within one length is unspecified.
    pub fn iter(&self) -> impl Iterator<Item = (Prefix, V)> + '_ {
        let v4 = self.v4.levels.iter().flat_map(|level| {
            let len = level.len;
            level
                .map
                .iter()
                .map(move |(&addr, &v)| (Prefix::V4 { addr, len }, v))
        });
        let v6 = self.v6.levels.iter().flat_map(|level| {
            let len = level.len;
            level
                .map
                .iter()
                .map(move |(&addr, &v)| (Prefix::V6 { addr, len }, v))
        });
        v4.chain(v6)
    }

    /// Approximate heap bytes held by the table: the per-length lists plus each hash map's
    /// buckets and control bytes (estimated from its capacity, hashbrown layout).
    pub fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes() + self.v6.heap_bytes()
    }
}

impl<V: Copy> Default for PrefixTable<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Parses a prefix length: one to three ASCII digits.
fn parse_len(s: &str) -> Result<u8, PrefixError> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PrefixError::Malformed);
    }
    // Up to three digits always fit a u16; above 255 the length is out of range either way.
    s.parse::<u8>().map_err(|_| PrefixError::LengthOutOfRange)
}

/// An address type the table can key on.
trait Key: Copy + Eq + Hash + BitAnd<Output = Self> {
    /// Address width in bits.
    const BITS_U8: u8;
    /// The netmask for `len` bits; lengths beyond the width give all ones.
    fn mask(len: u8) -> Self;
    /// The address's 16 most significant bits.
    fn top16(self) -> u16;
}

impl Key for u32 {
    const BITS_U8: u8 = 32;
    fn mask(len: u8) -> u32 {
        u32::MAX
            .checked_shl(u32::from(Self::BITS_U8.saturating_sub(len)))
            .unwrap_or(0)
    }
    fn top16(self) -> u16 {
        (self >> 16) as u16
    }
}

impl Key for u128 {
    const BITS_U8: u8 = 128;
    fn mask(len: u8) -> u128 {
        u128::MAX
            .checked_shl(u32::from(Self::BITS_U8.saturating_sub(len)))
            .unwrap_or(0)
    }
    fn top16(self) -> u16 {
        (self >> 112) as u16
    }
}

/// Entries a level holds before it gets a [`Directory`]: small tables (the common case) pay
/// nothing for it. Unit tests use a tiny threshold so the LPM oracle property test runs with
/// directories on nearly every level.
const DIRECTORY_THRESHOLD: usize = if cfg!(test) { 4 } else { 4096 };

/// A bitmap over the 65 536 values of an address's top 16 bits: set when some prefix of the
/// level may cover addresses starting with them. A clear bit lets a lookup skip the level's
/// hash probe — a cache miss in a large table — so a miss across many sparse lengths costs a
/// few bit tests instead of one probe per length. Bits are set on insert and never cleared
/// (a stale bit only costs a probe); 8 KiB per large level.
#[derive(Clone, Debug)]
struct Directory(Box<[u64; 1024]>);

impl Directory {
    fn new() -> Self {
        Directory(Box::new([0; 1024]))
    }

    /// Marks every top-16 value the prefix `addr/len` covers.
    fn mark<K: Key>(&mut self, addr: K, len: u8) {
        let first = usize::from(addr.top16());
        let count = 1usize << 16u8.saturating_sub(len);
        for b in first..first + count {
            self.0[b / 64] |= 1 << (b % 64);
        }
    }

    #[inline]
    fn may_contain<K: Key>(&self, addr: K) -> bool {
        let b = usize::from(addr.top16());
        self.0[b / 64] & (1 << (b % 64)) != 0
    }
}

/// The prefixes of one address family.
#[derive(Clone, Debug)]
struct Family<K, V> {
    /// Only non-empty lengths, sorted by descending length.
    levels: Vec<Level<K, V>>,
    /// Whether any level has a directory (else lookups take the plain loop).
    directories: bool,
}

/// All prefixes of one length in one family.
#[derive(Clone, Debug)]
struct Level<K, V> {
    len: u8,
    /// Netmask for `len`, cached for the lookup loop.
    mask: K,
    /// Masked network address → value; never empty.
    map: FxHashMap<K, V>,
    /// For levels of at least [`DIRECTORY_THRESHOLD`] entries: which top-16 values can hit.
    directory: Option<Directory>,
}

impl<K: Key, V: Copy> Family<K, V> {
    fn new() -> Self {
        Family {
            levels: Vec::new(),
            directories: false,
        }
    }

    #[inline]
    fn lookup(&self, addr: K) -> Option<V> {
        if !self.directories {
            return self
                .levels
                .iter()
                .find_map(|level| level.map.get(&(addr & level.mask)).copied());
        }
        self.levels.iter().find_map(|level| {
            if let Some(d) = &level.directory
                && !d.may_contain(addr)
            {
                return None;
            }
            level.map.get(&(addr & level.mask)).copied()
        })
    }

    fn get(&self, addr: K, len: u8) -> Option<V> {
        let level = &self.levels[self.position(len).ok()?];
        level.map.get(&(addr & level.mask)).copied()
    }

    fn insert(&mut self, addr: K, len: u8, v: V) -> Option<V> {
        assert!(
            len <= K::BITS_U8,
            "prefix length {len} exceeds the address width {}",
            K::BITS_U8
        );
        let i = match self.position(len) {
            Ok(i) => i,
            Err(i) => {
                let level = Level {
                    len,
                    mask: K::mask(len),
                    map: FxHashMap::default(),
                    directory: None,
                };
                self.levels.insert(i, level);
                i
            }
        };
        let level = &mut self.levels[i];
        let key = addr & level.mask;
        let old = level.map.insert(key, v);
        match &mut level.directory {
            Some(d) => d.mark(key, len),
            None if level.map.len() >= DIRECTORY_THRESHOLD => {
                let mut d = Directory::new();
                for &k in level.map.keys() {
                    d.mark(k, len);
                }
                level.directory = Some(d);
                self.directories = true;
            }
            None => {}
        }
        old
    }

    fn remove(&mut self, addr: K, len: u8) -> Option<V> {
        let i = self.position(len).ok()?;
        let level = &mut self.levels[i];
        let old = level.map.remove(&(addr & level.mask));
        if level.map.is_empty() {
            // Keep the lookup list to lengths that can hit, and free the map.
            self.levels.remove(i);
            self.directories = self.levels.iter().any(|l| l.directory.is_some());
        }
        old
    }

    fn len(&self) -> usize {
        self.levels.iter().map(|level| level.map.len()).sum()
    }

    /// Index of the level for `len`, or where to insert it to keep lengths descending.
    fn position(&self, len: u8) -> Result<usize, usize> {
        self.levels.binary_search_by(|level| len.cmp(&level.len))
    }

    fn heap_bytes(&self) -> usize {
        let list = self.levels.capacity() * size_of::<Level<K, V>>();
        let maps: usize = self
            .levels
            .iter()
            .map(|level| {
                hash_map_heap_bytes(level.map.capacity(), size_of::<(K, V)>())
                    + level
                        .directory
                        .as_ref()
                        .map_or(0, |_| size_of::<[u64; 1024]>())
            })
            .sum();
        list + maps
    }
}

/// Heap bytes of a hashbrown table with `capacity` slots of `slot` bytes: buckets are a
/// power of two, at most 7/8 full (all but one when fewer than 8), plus one control byte
/// per bucket and one trailing SIMD group.
fn hash_map_heap_bytes(capacity: usize, slot: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 7 {
        capacity + 1
    } else {
        capacity / 7 * 8
    };
    buckets * (slot + 1) + CONTROL_GROUP_WIDTH
}

/// Trailing control bytes hashbrown appends to each table (its SIMD group width on x86-64).
const CONTROL_GROUP_WIDTH: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn v4(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    fn v6(s: &str) -> u128 {
        u128::from(s.parse::<Ipv6Addr>().unwrap())
    }

    #[test]
    fn prefix_new_zeroes_host_bits() {
        let a = Prefix::new("203.0.113.77".parse().unwrap(), 26).unwrap();
        assert_eq!(
            a,
            Prefix::V4 {
                addr: v4("203.0.113.64"),
                len: 26
            }
        );
        let b = Prefix::new("2001:db8:1:2::9".parse().unwrap(), 32).unwrap();
        assert_eq!(
            b,
            Prefix::V6 {
                addr: v6("2001:db8::"),
                len: 32
            }
        );
        assert_eq!(b.addr(), "2001:db8::".parse::<IpAddr>().unwrap());
        assert_eq!(b.len(), 32);
    }

    #[test]
    fn prefix_new_rejects_oversized_length() {
        let a4: IpAddr = "10.0.0.1".parse().unwrap();
        let a6: IpAddr = "::1".parse().unwrap();
        assert!(Prefix::new(a4, 32).is_ok());
        assert_eq!(Prefix::new(a4, 33), Err(PrefixError::LengthOutOfRange));
        assert!(Prefix::new(a6, 128).is_ok());
        assert_eq!(Prefix::new(a6, 129), Err(PrefixError::LengthOutOfRange));
        assert_eq!(Prefix::new(a6, 255), Err(PrefixError::LengthOutOfRange));
    }

    #[test]
    fn prefix_contains_respects_length_and_family() {
        let net = p("10.1.0.0/16");
        assert!(net.contains("10.1.255.255".parse().unwrap()));
        assert!(!net.contains("10.2.0.0".parse().unwrap()));
        assert!(!net.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(p("0.0.0.0/0").contains("255.255.255.255".parse().unwrap()));
        assert!(p("::/0").contains("ffff::1".parse().unwrap()));
        assert!(!p("::/0").contains("1.2.3.4".parse().unwrap()));
        assert!(p("2001:db8::1").contains("2001:db8::1".parse().unwrap()));
        assert!(!p("2001:db8::1").contains("2001:db8::2".parse().unwrap()));
    }

    #[test]
    fn display_formats_address_and_length() {
        assert_eq!(p("203.0.113.0/26").to_string(), "203.0.113.0/26");
        assert_eq!(p("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(p("192.0.2.1").to_string(), "192.0.2.1/32");
        assert_eq!(p("2001:db8::1").to_string(), "2001:db8::1/128");
        assert_eq!(p("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(p("::/0").to_string(), "::/0");
    }

    #[test]
    fn from_str_normalises_host_bits() {
        assert_eq!(p("10.1.2.3/8"), p("10.0.0.0/8"));
        assert_eq!(p("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(p("2001:db8::ff/64").to_string(), "2001:db8::/64");
    }

    #[test]
    fn from_str_rejects_invalid_input() {
        for bad in [
            "",
            "/24",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/ 8",
            "10.0.0.0/8 ",
            "10.0.0.0/8/8",
            "10.0.0.0/0x8",
            "10.0.0.0/1234",
            "10.0.0/8",
            "10.0.0.256/8",
            "2001:db8::/64%eth0",
            "2001:db8:::/64",
            "fe80::1%eth0",
            "host/24",
        ] {
            assert_eq!(
                bad.parse::<Prefix>(),
                Err(PrefixError::Malformed),
                "{bad:?}"
            );
        }
        for bad in ["10.0.0.0/33", "10.0.0.0/256", "10.0.0.0/999", "::/129"] {
            assert_eq!(
                bad.parse::<Prefix>(),
                Err(PrefixError::LengthOutOfRange),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn error_displays_cause() {
        assert!(PrefixError::LengthOutOfRange.to_string().contains("length"));
        assert!(PrefixError::Malformed.to_string().contains("malformed"));
    }

    #[test]
    fn empty_table_finds_nothing() {
        let t = PrefixTable::<u32>::new();
        assert!(t.is_empty());
        assert_eq!(t.len(), 0);
        assert_eq!(t.heap_bytes(), 0);
        assert_eq!(t.lookup_v4(0), None);
        assert_eq!(t.lookup_v6(0), None);
        assert_eq!(t.get(&p("0.0.0.0/0")), None);
        assert_eq!(t.iter().count(), 0);
    }

    #[test]
    fn host_routes_match_only_their_address() {
        let mut t = PrefixTable::new();
        t.insert(p("192.0.2.1"), 1);
        t.insert(p("2001:db8::1"), 2);
        assert_eq!(t.lookup_v4(v4("192.0.2.1")), Some(1));
        assert_eq!(t.lookup_v4(v4("192.0.2.0")), None);
        assert_eq!(t.lookup_v4(v4("192.0.2.2")), None);
        assert_eq!(t.lookup_v6(v6("2001:db8::1")), Some(2));
        assert_eq!(t.lookup_v6(v6("2001:db8::")), None);
        assert_eq!(t.lookup("192.0.2.1".parse().unwrap()), Some(1));
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()), Some(2));
    }

    #[test]
    fn default_routes_match_everything_in_their_family() {
        let mut t = PrefixTable::new();
        t.insert(p("0.0.0.0/0"), 4);
        assert_eq!(t.lookup_v4(0), Some(4));
        assert_eq!(t.lookup_v4(u32::MAX), Some(4));
        assert_eq!(t.lookup_v6(0), None);
        t.insert(p("::/0"), 6);
        assert_eq!(t.lookup_v6(0), Some(6));
        assert_eq!(t.lookup_v6(u128::MAX), Some(6));
        assert_eq!(t.lookup_v4(v4("198.51.100.7")), Some(4));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn overlapping_prefixes_pick_the_longest() {
        let mut t = PrefixTable::new();
        t.insert(p("0.0.0.0/0"), 0);
        t.insert(p("10.0.0.0/8"), 8);
        t.insert(p("10.1.0.0/16"), 16);
        t.insert(p("10.1.2.0/24"), 24);
        t.insert(p("10.1.2.3/32"), 32);
        assert_eq!(t.lookup_v4(v4("10.1.2.3")), Some(32));
        assert_eq!(t.lookup_v4(v4("10.1.2.4")), Some(24));
        assert_eq!(t.lookup_v4(v4("10.1.3.4")), Some(16));
        assert_eq!(t.lookup_v4(v4("10.2.3.4")), Some(8));
        assert_eq!(t.lookup_v4(v4("11.2.3.4")), Some(0));
        // Insertion order must not matter.
        let mut r = PrefixTable::new();
        for (q, v) in t.iter().collect::<Vec<_>>().into_iter().rev() {
            r.insert(q, v);
        }
        for a in ["10.1.2.3", "10.1.2.4", "10.1.3.4", "10.2.3.4", "11.2.3.4"] {
            assert_eq!(r.lookup_v4(v4(a)), t.lookup_v4(v4(a)), "{a}");
        }
    }

    #[test]
    fn insert_replaces_and_returns_old_value() {
        let mut t = PrefixTable::new();
        assert_eq!(t.insert(p("10.0.0.0/8"), 1), None);
        assert_eq!(t.insert(p("10.0.0.0/8"), 2), Some(1));
        // Same network written with host bits is the same prefix.
        assert_eq!(t.insert(p("10.9.9.9/8"), 3), Some(2));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&p("10.0.0.0/8")), Some(3));
        assert_eq!(t.lookup_v4(v4("10.5.5.5")), Some(3));
    }

    #[test]
    fn get_is_exact_match_only() {
        let mut t = PrefixTable::new();
        t.insert(p("10.0.0.0/8"), 1);
        assert_eq!(t.get(&p("10.0.0.0/8")), Some(1));
        assert_eq!(t.get(&p("10.0.0.0/16")), None);
        assert_eq!(t.get(&p("10.0.0.0/7")), None);
        assert_eq!(t.get(&p("10.0.0.1")), None);
    }

    #[test]
    fn remove_falls_back_to_shorter_prefix() {
        let mut t = PrefixTable::new();
        t.insert(p("10.0.0.0/8"), 8);
        t.insert(p("10.1.0.0/16"), 16);
        t.insert(p("2001:db8::/32"), 32);
        t.insert(p("2001:db8:1::/48"), 48);
        assert_eq!(t.lookup_v4(v4("10.1.1.1")), Some(16));
        assert_eq!(t.remove(&p("10.1.0.0/16")), Some(16));
        assert_eq!(t.remove(&p("10.1.0.0/16")), None);
        assert_eq!(t.lookup_v4(v4("10.1.1.1")), Some(8));
        assert_eq!(t.lookup_v6(v6("2001:db8:1::5")), Some(48));
        assert_eq!(t.remove(&p("2001:db8:1::/48")), Some(48));
        assert_eq!(t.lookup_v6(v6("2001:db8:1::5")), Some(32));
        assert_eq!(t.remove(&p("10.0.0.0/8")), Some(8));
        assert_eq!(t.remove(&p("2001:db8::/32")), Some(32));
        assert_eq!(t.lookup_v4(v4("10.1.1.1")), None);
        assert!(t.is_empty());
        assert_eq!(
            t.v4.levels.len() + t.v6.levels.len(),
            0,
            "empty lengths are dropped"
        );
    }

    #[test]
    fn remove_of_absent_prefix_keeps_others() {
        let mut t = PrefixTable::new();
        t.insert(p("10.0.0.0/8"), 8);
        assert_eq!(t.remove(&p("11.0.0.0/8")), None);
        assert_eq!(t.remove(&p("10.0.0.0/9")), None);
        assert_eq!(t.remove(&p("::/0")), None);
        // A hand-built prefix with an impossible length is simply absent.
        assert_eq!(t.remove(&Prefix::V4 { addr: 0, len: 200 }), None);
        assert_eq!(t.get(&Prefix::V4 { addr: 0, len: 200 }), None);
        assert_eq!(t.lookup_v4(v4("10.0.0.1")), Some(8));
    }

    #[test]
    fn families_are_kept_apart() {
        let mut t = PrefixTable::new();
        // Same numeric address and length in both families.
        t.insert(
            Prefix::V4 {
                addr: 0x0a00_0000,
                len: 8,
            },
            4,
        );
        t.insert(
            Prefix::V6 {
                addr: 0x0a00_0000,
                len: 8,
            },
            6,
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup_v4(0x0a00_0001), Some(4));
        assert_eq!(t.lookup_v6(0x0a00_0001), Some(6));
        assert_eq!(t.lookup_v6(v6("::ffff:10.0.0.1")), Some(6));
        assert_eq!(
            t.remove(&Prefix::V4 {
                addr: 0x0a00_0000,
                len: 8
            }),
            Some(4)
        );
        assert_eq!(t.lookup_v4(0x0a00_0001), None);
        assert_eq!(t.lookup_v6(0x0a00_0001), Some(6));
    }

    #[test]
    fn hand_built_prefix_host_bits_are_ignored() {
        let mut t = PrefixTable::new();
        t.insert(
            Prefix::V4 {
                addr: v4("10.1.2.3"),
                len: 8,
            },
            1,
        );
        assert_eq!(t.get(&p("10.0.0.0/8")), Some(1));
        assert_eq!(t.iter().next(), Some((p("10.0.0.0/8"), 1)));
    }

    #[test]
    #[should_panic(expected = "exceeds the address width")]
    fn insert_panics_on_oversized_hand_built_length() {
        let mut t = PrefixTable::new();
        t.insert(Prefix::V4 { addr: 0, len: 33 }, 1);
    }

    #[test]
    fn iter_yields_every_entry_longest_first() {
        let mut t = PrefixTable::new();
        let entries = [
            (p("10.0.0.0/8"), 1),
            (p("10.1.2.3"), 2),
            (p("0.0.0.0/0"), 3),
            (p("2001:db8::/32"), 4),
            (p("::/0"), 5),
        ];
        for (q, v) in entries {
            t.insert(q, v);
        }
        let got: Vec<_> = t.iter().collect();
        assert_eq!(
            got,
            vec![
                (p("10.1.2.3"), 2),
                (p("10.0.0.0/8"), 1),
                (p("0.0.0.0/0"), 3),
                (p("2001:db8::/32"), 4),
                (p("::/0"), 5),
            ]
        );
    }

    #[test]
    fn heap_bytes_grows_with_entries() {
        let mut t = PrefixTable::new();
        t.insert(p("10.0.0.0/8"), 1u32);
        let one = t.heap_bytes();
        assert!(one > 0);
        for i in 0..1000u32 {
            t.insert(
                Prefix::V4 {
                    addr: i << 8,
                    len: 24,
                },
                i,
            );
        }
        let many = t.heap_bytes();
        assert!(
            many > one + 1000 * size_of::<(u32, u32)>(),
            "{one} -> {many}"
        );
        // Loose upper bound: under ~4x the raw slot size per entry.
        assert!(many < 1001 * 4 * size_of::<(u32, u32)>() + 4096, "{many}");
    }

    // ---- Property tests against a naive oracle ----

    /// A deliberately simple model: a list of prefixes scanned for the longest match.
    #[derive(Default)]
    struct Oracle(Vec<(Prefix, u16)>);

    impl Oracle {
        fn insert(&mut self, p: Prefix, v: u16) -> Option<u16> {
            match self.0.iter_mut().find(|(q, _)| *q == p) {
                Some(slot) => Some(std::mem::replace(&mut slot.1, v)),
                None => {
                    self.0.push((p, v));
                    None
                }
            }
        }

        fn remove(&mut self, p: &Prefix) -> Option<u16> {
            let i = self.0.iter().position(|(q, _)| q == p)?;
            Some(self.0.swap_remove(i).1)
        }

        fn lookup(&self, addr: IpAddr) -> Option<u16> {
            self.0
                .iter()
                .filter(|(q, _)| naive_contains(q, addr))
                .max_by_key(|(q, _)| q.len())
                .map(|&(_, v)| v)
        }
    }

    /// Bit-by-bit containment, independent of the masks the table and `Prefix` use.
    fn naive_contains(q: &Prefix, addr: IpAddr) -> bool {
        let (net, addr, width, len) = match (*q, addr) {
            (Prefix::V4 { addr: net, len }, IpAddr::V4(a)) => {
                (u128::from(net), u128::from(u32::from(a)), 32, len)
            }
            (Prefix::V6 { addr: net, len }, IpAddr::V6(a)) => (net, u128::from(a), 128, len),
            _ => return false,
        };
        (0..u32::from(len)).all(|i| {
            let bit = width - 1 - i;
            (net >> bit) & 1 == (addr >> bit) & 1
        })
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(Prefix, u16),
        /// Remove an arbitrary (usually absent) prefix.
        Remove(Prefix),
        /// Remove the n-th prefix the oracle holds (modulo its size).
        RemoveExisting(usize),
    }

    /// A few fixed bases so generated prefixes nest and collide often.
    const V4_BASES: [u32; 3] = [0x0a00_0000, 0xc0a8_0100, 0xcb00_7140];
    const V6_BASES: [u128; 3] = [
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        0x2001_0db8_0001_0002_0000_0000_0000_0000,
        0xfd00_0000_0000_0000_0000_0000_0000_0001,
    ];

    /// A prefix near one of the bases: the base with its low `noise_bits` bits perturbed.
    fn arb_prefix() -> impl Strategy<Value = Prefix> {
        prop_oneof![
            (0..V4_BASES.len(), any::<u32>(), 0u8..=32, 0u8..=32).prop_map(
                |(b, noise, noise_bits, len)| {
                    let addr = V4_BASES[b] ^ (noise & !u32::mask(32 - noise_bits));
                    Prefix::new(IpAddr::V4(addr.into()), len).unwrap()
                }
            ),
            (0..V6_BASES.len(), any::<u128>(), 0u8..=128, 0u8..=128).prop_map(
                |(b, noise, noise_bits, len)| {
                    let addr = V6_BASES[b] ^ (noise & !u128::mask(128 - noise_bits));
                    Prefix::new(IpAddr::V6(addr.into()), len).unwrap()
                }
            ),
        ]
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (arb_prefix(), any::<u16>()).prop_map(|(p, v)| Op::Insert(p, v)),
            1 => arb_prefix().prop_map(Op::Remove),
            2 => any::<usize>().prop_map(Op::RemoveExisting),
        ]
    }

    /// How a probe address is derived from the table contents.
    #[derive(Clone, Debug)]
    enum Probe {
        /// Inside the n-th stored prefix, host bits from `noise`.
        Inside(usize, u128),
        /// Like `Inside`, but with the last network bit flipped: just outside that prefix.
        Neighbour(usize, u128),
        /// An unrelated address.
        Random(IpAddr),
    }

    fn arb_probe() -> impl Strategy<Value = Probe> {
        prop_oneof![
            5 => (any::<usize>(), any::<u128>()).prop_map(|(i, n)| Probe::Inside(i, n)),
            2 => (any::<usize>(), any::<u128>()).prop_map(|(i, n)| Probe::Neighbour(i, n)),
            1 => any::<IpAddr>().prop_map(Probe::Random),
        ]
    }

    fn probe_addr(probe: &Probe, oracle: &Oracle) -> IpAddr {
        let (i, noise, flip) = match *probe {
            Probe::Random(a) => return a,
            Probe::Inside(i, noise) => (i, noise, false),
            Probe::Neighbour(i, noise) => (i, noise, true),
        };
        if oracle.0.is_empty() {
            return IpAddr::V6(Ipv6Addr::from(noise));
        }
        match oracle.0[i % oracle.0.len()].0 {
            Prefix::V4 { addr, len } => {
                let mut a = addr | (noise as u32 & !u32::mask(len));
                if flip && len > 0 {
                    a ^= 1 << (32 - len);
                }
                IpAddr::V4(a.into())
            }
            Prefix::V6 { addr, len } => {
                let mut a = addr | (noise & !u128::mask(len));
                if flip && len > 0 {
                    a ^= 1 << (128 - len);
                }
                IpAddr::V6(a.into())
            }
        }
    }

    fn sorted(mut v: Vec<(Prefix, u16)>) -> Vec<(Prefix, u16)> {
        v.sort_by_key(|&(q, v)| match q {
            Prefix::V4 { addr, len } => (0, u128::from(addr), len, v),
            Prefix::V6 { addr, len } => (1, addr, len, v),
        });
        v
    }

    fn check_against_oracle(
        table: &PrefixTable<u16>,
        oracle: &Oracle,
        probes: &[Probe],
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(table.len(), oracle.0.len());
        prop_assert_eq!(table.is_empty(), oracle.0.is_empty());
        prop_assert_eq!(sorted(table.iter().collect()), sorted(oracle.0.clone()));
        for &(q, v) in &oracle.0 {
            prop_assert_eq!(table.get(&q), Some(v));
        }
        for probe in probes {
            let addr = probe_addr(probe, oracle);
            prop_assert_eq!(table.lookup(addr), oracle.lookup(addr), "addr {}", addr);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_lookup_matches_oracle(
            ops in prop::collection::vec(arb_op(), 0..80),
            probes in prop::collection::vec(arb_probe(), 1..40),
        ) {
            let mut table = PrefixTable::new();
            let mut oracle = Oracle::default();
            for (step, op) in ops.iter().enumerate() {
                match *op {
                    Op::Insert(q, v) => {
                        prop_assert_eq!(table.insert(q, v), oracle.insert(q, v), "insert {}", q);
                    }
                    Op::Remove(q) => {
                        prop_assert_eq!(table.remove(&q), oracle.remove(&q), "remove {}", q);
                    }
                    Op::RemoveExisting(i) => {
                        if let Some(&(q, _)) = oracle.0.get(i % oracle.0.len().max(1)) {
                            prop_assert_eq!(table.remove(&q), oracle.remove(&q), "remove {}", q);
                        }
                    }
                }
                // Check midway too, so removals that empty a length are exercised mid-run.
                if step % 16 == 15 {
                    check_against_oracle(&table, &oracle, &probes)?;
                }
            }
            check_against_oracle(&table, &oracle, &probes)?;
        }

        #[test]
        fn prop_display_from_str_round_trip(q in arb_prefix()) {
            let text = q.to_string();
            prop_assert_eq!(text.parse::<Prefix>(), Ok(q));
            prop_assert_eq!(Prefix::new(q.addr(), q.len()), Ok(q));
            prop_assert!(q.contains(q.addr()));
        }

        #[test]
        fn prop_from_str_never_panics(s in "[0-9a-f:./]{0,45}") {
            if let Ok(q) = s.parse::<Prefix>() {
                prop_assert_eq!(q.to_string().parse::<Prefix>(), Ok(q));
            }
        }
    }
}
