// SPDX-License-Identifier: GPL-2.0-or-later
// Watching a directory for a file another program rewrites (inotify(7)).
//
// kdump-tools rewrites $KDUMP_COREDIR/kexec_cmd each time it loads the crash
// kernel; the daemon watches the directory rather than the file, since a file
// that is replaced by a rename, or does not exist yet, cannot be watched.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/magic.h>
#include <sys/inotify.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "kexecd_core.h"

int kexecd_watch_open(int *fd_ret)
{
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);

	if (fd < 0)
		return -errno;
	*fd_ret = fd;
	return 0;
}

int kexecd_watch_dir(int fd, const char *path)
{
	uint32_t mask = IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
			IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

	if (inotify_add_watch(fd, path, mask) < 0)
		return -errno;
	return 0;
}

int kexecd_fs_volatile(const char *path, int *ret)
{
	struct statfs st;

	if (statfs(path, &st) < 0)
		return -errno;
	// f_type's width differs between architectures: compare as unsigned.
	*ret = (unsigned long)st.f_type == TMPFS_MAGIC || (unsigned long)st.f_type == RAMFS_MAGIC;
	return 0;
}
