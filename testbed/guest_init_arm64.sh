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

mount_root() {
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
}

# With kexecd.makedumpfile on its command line, the crash kernel also runs the
# root's makedumpfile on /proc/vmcore, as a distro's kdump would: the kernel
# log it reads out of the dump (--dump-dmesg, which walks the old kernel's
# printk buffer through VMCOREINFO), and the size of a -d 31 dump.
makedumpfile_report() {
	mount_root
	mount -t tmpfs tmpfs /newroot/tmp
	chroot /newroot makedumpfile --dump-dmesg /proc/vmcore /tmp/dmesg.txt \
		>/newroot/tmp/mdf.log 2>&1
	echo "KEXECD-MAKEDUMPFILE-DMESG rc=$?"
	tail -n 5 /newroot/tmp/dmesg.txt 2>/dev/null | base64
	echo "KEXECD-MAKEDUMPFILE-LOG"
	tail -n 20 /newroot/tmp/mdf.log | base64
	chroot /newroot sh -c '{ makedumpfile -F -l -d 31 /proc/vmcore 2>/tmp/mdf31.log;
		echo $? >/tmp/rc31; } | wc -c' >/newroot/tmp/size 2>&1
	echo "KEXECD-MAKEDUMPFILE-D31 rc=$(cat /newroot/tmp/rc31) bytes=$(cat /newroot/tmp/size)"
	tail -n 20 /newroot/tmp/mdf31.log | base64
	echo "KEXECD-MAKEDUMPFILE-END"
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
		case " $(cat /proc/cmdline) " in
		*" kexecd.makedumpfile "*) makedumpfile_report ;;
		esac
	} >$out
	poweroff -f
fi

mount_root
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
echo "kexecd-testbed: starting the agent" >/dev/console
exec chroot /newroot /usr/bin/python3 /opt/kexecd-testbed/testbed/guest_agent.py
