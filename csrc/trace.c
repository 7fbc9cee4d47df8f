// SPDX-License-Identifier: GPL-2.0-or-later
// Run a program under ptrace and capture the arguments of its kexec syscalls.
//
// A seccomp filter installed in the child before exec returns SECCOMP_RET_TRACE
// only for kexec_load and kexec_file_load, so the tracer sees exactly those
// calls and nothing else (no PTRACE_SYSCALL stop on every read()). This works
// for static and dynamic binaries alike, unlike LD_PRELOAD.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kexecd_core.h"

#ifndef __x86_64__
#error "kexecd's tracer reads x86_64 registers; other architectures are not supported yet"
#endif

// The user-space layout of struct kexec_segment (include/uapi/linux/kexec.h).
struct user_kexec_segment {
	uint64_t buf;
	uint64_t bufsz;
	uint64_t mem;
	uint64_t memsz;
};

static void freep(void *p)
{
	free(*(void **)p);
}
#define _cleanup_free_ __attribute__((cleanup(freep)))

void kexecd_load_deinit(struct kexecd_load *load)
{
	if (!load)
		return;
	for (uint32_t i = 0; i < KEXECD_MAX_SEGMENTS; i++) {
		free(load->segments[i].buf);
		load->segments[i].buf = NULL;
	}
	free(load->cmdline);
	load->cmdline = NULL;
}

// Copy len bytes at addr in pid's address space into dst.
static int peek(pid_t pid, uint64_t addr, void *dst, size_t len)
{
	size_t done = 0;

	while (done < len) {
		struct iovec local = { (char *)dst + done, len - done };
		struct iovec remote = { (void *)(uintptr_t)(addr + done), len - done };
		ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);

		if (n < 0)
			return -errno;
		if (n == 0)
			return -EFAULT;
		done += (size_t)n;
	}
	return 0;
}

static int copy_out(pid_t pid, uint64_t addr, uint64_t len, uint8_t **ret)
{
	uint8_t *buf;
	int r;

	*ret = NULL;
	if (len == 0)
		return 0;
	buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	r = peek(pid, addr, buf, len);
	if (r < 0) {
		free(buf);
		return r;
	}
	*ret = buf;
	return 0;
}

static int capture_kexec_load(pid_t pid, const struct user_regs_struct *regs,
			      struct kexecd_load *ret)
{
	// kexec_load(entry, nr_segments, segments, flags)
	_cleanup_free_ struct user_kexec_segment *segs = NULL;
	uint64_t nr = regs->rsi;
	int r;

	ret->syscall = KEXECD_SYS_KEXEC_LOAD;
	ret->entry = regs->rdi;
	ret->flags = regs->r10;
	// The kernel refuses more than KEXEC_SEGMENT_MAX; so do we.
	if (nr > KEXECD_MAX_SEGMENTS)
		return -E2BIG;
	ret->nr_segments = (uint32_t)nr;
	if (nr == 0)
		return 0;
	segs = calloc(nr, sizeof(*segs));
	if (!segs)
		return -ENOMEM;
	r = peek(pid, regs->rdx, segs, nr * sizeof(*segs));
	if (r < 0)
		return r;
	for (uint64_t i = 0; i < nr; i++) {
		struct kexecd_segment *s = &ret->segments[i];

		s->bufsz = segs[i].bufsz;
		s->mem = segs[i].mem;
		s->memsz = segs[i].memsz;
		r = copy_out(pid, segs[i].buf, segs[i].bufsz, &s->buf);
		if (r < 0)
			return r;
	}
	return 0;
}

static int capture_kexec_file_load(pid_t pid, const struct user_regs_struct *regs,
				   struct kexecd_load *ret)
{
	// kexec_file_load(kernel_fd, initrd_fd, cmdline_len, cmdline, flags)
	uint8_t *cmdline;
	int r;

	ret->syscall = KEXECD_SYS_KEXEC_FILE_LOAD;
	ret->flags = regs->r8;
	ret->cmdline_len = regs->rdx;
	if (regs->rdx > 65536)
		return -E2BIG;
	r = copy_out(pid, regs->r10, regs->rdx, &cmdline);
	if (r < 0)
		return r;
	ret->cmdline = (char *)cmdline;
	return 0;
}

// At a seccomp stop: record the call, then skip it or let it run.
static int on_seccomp_stop(pid_t pid, int mode, struct kexecd_load *ret)
{
	struct user_regs_struct regs;
	int r;

	if (ptrace(PTRACE_GETREGS, pid, NULL, &regs) < 0)
		return -errno;
	// Keep only the last call: free what an earlier one captured.
	kexecd_load_deinit(ret);
	memset(ret->segments, 0, sizeof(ret->segments));
	ret->nr_segments = 0;
	ret->calls++;
	if (regs.orig_rax == SYS_kexec_load)
		r = capture_kexec_load(pid, &regs, ret);
	else
		r = capture_kexec_file_load(pid, &regs, ret);
	if (r < 0)
		return r;
	if (mode == KEXECD_TRACE_SKIP) {
		// Documented in seccomp(2): a syscall number of -1 skips the
		// call, and rax becomes its return value.
		regs.orig_rax = (unsigned long long)-1;
		regs.rax = 0;
		ret->result = 0;
		if (ptrace(PTRACE_SETREGS, pid, NULL, &regs) < 0)
			return -errno;
		if (ptrace(PTRACE_CONT, pid, NULL, NULL) < 0)
			return -errno;
		return 0;
	}
	// Run the call and stop once more at its exit to read the result.
	if (ptrace(PTRACE_SYSCALL, pid, NULL, NULL) < 0)
		return -errno;
	return 0;
}

static void child(const char *const *argv)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_kexec_load, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_kexec_file_load, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
	};
	struct sock_fprog prog = {
		.len = sizeof(filter) / sizeof(filter[0]),
		.filter = filter,
	};

	if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0)
		_exit(126);
	// Wait for the tracer to set its options before the filter exists.
	raise(SIGSTOP);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		_exit(126);
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		_exit(126);
	execvp(argv[0], (char *const *)argv);
	_exit(127);
}

int kexecd_trace_run(const char *const *argv, int mode, struct kexecd_load *ret,
		     int *status_ret)
{
	int status, r = 0, in_call = 0;
	pid_t pid;

	memset(ret, 0, sizeof(*ret));
	*status_ret = 0;
	if (!argv || !argv[0])
		return -EINVAL;
	if (mode != KEXECD_TRACE_PASS && mode != KEXECD_TRACE_SKIP)
		return -EINVAL;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0)
		child(argv);

	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	if (!WIFSTOPPED(status)) {
		*status_ret = status;
		return -ECHILD;
	}
	if (ptrace(PTRACE_SETOPTIONS, pid, NULL,
		   PTRACE_O_TRACESECCOMP | PTRACE_O_TRACEEXEC |
			   PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL) < 0) {
		r = -errno;
		goto kill;
	}
	if (ptrace(PTRACE_CONT, pid, NULL, NULL) < 0) {
		r = -errno;
		goto kill;
	}

	for (;;) {
		int sig, event, req = PTRACE_CONT;

		if (waitpid(pid, &status, 0) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (WIFEXITED(status) || WIFSIGNALED(status))
			break;
		sig = WSTOPSIG(status);
		event = status >> 16;
		if (sig == SIGTRAP && event == PTRACE_EVENT_SECCOMP) {
			r = on_seccomp_stop(pid, mode, ret);
			if (r < 0)
				goto kill;
			in_call = mode == KEXECD_TRACE_PASS;
			continue;
		}
		if (sig == (SIGTRAP | 0x80)) {
			// The exit of a kexec call we let run.
			struct user_regs_struct regs;

			if (ptrace(PTRACE_GETREGS, pid, NULL, &regs) < 0) {
				r = -errno;
				goto kill;
			}
			ret->result = (int64_t)regs.rax;
			in_call = 0;
			sig = 0;
		} else if (sig == SIGTRAP && event != 0) {
			sig = 0; // exec and other ptrace events
		} else if (in_call) {
			// A signal arrived between a kexec call's entry and exit:
			// deliver it and keep waiting for the exit.
			req = PTRACE_SYSCALL;
		}
		// Anything else is a signal for the child: pass it on.
		if (ptrace(req, pid, NULL, (void *)(uintptr_t)sig) < 0) {
			r = -errno;
			goto kill;
		}
	}
	*status_ret = status;
	return 0;

kill:
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	*status_ret = status;
	return r;
}
