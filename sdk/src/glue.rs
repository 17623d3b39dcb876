//! The glue between the generated WIT exports and a [`Plugin`]: [`Runner`] owns one plugin
//! instance, converts the `init` records and runs the hooks over the 64-byte slots of a batch.
//! [`export_plugin!`](crate::export_plugin) keeps a `Runner` in a static; `testing::Harness`
//! drives the very same `Runner`, so native tests exercise what the host will call.
//!
//! A hook encodes its verdicts into a buffer the runner reuses (it grows to the largest batch
//! once) and the export hands them to the host with one `verdicts.put` call; plus one host
//! call per non-zero counter. Nothing is allocated or logged per packet.

use core::net::IpAddr;

use crate::abi::{
    CLASSIFY_SLOT, Classify, MARK_SLOT, Mark, PACKET_SLOT, Packet, ROUTE_SLOT, Route,
};
use crate::bindings::mgre::policy::types as wit;
use crate::host;
use crate::net::Prefix;
use crate::nhrp::{
    Admission, QosGroup, Refusal, Registration, ShortcutKind, ShortcutRequest, ShortcutVerdict,
};
use crate::plugin::{Hooks, Info, InitContext, PeerInfo, Plugin, Role};

/// One plugin instance as the host sees it.
pub struct Runner<P> {
    plugin: Option<P>,
    /// The verdicts of the latest hook call, reused across calls.
    verdicts: Vec<u8>,
}

impl<P: Plugin> Runner<P> {
    /// A runner before `init`: every hook returns "no opinion" verdicts.
    pub const fn new() -> Runner<P> {
        Runner {
            plugin: None,
            verdicts: Vec::new(),
        }
    }

    /// The `init` export: converts the WIT context, builds the plugin, returns its info.
    /// On error the runner stays uninitialised.
    pub fn init(&mut self, ctx: wit::InitContext) -> Result<wit::PluginInfo, String> {
        self.plugin = None;
        let result = context_from_wit(ctx)
            .and_then(P::init)
            .and_then(|(plugin, info)| {
                info.validate()?;
                self.plugin = Some(plugin);
                Ok(info_to_wit(info))
            });
        host::flush_counters();
        result
    }

    /// The `classify` export: one 8-byte verdict per 64-byte packet slot, for
    /// `verdicts.put`.
    pub fn classify(&mut self, batch: &[u8]) -> &[u8] {
        let out = &mut self.verdicts;
        run_hook::<P, _, CLASSIFY_SLOT>(
            self.plugin.as_mut(),
            batch,
            out,
            P::classify,
            Classify::write,
        )
    }

    /// The `mark` export: one 12-byte verdict per 64-byte packet slot.
    pub fn mark(&mut self, batch: &[u8]) -> &[u8] {
        let out = &mut self.verdicts;
        run_hook::<P, _, MARK_SLOT>(self.plugin.as_mut(), batch, out, P::mark, Mark::write)
    }

    /// The `route` export: one 24-byte verdict per 64-byte packet slot.
    pub fn route(&mut self, batch: &[u8]) -> &[u8] {
        let out = &mut self.verdicts;
        run_hook::<P, _, ROUTE_SLOT>(self.plugin.as_mut(), batch, out, P::route, Route::write)
    }

    /// The `admit-registration` export. Before `init` it accepts without attributes; a
    /// request with an address the SDK cannot parse (a host bug) is refused with the reason.
    pub fn admit_registration(&mut self, req: wit::Registration) -> wit::Admission {
        let admission = match (self.plugin.as_mut(), registration_from_wit(&req)) {
            (Some(plugin), Ok(req)) => plugin.admit_registration(&req),
            (None, _) => Admission::accept(),
            (Some(_), Err(reason)) => Admission::refuse(reason),
        };
        host::flush_counters();
        admission_to_wit(admission)
    }

    /// The `shortcut-policy` export. Before `init` it allows; a request with an address the
    /// SDK cannot parse (a host bug) is denied.
    pub fn shortcut_policy(&mut self, req: wit::ShortcutRequest) -> wit::ShortcutVerdict {
        let verdict = match (self.plugin.as_mut(), shortcut_from_wit(&req)) {
            (Some(plugin), Some(req)) => plugin.shortcut_policy(&req),
            (None, _) => ShortcutVerdict::Allow,
            (Some(_), None) => ShortcutVerdict::Deny,
        };
        host::flush_counters();
        match verdict {
            ShortcutVerdict::Allow => wit::ShortcutVerdict::Allow,
            ShortcutVerdict::Deny => wit::ShortcutVerdict::Deny,
        }
    }

    /// The plugin, once initialised.
    pub fn plugin(&mut self) -> Option<&mut P> {
        self.plugin.as_mut()
    }
}

impl<P: Plugin> Default for Runner<P> {
    fn default() -> Self {
        Runner::new()
    }
}

/// Forwards panic messages to the host log (wasm only): in wasm a panic aborts into an
/// `unreachable` trap, and without this hook its message would be lost.
pub fn install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                host::log(host::Level::Error, &format!("plugin panicked: {info}"));
            }));
        });
    }
}

/// Runs `hook` over every full slot of `batch` (a trailing partial slot is ignored) and
/// encodes one verdict per slot into `out` (resized, reusing its capacity); before `init`,
/// every verdict is `V::default()`.
fn run_hook<'o, P, V: Default, const N: usize>(
    plugin: Option<&mut P>,
    batch: &[u8],
    out: &'o mut Vec<u8>,
    hook: impl Fn(&mut P, Packet<'_>) -> V,
    write: impl Fn(&V, &mut [u8; N]),
) -> &'o [u8] {
    let (packets, _partial) = batch.as_chunks::<PACKET_SLOT>();
    out.clear();
    out.resize(packets.len() * N, 0);
    let (verdicts, _) = out.as_chunks_mut::<N>();
    match plugin {
        Some(plugin) => {
            for (packet, verdict) in packets.iter().zip(verdicts) {
                write(&hook(plugin, Packet(packet)), verdict);
            }
        }
        None => {
            let none = V::default();
            verdicts.iter_mut().for_each(|v| write(&none, v));
        }
    }
    host::flush_counters();
    out
}

/// The WIT context as SDK types. The host formats addresses as `a.b.c.d` or `x::y`
/// (optionally with a `/len`, which is dropped) and prefixes as `net/len` (a bare address is
/// a host prefix); anything else is a host bug and rejects the plugin with a clear message.
fn context_from_wit(ctx: wit::InitContext) -> Result<InitContext, String> {
    let role = match ctx.role.as_str() {
        "hub" => Role::Hub,
        "spoke" => Role::Spoke,
        other => return Err(format!("the host passed an unknown role `{other}`")),
    };
    let addresses = ctx
        .addresses
        .iter()
        .map(|a| parse_address(a).ok_or_else(|| format!("the host passed a bad address `{a}`")))
        .collect::<Result<_, _>>()?;
    let peers = ctx
        .peers
        .into_iter()
        .map(|p| {
            let nbma = parse_address(&p.nbma).ok_or_else(|| {
                format!(
                    "the host passed a bad NBMA address `{}` for peer `{}`",
                    p.nbma, p.name
                )
            })?;
            let prefixes = p
                .prefixes
                .iter()
                .map(|s| {
                    s.parse::<Prefix>().map_err(|e| {
                        format!(
                            "the host passed a bad prefix `{s}` for peer `{}`: {e}",
                            p.name
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(PeerInfo {
                id: p.id,
                name: p.name,
                nbma,
                prefixes,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(InitContext {
        config: ctx.config,
        role,
        addresses,
        peers,
    })
}

fn parse_address(s: &str) -> Option<IpAddr> {
    s.split_once('/').map_or(s, |(a, _len)| a).parse().ok()
}

/// The WIT registration as SDK types; `Err` names a value the host should never send.
fn registration_from_wit(req: &wit::Registration) -> Result<Registration, String> {
    let address = |what: &str, s: &str| {
        parse_address(s).ok_or_else(|| format!("the host passed a bad {what} address `{s}`"))
    };
    let prefixes = req
        .prefixes
        .iter()
        .map(|s| {
            s.parse::<Prefix>()
                .map_err(|e| format!("the host passed a bad prefix `{s}`: {e}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Registration {
        prefixes,
        nbma: address("NBMA", &req.nbma)?,
        source: address("source", &req.source)?,
        nat: req.nat,
        holding_time: req.holding_time,
        unique: req.unique,
    })
}

/// The WIT shortcut request as SDK types; `None` if an address does not parse (a host bug).
fn shortcut_from_wit(req: &wit::ShortcutRequest) -> Option<ShortcutRequest> {
    Some(ShortcutRequest {
        kind: match req.kind {
            wit::ShortcutKind::Redirect => ShortcutKind::Redirect,
            wit::ShortcutKind::Resolution => ShortcutKind::Resolution,
        },
        src: parse_address(&req.src)?,
        dst: parse_address(&req.dst)?,
    })
}

fn admission_to_wit(admission: Admission) -> wit::Admission {
    match admission {
        Admission::Accept(a) => wit::Admission::Accept(wit::AdmissionAttributes {
            qos_group: a
                .qos_group
                .map(|QosGroup { id, name }| wit::QosGroup { id, name }),
            multicast: a.multicast,
            holding_time_cap: a.holding_time_cap,
        }),
        Admission::Refuse(Refusal { code, reason }) => {
            wit::Admission::Refuse(wit::Refusal { code, reason })
        }
    }
}

/// Each SDK hook flag with its WIT counterpart.
pub(crate) fn hook_pairs() -> [(Hooks, wit::Hooks); 5] {
    [
        (Hooks::CLASSIFY, wit::Hooks::CLASSIFY),
        (Hooks::MARK, wit::Hooks::MARK),
        (Hooks::ROUTE, wit::Hooks::ROUTE),
        (Hooks::ADMISSION, wit::Hooks::ADMISSION),
        (Hooks::SHORTCUT, wit::Hooks::SHORTCUT),
    ]
}

fn info_to_wit(info: Info) -> wit::PluginInfo {
    let mut hooks = wit::Hooks::empty();
    for (ours, theirs) in hook_pairs() {
        if info.hooks.contains(ours) {
            hooks = hooks | theirs;
        }
    }
    wit::PluginInfo {
        name: info.name,
        version: info.version,
        hooks,
        classes: info
            .classes
            .into_iter()
            .map(|(id, name)| wit::ClassDef { id, name })
            .collect(),
        counters: info.counters,
    }
}

/// Registers a [`Plugin`](crate::Plugin) type as this crate's plugin: implements the WIT
/// exports `init`, `classify`, `mark`, `route`, `admit-registration` and `shortcut-policy`
/// for it. Use it exactly once, at the crate
/// root:
///
/// ```
/// use mgre_sdk::{Hooks, Info, InitContext, Plugin};
///
/// struct Nop;
///
/// impl Plugin for Nop {
///     fn init(_ctx: InitContext) -> Result<(Self, Info), String> {
///         Ok((Nop, Info::new("nop", "0.1.0", Hooks::NONE)))
///     }
/// }
///
/// mgre_sdk::export_plugin!(Nop);
/// ```
///
/// The plugin instance lives in a static (a wasm instance is single-threaded). Hooks called
/// before a successful `init` return "no opinion" verdicts. The first `init` installs a panic
/// hook that forwards the panic message to the host log. Natively (unit tests) the wasm
/// exports are not emitted; test through [`testing::Harness`](crate::testing::Harness).
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            use ::core::result::Result;
            use $crate::__private::{
                Guest, RefCell, Runner, String, Vec, WitAdmission, WitInitContext, WitPluginInfo,
                WitRegistration, WitShortcutRequest, WitShortcutVerdict,
            };

            $crate::__private::thread_local! {
                static RUNNER: RefCell<Runner<$plugin>> = const { RefCell::new(Runner::new()) };
            }

            // Only the wasm exports below construct it.
            #[allow(dead_code)]
            struct MgrePluginExports;

            impl Guest for MgrePluginExports {
                fn init(ctx: WitInitContext) -> Result<WitPluginInfo, String> {
                    $crate::__private::install_panic_hook();
                    RUNNER.with_borrow_mut(|r| r.init(ctx))
                }
                fn classify(packets: Vec<u8>) {
                    RUNNER
                        .with_borrow_mut(|r| $crate::__private::put_verdicts(r.classify(&packets)))
                }
                fn mark(packets: Vec<u8>) {
                    RUNNER.with_borrow_mut(|r| $crate::__private::put_verdicts(r.mark(&packets)))
                }
                fn route(packets: Vec<u8>) {
                    RUNNER.with_borrow_mut(|r| $crate::__private::put_verdicts(r.route(&packets)))
                }
                fn admit_registration(req: WitRegistration) -> WitAdmission {
                    RUNNER.with_borrow_mut(|r| r.admit_registration(req))
                }
                fn shortcut_policy(req: WitShortcutRequest) -> WitShortcutVerdict {
                    RUNNER.with_borrow_mut(|r| r.shortcut_policy(req))
                }
            }

            #[cfg(target_arch = "wasm32")]
    $crate::bindings::export!(MgrePluginExports with_types_in $crate::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    use crate::abi::{self, RouteAction};
    use crate::testing::{self, Harness};
    use crate::{Level, counter_add, log};

    use super::*;

    /// Counts packets per protocol; classifies UDP as class 7; drops to port 9 after init
    /// config `{"fail": true}` is rejected.
    struct Probe {
        ttl: u32,
    }

    impl Plugin for Probe {
        fn init(ctx: InitContext) -> Result<(Self, Info), String> {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields, rename_all = "kebab-case")]
            struct Config {
                #[serde(default)]
                ttl_ms: u32,
                #[serde(default)]
                zero_class: bool,
            }
            let config: Config = ctx.parse_config()?;
            log(Level::Info, &format!("probe: {} peers", ctx.peers.len()));
            counter_add(1, 1);
            let mut info = Info::new("probe", "1.0.0", Hooks::CLASSIFY | Hooks::ROUTE);
            info.classes = vec![(if config.zero_class { 0 } else { 7 }, "udp".into())];
            info.counters = vec!["packets".into(), "inits".into()];
            Ok((Probe { ttl: config.ttl_ms }, info))
        }

        fn classify(&mut self, p: Packet<'_>) -> Classify {
            counter_add(0, 1);
            let class = if p.protocol() == 17 { 7 } else { 0 };
            Classify {
                class,
                ttl_ms: self.ttl,
            }
        }

        fn route(&mut self, p: Packet<'_>) -> Route {
            let action = match p.dst_port() {
                9 => RouteAction::Drop,
                _ => RouteAction::Default,
            };
            Route {
                action,
                ttl_ms: self.ttl,
            }
        }
    }

    fn udp() -> testing::PacketBuilder {
        testing::udp("203.0.113.2:5060", "203.0.113.66:9")
    }

    #[test]
    fn hooks_before_init_give_no_opinion_per_slot() {
        let mut r = Runner::<Probe>::new();
        let batch = testing::batch([udp(), udp()]);
        assert_eq!(r.classify(&batch), vec![0; 2 * CLASSIFY_SLOT]);
        let marks = r.mark(&batch);
        assert_eq!(marks.len(), 2 * MARK_SLOT);
        assert_eq!(
            Mark::read(marks[..MARK_SLOT].try_into().unwrap()),
            Mark::default()
        );
        assert_eq!(r.route(&batch), vec![0; 2 * ROUTE_SLOT]);
    }

    #[test]
    fn one_verdict_per_full_slot() {
        let mut r = Runner::<Probe>::new();
        r.init(testing::context_to_wit(&testing::context().build()))
            .unwrap();
        let mut batch = testing::batch([
            udp(),
            udp(),
            testing::tcp("[2001:db8::1]:1", "[2001:db8::2]:2"),
        ]);
        batch.extend_from_slice(&[0xaa; PACKET_SLOT - 1]);
        let out = r.classify(&batch);
        assert_eq!(out.len(), 3 * CLASSIFY_SLOT, "the partial slot is ignored");
        let classes: Vec<u32> = out
            .as_chunks::<CLASSIFY_SLOT>()
            .0
            .iter()
            .map(|v| Classify::read(v).class)
            .collect();
        assert_eq!(classes, [7, 7, 0]);
        assert!(r.classify(&[]).is_empty());
    }

    #[test]
    fn harness_runs_the_glue_and_flushes_counters() {
        let ctx = testing::context()
            .config(r#"{"ttl-ms": 1500}"#)
            .peer(1, "hub", "192.0.2.1", &["203.0.113.192/26"])
            .build();
        let mut h = Harness::<Probe>::init(ctx).unwrap();
        assert_eq!(h.info().classes, [(7, "udp".to_string())]);
        assert_eq!(h.counter("inits"), 1, "counted during init");
        assert_eq!(h.logs(), [(Level::Info, "probe: 1 peers".to_string())]);
        let v = h.classify([udp(), udp().dscp(46)]);
        assert_eq!(
            v,
            [Classify {
                class: 7,
                ttl_ms: 1500
            }; 2]
        );
        assert_eq!(h.route_one(udp()).action, RouteAction::Drop);
        assert_eq!(h.counter("packets"), 2);
        assert_eq!(testing::counters(), [2, 1]);
    }

    #[test]
    #[should_panic(expected = "does not declare the mark hook")]
    fn harness_refuses_undeclared_hooks() {
        let mut h = Harness::<Probe>::init(testing::context().build()).unwrap();
        h.mark_one(udp());
    }

    #[test]
    fn init_errors_name_the_key_and_leave_the_runner_uninitialised() {
        let err = Harness::<Probe>::init(testing::context().config(r#"{"ttl-ms": "x"}"#).build())
            .unwrap_err();
        assert_eq!(
            err,
            "config key `ttl-ms`: invalid type: string \"x\", expected u32"
        );
        let err = Harness::<Probe>::init(testing::context().config(r#"{"tll-ms": 1}"#).build())
            .unwrap_err();
        assert!(
            err.starts_with("config key `tll-ms`: unknown field `tll-ms`"),
            "{err}"
        );
        let err = Harness::<Probe>::init(testing::context().config("42").build()).unwrap_err();
        assert!(
            err.starts_with("config: invalid type: integer `42`"),
            "{err}"
        );
        let err =
            Harness::<Probe>::init(testing::context().config(r#"{"zero-class": true}"#).build())
                .unwrap_err();
        assert!(err.contains("class `udp` has id 0"), "{err}");

        let mut r = Runner::<Probe>::new();
        let ok = testing::context_to_wit(&testing::context().build());
        r.init(ok.clone()).unwrap();
        let mut bad = ok;
        bad.config = "{".into();
        assert!(r.init(bad).is_err());
        assert!(r.plugin().is_none());
        assert_eq!(r.classify(&testing::batch([udp()])), vec![0; CLASSIFY_SLOT]);
    }

    #[test]
    fn empty_or_null_config_reads_as_an_empty_table() {
        for config in ["", "  ", "null", "{}"] {
            let h = Harness::<Probe>::init(testing::context().config(config).build());
            assert!(h.is_ok(), "{config:?}");
        }
    }

    #[test]
    fn wit_context_converts_and_rejects_host_mistakes() {
        let ctx = testing::context()
            .role(Role::Hub)
            .address("198.51.100.1/24")
            .address("2001:db8:100::1")
            .peer(
                3,
                "spoke1",
                "192.0.2.11",
                &["203.0.113.0/26", "2001:db8:1::/64"],
            )
            .build();
        let wit = testing::context_to_wit(&ctx);
        assert_eq!(context_from_wit(wit.clone()), Ok(ctx));
        let mut with_len = wit.clone();
        with_len.addresses = vec!["198.51.100.1/24".into()];
        assert_eq!(
            context_from_wit(with_len).unwrap().addresses,
            ["198.51.100.1".parse::<IpAddr>().unwrap()]
        );
        let mut bad_role = wit.clone();
        bad_role.role = "router".into();
        assert_eq!(
            context_from_wit(bad_role),
            Err("the host passed an unknown role `router`".into())
        );
        let mut bad_prefix = wit;
        bad_prefix.peers[0].prefixes.push("203.0.113.0/99".into());
        let err = context_from_wit(bad_prefix).unwrap_err();
        assert!(
            err.contains("bad prefix `203.0.113.0/99` for peer `spoke1`"),
            "{err}"
        );
    }

    /// Refuses registrations from behind NAT, puts the rest in QoS group 3 with a 600 s cap
    /// and counts them; denies shortcuts to 198.51.100.0/24.
    struct NhrpProbe;

    impl Plugin for NhrpProbe {
        fn init(_ctx: InitContext) -> Result<(Self, Info), String> {
            let mut info = Info::new("nhrp-probe", "1.0.0", Hooks::ADMISSION | Hooks::SHORTCUT);
            info.counters = vec!["admitted".into()];
            Ok((NhrpProbe, info))
        }

        fn admit_registration(&mut self, req: &Registration) -> Admission {
            if req.nat {
                return Admission::refuse(format!("{} is behind NAT", req.nbma));
            }
            counter_add(0, req.prefixes.len() as u64);
            Admission::Accept(crate::nhrp::AdmissionAttributes {
                qos_group: Some(QosGroup {
                    id: 3,
                    name: "gold".into(),
                }),
                multicast: Some(req.unique),
                holding_time_cap: Some(600),
            })
        }

        fn shortcut_policy(&mut self, req: &ShortcutRequest) -> ShortcutVerdict {
            let lan: Prefix = "198.51.100.0/24".parse().unwrap();
            if lan.contains(req.dst) {
                ShortcutVerdict::Deny
            } else {
                ShortcutVerdict::Allow
            }
        }
    }

    #[test]
    fn nhrp_hooks_run_through_the_wit_records() {
        let mut h = Harness::<NhrpProbe>::init(testing::context().build()).unwrap();
        let reg = testing::registration(&["203.0.113.0/26", "2001:db8:1::/64"], "192.0.2.11")
            .unique()
            .holding_time(7200);
        let Admission::Accept(a) = h.admit(reg.clone()) else {
            panic!("refused")
        };
        assert_eq!(
            a.qos_group.map(|g| (g.id, g.name)),
            Some((3, "gold".into()))
        );
        assert_eq!((a.multicast, a.holding_time_cap), (Some(true), Some(600)));
        assert_eq!(h.counter("admitted"), 2);
        let refused = h.admit(reg.behind_nat("198.51.100.7"));
        assert_eq!(refused, Admission::refuse("192.0.2.11 is behind NAT"));
        let v = |h: &mut Harness<NhrpProbe>, dst| {
            h.shortcut(ShortcutKind::Redirect, "203.0.113.1", dst)
        };
        assert_eq!(v(&mut h, "198.51.100.20"), ShortcutVerdict::Deny);
        assert_eq!(v(&mut h, "203.0.113.70"), ShortcutVerdict::Allow);
    }

    #[test]
    fn nhrp_hooks_before_init_and_on_host_mistakes() {
        let req = testing::registration_to_wit(
            &testing::registration(&["203.0.113.0/26"], "192.0.2.11").build(),
        );
        let shortcut = wit::ShortcutRequest {
            kind: wit::ShortcutKind::Resolution,
            src: "203.0.113.1".into(),
            dst: "198.51.100.1".into(),
        };
        let mut r = Runner::<NhrpProbe>::new();
        assert!(
            matches!(r.admit_registration(req.clone()), wit::Admission::Accept(a) if a.qos_group.is_none())
        );
        assert_eq!(
            r.shortcut_policy(shortcut.clone()),
            wit::ShortcutVerdict::Allow
        );
        r.init(testing::context_to_wit(&testing::context().build()))
            .unwrap();
        assert_eq!(
            r.shortcut_policy(shortcut.clone()),
            wit::ShortcutVerdict::Deny
        );
        let mut bad = req;
        bad.prefixes.push("203.0.113.0/99".into());
        let wit::Admission::Refuse(refusal) = r.admit_registration(bad) else {
            panic!("accepted a bad prefix")
        };
        assert_eq!(refusal.code, crate::nhrp::ADMINISTRATIVELY_PROHIBITED);
        assert!(
            refusal.reason.contains("bad prefix `203.0.113.0/99`"),
            "{}",
            refusal.reason
        );
        let bad_dst = wit::ShortcutRequest {
            dst: "nowhere".into(),
            ..shortcut
        };
        assert_eq!(r.shortcut_policy(bad_dst), wit::ShortcutVerdict::Deny);
    }

    #[test]
    fn abi_packets_view_matches_the_runner() {
        let batch = testing::batch([udp().ingress(4)]);
        let p = abi::packets(&batch).next().unwrap();
        assert_eq!((p.ingress_peer(), p.dst_port()), (Some(4), 9));
    }
}
