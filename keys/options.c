#include "keys/options.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

pare_opt *pare_opts_find(pare_opt *opts, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (strcmp(opts[i].key, key) == 0) return &opts[i];
    return NULL;
}

/* The index of v among "a|b|c", or -1. */
static int choice_index(const char *choices, const char *v) {
    size_t len = strlen(v);
    const char *p = choices;
    for (int i = 0; *p; i++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, v, n) == 0) return i;
        if (!bar) break;
        p = bar + 1;
    }
    return -1;
}

static bool choice_ok(const char *choices, const char *v) { return choice_index(choices, v) >= 0; }

/* Writes choice i of "a|b|c" into buf (n bytes). */
static const char *choice_name(const char *choices, int i, char *buf, size_t n) {
    const char *p = choices;
    for (int k = 0; k < i && p; k++) {
        p = strchr(p, '|');
        if (p) p++;
    }
    if (!p) return "?";
    const char *bar = strchr(p, '|');
    size_t len = bar ? (size_t)(bar - p) : strlen(p);
    if (len >= n) len = n - 1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    return buf;
}

static int parse_bool(const char *v, bool *out) {
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on")) *out = true;
    else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off")) *out = false;
    else return -1;
    return 0;
}

/* Stores value v into option o; on failure writes a message naming the key. */
static int set_value(pare_opt *o, const char *v, char *err, size_t errlen) {
    char *end = NULL;
    switch (o->type) {
    case PARE_OPT_T_INT: {
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end) {
            /* accept 1e6-style integers written as floats when exact */
            double d = strtod(v, &end);
            if (end == v || *end || !isfinite(d) || d != floor(d) || fabs(d) > 9e15) {
                snprintf(err, errlen, "--%s: expected an integer, got '%s'", o->key, v);
                return -1;
            }
            x = (long long)d;
        }
        if ((double)x < o->min || (double)x > o->max) {
            snprintf(err, errlen, "--%s: %lld is out of range [%.17g, %.17g]", o->key, x, o->min, o->max);
            return -1;
        }
        *(int *)o->dst = (int)x;
        return 0;
    }
    case PARE_OPT_T_FLOAT: {
        errno = 0;
        double x = strtod(v, &end);
        if (end == v || *end) {
            snprintf(err, errlen, "--%s: expected a number, got '%s'", o->key, v);
            return -1;
        }
        if (!isfinite(x)) {
            snprintf(err, errlen, "--%s: expected a finite number, got '%s'", o->key, v);
            return -1;
        }
        if (x < o->min || x > o->max) {
            snprintf(err, errlen, "--%s: %g is out of range [%g, %g]", o->key, x, o->min, o->max);
            return -1;
        }
        *(double *)o->dst = x;
        return 0;
    }
    case PARE_OPT_T_STRING:
        for (const unsigned char *c = (const unsigned char *)v; *c; c++)
            if (*c < 0x20 || *c == 0x7f) {
                /* stored configurations are "key=value" lines: a newline would forge a key */
                snprintf(err, errlen, "--%s: control character 0x%02x in the value: expected text on one line", o->key,
                         *c);
                return -1;
            }
        *(const char **)o->dst = v;
        return 0;
    case PARE_OPT_T_CHOICE:
        if (!choice_ok(o->choices, v)) {
            snprintf(err, errlen, "--%s: expected one of %s, got '%s'", o->key, o->choices, v);
            return -1;
        }
        *(const char **)o->dst = v;
        return 0;
    case PARE_OPT_T_FLAG:
        if (parse_bool(v, (bool *)o->dst) != 0) {
            snprintf(err, errlen, "--%s: expected true or false, got '%s'", o->key, v);
            return -1;
        }
        return 0;
    case PARE_OPT_T_U64: {
        errno = 0;
        if (v[0] == '-' || v[0] == '+' || v[0] == ' ') {
            snprintf(err, errlen, "--%s: expected a non-negative integer, got '%s'", o->key, v);
            return -1;
        }
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || end == v || *end) {
            snprintf(err, errlen, "--%s: expected a non-negative integer below 2^64, got '%s'", o->key, v);
            return -1;
        }
        *(uint64_t *)o->dst = (uint64_t)x;
        return 0;
    }
    case PARE_OPT_T_ENUM: {
        int i = choice_index(o->choices, v);
        if (i < 0) {
            snprintf(err, errlen, "--%s: expected one of %s, got '%s'", o->key, o->choices, v);
            return -1;
        }
        *(int *)o->dst = i;
        return 0;
    }
    }
    snprintf(err, errlen, "--%s: unknown option type", o->key);
    return -1;
}

int pare_opts_defaults(pare_opt *opts, int n, char *err, size_t errlen) {
    for (int i = 0; i < n; i++) {
        opts[i].set = false;
        const char *def = opts[i].def ? opts[i].def : "";
        if (set_value(&opts[i], def, err, errlen) != 0) return -1; /* a bad default is a bug */
    }
    return 0;
}

int pare_opts_parse(pare_opt *opts, int n, int argc, char **argv, int *pos, int max_pos,
                    int *n_pos, char *err, size_t errlen) {
    if (pare_opts_defaults(opts, n, err, errlen) != 0) return PARE_OPTS_ERROR;
    return pare_opts_parse_more(opts, n, argc, argv, pos, max_pos, n_pos, err, errlen);
}

int pare_opts_parse_more(pare_opt *opts, int n, int argc, char **argv, int *pos, int max_pos, int *n_pos, char *err,
                         size_t errlen) {
    if (n_pos) *n_pos = 0;
    const char *last_flag = NULL; /* a flag given without a value just before */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (!pos || !n_pos || *n_pos >= max_pos) {
                if (last_flag)
                    snprintf(err, errlen, "unexpected argument '%s' (--%s is a flag: it takes true|false, yes|no, "
                             "on|off, 1|0, or nothing)", a, last_flag);
                else
                    snprintf(err, errlen, "unexpected argument '%s'", a);
                return PARE_OPTS_ERROR;
            }
            pos[(*n_pos)++] = i;
            continue;
        }
        if (strcmp(a, "--help") == 0) return PARE_OPTS_HELP;
        char key[128];
        const char *eq = strchr(a + 2, '=');
        size_t klen = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        if (klen >= sizeof key) {
            snprintf(err, errlen, "option '%.40s...' is too long", a);
            return PARE_OPTS_ERROR;
        }
        memcpy(key, a + 2, klen);
        key[klen] = '\0';
        pare_opt *o = pare_opts_find(opts, n, key);
        if (!o) {
            snprintf(err, errlen, "unknown option '--%s' (see --help)", key);
            return PARE_OPTS_ERROR;
        }
        const char *v = eq ? eq + 1 : NULL;
        last_flag = NULL;
        if (!v && o->type == PARE_OPT_T_FLAG) {
            /* `--flag` alone, or `--flag true|false` */
            bool b;
            if (i + 1 < argc && parse_bool(argv[i + 1], &b) == 0) v = argv[++i];
            else v = "true", last_flag = o->key;
        } else if (!v) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--%s: missing value", key);
                return PARE_OPTS_ERROR;
            }
            v = argv[++i];
        }
        if (set_value(o, v, err, errlen) != 0) return PARE_OPTS_ERROR;
        o->set = true;
    }
    return PARE_OPTS_OK;
}

static const char *type_name(const pare_opt *o) {
    switch (o->type) {
    case PARE_OPT_T_INT: return "INT";
    case PARE_OPT_T_FLOAT: return "NUM";
    case PARE_OPT_T_STRING: return "STR";
    case PARE_OPT_T_CHOICE: return o->choices;
    case PARE_OPT_T_FLAG: return "";
    case PARE_OPT_T_U64: return "INT";
    case PARE_OPT_T_ENUM: return o->choices;
    }
    return "";
}

void pare_opts_help(FILE *f, const char *usage, const pare_opt *opts, int n) {
    fprintf(f, "usage: %s\n\noptions (every key, with its default):\n", usage);
    for (int i = 0; i < n; i++) {
        char left[96];
        snprintf(left, sizeof left, "--%s %s", opts[i].key, type_name(&opts[i]));
        const char *def = opts[i].def && opts[i].def[0] ? opts[i].def : "\"\"";
        if (opts[i].note) def = opts[i].note;
        fprintf(f, "  %-28s %s (default: %s)\n", left, opts[i].help, def);
    }
    fprintf(f, "  %-28s %s\n", "--help", "print this list and exit");
}

size_t pare_opts_format(const pare_opt *opts, int n, char *buf, size_t len) {
    size_t need = 0;
    for (int i = 0; i < n; i++) {
        const pare_opt *o = &opts[i];
        char val[64];
        const char *v = val;
        switch (o->type) {
        case PARE_OPT_T_INT: snprintf(val, sizeof val, "%d", *(const int *)o->dst); break;
        case PARE_OPT_T_FLOAT: snprintf(val, sizeof val, "%.9g", *(const double *)o->dst); break;
        case PARE_OPT_T_FLAG: v = *(const bool *)o->dst ? "true" : "false"; break;
        case PARE_OPT_T_U64: snprintf(val, sizeof val, "%llu", (unsigned long long)*(const uint64_t *)o->dst); break;
        case PARE_OPT_T_ENUM: v = choice_name(o->choices, *(const int *)o->dst, val, sizeof val); break;
        default: v = *(const char *const *)o->dst; if (!v) v = ""; break;
        }
        int k = snprintf(buf && need < len ? buf + need : NULL, buf && need < len ? len - need : 0,
                         "%s=%s\n", o->key, v);
        if (k < 0) break;
        need += (size_t)k;
    }
    if (buf && len && need >= len) buf[len - 1] = '\0';
    return need;
}

char *pare_opts_merge_conf(const char *src, const pare_opt *opts, int n) {
    size_t need = (src ? strlen(src) : 0) + pare_opts_format(opts, n, NULL, 0) + 2;
    char *out = malloc(need);
    if (!out) return NULL;
    size_t u = 0;
    for (const char *p = src; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);
        size_t klen = strcspn(p, "=\n");
        bool replaced = false;
        for (int i = 0; i < n && !replaced; i++)
            replaced = strlen(opts[i].key) == klen && !strncmp(p, opts[i].key, klen);
        if (!replaced) {
            memcpy(out + u, p, len);
            u += len;
            if (p[len - 1] != '\n') out[u++] = '\n';
        }
        p += len;
    }
    pare_opts_format(opts, n, out + u, need - u);
    return out;
}

static pare_check g_check; /* what pare_opts_cli does instead of letting the command run */

void pare_opts_set_check(const pare_check *c) {
    if (c) g_check = *c;
    else memset(&g_check, 0, sizeof g_check);
}

const char *pare_opts_check_error(void) { return g_check.err; }

int pare_opts_cli(const char *cmd, const char *usage, pare_opt *opts, int n, int argc, char **argv,
                  int *pos, int max_pos, int *n_pos) {
    char err[512];
    if (g_check.mode == PARE_CHECK_TABLE) { /* hand the table over, run nothing */
        if (g_check.table) g_check.table(g_check.user, opts, n);
        return 0;
    }
    int rc = pare_opts_parse(opts, n, argc, argv, pos, max_pos, n_pos, err, sizeof err);
    if (g_check.mode == PARE_CHECK_PARSE) { /* validate the arguments, run nothing */
        if (rc == PARE_OPTS_ERROR) {
            snprintf(g_check.err, sizeof g_check.err, "%s", err);
            return 2;
        }
        if (rc == PARE_OPTS_OK && g_check.table) g_check.table(g_check.user, opts, n); /* the resolved values */
        return 0;
    }
    if (rc == PARE_OPTS_HELP) {
        pare_opts_help(stdout, usage, opts, n);
        return 0;
    }
    if (rc == PARE_OPTS_ERROR) {
        pare_report_error("pare %s: %s\n", cmd, err);
        fprintf(stderr, "see: pare %s --help\n", cmd);
        return 2;
    }
    return -1;
}

int pare_opts_apply_stored(pare_opt *opts, int n, const char *conf, const char *const *skip, const char *source,
                           char *err, size_t errlen) {
    for (const char *p = conf; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        char key[128];
        size_t kl = eq ? (size_t)(eq - p) : 0;
        if (eq && kl > 0 && kl < sizeof key) {
            memcpy(key, p, kl);
            key[kl] = '\0';
            bool skipped = false;
            for (int i = 0; skip && skip[i] && !skipped; i++) skipped = strcmp(skip[i], key) == 0;
            pare_opt *o = skipped ? NULL : pare_opts_find(opts, n, key);
            if (o) {
                /* the value is copied into the table's own storage: it outlives conf */
                size_t vl = len - kl - 1;
                char *val = malloc(vl + 1);
                if (!val) {
                    snprintf(err, errlen, "%s: out of memory", source);
                    return -1;
                }
                memcpy(val, eq + 1, vl);
                val[vl] = '\0';
                char why[512];
                int rc = set_value(o, val, why, sizeof why);
                if (rc != 0) {
                    snprintf(err, errlen, "%s: its stored configuration: %s", source, why);
                    free(val);
                    return -1;
                }
                if (o->type == PARE_OPT_T_STRING || o->type == PARE_OPT_T_CHOICE) {
                    if (o->owned) free(o->owned);
                    o->owned = val; /* *dst points into it */
                } else {
                    free(val);
                }
            }
        }
        p = nl ? nl + 1 : p + len;
    }
    return 0;
}

void pare_opts_free(pare_opt *opts, int n) {
    for (int i = 0; i < n; i++) {
        free(opts[i].owned);
        opts[i].owned = NULL;
    }
}

/* ---------------------------------------------------------------- pare_keys */

void pare_keys_add(pare_keys *k, const pare_opt *rows, int n) {
    for (int i = 0; i < n; i++) {
        if (k->n >= PARE_KEYS_MAX) {
            k->overflow = true;
            return;
        }
        k->row[k->n++] = rows[i];
    }
}

void pare_keys_note(pare_keys *k, const char *key, const char *note) {
    pare_opt *o = pare_opts_find(k->row, k->n, key);
    if (o) o->note = note;
}

void pare_keys_threads(pare_keys *k, int *threads) {
    pare_opt r[] = {PARE_OPT_INT("threads", threads, "0", 0, 1024, "threads (0 = every core)")};
    pare_keys_add(k, r, 1);
}

void pare_keys_json(pare_keys *k, bool *json, const char *what) {
    pare_opt r[] = {PARE_OPT_FLAG("json", json, what ? what : "print the result as one JSON object on stdout")};
    pare_keys_add(k, r, 1);
}

int pare_threads(int requested) {
    if (requested > 0) return requested;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int pare_keys_cli(const char *cmd, const char *usage, pare_keys *k, int argc, char **argv, int *pos, int max_pos,
                  int *n_pos) {
    if (k->overflow) {
        fprintf(stderr, "pare %s: more than %d keys (a bug: raise PARE_KEYS_MAX)\n", cmd, PARE_KEYS_MAX);
        return 1;
    }
    for (int i = 0; i < k->n; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(k->row[i].key, k->row[j].key) == 0) {
                fprintf(stderr, "pare %s: key --%s is declared twice (a bug)\n", cmd, k->row[i].key);
                return 1;
            }
    return pare_opts_cli(cmd, usage, k->row, k->n, argc, argv, pos, max_pos, n_pos);
}

static char g_last_error[1024];

void pare_report_error(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fputs(msg, stderr);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = '\0';
    /* the messages of one command, in order */
    size_t used = strlen(g_last_error);
    if (used && used + 2 < sizeof g_last_error) memcpy(g_last_error + used, "; ", 3), used += 2;
    snprintf(g_last_error + used, sizeof g_last_error - used, "%s", msg);
}

const char *pare_last_error(void) { return g_last_error; }
