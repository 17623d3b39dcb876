//! Sans-IO core of mgre: the GRE wire code, the endpoint table and the forwarding decisions of
//! a multipoint GRE hub or spoke, and the TCP/UDP coalescing (GRO) of packets written to the TUN.
//!
//! Everything here works on caller-owned byte buffers and returns verdicts; nothing performs
//! I/O, reads a clock, spawns a thread or allocates per packet. The I/O shell (`mgre-io`) and
//! the daemon drive it. Its dependency tree must stay free of tokio, sockets, libc and wasmtime.

pub mod dataplane;
pub mod flowcache;
#[doc(hidden)]
pub mod fuzzing;
pub mod gro;
pub mod nhrp;
pub mod peer;
pub mod policy;
pub mod prefix;
pub mod stats;
pub mod wire;

pub use dataplane::{Dataplane, DataplaneConfig, Role, Step, Verdict, WorkerState};
pub use peer::{Encap, Peer, PeerId};
pub use policy::{Action, Direction, Inspected, OuterMark, Policy, TxMarks};
pub use prefix::{Prefix, PrefixTable};
pub use stats::{DropReason, WorkerStats};
