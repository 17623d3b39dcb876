//! `mgre-blast`: a batching UDP small-packet generator and counter for `examples/bench.sh`.
//!
//! `send` pushes fixed-size datagrams to one address with `sendmmsg(2)` (one flow, batches
//! of `--batch`, optionally paced to `--pps`); `recv` counts what arrives on one address with
//! `recvmmsg(2)`. Each prints one line of JSON on stdout when it is done:
//!
//! ```text
//! mgre-blast send 198.51.100.1:5300 --seconds 5 --size 64
//! {"mode":"send","packets":…,"bytes":…,"seconds":…,"pps":…,"errors":…}
//! mgre-blast recv 198.51.100.1:5300 --seconds 10
//! {"mode":"recv","packets":…,"bytes":…,"seconds":…,"pps":…,"wall_seconds":…}
//! ```
//!
//! A receiver's `seconds` is the window from its first to its last datagram, so a receiver
//! started before the sender and stopped after it still reports the rate it saw; `bytes`
//! counts UDP payload. It exists because iperf3's UDP receiver reads one datagram per
//! syscall and tops out far below what the paths under test carry.
//!
//! What it must not do: run unbounded. Both modes stop at `--seconds` (a receiver also once
//! `--idle-ms` pass without a datagram after the first one) or at `--max-packets`, whichever
//! comes first, and every blocking call has a socket timeout of [`POLL_INTERVAL`]. It
//! sends only to the address it is given.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Batching UDP small-packet generator and counter (one JSON line on stdout).
#[derive(Parser)]
#[command(name = "mgre-blast", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Send fixed-size datagrams to ADDR with sendmmsg.
    Send(SendArgs),
    /// Count datagrams arriving on ADDR with recvmmsg.
    Recv(RecvArgs),
}

#[derive(Args)]
struct SendArgs {
    /// Destination (e.g. 198.51.100.1:5300 or [2001:db8::1]:5300).
    addr: SocketAddr,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=MAX_SECONDS))]
    seconds: u64,
    /// UDP payload bytes per datagram.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(0..=MAX_PAYLOAD))]
    size: u16,
    /// Datagrams per sendmmsg call.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=MAX_BATCH))]
    batch: u16,
    /// Stop after this many datagrams.
    #[arg(long, default_value_t = DEFAULT_MAX_PACKETS)]
    max_packets: u64,
    /// Pace to at most this many datagrams per second (0: as fast as the kernel takes them).
    #[arg(long, default_value_t = 0)]
    pps: u64,
}

#[derive(Args)]
struct RecvArgs {
    /// Local address to bind (e.g. 198.51.100.1:5300).
    addr: SocketAddr,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_SECONDS))]
    seconds: u64,
    /// Stop once this many milliseconds pass without a datagram (after the first one).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    idle_ms: u64,
    /// Datagrams per recvmmsg call.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=MAX_BATCH))]
    batch: u16,
    /// Stop after this many datagrams.
    #[arg(long, default_value_t = DEFAULT_MAX_PACKETS)]
    max_packets: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Mode::Send(args) => send(&args),
        Mode::Recv(args) => recv(&args),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mgre-blast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sends until `--seconds` or `--max-packets`; returns the JSON result line.
fn send(args: &SendArgs) -> Result<String> {
    let socket = udp_socket(args.addr)?;
    set_buffer(&socket, libc::SO_SNDBUFFORCE, BUFFER_BYTES);
    socket
        .connect(&SockAddr::from(args.addr))
        .with_context(|| format!("connect to {}", args.addr))?;

    let payload = vec![PAYLOAD_BYTE; usize::from(args.size)];
    let batch = usize::from(args.batch);
    // Every message of a batch points at the same payload: the kernel copies it per datagram.
    let mut iov = vec![
        libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        batch
    ];
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain old data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();

    let deadline = Duration::from_secs(args.seconds);
    let start = Instant::now();
    let (mut packets, mut errors) = (0_u64, 0_u64);
    while packets < args.max_packets {
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            break;
        }
        if args.pps > 0 {
            // ahead of the schedule: sleep until it catches up (at most one poll interval)
            let due = Duration::from_secs_f64(packets as f64 / args.pps as f64);
            if due > elapsed {
                thread::sleep((due - elapsed).min(POLL_INTERVAL));
                continue;
            }
        }
        let remaining = args.max_packets - packets;
        let n = batch.min(usize::try_from(remaining).unwrap_or(batch));
        // SAFETY: `msgs[..n]` are valid headers whose iovecs point into `payload`, which
        // outlives the call; the kernel only reads them. `n <= MAX_BATCH` fits a c_uint.
        let sent = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        if sent < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // full queue, send timeout, or an ICMP error from an earlier datagram:
                // counted, and the run goes on
                Some(libc::EAGAIN | libc::ENOBUFS | libc::ECONNREFUSED | libc::EINTR) => {
                    errors += 1;
                    if err.raw_os_error() == Some(libc::ENOBUFS) {
                        thread::yield_now();
                    }
                }
                _ => return Err(err).context("sendmmsg"),
            }
            continue;
        }
        // sent >= 0 here, so the cast is lossless
        packets += sent as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    let result = json!({
        "mode": "send",
        "packets": packets,
        "bytes": packets * u64::from(args.size),
        "seconds": round3(seconds),
        "pps": round3(per_second(packets, seconds)),
        "errors": errors,
    });
    Ok(result.to_string())
}

/// Counts until `--seconds`, `--idle-ms` after the last datagram, or `--max-packets`;
/// returns the JSON result line.
fn recv(args: &RecvArgs) -> Result<String> {
    let socket = udp_socket(args.addr)?;
    set_buffer(&socket, libc::SO_RCVBUFFORCE, BUFFER_BYTES);
    socket
        .bind(&SockAddr::from(args.addr))
        .with_context(|| format!("bind {}", args.addr))?;
    socket
        .set_read_timeout(Some(POLL_INTERVAL))
        .context("SO_RCVTIMEO")?;

    let batch = usize::from(args.batch);
    let mut buffers = vec![[0_u8; RECV_BUFFER]; batch];
    let mut iov: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain old data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();

    let deadline = Duration::from_secs(args.seconds);
    let idle = Duration::from_millis(args.idle_ms);
    let start = Instant::now();
    let (mut packets, mut bytes) = (0_u64, 0_u64);
    let mut first: Option<Instant> = None;
    let mut last = start;
    while packets < args.max_packets && start.elapsed() < deadline {
        if first.is_some() && last.elapsed() >= idle {
            break;
        }
        let remaining = args.max_packets - packets;
        let n = batch.min(usize::try_from(remaining).unwrap_or(batch));
        // SAFETY: `msgs[..n]` are valid headers whose iovecs point into `buffers`, which
        // outlive the call and are not otherwise borrowed during it. `n <= MAX_BATCH`.
        // MSG_TRUNC: msg_len is the datagram's real length even if a buffer was too short.
        let got = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as u32,
                libc::MSG_WAITFORONE | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => continue, // SO_RCVTIMEO: check the bounds
                _ => return Err(err).context("recvmmsg"),
            }
        }
        if got == 0 {
            continue;
        }
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        // got > 0 and <= n here, so the casts are lossless
        let got = got as usize;
        packets += got as u64;
        bytes += msgs[..got]
            .iter()
            .map(|m| u64::from(m.msg_len))
            .sum::<u64>();
    }
    let wall = start.elapsed().as_secs_f64();
    let seconds = match first {
        Some(first) if packets > 1 => last.duration_since(first).as_secs_f64(),
        _ => wall,
    };
    let result = json!({
        "mode": "recv",
        "packets": packets,
        "bytes": bytes,
        "seconds": round3(seconds),
        "pps": round3(per_second(packets, seconds)),
        "wall_seconds": round3(wall),
    });
    Ok(result.to_string())
}

/// A UDP socket of `addr`'s family.
fn udp_socket(addr: SocketAddr) -> Result<Socket> {
    ensure!(
        !addr.ip().is_unspecified() && addr.port() != 0,
        "{addr}: need a concrete address and port"
    );
    Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).context("UDP socket")
}

/// Sets a socket buffer with the `*FORCE` option (root may exceed `net.core.*mem_max`); if
/// that is refused, with the plain one, capped by the sysctl. Best effort: the default
/// buffer still works, only with more drops under bursts.
fn set_buffer(socket: &Socket, force_opt: libc::c_int, bytes: libc::c_int) {
    let plain_opt = if force_opt == libc::SO_SNDBUFFORCE {
        libc::SO_SNDBUF
    } else {
        libc::SO_RCVBUF
    };
    for opt in [force_opt, plain_opt] {
        // SAFETY: a c_int option value of the right size for SOL_SOCKET buffer options.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&raw const bytes).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Longest any blocking socket call waits before the loop re-checks its bounds.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Socket buffer asked for on both sides.
const BUFFER_BYTES: libc::c_int = 8 << 20;
/// Per-datagram receive buffer (longer datagrams are counted with their real length).
const RECV_BUFFER: usize = 2048;
const MAX_SECONDS: u64 = 3600;
const MAX_PAYLOAD: i64 = 65_000;
const MAX_BATCH: i64 = 1024;
const DEFAULT_MAX_PACKETS: u64 = 1_000_000_000;
const PAYLOAD_BYTE: u8 = 0x5a;
