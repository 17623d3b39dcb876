//! Deterministic simulations of hubs and spokes: every message goes through
//! `NhrpRepr::emit` and `NhrpRepr::parse`, time advances from one timer deadline to the next,
//! and an in-memory underlay delivers instantly, rewrites the source address of spokes behind
//! NAT and drops what goes to a hub that is down. Registration here, DMVPN phase 3
//! resolution and shortcuts in [`phase3`].

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;
use std::time::Duration;

use super::*;
use crate::prefix::Prefix;
use crate::wire::nhrp::{Body, NhrpRepr};

mod phase3;

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn prefix(s: &str) -> Prefix {
    s.parse().unwrap()
}

const HUB: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const HUB2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));

fn hub_config(nbma: IpAddr) -> ServerConfig {
    ServerConfig {
        protocol_address: ip(203, 0, 113, 1),
        nbma_address: nbma,
        allowed_nbma: Vec::new(),
        secret: None,
        max_holding_time: NonZeroU16::new(600).unwrap(),
        max_entries: 1000,
    }
}

/// Spoke `n`: overlay 203.0.113.n, NBMA 198.51.100.n, holding time 30 s, the given servers.
fn spoke_config(n: u8, nhs: &[(IpAddr, u8)]) -> ClientConfig {
    ClientConfig {
        holding_time: NonZeroU16::new(30).unwrap(),
        first_request_id: u32::from(n) * 1000,
        ..ClientConfig::new(
            ip(198, 51, 100, n),
            ip(203, 0, 113, n),
            nhs.iter()
                .map(|&(nbma, priority)| NhsConfig {
                    nbma,
                    protocol: Some(ip(203, 0, 113, 1)),
                    priority,
                })
                .collect(),
        )
    }
}

struct Hub {
    server: RegistrationServer,
    up: bool,
}

struct Spoke {
    client: RegistrationClient,
    /// The address its packets arrive from at the hubs (differs from its NBMA behind NAT).
    public: IpAddr,
    running: bool,
}

/// One message on the wire, for the assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sent {
    at: Duration,
    spoke: usize,
    nhs: IpAddr,
    op: u8,
    request_id: u32,
}

struct Net {
    now: Duration,
    hubs: Vec<Hub>,
    spokes: Vec<Spoke>,
    sent: Vec<Sent>,
    /// (spoke, CIE codes) of every reply delivered.
    replies: Vec<(usize, Vec<u8>)>,
    changes: Vec<Change>,
}

impl Net {
    fn new(hubs: Vec<ServerConfig>) -> Self {
        Net {
            now: Duration::ZERO,
            hubs: hubs
                .into_iter()
                .map(|c| Hub {
                    server: RegistrationServer::new(c),
                    up: true,
                })
                .collect(),
            spokes: Vec::new(),
            sent: Vec::new(),
            replies: Vec::new(),
            changes: Vec::new(),
        }
    }

    fn add_spoke(&mut self, config: ClientConfig, public: IpAddr) -> usize {
        self.spokes.push(Spoke {
            client: RegistrationClient::new(config).unwrap(),
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

    /// Runs every timer up to and including `end`, then leaves the clock at `end`.
    fn run_until(&mut self, end: Duration) {
        loop {
            let next = self
                .spokes
                .iter()
                .filter(|s| s.running)
                .filter_map(|s| s.client.poll_timeout())
                .chain(
                    self.hubs
                        .iter()
                        .filter(|h| h.up)
                        .filter_map(|h| h.server.poll_timeout()),
                )
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
        for hub in self.hubs.iter_mut().filter(|h| h.up) {
            let gone = hub.server.expire(now);
            self.changes
                .extend(gone.into_iter().map(|registration| Change::Removed {
                    registration,
                    cause: RemovalCause::Expired,
                }));
        }
        for i in 0..self.spokes.len() {
            if self.spokes[i].running {
                let out = self.spokes[i].client.poll(now);
                self.deliver(i, out);
            }
        }
    }

    fn shutdown(&mut self, spoke: usize) {
        let out = self.spokes[spoke].client.shutdown();
        self.deliver(spoke, out);
        self.spokes[spoke].running = false;
    }

    fn deliver(&mut self, spoke: usize, out: Vec<Transmit>) {
        let now = self.now;
        for t in out {
            let msg = wire(&t.message);
            let Body::Entries { request_id, .. } = msg.body else {
                panic!("clients send entries")
            };
            self.sent.push(Sent {
                at: now,
                spoke,
                nhs: t.nhs,
                op: msg.op_type(),
                request_id,
            });
            let public = self.spokes[spoke].public;
            let Some(hub) = self
                .hubs
                .iter_mut()
                .find(|h| h.up && h.server.config().nbma_address == t.nhs)
            else {
                continue;
            };
            let outcome = match msg.op_type() {
                3 => hub.server.handle_request(now, public, &msg),
                5 => hub.server.handle_purge(now, public, &msg),
                other => panic!("unexpected op {other}"),
            };
            self.changes.extend(outcome.changes);
            if let Some(reply) = outcome.reply {
                let reply = wire(&reply);
                if let Body::Entries { cies, .. } = &reply.body {
                    self.replies
                        .push((spoke, cies.iter().map(|c| c.code).collect()));
                }
                let _ = self.spokes[spoke].client.handle_reply(now, t.nhs, &reply);
            }
        }
    }
}

/// The message as the peer sees it after the wire.
fn wire(repr: &NhrpRepr) -> NhrpRepr {
    let mut buf = Vec::new();
    repr.emit(&mut buf).expect("emittable");
    NhrpRepr::parse(&buf).expect("parses")
}

fn three_spokes() -> Net {
    let mut net = Net::new(vec![hub_config(HUB)]);
    for n in 11..=13 {
        let mut config = spoke_config(n, &[(HUB, 0)]);
        if n == 13 {
            config.prefixes = vec![prefix("203.0.113.64/26")];
        }
        net.add_spoke(config, ip(198, 51, 100, n));
    }
    net
}

#[test]
fn three_spokes_register_and_refreshes_keep_them_for_many_holding_times() {
    let mut net = three_spokes();
    net.run_until(secs(0));
    let hub = net.hub(HUB);
    let listed: Vec<_> = hub
        .entries()
        .map(|r| (r.prefix, r.nbma, r.expires))
        .collect();
    assert_eq!(
        listed,
        [
            (prefix("203.0.113.11/32"), ip(198, 51, 100, 11), secs(30)),
            (prefix("203.0.113.12/32"), ip(198, 51, 100, 12), secs(30)),
            (prefix("203.0.113.13/32"), ip(198, 51, 100, 13), secs(30)),
            (prefix("203.0.113.64/26"), ip(198, 51, 100, 13), secs(30)),
        ]
    );
    assert!(net.spokes.iter().all(|s| s.client.active() == Some(HUB)));

    // Five holding times: refreshes every 10 s, nothing ever expires.
    net.run_until(secs(150));
    let hub = net.hub(HUB);
    assert_eq!(hub.len(), 4);
    assert!(hub.entries().all(|r| r.expires == secs(180)));
    let c = *hub.counters();
    assert_eq!(
        (c.requests, c.added, c.refreshed, c.expired),
        (48, 4, 60, 0)
    );
    for (i, s) in net.spokes.iter().enumerate() {
        let times: Vec<u64> = net
            .sent
            .iter()
            .filter(|m| m.spoke == i)
            .map(|m| m.at.as_secs())
            .collect();
        assert_eq!(times, (0..=150).step_by(10).collect::<Vec<_>>());
        let k = s.client.statuses().next().unwrap().counters;
        assert_eq!(
            (k.requests, k.retransmissions, k.registrations),
            (16, 0, 16)
        );
    }
    assert!(
        net.replies
            .iter()
            .all(|(_, codes)| codes.iter().all(|&c| c == 0))
    );
}

#[test]
fn a_spoke_that_stops_expires_one_holding_time_after_its_last_refresh() {
    let mut net = three_spokes();
    net.run_until(secs(35));
    net.spokes[1].running = false; // crashes after its refresh at 30 s
    net.changes.clear();
    net.run_until(secs(60) - Duration::from_millis(1));
    assert!(net.hub(HUB).entry(&prefix("203.0.113.12/32")).is_some());
    net.run_until(secs(60));
    assert_eq!(net.hub(HUB).entry(&prefix("203.0.113.12/32")), None);
    assert_eq!(net.hub(HUB).len(), 3);
    let removed: Vec<_> = net
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Removed {
                registration,
                cause,
            } => Some((registration.prefix, *cause)),
            _ => None,
        })
        .collect();
    assert_eq!(
        removed,
        [(prefix("203.0.113.12/32"), RemovalCause::Expired)]
    );
    assert_eq!(net.hub(HUB).counters().expired, 1);
    net.run_until(secs(200));
    assert_eq!(net.hub(HUB).len(), 3);
}

#[test]
fn a_spoke_behind_nat_is_recorded_with_its_public_address_and_learns_it() {
    let mut net = Net::new(vec![hub_config(HUB)]);
    let mut config = spoke_config(11, &[(HUB, 0)]);
    config.nbma_address = ip(192, 0, 2, 11);
    let natted = net.add_spoke(config, ip(192, 0, 2, 7));
    let direct = net.add_spoke(spoke_config(12, &[(HUB, 0)]), ip(198, 51, 100, 12));
    net.run_until(secs(25));
    let hub = net.hub(HUB);
    let entry = hub.entry(&prefix("203.0.113.11/32")).unwrap();
    assert_eq!(
        (entry.nbma, entry.nat_nbma),
        (ip(192, 0, 2, 11), Some(ip(192, 0, 2, 7)))
    );
    assert_eq!(
        hub.entry(&prefix("203.0.113.12/32")).unwrap().nat_nbma,
        None
    );
    // Registrations at 0, 10 and 20 s, each seen behind NAT.
    assert_eq!(hub.counters().nat_detected, 3);
    let status = |i: usize| net.spokes[i].client.statuses().next().unwrap();
    assert_eq!(status(natted).nat_nbma, Some(ip(192, 0, 2, 7)));
    assert_eq!(status(direct).nat_nbma, None);
}

#[test]
fn shutdown_purges_the_entries_at_once() {
    let mut net = three_spokes();
    net.run_until(secs(12));
    net.changes.clear();
    net.shutdown(2);
    let purge = net.sent.last().unwrap();
    assert_eq!((purge.op, purge.at, purge.nhs), (5, secs(12), HUB));
    let hub = net.hub(HUB);
    assert_eq!(hub.len(), 2);
    assert_eq!(hub.entry(&prefix("203.0.113.13/32")), None);
    assert_eq!(hub.entry(&prefix("203.0.113.64/26")), None);
    assert_eq!(hub.counters().purged, 2);
    assert!(net.changes.iter().all(|c| matches!(
        c,
        Change::Removed {
            cause: RemovalCause::Purged,
            ..
        }
    )));
    assert_eq!(net.changes.len(), 2);
    // Replies to the registrations at 0 and 10 s only: the purge asked for none.
    assert_eq!(net.replies.iter().filter(|(s, _)| *s == 2).count(), 2);
}

#[test]
fn naks_for_a_disallowed_underlay_address_and_a_wrong_secret() {
    let mut net = Net::new(vec![ServerConfig {
        allowed_nbma: vec![prefix("198.51.100.0/24")],
        secret: Some(b"s3cret".to_vec()),
        ..hub_config(HUB)
    }]);
    let with_secret = |n, secret: &[u8]| ClientConfig {
        secret: Some(secret.to_vec()),
        ..spoke_config(n, &[(HUB, 0)])
    };
    let good = net.add_spoke(with_secret(11, b"s3cret"), ip(198, 51, 100, 11));
    let outsider = net.add_spoke(
        ClientConfig {
            nbma_address: ip(192, 0, 2, 12),
            ..with_secret(12, b"s3cret")
        },
        ip(192, 0, 2, 12),
    );
    let wrong = net.add_spoke(with_secret(13, b"guess"), ip(198, 51, 100, 13));
    net.run_until(secs(40));

    let hub = net.hub(HUB);
    let registered: Vec<_> = hub.entries().map(|r| r.prefix).collect();
    assert_eq!(registered, [prefix("203.0.113.11/32")]);
    let codes = |spoke| -> Vec<Vec<u8>> {
        net.replies
            .iter()
            .filter(|(s, _)| *s == spoke)
            .map(|(_, c)| c.clone())
            .collect()
    };
    // Both refused spokes send at 0, 1, 3, 7, 15 and 31 s: six NAKs each, code 4.
    assert_eq!(
        codes(outsider),
        vec![vec![code::ADMINISTRATIVELY_PROHIBITED]; 6]
    );
    assert_eq!(codes(wrong), vec![vec![4]; 6]);
    assert_eq!(codes(good), vec![vec![0]; 5]);
    let c = hub.counters();
    assert_eq!((c.nak_prohibited_nbma, c.nak_authentication), (6, 6));
    let times = |spoke| -> Vec<u64> {
        net.sent
            .iter()
            .filter(|m| m.spoke == spoke)
            .map(|m| m.at.as_secs())
            .collect()
    };
    assert_eq!(times(outsider), [0, 1, 3, 7, 15, 31]);
    assert_eq!(times(wrong), [0, 1, 3, 7, 15, 31]);
    // The outsider sees the NAKs; the spoke with the wrong secret cannot trust the hub's
    // replies (they carry the hub's secret) and keeps retransmitting the same request.
    let status = |i: usize| net.spokes[i].client.statuses().next().unwrap();
    let k = status(outsider).counters;
    assert_eq!((k.naks, k.last_nak, k.requests), (6, Some(4), 6));
    let k = status(wrong).counters;
    assert_eq!(
        (k.naks, k.ignored_replies, k.requests, k.retransmissions),
        (0, 6, 1, 5)
    );
    assert_eq!(status(good).counters.registrations, 5);
}

#[test]
fn a_spoke_fails_over_to_the_secondary_hub_and_returns_to_the_primary() {
    let mut net = Net::new(vec![hub_config(HUB), hub_config(HUB2)]);
    let mut config = spoke_config(11, &[(HUB2, 20), (HUB, 10)]);
    config.retry_max = secs(8);
    let spoke = net.add_spoke(config, ip(198, 51, 100, 11));
    net.run_until(secs(0));
    assert_eq!(net.spokes[spoke].client.active(), Some(HUB));
    assert_eq!(net.hub(HUB2).len(), 1);

    // The primary dies after the refresh at 10 s. The next refresh at 20 s goes unanswered:
    // sent at 20, retransmitted at 21, 23 and 27, given up at 35 (budget 1 + 2 + 4 + 8 s).
    net.run_until(secs(12));
    net.hubs[0].up = false;
    net.run_until(secs(35) - Duration::from_millis(1));
    assert_eq!(net.spokes[spoke].client.active(), Some(HUB));
    net.run_until(secs(35));
    assert_eq!(net.spokes[spoke].client.active(), Some(HUB2));

    // The primary restarts with an empty table at 50 s; the retransmissions continue every
    // 8 s (the cap): 43, 51. The one at 51 s registers and the spoke returns.
    net.run_until(secs(50));
    net.hubs[0] = Hub {
        server: RegistrationServer::new(hub_config(HUB)),
        up: true,
    };
    net.run_until(secs(51) - Duration::from_millis(1));
    assert_eq!(net.spokes[spoke].client.active(), Some(HUB2));
    net.run_until(secs(51));
    assert_eq!(net.spokes[spoke].client.active(), Some(HUB));
    assert!(net.hub(HUB).entry(&prefix("203.0.113.11/32")).is_some());

    let to_primary: Vec<_> = net
        .sent
        .iter()
        .filter(|m| m.nhs == HUB && m.at >= secs(20))
        .map(|m| (m.at.as_secs(), m.request_id))
        .collect();
    let id = to_primary[0].1;
    assert_eq!(to_primary, [20, 21, 23, 27, 35, 43, 51].map(|t| (t, id)));
    // The secondary was refreshed all along.
    assert!(
        net.hub(HUB2)
            .entry(&prefix("203.0.113.11/32"))
            .unwrap()
            .expires
            > secs(51)
    );
    let primary = net.spokes[spoke]
        .client
        .statuses()
        .find(|s| s.nbma == HUB)
        .unwrap();
    assert!(primary.active);
    assert_eq!(
        (primary.counters.lost, primary.counters.registrations),
        (1, 3)
    );
}

#[test]
fn both_hubs_down_leaves_no_active_server_until_one_answers() {
    let mut net = Net::new(vec![hub_config(HUB), hub_config(HUB2)]);
    let spoke = net.add_spoke(
        spoke_config(11, &[(HUB, 0), (HUB2, 1)]),
        ip(198, 51, 100, 11),
    );
    net.run_until(secs(5));
    net.hubs[0].up = false;
    net.hubs[1].up = false;
    net.run_until(secs(25) - Duration::from_millis(1));
    assert!(net.spokes[spoke].client.active().is_some());
    net.run_until(secs(25));
    assert_eq!(net.spokes[spoke].client.active(), None);
    net.hubs[1].up = true;
    // Next retransmissions: 41 s (25 + 16) to both; the secondary answers.
    net.run_until(secs(41));
    assert_eq!(net.spokes[spoke].client.active(), Some(HUB2));
}
