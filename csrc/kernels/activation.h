/* Internal element-wise activation helpers shared by the GEMM epilogue. */
#ifndef BP_KERNELS_ACTIVATION_H
#define BP_KERNELS_ACTIVATION_H

#include "bprop.h"

/*
 * x = act(x) in place on n contiguous values, for every activation but
 * softmax (which is per row; the caller applies it after the GEMM).
 * Single-threaded; callers split the work.
 */
void bp_activation_apply(float *x, int64_t n, bp_activation act);

#endif
