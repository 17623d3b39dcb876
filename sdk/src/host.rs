//! The host's imports as plain functions: [`log`] and [`counter_add`]. In wasm they call the
//! host; natively (unit tests) a log line goes to stderr and both are recorded per thread for
//! [`crate::testing`] to inspect.
//!
//! Counter updates are buffered in the plugin and handed to the host once at the end of each
//! `init`/hook call, so counting per packet costs an array add, not a host call. Nothing here
//! may block or fail: the host imports cannot fail.

use std::cell::RefCell;

/// Log severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very verbose; never per packet in production.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong but the plugin carries on.
    Warn,
    /// The plugin cannot do what it was asked.
    Error,
}

/// Writes a log line attributed to this plugin. The host rate-limits plugin logs; never log
/// per packet (count instead, with [`counter_add`]).
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// Adds `delta` to counter `id`, an index into [`crate::Info::counters`]. Buffered: the host
/// sees the sum when the current `init` or hook call returns. Ids the plugin did not declare
/// are ignored by the host.
pub fn counter_add(id: u32, delta: u64) {
    PENDING.with_borrow_mut(|pending| {
        let i = id as usize;
        if i >= pending.len() {
            // Grows once per new id; counters are few and fixed at init.
            pending.resize(i + 1, 0);
        }
        pending[i] = pending[i].wrapping_add(delta);
    });
}

/// Hands a packet hook's encoded verdicts to the host (`verdicts.put`); natively (unit tests)
/// it does nothing, the harness reads the runner's buffer instead. Not part of the API: the
/// [`export_plugin!`](crate::export_plugin) glue calls it.
#[doc(hidden)]
pub fn put_verdicts(data: &[u8]) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::mgre::policy::verdicts::put(data);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = data;
}

/// Hands the buffered counter deltas to the host: one host call per non-zero counter.
pub(crate) fn flush_counters() {
    PENDING.with_borrow_mut(|pending| {
        for (id, delta) in pending.iter_mut().enumerate() {
            if *delta != 0 {
                // `pending` only grows from `u32` ids, so `id` fits.
                imp::counter_add(id as u32, *delta);
                *delta = 0;
            }
        }
    });
}

std::thread_local! {
    /// Deltas not yet handed to the host, indexed by counter id.
    static PENDING: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::bindings::mgre::policy::host::{self, Level as WitLevel};

    pub(super) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => WitLevel::Trace,
            Level::Debug => WitLevel::Debug,
            Level::Info => WitLevel::Info,
            Level::Warn => WitLevel::Warn,
            Level::Error => WitLevel::Error,
        };
        host::log(level, message);
    }

    pub(super) fn counter_add(id: u32, delta: u64) {
        host::counter_add(id, delta);
    }
}

/// The native stand-in for the host: what a plugin logged and counted on this thread.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod imp {
    use std::cell::RefCell;

    use super::Level;

    std::thread_local! {
        static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
        static COUNTERS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn log(level: Level, message: &str) {
        eprintln!("[plugin {level:?}] {message}");
        LOGS.with_borrow_mut(|logs| logs.push((level, message.to_string())));
    }

    pub(super) fn counter_add(id: u32, delta: u64) {
        COUNTERS.with_borrow_mut(|c| {
            let i = id as usize;
            if i >= c.len() {
                c.resize(i + 1, 0);
            }
            c[i] = c[i].wrapping_add(delta);
        });
    }

    /// Counter values the "host" received on this thread, indexed by id.
    pub(crate) fn counters() -> Vec<u64> {
        COUNTERS.with_borrow(Clone::clone)
    }

    /// Log lines the "host" received on this thread.
    pub(crate) fn logs() -> Vec<(Level, String)> {
        LOGS.with_borrow(Clone::clone)
    }

    /// Forgets this thread's counters and log lines, buffered ones included.
    pub(crate) fn reset() {
        super::PENDING.with_borrow_mut(Vec::clear);
        COUNTERS.with_borrow_mut(Vec::clear);
        LOGS.with_borrow_mut(Vec::clear);
    }
}
