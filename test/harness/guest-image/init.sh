#!/bin/busybox sh
# /init of weft's test guests, v86 and QEMU (packed into the initramfs by build.mjs). As PID 1 it
# mounts the kernel filesystems, loads the NIC driver, brings eth0 up, leases an address, prints
# WEFT-* marker lines on the serial console for tests to wait on, then becomes busybox init, which
# keeps a shell running on ttyS0 (see /etc/inittab).
#
# A QEMU test hands over a script for this boot with `-fw_cfg name=opt/weft/script,file=FILE`: then
# /init runs it after DHCP (its output goes to ttyS0), prints `WEFT-SCRIPT-END rc=N` and powers off.
#
# Kernel command line knobs (after the image's own `console=ttyS0 quiet …`, see TARGETS in build.mjs):
#   weft.dhcp=off          do not run DHCP at boot (type `weft-dhcp` later, e.g. after a state restore)
#   weft.nic=ne2k|virtio   load only that driver set (default: ne2k-pci, then virtio_net if no eth0)
#   weft.hostname=NAME     the guest's hostname, which weft-dhcp then sends with DHCP (other guests
#                          on the LAN reach it as NAME.weft.internal)

[ -e /bin/mount ] || /bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /run /tmp
mount -t devpts devpts /dev/pts
dmesg -n 1

echo "WEFT-INIT uptime=$(cut -d' ' -f1 /proc/uptime)"

arg() { # arg NAME DEFAULT: the value of NAME=... on the kernel command line
  for word in $(cat /proc/cmdline); do
    case "$word" in "$1="*) echo "${word#*=}"; return;; esac
  done
  echo "$2"
}

load_set() { # load_set ne2k|virtio: insmod the set's modules in dependency order
  while read -r ko; do
    [ -n "$ko" ] || continue
    insmod "$ko" 2>/dev/null || echo "WEFT-WARN insmod $ko failed"
  done < "/etc/weft/modules-$1"
}

wait_eth0() { # wait_eth0 TENTHS: whether eth0 appears within that many tenths of a second
  i=0
  while [ ! -e /sys/class/net/eth0 ]; do
    [ "$i" -ge "$1" ] && return 1
    usleep 100000
    i=$((i + 1))
  done
}

name=$(arg weft.hostname '')
if [ -n "$name" ]; then
  hostname "$name"
  echo "$name" > /etc/weft/hostname
fi

nic=$(arg weft.nic auto)
case "$nic" in
  ne2k) load_set ne2k; wait_eth0 30 ;;
  virtio) load_set virtio; wait_eth0 30 ;;
  *) load_set ne2k; wait_eth0 5 || { load_set virtio; wait_eth0 30; } ;;
esac

# QEMU's fw_cfg files (the QEMU image has the module; the v86 image has no such set).
[ -e /etc/weft/modules-fwcfg ] && load_set fwcfg

ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  driver=$(basename "$(readlink /sys/class/net/eth0/device/driver)")
  echo "WEFT-BOOT-OK nic=$driver mac=$(cat /sys/class/net/eth0/address) kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
  if [ "$(arg weft.dhcp on)" = off ]; then
    echo "WEFT-DHCP-SKIPPED"
  else
    /bin/weft-dhcp
  fi
else
  echo "WEFT-BOOT-FAIL reason=no-eth0 kernel=$(uname -r)"
fi

script=/sys/firmware/qemu_fw_cfg/by_name/opt/weft/script/raw
if [ -e "$script" ]; then
  cp "$script" /tmp/weft-script
  echo "WEFT-SCRIPT-START uptime=$(cut -d' ' -f1 /proc/uptime)"
  sh /tmp/weft-script
  echo "WEFT-SCRIPT-END rc=$? uptime=$(cut -d' ' -f1 /proc/uptime)"
  poweroff -f
fi

exec /bin/busybox init
