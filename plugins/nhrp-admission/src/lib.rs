//! `nhrp-admission`: an mgre NHRP registration-admission plugin (hook admission, on hubs). It
//! refuses registrations of overlay prefixes outside the configured overlay supernets, and
//! per `[[site]]` (a range of NBMA or source addresses) restricts the prefixes a spoke may
//! register and attaches a QoS group, a multicast membership flag and a holding-time cap.
//! See README.md for the config reference.
//!
//! One call per registration or refresh: a scan of the overlay list and of the sites; no log
//! line per registration (counters instead).

use mgre_sdk::config::one_or_many;
use mgre_sdk::net::Prefix;
use mgre_sdk::nhrp::{Admission, AdmissionAttributes, QosGroup, Registration};
use mgre_sdk::{Hooks, Info, InitContext, Level, Plugin, counter_add, log};
use serde::Deserialize;

/// The plugin: overlay supernets, sites in config order, and the defaults.
pub struct NhrpAdmission {
    overlay: Vec<Prefix>,
    sites: Vec<Site>,
    /// Whether registrations no site matches are accepted.
    accept_unmatched: bool,
    refuse_nat: bool,
    /// Attributes for every accepted registration; a site's override them.
    defaults: AdmissionAttributes,
}

impl Plugin for NhrpAdmission {
    fn init(ctx: InitContext) -> Result<(Self, Info), String> {
        let config: Config = ctx.parse_config()?;
        let plugin = NhrpAdmission::new(config)?;
        let mut info = Info::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            Hooks::ADMISSION,
        );
        info.counters = COUNTERS.iter().map(|c| c.to_string()).collect();
        log(
            Level::Info,
            &format!(
                "{} overlay prefixes, {} sites, unmatched NBMA addresses {}",
                plugin.overlay.len(),
                plugin.sites.len(),
                if plugin.accept_unmatched {
                    "accepted"
                } else {
                    "refused"
                }
            ),
        );
        Ok((plugin, info))
    }

    fn admit_registration(&mut self, req: &Registration) -> Admission {
        let (counter, admission) = self.decide(req);
        counter_add(counter, 1);
        admission
    }
}

mgre_sdk::export_plugin!(NhrpAdmission);

impl NhrpAdmission {
    fn new(config: Config) -> Result<NhrpAdmission, String> {
        let mut sites = Vec::with_capacity(config.sites.len());
        for (i, s) in config.sites.into_iter().enumerate() {
            let key = format!("site[{i}]");
            if s.nbma.is_empty() && s.source.is_empty() {
                return Err(format!(
                    "config key `{key}`: a site needs `nbma` or `source` (the addresses it is for)"
                ));
            }
            if let Some(p) = s.prefixes.as_ref().and_then(|ps| {
                ps.iter().find(|p| {
                    !config.overlay.is_empty() && !config.overlay.iter().any(|o| o.covers(**p))
                })
            }) {
                return Err(format!(
                    "config key `{key}.prefixes`: {p} is outside every `overlay` prefix, so no \
                     registration could use it"
                ));
            }
            if s.prefixes.as_ref().is_some_and(Vec::is_empty) {
                return Err(format!(
                    "config key `{key}.prefixes`: an empty list allows nothing; leave the key \
                     out to allow any overlay prefix"
                ));
            }
            sites.push(Site {
                nbma: s.nbma,
                source: s.source,
                prefixes: s.prefixes,
                attributes: AdmissionAttributes {
                    qos_group: s.qos_group.map(|g| QosGroup {
                        id: g.id,
                        name: g.name,
                    }),
                    multicast: s.multicast,
                    holding_time_cap: s.holdtime_cap,
                },
            });
        }
        Ok(NhrpAdmission {
            overlay: config.overlay,
            sites,
            accept_unmatched: config.default == DefaultPolicy::Accept,
            refuse_nat: config.refuse_nat,
            defaults: AdmissionAttributes {
                qos_group: None,
                multicast: config.multicast,
                holding_time_cap: config.holdtime_cap,
            },
        })
    }

    /// The answer and the counter it counts on.
    fn decide(&self, req: &Registration) -> (u32, Admission) {
        if let Some(p) = req.prefixes.iter().find(|p| !self.inside_overlay(**p)) {
            return (
                REFUSED_OVERLAY,
                Admission::refuse(format!("{p} is outside the overlay")),
            );
        }
        if self.refuse_nat && req.nat {
            return (
                REFUSED_NAT,
                Admission::refuse(format!(
                    "{} registers from behind NAT ({})",
                    req.nbma, req.source
                )),
            );
        }
        let Some(site) = self.sites.iter().find(|s| s.matches(req)) else {
            return if self.accept_unmatched {
                (ACCEPTED, Admission::Accept(self.defaults.clone()))
            } else {
                (
                    REFUSED_UNMATCHED,
                    Admission::refuse(format!(
                        "no site matches NBMA {} (source {})",
                        req.nbma, req.source
                    )),
                )
            };
        };
        if let Some(allowed) = &site.prefixes
            && let Some(p) = req
                .prefixes
                .iter()
                .find(|p| !allowed.iter().any(|a| a.covers(**p)))
        {
            return (
                REFUSED_PREFIX,
                Admission::refuse(format!("{p} is not allowed for NBMA {}", req.nbma)),
            );
        }
        (
            ACCEPTED,
            Admission::Accept(self.defaults.clone().then(site.attributes.clone())),
        )
    }

    fn inside_overlay(&self, p: Prefix) -> bool {
        self.overlay.is_empty() || self.overlay.iter().any(|o| o.covers(p))
    }
}

/// A `[[site]]`: which registrations it is for, what they may register, their attributes.
struct Site {
    /// Claimed NBMA addresses it is for (empty: any).
    nbma: Vec<Prefix>,
    /// Source addresses it is for (empty: any).
    source: Vec<Prefix>,
    /// Overlay prefixes its spokes may register (`None`: any inside the overlay).
    prefixes: Option<Vec<Prefix>>,
    attributes: AdmissionAttributes,
}

impl Site {
    fn matches(&self, req: &Registration) -> bool {
        let any_of = |ps: &[Prefix], a| ps.is_empty() || ps.iter().any(|p| p.contains(a));
        any_of(&self.nbma, req.nbma) && any_of(&self.source, req.source)
    }
}

/// The plugin's `config` table (see README.md).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    #[serde(default, deserialize_with = "one_or_many")]
    overlay: Vec<Prefix>,
    #[serde(default)]
    default: DefaultPolicy,
    #[serde(default)]
    refuse_nat: bool,
    multicast: Option<bool>,
    holdtime_cap: Option<u16>,
    #[serde(default, rename = "site")]
    sites: Vec<SiteConfig>,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum DefaultPolicy {
    #[default]
    Accept,
    Refuse,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SiteConfig {
    #[serde(default, deserialize_with = "one_or_many")]
    nbma: Vec<Prefix>,
    #[serde(default, deserialize_with = "one_or_many")]
    source: Vec<Prefix>,
    #[serde(default, deserialize_with = "some_one_or_many")]
    prefixes: Option<Vec<Prefix>>,
    qos_group: Option<QosGroupConfig>,
    multicast: Option<bool>,
    holdtime_cap: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct QosGroupConfig {
    id: u32,
    name: String,
}

fn some_one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Prefix>>, D::Error> {
    one_or_many(d).map(Some)
}

const COUNTERS: [&str; 5] = [
    "accepted",
    "refused-overlay",
    "refused-nat",
    "refused-unmatched",
    "refused-prefix",
];
const ACCEPTED: u32 = 0;
const REFUSED_OVERLAY: u32 = 1;
const REFUSED_NAT: u32 = 2;
const REFUSED_UNMATCHED: u32 = 3;
const REFUSED_PREFIX: u32 = 4;

#[cfg(test)]
mod tests;
