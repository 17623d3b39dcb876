//! `mgre-sdk`: what an mgre policy-plugin author depends on.
//!
//! The plugin ABI (classify, mark, route hooks over batches, defined in `wit/`) arrives with
//! the plugin runtime; this crate already carries the part that does not depend on it: a
//! zero-allocation view of the inner packet headers a policy looks at ([`packet::Headers`]).
//! It compiles for the host (so plugins unit-test natively) and for `wasm32-unknown-unknown`.

#![no_std]

pub mod packet;
