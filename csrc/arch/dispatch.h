/*
 * The kernel table: one entry per SIMD level, each holding that ISA's
 * micro-kernels and the block sizes the drivers in csrc/kernels use with
 * them. The table for the current level is chosen once, from CPUID and
 * the BPROP_SIMD environment variable, and can be switched with
 * bp_simd_set.
 */
#ifndef BP_ARCH_DISPATCH_H
#define BP_ARCH_DISPATCH_H

#include "bprop.h"

/* Upper bounds of the per-ISA sizes, for buffers sized at compile time. */
#define BP_GEMM_MR_MAX 16
#define BP_GEMM_NR_MAX 32
#define BP_GEMM_KC_MAX 512

/*
 * One register-blocked tile of C, for its first `rows` rows (1 to MR) and
 * `cols` columns (1 to NR); the others are neither read nor written:
 *   C = alpha * A @ B + beta * C (+ bias), then relu if `relu` is nonzero.
 * Every element is computed in the same order whatever `rows` and `cols`
 * are. B must hold NR readable columns even when cols < NR, unless the
 * table's gemm_b_cols_only is set.
 *   a     element (i, p) of the tile's rows of A at a[i * a_rs + p * a_cs]:
 *         a packed panel (a_rs = 1, a_cs = MR) or A in place
 *   b     kc x NR: for each p in [0, kc), NR values of row p at b + p * ldb
 *         (ldb = NR for a packed panel; ldb >= NR reads B in place)
 *   c     rows x cols, leading dimension ldc (OUT; IN only if beta != 0)
 *   bias  cols values added to every row (IN; NULL for none)
 * With beta == 0, C is not read. kc may be 0 (then A and B are unused).
 */
typedef void (*bp_gemm_micro_fn)(float *c, int64_t ldc, const float *a,
                                 int64_t a_rs, int64_t a_cs,
                                 const float *b, int64_t ldb, float alpha,
                                 float beta, const float *bias, int relu,
                                 int64_t kc, int rows, int cols);

/*
 * The shifted exponentials of one row of logits: e[j] = e^(z[j] - max)
 * for the row's maximum, which goes to *max; returns their sum, in
 * double. These are the values and the sum that cross_entropy_rows
 * takes for the row, bit for bit.
 *   e  cols  (OUT; NULL to keep none)     z  cols  (IN)
 */
typedef double (*bp_shifted_exps_fn)(float *e, float *max, const float *z,
                                     int64_t cols);

/*
 * Softmax cross-entropy of `rows` rows of `cols` logits against integer
 * labels. Row i's loss, w_i (logsumexp(z_i) - z_i[label_i]), goes to
 * loss[i]; with a gradient, row i of grad becomes
 * scale w_i (softmax(z_i) - onehot(label_i)). Exponentials are taken in
 * float (within 2 ulp of e^x, as bp_exp_neg), the exponentials' sum and
 * everything after it in double. The loss does not depend on whether a
 * gradient is asked for, nor a row on the rows around it.
 *   grad     rows x cols  (OUT; NULL for none)
 *   loss     rows  (OUT)
 *   logits   rows x cols  (IN)
 *   labels   rows, each in [0, cols)  (IN)
 *   weights  rows  (IN; NULL for all 1)
 */
typedef void (*bp_cross_entropy_rows_fn)(float *grad, double *loss,
                                         const float *logits,
                                         const int32_t *labels,
                                         const float *weights, double scale,
                                         int64_t rows, int64_t cols);

/*
 * Column sums of a rows x cols block of a matrix with leading dimension
 * ld, each column summed row by row, in order, in double, then rounded:
 * every SIMD level gives the same bits.
 *   sums  cols  (OUT)      x  rows x cols, leading dimension ld  (IN)
 */
typedef void (*bp_column_sums_fn)(float *sums, const float *x, int64_t rows,
                                  int64_t cols, int64_t ld);

/*
 * One SGD step with (Nesterov, when `nesterov` is nonzero) momentum, in
 * PyTorch's convention, without clipping: g = grad + decay w,
 * m = mu m + g, then w -= lr m (or lr (g + mu m)). Each product and sum
 * is rounded on its own, never fused, so every SIMD level gives the
 * same bits.
 *   w  n  (IN/OUT)     m  n  (IN/OUT)     grad  n  (IN)
 */
typedef void (*bp_sgd_momentum_fn)(float *w, float *m, const float *grad,
                                   float lr, float mu, float decay,
                                   int nesterov, int64_t n);

typedef struct bp_kernels {
    bp_simd level;
    int gemm_mr;  /* rows of a micro-tile, <= BP_GEMM_MR_MAX */
    int gemm_nr;  /* columns of a micro-tile, <= BP_GEMM_NR_MAX */
    int gemm_kc;  /* depth of a packed block, <= BP_GEMM_KC_MAX */
    int gemm_mc;  /* rows of a packed A block (L2), a multiple of mr */
    int gemm_nc;  /* columns of a packed B block (L3), a multiple of nr */
    int gemm_b_cols_only;  /* nonzero: the micro-kernel reads no column of
                              B past `cols`, so an edge panel of B can be
                              read in place */
    bp_gemm_micro_fn gemm_micro;
    bp_shifted_exps_fn shifted_exps;
    bp_cross_entropy_rows_fn cross_entropy_rows;
    bp_column_sums_fn column_sums;
    bp_sgd_momentum_fn sgd_momentum;
} bp_kernels;

/* The table of the current SIMD level; never NULL, static storage. */
const bp_kernels *bp_kernels_get(void);

/* Per-ISA tables, defined next to their GEMM micro-kernels. */
extern const bp_kernels bp_kernels_generic;
#if defined(BPROP_HAVE_X86_KERNELS)
extern const bp_kernels bp_kernels_avx2;
extern const bp_kernels bp_kernels_avx512;
#endif

/* The element-wise kernels of each table, one file per ISA beside it. */
double bp_shifted_exps_generic(float *e, float *max, const float *z,
                               int64_t cols);
void bp_cross_entropy_rows_generic(float *grad, double *loss,
                                   const float *logits, const int32_t *labels,
                                   const float *weights, double scale,
                                   int64_t rows, int64_t cols);
void bp_column_sums_generic(float *sums, const float *x, int64_t rows,
                            int64_t cols, int64_t ld);
void bp_sgd_momentum_generic(float *w, float *m, const float *grad, float lr,
                             float mu, float decay, int nesterov, int64_t n);
#if defined(BPROP_HAVE_X86_KERNELS)
double bp_shifted_exps_avx2(float *e, float *max, const float *z,
                            int64_t cols);
void bp_cross_entropy_rows_avx2(float *grad, double *loss,
                                const float *logits, const int32_t *labels,
                                const float *weights, double scale,
                                int64_t rows, int64_t cols);
void bp_column_sums_avx2(float *sums, const float *x, int64_t rows,
                         int64_t cols, int64_t ld);
void bp_sgd_momentum_avx2(float *w, float *m, const float *grad, float lr,
                          float mu, float decay, int nesterov, int64_t n);
double bp_shifted_exps_avx512(float *e, float *max, const float *z,
                              int64_t cols);
void bp_cross_entropy_rows_avx512(float *grad, double *loss,
                                  const float *logits,
                                  const int32_t *labels,
                                  const float *weights, double scale,
                                  int64_t rows, int64_t cols);
void bp_column_sums_avx512(float *sums, const float *x, int64_t rows,
                           int64_t cols, int64_t ld);
void bp_sgd_momentum_avx512(float *w, float *m, const float *grad, float lr,
                            float mu, float decay, int nesterov, int64_t n);
#endif

#endif
