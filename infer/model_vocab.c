/* model_vocab.c - a model file's vocabulary for train/ (see model_vocab.h). */
#include "model_vocab.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "format.h"

bool inf_is_model_file(const char *path) {
    int fd = open(path, O_RDONLY | O_NONBLOCK); /* a FIFO must not block */
    if (fd < 0) return false;
    char magic[8];
    bool yes = read(fd, magic, 8) == 8 && memcmp(magic, INF_MAGIC, 8) == 0;
    close(fd);
    return yes;
}

int inf_model_vocab(const inf_model *m, tr_vocab *v, char *err, size_t errlen) {
    const inf_vocab *iv = &m->file.vocab;
    uint8_t packed[TR_VOCAB_PACK_MAX];
    if (iv->n < 1 || iv->n > 256) {
        snprintf(err, errlen, "the model's vocabulary has %u entries: this program handles byte-level ones (<= 256)",
                 iv->n);
        return -1;
    }
    packed[0] = (uint8_t)iv->kind;
    packed[1] = (uint8_t)(iv->n - 1);
    for (uint32_t i = 0; i < iv->n; i++) {
        if (iv->len[i] != 1) {
            snprintf(err, errlen, "vocabulary entry %u has %u bytes: expected single bytes", i, iv->len[i]);
            return -1;
        }
        packed[2 + i] = iv->tok[i][0];
    }
    return tr_vocab_unpack(v, packed, iv->n + 2, err, errlen);
}
