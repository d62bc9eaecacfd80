/*
 * Internal argument checks shared by the kernels and the network: sizes
 * whose products must fit in memory, and buffers that may be NULL only
 * when they hold no elements.
 */
#ifndef BP_CORE_CHECK_H
#define BP_CORE_CHECK_H

#include "core/error.h"

#include <stdint.h>

/* The most floats one buffer may hold, so byte counts never overflow. */
#define BP_MAX_FLOATS (INT64_MAX / 8)

/* Fails with BP_STATUS_INVALID_ARGUMENT when `ptr` is NULL but `count` > 0. */
#define BP_REQUIRE_DATA(fn, ptr, count)                                   \
    do {                                                                  \
        if ((count) > 0 && (ptr) == NULL)                                 \
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,                    \
                           "%s: argument '%s' is NULL", fn, #ptr);        \
    } while (0)

/*
 * Checks that `rows` and `cols` are >= 0 and that a rows x cols float
 * buffer is addressable; the names are the caller's argument names.
 */
static inline bp_status bp_check_shape(const char *fn, const char *rows_name,
                                       int64_t rows, const char *cols_name,
                                       int64_t cols)
{
    if (rows < 0)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument '%s' is %lld; it must be >= 0", fn,
                       rows_name, (long long)rows);
    if (cols < 0)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument '%s' is %lld; it must be >= 0", fn,
                       cols_name, (long long)cols);
    if (cols > 0 && rows > BP_MAX_FLOATS / cols)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: %s x %s = %lld x %lld is too large", fn,
                       rows_name, cols_name, (long long)rows,
                       (long long)cols);
    return BP_STATUS_OK;
}

#endif
