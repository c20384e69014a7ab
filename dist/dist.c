/* dist.c - dist.h over MPI (PARE_HAVE_MPI) or over one process. */
#include "dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef PARE_HAVE_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1, g_started = 0;
static double g_comm = 0;
static float *g_scratch = NULL; /* [n * size] the gather buffer, kept between steps */
static size_t g_scratch_n = 0;


int pd_built_with_mpi(void) {
#ifdef PARE_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

int pd_rank(void) { return g_rank; }
int pd_size(void) { return g_size; }
double pd_comm_seconds(void) { return g_comm; }

#ifdef PARE_HAVE_MPI
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Launched by a starter that MPI_Init can join: Open MPI's mpirun, or Slurm's
 * srun (PMI/PMIx). A plain `pare ...` stays one process without touching MPI,
 * so it needs no MPI daemon and costs nothing. */
static int launched(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "SLURM_STEP_ID", NULL};
    for (int i = 0; vars[i]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

static void mpi_error(int rc, const char *what, char *err, size_t errlen) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, s, &len);
    snprintf(err, errlen, "MPI %s failed on rank %d of %d: %s", what, g_rank, g_size, s);
}
#endif

int pd_init(int *argc, char ***argv, char *err, size_t errlen) {
    (void)argc, (void)argv, (void)err, (void)errlen;
#ifdef PARE_HAVE_MPI
    if (g_started || !launched()) return 0;
    int rc = MPI_Init(argc, argv);
    if (rc != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Init failed (code %d): is this job started by mpirun or srun?", rc);
        return -1;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_started = 1;
#endif
    return 0;
}

void pd_finalize(void) {
    free(g_scratch);
    g_scratch = NULL;
    g_scratch_n = 0;
#ifdef PARE_HAVE_MPI
    if (g_started) MPI_Finalize();
#endif
    g_started = 0;
}

int pd_sum_floats(float *buf, size_t n, char *err, size_t errlen) {
    if (g_size == 1 || n == 0) return 0;
#ifdef PARE_HAVE_MPI
    double t0 = now();
    size_t need = n * (size_t)g_size;
    if (need > g_scratch_n) {
        float *s = realloc(g_scratch, need * sizeof *s);
        if (!s) {
            snprintf(err, errlen, "rank %d: out of memory gathering %zu floats", g_rank, need);
            return -1;
        }
        g_scratch = s;
        g_scratch_n = need;
    }
    /* in chunks below INT_MAX elements; every rank gets every rank's buffer and adds them in rank order */
    const size_t chunk = (size_t)1 << 28;
    for (size_t off = 0; off < n; off += chunk) {
        int m = (int)(n - off < chunk ? n - off : chunk);
        int rc = MPI_Allgather(buf + off, m, MPI_FLOAT, g_scratch, m, MPI_FLOAT, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) {
            mpi_error(rc, "Allgather", err, errlen);
            return -1;
        }
        for (int i = 0; i < m; i++) {
            float s = g_scratch[i];
            for (int r = 1; r < g_size; r++) s += g_scratch[(size_t)r * (size_t)m + (size_t)i];
            buf[off + (size_t)i] = s;
        }
    }
    g_comm += now() - t0;
    return 0;
#else
    (void)buf, (void)err, (void)errlen;
    return 0;
#endif
}

int pd_sum_doubles(double *v, size_t n, char *err, size_t errlen) {
    if (g_size == 1 || n == 0) return 0;
#ifdef PARE_HAVE_MPI
    double t0 = now();
    double *all = malloc(n * (size_t)g_size * sizeof *all);
    if (!all) {
        snprintf(err, errlen, "rank %d: out of memory", g_rank);
        return -1;
    }
    int rc = MPI_Allgather(v, (int)n, MPI_DOUBLE, all, (int)n, MPI_DOUBLE, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
        free(all);
        mpi_error(rc, "Allgather", err, errlen);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        double s = all[i];
        for (int r = 1; r < g_size; r++) s += all[(size_t)r * n + i];
        v[i] = s;
    }
    free(all);
    g_comm += now() - t0;
    return 0;
#else
    (void)v, (void)err, (void)errlen;
    return 0;
#endif
}

int pd_min_max(float *mn, float *mx, char *err, size_t errlen) {
    if (g_size == 1) return 0;
#ifdef PARE_HAVE_MPI
    double t0 = now();
    float v[2] = {-*mn, *mx}, out[2];
    int rc = MPI_Allreduce(v, out, 2, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
        mpi_error(rc, "Allreduce(max)", err, errlen);
        return -1;
    }
    *mn = -out[0];
    *mx = out[1];
    g_comm += now() - t0;
    return 0;
#else
    (void)mn, (void)mx, (void)err, (void)errlen;
    return 0;
#endif
}

_Noreturn void pd_abort(int code, const char *msg) {
    fprintf(stderr, "pare: rank %d of %d: %s\n", g_rank, g_size, msg);
    fflush(stderr);
#ifdef PARE_HAVE_MPI
    if (g_started && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
#endif
    exit(code);
}
