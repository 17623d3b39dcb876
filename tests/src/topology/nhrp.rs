//! The `[nhrp]` part of a site's config in NHRP topologies: the hub (and backup hub) as
//! NHSs, spokes registering their LAN with them, and regional hubs — spokes turned into hubs
//! that register their region with the hub as core hub (hierarchical DMVPN).

use super::{LAN_V4_LEN, LAN_V6_LEN, NhrpOptions, SiteAddrs, SiteId, TopologyBuilder, list, quote};

impl TopologyBuilder {
    /// Whether spoke `k` runs as a regional hub.
    pub(super) fn is_regional_hub(&self, k: usize) -> bool {
        self.regions.iter().any(|(r, _)| *r == k)
    }

    /// The sites spoke `k` registers with, most preferred first: its regional hub, else the
    /// hub (and the backup hub).
    fn nhs_of(&self, k: usize) -> Vec<SiteId> {
        match self.regions.iter().find(|(_, m)| m.contains(&k)) {
            Some((r, _)) => vec![SiteId::Spoke(*r)],
            None => std::iter::once(SiteId::Hub)
                .chain(self.backup_hub.then_some(SiteId::BackupHub))
                .collect(),
        }
    }

    /// What spoke `k` registers: its LAN, or for a regional hub the smallest prefixes that
    /// cover its own and its members' LANs.
    fn registered(&self, k: usize) -> [String; 2] {
        let me = SiteAddrs::of(SiteId::Spoke(k));
        let Some((_, members)) = self.regions.iter().find(|(r, _)| *r == k) else {
            return [
                format!("{}/{LAN_V4_LEN}", me.lan_v4),
                format!("{}/{LAN_V6_LEN}", me.lan_v6),
            ];
        };
        let lans: Vec<SiteAddrs> = std::iter::once(k)
            .chain(members.iter().copied())
            .map(|m| SiteAddrs::of(SiteId::Spoke(m)))
            .collect();
        let v4 = (0..=LAN_V4_LEN)
            .rev()
            .find(|len| {
                let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                lans.iter()
                    .all(|l| u32::from(l.lan_v4) & mask == u32::from(me.lan_v4) & mask)
            })
            .unwrap_or(0);
        let v6 = (0..=LAN_V6_LEN)
            .rev()
            .find(|len| {
                let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                lans.iter()
                    .all(|l| u128::from(l.lan_v6) & mask == u128::from(me.lan_v6) & mask)
            })
            .unwrap_or(0);
        let net4 = u32::from(me.lan_v4) & u32::MAX.checked_shl(32 - u32::from(v4)).unwrap_or(0);
        let net6 = u128::from(me.lan_v6) & u128::MAX.checked_shl(128 - u32::from(v6)).unwrap_or(0);
        [
            format!("{}/{v4}", std::net::Ipv4Addr::from(net4)),
            format!("{}/{v6}", std::net::Ipv6Addr::from(net6)),
        ]
    }

    /// The `[nhrp]` table and `[[nhrp.nhs]]` entries of site `id`.
    pub(super) fn nhrp_section(&self, id: SiteId, n: &NhrpOptions) -> String {
        let mut toml = String::new();
        let mut line = |text: String| {
            toml.push_str(&text);
            toml.push('\n');
        };
        line(String::new());
        line("[nhrp]".into());
        line(format!("holdtime = {}", n.holdtime));
        let secret = match id {
            SiteId::Spoke(k) => self
                .nhrp_secrets
                .iter()
                .find(|(s, _)| *s == k)
                .map(|(_, secret)| secret.clone())
                .or_else(|| n.secret.clone()),
            SiteId::Hub | SiteId::BackupHub => n.secret.clone(),
        };
        if let Some(secret) = secret {
            line(format!("secret = {}", quote(&secret)));
        }
        let hub = match id {
            SiteId::Hub | SiteId::BackupHub => true,
            SiteId::Spoke(k) => self.is_regional_hub(k),
        };
        if hub {
            if n.shortcuts {
                line("redirect = true".into());
            }
            if !n.allowed_nbma.is_empty() {
                line(format!("allowed-nbma = {}", list(&n.allowed_nbma)));
            }
        } else {
            if n.shortcuts {
                line("shortcuts = true".into());
            }
            if let Some(idle) = n.shortcut_idle {
                line(format!("shortcut-idle = {idle}"));
            }
        }
        let SiteId::Spoke(k) = id else {
            return toml;
        };
        if let Some(f) = n.failover_after {
            line(format!("failover-after = {f}"));
        }
        line(format!("register = {}", list(&self.registered(k))));
        for (priority, nhs_id) in self.nhs_of(k).into_iter().enumerate() {
            let nhs = SiteAddrs::of(nhs_id);
            line(String::new());
            line("[[nhrp.nhs]]".into());
            line(format!("name = {}", quote(&nhs_id.peer_name())));
            line(format!("nbma = {}", quote(&nhs.nbma.to_string())));
            line(format!(
                "address = {}",
                list(&[nhs.tunnel_v4.to_string(), nhs.tunnel_v6.to_string()])
            ));
            line(format!(
                "encap = {}",
                quote(self.spokes[k - 1].encap.as_str())
            ));
            line(format!("priority = {}", priority + 1));
        }
        toml
    }
}
