// SPDX-License-Identifier: GPL-2.0-or-later
// A stand-in for kexec-tools in the tests: makes kexec syscalls with flags
// the kernel rejects with EINVAL (an unknown architecture and the unknown flag
// bit 0x100, kernel/kexec.c kexec_load_check() and kernel/kexec_file.c), so
// that even an untraced run loads nothing. The tracer's skip mode answers them
// with 0 before they reach the kernel.
//
// usage: fake_kexec MODE [ENTRY]
//   crash       kexec_load of 3 segments with KEXEC_ON_CRASH (entry 0x1234)
//   noncrash    the same without KEXEC_ON_CRASH (entry 0x1234)
//   twice       two crash loads, entries 0x1111 then 0x2222
//   unload      kexec_load with no segment and KEXEC_ON_CRASH
//   file        kexec_file_load with KEXEC_FILE_ON_CRASH and a command line
//   fileunload  kexec_file_load with KEXEC_FILE_ON_CRASH | KEXEC_FILE_UNLOAD
//   fork        a child makes the crash load (entry 0xf0); this waits for it
//   doublefork  a grandchild makes it (entry 0xff), its parent exits first;
//               this waits for the grandchild through a pipe
//   thread      a second thread makes it (entry 0x7)
//   toomany     a crash load of 17 segments, more than the kernel takes
//   none        no kexec call
// ENTRY overrides the crash or noncrash load's entry. Prints the result and
// exits 0 when every call returned 0.
#define _GNU_SOURCE
#include <linux/kexec.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define BAD_FLAGS 0x80000100UL // unknown arch and flag bits: always EINVAL

static long load(unsigned long entry, unsigned long flags)
{
	static uint8_t a[5000], b[3];
	struct kexec_segment segs[3] = {
		{ a, sizeof(a), (void *)0x100000, 0x2000 },
		{ NULL, 0, (void *)0x200000, 0x1000 },
		{ b, sizeof(b), (void *)0x300000, 0x1000 },
	};

	for (size_t i = 0; i < sizeof(a); i++)
		a[i] = (uint8_t)(i * 7);
	memcpy(b, "xyz", 3);
	return syscall(SYS_kexec_load, entry, 3UL, segs, flags);
}

static long too_many(void)
{
	struct kexec_segment segs[KEXEC_SEGMENT_MAX + 1] = { 0 };

	return syscall(SYS_kexec_load, 0UL, KEXEC_SEGMENT_MAX + 1UL, segs,
		       BAD_FLAGS | KEXEC_ON_CRASH);
}

static long crash(unsigned long entry)
{
	return load(entry, BAD_FLAGS | KEXEC_ON_CRASH);
}

static long file_load(unsigned long flags)
{
	const char cmdline[] = "console=ttyS0 elfcorehdr=123K";

	return syscall(SYS_kexec_file_load, -1, -1, sizeof(cmdline), cmdline, flags);
}

// Wait for pid; its exit status as a result: 0 when it exited 0.
static long reap(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static long in_child(void)
{
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0)
		_exit(crash(0xf0) == 0 ? 0 : 1);
	return reap(pid);
}

static long in_grandchild(void)
{
	int done[2];
	char c;
	pid_t pid;

	if (pipe(done) < 0)
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		// The intermediate process: fork and exit at once, like a
		// daemon's first fork.
		pid_t mid = getpid();

		if (fork() == 0) {
			long r;

			close(done[0]);
			// Call only once the intermediate has exited.
			while (getppid() == mid)
				usleep(1000);
			r = crash(0xff);
			// Tell the top process the call is over.
			if (write(done[1], r == 0 ? "0" : "1", 1) != 1)
				_exit(1);
			_exit(0);
		}
		_exit(0);
	}
	close(done[1]);
	if (reap(pid) < 0)
		return -1;
	if (read(done[0], &c, 1) != 1)
		return -1;
	return c == '0' ? 0 : -1;
}

static void *thread_main(void *arg)
{
	*(long *)arg = crash(0x7);
	return NULL;
}

static long in_thread(void)
{
	pthread_t t;
	long r = -1;

	if (pthread_create(&t, NULL, thread_main, &r) != 0)
		return -1;
	pthread_join(t, NULL);
	return r;
}

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "crash";
	unsigned long entry = argc > 2 ? strtoul(argv[2], NULL, 0) : 0x1234;
	long r = 0;

	if (!strcmp(what, "crash"))
		r = crash(entry);
	else if (!strcmp(what, "noncrash"))
		r = load(entry, BAD_FLAGS);
	else if (!strcmp(what, "twice"))
		r = crash(0x1111) | crash(0x2222);
	else if (!strcmp(what, "unload"))
		r = syscall(SYS_kexec_load, 0UL, 0UL, NULL, BAD_FLAGS | KEXEC_ON_CRASH);
	else if (!strcmp(what, "file"))
		r = file_load(BAD_FLAGS | KEXEC_FILE_ON_CRASH);
	else if (!strcmp(what, "fileunload"))
		r = file_load(BAD_FLAGS | KEXEC_FILE_ON_CRASH | KEXEC_FILE_UNLOAD);
	else if (!strcmp(what, "fork"))
		r = in_child();
	else if (!strcmp(what, "doublefork"))
		r = in_grandchild();
	else if (!strcmp(what, "thread"))
		r = in_thread();
	else if (!strcmp(what, "toomany"))
		r = too_many();
	else if (strcmp(what, "none"))
		return 2;
	printf("%ld\n", r);
	return r == 0 ? 0 : 1;
}
