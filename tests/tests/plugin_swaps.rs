//! Hot plugin swaps lose nothing: while a 1000 packet/s sequence-numbered UDP stream runs
//! from spoke1's LAN to spoke2's LAN through the hub, the plugin on the hub's transit path
//! (a `dscp-classifier` that classifies every packet: `ttl-ms = 0`) is replaced 100 times by
//! renaming a new file over it. Every swap must become a new serving generation, every
//! datagram must arrive exactly once, and the swap latency (rename done → new generation
//! reported by `mgre show plugins`) is printed and written to
//! `target/plugin-swap-latency.txt`.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use mgre_e2e::{
    PluginEntry, SiteId, Topology, ping, plugin_counter, plugin_number, plugin_wasm, target_dir,
    udp_stream, with_custom_section,
};

#[test]
fn a_hundred_plugin_swaps_under_load_lose_nothing() -> Result<()> {
    let test_started = Instant::now();
    let base = fs::read(plugin_wasm("dscp-classifier")?)?;
    let mut topo = Topology::builder("swap")
        .log("info")
        .plugin(
            SiteId::Hub,
            PluginEntry::new(PLUGIN, FILE).config(
                r#"classes = ["transit"]
ttl-ms = 0

[[plugin.config.rule]]
class = "transit"
direction = "transit"
"#,
            ),
        )
        .build()?;
    topo.hub().replace_plugin(FILE, &base)?;
    topo.start()?;
    let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
    let first = hub
        .daemon()
        .wait_plugin(PLUGIN, Duration::from_secs(20), |s| s["state"] == "active")?;
    ensure!(
        ping(&s1.host, s2.addrs.host_v4.into(), 3),
        "no LAN-to-LAN path before the stream\n{}",
        topo.logs()
    );

    let to = SocketAddr::new(s2.addrs.host_v4.into(), STREAM_PORT);
    let mut generation = plugin_number(&first, "generation")?;
    let (report, (latencies, load_times)) =
        udp_stream(&s1.host, &s2.host, to, RATE, MAX_PACKETS, || {
            // Let the stream run through the unchanged plugin first.
            std::thread::sleep(LEAD_TIME);
            let mut latencies = Vec::with_capacity(SWAPS);
            let mut load_times = Vec::with_capacity(SWAPS);
            let mut generations = vec![generation];
            for swap in 1..=SWAPS {
                ensure!(
                    test_started.elapsed() < SWAP_BUDGET,
                    "only {} swaps done after {SWAP_BUDGET:?}",
                    swap - 1
                );
                let bytes = with_custom_section(&base, SECTION, swap.to_string().as_bytes())?;
                topo.hub().replace_plugin(FILE, &bytes)?;
                let written = Instant::now();
                let status = wait_for_new_generation(&topo, generation)
                    .with_context(|| format!("swap {swap}"))?;
                latencies.push(written.elapsed());
                load_times.push(Duration::from_secs_f64(
                    status["load_ms"].as_f64().unwrap_or(0.0) / 1e3,
                ));
                generation = plugin_number(&status, "generation")?;
                ensure!(
                    status["state"] == "active",
                    "swap {swap}: state {}",
                    status["state"]
                );
                generations.push(generation);
            }
            std::thread::sleep(LEAD_TIME);
            generations.sort_unstable();
            generations.dedup();
            ensure!(
                generations.len() == SWAPS + 1,
                "{} distinct generations over {SWAPS} swaps",
                generations.len() - 1
            );
            Ok((latencies, load_times))
        })
        .with_context(|| topo.logs())?;

    let summary = summarize(&latencies, &load_times, &report);
    // Straight to the stderr descriptor, past libtest's output capture: visible in every run.
    let _ = std::io::stderr().lock().write_all(summary.as_bytes());
    let out = target_dir().join("plugin-swap-latency.txt");
    fs::write(&out, &summary).with_context(|| format!("writing {}", out.display()))?;

    ensure!(
        report.is_perfect(),
        "datagrams lost or duplicated across {SWAPS} swaps: {report:?}\n{}",
        topo.logs()
    );
    ensure!(
        report.sent >= RATE * 5,
        "the stream ran only {} datagrams",
        report.sent
    );
    // The last version classified the stream (transit) packets itself.
    let last = hub.daemon().plugin(PLUGIN)?;
    ensure!(
        plugin_counter(&last, "transit")? > 0,
        "the last generation classified nothing: {last:#}"
    );
    ensure!(
        test_started.elapsed() < TEST_BUDGET,
        "the test took {:?}",
        test_started.elapsed()
    );
    Ok(())
}

/// Polls `mgre show plugins --json` until the plugin serves a generation other than `old`.
fn wait_for_new_generation(topo: &Topology, old: u64) -> Result<serde_json::Value> {
    let deadline = Instant::now() + SWAP_TIMEOUT;
    loop {
        let status = topo.hub().daemon().plugin(PLUGIN)?;
        if status["generation"].as_u64().is_some_and(|g| g != old) {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            bail!("generation still {old} after {SWAP_TIMEOUT:?}: {status:#}");
        }
        std::thread::sleep(GENERATION_POLL);
    }
}

fn summarize(
    latencies: &[Duration],
    load_times: &[Duration],
    report: &mgre_e2e::StreamReport,
) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "plugin swaps: {} under a {RATE}/s UDP stream through the hub",
        latencies.len()
    );
    let _ = writeln!(
        text,
        "  swap latency (rename done -> new generation in `mgre show plugins`; includes the \
         daemon's 200 ms watch quiet period and {} ms polling): {}",
        GENERATION_POLL.as_millis(),
        distribution(latencies)
    );
    let _ = writeln!(
        text,
        "  of which loading (read, componentize, compile, link, init; `load_ms`): {}",
        distribution(load_times)
    );
    let _ = writeln!(
        text,
        "  stream: {} datagrams at {RATE}/s over {:.1} s, {} received, {} missing, \
         {} duplicated, {} reordered",
        report.sent,
        report.duration.as_secs_f64(),
        report.received,
        report.missing_count,
        report.duplicates,
        report.reordered
    );
    text
}

/// "min …, median …, p90 …, max …" in milliseconds.
fn distribution(samples: &[Duration]) -> String {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let Some(max) = sorted.last() else {
        return "no samples".into();
    };
    let at = |q: f64| ms(sorted[((sorted.len() - 1) as f64 * q).round() as usize]);
    format!(
        "min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(sorted[0]),
        at(0.5),
        at(0.9),
        ms(*max)
    )
}

const PLUGIN: &str = "classes";
const FILE: &str = "dscp_classifier.wasm";
const SECTION: &str = "mgre-e2e-swap";
const SWAPS: usize = 100;
const RATE: u32 = 1000;
const STREAM_PORT: u16 = 7100;
/// The stream's hard cap: 3 minutes at `RATE`.
const MAX_PACKETS: u32 = 180_000;
const LEAD_TIME: Duration = Duration::from_secs(1);
const SWAP_TIMEOUT: Duration = Duration::from_secs(10);
const GENERATION_POLL: Duration = Duration::from_millis(5);
/// Swapping stops (failing the test) once the test has run this long.
const SWAP_BUDGET: Duration = Duration::from_secs(150);
const TEST_BUDGET: Duration = Duration::from_secs(180);
