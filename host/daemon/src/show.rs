//! `mgre show`: asks a running daemon over its control socket and prints a table or JSON.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use crate::config::Config;
use crate::{ShowOpts, ShowWhat};

/// Runs one `mgre show` command.
pub fn show(what: ShowWhat) -> anyhow::Result<()> {
    let (request, opts) = match &what {
        ShowWhat::Peers(o) => ("peers", o),
        ShowWhat::Stats(o) => ("stats", o),
    };
    let socket = socket_path(opts)?;
    let v = crate::control::request(&socket, request)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match what {
        ShowWhat::Peers(_) => print_peers(&v),
        ShowWhat::Stats(_) => print_stats(&v),
    }
    Ok(())
}

fn socket_path(opts: &ShowOpts) -> anyhow::Result<PathBuf> {
    if let Some(s) = &opts.locate.socket {
        return Ok(s.clone());
    }
    let file = opts
        .locate
        .config
        .as_ref()
        .context("--config or --socket is required")?;
    Ok(Config::load(file)?.socket)
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
