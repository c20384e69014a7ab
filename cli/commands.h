/* commands.h - the subcommands of the `pare` program.
 *
 * Each subcommand lives in its own cmd_*.c file and has this signature:
 * argv[0] is the subcommand's name, the rest are its arguments. It returns
 * the process exit status (see the PARE_EXIT_* codes). Only the command-line
 * program exits; library code returns status codes.
 */
#ifndef PARE_CLI_COMMANDS_H
#define PARE_CLI_COMMANDS_H

enum {
    PARE_EXIT_OK = 0,
    PARE_EXIT_ERROR = 1,     /* a runtime failure: I/O, memory, a bad file */
    PARE_EXIT_USAGE = 2,     /* an unknown option or a bad value */
    PARE_EXIT_DIVERGED = 3,  /* a NaN or Inf: training diverged, or an evaluation's loss is not finite */
    PARE_EXIT_SAVED_ELSEWHERE = 4, /* training ended, but --out could not be written: the state went to a fallback path */
    PARE_EXIT_INTERRUPTED = 130, /* stopped by SIGINT, SIGTERM or SIGHUP after saving */
};

typedef int (*pare_cmd_fn)(int argc, char **argv);

typedef struct pare_cmd {
    const char *name;
    pare_cmd_fn run;
    const char *summary;
} pare_cmd;

int cmd_version(int argc, char **argv);
int cmd_runs(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_experiment(int argc, char **argv);

/* The subcommand called name, or NULL. */
const pare_cmd *pare_command(const char *name);
int cmd_prune(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_sensitivity(int argc, char **argv);
#include <stdbool.h>

#include "train/sampler.h"
/* Model files (infer/, cmd_generate.c): true when path starts with the model-file magic; and the model-file
 * branches of `pare sample` and `pare eval` (same options and output as for a checkpoint). */
bool pare_is_model_file(const char *path);
int pare_sample_model_file(const char *path, const tr_sample_opts *so, bool json);
int pare_eval_model_file(const char *path, const char *data, int data_seed, bool data_seed_set, int batches, int batch, bool json,
                         const char *db, const char *name, const char *config); /* db, name, config: the run log (cli/runlog.h) */

/* Helpers shared by train, sample and eval (cmd_train.c). */
#include <stdio.h>
#include "train/gpt.h"
#include "train/data.h"
/* Writes s as a JSON string literal (quoted, escaped). */
void pare_json_string(FILE *f, const char *s);
/* Writes v, or null when it is not finite. */
void pare_json_number(FILE *f, double v);
/* Opens a trained model for eval and sample: builds m (no gradients) with
 * its weights, its vocabulary and (if conf != NULL) its configuration text
 * (malloc'd, may be NULL). Returns 0, or -1 with err naming the file and
 * what is wrong; m is then freed. */
int pare_model_open(const char *path, tr_gpt *m, tr_vocab *vocab, char **conf, char *err, size_t errlen);
/* True when paths a and b both exist and are the same file (device and
 * inode: another name, a link or a relative path to it included). */
bool pare_same_file(const char *a, const char *b);

/* Checks that a command may write its output file at path: its directory
 * exists and is writable, path is not a directory nor a read-only file. Returns 0, or -1 with err
 * naming the path and what is wrong. */
int pare_check_out(const char *path, char *err, size_t errlen);

/* The arguments of a command that reads checkpoint `in` and writes checkpoint
 * `out` (pare quantize, pare prune): out given, not the same file as in, and
 * writable (pare_check_out). Returns 0, or reports "pare CMD: ..." and
 * returns PARE_EXIT_USAGE. */
int pare_check_rewrite(const char *cmd, const char *in, const char *out);

/* Takes the advisory lock on output path (a POSIX record lock on "<path>.lock"), so two
 * live processes never write the same output; then removes the temporary
 * files a killed writer left. Returns the lock's descriptor (>= 0; release
 * it with pare_unlock_out), or -1 with err naming the other process. */
int pare_lock_out(const char *path, char *err, size_t errlen);
void pare_unlock_out(const char *path, int fd);

/* Opens the data a checkpoint was trained on (its configuration's data and
 * data-seed) with the model's vocabulary v and context ctx (cmd_prune.c).
 * Returns 0, or -1 with err naming the checkpoint at path or the data. */
int pare_open_ckpt_data(const char *path, const char *conf, const tr_vocab *v, int ctx, tr_dataset **d, char *err,
                        size_t errlen);

/* For `pare eval` of a quantization-aware checkpoint (cmd_quantize.c): when
 * its stored configuration conf asks for quantization, makes the policies
 * (into set, which the caller frees with cp_set_free, whatever the result)
 * and fills fwd with the checkpoint's quantized forward of model m. Returns
 * 1 (fwd set), 0 (not quantization-aware), or -1 with err. */
#include "compress/policy.h"
int pare_quant_forward(const char *path, const char *conf, const tr_gpt *m, cp_set *set, tr_gpt_fwd *fwd, char *err,
                       size_t errlen);

/* The value of key in "key=value" lines, copied into buf (n bytes), or NULL. */
const char *pare_conf_get(const char *conf, const char *key, char *buf, size_t n);

#endif
