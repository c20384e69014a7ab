/* table.h - a small table of strings and its three renderings (aligned text
 * for the terminal, Markdown, HTML), shared by `pare runs` and `pare report`.
 */
#ifndef PARE_EX_TABLE_H
#define PARE_EX_TABLE_H

#include <stdio.h>

typedef struct ex_table {
    int ncol, nrow, caprow;
    char **head; /* [ncol] owned */
    char **cell; /* [nrow * ncol] owned; NULL prints as "" */
} ex_table;

/* Starts a table with ncol columns named head[0..ncol). Returns 0, or -1
 * when out of memory (t is then empty and safe to free). */
int ex_table_init(ex_table *t, int ncol, const char *const *head);

/* Appends a row of ncol copied values (NULL allowed). Returns 0 or -1 (out of memory). */
int ex_table_add(ex_table *t, const char *const *vals);

/* Replaces cell (row, col) with a copy of v. Returns 0 or -1. */
int ex_table_set(ex_table *t, int row, int col, const char *v);

/* Frees the table; t may be NULL. */
void ex_table_free(ex_table *t);

/* Aligned columns with a header rule, for a terminal. */
void ex_table_print_text(const ex_table *t, FILE *f);

/* A GitHub-flavoured Markdown table ('|' in cells escaped). */
void ex_table_print_md(const ex_table *t, FILE *f);

/* An HTML <table> with escaped cells; columns whose cells are all numbers
 * are right-aligned. */
void ex_table_print_html(const ex_table *t, FILE *f);

/* Writes s with &, <, >, " escaped for HTML. */
void ex_html_escape(FILE *f, const char *s);

#endif
