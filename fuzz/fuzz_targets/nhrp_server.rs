//! Fuzzes the NHRP registration state machines: a hub's server and a spoke's client fed a
//! sequence of messages on a simulated clock (see `mgre_proto::fuzzing::nhrp_server`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mgre_proto::fuzzing::nhrp_server(data);
});
