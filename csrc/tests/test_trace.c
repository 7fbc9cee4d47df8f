// SPDX-License-Identifier: GPL-2.0-or-later
// Tests of the tracer, without Python. Only skip mode runs here: the traced
// kexec calls never reach the kernel (and would be rejected if they did).
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "kexecd_core.h"
#include "check.h"

static const char *fake;

static int run(const char *what, struct kexecd_load *load, int *status)
{
	const char *argv[] = { fake, what, NULL };

	return kexecd_trace_run(argv, KEXECD_TRACE_SKIP, load, status);
}

static void test_load(void)
{
	struct kexecd_load load;
	int status, r = run("load", &load, &status);

	CHECK(r == 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(load.syscall == KEXECD_SYS_KEXEC_LOAD);
	CHECK(load.calls == 1);
	CHECK(load.result == 0);
	CHECK(load.entry == 0x1234);
	CHECK(load.flags == 0x80000100UL);
	CHECK(load.nr_segments == 3);
	CHECK(load.segments[0].bufsz == 5000 && load.segments[0].mem == 0x100000);
	CHECK(load.segments[0].memsz == 0x2000);
	CHECK(load.segments[0].buf && load.segments[0].buf[4999] == (uint8_t)(4999 * 7));
	CHECK(load.segments[1].bufsz == 0 && load.segments[1].buf == NULL);
	CHECK(load.segments[2].bufsz == 3 && !memcmp(load.segments[2].buf, "xyz", 3));
	kexecd_load_deinit(&load);
}

static void test_twice_keeps_last(void)
{
	struct kexecd_load load;
	int status, r = run("twice", &load, &status);

	CHECK(r == 0);
	CHECK(load.calls == 2);
	CHECK(load.entry == 0x2222);
	kexecd_load_deinit(&load);
}

static void test_file_load(void)
{
	struct kexecd_load load;
	int status, r = run("file", &load, &status);

	CHECK(r == 0);
	CHECK(load.syscall == KEXECD_SYS_KEXEC_FILE_LOAD);
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
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	kexecd_load_deinit(&load);
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
	test_missing_program();
	test_bad_arguments();
	return check_done();
}
