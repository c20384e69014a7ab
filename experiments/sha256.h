/* sha256.h - SHA-256 (FIPS 180-4) of a buffer or a file, for the run log's
 * artifact checksums. The digest itself is libmd's (Debian's libmd-dev).
 *
 * Use: ex_sha256_init, any number of ex_sha256_update, ex_sha256_final; or
 * ex_sha256_file for a whole file as 64 lowercase hex digits.
 */
#ifndef PARE_EX_SHA256_H
#define PARE_EX_SHA256_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <sha2.h>

typedef struct ex_sha256 {
    SHA2_CTX ctx;   /* libmd's state */
    uint64_t bytes; /* message length so far */
} ex_sha256;

/* Starts a new digest. */
void ex_sha256_init(ex_sha256 *s);

/* Adds n bytes of message (data may be NULL when n == 0). */
void ex_sha256_update(ex_sha256 *s, const void *data, size_t n);

/* Finishes the digest into out[32]; s must be re-initialised before reuse. */
void ex_sha256_final(ex_sha256 *s, uint8_t out[32]);

/* Writes the 64 lowercase hex digits of digest[32] and a NUL into hex[65]. */
void ex_sha256_hex(const uint8_t digest[32], char hex[65]);

/* Hashes the file at path: hex[65] gets the digest, *bytes (if not NULL)
 * its size. Returns 0, or -1 when the file cannot be opened or read, with a
 * message naming the file in err. */
int ex_sha256_file(const char *path, char hex[65], uint64_t *bytes, char *err, size_t errlen);

#endif
