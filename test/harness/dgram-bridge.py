#!/usr/bin/env python3
"""Carry Ethernet frames between a TAP inside a network namespace and UDP on 127.0.0.1.

The guest side of `weft vm --dgram LPORT:RPORT` for tests: this bridge binds 127.0.0.1:RPORT and
sends every frame read from the TAP as one datagram to 127.0.0.1:LPORT (weft), and writes every
datagram from weft to the TAP. It prints "ready" once both ends are open, and exits with code 0
on SIGTERM or SIGINT, closing both.

usage: dgram-bridge.py --netns NAME --tap TAPNAME --local RPORT --remote LPORT
"""
import argparse
import errno
import importlib.util
import os
import select
import signal
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("tap_launcher", os.path.join(HERE, "tap-launcher.py"))
tap_launcher = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tap_launcher)

MAX_FRAME = 65536 + 14


class Stop(Exception):
    pass


def on_signal(signum, frame):
    raise Stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--netns")
    ap.add_argument("--tap", required=True)
    ap.add_argument("--local", type=int, required=True, help="UDP port this bridge binds on 127.0.0.1")
    ap.add_argument("--remote", type=int, required=True, help="UDP port weft binds on 127.0.0.1")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        tap = tap_launcher.open_tap(args.tap, args.netns)
    except OSError as e:
        print(f"dgram-bridge: cannot open TAP {args.tap!r} in netns {args.netns!r}: {e}", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dropped = 0
    try:
        sock.bind(("127.0.0.1", args.local))
        os.set_blocking(tap, False)
        sock.setblocking(False)
        peer = ("127.0.0.1", args.remote)
        print("ready", flush=True)
        poller = select.poll()
        poller.register(tap, select.POLLIN)
        poller.register(sock.fileno(), select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == tap:
                    # Drain: one read() is one frame.
                    while True:
                        try:
                            frame = os.read(tap, MAX_FRAME)
                        except BlockingIOError:
                            break
                        try:
                            sock.sendto(frame, peer)
                        except OSError:
                            dropped += 1
                else:
                    while True:
                        try:
                            data, src = sock.recvfrom(MAX_FRAME)
                        except BlockingIOError:
                            break
                        if src != peer:
                            dropped += 1
                            continue
                        try:
                            os.write(tap, data)
                        except OSError as e:
                            if e.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.EIO):
                                raise
                            dropped += 1
    except Stop:
        pass
    finally:
        sock.close()
        os.close(tap)
    print(f"stopped dropped={dropped}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
