/* fuzz_reader.c - libFuzzer target for the model file reader.
 *
 * Each input is parsed twice: as given (so the checksum check and everything
 * before it is exercised), and with its checksum recomputed (so mutations get
 * past the checksum into the structural and model checks). An input that is
 * accepted is also prepared for the kernels and, when it is small, run for two
 * tokens (a batched pair, then one decoded token), so a file the reader
 * accepts is one the runtime can execute: version 1, 2 and 3 (activation
 * records: static int8 activations), per-layer shapes, factorized sites.
 * Build: CC=clang cmake -S . -B build-fuzz -DPARE_FUZZ=ON && cmake --build build-fuzz --target fuzz_reader
 * Run:   ./build-fuzz/fuzz/fuzz_reader CORPUS_DIR (seed it with make_fuzz_corpus). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/hash.h"
#include "infer/format.h"
#include "infer/runtime.h"

static void try_parse(const uint8_t *buf, size_t len) {
    char err[512];
    inf_model m;
    if (inf_model_parse(&m, buf, len, "fuzz", err, sizeof err) == 0) {
        /* run it when the KV cache and scratch stay small */
        uint64_t work = (uint64_t)m.kv_floats + (uint64_t)m.V * m.C + (uint64_t)m.max_M * m.C * m.n_layer +
                        (uint64_t)m.max_A * m.C * m.n_layer;
        if (work < (1u << 22)) {
            inf_session s;
            if (inf_session_init(&s, &m, inf_isa_best(), 3, err, sizeof err) == 0) {
                int ids[2] = {0, m.V - 1};
                float *lg = malloc((size_t)m.V * sizeof(float));
                if (lg && inf_forward(&s, ids, m.ctx >= 2 ? 2 : 1, lg, false, err, sizeof err) == 0 && m.ctx >= 3)
                    inf_forward(&s, ids, 1, lg, false, err, sizeof err);
                free(lg);
                inf_session_free(&s);
            }
        }
    }
    inf_model_close(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* exact-size copies so AddressSanitizer sees any read past the end */
    uint8_t *a = malloc(size ? size : 1);
    if (!a) return 0;
    memcpy(a, data, size);
    try_parse(a, size);
    if (size >= 8) {
        uint64_t h = ag_fnv1a(AG_FNV_INIT, a, size - 8);
        memcpy(a + size - 8, &h, 8);
        try_parse(a, size);
    }
    free(a);
    return 0;
}
