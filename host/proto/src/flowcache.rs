//! Per-worker flow-verdict cache: a policy verdict is reused for every packet of a flow until
//! the TTL the plugin gave expires or the plugin generation changes, so steady flows cost a
//! table probe instead of a plugin call.
//!
//! Direct-mapped and fixed-size: one slot per hash bucket, a colliding flow simply replaces
//! the older one. Memory is allocated once; `get` and `insert` never allocate and cost one
//! hash and one slot comparison. Time is passed in (milliseconds on any monotonic clock).

use crate::wire::ip::Addr;

/// What identifies a flow for policy purposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Source port (0 without ports).
    pub src_port: u16,
    /// Destination port (0 without ports).
    pub dst_port: u16,
    /// IP protocol.
    pub protocol: u8,
    /// Direction code (outbound, inbound, transit).
    pub direction: u8,
    /// Ingress peer (`u16::MAX` for the TUN).
    pub ingress: u16,
    /// DSCP of the packet as received (policies may classify on it).
    pub dscp: u8,
}

impl FlowKey {
    fn hash(&self) -> u64 {
        let mut h: u64 = 0x243f_6a88_85a3_08d3;
        let mut mix = |v: u64| h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31);
        for a in [self.src, self.dst] {
            match a {
                Addr::V4(a) => mix(u64::from(a)),
                Addr::V6(a) => {
                    mix(a as u64);
                    mix((a >> 64) as u64);
                }
            }
        }
        mix(u64::from(self.src_port) << 48
            | u64::from(self.dst_port) << 32
            | u64::from(self.protocol) << 24
            | u64::from(self.direction) << 16
            | u64::from(self.ingress));
        mix(u64::from(self.dscp));
        h ^ (h >> 29)
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot<V> {
    key: FlowKey,
    value: V,
    expires_ms: u64,
    generation: u64,
}

/// A fixed-size, direct-mapped cache of per-flow verdicts.
#[derive(Debug)]
pub struct FlowCache<V: Copy> {
    slots: Box<[Option<Slot<V>>]>,
    mask: usize,
    hits: u64,
    misses: u64,
}

impl<V: Copy> FlowCache<V> {
    /// A cache of at least `capacity` slots (rounded up to a power of two, at least 1).
    pub fn new(capacity: usize) -> Self {
        let n = capacity.max(1).next_power_of_two();
        FlowCache {
            slots: vec![None; n].into_boxed_slice(),
            mask: n - 1,
            hits: 0,
            misses: 0,
        }
    }

    /// The verdict cached for `key`, if it is still valid at `now_ms` for `generation`.
    #[inline]
    pub fn get(&mut self, key: &FlowKey, now_ms: u64, generation: u64) -> Option<V> {
        let slot = &self.slots[key.hash() as usize & self.mask];
        match slot {
            Some(s) if s.key == *key && s.generation == generation && now_ms < s.expires_ms => {
                self.hits += 1;
                Some(s.value)
            }
            _ => {
                self.misses += 1;
                None
            }
        }
    }

    /// Caches `value` for `key` until `now_ms + ttl_ms`; a zero TTL caches nothing.
    #[inline]
    pub fn insert(&mut self, key: FlowKey, value: V, now_ms: u64, ttl_ms: u32, generation: u64) {
        if ttl_ms == 0 {
            return;
        }
        let i = key.hash() as usize & self.mask;
        self.slots[i] = Some(Slot {
            key,
            value,
            expires_ms: now_ms + u64::from(ttl_ms),
            generation,
        });
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Lookups answered from the cache, and lookups that were not.
    pub fn hit_miss(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src: Addr::V4(0xcb00_7102),
            dst: Addr::V4(0xcb00_7142),
            src_port: port,
            dst_port: 5060,
            protocol: 17,
            direction: 0,
            ingress: u16::MAX,
            dscp: 0,
        }
    }

    #[test]
    fn hits_until_ttl_expires() {
        let mut c = FlowCache::new(1024);
        c.insert(key(1), 7u32, 1000, 500, 1);
        assert_eq!(c.get(&key(1), 1000, 1), Some(7));
        assert_eq!(c.get(&key(1), 1499, 1), Some(7));
        assert_eq!(c.get(&key(1), 1500, 1), None, "expired");
        assert_eq!(c.hit_miss(), (2, 1));
    }

    #[test]
    fn generation_change_invalidates() {
        let mut c = FlowCache::new(16);
        c.insert(key(1), 7u32, 0, 10_000, 1);
        assert_eq!(c.get(&key(1), 1, 2), None);
    }

    #[test]
    fn zero_ttl_is_not_cached_and_other_flows_miss() {
        let mut c = FlowCache::new(16);
        c.insert(key(1), 7u32, 0, 0, 1);
        assert_eq!(c.get(&key(1), 0, 1), None);
        c.insert(key(1), 7u32, 0, 100, 1);
        assert_eq!(c.get(&key(2), 0, 1), None);
    }

    #[test]
    fn colliding_flows_replace_each_other_without_mixing_up() {
        let mut c = FlowCache::new(1);
        c.insert(key(1), 1u32, 0, 100, 1);
        c.insert(key(2), 2u32, 0, 100, 1);
        assert_eq!(c.get(&key(1), 0, 1), None);
        assert_eq!(c.get(&key(2), 0, 1), Some(2));
    }
}
