/*
 * Internal GEMM entry point with a fused epilogue, used by the dense
 * layer kernels. bp_sgemm is this with no bias and identity activation.
 */
#ifndef BP_KERNELS_GEMM_H
#define BP_KERNELS_GEMM_H

#include "bprop.h"

/*
 * C = act(alpha * op(A) @ op(B) + beta * C + bias), all row-major, with
 * shapes as in bp_sgemm.
 *   bias  N, added to every row (IN; NULL for none)
 *   act   an element-wise activation (not softmax or log_softmax),
 *         applied to each output tile while it is in registers or in L1
 *   act_param  its resolved parameter (bp_activation_param)
 * Arguments are trusted: the public wrappers validate them.
 */
void bp_gemm_fused(float *c, int64_t ldc, const float *a, int64_t lda,
                   const float *b, int64_t ldb, bp_trans trans_a,
                   bp_trans trans_b, float alpha, float beta,
                   const float *bias, bp_activation act, float act_param,
                   int64_t m, int64_t n, int64_t k);

#endif
