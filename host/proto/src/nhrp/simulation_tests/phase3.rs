//! Deterministic simulations of DMVPN phase 3 over the same emit → parse underlay as the
//! registration simulations: hubs resolve and forward Resolution Requests (a regional hub to
//! its core hub), spokes register, get Traffic Indications, resolve, answer each other
//! directly and keep their shortcuts alive only while traffic flows.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use super::*;
use crate::wire::nhrp::{ExtensionBody, Family};

/// A hub of the phase 3 simulation: its table and, for a regional hub, the upstream NHS it
/// forwards unresolved requests to.
struct Nhs {
    server: RegistrationServer,
    upstream: Option<IpAddr>,
}

/// A spoke of the phase 3 simulation: registration client and shortcut resolver.
struct Node {
    client: RegistrationClient,
    resolver: Resolver,
    /// The address its packets arrive from (and it is reached at) on the underlay.
    public: IpAddr,
    running: bool,
}

/// One message delivered, for the assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Hop {
    at: Duration,
    from: IpAddr,
    to: IpAddr,
    op: u8,
}

struct Dmvpn {
    now: Duration,
    hubs: Vec<Nhs>,
    spokes: Vec<Node>,
    /// Messages in flight: (underlay source, underlay destination, message).
    queue: VecDeque<(IpAddr, IpAddr, NhrpRepr)>,
    hops: Vec<Hop>,
    /// Every shortcut change, with the spoke it happened at.
    shortcut_changes: Vec<(Duration, usize, ShortcutChange)>,
    /// Resolution Requests as the spokes received them.
    requests_at_spokes: Vec<(usize, NhrpRepr)>,
}

const CORE: IpAddr = HUB;
const REGIONAL: IpAddr = HUB2;

/// Resolver of spoke `n` (see [`spoke_config`]): holding time 60 s, refreshed 10 s before it
/// ends when used, idle after 25 s.
fn resolver_config(n: u8, nbma: IpAddr, prefixes: Vec<Prefix>) -> ResolverConfig {
    ResolverConfig {
        prefixes,
        holding_time: NonZeroU16::new(60).unwrap(),
        refresh_before: secs(10),
        idle_timeout: secs(25),
        first_request_id: u32::from(n) * 100_000,
        ..ResolverConfig::new(nbma, ip(203, 0, 113, n))
    }
}

impl Dmvpn {
    fn new(hubs: Vec<(ServerConfig, Option<IpAddr>)>) -> Self {
        Dmvpn {
            now: Duration::ZERO,
            hubs: hubs
                .into_iter()
                .map(|(c, upstream)| Nhs {
                    server: RegistrationServer::new(c),
                    upstream,
                })
                .collect(),
            spokes: Vec::new(),
            queue: Default::default(),
            hops: Vec::new(),
            shortcut_changes: Vec::new(),
            requests_at_spokes: Vec::new(),
        }
    }

    /// Spoke `n` with site prefix `lan`, registered with `nhs`, reached at `public`.
    fn add_spoke(&mut self, n: u8, lan: Option<&str>, nhs: IpAddr, public: IpAddr) -> usize {
        let prefixes: Vec<Prefix> = lan.map(prefix).into_iter().collect();
        let mut client = spoke_config(n, &[(nhs, 0)]);
        client.prefixes = prefixes.clone();
        if public != client.nbma_address {
            // Behind NAT: the configured address is the private one.
            client.nbma_address = ip(192, 0, 2, n);
        }
        let resolver = resolver_config(n, client.nbma_address, prefixes);
        self.spokes.push(Node {
            client: RegistrationClient::new(client).unwrap(),
            resolver: Resolver::new(resolver),
            public,
            running: true,
        });
        self.spokes.len() - 1
    }

    fn hub(&self, nbma: IpAddr) -> &RegistrationServer {
        &self
            .hubs
            .iter()
            .find(|h| h.server.config().nbma_address == nbma)
            .unwrap()
            .server
    }

    fn shortcuts(&self, spoke: usize) -> Vec<(Prefix, IpAddr)> {
        self.spokes[spoke]
            .resolver
            .shortcuts()
            .map(|s| (s.prefix, s.nbma))
            .collect()
    }

    fn removals(&self, spoke: usize) -> Vec<(u64, Prefix, ShortcutRemoval)> {
        self.shortcut_changes
            .iter()
            .filter(|(_, s, _)| *s == spoke)
            .filter_map(|(at, _, c)| match c {
                ShortcutChange::Removed { shortcut, cause } => {
                    Some((at.as_secs(), shortcut.prefix, *cause))
                }
                _ => None,
            })
            .collect()
    }

    /// The hub at `hub` hairpinned a packet from `spoke` to `dst` and tells it so.
    fn traffic_indication(&mut self, hub: IpAddr, spoke: usize, dst: Ipv4Addr) {
        let server = self.hub(hub).config().clone();
        let src = match self.spokes[spoke].resolver.config().protocol_address {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!("IPv4 simulation"),
        };
        let mut packet = vec![0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 6, 0, 0];
        packet.extend_from_slice(&src.octets());
        packet.extend_from_slice(&dst.octets());
        let ti = NhrpRepr {
            nbma: Family::Ipv4,
            protocol: Family::Ipv4,
            snap: [0; 5],
            hop_count: 1,
            src_nbma: Some(server.nbma_address),
            src_nbma_subaddress: Vec::new(),
            src_proto: Some(server.protocol_address),
            dst_proto: Some(IpAddr::V4(dst)),
            body: Body::TrafficIndication { code: 0, packet },
            // As FRR nhrpd completes every packet: with the interface's secret, if any.
            extensions: server
                .secret
                .as_deref()
                .map(auth::extension)
                .into_iter()
                .collect(),
        };
        let to = self.spokes[spoke].public;
        self.send(hub, to, ti);
        self.drain();
    }

    /// Spoke `from` starts resolving `dst` through its hub.
    fn resolve(&mut self, from: usize, nhs: IpAddr, dst: IpAddr) {
        let now = self.now;
        if let Some(o) = self.spokes[from].resolver.resolve(now, nhs, dst) {
            let public = self.spokes[from].public;
            self.send(public, o.to, o.message);
            self.drain();
        }
    }

    /// Traffic flows between spokes `a` and `b` now: both report their shortcut used (the
    /// daemon sees the peer's transmit counter grow).
    fn traffic(&mut self, a: usize, b: usize) {
        let now = self.now;
        let (pa, pb) = (self.spokes[a].public, self.spokes[b].public);
        self.spokes[a].resolver.used(now, pb);
        self.spokes[b].resolver.used(now, pa);
    }

    fn shutdown(&mut self, spoke: usize) {
        let public = self.spokes[spoke].public;
        for o in self.spokes[spoke].resolver.shutdown() {
            self.send(public, o.to, o.message);
        }
        for t in self.spokes[spoke].client.shutdown() {
            self.send(public, t.nhs, t.message);
        }
        self.spokes[spoke].running = false;
        self.drain();
    }

    /// Runs every timer up to and including `end`, then leaves the clock at `end`.
    fn run_until(&mut self, end: Duration) {
        loop {
            let next = self
                .spokes
                .iter()
                .filter(|s| s.running)
                .flat_map(|s| [s.client.poll_timeout(), s.resolver.poll_timeout()])
                .flatten()
                .chain(self.hubs.iter().filter_map(|h| h.server.poll_timeout()))
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.step();
                }
                _ => break,
            }
        }
        self.now = end;
        self.step();
    }

    fn step(&mut self) {
        let now = self.now;
        for hub in &mut self.hubs {
            let _ = hub.server.expire(now);
        }
        for i in 0..self.spokes.len() {
            if !self.spokes[i].running {
                continue;
            }
            let public = self.spokes[i].public;
            for t in self.spokes[i].client.poll(now) {
                self.send(public, t.nhs, t.message);
            }
            let (out, changes) = self.spokes[i].resolver.poll(now);
            self.record(i, changes);
            for o in out {
                self.send(public, o.to, o.message);
            }
        }
        self.drain();
    }

    fn send(&mut self, from: IpAddr, to: IpAddr, message: NhrpRepr) {
        self.queue.push_back((from, to, wire(&message)));
    }

    fn record(&mut self, spoke: usize, changes: Vec<ShortcutChange>) {
        let now = self.now;
        self.shortcut_changes
            .extend(changes.into_iter().map(|c| (now, spoke, c)));
    }

    /// Delivers everything in flight, and what that causes, in order.
    fn drain(&mut self) {
        let now = self.now;
        while let Some((from, to, msg)) = self.queue.pop_front() {
            self.hops.push(Hop {
                at: now,
                from,
                to,
                op: msg.op_type(),
            });
            if let Some(h) = self
                .hubs
                .iter()
                .position(|h| h.server.config().nbma_address == to)
            {
                self.at_hub(h, from, msg);
            } else if let Some(s) = self.spokes.iter().position(|s| s.running && s.public == to) {
                self.at_spoke(s, from, msg);
            }
        }
    }

    fn at_hub(&mut self, h: usize, from: IpAddr, msg: NhrpRepr) {
        let now = self.now;
        let hub = &mut self.hubs[h];
        let own = hub.server.config().nbma_address;
        let out = match msg.op_type() {
            3 => hub
                .server
                .handle_request(now, from, &msg)
                .reply
                .map(|r| (from, r)),
            5 => hub
                .server
                .handle_purge(now, from, &msg)
                .reply
                .map(|r| (from, r)),
            1 => match hub.server.handle_resolution_request(now, from, &msg) {
                ResolutionOutcome::Forward { to, message }
                | ResolutionOutcome::Reply { to, message }
                | ResolutionOutcome::Error { to, message } => Some((to, message)),
                ResolutionOutcome::Unresolved => match hub.upstream {
                    Some(up) => forward_resolution(&msg, &hub.server.transit(), up)
                        .ok()
                        .map(|m| (up, m)),
                    None => Some((
                        requester_address(&msg, from),
                        hub.server.negative_resolution_reply(&msg),
                    )),
                },
                ResolutionOutcome::Ignored => panic!("hub ignored {msg:?}"),
            },
            other => panic!("unexpected op {other} at a hub"),
        };
        if let Some((to, message)) = out {
            self.send(own, to, message);
        }
    }

    fn at_spoke(&mut self, s: usize, from: IpAddr, msg: NhrpRepr) {
        let now = self.now;
        let spoke = &mut self.spokes[s];
        let public = spoke.public;
        let (out, changes) = match msg.op_type() {
            4 => {
                let _ = spoke.client.handle_reply(now, from, &msg);
                (None, Vec::new())
            }
            1 => {
                self.requests_at_spokes.push((s, msg.clone()));
                spoke.resolver.handle_resolution_request(now, from, &msg)
            }
            2 => (
                None,
                spoke.resolver.handle_resolution_reply(now, from, &msg),
            ),
            5 => spoke.resolver.handle_purge_request(now, from, &msg),
            8 => (
                spoke.resolver.handle_traffic_indication(now, from, &msg),
                Vec::new(),
            ),
            7 => {
                let _ = spoke.resolver.handle_error_indication(now, from, &msg);
                (None, Vec::new())
            }
            other => panic!("unexpected op {other} at a spoke"),
        };
        self.record(s, changes);
        if let Some(o) = out {
            self.send(public, o.to, o.message);
        }
    }
}

/// One hub, spoke A (203.0.113.11) and spoke B (203.0.113.12, site 203.0.113.128/26), both
/// registered.
fn hub_and_two_spokes() -> (Dmvpn, usize, usize) {
    let mut net = Dmvpn::new(vec![(hub_config(HUB), None)]);
    let a = net.add_spoke(11, None, HUB, ip(198, 51, 100, 11));
    let b = net.add_spoke(12, Some("203.0.113.128/26"), HUB, ip(198, 51, 100, 12));
    net.run_until(secs(1));
    assert_eq!(net.hub(HUB).len(), 3);
    (net, a, b)
}

#[test]
fn phase3_a_traffic_indication_ends_in_shortcuts_at_both_spokes() {
    let (mut net, a, b) = hub_and_two_spokes();
    net.hops.clear();
    net.traffic_indication(HUB, a, Ipv4Addr::new(203, 0, 113, 130));
    let (hub, sa, sb) = (HUB, ip(198, 51, 100, 11), ip(198, 51, 100, 12));
    let path: Vec<_> = net.hops.iter().map(|h| (h.from, h.to, h.op)).collect();
    // Indication to A, A's request to the hub, forwarded to B, B's reply straight to A.
    assert_eq!(
        path,
        [(hub, sa, 8), (sa, hub, 1), (hub, sb, 1), (sb, sa, 2)]
    );
    assert_eq!(net.shortcuts(a), [(prefix("203.0.113.128/26"), sb)]);
    assert_eq!(net.shortcuts(b), [(prefix("203.0.113.11/32"), sa)]);
    // The request reached B with one hop less and the hub in its transit record.
    let (_, seen) = &net.requests_at_spokes[0];
    assert_eq!(seen.hop_count, 254);
    assert!(seen.extensions.iter().any(|e| matches!(
        &e.body,
        ExtensionBody::ForwardTransit(c) if c.len() == 1 && c[0].nbma == Some(hub)
    )));

    // More hairpinned packets to the site before the shortcut is used: no new resolution.
    net.hops.clear();
    net.traffic_indication(HUB, a, Ipv4Addr::new(203, 0, 113, 131));
    assert_eq!(net.hops.len(), 1);
    let ka = *net.spokes[a].resolver.counters();
    assert_eq!(
        (ka.indications, ka.deduplicated, ka.requests, ka.added),
        (2, 1, 1, 1)
    );
    assert_eq!(net.spokes[b].resolver.counters().answered, 1);
}

#[test]
fn phase3_used_shortcuts_are_refreshed_and_idle_ones_expire() {
    let (mut net, a, b) = hub_and_two_spokes();
    net.traffic_indication(HUB, a, Ipv4Addr::new(203, 0, 113, 130));
    // Traffic every 5 s until 100 s. Installed at 1 s for 60 s: refreshed at 51 s, 10 s
    // before it would expire, and then valid until 111 s.
    for t in (5..=100).step_by(5) {
        net.run_until(secs(t));
        net.traffic(a, b);
    }
    let refreshes: Vec<_> = net
        .hops
        .iter()
        .filter(|h| h.from == ip(198, 51, 100, 11) && h.op == 1 && h.at > secs(1))
        .map(|h| h.at.as_secs())
        .collect();
    assert_eq!(refreshes, [51]);
    assert_eq!(net.removals(a), []);
    assert_eq!(net.removals(b), []);
    assert_eq!(
        net.spokes[a].resolver.shortcuts().next().unwrap().expires,
        secs(111)
    );
    // Traffic stops: both sides drop their shortcuts 25 s after the last use.
    net.run_until(secs(125) - Duration::from_millis(1));
    assert_eq!(net.shortcuts(a).len(), 1);
    net.run_until(secs(125));
    assert_eq!(
        net.removals(a),
        [(125, prefix("203.0.113.128/26"), ShortcutRemoval::Idle)]
    );
    assert_eq!(
        net.removals(b),
        [(125, prefix("203.0.113.11/32"), ShortcutRemoval::Idle)]
    );
    // It was used after the refresh at 51 s, so it was refreshed again at 101 s; that does
    // not keep it from going idle.
    let from_a = |h: &&Hop| h.op == 1 && h.from == ip(198, 51, 100, 11);
    assert_eq!(net.hops.iter().rev().find(from_a).unwrap().at, secs(101));
    assert_eq!(net.spokes[a].resolver.counters().requests, 3);
    assert_eq!(net.spokes[a].resolver.counters().refreshed, 2);
}

#[test]
fn phase3_an_unused_shortcut_expires_at_its_holding_time_without_refresh() {
    let (mut net, a, b) = hub_and_two_spokes();
    for s in &mut net.spokes {
        s.resolver = Resolver::new(ResolverConfig {
            idle_timeout: secs(3600),
            ..s.resolver.config().clone()
        });
    }
    net.traffic_indication(HUB, a, Ipv4Addr::new(203, 0, 113, 130));
    net.run_until(secs(61));
    assert_eq!(
        net.removals(a),
        [(61, prefix("203.0.113.128/26"), ShortcutRemoval::Expired)]
    );
    assert_eq!(
        net.removals(b),
        [(61, prefix("203.0.113.11/32"), ShortcutRemoval::Expired)]
    );
    assert_eq!(net.spokes[a].resolver.counters().requests, 1);
}

#[test]
fn phase3_the_destination_spoke_shutting_down_withdraws_the_requesters_shortcut() {
    let (mut net, a, b) = hub_and_two_spokes();
    net.traffic_indication(HUB, a, Ipv4Addr::new(203, 0, 113, 130));
    net.run_until(secs(5));
    net.shutdown(b);
    assert_eq!(net.shortcuts(a), []);
    assert_eq!(
        net.removals(a),
        [(5, prefix("203.0.113.128/26"), ShortcutRemoval::Purged)]
    );
    // The hub dropped B's registrations too, so a new indication finds no owner: NAK.
    assert_eq!(net.hub(HUB).len(), 1);
    net.traffic_indication(HUB, a, Ipv4Addr::new(203, 0, 113, 130));
    let k = *net.spokes[a].resolver.counters();
    assert_eq!((k.purged, k.naks, k.last_nak), (1, 1, Some(12)));
}

#[test]
fn phase3_a_spoke_behind_nat_is_answered_at_its_public_address() {
    let mut net = Dmvpn::new(vec![(hub_config(HUB), None)]);
    let a = net.add_spoke(11, None, HUB, ip(192, 0, 2, 7));
    let b = net.add_spoke(12, Some("203.0.113.128/26"), HUB, ip(198, 51, 100, 12));
    net.run_until(secs(1));
    net.traffic_indication(HUB, a, Ipv4Addr::new(203, 0, 113, 130));
    assert_eq!(
        net.shortcuts(a),
        [(prefix("203.0.113.128/26"), ip(198, 51, 100, 12))]
    );
    // B learnt A's post-NAT address from the NAT extension the hub filled in.
    assert_eq!(
        net.shortcuts(b),
        [(prefix("203.0.113.11/32"), ip(192, 0, 2, 7))]
    );
}

#[test]
fn phase3_a_regional_hub_forwards_unresolved_requests_to_the_core_hub() {
    let mut regional = hub_config(REGIONAL);
    regional.protocol_address = ip(203, 0, 113, 2);
    let mut net = Dmvpn::new(vec![(hub_config(CORE), None), (regional, Some(CORE))]);
    let a = net.add_spoke(11, None, REGIONAL, ip(198, 51, 100, 11));
    let b = net.add_spoke(12, Some("203.0.113.128/26"), CORE, ip(198, 51, 100, 12));
    net.run_until(secs(1));
    net.hops.clear();
    net.traffic_indication(REGIONAL, a, Ipv4Addr::new(203, 0, 113, 140));
    let (sa, sb) = (ip(198, 51, 100, 11), ip(198, 51, 100, 12));
    let path: Vec<_> = net.hops.iter().map(|h| (h.from, h.to, h.op)).collect();
    assert_eq!(
        path,
        [
            (REGIONAL, sa, 8),
            (sa, REGIONAL, 1),
            (REGIONAL, CORE, 1),
            (CORE, sb, 1),
            (sb, sa, 2)
        ]
    );
    let (_, seen) = &net.requests_at_spokes[0];
    let transit: Vec<_> = seen
        .extensions
        .iter()
        .find_map(|e| match &e.body {
            ExtensionBody::ForwardTransit(c) => Some(c.iter().map(|c| c.nbma).collect()),
            _ => None,
        })
        .unwrap();
    assert_eq!(transit, [Some(REGIONAL), Some(CORE)]);
    assert_eq!(seen.hop_count, 253);
    assert_eq!(net.shortcuts(a), [(prefix("203.0.113.128/26"), sb)]);
    assert_eq!(net.shortcuts(b), [(prefix("203.0.113.11/32"), sa)]);

    // An address nobody registered: the core hub has no upstream and refuses it.
    net.resolve(a, REGIONAL, ip(203, 0, 113, 99));
    let last: Vec<_> = net
        .hops
        .iter()
        .rev()
        .take(3)
        .map(|h| (h.from, h.to, h.op))
        .collect();
    // The refusal goes straight back to the requester, not through the regional hub.
    assert_eq!(
        last,
        [(CORE, sa, 2), (REGIONAL, CORE, 1), (sa, REGIONAL, 1)]
    );
    let k = net.spokes[a].resolver.counters();
    assert_eq!((k.naks, k.last_nak), (1, Some(12)));
}

#[test]
fn phase3_with_a_shared_secret_every_hop_authenticates_and_a_stranger_is_refused() {
    let secret = b"dmvpn".to_vec();
    let mut net = Dmvpn::new(vec![(
        ServerConfig {
            secret: Some(secret.clone()),
            ..hub_config(HUB)
        },
        None,
    )]);
    let a = net.add_spoke(11, None, HUB, ip(198, 51, 100, 11));
    let b = net.add_spoke(12, Some("203.0.113.128/26"), HUB, ip(198, 51, 100, 12));
    let c = net.add_spoke(13, None, HUB, ip(198, 51, 100, 13));
    for (s, key) in [(a, &secret), (b, &secret), (c, &b"guess".to_vec())] {
        let node = &mut net.spokes[s];
        node.client = RegistrationClient::new(ClientConfig {
            secret: Some(key.clone()),
            ..node.client.config().clone()
        })
        .unwrap();
        node.resolver = Resolver::new(ResolverConfig {
            secret: Some(key.clone()),
            ..node.resolver.config().clone()
        });
    }
    net.run_until(secs(1));
    assert_eq!(net.hub(HUB).len(), 3, "A's and B's entries, not C's");
    net.traffic_indication(HUB, a, Ipv4Addr::new(203, 0, 113, 130));
    assert_eq!(
        net.shortcuts(a),
        [(prefix("203.0.113.128/26"), ip(198, 51, 100, 12))]
    );
    // C's request fails authentication at the hub: the Error Indication (code 11) that comes
    // back ends it at once, without retransmissions.
    net.hops.clear();
    net.resolve(c, HUB, ip(203, 0, 113, 130));
    let path: Vec<_> = net.hops.iter().map(|h| (h.to, h.op)).collect();
    assert_eq!(path, [(HUB, 1), (ip(198, 51, 100, 13), 7)]);
    assert_eq!(net.shortcuts(c), []);
    assert_eq!(net.spokes[c].resolver.pending().count(), 0);
    let k = net.spokes[c].resolver.counters();
    assert_eq!(
        (k.errors, k.last_error, k.retransmissions),
        (1, Some(11), 0)
    );
}
