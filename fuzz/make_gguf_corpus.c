/* make_gguf_corpus.c - writes small valid GGUF files (every weight type,
 * with and without biases, tied and untied heads, byte and char
 * vocabularies) into a directory: the seed corpus of fuzz_gguf.
 * Usage: make_gguf_corpus DIR */
#include <stdio.h>
#include <string.h>

#include "infer/gguf.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_gguf_corpus DIR\n");
        return 2;
    }
    static const int types[4] = {GG_F32, GG_Q8_0, GG_Q4_0, GG_Q4_1};
    char err[512], path[4096];
    int n = 0;
    for (int ti = 0; ti < 4; ti++)
        for (int v = 0; v < 8; v++) {
            pm_arch a;
            tr_vocab voc;
            memset(&a, 0, sizeof a);
            if (v & 4) tr_vocab_byte(&voc);
            else {
                memset(&voc, 0, sizeof voc);
                voc.kind = TR_VOCAB_CHAR, voc.size = 4;
                for (int i = 0; i < 256; i++) voc.id[i] = -1;
                for (int i = 0; i < 4; i++) voc.sym[i] = (uint8_t)('a' + i), voc.id['a' + i] = (int16_t)i;
            }
            pm_plan p;
            memset(&p, 0, sizeof p);
            if (pm_arch_uniform(&a, 1, 1, 32, 32, 2, voc.size, v & 1, (v >> 1) & 1) != 0 ||
                pm_plan_init(&p, &a, err, sizeof err) != 0) {
                fprintf(stderr, "make_gguf_corpus: %s\n", err);
                return 1;
            }
            for (int i = 0; i < p.table.n_tensor; i++) {
                size_t k = (size_t)p.table.tensor[i].shape[0] * (size_t)p.table.tensor[i].shape[1];
                float *d = pm_plan_alloc(&p, k * sizeof *d);
                if (!d) return 1;
                for (size_t j = 0; j < k; j++) d[j] = (float)((j * 7 + (size_t)i) % 13) / 13.0f - 0.5f;
                p.entry[i].data = d;
            }
            snprintf(path, sizeof path, "%s/seed-%d.gguf", argv[1], n++);
            int rc = gg_write_plan(&p, &voc, types[ti], "seed", NULL, path, err, sizeof err);
            pm_plan_free(&p);
            pm_arch_free(&a);
            if (rc) {
                fprintf(stderr, "make_gguf_corpus: %s\n", err);
                return 1;
            }
        }
    printf("wrote %d GGUF seed files into %s\n", n, argv[1]);
    return 0;
}
