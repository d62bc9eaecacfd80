/*
 * Internal error reporting: every failing call records a message in a
 * thread-local buffer that bp_last_error() returns.
 */
#ifndef BP_CORE_ERROR_H
#define BP_CORE_ERROR_H

#include "bprop.h"

/* Records a printf-style message for this thread and returns `status`. */
bp_status bp_fail(bp_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Returns from the enclosing function if `expr` is not BP_STATUS_OK. */
#define BP_TRY(expr)                                                      \
    do {                                                                  \
        bp_status bp_try_status_ = (expr);                                \
        if (bp_try_status_ != BP_STATUS_OK)                               \
            return bp_try_status_;                                        \
    } while (0)

/* Fails with BP_STATUS_INVALID_ARGUMENT when a pointer is NULL. */
#define BP_REQUIRE_PTR(fn, ptr)                                           \
    do {                                                                  \
        if ((ptr) == NULL)                                                \
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,                    \
                           "%s: argument '%s' is NULL", fn, #ptr);        \
    } while (0)

/* Fails with BP_STATUS_INVALID_ARGUMENT when a size is negative. */
#define BP_REQUIRE_SIZE(fn, size)                                         \
    do {                                                                  \
        if ((size) < 0)                                                   \
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,                    \
                           "%s: argument '%s' is %lld; it must be >= 0",  \
                           fn, #size, (long long)(size));                 \
    } while (0)

#endif
