//! Wire formats, each a zero-copy view plus validated parse/emit: GRE, inner IP metadata,
//! ICMP errors, the Internet checksum, NHRP.

pub mod checksum;
pub mod gre;
pub mod icmp;
pub mod ip;
pub mod nhrp;
