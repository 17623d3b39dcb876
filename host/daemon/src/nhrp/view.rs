//! What `mgre show nhrp`, `mgre show nhs` and the metrics scrape read from the NHRP state:
//! the cache (static and registered entries), the NHS registrations, and counters.

use mgre_proto::Dataplane;
use mgre_proto::nhrp::{NhsState, ServerCounters, ShortcutOrigin};
use serde::Serialize;
use serde_json::{Value, json};

use super::{NhrpState, Node};

/// One row of `mgre show nhrp`.
#[derive(Debug, Serialize)]
pub struct CacheRow {
    /// Overlay prefix.
    pub protocol: String,
    /// Underlay address the owner claims (its own).
    pub nbma: String,
    /// Underlay address packets go to (differs behind NAT).
    pub underlay: String,
    /// `static` (configured), `dynamic` (registered with this hub), `shortcut` (resolved
    /// directly with another spoke).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Seconds until it expires unless refreshed; `None` for static entries.
    pub expires_in: Option<u64>,
    /// Holding time granted, seconds.
    pub holdtime: Option<u16>,
    /// `unique`, `nat`, `nhs`; for shortcuts `resolved` (this spoke asked) or `answered`
    /// (the other spoke asked).
    pub flags: Vec<&'static str>,
    /// The dataplane peer it points at.
    pub peer: String,
    /// QoS group an admission policy gave the spoke.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos_group: Option<String>,
}

/// One row of `mgre show nhs`.
#[derive(Debug, Serialize)]
pub struct NhsRow {
    /// Overlay family of the registration (`ipv4`/`ipv6`).
    pub family: &'static str,
    /// The server's underlay address.
    pub nbma: String,
    /// Its priority (lower is preferred).
    pub priority: u8,
    /// `registered`, `registering` or `idle`.
    pub state: &'static str,
    /// Whether it is the one traffic defaults to.
    pub active: bool,
    /// Seconds until the registration lapses unless refreshed.
    pub expires_in: Option<u64>,
    /// This node's underlay address as the server sees it, when NAT changes it.
    pub nat_nbma: Option<String>,
    /// Requests with a new ID.
    pub requests: u64,
    /// Retransmissions.
    pub retransmissions: u64,
    /// Successful replies.
    pub registrations: u64,
    /// Refusals.
    pub naks: u64,
    /// Code of the last refusal.
    pub last_nak: Option<u8>,
    /// Registrations lost to an unanswering server.
    pub lost: u64,
    /// Replies ignored (unexpected request ID, failed authentication, …).
    pub ignored: u64,
}

/// `mgre show nhrp` as JSON: role, cache rows, counters.
pub fn cache(st: &NhrpState, dp: &Dataplane, static_peers: usize) -> Value {
    let peers = dp.peers();
    let name = |id: u32| {
        peers
            .get(id as usize)
            .map_or(String::new(), |p| p.name.clone())
    };
    let mut rows: Vec<CacheRow> = dp
        .config()
        .map
        .iter()
        .filter(|(_, id)| (*id as usize) < static_peers)
        .map(|(prefix, id)| {
            let p = &peers[*id as usize];
            let nhs = st.node.upstream().is_nhs_peer(*id);
            CacheRow {
                protocol: prefix.to_string(),
                nbma: p.nbma.to_string(),
                underlay: p.nbma.to_string(),
                kind: "static",
                expires_in: None,
                holdtime: None,
                flags: if nhs { vec!["nhs"] } else { Vec::new() },
                peer: p.name.clone(),
                qos_group: None,
            }
        })
        .collect();
    let mut counters = serde_json::Map::new();
    let role = match &st.node {
        Node::Hub(h) => {
            let (servers, peers) = (&h.servers, &h.peers);
            for s in servers {
                for r in s.entries() {
                    let mut flags = Vec::new();
                    if r.unique {
                        flags.push("unique");
                    }
                    if r.nat_nbma.is_some() {
                        flags.push("nat");
                    }
                    let attributes = peers.attributes(r.nat_nbma.unwrap_or(r.nbma));
                    if attributes.is_some_and(|(multicast, _)| !multicast) {
                        flags.push("no-multicast");
                    }
                    rows.push(CacheRow {
                        protocol: r.prefix.to_string(),
                        nbma: r.nbma.to_string(),
                        underlay: r.nat_nbma.unwrap_or(r.nbma).to_string(),
                        kind: "dynamic",
                        expires_in: Some(st.remaining(r.expires)),
                        holdtime: Some(r.holding_time),
                        flags,
                        peer: peers.peer_of(r).map_or(String::new(), name),
                        qos_group: attributes.and_then(|(_, q)| q).map(str::to_owned),
                    });
                }
            }
            counters.extend(server_counters(&hub_counters(st).unwrap_or_default()));
            counters.insert("spokes".into(), peers.len().into());
            "hub"
        }
        Node::Spoke(sp) => {
            for r in &sp.resolvers {
                for sc in r.shortcuts() {
                    let origin = match sc.origin {
                        ShortcutOrigin::Resolved { .. } => "resolved",
                        ShortcutOrigin::Answered => "answered",
                    };
                    rows.push(CacheRow {
                        protocol: sc.prefix.to_string(),
                        nbma: sc.nbma.to_string(),
                        underlay: sc.nbma.to_string(),
                        kind: "shortcut",
                        expires_in: Some(st.remaining(sc.expires)),
                        holdtime: Some(sc.holding_time),
                        flags: vec![origin],
                        peer: dp.peer_by_nbma(sc.nbma).map_or(String::new(), name),
                        qos_group: None,
                    });
                }
            }
            if let Some(c) = resolver_counters(st) {
                counters.extend(c);
            }
            "spoke"
        }
    };
    if let Value::Object(c) = json!(st.counters) {
        counters.extend(c);
    }
    json!({
        "role": role,
        "network_id": st.network_id,
        "entries": rows,
        "counters": counters
    })
}

/// `mgre show nhs` as JSON: role and one row per server and family.
pub fn nhs(st: &NhrpState) -> Value {
    let role = st.node.role();
    let rows: Vec<NhsRow> = st
        .node
        .upstream()
        .statuses()
        .map(|(family, s)| {
            let (state, expires_in) = match s.state {
                NhsState::Idle => ("idle", None),
                NhsState::Registering { .. } => ("registering", None),
                NhsState::Registered { expires, .. } => ("registered", Some(st.remaining(expires))),
            };
            NhsRow {
                family,
                nbma: s.nbma.to_string(),
                priority: s.priority,
                state,
                active: s.active,
                expires_in,
                nat_nbma: s.nat_nbma.map(|a| a.to_string()),
                requests: s.counters.requests,
                retransmissions: s.counters.retransmissions,
                registrations: s.counters.registrations,
                naks: s.counters.naks,
                last_nak: s.counters.last_nak,
                lost: s.counters.lost,
                ignored: s.counters.ignored_replies,
            }
        })
        .collect();
    json!({ "role": role, "servers": rows })
}

/// The server counters by name, as metrics and `show nhrp` report them.
pub fn server_counters(c: &ServerCounters) -> serde_json::Map<String, Value> {
    [
        ("requests", c.requests),
        ("added", c.added),
        ("refreshed", c.refreshed),
        ("replaced", c.replaced),
        ("nak_prohibited_nbma", c.nak_prohibited_nbma),
        ("nak_authentication", c.nak_authentication),
        ("nak_insufficient_resources", c.nak_insufficient_resources),
        ("nak_unique", c.nak_unique),
        ("nak_policy", c.nak_policy),
        ("nat_detected", c.nat_detected),
        ("expired", c.expired),
        ("purged", c.purged),
        ("purge_refused", c.purge_refused),
        ("ignored", c.ignored),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into()))
    .collect()
}

/// The hub's server counters summed over families (`None` on a spoke).
pub fn hub_counters(st: &NhrpState) -> Option<ServerCounters> {
    match &st.node {
        Node::Hub(h) => Some(
            h.servers
                .iter()
                .fold(ServerCounters::default(), |a, s| add(a, s.counters())),
        ),
        Node::Spoke(_) => None,
    }
}

/// A spoke's shortcut counters summed over its resolvers, by name (`None` on a hub or with
/// shortcuts off).
pub fn resolver_counters(st: &NhrpState) -> Option<serde_json::Map<String, Value>> {
    let Node::Spoke(sp) = &st.node else {
        return None;
    };
    if sp.resolvers.is_empty() {
        return None;
    }
    let mut sum = [0u64; 11];
    for r in &sp.resolvers {
        let c = r.counters();
        let values = [
            c.requests,
            c.retransmissions,
            c.gave_up,
            c.answered,
            c.replies,
            c.naks,
            c.added,
            c.expired,
            c.idle,
            c.purged,
            c.indications,
        ];
        for (acc, v) in sum.iter_mut().zip(values) {
            *acc += v;
        }
    }
    Some(
        RESOLVER_COUNTERS
            .iter()
            .zip(sum)
            .map(|(k, v)| ((*k).to_owned(), v.into()))
            .collect(),
    )
}

/// Names of [`resolver_counters`], in order.
pub const RESOLVER_COUNTERS: [&str; 11] = [
    "resolution_requests",
    "resolution_retransmissions",
    "resolutions_given_up",
    "resolution_requests_answered",
    "resolution_replies",
    "resolution_naks",
    "shortcuts_added",
    "shortcuts_expired",
    "shortcuts_idle",
    "shortcuts_purged",
    "traffic_indications",
];

fn add(a: ServerCounters, b: &ServerCounters) -> ServerCounters {
    ServerCounters {
        requests: a.requests + b.requests,
        added: a.added + b.added,
        refreshed: a.refreshed + b.refreshed,
        replaced: a.replaced + b.replaced,
        nak_prohibited_nbma: a.nak_prohibited_nbma + b.nak_prohibited_nbma,
        nak_authentication: a.nak_authentication + b.nak_authentication,
        nak_insufficient_resources: a.nak_insufficient_resources + b.nak_insufficient_resources,
        nak_unique: a.nak_unique + b.nak_unique,
        nak_policy: a.nak_policy + b.nak_policy,
        nat_detected: a.nat_detected + b.nat_detected,
        expired: a.expired + b.expired,
        purged: a.purged + b.purged,
        purge_refused: a.purge_refused + b.purge_refused,
        ignored: a.ignored + b.ignored,
    }
}
