//! The precompiled-artifact cache: native code for a plugin file, keyed by the file's sha256,
//! the engine's compatibility hash (wasmtime version and codegen settings) and the
//! componentizer version, so a hit skips both componentization and compilation.
//!
//! Deserializing an artifact is `unsafe` in wasmtime: a crafted one is undefined behaviour.
//! So the directory must be private — created 0700, refused if group/world-writable or owned
//! by another user — and never derived from plugin input. Entries are published atomically
//! (temp file + rename); an unusable entry (truncated, garbage, other engine) is deleted and
//! the plugin is compiled again. Cache errors are never fatal to a load.

use std::fs::{self, DirBuilder, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::RuntimeError;

/// A private directory of `<key>.cwasm` files.
#[derive(Debug)]
pub(crate) struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// Opens `dir`, creating it (mode 0700) if needed, and checks that it is private.
    pub(crate) fn open(dir: &Path) -> Result<ArtifactCache, RuntimeError> {
        let fail = |reason: String| RuntimeError::CacheDir {
            path: dir.to_owned(),
            reason,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail(e.to_string()))?;
        let meta = fs::metadata(dir).map_err(|e| fail(e.to_string()))?;
        if !meta.is_dir() {
            return Err(fail("not a directory".into()));
        }
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(fail(format!(
                "mode {:o} is group- or world-writable; precompiled code must be private",
                mode & 0o777
            )));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != euid {
            return Err(fail(format!(
                "owned by uid {}, not by this process (uid {euid})",
                meta.uid()
            )));
        }
        Ok(ArtifactCache {
            dir: dir.to_owned(),
        })
    }

    /// The cache key of a plugin file with content hash `file_hash` for `engine`.
    pub(crate) fn key(engine: &Engine, file_hash: &[u8; 32]) -> String {
        let mut sha = Sha256::new();
        sha.update(file_hash);
        engine
            .precompile_compatibility_hash()
            .hash(&mut ShaHasher(&mut sha));
        sha.update(COMPONENTIZER.as_bytes());
        hex(&sha.finalize())
    }

    /// Where the artifact for `key` lives.
    pub(crate) fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.cwasm"))
    }

    /// The cached component for `key`, if there is a usable one.
    ///
    /// The file is read into memory rather than mapped (`deserialize_file`): a mapped file
    /// truncated in place while in use would kill the process with SIGBUS. The copy costs
    /// about 0.2 ms per plugin load.
    pub(crate) fn load(&self, engine: &Engine, key: &str) -> Option<Component> {
        let path = self.path(key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read plugin artifact");
                return None;
            }
        };
        // SAFETY: the directory is private to this user (checked in `open`) and entries are
        // only ever written by `store` below from `Engine::precompile_component` output, so
        // the bytes are a wasmtime artifact, not attacker-controlled. Version and config
        // mismatches, truncation and garbage are detected and reported as errors.
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"),
                    "unusable plugin artifact, recompiling");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Publishes `artifact` under `key` (temp file + rename). Failures are logged only.
    pub(crate) fn store(&self, key: &str, artifact: &[u8]) {
        let path = self.path(key);
        if let Err(e) = self.write_atomically(&path, artifact) {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache plugin artifact");
        }
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Relaxed)
        ));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Feeds an `impl Hash` (the engine's compatibility hash) into sha256.
struct ShaHasher<'a>(&'a mut Sha256);

impl Hasher for ShaHasher<'_> {
    fn finish(&self) -> u64 {
        // Never called: only `write` feeds the digest.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Part of the key: the componentizer whose output a cached artifact was compiled from.
const COMPONENTIZER: &str = "wit-component-0.254";
