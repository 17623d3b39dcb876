//! `spoke-policy`: an mgre routing-policy plugin (hook route). It blackholes destination
//! prefixes, delivers listed destinations locally, and decides per site pair — by peer name,
//! prefix, `local` or `any` — whether traffic is allowed, denied or forced through the hub.
//! See README.md for the config reference.
//!
//! Sites come from the peer list of `init`: an address belongs to the peer whose `map` has the
//! longest prefix containing it; the end of a packet that is this node's TUN is `local`.
//! Per packet: the blackhole and local lists, at most two scans of the peer prefixes (only if
//! a rule names a peer), then the rules in order; no allocation, no log line.

use std::net::IpAddr;

use mgre_sdk::abi::{Packet, Route, RouteAction};
use mgre_sdk::config::one_or_many;
use mgre_sdk::net::Prefix;
use mgre_sdk::{Hooks, Info, InitContext, Level, PeerInfo, Plugin, Role, counter_add, log};
use serde::Deserialize;

/// The plugin: destination lists, site-pair rules and the peer prefixes that define sites.
pub struct SpokePolicy {
    ttl_ms: u32,
    blackhole: Vec<Prefix>,
    local: Vec<Prefix>,
    rules: Vec<Rule>,
    /// When no rule matches: allow or deny.
    default: Action,
    /// Every peer prefix with its peer id, longest first.
    sites: Vec<(Prefix, u16)>,
    /// Whether some rule names a peer (else peer prefixes are never scanned).
    needs_sites: bool,
    /// On the hub, `via-hub` means "allow": the traffic passes through it already.
    on_hub: bool,
}

impl Plugin for SpokePolicy {
    fn init(ctx: InitContext) -> Result<(Self, Info), String> {
        let config: Config = ctx.parse_config()?;
        let plugin = SpokePolicy::new(&config, &ctx)?;
        let mut info = Info::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            Hooks::ROUTE,
        );
        info.counters = COUNTERS.iter().map(|c| c.to_string()).collect();
        let via_hub_rules = plugin
            .rules
            .iter()
            .filter(|r| r.action == Action::ViaHub)
            .count();
        if plugin.on_hub && via_hub_rules > 0 {
            log(
                Level::Info,
                &format!("{via_hub_rules} via-hub rule(s) act as `allow` on the hub"),
            );
        }
        log(
            Level::Info,
            &format!(
                "{} rules, default {}, {} blackhole and {} local prefixes, {} peers, ttl {} ms",
                plugin.rules.len(),
                if plugin.default == Action::Deny {
                    "deny"
                } else {
                    "allow"
                },
                plugin.blackhole.len(),
                plugin.local.len(),
                ctx.peers.len(),
                plugin.ttl_ms
            ),
        );
        Ok((plugin, info))
    }

    fn route(&mut self, p: Packet<'_>) -> Route {
        let action = self.decide(&p);
        let counter = match action {
            Verdict::Blackhole => Some(BLACKHOLED),
            Verdict::Local => Some(LOCAL),
            Verdict::Rule(Action::Deny) => Some(DENIED),
            Verdict::Rule(Action::ViaHub) => Some(VIA_HUB),
            Verdict::Rule(Action::Allow) => None,
        };
        if let Some(c) = counter {
            counter_add(c, 1);
        }
        let action = match action {
            Verdict::Blackhole | Verdict::Rule(Action::Deny) => RouteAction::Drop,
            Verdict::Local => RouteAction::Local,
            Verdict::Rule(Action::ViaHub) => RouteAction::ViaHub,
            Verdict::Rule(Action::Allow) => RouteAction::Default,
        };
        Route {
            action,
            ttl_ms: self.ttl_ms,
        }
    }
}

mgre_sdk::export_plugin!(SpokePolicy);

impl SpokePolicy {
    fn new(config: &Config, ctx: &InitContext) -> Result<SpokePolicy, String> {
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, r) in config.rules.iter().enumerate() {
            let key = format!("rule[{i}]");
            let rule = Rule {
                from: selectors(r.from.as_deref(), &ctx.peers, &format!("{key}.from"))?,
                to: selectors(r.to.as_deref(), &ctx.peers, &format!("{key}.to"))?,
                action: r.action,
                bidirectional: r.bidirectional,
            };
            if rule.from.is_none() && rule.to.is_none() && i + 1 < config.rules.len() {
                return Err(format!(
                    "config key `{key}`: the rule matches every pair, so the rules after it \
                     never match (use `default` for a fallback)"
                ));
            }
            rules.push(rule);
        }
        let mut sites: Vec<(Prefix, u16)> = ctx
            .peers
            .iter()
            .flat_map(|p| p.prefixes.iter().map(|n| (*n, p.id)))
            .collect();
        sites.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        let names_sites =
            |s: &Option<Vec<Selector>>| s.iter().flatten().any(|s| matches!(s, Selector::Peer(_)));
        let on_hub = ctx.role == Role::Hub;
        Ok(SpokePolicy {
            ttl_ms: config.ttl_ms,
            blackhole: config.blackhole.clone(),
            local: config.local.clone(),
            needs_sites: rules
                .iter()
                .any(|r| names_sites(&r.from) || names_sites(&r.to)),
            rules,
            default: match config.default {
                DefaultPolicy::Allow => Action::Allow,
                DefaultPolicy::Deny => Action::Deny,
            },
            sites,
            on_hub,
        })
    }

    fn decide(&self, p: &Packet<'_>) -> Verdict {
        let dst = p.dst();
        if self.blackhole.iter().any(|n| n.contains(dst)) {
            return Verdict::Blackhole;
        }
        if self.local.iter().any(|n| n.contains(dst)) {
            return Verdict::Local;
        }
        let src = End {
            addr: p.src(),
            site: self.site(p.src(), p.ingress_peer()),
        };
        let dst = End {
            addr: dst,
            site: self.site(dst, p.egress_peer()),
        };
        let action = self
            .rules
            .iter()
            .find(|r| r.matches(&src, &dst))
            .map_or(self.default, |r| r.action);
        match action {
            // Nothing to force: the hub is on the path already, or the packet has arrived.
            Action::ViaHub if self.on_hub || dst.site == Site::Local => {
                Verdict::Rule(Action::Allow)
            }
            a => Verdict::Rule(a),
        }
    }

    /// The site of `addr`: this site if the packet comes from / goes to the TUN (`via` is
    /// `None`), else the peer with the longest `map` prefix holding it, else unknown.
    fn site(&self, addr: IpAddr, via: Option<u16>) -> Site {
        if via.is_none() {
            return Site::Local;
        }
        if !self.needs_sites {
            return Site::Unknown;
        }
        self.sites
            .iter()
            .find(|(n, _)| n.contains(addr))
            .map_or(Site::Unknown, |(_, id)| Site::Peer(*id))
    }
}

/// What decided a packet's fate.
#[derive(Clone, Copy)]
enum Verdict {
    Blackhole,
    Local,
    Rule(Action),
}

/// A site-pair rule; `None` selectors match any site.
struct Rule {
    from: Option<Vec<Selector>>,
    to: Option<Vec<Selector>>,
    action: Action,
    bidirectional: bool,
}

impl Rule {
    fn matches(&self, src: &End, dst: &End) -> bool {
        let side = |sel: &Option<Vec<Selector>>, end: &End| {
            sel.as_ref()
                .is_none_or(|s| s.iter().any(|s| s.matches(end)))
        };
        (side(&self.from, src) && side(&self.to, dst))
            || (self.bidirectional && side(&self.from, dst) && side(&self.to, src))
    }
}

/// One end of a packet: its address and the site it belongs to.
struct End {
    addr: IpAddr,
    site: Site,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Site {
    /// This node's own site (its TUN).
    Local,
    /// A peer's site.
    Peer(u16),
    /// An address no peer maps (matched only by `any` and prefixes).
    Unknown,
}

enum Selector {
    Local,
    Peer(u16),
    Prefix(Prefix),
}

impl Selector {
    fn matches(&self, end: &End) -> bool {
        match self {
            Selector::Local => end.site == Site::Local,
            Selector::Peer(id) => end.site == Site::Peer(*id),
            Selector::Prefix(n) => n.contains(end.addr),
        }
    }
}

/// Resolves `from`/`to`: `None` (absent, or a list containing `any`) matches any site.
fn selectors(
    words: Option<&[String]>,
    peers: &[PeerInfo],
    key: &str,
) -> Result<Option<Vec<Selector>>, String> {
    let Some(words) = words else { return Ok(None) };
    if words.is_empty() {
        return Err(format!(
            "config key `{key}`: an empty list matches nothing; leave the key out to match any site"
        ));
    }
    if words.iter().any(|w| w == "any") {
        return Ok(None);
    }
    words
        .iter()
        .map(|w| {
            if w == "local" {
                return Ok(Selector::Local);
            }
            if let Some(peer) = peers.iter().find(|p| p.name == *w) {
                return Ok(Selector::Peer(peer.id));
            }
            match w.parse::<Prefix>() {
                Ok(n) => return Ok(Selector::Prefix(n)),
                Err(e) if w.contains('/') => {
                    return Err(format!("config key `{key}`: invalid prefix `{w}`: {e}"));
                }
                Err(_) => {}
            }
            let known: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
            Err(format!(
                "config key `{key}`: `{w}` is neither `any`, `local`, a prefix nor a known peer \
                 (peers: {}); name sites this node does not know by prefix",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Action {
    Allow,
    Deny,
    ViaHub,
}

/// The plugin's `config` table (see README.md).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    #[serde(default)]
    default: DefaultPolicy,
    #[serde(default = "default_ttl_ms")]
    ttl_ms: u32,
    #[serde(default, deserialize_with = "one_or_many")]
    blackhole: Vec<Prefix>,
    #[serde(default, deserialize_with = "one_or_many")]
    local: Vec<Prefix>,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
enum DefaultPolicy {
    #[default]
    Allow,
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RuleConfig {
    #[serde(default, deserialize_with = "some_one_or_many")]
    from: Option<Vec<String>>,
    #[serde(default, deserialize_with = "some_one_or_many")]
    to: Option<Vec<String>>,
    action: Action,
    #[serde(default = "yes")]
    bidirectional: bool,
}

fn some_one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    one_or_many(d).map(Some)
}

fn yes() -> bool {
    true
}

fn default_ttl_ms() -> u32 {
    DEFAULT_TTL_MS
}

/// Verdicts depend only on addresses, peers and config (a reload starts a new plugin
/// generation), so they may live long.
const DEFAULT_TTL_MS: u32 = 30_000;

const COUNTERS: [&str; 4] = ["denied", "via-hub", "blackholed", "local"];
const DENIED: u32 = 0;
const VIA_HUB: u32 = 1;
const BLACKHOLED: u32 = 2;
const LOCAL: u32 = 3;

#[cfg(test)]
mod tests;
