//! Runs the fuzz targets' seed corpora (and deterministic mutations of every seed) through the
//! same entry points cargo-fuzz uses, so the receive paths' invariants are checked on stable
//! Rust in every test run.

use std::path::PathBuf;

use mgre_proto::fuzzing;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| std::fs::read(e.expect("dir entry").path()).expect("seed file"))
        .collect();
    seeds.sort();
    assert!(
        seeds.len() >= 5,
        "seed corpus {} is missing or nearly empty",
        dir.display()
    );
    seeds
}

/// Every single-bit flip in the first 64 bytes, every truncation, and a few byte fills.
fn mutations(seed: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let flips = (0..seed.len().min(64) * 8).map(move |bit| {
        let mut m = seed.to_vec();
        m[bit / 8] ^= 1 << (bit % 8);
        m
    });
    let cuts = (0..seed.len()).map(move |n| seed[..n].to_vec());
    let fills = [0x00u8, 0xff].into_iter().flat_map(move |b| {
        (1..seed.len().min(48)).step_by(3).map(move |i| {
            let mut m = seed.to_vec();
            m[i..].iter_mut().take(4).for_each(|x| *x = b);
            m
        })
    });
    flips.chain(cuts).chain(fills)
}

#[test]
fn gre_rx_corpus_and_mutations_hold_invariants() {
    let mut runs = 0;
    for seed in corpus("gre_rx") {
        fuzzing::underlay_rx(&seed);
        for m in mutations(&seed) {
            fuzzing::underlay_rx(&m);
            runs += 1;
        }
    }
    assert!(runs > 1000, "only {runs} mutated inputs");
}

#[test]
fn tun_rx_corpus_and_mutations_hold_invariants() {
    for seed in corpus("tun_rx") {
        fuzzing::tun_rx(&seed);
        for m in mutations(&seed) {
            fuzzing::tun_rx(&m);
        }
    }
}

#[test]
fn tun_gro_corpus_and_mutations_hold_invariants() {
    let mut runs = 0;
    let mut seeds_merging = 0;
    for seed in corpus("tun_gro") {
        seeds_merging += usize::from(fuzzing::tun_gro(&seed) > 0);
        for m in mutations(&seed) {
            fuzzing::tun_gro(&m);
            runs += 1;
        }
    }
    assert!(runs > 1000, "only {runs} mutated inputs");
    assert!(
        seeds_merging >= 5,
        "only {seeds_merging} seeds coalesce anything"
    );
}

#[test]
fn nhrp_corpus_and_mutations_hold_invariants() {
    let mut runs = 0;
    let mut seeds_parsing = 0;
    let mut mutants_parsing = 0;
    for seed in corpus("nhrp") {
        seeds_parsing += usize::from(fuzzing::nhrp(&seed));
        for m in mutations(&seed) {
            mutants_parsing += usize::from(fuzzing::nhrp(&m));
            // The same mutant with its checksum repaired, to reach the structural checks.
            let mut repaired = m;
            if let Some(sel) = repaired.first_mut() {
                *sel |= 1;
            }
            mutants_parsing += usize::from(fuzzing::nhrp(&repaired));
            runs += 2;
        }
    }
    assert!(runs > 1000, "only {runs} mutated inputs");
    assert!(seeds_parsing >= 14, "only {seeds_parsing} seeds parse");
    assert!(
        mutants_parsing > 100,
        "only {mutants_parsing} mutants parse"
    );
}

#[test]
fn nhrp_server_corpus_and_mutations_hold_invariants() {
    let mut runs = 0;
    let mut total = fuzzing::NhrpServerRun::default();
    for seed in corpus("nhrp_server") {
        let run = fuzzing::nhrp_server(&seed);
        total.parsed += run.parsed;
        total.replies += run.replies;
        total.error_indications += run.error_indications;
        total.registrations += run.registrations;
        for m in mutations(&seed) {
            fuzzing::nhrp_server(&m);
            // The same mutant with every record's checksum repaired is not expressible by a
            // flip of the control bytes alone; flipping bit 5 of the first record's does it
            // for that one.
            let mut repaired = m;
            if let Some(ctl) = repaired.get_mut(1) {
                *ctl |= 0x20;
            }
            fuzzing::nhrp_server(&repaired);
            runs += 2;
        }
    }
    assert!(runs > 1000, "only {runs} mutated inputs");
    // The seeds reach the handlers, not only the parser.
    assert!(total.parsed >= 20, "{total:?}");
    assert!(total.replies >= 20, "{total:?}");
    assert!(total.error_indications >= 1, "{total:?}");
    assert!(total.registrations >= 4, "{total:?}");
}
