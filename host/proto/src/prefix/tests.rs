//! Unit and property tests of the prefix table (LPM against a naive oracle).
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
    let a4: IpAddr = "192.0.2.1".parse().unwrap();
    let a6: IpAddr = "2001:db8::1".parse().unwrap();
    assert!(Prefix::new(a4, 32).is_ok());
    assert_eq!(Prefix::new(a4, 33), Err(PrefixError::LengthOutOfRange));
    assert!(Prefix::new(a6, 128).is_ok());
    assert_eq!(Prefix::new(a6, 129), Err(PrefixError::LengthOutOfRange));
    assert_eq!(Prefix::new(a6, 255), Err(PrefixError::LengthOutOfRange));
}

#[test]
fn prefix_contains_respects_length_and_family() {
    let net = p("198.51.100.0/26");
    assert!(net.contains("198.51.100.63".parse().unwrap()));
    assert!(!net.contains("198.51.100.64".parse().unwrap()));
    assert!(!net.contains("::ffff:198.51.100.1".parse().unwrap()));
    assert!(p("0.0.0.0/0").contains("203.0.113.255".parse().unwrap()));
    assert!(p("::/0").contains("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()));
    assert!(!p("::/0").contains("192.0.2.4".parse().unwrap()));
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
    assert_eq!(p("198.51.100.77/24"), p("198.51.100.0/24"));
    assert_eq!(p("198.51.100.77/24").to_string(), "198.51.100.0/24");
    assert_eq!(p("2001:db8::ff/64").to_string(), "2001:db8::/64");
}

#[test]
fn from_str_rejects_invalid_input() {
    for bad in [
        "",
        "/24",
        "192.0.2.0/",
        "192.0.2.0/+24",
        "192.0.2.0/-1",
        "192.0.2.0/ 24",
        "192.0.2.0/24 ",
        "192.0.2.0/24/24",
        "192.0.2.0/0x18",
        "192.0.2.0/1234",
        "192.0.2/24",
        "192.0.2.256/24",
        "2001:db8::/64%eth0",
        "2001:db8:::/64",
        "2001:db8::1%eth0",
        "host/24",
    ] {
        assert_eq!(
            bad.parse::<Prefix>(),
            Err(PrefixError::Malformed),
            "{bad:?}"
        );
    }
    for bad in [
        "192.0.2.0/33",
        "192.0.2.0/256",
        "192.0.2.0/999",
        "2001:db8::/129",
    ] {
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
    t.insert(p("198.51.100.0/24"), 24);
    t.insert(p("198.51.100.0/26"), 26);
    t.insert(p("198.51.100.0/28"), 28);
    t.insert(p("198.51.100.3/32"), 32);
    assert_eq!(t.lookup_v4(v4("198.51.100.3")), Some(32));
    assert_eq!(t.lookup_v4(v4("198.51.100.4")), Some(28));
    assert_eq!(t.lookup_v4(v4("198.51.100.20")), Some(26));
    assert_eq!(t.lookup_v4(v4("198.51.100.100")), Some(24));
    assert_eq!(t.lookup_v4(v4("203.0.113.4")), Some(0));
    // Insertion order must not matter.
    let mut r = PrefixTable::new();
    for (q, v) in t.iter().collect::<Vec<_>>().into_iter().rev() {
        r.insert(q, v);
    }
    for a in [
        "198.51.100.3",
        "198.51.100.4",
        "198.51.100.20",
        "198.51.100.100",
        "203.0.113.4",
    ] {
        assert_eq!(r.lookup_v4(v4(a)), t.lookup_v4(v4(a)), "{a}");
    }
}

#[test]
fn insert_replaces_and_returns_old_value() {
    let mut t = PrefixTable::new();
    assert_eq!(t.insert(p("198.51.100.0/24"), 1), None);
    assert_eq!(t.insert(p("198.51.100.0/24"), 2), Some(1));
    // Same network written with host bits is the same prefix.
    assert_eq!(t.insert(p("198.51.100.99/24"), 3), Some(2));
    assert_eq!(t.len(), 1);
    assert_eq!(t.get(&p("198.51.100.0/24")), Some(3));
    assert_eq!(t.lookup_v4(v4("198.51.100.55")), Some(3));
}

#[test]
fn get_is_exact_match_only() {
    let mut t = PrefixTable::new();
    t.insert(p("198.51.100.0/25"), 1);
    assert_eq!(t.get(&p("198.51.100.0/25")), Some(1));
    assert_eq!(t.get(&p("198.51.100.0/26")), None);
    assert_eq!(t.get(&p("198.51.100.0/24")), None);
    assert_eq!(t.get(&p("198.51.100.1")), None);
}

#[test]
fn remove_falls_back_to_shorter_prefix() {
    let mut t = PrefixTable::new();
    t.insert(p("198.51.100.0/24"), 24);
    t.insert(p("198.51.100.64/26"), 26);
    t.insert(p("2001:db8::/32"), 32);
    t.insert(p("2001:db8:1::/48"), 48);
    assert_eq!(t.lookup_v4(v4("198.51.100.65")), Some(26));
    assert_eq!(t.remove(&p("198.51.100.64/26")), Some(26));
    assert_eq!(t.remove(&p("198.51.100.64/26")), None);
    assert_eq!(t.lookup_v4(v4("198.51.100.65")), Some(24));
    assert_eq!(t.lookup_v6(v6("2001:db8:1::5")), Some(48));
    assert_eq!(t.remove(&p("2001:db8:1::/48")), Some(48));
    assert_eq!(t.lookup_v6(v6("2001:db8:1::5")), Some(32));
    assert_eq!(t.remove(&p("198.51.100.0/24")), Some(24));
    assert_eq!(t.remove(&p("2001:db8::/32")), Some(32));
    assert_eq!(t.lookup_v4(v4("198.51.100.65")), None);
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
    t.insert(p("198.51.100.0/24"), 24);
    assert_eq!(t.remove(&p("203.0.113.0/24")), None);
    assert_eq!(t.remove(&p("198.51.100.0/25")), None);
    assert_eq!(t.remove(&p("::/0")), None);
    // A hand-built prefix with an impossible length is simply absent.
    assert_eq!(t.remove(&Prefix::V4 { addr: 0, len: 200 }), None);
    assert_eq!(t.get(&Prefix::V4 { addr: 0, len: 200 }), None);
    assert_eq!(t.lookup_v4(v4("198.51.100.1")), Some(24));
}

#[test]
fn families_are_kept_apart() {
    let mut t = PrefixTable::new();
    // Same numeric address and length in both families: 198.51.100.0/24 as IPv4; as IPv6 a
    // hand-built ::/24 (host bits set), which also covers IPv4-mapped addresses.
    let net = v4("198.51.100.0");
    t.insert(Prefix::V4 { addr: net, len: 24 }, 4);
    t.insert(
        Prefix::V6 {
            addr: u128::from(net),
            len: 24,
        },
        6,
    );
    assert_eq!(t.len(), 2);
    assert_eq!(t.lookup_v4(net + 1), Some(4));
    assert_eq!(t.lookup_v6(u128::from(net + 1)), Some(6));
    assert_eq!(t.lookup_v6(v6("::ffff:198.51.100.1")), Some(6));
    assert_eq!(t.remove(&Prefix::V4 { addr: net, len: 24 }), Some(4));
    assert_eq!(t.lookup_v4(net + 1), None);
    assert_eq!(t.lookup_v6(u128::from(net + 1)), Some(6));
}

#[test]
fn hand_built_prefix_host_bits_are_ignored() {
    let mut t = PrefixTable::new();
    t.insert(
        Prefix::V4 {
            addr: v4("198.51.100.77"),
            len: 24,
        },
        1,
    );
    assert_eq!(t.get(&p("198.51.100.0/24")), Some(1));
    assert_eq!(t.iter().next(), Some((p("198.51.100.0/24"), 1)));
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
        (p("198.51.100.0/24"), 1),
        (p("198.51.100.3"), 2),
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
            (p("198.51.100.3"), 2),
            (p("198.51.100.0/24"), 1),
            (p("0.0.0.0/0"), 3),
            (p("2001:db8::/32"), 4),
            (p("::/0"), 5),
        ]
    );
}

#[test]
fn heap_bytes_grows_with_entries() {
    let mut t = PrefixTable::new();
    // IPv6, as the documentation IPv4 ranges cannot hold 1000 distinct prefixes.
    t.insert(p("2001:db8::/32"), 1u32);
    let one = t.heap_bytes();
    assert!(one > 0);
    // 2001:db8:0:i::/64 for every i.
    let base = v6("2001:db8::");
    for i in 0..1000u32 {
        t.insert(
            Prefix::V6 {
                addr: base | (u128::from(i) << 64),
                len: 64,
            },
            i,
        );
    }
    let many = t.heap_bytes();
    assert!(
        many > one + 1000 * size_of::<(u128, u32)>(),
        "{one} -> {many}"
    );
    // Loose upper bound: under ~4x the raw slot size per entry.
    assert!(many < 1001 * 4 * size_of::<(u128, u32)>() + 4096, "{many}");
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

/// A few fixed bases so generated prefixes nest and collide often: 192.0.2.0, 198.51.100.0
/// and 203.0.113.64; 2001:db8::, 2001:db8:1:2:: and the IPv4-mapped ::ffff:192.0.2.1, whose
/// top 16 bits differ from the other two's.
const V4_BASES: [u32; 3] = [0xc000_0200, 0xc633_6400, 0xcb00_7140];
const V6_BASES: [u128; 3] = [
    0x2001_0db8_0000_0000_0000_0000_0000_0000,
    0x2001_0db8_0001_0002_0000_0000_0000_0000,
    0x0000_0000_0000_0000_0000_ffff_c000_0201,
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
