/*
 * The GEMM driver: packed, blocked single-precision matrix multiply.
 *
 * Design decisions:
 * - Loops, outermost first: columns in blocks of NC (packed B, shared by
 *   all threads, sized for L3); depth in blocks of KC; rows in blocks of
 *   MC (packed A, one copy per thread, sized for L2); NR-wide panels of
 *   B; MR-high panels of A; then one micro-kernel call per MR x NR tile.
 * - Panels of B are zero-padded to whole tiles. The micro-kernel
 *   computes 1 to MR rows and 1 to NR columns of a tile, so an edge tile
 *   (or a GEMM of a single row) costs what its rows cost and is written
 *   in place, with masked stores.
 * - With few rows (inference on a handful of samples), whole panels of
 *   an untransposed B are read in place instead of packed, and so is
 *   the edge panel when the micro-kernel reads no column past the
 *   tile's. The kernel sees the same values in the same order, so
 *   results do not change.
 * - Threads split (row block x group of NR panels) units. The depth
 *   blocks depend on K and the ISA only, and every tile is computed by one
 *   kernel call per depth block, in order, so the result is bitwise the
 *   same for any thread count.
 * - Bias and activation are applied by the last depth block's epilogue,
 *   while the tile is in registers (relu) or in L1 (the other
 *   element-wise activations, through bp_activation_apply).
 * - Packed panels live in the calling thread's scratch, which only grows,
 *   so repeated calls allocate nothing.
 */
#include "kernels/gemm.h"

#include "arch/dispatch.h"
#include "core/check.h"
#include "core/error.h"
#include "core/threads.h"
#include "kernels/activation.h"

#include <string.h>

/* Float counts are rounded to cache lines so per-thread blocks never share. */
#define BP_FLOATS_PER_LINE 16

/* Up to this many rows of C, whole panels of B are not packed. */
#define BP_GEMM_DIRECT_ROWS 48

/* An operand of at most this many floats (32 KB) is never packed. */
#define BP_GEMM_DIRECT_FLOATS 8192

static int64_t bp_min64(int64_t x, int64_t y)
{
    return x < y ? x : y;
}

static int64_t bp_round_up(int64_t x, int64_t multiple)
{
    return (x + multiple - 1) / multiple * multiple;
}

/*
 * Packs rows [i0, i0 + mb) and depth [p0, p0 + kb) of op(A) into
 * ceil(mb / mr) panels, each kb x mr with the rows of a tile side by side.
 *   dst  ceil(mb / mr) * kb * mr, rows past mb set to zero  (OUT)
 *   a    op(A) is M x K: A is M x K (no), or K x M (yes)   (IN)
 */
static void bp_pack_a(float *dst, const float *a, int64_t lda, bp_trans ta,
                      int64_t i0, int64_t mb, int64_t p0, int64_t kb, int mr)
{
    for (int64_t ir = 0; ir < mb; ir += mr) {
        int64_t rows = bp_min64(mr, mb - ir);
        float *d = dst + ir * kb;

        if (ta == BP_TRANS_NO) {
            for (int64_t i = 0; i < rows; i++) {
                const float *src = a + (i0 + ir + i) * lda + p0;

                for (int64_t p = 0; p < kb; p++)
                    d[p * mr + i] = src[p];
            }
        } else {
            for (int64_t p = 0; p < kb; p++) {
                const float *src = a + (p0 + p) * lda + i0 + ir;

                for (int64_t i = 0; i < rows; i++)
                    d[p * mr + i] = src[i];
            }
        }

        if (rows < mr)
            for (int64_t p = 0; p < kb; p++)
                for (int64_t i = rows; i < mr; i++)
                    d[p * mr + i] = 0.0f;
    }
}

/*
 * Packs depth [p0, p0 + kb) and columns [j0, j0 + cols) of op(B), with
 * cols <= nr, into one panel.
 *   dst  kb x nr, columns past cols set to zero  (OUT)
 *   b    op(B) is K x N: B is K x N (no), or N x K (yes)  (IN)
 */
static void bp_pack_b_panel(float *dst, const float *b, int64_t ldb,
                            bp_trans tb, int64_t p0, int64_t kb, int64_t j0,
                            int64_t cols, int nr)
{
    if (tb == BP_TRANS_NO) {
        for (int64_t p = 0; p < kb; p++) {
            const float *src = b + (p0 + p) * ldb + j0;
            float *d = dst + p * nr;

            for (int64_t j = 0; j < cols; j++)
                d[j] = src[j];
            for (int64_t j = cols; j < nr; j++)
                d[j] = 0.0f;
        }
        return;
    }

    for (int64_t j = 0; j < cols; j++) {
        const float *src = b + (j0 + j) * ldb + p0;

        for (int64_t p = 0; p < kb; p++)
            dst[p * nr + j] = src[p];
    }
    if (cols < nr)
        for (int64_t p = 0; p < kb; p++)
            for (int64_t j = cols; j < nr; j++)
                dst[p * nr + j] = 0.0f;
}

/* Where a tile's rows of A are: element (i, p) at at[i * rs + p * cs]. */
typedef struct bp_a_view {
    const float *at;
    int64_t rs, cs;
} bp_a_view;

/*
 * One tile of C, then the activations that are not done in registers.
 *   c     rows x cols, leading dimension ldc, rows <= mr, cols <= nr
 *   a     rows x kb (see bp_a_view)     bp  kb x nr, rows ldb apart
 *   bias  cols values, or NULL
 */
static void bp_gemm_tile(const bp_kernels *kt, float *c, int64_t ldc,
                         bp_a_view a, const float *bp, int64_t ldb,
                         float alpha, float beta, const float *bias,
                         bp_activation act, float act_param, int64_t rows,
                         int64_t cols, int64_t kb)
{
    int relu = act == BP_ACTIVATION_RELU;

    kt->gemm_micro(c, ldc, a.at, a.rs, a.cs, bp, ldb, alpha, beta, bias, relu,
                   kb, (int)rows, (int)cols);

    /* Tile by tile, so how the activation splits its input never depends
       on the thread count. */
    if (!relu && act != BP_ACTIVATION_IDENTITY)
        for (int64_t i = 0; i < rows; i++)
            bp_activation_apply(c + i * ldc, cols, act, act_param);
}

/* C = act(beta * C + bias), for K == 0 or alpha == 0; C is M x N. */
static void bp_gemm_scale(float *c, int64_t ldc, float beta,
                          const float *bias, bp_activation act,
                          float act_param, int64_t m, int64_t n)
{
    for (int64_t i = 0; i < m; i++) {
        float *ci = c + i * ldc;

        for (int64_t j = 0; j < n; j++) {
            float v = beta != 0.0f ? beta * ci[j] : 0.0f;

            if (bias != NULL)
                v += bias[j];
            if (act == BP_ACTIVATION_RELU && v < 0.0f)
                v = 0.0f;
            ci[j] = v;
        }
        if (act != BP_ACTIVATION_RELU && act != BP_ACTIVATION_IDENTITY)
            bp_activation_apply(ci, n, act, act_param);
    }
}

/* Everything the threads of one GEMM share. */
typedef struct bp_gemm_plan {
    const bp_kernels *kt;
    float *c;
    int64_t ldc;
    const float *a;
    int64_t lda;
    const float *b;
    int64_t ldb;
    bp_trans ta, tb;
    float alpha, beta;
    const float *bias;
    bp_activation act;
    float act_param;
    int64_t m, n, k;
    int64_t kc, mc, nc; /* block sizes for this call */
    int a_direct;       /* A is read in place, never packed */
    int b_direct;       /* whole panels of B are read in place */
    int threads;
    float *b_pack;      /* kc x nc, shared */
    float *a_pack;      /* threads blocks of mc x kc */
    int64_t a_stride;   /* floats from one thread's A block to the next */
} bp_gemm_plan;

/* The tiles of one unit: rows [ic, ic + mb), panels [jp0, jp1). */
static void bp_gemm_unit(const bp_gemm_plan *g, const float *a_pack,
                         int64_t ic, int64_t mb, int64_t jc, int64_t nb,
                         int64_t jp0, int64_t jp1, int64_t pc, int64_t kb)
{
    const bp_kernels *kt = g->kt;
    int last = pc + kb == g->k;
    float beta = pc == 0 ? g->beta : 1.0f;
    bp_activation act = last ? g->act : BP_ACTIVATION_IDENTITY;
    int64_t mr = kt->gemm_mr, nr = kt->gemm_nr;

    for (int64_t jp = jp0; jp < jp1; jp++) {
        int64_t j = jc + jp * nr;
        int64_t cols = bp_min64(nr, nb - jp * nr);
        int direct = g->b_direct && (cols == nr || kt->gemm_b_cols_only);
        const float *bp = direct ? g->b + pc * g->ldb + j
                                 : g->b_pack + jp * nr * kb;
        int64_t ldb = direct ? g->ldb : nr;
        const float *bias = last && g->bias != NULL ? g->bias + j : NULL;

        for (int64_t ir = 0; ir < mb; ir += mr) {
            bp_a_view a;

            if (g->a_direct && g->ta == BP_TRANS_NO)
                a = (bp_a_view){g->a + (ic + ir) * g->lda + pc, g->lda, 1};
            else if (g->a_direct)
                a = (bp_a_view){g->a + pc * g->lda + ic + ir, 1, g->lda};
            else
                a = (bp_a_view){a_pack + ir * kb, 1, mr};
            bp_gemm_tile(kt, g->c + (ic + ir) * g->ldc + j, g->ldc, a, bp,
                         ldb, g->alpha, beta, bias, act, g->act_param,
                         bp_min64(mr, mb - ir), cols, kb);
        }
    }
}

/* The body every thread of the parallel region runs. */
static void bp_gemm_run(const bp_gemm_plan *g)
{
    const bp_kernels *kt = g->kt;
    int64_t nr = kt->gemm_nr;
    float *a_pack = g->a_pack + bp_thread_index() * g->a_stride;

    for (int64_t jc = 0; jc < g->n; jc += g->nc) {
        int64_t nb = bp_min64(g->nc, g->n - jc);
        int64_t panels = (nb + nr - 1) / nr;

        /* Enough units for an even split; one A block per unit row. */
        int64_t n_ic = (g->m + g->mc - 1) / g->mc;
        int64_t groups = 1;
        if (g->threads > 1)
            groups = bp_min64(panels, (8 * g->threads + n_ic - 1) / n_ic);
        int64_t per_group = (panels + groups - 1) / groups;
        groups = (panels + per_group - 1) / per_group;

        /* With a single row block every thread would pack the same A,
           so the threads pack it together, beside B. */
        int shared_a = g->threads > 1 && n_ic == 1 && !g->a_direct;
        int64_t a_panels = shared_a ? (g->m + kt->gemm_mr - 1) / kt->gemm_mr
                                    : 0;

        for (int64_t pc = 0; pc < g->k; pc += g->kc) {
            int64_t kb = bp_min64(g->kc, g->k - pc);
            int own_a = !shared_a && !g->a_direct;
            int64_t packed_ic = -1;

#pragma omp for schedule(static)
            for (int64_t item = 0; item < panels + a_panels; item++) {
                if (item >= panels) {
                    int64_t i = (item - panels) * kt->gemm_mr;

                    bp_pack_a(g->a_pack + i * kb, g->a, g->lda, g->ta, i,
                              bp_min64(kt->gemm_mr, g->m - i), pc, kb,
                              kt->gemm_mr);
                    continue;
                }

                int64_t cols = bp_min64(nr, nb - item * nr);
                if (!g->b_direct || (cols < nr && !kt->gemm_b_cols_only))
                    bp_pack_b_panel(g->b_pack + item * nr * kb, g->b, g->ldb,
                                    g->tb, pc, kb, jc + item * nr, cols,
                                    (int)nr);
            }

            /* Units are ordered by row block, so a thread's static share
               reuses its packed A block. */
#pragma omp for schedule(static)
            for (int64_t u = 0; u < n_ic * groups; u++) {
                int64_t ic = u / groups * g->mc;
                int64_t mb = bp_min64(g->mc, g->m - ic);
                int64_t jp0 = u % groups * per_group;

                if (own_a && ic != packed_ic) {
                    bp_pack_a(a_pack, g->a, g->lda, g->ta, ic, mb, pc, kb,
                              kt->gemm_mr);
                    packed_ic = ic;
                }
                bp_gemm_unit(g, shared_a ? g->a_pack : a_pack, ic, mb, jc,
                             nb, jp0, bp_min64(panels, jp0 + per_group), pc,
                             kb);
            }
        }
    }
}

/*
 * bp_gemm_run for one thread when neither A nor any panel of B is
 * packed: the same units in the same order, without the scratch and the
 * worksharing loops, whose calls cost as much as the tiles of a small
 * layer.
 */
static void bp_gemm_run_direct(const bp_gemm_plan *g)
{
    for (int64_t jc = 0; jc < g->n; jc += g->nc) {
        int64_t nb = bp_min64(g->nc, g->n - jc);
        int64_t panels = (nb + g->kt->gemm_nr - 1) / g->kt->gemm_nr;

        for (int64_t pc = 0; pc < g->k; pc += g->kc)
            for (int64_t ic = 0; ic < g->m; ic += g->mc)
                bp_gemm_unit(g, NULL, ic, bp_min64(g->mc, g->m - ic), jc, nb,
                             0, panels, pc, bp_min64(g->kc, g->k - pc));
    }
}

/*
 * NOTE: used only when the scratch cannot grow. One thread, one tile at
 * a time, with panels on the stack; the depth blocks and kernel are the
 * ones bp_gemm_run uses, so the result is bitwise the same, only slower.
 */
static void bp_gemm_run_on_stack(const bp_gemm_plan *g)
{
    _Alignas(64) float a_panel[BP_GEMM_MR_MAX * BP_GEMM_KC_MAX];
    _Alignas(64) float b_panel[BP_GEMM_KC_MAX * BP_GEMM_NR_MAX];
    const bp_kernels *kt = g->kt;
    int64_t mr = kt->gemm_mr, nr = kt->gemm_nr;
    bp_gemm_plan one = *g;

    one.b_pack = b_panel;
    one.a_direct = 0;
    one.b_direct = 0;
    for (int64_t j = 0; j < g->n; j += nr) {
        int64_t cols = bp_min64(nr, g->n - j);

        for (int64_t pc = 0; pc < g->k; pc += g->kc) {
            int64_t kb = bp_min64(g->kc, g->k - pc);

            bp_pack_b_panel(b_panel, g->b, g->ldb, g->tb, pc, kb, j, cols,
                            (int)nr);
            for (int64_t i = 0; i < g->m; i += mr) {
                int64_t rows = bp_min64(mr, g->m - i);

                bp_pack_a(a_panel, g->a, g->lda, g->ta, i, rows, pc, kb,
                          (int)mr);
                bp_gemm_unit(&one, a_panel, i, rows, j, cols, 0, 1, pc, kb);
            }
        }
    }
}

void bp_gemm_fused(float *c, int64_t ldc, const float *a, int64_t lda,
                   const float *b, int64_t ldb, bp_trans trans_a,
                   bp_trans trans_b, float alpha, float beta,
                   const float *bias, bp_activation act, float act_param,
                   int64_t m, int64_t n, int64_t k)
{
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0 || alpha == 0.0f) {
        bp_gemm_scale(c, ldc, beta, bias, act, act_param, m, n);
        return;
    }

    const bp_kernels *kt = bp_kernels_get();
    bp_gemm_plan g = {
        .kt = kt, .c = c, .ldc = ldc, .a = a, .lda = lda, .b = b,
        .ldb = ldb, .ta = trans_a, .tb = trans_b, .alpha = alpha,
        .beta = beta, .bias = bias, .act = act, .act_param = act_param,
        .m = m, .n = n, .k = k,
    };

    /* Equal depth blocks, chosen from K alone (see the design notes). */
    int64_t k_blocks = (k + kt->gemm_kc - 1) / kt->gemm_kc;
    g.kc = (k + k_blocks - 1) / k_blocks;
    /* Row blocks of near-equal height, so no thread gets a thin last one. */
    int64_t m_blocks = (m + kt->gemm_mc - 1) / kt->gemm_mc;
    g.mc = bp_round_up((m + m_blocks - 1) / m_blocks, kt->gemm_mr);
    g.nc = bp_min64(kt->gemm_nc, bp_round_up(n, kt->gemm_nr));
    /* NOTE: an operand that is small (it stays in L1 anyway) or read only
       a few times costs more to copy than its contiguity saves. */
    g.a_direct = (double)m * k <= BP_GEMM_DIRECT_FLOATS ||
                 n <= kt->gemm_nr;
    g.b_direct = trans_b == BP_TRANS_NO &&
                 (m <= BP_GEMM_DIRECT_ROWS ||
                  (double)k * n <= BP_GEMM_DIRECT_FLOATS);
    g.threads = bp_threads_for(2.0 * (double)m * (double)n * (double)k);
    if (g.threads == 1 && g.a_direct && g.b_direct &&
        (n % kt->gemm_nr == 0 || kt->gemm_b_cols_only)) {
        bp_gemm_run_direct(&g);
        return;
    }

    int64_t b_floats = bp_round_up(g.kc * g.nc, BP_FLOATS_PER_LINE);
    g.a_stride = bp_round_up(g.mc * g.kc, BP_FLOATS_PER_LINE);
    float *scratch = bp_scratch(
        BP_SCRATCH_GEMM,
        (size_t)(b_floats + g.threads * g.a_stride) * sizeof(float));
    if (scratch == NULL) {
        bp_gemm_run_on_stack(&g);
        return;
    }
    g.b_pack = scratch;
    g.a_pack = scratch + b_floats;

    /* NOTE: not `if (threads > 1)`: a serial OpenMP region still costs
       about a microsecond; the worksharing loops run serially outside. */
    if (g.threads > 1) {
#pragma omp parallel num_threads(g.threads)
        bp_gemm_run(&g);
    } else {
        bp_gemm_run(&g);
    }
}

static const char *bp_trans_name(bp_trans t)
{
    return t == BP_TRANS_NO ? "no" : "yes";
}

bp_status bp_sgemm(float *c, int64_t ldc, const float *a, int64_t lda,
                   const float *b, int64_t ldb, bp_trans trans_a,
                   bp_trans trans_b, float alpha, float beta, int64_t m,
                   int64_t n, int64_t k)
{
    static const char fn[] = "bp_sgemm";

    BP_REQUIRE_SIZE(fn, m);
    BP_REQUIRE_SIZE(fn, n);
    BP_REQUIRE_SIZE(fn, k);
    if (trans_a != BP_TRANS_NO && trans_a != BP_TRANS_YES)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'trans_a' is %d; it must be "
                       "BP_TRANS_NO or BP_TRANS_YES", fn, (int)trans_a);
    if (trans_b != BP_TRANS_NO && trans_b != BP_TRANS_YES)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'trans_b' is %d; it must be "
                       "BP_TRANS_NO or BP_TRANS_YES", fn, (int)trans_b);

    /* Row-major: a leading dimension covers the stored row length. */
    int64_t a_cols = trans_a == BP_TRANS_NO ? k : m;
    int64_t b_cols = trans_b == BP_TRANS_NO ? n : k;
    if (ldc < n)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'ldc' is %lld; it must be >= n = %lld",
                       fn, (long long)ldc, (long long)n);
    if (lda < a_cols)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'lda' is %lld; with trans_a = %s it "
                       "must be >= %s = %lld", fn, (long long)lda,
                       bp_trans_name(trans_a),
                       trans_a == BP_TRANS_NO ? "k" : "m",
                       (long long)a_cols);
    if (ldb < b_cols)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'ldb' is %lld; with trans_b = %s it "
                       "must be >= %s = %lld", fn, (long long)ldb,
                       bp_trans_name(trans_b),
                       trans_b == BP_TRANS_NO ? "n" : "k",
                       (long long)b_cols);

    /* Every buffer must be addressable: rows x leading dimension. */
    BP_TRY(bp_check_shape(fn, "m", m, "ldc", ldc));
    BP_TRY(bp_check_shape(fn, trans_a == BP_TRANS_NO ? "m" : "k",
                          trans_a == BP_TRANS_NO ? m : k, "lda", lda));
    BP_TRY(bp_check_shape(fn, trans_b == BP_TRANS_NO ? "k" : "n",
                          trans_b == BP_TRANS_NO ? k : n, "ldb", ldb));

    /* A buffer may be NULL only when it holds no elements. */
    if (m > 0 && n > 0)
        BP_REQUIRE_PTR(fn, c);
    if (m > 0 && k > 0)
        BP_REQUIRE_PTR(fn, a);
    if (k > 0 && n > 0)
        BP_REQUIRE_PTR(fn, b);

    bp_gemm_fused(c, ldc, a, lda, b, ldb, trans_a, trans_b, alpha, beta,
                  NULL, BP_ACTIVATION_IDENTITY, 0.0f, m, n, k);
    return BP_STATUS_OK;
}
