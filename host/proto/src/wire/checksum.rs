//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Used by the GRE checksum, IPv4 header checksum, ICMP/ICMPv6 and TCP MSS rewriting.
//! Pure functions over byte slices; nothing here allocates.

/// Adds `data` to a running one's-complement sum (not yet folded). `data` starts on a 16-bit
/// word boundary of the checksummed bytes.
///
/// Work bound: one pass over `data`, 16 bytes per step. The words are summed in little-endian
/// order with four independent accumulators (which the compiler vectorises) and the folded
/// result byte-swapped: the one's-complement sum does not depend on byte order (RFC 1071 §2B).
pub fn accumulate(sum: u64, data: &[u8]) -> u64 {
    // Each accumulator takes at most 2^32 per 16 bytes: no overflow below 2^36 bytes.
    let mut acc = [0u64; 4];
    let mut blocks = data.chunks_exact(16);
    for b in &mut blocks {
        for (k, a) in acc.iter_mut().enumerate() {
            let w = [b[4 * k], b[4 * k + 1], b[4 * k + 2], b[4 * k + 3]];
            *a += u64::from(u32::from_le_bytes(w));
        }
    }
    let mut total = acc.iter().sum::<u64>();
    let mut words = blocks.remainder().chunks_exact(4);
    for w in &mut words {
        total += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    // 0–3 trailing bytes, zero-padded (an odd last byte is the high byte of its word).
    let mut tail = [0u8; 4];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    total += u64::from(u32::from_le_bytes(tail));
    sum + u64::from(fold(total).swap_bytes())
}

/// Folds a running sum to 16 bits (without the final complement).
pub fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `data`: the complement of its folded one's-complement sum.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(accumulate(0, data))
}

/// Incrementally updates checksum `check` after a 16-bit field changed from `old` to `new`
/// (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let sum = u64::from(!check) + u64::from(!old) + u64::from(new);
    !fold(sum)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1) for an upper-layer packet.
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, upper_len: u32) -> u64 {
    let mut sum = accumulate(0, src);
    sum = accumulate(sum, dst);
    sum + u64::from(upper_len >> 16) + u64::from(upper_len & 0xffff) + u64::from(next_header)
}

/// Sum of the IPv4 pseudo-header (RFC 793) for an upper-layer packet.
pub fn pseudo_v4(src: &[u8; 4], dst: &[u8; 4], protocol: u8, upper_len: u16) -> u64 {
    let sum = accumulate(0, src);
    accumulate(sum, dst) + u64::from(protocol) + u64::from(upper_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for p in data.chunks(2) {
            let w = if p.len() == 2 {
                u16::from_be_bytes([p[0], p[1]])
            } else {
                u16::from(p[0]) << 8
            };
            sum += u32::from(w);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example bytes: sum 0xddf2 → checksum 0x220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), 0x220d);
    }

    #[test]
    fn matches_naive_for_all_lengths() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in 0..data.len() {
            assert_eq!(checksum(&data[..n]), naive(&data[..n]), "len {n}");
        }
    }

    #[test]
    fn accumulate_matches_naive_for_long_data_and_running_sums() {
        let data: Vec<u8> = (0..2100u32).map(|i| (i * 131 + 17) as u8).collect();
        let same = |a: u16, b: u16| a == b || (a | b == 0xffff && a & b == 0);
        for n in (0..data.len()).step_by(7) {
            for start in [0u64, 0x1_2345, u64::from(u32::MAX)] {
                let want = !naive_sum(start, &data[..n]);
                let got = !fold(accumulate(start, &data[..n]));
                assert!(
                    same(got, want),
                    "len {n}, start {start:#x}: {got:#x} vs {want:#x}"
                );
            }
        }
        // Chained over an even split, as the pseudo-header sums are used.
        let (a, b) = data.split_at(40);
        assert!(same(
            fold(accumulate(accumulate(0, a), b)),
            fold(accumulate(0, &data))
        ));
    }

    fn naive_sum(start: u64, data: &[u8]) -> u16 {
        let mut sum = u32::from(fold(start));
        for p in data.chunks(2) {
            let w = if p.len() == 2 {
                u16::from_be_bytes([p[0], p[1]])
            } else {
                u16::from(p[0]) << 8
            };
            sum += u32::from(w);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn incremental_equals_recompute() {
        let mut data = [
            0x45u8, 0, 0, 40, 1, 2, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 198, 51, 100, 7,
        ];
        let c = checksum(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        let old = u16::from_be_bytes([data[8], data[9]]);
        data[8] = 63;
        let new = u16::from_be_bytes([data[8], data[9]]);
        let upd = update16(c, old, new);
        data[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(upd, checksum(&data));
    }
}
