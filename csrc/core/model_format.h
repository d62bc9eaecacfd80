/*
 * Internal constants of the model file format (docs/model-format.md)
 * and the little-endian byte functions its reader and writer share.
 */
#ifndef BP_CORE_MODEL_FORMAT_H
#define BP_CORE_MODEL_FORMAT_H

#include <stdint.h>
#include <string.h>

/*
 * The first 8 bytes of every file. As in PNG, the \r\n and \x1a reveal
 * a transfer in text mode.
 */
#define BP_MODEL_MAGIC "\x89" "BPM\r\n\x1a\n"
#define BP_MODEL_MAGIC_SIZE 8

/* Magic, version (u32), header flags (u32), file length (u64). */
#define BP_MODEL_HEADER_SIZE 24

/* Tag (4 bytes), flags (u32), payload length (u64). */
#define BP_SECTION_HEADER_SIZE 16

/* Payloads are padded with zeros to a multiple of this. */
#define BP_SECTION_ALIGN 8

/* A section a reader must understand to use the file. */
#define BP_SECTION_REQUIRED 1u

/* The END section: a header and a payload of CRC-32 (u32), zero (u32). */
#define BP_END_PAYLOAD 8
#define BP_END_SIZE (BP_SECTION_HEADER_SIZE + BP_END_PAYLOAD)

/* Section tags, four ASCII bytes each. */
#define BP_TAG_NET "NETW"
#define BP_TAG_PARAMS "PARM"
#define BP_TAG_OPTIMIZER "OPTM"
#define BP_TAG_PROGRESS "STEP"
#define BP_TAG_RNG "RNGS"
#define BP_TAG_LABELS "LABL"
#define BP_TAG_SCALING "SCAL"
#define BP_TAG_META "META"
#define BP_TAG_RUNNING "NORM"
#define BP_TAG_END "END "

/* Codes stored in the file, fixed by the format. */
#define BP_DTYPE_FLOAT32 1u  /* PARM and OPTM slabs of 4-byte floats */
#define BP_DTYPE_FLOAT64 2u  /* PARM and OPTM slabs of 8-byte doubles */
#define BP_LAYER_DENSE 1u  /* a layer's code is its bp_layer_kind plus 1 */
#define BP_LAYER_CODE_LAST 4u

/* An optimizer's code in OPTM: its bp_optimizer_kind plus one (SGD: 1). */
#define BP_OPTIMIZER_CODE_FIRST 1u
#define BP_OPTIMIZER_CODE_LAST 5u

/* OPTM's flags after the first slab: weight decay on biases. */
#define BP_OPTIMIZER_DECAY_BIASES 1u

/* Fixed sizes of the sections' leading fields. */
#define BP_NET_FIXED 24      /* dtype, loss, n_inputs, n_layers, 0 */
#define BP_NET_LAYER 16      /* kind, activation, units */
#define BP_NET_LAYER_MORE 8  /* after the layers, each: parameter, flags */
#define BP_NET_LOSS_MORE 16  /* then delta, smoothing, pos_weight, K */
#define BP_NET_SEED 8        /* then, after any class weights: seed */
#define BP_NET_KIND_MORE 16  /* and each layer's rate, eps, momentum, 0 */

/* Flags of a layer in NETW's second table: the layer has no biases. */
#define BP_LAYER_NO_BIAS 1u
#define BP_OPTIMIZER_FIXED 32 /* kind, nesterov, lr, momentum, l2, 0, n */
#define BP_OPTIMIZER_MORE 160 /* settings, step, schedule, n: after slab 0 */
#define BP_PROGRESS_FIXED 16 /* epochs, steps */
#define BP_RNG_FIXED 24      /* seed, next stream, init, 0 */
#define BP_LABELS_FIXED 16   /* type, 0, count */

static inline void bp_le_put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline void bp_le_put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint32_t bp_le_get32(const unsigned char *p)
{
    uint32_t v = 0;

    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t bp_le_get64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Floats travel as the bits of their IEEE 754 representation. */
static inline uint32_t bp_f32_bits(float x)
{
    uint32_t bits;

    memcpy(&bits, &x, sizeof bits);
    return bits;
}

static inline float bp_f32_from_bits(uint32_t bits)
{
    float x;

    memcpy(&x, &bits, sizeof x);
    return x;
}

static inline uint64_t bp_f64_bits(double x)
{
    uint64_t bits;

    memcpy(&bits, &x, sizeof bits);
    return bits;
}

static inline double bp_f64_from_bits(uint64_t bits)
{
    double x;

    memcpy(&x, &bits, sizeof x);
    return x;
}

#endif
