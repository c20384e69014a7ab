/* make_fuzz_corpus.c - writes small valid model files (every storage type,
 * with and without biases, tied and untied, byte and char vocabularies) into a
 * directory: the fuzzer's seed corpus. Usage: make_fuzz_corpus DIR */
#include <stdio.h>

#include "../tests/model_fixture.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_fuzz_corpus DIR\n");
        return 2;
    }
    char err[512], path[4096];
    int n = 0;
    for (int dt = 0; dt < INF_DTYPE_COUNT; dt++)
        for (int v = 0; v < 4; v++) {
            fx_spec s = fx_default(dt);
            s.bias = v & 1, s.tied = (v >> 1) & 1, s.seed = (uint64_t)(dt * 4 + v);
            if (v == 3) s.group = 0; /* per channel */
            snprintf(path, sizeof path, "%s/seed_%s_%d.pare", argv[1], inf_type(dt)->name, v);
            if (fx_write_model(path, &s, err, sizeof err)) {
                fprintf(stderr, "make_fuzz_corpus: %s\n", err);
                return 1;
            }
            n++;
        }
    printf("make_fuzz_corpus: wrote %d files to %s\n", n, argv[1]);
    return 0;
}
