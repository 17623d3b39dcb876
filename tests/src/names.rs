//! Names that are unique per process and per test, and per-test scratch directories.
//!
//! Tests run in parallel, in several processes at once, next to other people's namespaces:
//! every namespace, device and directory name the harness makes comes from a [`Namer`],
//! which mixes in the PID, a process-wide sequence number and the test's tag. Nothing here
//! creates network objects; it only names them (and makes directories).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, ensure};

/// Source of unique names for one test's namespaces, devices and scratch directory.
#[derive(Debug, Clone)]
pub struct Namer {
    /// `mge-<pid>-<seq>-<tag>`: prefix of namespace and directory names.
    prefix: String,
    /// `m` + 5 base-36 digits of the PID + 3 of the sequence: fixed width, so unambiguous.
    device_stem: String,
}

impl Namer {
    /// A fresh namer; `tag` (1 to [`MAX_TAG`] chars of `[a-z0-9]`) names the test.
    ///
    /// # Panics
    /// If `tag` is malformed: that is a bug in the test, not a runtime condition.
    pub fn new(tag: &str) -> Self {
        assert!(
            (1..=MAX_TAG).contains(&tag.len())
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "test tag {tag:?} must be 1..={MAX_TAG} chars of [a-z0-9]"
        );
        let pid = std::process::id();
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        assert!(
            seq < 36u32.pow(3),
            "more than 36^3 topologies in one process"
        );
        Self {
            prefix: format!("mge-{pid}-{seq}-{tag}"),
            device_stem: format!("m{}{}", base36(pid, 5), base36(seq, 3)),
        }
    }

    /// `mge-<pid>-<seq>-<tag>`, shared by every name this namer makes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The name of the namespace playing `role` (e.g. `hub`, `s1l`).
    ///
    /// # Panics
    /// If the result would exceed [`MAX_NETNS_NAME`].
    pub fn netns(&self, role: &str) -> String {
        let name = format!("{}-{role}", self.prefix);
        assert!(name.len() <= MAX_NETNS_NAME, "netns name {name:?} too long");
        name
    }

    /// The name of device `kind` number `index` (at most 11 chars, below IFNAMSIZ).
    pub fn device(&self, kind: char, index: usize) -> String {
        assert!(
            kind.is_ascii_lowercase() && index < 36,
            "device {kind}{index}"
        );
        format!("{}{kind}{}", self.device_stem, base36(index as u32, 1))
    }
}

/// A scratch directory removed (recursively) on drop, unless `MGRE_E2E_KEEP` is set.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/mge-<pid>-<seq>-<tag>` with a namer of its own.
    pub fn new(tag: &str) -> Result<Self> {
        Self::for_namer(&Namer::new(tag))
    }

    /// Creates `$TMPDIR/<namer prefix>`.
    pub fn for_namer(namer: &Namer) -> Result<Self> {
        let path = std::env::temp_dir().join(namer.prefix());
        ensure!(
            !path.exists(),
            "scratch directory {} already exists",
            path.display()
        );
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("MGRE_E2E_KEEP").is_some() {
            eprintln!("keeping {}", self.path.display());
        } else if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: removing {}: {e}", self.path.display());
        }
    }
}

/// `value` in base 36, zero-padded to `width` digits (more if it does not fit).
fn base36(mut value: u32, width: usize) -> String {
    let mut digits = Vec::new();
    while value > 0 || digits.len() < width {
        let digit = (value % 36) as u8;
        digits.push(if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        });
        value /= 36;
    }
    digits.reverse();
    String::from_utf8(digits).expect("base-36 digits are ASCII")
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// Longest accepted test tag.
pub const MAX_TAG: usize = 6;
/// Longest namespace name the harness makes (`/run/netns/NAME` has no hard limit, but
/// short names keep `ip` output readable).
pub const MAX_NETNS_NAME: usize = 30;
