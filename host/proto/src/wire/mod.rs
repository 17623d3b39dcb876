//! Wire formats, each a zero-copy view plus validated parse/emit: GRE, inner IP metadata,
//! ICMP errors, the Internet checksum.

pub mod checksum;
pub mod gre;
pub mod icmp;
pub mod ip;
