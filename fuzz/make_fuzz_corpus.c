/* make_fuzz_corpus.c - writes small valid model files into a directory: the
 * fuzzer's seed corpus. Every storage type, with and without biases, tied
 * and untied, byte and char vocabularies, as version-2 files; the same
 * uniform models as version-1 files (laid out by hand); version-2 files
 * with per-layer heads and MLP widths and factorized sites (the head too
 * when untied); and version-3 files with activation records (static 8- and
 * 4-bit activations) on every integer product weight. Usage:
 * make_fuzz_corpus DIR */
#include <stdio.h>

#include "../tests/model_fixture.h"

static int write_bytes(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int rc = fwrite(b, 1, n, f) == n ? 0 : -1;
    return fclose(f) == 0 ? rc : -1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_fuzz_corpus DIR\n");
        return 2;
    }
    char err[512], path[4096];
    int n = 0;
    for (int dt = 0; dt < INF_DTYPE_COUNT; dt++)
        for (int v = 0; v < 8; v++) {
            fx_spec s = fx_default(dt);
            s.bias = v & 1, s.tied = (v >> 1) & 1, s.seed = (uint64_t)(dt * 8 + v);
            if ((v & 3) == 3) s.group = 0; /* per channel */
            if (v >= 4) { /* per-layer shapes and factor pairs */
                s.n_layer = 2, s.heads[0] = 2, s.heads[1] = 1, s.hidden[0] = 64, s.hidden[1] = 32, s.ctx = 6;
                s.rank[0] = 8;                            /* h.0.attn.qkv */
                s.rank[PM_LINEARS_PER_LAYER + 2] = 4;     /* h.1.mlp.fc */
                s.rank[2 * PM_LINEARS_PER_LAYER] = s.tied ? 0 : 4; /* lm_head */
            }
            snprintf(path, sizeof path, "%s/seed_%s_%d.pare", argv[1], inf_type_name(dt), v);
            if (fx_write_model(path, &s, err, sizeof err)) {
                fprintf(stderr, "make_fuzz_corpus: %s\n", err);
                return 1;
            }
            n++;
            if (v >= 4) continue;
            size_t len, v1_len;
            uint8_t *b = fx_read(path, &len), *v1 = b ? fx_v1_from_v2(b, len, &v1_len) : NULL;
            snprintf(path, sizeof path, "%s/seed_v1_%s_%d.pare", argv[1], inf_type_name(dt), v);
            if (!v1 || write_bytes(path, v1, v1_len) != 0) {
                fprintf(stderr, "make_fuzz_corpus: cannot write %s\n", path);
                free(b), free(v1);
                return 1;
            }
            free(b), free(v1);
            n++;
        }
    for (int dt = INF_Q8; dt < INF_DTYPE_COUNT; dt++) /* version 3: activation records */
        for (int v = 0; v < 4; v++) {
            fx_spec s = fx_default(dt);
            s.act_bits = v & 1 ? 4 : 8, s.tied = (v >> 1) & 1, s.seed = (uint64_t)(100 + dt * 4 + v);
            if (v == 3) { /* factor pairs with records on both products */
                s.n_layer = 2, s.ctx = 6, s.rank[0] = 32, s.rank[PM_LINEARS_PER_LAYER + 2] = 32;
            }
            snprintf(path, sizeof path, "%s/seed_v3_%s_%d.pare", argv[1], inf_type_name(dt), v);
            if (fx_write_model(path, &s, err, sizeof err)) {
                fprintf(stderr, "make_fuzz_corpus: %s\n", err);
                return 1;
            }
            n++;
        }
    for (int v = 0; v < 3; v++) { /* sparse storage: mostly zero codes, per group and per channel */
        fx_spec s = fx_default(INF_Q8S);
        s.zero_frac = v == 2 ? 0.99f : 0.9f, s.group = v == 1 ? 0 : 32, s.seed = (uint64_t)(200 + v);
        snprintf(path, sizeof path, "%s/seed_sparse_q8s_%d.pare", argv[1], v);
        if (fx_write_model(path, &s, err, sizeof err)) {
            fprintf(stderr, "make_fuzz_corpus: %s\n", err);
            return 1;
        }
        n++;
    }
    printf("make_fuzz_corpus: wrote %d files to %s\n", n, argv[1]);
    return 0;
}
