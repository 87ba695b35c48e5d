#ifndef RAFKA_CRC32C_HW_H
#define RAFKA_CRC32C_HW_H

#include <stddef.h>
#include <stdint.h>

/// Whether this CPU has a CRC-32C instruction (x86-64 SSE4.2, or ARMv8 CRC).
int rafka_crc32c_hw_available(void);

/// CRC-32C of `length` bytes, continuing from the inverted state `crc` (pass ~0 to start, and
/// invert the result). Only call when rafka_crc32c_hw_available() returned 1.
uint32_t rafka_crc32c_hw_update(uint32_t crc, const uint8_t *data, size_t length);

#endif
