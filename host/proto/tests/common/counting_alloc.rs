//! A counting global allocator for the zero-allocation tests: it wraps the system allocator
//! and counts the allocations (`alloc`, `alloc_zeroed`, `realloc`) a thread makes while
//! [`measure`] runs on it. Counting is per thread, so the test harness running other tests
//! on other threads, or a runtime's background threads, never pollute a measurement.
//!
//! Set `MGRE_ALLOC_BACKTRACE=N` to capture a backtrace of the first N counted allocations of
//! each measurement; [`print_traces`] shows them. Shared by `host/proto/tests/no_alloc.rs`
//! and `host/plugin/tests/no_alloc.rs` (included with `#[path]`); it must not be used
//! outside tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::sync::Mutex;

/// The system allocator, counting per thread. Register it with `#[global_allocator]`.
pub struct CountingAlloc;

/// Allocations made during one measurement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocs {
    /// Calls to `alloc`, `alloc_zeroed` and `realloc`.
    pub count: u64,
    /// Bytes requested by those calls (the new size for `realloc`).
    pub bytes: u64,
}

/// Runs `f` with counting on for the current thread; returns its result and the allocations
/// it made on this thread.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Allocs) {
    // Read before arming: the environment lookup allocates.
    let traces = std::env::var("MGRE_ALLOC_BACKTRACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    TRACES.lock().unwrap_or_else(|e| e.into_inner()).clear();
    ALLOCS.set(0);
    BYTES.set(0);
    TRACES_LEFT.set(traces);
    let guard = Armed::on();
    let r = f();
    drop(guard);
    let allocs = Allocs {
        count: ALLOCS.get(),
        bytes: BYTES.get(),
    };
    (r, allocs)
}

/// Prints the backtraces captured by the last measurements (see the module doc), or how
/// to get them.
pub fn print_traces() {
    let traces = std::mem::take(&mut *TRACES.lock().unwrap_or_else(|e| e.into_inner()));
    if traces.is_empty() {
        eprintln!("(set MGRE_ALLOC_BACKTRACE=N to see where the first N allocations come from)");
    }
    for (i, t) in traces.iter().enumerate() {
        eprintln!("--- counted allocation #{i}:\n{t}");
    }
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: as for `alloc`; `ptr` came from `System` through this wrapper.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Counts one allocation if this thread is measuring, and captures its backtrace if asked.
/// Never panics and never allocates while armed (the capture disarms first).
fn record(size: usize) {
    if !ARMED.try_with(Cell::get).unwrap_or(false) {
        return;
    }
    ALLOCS.set(ALLOCS.get() + 1);
    BYTES.set(BYTES.get() + size as u64);
    let left = TRACES_LEFT.get();
    if left > 0 {
        TRACES_LEFT.set(left - 1);
        ARMED.set(false);
        let trace = Backtrace::force_capture();
        if let Ok(mut traces) = TRACES.lock() {
            traces.push(trace);
        }
        ARMED.set(true);
    }
}

/// Arms counting on this thread until dropped (also on unwind).
struct Armed;

impl Armed {
    fn on() -> Armed {
        ARMED.set(true);
        Armed
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        ARMED.set(false);
    }
}

// `const` thread-locals without destructors: reading them never allocates or registers a
// destructor, so the allocator may touch them.
thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
    static TRACES_LEFT: Cell<usize> = const { Cell::new(0) };
}

static TRACES: Mutex<Vec<Backtrace>> = Mutex::new(Vec::new());
