//! The WebAssembly the plugin tests load: the example plugins of `plugins/` and the hostile
//! fixture guests of `host/plugin/tests/fixtures/`, built from source on first use, plus
//! byte-level edits of core modules (a custom section that changes a file's hash but not its
//! behaviour).
//!
//! Builds run `cargo` with a target directory of their own (`target/plugins`,
//! `target/fixtures`): the outer `cargo test` holds the workspace target directory's build
//! lock while tests run. Each build happens at most once per test process (a `OnceLock` per
//! artifact set) and under an exclusive `flock(2)` on a lock file next to its output, so
//! several test processes building at once take turns instead of racing on the same files.
//! The fixture command is exactly the one `host/plugin/tests` runs, so both share artifacts.
//! Nothing here touches the network or a namespace.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::cmd::run;

/// The example plugin packages [`plugin_wasm`] builds (all of them in one `cargo` run).
pub const PLUGIN_PACKAGES: [&str; 5] = [
    "dscp-classifier",
    "voip-qos",
    "spoke-policy",
    "nhrp-admission",
    "shortcut-policy",
];

/// The fixture guests of `host/plugin/tests/fixtures/` (see its README).
pub const FIXTURES: [&str; 6] = ["good", "trap", "spin", "hog", "recurse", "otherworld"];

/// Path of the built core module of example plugin `package` (one of [`PLUGIN_PACKAGES`]),
/// e.g. `target/plugins/wasm32-unknown-unknown/release/voip_qos.wasm`.
///
/// The first call in a process builds all of them with
/// `cargo build --release --target wasm32-unknown-unknown -p … --target-dir target/plugins`
/// (debug info off, symbols stripped); later calls return the cached outcome.
pub fn plugin_wasm(package: &str) -> Result<PathBuf> {
    ensure!(
        PLUGIN_PACKAGES.contains(&package),
        "{package:?} is not one of the example plugins {PLUGIN_PACKAGES:?}"
    );
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| build_plugins().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("building the example plugins: {e}"))?;
    existing(dir.join(format!("{}.wasm", package.replace('-', "_"))))
}

/// Path of the built core module of fixture guest `name` (one of [`FIXTURES`]), e.g.
/// `target/fixtures/wasm32-unknown-unknown/release/fixture_trap.wasm`.
///
/// Built on first use per process with the command of the fixtures' README (the one
/// `host/plugin/tests` runs): `cargo build --release --target wasm32-unknown-unknown
/// --manifest-path host/plugin/tests/fixtures/<name>/Cargo.toml --target-dir target/fixtures`.
pub fn fixture_wasm(name: &str) -> Result<PathBuf> {
    ensure!(
        FIXTURES.contains(&name),
        "{name:?} is not one of the fixture guests {FIXTURES:?}"
    );
    static BUILT: Mutex<Option<HashMap<String, Result<PathBuf, String>>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    let outcome = built
        .get_or_insert_with(HashMap::new)
        .entry(name.to_owned())
        .or_insert_with(|| build_fixture(name).map_err(|e| format!("{e:#}")))
        .clone();
    outcome.map_err(|e| anyhow!("building fixture {name}: {e}"))
}

/// `module` (a core wasm module) with a custom section `name` holding `payload` appended.
///
/// A custom section (id 0, LEB128 size, LEB128-prefixed name, payload) may appear anywhere
/// after the header, and engines ignore unknown ones: the result behaves exactly like
/// `module` but hashes differently — a new plugin version as far as the daemon can tell.
pub fn with_custom_section(module: &[u8], name: &str, payload: &[u8]) -> Result<Vec<u8>> {
    ensure!(
        module.starts_with(&WASM_MAGIC) && module.get(4..8) == Some(&CORE_VERSION[..]),
        "not a core wasm module (magic/version {:02x?})",
        &module[..module.len().min(8)]
    );
    let mut body = Vec::with_capacity(name.len() + payload.len() + 5);
    leb128(&mut body, name.len() as u64);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = Vec::with_capacity(module.len() + body.len() + 6);
    out.extend_from_slice(module);
    out.push(CUSTOM_SECTION_ID);
    leb128(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The workspace's target directory: `$CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => dir.into(),
        None => workspace_root().join("target"),
    }
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

fn build_plugins() -> Result<PathBuf> {
    let target = target_dir().join("plugins");
    let mut cmd = cargo(&target);
    for package in PLUGIN_PACKAGES {
        cmd.args(["-p", package]);
    }
    cmd.current_dir(workspace_root())
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true");
    locked_build(&target, &mut cmd)?;
    Ok(target.join(WASM_RELEASE))
}

fn build_fixture(name: &str) -> Result<PathBuf> {
    let target = target_dir().join("fixtures");
    let manifest = workspace_root()
        .join("host/plugin/tests/fixtures")
        .join(name)
        .join("Cargo.toml");
    let mut cmd = cargo(&target);
    cmd.arg("--manifest-path").arg(&manifest);
    locked_build(&target, &mut cmd)?;
    existing(
        target
            .join(WASM_RELEASE)
            .join(format!("fixture_{name}.wasm")),
    )
}

/// `cargo build --quiet --release --target wasm32-unknown-unknown --target-dir TARGET`,
/// without the outer cargo's target overrides.
fn cargo(target: &Path) -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.args([
        "build",
        "--quiet",
        "--release",
        "--target",
        "wasm32-unknown-unknown",
    ])
    .arg("--target-dir")
    .arg(target)
    .env_remove("CARGO_TARGET_DIR")
    .env_remove("CARGO_BUILD_TARGET");
    cmd
}

/// Runs `cmd` (bounded by [`BUILD_TIMEOUT`]) holding an exclusive lock on
/// `TARGET/.mgre-e2e-build.lock`, so concurrent test processes build one after the other.
fn locked_build(target: &Path, cmd: &mut Command) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    let lock_path = target.join(".mgre-e2e-build.lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    let deadline = Instant::now() + BUILD_TIMEOUT;
    loop {
        // SAFETY: plain syscall on a descriptor `lock` owns for the whole call. The lock is
        // released when `lock` is closed at the end of this function (or by process exit).
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::WouldBlock {
            return Err(err).with_context(|| format!("locking {}", lock_path.display()));
        }
        ensure!(
            Instant::now() < deadline,
            "{} still locked by another build after {BUILD_TIMEOUT:?}",
            lock_path.display()
        );
        std::thread::sleep(LOCK_POLL);
    }
    let out = run(cmd, BUILD_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    drop(lock);
    Ok(())
}

fn existing(path: PathBuf) -> Result<PathBuf> {
    ensure!(path.is_file(), "{} was not built", path.display());
    Ok(path)
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

const WASM_RELEASE: &str = "wasm32-unknown-unknown/release";
const WASM_MAGIC: [u8; 4] = *b"\0asm";
const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
const CUSTOM_SECTION_ID: u8 = 0;
/// Longest a wasm build may take (a cold build of the plugins and their dependencies on a
/// small machine that also runs tests).
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// How often a build waiting for another process's build retries the lock.
const LOCK_POLL: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_encodes_multi_byte_values() {
        let mut out = Vec::new();
        leb128(&mut out, 624_485);
        assert_eq!(out, [0xe5, 0x8e, 0x26]);
        out.clear();
        leb128(&mut out, 5);
        assert_eq!(out, [5]);
    }

    #[test]
    fn custom_section_is_appended_after_the_module() {
        let module = [WASM_MAGIC, CORE_VERSION].concat();
        let out = with_custom_section(&module, "n", b"42").expect("a module");
        assert_eq!(&out[..8], &module[..]);
        assert_eq!(&out[8..], &[0, 4, 1, b'n', b'4', b'2']);
        assert!(with_custom_section(b"\0asm\x0d\0\x01\0", "n", b"").is_err());
    }
}
