/*
 * e^x for x <= 0 in float, without a library call, so that loops over it
 * (softmax, sigmoid, cross-entropy) vectorise. Every caller shifts its
 * argument to be non-positive first: x - max(row) for softmax, -|x| for
 * sigmoid.
 */
#ifndef BP_KERNELS_EXP_H
#define BP_KERNELS_EXP_H

#include <stdint.h>
#include <string.h>

/*
 * e^x for x <= 0, within 2 ulp; 0 for x < -87 (where e^x is below the
 * smallest normal float), NaN for NaN. Positive x is outside the domain.
 *
 * x = n ln2 + r with |r| <= ln2 / 2, so e^x = 2^n e^r; e^r is the
 * classic degree-7 minimax fit 1 + r + r^2 P(r), and 2^n is built from
 * its exponent bits. Adding 1.5 * 2^23 rounds x log2(e) to the nearest
 * integer n, which then sits in the low bits of the sum.
 */
static inline float bp_exp_neg(float x)
{
    const float shifter = 12582912.0f;  /* 1.5 * 2^23 */
    const uint32_t shifter_bits = 0x4b400000u;
    float xc = x < -87.0f ? -87.0f : x;
    float t = xc * 1.44269504088896341f + shifter;
    float n = t - shifter;
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;

    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;

    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - shifter_bits + 127u) << 23;

    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.0f ? 0.0f : p * scale;
}

/*
 * e^x - 1 for x <= 0 in float, accurate near 0 where e^x - 1 would
 * cancel (ELU's negative side); -1 for x < -87, NaN for NaN.
 *
 * With the reduction of bp_exp_neg, e^x = 2^n (1 + q) for q = r +
 * r^2 P(r), so e^x - 1 = 2^n q + (2^n - 1). For n = 0 that is q itself,
 * with no cancellation; for n <= -1, |2^n - 1| >= 1/2 dominates.
 */
static inline float bp_expm1_neg(float x)
{
    const float shifter = 12582912.0f;  /* 1.5 * 2^23 */
    const uint32_t shifter_bits = 0x4b400000u;
    float xc = x < -87.0f ? -87.0f : x;
    float t = xc * 1.44269504088896341f + shifter;
    float n = t - shifter;
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;

    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r;

    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - shifter_bits + 127u) << 23;

    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.0f ? -1.0f : scale * p + (scale - 1.0f);
}

#endif
