#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /init of the test bed's initramfs, for the guest and for its crash kernel.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

arg() {
	for w in $(cat /proc/cmdline); do
		case "$w" in "$1="*) echo "${w#*=}" ;; esac
	done
}

fail() {
	echo "kexecd-testbed: $*" >/dev/console
	poweroff -f
}

if [ -e /proc/vmcore ]; then
	# The crash kernel: hand the head of the dump to the host over ttyS1.
	n=$(arg kexecd.dump)
	# What the crash kernel was told: its command line (elfcorehdr=) and
	# the memory it took as its own (the e820 map kexec-tools wrote).
	echo "KEXECD-CMDLINE $(cat /proc/cmdline)" >/dev/ttyS1
	echo "KEXECD-IOMEM-BEGIN" >/dev/ttyS1
	cat /proc/iomem >/dev/ttyS1
	echo "KEXECD-IOMEM-END" >/dev/ttyS1
	echo "KEXECD-VMCORE-BEGIN size=$(stat -c %s /proc/vmcore)" >/dev/ttyS1
	head -c "${n:-65536}" /proc/vmcore | base64 >/dev/ttyS1
	echo "KEXECD-VMCORE-END" >/dev/ttyS1
	poweroff -f
fi

# The modules this kernel has (the rest it has built in), in load order.
for m in $(cat /modules/order); do
	insmod /modules/$m.ko || fail "insmod $m failed"
done
opts=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o $opts,ro,cache=loose hostroot /newroot || fail "mounting the host root failed"
share=$(arg kexecd.share)
mount -t 9p -o $opts share "/newroot$share" || fail "mounting the share failed"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
echo "kexecd-testbed: starting the agent" >/dev/console
exec chroot /newroot "$(arg kexecd.python)" "$(arg kexecd.agent)"
