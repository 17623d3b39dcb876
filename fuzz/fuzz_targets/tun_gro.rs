//! Fuzzes the TUN-write coalescer (GRO): batches of arbitrary packets, TCP and UDP merging on.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mgre_proto::fuzzing::tun_gro(data);
});
