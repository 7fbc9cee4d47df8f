// SPDX-License-Identifier: GPL-2.0-or-later
// arch.h for aarch64: compiled through arch.c.
//
// The syscall number is in x8, the arguments in x0..x5, and x0 takes the
// result (arch/arm64/kernel/syscall.c). arm64 has no PTRACE_GETREGS: the
// general registers are the NT_PRSTATUS register set, a struct user_pt_regs.
// The number the kernel acts on is kept apart from x8, in pt_regs'
// syscallno: the NT_ARM_SYSTEM_CALL register set (one int) reads and writes
// it, and is the only way to change or skip the call (writing x8 does not).
#define _GNU_SOURCE
#include <asm/ptrace.h>
#include <elf.h>
#include <errno.h>
#include <linux/audit.h>
#include <stddef.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "arch.h"

// include/uapi/asm-generic/unistd.h, which arm64 uses.
_Static_assert(SYS_kexec_load == 104, "aarch64 kexec_load is 104");
_Static_assert(SYS_kexec_file_load == 294, "aarch64 kexec_file_load is 294");

const uint32_t kexecd_arch_audit = AUDIT_ARCH_AARCH64;
const int kexecd_arch_nr_kexec_load = SYS_kexec_load;
const int kexecd_arch_nr_kexec_file_load = SYS_kexec_file_load;

static int regset(int req, pid_t pid, unsigned long type, void *buf, size_t len)
{
	struct iovec iov = { buf, len };

	if (ptrace(req, pid, (void *)type, &iov) < 0)
		return -errno;
	// The kernel shortens iov_len to what the set holds: ours must be whole.
	return iov.iov_len == len ? 0 : -EIO;
}

int kexecd_arch_get_call(pid_t pid, struct kexecd_arch_call *ret)
{
	struct user_pt_regs regs;
	int nr, r;

	// The number seccomp matched: syscallno, not x8.
	r = regset(PTRACE_GETREGSET, pid, NT_ARM_SYSTEM_CALL, &nr, sizeof(nr));
	if (r < 0)
		return r;
	r = regset(PTRACE_GETREGSET, pid, NT_PRSTATUS, &regs, sizeof(regs));
	if (r < 0)
		return r;
	*ret = (struct kexecd_arch_call){
		.nr = nr,
		.args = { regs.regs[0], regs.regs[1], regs.regs[2],
			  regs.regs[3], regs.regs[4], regs.regs[5] },
	};
	return 0;
}

int kexecd_arch_get_result(pid_t pid, int64_t *ret)
{
	struct user_pt_regs regs;
	int r = regset(PTRACE_GETREGSET, pid, NT_PRSTATUS, &regs, sizeof(regs));

	if (r < 0)
		return r;
	*ret = (int64_t)regs.regs[0];
	return 0;
}

int kexecd_arch_skip_call(pid_t pid, int64_t result)
{
	struct user_pt_regs regs;
	int nr = -1, r;

	// x0 first: it is still the first argument, and becomes the result.
	// arch/arm64/kernel/syscall.c el0_svc_common(): a call whose number a
	// tracer set to -1 (NO_SYSCALL) is skipped and x0 left as the tracer
	// wrote it.
	r = regset(PTRACE_GETREGSET, pid, NT_PRSTATUS, &regs, sizeof(regs));
	if (r < 0)
		return r;
	regs.regs[0] = (uint64_t)result;
	r = regset(PTRACE_SETREGSET, pid, NT_PRSTATUS, &regs, sizeof(regs));
	if (r < 0)
		return r;
	return regset(PTRACE_SETREGSET, pid, NT_ARM_SYSTEM_CALL, &nr, sizeof(nr));
}
