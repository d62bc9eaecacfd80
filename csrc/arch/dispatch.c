#include "arch/dispatch.h"

#include "core/error.h"

#include <stdatomic.h>
#include <stdlib.h>

/*
 * NOTE: the level is global state by nature (it mirrors the CPU). It is
 * computed idempotently, so two threads racing through the first call
 * store the same value; -1 means "not chosen yet".
 */
static atomic_int bp_simd_best_level = -1;
static atomic_int bp_simd_current = -1;

static bp_simd bp_simd_detect(void)
{
#if defined(BPROP_HAVE_X86_KERNELS)
    __builtin_cpu_init();

    /* The AVX-512 kernels are built with F and DQ, and also use FMA. */
    int has_avx2 = __builtin_cpu_supports("avx2")
                   && __builtin_cpu_supports("fma");
    int has_avx512 = has_avx2 && __builtin_cpu_supports("avx512f")
                     && __builtin_cpu_supports("avx512dq");

    if (has_avx512)
        return BP_SIMD_AVX512;
    if (has_avx2)
        return BP_SIMD_AVX2;
#endif
    return BP_SIMD_GENERIC;
}

static int bp_name_equals(const char *s, const char *lower)
{
    for (; *s != '\0' && *lower != '\0'; s++, lower++) {
        char ch = *s;

        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (ch != *lower)
            return 0;
    }
    return *s == '\0' && *lower == '\0';
}

/* The level BPROP_SIMD asks for, or -1 when unset or unknown. */
static int bp_simd_from_env(void)
{
    const char *value = getenv("BPROP_SIMD");

    if (value == NULL)
        return -1;
    if (bp_name_equals(value, "generic"))
        return BP_SIMD_GENERIC;
    if (bp_name_equals(value, "avx2"))
        return BP_SIMD_AVX2;
    if (bp_name_equals(value, "avx512"))
        return BP_SIMD_AVX512;
    return -1;
}

bp_simd bp_simd_best(void)
{
    int best = atomic_load_explicit(&bp_simd_best_level,
                                    memory_order_acquire);

    if (best < 0) {
        best = (int)bp_simd_detect();
        atomic_store_explicit(&bp_simd_best_level, best,
                              memory_order_release);
    }
    return (bp_simd)best;
}

bp_simd bp_simd_level(void)
{
    int level = atomic_load_explicit(&bp_simd_current, memory_order_acquire);
    int expected = -1;

    if (level >= 0)
        return (bp_simd)level;

    /* The environment can only lower the level, never raise it. */
    level = (int)bp_simd_best();
    int requested = bp_simd_from_env();
    if (requested >= 0 && requested < level)
        level = requested;

    /* A concurrent bp_simd_set wins over the default. */
    if (!atomic_compare_exchange_strong(&bp_simd_current, &expected, level))
        level = expected;
    return (bp_simd)level;
}

bp_status bp_simd_set(bp_simd level)
{
    if ((int)level < BP_SIMD_GENERIC || (int)level > BP_SIMD_AVX512)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "bp_simd_set: argument 'level' is %d; it must be "
                       "0 (generic), 1 (avx2) or 2 (avx512)", (int)level);
    if (level > bp_simd_best())
        return bp_fail(BP_STATUS_UNSUPPORTED,
                       "bp_simd_set: level '%s' is not supported by this "
                       "CPU; the best is '%s'", bp_simd_name(level),
                       bp_simd_name(bp_simd_best()));

    atomic_store_explicit(&bp_simd_current, (int)level, memory_order_release);
    return BP_STATUS_OK;
}

const char *bp_simd_name(bp_simd level)
{
    switch (level) {
    case BP_SIMD_GENERIC:
        return "generic";
    case BP_SIMD_AVX2:
        return "avx2";
    case BP_SIMD_AVX512:
        return "avx512";
    }
    return "unknown";
}

const bp_kernels *bp_kernels_get(void)
{
    switch (bp_simd_level()) {
#if defined(BPROP_HAVE_X86_KERNELS)
    case BP_SIMD_AVX512:
        return &bp_kernels_avx512;
    case BP_SIMD_AVX2:
        return &bp_kernels_avx2;
#endif
    default:
        return &bp_kernels_generic;
    }
}
