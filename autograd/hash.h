/* hash.h - FNV-1a 64 (Fowler, Noll and Vo), the one hash pare uses for
 * checksums (checkpoints, model files) and for the identity of a data set:
 *
 *   h0 = 0xcbf29ce484222325,  h <- (h XOR byte) * 0x100000001b3  (mod 2^64)
 *
 * for each byte in order. Not cryptographic: it detects torn or corrupted
 * files, it does not authenticate them (artifacts in the run log carry
 * SHA-256). tests/test_data.c checks the published test vectors. */
#ifndef PARE_AG_HASH_H
#define PARE_AG_HASH_H

#include <stddef.h>
#include <stdint.h>

#define AG_FNV_INIT 0xcbf29ce484222325ULL

/* FNV-1a 64 of p[0, n), continuing from h (start with AG_FNV_INIT, or pass
 * the result of a previous call to hash pieces as one). */
static inline uint64_t ag_fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

#endif
