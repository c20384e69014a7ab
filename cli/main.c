/* main.c - `pare SUBCOMMAND [--key value ...]`: dispatches to the subcommands. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "autograd/parallel.h"
#include "commands.h"
#include "dist/dist.h"
#include "keys/options.h"

static const pare_cmd commands[] = {
    {"version", cmd_version, "print pare's version and the BLAS it uses"},
    {"runs", cmd_runs, "list, show and compare recorded runs (the run log)"},
    {"plot", cmd_plot, "draw a figure from the run log with gnuplot: loss, pareto, sweep"},
    {"report", cmd_report, "write an HTML and Markdown report of a set of runs"},
    {"train", cmd_train, "train a GPT on a text file or a built-in dataset"},
    {"sample", cmd_sample, "generate text from a trained model"},
    {"eval", cmd_eval, "loss (and accuracy for built-in tasks) of a trained model"},
    {"export", cmd_export, "write a checkpoint as a model file: f32, int8 (q8) or int4 (q4, q4a) weights"},
    {"generate", cmd_generate, "generate text from a model file with the inference runtime (KV cache)"},
    {"bench", cmd_bench, "decode and prompt speed, memory and size of a model file"},
    {"experiment", cmd_experiment, "run a recipe: stages of pare commands, sweeps, reuse, a report"},
    {"quantize", cmd_quantize, "post-training quantization: calibrate scales on training batches, write a checkpoint"},
    {"prune", cmd_prune, "prune (masks, heads, neurons, N:M) or factorize a trained model without training"},
    {"sensitivity", cmd_sensitivity, "validation loss with each site alone pruned at several sparsities"},
};
static const int n_commands = (int)(sizeof commands / sizeof commands[0]);

const pare_cmd *pare_command(const char *name) {
    for (int i = 0; i < n_commands; i++)
        if (strcmp(name, commands[i].name) == 0) return &commands[i];
    return NULL;
}

static void usage(FILE *f) {
    fprintf(f, "usage: pare COMMAND [--key value ...]\n\ncommands:\n");
    for (int i = 0; i < n_commands; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`pare COMMAND --help` lists a command's options and their defaults.\n");
}

int cmd_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("pare %s\nBLAS: %s\nMPI: %s\n", PARE_VERSION, ag_blas_info(),
           pd_built_with_mpi() ? "yes (mpirun -np N pare train ...: docs/scaling.md)" : "no (one process)");
    return PARE_EXIT_OK;
}

/* Under mpirun or srun: a command that failed on any rank ends the whole job
 * (the other ranks would wait for it in the next exchange), naming the rank;
 * a success finalizes MPI. */
static int finish(const char *cmd, int rc) {
    if (rc != PARE_EXIT_OK && pd_size() > 1) {
        char msg[1200];
        snprintf(msg, sizeof msg, "pare %s failed (exit %d): %s; ending the job (the last checkpoint rank 0 wrote "
                 "stays loadable)", cmd, rc, pare_last_error()[0] ? pare_last_error() : "see above");
        pd_abort(rc, msg);
    }
    pd_finalize();
    return rc;
}

int main(int argc, char **argv) {
    char derr[256];
    if (pd_init(&argc, &argv, derr, sizeof derr) != 0) {
        fprintf(stderr, "pare: %s\n", derr);
        return PARE_EXIT_ERROR;
    }
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? PARE_EXIT_USAGE : PARE_EXIT_OK;
    }
    for (int i = 0; i < n_commands; i++)
        if (strcmp(argv[1], commands[i].name) == 0) {
            int rc = commands[i].run(argc - 1, argv + 1);
            /* with --json, a failure still ends with one object on stdout */
            bool json = false;
            for (int k = 2; k < argc; k++)
                json = json || !strcmp(argv[k], "--json") || !strcmp(argv[k], "--json=true") ||
                       (!strcmp(argv[k], "--json") && k + 1 < argc && !strcmp(argv[k + 1], "true"));
            if (json && rc != PARE_EXIT_OK) {
                printf("{\"command\":");
                pare_json_string(stdout, commands[i].name);
                printf(",\"status\":%d,\"error\":", rc);
                pare_json_string(stdout, pare_last_error()[0] ? pare_last_error() : "failed");
                printf("}\n");
            }
            return finish(commands[i].name, rc);
        }
    fprintf(stderr, "pare: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return PARE_EXIT_USAGE;
}
