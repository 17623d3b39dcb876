//! End-to-end test harness for `mgre`: builds the reference topology of
//! `docs/contract.md` out of network namespaces, runs the real daemon in them, and drives
//! and observes traffic through it.
//!
//! The pieces:
//! - [`Netns`]: one namespace, deleted on drop; commands run in it with [`Netns::exec`] and
//!   [`Netns::ip`], Rust code with [`Netns::run`] / [`Netns::spawn`] (a `setns(2)` thread,
//!   so sockets opened there belong to the namespace).
//! - [`Topology`] (from [`Topology::builder`]): underlay bridge, hub, spokes, LAN hosts,
//!   per-site configs; [`Topology::start`] starts a [`Daemon`] per site.
//! - [`Daemon`]: one `mgre run` process; [`Daemon::stats`] and [`Daemon::peers`] read
//!   `mgre show … --json`.
//! - Traffic: [`ping`], [`tcp_transfer`], [`send_raw_gre`], [`send_udp`], [`syn_mss`];
//!   an interface capture in both directions, [`PacketSocket`], and one saved as a pcap
//!   file for tshark, [`Capture`];
//!   packet builders and parsers in [`packet`]; a sequence-numbered constant-rate UDP
//!   stream, [`udp_stream`]; TOS/DSCP observers on the tunnel or a LAN, [`observe`].
//! - Plugins: [`plugin_wasm`] and [`fixture_wasm`] build the example plugins and the hostile
//!   fixture guests (once per process, serialised across processes); [`PluginEntry`] is a
//!   site's `[[plugin]]` config ([`TopologyBuilder::plugin`]); [`Daemon::plugins`] reads
//!   `mgre show plugins --json` and [`plugin_status`] picks one plugin out of it.
//! - Multicast routing in a router namespace: [`Smcroute`] runs `smcrouted` there.
//!
//! What it must not do: touch the host's own namespace (every device is created inside a
//! namespace the harness made, via `ip -n`), use addresses outside the documentation ranges
//! (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32), loop without a bound in
//! count and time, or signal any process but its own children, by PID. Names carry the PID
//! and a per-test tag ([`Namer`]) so tests and processes can run side by side, and every
//! guard cleans up on drop, also while a failing test unwinds.
//!
//! The `mgre` binary comes from `$MGRE_BIN` or `<workspace>/target/release/mgre`
//! ([`mgre_bin`]); the harness needs root, `ip` (iproute2), `sysctl` and `ping`.

mod cmd;
mod daemon;
mod mroute;
mod names;
mod netns;
mod observe;
pub mod packet;
mod pcap;
mod plugins;
mod stream;
mod topology;
mod traffic;
mod wasm;

pub use cmd::{run, run_ok, wait_until};
pub use daemon::{
    Daemon, PLUGIN_POLL, READY_TIMEOUT, STOP_TIMEOUT, counter, mgre_bin, mgre_check, scrape,
};
pub use mroute::{MROUTE_READY_TIMEOUT, Smcroute};
pub use names::{MAX_NETNS_NAME, MAX_TAG, Namer, TempDir};
pub use netns::{Netns, join, netns_list};
pub use observe::{GRE_UDP_PORT, MAX_CAPTURED, Observation, SETTLE, Tap, observe};
pub use pcap::Capture;
pub use plugins::{
    Failure, PluginEntry, plugin_counter, plugin_number, plugin_status, plugins_section,
};
pub use stream::{DELIVERY_SETTLE, DRAIN_TIMEOUT, StreamReport, udp_deliveries, udp_stream};
pub use topology::{
    Encap, LAN_V4_LEN, LAN_V6_LEN, MAX_SPOKES, METRICS_ADDR, NhrpOptions, SPOKE_ROUTES, Site,
    SiteAddrs, SiteId, SpokeOptions, Topology, TopologyBuilder, nat_gateway, nat_private_nbma,
    nat_public_nbma,
};
pub use traffic::{
    CAPTURE_TIMEOUT, Digest, PacketSocket, TRANSFER_DEADLINE, multicast_received,
    multicast_receiver, multicast_send, multicast_send_hops, ping, send_raw_gre, send_udp, syn_mss,
    tcp_transfer,
};
pub use wasm::{
    FIXTURES, PLUGIN_PACKAGES, fixture_wasm, plugin_wasm, target_dir, with_custom_section,
    workspace_root,
};

#[cfg(test)]
mod tests {
    //! Self-tests of the harness; they need root but not the daemon.

    use std::net::IpAddr;
    use std::panic::{self, AssertUnwindSafe};
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn harness_builds_reachable_topology_and_cleans_up() {
        let topo = Topology::builder("hself")
            .spokes(2)
            .build()
            .expect("building");
        let names = topo.netns_names();
        let dir = topo.dir().to_owned();
        assert_eq!(names.len(), 1 + 3 * 2);
        assert!(names.iter().all(|name| name.len() <= MAX_NETNS_NAME));
        let listed = netns_list().expect("ip netns list");
        assert!(
            names.iter().all(|name| listed.contains(name)),
            "{names:?} not in {listed:?}"
        );

        let (hub, s1, s2) = (topo.hub(), topo.spoke(1), topo.spoke(2));
        // Underlay through the bridge, both directions.
        assert!(
            ping(&s1.router, hub.addrs.nbma.into(), 2),
            "spoke1 -> hub underlay"
        );
        assert!(
            ping(&hub.router, s2.addrs.nbma.into(), 2),
            "hub -> spoke2 underlay"
        );
        assert!(
            ping(&s1.router, s2.addrs.nbma.into(), 2),
            "spoke1 -> spoke2 underlay"
        );
        // Each LAN host reaches its router, v4 and v6.
        for site in topo.sites() {
            for addr in [
                IpAddr::from(site.addrs.router_v4),
                site.addrs.router_v6.into(),
            ] {
                assert!(
                    ping(&site.host, addr, 2),
                    "{} host -> router {addr}",
                    site.id.peer_name()
                );
            }
        }
        // ip_forward is on in routers: a LAN host reaches its router's underlay address.
        assert!(
            ping(&s1.host, s1.addrs.nbma.into(), 1),
            "spoke1 host -> its router's nbma"
        );
        // No tunnel without the daemon: LAN to LAN must not work yet.
        assert!(
            !ping(&s1.host, s2.addrs.host_v4.into(), 1),
            "LAN-to-LAN without mgre?"
        );
        // Configs are written.
        for site in topo.sites() {
            let text = std::fs::read_to_string(&site.config).expect("config written");
            assert!(text.starts_with("version = 1\n"), "{text}");
        }
        let hub_config = std::fs::read_to_string(&hub.config).expect("hub config");
        assert!(
            hub_config.contains("\"203.0.113.64/26\", \"2001:db8:2::/64\""),
            "{hub_config}"
        );

        drop(topo);
        let listed = netns_list().expect("ip netns list");
        assert!(
            names.iter().all(|name| !listed.contains(name)),
            "left behind: {listed:?}"
        );
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn harness_cleans_up_when_a_test_panics() {
        let names = Mutex::new(Vec::new());
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let topo = Topology::builder("hpanic")
                .spokes(1)
                .build()
                .expect("building");
            names.lock().unwrap().extend(topo.netns_names());
            panic!("deliberate panic with a live topology");
        }));
        assert!(outcome.is_err());
        let names = names.into_inner().unwrap();
        assert_eq!(names.len(), 5);
        let listed = netns_list().expect("ip netns list");
        assert!(
            names.iter().all(|name| !listed.contains(name)),
            "left behind: {listed:?}"
        );
    }

    #[test]
    fn harness_traffic_helpers_work_on_a_plain_lan() {
        let topo = Topology::builder("htraf")
            .spokes(1)
            .build()
            .expect("building");
        let s1 = topo.spoke(1);
        for addr in [IpAddr::from(s1.addrs.router_v4), s1.addrs.router_v6.into()] {
            let (sent, received) =
                tcp_transfer(&s1.host, &s1.router, addr, 1_000_003).expect("transfer");
            assert_eq!(sent, received, "digest over {addr}");
        }
        // Nothing clamps on a plain 1500-byte veth: 1500 - 40 and 1500 - 60.
        let v4 = syn_mss(
            &s1.host,
            &s1.router,
            &s1.lan_iface,
            s1.addrs.router_v4.into(),
        );
        assert_eq!(v4.expect("v4 SYN"), 1460);
        let v6 = syn_mss(
            &s1.host,
            &s1.router,
            &s1.lan_iface,
            s1.addrs.router_v6.into(),
        );
        assert_eq!(v6.expect("v6 SYN"), 1440);
    }

    #[test]
    fn harness_injects_raw_gre_and_udp() {
        use std::io::Read;
        use std::net::UdpSocket;
        use std::time::Duration;

        use socket2::{Domain, Protocol, Socket, Type};

        let topo = Topology::builder("hinj")
            .spokes(1)
            .build()
            .expect("building");
        let (hub, s1) = (topo.hub(), topo.spoke(1));
        let gre = vec![0x20, 0x00, 0x08, 0x00, 0, 0, 0, 42, 0x45];
        let udp = vec![0x00, 0x00];
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let receiver = hub.router.spawn(scope, move || {
                let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(47)))?;
                raw.set_read_timeout(Some(Duration::from_secs(5)))?;
                let udp = UdpSocket::bind(("192.0.2.1", 4754))?;
                udp.set_read_timeout(Some(Duration::from_secs(5)))?;
                ready_tx.send(())?;
                let mut buf = [0u8; 256];
                let n = (&raw).read(&mut buf)?;
                let header = usize::from(buf[0] & 0x0f) * 4;
                let gre = buf[header..n].to_vec();
                let (n, from) = udp.recv_from(&mut buf)?;
                Ok((gre, buf[..n].to_vec(), from.ip()))
            });
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("receiver ready");
            send_raw_gre(
                &s1.router,
                hub.addrs.nbma.into(),
                std::slice::from_ref(&gre),
            )
            .expect("raw send");
            send_udp(
                &s1.router,
                (hub.addrs.nbma, 4754).into(),
                std::slice::from_ref(&udp),
            )
            .expect("udp send");
            let (got_gre, got_udp, from) = join(receiver).expect("receiver");
            assert_eq!(got_gre, gre);
            assert_eq!(got_udp, udp);
            assert_eq!(from, IpAddr::from(s1.addrs.nbma));
        });
    }

    #[test]
    fn harness_netns_threads_see_their_namespace() {
        let ns = Netns::new(Namer::new("hthr").netns("x")).expect("netns");
        ns.ip("addr add 192.0.2.250/32 dev lo").expect("address");
        let bound = ns.run(|| Ok(std::net::UdpSocket::bind(("192.0.2.250", 0)).is_ok()));
        assert!(
            bound.expect("thread"),
            "address not visible from the setns thread"
        );
        // ...and the calling thread is still in its own namespace.
        assert!(std::net::UdpSocket::bind(("192.0.2.250", 0)).is_err());
    }

    #[test]
    fn harness_renders_direct_peers_and_plugin_sections() {
        let spec = Topology::builder("hrend")
            .spokes(3)
            .direct(1, 2)
            .plugin(
                SiteId::Spoke(1),
                PluginEntry::new("policy", "spoke_policy.wasm").config("default = \"allow\""),
            )
            .site_toml(SiteId::Spoke(1), "# extra");
        let sock = std::path::Path::new("/nonexistent/s.sock");
        let s1 = spec.render_config(SiteId::Spoke(1), sock, "t");
        let s2 = spec.render_config(SiteId::Spoke(2), sock, "t");
        let s3 = spec.render_config(SiteId::Spoke(3), sock, "t");
        let hub = spec.render_config(SiteId::Hub, sock, "t");
        assert!(
            s1.contains("name = \"spoke2\"\nnbma = \"192.0.2.12\""),
            "{s1}"
        );
        assert!(
            s2.contains("name = \"spoke1\"\nnbma = \"192.0.2.11\""),
            "{s2}"
        );
        assert!(!s3.contains("name = \"spoke1\""), "{s3}");
        assert!(
            s1.contains("[plugins]\ndir = \"spoke1-plugins\"\n\n[[plugin]]\nname = \"policy\""),
            "{s1}"
        );
        assert!(s1.ends_with("default = \"allow\"\n\n# extra\n"), "{s1}");
        assert!(!s2.contains("[plugins]") && !hub.contains("[plugins]"));
    }

    #[test]
    fn harness_names_are_short_and_distinct() {
        let (a, b) = (Namer::new("abcdef"), Namer::new("abcdef"));
        assert_ne!(a.netns("s3l"), b.netns("s3l"));
        assert_ne!(a.device('t', 3), b.device('t', 3));
        assert!(a.netns("hubl").len() <= MAX_NETNS_NAME);
        assert!(a.device('t', 3).len() <= 15);
    }

    #[test]
    fn harness_addresses_follow_the_contract() {
        let s1 = SiteAddrs::of(SiteId::Spoke(1));
        assert_eq!(s1.nbma.to_string(), "192.0.2.11");
        assert_eq!(s1.tunnel_v6.to_string(), "2001:db8:100::11");
        assert_eq!(
            s1.map(),
            [
                "198.51.100.11/32",
                "2001:db8:100::11/128",
                "203.0.113.0/26",
                "2001:db8:1::/64"
            ]
        );
        let s3 = SiteAddrs::of(SiteId::Spoke(3));
        assert_eq!(
            (s3.router_v4.to_string(), s3.host_v4.to_string()),
            ("203.0.113.129".into(), "203.0.113.130".into())
        );
        let hub = SiteAddrs::of(SiteId::Hub);
        assert_eq!(
            hub.map()[2..],
            ["203.0.113.192/26".to_owned(), "2001:db8:ff::/64".to_owned()]
        );
        assert_eq!(hub.host_v6.to_string(), "2001:db8:ff::2");
    }
}
