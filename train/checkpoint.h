/* checkpoint.h - the checkpoint file: tagged sections behind a checksum,
 * written atomically.
 *
 * Layout (every integer little-endian; floats are IEEE-754 binary32 stored as
 * their little-endian bit patterns):
 *
 *   offset  size  field
 *   0       8     magic "PARECKPT"
 *   8       4     u32 format version (TR_CKPT_VERSION)
 *   12      4     u32 number of sections N
 *   16      8     u64 payload length P (bytes after this 32-byte header)
 *   24      8     u64 FNV-1a 64 checksum of those P bytes (ag_fnv1a, autograd/hash.h)
 *   32      P     N sections, each: 4-byte ASCII tag, u32 0 (reserved),
 *                 u64 length L, then L bytes
 *
 * A section's contents are defined by whoever writes it (docs/training.md
 * lists the trainer's: CONF, MODL, TENS, OPTM, TRNR, DATA). A reader looks
 * sections up by tag and ignores tags it does not know, so later features
 * (masks, quantisation parameters, projections) are new sections, not a new
 * format.
 *
 * Writing goes to "<path>.tmp", which is written, fsync'd, renamed over path,
 * and the directory fsync'd: a crash or a full disk at any point leaves
 * either the old file or the new one, never a torn one.
 *
 * Reading loads the whole file, checks magic, version, the payload length
 * against the file size and the checksum, then walks the sections checking
 * each length against the bytes left. Field readers (tr_rd_*) check every
 * length against the bytes left in their section before reading or
 * allocating, and name the section and field in their error.
 */
#ifndef PARE_TR_CHECKPOINT_H
#define PARE_TR_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TR_CKPT_MAGIC "PARECKPT"
#define TR_CKPT_VERSION 1u
#define TR_CKPT_HEADER 32

/* ------------------------------------------------------------------ writer */

/* A growing byte buffer holding the payload. Write errors (out of memory)
 * are sticky: after one, every call is a no-op and tr_ckpt_write fails. */
typedef struct tr_ckpt_writer {
    uint8_t *buf;
    size_t len, cap;
    uint32_t n_sections;
    size_t open;   /* offset of the open section's header, or SIZE_MAX */
    bool oom;
} tr_ckpt_writer;

void tr_ckpt_writer_init(tr_ckpt_writer *w);
void tr_ckpt_writer_free(tr_ckpt_writer *w); /* w may be NULL */

/* Opens a section (closing any open one). tag is exactly 4 ASCII characters. */
void tr_ckpt_begin(tr_ckpt_writer *w, const char *tag);
/* Closes the open section, filling in its length. */
void tr_ckpt_end(tr_ckpt_writer *w);

void tr_wr_u32(tr_ckpt_writer *w, uint32_t v);
void tr_wr_u64(tr_ckpt_writer *w, uint64_t v);
void tr_wr_f64(tr_ckpt_writer *w, double v);
void tr_wr_bytes(tr_ckpt_writer *w, const void *p, size_t n);
/* u32 length, then the bytes (no terminator). */
void tr_wr_str(tr_ckpt_writer *w, const char *s);
/* n floats as little-endian binary32. */
void tr_wr_f32s(tr_ckpt_writer *w, const float *x, size_t n);

/* Closes any open section and writes header + payload atomically to path (see
 * above). Returns 0, or -1 with err naming the path and the failing step
 * (out of memory, open, write, fsync, rename); path is then unchanged. */
int tr_ckpt_write(tr_ckpt_writer *w, const char *path, char *err, size_t errlen);

/* ------------------------------------------------------------------ reader */

typedef struct tr_ckpt_section {
    char tag[5];          /* NUL-terminated */
    const uint8_t *data;  /* into the file's buffer */
    uint64_t len;
} tr_ckpt_section;

typedef struct tr_ckpt_file {
    uint8_t *buf;          /* the whole file (owned) */
    size_t len;
    uint32_t version;
    int n_sections;
    tr_ckpt_section *sec;  /* [n_sections] (owned) */
    char path[256];        /* for messages */
} tr_ckpt_file;

/* Reads and validates a checkpoint (see above). Returns 0, or -1 with err
 * naming the path and what is wrong: cannot open, not a pare checkpoint (bad
 * magic), unsupported version, truncated (payload length beyond the file),
 * checksum mismatch (corrupted), a section whose length runs past the end.
 * The caller frees f with tr_ckpt_close. */
int tr_ckpt_read(tr_ckpt_file *f, const char *path, char *err, size_t errlen);
void tr_ckpt_close(tr_ckpt_file *f); /* f may be NULL */

/* The first section with this tag, or NULL. */
const tr_ckpt_section *tr_ckpt_find(const tr_ckpt_file *f, const char *tag);

/* A cursor over one section. After the first error every read fails and
 * leaves its output zeroed; rd.err holds "section TAG, field F: ...". */
typedef struct tr_rd {
    const uint8_t *p;
    uint64_t left;
    const char *tag;
    bool failed;
    char err[256];
} tr_rd;

/* Starts a cursor over section `tag` of f. Returns 0, or -1 (with rd->err set
 * to "checkpoint has no TAG section") when it is absent. */
int tr_rd_open(tr_rd *rd, const tr_ckpt_file *f, const char *tag);

int tr_rd_u32(tr_rd *rd, const char *field, uint32_t *v);
int tr_rd_u64(tr_rd *rd, const char *field, uint64_t *v);
int tr_rd_f64(tr_rd *rd, const char *field, double *v);
int tr_rd_bytes(tr_rd *rd, const char *field, void *dst, size_t n);
/* Reads n floats into dst. */
int tr_rd_f32s(tr_rd *rd, const char *field, float *dst, size_t n);
/* Reads a string written by tr_wr_str into a new malloc'd NUL-terminated copy
 * (owned by the caller) after checking its length against the bytes left and
 * against max_len. */
int tr_rd_str(tr_rd *rd, const char *field, size_t max_len, char **out);
/* Fails with "section TAG: N unread bytes" unless the section is used up. */
int tr_rd_done(tr_rd *rd);
/* Records a validation error on the cursor (printf-style) unless one is set. */
void tr_rd_fail(tr_rd *rd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
