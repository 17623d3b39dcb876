//! A masquerading NAT router in front of a spoke: its own namespace between the spoke's
//! underlay veth (a private /30) and the underlay bridge, with an nftables masquerade rule
//! on the public side.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};

use crate::names::Namer;
use crate::netns::Netns;

/// Where a spoke's underlay is plugged in.
pub(super) struct Wiring<'a> {
    pub(super) names: &'a Namer,
    /// The site's role tag in namespace names (`s1`, …).
    pub(super) role: &'a str,
    /// The site's device index.
    pub(super) index: usize,
    /// The spoke's router namespace.
    pub(super) router: &'a Netns,
    /// The namespace holding the underlay bridge.
    pub(super) underlay: &'a Netns,
    pub(super) bridge: &'a str,
    /// The router's underlay interface (created here).
    pub(super) underlay_iface: &'a str,
    /// The bridge port for the NAT router's public side (created here).
    pub(super) port: &'a str,
}

/// Builds the NAT router of spoke `k`, whose underlay address is `nbma`, and points the
/// spoke's default route at it.
pub(super) fn router(w: &Wiring<'_>, k: usize, nbma: Ipv4Addr) -> Result<Netns> {
    let Wiring {
        names,
        role,
        index,
        router,
        underlay,
        bridge,
        underlay_iface,
        port,
    } = *w;
    let nat = Netns::new(names.netns(&format!("{role}n")))?;
    nat.sysctl(&[("net.ipv4.ip_forward", "1")])?;
    let inside = names.device('i', index);
    let outside = names.device('o', index);
    router.ip(&format!(
        "link add {underlay_iface} type veth peer name {inside} netns {}",
        nat.name()
    ))?;
    nat.ip(&format!(
        "link add {outside} type veth peer name {port} netns {}",
        underlay.name()
    ))?;
    underlay.ip(&format!("link set {port} master {bridge} up"))?;
    router.ip(&format!("addr add {}/30 dev {underlay_iface}", nbma))?;
    router.ip(&format!("link set {underlay_iface} up"))?;
    nat.ip(&format!("addr add {}/30 dev {inside}", nat_gateway(k)))?;
    nat.ip(&format!("addr add {}/24 dev {outside}", nat_public_nbma(k)))?;
    nat.ip(&format!("link set {inside} up"))?;
    nat.ip(&format!("link set {outside} up"))?;
    router.ip(&format!("route add default via {}", nat_gateway(k)))?;
    for rule in [
        "add table ip mgrenat".to_owned(),
        "add chain ip mgrenat post { type nat hook postrouting priority 100 ; }".to_owned(),
        format!("add rule ip mgrenat post oifname {outside} masquerade"),
    ] {
        let args: Vec<&str> = std::iter::once("nft")
            .chain(rule.split_whitespace())
            .collect();
        let out = nat
            .exec(&args)
            .context("running nft (is nftables installed?)")?;
        if !out.status.success() {
            bail!(
                "nft {rule}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(nat)
}

/// The private underlay address of spoke `k` behind NAT (on its /30 to the NAT router).
pub fn nat_private_nbma(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 101 + 4 * (k as u8 - 1))
}

/// The NAT router's address on spoke `k`'s private /30 (the spoke's default gateway).
pub fn nat_gateway(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 102 + 4 * (k as u8 - 1))
}

/// The public (post-NAT) underlay address of spoke `k`'s NAT router, on the bridge.
pub fn nat_public_nbma(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 20 + k as u8)
}
