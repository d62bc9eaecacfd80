/* Internal element-wise activation helpers shared by the GEMM epilogue. */
#ifndef BP_KERNELS_ACTIVATION_H
#define BP_KERNELS_ACTIVATION_H

#include "bprop.h"

/*
 * x = act(x) in place on n contiguous values, for every activation but
 * the per-row ones (softmax, log_softmax; the caller applies those after
 * the GEMM). `param` is the resolved parameter (bp_activation_param).
 * Single-threaded; callers split the work.
 */
void bp_activation_apply(float *x, int64_t n, bp_activation act,
                         float param);

/* Nonzero for softmax and log_softmax, which work on whole rows. */
int bp_activation_per_row(bp_activation act);

/*
 * Checks that act is known and param valid for it, and writes the
 * parameter to use (defaults resolved) to *resolved; the message names
 * `fn`.
 */
bp_status bp_activation_check(const char *fn, bp_activation act, float param,
                              float *resolved);

#endif
