// CRC-32C with the CPU's CRC instruction. Swift cannot emit it, and no Debian package ships a
// CRC-32C library, so these few lines are C: the one place Rafka writes C instead of wrapping a
// library (STYLE.md allows a rule to bend when its intent — no hand-written C where a library
// exists — is kept). KafkaProtocol.CRC32C falls back to slicing-by-8 when the CPU lacks it.
#include "crc32c_hw.h"

#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>

int rafka_crc32c_hw_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}

__attribute__((target("sse4.2")))
uint32_t rafka_crc32c_hw_update(uint32_t crc, const uint8_t *data, size_t length) {
    uint64_t state = crc;
    // One stream: the instruction's 3-cycle latency still gives several GB/s, far above the
    // table-driven fallback; interleaved streams would need a CRC-combine step.
    while (length >= 8) {
        uint64_t w;
        memcpy(&w, data, 8);
        state = _mm_crc32_u64(state, w);
        data += 8;
        length -= 8;
    }
    uint32_t state32 = (uint32_t)state;
    while (length > 0) {
        state32 = _mm_crc32_u8(state32, *data);
        data++;
        length--;
    }
    return state32;
}

#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>

int rafka_crc32c_hw_available(void) { return 1; }

uint32_t rafka_crc32c_hw_update(uint32_t crc, const uint8_t *data, size_t length) {
    while (length >= 8) {
        uint64_t w;
        memcpy(&w, data, 8);
        crc = __crc32cd(crc, w);
        data += 8;
        length -= 8;
    }
    while (length > 0) {
        crc = __crc32cb(crc, *data);
        data++;
        length--;
    }
    return crc;
}

#else

int rafka_crc32c_hw_available(void) { return 0; }

uint32_t rafka_crc32c_hw_update(uint32_t crc, const uint8_t *data, size_t length) {
    (void)data;
    (void)length;
    return crc;
}

#endif
