/*
 * AVX-512 element-wise kernels: softmax cross-entropy rows and column
 * sums, 16 floats at a time with masked loads and stores for the last
 * columns, so that a row of up to 16 classes is a single vector that
 * stays in a register from the load of its logits to the store of its
 * gradient.
 */
#include "arch/dispatch.h"

#include <immintrin.h>
#include <math.h>

/* Columns of the wide pass of the column sums: 8 vectors of doubles. */
#define BP_SUM_WIDE 64

/* Rows of up to 16 classes taken through each phase together. */
#define BP_CE_ROWS 16

/*
 * e^x for x <= 0 in every lane: the steps of bp_exp_neg (kernels/exp.h),
 * with fused multiply-adds, so within the same 2 ulp. NaN stays NaN.
 */
static inline __m512 bp_exp_neg_avx512(__m512 x)
{
    const __m512 shifter = _mm512_set1_ps(12582912.0f); /* 1.5 * 2^23 */
    const __m512 low = _mm512_set1_ps(-87.0f);

    /* NOTE: max returns its second operand when either is NaN. */
    __m512 xc = _mm512_max_ps(low, x);
    __m512 t = _mm512_fmadd_ps(xc, _mm512_set1_ps(1.44269504088896341f),
                               shifter);
    __m512 n = _mm512_sub_ps(t, shifter);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);

    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));

    /* 2^n from the low bits of t, as in the scalar version. */
    __m512i bits = _mm512_add_epi32(_mm512_castps_si512(t),
                                    _mm512_set1_epi32(127 - 0x4b400000));
    __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(bits, 23));

    /* Lanes below -87 are 0; NaN is not below, so it passes. */
    __mmask16 keep = _mm512_cmp_ps_mask(x, low, _CMP_NLT_UQ);
    return _mm512_maskz_mul_ps(keep, p, scale);
}

/*
 * ln x in every lane, in double, for finite x > 0 (NaN stays NaN),
 * within a few ulp: x = 2^k m with m in [sqrt(1/2), sqrt(2)), and
 * ln m = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...) for s = (m - 1) /
 * (m + 1), |s| < 0.172, where the terms past s^23/23 are below 2^-58 of
 * the first.
 */
static inline __m512d bp_log_avx512(__m512d x)
{
    const double ln2_hi = 6.93147180369123816490e-01;
    const double ln2_lo = 1.90821492927058770002e-10;
    __m512d m = _mm512_getmant_pd(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
    __m512d k = _mm512_getexp_pd(x);
    __mmask8 big = _mm512_cmp_pd_mask(m, _mm512_set1_pd(1.4142135623730951),
                                      _CMP_GT_OQ);

    m = _mm512_mask_mul_pd(m, big, m, _mm512_set1_pd(0.5));
    k = _mm512_mask_add_pd(k, big, k, _mm512_set1_pd(1.0));

    __m512d one = _mm512_set1_pd(1.0);
    __m512d s = _mm512_div_pd(_mm512_sub_pd(m, one), _mm512_add_pd(m, one));
    __m512d t = _mm512_mul_pd(s, s);
    __m512d p = _mm512_set1_pd(1.0 / 23);

    for (int n = 21; n >= 3; n -= 2)
        p = _mm512_fmadd_pd(p, t, _mm512_set1_pd(1.0 / n));

    __m512d r = _mm512_add_pd(s, s);
    __m512d ln_m = _mm512_fmadd_pd(r, _mm512_mul_pd(t, p), r);

    return _mm512_fmadd_pd(k, _mm512_set1_pd(ln2_hi),
                           _mm512_fmadd_pd(k, _mm512_set1_pd(ln2_lo), ln_m));
}

/* The sum of 16 floats in double, in a fixed order. */
static inline __m512d bp_widen_sum(__m512 e)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(e));
    __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1));

    return _mm512_add_pd(lo, hi);
}

/*
 * Writes s (e * inv - onehot) for the lanes of `mask`, where `hot`
 * selects the label's lane (if it is in this vector), in double.
 */
static inline void bp_cross_entropy_grad16(float *g, __mmask16 mask, __m512 e,
                                           __mmask16 hot, __m512d inv,
                                           __m512d s)
{
    const __m512d one = _mm512_set1_pd(1.0);
    __m512d lo = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(e)),
                               inv);
    __m512d hi = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)),
                               inv);

    lo = _mm512_mul_pd(s, _mm512_mask_sub_pd(lo, (__mmask8)hot, lo, one));
    hi = _mm512_mul_pd(s, _mm512_mask_sub_pd(hi, (__mmask8)(hot >> 8), hi,
                                             one));

    __m512 out = _mm512_insertf32x8(
        _mm512_castps256_ps512(_mm512_cvtpd_ps(lo)), _mm512_cvtpd_ps(hi), 1);
    _mm512_mask_storeu_ps(g, mask, out);
}

/* The lanes of the first n (<= 16) columns. */
static inline __mmask16 bp_lanes(int64_t n)
{
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/*
 * The shifted exponentials of a row of at most 16 logits, the lanes of
 * `mask`, into *e (0 in the other lanes), its maximum into *max; returns
 * their sum.
 */
static inline double bp_exps16(__m512 *e, float *max, const float *z,
                               __mmask16 mask)
{
    __m512 v = _mm512_maskz_loadu_ps(mask, z);
    float m = _mm512_mask_reduce_max_ps(mask, v);

    *e = _mm512_maskz_mov_ps(
        mask, bp_exp_neg_avx512(_mm512_sub_ps(v, _mm512_set1_ps(m))));
    *max = m;
    return _mm512_reduce_add_pd(bp_widen_sum(*e));
}

/*
 * The shifted exponentials of a row of more than 16 logits, in two
 * passes: the maximum, then the exponentials (kept in e when it is not
 * NULL) and their sum, which is returned.
 */
static double bp_exps_wide(float *e, float *max, const float *z,
                           int64_t cols)
{
    __m512 vmax = _mm512_set1_ps(-INFINITY);

    for (int64_t j = 0; j < cols; j += 16) {
        __mmask16 m = bp_lanes(cols - j);

        vmax = _mm512_mask_max_ps(vmax, m, vmax,
                                  _mm512_maskz_loadu_ps(m, z + j));
    }

    *max = _mm512_reduce_max_ps(vmax);

    __m512 vm = _mm512_set1_ps(*max);
    __m512d acc = _mm512_setzero_pd();

    for (int64_t j = 0; j < cols; j += 16) {
        __mmask16 m = bp_lanes(cols - j);
        __m512 ej = _mm512_maskz_mov_ps(
            m, bp_exp_neg_avx512(
                   _mm512_sub_ps(_mm512_maskz_loadu_ps(m, z + j), vm)));

        if (e != NULL)
            _mm512_mask_storeu_ps(e + j, m, ej);
        acc = _mm512_add_pd(acc, bp_widen_sum(ej));
    }
    return _mm512_reduce_add_pd(acc);
}

double bp_shifted_exps_avx512(float *e, float *max, const float *z,
                              int64_t cols)
{
    if (cols > 16)
        return bp_exps_wide(e, max, z, cols);

    __mmask16 mask = bp_lanes(cols);
    __m512 v;
    double sum = bp_exps16(&v, max, z, mask);

    if (e != NULL)
        _mm512_mask_storeu_ps(e, mask, v);
    return sum;
}

/*
 * Rows [0, n) of at most 16 logits each, the lanes of `mask`, n <=
 * BP_CE_ROWS. NOTE: in three phases rather than row by row, so that the
 * rows of a phase overlap instead of each waiting at the end of the
 * long chain of dependent steps of the row before, and so that the
 * logarithms of all the rows' sums take two vectors. The exponentials
 * wait in whole vectors on the stack, not in the gradient: a masked
 * store does not forward to the load that reads it back.
 */
static void bp_cross_entropy_rows16(float *grad, double *loss,
                                    const float *logits,
                                    const int32_t *labels,
                                    const float *weights, double scale,
                                    int64_t n, int64_t cols, __mmask16 mask)
{
    __m512 e[BP_CE_ROWS];
    _Alignas(64) double sum[BP_CE_ROWS], log_sum[BP_CE_ROWS];
    float max[BP_CE_ROWS];

    for (int64_t i = 0; i < BP_CE_ROWS; i++)
        sum[i] = i < n ? bp_exps16(&e[i], &max[i], logits + i * cols, mask)
                       : 1.0;

    for (int i = 0; i < BP_CE_ROWS; i += 8)
        _mm512_store_pd(log_sum + i, bp_log_avx512(_mm512_load_pd(sum + i)));

    for (int64_t i = 0; i < n; i++) {
        double w = weights != NULL ? (double)weights[i] : 1.0;

        loss[i] = (((double)max[i] - logits[i * cols + labels[i]]) +
                   log_sum[i]) * w;
    }

    if (grad == NULL)
        return;
    for (int64_t i = 0; i < n; i++) {
        double w = weights != NULL ? (double)weights[i] : 1.0;

        bp_cross_entropy_grad16(grad + i * cols, mask, e[i],
                                (__mmask16)(1u << labels[i]),
                                _mm512_set1_pd(1.0 / sum[i]),
                                _mm512_set1_pd(scale * w));
    }
}

/* One row of more than 16 logits; the exponentials wait in g. */
static double bp_cross_entropy_row_wide(float *g, const float *z,
                                        int32_t label, double s, int64_t cols)
{
    float max;
    double sum = bp_exps_wide(g, &max, z, cols);

    if (g != NULL) {
        __m512d inv = _mm512_set1_pd(1.0 / sum), vs = _mm512_set1_pd(s);

        for (int64_t j = 0; j < cols; j += 16) {
            __mmask16 m = bp_lanes(cols - j);
            int64_t at = label - j;
            __mmask16 hot = at >= 0 && at < 16 ? (__mmask16)(1u << at) : 0;

            bp_cross_entropy_grad16(g + j, m, _mm512_maskz_loadu_ps(m, g + j),
                                    hot, inv, vs);
        }
    }
    return ((double)max - z[label]) + log(sum);
}

void bp_cross_entropy_rows_avx512(float *grad, double *loss,
                                  const float *logits,
                                  const int32_t *labels,
                                  const float *weights, double scale,
                                  int64_t rows, int64_t cols)
{
    if (cols <= 16) {
        for (int64_t i = 0; i < rows; i += BP_CE_ROWS) {
            int64_t n = rows - i < BP_CE_ROWS ? rows - i : BP_CE_ROWS;

            bp_cross_entropy_rows16(grad != NULL ? grad + i * cols : NULL,
                                    loss + i, logits + i * cols, labels + i,
                                    weights != NULL ? weights + i : NULL,
                                    scale, n, cols, bp_lanes(cols));
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

/* Adds the 16 floats of `mask` at x to two vectors of doubles. */
static inline void bp_add_widened(__m512d acc[2], const float *x,
                                  __mmask16 mask)
{
    __m512 v = _mm512_maskz_loadu_ps(mask, x);

    acc[0] = _mm512_add_pd(acc[0],
                           _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    acc[1] = _mm512_add_pd(acc[1],
                           _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
}

/* Rounds two vectors of doubles to the floats of `mask` at sums. */
static inline void bp_store_narrowed(float *sums, const __m512d acc[2],
                                     __mmask16 mask)
{
    __m512 out = _mm512_insertf32x8(
        _mm512_castps256_ps512(_mm512_cvtpd_ps(acc[0])),
        _mm512_cvtpd_ps(acc[1]), 1);

    _mm512_mask_storeu_ps(sums, mask, out);
}

void bp_column_sums_avx512(float *sums, const float *x, int64_t rows,
                           int64_t cols, int64_t ld)
{
    /* Up to four cache lines of each row per pass over the rows: the
       chunks' chains of additions then overlap. */
    for (int64_t j0 = 0; j0 < cols; j0 += BP_SUM_WIDE) {
        int64_t n = cols - j0 < BP_SUM_WIDE ? cols - j0 : BP_SUM_WIDE;
        __mmask16 m[4];
        __m512d acc[4][2];

        for (int k = 0; k < 4; k++) {
            m[k] = n > 16 * k ? bp_lanes(n - 16 * k) : 0;
            acc[k][0] = acc[k][1] = _mm512_setzero_pd();
        }
        for (int64_t i = 0; i < rows; i++)
            for (int k = 0; k < 4; k++)
                if (m[k] != 0)
                    bp_add_widened(acc[k], x + i * ld + j0 + 16 * k, m[k]);
        for (int k = 0; k < 4; k++)
            if (m[k] != 0)
                bp_store_narrowed(sums + j0 + 16 * k, acc[k], m[k]);
    }
}

/* Lanes `k` of one SGD momentum step at w, m and grad. */
static inline void bp_sgd_momentum16(float *w, float *m, const float *grad,
                                     __mmask16 k, __m512 lr, __m512 mu,
                                     __m512 decay, const int nesterov)
{
    __m512 wi = _mm512_maskz_loadu_ps(k, w);
    __m512 g = _mm512_add_ps(_mm512_maskz_loadu_ps(k, grad),
                             _mm512_mul_ps(decay, wi));
    __m512 v = _mm512_add_ps(_mm512_mul_ps(mu, _mm512_maskz_loadu_ps(k, m)),
                             g);
    __m512 step = nesterov ? _mm512_add_ps(g, _mm512_mul_ps(mu, v)) : v;

    _mm512_mask_storeu_ps(m, k, v);
    _mm512_mask_storeu_ps(w, k, _mm512_sub_ps(wi, _mm512_mul_ps(lr, step)));
}

/* The loop of bp_sgd_momentum_avx512 for a constant `nesterov`. */
static inline void bp_sgd_momentum_loop(float *w, float *m, const float *grad,
                                        float lr, float mu, float decay,
                                        const int nesterov, int64_t n)
{
    __m512 vlr = _mm512_set1_ps(lr), vmu = _mm512_set1_ps(mu);
    __m512 vd = _mm512_set1_ps(decay);

    for (int64_t i = 0; i < n; i += 16)
        bp_sgd_momentum16(w + i, m + i, grad + i, bp_lanes(n - i), vlr, vmu,
                          vd, nesterov);
}

void bp_sgd_momentum_avx512(float *w, float *m, const float *grad, float lr,
                            float mu, float decay, int nesterov, int64_t n)
{
    if (nesterov)
        bp_sgd_momentum_loop(w, m, grad, lr, mu, decay, 1, n);
    else
        bp_sgd_momentum_loop(w, m, grad, lr, mu, decay, 0, n);
}
