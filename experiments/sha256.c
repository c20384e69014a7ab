/* sha256.c - SHA-256 for the run log's artifact checksums, through libmd
 * (Debian's libmd-dev: the BSD message-digest functions), which implements
 * FIPS 180-4; pare adds the file helper and the hex form. */
#include "sha256.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void ex_sha256_init(ex_sha256 *s) {
    SHA256Init(&s->ctx);
    s->bytes = 0;
}

void ex_sha256_update(ex_sha256 *s, const void *data, size_t n) {
    if (n == 0) return;
    SHA256Update(&s->ctx, data, n);
    s->bytes += n;
}

void ex_sha256_final(ex_sha256 *s, uint8_t out[32]) { SHA256Final(out, &s->ctx); }

void ex_sha256_hex(const uint8_t digest[32], char hex[65]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 15];
    }
    hex[64] = '\0';
}

int ex_sha256_file(const char *path, char hex[65], uint64_t *bytes, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open for hashing: %s", path, strerror(errno));
        return -1;
    }
    ex_sha256 s;
    ex_sha256_init(&s);
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) ex_sha256_update(&s, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s: read error while hashing", path);
        return -1;
    }
    uint8_t d[32];
    uint64_t total = s.bytes;
    ex_sha256_final(&s, d);
    ex_sha256_hex(d, hex);
    if (bytes) *bytes = total;
    return 0;
}
