/* table.c - string tables and their renderings. */
#include "table.h"

#include <stdlib.h>
#include <string.h>

static char *dup_or_null(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int ex_table_init(ex_table *t, int ncol, const char *const *head) {
    memset(t, 0, sizeof *t);
    t->head = calloc((size_t)ncol, sizeof *t->head);
    if (!t->head) return -1;
    t->ncol = ncol;
    for (int c = 0; c < ncol; c++)
        if (!(t->head[c] = dup_or_null(head[c] ? head[c] : ""))) return -1;
    return 0;
}

int ex_table_add(ex_table *t, const char *const *vals) {
    if (t->nrow == t->caprow) {
        int cap = t->caprow ? 2 * t->caprow : 16;
        char **c = realloc(t->cell, (size_t)cap * (size_t)t->ncol * sizeof *c);
        if (!c) return -1;
        t->cell = c;
        t->caprow = cap;
    }
    char **row = t->cell + (size_t)t->nrow * (size_t)t->ncol;
    for (int c = 0; c < t->ncol; c++) {
        row[c] = dup_or_null(vals ? vals[c] : NULL);
        if (vals && vals[c] && !row[c]) {
            for (int k = 0; k < c; k++) free(row[k]);
            return -1;
        }
    }
    t->nrow++;
    return 0;
}

int ex_table_set(ex_table *t, int row, int col, const char *v) {
    char **p = &t->cell[(size_t)row * (size_t)t->ncol + (size_t)col];
    char *d = dup_or_null(v);
    if (v && !d) return -1;
    free(*p);
    *p = d;
    return 0;
}

void ex_table_free(ex_table *t) {
    if (!t) return;
    if (t->head)
        for (int c = 0; c < t->ncol; c++) free(t->head[c]);
    if (t->cell)
        for (size_t i = 0; i < (size_t)t->nrow * (size_t)t->ncol; i++) free(t->cell[i]);
    free(t->head);
    free(t->cell);
    memset(t, 0, sizeof *t);
}

static const char *cell(const ex_table *t, int r, int c) {
    const char *s = t->cell[(size_t)r * (size_t)t->ncol + (size_t)c];
    return s ? s : "";
}

static int is_number(const char *s) {
    if (!*s) return 1;
    char *end;
    strtod(s, &end);
    return end != s && *end == '\0';
}

static int numeric_col(const ex_table *t, int c) {
    for (int r = 0; r < t->nrow; r++)
        if (!is_number(cell(t, r, c))) return 0;
    return t->nrow > 0;
}

void ex_table_print_text(const ex_table *t, FILE *f) {
    size_t *w = calloc((size_t)t->ncol, sizeof *w);
    if (!w) return;
    for (int c = 0; c < t->ncol; c++) {
        w[c] = strlen(t->head[c]);
        for (int r = 0; r < t->nrow; r++) {
            size_t n = strlen(cell(t, r, c));
            if (n > w[c]) w[c] = n;
        }
    }
    for (int c = 0; c < t->ncol; c++)
        fprintf(f, "%-*s%s", (int)w[c], t->head[c], c + 1 < t->ncol ? "  " : "\n");
    for (int c = 0; c < t->ncol; c++) {
        for (size_t i = 0; i < w[c]; i++) fputc('-', f);
        fputs(c + 1 < t->ncol ? "  " : "\n", f);
    }
    for (int r = 0; r < t->nrow; r++)
        for (int c = 0; c < t->ncol; c++) {
            int right = numeric_col(t, c);
            fprintf(f, right ? "%*s%s" : "%-*s%s", (int)w[c], cell(t, r, c), c + 1 < t->ncol ? "  " : "\n");
        }
    free(w);
}

static void md_cell(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '|') fputs("\\|", f);
        else if (*s == '\n') fputs("<br>", f);
        else fputc(*s, f);
    }
}

void ex_table_print_md(const ex_table *t, FILE *f) {
    fputc('|', f);
    for (int c = 0; c < t->ncol; c++) {
        fputc(' ', f);
        md_cell(f, t->head[c]);
        fputs(" |", f);
    }
    fputs("\n|", f);
    for (int c = 0; c < t->ncol; c++) fputs(numeric_col(t, c) ? " ---: |" : " --- |", f);
    fputc('\n', f);
    for (int r = 0; r < t->nrow; r++) {
        fputc('|', f);
        for (int c = 0; c < t->ncol; c++) {
            fputc(' ', f);
            md_cell(f, cell(t, r, c));
            fputs(" |", f);
        }
        fputc('\n', f);
    }
}

void ex_html_escape(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

void ex_table_print_html(const ex_table *t, FILE *f) {
    fputs("<table>\n<thead><tr>", f);
    for (int c = 0; c < t->ncol; c++) {
        fputs("<th>", f);
        ex_html_escape(f, t->head[c]);
        fputs("</th>", f);
    }
    fputs("</tr></thead>\n<tbody>\n", f);
    for (int r = 0; r < t->nrow; r++) {
        fputs("<tr>", f);
        for (int c = 0; c < t->ncol; c++) {
            fputs(numeric_col(t, c) ? "<td class=\"num\">" : "<td>", f);
            ex_html_escape(f, cell(t, r, c));
            fputs("</td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</tbody>\n</table>\n", f);
}
