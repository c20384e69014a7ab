/* arena.h - a bump allocator for the activations of one step.
 *
 * Every tensor an op creates during a step (its data, its gradient, what its
 * backward saves) is carved out of the arena. ag_arena_reset() forgets all of
 * it at once. The arena grows in chunks during the first step; on reset it
 * coalesces the chunks into one block as large as the step's high-water mark,
 * so from the second identical step on, a step allocates nothing.
 */
#ifndef PARE_AG_ARENA_H
#define PARE_AG_ARENA_H

#include <stddef.h>

#define AG_ALIGN 64 /* bytes; every block starts on a cache line (and AVX-512 vector) */

typedef struct ag_chunk ag_chunk;

typedef struct ag_arena {
    ag_chunk *head;      /* chunk being filled; older chunks follow ->next */
    size_t used;         /* bytes used in all chunks since the last reset */
    size_t high_water;   /* largest `used` ever seen */
    size_t n_mallocs;    /* chunks allocated since creation (tests read it) */
    size_t failed;       /* the block size of the last allocation that failed (for messages) */
} ag_arena;

/* Initialises an empty arena. Never fails (no memory is taken until first use). */
void ag_arena_init(ag_arena *a);

/* Frees every chunk. a may be NULL. */
void ag_arena_free(ag_arena *a);

/* Returns `bytes` bytes aligned to AG_ALIGN, uninitialised, owned by the arena
 * (valid until the next reset). Returns NULL when the system is out of memory. */
void *ag_arena_alloc(ag_arena *a, size_t bytes);

/* Same, zero-filled. */
void *ag_arena_calloc(ag_arena *a, size_t bytes);

/* Forgets every allocation. If the last step needed more than one chunk, the
 * chunks are replaced by one block of the high-water size. Returns 0, or -1 if
 * that block could not be allocated (the arena is then empty but usable). */
int ag_arena_reset(ag_arena *a);

#endif
