//! `mgre-sdk`: what an mgre policy-plugin author depends on.
//!
//! [`abi`] holds the byte layouts of the hot-path hooks (64-byte packet slots in, fixed-size
//! verdicts out) with zero-allocation views and typed verdict builders; the host uses the same
//! module, so both sides agree by construction with `wit/policy.wit`. It compiles for the host
//! (plugins unit-test natively) and for `wasm32-unknown-unknown`.

#![no_std]

pub mod abi;
