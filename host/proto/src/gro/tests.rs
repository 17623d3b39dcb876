//! GRO driven with hand-built segments, and a property test that re-segments every coalesced
//! packet with a reference software segmentation and compares it with the input. TCP here,
//! UDP (with [`Gro::with_udp`]) in `udp`.

use proptest::prelude::*;

use super::*;

mod udp;

/// A TCP segment to build; payload byte `k` is `(seq + k) ^ sport`, so merged payloads of a
/// flow read as one continuous pattern.
#[derive(Clone, Debug)]
struct Tcp {
    v6: bool,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    urgent: u16,
    /// TCP option bytes (a multiple of 4 long).
    opts: Vec<u8>,
    payload: usize,
    /// IPv4 TOS / IPv6 traffic class.
    tos: u8,
    /// IPv4 TTL / IPv6 hop limit.
    ttl: u8,
    id: u16,
    df: bool,
    mf: bool,
    /// IPv4 option bytes (a multiple of 4 long).
    ip_opts: usize,
    flow_label: u32,
    /// Flip a payload (or, without payload, a header) bit after the checksum is computed.
    bad_tcp_csum: bool,
    bad_ip_csum: bool,
}

impl Tcp {
    fn v4(seq: u32, payload: usize) -> Tcp {
        Tcp {
            v6: false,
            sport: 40000,
            dport: 5201,
            seq,
            ack: 0x1234_5678,
            flags: ACK,
            window: 502,
            urgent: 0,
            opts: Vec::new(),
            payload,
            tos: 0,
            ttl: 64,
            id: 7,
            df: true,
            mf: false,
            ip_opts: 0,
            flow_label: 0,
            bad_tcp_csum: false,
            bad_ip_csum: false,
        }
    }

    fn v6(seq: u32, payload: usize) -> Tcp {
        Tcp {
            v6: true,
            flow_label: 0x5_4321,
            ..Tcp::v4(seq, payload)
        }
    }

    fn with(&self, f: impl FnOnce(&mut Tcp)) -> Tcp {
        let mut t = self.clone();
        f(&mut t);
        t
    }

    /// The `n` segments following this one (same size, sequence numbers advancing).
    fn run(&self, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|k| {
                self.with(|t| t.seq = t.seq.wrapping_add((k * t.payload) as u32))
                    .build()
            })
            .collect()
    }

    fn next_seq(&self) -> u32 {
        self.seq.wrapping_add(self.payload as u32)
    }

    fn ip_hdr_len(&self) -> usize {
        if self.v6 { 40 } else { 20 + self.ip_opts }
    }

    fn build(&self) -> Vec<u8> {
        let iph = self.ip_hdr_len();
        let tcph = 20 + self.opts.len();
        let mut p = vec![0u8; iph + tcph + self.payload];
        self.emit_ip(&mut p, 6);
        let t = &mut p[iph..];
        t[0..2].copy_from_slice(&self.sport.to_be_bytes());
        t[2..4].copy_from_slice(&self.dport.to_be_bytes());
        t[4..8].copy_from_slice(&self.seq.to_be_bytes());
        t[8..12].copy_from_slice(&self.ack.to_be_bytes());
        t[12] = ((tcph / 4) as u8) << 4;
        t[13] = self.flags;
        t[14..16].copy_from_slice(&self.window.to_be_bytes());
        t[18..20].copy_from_slice(&self.urgent.to_be_bytes());
        t[20..tcph].copy_from_slice(&self.opts);
        for (k, b) in t[tcph..].iter_mut().enumerate() {
            *b = (self.seq as usize + k) as u8 ^ self.sport as u8;
        }
        set_tcp_checksum(&mut p, iph);
        if self.bad_tcp_csum {
            let last = p.len() - 1;
            p[last] ^= 0x10;
        }
        p
    }

    /// Writes the IP header (IPv4 with `ip_opts` option bytes, or IPv6) for packet `p` carrying
    /// protocol `proto`.
    fn emit_ip(&self, p: &mut [u8], proto: u8) {
        let (iph, len) = (self.ip_hdr_len(), p.len());
        if self.v6 {
            let w = 6 << 28 | u32::from(self.tos) << 20 | self.flow_label;
            p[0..4].copy_from_slice(&w.to_be_bytes());
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            p[6] = proto;
            p[7] = self.ttl;
            p[8..24].copy_from_slice(&SRC6);
            p[24..40].copy_from_slice(&DST6);
        } else {
            p[0] = 0x40 | (iph / 4) as u8;
            p[1] = self.tos;
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[4..6].copy_from_slice(&self.id.to_be_bytes());
            p[6] = if self.df { 0x40 } else { 0 } | if self.mf { 0x20 } else { 0 };
            p[8] = self.ttl;
            p[9] = proto;
            p[12..16].copy_from_slice(&SRC4);
            p[16..20].copy_from_slice(&DST4);
            for (k, b) in p[20..iph].iter_mut().enumerate() {
                *b = if k == 0 { 0x94 } else { 1 }; // router alert-ish, then NOPs
            }
            let c = checksum::checksum(&p[..iph]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            if self.bad_ip_csum {
                p[10] ^= 0x40;
            }
        }
    }
}

/// Fresh frames holding `pkts`, `cap` bytes each, packet at offset `HEAD`.
fn frames(pkts: &[Vec<u8>], cap: usize) -> Vec<GroFrame> {
    pkts.iter()
        .map(|p| {
            let mut buf = vec![0xeeu8; cap].into_boxed_slice();
            buf[HEAD..HEAD + p.len()].copy_from_slice(p);
            GroFrame {
                buf,
                start: HEAD,
                len: p.len(),
            }
        })
        .collect()
}

/// Coalesces `pkts` in 64 KiB frames, checks the output against the input with
/// [`check_output`], and returns the frames and the listed indices.
fn run(pkts: &[Vec<u8>]) -> (Vec<GroFrame>, Vec<u16>) {
    run_in(pkts, HEAD + 65536)
}

fn run_in(pkts: &[Vec<u8>], cap: usize) -> (Vec<GroFrame>, Vec<u16>) {
    run_with(pkts, cap, false)
}

/// Coalesces `pkts` in frames of `cap` bytes, UDP too if `udp`, and checks the output.
fn run_with(pkts: &[Vec<u8>], cap: usize, udp: bool) -> (Vec<GroFrame>, Vec<u16>) {
    let mut fs = frames(pkts, cap);
    let mut out = vec![0u16; pkts.len()];
    let n = Gro::new(64).with_udp(udp).coalesce(&mut fs, &mut out);
    out.truncate(n);
    check_output(pkts, &fs, &out);
    (fs, out)
}

/// Number of segments behind each listed frame (1 for a packet written as it is).
fn segments(fs: &[GroFrame], out: &[u16]) -> Vec<usize> {
    out.iter()
        .map(|&o| resegment(&fs[usize::from(o)]).len())
        .collect()
}

#[derive(Debug, PartialEq)]
struct VnetHdr {
    flags: u8,
    gso_type: u8,
    hdr_len: u16,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

fn vnet_hdr(f: &GroFrame) -> VnetHdr {
    let h = &f.with_vnet_hdr()[..VNET_HDR_LEN];
    let le = |at: usize| u16::from_le_bytes([h[at], h[at + 1]]);
    VnetHdr {
        flags: h[0],
        gso_type: h[1],
        hdr_len: le(2),
        gso_size: le(4),
        csum_start: le(6),
        csum_offset: le(8),
    }
}

/// Checks every written frame and returns each one's packets as the kernel would see them:
/// a packet written as it is, or a super-packet cut by the reference segmentation below.
///
/// Checked: `out` rises strictly; every input is either listed or merged; an uncoalesced frame
/// is byte-identical to its input behind an all-zero header; a coalesced one has a consistent
/// virtio-net header, IP length fields, valid IPv4 header checksum and the pseudo-header sum
/// in its TCP (or UDP) checksum field; and the packets of each listed frame, after re-segmentation,
/// are exactly the inputs from its index up to the next listed frame of the same flow that
/// were merged into it (checked by the callers through [`flows_match`]).
fn check_output(input: &[Vec<u8>], fs: &[GroFrame], out: &[u16]) {
    assert!(
        out.windows(2).all(|w| w[0] < w[1]),
        "out not rising: {out:?}"
    );
    for &o in out {
        let f = &fs[usize::from(o)];
        let h = vnet_hdr(f);
        if h.gso_type == VNET_GSO_NONE {
            assert_eq!(f.with_vnet_hdr()[..VNET_HDR_LEN], [0; VNET_HDR_LEN]);
            assert_eq!(
                f.packet(),
                &input[usize::from(o)][..],
                "frame {o} was changed"
            );
        } else {
            resegment(f);
        }
    }
    let written: usize = segments(fs, out).iter().sum();
    assert_eq!(written, input.len(), "packets lost or duplicated");
}

/// Reference software segmentation of a coalesced frame (what the kernel does with a GSO
/// packet it has to forward), after checking its headers; a frame written as it is comes back
/// alone. Segments get the super-packet's headers with the sequence number advanced, PSH only
/// on the last, fresh lengths and checksums (the IPv4 ID is left as the first segment's).
fn resegment(f: &GroFrame) -> Vec<Vec<u8>> {
    let h = vnet_hdr(f);
    let p = f.packet();
    if h.gso_type == VNET_GSO_NONE {
        return vec![p.to_vec()];
    }
    if h.gso_type == VNET_GSO_UDP_L4 {
        return udp::resegment(f);
    }
    let v6 = p[0] >> 4 == 6;
    let iph = if v6 { 40 } else { 20 };
    let tcph = usize::from(p[iph + 12] >> 4) * 4;
    let hdrs = iph + tcph;
    let gso = usize::from(h.gso_size);
    assert_eq!(
        h,
        VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: if v6 { VNET_GSO_TCPV6 } else { VNET_GSO_TCPV4 },
            hdr_len: hdrs as u16,
            gso_size: h.gso_size,
            csum_start: iph as u16,
            csum_offset: 16,
        }
    );
    assert!(p.len() <= 65535);
    if v6 {
        assert_eq!(usize::from(be16(p, 4)), p.len() - 40, "IPv6 payload length");
    } else {
        assert_eq!(usize::from(be16(p, 2)), p.len(), "IPv4 total length");
        assert_eq!(checksum::checksum(&p[..20]), 0, "IPv4 header checksum");
    }
    let partial = checksum::fold(pseudo(p, p.len() - iph));
    assert_eq!(be16(p, iph + 16), partial, "TCP pseudo-header sum");
    let payload = &p[hdrs..];
    assert!(
        gso > 0 && payload.len() > gso,
        "coalesced frame of one segment"
    );
    let n = payload.len().div_ceil(gso);
    assert!(n <= usize::from(MAX_SEGMENTS), "{n} segments");

    let seq = u32::from_be_bytes([p[iph + 4], p[iph + 5], p[iph + 6], p[iph + 7]]);
    payload
        .chunks(gso)
        .enumerate()
        .map(|(k, chunk)| {
            let mut s = [&p[..hdrs], chunk].concat();
            let len = s.len();
            let seq = seq.wrapping_add((k * gso) as u32);
            s[iph + 4..iph + 8].copy_from_slice(&seq.to_be_bytes());
            if k + 1 < n {
                s[iph + 13] &= !(PSH | FIN);
            }
            if v6 {
                s[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            } else {
                s[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                s[10..12].fill(0);
                let c = checksum::checksum(&s[..20]);
                s[10..12].copy_from_slice(&c.to_be_bytes());
            }
            set_tcp_checksum(&mut s, iph);
            s
        })
        .collect()
}

/// Whether the written packets, re-segmented and grouped by flow, are the input packets of each
/// flow in input order, apart from the IPv4 ID and header checksum (a re-segmented packet
/// carries the first segment's ID) — leaving out inputs marked `skip` (corrupt segments, which
/// the receiver drops: GRO need not keep them in place, only untouched).
fn flows_match(input: &[Vec<u8>], flow: &[usize], skip: &[bool], fs: &[GroFrame], out: &[u16]) {
    let flows = flow.iter().max().map_or(0, |m| m + 1);
    let mut want = vec![Vec::new(); flows];
    let mut got = vec![Vec::new(); flows];
    for (i, p) in input.iter().enumerate() {
        if !skip[i] {
            want[flow[i]].push(masked(p));
        }
    }
    for &o in out {
        let o = usize::from(o);
        if !skip[o] {
            got[flow[o]].extend(resegment(&fs[o]).iter().map(|p| masked(p)));
        }
    }
    for f in 0..flows {
        assert_eq!(got[f].len(), want[f].len(), "flow {f}: packet count");
        for (k, (g, w)) in got[f].iter().zip(&want[f]).enumerate() {
            assert!(
                g == w,
                "flow {f}: packet {k} differs\n got {g:02x?}\nwant {w:02x?}"
            );
        }
    }
}

fn masked(p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    if p[0] >> 4 == 4 {
        p[4..6].fill(0);
        p[10..12].fill(0);
    }
    p
}

/// Independent of the module's helper: the pseudo-header of IPv4/IPv6 packet `p` (for the
/// protocol in its header, TCP or UDP) via `pseudo_v4`/`pseudo_v6`.
fn pseudo(p: &[u8], l4_len: usize) -> u64 {
    if p[0] >> 4 == 6 {
        let src: [u8; 16] = p[8..24].try_into().unwrap();
        let dst: [u8; 16] = p[24..40].try_into().unwrap();
        checksum::pseudo_v6(&src, &dst, p[6], l4_len as u32)
    } else {
        let src: [u8; 4] = p[12..16].try_into().unwrap();
        let dst: [u8; 4] = p[16..20].try_into().unwrap();
        checksum::pseudo_v4(&src, &dst, p[9], l4_len as u16)
    }
}

fn set_tcp_checksum(p: &mut [u8], iph: usize) {
    p[iph + 16..iph + 18].fill(0);
    let sum = pseudo(p, p.len() - iph);
    let c = !checksum::fold(checksum::accumulate(sum, &p[iph..]));
    p[iph + 16..iph + 18].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn merges_a_run_of_one_flow_v4() {
    let first = Tcp::v4(1000, 1400);
    let pkts = first.run(10);
    let (fs, out) = run(&pkts);
    assert_eq!(out, [0]);
    let f = &fs[0];
    assert_eq!(f.len, 40 + 14_000);
    assert_eq!(
        vnet_hdr(f),
        VnetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: 40,
            gso_size: 1400,
            csum_start: 20,
            csum_offset: 16
        }
    );
    // The payload is the ten payloads in order.
    let want: Vec<u8> = pkts.iter().flat_map(|p| p[40..].to_vec()).collect();
    assert_eq!(&f.packet()[40..], &want[..]);
    flows_match(&pkts, &[0; 10], &[false; 10], &fs, &out);
}

#[test]
fn merges_a_run_of_one_flow_v6_with_options() {
    let ts = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let first = Tcp::v6(u32::MAX - 3000, 1220).with(|t| t.opts = ts);
    let pkts = first.run(5); // the sequence number wraps
    let (fs, out) = run(&pkts);
    assert_eq!(out, [0]);
    let h = vnet_hdr(&fs[0]);
    assert_eq!(
        (h.gso_type, h.hdr_len, h.gso_size, h.csum_start),
        (4, 72, 1220, 40)
    );
    assert_eq!(fs[0].len, 72 + 5 * 1220);
    flows_match(&pkts, &[0; 5], &[false; 5], &fs, &out);
}

#[test]
fn interleaved_flows_merge_separately_in_order() {
    let a = Tcp::v4(0, 1400);
    let b = Tcp::v4(0, 1000).with(|t| t.sport = 40001);
    let c = Tcp::v6(0, 1400);
    let d = Tcp::v6(0, 1400).with(|t| t.dport = 443);
    let mut pkts = Vec::new();
    let mut flow = Vec::new();
    for k in 0..8u32 {
        for (i, t) in [&a, &b, &c, &d].into_iter().enumerate() {
            pkts.push(t.with(|t| t.seq = k * t.payload as u32).build());
            flow.push(i);
        }
    }
    let (fs, out) = run(&pkts);
    assert_eq!(out, [0, 1, 2, 3]);
    assert_eq!(segments(&fs, &out), [8, 8, 8, 8]);
    flows_match(&pkts, &flow, &vec![false; pkts.len()], &fs, &out);
}

#[test]
fn gap_retransmit_and_ack_change_start_new_items() {
    let t = Tcp::v4(0, 1000);
    let pkts = vec![
        t.build(),
        t.with(|t| t.seq = 1000).build(),
        t.with(|t| t.seq = 3000).build(), // gap
        t.with(|t| t.seq = 4000).build(),
        t.with(|t| t.seq = 4000).build(), // retransmit
        t.with(|t| t.seq = 5000).build(),
        t.with(|t| (t.seq, t.ack) = (6000, t.ack + 1)).build(), // new ACK
        t.with(|t| (t.seq, t.ack) = (7000, t.ack + 1)).build(),
    ];
    let (fs, out) = run(&pkts);
    assert_eq!(out, [0, 2, 4, 6]);
    assert_eq!(segments(&fs, &out), [2, 2, 2, 2]);
    flows_match(&pkts, &[0; 8], &[false; 8], &fs, &out);
}

#[test]
fn header_changes_start_new_items() {
    let v4 = Tcp::v4(0, 500);
    let v6 = Tcp::v6(0, 500);
    let nops = v4.with(|t| t.opts = vec![1, 1, 1, 1]);
    let cases: Vec<(&str, &Tcp, Tcp)> = vec![
        ("tos (CE)", &v4, v4.with(|t| t.tos = 3)),
        ("ttl", &v4, v4.with(|t| t.ttl = 63)),
        ("df", &v4, v4.with(|t| t.df = false)),
        ("window", &v4, v4.with(|t| t.window = 503)),
        ("option length", &v4, nops.clone()),
        (
            "option bytes",
            &nops,
            v4.with(|t| t.opts = vec![1, 1, 1, 0]),
        ),
        ("traffic class", &v6, v6.with(|t| t.tos = 0x20)),
        ("flow label", &v6, v6.with(|t| t.flow_label = 1)),
        ("hop limit", &v6, v6.with(|t| t.ttl = 1)),
    ];
    for (what, base, changed) in cases {
        let pkts = vec![
            base.build(),
            base.with(|t| t.seq = 500).build(),
            changed.with(|t| t.seq = 1000).build(),
            changed.with(|t| t.seq = 1500).build(),
        ];
        let (fs, out) = run(&pkts);
        assert_eq!(out, [0, 2], "{what}");
        assert_eq!(segments(&fs, &out), [2, 2], "{what}");
    }
}

#[test]
fn ip_id_is_not_compared() {
    let t = Tcp::v4(0, 1000);
    let pkts: Vec<_> = (0..4u16)
        .map(|k| {
            t.with(|t| (t.seq, t.id) = (u32::from(k) * 1000, 9 * k))
                .build()
        })
        .collect();
    let (_, out) = run(&pkts);
    assert_eq!(out, [0]);
}

#[test]
fn control_flags_are_written_alone_and_end_the_item() {
    let t = Tcp::v4(0, 800);
    for flags in [
        FIN | ACK,
        RST | ACK,
        SYN | ACK,
        URG | ACK,
        ECE | ACK,
        CWR | ACK,
        0,
    ] {
        let pkts = vec![
            t.build(),
            t.with(|t| t.seq = 800).build(),
            t.with(|t| (t.seq, t.flags) = (1600, flags)).build(),
            t.with(|t| t.seq = 1600).build(), // would continue the first item
            t.with(|t| t.seq = 2400).build(),
        ];
        let (fs, out) = run(&pkts);
        assert_eq!(out, [0, 2, 3], "flags {flags:#x}");
        assert_eq!(segments(&fs, &out), [2, 1, 2], "flags {flags:#x}");
        flows_match(&pkts, &[0; 5], &[false; 5], &fs, &out);
    }
    // A pure ACK (no payload) of the flow ends the item as well.
    let pkts = vec![
        t.build(),
        t.with(|t| t.seq = 800).build(),
        t.with(|t| (t.seq, t.payload) = (1600, 0)).build(),
        t.with(|t| t.seq = 1600).build(),
    ];
    let (_, out) = run(&pkts);
    assert_eq!(out, [0, 2, 3]);
}

#[test]
fn unmergeable_ipv4_of_the_flow_ends_the_item() {
    let t = Tcp::v4(0, 800);
    for odd in [t.with(|t| t.ip_opts = 4), t.with(|t| t.mf = true)] {
        let pkts = vec![
            t.build(),
            odd.with(|t| t.seq = 800).build(),
            t.with(|t| t.seq = 800).build(),
            t.with(|t| t.seq = 1600).build(),
        ];
        let (fs, out) = run(&pkts);
        assert_eq!(out, [0, 1, 2]);
        assert_eq!(segments(&fs, &out), [1, 1, 2]);
    }
}

#[test]
fn psh_is_appended_kept_and_ends_the_item() {
    let t = Tcp::v4(0, 1000);
    let pkts = vec![
        t.build(),
        t.with(|t| t.seq = 1000).build(),
        t.with(|t| (t.seq, t.flags) = (2000, ACK | PSH)).build(),
        t.with(|t| t.seq = 3000).build(),
        t.with(|t| t.seq = 4000).build(),
    ];
    let (fs, out) = run(&pkts);
    assert_eq!(out, [0, 3]);
    assert_eq!(segments(&fs, &out), [3, 2]);
    assert_eq!(fs[0].packet()[33], ACK | PSH, "PSH on the super-packet");
    flows_match(&pkts, &[0; 5], &[false; 5], &fs, &out);

    // PSH on a first segment: it goes out alone, the next segment starts an item.
    let pkts = vec![
        t.with(|t| t.flags = ACK | PSH).build(),
        t.with(|t| t.seq = 1000).build(),
        t.with(|t| t.seq = 2000).build(),
    ];
    let (fs, out) = run(&pkts);
    assert_eq!(out, [0, 1]);
    assert_eq!(segments(&fs, &out), [1, 2]);
}

#[test]
fn short_segment_ends_the_item_and_larger_one_starts_a_new_one() {
    let t = Tcp::v4(0, 1000);
    let pkts = vec![
        t.build(),
        t.with(|t| t.seq = 1000).build(),
        t.with(|t| (t.seq, t.payload) = (2000, 300)).build(), // short: appended, closes
        t.with(|t| t.seq = 2300).build(),
        t.with(|t| (t.seq, t.payload) = (3300, 1200)).build(), // larger: new item
        t.with(|t| (t.seq, t.payload) = (4500, 1200)).build(),
    ];
    let (fs, out) = run(&pkts);
    assert_eq!(out, [0, 3, 4]);
    assert_eq!(segments(&fs, &out), [3, 1, 2]);
    assert_eq!(vnet_hdr(&fs[0]).gso_size, 1000);
    assert_eq!(vnet_hdr(&fs[4]).gso_size, 1200);
    flows_match(&pkts, &[0; 6], &[false; 6], &fs, &out);
}

#[test]
fn corrupt_segments_are_written_alone_untouched() {
    let t = Tcp::v4(0, 1000);
    // A corrupt segment in the middle: it is left out, the item goes on (as in Linux, where a
    // bad checksum never reaches the flow); the receiver drops it.
    let pkts = vec![
        t.build(),
        t.with(|t| (t.seq, t.bad_tcp_csum) = (1000, true)).build(),
        t.with(|t| t.seq = 1000).build(),
        t.with(|t| t.seq = 2000).build(),
    ];
    let (fs, out) = run(&pkts);
    assert_eq!(out, [0, 1]);
    assert_eq!(segments(&fs, &out), [3, 1]);
    flows_match(&pkts, &[0; 4], &[false, true, false, false], &fs, &out);

    // A corrupt first segment is written alone; the rest merge behind it.
    for bad in [
        t.with(|t| t.bad_tcp_csum = true),
        t.with(|t| t.bad_ip_csum = true),
    ] {
        let pkts = vec![
            bad.build(),
            t.with(|t| t.seq = 1000).build(),
            t.with(|t| t.seq = 2000).build(),
        ];
        let (fs, out) = run(&pkts);
        assert_eq!(out, [0, 1]);
        assert_eq!(segments(&fs, &out), [1, 2]);
    }

    let v6 = Tcp::v6(0, 1000);
    let pkts = vec![
        v6.build(),
        v6.with(|t| (t.seq, t.bad_tcp_csum) = (1000, true)).build(),
    ];
    let (_, out) = run(&pkts);
    assert_eq!(out, [0, 1]);
}

#[test]
fn caps_at_64_segments() {
    let pkts = Tcp::v6(0, 100).run(150);
    let (fs, out) = run(&pkts);
    assert_eq!(out, [0, 64, 128]);
    assert_eq!(segments(&fs, &out), [64, 64, 22]);
}

#[test]
fn caps_at_65535_bytes() {
    // 40 + 46 * 1400 = 64 440 fits, 47 segments would not.
    let pkts = Tcp::v4(0, 1400).run(50);
    let (fs, out) = run(&pkts);
    assert_eq!(out, [0, 46]);
    assert_eq!(segments(&fs, &out), [46, 4]);
    // Exactly 65 535: 40 + 65 495 = 40 + 5 * 13 099.
    let pkts = Tcp::v4(0, 13_099).run(6);
    let (fs, out) = run(&pkts);
    assert_eq!(out, [0, 5]);
    assert_eq!(fs[0].len, 65535);
    // IPv6: header and payload together within 65 535 as well.
    let pkts = Tcp::v6(0, 13_095).run(6);
    let (fs, out) = run(&pkts);
    assert_eq!(out, [0, 5]);
    assert_eq!(fs[0].len, 65535);
}

#[test]
fn stops_when_the_frame_is_full() {
    let pkts = Tcp::v4(0, 1000).run(6);
    // Room for the first packet and two more payloads.
    let (fs, out) = run_in(&pkts, HEAD + 1040 + 2000 + 999);
    assert_eq!(out, [0, 3]);
    assert_eq!(segments(&fs, &out), [3, 3]);
}

#[test]
fn other_packets_are_written_untouched() {
    let t = Tcp::v4(0, 1000);
    let udp = {
        let mut p = t.build();
        p[9] = 17;
        p
    };
    let trailing = {
        let mut p = t.with(|t| t.seq = 1000).build();
        p.extend_from_slice(&[0; 6]);
        p
    };
    let v6_ext = {
        let mut p = Tcp::v6(0, 1000).build();
        p[6] = 0; // hop-by-hop first
        p
    };
    let bad_len_v6 = {
        let mut p = Tcp::v6(0, 1000).build();
        p[5] ^= 1;
        p
    };
    let bad_doff = {
        let mut p = t.build();
        p[32] = 0x40; // data offset 4
        p
    };
    let pkts = vec![
        udp.clone(),
        udp,
        trailing.clone(),
        trailing,
        v6_ext.clone(),
        v6_ext,
        bad_len_v6,
        bad_doff.clone(),
        bad_doff,
        vec![],
        vec![0x45],
        vec![0x60; 30],
        vec![0x20; 80],
    ];
    let (_, out) = run(&pkts);
    assert_eq!(out.len(), pkts.len());
}

#[test]
fn more_frames_than_capacity() {
    let mut pkts = Vec::new();
    let mut flow = Vec::new();
    for k in 0..3u32 {
        for port in 0..8u16 {
            pkts.push(
                Tcp::v4(k * 500, 500)
                    .with(|t| t.sport = 1000 + port)
                    .build(),
            );
            flow.push(usize::from(port));
        }
    }
    let mut fs = frames(&pkts, HEAD + 65536);
    let mut out = vec![0u16; pkts.len()];
    // Items for four flows per batch: the others' packets go out as they are.
    let mut gro = Gro::new(4);
    let n = gro.coalesce(&mut fs, &mut out);
    check_output(&pkts, &fs, &out[..n]);
    assert_eq!(&out[..4], [0, 1, 2, 3]);
    assert_eq!(n, 4 + 3 * 4);
    flows_match(&pkts, &flow, &vec![false; pkts.len()], &fs, &out[..n]);
}

#[test]
fn batches_do_not_leak_into_each_other() {
    let mut gro = Gro::new(8);
    let t = Tcp::v4(0, 1000);
    for batch in 0..3u32 {
        let pkts: Vec<_> = (0..4u32)
            .map(|k| t.with(|t| t.seq = (batch * 4 + k) * 1000).build())
            .collect();
        let mut fs = frames(&pkts, HEAD + 65536);
        let mut out = [0u16; 4];
        let n = gro.coalesce(&mut fs, &mut out);
        assert_eq!(&out[..n], [0]);
        check_output(&pkts, &fs, &out[..n]);
    }
    // The epoch wraps without mixing up batches.
    gro.epoch = u32::MAX - 1;
    let pkts = t.run(3);
    for _ in 0..3 {
        let mut fs = frames(&pkts, HEAD + 65536);
        let mut out = [0u16; 3];
        let n = gro.coalesce(&mut fs, &mut out);
        assert_eq!(&out[..n], [0]);
    }
    assert_eq!(gro.epoch, 2);
}

#[test]
fn empty_batch() {
    let mut out = [];
    assert_eq!(Gro::new(0).coalesce(&mut [], &mut out), 0);
}

/// What happens to a flow at one step of the generated traffic.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// The next full-size segment.
    Full,
    /// `n % 70 + 1` full-size segments in a row (long enough to reach the limits).
    Burst(usize),
    /// The next segment with `n % (mss + 200) + 1` bytes (often short, sometimes larger).
    Sized(usize),
    Psh,
    /// Skip some sequence space, then a segment.
    Gap,
    /// Resend the previous full segment's sequence number.
    Retransmit,
    /// A segment with control flags (index into `CONTROL`).
    Control(usize),
    PureAck,
    NewAck,
    /// The timestamp option moves on (flows with timestamps only).
    NewTimestamp,
    /// Toggle CE in the TOS/traffic class.
    Ce,
    BadTcpChecksum,
    BadIpChecksum,
    /// IPv4 options on a segment (flows over IPv4; a UDP packet for IPv6 flows).
    IpOptions,
    /// A UDP packet between the same hosts.
    Udp,
}

const CONTROL: [u8; 6] = [
    FIN | ACK,
    RST | ACK,
    SYN | ACK,
    URG | ACK,
    ECE | ACK,
    CWR | ACK,
];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        40 => Just(Step::Full),
        1 => any::<usize>().prop_map(Step::Burst),
        4 => any::<usize>().prop_map(Step::Sized),
        2 => Just(Step::Psh),
        1 => Just(Step::Gap),
        1 => Just(Step::Retransmit),
        1 => (0..CONTROL.len()).prop_map(Step::Control),
        1 => Just(Step::PureAck),
        1 => Just(Step::NewAck),
        2 => Just(Step::NewTimestamp),
        1 => Just(Step::Ce),
        1 => Just(Step::BadTcpChecksum),
        1 => Just(Step::BadIpChecksum),
        1 => Just(Step::IpOptions),
        1 => Just(Step::Udp),
    ]
}

/// A generated flow: IP version, MSS, whether it carries a timestamp option.
fn flow() -> impl Strategy<Value = (bool, usize, bool)> {
    (
        any::<bool>(),
        prop::sample::select(vec![1, 88, 536, 1220, 1448]),
        any::<bool>(),
    )
}

/// Builds the traffic: the packets, each one's flow (UDP packets get flows of their own), and
/// which are corrupt.
fn traffic(
    flows: &[(bool, usize, bool)],
    steps: &[(usize, Step)],
) -> (Vec<Vec<u8>>, Vec<usize>, Vec<bool>) {
    let mut state: Vec<Tcp> = flows
        .iter()
        .enumerate()
        .map(|(i, &(v6, _, ts))| {
            let base = if v6 { Tcp::v6(0, 0) } else { Tcp::v4(0, 0) };
            base.with(|t| {
                t.sport = 30000 + i as u16;
                t.seq = (i as u32).wrapping_mul(0x9e37_79b9);
                t.opts = if ts {
                    vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0]
                } else {
                    Vec::new()
                };
            })
        })
        .collect();
    let (mut pkts, mut flow, mut bad) = (Vec::new(), Vec::new(), Vec::new());
    let steps = steps.iter().flat_map(|&(f, step)| match step {
        Step::Burst(n) => vec![(f, Step::Full); n % 70 + 1],
        step => vec![(f, step)],
    });
    for (f, step) in steps {
        let f = f % flows.len();
        let mss = flows[f].1;
        let t = &mut state[f];
        t.id = t.id.wrapping_add(1);
        let mut seg = t.with(|s| (s.payload, s.flags) = (mss, ACK));
        let mut own_flow = f;
        match step {
            Step::Full | Step::Burst(_) => {}
            Step::Sized(n) => seg.payload = n % (mss + 200) + 1,
            Step::Psh => seg.flags = ACK | PSH,
            Step::Gap => seg.seq = seg.seq.wrapping_add(1 + mss as u32 / 2),
            Step::Retransmit => seg.seq = seg.seq.wrapping_sub(mss as u32),
            Step::Control(c) => seg.flags = CONTROL[c],
            Step::PureAck => seg.payload = 0,
            Step::NewAck => seg.ack = seg.ack.wrapping_add(2920),
            Step::NewTimestamp if !seg.opts.is_empty() => {
                t.opts[7] = t.opts[7].wrapping_add(1);
                seg.opts = t.opts.clone();
            }
            Step::NewTimestamp => {}
            Step::Ce => {
                t.tos ^= 3;
                seg.tos = t.tos;
            }
            Step::BadTcpChecksum => seg.bad_tcp_csum = true,
            Step::BadIpChecksum if !seg.v6 => seg.bad_ip_csum = true,
            Step::IpOptions if !seg.v6 => seg.ip_opts = 8,
            Step::BadIpChecksum | Step::IpOptions | Step::Udp => own_flow = flows.len() + f,
        }
        t.ack = seg.ack;
        t.seq = seg.next_seq();
        let mut p = seg.build();
        if own_flow != f {
            if seg.v6 {
                p[6] = 17;
            } else {
                p[9] = 17;
                p[10..12].fill(0);
                let c = checksum::checksum(&p[..20]);
                p[10..12].copy_from_slice(&c.to_be_bytes());
            }
        }
        pkts.push(p);
        flow.push(own_flow);
        bad.push(seg.bad_tcp_csum || seg.bad_ip_csum);
    }
    (pkts, flow, bad)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Coalescing then re-segmenting gives back every flow's packets in order, with consistent
    /// headers, lengths and checksums on everything written.
    #[test]
    fn resegmenting_gives_back_the_input(
        flows in prop::collection::vec(flow(), 1..5),
        steps in prop::collection::vec((0..4usize, step()), 0..160),
        cap in prop::sample::select(vec![HEAD + 1800, HEAD + 9000, HEAD + 65536]),
    ) {
        let (pkts, flow, bad) = traffic(&flows, &steps);
        let (fs, out) = run_in(&pkts, cap);
        flows_match(&pkts, &flow, &bad, &fs, &out);
    }

    /// Arbitrary bytes (some of them starting like an IPv4/IPv6 TCP header) never cause a
    /// panic, and what is not a valid merge is written untouched.
    #[test]
    fn arbitrary_bytes_are_safe(
        pkts in prop::collection::vec(
            (prop::sample::select(vec![0x45u8, 0x46, 0x60, 0x00]), prop::collection::vec(any::<u8>(), 0..120)),
            0..40,
        ),
    ) {
        let pkts: Vec<Vec<u8>> = pkts
            .into_iter()
            .map(|(first, mut rest)| {
                rest.insert(0, first);
                let len = rest.len() as u16;
                if first == 0x45 && rest.len() >= 10 {
                    rest[2..4].copy_from_slice(&len.to_be_bytes());
                    rest[9] = 6;
                }
                rest
            })
            .collect();
        run_in(&pkts, HEAD + 256);
    }
}

const HEAD: usize = 16;
const SRC4: [u8; 4] = [198, 51, 100, 2];
const DST4: [u8; 4] = [198, 51, 100, 11];
const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;
