/*
 * AVX2 element-wise kernels: softmax cross-entropy rows and column sums,
 * 8 floats at a time with masked loads and stores for the last columns,
 * so that a row of up to 16 classes is two vectors that stay in
 * registers from the load of its logits to the store of its gradient.
 */
#include "arch/dispatch.h"

#include <immintrin.h>
#include <math.h>

/* Columns of the wide pass of the column sums: 8 vectors of doubles. */
#define BP_SUM_WIDE 32

/* Rows of up to 16 classes taken through each phase together. */
#define BP_CE_ROWS 16

/*
 * e^x for x <= 0 in every lane: the steps of bp_exp_neg (kernels/exp.h),
 * with fused multiply-adds, so within the same 2 ulp. NaN stays NaN.
 */
static inline __m256 bp_exp_neg_avx2(__m256 x)
{
    const __m256 shifter = _mm256_set1_ps(12582912.0f); /* 1.5 * 2^23 */
    const __m256 low = _mm256_set1_ps(-87.0f);

    /* NOTE: max returns its second operand when either is NaN. */
    __m256 xc = _mm256_max_ps(low, x);
    __m256 t = _mm256_fmadd_ps(xc, _mm256_set1_ps(1.44269504088896341f),
                               shifter);
    __m256 n = _mm256_sub_ps(t, shifter);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);

    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));

    /* 2^n from the low bits of t, as in the scalar version. */
    __m256i bits = _mm256_add_epi32(_mm256_castps_si256(t),
                                    _mm256_set1_epi32(127 - 0x4b400000));
    __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(bits, 23));

    /* Lanes below -87 are 0; NaN is not below, so it passes. */
    __m256 below = _mm256_cmp_ps(x, low, _CMP_LT_OQ);
    return _mm256_andnot_ps(below, _mm256_mul_ps(p, scale));
}

/* The lanes of the first n columns (none for n <= 0, all for n >= 8). */
static inline __m256i bp_lanes(int64_t n)
{
    int count = n < 0 ? 0 : n > 8 ? 8 : (int)n;

    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline float bp_max8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v),
                          _mm256_extractf128_ps(v, 1));

    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

/* The 8 floats of e, widened and added pairwise: 4 doubles. */
static inline __m256d bp_widen_sum(__m256 e)
{
    return _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(e)),
                         _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
}

static inline double bp_sum4(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v),
                           _mm256_extractf128_pd(v, 1));

    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* v where `mask` is set, -infinity elsewhere. */
static inline __m256 bp_or_minus_inf(__m256 v, __m256i mask)
{
    return _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v,
                            _mm256_castsi256_ps(mask));
}

/*
 * Writes s (e * inv - onehot) for the lanes of `mask`, in double; `hot`
 * is the label's lane, outside [0, 8) when it is in another vector.
 */
static inline void bp_cross_entropy_grad8(float *g, __m256i mask, __m256 e,
                                          int64_t hot, __m256d inv,
                                          __m256d s)
{
    const __m256d one = _mm256_set1_pd(1.0);
    __m256d at = _mm256_set1_pd((double)hot);
    __m256d lo = _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(e)),
                               inv);
    __m256d hi = _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)),
                               inv);

    lo = _mm256_sub_pd(lo, _mm256_and_pd(one, _mm256_cmp_pd(
        _mm256_setr_pd(0, 1, 2, 3), at, _CMP_EQ_OQ)));
    hi = _mm256_sub_pd(hi, _mm256_and_pd(one, _mm256_cmp_pd(
        _mm256_setr_pd(4, 5, 6, 7), at, _CMP_EQ_OQ)));

    __m256 out = _mm256_set_m128(_mm256_cvtpd_ps(_mm256_mul_pd(s, hi)),
                                 _mm256_cvtpd_ps(_mm256_mul_pd(s, lo)));
    _mm256_maskstore_ps(g, mask, out);
}

/*
 * The shifted exponentials of a row of at most 16 logits, as two vectors
 * with the lanes of m0 and m1, into e[0] and e[1] (0 in the other lanes),
 * its maximum into *max; returns their sum.
 */
static inline double bp_exps16(__m256 e[2], float *max, const float *z,
                               __m256i m0, __m256i m1)
{
    __m256 v0 = _mm256_maskload_ps(z, m0);
    __m256 v1 = _mm256_maskload_ps(z + 8, m1);
    float m = bp_max8(_mm256_max_ps(bp_or_minus_inf(v0, m0),
                                    bp_or_minus_inf(v1, m1)));
    __m256 vm = _mm256_set1_ps(m);

    e[0] = _mm256_and_ps(_mm256_castsi256_ps(m0),
                         bp_exp_neg_avx2(_mm256_sub_ps(v0, vm)));
    e[1] = _mm256_and_ps(_mm256_castsi256_ps(m1),
                         bp_exp_neg_avx2(_mm256_sub_ps(v1, vm)));
    *max = m;
    return bp_sum4(_mm256_add_pd(bp_widen_sum(e[0]), bp_widen_sum(e[1])));
}

/*
 * The shifted exponentials of a row of more than 16 logits, in two
 * passes: the maximum, then the exponentials (kept in e when it is not
 * NULL) and their sum, which is returned.
 */
static double bp_exps_wide(float *e, float *max, const float *z,
                           int64_t cols)
{
    __m256 vmax = _mm256_set1_ps(-INFINITY);

    for (int64_t j = 0; j < cols; j += 8) {
        __m256i m = bp_lanes(cols - j);

        vmax = _mm256_max_ps(vmax,
                             bp_or_minus_inf(_mm256_maskload_ps(z + j, m), m));
    }
    *max = bp_max8(vmax);

    __m256 vm = _mm256_set1_ps(*max);
    __m256d acc = _mm256_setzero_pd();

    for (int64_t j = 0; j < cols; j += 8) {
        __m256i m = bp_lanes(cols - j);
        __m256 ej = _mm256_and_ps(
            _mm256_castsi256_ps(m),
            bp_exp_neg_avx2(_mm256_sub_ps(_mm256_maskload_ps(z + j, m), vm)));

        if (e != NULL)
            _mm256_maskstore_ps(e + j, m, ej);
        acc = _mm256_add_pd(acc, bp_widen_sum(ej));
    }
    return bp_sum4(acc);
}

double bp_shifted_exps_avx2(float *e, float *max, const float *z,
                            int64_t cols)
{
    if (cols > 16)
        return bp_exps_wide(e, max, z, cols);

    __m256i m0 = bp_lanes(cols), m1 = bp_lanes(cols - 8);
    __m256 v[2];
    double sum = bp_exps16(v, max, z, m0, m1);

    if (e != NULL) {
        _mm256_maskstore_ps(e, m0, v[0]);
        _mm256_maskstore_ps(e + 8, m1, v[1]);
    }
    return sum;
}

/*
 * Rows [0, n) of at most 16 logits each, as two vectors with the lanes
 * of m0 and m1, n <= BP_CE_ROWS. NOTE: in three phases rather than row
 * by row: the call to log would otherwise clobber the vector registers
 * in the middle of every row, and the division would wait at the end of
 * each row's long chain of dependent steps; this way the rows of a
 * phase overlap.
 */
static void bp_cross_entropy_rows16(float *grad, double *loss,
                                    const float *logits,
                                    const int32_t *labels,
                                    const float *weights, double scale,
                                    int64_t n, int64_t cols, __m256i m0,
                                    __m256i m1)
{
    __m256 e[BP_CE_ROWS][2];
    double sum[BP_CE_ROWS];
    float max[BP_CE_ROWS];

    for (int64_t i = 0; i < n; i++)
        sum[i] = bp_exps16(e[i], &max[i], logits + i * cols, m0, m1);

    for (int64_t i = 0; i < n; i++) {
        double w = weights != NULL ? (double)weights[i] : 1.0;

        loss[i] = (((double)max[i] - logits[i * cols + labels[i]]) +
                   log(sum[i])) * w;
    }

    if (grad == NULL)
        return;
    for (int64_t i = 0; i < n; i++) {
        double w = weights != NULL ? (double)weights[i] : 1.0;
        __m256d inv = _mm256_set1_pd(1.0 / sum[i]);
        __m256d s = _mm256_set1_pd(scale * w);
        float *g = grad + i * cols;

        bp_cross_entropy_grad8(g, m0, e[i][0], labels[i], inv, s);
        bp_cross_entropy_grad8(g + 8, m1, e[i][1], labels[i] - 8, inv, s);
    }
}

/* One row of more than 16 logits; the exponentials wait in g. */
static double bp_cross_entropy_row_wide(float *g, const float *z,
                                        int32_t label, double s, int64_t cols)
{
    float max;
    double sum = bp_exps_wide(g, &max, z, cols);

    if (g != NULL) {
        __m256d inv = _mm256_set1_pd(1.0 / sum), vs = _mm256_set1_pd(s);

        for (int64_t j = 0; j < cols; j += 8) {
            __m256i m = bp_lanes(cols - j);

            bp_cross_entropy_grad8(g + j, m, _mm256_maskload_ps(g + j, m),
                                   label - j, inv, vs);
        }
    }
    return ((double)max - z[label]) + log(sum);
}

void bp_cross_entropy_rows_avx2(float *grad, double *loss,
                                const float *logits, const int32_t *labels,
                                const float *weights, double scale,
                                int64_t rows, int64_t cols)
{
    if (cols <= 16) {
        for (int64_t i = 0; i < rows; i += BP_CE_ROWS) {
            int64_t n = rows - i < BP_CE_ROWS ? rows - i : BP_CE_ROWS;

            bp_cross_entropy_rows16(grad != NULL ? grad + i * cols : NULL,
                                    loss + i, logits + i * cols, labels + i,
                                    weights != NULL ? weights + i : NULL,
                                    scale, n, cols, bp_lanes(cols),
                                    bp_lanes(cols - 8));
        }
        return;
    }

    for (int64_t i = 0; i < rows; i++) {
        double w = weights != NULL ? (double)weights[i] : 1.0;
        float *g = grad != NULL ? grad + i * cols : NULL;

        loss[i] = bp_cross_entropy_row_wide(g, logits + i * cols, labels[i],
                                            scale * w, cols) * w;
    }
}

/* Adds the 8 floats of `mask` at x to two vectors of doubles. */
static inline void bp_add_widened(__m256d acc[2], const float *x,
                                  __m256i mask)
{
    __m256 v = _mm256_maskload_ps(x, mask);

    acc[0] = _mm256_add_pd(acc[0],
                           _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    acc[1] = _mm256_add_pd(acc[1],
                           _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

/* Rounds two vectors of doubles to the floats of `mask` at sums. */
static inline void bp_store_narrowed(float *sums, const __m256d acc[2],
                                     __m256i mask)
{
    __m256 out = _mm256_set_m128(_mm256_cvtpd_ps(acc[1]),
                                 _mm256_cvtpd_ps(acc[0]));

    _mm256_maskstore_ps(sums, mask, out);
}

void bp_column_sums_avx2(float *sums, const float *x, int64_t rows,
                         int64_t cols, int64_t ld)
{
    const __m256i all = _mm256_set1_epi32(-1);
    int64_t j0 = 0;

    /* Two cache lines of each row per pass over the rows, then 8. */
    for (; j0 + BP_SUM_WIDE <= cols; j0 += BP_SUM_WIDE) {
        __m256d acc[4][2];

        for (int k = 0; k < 4; k++)
            acc[k][0] = acc[k][1] = _mm256_setzero_pd();
        for (int64_t i = 0; i < rows; i++)
            for (int k = 0; k < 4; k++)
                bp_add_widened(acc[k], x + i * ld + j0 + 8 * k, all);
        for (int k = 0; k < 4; k++)
            bp_store_narrowed(sums + j0 + 8 * k, acc[k], all);
    }

    for (; j0 < cols; j0 += 8) {
        __m256i m = bp_lanes(cols - j0);
        __m256d acc[2] = {_mm256_setzero_pd(), _mm256_setzero_pd()};

        for (int64_t i = 0; i < rows; i++)
            bp_add_widened(acc, x + i * ld + j0, m);
        bp_store_narrowed(sums + j0, acc, m);
    }
}

/*
 * One SGD momentum step on the values w, grad and m of 8 parameters:
 * returns the new weights and sets *m to the new velocity.
 */
static inline __m256 bp_sgd_momentum8(__m256 w, __m256 grad, __m256 *m,
                                      __m256 lr, __m256 mu, __m256 decay,
                                      const int nesterov)
{
    __m256 g = _mm256_add_ps(grad, _mm256_mul_ps(decay, w));
    __m256 v = _mm256_add_ps(_mm256_mul_ps(mu, *m), g);
    __m256 step = nesterov ? _mm256_add_ps(g, _mm256_mul_ps(mu, v)) : v;

    *m = v;
    return _mm256_sub_ps(w, _mm256_mul_ps(lr, step));
}

/* The loop of bp_sgd_momentum_avx2 for a constant `nesterov`. */
static inline void bp_sgd_momentum_loop(float *w, float *m, const float *grad,
                                        float lr, float mu, float decay,
                                        const int nesterov, int64_t n)
{
    __m256 vlr = _mm256_set1_ps(lr), vmu = _mm256_set1_ps(mu);
    __m256 vd = _mm256_set1_ps(decay);
    int64_t i = 0;

    /* NOTE: masked loads and stores only for the tail: on some cores
       they cost more than plain ones. */
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(m + i);
        __m256 wi = bp_sgd_momentum8(_mm256_loadu_ps(w + i),
                                     _mm256_loadu_ps(grad + i), &v, vlr, vmu,
                                     vd, nesterov);

        _mm256_storeu_ps(m + i, v);
        _mm256_storeu_ps(w + i, wi);
    }
    if (i < n) {
        __m256i mask = bp_lanes(n - i);
        __m256 v = _mm256_maskload_ps(m + i, mask);
        __m256 wi = bp_sgd_momentum8(_mm256_maskload_ps(w + i, mask),
                                     _mm256_maskload_ps(grad + i, mask), &v,
                                     vlr, vmu, vd, nesterov);

        _mm256_maskstore_ps(m + i, mask, v);
        _mm256_maskstore_ps(w + i, mask, wi);
    }
}

void bp_sgd_momentum_avx2(float *w, float *m, const float *grad, float lr,
                          float mu, float decay, int nesterov, int64_t n)
{
    if (nesterov)
        bp_sgd_momentum_loop(w, m, grad, lr, mu, decay, 1, n);
    else
        bp_sgd_momentum_loop(w, m, grad, lr, mu, decay, 0, n);
}
