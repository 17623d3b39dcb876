//! `mgre-sdk`: what an mgre policy-plugin author depends on.
//!
//! A plugin is a Rust library compiled to `wasm32-unknown-unknown`. It implements [`Plugin`]
//! (one `init` plus any of the packet hooks `classify`, `mark`, `route` and the NHRP hooks
//! `admit_registration` and `shortcut_policy`, see [`nhrp`]), registers the type with
//! [`export_plugin!`], and is unit-tested natively with [`testing`]. The host turns the plain
//! wasm module into a component when it loads it: no tool beyond the Rust target is needed.
//! A plugin gets no ambient authority — no files, sockets, clock or environment; its only
//! imports are [`log`] and [`counter_add`], and its config arrives in `init`.
//!
//! # Writing a plugin
//!
//! ```text
//! cargo new --lib drop-ports && cd drop-ports
//! rustup target add wasm32-unknown-unknown
//! ```
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "drop-ports"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib", "rlib"]   # cdylib: the .wasm; rlib: native unit tests
//!
//! [dependencies]
//! mgre-sdk = "0.2"
//! serde = { version = "1", features = ["derive"] }
//!
//! [profile.release]
//! opt-level = "s"
//! lto = true
//! strip = "debuginfo"
//! ```
//!
//! `src/lib.rs` — a route hook that drops TCP/UDP packets to configured ports:
//!
#![cfg_attr(feature = "guest", doc = "```")]
#![cfg_attr(not(feature = "guest"), doc = "```ignore")]
//! use mgre_sdk::abi::{Packet, Route, RouteAction};
//! use mgre_sdk::{Hooks, Info, InitContext, Plugin, counter_add};
//! use serde::Deserialize;
//!
//! /// The `[plugin.config]` table of the mgre config, e.g. `drop-ports = [23, 445]`.
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields, rename_all = "kebab-case")]
//! struct Config {
//!     drop_ports: Vec<u16>,
//! }
//!
//! struct DropPorts {
//!     ports: Vec<u16>,
//! }
//!
//! const DROPPED: u32 = 0; // index into Info::counters
//!
//! impl Plugin for DropPorts {
//!     fn init(ctx: InitContext) -> Result<(Self, Info), String> {
//!         let config: Config = ctx.parse_config()?; // errors name the key
//!         let mut info = Info::new("drop-ports", "0.1.0", Hooks::ROUTE);
//!         info.counters = vec!["dropped".into()];
//!         Ok((DropPorts { ports: config.drop_ports }, info))
//!     }
//!
//!     fn route(&mut self, p: Packet<'_>) -> Route {
//!         let action = if self.ports.contains(&p.dst_port()) {
//!             counter_add(DROPPED, 1); // buffered, sent once per batch
//!             RouteAction::Drop
//!         } else {
//!             RouteAction::Default
//!         };
//!         Route { action, ttl_ms: 10_000 } // the host caches the verdict per flow
//!     }
//! }
//!
//! mgre_sdk::export_plugin!(DropPorts);
//! ```
//!
//! Below it, native unit tests through the same glue the host calls ([`testing`]):
//!
//! ```ignore
//! #[cfg(test)]
//! mod tests {
//!     use mgre_sdk::abi::RouteAction;
//!     use mgre_sdk::testing::{self, Harness};
//!
//!     #[test]
//!     fn drops_telnet_only() {
//!         let ctx = testing::context().config_toml("drop-ports = [23]").build();
//!         let mut h = Harness::<super::DropPorts>::init(ctx).unwrap();
//!         let telnet = testing::tcp("203.0.113.2:40000", "203.0.113.66:23");
//!         let web = testing::tcp("203.0.113.2:40000", "203.0.113.66:443");
//!         let verdicts = h.route([telnet, web]);
//!         assert_eq!(verdicts[0].action, RouteAction::Drop);
//!         assert_eq!(verdicts[1].action, RouteAction::Default);
//!         assert_eq!(h.counter("dropped"), 1);
//!     }
//! }
//! ```
//!
//! Test natively, then build the one artifact:
//!
//! ```text
//! cargo test
//! cargo build --release --target wasm32-unknown-unknown
//! cp target/wasm32-unknown-unknown/release/drop_ports.wasm /etc/mgre/plugins/
//! ```
//!
//! (The file name is the crate name with `-` replaced by `_`.) On the hub or spoke, name it in
//! the mgre config; the daemon passes the plugin's `config` table to `init` as JSON:
//!
//! ```toml
//! [[plugin]]
//! name = "drop-ports"
//! file = "drop_ports.wasm"       # in the plugin directory
//!
//! [plugin.config]
//! drop-ports = [23, 445]
//! ```
//!
//! # How hooks run
//!
//! The host calls a hook with a batch of 64-byte packet slots ([`abi`]); the SDK calls your
//! method once per packet, encodes one fixed-size verdict per packet into a buffer it reuses
//! across batches and hands the buffer to the host in one call (`verdicts.put`, which the host
//! copies without allocating). Keep hook methods allocation-free and never log per packet:
//! count with [`counter_add`]. A verdict's `ttl_ms` lets the host reuse it for the flow, so a
//! hook runs on flow-cache misses, not for every packet — counters count those calls. In wasm
//! a panic aborts the instance (the host re-instantiates it and applies the hook's failure
//! policy); its message reaches the host log first.
//!
//! # Features
//!
//! - `guest` (default): [`Plugin`], [`export_plugin!`], [`log`], [`counter_add`], [`config`]
//!   and, natively, [`testing`]; needs `std`.
//! - `serde` (implied by `guest`): `Deserialize` for the [`net`] types.
//!
//! Without features the crate is `no_std` (with `alloc`) and holds only [`abi`], [`net`] and
//! [`nhrp`]: what the host uses (`default-features = false`).

#![cfg_attr(not(any(feature = "guest", test)), no_std)]

extern crate alloc;

pub mod abi;
pub mod net;
pub mod nhrp;

#[cfg(feature = "guest")]
pub mod config;
#[cfg(feature = "guest")]
mod glue;
#[cfg(feature = "guest")]
mod host;
#[cfg(feature = "guest")]
mod plugin;
#[cfg(all(feature = "guest", not(target_arch = "wasm32")))]
pub mod testing;

#[cfg(feature = "guest")]
pub use host::{Level, counter_add, log};
#[cfg(feature = "guest")]
pub use plugin::{Hooks, Info, InitContext, PeerInfo, Plugin, Role};

/// The generated WIT bindings of world `plugin` (used by [`export_plugin!`]; plugin code
/// never needs them).
#[cfg(feature = "guest")]
#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // the generated `init` export takes 8 raw words
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
    });
}

/// What [`export_plugin!`] expands to refers to; not part of the API.
#[cfg(feature = "guest")]
#[doc(hidden)]
pub mod __private {
    pub use core::cell::RefCell;
    pub use std::string::String;
    pub use std::thread_local;
    pub use std::vec::Vec;

    pub use crate::bindings::Guest;
    pub use crate::bindings::mgre::policy::types::{
        Admission as WitAdmission, InitContext as WitInitContext, PluginInfo as WitPluginInfo,
        Registration as WitRegistration, ShortcutRequest as WitShortcutRequest,
        ShortcutVerdict as WitShortcutVerdict,
    };
    pub use crate::glue::{Runner, install_panic_hook};
    pub use crate::host::put_verdicts;
}
