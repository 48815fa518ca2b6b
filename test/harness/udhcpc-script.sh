#!/bin/sh
# udhcpc script for tests (busybox udhcpc -s THIS): applies the lease with iproute2 and prints
# what the DHCP server handed out, one "lease KEY=VALUE" line each, for the test to assert.
# udhcpc calls it with $1 = deconfig | bound | renew | leasefail | nak and the lease in the env.

case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set dev "$interface" up
    ;;
  bound|renew)
    echo "lease event=$1"
    for key in interface ip subnet mask router dns domain search mtu lease serverid; do
      eval "value=\${$key}"
      echo "lease $key=$value"
    done
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-$subnet}" dev "$interface"
    for r in $router; do
      ip route add default via "$r" dev "$interface"
      break
    done
    ;;
  leasefail|nak)
    echo "lease event=$1 message=$message" >&2
    ;;
esac
exit 0
