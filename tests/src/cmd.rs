//! Bounded execution of external tools (`ip`, `ping`, `mgre check|show`) and bounded polling.
//!
//! Every short-lived command of the harness goes through [`run`], which kills the child
//! (by its own PID, never by name) once its deadline passes, so a stuck tool cannot hang a
//! test. It is not for long-running processes: the daemon has its own guard,
//! [`crate::Daemon`]. Nothing here loops without a deadline.

use std::io::{self, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Runs `cmd` to completion with stdin closed, capturing stdout and stderr; the child is
/// killed (and the call fails) if it has not exited after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let Some(status) = wait_bounded(&mut child, timeout)? else {
        // The child is ours and not yet reaped, so its PID cannot have been reused.
        let _ = child.kill();
        let _ = child.wait();
        bail!("{cmd:?} did not finish within {timeout:?}");
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// Like [`run`], but a non-zero exit is an error carrying stderr; returns stdout as text.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let out = run(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `condition` every `interval` until it returns `Ok(true)` or `timeout` has passed.
///
/// Returns whether the condition became true; an error from `condition` ends the wait.
/// The condition is always evaluated at least once, and once more at the deadline.
pub fn wait_until(
    timeout: Duration,
    interval: Duration,
    mut condition: impl FnMut() -> Result<bool>,
) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if condition()? {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        thread::sleep(interval.min(deadline - now));
    }
}

/// Waits at most `timeout` for `child` to exit; `None` if it is still running.
pub(crate) fn wait_bounded(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_POLL_PAUSE);
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut pipe| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    })
}

fn collect(reader: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    reader
        .and_then(|handle| handle.join().ok())
        .unwrap_or_default()
}

const MAX_POLL_PAUSE: Duration = Duration::from_millis(50);
