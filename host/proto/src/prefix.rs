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
/// /128). Host bits in the address are zeroed, so `198.51.100.77/24` parses as
/// `198.51.100.0/24`. The length must be plain decimal digits (no sign, no spaces).
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
mod tests;
