/*
 * Internal threading helpers: how many threads a kernel should use, the
 * calling thread's index inside a parallel region, and per-thread
 * scratch buffers that grow once and are then reused by every call.
 */
#ifndef BP_CORE_THREADS_H
#define BP_CORE_THREADS_H

#include <stddef.h>

/*
 * Threads worth using for `flops` floating-point operations: 1 for small
 * work, inside a parallel region, or without OpenMP; otherwise at most
 * bp_get_num_threads(). The answer must only decide how work is split,
 * never how any output element is computed.
 */
int bp_threads_for(double flops);

/* This thread's index in the enclosing parallel region (0 outside). */
int bp_thread_index(void);

/* Per-thread scratch buffers, one per slot, so that nested users differ. */
typedef enum bp_scratch_slot {
    BP_SCRATCH_GEMM = 0, /* the GEMM driver's packed panels */
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
