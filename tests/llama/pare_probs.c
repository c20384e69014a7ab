/* pare_probs.c - the next-token probabilities of pare's runtime for one
 * sequence, for the llama.cpp parity test (tests/test_llama.sh):
 *   pare_probs MODEL_FILE ID...   prints one JSON array of T rows of V
 * probabilities (softmax of the logits in double). Exit 1 with a message on
 * any error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "infer/runtime.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: pare_probs MODEL_FILE ID...\n");
        return 1;
    }
    char err[1024];
    inf_model m;
    inf_session s;
    if (inf_model_open(&m, argv[1], err, sizeof err) != 0) {
        fprintf(stderr, "pare_probs: %s\n", err);
        inf_model_close(&m);
        return 1;
    }
    int T = argc - 2, V = m.V;
    int *ids = malloc((size_t)T * sizeof *ids);
    float *logits = malloc((size_t)T * (size_t)V * sizeof *logits);
    if (!ids || !logits || inf_session_init(&s, &m, INF_ISA_COUNT, 3, err, sizeof err) != 0) {
        fprintf(stderr, "pare_probs: out of memory\n");
        return 1;
    }
    for (int i = 0; i < T; i++) ids[i] = atoi(argv[i + 2]);
    if (inf_forward(&s, ids, T, logits, true, err, sizeof err) != 0) {
        fprintf(stderr, "pare_probs: %s\n", err);
        return 1;
    }
    printf("[");
    for (int t = 0; t < T; t++) {
        const float *l = logits + (size_t)t * V;
        double mx = l[0], z = 0;
        for (int v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
        for (int v = 0; v < V; v++) z += exp((double)l[v] - mx);
        printf("%s[", t ? "," : "");
        for (int v = 0; v < V; v++) printf("%s%.9g", v ? "," : "", exp((double)l[v] - mx) / z);
        printf("]");
    }
    printf("]\n");
    inf_session_free(&s);
    inf_model_close(&m);
    free(ids), free(logits);
    return 0;
}
