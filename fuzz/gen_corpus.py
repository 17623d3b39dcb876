#!/usr/bin/env python3
"""Writes the seed corpora for the fuzz targets (fuzz/corpus/*). Re-run after changing it.

gre_rx inputs: one selector byte (bits 0-1: sending spoke 192.0.2.11/.12/.13/unknown,
bit 2: an outer IPv4 header is included) followed by the packet.
tun_rx inputs: one inner packet as read from the TUN.
tun_gro inputs: a batch of packets for the TUN-write coalescer, each a 2-byte big-endian
length followed by the packet.
nhrp inputs: one selector byte (bit 0: repair the NHRP checksum before parsing) followed by
an NHRP message (RFC 2332, with FRR nhrpd's Traffic Indication and NAT extension).
nhrp_server inputs: one configuration byte (bit 0: secret, bit 1: the client registers a site
prefix too) and records of a control byte, a 2-byte big-endian length and an NHRP message; see
host/proto/src/fuzzing.rs nhrp_server for the control bits. The hub is 198.51.100.1 /
203.0.113.1, the simulated client 198.51.100.11 / 203.0.113.11 (NBMA_A / TUN_A below).
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src, dst, proto, payload, ttl=64, df=True):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000 if df else 0, ttl, proto, 0,
                      bytes(src), bytes(dst))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload


def ipv6(src, dst, nh, payload):
    return struct.pack("!IHBB", 0x60000000, len(payload), nh, 64) + bytes(src) + bytes(dst) + payload


def icmp_echo(size=56):
    body = bytes(range(size % 256)) * (size // 256 + 1)
    msg = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + body[:size]
    return msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]


def tcp_syn(mss=1460):
    opts = struct.pack("!BBH", 2, 4, mss) + b"\x01\x03\x03\x07"
    return struct.pack("!HHIIBBHHH", 12345, 80, 1, 0, (5 + len(opts) // 4) << 4, 0x02, 65535, 0, 0) + opts


def gre(proto, payload, key=None, seq=None, checksum=False):
    flags = (0x8000 if checksum else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    hdr = struct.pack("!HH", flags, proto)
    if checksum:
        hdr += b"\0\0\0\0"
    if key is not None:
        hdr += struct.pack("!I", key)
    if seq is not None:
        hdr += struct.pack("!I", seq)
    pkt = hdr + payload
    if checksum:
        pkt = pkt[:4] + struct.pack("!H", csum(pkt)) + pkt[6:]
    return pkt


LAN1, LAN2, LAN3, HUBLAN = [203, 0, 113, 2], [203, 0, 113, 66], [203, 0, 113, 130], [203, 0, 113, 194]
V6_1 = [0x20, 0x01, 0x0d, 0xb8, 0, 1] + [0] * 9 + [2]
V6_2 = [0x20, 0x01, 0x0d, 0xb8, 0, 2] + [0] * 9 + [2]


def outer(src_last, payload):
    return ipv4([192, 0, 2, src_last], [192, 0, 2, 1], 47, payload, df=False)


def write(target, name, data):
    with open(os.path.join(HERE, "corpus", target, name), "wb") as f:
        f.write(data)


echo12 = ipv4(LAN1, LAN2, 1, icmp_echo())
seeds = {
    "hairpin-plain": b"\x00" + gre(0x0800, echo12),
    "hairpin-raw-outer": b"\x04" + outer(11, gre(0x0800, echo12)),
    "keyed-seq-csum": b"\x01" + gre(0x0800, ipv4(LAN2, HUBLAN, 1, icmp_echo()), key=42, seq=5, checksum=True),
    "udp-spoke-key": b"\x02" + gre(0x0800, ipv4(LAN3, LAN1, 1, icmp_echo()), key=7),
    "syn-mss": b"\x00" + gre(0x0800, ipv4(LAN1, LAN2, 6, tcp_syn())),
    "v6-hairpin": b"\x00" + gre(0x86DD, ipv6(V6_1, V6_2, 58, bytes([128, 0, 0, 0, 0, 1, 0, 1]) + b"x" * 32)),
    "too-big": b"\x00" + gre(0x0800, ipv4(LAN1, LAN2, 1, icmp_echo(1470))),
    "ttl-1": b"\x00" + gre(0x0800, ipv4(LAN1, LAN2, 1, icmp_echo(), ttl=1)),
    "nhrp": b"\x00" + gre(0x2001, bytes(32)),
    "unknown-peer": b"\x03" + gre(0x0800, echo12),
    "wrong-key": b"\x00" + gre(0x0800, echo12, key=43),
    "bad-version": b"\x00" + struct.pack("!HH", 0x0001, 0x0800) + echo12,
    "routing": b"\x00" + struct.pack("!HH", 0x4000, 0x0800) + echo12,
    "reserved": b"\x00" + struct.pack("!HH", 0x0800, 0x0800) + echo12,
    "truncated": b"\x00\x20\x00",
    "bad-checksum": b"\x00" + gre(0x0800, echo12, checksum=True)[:-1] + b"\xff",
    "teb": b"\x00" + gre(0x6558, bytes(60)),
}
for name, data in seeds.items():
    write("gre_rx", name, data)

tun_seeds = {
    "echo": echo12,
    "syn": ipv4(LAN1, LAN2, 6, tcp_syn()),
    "big-df": ipv4(LAN1, LAN2, 1, icmp_echo(1400)),
    "big-nodf": ipv4(LAN1, LAN2, 1, icmp_echo(1400), df=False),
    "v6-big": ipv6(V6_1, V6_2, 17, bytes(1400)),
    "v6-ext": ipv6(V6_1, V6_2, 0, bytes([6, 0]) + bytes(6) + tcp_syn()),
}
for name, data in tun_seeds.items():
    write("tun_rx", name, data)


def tcp_seg(sport, seq, payload, flags=0x10, ack=1000):
    hdr = struct.pack("!HHIIBBHHH", sport, 80, seq, ack, 5 << 4, flags, 65535, 0, 0)
    return hdr + payload


def with_l4_csum(pkt, v6=False):
    """Fills the TCP/UDP checksum of an IPv4 or IPv6 packet built by ipv4()/ipv6()."""
    if v6:
        src, dst, nh, l4 = pkt[8:24], pkt[24:40], pkt[6], bytearray(pkt[40:])
        pseudo = src + dst + struct.pack("!IxxxB", len(l4), nh)
        head = pkt[:40]
    else:
        ihl = (pkt[0] & 0xF) * 4
        src, dst, nh, l4 = pkt[12:16], pkt[16:20], pkt[9], bytearray(pkt[ihl:])
        pseudo = src + dst + struct.pack("!BBH", 0, nh, len(l4))
        head = pkt[:ihl]
    off = 16 if nh == 6 else 6
    l4[off:off + 2] = b"\0\0"
    c = csum(bytes(pseudo) + bytes(l4))
    l4[off:off + 2] = struct.pack("!H", c or 0xFFFF)
    return bytes(head) + bytes(l4)


def batch(*pkts):
    return b"".join(struct.pack("!H", len(p)) + p for p in pkts)


def tcp4(sport, seq, n, flags=0x10):
    return with_l4_csum(ipv4(LAN1, LAN2, 6, tcp_seg(sport, seq, bytes([seq % 251]) * n, flags)))


def tcp6(sport, seq, n):
    return with_l4_csum(ipv6(V6_1, V6_2, 6, tcp_seg(sport, seq, bytes([seq % 251]) * n)), v6=True)


def udp4(sport, n, fill):
    return with_l4_csum(ipv4(LAN1, LAN2, 17, struct.pack("!HHHH", sport, 53, 8 + n, 0) + bytes([fill]) * n))


gro_seeds = {
    "tcp-run": batch(*[tcp4(1000, 1 + i * 1000, 1000) for i in range(6)]),
    "tcp-two-flows": batch(*[tcp4(1000 + i % 2, 1 + (i // 2) * 500, 500) for i in range(8)]),
    "tcp-psh-short": batch(tcp4(7, 1, 800), tcp4(7, 801, 800), tcp4(7, 1601, 100, flags=0x18)),
    "tcp-gap": batch(tcp4(9, 1, 600), tcp4(9, 1201, 600)),
    "tcp6-run": batch(*[tcp6(2000, 1 + i * 1200, 1200) for i in range(4)]),
    "udp-run": batch(*[udp4(5000, 1200, i) for i in range(5)] + [udp4(5000, 300, 9)]),
    "mixed": batch(tcp4(1, 1, 400), udp4(2, 400, 1), tcp4(1, 401, 400), udp4(2, 400, 2), echo12),
}
for name, data in gro_seeds.items():
    write("tun_gro", name, data)


def nhrp_cie(code=0, prefix=32, mtu=0, hold=7200, nbma=b"", proto=b"", pref=0):
    return struct.pack("!BBHHHBBBB", code, prefix, 0, mtu, hold, len(nbma), 0, len(proto), pref) + nbma + proto


def nhrp_ext(kind, value=b"", compulsory=True):
    return struct.pack("!HH", kind | (0x8000 if compulsory else 0), len(value)) + value


def nhrp(op, src_nbma, src_proto, dst_proto, body=b"", flags=0, word32=0, exts=None, hop=64):
    """An NHRP message; exts is a list of nhrp_ext() values (End is appended) or None."""
    afn = 1 if len(src_nbma) == 4 else 2
    proto = 0x0800 if len(src_proto) == 4 else 0x86DD
    mandatory = struct.pack("!BBHI", len(src_proto), len(dst_proto), flags, word32) + src_nbma + src_proto + dst_proto
    extoff = 0
    tail = b""
    if exts is not None:
        extoff = 20 + len(mandatory) + len(body)
        tail = b"".join(exts) + nhrp_ext(0)
    size = 20 + len(mandatory) + len(body) + len(tail)
    fixed = struct.pack("!HH5sBHHHBBBB", afn, proto, bytes(5), hop, size, 0, extoff, 1, op, len(src_nbma), 0)
    pkt = fixed + mandatory + body + tail
    return pkt[:12] + struct.pack("!H", csum(pkt)) + pkt[14:]


NBMA_A, NBMA_B, NBMA_HUB = bytes([198, 51, 100, 11]), bytes([198, 51, 100, 12]), bytes([198, 51, 100, 1])
TUN_A, TUN_B, TUN_HUB = bytes([203, 0, 113, 11]), bytes([203, 0, 113, 12]), bytes([203, 0, 113, 1])
NBMA6_A, NBMA6_B = bytes(V6_1), bytes(V6_2)
TUN6_A = bytes([0x20, 0x01, 0x0d, 0xb8, 0x02, 0] + [0] * 9 + [11])
TUN6_B = bytes([0x20, 0x01, 0x0d, 0xb8, 0x02, 0] + [0] * 9 + [12])
REQUEST_EXTS = [nhrp_ext(4), nhrp_ext(5), nhrp_ext(3)]
reg_req = nhrp(3, NBMA_A, TUN_A, TUN_HUB, nhrp_cie(prefix=255, mtu=1500), flags=0x8002, word32=42,
               exts=REQUEST_EXTS + [nhrp_ext(9, nhrp_cie(nbma=NBMA_A, proto=TUN_A), compulsory=False)])
nhrp_seeds = {
    "registration-request": reg_req,
    "registration-reply-nak": nhrp(4, NBMA_A, TUN_A, TUN_HUB, nhrp_cie(code=4, prefix=255, mtu=1500), flags=0x8000,
                                   word32=42, exts=[nhrp_ext(3, nhrp_cie(nbma=NBMA_HUB, proto=TUN_HUB)),
                                                    nhrp_ext(4), nhrp_ext(5)]),
    "resolution-request": nhrp(1, NBMA_A, TUN_A, TUN_B, nhrp_cie(prefix=0, mtu=1400, hold=600), flags=0x8000,
                               word32=7, exts=REQUEST_EXTS),
    "resolution-reply": nhrp(2, NBMA_A, TUN_A, TUN_B, nhrp_cie(mtu=1400, nbma=NBMA_B, proto=TUN_B), flags=0xC000,
                             word32=7, exts=[nhrp_ext(3, nhrp_cie(nbma=NBMA_B, proto=TUN_B)), nhrp_ext(4),
                                             nhrp_ext(5, nhrp_cie(nbma=NBMA_HUB, proto=TUN_HUB))]),
    "resolution-reply-v6": nhrp(2, NBMA6_A, TUN6_A, TUN6_B, nhrp_cie(prefix=128, nbma=NBMA6_B, proto=TUN6_B),
                                word32=9, exts=[nhrp_ext(3, nhrp_cie(prefix=128, nbma=NBMA6_B, proto=TUN6_B))]),
    "v4-nbma-v6-proto": nhrp(1, NBMA_A, TUN6_A, TUN6_B, nhrp_cie(prefix=0), word32=11),
    "purge-request": nhrp(5, NBMA_HUB, TUN_HUB, TUN_A, nhrp_cie(prefix=32, proto=TUN_B), word32=3, exts=[]),
    "purge-reply": nhrp(6, NBMA_A, TUN_HUB, TUN_A, nhrp_cie(prefix=32, proto=TUN_B), word32=3),
    "error-indication": nhrp(7, NBMA_HUB, TUN_HUB, TUN_A, reg_req, word32=(1 << 16) | 52),
    "traffic-indication": nhrp(8, NBMA_HUB, TUN_HUB, TUN_A, echo12[:48], hop=1),
    "nat-and-unknown-extensions": nhrp(
        3, NBMA_A, TUN_A, TUN_HUB, nhrp_cie(prefix=255, mtu=1500), flags=0x8002, word32=5,
        exts=[nhrp_ext(9, nhrp_cie(nbma=bytes([203, 0, 113, 9]), proto=TUN_A), compulsory=False),
              nhrp_ext(0x123, b"compulsory?"), nhrp_ext(0x42, b"optional", compulsory=False),
              nhrp_ext(8, b"\x00\x00\x09vendor", compulsory=False), nhrp_ext(7, struct.pack("!I", 1) + b"secret")]),
}
os.makedirs(os.path.join(HERE, "corpus", "nhrp"), exist_ok=True)
for name, data in nhrp_seeds.items():
    write("nhrp", name, b"\x00" + data)
# The same messages with a wrong checksum, which the selector's bit 0 repairs.
for name in ["registration-request", "resolution-reply", "nat-and-unknown-extensions"]:
    data = bytearray(nhrp_seeds[name])
    data[12:14] = b"\xff\xff"
    write("nhrp", name + "-repair", b"\x01" + bytes(data))


# nhrp_server: control byte bits 0-1 source (0 client 198.51.100.11, 1 198.51.100.12,
# 2 2001:db8:100::12, 3 the hub), bits 2-4 clock step (0, 10 ms, 1 s, 5 s, 10 s, 30 s, 1 min,
# 5 min), bit 5 repair checksum, bit 6 to the client, bit 7 client poll + exchange.
POLL, TO_CLIENT, REPAIR = 0x80, 0x40, 0x20


def step(n):
    return n << 2


def rec(ctl, msg=b""):
    return struct.pack("!BH", ctl, len(msg)) + msg


def reg_from(src_nbma, src_proto, exts=REQUEST_EXTS, word32=1, hold=7200):
    return nhrp(3, src_nbma, src_proto, TUN_HUB, nhrp_cie(prefix=255, mtu=1500, hold=hold), flags=0x8002,
                word32=word32, exts=exts)


NBMA_C = bytes([198, 51, 100, 12])
SECRET_EXT = nhrp_ext(7, struct.pack("!I", 1) + b"dmvpn")
server_seeds = {
    "exchange": b"\x00" + rec(POLL) + rec(POLL | step(2)) + rec(POLL | step(5)) + rec(POLL | step(4)),
    "exchange-secret-site": b"\x03" + rec(POLL) + rec(POLL | step(3)) + rec(POLL | step(5)) + rec(POLL | step(6)),
    "registrations-and-error": b"\x00" + rec(0, reg_req) + rec(1 | step(1), reg_from(NBMA_C, TUN_B))
    + rec(1, nhrp_seeds["nat-and-unknown-extensions"]) + rec(0 | step(2), reg_from(NBMA_A, TUN_A, word32=2))
    + rec(POLL | step(3)),
    "table-full": b"\x00" + b"".join(rec(1 | step(1), reg_from(NBMA_C, bytes([203, 0, 113, 20 + i]), word32=i))
                                      for i in range(6)) + rec(POLL) + rec(step(7) | POLL),
    "purge": b"\x00" + rec(0, reg_req) + rec(POLL)
    + rec(step(2), nhrp(5, NBMA_A, TUN_A, TUN_HUB, nhrp_cie(prefix=32, proto=TUN_A), word32=3, exts=[]))
    + rec(1, nhrp(5, NBMA_C, TUN_B, TUN_HUB, nhrp_cie(prefix=32, proto=TUN_A), word32=4)),
    "unknown-optional-echoed": b"\x00" + rec(1, reg_from(NBMA_C, TUN_B, exts=REQUEST_EXTS + [
        nhrp_ext(0x42, b"optional", compulsory=False), nhrp_ext(8, b"\x00\x00\x09vendor", compulsory=False)])),
    "secret": b"\x01" + rec(1, reg_from(NBMA_C, TUN_B, exts=REQUEST_EXTS + [SECRET_EXT]))
    + rec(1, reg_from(NBMA_C, TUN_B, word32=9)) + rec(POLL) + rec(POLL | step(6)),
    "v6-and-others": b"\x00" + rec(2, nhrp_seeds["resolution-reply-v6"]) + rec(0, nhrp_seeds["resolution-request"])
    + rec(0, nhrp_seeds["error-indication"]) + rec(3, nhrp_seeds["traffic-indication"])
    + rec(2, nhrp(3, NBMA6_B, TUN6_B, TUN6_A, nhrp_cie(prefix=128), word32=5, exts=[])),
    "client-replies": b"\x00" + rec(POLL) + rec(TO_CLIENT | 3, nhrp_seeds["registration-reply-nak"])
    + rec(TO_CLIENT | 3, nhrp(4, NBMA_A, TUN_A, TUN_HUB, nhrp_cie(hold=600), flags=0x8002, word32=1,
                              exts=[nhrp_ext(0x77, b"!")]))
    + rec(TO_CLIENT | 1, nhrp_seeds["registration-reply-nak"]) + rec(POLL | step(2)),
    "expiry": b"\x00" + rec(0, reg_from(NBMA_A, TUN_A, hold=5)) + rec(1, reg_from(NBMA_C, TUN_B, hold=20))
    + rec(step(3)) + rec(step(4), reg_from(NBMA_C, TUN_B, word32=3)) + rec(step(7)),
    "repair": b"\x00" + rec(REPAIR, reg_req[:12] + b"\xff\xff" + reg_req[14:]) + rec(POLL),
}
os.makedirs(os.path.join(HERE, "corpus", "nhrp_server"), exist_ok=True)
for name, data in server_seeds.items():
    write("nhrp_server", name, data)
