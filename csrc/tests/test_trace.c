// SPDX-License-Identifier: GPL-2.0-or-later
// Tests of the tracer, without Python. Only skip mode runs here: the traced
// kexec calls never reach the kernel (and would be rejected if they did).
#define _GNU_SOURCE
#include <errno.h>
#include <linux/kexec.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kexecd_core.h"
#include "check.h"

static const char *fake;

#define BAD_FLAGS 0x80000100UL // fake_kexec's: the kernel refuses them

static int run(const char *what, struct kexecd_load *load, int *status)
{
	const char *argv[] = { fake, what, NULL };

	return kexecd_trace_run(argv, KEXECD_TRACE_SKIP, load, status);
}

// Run a shell script, with $0 the fake program.
static int run_sh(const char *script, struct kexecd_load *load, int *status)
{
	const char *argv[] = { "sh", "-c", script, fake, NULL };

	return kexecd_trace_run(argv, KEXECD_TRACE_SKIP, load, status);
}

static int exited_0(int status)
{
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// The crash load fake_kexec makes, recorded whole.
static void check_crash_load(const struct kexecd_load *load, uint64_t entry)
{
	CHECK(load->syscall == KEXECD_SYS_KEXEC_LOAD);
	CHECK(load->result == 0);
	CHECK(load->entry == entry);
	CHECK(load->flags == (BAD_FLAGS | KEXEC_ON_CRASH));
	CHECK(load->nr_segments == 3);
	CHECK(load->segments[0].bufsz == 5000 && load->segments[0].mem == 0x100000);
	CHECK(load->segments[0].buf && load->segments[0].buf[4999] == (uint8_t)(4999 * 7));
	CHECK(load->segments[2].bufsz == 3 && !memcmp(load->segments[2].buf, "xyz", 3));
}

// The program that made the load is recorded whole: the file at path.
static void check_program(const struct kexecd_load *load, const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *want;
	long n;

	CHECK(f != NULL);
	CHECK(fseek(f, 0, SEEK_END) == 0);
	n = ftell(f);
	CHECK(n > 0 && fseek(f, 0, SEEK_SET) == 0);
	want = malloc((size_t)n);
	CHECK(want && fread(want, 1, (size_t)n, f) == (size_t)n);
	fclose(f);
	CHECK(load->program && load->program_len == (uint64_t)n);
	// Not compared when missing: a failed check goes on to the next.
	CHECK(load->program && load->program_len == (uint64_t)n &&
	      !memcmp(load->program, want, (size_t)n));
	free(want);
}

// One crash load and nothing else.
static void check_one_crash_load(const struct kexecd_load *load, uint64_t entry)
{
	check_crash_load(load, entry);
	CHECK(load->calls == 1 && load->crash_loads == 1);
	CHECK(load->unloads == 0 && load->reboot_loads == 0);
}

static void test_load(void)
{
	struct kexecd_load load;
	int status, r = run("crash", &load, &status);

	CHECK(r == 0);
	CHECK(exited_0(status));
	CHECK(load.syscall == KEXECD_SYS_KEXEC_LOAD);
	CHECK(load.calls == 1 && load.crash_loads == 1);
	CHECK(load.result == 0);
	CHECK(load.entry == 0x1234);
	CHECK(load.flags == (BAD_FLAGS | KEXEC_ON_CRASH));
	CHECK(load.nr_segments == 3);
	CHECK(load.segments[0].bufsz == 5000 && load.segments[0].mem == 0x100000);
	CHECK(load.segments[0].memsz == 0x2000);
	CHECK(load.segments[0].buf && load.segments[0].buf[4999] == (uint8_t)(4999 * 7));
	CHECK(load.segments[1].bufsz == 0 && load.segments[1].buf == NULL);
	CHECK(load.segments[2].bufsz == 3 && !memcmp(load.segments[2].buf, "xyz", 3));
	check_program(&load, fake);
	kexecd_load_deinit(&load);
}

static void test_twice_keeps_last(void)
{
	struct kexecd_load load;
	int status, r = run("twice", &load, &status);

	CHECK(r == 0);
	CHECK(load.calls == 2 && load.crash_loads == 2);
	CHECK(load.entry == 0x2222);
	kexecd_load_deinit(&load);
}

static void test_file_load(void)
{
	struct kexecd_load load;
	int status, r = run("file", &load, &status);

	CHECK(r == 0);
	CHECK(load.syscall == KEXECD_SYS_KEXEC_FILE_LOAD);
	CHECK(load.flags == (BAD_FLAGS | KEXEC_FILE_ON_CRASH));
	CHECK(load.calls == 1 && load.crash_loads == 1);
	CHECK(load.cmdline_len == sizeof("console=ttyS0 elfcorehdr=123K"));
	CHECK(load.cmdline && !strcmp(load.cmdline, "console=ttyS0 elfcorehdr=123K"));
	kexecd_load_deinit(&load);
}

static void test_no_kexec_call(void)
{
	struct kexecd_load load;
	int status, r = run("none", &load, &status);

	CHECK(r == 0);
	CHECK(load.syscall == KEXECD_SYS_NONE && load.calls == 0);
	CHECK(exited_0(status));
	kexecd_load_deinit(&load);
}

static void test_shell_wrappers(void)
{
	// The shell execs the program, or forks it and goes on after it.
	const char *scripts[] = { "exec \"$0\" crash", "\"$0\" crash; true" };

	for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++) {
		struct kexecd_load load;
		int status, r = run_sh(scripts[i], &load, &status);

		CHECK(r == 0);
		CHECK(exited_0(status));
		check_one_crash_load(&load, 0x1234);
		// The program that made the call, not the shell that ran it.
		check_program(&load, fake);
		kexecd_load_deinit(&load);
	}
}

static void test_exec_chain(void)
{
	struct kexecd_load load;
	int status, r = run_sh("sh -c '\"$0\" crash 0xc4a1' \"$0\"", &load, &status);

	CHECK(r == 0);
	CHECK(exited_0(status));
	check_one_crash_load(&load, 0xc4a1);
	kexecd_load_deinit(&load);
}

static void test_child(void)
{
	struct kexecd_load load;
	int status, r = run("fork", &load, &status);

	CHECK(r == 0);
	CHECK(exited_0(status));
	check_one_crash_load(&load, 0xf0);
	kexecd_load_deinit(&load);
}

static void test_double_fork(void)
{
	struct kexecd_load load;
	int status, r = run("doublefork", &load, &status);

	CHECK(r == 0);
	CHECK(exited_0(status));
	check_one_crash_load(&load, 0xff);
	kexecd_load_deinit(&load);
}

static void test_thread(void)
{
	struct kexecd_load load;
	int status, r = run("thread", &load, &status);

	CHECK(r == 0);
	CHECK(exited_0(status));
	check_one_crash_load(&load, 0x7);
	kexecd_load_deinit(&load);
}

static void test_unload_then_load(void)
{
	struct kexecd_load load;
	int status, r = run_sh("\"$0\" unload && \"$0\" crash", &load, &status);

	CHECK(r == 0);
	CHECK(exited_0(status));
	check_crash_load(&load, 0x1234);
	CHECK(load.calls == 2 && load.crash_loads == 1 && load.unloads == 1);
	CHECK(load.reboot_loads == 0);
	kexecd_load_deinit(&load);
}

static void test_unloads_only(void)
{
	struct kexecd_load load;
	int status, r = run_sh("\"$0\" unload && \"$0\" fileunload", &load, &status);

	CHECK(r == 0);
	CHECK(exited_0(status));
	CHECK(load.syscall == KEXECD_SYS_NONE && load.nr_segments == 0 && !load.cmdline);
	CHECK(load.calls == 2 && load.unloads == 2 && load.crash_loads == 0);
	kexecd_load_deinit(&load);
}

static void test_non_crash_load_not_recorded(void)
{
	struct kexecd_load load;
	int status, r = run("noncrash", &load, &status);

	CHECK(r == 0);
	CHECK(exited_0(status)); // skipped all the same
	CHECK(load.syscall == KEXECD_SYS_NONE && load.entry == 0 && load.nr_segments == 0);
	CHECK(load.calls == 1 && load.reboot_loads == 1 && load.crash_loads == 0);
	kexecd_load_deinit(&load);
}

static void test_last_crash_load_kept(void)
{
	struct kexecd_load load;
	int status, r = run_sh("\"$0\" crash 0x1111; \"$0\" fork; \"$0\" crash 0x2222; "
			       "\"$0\" noncrash 0x3333; \"$0\" unload",
			       &load, &status);

	CHECK(r == 0);
	CHECK(exited_0(status));
	check_crash_load(&load, 0x2222);
	CHECK(load.calls == 5 && load.crash_loads == 3);
	CHECK(load.unloads == 1 && load.reboot_loads == 1);
	kexecd_load_deinit(&load);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

// The pid of tid's tracer, 0 for none; -1 if tid is gone.
static int tracer_of(pid_t tid)
{
	char path[64], line[256];
	int tracer = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", tid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "TracerPid: %d", &tracer) == 1)
			break;
	fclose(f);
	return tracer;
}

static void test_outliving_descendant_detached(void)
{
	// A background child still running when the shell exits is detached,
	// not waited for: the run takes far less than its sleep, and the
	// child goes on running untraced.
	char pidfile[] = "/tmp/kexecd-test-XXXXXX";
	char script[256];
	struct kexecd_load load;
	int status, r, fd, bg = 0;
	double t0;
	FILE *f;

	fd = mkstemp(pidfile);
	CHECK(fd >= 0);
	close(fd);
	snprintf(script, sizeof(script),
		 "\"$0\" crash; sleep 60 </dev/null >/dev/null 2>&1 & echo $! >%s; exit 3",
		 pidfile);
	t0 = now();
	r = run_sh(script, &load, &status);
	CHECK(now() - t0 < 20);
	CHECK(r == 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 3);
	check_one_crash_load(&load, 0x1234);
	kexecd_load_deinit(&load);

	f = fopen(pidfile, "r");
	CHECK(f && fscanf(f, "%d", &bg) == 1 && bg > 0);
	if (f)
		fclose(f);
	unlink(pidfile);
	if (bg > 0) {
		CHECK(tracer_of(bg) == 0);
		kill(bg, SIGKILL);
	}
}

// Whether pid is gone, or a zombie.
static int is_gone(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return 1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && (p[2] == 'Z' || p[2] == 'X');
}

static void test_error_kills_the_tree(void)
{
	// A crash load the tracer refuses (more segments than the kernel
	// takes) ends the run with an error, the whole tree killed: the
	// background child too, and the call never made.
	char pidfile[] = "/tmp/kexecd-test-XXXXXX";
	char script[256];
	struct kexecd_load load;
	int status, r, fd, bg = 0;
	FILE *f;

	fd = mkstemp(pidfile);
	CHECK(fd >= 0);
	close(fd);
	snprintf(script, sizeof(script),
		 "sleep 60 </dev/null >/dev/null 2>&1 & echo $! >%s; \"$0\" toomany; exit 3",
		 pidfile);
	r = run_sh(script, &load, &status);
	CHECK(r == -E2BIG);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	CHECK(load.calls == 1 && load.crash_loads == 1);
	kexecd_load_deinit(&load);

	f = fopen(pidfile, "r");
	CHECK(f && fscanf(f, "%d", &bg) == 1 && bg > 0);
	if (f)
		fclose(f);
	unlink(pidfile);
	if (bg > 0) {
		for (int i = 0; i < 100 && !is_gone(bg); i++)
			usleep(10000);
		CHECK(is_gone(bg));
	}
}

static void test_missing_program(void)
{
	const char *argv[] = { "/nonexistent/kexec", NULL };
	struct kexecd_load load;
	int status, r = kexecd_trace_run(argv, KEXECD_TRACE_SKIP, &load, &status);

	CHECK(r == 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 127);
	kexecd_load_deinit(&load);
}

static void test_bad_arguments(void)
{
	const char *empty[] = { NULL };
	struct kexecd_load load;
	int status;

	CHECK(kexecd_trace_run(empty, KEXECD_TRACE_SKIP, &load, &status) == -22);
	CHECK(kexecd_trace_run((const char *[]){ fake, NULL }, 7, &load, &status) == -22);
	kexecd_load_deinit(NULL);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s PATH-TO-fake_kexec\n", argv[0]);
		return 2;
	}
	fake = argv[1];
	test_load();
	test_twice_keeps_last();
	test_file_load();
	test_no_kexec_call();
	test_shell_wrappers();
	test_exec_chain();
	test_child();
	test_double_fork();
	test_thread();
	test_unload_then_load();
	test_unloads_only();
	test_non_crash_load_not_recorded();
	test_last_crash_load_kept();
	test_outliving_descendant_detached();
	test_error_kills_the_tree();
	test_missing_program();
	test_bad_arguments();
	return check_done();
}
