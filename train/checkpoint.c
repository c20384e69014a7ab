/* checkpoint.c - tagged sections, a checksum, atomic writes (see checkpoint.h). */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/atomic.h"
#include "autograd/hash.h"
#include "data.h"

/* ------------------------------------------------------------ byte order */

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ------------------------------------------------------------------ writer */

void tr_ckpt_writer_init(tr_ckpt_writer *w) {
    memset(w, 0, sizeof *w);
    w->open = SIZE_MAX;
}

void tr_ckpt_writer_free(tr_ckpt_writer *w) {
    if (!w) return;
    free(w->buf);
    tr_ckpt_writer_init(w);
}

/* Makes room for n more bytes; returns where they go, or NULL (sticky oom). */
static uint8_t *reserve(tr_ckpt_writer *w, size_t n) {
    if (w->oom) return NULL;
    if (n > SIZE_MAX / 2 - w->len) {
        w->oom = true;
        return NULL;
    }
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + n) cap *= 2;
        uint8_t *b = realloc(w->buf, cap);
        if (!b) {
            w->oom = true;
            return NULL;
        }
        w->buf = b;
        w->cap = cap;
    }
    uint8_t *p = w->buf + w->len;
    w->len += n;
    return p;
}

void tr_ckpt_begin(tr_ckpt_writer *w, const char *tag) {
    if (w->open != SIZE_MAX) tr_ckpt_end(w);
    size_t at = w->len;
    uint8_t *p = reserve(w, 16);
    if (!p) return;
    memset(p, 0, 16);
    for (int i = 0; i < 4 && tag[i]; i++) p[i] = (uint8_t)tag[i];
    w->open = at;
    w->n_sections++;
}

void tr_ckpt_end(tr_ckpt_writer *w) {
    if (w->open == SIZE_MAX) return;
    if (!w->oom) put_u64(w->buf + w->open + 8, (uint64_t)(w->len - w->open - 16));
    w->open = SIZE_MAX;
}

void tr_wr_u32(tr_ckpt_writer *w, uint32_t v) {
    uint8_t *p = reserve(w, 4);
    if (p) put_u32(p, v);
}

void tr_wr_u64(tr_ckpt_writer *w, uint64_t v) {
    uint8_t *p = reserve(w, 8);
    if (p) put_u64(p, v);
}

void tr_wr_f64(tr_ckpt_writer *w, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    tr_wr_u64(w, u);
}

void tr_wr_bytes(tr_ckpt_writer *w, const void *src, size_t n) {
    uint8_t *p = reserve(w, n);
    if (p && n) memcpy(p, src, n);
}

void tr_wr_str(tr_ckpt_writer *w, const char *s) {
    size_t n = s ? strlen(s) : 0;
    tr_wr_u32(w, (uint32_t)n);
    tr_wr_bytes(w, s, n);
}

void tr_wr_f32s(tr_ckpt_writer *w, const float *x, size_t n) {
    if (n > SIZE_MAX / 4) {
        w->oom = true;
        return;
    }
    uint8_t *p = reserve(w, 4 * n);
    if (!p) return;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        put_u32(p + 4 * i, u);
    }
}

int tr_ckpt_write(tr_ckpt_writer *w, const char *path, char *err, size_t errlen) {
    tr_ckpt_end(w);
    if (w->oom) {
        snprintf(err, errlen, "checkpoint %s: out of memory while building it (%zu bytes so far)", path, w->len);
        return -1;
    }
    uint8_t head[TR_CKPT_HEADER];
    memcpy(head, TR_CKPT_MAGIC, 8);
    put_u32(head + 8, TR_CKPT_VERSION);
    put_u32(head + 12, w->n_sections);
    put_u64(head + 16, (uint64_t)w->len);
    put_u64(head + 24, ag_fnv1a(AG_FNV_INIT, w->buf, w->len));

    /* one atomic write (autograd/atomic.h): on failure the previous file is unchanged */
    ag_atomic a;
    char why[1024];
    if (ag_atomic_open(&a, path, why, sizeof why) != 0 || ag_atomic_write(&a, head, sizeof head, why, sizeof why) != 0 ||
        ag_atomic_write(&a, w->buf, w->len, why, sizeof why) != 0 || ag_atomic_commit(&a, why, sizeof why) != AG_ATOMIC_OK) {
        snprintf(err, errlen, "checkpoint %s", why);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ reader */

void tr_ckpt_close(tr_ckpt_file *f) {
    if (!f) return;
    free(f->buf);
    free(f->sec);
    memset(f, 0, sizeof *f);
}

/* Reads exactly n bytes at the file's current offset. */
static int read_full(int fd, uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int tr_ckpt_read(tr_ckpt_file *f, const char *path, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    /* O_NONBLOCK: a FIFO given as a checkpoint must not block the open */
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, errlen, "checkpoint %s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "checkpoint %s: not a regular file", path);
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    if (size < TR_CKPT_HEADER) {
        snprintf(err, errlen, "checkpoint %s: %zu bytes, shorter than the %d-byte header (truncated or not a checkpoint)",
                 path, size, TR_CKPT_HEADER);
        close(fd);
        return -1;
    }
    /* the header first: magic, version and the payload length against the
     * file's size, before the rest of the file is read into memory */
    uint8_t hdr[TR_CKPT_HEADER];
    if (read_full(fd, hdr, sizeof hdr) != 0) {
        snprintf(err, errlen, "checkpoint %s: cannot read its header: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    const char *bad = NULL;
    char why[160];
    if (memcmp(hdr, TR_CKPT_MAGIC, 8) != 0) {
        snprintf(why, sizeof why, "not a pare checkpoint (magic is not \"%s\")", TR_CKPT_MAGIC);
        bad = why;
    } else if (get_u32(hdr + 8) != TR_CKPT_VERSION) {
        snprintf(why, sizeof why, "format version %u, this pare reads version %u", get_u32(hdr + 8), TR_CKPT_VERSION);
        bad = why;
    } else if (get_u64(hdr + 16) != (uint64_t)(size - TR_CKPT_HEADER)) {
        uint64_t payload = get_u64(hdr + 16), avail = (uint64_t)(size - TR_CKPT_HEADER);
        snprintf(why, sizeof why, "header says %llu payload bytes, file has %llu (%s)", (unsigned long long)payload,
                 (unsigned long long)avail, payload > avail ? "truncated" : "trailing bytes");
        bad = why;
    }
    if (bad) {
        snprintf(err, errlen, "checkpoint %s: %s", path, bad);
        close(fd);
        return -1;
    }
    f->buf = malloc(size);
    if (!f->buf) {
        snprintf(err, errlen, "checkpoint %s: out of memory reading %zu bytes", path, size);
        close(fd);
        return -1;
    }
    memcpy(f->buf, hdr, sizeof hdr);
    int rrc = read_full(fd, f->buf + TR_CKPT_HEADER, size - TR_CKPT_HEADER);
    close(fd);
    f->len = size;
    if (rrc != 0) {
        snprintf(err, errlen, "checkpoint %s: read of %zu bytes failed (the file changed while it was read?)", path,
                 size);
        goto fail;
    }
    f->version = get_u32(f->buf + 8);
    uint32_t n_sec = get_u32(f->buf + 12);
    uint64_t payload = get_u64(f->buf + 16);
    uint64_t sum = get_u64(f->buf + 24);
    const uint8_t *p = f->buf + TR_CKPT_HEADER;
    if (ag_fnv1a(AG_FNV_INIT, p, (size_t)payload) != sum) {
        snprintf(err, errlen, "checkpoint %s: checksum mismatch (the file is corrupted)", path);
        goto fail;
    }
    /* each section takes at least 16 bytes: bound the count before allocating */
    if ((uint64_t)n_sec > payload / 16) {
        snprintf(err, errlen, "checkpoint %s: %u sections cannot fit in %llu payload bytes", path, n_sec,
                 (unsigned long long)payload);
        goto fail;
    }
    f->sec = calloc(n_sec ? n_sec : 1, sizeof *f->sec);
    if (!f->sec) {
        snprintf(err, errlen, "checkpoint %s: out of memory for %u sections", path, n_sec);
        goto fail;
    }
    uint64_t left = payload;
    for (uint32_t i = 0; i < n_sec; i++) {
        if (left < 16) {
            snprintf(err, errlen, "checkpoint %s: section %u header needs 16 bytes, %llu left", path, i,
                     (unsigned long long)left);
            goto fail;
        }
        tr_ckpt_section *s = &f->sec[i];
        for (int k = 0; k < 4; k++) {
            uint8_t ch = p[k];
            if (ch < 0x20 || ch > 0x7e) {
                snprintf(err, errlen, "checkpoint %s: section %u has a non-ASCII tag", path, i);
                goto fail;
            }
            s->tag[k] = (char)ch;
        }
        s->len = get_u64(p + 8);
        p += 16;
        left -= 16;
        if (s->len > left) {
            snprintf(err, errlen, "checkpoint %s: section %s claims %llu bytes, %llu left", path, s->tag,
                     (unsigned long long)s->len, (unsigned long long)left);
            goto fail;
        }
        s->data = p;
        p += s->len;
        left -= s->len;
        f->n_sections++;
    }
    if (left != 0) {
        snprintf(err, errlen, "checkpoint %s: %llu bytes after the last of %u sections", path,
                 (unsigned long long)left, n_sec);
        goto fail;
    }
    return 0;
fail:
    tr_ckpt_close(f);
    return -1;
}

const tr_ckpt_section *tr_ckpt_find(const tr_ckpt_file *f, const char *tag) {
    for (int i = 0; i < f->n_sections; i++)
        if (strncmp(f->sec[i].tag, tag, 4) == 0) return &f->sec[i];
    return NULL;
}

/* ------------------------------------------------------------ field reader */

void tr_rd_fail(tr_rd *rd, const char *fmt, ...) {
    if (rd->failed) return;
    rd->failed = true;
    int n = snprintf(rd->err, sizeof rd->err, "section %s: ", rd->tag ? rd->tag : "?");
    if (n < 0 || (size_t)n >= sizeof rd->err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rd->err + n, sizeof rd->err - (size_t)n, fmt, ap);
    va_end(ap);
}

int tr_rd_open(tr_rd *rd, const tr_ckpt_file *f, const char *tag) {
    memset(rd, 0, sizeof *rd);
    const tr_ckpt_section *s = tr_ckpt_find(f, tag);
    if (!s) {
        rd->failed = true;
        snprintf(rd->err, sizeof rd->err, "checkpoint has no %s section", tag);
        return -1;
    }
    rd->tag = s->tag;
    rd->p = s->data;
    rd->left = s->len;
    return 0;
}

/* Takes n bytes off the cursor, or fails naming the field. */
static const uint8_t *take(tr_rd *rd, const char *field, uint64_t n) {
    if (rd->failed) return NULL;
    if (n > rd->left) {
        tr_rd_fail(rd, "field %s needs %llu bytes, %llu left (truncated)", field, (unsigned long long)n,
                   (unsigned long long)rd->left);
        return NULL;
    }
    const uint8_t *p = rd->p;
    rd->p += n;
    rd->left -= n;
    return p;
}

int tr_rd_u32(tr_rd *rd, const char *field, uint32_t *v) {
    const uint8_t *p = take(rd, field, 4);
    *v = p ? get_u32(p) : 0;
    return p ? 0 : -1;
}

int tr_rd_u64(tr_rd *rd, const char *field, uint64_t *v) {
    const uint8_t *p = take(rd, field, 8);
    *v = p ? get_u64(p) : 0;
    return p ? 0 : -1;
}

int tr_rd_f64(tr_rd *rd, const char *field, double *v) {
    uint64_t u;
    int rc = tr_rd_u64(rd, field, &u);
    memcpy(v, &u, 8);
    return rc;
}

int tr_rd_bytes(tr_rd *rd, const char *field, void *dst, size_t n) {
    const uint8_t *p = take(rd, field, n);
    if (!p) {
        if (n) memset(dst, 0, n);
        return -1;
    }
    if (n) memcpy(dst, p, n);
    return 0;
}

int tr_rd_f32s(tr_rd *rd, const char *field, float *dst, size_t n) {
    if (n > UINT64_MAX / 4) {
        tr_rd_fail(rd, "field %s: %zu floats is too many", field, n);
        return -1;
    }
    const uint8_t *p = take(rd, field, 4 * (uint64_t)n);
    if (!p) return -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = get_u32(p + 4 * i);
        memcpy(&dst[i], &u, 4);
    }
    return 0;
}

int tr_rd_str(tr_rd *rd, const char *field, size_t max_len, char **out) {
    *out = NULL;
    uint32_t n;
    if (tr_rd_u32(rd, field, &n) != 0) return -1;
    if (n > max_len) {
        tr_rd_fail(rd, "field %s: length %u exceeds the limit %zu", field, n, max_len);
        return -1;
    }
    const uint8_t *p = take(rd, field, n);
    if (!p) return -1;
    if (memchr(p, 0, n)) {
        tr_rd_fail(rd, "field %s: a NUL byte at offset %u of its %u bytes: expected text", field,
                   (unsigned)((const uint8_t *)memchr(p, 0, n) - p), n);
        return -1;
    }
    char *s = malloc((size_t)n + 1);
    if (!s) {
        tr_rd_fail(rd, "field %s: out of memory for %u bytes", field, n);
        return -1;
    }
    memcpy(s, p, n);
    s[n] = '\0';
    *out = s;
    return 0;
}

int tr_rd_done(tr_rd *rd) {
    if (rd->failed) return -1;
    if (rd->left != 0) {
        tr_rd_fail(rd, "%llu unread bytes at the end (written by a different layout?)",
                   (unsigned long long)rd->left);
        return -1;
    }
    return 0;
}
