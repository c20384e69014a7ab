/* dist.h - the one seam to a distributed engine (MPI): which rank this
 * process is, of how many, and the few collectives data-parallel training
 * needs. Built against Open MPI when PARE_MPI is on and MPI was found
 * (PARE_HAVE_MPI); otherwise the same interface with one rank (rank 0 of 1,
 * every collective the identity), so callers use it unconditionally and the
 * single-process build runs the same code path.
 *
 * Every collective here is deterministic for a fixed number of ranks: sums
 * of floats are gathered and added in rank order 0..N-1 (never MPI_SUM, whose
 * order is the implementation's), and min/max are exact in any order.
 * Collectives must be called by every rank in the same sequence. */
#ifndef PARE_DIST_H
#define PARE_DIST_H

#include <stddef.h>

/* Starts the engine when the process was launched by mpirun or srun (an
 * Open MPI or PMI environment), else stays one rank; idempotent. Call first
 * thing in main. Returns 0, or -1 with a message in err. */
int pd_init(int *argc, char ***argv, char *err, size_t errlen);

/* Ends the engine (no-op without one). */
void pd_finalize(void);

/* This process's rank (0 without an engine) and the number of ranks (1). */
int pd_rank(void);
int pd_size(void);

/* Whether pare was built with MPI support (for `pare version`). */
int pd_built_with_mpi(void);

/* buf[n] := sum over ranks r = 0..N-1, in that order, of rank r's buf, the
 * same bits on every rank (MPI_Allgather, then the adds). Keeps a gather
 * buffer of n * pd_size() floats between calls (freed by pd_finalize). Adds
 * the seconds spent to the communication clock (pd_comm_seconds). Returns 0,
 * or -1 with a message naming the rank in err (out of memory, MPI error). */
int pd_sum_floats(float *buf, size_t n, char *err, size_t errlen);

/* v[n] := the same fixed-order sum for doubles (n small: a loss, counts).
 * Returns 0, or -1 with the message in err. */
int pd_sum_doubles(double *v, size_t n, char *err, size_t errlen);

/* *mn := the least of every rank's *mn, *mx := the largest *mx (exact in
 * any order: MPI_MAX of -mn and mx). Returns 0, or -1 with the message. */
int pd_min_max(float *mn, float *mx, char *err, size_t errlen);

/* Seconds spent inside pd_sum_* and pd_min_max since the start. */
double pd_comm_seconds(void);

/* Ends the whole job: prints "pare: rank R of N: MSG" on stderr and aborts
 * every rank with the exit code (MPI_Abort); without an engine, exit(code). */
_Noreturn void pd_abort(int code, const char *msg);

#endif
