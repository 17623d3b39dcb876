//! [`Watcher`]: debounced change notification for plugin directories, so the daemon can
//! rebuild and publish a new plugin set when files are replaced.
//!
//! Directories, not files, are watched, so editor and deploy patterns work: write-then-
//! rename replaces the inode, truncate-then-write produces a burst of modifications. Events
//! are collected until `quiet` passes without one, then the callback runs once on the
//! watcher's own thread. A half-written file simply fails to load (the old version keeps
//! serving); the writes that complete it produce further events and another attempt.
//! Access events (including the host's own reads), hidden files (`.name`: editor swap files,
//! temp files) and backups (`name~`) are ignored.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::error::WatchError;

/// Watches directories and reports settled changes. Dropping it stops watching and joins
/// its thread (waiting for a running callback).
pub struct Watcher {
    notify: Option<RecommendedWatcher>,
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

enum Msg {
    Changed(Vec<PathBuf>),
    Stop,
}

impl Watcher {
    /// Watches `dirs` (non-recursively). After a burst of changes followed by `quiet`
    /// without any, calls `on_change` with the changed paths (sorted, deduplicated).
    pub fn new<F>(
        dirs: impl IntoIterator<Item = PathBuf>,
        quiet: Duration,
        on_change: F,
    ) -> Result<Watcher, WatchError>
    where
        F: FnMut(&[PathBuf]) + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let handler = move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                if matches!(event.kind, EventKind::Access(_)) {
                    return;
                }
                let paths: Vec<PathBuf> = event.paths.into_iter().filter(|p| relevant(p)).collect();
                if !paths.is_empty() {
                    let _ = events.send(Msg::Changed(paths));
                }
            }
            Err(e) => tracing::warn!(error = %e, "plugin directory watch error"),
        };
        let mut dirs: Vec<PathBuf> = dirs.into_iter().collect();
        dirs.sort();
        dirs.dedup();
        let first = dirs.first().cloned().unwrap_or_default();
        let mut notify =
            notify::recommended_watcher(handler).map_err(|source| WatchError::Notify {
                path: first,
                source,
            })?;
        for dir in &dirs {
            notify
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Notify {
                    path: dir.clone(),
                    source,
                })?;
        }
        let thread = std::thread::Builder::new()
            .name("mgre-plugin-watch".into())
            .spawn(move || debounce(&rx, quiet, on_change))
            .map_err(WatchError::Thread)?;
        tracing::info!(dirs = ?dirs, quiet_ms = quiet.as_millis() as u64, "watching plugin directories");
        Ok(Watcher {
            notify: Some(notify),
            tx,
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.notify.take());
        let _ = self.tx.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn debounce(rx: &mpsc::Receiver<Msg>, quiet: Duration, mut on_change: impl FnMut(&[PathBuf])) {
    loop {
        let mut pending = match rx.recv() {
            Ok(Msg::Changed(paths)) => paths,
            Ok(Msg::Stop) | Err(_) => return,
        };
        loop {
            match rx.recv_timeout(quiet) {
                Ok(Msg::Changed(paths)) => pending.extend(paths),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        pending.sort();
        pending.dedup();
        tracing::debug!(paths = ?pending, "plugin files changed");
        on_change(&pending);
    }
}

/// Whether a change to `path` may concern a plugin file.
fn relevant(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('.') && !n.ends_with('~'))
}
