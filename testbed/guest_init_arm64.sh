#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /init of the arm64 test bed's initramfs, for the guest and for its crash
# kernel (testbed/arm64_assets.py). The virt machine has one serial port, the
# console: the crash kernel sends what it saw there, between markers, with the
# kernel's own messages silenced.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
	echo "kexecd-testbed: $*" >/dev/console
	poweroff -f
}

if [ -e /proc/vmcore ]; then
	dmesg -n 1
	out=/dev/ttyAMA0
	{
		echo "KEXECD-CMDLINE $(cat /proc/cmdline)"
		echo "KEXECD-IOMEM-BEGIN"
		cat /proc/iomem
		echo "KEXECD-IOMEM-END"
		echo "KEXECD-VMCORE-BEGIN size=$(stat -c %s /proc/vmcore)"
		head -c 65536 /proc/vmcore | base64
		echo "KEXECD-VMCORE-END"
	} >$out
	poweroff -f
fi

for m in $(cat /modules/order); do
	insmod /modules/$m.ko || fail "insmod $m failed"
done
n=0
while [ ! -b /dev/vda ]; do
	n=$((n + 1))
	[ $n -lt 100 ] || fail "no /dev/vda"
	sleep 0.1
done
mount -o ro /dev/vda /newroot || fail "mounting the root failed"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
echo "kexecd-testbed: starting the agent" >/dev/console
exec chroot /newroot /usr/bin/python3 /opt/kexecd-testbed/testbed/guest_agent.py
