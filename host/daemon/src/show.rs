//! `mgre show`: asks a running daemon over its control socket and prints a table or JSON.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use crate::config::Config;
use crate::{Locate, ShowWhat};

/// Runs one `mgre show` command.
pub fn show(what: ShowWhat) -> anyhow::Result<()> {
    let (request, opts) = match &what {
        ShowWhat::Peers(o) => ("peers", o),
        ShowWhat::Stats(o) => ("stats", o),
        ShowWhat::Plugins(o) => ("plugins", o),
        ShowWhat::Nhrp(o) => ("nhrp", o),
        ShowWhat::Nhs(o) => ("nhs", o),
    };
    let socket = socket_path(&opts.locate)?;
    let v = crate::control::request(&socket, request)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match what {
        ShowWhat::Peers(_) => print_peers(&v),
        ShowWhat::Stats(_) => print_stats(&v),
        ShowWhat::Plugins(_) => print_plugins(&v),
        ShowWhat::Nhrp(_) => print_nhrp(&v),
        ShowWhat::Nhs(_) => print_nhs(&v),
    }
    Ok(())
}

/// `mgre reload`: asks the daemon to reload its plugins and prints the outcome.
pub fn reload(locate: &Locate) -> anyhow::Result<()> {
    let v = crate::control::request(&socket_path(locate)?, "reload")?;
    print_plugins(&v);
    let errors = v["load_errors"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        errors == 0,
        "{errors} plugin(s) failed to load; their previous versions keep serving"
    );
    Ok(())
}

fn socket_path(locate: &Locate) -> anyhow::Result<PathBuf> {
    if let Some(s) = &locate.socket {
        return Ok(s.clone());
    }
    let file = locate
        .config
        .as_ref()
        .context("--config or --socket is required")?;
    Ok(Config::load(file)?.socket)
}

fn print_nhrp(v: &Value) {
    println!(
        "{:<28} {:<18} {:<18} {:<8} {:>8} {:<12} PEER",
        "PROTOCOL", "NBMA", "UNDERLAY", "TYPE", "EXPIRES", "FLAGS"
    );
    for e in v["entries"].as_array().into_iter().flatten() {
        let flags: Vec<&str> = e["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let expires = e["expires_in"]
            .as_u64()
            .map_or("never".to_owned(), |s| format!("{s}s"));
        println!(
            "{:<28} {:<18} {:<18} {:<8} {:>8} {:<12} {}",
            e["protocol"].as_str().unwrap_or("?"),
            e["nbma"].as_str().unwrap_or("?"),
            e["underlay"].as_str().unwrap_or("?"),
            e["type"].as_str().unwrap_or("?"),
            expires,
            if flags.is_empty() {
                "-".to_owned()
            } else {
                flags.join(",")
            },
            e["peer"].as_str().unwrap_or("")
        );
    }
    if let Some(c) = v["counters"].as_object() {
        let line: Vec<String> = c.iter().map(|(k, n)| format!("{k}={n}")).collect();
        println!(
            "\n{} (network-id {}) counters: {}",
            v["role"].as_str().unwrap_or("?"),
            v["network_id"],
            line.join(" ")
        );
    }
}

fn print_nhs(v: &Value) {
    println!(
        "{:<5} {:<18} {:>4} {:<12} {:<6} {:>8} {:<16} {:>8} {:>8} {:>6} {:>5}",
        "FAM",
        "NHS",
        "PRIO",
        "STATE",
        "ACTIVE",
        "EXPIRES",
        "NAT",
        "REQUESTS",
        "RETRIES",
        "NAKS",
        "LOST"
    );
    for s in v["servers"].as_array().into_iter().flatten() {
        println!(
            "{:<5} {:<18} {:>4} {:<12} {:<6} {:>8} {:<16} {:>8} {:>8} {:>6} {:>5}",
            s["family"].as_str().unwrap_or("?"),
            s["nbma"].as_str().unwrap_or("?"),
            num(&s["priority"]),
            s["state"].as_str().unwrap_or("?"),
            if s["active"].as_bool() == Some(true) {
                "*"
            } else {
                ""
            },
            s["expires_in"]
                .as_u64()
                .map_or("-".to_owned(), |e| format!("{e}s")),
            s["nat_nbma"].as_str().unwrap_or("-"),
            num(&s["requests"]),
            num(&s["retransmissions"]),
            num(&s["naks"]),
            num(&s["lost"]),
        );
    }
}

fn print_peers(v: &Value) {
    println!(
        "{:<16} {:<26} {:<8} {:>10} {:>6} {:>12} {:>14} {:>12} {:>14}  MAP",
        "PEER", "NBMA", "ENCAP", "KEY", "MTU", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES"
    );
    for p in v.as_array().into_iter().flatten() {
        let key = p["key"].as_u64().map_or("-".to_owned(), |k| k.to_string());
        let map: Vec<&str> = p["map"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{:<16} {:<26} {:<8} {:>10} {:>6} {:>12} {:>14} {:>12} {:>14}  {}",
            p["name"].as_str().unwrap_or("?"),
            p["nbma"].as_str().unwrap_or("?"),
            p["encap"].as_str().unwrap_or("?"),
            key,
            num(&p["mtu"]),
            num(&p["rx_packets"]),
            num(&p["rx_bytes"]),
            num(&p["tx_packets"]),
            num(&p["tx_bytes"]),
            map.join(" ")
        );
    }
}

fn print_stats(v: &Value) {
    println!("{:<12} {:>14} {:>16}", "PATH", "PACKETS", "BYTES");
    for (key, label) in [
        ("rx", "underlay rx"),
        ("tx", "underlay tx"),
        ("tun_rx", "tun rx"),
        ("tun_tx", "tun tx"),
        ("hairpin", "hairpin"),
    ] {
        println!(
            "{:<12} {:>14} {:>16}",
            label,
            num(&v[key]["packets"]),
            num(&v[key]["bytes"])
        );
    }
    println!();
    println!(
        "nhrp packets {}   mss clamped {}   icmp too-big sent {}",
        v["nhrp"], v["mss_clamped"], v["icmp_too_big"]
    );
    let o = &v["offload"];
    let on = |k: &str| {
        if o[k].as_bool() == Some(true) {
            "on"
        } else {
            "off"
        }
    };
    println!(
        "workers {}   tun offload: tso {} uso {}",
        num(&v["workers"]),
        on("tun_tso"),
        on("tun_uso")
    );
    println!(
        "offload: tun super-packets split {}   udp gro trains {}   udp gso trains {}",
        num(&o["tun_gso_reads"]),
        num(&o["udp_gro_trains"]),
        num(&o["udp_gso_trains"])
    );
    println!("worker heap allocations {}", num(&v["heap_allocations"]));
    println!();
    println!("{:<22} {:>12}", "DROP REASON", "PACKETS");
    if let Some(drops) = v["drops"].as_object() {
        for (reason, n) in drops {
            println!("{reason:<22} {:>12}", num(n));
        }
    }
}

/// A JSON number as a plain integer (JSON values ignore width specifiers when printed).
fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn print_plugins(v: &Value) {
    println!(
        "generation {}   reload failures {}",
        num(&v["generation"]),
        num(&v["reload_failures"])
    );
    for e in v["load_errors"].as_array().into_iter().flatten() {
        println!("load error: {}", e.as_str().unwrap_or("?"));
    }
    println!(
        "{:<16} {:<22} {:>4} {:<18} {:>12} {:>14} {:>9} {:>6} {:>9}  STATE",
        "PLUGIN", "HOOKS", "GEN", "HASH", "CALLS", "PACKETS", "NS/PKT", "TRAPS", "DEADLINE"
    );
    for p in v["plugins"].as_array().into_iter().flatten() {
        let hash = p["hash"]
            .as_str()
            .map_or("-".to_owned(), |h| h.chars().take(16).collect());
        let ns = p["mean_ns_per_packet"]
            .as_f64()
            .map_or("-".to_owned(), |n| format!("{n:.1}"));
        println!(
            "{:<16} {:<22} {:>4} {:<18} {:>12} {:>14} {:>9} {:>6} {:>9}  {}",
            p["name"].as_str().unwrap_or("?"),
            p["hooks"].as_str().unwrap_or("-"),
            p["generation"]
                .as_u64()
                .map_or("-".to_owned(), |g| g.to_string()),
            hash,
            num(&p["calls"]),
            num(&p["packets"]),
            ns,
            num(&p["traps"]),
            num(&p["deadline_hits"]),
            p["state"].as_str().unwrap_or("?"),
        );
        if let Some(e) = p["last_error"].as_str() {
            println!("{:<16} last error: {e}", "");
        }
    }
}
