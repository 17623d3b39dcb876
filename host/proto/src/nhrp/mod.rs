//! NHRP registration (RFC 2332 §5.2.3–§5.2.6) as sans-IO state machines: the Next Hop Server
//! side that keeps the table of registered spokes ([`RegistrationServer`]) and the Next Hop
//! Client side that registers a spoke with one or more prioritised servers
//! ([`RegistrationClient`]).
//!
//! Both take already parsed [`NhrpRepr`](crate::wire::nhrp::NhrpRepr) messages and the
//! underlay address they came from, and return the messages to send as reprs; time is a
//! [`Duration`](std::time::Duration) since an epoch the caller chooses. Nothing here reads a
//! clock, touches a socket or logs: the daemon drives the timers through `poll_timeout` /
//! `poll` and turns the returned changes into endpoint-table updates and log lines.

pub mod auth;
pub mod client;
pub mod errors;
pub mod redirect;
pub mod resolution;
pub mod server;
pub mod shortcut;

#[cfg(test)]
mod simulation_tests;

pub use client::{
    ClientConfig, NhsConfig, NhsCounters, NhsState, NhsStatus, RegistrationClient, ReplyIgnored,
    ReplyOutcome, Transmit,
};
pub use redirect::{RedirectLimiter, traffic_indication};
pub use resolution::{
    ForwardError, ResolutionOutcome, TransitNhs, forward_resolution, requester_address,
};
pub use server::{
    Change, Outcome, Registration, RegistrationServer, RemovalCause, ServerConfig, ServerCounters,
    requested_prefixes,
};
pub use shortcut::{
    Outgoing, Resolver, ResolverConfig, ResolverCounters, Shortcut, ShortcutChange, ShortcutOrigin,
    ShortcutRemoval,
};

/// CIE codes of Registration Replies (RFC 2332 §5.2.4; FRR nhrpd `NHRP_CODE_*`).
pub mod code {
    /// Successful registration.
    pub const SUCCESS: u8 = 0;
    /// Administratively prohibited: the underlay address is not allowed or the
    /// authentication failed.
    pub const ADMINISTRATIVELY_PROHIBITED: u8 = 4;
    /// Insufficient resources: the server's entry limit is reached.
    pub const INSUFFICIENT_RESOURCES: u8 = 5;
    /// Unique internetworking-layer address already registered (by another NBMA address).
    pub const UNIQUE_ADDRESS_REGISTERED: u8 = 14;
}

/// Registration Request/Reply flag U: the binding is unique (RFC 2332 §5.2.3; bit 0 of the
/// flags word, FRR `NHRP_FLAG_REGISTRATION_UNIQUE`).
pub const FLAG_UNIQUE: u16 = 0x8000;
/// Registration Request/Reply flag the Cisco/FRR NAT extension users set
/// (`NHRP_FLAG_REGISTRATION_NAT`).
pub const FLAG_NAT: u16 = 0x0002;
/// Purge Request flag N: the sender wants no Purge Reply (RFC 2332 §5.2.5).
pub const FLAG_PURGE_NO_REPLY: u16 = 0x8000;

/// ar$hopcnt of the messages built here (registration and purge travel one hop).
const HOP_COUNT: u8 = 255;
