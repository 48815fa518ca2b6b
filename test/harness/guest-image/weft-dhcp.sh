#!/bin/sh
# weft-dhcp: leases an address for eth0 with busybox udhcpc; /etc/udhcpc.script prints
# `WEFT-LEASE ip=... router=... dns=...` on success, this prints `WEFT-LEASE-FAIL rc=N` otherwise.
# A hostname from the kernel command line (weft.hostname=) goes with the request, unless the caller
# gives one itself (-x hostname:NAME).
case " $* " in
  *hostname:*) ;;
  *) [ -s /etc/weft/hostname ] && set -- -x "hostname:$(cat /etc/weft/hostname)" "$@" ;;
esac
udhcpc -i eth0 -s /etc/udhcpc.script -q -n -t 10 -O mtu "$@"
rc=$?
[ "$rc" -eq 0 ] || echo "WEFT-LEASE-FAIL rc=$rc"
exit "$rc"
