//! A static multicast router for a test namespace: one `smcrouted` (SMCRoute 2.5) process
//! that makes the namespace's kernel forward chosen groups between two of its interfaces,
//! through the kernel's IPv4 (MRT) and IPv6 (MRT6) multicast routing tables.
//!
//! [`Smcroute::start`] writes the config, control socket and PID file into a directory the
//! caller owns (a topology's scratch directory), so the routers of parallel tests never
//! share a path; it runs `smcrouted` in the foreground under `ip netns exec` (which execs in
//! place, so the child's PID is the router's) and waits, bounded, until both interfaces are
//! multicast interfaces of the kernel. Dropping the guard stops that process by its PID
//! (SIGTERM, then SIGKILL) and reaps it. It must not touch the host namespace's multicast
//! routing or any `smcrouted` it did not start.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::wait_bounded;
use crate::netns::Netns;

/// A running `smcrouted` inside a namespace; stopped on drop.
#[derive(Debug)]
pub struct Smcroute {
    child: Option<Child>,
    netns: String,
    log: PathBuf,
}

impl Smcroute {
    /// Starts `smcrouted` in `ns` with `a` and `b` as its only multicast interfaces and a
    /// (*,G) route for each of `groups` in both directions between them (the kernel gets
    /// the (S,G) route when the first packet of a source arrives). Its files are
    /// `smcroute-<ident>.{conf,sock,pid,log}` in `dir`.
    ///
    /// Waits at most [`MROUTE_READY_TIMEOUT`] until both interfaces are in the kernel's
    /// multicast interface table of every family among `groups`; fails with the router's
    /// log if it exits or does not get there.
    pub fn start(
        ns: &Netns,
        dir: &Path,
        ident: &str,
        (a, b): (&str, &str),
        groups: &[IpAddr],
    ) -> Result<Self> {
        let file = |ext: &str| dir.join(format!("smcroute-{ident}.{ext}"));
        let (config, socket, pid, log) = (file("conf"), file("sock"), file("pid"), file("log"));
        let mut text = format!("phyint {a} enable\nphyint {b} enable\n");
        for group in groups {
            for (from, to) in [(a, b), (b, a)] {
                writeln!(text, "mroute from {from} group {group} to {to}")?;
            }
        }
        fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // -n: foreground; -N: no multicast interface but the `phyint … enable` ones.
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "smcrouted",
                "-n",
                "-N",
                "-l",
                "info",
            ])
            .arg("-f")
            .arg(&config)
            .arg("-u")
            .arg(&socket)
            .arg("-P")
            .arg(&pid)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting smcrouted in {} (is it installed?)", ns.name()))?;
        let mut router = Self {
            child: Some(child),
            netns: ns.name().to_owned(),
            log,
        };
        let tables: Vec<&str> = [
            (true, "/proc/net/ip_mr_vif"),
            (false, "/proc/net/ip6_mr_vif"),
        ]
        .into_iter()
        .filter(|(v4, _)| groups.iter().any(|g| g.is_ipv4() == *v4))
        .map(|(_, table)| table)
        .collect();
        router.wait_ready(ns, &pid, &tables, [a, b])?;
        Ok(router)
    }

    /// Everything the router has logged so far (lossily decoded), for failure messages.
    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Polls until the PID file exists (written once the config is applied) and every
    /// table lists both interfaces.
    fn wait_ready(
        &mut self,
        ns: &Netns,
        pid: &Path,
        tables: &[&str],
        ifaces: [&str; 2],
    ) -> Result<()> {
        let deadline = Instant::now() + MROUTE_READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().context("smcrouted not running")?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "smcrouted in {} exited during start-up ({status}); log:\n{}",
                    self.netns,
                    self.log_text()
                );
            }
            if pid.exists() && interfaces_listed(ns, tables, ifaces)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "smcrouted in {} did not make {ifaces:?} multicast interfaces in {tables:?} \
                     within {MROUTE_READY_TIMEOUT:?}; log:\n{}",
                    self.netns,
                    self.log_text()
                );
            }
            std::thread::sleep(READY_POLL);
        }
    }
}

impl Drop for Smcroute {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: plain syscall; `pid` is our own unreaped child, so it names that process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if !matches!(wait_bounded(&mut child, STOP_TIMEOUT), Ok(Some(_))) {
            eprintln!(
                "warning: smcrouted in {} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
                self.netns
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether each of `tables` (`/proc/net/ip_mr_vif`, `/proc/net/ip6_mr_vif`) in `ns` lists
/// both `ifaces`.
fn interfaces_listed(ns: &Netns, tables: &[&str], ifaces: [&str; 2]) -> Result<bool> {
    for table in tables {
        let out = ns.exec(["cat", table])?;
        let text = String::from_utf8_lossy(&out.stdout);
        // Rows are "<index> <name> <counters…>" under one heading line.
        let listed: Vec<&str> = text
            .lines()
            .skip(1)
            .filter_map(|row| row.split_whitespace().nth(1))
            .collect();
        if !ifaces.iter().all(|iface| listed.contains(iface)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Longest wait for `smcrouted` to set up its multicast interfaces.
pub const MROUTE_READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const READY_POLL: Duration = Duration::from_millis(100);
