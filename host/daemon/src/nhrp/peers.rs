//! Peers learnt through NHRP: on a hub one dataplane peer per spoke underlay address that
//! holds at least one registration, on a spoke one per shortcut peer. They live in slots
//! after the configured peers (ids stay stable while in use; freed slots are reused), and
//! the dataplane snapshots are built from them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use mgre_proto::nhrp::{Change, Registration, ShortcutChange};
use mgre_proto::{DataplaneConfig, Encap, Peer, PeerId, Prefix};

/// The dynamic part of a peer list.
#[derive(Debug)]
pub struct DynamicPeers {
    /// Configured peers come first; dynamic slot `i` is peer id `first + i`.
    first: usize,
    slots: Vec<Slot>,
    by_underlay: HashMap<IpAddr, usize>,
    free: Vec<usize>,
    capacity: usize,
    /// Encapsulation and UDP source of the last NHRP message from each underlay address.
    last_seen: HashMap<IpAddr, (Encap, u16)>,
}

#[derive(Debug, Clone)]
struct Slot {
    peer: Peer,
    /// Registrations (or shortcuts) pointing at it; 0 = vacant.
    refs: u32,
    /// Registered from behind NAT (its underlay address is the observed one).
    nat: bool,
    /// Counter values when the slot was (re)assigned, subtracted by `mgre show peers`.
    baseline: (u64, u64, u64, u64),
    /// QoS group an admission policy gave the spoke.
    qos_group: Option<String>,
}

impl DynamicPeers {
    /// Slots for up to `capacity` spokes after `first` configured peers.
    pub fn new(first: usize, capacity: usize) -> Self {
        DynamicPeers {
            first,
            slots: Vec::new(),
            by_underlay: HashMap::new(),
            free: Vec::new(),
            capacity,
            last_seen: HashMap::new(),
        }
    }

    /// Notes how a message from `from` arrived, for the peer its registrations create; a
    /// spoke behind NAT is then sent to from the well-known port to `from`'s port.
    pub fn seen(&mut self, from: SocketAddr, encap: Encap) {
        self.last_seen.insert(from.ip(), (encap, from.port()));
        if let Some(&i) = self.by_underlay.get(&from.ip()) {
            let slot = &mut self.slots[i];
            slot.peer.encap = encap;
            slot.peer.udp_port = (slot.nat && encap == Encap::GreUdp).then_some(from.port());
        }
    }

    /// Mirrors registration-table changes into the slots. `template` gives key and checksum
    /// settings; `counters(id)` the peer's current (rx packets, rx bytes, tx packets, tx
    /// bytes) for a slot being reassigned. Returns whether any peer came or went.
    pub fn apply(
        &mut self,
        changes: &[Change],
        template: &Peer,
        counters: &dyn Fn(PeerId) -> (u64, u64, u64, u64),
    ) -> bool {
        let mut changed = false;
        for c in changes {
            match c {
                Change::Added(r) => {
                    changed |= self.acquire(underlay(r), r.nat_nbma.is_some(), template, counters)
                }
                Change::Refreshed(_) => {}
                Change::Replaced { old, new } => {
                    self.release(underlay(old));
                    self.acquire(underlay(new), new.nat_nbma.is_some(), template, counters);
                    changed = true;
                }
                Change::Removed { registration, .. } => {
                    self.release(underlay(registration));
                    changed = true;
                }
            }
        }
        changed
    }

    /// Mirrors shortcut changes into the slots (see [`DynamicPeers::apply`]). Returns
    /// whether the endpoint table must change.
    /// Shortcuts to an address for which `configured` holds (an NHS: a configured peer)
    /// take no slot.
    pub fn apply_shortcuts(
        &mut self,
        changes: &[ShortcutChange],
        template: &Peer,
        counters: &dyn Fn(PeerId) -> (u64, u64, u64, u64),
        configured: &dyn Fn(IpAddr) -> bool,
    ) -> bool {
        for c in changes {
            match c {
                ShortcutChange::Added(s) if !configured(s.nbma) => {
                    self.acquire(s.nbma, false, template, counters);
                }
                ShortcutChange::Removed { shortcut, .. } if !configured(shortcut.nbma) => {
                    self.release(shortcut.nbma)
                }
                _ => {}
            }
        }
        changes
            .iter()
            .any(|c| !matches!(c, ShortcutChange::Refreshed(_)))
    }

    /// Applies an admission policy's attributes to the peer at underlay address `addr`:
    /// whether it gets multicast copies (`None`: the default, yes) and its QoS group.
    pub fn set_attributes(
        &mut self,
        addr: IpAddr,
        multicast: Option<bool>,
        qos_group: Option<String>,
    ) {
        if let Some(&i) = self.by_underlay.get(&addr) {
            let slot = &mut self.slots[i];
            slot.peer.multicast = multicast.unwrap_or(true);
            slot.qos_group = qos_group;
        }
    }

    /// The admission attributes of the peer at `addr`: multicast, QoS group.
    pub fn attributes(&self, addr: IpAddr) -> Option<(bool, Option<&str>)> {
        let slot = &self.slots[*self.by_underlay.get(&addr)?];
        Some((slot.peer.multicast, slot.qos_group.as_deref()))
    }

    /// The peer id of underlay address `addr`, if it holds a slot.
    pub fn peer_at(&self, addr: IpAddr) -> Option<PeerId> {
        self.by_underlay
            .get(&addr)
            .map(|&i| (self.first + i) as PeerId)
    }

    /// Underlay addresses holding a slot, with their peer ids.
    pub fn live(&self) -> impl Iterator<Item = (IpAddr, PeerId)> + '_ {
        self.by_underlay
            .iter()
            .map(|(a, &i)| (*a, (self.first + i) as PeerId))
    }

    /// The peer id registrations of `r`'s spoke map to.
    pub fn peer_of(&self, r: &Registration) -> Option<PeerId> {
        self.peer_at(underlay(r))
    }

    /// The counter baseline of dynamic peer `id` (zero for configured peers).
    pub fn baseline(&self, id: PeerId) -> (u64, u64, u64, u64) {
        (id as usize)
            .checked_sub(self.first)
            .and_then(|i| self.slots.get(i))
            .map_or((0, 0, 0, 0), |s| s.baseline)
    }

    /// Spokes currently holding a slot.
    pub fn len(&self) -> usize {
        self.by_underlay.len()
    }

    /// The dataplane configuration of `base` with the dynamic peers appended and `entries`
    /// (prefix, underlay address) mapped to them.
    pub fn snapshot(
        &self,
        base: &DataplaneConfig,
        entries: impl Iterator<Item = (Prefix, IpAddr)>,
    ) -> DataplaneConfig {
        let mut cfg = base.clone();
        cfg.peers.extend(self.slots.iter().map(|s| match s.refs {
            0 => Peer::vacant(),
            _ => s.peer.clone(),
        }));
        let extra: Vec<(Prefix, PeerId)> = entries
            .filter_map(|(prefix, addr)| Some((prefix, self.peer_at(addr)?)))
            .collect();
        cfg.map.extend(extra);
        cfg
    }

    fn acquire(
        &mut self,
        addr: IpAddr,
        nat: bool,
        template: &Peer,
        counters: &dyn Fn(PeerId) -> (u64, u64, u64, u64),
    ) -> bool {
        if let Some(&i) = self.by_underlay.get(&addr) {
            self.slots[i].refs += 1;
            return false;
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < self.capacity => {
                self.slots.push(Slot {
                    peer: Peer::vacant(),
                    refs: 0,
                    nat: false,
                    baseline: (0, 0, 0, 0),
                    qos_group: None,
                });
                self.slots.len() - 1
            }
            // The server's entry limit (the resolver's shortcut limit) keeps peers within
            // the capacity.
            None => return false,
        };
        let (encap, port) = self
            .last_seen
            .get(&addr)
            .copied()
            .unwrap_or((template.encap, 0));
        self.slots[i] = Slot {
            peer: Peer {
                name: format!("nhrp-{addr}"),
                nbma: addr,
                encap,
                udp_port: (nat && encap == Encap::GreUdp).then_some(port),
                ..template.clone()
            },
            refs: 1,
            nat,
            baseline: counters((self.first + i) as PeerId),
            qos_group: None,
        };
        self.by_underlay.insert(addr, i);
        true
    }

    fn release(&mut self, addr: IpAddr) {
        let Some(&i) = self.by_underlay.get(&addr) else {
            return;
        };
        let slot = &mut self.slots[i];
        slot.refs = slot.refs.saturating_sub(1);
        if slot.refs == 0 {
            self.by_underlay.remove(&addr);
            self.last_seen.remove(&addr);
            self.free.push(i);
        }
    }
}

/// Where a registration's spoke is reached: the address its packets come from.
pub fn underlay(r: &Registration) -> IpAddr {
    r.nat_nbma.unwrap_or(r.nbma)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mgre_proto::nhrp::RemovalCause;

    use super::*;

    fn reg(prefix: &str, nbma: &str, nat: Option<&str>) -> Registration {
        Registration {
            prefix: prefix.parse().unwrap(),
            nbma: nbma.parse().unwrap(),
            nat_nbma: nat.map(|n| n.parse().unwrap()),
            expires: Duration::from_secs(60),
            holding_time: 60,
            request_id: 1,
            unique: true,
            mtu: 0,
        }
    }

    fn base() -> DataplaneConfig {
        DataplaneConfig {
            role: mgre_proto::Role::Hub,
            peers: Vec::new(),
            map: Vec::new(),
            nhs: None,
            local_v4: None,
            local_v6: None,
            underlay_mtu: 1500,
            tun_mtu: 1476,
            mss_clamp: None,
            open_nhrp: None,
            peer_capacity: 8,
        }
    }

    fn template() -> Peer {
        Peer {
            key: Some(42),
            ..Peer::vacant()
        }
    }

    #[test]
    fn one_peer_per_spoke_reused_after_its_last_entry_goes() {
        let mut d = DynamicPeers::new(1, 8);
        let zero = |_| (0, 0, 0, 0);
        d.seen("192.0.2.11:0".parse().unwrap(), Encap::Gre);
        let a = reg("198.51.100.11/32", "192.0.2.11", None);
        let b = reg("203.0.113.0/26", "192.0.2.11", None);
        assert!(d.apply(&[Change::Added(a.clone())], &template(), &zero));
        assert!(!d.apply(&[Change::Added(b.clone())], &template(), &zero));
        assert_eq!(d.peer_of(&a), Some(1));
        assert_eq!(d.peer_of(&b), Some(1));
        assert_eq!(d.len(), 1);
        let removed = |r: &Registration| Change::Removed {
            registration: r.clone(),
            cause: RemovalCause::Expired,
        };
        d.apply(&[removed(&a)], &template(), &zero);
        assert_eq!(d.len(), 1, "one entry still points at the spoke");
        d.apply(&[removed(&b)], &template(), &zero);
        assert_eq!(d.len(), 0);
        let c = reg("198.51.100.12/32", "192.0.2.12", None);
        d.apply(&[Change::Added(c.clone())], &template(), &|_| (5, 6, 7, 8));
        assert_eq!(d.peer_of(&c), Some(1), "slot reused");
        assert_eq!(d.baseline(1), (5, 6, 7, 8));
    }

    #[test]
    fn snapshot_maps_prefixes_and_keeps_vacant_slots_unroutable() {
        let mut d = DynamicPeers::new(0, 8);
        let zero = |_| (0, 0, 0, 0);
        let a = reg("203.0.113.0/26", "192.0.2.11", None);
        let b = reg("203.0.113.64/26", "192.0.2.12", None);
        d.apply(
            &[Change::Added(a.clone()), Change::Added(b.clone())],
            &template(),
            &zero,
        );
        d.apply(
            &[Change::Removed {
                registration: a.clone(),
                cause: RemovalCause::Purged,
            }],
            &template(),
            &zero,
        );
        let base = base();
        let cfg = d.snapshot(&base, [(b.prefix, b.nbma)].into_iter());
        assert_eq!(cfg.peers.len(), 2);
        assert!(cfg.peers[0].is_vacant());
        assert_eq!(cfg.peers[1].nbma.to_string(), "192.0.2.12");
        assert_eq!(cfg.peers[1].key, Some(42));
        assert_eq!(cfg.map, vec![(b.prefix, 1)]);
    }

    #[test]
    fn spokes_behind_nat_are_sent_to_at_their_mapped_port() {
        let mut d = DynamicPeers::new(0, 8);
        let zero = |_| (0, 0, 0, 0);
        d.seen("198.51.100.200:40000".parse().unwrap(), Encap::GreUdp);
        let a = reg("203.0.113.0/26", "192.0.2.11", Some("198.51.100.200"));
        d.apply(&[Change::Added(a.clone())], &template(), &zero);
        let cfg = d.snapshot(&base(), [(a.prefix, underlay(&a))].into_iter());
        assert_eq!(cfg.peers[0].nbma.to_string(), "198.51.100.200");
        assert_eq!(cfg.peers[0].encap, Encap::GreUdp);
        assert_eq!(cfg.peers[0].udp_port, Some(40000));
        // The NAT rebinds: the next message comes from another port.
        d.seen("198.51.100.200:40001".parse().unwrap(), Encap::GreUdp);
        let cfg = d.snapshot(&base(), [(a.prefix, underlay(&a))].into_iter());
        assert_eq!(cfg.peers[0].udp_port, Some(40001));
    }
}
