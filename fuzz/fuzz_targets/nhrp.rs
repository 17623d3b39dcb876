//! Fuzzes the NHRP parser and emitter: a selector byte (bit 0: repair the checksum) and a message.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mgre_proto::fuzzing::nhrp(data);
});
