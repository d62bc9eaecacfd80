/*
 * CRC-32, one byte per step through a 256-entry table.
 *
 * NOTE: the table is built on the stack by each call rather than kept
 * as global state; building it costs about as much as checking 2 KiB.
 */
#include "core/crc32.h"

#define BP_CRC32_POLY 0xEDB88320u

uint32_t bp_crc32(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = data;
    uint32_t table[256];

    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;

        for (int bit = 0; bit < 8; bit++)
            c = (c >> 1) ^ (BP_CRC32_POLY & (0u - (c & 1u)));
        table[i] = c;
    }

    crc = ~crc;
    for (size_t i = 0; i < n; i++)
        crc = (crc >> 8) ^ table[(crc ^ p[i]) & 0xFFu];
    return ~crc;
}
