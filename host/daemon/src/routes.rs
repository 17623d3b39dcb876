//! Kernel routes for the overlay prefixes the tunnel serves, installed through the TUN and
//! removed on exit. Uses one `ip -batch` process for the whole set, so a large static map
//! costs one fork, not one per prefix.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use mgre_proto::Prefix;

/// Installs (or replaces) a route for every prefix via interface `dev`.
pub fn install(dev: &str, prefixes: &[Prefix]) -> anyhow::Result<()> {
    run_batch(
        prefixes
            .iter()
            .map(|p| format!("route replace {p} dev {dev}\n")),
        false,
    )
    .with_context(|| format!("installing {} routes via {dev}", prefixes.len()))
}

/// Caps the segments per super-packet the kernel hands interface `dev` (`gso_max_segs`), so a
/// TUN read never splits into more frames than a worker keeps free.
pub fn limit_gso_segments(dev: &str, segments: usize) -> anyhow::Result<()> {
    run_batch(
        std::iter::once(format!("link set dev {dev} gso_max_segs {segments}\n")),
        false,
    )
    .with_context(|| format!("setting gso_max_segs of {dev}"))
}

/// Removes the routes [`install`] added; routes already gone are not an error.
pub fn remove(dev: &str, prefixes: &[Prefix]) -> anyhow::Result<()> {
    run_batch(
        prefixes
            .iter()
            .map(|p| format!("route del {p} dev {dev}\n")),
        true,
    )
    .with_context(|| format!("removing routes via {dev}"))
}

fn run_batch(lines: impl Iterator<Item = String>, ignore_errors: bool) -> anyhow::Result<()> {
    let script: String = lines.collect();
    if script.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("ip");
    if ignore_errors {
        cmd.arg("-force");
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running `ip` (iproute2)")?;
    child
        .stdin
        .take()
        .context("ip stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() && !ignore_errors {
        bail!(
            "ip -batch failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
