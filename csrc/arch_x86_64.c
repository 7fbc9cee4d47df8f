// SPDX-License-Identifier: GPL-2.0-or-later
// arch.h for x86_64: compiled through arch.c.
//
// The syscall number is in orig_rax (rax holds -ENOSYS until the call
// returns, then its result), the arguments in rdi, rsi, rdx, r10, r8 and r9
// (arch/x86/entry/entry_64.S). PTRACE_GETREGS and PTRACE_SETREGS move them
// all at once as a struct user_regs_struct.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <stddef.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>

#include "arch.h"

// arch/x86/entry/syscalls/syscall_64.tbl
_Static_assert(SYS_kexec_load == 246, "x86_64 kexec_load is 246");
_Static_assert(SYS_kexec_file_load == 320, "x86_64 kexec_file_load is 320");

const uint32_t kexecd_arch_audit = AUDIT_ARCH_X86_64;
const int kexecd_arch_nr_kexec_load = SYS_kexec_load;
const int kexecd_arch_nr_kexec_file_load = SYS_kexec_file_load;

static int get_regs(pid_t pid, struct user_regs_struct *ret)
{
	if (ptrace(PTRACE_GETREGS, pid, NULL, ret) < 0)
		return -errno;
	return 0;
}

int kexecd_arch_get_call(pid_t pid, struct kexecd_arch_call *ret)
{
	struct user_regs_struct regs;
	int r = get_regs(pid, &regs);

	if (r < 0)
		return r;
	*ret = (struct kexecd_arch_call){
		.nr = (long)regs.orig_rax,
		.args = { regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9 },
	};
	return 0;
}

int kexecd_arch_get_result(pid_t pid, int64_t *ret)
{
	struct user_regs_struct regs;
	int r = get_regs(pid, &regs);

	if (r < 0)
		return r;
	*ret = (int64_t)regs.rax;
	return 0;
}

int kexecd_arch_skip_call(pid_t pid, int64_t result)
{
	struct user_regs_struct regs;
	int r = get_regs(pid, &regs);

	if (r < 0)
		return r;
	// seccomp(2): a syscall number of -1 skips the call, and rax becomes
	// its return value.
	regs.orig_rax = (unsigned long long)-1;
	regs.rax = (unsigned long long)result;
	if (ptrace(PTRACE_SETREGS, pid, NULL, &regs) < 0)
		return -errno;
	return 0;
}
