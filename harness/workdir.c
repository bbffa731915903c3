#include "workdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Start time (clock ticks after boot) and state of pid from /proc/PID/stat; -ESRCH if gone. */
static int proc_start(long pid, unsigned long long *start, char *state)
{
	char path[64], buf[1024];
	int fd;
	ssize_t n;

	snprintf(path, sizeof path, "/proc/%ld/stat", pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -ESRCH;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -ESRCH;
	buf[n] = '\0';
	/* pid (comm) state ppid ... field 22 is starttime; comm may hold spaces and ')' */
	char *p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %c", state) != 1)
		return -EIO;
	p += 2;
	for (int field = 3; field < 22; field++) {
		p = strchr(p, ' ');
		if (!p)
			return -EIO;
		p++;
	}
	*start = strtoull(p, NULL, 10);
	return 0;
}

const char *harness_workdir_tmp(void)
{
	const char *t = getenv("TMPDIR");
	return t && *t ? t : "/tmp";
}

int harness_workdir_create(char *out, size_t len, const char *parent, const char *prefix)
{
	unsigned long long start = 0;
	char state;

	if (proc_start((long)getpid(), &start, &state) < 0)
		start = 0;
	if ((size_t)snprintf(out, len, "%s/%s.%ld-%llu.XXXXXX", parent, prefix, (long)getpid(), start) >= len)
		return -ENAMETOOLONG;
	return mkdtemp(out) ? 0 : -errno;
}

void harness_workdir_keep(const char *dir)
{
	char path[4200];
	int fd;

	snprintf(path, sizeof path, "%s/KEPT", dir);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644)) >= 0)
		close(fd);
}

/* NAME is PREFIX, no '.', then .PID-START.XXXXXX (six letters or digits): pid and start, or -1. */
static long parse_owner(const char *name, const char *prefix, unsigned long long *start)
{
	size_t pl = strlen(prefix), n = strlen(name);
	const char *d1, *d2;
	char *end;

	if (strncmp(name, prefix, pl) != 0 || n < pl + 11)
		return -1;
	d2 = name + n - 7;                      /* ".XXXXXX" */
	if (*d2 != '.')
		return -1;
	for (int i = 1; i < 7; i++) {
		char c = d2[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
			return -1;
	}
	d1 = memchr(name + pl, '.', (size_t)(d2 - (name + pl)));
	if (!d1 || memchr(d1 + 1, '.', (size_t)(d2 - d1 - 1)))
		return -1;
	if (d1[1] < '0' || d1[1] > '9')
		return -1;
	long pid = strtol(d1 + 1, &end, 10);
	if (*end != '-' || pid <= 0 || end[1] < '0' || end[1] > '9')
		return -1;
	*start = strtoull(end + 1, &end, 10);
	return end == d2 ? pid : -1;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

int harness_workdir_remove(const char *path)
{
	/* FTW_PHYS: a symbolic link inside is removed, never followed */
	return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int harness_workdir_sweep(const char *parent, const char *prefix)
{
	DIR *d = opendir(parent);
	struct dirent *de;
	int removed = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)) != NULL) {
		unsigned long long start, owner_start;
		char state, path[4200];
		struct stat st;
		long pid = parse_owner(de->d_name, prefix, &start);

		if (pid < 0)
			continue;
		/* a directory of ours, not a symbolic link to one */
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode) ||
		    st.st_uid != geteuid())
			continue;
		if (proc_start(pid, &owner_start, &state) == 0 && owner_start == start && state != 'Z')
			continue;               /* its owner runs */
		snprintf(path, sizeof path, "%s/KEPT", de->d_name);
		if (fstatat(dirfd(d), path, &st, AT_SYMLINK_NOFOLLOW) == 0)
			continue;               /* evidence kept on purpose */
		snprintf(path, sizeof path, "%s/%s", parent, de->d_name);
		if (harness_workdir_remove(path) == 0)
			removed++;
	}
	closedir(d);
	return removed;
}
