/* fuzz_gguf.c - libFuzzer target for pare's validating GGUF reader
 * (infer/gguf.c). Every input is parsed; an accepted one has each tensor's
 * rows dequantized (every byte the reader vouched for is read) and each
 * string KV's bytes touched, so AddressSanitizer sees any length the reader
 * let through wrongly.
 * Build: CC=clang cmake -S . -B build-fuzz -DPARE_FUZZ=ON && cmake --build build-fuzz --target fuzz_gguf
 * Run:   ./build-fuzz/fuzz/fuzz_gguf CORPUS_DIR (seed it with make_gguf_corpus). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "infer/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *a = malloc(size ? size : 1); /* exact size: reads past the end are caught */
    if (!a) return 0;
    memcpy(a, data, size);
    char err[512];
    gg_file f;
    if (gg_open_mem(&f, a, size, err, sizeof err) != 0) return 0; /* a is freed by the reader */
    volatile uint8_t sink = 0;
    for (uint64_t i = 0; i < f.n_kv; i++) {
        const gg_kv *kv = &f.kv[i];
        if (kv->type == GGV_STRING) {
            uint64_t n;
            memcpy(&n, kv->val, 8);
            for (uint64_t j = 0; j < n; j++) sink ^= kv->val[8 + j];
        }
    }
    for (uint64_t i = 0; i < f.n_tensors; i++) {
        const gg_tensor *t = &f.t[i];
        const gg_type_traits *tr = gg_type(t->type);
        if (t->ne[0] > (1u << 16)) continue;
        float *row = malloc(t->ne[0] * sizeof *row);
        if (!row) continue;
        uint64_t rows = t->bytes / (t->ne[0] / (uint64_t)tr->block * (uint64_t)tr->block_bytes), rb = t->ne[0] / (uint64_t)tr->block * (uint64_t)tr->block_bytes;
        for (uint64_t r = 0; r < rows && r < 4096; r++) tr->dequantize_row(t->data + r * rb, row, (int)t->ne[0]);
        free(row);
    }
    (void)sink;
    gg_close(&f);
    return 0;
}
