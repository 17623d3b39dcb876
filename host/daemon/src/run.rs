//! `mgre run`: brings the tunnel up (TUN, sockets, routes), starts the dataplane workers and
//! the control/metrics servers, and tears everything down again on SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use arc_swap::ArcSwap;
use mgre_io::{GreSocket, Tun, UdpSockets};
use mgre_proto::{Dataplane, WorkerStats};
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::snapshot::Shared;
use crate::worker::Worker;

/// Underlay socket buffer size.
const SOCKET_BUFFER: usize = 8 << 20;
/// GRE-in-UDP sending sockets (distinct source ports for ECMP entropy).
const UDP_SOURCE_PORTS: usize = 8;

/// Runs the daemon described by `path` until a termination signal.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(cfg.log.as_deref().unwrap_or("info")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let listener = crate::control::bind(&cfg.socket)?;
    let mut tun =
        Tun::create(&cfg.tun).with_context(|| format!("creating TUN {}", cfg.tun.name))?;
    let tun_name = tun.name().to_owned();
    let plugins = crate::plugins::start(&cfg)?;
    if tun.offload() {
        crate::routes::limit_gso_segments(&tun_name, mgre_io::MAX_SEGMENTS)?;
    }
    crate::routes::install(&tun_name, &cfg.routes)?;

    let dp = Arc::new(ArcSwap::from_pointee(Dataplane::new(cfg.dataplane.clone())));
    let peer_slots = cfg.dataplane.peer_capacity.max(cfg.dataplane.peers.len());
    let stop = Arc::new(AtomicBool::new(false));
    let mut stats = Vec::with_capacity(cfg.workers);
    let mut handles = Vec::with_capacity(cfg.workers);
    let (control_tx, control_rx) = match cfg.nhrp {
        Some(_) => {
            let (tx, rx) = std::sync::mpsc::sync_channel(crate::nhrp::QUEUE);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let mut control_sockets = None;
    let redirect = cfg.nhrp.as_ref().filter(|n| n.redirect).map(|n| {
        let seed = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8);
        let limiter = mgre_proto::nhrp::RedirectLimiter::new(
            crate::nhrp::REDIRECT_SLOTS,
            n.redirect_interval,
            seed,
        );
        (Arc::new(limiter), std::time::Instant::now())
    });
    let outer_header = if cfg.nbma.is_ipv4() { 20 } else { 40 } + 8;
    for (id, queue) in tun.take_queues().into_iter().enumerate() {
        let gre = GreSocket::bind_shard(cfg.nbma, SOCKET_BUFFER, id as u32, cfg.workers as u32)
            .with_context(|| format!("opening raw GRE socket on {}", cfg.nbma))?;
        let udp = if cfg.udp_needed {
            let u = UdpSockets::bind(
                cfg.nbma,
                cfg.udp_port,
                UDP_SOURCE_PORTS,
                SOCKET_BUFFER,
                cfg.workers > 1,
            )
            .with_context(|| format!("binding GRE-in-UDP on {}:{}", cfg.nbma, cfg.udp_port))?;
            Some(u)
        } else {
            None
        };
        if id == 0 && control_tx.is_some() {
            let udp = udp.as_ref().map(UdpSockets::listener_clone).transpose()?;
            control_sockets = Some((gre.try_clone()?, udp));
        }
        let worker_stats = Arc::new(WorkerStats::new(peer_slots));
        stats.push(worker_stats.clone());
        let worker = Worker {
            dp: dp.clone(),
            control: control_tx.clone(),
            redirect: redirect.clone(),
            stats: worker_stats,
            tun: queue,
            gre,
            udp,
            udp_port: cfg.udp_port,
            udp_max_payload: usize::from(cfg.dataplane.underlay_mtu) - outer_header,
            stop: stop.clone(),
            plugins: plugins.as_ref().map(|p| p.manager.clone()),
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("mgre-worker-{id}"))
                .spawn(move || worker.run())?,
        );
    }
    drop(control_tx);
    let (nhrp, control) = match (control_rx, control_sockets) {
        (Some(rx), Some((gre, udp))) => {
            let (control, state) = crate::nhrp::Control::new(
                &cfg,
                rx,
                gre,
                udp,
                dp.clone(),
                stats.clone(),
                stop.clone(),
                plugins.as_ref().map(|p| p.manager.clone()),
            )?;
            let handle = std::thread::Builder::new()
                .name("mgre-nhrp".into())
                .spawn(move || control.run())?;
            (Some(state), Some(handle))
        }
        _ => (None, None),
    };
    let shared = Arc::new(Shared {
        dataplane: dp.clone(),
        static_peers: cfg.dataplane.peers.len(),
        nhrp,
        workers: stats,
        tun_name: tun_name.clone(),
        config_file: path.to_owned(),
        plugins: plugins.as_ref().map(|p| p.manager.clone()),
        tun_offload: (tun.offload(), tun.udp_offload()),
    });

    tracing::info!(
        tunnel = %tun_name, role = ?cfg.dataplane.role, nbma = %cfg.nbma, mtu = cfg.tun.mtu,
        peers = cfg.dataplane.peers.len(), routes = cfg.routes.len(), workers = cfg.workers,
        nhrp = cfg.nhrp.is_some(),
        offload = tun.offload(), udp_offload = tun.udp_offload(), "mgre running"
    );
    let served = serve_until_signal(&cfg, listener, shared, &handles);

    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    // After the workers: a spoke's control thread purges its registrations on the way out.
    if let Some(h) = control {
        let _ = h.join();
    }
    if let Err(e) = crate::routes::remove(&tun_name, &cfg.routes) {
        tracing::warn!(error = %e, "removing routes");
    }
    let _ = std::fs::remove_file(&cfg.socket);
    drop(tun);
    tracing::info!("mgre stopped");
    served
}

fn serve_until_signal(
    cfg: &Config,
    listener: std::os::unix::net::UnixListener,
    shared: Arc<Shared>,
    workers: &[std::thread::JoinHandle<()>],
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        listener.set_nonblocking(true)?;
        let control = tokio::net::UnixListener::from_std(listener)?;
        tokio::spawn(crate::control::serve(control, shared.clone()));
        if let Some(addr) = cfg.metrics {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding metrics on {addr}"))?;
            tracing::info!(%addr, "metrics listening");
            tokio::spawn(crate::metrics::serve(l, shared.clone()));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reloader = shared.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading plugins");
                let s = reloader.clone();
                if let Ok(v) = tokio::task::spawn_blocking(move || crate::control::reload(&s)).await
                    && let Some(e) = v.get("error")
                {
                    tracing::error!(error = %e, "reload failed");
                }
            }
        });
        let worker_exit = async {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            while !workers.iter().any(std::thread::JoinHandle::is_finished) {
                tick.tick().await;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = worker_exit => anyhow::bail!("a dataplane worker stopped unexpectedly; shutting down"),
        }
        Ok(())
    })
}
