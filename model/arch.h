/* arch.h - the GPT's architecture as one table of sites and tensors.
 *
 * Everything that needs to know which tensors a GPT has (declaring and
 * initialising its parameters in train/gpt.c, checkpoints, the exporter, the
 * model file's model check in infer/format.c and the runtime's set-up in
 * infer/runtime.c) derives them from this one table, built from a pm_arch:
 *
 *   site            role    tensors (shape)                         init
 *   wte             WTE     wte [V, C]                               N(0, 0.02)
 *   wpe             WPE     wpe [ctx, C]                             N(0, 0.02)
 *   for each layer l (H = n_head[l], A = H * head_dim, M = n_hidden[l]):
 *   h.l.ln1         LN1     h.l.ln1.w [C], h.l.ln1.b [C]             1, 0
 *   h.l.attn.qkv    QKV     h.l.attn.qkv.w [3A, C], .b [3A]          N(0, 0.02), 0
 *   h.l.attn.proj   PROJ    h.l.attn.proj.w [C, A], .b [C]           N(0, 0.02 / sqrt(2 L)), 0
 *   h.l.ln2         LN2     h.l.ln2.w [C], h.l.ln2.b [C]             1, 0
 *   h.l.mlp.fc      FC      h.l.mlp.fc.w [M, C], .b [M]              N(0, 0.02), 0
 *   h.l.mlp.proj    MPROJ   h.l.mlp.proj.w [C, M], .b [C]            N(0, 0.02 / sqrt(2 L)), 0
 *   lnf             LNF     lnf.w [C], lnf.b [C]                     1, 0
 *   lm_head         HEAD    lm_head.w [V, C] (untied only)           N(0, 0.02)
 *
 * in exactly this order (the order parameters are declared, drawn from the
 * initialisation's random stream, checkpointed and written to model files).
 * Biases (.b) exist only with bias on. A linear site (QKV, PROJ, FC, MPROJ,
 * HEAD) of rank r > 0 is factorized: instead of NAME.w [out, in] it has
 * NAME.u [out, r] and NAME.v [r, in], W = U V, so its product is
 * x V^T U^T (low-rank factorization stores and runs it that way). A tied head
 * has no tensor of its own: its site's weight is wte, and it cannot be
 * factorized.
 *
 * Per-layer head counts and MLP widths let a structurally pruned model (whole
 * heads or MLP neurons removed) be stored and run at its smaller shape; the
 * head width head_dim is the same in every layer.
 *
 * Linear weights use PyTorch's [out, in] layout. The qkv rows are q (rows
 * 0..A), then k (A..2A), then v (2A..3A); within each, head h owns rows
 * h*D .. (h+1)*D.
 */
#ifndef PARE_PM_ARCH_H
#define PARE_PM_ARCH_H

#include <stdbool.h>
#include <stddef.h>

#define PM_NAME_MAX 47      /* bytes of a tensor name */
#define PM_SITE_NAME_MAX 39 /* bytes of a site name (a tensor's is the site's plus ".w") */

typedef enum pm_role {
    PM_WTE, PM_WPE, PM_LN1, PM_QKV, PM_PROJ, PM_LN2, PM_FC, PM_MPROJ, PM_LNF, PM_HEAD, PM_ROLE_COUNT
} pm_role;

/* Which tensor of a site: its weight, bias, or the two factors of a
 * factorized linear site (W = U V). */
typedef enum pm_part { PM_W, PM_B, PM_U, PM_V } pm_part;

/* How train/gpt.c initialises a tensor (GPT-2's scheme). */
typedef enum pm_init { PM_INIT_NORMAL, PM_INIT_RESIDUAL, PM_INIT_ONES, PM_INIT_ZEROS } pm_init;

/* Linear sites per layer, in rank[] order: qkv, proj, fc, mproj. */
#define PM_LINEARS_PER_LAYER 4

typedef struct pm_arch {
    int n_layer;   /* blocks, 1 .. 4096 */
    int n_embd;    /* width C */
    int head_dim;  /* D, the width of every head */
    int ctx;       /* longest sequence (rows of wpe) */
    int vocab;     /* V, 2 .. 2^24 */
    bool bias;     /* biases in linears and layer norms */
    bool tied;     /* the LM head is wte */
    int *n_head;   /* [n_layer] heads of each layer, >= 1 */
    int *n_hidden; /* [n_layer] MLP units of each layer, >= 1 */
    int *rank;     /* [n_layer * 4 + 1]: rank of each layer's qkv, proj, fc, mproj, then the head; 0 = dense */
} pm_arch;

/* Makes a (owned arrays) for a model whose layers all have n_head heads of
 * width n_embd / n_head and n_hidden MLP units, every linear site dense.
 * Returns 0, or -1 when out of memory or n_layer < 1 (a is then zeroed). Does
 * not check the sizes: pm_arch_check does. */
int pm_arch_uniform(pm_arch *a, int n_layer, int n_head, int n_embd, int n_hidden, int ctx, int vocab, bool bias,
                    bool tied);
/* Allocates a's per-layer arrays for a->n_layer layers, zero-filled (the
 * scalar fields are set by the caller). Returns 0, or -1 (out of memory, or
 * n_layer out of range). */
int pm_arch_alloc(pm_arch *a);
/* Deep copy of src into dst (owned arrays). Returns 0, or -1 (out of memory). */
int pm_arch_copy(pm_arch *dst, const pm_arch *src);
void pm_arch_free(pm_arch *a); /* a may be NULL; zeroes it */
/* True when a and b describe the same model. */
bool pm_arch_equal(const pm_arch *a, const pm_arch *b);
/* True when every layer has the same heads and MLP width and no site is
 * factorized (a model pare train can build from its keys alone). */
bool pm_arch_is_uniform(const pm_arch *a);

/* Checks every size: positive dimensions, ranks in [0, min(out, in)], a tied
 * head not factorized, no tensor beyond 2^31 floats, at most 4e9 parameters.
 * Returns 0, or -1 with err naming the field (as the command line spells the
 * uniform ones: n-layer, n-embd, ...) and what was expected. */
int pm_arch_check(const pm_arch *a, char *err, size_t errlen);

/* Parameters of a (without padding). a must pass pm_arch_check. */
size_t pm_arch_numel(const pm_arch *a);

/* A site: a place in the model with its tensors. */
typedef struct pm_site {
    char name[PM_SITE_NAME_MAX + 1]; /* "wte", "h.3.ln1", "h.3.mlp.fc", "lm_head" */
    pm_role role;
    int layer;                  /* its block, -1 for wte, wpe, lnf and lm_head */
    bool linear;                /* QKV, PROJ, FC, MPROJ, HEAD: out = x W^T (+ b), the policies' hook point */
    int out, in, rank;          /* linear sites: W[out, in]; rank > 0: factorized */
    int w, b, u, v;             /* indices into the table's tensors, -1 when absent (a tied head's w is wte's) */
} pm_site;

typedef struct pm_tensor {
    char name[PM_NAME_MAX + 1]; /* "h.3.mlp.fc.w" */
    int site;                   /* index into the table's sites */
    pm_part part;
    int ndim;                   /* 1 or 2 */
    int shape[2];               /* shape[1] is 1 for vectors */
    pm_init init;
    bool decay;                 /* weight decay applies: matrices and embeddings (2-D), not gains or biases */
} pm_tensor;

typedef struct pm_table {
    pm_site *site;     /* [n_site] in the order above */
    int n_site;
    pm_tensor *tensor; /* [n_tensor] in the order above */
    int n_tensor;
} pm_table;

/* Builds the table of a (checked with pm_arch_check first). Returns 0, or -1
 * with err (a bad architecture, out of memory); the caller frees t with
 * pm_table_free either way. */
int pm_table_build(pm_table *t, const pm_arch *a, char *err, size_t errlen);
void pm_table_free(pm_table *t); /* t may be NULL or zeroed */

/* Index of the tensor / site with this name, or -1. */
int pm_table_tensor(const pm_table *t, const char *name);
int pm_table_site(const pm_table *t, const char *name);
/* The site of layer l with role r (l = -1 for the model-level roles), or -1. */
int pm_table_site_of(const pm_table *t, int layer, pm_role r);

/* True when the site name matches a shell-style glob ("h.*.mlp.*",
 * "lm_head", "h.[0-3].attn.qkv"; fnmatch(3) without flags: '*' also matches
 * dots). A comma-separated list matches when any of its globs does. */
bool pm_glob_match(const char *globs, const char *name);

/* The rank slot of a linear role in layer l of a->rank (QKV, PROJ, FC, MPROJ;
 * HEAD with l = -1), or -1 for other roles. */
int pm_rank_slot(const pm_arch *a, int layer, pm_role r);

/* The role's name as sites spell it ("attn.qkv", "mlp.fc", "lm_head", ...). */
const char *pm_role_name(pm_role r);

#endif
