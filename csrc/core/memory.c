#include "memory.h"

#include <stdlib.h>
#include <string.h>

void *bp_malloc(size_t bytes)
{
    void *ptr = NULL;

    if (bytes == 0)
        return NULL;

    /* Round up so the block is a whole number of cache lines. */
    bytes = (bytes + BP_ALIGNMENT - 1) / BP_ALIGNMENT * BP_ALIGNMENT;
#if defined(_WIN32)
    ptr = _aligned_malloc(bytes, BP_ALIGNMENT);
#else
    if (posix_memalign(&ptr, BP_ALIGNMENT, bytes) != 0)
        ptr = NULL;
#endif
    return ptr;
}

void *bp_calloc(size_t bytes)
{
    void *ptr = bp_malloc(bytes);

    if (ptr != NULL)
        memset(ptr, 0, bytes);
    return ptr;
}

void bp_free(void *ptr)
{
#if defined(_WIN32)
    _aligned_free(ptr);
#else
    free(ptr);
#endif
}
