#include "error.h"

#include <stdarg.h>
#include <stdio.h>

#if defined(_MSC_VER)
#define BP_THREAD_LOCAL __declspec(thread)
#else
#define BP_THREAD_LOCAL _Thread_local
#endif

static BP_THREAD_LOCAL char last_error[512];

bp_status bp_fail(bp_status status, const char *fmt, ...)
{
    va_list args;

    va_start(args, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, args);
    va_end(args);
    return status;
}

const char *bp_last_error(void)
{
    return last_error;
}

const char *bp_status_name(bp_status status)
{
    switch (status) {
    case BP_STATUS_OK:
        return "ok";
    case BP_STATUS_INVALID_ARGUMENT:
        return "invalid argument";
    case BP_STATUS_OUT_OF_MEMORY:
        return "out of memory";
    case BP_STATUS_NOT_FINITE:
        return "not finite";
    case BP_STATUS_UNSUPPORTED:
        return "unsupported";
    case BP_STATUS_INTERNAL:
        return "internal error";
    case BP_STATUS_IO:
        return "input/output error";
    case BP_STATUS_FORMAT:
        return "bad model file";
    }
    return "unknown status";
}

const char *bp_version(void)
{
    return "0.1.0";
}
