// SPDX-License-Identifier: GPL-2.0-or-later
// Run a program under ptrace and capture the kexec syscalls of its whole
// process tree.
//
// A seccomp filter installed in the top process before exec returns
// SECCOMP_RET_TRACE only for kexec_load and kexec_file_load, so the tracer sees
// exactly those calls and nothing else (no PTRACE_SYSCALL stop on every
// read()). This works for static and dynamic binaries alike, unlike LD_PRELOAD.
//
// The filter is inherited by every descendant and thread, and with no tracer
// attached a SECCOMP_RET_TRACE call fails with ENOSYS (seccomp(2)). So the
// tracer follows the tree: PTRACE_O_TRACEFORK, TRACEVFORK and TRACECLONE attach
// each new process and thread before it runs, and the kexec -p that Debian's
// `kdump-config load` runs through `eval $KEXEC_CMD`, or that Fedora's
// kdumpctl runs from a subshell, stops here like a direct one.
//
// The top process is attached with PTRACE_SEIZE, not PTRACE_TRACEME, and so
// is every auto-attached descendant: only a seized tracee can be stopped with
// PTRACE_INTERRUPT, which detaching the descendants that outlive the top
// process needs (PTRACE_DETACH works only on a stopped tracee, and a SIGSTOP
// of our own would be seen by the program and could stay pending after the
// detach). New tracees then start with a PTRACE_EVENT_STOP instead of a
// SIGSTOP, and group-stops are PTRACE_EVENT_STOPs too (ptrace(2)).
//
// What differs between CPUs, the syscall numbers, the audit architecture the
// filter checks and the registers of a stopped syscall, is arch.h's.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/kexec.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "arch.h"
#include "kexecd_core.h"

// kexecd_core.h keeps its own integer for cffi; it must be the kernel's.
_Static_assert(KEXECD_MAX_SEGMENTS == KEXEC_SEGMENT_MAX,
	       "KEXECD_MAX_SEGMENTS must be <linux/kexec.h>'s KEXEC_SEGMENT_MAX");

// A kexec_file_load command line longer than this is refused.
#define MAX_CMDLINE 65536

// A process or thread of the traced tree.
struct tracee {
	pid_t pid;		// its thread id
	bool stopped;		// in a ptrace-stop we hold it in (only while quiescing)
	bool at_seccomp;	// ... and that stop is a kexec call's seccomp stop
	bool in_call;		// running a kexec call we let pass; stop at its exit
	int sig;		// the signal of the signal-delivery-stop it is held in
	uint64_t seq;		// with in_call: which crash load the call is
};

struct tracer {
	int mode;		// enum kexecd_trace_mode
	pid_t top;
	bool top_done;		// the top process was reaped ...
	int top_status;		// ... with this wait status
	struct tracee *t;	// the tracees, in no order
	size_t nr, cap;
	size_t stray;		// tracees killed that could not be added to t
	uint64_t seq;		// the number of the crash load in *load, from 1
	struct kexecd_load *load;
};

enum kexec_kind {
	KIND_CRASH_LOAD,
	KIND_UNLOAD,
	KIND_REBOOT_LOAD,
};

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
	free(load->program);
	load->program = NULL;
	load->program_len = 0;
}

// ---------------------------------------------------------------------------
// The tracee table.

static struct tracee *find(struct tracer *tr, pid_t pid)
{
	for (size_t i = 0; i < tr->nr; i++)
		if (tr->t[i].pid == pid)
			return &tr->t[i];
	return NULL;
}

// Add pid unless it is there. Pointers into the table are stale afterwards.
static int add(struct tracer *tr, pid_t pid)
{
	if (find(tr, pid))
		return 0;
	if (tr->nr == tr->cap) {
		size_t cap = tr->cap ? tr->cap * 2 : 16;
		struct tracee *t = reallocarray(tr->t, cap, sizeof(*t));

		if (!t)
			return -ENOMEM;
		tr->t = t;
		tr->cap = cap;
	}
	tr->t[tr->nr++] = (struct tracee){ .pid = pid };
	return 0;
}

// Forget pid. Pointers into the table are stale afterwards.
static void drop(struct tracer *tr, pid_t pid)
{
	struct tracee *t = find(tr, pid);

	if (t)
		*t = tr->t[--tr->nr];
}

static size_t nr_running(const struct tracer *tr)
{
	size_t n = 0;

	for (size_t i = 0; i < tr->nr; i++)
		n += !tr->t[i].stopped;
	return n;
}

// ---------------------------------------------------------------------------
// Reading the tracee's memory.

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

// The executable of pid, whole, into ret->program. Not being able to read it
// is no error: the load is captured all the same, without it.
static void capture_program(pid_t pid, struct kexecd_load *ret)
{
	char path[32];
	struct stat st;
	uint8_t *buf;
	size_t done = 0;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    st.st_size > KEXECD_MAX_PROGRAM)
		goto out;
	buf = malloc((size_t)st.st_size);
	if (!buf)
		goto out;
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	if (done != (size_t)st.st_size) {
		free(buf);
		goto out;
	}
	ret->program = buf;
	ret->program_len = done;
out:
	close(fd);
}

// On error ret may hold buffers: kexecd_load_deinit() frees them.
static int capture_kexec_load(pid_t pid, const struct kexecd_arch_call *call,
			      struct kexecd_load *ret)
{
	// kexec_load(entry, nr_segments, segments, flags)
	struct kexec_segment segs[KEXEC_SEGMENT_MAX];
	uint64_t nr = call->args[1];
	int r;

	ret->syscall = KEXECD_SYS_KEXEC_LOAD;
	ret->entry = call->args[0];
	ret->flags = call->args[3];
	// kernel/kexec.c kexec_load_check(): the kernel refuses more than
	// KEXEC_SEGMENT_MAX; so do we.
	if (nr > KEXEC_SEGMENT_MAX)
		return -E2BIG;
	ret->nr_segments = (uint32_t)nr;
	r = peek(pid, call->args[2], segs, nr * sizeof(segs[0]));
	if (r < 0)
		return r;
	for (uint64_t i = 0; i < nr; i++) {
		struct kexecd_segment *s = &ret->segments[i];

		s->bufsz = segs[i].bufsz;
		s->mem = (uintptr_t)segs[i].mem;
		s->memsz = segs[i].memsz;
		r = copy_out(pid, (uintptr_t)segs[i].buf, segs[i].bufsz, &s->buf);
		if (r < 0)
			return r;
	}
	return 0;
}

static int capture_kexec_file_load(pid_t pid, const struct kexecd_arch_call *call,
				   struct kexecd_load *ret)
{
	// kexec_file_load(kernel_fd, initrd_fd, cmdline_len, cmdline, flags)
	uint64_t len = call->args[2];
	uint8_t *cmdline;
	int r;

	ret->syscall = KEXECD_SYS_KEXEC_FILE_LOAD;
	ret->flags = call->args[4];
	ret->cmdline_len = len;
	if (len > MAX_CMDLINE)
		return -E2BIG;
	r = copy_out(pid, call->args[3], len, &cmdline);
	if (r < 0)
		return r;
	ret->cmdline = (char *)cmdline;
	return 0;
}

// What a kexec call does, from its flags alone (argv cannot tell: the
// command may be a shell script).
static enum kexec_kind classify(const struct kexecd_arch_call *call)
{
	uint64_t flags;

	if (call->nr == kexecd_arch_nr_kexec_load) {
		// kernel/kexec.c do_kexec_load(): nr_segments == 0 unloads the
		// image the flags select, the crash one with KEXEC_ON_CRASH.
		if (call->args[1] == 0)
			return KIND_UNLOAD;
		return call->args[3] & KEXEC_ON_CRASH ? KIND_CRASH_LOAD : KIND_REBOOT_LOAD;
	}
	// kernel/kexec_file.c kexec_file_load(): KEXEC_FILE_UNLOAD unloads,
	// whatever else the flags say.
	flags = call->args[4];
	if (flags & KEXEC_FILE_UNLOAD)
		return KIND_UNLOAD;
	return flags & KEXEC_FILE_ON_CRASH ? KIND_CRASH_LOAD : KIND_REBOOT_LOAD;
}

// Replace the recorded crash load with *cap, keeping the counters.
static void record(struct tracer *tr, struct kexecd_load *cap)
{
	struct kexecd_load *load = tr->load;

	cap->calls = load->calls;
	cap->crash_loads = load->crash_loads;
	cap->unloads = load->unloads;
	cap->reboot_loads = load->reboot_loads;
	kexecd_load_deinit(load);
	*load = *cap;
	tr->seq++;
}

// ---------------------------------------------------------------------------
// Stops.

// Let a tracee go on, delivering sig. -ESRCH is no error: a tracee can be
// killed at any moment (ptrace(2)), and its exit is reported next.
static int resume(struct tracee *t, int sig)
{
	int req = t->in_call ? PTRACE_SYSCALL : PTRACE_CONT;

	if (ptrace(req, t->pid, NULL, (void *)(uintptr_t)sig) < 0 && errno != ESRCH)
		return -errno;
	return 0;
}

// At a kexec call's seccomp stop: count it, record it when it is a crash
// load, then skip it or let it run. The call has not reached the kernel yet.
static int on_kexec(struct tracer *tr, struct tracee *t)
{
	struct kexecd_arch_call call;
	struct kexecd_load cap;
	enum kexec_kind kind;
	int r;

	r = kexecd_arch_get_call(t->pid, &call);
	if (r < 0)
		return r;
	kind = classify(&call);
	tr->load->calls++;
	if (kind == KIND_UNLOAD)
		tr->load->unloads++;
	else if (kind == KIND_REBOOT_LOAD)
		tr->load->reboot_loads++;
	else
		tr->load->crash_loads++;
	if (kind == KIND_CRASH_LOAD) {
		memset(&cap, 0, sizeof(cap));
		if (call.nr == kexecd_arch_nr_kexec_load)
			r = capture_kexec_load(t->pid, &call, &cap);
		else
			r = capture_kexec_file_load(t->pid, &call, &cap);
		if (r < 0) {
			kexecd_load_deinit(&cap);
			return r;
		}
		capture_program(t->pid, &cap);
		// Until its exit is seen, the call's result is not known.
		cap.result = tr->mode == KEXECD_TRACE_SKIP ? 0 : -EINPROGRESS;
		record(tr, &cap);
	}
	if (tr->mode == KEXECD_TRACE_SKIP) {
		r = kexecd_arch_skip_call(t->pid, 0);
		if (r < 0)
			return r;
		return resume(t, 0);
	}
	if (kind == KIND_CRASH_LOAD) {
		// Run the call and stop once more at its exit to read the
		// result (after a seccomp stop, PTRACE_SYSCALL stops at the
		// syscall's exit: ptrace(2), since Linux 4.8).
		t->in_call = true;
		t->seq = tr->seq;
	}
	return resume(t, 0);
}

// At a syscall-exit-stop: the end of a kexec call we let run.
static int on_syscall_exit(struct tracer *tr, struct tracee *t)
{
	if (!t->in_call)
		return 0;
	t->in_call = false;
	if (t->seq != tr->seq)
		return 0; // a later crash load was recorded meanwhile
	return kexecd_arch_get_result(t->pid, &tr->load->result);
}

// At a PTRACE_EVENT_FORK, VFORK or CLONE stop: a new tracee. Its first stop
// may have been reported already (then it is in the table), or comes later.
static int on_new_tracee(struct tracer *tr, pid_t parent)
{
	unsigned long child;

	if (ptrace(PTRACE_GETEVENTMSG, parent, NULL, &child) < 0)
		return -errno;
	return add(tr, (pid_t)child);
}

// At a PTRACE_EVENT_EXEC stop. ptrace(2): when a thread other than the
// leader execs, the others die and it takes the leader's tid; its former tid
// disappears without an exit report.
static int on_exec(struct tracer *tr, pid_t pid)
{
	unsigned long former;
	struct tracee *t;

	if (ptrace(PTRACE_GETEVENTMSG, pid, NULL, &former) < 0)
		return -errno;
	if ((pid_t)former != pid)
		drop(tr, (pid_t)former);
	t = find(tr, pid);
	if (t)
		t->in_call = false;
	return 0;
}

// One report of waitpid(). With quiescing, stopped tracees are held in their
// stop instead of resumed, and kexec calls are not handled. Errors are
// -errno, and leave the tracee held in its stop; -ESRCH (the tracee was
// killed meanwhile, its exit comes next) is none.
static int on_report(struct tracer *tr, pid_t pid, int status, bool quiescing)
{
	struct tracee *t;
	int r = 0, sig, event;

	if (WIFEXITED(status) || WIFSIGNALED(status)) {
		if (pid == tr->top) {
			tr->top_done = true;
			tr->top_status = status;
		}
		if (find(tr, pid))
			drop(tr, pid);
		else if (tr->stray)
			tr->stray--;
		return 0;
	}
	if (!WIFSTOPPED(status))
		return 0;
	// A stop of an unknown tracee is the first stop of a new process or
	// thread, reported before its parent's PTRACE_EVENT_FORK or CLONE.
	r = add(tr, pid);
	if (r < 0) {
		// Not traced further: it must not stay stopped for good.
		if (kill(pid, SIGKILL) == 0)
			tr->stray++;
		return r;
	}
	sig = WSTOPSIG(status);
	event = (unsigned int)status >> 16;
	if (sig == SIGTRAP && (event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK ||
			       event == PTRACE_EVENT_CLONE))
		r = on_new_tracee(tr, pid);
	else if (sig == SIGTRAP && event == PTRACE_EVENT_EXEC)
		r = on_exec(tr, pid);
	t = find(tr, pid); // add() and drop() move the table
	if (r == 0 && sig == (SIGTRAP | 0x80))
		r = on_syscall_exit(tr, t);
	if (r == -ESRCH)
		return 0;
	if (r < 0 || quiescing)
		goto hold;

	if (sig == SIGTRAP && event == PTRACE_EVENT_SECCOMP) {
		r = on_kexec(tr, t);
	} else if (event == PTRACE_EVENT_STOP && sig != SIGTRAP) {
		// A group-stop (SIGSTOP, SIGTSTP, ...): stay stopped as the
		// untraced process would, until SIGCONT.
		if (ptrace(PTRACE_LISTEN, pid, NULL, NULL) < 0)
			r = -errno;
	} else {
		// The syscall-exit-stop and ptrace events carry no signal;
		// PTRACE_EVENT_STOP with SIGTRAP is a new tracee's first stop,
		// or a group-stopped one woken by SIGCONT. A
		// signal-delivery-stop passes its signal on.
		r = resume(t, sig == (SIGTRAP | 0x80) || event != 0 ? 0 : sig);
	}
	if (r == 0 || r == -ESRCH)
		return 0;
hold:
	t->stopped = true;
	t->at_seccomp = sig == SIGTRAP && event == PTRACE_EVENT_SECCOMP;
	t->sig = event == 0 && sig != (SIGTRAP | 0x80) ? sig : 0; // signal-delivery-stop
	return r;
}

// Whether tid is a zombie, or gone: then it never stops again.
static bool is_dead(pid_t tid)
{
	char path[64], buf[512];
	const char *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ESRCH;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return true;
	buf[n] = '\0';
	// "pid (comm) S ...": comm may hold ')' itself.
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

// Take the exit reports of the running tracees that are dead. One is queued
// once /proc shows the zombie (kernel/exit.c exit_notify() sets exit_state
// and notifies the tracer together), except for a thread-group leader that
// exited before its other threads: its exit is reported after theirs
// (delay_group_leader()), so it is forgotten here and reaped by a later wait.
static void settle_dead(struct tracer *tr)
{
	size_t i = 0;

	while (i < tr->nr) {
		pid_t pid = tr->t[i].pid;
		int status;

		if (tr->t[i].stopped || !is_dead(pid))
			i++;
		else if (waitpid(pid, &status, __WALL | WNOHANG) == pid)
			on_report(tr, pid, status, true); // drops it
		else
			drop(tr, pid);
	}
}

// Bring every tracee into a ptrace-stop and hold it there, so that it can be
// detached or killed: PTRACE_INTERRUPT the running ones, then take reports
// until each has stopped or exited. A parent reports the PTRACE_EVENT_FORK of
// a child before any later stop, so no new child is missed. Polls rather than
// blocks, since a dead tracee may never report (settle_dead()).
static int quiesce(struct tracer *tr)
{
	const struct timespec tick = { 0, 1000000 };
	int status, r;
	pid_t pid;

	for (size_t i = 0; i < tr->nr; i++)
		if (!tr->t[i].stopped)
			ptrace(PTRACE_INTERRUPT, tr->t[i].pid, NULL, NULL);
	while (nr_running(tr)) {
		pid = waitpid(-1, &status, __WALL | __WNOTHREAD | WNOHANG);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0 && errno == ECHILD) {
			tr->nr = 0; // no tracee is left at all
			return 0;
		}
		if (pid < 0)
			return -errno;
		if (pid > 0) {
			r = on_report(tr, pid, status, true);
			if (r < 0)
				return r;
			continue;
		}
		settle_dead(tr);
		if (nr_running(tr))
			nanosleep(&tick, NULL);
	}
	return 0;
}

// Detach every tracee, once quiesced. A kexec call caught at its seccomp
// stop fails with ENOSYS, as it would with no tracer (seccomp(2)); if it
// cannot be made to, its tracee is killed instead, so the call never runs.
static void detach_all(struct tracer *tr)
{
	for (size_t i = 0; i < tr->nr; i++) {
		struct tracee *t = &tr->t[i];

		if (t->at_seccomp && kexecd_arch_skip_call(t->pid, -ENOSYS) < 0) {
			kill(t->pid, SIGKILL);
			continue;
		}
		ptrace(PTRACE_DETACH, t->pid, NULL, (void *)(uintptr_t)t->sig);
	}
	tr->nr = 0;
}

static void kill_known(struct tracer *tr)
{
	for (size_t i = 0; i < tr->nr; i++)
		kill(tr->t[i].pid, SIGKILL);
}

// Kill the whole tree and wait until every tracee has exited and the top
// process is reaped. A tracee killed at a seccomp stop never runs its call
// (kernel/seccomp.c __seccomp_filter(): a pending fatal signal skips it).
static void kill_all(struct tracer *tr)
{
	int status;
	pid_t pid;

	// Quiesced first, no process is in the middle of a fork whose child
	// would be missed. If that fails, kill what is known all the same.
	quiesce(tr);
	kill_known(tr);
	if (!tr->top_done)
		kill(tr->top, SIGKILL);
	while (!tr->top_done || tr->nr || tr->stray) {
		pid = waitpid(-1, &status, __WALL | __WNOTHREAD);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0)
			break; // ECHILD: nothing is left to wait for
		on_report(tr, pid, status, true);
		// A stop queued before the kills, maybe of a new tracee, or
		// announcing one: kill whatever is known again.
		if (WIFSTOPPED(status))
			kill_known(tr);
	}
	if (!tr->top_done)
		tr->top_status = W_EXITCODE(0, SIGKILL);
}

// ---------------------------------------------------------------------------
// The top process.

static void child(const char *const *argv, int go)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kexecd_arch_audit, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)kexecd_arch_nr_kexec_load, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)kexecd_arch_nr_kexec_file_load, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
	};
	struct sock_fprog prog = {
		.len = sizeof(filter) / sizeof(filter[0]),
		.filter = filter,
	};
	ssize_t n;
	char c;

	// Wait until the tracer has seized us: it sends one byte then. Were
	// we to go on untraced, the filter would fail the kexec calls with
	// ENOSYS; a tracer that failed kills us instead.
	do
		n = read(go, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1)
		_exit(126);
	close(go);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		_exit(126);
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		_exit(126);
	execvp(argv[0], (char *const *)argv);
	_exit(127);
}

// Start argv, seized, with the filter installed. On error nothing is left
// running.
static int start(const char *const *argv, pid_t *ret)
{
	const long options = PTRACE_O_TRACESECCOMP | PTRACE_O_TRACESYSGOOD |
			     PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK |
			     PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL;
	int go[2], status, r = 0;
	pid_t pid;

	// A socket, not a pipe: send() can refuse to raise SIGPIPE.
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, go) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		r = -errno;
		close(go[0]);
		close(go[1]);
		return r;
	}
	if (pid == 0) {
		close(go[1]);
		child(argv, go[0]);
	}
	close(go[0]);
	if (ptrace(PTRACE_SEIZE, pid, NULL, (void *)options) < 0)
		r = -errno;
	else if (send(go[1], "", 1, MSG_NOSIGNAL) != 1)
		r = -EPIPE; // the child died already
	if (r < 0)
		kill(pid, SIGKILL);
	close(go[1]);
	if (r < 0) {
		while (waitpid(pid, &status, __WALL) < 0 && errno == EINTR)
			;
		return r;
	}
	*ret = pid;
	return 0;
}

int kexecd_trace_run(const char *const *argv, int mode, struct kexecd_load *ret,
		     int *status_ret)
{
	struct tracer tr = { .mode = mode, .load = ret };
	int status, r;
	pid_t pid;

	memset(ret, 0, sizeof(*ret));
	*status_ret = 0;
	if (!argv || !argv[0])
		return -EINVAL;
	if (mode != KEXECD_TRACE_PASS && mode != KEXECD_TRACE_SKIP)
		return -EINVAL;
	r = start(argv, &tr.top);
	if (r < 0)
		return r;
	r = add(&tr, tr.top);
	// Until the top process exits. Only this thread's children and
	// tracees (__WNOTHREAD): those of the caller's other threads are
	// theirs to wait for.
	while (r == 0 && !tr.top_done) {
		pid = waitpid(-1, &status, __WALL | __WNOTHREAD);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0 && errno == ECHILD) {
			// Someone else reaped the top process: nothing is
			// left to wait for, nor to kill.
			tr.top_done = true;
			tr.nr = 0;
			r = -ECHILD;
		} else if (pid < 0) {
			r = -errno;
		} else {
			r = on_report(&tr, pid, status, false);
		}
	}
	if (r < 0) {
		kill_all(&tr);
	} else if (tr.nr) {
		// Descendants outlived the top process (daemons, or children
		// it did not wait for): let them go rather than wait for them.
		// Only stopped tracees can be detached; rather than leave one
		// traced, to stop for good at its next signal, kill them all.
		if (quiesce(&tr) < 0)
			kill_all(&tr);
		else
			detach_all(&tr);
	}
	free(tr.t);
	*status_ret = tr.top_status;
	return r;
}
