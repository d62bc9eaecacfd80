/*
 * Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
 * 1, 2, 3", SC 2011). The 128-bit counter holds the block index (40
 * bits), the purpose (24 bits) and the stream (64 bits); the 64-bit key
 * is the seed. Only fixed-width integer arithmetic is used, so every
 * platform gives the same bits.
 */
#include "core/rng.h"

#include <math.h>

/* NOTE: a fused multiply-add rounds differently; the normal draws must
   give the same bits on CPUs with and without one. */
#pragma STDC FP_CONTRACT OFF

#define BP_PHILOX_M0 0xD2511F53u
#define BP_PHILOX_M1 0xCD9E8D57u
#define BP_PHILOX_W0 0x9E3779B9u
#define BP_PHILOX_W1 0xBB67AE85u
#define BP_RNG_BLOCK_BITS 40

static void bp_mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo)
{
    uint64_t p = (uint64_t)a * b;

    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

/* Ten rounds of Philox4x32 on counter `c` with key `k`, into `out`. */
static void bp_philox(uint32_t out[4], const uint32_t c[4],
                      const uint32_t k[2])
{
    uint32_t x0 = c[0], x1 = c[1], x2 = c[2], x3 = c[3];
    uint32_t k0 = k[0], k1 = k[1];

    for (int round = 0; round < 10; round++) {
        uint32_t hi0, lo0, hi1, lo1;

        bp_mulhilo(BP_PHILOX_M0, x0, &hi0, &lo0);
        bp_mulhilo(BP_PHILOX_M1, x2, &hi1, &lo1);
        x0 = hi1 ^ x1 ^ k0;
        x1 = lo1;
        x2 = hi0 ^ x3 ^ k1;
        x3 = lo0;
        k0 += BP_PHILOX_W0;
        k1 += BP_PHILOX_W1;
    }
    out[0] = x0;
    out[1] = x1;
    out[2] = x2;
    out[3] = x3;
}

void bp_rng_init(bp_rng *rng, uint64_t seed, bp_rng_purpose purpose,
                 uint64_t stream)
{
    rng->key[0] = (uint32_t)seed;
    rng->key[1] = (uint32_t)(seed >> 32);
    rng->stream = stream;
    rng->block = 0;
    rng->used = 4;
    rng->purpose = (int)purpose;
}

/* Block `block` of stream `stream` for `purpose` under `key`. */
static void bp_rng_compute(uint32_t out[4], const uint32_t key[2],
                           int purpose, uint64_t stream, uint64_t block)
{
    block &= (UINT64_C(1) << BP_RNG_BLOCK_BITS) - 1;
    uint32_t counter[4] = {
        (uint32_t)block,
        (uint32_t)(block >> 32) | ((uint32_t)purpose << 8),
        (uint32_t)stream,
        (uint32_t)(stream >> 32),
    };

    bp_philox(out, counter, key);
}

void bp_rng_block(uint32_t out[4], uint64_t seed, bp_rng_purpose purpose,
                  uint64_t stream, uint64_t block)
{
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};

    bp_rng_compute(out, key, (int)purpose, stream, block);
}

static void bp_rng_refill(bp_rng *rng)
{
    bp_rng_compute(rng->word, rng->key, rng->purpose, rng->stream,
                   rng->block);
    rng->block++;
    rng->used = 0;
}

uint32_t bp_rng_u32(bp_rng *rng)
{
    if (rng->used == 4)
        bp_rng_refill(rng);
    return rng->word[rng->used++];
}

uint64_t bp_rng_u64(bp_rng *rng)
{
    uint64_t hi = bp_rng_u32(rng);

    return hi << 32 | bp_rng_u32(rng);
}

float bp_rng_uniform(bp_rng *rng)
{
    return (float)(bp_rng_u32(rng) >> 8) * (1.0f / 16777216.0f);
}

float bp_rng_symmetric(bp_rng *rng, float limit)
{
    return limit * (2.0f * bp_rng_uniform(rng) - 1.0f);
}

/* Uniform in [0, 1) with 53 random bits. */
static double bp_rng_uniform53(bp_rng *rng)
{
    return (double)(bp_rng_u64(rng) >> 11) * (1.0 / 9007199254740992.0);
}

/*
 * ln(s) for s in (0, 1], from frexp (exact) and the series
 * ln(m) = 2 atanh(t), t = (m - 1) / (m + 1), with m in [sqrt(1/2),
 * sqrt(2)) so that t^2 <= 0.0295: twelve terms reach double precision.
 */
static double bp_log_unit(double s)
{
    int e;
    double m = frexp(s, &e);

    if (m < 0.70710678118654752) {
        m *= 2.0;
        e -= 1;
    }

    double t = (m - 1.0) / (m + 1.0), t2 = t * t, sum = 1.0 / 25.0;
    for (int k = 11; k >= 0; k--)
        sum = sum * t2 + 1.0 / (double)(2 * k + 1);
    return 2.0 * t * sum + (double)e * 0.69314718055994531;
}

float bp_rng_normal(bp_rng *rng)
{
    double u, v, s;

    do {
        u = 2.0 * bp_rng_uniform53(rng) - 1.0;
        v = 2.0 * bp_rng_uniform53(rng) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    return (float)(u * sqrt(-2.0 * bp_log_unit(s) / s));
}

uint64_t bp_rng_below_or_equal(bp_rng *rng, uint64_t bound)
{
    if (bound == UINT64_MAX)
        return bp_rng_u64(rng);

    /* Reject the few values that would make the modulo uneven. */
    uint64_t range = bound + 1;
    uint64_t limit = UINT64_MAX - UINT64_MAX % range;
    uint64_t r;

    do {
        r = bp_rng_u64(rng);
    } while (r >= limit);
    return r % range;
}

void bp_rng_shuffle(int64_t *index, int64_t n, uint64_t seed,
                    uint64_t stream)
{
    bp_rng rng;

    bp_rng_init(&rng, seed, BP_RNG_SHUFFLE, stream);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)bp_rng_below_or_equal(&rng, (uint64_t)i);
        int64_t t = index[i];

        index[i] = index[j];
        index[j] = t;
    }
}
