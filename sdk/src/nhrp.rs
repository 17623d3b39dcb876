//! The NHRP control-path hooks' values: a [`Registration`] a hub is asked to admit and the
//! [`Admission`] a plugin answers, a [`ShortcutRequest`] and its [`ShortcutVerdict`]. They
//! mirror the WIT records of `wit/policy.wit` (0.2.0) as plain Rust types with parsed
//! addresses; the plugin host uses the same types, so host and plugins agree on meaning and
//! on how several plugins' answers combine ([`Admission::then`], [`ShortcutVerdict::then`]).
//!
//! Plain data, `no_std` (with `alloc`); nothing here runs per packet.

use alloc::string::String;
use alloc::vec::Vec;
use core::net::IpAddr;

use crate::net::Prefix;

/// An NHRP registration request as the hub's next-hop server received it, after its own
/// checks (authentication, allowed NBMA ranges, table size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The overlay prefixes being registered (one per client information entry).
    pub prefixes: Vec<Prefix>,
    /// The spoke's claimed NBMA (underlay) address.
    pub nbma: IpAddr,
    /// The underlay address the request came from; differs from `nbma` behind NAT.
    pub source: IpAddr,
    /// Whether NAT was detected between the spoke and this hub.
    pub nat: bool,
    /// The requested holding time, in seconds.
    pub holding_time: u16,
    /// The request's unique flag.
    pub unique: bool,
}

/// The answer to a [`Registration`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Register, with these attributes (`AdmissionAttributes::default()`: no opinion).
    Accept(AdmissionAttributes),
    /// Answer with a NAK.
    Refuse(Refusal),
}

impl Default for Admission {
    /// Accept without attributes: what a plugin without the admission hook says.
    fn default() -> Admission {
        Admission::Accept(AdmissionAttributes::default())
    }
}

impl Admission {
    /// Accept without attributes.
    pub fn accept() -> Admission {
        Admission::default()
    }

    /// Refuse with code [`ADMINISTRATIVELY_PROHIBITED`] and `reason` (for the hub's log).
    pub fn refuse(reason: impl Into<String>) -> Admission {
        Admission::Refuse(Refusal {
            code: ADMINISTRATIVELY_PROHIBITED,
            reason: reason.into(),
        })
    }

    /// Whether this accepts.
    pub fn is_accept(&self) -> bool {
        matches!(self, Admission::Accept(_))
    }

    /// This answer combined with the answer of a plugin later in the chain: a refusal
    /// stands (the first refusal wins), otherwise a later refusal wins, otherwise the
    /// attributes are merged ([`AdmissionAttributes::then`]).
    #[must_use]
    pub fn then(self, later: Admission) -> Admission {
        match (self, later) {
            (refused @ Admission::Refuse(_), _) => refused,
            (Admission::Accept(_), refused @ Admission::Refuse(_)) => refused,
            (Admission::Accept(a), Admission::Accept(b)) => Admission::Accept(a.then(b)),
        }
    }
}

/// Attributes of an accepted registration; `None` means no opinion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdmissionAttributes {
    /// The spoke's QoS group.
    pub qos_group: Option<QosGroup>,
    /// Whether the hub replicates multicast to the spoke (`None`: the hub's default).
    pub multicast: Option<bool>,
    /// Upper bound on the holding time granted, in seconds.
    pub holding_time_cap: Option<u16>,
}

impl AdmissionAttributes {
    /// These attributes overlaid by those of a plugin later in the chain: a later QoS group
    /// or multicast flag overrides an earlier one; holding-time caps combine to the smallest
    /// (a cap only ever shortens).
    #[must_use]
    pub fn then(self, later: AdmissionAttributes) -> AdmissionAttributes {
        AdmissionAttributes {
            qos_group: later.qos_group.or(self.qos_group),
            multicast: later.multicast.or(self.multicast),
            holding_time_cap: match (self.holding_time_cap, later.holding_time_cap) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// The holding time to grant for a request of `requested` seconds.
    pub fn granted_holding_time(&self, requested: u16) -> u16 {
        self.holding_time_cap
            .map_or(requested, |cap| requested.min(cap))
    }
}

/// A QoS group an admitted spoke is put in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QosGroup {
    /// Group id, as the operator numbers groups.
    pub id: u32,
    /// Group name, shown in `mgre show nhrp` and metrics.
    pub name: String,
}

/// Why a registration is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The NHRP error code the NAK carries (RFC 2332, section 5.2.0.1).
    pub code: u8,
    /// For the hub's log; never sent to the spoke.
    pub reason: String,
}

/// NHRP error code 4, "administratively prohibited": the usual refusal code.
pub const ADMINISTRATIVELY_PROHIBITED: u8 = 4;

/// What would create a direct spoke-to-spoke path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShortcutKind {
    /// The hub is about to send a traffic indication (redirect) to the source spoke.
    Redirect,
    /// A resolution request from `src` for `dst` is being answered (hub) or sent (spoke).
    Resolution,
}

impl ShortcutKind {
    /// `"redirect"` or `"resolution"`, as in the WIT and the mgre config.
    pub const fn name(self) -> &'static str {
        match self {
            ShortcutKind::Redirect => "redirect",
            ShortcutKind::Resolution => "resolution",
        }
    }
}

/// A redirect or shortcut being considered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShortcutRequest {
    /// Redirect or resolution.
    pub kind: ShortcutKind,
    /// Overlay source address of the traffic (the requester).
    pub src: IpAddr,
    /// Overlay destination address the shortcut would reach.
    pub dst: IpAddr,
}

/// The answer to a [`ShortcutRequest`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ShortcutVerdict {
    /// Let the redirect or shortcut happen.
    #[default]
    Allow,
    /// Keep the traffic on the hub path.
    Deny,
}

impl ShortcutVerdict {
    /// This verdict combined with that of a plugin later in the chain: any deny wins.
    #[must_use]
    pub fn then(self, later: ShortcutVerdict) -> ShortcutVerdict {
        if self == ShortcutVerdict::Deny {
            self
        } else {
            later
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    fn group(id: u32) -> Option<QosGroup> {
        Some(QosGroup {
            id,
            name: id.to_string(),
        })
    }

    #[test]
    fn later_attributes_override_and_caps_take_the_minimum() {
        let first = AdmissionAttributes {
            qos_group: group(1),
            multicast: Some(true),
            holding_time_cap: Some(600),
        };
        let second = AdmissionAttributes {
            qos_group: group(2),
            multicast: None,
            holding_time_cap: Some(900),
        };
        let merged = first.clone().then(second);
        assert_eq!(merged.qos_group, group(2));
        assert_eq!(
            merged.multicast,
            Some(true),
            "no opinion keeps the earlier value"
        );
        assert_eq!(merged.holding_time_cap, Some(600));
        assert_eq!(merged.granted_holding_time(7200), 600);
        assert_eq!(merged.granted_holding_time(300), 300);
        let uncapped = AdmissionAttributes::default();
        assert_eq!(uncapped.clone().then(first.clone()), first);
        assert_eq!(uncapped.granted_holding_time(7200), 7200);
    }

    #[test]
    fn the_first_refusal_wins() {
        let a = Admission::refuse("first");
        let b = Admission::Refuse(Refusal {
            code: 5,
            reason: "second".into(),
        });
        assert_eq!(a.clone().then(b.clone()), a);
        assert_eq!(Admission::accept().then(b.clone()), b);
        assert_eq!(b.clone().then(Admission::accept()), b);
        assert!(Admission::accept().then(Admission::accept()).is_accept());
        assert_eq!(
            Admission::refuse("x"),
            Admission::Refuse(Refusal {
                code: ADMINISTRATIVELY_PROHIBITED,
                reason: "x".into()
            })
        );
    }

    #[test]
    fn any_deny_wins() {
        use ShortcutVerdict::{Allow, Deny};
        assert_eq!(Allow.then(Allow), Allow);
        assert_eq!(Allow.then(Deny), Deny);
        assert_eq!(Deny.then(Allow), Deny);
        assert_eq!(ShortcutVerdict::default(), Allow);
    }
}
