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
 * are. B must hold NR readable columns even when cols < NR.
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

typedef struct bp_kernels {
    bp_simd level;
    int gemm_mr;  /* rows of a micro-tile, <= BP_GEMM_MR_MAX */
    int gemm_nr;  /* columns of a micro-tile, <= BP_GEMM_NR_MAX */
    int gemm_kc;  /* depth of a packed block, <= BP_GEMM_KC_MAX */
    int gemm_mc;  /* rows of a packed A block (L2), a multiple of mr */
    int gemm_nc;  /* columns of a packed B block (L3), a multiple of nr */
    bp_gemm_micro_fn gemm_micro;
} bp_kernels;

/* The table of the current SIMD level; never NULL, static storage. */
const bp_kernels *bp_kernels_get(void);

/* Per-ISA tables, defined next to their micro-kernels. */
extern const bp_kernels bp_kernels_generic;
#if defined(BPROP_HAVE_X86_KERNELS)
extern const bp_kernels bp_kernels_avx2;
extern const bp_kernels bp_kernels_avx512;
#endif

#endif
