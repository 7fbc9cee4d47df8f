// SPDX-License-Identifier: GPL-2.0-or-later
// What the tracer (trace.c) needs to know of the CPU it runs on: the numbers
// of the kexec syscalls, the audit architecture seccomp reports for them, and
// how a tracee's syscall registers are read and written at a ptrace stop.
//
// One file per architecture implements it: arch_x86_64.c, arch_aarch64.c.
// arch.c compiles the one the compiler targets. Internal to the C core: not
// part of kexecd_core.h, so not of the cffi module.
#ifndef KEXECD_ARCH_H
#define KEXECD_ARCH_H

#include <stdint.h>
#include <sys/types.h>

// seccomp_data.arch of this architecture's native syscalls (AUDIT_ARCH_*).
// Calls of another ABI (a 32-bit compat task) carry another value.
extern const uint32_t kexecd_arch_audit;
// The native numbers of kexec_load(2) and kexec_file_load(2).
extern const int kexecd_arch_nr_kexec_load;
extern const int kexecd_arch_nr_kexec_file_load;

// A syscall as the kernel sees it at the tracee's seccomp stop.
struct kexecd_arch_call {
	long nr;		// the syscall number
	uint64_t args[6];	// its arguments, in the order of its C prototype
};

// At a seccomp stop: the syscall the tracee pid is about to make.
int kexecd_arch_get_call(pid_t pid, struct kexecd_arch_call *ret);

// At a syscall-exit-stop: what the syscall returned (0 or -errno for the
// kexec calls).
int kexecd_arch_get_result(pid_t pid, int64_t *ret);

// At a seccomp stop: skip the syscall, so that it never reaches the kernel
// and returns result instead (seccomp(2): a tracer skips a call by changing
// its number to -1).
int kexecd_arch_skip_call(pid_t pid, int64_t result);

#endif // KEXECD_ARCH_H
