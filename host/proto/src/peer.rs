//! Peers of a multipoint tunnel: where a remote site's underlay (NBMA) address is, how to
//! encapsulate for it, and the MTU that leaves for inner packets.

use std::net::IpAddr;

/// Index of a peer in the dataplane's peer list.
pub type PeerId = u32;

/// How packets to a peer are encapsulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encap {
    /// GRE directly over IP (protocol 47).
    Gre,
    /// GRE-in-UDP (RFC 8086), destination port 4754 by default.
    GreUdp,
}

impl Encap {
    /// Config and display name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Encap::Gre => "gre",
            Encap::GreUdp => "gre-udp",
        }
    }
}

/// One remote tunnel endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Operator-given name, unique in the tunnel.
    pub name: String,
    /// Underlay (NBMA) address.
    pub nbma: IpAddr,
    /// Encapsulation towards the peer.
    pub encap: Encap,
    /// GRE key sent to and required from the peer.
    pub key: Option<u32>,
    /// Send the GRE checksum.
    pub checksum: bool,
    /// Send sequence numbers and drop out-of-order packets from the peer.
    pub sequence: bool,
    /// GRE-in-UDP to a peer behind NAT: the UDP port its packets arrive from (the NAT's
    /// mapping of its well-known port). Packets to it go to this port and leave from the
    /// local well-known port, so they match that mapping. `None`: the RFC 8086 port, sent
    /// from per-flow source ports.
    pub udp_port: Option<u16>,
    /// A hub replicates inner multicast and broadcast to this peer ("map multicast").
    pub multicast: bool,
}

impl Peer {
    /// A free slot in a peer list whose peers come and go (NHRP): no address, no map entry,
    /// never routed to.
    pub fn vacant() -> Self {
        Peer {
            name: String::new(),
            nbma: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            encap: Encap::Gre,
            key: None,
            checksum: false,
            sequence: false,
            udp_port: None,
            multicast: true,
        }
    }

    /// Whether this is a [`Peer::vacant`] slot.
    pub fn is_vacant(&self) -> bool {
        self.name.is_empty()
    }

    /// Bytes added in front of an inner packet on the wire: outer IP, UDP if any, GRE header.
    pub fn overhead(&self) -> usize {
        let ip = if self.nbma.is_ipv4() { 20 } else { 40 };
        let udp = if self.encap == Encap::GreUdp { 8 } else { 0 };
        ip + udp + self.gre_header_len()
    }

    /// Length of the GRE header sent to this peer.
    pub fn gre_header_len(&self) -> usize {
        4 + 4 * usize::from(self.checksum)
            + 4 * usize::from(self.key.is_some())
            + 4 * usize::from(self.sequence)
    }

    /// Largest inner packet that fits an underlay MTU of `underlay_mtu` to this peer.
    pub fn inner_mtu(&self, underlay_mtu: u16) -> u16 {
        underlay_mtu.saturating_sub(self.overhead() as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overheads() {
        let mut p = Peer {
            name: "a".into(),
            nbma: "192.0.2.1".parse().unwrap(),
            encap: Encap::Gre,
            key: None,
            checksum: false,
            sequence: false,
            udp_port: None,
            multicast: true,
        };
        assert!(!p.is_vacant() && Peer::vacant().is_vacant());
        assert_eq!(p.inner_mtu(1500), 1476);
        p.key = Some(1);
        p.encap = Encap::GreUdp;
        assert_eq!(p.inner_mtu(1500), 1464);
        p.nbma = "2001:db8::1".parse().unwrap();
        p.checksum = true;
        p.sequence = true;
        assert_eq!(p.inner_mtu(1500), 1500 - 40 - 8 - 16);
    }
}
