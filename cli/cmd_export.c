/* cmd_export.c - `pare export CHECKPOINT --out FILE --format f32|q8|q4|q4a`:
 * a trained model as one validated model file for the inference runtime,
 * through an export plan (infer/export.h: inf_export_gpt fills it from the
 * model, applies these options and writes it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "infer/export.h"
#include "infer/format.h"
#include "cli/runlog.h"

int cmd_export(int argc, char **argv) {
    static const char *usage = "pare export CHECKPOINT --out FILE [--key value ...]";
    const char *out, *format, *db, *run_name;
    int group;
    bool embeddings, json;
    pare_opt opts[] = {
        PARE_OPT_STRING("out", &out, "", "model file to write (required)"),
        PARE_OPT_CHOICE("format", &format, "f32", "f32|q8|q4|q4a",
                        "storage of the linear weights: f32, int8 (q8), int4 symmetric (q4) or with zero points (q4a)"),
        PARE_OPT_INT("group-size", &group, "-1", -1, 1 << 24,
                     "columns per quantization scale (-1 = default: per output channel for q8, 32 for q4/q4a; "
                     "0 = per output channel; else a multiple of 32 dividing the input size)"),
        PARE_OPT_FLAG("quantize-embeddings", &embeddings, "store wte and wpe in the chosen format too"),
        PARE_OPT_STRING("db", &db, "", "run log database (\"\" = $PARE_DB, else ./pare.db; none = do not record)"),
        PARE_OPT_STRING("name", &run_name, "", "a label for this run in the run log"),
        PARE_OPT_FLAG("json", &json, "print the result as one JSON object"),
    };
    int n = (int)(sizeof opts / sizeof opts[0]), pos[1], n_pos = 0;
    int rc = pare_opts_cli("export", usage, opts, n, argc, argv, pos, 1, &n_pos);
    if (rc >= 0) return rc;
    if (n_pos != 1) {
        pare_report_error("pare export: expected one checkpoint path\nsee: pare export --help\n");
        return PARE_EXIT_USAGE;
    }
    if (!out[0]) {
        pare_report_error("pare export: --out: expected the path of the model file to write\n");
        return PARE_EXIT_USAGE;
    }
    const char *ckpt = argv[pos[0]];
    {
        char why[1024];
        if (pare_same_file(out, ckpt)) {
            pare_report_error("pare export: --out %s is the same file as the checkpoint %s: refusing to overwrite an "
                              "input\n", out, ckpt);
            return PARE_EXIT_USAGE;
        }
        if (pare_check_out(out, why, sizeof why) != 0) {
            pare_report_error("pare export: %s\n", why);
            return PARE_EXIT_USAGE;
        }
    }
    int dtype = inf_dtype_from_name(format);
    if (group < 0) group = dtype == INF_Q4 || dtype == INF_Q4A ? 32 : 0;

    char err[1024], buf[1024];
    tr_gpt m;
    tr_vocab v;
    char *conf = NULL;
    if (pare_model_open(ckpt, &m, &v, &conf, err, sizeof err) != 0) {
        pare_report_error("pare export: %s\n", err);
        return PARE_EXIT_ERROR;
    }
    /* metadata: where the model came from, so `pare eval FILE` finds its data */
    char meta[4096];
    int ml = snprintf(meta, sizeof meta, "source=%s\nformat=%s\ngroup-size=%d\nquantize-embeddings=%d\n", ckpt, format,
                      group, embeddings ? 1 : 0);
    const char *keys[2] = {"data", "data-seed"};
    for (int i = 0; i < 2 && ml > 0 && (size_t)ml < sizeof meta; i++)
        if (conf && pare_conf_get(conf, keys[i], buf, sizeof buf) && !strchr(buf, '\n'))
            ml += snprintf(meta + ml, sizeof meta - (size_t)ml, "%s=%s\n", keys[i], buf);
    inf_export_opts o = {dtype, group, embeddings, meta};
    int status = PARE_EXIT_ERROR;
    /* the run log: its parent is the run that wrote the checkpoint; `method`
     * (f32, q8, q8/g64, q4/g32, ..., +emb) labels the point in `pare plot pareto` */
    char *cfg = NULL, method[64];
    if (dtype == INF_F32) snprintf(method, sizeof method, "f32");
    else if (group) snprintf(method, sizeof method, "%s/g%d%s", format, group, embeddings ? "+emb" : "");
    else snprintf(method, sizeof method, "%s%s", format, embeddings ? "+emb" : "");
    {
        char *extra = malloc(strlen(ckpt) + 100);
        if (extra) snprintf(extra, strlen(ckpt) + 100, "checkpoint=%s\nmethod=%s\n", ckpt, method);
        cfg = pare_runlog_config(opts, n, extra);
        free(extra);
    }
    pare_runlog rl;
    pare_runlog_begin(&rl, db, "export", run_name, cfg ? cfg : "", 0, ckpt, NULL);
    if (inf_export_gpt(&m, &v, &o, out, err, sizeof err) != 0) {
        pare_report_error("pare export: %s\n", err);
        /* a group size or an input width the storage type cannot use: the options' fault */
        status = strstr(err, "group size") || strstr(err, "input width") ? PARE_EXIT_USAGE : PARE_EXIT_ERROR;
        goto done;
    }
    struct stat st;
    long long bytes = stat(out, &st) == 0 ? (long long)st.st_size : -1;
    long long f32_bytes = (long long)(pm_arch_numel(&m.arch) * sizeof(float));
    pare_runlog_artifact(&rl, "model", out);
    pare_runlog_result(&rl, "bytes", (double)bytes);
    pare_runlog_result(&rl, "params", (double)pm_arch_numel(&m.arch));
    pare_runlog_result(&rl, "f32_param_bytes", (double)f32_bytes);
    if (bytes > 0) pare_runlog_result(&rl, "compression", (double)f32_bytes / (double)bytes);
    if (json) {
        printf("{\"command\":\"export\",\"checkpoint\":");
        pare_json_string(stdout, ckpt);
        printf(",\"out\":");
        pare_json_string(stdout, out);
        printf(",\"format\":\"%s\",\"group_size\":%d,\"bytes\":%lld,\"f32_param_bytes\":%lld}\n", format, group, bytes,
               f32_bytes);
    } else {
        printf("wrote %s: %s", out, format);
        if (dtype != INF_F32) printf(" (%s)", group ? "per-group scales" : "per-output-channel scales");
        if (dtype != INF_F32 && group) printf(", group size %d", group);
        printf(", %lld bytes (the parameters in f32: %lld bytes, ratio %.2f)\n", bytes, f32_bytes,
               bytes > 0 ? (double)f32_bytes / (double)bytes : 0.0);
    }
    status = PARE_EXIT_OK;
done:
    pare_runlog_end(&rl, status == PARE_EXIT_OK ? EX_FINISHED : EX_FAILED);
    free(cfg);
    tr_gpt_free(&m);
    free(conf);
    return status;
}
