//! Network-namespace guard and ways to act inside a namespace.
//!
//! [`Netns`] owns one named namespace (`ip netns add`) and deletes it on drop, also while
//! unwinding from a panic. Code runs inside it either as a child process (`ip netns exec`,
//! `ip -n`) or on a fresh thread that has called `setns(2)` ([`Netns::run`],
//! [`Netns::spawn`]); sockets opened on such a thread keep that namespace for their whole
//! life. Nothing here ever moves the caller's own thread out of its namespace.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::panic;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, PoisonError};
use std::thread::{self, Scope, ScopedJoinHandle};
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::cmd::{run, run_ok};

/// A named network namespace, deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (which must not exist yet) with its loopback up.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        ensure!(
            !name.is_empty() && !name.contains('/') && !name.starts_with('.'),
            "bad namespace name {name:?}"
        );
        {
            // Parallel first uses of `ip netns add` race on setting up /run/netns.
            let _guard = NETNS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
            run_ok(
                Command::new("ip").args(["netns", "add", &name]),
                COMMAND_TIMEOUT,
            )
            .with_context(|| format!("creating netns {name} (are we root?)"))?;
        }
        let ns = Self { name };
        ns.ip("link set lo up")?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, the handle `setns(2)` takes.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Runs `ip netns exec NAME args…` (bounded by a generous default timeout).
    pub fn exec<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.exec_timeout(args, COMMAND_TIMEOUT)
    }

    /// Runs `ip netns exec NAME args…`, killing it after `timeout`.
    pub fn exec_timeout<I, S>(&self, args: I, timeout: Duration) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args),
            timeout,
        )
    }

    /// Runs `ip -n NAME <args>` (arguments split on whitespace) and returns its stdout;
    /// a non-zero exit is an error.
    pub fn ip(&self, args: &str) -> Result<String> {
        run_ok(
            Command::new("ip")
                .args(["-n", &self.name])
                .args(args.split_whitespace()),
            COMMAND_TIMEOUT,
        )
        .with_context(|| format!("in netns {}", self.name))
    }

    /// Sets sysctls (`key`, `value`) inside the namespace.
    pub fn sysctl(&self, settings: &[(&str, &str)]) -> Result<()> {
        let args = settings.iter().map(|(key, value)| format!("{key}={value}"));
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.name, "sysctl", "-qw"])
                .args(args),
            COMMAND_TIMEOUT,
        )
        .with_context(|| format!("sysctl in netns {}", self.name))?;
        Ok(())
    }

    /// Runs `f` on a fresh thread inside this namespace and waits for it.
    ///
    /// A panic in `f` is propagated to the caller.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send,
        T: Send,
    {
        thread::scope(|scope| join(self.spawn(scope, f)))
    }

    /// Starts `f` on a fresh scoped thread inside this namespace; threads it spawns are in
    /// the namespace too. Collect the result with [`join`].
    pub fn spawn<'scope, T, F>(
        &self,
        scope: &'scope Scope<'scope, '_>,
        f: F,
    ) -> ScopedJoinHandle<'scope, Result<T>>
    where
        F: FnOnce() -> Result<T> + Send + 'scope,
        T: Send + 'scope,
    {
        let path = self.path();
        let name = self.name.clone();
        thread::Builder::new()
            .name(format!("ns {name}"))
            .spawn_scoped(scope, move || {
                enter(&path).with_context(|| format!("entering netns {name}"))?;
                f()
            })
            .expect("spawning a thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _guard = NETNS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = run_ok(
            Command::new("ip").args(["netns", "del", &self.name]),
            COMMAND_TIMEOUT,
        ) {
            eprintln!("warning: deleting netns {}: {e:#}", self.name);
        }
    }
}

/// Waits for a thread from [`Netns::spawn`], re-raising its panic if it panicked.
pub fn join<T>(handle: ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle
        .join()
        .unwrap_or_else(|payload| panic::resume_unwind(payload))
}

/// Names of all namespaces `ip netns list` shows.
pub fn netns_list() -> Result<Vec<String>> {
    let out = run_ok(Command::new("ip").args(["netns", "list"]), COMMAND_TIMEOUT)?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Moves the calling thread into the namespace at `path`.
fn enter(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: `file` is an open namespace handle for the duration of the call; setns only
    // changes the calling thread, which is a fresh thread owned by this module.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

static NETNS_LOCK: Mutex<()> = Mutex::new(());

const NETNS_DIR: &str = "/run/netns";
/// Upper bound for one `ip`/`sysctl` invocation.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
