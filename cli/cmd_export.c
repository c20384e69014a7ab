/* cmd_export.c - `pare export CHECKPOINT --out FILE [--format f32|q8|q4|q4a]`:
 * a trained model as one validated model file for the inference runtime,
 * through an export plan (infer/export.h): every tensor of the model, the
 * command's storage keys, then the export hook of every compression policy
 * the checkpoint's stored configuration asks for (compress/policy.h; a
 * quantization-aware or `pare quantize` checkpoint's integers, scales and
 * activation scales: no --format needed; a pruned model's masks or smaller
 * architecture), written through the storage types' rows. With q8, each int8
 * matrix is stored in the smallest of q8, q8s and q8nm (the same codes:
 * infer/export.h's sparse rule) unless --dense. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/runlog.h"
#include "compress/policy.h"
#include "compress/quant.h"
#include "infer/export.h"
#include "infer/format.h"
#include "infer/gguf.h"

/* A label of what the plan stores for the run log and the summary: "f32",
 * "q8", "q4/g32", "q8+a8", ... or "mixed" (+emb with quantized embeddings). */
static void plan_label(const pm_plan *p, char *buf, size_t n) {
    char first[48] = "";
    bool mixed = false, emb = false;
    for (int i = 0; i < p->table.n_tensor; i++) {
        const pm_plan_entry *e = &p->entry[i];
        const pm_tensor *x = &p->table.tensor[i];
        const pm_site *s = &p->table.site[x->site];
        if (strcmp(e->type, "f32") == 0) continue;
        if (!s->linear) {
            emb = true;
            continue;
        }
        char one[48];
        int u = snprintf(one, sizeof one, "%s", e->type);
        if (e->group && u > 0 && (size_t)u < sizeof one) u += snprintf(one + u, sizeof one - (size_t)u, "/g%d", e->group);
        if (e->act_bits && u > 0 && (size_t)u < sizeof one) snprintf(one + u, sizeof one - (size_t)u, "+a%d", e->act_bits);
        if (!first[0]) snprintf(first, sizeof first, "%s", one);
        else if (strcmp(first, one) != 0) mixed = true;
    }
    snprintf(buf, n, "%s%s", mixed ? "mixed" : first[0] ? first : "f32", emb ? "+emb" : "");
}

int cmd_export(int argc, char **argv) {
    static const char *usage = "pare export CHECKPOINT --out FILE [--key value ...]";
    const char *out, *format, *db, *run_name;
    int group;
    bool embeddings, json, dense;
    pare_opt opts[] = {
        PARE_OPT_STRING("out", &out, "", "model file to write (required)"),
        PARE_OPT_CHOICE("format", &format, "f32", "f32|q8|q4|q4a|gguf-f32|gguf-q8_0|gguf-q4_0|gguf-q4_1",
                        "storage of the linear weights: f32, int8 (q8), int4 symmetric (q4) or with zero points (q4a); "
                        "a quantization-aware checkpoint's own storage needs none; gguf-*: a GGUF file for llama.cpp "
                        "(its gpt2 architecture) with the linear weights in F32, Q8_0, Q4_0 or Q4_1 (docs/gguf.md)"),
        PARE_OPT_INT("group-size", &group, "-1", -1, 1 << 24,
                     "columns per quantization scale (-1 = default: per output channel for q8, 32 for q4/q4a; "
                     "0 = per output channel; else a multiple of 32 dividing the input size)"),
        PARE_OPT_FLAG("quantize-embeddings", &embeddings, "store wte and wpe in the chosen format too"),
        PARE_OPT_FLAG("dense", &dense, "keep int8 weights dense (q8); by default each int8 matrix is stored in the "
                      "smallest of q8, q8s (only its nonzero codes) and q8nm (2 of every 4 inputs), e.g. a pruned "
                      "model's, computing the same results"),
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
    bool format_given = pare_opts_find(opts, n, "format")->set;
    int gguf_type = strncmp(format, "gguf-", 5) == 0 ? gg_type_from_name(format + 5) : -1;
    int dtype = gguf_type >= 0 ? INF_F32 : inf_dtype_from_name(format);
    if (group < 0) group = dtype == INF_Q4 || dtype == INF_Q4A ? 32 : 0;

    char err[1024], buf[1024];
    tr_gpt m;
    tr_vocab v;
    char *conf = NULL, *cfg = NULL;
    tr_ckpt_file f = {0};
    cp_set set = {0};
    pare_keys pk = {.n = 0};
    pm_plan plan = {0};
    pare_runlog rl = {0};
    int status = PARE_EXIT_ERROR;
    if (pare_model_open(ckpt, &m, &v, &conf, err, sizeof err) != 0) {
        pare_report_error("pare export: %s\n", err);
        return PARE_EXIT_ERROR;
    }
    /* the compression policies of the checkpoint's run, from its stored configuration */
    char where[300];
    snprintf(where, sizeof where, "checkpoint %s", ckpt);
    if (tr_ckpt_read(&f, ckpt, err, sizeof err) != 0 || cp_set_init(&set) != 0) {
        pare_report_error("pare export: %s\n", err);
        goto done;
    }
    cp_set_keys(&set, &pk);
    if (pk.overflow || pare_opts_defaults(pk.row, pk.n, err, sizeof err) != 0 ||
        pare_opts_apply_stored(pk.row, pk.n, conf, NULL, where, err, sizeof err) != 0 ||
        cp_set_create(&set, err, sizeof err) < 0) {
        pare_report_error("pare export: %s\n", pk.overflow ? "too many policy keys" : err);
        goto done;
    }
    bool quantized = cp_quant_of(&set) != NULL;
    if (quantized && format_given) {
        pare_report_error("pare export: --format %s: checkpoint %s is quantization-aware (its configuration has "
                          "quantization keys): its own integers and scales are exported, without --format\n", format,
                          ckpt);
        status = PARE_EXIT_USAGE;
        goto done;
    }
    inf_export_opts o = {dtype, group, embeddings, NULL, dense};
    if (inf_plan_from_gpt(&plan, &m, err, sizeof err) != 0 || inf_plan_apply(&plan, &o, err, sizeof err) != 0 ||
        cp_set_export(&set, &m, &f, &plan, err, sizeof err) != 0) {
        pare_report_error("pare export: %s\n", err);
        status = strstr(err, "group size") || strstr(err, "input width") ? PARE_EXIT_USAGE : PARE_EXIT_ERROR;
        goto done;
    }
    if (gguf_type >= 0) { /* a GGUF file for llama.cpp (infer/gguf.h) */
        if (quantized) {
            pare_report_error("pare export: --format %s: checkpoint %s is quantization-aware on pare's own grids: "
                              "GGUF files are written from float checkpoints\n", format, ckpt);
            status = PARE_EXIT_USAGE;
            goto done;
        }
        char run[256];
        bool has_run = conf && pare_conf_get(conf, "name", run, sizeof run) && run[0] && !strchr(run, '\n');
        if (gg_write_plan(&plan, &v, gguf_type, ckpt, has_run ? run : NULL, out, err, sizeof err) != 0) {
            pare_report_error("pare export: %s\n", err);
            status = strstr(err, "multiple of") ? PARE_EXIT_USAGE : PARE_EXIT_ERROR;
            goto done;
        }
        struct stat gst;
        long long gb = stat(out, &gst) == 0 ? (long long)gst.st_size : -1;
        if (json) {
            printf("{\"command\":\"export\",\"checkpoint\":");
            pare_json_string(stdout, ckpt);
            printf(",\"out\":");
            pare_json_string(stdout, out);
            printf(",\"format\":\"%s\",\"bytes\":%lld}\n", format, gb);
        } else {
            printf("wrote %s: GGUF v3 (llama.cpp gpt2), linear weights %s, %lld bytes\n", out, format + 5, gb);
        }
        status = PARE_EXIT_OK;
        goto done;
    }
    /* metadata: where the model came from, so `pare eval FILE` finds its data */
    char label[64];
    plan_label(&plan, label, sizeof label);
    char meta[4096];
    int ml = snprintf(meta, sizeof meta, "source=%s\nformat=%s\ngroup-size=%d\nquantize-embeddings=%d\n", ckpt,
                      quantized ? label : format, quantized ? -1 : group, embeddings ? 1 : 0);
    const char *keys[2] = {"data", "data-seed"};
    for (int i = 0; i < 2 && ml > 0 && (size_t)ml < sizeof meta; i++)
        if (conf && pare_conf_get(conf, keys[i], buf, sizeof buf) && !strchr(buf, '\n'))
            ml += snprintf(meta + ml, sizeof meta - (size_t)ml, "%s=%s\n", keys[i], buf);
    /* the run log: its parent is the run that wrote the checkpoint; `method`
     * (f32, q8, q8/g64, q4/g32, q8+a8, mixed, ..., +emb) labels the point in `pare plot pareto` */
    char method[96];
    if (quantized) snprintf(method, sizeof method, "qat:%s", label);
    else if (dtype == INF_F32) snprintf(method, sizeof method, "f32");
    else if (group) snprintf(method, sizeof method, "%s/g%d%s", format, group, embeddings ? "+emb" : "");
    else snprintf(method, sizeof method, "%s%s", format, embeddings ? "+emb" : "");
    {
        char *extra = malloc(strlen(ckpt) + 200);
        if (extra) snprintf(extra, strlen(ckpt) + 200, "checkpoint=%s\nmethod=%s\n", ckpt, method);
        cfg = pare_runlog_config(opts, n, extra);
        free(extra);
    }
    pare_runlog_begin(&rl, db, "export", run_name, cfg ? cfg : "", 0, ckpt, NULL);
    if (inf_plan_write(&plan, &v, meta, out, err, sizeof err) != 0) {
        pare_report_error("pare export: %s\n", err);
        /* a group size or an input width the storage type cannot use: the options' fault */
        status = strstr(err, "group size") || strstr(err, "input width") ? PARE_EXIT_USAGE : PARE_EXIT_ERROR;
        goto done;
    }
    struct stat st;
    long long bytes = stat(out, &st) == 0 ? (long long)st.st_size : -1;
    long long f32_bytes = (long long)(pm_arch_numel(&plan.arch) * sizeof(float));
    pare_runlog_artifact(&rl, "model", out);
    pare_runlog_result(&rl, "bytes", (double)bytes);
    pare_runlog_result(&rl, "params", (double)pm_arch_numel(&plan.arch));
    pare_runlog_result(&rl, "f32_param_bytes", (double)f32_bytes);
    if (bytes > 0) pare_runlog_result(&rl, "compression", (double)f32_bytes / (double)bytes);
    const char *shown = quantized ? label : format;
    int n_sparse = 0, n_nm = 0, n_int8 = 0; /* the sparse rule's choices (infer/export.h), read back from the file */
    {
        inf_file wf;
        char why[512];
        if (inf_file_open(&wf, out, why, sizeof why) == 0) {
            for (uint32_t i = 0; i < wf.n_tensors; i++) {
                int dt = wf.t[i].dtype;
                n_sparse += dt == INF_Q8S || dt == INF_Q8NM;
                n_nm += dt == INF_Q8NM;
                n_int8 += dt == INF_Q8S || dt == INF_Q8NM || dt == INF_Q8;
            }
            inf_file_close(&wf);
        }
    }
    pare_runlog_result(&rl, "sparse_tensors", (double)n_sparse);
    if (json) {
        printf("{\"command\":\"export\",\"checkpoint\":");
        pare_json_string(stdout, ckpt);
        printf(",\"out\":");
        pare_json_string(stdout, out);
        printf(",\"format\":\"%s\",\"group_size\":%d,\"bytes\":%lld,\"f32_param_bytes\":%lld,\"sparse_tensors\":%d,"
               "\"nm_tensors\":%d,\"int8_tensors\":%d}\n", shown, quantized ? -1 : group, bytes, f32_bytes, n_sparse,
               n_nm, n_int8);
    } else if (quantized) {
        printf("wrote %s: %s, the quantization-aware checkpoint's own codes, scales and activation scales, %lld bytes "
               "(the parameters in f32: %lld bytes, ratio %.2f)\n", out, label, bytes, f32_bytes,
               bytes > 0 ? (double)f32_bytes / (double)bytes : 0.0);
    } else {
        printf("wrote %s: %s", out, format);
        if (dtype != INF_F32) printf(" (%s)", group ? "per-group scales" : "per-output-channel scales");
        if (dtype != INF_F32 && group) printf(", group size %d", group);
        printf(", %lld bytes (the parameters in f32: %lld bytes, ratio %.2f)\n", bytes, f32_bytes,
               bytes > 0 ? (double)f32_bytes / (double)bytes : 0.0);
    }
    if (!json && n_sparse)
        printf("  %d of %d int8 matrices stored sparse (%d q8s: only their nonzero codes; %d q8nm: 2 of every 4; the "
               "same results); --dense keeps them q8\n", n_sparse, n_int8, n_sparse - n_nm, n_nm);
    status = PARE_EXIT_OK;
done:
    pare_runlog_end(&rl, status == PARE_EXIT_OK ? EX_FINISHED : EX_FAILED);
    pm_plan_free(&plan);
    cp_set_free(&set);
    pare_opts_free(pk.row, pk.n);
    tr_ckpt_close(&f);
    free(cfg);
    tr_gpt_free(&m);
    free(conf);
    return status;
}
