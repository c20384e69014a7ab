/* textgen.c - the sampling options, prompt encoding and output shared by
 * `pare sample` and `pare generate` (see textgen.h). */
#include "cli/textgen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"

int pare_gen_begin(pare_gen_text *g, const char *cmd, const tr_vocab *v, const char *prompt, int tokens) {
    size_t np = strlen(prompt);
    memset(g, 0, sizeof *g);
    g->ids = malloc((np + 1 + (size_t)tokens) * sizeof *g->ids);
    g->text = malloc(np + 2 + (size_t)tokens);
    if (!g->ids || !g->text) {
        pare_report_error("pare %s: out of memory\n", cmd);
        return PARE_EXIT_ERROR;
    }
    char err[512];
    if (np == 0) {
        g->ids[0] = v->id['\n'] >= 0 ? v->id['\n'] : 0;
        np = 1;
    } else if (tr_vocab_encode(v, (const uint8_t *)prompt, np, g->ids, err, sizeof err) != 0) {
        pare_report_error("pare %s: --prompt: %s\n", cmd, err);
        return PARE_EXIT_USAGE;
    }
    g->n_prompt = (int)np;
    return PARE_EXIT_OK;
}

void pare_gen_print(pare_gen_text *g, const char *cmd, const tr_vocab *v, const char *prompt, int len, double secs,
                    bool json, bool streamed) {
    tr_vocab_decode(v, g->ids, (size_t)len, g->text);
    if (json) {
        printf("{\"command\":\"%s\",\"prompt\":", cmd);
        pare_json_string(stdout, prompt);
        printf(",\"text\":");
        pare_json_string(stdout, g->text + (prompt[0] ? strlen(prompt) : 0));
        printf(",\"tokens\":%d,\"seconds\":", len - g->n_prompt);
        pare_json_number(stdout, secs);
        printf("}\n");
    } else if (streamed) {
        printf("\n");
    } else {
        printf("%s\n", g->text);
    }
}

void pare_gen_free(pare_gen_text *g) {
    free(g->ids);
    free(g->text);
    g->ids = NULL;
    g->text = NULL;
}
