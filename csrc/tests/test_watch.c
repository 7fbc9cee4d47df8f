// SPDX-License-Identifier: GPL-2.0-or-later
// Tests of the directory watch, without Python.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kexecd_core.h"
#include "check.h"

static int readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 1000) == 1;
}

static void drain(int fd)
{
	char buf[4096];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

int main(void)
{
	char dir[] = "/tmp/kexecd-watch-XXXXXX", file[64], other[64], byte;
	int fd, f;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(file, sizeof(file), "%s/kexec_cmd", dir);
	snprintf(other, sizeof(other), "%s/kexec_cmd.new", dir);
	CHECK(kexecd_watch_open(&fd) == 0);
	CHECK(kexecd_watch_dir(fd, "/nonexistent/kexecd") == -ENOENT);
	CHECK(kexecd_watch_dir(fd, dir) == 0);
	CHECK(read(fd, &byte, 1) < 0 && errno == EAGAIN); // non-blocking, nothing yet

	// Written and closed, as kdump-config's 'echo ... >kexec_cmd' does.
	f = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(f >= 0 && write(f, "x\n", 2) == 2 && close(f) == 0);
	CHECK(readable(fd));
	drain(fd);
	// Replaced by a rename.
	f = open(other, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(f >= 0 && close(f) == 0);
	drain(fd);
	CHECK(rename(other, file) == 0);
	CHECK(readable(fd));
	drain(fd);
	// Deleted.
	CHECK(unlink(file) == 0);
	CHECK(readable(fd));
	drain(fd);
	CHECK(rmdir(dir) == 0);

	int vol = -1;
	CHECK(kexecd_fs_volatile("/nonexistent/kexecd", &vol) == -ENOENT && vol == -1);
	CHECK(kexecd_fs_volatile("/proc", &vol) == 0 && vol == 0);
	CHECK(kexecd_fs_volatile("/dev/shm", &vol) == 0 && vol == 1); // tmpfs on Debian
	close(fd);
	return check_done();
}
