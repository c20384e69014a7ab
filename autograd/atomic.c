/* atomic.c - temp file, fsync, rename, directory fsync (see atomic.h). */
#include "atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Removes the temporary file after a failure; keeps errno. */
static void drop(ag_atomic *a) {
    int saved = errno;
    if (a->fd >= 0) close(a->fd);
    a->fd = -1;
    if (!a->failed) unlink(a->tmp);
    a->failed = true;
    errno = saved;
}

int ag_atomic_open(ag_atomic *a, const char *path, char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    a->fd = -1;
    a->failed = true; /* until the temporary exists */
    size_t n = strlen(path);
    if (n == 0 || n >= AG_ATOMIC_PATH_MAX) {
        snprintf(err, errlen, "%.200s: cannot create a file there: path %s", path, n ? "too long" : "empty");
        return -1;
    }
    memcpy(a->path, path, n + 1);
    /* an existing target keeps its permissions; one without write permission
     * is not replaced (as cp without -f would not), even by root */
    mode_t mode = 0644;
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISREG(st.st_mode) && !(st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH))) {
            snprintf(err, errlen, "%s: is read-only (mode %03o): refusing to replace it; make it writable or write "
                     "elsewhere", path, (unsigned)(st.st_mode & 0777));
            return -1;
        }
        if (S_ISREG(st.st_mode)) mode = st.st_mode & 0777;
    }
    /* a name of this process's own: two writers of one path never share a
     * temporary (the later rename wins; a lock keeps writers apart) */
    static unsigned counter;
    int k = snprintf(a->tmp, sizeof a->tmp, "%s.%ld-%u.tmp", path, (long)getpid(), counter++);
    if (k < 0 || (size_t)k >= sizeof a->tmp) {
        snprintf(err, errlen, "%.200s: cannot create a file there: path too long", path);
        return -1;
    }
    a->fd = open(a->tmp, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (a->fd < 0) {
        snprintf(err, errlen, "%s: cannot create %s: %s", path, a->tmp, strerror(errno));
        return -1;
    }
    if (fchmod(a->fd, mode) != 0) { /* the umask must not narrow the target's mode */
    }
    a->failed = false;
    return 0;
}

int ag_atomic_write(ag_atomic *a, const void *p, size_t n, char *err, size_t errlen) {
    if (a->failed) {
        snprintf(err, errlen, "%s: write after a failed step", a->path);
        return -1;
    }
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = write(a->fd, b, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (k == 0) errno = EIO;
            snprintf(err, errlen, "%s: write failed after %llu bytes: %s (the previous file, if any, is unchanged)",
                     a->path, (unsigned long long)a->bytes, strerror(errno));
            drop(a);
            return -1;
        }
        b += k, n -= (size_t)k, a->bytes += (uint64_t)k;
    }
    return 0;
}

/* The directory holding path ("." for a bare name, "/" for a file in /). */
static void dir_of(const char *path, char *dir, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, cap, ".");
    else if (slash == path) snprintf(dir, cap, "/");
    else snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

int ag_atomic_commit(ag_atomic *a, char *err, size_t errlen) {
    if (a->failed) {
        snprintf(err, errlen, "%s: commit after a failed step", a->path);
        return AG_ATOMIC_FAILED;
    }
    const char *step = NULL;
    if (fsync(a->fd) != 0) step = "fsync";
    int saved = errno;
    if (close(a->fd) != 0 && !step) {
        step = "close";
        saved = errno;
    }
    a->fd = -1;
    if (!step && rename(a->tmp, a->path) != 0) {
        step = "rename";
        saved = errno;
    }
    if (step) {
        errno = saved;
        snprintf(err, errlen, "%s: %s failed: %s (the previous file, if any, is unchanged)", a->path, step,
                 strerror(saved));
        drop(a);
        return AG_ATOMIC_FAILED;
    }
    a->failed = true; /* closed: the temporary is now the file */
    char dir[AG_ATOMIC_PATH_MAX];
    dir_of(a->path, dir, sizeof dir);
    int dfd = open(dir, O_RDONLY);
    if (dfd < 0 || fsync(dfd) != 0) {
        saved = errno;
        if (dfd >= 0) close(dfd);
        snprintf(err, errlen, "%s: written and renamed into place, but fsync of its directory %s failed: %s (the "
                 "rename may not survive a power loss)", a->path, dir, strerror(saved));
        return AG_ATOMIC_DIR_SYNC;
    }
    close(dfd);
    return AG_ATOMIC_OK;
}

void ag_atomic_abort(ag_atomic *a) {
    if (a->failed) return;
    drop(a);
}
