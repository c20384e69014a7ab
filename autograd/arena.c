#include "arena.h"

#include <stdlib.h>
#include <string.h>

struct ag_chunk {
    ag_chunk *next;
    size_t cap;  /* bytes of payload */
    size_t off;  /* bytes used */
    _Alignas(AG_ALIGN) unsigned char mem[];
};

static size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

void ag_arena_init(ag_arena *a) { memset(a, 0, sizeof *a); }

void ag_arena_free(ag_arena *a) {
    if (!a) return;
    ag_chunk *c = a->head;
    while (c) {
        ag_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->used = 0;
}

static ag_chunk *chunk_new(ag_arena *a, size_t cap) {
    ag_chunk *c = aligned_alloc(AG_ALIGN, round_up(sizeof(ag_chunk) + cap, AG_ALIGN));
    if (!c) {
        a->failed = cap;
        return NULL;
    }
    c->next = NULL;
    c->cap = cap;
    c->off = 0;
    a->n_mallocs++;
    return c;
}

void *ag_arena_alloc(ag_arena *a, size_t bytes) {
    size_t need = round_up(bytes ? bytes : 1, AG_ALIGN);
    if (need < bytes) {
        a->failed = bytes; /* overflow */
        return NULL;
    }
    ag_chunk *c = a->head;
    if (!c || c->cap - c->off < need) {
        size_t cap = (size_t)1 << 20;
        if (c && c->cap * 2 > cap) cap = c->cap * 2;
        if (cap < need) cap = need;
        ag_chunk *n = chunk_new(a, cap);
        if (!n) return NULL;
        n->next = c;
        a->head = c = n;
    }
    void *p = c->mem + c->off;
    c->off += need;
    a->used += need;
    if (a->used > a->high_water) a->high_water = a->used;
    return p;
}

void *ag_arena_calloc(ag_arena *a, size_t bytes) {
    void *p = ag_arena_alloc(a, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

int ag_arena_reset(ag_arena *a) {
    a->used = 0;
    if (!a->head) return 0;
    if (!a->head->next) {
        a->head->off = 0;
        return 0;
    }
    /* More than one chunk: replace them all by one block of the high-water size. */
    ag_arena_free(a);
    a->head = chunk_new(a, a->high_water);
    return a->head ? 0 : -1;
}
