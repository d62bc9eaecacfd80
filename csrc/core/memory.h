/* Internal aligned allocation: every slab and buffer is 64-byte aligned. */
#ifndef BP_CORE_MEMORY_H
#define BP_CORE_MEMORY_H

#include <stddef.h>

#define BP_ALIGNMENT 64

/* Returns NULL on failure or when `bytes` is 0. Free with bp_free. */
void *bp_malloc(size_t bytes);

/* Like bp_malloc, with the memory set to zero. */
void *bp_calloc(size_t bytes);

void bp_free(void *ptr);

#endif
