//! `shortcut-policy`: an mgre NHRP shortcut-policy plugin (hook shortcut). It denies
//! redirects and/or shortcuts (resolutions) between configured source and destination
//! prefixes — keeping, say, traffic to a data-centre LAN on the hub path where the firewall
//! sits — and allows the rest (or denies the rest, with `default = "deny"`). See README.md.
//!
//! One call per redirect or resolution: a scan of the rules, first match wins; no log line
//! per call (counters instead).

use std::net::IpAddr;

use mgre_sdk::config::one_or_many;
use mgre_sdk::net::Prefix;
use mgre_sdk::nhrp::{ShortcutKind, ShortcutRequest, ShortcutVerdict};
use mgre_sdk::{Hooks, Info, InitContext, Level, Plugin, counter_add, log};
use serde::Deserialize;

/// The plugin: rules in config order and the verdict when none matches.
pub struct ShortcutPolicy {
    rules: Vec<Rule>,
    default: ShortcutVerdict,
}

impl Plugin for ShortcutPolicy {
    fn init(ctx: InitContext) -> Result<(Self, Info), String> {
        let config: Config = ctx.parse_config()?;
        let plugin = ShortcutPolicy::new(config)?;
        let mut info = Info::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            Hooks::SHORTCUT,
        );
        info.counters = COUNTERS.iter().map(|c| c.to_string()).collect();
        log(
            Level::Info,
            &format!(
                "{} rules, default {}",
                plugin.rules.len(),
                verdict_name(plugin.default)
            ),
        );
        Ok((plugin, info))
    }

    fn shortcut_policy(&mut self, req: &ShortcutRequest) -> ShortcutVerdict {
        let verdict = self
            .rules
            .iter()
            .find(|r| r.matches(req))
            .map_or(self.default, |r| r.action);
        counter_add(
            match verdict {
                ShortcutVerdict::Allow => ALLOWED,
                ShortcutVerdict::Deny => DENIED,
            },
            1,
        );
        verdict
    }
}

mgre_sdk::export_plugin!(ShortcutPolicy);

impl ShortcutPolicy {
    fn new(config: Config) -> Result<ShortcutPolicy, String> {
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, r) in config.rules.into_iter().enumerate() {
            let key = format!("rule[{i}]");
            for (name, list) in [("from", &r.from), ("to", &r.to)] {
                if list.as_ref().is_some_and(Vec::is_empty) {
                    return Err(format!(
                        "config key `{key}.{name}`: an empty list matches nothing; leave the key \
                         out to match any"
                    ));
                }
            }
            if r.kind.as_ref().is_some_and(Vec::is_empty) {
                return Err(format!(
                    "config key `{key}.kind`: an empty list matches nothing; leave the key out \
                     to match redirects and resolutions"
                ));
            }
            rules.push(Rule {
                from: r.from,
                to: r.to,
                kinds: r.kind.map(|ks| ks.into_iter().map(Kind::into).collect()),
                action: r.action.into(),
                bidirectional: r.bidirectional,
            });
        }
        Ok(ShortcutPolicy {
            rules,
            default: config.default.into(),
        })
    }
}

/// A rule; `None` matches anything.
struct Rule {
    from: Option<Vec<Prefix>>,
    to: Option<Vec<Prefix>>,
    kinds: Option<Vec<ShortcutKind>>,
    action: ShortcutVerdict,
    bidirectional: bool,
}

impl Rule {
    fn matches(&self, req: &ShortcutRequest) -> bool {
        if self
            .kinds
            .as_ref()
            .is_some_and(|ks| !ks.contains(&req.kind))
        {
            return false;
        }
        let side = |ps: &Option<Vec<Prefix>>, a: IpAddr| {
            ps.as_ref()
                .is_none_or(|ps| ps.iter().any(|p| p.contains(a)))
        };
        (side(&self.from, req.src) && side(&self.to, req.dst))
            || (self.bidirectional && side(&self.from, req.dst) && side(&self.to, req.src))
    }
}

fn verdict_name(v: ShortcutVerdict) -> &'static str {
    match v {
        ShortcutVerdict::Allow => "allow",
        ShortcutVerdict::Deny => "deny",
    }
}

/// The plugin's `config` table (see README.md).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    #[serde(default)]
    default: Action,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RuleConfig {
    #[serde(default, deserialize_with = "some_one_or_many")]
    from: Option<Vec<Prefix>>,
    #[serde(default, deserialize_with = "some_one_or_many")]
    to: Option<Vec<Prefix>>,
    #[serde(default, deserialize_with = "some_one_or_many")]
    kind: Option<Vec<Kind>>,
    action: Action,
    #[serde(default = "yes")]
    bidirectional: bool,
}

#[derive(Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Action {
    #[default]
    Allow,
    Deny,
}

impl From<Action> for ShortcutVerdict {
    fn from(a: Action) -> ShortcutVerdict {
        match a {
            Action::Allow => ShortcutVerdict::Allow,
            Action::Deny => ShortcutVerdict::Deny,
        }
    }
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    Redirect,
    Resolution,
}

impl From<Kind> for ShortcutKind {
    fn from(k: Kind) -> ShortcutKind {
        match k {
            Kind::Redirect => ShortcutKind::Redirect,
            Kind::Resolution => ShortcutKind::Resolution,
        }
    }
}

fn some_one_or_many<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    one_or_many(d).map(Some)
}

fn yes() -> bool {
    true
}

const COUNTERS: [&str; 2] = ["allowed", "denied"];
const ALLOWED: u32 = 0;
const DENIED: u32 = 1;

#[cfg(test)]
mod tests;
