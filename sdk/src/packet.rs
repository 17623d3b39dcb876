//! Zero-allocation, never-panicking view of an inner IPv4/IPv6 packet's headers: addresses,
//! protocol, ports, DSCP/ECN and length — what classification and routing policies read.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Read-only view over the first bytes of an IP packet (the host passes at least the IP and
/// transport headers). Every accessor returns `None` rather than panicking on short input.
#[derive(Clone, Copy, Debug)]
pub struct Headers<'a> {
    bytes: &'a [u8],
}

/// IP protocol number of TCP.
pub const TCP: u8 = 6;
/// IP protocol number of UDP.
pub const UDP: u8 = 17;

impl<'a> Headers<'a> {
    /// Wraps `bytes`; returns `None` unless they start with a complete IPv4 or IPv6 header.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        let ok = match bytes.first()? >> 4 {
            4 => bytes.len() >= 20 && usize::from(bytes[0] & 0xf) * 4 >= 20,
            6 => bytes.len() >= 40,
            _ => false,
        };
        ok.then_some(Headers { bytes })
    }

    /// 4 or 6.
    pub fn version(&self) -> u8 {
        self.bytes[0] >> 4
    }

    /// Source address.
    pub fn src(&self) -> IpAddr {
        self.addr(12, 8)
    }

    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        self.addr(16, 24)
    }

    fn addr(&self, v4: usize, v6: usize) -> IpAddr {
        let b = self.bytes;
        if self.version() == 4 {
            IpAddr::V4(Ipv4Addr::new(b[v4], b[v4 + 1], b[v4 + 2], b[v4 + 3]))
        } else {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[v6..v6 + 16]);
            IpAddr::V6(Ipv6Addr::from(a))
        }
    }

    /// Traffic class byte: DSCP in the upper six bits, ECN in the lower two.
    pub fn traffic_class(&self) -> u8 {
        let b = self.bytes;
        if self.version() == 4 {
            b[1]
        } else {
            (b[0] << 4) | (b[1] >> 4)
        }
    }

    /// DSCP (0–63).
    pub fn dscp(&self) -> u8 {
        self.traffic_class() >> 2
    }

    /// ECN codepoint (0–3).
    pub fn ecn(&self) -> u8 {
        self.traffic_class() & 3
    }

    /// Upper-layer protocol (IPv6: the first next-header; extension headers are not walked).
    pub fn protocol(&self) -> u8 {
        if self.version() == 4 {
            self.bytes[9]
        } else {
            self.bytes[6]
        }
    }

    /// Packet length from the IP header.
    pub fn total_len(&self) -> usize {
        let b = self.bytes;
        if self.version() == 4 {
            usize::from(u16::from_be_bytes([b[2], b[3]]))
        } else {
            40 + usize::from(u16::from_be_bytes([b[4], b[5]]))
        }
    }

    /// Offset of the transport header, when this packet (not a later fragment) carries one.
    fn l4(&self) -> Option<usize> {
        let b = self.bytes;
        if self.version() == 4 {
            let first = u16::from_be_bytes([b[6], b[7]]) & 0x1fff == 0;
            first.then_some(usize::from(b[0] & 0xf) * 4)
        } else {
            Some(40)
        }
    }

    /// TCP/UDP source and destination ports, when present in the bytes.
    pub fn ports(&self) -> Option<(u16, u16)> {
        if !matches!(self.protocol(), TCP | UDP) {
            return None;
        }
        let p = self.bytes.get(self.l4()?..)?.get(..4)?;
        Some((
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ipv4_udp() {
        let mut p = [0u8; 28];
        p[0] = 0x45;
        p[1] = 46 << 2 | 1;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[9] = UDP;
        p[12..16].copy_from_slice(&[203, 0, 113, 2]);
        p[16..20].copy_from_slice(&[203, 0, 113, 66]);
        p[20..24].copy_from_slice(&[0x13, 0xc4, 0x13, 0xc5]);
        let h = Headers::new(&p).unwrap();
        assert_eq!(h.dscp(), 46);
        assert_eq!(h.ecn(), 1);
        assert_eq!(h.dst(), IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66)));
        assert_eq!(h.ports(), Some((5060, 5061)));
        assert_eq!(h.total_len(), 28);
        assert_eq!(
            Headers::new(&p[..22]).unwrap().ports(),
            None,
            "ports cut off"
        );
    }

    #[test]
    fn reads_ipv6_traffic_class() {
        let mut p = [0u8; 48];
        p[0] = 0x60 | (34 >> 2);
        p[1] = (34 & 3) << 6;
        p[6] = TCP;
        p[40..44].copy_from_slice(&[0, 80, 0x1f, 0x90]);
        let h = Headers::new(&p).unwrap();
        assert_eq!(h.dscp(), 34);
        assert_eq!(h.ports(), Some((80, 8080)));
        assert_eq!(h.version(), 6);
    }

    #[test]
    fn rejects_non_ip() {
        assert!(Headers::new(&[]).is_none());
        assert!(Headers::new(&[0x45; 19]).is_none());
        assert!(Headers::new(&[0x41; 20]).is_none());
        assert!(Headers::new(&[0x70; 60]).is_none());
    }
}
