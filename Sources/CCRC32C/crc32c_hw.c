// CRC-32C with the CPU's CRC instruction. Swift cannot emit it, and no Debian package ships a
// CRC-32C library, so these few lines are C: the one place Rafka writes C instead of wrapping a
// library (STYLE.md allows a rule to bend when its intent — no hand-written C where a library
// exists — is kept). KafkaProtocol.CRC32C falls back to slicing-by-8 when the CPU lacks it.
#include "crc32c_hw.h"

#include <string.h>

// The CRC instruction takes 3 cycles but can start one per cycle, so one stream of words leaves
// two thirds of it idle. Inputs of three blocks or more are checksummed as three independent
// streams of `STREAM_BYTES` each, joined with the CRC's linearity: continuing a CRC state `s`
// over `n` bytes equals the stream's own CRC (from 0) XOR `s` carried over `n` zero bytes, and
// carrying a 32-bit state over a fixed `n` is a linear map, kept as four byte-indexed tables.
#define STREAM_BYTES 1024

#if defined(__x86_64__)
#include <nmmintrin.h>
#define HW_TARGET __attribute__((target("sse4.2")))
HW_TARGET static inline uint64_t word_step(uint64_t state, uint64_t word) { return _mm_crc32_u64(state, word); }
HW_TARGET static inline uint32_t byte_step(uint32_t state, uint8_t byte) { return _mm_crc32_u8(state, byte); }

int rafka_crc32c_hw_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}
#define HAVE_HW 1

#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>
#define HW_TARGET
static inline uint64_t word_step(uint64_t state, uint64_t word) { return __crc32cd((uint32_t)state, word); }
static inline uint32_t byte_step(uint32_t state, uint8_t byte) { return __crc32cb(state, byte); }

int rafka_crc32c_hw_available(void) { return 1; }
#define HAVE_HW 1

#else

int rafka_crc32c_hw_available(void) { return 0; }

uint32_t rafka_crc32c_hw_update(uint32_t crc, const uint8_t *data, size_t length) {
    (void)data;
    (void)length;
    return crc;
}

#endif

#if defined(HAVE_HW)

static inline uint64_t load_word(const uint8_t *data) {
    uint64_t word;
    memcpy(&word, data, 8);
    return word;
}

HW_TARGET static uint32_t one_stream(uint32_t crc, const uint8_t *data, size_t length) {
    uint64_t state = crc;
    for (; length >= 8; data += 8, length -= 8) state = word_step(state, load_word(data));
    uint32_t state32 = (uint32_t)state;
    for (; length > 0; data++, length--) state32 = byte_step(state32, *data);
    return state32;
}

// carry[i][b]: the state (b << 8i) carried over STREAM_BYTES zero bytes.
static uint32_t carry[4][256];

// Filled once, before any thread can checksum (the tables are then only read).
HW_TARGET __attribute__((constructor)) static void fill_carry_tables(void) {
    if (!rafka_crc32c_hw_available()) return;
    static const uint8_t zeros[STREAM_BYTES];
    uint32_t bit[32];
    for (int i = 0; i < 32; i++) bit[i] = one_stream(1u << i, zeros, STREAM_BYTES);
    for (int i = 0; i < 4; i++) {
        for (int b = 0; b < 256; b++) {
            uint32_t value = 0;
            for (int k = 0; k < 8; k++) {
                if (b & (1 << k)) value ^= bit[8 * i + k];
            }
            carry[i][b] = value;
        }
    }
}

static inline uint32_t carried(uint32_t state) {
    return carry[0][state & 0xff] ^ carry[1][(state >> 8) & 0xff] ^ carry[2][(state >> 16) & 0xff] ^ carry[3][state >> 24];
}

HW_TARGET uint32_t rafka_crc32c_hw_update(uint32_t crc, const uint8_t *data, size_t length) {
    for (; length >= 3 * STREAM_BYTES; data += 3 * STREAM_BYTES, length -= 3 * STREAM_BYTES) {
        uint64_t a = crc, b = 0, c = 0;
        for (size_t i = 0; i < STREAM_BYTES; i += 8) {
            a = word_step(a, load_word(data + i));
            b = word_step(b, load_word(data + STREAM_BYTES + i));
            c = word_step(c, load_word(data + 2 * STREAM_BYTES + i));
        }
        crc = carried(carried((uint32_t)a) ^ (uint32_t)b) ^ (uint32_t)c;
    }
    return one_stream(crc, data, length);
}

#endif
