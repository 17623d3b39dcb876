#!/usr/bin/env python3
"""Writes the seed corpora for the fuzz targets (fuzz/corpus/*). Re-run after changing it.

gre_rx inputs: one selector byte (bits 0-1: sending spoke 192.0.2.11/.12/.13/unknown,
bit 2: an outer IPv4 header is included) followed by the packet.
tun_rx inputs: one inner packet as read from the TUN.
tun_gro inputs: a batch of packets for the TUN-write coalescer, each a 2-byte big-endian
length followed by the packet.
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
