//! Guard for one running `mgre run` process, and the `mgre` CLI calls the tests make.
//!
//! [`Daemon`] starts the daemon inside a namespace, waits (bounded) for its control socket
//! as the contract prescribes, reads `mgre show … --json`, and on drop stops it with
//! SIGTERM, then SIGKILL — always by the PID of the child it spawned, never by name.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::cmd::{run, wait_bounded};
use crate::netns::Netns;

/// A running `mgre run --config FILE` inside a namespace; stopped on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    netns: String,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon in `netns` with stdout and stderr appended to `log`, and waits
    /// until `mgre show stats --socket SOCKET` succeeds (at most [`READY_TIMEOUT`]).
    ///
    /// Fails (with the log in the message) if the daemon exits or does not get ready.
    pub fn start(netns: &Netns, config: &Path, socket: &Path, log: &Path) -> Result<Self> {
        let bin = mgre_bin();
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        // `ip netns exec` execs the command in place, so the child's PID is the daemon's.
        let child = Command::new("ip")
            .args(["netns", "exec", netns.name()])
            .arg(&bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {} in {}", bin.display(), netns.name()))?;
        let mut daemon = Self {
            child: Some(child),
            netns: netns.name().to_owned(),
            socket: socket.to_owned(),
            log: log.to_owned(),
        };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    /// The daemon's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The control socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `mgre show stats --json`.
    pub fn stats(&self) -> Result<Value> {
        self.show("stats")
    }

    /// `mgre show peers --json`.
    pub fn peers(&self) -> Result<Value> {
        self.show("peers")
    }

    /// `mgre show plugins --json`.
    pub fn plugins(&self) -> Result<Value> {
        self.show("plugins")
    }

    /// The `mgre show plugins --json` entry of plugin `name`.
    pub fn plugin(&self, name: &str) -> Result<Value> {
        crate::plugins::plugin_status(&self.plugins()?, name)
    }

    /// Polls plugin `name`'s status (every [`PLUGIN_POLL`]) until `done` accepts it;
    /// returns that status, or fails after `timeout` showing the last one.
    pub fn wait_plugin(
        &self,
        name: &str,
        timeout: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        let mut last = Value::Null;
        let reached = crate::cmd::wait_until(timeout, PLUGIN_POLL, || {
            last = self.plugin(name)?;
            Ok(done(&last))
        })?;
        ensure!(
            reached,
            "plugin {name} did not reach the expected state within {timeout:?}; last status: \
             {last:#}\nlog:\n{}",
            self.log_tail(LOG_TAIL)
        );
        Ok(last)
    }

    /// Runs `mgre reload --socket S` (bounded) and returns its output; it exits non-zero
    /// when a plugin failed to load.
    pub fn reload(&self) -> Result<Output> {
        run(
            Command::new(mgre_bin())
                .args(["reload", "--socket"])
                .arg(&self.socket),
            SHOW_TIMEOUT,
        )
    }

    /// Sends SIGHUP (reload plugins) to the daemon, by its PID.
    pub fn hangup(&self) -> Result<()> {
        let pid = self.pid().context("daemon not running")?;
        let pid = libc::pid_t::try_from(pid).context("PID out of range")?;
        // SAFETY: plain syscall; `pid` is our own unreaped child (`child` is still `Some`),
        // so it names that process.
        let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("SIGHUP");
        }
        Ok(())
    }

    /// Whether the daemon process is still alive (not exited, not a zombie).
    pub fn is_alive(&self) -> bool {
        let Some(pid) = self.pid() else {
            return false;
        };
        // `/proc/PID/stat` is "PID (comm) STATE ...": the state follows the last ')'.
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after = stat.rsplit_once(')')?.1;
                after.split_whitespace().next().map(|state| state != "Z")
            })
            .unwrap_or(false)
    }

    /// The peer object named `name` from [`Daemon::peers`].
    pub fn peer(&self, name: &str) -> Result<Value> {
        let peers = self.peers()?;
        peers
            .as_array()
            .and_then(|peers| peers.iter().find(|peer| peer["name"] == name))
            .cloned()
            .with_context(|| format!("no peer {name:?} in {peers}"))
    }

    /// Everything the daemon has written so far (lossily decoded).
    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last `max_bytes` of the log, for failure messages.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        let text = self.log_text();
        let mut start = text.len().saturating_sub(max_bytes);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_owned()
    }

    /// Stops the daemon: SIGTERM, up to [`STOP_TIMEOUT`] for it to exit, then SIGKILL.
    ///
    /// Returns its exit status (the contract wants 0 after SIGTERM). Idempotent: a second
    /// call fails since there is nothing left to stop.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("daemon in {} already stopped", self.netns);
        };
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let pid = libc::pid_t::try_from(child.id()).context("PID out of range")?;
        // SAFETY: plain syscall; `pid` is our own unreaped child, so it names that process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if let Some(status) = wait_bounded(&mut child, STOP_TIMEOUT)? {
            return Ok(status);
        }
        child.kill()?;
        let status = child.wait()?;
        bail!(
            "daemon in {} ignored SIGTERM for {STOP_TIMEOUT:?}; killed ({status})",
            self.netns
        )
    }

    /// Kills the daemon with SIGKILL (a crash: no clean-up, no NHRP purge) and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .with_context(|| format!("daemon in {} already stopped", self.netns))?;
        child.kill()?;
        Ok(child.wait()?)
    }

    /// `mgre show nhrp --json`.
    pub fn nhrp(&self) -> Result<Value> {
        self.show("nhrp")
    }

    /// `mgre show nhs --json`.
    pub fn nhs(&self) -> Result<Value> {
        self.show("nhs")
    }

    fn show(&self, what: &str) -> Result<Value> {
        let out = run(
            Command::new(mgre_bin())
                .args(["show", what, "--json", "--socket"])
                .arg(&self.socket),
            SHOW_TIMEOUT,
        )?;
        if !out.status.success() {
            bail!(
                "mgre show {what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "mgre show {what} --json printed {:?}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().context("daemon not running")?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "mgre in {} exited during start-up ({status}); log:\n{}",
                    self.netns,
                    self.log_tail(LOG_TAIL)
                );
            }
            let probe = run(
                Command::new(mgre_bin())
                    .args(["show", "stats", "--socket"])
                    .arg(&self.socket),
                SHOW_TIMEOUT,
            );
            if probe.is_ok_and(|out| out.status.success()) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "mgre in {} not ready after {READY_TIMEOUT:?}; log:\n{}",
                    self.netns,
                    self.log_tail(LOG_TAIL)
                );
            }
            std::thread::sleep(READY_POLL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Err(e) = self.stop()
        {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Path of the `mgre` binary: `$MGRE_BIN`, else `<workspace>/target/release/mgre`.
///
/// # Panics
/// If the file does not exist, telling how to build it.
pub fn mgre_bin() -> PathBuf {
    let path = match std::env::var_os("MGRE_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/mgre"),
    };
    assert!(
        path.is_file(),
        "mgre binary not found at {}: run `cargo build --release -p mgre` first \
         (or point MGRE_BIN at it)",
        path.display()
    );
    path
}

/// Runs `mgre check --config FILE` (bounded) and returns its output.
pub fn mgre_check(config: &Path) -> Result<Output> {
    run(
        Command::new(mgre_bin())
            .args(["check", "--config"])
            .arg(config),
        SHOW_TIMEOUT,
    )
}

/// The unsigned counter at JSON `pointer` (e.g. `/drops/key-mismatch`) of `value`.
pub fn counter(value: &Value, pointer: &str) -> Result<u64> {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .with_context(|| format!("no counter {pointer} in {value}"))
}

/// Longest wait for the control socket to answer after start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for an exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const SHOW_TIMEOUT: Duration = Duration::from_secs(10);
const READY_POLL: Duration = Duration::from_millis(100);
/// How often [`Daemon::wait_plugin`] asks.
pub const PLUGIN_POLL: Duration = Duration::from_millis(50);
/// Bytes of log quoted in failure messages.
const LOG_TAIL: usize = 16 * 1024;

/// `GET /metrics` from inside the current namespace (run it in the daemon's with
/// [`crate::Netns::run`]), bounded in time.
pub fn scrape(addr: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    anyhow::ensure!(body.starts_with("HTTP/1.1 200"), "metrics answered: {body}");
    Ok(body)
}
