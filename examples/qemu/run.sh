#!/bin/sh
# A QEMU guest networked by weft: `weft vm` listens on a unix socket and QEMU connects to it as its
# `-netdev stream` backend. The guest gets 10.0.2.15 by DHCP, 10.0.2.2 as its gateway and 10.0.2.3
# as its DNS server, and reaches the internet through this machine's sockets.
#
#   ./run.sh KERNEL [INITRD] [KERNEL_CMDLINE]
#
# Needs qemu-system-x86_64, and weft-net installed here (`npm install`) or `weft` on PATH.
# WEFT_SOCK sets the socket (default /tmp/weft.sock); QEMU_ACCEL=kvm is much faster where KVM works
# (default tcg). Quit QEMU with Ctrl-A X; weft stops with it.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 KERNEL [INITRD] [KERNEL_CMDLINE]" >&2; exit 2; }
sock=${WEFT_SOCK:-/tmp/weft.sock}
PATH="$(cd "$(dirname "$0")" && pwd)/node_modules/.bin:$PATH"

rm -f "$sock"
weft vm --qemu "unix:$sock" &
weft_pid=$!
trap 'kill "$weft_pid" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
# QEMU needs the socket to exist when it starts.
while [ ! -S "$sock" ]; do
  kill -0 "$weft_pid" 2>/dev/null || { echo "weft vm exited" >&2; exit 1; }
  sleep 0.1
done

qemu-system-x86_64 -accel "${QEMU_ACCEL:-tcg}" -m 512 -nographic \
  -kernel "$1" ${2:+-initrd "$2"} -append "${3:-console=ttyS0}" \
  -netdev stream,id=n0,server=off,addr.type=unix,addr.path="$sock" \
  -device virtio-net-pci,netdev=n0,romfile=
