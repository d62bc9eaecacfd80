/*
 * Internal counter-based random numbers: Philox4x32-10 keyed by a seed,
 * with a counter made of a purpose, a stream and a block index. A value
 * depends only on (seed, purpose, stream, position), never on platform,
 * thread count or what was drawn before in other streams.
 */
#ifndef BP_CORE_RNG_H
#define BP_CORE_RNG_H

#include <stdint.h>

/* What a stream is used for, so that init and shuffle never share one. */
typedef enum bp_rng_purpose {
    BP_RNG_INIT = 1,    /* weight initialisation; stream = layer index */
    BP_RNG_SHUFFLE = 2, /* epoch order; stream = epoch */
    BP_RNG_DROPOUT = 3  /* dropout masks; stream = step x layers + layer */
} bp_rng_purpose;

/* A position in one stream; a plain value, copy it freely. */
typedef struct bp_rng {
    uint32_t key[2];
    uint64_t stream;
    uint64_t block;    /* index of the next 4-word block */
    uint32_t word[4];  /* the current block */
    int used;          /* words of the current block already returned */
    int purpose;
} bp_rng;

/* The first position of stream (seed, purpose, stream). */
void bp_rng_init(bp_rng *rng, uint64_t seed, bp_rng_purpose purpose,
                 uint64_t stream);

/*
 * Block `block` (4 words) of stream (seed, purpose, stream) directly, for
 * callers that split one stream's positions between threads.
 */
void bp_rng_block(uint32_t out[4], uint64_t seed, bp_rng_purpose purpose,
                  uint64_t stream, uint64_t block);

/* Uniform 32-bit and 64-bit integers. */
uint32_t bp_rng_u32(bp_rng *rng);
uint64_t bp_rng_u64(bp_rng *rng);

/* Uniform in [0, 1), with 24 random bits. */
float bp_rng_uniform(bp_rng *rng);

/* Uniform in [-limit, limit). */
float bp_rng_symmetric(bp_rng *rng, float limit);

/*
 * Standard normal (mean 0, variance 1), by the polar form of the
 * Box-Muller transform on pairs of 53-bit uniforms. Only IEEE
 * arithmetic and sqrt are used (no libm log), so every platform draws
 * the same values.
 */
float bp_rng_normal(bp_rng *rng);

/* Uniform integer in [0, bound], without modulo bias. */
uint64_t bp_rng_below_or_equal(bp_rng *rng, uint64_t bound);

/*
 * Fisher-Yates shuffle driven by stream (seed, BP_RNG_SHUFFLE, stream).
 *   index  n  (IN/OUT) the values to permute
 */
void bp_rng_shuffle(int64_t *index, int64_t n, uint64_t seed,
                    uint64_t stream);

#endif
