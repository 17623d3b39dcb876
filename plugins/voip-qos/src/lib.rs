//! `voip-qos`: a vendor-style QoS module for mgre (hooks classify and mark). It recognises SIP
//! and SIP-TLS (signalling), RTP (voice), video and bulk transfers by ports and DSCP, and
//! marks each class with its DSCP (inner and outer header), a socket priority and a rate
//! class. See README.md for the classes, defaults and config reference.
//!
//! Both hooks derive the class from the packet itself, so `mark` gives the same answer
//! whether or not this plugin's `classify` ran first. Per packet: a few range checks, no
//! allocation, no log line.

use mgre_sdk::abi::{Classify, Mark, Packet};
use mgre_sdk::config::one_or_many;
use mgre_sdk::net::{Dscp, PortRange, Protocol};
use mgre_sdk::{Hooks, Info, InitContext, Level, Plugin, counter_add, log};
use serde::Deserialize;

/// The plugin: port lists per class and what each class gets.
pub struct VoipQos {
    ttl_ms: u32,
    rtp: Vec<PortRange>,
    sip: Vec<PortRange>,
    sip_tls: Vec<PortRange>,
    video: Vec<PortRange>,
    bulk_tcp: Vec<PortRange>,
    /// Bit n set: DSCP n arriving on a packet makes it bulk.
    bulk_dscp: u64,
    /// The mark of each class, indexed by [`Class`].
    marks: [Mark; Class::ALL.len()],
}

/// The traffic classes, in id order; best effort has no class id (classify says 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Voice,
    Signalling,
    Video,
    Bulk,
    BestEffort,
}

impl Class {
    const ALL: [Class; 5] = [
        Class::Voice,
        Class::Signalling,
        Class::Video,
        Class::Bulk,
        Class::BestEffort,
    ];

    /// Class id in classify verdicts and rate class in mark verdicts (best effort: 0).
    fn id(self) -> u32 {
        match self {
            Class::BestEffort => 0,
            c => c as u32 + 1,
        }
    }

    /// Name in `Info::classes`, counters and the config.
    fn name(self) -> &'static str {
        ["voice", "signalling", "video", "bulk", "best-effort"][self as usize]
    }
}

impl Plugin for VoipQos {
    fn init(ctx: InitContext) -> Result<(Self, Info), String> {
        let config: Config = ctx.parse_config()?;
        let plugin = VoipQos::new(&config)?;
        let mut info = Info::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            Hooks::CLASSIFY | Hooks::MARK,
        );
        info.classes = Class::ALL
            .iter()
            .filter(|c| c.id() != 0)
            .map(|c| (c.id(), c.name().to_string()))
            .collect();
        info.counters = Class::ALL.iter().map(|c| c.name().to_string()).collect();
        log(Level::Info, &plugin.describe(&config));
        Ok((plugin, info))
    }

    fn classify(&mut self, p: Packet<'_>) -> Classify {
        let class = self.class_of(&p);
        counter_add(class as u32, 1);
        Classify {
            class: class.id(),
            ttl_ms: self.ttl_ms,
        }
    }

    fn mark(&mut self, p: Packet<'_>) -> Mark {
        self.marks[self.class_of(&p) as usize]
    }
}

mgre_sdk::export_plugin!(VoipQos);

impl VoipQos {
    fn new(config: &Config) -> Result<VoipQos, String> {
        let marks = Class::ALL.map(|class| {
            let c = config.class(class);
            let d = Defaults::of(class);
            let dscp = match c.dscp.unwrap_or(Remark::Set(d.dscp)) {
                Remark::Set(dscp) => Some(dscp.value()),
                Remark::Keep => None,
            };
            Mark {
                inner_dscp: dscp,
                outer_dscp: dscp,
                outer_ecn: None,
                priority: c.priority.or(d.priority),
                rate_class: class.id() as u16,
                ttl_ms: config.ttl_ms,
            }
        });
        for class in Class::ALL {
            if let Some(p) = config.class(class).priority.filter(|p| *p > 7) {
                return Err(format!(
                    "config key `{}.priority`: {p} is not a socket priority (0-7)",
                    class.name()
                ));
            }
        }
        Ok(VoipQos {
            ttl_ms: config.ttl_ms,
            rtp: config.rtp_ports.clone(),
            sip: config.sip_ports.clone(),
            sip_tls: config.sip_tls_ports.clone(),
            video: config.video_ports.clone(),
            bulk_tcp: config.bulk_ports.clone(),
            bulk_dscp: config.bulk_dscp.iter().fold(0, |m, d| m | 1 << d.value()),
            marks,
        })
    }

    /// First match in this order: signalling (SIP over UDP/TCP, SIP-TLS over TCP), video
    /// (UDP), voice (RTP, UDP), bulk (TCP ports), bulk (DSCP already set), best effort.
    /// A port list matches the source or the destination port.
    fn class_of(&self, p: &Packet<'_>) -> Class {
        if p.has_ports() {
            let either = |ranges: &[PortRange]| {
                ranges
                    .iter()
                    .any(|r| r.contains(p.src_port()) || r.contains(p.dst_port()))
            };
            let proto = Protocol(p.protocol());
            if proto == Protocol::UDP {
                if either(&self.sip) {
                    return Class::Signalling;
                }
                if either(&self.video) {
                    return Class::Video;
                }
                if either(&self.rtp) {
                    return Class::Voice;
                }
            } else if proto == Protocol::TCP {
                if either(&self.sip) || either(&self.sip_tls) {
                    return Class::Signalling;
                }
                if either(&self.bulk_tcp) {
                    return Class::Bulk;
                }
            }
        }
        if self.bulk_dscp & 1 << p.dscp() != 0 {
            return Class::Bulk;
        }
        Class::BestEffort
    }

    /// One log line with the effective settings, rate hints included (the ABI has no field
    /// to declare them).
    fn describe(&self, config: &Config) -> String {
        let mut s = format!("ttl {} ms;", self.ttl_ms);
        for class in Class::ALL {
            let m = self.marks[class as usize];
            let dscp = m
                .inner_dscp
                .and_then(Dscp::new)
                .map_or("keep".into(), |d| d.to_string());
            let prio = m.priority.map_or("none".into(), |p| p.to_string());
            let rate = config
                .class(class)
                .rate_kbps
                .map_or("no rate".into(), |r| format!("{r} kbit/s"));
            s += &format!(
                " {} (class {}, rate class {}): dscp {dscp}, priority {prio}, {rate};",
                class.name(),
                class.id(),
                m.rate_class
            );
        }
        s.pop();
        s
    }
}

/// The plugin's `config` table (see README.md).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    #[serde(default = "default_ttl_ms")]
    ttl_ms: u32,
    #[serde(default = "default_rtp", deserialize_with = "one_or_many")]
    rtp_ports: Vec<PortRange>,
    #[serde(default = "default_sip", deserialize_with = "one_or_many")]
    sip_ports: Vec<PortRange>,
    #[serde(default = "default_sip_tls", deserialize_with = "one_or_many")]
    sip_tls_ports: Vec<PortRange>,
    #[serde(default = "default_video", deserialize_with = "one_or_many")]
    video_ports: Vec<PortRange>,
    #[serde(default = "default_bulk", deserialize_with = "one_or_many")]
    bulk_ports: Vec<PortRange>,
    #[serde(default = "default_bulk_dscp", deserialize_with = "one_or_many")]
    bulk_dscp: Vec<Dscp>,
    #[serde(default)]
    voice: ClassConfig,
    #[serde(default)]
    signalling: ClassConfig,
    #[serde(default)]
    video: ClassConfig,
    #[serde(default)]
    bulk: ClassConfig,
    #[serde(default)]
    best_effort: ClassConfig,
}

impl Config {
    fn class(&self, class: Class) -> &ClassConfig {
        match class {
            Class::Voice => &self.voice,
            Class::Signalling => &self.signalling,
            Class::Video => &self.video,
            Class::Bulk => &self.bulk,
            Class::BestEffort => &self.best_effort,
        }
    }
}

/// What a class gets; absent keys take the class's defaults.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ClassConfig {
    dscp: Option<Remark>,
    priority: Option<u8>,
    rate_kbps: Option<u32>,
}

/// A DSCP to set, or `"keep"` to leave the packet's.
#[derive(Clone, Copy)]
enum Remark {
    Set(Dscp),
    Keep,
}

impl<'de> Deserialize<'de> for Remark {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Remark, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Remark;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a DSCP (0-63 or a name) or \"keep\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Remark, E> {
                if s == "keep" {
                    return Ok(Remark::Keep);
                }
                s.parse()
                    .map(Remark::Set)
                    .map_err(|e| E::custom(format_args!("invalid DSCP `{s}`: {e}")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Remark, E> {
                u8::try_from(v)
                    .ok()
                    .and_then(Dscp::new)
                    .map(Remark::Set)
                    .ok_or_else(|| E::custom(format_args!("invalid DSCP {v}: not in 0-63")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Remark, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_any(V)
    }
}

/// A class's built-in DSCP and priority.
struct Defaults {
    dscp: Dscp,
    priority: Option<u8>,
}

impl Defaults {
    fn of(class: Class) -> Defaults {
        let (dscp, priority) = match class {
            Class::Voice => (Dscp::EF, Some(6)),
            Class::Signalling => (Dscp::CS3, Some(4)),
            Class::Video => (Dscp::AF41, Some(4)),
            Class::Bulk => (Dscp::CS1, Some(1)),
            Class::BestEffort => (Dscp::DEFAULT, None),
        };
        Defaults { dscp, priority }
    }
}

fn default_ttl_ms() -> u32 {
    5000
}
fn default_rtp() -> Vec<PortRange> {
    vec![PortRange::new(16384, 32767).expect("16384 <= 32767")]
}
fn default_sip() -> Vec<PortRange> {
    vec![PortRange::single(5060)]
}
fn default_sip_tls() -> Vec<PortRange> {
    vec![PortRange::single(5061)]
}
fn default_video() -> Vec<PortRange> {
    vec![PortRange::new(5004, 5005).expect("5004 <= 5005")]
}
fn default_bulk() -> Vec<PortRange> {
    // FTP data and control, rsync, FTPS data and control.
    [20, 21, 873, 989, 990].map(PortRange::single).to_vec()
}
fn default_bulk_dscp() -> Vec<Dscp> {
    vec![Dscp::CS1]
}

#[cfg(test)]
mod tests;
