/*
 * Internal threading helpers: how many threads a kernel should use, the
 * calling thread's index inside a parallel region, and per-thread
 * scratch buffers that grow once and are then reused by every call.
 */
#ifndef BP_CORE_THREADS_H
#define BP_CORE_THREADS_H

#include <stddef.h>
#include <stdint.h>

/*
 * Threads worth using for `flops` floating-point operations: 1 for small
 * work, inside a parallel region, or without OpenMP; otherwise at most
 * bp_get_num_threads(). The answer must only decide how work is split,
 * never how any output element is computed.
 */
int bp_threads_for(double flops);

/*
 * Flop-equivalents per float that a loop streams through memory. Such
 * loops are bound by bandwidth, and a second core's bandwidth pays off
 * at far fewer elements than a second core's arithmetic does.
 */
#define BP_STREAM_COST 16.0

/* Work on the indices [begin, end) of a parallel loop. */
typedef void (*bp_range_fn)(void *ctx, int64_t begin, int64_t end);

/*
 * Runs fn over [0, n) split into `threads` contiguous near-equal ranges,
 * one per thread. With threads <= 1 it calls fn(ctx, 0, n) directly:
 * NOTE: an OpenMP region costs about a microsecond even when its `if`
 * clause keeps it serial, which is as much as a small layer's whole
 * forward pass. Callers must make every index's result independent of
 * how [0, n) is split.
 */
void bp_parallel_for(int threads, int64_t n, bp_range_fn fn, void *ctx);

/* This thread's index in the enclosing parallel region (0 outside). */
int bp_thread_index(void);

/* Per-thread scratch buffers, one per slot, so that nested users differ. */
typedef enum bp_scratch_slot {
    BP_SCRATCH_GEMM = 0, /* the GEMM driver's packed panels */
    BP_SCRATCH_DGEMM,    /* the double GEMM's transposed panels */
    BP_SCRATCH_SLOTS
} bp_scratch_slot;

/*
 * A 64-byte aligned buffer of at least `bytes` bytes owned by the calling
 * thread. It only grows, is freed when the thread exits (on POSIX), and
 * its contents do not survive the next call with the same slot. NULL if
 * the allocation fails.
 */
void *bp_scratch(bp_scratch_slot slot, size_t bytes);

#endif
