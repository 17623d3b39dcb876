//! Fuzzes the underlay receive path of a hub: GRE validation, key/sequence checks, inner
//! parsing, hairpin re-encapsulation and too-big errors.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mgre_proto::fuzzing::underlay_rx(data));
