/*
 * A program for the fault shim to break (tests/driver/test_shim.py runs it
 * under LD_PRELOAD=libckpt-fault-shim.so). It has no fault points of its
 * own: whatever fails here failed because the shim made it fail.
 *
 *   shim_victim entry DIR TAG       every wrapped entry point once on files in DIR;
 *                                   prints "TAG CALL RC ERRNO" per call
 *   shim_victim writes FILE N       N one-byte writes; prints "write K RC ERRNO"
 *   shim_victim big FILE N          one write of N bytes; prints "write RC ERRNO"
 *   shim_victim share FILE SELF     writes from main, a thread, a forked child, an
 *                                   exec'ed child, main: prints who failed
 *   shim_victim beacon FILE         step 5 / phase save.shard_write, a write,
 *                                   step 6, a write, phase save.commit (a phase point)
 *   shim_victim undo DIR            a save-like sequence for the undo record
 *   shim_victim stale UNDER OTHER   an fd reused behind the shim's back; prints "reused SAME RC ERRNO"
 *   shim_victim syncfs DIR          a file made durable by syncfs alone
 *   shim_victim mkroot ROOT         the root created, its parent fsynced, a durable file in it
 *   shim_victim loop FILE N         N 16-byte writes; prints ns per write
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "beacon.h"

/* The fortify entry points, called directly (a -D_FORTIFY_SOURCE build reaches them). */
int __open_2(const char *, int);
int __open64_2(const char *, int);
int __openat_2(int, const char *, int);
int __openat64_2(int, const char *, int);
ssize_t __read_chk(int, void *, size_t, size_t);
ssize_t __pread_chk(int, void *, size_t, off_t, size_t);

static const char *tag;

extern int __fprintf_chk(FILE *fp, int flag, const char *fmt, ...);

static int vfprintf_of(FILE *fp, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = vfprintf(fp, fmt, ap);
	va_end(ap);
	return r;
}

static void report(const char *call, long rc)
{
	printf("%s %s %ld %d\n", tag, call, rc, rc < 0 ? errno : 0);
	fflush(stdout);
}

/* report for calls that return an error number instead of -1/errno */
static void report_err(const char *call, int err)
{
	printf("%s %s %d %d\n", tag, call, err ? -1 : 0, err);
	fflush(stdout);
}

static void report_ptr(const char *call, void *p)
{
	printf("%s %s %d %d\n", tag, call, p ? 0 : -1, p ? 0 : errno);
	fflush(stdout);
}

static void closeq(int fd)
{
	if (fd >= 0)
		syscall(SYS_close, fd);      /* behind the shim's back: not a tested call */
}

static int entry(const char *dir)
{
	char a[1024], b[1024], c[1024], d[1024], e[1024], buf[64] = "0123456789abcdef";
	struct iovec iov[2] = { { buf, 4 }, { buf + 4, 4 } };
	int fd, rfd, dfd, x;

	snprintf(a, sizeof a, "%s/a.bin", dir);
	snprintf(b, sizeof b, "%s/b.bin", dir);
	snprintf(c, sizeof c, "%s/c.bin", dir);
	snprintf(d, sizeof d, "%s/sub", dir);
	snprintf(e, sizeof e, "%s/e.bin", dir);
	dfd = open(dir, O_RDONLY | O_DIRECTORY);
	report("open_dir", dfd);

	/* the open family */
	fd = open(a, O_CREAT | O_WRONLY | O_TRUNC, 0644); report("open", fd); closeq(fd);
	fd = open64(a, O_WRONLY); report("open64", fd); closeq(fd);
	fd = openat(dfd, "a.bin", O_WRONLY); report("openat", fd); closeq(fd);
	fd = openat64(dfd, "a.bin", O_WRONLY); report("openat64", fd); closeq(fd);
	fd = __open_2(a, O_WRONLY); report("__open_2", fd); closeq(fd);
	fd = __open64_2(a, O_WRONLY); report("__open64_2", fd); closeq(fd);
	fd = __openat_2(dfd, "a.bin", O_WRONLY); report("__openat_2", fd); closeq(fd);
	fd = __openat64_2(dfd, "a.bin", O_WRONLY); report("__openat64_2", fd); closeq(fd);
	fd = creat(b, 0644); report("creat", fd); closeq(fd);
	fd = creat64(b, 0644); report("creat64", fd); closeq(fd);
	FILE *fp = fopen(c, "w"); report_ptr("fopen", fp);
	if (fp) {
		x = (int)fwrite(buf, 1, 8, fp); report("fwrite", x == 8 ? 0 : -1);
		/* the other stdio writers (each must be decided as a write); through volatile
		 * pointers, the _unlocked forms gcc would otherwise inline as buffer stores */
		size_t (*volatile fwu)(const void *, size_t, size_t, FILE *) = fwrite_unlocked;
		int (*volatile fcu)(int, FILE *) = fputc_unlocked, (*volatile pcu)(int, FILE *) = putc_unlocked;
		x = (int)fwu(buf, 1, 8, fp); report("fwrite_unlocked", x == 8 ? 0 : -1);
		report("fputs", fputs("line\n", fp) == EOF ? -1 : 0);
		report("fputs_unlocked", fputs_unlocked("line\n", fp) == EOF ? -1 : 0);
		report("fputc", fputc('x', fp) == EOF ? -1 : 0);
		report("putc", putc('x', fp) == EOF ? -1 : 0);
		report("fputc_unlocked", fcu('x', fp) == EOF ? -1 : 0);
		report("putc_unlocked", pcu('x', fp) == EOF ? -1 : 0);
		report("fprintf", fprintf(fp, "step %d\n", 40) < 0 ? -1 : 0);
		report("__fprintf_chk", __fprintf_chk(fp, 1, "step %d\n", 40) < 0 ? -1 : 0);
		report("vfprintf", vfprintf_of(fp, "step %d\n", 40) < 0 ? -1 : 0);
		fp = freopen(c, "a", fp); report_ptr("freopen", fp);
		if (fp)
			fclose(fp);
	}
	fp = fopen64(c, "r"); report_ptr("fopen64", fp);
	if (fp) {
		x = fclose(fp); report("fclose", x);
	}

	/* writes */
	fd = open(a, O_RDWR);
	x = (int)write(fd, buf, 8); report("write", x);
	x = (int)pwrite(fd, buf, 8, 8); report("pwrite", x);
	x = (int)pwrite64(fd, buf, 8, 16); report("pwrite64", x);
	x = (int)writev(fd, iov, 2); report("writev", x);
	x = (int)pwritev(fd, iov, 2, 32); report("pwritev", x);
	x = (int)pwritev2(fd, iov, 2, 40, 0); report("pwritev2", x);
	/* descriptor bookkeeping: a copy of the fd is still under the root */
	int g = dup(fd); x = (int)write(g, buf, 1); report("write_dup", x); closeq(g);
	g = dup2(fd, 100); x = (int)write(g, buf, 1); report("write_dup2", x); closeq(g);
	g = dup3(fd, 101, O_CLOEXEC); x = (int)write(g, buf, 1); report("write_dup3", x); closeq(g);
	g = fcntl(fd, F_DUPFD, 200); x = (int)write(g, buf, 1); report("write_fcntl_dupfd", x); closeq(g);
	g = fcntl(fd, F_DUPFD_CLOEXEC, 200); x = (int)write(g, buf, 1); report("write_fcntl_dupfd_cloexec", x); closeq(g);

	/* reads */
	x = (int)pread(fd, buf, 4, 0); report("pread", x);
	x = (int)pread64(fd, buf, 4, 0); report("pread64", x);
	x = (int)__pread_chk(fd, buf, 4, 0, sizeof buf); report("__pread_chk", x);
	lseek(fd, 0, SEEK_SET);
	x = (int)read(fd, buf, 4); report("read", x);
	x = (int)__read_chk(fd, buf, 4, sizeof buf); report("__read_chk", x);
	x = (int)readv(fd, iov, 2); report("readv", x);
	x = (int)preadv(fd, iov, 2, 0); report("preadv", x);
	x = (int)preadv2(fd, iov, 2, 0, 0); report("preadv2", x);

	/* durability */
	x = fsync(fd); report("fsync", x);
	x = fdatasync(fd); report("fdatasync", x);
	x = sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE); report("sync_file_range", x);
	x = syncfs(fd); report("syncfs", x);
	x = fsync(dfd); report("fsync_dir", x);

	/* sizes */
	x = ftruncate(fd, 64); report("ftruncate", x);
	x = truncate(a, 48); report("truncate", x);
	x = fallocate(fd, 0, 0, 128); report("fallocate", x);
	report_err("posix_fallocate", posix_fallocate(fd, 0, 160));

	/* copies */
	rfd = open(b, O_WRONLY);
	off_t in_off = 0;
	x = (int)copy_file_range(fd, &in_off, rfd, NULL, 8, 0); report("copy_file_range", x);
	in_off = 0;
	x = (int)sendfile(rfd, fd, &in_off, 8); report("sendfile", x);
	closeq(rfd);

	/* names */
	x = rename(b, e); report("rename", x);
	x = renameat(dfd, "e.bin", dfd, "b.bin"); report("renameat", x);
	x = renameat2(dfd, "b.bin", dfd, "e.bin", RENAME_NOREPLACE); report("renameat2", x);
	x = link(e, b); report("link", x);
	x = unlink(b); report("unlink", x);
	x = linkat(dfd, "e.bin", dfd, "b.bin", 0); report("linkat", x);
	x = unlinkat(dfd, "b.bin", 0); report("unlinkat", x);
	x = remove(e); report("remove", x);
	int t = open(dir, O_TMPFILE | O_WRONLY, 0644); report("open_tmpfile", t);
	x = (int)write(t, buf, 4); report("write_tmpfile", x);
	x = linkat(t, "", dfd, "t.bin", AT_EMPTY_PATH); report("linkat_tmpfile", x);
	closeq(t);
	x = mkdir(d, 0755); report("mkdir", x);
	x = rmdir(d); report("rmdir", x);
	x = mkdirat(dfd, "sub", 0755); report("mkdirat", x);
	x = unlinkat(dfd, "sub", AT_REMOVEDIR); report("unlinkat_dir", x);
	x = mkdir(d, 0755);
	x = remove(d); report("remove_dir", x);
	DIR *dp = opendir(dir); report_ptr("opendir", dp);
	if (dp)
		closedir(dp);

	/* closes */
	x = close(fd); report("close", x);
	fd = open(a, O_RDONLY);
	x = close_range((unsigned)fd, (unsigned)fd, 0); report("close_range", x);
	closeq(dfd);
	return 0;
}

static int writes(const char *file, int n)
{
	int fd = open(file, O_CREAT | O_WRONLY | O_APPEND, 0644);
	if (fd < 0) {
		perror(file);
		return 1;
	}
	for (int k = 1; k <= n; k++) {
		long r = write(fd, "x", 1);
		printf("write %d %ld %d\n", k, r, r < 0 ? errno : 0);
	}
	fflush(stdout);
	close(fd);
	return 0;
}

static int big(const char *file, long n)
{
	char *buf = malloc((size_t)n);
	int fd = open(file, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	if (!buf || fd < 0)
		return 1;
	memset(buf, 'z', (size_t)n);
	printf("start\n");
	fflush(stdout);
	long r = write(fd, buf, (size_t)n);
	printf("write %ld %d\n", r, r < 0 ? errno : 0);
	fflush(stdout);
	close(fd);
	free(buf);
	return 0;
}

static int share_fd;

static void one_write(const char *who)
{
	long r = write(share_fd, "s", 1);
	printf("%s %ld %d\n", who, r, r < 0 ? errno : 0);
	fflush(stdout);
}

static void *thread_main(void *arg)
{
	(void)arg;
	one_write("thread");
	return NULL;
}

static int share(const char *file, const char *self)
{
	pthread_t t;
	int st;

	share_fd = open(file, O_CREAT | O_WRONLY | O_APPEND, 0644);
	if (share_fd < 0)
		return 1;
	one_write("main");
	pthread_create(&t, NULL, thread_main, NULL);
	pthread_join(t, NULL);
	pid_t p = fork();
	if (p == 0) {
		one_write("fork");
		_exit(0);
	}
	waitpid(p, &st, 0);
	p = fork();
	if (p == 0) {
		execl(self, self, "writes", file, "1", (char *)NULL);
		_exit(127);
	}
	waitpid(p, &st, 0);
	one_write("main");
	close(share_fd);
	return 0;
}

static int beacon(const char *file)
{
	int fd = open(file, O_CREAT | O_WRONLY | O_APPEND, 0644);
	long r;

	ckpt_beacon_step(5);
	ckpt_beacon_phase("save.shard_write");
	r = write(fd, "b", 1);
	printf("step5 %ld %d\n", r, r < 0 ? errno : 0);
	ckpt_beacon_step(6);
	r = write(fd, "b", 1);
	printf("step6 %ld %d\n", r, r < 0 ? errno : 0);
	fflush(stdout);
	int rc = ckpt_beacon_phase("save.commit");
	printf("phase %d\n", rc);
	fflush(stdout);
	close(fd);
	return 0;
}

/* The calls libckpt's save makes, by plain POSIX: tmp dir, shard, fsync, manifest, rename, dir fsync. */
static int undo(const char *dir)
{
	char tmp[1024], fin[1024], shard[1024], old[1024], missing[1024];
	int fd, dfd;

	snprintf(missing, sizeof missing, "%s/no-such-file", dir);
	snprintf(tmp, sizeof tmp, "%s/step-00000010.tmp", dir);
	snprintf(fin, sizeof fin, "%s/step-00000010", dir);
	snprintf(shard, sizeof shard, "%s/rank-00000.safetensors", tmp);
	snprintf(old, sizeof old, "%s/old.bin", dir);
	if (mkdir(tmp, 0755) < 0)
		return 1;
	fd = open(shard, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, "0123456789", 10) != 10 || fsync(fd) < 0 || ftruncate(fd, 4) < 0 || close(fd) < 0)
		return 1;
	dfd = open(tmp, O_RDONLY | O_DIRECTORY);
	if (dfd < 0 || fsync(dfd) < 0 || close(dfd) < 0)
		return 1;
	if (rename(tmp, fin) < 0)
		return 1;
	if (unlink(old) < 0)
		return 1;
	dfd = open(dir, O_RDONLY | O_DIRECTORY);
	if (dfd < 0 || fsync(dfd) < 0 || close(dfd) < 0)
		return 1;
	/* a failing change: the record is voided */
	if (rename(missing, fin) == 0)
		return 1;
	return 0;
}

/* An fd under the root closed and reused behind the shim's back (raw syscalls): its writes go where the fd now points. */
static int stale(const char *under, const char *other)
{
	int fd = open(under, O_CREAT | O_WRONLY, 0644);
	syscall(SYS_close, fd);
	int fd2 = (int)syscall(SYS_openat, AT_FDCWD, other, O_CREAT | O_WRONLY, 0644);
	long r = write(fd2, "x", 1);
	printf("reused %d %ld %d\n", fd2 == fd, r, r < 0 ? errno : 0);
	fflush(stdout);
	return 0;
}

/* Files made durable by syncfs alone: DIR/sub/f.bin written, never fsynced. */
static int do_syncfs(const char *dir)
{
	char sub[1024], f[1024];

	snprintf(sub, sizeof sub, "%s/sub", dir);
	snprintf(f, sizeof f, "%s/f.bin", sub);
	int fd;
	if (mkdir(sub, 0755) < 0 || (fd = open(f, O_CREAT | O_WRONLY, 0644)) < 0 || write(fd, "durable", 7) != 7)
		return 1;
	int r = syncfs(fd);
	close(fd);
	return r < 0;
}

/* A root the program creates, made durable by fsyncing its parent (outside the root), then a file in it. */
static int mkroot(const char *root)
{
	char parent[1024], f[1024];
	int fd, dfd;

	snprintf(parent, sizeof parent, "%s", root);
	*strrchr(parent, '/') = '\0';
	snprintf(f, sizeof f, "%s/f.bin", root);
	if (mkdir(root, 0755) < 0 || (dfd = open(parent, O_RDONLY | O_DIRECTORY)) < 0 || fsync(dfd) < 0 || close(dfd) < 0)
		return 1;
	if ((fd = open(f, O_CREAT | O_WRONLY, 0644)) < 0 || write(fd, "durable", 7) != 7 || fsync(fd) < 0 || close(fd) < 0)
		return 1;
	if ((dfd = open(root, O_RDONLY | O_DIRECTORY)) < 0 || fsync(dfd) < 0 || close(dfd) < 0)
		return 1;
	return 0;
}

/* N small writes (for the overhead figure): prints ns per write. */
static int loop(const char *file, long n)
{
	struct timespec a, b;
	int fd = open(file, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	if (fd < 0)
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long k = 0; k < n; k++)
		if (write(fd, "0123456789abcdef", 16) != 16)
			return 1;
	clock_gettime(CLOCK_MONOTONIC, &b);
	close(fd);
	printf("ns_per_write=%.1f\n", ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / (double)n);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "syncfs") == 0)
		return do_syncfs(argv[2]);
	if (argc >= 3 && strcmp(argv[1], "mkroot") == 0)
		return mkroot(argv[2]);
	if (argc >= 4 && strcmp(argv[1], "stale") == 0)
		return stale(argv[2], argv[3]);
	if (argc >= 4 && strcmp(argv[1], "loop") == 0)
		return loop(argv[2], atol(argv[3]));
	if (argc >= 4 && strcmp(argv[1], "entry") == 0) {
		tag = argv[3];
		return entry(argv[2]);
	}
	if (argc >= 4 && strcmp(argv[1], "writes") == 0)
		return writes(argv[2], atoi(argv[3]));
	if (argc >= 4 && strcmp(argv[1], "big") == 0)
		return big(argv[2], atol(argv[3]));
	if (argc >= 4 && strcmp(argv[1], "share") == 0)
		return share(argv[2], argv[3]);
	if (argc >= 3 && strcmp(argv[1], "beacon") == 0)
		return beacon(argv[2]);
	if (argc >= 3 && strcmp(argv[1], "undo") == 0)
		return undo(argv[2]);
	fprintf(stderr, "usage: shim_victim entry DIR TAG | writes FILE N | big FILE N | share FILE SELF | beacon FILE | undo DIR\n");
	return 2;
}
