//! `dscp-classifier`: an mgre classify plugin driven by an ordered rule list. Each rule matches
//! on any of DSCP, protocol, ports, prefixes and direction and names a class; the first
//! matching rule wins. Classes get ids 1..n in the order of `classes`. See README.md for the
//! config reference.
//!
//! Per packet it walks the rules once (each check is a mask test or a short list scan), never
//! allocates and never logs; it counts one packet per call on the chosen class's counter.

use mgre_sdk::abi::{Classify, Direction, Packet};
use mgre_sdk::config::one_or_many;
use mgre_sdk::net::{Dscp, PortRange, Prefix, Protocol};
use mgre_sdk::{Hooks, Info, InitContext, Level, Plugin, counter_add, log};
use serde::Deserialize;

/// The plugin: compiled rules plus what to answer when none matches.
pub struct DscpClassifier {
    rules: Vec<Rule>,
    /// Class of packets no rule matches (0: no opinion).
    default_class: u32,
    ttl_ms: u32,
    /// Counter id of "unmatched" (the class counters come first, id = class - 1).
    unmatched: u32,
}

impl Plugin for DscpClassifier {
    fn init(ctx: InitContext) -> Result<(Self, Info), String> {
        let config: Config = ctx.parse_config()?;
        let plugin = DscpClassifier::new(&config)?;
        let mut info = Info::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            Hooks::CLASSIFY,
        );
        info.classes = (1..).zip(config.classes.iter().cloned()).collect();
        info.counters = config.classes.clone();
        info.counters.push(UNMATCHED.into());
        log(
            Level::Info,
            &format!(
                "{} rules over {} classes, default class {}, ttl {} ms",
                plugin.rules.len(),
                config.classes.len(),
                config.default_class.as_deref().unwrap_or("none"),
                plugin.ttl_ms
            ),
        );
        Ok((plugin, info))
    }

    fn classify(&mut self, p: Packet<'_>) -> Classify {
        let class = self
            .rules
            .iter()
            .find(|r| r.matches(&p))
            .map_or(self.default_class, |r| r.class);
        counter_add(class.checked_sub(1).unwrap_or(self.unmatched), 1);
        Classify {
            class,
            ttl_ms: self.ttl_ms,
        }
    }
}

mgre_sdk::export_plugin!(DscpClassifier);

impl DscpClassifier {
    /// Validates the config and compiles the rules.
    fn new(config: &Config) -> Result<DscpClassifier, String> {
        if config.classes.is_empty() {
            return Err("config key `classes`: declare at least one class".into());
        }
        for (i, name) in config.classes.iter().enumerate() {
            let key = format!("config key `classes[{i}]`");
            if name.is_empty() {
                return Err(format!("{key}: a class name cannot be empty"));
            }
            if name == UNMATCHED {
                return Err(format!(
                    "{key}: `{UNMATCHED}` is reserved for the counter of packets no rule matches"
                ));
            }
            if config.classes[..i].contains(name) {
                return Err(format!("{key}: class `{name}` is declared twice"));
            }
        }
        let class_id = |name: &str, key: &str| {
            config
                .classes
                .iter()
                .position(|c| c == name)
                .map(|i| i as u32 + 1)
                .ok_or_else(|| {
                    format!(
                        "config key `{key}`: class `{name}` is not declared in `classes` ({})",
                        config.classes.join(", ")
                    )
                })
        };
        let default_class = match &config.default_class {
            Some(name) => class_id(name, "default-class")?,
            None => 0,
        };
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, r) in config.rules.iter().enumerate() {
            let key = format!("rule[{i}]");
            let rule = Rule::new(r, class_id(&r.class, &format!("{key}.class"))?)
                .map_err(|e| format!("config key `{key}`: {e}"))?;
            if rule.is_catch_all() && i + 1 < config.rules.len() {
                return Err(format!(
                    "config key `{key}`: the rule matches every packet, so the rules after it \
                     never match (use `default-class` for a fallback)"
                ));
            }
            rules.push(rule);
        }
        Ok(DscpClassifier {
            rules,
            default_class,
            ttl_ms: config.ttl_ms,
            unmatched: config.classes.len() as u32,
        })
    }
}

/// A compiled rule: every present criterion must match; an absent one matches anything.
struct Rule {
    class: u32,
    /// Bit n set: DSCP n matches (0: any).
    dscp: u64,
    /// Bit n set: direction code n matches (0: any).
    directions: u8,
    protocols: Vec<u8>,
    src_ports: Vec<PortRange>,
    dst_ports: Vec<PortRange>,
    either_ports: Vec<PortRange>,
    src: Vec<Prefix>,
    dst: Vec<Prefix>,
}

impl Rule {
    fn new(r: &RuleConfig, class: u32) -> Result<Rule, String> {
        let rule = Rule {
            class,
            dscp: r.dscp.iter().fold(0, |m, d| m | 1 << d.value()),
            directions: r.direction.iter().fold(0, |m, d| m | direction_bit(d.0)),
            protocols: r.protocol.iter().map(|p| p.0).collect(),
            src_ports: r.src_port.clone(),
            dst_ports: r.dst_port.clone(),
            either_ports: r.port.clone(),
            src: r.src.clone(),
            dst: r.dst.clone(),
        };
        let wants_ports = !(rule.src_ports.is_empty()
            && rule.dst_ports.is_empty()
            && rule.either_ports.is_empty());
        if wants_ports && !r.protocol.is_empty() && !r.protocol.iter().any(|p| p.has_ports()) {
            return Err(
                "ports only match TCP and UDP packets, but `protocol` lists neither".into(),
            );
        }
        Ok(rule)
    }

    fn is_catch_all(&self) -> bool {
        self.dscp == 0
            && self.directions == 0
            && self.protocols.is_empty()
            && self.src_ports.is_empty()
            && self.dst_ports.is_empty()
            && self.either_ports.is_empty()
            && self.src.is_empty()
            && self.dst.is_empty()
    }

    fn matches(&self, p: &Packet<'_>) -> bool {
        (self.dscp == 0 || self.dscp & 1 << p.dscp() != 0)
            && (self.directions == 0 || self.directions & direction_bit(p.direction()) != 0)
            && (self.protocols.is_empty() || self.protocols.contains(&p.protocol()))
            && self.ports_match(p)
            && (self.src.is_empty() || self.src.iter().any(|n| n.contains(p.src())))
            && (self.dst.is_empty() || self.dst.iter().any(|n| n.contains(p.dst())))
    }

    /// A rule with port criteria never matches a packet without ports (not TCP/UDP, or a
    /// later fragment).
    fn ports_match(&self, p: &Packet<'_>) -> bool {
        let any = |ranges: &[PortRange], port: u16| ranges.iter().any(|r| r.contains(port));
        let all_empty =
            self.src_ports.is_empty() && self.dst_ports.is_empty() && self.either_ports.is_empty();
        all_empty
            || (p.has_ports()
                && (self.src_ports.is_empty() || any(&self.src_ports, p.src_port()))
                && (self.dst_ports.is_empty() || any(&self.dst_ports, p.dst_port()))
                && (self.either_ports.is_empty()
                    || any(&self.either_ports, p.src_port())
                    || any(&self.either_ports, p.dst_port())))
    }
}

fn direction_bit(d: Direction) -> u8 {
    match d {
        Direction::Outbound => 1,
        Direction::Inbound => 2,
        Direction::Transit => 4,
    }
}

/// The plugin's `config` table (see README.md).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    classes: Vec<String>,
    #[serde(default)]
    default_class: Option<String>,
    #[serde(default = "default_ttl_ms")]
    ttl_ms: u32,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RuleConfig {
    class: String,
    #[serde(default, deserialize_with = "one_or_many")]
    dscp: Vec<Dscp>,
    #[serde(default, deserialize_with = "one_or_many")]
    protocol: Vec<Protocol>,
    #[serde(default, deserialize_with = "one_or_many")]
    src_port: Vec<PortRange>,
    #[serde(default, deserialize_with = "one_or_many")]
    dst_port: Vec<PortRange>,
    #[serde(default, deserialize_with = "one_or_many")]
    port: Vec<PortRange>,
    #[serde(default, deserialize_with = "one_or_many")]
    src: Vec<Prefix>,
    #[serde(default, deserialize_with = "one_or_many")]
    dst: Vec<Prefix>,
    #[serde(default, deserialize_with = "one_or_many")]
    direction: Vec<DirectionName>,
}

/// `outbound`, `inbound` or `transit`.
#[derive(Clone, Copy)]
struct DirectionName(Direction);

impl<'de> Deserialize<'de> for DirectionName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Name {
            Outbound,
            Inbound,
            Transit,
        }
        Ok(DirectionName(match Name::deserialize(d)? {
            Name::Outbound => Direction::Outbound,
            Name::Inbound => Direction::Inbound,
            Name::Transit => Direction::Transit,
        }))
    }
}

fn default_ttl_ms() -> u32 {
    DEFAULT_TTL_MS
}

/// Verdict cache lifetime unless `ttl-ms` says otherwise.
const DEFAULT_TTL_MS: u32 = 5000;
/// Name of the counter of packets that got no class.
const UNMATCHED: &str = "unmatched";

#[cfg(test)]
mod tests;
