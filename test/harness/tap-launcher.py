#!/usr/bin/env python3
"""Open a Linux TAP device inside a network namespace and exec a command with it as fd 3.

Node cannot create a TAP (that takes an ioctl), so this launcher does it, the way QEMU's
`-netdev tap,fd=N` is fed by libvirt. The TAP belongs to the namespace that is current at open(),
so we enter the guest namespace only for the open, then return to ours before exec: weft itself
stays in the host namespace, where its upstream sockets live.

With --vnet-hdr the TAP is opened with IFF_VNET_HDR and checksum + TCP segmentation offload on
(as QEMU's vnet_hdr=on): pair it with `weft vm --tap-vnet-hdr`.

usage: tap-launcher.py --netns NAME --tap TAPNAME [--fd 3] [--vnet-hdr] -- COMMAND ARGS...
"""
import argparse
import ctypes
import fcntl
import os
import struct
import sys

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
CLONE_NEWNET = 0x40000000


def setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def open_tap(name: str, netns: str | None, vnet_hdr: bool = False) -> int:
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        if netns:
            target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
            try:
                setns(target)
            finally:
                os.close(target)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR)
            flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
            ifr = struct.pack("16sH22x", name.encode(), flags)
            fcntl.ioctl(fd, TUNSETIFF, ifr)
            # Without a vnet header: no offloads, otherwise the kernel may hand us GSO frames
            # larger than the MTU with partial checksums (and the setting persists on a
            # persistent TAP). With one, the header says so for every frame.
            fcntl.ioctl(fd, TUNSETOFFLOAD, (TUN_F_CSUM | TUN_F_TSO4) if vnet_hdr else 0)
        finally:
            if netns:
                setns(own)
    finally:
        os.close(own)
    return fd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--netns")
    ap.add_argument("--tap", required=True)
    ap.add_argument("--fd", type=int, default=3)
    ap.add_argument("--vnet-hdr", action="store_true")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("missing command after --")
    try:
        fd = open_tap(args.tap, args.netns, args.vnet_hdr)
    except OSError as e:
        print(f"tap-launcher: cannot open TAP {args.tap!r} in netns {args.netns!r}: {e}", file=sys.stderr)
        sys.exit(2)
    if fd != args.fd:
        os.dup2(fd, args.fd)
        os.close(fd)
    os.set_inheritable(args.fd, True)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
