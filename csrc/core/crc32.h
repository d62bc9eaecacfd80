/*
 * Internal CRC-32 (the IEEE 802.3 polynomial, reflected, as used by zlib
 * and PNG), for the checksum of model files.
 */
#ifndef BP_CORE_CRC32_H
#define BP_CORE_CRC32_H

#include <stddef.h>
#include <stdint.h>

/*
 * Extends `crc` (0 to start) over `n` bytes of `data`, so that
 * bp_crc32(bp_crc32(0, a, na), b, nb) is the CRC of a followed by b.
 */
uint32_t bp_crc32(uint32_t crc, const void *data, size_t n);

#endif
