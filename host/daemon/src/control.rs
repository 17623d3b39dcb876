//! The control socket: a unix stream socket answering one request per connection with JSON.
//! Requests are one line: `stats`, `peers`, `plugins`, `nhrp`, `nhs` or `reload`. The server side runs on the daemon's tokio
//! runtime; the client side (`mgre show`) is plain blocking std I/O.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::snapshot::Shared;

/// Serves control requests until the task is dropped.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(r).take(256);
            if tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
                .await
                .is_err()
            {
                return;
            }
            let body = match line.trim() {
                "stats" => serde_json::to_string(&shared.stats()),
                "peers" => serde_json::to_string(&shared.peers()),
                "plugins" => serde_json::to_string(&match &shared.plugins {
                    Some(m) => crate::plugins::status(&m.current()),
                    None => serde_json::json!({ "generation": 0, "plugins": [] }),
                }),
                "nhrp" | "nhs" => {
                    let v = match &shared.nhrp {
                        None => serde_json::json!({ "error": "NHRP is not configured ([nhrp])" }),
                        Some(state) => {
                            let st = state.lock().unwrap_or_else(|p| p.into_inner());
                            if line.trim() == "nhrp" {
                                crate::nhrp::view::cache(
                                    &st,
                                    &shared.dataplane.load(),
                                    shared.static_peers,
                                )
                            } else {
                                crate::nhrp::view::nhs(&st)
                            }
                        }
                    };
                    serde_json::to_string(&v)
                }
                "reload" => {
                    let shared = shared.clone();
                    let done = tokio::task::spawn_blocking(move || reload(&shared)).await;
                    let v = done.unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
                    serde_json::to_string(&v)
                }
                other => Ok(
                    serde_json::json!({ "error": format!("unknown request `{other}`") })
                        .to_string(),
                ),
            };
            let body =
                body.unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
            let _ = w.write_all(body.as_bytes()).await;
            let _ = w.shutdown().await;
        });
    }
}

/// Reloads the plugins (re-reading the config file's plugin sections); an error becomes the
/// JSON `error` answer.
pub fn reload(shared: &Shared) -> serde_json::Value {
    match &shared.plugins {
        None => serde_json::json!({ "error": "no [plugins] configured when the daemon started" }),
        Some(m) => crate::plugins::reload(&shared.config_file, m)
            .unwrap_or_else(|e| serde_json::json!({ "error": format!("{e:#}") })),
    }
}

/// Binds the control socket, refusing to steal one a live daemon still answers on.
pub fn bind(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "control socket {} is in use by a running daemon",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("binding control socket {}", path.display()))
}

/// Sends `request` to the daemon at `path` and returns its JSON answer.
pub fn request(path: &Path, request: &str) -> anyhow::Result<serde_json::Value> {
    let mut s = UnixStream::connect(path)
        .with_context(|| format!("connecting to mgre at {} (is it running?)", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .context("reading the daemon's answer")?;
    let v: serde_json::Value =
        serde_json::from_str(&body).context("daemon answered with invalid JSON")?;
    if let Some(e) = v.get("error") {
        bail!("daemon: {e}");
    }
    Ok(v)
}
