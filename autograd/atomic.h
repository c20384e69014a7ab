/* atomic.h - writing a file so that its path always holds a complete old or
 * new version, never a torn one: the one helper both file writers use (the
 * checkpoint writer in train/checkpoint.c and the model file writer in
 * infer/format.c).
 *
 *   ag_atomic a;
 *   if (ag_atomic_open(&a, path, err, errlen)) return -1;   creates "<path>.<pid>-<n>.tmp"
 *   ag_atomic_write(&a, p, n, ...) ...                      any number of chunks
 *   rc = ag_atomic_commit(&a, err, errlen);                 fsync, rename, fsync the directory
 *
 * or ag_atomic_abort(&a) to give up. On any failure before the rename
 * (create, write, fsync, close, rename) the temporary file is removed and the
 * target is unchanged; a write or commit after a failure fails again without
 * touching anything. A failed fsync of the directory after the rename is
 * reported distinctly: the new file is in place and complete, but the rename
 * itself may not survive a power loss.
 */
#ifndef PARE_AG_ATOMIC_H
#define PARE_AG_ATOMIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AG_ATOMIC_PATH_MAX 4096

typedef struct ag_atomic {
    int fd;                           /* the temporary file, -1 when closed */
    bool failed;                      /* a step failed: the temporary file is gone */
    uint64_t bytes;                   /* written so far */
    char path[AG_ATOMIC_PATH_MAX];    /* the target */
    char tmp[AG_ATOMIC_PATH_MAX + 40]; /* "<path>.<pid>-<n>.tmp" */
} ag_atomic;

/* What ag_atomic_commit returns. */
enum {
    AG_ATOMIC_OK = 0,
    AG_ATOMIC_FAILED = -1,   /* nothing replaced: the target is unchanged, no temporary file left */
    AG_ATOMIC_DIR_SYNC = -2, /* the target holds the new file, but fsync of its directory failed */
};

/* Creates a temporary file "<path>.<pid>-<n>.tmp" next to path (a name of
 * this writer's own, so two writers never share one), with the mode of an
 * existing target (0644 for a new one). Returns 0, or -1 with err naming the
 * path: an existing target without write permission (not replaced, even by
 * root), a missing directory, a parent that is not a directory, no
 * permission, a path too long; a is then closed (ag_atomic_abort is a no-op
 * on it). */
int ag_atomic_open(ag_atomic *a, const char *path, char *err, size_t errlen);

/* Appends n bytes. Returns 0, or -1 with err naming the path and the reason;
 * the temporary file is then removed and a is closed. */
int ag_atomic_write(ag_atomic *a, const void *p, size_t n, char *err, size_t errlen);

/* fsyncs and closes the temporary file, renames it over the path and fsyncs
 * the directory. Returns AG_ATOMIC_OK; AG_ATOMIC_FAILED with err naming the
 * step (the target unchanged, the temporary removed); or AG_ATOMIC_DIR_SYNC
 * with err saying the file was written but its directory could not be
 * synced. a is closed in every case. */
int ag_atomic_commit(ag_atomic *a, char *err, size_t errlen);

/* Closes and removes the temporary file (the target is unchanged). a may be
 * closed already. */
void ag_atomic_abort(ag_atomic *a);

#endif
