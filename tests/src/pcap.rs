//! Interface captures saved as pcap files, so standard tools (tshark) can decode what the
//! daemon put on the wire.
//!
//! [`Capture::start`] opens an AF_PACKET socket on an interface of a namespace (before it
//! returns, so nothing sent afterwards is missed) and records every packet, both
//! directions, on a background thread; [`Capture::finish`] stops it and writes the packets
//! as a pcap file with link type RAW (IPv4/IPv6 packets without a link-layer header).
//! Bounded in packets ([`MAX_PACKETS`]) and time ([`MAX_DURATION`]); it never sends.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::netns::Netns;
use crate::traffic::PacketSocket;

/// Most packets one capture keeps.
pub const MAX_PACKETS: usize = 100_000;
/// Longest a capture runs.
pub const MAX_DURATION: Duration = Duration::from_secs(180);
/// pcap link type for raw IPv4/IPv6 packets.
const LINKTYPE_RAW: u32 = 101;
/// Bytes kept per packet.
const SNAPLEN: usize = 65_535;

type Packets = Vec<(SystemTime, Vec<u8>)>;

/// A running capture; stop it with [`Capture::finish`] (dropping it stops it too).
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Packets>>>,
}

impl Capture {
    /// Starts capturing on `iface` of `ns`.
    pub fn start(ns: &Netns, iface: &str) -> Result<Self> {
        let socket = ns.run(|| PacketSocket::open(iface))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || -> Result<Packets> {
            let started = Instant::now();
            let mut packets = Vec::new();
            let mut buf = vec![0u8; SNAPLEN];
            while !flag.load(Ordering::Relaxed)
                && packets.len() < MAX_PACKETS
                && started.elapsed() < MAX_DURATION
            {
                if let Some(n) = socket.recv(&mut buf)? {
                    packets.push((SystemTime::now(), buf[..n].to_vec()));
                }
            }
            Ok(packets)
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops capturing and writes what was seen to `path`; returns the packet count.
    pub fn finish(mut self, path: &Path) -> Result<usize> {
        self.stop.store(true, Ordering::Relaxed);
        let packets = self
            .thread
            .take()
            .context("capture already finished")?
            .join()
            .map_err(|_| anyhow::anyhow!("capture thread panicked"))??;
        let body: usize = packets.iter().map(|(_, p)| 16 + p.len()).sum();
        let mut file = Vec::with_capacity(24 + body);
        // Global header: magic (microsecond timestamps), version 2.4, UTC, snap length,
        // link type.
        file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        file.extend_from_slice(&2u16.to_le_bytes());
        file.extend_from_slice(&4u16.to_le_bytes());
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&(SNAPLEN as u32).to_le_bytes());
        file.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        for (at, p) in &packets {
            let t = at.duration_since(UNIX_EPOCH).unwrap_or_default();
            let len = p.len() as u32;
            for v in [t.as_secs() as u32, t.subsec_micros(), len, len] {
                file.extend_from_slice(&v.to_le_bytes());
            }
            file.extend_from_slice(p);
        }
        fs::write(path, file).with_context(|| format!("writing {}", path.display()))?;
        Ok(packets.len())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
