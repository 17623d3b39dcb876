//! Fuzzes the TUN receive path of a spoke: inner parsing, MSS clamping, too-big errors and
//! encapsulation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mgre_proto::fuzzing::tun_rx(data));
