/* recipe.c - reading a recipe and expanding it into runs (see recipe.h). */
#include "recipe.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#define MAX_RUNS 10000

static char *dupstr(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* ------------------------------------------------------------ reading */

typedef struct loader {
    ex_recipe *r;
    const char *const *commands;
    FILE *f;
    int line;       /* lines read so far: the line inih is parsing */
    char *err;
    size_t errlen;
    bool failed;
    char cur[256];  /* the section being read */
    int cur_stage;  /* its stage, -1 for [experiment] */
    int cur_line;   /* the line of its header */
    int exp_line;   /* the line of the [experiment] header */
    char header[256]; /* the newest [section] line the reader saw, its line, and whether a key followed it */
    int header_line;
    bool header_used;
} loader;

static int fail(loader *l, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(loader *l, int line, const char *fmt, ...) {
    if (l->failed) return 0;
    l->failed = true;
    int n = snprintf(l->err, l->errlen, "%s:%d: ", l->r->path, line);
    if (n < 0 || (size_t)n >= l->errlen) return 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return 0; /* inih: stop reporting success */
}

/* A section header with no keys after it: inih never reports it. */
static void check_empty_section(loader *l) {
    if (l->header_line && !l->header_used)
        fail(l, l->header_line, "[%s] has no keys: expected command = train, export, ... (or remove it)", l->header);
}

/* An fgets that counts lines and notes section headers, so the handler
 * knows where it is (inih reports a section only with its first key). */
static char *reader(char *str, int num, void *stream) {
    loader *l = stream;
    char *s = fgets(str, num, l->f);
    if (!s) return s;
    l->line++;
    const char *p = s;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '[') {
        check_empty_section(l);
        size_t n = strcspn(p + 1, "]\r\n");
        snprintf(l->header, sizeof l->header, "%.*s", (int)n, p + 1);
        l->header_line = l->line;
        l->header_used = false;
    }
    return s;
}

static int push_kv(ex_kv **a, int *n, int *cap, const char *key, const char *value, int line) {
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 16;
        ex_kv *b = realloc(*a, (size_t)c * sizeof *b);
        if (!b) return -1;
        *a = b, *cap = c;
    }
    ex_kv *kv = &(*a)[*n];
    kv->key = dupstr(key);
    kv->value = dupstr(value);
    kv->line = line;
    if (!kv->key || !kv->value) return -1;
    (*n)++;
    return 0;
}

static const char *const experiment_keys[] = {"name", "out", "db", "jobs", "report", NULL};

static bool in_list(const char *const *list, const char *s) {
    for (int i = 0; list && list[i]; i++)
        if (!strcmp(list[i], s)) return true;
    return false;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
    loader *l = user;
    ex_recipe *r = l->r;
    if (l->failed) return 0;
    if (!section[0]) return fail(l, l->line, "key '%s' before any [section]: expected [experiment] or a stage", name);
    l->header_used = true;
    if (strcmp(section, l->cur) != 0 || l->header_line != l->cur_line) { /* a new section (or one repeated) */
        snprintf(l->cur, sizeof l->cur, "%s", section);
        l->cur_line = l->header_line;
        if (!strcmp(section, "experiment") && r->n_exp)
            return fail(l, l->header_line, "[experiment] is given twice (first at line %d)", l->exp_line);
        if (!strcmp(section, "experiment")) l->exp_line = l->header_line;
        if (!strcmp(section, "experiment")) {
            l->cur_stage = -1;
        } else {
            for (const char *p = section; *p; p++)
                if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
                    return fail(l, l->header_line, "stage [%s]: expected a name of letters, digits and . _ -", section);
            for (int i = 0; i < r->n_stage; i++)
                if (!strcmp(r->stage[i].name, section))
                    return fail(l, l->header_line, "stage [%s] is given twice (first at line %d)", section, r->stage[i].line);
            if (r->n_stage == r->cap_stage) {
                int c = r->cap_stage ? 2 * r->cap_stage : 16;
                ex_stage *b = realloc(r->stage, (size_t)c * sizeof *b);
                if (!b) return fail(l, l->line, "out of memory");
                r->stage = b, r->cap_stage = c;
            }
            ex_stage *st = &r->stage[r->n_stage];
            memset(st, 0, sizeof *st);
            st->name = dupstr(section);
            st->line = l->header_line ? l->header_line : l->line;
            if (!st->name) return fail(l, l->line, "out of memory");
            l->cur_stage = r->n_stage++;
        }
    }
    if (l->cur_stage < 0) {
        if (!in_list(experiment_keys, name))
            return fail(l, l->line, "[experiment]: unknown key '%s': expected one of name, out, db, jobs, report", name);
        for (int i = 0; i < r->n_exp; i++)
            if (!strcmp(r->exp[i].key, name))
                return fail(l, l->line, "[experiment]: key '%s' is given twice (first at line %d)", name, r->exp[i].line);
        if (strchr(value, ','))
            return fail(l, l->line, "[experiment]: %s = %s: a list where a single value is required", name, value);
        if (push_kv(&r->exp, &r->n_exp, &r->cap_exp, name, value, l->line) != 0) return fail(l, l->line, "out of memory");
        return 1;
    }
    ex_stage *st = &r->stage[l->cur_stage];
    if (!strcmp(name, "command")) {
        if (st->command)
            return fail(l, l->line, "stage [%s]: key 'command' is given twice (first at line %d)", st->name,
                        st->command_line);
        if (!in_list(l->commands, value))
            return fail(l, l->line, "stage [%s]: command '%s' is not a pare command a recipe can run", st->name, value);
        st->command = dupstr(value);
        st->command_line = l->line;
        return st->command ? 1 : fail(l, l->line, "out of memory");
    }
    for (int i = 0; i < st->n_kv; i++)
        if (!strcmp(st->kv[i].key, name))
            return fail(l, l->line, "stage [%s]: key '%s' is given twice (first at line %d)", st->name, name,
                        st->kv[i].line);
    if (!strcmp(name, "input") && strchr(value, ','))
        return fail(l, l->line, "stage [%s]: input = %s: a list where a single value is required", st->name, value);
    if (push_kv(&st->kv, &st->n_kv, &st->cap_kv, name, value, l->line) != 0) return fail(l, l->line, "out of memory");
    return 1;
}

int ex_recipe_load(ex_recipe *r, const char *path, const char *const *commands, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    r->path = dupstr(path);
    if (!r->path) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    loader l = {.r = r, .commands = commands, .err = err, .errlen = errlen, .cur_stage = -1};
    l.f = fopen(path, "r");
    if (!l.f) {
        snprintf(err, errlen, "%s: cannot open the recipe: %s", path, strerror(errno));
        return -1;
    }
    int rc = ini_parse_stream(reader, &l, handler, &l);
    fclose(l.f);
    if (rc == 0) check_empty_section(&l);
    if (l.failed) return -1;
    if (rc != 0) {
        snprintf(err, errlen, "%s:%d: not INI: expected [section] headers and key = value lines", path, rc);
        return -1;
    }
    if (r->n_stage == 0) {
        snprintf(err, errlen, "%s: no stage: expected at least one [stage] with a command", path);
        return -1;
    }
    for (int i = 0; i < r->n_stage; i++)
        if (!r->stage[i].command) {
            snprintf(err, errlen, "%s:%d: stage [%s] has no 'command' key: expected command = train, export, ...",
                     path, r->stage[i].line, r->stage[i].name);
            return -1;
        }
    return 0;
}

static void free_kvs(ex_kv *kv, int n) {
    for (int i = 0; i < n; i++) free(kv[i].key), free(kv[i].value);
    free(kv);
}

void ex_recipe_free(ex_recipe *r) {
    if (!r) return;
    free(r->path);
    free_kvs(r->exp, r->n_exp);
    for (int i = 0; i < r->n_stage; i++) {
        free(r->stage[i].name);
        free(r->stage[i].command);
        free_kvs(r->stage[i].kv, r->stage[i].n_kv);
    }
    free(r->stage);
    memset(r, 0, sizeof *r);
}

const char *ex_recipe_setting(const ex_recipe *r, const char *key, const char *def) {
    for (int i = 0; i < r->n_exp; i++)
        if (!strcmp(r->exp[i].key, key)) return r->exp[i].value;
    return def;
}

int ex_recipe_set(ex_recipe *r, const char *sets, char *err, size_t errlen) {
    const char *p = sets ? sets : "";
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[1024];
        if (len >= sizeof item) {
            snprintf(err, errlen, "--set: '%.40s...' is too long", p);
            return -1;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        p += len + (end ? 1 : 0);
        char *a = item, *z = item + strlen(item);
        while (*a == ' ') a++;
        while (z > a && z[-1] == ' ') *--z = '\0';
        if (!*a) continue;
        char *eq = strchr(a, '=');
        if (!eq || eq == a) {
            snprintf(err, errlen, "--set: '%s': expected KEY=VALUE or STAGE.KEY=VALUE", a);
            return -1;
        }
        *eq = '\0';
        const char *value = eq + 1, *key = a, *only = NULL;
        char *dot = strchr(a, '.');
        if (dot) { /* STAGE.KEY when STAGE is a stage; stage names may hold dots: the longest one */
            for (int i = 0; i < r->n_stage; i++) {
                size_t n = strlen(r->stage[i].name);
                if (!strncmp(a, r->stage[i].name, n) && a[n] == '.' && (!only || n > strlen(only)))
                    only = r->stage[i].name, key = a + n + 1;
            }
        }
        int hits = 0;
        for (int i = 0; i < r->n_stage; i++) {
            ex_stage *st = &r->stage[i];
            if (only && strcmp(st->name, only)) continue;
            for (int k = 0; k < st->n_kv; k++) {
                if (strcmp(st->kv[k].key, key)) continue;
                char *v = strdup(value);
                if (!v) {
                    snprintf(err, errlen, "out of memory");
                    return -1;
                }
                free(st->kv[k].value);
                st->kv[k].value = v;
                hits++;
            }
        }
        if (!hits) {
            snprintf(err, errlen, "--set %s%s%s=%s: %s%s sets no key '%s'", only ? only : "", only ? "." : "", key,
                     value, only ? "stage " : "the recipe ", only ? only : r->path, key);
            return -1;
        }
    }
    return 0;
}

/* ----------------------------------------------------------- planning */

/* The elements of a list value "a, b, c" (trimmed), into out[max]; returns
 * the count, or -1 for an empty element. */
static int split_list(const char *v, char out[][128], int max) {
    int n = 0;
    const char *p = v;
    while (n < max) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        while (len && isspace((unsigned char)*p)) p++, len--;
        while (len && isspace((unsigned char)p[len - 1])) len--;
        if (!len || len >= 128) return -1;
        memcpy(out[n], p, len);
        out[n][len] = '\0';
        n++;
        if (!c) break;
        p = c + 1;
    }
    return n;
}

/* The value of key in a label "k=v k2=v2", into buf, or NULL. */
static const char *label_get(const char *label, const char *key, char *buf, size_t n) {
    size_t k = strlen(key);
    for (const char *p = label; *p;) {
        const char *sp = strchr(p, ' ');
        size_t len = sp ? (size_t)(sp - p) : strlen(p);
        if (len > k && !strncmp(p, key, k) && p[k] == '=') {
            snprintf(buf, n, "%.*s", (int)(len - k - 1), p + k + 1);
            return buf;
        }
        p = sp ? sp + 1 : p + len;
    }
    return NULL;
}

/* Appends "key=value" to label unless it is already there. */
static void label_add(char *label, size_t n, const char *key, const char *value) {
    char buf[256];
    if (label_get(label, key, buf, sizeof buf)) return;
    size_t u = strlen(label);
    snprintf(label + u, n - u, "%s%s=%s", u ? " " : "", key, value);
}

/* True when two labels agree on every key they share. */
static bool labels_agree(const char *a, const char *b) {
    for (const char *p = a; *p;) {
        const char *sp = strchr(p, ' ');
        size_t len = sp ? (size_t)(sp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq) {
            char key[128], va[256], vb[256];
            snprintf(key, sizeof key, "%.*s", (int)(eq - p), p);
            snprintf(va, sizeof va, "%.*s", (int)(len - (size_t)(eq - p) - 1), eq + 1);
            if (label_get(b, key, vb, sizeof vb) && strcmp(va, vb) != 0) return false;
        }
        p = sp ? sp + 1 : p + len;
    }
    return true;
}

typedef struct builder {
    ex_plan *p;
    int cap;
    int *first, *count; /* [n_stage] each stage's runs: run indices first .. first + count */
} builder;

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!s) return NULL;
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

/* One run of stage s: refs[j] is the run of each referenced stage (or -1),
 * own[k] the chosen element of each of the stage's lists. */
static int add_run(builder *b, const ex_recipe *r, const ex_plan_opts *o, int s, const int *ref_stage,
                   const int *ref_run, int n_refs, const int *list_kv, char (*const *own)[128], const int *pick,
                   int n_lists, char *err, size_t errlen) {
    ex_plan *p = b->p;
    if (p->n >= MAX_RUNS) {
        snprintf(err, errlen, "%s: the recipe expands into more than %d runs", r->path, MAX_RUNS);
        return -1;
    }
    if (p->n == b->cap) {
        int c = b->cap ? 2 * b->cap : 64;
        ex_run *nr = realloc(p->run, (size_t)c * sizeof *nr);
        if (!nr) goto oom;
        p->run = nr, b->cap = c;
    }
    const ex_stage *st = &r->stage[s];
    ex_run *run = &p->run[p->n];
    memset(run, 0, sizeof *run);
    run->stage = s;
    for (int j = 0; j < n_refs; j++) {
        const char *l = p->run[ref_run[j]].label;
        if (l[0]) {
            size_t u = strlen(run->label);
            for (const char *q = l; *q;) { /* merge, each key once */
                const char *sp = strchr(q, ' ');
                size_t len = sp ? (size_t)(sp - q) : strlen(q);
                const char *eq = memchr(q, '=', len);
                if (eq) {
                    char key[128], val[256];
                    snprintf(key, sizeof key, "%.*s", (int)(eq - q), q);
                    snprintf(val, sizeof val, "%.*s", (int)(len - (size_t)(eq - q) - 1), eq + 1);
                    label_add(run->label, sizeof run->label, key, val);
                }
                q = sp ? sp + 1 : q + len;
            }
            (void)u;
        }
    }
    for (int k = 0; k < n_lists; k++) label_add(run->label, sizeof run->label, st->kv[list_kv[k]].key, own[k][pick[k]]);
    char safe[512];
    snprintf(safe, sizeof safe, "%s", run->label);
    for (char *c = safe; *c; c++)
        if (*c == ' ') *c = '_';
        else if (*c == '=' || *c == '/') *c = '-';
    if (run->label[0]) snprintf(run->name, sizeof run->name, "%s/%s/%s", o->experiment, st->name, run->label);
    else snprintf(run->name, sizeof run->name, "%s/%s", o->experiment, st->name);
    const char *suffix = o->output ? o->output(o->user, st->command) : NULL;
    if (suffix) {
        if (run->label[0]) snprintf(run->out, sizeof run->out, "%s/%s/%s%s", o->out_dir, st->name, safe, suffix);
        else snprintf(run->out, sizeof run->out, "%s/%s%s", o->out_dir, st->name, suffix);
    }
    /* argv: command [input] --key=value ... --out=... (the runner adds the run-log name) */
    int cap = st->n_kv + 5;
    run->argv = calloc((size_t)cap + 1, sizeof *run->argv);
    run->key_line = calloc((size_t)cap + 1, sizeof *run->key_line);
    run->deps = calloc((size_t)(n_refs ? n_refs : 1), sizeof *run->deps);
    if (!run->argv || !run->key_line || !run->deps) goto oom_run;
    int a = 0;
    run->argv[a] = dupstr(st->command), run->key_line[a++] = st->command_line;
    for (int i = 0; i < st->n_kv; i++) {
        const ex_kv *kv = &st->kv[i];
        const char *val = kv->value;
        for (int j = 0; j < n_refs; j++)
            if (!strcmp(val, r->stage[ref_stage[j]].name)) val = p->run[ref_run[j]].out;
        for (int k = 0; k < n_lists; k++)
            if (list_kv[k] == i) val = own[k][pick[k]];
        if (!strcmp(kv->key, "input")) {
            /* the positional argument goes right after the command */
            memmove(run->argv + 2, run->argv + 1, (size_t)(a - 1) * sizeof *run->argv);
            memmove(run->key_line + 2, run->key_line + 1, (size_t)(a - 1) * sizeof *run->key_line);
            run->argv[1] = dupstr(val), run->key_line[1] = kv->line;
            if (!run->argv[1]) goto oom_run;
            a++;
        } else {
            run->argv[a] = fmt("--%s=%s", kv->key, val), run->key_line[a] = kv->line;
            if (!run->argv[a++]) goto oom_run;
        }
    }
    if (run->out[0] && !(run->argv[a] = fmt("--out=%s", run->out))) goto oom_run;
    if (run->out[0]) a++;
    run->argc = a;
    for (int j = 0; j < n_refs; j++) {
        bool dup = false;
        for (int k = 0; k < run->n_deps; k++) dup = dup || run->deps[k] == ref_run[j];
        if (!dup) run->deps[run->n_deps++] = ref_run[j];
    }
    p->n++;
    b->count[s]++;
    return 0;
oom_run:
    for (int i = 0; run->argv && i < cap; i++) free(run->argv[i]);
    free(run->argv), free(run->key_line), free(run->deps);
oom:
    snprintf(err, errlen, "%s: out of memory planning the runs", r->path);
    return -1;
}

int ex_plan_make(const ex_recipe *r, const ex_plan_opts *o, ex_plan *p, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    builder b = {.p = p};
    b.first = calloc((size_t)r->n_stage, sizeof *b.first);
    b.count = calloc((size_t)r->n_stage, sizeof *b.count);
    if (!b.first || !b.count) {
        free(b.first), free(b.count);
        snprintf(err, errlen, "%s: out of memory", r->path);
        return -1;
    }
    int rc = 0;
    for (int s = 0; s < r->n_stage && !rc; s++) {
        const ex_stage *st = &r->stage[s];
        b.first[s] = p->n;
        int ref_stage[64], n_refs = 0, list_kv[16], n_lists = 0;
        static char lists[16][64][128];
        char (*own[16])[128];
        int n_own[16];
        for (int i = 0; i < st->n_kv && !rc; i++) {
            const ex_kv *kv = &st->kv[i];
            int ref = -1;
            for (int j = 0; j < r->n_stage; j++)
                if (!strcmp(kv->value, r->stage[j].name)) ref = j;
            if (ref >= s) {
                snprintf(err, errlen, "%s:%d: stage [%s]: %s = %s refers to stage [%s], which is not defined before it "
                         "(a stage uses the outputs of earlier stages only, so a recipe has no cycles)", r->path,
                         kv->line, st->name, kv->key, kv->value, kv->value);
                rc = -1;
            } else if (ref >= 0 && (!o->output || !o->output(o->user, r->stage[ref].command))) {
                snprintf(err, errlen, "%s:%d: stage [%s]: %s = %s refers to stage [%s], which writes no file (%s); "
                         "expected a stage that writes one (train, export, quantize, prune)", r->path, kv->line,
                         st->name, kv->key, kv->value, kv->value, r->stage[ref].command);
                rc = -1;
            } else if (ref >= 0) {
                bool seen = false;
                for (int j = 0; j < n_refs; j++) seen = seen || ref_stage[j] == ref;
                if (!seen && n_refs < 64) ref_stage[n_refs++] = ref;
            } else if (strchr(kv->value, ',') && o->list_ok && o->list_ok(o->user, st->command, kv->key)) {
                if (n_lists == 16) {
                    snprintf(err, errlen, "%s:%d: stage [%s]: more than 16 lists", r->path, kv->line, st->name);
                    rc = -1;
                    break;
                }
                int n = split_list(kv->value, lists[n_lists], 64);
                if (n < 1) {
                    snprintf(err, errlen, "%s:%d: stage [%s]: %s = %s: an empty (or too long) list element", r->path,
                             kv->line, st->name, kv->key, kv->value);
                    rc = -1;
                    break;
                }
                own[n_lists] = lists[n_lists];
                n_own[n_lists] = n;
                list_kv[n_lists++] = i;
            }
        }
        if (rc) break;
        /* every combination of the referenced stages' runs that agree on their shared keys, times the lists */
        int idx[64] = {0}, pick[16] = {0}, ref_run[64];
        for (;;) {
            bool ok = true;
            for (int j = 0; j < n_refs; j++) {
                if (b.count[ref_stage[j]] == 0) {
                    ok = false;
                    break;
                }
                ref_run[j] = b.first[ref_stage[j]] + idx[j];
                for (int k = 0; k < j && ok; k++) ok = labels_agree(p->run[ref_run[j]].label, p->run[ref_run[k]].label);
            }
            if (ok) {
                for (;;) {
                    /* a list of a key the referenced runs are labelled with pairs with them: seed = 1, 2, 3
                     * beside teacher = teacher (itself over seed = 1, 2, 3) is three runs, not nine */
                    bool agree = true;
                    for (int k = 0; k < n_lists && agree; k++)
                        for (int j = 0; j < n_refs && agree; j++) {
                            char v[256];
                            if (label_get(p->run[ref_run[j]].label, st->kv[list_kv[k]].key, v, sizeof v))
                                agree = !strcmp(v, own[k][pick[k]]);
                        }
                    if (agree &&
                        add_run(&b, r, o, s, ref_stage, ref_run, n_refs, list_kv, own, pick, n_lists, err, errlen)) {
                        rc = -1;
                        break;
                    }
                    int k = 0;
                    while (k < n_lists && ++pick[k] == n_own[k]) pick[k++] = 0;
                    if (k == n_lists) break;
                }
            }
            if (rc) break;
            int j = 0;
            while (j < n_refs && ++idx[j] == b.count[ref_stage[j]]) idx[j++] = 0;
            if (j == n_refs) break;
        }
    }
    free(b.first), free(b.count);
    if (rc) ex_plan_free(p);
    return rc;
}

void ex_plan_free(ex_plan *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) {
        for (int a = 0; a < p->run[i].argc; a++) free(p->run[i].argv[a]);
        free(p->run[i].argv), free(p->run[i].key_line), free(p->run[i].deps);
    }
    free(p->run);
    memset(p, 0, sizeof *p);
}
